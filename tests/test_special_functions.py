"""asinh, acosh, atanh, atan2, erf and erfc in formulas, end to end.

Each function in a small model against PyTorch (float64, 1e-10): value_and_grad and
forward + backward, in vectorized code and unrolled (``m.unroll``), and ``verify``; one
with a Hessian; an exact-GELU MLP against ``torch.nn.functional.gelu``; the tape ops
against torch's values and gradients. NumPy has no erf: the generated module applies
``math.erf`` element by element, which must agree with ``torch.special.erf``.
"""

import math
import warnings

import mpmath
import numpy as np
import pytest
import sympy as sp
from helpers import (
    assert_agrees_with_torch,
    compile_module,
    rel,
    spy_unrolled,
    torch_hessian,
)

import symgrad as sg
from symgrad import tape
from symgrad.cli import generate
from symgrad.verify import verify

torch = pytest.importorskip("torch")

TOL = 1e-10
GRAD_LOSS = -1.5

# name -> (SymPy formula of z and x, the same in torch, what the NumPy code calls, what
# the unrolled code calls). Arguments are kept inside each function's domain.
FUNCTIONS = {
    "asinh": (
        lambda z, x: sp.asinh(3 * z),
        lambda z, x: torch.asinh(3 * z),
        "np.arcsinh(",
        "math.asinh(",
    ),
    "acosh": (
        lambda z, x: sp.acosh(z**2 + 1.5),
        lambda z, x: torch.acosh(z**2 + 1.5),
        "np.arccosh(",
        "math.acosh(",
    ),
    "atanh": (
        lambda z, x: sp.atanh(z / (2 + z**2)),
        lambda z, x: torch.atanh(z / (2 + z**2)),
        "np.arctanh(",
        "math.atanh(",
    ),
    "atan2": (
        lambda z, x: sp.atan2(z, x - 0.5),
        lambda z, x: torch.atan2(z, x - 0.5),
        "np.arctan2(",
        "math.atan2(",
    ),
    "erf": (
        lambda z, x: sp.erf(z),
        lambda z, x: torch.erf(z),
        "_erf(",
        "math.erf(",
    ),
    "erfc": (
        lambda z, x: sp.erfc(2 * z),
        lambda z, x: torch.special.erfc(2 * z),
        "_erfc(",
        "math.erfc(",
    ),
}


def special(name: str, unroll: bool = False) -> sg.Model:
    """mean(f(z)**2) + sum(f(z) * x) / 3 with z = x * w + c, x of shape (batch, 3)."""
    formula = FUNCTIONS[name][0]
    m = sg.Model(f"special_{name}")
    x = m.input("x", ("batch", 3))
    w, c = m.param("w", (3,)), m.param("c")
    u = sg.elementwise(formula, x * w + c, x)
    m.output("u", u)
    m.loss(sg.mean(u**2) + sg.sum(u * x) / 3)
    if unroll:
        m.unroll(batch=2)
    return m


def torch_special(name: str):
    formula = FUNCTIONS[name][1]

    def reference(p, i):
        x = i["x"]
        u = formula(x * p["w"] + p["c"], x)
        return (u**2).mean() + (u * x).sum() / 3, {"u": u}

    return reference


def data(rng, batch):
    params = {"w": rng.standard_normal(3), "c": np.array(rng.standard_normal())}
    return params, {"x": rng.standard_normal((batch, 3))}


@pytest.mark.parametrize("name", FUNCTIONS)
def test_vectorized_agrees_with_pytorch(name):
    model = special(name)
    source, _ = generate(model)
    assert FUNCTIONS[name][2] in source
    assert ("import math" in source) == name.startswith("erf")
    module = compile_module(model)
    for batch in (1, 5):
        params, inputs = data(np.random.default_rng(batch), batch)
        assert_agrees_with_torch(
            module, torch_special(name), params, inputs, TOL, GRAD_LOSS
        )
    report = verify(model, module)
    assert report.ok, report.table()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_unrolled_agrees_with_pytorch(name):
    model = special(name, unroll=True)
    source, _ = generate(model)
    assert FUNCTIONS[name][3] in source
    module = compile_module(model)
    calls = []
    unrolled = module._value_and_grad_batch_2
    module._value_and_grad_batch_2 = lambda *a: calls.append(a) or unrolled(*a)
    params, inputs = data(np.random.default_rng(7), 2)
    assert_agrees_with_torch(
        module, torch_special(name), params, inputs, TOL, GRAD_LOSS
    )
    assert len(calls) == 1  # math raised nothing: the unrolled code gave the result
    report = verify(model, module)
    assert report.ok, report.table()


