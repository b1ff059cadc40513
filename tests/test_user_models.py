"""Models a new user would write, none of them built in: each is compiled through the
public API, run at two sizes of every symbolic dim (one of them 1), and compared with the
same model written by hand in PyTorch (float64) at 1e-10: loss, every output, every
gradient from ``value_and_grad`` and from ``forward`` + ``backward``.
"""

from __future__ import annotations

import importlib
import itertools
import re

import numpy as np
import pytest
import sympy as sp
from helpers import Zoo, assert_second_order_agrees, compile_module, rel

import symgrad as sg
from symgrad.cli import generate, main

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10


ZOO = Zoo(TOL, 2.0)
CASES, register, module_of, check = ZOO.cases, ZOO.register, ZOO.module_of, ZOO.check


# --------------------------------------------------------------------------- models


def layer_norm():
    m = sg.Model("layer_norm")
    x = m.input("x", ("batch", 3))
    W0 = m.param("W0", ("d", 3))
    gamma, beta = m.param("gamma", ("d",)), m.param("beta", ("d",))
    W = m.param("W", (2, "d"))
    h = x @ W0.T
    mu = sg.mean(h, axis=-1, keepdims=True)
    var = sg.mean((h - mu) ** 2, axis=-1, keepdims=True)
    y = m.output("y", (h - mu) / sg.sqrt(var + 1e-5) * gamma + beta)
    m.loss(sg.mean(sg.tanh(y @ W.T) ** 2))
    return m


def _layer_norm_torch(p, i):
    h = i["x"] @ p["W0"].T
    y = F.layer_norm(h, h.shape[-1:], p["gamma"], p["beta"], eps=1e-5)
    return torch.mean(torch.tanh(y @ p["W"].T) ** 2), {"y": y}


def _layer_norm_data(rng, batch, d):
    params = {
        "W0": rng.standard_normal((d, 3)),
        "gamma": 1 + 0.3 * rng.standard_normal(d),
        "beta": 0.3 * rng.standard_normal(d),
        "W": rng.standard_normal((2, d)),
    }
    return params, {"x": 3 * rng.standard_normal((batch, 3)) + 1}


register(
    layer_norm,
    _layer_norm_torch,
    _layer_norm_data,
    {"batch": 1, "d": 2},
    {"batch": 5, "d": 7},
)


def attention():
    m = sg.Model("attention")
    X = m.input("X", ("batch", "T", 4))
    Wq, Wk, Wv = m.param("Wq", (3, 4)), m.param("Wk", (3, 4)), m.param("Wv", (2, 4))
    Q, K, V = X @ Wq.T, X @ Wk.T, X @ Wv.T
    scores = Q @ sg.transpose(K, (0, 2, 1)) / np.sqrt(3.0)
    A = m.output("A", sg.softmax(scores, axis=-1))
    out = m.output("out", A @ V)
    m.loss(sg.mean(out**2) + sg.sum(out[:, 0, :]))
    return m


def _attention_torch(p, i):
    X = i["X"]
    Q, K, V = X @ p["Wq"].T, X @ p["Wk"].T, X @ p["Wv"].T
    A = torch.softmax(Q @ K.transpose(1, 2) / np.sqrt(3.0), dim=-1)
    out = A @ V
    return torch.mean(out**2) + torch.sum(out[:, 0, :]), {"A": A, "out": out}


def _attention_data(rng, batch, T):
    params = {
        k: rng.standard_normal((n, 4)) for k, n in [("Wq", 3), ("Wk", 3), ("Wv", 2)]
    }
    return params, {"X": rng.standard_normal((batch, T, 4))}


register(
    attention,
    _attention_torch,
    _attention_data,
    {"batch": 1, "T": 1},
    {"batch": 3, "T": 5},
)


def causal_attention():
    """The torch idiom masks with -inf; symgrad takes a large finite value instead."""
    m = sg.Model("causal_attention")
    X = m.input("X", ("batch", "T", 4))
    allowed = m.input("allowed", ("T", "T"))  # 1 on and below the diagonal
    Wq, Wk = m.param("Wq", (3, 4)), m.param("Wk", (3, 4))
    scores = (X @ Wq.T) @ sg.transpose(X @ Wk.T, (0, 2, 1))
    A = m.output("A", sg.softmax(sg.where(allowed > 0.5, scores, -1e30), axis=-1))
    m.loss(sg.sum(A @ X * X))
    return m


def _causal_attention_torch(p, i):
    X = i["X"]
    scores = (X @ p["Wq"].T) @ (X @ p["Wk"].T).transpose(1, 2)
    A = torch.softmax(scores.masked_fill(i["allowed"] < 0.5, -torch.inf), dim=-1)
    return torch.sum(A @ X * X), {"A": A}


def _causal_attention_data(rng, batch, T):
    params = {k: rng.standard_normal((3, 4)) for k in ("Wq", "Wk")}
    return params, {
        "X": rng.standard_normal((batch, T, 4)),
        "allowed": np.tril(np.ones((T, T))),
    }


register(
    causal_attention,
    _causal_attention_torch,
    _causal_attention_data,
    {"batch": 1, "T": 1},
    {"batch": 2, "T": 5},
)


