"""Round 5 of new-user model families, each compiled with symgrad and compared with the
same model written by hand in PyTorch (float64): loss, every output, every gradient from
``value_and_grad`` and from ``forward`` + ``backward(cache, grad_loss=2.5)``, with NumPy
warnings turned into errors (PyTorch gives none on these data).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import sympy as sp
from helpers import (
    assert_agrees_with_torch,
    assert_second_order_agrees,
    compile_module,
    rel,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-9
GRAD_LOSS = 2.5


def check(model, reference, params, inputs, tol=TOL, module=None):
    """Compile ``model`` (unless given) and compare it with ``reference`` in torch."""
    module = module or compile_module(model)
    assert_agrees_with_torch(module, reference, params, inputs, tol, GRAD_LOSS)
    return module


def normal(rng, shapes, scale=0.5):
    return {k: scale * rng.standard_normal(s) for k, s in shapes.items()}


FAMILIES: dict = {}


def family(*sizes, unroll=None):
    """Register ``build`` with its torch twin ``build.ref`` and data ``build.data``."""

    def wrap(build):
        FAMILIES[build.__name__] = (build, list(sizes) or [{}], unroll)
        return build

    return wrap


_MODULES: dict = {}


def module_of(name, unrolled=False):
    key = (name, unrolled)
    if key not in _MODULES:
        build, _, unroll = FAMILIES[name]
        model = build()
        if unrolled:
            model.unroll(**unroll)
        _MODULES[key] = compile_module(model)
    return _MODULES[key]


# --------------------------------------------------------------------- regression


@family({"batch": 1}, {"batch": 7}, unroll={"batch": 2})
def student_t(hessian=False):
    """Student-t regression (nu = 3) with a learned log-scale: robust regression."""
    m = sg.Model("student_t", hessian=hessian)
    x, y = m.input("x", ("batch", 4)), m.input("y", ("batch",))
    w, b, log_s = m.param("w", (4,)), m.param("b"), m.param("log_s")
    r = m.let("r", (y - x @ w - b) / sg.exp(log_s))
    m.loss(sg.mean(log_s + 2.0 * sg.log(1 + r**2 / 3.0)))
    return m


def _student_t_ref(p, i):
    r = (i["y"] - i["x"] @ p["w"] - p["b"]) / torch.exp(p["log_s"])
    return torch.mean(p["log_s"] + 2.0 * torch.log(1 + r**2 / 3.0)), {}


def _student_t_data(rng, batch):
    params = normal(rng, {"w": (4,), "b": (), "log_s": ()})
    return params, {
        "x": rng.standard_normal((batch, 4)),
        "y": rng.standard_normal(batch),
    }


@family({"batch": 1}, {"batch": 6}, unroll={"batch": 2})
def negative_binomial(hessian=False):
    """Negative-binomial regression with a fixed dispersion r = 2 (log link)."""
    m = sg.Model("negative_binomial", hessian=hessian)
    x, y = m.input("x", ("batch", 3)), m.input("y", ("batch",))
    w, b = m.param("w", (3,)), m.param("b", ())
    eta = x @ w + b
    mu = m.output("mu", sg.exp(eta))
    r = 2.0
    nll = -(y * eta - (y + r) * sg.log(mu + r) + r * np.log(r))
    m.loss(sg.mean(nll))
    return m


def _negative_binomial_ref(p, i):
    eta = i["x"] @ p["w"] + p["b"]
    mu = torch.exp(eta)
    nll = -(i["y"] * eta - (i["y"] + 2.0) * torch.log(mu + 2.0) + 2.0 * np.log(2.0))
    return nll.mean(), {"mu": mu}


def _negative_binomial_data(rng, batch):
    params = normal(rng, {"w": (3,), "b": ()})
    y = rng.poisson(2.0, batch).astype(float)
    return params, {"x": rng.standard_normal((batch, 3)), "y": y}


@family({"batch": 1, "q": 1}, {"batch": 5, "q": 3}, unroll={"batch": 2, "q": 3})
def pinball(hessian=False):
    """Quantile regression: one head per quantile tau, pinball loss via sg.where."""
    m = sg.Model("pinball", hessian=hessian)
    x, y = m.input("x", ("batch", 3)), m.input("y", ("batch",))
    tau = m.input("tau", ("q",))
    W, b = m.param("W", ("q", 3)), m.param("b", ("q",))
    pred = m.output("pred", x @ W.T + b)
    diff = y[:, None] - pred
    m.loss(sg.mean(sg.where(diff >= 0, tau * diff, (tau - 1) * diff)))
    return m


def _pinball_ref(p, i):
    pred = i["x"] @ p["W"].T + p["b"]
    diff = i["y"][:, None] - pred
    loss = torch.where(diff >= 0, i["tau"] * diff, (i["tau"] - 1) * diff).mean()
    return loss, {"pred": pred}


def _pinball_data(rng, batch, q):
    params = normal(rng, {"W": (q, 3), "b": (q,)})
    tau = np.linspace(0.1, 0.9, q) if q > 1 else np.array([0.3])
    inputs = {"x": rng.standard_normal((batch, 3)), "y": rng.standard_normal(batch)}
    return params, {**inputs, "tau": tau}


@family({"batch": 1}, {"batch": 5}, unroll={"batch": 3})
def logcosh(hessian=False):
    """log-cosh regression loss given as a SymPy formula."""
    m = sg.Model("logcosh", hessian=hessian)
    x, y = m.input("x", ("batch", 3)), m.input("y", ("batch",))
    w, b = m.param("w", (3,)), m.param("b", ())
    m.loss(sg.mean(sg.elementwise(lambda z: sp.log(sp.cosh(z)), x @ w + b - y)))
    return m


def _logcosh_ref(p, i):
    return torch.log(torch.cosh(i["x"] @ p["w"] + p["b"] - i["y"])).mean(), {}


def _logcosh_data(rng, batch):
    params = normal(rng, {"w": (3,), "b": ()})
    return params, {
        "x": rng.standard_normal((batch, 3)),
        "y": rng.standard_normal(batch),
    }


@family({"batch": 1}, {"batch": 6})
def box_cox(hessian=False):
    """Box-Cox transform with a learned exponent: x ** lam with lam a scalar param."""
    m = sg.Model("box_cox", hessian=hessian)
    x, y = m.input("x", ("batch", 2)), m.input("y", ("batch",))
    lam, w = m.param("lam"), m.param("w", (2,))
    t = ((x**lam - 1) / lam) @ w
    m.loss(sg.sum((t + 2**lam - y) ** 2))
    return m


def _box_cox_ref(p, i):
    t = ((i["x"] ** p["lam"] - 1) / p["lam"]) @ p["w"]
    return torch.sum((t + 2 ** p["lam"] - i["y"]) ** 2), {}


def _box_cox_data(rng, batch):
    params = {"lam": np.array(0.7), "w": rng.standard_normal(2)}
    x = rng.uniform(0.5, 2.0, (batch, 2))
    return params, {"x": x, "y": rng.standard_normal(batch)}


# --------------------------------------------------------------------- classification


@family({"batch": 1}, {"batch": 6}, unroll={"batch": 2})
def binary_focal(hessian=False):
    """Binary focal loss (gamma = 2, alpha = 0.25) on logits, log-sigmoid via softplus."""
    m = sg.Model("binary_focal", hessian=hessian)
    x, t = m.input("x", ("batch", 3)), m.input("t", ("batch",))
    w, b = m.param("w", (3,)), m.param("b", ())
    z = x @ w + b
    p = sg.sigmoid(z)
    pos = 0.25 * t * (1 - p) ** 2 * -sg.softplus(-z)
    neg = 0.75 * (1 - t) * p**2 * -sg.softplus(z)
    m.loss(-sg.mean(pos + neg))
    return m


def _binary_focal_ref(p, i):
    z = i["x"] @ p["w"] + p["b"]
    q = torch.sigmoid(z)
    pos = 0.25 * i["t"] * (1 - q) ** 2 * F.logsigmoid(z)
    neg = 0.75 * (1 - i["t"]) * q**2 * F.logsigmoid(-z)
    return -(pos + neg).mean(), {}


def _binary_focal_data(rng, batch):
    params = normal(rng, {"w": (3,), "b": ()}, 2.0)
    t = (rng.random(batch) < 0.5).astype(float)
    return params, {"x": rng.standard_normal((batch, 3)), "t": t}


@family({"batch": 1}, {"batch": 6})
def multiclass_focal(hessian=False):
    """Softmax focal loss picking each row's label with take_along_axis."""
    m = sg.Model("multiclass_focal", hessian=hessian)
    x = m.input("x", ("batch", 4))
    labels = m.input("labels", ("batch", 1), dtype="int64")
    W, b = m.param("W", (5, 4)), m.param("b", (5,))
    lp = sg.take_along_axis(sg.log_softmax(x @ W.T + b, axis=-1), labels, axis=1)
    m.loss(-sg.mean((1 - sg.exp(lp)) ** 2 * lp))
    return m


