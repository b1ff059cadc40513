"""Round 33 of new-user models: users porting the forward passes of well-known small
models from the PyTorch code they already have (written as their authors write them:
F.layer_norm, F.conv2d(groups=), masked_fill(-inf), torch.cat, .view/.permute, F.relu6,
F.group_norm, F.cosine_similarity, cross_entropy(ignore_index=-1), ...), with that torch
code in float64 and central finite differences as the judges. Ports: an MLP-Mixer
block (token mixing on the transposed patches, exact GELU), a ConvNeXt block (depthwise
7x7 conv, channels-last LayerNorm eps 1e-6, layer scale, drop path by a keep mask), a
one-level U-Net (max-pool, nearest upsampling by sg.repeat, skip concat, BCE), a VQ-VAE
bottleneck (argmin as sg.argsort(d)[:, 0], codebook gather, commitment loss and the
straight-through estimator by sg.stop_gradient), Transformer-XL relative attention
(u/v biases, the zero-pad / view / slice _rel_shift, causal -inf mask), Swin window
attention (window partition/reverse by 6-D reshapes and transposes, the relative
position bias table gathered by the int64 relative_position_index), a one-layer nanoGPT
LM (bias-free LayerNorm, c_attn split into heads, tril masked_fill, minGPT's NewGELU,
weight tying, ignore_index=-1), a MobileNetV2 inverted residual (1x1 expand, depthwise
3x3, training-mode BatchNorm, ReLU6 as clip), CBAM (channel and spatial attention),
SimCLR's NT-Xent (the UvA tutorial's masked_fill / eye.roll positives), SimSiam's
stop-gradient loss, DeepFM, a highway network, gMLP's spatial gating unit (F.conv1d
over the tokens), AdaIN style transfer (torch's unbiased var as ddof=1), DDPM's
ResnetBlock (GroupNorm, SiLU, time embedding, dropout mask, nin_shortcut) and a
Perceiver block (learned latents cross-attending under a key padding mask). Also:
Hessians and hvp (dense for eight, hvp against torch.autograd.functional.hvp for the
three largest), unrolled code, a batch of one, edges (a fully padded nanoGPT row and
logits of ~300, dead-ReLU 4-way ties in U-Net pooling windows, a repeated DeepFM
feature, saturated highway gates, identical SimCLR views at tau = 0.01, unused VQ
codes), SimCLR over a symbolic batch by sg.stack + reshape, NewGELU typed by hand, and
the porting mistakes these users make with their messages.

Every port agrees with torch to ~1e-9 (value_and_grad, forward + backward, Hessians)
Found and fixed: (1) a wrong gradient from backward(forward(...)[1]) (value_and_grad
was right) whenever a 1x1 conv written as sg.einsum("bchw,oc->bohw") read the output of
another such conv that was then overwritten in place (AdaIN's decoder; the minimal
two-conv residual; a bottleneck conv3x3 -> ReLU -> 1x1 conv; 30 of 256 two-layer chains
of a scratch fuzz): forward cached np.transpose(t3, ...).reshape(...), a view of t3
because t3 inherits the transposed layout of the matmul it came from, then wrote into
t3 (codegen's Emitter.body now keeps an array alive as long as a cached or returned view
of it); symgrad build's verification caught it, so such a model could not be built
without --no-verify; (2) torch spellings that got Python's bare errors now name the fix:
var/std(unbiased=, correction=), sg.argmin / x.argmax, x.flatten(1), sg.layer_norm,
sg.relu6, sg.normalize, sg.arange; (3) torch.cat of two symbolic halves names
sg.stack + reshape; (4) x.transpose(-2, -1) of a 2-D array, NumPy's identity
permutation where torch swaps (unbatched attention with T == head size computed
q @ k), is refused naming x.T.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
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

torch = pytest.importorskip("torch")
F = torch.nn.functional
f64 = torch.float64

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module

# families with sg.stop_gradient: central differences see the derivative it stops (as
# torch's detach does), so they are judged by torch alone
STOPS_GRADIENT = {"vqvae_straight_through", "simsiam_stop_gradient"}


# ------------------------------------------------------------------ shared pieces


def layer_norm(x, w, b=None, eps=1e-5):
    """F.layer_norm over the last axis, as a porting user writes it (biased var)."""
    mu = sg.mean(x, axis=-1, keepdims=True)
    var = sg.var(x, axis=-1, keepdims=True)
    y = (x - mu) / sg.sqrt(var + eps) * w
    return y if b is None else y + b


def batch_norm_train(x, gamma, beta, eps=1e-5):
    """nn.BatchNorm2d in training mode: batch statistics over (N, H, W), biased."""
    mu = sg.mean(x, axis=(0, 2, 3), keepdims=True)
    var = sg.var(x, axis=(0, 2, 3), keepdims=True)
    return (x - mu) / sg.sqrt(var + eps) * gamma[:, None, None] + beta[:, None, None]


def conv2d(x, K, pad):
    """F.conv2d(x, K, padding=pad), stride 1, by the README's recipe."""
    kh, kw = K.shape[2], K.shape[3]
    xp = sg.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
    win = sg.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return sg.einsum("bchwij,ocij->bohw", win, K)


def depthwise2d(x, K, pad):
    """F.conv2d(x, K, padding=pad, groups=C) with K of torch's shape (C, 1, k, k)."""
    k = K.shape[2]
    xp = sg.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sg.sliding_window_view(xp, (k, k), axis=(2, 3))
    return sg.einsum("bchwij,cij->bchw", win, K[:, 0])


def bce_logits(z, y):
    """F.binary_cross_entropy_with_logits, elementwise."""
    return sg.softplus(z) - z * y


# ===================================================================== 1. the ports


@family
def mlp_mixer_block(hessian=False):
    """MLP-Mixer (Tolstikhin et al.): token mixing on the transposed normed patches
    (an MLP over the S tokens, exact GELU), channel mixing on the channels, both
    residual; global average pool over tokens, a linear head, cross-entropy.
    torch: the reference implementation's nn.Sequential blocks, written with F."""
    rng = np.random.default_rng(0)
    S, C, Dt, Dc, K = 4, 3, 5, 6, 3
    m = sg.Model("mlp_mixer_block", hessian=hessian)
    x, y = m.input("x", ("B", S, C)), m.input("y", ("B",), dtype="int64")
    ln1_w, ln1_b = m.param("ln1_w", (C,)), m.param("ln1_b", (C,))
    tW1, tb1 = m.param("tW1", (Dt, S)), m.param("tb1", (Dt,))
    tW2, tb2 = m.param("tW2", (S, Dt)), m.param("tb2", (S,))
    ln2_w, ln2_b = m.param("ln2_w", (C,)), m.param("ln2_b", (C,))
    cW1, cb1 = m.param("cW1", (Dc, C)), m.param("cb1", (Dc,))
    cW2, cb2 = m.param("cW2", (C, Dc)), m.param("cb2", (C,))
    hW, hb = m.param("hW", (K, C)), m.param("hb", (K,))
    t = layer_norm(x, ln1_w, ln1_b).swapaxes(1, 2)  # torch: .transpose(1, 2)
    t = sg.gelu(t @ tW1.T + tb1) @ tW2.T + tb2
    h = x + t.swapaxes(1, 2)
    c = sg.gelu(layer_norm(h, ln2_w, ln2_b) @ cW1.T + cb1) @ cW2.T + cb2
    h = h + c
    logits = m.output("logits", h.mean(axis=1) @ hW.T + hb)
    logp = sg.log_softmax(logits, axis=1)
    m.loss(-sg.mean(sg.take_along_axis(logp, y[:, None], axis=1)))

    def reference(p, i):
        x = i["x"]
        t = F.layer_norm(x, (C,), p["ln1_w"], p["ln1_b"]).transpose(1, 2)
        t = F.linear(F.gelu(F.linear(t, p["tW1"], p["tb1"])), p["tW2"], p["tb2"])
        h = x + t.transpose(1, 2)
        c = F.layer_norm(h, (C,), p["ln2_w"], p["ln2_b"])
        c = F.linear(F.gelu(F.linear(c, p["cW1"], p["cb1"])), p["cW2"], p["cb2"])
        h = h + c
        logits = F.linear(h.mean(dim=1), p["hW"], p["hb"])
        return F.cross_entropy(logits, i["y"]), {"logits": logits}

    params = {
        "ln1_w": 1 + normal(rng, C, scale=0.2),
        "ln1_b": normal(rng, C, scale=0.2),
        "tW1": normal(rng, Dt, S, scale=0.5),
        "tb1": normal(rng, Dt, scale=0.1),
        "tW2": normal(rng, S, Dt, scale=0.5),
        "tb2": normal(rng, S, scale=0.1),
        "ln2_w": 1 + normal(rng, C, scale=0.2),
        "ln2_b": normal(rng, C, scale=0.2),
        "cW1": normal(rng, Dc, C, scale=0.5),
        "cb1": normal(rng, Dc, scale=0.1),
        "cW2": normal(rng, C, Dc, scale=0.5),
        "cb2": normal(rng, C, scale=0.1),
        "hW": normal(rng, K, C, scale=0.5),
        "hb": normal(rng, K, scale=0.1),
    }
    inputs = {"x": normal(rng, 3, S, C), "y": rng.integers(0, K, 3)}
    return m, reference, params, inputs


