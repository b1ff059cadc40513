"""Lennard-Jones energy of N particles over a list of pairs; forces are -grad_pos."""

import numpy as np

import symgrad as sg


def build() -> sg.Model:
    m = sg.Model(
        "lennard_jones",
        doc="Lennard-Jones pair energy (epsilon = sigma = 1); forces = -grads['pos'].",
    )
    pos = m.param("pos", ("N", 3))
    i = m.input("i", ("pairs",), dtype="int64")  # pair k joins particles i[k] and j[k]
    j = m.input("j", ("pairs",), dtype="int64")
    d = pos[i] - pos[j]
    r2 = m.let("r2", sg.sum(d**2, axis=-1))
    s6 = 1 / r2**3  # (sigma / r)**6
    m.loss(sg.sum(4 * (s6**2 - s6)))
    m.unroll(N=8, pairs=28)  # 8 particles, all 28 pairs i < j
    m.sampler = sample
    return m


def sample(rng: np.random.Generator, N: int = 8, **_) -> tuple[dict, dict]:
    """Particles on a jittered cubic lattice (no two too close), all pairs i < j."""
    side = int(np.ceil(N ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(
        -1, 3
    )
    pos = 1.1 * grid[:N] + 0.05 * rng.standard_normal((N, 3))
    i, j = np.triu_indices(N, k=1)
    return {"pos": pos}, {"i": i.astype(np.int64), "j": j.astype(np.int64)}