def _multiclass_focal_ref(p, i):
    lsm = F.log_softmax(i["x"] @ p["W"].T + p["b"], dim=-1)
    lp = torch.take_along_dim(lsm, i["labels"], dim=1)
    return -((1 - lp.exp()) ** 2 * lp).mean(), {}


def _multiclass_focal_data(rng, batch):
    params = normal(rng, {"W": (5, 4), "b": (5,)})
    labels = rng.integers(0, 5, (batch, 1))
    return params, {"x": rng.standard_normal((batch, 4)), "labels": labels}


@family({"batch": 1}, {"batch": 5}, unroll={"batch": 2})
def multiclass_hinge(hessian=False):
    """Crammer-Singer multiclass hinge: relu(1 + s_j - s_y) summed over j != y."""
    m = sg.Model("multiclass_hinge", hessian=hessian)
    x = m.input("x", ("batch", 3))
    labels = m.input("labels", ("batch", 1), dtype="int64")
    W = m.param("W", (4, 3))
    s = x @ W.T
    correct = sg.take_along_axis(s, labels, axis=1)
    margins = sg.relu(1 + s - correct)
    worst = m.output("worst", sg.max(s - correct, axis=1))
    m.loss(sg.mean(sg.sum(margins, axis=1) - 1) + 0.1 * sg.mean(worst))
    return m


