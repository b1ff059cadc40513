"""Round 12 of new-user models, with PyTorch (float64) as the judge: the README read
claim by claim by a skeptical user (every documented error message, the generated
module's API and guarantees: copies instead of aliases, read-only arguments, dtype
conversions, key and shape errors, determinism across processes, unroll dispatch,
``symgrad check`` staleness and ``--hessian``, the CLI's one-line errors), and fifteen
model families not covered before: robust Cauchy / Tukey regression, a log-logistic
survival curve under censoring, a softmax-simplex portfolio, a factor-analysis
covariance whose 3x3 log-determinant and inverse are taken by cofactors, a bivariate
normal with a 2x2 Cholesky factor (exp diagonal) declared as one SymPy formula, a
sigmoid-smoothed NDCG, a Burgers-equation residual by finite differences on a grid, an
unrolled log-domain Sinkhorn, a mixture of experts with a load-balancing term, a
piecewise-linear interpolant by where (judged by torch.searchsorted), Hermite
polynomial chaos of fifteen scalar coefficients, a symmetric bilinear form, a
three-link arm with atan2 headings, monotone regression by cumulated softplus
increments, and a Parzen density with a softplus bandwidth. Bugs are strict xfails
whose reason is the diagnosis.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from helpers import (
    Families,
    assert_second_order_agrees,
    check,
    compile_module,
    normal,
    rel,
    run_cli,
    spy_unrolled,
)

import symgrad as sg
from symgrad.cli import generate

torch = pytest.importorskip("torch")
F = torch.nn.functional

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()

# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs), data from rng 0.

FAMILIES = Families()
family = FAMILIES.add


@family
def cauchy_tukey_robust_regression(hessian=False):
    """Linear regression under a Cauchy loss log(1 + (r/c)^2) plus Tukey's biweight,
    which is constant past |r| >= c (a where on |r|); a few gross outliers."""
    rng = np.random.default_rng(0)
    c_cauchy, c_tukey = 1.5, 2.5
    m = sg.Model("cauchy_tukey_robust_regression", hessian=hessian)
    X, y = m.input("X", ("B", 3)), m.input("y", ("B",))
    w, b = m.param("w", (3,)), m.param("b", ())
    r = m.output("resid", X @ w + b - y)
    cauchy = sg.log(1 + (r / c_cauchy) ** 2)
    u = (r / c_tukey) ** 2
    tukey = sg.where(
        sg.abs(r) < c_tukey, c_tukey**2 / 6 * (1 - (1 - u) ** 3), c_tukey**2 / 6
    )
    m.loss(sg.mean(cauchy) + 0.5 * sg.mean(tukey))

    def reference(p, i):
        r = i["X"] @ p["w"] + p["b"] - i["y"]
        cauchy = torch.log1p((r / c_cauchy) ** 2)
        u = (r / c_tukey) ** 2
        tukey = torch.where(
            r.abs() < c_tukey,
            c_tukey**2 / 6 * (1 - (1 - u) ** 3),
            torch.full_like(r, c_tukey**2 / 6),
        )
        return cauchy.mean() + 0.5 * tukey.mean(), {"resid": r}

    X = normal(rng, 12, 3)
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * normal(rng, 12)
    y[[2, 7]] += [15.0, -9.0]  # outliers, past Tukey's c
    params = {"w": normal(rng, 3), "b": np.array(0.3)}
    return m, reference, params, {"X": X, "y": y}


@family
def log_logistic_survival_censored(hessian=False):
    """A log-logistic AFT model: scale alpha = softplus(x.w + b) + 0.1, shape beta =
    softplus(raw_beta) + 0.5; events add log f(t), censored times log S(t). The
    survival curve at a grid of times is an output."""
    rng = np.random.default_rng(0)
    m = sg.Model("log_logistic_survival_censored", hessian=hessian)
    X, t = m.input("X", ("B", 2)), m.input("t", ("B",))
    event, grid = m.input("event", ("B",)), m.input("grid", ("G",))
    w, b, raw_beta = m.param("w", (2,)), m.param("b", ()), m.param("raw_beta", ())
    alpha = sg.softplus(X @ w + b) + 0.1
    beta = sg.softplus(raw_beta) + 0.5
    z = (t / alpha) ** beta
    log_f = sg.log(beta) - sg.log(alpha) + (beta - 1) * sg.log(t / alpha)
    log_f = log_f - 2 * sg.log(1 + z)
    log_s = -sg.log(1 + z)
    m.output("curve", 1 / (1 + (grid[None, :] / alpha[:, None]) ** beta))
    m.loss(-sg.mean(event * log_f + (1 - event) * log_s))

    def reference(p, i):
        alpha = F.softplus(i["X"] @ p["w"] + p["b"]) + 0.1
        beta = F.softplus(p["raw_beta"]) + 0.5
        z = (i["t"] / alpha) ** beta
        log_f = torch.log(beta / alpha) + (beta - 1) * torch.log(i["t"] / alpha)
        log_f = log_f - 2 * torch.log1p(z)
        log_s = -torch.log1p(z)
        curve = 1 / (1 + (i["grid"][None, :] / alpha[:, None]) ** beta)
        ll = i["event"] * log_f + (1 - i["event"]) * log_s
        return -ll.mean(), {"curve": curve}

    params = {"w": normal(rng, 2, scale=0.5), "b": np.array(0.4)}
    params["raw_beta"] = np.array(0.7)
    inputs = {
        "X": normal(rng, 9, 2),
        "t": rng.uniform(0.1, 3.0, 9),
        "event": (rng.random(9) < 0.6).astype(float),
        "grid": np.linspace(0.25, 4.0, 5),
    }
    return m, reference, params, inputs


@family
def softmax_simplex_portfolio(hessian=False):
    """Mean-variance portfolio on the simplex: weights softmax(z), returns R @ w, loss
    -mean + gamma * (biased) variance + an entropy bonus."""
    rng = np.random.default_rng(0)
    m = sg.Model("softmax_simplex_portfolio", hessian=hessian)
    R = m.input("R", ("T", 4))
    z = m.param("z", (4,))
    w = m.output("weights", sg.softmax(z))
    ret = R @ w
    mu = sg.mean(ret)
    var = sg.sum((ret - mu) ** 2) / ret.shape[0]  # (T - 1: see the xfail below)
    entropy = -sg.sum(w * sg.log_softmax(z))
    m.loss(-mu + 3.0 * var - 0.01 * entropy)

    def reference(p, i):
        w = torch.softmax(p["z"], 0)
        ret = i["R"] @ w
        entropy = -(w * torch.log_softmax(p["z"], 0)).sum()
        return -ret.mean() + 3.0 * ret.var(correction=0) - 0.01 * entropy, {
            "weights": w
        }

    R = 0.01 * normal(rng, 20, 4) + np.array([0.01, 0.02, 0.0, 0.015])
    return m, reference, {"z": normal(rng, 4)}, {"R": R}


def _entries(A, n):
    return [[A[i, j] for j in range(n)] for i in range(n)]


@family
def factor_covariance_logdet_3x3(hessian=False):
    """Gaussian NLL under Sigma = L L^T + diag(softplus(s)), L lower triangular with an
    exp diagonal (a Cholesky-style factor); log det Sigma and Sigma^-1 by cofactors
    (the adjugate), each entry a 0-d expression picked from the 3x3 matrix."""
    rng = np.random.default_rng(0)
    m = sg.Model("factor_covariance_logdet_3x3", hessian=hessian)
    x = m.input("x", ("B", 3))
    logdiag, off = m.param("logdiag", (3,)), m.param("off", (3,))
    s, mu = m.param("s", (3,)), m.param("mu", (3,))
    d = sg.exp(logdiag)
    zero = 0.0 * off[0]
    L = [[d[0], zero, zero], [off[0], d[1], zero], [off[1], off[2], d[2]]]
    jitter = sg.softplus(s)
    S = [
        [
            sum(L[i][k] * L[j][k] for k in range(3)) + (jitter[i] if i == j else 0.0)
            for j in range(3)
        ]
        for i in range(3)
    ]
    (a, b_, c), (d_, e, f), (g, h, k) = S
    cof = [
        [e * k - f * h, -(d_ * k - f * g), d_ * h - e * g],
        [-(b_ * k - c * h), a * k - c * g, -(a * h - b_ * g)],
        [b_ * f - c * e, -(a * f - c * d_), a * e - b_ * d_],
    ]
    det = a * cof[0][0] + b_ * cof[0][1] + c * cof[0][2]
    m.output("logdet", sg.log(det))
    r = x - mu
    quad = sum(cof[j][i] * r[:, i] * r[:, j] for i in range(3) for j in range(3)) / det
    m.loss(0.5 * sg.mean(quad) + 0.5 * sg.log(det) + 1.5 * math.log(2 * math.pi))

    def reference(p, i):
        Lt = torch.diag(torch.exp(p["logdiag"]))
        idx = torch.tril_indices(3, 3, -1)
        Lt = Lt.index_put((idx[0], idx[1]), p["off"])
        Sigma = Lt @ Lt.T + torch.diag(F.softplus(p["s"]))
        dist = torch.distributions.MultivariateNormal(p["mu"], covariance_matrix=Sigma)
        return -dist.log_prob(i["x"]).mean(), {"logdet": torch.logdet(Sigma)}

    params = {
        "logdiag": normal(rng, 3, scale=0.3),
        "off": normal(rng, 3, scale=0.5),
        "s": normal(rng, 3, scale=0.5),
        "mu": normal(rng, 3, scale=0.2),
    }
    return m, reference, params, {"x": normal(rng, 7, 3)}


@family
def bivariate_normal_cholesky_from_expr(hessian=False):
    """A bivariate normal NLL as one SymPy formula: L = [[e^p, 0], [q, e^r]], Sigma =
    L L^T with its 2x2 determinant a d - b c and inverse by cofactors."""
    rng = np.random.default_rng(0)
    m1, m2, p, q, r, x1, x2 = sp.symbols("m1 m2 p q r x1 x2")
    a, bb, dd = sp.exp(2 * p), sp.exp(p) * q, q**2 + sp.exp(2 * r)
    det = a * dd - bb * bb
    u1, u2 = x1 - m1, x2 - m2
    quad = (dd * u1**2 - 2 * bb * u1 * u2 + a * u2**2) / det
    nll = sp.Rational(1, 2) * (quad + sp.log(det)) + sp.log(2 * sp.pi)
    m = sg.Model.from_expr(
        "bivariate_normal_cholesky_from_expr",
        loss=nll,
        params=[m1, m2, p, q, r],
        inputs=[x1, x2],
        reduce="mean",
        hessian=hessian,
    )

    def reference(P, i):
        L = torch.stack(
            [
                torch.stack([torch.exp(P["p"]), torch.zeros((), dtype=torch.float64)]),
                torch.stack([P["q"], torch.exp(P["r"])]),
            ]
        )
        dist = torch.distributions.MultivariateNormal(
            torch.stack([P["m1"], P["m2"]]), scale_tril=L
        )
        return -dist.log_prob(torch.stack([i["x1"], i["x2"]], 1)).mean(), {}

    params = {
        k: np.array(v)
        for k, v in zip("m1 m2 p q r".split(), rng.normal(size=5), strict=True)
    }
    inputs = {"x1": normal(rng, 11), "x2": normal(rng, 11)}
    return m, reference, params, inputs


@family
def sigmoid_smoothed_ndcg(hessian=False):
    """ApproxNDCG: each item's rank 1 + sum_j sigmoid((s_j - s_i) / tau) over the
    others, gains (2^rel - 1) / log2(1 + rank), normalised by the ideal DCG (an input).
    """
    rng = np.random.default_rng(0)
    tau = 0.5
    m = sg.Model("sigmoid_smoothed_ndcg", hessian=hessian)
    X, gain = m.input("X", ("Q", 5, 3)), m.input("gain", ("Q", 5))
    idcg = m.input("idcg", ("Q",))
    w = m.param("w", (3,))
    s = X @ w  # (Q, 5)
    pair = sg.sigmoid((s[:, None, :] - s[:, :, None]) / tau)  # [q, i, j]: s_j vs s_i
    rank = 0.5 + sg.sum(pair, axis=-1)  # the diagonal adds sigmoid(0) = 1/2
    m.output("rank", rank)
    dcg = sg.sum(gain / (sg.log(1 + rank) / math.log(2)), axis=-1)
    m.loss(1 - sg.mean(dcg / idcg))

    def reference(p, i):
        s = i["X"] @ p["w"]
        diff = (s[:, None, :] - s[:, :, None]) / tau
        rank = 1 + torch.sigmoid(diff).sum(-1) - 0.5
        dcg = (i["gain"] / torch.log2(1 + rank)).sum(-1)
        return 1 - (dcg / i["idcg"]).mean(), {"rank": rank}

    rel_ = rng.integers(0, 4, (3, 5)).astype(float)
    gains = 2.0**rel_ - 1
    ideal = np.sort(gains, axis=1)[:, ::-1]
    idcg = (ideal / np.log2(np.arange(2, 7))).sum(1) + 1e-3
    inputs = {"X": normal(rng, 3, 5, 3), "gain": gains, "idcg": idcg}
    return m, reference, {"w": normal(rng, 3)}, inputs


@family
def burgers_residual_on_a_grid(hessian=False):
    """A physics-informed fit: the field u on a 5 x 8 (t, x) grid is a parameter, the
    viscous Burgers residual u_t + u u_x - nu u_xx by forward / central differences
    (slices), nu = exp(log_nu); initial and boundary data as inputs."""
    rng = np.random.default_rng(0)
    nt, nx, dt, dx = 5, 8, 0.05, 0.2
    m = sg.Model("burgers_residual_on_a_grid", hessian=hessian)
    u0, left, right = (
        m.input("u0", (nx,)),
        m.input("left", (nt,)),
        m.input("right", (nt,)),
    )
    u, log_nu = m.param("u", (nt, nx)), m.param("log_nu", ())
    nu = sg.exp(log_nu)
    c = u[:-1, 1:-1]
    u_t = (u[1:, 1:-1] - c) / dt
    u_x = (u[:-1, 2:] - u[:-1, :-2]) / (2 * dx)
    u_xx = (u[:-1, 2:] - 2 * c + u[:-1, :-2]) / dx**2
    res = m.output("residual", u_t + c * u_x - nu * u_xx)
    data = sg.mean((u[0] - u0) ** 2) + sg.mean((u[:, 0] - left) ** 2)
    data = data + sg.mean((u[:, -1] - right) ** 2)
    m.loss(sg.mean(res**2) * 1e-3 + data + 0.1 * (log_nu + 2.0) ** 2)

    def reference(p, i):
        u, nu = p["u"], torch.exp(p["log_nu"])
        c = u[:-1, 1:-1]
        u_t = (u[1:, 1:-1] - c) / dt
        u_x = (u[:-1, 2:] - u[:-1, :-2]) / (2 * dx)
        u_xx = (u[:-1, 2:] - 2 * c + u[:-1, :-2]) / dx**2
        res = u_t + c * u_x - nu * u_xx
        data = F.mse_loss(u[0], i["u0"]) + F.mse_loss(u[:, 0], i["left"])
        data = data + F.mse_loss(u[:, -1], i["right"])
        loss = (res**2).mean() * 1e-3 + data + 0.1 * (p["log_nu"] + 2.0) ** 2
        return loss, {"residual": res}

    xs = np.linspace(0, 1.4, nx)
    params = {
        "u": np.sin(np.pi * xs)[None, :] + normal(rng, nt, nx, scale=0.1),
        "log_nu": np.array(-1.5),
    }
    inputs = {"u0": np.sin(np.pi * xs), "left": np.zeros(nt), "right": np.zeros(nt)}
    return m, reference, params, inputs


@family
def sinkhorn_log_domain_unrolled(hessian=False):
    """Entropic optimal transport between learnable points x (4, 2) and data y (5, 2),
    6 log-domain Sinkhorn iterations (logsumexp form); the loss is the transport cost
    <P, C> with P = exp((f + g - C) / eps) a b^T in log form."""
    rng = np.random.default_rng(0)
    eps, n, k = 0.5, 4, 5
    m = sg.Model("sinkhorn_log_domain_unrolled", hessian=hessian)
    y, log_b = m.input("y", (k, 2)), m.input("log_b", (k,))
    x = m.param("x", (n, 2))
    log_a = math.log(1 / n)
    C = sg.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=-1)  # (n, k)
    g = 0.0 * log_b
    for _ in range(6):
        f = -eps * sg.logsumexp((g[None, :] - C) / eps + log_b[None, :], axis=1)
        g = -eps * sg.logsumexp((f[:, None] - C) / eps + log_a, axis=0)
    logP = (f[:, None] + g[None, :] - C) / eps + log_a + log_b[None, :]
    P = m.output("plan", sg.exp(logP))
    m.loss(sg.sum(P * C))

    def reference(p, i):
        C = ((p["x"][:, None, :] - i["y"][None, :, :]) ** 2).sum(-1)
        g = torch.zeros(k, dtype=torch.float64)
        for _ in range(6):
            f = -eps * torch.logsumexp((g[None, :] - C) / eps + i["log_b"], dim=1)
            g = -eps * torch.logsumexp((f[:, None] - C) / eps + log_a, dim=0)
        P = torch.exp((f[:, None] + g[None, :] - C) / eps + log_a + i["log_b"])
        return (P * C).sum(), {"plan": P}

    b = rng.uniform(0.5, 1.5, k)
    inputs = {"y": normal(rng, k, 2), "log_b": np.log(b / b.sum())}
    return m, reference, {"x": normal(rng, n, 2)}, inputs


@family
def mixture_of_experts_gating(hessian=False):
    """Three tanh experts mixed by a softmax gate per sample, MSE on the mixture plus
    the Switch-style load-balancing term K * sum_k mean_b(gate)^2."""
    rng = np.random.default_rng(0)
    K, d = 3, 4
    m = sg.Model("mixture_of_experts_gating", hessian=hessian)
    x, y = m.input("x", ("B", d)), m.input("y", ("B",))
    Wg, bg = m.param("Wg", (K, d)), m.param("bg", (K,))
    We, ve = m.param("We", (K, d)), m.param("ve", (K,))
    gate = m.output("gate", sg.softmax(x @ Wg.T + bg, axis=-1))
    experts = ve * sg.tanh(x @ We.T)  # (B, K)
    pred = m.output("pred", sg.sum(gate * experts, axis=-1))
    balance = K * sg.sum(sg.mean(gate, axis=0) ** 2)
    m.loss(sg.mean((pred - y) ** 2) + 0.1 * balance)

    def reference(p, i):
        gate = torch.softmax(i["x"] @ p["Wg"].T + p["bg"], -1)
        experts = p["ve"] * torch.tanh(i["x"] @ p["We"].T)
        pred = (gate * experts).sum(-1)
        balance = K * (gate.mean(0) ** 2).sum()
        return F.mse_loss(pred, i["y"]) + 0.1 * balance, {"gate": gate, "pred": pred}

    params = {
        "Wg": normal(rng, K, d),
        "bg": normal(rng, K, scale=0.1),
        "We": normal(rng, K, d, scale=0.7),
        "ve": normal(rng, K),
    }
    return m, reference, params, {"x": normal(rng, 10, d), "y": normal(rng, 10)}


@family
def piecewise_linear_interpolation(hessian=False):
    """Knot values v at fixed knots lo / hi (inputs); each x picks its segment by a
    where of (x >= lo) & (x < hi) and interpolates linearly. The twin finds segments
    with torch.searchsorted and gathers: an independent formulation."""
    rng = np.random.default_rng(0)
    K = 6
    m = sg.Model("piecewise_linear_interpolation", hessian=hessian)
    x, y = m.input("x", ("B",)), m.input("y", ("B",))
    lo, hi = m.input("lo", (K - 1,)), m.input("hi", (K - 1,))
    v = m.param("v", (K,))
    inside = (x[:, None] >= lo[None, :]) & (x[:, None] < hi[None, :])
    frac = (x[:, None] - lo[None, :]) / (hi - lo)[None, :]
    segs = v[:-1][None, :] + (v[1:] - v[:-1])[None, :] * frac
    pred = m.output("pred", sg.sum(sg.where(inside, segs, 0.0), axis=1))
    smooth = sg.sum((v[2:] - 2 * v[1:-1] + v[:-2]) ** 2)
    m.loss(sg.mean((pred - y) ** 2) + 0.01 * smooth)

    def reference(p, i):
        knots = torch.cat([i["lo"], i["hi"][-1:]])
        seg = torch.searchsorted(knots, i["x"], right=True) - 1
        v = p["v"]
        t = (i["x"] - knots[seg]) / (knots[seg + 1] - knots[seg])
        pred = v[seg] + (v[seg + 1] - v[seg]) * t
        smooth = ((v[2:] - 2 * v[1:-1] + v[:-2]) ** 2).sum()
        return F.mse_loss(pred, i["y"]) + 0.01 * smooth, {"pred": pred}

    knots = np.array([0.0, 0.5, 1.2, 2.0, 2.2, 3.0])
    x = rng.uniform(0.0, 2.999, 15)
    x[:3] = [0.5, 2.0, 1.2]  # exactly on interior knots: the right segment owns them
    inputs = {"x": x, "y": np.sin(2 * x), "lo": knots[:-1], "hi": knots[1:]}
    return m, reference, {"v": normal(rng, K)}, inputs


def _hermite(n, z):
    """Probabilists' Hermite polynomials He_0..He_4 (SymPy or torch alike)."""
    return [1, z, z**2 - 1, z**3 - 3 * z, z**4 - 6 * z**2 + 3][n]


