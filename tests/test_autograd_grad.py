"""sg.grad: torch.autograd.grad(y, x, create_graph=True) inside a model, against
PyTorch (float64) and central differences. Physics-informed networks (u' and u'' of a
network in its input), WGAN-GP's gradient penalty at interpolated samples, Hamiltonian
networks (dH/dp and -dH/dq as the predicted motion), double backpropagation (a loss
penalising its own parameter gradient), gradients with respect to intermediate values,
Hessians through them (third derivatives) and unrolled code.
"""

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
    normal,
)

import symgrad as sg

torch = pytest.importorskip("torch")


def _torch_grad(y, x):
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    return g


def pinn(hessian=False, n="n"):
    """u'' = -sin(x), with u' small: the network's derivatives in its input."""
    m = sg.Model("pinn", hessian=hessian)
    x = m.input("x", (n, 1))
    W1, b1 = m.param("W1", (6, 1)), m.param("b1", (6,))
    W2, b2 = m.param("W2", (1, 6)), m.param("b2", (1,))
    u = sg.tanh(x @ W1.T + b1) @ W2.T + b2
    du = sg.grad(sg.sum(u), x)
    d2u = sg.grad(sg.sum(du), x)
    m.output("residual", d2u + sg.sin(x))
    m.loss(sg.mean((d2u + sg.sin(x)) ** 2) + 0.1 * sg.mean(du**2) + sg.mean(u**2))

    def reference(p, i):
        x = i["x"].clone().requires_grad_(True)
        u = torch.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
        du = _torch_grad(u.sum(), x)
        d2u = _torch_grad(du.sum(), x)
        residual = d2u + torch.sin(x)
        loss = (residual**2).mean() + 0.1 * (du**2).mean() + (u**2).mean()
        return loss, {"residual": residual}

    rng = np.random.default_rng(0)
    params = {
        "W1": normal(rng, 6, 1),
        "b1": normal(rng, 6),
        "W2": normal(rng, 1, 6),
        "b2": normal(rng, 1),
    }
    return m, reference, params, {"x": rng.uniform(0, np.pi, (5, 1))}


def wgan_gp(hessian=False):
    """The critic's gradient norm at interpolates of real and fake samples: an
    intermediate value, computed from inputs only, that the penalty differentiates."""
    m = sg.Model("wgan_gp", hessian=hessian)
    real, fake = m.input("real", ("B", 3)), m.input("fake", ("B", 3))
    eps = m.input("eps", ("B", 1))
    W1, b1 = m.param("W1", (5, 3)), m.param("b1", (5,))
    w2 = m.param("w2", (5,))

    def critic(z):
        return sg.softplus(z @ W1.T + b1) @ w2

    x_hat = eps * real + (1 - eps) * fake
    g = sg.grad(sg.sum(critic(x_hat)), x_hat)
    norm = sg.sqrt(sg.sum(g**2, axis=1) + 1e-12)
    penalty = sg.mean((norm - 1) ** 2)
    m.loss(sg.mean(critic(fake)) - sg.mean(critic(real)) + 10 * penalty)

    def reference(p, i):
        def critic(z):
            return torch.nn.functional.softplus(z @ p["W1"].T + p["b1"]) @ p["w2"]

        x_hat = (i["eps"] * i["real"] + (1 - i["eps"]) * i["fake"]).requires_grad_()
        g = _torch_grad(critic(x_hat).sum(), x_hat)
        norm = torch.sqrt((g**2).sum(1) + 1e-12)
        penalty = ((norm - 1) ** 2).mean()
        return critic(i["fake"]).mean() - critic(i["real"]).mean() + 10 * penalty, {}

    rng = np.random.default_rng(1)
    params = {"W1": normal(rng, 5, 3), "b1": normal(rng, 5), "w2": normal(rng, 5)}
    inputs = {
        "real": normal(rng, 4, 3),
        "fake": normal(rng, 4, 3),
        "eps": rng.uniform(size=(4, 1)),
    }
    return m, reference, params, inputs


