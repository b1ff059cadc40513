"""Round 59: fuzz of elementwise compositions at EXTREME arguments, against mpmath
(the oracle) and a torch float64 twin (the bar to clear).

tests/test_fuzz.py draws elementwise formulas at arguments of order 1. Here ``Program``
(a seeded NumPy generator per seed, a fixed list: CI is deterministic) draws one
expression tree of depth 2-4 over 1-3 params of the same small shape ``(n,)`` (n = 2-4),
written once as sg source and evaluated by three namespaces (sg, torch, mpmath), so the
repro printed on failure is the expression itself:

* total functions: ``tanh sigmoid softplus erf erfc arctan arcsinh abs square silu
  gelu``, ``+ - *``, ``** 2``, ``** 3``, ``sg.logaddexp``, ``sg.maximum``/``minimum``,
  ``sg.where(a > b, c, d)``, ``sg.clip(a, -c, c)``;
* guarded the way a careful user guards them: ``log``, ``log1p``, ``sqrt``, ``** 0.5``,
  ``** -1``, ``** 1.5`` and ``/`` of positive values (``softplus(a)``, ``sigmoid(a)``,
  ``a * a + eps``, ``abs(a) + eps``, ``exp(-softplus(a))``, ``erfc(a)``, ``1 + exp(a)``),
  ``log1p`` of values > -1 (``-sigmoid(a)``, ``tanh(a)``), ``exp``/``expm1`` of values
  bounded above (``-softplus(a)``, ``-a * a``, ``tanh(a)``, ``-abs(a)``, ``log(P)``).

Each element of each param is ``sign * s * u`` with ``s`` drawn per element from
{1e-300, 1e-12, 1e-6, 1, 30, 700, 1e6, 1e150} and ``u`` in [1, 2). The model outputs
``y = f(p0, p1, p2)`` and its loss is ``sum(w * y)`` (``w`` an input of order 1), so
values, gradients and Hessians are elementwise: each element is checked on its own,
relative to its own size (a gradient of 1e-300 next to one of 1 must be right too).

The oracle is mpmath at 50 digits on the float64 data (400 digits in a recheck when a
check fails: exp(-1e-300) is 1 at 50), values directly, derivatives by mpmath.diff of
``f(p * (1 + u))`` in ``u`` at 0 (a step relative to each argument, so 1e-300 and 1e150
are differentiated alike). Each element's relative error (over at least 1e-300; a
non-finite result where the exact one is finite in float64 counts as infinite) must be at
most ``max(TOL, 10 * torch's)``: symgrad must be as good as the user's formula evaluated
naturally in float64 by torch (forward, autograd, double backward). Not compared: elements
whose exact value is beyond float64, and elements where an intermediate of torch's forward
is not finite (the user's own ``p ** 3`` at 1e150 overflows; derivatives are then nan or
0 by the order of the products, in torch as in symgrad: ``sg.tanh(p ** 3)``'s Hessian at
1e150 is nan in both). Checked:

* ``forward`` output and ``value_and_grad`` gradients of the vectorized module (no
  unrolled function), NumPy warnings allowed (guarded formulas overflow inside, as
  torch's do silently);
* the module with its automatic unrolled (scalar) function: the same bar, and where the
  unrolled function ran (``math`` did not raise), its results equal the vectorized ones
  to 1e-12 or are no worse against the oracle;
* every third program, ``hvp`` (a hessian=True build) against the oracle's Hessian, with
  torch's double backward as the bar.

Budget: 36 programs and 3 found ones (~30 s on 2 cores); about 340 seeds were explored in
scratch runs. Found, each pinned by a hand-minimised strict xfail below:

* ``sg.logaddexp(a, b)`` was ``b + softplus(a - b)`` (symgrad/model.py): where |b| >> |a|,
  ``b + (a - b)`` cancels: ``logaddexp(1.0, -1e17)`` was 0.0, ``logaddexp(0.1, -1e6)``
  off by 1e-10 (NumPy and torch: exact). Fixed: the larger plus softplus(smaller -
  larger), one branch each way (their exp(-|a - b|) shared);
* sigmoid is ``1 / (1 + exp(Min(-x, 709)))`` (symgrad/symbolic.py), so for x < -709 it is
  exp(-709) = 1.2e-308, not ~exp(x): ``sg.silu(-1e300)`` is -1.2e-8 (exact: -0.0, as
  NumPy's x / (1 + exp(-x))) (left: an absolute error below 1.2e-308 |x|), and
  ``sg.log(sg.sigmoid(-1000))`` was -709.0, silently (fixed: sg.log of a sigmoid is
  -softplus(-x), exact);
* ``sg.minimum(a, sg.log(1 + sg.exp(b)))`` at (1, 1e6): gradient in b was nan where torch
  and the same formula written with ``sg.where`` give 0 (a Heaviside mask times
  inf/inf; fixed: the mask selects).
"""

