"""Round 18 of new-user models, with PyTorch (float64) and central finite differences
as the judges: model families not covered before (a batch of 3x3 linear systems solved
by Cramer's rule (torch: linalg.solve), an FIR filter designed against a log-magnitude
STFT by framing slices and DFT matmuls (torch: conv1d + stft), the Conway-Maxwell-Poisson
GLM with a truncated normaliser by logsumexp (torch: lgamma), skew-normal regression
through erfc (torch: special.log_ndtr), the Thomson problem on a sphere by pair gathers
(torch: triu_indices and norm), an LQR rollout with clipped actuators, ALiBi causal attention with a
hand-written layer norm by sg.var, a site-occupancy model by logaddexp, the exact
Ornstein-Uhlenbeck transition likelihood through expm1, the wing loss for facial
landmarks, a global-SSIM deblurring kernel by 2-D slicing (torch: conv2d), KL-NMF with
zeros in the data guarded by sg.where (torch: xlogy), Gibbs-energy chemical
equilibrium, a hanging chain by a reversed cumsum via sg.flip, an SE(2) pose graph with
arctan2-wrapped angles, and Arrhenius kinetics as one SymPy formula), their Hessians,
unrolled code and size-1 symbolic dims, edge cases (clips exactly at the actuator
bound, landmarks exactly at the wing kink and at zero error, empty and full detection
histories, a vanishing OU rate, extreme skewness, exact zeros of the NMF data, an
angle residual at the branch cut, a fully causal mask of one token), determinism of
the source, the command line (build + check of a user file), count inputs of other
dtypes, and the errors a user meets on typical mistakes (NumPy and math functions on
expressions, torch-style sg.max(a, b), bad axes and ddof). Found and fixed: erfc of a
negated argument lost its tail (SymPy's 2 - erfc(u)), a slice x[:, 1:] of an empty axis
gave NumPy's bare error, arctan2 at the origin and std of a constant row gave nan where
torch's gradients are 0, and sg.max(a, b) and math.exp(x) gave no hint.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import sympy as sp
from helpers import (
    Families,
    assert_matches_central_differences,
    check,
    compile_module,
    first_along,
    normal,
    rel,
    run_cli,
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


def _det3(c0, c1, c2):
    """det [c0 c1 c2] of (B, 3) columns: c0 . (c1 x c2)."""
    return (
        c0[:, 0] * (c1[:, 1] * c2[:, 2] - c1[:, 2] * c2[:, 1])
        - c0[:, 1] * (c1[:, 0] * c2[:, 2] - c1[:, 2] * c2[:, 0])
        + c0[:, 2] * (c1[:, 0] * c2[:, 1] - c1[:, 1] * c2[:, 0])
    )


@family
def cramer_linear_systems(hessian=False):
    """A batch of 3x3 systems (A0_b + M) x = b_b with a learned shared correction M,
    solved by Cramer's rule (determinants of the matrix with one column replaced by b,
    each a triple product of column slices), regressed onto known solutions."""
    rng = np.random.default_rng(0)
    m = sg.Model("cramer_linear_systems", hessian=hessian)
    A0, b = m.input("A0", ("B", 3, 3)), m.input("b", ("B", 3))
    xstar = m.input("xstar", ("B", 3))
    M = m.param("M", (3, 3))
    A = A0 + M
    cols = [A[:, :, k] for k in range(3)]
    det = m.output("det", _det3(*cols))
    xs = []
    for k in range(3):
        replaced = [b if j == k else cols[j] for j in range(3)]
        xs.append(_det3(*replaced) / det)
    x = m.output("x", sg.stack(xs, axis=1))
    m.loss(sg.mean(sg.sum((x - xstar) ** 2, axis=1)))

    def reference(p, i):
        A = i["A0"] + p["M"]
        x = torch.linalg.solve(A, i["b"])
        loss = ((x - i["xstar"]) ** 2).sum(1).mean()
        return loss, {"det": torch.linalg.det(A), "x": x}

    B = 6
    A0 = normal(rng, B, 3, 3) + 3 * np.eye(3)
    return (
        m,
        reference,
        {"M": normal(rng, 3, 3, scale=0.2)},
        {"A0": A0, "b": normal(rng, B, 3), "xstar": normal(rng, B, 3)},
    )


N_FFT, HOP, FIR = 8, 4, 5


def _dft_matrices():
    k = np.arange(N_FFT // 2 + 1)[:, None]
    n = np.arange(N_FFT)[None, :]
    return np.cos(2 * np.pi * k * n / N_FFT), np.sin(2 * np.pi * k * n / N_FFT)


@family
def stft_fir_design(hessian=False):
    """An FIR filter h (5 taps) applied to a batch of signals by shifted slices (a
    valid correlation), framed by slices of length 8 with hop 4 (sg.stack), Hann
    windowed, transformed by DFT matrices (cos and sin as inputs, one matmul each),
    fitted in log power to target spectrograms."""
    rng = np.random.default_rng(0)
    m = sg.Model("stft_fir_design", hessian=hessian)
    x = m.input("x", ("B", 32))
    window = m.input("window", (N_FFT,))
    C, S = m.input("C", (N_FFT // 2 + 1, N_FFT)), m.input("S", (N_FFT // 2 + 1, N_FFT))
    target = m.input("target", ("B", 6, N_FFT // 2 + 1))
    h = m.param("h", (FIR,))
    n_out = 32 - FIR + 1
    y = sum(h[k] * x[:, k : k + n_out] for k in range(FIR))
    n_frames = (n_out - N_FFT) // HOP + 1
    frames = sg.stack(
        [y[:, f * HOP : f * HOP + N_FFT] for f in range(n_frames)], axis=1
    )  # (B, 6, 8)
    frames = frames * window
    re_ = frames @ C.T
    im = -(frames @ S.T)
    logp = m.output("log_power", sg.log(re_**2 + im**2 + 1e-6))
    m.loss(sg.mean((logp - target) ** 2))

    def reference(p, i):
        y = F.conv1d(i["x"][:, None, :], p["h"][None, None, :])[:, 0]
        spec = torch.stft(
            y,
            n_fft=N_FFT,
            hop_length=HOP,
            window=i["window"],
            center=False,
            return_complex=True,
        )  # (B, freq, frames)
        logp = torch.log(spec.abs() ** 2 + 1e-6).transpose(1, 2)
        return ((logp - i["target"]) ** 2).mean(), {"log_power": logp}

    C, S = _dft_matrices()
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)
    inputs = {
        "x": normal(rng, 3, 32),
        "window": window,
        "C": C,
        "S": S,
        "target": normal(rng, 3, 6, 5, scale=0.5),
    }
    return m, reference, {"h": normal(rng, FIR, scale=0.5)}, inputs


K_MAX = 30


@family
def conway_maxwell_poisson(hessian=False):
    """The COM-Poisson GLM: log p(y) = y log lam - nu log y! - log Z, with Z truncated
    at k = 0..29 and taken by logsumexp; log y! gathered from a table by the int64
    counts; the mean count as an output (a softmax over the support)."""
    rng = np.random.default_rng(0)
    m = sg.Model("conway_maxwell_poisson", hessian=hessian)
    X = m.input("X", ("B", 2))
    y = m.input("y", ("B",), dtype="int64")
    yf = m.input("yf", ("B",))
    k, lgk = m.input("k", (K_MAX,)), m.input("lgk", (K_MAX,))
    w, b, log_nu = m.param("w", (2,)), m.param("b", ()), m.param("log_nu", ())
    nu = sg.exp(log_nu)
    loglam = X @ w + b
    terms = loglam[:, None] * k - nu * lgk
    logZ = sg.logsumexp(terms, axis=1)
    m.output("mean_count", sg.sum(sg.softmax(terms, axis=1) * k, axis=1))
    m.loss(-sg.mean(yf * loglam - nu * lgk[y] - logZ))

    def reference(p, i):
        nu = p["log_nu"].exp()
        loglam = i["X"] @ p["w"] + p["b"]
        k = torch.arange(K_MAX, dtype=torch.float64)
        terms = loglam[:, None] * k - nu * torch.lgamma(k + 1)
        logZ = torch.logsumexp(terms, 1)
        yf = i["y"].double()
        ll = yf * loglam - nu * torch.lgamma(yf + 1) - logZ
        mean = (terms.softmax(1) * k).sum(1)
        return -ll.mean(), {"mean_count": mean}

    B = 9
    counts = rng.poisson(2.5, B).astype(np.int64)
    ks = np.arange(K_MAX, dtype=float)
    inputs = {
        "X": normal(rng, B, 2, scale=0.5),
        "y": counts,
        "yf": counts.astype(float),
        "k": ks,
        "lgk": np.array([math.lgamma(v + 1) for v in ks]),
    }
    params = {
        "w": np.array([0.3, -0.2]),
        "b": np.array(0.8),
        "log_nu": np.array(-0.2),
    }
    return m, reference, params, inputs


@family
def skew_normal_regression(hessian=False):
    """Azzalini's skew-normal regression: log 2 + log phi(z) - log sigma + log Phi(a z)
    with Phi(t) = erfc(-t / sqrt 2) / 2, z = (y - x.w - b) / sigma."""
    rng = np.random.default_rng(0)
    m = sg.Model("skew_normal_regression", hessian=hessian)
    X, y = m.input("X", ("B", 3)), m.input("y", ("B",))
    w, b = m.param("w", (3,)), m.param("b", ())
    log_sigma, alpha = m.param("log_sigma", ()), m.param("alpha", ())
    z = m.output("z", (y - X @ w - b) / sg.exp(log_sigma))
    log_Phi = sg.log(0.5 * sg.erfc(-alpha * z / math.sqrt(2)))
    ll = math.log(2) - 0.5 * z**2 - 0.5 * math.log(2 * math.pi) - log_sigma + log_Phi
    m.loss(-sg.mean(ll))

    def reference(p, i):
        z = (i["y"] - i["X"] @ p["w"] - p["b"]) / p["log_sigma"].exp()
        ll = (
            math.log(2)
            - 0.5 * z**2
            - 0.5 * math.log(2 * math.pi)
            - p["log_sigma"]
            + torch.special.log_ndtr(p["alpha"] * z)
        )
        return -ll.mean(), {"z": z}

    B = 12
    X = normal(rng, B, 3)
    y = X @ [0.5, -1.0, 0.2] + np.abs(normal(rng, B))
    params = {
        "w": np.array([0.4, -0.8, 0.1]),
        "b": np.array(0.1),
        "log_sigma": np.array(-0.1),
        "alpha": np.array(2.0),
    }
    return m, reference, params, {"X": X, "y": y}


@family
def thomson_sphere(hessian=False):
    """The Thomson problem: N unit charges on a sphere in spherical angles, the
    Coulomb energy over all pairs i < j by two int64 gathers of the positions."""
    rng = np.random.default_rng(0)
    m = sg.Model("thomson_sphere", hessian=hessian)
    i_, j_ = m.input("i", ("P",), dtype="int64"), m.input("j", ("P",), dtype="int64")
    theta, phi = m.param("theta", ("N",)), m.param("phi", ("N",))
    st = sg.sin(theta)
    pos = m.output(
        "pos", sg.stack([st * sg.cos(phi), st * sg.sin(phi), sg.cos(theta)], axis=1)
    )
    d = pos[i_] - pos[j_]
    m.loss(sg.sum(1 / sg.sqrt(sg.sum(d * d, axis=1))))

    def reference(p, i):
        th, ph = p["theta"], p["phi"]
        pos = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], 1)
        # (torch.pdist has no double backward: the pairs by triu_indices)
        a, b = torch.triu_indices(len(th), len(th), 1)
        r = (pos[a] - pos[b]).norm(dim=1)
        return r.reciprocal().sum(), {"pos": pos}

    N = 5
    ii, jj = np.triu_indices(N, 1)
    params = {
        "theta": rng.uniform(0.3, 2.8, N),
        "phi": rng.uniform(-3, 3, N),
    }
    return m, reference, params, {"i": ii.astype(np.int64), "j": jj.astype(np.int64)}


LQR_T = 8


@family
def lqr_clipped_rollout(hessian=False):
    """A linear feedback law u = clip(-K x, -1, 1) rolled out for 8 steps of a
    double-integrator pair x' = x A^T + u B^T from a batch of initial states, the
    quadratic cost x'Qx + 0.1 |u|^2 summed over time, averaged over the batch."""
    rng = np.random.default_rng(0)
    m = sg.Model("lqr_clipped_rollout", hessian=hessian)
    x0 = m.input("x0", ("B", 4))
    A, Bm = m.input("A", (4, 4)), m.input("Bm", (4, 2))
    q = m.input("q", (4,))
    K = m.param("K", (2, 4))
    x, cost = x0, 0.0
    for _ in range(LQR_T):
        u = sg.clip(-(x @ K.T), -1.0, 1.0)
        cost = cost + sg.sum(q * x**2, axis=1) + 0.1 * sg.sum(u**2, axis=1)
        x = x @ A.T + u @ Bm.T
    m.output("x_final", x)
    m.loss(sg.mean(cost + sg.sum(q * x**2, axis=1)))

    def reference(p, i):
        x, cost = i["x0"], 0.0
        for _ in range(LQR_T):
            u = torch.clamp(-(x @ p["K"].T), -1.0, 1.0)
            cost = cost + (i["q"] * x**2).sum(1) + 0.1 * (u**2).sum(1)
            x = x @ i["A"].T + u @ i["Bm"].T
        return (cost + (i["q"] * x**2).sum(1)).mean(), {"x_final": x}

    dt = 0.2
    A1 = np.array([[1, dt], [0, 1]])
    A = np.kron(np.eye(2), A1)
    Bm = np.kron(np.eye(2), np.array([[0.5 * dt**2], [dt]]))
    inputs = {
        "x0": normal(rng, 5, 4),
        "A": A,
        "Bm": Bm,
        "q": np.array([1, 0.1, 1, 0.1]),
    }
    return m, reference, {"K": normal(rng, 2, 4, scale=0.6)}, inputs


