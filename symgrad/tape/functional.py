"""torch.nn.functional: activations, dropout, pad, one_hot, the normalizations,
embedding(_bag), attention, linear, bilinear and the losses (conv and pooling:
nn_conv.py; unfold, fold and pixel_shuffle: nn_fold.py).

Everything here is finite, with finite gradients, for any finite input: softplus and
logsigmoid are primitives written never to overflow, and the losses are built from
them and from log_softmax, which subtracts the max before exponentiating.
"""

import math
import warnings

import numpy as np

from .arithmetic import broadcast_shape, operands, result_type, unbroadcast
from .autograd import no_grad, silent
from .creation import numpy_generator
from .dtypes import scalar_name
from .functions import addmm, einsum, where
from .namespaces import NumPyOps, logsigmoid_array, sigmoid_array
from .tensor import Tensor


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def relu(input, inplace=False):
    return input.relu_() if inplace else input.relu()


def dropout(input, p=0.5, training=True, inplace=False):
    """In training, each element zeroed with probability p (draws from the tape's
    generator) and the rest scaled by 1/(1-p), so the mean is kept; otherwise the
    input itself."""
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0:
        return input
    keep = numpy_generator().random(input.shape) >= p
    scale = input._lift(keep.astype(input.dtype) * (0.0 if p == 1 else 1 / (1 - p)))
    return input.mul_(scale) if inplace else input * scale


def pad(input, pad, mode="constant", value=None):
    """Padding: pad = (before, after) for the last dim, then for the one before
    it, and so on; negative amounts crop. Constant padding's g is the output's
    region that shows the input, put back in place; the other modes read the
    input at computed positions (_pad_positions)."""
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if mode != "constant":
        if value:
            raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
        return _pad_positions(input, tuple(int(p) for p in pad), mode)
    if len(pad) // 2 > input.ndim:
        raise RuntimeError(
            "Padding length should be less than or equal to two times the input "
            "dimension but got padding length "
            f"{len(pad)} and input of dimension {input.ndim}"
        )
    x = input._data
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[-1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    grown = np.pad(
        x, [(max(a, 0), max(b, 0)) for a, b in widths], constant_values=value or 0
    )
    kept = tuple(
        slice(max(-a, 0), grown.shape[d] - max(-b, 0))
        for d, (a, b) in enumerate(widths)
    )
    if any(k.start > k.stop for k in kept):
        raise RuntimeError("The input size after padding would be negative")
    shown = tuple(  # the output's region showing the input, and where it is from
        slice(max(a, 0), max(a, 0) + n + min(a, 0) + min(b, 0))
        for (a, b), n in zip(widths, x.shape, strict=True)
    )
    source = tuple(
        slice(max(-a, 0), n - max(-b, 0))
        for (a, b), n in zip(widths, x.shape, strict=True)
    )

    def backward(xp, g):
        return (xp.scatter(g[shown], x.shape, source),)

    return input._result(
        grown[kept], (input,), backward, "ConstantPadNdBackward0", saves=False
    )


def _pad_positions(input, pad, mode):
    """Reflect, replicate or circular padding as a gather: np.pad of the input's
    flat positions says where each output element reads, and the gradient adds g
    back there (a scatter, so gradients of any order exist). torch pads reflect
    and replicate before cropping negative amounts, circular after."""
    k, shape = len(pad) // 2, input.shape
    if input.ndim not in (k + 1, k + 2):
        raise NotImplementedError(
            f"Padding size {len(pad)} is not supported for {input.ndim}D input "
            "tensor.\nSupported combinations for non-constant padding:\n"
            "  - 2D or 3D input: padding size = 2 (pads last dimension)\n"
            "  - 3D or 4D input: padding size = 4 (pads last 2 dimensions)\n"
            "  - 4D or 5D input: padding size = 6 (pads last 3 dimensions)"
        )
    widths = [(0, 0)] * (input.ndim - k) + [
        (pad[2 * i], pad[2 * i + 1]) for i in reversed(range(k))
    ]
    if mode == "circular":
        _check_circular(shape, widths)
    else:
        _check_reflect_replicate(input, widths, mode, k)
    positions = np.arange(input.numel()).reshape(shape)
    grow = [(max(a, 0), max(b, 0)) for a, b in widths]
    if mode == "circular":
        positions = np.pad(positions[_crop(shape, widths)], grow, mode="wrap")
    else:
        positions = np.pad(positions, grow, mode=_NUMPY_PAD[mode])
        positions = positions[_crop(positions.shape, widths)]
    index = np.unravel_index(positions, shape)

    def backward(xp, g):
        return (xp.scatter(g, shape, index),)

    name = (
        "torch::autograd::CopySlices"
        if mode == "circular"
        else f"{_PAD_KERNEL[mode]}Pad{k}DBackward0"
    )
    return input._result(input._data[index], (input,), backward, name, saves=False)


_NUMPY_PAD = {"reflect": "reflect", "replicate": "edge"}
_PAD_KERNEL = {"reflect": "Reflection", "replicate": "Replication"}


def _crop(shape, widths):
    """The slices that cut the negative amounts of `widths` off `shape`."""
    return tuple(
        slice(max(-a, 0), n - max(-b, 0))
        for (a, b), n in zip(widths, shape, strict=True)
    )


def _check_circular(shape, widths):
    for (a, b), n in zip(widths, shape, strict=True):
        if a > n or b > n:
            raise RuntimeError("Padding value causes wrapping around more than once.")
        if n + a + b < 0:
            raise RuntimeError(
                "Negative padding value is resulting in an empty dimension"
            )


def _check_reflect_replicate(input, widths, mode, k):
    """torch's checks, in its order and words."""
    if input.dtype == np.bool_:
        raise NotImplementedError(
            f"\"{_PAD_KERNEL[mode].lower()}_pad{k}d\" not implemented for 'Bool'"
        )
    batch = input.ndim == k + 2
    if any(n == 0 for n in input.shape[batch:]):
        raise RuntimeError(
            f"Expected {k + 1}D or {k + 2}D (batch mode) tensor with possibly 0 "
            "batch size and other non-zero dimensions for input, but got: "
            f"{list(input.shape)}"
        )
    padded = [
        (i, d, *widths[d], input.shape[d])
        for i, d in enumerate(range(input.ndim - 1, input.ndim - 1 - k, -1))
    ]
    # every reflect check comes before any size check, as in torch
    for i, d, a, b, n in padded:
        if mode == "reflect" and (a >= n or b >= n):
            raise RuntimeError(
                f"Argument #{4 + 2 * i}: Padding size should be less than the "
                "corresponding input dimension, but got: padding "
                f"({a}, {b}) at dimension {d} of input {list(input.shape)}"
            )
    for *_, a, b, n in padded:
        if k == 1 and n + a + b < 1:
            raise RuntimeError(
                f"input (W: {n}) is too small. Calculated output W: {n + a + b}"
            )
        if n + a + b < 0:
            out = [s + lo + hi for (lo, hi), s in zip(widths, input.shape, strict=True)]
            raise RuntimeError(
                f"Trying to create tensor with negative dimension {n + a + b}: "
                f"{out}"
            )


def one_hot(tensor, num_classes=-1):
    """int64 tensor of tensor.shape + (num_classes,) with a 1 at each class index;
    num_classes=-1 means the largest index + 1."""
    if tensor.dtype != np.int64:
        raise RuntimeError(
            "one_hot is only applicable to index tensor of type LongTensor."
        )
    x = tensor._data
    if x.size and x.min() < 0:
        raise RuntimeError("Class values must be non-negative.")
    n = (int(x.max()) + 1 if x.size else 0) if num_classes == -1 else num_classes
    if x.size and x.max() >= n:
        raise RuntimeError("Class values must be smaller than num_classes.")
    return tensor._result((x[..., None] == np.arange(n)).astype(np.int64))


def _implicit_dim(input, name):
    """torch's old choice when no dim is given (deprecated there, so it warns)."""
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call "
        "to include dim=X as an argument.",
        stacklevel=3,
    )
    return 0 if input.ndim in (0, 1, 3) else 1


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    dim = _implicit_dim(input, "softmax") if dim is None else dim
    return input.softmax(dim, dtype)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    dim = _implicit_dim(input, "log_softmax") if dim is None else dim
    return input.log_softmax(dim, dtype)