def _multiclass_hinge_ref(p, i):
    s = i["x"] @ p["W"].T
    correct = torch.take_along_dim(s, i["labels"], dim=1)
    margins = torch.relu(1 + s - correct)
    worst = torch.amax(s - correct, dim=1)
    return (margins.sum(1) - 1).mean() + 0.1 * worst.mean(), {"worst": worst}


def _multiclass_hinge_data(rng, batch):
    params = normal(rng, {"W": (4, 3)})
    labels = rng.integers(0, 4, (batch, 1))
    return params, {"x": rng.standard_normal((batch, 3)), "labels": labels}


# --------------------------------------------------------------------- embeddings


@family({"batch": 1}, {"batch": 4})
def info_nce(hessian=False):
    """Symmetric InfoNCE (CLIP) with cosine similarities and a learned temperature."""
    m = sg.Model("info_nce", hessian=hessian)
    x, y = m.input("x", ("batch", 3)), m.input("y", ("batch", 2))
    idx = m.input("idx", ("batch",), dtype="int64")
    Wa, Wb, log_t = m.param("Wa", (4, 3)), m.param("Wb", (4, 2)), m.param("log_t")
    a, b = x @ Wa.T, y @ Wb.T
    na = a / sg.sqrt(sg.sum(a**2, axis=-1, keepdims=True))
    nb = b / sg.sqrt(sg.sum(b * b, axis=1, keepdims=True))
    sim = m.output("sim", (na @ nb.T) * sg.exp(-log_t))
    rows = sg.take_along_axis(sg.log_softmax(sim, axis=-1), idx[:, None], axis=1)
    cols = sg.take_along_axis(sg.log_softmax(sim, axis=0), idx[None, :], axis=0)
    m.loss(-(sg.mean(rows) + sg.mean(cols)) / 2)
    return m


def _info_nce_ref(p, i):
    a, b = i["x"] @ p["Wa"].T, i["y"] @ p["Wb"].T
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T * torch.exp(-p["log_t"])
    labels = i["idx"]
    loss = (F.cross_entropy(sim, labels) + F.cross_entropy(sim.T, labels)) / 2
    return loss, {"sim": sim}


def _info_nce_data(rng, batch):
    params = normal(rng, {"Wa": (4, 3), "Wb": (4, 2), "log_t": ()})
    inputs = {
        "x": rng.standard_normal((batch, 3)),
        "y": rng.standard_normal((batch, 2)),
    }
    return params, {**inputs, "idx": np.arange(batch)}


@family({"batch": 1}, {"batch": 6}, unroll={"batch": 2})
def contrastive(hessian=False):
    """Hadsell-Chopra-LeCun contrastive loss on Siamese embeddings, margin 1."""
    m = sg.Model("contrastive", hessian=hessian)
    x1, x2 = m.input("x1", ("batch", 3)), m.input("x2", ("batch", 3))
    same = m.input("same", ("batch",))
    W = m.param("W", (2, 3))
    d = m.output("d", sg.sqrt(sg.sum((x1 @ W.T - x2 @ W.T) ** 2, axis=1)))
    m.loss(sg.mean(same * d**2 + (1 - same) * sg.relu(1.0 - d) ** 2))
    return m


def _contrastive_ref(p, i):
    d = torch.sqrt(((i["x1"] @ p["W"].T - i["x2"] @ p["W"].T) ** 2).sum(1))
    loss = (i["same"] * d**2 + (1 - i["same"]) * torch.relu(1.0 - d) ** 2).mean()
    return loss, {"d": d}


def _contrastive_data(rng, batch):
    params = normal(rng, {"W": (2, 3)})
    same = (np.arange(batch) % 2).astype(float)
    x1 = rng.standard_normal((batch, 3))
    return params, {"x1": x1, "x2": 0.5 * rng.standard_normal((batch, 3)), "same": same}


@family({"batch": 1, "L": 1}, {"batch": 4, "L": 3})
def tied_lm(hessian=False):
    """Tied-embedding language model: E gathers the context and scores the vocabulary."""
    m = sg.Model("tied_lm", hessian=hessian)
    ctx = m.input("ctx", ("batch", "L"), dtype="int64")
    target = m.input("target", ("batch", 1), dtype="int64")
    E, W = m.param("E", (6, 3)), m.param("W", (3, 3))
    h = m.let("h", sg.tanh(sg.mean(E[ctx], axis=1) @ W.T))
    logits = m.output("logits", h @ E.T)
    lp = sg.take_along_axis(sg.log_softmax(logits, axis=1), target, axis=1)
    m.loss(-sg.mean(lp))
    return m


def _tied_lm_ref(p, i):
    h = torch.tanh(p["E"][i["ctx"]].mean(1) @ p["W"].T)
    logits = h @ p["E"].T
    return F.cross_entropy(logits, i["target"][:, 0]), {"logits": logits}


def _tied_lm_data(rng, batch, L):
    params = normal(rng, {"E": (6, 3), "W": (3, 3)})
    c = rng.integers(0, 3, (batch, L))  # few distinct ids: repeated indices
    return params, {"ctx": c, "target": rng.integers(0, 6, (batch, 1))}