# sg's NumPy-named elementwise functions: (sg, torch) of z = x * w + c and x, with
# arguments kept inside each function's domain
NUMPY_NAMED = {
    "expm1": (lambda z, x: sg.expm1(z * 1e-9) * 1e9, lambda z, x: torch.expm1(z * 1e-9) * 1e9),
    "erfc": (lambda z, x: sg.erfc(z), lambda z, x: torch.special.erfc(z)),
    "sign": (lambda z, x: sg.sign(z) * z**2, lambda z, x: torch.sign(z) * z**2),
    "tan": (lambda z, x: sg.tan(z / 4), lambda z, x: torch.tan(z / 4)),
    "sinh": (lambda z, x: sg.sinh(z), lambda z, x: torch.sinh(z)),
    "cosh": (lambda z, x: sg.cosh(z), lambda z, x: torch.cosh(z)),
    "arcsin": (lambda z, x: sg.arcsin(sg.tanh(z) * 0.9), lambda z, x: torch.asin(torch.tanh(z) * 0.9)),
    "arccos": (lambda z, x: sg.arccos(sg.tanh(z) * 0.9), lambda z, x: torch.acos(torch.tanh(z) * 0.9)),
    "arctan": (lambda z, x: sg.arctan(z), lambda z, x: torch.atan(z)),
    "arcsinh": (lambda z, x: sg.arcsinh(z), lambda z, x: torch.asinh(z)),
    "arccosh": (lambda z, x: sg.arccosh(z**2 + 1.5), lambda z, x: torch.acosh(z**2 + 1.5)),
    "arctanh": (lambda z, x: sg.arctanh(sg.tanh(z) * 0.9), lambda z, x: torch.atanh(torch.tanh(z) * 0.9)),
    "square": (lambda z, x: sg.square(z), lambda z, x: torch.square(z)),
    "log2": (lambda z, x: sg.log2(z**2 + 0.5), lambda z, x: torch.log2(z**2 + 0.5)),
    "log10": (lambda z, x: sg.log10(z**2 + 0.5), lambda z, x: torch.log10(z**2 + 0.5)),
    "arctan2": (lambda z, x: sg.arctan2(z, x - 0.5), lambda z, x: torch.atan2(z, x - 0.5)),
    "logaddexp": (lambda z, x: sg.logaddexp(30 * z, 30 * x), lambda z, x: torch.logaddexp(30 * z, 30 * x)),
}  # fmt: skip


@pytest.mark.parametrize("name", NUMPY_NAMED)
def test_numpy_named_functions_agree_with_pytorch(name):
    """expm1 at 1e-9 scale: exp(x) - 1 would be off by ~1e-7 relative."""
    ours, theirs = NUMPY_NAMED[name]
    m = sg.Model(f"numpy_named_{name}", hessian=True)
    x = m.input("x", ("batch", 3))
    w, c = m.param("w", (3,)), m.param("c")
    u = m.output("u", ours(x * w + c, x))
    m.loss(sg.mean(u**2) + sg.sum(u * x) / 3)
    module = compile_module(m)

    def reference(p, i):
        u = theirs(i["x"] * p["w"] + p["c"], i["x"])
        return (u**2).mean() + (u * i["x"]).sum() / 3, {"u": u}

    params, inputs = data(np.random.default_rng(3), 4)
    assert_agrees_with_torch(module, reference, params, inputs, TOL, GRAD_LOSS)
    expected = torch_hessian(reference, params, inputs)
    assert rel(module.hessian(params, inputs), expected) < 1e-8
    if hasattr(np, name):  # (NumPy has no erfc)
        with pytest.raises(TypeError, match=f"use sg.{name}"):
            binary = name in ("arctan2", "logaddexp")
            getattr(np, name)(x, x) if binary else getattr(np, name)(x)