D_MODEL, HEADS = 8, 2
DH = D_MODEL // HEADS
SLOPES = (0.5, 0.25)


@family
def alibi_causal_attention(hessian=False):
    """Pre-norm causal self-attention with ALiBi (no position embeddings: head h adds
    -slope_h * (i - j) to its scores), a layer norm written by hand with sg.var and
    keepdims, heads as column slices joined by sg.concatenate, the causal mask by
    sg.where on the relative-position input (masked with -1e30), and a residual."""
    rng = np.random.default_rng(0)
    m = sg.Model("alibi_causal_attention", hessian=hessian)
    x = m.input("x", ("B", "T", D_MODEL))
    rel = m.input("rel", ("T", "T"))  # rel[i, j] = i - j
    target = m.input("target", ("B", "T", D_MODEL))
    g, beta = m.param("g", (D_MODEL,)), m.param("beta", (D_MODEL,))
    Wq, Wk = m.param("Wq", (D_MODEL, D_MODEL)), m.param("Wk", (D_MODEL, D_MODEL))
    Wv, Wo = m.param("Wv", (D_MODEL, D_MODEL)), m.param("Wo", (D_MODEL, D_MODEL))
    mu = sg.mean(x, axis=-1, keepdims=True)
    h = (x - mu) / sg.sqrt(sg.var(x, axis=-1, keepdims=True) + 1e-5) * g + beta
    q, k, v = h @ Wq.T, h @ Wk.T, h @ Wv.T
    heads = []
    for hd in range(HEADS):
        sl = slice(hd * DH, (hd + 1) * DH)
        s = sg.einsum("bid,bjd->bij", q[:, :, sl], k[:, :, sl]) / math.sqrt(DH)
        s = sg.where(rel >= 0, s - SLOPES[hd] * rel, -1e30)
        heads.append(sg.softmax(s, axis=-1) @ v[:, :, sl])
    out = m.output("out", x + sg.concatenate(heads, axis=-1) @ Wo.T)
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        x = i["x"]
        T = x.shape[1]
        h = F.layer_norm(x, (D_MODEL,), p["g"], p["beta"], eps=1e-5)
        B = x.shape[0]
        q = (h @ p["Wq"].T).view(B, T, HEADS, DH).transpose(1, 2)
        k = (h @ p["Wk"].T).view(B, T, HEADS, DH).transpose(1, 2)
        v = (h @ p["Wv"].T).view(B, T, HEADS, DH).transpose(1, 2)
        pos = torch.arange(T)
        dist = (pos[:, None] - pos[None, :]).double()
        bias = -torch.tensor(SLOPES, dtype=torch.float64)[:, None, None] * dist
        bias = bias.masked_fill(dist < 0, float("-inf"))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = x + att.transpose(1, 2).reshape(B, T, D_MODEL) @ p["Wo"].T
        return ((out - i["target"]) ** 2).mean(), {"out": out}

    B, T = 2, 5
    pos = np.arange(T)
    params = {
        "g": 1 + normal(rng, D_MODEL, scale=0.1),
        "beta": normal(rng, D_MODEL, scale=0.1),
        **{
            k: normal(rng, D_MODEL, D_MODEL, scale=0.35)
            for k in ("Wq", "Wk", "Wv", "Wo")
        },
    }
    inputs = {
        "x": normal(rng, B, T, D_MODEL),
        "rel": (pos[:, None] - pos[None, :]).astype(float),
        "target": normal(rng, B, T, D_MODEL),
    }
    return m, reference, params, inputs


