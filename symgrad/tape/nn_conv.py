"""Convolutions and pooling: F.conv1d/2d, F.conv_transpose1d/2d, F.max_pool1d/2d,
F.avg_pool1d/2d, F.adaptive_avg_pool1d/2d and their Modules (nn.Conv1d,
nn.ConvTranspose1d, nn.MaxPool1d, ...), plus nearest-neighbour F.interpolate /
nn.Upsample, with torch's argument names, defaults, reprs, init and errors.

Every layer is a composition of ops: padding is `cat` with constant blocks, the
windows of a kernel are one strided slice per kernel offset, stacked (an unfold
without as_strided), a convolution is then a batched matmul with the weight (a
transposed one that of the input dilated by the stride with the flipped kernel), and a
pool a sum or a `gather` at the argmax. Convolutions and pools are recorded as torch
records them, one node each (ConvolutionBackward0, MaxPool2DWithIndicesBackward0,
AvgPool2DBackward0), whose rules are again such compositions, so that the tape
differentiates them to any order (create_graph).

Max pooling gives the gradient of each output to one element of its window, the first
maximum in row-major order (torch's scan), by gathering at `argmax` (NumPy's argmax
returns the first maximum, or the first NaN, as torch's scan picks).
"""

import math

import numpy as np

from . import autograd, nn_init
from .functions import cat, stack
from .nn import Module, Parameter
from .tensor import Tensor

FUNCTIONS = (
    "conv1d",
    "conv2d",
    "conv_transpose1d",
    "conv_transpose2d",
    "max_pool1d",
    "max_pool2d",
    "avg_pool1d",
    "avg_pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "interpolate",
)
MODULES = (
    "Conv1d",
    "Conv2d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "Upsample",
)


# ==== geometry ========================================================================


def _ntuple(value, n):
    """torch's _single/_pair: an int repeated n times, a sequence as a tuple."""
    if isinstance(value, list | tuple):
        return tuple(value)
    return (value,) * n


def _conv_arg(value, n, name):
    """A conv's stride/padding/dilation as n ints, refused as torch refuses."""
    values = _ntuple(value, n)
    if len(values) == 1 and n > 1:
        values *= n
    if len(values) != n:
        raise RuntimeError(
            f"expected {name} to be a single integer value or a list of {n} values "
            f"to match the convolution dimensions, but got {name}={list(values)}"
        )
    return values


def _batched(input, d, message):
    """input with a batch dim (an unbatched input gets one of size 1) and whether it
    was added; message(input) is the RuntimeError for any other rank."""
    if input.ndim not in (d + 1, d + 2):
        raise RuntimeError(message(input))
    unbatched = input.ndim == d + 1
    return (input.unsqueeze(0) if unbatched else input), unbatched


def _pad(x, pads, value):
    """x with (before, after) blocks of `value` around each of its last len(pads)
    dims (a negative count crops instead): cat with constants, so the gradient flows
    to x alone."""
    d = len(pads)
    for axis, (before, after) in enumerate(pads, start=x.ndim - d):
        if before < 0 or after < 0:
            cut = max(-before, 0)
            x = x.narrow(axis, cut, x.shape[axis] - cut - max(-after, 0))
            before, after = max(before, 0), max(after, 0)
        if before or after:
            shape = list(x.shape)
            blocks = []
            for size in (before, after):
                shape[axis] = size
                blocks.append(x.new_full(tuple(shape), value))
            x = cat([blocks[0], x, blocks[1]], axis)
    return x


def _dilate(x, stride):
    """x with stride - 1 zeros between neighbours along each of its last len(stride)
    dims (a transposed convolution's input): each element and its zeros side by
    side, flattened."""
    d = len(stride)
    for axis, s in enumerate(stride, start=x.ndim - d):
        n = x.shape[axis]
        if s > 1 and n:
            x = x.unsqueeze(axis + 1)
            zeros = x.new_zeros(*x.shape[: axis + 1], s - 1, *x.shape[axis + 2 :])
            x = cat([x, zeros], axis + 1).flatten(axis, axis + 1)
            x = x.narrow(axis, 0, (n - 1) * s + 1)
    return x


