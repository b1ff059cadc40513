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

from . import symbolic, tape
from .ir import Node, toposort
from .model import Model
from .tape.nn import functional as F

TAPE_TOLERANCE = 1e-10
FD_TOLERANCE = 1e-6
PER_ELEMENT_LIMIT = 400  # parameters; above this, random directions


@dataclass
class Row:
    name: str
    shape: tuple
    tape_error: float
    fd_error: float  # NaN where no finite-difference check applies

    @property
    def passed(self) -> bool:
        return self.tape_error <= TAPE_TOLERANCE and not self.fd_error > FD_TOLERANCE


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
        if old is not None:
            tape_error, fd_error = max(tape_error, old.tape_error), max(
                fd_error, old.fd_error
            )
        self.rows[name] = Row(name, shape, tape_error, fd_error)

    def table(self) -> str:
        sizes = "; ".join(
            ", ".join(f"{k}={v}" for k, v in d.items()) or "-" for d in self.dims
        )
        lines = [f"{self.model}  (dims: {sizes}; finite differences {self.fd_method})"]
        lines.append(f"  {'':16} {'shape':>14} {'vs tape':>10} {'vs FD':>10}")
        for r in self.rows.values():
            fd = "-" if np.isnan(r.fd_error) else f"{r.fd_error:.1e}"
            flag = "" if r.passed else "  FAIL"
            lines.append(
                f"  {r.name:16} {str(r.shape):>14} {r.tape_error:>10.1e} {fd:>10}{flag}"
            )
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


def relative_error(actual, expected) -> float:
    """max |actual - expected| over the largest magnitude of either (0 when both are 0)."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    scale = max(
        np.max(np.abs(expected), initial=0.0), np.max(np.abs(actual), initial=0.0)
    )
    diff = np.max(np.abs(actual - expected), initial=0.0)
    return 0.0 if diff == 0 else float(diff / scale) if scale > 0 else float("inf")


def verify(model: Model, module, dim_sets=None, seed: int = 0) -> Report:
    """Compare ``module``'s value_and_grad, forward and backward with the tape and FD."""
    report = Report(model.name)
    rng = np.random.default_rng(seed)
    for dims in dim_sets or default_dims(model):
        params, inputs = sample(model, rng, dims)
        report.dims.append(_bound_dims(model, params, inputs))
        _check_one(model, module, params, inputs, report, rng)
    return report


def default_dims(model: Model) -> list[dict]:
    """Two sizes for every symbolic dim, so size-dependent mistakes show."""
    return [{d: 3 for d in model.dims}, {d: 5 for d in model.dims}]


def _check_one(model, module, params, inputs, report: Report, rng) -> None:
    loss, grads = module.value_and_grad(params, inputs)
    outputs, cache = module.forward(params, inputs)
    scaled = module.backward(cache, grad_loss=-2.5)
    ref_loss, ref_outputs, ref_grads = tape_reference(model, params, inputs)
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

    fd = finite_differences(f, params, grads, rng)
    report.fd_method = (
        "per element"
        if _size(params) <= PER_ELEMENT_LIMIT
        else "along 3 random directions per parameter"
    )
    for name, g in grads.items():
        if np.shape(g) != np.shape(params[name]):
            report.add(f"grad {name}", np.shape(params[name]), np.inf, np.inf)
            continue
        tape_error = max(
            relative_error(g, ref_grads[name]),
            relative_error(scaled[name], -2.5 * ref_grads[name]),
        )
        report.add(f"grad {name}", tuple(np.shape(g)), tape_error, fd[name])


def _size(params: dict) -> int:
    return sum(np.size(p) for p in params.values())


