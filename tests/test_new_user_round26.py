"""Round 26 of new-user models: PyTorch models that use
torch.autograd.grad(..., create_graph=True), ported to sg.grad (commit 1eb62b8), with
PyTorch (float64) and central finite differences as the judges. Families: a heat
equation PINN over 2-D inputs (x, t) with u_xx as the x column of the gradient of a
gradient's column; Burgers with x and t separate inputs (a list wrt), a sin network, a
learned viscosity and the mixed partial u_xt; KdV's third derivative u_xxx by three
nested sg.grad; a 3-D Poisson Laplacian summed from per-coordinate second derivatives;
a Lagrangian neural network (the Hessian in qd and the mixed block by per-row sg.grad,
stacked, the acceleration by a batched solve); exact score matching (the Jacobian's
trace); sliced score matching of a logsumexp energy (score = -dE/dx, random
projections as inputs: third derivatives of E); an R1 gradient penalty on real data
with a leaky-relu critic by sg.maximum; a contractive autoencoder (Jacobian norm of a
named m.let code); second-order MAML with two inner SGD steps over a list of weights;
force matching of a Morse pair potential through int64 pair gathers (forces =
-dE/dpos, a scatter differentiated again); input-gradient regularization of a
log_softmax / take_along_axis classifier; input-gradient penalties through where,
maximum, relu, abs, clip (a learned bound), softplus, softmax, logsumexp, max, through
sort, cumsum, reflect pad, sliding windows, einsum, concatenate, stack, argsort
gathers and segment_sum, and through slogdet and solve (wrt an intermediate matrix and
an input vector); gradients of values that do not use wrt or use it only through
stop_gradient. Also: Hessians (fourth derivatives) of eight families, sizes 1 and 2 of
the symbolic dims, unrolled code, structurally identical expressions as different
targets (as torch), sg.grad(y, y), compile times (all under 2 s; the hessian build of
sliced score matching is the slowest at ~1.9 s), determinism, `symgrad build`/`check`
of a user wave-equation PINN file, and the errors of torch's spellings.

Every family agrees with torch to ~1e-9, first and second order, and with central
differences. Found and fixed: sg.grad(y, X[:, 0]), where y uses X but not that new
slice, silently gave zeros where torch raises "not have been used in the graph" (now
an error naming sg.grad(y, X)[:, 0]; allow_unused=True for zeros); torch's
grad_outputs=, outputs= and inputs= got Python's bare "unexpected keyword argument";
sg.grad([y1, y2], x) said "needs sg expressions"; the gradient of a column of a
gradient built a one-hot (n, 2) array and matmuled it in (now W1[:, 0] broadcast, by
optimize._one_line_product); tanh'' wrote its negation as separate `*= -1.0` passes
(now the scale of a matrix product's operand goes on the product, and a 0-d constant
times a row being broadcast folds, so -2 lands on a row). Not a
bug but a trap met on the way: `hessian()` orders its rows by PARAMS (declaration
order), not by the order of the params dict passed in; and a model named `grad_*` is
refused as "reserved for generated code".
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    check,
    compile_module,
    normal,
    run_cli,
)

import symgrad as sg
from symgrad.cli import generate
from symgrad.verify import load_source

torch = pytest.importorskip("torch")
F = torch.nn.functional

# ===================================================================== 1. model families

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module


def _tg(y, x):
    """torch.autograd.grad(y, x, create_graph=True) of one tensor."""
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    return g


def _mlp_params(rng, sizes, scale=0.8):
    """W1, b1, W2, b2, ... for an MLP of the given layer sizes (nn.Linear's layout)."""
    params = {}
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False), 1):
        params[f"W{k}"] = normal(rng, n_out, n_in, scale=scale)
        params[f"b{k}"] = normal(rng, n_out, scale=0.3)
    return params


def _declare_mlp(m, sizes):
    return [
        (m.param(f"W{k}", (n_out, n_in)), m.param(f"b{k}", (n_out,)))
        for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False), 1)
    ]


def _mlp(layers, h, act):
    """act between layers, none after the last (sg or torch alike)."""
    for k, (W, b) in enumerate(layers):
        h = h @ W.T + b
        if k < len(layers) - 1:
            h = act(h)
    return h


def _torch_layers(p, n):
    return [(p[f"W{k}"], p[f"b{k}"]) for k in range(1, n + 1)]


@family
def heat_pinn_2d(hessian=False):
    """The heat equation u_t = 0.3 u_xx over 2-D inputs X = (x, t): u_t is column 1 of
    the gradient in X, u_xx the x column of the gradient of the x column (a gradient
    of a slice of a gradient), an initial condition on t = 0 points."""
    rng = np.random.default_rng(0)
    m = sg.Model("heat_pinn_2d", hessian=hessian)
    X, X0 = m.input("X", ("n", 2)), m.input("X0", ("n0", 2))
    u0 = m.input("u0", ("n0",))
    layers = _declare_mlp(m, [2, 5, 1])
    u = _mlp(layers, X, sg.tanh)
    du = sg.grad(sg.sum(u), X)
    u_t = du[:, 1]
    u_xx = sg.grad(sg.sum(du[:, 0]), X)[:, 0]
    residual = m.output("residual", u_t - 0.3 * u_xx)
    fit = _mlp(layers, X0, sg.tanh)[:, 0] - u0
    m.loss(sg.mean(residual**2) + sg.mean(fit**2))

    def reference(p, i):
        X = i["X"].clone().requires_grad_()
        layers = _torch_layers(p, 2)
        u = _mlp(layers, X, torch.tanh)
        du = _tg(u.sum(), X)
        u_xx = _tg(du[:, 0].sum(), X)[:, 0]
        residual = du[:, 1] - 0.3 * u_xx
        fit = _mlp(layers, i["X0"], torch.tanh)[:, 0] - i["u0"]
        return (residual**2).mean() + (fit**2).mean(), {"residual": residual}

    params = _mlp_params(rng, [2, 5, 1])
    X0 = np.stack([rng.uniform(-1, 1, 3), np.zeros(3)], axis=1)
    inputs = {"X": rng.uniform(-1, 1, (4, 2)), "X0": X0, "u0": np.sin(np.pi * X0[:, 0])}
    return m, reference, params, inputs