def _windows(x, kernel, stride, dilation, out):
    """x (N, C, *spatial), already padded, as (N, C, K, *out): for each of the
    K = prod(kernel) kernel offsets in row-major order, the strided slice of the
    elements it meets."""
    parts = []
    for offsets in np.ndindex(*kernel):  # row-major, as torch scans a window
        index = tuple(
            slice(o * dl, o * dl + s * (n - 1) + 1, s)
            for o, dl, s, n in zip(offsets, dilation, stride, out, strict=True)
        )
        parts.append(x[(slice(None), slice(None), *index)])
    return stack(parts, 2)


def _size(shape):
    return " x ".join(map(str, shape))


# ==== convolution =====================================================================


def _same_pads(kernel, dilation):
    """padding='same': the total d*(k-1), its odd element after (torch's choice)."""
    totals = [dl * (k - 1) for k, dl in zip(kernel, dilation, strict=True)]
    return [(t // 2, t - t // 2) for t in totals]


def _conv_pads(padding, kernel, stride, dilation):
    d = len(kernel)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise RuntimeError(f"Invalid padding string: {padding!r}")
        if padding == "valid":
            return [(0, 0)] * d
        if any(s != 1 for s in stride):
            raise RuntimeError(
                "padding='same' is not supported for strided convolutions"
            )
        return _same_pads(kernel, dilation)
    padding = _conv_arg(padding, d, "padding")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    return [(p, p) for p in padding]


def _check_weight(name, d, input, weight, bias, groups, transposed=False):
    """torch's checks of a convolution's weight, groups and bias against the
    input: a transposed convolution's weight is (in, out/groups, *kernel)."""
    if weight.ndim != d + 2:
        raise RuntimeError(
            f"Expected {d + 1}D (unbatched) or {d + 2}D (batched) weight to {name}, "
            f"but got weight of size: {list(weight.shape)}"
        )
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if weight.shape[0] % groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of size [{list(weight.shape)}] instead"
        )
    given = "transposed=1" if transposed else f"groups={groups}"
    channels = weight.shape[0] if transposed else weight.shape[1] * groups
    if input.shape[1] != channels:
        raise RuntimeError(
            f"Given {given}, weight of size {list(weight.shape)}, expected "
            f"input{list(input.shape)} to have {channels} channels, but got "
            f"{input.shape[1]} channels instead"
        )
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != out_channels):
        given = "Given transposed=1, weight" if transposed else "Given weight"
        raise RuntimeError(
            f"{given} of size {list(weight.shape)}, expected bias to be "
            f"1-dimensional with {out_channels} elements, but got bias of size "
            f"{list(bias.shape)} instead"
        )


def _geometry(d, stride, dilation):
    stride = _conv_arg(stride, d, "stride")
    dilation = _conv_arg(dilation, d, "dilation")
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(dl <= 0 for dl in dilation):
        raise RuntimeError("non-positive dilation is not supported")
    return stride, dilation


def _rank_message(name, d):
    return lambda x: (
        f"Expected {d + 1}D (unbatched) or {d + 2}D (batched) input to {name}, but "
        f"got input of size: {list(x.shape)}"
    )


def _columns(x, kernel, stride, pads, dilation, groups):
    """The windows of x (N, C, *spatial) padded by pads ((before, after) pairs,
    negative ones crop) as (N, G, C/G * K, P), K = prod(kernel), P = prod(out), and
    out."""
    x = _pad(x, pads, 0.0)
    out = [
        (n - dl * (k - 1) - 1) // s + 1
        for n, k, s, dl in zip(x.shape[2:], kernel, stride, dilation, strict=True)
    ]
    cols = _windows(x, kernel, stride, dilation, out)
    return cols.reshape(x.shape[0], groups, -1, math.prod(out)), out


