"""sg.lgamma and sg.digamma end to end, and the tape's lgamma/digamma/polygamma.

Likelihoods that learn a shape (a Student-t's degrees of freedom, a negative binomial's
dispersion, Dirichlet concentrations) and a direct digamma, against torch float64
(torch.distributions' log_prob): vectorized, unrolled, Hessians, central differences
and ``verify``. NumPy has neither: the module calls math.lgamma element by element and
its own _digamma/_trigamma (asymptotic series), checked against scipy.
"""

import math
import warnings

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
    rel,
)

import symgrad as sg
from symgrad import tape
from symgrad.cli import generate
from symgrad.tape import special
from symgrad.verify import verify

torch = pytest.importorskip("torch")
D = torch.distributions


def student_t(hessian=False):
    """Regression with Student-t noise: nu = exp(log_nu) learned with the line."""
    m = sg.Model("student_t", hessian=hessian)
    x, y = m.input("x", ("batch",)), m.input("y", ("batch",))
    a, b = m.param("a", ()), m.param("b", ())
    log_nu, log_s = m.param("log_nu", ()), m.param("log_s", ())
    nu, s = sg.exp(log_nu), sg.exp(log_s)
    z = (y - (a * x + b)) / s
    ll = (
        sg.lgamma((nu + 1) / 2)
        - sg.lgamma(nu / 2)
        - 0.5 * sg.log(nu * math.pi)
        - log_s
        - (nu + 1) / 2 * sg.log1p(z**2 / nu)
    )
    m.loss(-sg.mean(ll))

    def reference(p, i):
        scale = torch.exp(p["log_s"])
        dist = D.StudentT(torch.exp(p["log_nu"]), p["a"] * i["x"] + p["b"], scale)
        return -dist.log_prob(i["y"]).mean(), {}

    rng = np.random.default_rng(0)
    x = rng.normal(size=6)
    params = {"a": 0.7, "b": -0.2, "log_nu": 1.1, "log_s": -0.3}
    params = {k: np.array(v) for k, v in params.items()}
    inputs = {"x": x, "y": 0.7 * x + rng.standard_t(3, size=6)}
    return m, reference, params, inputs


def negative_binomial(hessian=False):
    """A log-link GLM for counts with learned dispersion (torch's NegativeBinomial:
    total_count r, success probability mu / (mu + r))."""
    m = sg.Model("negbin_glm", hessian=hessian)
    X, k = m.input("X", ("batch", 2)), m.input("k", ("batch",))
    w, log_r = m.param("w", (2,)), m.param("log_r", ())
    mu, r = sg.exp(X @ w), sg.exp(log_r)
    ll = (
        sg.lgamma(k + r)
        - sg.lgamma(r)
        - sg.lgamma(k + 1)
        + r * sg.log(r / (r + mu))
        + k * sg.log(mu / (r + mu))
    )
    m.loss(-sg.sum(ll))

    def reference(p, i):
        mu, r = torch.exp(i["X"] @ p["w"]), torch.exp(p["log_r"])
        dist = D.NegativeBinomial(total_count=r, logits=torch.log(mu) - torch.log(r))
        return -dist.log_prob(i["k"]).sum(), {}

    rng = np.random.default_rng(1)
    X = rng.normal(size=(5, 2))
    params = {"w": np.array([0.4, -0.6]), "log_r": np.array(0.5)}
    inputs = {"X": X, "k": rng.poisson(np.exp(X @ params["w"])).astype(float)}
    return m, reference, params, inputs


def dirichlet(hessian=False):
    """Dirichlet log-likelihood of compositions, concentrations exp(log_alpha)."""
    m = sg.Model("dirichlet", hessian=hessian)
    p = m.input("p", ("batch", 3))
    log_alpha = m.param("log_alpha", (3,))
    alpha = sg.exp(log_alpha)
    norm = sg.lgamma(sg.sum(alpha)) - sg.sum(sg.lgamma(alpha))
    ll = norm + sg.sum((alpha - 1) * sg.log(p), axis=1)
    m.output("log_norm", norm)
    m.loss(-sg.mean(ll))

    def reference(par, i):
        alpha = torch.exp(par["log_alpha"])
        log_norm = torch.lgamma(alpha.sum()) - torch.lgamma(alpha).sum()
        return -D.Dirichlet(alpha).log_prob(i["p"]).mean(), {"log_norm": log_norm}

    def sampler(rng, batch):  # (for verify: compositions, not normal draws)
        alpha = rng.normal(scale=0.5, size=3)
        return {"log_alpha": alpha}, {"p": rng.dirichlet([2.0, 1.0, 3.0], size=batch)}

    m.sampler = sampler
    params, inputs = sampler(np.random.default_rng(2), 4)
    return m, reference, params, inputs