def big_logits():
    """Cross-entropy and log-sum-exp of logits of magnitude ~1000."""
    m = sg.Model("big_logits")
    x = m.input("x", ("batch", 5))
    labels = m.input("labels", ("batch",), dtype="int64")
    w, b = m.param("w", (5,)), m.param("b", (5,))
    z = m.output("z", 1000 * x * w + b)
    logp = m.output("logp", sg.log_softmax(z, axis=-1))
    picked = sg.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
    m.loss(-sg.mean(picked) + sg.mean(sg.logsumexp(z, axis=1)) / 1000)
    return m


def _big_logits_torch(p, i):
    z = 1000 * i["x"] * p["w"] + p["b"]
    logp = torch.log_softmax(z, dim=-1)
    loss = F.nll_loss(logp, i["labels"]) + torch.logsumexp(z, dim=1).mean() / 1000
    return loss, {"z": z, "logp": logp}


def _big_logits_data(rng, batch):
    params = {"w": rng.choice([-1.0, 1.0], 5), "b": rng.standard_normal(5)}
    x = rng.standard_normal((batch, 5))
    return params, {"x": x, "labels": rng.integers(0, 5, batch)}


register(big_logits, _big_logits_torch, _big_logits_data, {"batch": 1}, {"batch": 6})


def conv1d():
    m = sg.Model("conv1d")
    x = m.input("x", ("batch", "L"))
    w, b = m.param("w", (3,)), m.param("b")
    y = m.output("y", x[:, :-2] * w[0] + x[:, 1:-1] * w[1] + x[:, 2:] * w[2] + b)
    m.loss(sg.mean(sg.tanh(y) ** 2) + sg.sum(y[:, 1:]) / 10)
    return m


def _conv1d_torch(p, i):
    x = i["x"]
    y = F.conv1d(x[:, None, :], p["w"][None, None, :], p["b"][None])[:, 0, :]
    return torch.mean(torch.tanh(y) ** 2) + torch.sum(y[:, 1:]) / 10, {"y": y}


def _conv1d_data(rng, batch, L):
    return {"w": rng.standard_normal(3), "b": rng.standard_normal(())}, {
        "x": rng.standard_normal((batch, L))
    }


register(
    conv1d, _conv1d_torch, _conv1d_data, {"batch": 1, "L": 3}, {"batch": 4, "L": 9}
)


def residual_mlp():
    m = sg.Model("residual_mlp")
    x = m.input("x", ("batch", 6))
    t = m.input("t", ("batch",))
    W1, b1 = m.param("W1", (6, 6)), m.param("b1", (6,))
    W2, b2 = m.param("W2", (6, 6)), m.param("b2", (6,))
    h = m.let("h", x + sg.relu(x @ W1.T + b1) @ W2.T + b2)
    pooled = m.output("pooled", sg.max(h.reshape(("batch", 3, 2)), axis=-1))
    m.loss(sg.mean((sg.sum(pooled, axis=1) - t) ** 2))
    return m


