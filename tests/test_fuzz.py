"""Property tests: random well-typed models, compiled and checked against an independent
engine (PyTorch when installed, else the tape) at 1e-10 and central differences at 1e-6.

A model is drawn as Python source (one declaration per line), so a failing example prints
as code that can be pasted into tests/test_regressions.py. Values are kept in safe ranges:
every value carries a bound on its magnitude, ``exp`` only sees small arguments, logs and
square roots only positive ones, and a value that grows past ``LIMIT`` is squashed with
``tanh``. Kinks (abs, relu, max, where) are met with random data, so with probability ~0
at the kink itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from helpers import compile_module
from hypothesis import HealthCheck, given, note, reject, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.reference import reference
from symgrad.verify import _index_bounds, gradient_floor, relative_error, verify

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test extra
    torch = None

SIZES = ({"n": 2}, {"n": 3})  # the symbolic dim "n" is checked at two sizes
DIMS = (1, 2, 3, "n")
LIMIT = 8.0  # |value| bound; softplus stays below torch's threshold of 20
FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI is deterministic
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    report_multiple_bugs=False,  # shrink one failure, not all: CI stays quick
)


@dataclass
class Value:
    name: str
    expr: sg.Expr
    bound: float  # max |value| over data in [-1, 1] and any n in SIZES

    @property
    def shape(self) -> tuple:
        return self.expr.shape


@dataclass
class Program:
    """A model under construction, and the source that declares it."""

    lines: list[str] = field(default_factory=list)
    values: list[Value] = field(default_factory=list, repr=False)
    env: dict = field(default_factory=dict, repr=False)
    used: set = field(default_factory=set, repr=False)
    counts: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.env.update(sg=sg, sp=sp)
        self.run('m = sg.Model("fuzz")')

    def run(self, line: str) -> None:
        self.lines.append(line)
        exec(line, self.env)

    def fresh(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, -1) + 1
        return f"{prefix}{self.counts[prefix]}"

    def leaf(self, kind: str, shape: tuple) -> Value:
        name = self.fresh("p" if kind == "param" else "x")
        self.run(f"{name} = m.{kind}({name!r}, {shape!r})")
        return self.add(name, 1.0)

    def add(self, name: str, bound: float) -> Value:
        value = Value(name, self.env[name], bound)
        self.values.append(value)
        return value

    def let(self, code: str, bound: float, *args: Value) -> Value:
        """``v<k> = code``; a value past LIMIT is squashed so the next op stays safe."""
        self.used.update(a.name for a in args)
        name = self.fresh("v")
        if bound > LIMIT:
            code, bound = f"sg.tanh({code})", 1.0
        self.run(f"{name} = {code}")
        return self.add(name, bound)

    def source(self) -> str:
        return "\n".join(self.lines)

    def __repr__(self) -> str:  # a failing example prints as the code that declares it
        return "\n" + self.source() + "\n"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis' pretty-printer
        printer.text(repr(self))


def declarable(d) -> bool:
    return isinstance(d, int) or d == "n"


def size_bound(d) -> int:
    return max(s["n"] for s in SIZES) if isinstance(d, str) else d


def count(shape) -> int:
    return math.prod(size_bound(d) for d in shape)


# --------------------------------------------------------------------------- operations

UNARY = [
    # (source template, bound of the result given the bound b of the argument, ok(b))
    ("sg.tanh({a})", lambda b: 1.0, None),
    ("sg.sigmoid({a})", lambda b: 1.0, None),
    ("sg.sin({a})", lambda b: 1.0, None),
    ("sg.cos({a})", lambda b: 1.0, None),
    ("sg.softplus({a})", lambda b: b + 1, None),
    ("sg.relu({a})", lambda b: b, None),
    ("sg.abs({a})", lambda b: b, None),
    ("sg.exp({a})", lambda b: math.exp(b), lambda b: b <= 2),
    ("sg.log(1 + {a} ** 2)", lambda b: math.log1p(b * b), None),
    ("sg.sqrt(1 + {a} ** 2)", lambda b: math.sqrt(1 + b * b), None),
    ("{a} ** 2", lambda b: b * b, None),
    ("{a} ** 3", lambda b: b**3, None),
    ("1 / (1 + {a} ** 2)", lambda b: 1.0, None),
    ("-{a}", lambda b: b, None),
    ("0.5 * {a} - 1.25", lambda b: 0.5 * b + 1.25, None),
    ("sg.elementwise(lambda z: z / (1 + sp.exp(-z)), {a})", lambda b: b, None),
    (
        "sg.elementwise(lambda z: sp.atan(z) + sp.cosh(z / 4), {a})",
        lambda b: 2 + b,
        None,
    ),
    ("sg.elementwise(lambda z: sp.Max(z, -z / 2), {a})", lambda b: b, None),
]

BINARY = [
    ("{a} + {b}", lambda a, b: a + b),
    ("{a} - {b}", lambda a, b: a + b),
    ("{a} * {b}", lambda a, b: a * b),
    ("{a} / (1 + {b} ** 2)", lambda a, b: a),
    ("sg.where({a} > {b}, {a}, 2 * {b})", lambda a, b: max(a, 2 * b)),
    (
        "sg.where(({a} < 0.2) & ({b} > -0.5), {a} * {b}, {b})",
        lambda a, b: max(a * b, b),
    ),
    (
        "sg.elementwise(lambda u, w: u * sp.exp(-(w**2)) + w, {a}, {b})",
        lambda a, b: a + b,
    ),
]


def unary(draw, prog: Program, a: Value) -> Value:
    ok = [u for u in UNARY if u[2] is None or u[2](a.bound)]
    template, bound, _ = draw(st.sampled_from(ok))
    return prog.let(template.format(a=a.name), bound(a.bound), a)


def partner_shape(draw, shape: tuple) -> tuple:
    """A shape that broadcasts with ``shape``: a suffix of it, some dims 1, maybe longer."""
    keep = draw(st.integers(0, len(shape)))
    suffix = shape[len(shape) - keep :]
    out = tuple(
        d if declarable(d) and not draw(st.booleans()) else 1 for d in suffix
    )  # noqa: E501
    if keep == len(shape) < 3 and draw(st.integers(0, 3)) == 0:
        out = (draw(st.sampled_from(DIMS)),) + out
    return out


def broadcasts(a: Value, b: Value) -> bool:
    try:
        a.expr + b.expr
    except sg.ShapeError:
        return False
    return True


def operand(draw, prog: Program, shape: tuple, fits) -> Value:
    """An existing value that ``fits``, or a new parameter or input of ``shape``."""
    candidates = [v for v in prog.values if fits(v)]
    if candidates and draw(st.booleans()):
        return draw(st.sampled_from(candidates))
    return prog.leaf(draw(st.sampled_from(["param", "input"])), shape)


def binary(draw, prog: Program, a: Value) -> Value:
    template, bound = draw(st.sampled_from(BINARY))
    b = operand(draw, prog, partner_shape(draw, a.shape), lambda v: broadcasts(a, v))
    if draw(st.booleans()):
        a, b = b, a
    return prog.let(template.format(a=a.name, b=b.name), bound(a.bound, b.bound), a, b)


def reduction(draw, prog: Program, a: Value) -> Value:
    if a.expr.ndim == 0:
        return unary(draw, prog, a)
    kind = draw(st.sampled_from(["sum", "mean", "max", "logsumexp", "softmax", "lsm"]))
    axis = draw(st.integers(-a.expr.ndim, a.expr.ndim - 1))
    n = size_bound(a.shape[axis]) if declarable(a.shape[axis]) else 3
    if kind in ("softmax", "lsm"):
        fn = "softmax" if kind == "softmax" else "log_softmax"
        bound = 1.0 if kind == "softmax" else 2 * a.bound + math.log(n)
        return prog.let(f"sg.{fn}({a.name}, axis={axis})", bound, a)
    axes = draw(
        st.sampled_from(
            [None, axis]
            + ([(axis, (axis + 1) % a.expr.ndim)] if a.expr.ndim > 1 else [])
        )
    )
    keepdims = draw(st.booleans())
    total = (
        count(a.shape) if axes is None else n * (3 if isinstance(axes, tuple) else 1)
    )
    bound = {
        "sum": a.bound * total,
        "mean": a.bound,
        "max": a.bound,
        "logsumexp": a.bound + math.log(total),
    }[kind]
    return prog.let(
        f"sg.{kind}({a.name}, axis={axes!r}, keepdims={keepdims})", bound, a
    )


def matmul(draw, prog: Program, a: Value) -> Value:
    shape = a.shape
    if not shape or not declarable(shape[-1]):
        return binary(draw, prog, a)
    k = shape[-1]
    m = draw(st.sampled_from(DIMS))
    options = [(k,), (k, m)]
    if len(shape) >= 2:
        batch = shape[-3] if len(shape) >= 3 and declarable(shape[-3]) else 2
        options.append((draw(st.sampled_from([1, batch])), k, m))
    if len(shape) >= 3:
        options = [o for o in options if len(o) >= 2]  # keep results at rank <= 3
    b_shape = draw(st.sampled_from(options))
    b = operand(draw, prog, b_shape, lambda v: v.shape == b_shape)
    inner = size_bound(k)
    return prog.let(f"{a.name} @ {b.name}", a.bound * b.bound * inner, a, b)


def view(draw, prog: Program, a: Value) -> Value:
    shape, ndim = a.shape, a.expr.ndim
    options = ["newaxis"]
    if ndim >= 2:
        options += ["T", "perm", "reshape"]
    if ndim >= 1:
        options += ["slice", "int", "flatten"]
    kind = draw(st.sampled_from(options))
    if kind == "newaxis":
        key = draw(
            st.sampled_from(["None", ":, None", "..., None"] if ndim else ["None"])
        )
        code = f"{a.name}[{key}]"
    elif kind == "T":
        code = f"{a.name}.T"
    elif kind == "perm":
        perm = draw(st.permutations(range(ndim)))
        code = f"sg.transpose({a.name}, {tuple(perm)!r})"
    elif kind == "flatten":
        code = f"{a.name}.reshape(-1)"
    elif kind == "reshape":  # split the flattened array again
        dims = [d for d in shape if declarable(d)]
        if not dims:
            return unary(draw, prog, a)
        d = draw(st.sampled_from(dims))
        code = f"sg.reshape({a.name}.reshape(-1), (-1, {d!r}))"
    elif kind == "int":
        axis = draw(st.integers(0, ndim - 1))
        index = draw(st.sampled_from([0, -1]))
        code = f"{a.name}[{', '.join([':'] * axis + [str(index)])}]"
    else:
        axis = draw(st.integers(0, ndim - 1))
        d = shape[axis]
        if isinstance(d, int) and d >= 2:
            start = draw(st.integers(0, d - 1))
            stop = draw(st.integers(start + 1, d))
            step = draw(st.sampled_from([1, 2]))
            part = f"{start}:{stop}" + (":2" if step == 2 else "")
        elif d == "n":  # n >= 2, so both slices are non-empty
            part = draw(st.sampled_from(["1:", ":-1"]))
        else:
            return unary(draw, prog, a)
        code = f"{a.name}[{', '.join([':'] * axis + [part])}]"
    return prog.let(code, a.bound, a)


def gather(draw, prog: Program, a: Value) -> Value:
    """``a[idx]`` or ``sg.take_along_axis(a, idx, axis)``, repeated indices included."""
    shape = a.shape
    if not shape or not all(declarable(d) for d in shape):
        return view(draw, prog, a)
    name = prog.fresh("i")
    if draw(st.booleans()):
        idx_shape = tuple(
            draw(st.sampled_from(DIMS)) for _ in range(draw(st.integers(1, 2)))
        )
        prog.run(f"{name} = m.input({name!r}, {idx_shape!r}, dtype='int64')")
        return prog.let(f"{a.name}[{name}]", a.bound, a)
    axis = draw(st.integers(0, len(shape) - 1))
    idx_shape = shape[:axis] + (draw(st.sampled_from([1, 2, 3])),) + shape[axis + 1 :]
    prog.run(f"{name} = m.input({name!r}, {idx_shape!r}, dtype='int64')")
    return prog.let(f"sg.take_along_axis({a.name}, {name}, axis={axis})", a.bound, a)


OPS = [unary, binary, reduction, matmul, view, gather]


@st.composite
def programs(draw) -> Program:
    prog = Program()
    for _ in range(draw(st.integers(1, 3))):
        rank = draw(st.integers(0, 3))
        prog.leaf("param", tuple(draw(st.sampled_from(DIMS)) for _ in range(rank)))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(OPS))
        op(draw, prog, draw(st.sampled_from(prog.values)))
    sinks = [v for v in prog.values if v.name not in prog.used]
    # Distinct weights, so that terms do not cancel (sin(p) + sin(-p)): a gradient that
    # is zero only up to round-off has no meaningful relative error.
    terms = " + ".join(
        f"{1 + 0.37 * k} * sg.sum(sg.sin({v.name}))" for k, v in enumerate(sinks)
    )
    prog.run(f"m.loss({terms})")
    return prog


# --------------------------------------------------------------------------- checking


def sampler(model):
    """Uniform data in [-1, 1]: every value stays inside its bound."""

    def sample(rng, **dims):
        bounds = _index_bounds(model, {model.dims[k]: v for k, v in dims.items()})

        def draw(node):
            shape = tuple(
                dims[str(d)] if not isinstance(d, int) else d for d in node.shape
            )
            if node.dtype == "int64":  # valid indices into the axis the array indexes
                return rng.integers(0, bounds.get(node.name, 1), shape)
            return rng.uniform(-1.0, 1.0, shape)

        params = {k: draw(n) for k, n in model.params.items()}
        return params, {k: draw(n) for k, n in model.inputs.items()}

    return sample


def check(model, source: str = "") -> None:
    """Generated value_and_grad vs an independent engine (1e-10) and FD (1e-6)."""
    model.sampler = sampler(model)
    module = compile_module(model)
    engine = torch if torch is not None else None
    rng = np.random.default_rng(0)
    for dims in SIZES:
        params, inputs = model.sampler(
            rng, **{k: v for k, v in dims.items() if k in model.dims}
        )
        loss, grads = module.value_and_grad(params, inputs)
        if engine is not None:
            ref_loss, _, ref_grads = reference(model, params, inputs, engine=engine)
            assert relative_error(loss, ref_loss) <= 1e-10, (loss, ref_loss)
            floor = gradient_floor(ref_loss, ref_grads)  # as verify() compares
            for name, g in ref_grads.items():
                error = relative_error(grads[name], g, floor)
                assert error <= 1e-10, f"grad {name} vs torch: {error:.1e}\n{source}"
    dim_sets = [{k: v for k, v in d.items() if k in model.dims} for d in SIZES]
    report = verify(model, module, dim_sets=dim_sets)
    assert report.ok, f"{report.table()}\n{source}"


# Known bugs, each pinned by a strict xfail in tests/test_regressions.py. An example that
# hits one is rejected, so the fuzzer keeps looking for new bugs. When a bug is fixed its
# xfail starts to pass and fails the suite: delete the xfail and the entry here.
KNOWN_BUGS: dict[type, str] = {}


@given(programs())
@FUZZ
def test_random_models_agree_with_reference_and_finite_differences(prog):
    note(prog.source())
    try:
        check(prog.env["m"], prog.source())
    except tuple(KNOWN_BUGS):
        reject()