PCE_TERMS = [(i, j) for i in range(5) for j in range(5) if i + j <= 4]  # 15 terms


@family
def polynomial_chaos_15_coefficients(hessian=False):
    """A total-degree-4 Hermite chaos in two inputs: 15 scalar coefficients c_ij,
    least squares against data, declared as one SymPy formula."""
    rng = np.random.default_rng(0)
    z1, z2, y = sp.symbols("z1 z2 y")
    coeffs = [sp.Symbol(f"c{i}{j}") for i, j in PCE_TERMS]
    surrogate = sum(
        c * _hermite(i, z1) * _hermite(j, z2)
        for c, (i, j) in zip(coeffs, PCE_TERMS, strict=True)
    )
    m = sg.Model.from_expr(
        "polynomial_chaos_15_coefficients",
        loss=(surrogate - y) ** 2,
        params=coeffs,
        inputs=[z1, z2, y],
        reduce="mean",
        hessian=hessian,
    )

    def reference(p, i):
        s = sum(
            p[f"c{a}{b}"] * _hermite(a, i["z1"]) * _hermite(b, i["z2"])
            for a, b in PCE_TERMS
        )
        return ((s - i["y"]) ** 2).mean(), {}

    z = normal(rng, 2, 30)
    params = {f"c{i}{j}": np.array(rng.normal(scale=0.5)) for i, j in PCE_TERMS}
    inputs = {"z1": z[0], "z2": z[1], "y": np.exp(0.3 * z[0]) * np.cos(z[1])}
    return m, reference, params, inputs


