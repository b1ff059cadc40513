"""Round 49 of new-user models: Bayesian-inference users writing unnormalised log
posteriors for HMC / NUTS and Laplace approximations, who need exact gradients AND
Hessians at the extreme parameter values a sampler wanders to, with torch 2.13 CPU
float64 autograd (torch.distributions' log_prob and transforms where they exist) and
central finite differences as the judges (closed forms where they exist).

Families not covered before: the eight-schools model non-centred (theta = mu + tau
theta~, a half-Cauchy on tau sampled as log tau with its log-Jacobian); a stochastic
volatility model unrolled over T = 6 (h non-centred from the stationary prior,
phi = tanh a with TanhTransform's stable log|1 - tanh^2 a|, a Beta prior on
(phi + 1) / 2 through log-sigmoids); hierarchical logistic regression with a
half-Cauchy group scale on the log scale (int64 group gathers; torch: Bernoulli(logits=)
); a 1-D Gaussian mixture whose parameters all go through hand-written bijectors
(weights by stick-breaking in log space against torch's StickBreakingTransform and
Dirichlet, means ordered by a cumsum of exp increments, scales by softplus with
log sigmoid as its log-Jacobian against SoftplusTransform; the likelihood by
sg.logsumexp against MixtureSameFamily); a truncated-normal regression whose
normaliser log(Phi(b) - Phi(a)) is computed stably in three regimes by logs of erfc
(named by m.let) under the double-where idiom (torch: special.log_ndtr); the
horseshoe prior (beta = z lambda tau, half-Cauchy lambda and tau on the log scale); robust
Student-t regression with a learned degree of freedom (torch: StudentT); a Gamma GLM
with a log link next to a Weibull survival model (torch: Gamma, Weibull); a GP marginal
likelihood with learned ARD lengthscales under Gamma hyperpriors (jitter 1e-6; torch:
MultivariateNormal); and an Ising pseudo-likelihood with symmetric couplings from
sg.triu (torch: F.logsigmoid). Also: all ten Hessians and hvps against torch's, the nine
without np.linalg unrolled at the data's sizes, edges first and second order (and
unrolled): tau, lambda and the mixture scales at e^-20 and e^20, the SV scale at e^-20,
SV at phi = tanh +-8, logits of 5e8, mixture weights of e^-25 and means e^-20 apart,
truncation intervals 25 sds out in either tail and a narrow one at the mode, degrees of freedom e^-4 and e^12, Gamma shapes
e^-6 and e^8, a Weibull shape of e^3, GP lengthscales e^-6 and e^6, saturated Ising
couplings; sizes of one (first and second order, and the plain build's vectorized
code);
closed forms (the conjugate normal-normal model's Hessian is the posterior precision
everywhere and one Newton step lands on the posterior mean; Bayesian linear
regression's Laplace approximation is exact; the truncated normal's normaliser
against mpmath 30 sigma out) and Newton's method with the generated Hessian on a
MAP logistic regression, iterate for iterate with torch's.

Found (a wrong number, 2 strict xfails, one cause; fixed since: log erfc is
differentiated by 1 / erfcx, symgrad/symbolic.py's erfc_ratio): the Hessian of log(erfc(x /
sqrt 2)) (a truncated normal's or a probit's log-normaliser 30 sds out) is +900.998
at x = 30 where it is -0.99890 (torch's log_ndtr, and differences of the module's own
gradient, which is right): the hvp is generated as t2 * (0.798 x exp(-x^2 / 2) -
0.637 t2 exp(-x^2)) with t2 = 1 / erfc(x / sqrt 2), SymPy having merged exp(-x^2 /
2)^2 into exp(-x^2), which underflows to 0 for x > 27.3 and drops the m^2 ~ 902 term
of the inverse Mills ratio (the fused elementwise derivative, symgrad/symbolic.py,
differentiated again for hvp in symgrad/compiler.py). In the truncated-normal family
the Hessian is inf 26 sds out and nan from 27 (pinned); 25 sds out it agrees with
torch's log_ndtr twin. Noted, not bugs: log(erfc(x)) itself has the right second
derivative 21 units out, where torch's double backward of the same formula is -inf
(tested); a log-space ratio exp(log erfc(b) - log erfc(a)) fused into one formula is
folded by SymPy back into erfc(b) / erfc(a), whose second derivative is nan 20 sds out
in symgrad as in torch (naming the logs with m.let keeps them apart, and exact);
symgrad's Hessian is finite and right (by differences of its gradient) where torch's
twin is not: every stick of the stick-breaking at e^-700 (torch's Hessian nan) and
phi = tanh 20 in the volatility model (torch's Normal scale e^{h / 2} overflows); a
float constant array (np.log(np.arange(...)) as stick-breaking offsets) is refused
with a clear message (declare data as an input). Everything else agrees with torch to
~1e-9, first and second order, vectorized and unrolled, at every edge listed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
    normal,
    rel,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional
D = torch.distributions
T = torch.distributions.transforms

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module
f64 = torch.float64
LOG2PI = math.log(2 * math.pi)
SQRT2 = math.sqrt(2.0)


def c(v):
    """A float64 constant for torch.distributions (Python floats would be float32)."""
    return torch.tensor(v, dtype=f64)


def _normal_lp(x, mu, s, log_s):
    """log N(x | mu, s^2), written by hand on the sg side."""
    return -0.5 * ((x - mu) / s) ** 2 - log_s - 0.5 * LOG2PI


def _half_cauchy_lp(log_x, scale):
    """log HalfCauchy(e^log_x | scale) + log_x (the log-Jacobian of x = e^log_x)."""
    return (
        math.log(2 / (math.pi * scale)) - sg.log1p((sg.exp(log_x) / scale) ** 2) + log_x
    )


def _half_cauchy_lp_torch(log_x, scale):
    return D.HalfCauchy(c(scale)).log_prob(torch.exp(log_x)) + log_x


# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs).


def _schools_reference(p, i):
    tau = torch.exp(p["log_tau"])
    theta = p["mu"] + tau * p["theta_t"]
    lp = D.Normal(theta, i["sigma"]).log_prob(i["y"]).sum()
    lp = lp + D.Normal(c(0.0), c(1.0)).log_prob(p["theta_t"]).sum()
    lp = lp + D.Normal(c(0.0), c(5.0)).log_prob(p["mu"])
    lp = lp + _half_cauchy_lp_torch(p["log_tau"], 5.0)
    return -lp, {"theta": theta}


@family
def eight_schools(hessian=False):
    """Rubin's eight schools, non-centred as Stan's manual writes it: theta = mu +
    tau theta~, theta~ ~ N(0, 1), mu ~ N(0, 5), tau ~ HalfCauchy(5) sampled as
    log tau (+ log tau, the log-Jacobian). torch: Normal, HalfCauchy."""
    m = sg.Model("eight_schools", hessian=hessian)
    y, sigma = m.input("y", ("J",)), m.input("sigma", ("J",))
    mu, log_tau, theta_t = (
        m.param("mu", ()),
        m.param("log_tau", ()),
        m.param("theta_t", ("J",)),
    )
    theta = m.output("theta", mu + sg.exp(log_tau) * theta_t)
    lp = sg.sum(_normal_lp(y, theta, sigma, sg.log(sigma)))
    lp = lp + sg.sum(_normal_lp(theta_t, 0.0, 1.0, 0.0))
    lp = lp + _normal_lp(mu, 0.0, 5.0, math.log(5.0)) + _half_cauchy_lp(log_tau, 5.0)
    m.loss(-lp)
    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    rng = np.random.default_rng(0)
    params = {"mu": np.array(4.4), "log_tau": np.array(1.2), "theta_t": normal(rng, 8)}
    return m, _schools_reference, params, {"y": y, "sigma": sigma}


def _sv_reference(p, i):
    a, mu = p["a"], p["mu"]
    phi, sigma = torch.tanh(a), torch.exp(p["log_sigma"])
    hs = p["h_std"]
    h = [mu + sigma * torch.cosh(a) * hs[0]]  # sigma / sqrt(1 - phi^2)
    for t in range(1, hs.shape[0]):
        h.append(mu + phi * (h[-1] - mu) + sigma * hs[t])
    h = torch.stack(h)
    lp = D.Normal(c(0.0), torch.exp(h / 2)).log_prob(i["y"]).sum()
    lp = lp + D.Normal(c(0.0), c(1.0)).log_prob(hs).sum()
    lp = lp + D.Normal(c(0.0), c(10.0)).log_prob(mu)
    lp = lp + D.HalfNormal(c(1.0)).log_prob(sigma) + p["log_sigma"]
    lbeta = math.lgamma(20.0) + math.lgamma(1.5) - math.lgamma(21.5)
    lp = lp + 19.0 * F.logsigmoid(2 * a) + 0.5 * F.logsigmoid(-2 * a) - lbeta
    lp = lp - math.log(2.0) + T.TanhTransform().log_abs_det_jacobian(a, phi)
    return -lp, {"h": h}


@family
def stochastic_volatility(hessian=False, T_=6):
    """A stochastic-volatility model y_t ~ N(0, e^{h_t}) with the AR(1) log-variance
    non-centred and unrolled over T = 6: h_0 = mu + sigma cosh(a) h~_0 (the stationary
    sd sigma / sqrt(1 - phi^2) with phi = tanh a), h_t = mu + phi (h_{t-1} - mu) +
    sigma h~_t; (phi + 1) / 2 ~ Beta(20, 1.5) written through log-sigmoids of 2a (stable
    as phi -> 1) plus the tanh log-Jacobian 2 (log 2 - a - softplus(-2a)) (torch's
    TanhTransform), sigma ~ HalfNormal(1) on the log scale."""
    m = sg.Model("stochastic_volatility", hessian=hessian)
    y = m.input("y", (T_,))
    mu, a, log_sigma = m.param("mu", ()), m.param("a", ()), m.param("log_sigma", ())
    hs = m.param("h_std", (T_,))
    phi, sigma = sg.tanh(a), sg.exp(log_sigma)
    h = [mu + sigma * sg.cosh(a) * hs[0]]
    for t in range(1, T_):
        h.append(mu + phi * (h[-1] - mu) + sigma * hs[t])
    h = m.output("h", sg.stack(h))
    lp = sg.sum(-0.5 * y**2 * sg.exp(-h) - h / 2 - 0.5 * LOG2PI)
    lp = lp + sg.sum(_normal_lp(hs, 0.0, 1.0, 0.0))
    lp = lp + _normal_lp(mu, 0.0, 10.0, math.log(10.0))
    lp = lp + (0.5 * math.log(2 / math.pi) - 0.5 * sigma**2) + log_sigma
    lbeta = math.lgamma(20.0) + math.lgamma(1.5) - math.lgamma(21.5)
    lp = lp - 19.0 * sg.softplus(-2 * a) - 0.5 * sg.softplus(2 * a) - lbeta
    lp = lp - math.log(2.0) + 2 * (math.log(2.0) - a - sg.softplus(-2 * a))
    m.loss(-lp)
    rng = np.random.default_rng(1)
    params = {
        "mu": np.array(-1.0),
        "a": np.array(1.5),
        "log_sigma": np.array(-1.0),
        "h_std": normal(rng, T_),
    }
    return m, _sv_reference, params, {"y": normal(rng, T_, scale=0.6)}


def _hlogit_reference(p, i):
    s = torch.exp(p["log_s"])
    alpha = p["mu_a"] + s * p["z"]
    logits = i["X"] @ p["beta"] + alpha[i["g"]]
    lp = D.Bernoulli(logits=logits).log_prob(i["y"]).sum()
    lp = lp + D.Normal(c(0.0), c(2.5)).log_prob(p["beta"]).sum()
    lp = lp + D.Normal(c(0.0), c(5.0)).log_prob(p["mu_a"])
    lp = lp + D.Normal(c(0.0), c(1.0)).log_prob(p["z"]).sum()
    lp = lp + _half_cauchy_lp_torch(p["log_s"], 1.0)
    return -lp, {"logits": logits}


@family
def hierarchical_logistic(hessian=False):
    """Hierarchical logistic regression with varying intercepts alpha_g = mu_a + s z_g
    (non-centred), int64 group indices gathered per row, s ~ HalfCauchy(1) on the log
    scale, beta ~ N(0, 2.5). torch: Bernoulli(logits=).log_prob, HalfCauchy."""
    m = sg.Model("hierarchical_logistic", hessian=hessian)
    X, y = m.input("X", ("N", 2)), m.input("y", ("N",))
    g = m.input("g", ("N",), dtype="int64")
    beta, mu_a = m.param("beta", (2,)), m.param("mu_a", ())
    log_s, z = m.param("log_s", ()), m.param("z", ("G",))
    alpha = mu_a + sg.exp(log_s) * z
    logits = m.output("logits", X @ beta + alpha[g])
    lp = sg.sum(y * logits - sg.softplus(logits))
    lp = lp + sg.sum(_normal_lp(beta, 0.0, 2.5, math.log(2.5)))
    lp = lp + _normal_lp(mu_a, 0.0, 5.0, math.log(5.0))
    lp = lp + sg.sum(_normal_lp(z, 0.0, 1.0, 0.0)) + _half_cauchy_lp(log_s, 1.0)
    m.loss(-lp)
    rng = np.random.default_rng(2)
    X = normal(rng, 7, 2)
    y = (rng.uniform(size=7) < 0.5).astype(float)
    params = {
        "beta": normal(rng, 2, scale=0.5),
        "mu_a": np.array(0.2),
        "log_s": np.array(-0.3),
        "z": normal(rng, 3),
    }
    g = np.array([0, 1, 2, 0, 1, 2, 2])
    return m, _hlogit_reference, params, {"X": X, "y": y, "g": g}


def _mixture_reference(p, i):
    K = p["x_mu"].shape[0]
    sb = T.StickBreakingTransform()
    w = sb(p["x_w"])
    mu = torch.cumsum(torch.cat([p["x_mu"][:1], torch.exp(p["x_mu"][1:])]), 0)
    sp_ = T.SoftplusTransform()
    s = sp_(p["x_s"])
    mix = D.MixtureSameFamily(D.Categorical(probs=w), D.Normal(mu, s))
    lp = mix.log_prob(i["data"]).sum()
    lp = lp + D.Dirichlet(torch.full((K,), 2.0, dtype=f64)).log_prob(w)
    lp = lp + sb.log_abs_det_jacobian(p["x_w"], w)
    lp = lp + D.Normal(c(0.0), c(10.0)).log_prob(mu).sum() + p["x_mu"][1:].sum()
    lp = lp + D.LogNormal(c(0.0), c(1.0)).log_prob(s).sum()
    lp = lp + sp_.log_abs_det_jacobian(p["x_s"], s).sum()
    return -lp, {"log_w": torch.log(w), "mu": mu}


@family
def mixture_through_bijectors(hessian=False, K=3):
    """A 1-D Gaussian mixture sampled on the unconstrained scale, every parameter
    through a hand-written bijector with its log|det J|: weights by stick-breaking
    (torch's StickBreakingTransform: z_k = sigmoid(x_k - log(K - 1 - k)), w_k = z_k
    prod_{j<k} (1 - z_j)), kept in log space (log z = -softplus(-u), log(1 - z) =
    -softplus(u), exclusive sums by sg.cumsum) under a Dirichlet(2) prior; means ordered
    by mu = cumsum([x_0, e^{x_1}, ...]) (log-Jacobian sum x_{1:}); scales by softplus
    (log-Jacobian log sigmoid x) under LogNormal(0, 1); the likelihood by sg.logsumexp.
    torch: StickBreakingTransform, SoftplusTransform, Dirichlet, MixtureSameFamily."""
    m = sg.Model("mixture_through_bijectors", hessian=hessian)
    data = m.input("data", ("N",))
    x_w, x_mu, x_s = (
        m.param("x_w", (K - 1,)),
        m.param("x_mu", (K,)),
        m.param("x_s", (K,)),
    )
    u = sg.stack([x_w[k] - math.log(K - 1 - k) for k in range(K - 1)])
    log_z, log_1mz = -sg.softplus(-u), -sg.softplus(u)
    cum = sg.cumsum(log_1mz)
    log_rem = cum - log_1mz
    log_w = m.output("log_w", sg.concatenate([log_z + log_rem, cum[K - 2 :]]))
    log_det_w = sg.sum(log_z + log_1mz + log_rem)
    mu = m.output("mu", sg.cumsum(sg.concatenate([x_mu[:1], sg.exp(x_mu[1:])])))
    s = sg.softplus(x_s)
    log_s = sg.log(s)
    comp = _normal_lp(data[:, None], mu, s, log_s) + log_w
    lp = sg.sum(sg.logsumexp(comp, axis=1))
    lp = lp + sg.sum(log_w) + math.lgamma(2.0 * K) + log_det_w  # Dirichlet(2)
    lp = lp + sg.sum(_normal_lp(mu, 0.0, 10.0, math.log(10.0))) + sg.sum(x_mu[1:])
    lp = lp + sg.sum(_normal_lp(log_s, 0.0, 1.0, 0.0) - log_s)
    lp = lp - sg.sum(sg.softplus(-x_s))
    m.loss(-lp)
    rng = np.random.default_rng(3)
    data = np.concatenate([normal(rng, 4) - 2.0, normal(rng, 3) + 1.5])
    params = {
        "x_w": np.array([0.3, -0.2]),
        "x_mu": np.array([-1.5, 0.8, 0.1]),
        "x_s": np.array([0.4, -0.2, 0.6]),
    }
    return m, _mixture_reference, params, {"data": data}


def _log_z_truncated_torch(a, b):
    """log(Phi(b) - Phi(a)) by torch.special.log_ndtr in the tail each side."""
    lnd = torch.special.log_ndtr

    def log_diff(hi, lo):  # log(e^hi - e^lo), hi > lo
        return hi + torch.log1p(-torch.exp(lo - hi))

    right = a > 0
    left = b < 0
    a_r, b_r = torch.where(right, a, 1.0), torch.where(right, b, 2.0)
    a_l, b_l = torch.where(left, a, -2.0), torch.where(left, b, -1.0)
    mid_a = torch.where(right | left, -1.0, a)
    mid_b = torch.where(right | left, 1.0, b)
    return torch.where(
        right,
        log_diff(lnd(-a_r), lnd(-b_r)),
        torch.where(
            left,
            log_diff(lnd(b_l), lnd(a_l)),
            torch.log1p(-torch.special.ndtr(mid_a) - torch.special.ndtr(-mid_b)),
        ),
    )


def _log_z_truncated_sg(m, a, b):
    """log(Phi(b) - Phi(a)), both tails far: by logs of erfc, log Z = log(erfc(a /
    sqrt 2) / 2) + log1p(-exp(log erfc(b / sqrt 2) - log erfc(a / sqrt 2))) in the
    right tail, under the double-where idiom (each branch fed safe values where it is
    not taken). The logs are named by m.let: fused into one formula, SymPy folds
    exp(log u - log v) back into u / v, whose second derivative is nan 20 sds out
    (1 / erfc(a')^2 overflows; torch's is nan there too, its log(erfc) being -inf)."""
    right = a > 0
    left = b < 0
    a_r, b_r = sg.where(right, a, 1.0), sg.where(right, b, 2.0)
    a_l, b_l = sg.where(left, a, -2.0), sg.where(left, b, -1.0)
    mid_a = sg.where(right | left, -1.0, a)
    mid_b = sg.where(right | left, 1.0, b)
    l_a = m.let("log_erfc_a", sg.log(sg.erfc(a_r / SQRT2)))
    l_b = m.let("log_erfc_b", sg.log(sg.erfc(b_r / SQRT2)))
    in_right = math.log(0.5) + l_a + sg.log1p(-sg.exp(l_b - l_a))
    l_b = m.let("log_erfc_mb", sg.log(sg.erfc(-b_l / SQRT2)))
    l_a = m.let("log_erfc_ma", sg.log(sg.erfc(-a_l / SQRT2)))
    in_left = math.log(0.5) + l_b + sg.log1p(-sg.exp(l_a - l_b))
    middle = sg.log1p(-0.5 * sg.erfc(-mid_a / SQRT2) - 0.5 * sg.erfc(mid_b / SQRT2))
    return sg.where(right, in_right, sg.where(left, in_left, middle))


def _truncated_reference(p, i):
    s = torch.exp(p["log_s"])
    loc = i["X"] @ p["beta"]
    a, b = (i["lo"] - loc) / s, (i["hi"] - loc) / s
    lp = D.Normal(loc, s).log_prob(i["y"]) - _log_z_truncated_torch(a, b)
    lp = lp.sum() + D.Normal(c(0.0), c(3.0)).log_prob(p["beta"]).sum()
    return -lp, {"log_z": _log_z_truncated_torch(a, b)}


@family
def truncated_normal(hessian=False):
    """Truncated-normal regression y ~ N(X beta, s^2) restricted to [lo, hi] (per-row
    bounds as inputs), the normaliser log(Phi(b) - Phi(a)) in three regimes: right
    tail (a > 0) as log(erfc(a / sqrt 2) / 2) + log1p(-exp(log erfc(b / sqrt 2) -
    log erfc(a / sqrt 2))), the left tail mirrored, and log1p(-Phi(a) - (1 - Phi(b))) in between.
    torch: special.log_ndtr and ndtr (another formula), Normal.log_prob."""
    m = sg.Model("truncated_normal", hessian=hessian)
    X, y = m.input("X", ("N", 2)), m.input("y", ("N",))
    lo, hi = m.input("lo", ("N",)), m.input("hi", ("N",))
    beta, log_s = m.param("beta", (2,)), m.param("log_s", ())
    s = sg.exp(log_s)
    loc = X @ beta
    a, b = (lo - loc) / s, (hi - loc) / s
    log_z = m.output("log_z", _log_z_truncated_sg(m, a, b))
    lp = sg.sum(_normal_lp(y, loc, s, log_s) - log_z)
    lp = lp + sg.sum(_normal_lp(beta, 0.0, 3.0, math.log(3.0)))
    m.loss(-lp)
    rng = np.random.default_rng(4)
    X = np.column_stack([np.ones(6), normal(rng, 6)])
    lo = np.array([-1.0, 2.0, -3.0])  # a middle, a right and a left row
    hi = np.array([1.0, 4.0, -1.5])
    X = X[:3]
    y = lo + (hi - lo) * rng.uniform(0.1, 0.9, 3)
    params = {"beta": np.array([0.3, 0.5]), "log_s": np.array(0.1)}
    return m, _truncated_reference, params, {"X": X, "y": y, "lo": lo, "hi": hi}


def _horseshoe_reference(p, i):
    lam, tau = torch.exp(p["log_lam"]), torch.exp(p["log_tau"])
    beta = p["z"] * lam * tau
    sigma = torch.exp(p["log_sigma"])
    lp = D.Normal(i["X"] @ beta, sigma).log_prob(i["y"]).sum()
    lp = lp + D.Normal(c(0.0), c(1.0)).log_prob(p["z"]).sum()
    lp = lp + _half_cauchy_lp_torch(p["log_lam"], 1.0).sum()
    lp = lp + _half_cauchy_lp_torch(p["log_tau"], 0.1)
    lp = lp + D.HalfNormal(c(1.0)).log_prob(sigma) + p["log_sigma"]
    return -lp, {"beta": beta}


@family
def horseshoe(hessian=False):
    """Sparse regression under the horseshoe prior, non-centred: beta = z lambda tau,
    z ~ N(0, 1), local lambda_j ~ HalfCauchy(1) and global tau ~ HalfCauchy(0.1), both
    sampled as logs with their log-Jacobians, sigma ~ HalfNormal(1). torch: Normal,
    HalfCauchy, HalfNormal."""
    m = sg.Model("horseshoe", hessian=hessian)
    X, y = m.input("X", ("N", "d")), m.input("y", ("N",))
    z, log_lam = m.param("z", ("d",)), m.param("log_lam", ("d",))
    log_tau, log_sigma = m.param("log_tau", ()), m.param("log_sigma", ())
    beta = m.output("beta", z * sg.exp(log_lam) * sg.exp(log_tau))
    sigma = sg.exp(log_sigma)
    lp = sg.sum(_normal_lp(y, X @ beta, sigma, log_sigma))
    lp = lp + sg.sum(_normal_lp(z, 0.0, 1.0, 0.0))
    lp = lp + sg.sum(_half_cauchy_lp(log_lam, 1.0)) + _half_cauchy_lp(log_tau, 0.1)
    lp = lp + (0.5 * math.log(2 / math.pi) - 0.5 * sigma**2) + log_sigma
    m.loss(-lp)
    rng = np.random.default_rng(5)
    X = normal(rng, 6, 4)
    y = X @ np.array([2.0, 0.0, 0.0, -1.0]) + normal(rng, 6, scale=0.3)
    params = {
        "z": normal(rng, 4),
        "log_lam": normal(rng, 4),
        "log_tau": np.array(-1.0),
        "log_sigma": np.array(-0.5),
    }
    return m, _horseshoe_reference, params, {"X": X, "y": y}


def _student_reference(p, i):
    nu, s = torch.exp(p["log_nu"]), torch.exp(p["log_s"])
    loc = i["X"] @ p["beta"]
    lp = D.StudentT(nu, loc, s).log_prob(i["y"]).sum()
    lp = lp + D.Gamma(c(2.0), c(0.1)).log_prob(nu) + p["log_nu"]
    lp = lp + D.HalfNormal(c(2.0)).log_prob(s) + p["log_s"]
    return -lp, {"loc": loc}


@family
def student_t_regression(hessian=False):
    """Robust regression with Student-t errors and a learned degree of freedom
    nu = e^{log nu} under Juarez and Steel's Gamma(2, 0.1) prior (+ log nu), the scale
    HalfNormal(2) on the log scale; the density by sg.lgamma and sg.log1p. torch:
    StudentT, Gamma, HalfNormal."""
    m = sg.Model("student_t_regression", hessian=hessian)
    X, y = m.input("X", ("N", 2)), m.input("y", ("N",))
    beta, log_s, log_nu = (
        m.param("beta", (2,)),
        m.param("log_s", ()),
        m.param("log_nu", ()),
    )
    nu, s = sg.exp(log_nu), sg.exp(log_s)
    loc = m.output("loc", X @ beta)
    r = (y - loc) / s
    ll = (
        sg.lgamma((nu + 1) / 2)
        - sg.lgamma(nu / 2)
        - 0.5 * sg.log(nu * math.pi)
        - log_s
        - (nu + 1) / 2 * sg.log1p(r**2 / nu)
    )
    lp = sg.sum(ll)
    lp = lp + (2 * math.log(0.1) + log_nu - 0.1 * nu) + log_nu  # Gamma(2, 0.1)
    lp = lp + (0.5 * math.log(2 / math.pi) - math.log(2.0) - s**2 / 8) + log_s
    m.loss(-lp)
    rng = np.random.default_rng(6)
    X = np.column_stack([np.ones(6), normal(rng, 6)])
    y = X @ np.array([1.0, -0.5]) + rng.standard_t(3.0, 6)
    y[2] += 15.0  # an outlier
    params = {
        "beta": np.array([0.8, -0.3]),
        "log_s": np.array(0.2),
        "log_nu": np.array(1.0),
    }
    return m, _student_reference, params, {"X": X, "y": y}


def _gamma_weibull_reference(p, i):
    k = torch.exp(p["log_k"])
    mean = torch.exp(i["X"] @ p["b"])
    lp = D.Gamma(k, k / mean).log_prob(i["y_g"]).sum()
    lam, kw = torch.exp(p["log_lam"]), torch.exp(p["log_kw"])
    lp = lp + D.Weibull(lam, kw).log_prob(i["t"]).sum()
    lp = lp + D.Exponential(c(1.0)).log_prob(k) + p["log_k"]
    lp = lp + D.Normal(c(0.0), c(2.0)).log_prob(p["b"]).sum()
    lp = lp + D.Normal(c(0.0), c(1.0)).log_prob(p["log_lam"])
    lp = lp + D.Normal(c(0.0), c(1.0)).log_prob(p["log_kw"])
    return -lp, {"mean": mean}


@family
def gamma_weibull(hessian=False):
    """Two positive likelihoods: a Gamma GLM with a log link, parametrised by shape k
    and mean (rate k / mean; k ~ Exponential(1) on the log scale; sg.lgamma of a
    parameter, so the Hessian needs trigamma), next to a Weibull lifetime model with
    log scale and log shape (log-normal priors). torch: Gamma, Weibull."""
    m = sg.Model("gamma_weibull", hessian=hessian)
    X, y_g, t = m.input("X", ("N", 2)), m.input("y_g", ("N",)), m.input("t", ("M",))
    log_k, b = m.param("log_k", ()), m.param("b", (2,))
    log_lam, log_kw = m.param("log_lam", ()), m.param("log_kw", ())
    k = sg.exp(log_k)
    eta = X @ b
    m.output("mean", sg.exp(eta))
    lp = sg.sum(
        k * (log_k - eta)
        - sg.lgamma(k)
        + (k - 1) * sg.log(y_g)
        - k * y_g * sg.exp(-eta)
    )
    kw = sg.exp(log_kw)
    lt = sg.log(t)
    lp = lp + sg.sum(
        log_kw - log_lam + (kw - 1) * (lt - log_lam) - sg.exp(kw * (lt - log_lam))
    )
    lp = lp - k + log_k
    lp = lp + sg.sum(_normal_lp(b, 0.0, 2.0, math.log(2.0)))
    lp = lp + _normal_lp(log_lam, 0.0, 1.0, 0.0) + _normal_lp(log_kw, 0.0, 1.0, 0.0)
    m.loss(-lp)
    rng = np.random.default_rng(7)
    X = np.column_stack([np.ones(5), normal(rng, 5)])
    params = {
        "log_k": np.array(0.7),
        "b": np.array([0.2, 0.4]),
        "log_lam": np.array(0.3),
        "log_kw": np.array(0.4),
    }
    inputs = {"X": X, "y_g": rng.gamma(2.0, 1.0, 5), "t": rng.weibull(1.5, 4) * 1.3}
    return m, _gamma_weibull_reference, params, inputs


JITTER = 1e-6


def _gp_kernel_torch(p, x):
    ell, sf2 = torch.exp(p["log_ell"]), torch.exp(2 * p["log_sf"])
    d = (x[:, None, :] - x[None, :, :]) / ell
    n = x.shape[0]
    eye = torch.eye(n, dtype=f64)
    return (
        sf2 * torch.exp(-0.5 * (d**2).sum(-1))
        + (torch.exp(2 * p["log_sn"]) + JITTER) * eye
    )


def _gp_reference(p, i):
    K = _gp_kernel_torch(p, i["x"])
    n = i["x"].shape[0]
    lp = D.MultivariateNormal(torch.zeros(n, dtype=f64), covariance_matrix=K).log_prob(
        i["y"]
    )
    ell = torch.exp(p["log_ell"])
    lp = lp + (D.Gamma(c(2.0), c(2.0)).log_prob(ell) + p["log_ell"]).sum()
    lp = lp + D.Normal(c(0.0), c(1.0)).log_prob(p["log_sf"])
    lp = lp + D.Normal(c(-2.0), c(1.0)).log_prob(p["log_sn"])
    return -lp, {}


@family
def gp_ard(hessian=False):
    """The marginal likelihood of GP regression with an ARD RBF kernel, lengthscales
    learned under Gamma(2, 2) hyperpriors on the log scale, log signal and noise sd
    under normals, jitter 1e-6; -0.5 y^T K^-1 y by sg.solve, log|K| by sg.slogdet.
    torch: MultivariateNormal(covariance_matrix=K).log_prob (a Cholesky), Gamma."""
    m = sg.Model("gp_ard", hessian=hessian)
    x, y = m.input("x", ("n", 2)), m.input("y", ("n",))
    log_ell, log_sf, log_sn = (
        m.param("log_ell", (2,)),
        m.param("log_sf", ()),
        m.param("log_sn", ()),
    )
    d = (x[:, None, :] - x[None, :, :]) / sg.exp(log_ell)
    K = sg.exp(2 * log_sf) * sg.exp(-0.5 * sg.sum(d**2, axis=-1)) + (
        sg.exp(2 * log_sn) + JITTER
    ) * sg.eye(x.shape[0])
    lp = -0.5 * sg.sum(y * sg.solve(K, y)) - 0.5 * sg.slogdet(K)[1]
    lp = lp - 0.5 * LOG2PI * x.shape[0]
    ell = sg.exp(log_ell)
    lp = lp + sg.sum(2 * math.log(2.0) + log_ell - 2 * ell + log_ell)
    lp = lp + _normal_lp(log_sf, 0.0, 1.0, 0.0) + _normal_lp(log_sn, -2.0, 1.0, 0.0)
    m.loss(-lp)
    rng = np.random.default_rng(8)
    x = rng.uniform(-2, 2, (6, 2))
    y = np.sin(2 * x[:, 0]) + 0.1 * normal(rng, 6)
    params = {
        "log_ell": np.array([-0.3, 0.8]),
        "log_sf": np.array(0.1),
        "log_sn": np.array(-1.5),
    }
    return m, _gp_reference, params, {"x": x, "y": y}


def _ising_reference(p, i):
    J = torch.triu(p["W"], 1)
    J = J + J.T
    s = i["s"]
    field = p["h"] + s @ J
    lp = F.logsigmoid(2 * s * field).sum()
    lp = lp + torch.triu(D.Normal(c(0.0), c(1.0)).log_prob(p["W"]), 1).sum()
    lp = lp + D.Normal(c(0.0), c(2.0)).log_prob(p["h"]).sum()
    return -lp, {"J": J}


@family
def ising_pseudo_likelihood(hessian=False, L=4):
    """Besag's pseudo-likelihood of an Ising model on L = 4 spins s in {-1, +1}:
    sum over samples and sites of log sigmoid(2 s_i (h_i + sum_j J_ij s_j)), the
    couplings J = U + U^T with U = sg.triu(W, 1) (the diagonal and lower triangle of
    W unused: zero gradient, a zero block of the Hessian), N(0, 1) on the couplings
    (a MAP / Laplace user's prior), N(0, 2) on the fields. torch: triu, F.logsigmoid."""
    m = sg.Model("ising_pseudo_likelihood", hessian=hessian)
    s = m.input("s", ("N", L))
    h, W = m.param("h", (L,)), m.param("W", (L, L))
    U = sg.triu(W, 1)
    J = m.output("J", U + U.T)
    field = h + s @ J
    lp = sg.sum(-sg.softplus(-2 * s * field))
    lp = lp + sg.sum(sg.triu(-0.5 * W**2 - 0.5 * LOG2PI, 1))
    lp = lp + sg.sum(_normal_lp(h, 0.0, 2.0, math.log(2.0)))
    m.loss(-lp)
    rng = np.random.default_rng(9)
    s = np.where(rng.uniform(size=(5, L)) < 0.5, -1.0, 1.0)
    params = {"h": normal(rng, L, scale=0.3), "W": normal(rng, L, L, scale=0.5)}
    return m, _ising_reference, params, {"s": s}


LINALG = {"gp_ard"}

# ============================================================= 2. first and second order


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    """Loss, outputs and gradients of the hessian=True build (the one these users
    compile; the plain build's vectorized code is checked through the unrolled
    module's other sizes below) against torch and central differences."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


@pytest.mark.parametrize("name", sorted(set(FAMILIES) - LINALG))
def test_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# ======================================================================== 3. edges
# name -> (family, parameter overrides, input overrides (a function of the family's
# params and inputs, for bounds placed relative to the mean)).


def _tails(p, i, k):
    """Truncation bounds k to k + 1 sds from each row's mean (k < 0: the left tail),
    y 30 % into the interval."""
    s = math.exp(float(p["log_s"]))
    loc = i["X"] @ p["beta"]
    lo, hi = loc + k * s, loc + (k + 1) * s
    return {**i, "lo": lo, "hi": hi, "y": lo + 0.3 * (hi - lo)}


def _narrow(p, i):
    s = math.exp(float(p["log_s"]))
    loc = i["X"] @ p["beta"]
    return {**i, "lo": loc - 1e-3 * s, "hi": loc + 2e-3 * s, "y": loc + 1e-3 * s}


EDGES = {
    "schools_tau_e-20": ("eight_schools", {"log_tau": np.array(-20.0)}, None),
    "schools_tau_e20": ("eight_schools", {"log_tau": np.array(20.0)}, None),
    "sv_phi_tanh_8": ("stochastic_volatility", {"a": np.array(8.0)}, None),
    "sv_phi_tanh_-8": ("stochastic_volatility", {"a": np.array(-8.0)}, None),
    "sv_sigma_e-20": ("stochastic_volatility", {"log_sigma": np.array(-20.0)}, None),
    "logit_scale_e20": ("hierarchical_logistic", {"log_s": np.array(20.0)}, None),
    "logit_scale_e-20": ("hierarchical_logistic", {"log_s": np.array(-20.0)}, None),
    "mixture_weights_e-25": (
        "mixture_through_bijectors",
        {"x_w": np.array([-25.0, -25.0])},
        None,
    ),
    "mixture_scales_e-20": (
        "mixture_through_bijectors",
        {"x_s": np.array([-20.0, -20.0, -20.0])},
        None,
    ),
    "mixture_scales_e20": (
        "mixture_through_bijectors",
        {"x_s": np.array([20.0, 20.0, 20.0])},
        None,
    ),
    "mixture_means_tied": (
        "mixture_through_bijectors",
        {"x_mu": np.array([0.3, -20.0, -20.0])},
        None,
    ),
    "truncated_25_sd_right": (
        "truncated_normal",
        {},
        lambda p, i: _tails(p, i, 25.0),
    ),
    "truncated_25_sd_left": (
        "truncated_normal",
        {},
        lambda p, i: _tails(p, i, -26.0),
    ),
    "truncated_narrow_at_mode": ("truncated_normal", {}, _narrow),
    "horseshoe_shrunk": (
        "horseshoe",
        {"log_tau": np.array(-20.0), "log_lam": np.array([-20.0, 3.0, -5.0, 20.0])},
        None,
    ),
    "horseshoe_global_e20": ("horseshoe", {"log_tau": np.array(20.0)}, None),
    "student_df_e-4": ("student_t_regression", {"log_nu": np.array(-4.0)}, None),
    "student_df_e12": ("student_t_regression", {"log_nu": np.array(12.0)}, None),
    "gamma_shape_e-6": ("gamma_weibull", {"log_k": np.array(-6.0)}, None),
    "gamma_shape_e8": ("gamma_weibull", {"log_k": np.array(8.0)}, None),
    "weibull_shape_e3": ("gamma_weibull", {"log_kw": np.array(3.0)}, None),
    "gp_lengthscales_e-6": ("gp_ard", {"log_ell": np.array([-6.0, -6.0])}, None),
    "gp_lengthscales_e6": ("gp_ard", {"log_ell": np.array([6.0, 6.0])}, None),
    "ising_saturated": (
        "ising_pseudo_likelihood",
        {"W": 20.0 * np.sign(normal(np.random.default_rng(1), 4, 4))},
        None,
    ),
}


def _edge(case):
    name, override, make_inputs = EDGES[case]
    _, reference, params, inputs = FAMILIES[name]()
    params = {**params, **override}
    if make_inputs is not None:
        inputs = make_inputs(params, inputs)
    return name, reference, params, inputs


@pytest.mark.parametrize("case", list(EDGES))
def test_edges_first_and_second_order_and_unrolled(case):
    """Gradients against torch and central differences, the Hessian and hvp against
    torch's, and the unrolled code (not NumPy's fallback) at the same point."""
    name, reference, params, inputs = _edge(case)
    module = module_of(name, hessian=True)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs, tol=1e-5)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)
    if name not in LINALG:
        check_unrolled(module_of(name, unroll=True), reference, params, inputs)


# ================================================================== 4. sizes of one


def _cut_to_one(module, params, inputs, dims):
    """Every array cut to its first entry along the named symbolic dims."""

    def cut(arrays, spec):
        out = {}
        for key, value in arrays.items():
            for axis, d in enumerate(spec[key]):
                if d in dims:
                    value = np.take(value, [0], axis=axis)
            out[key] = value
        return out

    return cut(params, module.PARAMS), cut(inputs, module.INPUTS)


SIZES_OF_ONE = {
    "eight_schools": ("J",),
    "hierarchical_logistic": ("N", "G"),
    "mixture_through_bijectors": ("N",),
    "truncated_normal": ("N",),
    "horseshoe": ("N", "d"),
    "student_t_regression": ("N",),
    "gamma_weibull": ("N", "M"),
    "gp_ard": ("n",),
    "ising_pseudo_likelihood": ("N",),
}


@pytest.mark.parametrize("name", list(SIZES_OF_ONE))
def test_sizes_of_one_first_and_second_order(name):
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
    params, inputs = _cut_to_one(module, params, inputs, SIZES_OF_ONE[name])
    if name == "hierarchical_logistic":
        inputs["g"] = np.zeros(1, dtype=np.int64)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)
    # the plain build's vectorized code (the unrolled module runs it at other sizes)
    plain = module_of(name) if name in LINALG else module_of(name, unroll=True)
    check(plain, reference, params, inputs)


# ==================================================================== 5. closed forms


def _normal_normal(hessian=True):
    """y_n ~ N(theta, sigma^2 I) over n observations of a d-vector, theta ~ N(m0,
    tau0^2 I), sigma and tau0 known (inputs)."""
    m = sg.Model("normal_normal", hessian=hessian)
    y, m0 = m.input("y", ("n", "d")), m.input("m0", ("d",))
    sigma, tau0 = m.input("sigma", ()), m.input("tau0", ())
    theta = m.param("theta", ("d",))
    lp = sg.sum(_normal_lp(y, theta, sigma, sg.log(sigma)))
    lp = lp + sg.sum(_normal_lp(theta, m0, tau0, sg.log(tau0)))
    m.loss(-lp)
    return m


def test_conjugate_normal_laplace_is_exact():
    """The Hessian of the negative log posterior is the posterior precision n /
    sigma^2 + 1 / tau0^2 (times I) wherever theta is, sampler-far points included,
    and one Newton step from anywhere lands on the posterior mean."""
    module = compile_module(_normal_normal())
    rng = np.random.default_rng(20)
    n, d = 5, 3
    inputs = {
        "y": normal(rng, n, d) + 2.0,
        "m0": np.array([0.0, 1.0, -1.0]),
        "sigma": np.array(0.7),
        "tau0": np.array(3.0),
    }
    precision = n / 0.7**2 + 1 / 3.0**2
    mean = (inputs["y"].sum(0) / 0.7**2 + inputs["m0"] / 3.0**2) / precision
    for theta in (np.zeros(d), np.array([1e6, -1e6, 3.0]), mean):
        params = {"theta": theta}
        H = module.hessian(params, inputs)
        assert rel(H, precision * np.eye(d)) <= 1e-12
        _, g = module.value_and_grad(params, inputs)
        step = theta - np.linalg.solve(H, g["theta"])
        assert rel(step, mean) <= 1e-9 * max(1.0, np.max(np.abs(theta)) / 10)
    _, g = module.value_and_grad({"theta": mean}, inputs)
    assert np.max(np.abs(g["theta"])) <= 1e-12 * precision * np.max(np.abs(mean))


def test_bayesian_linear_regression_laplace_is_the_exact_posterior():
    """w ~ N(0, alpha^-1 I), y ~ N(X w, beta^-1): the generated Hessian is alpha I +
    beta X^T X (the posterior precision) and a Newton step from 0 is its mean
    beta S X^T y, as NumPy's solve gives."""
    m = sg.Model("blr", hessian=True)
    X, y = m.input("X", ("n", 3)), m.input("y", ("n",))
    w = m.param("w", (3,))
    alpha, beta = 0.5, 4.0
    m.loss(0.5 * beta * sg.sum((y - X @ w) ** 2) + 0.5 * alpha * sg.sum(w**2))
    module = compile_module(m)
    rng = np.random.default_rng(21)
    inputs = {"X": normal(rng, 8, 3), "y": normal(rng, 8)}
    A = alpha * np.eye(3) + beta * inputs["X"].T @ inputs["X"]
    params = {"w": np.zeros(3)}
    assert rel(module.hessian(params, inputs), A) <= 1e-12
    _, g = module.value_and_grad(params, inputs)
    w_map = -np.linalg.solve(module.hessian(params, inputs), g["w"])
    assert rel(w_map, beta * np.linalg.solve(A, inputs["X"].T @ inputs["y"])) <= 1e-12


def test_truncated_normaliser_against_mpmath_far_in_both_tails():
    """log(Phi(b) - Phi(a)) 30 and 8 sds out, and at a narrow interval, against
    mpmath at 50 digits; the value torch's naive log(ndtr(b) - ndtr(a)) gives there is
    -inf (both round to 1 or 0), so the stable form is what a sampler needs."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    module = module_of("truncated_normal", hessian=True)
    _, _, params, inputs = FAMILIES["truncated_normal"]()
    for k in (30.0, -31.0, 8.0, -9.0):
        case = _tails(params, inputs, k)
        outputs, _ = module.forward(params, case)
        s = mpmath.e ** mpmath.mpf(float(params["log_s"]))
        loc = case["X"] @ params["beta"]
        for row in range(len(loc)):
            a = (mpmath.mpf(case["lo"][row]) - mpmath.mpf(loc[row])) / s
            b = (mpmath.mpf(case["hi"][row]) - mpmath.mpf(loc[row])) / s
            exact = mpmath.log(mpmath.ncdf(b) - mpmath.ncdf(a))
            assert abs(outputs["log_z"][row] - float(exact)) <= 1e-12 * abs(exact)
        naive = torch.log(
            torch.special.ndtr(torch.tensor(k + 1.0))
            - torch.special.ndtr(torch.tensor(k))
        )
        assert torch.isinf(naive) or abs(k) < 10


def _map_logistic(hessian=True):
    m = sg.Model("map_logistic", hessian=hessian)
    X, y = m.input("X", ("n", 3)), m.input("y", ("n",))
    w = m.param("w", (3,))
    logits = X @ w
    m.loss(sg.sum(sg.softplus(logits) - y * logits) + 0.5 * sg.sum(w**2) / 4.0)
    return m


def test_newton_on_map_logistic_regression_step_for_step_with_torch():
    """Newton's method with the generated gradient and Hessian from w = 0 follows
    torch's (autograd.functional.hessian) iterate for iterate and converges
    quadratically: the gradient below 1e-12 within 7 steps."""
    module = compile_module(_map_logistic())
    rng = np.random.default_rng(22)
    X = normal(rng, 30, 3)
    y = (rng.uniform(size=30) < 1 / (1 + np.exp(-X @ np.array([1.5, -2.0, 0.5])))) * 1.0
    inputs = {"X": X, "y": y}
    tX, ty = torch.tensor(X), torch.tensor(y)

    def tloss(w):
        z = tX @ w
        return (F.softplus(z) - ty * z).sum() + 0.5 * (w**2).sum() / 4.0

    w, tw = np.zeros(3), torch.zeros(3, dtype=f64)
    norms = []
    for _ in range(7):
        _, g = module.value_and_grad({"w": w}, inputs)
        H = module.hessian({"w": w}, inputs)
        w = w - np.linalg.solve(H, g["w"])
        tg = torch.autograd.functional.jacobian(tloss, tw)
        tH = torch.autograd.functional.hessian(tloss, tw)
        tw = tw - torch.linalg.solve(tH, tg)
        assert rel(w, tw.numpy()) <= 1e-12
        norms.append(np.max(np.abs(module.value_and_grad({"w": w}, inputs)[1]["w"])))
    assert norms[-1] <= 1e-12


# ================================================================ 6. symgrad vs torch


def _log_erfc_module(scale):
    m = sg.Model(f"log_erfc_{int(scale * 1000)}", hessian=True)
    x = m.param("x", ())
    m.loss(sg.log(sg.erfc(x * scale)))
    return compile_module(m)


def _log_erfc_torch_hessian(x, scale):
    """d^2/dx^2 log erfc(scale x) by torch's stable log_ndtr: log erfc(u) =
    log 2 + log_ndtr(-sqrt 2 u)."""
    return torch.autograd.functional.hessian(
        lambda z: torch.special.log_ndtr(-SQRT2 * scale * z),
        torch.tensor(x, dtype=f64),
    ).item()


def _own_differences(module, x, h=1e-5):
    def g(z):
        return float(module.value_and_grad({"x": np.array(z)}, {})[1]["x"])

    return (g(x + h) - g(x - h)) / (2 * h)


def test_log_erfc_second_derivative_is_finite_where_torchs_naive_one_is_not():
    """The Hessian of a user's naive log(erfc(x)) 21 units out (erfc ~ 1e-193):
    torch's double backward of the same formula is -inf (erfc^2 underflows); symgrad's
    is the value torch's stable log_ndtr gives."""
    module = _log_erfc_module(1.0)
    for x in (3.0, 15.0, 21.0):
        expected = _log_erfc_torch_hessian(x, 1.0)
        assert abs(module.hessian({"x": np.array(x)}, {})[0, 0] - expected) <= 1e-9
        assert abs(_own_differences(module, x) - expected) <= 1e-6
    naive = torch.autograd.functional.hessian(
        lambda z: torch.log(torch.special.erfc(z)), torch.tensor(21.0, dtype=f64)
    )
    assert not torch.isfinite(naive)
    # 30 sds out (the test below) the value and gradient of log erfc(x / sqrt 2) are
    # right, and so are differences of that gradient
    module = _log_erfc_module(1 / SQRT2)
    tx = torch.tensor(30.0, dtype=f64, requires_grad=True)
    expected = math.log(2.0) + torch.special.log_ndtr(-tx)
    expected.backward()
    loss, grads = module.value_and_grad({"x": np.array(30.0)}, {})
    assert rel(loss, expected.item()) <= 1e-13
    assert rel(grads["x"], tx.grad.item()) <= 1e-12
    hessian = _log_erfc_torch_hessian(30.0, 1 / SQRT2)
    assert abs(_own_differences(module, 30.0) - hessian) <= 1e-6


def test_hessian_of_log_erfc_thirty_sds_out_minimal():
    """Was a strict xfail (+900.998, not -0.99890): the second derivative of log erfc
    took exp(-x^2) (0 past x = 27.3) times 1 / erfc^2; log erfc is now differentiated
    by exp(-x^2) / erfc(x) = 1 / erfcx(x), a function of its own."""
    module = _log_erfc_module(1 / SQRT2)
    x = 30.0
    expected = _log_erfc_torch_hessian(x, 1 / SQRT2)
    assert abs(_own_differences(module, x) - expected) <= 1e-6  # the gradient is right
    assert abs(module.hessian({"x": np.array(x)}, {})[0, 0] - expected) <= 1e-9


def test_truncated_normal_thirty_sds_out_second_order():
    """The truncated-normal family with intervals 30 to 31 sds right of the mean (was a
    strict xfail: the Hessian was inf 26 sds out and nan from 27)."""
    _, reference, params, inputs = FAMILIES["truncated_normal"]()
    inputs = _tails(params, inputs, 30.0)
    module = module_of("truncated_normal", hessian=True)
    check(module, reference, params, inputs)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def _hessian_by_differences(module, params, inputs, h=1e-5):
    """Central differences of the module's own gradient, one column per parameter
    entry, in PARAMS order (the judge where torch's Hessian is not finite)."""
    names = list(module.PARAMS)
    flat = np.concatenate([np.ravel(params[k]) for k in names])
    cuts = np.cumsum([np.size(params[k]) for k in names])[:-1]

    def grad(f):
        parts = np.split(f, cuts)
        p = {
            k: part.reshape(np.shape(params[k]))
            for k, part in zip(names, parts, strict=True)
        }
        g = module.value_and_grad(p, inputs)[1]
        return np.concatenate([np.ravel(g[k]) for k in names])

    columns = [
        (grad(flat + h * e) - grad(flat - h * e)) / (2 * h) for e in np.eye(flat.size)
    ]
    return np.array(columns).T


FINITE_WHERE_TORCH_IS_NOT = {
    # every stick at e^-700: torch's StickBreakingTransform + Dirichlet give a nan
    # Hessian (its first order agrees)
    "sticks_e-700": (
        "mixture_through_bijectors",
        {"x_w": np.array([-700.0, -700.0])},
    ),
    # phi = tanh 20 = 1.0 in floats: the stationary sd sigma cosh(20) puts h_0 near
    # 1e8, where torch's Normal(0, exp(h / 2)) has an infinite scale; symgrad's
    # -y^2 e^-h / 2 - h / 2 is finite
    "sv_phi_tanh_20": ("stochastic_volatility", {"a": np.array(20.0)}),
}


@pytest.mark.parametrize("case", list(FINITE_WHERE_TORCH_IS_NOT))
def test_finite_where_torchs_twin_is_not(case):
    """Gradient by central differences of the loss, Hessian and hvp by differences of
    the module's own gradient: finite and consistent where torch's twin overflows or
    gives nan."""
    name, override = FINITE_WHERE_TORCH_IS_NOT[case]
    _, _, params, inputs = FAMILIES[name]()
    params = {**params, **override}
    module = module_of(name, hessian=True)
    loss, grads = module.value_and_grad(params, inputs)
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in grads.values())
    assert_matches_central_differences(module, params, inputs, tol=1e-5)
    if name == "mixture_through_bijectors":
        check(module, FAMILIES[name]()[1], params, inputs)
    H = module.hessian(params, inputs)
    expected = _hessian_by_differences(module, params, inputs)
    assert rel(H, expected, 1e-6 * np.max(np.abs(expected))) <= 1e-5
    assert rel(H, H.T) <= 1e-12
