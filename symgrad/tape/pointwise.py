"""Elementwise functions: one table row per op, `rule(xp, g, v)` is its backward,
where v is the input x, or the result `out` for a row saving OUT (cheaper for exp,
sigmoid, tanh, tan), or absent for a row saving nothing.
"""

import math

import numpy as np

from . import dtypes
from .arithmetic import broadcast_shape, unbroadcast
from .namespaces import elementwise, erf_array, sigmoid_array, silent_methods
from .special import digamma_array, lgamma_array, polygamma_array

OUT = ("out",)  # `saves` of a rule that reads only the output (see Tensor._result)


def _unary(name, forward, rule, saves=True):
    """A Tensor method applying `forward`; rule(xp, g, *saved) gives d(input)."""
    name += "Backward0"

    def backward(xp, g, *saved):
        return (rule(xp, g, *saved),)

    def method(self):
        return self._result(forward(self._data), (self,), backward, name, saves)

    return method


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)  # erf'(x) = 2/sqrt(pi) exp(-x^2)


def _rounding(fn):
    """A rounding function that leaves integers as they are (NumPy would give
    floats); its gradient is 0 everywhere."""
    return lambda x: fn(x) if x.dtype.kind == "f" else x.copy()


def _zero(xp, g):
    return xp.zeros_like(g)


def _zeros(xp, g):
    return (xp.zeros_like(g),)


def _identity(xp, g):
    return (g,)