def _residual_mlp_torch(p, i):
    x = i["x"]
    h = x + torch.relu(x @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    pooled = torch.amax(h.reshape(-1, 3, 2), dim=-1)
    return torch.mean((pooled.sum(1) - i["t"]) ** 2), {"pooled": pooled}


def _residual_mlp_data(rng, batch):
    params = {
        k: 0.5 * rng.standard_normal((6, 6) if k[0] == "W" else 6)
        for k in ("W1", "b1", "W2", "b2")
    }
    return params, {
        "x": rng.standard_normal((batch, 6)),
        "t": rng.standard_normal(batch),
    }


register(
    residual_mlp, _residual_mlp_torch, _residual_mlp_data, {"batch": 1}, {"batch": 7}
)


def huber():
    m = sg.Model("huber")
    x, y = m.input("x", ("batch", 3)), m.input("y", ("batch",))
    w, c = m.param("w", (3,)), m.param("c")
    r = x @ w + c - y
    a = sg.abs(r)
    by_where = sg.where(a < 1.0, 0.5 * r**2, a - 0.5)
    by_min = sg.elementwise(
        lambda r: sp.Min(sp.Abs(r), 1) * (sp.Abs(r) - sp.Min(sp.Abs(r), 1) / 2), r
    )
    m.output("by_min", by_min)
    m.loss(sg.mean(by_where) + 0.5 * sg.mean(by_min))
    return m


def _huber_torch(p, i):
    r = i["x"] @ p["w"] + p["c"]
    by_min = F.huber_loss(r, i["y"], reduction="none", delta=1.0)
    return F.smooth_l1_loss(r, i["y"]) + 0.5 * by_min.mean(), {"by_min": by_min}


def _huber_data(rng, batch):
    params = {"w": rng.standard_normal(3), "c": rng.standard_normal(())}
    return params, {
        "x": rng.standard_normal((batch, 3)),
        "y": 2 * rng.standard_normal(batch),
    }


register(huber, _huber_torch, _huber_data, {"batch": 1}, {"batch": 20})


def gaussian_nll():
    m = sg.Model("gaussian_nll")
    x, y = m.input("x", ("batch", 2)), m.input("y", ("batch",))
    w, b = m.param("w", (2,)), m.param("b")
    v, c = m.param("v", (2,)), m.param("c")
    mu = m.output("mu", x @ w + b)
    logvar = m.output("logvar", x @ v + c)
    m.loss(sg.mean(0.5 * (logvar + (y - mu) ** 2 * sg.exp(-logvar))))
    return m


def _gaussian_nll_torch(p, i):
    mu = i["x"] @ p["w"] + p["b"]
    logvar = i["x"] @ p["v"] + p["c"]
    loss = F.gaussian_nll_loss(mu, i["y"], torch.exp(logvar), eps=0.0)
    return loss, {"mu": mu, "logvar": logvar}


def _gaussian_nll_data(rng, batch):
    params = {k: rng.standard_normal(2 if k in "wv" else ()) for k in "wbvc"}
    return params, {
        "x": rng.standard_normal((batch, 2)),
        "y": rng.standard_normal(batch),
    }


register(
    gaussian_nll, _gaussian_nll_torch, _gaussian_nll_data, {"batch": 1}, {"batch": 9}
)


def poisson():
    m = sg.Model("poisson")
    x, y = m.input("x", ("batch", 4)), m.input("y", ("batch",))
    w, b = m.param("w", (4,)), m.param("b")
    rate = m.output("rate", sg.exp(x @ w + b))
    m.loss(sg.mean(rate - y * sg.log(rate)))
    return m


def _poisson_torch(p, i):
    eta = i["x"] @ p["w"] + p["b"]
    return F.poisson_nll_loss(eta, i["y"], log_input=True), {"rate": torch.exp(eta)}


def _poisson_data(rng, batch):
    params = {"w": 0.3 * rng.standard_normal(4), "b": rng.standard_normal(())}
    return params, {
        "x": rng.standard_normal((batch, 4)),
        "y": rng.poisson(2.0, batch).astype(float),
    }


register(poisson, _poisson_torch, _poisson_data, {"batch": 1}, {"batch": 11})


def weight_decay():
    """Weight decay over several parameters; an unused parameter; one used only by an
    output; a scalar and a (1, k) bias broadcasting."""
    m = sg.Model("weight_decay")
    x, t = m.input("x", ("batch", 3)), m.input("t", ("batch", 2))
    W, bias, s = m.param("W", (2, 3)), m.param("bias", (1, 2)), m.param("s")
    m.param("unused", (4,))
    shown = m.param("shown", (2,))
    y = m.output("y", s * (x @ W.T) + bias)
    m.output("shifted", y + shown)
    decay = sg.sum(W**2) + sg.sum(bias**2) + s**2
    m.loss(sg.mean((y - t) ** 2) + 1e-2 * decay)
    return m


def _weight_decay_torch(p, i):
    y = p["s"] * (i["x"] @ p["W"].T) + p["bias"]
    decay = (p["W"] ** 2).sum() + (p["bias"] ** 2).sum() + p["s"] ** 2
    loss = F.mse_loss(y, i["t"]) + 1e-2 * decay
    return loss, {"y": y, "shifted": y + p["shown"]}


def _weight_decay_data(rng, batch):
    shapes = {"W": (2, 3), "bias": (1, 2), "s": (), "unused": (4,), "shown": (2,)}
    params = {k: rng.standard_normal(v) for k, v in shapes.items()}
    return params, {
        "x": rng.standard_normal((batch, 3)),
        "t": rng.standard_normal((batch, 2)),
    }


register(
    weight_decay, _weight_decay_torch, _weight_decay_data, {"batch": 1}, {"batch": 8}
)


def tied_autoencoder():
    """One weight on two paths: encoder W, decoder W.T."""
    m = sg.Model("tied_autoencoder")
    x = m.input("x", ("batch", 5))
    W, b = m.param("W", (3, 5)), m.param("b", (3,))
    h = m.output("code", sg.tanh(x @ W.T + b))
    recon = m.output("recon", h @ W)
    m.loss(sg.mean((recon - x) ** 2) + sg.sum(W @ W.T) / 100)
    return m


def _tied_autoencoder_torch(p, i):
    h = torch.tanh(i["x"] @ p["W"].T + p["b"])
    recon = h @ p["W"]
    loss = F.mse_loss(recon, i["x"]) + torch.sum(p["W"] @ p["W"].T) / 100
    return loss, {"code": h, "recon": recon}


def _tied_autoencoder_data(rng, batch):
    params = {"W": rng.standard_normal((3, 5)), "b": rng.standard_normal(3)}
    return params, {"x": rng.standard_normal((batch, 5))}


register(
    tied_autoencoder,
    _tied_autoencoder_torch,
    _tied_autoencoder_data,
    {"batch": 1},
    {"batch": 6},
)


def batched_matmul():
    m = sg.Model("batched_matmul")
    A = m.input("A", ("batch", 3, 4))
    W = m.param("W", (4, 5))
    B = m.param("B", ("batch", 5, 2))
    Q = A @ W
    gram = m.output("gram", Q @ sg.transpose(Q, (0, 2, 1)))
    m.loss(sg.sum(sg.sin(gram)) / 10 + sg.mean(Q @ B))
    return m


def _batched_matmul_torch(p, i):
    Q = i["A"] @ p["W"]
    gram = Q @ Q.transpose(1, 2)
    return torch.sum(torch.sin(gram)) / 10 + torch.mean(Q @ p["B"]), {"gram": gram}


def _batched_matmul_data(rng, batch):
    params = {
        "W": 0.5 * rng.standard_normal((4, 5)),
        "B": rng.standard_normal((batch, 5, 2)),
    }
    return params, {"A": rng.standard_normal((batch, 3, 4))}


register(
    batched_matmul,
    _batched_matmul_torch,
    _batched_matmul_data,
    {"batch": 1},
    {"batch": 4},
)


def bag_of_words():
    """Embedding lookup with a 2-D index array full of repeats, mean over the context."""
    m = sg.Model("bag_of_words")
    idx = m.input("idx", ("batch", "ctx"), dtype="int64")
    labels = m.input("labels", ("batch",), dtype="int64")
    E = m.param("E", ("vocab", 3))
    W = m.param("W", (4, 3))
    bag = m.output("bag", sg.mean(E[idx], axis=1))
    z = bag @ W.T
    picked = sg.take_along_axis(z, labels[:, None], axis=1)[:, 0]
    m.loss(sg.mean(sg.logsumexp(z, axis=1) - picked))
    return m


def _bag_of_words_torch(p, i):
    bag = p["E"][i["idx"]].mean(1)
    return F.cross_entropy(bag @ p["W"].T, i["labels"]), {"bag": bag}


def _bag_of_words_data(rng, batch, ctx, vocab):
    params = {"E": rng.standard_normal((vocab, 3)), "W": rng.standard_normal((4, 3))}
    idx = rng.integers(0, min(vocab, 3), (batch, ctx))  # many repeats
    return params, {"idx": idx, "labels": rng.integers(0, 4, batch)}


register(
    bag_of_words,
    _bag_of_words_torch,
    _bag_of_words_data,
    {"batch": 1, "ctx": 1, "vocab": 1},
    {"batch": 5, "ctx": 4, "vocab": 7},
)


def springs():
    m = sg.Model("springs")
    pos = m.param("pos", ("N", 2))
    k, L = m.param("k"), m.param("L")
    i, j = m.input("i", ("pairs",), dtype="int64"), m.input(
        "j", ("pairs",), dtype="int64"
    )
    d = pos[i] - pos[j]
    r = m.output("r", sg.sqrt(sg.sum(d**2, axis=-1)))
    m.loss(sg.sum(k * (r - L) ** 2) / 2)
    return m


def _springs_torch(p, i):
    d = p["pos"][i["i"]] - p["pos"][i["j"]]
    r = torch.sqrt(torch.sum(d**2, dim=-1))
    return torch.sum(p["k"] * (r - p["L"]) ** 2) / 2, {"r": r}


def _springs_data(rng, N, pairs):
    i = rng.integers(0, N, pairs)
    j = (i + rng.integers(1, N, pairs)) % N  # never a self pair
    params = {
        "pos": rng.standard_normal((N, 2)),
        "k": np.array(2.0),
        "L": np.array(0.7),
    }
    return params, {"i": i, "j": j}


register(
    springs, _springs_torch, _springs_data, {"N": 2, "pairs": 1}, {"N": 5, "pairs": 12}
)


def piecewise_penalty():
    """SymPy's Piecewise in a formula: branches picked in order, & | ~ and == conditions."""
    m = sg.Model("piecewise_penalty")
    x, y = m.input("x", ("batch",)), m.input("y", ("batch",))
    a, b = m.param("a"), m.param("b", ("batch",))

    def penalty(r, w):
        return sp.Piecewise(
            (r**2 / 2, (sp.Abs(r) < 1) & ~sp.Eq(w, 0)),
            (sp.exp(-r) - 1, (r < -2) | (w > 1)),
            (sp.Abs(r) - sp.Rational(1, 2), True),
        )

    r = m.output("r", a * x + b)
    m.loss(sg.sum(sg.elementwise(penalty, r, y)))
    return m


def _piecewise_penalty_torch(p, i):
    r, w = p["a"] * i["x"] + p["b"], i["y"]
    penalty = torch.where(
        (r.abs() < 1) & ~(w == 0),
        r**2 / 2,
        torch.where((r < -2) | (w > 1), torch.exp(-r) - 1, r.abs() - 0.5),
    )
    return penalty.sum(), {"r": r}


def _piecewise_penalty_data(rng, batch):
    params = {"a": np.array(1.3), "b": 2 * rng.standard_normal(batch)}
    # y hits each condition: 0, above 1, and neither
    return params, {
        "x": 2 * rng.standard_normal(batch),
        "y": np.resize([0, 2, 0.5], batch),
    }


register(
    piecewise_penalty,
    _piecewise_penalty_torch,
    _piecewise_penalty_data,
    {"batch": 1},
    {"batch": 9},
)


def polynomial_features():
    """Features joined with sg.concatenate, a pair of scores with sg.stack."""
    m = sg.Model("polynomial_features")
    x, labels = m.input("x", ("batch", 2)), m.input("labels", ("batch",), dtype="int64")
    W = m.param("W", (3, 6))
    features = sg.concatenate([x, x**2, sg.sin(x[:, :1]), x[:, :1] * x[:, 1:]], axis=1)
    scores = m.output("scores", features @ W.T)
    pair = sg.stack([scores[:, 0], sg.max(scores[:, 1:], axis=1)], axis=-1)
    picked = sg.take_along_axis(sg.log_softmax(scores, axis=1), labels[:, None], axis=1)
    m.loss(sg.mean(sg.logsumexp(pair, axis=1)) - sg.mean(picked))
    return m


def _polynomial_features_torch(p, i):
    x = i["x"]
    features = torch.cat([x, x**2, torch.sin(x[:, :1]), x[:, :1] * x[:, 1:]], 1)
    scores = features @ p["W"].T
    pair = torch.stack([scores[:, 0], scores[:, 1:].amax(1)], -1)
    loss = torch.logsumexp(pair, 1).mean() + F.cross_entropy(scores, i["labels"])
    return loss, {"scores": scores}


def _polynomial_features_data(rng, batch):
    return {"W": rng.standard_normal((3, 6))}, {
        "x": rng.standard_normal((batch, 2)),
        "labels": rng.integers(0, 3, batch),
    }


register(
    polynomial_features,
    _polynomial_features_torch,
    _polynomial_features_data,
    {"batch": 1},
    {"batch": 6},
)


def ring_of_points():
    """A concatenation along a symbolic axis: fixed anchors around n free points, each
    point pulled towards its neighbours on the closed ring."""
    m = sg.Model("ring_of_points", hessian=True)
    free, anchors = m.param("free", ("n", 2)), m.input("anchors", (2, 2))
    ring = sg.concatenate([anchors[:1], free, anchors[1:]], axis=0)
    after = sg.concatenate([ring[1:], ring[:1]])
    m.loss(sg.sum(sg.sqrt(sg.sum((after - ring) ** 2, axis=1) + 0.1)))
    return m


def _ring_of_points_torch(p, i):
    ring = torch.cat([i["anchors"][:1], p["free"], i["anchors"][1:]], 0)
    after = torch.cat([ring[1:], ring[:1]])
    return torch.sqrt(((after - ring) ** 2).sum(1) + 0.1).sum(), {}


def _ring_of_points_data(rng, n):
    return {"free": rng.standard_normal((n, 2))}, {
        "anchors": rng.standard_normal((2, 2))
    }


register(
    ring_of_points, _ring_of_points_torch, _ring_of_points_data, {"n": 1}, {"n": 5}
)


@pytest.mark.parametrize("n", [1, 4])
def test_hessian_through_a_concatenation(n):
    _, module = module_of("ring_of_points")
    params, inputs = _ring_of_points_data(np.random.default_rng(n), n)
    assert_second_order_agrees(module, _ring_of_points_torch, params, inputs, TOL)


def test_concatenation_reads_like_numpy():
    source, _ = generate(polynomial_features())
    assert re.search(
        r"\n    \w+ = np\.concatenate\(\(x, \w+, \w+, \w+\), axis=1\)\n", source
    )


def clipped_ranges():
    """sg.min over axes (ties share the gradient, as amin), sg.clip with array and
    number bounds (the gradient passes at x == bound, as clamp), sg.log1p."""
    m = sg.Model("clipped_ranges")
    x, lo = m.param("x", ("n", 3)), m.param("lo", (3,))
    per_column, per_row = sg.min(x, axis=0), x.min(axis=1, keepdims=True)
    clipped = m.output("clipped", sg.clip(x, lo, 0.5))
    m.loss(
        sg.sum(per_column**2)
        + sg.sum(per_row * x)
        + sg.sum(clipped * sg.log1p(x**2))
        + sg.sum(sg.clip(x, None, lo) ** 2)
        + sg.sum(sg.exp(sg.clip(x, -0.2)))
        + sg.min(x)
    )
    return m


def _clipped_ranges_torch(p, i):
    x, lo = p["x"], p["lo"]
    clipped = torch.clamp(x, lo, torch.tensor(0.5, dtype=torch.float64))
    loss = (
        (x.amin(0) ** 2).sum()
        + (x.amin(1, keepdim=True) * x).sum()
        + (clipped * torch.log1p(x**2)).sum()
        + (torch.clamp(x, max=lo) ** 2).sum()
        + torch.exp(torch.clamp(x, min=-0.2)).sum()
        + x.amin()
    )
    return loss, {"clipped": clipped}


def _clipped_ranges_data(rng, n):
    lo = np.array([-0.2, 0.3, -0.5])
    x = rng.standard_normal((n, 3))
    x[:, 0] = -1.0  # a column whose minimum is tied (when n > 1)
    x[-1] = [0.3, 0.3, 0.5]  # a row whose minimum is tied; x == lo and x == 0.5
    return {"x": x, "lo": lo}, {}


register(
    clipped_ranges, _clipped_ranges_torch, _clipped_ranges_data, {"n": 1}, {"n": 4}
)


def cox_partial_likelihood():
    """Survival analysis: rows sorted by time, each event's risk set summed by a
    reversed cumulative sum (``sg.cumsum(e[::-1])[::-1]`` on a symbolic axis)."""
    m = sg.Model("cox_partial_likelihood", hessian=True)
    X, event = m.input("X", ("n", 3)), m.input("event", ("n",))
    beta = m.param("beta", (3,))
    eta = X @ beta
    risk_set = m.output("risk_set", sg.cumsum(sg.exp(eta)[::-1])[::-1])
    m.loss(-sg.sum(event * (eta - sg.log(risk_set))) / sg.sum(event))
    return m


def _cox_partial_likelihood_torch(p, i):
    eta = i["X"] @ p["beta"]
    risk_set = torch.flip(torch.cumsum(torch.flip(torch.exp(eta), [0]), 0), [0])
    loss = -(i["event"] * (eta - torch.log(risk_set))).sum() / i["event"].sum()
    return loss, {"risk_set": risk_set}


def _cox_partial_likelihood_data(rng, n):
    event = (rng.random(n) < 0.6).astype(float)
    event[0] = 1.0
    return {"beta": rng.standard_normal(3)}, {
        "X": rng.standard_normal((n, 3)),
        "event": event,
    }


register(
    cox_partial_likelihood,
    _cox_partial_likelihood_torch,
    _cox_partial_likelihood_data,
    {"n": 2},  # n = 1 has loss log(exp(eta)) - eta = 0 up to rounding: no relative test
    {"n": 7},
)


@pytest.mark.parametrize("n", [2, 7])
def test_hessian_through_a_reversed_cumulative_sum(n):
    _, module = module_of("cox_partial_likelihood")
    params, inputs = _cox_partial_likelihood_data(np.random.default_rng(n), n)
    assert_second_order_agrees(
        module, _cox_partial_likelihood_torch, params, inputs, TOL
    )


def test_a_reversed_cumulative_sum_is_generated_without_copies():
    source, _ = generate(cox_partial_likelihood())
    start = source.index("def value_and_grad")
    fused = source[start : source.index("\ndef ", start + 1)]
    assert "risk_set = np.flip(np.cumsum(np.flip(t2, 0), axis=0), 0)" in fused
    assert re.search(r"= np\.cumsum\(\w+, axis=0\)\n", fused)  # its adjoint
    assert "np.zeros" not in fused and "[::-1]" not in fused


def moments_and_reversals():
    """sg.var/sg.std (NumPy's ddof), sg.cumsum with and without an axis, and negative
    slice steps on a fixed-size axis."""
    m = sg.Model("moments_and_reversals")
    x, y = m.param("x", ("B", 7)), m.input("y", ("B", 7))
    spread = m.output("spread", sg.std(x, axis=0, ddof=1, keepdims=True))
    shuffled = x[:, ::-2][:, 1:] * x[:, 5::-2] + x[:, -1:-8:-3].sum(
        axis=1, keepdims=True
    )
    m.loss(
        sg.sum(sg.var(x, axis=1) * sg.cumsum(y, axis=1)[:, -1])
        + sg.var(x)
        + sg.sum(spread * x)
        + sg.sum(sg.sin(sg.cumsum(x)))
        + sg.sum(shuffled**2)
    )
    return m


def _moments_and_reversals_torch(p, i):
    x, y = p["x"], i["y"]
    spread = x.std(0, unbiased=True, keepdim=True)
    flipped = torch.flip(x, [1])
    shuffled = flipped[:, ::2][:, 1:] * torch.flip(x[:, :6], [1])[:, ::2]
    shuffled = shuffled + flipped[:, ::3].sum(1, keepdim=True)
    loss = (
        (x.var(1, unbiased=False) * torch.cumsum(y, 1)[:, -1]).sum()
        + x.var(unbiased=False)
        + (spread * x).sum()
        + torch.sin(torch.cumsum(x.reshape(-1), 0)).sum()
        + (shuffled**2).sum()
    )
    return loss, {"spread": spread}


def _moments_and_reversals_data(rng, B):
    return {"x": rng.standard_normal((B, 7))}, {"y": rng.standard_normal((B, 7))}


register(
    moments_and_reversals,
    _moments_and_reversals_torch,
    _moments_and_reversals_data,
    {"B": 2},
    {"B": 5},
)


def test_constant_cotangents_are_numbers_in_the_gradient():
    """The cotangent of a sum is a constant array; formulas read it as its value, so
    no constant array is built (was ``grad_x *= 2.0 * np.full((B, 1), 0.25)``)."""
    m = sg.Model("variance")
    m.loss(sg.sum(sg.var(m.param("x", ("B", 4)), axis=1)))
    source, _ = generate(m)
    assert "np.full" not in source and "np.broadcast_to" not in source
    module = compile_module(m)
    x = np.random.default_rng(0).standard_normal((3, 4))
    _, grads = module.value_and_grad({"x": x}, {})
    t = torch.tensor(x, requires_grad=True)
    t.var(1, unbiased=False).sum().backward()
    assert rel(grads["x"], t.grad.numpy()) <= TOL


def test_std_with_ddof_names_the_size_it_needs():
    _, module = module_of("moments_and_reversals")
    params, inputs = _moments_and_reversals_data(np.random.default_rng(0), 1)
    with pytest.raises(ValueError, match="B=1: .* needs B >= 2"):
        module.value_and_grad(params, inputs)


@pytest.mark.parametrize(
    "name, dims",
    [
        pytest.param(n, d, id=f"{n}-{'-'.join(map(str, d.values()))}")
        for n, c in CASES.items()
        for d in c.sizes
    ],
)
def test_agrees_with_pytorch(name, dims):
    check(name, dims)


@pytest.mark.parametrize("name", list(CASES))
def test_unrolled_agrees_with_pytorch(name):
    """The same models with ``m.unroll`` at their smallest sizes: straight-line code."""
    dims = CASES[name].sizes[0]
    _, module, params, inputs = check(name, dims, unroll=True)
    # value_and_grad falls back to NumPy when the unrolled code raises: call it directly
    (unrolled,) = [f for f in dir(module) if f.startswith("_value_and_grad_")]
    args = [params[k] for k in module.PARAMS] + [inputs[k] for k in module.INPUTS]
    loss, grads = getattr(module, unrolled)(*args)
    expected_loss, expected = module.value_and_grad(params, inputs)
    assert loss == expected_loss
    for k, g in grads.items():
        np.testing.assert_array_equal(g, expected[k])


def small_net():
    m = sg.Model("small_net", hessian=True)
    x, y = m.input("x", ("batch", 2)), m.input("y", ("batch",))
    W, b = m.param("W", (3, 2)), m.param("b", (1, 3))
    u, s = m.param("u", (3,)), m.param("s")
    h = sg.tanh(x @ W.T + b)
    pred = m.output("pred", s * (h @ u))
    m.loss(sg.mean(sg.softplus(pred - y)) + 0.1 * sg.sum(W**2) + 0.1 * s**2)
    return m


def _small_net_torch(p, i):
    h = torch.tanh(i["x"] @ p["W"].T + p["b"])
    pred = p["s"] * (h @ p["u"])
    loss = (
        F.softplus(pred - i["y"]).mean() + 0.1 * (p["W"] ** 2).sum() + 0.1 * p["s"] ** 2
    )
    return loss, {"pred": pred}


def _small_net_data(rng, batch):
    shapes = {"W": (3, 2), "b": (1, 3), "u": (3,), "s": ()}
    params = {k: rng.standard_normal(v) for k, v in shapes.items()}
    return params, {
        "x": rng.standard_normal((batch, 2)),
        "y": rng.standard_normal(batch),
    }


register(small_net, _small_net_torch, _small_net_data, {"batch": 1}, {"batch": 5})


@pytest.mark.parametrize("batch", [1, 5])
def test_hessian_and_hvp_agree_with_pytorch(batch):
    _, module = module_of("small_net")
    params, inputs = _small_net_data(np.random.default_rng(batch), batch)
    assert list(params) == list(module.PARAMS)  # the Hessian's order
    assert_second_order_agrees(module, _small_net_torch, params, inputs, TOL)


def test_hessian_of_a_model_with_a_parameter_named_v():
    m = sg.Model("named_v", hessian=True)
    v = m.param("v", (2,))
    m.loss(sg.sum(sg.sin(v) ** 3))
    module = compile_module(m)
    params = {"v": np.array([0.3, -1.1])}

    def loss(v):
        return torch.sum(torch.sin(v) ** 3)

    expected = torch.autograd.functional.hessian(loss, torch.tensor(params["v"]))
    assert rel(module.hessian(params, {}), expected.numpy()) <= TOL


# --------------------------------------------------------------------------- the CLI route

POISSON_FILE = """
import symgrad as sg


def build():
    m = sg.Model("user_poisson", doc="Poisson regression.")
    x, y = m.input("x", ("batch", 4)), m.input("y", ("batch",))
    w, b = m.param("w", (4,)), m.param("b")
    rate = m.output("rate", sg.exp(x @ w + b))
    m.loss(sg.mean(rate - y * sg.log(rate)))
    return m
"""


def test_symgrad_build_of_a_model_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "user_poisson_model.py").write_text(POISSON_FILE)
    out = tmp_path / "out"
    code = main(["build", str(tmp_path / "user_poisson_model.py"), "--out", str(out)])
    assert code in (0, None), capsys.readouterr()
    assert main(
        ["check", str(tmp_path / "user_poisson_model.py"), "--out", str(out)]
    ) in (
        0,
        None,
    )
    monkeypatch.syspath_prepend(str(out))
    module = importlib.import_module("user_poisson")
    for batch in (1, 7):
        params, inputs = _poisson_data(np.random.default_rng(batch), batch)
        loss, grads = module.value_and_grad(params, inputs)
        tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
        ref, ref_outputs = _poisson_torch(
            tparams, {k: torch.tensor(v) for k, v in inputs.items()}
        )
        ref.backward()
        assert rel(loss, ref.detach().numpy()) <= TOL
        outputs, _ = module.forward(params, inputs)
        assert rel(outputs["rate"], ref_outputs["rate"].detach().numpy()) <= TOL
        for k, p in tparams.items():
            assert rel(grads[k], p.grad.numpy()) <= TOL, k


