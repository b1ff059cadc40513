"""Cross-checks of a generated module against the tape engine and central differences.

The tape engine interprets the model as declared (before any symbolic work), with its own
per-op backward functions, so agreement with it is independent evidence. Central
differences use a step of ~eps**(1/3), per element for small models and along a few random
unit directions per parameter otherwise (PyTorch gradcheck's fast mode), so the cost of a
check stays flat in the parameter count.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from . import ops
from .ir import toposort
from .model import Model, ModelError, holds, lower_bound
from .reference import bound_dims, hvp, reference

TAPE_TOLERANCE = 1e-10
FD_TOLERANCE = 1e-6
PER_ELEMENT_LIMIT = 400  # parameters; above this, random directions
STEP = np.finfo(float).eps ** (1 / 3)  # central differences: truncation ~ round-off
# Each gradient is compared relative to its own size, but never to less than this fraction
# of the model's largest gradient (or loss): a gradient that is zero up to round-off (a
# shift that softmax ignores) is not a 100% error.
GRADIENT_FLOOR = 1e-3
# Draws of random data per size set before giving up on finite reference values: random
# index pairs can pick i == j, where sqrt(sum((x[i] - x[j])**2)) has an infinite slope.
SAMPLE_ATTEMPTS = 20


@dataclass
class Row:
    name: str
    shape: tuple
    tape_error: float  # NaN where the tape's values are all NaN: nothing to compare
    fd_error: float  # NaN where no finite-difference check applies

    @property
    def passed(self) -> bool:
        return not (self.tape_error > TAPE_TOLERANCE or self.fd_error > FD_TOLERANCE)


@dataclass
class Report:
    model: str
    dims: list[dict] = field(default_factory=list)
    rows: dict[str, Row] = field(default_factory=dict)
    fd_method: str = "per element"

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.rows.values())

    def add(self, name: str, shape: tuple, tape_error: float, fd_error: float) -> None:
        """Keep the worst error seen for ``name`` over all the data sets checked."""
        old = self.rows.get(name)
        if old is not None:  # (fmax: NaN, not checked, counts as no error)
            tape_error = float(np.fmax(tape_error, old.tape_error))
            fd_error = float(np.fmax(fd_error, old.fd_error))
        self.rows[name] = Row(name, shape, tape_error, fd_error)

    def table(self) -> str:
        sizes = "; ".join(
            ", ".join(f"{k}={v}" for k, v in d.items()) or "-" for d in self.dims
        )
        lines = [f"{self.model}  (dims: {sizes}; finite differences {self.fd_method})"]
        lines.append(f"  {'':16} {'shape':>14} {'vs tape':>10} {'vs FD':>10}")
        for r in self.rows.values():
            tape, fd = (
                "-" if np.isnan(e) else f"{e:.1e}" for e in (r.tape_error, r.fd_error)
            )
            flag = "" if r.passed else "  FAIL"
            lines.append(f"  {r.name:16} {str(r.shape):>14} {tape:>10} {fd:>10}{flag}")
        lines.append(
            f"  {'tolerance':16} {'':>14} {TAPE_TOLERANCE:>10.0e} {FD_TOLERANCE:>10.0e}"
        )
        lines.append(f"  {'ok' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def load_source(source: str, name: str) -> types.ModuleType:
    """Import generated source without writing it anywhere."""
    module = types.ModuleType(f"symgrad_generated_{name}")
    exec(compile(source, f"<symgrad:{name}>", "exec"), module.__dict__)
    return module


def gradient_floor(loss: float, grads: dict) -> float:
    """The least scale a gradient's error is measured against (see GRADIENT_FLOOR)."""
    largest = max((np.max(np.abs(g), initial=0.0) for g in grads.values()), default=0)
    return GRADIENT_FLOOR * max(abs(float(loss)), float(largest))


def relative_error(actual, expected, floor: float = 0.0) -> float:
    """max |actual - expected| over the largest magnitude of either, or ``floor`` if that
    is larger (0 when both are 0). Elements where ``expected`` is NaN are not compared
    (NaN if that is all of them); a NaN in ``actual`` elsewhere is an infinite error."""
    actual, expected = np.broadcast_arrays(
        np.asarray(actual, float), np.asarray(expected, float)
    )
    known = ~np.isnan(expected)
    if expected.size and not known.any():
        return float("nan")
    actual, expected = actual[known], expected[known]
    if np.isnan(actual).any():
        return float("inf")
    scale = max(
        np.max(np.abs(expected), initial=0.0),
        np.max(np.abs(actual), initial=0.0),
        floor,
    )
    diff = np.max(np.abs(actual - expected), initial=0.0)
    return 0.0 if diff == 0 else float(diff / scale) if scale > 0 else float("inf")