from __future__ import annotations

import contextlib
import warnings

import mpmath
import numpy as np
import pytest
from helpers import compile_module, spy_unrolled

import symgrad as sg
import symgrad.unroll

torch = pytest.importorskip("torch")

N_PROGRAMS = 36
SEED_BASE = 59_000
HESSIAN_EVERY = 3
TOL = 1e-9
SLACK = 10.0  # symgrad may be this many times worse than torch against the oracle
SCALES = (1e-300, 1e-12, 1e-6, 1.0, 30.0, 700.0, 1e6, 1e150)
FLOOR = 1e-300  # relative errors count against at least this (subnormals round)
DPS = 50
DEEP = 400  # digits for a recheck: past 1e-300 relative


# ---------------------------------------------------------------------------------
# the three namespaces one expression string is evaluated in


class TorchNS:
    exp, log, log1p, expm1, sqrt = (
        torch.exp,
        torch.log,
        torch.log1p,
        torch.expm1,
        torch.sqrt,
    )
    tanh, sigmoid, erf, arctan, arcsinh = (
        torch.tanh,
        torch.sigmoid,
        torch.erf,
        torch.arctan,
        torch.arcsinh,
    )
    abs, square, logaddexp = torch.abs, torch.square, torch.logaddexp
    maximum, minimum, where = torch.maximum, torch.minimum, torch.where

    @staticmethod
    def erfc(x):
        return torch.special.erfc(x)

    @staticmethod
    def softplus(x):  # (F.softplus is linear past 20: an approximation)
        return torch.logaddexp(x, torch.zeros_like(x))

    @staticmethod
    def silu(x):
        return torch.nn.functional.silu(x)

    @staticmethod
    def gelu(x):
        return torch.nn.functional.gelu(x)

    @staticmethod
    def clip(x, lo, hi):
        return torch.clamp(x, lo, hi)


class MpNS:
    """sg's functions on mpmath numbers (one element)."""

    log, log1p, sqrt = mpmath.log, mpmath.log1p, mpmath.sqrt
    tanh, erf, erfc, arctan, arcsinh = (
        mpmath.tanh,
        mpmath.erf,
        mpmath.erfc,
        mpmath.atan,
        mpmath.asinh,
    )
    abs = mpmath.fabs

    @staticmethod
    def exp(x):
        if x > 1e30:  # far past float64, and exp(exp(.)) would not fit in memory
            raise OverflowError
        return mpmath.exp(x)

    @staticmethod
    def expm1(x):
        return mpmath.expm1(x) if x < 1 else MpNS.exp(x) - 1

    @staticmethod
    def sigmoid(x):
        return 1 / (1 + MpNS.exp(-x))

    @staticmethod
    def softplus(x):
        return mpmath.log1p(MpNS.exp(x))

    @staticmethod
    def silu(x):
        return x / (1 + MpNS.exp(-x))

    @staticmethod
    def gelu(x):
        return x / 2 * (1 + mpmath.erf(x / mpmath.sqrt(2)))

    @staticmethod
    def square(x):
        return x * x

    @staticmethod
    def logaddexp(a, b):
        return mpmath.log(MpNS.exp(a) + MpNS.exp(b))

    @staticmethod
    def maximum(a, b):
        return mpmath.mpf(a) if a >= b else mpmath.mpf(b)

    @staticmethod
    def minimum(a, b):
        return mpmath.mpf(a) if a <= b else mpmath.mpf(b)

    @staticmethod
    def where(c, a, b):
        return a if c else b

    @staticmethod
    def clip(x, lo, hi):
        return min(max(x, lo), hi)