def finite_differences(
    f: Callable[[dict], float], params: dict, grads: dict, rng: np.random.Generator
) -> dict[str, float]:
    """Relative error of each gradient against central differences of ``f``."""
    step = np.finfo(float).eps ** (1 / 3)
    errors = {}
    per_element = _size(params) <= PER_ELEMENT_LIMIT
    for name, p in params.items():
        p = np.asarray(p, dtype=float)
        g = np.asarray(grads[name], dtype=float)
        if per_element:
            directions = [np.eye(p.size)[k].reshape(p.shape) for k in range(p.size)]
        else:
            directions = [_unit(rng.standard_normal(p.shape)) for _ in range(3)]
        worst = 0.0
        scale = max(np.linalg.norm(g), 1e-300)
        estimates, exact = [], []
        for v in directions:
            h = step * max(1.0, float(np.max(np.abs(p)))) if per_element else step
            up = f({**params, name: p + h * v})
            down = f({**params, name: p - h * v})
            estimates.append((up - down) / (2 * h))
            exact.append(float(np.sum(g * v)))
        if estimates:
            diff = np.max(np.abs(np.subtract(estimates, exact)))
            scale = max(scale, np.max(np.abs(estimates)))
            worst = 0.0 if diff == 0 else float(diff / scale)
        errors[name] = worst
    return errors


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
        else:
            inputs[name] = rng.standard_normal(shape)
    return params, inputs


def _concrete(shape, sizes: dict) -> tuple[int, ...]:
    return tuple(int(sp.sympify(d).subs(sizes)) for d in shape)


def _index_bounds(model: Model, sizes: dict) -> dict[str, int]:
    """For each integer input, the size of the axis it indexes (so samples are valid)."""
    bounds: dict[str, int] = {}
    for node in toposort([model.loss_node, *model.outputs.values()]):
        if node.op in ("gather", "take_along_axis"):
            axis = 0 if node.op == "gather" else node.attrs[0]
            size = int(sp.sympify(node.args[0].shape[axis]).subs(sizes))
            leaf = node.args[1]
            while leaf.args:  # through views such as labels[:, None]
                leaf = leaf.args[0]
            bounds[leaf.name] = min(size, bounds.get(leaf.name, size))
    return bounds


def _bound_dims(model: Model, params: dict, inputs: dict) -> dict[str, int]:
    dims = {}
    for nodes, arrays in ((model.params, params), (model.inputs, inputs)):
        for name, node in nodes.items():
            for d, n in zip(node.shape, np.shape(arrays[name]), strict=True):
                if isinstance(d, sp.Symbol):
                    dims[d.name] = n
    return dims


# --------------------------------------------------------------------------- tape reference


def tape_reference(
    model: Model, params: dict, inputs: dict
) -> tuple[float, dict, dict]:
    """Loss, outputs and gradients computed by the tape engine from the declaration."""
    leaves = {
        n: tape.tensor(np.asarray(params[k], dtype=float), requires_grad=True)
        for k, n in model.params.items()
    }
    for k, n in model.inputs.items():
        leaves[n] = tape.tensor(np.asarray(inputs[k]))
    sizes = {model.dims[k]: v for k, v in _bound_dims(model, params, inputs).items()}
    values: dict[Node, object] = {}
    for node in toposort([model.loss_node, *model.outputs.values()]):
        if node in leaves:
            values[node] = leaves[node]
        else:
            values[node] = _RULES[node.op](node, [values[a] for a in node.args], sizes)
    loss = values[model.loss_node]
    loss.backward()
    grads = {
        k: (
            leaves[n].grad.numpy()
            if leaves[n].grad is not None
            else np.zeros(np.shape(params[k]))
        )
        for k, n in model.params.items()
    }
    outputs = {k: values[n].detach().numpy() for k, n in model.outputs.items()}
    return loss.item(), outputs, grads


def _index_key(spec: tuple) -> tuple:
    key = []
    for entry in spec:
        if entry[0] == "new":
            key.append(None)
        elif entry[0] == "int":
            key.append(entry[1])
        else:
            key.append(slice(*entry[1:]))
    return tuple(key)


_RULES = {
    "map": lambda n, a, sizes: _evaluate(n.attrs[0], a, sizes),
    "matmul": lambda n, a, sizes: a[0] @ a[1],
    "transpose": lambda n, a, sizes: a[0].permute(*n.attrs[0]),
    "reshape": lambda n, a, sizes: a[0].reshape(_concrete(n.attrs[0], sizes)),
    "sum": lambda n, a, sizes: a[0].sum(dim=n.attrs[0], keepdim=n.attrs[1]),
    "max": lambda n, a, sizes: a[0].amax(dim=n.attrs[0], keepdim=n.attrs[1]),
    "index": lambda n, a, sizes: a[0][_index_key(n.attrs[0])],
    "gather": lambda n, a, sizes: a[0][a[1]],
    "take_along_axis": lambda n, a, sizes: a[0].gather(n.attrs[0], a[1]),
    "detach": lambda n, a, sizes: a[0].detach(),
}

