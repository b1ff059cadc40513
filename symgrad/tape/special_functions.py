"""torch.special on the tape: `tape.special` (the module of the gamma-family helpers,
special.py) hands every public name it lacks to this module.

Most functions are the Tensor methods under torch.special's names. The new
differentiable ops (erfcx, log_ndtr, ndtri, erfinv, exp2, entr, sinc, i0, i0e, i1,
i1e, xlog1py) are made here in the way of pointwise.py's table: a forward on arrays
(computed in float64, the result of the input's float dtype, float64 for integers)
and a backward rule `rule(xp, g, *saved)` written with the operations that arrays and
Tensors share, so that under create_graph=True it is recorded and gradients of every
order exist (a rule needing one of these ops calls it through `_call`).
"""

import math

import numpy as np

from .arithmetic import _binary
from .out import with_out
from .pointwise import _rounding, _zeros
from .special import _erfc_ratio, lgamma_array
from .tensor import Tensor

_SQRT1_2 = math.sqrt(0.5)
_SQRT_2PI = math.sqrt(2 * math.pi)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)

_erf, _erfc = (np.vectorize(f, otypes=[np.float64]) for f in (math.erf, math.erfc))


# ---- the array functions (float64 in, float64 out) -------------------------------


def _dekker_square(x):
    """x*x as square + error exactly (Dekker's split), for exp(x*x) to full precision."""
    split = 134217729.0 * x
    high = split - (split - x)
    low = x - high
    square = x * x
    return square, ((high * high - square) + 2.0 * high * low) + low * low


def _erfcx(x):
    """exp(x^2) erfc(x) without overflow or underflow: for x >= 0, 1 / _erfc_ratio
    (its continued fraction from x = 25); below 0, 2 exp(x^2) - erfcx(-x), exp(x^2)
    taken with x^2 exact (inf past x = -26.6, as torch)."""
    a = np.abs(x)
    positive = 1.0 / _erfc_ratio(a, _erfc(np.minimum(a, 26.0)))
    square, error = _dekker_square(np.minimum(a, 27.0))
    negative = 2.0 * (np.exp(square) * (1.0 + error)) - positive
    return np.where(x < 0, negative, positive)


def _log_ndtr(x):
    """log(ndtr(x)), torch's way: log(erfcx(-t)/2) - t^2 for x < -1 (t = x/sqrt(2)),
    so finite far into the left tail, else log1p(-erfc(t)/2)."""
    t = x * _SQRT1_2
    left = np.log(_erfcx(-t) / 2) - t * t
    return np.where(x < -1, left, np.log1p(-_erfc(t) / 2))


def _inv_mills(x):
    """ndtr'(x) / ndtr(x) = exp(-x^2/2) / sqrt(2 pi) / ndtr(x), log_ndtr's gradient:
    sqrt(2/pi) / erfcx(-x/sqrt(2)) below 0, where both factors would underflow."""
    t = x * _SQRT1_2
    left = math.sqrt(2 / math.pi) / _erfcx(-t)
    right = np.exp(-t * t) / _SQRT_2PI / (0.5 * _erfc(-t))
    return np.where(x < 0, left, right)


# Acklam's rational approximation of ndtri (relative error 1.15e-9), then refined
_A = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690)
_A += (-30.66479806614716, 2.506628277459239)
_B = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972)
_B += (-13.28068155288572,)
_C = (-7.784894002430293e-03, -0.3223964580411365, -2.400758277161838)
_C += (-2.549732539343734, 4.374664141464968, 2.938163982698783)
_D = (7.784695709041462e-03, 0.3224671290700398, 2.445134137142996, 3.754408661907416)


def _poly(coefficients, x):
    out = 0.0
    for c in coefficients:
        out = out * x + c
    return out


def _acklam(p):
    """ndtri(p) for 0 < p < 1 to about 1e-9 (Acklam's approximation)."""
    low = np.minimum(p, 1 - p)
    q = np.sqrt(-2 * np.log(low))
    tail = _poly(_C, q) / (_poly(_D, q) * q + 1)
    tail = np.where(p < 0.5, tail, -tail)
    r = (p - 0.5) ** 2
    central = (p - 0.5) * _poly(_A, r) / (_poly(_B, r) * r + 1)
    return np.where(low < 0.02425, tail, central)


