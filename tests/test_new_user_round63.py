"""Round 63 of new-user models: scientific machine-learning users who differentiate a
network with respect to its INPUTS inside the loss (sg.grad; torch.autograd.grad(...,
create_graph=True) in their torch code), with torch CPU float64 autograd (an
independent twin of each model, inputs made leaves by requires_grad_) and central
finite differences as the judges.

Families (small tanh / softplus / sine MLPs, 2-3 layers of width 5-6, 4-8 points),
each loss written once, generic over sg / torch, as a user porting a torch script:
PINN residuals for 1-D Burgers (u_x, u_t as columns of one (n, 2) input's gradient,
u_xx the x column of the gradient of u_x's sum, initial and boundary terms), the heat
equation with a learned exp(log_k) (x and t separate inputs, a list wrt), 2-D Poisson
(the Laplacian as two second derivatives of a sine network, boundary corners), the
wave equation with a learned speed and an initial-velocity term (sg.grad at a second
input), Allen-Cahn with a periodic boundary term; a Hamiltonian network fitted to
(qdot, pdot) plus two leapfrog steps of the learned H unrolled in the loss (sg.grad
with respect to intermediate states); Sobolev training (values and input gradients);
WGAN-GP (sg.norm of the gradient at interpolates, an intermediate of inputs), the R1
penalty; double backpropagation (sg.grad of the loss with respect to the input AND a
parameter in one list); Hyvarinen score matching of an energy MLP (the Laplacian of E
by per-coordinate second derivatives) and denoising score matching; the Deep Ritz
energy with the boundary condition built in by a bump; a monotonicity penalty
relu(-du/dx0)^2. Semantics in small models: a list wrt whose second entry depends on
the first (the first gradient is the total derivative, as torch's), the same input
twice in the list, a gradient with respect to a parameter differentiated with respect
to the input, gradients with respect to a hidden layer and to the network's output,
torch's grad_outputs=v as sg.grad(sg.sum(u * v), x), a hard constraint by sg.where on
the input, Fourier features; a network that ignores an input (allow_unused=True gives
zeros where torch gives None; without it a ModelError naming allow_unused).

Checked: all 14 families against torch and central differences; Hessians and hvps
(third and fourth derivatives overall) of five (heat, Sobolev, Hyvarinen, double
backprop, WGAN-GP); three unrolled at the data's sizes; 15 edges (collocation points
at x = t = 0, Poisson and Deep Ritz points on the boundary and the corner (0, 0),
batches of one for five families, softplus at inputs ~ +-50 (first-layer preactivations up to
~100-440, softplus'' ~ e^-50 or exactly 0) for four, a monotone net with no violation (the
relu penalty exactly 0)), three of them second order; WGAN-GP at an exactly zero input
gradient (norm 0, gradient 0 as torch's).

Found: no wrong number, crash or unclear error; everything agrees with torch to ~1e-9
and with differences. Noted, not bugs: torch's F.softplus is linear above its
threshold (20 by default, off by e^-20 ~ 2e-9, at the edge of float64 comparisons), so
the twin passes threshold=40; NumPy constants in arithmetic (x @ B for a fixed Fourier
matrix B, as a torch buffer) are refused with a clear message naming m.input (B is an
input here); a model named "grad_outputs" is refused as reserved (grad_*), as the
README says.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
    normal,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module


# ============================================================ helpers (sg / torch)


def act(lib, name, z):
    """The activation by name. torch's softplus is linear above its threshold (20 by
    default: off by e^-20 ~ 2e-9 there); the twin asks for 40 (e^-40 ~ 4e-18), so the
    oracle is exact to round-off at |z| ~ 50."""
    if lib is sg:
        return {"tanh": sg.tanh, "softplus": sg.softplus, "sin": sg.sin}[name](z)
    return {
        "tanh": torch.tanh,
        "softplus": lambda z: F.softplus(z, threshold=40.0),
        "sin": torch.sin,
    }[name](z)


def mlp(lib, p, x, activation, prefix=""):
    """An nn.Sequential of Linear layers (W is (out, in)) and one activation."""
    layers = sum(1 for k in p if k.startswith(prefix + "W"))
    h = x
    for k in range(1, layers + 1):
        h = h @ p[f"{prefix}W{k}"].T + p[f"{prefix}b{k}"]
        if k < layers:
            h = act(lib, activation, h)
    return h


def declare_mlp(m, sizes, prefix=""):
    p = {}
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), start=1):
        p[f"{prefix}W{k}"] = m.param(f"{prefix}W{k}", (fan_out, fan_in))
        p[f"{prefix}b{k}"] = m.param(f"{prefix}b{k}", (fan_out,))
    return p


def init_mlp(rng, sizes, prefix="", gain=1.0):
    p = {}
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes), start=1):
        p[f"{prefix}W{k}"] = normal(rng, fan_out, fan_in, scale=gain / fan_in**0.5)
        p[f"{prefix}b{k}"] = normal(rng, fan_out, scale=0.3)
    return p


def grad(lib, y, wrt):
    """sg.grad, or torch.autograd.grad(create_graph=True) (a list gives a list)."""
    if lib is sg:
        return sg.grad(y, wrt)
    many = isinstance(wrt, (list, tuple))
    out = torch.autograd.grad(y, list(wrt) if many else [wrt], create_graph=True)
    return list(out) if many else out[0]


def cat(lib, xs, axis):
    return sg.concatenate(xs, axis=axis) if lib is sg else torch.cat(xs, dim=axis)


def leaf(t):
    """An input torch differentiates (x.requires_grad_())."""
    return t.clone().requires_grad_(True)


def declare_inputs(m, shapes):
    return {k: m.input(k, shape) for k, shape in shapes.items()}


# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs). The loss is
# written once, generic over lib (sg or torch), as a user porting a torch script would.


def _burgers(lib, p, i):
    nu = 0.01 / math.pi
    xt = i["xt"]
    u = mlp(lib, p, xt, "tanh")
    g = grad(lib, u.sum(), xt)
    u_x, u_t = g[:, 0:1], g[:, 1:2]
    u_xx = grad(lib, u_x.sum(), xt)[:, 0:1]
    residual = u_t + u * u_x - nu * u_xx
    u0 = mlp(lib, p, i["x0t"], "tanh")
    ub = mlp(lib, p, i["xbt"], "tanh")
    x0 = i["x0t"][:, 0:1]
    loss = (
        (residual**2).mean()
        + ((u0 + lib.sin(math.pi * x0)) ** 2).mean()
        + (ub**2).mean()
    )
    return loss, {"residual": residual}


def _burgers_reference(p, i):
    return _burgers(torch, p, {**i, "xt": leaf(i["xt"])})


@family
def burgers_1d(hessian=False):
    """1-D viscous Burgers u_t + u u_x - (0.01 / pi) u_xx = 0 on (x, t) collocation
    points (one (n, 2) input: u_x, u_t as columns of sg.grad, u_xx the x column of the
    gradient of u_x's sum), the initial condition u(x, 0) = -sin(pi x) and u(+-1, t) =
    0 at boundary points. A 2-6-6-1 tanh MLP."""
    m = sg.Model("burgers_1d", hessian=hessian)
    p = declare_mlp(m, [2, 6, 6, 1])
    i = declare_inputs(m, {"xt": ("n", 2), "x0t": ("n0", 2), "xbt": ("nb", 2)})
    loss, out = _burgers(sg, p, i)
    m.output("residual", out["residual"])
    m.loss(loss)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (4, 1))
    tb = rng.uniform(0, 1, (4, 1))
    inputs = {
        "xt": np.column_stack([rng.uniform(-1, 1, 8), rng.uniform(0, 1, 8)]),
        "x0t": np.column_stack([x0, np.zeros_like(x0)]),
        "xbt": np.column_stack([np.array([-1.0, 1, -1, 1]), tb[:, 0]]),
    }
    return m, _burgers_reference, init_mlp(rng, [2, 6, 6, 1]), inputs


def _heat(lib, p, i):
    x, t = i["x"], i["t"]
    k = lib.exp(p["log_k"])
    u = mlp(lib, p, cat(lib, [x, t], 1), "softplus")
    u_x, u_t = grad(lib, u.sum(), [x, t])
    u_xx = grad(lib, u_x.sum(), x)
    residual = u_t - k * u_xx
    u0 = mlp(lib, p, cat(lib, [i["x0"], 0 * i["x0"]], 1), "softplus")
    loss = (residual**2).mean() + ((u0 - lib.sin(math.pi * i["x0"])) ** 2).mean()
    return loss, {"u_t": u_t}


def _heat_reference(p, i):
    return _heat(torch, p, {**i, "x": leaf(i["x"]), "t": leaf(i["t"])})


@family
def heat_1d(hessian=False):
    """Heat equation u_t = k u_xx with a learned diffusivity k = exp(log_k), x and t
    separate (n, 1) inputs concatenated into a 2-5-5-1 softplus MLP, sg.grad of a list
    [x, t]; initial condition u(x, 0) = sin(pi x) (t = 0 as 0 * x0)."""
    m = sg.Model("heat_1d", hessian=hessian)
    p = declare_mlp(m, [2, 5, 5, 1])
    p["log_k"] = m.param("log_k", ())
    i = declare_inputs(m, {"x": ("n", 1), "t": ("n", 1), "x0": ("n0", 1)})
    loss, out = _heat(sg, p, i)
    m.output("u_t", out["u_t"])
    m.loss(loss)
    rng = np.random.default_rng(1)
    params = {**init_mlp(rng, [2, 5, 5, 1]), "log_k": np.array(-1.2)}
    inputs = {
        "x": rng.uniform(0, 1, (6, 1)),
        "t": rng.uniform(0, 1, (6, 1)),
        "x0": rng.uniform(0, 1, (3, 1)),
    }
    return m, _heat_reference, params, inputs


def _poisson(lib, p, i):
    xy = i["xy"]
    u = mlp(lib, p, xy, "sin")
    g = grad(lib, u.sum(), xy)
    u_xx = grad(lib, g[:, 0].sum(), xy)[:, 0]
    u_yy = grad(lib, g[:, 1].sum(), xy)[:, 1]
    lap = u_xx + u_yy
    f = -2 * math.pi**2 * lib.sin(math.pi * xy[:, 0]) * lib.sin(math.pi * xy[:, 1])
    residual = lap - f
    ub = mlp(lib, p, i["b"], "sin")
    return (residual**2).mean() + 10.0 * (ub**2).mean(), {"laplacian": lap}


def _poisson_reference(p, i):
    return _poisson(torch, p, {**i, "xy": leaf(i["xy"])})


@family
def poisson_2d(hessian=False):
    """2-D Poisson Laplace(u) = -2 pi^2 sin(pi x) sin(pi y) on the unit square, the
    Laplacian as the sum of two second derivatives (each the column of the gradient of
    one column's sum), u = 0 on boundary points (corners included) weighted 10. A
    2-6-6-1 sine MLP (SIREN-like, no w0)."""
    m = sg.Model("poisson_2d", hessian=hessian)
    p = declare_mlp(m, [2, 6, 6, 1])
    i = declare_inputs(m, {"xy": ("n", 2), "b": ("nb", 2)})
    loss, out = _poisson(sg, p, i)
    m.output("laplacian", out["laplacian"])
    m.loss(loss)
    rng = np.random.default_rng(2)
    s = rng.uniform(0, 1, 4)
    b = np.array([[0, 0], [1, 1], [0, s[0]], [1, s[1]], [s[2], 0], [s[3], 1]], float)
    inputs = {"xy": rng.uniform(0, 1, (7, 2)), "b": b}
    return m, _poisson_reference, init_mlp(rng, [2, 6, 6, 1], gain=1.5), inputs


def _wave(lib, p, i):
    xt, x0t = i["xt"], i["x0t"]
    c = p["c"]
    u = mlp(lib, p, xt, "tanh")
    g = grad(lib, u.sum(), xt)
    u_xx = grad(lib, g[:, 0].sum(), xt)[:, 0]
    u_tt = grad(lib, g[:, 1].sum(), xt)[:, 1]
    residual = u_tt - c**2 * u_xx
    u0 = mlp(lib, p, x0t, "tanh")
    v0 = grad(lib, u0.sum(), x0t)[:, 1]
    x0 = x0t[:, 0]
    initial = ((u0[:, 0] - lib.sin(math.pi * x0)) ** 2).mean() + (v0**2).mean()
    return (residual**2).mean() + initial, {"residual": residual}


def _wave_reference(p, i):
    return _wave(torch, p, {**i, "xt": leaf(i["xt"]), "x0t": leaf(i["x0t"])})


@family
def wave_1d(hessian=False):
    """1-D wave equation u_tt = c^2 u_xx with a learned speed c, initial displacement
    sin(pi x) and initial velocity u_t(x, 0) = 0 (sg.grad at the initial points, a
    second input differentiated). A 2-5-5-1 tanh MLP."""
    m = sg.Model("wave_1d", hessian=hessian)
    p = declare_mlp(m, [2, 5, 5, 1])
    p["c"] = m.param("c", ())
    i = declare_inputs(m, {"xt": ("n", 2), "x0t": ("n0", 2)})
    loss, out = _wave(sg, p, i)
    m.output("residual", out["residual"])
    m.loss(loss)
    rng = np.random.default_rng(3)
    params = {**init_mlp(rng, [2, 5, 5, 1]), "c": np.array(0.8)}
    x0 = rng.uniform(0, 1, 4)
    inputs = {
        "xt": rng.uniform(0, 1, (6, 2)),
        "x0t": np.column_stack([x0, np.zeros(4)]),
    }
    return m, _wave_reference, params, inputs


def _allen_cahn(lib, p, i):
    x, t = i["x"], i["t"]
    u = mlp(lib, p, cat(lib, [x, t], 1), "tanh")
    u_x, u_t = grad(lib, u.sum(), [x, t])
    u_xx = grad(lib, u_x.sum(), x)
    residual = u_t - 1e-4 * u_xx + 5 * u**3 - 5 * u
    tb = i["tb"]
    left = cat(lib, [-1 + 0 * tb, tb], 1)
    right = cat(lib, [1 + 0 * tb, tb], 1)
    periodic = ((mlp(lib, p, left, "tanh") - mlp(lib, p, right, "tanh")) ** 2).mean()
    return (residual**2).mean() + periodic, {"residual": residual}


def _allen_cahn_reference(p, i):
    return _allen_cahn(torch, p, {**i, "x": leaf(i["x"]), "t": leaf(i["t"])})


@family
def allen_cahn(hessian=False):
    """Allen-Cahn u_t - 1e-4 u_xx + 5 u^3 - 5 u = 0 (x, t separate inputs, a list
    wrt) with a periodic boundary term u(-1, t) = u(1, t) (the boundary points built
    by concatenating a constant column). A 2-6-6-1 tanh MLP."""
    m = sg.Model("allen_cahn", hessian=hessian)
    p = declare_mlp(m, [2, 6, 6, 1])
    i = declare_inputs(m, {"x": ("n", 1), "t": ("n", 1), "tb": ("nb", 1)})
    loss, out = _allen_cahn(sg, p, i)
    m.output("residual", out["residual"])
    m.loss(loss)
    rng = np.random.default_rng(4)
    inputs = {
        "x": rng.uniform(-1, 1, (7, 1)),
        "t": rng.uniform(0, 1, (7, 1)),
        "tb": rng.uniform(0, 1, (3, 1)),
    }
    return m, _allen_cahn_reference, init_mlp(rng, [2, 6, 6, 1]), inputs


HNN_H = 0.1


def _hnn(lib, p, i):
    def H(q, pm):
        return mlp(lib, p, cat(lib, [q, pm], 1), "tanh").sum()

    q, pm = i["q"], i["p"]
    dHdq, dHdp = grad(lib, H(q, pm), [q, pm])
    fit = ((dHdp - i["qdot"]) ** 2).mean() + ((dHdq + i["pdot"]) ** 2).mean()
    # two leapfrog steps of the learned H, the gradients at intermediate states
    for _ in range(2):
        p_half = pm - 0.5 * HNN_H * grad(lib, H(q, pm), q)
        q = q + HNN_H * grad(lib, H(q, p_half), p_half)
        pm = p_half - 0.5 * HNN_H * grad(lib, H(q, p_half), q)
    rollout = ((q - i["q2"]) ** 2).mean() + ((pm - i["p2"]) ** 2).mean()
    return fit + rollout, {"dHdp": dHdp, "q_end": q}


def _hnn_reference(p, i):
    return _hnn(torch, p, {**i, "q": leaf(i["q"]), "p": leaf(i["p"])})


@family
def hamiltonian_leapfrog(hessian=False):
    """A Hamiltonian neural network: H(q, p) a 2-5-5-1 tanh MLP, loss ||dH/dp -
    qdot||^2 + ||dH/dq + pdot||^2 (sg.grad of a list), plus two leapfrog steps of the
    learned H unrolled in the loss (dH/dq and dH/dp at intermediate states: sg.grad
    with respect to intermediates p_half and q_new) fitted to the observed state two
    steps on. Data from a pendulum."""
    m = sg.Model("hamiltonian_leapfrog", hessian=hessian)
    p = declare_mlp(m, [2, 5, 5, 1])
    names = ("q", "p", "qdot", "pdot", "q2", "p2")
    i = declare_inputs(m, {k: ("n", 1) for k in names})
    loss, out = _hnn(sg, p, i)
    m.output("dHdp", out["dHdp"])
    m.output("q_end", out["q_end"])
    m.loss(loss)
    rng = np.random.default_rng(5)
    q, pm = rng.uniform(-1, 1, (5, 1)), rng.uniform(-1, 1, (5, 1))
    inputs = {
        "q": q,
        "p": pm,
        "qdot": pm,
        "pdot": -np.sin(q),
        "q2": q + 2 * HNN_H * pm,
        "p2": pm - 2 * HNN_H * np.sin(q),
    }
    return m, _hnn_reference, init_mlp(rng, [2, 5, 5, 1]), inputs


def _sobolev(lib, p, i):
    x = i["x"]
    u = mlp(lib, p, x, "tanh")
    du = grad(lib, u.sum(), x)
    value = ((u[:, 0] - i["y"]) ** 2).mean()
    slope = ((du - i["dy"]) ** 2).sum(axis=1).mean()
    return value + slope, {"du": du}


def _sobolev_reference(p, i):
    return _sobolev(torch, p, {**i, "x": leaf(i["x"])})


def _sobolev_data(rng, n):
    x = rng.uniform(-1, 1, (n, 2))
    y = np.sin(2 * x[:, 0]) * np.cos(x[:, 1])
    dy = np.column_stack(
        [
            2 * np.cos(2 * x[:, 0]) * np.cos(x[:, 1]),
            -np.sin(2 * x[:, 0]) * np.sin(x[:, 1]),
        ]
    )
    return {"x": x, "y": y, "dy": dy}


@family
def sobolev_fit(hessian=False):
    """Sobolev training: fit the values AND the input gradients of sin(2 x0) cos(x1)
    with a 2-5-1 tanh MLP (Czarnecki et al.)."""
    m = sg.Model("sobolev_fit", hessian=hessian)
    p = declare_mlp(m, [2, 5, 1])
    i = declare_inputs(m, {"x": ("n", 2), "y": ("n",), "dy": ("n", 2)})
    loss, out = _sobolev(sg, p, i)
    m.output("du", out["du"])
    m.loss(loss)
    rng = np.random.default_rng(6)
    return m, _sobolev_reference, init_mlp(rng, [2, 5, 1]), _sobolev_data(rng, 4)


def _wgan_gp(lib, p, i):
    def D(z):
        return mlp(lib, p, z, "softplus")[:, 0]

    eps = i["eps"]
    x_hat = eps * i["real"] + (1 - eps) * i["fake"]
    if lib is torch:
        x_hat = x_hat.requires_grad_(True)
    g = grad(lib, D(x_hat).sum(), x_hat)
    if lib is sg:
        norm = sg.norm(g, axis=1)
    else:
        norm = g.norm(2, dim=1)
    penalty = ((norm - 1) ** 2).mean()
    return D(i["fake"]).mean() - D(i["real"]).mean() + 10.0 * penalty, {"norm": norm}


def _wgan_gp_reference(p, i):
    return _wgan_gp(torch, p, i)


@family
def wgan_gp(hessian=False):
    """WGAN-GP: a 3-6-6-1 softplus critic, the gradient penalty (||grad_x D(x_hat)||_2
    - 1)^2 at x_hat = eps real + (1 - eps) fake (an intermediate of inputs: torch's
    x_hat.requires_grad_()), the norm by sg.norm (torch: g.norm(2, dim=1))."""
    m = sg.Model("wgan_gp", hessian=hessian)
    p = declare_mlp(m, [3, 6, 6, 1])
    i = declare_inputs(m, {"real": ("B", 3), "fake": ("B", 3), "eps": ("B", 1)})
    loss, out = _wgan_gp(sg, p, i)
    m.output("norm", out["norm"])
    m.loss(loss)
    rng = np.random.default_rng(7)
    inputs = {
        "real": normal(rng, 6, 3) + 1.0,
        "fake": normal(rng, 6, 3),
        "eps": rng.uniform(size=(6, 1)),
    }
    return m, _wgan_gp_reference, init_mlp(rng, [3, 6, 6, 1], gain=1.5), inputs


def _r1(lib, p, i):
    real = i["real"]
    d_real = mlp(lib, p, real, "tanh")[:, 0]
    d_fake = mlp(lib, p, i["fake"], "tanh")[:, 0]
    g = grad(lib, d_real.sum(), real)
    r1 = (g**2).sum(axis=1).mean()
    sp = (lambda z: sg.softplus(z)) if lib is sg else F.softplus
    loss = sp(-d_real).mean() + sp(d_fake).mean() + 5.0 * r1
    return loss, {"r1": r1}


def _r1_reference(p, i):
    return _r1(torch, p, {**i, "real": leaf(i["real"])})


@family
def r1_penalty(hessian=False):
    """The non-saturating GAN loss with Mescheder's R1 penalty gamma / 2 E||grad_x
    D(real)||^2 on real data (gamma = 10), a 2-6-6-1 tanh discriminator."""
    m = sg.Model("r1_penalty", hessian=hessian)
    p = declare_mlp(m, [2, 6, 6, 1])
    i = declare_inputs(m, {"real": ("B", 2), "fake": ("B", 2)})
    loss, out = _r1(sg, p, i)
    m.output("r1", out["r1"])
    m.loss(loss)
    rng = np.random.default_rng(8)
    inputs = {"real": normal(rng, 5, 2) + 0.5, "fake": normal(rng, 5, 2)}
    return m, _r1_reference, init_mlp(rng, [2, 6, 6, 1]), inputs


def _double_backprop(lib, p, i):
    x = i["x"]
    fit = ((mlp(lib, p, x, "tanh")[:, 0] - i["y"]) ** 2).mean()
    g_x, g_W1 = grad(lib, fit, [x, p["W1"]])
    loss = fit + 0.5 * (g_x**2).sum() + 0.05 * (g_W1**2).sum()
    return loss, {"g_x": g_x}


def _double_backprop_reference(p, i):
    return _double_backprop(torch, p, {**i, "x": leaf(i["x"])})


@family
def double_backprop(hessian=False):
    """Drucker-LeCun double backpropagation: an MSE fit plus the squared norm of the
    loss's gradient in the INPUTS (input-gradient regularisation) and in the first
    layer's weights (sg.grad with respect to a parameter and an input in one list).
    A 3-5-5-1 tanh MLP."""
    m = sg.Model("double_backprop", hessian=hessian)
    p = declare_mlp(m, [3, 5, 5, 1])
    i = declare_inputs(m, {"x": ("B", 3), "y": ("B",)})
    loss, out = _double_backprop(sg, p, i)
    m.output("g_x", out["g_x"])
    m.loss(loss)
    rng = np.random.default_rng(9)
    inputs = {"x": normal(rng, 6, 3), "y": normal(rng, 6)}
    return m, _double_backprop_reference, init_mlp(rng, [3, 5, 5, 1]), inputs


def _hyvarinen(lib, p, i):
    x = i["x"]
    energy = mlp(lib, p, x, "softplus").sum()
    s = -grad(lib, energy, x)  # the score grad_x log p = -grad_x E
    trace = 0
    for d in range(2):
        trace = trace + grad(lib, s[:, d].sum(), x)[:, d]
    loss = (trace + 0.5 * (s**2).sum(axis=1)).mean()
    return loss, {"score": s}


def _hyvarinen_reference(p, i):
    return _hyvarinen(torch, p, {**i, "x": leaf(i["x"])})


@family
def hyvarinen_score_matching(hessian=False):
    """Hyvarinen's (exact) score matching of an energy model: s = -grad_x E(x), loss
    E[tr(ds/dx) + 0.5 ||s||^2], the trace (minus the Laplacian of E) as two
    per-coordinate second derivatives. E a 2-6-6-1 softplus MLP."""
    m = sg.Model("hyvarinen_score_matching", hessian=hessian)
    p = declare_mlp(m, [2, 6, 6, 1])
    i = declare_inputs(m, {"x": ("n", 2)})
    loss, out = _hyvarinen(sg, p, i)
    m.output("score", out["score"])
    m.loss(loss)
    rng = np.random.default_rng(10)
    inputs = {"x": normal(rng, 6, 2)}
    return m, _hyvarinen_reference, init_mlp(rng, [2, 6, 6, 1], gain=1.5), inputs


DSM_SIGMA = 0.3


def _dsm(lib, p, i):
    x_t = i["x"] + DSM_SIGMA * i["noise"]
    if lib is torch:
        x_t = x_t.requires_grad_(True)
    s = -grad(lib, mlp(lib, p, x_t, "softplus").sum(), x_t)
    loss = 0.5 * ((DSM_SIGMA * s + i["noise"]) ** 2).sum(axis=1).mean()
    return loss, {"score": s}


def _dsm_reference(p, i):
    return _dsm(torch, p, i)


@family
def denoising_score_matching(hessian=False):
    """Vincent's denoising score matching with an energy-based score: x_t = x + sigma
    noise (an intermediate), s = -grad_{x_t} E(x_t), loss 0.5 E||sigma s + noise||^2.
    E a 2-6-1 softplus MLP."""
    m = sg.Model("denoising_score_matching", hessian=hessian)
    p = declare_mlp(m, [2, 6, 1])
    i = declare_inputs(m, {"x": ("n", 2), "noise": ("n", 2)})
    loss, out = _dsm(sg, p, i)
    m.output("score", out["score"])
    m.loss(loss)
    rng = np.random.default_rng(11)
    inputs = {"x": normal(rng, 5, 2), "noise": normal(rng, 5, 2)}
    return m, _dsm_reference, init_mlp(rng, [2, 6, 1], gain=1.5), inputs


def _ritz(lib, p, i):
    x = i["x"]
    bump = x[:, 0] * (1 - x[:, 0]) * x[:, 1] * (1 - x[:, 1])
    u = bump * mlp(lib, p, x, "tanh")[:, 0]  # u = 0 on the boundary by construction
    du = grad(lib, u.sum(), x)
    energy = (0.5 * (du**2).sum(axis=1) - i["f"] * u).mean()
    return energy, {"u": u}


def _ritz_reference(p, i):
    return _ritz(torch, p, {**i, "x": leaf(i["x"])})


@family
def deep_ritz(hessian=False):
    """The Deep Ritz method (E & Yu): minimise E[0.5 |grad u|^2 - f u] over u = x(1 -
    x) y(1 - y) N(x, y) (the boundary condition built in), f = 2 pi^2 sin sin as data.
    N a 2-6-6-1 tanh MLP."""
    m = sg.Model("deep_ritz", hessian=hessian)
    p = declare_mlp(m, [2, 6, 6, 1])
    i = declare_inputs(m, {"x": ("n", 2), "f": ("n",)})
    loss, out = _ritz(sg, p, i)
    m.output("u", out["u"])
    m.loss(loss)
    rng = np.random.default_rng(12)
    x = rng.uniform(0, 1, (8, 2))
    f = 2 * np.pi**2 * np.sin(np.pi * x[:, 0]) * np.sin(np.pi * x[:, 1])
    return m, _ritz_reference, init_mlp(rng, [2, 6, 6, 1]), {"x": x, "f": f}


def _monotone(lib, p, i):
    x = i["x"]
    u = mlp(lib, p, x, "softplus")[:, 0]
    du0 = grad(lib, u.sum(), x)[:, 0]
    relu = sg.relu if lib is sg else torch.relu
    penalty = (relu(-du0) ** 2).mean()
    return ((u - i["y"]) ** 2).mean() + 10.0 * penalty, {"du0": du0}


def _monotone_reference(p, i):
    return _monotone(torch, p, {**i, "x": leaf(i["x"])})


@family
def monotone_penalty(hessian=False):
    """A shape-constrained regression: u(x) must increase in x0, enforced by the
    penalty mean(relu(-du/dx0)^2) at the data points (some negative slopes there).
    A 2-6-1 softplus MLP."""
    m = sg.Model("monotone_penalty", hessian=hessian)
    p = declare_mlp(m, [2, 6, 1])
    i = declare_inputs(m, {"x": ("n", 2), "y": ("n",)})
    loss, out = _monotone(sg, p, i)
    m.output("du0", out["du0"])
    m.loss(loss)
    rng = np.random.default_rng(13)
    x = rng.uniform(-2, 2, (6, 2))
    inputs = {"x": x, "y": np.tanh(x[:, 0]) + 0.3 * x[:, 1]}
    return m, _monotone_reference, init_mlp(rng, [2, 6, 1], gain=2.0), inputs


# ============================================================= 2. first and second order


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


SECOND_ORDER = [
    "heat_1d",
    "sobolev_fit",
    "hyvarinen_score_matching",
    "double_backprop",
    "wgan_gp",
]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = ["sobolev_fit", "denoising_score_matching", "monotone_penalty"]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# ======================================================================== 3. edges


def _zero_points(p, i):
    """Collocation, initial and boundary points with coordinates exactly 0."""
    xt = i["xt"].copy()
    xt[:3] = 0.0
    x0t = i["x0t"].copy()
    x0t[0] = 0.0
    return {"xt": xt, "x0t": x0t}


def _batch_of_one(p, i):
    return {k: v[:1] for k, v in i.items()}


def _wide(scale):
    return lambda p, i: {k: scale * v for k, v in i.items() if k != "eps"}


EDGES = {
    # points at x = t = 0 (and u(0, 0) = -sin(0) = 0 as the initial target)
    "burgers_points_at_zero": ("burgers_1d", None, _zero_points),
    "wave_points_at_zero": ("wave_1d", None, _zero_points),
    # the boundary at the corner (0, 0) and points on the edges of the square
    "poisson_points_on_the_boundary": (
        "poisson_2d",
        None,
        lambda p, i: {"xy": np.array([[0.0, 0.0], [0.0, 0.5], [1.0, 0.3], [0.5, 0.5]])},
    ),
    # u = 0 exactly there (the bump), its gradient is not
    "ritz_points_on_the_boundary": (
        "deep_ritz",
        None,
        lambda p, i: {
            "x": np.array([[0.0, 0.0], [0.0, 0.4], [1.0, 0.7], [0.3, 0.6]]),
            "f": np.array([0.0, 0.0, 0.0, 15.0]),
        },
    ),
    "heat_batch_of_one": ("heat_1d", None, _batch_of_one),
    "hyvarinen_batch_of_one": ("hyvarinen_score_matching", None, _batch_of_one),
    "wgan_gp_batch_of_one": ("wgan_gp", None, _batch_of_one),
    "hnn_batch_of_one": ("hamiltonian_leapfrog", None, _batch_of_one),
    "allen_cahn_batch_of_one": ("allen_cahn", None, _batch_of_one),
    # softplus far out: |preactivations| up to ~100, softplus'' ~ e^-50 or exactly 0
    "hyvarinen_softplus_at_50": ("hyvarinen_score_matching", None, _wide(50.0)),
    "wgan_gp_softplus_at_50": ("wgan_gp", None, _wide(50.0)),
    "dsm_softplus_at_50": ("denoising_score_matching", None, _wide(50.0)),
    "monotone_softplus_at_50": ("monotone_penalty", None, _wide(50.0)),
    # every slope already positive: the relu penalty and its gradient are exactly 0
    "monotone_no_violation": (
        "monotone_penalty",
        lambda p, i: {"W1": np.abs(p["W1"]), "W2": np.abs(p["W2"])},
        None,
    ),
}


def _edge(case):
    name, params_of, inputs_of = EDGES[case]
    _, reference, params, inputs = FAMILIES[name]()
    if params_of is not None:
        params = {**params, **params_of(params, inputs)}
    if inputs_of is not None:
        inputs = {**inputs, **inputs_of(params, inputs)}
    return name, reference, params, inputs


@pytest.mark.parametrize("case", list(EDGES))
def test_edges_agree_with_pytorch_and_central_differences(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs, tol=1e-5)


SECOND_ORDER_EDGES = [
    "hyvarinen_softplus_at_50",
    "heat_batch_of_one",
    "monotone_no_violation",
]


@pytest.mark.parametrize("case", SECOND_ORDER_EDGES)
def test_edges_second_order(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name, hessian=True)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_wgan_gp_at_an_exactly_zero_input_gradient():
    """A critic whose first layer is all zeros: grad_x D = 0 exactly, the norm is 0
    and its gradient there is 0, as torch's norm backward (no differences: the norm is
    a cone there)."""
    _, reference, params, inputs = FAMILIES["wgan_gp"]()
    params = {**params, "W1": np.zeros_like(params["W1"])}
    module = module_of("wgan_gp")
    check(module, reference, params, inputs)
    outputs, _ = module.forward(params, inputs)
    assert np.array_equal(outputs["norm"], np.zeros(6))


# ============================================ 4. sg.grad semantics in small SciML models
# Each: (build(m, p), torch twin, inputs) over a 2-5-1 MLP's parameters.

_rng = np.random.default_rng(20)
SMALL = init_mlp(_rng, [2, 5, 1])
Q, PM, X2 = _rng.uniform(-1, 1, (4, 1)), _rng.uniform(-1, 1, (4, 1)), normal(_rng, 4, 2)


def _h(lib, p, a, b):
    return mlp(lib, p, cat(lib, [a, b], 1), "tanh").sum()


def _total_derivative(lib, p, i):
    """grad(H(q, p_half), [q, p_half]) where p_half = p - 0.3 dH/dq(q, p) depends on
    q: the q entry is the TOTAL derivative (through p_half too), as in torch."""
    q, pm = i["q"], i["p"]
    p_half = pm - 0.3 * grad(lib, _h(lib, p, q, pm), q)
    g_q, g_half = grad(lib, _h(lib, p, q, p_half), [q, p_half])
    return (g_q**2).mean() + (g_half**3).mean(), {"g_q": g_q}


def _duplicate_wrt(lib, p, i):
    """The same input twice in the list: the same gradient twice."""
    g1, g2 = grad(lib, mlp(lib, p, i["x"], "tanh").sum(), [i["x"], i["x"]])
    return (g1 * g2).sum() + g1.sum(), {}


def _param_then_input(lib, p, i):
    """sg.grad with respect to a parameter, then that gradient's norm differentiated
    with respect to the input (a mixed second derivative in the loss)."""
    x = i["x"]
    fit = ((mlp(lib, p, x, "tanh")[:, 0] - i["y"]) ** 2).mean()
    g_W = grad(lib, fit, p["W1"])
    g_x = grad(lib, (g_W**2).sum(), x)
    return fit + (g_x**2).sum(), {}


def _wrt_hidden_and_output(lib, p, i):
    """Gradients with respect to a hidden layer and to the network's output (both
    intermediates) and the input, in one list and alone."""
    x = i["x"]
    h = act(lib, "tanh", x @ p["W1"].T + p["b1"])
    u = h @ p["W2"].T + p["b2"]
    g_h, g_x = grad(lib, (u**2).sum(), [h, x])
    g_u = grad(lib, lib.sin(u).sum(), u)
    return (g_h**2).sum() + g_x.sum() + (g_u * u).sum(), {"u": u}


def _vjp(lib, p, i):
    """torch's grad(u, x, grad_outputs=v) as sg.grad(sg.sum(u * v), x) (the README's
    recipe); the twin uses grad_outputs itself."""
    x = i["x"]
    u = mlp(lib, p, x, "softplus")
    if lib is sg:
        g = sg.grad(sg.sum(u * i["v"]), x)
    else:
        g = torch.autograd.grad(u, x, grad_outputs=i["v"], create_graph=True)[0]
    return (g**2).sum(), {}


def _hard_constraint(lib, p, i):
    """A hard-constrained output u = where(x0 > 0.5, x0 N(x), N(x)) (sg.where on the
    input), differentiated in x."""
    x = i["x"]
    n = mlp(lib, p, x, "tanh")[:, 0]
    if lib is sg:
        u = sg.where(x[:, 0] > 0.5, n * x[:, 0], n)
    else:
        u = torch.where(x[:, 0] > 0.5, n * x[:, 0], n)
    g = grad(lib, u.sum(), x)
    return (g**2).sum(), {}


def _fourier_features(lib, p, i):
    """A PINN for u'' + u = 0 on Fourier features [sin(x B), cos(x B)] of a 1-D input
    (B a (1, 1) input: NumPy constants are refused in arithmetic with a message naming
    m.input)."""
    x = i["x"]
    z = x @ i["B"]
    u = mlp(lib, p, cat(lib, [lib.sin(z), lib.cos(z)], 1), "tanh")
    du = grad(lib, u.sum(), x)
    d2u = grad(lib, du.sum(), x)
    return ((d2u + u) ** 2).mean(), {}


SEMANTICS = {
    "total_derivative": (_total_derivative, {"q": Q, "p": PM}),
    "duplicate_wrt": (_duplicate_wrt, {"x": X2}),
    "param_then_input": (_param_then_input, {"x": X2, "y": Q[:, 0]}),
    "wrt_hidden_and_output": (_wrt_hidden_and_output, {"x": X2}),
    "vjp_grad_outputs": (_vjp, {"x": X2, "v": Q}),
    "hard_constraint": (_hard_constraint, {"x": np.abs(X2) % 1.0}),
    "fourier_features": (_fourier_features, {"x": Q, "B": np.array([[2.0]])}),
}
LEAVES = {"q", "p", "x"}  # the inputs torch differentiates


@pytest.mark.parametrize("case", list(SEMANTICS))
def test_grad_semantics_agree_with_pytorch_and_central_differences(case):
    fn, inputs = SEMANTICS[case]
    m = sg.Model(case)
    p = declare_mlp(m, [2, 5, 1])
    i = {k: m.input(k, ("n",) + v.shape[1:]) for k, v in inputs.items() if k != "B"}
    if "B" in inputs:
        i["B"] = m.input("B", (1, 1))
    loss, outputs = fn(sg, p, i)
    for k, v in outputs.items():
        m.output(k, v)
    m.loss(loss)

    def reference(tp, ti):
        return fn(torch, tp, {k: leaf(v) if k in LEAVES else v for k, v in ti.items()})

    module = compile_module(m)
    check(module, reference, SMALL, inputs)
    assert_matches_central_differences(module, SMALL, inputs)


def _steady(lib, p, x, t, allow_unused=True):
    """A steady-state network u(x) (t unused) in a heat residual u_t - 0.1 u_xx = 1:
    u_t by sg.grad(..., allow_unused=True) is zeros, where torch gives None."""
    u = mlp(lib, p, cat(lib, [x, x**2], 1), "tanh")
    if lib is sg:
        u_x, u_t = sg.grad(sg.sum(u), [x, t], allow_unused=allow_unused)
    else:
        u_x, u_t = torch.autograd.grad(
            u.sum(), [x, t], create_graph=True, allow_unused=True
        )
        assert u_t is None
        u_t = torch.zeros_like(t)
    u_xx = grad(lib, u_x.sum(), x)
    return ((u_t - 0.1 * u_xx - 1.0) ** 2).mean(), {"u_t": u_t}


def test_an_input_the_network_ignores_gives_zeros_with_allow_unused():
    m = sg.Model("steady_heat")
    p = declare_mlp(m, [2, 5, 1])
    x, t = m.input("x", ("n", 1)), m.input("t", ("n", 1))
    loss, out = _steady(sg, p, x, t)
    m.output("u_t", out["u_t"])
    m.loss(loss)
    inputs = {"x": Q, "t": PM}

    def reference(tp, ti):
        return _steady(torch, tp, leaf(ti["x"]), leaf(ti["t"]))

    module = compile_module(m)
    check(module, reference, SMALL, inputs)
    assert_matches_central_differences(module, SMALL, inputs)
    outputs, _ = module.forward(SMALL, inputs)
    assert np.array_equal(outputs["u_t"], np.zeros((4, 1)))
    with pytest.raises(sg.ModelError, match="does not use t.*allow_unused=True"):
        _steady(sg, p, x, t, allow_unused=False)
