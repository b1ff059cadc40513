"""Round 24 of new-user models: PyTorch models ported through what commit 444fae8 added
(sg.sliding_window_view, sg.segment_sum, einsum contracting several letters as one
matmul), with PyTorch (float64) and central finite differences as the judges. Families:
a LeNet (conv + relu + max_pool2d(2) twice over, linear, cross-entropy; symbolic
batch), a temporal CNN over a symbolic length (causal sg.pad, dilation 2 as
windows[..., ::2], a 1x1 residual conv), depthwise, grouped (channels split by a
reshape, einsum "bgchwij,gocij->bgohw") and stride-2 convs, a ResNet basic block with
training-mode batch norm by sg.mean/sg.var over (0, 2, 3), 2x2 average and global
average pooling, a stride-2 ConvTranspose2d as a conv of the zero-dilated padded input
with the flipped kernel, Kim's text CNN (max-over-time, avg_pool1d), an edge-weighted
two-layer GCN (degrees by segment_sum), GraphSAGE mean aggregation with an isolated node
and a mean readout into G graphs with an empty graph, a two-head GAT with a segment
softmax (stop_gradient per-head max shift), an NNConv edge network (per-edge weight
matrices, einsum "eoi,ei->eo") with a sum readout, nn.Bilinear over "..." plus a
broadcast "...ij,...jk", a tensor-train layer "bijk,ia,ajc,ckd->bd", grouped-query
attention in einsum alone (against torch's SDPA); their Hessians and unrolled code,
other sizes (batch 1, T = 1, one node, graphs without edges), the ResNet block's hvp
against torch's double backward, max-pool ties on a blank background, a ResNet stem
(circular-padded conv, max_pool2d(3, 2, padding=1)), a dilated conv2d over symbolic H
and W, a saliency gradient through the windows, determinism of the source,
`symgrad build`/`check` of a user conv-GNN file, and the errors of typical mistakes.
A scratch fuzz of 400 random 2- and 3-operand einsums (symbolic letters at sizes 0, 1,
4) and of windows (negative axes, windows of windows, flipped and stepped windows, bool
and int64 windows, views read after their base is reused in place) found nothing.

Found and fixed: init_params gave a conv kernel and its bias zeros (a ReLU CNN started
with zero conv gradients; now torch's fan_in of all but the first axis); x.unfold and
x.index_add raised a bare AttributeError (now hints naming sg's functions); a symbolic
axis one shorter than a window passed the module's check and failed inside NumPy's
sliding_window_view (the check now asks for the window's size, as NumPy does);
sg.segment_sum's arguments in the wrong order gave a misleading message; rows of rank
3 were scattered by np.add.at (now bincounts, as rank-2 rows are).
"""

from __future__ import annotations

import re

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
    run_cli,
)

import symgrad as sg
from symgrad.cli import generate
from symgrad.verify import load_source

torch = pytest.importorskip("torch")
F = torch.nn.functional

# ===================================================================== 1. model families

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module


def _conv2d(x, K, pad=0):
    """torch's F.conv2d(x, K, padding=pad) (no bias, stride 1) the way the README
    writes it: windows of the padded image contracted with the kernel."""
    if pad:
        x = sg.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = K.shape[2], K.shape[3]
    windows = sg.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return sg.einsum("bchwij,ocij->bohw", windows, K)


def _max_pool2(h):
    return sg.sliding_window_view(h, (2, 2), axis=(2, 3))[:, :, ::2, ::2].max(
        axis=(-2, -1)
    )


def _cross_entropy(logits, labels):
    logp = sg.log_softmax(logits, axis=1)
    return -sg.mean(sg.take_along_axis(logp, labels[:, None], axis=1))


@family
def lenet_cnn(hessian=False):
    """LeNet at 8x8: conv 3x3 (1 -> 3) + relu + max_pool2d(2), conv 2x2 (3 -> 4) +
    relu, flatten, linear to 3 classes, cross-entropy on int64 labels; batch B."""
    rng = np.random.default_rng(0)
    m = sg.Model("lenet_cnn", hessian=hessian)
    x = m.input("x", ("B", 1, 8, 8))
    y = m.input("y", ("B",), dtype="int64")
    K1, b1 = m.param("K1", (3, 1, 3, 3)), m.param("b1", (3,))
    K2, b2 = m.param("K2", (4, 3, 2, 2)), m.param("b2", (4,))
    W, b = m.param("W", (3, 16)), m.param("b", (3,))
    h = _max_pool2(sg.relu(_conv2d(x, K1) + b1[:, None, None]))  # (B, 3, 3, 3)
    h = sg.relu(_conv2d(h, K2) + b2[:, None, None])  # (B, 4, 2, 2)
    logits = m.output("logits", h.reshape((-1, 16)) @ W.T + b)
    m.loss(_cross_entropy(logits, y))

    def reference(p, i):
        h = F.max_pool2d(F.relu(F.conv2d(i["x"], p["K1"], p["b1"])), 2)
        h = F.relu(F.conv2d(h, p["K2"], p["b2"]))
        logits = h.flatten(1) @ p["W"].T + p["b"]
        return F.cross_entropy(logits, i["y"]), {"logits": logits}

    B = 3
    params = {
        "K1": normal(rng, 3, 1, 3, 3, scale=0.5),
        "b1": normal(rng, 3, scale=0.1),
        "K2": normal(rng, 4, 3, 2, 2, scale=0.4),
        "b2": normal(rng, 4, scale=0.1),
        "W": normal(rng, 3, 16, scale=0.5),
        "b": normal(rng, 3, scale=0.1),
    }
    inputs = {"x": normal(rng, B, 1, 8, 8), "y": np.array([0, 2, 1], np.int64)}
    return m, reference, params, inputs


TCN_C, TCN_H = 2, 3