@family
def symmetric_bilinear_form(hessian=False):
    """Scores x^T A y with A = (B + B^T) / 2 symmetric, BCE with logits on labels, and a
    penalty on the trace of A through an identity input."""
    rng = np.random.default_rng(0)
    m = sg.Model("symmetric_bilinear_form", hessian=hessian)
    x, y, lab = m.input("x", ("N", 4)), m.input("y", ("N", 4)), m.input("lab", ("N",))
    eye = m.input("eye", (4, 4))
    Bm, c = m.param("Bm", (4, 4)), m.param("c", ())
    A = m.let("A", (Bm + Bm.T) / 2)
    score = m.output("score", sg.sum((x @ A) * y, axis=1) + c)
    bce = sg.softplus(score) - lab * score
    m.loss(sg.mean(bce) + 0.05 * sg.sum(A * eye) ** 2)

    def reference(p, i):
        A = (p["Bm"] + p["Bm"].T) / 2
        score = torch.einsum("ni,ij,nj->n", i["x"], A, i["y"]) + p["c"]
        bce = F.binary_cross_entropy_with_logits(score, i["lab"])
        return bce + 0.05 * torch.trace(A) ** 2, {"score": score}

    inputs = {
        "x": normal(rng, 8, 4),
        "y": normal(rng, 8, 4),
        "lab": (rng.random(8) < 0.5).astype(float),
        "eye": np.eye(4),
    }
    return m, reference, {"Bm": normal(rng, 4, 4), "c": np.array(0.1)}, inputs