@silent
def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as torch)."""
    x = input._data
    linear = beta * x > threshold
    z = np.exp(np.minimum(beta * x, threshold))  # capped, so exp cannot overflow

    def backward(xp, g, x):
        return (xp.where(linear, g, g * xp.sigmoid(beta * x)),)

    out = np.where(linear, x, np.log1p(z) / beta)
    return input._result(out, (input,), backward, "SoftplusBackward0")


@silent
def logsigmoid(input):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)); its gradient is sigmoid(-x)."""

    def backward(xp, g, x):
        return (g * xp.sigmoid(-x),)

    out = logsigmoid_array(input._data)
    return input._result(out, (input,), backward, "LogSigmoidBackward0")


def glu(input, dim=-1):
    """The gated linear unit: input's first half along dim times the sigmoid of its
    second half."""
    if input.ndim == 0:
        raise RuntimeError(
            "glu does not support scalars because halving size must be even"
        )
    if input.shape[dim] % 2:
        raise RuntimeError(
            f"Halving dimension must be even, but dimension {dim % input.ndim} is size "
            f"{input.shape[dim]}"
        )
    a, b = input.chunk(2, dim)
    return a * b.sigmoid()


def elu(input, alpha=1.0, inplace=False):
    """x for x > 0, alpha (e^x - 1) below; the derivative there is out + alpha."""
    if inplace:
        return input._inplace(lambda t: elu(t, alpha))
    x = input._data
    with np.errstate(over="ignore"):  # e^x of a large x is not picked
        out = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))

    def backward(xp, g, x, out):
        return (xp.where(x > 0, g, g * (out + alpha)),)

    return input._result(out, (input,), backward, "EluBackward0", (input, "out"))


def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False):
    """x clamped to [min_val, max_val]; unlike clamp's, the gradient is 0 at the
    bounds too (torch's hardtanh_backward)."""
    if inplace:
        return input._inplace(lambda t: hardtanh(t, min_val, max_val))
    x = input._data
    inside = (x > min_val) & (x < max_val)

    def backward(xp, g, x):
        return (xp.where(inside, g, 0),)

    out = np.clip(x, min_val, max_val).astype(x.dtype, copy=False)
    return input._result(out, (input,), backward, "HardtanhBackward0")


def relu6(input, inplace=False):
    return hardtanh(input, 0.0, 6.0, inplace)


def leaky_relu(input, negative_slope=0.01, inplace=False):
    if inplace:
        return input._inplace(lambda t: leaky_relu(t, negative_slope))
    x = input._data
    slope = np.where(x > 0, 1, negative_slope).astype(x.dtype)

    def backward(xp, g, x):
        return (g * slope,)

    return input._result(x * slope, (input,), backward, "LeakyReluBackward0")


_SELU_ALPHA, _SELU_SCALE = (
    1.6732632423543772848170429916717,
    1.0507009873554804934193349852946,
)


def selu(input, inplace=False):
    """scale * elu(x, alpha) with torch's self-normalizing constants."""
    if inplace:
        return input._inplace(selu)
    return _SELU_SCALE * elu(input, _SELU_ALPHA)


def celu(input, alpha=1.0, inplace=False):
    """max(0, x) + min(0, alpha (e^(x/alpha) - 1)): alpha * elu(x / alpha)."""
    if inplace:
        return input._inplace(lambda t: celu(t, alpha))
    return alpha * elu(input / alpha)