@family
def site_occupancy(hessian=False):
    """MacKenzie's site-occupancy model: site s is occupied with probability psi_s
    (logistic in site covariates), detected on each visit with probability p_sj
    (logistic in a visit covariate); a site never detected may be empty:
    log L_s = logaddexp(log psi + sum_j log Bern(y | p), log(1 - psi)) there, and the
    first term alone where something was seen (sg.where on the detection count)."""
    rng = np.random.default_rng(0)
    m = sg.Model("site_occupancy", hessian=hessian)
    Y = m.input("Y", ("S", "J"))
    Xs, Xv = m.input("Xs", ("S", 2)), m.input("Xv", ("S", "J"))
    a, a0 = m.param("a", (2,)), m.param("a0", ())
    bv, b0 = m.param("bv", ()), m.param("b0", ())
    eta_psi = Xs @ a + a0
    eta_p = bv * Xv + b0
    log_det = sg.sum(-Y * sg.softplus(-eta_p) - (1 - Y) * sg.softplus(eta_p), axis=1)
    occupied = -sg.softplus(-eta_psi) + log_det
    empty = -sg.softplus(eta_psi)
    seen = sg.sum(Y, axis=1)
    ll = sg.where(seen > 0, occupied, sg.logaddexp(occupied, empty))
    m.output("psi", sg.sigmoid(eta_psi))
    m.loss(-sg.sum(ll))

    def reference(p, i):
        eta_psi = i["Xs"] @ p["a"] + p["a0"]
        eta_p = p["bv"] * i["Xv"] + p["b0"]
        log_det = (
            i["Y"] * F.logsigmoid(eta_p) + (1 - i["Y"]) * F.logsigmoid(-eta_p)
        ).sum(1)
        occupied = F.logsigmoid(eta_psi) + log_det
        never = i["Y"].sum(1) == 0
        ll = torch.where(
            never, torch.logaddexp(occupied, F.logsigmoid(-eta_psi)), occupied
        )
        return -ll.sum(), {"psi": torch.sigmoid(eta_psi)}

    S, J = 10, 4
    Xs, Xv = normal(rng, S, 2), normal(rng, S, J)
    z = rng.random(S) < 0.6
    Y = ((rng.random((S, J)) < 0.5) & z[:, None]).astype(float)
    params = {
        "a": np.array([0.5, -0.3]),
        "a0": np.array(0.2),
        "bv": np.array(0.4),
        "b0": np.array(-0.1),
    }
    return m, reference, params, {"Y": Y, "Xs": Xs, "Xv": Xv}


OU_DT = 0.1


@family
def ornstein_uhlenbeck_exact(hessian=False):
    """The exact transition density of an Ornstein-Uhlenbeck process observed every
    dt = 0.1: mean mu + (x - mu) e^(-theta dt), variance sigma^2 (1 - e^(-2 theta dt))
    / (2 theta) written with -expm1, over consecutive slices x[:, 1:], x[:, :-1]."""
    rng = np.random.default_rng(0)
    m = sg.Model("ornstein_uhlenbeck_exact", hessian=hessian)
    x = m.input("x", ("B", "T"))
    log_theta, mu = m.param("log_theta", ()), m.param("mu", ())
    log_sigma = m.param("log_sigma", ())
    theta = sg.exp(log_theta)
    decay = sg.exp(-theta * OU_DT)
    var = m.output(
        "var", sg.exp(2 * log_sigma) * -sg.expm1(-2 * theta * OU_DT) / (2 * theta)
    )
    mean = mu + (x[:, :-1] - mu) * decay
    nll = 0.5 * sg.log(2 * math.pi * var) + (x[:, 1:] - mean) ** 2 / (2 * var)
    m.loss(sg.mean(sg.sum(nll, axis=1)))

    def reference(p, i):
        theta = p["log_theta"].exp()
        var = (
            (2 * p["log_sigma"]).exp() * -torch.expm1(-2 * theta * OU_DT) / (2 * theta)
        )
        x = i["x"]
        mean = p["mu"] + (x[:, :-1] - p["mu"]) * torch.exp(-theta * OU_DT)
        dist = torch.distributions.Normal(mean, var.sqrt())
        return -dist.log_prob(x[:, 1:]).sum(1).mean(), {"var": var}

    B, T = 3, 12
    x = np.zeros((B, T))
    x[:, 0] = normal(rng, B)
    for t in range(1, T):
        x[:, t] = 0.5 + (x[:, t - 1] - 0.5) * math.exp(-0.2) + 0.3 * normal(rng, B)
    params = {
        "log_theta": np.array(math.log(1.5)),
        "mu": np.array(0.2),
        "log_sigma": np.array(-0.5),
    }
    return m, reference, params, {"x": x}


WING_W, WING_EPS = 0.5, 0.1