@family
def three_link_arm_atan2(hessian=False):
    """A three-link planar arm, link lengths softplus(raw) > 0, joint angles from data
    plus learned offsets; each joint's position by cumulative angles, the end
    effector's bearing atan2(py, px) compared by 1 - cos, and its reach."""
    rng = np.random.default_rng(0)
    m = sg.Model("three_link_arm_atan2", hessian=hessian)
    q, bearing = m.input("q", ("B", 3)), m.input("bearing", ("B",))
    reach = m.input("reach", ("B",))
    raw, offset = m.param("raw", (3,)), m.param("offset", (3,))
    lengths = sg.softplus(raw)
    th = q + offset
    a1, a2, a3 = th[:, 0], th[:, 0] + th[:, 1], th[:, 0] + th[:, 1] + th[:, 2]
    px = lengths[0] * sg.cos(a1) + lengths[1] * sg.cos(a2) + lengths[2] * sg.cos(a3)
    py = lengths[0] * sg.sin(a1) + lengths[1] * sg.sin(a2) + lengths[2] * sg.sin(a3)
    phi = m.output("phi", sg.elementwise(lambda b, a: sp.atan2(b, a), py, px))
    dist = sg.sqrt(px**2 + py**2)
    m.loss(sg.mean(1 - sg.cos(phi - bearing)) + sg.mean((dist - reach) ** 2))

    def reference(p, i):
        lengths = F.softplus(p["raw"])
        angles = torch.cumsum(i["q"] + p["offset"], dim=1)
        px = (lengths * torch.cos(angles)).sum(1)
        py = (lengths * torch.sin(angles)).sum(1)
        phi = torch.atan2(py, px)
        dist = torch.hypot(px, py)
        loss = (1 - torch.cos(phi - i["bearing"])).mean()
        return loss + F.mse_loss(dist, i["reach"]), {"phi": phi}

    q = rng.uniform(-np.pi, np.pi, (9, 3))
    inputs = {"q": q, "bearing": rng.uniform(-3, 3, 9), "reach": rng.uniform(1, 2, 9)}
    params = {"raw": normal(rng, 3, scale=0.3), "offset": normal(rng, 3, scale=0.2)}
    return m, reference, params, inputs


