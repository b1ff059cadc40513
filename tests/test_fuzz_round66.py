"""Round 66: fuzz of degenerate programs for the code generator.

Round 65 found a loss that is the constant 0, next to a 0-d param, printed as a name no
statement defined (``grad_p``, a NameError in the vectorized ``value_and_grad``). This
round draws programs whose graphs are degenerate in that way: unusual sharing and
constants. ``Program`` (a seeded NumPy generator per seed, a fixed list: CI is
deterministic) draws 1-3 params and 0-2 float inputs of shapes ``()``, ``(1,)``,
``(1, 1)``, ``(n,)`` and ``(n, k)`` (n, k in 1..3; a third of the programs make ``n`` a
symbolic dim), sometimes a ``bool`` mask and an ``int64`` input, then 2-6 values among:
constants SymPy sees (``a - a``, ``a * 0.0``, ``sin(a)**2 + cos(a)**2 - 1``,
``zeros_like``/``ones_like``/``full_like``, ``stop_gradient(a) * 0.0``), expressions
that are one of their operands (``log(exp(a))``, ``-(-a)``, ``a * 1.0``,
``(a + 1) - 1``, ``where(c, a, a)``, ``stop_gradient(a)``), linear forms (``2 a - b``,
``a * b``, ``sum``/``mean``), ``stop_gradient(a) * b``, ``where`` on a param's sign,
on a ``bool`` mask or on ``int64 == 1`` (a param used only in a condition), a few
nonlinear maps, and ``sg.grad`` of linear and quadratic sums (gradients that are a
constant, or another param, or the wrt itself). Values are ``m.let``-named at random
(constants and leaves too), made outputs at random (the same node twice, a leaf, a
constant, the loss itself), and the loss is a sum of 1-3 terms, or a single node (a 0-d
param, a 0-d value, an output, a let; of shape ``(1,)`` or ``(1, 1)`` as
``m.loss`` allows), often leaving a param unused. Every statement is source text over
``F``/``LET``/``OUT``/``GRAD``, run by the sg model and a torch float64 twin, so a
failure prints a pasteable program.

Checked for each program: ``helpers.check`` (loss, outputs, ``value_and_grad``,
forward + backward at grad_loss -1.5, 1e-9, NumPy warnings as errors) on the vectorized
module (automatic unrolling off) and on the module unrolled at the data's sizes
(``check_unrolled``: the unrolled function ran); ``hessian`` and ``hvp`` against torch's
(the Hessians here are often 0 or constant) on every second program; the Output
contract (``assert_contract``): results are float64 ``np.ndarray`` of the right shapes
(the loss 0-d), share no memory with each other, the caller's arrays or the cache, and
writing into every one of them changes neither the caller's arrays, nor a second call's
results, nor a later ``backward(cache)``; every fourth program is compiled twice to
byte-identical source. Declarations symgrad refuses on purpose (an output that is a
param or input, also after simplification such as ``p * 1.0`` or ``where(c, p, p)``;
a node named twice) are dropped from the program as it is drawn, and their messages
checked (``test_refusals_are_clear``).

Hand-written edges: params passed as the SAME NumPy array (``sum(a * b)``: grad_a is
b's array and grad_b a's, and both must be copies), a param passed as an input too,
linear losses (gradient a constant, or an input), size-0 params and a symbolic size at
0, 1 and 5 through one module, losses that are a param of shape ``()``, ``(1,)`` and
``(1, 1)``.

Budget: 40 programs plus edges, ~35 s on 2 cores; seeds 0-260 explored in scratch runs.

Found: nothing. Every drawn program (seeds 0-260 in scratch runs) and every edge agreed
with the twin and kept the Output contract, vectorized and unrolled, at first and second
order: round 65's fix of ``Emitter._name`` holds for constant losses, constant and leaf
gradients, and constant outputs.

Not bugs, for the record (refused on purpose, with clear messages, though the README's
table of errors does not list them): ``m.output(name, x)`` of a param or input, or of an
expression SymPy reduces to one (``p * 1.0``, ``p + 0.0``, ``sg.where(c, p, p)``),
raises ``ModelError: output 'y' is p itself; outputs must be computed``; naming one
node twice (two outputs of the same expression, ``m.let`` then ``m.output`` of it)
raises ``ModelError: output 'b' is already named 'a'``.
"""

from __future__ import annotations

import contextlib
import re
import warnings

