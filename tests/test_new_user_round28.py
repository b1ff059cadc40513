"""Round 28 of new-user models: a PyTorch user porting real torch.nn modules and losses
not ported before, with the real module (float64, the same weights copied in through
torch.func.functional_call) and central finite differences as the judges. Modules:
nn.AvgPool1d(3, 2, padding=1, ceil_mode=True) with count_include_pad both ways (divisors
as windows of a padded sg.ones_like), nn.MaxPool1d with padding, dilation 2 and
ceil_mode (a -1e30 pad, stepped windows), nn.LPPool1d with p = 2 (sg.norm of windows)
and p = 3, nn.AdaptiveAvgPool1d / AdaptiveMaxPool1d / AdaptiveAvgPool2d at sizes that
do not divide (overlapping windows of unequal length), nn.Upsample nearest (scale 2 by
sg.repeat, size=(5, 7) and nearest-exact by int lists) and bilinear with
align_corners=False and True (weighted pairs of slices), nn.Unfold -> a learned patch
mix -> nn.Fold (col2im by sg.segment_sum over flat positions of the padded map),
nn.ReflectionPad2d / ReplicationPad2d / CircularPad2d / ZeroPad2d (negative: a crop) /
ConstantPad2d via sg.pad, grouped 1x1 nn.Conv2d + nn.ChannelShuffle + nn.Softmax2d,
nn.Conv1d with padding='same' and even kernels (circular, dilated: torch's asymmetric
(1, 2)) over a symbolic length, nn.ConvTranspose1d with groups=2, dilation=2, stride 2,
padding and output_padding, nn.LSTMCell stepped in a loop from a given state, a
post-norm nn.TransformerDecoderLayer with bool causal / tgt / memory padding masks,
nn.AdaptiveLogSoftmaxWithLoss (output, loss and log_prob), nn.EmbeddingBag(mode='sum',
padding_idx) with offsets and learned per_sample_weights, nn.MultiLabelMarginLoss from
torch's -1-terminated targets, nn.TripletMarginWithDistanceLoss (cosine distance,
swap=True). Also Hessians and hvp (the decoder's against torch's double backward on the
math kernel), unrolled code, a batch of one, other lengths (and the length torch's
circular pad refuses), edges (an all-zero LPPool window, max-pool ties: sg.max splits as
amax where max_pool1d picks one, documented; padding rows and empty bags, repeated and
empty label lists, tied swap distances) and the mistakes a porter makes.

Every ported module agrees with torch to ~1e-9 (loss, outputs, gradients, Hessians).
Found and fixed: torch's own lp_pool formula (sign(out) * relu(|out|) * k) ** (1/p),
and sg.sqrt(sg.relu(x)) in general, gave a nan gradient where relu(x) = 0 (Heaviside
times an infinite derivative) where torch's masked backward gives 0 (now
symbolic._relu_masked: the factor where x > 0, else 0); torch's flat F.pad tuple gets a ShapeError naming sg.pad and pad_width
(and the NumPy pairs it means); F.pad's value= and flip's dims= name constant_values= /
axis=; x.transpose(1, 2) names x.swapaxes(1, 2); x.max(axis=1).values / .indices and
sg.conv1d / max_pool1d / interpolate name the README's recipe.
"""

from __future__ import annotations

import math

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
    torch_twin,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn

# torch warns that it copies the input for padding='same' with an even kernel
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

FAMILIES = Families()
family = FAMILIES.add


def functional(module, names):
    """The real torch ``module`` (float64) called with our parameters as its own
    (``names``: torch name -> ours), through torch.func.functional_call."""
    module = module.double()

    def call(p, args, kwargs=None):
        state = {tname: p[ours] for tname, ours in names.items()}
        return torch.func.functional_call(module, state, args, kwargs or {})

    return call


def conv1x1(x, W, b):
    """nn.Conv1d(c, o, 1) on (B, c, L): W is (o, c, 1)."""
    return sg.einsum("bct,oc->bot", x, W[:, :, 0]) + b[:, None]


CONV1X1 = {"weight": "W", "bias": "b"}


# ================================================================== 1. pooling


@family
def avg_pool1d_padding_ceil(hessian=False):
    """nn.Conv1d(2, 2, 1) -> tanh -> nn.AvgPool1d(3, stride=2, padding=1,
    ceil_mode=True) with count_include_pad=False and =True, L = 8 -> 5 windows (the
    last one starts in the input and runs past the right padding). Window sums by
    sg.sliding_window_view of the zero-padded signal, [::2]; the divisors are the same
    windows of a padded sg.ones_like: zeros outside the input (count_include_pad=False),
    ones over the padding and zeros past it (=True, torch's min(start + k, L + pad))."""
    rng = np.random.default_rng(0)
    L, k, s, p, Lout = 8, 3, 2, 1, 5
    right = (Lout - 1) * s + k - p - L
    m = sg.Model("avg_pool1d_padding_ceil", hessian=hessian)
    x, target = m.input("x", ("B", 2, L)), m.input("target", ("B", 2, Lout))
    W, b = m.param("W", (2, 2, 1)), m.param("b", (2,))
    h = sg.tanh(conv1x1(x, W, b))
    width = ((0, 0), (0, 0), (p, right))

    def window_sums(t):
        return sg.sliding_window_view(t, k, axis=2)[:, :, ::s].sum(axis=-1)

    ones = sg.ones_like(h)
    n_excl = window_sums(sg.pad(ones, width))
    ones_incl = sg.pad(
        sg.pad(ones, ((0, 0), (0, 0), (p, p)), constant_values=1),
        ((0, 0), (0, 0), (0, right - p)),
    )
    sums = window_sums(sg.pad(h, width))
    excl = m.output("excl", sums / n_excl)
    incl = m.output("incl", sums / window_sums(ones_incl))
    m.loss(sg.mean((excl - target) ** 2) + sg.mean(incl * target))

    conv = functional(nn.Conv1d(2, 2, 1), CONV1X1)
    pool_excl = nn.AvgPool1d(k, s, p, ceil_mode=True, count_include_pad=False)
    pool_incl = nn.AvgPool1d(k, s, p, ceil_mode=True, count_include_pad=True)

    def reference(p_, i):
        h = torch.tanh(conv(p_, (i["x"],)))
        excl, incl = pool_excl(h), pool_incl(h)
        loss = F.mse_loss(excl, i["target"]) + (incl * i["target"]).mean()
        return loss, {"excl": excl, "incl": incl}

    params = {"W": normal(rng, 2, 2, 1), "b": normal(rng, 2, scale=0.3)}
    inputs = {"x": normal(rng, 3, 2, L), "target": normal(rng, 3, 2, Lout)}
    return m, reference, params, inputs


@family
def max_pool1d_dilated_ceil(hessian=False):
    """nn.Conv1d(2, 3, 1) -> nn.MaxPool1d(3, stride=2, padding=1, dilation=2,
    ceil_mode=True) on L = 10 -> 5 windows: torch pads with -inf, the porter with
    -1e30 (symgrad refuses -inf constants); dilated taps as [..., ::2] of windows of
    span 5, the window starts as [:, :, ::2]; MSE."""
    rng = np.random.default_rng(1)
    L, Lout = 10, 5
    m = sg.Model("max_pool1d_dilated_ceil", hessian=hessian)
    x, target = m.input("x", ("B", 2, L)), m.input("target", ("B", 3, Lout))
    W, b = m.param("W", (3, 2, 1)), m.param("b", (3,))
    h = conv1x1(x, W, b)
    hp = sg.pad(h, ((0, 0), (0, 0), (1, 2)), constant_values=-1e30)
    y = sg.sliding_window_view(hp, 5, axis=2)[:, :, ::2, ::2].max(axis=-1)
    y = m.output("y", y)
    m.loss(sg.mean((y - target) ** 2))

    conv = functional(nn.Conv1d(2, 3, 1), CONV1X1)
    pool = nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True)

    def reference(p, i):
        y = pool(conv(p, (i["x"],)))
        return F.mse_loss(y, i["target"]), {"y": y}

    params = {"W": normal(rng, 3, 2, 1), "b": normal(rng, 3, scale=0.3)}
    inputs = {"x": normal(rng, 3, 2, L), "target": normal(rng, 3, 3, Lout)}
    return m, reference, params, inputs