@family
def wing_loss_landmarks(hessian=False):
    """Feng et al.'s wing loss for landmark regression: w log(1 + |d| / eps) below
    |d| < w, |d| - C above (C makes it continuous), by sg.where on |d| from a linear
    head."""
    rng = np.random.default_rng(0)
    m = sg.Model("wing_loss_landmarks", hessian=hessian)
    x, target = m.input("x", ("B", 6)), m.input("target", ("B", 4))
    W, b = m.param("W", (4, 6)), m.param("b", (4,))
    pred = m.output("pred", x @ W.T + b)
    d = sg.abs(pred - target)
    C = WING_W - WING_W * math.log(1 + WING_W / WING_EPS)
    wing = sg.where(d < WING_W, WING_W * sg.log1p(d / WING_EPS), d - C)
    m.loss(sg.mean(sg.sum(wing, axis=1)))

    def reference(p, i):
        pred = i["x"] @ p["W"].T + p["b"]
        d = (pred - i["target"]).abs()
        C = WING_W - WING_W * math.log(1 + WING_W / WING_EPS)
        wing = torch.where(d < WING_W, WING_W * torch.log1p(d / WING_EPS), d - C)
        return wing.sum(1).mean(), {"pred": pred}

    params = {"W": normal(rng, 4, 6, scale=0.3), "b": normal(rng, 4, scale=0.1)}
    return m, reference, params, {"x": normal(rng, 7, 6), "target": normal(rng, 7, 4)}


SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


@family
def ssim_deblur_kernel(hessian=False):
    """A 3x3 restoration kernel (a valid 2-D correlation by nine shifted slices)
    scored by a global SSIM per image: means and variances over axis=(1, 2) with sg.var,
    the covariance as a mean of products; loss 1 - mean SSIM."""
    rng = np.random.default_rng(0)
    m = sg.Model("ssim_deblur_kernel", hessian=hessian)
    X, T = m.input("X", ("B", 8, 8)), m.input("T", ("B", 6, 6))
    k = m.param("k", (3, 3))
    Y = sum(k[a, c] * X[:, a : a + 6, c : c + 6] for a in range(3) for c in range(3))
    m.output("Y", Y)
    mu_y = sg.mean(Y, axis=(1, 2), keepdims=True)
    mu_t = sg.mean(T, axis=(1, 2), keepdims=True)
    cov = sg.mean((Y - mu_y) * (T - mu_t), axis=(1, 2))
    mu_y, mu_t = mu_y[:, 0, 0], mu_t[:, 0, 0]
    num = (2 * mu_y * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_y**2 + mu_t**2 + SSIM_C1) * (
        sg.var(Y, axis=(1, 2)) + sg.var(T, axis=(1, 2)) + SSIM_C2
    )
    ssim = m.output("ssim", num / den)
    m.loss(1 - sg.mean(ssim))

    def reference(p, i):
        Y = F.conv2d(i["X"][:, None], p["k"][None, None])[:, 0]
        T = i["T"]
        mu_y, mu_t = Y.mean((1, 2)), T.mean((1, 2))
        cov = ((Y - mu_y[:, None, None]) * (T - mu_t[:, None, None])).mean((1, 2))
        vy = Y.var((1, 2), unbiased=False)
        vt = T.var((1, 2), unbiased=False)
        ssim = ((2 * mu_y * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)) / (
            (mu_y**2 + mu_t**2 + SSIM_C1) * (vy + vt + SSIM_C2)
        )
        return 1 - ssim.mean(), {"Y": Y, "ssim": ssim}

    B = 3
    T = rng.random((B, 6, 6))
    X = rng.random((B, 8, 8))
    X[:, 1:7, 1:7] = 0.6 * T + 0.4 * X[:, 1:7, 1:7]
    k = np.full((3, 3), 0.05)
    k[1, 1] = 0.6
    return m, reference, {"k": k + normal(rng, 3, 3, scale=0.02)}, {"X": X, "T": T}


@family
def kl_nmf(hessian=False):
    """Nonnegative matrix factorisation under the generalised KL divergence
    sum V log(V / WH) - V + WH, the factors positive by softplus; the data has exact
    zeros, where V log(V / WH) is 0 (sg.where on V > 0; torch: xlogy)."""
    rng = np.random.default_rng(0)
    m = sg.Model("kl_nmf", hessian=hessian)
    V = m.input("V", ("F", "N"))
    Wr, Hr = m.param("Wr", ("F", 2)), m.param("Hr", (2, "N"))
    WH = m.output("WH", sg.softplus(Wr) @ sg.softplus(Hr))
    m.loss(sg.sum(sg.where(V > 0, V * sg.log(V / WH), 0.0) - V + WH))

    def reference(p, i):
        WH = F.softplus(p["Wr"]) @ F.softplus(p["Hr"])
        V = i["V"]
        # (xlogy(V, V / WH) has a 0/0 gradient where V = 0: split the log)
        kl = torch.xlogy(V, V) - torch.xlogy(V, WH) - V + WH
        return kl.sum(), {"WH": WH}

    Fd, N = 6, 5
    V = rng.poisson(2.0, (Fd, N)).astype(float)
    V[0, 0] = V[2, 3] = 0.0
    params = {"Wr": normal(rng, Fd, 2, scale=0.5), "Hr": normal(rng, 2, N, scale=0.5)}
    return m, reference, params, {"V": V}


@family
def gibbs_equilibrium(hessian=False):
    """Chemical equilibrium of an ideal-gas mixture by Gibbs-energy minimisation in
    log-moles z: G = sum n (mu0 + log(n / sum n)) with n = exp(z), element balance
    A n = b by a quadratic penalty; mole fractions as an output."""
    rng = np.random.default_rng(0)
    m = sg.Model("gibbs_equilibrium", hessian=hessian)
    mu0, A = m.input("mu0", ("S",)), m.input("A", (2, "S"))
    b = m.input("b", (2,))
    z = m.param("z", ("S",))
    n = sg.exp(z)
    total = sg.sum(n)
    frac = m.output("frac", n / total)
    G = sg.sum(n * (mu0 + sg.log(frac)))
    m.loss(G + 50.0 * sg.sum((A @ n - b) ** 2))

    def reference(p, i):
        n = p["z"].exp()
        frac = n / n.sum()
        G = (n * (i["mu0"] + frac.log())).sum()
        return G + 50.0 * ((i["A"] @ n - i["b"]) ** 2).sum(), {"frac": frac}

    # H2, O2, H2O, OH, H: element rows H and O
    A = np.array([[2, 0, 2, 1, 1], [0, 2, 1, 1, 0]], float)
    inputs = {
        "mu0": np.array([-1.0, -2.0, -8.0, -3.0, 0.5]),
        "A": A,
        "b": np.array([2.0, 1.0]),
    }
    return m, reference, {"z": normal(rng, 5, scale=0.3) - 1}, inputs


CHAIN_L = 6