import numpy as np
import pytest
from helpers import compile_module, spy_unrolled, torch_hessian, torch_twin

import symgrad as sg
import symgrad.unroll
from symgrad.cli import generate
from symgrad.verify import load_source

torch = pytest.importorskip("torch")

SEED_BASE = 66_000
HESSIAN_EVERY = 2
DETERMINISM_EVERY = 4
MAX_HESSIAN_PARAMS = 24
TOL = 1e-9
ATOL = 1e-12  # SymPy's exact 0 of sin(a)**2 + cos(a)**2 - 1, torch's 1e-16
REFUSED = re.compile(r"is \w+ itself; outputs must be computed|is already named '\w+'")


@contextlib.contextmanager
def vectorized_only():
    """Compile without the automatic unrolled function."""
    saved = symgrad.unroll.AUTO_ELEMENTS
    symgrad.unroll.AUTO_ELEMENTS = 0
    try:
        yield
    finally:
        symgrad.unroll.AUTO_ELEMENTS = saved


# ---------------------------------------------------------------------------------
# the torch twin's namespace (NumPy's spellings)


def _t(x, like):
    return x if torch.is_tensor(x) else torch.full_like(like, float(x))


class TorchNS:
    sin, cos, exp, log, tanh = torch.sin, torch.cos, torch.exp, torch.log, torch.tanh
    zeros_like, ones_like = torch.zeros_like, torch.ones_like

    @staticmethod
    def full_like(x, v):
        return torch.full_like(x, v)

    @staticmethod
    def stop_gradient(x):
        return x.detach()

    @staticmethod
    def sum(x):
        return x.sum()

    @staticmethod
    def mean(x):
        return x.mean()

    @staticmethod
    def where(c, a, b):
        like = a if torch.is_tensor(a) else b
        return torch.where(c, _t(a, like), _t(b, like))


def torch_grad(y, wrt, allow_unused=True):
    """torch.autograd.grad(y, wrt, create_graph=True), an unused wrt as zeros."""
    if not y.requires_grad:
        return torch.zeros_like(wrt)
    (g,) = torch.autograd.grad(
        y, [wrt], create_graph=True, allow_unused=True, materialize_grads=True
    )
    return g


# ---------------------------------------------------------------------------------
# programs


