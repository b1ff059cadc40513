"""symgrad.tape: a small dynamic-tape reverse-mode autograd engine on NumPy.

It uses PyTorch's names and semantics so that PyTorch code runs with the import changed
(`from symgrad import tape as torch`), and it computes every gradient with its own
per-op backward functions, never with the symbolic compiler, so that agreement between
the two means something. Floats default to float64 (torch: float32).
"""

from . import (
    accelerator,
    amp,
    autograd,
    cuda,
    distributions,
    linalg,
    nn,
    optim,
    testing,
    utils,
)
from .amp import autocast
from .autograd import (
    enable_grad,
    inference_mode,
    is_anomaly_check_nan_enabled,
    is_anomaly_enabled,
    is_grad_enabled,
    is_inference_mode_enabled,
    no_grad,
    set_grad_enabled,
)
from .creation import (
    Generator,
    arange,
    as_tensor,
    bernoulli,
    default_generator,
    empty,
    empty_like,
    eye,
    from_numpy,
    full,
    full_like,
    get_rng_state,
    initial_seed,
    linspace,
    manual_seed,
    multinomial,
    normal,
    ones,
    ones_like,
    rand,
    rand_like,
    randint,
    randn,
    randn_like,
    randperm,
    seed,
    set_rng_state,
    tensor,
    zeros,
    zeros_like,
)
from .dtypes import (
    bool,
    device,
    double,
    dtype,
    finfo,
    float,
    float16,
    float32,
    float64,
    get_default_dtype,
    half,
    iinfo,
    int,
    int8,
    int16,
    int32,
    int64,
    long,
    set_default_dtype,
    short,
    uint8,
)
from .functional import cosine_similarity, pairwise_distance
from .functions import (
    addmm,
    addmv,
    baddbmm,
    broadcast_tensors,
    bucketize,
    cat,
    cdist,
    concat,
    einsum,
    hstack,
    inner,
    meshgrid,
    searchsorted,
    stack,
    std_mean,
    tensordot,
    tril_indices,
    triu_indices,
    var_mean,
    vstack,
    where,
)
from .linalg import det, logdet, slogdet
from .linalg import inv as inverse
from .out import with_out
from .printing import set_printoptions
from .serialization import load, save
from .shapes import Size
from .tensor import IN_PLACE, Tensor

__all__ = ["Tensor", "tensor", "from_numpy", "no_grad", "is_grad_enabled", "nn"]
__all__ += ["optim", "cat", "stack", "where", "manual_seed", "default_generator"]
__all__ += ["zeros", "ones", "zeros_like", "ones_like", "full", "empty", "arange"]
__all__ += ["linspace", "eye", "full_like", "enable_grad", "set_grad_enabled"]
__all__ += ["rand", "randn", "randint", "randperm", "rand_like", "randn_like"]
__all__ += ["bernoulli", "multinomial"]
__all__ += ["empty_like", "as_tensor", "device", "dtype"]
__all__ += ["float32", "float", "float64", "double", "int32", "int64", "long", "bool"]
__all__ += ["float16", "half", "uint8", "int8", "int16", "short", "int"]
__all__ += ["get_default_dtype", "set_default_dtype", "finfo", "iinfo", "Size"]
__all__ += ["inference_mode", "is_inference_mode_enabled", "is_tensor"]
__all__ += ["is_anomaly_enabled", "is_anomaly_check_nan_enabled"]
__all__ += ["set_printoptions", "distributions"]
__all__ += (  # torch-level functions, defined below
    "neg exp log sqrt sin cos tan tanh sinh cosh asin acos atan abs sign sigmoid relu "
    "clamp softmax log_softmax logsumexp sum mean amax max argmax matmul gather clone "
    "reshape flatten squeeze unsqueeze transpose permute pow amin min argmin maximum "
    "minimum t asinh acosh atanh atan2 erf erfc var std prod cumsum clamp_min "
    "clamp_max masked_fill mm split chunk unbind flip add sub mul div multiply "
    "subtract divide true_divide bmm log1p expm1 square rsqrt reciprocal floor ceil "
    "round trunc isnan isinf isfinite cumprod sort argsort topk norm any all tril "
    "triu index_select scatter_add index_add masked_select nonzero allclose equal "
    "numel eq ne gt lt ge le logical_and logical_or logical_xor logical_not dot "
    "outer clip roll diag trace swapaxes movedim narrow scatter is_floating_point "
    "lgamma digamma polygamma"
).split()
__all__ += ["autograd", "linalg", "einsum", "addmm", "save", "load", "cuda", "utils"]
__all__ += ["testing", "accelerator"]
__all__ += ["amp", "autocast"]
__all__ += ["isclose", "meshgrid", "repeat_interleave", "unique", "bincount"]
__all__ += ["det", "logdet", "slogdet", "inverse", "std_mean", "var_mean", "cdist"]
__all__ += ["nan_to_num", "logcumsumexp", "rot90", "diagonal", "median", "kthvalue"]
__all__ += ["lerp", "logaddexp", "remainder", "take_along_dim", "hstack"]
__all__ += ["log2", "log10", "broadcast_to", "addcmul", "addcdiv", "fmod"]
__all__ += ["tensor_split", "unflatten", "index_fill", "searchsorted", "bucketize"]
__all__ += ["normal", "Generator", "seed", "initial_seed"]
__all__ += ["get_rng_state", "set_rng_state"]
__all__ += ["diff", "logit", "hypot", "xlogy", "diag_embed", "select", "fliplr"]
__all__ += ["flipud", "cosine_similarity", "pairwise_distance"]
__all__ += ["addmv", "baddbmm", "broadcast_tensors", "concat", "inner", "tensordot"]
__all__ += ["tril_indices", "triu_indices", "vstack", "mode", "nanmean", "nansum"]
__all__ += ["dist", "cummax", "cummin", "quantile", "count_nonzero", "aminmax", "mv"]
__all__ += ["tile"]