@family
def burgers_pinn_separate_inputs(hessian=False):
    """Burgers' u_t + u u_x - nu u_xx with x and t separate (n, 1) inputs (the usual
    PINN code: each requires_grad, concatenated into the network), a SIREN-like sin
    activation, the mixed partial u_xt as an output and a learned viscosity."""
    rng = np.random.default_rng(1)
    m = sg.Model("burgers_pinn_separate_inputs", hessian=hessian)
    x, t = m.input("x", ("n", 1)), m.input("t", ("n", 1))
    log_nu = m.param("log_nu", ())
    layers = _declare_mlp(m, [2, 6, 1])
    u = _mlp(layers, sg.concatenate([x, t], axis=1), sg.sin)
    u_x, u_t = sg.grad(sg.sum(u), [x, t])
    u_xx = sg.grad(sg.sum(u_x), x)
    m.output("u_xt", sg.grad(sg.sum(u_x), t))
    residual = u_t + u * u_x - sg.exp(log_nu) * u_xx
    m.loss(sg.mean(residual**2))

    def reference(p, i):
        x, t = i["x"].clone().requires_grad_(), i["t"].clone().requires_grad_()
        u = _mlp(_torch_layers(p, 2), torch.cat([x, t], 1), torch.sin)
        u_x, u_t = torch.autograd.grad(u.sum(), [x, t], create_graph=True)
        u_xx = _tg(u_x.sum(), x)
        u_xt = _tg(u_x.sum(), t)
        residual = u_t + u * u_x - p["log_nu"].exp() * u_xx
        return (residual**2).mean(), {"u_xt": u_xt}

    params = {"log_nu": np.array(-1.5), **_mlp_params(rng, [2, 6, 1])}  # PARAMS order
    inputs = {"x": rng.uniform(-1, 1, (5, 1)), "t": rng.uniform(0, 1, (5, 1))}
    return m, reference, params, inputs


@family
def kdv_third_derivative(hessian=False):
    """Korteweg-de Vries u_t + 6 u u_x + u_xxx = 0: a third derivative in x by three
    nested sg.grad, a silu network."""
    rng = np.random.default_rng(2)
    m = sg.Model("kdv_third_derivative", hessian=hessian)
    X = m.input("X", ("n", 2))
    layers = _declare_mlp(m, [2, 4, 1])
    u = _mlp(layers, X, sg.silu)[:, 0]
    du = sg.grad(sg.sum(u), X)
    u_xx = sg.grad(sg.sum(du[:, 0]), X)[:, 0]
    u_xxx = sg.grad(sg.sum(u_xx), X)[:, 0]
    residual = m.output("residual", du[:, 1] + 6 * u * du[:, 0] + u_xxx)
    m.loss(sg.mean(residual**2))

    def reference(p, i):
        X = i["X"].clone().requires_grad_()
        u = _mlp(_torch_layers(p, 2), X, F.silu)[:, 0]
        du = _tg(u.sum(), X)
        u_xx = _tg(du[:, 0].sum(), X)[:, 0]
        u_xxx = _tg(u_xx.sum(), X)[:, 0]
        residual = du[:, 1] + 6 * u * du[:, 0] + u_xxx
        return (residual**2).mean(), {"residual": residual}

    return m, reference, _mlp_params(rng, [2, 4, 1]), {"X": normal(rng, 4, 2)}


@family
def poisson_3d_laplacian(hessian=False):
    """-Laplacian(u) = f in 3-D, the Laplacian as the sum of the three second
    derivatives (one sg.grad per coordinate), a softplus network, f = sum(sin)."""
    rng = np.random.default_rng(3)
    m = sg.Model("poisson_3d_laplacian", hessian=hessian)
    X = m.input("X", ("n", 3))
    layers = _declare_mlp(m, [3, 5, 1])
    u = _mlp(layers, X, sg.softplus)
    du = sg.grad(sg.sum(u), X)
    lap = sum(sg.grad(sg.sum(du[:, k]), X)[:, k] for k in range(3))
    m.output("laplacian", lap)
    m.loss(sg.mean((lap + sg.sum(sg.sin(X), axis=1)) ** 2))

    def reference(p, i):
        X = i["X"].clone().requires_grad_()
        u = _mlp(_torch_layers(p, 2), X, F.softplus)
        du = _tg(u.sum(), X)
        lap = sum(_tg(du[:, k].sum(), X)[:, k] for k in range(3))
        return ((lap + X.sin().sum(1)) ** 2).mean(), {"laplacian": lap}

    return m, reference, _mlp_params(rng, [3, 5, 1]), {"X": normal(rng, 4, 3)}


