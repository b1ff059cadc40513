"""Round 14 of new-user models, with PyTorch (float64) and central finite differences
as the judges: model families not covered before (t-SNE's KL on a fixed point set, a
3PL item-response model on int64 gathers, Tobit censored regression through erfc, an
implicit heat-equation residual with hard boundaries by sg.concatenate, the Bayesian
linear-regression evidence (type-II ML) by 2x2 cofactors and sg.stack, an RBM's
contrastive free energy, Plackett-Luce rankings by a reversed cumsum, an American put
on a binomial tree, a one-compartment oral-dose pharmacokinetic curve with an
absorption lag in sp.Piecewise, Holt's linear exponential smoothing, Lotka-Volterra
by RK2 steps, PPO's clipped surrogate, Barlow Twins with sg.std, a Sharpe / Sortino /
drawdown portfolio, a discrete-time hazard model with an exclusive cumsum, a
Wasserstein-1 distance between histograms by CDF differences, Fermat's principle for
a light path through layers and GloVe's weighted co-occurrence regression), their
Hessians, unrolled code and other (size-1) symbolic sizes, edge cases (ratios exactly
at learned clip bounds, a tied minimum of a cumsum, t exactly at a Piecewise kink,
negative take_along_axis indices, repeated gathers, an extreme unpicked where branch),
physics/statistics checks of optima found with the generated code (Snell's law,
MacKay's evidence fixed point), memory safety of the calls, compile times, and the
command line (build --hessian, check, verify of a user file with a sampler). Bugs are
strict xfails whose reason is the diagnosis.
"""

from __future__ import annotations

import math
import os
import shutil
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
    first_along,
    normal,
    rel,
    spy_unrolled,
    torch_twin,
)

import symgrad as sg
from symgrad.cli import generate

torch = pytest.importorskip("torch")
F = torch.nn.functional

# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs), data from rng 0.

FAMILIES = Families()
family = FAMILIES.add


def _tsne_affinities(rng, n):
    """A symmetric affinity matrix with a zero diagonal summing to 1, and its
    negative entropy sum P log P over the off-diagonal entries."""
    A = rng.random((n, n)) + 0.05
    A = A + A.T
    np.fill_diagonal(A, 0.0)
    P = A / A.sum()
    off = ~np.eye(n, dtype=bool)
    return P, np.array(np.sum(P[off] * np.log(P[off])))


@family
def tsne_kl_embedding(hessian=False):
    """t-SNE: KL(P || Q) with Student-t affinities Q_ij = (1 + d_ij^2)^-1 / Z over
    i != j, written as the constant sum P log P + sum P log1p(d^2) + log Z (sum P = 1,
    P_ii = 0); the twin forms Q and the KL directly."""
    rng = np.random.default_rng(0)
    m = sg.Model("tsne_kl_embedding", hessian=hessian)
    P, negent = m.input("P", ("N", "N")), m.input("negent", ())
    off = m.input("off", ("N", "N"))
    Y = m.param("Y", ("N", 2))
    diff = Y[:, None, :] - Y[None, :, :]
    d2 = m.let("d2", sg.sum(diff**2, axis=-1))
    Z = sg.sum(off / (1 + d2))
    m.loss(negent + sg.sum(P * sg.log1p(d2)) + sg.log(Z))

    def reference(p, i):
        Y = p["Y"]
        d2 = ((Y[:, None, :] - Y[None, :, :]) ** 2).sum(-1)
        mask = ~torch.eye(Y.shape[0], dtype=torch.bool)
        num = 1 / (1 + d2[mask])
        Q = num / num.sum()
        Pm = i["P"][mask]
        return (Pm * (Pm.log() - Q.log())).sum(), {}

    n = 6
    P_, negent_ = _tsne_affinities(rng, n)
    inputs = {"P": P_, "negent": negent_, "off": 1.0 - np.eye(n)}
    return m, reference, {"Y": normal(rng, n, 2)}, inputs


@family
def irt_three_parameter_logistic(hessian=False):
    """Item response theory, 3PL: P(correct) = c + (1 - c) sigmoid(a (theta - b)),
    person ability and item parameters gathered by int64 response lists; identifiability
    by a penalty on the abilities' mean and std."""
    rng = np.random.default_rng(0)
    m = sg.Model("irt_three_parameter_logistic", hessian=hessian)
    person = m.input("person", ("R",), dtype="int64")
    item = m.input("item", ("R",), dtype="int64")
    y = m.input("y", ("R",))
    theta = m.param("theta", ("P",))
    log_a, b, c_logit = (
        m.param("log_a", ("I",)),
        m.param("b", ("I",)),
        m.param("c_logit", ("I",)),
    )
    c = 0.3 * sg.sigmoid(c_logit)
    z = sg.exp(log_a)[item] * (theta[person] - b[item])
    p = m.output("p", c[item] + (1 - c[item]) * sg.sigmoid(z))
    nll = -sg.mean(y * sg.log(p) + (1 - y) * sg.log1p(-p))
    m.loss(nll + sg.mean(theta) ** 2 + (sg.std(theta) - 1) ** 2)

    def reference(p_, i):
        c = 0.3 * torch.sigmoid(p_["c_logit"])
        z = p_["log_a"].exp()[i["item"]] * (
            p_["theta"][i["person"]] - p_["b"][i["item"]]
        )
        p = c[i["item"]] + (1 - c[i["item"]]) * torch.sigmoid(z)
        nll = F.binary_cross_entropy(p, i["y"])
        th = p_["theta"]
        return nll + th.mean() ** 2 + (th.std(unbiased=False) - 1) ** 2, {"p": p}

    P_, I_, R_ = 5, 4, 14
    inputs = {
        "person": rng.integers(0, P_, R_),
        "item": rng.integers(0, I_, R_),
        "y": (rng.random(R_) < 0.6) * 1.0,
    }
    params = {
        "theta": normal(rng, P_),
        "log_a": normal(rng, I_, scale=0.3),
        "b": normal(rng, I_),
        "c_logit": normal(rng, I_),
    }
    return m, reference, params, inputs


@family
def tobit_left_censored(hessian=False):
    """Tobit regression censored at 0: censored rows add log Phi(-mu / sigma) =
    log(erfc(mu / (sigma sqrt 2)) / 2) (a SymPy formula), observed rows the normal
    log density; sg.where on the censoring indicator picks per row."""
    rng = np.random.default_rng(0)
    m = sg.Model("tobit_left_censored", hessian=hessian)
    X, y, cens = m.input("X", ("B", 3)), m.input("y", ("B",)), m.input("cens", ("B",))
    w, b, log_s = m.param("w", (3,)), m.param("b", ()), m.param("log_s", ())
    mu = m.output("mu", X @ w + b)
    s = sg.exp(log_s)
    log_cdf = sg.elementwise(
        lambda u: sp.log(sp.erfc(u / sp.sqrt(2)) / 2), mu / s
    )  # log Phi(-mu/s)
    log_pdf = -0.5 * ((y - mu) / s) ** 2 - log_s - 0.5 * math.log(2 * math.pi)
    m.loss(-sg.mean(sg.where(cens > 0.5, log_cdf, log_pdf)))

    def reference(p, i):
        mu = i["X"] @ p["w"] + p["b"]
        s = p["log_s"].exp()
        dist = torch.distributions.Normal(mu, s)
        ll = torch.where(
            i["cens"] > 0.5, torch.special.log_ndtr(-mu / s), dist.log_prob(i["y"])
        )
        return -ll.mean(), {"mu": mu}

    X_ = normal(rng, 16, 3)
    latent = X_ @ np.array([0.8, -0.5, 0.3]) + 0.2 + 0.7 * normal(rng, 16)
    cens_ = (latent <= 0) * 1.0
    inputs = {"X": X_, "y": np.maximum(latent, 0.0), "cens": cens_}
    params = {
        "w": normal(rng, 3, scale=0.5),
        "b": np.array(0.1),
        "log_s": np.array(-0.2),
    }
    return m, reference, params, inputs


