"""A zoo of model families a new user would write, none of them built in or covered by
test_user_models.py: recurrent cells unrolled over time, matrix factorization, mixtures,
a CRF forward algorithm, masked attention, label smoothing, triplet losses, polynomial
features, chain energies, custom SymPy formulas, clipping, reshape chains.

Each model is compiled through the public API and compared with the same model written
by hand in PyTorch (float64) at 1e-10: loss, every output, every gradient from
``value_and_grad`` and from ``forward`` + ``backward(grad_loss=-1.5)``, at two sizes of
every symbolic dim (one of them 1), and with ``symgrad.verify.verify``.
"""

from __future__ import annotations

import math

import black
import numpy as np
import pytest
import sympy as sp
from helpers import (
    Zoo,
    assert_second_order_agrees,
    compile_module,
    rel,
    torch_twin,
)

import symgrad as sg
from symgrad.cli import generate, main
from symgrad.verify import verify

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10
GRAD_LOSS = -1.5


ZOO = Zoo(TOL, GRAD_LOSS)
CASES, register, module_of, check = ZOO.cases, ZOO.register, ZOO.module_of, ZOO.check


# --------------------------------------------------------------------------- models


def rnn():
    """Vanilla tanh RNN over T = 4 steps, learned initial state, linear readout."""
    m = sg.Model("rnn")
    x = m.input("x", ("batch", 4, 3))
    y = m.input("y", ("batch",))
    Wx, Wh = m.param("Wx", (5, 3)), m.param("Wh", (5, 5))
    b, h0, w = m.param("b", (5,)), m.param("h0", (5,)), m.param("w", (5,))
    h = h0
    for t in range(4):
        h = sg.tanh(x[:, t] @ Wx.T + h @ Wh.T + b)
    pred = m.output("pred", h @ w)
    m.loss(sg.mean((pred - y) ** 2))
    return m


def _rnn_torch(p, i):
    h = p["h0"]
    for t in range(4):
        h = torch.tanh(i["x"][:, t] @ p["Wx"].T + h @ p["Wh"].T + p["b"])
    pred = h @ p["w"]
    return torch.mean((pred - i["y"]) ** 2), {"pred": pred}


def _rnn_data(rng, batch):
    shapes = {"Wx": (5, 3), "Wh": (5, 5), "b": (5,), "h0": (5,), "w": (5,)}
    params = {k: 0.6 * rng.standard_normal(s) for k, s in shapes.items()}
    return params, {
        "x": rng.standard_normal((batch, 4, 3)),
        "y": rng.standard_normal(batch),
    }


register(rnn, _rnn_torch, _rnn_data, {"batch": 1}, {"batch": 6})


def gru():
    """PyTorch's GRUCell equations, T = 3 steps, hidden size 4, zero initial state."""
    m = sg.Model("gru")
    x = m.input("x", ("batch", 3, 2))
    y = m.input("y", ("batch", 4))
    W_ih, W_hh = m.param("W_ih", (12, 2)), m.param("W_hh", (12, 4))
    b_ih, b_hh = m.param("b_ih", (12,)), m.param("b_hh", (12,))
    h = None
    for t in range(3):
        gi = x[:, t] @ W_ih.T + b_ih
        if h is None:
            gh = b_hh
        else:
            gh = h @ W_hh.T + b_hh
        r = sg.sigmoid(gi[:, 0:4] + gh[..., 0:4])
        z = sg.sigmoid(gi[:, 4:8] + gh[..., 4:8])
        n = sg.tanh(gi[:, 8:12] + r * gh[..., 8:12])
        h = (1 - z) * n if h is None else (1 - z) * n + z * h
    m.output("h", h)
    m.loss(sg.mean((h - y) ** 2))
    return m


