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
__all__ += ["bernoulli", "multinomial", "empty_like", "as_tensor", "device"]
__all__ += ["dtype", "float32", "float", "float64", "double", "int32", "int64"]
__all__ += ["long", "bool", "float16", "half", "uint8", "int8", "int16", "short"]
__all__ += ["int", "get_default_dtype", "set_default_dtype", "finfo", "iinfo"]
__all__ += ["Size", "inference_mode", "is_inference_mode_enabled", "is_tensor"]
__all__ += ["is_anomaly_enabled", "is_anomaly_check_nan_enabled"]
__all__ += ["set_printoptions", "distributions", "polygamma", "autograd", "linalg"]
__all__ += ["einsum", "addmm", "save", "load", "cuda", "utils", "testing"]
__all__ += ["accelerator", "amp", "autocast", "meshgrid", "det", "logdet"]
__all__ += ["slogdet", "inverse", "std_mean", "var_mean", "cdist", "hstack"]
__all__ += ["searchsorted", "bucketize", "normal", "Generator", "seed"]
__all__ += ["initial_seed", "get_rng_state", "set_rng_state", "xlogy"]
__all__ += ["cosine_similarity", "pairwise_distance", "addmv", "baddbmm"]
__all__ += ["broadcast_tensors", "concat", "inner", "tensordot", "tril_indices"]
__all__ += ["triu_indices", "vstack"]


# torch.f(x, ...) is x.f(...): the unbound methods take the tensor first, as torch does.
_METHODS = (
    "neg exp log sqrt sin cos tan tanh sinh cosh asin acos atan abs sign sigmoid relu "
    "clamp softmax log_softmax logsumexp sum mean amax max argmax matmul gather clone "
    "reshape flatten squeeze unsqueeze transpose permute pow t amin min argmin maximum "
    "minimum asinh acosh atanh atan2 erf erfc lgamma digamma var std prod cumsum "
    "clamp_min clamp_max masked_fill mm split chunk unbind flip add sub mul div multiply "
    "subtract divide true_divide bmm log1p expm1 square rsqrt reciprocal floor ceil "
    "round trunc isnan isinf isfinite cumprod sort argsort topk norm any all tril triu "
    "index_select scatter_add index_add masked_select nonzero allclose equal numel "
    "isclose repeat_interleave unique bincount eq ne gt lt ge le logical_and logical_or "
    "logical_xor logical_not dot outer clip roll diag trace swapaxes movedim median "
    "kthvalue lerp logaddexp remainder take_along_dim log2 log10 broadcast_to addcmul "
    "addcdiv fmod tensor_split unflatten index_fill nan_to_num logcumsumexp rot90 "
    "diagonal narrow scatter is_floating_point diff logit hypot mode nanmean nansum dist "
    "cummax cummin quantile count_nonzero aminmax mv tile diag_embed select fliplr "
    "flipud scatter_reduce index_put"
).split()
for _name in _METHODS:
    globals()[_name] = getattr(Tensor, _name)
__all__ += _METHODS


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