# torch.f(x, ...) is x.f(...): the unbound methods take the tensor first, as torch does.
neg, exp, log, sqrt, sin = Tensor.neg, Tensor.exp, Tensor.log, Tensor.sqrt, Tensor.sin
cos, tan, tanh, sinh = Tensor.cos, Tensor.tan, Tensor.tanh, Tensor.sinh
cosh, asin, acos, atan = Tensor.cosh, Tensor.asin, Tensor.acos, Tensor.atan
abs, sign, sigmoid, relu = Tensor.abs, Tensor.sign, Tensor.sigmoid, Tensor.relu
clamp, softmax, log_softmax = Tensor.clamp, Tensor.softmax, Tensor.log_softmax
logsumexp, sum, mean, amax = Tensor.logsumexp, Tensor.sum, Tensor.mean, Tensor.amax
max, argmax, matmul, gather = Tensor.max, Tensor.argmax, Tensor.matmul, Tensor.gather
clone, reshape, flatten = Tensor.clone, Tensor.reshape, Tensor.flatten
squeeze, unsqueeze, transpose = Tensor.squeeze, Tensor.unsqueeze, Tensor.transpose
permute, pow, t = Tensor.permute, Tensor.pow, Tensor.t
amin, min, argmin = Tensor.amin, Tensor.min, Tensor.argmin
maximum, minimum = Tensor.maximum, Tensor.minimum
asinh, acosh, atanh, atan2 = Tensor.asinh, Tensor.acosh, Tensor.atanh, Tensor.atan2
erf, erfc = Tensor.erf, Tensor.erfc
lgamma, digamma = Tensor.lgamma, Tensor.digamma
var, std, prod, cumsum = Tensor.var, Tensor.std, Tensor.prod, Tensor.cumsum
clamp_min, clamp_max, masked_fill = (
    Tensor.clamp_min,
    Tensor.clamp_max,
    Tensor.masked_fill,
)
mm, split, chunk, unbind, flip = (
    Tensor.mm,
    Tensor.split,
    Tensor.chunk,
    Tensor.unbind,
    Tensor.flip,
)
add, sub, mul, div = Tensor.add, Tensor.sub, Tensor.mul, Tensor.div
multiply, subtract, divide = Tensor.multiply, Tensor.subtract, Tensor.divide
true_divide, bmm = Tensor.true_divide, Tensor.bmm
log1p, expm1, square = Tensor.log1p, Tensor.expm1, Tensor.square
rsqrt, reciprocal = Tensor.rsqrt, Tensor.reciprocal
floor, ceil, round, trunc = Tensor.floor, Tensor.ceil, Tensor.round, Tensor.trunc
isnan, isinf, isfinite = Tensor.isnan, Tensor.isinf, Tensor.isfinite
cumprod, sort, argsort, topk = Tensor.cumprod, Tensor.sort, Tensor.argsort, Tensor.topk
norm, any, all = Tensor.norm, Tensor.any, Tensor.all
tril, triu, index_select = Tensor.tril, Tensor.triu, Tensor.index_select
scatter_add, index_add = Tensor.scatter_add, Tensor.index_add
masked_select, nonzero = Tensor.masked_select, Tensor.nonzero
allclose, equal, numel = Tensor.allclose, Tensor.equal, Tensor.numel
isclose, repeat_interleave = Tensor.isclose, Tensor.repeat_interleave
unique, bincount = Tensor.unique, Tensor.bincount
eq, ne, gt, lt, ge, le = (
    Tensor.eq,
    Tensor.ne,
    Tensor.gt,
    Tensor.lt,
    Tensor.ge,
    Tensor.le,
)
logical_and, logical_or = Tensor.logical_and, Tensor.logical_or
logical_xor, logical_not = Tensor.logical_xor, Tensor.logical_not
dot, outer, clip, roll = Tensor.dot, Tensor.outer, Tensor.clip, Tensor.roll
diag, trace, swapaxes, movedim = (
    Tensor.diag,
    Tensor.trace,
    Tensor.swapaxes,
    Tensor.movedim,
)
median, kthvalue = Tensor.median, Tensor.kthvalue
lerp, logaddexp, remainder = Tensor.lerp, Tensor.logaddexp, Tensor.remainder
take_along_dim = Tensor.take_along_dim
log2, log10, broadcast_to = Tensor.log2, Tensor.log10, Tensor.broadcast_to
addcmul, addcdiv, fmod = Tensor.addcmul, Tensor.addcdiv, Tensor.fmod
tensor_split, unflatten = Tensor.tensor_split, Tensor.unflatten
index_fill = Tensor.index_fill
nan_to_num, logcumsumexp, rot90, diagonal = (
    Tensor.nan_to_num,
    Tensor.logcumsumexp,
    Tensor.rot90,
    Tensor.diagonal,
)
narrow, scatter, is_floating_point = (
    Tensor.narrow,
    Tensor.scatter,
    Tensor.is_floating_point,
)
diff, logit, hypot = Tensor.diff, Tensor.logit, Tensor.hypot
mode, nanmean, nansum = Tensor.mode, Tensor.nanmean, Tensor.nansum
dist, cummax, cummin, quantile = (
    Tensor.dist,
    Tensor.cummax,
    Tensor.cummin,
    Tensor.quantile,
)
count_nonzero, aminmax = Tensor.count_nonzero, Tensor.aminmax
mv, tile = Tensor.mv, Tensor.tile
diag_embed, select, fliplr, flipud = (
    Tensor.diag_embed,
    Tensor.select,
    Tensor.fliplr,
    Tensor.flipud,
)


