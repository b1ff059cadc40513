"""Round 11 of new-user models, with PyTorch (float64) as the judge: code ported from
PyTorch. torch's own TransformerEncoderLayer (through ``torch.func.functional_call``)
next to a hand-written multi-head encoder, a causal GPT block with tanh-GELU and tied
embeddings, an importance-weighted autoencoder, message passing on a graph by one-hot
scatter matrices, an HMM's forward algorithm and a linear-chain CRF (both judged by
brute-force enumeration of every path), soft-DTW by an unrolled dynamic program, BPR
matrix factorisation, group lasso, a velocity-Verlet spring chain, kernel ridge in the
dual, multinomial counts, a CLIP loss, Hinton distillation, strided convolution by
reshapes and step slices, 2-D pooling by reshapes, Gram-matrix style losses by batched
matmuls, low-rank completion by outer products, NeRF's alpha compositing (an exclusive
cumulative sum as a triangular product), a Hawkes process, an additive model of 25
scalar parameters, a 10-layer MLP of mixed activations, a batched pendulum over 30
steps, a zero-inflated Poisson, soft Dice, a SwiGLU FFN with RMSNorm, rotary attention,
a Gumbel-softmax relaxation and a WaveNet stack of dilated gated convolutions; other
batch sizes (1, many, 0), Hessians and unrolled sizes of those, compile times (flat in
width), the module API and the command line (check on edited models). Bugs are strict
xfails whose reason is the diagnosis.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sympy as sp
from helpers import (
    Families,
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
    normal,
    rel,
)

import symgrad as sg
from symgrad.cli import generate
from symgrad.verify import verify

torch = pytest.importorskip("torch")
F = torch.nn.functional
functional_call = torch.func.functional_call

# ===================================================================== 1. model families
# Each family: (hessian=False) -> (model, torch twin, params, inputs), data from rng 0.

FAMILIES = Families()
family = FAMILIES.add


def _layer_norm(x, g, b, eps=1e-5):
    mu = sg.mean(x, axis=-1, keepdims=True)
    var = sg.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return (x - mu) / sg.sqrt(var + eps) * g + b


def _gelu_erf(h):
    return 0.5 * h * (1 + sg.erf(h / math.sqrt(2.0)))


def _gelu_tanh(h):
    return 0.5 * h * (1 + sg.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))


def _heads(z, T, H, dh):
    """(B, T, H*dh) -> (B, H, T, dh), as torch's MultiheadAttention splits heads."""
    return z.reshape("B", T, H, dh).transpose(0, 2, 1, 3)