# ---------------------------------------------------------------------------------
# programs


class Program:
    """One expression tree over params p0.. of shape (n,), drawn from the seed."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(SEED_BASE + seed)
        self.n_params = int(self.rng.integers(1, 4))
        self.n = int(self.rng.integers(2, 5))
        self.depth = int(self.rng.integers(2, 5))

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def leaf(self):
        return f"p{int(self.rng.integers(self.n_params))}"

    def positive(self, d):
        """A value > 0 (a careful user's argument of log, sqrt, a divisor)."""
        a = self.expr(d)
        eps = self.choice(["1e-12", "1.0", "1e-300"])
        return self.choice(
            [
                f"sg.softplus({a})",
                f"sg.sigmoid({a})",
                f"({a}) * ({a}) + {eps}",
                f"sg.abs({a}) + {eps}",
                f"sg.exp(-sg.softplus({a}))",
                f"sg.erfc({a})",
                f"(1.0 + sg.exp({a}))",
                f"sg.exp(-sg.abs({a}))",
            ]
        )

    def above_minus_one(self, d):
        a = self.expr(d)
        return self.choice([f"-sg.sigmoid({a})", f"sg.tanh({a})", self.positive(d)])

    def bounded_above(self, d):
        a = self.expr(d)
        return self.choice(
            [
                f"-sg.softplus({a})",
                f"-({a}) * ({a})",
                f"sg.tanh({a})",
                f"-sg.abs({a})",
                f"sg.log({self.positive(d)})",
                f"-sg.sqrt({self.positive(d)})",
            ]
        )

    def expr(self, d):
        if d <= 0 or (d == 1 and self.rng.random() < 0.3):
            return self.leaf()
        kind = self.choice(["total"] * 4 + ["guarded"] * 3 + ["binary"] * 3)
        if kind == "total":
            f = self.choice(
                [
                    "tanh",
                    "sigmoid",
                    "softplus",
                    "erf",
                    "erfc",
                    "arctan",
                    "arcsinh",
                    "abs",
                    "square",
                    "silu",
                    "gelu",
                ]
            )
            return f"sg.{f}({self.expr(d - 1)})"
        if kind == "guarded":
            g = self.choice(
                ["log", "log", "sqrt", "log1p", "p05", "pm1", "p15", "exp", "expm1"]
            )
            if g in ("log", "sqrt"):
                return f"sg.{g}({self.positive(d - 1)})"
            if g == "log1p":
                return f"sg.log1p({self.above_minus_one(d - 1)})"
            if g in ("exp", "expm1"):
                return f"sg.{g}({self.bounded_above(d - 1)})"
            power = {"p05": "0.5", "pm1": "-1", "p15": "1.5"}[g]
            return f"({self.positive(d - 1)}) ** {power}"
        a = self.expr(d - 1)
        b = self.expr(d - 1)
        if a == b:
            b = f"sg.tanh({b})"
        op = self.choice(
            ["+", "-", "*", "/", "lae", "max", "min", "where", "clip", "pow2", "pow3"]
        )
        if op in "+-*":
            return f"({a}) {op} ({b})"
        if op == "/":
            return f"({a}) / ({self.positive(d - 1)})"
        if op == "lae":
            return f"sg.logaddexp({a}, {b})"
        if op in ("max", "min"):
            return f"sg.{op}imum({a}, {b})"
        if op == "where":
            c = self.expr(d - 1)
            return f"sg.where({a} > {b}, {c}, {a})"
        if op == "clip":
            c = self.choice(["1.0", "30.0", "1e6"])
            return f"sg.clip({a}, -{c}, {c})"
        return f"({a}) ** {op[-1]}"

    def draw(self):
        self.src = self.expr(self.depth)
        used = sorted({f"p{k}" for k in range(self.n_params) if f"p{k}" in self.src})
        self.names = used
        self.params = {k: self.data() for k in used}
        self.inputs = {"w": self.rng.uniform(0.5, 2.0, self.n) * self.choice([1, -1])}
        return self

    def data(self):
        s = self.rng.choice(SCALES, size=self.n)
        sign = self.rng.choice([-1.0, 1.0], size=self.n)
        return sign * s * self.rng.uniform(1.0, 2.0, size=self.n)

    def build(self, hessian=False):
        m = sg.Model(f"fuzz59_{self.seed}", hessian=hessian)
        env = {"sg": sg}
        for k in self.names:
            env[k] = m.param(k, (self.n,))
        w = m.input("w", (self.n,))
        y = m.output("y", eval(self.src, env))
        m.loss(sg.sum(w * y))
        return m

    def source(self):
        decl = "; ".join(f"{k} = m.param({k!r}, ({self.n},))" for k in self.names)
        data = {k: v.tolist() for k, v in {**self.params, **self.inputs}.items()}
        return f"{decl}\ny = {self.src}\nloss = sum(w * y)\ndata = {data!r}"


# ---------------------------------------------------------------------------------
# the oracles


class Overflows(torch.overrides.TorchFunctionMode):
    """Marks the elements where some intermediate of the forward is not finite: there
    the user's formula itself overflows in float64 (``p ** 3`` at 1e150), and torch's
    derivatives are finite or not by the order of its products."""

    def __init__(self, n):
        super().__init__()
        self.bad = np.zeros(n, bool)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            finite = torch.isfinite(out.detach()).numpy()
            self.bad |= ~np.broadcast_to(finite, self.bad.shape)
        return out


def torch_results(program, hessian):
    """y, grads and (hessian) the elementwise Hessian blocks H[i][a][b] from torch,
    nan (no bar: anything goes) where the forward overflowed on the way."""
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in program.params.items()}
    w = torch.tensor(program.inputs["w"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Overflows(program.n) as overflows:
            y = eval(program.src, {"sg": TorchNS, **tp})
        loss = (w * y).sum()
        grads = torch.autograd.grad(
            loss, list(tp.values()), create_graph=hessian, allow_unused=True
        )
        grads = [
            torch.zeros_like(p) if g is None else g
            for g, p in zip(grads, tp.values(), strict=True)
        ]
        out = {
            "y": y.detach().numpy(),
            "grads": {k: g.detach().numpy() for k, g in zip(tp, grads, strict=True)},
        }
        if hessian:
            H = np.zeros((program.n, len(tp), len(tp)))
            for a, g in enumerate(grads):
                if not g.requires_grad:
                    continue
                rows = torch.autograd.grad(
                    g.sum(), list(tp.values()), retain_graph=True, allow_unused=True
                )
                for b, r in enumerate(rows):
                    if r is not None:
                        H[:, a, b] = r.detach().numpy()
            out["H"] = H
    bad = overflows.bad
    out["y"] = np.where(bad, np.nan, out["y"])
    out["grads"] = {k: np.where(bad, np.nan, g) for k, g in out["grads"].items()}
    if hessian:
        out["H"][bad] = np.nan
    return out


def mp_results(program, hessian, dps=DPS):
    """The same from mpmath at DPS digits (exact data, numeric derivatives in a
    relative step): floats, inf where the exact value is beyond float64."""
    names = program.names
    k = len(names)
    y = np.zeros(program.n)
    grads = {name: np.zeros(program.n) for name in names}
    H = np.zeros((program.n, k, k))
    with mpmath.workdps(dps):
        for i in range(program.n):
            x = [mpmath.mpf(float(program.params[name][i])) for name in names]
            wi = mpmath.mpf(float(program.inputs["w"][i]))

            def f(*u, x=x):
                env = {n: x[j] * (1 + u[j]) for j, n in enumerate(names)}
                return eval(program.src, {"sg": MpNS, **env})

            def diff(order, f=f):
                try:
                    return mpmath.diff(f, (0,) * k, order)
                except OverflowError:  # an exponent past mpmath's: not compared
                    return None

            y[i] = to_float(diff((0,) * k))
            for a in range(k):
                order = tuple(int(j == a) for j in range(k))
                d = diff(order)
                grads[names[a]][i] = to_float(None if d is None else wi * d / x[a])
            if hessian:
                for a in range(k):
                    for b in range(a, k):
                        order = tuple(int(j == a) + int(j == b) for j in range(k))
                        d = diff(order)
                        h = None if d is None else wi * d / (x[a] * x[b])
                        H[i, a, b] = H[i, b, a] = to_float(h)
    return {"y": y, "grads": grads, "H": H}


def to_float(v):
    if v is None:
        return np.nan
    v = mpmath.mpf(v)
    if abs(v) > mpmath.mpf(np.finfo(float).max):
        return np.inf if v > 0 else -np.inf
    return float(v)


def errors(actual, exact):
    """Elementwise relative errors (inf where actual is not finite); nan where the
    exact value is beyond float64 (not compared)."""
    actual = np.asarray(actual, float)
    exact = np.asarray(exact, float)
    with np.errstate(invalid="ignore", over="ignore"):
        err = np.abs(actual - exact) / np.maximum(np.abs(exact), FLOOR)
    err = np.where(np.isfinite(actual), err, np.inf)
    return np.where(np.isfinite(exact), err, np.nan)


def assert_no_worse(what, actual, exact, bar):
    """Each element of ``actual`` within max(TOL, SLACK * torch's error)."""
    err, err_t = errors(actual, exact), errors(bar, exact)
    allowed = np.maximum(TOL, SLACK * err_t)
    bad = np.isfinite(exact) & ~(err <= allowed)
    assert not bad.any(), (
        f"{what}: symgrad {np.asarray(actual)[bad]} vs exact {np.asarray(exact)[bad]} "
        f"(torch {np.asarray(bar)[bad]})"
    )


@contextlib.contextmanager
def vectorized_only():
    """Compile without the automatic unrolled function."""
    saved = symgrad.unroll.AUTO_ELEMENTS
    symgrad.unroll.AUTO_ELEMENTS = 0
    try:
        yield
    finally:
        symgrad.unroll.AUTO_ELEMENTS = saved


def run_module(module, program):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        outputs, _ = module.forward(program.params, program.inputs)
        _, grads = module.value_and_grad(program.params, program.inputs)
    return outputs["y"], grads


def check_first_order(module, program, exact, bar, label):
    y, grads = run_module(module, program)
    assert_no_worse(f"{label} y", y, exact["y"], bar["y"])
    for k in program.names:
        assert_no_worse(
            f"{label} grad {k}", grads[k], exact["grads"][k], bar["grads"][k]
        )
    return y, grads


def run_program(program):
    """The checks against the oracle at DPS digits, and again at DEEP digits if they
    fail (exp(-1e-300) is 1 at 50 digits: log of it would be 0)."""
    hessian = program.seed % HESSIAN_EVERY == 0
    bar = torch_results(program, hessian)
    try:
        run_checks(program, mp_results(program, hessian), bar)
    except AssertionError:
        run_checks(program, mp_results(program, hessian, DEEP), bar)


def run_checks(program, exact, bar):
    hessian = program.seed % HESSIAN_EVERY == 0
    with vectorized_only():
        module = compile_module(program.build())
    y, grads = check_first_order(module, program, exact, bar, "vectorized")

    unrolled = compile_module(program.build())
    calls, restore = spy_unrolled(unrolled)
    try:
        uy, ugrads = check_first_order(unrolled, program, exact, bar, "unrolled")
    finally:
        restore()
    assert calls, "no unrolled function was generated"
    if not any(" raised " in c for c in calls):  # the unrolled function ran
        for name, a, b in [("y", uy, y)] + [(k, ugrads[k], grads[k]) for k in grads]:
            close = np.isclose(a, b, rtol=1e-12, atol=0) | (a == b)
            better = errors(a, exact["y"] if name == "y" else exact["grads"][name])
            worse = errors(b, exact["y"] if name == "y" else exact["grads"][name])
            ok = close | ~(better > np.maximum(worse, TOL))
            assert ok.all(), (name, a, b)

    if hessian:
        with vectorized_only():
            hmodule = compile_module(program.build(hessian=True))
        rng = np.random.default_rng(program.seed)
        v = {k: rng.standard_normal(program.n) for k in program.names}
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            hv = hmodule.hvp(program.params, program.inputs, v)
        V = np.stack([v[k] for k in program.names], axis=1)  # (n, k)
        for a, k in enumerate(program.names):
            with np.errstate(all="ignore"):
                exact_hv = np.sum(exact["H"][:, a, :] * V, axis=1)
                torch_hv = np.sum(bar["H"][:, a, :] * V, axis=1)
            # per-entry oracle: compare only where every entry is finite
            assert_no_worse(f"hvp {k}", hv[k], exact_hv, torch_hv)


def draw(seed):
    return Program(seed).draw()


SIGMOID_FLOOR = (
    "sigmoid is 1 / (1 + exp(Min(-x, 709))) (symbolic.py): >= exp(-709) = 1.2e-308 "
    "for x < -709, so x * sigmoid(x) is -1.2e-308 |x|, not ~0 "
    "(test_sigmoid_floor_far_left)"
)
# seeds past N_PROGRAMS that met a bug in scratch runs (about 340 seeds explored)
FOUND = {160: SIGMOID_FLOOR, 59: SIGMOID_FLOOR}
SEEDS = [
    *range(N_PROGRAMS),
    296,  # was a strict xfail: sg.logaddexp of far-apart arguments
    *(
        pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=r))
        for s, r in FOUND.items()
    ),
]


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_round59(seed):
    program = draw(seed)
    try:
        run_program(program)
    except BaseException as e:
        raise AssertionError(f"program (seed {seed}):\n{program.source()}") from e