@family
def lagrangian_nn(hessian=False):
    """Lagrangian neural network (Cranmer et al.): L(q, qd) = |qd|^2 / 2 + MLP; the
    Hessian in qd and the mixed q-qd block by one sg.grad per row, stacked, and the
    acceleration qdd = H^-1 (dL/dq - M qd) by a batched solve, fit to observations."""
    rng = np.random.default_rng(4)
    m = sg.Model("lagrangian_nn", hessian=hessian)
    q, qd = m.input("q", ("B", 2)), m.input("qd", ("B", 2))
    qdd_obs = m.input("qdd", ("B", 2))
    layers = _declare_mlp(m, [4, 5, 1])
    L = sg.sum(qd**2) / 2 + sg.sum(_mlp(layers, sg.concatenate([q, qd], 1), sg.tanh))
    dL_dq, dL_dqd = sg.grad(L, [q, qd])
    rows = [sg.grad(sg.sum(dL_dqd[:, k]), [qd, q]) for k in range(2)]
    H = sg.stack([r[0] for r in rows], axis=1)  # (B, 2, 2): d2L/dqd dqd
    M = sg.stack([r[1] for r in rows], axis=1)  # d2L/dqd dq
    rhs = dL_dq - sg.einsum("bij,bj->bi", M, qd)
    qdd = m.output("qdd_pred", sg.solve(H, rhs[..., None])[..., 0])
    m.loss(sg.mean((qdd - qdd_obs) ** 2))

    def reference(p, i):
        q, qd = i["q"].clone().requires_grad_(), i["qd"].clone().requires_grad_()
        net = _mlp(_torch_layers(p, 2), torch.cat([q, qd], 1), torch.tanh)
        L = (qd**2).sum() / 2 + net.sum()
        dL_dq, dL_dqd = torch.autograd.grad(L, [q, qd], create_graph=True)
        rows = [
            torch.autograd.grad(dL_dqd[:, k].sum(), [qd, q], create_graph=True)
            for k in range(2)
        ]
        H = torch.stack([r[0] for r in rows], 1)
        M = torch.stack([r[1] for r in rows], 1)
        rhs = dL_dq - torch.einsum("bij,bj->bi", M, qd)
        qdd = torch.linalg.solve(H, rhs[..., None])[..., 0]
        return ((qdd - i["qdd"]) ** 2).mean(), {"qdd_pred": qdd}

    params = _mlp_params(rng, [4, 5, 1], scale=0.4)
    inputs = {k: normal(rng, 3, 2) for k in ("q", "qd", "qdd")}
    return m, reference, params, inputs


@family
def exact_score_matching(hessian=False):
    """Hyvarinen score matching: E[|s(x)|^2 / 2 + tr(ds/dx)], the trace of the score
    network's Jacobian by one sg.grad per dimension (the diagonal entries), gelu."""
    rng = np.random.default_rng(5)
    m = sg.Model("exact_score_matching", hessian=hessian)
    x = m.input("x", ("B", 3))
    layers = _declare_mlp(m, [3, 6, 3])
    s = _mlp(layers, x, sg.gelu)
    trace = sum(sg.grad(sg.sum(s[:, k]), x)[:, k] for k in range(3))
    m.output("trace", trace)
    m.loss(sg.mean(0.5 * sg.sum(s**2, axis=1) + trace))

    def reference(p, i):
        x = i["x"].clone().requires_grad_()
        s = _mlp(_torch_layers(p, 2), x, F.gelu)
        trace = sum(_tg(s[:, k].sum(), x)[:, k] for k in range(3))
        return (0.5 * (s**2).sum(1) + trace).mean(), {"trace": trace}

    return m, reference, _mlp_params(rng, [3, 6, 3]), {"x": normal(rng, 4, 3)}


@family
def sliced_score_matching_energy(hessian=False):
    """Sliced score matching of an energy-based model: the score is -dE/dx of an
    energy with a logsumexp (a mixture of learned centres), random projections v as
    an input, the Jacobian-vector term v . d(v . s)/dx: a third derivative of E."""
    rng = np.random.default_rng(6)
    m = sg.Model("sliced_score_matching_energy", hessian=hessian)
    x, v = m.input("x", ("B", 2)), m.input("v", ("B", 2))
    mu = m.param("mu", (3, 2))
    log_s = m.param("log_s", (3,))
    d2 = sg.sum((x[:, None, :] - mu[None]) ** 2, axis=2)  # (B, 3)
    E = -sg.logsumexp(-0.5 * d2 / sg.exp(2 * log_s) - 2 * log_s, axis=1)
    score = -sg.grad(sg.sum(E), x)
    vs = sg.sum(v * score, axis=1)
    jvp = sg.sum(v * sg.grad(sg.sum(vs), x), axis=1)
    m.output("score", score)
    m.loss(sg.mean(jvp + 0.5 * vs**2))

    def reference(p, i):
        x = i["x"].clone().requires_grad_()
        d2 = ((x[:, None, :] - p["mu"][None]) ** 2).sum(2)
        E = -torch.logsumexp(
            -0.5 * d2 / torch.exp(2 * p["log_s"]) - 2 * p["log_s"], dim=1
        )
        score = -_tg(E.sum(), x)
        vs = (i["v"] * score).sum(1)
        jvp = (i["v"] * _tg(vs.sum(), x)).sum(1)
        return (jvp + 0.5 * vs**2).mean(), {"score": score}

    params = {"mu": normal(rng, 3, 2), "log_s": normal(rng, 3, scale=0.2)}
    return m, reference, params, {"x": normal(rng, 4, 2), "v": normal(rng, 4, 2)}


