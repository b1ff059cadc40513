"""Convolutions and pooling: F.conv1d/2d, F.max_pool1d/2d, F.avg_pool1d/2d,
F.adaptive_avg_pool1d/2d and their Modules (nn.Conv1d, nn.Conv2d, nn.MaxPool1d, ...),
plus nn.Unflatten and nearest-neighbour F.interpolate / nn.Upsample, with torch's argument names, defaults, reprs, init and errors.

Nothing here has a backward function of its own. Every layer is a composition of
recorded ops: padding is `cat` with constant blocks, the windows of a kernel are one
strided slice per kernel offset, stacked (an unfold without as_strided), a convolution
is then a batched matmul with the weight, and a pool a sum or a `gather` at the argmax.
The tape differentiates these as any other ops, to any order (create_graph).

Max pooling gives the gradient of each output to one element of its window, the first
maximum in row-major order (torch's scan), by gathering at `argmax` (NumPy's argmax
returns the first maximum, or the first NaN, as torch's scan picks).
"""

import math

import numpy as np

from . import nn_init
from .functions import cat, stack
from .nn import Module, Parameter
from .tensor import Tensor

FUNCTIONS = (
    "conv1d",
    "conv2d",
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
    "MaxPool1d",
    "MaxPool2d",
    "AvgPool1d",
    "AvgPool2d",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "Unflatten",
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
    dims: cat with constants, so the gradient flows to x alone."""
    d = len(pads)
    for axis, (before, after) in enumerate(pads, start=x.ndim - d):
        if before or after:
            shape = list(x.shape)
            blocks = []
            for size in (before, after):
                shape[axis] = size
                blocks.append(x.new_full(tuple(shape), value))
            x = cat([blocks[0], x, blocks[1]], axis)
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


def _check_weight(name, d, input, weight, bias, groups):
    if weight.ndim != d + 2:
        raise RuntimeError(
            f"Expected {d + 1}D (unbatched) or {d + 2}D (batched) weight to {name}, "
            f"but got weight of size: {list(weight.shape)}"
        )
    out_channels, per_group = weight.shape[:2]
    if groups <= 0:
        raise RuntimeError("non-positive groups is not supported")
    if out_channels % groups:
        raise RuntimeError(
            f"Given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of size [{list(weight.shape)}] instead"
        )
    if input.shape[1] != per_group * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight.shape)}, expected "
            f"input{list(input.shape)} to have {per_group * groups} channels, but got "
            f"{input.shape[1]} channels instead"
        )
    if bias is not None and (bias.ndim != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(
            f"Given weight of size {list(weight.shape)}, expected bias to be "
            f"1-dimensional with {out_channels} elements, but got bias of size "
            f"{list(bias.shape)} instead"
        )


def _conv(name, d, input, weight, bias, stride, padding, dilation, groups):
    """The d-dimensional cross-correlation of torch's conv{d}d: the windows of the
    padded input (N, C, K, *out) regrouped as (N, G, C/G * K, P) and multiplied by
    the weight (G, O/G, C/G * K), P = prod(out)."""
    input, unbatched = _batched(
        input,
        d,
        lambda x: f"Expected {d + 1}D (unbatched) or {d + 2}D (batched) input to "
        f"{name}, but got input of size: {list(x.shape)}",
    )
    _check_weight(name, d, input, weight, bias, groups)
    kernel = tuple(weight.shape[2:])
    stride = _conv_arg(stride, d, "stride")
    dilation = _conv_arg(dilation, d, "dilation")
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(dl <= 0 for dl in dilation):
        raise RuntimeError("non-positive dilation is not supported")
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
    out = [(p - r) // s + 1 for p, r, s in zip(padded, reach, stride, strict=True)]
    n, o = input.shape[0], weight.shape[0]
    cols = _windows(_pad(input, pads, 0.0), kernel, stride, dilation, out)
    cols = cols.reshape(n, groups, -1, math.prod(out))
    y = weight.reshape(groups, o // groups, -1) @ cols  # (N, G, O/G, P)
    y = y.reshape(n, o, *out)
    if bias is not None:
        y = y + bias.reshape(o, *([1] * d))
    return y.squeeze(0) if unbatched else y


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """input (N, C, L) or (C, L), weight (O, C/groups, k), bias (O,): (N, O, L')."""
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """input (N, C, H, W) or (C, H, W), weight (O, C/groups, kh, kw), bias (O,):
    (N, O, H', W')."""
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


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


def _max_pool(name, d, input, kernel_size, stride, padding, dilation, ceil_mode, ret):
    input, unbatched = _batched(input, d, _max_pool_rank(name, d))
    kernel, stride, padding, dilation = _pool_args(
        d, kernel_size, stride, padding, dilation
    )
    out, pads = _pool_geometry(input, kernel, stride, padding, dilation, ceil_mode)
    cols = _windows(_pad(input, pads, -math.inf), kernel, stride, dilation, out)
    first = cols.argmax(2, keepdim=True)  # the first maximum (or NaN) of each window
    y = cols.gather(2, first).squeeze(2)
    if not ret:
        return y.squeeze(0) if unbatched else y
    # return_indices: each maximum's flat position in its channel of the input
    offsets = np.unravel_index(first.numpy()[:, :, 0], kernel)
    grid = np.meshgrid(*(np.arange(n) for n in out), indexing="ij")
    at = [
        g * s - p + o * dl
        for g, s, p, o, dl in zip(grid, stride, padding, offsets, dilation, strict=True)
    ]
    indices = Tensor._wrap(np.ravel_multi_index(at, input.shape[2:]).astype(np.int64))
    return (y.squeeze(0), indices.squeeze(0)) if unbatched else (y, indices)


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

    input, unbatched = _batched(input, d, rank)
    kernel, stride, padding, dilation = _pool_args(d, kernel_size, stride, padding)
    out, pads = _pool_geometry(input, kernel, stride, padding, dilation, ceil_mode)
    cols = _windows(_pad(input, pads, 0.0), kernel, stride, dilation, out)
    if over is not None:
        if over == 0:
            raise RuntimeError("divisor must be not zero")
        divisor = float(over)
    else:
        divisor = _avg_divisor(input, kernel, stride, padding, out, include)
        divisor = Tensor._wrap(divisor.astype(input.detach().numpy().dtype))
    y = cols.sum(2) / divisor
    return y.squeeze(0) if unbatched else y


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
    bias from U(+-1/sqrt(fan_in)), fan_in = in/groups * prod(kernel_size)."""

    _d = 0

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
        if padding_mode != "zeros":
            raise NotImplementedError(
                f"padding_mode={padding_mode!r} is not in symgrad.tape (only 'zeros')"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _ntuple(kernel_size, d)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.transposed, self.output_padding = False, (0,) * d
        self.groups, self.padding_mode = groups, padding_mode
        shape = (out_channels, in_channels // groups, *self.kernel_size)
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


class Unflatten(Module):
    """Dim `dim` of the input as the dims unflattened_size (one may be -1)."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, unflattened_size

    def forward(self, input):
        shape = list(input.shape)
        dim = self.dim + input.ndim if self.dim < 0 else self.dim
        return input.reshape(*shape[:dim], *self.unflattened_size, *shape[dim + 1 :])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