def hamiltonian(hessian=False):
    """dq/dt = dH/dp and dp/dt = -dH/dq of a learned H(q, p), fit to observed motion;
    sg.grad of a list gives a list."""
    m = sg.Model("hamiltonian", hessian=hessian)
    q, p = m.input("q", ("B", 2)), m.input("p", ("B", 2))
    dq, dp = m.input("dq", ("B", 2)), m.input("dp", ("B", 2))
    W1 = m.param("W1", (6, 4))
    w2 = m.param("w2", (6,))
    H = sg.sum(sg.tanh(sg.concatenate([q, p], axis=1) @ W1.T) @ w2)
    dH_dq, dH_dp = sg.grad(H, [q, p])
    m.output("dq_dt", dH_dp)
    m.loss(sg.mean((dH_dp - dq) ** 2) + sg.mean((dH_dq + dp) ** 2))

    def reference(t, i):
        q, p = i["q"].clone().requires_grad_(), i["p"].clone().requires_grad_()
        H = (torch.tanh(torch.cat([q, p], 1) @ t["W1"].T) @ t["w2"]).sum()
        dH_dq, dH_dp = torch.autograd.grad(H, [q, p], create_graph=True)
        loss = ((dH_dp - i["dq"]) ** 2).mean() + ((dH_dq + i["dp"]) ** 2).mean()
        return loss, {"dq_dt": dH_dp}

    rng = np.random.default_rng(2)
    params = {"W1": normal(rng, 6, 4, scale=0.7), "w2": normal(rng, 6)}
    inputs = {k: normal(rng, 3, 2) for k in ("q", "p", "dq", "dp")}
    return m, reference, params, inputs


def double_backprop(hessian=False):
    """A loss plus the squared norm of its own gradient in the weights (and in a hidden
    value): gradients of parameters and of intermediates, differentiated again."""
    m = sg.Model("double_backprop", hessian=hessian)
    x, y = m.input("x", ("B", 3)), m.input("y", ("B",))
    W = m.param("W", (4, 3))
    v = m.param("v", (4,))
    h = sg.sigmoid(x @ W.T)
    fit = sg.mean((h @ v - y) ** 2)
    g_W, g_h = sg.grad(fit, [W, h])
    unused = sg.grad(sg.sum(v**2), W, allow_unused=True)  # zeros, as in torch
    m.loss(fit + 0.5 * sg.sum(g_W**2) + sg.sum(g_h**2) + sg.sum(unused))

    def reference(t, i):
        h = torch.sigmoid(i["x"] @ t["W"].T)
        fit = ((h @ t["v"] - i["y"]) ** 2).mean()
        g_W, g_h = torch.autograd.grad(fit, [t["W"], h], create_graph=True)
        return fit + 0.5 * (g_W**2).sum() + (g_h**2).sum(), {}

    rng = np.random.default_rng(3)
    params = {"W": normal(rng, 4, 3), "v": normal(rng, 4)}
    return m, reference, params, {"x": normal(rng, 5, 3), "y": normal(rng, 5)}


FAMILIES = [pinn, wgan_gp, hamiltonian, double_backprop]


@pytest.mark.parametrize("family", FAMILIES)
def test_agrees_with_torch_and_differences(family):
    m, reference, params, inputs = family()
    module = compile_module(m)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


@pytest.mark.parametrize("family", FAMILIES)
def test_hessian_agrees_with_torch(family):
    m, reference, params, inputs = family(hessian=True)
    module = compile_module(m)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_unrolled_at_fixed_sizes():
    m, reference, params, inputs = pinn(n=5)
    check_unrolled(compile_module(m), reference, params, inputs)


def test_verified_by_the_tape_with_inputs_it_differentiates():
    """symgrad build's check: the tape differentiates the input x (torch's
    x.requires_grad_()), and an intermediate computed from inputs alone."""
    from symgrad.verify import verify

    for family in (pinn, wgan_gp):
        m = family()[0]
        report = verify(m, compile_module(m))
        assert report.ok, report


@pytest.mark.parametrize(
    "make, error, words",
    [
        (lambda x, W: sg.grad(x @ W.T, W), sg.ShapeError, "y must be 0-d"),
        (lambda x, W: sg.grad(sg.sum(x), 2.0), TypeError, "needs sg expressions"),
        (
            lambda x, W: sg.grad(sg.sum(x), x, create_graph=True),
            TypeError,
            "has no create_graph=.* always differentiable",
        ),
    ],
)
def test_errors_name_the_problem(make, error, words):
    m = sg.Model("bad")
    x, W = m.input("x", ("B", 3)), m.param("W", (2, 3))
    with pytest.raises(error, match=words):
        make(x, W)


def test_gradient_of_a_sum_multiplies_no_matrix_of_ones():
    """sg.grad(sg.sum(u), x) seeds a matrix of ones: its product with a weight matrix
    is the weights broadcast, not a matmul of ones."""
    from symgrad.cli import generate

    source, _ = generate(pinn()[0])
    assert "np.broadcast_to(1.0" not in source and "np.ones((n, 1)) @" not in source