def verify(model: Model, module, dim_sets=None, seed: int = 0) -> Report:
    """Compare ``module``'s value_and_grad, forward and backward with the tape and FD."""
    report = Report(model.name)
    rng = np.random.default_rng(seed)
    for dims in dim_sets or default_dims(model):
        params, inputs, ref = finite_sample(model, rng, dims)
        report.dims.append(bound_dims(model, params, inputs))
        _check_one(model, module, params, inputs, ref, report, rng)
    return report


def finite_sample(model: Model, rng: np.random.Generator, dims: dict):
    """``(params, inputs, reference(...))`` for the first of up to SAMPLE_ATTEMPTS draws
    whose reference loss and gradients are finite (the draws continue ``rng``, so the
    choice is deterministic); a ModelError when none is."""
    for _ in range(SAMPLE_ATTEMPTS):
        params, inputs = sample(model, rng, dims)
        with np.errstate(all="ignore"):  # a rejected draw is not worth a warning
            ref = reference(model, params, inputs)
        loss, _, grads = ref
        if np.isfinite(loss) and all(np.isfinite(g).all() for g in grads.values()):
            return params, inputs, ref
    sizes = ", ".join(f"{k}={v}" for k, v in dims.items()) or "-"
    source = (
        "its sampler gave"
        if getattr(model, "sampler", None) is not None
        else "random data gave"
    )
    raise ModelError(
        f"{model.name}: cannot verify at {sizes}: {source} a non-finite loss or "
        f"gradient in {SAMPLE_ATTEMPTS} draws (e.g. index pairs with i == j); give the "
        "model a sampler that draws valid data: m.sampler = fn, "
        "fn(rng, **dims) -> (params, inputs), as symgrad/models/lennard_jones.py does"
    )


def default_dims(model: Model) -> list[dict]:
    """Two sizes for every symbolic dim, so size-dependent mistakes show, and the sizes
    of ``m.unroll``, which run the module's scalar-unrolled code."""
    least = dict.fromkeys(model.dims, 1)  # the sizes the model's slices need (n >= 4)
    needs = [need for need, _ in model.size_requirements()]
    for need in needs:
        if bound := lower_bound(need):
            least[bound[0].name] = max(least[bound[0].name], bound[1])
    sizes = [{d: max(3, least[d]) for d in model.dims}]
    sizes.append({d: max(5, least[d] + 2) for d in model.dims})
    for chosen in sizes:  # a division by C - B: not at C = B
        for need in needs:
            while not holds(need, {model.dims[d]: n for d, n in chosen.items()}):
                chosen[max(need.free_symbols, key=str).name] += 1
    return sizes + [s for s in model.unroll_sizes() if s not in sizes]


def _check_one(model, module, params, inputs, ref, report: Report, rng) -> None:
    loss, grads = module.value_and_grad(params, inputs)
    outputs, cache = module.forward(params, inputs)
    scaled = module.backward(cache, grad_loss=-2.5)
    ref_loss, ref_outputs, ref_grads = ref
    loss_error = max(
        relative_error(loss, ref_loss), relative_error(outputs["loss"], ref_loss)
    )
    report.add("loss", (), loss_error, np.nan)
    for name in model.outputs:
        report.add(
            name,
            np.shape(ref_outputs[name]),
            relative_error(outputs[name], ref_outputs[name]),
            np.nan,
        )

    def f(p):
        return float(module.value_and_grad(p, inputs)[0])

    floor = gradient_floor(ref_loss, ref_grads)
    stopped = _stops_gradient(model)
    fd = (
        dict.fromkeys(params, np.nan)
        if stopped
        else finite_differences(f, params, grads, rng, floor)
    )
    if hasattr(module, "hvp"):
        _check_hvp(model, module, params, inputs, report, rng, stopped)
    if stopped:
        report.fd_method = "not compared: sg.stop_gradient changes the derivative"
    else:
        report.fd_method = (
            "per element"
            if _per_element(params)
            else "along 3 random directions per parameter"
        )
    for name, g in grads.items():
        if np.shape(g) != np.shape(params[name]):
            report.add(f"grad {name}", np.shape(params[name]), np.inf, np.inf)
            continue
        tape_error = max(
            relative_error(g, ref_grads[name], floor),
            relative_error(scaled[name], -2.5 * ref_grads[name], 2.5 * floor),
        )
        report.add(f"grad {name}", tuple(np.shape(g)), tape_error, fd[name])


def _stops_gradient(model: Model) -> bool:
    """Does the loss go through a user's sg.stop_gradient? Then its gradient is, on
    purpose, not the derivative that central differences estimate."""
    return any(n.op == "detach" and n.attrs for n in toposort([model.loss_node]))