@family
def convnext_block(hessian=False):
    """A ConvNeXt block (Liu et al. 2022, the official code): depthwise 7x7 conv with
    padding 3 (torch weight (C, 1, 7, 7)), permute to channels-last, LayerNorm eps 1e-6,
    pwconv1 Linear(C, 4C), exact GELU, pwconv2, layer scale gamma, permute back, drop
    path with a per-sample keep mask (timm's x.div(keep_prob) * mask, the mask an input)
    and the residual; an MSE against a target map."""
    rng = np.random.default_rng(1)
    C, H, W = 2, 5, 5
    m = sg.Model("convnext_block", hessian=hessian)
    x, target = m.input("x", ("B", C, H, W)), m.input("target", ("B", C, H, W))
    keep = m.input("keep", ("B",))
    dw, dwb = m.param("dw", (C, 1, 7, 7)), m.param("dwb", (C,))
    ln_w, ln_b = m.param("ln_w", (C,)), m.param("ln_b", (C,))
    W1, b1 = m.param("W1", (4 * C, C)), m.param("b1", (4 * C,))
    W2, b2 = m.param("W2", (C, 4 * C)), m.param("b2", (C,))
    gamma = m.param("gamma", (C,))
    h = depthwise2d(x, dw, 3) + dwb[:, None, None]
    h = h.transpose((0, 2, 3, 1))  # torch: .permute(0, 2, 3, 1)
    h = layer_norm(h, ln_w, ln_b, eps=1e-6)
    h = sg.gelu(h @ W1.T + b1) @ W2.T + b2
    h = (gamma * h).transpose((0, 3, 1, 2))
    out = m.output("out", x + h / 0.75 * keep[:, None, None, None])
    m.loss(sg.sum((out - target) ** 2) / x.shape[0])

    def reference(p, i):
        x = i["x"]
        h = F.conv2d(x, p["dw"], p["dwb"], padding=3, groups=C)
        h = h.permute(0, 2, 3, 1)
        h = F.layer_norm(h, (C,), p["ln_w"], p["ln_b"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, p["W1"], p["b1"])), p["W2"], p["b2"])
        h = (p["gamma"] * h).permute(0, 3, 1, 2)
        out = x + h.div(0.75) * i["keep"][:, None, None, None]
        return ((out - i["target"]) ** 2).sum() / x.shape[0], {"out": out}

    params = {
        "dw": normal(rng, C, 1, 7, 7, scale=0.2),
        "dwb": normal(rng, C, scale=0.1),
        "ln_w": 1 + normal(rng, C, scale=0.2),
        "ln_b": normal(rng, C, scale=0.2),
        "W1": normal(rng, 4 * C, C, scale=0.5),
        "b1": normal(rng, 4 * C, scale=0.1),
        "W2": normal(rng, C, 4 * C, scale=0.5),
        "b2": normal(rng, C, scale=0.1),
        "gamma": np.array([0.5, -0.3]),  # layer scale (1e-6 at init: larger here)
    }
    inputs = {
        "x": normal(rng, 3, C, H, W),
        "target": normal(rng, 3, C, H, W),
        "keep": np.array([1.0, 0.0, 1.0]),
    }
    return m, reference, params, inputs


@family
def unet_down_up(hessian=False):
    """A one-level U-Net: conv3x3 + ReLU (the skip), 2x2 max-pool, conv3x3 + ReLU,
    F.interpolate(scale_factor=2, mode='nearest') by sg.repeat on H and W, torch.cat of
    the upsampled map and the skip on the channel axis, a 1x1 conv to a logit per
    pixel, BCE with logits against a mask."""
    rng = np.random.default_rng(2)
    m = sg.Model("unet_down_up", hessian=hessian)
    x, mask = m.input("x", ("B", 1, 4, 4)), m.input("mask", ("B", 1, 4, 4))
    K1, c1 = m.param("K1", (2, 1, 3, 3)), m.param("c1", (2,))
    K2, c2 = m.param("K2", (2, 2, 3, 3)), m.param("c2", (2,))
    K3, c3 = m.param("K3", (1, 4, 1, 1)), m.param("c3", (1,))
    skip = sg.relu(conv2d(x, K1, 1) + c1[:, None, None])
    down = skip.reshape((-1, 2, 2, 2, 2, 2)).max(axis=(3, 5))
    mid = sg.relu(conv2d(down, K2, 1) + c2[:, None, None])
    up = sg.repeat(sg.repeat(mid, 2, axis=2), 2, axis=3)
    cat = sg.concatenate([up, skip], axis=1)
    logits = m.output("logits", conv2d(cat, K3, 0) + c3[:, None, None])
    m.loss(sg.mean(bce_logits(logits, mask)))

    def reference(p, i):
        skip = F.relu(F.conv2d(i["x"], p["K1"], p["c1"], padding=1))
        down = F.max_pool2d(skip, 2)
        mid = F.relu(F.conv2d(down, p["K2"], p["c2"], padding=1))
        up = F.interpolate(mid, scale_factor=2, mode="nearest")
        cat = torch.cat([up, skip], dim=1)
        logits = F.conv2d(cat, p["K3"], p["c3"])
        loss = F.binary_cross_entropy_with_logits(logits, i["mask"])
        return loss, {"logits": logits}

    params = {
        "K1": normal(rng, 2, 1, 3, 3, scale=0.6),
        "c1": normal(rng, 2, scale=0.1),
        "K2": normal(rng, 2, 2, 3, 3, scale=0.4),
        "c2": np.array([0.3, 0.2]),
        "K3": normal(rng, 1, 4, 1, 1, scale=0.6),
        "c3": normal(rng, 1, scale=0.1),
    }
    inputs = {
        "x": normal(rng, 2, 1, 4, 4),
        "mask": (rng.random((2, 1, 4, 4)) > 0.5).astype(float),
    }
    return m, reference, params, inputs


@family
def vqvae_straight_through(hessian=False):
    """A VQ-VAE bottleneck (van den Oord et al.; the widely copied VectorQuantizer):
    distances |z|^2 + |e|^2 - 2 z e^T, the nearest code by argmin (torch.argmin ->
    sg.argsort(d, axis=1)[:, 0]), z_q = E[idx], the codebook loss mse(z_q, z.detach())
    plus beta * mse(z_q.detach(), z), the straight-through z + (z_q - z).detach() into a
    linear decoder, MSE reconstruction."""
    rng = np.random.default_rng(3)
    D, K, d = 4, 5, 2
    m = sg.Model("vqvae_straight_through", hessian=hessian)
    x = m.input("x", ("B", D))
    We, be = m.param("We", (d, D)), m.param("be", (d,))
    E = m.param("E", (K, d))
    Wd, bd = m.param("Wd", (D, d)), m.param("bd", (D,))
    z = x @ We.T + be
    dist = sg.sum(z**2, axis=1, keepdims=True) + sg.sum(E**2, axis=1) - 2.0 * z @ E.T
    idx = sg.argsort(dist, axis=1)[:, 0]
    zq = E[idx]
    codebook = sg.mean((zq - sg.stop_gradient(z)) ** 2)
    commit = sg.mean((sg.stop_gradient(zq) - z) ** 2)
    zst = z + sg.stop_gradient(zq - z)
    xr = m.output("x_recon", zst @ Wd.T + bd)
    m.loss(sg.mean((xr - x) ** 2) + codebook + 0.25 * commit)

    def reference(p, i):
        z = F.linear(i["x"], p["We"], p["be"])
        E = p["E"]
        dist = (z**2).sum(1, keepdim=True) + (E**2).sum(1) - 2 * z @ E.t()
        idx = torch.argmin(dist, dim=1)
        zq = E[idx]
        loss_vq = F.mse_loss(zq, z.detach()) + 0.25 * F.mse_loss(zq.detach(), z)
        zst = z + (zq - z).detach()
        xr = F.linear(zst, p["Wd"], p["bd"])
        return F.mse_loss(xr, i["x"]) + loss_vq, {"x_recon": xr}

    params = {
        "We": normal(rng, d, D, scale=0.6),
        "be": normal(rng, d, scale=0.1),
        "E": normal(rng, K, d),
        "Wd": normal(rng, D, d, scale=0.6),
        "bd": normal(rng, D, scale=0.1),
    }
    inputs = {"x": normal(rng, 6, D)}
    return m, reference, params, inputs


@family
def transformer_xl_rel_attention(hessian=False):
    """Transformer-XL's relative attention (Dai et al., the official _rel_shift):
    AC = (q + u) k^T, BD = (q + v) R^T with R the projected relative embeddings of
    distances T-1 .. 0, BD shifted by the zero-pad / view(T + 1, T) / [1:] / view(T, T)
    trick, a causal mask masked_fill'ed with -inf (sg: a bool input and -1e30), softmax,
    an output projection, MSE. One head, batch first, no memory."""
    rng = np.random.default_rng(4)
    T, d = 4, 3
    m = sg.Model("transformer_xl_rel_attention", hessian=hessian)
    x, target = m.input("x", ("B", T, d)), m.input("target", ("B", T, d))
    r_emb = m.input("r_emb", (T, d))  # sinusoids of distances T-1 .. 0
    causal = m.input("causal", (T, T), dtype="bool")
    Wq, Wk, Wv = m.param("Wq", (d, d)), m.param("Wk", (d, d)), m.param("Wv", (d, d))
    Wr, Wo = m.param("Wr", (d, d)), m.param("Wo", (d, d))
    u, v = m.param("u", (d,)), m.param("v", (d,))
    q, k, val = x @ Wq.T, x @ Wk.T, x @ Wv.T
    R = r_emb @ Wr.T
    AC = (q + u) @ k.swapaxes(1, 2)
    BD = (q + v) @ R.T  # (B, T, T)
    BD = sg.pad(BD, ((0, 0), (0, 0), (1, 0))).reshape((-1, T + 1, T))
    BD = BD[:, 1:].reshape((-1, T, T))
    score = (AC + BD) / math.sqrt(d)
    att = m.output("att", sg.softmax(sg.where(causal, score, -1e30), axis=-1))
    out = (att @ val) @ Wo.T
    m.loss(sg.mean((out - target) ** 2))

    def _rel_shift(x):
        zero_pad = torch.zeros((*x.shape[:-1], 1), dtype=x.dtype)
        x_padded = torch.cat([zero_pad, x], dim=-1)
        x_padded = x_padded.view(x.shape[0], x.shape[2] + 1, x.shape[1])
        return x_padded[:, 1:].view_as(x)

    def reference(p, i):
        x = i["x"]
        q, k, val = x @ p["Wq"].t(), x @ p["Wk"].t(), x @ p["Wv"].t()
        R = i["r_emb"] @ p["Wr"].t()
        AC = torch.einsum("bid,bjd->bij", q + p["u"], k)
        BD = _rel_shift(torch.einsum("bid,jd->bij", q + p["v"], R))
        score = (AC + BD) / math.sqrt(d)
        score = score.masked_fill(~i["causal"], float("-inf"))
        att = F.softmax(score, dim=-1)
        out = (att @ val) @ p["Wo"].t()
        return F.mse_loss(out, i["target"]), {"att": att}

    pos = np.arange(T - 1, -1, -1.0)
    freq = 1 / 10000 ** (np.arange(d) / d)
    r_emb = np.where(np.arange(d) % 2 == 0, np.sin(pos[:, None] * freq), 0.0)
    r_emb = r_emb + np.where(np.arange(d) % 2 == 1, np.cos(pos[:, None] * freq), 0.0)
    params = {k: normal(rng, d, d, scale=0.5) for k in ("Wq", "Wk", "Wv", "Wr", "Wo")}
    params.update(u=normal(rng, d, scale=0.3), v=normal(rng, d, scale=0.3))
    inputs = {
        "x": normal(rng, 2, T, d),
        "target": normal(rng, 2, T, d),
        "r_emb": r_emb,
        "causal": np.tril(np.ones((T, T), bool)),
    }
    return m, reference, params, inputs