# torch.f_(x, ...): the in-place methods as functions
for _name in (*IN_PLACE, "zero", "fill", "detach"):
    globals()[f"{_name}_"] = getattr(Tensor, f"{_name}_")
    __all__.append(f"{_name}_")


def _function(method):
    """torch.f from Tensor.f: the tensor first, positionally or as torch's `input=`
    (the method's own name for it is `self`)."""

    def function(*args, **kwargs):
        if "input" in kwargs:
            args = (kwargs.pop("input"), *args)
        return method(*args, **kwargs)

    function.__name__, function.__qualname__ = method.__name__, method.__qualname__
    function.__doc__ = method.__doc__
    return function


for _name, _value in list(globals().items()):
    if callable(_value) and getattr(Tensor, _name, None) is _value:
        globals()[_name] = _function(_value)

# torch.f(..., out=t) for the elementwise, matrix and joining functions
for _name in (
    "add sub mul div multiply subtract divide true_divide pow neg exp log sqrt sin "
    "cos tanh sigmoid abs clamp maximum minimum matmul mm bmm cat concat stack"
).split():
    globals()[_name] = with_out(globals()[_name])
del _name, _value


def is_tensor(obj):
    return isinstance(obj, Tensor)


def xlogy(input, other):
    """torch.xlogy: input * log(other), where input may be a number."""
    return (input if is_tensor(input) else other._lift(input)).xlogy(other)


def polygamma(n, input):
    """torch.polygamma(n, input): the order comes first."""
    return input.polygamma(n)