@family
def tcn_dilated_causal(hessian=False):
    """A temporal CNN over a symbolic length T: a causal conv of width 3 and dilation
    2 (left pad 4, windows of 5 taken every other tap), relu, a causal conv of width
    2, a residual 1x1 conv of the input, an MSE to targets."""
    rng = np.random.default_rng(1)
    m = sg.Model("tcn_dilated_causal", hessian=hessian)
    x = m.input("x", ("B", TCN_C, "T"))
    target = m.input("target", ("B", TCN_H, "T"))
    K1, b1 = m.param("K1", (TCN_H, TCN_C, 3)), m.param("b1", (TCN_H,))
    K2, b2 = m.param("K2", (TCN_H, TCN_H, 2)), m.param("b2", (TCN_H,))
    R = m.param("R", (TCN_H, TCN_C))
    padded = sg.pad(x, ((0, 0), (0, 0), (4, 0)))
    taps = sg.sliding_window_view(padded, 5, axis=2)[..., ::2]  # (B, C, T, 3)
    h = sg.relu(sg.einsum("bctk,ock->bot", taps, K1) + b1[:, None])
    taps = sg.sliding_window_view(sg.pad(h, ((0, 0), (0, 0), (1, 0))), 2, axis=2)
    y = sg.einsum("bctk,ock->bot", taps, K2) + b2[:, None]
    y = m.output("y", y + sg.einsum("oc,bct->bot", R, x))
    m.loss(sg.mean((y - target) ** 2))

    def reference(p, i):
        h = F.relu(F.conv1d(F.pad(i["x"], (4, 0)), p["K1"], p["b1"], dilation=2))
        y = F.conv1d(F.pad(h, (1, 0)), p["K2"], p["b2"])
        y = y + F.conv1d(i["x"], p["R"][:, :, None])
        return F.mse_loss(y, i["target"]), {"y": y}

    B, T = 2, 6
    params = {
        "K1": normal(rng, TCN_H, TCN_C, 3, scale=0.5),
        "b1": normal(rng, TCN_H, scale=0.1),
        "K2": normal(rng, TCN_H, TCN_H, 2, scale=0.5),
        "b2": normal(rng, TCN_H, scale=0.1),
        "R": normal(rng, TCN_H, TCN_C, scale=0.5),
    }
    inputs = {"x": normal(rng, B, TCN_C, T), "target": normal(rng, B, TCN_H, T)}
    return m, reference, params, inputs