@family
def swin_window_attention(hessian=False):
    """Swin's window attention (Liu et al. 2021, the official code): window_partition
    of a (B, 4, 4, C) map into 2x2 windows by view / permute / view, qkv by one Linear
    reshaped and permuted, scaled q k^T plus the relative position bias gathered from
    the learned ((2w - 1)^2, heads) table by the registered relative_position_index
    buffer (an int64 input), softmax, attn @ v, proj, window_reverse; MSE."""
    rng = np.random.default_rng(5)
    Hs, ws, C, nh = 4, 2, 4, 2
    N, hd = ws * ws, C // nh
    m = sg.Model("swin_window_attention", hessian=hessian)
    x, target = m.input("x", ("B", Hs, Hs, C)), m.input("target", ("B", Hs, Hs, C))
    rpi = m.input("rpi", (N * N,), dtype="int64")
    Wqkv, bqkv = m.param("Wqkv", (3 * C, C)), m.param("bqkv", (3 * C,))
    table = m.param("table", ((2 * ws - 1) ** 2, nh))
    Wp, bp = m.param("Wp", (C, C)), m.param("bp", (C,))
    nw = Hs // ws
    win = x.reshape((-1, nw, ws, nw, ws, C)).transpose((0, 1, 3, 2, 4, 5))
    win = win.reshape((-1, N, C))  # (B * nw * nw, N, C)
    qkv = (win @ Wqkv.T + bqkv).reshape((-1, N, 3, nh, hd)).transpose((2, 0, 3, 1, 4))
    q, k, v = qkv[0] * hd**-0.5, qkv[1], qkv[2]
    bias = table[rpi].reshape((N, N, nh)).transpose((2, 0, 1))
    att = sg.softmax(q @ k.swapaxes(-2, -1) + bias[None], axis=-1)
    o = (att @ v).swapaxes(1, 2).reshape((-1, N, C)) @ Wp.T + bp
    o = o.reshape((-1, nw, nw, ws, ws, C)).transpose((0, 1, 3, 2, 4, 5))
    out = m.output("out", o.reshape((-1, Hs, Hs, C)))
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        x = i["x"]
        B = x.shape[0]
        win = x.view(B, nw, ws, nw, ws, C).permute(0, 1, 3, 2, 4, 5)
        win = win.contiguous().view(-1, N, C)
        B_ = win.shape[0]
        qkv = F.linear(win, p["Wqkv"], p["bqkv"])
        qkv = qkv.reshape(B_, N, 3, nh, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * hd**-0.5, qkv[1], qkv[2]
        att = q @ k.transpose(-2, -1)
        bias = p["table"][i["rpi"].view(-1)].view(N, N, -1)
        att = att + bias.permute(2, 0, 1).contiguous().unsqueeze(0)
        att = att.softmax(dim=-1)
        o = F.linear((att @ v).transpose(1, 2).reshape(B_, N, C), p["Wp"], p["bp"])
        o = o.view(B, nw, nw, ws, ws, C).permute(0, 1, 3, 2, 4, 5)
        out = o.contiguous().view(B, Hs, Hs, C)
        return F.mse_loss(out, i["target"]), {"out": out}

    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel_ = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0) + (ws - 1)
    rpi = (rel_[..., 0] * (2 * ws - 1) + rel_[..., 1]).reshape(-1)
    params = {
        "Wqkv": normal(rng, 3 * C, C, scale=0.5),
        "bqkv": normal(rng, 3 * C, scale=0.1),
        "table": normal(rng, (2 * ws - 1) ** 2, nh, scale=0.5),
        "Wp": normal(rng, C, C, scale=0.5),
        "bp": normal(rng, C, scale=0.1),
    }
    inputs = {
        "x": normal(rng, 2, Hs, Hs, C),
        "target": normal(rng, 2, Hs, Hs, C),
        "rpi": rpi.astype(np.int64),
    }
    return m, reference, params, inputs


@family
def nanogpt_tiny_lm(hessian=False):
    """nanoGPT (Karpathy) at n_layer=1, n_head=2, n_embd=4, vocab 7, block 4, bias=False:
    token + position embeddings, a Block (LayerNorm without bias, CausalSelfAttention by
    c_attn.split, view / transpose into heads, masked_fill(bias == 0, -inf), softmax,
    c_proj; MLP c_fc, GELU, c_proj), ln_f, lm_head tied to wte, cross_entropy with
    ignore_index=-1 (targets with -1 at the padding). GELU as minGPT's NewGELU
    (tanh)."""
    rng = np.random.default_rng(6)
    V, T, C, nh = 7, 4, 4, 2
    hs = C // nh
    m = sg.Model("nanogpt_tiny_lm", hessian=hessian)
    idx = m.input("idx", ("B", T), dtype="int64")
    targets = m.input("targets", ("B", T), dtype="int64")
    tril = m.input("tril", (T, T), dtype="bool")  # the registered "bias" buffer
    wte, wpe = m.param("wte", (V, C)), m.param("wpe", (T, C))
    ln1, ln2, lnf = m.param("ln1", (C,)), m.param("ln2", (C,)), m.param("lnf", (C,))
    c_attn, a_proj = m.param("c_attn", (3 * C, C)), m.param("a_proj", (C, C))
    c_fc, m_proj = m.param("c_fc", (4 * C, C)), m.param("m_proj", (C, 4 * C))
    B = idx.shape[0]
    h = wte[idx] + wpe
    q, k, v = sg.split(layer_norm(h, ln1) @ c_attn.T, 3, axis=2)
    q = q.reshape((B, T, nh, hs)).swapaxes(1, 2)
    k = k.reshape((B, T, nh, hs)).swapaxes(1, 2)
    v = v.reshape((B, T, nh, hs)).swapaxes(1, 2)
    att = (q @ k.swapaxes(-2, -1)) * (1.0 / math.sqrt(hs))
    att = sg.softmax(sg.where(tril, att, -1e30), axis=-1)
    y = (att @ v).swapaxes(1, 2).reshape((B, T, C))
    h = h + y @ a_proj.T
    h = h + sg.gelu(layer_norm(h, ln2) @ c_fc.T, approximate="tanh") @ m_proj.T
    logits = m.output("logits", layer_norm(h, lnf) @ wte.T)
    logp = sg.log_softmax(logits, axis=-1)
    valid = targets != -1
    nll = -sg.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    count = sg.sum(sg.where(valid, 1.0, 0.0))
    m.loss(sg.sum(sg.where(valid, nll, 0.0)) / count)

    def new_gelu(x):
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))
        return 0.5 * x * (1.0 + torch.tanh(inner))

    def reference(p, i):
        idx = i["idx"]
        B, T_ = idx.shape
        h = p["wte"][idx] + p["wpe"][torch.arange(T_)]
        a = F.layer_norm(h, (C,), p["ln1"], None, 1e-5)
        q, k, v = F.linear(a, p["c_attn"]).split(C, dim=2)
        q = q.view(B, T_, nh, hs).transpose(1, 2)
        k = k.view(B, T_, nh, hs).transpose(1, 2)
        v = v.view(B, T_, nh, hs).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(i["tril"][None, None, :T_, :T_] == 0, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(B, T_, C)
        h = h + F.linear(y, p["a_proj"])
        mlp = F.linear(
            new_gelu(F.linear(F.layer_norm(h, (C,), p["ln2"]), p["c_fc"])), p["m_proj"]
        )
        h = h + mlp
        logits = F.linear(F.layer_norm(h, (C,), p["lnf"]), p["wte"])
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)), i["targets"].view(-1), ignore_index=-1
        )
        return loss, {"logits": logits}

    params = {
        "wte": normal(rng, V, C, scale=0.5),
        "wpe": normal(rng, T, C, scale=0.3),
        "ln1": 1 + normal(rng, C, scale=0.2),
        "ln2": 1 + normal(rng, C, scale=0.2),
        "lnf": 1 + normal(rng, C, scale=0.2),
        "c_attn": normal(rng, 3 * C, C, scale=0.5),
        "a_proj": normal(rng, C, C, scale=0.5),
        "c_fc": normal(rng, 4 * C, C, scale=0.5),
        "m_proj": normal(rng, C, 4 * C, scale=0.3),
    }
    tokens = rng.integers(0, V, (3, T + 1))
    targets = tokens[:, 1:].copy()
    targets[0, 2:] = -1  # padding at the end of a short sequence
    targets[2, 3] = -1
    inputs = {
        "idx": tokens[:, :-1],
        "targets": targets,
        "tril": np.tril(np.ones((T, T), bool)),
    }
    return m, reference, params, inputs


@family
def mobilenet_v2_inverted_residual(hessian=False):
    """MobileNetV2's InvertedResidual (torchvision): 1x1 expand conv (no bias) + BN +
    ReLU6, 3x3 depthwise conv (groups = hidden) + BN + ReLU6, 1x1 project + BN, the
    residual; BN in training mode on batch statistics. ReLU6 as x.clip(0, 6) (torch:
    F.relu6, i.e. hardtanh(0, 6)); BN scales large enough that some units pass 6."""
    rng = np.random.default_rng(7)
    C, Hd, S = 2, 6, 4
    m = sg.Model("mobilenet_v2_inverted_residual", hessian=hessian)
    x, target = m.input("x", ("B", C, S, S)), m.input("target", ("B", C, S, S))
    We, Wd, Wp = (
        m.param("We", (Hd, C, 1, 1)),
        m.param("Wd", (Hd, 1, 3, 3)),
        m.param("Wp", (C, Hd, 1, 1)),
    )
    g1, b1 = m.param("g1", (Hd,)), m.param("b1", (Hd,))
    g2, b2 = m.param("g2", (Hd,)), m.param("b2", (Hd,))
    g3, b3 = m.param("g3", (C,)), m.param("b3", (C,))
    h = sg.einsum("bchw,oc->bohw", x, We[:, :, 0, 0])
    h = batch_norm_train(h, g1, b1).clip(0.0, 6.0)
    h = batch_norm_train(depthwise2d(h, Wd, 1), g2, b2).clip(0.0, 6.0)
    h = batch_norm_train(sg.einsum("bchw,oc->bohw", h, Wp[:, :, 0, 0]), g3, b3)
    out = m.output("out", x + h)
    m.loss(sg.mean((out - target) ** 2))

    def bn(h, g, b):
        return F.batch_norm(h, None, None, g, b, training=True)

    def reference(p, i):
        h = F.relu6(bn(F.conv2d(i["x"], p["We"]), p["g1"], p["b1"]))
        h = F.relu6(bn(F.conv2d(h, p["Wd"], padding=1, groups=Hd), p["g2"], p["b2"]))
        h = bn(F.conv2d(h, p["Wp"]), p["g3"], p["b3"])
        out = i["x"] + h
        return F.mse_loss(out, i["target"]), {"out": out}

    params = {
        "We": normal(rng, Hd, C, 1, 1),
        "Wd": normal(rng, Hd, 1, 3, 3, scale=0.5),
        "Wp": normal(rng, C, Hd, 1, 1, scale=0.5),
        "g1": rng.uniform(2.0, 5.0, Hd),
        "b1": normal(rng, Hd, scale=0.5),
        "g2": rng.uniform(2.0, 5.0, Hd),
        "b2": normal(rng, Hd, scale=0.5),
        "g3": 1 + normal(rng, C, scale=0.2),
        "b3": normal(rng, C, scale=0.2),
    }
    inputs = {"x": normal(rng, 3, C, S, S), "target": normal(rng, 3, C, S, S)}
    return m, reference, params, inputs