def _gru_torch(p, i):
    x = i["x"]
    h = torch.zeros(x.shape[0], 4, dtype=torch.float64)
    for t in range(3):
        h = torch._VF.gru_cell(x[:, t], h, p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    return F.mse_loss(h, i["y"]), {"h": h}


def _gru_data(rng, batch):
    shapes = {"W_ih": (12, 2), "W_hh": (12, 4), "b_ih": (12,), "b_hh": (12,)}
    params = {k: 0.7 * rng.standard_normal(s) for k, s in shapes.items()}
    return params, {
        "x": rng.standard_normal((batch, 3, 2)),
        "y": 0.5 * rng.standard_normal((batch, 4)),
    }


register(gru, _gru_torch, _gru_data, {"batch": 1}, {"batch": 5})


def matrix_factorization():
    """Biased matrix factorization: rows of U and V gathered by int64 user/item ids."""
    m = sg.Model("matrix_factorization")
    u = m.input("u", ("batch",), dtype="int64")
    v = m.input("v", ("batch",), dtype="int64")
    r = m.input("r", ("batch",))
    U, V = m.param("U", ("users", 3)), m.param("V", ("items", 3))
    bu, bv, mu = m.param("bu", ("users",)), m.param("bv", ("items",)), m.param("mu")
    pred = m.output("pred", sg.sum(U[u] * V[v], axis=-1) + bu[u] + bv[v] + mu)
    l2 = sg.sum(U**2) + sg.sum(V**2) + 0.5 * sg.sum(bu**2)
    m.loss(sg.mean((pred - r) ** 2) + 0.01 * l2)
    return m


def _matrix_factorization_torch(p, i):
    u, v = i["u"], i["v"]
    pred = (p["U"][u] * p["V"][v]).sum(-1) + p["bu"][u] + p["bv"][v] + p["mu"]
    l2 = (p["U"] ** 2).sum() + (p["V"] ** 2).sum() + 0.5 * (p["bu"] ** 2).sum()
    return F.mse_loss(pred, i["r"]) + 0.01 * l2, {"pred": pred}


def _matrix_factorization_data(rng, batch, users, items):
    params = {
        "U": rng.standard_normal((users, 3)),
        "V": rng.standard_normal((items, 3)),
        "bu": rng.standard_normal(users),
        "bv": rng.standard_normal(items),
        "mu": rng.standard_normal(()),
    }
    return params, {
        "u": rng.integers(0, users, batch),
        "v": rng.integers(0, items, batch),
        "r": rng.uniform(1, 5, batch),
    }


register(
    matrix_factorization,
    _matrix_factorization_torch,
    _matrix_factorization_data,
    {"batch": 1, "users": 1, "items": 1},
    {"batch": 12, "users": 3, "items": 5},
)


def gaussian_mixture():
    """Negative log-likelihood of a diagonal Gaussian mixture with learned weights,
    means and log-variances: logsumexp over components."""
    m = sg.Model("gaussian_mixture", hessian=True)
    x = m.input("x", ("batch", 2))
    logits = m.param("logits", ("K",))
    means, logvar = m.param("means", ("K", 2)), m.param("logvar", ("K", 2))
    d = x[:, None, :] - means
    comp = -0.5 * sg.sum(d**2 * sg.exp(-logvar) + logvar + math.log(2 * math.pi), -1)
    joint = m.output("joint", sg.log_softmax(logits) + comp)
    m.loss(-sg.mean(sg.logsumexp(joint, axis=1)))
    return m


def _gaussian_mixture_torch(p, i):
    d = i["x"][:, None, :] - p["means"]
    comp = -0.5 * torch.sum(
        d**2 * torch.exp(-p["logvar"]) + p["logvar"] + math.log(2 * math.pi), -1
    )
    joint = torch.log_softmax(p["logits"], 0) + comp
    return -torch.logsumexp(joint, 1).mean(), {"joint": joint}


def _gaussian_mixture_data(rng, batch, K):
    params = {
        "logits": rng.standard_normal(K),
        "means": 2 * rng.standard_normal((K, 2)),
        "logvar": 0.3 * rng.standard_normal((K, 2)),
    }
    return params, {"x": 2 * rng.standard_normal((batch, 2))}


register(
    gaussian_mixture,
    _gaussian_mixture_torch,
    _gaussian_mixture_data,
    {"batch": 1, "K": 1},
    {"batch": 7, "K": 3},
)


def crf():
    """Linear-chain CRF over T = 4 steps and 3 labels: forward algorithm (logsumexp
    with the transition matrix broadcast) minus the gold path's score."""
    m = sg.Model("crf")
    x = m.input("x", ("batch", 4, 2))
    tags = m.input("tags", ("batch", 4), dtype="int64")
    W = m.param("W", (3, 2))
    trans, start = m.param("trans", (3, 3)), m.param("start", (3,))
    em = m.let("em", x @ W.T)  # (batch, 4, 3)
    alpha = em[:, 0] + start
    for t in range(1, 4):
        alpha = sg.logsumexp(alpha[:, :, None] + trans, axis=1) + em[:, t]
    log_z = m.output("log_z", sg.logsumexp(alpha, axis=-1))
    gold = sg.sum(sg.take_along_axis(em, tags[:, :, None], axis=2)[:, :, 0], axis=1)
    first = sg.take_along_axis(start[None, :] + 0 * x[:, 0, :1], tags[:, :1], axis=1)
    gold = gold + first[:, 0]
    for t in range(1, 4):
        rows = trans[tags[:, t - 1]]  # (batch, 3)
        gold = gold + sg.take_along_axis(rows, tags[:, t : t + 1], axis=1)[:, 0]
    m.loss(sg.mean(log_z - gold))
    return m


def _crf_torch(p, i):
    em = i["x"] @ p["W"].T
    tags, trans = i["tags"], p["trans"]
    alpha = em[:, 0] + p["start"]
    for t in range(1, 4):
        alpha = torch.logsumexp(alpha[:, :, None] + trans, dim=1) + em[:, t]
    log_z = torch.logsumexp(alpha, -1)
    gold = em.gather(2, tags[:, :, None])[:, :, 0].sum(1) + p["start"][tags[:, 0]]
    for t in range(1, 4):
        gold = gold + trans[tags[:, t - 1], tags[:, t]]
    return (log_z - gold).mean(), {"log_z": log_z}


def _crf_data(rng, batch):
    params = {
        "W": rng.standard_normal((3, 2)),
        "trans": rng.standard_normal((3, 3)),
        "start": rng.standard_normal(3),
    }
    return params, {
        "x": rng.standard_normal((batch, 4, 2)),
        "tags": rng.integers(0, 3, (batch, 4)),
    }


register(crf, _crf_torch, _crf_data, {"batch": 1}, {"batch": 6})


def masked_attention():
    """Single-head attention with a mask input: where(mask > 0, scores, -1e9)."""
    m = sg.Model("masked_attention")
    X = m.input("X", ("batch", "T", 3))
    mask = m.input("mask", ("batch", "T", "T"))
    Wq, Wk, Wv = m.param("Wq", (2, 3)), m.param("Wk", (2, 3)), m.param("Wv", (3, 3))
    Q, K, V = X @ Wq.T, X @ Wk.T, X @ Wv.T
    scores = Q @ K.transpose(0, 2, 1) / math.sqrt(2.0)
    A = m.output("A", sg.softmax(sg.where(mask > 0, scores, -1e9), axis=-1))
    out = m.output("out", A @ V)
    m.loss(sg.mean(sg.tanh(out) ** 2) + 0.1 * sg.sum(out[:, -1]))
    return m


def _masked_attention_torch(p, i):
    X = i["X"]
    Q, K, V = X @ p["Wq"].T, X @ p["Wk"].T, X @ p["Wv"].T
    scores = Q @ K.transpose(1, 2) / math.sqrt(2.0)
    A = torch.softmax(scores.masked_fill(i["mask"] <= 0, -1e9), -1)
    out = A @ V
    loss = torch.mean(torch.tanh(out) ** 2) + 0.1 * out[:, -1].sum()
    return loss, {"A": A, "out": out}


def _masked_attention_data(rng, batch, T):
    params = {
        k: rng.standard_normal((n, 3)) for k, n in [("Wq", 2), ("Wk", 2), ("Wv", 3)]
    }
    mask = np.tril(np.ones((T, T)))[None] * rng.uniform(0.5, 1, (batch, 1, 1))
    mask = np.where(rng.uniform(size=(batch, T, T)) < 0.2, 0.0, mask)
    mask[:, np.arange(T), np.arange(T)] = 1.0  # every query sees itself
    return params, {"X": rng.standard_normal((batch, T, 3)), "mask": mask}


register(
    masked_attention,
    _masked_attention_torch,
    _masked_attention_data,
    {"batch": 1, "T": 1},
    {"batch": 3, "T": 5},
)


def label_smoothing():
    """Softmax cross-entropy with label smoothing 0.1 (PyTorch's definition)."""
    m = sg.Model("label_smoothing")
    x = m.input("x", ("batch", 4))
    labels = m.input("labels", ("batch",), dtype="int64")
    W, b = m.param("W", (5, 4)), m.param("b", (5,))
    logits = m.output("logits", x @ W.T + b)
    logp = sg.log_softmax(logits, axis=-1)
    nll = -sg.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
    smooth = -sg.mean(logp, axis=-1)
    m.loss(sg.mean(0.9 * nll + 0.1 * smooth))
    return m


def _label_smoothing_torch(p, i):
    logits = i["x"] @ p["W"].T + p["b"]
    return F.cross_entropy(logits, i["labels"], label_smoothing=0.1), {"logits": logits}


def _label_smoothing_data(rng, batch):
    params = {"W": rng.standard_normal((5, 4)), "b": rng.standard_normal(5)}
    return params, {
        "x": 2 * rng.standard_normal((batch, 4)),
        "labels": rng.integers(0, 5, batch),
    }


register(
    label_smoothing,
    _label_smoothing_torch,
    _label_smoothing_data,
    {"batch": 1},
    {"batch": 9},
)


def triplet():
    """Triplet margin loss on a linear embedding, Euclidean distances via sqrt."""
    m = sg.Model("triplet")
    a, p, n = (m.input(k, ("batch", 4)) for k in ("a", "p", "n"))
    W = m.param("W", (3, 4))
    ea, ep, en = a @ W.T, p @ W.T, n @ W.T
    d_pos = m.output("d_pos", sg.sqrt(sg.sum((ea - ep) ** 2, axis=-1)))
    d_neg = m.output("d_neg", sg.sqrt(sg.sum((ea - en) ** 2, axis=-1)))
    m.loss(sg.mean(sg.relu(1.0 + d_pos - d_neg)) + 1e-3 * sg.sum(W**2))
    return m


def _triplet_torch(p, i):
    ea, ep, en = (i[k] @ p["W"].T for k in "apn")
    d_pos = torch.linalg.vector_norm(ea - ep, dim=-1)
    d_neg = torch.linalg.vector_norm(ea - en, dim=-1)
    loss = torch.relu(1.0 + d_pos - d_neg).mean() + 1e-3 * (p["W"] ** 2).sum()
    return loss, {"d_pos": d_pos, "d_neg": d_neg}


def _triplet_data(rng, batch):
    a = rng.standard_normal((batch, 4))
    return {"W": rng.standard_normal((3, 4))}, {
        "a": a,
        "p": a + 0.5 * rng.standard_normal((batch, 4)),
        "n": a + 0.8 * rng.standard_normal((batch, 4)),
    }


register(triplet, _triplet_torch, _triplet_data, {"batch": 1}, {"batch": 8})


def polynomial():
    """Polynomial regression on features x**k built by broadcasting against an input of
    exponents, plus 1/x, log x and a learned power x**q."""
    m = sg.Model("polynomial")
    x, y = m.input("x", ("batch",)), m.input("y", ("batch",))
    k = m.input("k", ("K",))
    c = m.param("c", ("K",))
    a, b, q, s = m.param("a"), m.param("b"), m.param("q"), m.param("s")
    feats = m.let("feats", x[:, None] ** k)  # (batch, K)
    pred = m.output("pred", feats @ c + a / x + b * sg.log(x) + s * x**q)
    m.loss(sg.mean((pred - y) ** 2) + 1e-2 * sg.sum(c**2))
    m.sampler = _polynomial_data
    return m


def _polynomial_torch(p, i):
    x = i["x"]
    pred = (x[:, None] ** i["k"]) @ p["c"] + p["a"] / x + p["b"] * torch.log(x)
    pred = pred + p["s"] * x ** p["q"]
    return torch.mean((pred - i["y"]) ** 2) + 1e-2 * (p["c"] ** 2).sum(), {"pred": pred}


def _polynomial_data(rng, batch, K):
    params = {"c": rng.standard_normal(K)}
    params.update({k: rng.standard_normal(()) for k in "abqs"})
    return params, {
        "x": rng.uniform(0.5, 2.0, batch),
        "y": rng.standard_normal(batch),
        "k": np.arange(K, dtype=float),
    }


register(
    polynomial,
    _polynomial_torch,
    _polynomial_data,
    {"batch": 1, "K": 1},
    {"batch": 10, "K": 4},
)


def polymer():
    """A 2-D bead chain: harmonic bonds of rest length 1 through pos[1:] - pos[:-1], and
    bending through second differences pos[2:] - 2 pos[1:-1] + pos[:-2]."""
    m = sg.Model("polymer", hessian=True)
    pos = m.param("pos", ("n", 2))
    kb = m.input("kb", ())
    bond = pos[1:] - pos[:-1]
    r = m.output("r", sg.sqrt(sg.sum(bond**2, axis=-1)))
    bend = pos[2:] - 2 * pos[1:-1] + pos[:-2]
    m.loss(0.5 * sg.sum((r - 1.0) ** 2) + kb * sg.sum(bend**2))
    return m


def _polymer_torch(p, i):
    pos = p["pos"]
    r = torch.linalg.vector_norm(pos[1:] - pos[:-1], dim=-1)
    bend = pos[2:] - 2 * pos[1:-1] + pos[:-2]
    return 0.5 * ((r - 1.0) ** 2).sum() + i["kb"] * (bend**2).sum(), {"r": r}


def _polymer_data(rng, n):
    pos = np.cumsum(rng.standard_normal((n, 2)), axis=0)
    return {"pos": pos}, {"kb": np.array(0.7)}


register(polymer, _polymer_torch, _polymer_data, {"n": 2}, {"n": 3}, {"n": 6})


def special_functions():
    """sg.elementwise with formulas PyTorch has too: erf, atan, cosh, sinh, asinh,
    a Max-based smooth clamp and a rational function."""
    m = sg.Model("special_functions")
    x = m.input("x", ("batch", 3))
    w, b = m.param("w", (3,)), m.param("b", (3,))
    z = x * w + b
    f1 = sg.elementwise(lambda z: sp.tanh(z) + sp.atan(2 * z), z)
    f2 = sg.elementwise(
        lambda z: sp.cosh(z / 3) - sp.sinh(z / 4) + sp.log(z + sp.sqrt(z**2 + 1)), z
    )
    f3 = sg.elementwise(lambda z: z / (1 + z**2) + sp.Max(z, 0) ** 2, z)
    f4 = sg.elementwise(lambda u, v: sp.exp(-(u**2)) * sp.cos(v), z, x)
    m.output("f1", f1)
    m.loss(sg.mean(f1 * f2) + sg.mean(f3) + sg.sum(f4) / 7)
    return m


def _special_functions_torch(p, i):
    x = i["x"]
    z = x * p["w"] + p["b"]
    f1 = torch.tanh(z) + torch.atan(2 * z)
    f2 = torch.cosh(z / 3) - torch.sinh(z / 4) + torch.asinh(z)
    f3 = z / (1 + z**2) + torch.clamp(z, min=0) ** 2
    f4 = torch.exp(-(z**2)) * torch.cos(x)
    return torch.mean(f1 * f2) + torch.mean(f3) + f4.sum() / 7, {"f1": f1}


def _special_functions_data(rng, batch):
    params = {"w": rng.standard_normal(3), "b": rng.standard_normal(3)}
    return params, {"x": 1.5 * rng.standard_normal((batch, 3))}


register(
    special_functions,
    _special_functions_torch,
    _special_functions_data,
    {"batch": 1},
    {"batch": 8},
)


def clipping():
    """sg.maximum / sg.minimum clipping between learned bounds, and sg.max with axis
    and keepdims (a max-shifted softmax by hand)."""
    m = sg.Model("clipping")
    x = m.input("x", ("batch", 4))
    W, lo, hi = m.param("W", (3, 4)), m.param("lo"), m.param("hi")
    y = x @ W.T
    clipped = m.output("clipped", sg.minimum(sg.maximum(y, lo), hi))
    shifted = y - sg.max(y, axis=1, keepdims=True)
    e = sg.exp(shifted)
    p = m.output("p", e / sg.sum(e, axis=-1, keepdims=True))
    col = sg.max(clipped, axis=0)
    m.loss(sg.mean(clipped**2) + sg.sum(p[:, 0]) + sg.sum(col) + sg.max(y))
    return m


def _clipping_torch(p, i):
    y = i["x"] @ p["W"].T
    clipped = torch.minimum(torch.maximum(y, p["lo"]), p["hi"])
    shifted = y - torch.amax(y, dim=1, keepdim=True)
    e = torch.exp(shifted)
    prob = e / e.sum(-1, keepdim=True)
    col = torch.amax(clipped, dim=0)
    loss = (clipped**2).mean() + prob[:, 0].sum() + col.sum() + torch.amax(y)
    return loss, {"clipped": clipped, "p": prob}


def _clipping_data(rng, batch):
    params = {
        "W": rng.standard_normal((3, 4)),
        "lo": np.array(-0.5),
        "hi": np.array(0.8),
    }
    return params, {"x": rng.standard_normal((batch, 4))}


register(clipping, _clipping_torch, _clipping_data, {"batch": 1}, {"batch": 7})


def reshapes():
    """Transpose / reshape chains on 3-D tensors, with -1 and named dims."""
    m = sg.Model("reshapes")
    X = m.input("X", ("batch", "T", 6))
    W = m.param("W", (4, 6))
    h = X @ W.T  # (batch, T, 4)
    heads = h.reshape("batch", "T", 2, 2).transpose(0, 2, 1, 3)  # (batch, 2, T, 2)
    s = heads @ heads.transpose(0, 1, 3, 2)  # (batch, 2, T, T)
    flat = sg.reshape(s, ("batch", -1))
    g = m.output("g", sg.tanh(flat))
    back = sg.transpose(h, (2, 0, 1)).reshape(4, -1)  # (4, batch * T)
    m.loss(sg.mean(g**2) + sg.sum(back[1:3] ** 3) / 10 + sg.sum(sg.transpose(h)[0]))
    return m


def _reshapes_torch(p, i):
    X = i["X"]
    B, T = X.shape[:2]
    h = X @ p["W"].T
    heads = h.reshape(B, T, 2, 2).permute(0, 2, 1, 3)
    s = heads @ heads.transpose(2, 3)
    g = torch.tanh(s.reshape(B, -1))
    back = h.permute(2, 0, 1).reshape(4, -1)
    loss = (g**2).mean() + (back[1:3] ** 3).sum() / 10 + h.permute(2, 1, 0)[0].sum()
    return loss, {"g": g}


def _reshapes_data(rng, batch, T):
    return {"W": rng.standard_normal((4, 6))}, {"X": rng.standard_normal((batch, T, 6))}


register(
    reshapes,
    _reshapes_torch,
    _reshapes_data,
    {"batch": 1, "T": 1},
    {"batch": 3, "T": 4},
)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        pytest.param(n, d, id=f"{n}-{'-'.join(map(str, d.values()))}")
        for n, c in CASES.items()
        for d in c.sizes
    ],
)
def test_agrees_with_pytorch(name, dims):
    check(name, dims)