def _ndtri(p):
    """The x with ndtr(x) = p: Acklam's approximation, then two Halley steps on
    ndtr(x) - p (for p > 1/2 on the upper tail, 1 - p exact there); -inf at 0, inf
    at 1, nan outside [0, 1], as torch."""
    inside = (p > 0) & (p < 1)
    q = np.where(inside, p, 0.5)
    upper = q > 0.5
    target = np.where(upper, 1 - q, q)  # the tail probability, exact
    x = np.where(upper, -_acklam(q), _acklam(q))  # the lower-tail point
    for _ in range(2):
        e = 0.5 * _erfc(-x * _SQRT1_2) - target
        u = e * _SQRT_2PI * np.exp(x * x / 2)
        x = x - u / (1 + x * u / 2)
    x = np.where(upper, -x, x)
    edges = np.where(p == 0, -np.inf, np.where(p == 1, np.inf, np.nan))
    return np.where(inside, x, edges)


def _erfinv(y):
    """The x with erf(x) = y: a start from Acklam's ndtri, then Newton on
    erf(x) - |y| (on erfc(x) - (1 - |y|) above |y| = 1/2, where 1 - |y| is exact);
    +-inf at +-1, nan outside [-1, 1], as torch."""
    a = np.abs(y)
    inside = a < 1
    a = np.where(inside, a, 0.5)
    x = -_acklam((1 - a) / 2) * _SQRT1_2
    x = np.where(a < 1e-8, a * math.sqrt(math.pi) / 2, x)  # (1 - a)/2 loses a
    upper = a > 0.5
    for _ in range(3):
        slope = _TWO_OVER_SQRT_PI * np.exp(-x * x)
        residual = np.where(upper, (1 - a) - _erfc(x), _erf(x) - a)
        x = x - residual / slope
    x = np.where(inside, x, np.where(np.abs(y) == 1, np.inf, np.nan))
    return np.copysign(x, y)


def _bessel_series(x, nu):
    """I_nu(x) for nu = 0, 1 by the power series (all terms positive: no
    cancellation), 80 terms: 1e-17 up to |x| = 30."""
    q = x * x / 4
    term = np.ones_like(x) if nu == 0 else x / 2
    total = term
    for k in range(1, 80):
        term = term * q / (k * (k + nu))
        total = total + term
    return total


def _bessel_scaled_far(x, nu):
    """exp(-|x|) I_nu(|x|) for |x| >= 30 by the asymptotic series (25 terms: 1e-18)."""
    a = np.maximum(np.abs(x), 30.0)
    term = 1.0 / np.sqrt(2 * math.pi * a)
    total = term
    for k in range(1, 25):
        term = term * -(4 * nu * nu - (2 * k - 1) ** 2) / (8 * k * a)
        total = total + term
    return total


def _i0e(x):
    near = _bessel_series(np.minimum(np.abs(x), 30.0), 0) * np.exp(-np.abs(x))
    return np.where(np.abs(x) <= 30, near, _bessel_scaled_far(x, 0))


def _i0(x):
    a = np.abs(x)
    far = _bessel_scaled_far(x, 0) * np.exp(a)
    return np.where(a <= 30, _bessel_series(np.minimum(a, 30.0), 0), far)


def _i1e(x):
    a = np.abs(x)
    near = _bessel_series(np.minimum(a, 30.0), 1) * np.exp(-a)
    return np.copysign(np.where(a <= 30, near, _bessel_scaled_far(x, 1)), x)


def _i1(x):
    a = np.abs(x)
    far = _bessel_scaled_far(x, 1) * np.exp(a)
    near = _bessel_series(np.minimum(a, 30.0), 1)
    return np.copysign(np.where(a <= 30, near, far), x)


def _entr(x):
    return np.where(x > 0, -x * np.log(x), np.where(x == 0, 0.0, -np.inf * (x < 0)))


_ARRAYS = {
    "ndtr": lambda x: 0.5 * _erfc(-x * _SQRT1_2),
    "erfcx": _erfcx,
    "log_ndtr": _log_ndtr,
    "_inv_mills": _inv_mills,
    "ndtri": _ndtri,
    "erfinv": _erfinv,
    "i0": _i0,
    "i0e": _i0e,
    "i1": _i1,
    "i1e": _i1e,
    "entr": _entr,
    "exp2": np.exp2,
    "sinc": np.sinc,
}


def _float_array(name, x):
    """_ARRAYS[name] of x computed in float64, of x's float dtype (float64 for
    integers and bools, the tape's default)."""
    with np.errstate(all="ignore"):
        out = _ARRAYS[name](np.asarray(x, dtype=np.float64))
    return np.asarray(out, x.dtype if x.dtype.kind == "f" else np.float64)