def mish(input, inplace=False):
    """x tanh(softplus(x))."""
    if inplace:
        return input._inplace(mish)
    return input * softplus(input).tanh()


def hardsigmoid(input, inplace=False):
    """x / 6 + 1/2 clamped to [0, 1]; the gradient is 1/6 strictly inside (-3, 3),
    torch's 1/6 at float32 precision (its kernel's `1.0f / 6.0f`)."""
    if inplace:
        return input._inplace(hardsigmoid)
    x = input._data
    inside = (x > -3) & (x < 3)

    def backward(xp, g, x):
        return (xp.where(inside, g * float(np.float32(1 / 6)), 0),)

    out = np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype, copy=False)
    return input._result(out, (input,), backward, "HardsigmoidBackward0")


def hardswish(input, inplace=False):
    """x * hardsigmoid(x); torch's gradient: 0 below -3, x / 3 + 1/2 up to 3, 1 above."""
    if inplace:
        return input._inplace(hardswish)
    x = input._data

    def backward(xp, g, x):
        return (xp.where(x < -3, 0, xp.where(x <= 3, g * (x / 3 + 0.5), g)),)

    out = (x * np.clip(x + 3, 0, 6) / 6).astype(x.dtype, copy=False)
    return input._result(out, (input,), backward, "HardswishBackward0")


def softsign(input):
    return input / (1 + input.abs())


def tanhshrink(input):
    return input - input.tanh()


def softmin(input, dim=None, _stacklevel=3, dtype=None):
    return softmax(-input, _implicit_dim(input, "softmin") if dim is None else dim)


def prelu(input, weight):
    """x where x > 0, else weight * x, weight per channel (dim 1) or one for all."""
    along = [-1 if d == 1 else 1 for d in range(input.ndim)]
    slope = weight if weight.numel() == 1 else weight.reshape(along)
    return where(input > 0, input, slope * input)


def pairwise_distance(x1, x2, p=2.0, eps=1e-6, keepdim=False):
    """The p-norm of x1 - x2 + eps along the last dim."""
    return (x1 - x2 + eps).norm(p, dim=-1, keepdim=keepdim)


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Normalize each group of channels (dim 1) of each sample over its channels
    and positions (biased variance); then * weight + bias per channel."""
    if input.shape[1] % num_groups:
        raise RuntimeError(
            f"Expected number of channels in input to be divisible by num_groups, but "
            f"got input of shape {input.shape} and num_groups={num_groups}"
        )
    grouped = input.reshape(input.shape[0], num_groups, -1)
    centered = grouped - grouped.mean(-1, keepdim=True)
    var = (centered * centered).mean(-1, keepdim=True)
    out = (centered / (var + eps).sqrt()).reshape(input.shape)
    along = [-1 if d == 1 else 1 for d in range(input.ndim)]
    out = out if weight is None else out * weight.reshape(along)
    return out if bias is None else out + bias.reshape(along)


_SQRT_HALF = math.sqrt(0.5)
_SQRT_TWO_OVER_PI = math.sqrt(2 / math.pi)


@silent
def gelu(input, *, approximate="none"):
    """x Phi(x) with Phi the normal CDF, or torch's tanh approximation of it."""
    if approximate not in ("none", "tanh"):
        raise RuntimeError("approximate argument must be either none or tanh.")

    def cdf_and_pdf(xp, x):
        """Phi(x) and Phi'(x), in xp so that the gradient can be differentiated."""
        if approximate == "tanh":
            t = xp.tanh(_SQRT_TWO_OVER_PI * (x + 0.044715 * x**3))
            pdf = 0.5 * (1 - t * t) * _SQRT_TWO_OVER_PI * (1 + 3 * 0.044715 * x * x)
            return 0.5 * (1 + t), pdf
        pdf = xp.exp(-0.5 * x * x) * _SQRT_HALF / math.sqrt(math.pi)
        return 0.5 * (1 + xp.erf(x * _SQRT_HALF)), pdf

    def backward(xp, g, x):
        cdf, pdf = cdf_and_pdf(xp, x)
        return (g * (cdf + x * pdf),)

    x = input._data
    cdf, _ = cdf_and_pdf(NumPyOps, x)
    return input._result(x * cdf, (input,), backward, "GeluBackward0")


def silu(input):
    """x sigmoid(x); its derivative is s (1 + x (1 - s))."""
    x = input._data

    def backward(xp, g, x):
        s = xp.sigmoid(x)
        return (g * s * (1 + x * (1 - s)),)

    return input._result(x * sigmoid_array(x), (input,), backward, "SiluBackward0")


def normalize(input, p=2.0, dim=1, eps=1e-12):
    """input divided by its p-norm along dim (at least eps)."""
    return input / input.norm(p, dim, keepdim=True).clamp_min(eps)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """The cosine of the angle between x1 and x2 along dim (broadcast); as in
    torch, each norm is raised to eps outside the graph."""
    shape = broadcast_shape(x1.shape, x2.shape)
    x1, x2 = x1.expand(shape), x2.expand(shape)
    norms = [x.norm(dim=dim, keepdim=True) for x in (x1, x2)]
    floors = [x.detach().clamp_min(eps) - x.detach() for x in norms]
    return ((x1 / (norms[0] + floors[0])) * (x2 / (norms[1] + floors[1]))).sum(dim)