def _correlate(x, weight, stride, pads, dilation, groups):
    """The cross-correlation of x with weight (O, C/G, *kernel): the windows
    multiplied by the weight as (G, O/G, C/G * K)."""
    cols, out = _columns(x, weight.shape[2:], stride, pads, dilation, groups)
    o = weight.shape[0]
    y = weight.reshape(groups, o // groups, -1) @ cols  # (N, G, O/G, P)
    return y.reshape(x.shape[0], o, *out)


def _correlate_weight(x, g, kernel, stride, pads, dilation, groups):
    """The gradient of _correlate(x, weight, ...) for its weight, given its output's
    g: g (N, G, O/G, P) times the windows of x, summed over the batch."""
    cols, _ = _columns(x, kernel, stride, pads, dilation, groups)
    n, o = g.shape[:2]
    gw = (g.reshape(n, groups, o // groups, -1) @ cols.transpose(-1, -2)).sum(0)
    return gw.reshape(o, x.shape[1] // groups, *kernel)


def _correlate_transposed(x, weight, stride, crops, dilation, groups):
    """The adjoint of _correlate with `weight` (in, out/groups, *kernel) and pads
    `crops` (the output is cropped by them): x dilated by the stride and padded by
    dilation * (k - 1) - crop, correlated with the flipped kernel, its in and out
    swapped within each group."""
    d = len(stride)
    kernel = tuple(weight.shape[2:])
    pads = [
        (dl * (k - 1) - before, dl * (k - 1) - after)
        for k, dl, (before, after) in zip(kernel, dilation, crops, strict=True)
    ]
    c, per_group = weight.shape[:2]
    flipped = weight.reshape(groups, c // groups, per_group, *kernel).transpose(1, 2)
    flipped = flipped.reshape(groups * per_group, c // groups, *kernel)
    flipped = flipped.flip(*range(2, d + 2))
    return _correlate(_dilate(x, stride), flipped, (1,) * d, pads, dilation, groups)


def _convolution(input, weight, bias, stride, pads, dilation, groups, transposed):
    """torch's convolution on a batched input (pads are (before, after) per dim; a
    transposed one's output is cropped by them), recorded as torch records it: one
    ConvolutionBackward0 node over (input, weight, bias), (None, 0) for no bias.

    Its rule is torch's too, convolutions again: d input is the other convolution
    (transposed for a plain one, plain for a transposed one) of the output's
    gradient, d weight the windows of the plain one's input times the gradient of its
    output, d bias a sum. They are recorded ops (this function, windows, matmul),
    so under create_graph the gradients are differentiable again, to any order; in
    an ordinary backward pass the same code runs untracked on the arrays."""
    correlate = _correlate_transposed if transposed else _correlate
    with autograd.no_grad():
        y = correlate(input, weight, stride, pads, dilation, groups)
        if bias is not None:
            y = y + bias.reshape(-1, *([1] * len(stride)))
    kernel = tuple(weight.shape[2:])
    wanted = [t is not None and t.requires_grad for t in (input, weight, bias)]

    def grads(g, x, w):
        if transposed:  # the adjoint of the plain convolution of y's shape to x's
            gx = _convolution(g, w, None, stride, pads, dilation, groups, False)
            gw = _correlate_weight(g, x, kernel, stride, pads, dilation, groups)
        else:  # the crops undo the pads, and the tail the strides never reached
            tails = [
                (n + a + b - dl * (k - 1) - 1) % s
                for n, (a, b), k, s, dl in zip(
                    x.shape[2:], pads, kernel, stride, dilation, strict=True
                )
            ]
            crops = [(a, b - t) for (a, b), t in zip(pads, tails, strict=True)]
            gx = _convolution(g, w, None, stride, crops, dilation, groups, True)
            gw = _correlate_weight(x, g, kernel, stride, pads, dilation, groups)
        gb = g.sum((0, *range(2, g.ndim)))
        return [
            v if want else None for v, want in zip((gx, gw, gb), wanted, strict=True)
        ]

    def rule(xp, g, x, w):
        if xp.records:
            return grads(g, x, w)
        with autograd.no_grad():
            found = grads(*map(Tensor._wrap, (g, x, w)))
        return [v if v is None else v._data for v in found]

    no_bias = Tensor._wrap(np.zeros(0, y._data.dtype))
    inputs = (input, weight, no_bias if bias is None else bias)
    return Tensor._result(
        y._data, inputs, rule, "ConvolutionBackward0", saves=(input, weight)
    )


def _conv(name, d, input, weight, bias, stride, padding, dilation, groups):
    """torch's conv{d}d: its checks, then _convolution."""
    input, unbatched = _batched(input, d, _rank_message(name, d))
    _check_weight(name, d, input, weight, bias, groups)
    kernel = tuple(weight.shape[2:])
    stride, dilation = _geometry(d, stride, dilation)
    pads = _conv_pads(padding, kernel, stride, dilation)
    spatial = input.shape[2:]
    padded = [n + a + b for n, (a, b) in zip(spatial, pads, strict=True)]
    reach = [dl * (k - 1) + 1 for k, dl in zip(kernel, dilation, strict=True)]
    if any(p < r for p, r in zip(padded, reach, strict=True)):
        raise RuntimeError(
            f"Calculated padded input size per channel: ({_size(padded)}). Kernel "
            f"size: ({_size(reach)}). Kernel size can't be greater than actual input "
            "size"
        )
    y = _convolution(input, weight, bias, stride, pads, dilation, groups, False)
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """input (N, C, L) or (C, L), weight (O, C/groups, k), bias (O,): (N, O, L')."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """input (N, C, H, W) or (C, H, W), weight (O, C/groups, kh, kw), bias (O,):
    (N, O, H', W')."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def _output_padding_error(output_padding, stride, dilation):
    """torch's message, which names a 1-d convolution's sizes as the width of a 2-d
    one (whose height has output_padding 0, stride and dilation 1)."""
    pad = 2 - len(stride)
    values = (
        ("output_padding", (0,) * pad + tuple(output_padding)),
        ("stride", (1,) * pad + tuple(stride)),
        ("dilation", (1,) * pad + tuple(dilation)),
    )
    parts = [
        f"{key}_{dim}: {v}"
        for key, vs in values
        for dim, v in zip(("height", "width"), vs, strict=True)
    ]
    return RuntimeError(
        "output padding must be smaller than either stride or dilation, but got "
        + " ".join(parts)
    )


def _conv_transpose(
    name, d, input, weight, bias, stride, padding, output_padding, groups, dilation
):
    """torch's conv_transpose{d}d: its checks, then _convolution, whose output of
    size (n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1
    is cropped by padding before and padding - output_padding after."""
    input, unbatched = _batched(input, d, _rank_message(name, d))
    if isinstance(padding, str):
        raise TypeError(f"{name}(): argument 'padding' must be tuple of ints, not str")
    _check_weight(name, d, input, weight, bias, groups, transposed=True)
    stride, dilation = _geometry(d, stride, dilation)
    padding = _conv_arg(padding, d, "padding")
    output_padding = _conv_arg(output_padding, d, "output_padding")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(p < 0 for p in output_padding):
        raise RuntimeError("negative output_padding is not supported")
    if any(
        p >= s and p >= dl
        for p, s, dl in zip(output_padding, stride, dilation, strict=True)
    ):
        raise _output_padding_error(output_padding, stride, dilation)
    crops = [(p, p - op) for p, op in zip(padding, output_padding, strict=True)]
    out = [
        (n - 1) * s + dl * (k - 1) + 1 - a - b
        for n, k, s, dl, (a, b) in zip(
            input.shape[2:], weight.shape[2:], stride, dilation, crops, strict=True
        )
    ]
    if any(size < 1 for size in out):
        raise RuntimeError(
            f"Given input size per channel: ({_size(input.shape[2:])}). Calculated "
            f"output size per channel: ({_size(out)}). Output size is too small"
        )
    y = _convolution(input, weight, bias, stride, crops, dilation, groups, True)
    return y.squeeze(0) if unbatched else y


def conv_transpose1d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
):
    """input (N, C, L) or (C, L), weight (C, O/groups, k), bias (O,): (N, O, L'),
    the adjoint of conv1d (its gradient with respect to its input)."""
    return _conv_transpose(
        "conv_transpose1d",
        1,
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
    )


def conv_transpose2d(
    input,
    weight,
    bias=None,
    stride=1,
    padding=0,
    output_padding=0,
    groups=1,
    dilation=1,
):
    """input (N, C, H, W) or (C, H, W), weight (C, O/groups, kh, kw), bias (O,):
    (N, O, H', W'), the adjoint of conv2d."""
    return _conv_transpose(
        "conv_transpose2d",
        2,
        input,
        weight,
        bias,
        stride,
        padding,
        output_padding,
        groups,
        dilation,
    )


# ==== pooling =========================================================================


def _pool_geometry(input, kernel, stride, padding, dilation, ceil_mode):
    """(out sizes, (before, after) pads): after reaches the last window, which
    ceil_mode may start in the padding; a window starting past it is dropped."""
    if any(s == 0 for s in stride):
        raise RuntimeError("stride should not be zero")
    if any(dl <= 0 for dl in dilation):
        raise RuntimeError("dilation should be greater than zero")
    for k, p, dl in zip(kernel, padding, dilation, strict=True):
        if p > (dl * (k - 1) + 1) // 2:
            raise RuntimeError(
                "pad should be at most half of effective kernel size, but got "
                f"pad={p}, kernel_size={k} and dilation={dl}"
            )
        if p > k // 2:
            raise RuntimeError(
                "pad should be smaller than or equal to half of kernel size, but got "
                f"pad={p}, kernel_size={k}"
            )
    out, pads = [], []
    for n, k, s, p, dl in zip(
        input.shape[2:], kernel, stride, padding, dilation, strict=True
    ):
        span = n + 2 * p - dl * (k - 1) - 1
        size = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (size - 1) * s >= n + p:
            size -= 1
        out.append(size)
        pads.append((p, max(p, (size - 1) * s + dl * (k - 1) + 1 - n - p)))
    if any(size < 1 for size in out):
        channels = "x".join(map(str, input.shape[1:2]))
        raise RuntimeError(
            f"Given input size: ({channels}x{'x'.join(map(str, input.shape[2:]))}). "
            f"Calculated output size: ({channels}x{'x'.join(map(str, out))}). Output "
            "size is too small"
        )
    return out, pads


def _pool_args(d, kernel_size, stride, padding, dilation=1):
    kernel = _ntuple(kernel_size, d)
    stride = kernel if stride is None or stride == [] else _ntuple(stride, d)
    return kernel, stride, _ntuple(padding, d), _ntuple(dilation, d)


def _max_pool_rank(name, d):
    if d == 1:
        return lambda x: (
            f"{name}: Expected 2D or 3D (batch mode) tensor with optional 0 dim batch "
            f"size for input, but got:{list(x.shape)}"
        )
    return lambda x: "non-empty 3D or 4D (batch mode) tensor expected for input"


def _pool_node(name, d, pool, input):
    """pool(input), a composition of recorded ops returning (output, *others),
    recorded as torch records a pool: one node named `name` over the input (a 1-d
    pool being torch's 2-d one on input.unsqueeze(-2), squeezed after).

    The composition runs on a private leaf sharing the input's values, and the
    node's rule is the backward pass of that private graph, recorded under
    create_graph. That is exact to any order: a pool's gradient is linear in the
    output's gradient and, given which elements are the maxima, constant in the
    input, so nothing is lost by its graph not reaching the input."""
    if d == 1:

        def pool2d(x):
            y, *others = pool(x.squeeze(-2))
            return (y.unsqueeze(-2), *others)

        y, *others = _pool_node(name, 2, pool2d, input.unsqueeze(-2))
        return (y.squeeze(-2), *others)
    if not (autograd.recording() and input.requires_grad):
        return pool(input)
    leaf = input.detach().requires_grad_()
    y, *others = pool(leaf)

    def rule(xp, g, x):
        return autograd.run_backward([y], [g], True, [leaf], xp.records)

    return (Tensor._result(y._data, [input], rule, name), *others)


def _max_pool(name, d, input, kernel_size, stride, padding, dilation, ceil_mode, ret):
    rank = _max_pool_rank(name, d)
    kernel, stride, padding, dilation = _pool_args(
        d, kernel_size, stride, padding, dilation
    )
    checked = _batched(input.detach(), d, rank)[0]
    out, pads = _pool_geometry(checked, kernel, stride, padding, dilation, ceil_mode)

    def pool(x):
        x, unbatched = _batched(x, d, rank)
        cols = _windows(_pad(x, pads, -math.inf), kernel, stride, dilation, out)
        first = cols.argmax(2, keepdim=True)  # the first maximum (or NaN) of each
        y = cols.gather(2, first).squeeze(2)
        return (y.squeeze(0) if unbatched else y), first

    y, first = _pool_node("MaxPool2DWithIndicesBackward0", d, pool, input)
    if not ret:
        return y
    # return_indices: each maximum's flat position in its channel of the input
    offsets = np.unravel_index(first.numpy()[:, :, 0], kernel)
    grid = np.meshgrid(*(np.arange(n) for n in out), indexing="ij")
    at = [
        g * s - p + o * dl
        for g, s, p, o, dl in zip(grid, stride, padding, offsets, dilation, strict=True)
    ]
    indices = np.ravel_multi_index(at, checked.shape[2:]).astype(np.int64)
    return y, Tensor._wrap(indices.reshape(y.shape))


def max_pool1d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
):
    """input (N, C, L) or (C, L): the maximum of each window."""
    return _max_pool(
        "max_pool1d",
        1,
        input,
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        return_indices,
    )


def max_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
):
    """input (N, C, H, W) or (C, H, W): the maximum of each window."""
    return _max_pool(
        "max_pool2d",
        2,
        input,
        kernel_size,
        stride,
        padding,
        dilation,
        ceil_mode,
        return_indices,
    )


def _avg_divisor(input, kernel, stride, padding, out, count_include_pad):
    """Each window's divisor, as torch counts it: the window clipped to the padded
    input (count_include_pad) or to the input, a product over the dims."""
    divisor = np.ones(())
    for n, k, s, p, size in zip(
        input.shape[2:], kernel, stride, padding, out, strict=True
    ):
        start = np.arange(size) * s - p
        end = np.minimum(start + k, n + p)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        divisor = np.multiply.outer(divisor, end - start)
    return divisor


def _avg_pool(name, d, input, kernel_size, stride, padding, ceil_mode, include, over):
    def rank(x):
        return (
            f"Expected {d + 1} to {d + 2} dimensions, but got {x.ndim}-dimensional "
            f"tensor for argument #1 'self' (while checking arguments for {name})"
        )

    checked = _batched(input.detach(), d, rank)[0]
    kernel, stride, padding, dilation = _pool_args(d, kernel_size, stride, padding)
    out, pads = _pool_geometry(checked, kernel, stride, padding, dilation, ceil_mode)
    if over is not None:
        if over == 0:
            raise RuntimeError("divisor must be not zero")
        divisor = float(over)
    else:
        divisor = _avg_divisor(checked, kernel, stride, padding, out, include)
        divisor = Tensor._wrap(divisor.astype(checked.numpy().dtype))

    def pool(x):
        x, unbatched = _batched(x, d, rank)
        cols = _windows(_pad(x, pads, 0.0), kernel, stride, dilation, out)
        y = cols.sum(2) / divisor
        return ((y.squeeze(0) if unbatched else y),)

    return _pool_node("AvgPool2DBackward0", d, pool, input)[0]


def avg_pool1d(
    input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
):
    """input (N, C, L) or (C, L): the mean of each window."""
    return _avg_pool(
        "avg_pool1d",
        1,
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        None,
    )


def avg_pool2d(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
    """input (N, C, H, W) or (C, H, W): the mean of each window (or its sum over
    divisor_override)."""
    return _avg_pool(
        "avg_pool2d",
        2,
        input,
        kernel_size,
        stride,
        padding,
        ceil_mode,
        count_include_pad,
        divisor_override,
    )


def _adaptive_avg_pool(name, d, input, output_size, rank):
    """Output cell i of a dim of size n averages [floor(i n / o), ceil((i + 1) n / o)):
    one dim at a time (a mean over a box is a mean of means), by a reshape where o
    divides n, else by a slice per cell."""
    input, unbatched = _batched(input, d, rank)
    sizes = _ntuple(output_size, d)
    if len(sizes) != d:
        raise RuntimeError(f"{name}: output_size must be {d}")
    x = input
    for axis, (n, o) in enumerate(zip(input.shape[2:], sizes, strict=True), start=2):
        o = n if o is None else o
        if o == n:
            continue
        if o > 0 and n % o == 0:
            shape = list(x.shape)
            x = x.reshape(*shape[:axis], o, n // o, *shape[axis + 1 :]).mean(axis + 1)
            continue
        cells = [
            x.narrow(axis, i * n // o, -(-(i + 1) * n // o) - i * n // o).mean(
                axis, keepdim=True
            )
            for i in range(o)
        ]
        x = cat(cells, axis) if cells else x.narrow(axis, 0, 0)
    return x.squeeze(0) if unbatched else x


def adaptive_avg_pool1d(input, output_size):
    """input (N, C, L) or (C, L) to (N, C, output_size): means of near-equal cells."""

    def rank(x):
        return (
            f"Expected 2 to 3 dimensions, but got {x.ndim}-dimensional tensor for "
            "argument #1 'self' (while checking arguments for adaptive_avg_pool1d)"
        )

    return _adaptive_avg_pool("adaptive_avg_pool1d", 1, input, output_size, rank)


def adaptive_avg_pool2d(input, output_size):
    """input (N, C, H, W) or (C, H, W) to (N, C, *output_size) (None keeps a dim):
    means of near-equal cells."""

    def rank(x):
        return (
            f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(x.shape)}"
        )

    return _adaptive_avg_pool("adaptive_avg_pool2d", 2, input, output_size, rank)


def interpolate(
    input,
    size=None,
    scale_factor=None,
    mode="nearest",
    align_corners=None,
    recompute_scale_factor=None,
    antialias=False,
):
    """Nearest-neighbour resizing of the dims after (N, C): output position i reads
    input position floor(i * scale), scale = 1 / scale_factor if given, else
    in / out (torch's 'nearest'); an index_select per dim, so it differentiates."""
    if mode != "nearest":
        raise NotImplementedError(
            f"interpolate: mode={mode!r} is not on the tape (only 'nearest')"
        )
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined")
    d = input.ndim - 2
    sizes = _ntuple(size, d) if size is not None else None
    factors = _ntuple(scale_factor, d) if scale_factor is not None else None
    out = input
    for k in range(d):
        n = input.shape[2 + k]
        m = sizes[k] if sizes else math.floor(n * factors[k])
        scale = n / m if sizes or recompute_scale_factor else 1 / factors[k]
        index = np.minimum(np.floor(np.arange(m) * scale).astype(np.int64), n - 1)
        out = out.index_select(2 + k, Tensor._wrap(index))
    return out


# ==== modules =========================================================================

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """Conv1d/Conv2d: weight (out, in/groups, *kernel_size), bias (out,), drawn as
    torch draws them: kaiming_uniform_(a=sqrt(5)) (U(+-1/sqrt(fan_in))) then the
    bias from U(+-1/sqrt(fan_in)), fan_in = weight.shape[1] * prod(kernel_size).
    The transposed ones (ConvTranspose1d/2d) hold weight (in, out/groups, ...)."""

    _d = 0
    transposed = False

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
        output_padding=0,
    ):
        super().__init__()
        d = self._d
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        stride, dilation = _ntuple(stride, d), _ntuple(dilation, d)
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(
                    f"Invalid padding string {padding!r}, should be one of "
                    "{'valid', 'same'}"
                )
            if padding == "same" and any(s != 1 for s in stride):
                raise ValueError(
                    "padding='same' is not supported for strided convolutions"
                )
        else:
            padding = _ntuple(padding, d)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                "padding_mode must be one of {'zeros', 'replicate', 'reflect', "
                f"'circular'}}, but got padding_mode={padding_mode!r}"
            )
        if padding_mode != "zeros" and self.transposed:
            raise ValueError(
                f'Only "zeros" padding mode is supported for {type(self).__name__}'
            )
        if padding_mode != "zeros":
            raise NotImplementedError(
                f"padding_mode={padding_mode!r} is not in symgrad.tape (only 'zeros')"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _ntuple(kernel_size, d)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.output_padding = _ntuple(output_padding, d)
        self.groups, self.padding_mode = groups, padding_mode
        shape = (out_channels, in_channels // groups)
        if self.transposed:
            shape = (in_channels, out_channels // groups)
        shape = (*shape, *self.kernel_size)
        self.weight = Parameter(np.zeros(shape).astype(dtype))
        self.bias = Parameter(np.zeros(out_channels).astype(dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nn_init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = nn_init._fans(self.weight)[0]
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn_init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        conv = conv1d if self._d == 1 else conv2d
        args = (self.stride, self.padding, self.dilation, self.groups)
        return conv(input, self.weight, self.bias, *args)

    def extra_repr(self):
        d = self._d
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
            f", stride={self.stride}"
        )
        if self.padding != (0,) * d:
            s += f", padding={self.padding}"
        if self.dilation != (1,) * d:
            s += f", dilation={self.dilation}"
        if self.output_padding != (0,) * d:
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class Conv1d(_ConvNd):
    """Cross-correlation over the last dim of (N, C, L) or (C, L) (F.conv1d)."""

    _d = 1


class Conv2d(_ConvNd):
    """Cross-correlation over the last two dims of (N, C, H, W) or (C, H, W)."""

    _d = 2


class _ConvTransposeNd(_ConvNd):
    """ConvTranspose1d/2d: torch's argument order (output_padding after padding,
    dilation last); forward's output_size picks the output_padding giving it."""

    transposed = True

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        output_padding=0,
        groups=1,
        bias=True,
        dilation=1,
        padding_mode="zeros",
        device=None,
        dtype=None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            device,
            dtype,
            output_padding,
        )

    def _output_padding(self, input, output_size):
        """The output_padding giving output_size (its last d sizes), as torch
        finds it."""
        if output_size is None:
            return self.output_padding
        d = self._d
        output_size = list(output_size)[-d:]
        if len(output_size) != d:
            raise ValueError(
                f"ConvTranspose{d}D: for {input.ndim}D input, output_size must have "
                f"{d} or {d + 2} elements (got {len(output_size)})"
            )
        smallest = [
            (n - 1) * s - 2 * p + dl * (k - 1) + 1
            for n, s, p, dl, k in zip(
                input.shape[-d:],
                self.stride,
                self.padding,
                self.dilation,
                self.kernel_size,
                strict=True,
            )
        ]
        largest = [m + s - 1 for m, s in zip(smallest, self.stride, strict=True)]
        if any(
            not m <= size <= top
            for m, size, top in zip(smallest, output_size, largest, strict=True)
        ):
            raise ValueError(
                f"requested an output size of {output_size}, but valid sizes range "
                f"from {smallest} to {largest} (for an input of "
                f"torch.Size({list(input.shape[-d:])}))"
            )
        return tuple(size - m for size, m in zip(output_size, smallest, strict=True))

    def forward(self, input, output_size=None):
        conv = conv_transpose1d if self._d == 1 else conv_transpose2d
        output_padding = self._output_padding(input, output_size)
        args = (self.stride, self.padding, output_padding, self.groups, self.dilation)
        return conv(input, self.weight, self.bias, *args)


class ConvTranspose1d(_ConvTransposeNd):
    """The adjoint of Conv1d over the last dim of (N, C, L) or (C, L)
    (F.conv_transpose1d)."""

    _d = 1


class ConvTranspose2d(_ConvTransposeNd):
    """The adjoint of Conv2d over the last two dims of (N, C, H, W) or (C, H, W)
    (F.conv_transpose2d)."""

    _d = 2


class _MaxPoolNd(Module):
    _pool = None

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        dilation=1,
        return_indices=False,
        ceil_mode=False,
    ):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input):
        return type(self)._pool(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    def extra_repr(self):
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, "
            f"ceil_mode={self.ceil_mode}"
        )


class MaxPool1d(_MaxPoolNd):
    """The maximum of each window of (N, C, L) or (C, L) (F.max_pool1d)."""

    _pool = max_pool1d


class MaxPool2d(_MaxPoolNd):
    """The maximum of each window of (N, C, H, W) or (C, H, W) (F.max_pool2d)."""

    _pool = max_pool2d


class AvgPool1d(Module):
    """The mean of each window of (N, C, L) or (C, L); torch keeps its sizes as
    1-tuples."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
    ):
        super().__init__()
        self.kernel_size = _ntuple(kernel_size, 1)
        self.stride = _ntuple(stride if stride is not None else kernel_size, 1)
        self.padding = _ntuple(padding, 1)
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, input):
        return avg_pool1d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
        )

    def extra_repr(self):
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}"
        )


class AvgPool2d(AvgPool1d):
    """The mean of each window of (N, C, H, W) or (C, H, W), or its sum over
    divisor_override."""

    def __init__(
        self,
        kernel_size,
        stride=None,
        padding=0,
        ceil_mode=False,
        count_include_pad=True,
        divisor_override=None,
    ):
        Module.__init__(self)
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )


class AdaptiveAvgPool1d(Module):
    """Means of output_size near-equal cells of the last dim."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return adaptive_avg_pool1d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2d(AdaptiveAvgPool1d):
    """Means of near-equal cells of the last two dims (None keeps a dim's size)."""

    def forward(self, input):
        return adaptive_avg_pool2d(input, self.output_size)


class Upsample(Module):
    """F.interpolate as a module (mode 'nearest' only)."""

    def __init__(
        self,
        size=None,
        scale_factor=None,
        mode="nearest",
        align_corners=None,
        recompute_scale_factor=None,
    ):
        super().__init__()
        self.size, self.mode, self.align_corners = size, mode, align_corners
        self.scale_factor = (
            tuple(float(f) for f in scale_factor)
            if isinstance(scale_factor, tuple)
            else float(scale_factor) if scale_factor else None
        )
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input):
        return interpolate(
            input,
            self.size,
            self.scale_factor,
            self.mode,
            self.align_corners,
            self.recompute_scale_factor,
        )

    def extra_repr(self):
        if self.scale_factor is not None:
            return f"scale_factor={self.scale_factor!r}, mode={self.mode!r}"
        return f"size={self.size!r}, mode={self.mode!r}"