# ---------------------------------------------------------------------------------
# found by the fuzz, hand-minimised


def first_order(f, n_args, *values, unroll=False):
    """y = f(p0, ...) at one element each: (y, grads) from forward and value_and_grad of
    the vectorized module (or the automatically unrolled one)."""
    m = sg.Model("round59_min")
    ps = [m.param(f"p{j}", (1,)) for j in range(n_args)]
    y = m.output("y", f(*ps))
    m.loss(sg.sum(y))
    with contextlib.nullcontext() if unroll else vectorized_only():
        module = compile_module(m)
    params = {f"p{j}": np.array([v]) for j, v in enumerate(values)}
    with np.errstate(all="ignore"):
        outputs, _ = module.forward(params, {})
        _, grads = module.value_and_grad(params, {})
    return float(outputs["y"][0]), [float(grads[f"p{j}"][0]) for j in range(n_args)]


@pytest.mark.parametrize("unroll", [False, True])
def test_logaddexp_of_far_apart_arguments(unroll):
    """log(exp(1) + exp(-1e17)) is 1 to float64 (exp(-1e17 - 1) is far below its
    epsilon), as np.logaddexp and torch.logaddexp give. Was a strict xfail: symgrad
    gave 0.0 (b + softplus(a - b) cancels), and logaddexp(0.1, -1e6) was off by ~1e-10.
    """
    for a, b in [(1.0, -1e17), (1e-6, -1e150), (0.1, -1e6)]:
        y, grads = first_order(sg.logaddexp, 2, a, b, unroll=unroll)
        assert abs(y - a) <= 1e-15 * abs(a), (a, b, y)
        assert grads == [1.0, 0.0]