@family
def grouped_depthwise_strided(hessian=False):
    """A MobileNet-ish stack: a depthwise 3x3 conv (groups = channels: einsum
    "bchwij,cij->bchw"), a grouped 3x3 conv with 2 groups and padding 1 (channels
    split by a reshape, einsum "bgchwij,gocij->bgohw"), tanh, then a stride-2 3x3 conv
    (windows[:, :, ::2, ::2]) and an MSE to targets."""
    rng = np.random.default_rng(2)
    m = sg.Model("grouped_depthwise_strided", hessian=hessian)
    x = m.input("x", ("B", 4, 7, 7))
    target = m.input("target", ("B", 3, 2, 2))
    Kd = m.param("Kd", (4, 1, 3, 3))  # torch's depthwise weight shape
    Kg = m.param("Kg", (4, 2, 3, 3))  # groups=2: (out, in / groups, kh, kw)
    Ks, bs = m.param("Ks", (3, 4, 3, 3)), m.param("bs", (3,))
    windows = sg.sliding_window_view(x, (3, 3), axis=(2, 3))
    h = sg.einsum("bchwij,cij->bchw", windows, Kd[:, 0])  # (B, 4, 5, 5)
    padded = sg.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sg.sliding_window_view(padded, (3, 3), axis=(2, 3))  # (B, 4, 5, 5, 3, 3)
    grouped = windows.reshape((-1, 2, 2, 5, 5, 3, 3))
    h = sg.einsum("bgchwij,gocij->bgohw", grouped, Kg.reshape((2, 2, 2, 3, 3)))
    h = sg.tanh(h.reshape((-1, 4, 5, 5)))
    strided = sg.sliding_window_view(h, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    out = sg.einsum("bchwij,ocij->bohw", strided, Ks) + bs[:, None, None]
    out = m.output("out", out)
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        h = F.conv2d(i["x"], p["Kd"], groups=4)
        h = torch.tanh(F.conv2d(h, p["Kg"], padding=1, groups=2))
        out = F.conv2d(h, p["Ks"], p["bs"], stride=2)
        return F.mse_loss(out, i["target"]), {"out": out}

    B = 2
    params = {
        "Kd": normal(rng, 4, 1, 3, 3, scale=0.5),
        "Kg": normal(rng, 4, 2, 3, 3, scale=0.4),
        "Ks": normal(rng, 3, 4, 3, 3, scale=0.3),
        "bs": normal(rng, 3, scale=0.1),
    }
    inputs = {"x": normal(rng, B, 4, 7, 7), "target": normal(rng, B, 3, 2, 2)}
    return m, reference, params, inputs


BN_EPS = 1e-5


def _batch_norm(z, gamma, beta):
    """Training-mode batch norm over (0, 2, 3), biased variance, as torch's."""
    mu = sg.mean(z, axis=(0, 2, 3), keepdims=True)
    var = sg.var(z, axis=(0, 2, 3), keepdims=True)
    return (z - mu) / sg.sqrt(var + BN_EPS) * gamma[:, None, None] + beta[:, None, None]


@family
def resnet_bn_block(hessian=False):
    """A ResNet basic block: a 'same' stem conv + batch norm + relu, then conv + BN +
    relu + conv + BN + the identity shortcut + relu, a 2x2 average pool (a mean over
    windows[:, :, ::2, ::2]), global average pooling, linear, cross-entropy."""
    rng = np.random.default_rng(3)
    m = sg.Model("resnet_bn_block", hessian=hessian)
    x = m.input("x", ("B", 3, 6, 6))
    y = m.input("y", ("B",), dtype="int64")
    K0 = m.param("K0", (4, 3, 3, 3))
    g0, be0 = m.param("g0", (4,)), m.param("be0", (4,))
    K1 = m.param("K1", (4, 4, 3, 3))
    g1, be1 = m.param("g1", (4,)), m.param("be1", (4,))
    K2 = m.param("K2", (4, 4, 3, 3))
    g2, be2 = m.param("g2", (4,)), m.param("be2", (4,))
    W, b = m.param("W", (3, 4)), m.param("b", (3,))
    h = sg.relu(_batch_norm(_conv2d(x, K0, pad=1), g0, be0))
    z = sg.relu(_batch_norm(_conv2d(h, K1, pad=1), g1, be1))
    z = sg.relu(_batch_norm(_conv2d(z, K2, pad=1), g2, be2) + h)
    pooled = sg.sliding_window_view(z, (2, 2), axis=(2, 3))[:, :, ::2, ::2]
    pooled = pooled.mean(axis=(-2, -1))  # (B, 4, 3, 3)
    logits = m.output("logits", sg.mean(pooled, axis=(2, 3)) @ W.T + b)
    m.loss(_cross_entropy(logits, y))

    def reference(p, i):
        def bn(z, g, b):
            return F.batch_norm(z, None, None, g, b, training=True, eps=BN_EPS)

        h = F.relu(bn(F.conv2d(i["x"], p["K0"], padding=1), p["g0"], p["be0"]))
        z = F.relu(bn(F.conv2d(h, p["K1"], padding=1), p["g1"], p["be1"]))
        z = F.relu(bn(F.conv2d(z, p["K2"], padding=1), p["g2"], p["be2"]) + h)
        pooled = F.avg_pool2d(z, 2)
        logits = pooled.mean(dim=(2, 3)) @ p["W"].T + p["b"]
        return F.cross_entropy(logits, i["y"]), {"logits": logits}

    B = 2
    params = {
        "K0": normal(rng, 4, 3, 3, 3, scale=0.3),
        "g0": 1 + normal(rng, 4, scale=0.1),
        "be0": normal(rng, 4, scale=0.1),
        "K1": normal(rng, 4, 4, 3, 3, scale=0.3),
        "g1": 1 + normal(rng, 4, scale=0.1),
        "be1": normal(rng, 4, scale=0.1),
        "K2": normal(rng, 4, 4, 3, 3, scale=0.3),
        "g2": 1 + normal(rng, 4, scale=0.1),
        "be2": normal(rng, 4, scale=0.1),
        "W": normal(rng, 3, 4),
        "b": normal(rng, 3, scale=0.1),
    }
    inputs = {"x": normal(rng, B, 3, 6, 6), "y": np.array([2, 0], np.int64)}
    return m, reference, params, inputs


def _dilate(z, axis):
    """Zeros between the entries along a fixed ``axis`` (stride 2 of a transposed
    conv): interleave with zeros by stack + reshape, drop the trailing zero."""
    n = z.shape[axis]
    both = sg.stack([z, sg.zeros_like(z)], axis=axis + 1)
    shape = tuple(-1 if k == 0 else d for k, d in enumerate(z.shape))
    shape = shape[:axis] + (2 * n,) + shape[axis + 1 :]
    return sg.split(both.reshape(shape), [2 * n - 1], axis=axis)[0]


@family
def transposed_conv_decoder(hessian=False):
    """A DCGAN-style decoder step: ConvTranspose2d(3 -> 2, 3x3, stride 2) written as a
    conv of the zero-dilated, (k - 1)-padded input with the flipped kernel (in and out
    channels swapped by the einsum letters), bias, sigmoid, MSE to a 7x7 target."""
    rng = np.random.default_rng(4)
    m = sg.Model("transposed_conv_decoder", hessian=hessian)
    z = m.input("z", ("B", 3, 3, 3))
    target = m.input("target", ("B", 2, 7, 7))
    K, b = m.param("K", (3, 2, 3, 3)), m.param("b", (2,))  # torch's (in, out, kh, kw)
    up = _dilate(_dilate(z, 2), 3)  # (B, 3, 5, 5)
    padded = sg.pad(up, ((0, 0), (0, 0), (2, 2), (2, 2)))
    windows = sg.sliding_window_view(padded, (3, 3), axis=(2, 3))
    out = sg.einsum("bchwij,coij->bohw", windows, K[:, :, ::-1, ::-1])
    out = m.output("out", sg.sigmoid(out + b[:, None, None]))
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        out = torch.sigmoid(F.conv_transpose2d(i["z"], p["K"], p["b"], stride=2))
        return F.mse_loss(out, i["target"]), {"out": out}

    B = 2
    params = {"K": normal(rng, 3, 2, 3, 3, scale=0.5), "b": normal(rng, 2, scale=0.1)}
    inputs = {"z": normal(rng, B, 3, 3, 3), "target": rng.uniform(0, 1, (B, 2, 7, 7))}
    return m, reference, params, inputs


@family
def text_cnn_pooling(hessian=False):
    """Kim's text CNN over a symbolic length T: width-3 conv of (B, T, D) token
    vectors (channels last: windows along axis 1), relu, max-over-time and
    avg_pool1d(3, stride=1) then mean-over-time, concatenated, linear, CE."""
    rng = np.random.default_rng(5)
    m = sg.Model("text_cnn_pooling", hessian=hessian)
    x = m.input("x", ("B", "T", 3))
    y = m.input("y", ("B",), dtype="int64")
    K, bk = m.param("K", (4, 3, 3)), m.param("bk", (4,))
    W, b = m.param("W", (2, 8)), m.param("b", (2,))
    windows = sg.sliding_window_view(x, 3, axis=1)  # (B, T - 2, D, 3)
    h = sg.relu(sg.einsum("btdk,odk->bot", windows, K) + bk[:, None])  # (B, 4, T - 2)
    smooth = sg.sliding_window_view(h, 3, axis=2).mean(axis=-1)  # (B, 4, T - 4)
    feats = sg.concatenate([h.max(axis=2), smooth.mean(axis=2)], axis=1)
    logits = m.output("logits", feats @ W.T + b)
    m.loss(_cross_entropy(logits, y))

    def reference(p, i):
        h = F.relu(F.conv1d(i["x"].transpose(1, 2), p["K"], p["bk"]))
        smooth = F.avg_pool1d(h, 3, stride=1)
        feats = torch.cat([h.amax(dim=2), smooth.mean(dim=2)], dim=1)
        logits = feats @ p["W"].T + p["b"]
        return F.cross_entropy(logits, i["y"]), {"logits": logits}

    B, T = 2, 8
    params = {
        "K": normal(rng, 4, 3, 3, scale=0.5),
        "bk": normal(rng, 4, scale=0.1),
        "W": normal(rng, 2, 8),
        "b": normal(rng, 2, scale=0.1),
    }
    inputs = {"x": normal(rng, B, T, 3), "y": np.array([1, 0], np.int64)}
    return m, reference, params, inputs


def _graph(rng, n, e, self_loops=True):
    """A random directed graph on n nodes with e edges (and a self-loop per node)."""
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
    if self_loops:
        src, dst = np.r_[src, np.arange(n)], np.r_[dst, np.arange(n)]
    return src.astype(np.int64), dst.astype(np.int64)


def _index_add(n, ids, rows):
    return torch.zeros((n, *rows.shape[1:]), dtype=rows.dtype).index_add(0, ids, rows)


@family
def gcn_two_layer(hessian=False):
    """Kipf & Welling's GCN with edge weights: deg = 1 + segment_sum(w, dst, N) (the
    self-loop's 1), messages w d^-1/2[src] d^-1/2[dst] h[src] summed into dst plus
    h / deg, two layers (relu between), an MSE to node targets."""
    rng = np.random.default_rng(6)
    m = sg.Model("gcn_two_layer", hessian=hessian)
    x = m.input("x", ("N", 3))
    src, dst = m.input("src", ("E",), "int64"), m.input("dst", ("E",), "int64")
    w = m.input("w", ("E",))
    target = m.input("target", ("N", 2))
    W1, b1 = m.param("W1", (4, 3)), m.param("b1", (4,))
    W2, b2 = m.param("W2", (2, 4)), m.param("b2", (2,))
    N = x.shape[0]
    deg = 1.0 + sg.segment_sum(w, dst, N)
    dinv = deg**-0.5
    norm = (dinv[src] * w * dinv[dst])[:, None]

    def layer(h):
        return sg.segment_sum(norm * h[src], dst, N) + h / deg[:, None]

    h = sg.relu(layer(x @ W1.T) + b1)
    out = m.output("out", layer(h @ W2.T) + b2)
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        n, src, dst, w = i["x"].shape[0], i["src"], i["dst"], i["w"]
        deg = 1 + _index_add(n, dst, w)
        dinv = deg**-0.5
        norm = (dinv[src] * w * dinv[dst])[:, None]

        def layer(h):
            return _index_add(n, dst, norm * h[src]) + h / deg[:, None]

        h = F.relu(layer(i["x"] @ p["W1"].T) + p["b1"])
        out = layer(h @ p["W2"].T) + p["b2"]
        return F.mse_loss(out, i["target"]), {"out": out}

    N_, E_ = 5, 7
    src_, dst_ = _graph(rng, N_, E_, self_loops=False)
    params = {
        "W1": normal(rng, 4, 3, scale=0.6),
        "b1": normal(rng, 4, scale=0.1),
        "W2": normal(rng, 2, 4, scale=0.6),
        "b2": normal(rng, 2, scale=0.1),
    }
    inputs = {
        "x": normal(rng, N_, 3),
        "src": src_,
        "dst": dst_,
        "w": rng.uniform(0.5, 1.5, E_),
        "target": normal(rng, N_, 2),
    }
    return m, reference, params, inputs


@family
def graphsage_mean_pool(hessian=False):
    """GraphSAGE with mean aggregation (segment_sum of neighbours over segment_sum of
    ones, a node without neighbours guarded by sg.maximum(count, 1)), relu, then a
    mean readout into G graphs by a graph-index input, linear, MSE to graph targets."""
    rng = np.random.default_rng(7)
    m = sg.Model("graphsage_mean_pool", hessian=hessian)
    x = m.input("x", ("N", 3))
    src, dst = m.input("src", ("E",), "int64"), m.input("dst", ("E",), "int64")
    graph = m.input("graph", ("N",), "int64")
    target = m.input("target", ("G", 2))
    Ws, Wn, b = m.param("Ws", (4, 3)), m.param("Wn", (4, 3)), m.param("b", (4,))
    Wo, bo = m.param("Wo", (2, 4)), m.param("bo", (2,))
    N, G = x.shape[0], target.shape[0]
    count = sg.segment_sum(sg.ones_like(src), dst, N)
    mean = sg.segment_sum(x[src], dst, N) / sg.maximum(count, 1.0)[:, None]
    h = m.output("h", sg.relu(x @ Ws.T + mean @ Wn.T + b))
    sizes = sg.segment_sum(sg.ones_like(graph), graph, G)
    pooled = sg.segment_sum(h, graph, G) / sg.maximum(sizes, 1.0)[:, None]
    out = m.output("out", pooled @ Wo.T + bo)
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        x, src, dst, graph = i["x"], i["src"], i["dst"], i["graph"]
        n, g = x.shape[0], i["target"].shape[0]
        count = _index_add(n, dst, torch.ones(len(dst), dtype=x.dtype))
        mean = _index_add(n, dst, x[src]) / count.clamp(min=1)[:, None]
        h = F.relu(x @ p["Ws"].T + mean @ p["Wn"].T + p["b"])
        sizes = _index_add(g, graph, torch.ones(n, dtype=x.dtype))
        pooled = _index_add(g, graph, h) / sizes.clamp(min=1)[:, None]
        out = pooled @ p["Wo"].T + p["bo"]
        return F.mse_loss(out, i["target"]), {"h": h, "out": out}

    N_ = 6
    src_ = np.array([0, 1, 2, 1, 3, 4, 3], np.int64)  # node 5 has no neighbours
    dst_ = np.array([1, 0, 1, 2, 4, 3, 4], np.int64)
    params = {
        "Ws": normal(rng, 4, 3, scale=0.6),
        "Wn": normal(rng, 4, 3, scale=0.6),
        "b": normal(rng, 4, scale=0.1),
        "Wo": normal(rng, 2, 4, scale=0.6),
        "bo": normal(rng, 2, scale=0.1),
    }
    inputs = {
        "x": normal(rng, N_, 3),
        "src": src_,
        "dst": dst_,
        "graph": np.array([0, 0, 0, 1, 1, 1], np.int64),
        "target": normal(rng, 3, 2),  # graph 2 has no nodes: its readout is b_o
    }
    return m, reference, params, inputs


GAT_H, GAT_F = 2, 2


@family
def gat_multihead(hessian=False):
    """A 2-head GAT layer: h = (x W^T) by heads, per-edge scores
    leaky_relu(<h[src], a_s> + <h[dst], a_d>) per head (einsum "ehf,hf->eh"), a
    segment softmax over each node's incoming edges shifted by the per-head max under
    sg.stop_gradient, messages alpha h[src] summed into dst, elu, MSE."""
    rng = np.random.default_rng(8)
    m = sg.Model("gat_multihead", hessian=hessian)
    x = m.input("x", ("N", 3))
    src, dst = m.input("src", ("E",), "int64"), m.input("dst", ("E",), "int64")
    target = m.input("target", ("N", GAT_H * GAT_F))
    W = m.param("W", (GAT_H * GAT_F, 3))
    a_s, a_d = m.param("a_s", (GAT_H, GAT_F)), m.param("a_d", (GAT_H, GAT_F))
    N = x.shape[0]
    h = (x @ W.T).reshape((-1, GAT_H, GAT_F))
    z = sg.einsum("ehf,hf->eh", h[src], a_s) + sg.einsum("ehf,hf->eh", h[dst], a_d)
    e = sg.where(z > 0, z, 0.2 * z)
    ex = sg.exp(e - sg.stop_gradient(sg.max(e, axis=0)))
    alpha = m.output("alpha", ex / sg.segment_sum(ex, dst, N)[dst])
    agg = sg.segment_sum(alpha[:, :, None] * h[src], dst, N).reshape((-1, 4))
    out = m.output("out", sg.where(agg > 0, agg, sg.expm1(agg)))
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        src, dst, n = i["src"], i["dst"], i["x"].shape[0]
        h = (i["x"] @ p["W"].T).reshape(n, GAT_H, GAT_F)
        z = (h[src] * p["a_s"]).sum(-1) + (h[dst] * p["a_d"]).sum(-1)
        ex = F.leaky_relu(z, 0.2).exp()
        alpha = ex / _index_add(n, dst, ex)[dst]
        out = F.elu(_index_add(n, dst, alpha[:, :, None] * h[src]).reshape(n, -1))
        return F.mse_loss(out, i["target"]), {"alpha": alpha, "out": out}

    N_ = 5
    src_, dst_ = _graph(rng, N_, 6)
    params = {
        "W": normal(rng, GAT_H * GAT_F, 3, scale=0.6),
        "a_s": normal(rng, GAT_H, GAT_F),
        "a_d": normal(rng, GAT_H, GAT_F),
    }
    inputs = {
        "x": normal(rng, N_, 3),
        "src": src_,
        "dst": dst_,
        "target": normal(rng, N_, GAT_H * GAT_F),
    }
    return m, reference, params, inputs


@family
def edge_conditioned_nnconv(hessian=False):
    """NNConv (Gilmer et al.'s edge network): each edge's (3 x 2) weight matrix is a
    linear function of its features, messages einsum("eoi,ei->eo", W_e, x[src]),
    summed into dst, a root weight, tanh, then a sum readout over G graphs, MSE."""
    rng = np.random.default_rng(9)
    m = sg.Model("edge_conditioned_nnconv", hessian=hessian)
    x = m.input("x", ("N", 2))
    ea = m.input("ea", ("E", 2))
    src, dst = m.input("src", ("E",), "int64"), m.input("dst", ("E",), "int64")
    graph = m.input("graph", ("N",), "int64")
    target = m.input("target", ("G", 3))
    A, c = m.param("A", (6, 2)), m.param("c", (6,))
    R, b = m.param("R", (3, 2)), m.param("b", (3,))
    We = (ea @ A.T + c).reshape((-1, 3, 2))
    messages = sg.einsum("eoi,ei->eo", We, x[src])
    h = sg.tanh(sg.segment_sum(messages, dst, x.shape[0]) + x @ R.T + b)
    out = m.output("out", sg.segment_sum(h, graph, target.shape[0]))
    m.loss(sg.mean((out - target) ** 2))

    def reference(p, i):
        n, g = i["x"].shape[0], i["target"].shape[0]
        We = (i["ea"] @ p["A"].T + p["c"]).reshape(-1, 3, 2)
        messages = torch.bmm(We, i["x"][i["src"]][:, :, None])[:, :, 0]
        h = torch.tanh(_index_add(n, i["dst"], messages) + i["x"] @ p["R"].T + p["b"])
        out = _index_add(g, i["graph"], h)
        return F.mse_loss(out, i["target"]), {"out": out}

    N_, E_ = 5, 6
    src_, dst_ = _graph(rng, N_, E_, self_loops=False)
    params = {
        "A": normal(rng, 6, 2, scale=0.5),
        "c": normal(rng, 6, scale=0.1),
        "R": normal(rng, 3, 2, scale=0.5),
        "b": normal(rng, 3, scale=0.1),
    }
    inputs = {
        "x": normal(rng, N_, 2),
        "ea": normal(rng, E_, 2),
        "src": src_,
        "dst": dst_,
        "graph": np.array([0, 0, 1, 1, 1], np.int64),
        "target": normal(rng, 2, 3),
    }
    return m, reference, params, inputs


@family
def bilinear_broadcast(hessian=False):
    """nn.Bilinear over a batch and a time axis: einsum("...i,oij,...j->...o") (i
    and j contracted), then a shared 2x2 mixing applied by "...ij,...jk->...ik"
    against (B, T, 2, 1) columns, MSE."""
    rng = np.random.default_rng(10)
    m = sg.Model("bilinear_broadcast", hessian=hessian)
    x1, x2 = m.input("x1", ("B", "T", 3)), m.input("x2", ("B", "T", 4))
    target = m.input("target", ("B", "T", 2))
    Wb, bb = m.param("Wb", (2, 3, 4)), m.param("bb", (2,))
    M = m.param("M", (2, 2))
    y = sg.einsum("...i,oij,...j->...o", x1, Wb, x2) + bb
    y = m.output("y", sg.einsum("...ij,...jk->...ik", M, y[..., None])[..., 0])
    m.loss(sg.mean((y - target) ** 2))

    def reference(p, i):
        y = F.bilinear(i["x1"], i["x2"], p["Wb"], p["bb"])
        y = (p["M"] @ y[..., None])[..., 0]
        return F.mse_loss(y, i["target"]), {"y": y}

    B, T = 2, 3
    params = {
        "Wb": normal(rng, 2, 3, 4, scale=0.5),
        "bb": normal(rng, 2, scale=0.1),
        "M": normal(rng, 2, 2),
    }
    inputs = {
        "x1": normal(rng, B, T, 3),
        "x2": normal(rng, B, T, 4),
        "target": normal(rng, B, T, 2),
    }
    return m, reference, params, inputs


@family
def tensor_train_regression(hessian=False):
    """A tensor-train (MPS) layer on (B, 2, 3, 2) inputs: cores G1 (2, r), G2 (r, 3,
    r), G3 (r, 2, out) contracted in one einsum "bijk,ia,ajc,ckd->bd" (pairs that
    share two letters: a j, then c k), MSE."""
    rng = np.random.default_rng(11)
    m = sg.Model("tensor_train_regression", hessian=hessian)
    x = m.input("x", ("B", 2, 3, 2))
    target = m.input("target", ("B", 3))
    G1, G2, G3 = (
        m.param("G1", (2, 2)),
        m.param("G2", (2, 3, 2)),
        m.param("G3", (2, 2, 3)),
    )
    y = m.output("y", sg.einsum("bijk,ia,ajc,ckd->bd", x, G1, G2, G3))
    m.loss(sg.mean((y - target) ** 2))

    def reference(p, i):
        y = torch.einsum("bijk,ia->bajk", i["x"], p["G1"])
        y = torch.tensordot(y, p["G2"], dims=([1, 2], [0, 1]))  # (b, k, c)
        y = torch.tensordot(y, p["G3"], dims=([2, 1], [0, 1]))  # (b, d)
        return F.mse_loss(y, i["target"]), {"y": y}

    params = {
        "G1": normal(rng, 2, 2),
        "G2": normal(rng, 2, 3, 2, scale=0.7),
        "G3": normal(rng, 2, 2, 3, scale=0.7),
    }
    inputs = {"x": normal(rng, 3, 2, 3, 2), "target": normal(rng, 3, 3)}
    return m, reference, params, inputs


GQ_G, GQ_R, GQ_D = 2, 2, 3  # key/value heads, queries per key head, head size


@family
def grouped_query_einsum_attention(hessian=False):
    """Grouped-query attention written with einsum alone: queries (B, T, G, R, D)
    against keys (B, T, G, D) by "btgrd,bsgd->bgrts" (batch b g, rows t r), a causal
    bool mask, softmax, values by "bgrts,bsgd->btgrd", output projection, MSE."""
    rng = np.random.default_rng(12)
    m = sg.Model("grouped_query_einsum_attention", hessian=hessian)
    x = m.input("x", ("B", "T", 4))
    causal = m.input("causal", ("T", "T"), dtype="bool")
    target = m.input("target", ("B", "T", 4))
    Wq = m.param("Wq", (GQ_G * GQ_R * GQ_D, 4))
    Wk, Wv = m.param("Wk", (GQ_G * GQ_D, 4)), m.param("Wv", (GQ_G * GQ_D, 4))
    Wo = m.param("Wo", (4, GQ_G * GQ_R * GQ_D))
    B, T = x.shape[0], x.shape[1]
    q = (x @ Wq.T).reshape((B, T, GQ_G, GQ_R, GQ_D))
    k = (x @ Wk.T).reshape((B, T, GQ_G, GQ_D))
    v = (x @ Wv.T).reshape((B, T, GQ_G, GQ_D))
    scores = sg.einsum("btgrd,bsgd->bgrts", q, k) / GQ_D**0.5
    att = sg.softmax(sg.where(causal, scores, -1e30), axis=-1)
    ctx = sg.einsum("bgrts,bsgd->btgrd", att, v).reshape((B, T, GQ_G * GQ_R * GQ_D))
    y = m.output("y", ctx @ Wo.T)
    m.loss(sg.mean((y - target) ** 2))

    def reference(p, i):
        b, t, _ = i["x"].shape
        q = (i["x"] @ p["Wq"].T).reshape(b, t, GQ_G * GQ_R, GQ_D).transpose(1, 2)
        k = (i["x"] @ p["Wk"].T).reshape(b, t, GQ_G, GQ_D).transpose(1, 2)
        v = (i["x"] @ p["Wv"].T).reshape(b, t, GQ_G, GQ_D).transpose(1, 2)
        k, v = k.repeat_interleave(GQ_R, dim=1), v.repeat_interleave(GQ_R, dim=1)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=i["causal"])
        y = ctx.transpose(1, 2).reshape(b, t, -1) @ p["Wo"].T
        return F.mse_loss(y, i["target"]), {"y": y}

    B_, T_ = 2, 3
    params = {
        "Wq": normal(rng, GQ_G * GQ_R * GQ_D, 4, scale=0.5),
        "Wk": normal(rng, GQ_G * GQ_D, 4, scale=0.5),
        "Wv": normal(rng, GQ_G * GQ_D, 4, scale=0.5),
        "Wo": normal(rng, 4, GQ_G * GQ_R * GQ_D, scale=0.5),
    }
    inputs = {
        "x": normal(rng, B_, T_, 4),
        "causal": np.tril(np.ones((T_, T_), bool)),
        "target": normal(rng, B_, T_, 4),
    }
    return m, reference, params, inputs