# --------------------------------------------------------------------- generative


@family({"batch": 1}, {"batch": 5}, unroll={"batch": 1})
def vae(hessian=False):
    """VAE ELBO: Gaussian encoder, reparameterised noise input, Bernoulli decoder."""
    m = sg.Model("vae", hessian=hessian)
    x, eps = m.input("x", ("batch", 4)), m.input("eps", ("batch", 2))
    We, be = m.param("We", (2, 4)), m.param("be", (2,))
    Wv, bv = m.param("Wv", (2, 4)), m.param("bv", (2,))
    Wd, bd = m.param("Wd", (4, 2)), m.param("bd", (4,))
    mu = m.let("mu", x @ We.T + be)
    logvar = m.let("logvar", x @ Wv.T + bv)
    z = m.output("z", mu + sg.exp(0.5 * logvar) * eps)
    logits = z @ Wd.T + bd
    recon = sg.sum(sg.softplus(logits) - x * logits, axis=1)
    kl = m.output("kl", -0.5 * sg.sum(1 + logvar - mu**2 - sg.exp(logvar), axis=1))
    m.loss(sg.mean(recon + kl))
    return m


def _vae_ref(p, i):
    mu = i["x"] @ p["We"].T + p["be"]
    logvar = i["x"] @ p["Wv"].T + p["bv"]
    z = mu + torch.exp(0.5 * logvar) * i["eps"]
    logits = z @ p["Wd"].T + p["bd"]
    recon = F.binary_cross_entropy_with_logits(logits, i["x"], reduction="none").sum(1)
    kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
    return (recon + kl).mean(), {"z": z, "kl": kl}


def _vae_data(rng, batch):
    shapes = {"We": (2, 4), "be": (2,), "Wv": (2, 4), "bv": (2,), "Wd": (4, 2)}
    params = {**normal(rng, shapes), "bd": np.zeros(4)}
    x = (rng.random((batch, 4)) < 0.5).astype(float)
    return params, {"x": x, "eps": rng.standard_normal((batch, 2))}


@family({"d": 1}, {"d": 5})
def gaussian_kl(hessian=False):
    """KL between two diagonal Gaussians, both learned (prior too), no data at all."""
    m = sg.Model("gaussian_kl", hessian=hessian)
    scale = m.input("scale", ())
    mu1, ls1 = m.param("mu1", ("d",)), m.param("ls1", ("d",))
    mu2, ls2 = m.param("mu2", ("d",)), m.param("ls2", ("d",))
    kl = ls2 - ls1 + (sg.exp(2 * ls1) + (mu1 - mu2) ** 2) / (2 * sg.exp(2 * ls2)) - 0.5
    m.loss(scale * sg.sum(kl))
    return m


def _gaussian_kl_ref(p, i):
    q = torch.distributions.Normal(p["mu1"], p["ls1"].exp())
    r = torch.distributions.Normal(p["mu2"], p["ls2"].exp())
    return i["scale"] * torch.distributions.kl_divergence(q, r).sum(), {}


def _gaussian_kl_data(rng, d):
    params = normal(rng, {"mu1": (d,), "ls1": (d,), "mu2": (d,), "ls2": (d,)})
    return params, {"scale": np.array(1.3)}


# --------------------------------------------------------------------- layers


def _mish(z):
    return z * sp.tanh(sp.log(1 + sp.exp(z)))


@family({"batch": 1}, {"batch": 5}, unroll={"batch": 2})
def custom_activations(hessian=False):
    """Mish and a swish with a learned beta (two-argument SymPy formula)."""
    m = sg.Model("custom_activations", hessian=hessian)
    x, y = m.input("x", ("batch", 3)), m.input("y", ("batch",))
    W1, W2, beta = m.param("W1", (4, 3)), m.param("W2", (4, 4)), m.param("beta")
    h = m.let("h", sg.elementwise(_mish, x @ W1.T))
    g = sg.elementwise(lambda z, b: z / (1 + sp.exp(-b * z)), h @ W2.T, beta)
    m.loss(sg.mean((sg.sum(g, axis=1) - y) ** 2))
    return m


def _custom_activations_ref(p, i):
    h = F.mish(i["x"] @ p["W1"].T)
    z = h @ p["W2"].T
    g = z * torch.sigmoid(p["beta"] * z)
    return ((g.sum(1) - i["y"]) ** 2).mean(), {}


def _custom_activations_data(rng, batch):
    params = {**normal(rng, {"W1": (4, 3), "W2": (4, 4)}), "beta": np.array(1.3)}
    return params, {
        "x": rng.standard_normal((batch, 3)),
        "y": rng.standard_normal(batch),
    }


@family({"batch": 1}, {"batch": 4}, unroll={"batch": 2})
def max_pool(hessian=False):
    """1-D max pooling (window 2) via reshape + sg.max over the last axis."""
    m = sg.Model("max_pool", hessian=hessian)
    x, y = m.input("x", ("batch", 4)), m.input("y", ("batch",))
    W, v = m.param("W", (6, 4)), m.param("v", (3,))
    h = sg.tanh(x @ W.T).reshape("batch", 3, 2)
    pooled = m.output("pooled", sg.max(h, axis=-1))
    m.loss(sg.mean((pooled @ v - y) ** 2))
    return m