def beta(hessian=False):
    """Beta log-likelihood with (a, b) = exp(log_ab): log B(a, b) through lgamma."""
    m = sg.Model("beta", hessian=hessian)
    x = m.input("x", ("batch",))
    log_ab = m.param("log_ab", (2,))
    a, b = sg.exp(log_ab[0]), sg.exp(log_ab[1])
    ll = (
        sg.lgamma(a + b)
        - sg.lgamma(a)
        - sg.lgamma(b)
        + (a - 1) * sg.log(x)
        + (b - 1) * sg.log1p(-x)
    )
    m.loss(-sg.sum(ll))

    def reference(p, i):
        a, b = torch.exp(p["log_ab"])
        return -D.Beta(a, b).log_prob(i["x"]).sum(), {}

    def sampler(rng, batch):  # (for verify: x in (0, 1))
        return {"log_ab": rng.normal(scale=0.5, size=2)}, {
            "x": rng.beta(1.5, 2.5, batch)
        }

    m.sampler = sampler
    params, inputs = sampler(np.random.default_rng(3), 5)
    return m, reference, params, inputs


def digamma_direct(hessian=False):
    """digamma itself in a loss (a Dirichlet's expected log, E[log p_j]), at arguments
    of both signs; its gradient runs through trigamma."""
    m = sg.Model("digamma_direct", hessian=hessian)
    x = m.input("x", ("batch",))
    w = m.param("w", (2,))
    e = m.output("e", sg.digamma(w[0] * x + w[1]) - sg.digamma(sg.exp(w[0]) + 3))
    m.loss(sg.sum(e**2))

    def reference(p, i):
        w = p["w"]
        e = torch.digamma(w[0] * i["x"] + w[1]) - torch.digamma(torch.exp(w[0]) + 3)
        return (e**2).sum(), {"e": e}

    params = {"w": np.array([1.3, 0.4])}
    inputs = {"x": np.array([0.5, 2.0, 7.5, -0.3, -1.7])}  # arguments 1.05 .. -1.81
    return m, reference, params, inputs


MODELS = [student_t, negative_binomial, dirichlet, beta, digamma_direct]
LGAMMA_ONLY = [student_t, negative_binomial, dirichlet, beta]


@pytest.mark.parametrize("family", MODELS)
def test_agrees_with_torch_and_differences(family):
    model, reference, params, inputs = family()
    module = compile_module(model)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)
    report = verify(model, module)
    assert report.ok, report.table()


@pytest.mark.parametrize("family", LGAMMA_ONLY)
def test_hessian_agrees_with_torch(family):
    _, reference, params, inputs = family()
    module = compile_module(family(hessian=True)[0])
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_hessian_through_digamma_is_refused_by_name():
    with pytest.raises(sg.UnsupportedError, match="polygamma"):
        generate(digamma_direct(hessian=True)[0])


@pytest.mark.parametrize("family", MODELS)
def test_unrolled_runs_and_agrees(family):
    model, reference, params, inputs = family()
    model.unroll(batch=len(next(iter(inputs.values()))))
    source, _ = generate(model)
    assert "math.lgamma(" in source or "_digamma(" in source
    check_unrolled(compile_module(model), reference, params, inputs)


def test_helpers_only_where_used():
    source, _ = generate(student_t()[0])  # lgamma' = digamma
    assert "def _lgamma(" in source and "def _digamma(" in source
    assert "def _trigamma(" not in source and "import math" in source
    source, _ = generate(student_t(hessian=True)[0])  # lgamma'' = trigamma
    assert "def _trigamma(" in source
    source, _ = generate(digamma_direct()[0])
    assert "def _digamma(" in source and "def _trigamma(" in source
    assert "def _lgamma(" not in source and "import math" not in source
    assert "import symgrad" not in source and "from symgrad" not in source