# --------------------------------------------------------------------------- user mistakes


@pytest.fixture(scope="module")
def wd():
    _, module = module_of("weight_decay")
    params, inputs = _weight_decay_data(np.random.default_rng(0), 4)
    return module, params, inputs


def test_wrong_shape_at_run_time_names_array_and_shapes(wd):
    module, params, inputs = wd
    with pytest.raises(ValueError, match=r"inputs\['x'\].*\(batch, 3\).*\(4, 4\)"):
        module.value_and_grad(params, {**inputs, "x": np.ones((4, 4))})
    with pytest.raises(ValueError, match=r"inputs\['t'\].*\(batch=4, 2\).*\(5, 2\)"):
        module.forward(params, {**inputs, "t": np.ones((5, 2))})
    with pytest.raises(ValueError, match=r"params\['bias'\].*\(1, 2\).*\(2,\)"):
        module.value_and_grad({**params, "bias": np.ones(2)}, inputs)


def test_integer_param_is_rejected_naming_it(wd):
    module, params, inputs = wd
    with pytest.raises(ValueError, match=r"params\['W'\].*float.*int64"):
        module.value_and_grad({**params, "W": np.ones((2, 3), dtype=np.int64)}, inputs)


def test_misspelled_keys_are_named(wd):
    module, params, inputs = wd
    wrong = {("bais" if k == "bias" else k): v for k, v in params.items()}
    with pytest.raises(KeyError, match=r"missing \['bias'\], unexpected \['bais'\]"):
        module.value_and_grad(wrong, inputs)
    with pytest.raises(KeyError, match=r"missing \['x'\], unexpected \['X'\]"):
        module.forward(params, {"X": inputs["x"], "t": inputs["t"]})