@family
def transformer_encoder_layer_torch(hessian=False):
    """torch.nn.TransformerEncoderLayer(4, 2, 6, dropout=0, activation="gelu",
    batch_first=True), post-norm, written with reshapes, transposes and 4-D matmuls."""
    rng = np.random.default_rng(0)
    d, H, ff, T = 4, 2, 6, 3
    m = sg.Model("transformer_encoder_layer_torch", hessian=hessian)
    x, y = m.input("x", ("B", T, d)), m.input("y", ("B", T, d))
    Win, bin_ = m.param("Win", (3 * d, d)), m.param("b_in", (3 * d,))
    Wo, bo = m.param("Wo", (d, d)), m.param("bo", (d,))
    W1, b1 = m.param("W1", (ff, d)), m.param("b1", (ff,))
    W2, b2 = m.param("W2", (d, ff)), m.param("b2", (d,))
    g1, be1 = m.param("g1", (d,)), m.param("be1", (d,))
    g2, be2 = m.param("g2", (d,)), m.param("be2", (d,))
    qkv = x @ Win.T + bin_
    q = _heads(qkv[..., :d], T, H, d // H)
    k = _heads(qkv[..., d : 2 * d], T, H, d // H)
    v = _heads(qkv[..., 2 * d :], T, H, d // H)
    att = sg.softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // H), axis=-1)
    ctx = (att @ v).transpose(0, 2, 1, 3).reshape("B", T, d)
    h = _layer_norm(x + ctx @ Wo.T + bo, g1, be1)
    out = m.output(
        "out", _layer_norm(h + _gelu_erf(h @ W1.T + b1) @ W2.T + b2, g2, be2)
    )
    m.loss(sg.mean((out - y) ** 2))

    def reference(p, i):
        layer = torch.nn.TransformerEncoderLayer(
            d, H, ff, dropout=0.0, activation="gelu", batch_first=True
        ).double()
        weights = {
            "self_attn.in_proj_weight": p["Win"],
            "self_attn.in_proj_bias": p["b_in"],
            "self_attn.out_proj.weight": p["Wo"],
            "self_attn.out_proj.bias": p["bo"],
            "linear1.weight": p["W1"],
            "linear1.bias": p["b1"],
            "linear2.weight": p["W2"],
            "linear2.bias": p["b2"],
            "norm1.weight": p["g1"],
            "norm1.bias": p["be1"],
            "norm2.weight": p["g2"],
            "norm2.bias": p["be2"],
        }
        out = functional_call(layer, weights, (i["x"],))
        return F.mse_loss(out, i["y"]), {"out": out}

    params = {
        "Win": normal(rng, 3 * d, d, scale=0.5),
        "b_in": normal(rng, 3 * d, scale=0.1),
        "Wo": normal(rng, d, d, scale=0.5),
        "bo": normal(rng, d, scale=0.1),
        "W1": normal(rng, ff, d, scale=0.5),
        "b1": normal(rng, ff, scale=0.1),
        "W2": normal(rng, d, ff, scale=0.5),
        "b2": normal(rng, d, scale=0.1),
        "g1": 1 + normal(rng, d, scale=0.1),
        "be1": normal(rng, d, scale=0.1),
        "g2": 1 + normal(rng, d, scale=0.1),
        "be2": normal(rng, d, scale=0.1),
    }
    return m, reference, params, {"x": normal(rng, 2, T, d), "y": normal(rng, 2, T, d)}


@family
def gpt_block_causal_tied(hessian=False):
    """A pre-norm GPT block: token and learned position embeddings by gathers, a causal
    mask from int64 positions (a symbolic length T), 2 heads, tanh-GELU MLP, logits
    tied to the token embedding and next-token cross-entropy."""
    rng = np.random.default_rng(0)
    V, d, H, P = 7, 4, 2, 6
    m = sg.Model("gpt_block_causal_tied", hessian=hessian)
    tok, nxt = m.input("tok", ("B", "T"), dtype="int64"), m.input(
        "nxt", ("B", "T"), dtype="int64"
    )
    pos = m.input("pos", ("T",), dtype="int64")
    E, Pe = m.param("E", (V, d)), m.param("Pe", (P, d))
    Wqkv, Wo = m.param("Wqkv", (3 * d, d)), m.param("Wo", (d, d))
    W1, W2 = m.param("W1", (8, d)), m.param("W2", (d, 8))
    g1, g2 = m.param("g1", (d,)), m.param("g2", (d,))
    x = E[tok] + Pe[pos]
    qkv = _layer_norm(x, g1, 0.0) @ Wqkv.T

    def heads(z):
        return z.reshape("B", "T", H, d // H).transpose(0, 2, 1, 3)

    q, k, v = heads(qkv[..., :d]), heads(qkv[..., d : 2 * d]), heads(qkv[..., 2 * d :])
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // H)
    causal = pos[:, None] >= pos[None, :]
    att = sg.softmax(sg.where(causal, scores, -1e30), axis=-1)
    x = x + (att @ v).transpose(0, 2, 1, 3).reshape("B", "T", d) @ Wo.T
    x = x + _gelu_tanh(_layer_norm(x, g2, 0.0) @ W1.T) @ W2.T
    logits = m.output("logits", x @ E.T)
    logp = sg.log_softmax(logits, axis=-1)
    m.loss(-sg.mean(sg.take_along_axis(logp, nxt[..., None], axis=-1)))

    def reference(p, i):
        T = i["tok"].shape[1]
        x = p["E"][i["tok"]] + p["Pe"][i["pos"]]
        h = F.layer_norm(x, (d,), p["g1"])
        q, k, v = (h @ p["Wqkv"].T).split(d, dim=-1)
        B = x.shape[0]
        q, k, v = (z.view(B, T, H, d // H).transpose(1, 2) for z in (q, k, v))
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        scores = (q @ k.transpose(-2, -1) / math.sqrt(d // H)).masked_fill(~mask, -1e30)
        ctx = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
        x = x + ctx @ p["Wo"].T
        x = x + F.gelu(
            F.layer_norm(x, (d,), p["g2"]) @ p["W1"].T, approximate="tanh"
        ) @ (p["W2"].T)
        logits = x @ p["E"].T
        return F.cross_entropy(logits.reshape(-1, V), i["nxt"].reshape(-1)), {
            "logits": logits
        }

    params = {
        "E": normal(rng, V, d, scale=0.7),
        "Pe": normal(rng, P, d, scale=0.3),
        "Wqkv": normal(rng, 3 * d, d, scale=0.5),
        "Wo": normal(rng, d, d, scale=0.5),
        "W1": normal(rng, 8, d, scale=0.5),
        "W2": normal(rng, d, 8, scale=0.5),
        "g1": 1 + normal(rng, d, scale=0.1),
        "g2": 1 + normal(rng, d, scale=0.1),
    }
    T = 5
    inputs = {
        "tok": rng.integers(0, V, (3, T)),
        "nxt": rng.integers(0, V, (3, T)),
        "pos": np.arange(T),
    }
    return m, reference, params, inputs


@family
def iwae_bernoulli_decoder(hessian=False):
    """Importance-weighted autoencoder, K = 4 reparameterised samples per datum (the
    noise is an input), Bernoulli decoder by logits; the bound is a logsumexp over K."""
    rng = np.random.default_rng(0)
    D, Z, K, Hd = 5, 2, 4, 3
    m = sg.Model("iwae_bernoulli_decoder", hessian=hessian)
    x, eps = m.input("x", ("B", D)), m.input("eps", ("B", K, Z))
    We, be = m.param("We", (Hd, D)), m.param("be", (Hd,))
    Wmu, Wlv = m.param("Wmu", (Z, Hd)), m.param("Wlv", (Z, Hd))
    Wd, bd = m.param("Wd", (D, Z)), m.param("bd", (D,))
    h = sg.tanh(x @ We.T + be)
    mu, logvar = h @ Wmu.T, h @ Wlv.T
    z = mu[:, None, :] + sg.exp(0.5 * logvar)[:, None, :] * eps
    logits = z @ Wd.T + bd
    log_px = sg.sum(x[:, None, :] * logits - sg.softplus(logits), axis=-1)
    log_pz = -0.5 * sg.sum(z**2, axis=-1) - Z * 0.5 * math.log(2 * math.pi)
    log_qz = (
        -0.5 * sg.sum(eps**2, axis=-1)
        - 0.5 * sg.sum(logvar, axis=-1)[:, None]
        - Z * 0.5 * math.log(2 * math.pi)
    )
    bound = m.output("bound", sg.logsumexp(log_px + log_pz - log_qz, axis=1))
    m.loss(-sg.mean(bound - math.log(K)))

    def reference(p, i):
        h = torch.tanh(i["x"] @ p["We"].T + p["be"])
        mu, logvar = h @ p["Wmu"].T, h @ p["Wlv"].T
        std = torch.exp(0.5 * logvar)[:, None, :]
        z = mu[:, None, :] + std * i["eps"]
        dist = torch.distributions
        log_px = dist.Bernoulli(logits=z @ p["Wd"].T + p["bd"]).log_prob(
            i["x"][:, None, :]
        )
        log_pz = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = dist.Normal(mu[:, None, :], std).log_prob(z).sum(-1)
        bound = torch.logsumexp(log_px.sum(-1) + log_pz - log_qz, dim=1)
        return -(bound - math.log(K)).mean(), {"bound": bound}

    params = {
        "We": normal(rng, Hd, D, scale=0.6),
        "be": normal(rng, Hd, scale=0.1),
        "Wmu": normal(rng, Z, Hd, scale=0.6),
        "Wlv": normal(rng, Z, Hd, scale=0.4),
        "Wd": normal(rng, D, Z, scale=0.8),
        "bd": normal(rng, D, scale=0.1),
    }
    inputs = {
        "x": (rng.random((6, D)) < 0.4).astype(float),
        "eps": normal(rng, 6, K, Z),
    }
    return m, reference, params, inputs


@family
def gcn_message_passing(hessian=False):
    """Two rounds of mean-aggregated message passing over an edge list (src -> dst):
    messages gathered by src, summed into dst through a one-hot (E, N) matrix built
    from int64 comparisons (torch: index_add_), then a node regression head."""
    rng = np.random.default_rng(0)
    m = sg.Model("gcn_message_passing", hessian=hessian)
    X, y = m.input("X", ("N", 3)), m.input("y", ("N",))
    src, dst = m.input("src", ("E",), dtype="int64"), m.input(
        "dst", ("E",), dtype="int64"
    )
    nodes = m.input("nodes", ("N",), dtype="int64")
    Wm1, Ws1, b1 = m.param("Wm1", (4, 3)), m.param("Ws1", (4, 3)), m.param("b1", (4,))
    Wm2, Ws2, b2 = m.param("Wm2", (4, 4)), m.param("Ws2", (4, 4)), m.param("b2", (4,))
    w_out = m.param("w_out", (4,))
    onehot = sg.where(dst[:, None] == nodes[None, :], 1.0, 0.0)  # (E, N)
    deg = sg.sum(onehot, axis=0)[:, None] + 1.0

    def layer(h, Wm, Ws, b):
        messages = (h @ Wm.T)[src]
        return sg.relu(onehot.T @ messages / deg + h @ Ws.T + b)

    h = layer(layer(X, Wm1, Ws1, b1), Wm2, Ws2, b2)
    pred = m.output("pred", h @ w_out)
    m.loss(sg.mean((pred - y) ** 2))

    def reference(p, i):
        def layer(h, Wm, Ws, b):
            messages = (h @ Wm.T)[i["src"]]
            agg = torch.zeros(h.shape[0], Wm.shape[0], dtype=torch.float64)
            agg = agg.index_add(0, i["dst"], messages)
            deg = torch.zeros(h.shape[0], dtype=torch.float64).index_add(
                0, i["dst"], torch.ones(len(i["dst"]), dtype=torch.float64)
            )
            return F.relu(agg / (deg[:, None] + 1) + h @ Ws.T + b)

        h = layer(
            layer(i["X"], p["Wm1"], p["Ws1"], p["b1"]), p["Wm2"], p["Ws2"], p["b2"]
        )
        pred = h @ p["w_out"]
        return F.mse_loss(pred, i["y"]), {"pred": pred}

    params = {
        "Wm1": normal(rng, 4, 3, scale=0.6),
        "Ws1": normal(rng, 4, 3, scale=0.6),
        "b1": normal(rng, 4, scale=0.2),
        "Wm2": normal(rng, 4, 4, scale=0.6),
        "Ws2": normal(rng, 4, 4, scale=0.6),
        "b2": normal(rng, 4, scale=0.2),
        "w_out": normal(rng, 4),
    }
    N, E = 6, 10
    inputs = {
        "X": normal(rng, N, 3),
        "y": normal(rng, N),
        "src": rng.integers(0, N, E),
        "dst": rng.integers(0, N, E),
        "nodes": np.arange(N),
    }
    return m, reference, params, inputs


def _all_paths(S, T):
    return torch.tensor(list(itertools.product(range(S), repeat=T)))


@family
def hmm_forward_algorithm(hessian=False):
    """The log-likelihood of a 3-state HMM with 3 symbols by the forward algorithm in
    log space (logsumexp over the previous state, emissions by gathering rows of the
    transposed emission matrix); the twin enumerates all 3^5 state paths."""
    rng = np.random.default_rng(0)
    S, V, T = 3, 3, 5
    m = sg.Model("hmm_forward_algorithm", hessian=hessian)
    obs = m.input("obs", ("B", T), dtype="int64")
    pi_logits, A_logits = m.param("pi_logits", (S,)), m.param("A_logits", (S, S))
    B_logits = m.param("B_logits", (S, V))
    log_pi = sg.log_softmax(pi_logits)
    log_A = sg.log_softmax(A_logits, axis=1)
    log_Bt = sg.log_softmax(B_logits, axis=1).T  # (V, S)
    alpha = log_pi + log_Bt[obs[:, 0]]
    for t in range(1, T):
        alpha = sg.logsumexp(alpha[:, :, None] + log_A, axis=1) + log_Bt[obs[:, t]]
    ll = m.output("loglik", sg.logsumexp(alpha, axis=1))
    m.loss(-sg.mean(ll))

    def reference(p, i):
        paths = _all_paths(S, T)  # (S^T, T)
        log_pi = torch.log_softmax(p["pi_logits"], 0)
        log_A = torch.log_softmax(p["A_logits"], 1)
        log_B = torch.log_softmax(p["B_logits"], 1)
        score = log_pi[paths[:, 0]][None, :] + log_B[paths[:, 0]][:, i["obs"][:, 0]].T
        for t in range(1, T):
            score = score + log_A[paths[:, t - 1], paths[:, t]][None, :]
            score = score + log_B[paths[:, t]][:, i["obs"][:, t]].T
        ll = torch.logsumexp(score, dim=1)
        return -ll.mean(), {"loglik": ll}

    params = {
        "pi_logits": normal(rng, S),
        "A_logits": normal(rng, S, S),
        "B_logits": normal(rng, S, V),
    }
    return m, reference, params, {"obs": rng.integers(0, V, (4, T))}


@family
def linear_chain_crf(hessian=False):
    """CRF negative log-likelihood: emissions from a linear layer, the gold path's
    transition scores by a row gather then take_along_axis, the log-partition by the
    forward algorithm; the twin sums over all 3^4 tag sequences."""
    rng = np.random.default_rng(0)
    K, T, D = 3, 4, 2
    m = sg.Model("linear_chain_crf", hessian=hessian)
    x, tags = m.input("x", ("B", T, D)), m.input("tags", ("B", T), dtype="int64")
    W, trans = m.param("W", (K, D)), m.param("trans", (K, K))
    start, end = m.param("start", (K,)), m.param("end", (K,))
    emis = x @ W.T  # (B, T, K)

    def pick(row, t):
        return sg.take_along_axis(row, tags[:, t : t + 1], axis=1)[:, 0]

    gold = start[tags[:, 0]] + pick(emis[:, 0, :], 0)
    for t in range(1, T):
        gold = gold + pick(trans[tags[:, t - 1]], t) + pick(emis[:, t, :], t)
    gold = gold + end[tags[:, T - 1]]
    alpha = start + emis[:, 0, :]
    for t in range(1, T):
        alpha = sg.logsumexp(alpha[:, :, None] + trans, axis=1) + emis[:, t, :]
    log_z = m.output("log_z", sg.logsumexp(alpha + end, axis=1))
    m.loss(sg.mean(log_z - gold))

    def reference(p, i):
        emis = i["x"] @ p["W"].T
        paths = _all_paths(K, T)

        def score(tags):  # (n, T) tag sequences -> (B, n) scores
            s = p["start"][tags[:, 0]] + emis[:, 0, tags[:, 0]]
            for t in range(1, T):
                s = s + p["trans"][tags[:, t - 1], tags[:, t]] + emis[:, t, tags[:, t]]
            return s + p["end"][tags[:, -1]]

        log_z = torch.logsumexp(score(paths), dim=1)
        rows = torch.arange(len(i["tags"]))
        gold = score(i["tags"])[rows, rows]
        return (log_z - gold).mean(), {"log_z": log_z}

    params = {
        "W": normal(rng, K, D),
        "trans": normal(rng, K, K, scale=0.5),
        "start": normal(rng, K, scale=0.5),
        "end": normal(rng, K, scale=0.5),
    }
    inputs = {"x": normal(rng, 3, T, D), "tags": rng.integers(0, K, (3, T))}
    return m, reference, params, inputs


def _softmin(a, b, c, gamma):
    """-gamma log(e^-a/gamma + e^-b/gamma + e^-c/gamma), shifted by the minimum."""
    low = sg.minimum(sg.minimum(a, b), c)
    total = sg.exp((low - a) / gamma) + sg.exp((low - b) / gamma)
    return low - gamma * sg.log(total + sg.exp((low - c) / gamma))


@family
def soft_dtw_alignment(hessian=False):
    """Soft-DTW between an affinely warped series a x + b (length 4) and a target
    (length 5), batched, with a learned smoothing gamma = exp(log_gamma): the dynamic
    program unrolled in Python over the 4 x 5 grid."""
    rng = np.random.default_rng(0)
    n, k = 4, 5
    m = sg.Model("soft_dtw_alignment", hessian=hessian)
    x, y = m.input("x", ("B", n)), m.input("y", ("B", k))
    a, b, log_gamma = m.param("a", ()), m.param("b", ()), m.param("log_gamma", ())
    gamma = sg.exp(log_gamma)
    xs = a * x + b
    R = [[None] * k for _ in range(n)]
    for i in range(n):
        for j in range(k):
            cost = (xs[:, i] - y[:, j]) ** 2
            if i == 0 and j == 0:
                R[i][j] = cost
            elif i == 0:
                R[i][j] = cost + R[i][j - 1]
            elif j == 0:
                R[i][j] = cost + R[i - 1][j]
            else:
                R[i][j] = cost + _softmin(
                    R[i - 1][j - 1], R[i - 1][j], R[i][j - 1], gamma
                )
    dist = m.output("dist", R[-1][-1])
    m.loss(sg.mean(dist))

    def reference(p, i):
        gamma = torch.exp(p["log_gamma"])
        xs = p["a"] * i["x"] + p["b"]
        cost = (xs[:, :, None] - i["y"][:, None, :]) ** 2
        R = {}
        for r in range(n):
            for c in range(k):
                cells = ((r - 1, c - 1), (r - 1, c), (r, c - 1))
                prev = [R[a, b] for a, b in cells if a >= 0 and b >= 0]
                if not prev:
                    R[r, c] = cost[:, r, c]
                else:
                    soft = -gamma * torch.logsumexp(-torch.stack(prev) / gamma, 0)
                    R[r, c] = cost[:, r, c] + (prev[0] if len(prev) == 1 else soft)
        return R[n - 1, k - 1].mean(), {"dist": R[n - 1, k - 1]}

    params = {"a": np.array(0.8), "b": np.array(0.1), "log_gamma": np.array(-0.5)}
    inputs = {"x": normal(rng, 3, n), "y": normal(rng, 3, k)}
    return m, reference, params, inputs


@family
def bpr_matrix_factorization(hessian=False):
    """Bayesian personalised ranking: user and item embeddings and item biases by
    gathers (positive and negative items of each triple), -log sigmoid of the score
    difference as -softplus(-x), L2 on the gathered rows."""
    rng = np.random.default_rng(0)
    m = sg.Model("bpr_matrix_factorization", hessian=hessian)
    u = m.input("u", ("B",), dtype="int64")
    i_pos, i_neg = m.input("i_pos", ("B",), dtype="int64"), m.input(
        "i_neg", ("B",), dtype="int64"
    )
    U, V = m.param("U", ("n_users", 3)), m.param("V", ("n_items", 3))
    bias = m.param("bias", ("n_items",))
    eu, ep, en = U[u], V[i_pos], V[i_neg]
    x = sg.sum(eu * (ep - en), axis=1) + bias[i_pos] - bias[i_neg]
    m.output("x_uij", x)
    reg = sg.sum(eu**2) + sg.sum(ep**2) + sg.sum(en**2)
    m.loss(sg.mean(sg.softplus(-x)) + 0.01 * reg)

    def reference(p, i):
        eu, ep, en = p["U"][i["u"]], p["V"][i["i_pos"]], p["V"][i["i_neg"]]
        x = (eu * (ep - en)).sum(1) + p["bias"][i["i_pos"]] - p["bias"][i["i_neg"]]
        reg = (eu**2).sum() + (ep**2).sum() + (en**2).sum()
        return -F.logsigmoid(x).mean() + 0.01 * reg, {"x_uij": x}

    params = {
        "U": normal(rng, 4, 3, scale=0.5),
        "V": normal(rng, 6, 3, scale=0.5),
        "bias": normal(rng, 6, scale=0.2),
    }
    inputs = {
        "u": rng.integers(0, 4, 8),
        "i_pos": rng.integers(0, 6, 8),
        "i_neg": rng.integers(0, 6, 8),
    }
    return m, reference, params, inputs


@family
def group_lasso_logistic(hessian=False):
    """Logistic regression (BCE with logits by softplus) with a group-lasso penalty:
    the Euclidean norms of 3 groups of 2 weights, by reshape and sqrt of a sum."""
    rng = np.random.default_rng(0)
    m = sg.Model("group_lasso_logistic", hessian=hessian)
    X, y = m.input("X", ("n", 6)), m.input("y", ("n",))
    w, b = m.param("w", (6,)), m.param("b", ())
    z = X @ w + b
    norms = m.output("group_norms", sg.sqrt(sg.sum(w.reshape(3, 2) ** 2, axis=1)))
    m.loss(sg.mean(sg.softplus(z) - y * z) + 0.1 * sg.sum(norms))

    def reference(p, i):
        z = i["X"] @ p["w"] + p["b"]
        norms = torch.linalg.vector_norm(p["w"].view(3, 2), dim=1)
        bce = F.binary_cross_entropy_with_logits(z, i["y"])
        return bce + 0.1 * norms.sum(), {"group_norms": norms}

    params = {"w": normal(rng, 6), "b": np.array(0.2)}
    inputs = {"X": normal(rng, 9, 6), "y": (rng.random(9) < 0.5).astype(float)}
    return m, reference, params, inputs


@family
def verlet_spring_chain(hessian=False):
    """Five 2-D masses joined by springs (learned log stiffness, rest length, damping),
    12 velocity-Verlet steps of the whole (N, 2) state; spring forces are scattered
    onto the masses by an incidence matrix given as data (torch: padding by cat)."""
    m = sg.Model("verlet_spring_chain", hessian=hessian)
    x0, target = m.input("x0", (5, 2)), m.input("target", (5, 2))
    incidence = m.input("incidence", (5, 4))
    log_k, rest, c = m.param("log_k", ()), m.param("rest", ()), m.param("c", ())
    k, dt = sg.exp(log_k), 0.05

    def force(x, v):
        d = x[1:] - x[:-1]
        r = sg.sqrt(sg.sum(d**2, axis=1, keepdims=True))
        return incidence @ (k * (r - rest) * d / r) - c * v

    x, v = x0, 0.0 * x0
    a = force(x, v)
    for _ in range(12):
        x = x + dt * v + 0.5 * dt**2 * a
        a_new = force(x, v)
        v = v + 0.5 * dt * (a + a_new)
        a = a_new
    m.output("x_end", x)
    m.loss(sg.sum((x - target) ** 2))

    def reference(p, i):
        k = torch.exp(p["log_k"])
        zero = torch.zeros(1, 2, dtype=torch.float64)

        def force(x, v):
            d = x[1:] - x[:-1]
            r = torch.linalg.vector_norm(d, dim=1, keepdim=True)
            f = k * (r - p["rest"]) * d / r
            return torch.cat([f, zero]) - torch.cat([zero, f]) - p["c"] * v

        x, v = i["x0"], torch.zeros_like(i["x0"])
        a = force(x, v)
        for _ in range(12):
            x = x + dt * v + 0.5 * dt**2 * a
            a_new = force(x, v)
            v = v + 0.5 * dt * (a + a_new)
            a = a_new
        return ((x - i["target"]) ** 2).sum(), {"x_end": x}

    incidence = np.zeros((5, 4))
    incidence[np.arange(4), np.arange(4)] = 1.0
    incidence[np.arange(1, 5), np.arange(4)] = -1.0
    x0 = np.stack([np.arange(5.0) * 1.3, 0.2 * np.sin(np.arange(5.0))], axis=1)
    target = x0 * np.array([0.9, 1.0]) + 0.05
    params = {"log_k": np.array(1.0), "rest": np.array(1.0), "c": np.array(0.3)}
    return m, reference, params, {"x0": x0, "target": target, "incidence": incidence}


@family
def kernel_ridge_dual_rbf(hessian=False):
    """Kernel ridge in the dual: an RBF Gram matrix by broadcasting (n, 1, 2) against
    (1, n, 2), a learned log length-scale and log signal variance, dual weights alpha;
    predictions at test points as an output."""
    rng = np.random.default_rng(0)
    m = sg.Model("kernel_ridge_dual_rbf", hessian=hessian)
    X, y, Xs = m.input("X", ("n", 2)), m.input("y", ("n",)), m.input("Xs", ("s", 2))
    alpha = m.param("alpha", ("n",))
    log_ell, log_sf = m.param("log_ell", ()), m.param("log_sf", ())

    def kernel(A, B):
        d2 = sg.sum((A[:, None, :] - B[None, :, :]) ** 2, axis=-1)
        return sg.exp(2 * log_sf - 0.5 * d2 / sg.exp(2 * log_ell))

    K = kernel(X, X)
    m.output("pred", kernel(Xs, X) @ alpha)
    m.loss(sg.mean((K @ alpha - y) ** 2) + 0.1 * (alpha @ (K @ alpha)))

    def reference(p, i):
        def kernel(A, B):
            d2 = torch.cdist(A, B) ** 2
            return torch.exp(2 * p["log_sf"]) * torch.exp(
                -0.5 * d2 / torch.exp(2 * p["log_ell"])
            )

        K = kernel(i["X"], i["X"])
        fit = K @ p["alpha"]
        loss = F.mse_loss(fit, i["y"]) + 0.1 * p["alpha"] @ fit
        return loss, {"pred": kernel(i["Xs"], i["X"]) @ p["alpha"]}

    params = {
        "alpha": normal(rng, 5, scale=0.5),
        "log_ell": np.array(0.2),
        "log_sf": np.array(-0.1),
    }
    inputs = {"X": normal(rng, 5, 2), "y": normal(rng, 5), "Xs": normal(rng, 3, 2)}
    return m, reference, params, inputs


@family
def multinomial_logit_counts(hessian=False):
    """Counts out of 10 trials in 4 categories, a softmax regression on 3 features;
    the multinomial coefficient's log (lgamma terms) is data, the twin is torch's
    Multinomial.log_prob."""
    rng = np.random.default_rng(0)
    m = sg.Model("multinomial_logit_counts", hessian=hessian)
    X, counts = m.input("X", ("n", 3)), m.input("counts", ("n", 4))
    log_coef = m.input("log_coef", ("n",))
    W, b = m.param("W", (4, 3)), m.param("b", (4,))
    logp = sg.log_softmax(X @ W.T + b, axis=1)
    ll = m.output("loglik", log_coef + sg.sum(counts * logp, axis=1))
    m.loss(-sg.sum(ll))

    def reference(p, i):
        dist = torch.distributions.Multinomial(10, logits=i["X"] @ p["W"].T + p["b"])
        ll = dist.log_prob(i["counts"])
        return -ll.sum(), {"loglik": ll}

    n = 7
    probs = rng.dirichlet(np.ones(4), n)
    counts = np.stack([rng.multinomial(10, p) for p in probs]).astype(float)
    log_coef = math.lgamma(11) - np.sum(
        [[math.lgamma(c + 1) for c in row] for row in counts], axis=1
    )
    params = {"W": normal(rng, 4, 3, scale=0.5), "b": normal(rng, 4, scale=0.2)}
    inputs = {"X": normal(rng, n, 3), "counts": counts, "log_coef": log_coef}
    return m, reference, params, inputs


def _normalize_rows(z):
    return z / sg.sqrt(sg.sum(z**2, axis=1, keepdims=True))


def _cross_entropy(logits, labels):
    logp = sg.log_softmax(logits, axis=1)
    return -sg.mean(sg.take_along_axis(logp, labels[:, None], axis=1))


@family
def clip_symmetric_contrastive(hessian=False):
    """CLIP's loss: both towers projected and L2-normalised, logits scaled by a learned
    exp(logit_scale), cross-entropy over rows and over columns (labels = arange)."""
    rng = np.random.default_rng(0)
    m = sg.Model("clip_symmetric_contrastive", hessian=hessian)
    img, txt = m.input("img", ("B", 4)), m.input("txt", ("B", 3))
    labels = m.input("labels", ("B",), dtype="int64")
    Wi, Wt = m.param("Wi", (5, 4)), m.param("Wt", (5, 3))
    logit_scale = m.param("logit_scale", ())
    zi, zt = _normalize_rows(img @ Wi.T), _normalize_rows(txt @ Wt.T)
    logits = m.output("logits", sg.exp(logit_scale) * zi @ zt.T)
    m.loss((_cross_entropy(logits, labels) + _cross_entropy(logits.T, labels)) / 2)

    def reference(p, i):
        zi = F.normalize(i["img"] @ p["Wi"].T, dim=1)
        zt = F.normalize(i["txt"] @ p["Wt"].T, dim=1)
        logits = p["logit_scale"].exp() * zi @ zt.T
        loss = F.cross_entropy(logits, i["labels"]) + F.cross_entropy(
            logits.T, i["labels"]
        )
        return loss / 2, {"logits": logits}

    params = {
        "Wi": normal(rng, 5, 4),
        "Wt": normal(rng, 5, 3),
        "logit_scale": np.array(math.log(1 / 0.07)),
    }
    B = 6
    inputs = {
        "img": normal(rng, B, 4),
        "txt": normal(rng, B, 3),
        "labels": np.arange(B),
    }
    return m, reference, params, inputs


@family
def hinton_distillation(hessian=False):
    """Knowledge distillation: alpha T^2 KL(softmax(teacher / T) || softmax(student /
    T)) with batchmean, plus (1 - alpha) cross-entropy on hard labels; the teacher's
    logits are data, the student a one-hidden-layer MLP."""
    rng = np.random.default_rng(0)
    T, alpha = 3.0, 0.7
    m = sg.Model("hinton_distillation", hessian=hessian)
    x, teacher = m.input("x", ("B", 4)), m.input("teacher", ("B", 5))
    labels = m.input("labels", ("B",), dtype="int64")
    W1, b1 = m.param("W1", (6, 4)), m.param("b1", (6,))
    W2, b2 = m.param("W2", (5, 6)), m.param("b2", (5,))
    s = m.output("student", sg.tanh(x @ W1.T + b1) @ W2.T + b2)
    log_pt = sg.log_softmax(teacher / T, axis=1)
    kl = sg.mean(sg.sum(sg.exp(log_pt) * (log_pt - sg.log_softmax(s / T, axis=1)), 1))
    m.loss(alpha * T**2 * kl + (1 - alpha) * _cross_entropy(s, labels))

    def reference(p, i):
        s = torch.tanh(i["x"] @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
        kl = F.kl_div(
            F.log_softmax(s / T, dim=1),
            F.softmax(i["teacher"] / T, dim=1),
            reduction="batchmean",
        )
        ce = F.cross_entropy(s, i["labels"])
        return alpha * T**2 * kl + (1 - alpha) * ce, {"student": s}

    params = {
        "W1": normal(rng, 6, 4, scale=0.5),
        "b1": normal(rng, 6, scale=0.1),
        "W2": normal(rng, 5, 6, scale=0.5),
        "b2": normal(rng, 5, scale=0.1),
    }
    inputs = {
        "x": normal(rng, 7, 4),
        "teacher": normal(rng, 7, 5, scale=3.0),
        "labels": rng.integers(0, 5, 7),
    }
    return m, reference, params, inputs


@family
def strided_conv1d_multichannel(hessian=False):
    """F.conv1d(stride=2) with 2 in and 3 out channels and kernel 4: the strided taps
    of even offsets by reshape(B, C, 5, 2)[..., 0], of odd offsets by a step slice;
    each tap a (3, 2) @ (B, 2, 5) broadcast matmul."""
    rng = np.random.default_rng(0)
    m = sg.Model("strided_conv1d_multichannel", hessian=hessian)
    x, y = m.input("x", ("B", 2, 12)), m.input("y", ("B",))
    W, b, v = m.param("W", (3, 2, 4)), m.param("b", (3,)), m.param("v", (3,))
    out = b[:, None]
    for k in range(4):
        if k % 2 == 0:
            taps = x[:, :, k : k + 10].reshape("B", 2, 5, 2)[..., 0]
        else:
            taps = x[:, :, k : k + 9 : 2]
        out = out + W[:, :, k] @ taps
    feat = m.output("feat", sg.relu(out))  # (B, 3, 5)
    pred = sg.mean(feat, axis=2) @ v
    m.loss(sg.mean((pred - y) ** 2))

    def reference(p, i):
        feat = F.relu(F.conv1d(i["x"], p["W"], p["b"], stride=2))
        pred = feat.mean(2) @ p["v"]
        return F.mse_loss(pred, i["y"]), {"feat": feat}

    params = {
        "W": normal(rng, 3, 2, 4),
        "b": normal(rng, 3, scale=0.2),
        "v": normal(rng, 3),
    }
    return m, reference, params, {"x": normal(rng, 3, 2, 12), "y": normal(rng, 3)}


@family
def pooling_2d_by_reshape(hessian=False):
    """2 x 2 max and average pooling of a (B, 4, 6) map by reshape(B, 2, 2, 3, 2) and a
    reduction over axes (2, 4); the twin is F.max_pool2d / F.avg_pool2d."""
    rng = np.random.default_rng(0)
    m = sg.Model("pooling_2d_by_reshape", hessian=hessian)
    x, y = m.input("x", ("B", 4, 6)), m.input("y", ("B",))
    a, c = m.param("a", (4, 6)), m.param("c", ())
    w_max, w_avg = m.param("w_max", (2, 3)), m.param("w_avg", (2, 3))
    h = sg.tanh(x * a + c).reshape("B", 2, 2, 3, 2)
    pooled_max = m.output("pooled_max", sg.max(h, axis=(2, 4)))
    pooled_avg = sg.mean(h, axis=(2, 4))
    pred = sg.sum(pooled_max * w_max + pooled_avg * w_avg, axis=(1, 2))
    m.loss(sg.mean((pred - y) ** 2))

    def reference(p, i):
        h = torch.tanh(i["x"] * p["a"] + p["c"])[:, None]
        pmax = F.max_pool2d(h, 2)[:, 0]
        pavg = F.avg_pool2d(h, 2)[:, 0]
        pred = (pmax * p["w_max"] + pavg * p["w_avg"]).sum((1, 2))
        return F.mse_loss(pred, i["y"]), {"pooled_max": pmax}

    params = {
        "a": normal(rng, 4, 6),
        "c": np.array(0.1),
        "w_max": normal(rng, 2, 3),
        "w_avg": normal(rng, 2, 3),
    }
    return m, reference, params, {"x": normal(rng, 3, 4, 6), "y": normal(rng, 3)}


@family
def gram_matrix_style_loss(hessian=False):
    """Neural style transfer's losses on a 1x1 convolution's features: the (B, 4, 4)
    Gram matrices by a batched (B, 4, 8) @ (B, 8, 4) matmul against target Grams,
    plus a content MSE."""
    rng = np.random.default_rng(0)
    m = sg.Model("gram_matrix_style_loss", hessian=hessian)
    x = m.input("x", ("B", 3, 8))
    G_target, content = m.input("G_target", ("B", 4, 4)), m.input(
        "content", ("B", 4, 8)
    )
    W = m.param("W", (4, 3))
    f = sg.tanh(W @ x)  # (B, 4, 8)
    G = m.output("gram", f @ f.transpose(0, 2, 1) / 32.0)
    m.loss(sg.sum((G - G_target) ** 2) + 0.5 * sg.mean((f - content) ** 2))

    def reference(p, i):
        f = torch.tanh(p["W"] @ i["x"])
        G = torch.bmm(f, f.transpose(1, 2)) / 32.0
        loss = ((G - i["G_target"]) ** 2).sum() + 0.5 * F.mse_loss(f, i["content"])
        return loss, {"gram": G}

    inputs = {
        "x": normal(rng, 2, 3, 8),
        "G_target": normal(rng, 2, 4, 4, scale=0.1),
        "content": normal(rng, 2, 4, 8, scale=0.5),
    }
    return m, reference, {"W": normal(rng, 4, 3)}, inputs


@family
def masked_low_rank_completion(hessian=False):
    """Matrix completion as a sum of three rank-one outer products u[:, None] *
    v[None, :] plus row and column offsets, fitted on observed entries only (a 0/1
    mask), with an L2 penalty."""
    rng = np.random.default_rng(0)
    m = sg.Model("masked_low_rank_completion", hessian=hessian)
    M, mask = m.input("M", ("rows", "cols")), m.input("mask", ("rows", "cols"))
    U, V = m.param("U", ("rows", 3)), m.param("V", ("cols", 3))
    r, c = m.param("r", ("rows",)), m.param("c", ("cols",))
    pred = r[:, None] + c[None, :]
    for k in range(3):
        pred = pred + U[:, k][:, None] * V[:, k][None, :]
    m.output("pred", pred)
    fit = sg.sum(mask * (pred - M) ** 2) / sg.sum(mask)
    m.loss(fit + 0.05 * (sg.sum(U**2) + sg.sum(V**2)))

    def reference(p, i):
        pred = p["r"][:, None] + p["c"][None, :]
        for k in range(3):
            pred = pred + torch.outer(p["U"][:, k], p["V"][:, k])
        fit = (i["mask"] * (pred - i["M"]) ** 2).sum() / i["mask"].sum()
        return fit + 0.05 * ((p["U"] ** 2).sum() + (p["V"] ** 2).sum()), {"pred": pred}

    params = {
        "U": normal(rng, 5, 3, scale=0.5),
        "V": normal(rng, 4, 3, scale=0.5),
        "r": normal(rng, 5, scale=0.1),
        "c": normal(rng, 4, scale=0.1),
    }
    inputs = {"M": normal(rng, 5, 4), "mask": (rng.random((5, 4)) < 0.6).astype(float)}
    return m, reference, params, inputs


@family
def volume_rendering_alpha_compositing(hessian=False):
    """NeRF's renderer along R rays of S samples: density and colour from a tiny MLP of
    the sample depth, alpha = 1 - exp(-sigma delta), transmittance exp(-exclusive
    cumsum) as a product with a strictly lower-triangular matrix from int64 sample
    numbers (torch: cumprod of 1 - alpha)."""
    rng = np.random.default_rng(0)
    m = sg.Model("volume_rendering_alpha_compositing", hessian=hessian)
    t, delta = m.input("t", ("R", "S")), m.input("delta", ("R", "S"))
    k = m.input("k", ("S",), dtype="int64")
    rgb = m.input("rgb", ("R", 3))
    w1, b1 = m.param("w1", (4,)), m.param("b1", (4,))
    w_sigma, b_sigma = m.param("w_sigma", (4,)), m.param("b_sigma", ())
    Wc, bc = m.param("Wc", (3, 4)), m.param("bc", (3,))
    h = sg.tanh(t[..., None] * w1 + b1)  # (R, S, 4)
    sigma = sg.softplus(h @ w_sigma + b_sigma)
    color = sg.sigmoid(h @ Wc.T + bc)
    sd = sigma * delta
    before = sg.where(k[None, :] < k[:, None], 1.0, 0.0)  # [i, j] = j < i
    trans = sg.exp(-(sd @ before.T))
    weights = m.output("weights", trans * (1 - sg.exp(-sd)))
    rendered = sg.sum(weights[..., None] * color, axis=1)
    m.loss(sg.mean((rendered - rgb) ** 2))

    def reference(p, i):
        h = torch.tanh(i["t"][..., None] * p["w1"] + p["b1"])
        sigma = F.softplus(h @ p["w_sigma"] + p["b_sigma"])
        color = torch.sigmoid(h @ p["Wc"].T + p["bc"])
        alpha = 1 - torch.exp(-sigma * i["delta"])
        ones = torch.ones(len(alpha), 1, dtype=torch.float64)
        trans = torch.cumprod(torch.cat([ones, 1 - alpha[:, :-1]], dim=1), dim=1)
        weights = trans * alpha
        rendered = (weights[..., None] * color).sum(1)
        return F.mse_loss(rendered, i["rgb"]), {"weights": weights}

    R, S = 3, 6
    t = np.sort(rng.uniform(0.5, 4.0, (R, S)), axis=1)
    delta = np.diff(t, axis=1, append=4.5)
    params = {
        "w1": normal(rng, 4),
        "b1": normal(rng, 4, scale=0.3),
        "w_sigma": normal(rng, 4),
        "b_sigma": np.array(0.2),
        "Wc": normal(rng, 3, 4),
        "bc": normal(rng, 3, scale=0.2),
    }
    inputs = {"t": t, "delta": delta, "k": np.arange(S), "rgb": rng.random((R, 3))}
    return m, reference, params, inputs


@family
def hawkes_exponential_kernel(hessian=False):
    """A self-exciting point process with baseline mu, jump alpha and decay beta (all
    log-parametrised): intensities at the events by a masked (n, n) matrix of
    exp(-beta (t_i - t_j)) over earlier events, minus the compensator on [0, horizon].
    """
    m = sg.Model("hawkes_exponential_kernel", hessian=hessian)
    t, horizon = m.input("t", ("n",)), m.input("horizon", ())
    log_mu, log_alpha, log_beta = (
        m.param(k, ()) for k in ("log_mu", "log_alpha", "log_beta")
    )
    mu, alpha, beta = sg.exp(log_mu), sg.exp(log_alpha), sg.exp(log_beta)
    lag = t[:, None] - t[None, :]
    excite = sg.where(lag > 0, sg.exp(-beta * lag), 0.0)
    intensity = m.output("intensity", mu + alpha * beta * sg.sum(excite, axis=1))
    compensator = mu * horizon + alpha * sg.sum(1 - sg.exp(-beta * (horizon - t)))
    m.loss(compensator - sg.sum(sg.log(intensity)))

    def reference(p, i):
        mu, alpha, beta = (torch.exp(p[k]) for k in ("log_mu", "log_alpha", "log_beta"))
        t = i["t"]
        intensity = []
        for n in range(len(t)):
            past = t[:n]
            intensity.append(mu + alpha * beta * torch.exp(-beta * (t[n] - past)).sum())
        intensity = torch.stack(intensity)
        comp = (
            mu * i["horizon"]
            + alpha * (1 - torch.exp(-beta * (i["horizon"] - t))).sum()
        )
        return comp - torch.log(intensity).sum(), {"intensity": intensity}

    t = np.array([0.3, 0.9, 1.0, 1.7, 3.2, 3.3, 3.35, 5.0, 6.4])
    params = {
        "log_mu": np.array(-0.5),
        "log_alpha": np.array(-1.0),
        "log_beta": np.array(0.3),
    }
    return m, reference, params, {"t": t, "horizon": np.array(7.0)}


@family
def additive_model_25_params(hessian=False):
    """A generalised additive model of 8 features, each shape function
    a_j tanh(b_j x_j + c_j) with its own three 0-d parameters (24 of them, declared in
    a loop) plus an intercept: 25 separate parameters."""
    rng = np.random.default_rng(0)
    m = sg.Model("additive_model_25_params", hessian=hessian)
    x, y = m.input("x", ("B", 8)), m.input("y", ("B",))
    pred = m.param("intercept", ())
    for j in range(8):
        a, b, c = (m.param(f"{k}{j}", ()) for k in "abc")
        pred = pred + a * sg.tanh(b * x[:, j] + c)
    m.output("pred", pred)
    m.loss(sg.mean((pred - y) ** 2))

    def reference(p, i):
        pred = p["intercept"]
        for j in range(8):
            pred = pred + p[f"a{j}"] * torch.tanh(
                p[f"b{j}"] * i["x"][:, j] + p[f"c{j}"]
            )
        return F.mse_loss(pred, i["y"]), {"pred": pred}

    params = {"intercept": np.array(0.1)}
    for j in range(8):
        params.update(
            {f"a{j}": np.array(rng.normal()), f"b{j}": np.array(rng.normal())}
        )
        params[f"c{j}"] = np.array(0.3 * rng.normal())
    return m, reference, params, {"x": normal(rng, 6, 8), "y": normal(rng, 6)}


_ACTIVATIONS = [
    (lambda h: sg.tanh(h), torch.tanh),
    (_gelu_tanh, lambda h: F.gelu(h, approximate="tanh")),
    (lambda h: h * sg.sigmoid(h), F.silu),
    (lambda h: sg.softplus(h), F.softplus),
    (_gelu_erf, F.gelu),
    (lambda h: sg.where(h > 0, h, sg.exp(h) - 1), F.elu),
    (lambda h: sg.sigmoid(h), torch.sigmoid),
    (lambda h: sg.where(h > 0, h, 0.1 * h), lambda h: F.leaky_relu(h, 0.1)),
    (lambda h: sg.elementwise(lambda z: z * sp.tanh(sp.log(1 + sp.exp(z))), h), F.mish),
]


def _deep_mlp(width, layers=10, name="deep_mlp", hessian=False):
    m = sg.Model(name, hessian=hessian)
    x, y = m.input("x", ("B", 3)), m.input("y", ("B",))
    h, fan_in = x, 3
    for n in range(layers - 1):
        W, b = m.param(f"W{n}", (width, fan_in)), m.param(f"b{n}", (width,))
        h, fan_in = _ACTIVATIONS[n % len(_ACTIVATIONS)][0](h @ W.T + b), width
    w, b = m.param("w_out", (fan_in,)), m.param("b_out", ())
    pred = m.output("pred", h @ w + b)
    m.loss(sg.mean((pred - y) ** 2))

    def reference(p, i):
        h = i["x"]
        for n in range(layers - 1):
            h = _ACTIVATIONS[n % len(_ACTIVATIONS)][1](h @ p[f"W{n}"].T + p[f"b{n}"])
        pred = h @ p["w_out"] + p["b_out"]
        return F.mse_loss(pred, i["y"]), {"pred": pred}

    rng = np.random.default_rng(0)
    params, fan_in = {}, 3
    for n in range(layers - 1):
        params[f"W{n}"] = normal(rng, width, fan_in, scale=1.2 / math.sqrt(fan_in))
        params[f"b{n}"] = normal(rng, width, scale=0.1)
        fan_in = width
    params["w_out"] = normal(rng, width)
    params["b_out"] = np.array(0.0)
    return m, reference, params, {"x": normal(rng, 5, 3), "y": normal(rng, 5)}


@family
def deep10_mixed_activations(hessian=False):
    """Ten linear layers of width 6 through nine different activations: tanh, tanh-GELU,
    SiLU, softplus, erf-GELU, ELU and leaky ReLU by sg.where, sigmoid, and Mish as a
    SymPy formula."""
    return _deep_mlp(6, name="deep10_mixed_activations", hessian=hessian)


@family
def pendulum_batch_symplectic(hessian=False):
    """A batch of damped pendulums from their own initial states, 30 semi-implicit
    Euler steps with learned log(g / l) and damping, fitted to observed angles:
    a long chain of elementwise steps on (B,) vectors."""
    rng = np.random.default_rng(0)
    steps, dt = 30, 0.1
    m = sg.Model("pendulum_batch_symplectic", hessian=hessian)
    theta0, omega0 = m.input("theta0", ("B",)), m.input("omega0", ("B",))
    obs = m.input("obs", ("B", steps))
    log_w2, damping = m.param("log_w2", ()), m.param("damping", ())
    w2 = sg.exp(log_w2)
    theta, omega, loss = theta0, omega0, 0.0
    for t in range(steps):
        omega = omega - dt * (w2 * sg.sin(theta) + damping * omega)
        theta = theta + dt * omega
        loss = loss + sg.mean((theta - obs[:, t]) ** 2)
    m.output("theta_end", theta)
    m.loss(loss / steps)

    def reference(p, i):
        w2 = torch.exp(p["log_w2"])
        theta, omega, traj = i["theta0"], i["omega0"], []
        for _ in range(steps):
            omega = omega - dt * (w2 * torch.sin(theta) + p["damping"] * omega)
            theta = theta + dt * omega
            traj.append(theta)
        return F.mse_loss(torch.stack(traj, 1), i["obs"]), {"theta_end": theta}

    B = 4
    theta0, omega0 = rng.uniform(-1.5, 1.5, B), rng.uniform(-1, 1, B)
    tt = dt * np.arange(1, steps + 1)
    obs = theta0[:, None] * np.cos(2.0 * tt) * np.exp(-0.1 * tt) + normal(
        rng, B, steps, scale=0.05
    )
    params = {"log_w2": np.array(1.2), "damping": np.array(0.15)}
    return m, reference, params, {"theta0": theta0, "omega0": omega0, "obs": obs}


@family
def zero_inflated_poisson(hessian=False):
    """Zero-inflated Poisson regression: a zero is either structural (probability
    sigmoid(z)) or a Poisson zero, picked by sg.where(y == 0, ...) on float counts;
    log y! is data."""
    rng = np.random.default_rng(0)
    m = sg.Model("zero_inflated_poisson", hessian=hessian)
    X, y, log_fact = (
        m.input("X", ("n", 2)),
        m.input("y", ("n",)),
        m.input("log_fact", ("n",)),
    )
    w_pi, b_pi = m.param("w_pi", (2,)), m.param("b_pi", ())
    w_lam, b_lam = m.param("w_lam", (2,)), m.param("b_lam", ())
    z = X @ w_pi + b_pi
    log_lam = X @ w_lam + b_lam
    lam = sg.exp(log_lam)
    log_zero = sg.log(sg.sigmoid(z) + sg.sigmoid(-z) * sg.exp(-lam))
    log_pos = -sg.softplus(z) + y * log_lam - lam - log_fact
    ll = m.output("loglik", sg.where(y == 0, log_zero, log_pos))
    m.loss(-sg.mean(ll))

    def reference(p, i):
        z = i["X"] @ p["w_pi"] + p["b_pi"]
        log_lam = i["X"] @ p["w_lam"] + p["b_lam"]
        lam = torch.exp(log_lam)
        log_zero = torch.logaddexp(F.logsigmoid(z), F.logsigmoid(-z) - lam)
        log_pos = F.logsigmoid(-z) + torch.distributions.Poisson(lam).log_prob(i["y"])
        ll = torch.where(i["y"] == 0, log_zero, log_pos)
        return -ll.mean(), {"loglik": ll}

    n = 12
    y = np.array([0, 0, 1, 3, 0, 2, 0, 5, 1, 0, 4, 0], dtype=float)
    log_fact = np.array([math.lgamma(v + 1) for v in y])
    params = {
        "w_pi": normal(rng, 2, scale=0.5),
        "b_pi": np.array(-0.3),
        "w_lam": normal(rng, 2, scale=0.5),
        "b_lam": np.array(0.4),
    }
    return m, reference, params, {"X": normal(rng, n, 2), "y": y, "log_fact": log_fact}


@family
def soft_dice_segmentation(hessian=False):
    """Per-pixel softmax segmentation of 3 classes (a 1x1 convolution, W @ x on
    (B, 2, P)), scored by soft Dice per class (sums over axes (0, 2)) plus
    cross-entropy against one-hot targets."""
    rng = np.random.default_rng(0)
    m = sg.Model("soft_dice_segmentation", hessian=hessian)
    x, onehot = m.input("x", ("B", 2, "P")), m.input("onehot", ("B", 3, "P"))
    W, b = m.param("W", (3, 2)), m.param("b", (3,))
    logits = W @ x + b[:, None]
    probs = m.output("probs", sg.softmax(logits, axis=1))
    inter = sg.sum(probs * onehot, axis=(0, 2))
    dice = (2 * inter + 1.0) / (
        sg.sum(probs, axis=(0, 2)) + sg.sum(onehot, axis=(0, 2)) + 1.0
    )
    ce = -sg.mean(sg.sum(onehot * sg.log_softmax(logits, axis=1), axis=1))
    m.loss(1 - sg.mean(dice) + ce)

    def reference(p, i):
        logits = p["W"] @ i["x"] + p["b"][:, None]
        probs = logits.softmax(1)
        inter = (probs * i["onehot"]).sum((0, 2))
        dice = (2 * inter + 1) / (probs.sum((0, 2)) + i["onehot"].sum((0, 2)) + 1)
        ce = F.cross_entropy(logits, i["onehot"].argmax(1))
        return 1 - dice.mean() + ce, {"probs": probs}

    labels = rng.integers(0, 3, (2, 7))
    onehot = np.moveaxis(np.eye(3)[labels], -1, 1)
    params = {"W": normal(rng, 3, 2), "b": normal(rng, 3, scale=0.2)}
    return m, reference, params, {"x": normal(rng, 2, 2, 7), "onehot": onehot}


@family
def swiglu_ffn_rmsnorm(hessian=False):
    """LLaMA's feed-forward block: RMSNorm with a learned gain, then
    (silu(x W1^T) * x W3^T) W2^T added to the residual stream."""
    rng = np.random.default_rng(0)
    d, hidden = 4, 6
    m = sg.Model("swiglu_ffn_rmsnorm", hessian=hessian)
    x, y = m.input("x", ("B", "T", d)), m.input("y", ("B", "T", d))
    g = m.param("g", (d,))
    W1, W3, W2 = (
        m.param("W1", (hidden, d)),
        m.param("W3", (hidden, d)),
        m.param("W2", (d, hidden)),
    )
    xn = x / sg.sqrt(sg.mean(x**2, axis=-1, keepdims=True) + 1e-6) * g
    a = xn @ W1.T
    out = m.output("out", x + (a * sg.sigmoid(a) * (xn @ W3.T)) @ W2.T)
    m.loss(sg.mean((out - y) ** 2))

    def reference(p, i):
        xn = F.rms_norm(i["x"], (d,), p["g"], eps=1e-6)
        out = i["x"] + (F.silu(xn @ p["W1"].T) * (xn @ p["W3"].T)) @ p["W2"].T
        return F.mse_loss(out, i["y"]), {"out": out}

    params = {
        "g": 1 + normal(rng, d, scale=0.1),
        "W1": normal(rng, hidden, d, scale=0.5),
        "W3": normal(rng, hidden, d, scale=0.5),
        "W2": normal(rng, d, hidden, scale=0.5),
    }
    return m, reference, params, {"x": normal(rng, 2, 3, d), "y": normal(rng, 2, 3, d)}


@family
def rotary_attention(hessian=False):
    """Single-head attention with rotary position embeddings: queries and keys rotated
    pairwise by cos/sin tables (data), written on the two halves (no concatenation);
    the twin is the usual rotate_half with torch.cat."""
    rng = np.random.default_rng(0)
    d, T = 4, 5
    m = sg.Model("rotary_attention", hessian=hessian)
    x, y = m.input("x", ("B", T, d)), m.input("y", ("B", T, d))
    cos, sin = m.input("cos", (T, d // 2)), m.input("sin", (T, d // 2))
    Wq, Wk, Wv = (m.param(k, (d, d)) for k in ("Wq", "Wk", "Wv"))

    def rope(z):
        z1, z2 = z[..., : d // 2], z[..., d // 2 :]
        return z1 * cos - z2 * sin, z2 * cos + z1 * sin

    q1, q2 = rope(x @ Wq.T)
    k1, k2 = rope(x @ Wk.T)
    scores = (q1 @ k1.transpose(0, 2, 1) + q2 @ k2.transpose(0, 2, 1)) / math.sqrt(d)
    att = m.output("att", sg.softmax(scores, axis=-1))
    m.loss(sg.mean((att @ (x @ Wv.T) - y) ** 2))

    def reference(p, i):
        cos = torch.cat([i["cos"], i["cos"]], -1)
        sin = torch.cat([i["sin"], i["sin"]], -1)

        def rotate_half(z):
            return torch.cat([-z[..., d // 2 :], z[..., : d // 2]], -1)

        q, k = i["x"] @ p["Wq"].T, i["x"] @ p["Wk"].T
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        att = (q @ k.transpose(1, 2) / math.sqrt(d)).softmax(-1)
        return F.mse_loss(att @ (i["x"] @ p["Wv"].T), i["y"]), {"att": att}

    inv_freq = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    angles = np.arange(T)[:, None] * inv_freq[None, :]
    params = {k: normal(rng, d, d, scale=0.6) for k in ("Wq", "Wk", "Wv")}
    inputs = {
        "x": normal(rng, 2, T, d),
        "y": normal(rng, 2, T, d),
        "cos": np.cos(angles),
        "sin": np.sin(angles),
    }
    return m, reference, params, inputs


@family
def gumbel_softmax_relaxation(hessian=False):
    """A relaxed categorical latent: softmax((logits + g) / tau) with Gumbel noise g as
    data and a learned temperature tau = exp(log_tau), decoding by a codebook; an
    entropy bonus on the clean softmax."""
    rng = np.random.default_rng(0)
    m = sg.Model("gumbel_softmax_relaxation", hessian=hessian)
    x, g, target = (
        m.input("x", ("B", 3)),
        m.input("g", ("B", 4)),
        m.input("target", ("B", 2)),
    )
    W, b = m.param("W", (4, 3)), m.param("b", (4,))
    log_tau, codebook = m.param("log_tau", ()), m.param("codebook", (4, 2))
    logits = x @ W.T + b
    soft = m.output("soft", sg.softmax((logits + g) / sg.exp(log_tau), axis=1))
    logp = sg.log_softmax(logits, axis=1)
    neg_entropy = sg.mean(sg.sum(sg.exp(logp) * logp, axis=1))
    m.loss(sg.mean((soft @ codebook - target) ** 2) + 0.1 * neg_entropy)

    def reference(p, i):
        logits = i["x"] @ p["W"].T + p["b"]
        soft = ((logits + i["g"]) / torch.exp(p["log_tau"])).softmax(1)
        entropy = torch.distributions.Categorical(logits=logits).entropy()
        loss = F.mse_loss(soft @ p["codebook"], i["target"]) - 0.1 * entropy.mean()
        return loss, {"soft": soft}

    params = {
        "W": normal(rng, 4, 3),
        "b": normal(rng, 4, scale=0.2),
        "log_tau": np.array(-0.3),
        "codebook": normal(rng, 4, 2),
    }
    u = rng.uniform(1e-6, 1 - 1e-6, (5, 4))
    inputs = {
        "x": normal(rng, 5, 3),
        "g": -np.log(-np.log(u)),
        "target": normal(rng, 5, 2),
    }
    return m, reference, params, inputs


@family
def wavenet_gated_dilated_conv(hessian=False):
    """Three WaveNet layers (dilations 1, 2, 4, kernel 2, valid padding) on a series of
    symbolic length L: tanh * sigmoid gates, 1x1 residual projections aligned on the
    later taps, a mean over time; the twin is F.conv1d(dilation=d)."""
    rng = np.random.default_rng(0)
    C = 2
    m = sg.Model("wavenet_gated_dilated_conv", hessian=hessian)
    x, y = m.input("x", ("B", 1, "L")), m.input("y", ("B",))
    W_in = m.param("W_in", (C, 1))
    layers = []
    for n in range(3):
        layers.append(
            tuple(
                m.param(f"{k}{n}", s)
                for k, s in (("Wf", (C, C, 2)), ("Wg", (C, C, 2)), ("R", (C, C)))
            )
        )
    v = m.param("v", (C,))
    h = W_in @ x  # (B, C, L)
    for (Wf, Wg, R), d in zip(layers, (1, 2, 4), strict=True):
        early, late = h[:, :, :-d], h[:, :, d:]
        f = Wf[:, :, 0] @ early + Wf[:, :, 1] @ late
        g = Wg[:, :, 0] @ early + Wg[:, :, 1] @ late
        h = late + R @ (sg.tanh(f) * sg.sigmoid(g))
    pred = m.output("pred", sg.mean(h, axis=2) @ v)
    m.loss(sg.mean((pred - y) ** 2))

    def reference(p, i):
        h = F.conv1d(i["x"], p["W_in"][:, :, None])
        for n, d in enumerate((1, 2, 4)):
            f = F.conv1d(h, p[f"Wf{n}"], dilation=d)
            g = F.conv1d(h, p[f"Wg{n}"], dilation=d)
            h = h[:, :, d:] + F.conv1d(
                torch.tanh(f) * torch.sigmoid(g), p[f"R{n}"][:, :, None]
            )
        pred = h.mean(2) @ p["v"]
        return F.mse_loss(pred, i["y"]), {"pred": pred}

    params = {"W_in": normal(rng, C, 1)}
    for n in range(3):
        params[f"Wf{n}"] = normal(rng, C, C, 2, scale=0.6)
        params[f"Wg{n}"] = normal(rng, C, C, 2, scale=0.6)
        params[f"R{n}"] = normal(rng, C, C, scale=0.6)
    params["v"] = normal(rng, C)
    return m, reference, params, {"x": normal(rng, 3, 1, 12), "y": normal(rng, 3)}


# ===================================================================== 2. the families

module_of = FAMILIES.module


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch(name):
    _, reference, params, inputs = FAMILIES[name]()
    check(module_of(name), reference, params, inputs)


HESSIAN_FAMILIES = [
    "hmm_forward_algorithm",
    "linear_chain_crf",
    "group_lasso_logistic",
    "kernel_ridge_dual_rbf",
    "hawkes_exponential_kernel",
    "zero_inflated_poisson",
    "additive_model_25_params",
    "clip_symmetric_contrastive",
    "gumbel_softmax_relaxation",
    "multinomial_logit_counts",
    "pendulum_batch_symplectic",
    "volume_rendering_alpha_compositing",
    "swiglu_ffn_rmsnorm",
    "soft_dice_segmentation",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_pytorch(name):
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
    assert_second_order_agrees(module, reference, params, inputs)
    check(module, reference, params, inputs)  # the hessian build keeps the gradient


UNROLL_FAMILIES = [
    "kernel_ridge_dual_rbf",
    "hawkes_exponential_kernel",
    "bpr_matrix_factorization",
    "group_lasso_logistic",
    "zero_inflated_poisson",
    "multinomial_logit_counts",
    "masked_low_rank_completion",
    "pooling_2d_by_reshape",
]


@pytest.mark.parametrize("name", UNROLL_FAMILIES)
def test_unrolled_at_its_sizes_agrees_with_pytorch(name):
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, unroll=True)
    check_unrolled(module, reference, params, inputs)


def test_fixed_size_spring_chain_is_unrolled_automatically():
    """No symbolic dims and at most 32 elements per array: the straight-line code runs."""
    _, reference, params, inputs = FAMILIES["verlet_spring_chain"]()
    module = module_of("verlet_spring_chain")
    check_unrolled(module, reference, params, inputs, "_value_and_grad_unrolled")


# ===================================================================== 3. other sizes


def _resized(module, params, inputs, **sizes):
    """The family's data with symbolic dims resized, cycling the existing entries along
    each resized axis (so index arrays stay in range)."""
    out = []
    for group, shapes in ((params, module.PARAMS), (inputs, module.INPUTS)):
        new = {}
        for key, value in group.items():
            value = np.asarray(value)
            for axis, dim in enumerate(shapes[key]):
                if dim in sizes:
                    picks = np.arange(sizes[dim]) % value.shape[axis]
                    value = np.take(value, picks, axis=axis)
            new[key] = value
        out.append(new)
    return out


OTHER_SIZES = [
    ("transformer_encoder_layer_torch", {"B": 1}),
    ("transformer_encoder_layer_torch", {"B": 7}),
    ("gpt_block_causal_tied", {"B": 1, "T": 1}),
    ("gpt_block_causal_tied", {"B": 2, "T": 6}),
    ("iwae_bernoulli_decoder", {"B": 1}),
    ("hinton_distillation", {"B": 1}),
    ("strided_conv1d_multichannel", {"B": 1}),
    ("swiglu_ffn_rmsnorm", {"B": 1, "T": 1}),
    ("soft_dice_segmentation", {"B": 1, "P": 1}),
    ("gcn_message_passing", {"E": 1}),
    ("gcn_message_passing", {"E": 40}),
    ("bpr_matrix_factorization", {"B": 1}),
    ("kernel_ridge_dual_rbf", {"n": 1, "s": 1}),
    ("hawkes_exponential_kernel", {"n": 1}),
    ("volume_rendering_alpha_compositing", {"R": 1, "S": 1}),
    ("masked_low_rank_completion", {"rows": 1}),
    ("pooling_2d_by_reshape", {"B": 1}),
    ("additive_model_25_params", {"B": 1}),
]


@pytest.mark.parametrize(
    "name, sizes", OTHER_SIZES, ids=[f"{n}-{s}" for n, s in OTHER_SIZES]
)
def test_other_sizes_of_the_symbolic_dims_agree_with_pytorch(name, sizes):
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    params, inputs = _resized(module, params, inputs, **sizes)
    if name == "gpt_block_causal_tied":
        inputs["pos"] = np.arange(sizes["T"])  # positions, not cycled
    if name == "volume_rendering_alpha_compositing":
        inputs["k"] = np.arange(sizes["S"])
    check(module, reference, params, inputs)


@pytest.mark.parametrize("L", [8, 9, 20])
def test_wavenet_at_other_lengths_agrees_with_pytorch(L):
    _, reference, params, inputs = FAMILIES["wavenet_gated_dilated_conv"]()
    x = normal(np.random.default_rng(L), 3, 1, L)
    check(
        module_of("wavenet_gated_dilated_conv"), reference, params, {**inputs, "x": x}
    )


def test_a_graph_without_edges_aggregates_nothing():
    """E = 0: the one-hot matrix is (0, N), every degree 0, as torch's index_add."""
    _, reference, params, inputs = FAMILIES["gcn_message_passing"]()
    none = np.zeros(0, dtype=np.int64)
    check(
        module_of("gcn_message_passing"),
        reference,
        params,
        {**inputs, "src": none, "dst": none},
    )


def test_a_hawkes_process_without_events_is_its_compensator():
    """n = 0 events: the loss is mu * horizon, d/dlog_mu = mu * horizon, the rest 0."""
    _, _, params, inputs = FAMILIES["hawkes_exponential_kernel"]()
    module = module_of("hawkes_exponential_kernel")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = module.value_and_grad(params, {**inputs, "t": np.zeros(0)})
    mu = np.exp(params["log_mu"])
    assert rel(loss, mu * 7.0) <= 1e-12
    assert rel(grads["log_mu"], mu * 7.0) <= 1e-12
    assert grads["log_alpha"] == 0.0 and grads["log_beta"] == 0.0


def test_an_empty_batch_under_a_mean_is_a_clear_error():
    _, _, params, inputs = FAMILIES["transformer_encoder_layer_torch"]()
    module = module_of("transformer_encoder_layer_torch")
    empty = {k: v[:0] for k, v in inputs.items()}
    with pytest.raises(ValueError, match=r"B=0.*B >= 1"):
        module.value_and_grad(params, empty)


def test_wavenet_too_short_for_its_mean_is_a_clear_error():
    _, _, params, inputs = FAMILIES["wavenet_gated_dilated_conv"]()
    module = module_of("wavenet_gated_dilated_conv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=r"L=7.*L >= 8"):
            module.value_and_grad(params, {**inputs, "x": np.ones((3, 1, 7))})


def test_wavenet_shorter_than_its_slices_is_a_clear_error():
    _, _, params, inputs = FAMILIES["wavenet_gated_dilated_conv"]()
    module = module_of("wavenet_gated_dilated_conv")
    for L in (0, 3, 5, 7):  # the slices need L >= 7, the mean over L - 7 one more
        with pytest.raises(
            ValueError, match=rf"L={L}: a division by L - 7 needs L >= 8"
        ):
            module.value_and_grad(params, {**inputs, "x": np.ones((3, 1, L))})


# ===================================================================== 4. compile time


def test_compile_time_is_flat_in_width_and_a_10_layer_mlp_agrees():
    """Ten layers through nine activations at width 6 and 512: differentiation works on
    tensors, so the work (and the compile time) does not grow with the width: the two
    modules are the same program, up to the width in their shapes."""
    sources = {}
    for width in (6, 512):
        model, reference, params, inputs = _deep_mlp(width, name=f"mlp_{width}")
        check(compile_module(model), reference, params, inputs)
        source = generate(model)[0]  # forward ... hvp, without the digest and init
        sources[width] = source[source.index("def forward") : source.index("def init")]
    assert re.sub(r"\b512\b", "6", sources[512]) == sources[6]


# ===================================================================== 5. targeted checks


def test_dividing_by_a_symbolic_batch_size_like_batchmean():
    T = 3.0
    m = sg.Model("batchmean_kl")
    s, teacher = m.param("s", ("B", 5)), m.input("teacher", ("B", 5))
    log_pt = sg.log_softmax(teacher / T, axis=1)
    kl = sg.sum(sg.exp(log_pt) * (log_pt - sg.log_softmax(s / T, axis=1)))
    m.loss(kl / s.shape[0])

    def reference(p, i):
        kl = F.kl_div(
            F.log_softmax(p["s"] / T, 1),
            F.softmax(i["teacher"] / T, 1),
            reduction="batchmean",
        )
        return kl, {}

    rng = np.random.default_rng(0)
    check(
        compile_module(m),
        reference,
        {"s": normal(rng, 4, 5)},
        {"teacher": normal(rng, 4, 5)},
    )


@pytest.mark.parametrize("unroll", [False, True])
def test_dividing_by_a_sliced_size_is_checked_like_a_mean(unroll):
    """x.shape of a slice is its size expression, L - 1: the division by it is a mean,
    which needs L >= 2, and agrees with torch at every size, unrolled too."""
    m = sg.Model("mean_step")
    x = m.param("x", ("L",))
    steps = x[1:] - x[:-1]
    m.loss(sg.sum(steps**2) / steps.shape[0])
    assert steps.shape == ("L - 1",)
    if unroll:
        m.unroll(L=4)
    module = compile_module(m)

    def reference(p, i):
        return torch.diff(p["x"]).pow(2).mean(), {}

    for L in (2, 4, 7):
        check(module, reference, {"x": normal(np.random.default_rng(L), L)}, {})
    with pytest.raises(ValueError, match=r"L=1: .* needs L >= 2"):
        module.value_and_grad({"x": np.ones(1)}, {})
    assert verify(m, module).ok


def _group_lasso_sqrt_reference(p, i):
    """The family's function with the norms written as torch.sqrt of a sum of squares
    (as the model declares them): at a zero group, torch's gradient is nan too."""
    z = i["X"] @ p["w"] + p["b"]
    norms = torch.sqrt((p["w"].view(3, 2) ** 2).sum(1))
    bce = F.binary_cross_entropy_with_logits(z, i["y"])
    return bce + 0.1 * norms.sum(), {"group_norms": norms}


def test_a_zero_group_under_a_group_lasso_gives_torchs_nan_and_numpys_warning():
    """A group of weights at exactly zero: sqrt's derivative there is undefined, and
    the gradient is nan as in torch. Unlike torch, NumPy says so (divide by zero): a
    deliberate difference, since no branch of an sg.where is being discarded here."""
    _, _, params, inputs = FAMILIES["group_lasso_logistic"]()
    w = params["w"].copy()
    w[2:4] = 0.0
    from helpers import torch_twin

    expected_loss, _, expected = torch_twin(
        _group_lasso_sqrt_reference, {**params, "w": w}, inputs
    )
    assert np.isnan(expected["w"][2:4]).all()
    with pytest.warns(RuntimeWarning) as said:  # divide by zero, then inf * 0
        loss, grads = module_of("group_lasso_logistic").value_and_grad(
            {**params, "w": w}, inputs
        )
    assert "divide by zero" in str(said[0].message)
    assert rel(loss, expected_loss) <= 1e-12
    np.testing.assert_allclose(grads["w"], expected["w"], rtol=1e-10)  # nan where nan


def _shifted_logsumexp_model():
    """softmin's shift: low + log(exp(a - low) + exp(b - low)) for low = min(a, b). Its
    derivative through low is exactly 0, which SymPy finds."""
    m = sg.Model("shifted_logsumexp")
    a, b = m.param("a", ("n",)), m.param("b", ("n",))
    low = sg.minimum(a, b)
    m.loss(sg.sum(low + sg.log(sg.exp(a - low) + sg.exp(b - low))))

    def reference(p, i):
        return torch.logaddexp(p["a"], p["b"]).sum(), {}

    return m, reference


def test_shifted_logsumexp_agrees_with_logaddexp():
    m, reference = _shifted_logsumexp_model()
    rng = np.random.default_rng(0)
    params = {"a": normal(rng, 6, scale=3.0), "b": normal(rng, 6, scale=3.0)}
    params["b"][0] = params["a"][0]  # a tie of the minimum
    check(compile_module(m), reference, params, {})


def test_a_zero_partial_derivative_generates_no_code():
    m, _ = _shifted_logsumexp_model()
    source, _ = generate(m)
    start = source.index("def value_and_grad")
    body = source[start : source.index("\ndef ", start)]
    assert "np.zeros(" not in body and "heaviside" not in body, body


def test_index_arrays_of_other_integer_types_agree():
    """int32 and uint8 observation arrays (as a tokenizer may give) pick the same rows."""
    _, reference, params, inputs = FAMILIES["hmm_forward_algorithm"]()
    module = module_of("hmm_forward_algorithm")
    expected, _ = module.value_and_grad(params, inputs)
    for dtype in (np.int32, np.uint8, np.int16):
        loss, grads = module.value_and_grad(
            params, {"obs": inputs["obs"].astype(dtype)}
        )
        assert rel(loss, expected) <= 1e-14
    check(module, reference, params, {"obs": inputs["obs"].tolist()})


@pytest.mark.parametrize(
    "key, value, exception, pattern",
    [
        ("labels", np.arange(5), ValueError, r"inputs\['labels'\].*\(B=6,\).*\(5,\)"),
        ("labels", np.arange(6.0), ValueError, r"inputs\['labels'\].*integer.*float64"),
        (
            "txt",
            np.ones((6, 3), dtype=int),
            ValueError,
            r"inputs\['txt'\].*float.*int64",
        ),
        (
            "img",
            np.ones((6, 4), dtype=complex),
            ValueError,
            r"inputs\['img'\].*complex128",
        ),
        ("img", np.ones((6, 4), dtype=bool), ValueError, r"inputs\['img'\].*bool"),
        ("img", "abc", ValueError, r"inputs\['img'\]"),
        ("img", np.ones((6, 5)), ValueError, r"inputs\['img'\].*\(B, 4\).*\(6, 5\)"),
        (
            "logit_scale",
            np.array([2.5]),
            ValueError,
            r"params\['logit_scale'\].*\(\).*\(1,\)",
        ),
    ],
)
def test_bad_arguments_to_the_clip_loss_are_named(key, value, exception, pattern):
    _, _, params, inputs = FAMILIES["clip_symmetric_contrastive"]()
    module = module_of("clip_symmetric_contrastive")
    if key in params:
        params = {**params, key: value}
    else:
        inputs = {**inputs, key: value}
    with pytest.raises(exception, match=pattern):
        module.value_and_grad(params, inputs)


def test_arguments_are_never_written_to():
    """Read-only, Fortran-ordered arrays through every family: same results, no writes."""
    for name in (
        "transformer_encoder_layer_torch",
        "verlet_spring_chain",
        "hawkes_exponential_kernel",
    ):
        _, reference, params, inputs = FAMILIES[name]()

        def frozen(a):
            a = np.array(a, order="F")  # (asfortranarray makes a 0-d array 1-d)
            a.setflags(write=False)
            return a

        check(
            module_of(name),
            reference,
            {k: frozen(v) for k, v in params.items()},
            {k: frozen(v) for k, v in inputs.items()},
        )


def test_a_parameter_named_like_a_builtin_is_a_clear_error():
    """torch's in_proj_bias ported as 'bin' shadows the builtin: refused by name."""
    m = sg.Model("builtin_name")
    with pytest.raises(sg.ModelError, match=r"'bin' would shadow"):
        m.param("bin", (3,))


def test_unroll_needs_every_dim_and_long_enough_slices():
    model = FAMILIES["wavenet_gated_dilated_conv"]()[0]
    with pytest.raises(sg.ModelError, match=r"'T' is not a symbolic dim.*B, L"):
        model.unroll(T=3)
    model.unroll(L=12)
    with pytest.raises(sg.ModelError, match=r"no size for dim\(s\) B"):
        generate(model)
    model = FAMILIES["wavenet_gated_dilated_conv"]()[0]
    model.unroll(B=1, L=5)
    with pytest.raises(sg.ModelError, match=r"m.unroll\(B=1, L=5\):.*needs L >= 8"):
        generate(model)


# ===================================================================== 6. the command line

RIDGE_FILE = """
import symgrad as sg


def build():
    m = sg.Model("{name}", doc="{doc}")
    X, y = m.input("X", ("n", 2)), m.input("y", ("n",))
    alpha, log_ell = m.param("alpha", ("n",)), m.param("log_ell", ())
    d2 = sg.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    K = sg.exp(-0.5 * d2 / sg.exp(2 * log_ell))
    m.loss(sg.mean((K @ alpha - y) ** 2) + {lam} * (alpha @ (K @ alpha)))
    return m
"""

SHRINK_FILE = """
import symgrad as sg


def build():
    m = sg.Model("shrinking_slices")
    x = m.input("x", ("L",))
    w = m.param("w", ())
    h = sg.tanh(w * x)
    h = h[1:] * h[:-1]  # length L - 1
    h = h[2:] - h[:-2]  # length L - 3, so the mean needs L >= 4
    m.loss(sg.mean(h**2))
    return m
"""


def symgrad_command() -> list[str]:
    exe = shutil.which("symgrad")
    return [exe] if exe else [sys.executable, "-m", "symgrad.cli"]


def run_cli(args, cwd):
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.run(
        [*symgrad_command(), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def _ridge(tmp_path, name="ridge_fit", doc="Kernel ridge.", lam="0.1"):
    (tmp_path / "ridge.py").write_text(RIDGE_FILE.format(name=name, doc=doc, lam=lam))


def test_check_follows_edits_of_the_model_and_of_the_module(tmp_path):
    _ridge(tmp_path)
    built = run_cli(["build", "ridge.py", "--out", "gen"], tmp_path)
    assert built.returncode == 0 and "verified" in built.stdout, built.stderr
    target = tmp_path / "gen" / "ridge_fit.py"
    assert run_cli(["check", "ridge.py", "--out", "gen"], tmp_path).returncode == 0
    good = target.read_bytes()

    _ridge(tmp_path, lam="0.25")  # a changed constant of the model
    stale = run_cli(["check", "ridge.py", "--out", "gen"], tmp_path)
    assert stale.returncode == 1
    assert "0.25" in stale.stdout and "(committed)" in stale.stdout
    assert (
        "stale: gen/ridge_fit.py (run: symgrad build ridge.py --out gen)"
        in stale.stdout
    )
    assert target.read_bytes() == good  # check writes nothing

    _ridge(tmp_path, doc="Kernel ridge, documented again.")  # the doc only
    assert run_cli(["check", "ridge.py", "--out", "gen"], tmp_path).returncode == 1
    _ridge(tmp_path)
    target.write_text(good.decode().replace("np.exp(", "np.exp(  ", 1))  # by hand
    assert run_cli(["check", "ridge.py", "--out", "gen"], tmp_path).returncode == 1
    target.write_bytes(good)
    assert run_cli(["check", "ridge.py", "--out", "gen"], tmp_path).returncode == 0

    _ridge(tmp_path, name="ridge_renamed")  # the model renamed in its file
    renamed = run_cli(["check", "ridge.py", "--out", "gen"], tmp_path)
    assert renamed.returncode == 1
    assert "missing: gen/ridge_renamed.py" in renamed.stdout
    assert "orphaned: gen/ridge_fit.py" in renamed.stdout
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["ridge_fit.py"]


def test_verify_a_family_from_a_file(tmp_path):
    _ridge(tmp_path)
    done = run_cli(["verify", "ridge.py"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "alpha" in done.stdout and "log_ell" in done.stdout
    assert not (tmp_path / "generated").exists()


def test_a_mean_over_a_sliced_axis_builds_and_verifies(tmp_path):
    (tmp_path / "shrink.py").write_text(SHRINK_FILE)
    done = run_cli(["build", "shrink.py", "--out", "gen"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        "verified" in done.stdout
        and (tmp_path / "gen" / "shrinking_slices.py").exists()
    )