@family
def lp_pool1d_two_norms(hessian=False):
    """nn.LPPool1d(2, 3, stride=2) of a conv's output (any sign: sg.norm of each
    window, whose gradient at a zero window is 0, as torch documents for lp_pool) and nn.LPPool1d(3, 2) (stride = kernel) of its sigmoid (positive, so the
    cube root is real), as (sum over the window of |h|**p)**(1/p); torch computes it as
    avg_pool1d(h**p) * k, then **(1/p)."""
    rng = np.random.default_rng(2)
    L = 7
    m = sg.Model("lp_pool1d_two_norms", hessian=hessian)
    x = m.input("x", ("B", 2, L))
    t2, t3 = m.input("tgt2", ("B", 3, 3)), m.input("tgt3", ("B", 3, 3))
    W, b = m.param("W", (3, 2, 1)), m.param("b", (3,))
    h = conv1x1(x, W, b)
    l2 = m.output(
        "l2", sg.norm(sg.sliding_window_view(h, 3, axis=2)[:, :, ::2], axis=-1)
    )
    s = sg.sigmoid(h)[:, :, :6].reshape(-1, 3, 3, 2)
    l3 = m.output("l3", sg.sum(s**3, axis=-1) ** (1 / 3))
    m.loss(sg.mean((l2 - t2) ** 2) + sg.mean(l3 * t3))

    conv = functional(nn.Conv1d(2, 3, 1), CONV1X1)
    lp2, lp3 = nn.LPPool1d(2, 3, stride=2), nn.LPPool1d(3, 2)

    def reference(p, i):
        h = conv(p, (i["x"],))
        l2, l3 = lp2(h), lp3(torch.sigmoid(h))
        return F.mse_loss(l2, i["tgt2"]) + (l3 * i["tgt3"]).mean(), {"l2": l2, "l3": l3}

    params = {"W": normal(rng, 3, 2, 1), "b": normal(rng, 3, scale=0.3)}
    inputs = {
        "x": normal(rng, 3, 2, L),
        "tgt2": normal(rng, 3, 3, 3),
        "tgt3": normal(rng, 3, 3, 3),
    }
    return m, reference, params, inputs