def embedding(
    input,
    weight,
    padding_idx=None,
    max_norm=None,
    norm_type=2.0,
    scale_grad_by_freq=False,
    sparse=False,
):
    """The rows of weight at the integer indices `input`; the padding_idx row gets
    no gradient. With max_norm, the rows looked up are first renormalized in place,
    as in torch. With scale_grad_by_freq, each row's gradient is divided by how
    often `input` holds it (torch's double backward leaves that scale out; this
    one keeps it, as the derivative of the scaled gradient)."""
    if sparse:
        raise NotImplementedError("embedding: sparse is not in symgrad.tape")
    if input.dtype not in (np.int64, np.int32):
        raise RuntimeError(
            "Expected tensor for argument #1 'indices' to have one of the following "
            f"scalar types: Long, Int; but got {scalar_name(input.dtype)} instead "
            "(while checking arguments for embedding)"
        )
    i, w = input._data, weight._data
    if i.size and (i.min() < 0 or i.max() >= len(w)):
        raise IndexError("index out of range in self")
    if max_norm is not None:
        _embedding_renorm(weight, i, max_norm, norm_type)

    pad = None if padding_idx is None else padding_idx % len(w)
    kept = (i != pad)[..., None]  # the padding row gets no gradient
    if scale_grad_by_freq:
        counts = np.bincount(i.ravel(), minlength=len(w))
        kept = kept / counts[i][..., None].astype(w.dtype)

    def backward(xp, g, input):
        return (xp.scatter(g * kept, w.shape, i),)

    return weight._result(w[i], (weight,), backward, "EmbeddingBackward0", (input,))


def _embedding_renorm(weight, indices, max_norm, norm_type):
    """torch's embedding_renorm_: each row at `indices` whose norm passes max_norm
    scaled by max_norm / (norm + 1e-7), in place and unrecorded (a write: the
    version counter moves)."""
    w = weight._data
    rows = np.unique(indices % len(w))
    norms = np.linalg.norm(w[rows], norm_type, axis=1)
    over = norms > max_norm
    w[rows[over]] *= (max_norm / (norms[over] + 1e-7))[:, None].astype(w.dtype)
    weight._counter.value += 1


def embedding_bag(
    input,
    weight,
    offsets=None,
    max_norm=None,
    norm_type=2,
    scale_grad_by_freq=False,
    mode="mean",
    sparse=False,
    per_sample_weights=None,
    include_last_offset=False,
    padding_idx=None,
):
    """The sum or mean of each bag of embedding rows: a bag is a row of a 2-D
    input, or the indices from one offset to the next of a 1-D one. padding_idx
    entries are left out (an empty bag gives zeros). Built from embedding and
    index_add, so its gradients (of any order) are theirs; mode="max" takes each
    column's largest entry in a bag (the first, on ties, as torch's kernel), whose
    row gets that gradient. sparse changes only torch's gradient layout; max_norm
    and scale_grad_by_freq are not there (torch's CPU backward miscounts the
    frequencies)."""
    if mode not in ("sum", "mean", "max"):
        raise ValueError("mode has to be one of sum, mean or max")
    if mode == "max" and scale_grad_by_freq:
        raise ValueError(
            "max mode does not support scaling the gradient by the frequency"
        )
    if max_norm is not None or scale_grad_by_freq:
        raise NotImplementedError(
            "embedding_bag: max_norm and scale_grad_by_freq are not supported by "
            "symgrad.tape"
        )
    if per_sample_weights is not None and mode != "sum":
        raise NotImplementedError(
            "embedding_bag: per_sample_weights was not None. per_sample_weights is "
            f"only supported for mode='sum' (got mode='{mode}'). Please open a "
            "feature request on GitHub."
        )
    if input.ndim == 2:
        if offsets is not None:
            raise ValueError(
                "if input is 2D, then offsets has to be None, as input is treated is "
                "a mini-batch of fixed length sequences."
            )
        n, length = input.shape
        bag = np.repeat(np.arange(n), length)
    elif offsets is None:
        raise ValueError("offsets has to be a 1D Tensor but got None")
    else:
        n = len(offsets) - include_last_offset
        bag = np.searchsorted(offsets._data, np.arange(input.numel()), "right") - 1
    tokens = input.reshape(-1)._data
    pad = None if padding_idx is None else padding_idx % len(weight)
    used = (bag < n) & (tokens != pad)  # past the last offset, or padding: left out
    if mode == "max":
        return _bag_max(weight, tokens[used], bag[used], n)
    rows = embedding(Tensor._wrap(tokens[used]), weight)
    if per_sample_weights is not None:
        rows = rows * per_sample_weights.reshape(-1)[Tensor._wrap(used)][:, None]
    bag = Tensor._wrap(bag[used])
    sums = weight.new_zeros((n, weight.shape[1])).index_add(0, bag, rows)
    if mode == "sum":
        return sums
    counts = np.bincount(bag._data, minlength=n).astype(weight.dtype)
    return sums / Tensor._wrap(np.maximum(counts, 1)[:, None])