HEAT_X = 7


@family
def heat_equation_implicit_residual(hessian=False):
    """A physics-informed fit of the 1-D heat equation u_t = kappa u_xx on a (T, 9)
    grid: the interior is the parameter, the boundary columns are data joined by
    sg.concatenate; the backward-Euler residual by slicing, an initial-condition
    term and sparse observations; kappa = exp(log_kappa) is learned."""
    rng = np.random.default_rng(0)
    m = sg.Model("heat_equation_implicit_residual", hessian=hessian)
    left, right = m.input("left", ("T", 1)), m.input("right", ("T", 1))
    u0, obs = m.input("u0", (HEAT_X,)), m.input("obs", ("T", HEAT_X))
    obs_mask = m.input("obs_mask", ("T", HEAT_X))
    inner, log_kappa = m.param("inner", ("T", HEAT_X)), m.param("log_kappa", ())
    u = m.let("u", sg.concatenate([left, inner, right], axis=1))
    dt, dx = 0.05, 1.0 / (HEAT_X + 1)
    u_t = (u[1:, 1:-1] - u[:-1, 1:-1]) / dt
    u_xx = (u[1:, 2:] - 2 * u[1:, 1:-1] + u[1:, :-2]) / dx**2
    resid = u_t - sg.exp(log_kappa) * u_xx
    fit = sg.sum(obs_mask * (inner - obs) ** 2) / sg.sum(obs_mask)
    m.loss(1e-3 * sg.mean(resid**2) + sg.mean((inner[0] - u0) ** 2) + fit)

    def reference(p, i):
        u = torch.cat([i["left"], p["inner"], i["right"]], dim=1)
        u_t = (u[1:, 1:-1] - u[:-1, 1:-1]) / dt
        u_xx = (u[1:, 2:] - 2 * u[1:, 1:-1] + u[1:, :-2]) / dx**2
        resid = u_t - p["log_kappa"].exp() * u_xx
        fit = (i["obs_mask"] * (p["inner"] - i["obs"]) ** 2).sum() / i["obs_mask"].sum()
        ic = ((p["inner"][0] - i["u0"]) ** 2).mean()
        return 1e-3 * (resid**2).mean() + ic + fit, {}

    T = 5
    xs = np.linspace(0, 1, HEAT_X + 2)[1:-1]
    truth = np.array(
        [np.sin(np.pi * xs) * np.exp(-0.5 * np.pi**2 * 0.05 * k) for k in range(T)]
    )
    mask = (rng.random((T, HEAT_X)) < 0.4) * 1.0
    mask[0, 0] = 1.0
    inputs = {
        "left": np.zeros((T, 1)),
        "right": 0.01 * normal(rng, T, 1),
        "u0": np.sin(np.pi * xs),
        "obs": truth + 0.01 * normal(rng, T, HEAT_X),
        "obs_mask": mask,
    }
    params = {
        "inner": truth + 0.1 * normal(rng, T, HEAT_X),
        "log_kappa": np.array(-1.0),
    }
    return m, reference, params, inputs


@family
def bayes_linreg_evidence(hessian=False):
    """Type-II maximum likelihood for Bayesian linear regression with 2 features: the
    negative log evidence in log alpha (prior precision) and log beta (noise
    precision), A = alpha I + beta X'X inverted by cofactors, the posterior mean
    assembled by sg.stack. The twin uses torch.linalg.solve and slogdet."""
    rng = np.random.default_rng(0)
    m = sg.Model("bayes_linreg_evidence", hessian=hessian)
    X, y = m.input("X", ("N", 2)), m.input("y", ("N",))
    log_alpha, log_beta = m.param("log_alpha", ()), m.param("log_beta", ())
    alpha, beta = sg.exp(log_alpha), sg.exp(log_beta)
    x1, x2 = X[:, 0], X[:, 1]
    a11 = alpha + beta * sg.sum(x1 * x1)
    a12 = beta * sg.sum(x1 * x2)
    a22 = alpha + beta * sg.sum(x2 * x2)
    det = a11 * a22 - a12**2
    s1, s2 = sg.sum(x1 * y), sg.sum(x2 * y)
    mean = m.output(
        "mean",
        sg.stack(
            [beta * (a22 * s1 - a12 * s2) / det, beta * (a11 * s2 - a12 * s1) / det]
        ),
    )
    n = X.shape[0]
    E = beta / 2 * sg.sum((y - X @ mean) ** 2) + alpha / 2 * sg.sum(mean**2)
    log_ev = (
        log_alpha
        + n / 2 * log_beta
        - E
        - sg.log(det) / 2
        - n / 2 * math.log(2 * math.pi)
    )
    m.loss(-log_ev / n)

    def reference(p, i):
        alpha, beta = p["log_alpha"].exp(), p["log_beta"].exp()
        X, y = i["X"], i["y"]
        A = alpha * torch.eye(2, dtype=X.dtype) + beta * X.T @ X
        mean = beta * torch.linalg.solve(A, X.T @ y)
        E = beta / 2 * ((y - X @ mean) ** 2).sum() + alpha / 2 * (mean**2).sum()
        N = X.shape[0]
        log_ev = (
            p["log_alpha"]
            + N / 2 * p["log_beta"]
            - E
            - torch.linalg.slogdet(A)[1] / 2
            - N / 2 * math.log(2 * math.pi)
        )
        return -log_ev / N, {"mean": mean}

    X_ = normal(rng, 12, 2)
    inputs = {"X": X_, "y": X_ @ np.array([1.5, -0.7]) + 0.3 * normal(rng, 12)}
    params = {"log_alpha": np.array(0.3), "log_beta": np.array(1.2)}
    return m, reference, params, inputs


@family
def rbm_contrastive_free_energy(hessian=False):
    """A Bernoulli RBM trained by contrastive divergence: mean free energy of the data
    minus that of the negative samples, F(v) = -v.b - sum softplus(W v + c), with an
    L2 penalty on W."""
    rng = np.random.default_rng(0)
    m = sg.Model("rbm_contrastive_free_energy", hessian=hessian)
    pos, neg = m.input("pos", ("B", 6)), m.input("neg", ("B", 6))
    W, b, c = m.param("W", (4, 6)), m.param("b", (6,)), m.param("c", (4,))

    def free(v):
        return -(v @ b) - sg.sum(sg.softplus(v @ W.T + c), axis=1)

    m.output("free_pos", free(pos))
    m.loss(sg.mean(free(pos)) - sg.mean(free(neg)) + 1e-2 * sg.sum(W**2))

    def reference(p, i):
        def free(v):
            return -(v @ p["b"]) - F.softplus(v @ p["W"].T + p["c"]).sum(1)

        fp = free(i["pos"])
        return fp.mean() - free(i["neg"]).mean() + 1e-2 * (p["W"] ** 2).sum(), {
            "free_pos": fp
        }

    inputs = {
        "pos": (rng.random((7, 6)) < 0.5) * 1.0,
        "neg": (rng.random((7, 6)) < 0.5) * 1.0,
    }
    params = {
        "W": normal(rng, 4, 6, scale=0.3),
        "b": normal(rng, 6, scale=0.1),
        "c": np.zeros(4),
    }
    return m, reference, params, inputs