def test_index_arrays_of_disagreeing_lengths():
    _, module = module_of("springs")
    params, inputs = _springs_data(np.random.default_rng(0), 4, 5)
    with pytest.raises(ValueError, match=r"inputs\['j'\].*pairs=5.*\(3,\)"):
        module.value_and_grad(params, {**inputs, "j": inputs["j"][:3]})


# --------------------------------------------------------------------------- known bugs


def test_hessian_of_a_scalar_broadcast_over_a_vector_parameter():
    m = sg.Model("scalar_broadcast", hessian=True)
    pos = m.param("pos", ("N", 2))
    k, L = m.param("k"), m.param("L")
    r = sg.sum(pos**2, axis=-1)
    m.loss(sg.sum(k * (r - L) ** 2))
    module = compile_module(m)
    params = {"pos": np.array([[0.1, 0.5], [2.0, 1.0], [0.3, -0.4]])}
    params.update(k=np.array(2.0), L=np.array(0.7))

    def loss(z):
        return torch.sum(z[6] * (torch.sum(z[:6].reshape(3, 2) ** 2, -1) - z[7]) ** 2)

    flat = torch.tensor(np.concatenate([np.ravel(v) for v in params.values()]))
    expected = torch.autograd.functional.hessian(loss, flat).numpy()
    assert rel(module.hessian(params, {}), expected) <= TOL


