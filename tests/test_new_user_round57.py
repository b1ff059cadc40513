"""Round 57 of new-user models: econometrics and statistics with extreme tails.

torch 2.13 CPU float64 autograd (torch.special.log_ndtr, lgamma, logaddexp, expm1),
central finite differences and mpmath (50-60 digits) are the judges.

Families: Tobit type I (log Phi by log(erfc(-z / sqrt 2) / 2), mask products); a
probit on nearly separated data (|z| to 37) with a tiny ridge; Heckman's selection
model by full-information ML (rho = tanh a, the inverse Mills ratio as exp(log phi -
log Phi)); truncated normal regression (log survival by erfc); an ordered probit
whose category probabilities are differences of CDFs or, right of the mode, of
survival functions (sg.where; cut points by exp increments and sg.cumsum, int64
labels through sg.take_along_axis); the normal / half-normal stochastic frontier;
three smoothed quantile regressions at once with a non-crossing relu; a zero-inflated
Poisson (logaddexp, lgamma) and a Poisson hurdle (log(-expm1(-lambda))); Weibull and
log-logistic AFT models with right censoring; Gumbel plus GEV maxima; beta regression
(lgamma, 1 - mu as sigmoid(-eta)); Student-t regression with a learned df. Checked:
all 14 against torch and central differences, 13 Hessians and hvps, four unrolled;
34 edges first order and 31 second order (every row censored 36 sds out, observed
rows exactly at the censoring point, nothing censored, a probit overlap 30 and 37
sds out, rho = tanh(+-3), nothing selected, selection indices 25x, truncation 20 sds
right and 40 left, an ordered index 4x, one category, su = e^-20 and sv = e^-4,
h = 1e-6 and 1e3 in the check loss, all-zero counts, rates e^+-30, a saturated
inflation logit 40, times 1e-200 and 1e+-300, a Gumbel point far below the mode, a
negative GEV shape, a saturated beta mean, y = 1e-12 and 1 - 1e-12, precision e^12,
df e^-4, outliers 1e8); closed forms by mpmath (the Tobit loss and gradient 36 sds
out, the inverse Mills ratio 37 sds out, the log-df gradient at df = e^12), Newton on
the probit with the generated Hessian iterate for iterate with torch's.

Found: no wrong number. symgrad agrees with torch to ~1e-12 everywhere both are
finite. Round 49's bug (the Hessian of a lone log(erfc(x / sqrt 2)) was wrong past
x = 27.3; fixed the same day) did not show in the Tobit or probit families 36 sds
out: their Hessians were right there. Noted, not bugs: torch's Hessian is nan at a zero-inflated
Poisson rate of e^30 (its double backward through logaddexp with e^-lambda = 0)
where symgrad's is finite and agrees with differences of its gradient; at df = e^12
the Student-t log-df gradient keeps ~5 digits in symgrad and in torch alike (the
lgamma differences cancel; mpmath judges); Phi(hi) - Phi(lo) written as 1 - 1
right of the mode, log Phi past 38 sds (erfc underflows) and 1 - sigmoid(eta) for a
saturated mean lose digits or give -inf in both, so the families use the stable
spellings. Unclear messages (were 13 strict xfails; symgrad/model.py's porting table
and sg.norm's scipy.stats.norm methods now name the recipes): sg.norm.logcdf / sg.norm.cdf (a
scipy.stats.norm spelling; sg.norm is the vector norm) give Python's bare "'function'
object has no attribute 'logcdf'"; sg.stats, sg.logcdf, sg.polygamma, sg.trigamma,
sg.betaln, sg.gamma, sg.log1mexp, sg.xlog1py and sg.erfcx are bare AttributeErrors;
torch.special.erfcx and torch.special.polygamma say only "use sg's functions" (15
related mistakes already name their fix: tested).
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    normal,
    rel,
    torch_hessian,
    torch_twin,
)

import symgrad as sg

torch = pytest.importorskip("torch")
mpmath = pytest.importorskip("mpmath")

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module
SQRT2 = math.sqrt(2.0)
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
ndtr_log = torch.special.log_ndtr


# ================================================================ helpers (sg / torch)


def log_Phi(z):  # noqa: N802 - Phi is the normal CDF
    """log Phi(z) as the porting table says: log(erfc(-z / sqrt 2) / 2), accurate in
    the left tail where 1 - erfc(z / sqrt 2) / 2 would cancel."""
    return sg.log(0.5 * sg.erfc(-z / SQRT2))


def log_phi(z):
    return -0.5 * z**2 - LOG_SQRT_2PI


def t_log_phi(z):
    return -0.5 * z**2 - LOG_SQRT_2PI


def design(rng, n, p, scale=1.0):
    """A design matrix with an intercept column."""
    return np.concatenate([np.ones((n, 1)), normal(rng, n, p - 1, scale=scale)], 1)


# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs).

N, P = 8, 3


def _tobit_reference(p, i):
    sigma = torch.exp(p["log_sigma"])
    xb = i["X"] @ p["beta"]
    z = (i["y"] - xb) / sigma
    ll = i["cens"] * ndtr_log(-xb / sigma) + (1 - i["cens"]) * (
        t_log_phi(z) - p["log_sigma"]
    )
    return -ll.sum(), {"xb": xb, "ll": ll}


@family
def tobit(hessian=False):
    """Tobit type I, left-censored at 0: a censored row contributes log Phi(-x b /
    sigma) = log(erfc(x b / (sigma sqrt 2)) / 2), an observed one log phi(r / sigma)
    - log sigma; the censoring indicator (0/1 float input) picks the term by mask
    products. sigma = exp(log_sigma). torch: special.log_ndtr."""
    m = sg.Model("tobit", hessian=hessian)
    X, y, cens = m.input("X", ("n", P)), m.input("y", ("n",)), m.input("cens", ("n",))
    beta, log_sigma = m.param("beta", (P,)), m.param("log_sigma", ())
    sigma = sg.exp(log_sigma)
    xb = m.output("xb", X @ beta)
    z = (y - xb) / sigma
    ll = m.output(
        "ll", cens * log_Phi(-xb / sigma) + (1 - cens) * (log_phi(z) - log_sigma)
    )
    m.loss(-sg.sum(ll))
    rng = np.random.default_rng(0)
    X = design(rng, N, P)
    ystar = X @ np.array([0.2, 1.0, -0.5]) + normal(rng, N, scale=0.7)
    cens = (ystar <= 0).astype(float)
    inputs = {"X": X, "y": np.maximum(ystar, 0.0), "cens": cens}
    params = {"beta": np.array([0.1, 0.8, -0.4]), "log_sigma": np.array(-0.2)}
    return m, _tobit_reference, params, inputs


def _probit_reference(p, i):
    z = i["X"] @ p["beta"]
    ll = i["y"] * ndtr_log(z) + (1 - i["y"]) * ndtr_log(-z)
    return -ll.sum() + 0.5 * 1e-3 * (p["beta"] ** 2).sum(), {"z": z}


@family
def probit_separation(hessian=False):
    """A probit on nearly separated data: the index z = x b reaches |z| ~ 20 (a
    quasi-complete separation that drives an unpenalised MLE to infinity), a tiny
    ridge 1e-3 / 2 |b|^2; log Phi(+-z) by log erfc. torch: special.log_ndtr."""
    m = sg.Model("probit_separation", hessian=hessian)
    X, y = m.input("X", ("n", 2)), m.input("y", ("n",))
    beta = m.param("beta", (2,))
    z = m.output("z", X @ beta)
    ll = y * log_Phi(z) + (1 - y) * log_Phi(-z)
    m.loss(-sg.sum(ll) + 0.5 * 1e-3 * sg.sum(beta**2))
    x = np.array([-3.0, -2.0, -1.0, -0.2, 0.3, 1.0, 2.0, 3.0])
    X = np.stack([np.ones(8), x], 1)
    y = (x > 0).astype(float)
    y[3] = 1.0  # one overlap keeps the MLE finite
    return m, _probit_reference, {"beta": np.array([0.5, 6.5])}, {"X": X, "y": y}


def _heckman_reference(p, i):
    sigma, rho = torch.exp(p["log_sigma"]), torch.tanh(p["a"])
    zg = i["W"] @ p["gamma"]
    r = (i["y"] - i["X"] @ p["beta"]) / sigma
    sel = ndtr_log((zg + rho * r) / torch.sqrt(1 - rho**2)) + t_log_phi(r)
    sel = sel - p["log_sigma"]
    ll = i["s"] * sel + (1 - i["s"]) * ndtr_log(-zg)
    imr = torch.exp(t_log_phi(zg) - ndtr_log(zg))
    return -ll.sum(), {"imr": imr}


@family
def heckman_selection(hessian=False):
    """Heckman's selection model by full-information ML: a row is selected when
    w g + u > 0; for a selected row log Phi((w g + rho r) / sqrt(1 - rho^2)) + log
    phi(r) - log sigma, r = (y - x b) / sigma; an unselected one log Phi(-w g); rho =
    tanh a. Also the inverse Mills ratio phi(w g) / Phi(w g) as an output, written
    exp(log phi - log Phi). torch: log_ndtr."""
    m = sg.Model("heckman_selection", hessian=hessian)
    W, X = m.input("W", ("n", 3)), m.input("X", ("n", 2))
    y, s = m.input("y", ("n",)), m.input("s", ("n",))
    gamma, beta = m.param("gamma", (3,)), m.param("beta", (2,))
    log_sigma, a = m.param("log_sigma", ()), m.param("a", ())
    sigma, rho = sg.exp(log_sigma), sg.tanh(a)
    zg = W @ gamma
    r = (y - X @ beta) / sigma
    sel = log_Phi((zg + rho * r) / sg.sqrt(1 - rho**2)) + log_phi(r) - log_sigma
    ll = s * sel + (1 - s) * log_Phi(-zg)
    m.output("imr", sg.exp(log_phi(zg) - log_Phi(zg)))
    m.loss(-sg.sum(ll))
    rng = np.random.default_rng(2)
    W = design(rng, N, 3)
    X = W[:, :2]
    s = (W @ np.array([0.3, 1.0, -0.8]) + normal(rng, N) > 0).astype(float)
    y = np.where(s > 0, X @ np.array([1.0, 0.5]) + normal(rng, N, scale=0.5), 0.0)
    params = {
        "gamma": np.array([0.2, 0.9, -0.7]),
        "beta": np.array([0.9, 0.6]),
        "log_sigma": np.array(-0.5),
        "a": np.array(0.4),
    }
    return m, _heckman_reference, params, {"W": W, "X": X, "y": y, "s": s}


def _truncnorm_reference(p, i):
    sigma = torch.exp(p["log_sigma"])
    xb = i["X"] @ p["beta"]
    ll = t_log_phi((i["y"] - xb) / sigma) - p["log_sigma"]
    ll = ll - ndtr_log((xb - i["c"]) / sigma)  # log(1 - Phi((c - xb) / sigma))
    return -ll.sum(), {"ll": ll}


@family
def truncated_regression(hessian=False):
    """Truncated normal regression (only y > c observed, c per row): log phi(r /
    sigma) - log sigma - log(1 - Phi((c - x b) / sigma)), the survival written
    log(erfc((c - x b) / (sigma sqrt 2)) / 2) so that it keeps its digits when the
    truncation point is far right of the mean. torch: log_ndtr(-a)."""
    m = sg.Model("truncated_regression", hessian=hessian)
    X, y, c = m.input("X", ("n", P)), m.input("y", ("n",)), m.input("c", ("n",))
    beta, log_sigma = m.param("beta", (P,)), m.param("log_sigma", ())
    sigma = sg.exp(log_sigma)
    xb = X @ beta
    alpha = (c - xb) / sigma
    ll = m.output(
        "ll",
        log_phi((y - xb) / sigma) - log_sigma - sg.log(0.5 * sg.erfc(alpha / SQRT2)),
    )
    m.loss(-sg.sum(ll))
    rng = np.random.default_rng(3)
    X = design(rng, N, P)
    c = np.full(N, 0.5)
    y = c + np.abs(normal(rng, N)) + 0.05
    params = {"beta": np.array([0.3, 0.5, -0.2]), "log_sigma": np.array(0.1)}
    return m, _truncnorm_reference, params, {"X": X, "y": y, "c": c}


K_ORD = 4


def _ordered_reference(p, i):
    c0, inc = p["c0"], torch.exp(p["log_inc"])
    cuts = torch.cat([c0[None], c0 + torch.cumsum(inc, 0)])
    eta = i["X"] @ p["beta"]
    t = cuts[None, :] - eta[:, None]  # (n, K - 1)
    lo = torch.cat([torch.full_like(eta[:, None], -40.0), t], 1)
    hi = torch.cat([t, torch.full_like(eta[:, None], 40.0)], 1)
    lo = torch.gather(lo, 1, i["k"][:, None])[:, 0]
    hi = torch.gather(hi, 1, i["k"][:, None])[:, 0]
    # log(Phi(hi) - Phi(lo)) = log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi))),
    # the open ends at +-40 (Phi exactly 0 and 1 in float64; at +-1e300 torch's Hessian
    # of log_ndtr is nan)
    lp_hi, lp_lo = ndtr_log(hi), ndtr_log(lo)
    ll = lp_hi + torch.log(-torch.expm1(lp_lo - lp_hi))
    return -ll.sum(), {"cuts": cuts}


@family
def ordered_probit(hessian=False):
    """An ordered probit with 4 categories: cut points c0 + cumsum(exp increments),
    P(k) = Phi(c_k - eta) - Phi(c_{k-1} - eta) with the bounds picked by an int64
    label (sg.take_along_axis; +-40 for the open ends), written as a difference of
    two 0.5 erfc(-t / sqrt 2), or of two survival functions 0.5 erfc(t / sqrt 2) right
    of the mode (sg.where), so that neither tail cancels. torch: log_ndtr's
    log-space difference."""
    m = sg.Model("ordered_probit", hessian=hessian)
    X, k = m.input("X", ("n", 2)), m.input("k", ("n",), dtype="int64")
    beta = m.param("beta", (2,))
    c0, log_inc = m.param("c0", ()), m.param("log_inc", (K_ORD - 2,))
    cuts = m.output(
        "cuts", sg.concatenate([sg.reshape(c0, (1,)), c0 + sg.cumsum(sg.exp(log_inc))])
    )
    eta = X @ beta
    t = cuts[None, :] - eta[:, None]
    wide = sg.ones_like(eta)[:, None] * 40.0  # Phi(+-40) is exactly 1 / 0 in float64
    hi = sg.take_along_axis(sg.concatenate([t, wide], axis=1), k[:, None], axis=1)
    lo = sg.take_along_axis(sg.concatenate([-wide, t], axis=1), k[:, None], axis=1)
    # the difference of two CDFs, or of two survival functions right of the mode
    # (Phi(hi) - Phi(lo) = Q(lo) - Q(hi)), so neither cancels 1 - 1
    prob = sg.where(
        lo + hi > 0,
        0.5 * (sg.erfc(lo / SQRT2) - sg.erfc(hi / SQRT2)),
        0.5 * (sg.erfc(-hi / SQRT2) - sg.erfc(-lo / SQRT2)),
    )
    m.loss(-sg.sum(sg.log(prob)))
    rng = np.random.default_rng(4)
    X = normal(rng, N, 2)
    k = np.array([0, 1, 2, 3, 3, 2, 1, 0])
    params = {
        "beta": np.array([0.7, -0.4]),
        "c0": np.array(-1.0),
        "log_inc": np.log(np.array([0.9, 1.1])),
    }
    return m, _ordered_reference, params, {"X": X, "k": k}


def _frontier_reference(p, i):
    su, sv = torch.exp(p["log_su"]), torch.exp(p["log_sv"])
    sigma = torch.sqrt(su**2 + sv**2)
    lam = su / sv
    eps = i["y"] - i["X"] @ p["beta"]
    ll = math.log(2) - torch.log(sigma) + t_log_phi(eps / sigma)
    ll = ll + ndtr_log(-eps * lam / sigma)
    return -ll.sum(), {"eps": eps}


@family
def stochastic_frontier(hessian=False):
    """Aigner-Lovell-Schmidt's normal / half-normal production frontier: y = x b + v
    - u, v ~ N(0, sv^2), u ~ |N(0, su^2)|; ll = log 2 - log sigma + log phi(e /
    sigma) + log Phi(-e lambda / sigma), sigma^2 = su^2 + sv^2, lambda = su / sv,
    scales on the log scale. torch: log_ndtr."""
    m = sg.Model("stochastic_frontier", hessian=hessian)
    X, y = m.input("X", ("n", P)), m.input("y", ("n",))
    beta = m.param("beta", (P,))
    log_su, log_sv = m.param("log_su", ()), m.param("log_sv", ())
    su, sv = sg.exp(log_su), sg.exp(log_sv)
    sigma = sg.sqrt(su**2 + sv**2)
    lam = su / sv
    eps = m.output("eps", y - X @ beta)
    ll = (
        math.log(2) - sg.log(sigma) + log_phi(eps / sigma) + log_Phi(-eps * lam / sigma)
    )
    m.loss(-sg.sum(ll))
    rng = np.random.default_rng(5)
    X = design(rng, N, P)
    u = np.abs(normal(rng, N, scale=0.6))
    y = X @ np.array([1.0, 0.4, 0.3]) + normal(rng, N, scale=0.2) - u
    params = {
        "beta": np.array([0.9, 0.5, 0.2]),
        "log_su": np.array(math.log(0.5)),
        "log_sv": np.array(math.log(0.3)),
    }
    return m, _frontier_reference, params, {"X": X, "y": y}


TAUS = np.array([0.1, 0.5, 0.9])


def _quantile_reference(p, i):
    u = i["y"][:, None] - i["X"] @ p["B"].T  # (n, q)
    h = i["h"]
    loss = i["tau"] * u + h * torch.nn.functional.softplus(-u / h)
    cross = torch.relu(p["B"][:-1, 0] - p["B"][1:, 0])  # no crossing of intercepts
    return loss.mean() + cross.sum(), {"u": u}


@family
def smooth_quantile_regression(hessian=False):
    """Three quantile regressions at once (tau = 0.1, 0.5, 0.9) with the smoothed
    check loss tau u + h softplus(-u / h) (-> the pinball loss as h -> 0; h an input),
    plus a relu penalty on crossing intercepts. torch: F.softplus, relu."""
    m = sg.Model("smooth_quantile_regression", hessian=hessian)
    X, y = m.input("X", ("n", 2)), m.input("y", ("n",))
    tau, h = m.input("tau", (3,)), m.input("h", ())
    B = m.param("B", (3, 2))
    u = m.output("u", y[:, None] - X @ B.T)
    loss = tau * u + h * sg.softplus(-u / h)
    m.loss(sg.mean(loss) + sg.sum(sg.relu(B[:-1, 0] - B[1:, 0])))
    rng = np.random.default_rng(6)
    X = np.stack([np.ones(N), normal(rng, N)], 1)
    y = X @ np.array([1.0, 2.0]) + rng.standard_t(3, N)
    B = np.array([[-0.5, 1.8], [1.2, 2.1], [0.9, 2.3]])  # intercepts cross once
    inputs = {"X": X, "y": y, "tau": TAUS, "h": np.array(0.1)}
    return m, _quantile_reference, {"B": B}, inputs


def _zip_reference(p, i):
    logit_pi = i["W"] @ p["gamma"]
    log_lam = i["X"] @ p["beta"]
    lam = torch.exp(log_lam)
    y = i["y"]
    log_pi = -torch.nn.functional.softplus(-logit_pi)
    log_1mpi = -torch.nn.functional.softplus(logit_pi)
    pois = y * log_lam - lam - torch.lgamma(y + 1)
    zero = torch.logaddexp(log_pi, log_1mpi - lam)
    ll = torch.where(y == 0, zero, log_1mpi + pois)
    return -ll.sum(), {"lam": lam}


@family
def zero_inflated_poisson(hessian=False):
    """A zero-inflated Poisson: logit pi = w g, log lambda = x b; a zero count has
    log(pi + (1 - pi) e^-lambda) = logaddexp(log pi, log(1 - pi) - lambda) with log pi
    = -softplus(-w g); a positive count log(1 - pi) + y log lambda - lambda -
    lgamma(y + 1); sg.where on y == 0. torch: logaddexp, lgamma."""
    m = sg.Model("zero_inflated_poisson", hessian=hessian)
    W, X, y = m.input("W", ("n", 2)), m.input("X", ("n", 2)), m.input("y", ("n",))
    gamma, beta = m.param("gamma", (2,)), m.param("beta", (2,))
    logit_pi = W @ gamma
    log_lam = X @ beta
    lam = m.output("lam", sg.exp(log_lam))
    log_pi, log_1mpi = -sg.softplus(-logit_pi), -sg.softplus(logit_pi)
    pois = y * log_lam - lam - sg.lgamma(y + 1)
    zero = sg.logaddexp(log_pi, log_1mpi - lam)
    m.loss(-sg.sum(sg.where(y == 0, zero, log_1mpi + pois)))
    rng = np.random.default_rng(7)
    W, X = design(rng, N, 2), design(rng, N, 2)
    y = np.array([0, 0, 3, 1, 0, 7, 2, 0], dtype=float)
    params = {"gamma": np.array([-0.3, 0.5]), "beta": np.array([0.6, 0.4])}
    return m, _zip_reference, params, {"W": W, "X": X, "y": y}


def _hurdle_reference(p, i):
    logit_pi = i["W"] @ p["gamma"]
    log_lam = i["X"] @ p["beta"]
    lam = torch.exp(log_lam)
    y = i["y"]
    pos = -torch.nn.functional.softplus(-logit_pi)  # log P(y > 0)
    trunc = y * log_lam - lam - torch.lgamma(y + 1) - torch.log(-torch.expm1(-lam))
    ll = torch.where(y == 0, -torch.nn.functional.softplus(logit_pi), pos + trunc)
    return -ll.sum(), {"lam": lam}


@family
def hurdle_poisson(hessian=False):
    """A Poisson hurdle: a logistic part for y > 0 and a zero-truncated Poisson for
    the positive counts, its normaliser log(1 - e^-lambda) = log(-expm1(-lambda)),
    exact for a tiny lambda. torch: expm1, lgamma."""
    m = sg.Model("hurdle_poisson", hessian=hessian)
    W, X, y = m.input("W", ("n", 2)), m.input("X", ("n", 2)), m.input("y", ("n",))
    gamma, beta = m.param("gamma", (2,)), m.param("beta", (2,))
    logit_pi = W @ gamma
    log_lam = X @ beta
    lam = m.output("lam", sg.exp(log_lam))
    trunc = y * log_lam - lam - sg.lgamma(y + 1) - sg.log(-sg.expm1(-lam))
    ll = sg.where(y == 0, -sg.softplus(logit_pi), -sg.softplus(-logit_pi) + trunc)
    m.loss(-sg.sum(ll))
    rng = np.random.default_rng(8)
    W, X = design(rng, N, 2), design(rng, N, 2)
    y = np.array([0, 1, 3, 1, 0, 5, 2, 0], dtype=float)
    params = {"gamma": np.array([0.2, -0.4]), "beta": np.array([0.3, 0.5])}
    return m, _hurdle_reference, params, {"W": W, "X": X, "y": y}


def _aft_reference(p, i, dist):
    sigma = torch.exp(p["log_sigma"])
    logt = torch.log(i["t"])
    z = (logt - i["X"] @ p["beta"]) / sigma
    if dist == "weibull":
        event = z - torch.exp(z)
        surv = -torch.exp(z)
    else:
        event = z - 2 * torch.nn.functional.softplus(z)
        surv = -torch.nn.functional.softplus(z)
    ll = i["d"] * (event - p["log_sigma"] - logt) + (1 - i["d"]) * surv
    return -ll.sum(), {"z": z}


def _aft_family(name, hessian, dist):
    m = sg.Model(name, hessian=hessian)
    X, t, d = m.input("X", ("n", P)), m.input("t", ("n",)), m.input("d", ("n",))
    beta, log_sigma = m.param("beta", (P,)), m.param("log_sigma", ())
    sigma = sg.exp(log_sigma)
    logt = sg.log(t)
    z = m.output("z", (logt - X @ beta) / sigma)
    if dist == "weibull":
        event, surv = z - sg.exp(z), -sg.exp(z)
    else:
        event, surv = z - 2 * sg.softplus(z), -sg.softplus(z)
    m.loss(-sg.sum(d * (event - log_sigma - logt) + (1 - d) * surv))
    rng = np.random.default_rng(9)
    X = design(rng, N, P)
    t = np.exp(X @ np.array([1.0, 0.3, -0.2]) + 0.5 * normal(rng, N))
    d = np.array([1, 1, 0, 1, 0, 1, 1, 0], dtype=float)
    params = {"beta": np.array([0.8, 0.2, -0.1]), "log_sigma": np.array(-0.4)}

    def reference(p, i):
        return _aft_reference(p, i, dist)

    return m, reference, params, {"X": X, "t": t, "d": d}


@family
def weibull_aft(hessian=False):
    """A Weibull accelerated-failure-time model with right censoring: log T = x b +
    sigma W, W standard minimum-Gumbel; an event contributes z - e^z - log sigma -
    log t, a censored time the log survival -e^z. torch: the same formulas."""
    return _aft_family("weibull_aft", hessian, "weibull")


@family
def loglogistic_aft(hessian=False):
    """A log-logistic AFT model with right censoring: event z - 2 softplus(z) - log
    sigma - log t, censored -softplus(z) (the log survival 1 / (1 + e^z))."""
    return _aft_family("loglogistic_aft", hessian, "loglogistic")


def _gumbel_reference(p, i):
    sigma = torch.exp(p["log_sigma"])
    z = (i["x"] - p["mu"]) / sigma
    ll = -p["log_sigma"] - z - torch.exp(-z)
    xi = p["xi"]
    zg = (i["x"] - p["mu_g"]) / torch.exp(p["log_sigma_g"])
    lt = torch.log1p(xi * zg)
    llg = -p["log_sigma_g"] - (1 + 1 / xi) * lt - torch.exp(-lt / xi)
    return -ll.sum() - llg.sum(), {"z": z}


@family
def gumbel_and_gev(hessian=False):
    """Annual maxima two ways: a Gumbel fit (-log sigma - z - e^-z) and a GEV fit with
    shape xi != 0 (-log sigma - (1 + 1 / xi) log1p(xi z) - exp(-log1p(xi z) / xi)),
    summed. torch: the same formulas."""
    m = sg.Model("gumbel_and_gev", hessian=hessian)
    x = m.input("x", ("n",))
    mu, log_sigma = m.param("mu", ()), m.param("log_sigma", ())
    mu_g, log_sigma_g, xi = (
        m.param("mu_g", ()),
        m.param("log_sigma_g", ()),
        m.param("xi", ()),
    )
    z = m.output("z", (x - mu) / sg.exp(log_sigma))
    ll = -log_sigma - z - sg.exp(-z)
    lt = sg.log1p(xi * (x - mu_g) / sg.exp(log_sigma_g))
    llg = -log_sigma_g - (1 + 1 / xi) * lt - sg.exp(-lt / xi)
    m.loss(-sg.sum(ll) - sg.sum(llg))
    rng = np.random.default_rng(10)
    x = 10 + 2 * rng.gumbel(size=N)
    params = {
        "mu": np.array(9.5),
        "log_sigma": np.array(0.6),
        "mu_g": np.array(9.8),
        "log_sigma_g": np.array(0.7),
        "xi": np.array(0.15),
    }
    return m, _gumbel_reference, params, {"x": x}


def _beta_reference(p, i):
    eta = i["X"] @ p["beta"]
    mu = torch.sigmoid(eta)
    phi = torch.exp(p["log_phi"])
    a, b = mu * phi, torch.sigmoid(-eta) * phi
    y = i["y"]
    ll = torch.lgamma(phi) - torch.lgamma(a) - torch.lgamma(b)
    ll = ll + (a - 1) * torch.log(y) + (b - 1) * torch.log1p(-y)
    return -ll.sum(), {"mu": mu}


@family
def beta_regression(hessian=False):
    """Ferrari-Cribari-Neto beta regression: mu = sigmoid(x b), precision phi =
    exp(log_phi), ll = lgamma(phi) - lgamma(mu phi) - lgamma((1 - mu) phi) + (mu phi
    - 1) log y + ((1 - mu) phi - 1) log1p(-y), 1 - mu as sigmoid(-x b) (exact when mu
    saturates). torch: lgamma."""
    m = sg.Model("beta_regression", hessian=hessian)
    X, y = m.input("X", ("n", 2)), m.input("y", ("n",))
    beta, log_phi_ = m.param("beta", (2,)), m.param("log_phi", ())
    eta = X @ beta
    mu = m.output("mu", sg.sigmoid(eta))
    phi = sg.exp(log_phi_)
    a, b = mu * phi, sg.sigmoid(-eta) * phi  # 1 - mu without cancellation
    ll = sg.lgamma(phi) - sg.lgamma(a) - sg.lgamma(b)
    ll = ll + (a - 1) * sg.log(y) + (b - 1) * sg.log1p(-y)
    m.loss(-sg.sum(ll))
    rng = np.random.default_rng(11)
    X = design(rng, N, 2)
    y = rng.beta(2.0, 3.0, N)
    return (
        m,
        _beta_reference,
        {"beta": np.array([-0.3, 0.4]), "log_phi": np.array(1.5)},
        {
            "X": X,
            "y": y,
        },
    )


def _student_reference(p, i):
    nu, s = torch.exp(p["log_nu"]), torch.exp(p["log_s"])
    r = (i["y"] - i["X"] @ p["beta"]) / s
    ll = (
        torch.lgamma((nu + 1) / 2)
        - torch.lgamma(nu / 2)
        - 0.5 * torch.log(nu * math.pi)
    )
    ll = ll - p["log_s"] - (nu + 1) / 2 * torch.log1p(r**2 / nu)
    return -ll.sum(), {"r": r}


@family
def student_t_regression(hessian=False):
    """Robust regression with Student-t errors and a learned degree of freedom nu =
    exp(log_nu): lgamma((nu + 1) / 2) - lgamma(nu / 2) - log(nu pi) / 2 - log s -
    (nu + 1) / 2 log1p(r^2 / nu). torch: lgamma, log1p."""
    m = sg.Model("student_t_regression", hessian=hessian)
    X, y = m.input("X", ("n", 2)), m.input("y", ("n",))
    beta = m.param("beta", (2,))
    log_nu, log_s = m.param("log_nu", ()), m.param("log_s", ())
    nu, s = sg.exp(log_nu), sg.exp(log_s)
    r = m.output("r", (y - X @ beta) / s)
    ll = sg.lgamma((nu + 1) / 2) - sg.lgamma(nu / 2) - 0.5 * sg.log(nu * math.pi)
    ll = ll - log_s - (nu + 1) / 2 * sg.log1p(r**2 / nu)
    m.loss(-sg.sum(ll))
    rng = np.random.default_rng(12)
    X = design(rng, N, 2)
    y = X @ np.array([0.5, -1.0]) + rng.standard_t(2.5, N)
    params = {
        "beta": np.array([0.4, -0.8]),
        "log_nu": np.array(math.log(3.0)),
        "log_s": np.array(0.1),
    }
    return m, _student_reference, params, {"X": X, "y": y}


# ============================================================= 2. first and second order


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


SECOND_ORDER = [name for name in FAMILIES if name != "smooth_quantile_regression"]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = ["tobit", "probit_separation", "zero_inflated_poisson", "beta_regression"]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# ======================================================================== 3. edges
# name -> (family, parameter overrides, input overrides: functions of the family's
# params and inputs).


def _set(**values):
    return lambda p, i: {k: np.asarray(v, float) for k, v in values.items()}


def _tobit_all_censored(p, i):
    return {"y": np.zeros(N), "cens": np.ones(N)}


def _tobit_at_the_limit(p, i):
    # observed (not censored) rows exactly at the censoring point y = 0
    return {"y": np.zeros(N), "cens": np.zeros(N)}


def _probit_far_overlap(p, i):
    X = i["X"].copy()
    X[3, 1] = -3.0  # the overlapping row (y = 1) at z ~ -30
    return {"X": X}


def _heckman_far_selection(p, i):
    return {"W": i["W"] * np.array([1.0, 25.0, 25.0])}


def _truncated_far_right(p, i):
    xb = i["X"] @ p["beta"]
    sigma = math.exp(p["log_sigma"])
    c = xb + 20.0 * sigma  # truncation 20 sds right of each row's mean
    return {"c": c, "y": c + np.linspace(0.001, 0.1, N)}


def _truncated_far_left(p, i):
    return {"c": np.full(N, -40.0)}


def _ordered_far_index(p, i):
    return {"X": 4.0 * i["X"]}


def _frontier_sharp_noise(p, i):
    return {"log_sv": np.array(-4.0)}


EDGES = {
    "tobit_all_censored": ("tobit", None, _tobit_all_censored),
    "tobit_observed_at_the_limit": ("tobit", None, _tobit_at_the_limit),
    "tobit_none_censored": (
        "tobit",
        None,
        lambda p, i: {"y": np.abs(i["y"]) + 0.3, "cens": np.zeros(N)},
    ),
    # sigma = e^-2.6: the censored rows sit up to ~25 sds left of their means
    # sigma = e^-3.85, every row censored: log Phi(-x b / sigma) down to 36 sds out
    "tobit_censored_36_sds_out": ("tobit", _set(log_sigma=-3.85), _tobit_all_censored),
    "probit_overlap_30_sds_out": ("probit_separation", None, _probit_far_overlap),
    "probit_separation_37_sds": (
        "probit_separation",
        _set(beta=[0.0, 12.3]),
        _probit_far_overlap,
    ),
    "heckman_rho_near_one": ("heckman_selection", _set(a=3.0), None),
    "heckman_rho_near_minus_one": ("heckman_selection", _set(a=-3.0), None),
    "heckman_nothing_selected": (
        "heckman_selection",
        None,
        lambda p, i: {"s": np.zeros(N), "y": np.zeros(N)},
    ),
    "heckman_selection_far_out": ("heckman_selection", None, _heckman_far_selection),
    "truncated_20_sds_right": ("truncated_regression", None, _truncated_far_right),
    "truncated_far_left": ("truncated_regression", None, _truncated_far_left),
    "ordered_probit_far_index": ("ordered_probit", None, _ordered_far_index),
    "ordered_probit_one_category": (
        "ordered_probit",
        None,
        lambda p, i: {"k": np.full(N, 2, dtype=np.int64)},
    ),
    "frontier_no_inefficiency": (
        "stochastic_frontier",
        _set(log_su=-20.0),
        None,
    ),
    "frontier_sharp_noise": ("stochastic_frontier", None, None),
    "quantile_nearly_pinball": (
        "smooth_quantile_regression",
        None,
        lambda p, i: {"h": np.array(1e-6)},
    ),
    "quantile_very_smooth": (
        "smooth_quantile_regression",
        None,
        lambda p, i: {"h": np.array(1e3)},
    ),
    "zip_all_zeros": ("zero_inflated_poisson", None, lambda p, i: {"y": np.zeros(N)}),
    "zip_huge_rate": ("zero_inflated_poisson", _set(beta=[30.0, 0.1]), None),
    "zip_tiny_rate": ("zero_inflated_poisson", _set(beta=[-30.0, 0.1]), None),
    "zip_saturated_inflation": ("zero_inflated_poisson", _set(gamma=[40.0, 0.0]), None),
    "hurdle_tiny_rate": ("hurdle_poisson", _set(beta=[-30.0, 0.1]), None),
    "hurdle_all_positive": (
        "hurdle_poisson",
        None,
        lambda p, i: {"y": np.arange(1.0, N + 1)},
    ),
    "weibull_all_censored": ("weibull_aft", None, lambda p, i: {"d": np.zeros(N)}),
    "weibull_tiny_times": ("weibull_aft", None, lambda p, i: {"t": 1e-200 * i["t"]}),
    "loglogistic_extreme_times": (
        "loglogistic_aft",
        None,
        lambda p, i: {"t": i["t"] * np.array([1e-300, 1e300] * (N // 2))},
    ),
    "gumbel_far_below_the_mode": (
        "gumbel_and_gev",
        None,
        lambda p, i: {"x": i["x"] - np.array([0.0] * (N - 1) + [12.0])},
    ),
    "gev_negative_shape": ("gumbel_and_gev", _set(xi=-0.1), None),
    "beta_mean_saturated": ("beta_regression", _set(beta=[30.0, 0.0]), None),
    "beta_y_at_the_ends": (
        "beta_regression",
        None,
        lambda p, i: {"y": np.array([1e-12, 1 - 1e-12] * (N // 2))},
    ),
    "beta_huge_precision": ("beta_regression", _set(log_phi=12.0), None),
    "student_t_nearly_normal": ("student_t_regression", _set(log_nu=12.0), None),
    "student_t_tiny_df": ("student_t_regression", _set(log_nu=-4.0), None),
    "student_t_outliers_1e8": (
        "student_t_regression",
        None,
        lambda p, i: {"y": i["y"] * np.array([1e8, 1.0] * (N // 2))},
    ),
}
EDGES["frontier_sharp_noise"] = ("stochastic_frontier", _frontier_sharp_noise, None)


def _edge(case):
    name, params_of, inputs_of = EDGES[case]
    _, reference, params, inputs = FAMILIES[name]()
    if params_of is not None:
        params = {**params, **params_of(params, inputs)}
    if inputs_of is not None:
        inputs = {**inputs, **inputs_of(params, inputs)}
    return name, reference, params, inputs


# judged elsewhere: torch's Hessian is nan (e^-lambda underflows in its double
# backward of logaddexp); the log nu gradient cancels 5 digits (mpmath judges)
TORCH_HESSIAN_NAN = {"zip_huge_rate"}
CANCELS = {"student_t_nearly_normal"}


@pytest.mark.parametrize("case", sorted(set(EDGES) - CANCELS))
def test_edges_agree_with_pytorch_and_central_differences(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


SECOND_ORDER_EDGES = sorted(
    case
    for case, (name, _, _) in EDGES.items()
    if name != "smooth_quantile_regression" and case not in TORCH_HESSIAN_NAN | CANCELS
)


@pytest.mark.parametrize("case", SECOND_ORDER_EDGES)
def test_edges_second_order(case):
    name, reference, params, inputs = _edge(case)
    module = module_of(name, hessian=True)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def _hessian_by_differences(module, params, inputs, h=1e-6):
    """Central differences of the module's own gradient, a column per parameter
    entry in PARAMS order (the judge where torch's Hessian is nan)."""
    names = list(module.PARAMS)
    flat = np.concatenate([np.ravel(params[k]) for k in names])
    cuts = np.cumsum([np.size(params[k]) for k in names])[:-1]

    def grad(f):
        parts = np.split(f, cuts)
        p = {
            k: q.reshape(np.shape(params[k])) for k, q in zip(names, parts, strict=True)
        }
        g = module.value_and_grad(p, inputs)[1]
        return np.concatenate([np.ravel(g[k]) for k in names])

    steps = h * np.maximum(1.0, np.abs(flat))
    return np.stack(
        [
            (grad(flat + d * e) - grad(flat - d * e)) / (2 * d)
            for d, e in zip(steps, np.eye(flat.size), strict=True)
        ],
        1,
    )


def test_zip_huge_rate_hessian_where_torchs_is_nan():
    """lambda = e^30 (e^-lambda = 0): torch's double backward through logaddexp gives
    a nan Hessian; symgrad's is finite, agrees with differences of its gradient, and
    the first order agrees with torch (in the edges above)."""
    name, reference, params, inputs = _edge("zip_huge_rate")
    assert np.all(np.isnan(torch_hessian(reference, params, inputs)))
    module = module_of(name, hessian=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = module.hessian(params, inputs)
    assert rel(H, _hessian_by_differences(module, params, inputs)) <= 1e-6
    assert rel(H, H.T) == 0.0


# ==================================================================== 4. closed forms


def _mp_log_Phi(z):  # noqa: N802
    return mpmath.log(mpmath.erfc(-mpmath.mpf(z) / mpmath.sqrt(2)) / 2)


def _mp_mills(z):
    """phi(z) / Phi(z), exact at any z by mpmath's erfc."""
    z = mpmath.mpf(z)
    phi = mpmath.exp(-(z**2) / 2) / mpmath.sqrt(2 * mpmath.pi)
    return phi / (mpmath.erfc(-z / mpmath.sqrt(2)) / 2)


def test_tobit_36_sds_out_against_mpmath():
    """Every row censored, down to 36 sds out: the loss -sum log Phi(-x b / sigma) and
    its gradient in b, sum m(-x b / sigma) x / sigma with the Mills ratio m = phi /
    Phi, by mpmath at 50 digits."""
    name, _, params, inputs = _edge("tobit_censored_36_sds_out")
    loss, grads = module_of(name).value_and_grad(params, inputs)
    X = inputs["X"]
    sigma = math.exp(params["log_sigma"])
    with mpmath.workdps(50):
        a = [-float(v) for v in X @ params["beta"] / sigma]
        assert min(a) < -35
        exact = -mpmath.fsum(_mp_log_Phi(v) for v in a)
        g = [
            mpmath.fsum(_mp_mills(a[r]) * X[r, j] / sigma for r in range(N))
            for j in range(P)
        ]
    assert abs(loss - float(exact)) <= 1e-14 * abs(float(exact))
    assert rel(grads["beta"], np.array([float(v) for v in g])) <= 1e-12


def test_inverse_mills_ratio_far_out_against_mpmath():
    """The Heckman family's exp(log phi(w g) - log Phi(w g)) output 40 sds left (where
    phi / Phi by itself would be 0 / 0 past -38) against mpmath."""
    _, _, params, inputs = FAMILIES["heckman_selection"]()
    inputs = {**inputs, "W": inputs["W"] * np.array([1.0, 45.0, 45.0])}
    with np.errstate(divide="ignore", invalid="ignore"):  # the loss: log Phi(-40)
        outputs, _ = module_of("heckman_selection").forward(params, inputs)
    zg = inputs["W"] @ params["gamma"]
    assert np.min(zg) < -35
    with mpmath.workdps(50):
        expected = np.array([float(_mp_mills(v)) for v in zg])
    assert rel(outputs["imr"], expected) <= 1e-12


def test_student_t_nearly_normal_log_nu_gradient_against_mpmath():
    """nu = e^12: the log nu gradient ~3.3e-5 is what is left of lgamma((nu + 1) / 2)
    - lgamma(nu / 2) - log(nu) / 2 and (nu + 1) / 2 log1p(r^2 / nu), terms ~1e5 that
    cancel: symgrad and torch each keep ~5 digits of it (the formula's limit, not a
    bug); mpmath at 60 digits judges. The other gradients agree with torch."""
    name, reference, params, inputs = _edge("student_t_nearly_normal")
    _, grads = module_of(name).value_and_grad(params, inputs)
    X, y = inputs["X"], inputs["y"]

    def loss(log_nu):
        nu, s = mpmath.exp(log_nu), mpmath.exp(mpmath.mpf(float(params["log_s"])))
        total = 0
        for r in range(N):
            res = (
                mpmath.mpf(y[r])
                - mpmath.fsum(
                    mpmath.mpf(X[r, j]) * mpmath.mpf(params["beta"][j])
                    for j in range(2)
                )
            ) / s
            total += (
                mpmath.loggamma((nu + 1) / 2)
                - mpmath.loggamma(nu / 2)
                - mpmath.log(nu * mpmath.pi) / 2
                - mpmath.log(s)
                - (nu + 1) / 2 * mpmath.log1p(res**2 / nu)
            )
        return -total

    with mpmath.workdps(60):
        exact = float(mpmath.diff(loss, mpmath.mpf(float(params["log_nu"]))))
    assert abs(grads["log_nu"] - exact) <= 1e-5 * abs(exact)
    _, _, expected = torch_twin(reference, params, inputs)
    for k in ("beta", "log_s"):
        assert rel(grads[k], expected[k]) <= 1e-9


def test_probit_newton_with_the_generated_hessian_matches_torch():
    """Five Newton steps of the ridge-penalised probit with the generated Hessian,
    iterate for iterate against torch's (log_ndtr) Newton steps; the gradient falls
    from ~5 to below 1e-3."""
    _, reference, params, inputs = FAMILIES["probit_separation"]()
    module = module_of("probit_separation", hessian=True)
    b = params["beta"].copy()
    tb = b.copy()
    for _ in range(5):
        _, g = module.value_and_grad({"beta": b}, inputs)
        b = b - np.linalg.solve(module.hessian({"beta": b}, inputs), g["beta"])
        _, _, tg = torch_twin(reference, {"beta": tb}, inputs)
        tH = torch_hessian(reference, {"beta": tb}, inputs)
        tb = tb - np.linalg.solve(tH, tg["beta"])
        assert rel(b, tb) <= 1e-9
    _, g = module.value_and_grad({"beta": b}, inputs)
    assert np.max(np.abs(g["beta"])) <= 1e-3  # Newton from a separated start


# ========================================================= 5. a new user's mistakes


def _z():
    m = sg.Model("mistakes")
    return m, m.param("z", (4,))


CLEAR = {
    "torch.special.log_ndtr": (
        lambda z: torch.special.log_ndtr(z),
        TypeError,
        "sg.log(0.5 * sg.erfc(-x / sqrt(2)))",
    ),
    "torch.special.ndtr": (
        lambda z: torch.special.ndtr(z),
        TypeError,
        "0.5 * sg.erfc(-x / sqrt(2))",
    ),
    "sg.log_ndtr": (lambda z: sg.log_ndtr(z), AttributeError, "sg.erfc"),
    "sg.ndtr": (lambda z: sg.ndtr(z), AttributeError, "sg.erfc"),
    "torch.special.gammaln": (
        lambda z: torch.special.gammaln(z),
        TypeError,
        "sg.lgamma",
    ),
    "sg.gammaln": (lambda z: sg.gammaln(z), AttributeError, "sg.lgamma"),
    "torch.lgamma": (lambda z: torch.lgamma(z), TypeError, "sg.lgamma"),
    "torch.special.xlogy": (lambda z: torch.special.xlogy(z, z), TypeError, "sg.where"),
    "sg.logit": (lambda z: sg.logit(z), AttributeError, "sg.log1p(-p)"),
    "sg.log_sigmoid": (lambda z: sg.log_sigmoid(z), AttributeError, "sg.softplus"),
    "sg.special": (lambda z: sg.special.log_ndtr(z), AttributeError, "sg.erfc"),
    "torch.distributions.StudentT": (
        lambda z: torch.distributions.StudentT(z),
        TypeError,
        "log-density written out",
    ),
    "math.erfc": (lambda z: math.erfc(z), TypeError, "sg's functions"),
    "x.lgamma()": (lambda z: z.lgamma(), AttributeError, "sg.lgamma(x)"),
    "sg.softplus(beta=)": (
        lambda z: sg.softplus(z, beta=2.0),
        TypeError,
        "sg.softplus(beta * x) / beta",
    ),
}

UNCLEAR = {
    # scipy.stats.norm.logcdf spelled on sg: sg.norm is the vector norm, and the
    # message is Python's bare "'function' object has no attribute 'logcdf'"
    "sg.norm.logcdf": (lambda z: sg.norm.logcdf(z), AttributeError, "sg.erfc"),
    "sg.norm.cdf": (lambda z: sg.norm.cdf(z), AttributeError, "sg.erfc"),
    "sg.stats.norm.logcdf": (
        lambda z: sg.stats.norm.logcdf(z),
        AttributeError,
        "sg.erfc",
    ),
    "sg.logcdf": (lambda z: sg.logcdf(z), AttributeError, "sg.erfc"),
    # bare AttributeErrors where sg.gammaln / sg.xlogy / sg.logit give a recipe
    "sg.polygamma": (lambda z: sg.polygamma(1, z), AttributeError, "sg.digamma"),
    "sg.trigamma": (lambda z: sg.trigamma(z), AttributeError, "sg.digamma"),
    "sg.betaln": (lambda z: sg.betaln(z, z), AttributeError, "sg.lgamma"),
    "sg.gamma": (lambda z: sg.gamma(z), AttributeError, "sg.lgamma"),
    "sg.log1mexp": (lambda z: sg.log1mexp(z), AttributeError, "sg.expm1"),
    "sg.xlog1py": (lambda z: sg.xlog1py(z, z), AttributeError, "sg.log1p"),
    "sg.erfcx": (lambda z: sg.erfcx(z), AttributeError, "sg.erfc"),
    # only "use sg's functions": no recipe named
    "torch.special.erfcx": (lambda z: torch.special.erfcx(z), TypeError, "sg.erfc"),
    "torch.special.polygamma": (
        lambda z: torch.special.polygamma(0, z),
        TypeError,
        "sg.digamma",
    ),
}


@pytest.mark.parametrize("case", list(CLEAR))
def test_clear_messages_for_statistics_porting_mistakes(case):
    _, z = _z()
    fn, error, hint = CLEAR[case]
    with pytest.raises(error, match=re.escape(hint)):
        fn(z)


@pytest.mark.parametrize("case", list(UNCLEAR))
def test_unclear_messages_for_statistics_porting_mistakes(case):
    """Were strict xfails: a bare AttributeError ('function' object has no attribute
    'logcdf', module 'symgrad' has no attribute 'polygamma') or the generic 'use sg's
    functions' (symgrad/model.py's porting table had no entry for these names)."""
    _, z = _z()
    fn, error, hint = UNCLEAR[case]
    with pytest.raises(error, match=re.escape(hint)):
        fn(z)