@family
def monotone_softplus_increments(hessian=False):
    """Isotonic-style regression: a nondecreasing step function over 7 bins, levels b +
    cumsum(softplus(delta)) by a lower-triangular ones matrix (an input), each sample
    reading its bin's level by a gather."""
    rng = np.random.default_rng(0)
    K = 7
    m = sg.Model("monotone_softplus_increments", hessian=hessian)
    bins, y = m.input("bins", ("B",), dtype="int64"), m.input("y", ("B",))
    tri = m.input("tri", (K, K))
    delta, b = m.param("delta", (K,)), m.param("b", ())
    levels = m.output("levels", b + tri @ sg.softplus(delta))
    m.loss(sg.mean((levels[bins] - y) ** 2))

    def reference(p, i):
        levels = p["b"] + torch.cumsum(F.softplus(p["delta"]), 0)
        return F.mse_loss(levels[i["bins"]], i["y"]), {"levels": levels}

    bins = rng.integers(0, K, 20)
    inputs = {"bins": bins, "y": 0.5 * bins + normal(rng, 20, scale=0.3)}
    inputs["tri"] = np.tril(np.ones((K, K)))
    return m, reference, {"delta": normal(rng, K), "b": np.array(-0.2)}, inputs


@family
def parzen_density_softplus_bandwidth(hessian=False):
    """Leave-nothing-out Parzen log-likelihood of test points under Gaussian kernels at
    learnable centres, bandwidth h = softplus(raw_h) + 0.05, by a logsumexp."""
    rng = np.random.default_rng(0)
    m = sg.Model("parzen_density_softplus_bandwidth", hessian=hessian)
    x = m.input("x", ("N", 2))
    centres, raw_h = m.param("centres", (6, 2)), m.param("raw_h", ())
    h = sg.softplus(raw_h) + 0.05
    d2 = sg.sum((x[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
    ll = sg.logsumexp(-0.5 * d2 / h**2, axis=1) - math.log(6) - 2 * sg.log(h)
    ll = m.output("loglik", ll - math.log(2 * math.pi))
    m.loss(-sg.mean(ll))

    def reference(p, i):
        h = F.softplus(p["raw_h"]) + 0.05
        mix = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=torch.zeros(6, dtype=torch.float64)),
            torch.distributions.Independent(
                torch.distributions.Normal(p["centres"], h.expand(6, 2)), 1
            ),
        )
        ll = mix.log_prob(i["x"])
        return -ll.mean(), {"loglik": ll}

    params = {"centres": normal(rng, 6, 2), "raw_h": np.array(0.2)}
    return m, reference, params, {"x": normal(rng, 10, 2, scale=1.5)}


# ===================================================================== 2. the families


module_of = FAMILIES.module


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch(name):
    _, reference, params, inputs = FAMILIES[name]()
    check(module_of(name), reference, params, inputs)


HESSIAN_FAMILIES = [
    "cauchy_tukey_robust_regression",
    "factor_covariance_logdet_3x3",
    "bivariate_normal_cholesky_from_expr",
    "polynomial_chaos_15_coefficients",
    "sinkhorn_log_domain_unrolled",
    "mixture_of_experts_gating",
    "burgers_residual_on_a_grid",
    "three_link_arm_atan2",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_pytorch(name):
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
    assert_second_order_agrees(module, reference, params, inputs)
    check(module, reference, params, inputs)  # the hessian build keeps the gradient


@pytest.mark.parametrize(
    "name",
    [
        "sigmoid_smoothed_ndcg",
        "mixture_of_experts_gating",
        "three_link_arm_atan2",
    ],
)
def test_unrolled_at_its_sizes_agrees_with_pytorch(name):
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, unroll=True)
    calls, restore = spy_unrolled(module)
    try:
        check(module, reference, params, inputs)
    finally:
        restore()
    assert len(set(calls)) == 1 and calls, calls


def test_a_sample_on_a_knot_and_at_the_last_knot_interpolates_like_searchsorted():
    """x exactly at the left end, an interior knot and just below the right end."""
    _, reference, params, inputs = FAMILIES["piecewise_linear_interpolation"]()
    x = np.array([0.0, 0.5, 2.2, 3.0 - 1e-12, 1.7])
    inputs = {**inputs, "x": x, "y": np.cos(x)}
    check(module_of("piecewise_linear_interpolation"), reference, params, inputs)


def test_tukey_loss_at_the_threshold_is_flat_like_torch():
    """A residual exactly at |r| = c picks the constant branch in both (where's <)."""
    _, reference, params, inputs = FAMILIES["cauchy_tukey_robust_regression"]()
    X = inputs["X"]
    y = X @ params["w"] + params["b"] - np.where(np.arange(12) % 2, 2.5, -2.5)
    check(
        module_of("cauchy_tukey_robust_regression"), reference, params, {"X": X, "y": y}
    )


def test_sinkhorn_plan_has_the_target_marginal():
    """After a g-update the plan's column sums are b exactly (up to round-off): the
    unrolled iterations are the algorithm, not just some function torch agrees with."""
    _, _, params, inputs = FAMILIES["sinkhorn_log_domain_unrolled"]()
    outputs, _ = module_of("sinkhorn_log_domain_unrolled").forward(params, inputs)
    np.testing.assert_allclose(
        outputs["plan"].sum(axis=0), np.exp(inputs["log_b"]), rtol=1e-12
    )


def test_polynomial_chaos_hessian_is_the_gram_matrix_of_its_basis():
    """The loss is quadratic in the 15 coefficients: H = 2/N Phi^T Phi exactly."""
    _, _, params, inputs = FAMILIES["polynomial_chaos_15_coefficients"]()
    module = module_of("polynomial_chaos_15_coefficients", hessian=True)
    names = [f"c{i}{j}" for i, j in PCE_TERMS]
    assert list(module.PARAMS) == names  # PARAMS order is the declaration order
    Phi = np.stack(
        [
            np.ones(30) * _hermite(i, inputs["z1"]) * _hermite(j, inputs["z2"])
            for i, j in PCE_TERMS
        ],
        axis=1,
    )
    expected = 2 / len(inputs["y"]) * Phi.T @ Phi
    assert rel(module.hessian(params, inputs), expected) <= 1e-12


# ===================================================================== 3. the README, claim by claim


def _unbiased_variance_model():
    m = sg.Model("unbiased_variance")
    x = m.param("x", ("T",))
    m.loss(sg.sum((x - sg.mean(x)) ** 2) / (x.shape[0] - 1))
    return m


def test_sizes_in_arithmetic_give_torchs_unbiased_variance():
    module = compile_module(_unbiased_variance_model())

    def reference(p, i):
        return p["x"].var(), {}

    check(module, reference, {"x": normal(np.random.default_rng(0), 6)}, {})


def test_twice_a_size_divides_by_twice_the_size():
    m = sg.Model("half_mean")
    x = m.param("x", ("T",))
    m.loss(sg.sum(x**2) / (2 * x.shape[0]))

    def reference(p, i):
        return (p["x"] ** 2).sum() / (2 * len(p["x"])), {}

    check(compile_module(m), reference, {"x": np.arange(1.0, 5.0)}, {})


def _alias_model():
    """A loss linear in its parameters: the gradients are the inputs themselves, one
    through a transpose."""
    m = sg.Model("alias_probe")
    W, b = m.param("W", ("n", 2)), m.param("b", ("n",))
    X, c = m.input("X", (2, "n")), m.input("c", ("n",))
    m.loss(sg.sum(W.T * X) + sg.sum(b * c))
    return m


def test_value_and_grad_never_returns_the_callers_arrays():
    """README: 'Results never share memory with your arrays'. A user who clips or
    scales gradients in place must not edit their data."""
    module = compile_module(_alias_model())
    rng = np.random.default_rng(0)
    params = {"W": normal(rng, 5, 2), "b": normal(rng, 5)}
    inputs = {"X": normal(rng, 2, 5), "c": normal(rng, 5)}
    kept = {k: v.copy() for k, v in inputs.items()}
    loss, grads = module.value_and_grad(params, inputs)
    np.testing.assert_array_equal(grads["W"], kept["X"].T)  # the values are right
    for g in grads.values():
        g *= 0.5  # in-place gradient scaling
    for k in inputs:
        np.testing.assert_array_equal(inputs[k], kept[k])


def test_forward_and_backward_never_return_the_callers_arrays():
    """The same model through forward + backward (grad_loss stays symbolic there)."""
    module = compile_module(_alias_model())
    rng = np.random.default_rng(1)
    params = {"W": normal(rng, 5, 2), "b": normal(rng, 5)}
    inputs = {"X": normal(rng, 2, 5), "c": normal(rng, 5)}
    _, cache = module.forward(params, inputs)
    grads = module.backward(cache)
    for g in grads.values():
        for a in (*params.values(), *inputs.values()):
            assert not np.shares_memory(g, a)
    assert rel(grads["b"], inputs["c"]) == 0.0 and rel(grads["W"], inputs["X"].T) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.longdouble])