@pytest.mark.parametrize("name", list(CASES))
def test_generated_source_is_a_fixed_point_of_black(name):
    """codegen runs black's formatter once, not twice as black.format_str does."""
    source, _ = generate(CASES[name].build())
    assert black.format_str(source, mode=black.Mode()) == source


@pytest.mark.parametrize("name", list(CASES))
def test_verify_passes(name):
    model, module = module_of(name)
    report = verify(model, module)
    assert report.ok, report.table()


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("gaussian_mixture", {"batch": 1, "K": 1}),
        ("gaussian_mixture", {"batch": 5, "K": 3}),
        ("polymer", {"n": 2}),
        ("polymer", {"n": 5}),
    ],
)
def test_hessian_and_hvp_agree_with_pytorch(name, dims):
    _, module = module_of(name)
    params, inputs = CASES[name].data(np.random.default_rng(3), **dims)
    assert_second_order_agrees(module, CASES[name].reference, params, inputs, TOL)


@pytest.mark.parametrize(
    ("name", "dims"),
    [
        ("rnn", {"batch": 1}),
        ("gru", {"batch": 1}),
        ("triplet", {"batch": 1}),
        ("crf", {"batch": 1}),
        ("matrix_factorization", {"batch": 2, "users": 2, "items": 3}),
        ("polymer", {"n": 4}),
    ],
)
def test_unrolled_agrees_with_pytorch(name, dims):
    """``m.unroll`` at one size set: the straight-line function, called directly, gives
    the vectorized code's loss and gradients (and value_and_grad PyTorch's)."""
    _, module, params, inputs = check(name, dims, unroll=True)
    size = "_".join(f"{k}_{v}" for k, v in dims.items())
    unrolled = getattr(module, f"_value_and_grad_{size}")
    args = [params[k] for k in module.PARAMS] + [inputs[k] for k in module.INPUTS]
    loss, grads = unrolled(*args)
    _, _, expected = torch_twin(CASES[name].reference, params, inputs)
    expected_loss, vectorized = module_of(name)[1].value_and_grad(params, inputs)
    assert rel(loss, expected_loss) <= TOL
    floor = 1e-3 * max(np.max(np.abs(g), initial=1e-300) for g in expected.values())
    for k, g in grads.items():
        assert rel(g, expected[k], floor) <= TOL, k
        assert rel(g, vectorized[k], floor) <= TOL, k