_FUNCTIONS = {
    sp.exp: tape.exp, sp.log: tape.log, sp.sin: tape.sin, sp.cos: tape.cos,
    sp.tan: tape.tan, sp.sinh: tape.sinh, sp.cosh: tape.cosh, sp.tanh: tape.tanh,
    sp.asin: tape.asin, sp.acos: tape.acos, sp.atan: tape.atan, sp.Abs: tape.abs,
    sp.sign: tape.sign, symbolic.sigmoid: tape.sigmoid, symbolic.relu: tape.relu,
    symbolic.softplus: F.softplus, symbolic.log1p: lambda x: tape.log(1 + x),
}  # fmt: skip


def _evaluate(expr: sp.Expr, args: list, sizes: dict):
    """Evaluate a map's SymPy formula with tape operations on its argument tensors."""
    env = {symbolic.arg(i): a for i, a in enumerate(args)}

    def ev(e):
        if e in env:
            return env[e]
        if not (e.free_symbols - sizes.keys()):
            return float(e.subs(sizes))
        parts = [ev(x) for x in e.args] if not isinstance(e, sp.Piecewise) else None
        if e.is_Add:
            return _fold(parts, lambda x, y: x + y)
        if e.is_Mul:
            return _fold(parts, lambda x, y: x * y)
        if e.is_Pow:
            return parts[0] ** parts[1]
        if type(e) in _FUNCTIONS:
            return _FUNCTIONS[type(e)](_tensor(parts[0]))
        if isinstance(e, (sp.Max, sp.Min)):
            pick = (
                (lambda x, y: x >= y)
                if isinstance(e, sp.Max)
                else (lambda x, y: x <= y)
            )
            return _fold(parts, lambda x, y: tape.where(_condition(pick(x, y)), x, y))
        if isinstance(e, sp.Piecewise):
            (value, cond), (default, _) = e.args[0], e.args[-1]
            rest = sp.Piecewise(*e.args[1:]) if len(e.args) > 2 else default
            return tape.where(_condition(ev_cond(cond)), ev(value), ev(rest))
        if isinstance(e, (sp.floor, sp.ceiling, sp.Heaviside)):
            data = [
                p.detach().numpy() if isinstance(p, tape.Tensor) else p for p in parts
            ]
            fn = {sp.floor: np.floor, sp.ceiling: np.ceil, sp.Heaviside: np.heaviside}[
                type(e)
            ]
            return tape.tensor(
                fn(*data)
                if len(data) > 1 or not isinstance(e, sp.Heaviside)
                else fn(data[0], 0.5)
            )
        raise symbolic.UnsupportedError(f"the tape engine cannot evaluate {e}")

    def ev_cond(c):
        if isinstance(c, sp.core.relational.Relational):
            lhs, rhs = (_data(ev(x)) for x in c.args)
            return {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
                    "==": np.equal, "!=": np.not_equal}[c.rel_op](lhs, rhs)  # fmt: skip
        if isinstance(c, sp.And):
            return np.logical_and.reduce([ev_cond(x) for x in c.args])
        if isinstance(c, sp.Or):
            return np.logical_or.reduce([ev_cond(x) for x in c.args])
        if isinstance(c, sp.Not):
            return np.logical_not(ev_cond(c.args[0]))
        return np.asarray(bool(c))

    return _tensor(ev(expr))


def _fold(parts, fn):
    out = parts[0]
    for p in parts[1:]:
        out = fn(out, p)
    return out


def _tensor(x):
    return x if isinstance(x, tape.Tensor) else tape.tensor(float(x))


def _data(x):
    return x.detach().numpy() if isinstance(x, tape.Tensor) else x


def _condition(x):
    return tape.tensor(np.asarray(_data(x), dtype=bool))