def _call(xp, name, x):
    """The op `name` of x in a backward rule: recorded on Tensors (create_graph),
    else on arrays."""
    return _OPS[name](x) if xp.records else _float_array(name, x)


# ---- the differentiable ops ---------------------------------------------------------


def _type_check(fn, name, position=1):
    """fn raising torch's TypeError when its tensor argument is not a Tensor."""

    def checked(input, *args, **kwargs):
        if not isinstance(input, Tensor):
            raise TypeError(
                f"special_{name}(): argument 'input' (position {position}) must be "
                f"Tensor, not {type(input).__name__}"
            )
        return fn(input, *args, **kwargs)

    checked.__name__ = checked.__qualname__ = name
    checked.__doc__ = fn.__doc__
    return checked


def _unary(name, grad_name, rule, saves=("x",)):
    """The op `name` (forward _ARRAYS[name]); rule(xp, g, *saved) is d(input), saved
    the input ("x") and/or the output ("out") as `saves` says."""

    def backward(xp, g, *saved):
        return (rule(xp, g, *saved),)

    def op(input):
        out = _float_array(name, input._data)
        kept = tuple(input if s == "x" else "out" for s in saves)
        return input._result(out, (input,), backward, grad_name, kept)

    return op


def _safe(xp, x):
    """x with its zeros replaced by ones: a denominator whose value at 0 is unused
    (so that no nan reaches a second derivative through where)."""
    return xp.where(x == 0, 1.0, x)


def _i1_rule(xp, g, x, out):  # I1' = I0 - I1/x, 1/2 at 0
    return g * xp.where(x == 0, 0.5, _call(xp, "i0", x) - out / _safe(xp, x))


def _i1e_rule(xp, g, x, out):  # i1e' = i0e - i1e (sign(x) + 1/x), 1/2 at 0
    inner = _call(xp, "i0e", x) - out * (xp.sign(x) + 1 / _safe(xp, x))
    return g * xp.where(x == 0, 0.5, inner)


def _sinc_rule(xp, g, x):  # (pi x cos(pi x) - sin(pi x)) / (pi x^2), 0 at 0
    y = math.pi * _safe(xp, x)
    return g * xp.where(x == 0, 0.0, (y * xp.cos(y) - xp.sin(y)) / (y * _safe(xp, x)))


_OPS = {
    "erfcx": _unary(
        "erfcx",
        "SpecialErfcxBackward0",
        lambda xp, g, x, out: g * (2 * x * out - _TWO_OVER_SQRT_PI),
        ("x", "out"),
    ),
    "log_ndtr": _unary(
        "log_ndtr",
        "SpecialLogNdtrBackward0",
        lambda xp, g, x: g * _call(xp, "_inv_mills", x),
    ),
    # h = ndtr'/ndtr has h' = -h (x + h)
    "_inv_mills": _unary(
        "_inv_mills",
        "InvMillsBackward0",
        lambda xp, g, x, out: -g * out * (x + out),
        ("x", "out"),
    ),
    "ndtri": _unary(
        "ndtri",
        "SpecialNdtriBackward0",
        lambda xp, g, out: g * _SQRT_2PI * xp.exp(out * out / 2),
        ("out",),
    ),
    "erfinv": _unary(
        "erfinv",
        "ErfinvBackward0",
        lambda xp, g, out: g * (math.sqrt(math.pi) / 2) * xp.exp(out * out),
        ("out",),
    ),
    # torch's ndtr is 0.5 * erfc(-x / sqrt(2)): its grad_fn is that product's
    "ndtr": _unary(
        "ndtr",
        "MulBackward1",
        lambda xp, g, x: g * xp.exp(-x * x / 2) / _SQRT_2PI,
    ),
    "i0": _unary("i0", "I0Backward0", lambda xp, g, x: g * _call(xp, "i1", x)),
    "i0e": _unary(
        "i0e",
        "SpecialI0EBackward0",
        lambda xp, g, x, out: g * (_call(xp, "i1e", x) - xp.sign(x) * out),
        ("x", "out"),
    ),
    "i1": _unary("i1", "SpecialI1Backward0", _i1_rule, ("x", "out")),
    "i1e": _unary("i1e", "SpecialI1EBackward0", _i1e_rule, ("x", "out")),
    "entr": _unary(
        "entr", "SpecialEntrBackward0", lambda xp, g, x: -g * (1 + xp.log(x))
    ),
    "exp2": _unary(
        "exp2", "Exp2Backward0", lambda xp, g, out: g * out * math.log(2), ("out",)
    ),
    "sinc": _unary("sinc", "SincBackward0", _sinc_rule),
}


