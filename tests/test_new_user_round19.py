"""Round 19 of new-user models: a PyTorch user porting real torch.nn layers, with the
real module (float64, the same weights copied in through ``torch.func.functional_call``)
and central finite differences as the judges. Layers: nn.Conv1d with stride, padding and
dilation by step slices of a zero-padded input and sg.einsum, nn.Conv2d 3x3 with padding
1 by nine shifted slices (ReLU, global average pooling, a cross-entropy head), a
depthwise-separable Conv1d (groups = channels) with padding_mode='reflect' by reversed
slices, nn.ConvTranspose1d (stride 2, output_padding) by interleaving zeros with
sg.stack and a reshape, nn.BatchNorm1d in training mode with its running-statistics
update (unbiased variance) as outputs, nn.GroupNorm on 4-D input by reshapes,
nn.LayerNorm over two trailing dims, nn.InstanceNorm1d + per-channel nn.PReLU,
nn.RMSNorm with torch's default eps, nn.LocalResponseNorm over channel windows,
nn.MultiheadAttention (batch_first, packed in_proj, a float key_padding_mask, the
head-averaged weights as an output; and with add_bias_kv, add_zero_attn, kdim != vdim),
a pre-norm nn.TransformerDecoderLayer with exact GELU through sg.erf, a causal float
tgt_mask and cross-attention, a 2-layer nn.GRU and a 2-layer bidirectional ReLU nn.RNN
over whole sequences, nn.Upsample(mode='linear') over a symbolic length, a sub-pixel
convolution with nn.PixelShuffle (and nn.PixelUnshuffle) by 6-D reshapes and
transposes, nn.EmbeddingBag(mode='mean') and nn.Embedding with padding_idx on int64
tokens, and nn.CrossEntropyLoss with class weights and label smoothing over (N, C, H, W)
logits. Each also at an edge (a batch of 1, a masked key, -inf masks as torch builds
them, zero variance under eps, ReLU/PReLU exactly at the kink, an all-padding bag, a
zero row under RMSNorm's tiny eps, signals of length 1); Hessians and hvp of the small
ones (the decoder's hvp against torch's math attention kernel), unrolled code at small
sizes (with a spy that it ran), compile times, and the torch spellings a porter types
first. Found and fixed: a reshape to a size computed from x.shape (2 * x.shape[2]) was
refused, and torch's method names (view, permute, clamp, ...) had no hint.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from helpers import (
    Families,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
    first_along,
    normal,
    rel,
    spy_unrolled,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

FAMILIES = Families()
family = FAMILIES.add


def functional(module, names):
    """The real torch ``module`` (float64) called with our parameters as its own
    (``names``: torch name -> ours), through torch.func.functional_call."""
    module = module.double()

    def call(p, args):
        state = {tname: p[ours] for tname, ours in names.items()}
        return torch.func.functional_call(module, state, args)

    return call


def zeros_like_slice(x):
    """A zero block for padding: symgrad has no sg.zeros / sg.pad, so 0 * a slice."""
    return 0.0 * x


# ============================================================== 1. convolutions


@family
def conv1d_strided_dilated(hessian=False):
    """nn.Conv1d(2, 3, kernel_size=3, stride=2, padding=2, dilation=2): zero padding by
    sg.concatenate, each tap a step slice xp[:, :, k*d : k*d + s*(Lout-1) + 1 : s], the
    taps stacked and contracted with sg.einsum; tanh and MSE."""
    rng = np.random.default_rng(0)
    L, k, s, p, d = 9, 3, 2, 2, 2
    Lout = (L + 2 * p - d * (k - 1) - 1) // s + 1
    m = sg.Model("conv1d_strided_dilated", hessian=hessian)
    x, target = m.input("x", ("B", 2, L)), m.input("target", ("B", 3, Lout))
    W, b = m.param("W", (3, 2, k)), m.param("b", (3,))
    pad = zeros_like_slice(x[:, :, :p])
    xp = sg.concatenate([pad, x, pad], axis=2)
    taps = sg.stack(
        [xp[:, :, j * d : j * d + s * (Lout - 1) + 1 : s] for j in range(k)], axis=2
    )
    y = m.output("y", sg.einsum("bckt,ock->bot", taps, W) + b[:, None])
    m.loss(sg.mean((sg.tanh(y) - target) ** 2))

    conv = functional(
        nn.Conv1d(2, 3, k, stride=s, padding=p, dilation=d),
        {"weight": "W", "bias": "b"},
    )

    def reference(p_, i):
        y = conv(p_, (i["x"],))
        return ((torch.tanh(y) - i["target"]) ** 2).mean(), {"y": y}

    params = {"W": normal(rng, 3, 2, k, scale=0.5), "b": normal(rng, 3, scale=0.3)}
    inputs = {"x": normal(rng, 3, 2, L), "target": normal(rng, 3, 3, Lout, scale=0.5)}
    return m, reference, params, inputs


@family
def conv2d_3x3_same_relu_gap(hessian=False):
    """nn.Conv2d(2, 3, 3, padding=1) -> ReLU -> AdaptiveAvgPool2d(1) -> Linear(3, 4)
    -> CrossEntropyLoss: padding rows and columns by sg.concatenate, the nine taps
    stacked and contracted with the (3, 2, 9) reshaped kernel by one sg.einsum."""
    rng = np.random.default_rng(1)
    H, W_ = 4, 5
    m = sg.Model("conv2d_3x3_same_relu_gap", hessian=hessian)
    x = m.input("x", ("B", 2, H, W_))
    labels = m.input("labels", ("B",), dtype="int64")
    K, b = m.param("K", (3, 2, 3, 3)), m.param("b", (3,))
    V, c = m.param("V", (4, 3)), m.param("c", (4,))
    rows = zeros_like_slice(x[:, :, :1, :])
    xp = sg.concatenate([rows, x, rows], axis=2)
    cols = zeros_like_slice(xp[:, :, :, :1])
    xp = sg.concatenate([cols, xp, cols], axis=3)
    taps = sg.stack(
        [xp[:, :, i : i + H, j : j + W_] for i in range(3) for j in range(3)], axis=2
    )
    conv = sg.einsum("bckhw,ock->bohw", taps, K.reshape(3, 2, 9)) + b[:, None, None]
    h = m.output("h", sg.relu(conv))
    z = m.output("logits", sg.mean(h, axis=(2, 3)) @ V.T + c)
    picked = sg.take_along_axis(sg.log_softmax(z, axis=1), labels[:, None], axis=1)
    m.loss(-sg.mean(picked))

    net = functional(
        nn.Sequential(
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(3, 4),
        ),
        {"0.weight": "K", "0.bias": "b", "4.weight": "V", "4.bias": "c"},
    )
    conv_only = functional(nn.Conv2d(2, 3, 3, padding=1), {"weight": "K", "bias": "b"})

    def reference(p, i):
        z = net(p, (i["x"],))
        h = torch.relu(conv_only(p, (i["x"],)))
        return F.cross_entropy(z, i["labels"]), {"h": h, "logits": z}

    params = {
        "K": normal(rng, 3, 2, 3, 3, scale=0.4),
        "b": np.array([0.0, 0.2, -0.1]),
        "V": normal(rng, 4, 3),
        "c": normal(rng, 4, scale=0.1),
    }
    inputs = {"x": normal(rng, 3, 2, H, W_), "labels": np.array([0, 3, 1])}
    return m, reference, params, inputs


@family
def depthwise_separable_reflect(hessian=False):
    """nn.Conv1d(4, 4, 5, padding=2, groups=4, padding_mode='reflect') -> SiLU ->
    nn.Conv1d(4, 2, 1): the reflected borders by reversed slices (x[:, :, 2:0:-1] on
    the left, x[:, :, 5:3:-1] on the right), the depthwise taps by an einsum that keeps
    the channel, the pointwise one by an einsum over it; MSE."""
    rng = np.random.default_rng(2)
    L = 7
    m = sg.Model("depthwise_separable_reflect", hessian=hessian)
    x, target = m.input("x", ("B", 4, L)), m.input("target", ("B", 2, L))
    Wd, bd = m.param("Wd", (4, 1, 5)), m.param("bd", (4,))
    Wp, bp = m.param("Wp", (2, 4, 1)), m.param("bp", (2,))
    xp = sg.concatenate([x[:, :, 2:0:-1], x, x[:, :, L - 2 : L - 4 : -1]], axis=2)
    taps = sg.stack([xp[:, :, k : k + L] for k in range(5)], axis=2)
    h = sg.einsum("bckt,ck->bct", taps, Wd[:, 0, :]) + bd[:, None]
    h = h * sg.sigmoid(h)
    y = m.output("y", sg.einsum("bct,oc->bot", h, Wp[:, :, 0]) + bp[:, None])
    m.loss(sg.mean((y - target) ** 2))

    net = functional(
        nn.Sequential(
            nn.Conv1d(4, 4, 5, padding=2, groups=4, padding_mode="reflect"),
            nn.SiLU(),
            nn.Conv1d(4, 2, 1),
        ),
        {"0.weight": "Wd", "0.bias": "bd", "2.weight": "Wp", "2.bias": "bp"},
    )

    def reference(p, i):
        y = net(p, (i["x"],))
        return F.mse_loss(y, i["target"]), {"y": y}

    params = {
        "Wd": normal(rng, 4, 1, 5, scale=0.5),
        "bd": normal(rng, 4, scale=0.2),
        "Wp": normal(rng, 2, 4, 1, scale=0.5),
        "bp": normal(rng, 2, scale=0.2),
    }
    inputs = {"x": normal(rng, 2, 4, L), "target": normal(rng, 2, 2, L)}
    return m, reference, params, inputs


@family
def conv_transpose1d_stride2(hessian=False):
    """nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1, output_padding=1): the input
    dilated by interleaving zeros (sg.stack([x, 0 x], axis=3) reshaped, last zero cut),
    padded k-1-p on the left and k-1-p+output_padding on the right, then a valid
    convolution with the kernel flipped (sg.flip) and its in/out axes as stored."""
    rng = np.random.default_rng(3)
    L = 4
    Lout = 2 * L
    m = sg.Model("conv_transpose1d_stride2", hessian=hessian)
    x, target = m.input("x", ("B", 3, L)), m.input("target", ("B", 2, Lout))
    W, b = m.param("W", (3, 2, 3)), m.param("b", (2,))
    z = sg.stack([x, zeros_like_slice(x)], axis=3).reshape(-1, 3, 2 * L)[:, :, :-1]
    zero = zeros_like_slice(x[:, :, :1])
    zp = sg.concatenate([zero, z, zero, zero], axis=2)
    taps = sg.stack([zp[:, :, k : k + Lout] for k in range(3)], axis=2)
    y = m.output("y", sg.einsum("bckt,cok->bot", taps, sg.flip(W, axis=2)) + b[:, None])
    m.loss(sg.mean((sg.tanh(y) - target) ** 2))

    deconv = functional(
        nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1, output_padding=1),
        {"weight": "W", "bias": "b"},
    )

    def reference(p, i):
        y = deconv(p, (i["x"],))
        return ((torch.tanh(y) - i["target"]) ** 2).mean(), {"y": y}

    params = {"W": normal(rng, 3, 2, 3, scale=0.5), "b": normal(rng, 2, scale=0.2)}
    inputs = {"x": normal(rng, 2, 3, L), "target": normal(rng, 2, 2, Lout, scale=0.5)}
    return m, reference, params, inputs


# ============================================================ 2. normalization


@family
def batchnorm1d_training(hessian=False):
    """nn.BatchNorm1d(3) in training mode on (N, C, L): batch statistics over axes
    (0, 2), the biased variance in the normalization; the running-statistics update
    (momentum 0.1, the UNBIASED variance, sg.var(ddof=1)) as outputs, judged by the
    buffers torch updated. Channel 1 of the data is constant: zero variance under eps.
    """
    rng = np.random.default_rng(4)
    m = sg.Model("batchnorm1d_training", hessian=hessian)
    x, w = m.input("x", ("N", 3, 4)), m.input("w", ("N", 3, 4))
    rm, rv = m.input("running_mean", (3,)), m.input("running_var", (3,))
    gamma, beta = m.param("gamma", (3,)), m.param("beta", (3,))
    mu = sg.mean(x, axis=(0, 2), keepdims=True)
    var = sg.var(x, axis=(0, 2), keepdims=True)
    y = m.output("y", (x - mu) / sg.sqrt(var + 1e-5) * gamma[:, None] + beta[:, None])
    m.output("new_running_mean", 0.9 * rm + 0.1 * sg.mean(x, axis=(0, 2)))
    m.output("new_running_var", 0.9 * rv + 0.1 * sg.var(x, axis=(0, 2), ddof=1))
    m.loss(sg.sum(w * sg.tanh(y)))

    bn = nn.BatchNorm1d(3).double().train()

    def reference(p, i):
        rm, rv = i["running_mean"].clone(), i["running_var"].clone()
        state = {
            "weight": p["gamma"],
            "bias": p["beta"],
            "running_mean": rm,
            "running_var": rv,
            "num_batches_tracked": torch.tensor(0),
        }
        y = torch.func.functional_call(bn, state, (i["x"],))
        outputs = {"y": y, "new_running_mean": rm, "new_running_var": rv}
        return (i["w"] * torch.tanh(y)).sum(), outputs

    x_ = normal(rng, 3, 3, 4)
    x_[:, 1, :] = 0.7
    params = {"gamma": np.array([1.2, 0.8, -0.5]), "beta": np.array([0.1, -0.3, 0.2])}
    inputs = {
        "x": x_,
        "w": normal(rng, 3, 3, 4),
        "running_mean": normal(rng, 3, scale=0.1),
        "running_var": rng.uniform(0.5, 1.5, 3),
    }
    return m, reference, params, inputs


@family
def groupnorm_4d(hessian=False):
    """nn.GroupNorm(2, 4) on (B, 4, 3, 3): (B, 2, 18) by reshape(-1, 2, 18), the
    statistics over the last axis, back to (B, 4, 3, 3), the per-channel affine. The
    second group of sample 0 is constant: zero variance under eps=1e-5."""
    rng = np.random.default_rng(5)
    m = sg.Model("groupnorm_4d", hessian=hessian)
    x, w = m.input("x", ("B", 4, 3, 3)), m.input("w", ("B", 4, 3, 3))
    g, be = m.param("g", (4,)), m.param("be", (4,))
    xg = x.reshape(-1, 2, 18)
    xhat = (xg - sg.mean(xg, axis=2, keepdims=True)) / sg.sqrt(
        sg.var(xg, axis=2, keepdims=True) + 1e-5
    )
    y = m.output("y", xhat.reshape(-1, 4, 3, 3) * g[:, None, None] + be[:, None, None])
    m.loss(sg.sum(w * sg.sigmoid(y)))

    gn = functional(nn.GroupNorm(2, 4), {"weight": "g", "bias": "be"})

    def reference(p, i):
        y = gn(p, (i["x"],))
        return (i["w"] * torch.sigmoid(y)).sum(), {"y": y}

    x_ = normal(rng, 2, 4, 3, 3)
    x_[0, 2:] = -0.4
    params = {"g": np.array([1.0, 0.5, -1.5, 2.0]), "be": normal(rng, 4, scale=0.3)}
    return m, reference, params, {"x": x_, "w": normal(rng, 2, 4, 3, 3)}


@family
def layernorm_two_trailing_dims(hessian=False):
    """nn.LayerNorm((3, 4)) over the two trailing dims of (B, 3, 4), with a (3, 4)
    weight and bias, then a linear read-out (B, 3, 4) @ V (4, 2) and MSE. Sample 1 is
    constant (zero variance: the output is the bias)."""
    rng = np.random.default_rng(6)
    m = sg.Model("layernorm_two_trailing_dims", hessian=hessian)
    x, target = m.input("x", ("B", 3, 4)), m.input("target", ("B", 3, 2))
    g, be, V = m.param("g", (3, 4)), m.param("be", (3, 4)), m.param("V", (4, 2))
    mu = sg.mean(x, axis=(1, 2), keepdims=True)
    var = sg.var(x, axis=(1, 2), keepdims=True)
    y = m.output("y", (x - mu) / sg.sqrt(var + 1e-5) * g + be)
    m.loss(sg.mean((y @ V - target) ** 2))

    ln = functional(nn.LayerNorm((3, 4)), {"weight": "g", "bias": "be"})

    def reference(p, i):
        y = ln(p, (i["x"],))
        return F.mse_loss(y @ p["V"], i["target"]), {"y": y}

    x_ = normal(rng, 2, 3, 4)
    x_[1] = 2.5
    params = {
        "g": 1 + normal(rng, 3, 4, scale=0.3),
        "be": normal(rng, 3, 4, scale=0.3),
        "V": normal(rng, 4, 2),
    }
    return m, reference, params, {"x": x_, "target": normal(rng, 2, 3, 2)}


@family
def instance_norm_prelu(hessian=False):
    """nn.InstanceNorm1d(3, affine=True) -> nn.PReLU(3) -> sum-weighted: PReLU as
    sg.where(y > 0, y, a y) (torch's backward takes the slope branch at 0). Channel 0
    of sample 0 is [-2, -1, 0, 1, 2]: with bias 0 (an edge test) exactly 0 after the
    norm, the kink."""
    rng = np.random.default_rng(7)
    m = sg.Model("instance_norm_prelu", hessian=hessian)
    x, w = m.input("x", ("B", 3, 5)), m.input("w", ("B", 3, 5))
    g, be, a = m.param("g", (3,)), m.param("be", (3,)), m.param("a", (3,))
    xhat = (x - sg.mean(x, axis=2, keepdims=True)) / sg.sqrt(
        sg.var(x, axis=2, keepdims=True) + 1e-5
    )
    y = xhat * g[:, None] + be[:, None]
    out = m.output("out", sg.where(y > 0, y, a[:, None] * y))
    m.loss(sg.sum(w * out) + 0.5 * sg.sum(out**2))

    net = functional(
        nn.Sequential(nn.InstanceNorm1d(3, affine=True), nn.PReLU(3)),
        {"0.weight": "g", "0.bias": "be", "1.weight": "a"},
    )

    def reference(p, i):
        out = net(p, (i["x"],))
        return (i["w"] * out).sum() + 0.5 * (out**2).sum(), {"out": out}

    x_ = normal(rng, 2, 3, 5)
    x_[0, 0] = [-2.0, -1.0, 0.0, 1.0, 2.0]
    params = {
        "g": np.array([1.3, 0.7, -0.9]),
        "be": np.array([0.05, 0.2, -0.1]),
        "a": np.array([0.25, 0.1, -0.3]),
    }
    return m, reference, params, {"x": x_, "w": normal(rng, 2, 3, 5)}


# ================================================================ 3. attention


def _heads(t, n, H, dh):
    """(B, n, H*dh) -> (B, H, n, dh)."""
    return t.reshape(-1, n, H, dh).transpose(0, 2, 1, 3)


def _mha(q_in, kv_in, Lq, Lk, W, b, Wo, bo, mask, H=2, E=4):
    """nn.MultiheadAttention's math on a packed (3E, E) in_proj: heads by reshape,
    scores + the additive mask, softmax, heads merged, out_proj. Returns (out, attn)."""
    dh = E // H
    q = _heads(q_in @ W[:E].T + b[:E], Lq, H, dh)
    k = _heads(kv_in @ W[E : 2 * E].T + b[E : 2 * E], Lk, H, dh)
    v = _heads(kv_in @ W[2 * E :].T + b[2 * E :], Lk, H, dh)
    attn = sg.softmax(q @ sg.swapaxes(k, -1, -2) / math.sqrt(dh) + mask, axis=-1)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(-1, Lq, E)
    return out @ Wo.T + bo, attn


MHA_NAMES = {
    "in_proj_weight": "Win",
    "in_proj_bias": "b_in",
    "out_proj.weight": "Wout",
    "out_proj.bias": "bout",
}


@family
def multihead_attention_padding(hessian=False):
    """nn.MultiheadAttention(4, 2, batch_first=True)(query, key, value,
    key_padding_mask=float mask, need_weights=True): the float mask is added to the
    scores (a masked key: -1e30), the returned weights are averaged over the heads."""
    rng = np.random.default_rng(8)
    L, S = 3, 4
    m = sg.Model("multihead_attention_padding", hessian=hessian)
    query, kv = m.input("query", ("B", L, 4)), m.input("kv", ("B", S, 4))
    mask, target = m.input("mask", ("B", S)), m.input("target", ("B", L, 4))
    W, b = m.param("Win", (12, 4)), m.param("b_in", (12,))
    Wo, bo = m.param("Wout", (4, 4)), m.param("bout", (4,))
    out, attn = _mha(query, kv, L, S, W, b, Wo, bo, mask[:, None, None, :])
    out = m.output("out", out)
    m.output("weights", sg.mean(attn, axis=1))
    m.loss(sg.mean((out - target) ** 2))

    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()

    def reference(p, i):
        out, weights = torch.func.functional_call(
            mha,
            {t: p[o] for t, o in MHA_NAMES.items()},
            (i["query"], i["kv"], i["kv"]),
            {"key_padding_mask": i["mask"], "need_weights": True},
        )
        return F.mse_loss(out, i["target"]), {"out": out, "weights": weights}

    mask_ = np.zeros((2, S))
    mask_[0, 3] = mask_[1, 0] = -1e30
    params = {
        "Win": normal(rng, 12, 4, scale=0.5),
        "b_in": normal(rng, 12, scale=0.1),
        "Wout": normal(rng, 4, 4, scale=0.5),
        "bout": normal(rng, 4, scale=0.1),
    }
    inputs = {
        "query": normal(rng, 2, L, 4),
        "kv": normal(rng, 2, S, 4),
        "mask": mask_,
        "target": normal(rng, 2, L, 4),
    }
    return m, reference, params, inputs


def _layer_norm(x, g, b):
    mu = sg.mean(x, axis=-1, keepdims=True)
    return (x - mu) / sg.sqrt(sg.var(x, axis=-1, keepdims=True) + 1e-5) * g + b


DECODER_NAMES = {
    **{f"self_attn.{k}": "sa_" + v for k, v in MHA_NAMES.items()},
    **{f"multihead_attn.{k}": "ca_" + v for k, v in MHA_NAMES.items()},
    "linear1.weight": "W1",
    "linear1.bias": "b1",
    "linear2.weight": "W2",
    "linear2.bias": "b2",
    **{f"norm{n}.weight": f"g{n}" for n in (1, 2, 3)},
    **{f"norm{n}.bias": f"be{n}" for n in (1, 2, 3)},
}


@family
def transformer_decoder_prenorm_gelu(hessian=False):
    """nn.TransformerDecoderLayer(4, 2, 6, dropout=0, activation='gelu',
    batch_first=True, norm_first=True) with a causal float tgt_mask and a memory:
    x += SA(LN1 x); x += CA(LN2 x, memory); x += FF(LN3 x), GELU exact through
    sg.erf."""
    rng = np.random.default_rng(9)
    T, S = 3, 2
    m = sg.Model("transformer_decoder_prenorm_gelu", hessian=hessian)
    tgt, memory = m.input("tgt", ("B", T, 4)), m.input("memory", ("B", S, 4))
    causal, target = m.input("causal", (T, T)), m.input("target", ("B", T, 4))
    shapes = {
        "Win": (12, 4),
        "b_in": (12,),
        "Wout": (4, 4),
        "bout": (4,),
    }
    sa = [m.param("sa_" + k, s) for k, s in shapes.items()]
    ca = [m.param("ca_" + k, s) for k, s in shapes.items()]
    W1, b1 = m.param("W1", (6, 4)), m.param("b1", (6,))
    W2, b2 = m.param("W2", (4, 6)), m.param("b2", (4,))
    norms = {n: (m.param(f"g{n}", (4,)), m.param(f"be{n}", (4,))) for n in (1, 2, 3)}
    x = tgt
    h = _layer_norm(x, *norms[1])
    x = x + _mha(h, h, T, T, *sa, causal)[0]
    h = _layer_norm(x, *norms[2])
    x = x + _mha(h, memory, T, S, *ca, 0.0)[0]
    h = _layer_norm(x, *norms[3]) @ W1.T + b1
    h = 0.5 * h * (1 + sg.erf(h / math.sqrt(2)))
    out = m.output("out", x + h @ W2.T + b2)
    m.loss(sg.mean((out - target) ** 2))

    layer = nn.TransformerDecoderLayer(
        4, 2, 6, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    ).double()

    def reference(p, i):
        state = {t: p[o] for t, o in DECODER_NAMES.items()}
        out = torch.func.functional_call(
            layer, state, (i["tgt"], i["memory"]), {"tgt_mask": i["causal"]}
        )
        return F.mse_loss(out, i["target"]), {"out": out}

    params = {}
    for prefix in ("sa_", "ca_"):
        params.update(
            {
                prefix + "Win": normal(rng, 12, 4, scale=0.5),
                prefix + "b_in": normal(rng, 12, scale=0.1),
                prefix + "Wout": normal(rng, 4, 4, scale=0.5),
                prefix + "bout": normal(rng, 4, scale=0.1),
            }
        )
    params.update(
        {
            "W1": normal(rng, 6, 4, scale=0.5),
            "b1": normal(rng, 6, scale=0.1),
            "W2": normal(rng, 4, 6, scale=0.5),
            "b2": normal(rng, 4, scale=0.1),
        }
    )
    for n in (1, 2, 3):
        params[f"g{n}"] = 1 + normal(rng, 4, scale=0.2)
        params[f"be{n}"] = normal(rng, 4, scale=0.1)
    causal_ = np.triu(np.full((T, T), -1e30), k=1)
    inputs = {
        "tgt": normal(rng, 2, T, 4),
        "memory": normal(rng, 2, S, 4),
        "causal": causal_,
        "target": normal(rng, 2, T, 4),
    }
    return m, reference, params, inputs


# ================================================================== 4. recurrent


GRU_T = 4


@family
def gru_two_layers(hessian=False):
    """nn.GRU(2, 3, num_layers=2, batch_first=True) over a whole sequence of 4 steps,
    torch's gate order (r, z, n) and its n = tanh(W_in x + b_in + r (W_hn h + b_hn));
    the outputs of the top layer and h_n (2, B, 3) as outputs, MSE on the outputs."""
    rng = np.random.default_rng(10)
    m = sg.Model("gru_two_layers", hessian=hessian)
    x, h0 = m.input("x", ("B", GRU_T, 2)), m.input("h0", (2, "B", 3))
    target = m.input("target", ("B", GRU_T, 3))
    layers = []
    for n, d_in in ((0, 2), (1, 3)):
        layers.append(
            (
                m.param(f"Wih{n}", (9, d_in)),
                m.param(f"Whh{n}", (9, 3)),
                m.param(f"bih{n}", (9,)),
                m.param(f"bhh{n}", (9,)),
            )
        )
    seq = [x[:, t] for t in range(GRU_T)]
    finals = []
    for n, (Wih, Whh, bih, bhh) in enumerate(layers):
        h = h0[n]
        outs = []
        for xt in seq:
            gi, gh = xt @ Wih.T + bih, h @ Whh.T + bhh
            r = sg.sigmoid(gi[:, :3] + gh[:, :3])
            z = sg.sigmoid(gi[:, 3:6] + gh[:, 3:6])
            cand = sg.tanh(gi[:, 6:] + r * gh[:, 6:])
            h = (1 - z) * cand + z * h
            outs.append(h)
        seq, _ = outs, finals.append(h)
    out = m.output("out", sg.stack(seq, axis=1))
    m.output("h_n", sg.stack(finals, axis=0))
    m.loss(sg.mean((out - target) ** 2))

    gru = nn.GRU(2, 3, num_layers=2, batch_first=True).double()
    names = {}
    for n in (0, 1):
        names.update(
            {
                f"weight_ih_l{n}": f"Wih{n}",
                f"weight_hh_l{n}": f"Whh{n}",
                f"bias_ih_l{n}": f"bih{n}",
                f"bias_hh_l{n}": f"bhh{n}",
            }
        )

    def reference(p, i):
        state = {t: p[o] for t, o in names.items()}
        out, h_n = torch.func.functional_call(gru, state, (i["x"], i["h0"]))
        return F.mse_loss(out, i["target"]), {"out": out, "h_n": h_n}

    params = {}
    for n, d_in in ((0, 2), (1, 3)):
        params[f"Wih{n}"] = normal(rng, 9, d_in, scale=0.6)
        params[f"Whh{n}"] = normal(rng, 9, 3, scale=0.6)
        params[f"bih{n}"] = normal(rng, 9, scale=0.2)
        params[f"bhh{n}"] = normal(rng, 9, scale=0.2)
    inputs = {
        "x": normal(rng, 2, GRU_T, 2),
        "h0": normal(rng, 2, 2, 3, scale=0.5),
        "target": normal(rng, 2, GRU_T, 3, scale=0.5),
    }
    return m, reference, params, inputs


# ======================================================== 5. reshapes and gathers


@family
def pixel_shuffle_subpixel(hessian=False):
    """A sub-pixel upsampler: nn.Conv2d(2, 4, 1) -> nn.PixelShuffle(2) -> sigmoid,
    MSE to a (B, 1, 6, 6) image; PixelShuffle as reshape(-1, 1, 2, 2, 3, 3) ->
    transpose(0, 1, 4, 2, 5, 3) -> reshape(-1, 1, 6, 6), and nn.PixelUnshuffle(2) of
    the result (its inverse) as an output."""
    rng = np.random.default_rng(11)
    m = sg.Model("pixel_shuffle_subpixel", hessian=hessian)
    x, target = m.input("x", ("B", 2, 3, 3)), m.input("target", ("B", 1, 6, 6))
    W, b = m.param("W", (4, 2, 1, 1)), m.param("b", (4,))
    feat = sg.einsum("bchw,oc->bohw", x, W[:, :, 0, 0]) + b[:, None, None]
    up = feat.reshape(-1, 1, 2, 2, 3, 3).transpose(0, 1, 4, 2, 5, 3)
    img = m.output("img", sg.sigmoid(up.reshape(-1, 1, 6, 6)))
    down = img.reshape(-1, 1, 3, 2, 3, 2).transpose(0, 1, 3, 5, 2, 4)
    m.output("unshuffled", down.reshape(-1, 4, 3, 3))
    m.loss(sg.mean((img - target) ** 2))

    net = functional(
        nn.Sequential(nn.Conv2d(2, 4, 1), nn.PixelShuffle(2)),
        {"0.weight": "W", "0.bias": "b"},
    )

    def reference(p, i):
        img = torch.sigmoid(net(p, (i["x"],)))
        outputs = {"img": img, "unshuffled": nn.PixelUnshuffle(2)(img)}
        return F.mse_loss(img, i["target"]), outputs

    params = {"W": normal(rng, 4, 2, 1, 1), "b": normal(rng, 4, scale=0.2)}
    inputs = {"x": normal(rng, 2, 2, 3, 3), "target": rng.uniform(0, 1, (2, 1, 6, 6))}
    return m, reference, params, inputs


@family
def embedding_bag_padding(hessian=False):
    """nn.EmbeddingBag(6, 3, mode='mean', padding_idx=0) over (B, 4) int64 bags (the
    padding entries left out of the mean, an all-padding bag giving zeros) dotted
    with nn.Embedding(5, 3, padding_idx=0) of a (B,) query, plus a bias: BCE with
    logits. padding_idx rows get no gradient in torch; symgrad has no detach, so the
    user masks the gathered rows by sg.where (the padding rows are zero, as torch
    initialises them, so the values agree)."""
    rng = np.random.default_rng(12)
    m = sg.Model("embedding_bag_padding", hessian=hessian)
    bags = m.input("bags", ("B", 4), dtype="int64")
    query = m.input("query", ("B",), dtype="int64")
    y = m.input("y", ("B",))
    E, Q, c = m.param("E", (6, 3)), m.param("Q", (5, 3)), m.param("c", ())
    keep = sg.where(bags != 0, 1.0, 0.0)
    count = sg.sum(keep, axis=1)
    bag = sg.sum(E[bags] * keep[:, :, None], axis=1) / sg.maximum(count, 1.0)[:, None]
    bag = m.output("bag", bag)
    q = sg.where(query[:, None] == 0, 0.0, Q[query])
    z = m.output("z", sg.sum(bag * q, axis=1) + c)
    m.loss(sg.mean(sg.softplus(z) - y * z))

    ebag = nn.EmbeddingBag(6, 3, mode="mean", padding_idx=0).double()
    emb = nn.Embedding(5, 3, padding_idx=0).double()

    def reference(p, i):
        bag = torch.func.functional_call(ebag, {"weight": p["E"]}, (i["bags"],))
        q = torch.func.functional_call(emb, {"weight": p["Q"]}, (i["query"],))
        z = (bag * q).sum(1) + p["c"]
        loss = F.binary_cross_entropy_with_logits(z, i["y"])
        return loss, {"bag": bag, "z": z}

    E_ = normal(rng, 6, 3)
    Q_ = normal(rng, 5, 3)
    E_[0] = Q_[0] = 0.0
    bags_ = np.array([[1, 2, 0, 5], [0, 0, 0, 0], [3, 3, 4, 0], [2, 1, 5, 4]])
    params = {"E": E_, "Q": Q_, "c": np.array(0.1)}
    inputs = {
        "bags": bags_,
        "query": np.array([1, 2, 0, 4]),
        "y": np.array([1.0, 0.0, 1.0, 0.0]),
    }
    return m, reference, params, inputs


@family
def segmentation_cross_entropy(hessian=False):
    """A 1x1-conv segmentation head, nn.Conv2d(3, 4, 1), judged by
    nn.CrossEntropyLoss(weight=w, label_smoothing=0.1) over (N, C, H, W) logits and
    (N, H, W) int64 labels: log_softmax over axis 1, take_along_axis with
    labels[:, None], the class weights gathered as w[labels]; both terms over sum
    w[labels], torch's normalisation of the smoothing term with weights."""
    rng = np.random.default_rng(13)
    C, eps = 4, 0.1
    m = sg.Model("segmentation_cross_entropy", hessian=hessian)
    x = m.input("x", ("N", 3, 2, 3))
    labels = m.input("labels", ("N", 2, 3), dtype="int64")
    weight = m.input("weight", (C,))
    W, b = m.param("W", (C, 3, 1, 1)), m.param("b", (C,))
    logits = m.output(
        "logits", sg.einsum("nchw,oc->nohw", x, W[:, :, 0, 0]) + b[:, None, None]
    )
    logp = sg.log_softmax(logits, axis=1)
    nll = -sg.take_along_axis(logp, labels[:, None], axis=1)[:, 0]
    wy = weight[labels]
    smooth = -sg.sum(weight[:, None, None] * logp, axis=1) / C
    m.loss(((1 - eps) * sg.sum(wy * nll) + eps * sg.sum(smooth)) / sg.sum(wy))

    conv = functional(nn.Conv2d(3, C, 1), {"weight": "W", "bias": "b"})

    def reference(p, i):
        logits = conv(p, (i["x"],))
        lossf = nn.CrossEntropyLoss(weight=i["weight"], label_smoothing=eps)
        return lossf(logits, i["labels"]), {"logits": logits}

    params = {"W": normal(rng, C, 3, 1, 1), "b": normal(rng, C, scale=0.2)}
    inputs = {
        "x": normal(rng, 2, 3, 2, 3),
        "labels": rng.integers(0, C, (2, 2, 3)),
        "weight": np.array([0.5, 1.0, 2.0, 1.5]),
    }
    return m, reference, params, inputs


# ============================================================ 6. more layers


@family
def local_response_norm(hessian=False):
    """nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0) after nn.Conv1d(2, 5, 1):
    b_c = a_c (k + alpha/n sum_{c' near c} a_c'^2)^-beta, the channel window by zero
    padding the squares on the channel axis (1 before, 1 after) and three shifted
    slices, as torch pads and average-pools them."""
    rng = np.random.default_rng(15)
    m = sg.Model("local_response_norm", hessian=hessian)
    x, w = m.input("x", ("B", 2, 4)), m.input("w", ("B", 5, 4))
    W, b = m.param("W", (5, 2, 1)), m.param("b", (5,))
    a = sg.einsum("bct,oc->bot", x, W[:, :, 0]) + b[:, None]
    sq = a**2
    zero = zeros_like_slice(sq[:, :1])
    sqp = sg.concatenate([zero, sq, zero], axis=1)
    window = (sqp[:, 0:5] + sqp[:, 1:6] + sqp[:, 2:7]) / 3
    y = m.output("y", a / (1.0 + 0.5 * window) ** 0.75)
    m.loss(sg.sum(w * y))

    net = functional(
        nn.Sequential(nn.Conv1d(2, 5, 1), nn.LocalResponseNorm(3, 0.5, 0.75, 1.0)),
        {"0.weight": "W", "0.bias": "b"},
    )

    def reference(p, i):
        y = net(p, (i["x"],))
        return (i["w"] * y).sum(), {"y": y}

    params = {"W": normal(rng, 5, 2, 1), "b": normal(rng, 5, scale=0.3)}
    return m, reference, params, {"x": normal(rng, 2, 2, 4), "w": normal(rng, 2, 5, 4)}


@family
def upsample_linear_symbolic_length(hessian=False):
    """nn.Upsample(scale_factor=2, mode='linear') (align_corners=False) over a symbolic
    length L, then nn.Conv1d(2, 1, 1) and MSE: the clamped neighbours by slices and
    sg.concatenate, even outputs 0.25 left + 0.75 x, odd ones 0.75 x + 0.25 right,
    interleaved by sg.stack(axis=3) and reshape(B, 2, -1)."""
    rng = np.random.default_rng(16)
    m = sg.Model("upsample_linear_symbolic_length", hessian=hessian)
    x = m.input("x", ("B", 2, "L"))
    # an input of shape ("B", 1, "2*L") is refused (a dim must be a name): the
    # target comes as (B, 1, L, 2), (even, odd) pairs, reshaped like the output
    target = m.input("target", ("B", 1, "L", 2)).reshape(x.shape[0], 1, -1)
    s, W, b = m.param("s", (2,)), m.param("W", (1, 2, 1)), m.param("b", (1,))
    h = x * s[:, None]
    left = sg.concatenate([h[:, :, :1], h[:, :, :-1]], axis=2)
    right = sg.concatenate([h[:, :, 1:], h[:, :, -1:]], axis=2)
    even, odd = 0.25 * left + 0.75 * h, 0.75 * h + 0.25 * right
    up = sg.stack([even, odd], axis=3).reshape(-1, 2, 2 * x.shape[2])
    y = m.output("y", sg.einsum("bct,oc->bot", up, W[:, :, 0]) + b[:, None])
    m.loss(sg.mean((sg.tanh(y) - target) ** 2))

    conv = functional(nn.Conv1d(2, 1, 1), {"weight": "W", "bias": "b"})
    upsample = nn.Upsample(scale_factor=2, mode="linear")

    def reference(p, i):
        y = conv(p, (upsample(i["x"] * p["s"][:, None]),))
        target = i["target"].reshape(y.shape)
        return ((torch.tanh(y) - target) ** 2).mean(), {"y": y}

    params = {
        "s": np.array([1.2, -0.7]),
        "W": normal(rng, 1, 2, 1),
        "b": normal(rng, 1, scale=0.2),
    }
    inputs = {"x": normal(rng, 2, 2, 5), "target": normal(rng, 2, 1, 5, 2, scale=0.5)}
    return m, reference, params, inputs


RNN_T = 3


@family
def rnn_relu_bidirectional_two_layers(hessian=False):
    """nn.RNN(2, 3, num_layers=2, nonlinearity='relu', bidirectional=True,
    batch_first=True): each layer's forward and reverse passes (the reverse one over
    the reversed steps, its outputs put back in time order), the next layer fed their
    concatenation (B, T, 6); outputs and h_n (4, B, 3) in torch's layer/direction
    order."""
    rng = np.random.default_rng(17)
    m = sg.Model("rnn_relu_bidirectional_two_layers", hessian=hessian)
    x, h0 = m.input("x", ("B", RNN_T, 2)), m.input("h0", (4, "B", 3))
    target = m.input("target", ("B", RNN_T, 6))
    names, P = {}, {}
    for n, d_in in ((0, 2), (1, 6)):
        for suffix in ("", "_reverse"):
            for kind, shape in (
                ("weight_ih", (3, d_in)),
                ("weight_hh", (3, 3)),
                ("bias_ih", (3,)),
                ("bias_hh", (3,)),
            ):
                ours = f"{kind.replace('eight', '').replace('ias', '')}{n}{suffix[:2]}"
                names[f"{kind}_l{n}{suffix}"] = ours
                P[(n, suffix, kind)] = m.param(ours, shape)
    seq = [x[:, t] for t in range(RNN_T)]
    finals = []
    for n in (0, 1):
        both = []
        for d, suffix in enumerate(("", "_reverse")):
            Wih, Whh, bih, bhh = (
                P[(n, suffix, k)]
                for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            h, outs = h0[2 * n + d], []
            for xt in seq if d == 0 else seq[::-1]:
                h = sg.relu(xt @ Wih.T + bih + h @ Whh.T + bhh)
                outs.append(h)
            finals.append(h)
            both.append(outs if d == 0 else outs[::-1])
        seq = [sg.concatenate([f, r], axis=1) for f, r in zip(*both, strict=True)]
    out = m.output("out", sg.stack(seq, axis=1))
    m.output("h_n", sg.stack(finals, axis=0))
    m.loss(sg.mean((out - target) ** 2))

    rnn = nn.RNN(
        2, 3, num_layers=2, nonlinearity="relu", bidirectional=True, batch_first=True
    ).double()

    def reference(p, i):
        state = {t: p[o] for t, o in names.items()}
        out, h_n = torch.func.functional_call(rnn, state, (i["x"], i["h0"]))
        return F.mse_loss(out, i["target"]), {"out": out, "h_n": h_n}

    params = {}
    for tname, ours in names.items():
        shape = dict(rnn.named_parameters())[tname].shape
        params[ours] = normal(rng, *shape, scale=0.6)
    inputs = {
        "x": normal(rng, 2, RNN_T, 2),
        "h0": normal(rng, 4, 2, 3, scale=0.5),
        "target": normal(rng, 2, RNN_T, 6, scale=0.5),
    }
    return m, reference, params, inputs


@family
def mha_bias_kv_zero_attn_kdim(hessian=False):
    """nn.MultiheadAttention(4, 2, batch_first=True, add_bias_kv=True,
    add_zero_attn=True, kdim=3, vdim=5): separate q/k/v projections, a learned key and
    value appended to every sample's keys (broadcast over the batch by adding 0 * a
    slice, symgrad has no broadcast_to), then a zero key and value appended per head;
    the float key_padding_mask gets zeros for both extra keys."""
    rng = np.random.default_rng(18)
    L, S, E, H, dh = 2, 3, 4, 2, 2
    m = sg.Model("mha_bias_kv_zero_attn_kdim", hessian=hessian)
    query, key = m.input("query", ("B", L, E)), m.input("key", ("B", S, 3))
    value, mask = m.input("value", ("B", S, 5)), m.input("mask", ("B", S))
    target = m.input("target", ("B", L, E))
    Wq, Wk, Wv = m.param("Wq", (E, E)), m.param("Wk", (E, 3)), m.param("Wv", (E, 5))
    b, bk, bv = (
        m.param("b_in", (3 * E,)),
        m.param("bias_k", (1, 1, E)),
        m.param("bias_v", (1, 1, E)),
    )
    Wo, bo = m.param("Wout", (E, E)), m.param("bout", (E,))
    q = _heads(query @ Wq.T + b[:E], L, H, dh)
    k = key @ Wk.T + b[E : 2 * E]
    v = value @ Wv.T + b[2 * E :]
    k = _heads(sg.concatenate([k, bk + 0.0 * k[:, :1]], axis=1), S + 1, H, dh)
    v = _heads(sg.concatenate([v, bv + 0.0 * v[:, :1]], axis=1), S + 1, H, dh)
    k = sg.concatenate([k, 0.0 * k[:, :, :1]], axis=2)
    v = sg.concatenate([v, 0.0 * v[:, :, :1]], axis=2)
    zero = 0.0 * mask[:, :1]
    full_mask = sg.concatenate([mask, zero, zero], axis=1)[:, None, None, :]
    attn = sg.softmax(q @ sg.swapaxes(k, -1, -2) / math.sqrt(dh) + full_mask, axis=-1)
    out = (attn @ v).transpose(0, 2, 1, 3).reshape(-1, L, E) @ Wo.T + bo
    out = m.output("out", out)
    m.output("weights", sg.mean(attn, axis=1))
    m.loss(sg.mean((out - target) ** 2))

    mha = nn.MultiheadAttention(
        E, H, batch_first=True, add_bias_kv=True, add_zero_attn=True, kdim=3, vdim=5
    ).double()
    names = {
        "q_proj_weight": "Wq",
        "k_proj_weight": "Wk",
        "v_proj_weight": "Wv",
        "in_proj_bias": "b_in",
        "bias_k": "bias_k",
        "bias_v": "bias_v",
        "out_proj.weight": "Wout",
        "out_proj.bias": "bout",
    }

    def reference(p, i):
        out, weights = torch.func.functional_call(
            mha,
            {t: p[o] for t, o in names.items()},
            (i["query"], i["key"], i["value"]),
            {"key_padding_mask": i["mask"], "need_weights": True},
        )
        return F.mse_loss(out, i["target"]), {"out": out, "weights": weights}

    params = {
        "Wq": normal(rng, E, E, scale=0.5),
        "Wk": normal(rng, E, 3, scale=0.5),
        "Wv": normal(rng, E, 5, scale=0.5),
        "b_in": normal(rng, 3 * E, scale=0.1),
        "bias_k": normal(rng, 1, 1, E, scale=0.5),
        "bias_v": normal(rng, 1, 1, E, scale=0.5),
        "Wout": normal(rng, E, E, scale=0.5),
        "bout": normal(rng, E, scale=0.1),
    }
    mask_ = np.zeros((2, S))
    mask_[1, 1] = -1e30
    inputs = {
        "query": normal(rng, 2, L, E),
        "key": normal(rng, 2, S, 3),
        "value": normal(rng, 2, S, 5),
        "mask": mask_,
        "target": normal(rng, 2, L, E),
    }
    return m, reference, params, inputs


@family
def rmsnorm_after_linear(hessian=False):
    """nn.Linear(3, 4) -> nn.RMSNorm(4) (eps=None: torch takes finfo(float64).eps at
    run time) -> tanh, weighted sum. Sample 0's input is zero and the bias too, in an
    edge test: h = 0, where d(h / rms)/dh = 1/sqrt(eps) ~ 6.7e7."""
    rng = np.random.default_rng(19)
    eps = float(np.finfo(np.float64).eps)
    m = sg.Model("rmsnorm_after_linear", hessian=hessian)
    x, w = m.input("x", ("B", 3)), m.input("w", ("B", 4))
    W, b, g = m.param("W", (4, 3)), m.param("b", (4,)), m.param("g", (4,))
    h = x @ W.T + b
    y = m.output("y", h / sg.sqrt(sg.mean(h**2, axis=-1, keepdims=True) + eps) * g)
    m.loss(sg.sum(w * sg.tanh(y)))

    net = functional(
        nn.Sequential(nn.Linear(3, 4), nn.RMSNorm(4)),
        {"0.weight": "W", "0.bias": "b", "1.weight": "g"},
    )

    def reference(p, i):
        y = net(p, (i["x"],))
        return (i["w"] * torch.tanh(y)).sum(), {"y": y}

    params = {
        "W": normal(rng, 4, 3),
        "b": normal(rng, 4, scale=0.3),
        "g": 1 + normal(rng, 4, scale=0.2),
    }
    return m, reference, params, {"x": normal(rng, 3, 3), "w": normal(rng, 3, 4)}


# ============================================================= the families' tests

module_of = FAMILIES.module
COMPILE_TIMES: dict[str, float] = {}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_layer_agrees_with_the_torch_module_and_central_differences(name):
    start = time.perf_counter()
    module_of(name)
    COMPILE_TIMES.setdefault(name, time.perf_counter() - start)
    FAMILIES.assert_agrees(name)


HESSIAN_FAMILIES = [
    "conv1d_strided_dilated",
    "conv_transpose1d_stride2",
    "batchnorm1d_training",
    "groupnorm_4d",
    "layernorm_two_trailing_dims",
    "instance_norm_prelu",
    "multihead_attention_padding",
    "pixel_shuffle_subpixel",
    "segmentation_cross_entropy",
    "local_response_norm",
    "upsample_linear_symbolic_length",
    "rmsnorm_after_linear",
    "mha_bias_kv_zero_attn_kdim",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_torch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = [
    "conv1d_strided_dilated",
    "depthwise_separable_reflect",
    "conv_transpose1d_stride2",
    "layernorm_two_trailing_dims",
    "instance_norm_prelu",
    "embedding_bag_padding",
    "gru_two_layers",
    "rnn_relu_bidirectional_two_layers",
    "rmsnorm_after_linear",
    "local_response_norm",
]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_its_sizes_agrees_with_torch(name):
    FAMILIES.assert_unrolled_agrees(name)


BATCH_DIM = {
    "batchnorm1d_training": "N",
    "segmentation_cross_entropy": "N",
}


@pytest.mark.parametrize("name", [n for n in FAMILIES if n != "embedding_bag_padding"])
def test_a_batch_of_one_agrees_with_torch(name):
    """The same module at batch size 1 (BatchNorm1d with N = 1 still has L = 4 values
    per channel, as torch requires)."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    small = first_along(module, inputs, BATCH_DIM.get(name, "B"), 1)
    check(module, reference, params, small)
    assert_matches_central_differences(module, params, small)


def test_embedding_bag_hessian_against_a_gather_twin():
    """torch has no double backward of embedding_bag ('the derivative for
    _embedding_bag_backward is not implemented'), so the Hessian's judge is the same
    bag written with F.embedding and a mask, itself checked against EmbeddingBag's
    value and gradient first."""
    _, reference, params, inputs = FAMILIES["embedding_bag_padding"]()

    def gathered(p, i):
        keep = (i["bags"] != 0).double()
        rows = F.embedding(i["bags"], p["E"]) * keep[:, :, None]
        bag = rows.sum(1) / keep.sum(1).clamp(min=1.0)[:, None]
        q = F.embedding(i["query"], p["Q"]) * (i["query"] != 0).double()[:, None]
        z = (bag * q).sum(1) + p["c"]
        loss = F.binary_cross_entropy_with_logits(z, i["y"])
        return loss, {"bag": bag, "z": z}

    check(module_of("embedding_bag_padding"), gathered, params, inputs)
    check(module_of("embedding_bag_padding"), reference, params, inputs)
    module = module_of("embedding_bag_padding", hessian=True)
    assert_second_order_agrees(module, gathered, params, inputs, scaled=True)


# ================================================================ edge points


def test_conv2d_relu_exactly_at_zero_follows_torchs_zero_slope():
    """A blank image and a zero bias in channel 0: the conv output is exactly 0 there,
    where torch's ReLU passes no gradient (the channel-0 kernel gets none from it)."""
    _, reference, params, inputs = FAMILIES["conv2d_3x3_same_relu_gap"]()
    x = inputs["x"].copy()
    x[1] = 0.0
    module = module_of("conv2d_3x3_same_relu_gap")
    check(module, reference, params, {**inputs, "x": x})
    _, grads = module.value_and_grad(
        params, {**inputs, "x": x[1:2], "labels": inputs["labels"][1:2]}
    )
    assert np.all(grads["K"][0] == 0.0) and grads["b"][0] == 0.0


def test_prelu_exactly_at_the_kink_takes_the_slope_branch_as_torch():
    """Channel 0 of sample 0 normalises to exactly 0 in its middle with bias 0: torch's
    PReLU backward uses the slope a there (and gives a no gradient from it)."""
    _, reference, params, inputs = FAMILIES["instance_norm_prelu"]()
    params = {**params, "be": np.array([0.0, 0.2, -0.1])}
    module = module_of("instance_norm_prelu")
    check(module, reference, params, inputs)
    check(module_of("instance_norm_prelu", unroll=True), reference, params, inputs)


def test_layernorm_of_only_constant_samples():
    """Every sample constant: the normalised values are 0, the output is the bias, g
    gets no gradient (as in torch), be and V do."""
    _, reference, params, inputs = FAMILIES["layernorm_two_trailing_dims"]()
    inputs = {**inputs, "x": np.full((2, 3, 4), -1.25)}
    module = module_of("layernorm_two_trailing_dims")
    check(module, reference, params, inputs)
    _, grads = module.value_and_grad(params, inputs)
    assert np.all(grads["g"] == 0.0)


def test_batchnorm_with_one_sample_and_every_channel_constant():
    """N = 1 and every channel constant along L: zero batch variance everywhere, the
    output is beta, the running variance moves towards 0."""
    _, reference, params, inputs = FAMILIES["batchnorm1d_training"]()
    x = np.broadcast_to(np.array([0.3, -1.0, 2.0])[None, :, None], (1, 3, 4)).copy()
    inputs = {**inputs, "x": x, "w": inputs["w"][:1]}
    check(module_of("batchnorm1d_training"), reference, params, inputs)


def test_attention_with_all_keys_but_one_masked():
    """A sample whose every key but the last is masked: its weights are one-hot, and
    the queries' projections get no gradient from it."""
    _, reference, params, inputs = FAMILIES["multihead_attention_padding"]()
    mask = inputs["mask"].copy()
    mask[1] = [-1e30, -1e30, -1e30, 0.0]
    check(
        module_of("multihead_attention_padding"),
        reference,
        params,
        {**inputs, "mask": mask},
    )


def test_attention_with_a_minus_inf_key_padding_mask():
    """A torch user's float mask is usually -inf (masked_fill(-inf)); the input is
    data, not a constant, so symgrad accepts it: value and gradients as torch's."""
    _, reference, params, inputs = FAMILIES["multihead_attention_padding"]()
    mask = np.where(inputs["mask"] < 0, -np.inf, 0.0)
    check(
        module_of("multihead_attention_padding"),
        reference,
        params,
        {**inputs, "mask": mask},
    )


def test_decoder_with_torchs_generate_square_subsequent_mask():
    """nn.Transformer.generate_square_subsequent_mask(3): -inf above the diagonal, as
    a porting user passes it."""
    _, reference, params, inputs = FAMILIES["transformer_decoder_prenorm_gelu"]()
    causal = nn.Transformer.generate_square_subsequent_mask(3, dtype=torch.float64)
    inputs = {**inputs, "causal": causal.numpy()}
    check(module_of("transformer_decoder_prenorm_gelu"), reference, params, inputs)


def test_segmentation_cross_entropy_with_logits_of_a_thousand():
    """Logits of +-1000 (a confident, sometimes wrong head): log_softmax stays finite,
    as torch's does."""
    _, reference, params, inputs = FAMILIES["segmentation_cross_entropy"]()
    params = {**params, "W": 300 * params["W"]}
    check(module_of("segmentation_cross_entropy"), reference, params, inputs)


def test_gru_with_saturated_gates():
    """Inputs of +-50: every gate saturates (sigmoid and tanh at +-1 to round-off)."""
    _, reference, params, inputs = FAMILIES["gru_two_layers"]()
    inputs = {**inputs, "x": 50 * np.sign(inputs["x"])}
    check(module_of("gru_two_layers"), reference, params, inputs)


def test_compile_times():
    """Every family compiled in the first test; none should take more than ~5 s (the
    times are printed with -s)."""
    for name in FAMILIES:
        if name not in COMPILE_TIMES:
            start = time.perf_counter()
            module_of(name)
            COMPILE_TIMES[name] = time.perf_counter() - start
    print({k: round(v, 2) for k, v in sorted(COMPILE_TIMES.items())})
    slow = {k: v for k, v in COMPILE_TIMES.items() if v > 5.0}
    assert not slow, slow


def test_decoder_hvp_against_torchs_double_backward_on_the_math_kernel():
    """hessian=True on the decoder layer: hvp against torch's double backward, which
    needs the math attention kernel (the CPU flash kernel has no second derivative:
    'derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
    implemented')."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _, reference, params, inputs = FAMILIES["transformer_decoder_prenorm_gelu"]()
    module = module_of("transformer_decoder_prenorm_gelu", hessian=True)
    rng = np.random.default_rng(1)
    v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
    tp = {k: torch.tensor(p, requires_grad=True) for k, p in params.items()}
    ti = {k: torch.tensor(x) for k, x in inputs.items()}
    with sdpa_kernel(SDPBackend.MATH):
        loss, _ = reference(tp, ti)
        grads = torch.autograd.grad(loss, list(tp.values()), create_graph=True)
        dot = sum(
            (g * torch.tensor(v[k])).sum() for g, k in zip(grads, tp, strict=True)
        )
        expected = torch.autograd.grad(dot, list(tp.values()))
    product = module.hvp(params, inputs, v)
    floor = 1e-3 * max(float(e.abs().max()) for e in expected)
    for k, e in zip(tp, expected, strict=True):
        assert rel(product[k], e.numpy(), floor) <= 1e-8, k


def test_same_padded_conv1d_of_a_symbolic_length_down_to_one():
    """nn.Conv1d(2, 3, 3, padding=1) over a symbolic length L: the taps xp[:, :, 0:-2],
    xp[:, :, 1:-1], xp[:, :, 2:] of the padded input, at L = 6, 2 and 1 (one output per
    input, as torch), and unrolled at L = 1."""
    m = sg.Model("conv1d_symbolic_length")
    x, t = m.input("x", ("B", 2, "L")), m.input("t", ("B", 3, "L"))
    W, b = m.param("W", (3, 2, 3)), m.param("b", (3,))
    pad = zeros_like_slice(x[:, :, :1])
    xp = sg.concatenate([pad, x, pad], axis=2)
    taps = sg.stack([xp[:, :, 0:-2], xp[:, :, 1:-1], xp[:, :, 2:]], axis=2)
    y = m.output("y", sg.einsum("bckt,ock->bot", taps, W) + b[:, None])
    m.loss(sg.mean((sg.tanh(y) - t) ** 2))
    m.unroll(B=1, L=1)
    module = compile_module(m)

    def reference(p, i):
        y = F.conv1d(i["x"], p["W"], p["b"], padding=1)
        return ((torch.tanh(y) - i["t"]) ** 2).mean(), {"y": y}

    rng = np.random.default_rng(14)
    params = {"W": normal(rng, 3, 2, 3), "b": normal(rng, 3)}
    for B, L in ((2, 6), (2, 2), (3, 1)):
        inputs = {"x": normal(rng, B, 2, L), "t": normal(rng, B, 3, L)}
        check(module, reference, params, inputs)
        assert_matches_central_differences(module, params, inputs)
    calls, restore = spy_unrolled(module)
    try:
        inputs = {"x": normal(rng, 1, 2, 1), "t": normal(rng, 1, 3, 1)}
        check(module, reference, params, inputs)
    finally:
        restore()
    assert set(calls) == {"_value_and_grad_B_1_L_1"}, calls


def test_reshape_to_a_size_computed_from_x_shape():
    """torch's up.view(b, c, 2 * l) in NumPy spelling: reshape to 2 * x.shape[2],
    where x.shape[2] is the symbolic L (the README: sizes in arithmetic read as the
    size); and x.reshape(x.shape[0] * 2, -1). reshape(B, 2, -1) works and gives the
    shape (B, 2, 2*L), and x.reshape(-1, x.shape[2]) gives (2*B, L)."""
    m = sg.Model("reshape_size_arithmetic")
    x = m.input("x", ("B", 2, "L"))
    interleaved = sg.stack([x, 2.0 * x], axis=3)
    assert interleaved.reshape(x.shape[0], 2, -1).shape == ("B", 2, "2*L")
    y = interleaved.reshape(x.shape[0], 2, 2 * x.shape[2])
    assert y.shape == ("B", 2, "2*L")
    assert interleaved.reshape(-1, 2, 2 * x.shape[2]).shape == ("B", 2, "2*L")
    # torch's x.view(b * c, -1) (heads into the batch) fails the same way
    assert x.reshape(x.shape[0] * 2, -1).shape == ("2*B", "L")


def test_rmsnorm_of_a_zero_row_under_torchs_default_eps():
    """A zero input row with a zero bias: h = 0, the norm's derivative there is
    1/sqrt(finfo.eps) ~ 6.7e7, and W's gradient through it matches torch's."""
    _, reference, params, inputs = FAMILIES["rmsnorm_after_linear"]()
    x = inputs["x"].copy()
    x[0] = 0.0
    params = {**params, "b": np.zeros(4)}
    check(module_of("rmsnorm_after_linear"), reference, params, {**inputs, "x": x})


def test_relu_rnn_from_zero_state_and_zero_input_is_at_the_kink():
    """h0 = 0, x = 0 and zero biases: every pre-activation is exactly 0, where torch's
    ReLU passes no gradient; then a sample with only its first step nonzero."""
    _, reference, params, inputs = FAMILIES["rnn_relu_bidirectional_two_layers"]()
    params = {k: 0.0 * v if k.startswith("b") else v for k, v in params.items()}
    zero = {**inputs, "x": 0.0 * inputs["x"], "h0": 0.0 * inputs["h0"]}
    module = module_of("rnn_relu_bidirectional_two_layers")
    check(module, reference, params, zero)
    x = zero["x"].copy()
    x[1, 0] = [1.0, -2.0]
    check(module, reference, params, {**zero, "x": x})


@pytest.mark.parametrize("n", [1, 2])
def test_linear_upsample_of_a_length_one_or_two_signal(n):
    """L = 1: both neighbours clamp to the one sample, the output is that sample
    twice, as torch's; L = 2: every neighbour is a border one."""
    _, reference, params, inputs = FAMILIES["upsample_linear_symbolic_length"]()
    module = module_of("upsample_linear_symbolic_length")
    small = first_along(module, inputs, "L", n)
    check(module, reference, params, small)
    assert_matches_central_differences(module, params, small)


# ============================================================ a porter's spellings


def test_torch_spellings_a_porter_types_get_a_hint():
    m = sg.Model("torch_spellings")
    x = m.input("x", ("B", 3, 4))
    attempts = {
        "view": lambda: x.view(-1, 12),
        "permute": lambda: x.permute(0, 2, 1),
        "unsqueeze": lambda: x.unsqueeze(1),
        "clamp": lambda: x.clamp(0.0, 1.0),
        "masked_fill": lambda: x.masked_fill(x > 0, 0.0),
    }
    hints = {
        "view": "reshape",
        "permute": "transpose",
        "unsqueeze": "expand_dims",
        "clamp": "clip",
        "masked_fill": "where",
    }
    for what, attempt in attempts.items():
        with pytest.raises((AttributeError, TypeError)) as info:
            attempt()
        assert hints[what] in str(info.value), (what, str(info.value))


def test_torch_max_with_a_dim_is_numpys_max_values_only():
    """torch.max(x, 1) is (values, indices); sg.max(x, 1) is NumPy's: the values, so a
    ported torch.max(x, 1)[0] picks the first sample (documented NumPy semantics), with
    a warning naming torch's meaning."""
    m = sg.Model("max_values_only")
    x = m.input("x", ("B", 3, 4))
    assert sg.max(x, 1).shape == ("B", 4)
    with pytest.warns(UserWarning, match=r"torch's x.max\(1\)\[0\], the values"):
        assert sg.max(x, 1)[0].shape == (4,)
    with pytest.warns(UserWarning, match=r"the indices, write sg.argsort\(x, axis\)"):
        x.min(axis=-1)[1]