class Program:
    """Statements over F, LET, OUT and GRAD, run on the twin while drawing (for shapes
    and bounds), then by the sg model and the twin."""

    def __init__(self, seed: int):
        self.seed = seed
        self.rng = np.random.default_rng(SEED_BASE + seed)
        self.symbolic = self.rng.random() < 0.33
        self.n = int(self.rng.integers(1, 4))
        self.k = int(self.rng.integers(1, 4))
        self.lines: list[str] = []
        self.values: dict[str, dict] = {}  # name -> {shape, decl, kind}
        self.count = 0
        self.env = {"F": TorchNS, "GRAD": torch_grad}
        self.draft = sg.Model("draft")  # sg's shapes (with "n") while drawing
        self.sgenv = {"F": sg, "GRAD": self.sg_grad}
        self.refused: list[str] = []  # messages of the declarations sg refused
        self.kinds: list[str] = []
        self.decl: dict[str, tuple] = {}  # leaf -> declared shape (with "n")

    # -- helpers -------------------------------------------------------------------

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def fresh(self, stem):
        self.count += 1
        return f"{stem}{self.count}"

    def shapes(self):
        """(declared, concrete) shapes by pick."""
        n = "n" if self.symbolic else self.n
        out = {"s": ((), ()), "1": ((1,), (1,)), "11": ((1, 1), (1, 1))}
        out["n"] = ((n,), (self.n,))
        if not self.symbolic:
            out["nk"] = ((self.n, self.k), (self.n, self.k))
        return out

    def fits(self, a, b):
        """b broadcasts against a without changing a's shape (and sg agrees: a
        symbolic axis only meets itself, 1 or nothing)."""
        sa, sb = self.values[a]["decl"], self.values[b]["decl"]
        if len(sb) > len(sa):
            return False
        return all(y in (1, x) for x, y in zip(sa[::-1], sb[::-1], strict=False))

    def pick(self, kinds=None, recent=0.5):
        names = [
            a for a, v in self.values.items() if kinds is None or v["kind"] in kinds
        ]
        derived = [a for a in names if self.values[a]["kind"] == "fwd"]
        if derived and self.rng.random() < recent:
            return derived[-1 - int(self.rng.integers(min(2, len(derived))))]
        return self.choice(names)

    def partner(self, a):
        names = [b for b in self.values if self.fits(a, b)]
        floats = [b for b in names if self.values[b]["kind"] != "index"]
        return self.choice(floats)

    def run_line(self, name, src):
        """``name = src`` on the twin; keep it if finite and bounded."""
        try:
            value = eval(src, self.env)
        except (RuntimeError, TypeError, ValueError, IndexError):
            return None
        if not torch.isfinite(value).all() or (
            value.numel() and value.abs().max() > 30
        ):
            return None
        return value

    # -- values --------------------------------------------------------------------

    def op(self):
        """(kind, source) of a new value."""
        a = self.pick(kinds=("param", "input", "fwd"))
        b = self.partner(a)
        p = self.choice([v for v in self.values if self.values[v]["kind"] == "param"])
        group = self.choice(
            [
                "const",
                "const",
                "same",
                "same",
                "linear",
                "linear",
                "cond",
                "map",
                "grad",
            ]
        )
        if group == "const":
            forms = [
                f"{a} - {a}",
                f"{a} * 0.0",
                f"F.sin({a}) ** 2 + F.cos({a}) ** 2 - 1.0",
                f"F.zeros_like({a})",
                f"F.ones_like({a})",
                f"F.full_like({a}, 2.5)",
                f"F.stop_gradient({a}) * 0.0",
                f"{a} * 0.0 + {b}",
            ]
        elif group == "same":
            forms = [
                f"F.log(F.exp({a}))",
                f"-(-{a})",
                f"{a} * 1.0",
                f"({a} + 1.0) - 1.0",
                f"F.where({b} > 0.0, {a}, {a})",
                f"F.stop_gradient({a})",
                f"{a} + ({b} - {b})",
            ]
        elif group == "linear":
            forms = [
                f"2.0 * {a} - {b}",
                f"{a} * {b}",
                f"{a} + {b}",
                f"F.sum({a})",
                f"F.mean({a})",
                f"F.sum({a}) * {b}",
                f"F.stop_gradient({a}) * {b}",
                f"F.stop_gradient({a} * {b}) + {a}",
            ]
        elif group == "cond":
            forms = [
                f"F.where({p} > 0.1, {b}, 2.0 * {b})",
                f"F.where({a} < 0.0, {b}, 0.0)",
            ]
            if "mask" in self.values and self.fits(a, "mask"):
                forms.append(f"F.where(mask, {a}, {b})")
            if "idx" in self.values and self.fits(a, "idx"):
                forms.append(f"F.where(idx == 1, {a}, 0.0)")
        elif group == "map":
            forms = [f"F.tanh({a})", f"{a} * {a}", f"F.exp(-{a} * {a})", f"F.sin({a})"]
        else:  # sg.grad: a constant, another value, the wrt itself
            forms = [
                f"GRAD(F.sum({p} * 2.0), {p})",
                f"GRAD(F.sum({p} * {p}) / 2.0, {p})",
                f"GRAD(F.sum(F.sin({p})), {p})",
            ]
            q = self.partner(p)
            if self.values[q]["decl"] == self.values[p]["decl"]:
                forms.append(f"GRAD(F.sum({p} * {q}), {p})")
        return group, self.choice(forms)

    def value(self):
        for _ in range(30):
            group, src = self.op()
            name = self.fresh("h")
            value = self.run_line(name, src)
            if value is None:
                continue
            self.env[name] = value
            self.sgenv[name] = eval(src, self.sgenv)
            let = self.rng.random() < 0.35
            self.lines.append(
                f"{name} = LET({name!r}, {src})" if let else f"{name} = {src}"
            )
            self.values[name] = {
                "shape": tuple(value.shape),
                "decl": tuple(self.sgenv[name].shape),
                "kind": "fwd",
            }
            self.kinds.append(group)
            return name
        return None

    def outputs(self):
        fwd = [a for a, v in self.values.items() if v["kind"] == "fwd"]
        leaves = [a for a, v in self.values.items() if v["kind"] in ("param", "input")]
        for _ in range(int(self.rng.integers(0, 4))):
            r = self.rng.random()
            a = self.choice(leaves) if r < 0.15 or not fwd else self.choice(fwd)
            self.lines.append(f"OUT({self.fresh('o')!r}, {a})")
            if r > 0.8 and fwd:  # the same node again, under another name
                self.lines.append(f"OUT({self.fresh('o')!r}, {a})")

    def loss(self):
        fwd = [a for a, v in self.values.items() if v["kind"] in ("fwd", "param")]
        floats = [a for a, v in self.values.items() if v["kind"] != "index"]
        small = [a for a in fwd if self.values[a]["decl"] in ((), (1,), (1, 1))]
        if small and self.rng.random() < 0.35:  # the loss is one node
            a = self.choice(small)
            if self.rng.random() < 0.3:
                self.lines.append(f"OUT({self.fresh('o')!r}, {a})")
            self.lines.append(f"loss = {a}")
            return
        terms = []
        for _ in range(int(self.rng.integers(1, 4))):
            a = self.choice(floats)
            b = self.partner(a)
            c = self.choice(["", "0.5 * ", "-1.25 * "])
            terms.append(
                self.choice(
                    [
                        f"{c}F.sum({a})",
                        f"{c}F.sum({a} * {b})",
                        f"{c}F.sum({a} ** 2)",
                        f"{c}F.sum(F.tanh({a}))",
                    ]
                )
            )
        if self.rng.random() < 0.2:
            terms.append("1.5")
        self.lines.append("loss = " + " + ".join(terms))

    def draw(self):
        shapes = self.shapes()
        picks = list(shapes)
        self.params, self.inputs, self.dtypes = {}, {}, {}
        for j in range(int(self.rng.integers(1, 4))):
            decl, shape = shapes[self.choice(picks)]
            self.add_leaf(f"p{j}", decl, self.rng.standard_normal(shape), "param")
        for j in range(int(self.rng.integers(0, 3))):
            decl, shape = shapes[self.choice(picks)]
            self.add_leaf(f"x{j}", decl, self.rng.standard_normal(shape), "input")
        if self.rng.random() < 0.3:
            decl, shape = shapes[self.choice(["n", "1", "s"])]
            self.add_leaf("mask", decl, self.rng.random(shape) < 0.5, "index", "bool")
        if self.rng.random() < 0.3:
            decl, shape = shapes[self.choice(["n", "11", "s"])]
            data = self.rng.integers(0, 3, shape).astype(np.int64)
            self.add_leaf("idx", decl, data, "index", "int64")
        for _ in range(int(self.rng.integers(2, 7))):
            self.value()
        self.outputs()
        self.loss()
        self.build()  # drops the declarations sg refuses, keeping their messages
        return self

    def add_leaf(self, name, decl, data, kind, dtype="float64"):
        self.decl[name] = decl
        self.dtypes[name] = dtype
        (self.params if kind == "param" else self.inputs)[name] = data
        t = torch.tensor(data, requires_grad=kind == "param")
        self.env[name] = t
        declare = self.draft.param if kind == "param" else self.draft.input
        kw = {} if kind == "param" else {"dtype": dtype}
        self.sgenv[name] = declare(name, decl, **kw)
        self.values[name] = {"shape": tuple(t.shape), "decl": decl, "kind": kind}

    # -- the sg model and the twin -------------------------------------------------

    def build(self, hessian=False):
        m = sg.Model(f"fuzz66_{self.seed}", hessian=hessian)

        def out(name, v):
            try:
                m.output(name, v)
            except sg.ModelError as e:
                if not REFUSED.search(str(e)):
                    raise
                self.refuse(name, str(e))

        def let(name, v):
            try:
                return m.let(name, v)
            except sg.ModelError as e:
                if not REFUSED.search(str(e)):
                    raise
                self.refuse(name, str(e))
                return v

        env = {"F": sg, "GRAD": self.sg_grad, "LET": let, "OUT": out}
        for k in {**self.params, **self.inputs}:
            declare = m.param if k in self.params else m.input
            kw = {} if k in self.params else {"dtype": self.dtypes[k]}
            env[k] = declare(k, self.decl[k], **kw)
        for line in self.lines:
            exec(line, env)
        m.loss(env["loss"])
        return m

    @staticmethod
    def sg_grad(y, wrt):
        return sg.grad(y, wrt, allow_unused=True)

    def refuse(self, name, message):
        """Drop the refused ``OUT``/``LET`` from the program (the twin too)."""
        self.refused.append(message)
        for i, line in enumerate(self.lines):
            if line.startswith(f"OUT({name!r},"):
                self.lines[i] = f"# refused: {line}"
            elif line.startswith(f"{name} = LET({name!r}, "):
                src = line[len(f"{name} = LET({name!r}, ") : -1]
                self.lines[i] = f"{name} = {src}  # refused LET"

    def reference(self, tp, ti):
        outputs = {}
        env = {
            "F": TorchNS,
            "GRAD": torch_grad,
            "LET": lambda _, v: v,
            "OUT": outputs.__setitem__,
            **tp,
            **ti,
        }
        for line in self.lines:
            exec(line, env)
        loss = env["loss"]
        if not torch.is_tensor(loss):
            loss = torch.tensor(float(loss), dtype=torch.float64)
        return loss.reshape(()), outputs

    def sizes(self):
        used = any("n" in shape for shape in self.decl.values())
        return {"n": self.n} if used else {}

    def n_param_elements(self):
        return sum(int(np.size(v)) for v in self.params.values())

    def source(self):
        out = [f"# n, k = {self.n}, {self.k}; kinds = {self.kinds}"]
        for k in self.params:
            out.append(f"{k} = m.param({k!r}, {self.decl[k]})")
        for k in self.inputs:
            out.append(
                f"{k} = m.input({k!r}, {self.decl[k]}, dtype={self.dtypes[k]!r})"
            )
        out += self.lines
        out.append("m.loss(loss)")
        data = {k: v.tolist() for k, v in {**self.params, **self.inputs}.items()}
        out.append(f"data = {data!r}")
        return "\n".join(out)