PL_LEN = 5


@family
def plackett_luce_ranking(hessian=False):
    """Plackett-Luce log-likelihood of S observed rankings of 5 items (features listed
    in ranked order): sum_l s_l - log sum_{j >= l} exp(s_j), the tail sums a reversed
    cumsum of exp(s - max) (negative slice steps), the twin torch.logcumsumexp."""
    rng = np.random.default_rng(0)
    m = sg.Model("plackett_luce_ranking", hessian=hessian)
    X = m.input("X", ("S", PL_LEN, 3))
    w = m.param("w", (3,))
    s = m.output("scores", X @ w)
    top = sg.max(s, axis=1, keepdims=True)
    tail = sg.cumsum(sg.exp(s - top)[:, ::-1], axis=1)[:, ::-1]
    m.loss(-sg.mean(sg.sum(s - top - sg.log(tail), axis=1)))

    def reference(p, i):
        s = i["X"] @ p["w"]
        tail = torch.logcumsumexp(s.flip(1), 1).flip(1)
        return -(s - tail).sum(1).mean(), {"scores": s}

    return m, reference, {"w": normal(rng, 3)}, {"X": normal(rng, 4, PL_LEN, 3)}


TREE_N = 6


@family
def american_put_binomial_tree(hessian=False):
    """Calibrating volatility and rate to American put quotes on a Cox-Ross-Rubinstein
    tree of 6 steps: terminal payoff max(K - S, 0), backward induction by slicing with
    early exercise by sg.maximum; stock prices one level down are S[:-1] * u."""
    rng = np.random.default_rng(0)
    m = sg.Model("american_put_binomial_tree", hessian=hessian)
    K, quote = m.input("K", ("B",)), m.input("quote", ("B",))
    log_sigma, r = m.param("log_sigma", ()), m.param("r", ())
    dt = 0.5 / TREE_N
    up = sg.exp(sg.exp(log_sigma) * math.sqrt(dt))
    disc = sg.exp(-r * dt)
    p = (1 / disc - 1 / up) / (up - 1 / up)
    steps = [2 * j - TREE_N for j in range(TREE_N + 1)]
    S = sg.stack([up**k for k in steps])  # S0 = 1
    V = sg.maximum(K[:, None] - S, 0.0)
    for _ in range(TREE_N):
        S = S[:-1] * up
        cont = disc * (p * V[:, 1:] + (1 - p) * V[:, :-1])
        V = sg.maximum(cont, K[:, None] - S)
    price = m.output("price", V[:, 0])
    m.loss(sg.mean((price - quote) ** 2))

    def reference(p_, i):
        up = torch.exp(p_["log_sigma"].exp() * math.sqrt(dt))
        disc = torch.exp(-p_["r"] * dt)
        prob = (1 / disc - 1 / up) / (up - 1 / up)
        j = torch.arange(TREE_N + 1, dtype=torch.float64)
        K = i["K"][:, None]
        V = torch.clamp(K - up ** (2 * j - TREE_N), min=0.0)
        for k in range(TREE_N - 1, -1, -1):
            jj = torch.arange(k + 1, dtype=torch.float64)
            cont = disc * (prob * V[:, 1:] + (1 - prob) * V[:, :-1])
            V = torch.maximum(cont, K - up ** (2 * jj - k))
        price = V[:, 0]
        return ((price - i["quote"]) ** 2).mean(), {"price": price}

    inputs = {
        "K": np.array([0.83, 0.97, 1.04, 1.21]),
        "quote": np.array([0.01, 0.06, 0.09, 0.22]),
    }
    params = {"log_sigma": np.array(math.log(0.3)), "r": np.array(0.04)}
    del rng
    return m, reference, params, inputs


@family
def pk_oral_dose_with_lag(hessian=False):
    """One-compartment oral-dose pharmacokinetics (the Bateman function) with an
    absorption lag tlag as sp.Piecewise, fitted on log concentrations: one SymPy
    formula; rates and volume on a log scale."""
    rng = np.random.default_rng(0)
    lka, lke, lV, tlag, t, dose, y = sp.symbols("lka lke lV tlag t dose y")
    ka, ke, V = sp.exp(lka), sp.exp(lke), sp.exp(lV)
    tau = t - tlag
    conc = sp.Piecewise(
        (0, tau <= 0),
        (dose * ka / (V * (ka - ke)) * (sp.exp(-ke * tau) - sp.exp(-ka * tau)), True),
    )
    m = sg.Model.from_expr(
        "pk_oral_dose_with_lag",
        loss=(conc - y) ** 2,
        params=[lka, lke, lV, tlag],
        inputs=[t, dose, y],
        reduce="mean",
        hessian=hessian,
    )

    def reference(p, i):
        ka, ke, V = p["lka"].exp(), p["lke"].exp(), p["lV"].exp()
        tau = i["t"] - p["tlag"]
        c = (
            i["dose"]
            * ka
            / (V * (ka - ke))
            * (torch.exp(-ke * tau) - torch.exp(-ka * tau))
        )
        c = torch.where(tau <= 0, torch.zeros_like(c), c)
        return ((c - i["y"]) ** 2).mean(), {}

    t_ = np.array([0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.5, 6.0, 8.0, 12.0])
    params = {
        "lka": np.array(math.log(1.3)),
        "lke": np.array(math.log(0.2)),
        "lV": np.array(math.log(20.0)),
        "tlag": np.array(0.4),
    }
    dose_ = np.full(t_.shape, 100.0)
    truth = (
        100
        * 1.5
        / (18 * 1.3)
        * (np.exp(-0.25 * (t_ - 0.3)) - np.exp(-1.5 * (t_ - 0.3)))
    )
    y_ = np.where(t_ > 0.3, truth, 0.0) + 0.05 * normal(rng, t_.size)
    return m, reference, params, {"t": t_, "dose": dose_, "y": y_}


HOLT_T = 8