def _max_pool_ref(p, i):
    h = torch.tanh(i["x"] @ p["W"].T)
    pooled = F.max_pool1d(h[:, None, :], 2)[:, 0, :]
    return ((pooled @ p["v"] - i["y"]) ** 2).mean(), {"pooled": pooled}


def _max_pool_data(rng, batch):
    params = normal(rng, {"W": (6, 4), "v": (3,)})
    return params, {
        "x": rng.standard_normal((batch, 4)),
        "y": rng.standard_normal(batch),
    }


@family({"batch": 1}, {"batch": 3})
def max_pool_ties(hessian=False):
    """Max pooling of x + b where ties are exact: amax shares the gradient."""
    m = sg.Model("max_pool_ties", hessian=hessian)
    x = m.input("x", ("batch", 6))
    b = m.param("b", (6,))
    pooled = sg.max((x + b).reshape("batch", 2, 3), axis=2)
    m.loss(sg.sum(pooled * pooled) + sg.max(x * b))
    return m


def _max_pool_ties_ref(p, i):
    pooled = torch.amax((i["x"] + p["b"]).reshape(-1, 2, 3), dim=2)
    return (pooled * pooled).sum() + torch.amax(i["x"] * p["b"]), {}


def _max_pool_ties_data(rng, batch):
    x = np.tile([1.0, 3.0, 3.0, 2.0, 2.0, 2.0], (batch, 1))
    return {"b": np.ones(6)}, {"x": x}


@family({"batch": 1}, {"batch": 3}, unroll={"batch": 1})
def conv2d(hessian=False):
    """3x3 valid Conv2d with two output channels written with slices, then ReLU."""
    m = sg.Model("conv2d", hessian=hessian)
    x, y = m.input("x", ("batch", 5, 5)), m.input("y", ("batch", 2, 3, 3))
    K, b = m.param("K", (2, 3, 3)), m.param("b", (2, 1, 1))
    out = 0
    for i in range(3):
        for j in range(3):
            out = (
                out + K[:, i, j][None, :, None, None] * x[:, None, i : i + 3, j : j + 3]
            )
    out = m.output("out", sg.relu(out + b))
    m.loss(sg.mean((out - y) ** 2))
    return m


def _conv2d_ref(p, i):
    out = torch.relu(F.conv2d(i["x"][:, None], p["K"][:, None]) + p["b"])
    return ((out - i["y"]) ** 2).mean(), {"out": out}


def _conv2d_data(rng, batch):
    params = normal(rng, {"K": (2, 3, 3), "b": (2, 1, 1)})
    x = rng.standard_normal((batch, 5, 5))
    return params, {"x": x, "y": rng.standard_normal((batch, 2, 3, 3))}


@family({"batch": 1, "T": 1}, {"batch": 2, "T": 3})
def multi_head_attention(hessian=False):
    """Two-head causal self-attention: reshape to 4-D, transpose, mask via sg.where."""
    m = sg.Model("multi_head_attention", hessian=hessian)
    x, y = m.input("x", ("batch", "T", 4)), m.input("y", ("batch", "T", 4))
    causal = m.input("causal", ("T", "T"))
    Wq, Wk = m.param("Wq", (4, 4)), m.param("Wk", (4, 4))
    Wv, Wo = m.param("Wv", (4, 4)), m.param("Wo", (4, 4))

    def heads(t):
        return t.reshape("batch", "T", 2, 2).transpose(0, 2, 1, 3)

    q, k, v = heads(x @ Wq.T), heads(x @ Wk.T), heads(x @ Wv.T)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(2.0)
    scores = sg.where(causal > 0.5, scores, -1e9)
    attn = m.output("attn", sg.softmax(scores, axis=-1))
    ctx = (attn @ v).transpose(0, 2, 1, 3).reshape("batch", "T", 4)
    m.loss(sg.mean((ctx @ Wo.T + x - y) ** 2))
    return m


def _multi_head_attention_ref(p, i):
    B, T, _ = i["x"].shape

    def heads(t):
        return t.reshape(B, T, 2, 2).transpose(1, 2)

    x = i["x"]
    q, k, v = heads(x @ p["Wq"].T), heads(x @ p["Wk"].T), heads(x @ p["Wv"].T)
    scores = q @ k.transpose(-1, -2) / np.sqrt(2.0)
    scores = torch.where(i["causal"] > 0.5, scores, torch.tensor(-1e9))
    attn = torch.softmax(scores, -1)
    ctx = (attn @ v).transpose(1, 2).reshape(B, T, 4)
    return ((ctx @ p["Wo"].T + x - i["y"]) ** 2).mean(), {"attn": attn}


def _multi_head_attention_data(rng, batch, T):
    params = normal(rng, {"Wq": (4, 4), "Wk": (4, 4), "Wv": (4, 4), "Wo": (4, 4)})
    inputs = {
        "x": rng.standard_normal((batch, T, 4)),
        "y": rng.standard_normal((batch, T, 4)),
    }
    return params, {**inputs, "causal": np.tril(np.ones((T, T)))}