def _bag_max(weight, tokens, bag, n):
    """Per bag and column, the largest of the bag's rows (zeros for an empty bag);
    g goes to the row that gave it."""
    w = weight._data
    rows = np.zeros((n, w.shape[1]), np.int64)
    for b in np.unique(bag):
        members = tokens[bag == b]
        rows[b] = members[np.argmax(w[members], axis=0)]  # argmax: first on ties
    cols = np.broadcast_to(np.arange(w.shape[1]), rows.shape)
    filled = np.isin(np.arange(n), bag)[:, None]

    def backward(xp, g):
        return (xp.scatter(g * filled, w.shape, (rows, cols)),)

    out = np.where(filled, w[rows, cols], 0).astype(w.dtype)
    return weight._result(out, (weight,), backward, "EmbeddingBagBackward0", False)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) over the last len(normalized_shape) dims
    (biased variance), then * weight + bias."""
    normalized_shape = tuple(normalized_shape)
    if input.shape[input.ndim - len(normalized_shape) :] != normalized_shape:
        raise RuntimeError(
            f"Given normalized_shape={list(normalized_shape)}, expected input with "
            f"shape [*, {', '.join(map(str, normalized_shape))}], but got input of "
            f"size{list(input.shape)}"
        )
    dims = tuple(range(-len(normalized_shape), 0))
    centered = input - input.mean(dims, keepdim=True)
    var = (centered * centered).mean(dims, keepdim=True)
    out = centered / (var + eps).sqrt()
    out = out if weight is None else out * weight
    return out if bias is None else out + bias


def batch_norm(
    input,
    running_mean,
    running_var,
    weight=None,
    bias=None,
    training=False,
    momentum=0.1,
    eps=1e-5,
):
    """Normalize each channel (dim 1) over the batch (and length) dims: with the
    batch's mean and biased variance in training, which also move the running
    statistics (if given) by `momentum`, the variance there unbiased, as torch's;
    with the running statistics otherwise. Then * weight + bias per channel."""
    dims = (0, *range(2, input.ndim))
    along = [-1 if d == 1 else 1 for d in range(input.ndim)]  # a channel vector
    if not training:
        mean, var = running_mean.reshape(along), running_var.reshape(along)
    else:
        count = input.numel() // input.shape[1]
        if count == 1:
            raise ValueError(
                "Expected more than 1 value per channel when training, got input "
                f"size {input.shape}"
            )
        mean = input.mean(dims, keepdim=True)
        var = ((input - mean) ** 2).mean(dims, keepdim=True)
        if running_mean is not None:
            with no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.reshape(-1))
                unbiased = var.reshape(-1) * (count / (count - 1))
                running_var.mul_(1 - momentum).add_(momentum * unbiased)
    out = (input - mean) / (var + eps).sqrt()
    out = out if weight is None else out * weight.reshape(along)
    return out if bias is None else out + bias.reshape(along)


def instance_norm(
    input,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    use_input_stats=True,
    momentum=0.1,
    eps=1e-5,
):
    """torch's way: batch_norm of the input as one sample of N*C channels, so each
    sample's channel is normalized over its own positions, with weight, bias and
    the running statistics repeated per sample; each repeat moves by its own
    sample's statistics, and the running statistics become their mean."""
    if use_input_stats and math.prod(input.shape[2:]) == 1:
        raise ValueError(
            "Expected more than 1 spatial element when training, got input size "
            f"{input.shape}"
        )
    if not use_input_stats and (running_mean is None or running_var is None):
        raise RuntimeError(
            "Expected running_mean and running_var to be defined when "
            "use_input_stats is false"
        )
    n, c = input.shape[:2]
    per_sample = [
        None if t is None else t.repeat(n)
        for t in (weight, bias, running_mean, running_var)
    ]
    out = batch_norm(
        input.reshape(1, n * c, *input.shape[2:]),
        *per_sample[2:],
        *per_sample[:2],
        use_input_stats,
        momentum,
        eps,
    )
    with no_grad():
        for stat, repeated in zip(
            (running_mean, running_var), per_sample[2:], strict=True
        ):
            if stat is not None:
                stat.copy_(repeated.reshape(n, c).mean(0))
    return out.reshape(input.shape)


def scaled_dot_product_attention(
    query,
    key,
    value,
    attn_mask=None,
    dropout_p=0.0,
    is_causal=False,
    scale=None,
    enable_gqa=False,
):
    """softmax(query @ key^T * scale + bias) @ value over the last two dims (L
    queries, S keys), scale defaulting to 1/sqrt(E); the bias is -inf where a
    boolean attn_mask (or, with is_causal, a key after the query) is False, or a
    float attn_mask itself. Composed of recorded ops, as torch's reference is."""
    if enable_gqa and query.shape[-3] != key.shape[-3]:  # heads shared by groups
        raise NotImplementedError("enable_gqa is not in symgrad.tape")
    n_queries, n_keys = query.shape[-2], key.shape[-2]
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = query @ key.transpose(-2, -1) * scale
    if is_causal:
        if attn_mask is not None:
            raise RuntimeError(
                "_scaled_dot_product_attention: Explicit attn_mask should not be set "
                "when is_causal=True"
            )
        attn_mask = Tensor._wrap(np.tril(np.ones((n_queries, n_keys), bool)))
    if attn_mask is not None and attn_mask.dtype == np.bool_:
        scores = scores.masked_fill(~attn_mask, -math.inf)
    elif attn_mask is not None:
        scores = scores + attn_mask
    weights = dropout(scores.softmax(-1), dropout_p)
    return weights @ value


def linear(input, weight, bias=None):
    """input @ weight.t() + bias, weight of shape (out_features, in_features). Like
    torch, the input must have the weight's dtype (no promotion inside a layer),
    and a bias makes it one addmm (a view of one, for other than 2-D inputs)."""
    if input.dtype != weight.dtype:
        raise RuntimeError(
            "mat1 and mat2 must have the same dtype, but got "
            f"{input.dtype} != {weight.dtype}"
        )
    if bias is None or input.ndim == 0 or weight.ndim != 2:
        out = input @ weight.t()
        return out if bias is None else out + bias
    if input.ndim == 2:
        return addmm(bias, input, weight.t())
    flat = input.reshape(-1, input.shape[-1])  # addmm and a view, as torch does
    return addmm(bias, flat, weight.t()).reshape(*input.shape[:-1], weight.shape[0])


def bilinear(input1, input2, weight, bias=None):
    """y_o = input1 @ weight[o] @ input2 + bias_o, weight of shape (out, in1, in2),
    the inputs with the same leading dims: one einsum."""
    if input1.shape[:-1] != input2.shape[:-1]:
        raise RuntimeError(
            f"bilinear(): input batch dimensions do not match: got "
            f"{list(input1.shape[:-1])} and {list(input2.shape[:-1])}"
        )
    if weight.ndim != 3 or (input1.shape[-1], input2.shape[-1]) != weight.shape[1:]:
        raise RuntimeError(
            f"bilinear(): input sizes {input1.shape[-1]} and {input2.shape[-1]} do "
            f"not match the weight of size {list(weight.shape)}"
        )
    out = einsum("...i,oij,...j->...o", input1, weight, input2)
    return out if bias is None else out + bias