def test_poles_give_torch_values_without_warnings():
    x = np.array([0.0, -0.0, -1.0, -2.0, np.inf, -np.inf, np.nan, 3e305])
    t = torch.tensor(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lgamma, digamma = special._lgamma(x), special._digamma(x)
        trigamma = special._trigamma(x)
        scalars = [special._digamma(v) for v in x] + [special._trigamma(v) for v in x]
    np.testing.assert_array_equal(lgamma, torch.lgamma(t).numpy())
    np.testing.assert_array_equal(digamma, torch.digamma(t).numpy())
    # torch's trigamma at -1, -2 is pi^2 / sin(pi x)^2 in floats, 6.6e32: ours is inf
    expected = torch.polygamma(1, t).numpy()
    expected[2:4] = np.inf
    np.testing.assert_array_equal(trigamma, expected)
    np.testing.assert_array_equal(scalars, np.concatenate([digamma, trigamma]))


def test_helpers_match_scipy():
    """Relative error against scipy over 1e-8 .. 1e8 and negatives; near the poles
    against mpmath (scipy's tan(pi x) loses digits there, ours takes x - round(x))."""
    sc = pytest.importorskip("scipy.special")
    import mpmath

    x = np.concatenate([np.geomspace(1e-8, 1e8, 20001), np.linspace(0.01, 30, 5000)])
    root = 1.4616321449683623  # digamma's zero: the error there is absolute
    away = np.abs(x - root) > 0.05  # (2e-14 at 0.05, 1e-14 beyond 0.1)
    assert np.max(np.abs(special._digamma(x[away]) / sc.digamma(x[away]) - 1)) < 2e-14
    near = x[~away]
    assert np.max(np.abs(special._digamma(near) - sc.digamma(near))) < 3e-15
    r = np.abs(special._trigamma(x) / sc.polygamma(1, x) - 1)
    assert r.max() < 1e-14
    neg = -np.linspace(0.013, 30.3, 1001)
    assert np.max(np.abs(special._trigamma(neg) / sc.polygamma(1, neg) - 1)) < 1e-14
    # digamma below 0 crosses zero once per unit: its error is scaled by the terms'
    scale = np.abs(sc.digamma(1 - neg)) + np.abs(np.pi / np.tan(np.pi * neg))
    exact = np.array([float(mpmath.digamma(v)) for v in neg])  # scipy: 3e-13
    assert np.max(np.abs(special._digamma(neg) - exact) / scale) < 1e-14
    for v in (-1 + 1e-9, -3 - 1e-7, -7.5 + 1e-6, -1e-9):
        exact = mpmath.mpf(v)
        assert abs(special._digamma(v) / float(mpmath.digamma(exact)) - 1) < 1e-14
        assert abs(special._trigamma(v) / float(mpmath.psi(1, exact)) - 1) < 1e-14


@pytest.mark.parametrize("n", [2, 3, 5])
def test_tape_polygamma_of_higher_order_matches_scipy(n):
    sc = pytest.importorskip("scipy.special")
    x = np.concatenate([np.geomspace(1e-6, 1e6, 501), -np.linspace(0.03, 20.3, 501)])
    actual = tape.polygamma(n, tape.tensor(x)).numpy()
    assert np.max(np.abs(actual / sc.polygamma(n, x) - 1)) < 1e-11


@pytest.mark.parametrize("op", ["lgamma", "digamma", "polygamma1", "polygamma2"])
def test_tape_ops_against_torch(op):
    """Values, gradients and second derivatives (create_graph), and grad_fn names."""

    def apply(lib, x):
        if op.startswith("polygamma"):
            return lib.polygamma(int(op[-1]), x)
        return getattr(x, op)() if op == "digamma" else getattr(lib, op)(x)

    x = np.array([0.3, 1.4616, 2.5, 40.0, -0.5, -2.7])
    results = []
    for lib in (torch, tape):
        t = lib.tensor(x, requires_grad=True)
        y = apply(lib, t)
        (g,) = lib.autograd.grad(y, t, lib.ones_like(y) * 0.7, create_graph=True)
        (gg,) = lib.autograd.grad((g * g).sum(), t)
        name = type(y.grad_fn).__name__ if lib is torch else y.grad_fn.name()
        results.append((name, y.detach().numpy(), g.detach().numpy(), gg.numpy()))
    (name, *expected), (tape_name, *actual) = results
    assert tape_name == name
    for a, e in zip(actual, expected, strict=True):
        # torch's trigamma is accurate to ~1e-9 (a short series), ours to 1e-15
        assert rel(a, e) < 1e-8, (a, e)


def test_tape_polygamma_refuses_negative_order():
    with pytest.raises(RuntimeError, match="negative n"):
        tape.polygamma(-1, tape.tensor([1.0]))


def test_pole_in_unrolled_code_falls_back_to_numpy():
    """math.lgamma raises at 0, where the NumPy code (and torch) give inf."""
    m = sg.Model("pole")
    x, w = m.input("x", ("batch",)), m.param("w", ())
    m.loss(sg.sum(sg.lgamma(w * x)))
    m.unroll(batch=2)
    module = compile_module(m)
    with np.errstate(all="ignore"):
        loss, grads = module.value_and_grad({"w": np.array(1.0)}, {"x": np.zeros(2)})
    assert loss == torch.lgamma(torch.zeros(2, dtype=torch.float64)).sum().item()