@family({"batch": 1, "n": 1}, {"batch": 3, "n": 4})
def tuple_axes(hessian=False):
    """Reductions over tuples of axes with keepdims; a (1, n) param vs (batch, 1, n)."""
    m = sg.Model("tuple_axes", hessian=hessian)
    x = m.input("x", ("batch", 2, "n"))
    z = m.input("z", ("batch", 1, "n"))
    g, s = m.param("g", (1, "n")), m.param("s", ())
    c = x - sg.mean(x * g, axis=(1, 2), keepdims=True)
    u = m.output("u", z * g + s)
    top = sg.max(c * u, axis=(0, 2), keepdims=True)
    tot = sg.sum(c**2 * s, axis=(0, 1))
    m.loss(sg.sum(top) + sg.mean(tot) + sg.logsumexp(u, axis=(1, 2)).sum())
    return m


def _tuple_axes_ref(p, i):
    x, z, g, s = i["x"], i["z"], p["g"], p["s"]
    c = x - (x * g).mean(dim=(1, 2), keepdim=True)
    u = z * g + s
    top = torch.amax(c * u, dim=(0, 2), keepdim=True)
    tot = (c**2 * s).sum(dim=(0, 1))
    return top.sum() + tot.mean() + torch.logsumexp(u, dim=(1, 2)).sum(), {"u": u}


def _tuple_axes_data(rng, batch, n):
    params = {"g": rng.standard_normal((1, n)), "s": np.array(0.7)}
    x, z = rng.standard_normal((batch, 2, n)), rng.standard_normal((batch, 1, n))
    return params, {"x": x, "z": z}


@family({"n": 1}, {"n": 4})
def matmul_ranks(hessian=False):
    """1-D @ 2-D, 2-D @ 1-D, 1-D @ 1-D and batched 3-D @ 2-D products."""
    m = sg.Model("matmul_ranks", hessian=hessian)
    v, M = m.param("v", ("n",)), m.param("M", ("n", "n"))
    A = m.input("A", (2, "n", "n"))
    a = v @ M  # (n,)
    b = M @ v  # (n,)
    c = v @ v  # ()
    d = A @ M.T  # (2, n, n)
    m.loss(a @ b + c * sg.sum(d**2) + sg.sum(sg.transpose(d, (2, 0, 1))[0]))
    return m


def _matmul_ranks_ref(p, i):
    v, M = p["v"], p["M"]
    d = i["A"] @ M.T
    return (v @ M) @ (M @ v) + (v @ v) * (d**2).sum() + d.permute(2, 0, 1)[0].sum(), {}


def _matmul_ranks_data(rng, n):
    return normal(rng, {"v": (n,), "M": (n, n)}), {"A": rng.standard_normal((2, n, n))}


@family({"batch": 1}, {"batch": 6}, unroll={"batch": 3})
def compound_conditions(hessian=False):
    """Piecewise penalty with &, | and ~ conditions, Python numbers on the left."""
    m = sg.Model("compound_conditions", hessian=hessian)
    x = m.input("x", ("batch", 2))
    w = m.param("w", (2,))
    t = x * w
    inside = (t > -0.5) & (t < 0.5)
    far = (t < -1.5) | (t > 1.5)
    r = sg.where(inside, t**2, sg.where(~far, 1 - sg.abs(t), 2 / (1 + t**2)))
    m.loss(sg.sum(3 - r) + sg.mean(2**t))
    return m


def _compound_conditions_ref(p, i):
    t = i["x"] * p["w"]
    inside = (t > -0.5) & (t < 0.5)
    far = (t < -1.5) | (t > 1.5)
    r = torch.where(inside, t**2, torch.where(~far, 1 - t.abs(), 2 / (1 + t**2)))
    return (3 - r).sum() + (2**t).mean(), {}


def _compound_conditions_data(rng, batch):
    return {"w": np.array([1.0, 2.0])}, {"x": rng.uniform(-1.5, 1.5, (batch, 2))}


@family({"batch": 1}, {"batch": 4})
def residual_norm_block(hessian=False):
    """Pre-norm residual block with an RMS norm and a learned scalar residual gate."""
    m = sg.Model("residual_norm_block", hessian=hessian)
    x, y = m.input("x", ("batch", 4)), m.input("y", ("batch", 4))
    g, W1, W2 = m.param("g", (4,)), m.param("W1", (8, 4)), m.param("W2", (4, 8))
    alpha = m.param("alpha")
    n = x / sg.sqrt(sg.mean(x**2, axis=-1, keepdims=True) + 1e-6) * g
    h = m.let("h", x + alpha * (sg.relu(n @ W1.T) @ W2.T))
    h2 = m.output("h2", h + alpha * sg.softplus(h @ W2 @ W1))
    m.loss(sg.mean((h2 - y) ** 2))
    return m


def _residual_norm_block_ref(p, i):
    x = i["x"]
    n = x / torch.sqrt((x**2).mean(-1, keepdim=True) + 1e-6) * p["g"]
    h = x + p["alpha"] * (torch.relu(n @ p["W1"].T) @ p["W2"].T)
    h2 = h + p["alpha"] * F.softplus(h @ p["W2"] @ p["W1"])
    return ((h2 - i["y"]) ** 2).mean(), {"h2": h2}