def _check_hvp(
    model, module, params: dict, inputs: dict, report: Report, rng, stopped: bool
) -> None:
    """hvp(v) against the tape's double backward and (unless ``stopped``) central
    differences of the gradient along v."""
    v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
    products = module.hvp(params, inputs, v)
    with np.errstate(all="ignore"):  # as the reference's: warnings are the module's
        expected = hvp(model, params, inputs, v)
    floor = gradient_floor(0.0, expected)

    def grad(sign):
        shifted = {
            k: np.asarray(p, float) + sign * STEP * v[k] for k, p in params.items()
        }
        return module.value_and_grad(shifted, inputs)[1]

    fd = dict.fromkeys(params, np.nan)
    if not stopped:
        up, down = grad(1), grad(-1)
        for k in params:
            estimate = (np.asarray(up[k]) - np.asarray(down[k])) / (2 * STEP)
            fd[k] = relative_error(products[k], estimate)
    for k in params:
        report.add(
            f"hvp {k}",
            tuple(np.shape(params[k])),
            relative_error(products[k], expected[k], floor),
            fd[k],
        )


def _size(params: dict) -> int:
    return sum(np.size(p) for p in params.values())


def finite_differences(
    f: Callable[[dict], float],
    params: dict,
    grads: dict,
    rng: np.random.Generator,
    floor: float = 0.0,
) -> dict[str, float]:
    """Relative error of each gradient against central differences of ``f`` (relative
    to the gradient's size, or to ``floor`` if that is larger)."""
    errors = {}
    per_element = _per_element(params)
    for name, p in params.items():
        p = np.asarray(p, dtype=float)
        g = np.asarray(grads[name], dtype=float)
        if per_element:
            directions = list(np.eye(p.size).reshape((p.size, *p.shape)))
            h = STEP * max(1.0, float(np.max(np.abs(p), initial=0.0)))
        else:
            directions = [_unit(rng.standard_normal(p.shape)) for _ in range(3)]
            h = STEP
        estimates = [(f({**params, name: p + h * v}) - f({**params, name: p - h * v})) / (2 * h)
                     for v in directions]  # fmt: skip
        exact = [float(np.sum(g * v)) for v in directions]
        diff = np.max(np.abs(np.subtract(estimates, exact)), initial=0.0)
        scale = max(
            np.linalg.norm(g), floor, np.max(np.abs(estimates), initial=0.0), 1e-300
        )
        errors[name] = 0.0 if diff == 0 else float(diff / scale)
    return errors


def _per_element(params: dict) -> bool:
    return _size(params) <= PER_ELEMENT_LIMIT


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- sample data


def sample(model: Model, rng: np.random.Generator, dims: dict) -> tuple[dict, dict]:
    """Random parameters and inputs; a model may supply its own ``sampler``."""
    sampler = getattr(model, "sampler", None)
    if sampler is not None:
        return sampler(rng, **dims)
    sizes = {model.dims[k]: v for k, v in dims.items()}
    params = {
        name: 0.5 * rng.standard_normal(_concrete(n.shape, sizes))
        for name, n in model.params.items()
    }
    bounds = _index_bounds(model, sizes)
    inputs = {}
    for name, n in model.inputs.items():
        shape = _concrete(n.shape, sizes)
        if n.dtype == "int64":
            inputs[name] = rng.integers(0, bounds.get(name, 2), size=shape)
        elif n.dtype == "bool":
            inputs[name] = rng.random(shape) < 0.5
        else:
            inputs[name] = rng.standard_normal(shape)
    return params, inputs


def _concrete(shape, sizes: dict) -> tuple[int, ...]:
    return tuple(int(sp.sympify(d).subs(sizes)) for d in shape)


def _index_bounds(model: Model, sizes: dict) -> dict[str, int]:
    """For each integer input, the size of the axis it indexes (so samples are valid)."""
    bounds: dict[str, int] = {}
    for node in toposort([model.loss_node, *model.outputs.values()]):
        for axis_size, leaf in _indexed(node):
            size = int(sp.sympify(axis_size).subs(sizes))
            while leaf.args:  # through views such as labels[:, None]
                leaf = leaf.args[0]
            bounds[leaf.name] = min(size, bounds.get(leaf.name, size))
    return bounds


def _indexed(node):
    """(size of the axis indexed, index array) of a gather, take_along_axis or
    sg.segment_sum node."""
    if node.op == "gather":
        return [(node.args[0].shape[0], node.args[1])]
    if node.op == "take_along_axis":
        return [(node.args[0].shape[node.attrs[0]], node.args[1])]
    if node.op == "scatter":
        return [(node.shape[0], idx) for _, _, idx in ops.scatter_updates(node)]
    return []