def _xlog1py(self, other):
    """self * log1p(other), 0 where self is 0 (unless other is nan), as torch's;
    d/dself = log1p(other) (0 where self is 0 and other <= -1), d/dother = self /
    (1 + other)."""

    def forward(x, y):
        dtype = x.dtype if x.dtype.kind == "f" else np.float64  # ints: floats
        with np.errstate(all="ignore"):
            out = np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log1p(y))
        return out.astype(dtype)

    def log1p(xp, y):
        return y.log1p() if xp.records else np.log1p(y)

    rules = (
        lambda xp, g, x, y, out: xp.where((x == 0) & (y <= -1), 0.0, g * log1p(xp, y)),
        lambda xp, g, x, y, out: g * x / (1 + y),
    )
    return _binary(self, other, forward, rules, "SpecialXlog1PyBackward0", ("y", "xy"))


# ---- torch.special ------------------------------------------------------------------


def _pair(name, method):
    """A binary function whose first argument may be a number (the second then a
    Tensor), as torch.special.xlogy's."""

    def fn(input, other, *, out=None):
        if not isinstance(input, Tensor):
            if not isinstance(other, Tensor):
                raise TypeError(
                    f"special_{name}() received an invalid combination of arguments"
                )
            input = other._lift(input)
        return with_out(method)(input, other, out=out)

    fn.__name__ = fn.__qualname__ = name
    return fn


def _pointwise(name, fn):
    """A unary torch.special function: a type check, and out=."""
    return with_out(_type_check(fn, name))


_DELEGATES = {
    "erf": Tensor.erf,
    "erfc": Tensor.erfc,
    "expit": Tensor.sigmoid,
    "log1p": Tensor.log1p,
    "expm1": Tensor.expm1,
    "gammaln": Tensor.lgamma,
    "digamma": Tensor.digamma,
    "psi": Tensor.digamma,
}

for _name, _fn in {**_DELEGATES, **_OPS}.items():
    if not _name.startswith("_"):
        globals()[_name] = _pointwise(_name, _fn)

xlogy = _pair("xlogy", Tensor.xlogy)
xlog1py = _pair("xlog1py", _xlog1py)


@with_out
def logit(input, eps=None):
    _type_check(lambda x: x, "logit")(input)
    return input.logit(eps)


@with_out
def round(input, *, decimals=0):
    """Half to even at `decimals` places; torch.special.round's grad_fn is always
    RoundBackward1 (it passes decimals)."""
    _type_check(lambda x: x, "round")(input)
    out = _rounding(lambda x: np.round(x, decimals))(input._data)
    return input._result(out, (input,), _zeros, "RoundBackward1", saves=False)


@with_out
def polygamma(n, input):
    """The n-th derivative of digamma (the order first, as torch's)."""
    _type_check(lambda x: x, "polygamma", 2)(input)
    return input.polygamma(n)


def multigammaln(input, p):
    """log of the multivariate gamma function of dimension p: the sum of
    lgamma(input - j/2) for j < p, plus p (p - 1) / 4 log(pi)."""
    _type_check(lambda x: x, "multigammaln")(input)
    if p < 1:
        raise RuntimeError("p has to be greater than or equal to 1")
    x = input._data if input.dtype.kind == "f" else input._data.astype(np.float64)
    out = sum(lgamma_array(x - j / 2) for j in range(p)) + p * (p - 1) / 4 * math.log(
        math.pi
    )

    def backward(xp, g, x):
        return (g * sum(xp.digamma(x - j / 2) for j in range(p)),)

    return input._result(out.astype(x.dtype), (input,), backward, "MvlgammaBackward0")


def logsumexp(input, dim, keepdim=False, *, out=None):
    return with_out(Tensor.logsumexp)(input, dim, keepdim, out=out)


def softmax(input, dim, *, dtype=None):
    return input.softmax(dim, dtype)


def log_softmax(input, dim, *, dtype=None):
    return input.log_softmax(dim, dtype)


__all__ = [
    *(n for n in {**_DELEGATES, **_OPS} if not n.startswith("_")),
    "xlogy",
    "xlog1py",
    "logit",
    "round",
    "polygamma",
    "multigammaln",
    "logsumexp",
    "softmax",
    "log_softmax",
]
del _name, _fn