# ---------------------------------------------------------------------------------
# the Output contract


def _arrays(prefix, d):
    return [(f"{prefix}{k}", v) for k, v in d.items()]


def _cache_arrays(cache):
    if isinstance(cache, dict):
        items = cache.items()
    elif isinstance(cache, (tuple, list)):
        items = enumerate(cache)
    else:
        return []
    return [(f"cache.{k}", v) for k, v in items if isinstance(v, np.ndarray)]


def assert_contract(module, params, inputs):
    """Types, shapes and dtypes of every result; no result shares memory with another,
    the caller's arrays or the cache; writing into every result changes neither the
    caller's arrays, a second call's results nor a later ``backward(cache)``."""
    caller = {**params, **inputs}
    frozen = {k: (v.copy(), v.tobytes()) for k, v in caller.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = module.value_and_grad(params, inputs)
        outs, cache = module.forward(params, inputs)
        back = module.backward(cache, grad_loss=0.75)
    assert isinstance(loss, np.ndarray) and loss.shape == (), type(loss)
    assert loss.dtype == np.float64
    for group in (grads, back):
        assert set(group) == set(params)
        for k, g in group.items():
            assert isinstance(g, np.ndarray), (k, type(g))
            assert g.shape == np.shape(params[k]) and g.dtype == np.float64, k
    for k, o in outs.items():
        assert isinstance(o, np.ndarray) and o.dtype == np.float64, (k, type(o))
    assert outs["loss"].shape == ()
    results = [
        ("vg.loss", loss),
        *_arrays("vg.grad.", grads),
        *_arrays("fw.", outs),
        *_arrays("bw.", back),
    ]
    cached = _cache_arrays(cache)
    for i, (ka, a) in enumerate(results):
        for kb, b in results[i + 1 :] + list(caller.items()) + cached:
            if a.size and b.size:
                assert not np.shares_memory(a, b), f"{ka} shares memory with {kb}"
    kept = [(k, v.copy()) for k, v in results]
    for k, v in results:
        assert v.flags.writeable, f"{k} is read-only"
        v[...] = 1234.5
    for k, (_, raw) in frozen.items():
        assert caller[k].tobytes() == raw, f"the caller's {k} changed"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss2, grads2 = module.value_and_grad(params, inputs)
        back2 = module.backward(cache, grad_loss=0.75)  # the first call's cache
        outs2, _ = module.forward(params, inputs)
    again = dict(
        [
            ("vg.loss", loss2),
            *_arrays("vg.grad.", grads2),
            *_arrays("fw.", outs2),
            *_arrays("bw.", back2),
        ]
    )
    for k, v in kept:
        np.testing.assert_array_equal(again[k], v, err_msg=k)
    for k, (copy, _) in frozen.items():
        np.testing.assert_array_equal(caller[k], copy)


# ---------------------------------------------------------------------------------
# comparisons with the twin


def close(actual, expected, what):
    """Same shape; max |actual - expected| <= TOL * max |expected| + ATOL."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = np.max(np.abs(expected), initial=0.0)
    diff = np.max(np.abs(actual - expected), initial=0.0)
    assert diff <= TOL * scale + ATOL, (what, actual, expected)


def compare(module, program, grad_loss=-1.5):
    """``helpers.assert_agrees_with_torch`` with an absolute tolerance (``ATOL``) on
    every comparison: loss, outputs, ``value_and_grad`` and forward + backward(grad_loss).
    """
    params, inputs = program.params, program.inputs
    exp_loss, exp_outputs, exp_grads = torch_twin(program.reference, params, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = module.value_and_grad(params, inputs)
        outputs, cache = module.forward(params, inputs)
        back = module.backward(cache, grad_loss=grad_loss)
    assert set(grads) == set(params) == set(back)
    assert set(outputs) == {"loss", *exp_outputs}, (set(outputs), set(exp_outputs))
    close(loss, exp_loss, "loss")
    close(outputs["loss"], exp_loss, "forward's loss")
    for k, ref in exp_outputs.items():
        close(outputs[k], ref, f"output {k}")
    for k, ref in exp_grads.items():
        close(grads[k], ref, f"value_and_grad's grad of {k}")
        close(back[k], grad_loss * ref, f"backward's grad of {k}")


def compare_unrolled(module, program):
    """``compare`` through the unrolled function, which ran without raising."""
    calls, restore = spy_unrolled(module)
    try:
        compare(module, program)
    finally:
        restore()
    assert len(set(calls)) == 1 and " raised " not in calls[0], calls


def compare_second_order(module, program, seed=5):
    """``hessian`` and ``hvp`` (in a random direction) against torch's Hessian."""
    params, inputs = program.params, program.inputs
    expected = torch_hessian(program.reference, params, inputs)
    rng = np.random.default_rng(seed)
    v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = module.hessian(params, inputs)
        product = module.hvp(params, inputs, v)
    assert isinstance(H, np.ndarray) and H.shape == expected.shape
    close(H, expected, "hessian")
    for k, r in product.items():  # hvp's results are new arrays too
        for other in [*v.values(), *params.values(), *inputs.values(), H]:
            assert not np.shares_memory(r, other), k
    flat_v = np.concatenate([np.ravel(v[k]) for k in params])
    expected_hv = expected @ flat_v
    sizes = np.cumsum([np.size(p) for p in params.values()])[:-1]
    for k, part in zip(params, np.split(expected_hv, sizes), strict=True):
        assert isinstance(product[k], np.ndarray), (k, type(product[k]))
        ref = part.reshape(np.shape(params[k]))
        close(product[k], ref, f"hvp of {k}")


# ---------------------------------------------------------------------------------
# the fuzz


def draw(seed):
    return Program(seed).draw()


def run_program(program):
    params, inputs = program.params, program.inputs
    for message in program.refused:
        assert REFUSED.search(message), message
    with vectorized_only():
        model = program.build()
        source, _ = generate(model)
        module = load_source(source, model.name)
    compare(module, program)
    assert_contract(module, params, inputs)
    if program.seed % DETERMINISM_EVERY == 0:
        with vectorized_only():
            assert generate(program.build())[0] == source
    # the unrolled module at the data's sizes (automatic for fixed sizes)
    model = program.build()
    model.unroll(**program.sizes())
    unrolled = compile_module(model)
    compare_unrolled(unrolled, program)
    assert_contract(unrolled, params, inputs)
    if (
        program.seed % HESSIAN_EVERY == 0
        and program.n_param_elements() <= MAX_HESSIAN_PARAMS
    ):
        with vectorized_only():
            hmodule = compile_module(program.build(hessian=True))
        compare_second_order(hmodule, program)
        compare(hmodule, program)


SEEDS = list(range(40))


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_round66(seed):
    program = draw(seed)
    try:
        run_program(program)
    except BaseException as e:
        raise AssertionError(f"program (seed {seed}):\n{program.source()}") from e


# ---------------------------------------------------------------------------------
# hand-written edges


def modules(build):
    """The module of ``build()`` without unrolling, then with it (automatic: fixed
    sizes, at most 32 elements)."""
    with vectorized_only():
        yield "vectorized", compile_module(build())
    yield "unrolled", compile_module(build())


def test_refusals_are_clear():
    """Declarations refused on purpose (dropped by the fuzz): an output that is a leaf,
    also after SymPy's simplification, and one node named twice."""
    m = sg.Model("r66_refusals")
    W, p = m.param("W", (2, 3)), m.param("p", (2,))
    X, c = m.input("X", (2, 3)), m.input("c", (2,))
    for name, expr, leaf in [
        ("y1", W, "W"),
        ("y2", X, "X"),
        ("y3", p * 1.0, "p"),
        ("y4", p + 0.0, "p"),
        ("y5", sg.where(c > 0.0, p, p), "p"),
        ("y6", X - (X - X), "X"),
    ]:
        with pytest.raises(sg.ModelError, match=f"output {name!r} is {leaf} itself"):
            m.output(name, expr)
    m.output("a", sg.sin(p))
    m.output("b", sg.sin(p))  # the same expression again: another node, accepted
    y = m.output("y", sg.cos(p))
    with pytest.raises(sg.ModelError, match="output 'y2' is already named 'y'"):
        m.output("y2", y)
    h = m.let("h", sg.tanh(W * X))
    with pytest.raises(sg.ModelError, match="output 'o' is already named 'h'"):
        m.output("o", h)
    m.loss(sg.sum(h) + sg.sum(p))
    params = {"W": np.ones((2, 3)), "p": np.array([0.5, -1.0])}
    inputs = {"X": np.full((2, 3), 0.5), "c": np.array([1.0, -1.0])}
    for _, module in modules(lambda: m):
        assert list(module.OUTPUTS) == ["a", "b", "y"]
        outs, _ = module.forward(params, inputs)
        np.testing.assert_allclose(outs["a"], np.sin(params["p"]), rtol=1e-15)
        np.testing.assert_array_equal(outs["a"], outs["b"])
        assert_contract(module, params, inputs)


def test_params_passed_as_one_array():
    """loss = sum(a * b) with a and b the SAME array: grad_a is b and grad_b is a,
    each a copy of its own; hvp's results are v's entries swapped, copies too."""

    def build():
        m = sg.Model("r66_one_array", hessian=True)
        a, b = m.param("a", (3,)), m.param("b", (3,))
        m.loss(sg.sum(a * b))
        return m

    arr = np.array([1.0, -2.0, 0.5])
    params = {"a": arr, "b": arr}
    for _, module in modules(build):
        loss, grads = module.value_and_grad(params, {})
        assert float(loss) == pytest.approx(5.25)
        for k in ("a", "b"):
            np.testing.assert_array_equal(grads[k], arr)
            assert not np.shares_memory(grads[k], arr)
        assert not np.shares_memory(grads["a"], grads["b"])
        assert_contract(module, params, {})
        np.testing.assert_array_equal(arr, [1.0, -2.0, 0.5])
        v = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([4.0, 5.0, 6.0])}
        hv = module.hvp(params, {}, v)
        np.testing.assert_array_equal(hv["a"], v["b"])
        np.testing.assert_array_equal(hv["b"], v["a"])
        for r in hv.values():
            assert not any(np.shares_memory(r, x) for x in (*v.values(), arr))
        expected = np.block(
            [[np.zeros((3, 3)), np.eye(3)], [np.eye(3), np.zeros((3, 3))]]
        )
        np.testing.assert_array_equal(module.hessian(params, {}), expected)