@family
def cbam_block(hessian=False):
    """CBAM (Woo et al.): channel attention sigmoid(mlp(avgpool) + mlp(maxpool)) with a
    shared bottleneck MLP (1x1 convs, ReLU), then spatial attention sigmoid(conv3x3 of
    cat([mean over C, max over C]))), each multiplied in; a global average pool and a
    linear head, cross-entropy."""
    rng = np.random.default_rng(8)
    C, r, S, K = 4, 2, 4, 3
    m = sg.Model("cbam_block", hessian=hessian)
    x, y = m.input("x", ("B", C, S, S)), m.input("y", ("B",), dtype="int64")
    W1, W2 = m.param("W1", (C // r, C)), m.param("W2", (C, C // r))
    Ks = m.param("Ks", (1, 2, 3, 3))
    hW, hb = m.param("hW", (K, C)), m.param("hb", (K,))

    def mlp(s):
        return sg.relu(s @ W1.T) @ W2.T

    avg, mx = x.mean(axis=(2, 3)), x.max(axis=(2, 3))
    ca = sg.sigmoid(mlp(avg) + mlp(mx))
    h = x * ca[:, :, None, None]
    pooled = sg.concatenate(
        [h.mean(axis=1, keepdims=True), h.max(axis=1, keepdims=True)], axis=1
    )
    h = h * sg.sigmoid(conv2d(pooled, Ks, 1))
    logits = m.output("logits", h.mean(axis=(2, 3)) @ hW.T + hb)
    m.loss(-sg.mean(sg.take_along_axis(sg.log_softmax(logits, axis=1), y[:, None], 1)))

    def reference(p, i):
        x = i["x"]

        def mlp(s):
            s = F.conv2d(
                F.relu(F.conv2d(s, p["W1"][:, :, None, None])),
                p["W2"][:, :, None, None],
            )
            return s

        ca = torch.sigmoid(
            mlp(F.adaptive_avg_pool2d(x, 1)) + mlp(F.adaptive_max_pool2d(x, 1))
        )
        h = x * ca
        pooled = torch.cat(
            [torch.mean(h, dim=1, keepdim=True), torch.max(h, dim=1, keepdim=True)[0]],
            dim=1,
        )
        h = h * torch.sigmoid(F.conv2d(pooled, p["Ks"], padding=1))
        logits = F.linear(h.mean(dim=(2, 3)), p["hW"], p["hb"])
        return F.cross_entropy(logits, i["y"]), {"logits": logits}

    params = {
        "W1": normal(rng, C // r, C, scale=0.6),
        "W2": normal(rng, C, C // r, scale=0.6),
        "Ks": normal(rng, 1, 2, 3, 3, scale=0.5),
        "hW": normal(rng, K, C, scale=0.6),
        "hb": normal(rng, K, scale=0.1),
    }
    inputs = {"x": normal(rng, 2, C, S, S), "y": rng.integers(0, K, 2)}
    return m, reference, params, inputs


@family
def simclr_nt_xent(hessian=False):
    """SimCLR's NT-Xent (the UvA deep-learning tutorial's info_nce_loss): a projection
    MLP of two views, cosine similarities of all 2N against all 2N over tau, the self
    pairs masked_fill'ed with -9e15, the positives where eye.roll(N) is set, nll =
    -sim[pos] + logsumexp(sim). N fixed (a torch.cat of two symbolic halves is
    refused, below)."""
    rng = np.random.default_rng(9)
    N, D, P = 3, 4, 3
    m = sg.Model("simclr_nt_xent", hessian=hessian)
    x1, x2 = m.input("x1", (N, D)), m.input("x2", (N, D))
    W1, b1 = m.param("W1", (D, D)), m.param("b1", (D,))
    W2 = m.param("W2", (P, D))
    log_tau = m.param("log_tau", ())

    def g(x):
        return sg.relu(x @ W1.T + b1) @ W2.T

    z = sg.concatenate([g(x1), g(x2)], axis=0)
    z = z / sg.maximum(sg.norm(z, axis=1, keepdims=True), 1e-8)  # cosine_similarity
    sim = z @ z.T / sg.exp(log_tau)
    eye = sg.eye(2 * N)
    sim = sg.where(eye > 0.5, -9e15, sim)
    pos = sg.roll(eye, N, axis=0) > 0.5
    nll = -sg.sum(sg.where(pos, sim, 0.0), axis=1) + sg.logsumexp(sim, axis=1)
    m.loss(sg.mean(nll))

    def reference(p, i):
        def g(x):
            return F.linear(F.relu(F.linear(x, p["W1"], p["b1"])), p["W2"])

        feats = torch.cat([g(i["x1"]), g(i["x2"])], dim=0)
        sim = F.cosine_similarity(feats[:, None, :], feats[None, :, :], dim=-1)
        sim = sim / torch.exp(p["log_tau"])
        self_mask = torch.eye(sim.shape[0], dtype=torch.bool)
        sim = sim.masked_fill(self_mask, -9e15)
        pos_mask = self_mask.roll(shifts=sim.shape[0] // 2, dims=0)
        nll = -sim[pos_mask] + torch.logsumexp(sim, dim=-1)
        return nll.mean(), {}

    params = {
        "W1": normal(rng, D, D, scale=0.6),
        "b1": normal(rng, D, scale=0.3),
        "W2": normal(rng, P, D, scale=0.6),
        "log_tau": np.array(math.log(0.5)),
    }
    x = normal(rng, N, D)
    inputs = {
        "x1": x + normal(rng, N, D, scale=0.3),
        "x2": x + normal(rng, N, D, scale=0.3),
    }
    return m, reference, params, inputs


@family
def simsiam_stop_gradient(hessian=False):
    """SimSiam (Chen & He): an encoder f and a predictor h on two views, the symmetric
    negative cosine D(p1, z2.detach()) / 2 + D(p2, z1.detach()) / 2, D with
    F.cosine_similarity(dim=-1).mean(). Symbolic batch."""
    rng = np.random.default_rng(10)
    D, Z = 4, 3
    m = sg.Model("simsiam_stop_gradient", hessian=hessian)
    x1, x2 = m.input("x1", ("B", D)), m.input("x2", ("B", D))
    Wf, bf = m.param("Wf", (Z, D)), m.param("bf", (Z,))
    Wh1, Wh2 = m.param("Wh1", (Z, Z)), m.param("Wh2", (Z, Z))

    def f(x):
        return sg.tanh(x @ Wf.T + bf)

    def h(z):
        return sg.relu(z @ Wh1.T) @ Wh2.T

    def D_(p, z):
        pn = p / sg.maximum(sg.norm(p, axis=-1, keepdims=True), 1e-8)
        zn = z / sg.maximum(sg.norm(z, axis=-1, keepdims=True), 1e-8)
        return -sg.mean(sg.sum(pn * sg.stop_gradient(zn), axis=-1))

    z1, z2 = f(x1), f(x2)
    m.loss(0.5 * D_(h(z1), z2) + 0.5 * D_(h(z2), z1))

    def reference(p, i):
        def f(x):
            return torch.tanh(F.linear(x, p["Wf"], p["bf"]))

        def h(z):
            return F.linear(F.relu(F.linear(z, p["Wh1"])), p["Wh2"])

        def D_(p_, z):
            return -F.cosine_similarity(p_, z.detach(), dim=-1).mean()

        z1, z2 = f(i["x1"]), f(i["x2"])
        return 0.5 * D_(h(z1), z2) + 0.5 * D_(h(z2), z1), {}

    params = {
        "Wf": normal(rng, Z, D, scale=0.6),
        "bf": normal(rng, Z, scale=0.2),
        "Wh1": normal(rng, Z, Z, scale=0.7),
        "Wh2": normal(rng, Z, Z, scale=0.7),
    }
    x = normal(rng, 5, D)
    inputs = {
        "x1": x + normal(rng, 5, D, scale=0.2),
        "x2": x + normal(rng, 5, D, scale=0.2),
    }
    return m, reference, params, inputs


@family
def deepfm_ctr(hessian=False):
    """DeepFM (Guo et al.) on F = 3 categorical fields sharing one table by offsets:
    first order w[idx].sum + bias, the FM term 0.5 ((sum_f v)^2 - sum_f v^2).sum(1),
    a deep part on the flattened field embeddings (Linear, ReLU, Linear), the three
    logits added, BCE with logits."""
    rng = np.random.default_rng(11)
    Fn, V, k, Hd = 3, 9, 2, 4
    m = sg.Model("deepfm_ctr", hessian=hessian)
    idx, y = m.input("idx", ("B", Fn), dtype="int64"), m.input("y", ("B",))
    w, bias = m.param("w", (V,)), m.param("bias", ())
    Vt = m.param("Vt", (V, k))
    W1, b1 = m.param("W1", (Hd, Fn * k)), m.param("b1", (Hd,))
    W2 = m.param("W2", (1, Hd))
    first = sg.sum(w[idx], axis=1) + bias
    e = Vt[idx]  # (B, F, k)
    fm = 0.5 * sg.sum(sg.sum(e, axis=1) ** 2 - sg.sum(e**2, axis=1), axis=1)
    deep = (sg.relu(e.reshape((-1, Fn * k)) @ W1.T + b1) @ W2.T)[:, 0]
    logit = m.output("logit", first + fm + deep)
    m.loss(sg.mean(bce_logits(logit, y)))

    def reference(p, i):
        idx = i["idx"]
        first = p["w"][idx].sum(1) + p["bias"]
        e = p["Vt"][idx]
        fm = 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1)
        deep = F.linear(F.relu(F.linear(e.flatten(1), p["W1"], p["b1"])), p["W2"])
        logit = first + fm + deep.squeeze(1)
        return F.binary_cross_entropy_with_logits(logit, i["y"]), {"logit": logit}

    params = {
        "w": normal(rng, V, scale=0.3),
        "bias": np.array(0.1),
        "Vt": normal(rng, V, k, scale=0.5),
        "W1": normal(rng, Hd, Fn * k, scale=0.5),
        "b1": normal(rng, Hd, scale=0.2),
        "W2": normal(rng, 1, Hd, scale=0.5),
    }
    offsets = np.array([0, 3, 6])
    inputs = {
        "idx": rng.integers(0, 3, (4, Fn)) + offsets,
        "y": (rng.random(4) > 0.5).astype(float),
    }
    return m, reference, params, inputs


@family
def highway_network(hessian=False):
    """Highway layers (Srivastava et al.), two of them: H = relu(W_h x + b_h), the
    transform gate T = sigmoid(W_t x + b_t) (b_t started at -2), y = H T + x (1 - T);
    a linear regression head, MSE."""
    rng = np.random.default_rng(12)
    d = 2
    m = sg.Model("highway_network", hessian=hessian)
    x, t = m.input("x", ("B", d)), m.input("t", ("B",))
    layers = [
        tuple(
            m.param(f"{n}{j}", s)
            for n, s in (("Wh", (d, d)), ("bh", (d,)), ("Wt", (d, d)), ("bt", (d,)))
        )
        for j in range(2)
    ]
    w, c = m.param("w", (d,)), m.param("c", ())
    h = x
    for Wh, bh, Wt, bt in layers:
        T = sg.sigmoid(h @ Wt.T + bt)
        h = sg.relu(h @ Wh.T + bh) * T + h * (1.0 - T)
    pred = m.output("pred", h @ w + c)
    m.loss(sg.mean((pred - t) ** 2))

    def reference(p, i):
        h = i["x"]
        for j in range(2):
            T = torch.sigmoid(F.linear(h, p[f"Wt{j}"], p[f"bt{j}"]))
            h = F.relu(F.linear(h, p[f"Wh{j}"], p[f"bh{j}"])) * T + h * (1 - T)
        pred = h @ p["w"] + p["c"]
        return F.mse_loss(pred, i["t"]), {"pred": pred}

    params = {}
    for j in range(2):
        params.update(
            {
                f"Wh{j}": normal(rng, d, d),
                f"bh{j}": normal(rng, d, scale=0.3),
                f"Wt{j}": normal(rng, d, d),
                f"bt{j}": np.full(d, -2.0) + normal(rng, d, scale=0.3),
            }
        )
    params.update(w=normal(rng, d), c=np.array(0.2))
    inputs = {"x": normal(rng, 3, d), "t": normal(rng, 3)}
    return m, reference, params, inputs


@family
def gmlp_spatial_gating(hessian=False):
    """gMLP (Liu et al. 2021; lucidrains' g-mlp-pytorch): LayerNorm, proj_in + GELU,
    chunk(2, dim=-1) into res and gate, the gate LayerNormed and mixed over the n tokens
    by F.conv1d(gate, weight, bias) with the tokens as channels (kernel 1: an einsum
    over the token axis), res * gate, proj_out, residual; MSE."""
    rng = np.random.default_rng(13)
    n, d, dff = 4, 3, 4
    m = sg.Model("gmlp_spatial_gating", hessian=hessian)
    x, target = m.input("x", ("B", n, d)), m.input("target", ("B", n, d))
    ln_w, ln_b = m.param("ln_w", (d,)), m.param("ln_b", (d,))
    Win, bin_ = m.param("Win", (dff, d)), m.param("b_in", (dff,))
    gln_w, gln_b = m.param("gln_w", (dff // 2,)), m.param("gln_b", (dff // 2,))
    Ws, bs = m.param("Ws", (n, n, 1)), m.param("bs", (n,))
    Wout, bout = m.param("Wout", (d, dff // 2)), m.param("bout", (d,))
    h = sg.gelu(layer_norm(x, ln_w, ln_b) @ Win.T + bin_)
    res, gate = sg.split(h, 2, axis=-1)
    gate = layer_norm(gate, gln_w, gln_b)
    gate = sg.einsum("ij,bjd->bid", Ws[:, :, 0], gate) + bs[:, None]
    out = m.output("out", x + (res * gate) @ Wout.T + bout)
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        x = i["x"]
        h = F.gelu(
            F.linear(F.layer_norm(x, (d,), p["ln_w"], p["ln_b"]), p["Win"], p["b_in"])
        )
        res, gate = h.chunk(2, dim=-1)
        gate = F.layer_norm(gate, (dff // 2,), p["gln_w"], p["gln_b"])
        gate = F.conv1d(gate, p["Ws"], p["bs"])
        out = x + F.linear(res * gate, p["Wout"], p["bout"])
        return F.mse_loss(out, i["target"]), {"out": out}

    params = {
        "ln_w": 1 + normal(rng, d, scale=0.2),
        "ln_b": normal(rng, d, scale=0.2),
        "Win": normal(rng, dff, d, scale=0.6),
        "b_in": normal(rng, dff, scale=0.2),
        "gln_w": 1 + normal(rng, dff // 2, scale=0.2),
        "gln_b": normal(rng, dff // 2, scale=0.2),
        "Ws": normal(rng, n, n, 1, scale=0.3),
        "bs": 1 + normal(rng, n, scale=0.1),
        "Wout": normal(rng, d, dff // 2, scale=0.6),
        "bout": normal(rng, d, scale=0.2),
    }
    inputs = {"x": normal(rng, 2, n, d), "target": normal(rng, 2, n, d)}
    return m, reference, params, inputs


@family
def adain_style_transfer(hessian=False):
    """AdaIN (Huang & Belongie; the naoto0804 pytorch-AdaIN code): calc_mean_std with
    feat.view(N, C, -1).var(dim=2) + eps, torch's UNBIASED variance (sg: ddof=1), the
    content features renormalised to the style statistics, a 1x1 decoder conv; the
    content loss against the AdaIN target and the style loss on means and stds of the
    decoded features. Encoder: a learned 1x1 conv + ReLU shared by content and style."""
    rng = np.random.default_rng(14)
    C0, C, S = 2, 3, 3
    m = sg.Model("adain_style_transfer", hessian=hessian)
    content, style = m.input("content", ("B", C0, S, S)), m.input(
        "style", ("B", C0, S, S)
    )
    We, be = m.param("We", (C, C0)), m.param("be", (C,))
    Wd, bd = m.param("Wd", (C, C)), m.param("bd", (C,))

    def enc(x):
        return sg.relu(sg.einsum("bchw,oc->bohw", x, We) + be[:, None, None])

    def mean_std(f, eps=1e-5):
        flat = f.reshape((-1, C, S * S))
        var = sg.var(flat, axis=2, ddof=1) + eps
        return flat.mean(axis=2)[:, :, None, None], sg.sqrt(var)[:, :, None, None]

    fc, fs = enc(content), enc(style)
    mc, sc = mean_std(fc)
    ms, ss = mean_std(fs)
    t = (fc - mc) / sc * ss + ms
    g = sg.einsum("bchw,oc->bohw", t, Wd) + bd[:, None, None]
    mg, sgd = mean_std(g)
    loss_c = sg.mean((g - t) ** 2)
    loss_s = sg.mean((mg - ms) ** 2) + sg.mean((sgd - ss) ** 2)
    m.loss(loss_c + 10.0 * loss_s)

    def calc_mean_std(feat, eps=1e-5):
        N, Cc = feat.size()[:2]
        feat_var = feat.view(N, Cc, -1).var(dim=2) + eps
        feat_std = feat_var.sqrt().view(N, Cc, 1, 1)
        feat_mean = feat.view(N, Cc, -1).mean(dim=2).view(N, Cc, 1, 1)
        return feat_mean, feat_std

    def reference(p, i):
        def enc(x):
            return F.relu(F.conv2d(x, p["We"][:, :, None, None], p["be"]))

        fc, fs = enc(i["content"]), enc(i["style"])
        mc, sc = calc_mean_std(fc)
        ms, ss = calc_mean_std(fs)
        t = (fc - mc.expand(fc.size())) / sc.expand(fc.size()) * ss + ms
        g = F.conv2d(t, p["Wd"][:, :, None, None], p["bd"])
        mg, sg_ = calc_mean_std(g)
        loss_c = F.mse_loss(g, t)
        loss_s = F.mse_loss(mg, ms) + F.mse_loss(sg_, ss)
        return loss_c + 10.0 * loss_s, {}

    params = {
        "We": normal(rng, C, C0),
        "be": np.array([0.5, 0.4, 0.6]),
        "Wd": np.eye(C) + normal(rng, C, C, scale=0.3),
        "bd": normal(rng, C, scale=0.1),
    }
    inputs = {
        "content": normal(rng, 2, C0, S, S),
        "style": normal(rng, 2, C0, S, S, scale=2.0),
    }
    return m, reference, params, inputs


@family
def ddpm_resblock(hessian=False):
    """The ResnetBlock of DDPM's UNet (Ho et al.; the diffusers / pytorch port):
    GroupNorm(2 groups) + SiLU + conv3x3, plus the projected sinusoidal time embedding
    (Linear of SiLU(temb)) broadcast over H and W, GroupNorm + SiLU + dropout (a mask
    input, scaled by 1 / (1 - p)) + conv3x3, and a 1x1 nin_shortcut for the channel
    change 2 -> 4. GroupNorm by a reshape to (B, G, C / G * H * W)."""
    rng = np.random.default_rng(15)
    Ci, Co, S, Tm = 2, 4, 4, 3
    m = sg.Model("ddpm_resblock", hessian=hessian)
    x, target = m.input("x", ("B", Ci, S, S)), m.input("target", ("B", Co, S, S))
    temb, drop = m.input("temb", ("B", Tm)), m.input("drop", ("B", Co, S, S))
    n1w, n1b = m.param("n1w", (Ci,)), m.param("n1b", (Ci,))
    K1, c1 = m.param("K1", (Co, Ci, 3, 3)), m.param("c1", (Co,))
    Wt, bt = m.param("Wt", (Co, Tm)), m.param("bt", (Co,))
    n2w, n2b = m.param("n2w", (Co,)), m.param("n2b", (Co,))
    K2, c2 = m.param("K2", (Co, Co, 3, 3)), m.param("c2", (Co,))
    Ks, cs = m.param("Ks", (Co, Ci, 1, 1)), m.param("cs", (Co,))

    def group_norm(h, w, b, C, G=2, eps=1e-6):
        g = h.reshape((-1, G, C // G * S * S))
        g = (g - g.mean(axis=2, keepdims=True)) / sg.sqrt(
            sg.var(g, axis=2, keepdims=True) + eps
        )
        return g.reshape((-1, C, S, S)) * w[:, None, None] + b[:, None, None]

    h = sg.silu(group_norm(x, n1w, n1b, Ci))
    h = conv2d(h, K1, 1) + c1[:, None, None]
    h = h + (sg.silu(temb) @ Wt.T + bt)[:, :, None, None]
    h = sg.silu(group_norm(h, n2w, n2b, Co)) * drop / 0.9
    h = conv2d(h, K2, 1) + c2[:, None, None]
    out = m.output("out", conv2d(x, Ks, 0) + cs[:, None, None] + h)
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        x = i["x"]
        h = F.silu(F.group_norm(x, 2, p["n1w"], p["n1b"], eps=1e-6))
        h = F.conv2d(h, p["K1"], p["c1"], padding=1)
        h = h + F.linear(F.silu(i["temb"]), p["Wt"], p["bt"])[:, :, None, None]
        h = F.silu(F.group_norm(h, 2, p["n2w"], p["n2b"], eps=1e-6))
        h = h * i["drop"] / 0.9  # F.dropout(h, 0.1) with its mask fixed
        h = F.conv2d(h, p["K2"], p["c2"], padding=1)
        out = F.conv2d(x, p["Ks"], p["cs"]) + h
        return F.mse_loss(out, i["target"]), {"out": out}

    params = {
        "n1w": 1 + normal(rng, Ci, scale=0.2),
        "n1b": normal(rng, Ci, scale=0.2),
        "K1": normal(rng, Co, Ci, 3, 3, scale=0.3),
        "c1": normal(rng, Co, scale=0.1),
        "Wt": normal(rng, Co, Tm, scale=0.5),
        "bt": normal(rng, Co, scale=0.1),
        "n2w": 1 + normal(rng, Co, scale=0.2),
        "n2b": normal(rng, Co, scale=0.2),
        "K2": normal(rng, Co, Co, 3, 3, scale=0.2),
        "c2": normal(rng, Co, scale=0.1),
        "Ks": normal(rng, Co, Ci, 1, 1, scale=0.5),
        "cs": normal(rng, Co, scale=0.1),
    }
    t = np.array([3.0, 40.0])[:, None] * np.exp(-np.log(1e4) * np.arange(Tm) / Tm)
    inputs = {
        "x": normal(rng, 2, Ci, S, S),
        "target": normal(rng, 2, Co, S, S),
        "temb": np.sin(t),
        "drop": (rng.random((2, Co, S, S)) > 0.1).astype(float),
    }
    return m, reference, params, inputs


@family
def perceiver_cross_attention(hessian=False):
    """A Perceiver block (Jaegle et al.; lucidrains' perceiver-pytorch): a learned latent
    array (L, d) cross-attends to the LayerNormed inputs (B, M, d) under a key padding
    mask (masked_fill(~mask, -finfo.max) -> sg.where with -1e30), repeat(latents, 'n d
    -> b n d') by broadcasting, then one latent self-attention with residuals, mean
    over latents, a linear regression head."""
    rng = np.random.default_rng(16)
    L, d, M = 2, 3, 5
    m = sg.Model("perceiver_cross_attention", hessian=hessian)
    x, y = m.input("x", ("B", M, d)), m.input("y", ("B",))
    mask = m.input("mask", ("B", M), dtype="bool")
    lat = m.param("lat", (L, d))
    ln_w, ln_b = m.param("ln_w", (d,)), m.param("ln_b", (d,))
    Wq, Wkv, Wo = (
        m.param("Wq", (d, d)),
        m.param("Wkv", (2 * d, d)),
        m.param("Wo", (d, d)),
    )
    Sq, Sk, Sv = m.param("Sq", (d, d)), m.param("Sk", (d, d)), m.param("Sv", (d, d))
    w, c = m.param("w", (d,)), m.param("c", ())
    ctx = layer_norm(x, ln_w, ln_b)
    q = lat @ Wq.T  # (L, d): the same for every sample
    k, v = sg.split(ctx @ Wkv.T, 2, axis=-1)
    sim = sg.einsum("id,bjd->bij", q, k) * d**-0.5
    sim = sg.where(mask[:, None, :], sim, -1e30)
    h = sg.einsum("bij,bjd->bid", sg.softmax(sim, axis=-1), v) @ Wo.T + lat
    a = sg.softmax((h @ Sq.T) @ (h @ Sk.T).swapaxes(1, 2) * d**-0.5, axis=-1)
    h = h + a @ (h @ Sv.T)
    pred = m.output("pred", h.mean(axis=1) @ w + c)
    m.loss(sg.mean((pred - y) ** 2))

    def reference(p, i):
        x = i["x"]
        B = x.shape[0]
        lat = p["lat"].unsqueeze(0).expand(B, -1, -1)
        ctx = F.layer_norm(x, (d,), p["ln_w"], p["ln_b"])
        q = lat @ p["Wq"].T
        k, v = (ctx @ p["Wkv"].T).chunk(2, dim=-1)
        sim = torch.einsum("bid,bjd->bij", q, k) * d**-0.5
        sim = sim.masked_fill(~i["mask"][:, None, :], -torch.finfo(sim.dtype).max)
        h = torch.einsum("bij,bjd->bid", sim.softmax(dim=-1), v) @ p["Wo"].T + lat
        a = ((h @ p["Sq"].T) @ (h @ p["Sk"].T).transpose(1, 2) * d**-0.5).softmax(-1)
        h = h + a @ (h @ p["Sv"].T)
        pred = h.mean(dim=1) @ p["w"] + p["c"]
        return F.mse_loss(pred, i["y"]), {"pred": pred}

    params = {
        "lat": normal(rng, L, d),
        "ln_w": 1 + normal(rng, d, scale=0.2),
        "ln_b": normal(rng, d, scale=0.2),
        "Wq": normal(rng, d, d, scale=0.6),
        "Wkv": normal(rng, 2 * d, d, scale=0.6),
        "Wo": normal(rng, d, d, scale=0.6),
        "Sq": normal(rng, d, d, scale=0.6),
        "Sk": normal(rng, d, d, scale=0.6),
        "Sv": normal(rng, d, d, scale=0.6),
        "w": normal(rng, d),
        "c": np.array(0.1),
    }
    mask = np.ones((3, M), bool)
    mask[1, 3:] = False  # a shorter input set
    mask[2, 1:] = False  # a single element
    inputs = {"x": normal(rng, 3, M, d), "y": normal(rng, 3), "mask": mask}
    return m, reference, params, inputs


# ===================================================================== 2. agreement

HESSIAN_FAMILIES = [
    "mlp_mixer_block",
    "transformer_xl_rel_attention",
    "highway_network",
    "deepfm_ctr",
    "gmlp_spatial_gating",
    "simclr_nt_xent",
    "adain_style_transfer",
    "perceiver_cross_attention",
]
UNROLLED = ["highway_network", "deepfm_ctr", "mlp_mixer_block"]


_ALIAS = (
    "codegen in-place reuse (symgrad/codegen.py liveness, VIEWS): forward caches "
    "t4 = np.transpose(t3, (0, 2, 3, 1)).reshape(...) for backward, assuming it is a "
    "copy, then writes the residual into t3 in place (np.subtract(..., out=t3)); t3 is a "
    "ufunc result laid out like the transposed matmul it came from (NumPy's K order), so "
    "the transpose + reshape is a VIEW of t3 and backward reads the clobbered values: "
    "backward(forward(...)[1]) gives a wrong grad of the second 1x1 conv (value_and_grad "
    "is right): the operand statement the einsum's matmul (contractions.py) gets is "
    "not tracked as a possible view of t3. Repro: u = sg.einsum('bchw,oc->bohw', x, A) + 1.0; g = "
    "sg.einsum('bchw,oc->bohw', u, Wd); m.loss(sg.sum((g - u) ** 2))"
)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_port_agrees_with_pytorch_and_central_differences(name):
    if name in STOPS_GRADIENT:
        _, reference, params, inputs = FAMILIES[name]()
        check(module_of(name), reference, params, inputs)
    else:
        FAMILIES.assert_agrees(name)


@pytest.mark.parametrize("name", list(HESSIAN_FAMILIES))
def test_port_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


@pytest.mark.parametrize("name", UNROLLED)
def test_port_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


def _torch_hvp(reference, params, inputs, v):
    names = list(params)
    tinputs = {k: torch.tensor(x) for k, x in inputs.items()}

    def loss(*flat):
        return reference(dict(zip(names, flat, strict=True)), tinputs)[0]

    primals = tuple(torch.tensor(np.asarray(params[k], float)) for k in names)
    tangents = tuple(torch.tensor(v[k]) for k in names)
    _, hv = torch.autograd.functional.hvp(loss, primals, tangents)
    return dict(zip(names, (h.numpy() for h in hv), strict=True))


@pytest.mark.parametrize(
    "name", ["nanogpt_tiny_lm", "swin_window_attention", "ddpm_resblock"]
)
def test_hvp_of_the_larger_ports_agrees_with_torchs_double_backward(name):
    """Too many parameters for a dense Hessian per test: hvp in two random
    directions against torch.autograd.functional.hvp."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
    rng = np.random.default_rng(7)
    for _ in range(2):
        v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
        expected = _torch_hvp(reference, params, inputs, v)
        got = module.hvp(params, inputs, v)
        scale = max(np.max(np.abs(e)) for e in expected.values())
        for k in params:
            assert rel(got[k], expected[k], 1e-3 * scale) <= 1e-8, k


def test_adain_value_and_grad_alone_agrees_with_pytorch_and_central_differences():
    """The fused path of the AdaIN port is right (only forward + backward is not)."""
    _, reference, params, inputs = FAMILIES["adain_style_transfer"]()
    module = module_of("adain_style_transfer")
    expected_loss, _, expected = torch_twin(reference, params, inputs)
    loss, grads = module.value_and_grad(params, inputs)
    assert rel(loss, expected_loss) <= 1e-12
    for k in params:
        assert rel(grads[k], expected[k]) <= 1e-9, k
    assert_matches_central_differences(module, params, inputs)


def _alias_model():
    m = sg.Model("conv1x1_on_conv1x1_residual")
    x = m.input("x", ("B", 2, 2, 2))
    A, Wd = m.param("A", (2, 2)), m.param("Wd", (2, 2))
    u = sg.einsum("bchw,oc->bohw", x, A) + 1.0
    g = sg.einsum("bchw,oc->bohw", u, Wd)
    m.loss(sg.sum((g - u) ** 2))

    def reference(p, i):
        u = F.conv2d(i["x"], p["A"][:, :, None, None]) + 1.0
        g = F.conv2d(u, p["Wd"][:, :, None, None])
        return ((g - u) ** 2).sum(), {}

    rng = np.random.default_rng(0)
    params = {"A": normal(rng, 2, 2), "Wd": normal(rng, 2, 2)}
    return m, reference, params, {"x": normal(rng, 3, 2, 2, 2)}


def test_two_stacked_1x1_convs_with_a_residual_backward_matches_torch():
    """The minimal form of the AdaIN failure: forward + backward(cache) against torch
    (check compares both paths)."""
    m, reference, params, inputs = _alias_model()
    module = compile_module(m)
    _, fused = module.value_and_grad(params, inputs)
    _, cache = module.forward(params, inputs)
    split = module.backward(cache)
    _, _, expected = torch_twin(reference, params, inputs)
    assert rel(fused["Wd"], expected["Wd"]) <= 1e-12  # the fused path is right
    assert rel(split["Wd"], expected["Wd"]) <= 1e-9


@pytest.mark.parametrize(
    "loss",
    [
        lambda u, g: sg.sum(sg.tanh(g + u)),  # a residual inside a nonlinearity
        lambda u, g: sg.sum(g**2) + sg.sum(u**3),  # no residual: u's own term
    ],
    ids=["tanh_of_residual", "separate_terms"],
)
def test_other_losses_on_two_stacked_1x1_convs_backward_is_right(loss):
    m = sg.Model("stacked_1x1")
    x = m.input("x", ("B", 2, 3, 3))
    A, W = m.param("A", (2, 2)), m.param("W", (2, 2))
    u = sg.einsum("bchw,oc->bohw", x, A) + 1.0
    m.loss(loss(u, sg.einsum("bchw,oc->bohw", u, W)))
    module = compile_module(m)
    rng = np.random.default_rng(1)
    params = {"A": normal(rng, 2, 2, scale=0.5), "W": normal(rng, 2, 2, scale=0.5)}
    inputs = {"x": normal(rng, 2, 2, 3, 3)}
    _, fused = module.value_and_grad(params, inputs)
    split = module.backward(module.forward(params, inputs)[1])
    assert_matches_central_differences(module, params, inputs)  # the fused path
    for k in params:
        assert rel(split[k], fused[k]) <= 1e-12, k


@pytest.mark.parametrize("first", ["conv3x3", "channels_last_linear"])
def test_a_1x1_conv_after_a_conv_and_relu_backward_matches_torch(first):
    """The bottleneck pattern conv3x3 (or a Linear on channels-last, permuted back) ->
    ReLU -> 1x1 conv, with a residual to the ReLU's output: a scratch fuzz of 256 such
    two-layer chains found forward + backward wrong in 30, always with the 1x1 conv
    (einsum "bchw,oc->bohw") second, value_and_grad right in all."""
    m = sg.Model("bottleneck_1x1")
    x = m.input("x", ("B", 2, 3, 3))
    A, W = m.param("A", (2, 2, 3, 3) if first == "conv3x3" else (2, 2)), m.param(
        "W", (2, 2)
    )
    if first == "conv3x3":
        h = conv2d(x, A, 1)
    else:
        h = (x.transpose((0, 2, 3, 1)) @ A.T).transpose((0, 3, 1, 2))
    u = sg.relu(h)
    g = sg.einsum("bchw,oc->bohw", u, W)
    m.loss(sg.sum((g - u) ** 2))

    def reference(p, i):
        if first == "conv3x3":
            h = F.conv2d(i["x"], p["A"], padding=1)
        else:
            h = F.linear(i["x"].permute(0, 2, 3, 1), p["A"]).permute(0, 3, 1, 2)
        u = F.relu(h)
        return ((F.conv2d(u, p["W"][:, :, None, None]) - u) ** 2).sum(), {}

    rng = np.random.default_rng(2)
    params = {"A": normal(rng, *A.shape, scale=0.5), "W": normal(rng, 2, 2, scale=0.5)}
    check(compile_module(m), reference, params, {"x": normal(rng, 2, 2, 3, 3)})


ALIAS_FILE = """
import symgrad as sg


def build():
    m = sg.Model("stacked_1x1")
    x = m.input("x", ("B", 2, 2, 2))
    A, Wd = m.param("A", (2, 2)), m.param("Wd", (2, 2))
    u = sg.einsum("bchw,oc->bohw", x, A) + 1.0
    g = sg.einsum("bchw,oc->bohw", u, Wd)
    m.loss(sg.sum((g - u) ** 2))
    return m
"""


def test_symgrad_build_of_stacked_1x1_convs_verifies(tmp_path):
    (tmp_path / "stacked.py").write_text(ALIAS_FILE)
    done = run_cli(["build", "stacked.py", "--out", "gen"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "gen" / "stacked_1x1.py").exists()


# ===================================================================== 3. other sizes

BATCHED = [
    n
    for n in FAMILIES
    if n
    not in ("simclr_nt_xent", "adain_style_transfer", "mobilenet_v2_inverted_residual")
]


@pytest.mark.parametrize("name", BATCHED)
def test_port_at_a_batch_of_one_agrees_with_pytorch(name):
    """Every port with a symbolic batch at B = 1 (torch: the same code on one sample)."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    dim = next(
        d for shape in module.INPUTS.values() for d in shape if isinstance(d, str)
    )
    inputs = first_along(module, inputs, dim, 1)
    if name == "nanogpt_tiny_lm":
        inputs["targets"] = inputs["targets"].copy()
        inputs["targets"][0, 0] = 3  # a first row that is not all padding
    check(module, reference, params, inputs)


def test_mobilenet_batch_norm_at_a_batch_of_one_uses_the_spatial_statistics():
    """BatchNorm2d in training mode at N = 1 still has H * W = 16 values per channel
    (torch raises only when there is one value per channel)."""
    _, reference, params, inputs = FAMILIES["mobilenet_v2_inverted_residual"]()
    module = module_of("mobilenet_v2_inverted_residual")
    one = {k: v[:1] for k, v in inputs.items()}
    check(module, reference, params, one)


# ===================================================================== 4. edges


def test_nanogpt_with_a_fully_padded_row_and_huge_logits():
    """One sequence entirely ignore_index=-1 (it adds nothing, torch's mean is over the
    other rows' tokens) and the tied embeddings scaled so the logits reach ~+-300."""
    _, reference, params, inputs = FAMILIES["nanogpt_tiny_lm"]()
    module = module_of("nanogpt_tiny_lm")
    targets = inputs["targets"].copy()
    targets[1] = -1
    check(module, reference, params, {**inputs, "targets": targets})
    big = {**params, "lnf": params["lnf"] * 60.0}
    expected_loss = torch_twin(reference, big, inputs)[0]
    assert expected_loss > 10.0
    check(module, reference, big, inputs)


def test_unet_pooling_windows_that_are_all_dead_relu_zeros():
    """A bias of -50 kills one skip channel: its 2x2 max-pool windows are 4-way ties
    at 0 (torch's max_pool2d routes a tie to one element, sg.max splits it; relu'(0) =
    0 makes both zero), and the other channel still learns."""
    _, reference, params, inputs = FAMILIES["unet_down_up"]()
    params = {**params, "c1": np.array([-50.0, 0.2])}
    module = module_of("unet_down_up")
    check(module, reference, params, inputs)
    _, grads = module.value_and_grad(params, inputs)
    assert np.all(grads["K1"][0] == 0.0) and np.any(grads["K1"][1] != 0.0)


def test_deepfm_with_a_feature_repeated_within_a_row():
    """The same table row picked by two fields of one sample (torch: embedding rows
    accumulate in backward)."""
    _, reference, params, inputs = FAMILIES["deepfm_ctr"]()
    idx = inputs["idx"].copy()
    idx[0] = [4, 4, 4]
    idx[1, 2] = idx[1, 1]
    module = module_of("deepfm_ctr")
    check(module, reference, params, {**inputs, "idx": idx})
    assert_matches_central_differences(module, params, {**inputs, "idx": idx})


@pytest.mark.parametrize("bt", [-800.0, 800.0])
def test_highway_with_saturated_transform_gates(bt):
    """Gates shut (carry only: the H weights get no gradient, up to subnormals) and
    fully open."""
    _, reference, params, inputs = FAMILIES["highway_network"]()
    params = {**params, "bt0": np.full(2, bt), "bt1": np.full(2, bt)}
    module = module_of("highway_network")
    check(module, reference, params, inputs)
    _, grads = module.value_and_grad(params, inputs)
    if bt < 0:
        assert np.all(np.abs(grads["Wh0"]) < 1e-300)  # exp(-800) underflows
        assert np.all(np.abs(grads["Wh1"]) < 1e-300)


def test_simclr_with_identical_views_and_a_cold_temperature():
    _, reference, params, inputs = FAMILIES["simclr_nt_xent"]()
    module = module_of("simclr_nt_xent")
    same = {"x1": inputs["x1"], "x2": inputs["x1"].copy()}
    check(module, reference, {**params, "log_tau": np.array(math.log(0.01))}, same)


def test_vqvae_codes_never_chosen_get_no_gradient_as_in_torch():
    _, reference, params, inputs = FAMILIES["vqvae_straight_through"]()
    E = params["E"].copy()
    E[4] = 100.0  # far from every encoding: never the argmin
    module = module_of("vqvae_straight_through")
    check(module, reference, {**params, "E": E}, inputs)
    _, grads = module.value_and_grad({**params, "E": E}, inputs)
    assert np.all(grads["E"][4] == 0.0)


def test_simclr_over_a_symbolic_batch_by_stack_and_reshape():
    """torch.cat([z1, z2]) of two (N, P) halves is refused along a symbolic N (below);
    sg.stack([z1, z2]).reshape((-1, P)) is the same (2N, P) array, and the positives are
    the rows' dot products, both ways round."""
    rng = np.random.default_rng(20)
    D, P = 4, 3
    m = sg.Model("simclr_symbolic")
    x1, x2 = m.input("x1", ("N", D)), m.input("x2", ("N", D))
    W = m.param("W", (P, D))
    z1, z2 = sg.tanh(x1 @ W.T), sg.tanh(x2 @ W.T)
    z = sg.stack([z1, z2]).reshape((-1, P))
    z = z / sg.norm(z, axis=1, keepdims=True)
    sim = sg.where(sg.eye(z.shape[0]) > 0.5, -9e15, z @ z.T / 0.5)
    zn1, zn2 = sg.split(z.reshape((2, -1, P)), 2, axis=0)
    pos = sg.sum(zn1[0] * zn2[0], axis=1) / 0.5
    m.loss(sg.mean(sg.logsumexp(sim, axis=1)) - sg.mean(pos))

    def reference(p, i):
        feats = torch.cat(
            [torch.tanh(i["x1"] @ p["W"].T), torch.tanh(i["x2"] @ p["W"].T)]
        )
        sim = F.cosine_similarity(feats[:, None, :], feats[None, :, :], dim=-1) / 0.5
        self_mask = torch.eye(sim.shape[0], dtype=torch.bool)
        sim = sim.masked_fill(self_mask, -9e15)
        pos_mask = self_mask.roll(shifts=sim.shape[0] // 2, dims=0)
        return (-sim[pos_mask] + torch.logsumexp(sim, dim=-1)).mean(), {}

    module = compile_module(m)
    params = {"W": normal(rng, P, D)}
    for n in (1, 2, 5):
        inputs = {"x1": normal(rng, n, D), "x2": normal(rng, n, D)}
        check(module, reference, params, inputs)
        assert_matches_central_differences(module, params, inputs)


def test_new_gelu_written_out_equals_sg_gelu_tanh():
    """minGPT's NewGELU formula typed in by hand (with x ** 3) and sg.gelu(x,
    approximate='tanh') are one function: the same loss and gradients as torch's
    F.gelu(approximate='tanh')."""
    m = sg.Model("new_gelu")
    x = m.input("x", ("n",))
    a = m.param("a", ())
    z = a * x
    hand = 0.5 * z * (1.0 + sg.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z**3)))
    m.loss(sg.sum(hand**2) + sg.sum(sg.gelu(z, approximate="tanh")))

    def reference(p, i):
        z = p["a"] * i["x"]
        return (F.gelu(z, approximate="tanh") ** 2).sum() + F.gelu(
            z, approximate="tanh"
        ).sum(), {}

    inputs = {"x": np.linspace(-6, 6, 13)}
    check(compile_module(m), reference, {"a": np.array(0.9)}, inputs)


# ===================================================================== 5. porting mistakes


def _declared():
    m = sg.Model("porting_mistakes")
    x = m.input("x", ("B", 4, 3))  # (B, T, C)
    img = m.input("img", ("B", 2, 4, 4))
    idx = m.input("idx", ("B", 4), dtype="int64")
    W = m.param("W", (3, 3))
    return m, x, img, idx, W


@pytest.mark.parametrize(
    "mistake, error, words",
    [
        (  # nanoGPT's att.masked_fill(mask == 0, float('-inf'))
            lambda m, x, img, idx, W: x.masked_fill(x > 0, float("-inf")),
            AttributeError,
            "sg.where(mask, value, x)",
        ),
        (  # ... translated, but with the -inf kept
            lambda m, x, img, idx, W: sg.where(x > 0, x, float("-inf")),
            sg.ModelError,
            "use a large finite value such as -1e30",
        ),
        (  # ConvNeXt's x.permute(0, 2, 3, 1)
            lambda m, x, img, idx, W: img.permute(0, 2, 3, 1),
            AttributeError,
            "x.transpose(...)",
        ),
        (  # nanoGPT's k.transpose(-2, -1) of a 4-D (B, nh, T, hs)
            lambda m, x, img, idx, W: img.transpose(-2, -1),
            sg.ShapeError,
            "x.swapaxes(-2, -1)",
        ),
        (  # Mixer's .transpose(1, 2) of (B, S, C)
            lambda m, x, img, idx, W: x.transpose(1, 2),
            sg.ShapeError,
            "x.swapaxes(1, 2)",
        ),
        (  # q.view(B, T, nh, hs)
            lambda m, x, img, idx, W: x.view(-1, 4, 3, 1),
            AttributeError,
            "x.reshape(...)",
        ),
        (  # F.softmax(att, dim=-1)
            lambda m, x, img, idx, W: sg.softmax(x, dim=-1),
            TypeError,
            "NumPy's axis=, not torch's dim=",
        ),
        (  # x.mean(dim=(2, 3), keepdim=True) in BatchNorm by hand
            lambda m, x, img, idx, W: img.mean(axis=(2, 3), keepdim=True),
            TypeError,
            "NumPy's keepdims=, not torch's keepdim=",
        ),
        (  # torch.cat([up, skip], dim=1)
            lambda m, x, img, idx, W: sg.cat([img, img], 1),
            AttributeError,
            "sg.concatenate(xs, axis)",
        ),
        (  # gMLP's res, gate = x.chunk(2, dim=-1)
            lambda m, x, img, idx, W: x.chunk(2, dim=-1),
            AttributeError,
            "sg.split(x, sections, axis)",
        ),
        (  # the view to heads of a size that does not divide
            lambda m, x, img, idx, W: x.reshape((x.shape[0], 4, 2, 2)),
            sg.ShapeError,
            "cannot reshape x of shape (B, 4, 3) into (B, 4, 2, 2)",
        ),
        (  # a token embedding gathered with float positions
            lambda m, x, img, idx, W: W[x[:, :, 0]],
            sg.ShapeError,
            "int64",
        ),
        (  # gMLP's proj_in bias named `bin` (a builtin)
            lambda m, x, img, idx, W: m.param("bin", (3,)),
            sg.ModelError,
            "would shadow a name the generated module uses",
        ),
        (  # DeepFM's fm term with torch's pow
            lambda m, x, img, idx, W: x.pow(2),
            AttributeError,
            "x ** p",
        ),
    ],
)
def test_porting_mistakes_raise_errors_that_name_the_fix(mistake, error, words):
    with pytest.raises(error, match=re.escape(words)):
        mistake(*_declared())


_BARE = (
    "symgrad/model.py: not in TORCH_SPELLINGS / _TORCH_KEYWORDS, so the user gets "
    "Python's bare {}; repro: m = sg.Model('m'); x = m.input('x', ('B', 4, 3)); {}"
)


def _bare(id_, mistake, fix, bare, repro):
    return pytest.param(mistake, fix, id=id_)


@pytest.mark.parametrize(
    "mistake, fix",
    [
        _bare(  # AdaIN's calc_mean_std: feat.view(N, C, -1).var(dim=2)
            "var(unbiased=)",
            lambda m, x, img, idx, W: sg.var(x, axis=2, unbiased=True),
            r"ddof",
            "TypeError: unexpected keyword argument 'unbiased'",
            "sg.var(x, axis=2, unbiased=True)  # should name ddof=1",
        ),
        _bare(
            "std(correction=)",
            lambda m, x, img, idx, W: x.std(axis=2, correction=1),
            r"ddof",
            "TypeError: unexpected keyword argument 'correction'",
            "x.std(axis=2, correction=1)  # should name ddof=1",
        ),
        _bare(  # VQ-VAE's torch.argmin(d, dim=1)
            "sg.argmin",
            lambda m, x, img, idx, W: sg.argmin(x, axis=1),
            r"argsort",
            "AttributeError: module 'symgrad' has no attribute 'argmin'",
            "sg.argmin(x, axis=1)  # should name sg.argsort(x, axis=1)[:, 0]",
        ),
        _bare(
            "x.argmax",
            lambda m, x, img, idx, W: x.argmax(axis=-1),
            r"argsort",
            "AttributeError: 'Expr' object has no attribute 'argmax'",
            "x.argmax(axis=-1)  # should name sg.argsort(-x, axis=-1)[..., 0]",
        ),
        _bare(  # DeepFM / ResNet heads: torch.flatten(x, 1) / x.flatten(1)
            "x.flatten(1)",
            lambda m, x, img, idx, W: img.flatten(1),
            r"reshape",
            "TypeError: Expr.flatten() takes 1 positional argument but 2 were given",
            "x.flatten(1)  # should name x.reshape((-1, ...)) (torch's start_dim)",
        ),
        _bare(  # nanoGPT / ConvNeXt / Mixer: F.layer_norm
            "sg.layer_norm",
            lambda m, x, img, idx, W: sg.layer_norm(x, (3,)),
            r"sg\.var|sg\.mean",
            "AttributeError: module 'symgrad' has no attribute 'layer_norm'",
            "sg.layer_norm(x, (3,))  # should name (x - mean) / sqrt(var + eps)",
        ),
        _bare(  # MobileNetV2: F.relu6
            "sg.relu6",
            lambda m, x, img, idx, W: sg.relu6(x),
            r"sg\.minimum|sg\.where",
            "AttributeError: module 'symgrad' has no attribute 'relu6'",
            "sg.relu6(x)  # should name sg.minimum(sg.relu(x), 6.0) (hardtanh's "
            "zero gradient at 0 and 6; x.clip(0, 6) is clamp's)",
        ),
        _bare(  # SimCLR / SimSiam: F.normalize
            "sg.normalize",
            lambda m, x, img, idx, W: sg.normalize(x, axis=-1),
            r"sg\.norm",
            "AttributeError: module 'symgrad' has no attribute 'normalize'",
            "sg.normalize(x, axis=-1)  # should name x / sg.maximum(sg.norm(x, "
            "axis=-1, keepdims=True), eps)",
        ),
        _bare(  # nanoGPT: pos = torch.arange(0, t)
            "sg.arange",
            lambda m, x, img, idx, W: sg.arange(4),
            r"input|int64|cumsum",
            "AttributeError: module 'symgrad' has no attribute 'arange'",
            "sg.arange(4)  # should name an int64 input (or sg.cumsum(sg.ones_like(x)))",
        ),
    ],
)
def test_torch_spellings_of_these_ports_name_the_fix(mistake, fix):
    with pytest.raises((AttributeError, TypeError), match=fix):
        mistake(*_declared())


def test_concatenating_two_symbolic_halves_names_stack_and_reshape():
    m = sg.Model("cat_halves")
    z1, z2 = m.input("z1", ("N", 3)), m.input("z2", ("N", 3))
    with pytest.raises(sg.ShapeError) as info:
        sg.concatenate([z1, z2], axis=0)
    assert "only one part may have a symbolic size" in str(info.value)
    assert "sg.stack" in str(info.value), str(info.value)


def test_unbatched_attention_with_torchs_k_transpose_matches_torch():
    """A single-head, unbatched attention (T = head size = 3) ported with torch's
    idiom q @ k.transpose(-2, -1): on a 2-D array that is NumPy's identity permutation
    (torch swaps the axes), so it is refused naming x.T; with x.T it agrees."""
    rng = np.random.default_rng(30)
    m = sg.Model("unbatched_attention")
    x = m.input("x", (3, 3))
    Wq, Wk = m.param("Wq", (3, 3)), m.param("Wk", (3, 3))
    q, k = x @ Wq.T, x @ Wk.T
    with pytest.raises(sg.ShapeError, match=r"torch's transpose swaps them.*x\.T"):
        k.transpose(-2, -1)
    att = m.output("att", sg.softmax(q @ k.T / math.sqrt(3), axis=-1))
    m.loss(sg.sum(att * x))

    def reference(p, i):
        q, k = i["x"] @ p["Wq"].T, i["x"] @ p["Wk"].T
        att = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(3), dim=-1)
        return (att * i["x"]).sum(), {"att": att}

    params = {"Wq": normal(rng, 3, 3), "Wk": normal(rng, 3, 3)}
    check(compile_module(m), reference, params, {"x": normal(rng, 3, 3)})