@family
def hanging_chain(hessian=False):
    """A chain of 6 rigid links of length 1/6 hanging from the origin, its link angles
    the parameters: the potential energy sum_i m_i y_i written as
    sum_k (l sin theta_k) * (mass carried by link k), the carried mass a reversed
    cumsum (sg.flip of sg.cumsum of sg.flip), the end pinned by a spring through
    x = cumsum(l cos theta), plus bending stiffness; joint positions as outputs."""
    rng = np.random.default_rng(0)
    m = sg.Model("hanging_chain", hessian=hessian)
    mass, end = m.input("mass", (CHAIN_L,)), m.input("end", (2,))
    theta = m.param("theta", (CHAIN_L,))
    ell = 1.0 / CHAIN_L
    carried = sg.flip(sg.cumsum(sg.flip(mass)))
    xs = m.output("xs", sg.cumsum(ell * sg.cos(theta)))
    ys = m.output("ys", sg.cumsum(ell * sg.sin(theta)))
    potential = sg.sum(ell * sg.sin(theta) * carried) * 9.81
    spring = 500.0 * ((xs[-1] - end[0]) ** 2 + (ys[-1] - end[1]) ** 2)
    bending = 0.05 * sg.sum((theta[1:] - theta[:-1]) ** 2)
    m.loss(potential + spring + bending)

    def reference(p, i):
        th = p["theta"]
        xs = torch.cumsum(ell * th.cos(), 0)
        ys = torch.cumsum(ell * th.sin(), 0)
        potential = 9.81 * (i["mass"] * ys).sum()
        end = i["end"]
        spring = 500.0 * ((xs[-1] - end[0]) ** 2 + (ys[-1] - end[1]) ** 2)
        bending = 0.05 * ((th[1:] - th[:-1]) ** 2).sum()
        return potential + spring + bending, {"xs": xs, "ys": ys}

    theta0 = np.linspace(-1.2, 1.2, CHAIN_L) + normal(rng, CHAIN_L, scale=0.05)
    inputs = {"mass": rng.uniform(0.5, 1.5, CHAIN_L), "end": np.array([0.7, 0.0])}
    return m, reference, {"theta": theta0}, inputs


@family
def se2_pose_graph(hessian=False):
    """2-D pose-graph SLAM: poses (x, y, heading) gathered at both ends of each
    odometry/loop-closure edge by int64 indices, the relative translation rotated into
    the first pose's frame, the heading residual wrapped to (-pi, pi] by
    arctan2(sin, cos); information-weighted squares plus a prior on pose 0."""
    rng = np.random.default_rng(0)
    m = sg.Model("se2_pose_graph", hessian=hessian)
    ei, ej = m.input("ei", ("E",), dtype="int64"), m.input("ej", ("E",), dtype="int64")
    meas, info = m.input("meas", ("E", 3)), m.input("info", (3,))
    poses = m.param("poses", ("N", 3))
    pi_, pj = poses[ei], poses[ej]
    dx, dy = pj[:, 0] - pi_[:, 0], pj[:, 1] - pi_[:, 1]
    c, s = sg.cos(pi_[:, 2]), sg.sin(pi_[:, 2])
    ex = c * dx + s * dy - meas[:, 0]
    ey = -s * dx + c * dy - meas[:, 1]
    dth = pj[:, 2] - pi_[:, 2] - meas[:, 2]
    eth = m.output("heading_error", sg.arctan2(sg.sin(dth), sg.cos(dth)))
    r = sg.stack([ex, ey, eth], axis=1)
    m.loss(sg.sum(info * r**2) + 100.0 * sg.sum(poses[0] ** 2))

    def reference(p, i):
        P = p["poses"]
        a, b = P[i["ei"]], P[i["ej"]]
        d = b[:, :2] - a[:, :2]
        c, s = a[:, 2].cos(), a[:, 2].sin()
        R_T = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)
        e_xy = (R_T @ d[:, :, None])[:, :, 0] - i["meas"][:, :2]
        dth = b[:, 2] - a[:, 2] - i["meas"][:, 2]
        eth = torch.atan2(dth.sin(), dth.cos())
        r = torch.cat([e_xy, eth[:, None]], 1)
        return (i["info"] * r**2).sum() + 100.0 * (P[0] ** 2).sum(), {
            "heading_error": eth
        }

    N = 5
    ang = np.linspace(0, 2 * np.pi, N, endpoint=False)
    truth = np.stack([np.cos(ang), np.sin(ang), ang + np.pi / 2], 1)
    ei = np.array([0, 1, 2, 3, 4, 0], np.int64)
    ej = np.array([1, 2, 3, 4, 0, 2], np.int64)
    meas = []
    for a_, b_ in zip(ei, ej, strict=True):
        d = truth[b_, :2] - truth[a_, :2]
        c, s = np.cos(truth[a_, 2]), np.sin(truth[a_, 2])
        dth = (truth[b_, 2] - truth[a_, 2] + np.pi) % (2 * np.pi) - np.pi
        meas.append([c * d[0] + s * d[1], -s * d[0] + c * d[1], dth])
    meas = np.array(meas) + normal(rng, len(ei), 3, scale=0.05)
    poses = truth + normal(rng, N, 3, scale=0.1)
    inputs = {"ei": ei, "ej": ej, "meas": meas, "info": np.array([1.0, 1.0, 4.0])}
    return m, reference, {"poses": poses}, inputs


@family
def arrhenius_from_expr(hessian=False):
    """First-order decay at several temperatures with an Arrhenius rate, one SymPy
    formula: c = c0 exp(-A exp(-Ea / (R T)) t), log A and Ea in kJ/mol learned."""
    rng = np.random.default_rng(0)
    lnA, Ea, c0, t, T, c = sp.symbols("lnA Ea c0 t T c")
    R = sp.Float(8.314e-3)
    pred = c0 * sp.exp(-sp.exp(lnA - Ea / (R * T)) * t)
    m = sg.Model.from_expr(
        "arrhenius_from_expr",
        loss=(pred - c) ** 2,
        params=[lnA, Ea, c0],
        inputs=[t, T, c],
        reduce="mean",
        hessian=hessian,
    )

    def reference(p, i):
        k = torch.exp(p["lnA"] - p["Ea"] / (8.314e-3 * i["T"]))
        pred = p["c0"] * torch.exp(-k * i["t"])
        return ((pred - i["c"]) ** 2).mean(), {}

    B = 15
    T_ = rng.choice([300.0, 320.0, 340.0], B)
    t_ = rng.uniform(0, 10, B)
    c_ = 2.0 * np.exp(-np.exp(20.0 - 55.0 / (8.314e-3 * T_)) * t_) + 0.02 * normal(
        rng, B
    )
    params = {"lnA": np.array(19.5), "Ea": np.array(54.0), "c0": np.array(1.9)}
    return m, reference, params, {"t": t_, "T": T_, "c": c_}


# ===================================================================== 2. the families

module_of = FAMILIES.module


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