def test_gradient_is_an_input_passed_as_the_param_too():
    """loss = sum(W * X) (grad_W = X) + 0.5 * sum(V ** 2) (grad_V = V), with X the
    caller's W array itself: the gradients are copies."""

    def build():
        m = sg.Model("r66_grad_is_input", hessian=True)
        W, V = m.param("W", (2, 2)), m.param("V", (1, 1))
        X = m.input("X", (2, 2))
        m.output("y", W * 1.0 + V)
        m.loss(sg.sum(W * X) + 0.5 * sg.sum(V**2))
        return m

    A = np.array([[1.0, 2.0], [3.0, -4.0]])
    V = np.array([[0.5]])
    params, inputs = {"W": A, "V": V}, {"X": A}
    for _, module in modules(build):
        _, grads = module.value_and_grad(params, inputs)
        np.testing.assert_array_equal(grads["W"], A)
        np.testing.assert_array_equal(grads["V"], V)
        assert not np.shares_memory(grads["W"], A)
        assert not np.shares_memory(grads["V"], V)
        outs, cache = module.forward(params, inputs)
        np.testing.assert_array_equal(outs["y"], A + 0.5)
        back = module.backward(cache, grad_loss=3.0)
        np.testing.assert_array_equal(back["W"], 3.0 * A)
        assert_contract(module, params, inputs)
        hv = module.hvp(params, inputs, {"W": A, "V": V})
        np.testing.assert_array_equal(hv["W"], np.zeros((2, 2)))
        np.testing.assert_array_equal(hv["V"], V)
        assert not np.shares_memory(hv["V"], V)
        H = module.hessian(params, inputs)
        np.testing.assert_array_equal(H, np.diag([0.0, 0, 0, 0, 1]))


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_loss_is_a_param(shape):
    """m.loss(p) for a one-element p: the loss is p's value as a 0-d array (not p's
    memory), the gradient ones of p's shape, the Hessian 0."""

    def build():
        m = sg.Model(f"r66_loss_is_p{len(shape)}", hessian=True)
        p, q = m.param("p", shape), m.param("q", (2,))
        m.output("z", q - q)
        m.loss(p)
        return m

    params = {"p": np.full(shape, -0.75), "q": np.array([1.0, 2.0])}
    for _, module in modules(build):
        loss, grads = module.value_and_grad(params, {})
        assert isinstance(loss, np.ndarray) and loss.shape == () and loss == -0.75
        np.testing.assert_array_equal(grads["p"], np.ones(shape))
        assert grads["p"].shape == shape
        np.testing.assert_array_equal(grads["q"], np.zeros(2))
        outs, cache = module.forward(params, {})
        np.testing.assert_array_equal(outs["z"], np.zeros(2))
        back = module.backward(cache, grad_loss=-2.5)
        np.testing.assert_array_equal(back["p"], np.full(shape, -2.5))
        assert_contract(module, params, {})
        np.testing.assert_array_equal(module.hessian(params, {}), np.zeros((3, 3)))