@family
def r1_gan_leaky_relu(hessian=False):
    """StyleGAN's R1 penalty (gamma / 2 * E|dD/dx|^2 on real data only) beside the
    non-saturating loss; a leaky-relu critic written as sg.maximum(h, 0.2 h)."""
    rng = np.random.default_rng(7)
    m = sg.Model("r1_gan_leaky_relu", hessian=hessian)
    real, fake = m.input("real", ("B", 3)), m.input("fake", ("B", 3))
    layers = _declare_mlp(m, [3, 6, 1])

    def critic(z):
        return _mlp(layers, z, lambda h: sg.maximum(h, 0.2 * h))[:, 0]

    d_real = critic(real)
    g = sg.grad(sg.sum(d_real), real)
    r1 = 5.0 * sg.mean(sg.sum(g**2, axis=1))
    m.loss(sg.mean(sg.softplus(-d_real)) + sg.mean(sg.softplus(critic(fake))) + r1)

    def reference(p, i):
        layers = _torch_layers(p, 2)

        def critic(z):
            return _mlp(layers, z, lambda h: F.leaky_relu(h, 0.2))[:, 0]

        real = i["real"].clone().requires_grad_()
        d_real = critic(real)
        g = _tg(d_real.sum(), real)
        r1 = 5.0 * (g**2).sum(1).mean()
        loss = F.softplus(-d_real).mean() + F.softplus(critic(i["fake"])).mean() + r1
        return loss, {}

    params = _mlp_params(rng, [3, 6, 1])
    return m, reference, params, {"real": normal(rng, 4, 3), "fake": normal(rng, 4, 3)}


@family
def contractive_autoencoder(hessian=False):
    """Contractive autoencoder: reconstruction plus the squared Frobenius norm of the
    encoder's Jacobian, one sg.grad per code unit of the named hidden code."""
    rng = np.random.default_rng(8)
    m = sg.Model("contractive_autoencoder", hessian=hessian)
    x = m.input("x", ("B", 3))
    We, be = m.param("We", (2, 3)), m.param("be", (2,))
    Wd, bd = m.param("Wd", (3, 2)), m.param("bd", (3,))
    h = m.let("h", sg.sigmoid(x @ We.T + be))
    recon = h @ Wd.T + bd
    jac = sum(sg.sum(sg.grad(sg.sum(h[:, j]), x) ** 2) for j in range(2))
    m.output("jacobian_norm2", jac)
    m.loss(sg.mean((recon - x) ** 2) + 0.1 * jac / x.shape[0])

    def reference(p, i):
        x = i["x"].clone().requires_grad_()
        h = torch.sigmoid(x @ p["We"].T + p["be"])
        recon = h @ p["Wd"].T + p["bd"]
        jac = sum((_tg(h[:, j].sum(), x) ** 2).sum() for j in range(2))
        loss = ((recon - x) ** 2).mean() + 0.1 * jac / x.shape[0]
        return loss, {"jacobian_norm2": jac}

    params = {
        "We": normal(rng, 2, 3),
        "be": normal(rng, 2),
        "Wd": normal(rng, 3, 2),
        "bd": normal(rng, 3),
    }
    return m, reference, params, {"x": normal(rng, 4, 3)}


@family
def maml_two_inner_steps(hessian=False):
    """Second-order MAML on sine regression: two inner SGD steps on the support set,
    W' = W - lr * sg.grad(inner_loss, W) for every weight (a list), and the outer
    loss at the adapted weights on the query set."""
    rng = np.random.default_rng(9)
    m = sg.Model("maml_two_inner_steps", hessian=hessian)
    xs, ys = m.input("xs", ("k", 1)), m.input("ys", ("k", 1))
    xq, yq = m.input("xq", ("q", 1)), m.input("yq", ("q", 1))
    weights = [w for layer in _declare_mlp(m, [1, 5, 1]) for w in layer]

    def net(ws, z):
        return _mlp([ws[0:2], ws[2:4]], z, sg.tanh)

    for _ in range(2):
        inner = sg.mean((net(weights, xs) - ys) ** 2)
        weights = [
            w - 0.1 * g for w, g in zip(weights, sg.grad(inner, weights), strict=True)
        ]
    m.loss(sg.mean((net(weights, xq) - yq) ** 2))

    def reference(p, i):
        ws = [p[k] for k in ("W1", "b1", "W2", "b2")]

        def net(ws, z):
            return _mlp([ws[0:2], ws[2:4]], z, torch.tanh)

        for _ in range(2):
            inner = ((net(ws, i["xs"]) - i["ys"]) ** 2).mean()
            grads = torch.autograd.grad(inner, ws, create_graph=True)
            ws = [w - 0.1 * g for w, g in zip(ws, grads, strict=True)]
        return ((net(ws, i["xq"]) - i["yq"]) ** 2).mean(), {}

    xs_, xq_ = rng.uniform(-3, 3, (4, 1)), rng.uniform(-3, 3, (3, 1))
    inputs = {"xs": xs_, "ys": np.sin(xs_), "xq": xq_, "yq": np.sin(xq_)}
    return m, reference, _mlp_params(rng, [1, 5, 1]), inputs