def adaptive_windows(n_in, n_out):
    """torch's adaptive pooling windows: [floor(i n_in / n_out), ceil((i+1) n_in /
    n_out)), overlapping when n_out does not divide n_in."""
    return [(i * n_in // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


@family
def adaptive_pools_non_divisible(hessian=False):
    """nn.AdaptiveAvgPool1d(3) and nn.AdaptiveMaxPool1d(4) of L = 7 (windows [0, 3),
    [2, 5), [4, 7) and [0, 2), [1, 4), [3, 6), [5, 7): overlapping, of unequal
    lengths), and nn.AdaptiveAvgPool2d((2, 3)) of a 5 x 7 map, each window a slice's
    mean or max, sg.stack'ed; a learned (2, 5, 7) offset map so every position's
    gradient is checked."""
    rng = np.random.default_rng(3)
    m = sg.Model("adaptive_pools_non_divisible", hessian=hessian)
    x = m.input("x", ("B", 2, 5, 7))
    target = m.input("target", ("B", 2, 2, 3))
    P = m.param("P", (2, 5, 7))
    h = sg.tanh(x + P)
    rows = h.mean(axis=2)  # (B, 2, 7)
    avg1 = m.output(
        "avg1",
        sg.stack([rows[:, :, a:e].mean(axis=2) for a, e in adaptive_windows(7, 3)], 2),
    )
    max1 = m.output(
        "max1",
        sg.stack([rows[:, :, a:e].max(axis=2) for a, e in adaptive_windows(7, 4)], 2),
    )
    avg2 = sg.stack(
        [
            sg.stack(
                [
                    h[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
                    for c0, c1 in adaptive_windows(7, 3)
                ],
                axis=2,
            )
            for r0, r1 in adaptive_windows(5, 2)
        ],
        axis=2,
    )
    avg2 = m.output("avg2", avg2)
    m.loss(sg.mean((avg2 - target) ** 2) + sg.mean(avg1**2) - sg.mean(sg.sin(2 * max1)))

    def reference(p, i):
        h = torch.tanh(i["x"] + p["P"])
        rows = h.mean(2)
        avg1 = nn.AdaptiveAvgPool1d(3)(rows)
        max1 = nn.AdaptiveMaxPool1d(4)(rows)
        avg2 = nn.AdaptiveAvgPool2d((2, 3))(h)
        loss = (
            F.mse_loss(avg2, i["target"])
            + (avg1**2).mean()
            - torch.sin(2 * max1).mean()
        )
        return loss, {"avg1": avg1, "max1": max1, "avg2": avg2}

    params = {"P": normal(rng, 2, 5, 7, scale=0.5)}
    inputs = {"x": normal(rng, 3, 2, 5, 7), "target": normal(rng, 3, 2, 2, 3)}
    return m, reference, params, inputs


# ================================================================= 2. resampling


def nearest_indices(n_in, n_out, exact=False):
    """torch's nearest (floor(j * scale)) and nearest-exact (floor((j + 0.5) *
    scale)) source index of each output position, scale = n_in / n_out."""
    scale = n_in / n_out
    return [
        min(int(math.floor((j + 0.5 * exact) * scale)), n_in - 1) for j in range(n_out)
    ]


@family
def upsample_nearest_2d(hessian=False):
    """nn.Upsample(scale_factor=2, mode='nearest') by sg.repeat on both axes,
    nn.Upsample(size=(5, 7), mode='nearest') and mode='nearest-exact' by lists of ints
    (x[:, :, [0, 0, 1, 1, 2]], then on the last axis) of a 3 x 4 map; the gradient of
    each source pixel sums over its copies."""
    rng = np.random.default_rng(4)
    m = sg.Model("upsample_nearest_2d", hessian=hessian)
    x = m.input("x", ("B", 2, 3, 4))
    w2, w5 = m.input("w2", ("B", 2, 6, 8)), m.input("w5", ("B", 2, 5, 7))
    P = m.param("P", (2, 3, 4))
    h = sg.tanh(x + P)
    up2 = m.output("up2", sg.repeat(sg.repeat(h, 2, axis=2), 2, axis=3))
    near = h[:, :, nearest_indices(3, 5)][:, :, :, nearest_indices(4, 7)]
    exact = h[:, :, nearest_indices(3, 5, True)][:, :, :, nearest_indices(4, 7, True)]
    near, exact = m.output("near", near), m.output("exact", exact)
    m.loss(sg.mean(up2 * w2) + sg.mean(near * w5) + sg.mean(exact**2 * w5))

    def reference(p, i):
        h = torch.tanh(i["x"] + p["P"])
        up2 = nn.Upsample(scale_factor=2, mode="nearest")(h)
        near = nn.Upsample(size=(5, 7), mode="nearest")(h)
        exact = nn.Upsample(size=(5, 7), mode="nearest-exact")(h)
        loss = (
            (up2 * i["w2"]).mean()
            + (near * i["w5"]).mean()
            + (exact**2 * i["w5"]).mean()
        )
        return loss, {"up2": up2, "near": near, "exact": exact}

    params = {"P": normal(rng, 2, 3, 4, scale=0.5)}
    inputs = {
        "x": normal(rng, 2, 2, 3, 4),
        "w2": normal(rng, 2, 2, 6, 8),
        "w5": normal(rng, 2, 2, 5, 7),
    }
    return m, reference, params, inputs


def linear_taps(n_in, n_out, align_corners):
    """Source indices and weights of torch's linear interpolation along one axis:
    src = j (n_in - 1) / (n_out - 1) with align_corners, else (j + 0.5) n_in / n_out -
    0.5 clamped at 0."""
    taps = []
    for j in range(n_out):
        if align_corners:
            src = j * (n_in - 1) / (n_out - 1)
        else:
            src = max((j + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        taps.append((i0, i1, src - i0))
    return taps


def lerp_axis(x, axis, taps):
    """x interpolated along ``axis`` (counted from the end): one weighted pair of
    slices per output position, sg.stack'ed."""

    def at(i):
        return x[(Ellipsis, i) + (slice(None),) * (-axis - 1)]

    return sg.stack([(1 - w) * at(i0) + w * at(i1) for i0, i1, w in taps], axis=axis)


@family
def upsample_bilinear_both_corners(hessian=False):
    """nn.Upsample(scale_factor=2, mode='bilinear') with align_corners=False (torch's
    default: half-pixel centres, clamped at the border) and nn.Upsample(size=(5, 7),
    mode='bilinear', align_corners=True) of a 3 x 4 map: separable, rows then columns,
    each output line a weighted pair of input lines."""
    rng = np.random.default_rng(5)
    m = sg.Model("upsample_bilinear_both_corners", hessian=hessian)
    x = m.input("x", ("B", 2, 3, 4))
    w2, w5 = m.input("w2", ("B", 2, 6, 8)), m.input("w5", ("B", 2, 5, 7))
    P = m.param("P", (2, 3, 4))
    h = sg.tanh(x + P)
    half = lerp_axis(
        lerp_axis(h, -2, linear_taps(3, 6, False)), -1, linear_taps(4, 8, False)
    )
    corners = lerp_axis(
        lerp_axis(h, -2, linear_taps(3, 5, True)), -1, linear_taps(4, 7, True)
    )
    half, corners = m.output("half", half), m.output("corners", corners)
    m.loss(sg.mean((half - w2) ** 2) + sg.mean(corners * w5))

    def reference(p, i):
        h = torch.tanh(i["x"] + p["P"])
        half = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(h)
        corners = nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True)(h)
        loss = F.mse_loss(half, i["w2"]) + (corners * i["w5"]).mean()
        return loss, {"half": half, "corners": corners}

    params = {"P": normal(rng, 2, 3, 4, scale=0.5)}
    inputs = {
        "x": normal(rng, 2, 2, 3, 4),
        "w2": normal(rng, 2, 2, 6, 8),
        "w5": normal(rng, 2, 2, 5, 7),
    }
    return m, reference, params, inputs


def fold_ids(H, W, kh, kw, sh, sw, p):
    """For nn.Fold: the flat position in the padded (H + 2p, W + 2p) map of each
    (i, j, oh, ow) block entry, in that order (what the porter computes in NumPy)."""
    Wp = W + 2 * p
    oh, ow = (H + 2 * p - kh) // sh + 1, (W + 2 * p - kw) // sw + 1
    i, j, r, c = np.meshgrid(
        np.arange(kh), np.arange(kw), np.arange(oh), np.arange(ow), indexing="ij"
    )
    return ((r * sh + i) * Wp + (c * sw + j)).reshape(-1).astype(np.int64)


@family
def unfold_mix_fold(hessian=False):
    """nn.Unfold(kernel_size=(2, 3), padding=1, stride=(1, 2)) of a (2, 4, 5) map
    (sg.pad, sg.sliding_window_view, [..., ::2] columns, transposed and reshaped to
    torch's (B, C*kh*kw, L) order), a learned mix of the patch entries, then nn.Fold
    with the same geometry back to (2, 4, 5): overlapping entries summed by
    sg.segment_sum over the padded map's flat positions (an int64 input the porter
    computes in NumPy), the padding cropped."""
    rng = np.random.default_rng(6)
    H, W_, kh, kw, sh, sw, p = 4, 5, 2, 3, 1, 2, 1
    oh, ow = (H + 2 * p - kh) // sh + 1, (W_ + 2 * p - kw) // sw + 1
    Hp, Wp = H + 2 * p, W_ + 2 * p
    m = sg.Model("unfold_mix_fold", hessian=hessian)
    x = m.input("x", ("B", 2, H, W_))
    ids = m.input("ids", (kh * kw * oh * ow,), dtype="int64")
    target = m.input("target", ("B", 2, H, W_))
    P, M = m.param("P", (2, H, W_)), m.param("M", (12, 12))
    h = sg.tanh(x + P)
    hp = sg.pad(h, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sg.sliding_window_view(hp, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    cols = m.output("cols", win.transpose(0, 1, 4, 5, 2, 3).reshape(-1, 12, oh * ow))
    mixed = sg.tanh(sg.einsum("bkl,mk->bml", cols, M))
    blocks = mixed.reshape(-1, 2, kh, kw, oh, ow).transpose(2, 3, 4, 5, 0, 1)
    summed = sg.segment_sum(blocks.reshape(kh * kw * oh * ow, -1, 2), ids, Hp * Wp)
    folded = summed.reshape(Hp, Wp, -1, 2).transpose(2, 3, 0, 1)[:, :, p:-p, p:-p]
    folded = m.output("folded", folded)
    m.loss(sg.mean((folded - target) ** 2))

    unfold = nn.Unfold((kh, kw), padding=p, stride=(sh, sw))
    fold = nn.Fold((H, W_), (kh, kw), padding=p, stride=(sh, sw))

    def reference(p_, i):
        cols = unfold(torch.tanh(i["x"] + p_["P"]))
        folded = fold(torch.tanh(torch.einsum("bkl,mk->bml", cols, p_["M"])))
        return F.mse_loss(folded, i["target"]), {"cols": cols, "folded": folded}

    params = {
        "P": normal(rng, 2, H, W_, scale=0.5),
        "M": normal(rng, 12, 12, scale=0.4),
    }
    inputs = {
        "x": normal(rng, 2, 2, H, W_),
        "ids": fold_ids(H, W_, kh, kw, sh, sw, p),
        "target": normal(rng, 2, 2, H, W_),
    }
    return m, reference, params, inputs


@family
def padding_modules_2d(hessian=False):
    """nn.ReflectionPad2d((1, 2, 2, 0)), nn.ReplicationPad2d((0, 3, 1, 1)),
    nn.CircularPad2d((1, 1, 2, 0)), nn.ZeroPad2d((-1, 2, 1, -1)) (negative: a crop)
    and nn.ConstantPad2d(1, 0.5) of a 3 x 4 map, as sg.pad with every axis listed,
    torch's (left, right, top, bottom) reordered to ((top, bottom), (left, right))."""
    rng = np.random.default_rng(7)
    m = sg.Model("padding_modules_2d", hessian=hessian)
    x = m.input("x", ("B", 2, 3, 4))
    shapes = {
        "refl": (5, 7),
        "repl": (5, 7),
        "circ": (5, 6),
        "zero": (3, 5),
        "const": (5, 6),
    }
    w = {k: m.input("w_" + k, ("B", 2, *s)) for k, s in shapes.items()}
    P = m.param("P", (2, 3, 4))
    h = sg.tanh(x + P)
    no = ((0, 0), (0, 0))
    out = {
        "refl": sg.pad(h, (*no, (2, 0), (1, 2)), mode="reflect"),
        "repl": sg.pad(h, (*no, (1, 1), (0, 3)), mode="edge"),
        "circ": sg.pad(h, (*no, (2, 0), (1, 1)), mode="wrap"),
        "zero": sg.pad(h[:, :, :-1, 1:], (*no, (1, 0), (0, 2))),
        "const": sg.pad(h, 1, constant_values=0.5)[1:-1, 1:-1],
    }
    out = {k: m.output(k, v) for k, v in out.items()}
    m.loss(sum(sg.mean(sg.tanh(out[k]) * w[k]) for k in shapes))

    mods = {
        "refl": nn.ReflectionPad2d((1, 2, 2, 0)),
        "repl": nn.ReplicationPad2d((0, 3, 1, 1)),
        "circ": nn.CircularPad2d((1, 1, 2, 0)),
        "zero": nn.ZeroPad2d((-1, 2, 1, -1)),
        "const": nn.ConstantPad2d(1, 0.5),
    }

    def reference(p, i):
        h = torch.tanh(i["x"] + p["P"])
        out = {k: mod(h) for k, mod in mods.items()}
        loss = sum((torch.tanh(out[k]) * i["w_" + k]).mean() for k in shapes)
        return loss, out

    params = {"P": normal(rng, 2, 3, 4, scale=0.5)}
    inputs = {"x": normal(rng, 2, 2, 3, 4)}
    inputs.update({"w_" + k: normal(rng, 2, 2, *s) for k, s in shapes.items()})
    return m, reference, params, inputs


# ============================================================ 3. convolutions


@family
def grouped_shuffle_softmax2d(hessian=False):
    """nn.Conv2d(4, 4, 1, groups=2) -> nn.ChannelShuffle(2) -> nn.Conv2d(4, 4, 1,
    groups=2) -> nn.Softmax2d, and a cross-entropy against soft targets through
    torch.log of the probabilities: grouped 1x1 convs by a reshape of the channels into
    (groups, per group) and sg.einsum, the shuffle by a reshape and a transpose."""
    rng = np.random.default_rng(8)
    m = sg.Model("grouped_shuffle_softmax2d", hessian=hessian)
    x, t = m.input("x", ("B", 4, 3, 3)), m.input("t", ("B", 4, 3, 3))
    W1, b1 = m.param("W1", (4, 2, 1, 1)), m.param("b1", (4,))
    W2, b2 = m.param("W2", (4, 2, 1, 1)), m.param("b2", (4,))

    def grouped(h, W, b):
        h = h.reshape(-1, 2, 2, 3, 3)
        k = W[:, :, 0, 0].reshape(2, 2, 2)
        return (
            sg.einsum("bgchw,goc->bgohw", h, k).reshape(-1, 4, 3, 3) + b[:, None, None]
        )

    h = sg.tanh(grouped(x, W1, b1))
    h = h.reshape(-1, 2, 2, 3, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 4, 3, 3)
    probs = m.output("probs", sg.softmax(grouped(h, W2, b2), axis=1))
    m.loss(-sg.mean(sg.sum(t * sg.log(probs), axis=1)))

    net = functional(
        nn.Sequential(
            nn.Conv2d(4, 4, 1, groups=2),
            nn.Tanh(),
            nn.ChannelShuffle(2),
            nn.Conv2d(4, 4, 1, groups=2),
            nn.Softmax2d(),
        ),
        {"0.weight": "W1", "0.bias": "b1", "3.weight": "W2", "3.bias": "b2"},
    )

    def reference(p, i):
        probs = net(p, (i["x"],))
        return -(i["t"] * torch.log(probs)).sum(1).mean(), {"probs": probs}

    params = {
        "W1": normal(rng, 4, 2, 1, 1),
        "b1": normal(rng, 4, scale=0.2),
        "W2": normal(rng, 4, 2, 1, 1),
        "b2": normal(rng, 4, scale=0.2),
    }
    t_ = rng.random((2, 4, 3, 3))
    inputs = {"x": normal(rng, 2, 4, 3, 3), "t": t_ / t_.sum(1, keepdims=True)}
    return m, reference, params, inputs


@family
def conv1d_same_even_kernels(hessian=False):
    """nn.Conv1d(2, 3, 4, padding='same', padding_mode='circular') -> tanh ->
    nn.Conv1d(3, 2, 2, padding='same', dilation=3) over a symbolic length: torch pads
    'same' with an even kernel asymmetrically, (1, 2) for both (total d (k - 1) = 3,
    left = total // 2): sg.pad mode='wrap' then zeros, the dilated taps as [..., ::3].
    """
    rng = np.random.default_rng(9)
    m = sg.Model("conv1d_same_even_kernels", hessian=hessian)
    x, target = m.input("x", ("B", 2, "L")), m.input("target", ("B", 2, "L"))
    W1, b1 = m.param("W1", (3, 2, 4)), m.param("b1", (3,))
    W2, b2 = m.param("W2", (2, 3, 2)), m.param("b2", (2,))
    xp = sg.pad(x, ((0, 0), (0, 0), (1, 2)), mode="wrap")
    h = sg.einsum("bctk,ock->bot", sg.sliding_window_view(xp, 4, axis=2), W1)
    h = sg.tanh(h + b1[:, None])
    hp = sg.pad(h, ((0, 0), (0, 0), (1, 2)))
    taps = sg.sliding_window_view(hp, 4, axis=2)[..., ::3]
    y = m.output("y", sg.einsum("bctk,ock->bot", taps, W2) + b2[:, None])
    m.loss(sg.mean((y - target) ** 2))

    net = functional(
        nn.Sequential(
            nn.Conv1d(2, 3, 4, padding="same", padding_mode="circular"),
            nn.Tanh(),
            nn.Conv1d(3, 2, 2, padding="same", dilation=3),
        ),
        {"0.weight": "W1", "0.bias": "b1", "2.weight": "W2", "2.bias": "b2"},
    )

    def reference(p, i):
        y = net(p, (i["x"],))
        return F.mse_loss(y, i["target"]), {"y": y}

    params = {
        "W1": normal(rng, 3, 2, 4, scale=0.5),
        "b1": normal(rng, 3, scale=0.2),
        "W2": normal(rng, 2, 3, 2, scale=0.5),
        "b2": normal(rng, 2, scale=0.2),
    }
    inputs = {"x": normal(rng, 2, 2, 6), "target": normal(rng, 2, 2, 6)}
    return m, reference, params, inputs


@family
def conv_transpose1d_groups_dilation(hessian=False):
    """nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
    dilation=2) on L = 5 -> 12: the input zero-interleaved (sg.stack with
    sg.zeros_like, a reshape, the trailing zero cut), padded by d (k - 1) - p = 3 on
    the left and 3 + output_padding on the right, then a grouped dilated conv with the
    flipped kernel, whose (in, out / groups, k) layout is torch's, not Conv1d's."""
    rng = np.random.default_rng(10)
    L, Lout = 5, 12
    m = sg.Model("conv_transpose1d_groups_dilation", hessian=hessian)
    x, target = m.input("x", ("B", 4, L)), m.input("target", ("B", 6, Lout))
    W, b = m.param("W", (4, 3, 3)), m.param("b", (6,))
    xd = sg.stack([x, sg.zeros_like(x)], axis=3).reshape(-1, 4, 2 * L)[
        :, :, : 2 * L - 1
    ]
    xp = sg.pad(xd, ((0, 0), (0, 0), (3, 4)))
    taps = sg.sliding_window_view(xp, 5, axis=2)[..., ::2].reshape(-1, 2, 2, Lout, 3)
    k = sg.flip(W.reshape(2, 2, 3, 3), -1)
    y = sg.einsum("bgctk,gcok->bgot", taps, k).reshape(-1, 6, Lout) + b[:, None]
    y = m.output("y", y)
    m.loss(sg.mean((sg.tanh(y) - target) ** 2))

    conv = functional(
        nn.ConvTranspose1d(
            4, 6, 3, stride=2, padding=1, output_padding=1, groups=2, dilation=2
        ),
        {"weight": "W", "bias": "b"},
    )

    def reference(p, i):
        y = conv(p, (i["x"],))
        return F.mse_loss(torch.tanh(y), i["target"]), {"y": y}

    params = {"W": normal(rng, 4, 3, 3, scale=0.5), "b": normal(rng, 6, scale=0.2)}
    inputs = {"x": normal(rng, 2, 4, L), "target": normal(rng, 2, 6, Lout, scale=0.5)}
    return m, reference, params, inputs


# ========================================================= 4. recurrent, attention


@family
def lstm_cell_loop(hessian=False):
    """nn.LSTMCell(3, 4) stepped over T = 4 from a given (h0, c0), torch's gate order
    (i, f, g, o) by slices of the (16, 3) and (16, 4) weights, a nn.Linear(4, 2) head
    at every step; MSE over the steps."""
    rng = np.random.default_rng(11)
    T, Hd = 4, 4
    m = sg.Model("lstm_cell_loop", hessian=hessian)
    x, target = m.input("x", ("B", T, 3)), m.input("target", ("B", T, 2))
    h, c = m.input("h0", ("B", Hd)), m.input("c0", ("B", Hd))
    Wi, Wh = m.param("W_ih", (4 * Hd, 3)), m.param("W_hh", (4 * Hd, Hd))
    bi, bh = m.param("b_ih", (4 * Hd,)), m.param("b_hh", (4 * Hd,))
    V, d = m.param("V", (2, Hd)), m.param("d", (2,))
    ys = []
    for t in range(T):
        z = x[:, t] @ Wi.T + bi + h @ Wh.T + bh
        i, f, g, o = sg.split(z, 4, axis=1)
        c = sg.sigmoid(f) * c + sg.sigmoid(i) * sg.tanh(g)
        h = sg.sigmoid(o) * sg.tanh(c)
        ys.append(h @ V.T + d)
    y = m.output("y", sg.stack(ys, axis=1))
    m.output("c_last", c)
    m.loss(sg.mean((y - target) ** 2))

    cell = functional(
        nn.LSTMCell(3, Hd),
        {
            "weight_ih": "W_ih",
            "weight_hh": "W_hh",
            "bias_ih": "b_ih",
            "bias_hh": "b_hh",
        },
    )

    def reference(p, i):
        h, c, ys = i["h0"], i["c0"], []
        for t in range(T):
            h, c = cell(p, (i["x"][:, t], (h, c)))
            ys.append(h @ p["V"].T + p["d"])
        y = torch.stack(ys, 1)
        return F.mse_loss(y, i["target"]), {"y": y, "c_last": c}

    params = {
        "W_ih": normal(rng, 16, 3, scale=0.5),
        "W_hh": normal(rng, 16, 4, scale=0.5),
        "b_ih": normal(rng, 16, scale=0.2),
        "b_hh": normal(rng, 16, scale=0.2),
        "V": normal(rng, 2, 4),
        "d": normal(rng, 2, scale=0.1),
    }
    inputs = {
        "x": normal(rng, 3, T, 3),
        "target": normal(rng, 3, T, 2, scale=0.5),
        "h0": normal(rng, 3, Hd, scale=0.5),
        "c0": normal(rng, 3, Hd, scale=0.5),
    }
    return m, reference, params, inputs


def layer_norm(x, g, b):
    mu = sg.mean(x, axis=-1, keepdims=True)
    return (x - mu) / sg.sqrt(sg.var(x, axis=-1, keepdims=True) + 1e-5) * g + b


def attention(q_in, kv_in, Lq, Lk, W, b, Wo, bo, masked, H=2, E=4):
    """nn.MultiheadAttention's math (packed (3E, E) in_proj): ``masked`` a bool
    condition broadcasting to (B, H, Lq, Lk), True where torch's bool masks mask."""
    dh = E // H

    def heads(t, n):
        return t.reshape(-1, n, H, dh).transpose(0, 2, 1, 3)

    q = heads(q_in @ W[:E].T + b[:E], Lq)
    k = heads(kv_in @ W[E : 2 * E].T + b[E : 2 * E], Lk)
    v = heads(kv_in @ W[2 * E :].T + b[2 * E :], Lk)
    scores = sg.where(masked, -1e30, q @ sg.swapaxes(k, -1, -2) / math.sqrt(dh))
    out = (sg.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(-1, Lq, E)
    return out @ Wo.T + bo


MHA_NAMES = {
    "in_proj_weight": "Win",
    "in_proj_bias": "b_in",
    "out_proj.weight": "Wout",
    "out_proj.bias": "bout",
}
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
def transformer_decoder_postnorm_bool_masks(hessian=False):
    """nn.TransformerDecoderLayer(4, 2, 6, dropout=0, batch_first=True) (post-norm,
    ReLU: torch's defaults) with bool masks as torch takes them: a causal tgt_mask
    (True above the diagonal), tgt_key_padding_mask and memory_key_padding_mask
    (True = padding), combined with | into one sg.where condition."""
    rng = np.random.default_rng(12)
    T, S, E = 3, 4, 4
    m = sg.Model("transformer_decoder_postnorm_bool_masks", hessian=hessian)
    tgt, mem = m.input("tgt", ("B", T, E)), m.input("memory", ("B", S, E))
    causal = m.input("causal", (T, T), dtype="bool")
    tpad = m.input("tgt_pad", ("B", T), dtype="bool")
    mpad = m.input("mem_pad", ("B", S), dtype="bool")
    target = m.input("target", ("B", T, E))
    p = {name: m.param(name, shape) for name, shape in decoder_shapes(E, 6).items()}

    def mha(prefix, q, kv, Lk, masked):
        return attention(
            q,
            kv,
            T,
            Lk,
            p[prefix + "Win"],
            p[prefix + "b_in"],
            p[prefix + "Wout"],
            p[prefix + "bout"],
            masked,
        )

    x = tgt
    x = layer_norm(
        x + mha("sa_", x, x, T, causal | tpad[:, None, None, :]), p["g1"], p["be1"]
    )
    x = layer_norm(x + mha("ca_", x, mem, S, mpad[:, None, None, :]), p["g2"], p["be2"])
    ff = sg.relu(x @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]
    y = m.output("y", layer_norm(x + ff, p["g3"], p["be3"]))
    m.loss(sg.mean((y - target) ** 2))

    layer = functional(
        nn.TransformerDecoderLayer(E, 2, 6, dropout=0.0, batch_first=True),
        DECODER_NAMES,
    )

    def reference(p_, i):
        y = layer(
            p_,
            (i["tgt"], i["memory"]),
            {
                "tgt_mask": i["causal"],
                "tgt_key_padding_mask": i["tgt_pad"],
                "memory_key_padding_mask": i["mem_pad"],
            },
        )
        return F.mse_loss(y, i["target"]), {"y": y}

    params = {}
    for name, shape in decoder_shapes(E, 6).items():
        if name[0] == "g":
            params[name] = 1.0 + normal(rng, *shape, scale=0.1)
        else:
            params[name] = normal(rng, *shape, scale=0.5)
    inputs = {
        "tgt": normal(rng, 2, T, E),
        "memory": normal(rng, 2, S, E),
        "causal": np.triu(np.ones((T, T), dtype=bool), 1),
        "tgt_pad": np.array([[False, False, True], [False, False, False]]),
        "mem_pad": np.array([[False, False, True, True], [True, False, False, False]]),
        "target": normal(rng, 2, T, E),
    }
    return m, reference, params, inputs


def decoder_shapes(E, ff):
    shapes = {}
    for pre in ("sa_", "ca_"):
        shapes.update(
            {pre + "Win": (3 * E, E), pre + "b_in": (3 * E,)},
        )
        shapes.update({pre + "Wout": (E, E), pre + "bout": (E,)})
    shapes.update({"W1": (ff, E), "b1": (ff,), "W2": (E, ff), "b2": (E,)})
    for n in (1, 2, 3):
        shapes.update({f"g{n}": (E,), f"be{n}": (E,)})
    return shapes


# ======================================================== 5. embeddings, heads


@family
def adaptive_log_softmax(hessian=False):
    """nn.AdaptiveLogSoftmaxWithLoss(5, 9, cutoffs=[3, 6], div_value=2.0) after a
    tanh Linear(4, 5): the head (3 shortlist classes + 2 cluster logits, no bias), two
    low-rank tails (5 -> 2 -> 3, 5 -> 1 -> 3); the full log-probabilities (torch's
    .log_prob) by sg.concatenate of the shortlist and each tail's log_softmax plus its
    cluster's head log-probability, the per-sample .output by take_along_axis on the
    int64 targets, .loss its negative mean."""
    rng = np.random.default_rng(13)
    m = sg.Model("adaptive_log_softmax", hessian=hessian)
    x0 = m.input("x", ("B", 4))
    target = m.input("target", ("B",), dtype="int64")
    W0, b0 = m.param("W0", (5, 4)), m.param("b0", (5,))
    Wh = m.param("head", (5, 5))
    A0, B0 = m.param("A0", (2, 5)), m.param("B0", (3, 2))
    A1, B1 = m.param("A1", (1, 5)), m.param("B1", (3, 1))
    x = sg.tanh(x0 @ W0.T + b0)
    head = sg.log_softmax(x @ Wh.T, axis=1)
    c0 = sg.log_softmax((x @ A0.T) @ B0.T, axis=1) + head[:, 3:4]
    c1 = sg.log_softmax((x @ A1.T) @ B1.T, axis=1) + head[:, 4:5]
    logp = m.output("log_prob", sg.concatenate([head[:, :3], c0, c1], axis=1))
    out = m.output("output", sg.take_along_axis(logp, target[:, None], axis=1)[:, 0])
    m.loss(-sg.mean(out))

    asm = nn.AdaptiveLogSoftmaxWithLoss(5, 9, [3, 6], div_value=2.0).double()
    names = {
        "head.weight": "head",
        "tail.0.0.weight": "A0",
        "tail.0.1.weight": "B0",
        "tail.1.0.weight": "A1",
        "tail.1.1.weight": "B1",
    }

    def reference(p, i):
        x = torch.tanh(i["x"] @ p["W0"].T + p["b0"])
        state = {t: p[o] for t, o in names.items()}
        res = torch.func.functional_call(asm, state, (x, i["target"]))
        log_prob = torch.func.functional_call(
            _LogProb(asm), {"asm." + t: v for t, v in state.items()}, (x,)
        )
        return res.loss, {"output": res.output, "log_prob": log_prob}

    params = {
        "W0": normal(rng, 5, 4),
        "b0": normal(rng, 5, scale=0.2),
        "head": normal(rng, 5, 5),
        "A0": normal(rng, 2, 5),
        "B0": normal(rng, 3, 2),
        "A1": normal(rng, 1, 5),
        "B1": normal(rng, 3, 1),
    }
    inputs = {"x": normal(rng, 6, 4), "target": np.array([0, 4, 8, 2, 6, 7])}
    return m, reference, params, inputs


class _LogProb(nn.Module):
    """asm.log_prob as a forward, so functional_call can swap its weights."""

    def __init__(self, asm):
        super().__init__()
        self.asm = asm

    def forward(self, x):
        return self.asm.log_prob(x)


@family
def embedding_bag_sum_per_sample_weights(hessian=False):
    """nn.EmbeddingBag(7, 3, mode='sum', padding_idx=0) called with flat indices,
    offsets (an empty bag among them) and learned per_sample_weights: the offsets
    become int64 bag ids (np.repeat, in NumPy), the bags sg.segment_sum of the
    weighted rows; padding entries dropped by sg.where (no gradient to the padding row
    nor to their weights, as torch); a Linear(3, 2) head, MSE."""
    rng = np.random.default_rng(14)
    n = 9
    m = sg.Model("embedding_bag_sum_per_sample_weights", hessian=hessian)
    idx = m.input("idx", (n,), dtype="int64")
    bag_of = m.input("bag_of", (n,), dtype="int64")
    y = m.input("y", ("B", 2))
    E, w = m.param("E", (7, 3)), m.param("psw", (n,))
    V, d = m.param("V", (2, 3)), m.param("d", (2,))
    weight = sg.where(idx == 0, 0.0, w)
    bags = m.output(
        "bags", sg.segment_sum(E[idx] * weight[:, None], bag_of, y.shape[0])
    )
    z = bags @ V.T + d
    m.loss(sg.mean((z - y) ** 2))

    ebag = functional(nn.EmbeddingBag(7, 3, mode="sum", padding_idx=0), {"weight": "E"})

    def reference(p, i):
        offsets = torch.searchsorted(i["bag_of"], torch.arange(len(i["y"])))
        bags = ebag(p, (i["idx"], offsets), {"per_sample_weights": p["psw"]})
        z = bags @ p["V"].T + p["d"]
        return F.mse_loss(z, i["y"]), {"bags": bags}

    offsets = np.array([0, 3, 3, 5, 7])  # bag 1 is empty; bag 3 is all padding
    idx_ = np.array([1, 4, 0, 2, 6, 0, 0, 3, 3])
    B = len(offsets)
    params = {
        "E": normal(rng, 7, 3),
        "psw": normal(rng, n),
        "V": normal(rng, 2, 3),
        "d": normal(rng, 2, scale=0.1),
    }
    params["E"][0] = 0.0
    inputs = {
        "idx": idx_,
        "bag_of": np.repeat(np.arange(B), np.diff(np.append(offsets, n))),
        "y": normal(rng, B, 2),
    }
    return m, reference, params, inputs


# ================================================================== 6. losses


@family
def multilabel_margin_loss(hessian=False):
    """nn.MultiLabelMarginLoss on Linear(3, 5) scores, torch's int64 targets with -1
    ending each sample's label list: the porter passes the labels (the -1 tail
    replaced by 0), a bool mask of the valid list entries and a bool is-target mask
    per class; the hinge relu(1 - (x[y_k] - x[i])) over valid k and non-target i,
    summed, over C, mean over the batch."""
    rng = np.random.default_rng(15)
    C = 5
    m = sg.Model("multilabel_margin_loss", hessian=hessian)
    feats = m.input("feats", ("B", 3))
    labels = m.input("labels", ("B", C), dtype="int64")
    valid = m.input("valid", ("B", C), dtype="bool")
    is_target = m.input("is_target", ("B", C), dtype="bool")
    W, b = m.param("W", (C, 3)), m.param("b", (C,))
    x = m.output("scores", feats @ W.T + b)
    xy = sg.take_along_axis(x, labels, axis=1)
    hinge = sg.relu(1.0 - xy[:, :, None] + x[:, None, :])
    keep = valid[:, :, None] & ~is_target[:, None, :]
    m.loss(sg.mean(sg.sum(sg.where(keep, hinge, 0.0), axis=(1, 2)) / C))

    lin = functional(nn.Linear(3, C), {"weight": "W", "bias": "b"})

    def reference(p, i):
        x = lin(p, (i["feats"],))
        torch_target = torch.where(i["valid"], i["labels"], -1)  # torch's format
        return nn.MultiLabelMarginLoss()(x, torch_target), {"scores": x}

    torch_target = np.array(
        [[3, 0, -1, 1, 2], [1, 2, 3, 4, 0], [2, -1, 0, 0, 0], [-1, 1, 2, 3, 4]]
    )
    valid_ = np.cumprod(torch_target != -1, axis=1).astype(bool)
    is_target_ = np.zeros((4, C), dtype=bool)
    for r in range(4):
        is_target_[r, torch_target[r][valid_[r]]] = True
    params = {"W": normal(rng, C, 3), "b": normal(rng, C, scale=0.2)}
    inputs = {
        "feats": normal(rng, 4, 3),
        "labels": np.where(valid_, torch_target, 0),
        "valid": valid_,
        "is_target": is_target_,
    }
    return m, reference, params, inputs


@family
def triplet_cosine_distance_swap(hessian=False):
    """nn.TripletMarginWithDistanceLoss(distance_function=1 - cosine similarity,
    margin=0.5, swap=True) on a shared tanh Linear(4, 3) embedding: cosine similarity
    by sg.norm, the swap as sg.minimum of d(a, n) and d(p, n)."""
    rng = np.random.default_rng(16)
    m = sg.Model("triplet_cosine_distance_swap", hessian=hessian)
    a, pos, neg = (m.input(k, ("B", 4)) for k in ("a", "p", "n"))
    W, b = m.param("W", (3, 4)), m.param("b", (3,))

    def embed(t):
        return sg.tanh(t @ W.T + b)

    def dist(u, v):
        return 1.0 - sg.sum(u * v, axis=1) / (sg.norm(u, axis=1) * sg.norm(v, axis=1))

    ea, ep, en = embed(a), embed(pos), embed(neg)
    d_pos = m.output("d_pos", dist(ea, ep))
    d_neg = m.output("d_neg", sg.minimum(dist(ea, en), dist(ep, en)))
    m.loss(sg.mean(sg.relu(d_pos - d_neg + 0.5)))

    lin = functional(nn.Linear(4, 3), {"weight": "W", "bias": "b"})

    def distance(u, v):
        return 1.0 - F.cosine_similarity(u, v)

    loss_fn = nn.TripletMarginWithDistanceLoss(
        distance_function=distance, margin=0.5, swap=True
    )

    def reference(p, i):
        ea, ep, en = (torch.tanh(lin(p, (i[k],))) for k in ("a", "p", "n"))
        loss = loss_fn(ea, ep, en)
        d_neg = torch.minimum(distance(ea, en), distance(ep, en))
        return loss, {"d_pos": distance(ea, ep), "d_neg": d_neg}

    params = {"W": normal(rng, 3, 4), "b": normal(rng, 3, scale=0.2)}
    inputs = {k: normal(rng, 8, 4) for k in ("a", "p", "n")}
    return m, reference, params, inputs


# ============================================================= the families' tests

module_of = FAMILIES.module


@pytest.mark.parametrize("name", list(FAMILIES))
def test_module_agrees_with_torch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


HESSIAN_FAMILIES = [
    "avg_pool1d_padding_ceil",
    "lp_pool1d_two_norms",
    "adaptive_pools_non_divisible",
    "upsample_bilinear_both_corners",
    "unfold_mix_fold",
    "padding_modules_2d",
    "grouped_shuffle_softmax2d",
    "conv_transpose1d_groups_dilation",
    "lstm_cell_loop",
    "adaptive_log_softmax",
    "triplet_cosine_distance_swap",
]


@pytest.mark.parametrize("name", HESSIAN_FAMILIES)
def test_hessian_and_hvp_agree_with_torch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = [
    "avg_pool1d_padding_ceil",
    "max_pool1d_dilated_ceil",
    "lp_pool1d_two_norms",
    "upsample_nearest_2d",
    "conv_transpose1d_groups_dilation",
    "lstm_cell_loop",
    "adaptive_log_softmax",
    "embedding_bag_sum_per_sample_weights",
    "multilabel_margin_loss",
]


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_at_its_sizes_agrees_with_torch(name):
    FAMILIES.assert_unrolled_agrees(name)


@pytest.mark.parametrize(
    "name", [n for n in FAMILIES if n != "embedding_bag_sum_per_sample_weights"]
)
def test_a_batch_of_one_agrees_with_torch(name):
    """The same module at B = 1 (the bags' count is the embedding bag's B: see its own
    edge test)."""
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    small = first_along(module, inputs, "B", 1)
    check(module, reference, params, small)
    assert_matches_central_differences(module, params, small)


def test_decoder_hvp_against_torchs_double_backward_on_the_math_kernel():
    """The post-norm decoder with bool masks, hessian=True: hvp in a random direction
    against torch's double backward (on the math attention kernel: the CPU flash
    kernel has no second derivative)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    name = "transformer_decoder_postnorm_bool_masks"
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name, hessian=True)
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


# ================================================================ edge cases


@pytest.mark.parametrize("L", [2, 3, 9])
def test_same_padded_even_kernels_at_other_lengths(L):
    _, reference, params, inputs = FAMILIES["conv1d_same_even_kernels"]()
    rng = np.random.default_rng(L)
    inputs = {"x": normal(rng, 2, 2, L), "target": normal(rng, 2, 2, L)}
    module = module_of("conv1d_same_even_kernels")
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_same_padded_circular_conv_of_length_one_is_refused_as_by_torch():
    """The circular pad (1, 2) wraps around a length-1 signal more than once: torch
    raises, and so does the generated module, naming the size it needs."""
    _, reference, params, inputs = FAMILIES["conv1d_same_even_kernels"]()
    inputs = {"x": np.ones((2, 2, 1)), "target": np.ones((2, 2, 1))}
    with pytest.raises(RuntimeError):
        reference(
            {k: torch.tensor(v) for k, v in params.items()},
            {k: torch.tensor(v) for k, v in inputs.items()},
        )
    with pytest.raises(ValueError, match=r"L=1: .*wrap.* needs L >= 2"):
        module_of("conv1d_same_even_kernels").value_and_grad(params, inputs)


def test_lp_pool_of_an_all_zero_window_has_gradient_zero_as_torch_documents():
    """lp_pool's docstring: 'If the sum of all inputs to the power of p is zero, the
    gradient is set to zero as well'. Channels 0 and 2 of the conv are exactly zero
    here; sg.norm's gradient at a zero vector is 0, so the port agrees (no nan, no
    NumPy warning: check turns warnings into errors)."""
    _, reference, params, inputs = FAMILIES["lp_pool1d_two_norms"]()
    params = {"W": np.zeros((3, 2, 1)), "b": np.array([0.0, 0.3, 0.0])}
    check(module_of("lp_pool1d_two_norms"), reference, params, inputs)


def test_sqrt_of_relu_has_torchs_zero_gradient_where_relu_is_zero():
    m = sg.Model("lp_pool_torch_formula")
    P = m.param("P", (2, 3))
    out = sg.sum(P**2, axis=1) / 3  # avg_pool1d(x.pow(2), 3)
    m.loss(sg.sum((sg.sign(out) * sg.relu(sg.abs(out)) * 3) ** 0.5))
    module = compile_module(m)
    p = np.array([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    tp = torch.tensor(p, requires_grad=True)
    F.lp_pool1d(tp[None], 2, 3).sum().backward()
    with np.errstate(all="ignore"):
        _, grads = module.value_and_grad({"P": p}, {})
    assert rel(grads["P"], tp.grad.numpy()) <= 1e-12, grads["P"]
    m = sg.Model("sqrt_of_relu")  # the minimal case
    Q = m.param("Q", (3,))
    m.loss(sg.sum(sg.sqrt(sg.relu(Q))))
    q = np.array([0.0, -1.0, 2.0])
    with np.errstate(all="ignore"):
        _, grads = compile_module(m).value_and_grad({"Q": q}, {})
    assert rel(grads["Q"], [0.0, 0.0, 0.5 / math.sqrt(2.0)]) <= 1e-12, grads["Q"]


def test_max_pool_ties_split_the_gradient_where_torchs_max_pool_picks_one():
    """A documented convention, not a bug: sg.max over a window shares a tie's
    gradient equally (torch's amax); torch's max_pool1d sends it all to the first
    maximum. The totals agree; the split is amax's exactly."""
    m = sg.Model("max_pool_ties")
    P = m.param("P", (1, 1, 4))
    m.loss(sg.sum(sg.sliding_window_view(P, 2, axis=2).max(axis=-1)))
    _, grads = compile_module(m).value_and_grad({"P": np.ones((1, 1, 4))}, {})
    pooled = torch.ones((1, 1, 4), dtype=torch.float64, requires_grad=True)
    F.max_pool1d(pooled, 2, 1).sum().backward()
    amax = torch.ones((1, 1, 4), dtype=torch.float64, requires_grad=True)
    amax.unfold(2, 2, 1).amax(-1).sum().backward()
    assert np.array_equal(grads["P"], amax.grad.numpy())  # [0.5, 1, 1, 0.5]
    assert not np.array_equal(grads["P"], pooled.grad.numpy())
    assert grads["P"].sum() == pooled.grad.sum().item() == 3.0


def test_embedding_bag_padding_and_empty_bags_get_no_gradient():
    """torch gives the padding row and the per-sample weights of padding entries zero
    gradients, and an empty or all-padding bag a zero row: so does the port."""
    name = "embedding_bag_sum_per_sample_weights"
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    outputs, _ = module.forward(params, inputs)
    _, grads = module.value_and_grad(params, inputs)
    assert np.all(outputs["bags"][[1, 3]] == 0.0)
    assert np.all(grads["E"][0] == 0.0) and np.any(grads["E"][1:] != 0.0)
    assert np.all(grads["psw"][inputs["idx"] == 0] == 0.0)
    assert np.all(grads["psw"][inputs["idx"] != 0] != 0.0)
    check(module, reference, params, inputs)


def test_embedding_bag_with_a_single_bag():
    name = "embedding_bag_sum_per_sample_weights"
    _, reference, params, inputs = FAMILIES[name]()
    inputs = {**inputs, "bag_of": np.zeros(9, np.int64), "y": inputs["y"][:1]}
    check(module_of(name), reference, params, inputs)


def test_multilabel_margin_with_repeated_labels_and_empty_lists():
    """torch counts a label listed twice twice (its hinge terms sum twice), a list
    that starts with -1 gives 0, and a list naming every class has no non-target."""
    name = "multilabel_margin_loss"
    _, reference, params, inputs = FAMILIES[name]()
    torch_target = np.array(
        [[3, 3, -1, 1, 2], [0, 1, 2, 3, 4], [2, 2, 2, -1, 0], [-1, 4, 0, 0, 0]]
    )
    valid = np.cumprod(torch_target != -1, axis=1).astype(bool)
    is_target = np.zeros((4, 5), dtype=bool)
    for r in range(4):
        is_target[r, torch_target[r][valid[r]]] = True
    inputs = {
        **inputs,
        "labels": np.where(valid, torch_target, 0),
        "valid": valid,
        "is_target": is_target,
    }
    module = module_of(name)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_triplet_swap_takes_both_branches_and_ties():
    """The data has anchors where d(p, n) < d(a, n) (the swap) and where not; with
    the positive equal to the anchor the two distances tie and torch.min splits the
    gradient as sg.minimum does (d_pos is then round-off around 0, so only the loss
    and gradients are compared)."""
    name = "triplet_cosine_distance_swap"
    _, reference, params, inputs = FAMILIES[name]()
    module = module_of(name)
    tp = {k: torch.tensor(v) for k, v in params.items()}
    ti = {k: torch.tensor(v) for k, v in inputs.items()}
    with torch.no_grad():
        ea, ep, en = (torch.tanh(ti[k] @ tp["W"].T + tp["b"]) for k in "apn")
        swapped = F.cosine_similarity(ep, en) > F.cosine_similarity(ea, en)
    assert 0 < int(swapped.sum()) < len(swapped)
    inputs = {**inputs, "p": inputs["a"].copy()}
    expected_loss, _, expected = torch_twin(reference, params, inputs)
    loss, grads = module.value_and_grad(params, inputs)
    assert rel(loss, expected_loss) <= 1e-9
    for k in params:
        assert rel(grads[k], expected[k]) <= 1e-9, k


# ======================================================= a porter's mistakes


def test_torch_pad_modes_negative_widths_and_inf_get_clear_errors():
    m = sg.Model("pad_errors")
    x = m.input("x", ("B", 2, 3, 4))
    for torch_mode, numpy_mode in [("replicate", "edge"), ("circular", "wrap")]:
        with pytest.raises(
            ValueError, match=f"'{torch_mode}' is torch's.*'{numpy_mode}'"
        ):
            sg.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode=torch_mode)
    with pytest.raises(sg.ShapeError, match=r"negative pad width \(-1, 2\) on axis 3"):
        sg.pad(x, ((0, 0), (0, 0), (1, 0), (-1, 2)))  # nn.ZeroPad2d((-1, 2, 1, 0))
    with pytest.raises(sg.ModelError, match="-1e30"):
        sg.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-math.inf)
    with pytest.raises(
        sg.ShapeError, match="'reflect' pads axis 3 of size 4 by at most 3"
    ):
        sg.pad(x, ((0, 0), (0, 0), (0, 0), (4, 0)), mode="reflect")


def test_pooling_and_conv_shape_mistakes_name_the_operands():
    m = sg.Model("conv_errors")
    x = m.input("x", ("B", 3, 4))
    K = m.param("K", (5, 2, 3))
    with pytest.raises(sg.ShapeError, match="'bctk,ock->bot': c is 3 in one .* 2 in"):
        sg.einsum("bctk,ock->bot", sg.sliding_window_view(x, 3, axis=2), K)
    with pytest.raises(sg.ShapeError, match="window size 5 for axis 2 of x"):
        sg.sliding_window_view(x, 5, axis=2)
    with pytest.raises(TypeError, match="axis=, not torch's dim="):
        sg.sliding_window_view(x, 3, dim=2)
    with pytest.raises(TypeError, match="axis=, not torch's dim="):
        sg.repeat(x, 2, dim=2)  # nn.Upsample(scale_factor=2, mode='nearest')
    ids = m.input("ids", (6,), dtype="int64")
    with pytest.raises(sg.ShapeError, match="segment ids ids must be 1-D with one id"):
        sg.segment_sum(x[0], ids, 4)  # nn.Fold's positions of the wrong length
    labels = m.input("labels", ("B", 3, 1))  # torch's target given as floats
    with pytest.raises(sg.ShapeError, match="index labels must be an int64 input"):
        sg.take_along_axis(x, labels, axis=2)


def test_channels_last_data_is_refused_at_the_call_naming_the_array():
    """A porter passing (B, L, C) data to a (B, C, L) model."""
    module = module_of("max_pool1d_dilated_ceil")
    _, _, params, inputs = FAMILIES["max_pool1d_dilated_ceil"]()
    wrong = {**inputs, "x": np.swapaxes(inputs["x"], 1, 2).copy()}
    with pytest.raises(ValueError, match=r"inputs\['x'\].*\(B, 2, 10\).*\(3, 10, 2\)"):
        module.value_and_grad(params, wrong)


def test_torchs_flat_pad_tuple_gets_an_error_naming_sg_pad():
    m = sg.Model("flat_pad")
    x = m.input("x", ("B", 2, 3, 4))
    with pytest.raises((ValueError, sg.ShapeError)) as info:
        sg.pad(x, (1, 1, 2, 0))  # F.pad(x, (1, 1, 2, 0))
    assert "sg.pad" in str(info.value) and "pad_width" in str(info.value)


def test_a_torch_pair_pads_every_axis_as_numpy_does():
    """Not an error: sg.pad(x, (1, 2)) is NumPy's, every axis (B too) padded by (1, 2),
    where torch's F.pad(x, (1, 2)) pads the last one only: the shapes tell."""
    m = sg.Model("pair_pad")
    x = m.input("x", ("B", 2, 3))
    assert sg.pad(x, (1, 2)).shape[1:] == (5, 6)
    assert sg.pad(x, ((0, 0), (0, 0), (1, 2))).shape == ("B", 2, 6)


def test_torchs_pad_value_and_flip_dims_keywords_get_a_hint():
    m = sg.Model("torch_keywords")
    x = m.input("x", ("B", 2, 3))
    with pytest.raises(TypeError, match="constant_values"):
        sg.pad(x, ((0, 0), (0, 0), (1, 1)), value=0.5)
    with pytest.raises(TypeError, match="axis"):
        sg.flip(x, dims=(2,))


def test_torchs_two_axis_transpose_gets_a_swapaxes_hint():
    m = sg.Model("torch_transpose")
    x = m.input("x", ("B", 3, 4))
    with pytest.raises(sg.ShapeError, match="not a permutation") as info:
        x.transpose(1, 2)
    assert "swapaxes" in str(info.value)


def test_torchs_max_values_gets_a_hint():
    m = sg.Model("torch_max_values")
    x = m.input("x", ("B", 3, 4))
    for attribute in ("values", "indices"):
        with pytest.raises(AttributeError) as info:
            getattr(x.max(axis=1), attribute)
        assert "sg." in str(info.value), str(info.value)


def test_torch_functional_names_get_a_hint():
    for name in ("conv1d", "conv2d", "max_pool1d", "avg_pool1d", "interpolate"):
        with pytest.raises(AttributeError) as info:
            getattr(sg, name)
        assert "sliding_window_view" in str(info.value) or "repeat" in str(
            info.value
        ), name


def test_the_hints_recipes_are_torchs_functions():
    """The recipes the hints name (torch's F.pad flat tuple as NumPy pairs, conv and
    pooling by windows, nearest upsampling by sg.repeat, max(dim).indices by argsort),
    run and compared with torch's functions."""
    m = sg.Model("recipes")
    x, x2 = m.input("x", ("B", 2, 7)), m.input("x2", ("B", 2, 6, 5))
    W, K = m.param("W", (3, 2, 3)), m.param("K", (3, 2, 2, 2))
    with pytest.raises(sg.ShapeError) as info:
        sg.pad(x2, (1, 1, 2, 0))
    assert "sg.pad(x, ((0, 0), (0, 0), (2, 0), (1, 1)))" in str(info.value)
    outputs = {
        "pad": sg.pad(x2, ((0, 0), (0, 0), (2, 0), (1, 1))),
        "conv1d": sg.einsum("bctk,ock->bot", sg.sliding_window_view(x, 3, axis=2), W),
        "conv2d": sg.einsum(
            "bchwij,ocij->bohw", sg.sliding_window_view(x2, (2, 2), axis=(2, 3)), K
        ),
        "max_pool1d": sg.sliding_window_view(x, 3, axis=2)[:, :, ::2].max(axis=-1),
        "avg_pool1d": sg.sliding_window_view(x, 3, axis=2)[:, :, ::2].mean(axis=-1),
        "max_pool2d": sg.sliding_window_view(x2, (2, 2), axis=(2, 3))[
            :, :, ::2, ::2
        ].max(axis=(-2, -1)),
        "avg_pool2d": sg.sliding_window_view(x2, (2, 2), axis=(2, 3))[
            :, :, ::2, ::2
        ].mean(axis=(-2, -1)),
        "interpolate": sg.repeat(sg.repeat(x2, 2, axis=2), 2, axis=3),
    }
    for name, y in outputs.items():
        m.output(name, y)
    m.loss(sum(sg.sum(y) for y in outputs.values()))
    m.output("indices", sg.argsort(-x, axis=1)[:, 0])
    rng = np.random.default_rng(44)
    params = {"W": normal(rng, 3, 2, 3), "K": normal(rng, 3, 2, 2, 2)}
    data = {"x": normal(rng, 3, 2, 7), "x2": normal(rng, 3, 2, 6, 5)}
    data["x"][0, :, 4] = data["x"][0, 1, 4]  # a tie: the first wins, as np.argmax
    out, _ = compile_module(m).forward(params, data)
    t, t2 = torch.tensor(data["x"]), torch.tensor(data["x2"])
    W_, K_ = torch.tensor(params["W"]), torch.tensor(params["K"])
    expected = {
        "pad": F.pad(t2, (1, 1, 2, 0)),
        "conv1d": F.conv1d(t, W_),
        "conv2d": F.conv2d(t2, K_),
        "max_pool1d": F.max_pool1d(t, 3, 2),
        "avg_pool1d": F.avg_pool1d(t, 3, 2),
        "max_pool2d": F.max_pool2d(t2, 2),
        "avg_pool2d": F.avg_pool2d(t2, 2),
        "interpolate": F.interpolate(t2, scale_factor=2, mode="nearest"),
    }
    for name, ref in expected.items():
        assert np.allclose(out[name], ref.numpy(), rtol=1e-12, atol=1e-12), name
    assert np.array_equal(out["indices"], np.argmax(data["x"], axis=1))


def test_torchs_renamed_keywords_name_numpys_per_function():
    m = sg.Model("torch_keywords_each")
    x = m.input("x", ("B", 3, 4))
    for call, numpy_name in [
        (lambda: sg.roll(x, 1, dims=2), "axis"),
        (lambda: sg.tile(x, dims=(1, 2)), "reps"),  # torch.tile(x, dims)
        (lambda: sg.transpose(x, dims=(0, 2, 1)), "axes"),  # torch.permute(x, dims)
        (lambda: sg.full_like(x, value=0.5), "fill_value"),
    ]:
        with pytest.raises(TypeError, match=f"NumPy's {numpy_name}=, not torch's"):
            call()
    with pytest.raises(sg.ShapeError, match=r"not a permutation.*x\.swapaxes\(0, -1\)"):
        sg.transpose(x, (0, -1))
    with pytest.raises(sg.ShapeError, match="not a permutation$"):
        x.transpose(0, 1, 1)  # three axes: no torch reading