def test_logaddexp_of_close_arguments():
    """The same function where its arguments are near (its usual use): right."""
    for a, b in [(1.0, 2.0), (-700.0, -701.0), (1e6, 1e6 + 1.0)]:
        y, grads = first_order(sg.logaddexp, 2, a, b)
        exact = max(a, b) + float(mpmath.log1p(mpmath.exp(-abs(a - b))))
        assert abs(y - exact) <= 1e-15 * abs(exact)


@pytest.mark.xfail(strict=True, reason=SIGMOID_FLOOR)
@pytest.mark.parametrize("unroll", [False, True])
def test_sigmoid_floor_far_left(unroll):
    """silu(-1e300) is -1e300 exp(-1e300): -0.0 in float64, as NumPy's x / (1 +
    np.exp(-x)) gives; symgrad gives -1.2e-8 (and a gradient of -1.2e-8), from sigmoid's
    floor exp(-709) times x. (sigmoid(-720) itself is 1.2e-308 where exp(-720) is
    2.2e-313; torch gives 0.)"""
    y, (g,) = first_order(sg.silu, 1, -1e300, unroll=unroll)
    assert abs(y) <= 1e-300 and abs(g) <= 1e-300, (y, g)
    y, (g,) = first_order(lambda p: p * sg.sigmoid(p), 1, -1e300, unroll=unroll)
    assert abs(y) <= 1e-300 and abs(g) <= 1e-300, (y, g)
    y, _ = first_order(sg.sigmoid, 1, -720.0, unroll=unroll)
    assert abs(y - float(mpmath.exp(-720))) <= 1e-310, y


