"""The gamma function family, which NumPy lacks: lgamma, digamma, polygamma (and
log erfc(x) and exp(-x**2) / erfc(x), its derivative's part, where erfc underflows).

`_lgamma`, `_digamma`, `_trigamma`, `_log_erfc` and `_erfc_ratio` are also the helpers of
generated modules: codegen copies the source of those a module calls into it, so each is
self-contained (numpy and math only) and works on Python floats as well as arrays (unrolled code
calls them). Values at the poles are torch's: inf or nan, with no warning.
"""

import math

import numpy as np


def _lgamma(x):
    """log|Gamma(x)|: math.lgamma element by element, at Python speed; inf where math
    raises (the poles 0, -1, -2, ... and past 2.55e305, where it overflows), as torch.
    """
    x = np.asarray(x, dtype=float)
    inf = ((x <= 0) & (x == np.floor(x))) | (x > 2.5563e305)
    out = np.vectorize(math.lgamma, otypes=[float])(np.where(inf, 1.0, x))
    return np.where(inf, np.inf, out)[()]


def _digamma(x):
    """psi(x) = d/dx log Gamma(x): psi(x) = psi(x + 1) - 1/x up to y = x + 10, then the
    asymptotic series (7 Bernoulli terms: 1e-17 at y >= 10); below 0 by reflection,
    psi(x) = psi(1 - x) - pi/tan(pi x), tan taken of x - round(x) (exact).
    As torch: -inf at 0 (inf at -0.0), nan at -1, -2, ..."""
    x = np.asarray(x, dtype=float)
    with np.errstate(all="ignore"):
        y = np.where(x < 0, 1.0 - x, x)
        shift = 0.0
        for _ in range(10):
            shift += 1.0 / y
            y = y + 1.0
        s = 1.0 / (y * y)
        tail = 1 / 132 - s * (691 / 32760 - s / 12)
        tail = s * (1 / 12 - s * (1 / 120 - s * (1 / 252 - s * (1 / 240 - s * tail))))
        psi = np.log(y) - 0.5 / y - tail - shift
        reflected = psi - np.pi / np.tan(np.pi * (x - np.round(x)))
        out = np.where(x < 0, np.where(x == np.floor(x), np.nan, reflected), psi)
    return out[()]


def _trigamma(x):
    """psi'(x): psi'(x) = psi'(x + 1) + 1/x**2 up to y = x + 10, then the asymptotic
    series (7 Bernoulli terms: 1e-16 at y >= 10); below 0 by reflection,
    psi'(x) = pi**2/sin(pi x)**2 - psi'(1 - x). inf at the poles 0, -1, -2, ..."""
    x = np.asarray(x, dtype=float)
    with np.errstate(all="ignore"):
        y = np.where(x < 0, 1.0 - x, x)
        shift = 0.0
        for _ in range(10):
            shift += 1.0 / (y * y)
            y = y + 1.0
        s = 1.0 / (y * y)
        tail = 1 / 30 - s * (5 / 66 - s * (691 / 2730 - s * 7 / 6))
        tail = 1 / 6 - s * (1 / 30 - s * (1 / 42 - s * tail))
        psi1 = (1.0 + (0.5 + tail / y) / y) / y + shift
        reflected = (np.pi / np.sin(np.pi * (x - np.round(x)))) ** 2 - psi1
        out = np.where(x < 0, reflected, psi1)
    return out[()]


def _erfc_ratio(x, erfc):
    """exp(-x**2) / erfc(x), given erfc(x) (log erfc's derivative is -2/sqrt(pi) times
    it): the quotient, x**2 taken exactly as hi + lo by Dekker's split (exp amplifies
    its rounding: 7e-14 at x = 25), then from x = 25, where erfc nears underflow, the
    continued fraction sqrt(pi) (x + (1/2) / (x + (2/2) / (x + (3/2) / ...))), 12
    terms (1e-17 there). Takes floats too (unrolled code)."""
    with np.errstate(all="ignore"):
        near = np.minimum(np.maximum(x, -40.0), 25.0)  # (exp(-1600) is 0 already)
        split = 134217729.0 * near
        high = split - (split - near)
        low = near - high
        square = near * near
        error = ((high * high - square) + 2.0 * high * low) + low * low
        ratio = np.exp(-square) * (1.0 - error) / erfc
        if np.all(x < 25.0):
            return ratio
        far = np.maximum(x, 25.0)
        fraction = far
        for k in range(12, 0, -1):
            fraction = far + 0.5 * k / fraction
        return np.where(x < 25.0, ratio, math.sqrt(math.pi) * fraction)[()]