def test_other_float_precisions_are_converted_and_results_are_float64(dtype):
    """README: float32, float16 and longdouble are converted; every result is float64."""
    _, reference, params, inputs = FAMILIES["monotone_softplus_increments"]()
    module = module_of("monotone_softplus_increments")
    cast = {k: np.asarray(v).astype(dtype) for k, v in params.items()}
    loss, grads = module.value_and_grad(cast, inputs)
    outputs, cache = module.forward(cast, inputs)
    assert loss.dtype == np.float64 and outputs["levels"].dtype == np.float64
    assert all(g.dtype == np.float64 for g in grads.values())
    exact = {k: np.asarray(v, dtype=np.float64) for k, v in cast.items()}
    check(module, reference, exact, inputs)  # the converted values, at float64
    expected, _ = module.value_and_grad(exact, inputs)
    assert loss == expected


@pytest.mark.parametrize(
    "value", [np.ones(7, dtype=bool), np.ones(7, dtype=np.int32), np.ones(7, complex)]
)
def test_integer_boolean_and_complex_parameters_are_refused_by_name(value):
    _, _, params, inputs = FAMILIES["monotone_softplus_increments"]()
    with pytest.raises(
        ValueError, match=rf"params\['delta'\]: expected a float array .*{value.dtype}"
    ):
        module_of("monotone_softplus_increments").value_and_grad(
            {**params, "delta": value}, inputs
        )


def _readme_block(start: str) -> str:
    """The body of the README's fenced block whose first line is ``start``."""
    match = re.search(
        r"```(?:python|bash)\n(" + re.escape(start) + r".*?)```", README, re.S
    )
    assert match, start
    return match.group(1)


def test_the_readme_walkthrough_builds_checks_and_trains_like_torch(tmp_path):
    """README: save my_model.py, `symgrad build my_model.py --out generated/`, then run
    the NumPy-only training snippet: five SGD steps whose losses torch reproduces."""
    (tmp_path / "my_model.py").write_text(_readme_block("# my_model.py"))
    command = _readme_block("symgrad build my_model.py").split("#")[0].split()
    built = run_cli(command[1:], tmp_path)
    assert built.returncode == 0, built.stderr
    line = built.stdout.splitlines()[0]
    assert re.match(
        r"seed_mlp: ops forward \d+, backward \d+ \(ratio [\d.]+\), compiled in "
        r"[\d.]+ s \(.*black.*\), verified \(tape .*, fd .*\)",
        line,
    ), line
    assert (tmp_path / "generated" / "seed_mlp.py").exists()
    checked = run_cli(["check", "my_model.py", "--out", "generated/"], tmp_path)
    assert checked.returncode == 0 and "ok: generated/seed_mlp.py" in checked.stdout

    snippet = _readme_block("import numpy as np\nfrom generated import seed_mlp")
    (tmp_path / "train.py").write_text(snippet)
    ran = subprocess.run(
        [sys.executable, "train.py"], cwd=tmp_path, capture_output=True, text=True
    )
    assert ran.returncode == 0, ran.stderr
    losses = [float(line.split()[1]) for line in ran.stdout.splitlines()]

    sys.path.insert(0, str(tmp_path))
    try:
        from generated import seed_mlp  # the module just built
    finally:
        sys.path.remove(str(tmp_path))
    sys.modules.pop("generated", None)
    sys.modules.pop("generated.seed_mlp", None)
    p = {
        k: torch.tensor(v, requires_grad=True)
        for k, v in seed_mlp.init_params(0).items()
    }
    opt = torch.optim.SGD(p.values(), lr=0.1)
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    target = torch.tensor([[0.5]], dtype=torch.float64)
    expected = []
    for _ in range(5):
        h = torch.sigmoid(x @ p["W1"].T + p["b1"])
        loss = F.mse_loss(torch.sigmoid(h @ p["W2"].T + p["b2"]), target)
        expected.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(losses, expected, rtol=1e-12)