def test_logaddexp_at_a_tie_and_far_apart_agrees_with_torch():
    """a = b: gradient 1/2 each, Hessian entries 1/4 (as torch's); |a - b| = 1e3 and
    a value of 1e300: no overflow."""
    m = sg.Model("logaddexp_ties", hessian=True)
    a, b = m.param("a", (3,)), m.input("b", (3,))
    m.loss(sg.sum(sg.logaddexp(a, b)))

    def reference(p, i):
        return torch.logaddexp(p["a"], i["b"]).sum(), {}

    params, inputs = {"a": np.array([0.5, 1e3, 1e300])}, {
        "b": np.array([0.5, 0.0, 1.0])
    }
    module = compile_module(m)
    assert_agrees_with_torch(module, reference, params, inputs, TOL, GRAD_LOSS)
    expected = torch_hessian(reference, params, inputs)
    assert np.allclose(module.hessian(params, inputs), expected, rtol=1e-12, atol=0)


def test_normal_cdf_formula_with_hessian():
    """A probit fit declared with Model.from_expr: erf and erfc, dense Hessian."""
    mu, s, t, y = sp.symbols("mu s t y")
    cdf = (1 + sp.erf((t - mu) / (s * sp.sqrt(2)))) / 2
    tail = sp.erfc((t - mu) / (s * sp.sqrt(2))) / 2
    model = sg.Model.from_expr(
        "probit",
        loss=(cdf - y) ** 2 + tail**2 / 10,
        params=[mu, s],
        inputs=[t, y],
        hessian=True,
    )

    def sampler(rng, batch):  # a scale near 0 would make finite differences useless
        params = {"mu": np.array(rng.normal()), "s": np.array(rng.uniform(1, 2))}
        return params, {"t": rng.standard_normal(batch), "y": rng.uniform(size=batch)}

    model.sampler = sampler
    module = compile_module(model)
    params, inputs = sampler(np.random.default_rng(0), 6)

    def reference(p, i):
        z = (i["t"] - p["mu"]) / (p["s"] * math.sqrt(2))
        loss = ((1 + torch.erf(z)) / 2 - i["y"]) ** 2 + (torch.erfc(z) / 2) ** 2 / 10
        return loss.mean(), {}

    assert_agrees_with_torch(module, reference, params, inputs, TOL, GRAD_LOSS)
    H = module.hessian(params, inputs)
    assert rel(H, torch_hessian(reference, params, inputs)) <= TOL
    report = verify(model, module)
    assert report.ok, report.table()


