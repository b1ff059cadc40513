"""Round 65: fuzz of sg.grad inside models, against a torch float64 twin.

``Program`` (a seeded NumPy generator per seed, a fixed list: CI is deterministic) draws
1-3 params (the first ``(n, k)``, the others ``()``, ``(n,)``, ``(k,)`` or ``(n, k)``,
n, k in 2..4) and 0-2 float inputs, then a forward of 2-6 values of depth up to 4:
tanh, sin, exp of tanh or of minus a square, softplus, sigmoid, square / ``** 2`` /
``a * a``, products and sums (a vector put on a matrix's first axis with ``[:, None]``),
``@`` (matrix-vector, vector-matrix, ``A @ B.T``, ``A.T @ B``, dot), sums and means over
an axis (keepdims or not) or all, indexing and slicing (``[0]``, ``[-1]``, ``[1:]``,
``[:, 0]``, ``[..., :2]``, ``.T``, ``sg.flip``), ``sg.where`` on a comparison of another
value (a branch may be 0.0); values are ``m.let``-named at random. Then one or two
``sg.grad`` calls: of ``sg.sum(v)``, ``sg.sum(v * w)`` or the sum of a map of v, with
respect to an INPUT, a PARAM, an INTERMEDIATE (a slice, a matmul, a where, ...), a
GRADIENT, or a list of two; the second one is, a third of the time, nested (the gradient
of a function of the first gradient). Gradients are ``m.output`` at random (checked as
outputs). The loss combines gradients (squares, sqrt of a sum of squares, ``sg.norm``,
tanh, products with params) and forward values. Every statement is source text over
``F``/``GRAD``/``LET``/``OUT``, run by the sg model and by the twin (``torch.autograd.grad
(create_graph=True)``, inputs ``requires_grad_``, a wrt torch's graph does not see given
as zeros), so a failure prints a pasteable program; the draw runs the twin as it goes (for
shapes; values past 20 are drawn again).

Checked: ``helpers.check`` (loss, outputs, ``value_and_grad``, forward + backward with
grad_loss=-1.5, at 1e-9, NumPy warnings as errors) on the vectorized module; on every
third program (at most 24 parameter elements) ``hessian`` and ``hvp`` against torch's
Hessian (third derivatives through the gradients); on every fifth the unrolled module
(``m.unroll()``, which must run). Hand-written edge programs (``EDGES``, each checked at
first and second order and unrolled): ``allow_unused=True`` zeros alone and in a list;
the gradient with respect to an intermediate used twice; with respect to a slice of a
param; rows of a Hessian as gradients of a gradient's components, stacked; ``sg.where``
whose condition reads the wrt value (a param and an intermediate); ``[p, p]``; with
respect to a gradient; a PINN-like program with a symbolic input size (n = 1, 2, 5, and
unrolled at n = 3).

Budget: 47 programs plus edges, ~40 s on 2 cores; seeds 0-260 were explored in
scratch runs.

Found (fixed since; seed 46 and the hand-minimised models test it):

* ``test_constant_zero_loss_with_scalar_param``: a model with a 0-d param whose loss is
  the constant 0 (here the gradient of ``sin(cos(p))`` with respect to ``h = sin(p)``,
  which the inner gradient ``cos(p)`` does not read: torch gives loss 0, gradient 0)
  made a vectorized ``value_and_grad`` that raised ``NameError: name 'grad_p' is not
  defined`` (codegen named the inlined constant; it no longer names constants). The loss's constant 0 is the node of p's zero gradient, named ``grad_p``;
  codegen prints the loss with ``unit.code(loss)``, which returns the name before
  checking for a constant, where ``_return`` prints constants afresh. forward/backward
  and the unrolled function are right, so models of up to 32 elements (unrolled
  automatically) only meet it at other sizes. Also met with ``m.loss(p * 0.0)`` or
  ``m.loss(sg.sum(W) * 0.0)`` next to any 0-d param.

Not bugs, for the record: ``sg.where(c, a, a)`` is ``a``, so a wrt read only in ``c``
is not used, as in torch (the draw does not pick equal branches); a wrt read only in a
where's condition (different branches) is used in symgrad's graph and gets zeros where
torch refuses ("does not require grad"; ``test_where_condition_only_gives_zeros``); a
slice ``p[1:]`` of a param y uses is a new value, refused by both
(``test_unused_without_allow_unused_is_an_error_as_in_torch``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from helpers import (
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
)

import symgrad as sg
import symgrad.unroll

torch = pytest.importorskip("torch")

SEED_BASE = 65_000
HESSIAN_EVERY = 3  # hessian + hvp (third derivatives) on every third program
UNROLL_EVERY = 5  # the unrolled module on every fifth program
MAX_HESSIAN_PARAMS = 24
BOUND = 20.0  # a drawn value larger than this is drawn again


# ---------------------------------------------------------------------------------
# the namespaces F (sg, or torch with NumPy's spellings) and GRAD of a program


def _stable_softplus(x):
    """log(1 + exp(x)) with every derivative exact (F.softplus is linear past 20)."""
    return torch.where(
        x > 0,
        x + torch.log1p(torch.exp(-x.clamp(min=0.0))),
        torch.log1p(torch.exp(x.clamp(max=0.0))),
    )


def _t(x, like):
    return x if torch.is_tensor(x) else torch.full_like(like, float(x))


class TorchNS:
    tanh, sin, exp, sigmoid, square, sqrt = (
        torch.tanh,
        torch.sin,
        torch.exp,
        torch.sigmoid,
        torch.square,
        torch.sqrt,
    )
    softplus = staticmethod(_stable_softplus)

    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return x.sum() if axis is None else x.sum(dim=axis, keepdim=keepdims)

    @staticmethod
    def mean(x, axis=None, keepdims=False):
        return x.mean() if axis is None else x.mean(dim=axis, keepdim=keepdims)

    @staticmethod
    def where(c, a, b):
        like = a if torch.is_tensor(a) else b
        return torch.where(c, _t(a, like), _t(b, like))

    @staticmethod
    def flip(x, axis):
        return torch.flip(x, (axis,))

    @staticmethod
    def norm(x):
        return torch.linalg.vector_norm(x)


def torch_grad(y, wrt, allow_unused=False):
    """torch.autograd.grad(y, wrt, create_graph=True), unused ones as zeros (the
    program's wrt is always one y uses in symgrad's graph; torch's graph may not see
    it, through a where's condition or a gradient that is constant in it)."""
    many = isinstance(wrt, list)
    ws = wrt if many else [wrt]
    if not y.requires_grad:
        gs = [torch.zeros_like(w) for w in ws]
    else:
        gs = torch.autograd.grad(
            y, ws, create_graph=True, allow_unused=True, materialize_grads=True
        )
    return list(gs) if many else gs[0]


# ---------------------------------------------------------------------------------
# programs


class Program:
    """Statements over F, GRAD, LET and OUT, each run while drawing on the torch twin
    (which reads shapes and bounds magnitudes), then by the sg model and the twin."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(SEED_BASE + seed)
        self.n = int(self.rng.integers(2, 5))
        self.k = int(self.rng.integers(2, 5))
        self.lines: list[str] = []
        self.values: dict[str, dict] = {}  # name -> {shape, deps, depth, kind}
        self.outputs: list[str] = []
        self.count = 0
        self.env = {"F": TorchNS, "GRAD": torch_grad, "LET": lambda _, v: v}
        self.grads: list[str] = []
        self.kinds: list[str] = []

    # -- helpers -------------------------------------------------------------------

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def fresh(self, stem):
        self.count += 1
        return f"{stem}{self.count}"

    def shape_of(self, pick):
        n, k = self.n, self.k
        return {"s": (), "n": (n,), "k": (k,), "nk": (n, k)}[pick]

    def leaf_data(self, shape):
        return self.rng.standard_normal(shape)

    def try_line(self, name, src, deps, kind, depth, let=None):
        """Run ``name = src`` on the twin; keep it if it is finite, bounded, not empty."""
        try:
            value = eval(src, self.env)
        except (RuntimeError, IndexError, TypeError, ValueError):
            return False
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v.numel() == 0 or not torch.isfinite(v).all():
                return False
            if v.abs().max() > BOUND:
                return False
        if let is None:
            let = self.rng.random() < 0.3 and not isinstance(value, list)
        self.env[name] = value
        self.lines.append(
            f"{name} = LET({name!r}, {src})" if let else f"{name} = {src}"
        )
        self.values[name] = {
            "shape": tuple(values[0].shape),
            "deps": set(deps),
            "depth": depth,
            "kind": kind,
            "rg": values[0].requires_grad,
        }
        return True

    def deps_of(self, names):
        out = set()
        for a in names:
            out |= {a} | self.values[a]["deps"]
        return out

    def pool(self, kinds=None, max_depth=3):
        return [
            a
            for a, v in self.values.items()
            if (kinds is None or v["kind"] in kinds) and v["depth"] <= max_depth
        ]

    def pick(self, kinds=None, max_depth=3, recent=0.6):
        names = self.pool(kinds, max_depth)
        fwd = [a for a in names if self.values[a]["kind"] in ("fwd", "grad")]
        if fwd and self.rng.random() < recent:
            return fwd[-1 - int(self.rng.integers(min(3, len(fwd))))]
        return self.choice(names)

    def fit(self, a, b):
        """b's source, put on a's axes where a plain broadcast would not line up."""
        sa, sb = self.values[a]["shape"], self.values[b]["shape"]
        if len(sa) == 2 and len(sb) == 1 and sb[0] == sa[0] and sb[0] != sa[1]:
            return f"{b}[:, None]"
        return b

    # -- forward ops ---------------------------------------------------------------

    def unary(self, a):
        return self.choice(
            [
                f"F.tanh({a})",
                f"F.sin({a})",
                f"F.exp(F.tanh({a}))",
                f"F.exp(-F.square({a}))",
                f"F.softplus({a})",
                f"F.sigmoid({a})",
                f"F.square({a})",
                f"{a} ** 2",
                f"{a} * {a}",
            ]
        )

    def op_unary(self):
        a = self.pick()
        return self.unary(a), [a]

    def op_binary(self):
        a, b = self.pick(), self.pick(recent=0.2)
        fb = self.fit(a, b)
        form = self.choice(
            [
                f"{a} * {fb}",
                f"{a} + {fb}",
                f"{a} - 0.5 * {fb}",
                f"{a} * F.tanh({fb})",
                f"F.sin({a}) * F.softplus({fb})",
                f"F.sigmoid({a} * {fb})",
            ]
        )
        return form, [a, b]

    def op_matmul(self):
        a, b = self.pick(), self.pick(recent=0.2)
        sa, sb = self.values[a]["shape"], self.values[b]["shape"]
        forms = []
        if len(sa) == 2 and len(sb) == 1:
            forms += [f"{a} @ {b}", f"{a}.T @ {b}"]
        if len(sa) == 1 and len(sb) == 2:
            forms += [f"{a} @ {b}", f"{a} @ {b}.T"]
        if len(sa) == 2 and len(sb) == 2:
            forms += [f"{a} @ {b}.T", f"{a}.T @ {b}", f"{a} @ {b}"]
        if len(sa) == 1 and len(sb) == 1:
            forms += [f"{a} @ {b}"]
        if not forms:
            return None
        return self.choice(forms), [a, b]

    def op_reduce(self):
        a = self.pick()
        rank = len(self.values[a]["shape"])
        if rank == 0:
            return None
        fn = self.choice(["sum", "mean"])
        if rank == 1 or self.rng.random() < 0.2:
            return f"F.{fn}({a})", [a]
        axis = int(self.rng.integers(2))
        keep = self.choice(["", ", keepdims=True"])
        return f"F.{fn}({a}, axis={axis}{keep})", [a]

    def op_index(self):
        a = self.pick()
        rank = len(self.values[a]["shape"])
        if rank == 0:
            return None
        forms = [f"{a}[0]", f"{a}[-1]", f"{a}[1:]", f"{a}[:2]", f"F.flip({a}, 0)"]
        if rank == 2:
            forms += [f"{a}[:, 0]", f"{a}[:, 1:]", f"{a}[..., :2]", f"{a}[1, 1:]"]
            forms += [f"F.flip({a}, 1)", f"{a}.T"]
        return self.choice(forms), [a]

    def op_where(self):
        c, a = self.pick(), self.pick()
        b = self.choice([None, self.pick(recent=0.2)])
        if b == a:  # where(c, a, a) is a: c leaves the graph, as in torch
            b = None
        t = self.choice(["0.0", "0.3", "-0.2"])
        cond = self.choice([f"{c} > {t}", f"{c} < {t}"])
        other = "0.0" if b is None else self.fit(a, b)
        args = [a] if b is None else [a, b]
        if self.rng.random() < 0.5:
            return f"F.where({cond}, {a}, {other})", [c, *args]
        return f"F.where({cond}, {other}, {a})", [c, *args]

    FORWARD = [
        "unary",
        "unary",
        "binary",
        "binary",
        "matmul",
        "reduce",
        "index",
        "where",
    ]

    def forward_value(self, kind="fwd"):
        for _ in range(40):
            op = self.choice(self.FORWARD)
            drawn = getattr(self, f"op_{op}")()
            if drawn is None:
                continue
            src, args = drawn
            depth = 1 + max(self.values[a]["depth"] for a in args)
            if depth > 4:
                continue
            name = self.fresh("h")
            if self.try_line(name, src, self.deps_of(args), kind, depth):
                self.kinds.append(op)
                return name
        return None

    # -- gradients -----------------------------------------------------------------

    def scalar_of(self, v):
        """(source, names) of a 0-d function of v: sum, weighted sum, sum of a map."""
        forms = [(f"F.sum({v})", [v])]
        partners = [
            a
            for a in self.values
            if a != v and self.values[a]["shape"] in (self.values[v]["shape"], ())
        ]
        if partners:
            w = self.choice(partners)
            forms.append((f"F.sum({v} * {w})", [v, w]))
        forms.append((f"F.sum({self.unary(v)})", [v]))
        return self.choice(forms)

    def candidates(self, deps):
        """Names y uses that torch can differentiate with respect to."""
        return [a for a in self.values if a in deps and self.values[a]["rg"]]

    def grad_call(self, nested_of=None):
        for _ in range(30):
            if nested_of is not None:
                g = nested_of
                v = self.choice([g, g, self.pick(recent=0.3)])
                ysrc, names = self.scalar_of(v)
                if g not in names:
                    extra = self.choice([f"F.square({g})", f"F.tanh({g})", g])
                    ysrc = f"{ysrc} + F.sum({extra})"
                    names = [*names, g]
            else:
                v = self.pick(kinds=("fwd",), max_depth=4)
                ysrc, names = self.scalar_of(v)
            deps = self.deps_of(names)
            cands = self.candidates(deps)
            if not cands:
                continue
            many = len(cands) >= 2 and self.rng.random() < 0.25
            if many:
                wrt = [str(w) for w in self.rng.choice(cands, 2, replace=False)]
                src = f"GRAD({ysrc}, [{', '.join(wrt)}])"
            else:
                wrt = [self.choice(cands)]
                src = f"GRAD({ysrc}, {wrt[0]})"
            name = self.fresh("g")
            dgs = deps | self.deps_of(wrt)
            depth = max(self.values[a]["depth"] for a in names) + 1
            if not self.try_line(name, src, dgs, "grads", depth, let=False):
                continue
            kinds = [self.values[w]["kind"] for w in wrt]
            self.kinds.append(
                "grad_" + "+".join(kinds) + ("_nested" if nested_of else "")
            )
            value = self.env.pop(name)
            del self.values[name]
            self.lines.pop()
            values = value if many else [value]
            names_out = [self.fresh("g") for _ in values]
            self.lines.append(f"{', '.join(names_out)} = {src}")
            for gname, gval in zip(names_out, values, strict=True):
                self.env[gname] = gval
                self.values[gname] = {
                    "shape": tuple(gval.shape),
                    "deps": dgs,
                    "depth": depth,
                    "kind": "grad",
                    "rg": gval.requires_grad,
                }
                self.grads.append(gname)
                if gval.dim() and self.rng.random() < 0.4:
                    self.lines.append(f"OUT({gname!r}, {gname})")
                    self.outputs.append(gname)
            return names_out
        return None

    # -- loss ----------------------------------------------------------------------

    def loss_term(self, g):
        params = [a for a, v in self.values.items() if v["kind"] == "param"]
        c = self.choice(["1.0", "0.5", "-0.3", "0.1"])
        forms = [
            f"{c} * F.sum({g} ** 2)",
            f"{c} * F.sqrt(F.sum({g} * {g}) + 0.1)",
            f"{c} * F.sum(F.tanh({g}))",
            f"{c} * F.norm({g} + 0.25)",
        ]
        for p in params:
            sp, sg_ = self.values[p]["shape"], self.values[g]["shape"]
            if sp == sg_ or sp == () or sg_ == ():
                forms.append(f"{c} * F.sum({g} * {p})")
            if sp == ():
                forms.append(f"{c} * {p} * F.sum({g} ** 2)")
        return self.choice(forms)

    def draw(self):
        n_params = int(self.rng.integers(1, 4))
        n_inputs = int(self.rng.integers(0, 3))
        self.params, self.inputs = {}, {}
        for j in range(n_params):
            pick = "nk" if j == 0 else self.choice(["s", "n", "k", "nk"])
            self.params[f"p{j}"] = self.leaf_data(self.shape_of(pick))
        for j in range(n_inputs):
            pick = self.choice(["n", "k", "nk", "nk"])
            self.inputs[f"x{j}"] = self.leaf_data(self.shape_of(pick))
        for key, value in {**self.params, **self.inputs}.items():
            t = torch.tensor(value, requires_grad=True)
            self.env[key] = t
            kind = "param" if key in self.params else "input"
            self.values[key] = {
                "shape": value.shape,
                "deps": set(),
                "depth": 0,
                "kind": kind,
                "rg": True,
            }
        for _ in range(int(self.rng.integers(2, 6))):
            self.forward_value()
        if not any(v["kind"] == "fwd" for v in self.values.values()):
            self.forward_value()
        first = self.grad_call()
        assert first is not None, "no gradient drawn"
        second = None
        r = self.rng.random()
        if r < 0.35:  # the gradient of a function of a gradient
            second = self.grad_call(nested_of=self.choice(first))
        elif r < 0.6:  # another gradient of the forward values
            self.forward_value()
            second = self.grad_call()
        terms = [self.loss_term(g) for g in self.grads if self.rng.random() < 0.8]
        if not terms:
            terms = [self.loss_term(self.grads[-1])]
        fwd = [a for a, v in self.values.items() if v["kind"] == "fwd"]
        for a in self.rng.choice(fwd, min(len(fwd), int(self.rng.integers(0, 3)))):
            terms.append(self.choice([f"0.1 * F.sum({a})", f"F.mean({a} ** 2)"]))
        self.lines.append("loss = " + " + ".join(terms))
        del second
        return self

    # -- the sg model and the twin -------------------------------------------------

    def build(self, hessian=False, unroll=False):
        m = sg.Model(f"fuzz65_{self.seed}", hessian=hessian)
        env = {"F": sg, "GRAD": sg.grad, "LET": m.let, "OUT": m.output}
        for k, v in self.params.items():
            env[k] = m.param(k, np.shape(v))
        for k, v in self.inputs.items():
            env[k] = m.input(k, np.shape(v))
        for line in self.lines:
            exec(line, env)
        m.loss(env["loss"])
        if unroll:
            m.unroll()
        return m

    def reference(self, tp, ti):
        outputs = {}
        env = {
            "F": TorchNS,
            "GRAD": torch_grad,
            "LET": lambda _, v: v,
            "OUT": outputs.__setitem__,
            **tp,
            **{k: v.clone().requires_grad_(True) for k, v in ti.items()},
        }
        for line in self.lines:
            exec(line, env)
        return env["loss"], outputs

    def n_param_elements(self):
        return sum(int(np.size(v)) for v in self.params.values())

    def source(self):
        out = [f"n, k = {self.n}, {self.k}; kinds = {self.kinds}"]
        out += [f"{k} = m.param({k!r}, {np.shape(v)})" for k, v in self.params.items()]
        out += [f"{k} = m.input({k!r}, {np.shape(v)})" for k, v in self.inputs.items()]
        out += self.lines
        data = {k: v.tolist() for k, v in {**self.params, **self.inputs}.items()}
        out.append(f"data = {data!r}")
        return "\n".join(out)


@contextlib.contextmanager
def vectorized_only():
    """Compile without the automatic unrolled function."""
    saved = symgrad.unroll.AUTO_ELEMENTS
    symgrad.unroll.AUTO_ELEMENTS = 0
    try:
        yield
    finally:
        symgrad.unroll.AUTO_ELEMENTS = saved


def draw(seed):
    return Program(seed).draw()


def run_program(program):
    params, inputs, reference = program.params, program.inputs, program.reference
    with vectorized_only():
        module = compile_module(program.build())
    check(module, reference, params, inputs)
    if (
        program.seed % HESSIAN_EVERY == 0
        and program.n_param_elements() <= MAX_HESSIAN_PARAMS
    ):
        with vectorized_only():
            hmodule = compile_module(program.build(hessian=True))
        assert_second_order_agrees(hmodule, reference, params, inputs, scaled=True)
    if program.seed % UNROLL_EVERY == 0:
        umodule = compile_module(program.build(unroll=True))
        check_unrolled(umodule, reference, params, inputs)


SEEDS = list(range(48))


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_round65(seed):
    program = draw(seed)
    try:
        run_program(program)
    except BaseException as e:
        raise AssertionError(f"program (seed {seed}):\n{program.source()}") from e


# ---------------------------------------------------------------------------------
# hand-written edge programs: (model, torch twin, params, inputs)

EDGES = {}


def edge(fn):
    EDGES[fn.__name__] = fn
    return fn


def tgrad(y, wrt):
    return torch_grad(y, wrt)


@edge
def unused_wrt(hessian=False):
    """sg.grad of a y that does not use q: allow_unused=True gives zeros (torch: None,
    materialised as zeros), alone and in a list."""
    m = sg.Model("r65_unused", hessian=hessian)
    p, q = m.param("p", (3,)), m.param("q", (2,))
    x = m.input("x", (3,))
    y = sg.sum(sg.tanh(p * x))
    gq = sg.grad(y, q, allow_unused=True)
    gp, gq2 = sg.grad(y, [p, q], allow_unused=True)
    m.loss(sg.sum(gp**2) + sg.sum((gq + 1.0) * q) + sg.sum(gq2 * p[:2]))

    def reference(tp, ti):
        p, q, x = tp["p"], tp["q"], ti["x"]
        y = torch.tanh(p * x).sum()
        gq = tgrad(y, q)
        gp, gq2 = tgrad(y, [p, q])
        return (gp**2).sum() + ((gq + 1.0) * q).sum() + (gq2 * p[:2]).sum(), {}

    rng = np.random.default_rng(1)
    params = {"p": rng.standard_normal(3), "q": rng.standard_normal(2)}
    return m, reference, params, {"x": rng.standard_normal(3)}


@edge
def wrt_used_twice(hessian=False):
    """The gradient with respect to an intermediate h that y uses twice (and through a
    flip of it): both uses add up."""
    m = sg.Model("r65_twice", hessian=hessian)
    W = m.param("W", (3, 2))
    x = m.input("x", (2,))
    h = m.let("h", sg.tanh(W @ x))
    y = sg.sum(h * h) + sg.sum(sg.sin(h) * sg.flip(h, 0))
    g = sg.grad(y, h)
    m.output("g", g)
    m.loss(sg.sum(g * W[:, 0]) + sg.sum(g**2))

    def reference(tp, ti):
        W, x = tp["W"], ti["x"]
        h = torch.tanh(W @ x)
        y = (h * h).sum() + (torch.sin(h) * torch.flip(h, (0,))).sum()
        g = tgrad(y, h)
        return (g * W[:, 0]).sum() + (g**2).sum(), {"g": g}

    rng = np.random.default_rng(2)
    return (
        m,
        reference,
        {"W": rng.standard_normal((3, 2))},
        {"x": rng.standard_normal(2)},
    )


@edge
def wrt_slice_of_param(hessian=False):
    """The gradient with respect to a slice s = p[1:] of a param that y uses (twice,
    and through s[0]); the rest of p enters the loss only."""
    m = sg.Model("r65_slice", hessian=hessian)
    p = m.param("p", (4,))
    A = m.param("A", (3, 2))
    s = p[1:]
    y = sg.sum(sg.exp(sg.tanh(s)) * s[0]) + sg.sum(sg.softplus(s @ A))
    g = sg.grad(y, s)
    m.loss(sg.sum(g**2) + sg.sum(g * p[:-1]))

    def reference(tp, ti):
        p, A = tp["p"], tp["A"]
        s = p[1:]
        y = (torch.exp(torch.tanh(s)) * s[0]).sum() + _stable_softplus(s @ A).sum()
        g = tgrad(y, s)
        return (g**2).sum() + (g * p[:-1]).sum(), {}

    rng = np.random.default_rng(3)
    return (
        m,
        reference,
        {"p": rng.standard_normal(4), "A": rng.standard_normal((3, 2))},
        {},
    )


@edge
def jacobian_rows(hessian=False):
    """Rows of the Hessian as gradients of the components of a gradient: g =
    grad(sum(softplus(A @ p)), p), row i = grad(g[i], p), stacked."""
    m = sg.Model("r65_rows", hessian=hessian)
    A, p = m.param("A", (3, 3)), m.param("p", (3,))
    g = sg.grad(sg.sum(sg.softplus(A @ p)), p)
    rows = [sg.grad(g[i], p) for i in range(3)]
    H = m.output("H", sg.stack(rows))
    m.loss(sg.sum(rows[0] * p) + sg.sum(H**2) + sg.sum(g * g))

    def reference(tp, ti):
        A, p = tp["A"], tp["p"]
        g = tgrad(_stable_softplus(A @ p).sum(), p)
        rows = [tgrad(g[i], p) for i in range(3)]
        H = torch.stack(rows)
        return (rows[0] * p).sum() + (H**2).sum() + (g * g).sum(), {"H": H}

    rng = np.random.default_rng(4)
    params = {"A": rng.standard_normal((3, 3)), "p": rng.standard_normal(3)}
    return m, reference, params, {}


@edge
def where_on_wrt(hessian=False):
    """sg.where whose condition reads the value differentiated with respect to: a param
    (p > 0) and an intermediate (h > 0.2); each branch's derivative where it is picked.
    """
    m = sg.Model("r65_where", hessian=hessian)
    p, q = m.param("p", (4,)), m.param("q", (4,))
    x = m.input("x", (4,))
    y = sg.sum(sg.where(p > 0, p**3, sg.sin(p) * q))
    g = sg.grad(y, p)
    h = p * x + q
    z = sg.sum(sg.where(h > 0.2, h**3, sg.tanh(h) * p))
    gh = sg.grad(z, h)
    m.loss(sg.sum(g**2 * q) + sg.sum(gh * gh) + sg.sum(g * gh))

    def reference(tp, ti):
        p, q, x = tp["p"], tp["q"], ti["x"]
        y = torch.where(p > 0, p**3, torch.sin(p) * q).sum()
        g = tgrad(y, p)
        h = p * x + q
        z = torch.where(h > 0.2, h**3, torch.tanh(h) * p).sum()
        gh = tgrad(z, h)
        return (g**2 * q).sum() + (gh * gh).sum() + (g * gh).sum(), {}

    params = {
        "p": np.array([0.7, -0.4, 1.3, -1.1]),
        "q": np.array([0.5, -0.8, 0.1, 0.9]),
    }
    return m, reference, params, {"x": np.array([1.2, -0.3, 0.4, 2.0])}


@edge
def duplicate_wrt(hessian=False):
    """sg.grad(y, [p, p]): the same gradient twice, as torch gives it."""
    m = sg.Model("r65_dup", hessian=hessian)
    p = m.param("p", (3,))
    a, b = sg.grad(sg.sum(sg.sin(p) * p), [p, p])
    m.loss(sg.sum(a * b) + sg.sum(a * p))

    def reference(tp, ti):
        p = tp["p"]
        a, b = tgrad((torch.sin(p) * p).sum(), [p, p])
        return (a * b).sum() + (a * p).sum(), {}

    return m, reference, {"p": np.array([1.0, -0.5, 2.0])}, {}


@edge
def wrt_a_gradient(hessian=False):
    """The gradient with respect to a gradient (a value the model computes with):
    d/dg sum(sin(g) * p) = cos(g) * p."""
    m = sg.Model("r65_wrtgrad", hessian=hessian)
    A, p = m.param("A", (3, 3)), m.param("p", (3,))
    g = sg.grad(sg.sum(sg.tanh(A @ p)), p)
    gg = sg.grad(sg.sum(sg.sin(g) * p), g)
    m.loss(sg.sum(gg**2) + sg.sum(g))

    def reference(tp, ti):
        A, p = tp["A"], tp["p"]
        g = tgrad(torch.tanh(A @ p).sum(), p)
        gg = tgrad((torch.sin(g) * p).sum(), g)
        return (gg**2).sum() + g.sum(), {}

    rng = np.random.default_rng(7)
    params = {"A": rng.standard_normal((3, 3)), "p": rng.standard_normal(3)}
    return m, reference, params, {}


def pinn_symbolic(hessian=False, unroll=None):
    """u(x) of an input at a symbolic size n; du = grad(sum u, x), the derivative of
    its first column again (a mixed second derivative)."""
    m = sg.Model("r65_pinn", hessian=hessian)
    x = m.input("x", ("n", 2))
    W, b, v = m.param("W", (3, 2)), m.param("b", (3,)), m.param("v", (3,))
    u = sg.tanh(x @ W.T + b) @ v
    du = sg.grad(sg.sum(u), x)
    d2 = sg.grad(sg.sum(du[:, 0] * x[:, 1]), x)
    m.output("d2", d2)
    m.loss(sg.mean(du**2) + sg.mean(d2[:, 1] * u) + sg.mean(u**2))
    if unroll:
        m.unroll(n=unroll)

    def reference(tp, ti):
        W, b, v = tp["W"], tp["b"], tp["v"]
        x = ti["x"].clone().requires_grad_(True)
        u = torch.tanh(x @ W.T + b) @ v
        du = tgrad(u.sum(), x)
        d2 = tgrad((du[:, 0] * x[:, 1]).sum(), x)
        loss = (du**2).mean() + (d2[:, 1] * u).mean() + (u**2).mean()
        return loss, {"d2": d2}

    rng = np.random.default_rng(8)
    params = {
        "W": rng.standard_normal((3, 2)),
        "b": rng.standard_normal(3),
        "v": rng.standard_normal(3),
    }
    return m, reference, params, {}


@pytest.mark.parametrize("name", sorted(EDGES))
def test_edge(name):
    _, reference, params, inputs = EDGES[name]()
    with vectorized_only():
        module = compile_module(EDGES[name]()[0])
    check(module, reference, params, inputs)
    hmodule = compile_module(EDGES[name](hessian=True)[0])
    assert_second_order_agrees(hmodule, reference, params, inputs, scaled=True)
    check_unrolled(compile_module(EDGES[name]()[0]), reference, params, inputs)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_pinn_symbolic_sizes(n):
    model, reference, params, _ = pinn_symbolic()
    inputs = {"x": np.random.default_rng(n).standard_normal((n, 2))}
    module = compile_module(model)
    check(module, reference, params, inputs)
    assert_second_order_agrees(
        compile_module(pinn_symbolic(hessian=True)[0]),
        reference,
        params,
        inputs,
        scaled=True,
    )


def test_pinn_symbolic_unrolled():
    model, reference, params, _ = pinn_symbolic(unroll=3)
    inputs = {"x": np.random.default_rng(3).standard_normal((3, 2))}
    check_unrolled(compile_module(model), reference, params, inputs)


def test_unused_without_allow_unused_is_an_error_as_in_torch():
    """y not using q: symgrad refuses as torch does; a slice of a param y uses is a
    new value (the error names sg.grad(y, p)[1:]); torch says not used as well."""
    m = sg.Model("r65_errors")
    p, q = m.param("p", (3,)), m.param("q", (2,))
    y = sg.sum(sg.tanh(p))
    with pytest.raises(sg.ModelError, match="does not use"):
        sg.grad(y, q)
    with pytest.raises(sg.ModelError, match=r"sg.grad\(y, p\)\[1:\]"):
        sg.grad(sg.sum(p**2), p[1:])
    tp = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    tq = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="not have been used"):
        torch.autograd.grad(torch.tanh(tp).sum(), tq, create_graph=True)
    with pytest.raises(RuntimeError, match="not have been used"):
        torch.autograd.grad((tp**2).sum(), tp[1:], create_graph=True)


def test_where_condition_only_gives_zeros():
    """y reads p only in a where's condition: symgrad's graph uses p, so sg.grad gives
    zeros (the derivative almost everywhere); torch refuses ("does not require grad":
    the condition is not differentiable). Not a bug: noted."""
    m = sg.Model("r65_condonly")
    p = m.param("p", (3,))
    x = m.input("x", (3,))
    g = sg.grad(sg.sum(sg.where(p > 0, x, 2.0 * x) * x), p)
    m.loss(sg.sum((g + 1.0) * p))
    module = compile_module(m)
    params, inputs = {"p": np.array([1.0, -1.0, 2.0])}, {"x": np.array([0.5, 2.0, 3.0])}
    loss, grads = module.value_and_grad(params, inputs)
    assert loss == pytest.approx(2.0, rel=1e-15)
    np.testing.assert_array_equal(grads["p"], np.ones(3))


# ---------------------------------------------------------------------------------
# found by the fuzz, hand-minimised


def _zero_losses():
    """Models whose loss is the constant 0 next to a 0-d param (seed 46's and the two
    smallest): the loss node is the param's zero gradient."""
    m = sg.Model("r65_zero")
    p = m.param("p", ())
    h = sg.sin(p)
    m.loss(sg.grad(sg.sin(sg.grad(h, p)), h))
    yield m, {"p": np.array(0.3)}
    m = sg.Model("r65_zero_times")
    p = m.param("p", ())
    m.loss(p * 0.0)
    yield m, {"p": np.array(0.3)}
    m = sg.Model("r65_zero_sum")
    p, w = m.param("p", ()), m.param("W", (2, 3))
    m.loss(sg.sum(w) * 0.0 + sg.sin(p) * 0.0)
    yield m, {"p": np.array(0.3), "W": np.ones((2, 3))}


@pytest.mark.parametrize("case", range(3))
def test_constant_zero_loss_with_scalar_param(case):
    """Was a NameError (the loss printed as grad_p, a name no statement defines):
    torch gives loss 0 and gradient 0."""
    m, params = list(_zero_losses())[case]
    with vectorized_only():
        module = compile_module(m)
    loss, grads = module.value_and_grad(params, {})
    assert loss == 0.0 and loss.shape == ()
    for name, value in params.items():
        assert np.array_equal(grads[name], np.zeros_like(value))


def test_constant_zero_loss_with_scalar_param_forward_backward():
    """The same model through forward + backward is right (loss 0, gradient 0)."""
    m = sg.Model("r65_zero_fb")
    p = m.param("p", ())
    h = sg.sin(p)
    m.loss(sg.grad(sg.sin(sg.grad(h, p)), h))
    with vectorized_only():
        module = compile_module(m)
    outputs, cache = module.forward({"p": np.array(0.3)}, {})
    assert outputs["loss"] == 0.0 and module.backward(cache)["p"] == 0.0