def test_the_readme_excerpts_are_lines_of_the_committed_seed_mlp():
    """Each code line the README quotes from generated/seed_mlp.py is there, in order."""
    source = (ROOT / "generated" / "seed_mlp.py").read_text()
    for start in (
        'def value_and_grad(params, inputs):\n    """Return',
        'def value_and_grad(params, inputs):\n    """Return (loss, grads) in one pass: the fast path for training."""\n    W1, b1, W2, b2, x, target, batch = _unpack(params, inputs)\n    if batch',
    ):
        block = _readme_block(start)
        for line in block.splitlines():
            code = line.split("#")[0].rstrip()
            if not code.strip() or code.strip() == "...":
                continue
            assert code.strip() in source, code


def test_the_documented_error_messages_are_the_ones_raised():
    m = sg.Model("errors")
    x = m.input("x", ("batch", 3))
    W, b = m.param("W", (2, 4)), m.param("b", (4,))
    with pytest.raises(sg.ShapeError) as e:
        x @ W.T
    assert str(e.value) == (
        "matmul x @ transpose(W): inner dimensions differ, (batch, 3) @ (4, 2)"
    )
    with pytest.raises(sg.ShapeError) as e:
        x + b
    assert str(e.value) == "cannot broadcast x of shape (batch, 3) with b of shape (4,)"
    with pytest.raises(TypeError, match=r"use sg\.sum"):
        np.sum(x)
    with pytest.raises(sg.UnsupportedError, match=r"complex"):
        generate_loss(lambda w: w * sg.log(-3.0))
    p = sp.Symbol("p")
    with pytest.raises(
        sg.UnsupportedError, match=r"cannot differentiate floor\(p\) with respect to p"
    ):
        generate(sg.Model.from_expr("fl", loss=sp.floor(p), params=[p], inputs=[]))

    seed_mlp = _load_committed("seed_mlp")
    params = seed_mlp.init_params(0)
    inputs = {"x": np.ones((4, 3)), "target": np.ones((5, 1))}
    with pytest.raises(ValueError) as e:
        seed_mlp.value_and_grad(params, inputs)
    assert str(e.value) == (
        "inputs['target']: expected a float array of shape (batch=4, 1), "
        "got float64 array of shape (5, 1)"
    )
    with pytest.raises(KeyError) as e:
        seed_mlp.value_and_grad(params, {"x": np.ones((4, 3))})
    assert e.value.args[0] == "inputs: missing ['target'], unexpected []"
    with pytest.raises(ValueError) as e:
        seed_mlp.forward(params, {"x": np.ones((0, 3)), "target": np.ones((0, 1))})
    assert str(e.value) == "batch=0: a mean over batch needs batch >= 1"


def generate_loss(fn):
    m = sg.Model("one_loss")
    w = m.param("w", ())
    m.loss(fn(w))
    return generate(m)


def _load_committed(name):
    from symgrad.verify import load_source

    return load_source((ROOT / "generated" / f"{name}.py").read_text(), name)


def test_the_tape_quick_start_prints_like_torch():
    from symgrad import tape

    x = tape.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.sum()
    y.backward()
    assert repr(x.grad) == "tensor([1., 1., 1.])"
    xt = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    xt.sum().backward()
    assert repr(x.grad) == repr(xt.grad)


