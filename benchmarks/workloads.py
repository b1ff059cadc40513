"""Benchmark cases: which model, at which size, on which deterministic data.

Each :class:`Case` builds its ``(params, inputs)`` from ``np.random.default_rng(seed)``,
so every run (and every implementation within a run) sees identical arrays.  Parameter
and input names, shapes and dtypes match the built-in symgrad models exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Case",
    "CASES",
    "TARGET",
    "TARGET_SMALL",
    "select",
    "make_seed_mlp",
    "make_logistic_regression",
    "make_mlp_classifier",
    "make_rosenbrock",
    "make_lennard_jones",
    "make_decay_fit",
    "lattice",
]

TARGET = 1.10  # generated time / hand NumPy time, for every case ...
TARGET_SMALL = 0.5  # ... and for the tiny fixed-size cases (unrolled code should win)


def _uniform(rng, bound, shape):
    return rng.uniform(-bound, bound, size=shape)


def make_seed_mlp(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {
        "W1": _uniform(rng, 1 / math.sqrt(3), (2, 3)),
        "b1": _uniform(rng, 1 / math.sqrt(3), (2,)),
        "W2": _uniform(rng, 1 / math.sqrt(2), (1, 2)),
        "b2": _uniform(rng, 1 / math.sqrt(2), (1,)),
    }
    inputs = {
        "x": rng.normal(size=(batch, 3)),
        "target": rng.uniform(0.0, 1.0, size=(batch, 1)),
    }
    return params, inputs


def make_logistic_regression(batch: int, features: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(batch, features))
    w_true = rng.normal(size=features)
    p = 1.0 / (1.0 + np.exp(-(X @ w_true) / 2.0))
    y = (rng.uniform(size=batch) < p).astype(np.float64)
    params = {"w": 0.1 * rng.normal(size=features), "b": np.array(0.1)}
    return params, {"X": X, "y": y}


def make_mlp_classifier(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {
        "W1": _uniform(rng, 1 / math.sqrt(784), (128, 784)),
        "b1": _uniform(rng, 1 / math.sqrt(784), (128,)),
        "W2": _uniform(rng, 1 / math.sqrt(128), (10, 128)),
        "b2": _uniform(rng, 1 / math.sqrt(128), (10,)),
    }
    inputs = {
        "x": rng.uniform(0.0, 1.0, size=(batch, 784)),
        "labels": rng.integers(0, 10, size=batch, dtype=np.int64),
    }
    return params, inputs


def make_rosenbrock(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return {"x": rng.uniform(-2.0, 2.0, size=n)}, {}


def lattice(n: int, spacing: float = 1.1, jitter: float = 0.05, seed: int = 0):
    """``n`` points: the first ``n`` nodes of a cubic lattice, each coordinate jittered.

    With the defaults the closest pair is at least ``1.1 - 2 * 0.05 * sqrt(3)`` ~ 0.93
    apart, so r^2 is never tiny.
    """
    rng = np.random.default_rng(seed)
    k = 1
    while k**3 < n:
        k += 1
    grid = np.stack(np.meshgrid(*([np.arange(k)] * 3), indexing="ij"), axis=-1)
    pos = spacing * grid.reshape(-1, 3)[:n].astype(np.float64)
    pos += rng.uniform(-jitter * spacing, jitter * spacing, size=(n, 3))
    return pos


def make_lennard_jones(n_atoms: int, seed: int = 0):
    i, j = np.triu_indices(n_atoms, k=1)
    inputs = {"i": i.astype(np.int64), "j": j.astype(np.int64)}
    return {"pos": lattice(n_atoms, seed=seed)}, inputs


def make_decay_fit(batch: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 5.0, batch)
    y = 2.0 * np.exp(-1.3 * t) + 0.5 + 0.05 * rng.normal(size=batch)
    params = {"a": np.array(1.5), "b": np.array(1.0), "c": np.array(0.2)}
    return params, {"t": t, "y": y}


_MAKERS: dict[str, Callable] = {
    "seed_mlp": make_seed_mlp,
    "logistic_regression": make_logistic_regression,
    "mlp_classifier": make_mlp_classifier,
    "rosenbrock": make_rosenbrock,
    "lennard_jones": make_lennard_jones,
    "decay_fit": make_decay_fit,
}


@dataclass(frozen=True)
class Case:
    """One benchmark case: a model at one size."""

    id: str  # e.g. "W1/batch=1"
    workload: str  # "W1"
    model: str  # name of the built-in model and of generated/<model>.py
    size: dict = field(default_factory=dict)  # keyword arguments of the maker
    small: bool = False  # tiny fixed size: target is TARGET_SMALL, hand_scalar is timed
    seed: int = 0

    @property
    def target(self) -> float:
        """Largest passing ratio generated / hand NumPy."""
        return TARGET_SMALL if self.small else TARGET

    @property
    def label(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.size.items())

    def make(self):
        """Fresh ``(params, inputs)`` dicts of float64 (and int64) arrays."""
        return _MAKERS[self.model](**self.size, seed=self.seed)


def _case(workload, model, seed, small=False, **size):
    label = ",".join(f"{k}={v}" for k, v in size.items())
    return Case(f"{workload}/{label}", workload, model, size, small, seed)


CASES: tuple[Case, ...] = (
    _case("W1", "seed_mlp", 1, small=True, batch=1),
    _case("W1", "seed_mlp", 2, batch=1024),
    _case("W2", "logistic_regression", 3, batch=4096),
    _case("W3", "mlp_classifier", 4, batch=64),
    _case("W3", "mlp_classifier", 5, batch=1024),
    _case("W4", "rosenbrock", 6, small=True, n=10),
    _case("W4", "rosenbrock", 7, n=100),
    _case("W4", "rosenbrock", 8, n=1000),
    _case("W5", "lennard_jones", 9, small=True, n_atoms=8),
    _case("W5", "lennard_jones", 10, n_atoms=32),
    _case("W5", "lennard_jones", 11, n_atoms=128),
    _case("W6", "decay_fit", 12, batch=1000),
)


def select(patterns: Iterable[str] | None = None) -> list[Case]:
    """Cases whose id, workload or model contains any of ``patterns`` (all if None).

    Matching is case-insensitive; a pattern equal to a case id selects only that case:
    ``"W5"``, ``"lennard"``, ``"W1/batch=1"`` (not also ``W1/batch=1024``).
    """
    if not patterns:
        return list(CASES)
    chosen = set()
    for pat in (p.lower() for p in patterns):
        exact = {c.id for c in CASES if c.id.lower() == pat}
        chosen |= exact or {
            c.id for c in CASES if pat in c.id.lower() or pat in c.model.lower()
        }
    return [c for c in CASES if c.id in chosen]