def test_log_sigmoid_far_left():
    """Was a strict xfail: log(sigmoid(x)) for x < -709 was log(exp(-709)) = -709.0,
    silently, where it is x (-1000), from sigmoid's floor (1 + exp(Min(-x, 709)));
    sg.log of a sigmoid is now -softplus(-x). (NumPy's and torch's natural
    log(1 / (1 + exp(-x))) give -inf, torch's F.logsigmoid -1000.)"""
    for x in (-1000.0, -1e6):
        y, (g,) = first_order(lambda p: sg.log(sg.sigmoid(p)), 1, x)
        assert y == x and g == 1.0, (x, y, g)


def test_minimum_of_an_overflowing_branch():
    """min(a, log(1 + exp(b))) at a = 1, b = 1e6 is a: its gradient in b is 0. Was a
    strict xfail: the gradient of sg.minimum/maximum was a Heaviside mask times each
    argument's derivative, and the derivative of the argument not picked is inf/inf =
    nan here: 0 * nan (torch.minimum and sg.where select; symbolic.relu_masked now
    selects too, where that derivative is not a polynomial)."""
    y, grads = first_order(
        lambda a, b: sg.minimum(a, sg.log(1.0 + sg.exp(b))), 2, 1.0, 1e6
    )
    assert y == 1.0 and grads == [1.0, 0.0], (y, grads)


def test_where_of_an_overflowing_branch():
    """The same min written with sg.where: right."""
    y, grads = first_order(
        lambda a, b: sg.where(a < 0.5e6, a, sg.log(1.0 + sg.exp(b))), 2, 1.0, 1e6
    )
    assert y == 1.0 and grads == [1.0, 0.0], (y, grads)