@family
def morse_force_matching(hessian=False):
    """A learned Morse pair potential over int64 pair lists (gathers of positions),
    forces = -dE/dpos (the gathers' adjoint, a scatter, differentiated again), fit to
    reference forces and energies over several configurations."""
    rng = np.random.default_rng(10)
    m = sg.Model("morse_force_matching", hessian=hessian)
    pos = m.input("pos", ("C", "N", 3))
    i, j = m.input("i", ("P",), dtype="int64"), m.input("j", ("P",), dtype="int64")
    f_ref, e_ref = m.input("f_ref", ("C", "N", 3)), m.input("e_ref", ("C",))
    log_D, a, r0 = m.param("log_D", ()), m.param("a", ()), m.param("r0", ())
    pos_t = sg.transpose(pos, (1, 0, 2))  # (N, C, 3): gather atoms on the first axis
    r = sg.sqrt(sg.sum((pos_t[i] - pos_t[j]) ** 2, axis=2))  # (P, C)
    energy = sg.sum(sg.exp(log_D) * (1 - sg.exp(-a * (r - r0))) ** 2, axis=0)
    forces = m.output("forces", -sg.grad(sg.sum(energy), pos))
    m.loss(sg.mean((forces - f_ref) ** 2) + 0.1 * sg.mean((energy - e_ref) ** 2))

    def reference(p, t):
        pos = t["pos"].clone().requires_grad_()
        pos_t = pos.permute(1, 0, 2)
        r = ((pos_t[t["i"]] - pos_t[t["j"]]) ** 2).sum(2).sqrt()
        energy = (p["log_D"].exp() * (1 - torch.exp(-p["a"] * (r - p["r0"]))) ** 2).sum(
            0
        )
        forces = -_tg(energy.sum(), pos)
        loss = ((forces - t["f_ref"]) ** 2).mean() + 0.1 * (
            (energy - t["e_ref"]) ** 2
        ).mean()
        return loss, {"forces": forces}

    N = 4
    i_, j_ = np.triu_indices(N, 1)
    params = {"log_D": np.array(0.2), "a": np.array(1.3), "r0": np.array(1.1)}
    inputs = {
        "pos": normal(rng, 2, N, 3),
        "i": i_.astype(np.int64),
        "j": j_.astype(np.int64),
        "f_ref": normal(rng, 2, N, 3),
        "e_ref": normal(rng, 2),
    }
    return m, reference, params, inputs


@family
def input_gradient_regularized_classifier(hessian=False):
    """Input-gradient (saliency) regularization, "right for the right reasons": the
    cross-entropy by log_softmax and take_along_axis of int64 labels, plus the squared
    gradient of the log-probabilities' sum in the input (double backprop)."""
    rng = np.random.default_rng(11)
    m = sg.Model("input_gradient_regularized_classifier", hessian=hessian)
    x = m.input("x", ("B", 4))
    labels = m.input("labels", ("B", 1), dtype="int64")
    layers = _declare_mlp(m, [4, 5, 3])
    logp = sg.log_softmax(_mlp(layers, x, sg.tanh), axis=1)
    nll = -sg.mean(sg.take_along_axis(logp, labels, axis=1))
    saliency = sg.grad(sg.sum(logp), x)
    m.output("saliency", saliency)
    m.loss(nll + 0.5 * sg.sum(saliency**2) / x.shape[0])

    def reference(p, i):
        x = i["x"].clone().requires_grad_()
        logp = F.log_softmax(_mlp(_torch_layers(p, 2), x, torch.tanh), dim=1)
        nll = -logp.gather(1, i["labels"]).mean()
        saliency = _tg(logp.sum(), x)
        return nll + 0.5 * (saliency**2).sum() / x.shape[0], {"saliency": saliency}

    inputs = {"x": normal(rng, 5, 4), "labels": rng.integers(0, 3, (5, 1))}
    return m, reference, _mlp_params(rng, [4, 5, 3]), inputs


@family
def penalty_through_piecewise_ops(hessian=False):
    """An input-gradient penalty through every piecewise op: where, maximum, relu, abs,
    clip with learned bounds, softplus, softmax, logsumexp and a max-reduction."""
    rng = np.random.default_rng(12)
    m = sg.Model("penalty_through_piecewise_ops", hessian=hessian)
    x = m.input("x", ("B", 4))
    W, lo = m.param("W", (4, 4)), m.param("lo", ())
    z = x @ W.T
    a = sg.where(z > 0.1, z**2, sg.sin(z)) + sg.abs(z) * sg.relu(z - 0.3)
    b = sg.clip(z, lo, 1.2) * sg.softplus(z) + sg.maximum(z, z[:, ::-1] * 0.5)
    c = sg.softmax(z, axis=1) * sg.logsumexp(z, axis=1, keepdims=True)
    f = sg.sum(a * b + c) + sg.sum(sg.max(z, axis=1) ** 2)
    g = sg.grad(f, x)
    m.output("g", g)
    m.loss(f / x.shape[0] + sg.mean(g**2))

    def reference(p, i):
        x = i["x"].clone().requires_grad_()
        z = x @ p["W"].T
        a = torch.where(z > 0.1, z**2, z.sin()) + z.abs() * torch.relu(z - 0.3)
        b = torch.clamp(z, p["lo"], torch.tensor(1.2, dtype=torch.float64))
        b = b * F.softplus(z) + torch.maximum(z, z.flip(1) * 0.5)
        c = z.softmax(1) * torch.logsumexp(z, 1, keepdim=True)
        f = (a * b + c).sum() + (z.amax(1) ** 2).sum()
        g = _tg(f, x)
        return f / x.shape[0] + (g**2).mean(), {"g": g}

    params = {"W": normal(rng, 4, 4), "lo": np.array(-0.4)}
    return m, reference, params, {"x": normal(rng, 5, 4)}