@family
def holt_linear_smoothing(hessian=False):
    """Holt's linear exponential smoothing of S series over 8 steps: level and trend
    recursions with alpha, beta = sigmoid of raw parameters, the one-step forecast
    errors stacked (sg.stack, axis=1); level and trend start from the first two
    points."""
    rng = np.random.default_rng(0)
    m = sg.Model("holt_linear_smoothing", hessian=hessian)
    y = m.input("y", ("S", HOLT_T))
    raw_a, raw_b = m.param("raw_a", ()), m.param("raw_b", ())
    alpha, beta = sg.sigmoid(raw_a), sg.sigmoid(raw_b)
    level, trend = y[:, 1], y[:, 1] - y[:, 0]
    errors = []
    for k in range(2, HOLT_T):
        forecast = level + trend
        errors.append(y[:, k] - forecast)
        new_level = alpha * y[:, k] + (1 - alpha) * forecast
        trend = beta * (new_level - level) + (1 - beta) * trend
        level = new_level
    err = sg.stack(errors, axis=1)
    m.output("forecast", level + trend)
    m.loss(sg.mean(err**2))

    def reference(p, i):
        alpha, beta = torch.sigmoid(p["raw_a"]), torch.sigmoid(p["raw_b"])
        y = i["y"]
        level, trend = y[:, 1], y[:, 1] - y[:, 0]
        errs = []
        for k in range(2, HOLT_T):
            f = level + trend
            errs.append(y[:, k] - f)
            new = alpha * y[:, k] + (1 - alpha) * f
            trend = beta * (new - level) + (1 - beta) * trend
            level = new
        return (torch.stack(errs, 1) ** 2).mean(), {"forecast": level + trend}

    y_ = np.cumsum(0.5 + normal(rng, 3, HOLT_T), axis=1)
    return m, reference, {"raw_a": np.array(0.2), "raw_b": np.array(-1.0)}, {"y": y_}


LV_T, LV_SUB, LV_DT = 4, 3, 0.1


@family
def lotka_volterra_rk2(hessian=False):
    """Predator-prey dynamics fitted to observed populations of B ecosystems: four
    log rate constants, midpoint (RK2) steps, the trajectory assembled with sg.stack
    and compared in log space."""
    rng = np.random.default_rng(0)
    m = sg.Model("lotka_volterra_rk2", hessian=hessian)
    init, obs = m.input("init", ("B", 2)), m.input("obs", ("B", LV_T, 2))
    log_k = m.param("log_k", (4,))
    a, b, c, d = (sg.exp(log_k[j]) for j in range(4))

    def rhs(x, z):
        return a * x - b * x * z, d * x * z - c * z

    x, z = init[:, 0], init[:, 1]
    states = []
    for _ in range(LV_T):
        for _ in range(LV_SUB):
            fx, fz = rhs(x, z)
            fx, fz = rhs(x + 0.5 * LV_DT * fx, z + 0.5 * LV_DT * fz)
            x, z = x + LV_DT * fx, z + LV_DT * fz
        states.append(sg.stack([x, z], axis=-1))
    traj = m.output("traj", sg.stack(states, axis=1))
    m.loss(sg.mean((sg.log(traj) - sg.log(obs)) ** 2))

    def reference(p, i):
        a, b, c, d = p["log_k"].exp()
        x, z = i["init"][:, 0], i["init"][:, 1]
        out = []
        for _ in range(LV_T):
            for _ in range(LV_SUB):
                fx, fz = a * x - b * x * z, d * x * z - c * z
                xm, zm = x + 0.5 * LV_DT * fx, z + 0.5 * LV_DT * fz
                fx, fz = a * xm - b * xm * zm, d * xm * zm - c * zm
                x, z = x + LV_DT * fx, z + LV_DT * fz
            out.append(torch.stack([x, z], -1))
        traj = torch.stack(out, 1)
        return ((traj.log() - i["obs"].log()) ** 2).mean(), {"traj": traj}

    init_ = rng.uniform(0.5, 1.5, (3, 2))
    obs_ = rng.uniform(0.4, 2.0, (3, LV_T, 2))
    return (
        m,
        reference,
        {"log_k": np.log([1.0, 0.6, 0.8, 0.5])},
        {"init": init_, "obs": obs_},
    )


@family
def ppo_clipped_surrogate(hessian=False):
    """PPO: the clipped surrogate min(r A, clip(r, 0.8, 1.2) A) of the probability
    ratio of a softmax policy over 3 actions, advantages standardised in the model
    (sg.std, ddof=1), plus a value loss and an entropy bonus."""
    rng = np.random.default_rng(0)
    m = sg.Model("ppo_clipped_surrogate", hessian=hessian)
    obs, act = m.input("obs", ("B", 4)), m.input("act", ("B",), dtype="int64")
    logp_old, adv, ret = (
        m.input("logp_old", ("B",)),
        m.input("adv", ("B",)),
        m.input("ret", ("B",)),
    )
    W, b = m.param("W", (3, 4)), m.param("b", (3,))
    v, v0 = m.param("v", (4,)), m.param("v0", ())
    logp = sg.log_softmax(obs @ W.T + b, axis=1)
    lp = sg.take_along_axis(logp, act[:, None], axis=1)[:, 0]
    ratio = m.output("ratio", sg.exp(lp - logp_old))
    A = (adv - sg.mean(adv)) / (sg.std(adv, ddof=1) + 1e-8)
    surr = sg.minimum(ratio * A, sg.clip(ratio, 0.8, 1.2) * A)
    entropy = -sg.sum(sg.exp(logp) * logp, axis=1)
    value = obs @ v + v0
    m.loss(-sg.mean(surr) + 0.5 * sg.mean((value - ret) ** 2) - 0.01 * sg.mean(entropy))

    def reference(p, i):
        logp = F.log_softmax(i["obs"] @ p["W"].T + p["b"], 1)
        lp = logp.gather(1, i["act"][:, None])[:, 0]
        ratio = torch.exp(lp - i["logp_old"])
        adv = i["adv"]
        A = (adv - adv.mean()) / (adv.std() + 1e-8)
        surr = torch.min(ratio * A, torch.clamp(ratio, 0.8, 1.2) * A)
        ent = -(logp.exp() * logp).sum(1)
        value = i["obs"] @ p["v"] + p["v0"]
        loss = -surr.mean() + 0.5 * ((value - i["ret"]) ** 2).mean() - 0.01 * ent.mean()
        return loss, {"ratio": ratio}

    B = 12
    params = {
        "W": normal(rng, 3, 4, scale=0.5),
        "b": np.zeros(3),
        "v": normal(rng, 4, scale=0.5),
        "v0": np.array(0.0),
    }
    obs_ = normal(rng, B, 4)
    act_ = rng.integers(0, 3, B)
    # old log-probabilities: the current ones, shifted so some ratios leave [0.8, 1.2]
    logits = obs_ @ params["W"].T
    cur = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    logp_old_ = cur[np.arange(B), act_] + rng.uniform(-0.4, 0.4, B)
    inputs = {
        "obs": obs_,
        "act": act_,
        "logp_old": logp_old_,
        "adv": normal(rng, B),
        "ret": normal(rng, B),
    }
    return m, reference, params, inputs