def _negative(x):
    if x.dtype == np.bool_:
        raise RuntimeError(
            "Negation, the `-` operator, on a bool tensor is not supported. If you are "
            "trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    return np.negative(x)


@silent_methods
class PointwiseOps:
    __neg__ = _unary("Neg", _negative, lambda xp, g: -g, saves=False)
    neg = __neg__

    def __pos__(self):
        """+x is x itself, as in torch."""
        return self

    exp = _unary("Exp", np.exp, lambda xp, g, out: g * out, OUT)
    log = _unary("Log", np.log, lambda xp, g, x: g / x)
    log1p = _unary("Log1P", np.log1p, lambda xp, g, x: g / (1 + x))
    log2 = _unary("Log2", np.log2, lambda xp, g, x: g / (x * math.log(2)))
    log10 = _unary("Log10", np.log10, lambda xp, g, x: g / (x * math.log(10)))
    expm1 = _unary("Expm1", np.expm1, lambda xp, g, out: g * (out + 1), OUT)
    sqrt = _unary("Sqrt", np.sqrt, lambda xp, g, out: g / (2 * out), OUT)
    rsqrt = _unary(
        "Rsqrt", lambda x: 1 / np.sqrt(x), lambda xp, g, out: -0.5 * g * out**3, OUT
    )
    reciprocal = _unary(
        "Reciprocal", lambda x: 1 / x, lambda xp, g, out: -g * out * out, OUT
    )
    sin = _unary("Sin", np.sin, lambda xp, g, x: g * xp.cos(x))
    cos = _unary("Cos", np.cos, lambda xp, g, x: -g * xp.sin(x))
    tan = _unary("Tan", np.tan, lambda xp, g, out: g * (1 + out * out), OUT)
    sinh = _unary("Sinh", np.sinh, lambda xp, g, x: g * xp.cosh(x))
    cosh = _unary("Cosh", np.cosh, lambda xp, g, x: g * xp.sinh(x))
    tanh = _unary("Tanh", np.tanh, lambda xp, g, out: g * (1 - out * out), OUT)
    asin = _unary("Asin", np.arcsin, lambda xp, g, x: g / xp.sqrt(1 - x * x))
    acos = _unary("Acos", np.arccos, lambda xp, g, x: -g / xp.sqrt(1 - x * x))
    atan = _unary("Atan", np.arctan, lambda xp, g, x: g / (1 + x * x))
    asinh = _unary("Asinh", np.arcsinh, lambda xp, g, x: g / xp.sqrt(x * x + 1))
    acosh = _unary("Acosh", np.arccosh, lambda xp, g, x: g / xp.sqrt(x * x - 1))
    atanh = _unary("Atanh", np.arctanh, lambda xp, g, x: g / (1 - x * x))
    erf = _unary(
        "Erf",
        erf_array,
        lambda xp, g, x: g * _TWO_OVER_SQRT_PI * xp.exp(-x * x),
    )
    erfc = _unary(
        "Erfc",
        elementwise(math.erfc),
        lambda xp, g, x: -g * _TWO_OVER_SQRT_PI * xp.exp(-x * x),
    )
    lgamma = _unary("Lgamma", lgamma_array, lambda xp, g, x: g * xp.digamma(x))
    digamma = _unary("Digamma", digamma_array, lambda xp, g, x: g * xp.polygamma(1, x))

    _logit = _unary(
        "Logit", lambda p: np.log(p / (1 - p)), lambda xp, g, p: g / (p * (1 - p))
    )

    def logit(self, eps=None):
        """log(p / (1 - p)), of p clamped to [eps, 1 - eps] when eps is given (the
        gradient 0 outside, as torch's)."""
        return (self if eps is None else self.clamp(eps, 1 - eps))._logit()

    def polygamma(self, n):
        """The n-th derivative of digamma (torch's argument order: torch.polygamma(n,
        x)); its gradient is polygamma(n + 1), so it has derivatives of every order."""
        if n < 0:
            raise RuntimeError("polygamma(n, x) does not support negative n.")

        def backward(xp, g, x):
            return (g * xp.polygamma(n + 1, x),)

        out = polygamma_array(n, self._data)
        return self._result(out, (self,), backward, "PolygammaBackward0")

    abs = __abs__ = _unary("Abs", np.abs, lambda xp, g, x: g * xp.sign(x))
    _sign = _unary("Sign", np.sign, _zero, False)

    def sign(self):
        """-1, 0 or 1; a bool tensor is its own sign, as in torch."""
        return self.clone() if self.dtype == np.bool_ else self._sign()

    floor = _unary("Floor", _rounding(np.floor), _zero, False)
    ceil = _unary("Ceil", _rounding(np.ceil), _zero, False)
    trunc = _unary("Trunc", _rounding(np.trunc), _zero, False)

    def round(self, *, decimals=0):
        """Half to even, at `decimals` places (NumPy scales by 10**decimals as
        torch does); its gradient is 0."""
        out = _rounding(lambda x: np.round(x, decimals))(self._data)
        name = "RoundBackward1" if decimals else "RoundBackward0"
        return self._result(out, (self,), _zeros, name, saves=False)

    sigmoid = _unary(
        "Sigmoid", sigmoid_array, lambda xp, g, out: g * out * (1 - out), OUT
    )
    # torch's rule, threshold_backward(g, out, 0), is g where out is not <= 0 (nan
    # included) and otherwise reads out with slope 0: under create_graph the
    # gradient depends on the recorded result, so it requires grad as torch's does
    relu = _unary(
        "Relu",
        lambda x: np.maximum(x, 0),
        lambda xp, g, out: xp.where(out <= 0, out - out, g),
        OUT,
    )

    def square(self):
        return self**2

    # tests of values, never differentiable
    def isnan(self):
        return self._result(np.isnan(self._data))

    def isinf(self):
        return self._result(np.isinf(self._data))

    def isfinite(self):
        return self._result(np.isfinite(self._data))

    def lerp(self, end, weight):
        """self + weight * (end - self)."""
        return self + weight * (end - self)

    def lerp_(self, end, weight):
        return self._inplace(lambda t: t.lerp(end, weight), end)

    def logaddexp(self, other):
        """log(exp(self) + exp(other)), as the max plus log1p of the smaller's share."""
        return self.maximum(other) + (-(self - other).abs()).exp().log1p()

    def remainder(self, other):
        return self % other

    def nan_to_num(self, nan=0.0, posinf=None, neginf=None):
        """nan, inf and -inf replaced (by default: 0 and the dtype's extremes); the
        gradient passes where the value was finite, as torch's."""
        x = self._data
        finite = np.isfinite(x)

        def backward(xp, g):
            return (xp.where(finite, g, 0),)

        out = np.nan_to_num(x, nan=nan, posinf=posinf, neginf=neginf)
        return self._result(out, (self,), backward, "NanToNumBackward0", saves=False)

    def clamp(self, min=None, max=None):
        """Clip to [min, max], numbers or tensors broadcast against self. As in
        torch, x's gradient passes where min <= x <= max, and a tensor bound's where
        the bound is the result (max wins where min > max)."""
        return self._clamp(min, max, ("ClampBackward1", "ClampBackward0"))

    clip = clamp

    def where(self, condition, other):
        """self where condition holds, else other (torch.where(condition, self,
        other))."""
        from .functions import where  # here: functions builds on Tensor, on us

        return where(condition, self, other)

    def clamp_min(self, min):
        return self._clamp(min, None, ("ClampMinBackward0", "ClampMinBackward1"))

    def clamp_max(self, max):
        return self._clamp(None, max, ("ClampMaxBackward0", "ClampMaxBackward1"))

    def _clamp(self, min, max, names):
        """clamp, its grad_fn named names[0] for number bounds, else names[1]."""
        if min is None and max is None:
            raise RuntimeError(
                "torch.clamp: At least one of 'min' or 'max' must not be None"
            )
        x = self._data
        lo, hi = getattr(min, "_data", min), getattr(max, "_data", max)
        out = np.clip(x, lo, hi)
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        inside = (x >= lo) & (x <= hi)
        picks = ((min, (x < lo) & (lo < hi)), (max, (x > hi) | (hi < lo)))
        bounds = [(b, mask) for b, mask in picks if isinstance(b, PointwiseOps)]

        def backward(xp, g, *saved):
            return (g * inside,) + tuple(
                unbroadcast(xp.where(mask, g, 0), b.shape) if b.requires_grad else None
                for b, mask in bounds
            )

        inputs = (self, *(b for b, _ in bounds))
        return self._result(out, inputs, backward, names[bool(bounds)])

    def masked_fill(self, mask, value):
        """self with `value` (a number or 0-d tensor) where the bool `mask` is True;
        self and mask broadcast together."""
        if mask.dtype != np.bool_:
            raise RuntimeError(
                "masked_fill_ only supports boolean masks, but got mask with dtype "
                f"{mask.dtype}"
            )
        value = self._lift(value)
        if value.ndim:
            raise RuntimeError(
                "masked_fill_ only supports a 0-dimensional value tensor, but got "
                f"tensor with {value.ndim} dimension(s)."
            )
        broadcast_shape(self.shape, mask.shape)
        where = mask._data
        out = np.where(where, value._data.astype(self.dtype), self._data)

        def backward(xp, g, mask):
            return unbroadcast(xp.where(where, 0, g), self.shape), (
                xp.where(where, g, 0).sum() if value.requires_grad else None
            )

        return self._result(
            out, (self, value), backward, "MaskedFillBackward0", (mask,)
        )

    def clone(self):
        return self._copy("CloneBackward0")

    def _copy(self, name):
        return self._result(self._data.copy(), (self,), _identity, name, saves=False)

    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False):
        """to(dtype), to(device) or to(device, dtype): cast to `dtype`, the gradient
        cast back; this tensor itself if nothing changes, unless copy=True. The CPU is
        the only device, so a device string changes nothing (nor does non_blocking);
        a CUDA one raises, as in torch without CUDA."""
        for d in (*args, device):
            dtypes.check_device(d)
        dtype = next((a for a in args if not isinstance(a, str | dtypes.device)), dtype)
        if isinstance(dtype, PointwiseOps):  # to(other): other's dtype
            dtype = dtype.dtype
        if not copy and (dtype is None or np.dtype(dtype) == self.dtype):
            return self
        x = self._data
        out = x.astype(self.dtype if dtype is None else dtype)

        def backward(xp, g):
            return (xp.cast(g, x.dtype),)

        return self._result(out, (self,), backward, "ToCopyBackward0", saves=False)

    def cpu(self):
        """This tensor: the CPU is the only device."""
        return self

    def cuda(self, device=None, non_blocking=False):
        """Raises, as torch without CUDA does."""
        if device is not None:
            raise RuntimeError(
                "Cannot access accelerator device when none is available."
            )
        dtypes.check_device("cuda")

    is_cuda = False

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    def long(self):
        return self.to(np.int64)

    def int(self):
        return self.to(np.int32)

    def half(self):
        return self.to(np.float16)

    def bool(self):
        return self.to(np.bool_)

    def type(self, dtype=None):
        """Without a dtype, torch's name of this tensor's type ('torch.DoubleTensor');
        with one, a cast."""
        if dtype is None:
            return f"torch.{dtypes.scalar_name(self.dtype)}Tensor"
        return self.to(dtype)

    def type_as(self, other):
        return self.to(other.dtype)