@family
def penalty_through_structural_ops(hessian=False):
    """A gradient penalty through sort, cumsum, pad (reflect), sliding windows, einsum,
    concatenate, stack, take_along_axis of argsort and segment_sum."""
    rng = np.random.default_rng(13)
    m = sg.Model("penalty_through_structural_ops", hessian=hessian)
    x = m.input("x", ("B", 5))
    seg = m.input("seg", ("B",), dtype="int64")
    w = m.param("w", (3,))
    V = m.param("V", (5, 5))
    h = sg.tanh(x @ V.T)
    s = sg.sort(h, axis=1) * sg.cumsum(h, axis=1)
    windows = sg.sliding_window_view(sg.pad(h, ((0, 0), (1, 1)), mode="reflect"), 3, 1)
    conv = sg.einsum("bti,i->bt", windows, w)  # (B, 5)
    order = sg.argsort(x, axis=1)
    picked = sg.take_along_axis(h, order, axis=1)
    both = (
        sg.concatenate([s, conv], axis=1)
        + sg.stack([picked, h], axis=1).sum(1)[:, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]
    )
    pooled = sg.segment_sum(both, seg, 2)
    f = sg.sum(pooled**2)
    g = sg.grad(f, x)
    m.output("g", g)
    m.loss(f + sg.sum(g**2))

    def reference(p, i):
        x = i["x"].clone().requires_grad_()
        h = torch.tanh(x @ p["V"].T)
        s = torch.sort(h, dim=1, stable=True).values * h.cumsum(1)
        padded = F.pad(h[:, None], (1, 1), mode="reflect")[:, 0]
        conv = torch.einsum("bti,i->bt", padded.unfold(1, 3, 1), p["w"])
        picked = h.gather(1, torch.argsort(x, dim=1, stable=True))
        both = (
            torch.cat([s, conv], 1)
            + torch.stack([picked, h], 1).sum(1)[:, [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]]
        )
        pooled = torch.zeros(2, 10, dtype=torch.float64).index_add(0, i["seg"], both)
        f = (pooled**2).sum()
        g = _tg(f, x)
        return f + (g**2).sum(), {"g": g}

    params = {"w": normal(rng, 3), "V": normal(rng, 5, 5, scale=0.5)}
    inputs = {"x": normal(rng, 4, 5), "seg": np.array([0, 1, 1, 0])}
    return m, reference, params, inputs


@family
def penalty_through_linalg(hessian=False):
    """d log|det A| / dA = A^-T and the gradient of a quadratic form through solve,
    with A = S + P P^T built from a parameter: penalties on those gradients."""
    rng = np.random.default_rng(14)
    m = sg.Model("penalty_through_linalg", hessian=hessian)
    S, b = m.input("S", (3, 3)), m.input("b", (3,))
    P = m.param("P", (3, 2))
    A = S + P @ P.T
    logdet = sg.slogdet(A)[1]
    quad = b @ sg.solve(A, b)
    gA, gb = sg.grad(logdet + quad, [A, b])
    m.output("gA", gA)
    m.loss(sg.sum(gA**2) + sg.sum(gb * b) + logdet)

    def reference(p, i):
        b = i["b"].clone().requires_grad_()
        A = i["S"] + p["P"] @ p["P"].T
        logdet = torch.linalg.slogdet(A)[1]
        gA, gb = torch.autograd.grad(
            logdet + b @ torch.linalg.solve(A, b), [A, b], create_graph=True
        )
        return (gA**2).sum() + (gb * b).sum() + logdet, {"gA": gA}

    a = normal(rng, 3, 3)
    inputs = {"S": a @ a.T + 3 * np.eye(3), "b": normal(rng, 3)}
    return m, reference, {"P": normal(rng, 3, 2)}, inputs


@family
def unused_and_stopped_gradients(hessian=False):
    """sg.grad of values that do not use wrt (zeros: torch's allow_unused gives None)
    and of ones that use it only through stop_gradient (torch's detach), or partly:
    d/dh sum(h.detach() * h) = h.detach(), whose own gradient in W is 0."""
    rng = np.random.default_rng(15)
    m = sg.Model("unused_and_stopped_gradients", hessian=hessian)
    x = m.input("x", ("B", 3))
    W, v = m.param("W", (2, 3)), m.param("v", (2,))
    h = sg.tanh(x @ W.T)
    unused = sg.grad(sg.sum(v**2), h, allow_unused=True)
    stopped = sg.grad(sg.sum(sg.stop_gradient(h) ** 2), [h, W])
    half = sg.grad(sg.sum(sg.stop_gradient(h) * h * v), h)
    m.output("half", half)
    m.loss(sg.sum(unused) + sg.sum(stopped[0]) + sg.sum(stopped[1]) + sg.sum(half**2))

    def reference(p, i):
        h = torch.tanh(i["x"] @ p["W"].T)
        half = _tg((h.detach() * h * p["v"]).sum(), h)
        return (half**2).sum(), {"half": half}

    params = {"W": normal(rng, 2, 3), "v": normal(rng, 2)}
    return m, reference, params, {"x": normal(rng, 4, 3)}


# ===================================================================== 2. against torch

BUILD_SECONDS: dict[str, float] = {}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    start = time.perf_counter()
    module_of(name)
    BUILD_SECONDS.setdefault(name, time.perf_counter() - start)
    if name in STOP_GRADIENT:  # differences see the derivative stop_gradient stops
        _, reference, params, inputs = FAMILIES[name]()
        check(module_of(name), reference, params, inputs)
    else:
        FAMILIES.assert_agrees(name)