def test_examples_train_generated_losses_agree_to_round_off():
    ran = subprocess.run(
        [sys.executable, "examples/train_generated.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ran.returncode == 0, ran.stderr
    rows = [line.split() for line in ran.stdout.splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert rel(float(row[3]), float(row[5])) <= 1e-12, row


def test_committed_headers_keep_backward_within_1_8_times_forward():
    """README: 'backward is at most 1.8x forward on the built-in models', and the header
    shows the symgrad version and the model name."""
    for path in sorted((ROOT / "generated").glob("*.py")):
        head = path.read_text().splitlines()[:2]
        assert head[0] == (
            f'# Generated by symgrad {sg.__version__} from model "{path.stem}". '
            "Do NOT edit by hand."
        )
        fwd, bwd = map(
            int, re.search(r"forward (\d+), backward (\d+)", head[1]).groups()
        )
        assert bwd <= 1.8 * fwd, (path.name, fwd, bwd)


def test_the_committed_modules_are_fresh():
    """README: CI runs `symgrad check`; on this checkout it passes and writes nothing."""
    before = {p: p.read_bytes() for p in (ROOT / "generated").glob("*.py")}
    done = run_cli(["check"], ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok: generated/") == len(before)
    assert {p: p.read_bytes() for p in (ROOT / "generated").glob("*.py")} == before


MODEL_FILE = """
import symgrad as sg


def build():
    m = sg.Model("{name}", doc="Parzen density, from a file.")
    x = m.input("x", ("N", 2))
    centres, raw_h = m.param("centres", (3, 2)), m.param("raw_h", ())
    h = sg.softplus(raw_h) + 0.05
    d2 = sg.sum((x[:, None, :] - centres[None, :, :]) ** 2, axis=-1)
    m.loss(-sg.mean(sg.logsumexp(-0.5 * d2 / h**2, axis=1) - 2 * sg.log(h)))
    return m
"""


def test_build_is_identical_across_directories_and_hash_seeds(tmp_path):
    """README: no timestamps or absolute paths; identical bytes on every run."""
    sources = []
    for where, seed in (("one", "1"), ("two/deeper", "12345")):
        d = tmp_path / where
        d.mkdir(parents=True)
        (d / "parzen.py").write_text(MODEL_FILE.format(name="parzen_file"))
        done = run_cli(["build", "parzen.py", "--out", "out", "--no-verify"], d, seed)
        assert done.returncode == 0, done.stderr
        sources.append((d / "out" / "parzen_file.py").read_bytes())
    assert sources[0] == sources[1]
    assert str(tmp_path).encode() not in sources[0]
    assert not re.search(rb"20\d\d-\d\d-\d\d|\d\d:\d\d:\d\d", sources[0])


def test_check_with_hessian_finds_a_plain_module_stale(tmp_path):
    (tmp_path / "parzen.py").write_text(MODEL_FILE.format(name="parzen_file"))
    assert (
        run_cli(
            ["build", "parzen.py", "--out", "g", "--no-verify"], tmp_path
        ).returncode
        == 0
    )
    plain = run_cli(["check", "parzen.py", "--out", "g"], tmp_path)
    assert plain.returncode == 0, plain.stdout
    stale = run_cli(["check", "parzen.py", "--out", "g", "--hessian"], tmp_path)
    assert stale.returncode == 1
    assert "+def hvp(params, inputs, v):" in stale.stdout
    assert (
        "stale: g/parzen_file.py (run: symgrad build parzen.py --out g --hessian)"
        in stale.stdout
    )


def test_a_model_failing_verification_writes_nothing_at_all(tmp_path):
    """README: 'nothing is written unless every model passes'. The second model takes
    log(x - 100) of normal data (nan on every draw), so its verification fails; the first,
    valid model must not be written either."""
    (tmp_path / "good.py").write_text(MODEL_FILE.format(name="parzen_good"))
    (tmp_path / "bad.py").write_text(
        "import symgrad as sg\n\n\ndef build():\n"
        '    m = sg.Model("log_of_data")\n'
        '    x, w = m.input("x", ("N",)), m.param("w", ())\n'
        "    m.loss(sg.mean(w * sg.log(x - 100.0)) + w**2)\n"
        "    return m\n"
    )
    done = run_cli(["build", "good.py", "bad.py", "--out", "out"], tmp_path)
    assert done.returncode == 1
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("symgrad: error: ")
    assert "log_of_data" in errors[0] and "sampler" in errors[0], errors
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    (tmp_path / "nob.py").write_text("x = 1\n")
    done = run_cli(["build", "nob.py", "--out", "g", "--debug"], tmp_path)
    assert "Traceback" in done.stderr and done.returncode == 1, done.stderr


def test_debug_before_the_command_shows_the_traceback(tmp_path):
    (tmp_path / "nob.py").write_text("x = 1\n")
    quiet = run_cli(["build", "nob.py", "--out", "g"], tmp_path)
    assert quiet.returncode == 1 and quiet.stderr == (
        "symgrad: error: model file nob.py defines no build() function\n"
    )
    loud = run_cli(["--debug", "build", "nob.py", "--out", "g"], tmp_path)
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def _two_size_model():
    m = sg.Model("two_sizes")
    x, y = m.input("x", ("B", 2)), m.input("y", ("B",))
    w = m.param("w", (2,))
    m.loss(sg.mean((sg.sigmoid(x @ w) - y) ** 2))
    m.unroll(B=1)
    m.unroll(B=3)

    def reference(p, i):
        return F.mse_loss(torch.sigmoid(i["x"] @ p["w"]), i["y"]), {}

    return m, reference


def test_unroll_dispatches_on_exactly_its_sizes():
    """README: value_and_grad calls the unrolled function when its arguments have
    exactly those sizes; other sizes run the vectorized code. All agree with torch."""
    m, reference = _two_size_model()
    module = compile_module(m)
    calls, restore = spy_unrolled(module)
    rng = np.random.default_rng(0)
    try:
        for B, expected in (
            (1, ["_value_and_grad_B_1"]),
            (3, ["_value_and_grad_B_3"]),
            (2, []),
            (4, []),
        ):
            calls.clear()
            params, inputs = {"w": normal(rng, 2)}, {
                "x": normal(rng, B, 2),
                "y": normal(rng, B),
            }
            loss, _ = module.value_and_grad(params, inputs)
            assert calls == expected, (B, calls)
            check(module, reference, params, inputs)
    finally:
        restore()


@pytest.mark.parametrize("n, unrolled", [(32, True), (33, False)])
def test_auto_unrolling_stops_past_32_elements(n, unrolled):
    """README: a model without symbolic dims is unrolled when no array of its
    value_and_grad has more than 32 elements (symgrad.unroll.AUTO_ELEMENTS)."""
    from symgrad.unroll import AUTO_ELEMENTS

    assert AUTO_ELEMENTS == 32
    m = sg.Model(f"auto_{n}")
    w, x = m.param("w", (n,)), m.input("x", (n,))
    m.loss(sg.sum(sg.tanh(w * x)))
    source, _ = generate(m)
    assert ("def _value_and_grad_unrolled" in source) == unrolled

    def reference(p, i):
        return torch.tanh(p["w"] * i["x"]).sum(), {}

    rng = np.random.default_rng(n)
    check(compile_module(m), reference, {"w": normal(rng, n)}, {"x": normal(rng, n)})


def test_unrolling_past_10000_values_is_refused_at_build_time():
    m = sg.Model("too_big")
    x, W = m.input("x", ("B", 50)), m.param("W", (50, 50))
    m.loss(sg.sum(sg.tanh(x @ W.T)))
    m.unroll(B=10)
    with pytest.raises(sg.ModelError, match=r"too large to unroll at B=10.*10000"):
        generate(m)


def test_init_params_is_pytorch_style_deterministic_and_sized():
    """README: U(+-1/sqrt(fan_in)) for 2-D weights and the biases after them, zeros
    otherwise; deterministic per seed; symbolic sizes as keywords."""
    m = sg.Model("init_probe")
    x = m.input("x", ("B", 16))
    W, b = m.param("W", (64, 16)), m.param("b", (64,))
    g, V = m.param("g", (16,)), m.param("V", ("n", 64))
    c, s = m.param("c", ("n",)), m.param("s", ())
    m.loss(sg.sum((sg.tanh(x * g) @ W.T + b) @ V.T + c) * s)
    module = compile_module(m)
    p = module.init_params(seed=3, n=5)
    assert {k: v.shape for k, v in p.items()} == {
        "W": (64, 16),
        "b": (64,),
        "g": (16,),
        "V": (5, 64),
        "c": (5,),
        "s": (),
    }
    for name, fan_in in (("W", 16), ("b", 16), ("V", 64), ("c", 64)):
        bound = 1 / math.sqrt(fan_in)
        assert np.abs(p[name]).max() <= bound, name
        assert np.abs(p[name]).max() >= 0.5 * bound, name  # uniform over the range
    assert not p["g"].any() and p["s"] == 0.0
    again = module.init_params(seed=3, n=5)
    assert all(np.array_equal(p[k], again[k]) for k in p)
    other = module.init_params(seed=4, n=5)
    assert not np.array_equal(p["W"], other["W"])