# ===================================================================== 2. the families


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


HESSIAN_FAMILIES = [
    "lenet_cnn",
    "tcn_dilated_causal",
    "transposed_conv_decoder",
    "gcn_two_layer",
    "gat_multihead",
    "edge_conditioned_nnconv",
    "bilinear_broadcast",
    "tensor_train_regression",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = [
    "tcn_dilated_causal",
    "gcn_two_layer",
    "graphsage_mean_pool",
    "edge_conditioned_nnconv",
    "bilinear_broadcast",
    "tensor_train_regression",
]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_its_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


@pytest.mark.parametrize(
    "name, dim, n",
    [
        ("lenet_cnn", "B", 1),
        ("tcn_dilated_causal", "T", 1),
        ("tcn_dilated_causal", "B", 1),
        ("grouped_depthwise_strided", "B", 1),
        ("resnet_bn_block", "B", 1),
        ("transposed_conv_decoder", "B", 1),
        ("text_cnn_pooling", "T", 5),  # one window of the average pool
        ("gcn_two_layer", "N", 1),
        ("gat_multihead", "N", 1),
        ("bilinear_broadcast", "T", 1),
        ("grouped_query_einsum_attention", "T", 1),
        ("grouped_query_einsum_attention", "B", 1),
    ],
)
def test_other_sizes_of_a_symbolic_dim_agree_with_pytorch(name, dim, n):
    """The same module at a small size of one dim (graphs: the first n nodes, and the
    edges among them)."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    small = first_along(module, inputs, dim, n)
    if dim == "N":
        keep = (inputs["src"] < n) & (inputs["dst"] < n)
        small = {**small, "src": inputs["src"][keep], "dst": inputs["dst"][keep]}
        small.update({k: inputs[k][keep] for k in ("w", "ea") if k in inputs})
    check(module, reference, params, small)
    assert_matches_central_differences(module, params, small)


def test_tcn_at_a_longer_sequence_than_declared():
    """The TCN module at T = 23 (declared with no length at all)."""
    _, reference, params, _ = FAMILIES["tcn_dilated_causal"]()
    rng = np.random.default_rng(20)
    inputs = {"x": normal(rng, 3, TCN_C, 23), "target": normal(rng, 3, TCN_H, 23)}
    check(module_of("tcn_dilated_causal"), reference, params, inputs)


# ===================================================================== 3. edge cases


@pytest.mark.parametrize(
    "name", ["gcn_two_layer", "graphsage_mean_pool", "edge_conditioned_nnconv"]
)
def test_graph_without_edges(name):
    """E = 0: every segment sum is zeros (GCN: each node keeps h / 1; SAGE: the
    mean guarded by maximum(count, 1) is 0; NNConv: the root weight alone)."""
    _, reference, params, inputs = FAMILIES[name]()
    empty = {**inputs, "src": inputs["src"][:0], "dst": inputs["dst"][:0]}
    empty.update({k: inputs[k][:0] for k in ("w", "ea") if k in inputs})
    module = module_of(name)
    check(module, reference, params, empty)
    assert_matches_central_differences(module, params, empty)


def test_gat_without_edges_names_the_global_max_shift():
    """The per-head max shift of the segment softmax is a max over E: with no edges
    the module says so (NumPy's max of nothing would raise its own error)."""
    _, _, params, inputs = FAMILIES["gat_multihead"]()
    empty = {**inputs, "src": inputs["src"][:0], "dst": inputs["dst"][:0]}
    with pytest.raises(
        ValueError,
        match=r"E=0: a max over E \(sg.max, sg.logsumexp, sg.softmax\) needs E >= 1",
    ):
        module_of("gat_multihead").value_and_grad(params, empty)


def test_gat_attention_sums_to_one_per_receiving_node_and_head():
    _, _, params, inputs = FAMILIES["gat_multihead"]()
    outputs, _ = module_of("gat_multihead").forward(params, inputs)
    totals = np.zeros((5, GAT_H))
    np.add.at(totals, inputs["dst"], outputs["alpha"])
    assert np.max(np.abs(totals - 1.0)) < 1e-14


def test_graphsage_isolated_node_and_empty_graph():
    """Node 5 has no neighbours (its mean is 0, not 0/0) and graph 2 no nodes (its
    readout is the output bias alone), as with torch's clamp(min=1)."""
    _, _, params, inputs = FAMILIES["graphsage_mean_pool"]()
    outputs, _ = module_of("graphsage_mean_pool").forward(params, inputs)
    x = inputs["x"]
    expected = np.maximum(x[5] @ params["Ws"].T + params["b"], 0.0)
    assert rel(outputs["h"][5], expected) < 1e-15
    assert np.array_equal(outputs["out"][2], params["bo"])


def test_max_pool_ties_in_a_blank_background():
    """A digit on a blank background: the conv gives relu(b1) > 0 at every background
    position, so every background pooling window is a four-way tie. sg's max splits
    the gradient among the tied entries (torch's amax), max_pool2d gives it all to
    one; the tied entries come from identical (blank) patches, so the parameter
    gradients agree with max_pool2d's all the same."""
    _, reference, params, inputs = FAMILIES["lenet_cnn"]()
    x = np.zeros_like(inputs["x"])
    x[:, :, 2:5, 3:6] = normal(np.random.default_rng(1), 3, 1, 3, 3)
    edited = {**params, "b1": np.array([0.3, 0.2, 0.1])}
    check(module_of("lenet_cnn"), reference, edited, {**inputs, "x": x})


def test_resnet_block_hvp_against_torch_double_backward():
    """The ResNet block's hvp (through three batch norms) in one direction against
    torch's double backward (its dense Hessian is 435 x 435)."""
    _, reference, params, inputs = FAMILIES["resnet_bn_block"]()
    module = module_of("resnet_bn_block", hessian=True)
    rng = np.random.default_rng(7)
    v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
    tparams = {k: torch.tensor(p, requires_grad=True) for k, p in params.items()}
    tinputs = {k: torch.tensor(a) for k, a in inputs.items()}
    loss = reference(tparams, tinputs)[0]
    grads = torch.autograd.grad(loss, list(tparams.values()), create_graph=True)
    dot = sum(
        (g * torch.tensor(v[k])).sum() for g, k in zip(grads, tparams, strict=True)
    )
    expected = torch.autograd.grad(dot, list(tparams.values()))
    product = module.hvp(params, inputs, v)
    scale = max(float(e.abs().max()) for e in expected)
    for k, e in zip(tparams, expected, strict=True):
        assert rel(product[k], e.numpy(), 1e-3 * scale) < 1e-8, k


def test_resnet_stem_circular_conv_and_padded_max_pool():
    """A ResNet stem: a 5x5 conv with circular padding (sg.pad mode='wrap', torch's
    padding_mode='circular'), max_pool2d(3, stride=2, padding=1) as a -1e30 pad and a
    max over windows[:, :, ::2, ::2]; Hessian too."""
    m = sg.Model("resnet_stem", hessian=True)
    x = m.input("x", ("B", 2, 7, 7))
    K = m.param("K", (3, 2, 5, 5))
    wrapped = sg.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="wrap")
    h = _conv2d(wrapped, K)
    h = sg.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-1e30)
    windows = sg.sliding_window_view(h, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    p = m.output("p", windows.max(axis=(-2, -1)))
    m.loss(sg.sum(sg.sin(p) * p))

    def reference(P, i):
        h = F.conv2d(F.pad(i["x"], (2, 2, 2, 2), mode="circular"), P["K"])
        p = F.max_pool2d(h, 3, stride=2, padding=1)
        return (torch.sin(p) * p).sum(), {"p": p}

    rng = np.random.default_rng(13)
    params = {"K": normal(rng, 3, 2, 5, 5, scale=0.3)}
    inputs = {"x": normal(rng, 2, 2, 7, 7)}
    module = compile_module(m)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_dilated_conv2d_over_symbolic_height_and_width():
    """Conv2d(dilation=2) as the 5x5 windows' every other tap, [..., ::2, ::2] (the
    window axes are fixed even where H and W are symbolic), at two image sizes."""
    m = sg.Model("dilated_conv2d")
    x = m.input("x", (2, 2, "H", "W"))
    K = m.param("K", (3, 2, 3, 3))
    windows = sg.sliding_window_view(x, (5, 5), axis=(2, 3))[..., ::2, ::2]
    y = m.output("y", sg.einsum("bchwij,ocij->bohw", windows, K))
    m.loss(sg.sum(sg.sin(y) * y))

    def reference(p, i):
        y = F.conv2d(i["x"], p["K"], dilation=2)
        return (torch.sin(y) * y).sum(), {"y": y}

    rng = np.random.default_rng(14)
    params = {"K": normal(rng, 3, 2, 3, 3, scale=0.5)}
    module = compile_module(m)
    for H, W in ((5, 5), (6, 9)):
        inputs = {"x": normal(rng, 2, 2, H, W)}
        check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_saliency_gradient_through_the_conv_windows():
    """The image as the parameter (a saliency map / adversarial step): the gradient
    flows back through the windows into overlapping pixels (col2im)."""
    m = sg.Model("saliency")
    x = m.param("x", (1, 2, 6, 6))
    K = m.input("K", (3, 2, 3, 3))
    y = sg.relu(_conv2d(x, K, pad=1))
    m.loss(sg.sum(_max_pool2(y) ** 2))

    def reference(p, i):
        y = F.relu(F.conv2d(p["x"], i["K"], padding=1))
        return (F.max_pool2d(y, 2) ** 2).sum(), {}

    rng = np.random.default_rng(15)
    params, inputs = {"x": normal(rng, 1, 2, 6, 6)}, {"K": normal(rng, 3, 2, 3, 3)}
    module = compile_module(m)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_windows_of_a_symbolic_axis_need_the_window_size():
    """As NumPy's sliding_window_view: an axis as long as the window has one window;
    one shorter, the module's check names the sg.sliding_window_view."""
    m = sg.Model("short_windows")
    x = m.input("x", (2, "T"))
    w = m.param("w", (3,))
    m.loss(sg.sum(sg.sliding_window_view(x, 3, axis=1) * w))
    module = compile_module(m)
    loss, grads = module.value_and_grad({"w": np.ones(3)}, {"x": np.ones((2, 3))})
    assert loss == 6.0 and np.array_equal(grads["w"], np.full(3, 2.0))
    with pytest.raises(ValueError, match=r"sg\.sliding_window_view of x needs T >= 3"):
        module.value_and_grad({"w": np.ones(3)}, {"x": np.ones((2, 2))})


def test_init_params_of_a_cnn_lets_the_convs_learn():
    _, _, _, inputs = FAMILIES["lenet_cnn"]()
    module = module_of("lenet_cnn")
    params = module.init_params(seed=0)
    _, grads = module.value_and_grad(params, inputs)
    assert np.any(params["K1"] != 0) and np.any(grads["K1"] != 0)


# ===================================================================== 4. generated code


def _section(source, start, end):
    return source[source.index(start) : source.index(end)]


def test_lenet_forward_runs_each_conv_as_one_matmul():
    """im2col: each conv's windows by its kernel in one matmul (plus the linear
    layer and the softmax's row sums by a ones column): no broadcast product of every
    window with every output channel."""
    source, _ = generate(lenet_cnn()[0])
    forward = _section(source, "def forward", "def backward")
    assert forward.count(" @ ") == 4, forward
    assert "K1.reshape((3, 9))" in forward and "K2.reshape((4, 12))" in forward


def test_gcn_scatters_rows_without_a_dense_adjacency():
    """segment_sum runs as scatters of rows (never an (E, N) one-hot or (N, N) matrix):
    no array of the generated GCN has a shape with both N and E."""
    source, _ = generate(gcn_two_layer()[0])
    assert not re.search(r"\((N, E|E, N)\)", source)
    assert "np.zeros((N, 4))" in source and "np.zeros((N, 2))" in source


@pytest.mark.parametrize(
    "name, hessian", [("lenet_cnn", False), ("gat_multihead", True)]
)
def test_generating_twice_gives_identical_source(name, hessian):
    first, _ = generate(FAMILIES[name](hessian=hessian)[0], hessian=hessian)
    second, _ = generate(FAMILIES[name](hessian=hessian)[0], hessian=hessian)
    assert first == second
    assert ("def hvp(params, inputs, v):" in first) == hessian


# ===================================================================== 5. command line

USER_FILE = """
import symgrad as sg


def build():
    m = sg.Model("user_conv_gnn", doc="A conv1d over node signals, then a GCN sum.")
    x = m.input("x", ("N", 2, "T"))
    src = m.input("src", ("E",), dtype="int64")
    dst = m.input("dst", ("E",), dtype="int64")
    target = m.input("target", ("N", 3))
    K = m.param("K", (3, 2, 3))
    W = m.param("W", (3, 3))
    windows = sg.sliding_window_view(x, 3, axis=2)
    h = sg.tanh(sg.einsum("nctk,ock->not", windows, K)).mean(axis=2)
    h = h + sg.segment_sum(h[src], dst, x.shape[0]) @ W.T
    m.output("h", h)
    m.loss(sg.mean((h - target) ** 2))
    return m
"""


def test_cli_builds_and_checks_a_user_conv_gnn_file(tmp_path):
    (tmp_path / "conv_gnn.py").write_text(USER_FILE)
    built = run_cli(["build", "conv_gnn.py", "--out", "gen"], tmp_path)
    assert built.returncode == 0, built.stdout + built.stderr
    assert re.search(r"user_conv_gnn: .*verified", built.stdout), built.stdout
    target = tmp_path / "gen" / "user_conv_gnn.py"
    module = load_source(target.read_text(), "user_conv_gnn")

    def reference(p, i):
        h = torch.tanh(F.conv1d(i["x"], p["K"])).mean(dim=2)
        n = h.shape[0]
        h = h + _index_add(n, i["dst"], h[i["src"]]) @ p["W"].T
        return F.mse_loss(h, i["target"]), {"h": h}

    rng = np.random.default_rng(16)
    params = {"K": normal(rng, 3, 2, 3), "W": normal(rng, 3, 3)}
    inputs = {
        "x": normal(rng, 4, 2, 5),
        "src": np.array([0, 1, 3], np.int64),
        "dst": np.array([1, 1, 2], np.int64),
        "target": normal(rng, 4, 3),
    }

    check(module, reference, params, inputs)
    checked = run_cli(["check", "conv_gnn.py", "--out", "gen"], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# ===================================================================== 6. user mistakes


def _declared():
    m = sg.Model("mistakes")
    x = m.input("x", ("B", 2, "T"))
    img = m.input("img", ("B", 1, 5, 5))
    ids = m.input("ids", ("E",), dtype="int64")
    e = m.input("e", ("E", 3))
    return x, img, ids, e


@pytest.mark.parametrize(
    "mistake, error, words",
    [
        # torch's keyword
        (
            lambda x, img, ids, e: sg.sliding_window_view(x, 3, dim=2),
            TypeError,
            "axis=",
        ),
        # a window larger than a fixed axis
        (
            lambda x, img, ids, e: sg.sliding_window_view(img, (6, 6), axis=(2, 3)),
            sg.ShapeError,
            "window size 6 for axis 2 of img",
        ),
        # a negative stride on a symbolic axis (a positive one is (T - 2 + 1) // 2 long)
        (
            lambda x, img, ids, e: sg.sliding_window_view(x, 3, axis=2)[:, :, ::-2],
            sg.ShapeError,
            "a negative step other than ::-1 needs a fixed-size axis, not T - 2",
        ),
        # ids of the wrong dtype or shape, a count that is not a size
        (
            lambda x, img, ids, e: sg.segment_sum(e, e[:, 0], 4),
            sg.ShapeError,
            "must be an int64 input",
        ),
        (
            lambda x, img, ids, e: sg.segment_sum(e, ids[:, None], 4),
            sg.ShapeError,
            "must be 1-D with one id per row of e",
        ),
        (
            lambda x, img, ids, e: sg.segment_sum(x, ids, 4),
            sg.ShapeError,
            "one id per row of x",
        ),
        (
            lambda x, img, ids, e: sg.segment_sum(e, ids, 4.0),
            sg.ShapeError,
            "invalid dimension 4.0",
        ),
        # torch's index_add argument order (dim, index, source)
        (
            lambda x, img, ids, e: sg.segment_sum(e, 0, ids),
            TypeError,
            "takes the rows to add first, then their int64 ids, then the count",
        ),
        # -inf padding for a max pool
        (
            lambda x, img, ids, e: sg.pad(
                img, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf
            ),
            sg.ModelError,
            "-1e30",
        ),
        # the einsum letters of a conv on an operand of another rank
        (
            lambda x, img, ids, e: sg.einsum("bchwij,ocij->bohw", img, img),
            sg.ShapeError,
            "must name each of the 4 axes of img",
        ),
    ],
)
def test_typical_mistakes_raise_errors_that_say_what_is_wrong(mistake, error, words):
    with pytest.raises(error, match=re.escape(words)):
        mistake(*_declared())


@pytest.mark.parametrize(
    "method, words",
    [
        ("unfold", "sg.sliding_window_view"),
        ("index_add", "sg.segment_sum"),
        ("index_add_", "sg.segment_sum"),
        ("scatter_add", "sg.segment_sum"),
    ],
)
def test_torch_methods_of_the_new_functions_name_them(method, words):
    x, _, ids, e = _declared()
    with pytest.raises(AttributeError, match=re.escape(words)):
        getattr(e, method)(0, ids, e)


def test_segment_ids_past_the_segment_count_raise_at_run_time():
    """An id >= num_segments is NumPy's IndexError (as for a gather), not a silent
    drop or wrap."""
    m = sg.Model("segment_overflow")
    e, ids = m.input("e", ("E", 2)), m.input("ids", ("E",), dtype="int64")
    W = m.param("W", (2, 2))
    m.loss(sg.sum(sg.segment_sum(e @ W, ids, 3) ** 2))
    module = compile_module(m)
    with pytest.raises(IndexError, match="3"):
        module.value_and_grad(
            {"W": np.eye(2)}, {"e": np.ones((2, 2)), "ids": np.array([0, 3])}
        )