def test_unrolled_chain_with_empty_slices():
    """The bead chain unrolled at n = 2, where pos[2:] is empty."""
    check("polymer", {"n": 2}, unroll=True)


def test_sizes_too_small_for_a_slice_are_a_clear_error():
    """pos[2:] of one bead: NumPy would silently give an empty slice where the model's
    shapes say n - 2 = -1 rows; the call and m.unroll(n=1) say which slice needs what.
    """
    module = module_of("polymer")[1]
    params, inputs = _polymer_data(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match=r"n=1: pos\[2:\] needs n >= 2"):
        module.value_and_grad(params, inputs)
    m = polymer()
    m.unroll(n=1)
    with pytest.raises(sg.ModelError, match=r"m.unroll\(n=1\): pos\[2:\] needs n >= 2"):
        compile_module(m)


def test_unroll_empty_difference_times_a_scalar_input():
    """The smallest form of the failure above."""
    m = sg.Model("empty_chain")
    x, kb = m.param("x", ("n",)), m.input("kb", ())
    m.loss(kb * sg.sum((x[1:] - x[:-1]) ** 2))
    m.unroll(n=1)
    module = compile_module(m)  # KeyError: (0,)
    loss, grads = module._value_and_grad_n_1(np.array([0.5]), np.array(2.0))
    assert loss == 0.0
    np.testing.assert_array_equal(grads["x"], [0.0])


