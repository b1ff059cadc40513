"""Elementwise functions: one table row per op, `rule(g, x, out)` is its backward.

Rules use the forward result `out` where that is cheaper (exp, sigmoid, tanh, tan).
"""

import math

import numpy as np

from .arithmetic import broadcast_shape, unbroadcast
from .autograd import underflow_ok

OUT = ("out",)  # `saves` of a rule that reads only the output (see Tensor._result)


def _unary(name, forward, rule, saves=True):
    """A Tensor method applying `forward`; rule(g, x, out) gives d(input)."""
    name += "Backward0"

    def method(self):
        x = self._data
        out = forward(x)
        return self._result(out, (self,), lambda g: (rule(g, x, out),), name, saves)

    return method


@underflow_ok
def sigmoid_array(x):
    """1/(1+e^-x) for x >= 0, e^x/(1+e^x) below: never overflows, full precision."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _elementwise(fn):
    """A `math` function applied element by element (NumPy has no erf), at Python
    speed; float inputs keep their dtype, as in torch."""
    vectorized = np.vectorize(fn, otypes=[np.float64])

    def forward(x):
        out = vectorized(x)
        return out.astype(x.dtype, copy=False) if x.dtype.kind == "f" else out

    return forward


_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)  # erf'(x) = 2/sqrt(pi) exp(-x^2)


def _rounding(fn):
    """A rounding function that leaves integers as they are (NumPy would give
    floats); its gradient is 0 everywhere."""
    return lambda x: fn(x) if x.dtype.kind == "f" else x.copy()


def _zero(g, x, out):
    return np.zeros_like(g)


def _negative(x):
    if x.dtype == np.bool_:
        raise RuntimeError(
            "Negation, the `-` operator, on a bool tensor is not supported. If you are "
            "trying to invert a mask, use the `~` or `logical_not()` operator instead."
        )
    return np.negative(x)


class PointwiseOps:
    __neg__ = _unary("Neg", _negative, lambda g, x, out: -g, saves=False)
    neg = __neg__
    exp = _unary("Exp", np.exp, lambda g, x, out: g * out, OUT)
    log = _unary("Log", np.log, lambda g, x, out: g / x)
    log1p = _unary("Log1P", np.log1p, lambda g, x, out: g / (1 + x))
    expm1 = _unary("Expm1", np.expm1, lambda g, x, out: g * (out + 1), OUT)
    sqrt = _unary("Sqrt", np.sqrt, lambda g, x, out: g / (2 * out), OUT)
    rsqrt = _unary(
        "Rsqrt", lambda x: 1 / np.sqrt(x), lambda g, x, out: -0.5 * g * out**3, OUT
    )
    reciprocal = _unary(
        "Reciprocal", lambda x: 1 / x, lambda g, x, out: -g * out * out, OUT
    )
    sin = _unary("Sin", np.sin, lambda g, x, out: g * np.cos(x))
    cos = _unary("Cos", np.cos, lambda g, x, out: -g * np.sin(x))
    tan = _unary("Tan", np.tan, lambda g, x, out: g * (1 + out * out), OUT)
    sinh = _unary("Sinh", np.sinh, lambda g, x, out: g * np.cosh(x))
    cosh = _unary("Cosh", np.cosh, lambda g, x, out: g * np.sinh(x))
    tanh = _unary("Tanh", np.tanh, lambda g, x, out: g * (1 - out * out), OUT)
    asin = _unary("Asin", np.arcsin, lambda g, x, out: g / np.sqrt(1 - x * x))
    acos = _unary("Acos", np.arccos, lambda g, x, out: -g / np.sqrt(1 - x * x))
    atan = _unary("Atan", np.arctan, lambda g, x, out: g / (1 + x * x))
    asinh = _unary("Asinh", np.arcsinh, lambda g, x, out: g / np.sqrt(x * x + 1))
    acosh = _unary("Acosh", np.arccosh, lambda g, x, out: g / np.sqrt(x * x - 1))
    atanh = _unary("Atanh", np.arctanh, lambda g, x, out: g / (1 - x * x))
    erf = _unary(
        "Erf",
        _elementwise(math.erf),
        lambda g, x, out: g * _TWO_OVER_SQRT_PI * np.exp(-x * x),
    )
    erfc = _unary(
        "Erfc",
        _elementwise(math.erfc),
        lambda g, x, out: -g * _TWO_OVER_SQRT_PI * np.exp(-x * x),
    )
    abs = _unary("Abs", np.abs, lambda g, x, out: g * np.sign(x))
    sign = _unary("Sign", np.sign, _zero, False)
    floor = _unary("Floor", _rounding(np.floor), _zero, False)
    ceil = _unary("Ceil", _rounding(np.ceil), _zero, False)
    round = _unary("Round", _rounding(np.round), _zero, False)  # half to even
    trunc = _unary("Trunc", _rounding(np.trunc), _zero, False)
    sigmoid = _unary(
        "Sigmoid", sigmoid_array, lambda g, x, out: g * out * (1 - out), OUT
    )
    relu = _unary(
        "Relu", lambda x: np.maximum(x, 0), lambda g, x, out: g * (out > 0), OUT
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

    def clamp(self, min=None, max=None):
        """Clip to [min, max], numbers or tensors broadcast against self. As in
        torch, x's gradient passes where min <= x <= max, and a tensor bound's where
        the bound is the result (max wins where min > max)."""
        return self._clamp(min, max, ("ClampBackward1", "ClampBackward0"))

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

        def backward(g):
            return (g * inside,) + tuple(
                unbroadcast(np.where(mask, g, 0), b.shape) if b.requires_grad else None
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

        def backward(g):
            return unbroadcast(np.where(where, 0, g), self.shape), (
                np.where(where, g, 0).sum() if value.requires_grad else None
            )

        return self._result(
            out, (self, value), backward, "MaskedFillBackward0", (mask,)
        )

    def clone(self):
        out = self._data.copy()
        return self._result(out, (self,), lambda g: (g,), "CloneBackward0", saves=False)

    def to(self, *args, dtype=None, device=None):
        """to(dtype), to(device) or to(device, dtype): cast to `dtype`, the gradient
        cast back. The CPU is the only device, so a device string changes nothing."""
        dtype = next((a for a in args if not isinstance(a, str)), dtype)
        if dtype is None or np.dtype(dtype) == self.dtype:
            return self
        x = self._data
        out = x.astype(dtype)

        def backward(g):
            return (g.astype(x.dtype),)

        return self._result(out, (self,), backward, "ToCopyBackward0", saves=False)

    def cpu(self):
        """This tensor: the CPU is the only device."""
        return self

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

    def type(self, dtype):
        return self.to(dtype)

    def type_as(self, other):
        return self.to(other.dtype)