@pytest.mark.parametrize("form", ["sg.erf", "elementwise"])
def test_exact_gelu_mlp_matches_torch_gelu(form):
    """x * (1 + erf(x / sqrt(2))) / 2: PyTorch's nn.GELU default (approximate='none')."""

    def gelu(z):
        if form == "sg.erf":
            return z * (1 + sg.erf(z / math.sqrt(2))) / 2
        return sg.elementwise(lambda v: v * (1 + sp.erf(v / sp.sqrt(2))) / 2, z)

    m = sg.Model("gelu_mlp")
    x, target = m.input("x", ("batch", 3)), m.input("target", ("batch", 1))
    W1, b1 = m.param("W1", (4, 3)), m.param("b1", (4,))
    W2, b2 = m.param("W2", (1, 4)), m.param("b2", (1,))
    y = gelu(x @ W1.T + b1) @ W2.T + b2
    m.output("y", y)
    m.loss(sg.mean((y - target) ** 2))
    module = compile_module(m)
    rng = np.random.default_rng(1)
    params = {k: rng.standard_normal(shape) for k, shape in module.PARAMS.items()}
    inputs = {"x": 2 * rng.standard_normal((8, 3)), "target": rng.random((8, 1))}

    def reference(p, i):
        F = torch.nn.functional
        y = F.gelu(i["x"] @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
        return ((y - i["target"]) ** 2).mean(), {"y": y}

    assert_agrees_with_torch(module, reference, params, inputs, TOL, GRAD_LOSS)
    report = verify(m, module)
    assert report.ok, report.table()


def test_generated_erf_matches_torch_special_erf():
    """The module's _erf/_erfc (math's, vectorized) agree with torch to ~1 ulp."""
    m = sg.Model("erfs")
    p = m.param("p", (2,))
    m.loss(sg.sum(sg.elementwise(lambda z: sp.erf(z) + sp.erfc(z), p)))
    module = compile_module(m)
    z = np.linspace(-6, 6, 20001)
    for fn, ref in [
        (module._erf, torch.special.erf),
        (module._erfc, torch.special.erfc),
    ]:
        out = fn(z)
        assert out.dtype == np.float64 and out.shape == z.shape
        assert rel(out, ref(torch.tensor(z)).numpy()) <= 1e-15
    assert fn(np.float64(0.5)).shape == ()  # a 0-d value stays 0-d
    assert fn(np.zeros((0, 3))).shape == (0, 3)


def test_generated_erfc_ratio_matches_mpmath():
    """The module's _erfc_ratio(x, erfc(x)) = exp(-x**2) / erfc(x), which log erfc's
    derivatives use, against mpmath on both sides of its switch to the continued
    fraction at 25, and against 1 / torch.special.erfcx far past erfc's underflow (where
    it is given erfc = 0); its limits at +-inf and nan; floats stay floats (unrolled
    code calls it)."""
    _, module = _log_erfc_module("erfc_ratio", hessian=False)
    z = np.concatenate([np.linspace(-26, 40, 1321), [24.999999, 25.000001]])
    with mpmath.workdps(40):
        exact = [float(mpmath.exp(-mpmath.mpf(x) ** 2) / mpmath.erfc(x)) for x in z]
    assert rel(module._erfc_ratio(z, module._erfc(z)), np.array(exact)) <= 2e-15
    far = np.array([1e3, 1e10, 1e300])
    expected = 1 / torch.special.erfcx(torch.tensor(far)).numpy()
    assert rel(module._erfc_ratio(far, np.zeros(3)), expected) <= 1e-15
    edges = np.array([np.inf, -np.inf, np.nan, -45.0])
    np.testing.assert_array_equal(
        module._erfc_ratio(edges, module._erfc(edges)), [np.inf, 0.0, np.nan, 0.0]
    )
    assert isinstance(module._erfc_ratio(0.5, math.erfc(0.5)), float)
    assert module._erfc_ratio(0.0, 1.0) == 1.0


def test_generated_log_erfc_matches_mpmath():
    """The module's _log_erfc(x, erfc(x)) against mpmath on both sides of its switch to
    -x**2 - log _erfc_ratio at 25, and far past erfc's underflow (given erfc = 0)."""
    _, module = _log_erfc_module("log_erfc_helper", hessian=False)
    z = np.concatenate([np.linspace(-26, 40, 661), [24.999999, 25.000001, 1e3, 1e7]])
    with mpmath.workdps(40):
        exact = [float(mpmath.log(mpmath.erfc(x))) for x in z]
    erfc = np.where(z < 100, module._erfc(np.minimum(z, 100)), 0.0)
    assert rel(module._log_erfc(z, erfc), np.array(exact)) <= 1e-15
    assert isinstance(module._log_erfc(0.5, math.erfc(0.5)), float)
    assert module._log_erfc(40.0, 0.0) == pytest.approx(exact[660], rel=1e-15)


@pytest.mark.parametrize(
    "name, formula, exact",
    [
        (
            "sigmoid_squared",
            lambda x: sg.log(sg.sigmoid(x) ** 2),
            lambda z: 2 * mpmath.log(1 / (1 + mpmath.exp(-z))),
        ),
        (
            "sqrt_sigmoid",
            lambda x: sg.log(sg.sqrt(sg.sigmoid(x)) * 3),
            lambda z: mpmath.log(3 * mpmath.sqrt(1 / (1 + mpmath.exp(-z)))),
        ),
        (
            "erfc_squared",
            lambda x: sg.log(sg.erfc(x) ** 2 / 4),
            lambda z: mpmath.log(mpmath.erfc(z) ** 2 / 4),
        ),
        (
            "sigmoid_cubed_erfc",
            lambda x: sg.log(sg.sigmoid(-x) ** 3 * sg.erfc(x)),
            lambda z: mpmath.log(mpmath.erfc(z) / (1 + mpmath.exp(z)) ** 3),
        ),
    ],
)
def test_log_of_powers_of_sigmoid_and_erfc_in_the_tails(name, formula, exact):
    """log(sigmoid(x)**k ...) is k log sigmoid(x), written as -k softplus(-x) (was
    2 * log(sigmoid's floor exp(-709)) = -1418 at x = -1000, and -inf at -1e4, as
    torch's), log(erfc(x)**2) 2 log erfc(x) (was -inf past x = 26.5)."""
    at = np.array([-1e4, -1000.0, -30.0, -0.5, 0.0, 2.0, 30.0, 40.0])
    at = at[np.abs(at) <= 1000] if "erfc" in name else at  # erfc(-1e4) = 2 exactly
    m = sg.Model(f"log_power_{name}")
    x = m.param("x", ("n",))
    m.loss(sg.sum(formula(x)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = compile_module(m).value_and_grad({"x": at}, {})
    with mpmath.workdps(60):
        value = float(sum(exact(mpmath.mpf(z)) for z in at))
        slopes = [float(mpmath.diff(exact, mpmath.mpf(z))) for z in at]
    assert rel(loss, value) <= 1e-14
    assert rel(grads["x"], np.array(slopes), floor=1e-300) <= 1e-13


def _log_erfc_module(name, hessian=True, unroll=None):
    m = sg.Model(name, hessian=hessian)
    x = m.param("x", ("n",))
    m.loss(sg.sum(sg.log(sg.erfc(x))))
    if unroll:
        m.unroll(n=unroll)
    return m, compile_module(m)


@pytest.mark.parametrize("unrolled", [False, True])
def test_log_erfc_gradient_and_hessian_in_the_far_tail_against_mpmath(unrolled):
    """d/dx log erfc(x) = -2 / (sqrt(pi) erfcx(x)) is -2x where erfc underflows (x >
    26.5): it was exp(-x^2) / erfc(x), 0/0, and the second derivative took exp(-2x^2)
    times 1 / erfc^2, 0 * inf (and 0 past 27 sds of a probit's normaliser). mpmath at
    50 digits is the judge (torch's own double backward is -inf from x = 21). The value
    too: log erfc(x) was log(0) = -inf past 26.5 (and math raised in unrolled code)."""
    at = [-30.0, -3.0, 0.0, 3.0, 15.0, 21.0, 26.0, 30.0, 40.0]
    _, module = _log_erfc_module("log_erfc_tail", unroll=len(at) if unrolled else None)
    params = {"x": np.array(at)}
    calls, restore = spy_unrolled(module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loss, grads = module.value_and_grad(params, {})
    finally:
        restore()
    assert calls == ([f"_value_and_grad_n_{len(at)}"] if unrolled else []), calls
    hessian = np.diag(module.hessian(params, {}))
    with mpmath.workdps(50):
        f = lambda z: mpmath.log(mpmath.erfc(z))  # noqa: E731
        value = float(sum(f(mpmath.mpf(x)) for x in at))
        d1 = [float(mpmath.diff(f, mpmath.mpf(x))) for x in at]
        d2 = [float(mpmath.diff(f, mpmath.mpf(x), 2)) for x in at]
    assert rel(loss, value) <= 1e-15
    assert rel(grads["x"], np.array(d1), floor=1e-300) <= 1e-14
    assert rel(hessian, np.array(d2), floor=1e-300) <= 1e-12


@pytest.mark.parametrize("form", ["erfc_used_twice", "m.let", "sg.grad"])
def test_log_erfc_in_the_far_tail_when_erfc_is_its_own_value(form):
    """log erfc of an erfc that is computed as a value of its own (used again, named,
    or differentiated by sg.grad before fusion) is still differentiated as a whole:
    the gradient of log(erfc(x) / 2) was exp(-x^2) / erfc(x), 0/0, past x = 26.5."""
    at = np.array([-3.0, 0.5, 28.0, 35.0])
    m = sg.Model(f"log_erfc_{form.replace('.', '_')}")
    x = m.param("x", ("n",))
    tail = sg.erfc(x) / 2
    if form == "m.let":
        tail = m.let("tail", tail)
    terms = sg.log(tail)
    if form == "sg.grad":  # d/dx log(erfc(x) / 2), squared
        terms = sg.grad(sg.sum(terms), x) ** 2
    loss = sg.sum(terms) + (sg.sum(tail) if form == "erfc_used_twice" else 0.0)
    m.loss(loss)
    with np.errstate(divide="ignore"):
        _, grads = compile_module(m).value_and_grad({"x": at}, {})

    def f(z):
        value = mpmath.log(mpmath.erfc(z) / 2)
        if form == "sg.grad":
            return mpmath.diff(lambda w: mpmath.log(mpmath.erfc(w) / 2), z) ** 2
        return value + (mpmath.erfc(z) / 2 if form == "erfc_used_twice" else 0)

    with mpmath.workdps(50):
        expected = [float(mpmath.diff(f, mpmath.mpf(z))) for z in at]
    assert rel(grads["x"], np.array(expected)) <= 1e-13


def test_still_unsupported_functions_are_named():
    m = sg.Model("gamma")
    x = m.param("x", (3,))
    with pytest.raises(sg.UnsupportedError, match="gamma"):
        sg.elementwise(sp.gamma, x)


# --------------------------------------------------------------------------- tape ops


def _both(fn, *arrays):
    """fn(lib, *leaves) with lib = symgrad.tape and torch: values and input gradients."""
    results = []
    for lib in (tape, torch):
        leaves = [lib.tensor(a, requires_grad=True) for a in arrays]
        out = fn(lib, *leaves)
        weights = np.random.default_rng(0).standard_normal(tuple(out.shape))
        (out * lib.tensor(weights)).sum().backward()
        results.append((out, [t.grad.numpy() for t in leaves]))
    return results


@pytest.mark.parametrize(
    "name, low, high",
    [
        ("asinh", -5, 5),
        ("acosh", 1.01, 30),
        ("atanh", -0.99, 0.99),
        ("erf", -6, 6),
        ("erfc", -6, 26),
    ],
)
def test_tape_unary_ops_match_torch(name, low, high):
    x = np.random.default_rng(2).uniform(low, high, (4, 5))
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        ours, theirs = _both(lambda lib, t: getattr(lib, name)(t), x)
    assert type(ours[0]).__name__ == "Tensor"
    assert ours[0].grad_fn.name() == theirs[0].grad_fn.name()
    np.testing.assert_allclose(
        ours[0].detach().numpy(), theirs[0].detach().numpy(), 1e-14
    )
    np.testing.assert_allclose(ours[1][0], theirs[1][0], rtol=1e-12, atol=1e-300)
    method = getattr(tape.tensor(x), name)()  # also a Tensor method, as in torch
    np.testing.assert_array_equal(method.numpy(), ours[0].detach().numpy())


def test_tape_atan2_broadcasts_like_torch():
    rng = np.random.default_rng(3)
    y, x = rng.standard_normal((4, 3)), rng.standard_normal(3)
    ours, theirs = _both(lambda lib, a, b: lib.atan2(a, b), y, x)
    assert ours[0].grad_fn.name() == theirs[0].grad_fn.name() == "Atan2Backward0"
    np.testing.assert_allclose(
        ours[0].detach().numpy(), theirs[0].detach().numpy(), 1e-14
    )
    for a, b in zip(ours[1], theirs[1], strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12)
    method = tape.tensor(y).atan2(tape.tensor(x))
    np.testing.assert_array_equal(method.numpy(), ours[0].detach().numpy())