def _residual_norm_block_data(rng, batch):
    params = {
        **normal(rng, {"g": (4,), "W1": (8, 4), "W2": (4, 8)}),
        "alpha": np.array(0.6),
    }
    return params, {
        "x": rng.standard_normal((batch, 4)),
        "y": rng.standard_normal((batch, 4)),
    }


# --------------------------------------------------------------------- the tests

REFS = {
    name: (globals()[f"_{name}_ref"], globals()[f"_{name}_data"]) for name in FAMILIES
}
CASES = [(name, dims) for name, (_, sizes, _) in FAMILIES.items() for dims in sizes]


@pytest.mark.parametrize(
    "name, dims", CASES, ids=[f"{n}-{'-'.join(map(str, d.values()))}" for n, d in CASES]
)
def test_family_agrees_with_pytorch(name, dims):
    ref, data = REFS[name]
    params, inputs = data(np.random.default_rng(5), **dims)
    check(None, ref, params, inputs, module=module_of(name))


UNROLLED = [name for name, (_, _, unroll) in FAMILIES.items() if unroll]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_family_agrees_with_pytorch(name):
    ref, data = REFS[name]
    params, inputs = data(np.random.default_rng(7), **FAMILIES[name][2])
    check(None, ref, params, inputs, module=module_of(name, unrolled=True))


HESSIAN = [
    ("student_t", {"batch": 3}),
    ("pinball", {"batch": 3, "q": 2}),
    ("multiclass_focal", {"batch": 3}),
    ("info_nce", {"batch": 3}),
    ("tied_lm", {"batch": 3, "L": 2}),
    ("vae", {"batch": 2}),
    ("gaussian_kl", {"d": 2}),
    ("max_pool", {"batch": 2}),
    ("multi_head_attention", {"batch": 1, "T": 2}),
    ("tuple_axes", {"batch": 2, "n": 2}),
    ("matmul_ranks", {"n": 2}),
    ("residual_norm_block", {"batch": 2}),
]


@pytest.mark.parametrize("name, dims", HESSIAN, ids=[n for n, _ in HESSIAN])
def test_hessian_agrees_with_pytorch(name, dims):
    build = FAMILIES[name][0]
    module = compile_module(build(hessian=True))
    ref, data = REFS[name]
    params, inputs = data(np.random.default_rng(11), **dims)
    assert_second_order_agrees(module, ref, params, inputs, scaled=True)


# --------------------------------------------------------------------- verify, sampler


def test_box_cox_verifies_with_a_sampler():
    """x ** lam needs x > 0: with a sampler, symgrad.verify passes."""
    from symgrad.verify import verify

    model = box_cox()

    def sampler(rng, batch):
        return _box_cox_data(rng, batch)

    model.sampler = sampler
    assert verify(model, module_of("box_cox")).ok


# --------------------------------------------------------------------- scalar front-end


def test_from_expr_several_inputs_reduce_sum():
    a, c, t, y, s = sp.symbols("a c t y s")
    loss = sp.Abs(a * t + c - y) * s + sp.atan(a * t) ** 2 + sp.exp(-c * s)
    m = sg.Model.from_expr(
        "robust_fit", loss=loss, params=[a, c], inputs=[t, y, s], reduce="sum"
    )
    module = compile_module(m)
    assert module.INPUTS == {"t": ("batch",), "y": ("batch",), "s": ("batch",)}
    assert module.PARAMS == {"a": (), "c": ()}

    def ref(p, i):
        r = (p["a"] * i["t"] + p["c"] - i["y"]).abs() * i["s"]
        return (
            r + torch.atan(p["a"] * i["t"]) ** 2 + torch.exp(-p["c"] * i["s"])
        ).sum(), {}

    rng = np.random.default_rng(0)
    for batch in (1, 6):
        inputs = {"t": rng.standard_normal(batch), "y": rng.standard_normal(batch)}
        inputs["s"] = rng.random(batch)
        check(
            None, ref, {"a": np.array(0.5), "c": np.array(-0.2)}, inputs, module=module
        )


def test_from_expr_mean_of_a_formula_constant_in_the_data():
    """A per-sample loss that ignores the data still averages over the batch."""
    a, b, t = sp.symbols("a b t")
    m = sg.Model.from_expr(
        "const_rows", loss=sp.exp(a) * 3 + b * t, params=[a, b], inputs=[t]
    )
    module = compile_module(m)

    def ref(p, i):
        return (torch.exp(p["a"]) * 3 + p["b"] * i["t"]).mean(), {}

    params = {"a": np.array(0.5), "b": np.array(-1.0)}
    check(None, ref, params, {"t": np.array([1.0, 2.0, 4.0])}, module=module)