def test_size_zero_param():
    """A param of size 0 next to a 0-d one: its gradient is an empty array."""

    def build():
        m = sg.Model("r66_empty", hessian=True)
        p, q = m.param("p", (0,)), m.param("q", ())
        m.output("s", sg.sum(p) + q * 0.0)
        m.loss(sg.sum(p * p) + q * q)
        return m

    params = {"p": np.zeros(0), "q": np.array(0.5)}
    for _, module in modules(build):
        loss, grads = module.value_and_grad(params, {})
        assert loss == 0.25 and grads["p"].shape == (0,) and grads["q"] == 1.0
        outs, _ = module.forward(params, {})
        assert outs["s"].shape == () and outs["s"] == 0.0
        assert_contract(module, params, {})
        np.testing.assert_array_equal(module.hessian(params, {}), [[2.0]])
        hv = module.hvp(params, {}, {"p": np.zeros(0), "q": np.array(3.0)})
        assert hv["p"].shape == (0,) and hv["q"] == 6.0


def test_symbolic_size_0_1_5_through_one_module():
    """loss = sum(p * x) + 2 * sum(p) + c (grad_p = x + 2) with a symbolic n, at n =
    0, 1, 5 through one module (and one unrolled at n = 1)."""

    def build(unroll=False):
        m = sg.Model("r66_symbolic", hessian=True)
        p, c = m.param("p", ("n",)), m.param("c", ())
        x = m.input("x", ("n",))
        m.output("d", p - p + c)
        m.loss(sg.sum(p * x) + 2.0 * sg.sum(p) + c)
        if unroll:
            m.unroll(n=1)
        return m

    plain, unrolled = compile_module(build()), compile_module(build(unroll=True))
    for module in (plain, unrolled):
        for n in (0, 1, 5):
            x = np.linspace(-1.0, 1.0, n)
            params = {"p": np.arange(n, dtype=float), "c": np.array(0.25)}
            inputs = {"x": x}
            loss, grads = module.value_and_grad(params, inputs)
            expected = np.sum(params["p"] * x) + 2.0 * np.sum(params["p"]) + 0.25
            assert float(loss) == pytest.approx(expected, abs=1e-14)
            np.testing.assert_allclose(grads["p"], x + 2.0, atol=1e-15)
            assert grads["c"] == 1.0
            outs, _ = module.forward(params, inputs)
            np.testing.assert_array_equal(outs["d"], np.full(n, 0.25))
            assert_contract(module, params, inputs)
            assert not module.hessian(params, inputs).any()