def test_backward_of_a_loss_that_is_a_parameter():
    m = sg.Model("param_loss")
    p, q = m.param("p"), m.param("q", (2, "n"))
    m.output("doubled", q * 2)
    m.loss(p)
    module = compile_module(m)
    params = {"p": np.array(0.3), "q": np.ones((2, 3))}
    _, cache = module.forward(params, {})
    grads = module.backward(cache)
    assert grads["p"] == 1.0


def test_value_and_grad_of_a_loss_that_is_a_parameter_copies_it():
    m = sg.Model("param_loss")
    p = m.param("p")
    m.param("q", (2, "n"))
    m.loss(p)
    module = compile_module(m)
    params = {"p": np.array(0.3), "q": np.ones((2, 3))}
    loss, grads = module.value_and_grad(params, {})
    assert not np.shares_memory(loss, params["p"])
    assert isinstance(grads["p"], np.ndarray) and grads["p"].shape == ()


def test_error_message_shows_distinct_operands():
    m = sg.Model("describe")
    x = m.input("x", ("batch", 3))
    W1, W2, c = m.param("W1", (2, 3)), m.param("W2", (2, 3)), m.param("c", (3,))
    with pytest.raises(sg.ShapeError) as e:
        (x @ W1.T - x @ W2.T) + c
    assert not str(e.value).startswith("cannot broadcast 0 "), e.value