def test_from_expr_without_inputs_hessian():
    """Himmelblau's function of two scalars: value, gradient, Hessian and hvp."""
    x, y = sp.symbols("x y")
    f = (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2
    module = compile_module(
        sg.Model.from_expr("himmelblau", loss=f, params=[x, y], hessian=True)
    )

    def ref(p, i):
        return (p["x"] ** 2 + p["y"] - 11) ** 2 + (p["x"] + p["y"] ** 2 - 7) ** 2, {}

    params = {"x": np.array(0.3), "y": np.array(-1.2)}
    check(None, ref, params, {}, module=module)
    assert_second_order_agrees(module, ref, params, {}, TOL)


# --------------------------------------------------------------------- edge sizes


def _batch_mlp(name, reduce):
    m = sg.Model(name)
    x, labels = m.input("x", ("batch", 2)), m.input(
        "labels", ("batch", 1), dtype="int64"
    )
    E, W = m.param("E", (3, 2)), m.param("W", (3, 2))
    idx = m.input("idx", ("batch",), dtype="int64")
    h = sg.tanh(x @ W.T) + sg.sum(E[idx] ** 2, axis=1, keepdims=True)
    lp = sg.take_along_axis(sg.log_softmax(h, axis=1), labels, axis=1)
    m.loss(-reduce(lp))
    return m


def _batch_mlp_ref(reduce):
    def ref(p, i):
        h = torch.tanh(i["x"] @ p["W"].T) + (p["E"][i["idx"]] ** 2).sum(1, keepdim=True)
        return (
            -reduce(torch.take_along_dim(torch.log_softmax(h, 1), i["labels"], 1)),
            {},
        )

    return ref


def _empty_batch_data():
    params = {"E": np.ones((3, 2)), "W": np.ones((3, 2))}
    inputs = {"x": np.zeros((0, 2)), "labels": np.zeros((0, 1), dtype=np.int64)}
    return params, {**inputs, "idx": np.zeros(0, dtype=np.int64)}


def test_empty_batch_with_a_summed_loss():
    module = compile_module(_batch_mlp("empty_sum", sg.sum))
    check(None, _batch_mlp_ref(torch.sum), *_empty_batch_data(), module=module)


def test_empty_batch_with_a_mean_loss_is_a_clear_error():
    """torch gives a nan loss; symgrad refuses to divide by the empty size, by name."""
    m = sg.Model("empty_mean")
    x, w = m.input("x", ("batch", 2)), m.param("w", (2,))
    m.loss(sg.mean((x @ w) ** 2))
    module = compile_module(m)
    params, inputs = {"w": np.ones(2)}, {"x": np.zeros((0, 2))}
    for call in (module.value_and_grad, module.forward):
        with pytest.raises(
            ValueError, match="batch=0: a mean over batch needs batch >= 1"
        ):
            call(params, inputs)


# --------------------------------------------------------------------- bugs found


def test_symbolic_dim_named_like_its_input():
    m = sg.Model("self_dim")
    try:
        x = m.input("x", ("x",))
    except (
        sg.ModelError
    ) as e:  # a clear refusal, as for every other name clash, is fine
        assert "'x'" in str(e)
        return
    w = m.param("w", ())
    m.loss(sg.sum(x * w))
    module = compile_module(m)

    def ref(p, i):
        return (i["x"] * p["w"]).sum(), {}

    check(
        None, ref, {"w": np.array(2.0)}, {"x": np.array([1.0, 2.0, 6.0])}, module=module
    )


def test_where_guarding_a_sqrt_warns():
    m = sg.Model("guarded_sqrt")
    x, w = m.input("x", ("batch",)), m.param("w", ())
    z = x * w
    m.loss(sg.sum(sg.where(z > 0, sg.sqrt(z), 0.0)))
    module = compile_module(m)
    params, inputs = {"w": np.array(2.0)}, {"x": np.array([1.0, -1.0])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = module.value_and_grad(params, inputs)
    # loss = sqrt(1 * w), gradient 1 / (2 sqrt(w)) at w = 2 (torch's is nan here)
    assert rel(loss, np.sqrt(2.0)) <= TOL
    assert rel(grads["w"], 1 / (2 * np.sqrt(2.0))) <= TOL


def test_negative_base_to_a_parameter_power_is_refused():
    """torch's gradient is nan (log of -2); SymPy's is complex: refused at build time."""
    m = sg.Model("negative_base")
    w = m.param("w", ())
    m.loss((-2.0) ** w)
    with pytest.raises(sg.UnsupportedError, match="derivative is complex"):
        compile_module(m)


def test_sqrt_of_a_negative_constant_is_refused():
    """torch gives nan; SymPy folds sqrt(-1) to I and log(-3) to log(3) + i pi."""
    m = sg.Model("negative_constant")
    w = m.param("w", ())
    with pytest.raises(sg.UnsupportedError, match="the constant I is complex"):
        m.loss(w * sg.sqrt(-1.0))
    with pytest.raises(sg.UnsupportedError, match="is complex"):
        m.loss(w * sg.log(-3.0))


def test_duplicate_reduction_axes_are_refused():
    with pytest.raises(ValueError, match="duplicate value in 'axis'"):
        np.sum(np.ones((2, 3)), axis=(1, -1))
    with pytest.raises(RuntimeError):
        torch.ones(2, 3).sum(dim=(1, -1))
    m = sg.Model("duplicate_axes")
    x = m.input("x", ("batch", 3))
    with pytest.raises(sg.ShapeError):
        sg.sum(x, axis=(1, -1))