STOP_GRADIENT = {"unused_and_stopped_gradients"}
HESSIAN_FAMILIES = [
    "heat_pinn_2d",
    "burgers_pinn_separate_inputs",
    "lagrangian_nn",
    "sliced_score_matching_energy",
    "contractive_autoencoder",
    "maml_two_inner_steps",
    "morse_force_matching",
    "penalty_through_linalg",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_pytorch(name):
    """Hessians of losses that hold gradients: third and fourth derivatives."""
    start = time.perf_counter()
    module_of(name, hessian=True)
    BUILD_SECONDS.setdefault(name + " (hessian)", time.perf_counter() - start)
    FAMILIES.assert_second_order_agrees(name)


def _first(inputs, n, *keys):
    """The inputs with the first n entries (along axis 0) of ``keys``."""
    return {**inputs, **{k: inputs[k][:n] for k in keys}}


SIZES = {  # family -> inputs at other sizes of its symbolic dims (size 1 included)
    "heat_pinn_2d": [lambda i: _first(i, 1, *i), lambda i: _first(i, 2, "X")],
    "burgers_pinn_separate_inputs": [lambda i: _first(i, 1, *i)],
    "kdv_third_derivative": [lambda i: _first(i, 1, *i)],
    "lagrangian_nn": [lambda i: _first(i, 1, *i)],
    "exact_score_matching": [lambda i: _first(i, 1, *i)],
    "r1_gan_leaky_relu": [lambda i: _first(i, 1, *i)],
    "maml_two_inner_steps": [
        lambda i: _first(i, 1, *i),
        lambda i: _first(i, 1, "xs", "ys"),
    ],
    "morse_force_matching": [
        lambda i: _first(i, 1, "pos", "f_ref", "e_ref"),
        lambda i: _first(i, 1, "i", "j"),  # one pair
    ],
    "input_gradient_regularized_classifier": [lambda i: _first(i, 1, *i)],
    "penalty_through_structural_ops": [lambda i: _first(i, 1, *i)],
}


@pytest.mark.parametrize(
    "name, k", [(name, k) for name, cuts in SIZES.items() for k in range(len(cuts))]
)
def test_other_sizes_of_the_symbolic_dims_agree_with_pytorch(name, k):
    _, reference, params, inputs = FAMILIES[name]()
    inputs = SIZES[name][k](inputs)
    check(module_of(name), reference, params, inputs)
    assert_matches_central_differences(module_of(name), params, inputs)


@pytest.mark.parametrize(
    "name", ["heat_pinn_2d", "maml_two_inner_steps", "contractive_autoencoder"]
)
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    start = time.perf_counter()
    module_of(name, unroll=True)
    BUILD_SECONDS.setdefault(name + " (unrolled)", time.perf_counter() - start)
    FAMILIES.assert_unrolled_agrees(name)


def test_no_family_takes_more_than_five_seconds_to_build():
    """Compile times (each family's plain build, measured where it first compiled)."""
    for name in FAMILIES:
        if name not in BUILD_SECONDS:
            start = time.perf_counter()
            module_of(name)
            BUILD_SECONDS[name] = time.perf_counter() - start
    slow = {k: round(v, 2) for k, v in BUILD_SECONDS.items() if v > 5.0}
    assert not slow, slow


# ===================================================================== 3. edge cases


def _twin_expressions():
    """Two separately built tanh(x @ W.T): different tensors in torch, so the gradient
    in the first of sum(h1 * h2) is h2, not 2 h1 (structural sharing must not merge
    a gradient's target with its twin)."""
    m = sg.Model("twin_expressions")
    x, W = m.input("x", ("n", 2)), m.param("W", (3, 2))
    h1, h2 = sg.tanh(x @ W.T), sg.tanh(x @ W.T)
    g = sg.grad(sg.sum(h1 * h2 * h1), h1)
    m.output("g", g)
    m.loss(sg.sum(g * x[:, :1]))

    def reference(p, i):
        h1, h2 = torch.tanh(i["x"] @ p["W"].T), torch.tanh(i["x"] @ p["W"].T)
        g = _tg((h1 * h2 * h1).sum(), h1)
        return (g * i["x"][:, :1]).sum(), {"g": g}

    return m, reference


def test_structurally_identical_expressions_are_different_targets_as_in_torch():
    m, reference = _twin_expressions()
    rng = np.random.default_rng(20)
    params, inputs = {"W": normal(rng, 3, 2)}, {"x": normal(rng, 4, 2)}
    module = compile_module(m)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_gradient_with_respect_to_its_own_value_and_a_later_one():
    """sg.grad(y, y) is 1; the gradient of y in a value computed from y is 0 (torch:
    the later value is not in y's graph, None with allow_unused)."""
    m = sg.Model("own_value")
    W = m.param("W", (3,))
    y = sg.sum(W**3)
    later = sg.grad(y, 2 * y, allow_unused=True)
    m.loss(sg.grad(y, y) * y + sg.sum(later) + sg.grad(y, W) @ W)
    W_ = np.array([1.0, -2.0, 0.5])
    loss, grads = compile_module(m).value_and_grad({"W": W_}, {})
    assert np.isclose(loss, 4 * np.sum(W_**3))
    assert np.allclose(grads["W"], 12 * W_**2)


def test_slice_of_the_gradient_equals_gradient_of_a_slice_declared_first():
    """The porting idiom that works in torch and symgrad alike: slice the input first
    (x = X[:, :1]), build the network from the parts, differentiate the part."""
    m = sg.Model("slice_first")
    X, W = m.input("X", ("n", 2)), m.param("W", (3, 2))
    x0, x1 = X[:, :1], X[:, 1:]
    u = sg.sum(sg.tanh(sg.concatenate([x0, x1], axis=1) @ W.T) ** 2)
    m.output("by_part", sg.grad(u, x0)[:, 0])
    m.output("by_whole", sg.grad(u, X)[:, 0])
    m.loss(u)
    rng = np.random.default_rng(21)
    out, _ = compile_module(m).forward(
        {"W": normal(rng, 3, 2)}, {"X": normal(rng, 4, 2)}
    )
    assert np.allclose(out["by_part"], out["by_whole"]) and np.any(out["by_part"])


def test_gradient_in_a_slice_the_value_does_not_use_is_refused_as_torch_does():
    X_ = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(torch.tanh(X_).sum(), X_[:, 0], create_graph=True)
    m = sg.Model("slice_unused")
    X, W = m.input("X", ("n", 2)), m.param("W", (3, 2))
    u = sg.sum(sg.tanh(X @ W.T))
    with pytest.raises((sg.ModelError, ValueError), match=re.escape("X[:, 0]")):
        m.loss(u + sg.sum(sg.grad(u, X[:, 0]) ** 2))
        compile_module(m)


# ===================================================================== 4. generated code


def _function(source, name):
    body = source[source.index(f"def {name}(") :]
    return body[: body.index("\ndef ", 5)]


def _heat_source():
    return generate(FAMILIES["heat_pinn_2d"]()[0])[0]


def test_gradient_of_a_column_of_a_gradient_builds_no_one_hot_array():
    source = _heat_source()
    for name in ("forward", "value_and_grad"):
        assert "np.zeros((n, 2))" not in _function(source, name), name


def test_no_separate_negation_pass():
    assert "*= -1.0" not in _heat_source()


@pytest.mark.parametrize(
    "name, hessian",
    [("heat_pinn_2d", True), ("morse_force_matching", False), ("lagrangian_nn", False)],
)
def test_generating_twice_gives_identical_source(name, hessian):
    first, _ = generate(FAMILIES[name](hessian=hessian)[0], hessian=hessian)
    second, _ = generate(FAMILIES[name](hessian=hessian)[0], hessian=hessian)
    assert first == second
    assert ("def hvp(params, inputs, v):" in first) == hessian


def test_verify_checks_gradients_in_inputs_against_the_tape():
    """symgrad's own verification (tape + differences) of the families that
    differentiate inputs, intermediates and gathers."""
    from symgrad.verify import verify

    for name in ("lagrangian_nn", "morse_force_matching", "maml_two_inner_steps"):
        model = FAMILIES[name]()[0]
        report = verify(model, module_of(name))
        assert report.ok, (name, report)


# ===================================================================== 5. command line

USER_FILE = """
import symgrad as sg


def build():
    m = sg.Model("user_wave_pinn", doc="u_tt = 4 u_xx on (x, t) points.")
    X = m.input("X", ("n", 2))
    W1, b1 = m.param("W1", (6, 2)), m.param("b1", (6,))
    w2 = m.param("w2", (6,))
    u = sg.tanh(X @ W1.T + b1) @ w2
    du = sg.grad(sg.sum(u), X)
    u_xx = sg.grad(sg.sum(du[:, 0]), X)[:, 0]
    u_tt = sg.grad(sg.sum(du[:, 1]), X)[:, 1]
    m.loss(sg.mean((u_tt - 4 * u_xx) ** 2))
    return m
"""


def test_cli_builds_and_checks_a_user_wave_pinn_file(tmp_path):
    (tmp_path / "wave.py").write_text(USER_FILE)
    built = run_cli(["build", "wave.py", "--out", "gen"], tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    assert re.search(r"user_wave_pinn: .*verified", built.stdout), built.stdout
    source = (tmp_path / "gen" / "user_wave_pinn.py").read_text()
    module = load_source(source, "user_wave_pinn")

    def reference(p, i):
        X = i["X"].clone().requires_grad_()
        u = torch.tanh(X @ p["W1"].T + p["b1"]) @ p["w2"]
        du = _tg(u.sum(), X)
        u_xx = _tg(du[:, 0].sum(), X)[:, 0]
        u_tt = _tg(du[:, 1].sum(), X)[:, 1]
        return ((u_tt - 4 * u_xx) ** 2).mean(), {}

    rng = np.random.default_rng(22)
    params = {"W1": normal(rng, 6, 2), "b1": normal(rng, 6), "w2": normal(rng, 6)}
    for n in (1, 5):
        check(module, reference, params, {"X": normal(rng, n, 2)})
    checked = run_cli(["check", "wave.py", "--out", "gen"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "wave.py").write_text(USER_FILE.replace("4 * u_xx", "9 * u_xx"))
    stale = run_cli(["check", "wave.py", "--out", "gen"], tmp_path)
    assert stale.returncode == 1 and "symgrad build" in stale.stdout + stale.stderr


# ===================================================================== 6. user mistakes


def _declared():
    m = sg.Model("mistakes")
    x, W = m.input("x", ("B", 3)), m.param("W", (2, 3))
    idx = m.input("idx", ("B",), dtype="int64")
    return sg.sum(sg.tanh(x @ W.T)), x, W, idx


@pytest.mark.parametrize(
    "mistake, error, words",
    [
        (lambda y, x, W, idx: sg.grad(x @ W.T, x), sg.ShapeError, "y must be 0-d"),
        (lambda y, x, W, idx: sg.grad(y, idx), sg.ModelError, "idx is an int64 array"),
        (lambda y, x, W, idx: sg.grad(y, "x"), TypeError, "needs sg expressions"),
        (lambda y, x, W, idx: sg.grad(y, x > 0), TypeError, "needs sg expressions"),
        (
            lambda y, x, W, idx: sg.grad(y, x, retain_graph=True),
            TypeError,
            "no retain_graph=",
        ),
        (
            lambda y, x, W, idx: sg.grad(y, 2 * x),
            sg.ModelError,
            "pass allow_unused=True for zeros",
        ),
    ],
)
def test_typical_mistakes_raise_errors_that_say_what_is_wrong(mistake, error, words):
    with pytest.raises(error, match=re.escape(words)):
        mistake(*_declared())


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda y, x: sg.grad(y, x, grad_outputs=1.0), "sg.sum("),
        (lambda y, x: sg.grad(outputs=y, inputs=x), "sg.grad(y, wrt)"),
        (lambda y, x: sg.grad(y, inputs=x), "sg.grad(y, wrt)"),
    ],
)
def test_torchs_other_keywords_of_autograd_grad_name_what_to_write(call, words):
    y, x, W, idx = _declared()
    with pytest.raises(TypeError, match=re.escape(words)):
        call(y, x)


def test_a_list_of_outputs_names_the_sum():
    y, x, W, idx = _declared()
    with pytest.raises(TypeError, match=re.escape("y1 + y2")):
        sg.grad([y, 2 * y], x)