def _check_reduction(reduction):
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")


def legacy_reduction(size_average, reduce, reduction, stacklevel=3):
    """`reduction`, unless size_average= or reduce= (deprecated in torch, with its
    warning) is given: then the one they choose, both defaulting to True, "mean";
    size_average=False "sum"; reduce=False "none"."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    reduction = "none" if not reduce else "mean" if size_average else "sum"
    warnings.warn(
        "size_average and reduce args will be deprecated, please use "
        f"reduction='{reduction}' instead.",
        UserWarning,
        stacklevel=stacklevel,
    )
    return reduction


def _reduce(losses, reduction):
    """The per-element losses (a tensor) as `reduction` asks."""
    _check_reduction(reduction)
    return losses if reduction == "none" else getattr(losses, reduction)()


def _elementwise_loss(name, input, target, reduction, loss, grads):
    """A loss whose per-element value is loss(x, y), reduced; grads(xp, x, y) gives
    its per-element derivatives in x and y (broadcast operands get summed
    gradients)."""
    _check_reduction(reduction)
    target, x, y = operands(input, target)
    per = loss(x, y)
    out = per if reduction == "none" else getattr(per, reduction)()
    dtype = x.dtype

    def backward(xp, g, x, y):
        if reduction == "mean":
            g = g / per.size
        dx, dy = grads(xp, xp.cast(x, dtype), xp.cast(y, dtype))
        return tuple(
            unbroadcast(g * d, t.shape) if t.requires_grad else None
            for d, t in ((dx, input), (dy, target))
        )

    return input._result(out, (input, target), backward, name)


def _squared(xp, d):
    return d * d, 2 * d


def mse_loss(input, target, reduction="mean"):
    if target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.shape}) that is different to the input size "
            f"({input.shape}). This will likely lead to incorrect results due to "
            "broadcasting. Please ensure they have the same size.",
            stacklevel=2,
        )
    dtype = result_type(input, input._lift(target))
    if dtype.kind != "f":
        raise NotImplementedError(
            f"\"mse_cpu\" not implemented for '{scalar_name(dtype)}'"
        )
    return _difference_loss("MseLossBackward0", input, target, reduction, _squared)


def _weighted(array, weight):
    return array if weight is None else array * weight._data


@silent
def binary_cross_entropy_with_logits(
    input, target, weight=None, reduction="mean", pos_weight=None
):
    """w ((1 - y) x - l logsigmoid(x)) with l = 1 + (pos_weight - 1) y: torch's
    formula, finite for every logit x; its derivatives are w ((1 - y) - l
    sigmoid(-x)) and w (-x - (pos_weight - 1) logsigmoid(x)). The target must be
    float, as in torch."""
    if target.shape != input.shape:
        raise ValueError(
            f"Target size ({target.shape}) must be the same as input size "
            f"({input.shape})"
        )
    if target.dtype.kind != "f":
        raise RuntimeError(
            f"result type {scalar_name(input.dtype)} can't be cast to the desired "
            f"output type {scalar_name(target.dtype)}"
        )
    extra = 0 if pos_weight is None else pos_weight._data - 1  # l = 1 + extra * y
    return _elementwise_loss(
        "BinaryCrossEntropyWithLogitsBackward0",
        input,
        target,
        reduction,
        lambda x, y: _weighted(
            (1 - y) * x - (1 + extra * y) * logsigmoid_array(x), weight
        ),
        lambda xp, x, y: (
            _weighted((1 - y) - (1 + extra * y) * xp.sigmoid(-x), weight),
            _weighted(-x - extra * xp.logsigmoid(x), weight),
        ),
    )


def _clamped_log(xp, x):
    """log(x), at least -100, as torch's binary_cross_entropy takes it."""
    with np.errstate(divide="ignore"):
        return xp.maximum(xp.log(x), -100)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    """-w (y log(x) + (1 - y) log(1 - x)) for probabilities x, each log at least
    -100; d/dx = w (x - y) / max(x (1 - x), 1e-12), as torch computes it."""
    if target.shape != input.shape:
        raise ValueError(
            f"Using a target size (torch.Size({list(target.shape)})) that is "
            f"different to the input size (torch.Size({list(input.shape)})) is "
            "deprecated. Please ensure they have the same size."
        )
    if target.dtype != input.dtype:
        raise _dtype_mismatch(input, target)
    x = input._data
    if np.any((x < 0) | (x > 1)):
        raise RuntimeError("all elements of input should be between 0 and 1")
    return _elementwise_loss(
        "BinaryCrossEntropyBackward0",
        input,
        target,
        reduction,
        lambda x, y: _weighted(
            -(y * _clamped_log(NumPyOps, x) + (1 - y) * _clamped_log(NumPyOps, 1 - x)),
            weight,
        ),
        lambda xp, x, y: (
            _weighted((x - y) / xp.maximum(x * (1 - x), 1e-12), weight),
            _weighted(_clamped_log(xp, 1 - x) - _clamped_log(xp, x), weight),
        ),
    )


def l1_loss(input, target, reduction="mean"):
    return _reduce((input - target).abs(), reduction)