def test_unsupported_special_functions_are_named():
    """gamma and besselj have no NumPy spelling in the printer: a clear UnsupportedError."""
    for fn, name in [(sp.gamma, "gamma"), (lambda z: sp.besselj(0, z), "besselj")]:
        m = sg.Model("special")
        x = m.param("x", (3,))
        with pytest.raises(sg.UnsupportedError, match=name):
            m.loss(sg.sum(sg.elementwise(lambda z, fn=fn: fn(z), x)))
            compile_module(m)


def test_maximum_minimum_ties_split_like_pytorch():
    """sg.maximum / sg.minimum at exact ties share the gradient equally (torch.maximum),
    including a tie with a constant and with a 0-d parameter."""
    m = sg.Model("ties")
    a, b, c = m.param("a", (4,)), m.param("b", (4,)), m.param("c")
    m.loss(
        sg.sum(sg.maximum(a, b))
        + sg.sum(sg.minimum(a, c) ** 2)
        + sg.sum(sg.maximum(a, 0.5) * 3)
    )
    module = compile_module(m)
    params = {
        "a": np.array([0.5, 1.0, 2.0, -1.0]),
        "b": np.array([0.5, 2.0, 2.0, 0.0]),
        "c": np.array(2.0),
    }
    _, grads = module.value_and_grad(params, {})
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    half = torch.tensor(0.5, dtype=torch.float64)
    loss = (
        torch.maximum(tp["a"], tp["b"]).sum()
        + (torch.minimum(tp["a"], tp["c"]) ** 2).sum()
        + (torch.maximum(tp["a"], half) * 3).sum()
    )
    loss.backward()
    for k, t in tp.items():
        assert rel(grads[k], t.grad.numpy()) <= TOL, k