HESSIAN_FAMILIES = [
    "cramer_linear_systems",
    "conway_maxwell_poisson",
    "skew_normal_regression",
    "thomson_sphere",
    "site_occupancy",
    "ornstein_uhlenbeck_exact",
    "wing_loss_landmarks",
    "gibbs_equilibrium",
    "hanging_chain",
    "se2_pose_graph",
    "arrhenius_from_expr",
    "kl_nmf",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = [
    "cramer_linear_systems",
    "skew_normal_regression",
    "thomson_sphere",
    "site_occupancy",
    "ornstein_uhlenbeck_exact",
    "wing_loss_landmarks",
    "kl_nmf",
    "gibbs_equilibrium",
    "se2_pose_graph",
]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_its_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


@pytest.mark.parametrize(
    "name, dim, n",
    [
        ("cramer_linear_systems", "B", 1),
        ("stft_fir_design", "B", 1),
        ("conway_maxwell_poisson", "B", 1),
        ("skew_normal_regression", "B", 1),
        ("lqr_clipped_rollout", "B", 1),
        ("alibi_causal_attention", "T", 1),
        ("alibi_causal_attention", "B", 1),
        ("site_occupancy", "S", 1),
        ("site_occupancy", "J", 1),
        ("ornstein_uhlenbeck_exact", "T", 2),
        ("ornstein_uhlenbeck_exact", "B", 1),
        ("wing_loss_landmarks", "B", 1),
        ("ssim_deblur_kernel", "B", 1),
        ("kl_nmf", "F", 1),
        ("kl_nmf", "N", 1),
        ("gibbs_equilibrium", "S", 1),
        ("se2_pose_graph", "E", 1),
        ("arrhenius_from_expr", "batch", 1),
    ],
)
def test_other_sizes_of_a_symbolic_dim_agree_with_pytorch(name, dim, n):
    """The same module at size 1 (or the smallest the model allows) of one dim;
    parameters and square inputs with that dim are cut as well."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    small = first_along(module, inputs, dim, n)
    cut = {}
    for key, value in params.items():
        for axis, d in enumerate(module.PARAMS[key]):
            if d == dim:
                value = np.take(value, np.arange(n), axis=axis)
        cut[key] = value
    check(module, reference, cut, small)
    assert_matches_central_differences(module, cut, small)


# ===================================================================== 3. edge cases


def test_lqr_actions_exactly_at_the_actuator_bounds_pass_the_gradient_as_clamp():
    """-K x0 = +1 and -1 exactly at step 0 (torch.clamp passes the gradient on the
    bound itself)."""
    _, reference, params, inputs = FAMILIES["lqr_clipped_rollout"]()
    K = params["K"].copy()
    K[0] = [-1.0, 0.0, 0.25, 0.5]
    K[1] = [0.5, 0.25, 2.0, 0.0]
    x0 = inputs["x0"].copy()
    x0[0] = [1.0, 0.0, 0.0, 0.0]  # u = (1, -0.5)
    x0[1] = [0.0, 0.0, 0.5, 0.0]  # u = (-0.125, -1)
    with torch.no_grad():
        u = -(torch.tensor(x0[:2]) @ torch.tensor(K).T)
    assert u[0, 0] == 1.0 and u[1, 1] == -1.0
    check(module_of("lqr_clipped_rollout"), reference, {"K": K}, {**inputs, "x0": x0})


def test_wing_loss_at_zero_error_and_exactly_at_the_kink():
    """|d| = 0 (abs'(0) = 0 as torch) and |d| = w exactly (d < w is false: the linear
    branch, as torch.where), for pred above and below the target."""
    _, reference, params, inputs = FAMILIES["wing_loss_landmarks"]()
    W = np.zeros_like(params["W"])
    b = np.array([0.25, -0.5, 1.0, 0.0])
    target = inputs["target"].copy()
    target[0] = b
    target[1] = b + WING_W
    target[2] = b - WING_W
    target[3] = b + [0.0, WING_W, -WING_W, 1e-300]
    for unroll in (False, True):
        check(
            module_of("wing_loss_landmarks", unroll=unroll),
            reference,
            {"W": W, "b": b},
            {**inputs, "target": target},
        )


@pytest.mark.parametrize("history", ["all_seen", "none_seen"])
def test_occupancy_with_every_site_seen_or_none(history):
    _, reference, params, inputs = FAMILIES["site_occupancy"]()
    Y = np.ones_like(inputs["Y"]) if history == "all_seen" else 0 * inputs["Y"]
    check(module_of("site_occupancy"), reference, params, {**inputs, "Y": Y})
    check(
        module_of("site_occupancy", unroll=True), reference, params, {**inputs, "Y": Y}
    )


@pytest.mark.parametrize("log_theta", [-30.0, -8.0, 4.0])
def test_ou_likelihood_at_a_vanishing_and_a_fast_reversion_rate(log_theta):
    """theta = e^-30: the variance sigma^2 (-expm1(-2 theta dt)) / (2 theta) is
    sigma^2 dt to round-off, where 1 - exp would cancel; theta = e^4: e^(-theta dt)
    is about 4e-3."""
    _, reference, params, inputs = FAMILIES["ornstein_uhlenbeck_exact"]()
    params = {**params, "log_theta": np.array(log_theta)}
    module = module_of("ornstein_uhlenbeck_exact")
    check(module, reference, params, inputs)
    outputs, _ = module.forward(params, inputs)
    if log_theta == -30.0:
        sigma2 = math.exp(2 * params["log_sigma"])
        assert rel(outputs["var"], sigma2 * OU_DT) < 1e-12


@pytest.mark.parametrize(
    "alpha",
    [-16.0, 25.0],
)
def test_skew_normal_with_extreme_skewness_matches_log_ndtr(alpha):
    """alpha z down to about -34, where Phi(alpha z) is 1e-250: log(erfc(...) / 2)
    stays finite and accurate (erfc is accurate in relative terms), as log_ndtr."""
    _, reference, params, inputs = FAMILIES["skew_normal_regression"]()
    params = {**params, "alpha": np.array(alpha)}
    module = module_of("skew_normal_regression")
    outputs, _ = module.forward(params, inputs)
    assert np.max(np.abs(alpha * outputs["z"])) > 30 or alpha > 0
    check(module, reference, params, inputs)
    check(module_of("skew_normal_regression", unroll=True), reference, params, inputs)


def test_pose_graph_heading_residual_on_either_side_of_the_branch_cut():
    """Heading residuals of pi -+ 1e-9: arctan2(sin, cos) wraps them to +-pi but its
    derivative is 1 on both sides (torch.atan2's too); the loss is continuous there."""
    _, reference, params, inputs = FAMILIES["se2_pose_graph"]()
    poses = params["poses"].copy()
    meas = inputs["meas"].copy()
    for e, delta in ((0, -1e-9), (1, 1e-9)):
        i, j = inputs["ei"][e], inputs["ej"][e]
        meas[e, 2] = poses[j, 2] - poses[i, 2] - (math.pi + delta)
    module = module_of("se2_pose_graph")
    outputs, _ = module.forward({"poses": poses}, {**inputs, "meas": meas})
    h = outputs["heading_error"]
    assert h[0] > 3.14159 and h[1] < -3.14159
    for unroll in (False, True):
        check(
            module_of("se2_pose_graph", unroll=unroll),
            reference,
            {"poses": poses},
            {**inputs, "meas": meas},
        )


def test_thomson_charges_at_both_poles():
    """theta = 0 and pi: sin theta = 0, so the gradient in phi there is exactly 0."""
    _, reference, params, inputs = FAMILIES["thomson_sphere"]()
    theta = params["theta"].copy()
    theta[0], theta[3] = 0.0, math.pi
    params = {**params, "theta": theta}
    check(module_of("thomson_sphere"), reference, params, inputs)
    _, grads = module_of("thomson_sphere").value_and_grad(params, inputs)
    assert grads["phi"][0] == 0.0


def test_nmf_with_an_all_zero_row_and_column():
    """A word never seen and a document with no words: V log(V / WH) is 0 there and
    the gradient is WH's alone (torch: xlogy)."""
    _, reference, params, inputs = FAMILIES["kl_nmf"]()
    V = inputs["V"].copy()
    V[1] = 0.0
    V[:, 4] = 0.0
    check(module_of("kl_nmf"), reference, params, {"V": V})
    check(module_of("kl_nmf", unroll=True), reference, params, {"V": V})


def test_com_poisson_reduces_to_poisson_at_nu_one():
    """nu = 1: Z is e^lam up to the truncation, so the NLL is Poisson's, and the mean
    count output is lam."""
    _, _, params, inputs = FAMILIES["conway_maxwell_poisson"]()
    params = {**params, "log_nu": np.array(0.0)}
    module = module_of("conway_maxwell_poisson")
    outputs, _ = module.forward(params, inputs)
    lam = np.exp(inputs["X"] @ params["w"] + params["b"])
    y = inputs["yf"]
    poisson = np.mean(lam - y * np.log(lam) + inputs["lgk"][inputs["y"]])
    assert rel(outputs["loss"], poisson) < 1e-12
    assert rel(outputs["mean_count"], lam) < 1e-9


def test_hanging_chain_reversed_cumsum_equals_the_joint_heights_form():
    """Gradient descent on the generated code (auto-unrolled: 6 links) comes to rest,
    where torch's gradient vanishes too; there the potential by carried masses (the
    model's) equals sum m_i y_i from the joint heights it outputs."""
    _, reference, params, inputs = FAMILIES["hanging_chain"]()
    module = module_of("hanging_chain")
    assert "_value_and_grad_unrolled" in vars(module)
    theta = np.linspace(-1.0, 1.0, CHAIN_L)
    for _ in range(3000):
        _, g = module.value_and_grad({"theta": theta}, inputs)
        theta = theta - 2e-3 * g["theta"]
    loss, g = module.value_and_grad({"theta": theta}, inputs)
    assert np.max(np.abs(g["theta"])) < 1e-9
    assert theta[0] < 0 < theta[-1]
    _, _, expected = torch_twin(reference, {"theta": theta}, inputs)
    assert np.max(np.abs(expected["theta"])) < 1e-9
    out, _ = module.forward({"theta": theta}, inputs)
    xs, ys, end = out["xs"], out["ys"], inputs["end"]
    spring = 500.0 * ((xs[-1] - end[0]) ** 2 + (ys[-1] - end[1]) ** 2)
    bending = 0.05 * np.sum(np.diff(theta) ** 2)
    potential = 9.81 * np.sum(inputs["mass"] * ys)
    assert rel(loss, potential + spring + bending) < 1e-12


def test_alibi_with_one_token_attends_to_itself_only():
    _, reference, params, inputs = FAMILIES["alibi_causal_attention"]()
    module = module_of("alibi_causal_attention")
    small = first_along(module, inputs, "T", 1)
    check(module, reference, params, small)


def test_clip_with_crossed_constant_bounds_is_a_max_bound_as_torch_clamp():
    """clip(x, 1, -1): NumPy's clip and torch.clamp both give the upper bound -1
    everywhere, and torch's gradient is 0 (x is never inside [1, -1])."""
    m = sg.Model("crossed_clip")
    x = m.input("x", ("B",))
    w = m.param("w", ())
    y = m.output("y", sg.clip(w * x, 1.0, -1.0))
    m.loss(sg.sum(y * x))

    def reference(p, i):
        y = torch.clamp(p["w"] * i["x"], 1.0, -1.0)
        return (y * i["x"]).sum(), {"y": y}

    inputs = {"x": np.array([-2.0, -0.5, 0.0, 0.5, 2.0])}
    module = compile_module(m)
    expected_loss, _, expected = torch_twin(reference, {"w": np.array(0.7)}, inputs)
    loss, grads = module.value_and_grad({"w": np.array(0.7)}, inputs)
    assert loss == expected_loss and grads["w"] == expected["w"] == 0.0


def test_clip_with_learned_bounds_that_cross_follows_torch_clamp():
    """clip(x, lo, hi) with both bounds parameters and lo > hi in some entries: the
    result is hi there, and the gradient goes to hi, as torch's clamp(Tensor, Tensor).
    """
    m = sg.Model("learned_clip")
    x = m.input("x", ("B", 4))
    lo, hi = m.param("lo", (4,)), m.param("hi", (4,))
    y = m.output("y", sg.clip(x, lo, hi))
    m.loss(sg.sum(y * x))

    def reference(p, i):
        y = torch.clamp(i["x"], p["lo"], p["hi"])
        return (y * i["x"]).sum(), {"y": y}

    rng = np.random.default_rng(1)
    params = {
        "lo": np.array([-0.5, 0.5, 0.0, -1.0]),
        "hi": np.array([0.5, -0.5, 0.0, 1.0]),
    }
    x = normal(rng, 6, 4)
    x[0] = [0.5, 0.5, 0.0, -1.0]  # on the bounds
    check(compile_module(m), reference, params, {"x": x})


# ===================================================================== 4. determinism


@pytest.mark.parametrize(
    "name, hessian",
    [
        ("alibi_causal_attention", False),
        ("se2_pose_graph", True),
        ("hanging_chain", True),
        ("stft_fir_design", False),
    ],
)
def test_generating_twice_gives_identical_source(name, hessian):
    first, _ = generate(FAMILIES[name](hessian=hessian)[0], hessian=hessian)
    second, _ = generate(FAMILIES[name](hessian=hessian)[0], hessian=hessian)
    assert first == second
    assert ("def hvp(params, inputs, v):" in first) == hessian


# ===================================================================== 5. the command line


CHAIN_FILE = """
import symgrad as sg

L = {links}


def build():
    m = sg.Model("user_chain", doc="A hanging chain by cumsum of link angles.")
    mass, end = m.input("mass", (L,)), m.input("end", (2,))
    theta = m.param("theta", (L,))
    ell = 1.0 / L
    carried = sg.flip(sg.cumsum(sg.flip(mass)))
    xs = m.output("xs", sg.cumsum(ell * sg.cos(theta)))
    ys = m.output("ys", sg.cumsum(ell * sg.sin(theta)))
    potential = sg.sum(ell * sg.sin(theta) * carried) * 9.81
    spring = 500.0 * ((xs[-1] - end[0]) ** 2 + (ys[-1] - end[1]) ** 2)
    m.loss(potential + spring + 0.05 * sg.sum((theta[1:] - theta[:-1]) ** 2))
    return m
"""


def _import_file(path, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"r18_{name}_{id(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_and_check_of_a_user_file(tmp_path):
    """symgrad build chain.py --out gen --hessian verifies and writes one module
    (importable, agrees with torch, has hvp); check passes, then fails with a diff
    naming the build command after the model file is edited; nothing is rewritten."""
    (tmp_path / "chain.py").write_text(CHAIN_FILE.format(links=CHAIN_L))
    built = run_cli(["build", "chain.py", "--out", "gen", "--hessian"], tmp_path)
    assert built.returncode == 0, built.stderr
    assert re.search(r"user_chain: .*verified", built.stdout), built.stdout
    target = tmp_path / "gen" / "user_chain.py"
    source = target.read_bytes()
    module = _import_file(target, "chain")
    _, reference, params, inputs = FAMILIES["hanging_chain"]()
    check(module, reference, params, inputs)
    assert hasattr(module, "hvp")
    ok = run_cli(["check", "chain.py", "--out", "gen", "--hessian"], tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the header says --hessian: a check without the flag checks it as one (README)
    plain = run_cli(["check", "chain.py", "--out", "gen"], tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    (tmp_path / "chain.py").write_text(CHAIN_FILE.format(links=5))
    stale = run_cli(["check", "chain.py", "--out", "gen", "--hessian"], tmp_path)
    assert stale.returncode == 1
    assert "stale: gen/user_chain.py" in stale.stdout
    assert "symgrad build chain.py --out gen --hessian" in stale.stdout, stale.stdout
    assert target.read_bytes() == source


# ===================================================================== 6. user mistakes


def _declared():
    m = sg.Model("mistakes")
    x = m.input("x", ("B", 3))
    w = m.param("w", (3,))
    return m, x, w


@pytest.mark.parametrize(
    "mistake, error, words",
    [
        (lambda x, w: np.expm1(x * w), TypeError, "use sg.expm1"),
        (lambda x, w: np.logaddexp(x, w), TypeError, "use sg.logaddexp"),
        (lambda x, w: np.arctan2(x, w), TypeError, "use sg.arctan2"),
        (lambda x, w: np.cumsum(x * w, axis=1), TypeError, "use sg.cumsum"),
        (lambda x, w: sg.cumsum(x * w, axis=(0, 1)), sg.ShapeError, "one axis"),
        (lambda x, w: sg.var(x * w, axis=1, ddof=3), sg.ShapeError, "ddof=3"),
        (lambda x, w: sg.expand_dims(x, 3), sg.ShapeError, "out of range"),
        (lambda x, w: sg.arctan2(x, w[:2]), sg.ShapeError, "cannot broadcast"),
        (lambda x, w: w[x[:, 0]], sg.ShapeError, "int64"),
    ],
)
def test_typical_mistakes_raise_errors_that_say_what_to_do(mistake, error, words):
    _, x, w = _declared()
    with pytest.raises(error, match=re.escape(words)):
        mistake(x, w)


@pytest.mark.parametrize("fn", ["max", "min"])
def test_torch_style_two_argument_max_points_to_maximum(fn):
    _, x, w = _declared()
    with pytest.raises(TypeError, match=f"sg.{fn}imum"):
        getattr(sg, fn)(x, w)


def test_math_functions_on_an_expression_point_to_sg():
    _, x, w = _declared()
    with pytest.raises(TypeError, match="sg"):
        math.exp(w[0])


def test_count_inputs_given_as_floats_int32_lists_or_out_of_range():
    """The COM-Poisson counts: floats are refused naming the array, int32 and a list
    of ints are taken, a count past the log-factorial table is NumPy's IndexError."""
    _, reference, params, inputs = FAMILIES["conway_maxwell_poisson"]()
    module = module_of("conway_maxwell_poisson")
    with pytest.raises(ValueError, match=r"inputs\['y'\]: expected an integer array"):
        module.value_and_grad(params, {**inputs, "y": inputs["y"].astype(float)})
    for y in (inputs["y"].astype(np.int32), [int(v) for v in inputs["y"]]):
        check(module, reference, params, {**inputs, "y": y})
    with pytest.raises(IndexError):
        module.value_and_grad(params, {**inputs, "y": inputs["y"] + K_MAX})


# ===================================================================== 7. found bugs


def test_log_erfc_of_a_negated_argument_keeps_its_tail():
    """log Phi(t) = log(erfc(-t / sqrt 2) / 2), the textbook formula (Tobit, probit,
    skew-normal): at t = -10 Phi is 7.6e-24, which erfc gives to full precision."""
    m = sg.Model("log_erfc_tail")
    u = m.input("u", ("B",))
    a = m.param("a", ())
    m.loss(sg.sum(sg.log(sg.erfc(-a * u))))

    def reference(p, i):
        return torch.log(torch.special.erfc(-p["a"] * i["u"])).sum(), {}

    check(
        compile_module(m),
        reference,
        {"a": np.array(1.0)},
        {"u": np.array([-3.0, -5.0, -10.0, -20.0])},
    )


def test_log_erfc_through_a_named_argument_keeps_its_tail():
    """The workaround for the above: naming the negated argument with m.let keeps
    SymPy from rewriting erfc(-u)."""
    m = sg.Model("log_erfc_tail_let")
    u = m.input("u", ("B",))
    a = m.param("a", ())
    m.loss(sg.sum(sg.log(sg.erfc(m.let("v", -a * u)))))

    def reference(p, i):
        return torch.log(torch.special.erfc(-p["a"] * i["u"])).sum(), {}

    check(
        compile_module(m),
        reference,
        {"a": np.array(1.0)},
        {"u": np.array([-3.0, -5.0, -10.0, -20.0])},
    )


def test_a_series_of_length_zero_gives_torchs_empty_sum_or_names_the_dim():
    """The OU likelihood of series with no observation: torch sums nothing (loss 0);
    the generated module should agree, or refuse with a ValueError naming T, as it
    does for x[:, 2:] at T = 1 ('T=1: x[:, 2:] needs T >= 2')."""
    _, reference, params, inputs = FAMILIES["ornstein_uhlenbeck_exact"]()
    module = module_of("ornstein_uhlenbeck_exact")
    empty = {"x": inputs["x"][:, :0]}
    try:
        loss, grads = module.value_and_grad(params, empty)
    except ValueError as error:
        assert re.match(r"T=0: .*needs T >= 1", str(error)), error
    else:
        expected_loss, _, expected = torch_twin(reference, params, empty)
        assert loss == expected_loss == 0.0
        assert all(np.all(grads[k] == expected[k]) for k in params)


def test_heading_of_a_zero_displacement_has_torchs_zero_gradient():
    """A robot that did not move between two poses: its heading arctan2(dy, dx) at
    the origin. torch gives the gradient 0 (as abs'(0) = 0), silently."""
    m = sg.Model("heading_at_rest")
    i_, j_ = m.input("i", ("E",), dtype="int64"), m.input("j", ("E",), dtype="int64")
    target = m.input("target", ("E",))
    P = m.param("P", ("N", 2))
    d = P[j_] - P[i_]
    heading = m.output("heading", sg.arctan2(d[:, 1], d[:, 0]))
    m.loss(sg.sum((heading - target) ** 2))

    def reference(p, i):
        d = p["P"][i["j"]] - p["P"][i["i"]]
        heading = torch.atan2(d[:, 1], d[:, 0])
        return ((heading - i["target"]) ** 2).sum(), {"heading": heading}

    P = np.array([[0.0, 0.0], [1.0, 0.5], [1.0, 0.5], [2.0, -1.0]])
    inputs = {
        "i": np.array([0, 1, 2], np.int64),
        "j": np.array([1, 2, 3], np.int64),
        "target": np.array([0.4, 0.1, -0.8]),
    }
    check(compile_module(m), reference, {"P": P}, inputs)


def test_standardising_a_constant_feature_has_torchs_finite_gradient():
    """z-scores (x - mean) / (std + eps) per feature, a feature constant in the batch
    (a dead sensor): torch.std gives a finite gradient, 0 through the std."""
    m = sg.Model("standardise")
    x, y = m.input("x", ("B", 3)), m.input("y", ("B",))
    s, w = m.param("s", (3,)), m.param("w", (3,))
    h = x * s
    z = (h - sg.mean(h, axis=0)) / (sg.std(h, axis=0, ddof=1) + 1e-3)
    m.loss(sg.mean((z @ w - y) ** 2))

    def reference(p, i):
        h = i["x"] * p["s"]
        z = (h - h.mean(0)) / (h.std(0) + 1e-3)
        return ((z @ p["w"] - i["y"]) ** 2).mean(), {}

    rng = np.random.default_rng(0)
    x = normal(rng, 6, 3)
    x[:, 1] = 2.0
    params = {"s": np.array([1.0, 0.5, -1.0]), "w": np.array([0.3, -0.2, 0.5])}
    check(compile_module(m), reference, params, {"x": x, "y": normal(rng, 6)})