@family
def barlow_twins(hessian=False):
    """Barlow Twins: the embeddings of two views standardised over the batch (sg.mean
    and sg.std with ddof=1), their cross-correlation matrix pushed to the identity:
    (1 - C_ii)^2 on the diagonal, lambda C_ij^2 off it."""
    rng = np.random.default_rng(0)
    m = sg.Model("barlow_twins", hessian=hessian)
    xa, xb = m.input("xa", ("B", 5)), m.input("xb", ("B", 5))
    W, b = m.param("W", (3, 5)), m.param("b", (3,))

    def standard(x):
        z = sg.tanh(x @ W.T + b)
        return (z - sg.mean(z, axis=0)) / sg.std(z, axis=0, ddof=1)

    za, zb = standard(xa), standard(xb)
    C = m.output("C", za.T @ zb / xa.shape[0])
    diag = sg.sum(za * zb, axis=0) / xa.shape[0]
    m.loss(sg.sum((1 - diag) ** 2) + 0.05 * (sg.sum(C**2) - sg.sum(diag**2)))

    def reference(p, i):
        def standard(x):
            z = torch.tanh(x @ p["W"].T + p["b"])
            return (z - z.mean(0)) / z.std(0)

        za, zb = standard(i["xa"]), standard(i["xb"])
        C = za.T @ zb / za.shape[0]
        d = torch.diagonal(C)
        off = C - torch.diag(d)
        return ((1 - d) ** 2).sum() + 0.05 * (off**2).sum(), {"C": C}

    xa_ = normal(rng, 10, 5)
    inputs = {"xa": xa_, "xb": xa_ + 0.3 * normal(rng, 10, 5)}
    return (
        m,
        reference,
        {"W": normal(rng, 3, 5, scale=0.5), "b": normal(rng, 3, scale=0.1)},
        inputs,
    )


@family
def sharpe_sortino_portfolio(hessian=False):
    """Long-only portfolio weights (softmax) on T periods of 4 assets' returns: minus
    the Sharpe ratio (sg.std, ddof=1), minus a tenth of the Sortino ratio (downside
    by sg.clip(., None, 0)), minus a tenth of the worst log wealth (sg.min of a cumsum
    of sg.log1p of the returns)."""
    rng = np.random.default_rng(0)
    m = sg.Model("sharpe_sortino_portfolio", hessian=hessian)
    R = m.input("R", ("T", 4))
    logits = m.param("logits", (4,))
    w = m.output("w", sg.softmax(logits))
    port = R @ w
    sharpe = sg.mean(port) / sg.std(port, ddof=1)
    downside = sg.sqrt(sg.mean(sg.clip(port, None, 0.0) ** 2))
    wealth = m.output("log_wealth", sg.cumsum(sg.log1p(port)))
    m.loss(-sharpe - 0.1 * sg.mean(port) / downside - 0.1 * sg.min(wealth))

    def reference(p, i):
        w = torch.softmax(p["logits"], 0)
        port = i["R"] @ w
        sharpe = port.mean() / port.std()
        downside = torch.sqrt((torch.clamp(port, max=0.0) ** 2).mean())
        wealth = torch.cumsum(torch.log1p(port), 0)
        loss = -sharpe - 0.1 * port.mean() / downside - 0.1 * wealth.min()
        return loss, {"w": w, "log_wealth": wealth}

    R_ = 0.01 + 0.05 * normal(rng, 20, 4)
    return m, reference, {"logits": normal(rng, 4, scale=0.3)}, {"R": R_}


HAZ_K = 5


@family
def discrete_time_hazard(hessian=False):
    """A discrete-time survival model over 5 intervals: hazard sigmoid(x.w + alpha_k),
    log survival to the start of each interval an exclusive cumsum of log1p(-h)
    (sg.concatenate of a zero column), the event or censoring interval picked by
    take_along_axis from int64 times."""
    rng = np.random.default_rng(0)
    m = sg.Model("discrete_time_hazard", hessian=hessian)
    X, t = m.input("X", ("B", 3)), m.input("t", ("B",), dtype="int64")
    event = m.input("event", ("B",))
    w, alpha = m.param("w", (3,)), m.param("alpha", (HAZ_K,))
    z = (X @ w)[:, None] + alpha
    h = m.output("hazard", sg.sigmoid(z))
    log_s = sg.log1p(-h)
    cum = sg.cumsum(log_s, axis=1)
    before = sg.concatenate([0.0 * cum[:, :1], cum[:, :-1]], axis=1)
    at = t[:, None]

    def pick(a):
        return sg.take_along_axis(a, at, axis=1)[:, 0]

    ll = pick(before) + event * sg.log(pick(h)) + (1 - event) * pick(log_s)
    m.loss(-sg.mean(ll))

    def reference(p, i):
        z = (i["X"] @ p["w"])[:, None] + p["alpha"]
        h = torch.sigmoid(z)
        ll = []
        for r in range(z.shape[0]):
            k = int(i["t"][r])
            surv = F.logsigmoid(-z[r, :k]).sum()
            last = (
                F.logsigmoid(z[r, k]) if i["event"][r] > 0 else F.logsigmoid(-z[r, k])
            )
            ll.append(surv + last)
        return -torch.stack(ll).mean(), {"hazard": h}

    inputs = {
        "X": normal(rng, 9, 3),
        "t": rng.integers(0, HAZ_K, 9),
        "event": (rng.random(9) < 0.6) * 1.0,
    }
    return (
        m,
        reference,
        {"w": normal(rng, 3, scale=0.5), "alpha": normal(rng, HAZ_K) - 1},
        inputs,
    )


W1_BINS = 8


@family
def wasserstein_cdf_histograms(hessian=False):
    """Wasserstein-1 between predicted histograms softmax(x W' + b) over 8 ordered bins
    and target histograms: dx * sum |CDF_p - CDF_q| from a cumsum of the difference
    (the last entry, 0 up to round-off, dropped)."""
    rng = np.random.default_rng(0)
    m = sg.Model("wasserstein_cdf_histograms", hessian=hessian)
    x, q = m.input("x", ("B", 3)), m.input("q", ("B", W1_BINS))
    W, b = m.param("W", (W1_BINS, 3)), m.param("b", (W1_BINS,))
    p = sg.softmax(x @ W.T + b, axis=1)
    gap = sg.cumsum(p - q, axis=1)[:, :-1]
    m.loss(sg.mean(sg.sum(sg.abs(gap), axis=1)) / W1_BINS)

    def reference(p_, i):
        p = torch.softmax(i["x"] @ p_["W"].T + p_["b"], 1)
        gap = torch.cumsum(p - i["q"], 1)[:, :-1]
        return gap.abs().sum(1).mean() / W1_BINS, {}

    q_ = rng.random((6, W1_BINS)) ** 2
    q_ /= q_.sum(1, keepdims=True)
    params = {
        "W": normal(rng, W1_BINS, 3, scale=0.5),
        "b": normal(rng, W1_BINS, scale=0.1),
    }
    return m, reference, params, {"x": normal(rng, 6, 3), "q": q_}


@family
def fermat_light_path(hessian=False):
    """Fermat's principle through L horizontal layers: optical path length sum n_i
    sqrt(dx_i^2 + h_i^2) of the horizontal offsets dx, the exit point held at X by a
    penalty on the last crossing of the cumulative offsets (sg.concatenate of the
    entry point 0 and a cumsum)."""
    rng = np.random.default_rng(0)
    m = sg.Model("fermat_light_path", hessian=hessian)
    n, h, X = m.input("n", ("L",)), m.input("h", ("L",)), m.input("X", ())
    dx = m.param("dx", ("L",))
    crossings = m.output("crossings", sg.concatenate([0.0 * dx[:1], sg.cumsum(dx)]))
    length = sg.sum(n * sg.sqrt(dx**2 + h**2))
    m.loss(length + 10.0 * (crossings[-1] - X) ** 2)

    def reference(p, i):
        dx = p["dx"]
        crossings = torch.cat([torch.zeros(1, dtype=dx.dtype), torch.cumsum(dx, 0)])
        length = (i["n"] * torch.sqrt(dx**2 + i["h"] ** 2)).sum()
        return length + 10.0 * (crossings[-1] - i["X"]) ** 2, {"crossings": crossings}

    inputs = {"n": np.array([1.0, 1.33, 1.5, 1.2]), "h": np.array([0.5, 1.0, 0.3, 0.7])}
    inputs["X"] = np.array(2.0)
    return m, reference, {"dx": rng.uniform(0.2, 0.8, 4)}, inputs