def gaussian_nll_loss(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 (log var + (input - target)^2 / var), var clamped at eps outside the graph
    (so its gradient is taken at the clamped value, as torch's); a var one dim short
    of input, or with one size-1 dim, is shared along it."""
    if isinstance(var, int | float):
        if var < 0:
            raise ValueError("var has negative entry/entries")
        var = var * input.new_ones(input.shape)
    elif (var < 0).any():
        raise ValueError("var has negative entry/entries")
    if var.shape != input.shape:
        if input.shape[:-1] == var.shape:
            var = var.unsqueeze(-1)
        elif (
            input.ndim != var.ndim
            or sum(v for i, v in zip(input.shape, var.shape, strict=True) if i != v)
            != 1
        ):
            raise ValueError("var is of incorrect size")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(reduction + " is not valid")
    var = var.clone()
    with no_grad():
        var.clamp_(min=eps)
    loss = 0.5 * (var.log() + (input - target) ** 2 / var)
    return _reduce(loss + 0.5 * math.log(2 * math.pi) if full else loss, reduction)


def poisson_nll_loss(
    input, target, log_input=True, full=False, size_average=None, eps=1e-8,
    reduce=None, reduction="mean",
):  # fmt: skip
    """exp(input) - target * input for a log rate (else input - target * log(input
    + eps)); full adds Stirling's term for log(target!) where target > 1."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    if log_input:
        loss = input.exp() - target * input
    else:
        loss = input - target * (input + eps).log()
    if full:
        t = target._data
        with np.errstate(divide="ignore", invalid="ignore"):
            stirling = t * np.log(t) - t + 0.5 * np.log(2 * math.pi * t)
        loss = loss + np.where(t > 1, stirling, 0)
    return _reduce(loss, reduction)


def triplet_margin_loss(
    anchor, positive, negative, margin=1.0, p=2, eps=1e-6, swap=False,
    size_average=None, reduce=None, reduction="mean",
):  # fmt: skip
    """max(0, margin + d(anchor, positive) - d(anchor, negative)) by
    pairwise_distance; swap takes the smaller of d(anchor, negative) and
    d(positive, negative)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    dims = anchor.ndim, positive.ndim, negative.ndim
    if len(set(dims)) > 1:
        raise RuntimeError(
            "The anchor, positive, and negative tensors are expected to have the same "
            f"number of dimensions, but got: anchor {dims[0]}D, positive {dims[1]}D, "
            f"and negative {dims[2]}D inputs"
        )
    dist_pos = pairwise_distance(anchor, positive, p, eps)
    dist_neg = pairwise_distance(anchor, negative, p, eps)
    if swap:
        dist_neg = dist_neg.minimum(pairwise_distance(positive, negative, p, eps))
    return _reduce((margin + dist_pos - dist_neg).clamp_min(0), reduction)


def margin_ranking_loss(
    input1, input2, target, margin=0, size_average=None, reduce=None,
    reduction="mean",
):  # fmt: skip
    """max(0, -target * (input1 - input2) + margin)."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    return _reduce((-target * (input1 - input2) + margin).clamp_min(0), reduction)


def cosine_embedding_loss(
    input1, input2, target, margin=0, size_average=None, reduce=None,
    reduction="mean",
):  # fmt: skip
    """1 - cos(input1, input2) where target is 1, max(0, cos - margin) where it is
    -1, 0 elsewhere; cos along the last dim, each squared norm + 1e-12, as torch."""
    reduction = legacy_reduction(size_average, reduce, reduction)
    dim = input1.ndim - 1
    squares = [(x * x).sum(dim) + 1e-12 for x in (input1, input2)]
    cos = (input1 * input2).sum(dim) / (squares[0] * squares[1]).sqrt()
    output = where(target == 1, 1 - cos, 0.0) + where(
        target == -1, (cos - margin).clamp_min(0), 0.0
    )
    return _reduce(output, reduction)


def _difference_loss(name, input, target, reduction, parts):
    """A loss of d = x - y per element: parts(xp, d) gives its value and
    derivative."""
    return _elementwise_loss(
        name,
        input,
        target,
        reduction,
        lambda x, y: parts(NumPyOps, x - y)[0],
        lambda xp, x, y: (lambda slope: (slope, -slope))(parts(xp, x - y)[1]),
    )


def _smooth_l1(beta, scale=1.0):
    """parts(xp, d) for scale times 0.5 d^2 / beta inside |d| < beta, |d| - beta/2
    outside."""

    def parts(xp, d):
        inside = xp.abs(d) < beta
        with np.errstate(divide="ignore", invalid="ignore"):  # beta = 0: never inside
            value = xp.where(inside, 0.5 * d * d / beta, xp.abs(d) - 0.5 * beta)
            slope = xp.where(inside, d / beta, xp.sign(d))
        return scale * value, scale * slope

    return parts


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    parts = _smooth_l1(beta)
    return _difference_loss("SmoothL1LossBackward0", input, target, reduction, parts)


def _dtype_mismatch(input, target):
    """torch's error where a loss kernel needs input and target of one dtype."""
    return RuntimeError(
        f"Found dtype {scalar_name(target.dtype)} but expected "
        f"{scalar_name(input.dtype)}"
    )


def huber_loss(input, target, reduction="mean", delta=1.0):
    """delta times smooth_l1_loss with beta = delta. torch's kernel computes in
    input's dtype and its backward refuses a target of another dtype."""
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    parts = _smooth_l1(delta, delta)
    if target.dtype == input.dtype:
        return _difference_loss("HuberLossBackward0", input, target, reduction, parts)
    out = _difference_loss(
        "HuberLossBackward0", input, target.to(input.dtype), reduction, parts
    )

    def backward(xp, g):
        raise _dtype_mismatch(input, target)

    return out._result(out._data, (out,), backward, "HuberLossBackward0", saves=False)


def _log(xp, y):
    """log(y), -inf at 0 and nan below, silently, as torch's."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return xp.log(y)


def _xlogy(y):
    """y log(y), 0 at y = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y == 0, 0, y * np.log(y))


# kl_div's per-element loss and its derivatives in x and y, by log_target; y log(y)
# is 0 at y = 0 (torch's xlogy), but its derivative there is -inf
_KL_DIV = {
    False: (
        lambda x, y: _xlogy(y) - y * x,
        lambda xp, x, y: (-y, _log(xp, y) + 1 - x),
    ),
    True: (
        lambda x, y: np.exp(y) * (y - x),
        lambda xp, x, y: (-xp.exp(y), xp.exp(y) * (y - x + 1)),
    ),
}


def kl_div(input, target, reduction="mean", log_target=False):
    """sum of target (log(target) - input) for log-probabilities `input`;
    "batchmean" divides the sum by the batch size."""
    batch = reduction == "batchmean"
    loss, grads = _KL_DIV[bool(log_target)]
    reduction = "sum" if batch else reduction
    total = _elementwise_loss("KlDivBackward0", input, target, reduction, loss, grads)
    return total / input.shape[0] if batch else total


def nll_loss(input, target, weight=None, *, ignore_index=-100, reduction="mean"):
    """-input[target] (input: log-probabilities, classes along dim 1, or dim 0 for 1-D
    input), scaled by weight[target]. Targets equal to ignore_index add nothing, and
    the mean is over the others' weights, as in torch (nan, with zero gradients, if
    all are ignored). The weight must have input's dtype, as in torch."""
    _check_reduction(reduction)
    if weight is not None and weight.dtype != input.dtype:
        raise RuntimeError(
            f"expected scalar type {scalar_name(input.dtype)} but found "
            f"{scalar_name(weight.dtype)}"
        )
    dim = 0 if input.ndim == 1 else 1
    t = _class_targets(input, target, dim, ignore_index)
    x = input._data
    keep = t != ignore_index
    safe = np.where(keep, t, 0)  # an ignored target picks class 0, weighted 0
    w = (keep if weight is None else weight._data[safe] * keep).astype(x.dtype)
    index = np.expand_dims(safe, dim)
    losses = w * -np.take_along_axis(x, index, dim).squeeze(dim)
    total = w.sum()
    with np.errstate(invalid="ignore"):  # 0/0 = nan when every target is ignored
        out = losses if reduction == "none" else losses.sum()
        out = out / total if reduction == "mean" else out

    classes = np.arange(x.shape[dim]).reshape([-1] + [1] * (x.ndim - dim - 1))
    picked = index == classes  # each target's position in x

    def backward(xp, g, *saved):
        if reduction == "mean":
            g = g / total if total else xp.zeros_like(g)
        return (xp.where(picked, (-w * g).reshape(index.shape), 0),)

    saves = (input, target) if weight is None else (input, target, weight)
    return input._result(out, (input,), backward, "NllLossBackward0", saves)


def _class_targets(input, target, dim, ignore_index):
    """target's array, checked as torch checks class indices for input."""
    if target.dtype not in (np.int64, np.uint8):
        raise RuntimeError(
            "expected target dtype to be Long or Byte, but got "
            f"{scalar_name(target.dtype)}"
        )
    if dim and target.ndim and input.shape[0] != target.shape[0]:
        raise ValueError(
            f"Expected input batch_size ({input.shape[0]}) to match target "
            f"batch_size ({target.shape[0]})."
        )
    expected = input.shape[:dim] + input.shape[dim + 1 :]
    if target.shape != expected:
        raise RuntimeError(
            f"Expected target size {list(expected)}, got {list(target.shape)}"
        )
    t = target._data
    bad = (t != ignore_index) & ((t < 0) | (t >= input.shape[dim]))
    if bad.any():
        raise IndexError(f"Target {t[bad].flat[0]} is out of bounds.")
    return t


def cross_entropy(
    input,
    target,
    weight=None,
    *,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
):
    """-log_softmax(input) at the target class (classes along dim 1, or dim 0 for
    1-D input), i.e. nll_loss; or, for a target of input's shape, class
    probabilities: -sum(target * log_softmax(input)) over the classes. As in torch,
    label_smoothing mixes that much of the uniform distribution into the target."""
    _check_reduction(reduction)
    dim = 0 if input.ndim == 1 else 1
    logp, n = input.log_softmax(dim), input.shape[dim]
    along_dim = [-1 if d == dim else 1 for d in range(input.ndim)]
    w = 1 if weight is None else weight.reshape(along_dim)
    if target.shape == input.shape:
        return _soft_cross_entropy(
            logp, target, w, ignore_index, reduction, label_smoothing
        )
    nll = nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if not label_smoothing:
        return nll
    ignored = target == ignore_index
    smooth = -(logp * w).sum(dim).masked_fill(ignored, 0.0)
    if reduction == "mean":
        kept = target[~ignored]
        smooth = smooth.sum() / (kept.numel() if weight is None else weight[kept].sum())
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1 - label_smoothing) * nll + smooth * (label_smoothing / n)


def _soft_cross_entropy(logp, target, w, ignore_index, reduction, label_smoothing):
    """cross_entropy for class-probability targets; the mean is over the samples."""
    if target.dtype.kind != "f":
        raise RuntimeError(
            "Expected floating point type for target with class probabilities, got "
            f"{target.dtype}"
        )
    if ignore_index >= 0:
        raise RuntimeError("ignore_index is not supported for floating point target")
    dim = 0 if logp.ndim == 1 else 1
    n = logp.shape[dim]
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / n
    losses = -(logp * target * w).sum(dim)
    if reduction == "none":
        return losses
    return losses.sum() / (logp.numel() / n) if reduction == "mean" else losses.sum()


def __getattr__(name):
    """The convolutions, pools and interpolate (nn_conv.py, which builds on nn) and
    unfold, fold and the pixel shuffles (nn_fold.py): imported when first asked
    for."""
    from . import nn_conv

    if name in nn_conv.FUNCTIONS:
        return getattr(nn_conv, name)
    from . import nn_fold

    if name in nn_fold.FUNCTIONS:
        return getattr(nn_fold, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