RNN_FILE = """
import symgrad as sg


def build():
    m = sg.Model("rnn_file", doc="tanh RNN over 3 steps.")
    x = m.input("x", ("batch", 3, 2))
    y = m.input("y", ("batch",))
    Wx, Wh, w = m.param("Wx", (4, 2)), m.param("Wh", (4, 4)), m.param("w", (4,))
    h = sg.tanh(x[:, 0] @ Wx.T)
    for t in (1, 2):
        h = sg.tanh(x[:, t] @ Wx.T + h @ Wh.T)
    m.loss(sg.mean((h @ w - y) ** 2))
    return m
"""


def test_cli_build_check_verify_of_a_model_file(tmp_path, capsys):
    model_file, out = tmp_path / "rnn_model.py", tmp_path / "out"
    model_file.write_text(RNN_FILE)
    assert main(["build", str(model_file), "--out", str(out)]) == 0
    built = (out / "rnn_file.py").read_text()
    assert "verified" in capsys.readouterr().out
    assert main(["check", str(model_file), "--out", str(out)]) == 0
    capsys.readouterr()

    # the generated module works on its own
    from symgrad.verify import load_source

    module = load_source(built, "rnn_file")
    rng = np.random.default_rng(0)
    params = module.init_params(seed=1)
    inputs = {"x": rng.standard_normal((2, 3, 2)), "y": rng.standard_normal(2)}
    loss, grads = module.value_and_grad(params, inputs)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    x = torch.tensor(inputs["x"])
    h = torch.tanh(x[:, 0] @ tp["Wx"].T)
    for t in (1, 2):
        h = torch.tanh(x[:, t] @ tp["Wx"].T + h @ tp["Wh"].T)
    expected = torch.mean((h @ tp["w"] - torch.tensor(inputs["y"])) ** 2)
    expected.backward()
    assert rel(loss, expected.item()) <= TOL
    for k, t in tp.items():
        assert rel(grads[k], t.grad.numpy()) <= TOL, k

    # edit the model: check fails with a diff and writes nothing
    model_file.write_text(RNN_FILE.replace("for t in (1, 2):", "for t in (2, 1):"))
    assert main(["check", str(model_file), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    report = captured.out + captured.err
    assert "--- " in report and "+++ " in report
    assert "-    t1 = x[:, 2]" in report or "Model digest" in report
    assert "stale" in report
    assert (out / "rnn_file.py").read_text() == built

    assert main(["verify", str(model_file)]) == 0
    assert "ok" in capsys.readouterr().out


SHORT_AXIS_CASES = {
    # slice bounds past the end of a symbolic axis: NumPy clamps, the IR does not
    "mean_of_head": (
        lambda x: sg.mean(x[:3]),
        lambda x: x[:3].mean(),
        2,
    ),
    "mean_of_window": (
        lambda x: sg.mean(x[1:3] ** 2),
        lambda x: (x[1:3] ** 2).mean(),
        2,
    ),
    # an empty slice of a slice: np.zeros((n - 2,)) with n = 1
    "slice_of_empty_slice": (
        lambda x: sg.sum(sg.tanh(x[1:-1])[1:]),
        lambda x: torch.tanh(x[1:-1])[1:].sum(),
        1,
    ),
}


@pytest.mark.parametrize("case", list(SHORT_AXIS_CASES))
def test_slices_of_a_short_symbolic_axis(case):
    """x[:3] of two elements: NumPy silently gives two, so the mean would divide by the
    wrong count; the generated module refuses such sizes, naming the slice."""
    build, _, n = SHORT_AXIS_CASES[case]
    m = sg.Model(case)
    m.loss(build(m.param("x", ("n",))))
    module = compile_module(m)
    with pytest.raises(ValueError, match=rf"n={n}: .*x.*\] needs n >= 3"):
        module.value_and_grad({"x": np.arange(1.0, n + 1)}, {})
    params = {"x": np.arange(1.0, 4.0)}  # n = 3: as NumPy and torch say
    loss, grads = module.value_and_grad(params, {})
    _, reference, _ = SHORT_AXIS_CASES[case]
    x = torch.tensor(params["x"], requires_grad=True)
    expected = reference(x)
    expected.backward()
    assert rel(loss, expected.item()) <= TOL
    assert rel(grads["x"], x.grad.numpy(), 1e-300) <= TOL