@family
def glove_cooccurrence(hessian=False):
    """GloVe: f(X_ij) (w_i . w~_j + b_i + b~_j - log X_ij)^2 over a list of nonzero
    co-occurrence pairs (int64 i, j), f = clip((X / 10)^0.75, None, 1) computed in the
    model from the counts."""
    rng = np.random.default_rng(0)
    m = sg.Model("glove_cooccurrence", hessian=hessian)
    i, j = m.input("i", ("P",), dtype="int64"), m.input("j", ("P",), dtype="int64")
    counts = m.input("counts", ("P",))
    Wd, Wc = m.param("Wd", ("V", 3)), m.param("Wc", ("V", 3))
    bd, bc = m.param("bd", ("V",)), m.param("bc", ("V",))
    weight = sg.clip((counts / 10.0) ** 0.75, None, 1.0)
    pred = sg.sum(Wd[i] * Wc[j], axis=1) + bd[i] + bc[j]
    m.loss(sg.sum(weight * (pred - sg.log(counts)) ** 2))

    def reference(p, d):
        weight = torch.clamp((d["counts"] / 10.0) ** 0.75, max=1.0)
        pred = (
            (p["Wd"][d["i"]] * p["Wc"][d["j"]]).sum(1)
            + p["bd"][d["i"]]
            + p["bc"][d["j"]]
        )
        return (weight * (pred - d["counts"].log()) ** 2).sum(), {}

    V, P = 6, 15
    inputs = {
        "i": rng.integers(0, V, P),
        "j": rng.integers(0, V, P),
        "counts": rng.integers(1, 25, P).astype(float),
    }
    params = {
        "Wd": normal(rng, V, 3, scale=0.3),
        "Wc": normal(rng, V, 3, scale=0.3),
        "bd": np.zeros(V),
        "bc": np.zeros(V),
    }
    return m, reference, params, inputs


# ===================================================================== 2. the families

module_of = FAMILIES.module


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