def test_iterating_over_a_symbolic_axis_raises():
    m = sg.Model("iterate")
    x = m.input("x", ("batch", 3))
    with pytest.raises(TypeError):
        list(itertools.islice(iter(x), 1000))  # builtins.sum(x) would hang forever


def test_symgrad_build_of_a_spring_network(tmp_path, capsys):
    source = """
import symgrad as sg


def build():
    m = sg.Model("user_springs")
    pos = m.param("pos", ("N", 2))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    d = pos[i] - pos[j]
    r = sg.sqrt(sg.sum(d**2, axis=-1))
    m.loss(sg.sum((r - 1.0) ** 2) / 2)
    return m
"""
    (tmp_path / "springs_model.py").write_text(source)
    code = main(["build", str(tmp_path / "springs_model.py"), "--out", str(tmp_path)])
    assert code in (0, None), capsys.readouterr().err


def test_float_index_array_message_grammar():
    _, module = module_of("bag_of_words")
    params, inputs = _bag_of_words_data(np.random.default_rng(0), 3, 2, 5)
    with pytest.raises(ValueError, match=r"expected an integer array"):
        module.value_and_grad(params, {**inputs, "idx": inputs["idx"].astype(float)})


def test_layer_norm_code_has_no_giant_integers():
    source, _ = generate(layer_norm())
    assert not re.search(r"\d{17,}", source)


def test_indexing_with_a_constant_array_picks_rows_as_numpy():
    m = sg.Model("const_index")
    W = m.param("W", (2, 3))
    m.output("picked", W[np.array([1, 0, 1])])
    m.loss(sg.sum(W[np.array([1, 0, 1])] ** 2))
    with pytest.raises(sg.ShapeError, match="one non-empty list of ints"):
        W[np.array([[0, 1]])]
    W0 = np.arange(6.0).reshape(2, 3)
    outputs, _ = compile_module(m).forward({"W": W0}, {})
    assert np.array_equal(outputs["picked"], W0[[1, 0, 1]])