def _log_erfc(x, erfc):
    """log erfc(x), given erfc(x): from x = 25, where erfc nears underflow, as
    -x**2 - log(exp(-x**2) / erfc(x)) by _erfc_ratio. Takes floats too."""
    with np.errstate(divide="ignore"):
        if np.all(x < 25.0):
            return np.log(erfc)
        far = np.maximum(x, 25.0)
        tail = -far * far - np.log(_erfc_ratio(far, erfc))
        return np.where(x < 25.0, np.log(erfc), tail)[()]


HELPERS = {  # (a helper before the helpers it calls)
    "lgamma": _lgamma, "digamma": _digamma, "trigamma": _trigamma,
    "log_erfc": _log_erfc, "erfc_ratio": _erfc_ratio,
}  # fmt: skip

_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510)


@np.errstate(all="ignore")
def _polygamma_high(n, x):
    """psi^(n)(x) for n >= 2, in the way of _trigamma: the recurrence up to y = x + 10
    + 2n, the asymptotic series, and for x < 0 the reflection psi^(n)(x) =
    (-1)^n psi^(n)(1 - x) - pi^(n+1) q_n(cot(pi x)), with q_0(c) = c and
    q_(k+1)(c) = -(1 + c^2) q_k'(c). At the poles (-1)^(n+1) inf, as torch."""
    y = np.where(x < 0, 1.0 - x, x)
    total = np.zeros_like(y)
    for _ in range(10 + 2 * n):
        total += y ** -(n + 1.0)
        y = y + 1.0
    total *= math.factorial(n)
    total += math.factorial(n - 1) / y**n + math.factorial(n) / (2 * y ** (n + 1))
    for k, b in enumerate(_BERNOULLI, 1):
        total += (
            b * math.factorial(2 * k + n - 1) / math.factorial(2 * k) / y ** (2 * k + n)
        )
    total *= (-1) ** (n + 1)
    q = np.polynomial.Polynomial([0.0, 1.0])
    for _ in range(n):
        q = -np.polynomial.Polynomial([1.0, 0.0, 1.0]) * q.deriv()
    cot = 1 / np.tan(np.pi * (x - np.round(x)))
    reflected = (-1) ** n * total - np.pi ** (n + 1) * q(cot)
    out = np.where(x < 0, reflected, total)
    return np.where((x <= 0) & (x == np.floor(x)), (-1) ** (n + 1) * np.inf, out)


def _float(fn):
    """fn on an array, its result of x's float dtype (float64 for integers), as torch."""
    return lambda x: np.asarray(fn(x), x.dtype if x.dtype.kind == "f" else np.float64)


lgamma_array, digamma_array = _float(_lgamma), _float(_digamma)


def polygamma_array(n, x):
    """torch.polygamma(n, x): the n-th derivative of digamma."""
    fn = {0: _digamma, 1: _trigamma}.get(n) or (lambda x: _polygamma_high(n, x))
    return _float(fn)(x)


# ---- torch.special --------------------------------------------------------------------
# `tape.special` is this module, so torch.special's functions (special_functions.py,
# which builds on Tensor and so cannot be imported while this module loads) are
# reached through the module's __getattr__, loaded at the first use.


def __getattr__(name):
    if not name.startswith("_"):
        from . import special_functions

        if name in special_functions.__all__:
            return getattr(special_functions, name)
    raise AttributeError(f"module 'torch.special' has no attribute '{name}'")


def __dir__():
    from . import special_functions

    return sorted({*globals(), *special_functions.__all__})