HESSIAN_FAMILIES = [
    "tsne_kl_embedding",
    "irt_three_parameter_logistic",
    "tobit_left_censored",
    "bayes_linreg_evidence",
    "plackett_luce_ranking",
    "pk_oral_dose_with_lag",
    "holt_linear_smoothing",
    "ppo_clipped_surrogate",
    "sharpe_sortino_portfolio",
    "discrete_time_hazard",
    "fermat_light_path",
    "glove_cooccurrence",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = [
    "tsne_kl_embedding",
    "heat_equation_implicit_residual",
    "plackett_luce_ranking",
    "pk_oral_dose_with_lag",
    "holt_linear_smoothing",
    "ppo_clipped_surrogate",
    "sharpe_sortino_portfolio",
    "discrete_time_hazard",
    "fermat_light_path",
    "glove_cooccurrence",
]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_its_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


@pytest.mark.parametrize(
    "name, dim, n",
    [
        ("tsne_kl_embedding", "N", 3),
        ("irt_three_parameter_logistic", "R", 1),
        ("tobit_left_censored", "B", 1),
        ("heat_equation_implicit_residual", "T", 2),
        ("bayes_linreg_evidence", "N", 1),
        ("rbm_contrastive_free_energy", "B", 1),
        ("plackett_luce_ranking", "S", 1),
        ("american_put_binomial_tree", "B", 1),
        ("holt_linear_smoothing", "S", 1),
        ("lotka_volterra_rk2", "B", 1),
        ("ppo_clipped_surrogate", "B", 2),
        ("barlow_twins", "B", 3),
        ("sharpe_sortino_portfolio", "T", 2),
        ("discrete_time_hazard", "B", 1),
        ("wasserstein_cdf_histograms", "B", 1),
        ("fermat_light_path", "L", 1),
        ("glove_cooccurrence", "P", 1),
    ],
)
def test_other_sizes_of_a_symbolic_dim_agree_with_pytorch(name, dim, n):
    """The same module at size 1 (or the smallest the model allows) of one dim."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    small = first_along(module, inputs, dim, n)
    if name == "tsne_kl_embedding":
        P_, negent = _tsne_affinities(np.random.default_rng(1), n)
        small = {"P": P_, "negent": negent, "off": 1.0 - np.eye(n)}
        params = {"Y": params["Y"][:n]}
    if name == "heat_equation_implicit_residual":
        params = {**params, "inner": params["inner"][:n]}
    if name == "fermat_light_path":
        params = {"dx": params["dx"][:n]}
    if name == "sharpe_sortino_portfolio":
        small["R"] = np.array([[0.02, -0.01, 0.03, 0.0], [-0.03, -0.02, -0.01, -0.02]])
    check(module, reference, params, small)


# ===================================================================== 3. edge cases


def test_pk_at_a_sample_time_equal_to_the_lag_takes_the_first_branch():
    """t == tlag exactly: Piecewise's tau <= 0 branch (0, derivative 0), as torch.where
    with the same condition; vectorized and unrolled."""
    _, reference, params, inputs = FAMILIES["pk_oral_dose_with_lag"]()
    t_ = inputs["t"].copy()
    t_[2] = float(params["tlag"])
    inputs = {**inputs, "t": t_}
    for unroll in (False, True):
        check(
            module_of("pk_oral_dose_with_lag", unroll=unroll), reference, params, inputs
        )


def test_ppo_first_epoch_ratio_one_and_constant_advantages():
    """The first PPO epoch has logp_old equal to the current log-probabilities: every
    ratio is 1 and the min ties (gradient split in halves, summing to one); constant
    advantages make the standardised advantage 0 / (0 + 1e-8). No warnings, as torch."""
    _, reference, params, inputs = FAMILIES["ppo_clipped_surrogate"]()
    logits = inputs["obs"] @ params["W"].T + params["b"]
    cur = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    first = {**inputs, "logp_old": cur[np.arange(len(cur)), inputs["act"]]}
    flat = {**inputs, "adv": np.full(len(cur), 0.5)}
    for unroll in (False, True):
        module = module_of("ppo_clipped_surrogate", unroll=unroll)
        check(module, reference, params, first)
        check(module, reference, params, flat)


def _clip_bounds_model():
    m = sg.Model("ppo_ratio_at_bounds")
    A = m.input("A", ("B",))
    r, log_eps = m.param("r", ("B",)), m.param("log_eps", ())
    eps = sg.exp(log_eps)
    m.loss(-sg.sum(sg.minimum(r * A, sg.clip(r, 1 - eps, 1 + eps) * A)))
    return m


def test_ratios_exactly_at_the_clip_bounds_pass_the_gradient_like_clamp():
    """clip's gradient passes at a_min <= x <= a_max inclusive (torch.clamp), the
    learned bounds get it strictly outside; minimum ties split halves."""
    module = compile_module(_clip_bounds_model())

    def reference(p, i):
        eps = p["log_eps"].exp()
        r = p["r"]
        return (
            -torch.min(r * i["A"], torch.clamp(r, 1 - eps, 1 + eps) * i["A"]).sum(),
            {},
        )

    eps = 0.25  # 1 +- eps exact in binary
    params = {
        "r": np.array([0.75, 1.25, 1.0, 0.5, 1.5, 0.75, 1.25]),
        "log_eps": np.array(math.log(eps)),
    }
    assert math.exp(float(params["log_eps"])) == eps
    check(
        module,
        reference,
        params,
        {"A": np.array([1.0, -1.0, 2.0, 1.0, -1.0, -2.0, 3.0])},
    )


def test_sharpe_with_a_tied_minimum_of_log_wealth_and_a_zero_return():
    """A period of exactly zero return: log1p(0) = 0 so the cumulative log wealth
    repeats its minimum (amin splits the gradient) and the clip at 0 sits on its
    bound; vectorized and unrolled (at T=8) agree with torch."""
    _, reference, params, _ = FAMILIES["sharpe_sortino_portfolio"]()
    R = np.full((8, 4), -0.03)
    R[3] = 0.0
    R[4:] = [[0.05, 0.02, 0.01, 0.04]] * 4
    R[:3] += 0.01 * np.arange(4)
    w = np.exp(params["logits"]) / np.exp(params["logits"]).sum()
    wealth = np.cumsum(np.log1p(R @ w))
    assert wealth[2] == wealth[3] == wealth.min()
    model = FAMILIES["sharpe_sortino_portfolio"]()[0]
    model.unroll(T=8)
    module = compile_module(model)
    calls, restore = spy_unrolled(module)
    try:
        check(module, reference, params, {"R": R})
    finally:
        restore()
    assert set(calls) == {"_value_and_grad_T_8"}, calls
    check(module_of("sharpe_sortino_portfolio"), reference, params, {"R": R})


def test_hazard_negative_interval_indices_count_from_the_end():
    """take_along_axis with t = -1 picks the last interval, as NumPy does: the same
    loss and gradients as t = K - 1, vectorized and unrolled."""
    _, _, params, inputs = FAMILIES["discrete_time_hazard"]()
    t_ = inputs["t"].copy()
    t_[:3] = [-1, -2, -5]
    for unroll in (False, True):
        module = module_of("discrete_time_hazard", unroll=unroll)
        loss, grads = module.value_and_grad(params, {**inputs, "t": t_})
        loss2, grads2 = module.value_and_grad(params, {**inputs, "t": t_ % HAZ_K})
        assert rel(loss, loss2) <= 1e-14
        for k in params:
            assert rel(grads[k], grads2[k]) <= 1e-13, k


def test_glove_with_repeated_self_pairs_accumulates_the_scatter():
    """The same (i, i) pair several times plus a negative index: the gathers' adjoints
    add every occurrence into one row, as torch's index backward does."""
    _, reference, params, _ = FAMILIES["glove_cooccurrence"]()
    inputs = {
        "i": np.array([2, 2, 2, 5, -1]),
        "j": np.array([2, 2, 2, -1, 5]),
        "counts": np.array([3.0, 10.0, 40.0, 1.0, 7.0]),
    }
    params = {k: v + 0.1 for k, v in params.items()}
    for unroll in (False, True):
        check(module_of("glove_cooccurrence", unroll=unroll), reference, params, inputs)


def test_tobit_with_an_extreme_unselected_branch_stays_finite_and_silent():
    """An observed row with mu / sigma = 60 makes the unpicked censored branch log(0):
    the picked value, and its gradient, are finite and NumPy stays silent (torch's
    where is); a censored row far below 0 has log Phi ~ 0."""
    _, reference, params, inputs = FAMILIES["tobit_left_censored"]()
    X, cens, y = inputs["X"].copy(), inputs["cens"].copy(), inputs["y"].copy()
    X[0], cens[0], y[0] = [60.0, 0.0, 0.0], 0.0, 48.0
    X[1], cens[1], y[1] = [-60.0, 0.0, 0.0], 1.0, 0.0
    inputs = {"X": X, "cens": cens, "y": y}
    for unroll in (False, True):
        check(
            module_of("tobit_left_censored", unroll=unroll), reference, params, inputs
        )


def test_fermat_optimum_obeys_snells_law():
    """Gradient descent on the generated value_and_grad finds the least-time path:
    n_i sin(theta_i) is the same in every layer (Snell), balanced by the exit
    penalty's pull."""
    _, _, params, inputs = FAMILIES["fermat_light_path"]()
    module = module_of("fermat_light_path")
    dx = params["dx"].copy()
    for _ in range(3000):
        _, grads = module.value_and_grad({"dx": dx}, inputs)
        dx -= 0.02 * grads["dx"]
    sines = inputs["n"] * dx / np.sqrt(dx**2 + inputs["h"] ** 2)
    assert np.ptp(sines) < 1e-3 * np.abs(sines).mean(), sines
    outputs, _ = module.forward({"dx": dx}, inputs)
    # the soft exit constraint: every n_i sin_i = -20 (crossing - X) at the optimum
    assert abs(-20 * (outputs["crossings"][-1] - 2.0) - sines.mean()) < 1e-3


def test_evidence_stationary_point_matches_the_fixed_point_equations():
    """At the optimum of the evidence (found by a few Newton steps with the generated
    hessian) MacKay's fixed point holds: alpha = gamma / |m|^2 with gamma the
    effective number of parameters, 1 / beta = |y - X m|^2 / (N - gamma)."""
    _, _, params, inputs = FAMILIES["bayes_linreg_evidence"]()
    module = module_of("bayes_linreg_evidence", hessian=True)
    theta = np.array([float(params["log_alpha"]), float(params["log_beta"])])
    for _ in range(30):
        p = {"log_alpha": np.array(theta[0]), "log_beta": np.array(theta[1])}
        _, g = module.value_and_grad(p, inputs)
        H = module.hessian(p, inputs)
        theta = theta - np.linalg.solve(H, [g["log_alpha"], g["log_beta"]])
    alpha, beta = np.exp(theta)
    X, y = inputs["X"], inputs["y"]
    lam = beta * np.linalg.eigvalsh(X.T @ X)
    gamma = np.sum(lam / (alpha + lam))
    outputs, _ = module.forward(
        {"log_alpha": np.array(theta[0]), "log_beta": np.array(theta[1])}, inputs
    )
    mean = outputs["mean"]
    assert rel(alpha, gamma / np.sum(mean**2)) <= 1e-8
    assert rel(1 / beta, np.sum((y - X @ mean) ** 2) / (len(y) - gamma)) <= 1e-8


def test_american_put_prices_exceed_intrinsic_value_with_positive_vega():
    """Sanity of the tree itself, on a model whose loss is the sum of the prices: it
    equals the torch twin's prices, each price is at least max(K - 1, 0), the vega
    (gradient in log sigma) is positive and the rho (gradient in r) negative."""
    m = sg.Model("american_put_vega")
    K = m.input("K", ("B",))
    log_sigma, r = m.param("log_sigma", ()), m.param("r", ())
    dt = 0.5 / TREE_N
    up = sg.exp(sg.exp(log_sigma) * math.sqrt(dt))
    disc = sg.exp(-r * dt)
    p = (1 / disc - 1 / up) / (up - 1 / up)
    S = sg.stack([up**k for k in range(-TREE_N, TREE_N + 1, 2)])
    V = sg.maximum(K[:, None] - S, 0.0)
    for _ in range(TREE_N):
        S = S[:-1] * up
        V = sg.maximum(disc * (p * V[:, 1:] + (1 - p) * V[:, :-1]), K[:, None] - S)
    m.loss(sg.sum(V[:, 0]))
    module = compile_module(m)
    _, reference, params, inputs = FAMILIES["american_put_binomial_tree"]()
    _, outputs, _ = torch_twin(reference, params, inputs)
    loss, grads = module.value_and_grad(params, {"K": inputs["K"]})
    assert rel(loss, outputs["price"].sum()) <= 1e-12
    assert np.all(outputs["price"] >= np.maximum(inputs["K"] - 1, 0) - 1e-15)
    assert grads["log_sigma"] > 0 and grads["r"] < 0


@pytest.mark.parametrize("name", HESSIAN_FAMILIES[::3])
def test_calls_never_modify_or_share_the_callers_arrays(name):
    """Fortran-ordered and reversed-stride views as arguments: the same results, the
    caller's params, inputs and hvp directions unchanged, no result sharing memory
    with them, and a cache that outputs edited by the caller cannot change."""
    import copy

    _, _, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)

    def strided(v):
        return np.asfortranarray(v) if np.ndim(v) == 2 else np.flip(np.flip(v).copy())

    rng = np.random.default_rng(1)
    args = {k: strided(v) for k, v in params.items()}
    data = {k: strided(v) for k, v in inputs.items()}
    v = {k: strided(rng.standard_normal(np.shape(x))) for k, x in params.items()}
    saved = copy.deepcopy((args, data, v))
    loss, grads = module.value_and_grad(args, data)
    outputs, cache = module.forward(args, data)
    first = module.backward(cache, grad_loss=2.0)
    product = module.hvp(args, data, v)
    expected_loss, expected = module.value_and_grad(params, inputs)
    assert rel(loss, expected_loss) <= 1e-14
    for k in params:
        assert rel(grads[k], expected[k]) <= 1e-13, k
    for now, before in zip((args, data, v), saved, strict=True):
        for k in now:
            assert np.array_equal(now[k], before[k]), k
    theirs = [*args.values(), *data.values(), *v.values()]
    ours = [*grads.values(), *outputs.values(), *first.values(), *product.values()]
    assert not any(np.shares_memory(a, b) for a in ours for b in theirs)
    for value in outputs.values():
        value[...] = 7.0
    again = module.backward(cache, grad_loss=2.0)
    for k in first:
        assert np.array_equal(first[k], again[k]), k


