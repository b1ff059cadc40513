"""im2col and its adjoint, F.unfold and F.fold (nn.Unfold, nn.Fold), and the
sub-pixel rearrangements F.pixel_shuffle and F.pixel_unshuffle (nn.PixelShuffle,
nn.PixelUnshuffle), with torch's argument names, reprs and errors.

unfold is the convolutions' window gathering (nn_conv._columns); fold sums each
column back into its window by index_add at the positions unfold reads; the pixel
shuffles are a reshape, a permute and a reshape. All are compositions of recorded
ops, so they differentiate to any order.
"""

import math

import numpy as np

from .nn import Module
from .nn_conv import _columns, _ntuple, _pad
from .tensor import Tensor

FUNCTIONS = ("unfold", "fold", "pixel_shuffle", "pixel_unshuffle")
MODULES = ("Unfold", "Fold", "PixelShuffle", "PixelUnshuffle")


def _geometry(kernel_size, dilation, padding, stride):
    """The four arguments as pairs, refused as torch's im2col/col2im refuse them."""
    kernel, dilation, padding, stride = (
        _ntuple(v, 2) for v in (kernel_size, dilation, padding, stride)
    )
    for values, name, ok in (
        (kernel, "kernel size should be greater than zero", 0),
        (dilation, "dilation should be greater than zero", 0),
        (padding, "padding should be non-negative", -1),
        (stride, "stride should be greater than zero", 0),
    ):
        if min(values) <= ok:
            raise RuntimeError(f"{name}, but got {values}")
    return kernel, dilation, padding, stride


def _blocks(size, kernel, dilation, padding, stride):
    """The number of window positions along each spatial dim."""
    return [
        (n + 2 * p - dl * (k - 1) - 1) // s + 1
        for n, k, dl, p, s in zip(size, kernel, dilation, padding, stride, strict=True)
    ]


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """(N, C, H, W) -> (N, C * kh * kw, L): every window of the zero-padded input as
    a column, channel-major, the L windows in row-major order (im2col)."""
    if input.ndim not in (3, 4):
        raise IndexError(
            f"Dimension out of range (expected 3D or 4D input, but got "
            f"{input.ndim}D)"
        )
    kernel, dilation, padding, stride = _geometry(
        kernel_size, dilation, padding, stride
    )
    x = input.unsqueeze(0) if input.ndim == 3 else input
    blocks = _blocks(x.shape[2:], kernel, dilation, padding, stride)
    if min(blocks) < 1:
        raise RuntimeError(
            f"Given input with spatial size {tuple(x.shape[2:])}, kernel_size="
            f"{kernel}, dilation={dilation}, padding={padding}, calculated shape of "
            f"the array of sliding blocks as {tuple(blocks)}, but its components "
            "must be at least one."
        )
    pads = [(p, p) for p in padding]
    cols = _columns(x, kernel, stride, pads, dilation, 1)[0].flatten(1, 2)
    return cols[0] if input.ndim == 3 else cols


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """(N, C * kh * kw, L) -> (N, C, H, W): each column summed into the window it
    came from (col2im, unfold's adjoint: fold(unfold(x)) counts each pixel once per
    window that covers it)."""
    if input.ndim not in (2, 3) or 0 in input.shape[-2:]:
        raise RuntimeError(
            "Expected 2D or 3D (batch mode) tensor for input with possibly 0 batch "
            f"size and non-zero dimensions for input, but got: {list(input.shape)}"
        )
    size = _ntuple(output_size, 2)
    kernel, dilation, padding, stride = _geometry(
        kernel_size, dilation, padding, stride
    )
    x = input.unsqueeze(0) if input.ndim == 2 else input
    n, ck, length = x.shape
    k = math.prod(kernel)
    if ck % k:
        raise RuntimeError(
            "Expected size of input's dimension 1 to be divisible by the product of "
            f"kernel_size, but got input.size(1)={ck} and kernel_size={kernel}."
        )
    blocks = _blocks(size, kernel, dilation, padding, stride)
    if min(blocks) < 1 or math.prod(blocks) != length:
        raise RuntimeError(
            f"Given output_size={size}, kernel_size={kernel}, dilation={dilation}, "
            f"padding={padding}, stride={stride}, expected size of input's dimension "
            f"2 to match the calculated number of sliding blocks "
            f"{' * '.join(map(str, blocks))} = {math.prod(blocks)}, but got "
            f"input.size(2)={length}."
        )
    padded = [s + 2 * p for s, p in zip(size, padding, strict=True)]
    positions = Tensor._wrap(np.arange(math.prod(padded)).reshape(1, 1, *padded))
    index = _columns(positions, kernel, stride, [(0, 0)] * 2, dilation, 1)[0]
    out = x.new_zeros(n, ck // k, math.prod(padded))
    out = out.index_add(2, index.flatten(), x.reshape(n, ck // k, k * length))
    out = _pad(out.reshape(n, ck // k, *padded), [(-p, -p) for p in padding], 0.0)
    return out[0] if input.ndim == 2 else out


def pixel_shuffle(input, upscale_factor):
    """(*, C r^2, H, W) -> (*, C, H r, W r): each channel's r x r block of
    sub-pixels moved into space (ESPCN's upsampling)."""
    r = upscale_factor
    if input.ndim < 3:
        raise RuntimeError(
            "pixel_shuffle expects input to have at least 3 dimensions, but got "
            f"input with {input.ndim} dimension(s)"
        )
    *lead, c, h, w = input.shape
    if c % (r * r):
        raise RuntimeError(
            "pixel_shuffle expects its input's 'channel' dimension to be divisible "
            f"by the square of upscale_factor, but input.size(-3)={c} is not "
            f"divisible by {r * r}"
        )
    d = len(lead)
    x = input.reshape(*lead, c // (r * r), r, r, h, w)
    x = x.permute(*range(d), d, d + 3, d + 1, d + 4, d + 2)
    return x.reshape(*lead, c // (r * r), h * r, w * r)


def pixel_unshuffle(input, downscale_factor):
    """(*, C, H r, W r) -> (*, C r^2, H, W): pixel_shuffle's inverse."""
    r = downscale_factor
    if input.ndim < 3:
        raise RuntimeError(
            "pixel_unshuffle expects input to have at least 3 dimensions, but got "
            f"input with {input.ndim} dimension(s)"
        )
    *lead, c, h, w = input.shape
    for name, n, dim in (("height", h, -2), ("width", w, -1)):
        if n % r:
            raise RuntimeError(
                f"pixel_unshuffle expects {name} to be divisible by "
                f"downscale_factor, but input.size({dim})={n} is not divisible by {r}"
            )
    d = len(lead)
    x = input.reshape(*lead, c, h // r, r, w // r, r)
    x = x.permute(*range(d), d, d + 2, d + 4, d + 1, d + 3)
    return x.reshape(*lead, c * r * r, h // r, w // r)


class Unfold(Module):
    def __init__(self, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation
        self.padding, self.stride = padding, stride

    def forward(self, input):
        return unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self):
        return (
            f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
            f"padding={self.padding}, stride={self.stride}"
        )


class Fold(Unfold):
    def __init__(self, output_size, kernel_size, dilation=1, padding=0, stride=1):
        super().__init__(kernel_size, dilation, padding, stride)
        self.output_size = output_size

    def forward(self, input):
        return fold(
            input,
            self.output_size,
            self.kernel_size,
            self.dilation,
            self.padding,
            self.stride,
        )

    def extra_repr(self):
        return f"output_size={self.output_size}, " + super().extra_repr()


class PixelShuffle(Module):
    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input):
        return pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input):
        return pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"