def _heat_model_for_sizes():
    return FAMILIES["heat_equation_implicit_residual"]()[0]


def test_a_mean_over_a_sliced_grid_too_short_names_the_least_size():
    """The residual u[1:] - u[:-1] of a T-step grid has T - 1 rows: at T = 1 its mean
    is over nothing (torch: nan). symgrad refuses it, as documented; the message
    should say what the user must change, T >= 2, both when called and in m.unroll."""
    _, _, params, inputs = FAMILIES["heat_equation_implicit_residual"]()
    module = module_of("heat_equation_implicit_residual")
    params = {**params, "inner": params["inner"][:1]}
    inputs = {
        k: (v[:1] if k in ("left", "right", "obs", "obs_mask") else v)
        for k, v in inputs.items()
    }
    with pytest.raises(ValueError) as called:
        module.value_and_grad(params, inputs)
    model = _heat_model_for_sizes()
    model.unroll(T=1)
    with pytest.raises(sg.ModelError) as unrolled:
        generate(model)
    for message in (str(called.value), str(unrolled.value)):
        assert "T >= 2" in message, message


# ===================================================================== 4. the command line


def symgrad_command() -> list[str]:
    exe = shutil.which("symgrad")
    return [exe] if exe else [sys.executable, "-m", "symgrad.cli"]


def run_cli(args, cwd):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [*symgrad_command(), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


GLOVE_FILE = '''
import numpy as np
import symgrad as sg


def sampler(rng, P, V):
    """Valid GloVe data: positive counts, indices in range."""
    params = {{k: 0.3 * rng.standard_normal((V, 3)) for k in ("Wd", "Wc")}}
    params.update({{k: 0.1 * rng.standard_normal(V) for k in ("bd", "bc")}})
    inputs = {{
        "i": rng.integers(0, V, P),
        "j": rng.integers(0, V, P),
        "counts": rng.integers(1, 25, P).astype(float),
    }}
    return params, inputs


def build():
    m = sg.Model("glove_user_file", doc="GloVe from a user file.")
    i, j = m.input("i", ("P",), dtype="int64"), m.input("j", ("P",), dtype="int64")
    counts = m.input("counts", ("P",))
    Wd, Wc = m.param("Wd", ("V", 3)), m.param("Wc", ("V", 3))
    bd, bc = m.param("bd", ("V",)), m.param("bc", ("V",))
    weight = sg.clip((counts / {xmax}) ** 0.75, None, 1.0)
    pred = sg.sum(Wd[i] * Wc[j], axis=1) + bd[i] + bc[j]
    m.loss(sg.sum(weight * (pred - sg.log(counts)) ** 2))
    m.sampler = sampler
    return m
'''


def _import_file(path: Path, name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"r14_{name}_{id(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_check_and_verify_of_a_user_file_with_a_sampler(tmp_path):
    """symgrad build FILE --out DIR --hessian verifies (the sampler draws positive
    counts) and writes an importable module equal to the in-memory one; check passes
    with --hessian and reports a stale module after the model changes (writing
    nothing); verify prints its table and exits 0."""
    (tmp_path / "glove.py").write_text(GLOVE_FILE.format(xmax="10.0"))
    built = run_cli(["build", "glove.py", "--out", "gen", "--hessian"], tmp_path)
    assert built.returncode == 0, built.stderr
    assert "glove_user_file: ops forward" in built.stdout and "verified" in built.stdout
    target = tmp_path / "gen" / "glove_user_file.py"
    module = _import_file(target, "glove")
    assert hasattr(module, "hvp") and hasattr(module, "hessian")
    _, reference, params, inputs = FAMILIES["glove_cooccurrence"]()
    check(module, reference, params, inputs)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)
    ok = run_cli(["check", "glove.py", "--out", "gen", "--hessian"], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    before = target.read_bytes()
    (tmp_path / "glove.py").write_text(GLOVE_FILE.format(xmax="20.0"))
    stale = run_cli(["check", "glove.py", "--out", "gen", "--hessian"], tmp_path)
    assert stale.returncode == 1 and "stale: gen/glove_user_file.py" in stale.stdout
    assert repr(20.0**-0.75)[:10] in stale.stdout, stale.stdout  # (counts / 20) ** 0.75
    assert target.read_bytes() == before
    verified = run_cli(["verify", "glove.py", "--seed", "3"], tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "grad Wd" in verified.stdout and verified.stdout.strip().endswith("ok")
