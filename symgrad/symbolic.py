"""The SymPy side of elementwise maps: placeholders, stable activations, partial derivatives.

An elementwise node carries a SymPy expression in placeholder symbols ``_0, _1, ...`` (one
per argument array). Its adjoint for argument ``i`` is ``g * d(expr)/d(_i)``, derived here
by ``sympy.diff`` and rewritten in terms of the node's own output ``_out`` where that is
cheaper (sigmoid' = out*(1 - out), tanh' = 1 - out**2, exp' = out).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from functools import cache

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p
from sympy.core.cache import clear_cache
from sympy.core.parameters import distribute
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.logic.boolalg import BooleanAtom

OUT = sp.Symbol("_out", real=True)


class UnsupportedError(ValueError):
    """A SymPy construct that symgrad cannot print or differentiate."""


def factored(fn):
    """Run ``fn`` with SymPy's distribution of numbers over sums off: 2*(x - y) stays a
    product, so the common factor x - y can be shared between forward and backward.

    Negating a mostly negative sum still distributes (-(a - b - c) is b + c - a): kept
    whole, SymPy's odd functions never settle on its sign (tanh(x - b1 - b2) takes
    -tanh(-arg) forever, since -arg stays Mul(-1, arg) and can again lose its sign).
    SymPy caches constructed expressions without regard to these settings, so the cache
    is cleared on the way in and out: results never depend on what ran before.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if _factoring:  # already inside
            return fn(*args, **kwargs)
        with _factored():
            return fn(*args, **kwargs)

    return wrapper


_factoring: list[bool] = []


@contextmanager
def _factored():
    clear_cache()
    _factoring.append(True)
    negation, sp.Add.__neg__ = sp.Add.__neg__, _negated_terms
    try:
        with distribute(False):
            yield
    finally:
        sp.Add.__neg__ = negation
        _factoring.pop()
        clear_cache()


def _negated_terms(self: sp.Add) -> sp.Expr:
    negative = sum(term.as_coeff_Mul()[0].is_negative for term in self.args)
    if 2 * negative <= len(self.args):  # -(1 - x) stays as is: it shares 1 - x
        return sp.Mul._from_args((sp.S.NegativeOne, self), self.is_commutative)
    return sp.Add(*(-term for term in self.args))


@cache
def arg(i: int) -> sp.Symbol:
    """Placeholder for the ``i``-th argument array of an elementwise node."""
    return sp.Symbol(f"_{i}", real=True)


class sigmoid(sp.Function):  # noqa: N801 - SymPy function classes are lower case
    """Logistic function; printed in a form that never overflows."""

    def fdiff(self, argindex=1):
        return self * (1 - self)

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.Half

    def _eval_evalf(self, prec):
        return (1 / (1 + sp.exp(-self.args[0])))._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real


class softplus(sp.Function):  # noqa: N801
    """log(1 + exp(x)), printed in a form that never overflows."""

    def fdiff(self, argindex=1):
        return softplus_slope(self.args[0])

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.log(2)

    def _eval_evalf(self, prec):
        return (sp.log(1 + sp.exp(self.args[0])))._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real


class softplus_slope(sigmoid):  # noqa: N801
    """softplus' derivative, a sigmoid printed through exp(-|x|): the exponential the
    softplus computed, which CSE shares. (Written as that formula, its derivative would
    take |x|' = sign(x) = 0 at 0, and softplus''(0) would be 0, not 1/4.)"""


class relu(sp.Function):  # noqa: N801
    """max(x, 0); its derivative at 0 is 0, as in PyTorch."""

    def fdiff(self, argindex=1):
        return sp.Heaviside(self.args[0], 0)

    def _eval_evalf(self, prec):
        return (sp.Max(self.args[0], 0))._eval_evalf(prec)

    def _eval_is_real(self):
        return self.args[0].is_real


class masked_sqrt(sp.Function):  # noqa: N801
    """sqrt with torch's derivative 0 at 0 for std and norm (sqrt's is infinite there,
    times a zero deviation: nan). Printed as sqrt."""

    def fdiff(self, argindex=1):
        return sp.Piecewise((0, sp.Eq(self.args[0], 0)), (1 / (2 * self), True))

    def _eval_evalf(self, prec):
        return sp.sqrt(self.args[0])._eval_evalf(prec)

    def _eval_power(self, exponent):
        """Even powers are powers of the argument: norm(x)**2 is the smooth sum of
        squares, whose Hessian is 2 I at 0 (the masked derivative would make it 0)."""
        if exponent.is_integer and exponent.is_even:
            return self.args[0] ** (exponent / 2)
        return None

    def _eval_is_real(self):
        return self.args[0].is_nonnegative


class erfc(sp.erfc):  # noqa: N801
    """SymPy's erfc, without its rewrite of erfc(-x) as 2 - erfc(x): for x < -6 that
    cancels to 0 where erfc(-x) is tiny and exact (log Phi(t) = log(erfc(-t/sqrt 2)/2)
    in probit and Tobit likelihoods)."""

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sp.S.One


class erfc_ratio(sp.Function):  # noqa: N801
    """erfc_ratio(x, erfc(x)) = exp(-x**2) / erfc(x), so d log erfc(x) = -2/sqrt(pi)
    erfc_ratio: the module's helper takes the erfc the forward computed and stays
    finite where exp(-x**2) and erfc(x) both underflow (x > 26.5). Its derivative,
    all of it in the first argument, is 2/sqrt(pi) r**2 - 2 x r: no 0 * inf there."""

    def fdiff(self, argindex=1):
        if argindex == 2:
            return sp.S.Zero
        return 2 / sp.sqrt(sp.pi) * self**2 - 2 * self.args[0] * self

    def _eval_evalf(self, prec):
        x = self.args[0]
        return (sp.exp(-(x**2)) / sp.erfc(x))._eval_evalf(prec)

    def _eval_is_positive(self):
        return self.args[0].is_real


class log_erfc(sp.Function):  # noqa: N801
    """log_erfc(x, erfc(x)) = log erfc(x): the module's helper takes the erfc the
    forward computed and is finite where erfc(x) underflows (x > 26.5: a probit's log
    Phi 38 sds out); its derivative is -2/sqrt(pi) erfc_ratio, finite there too."""

    def fdiff(self, argindex=1):
        if argindex == 2:
            return sp.S.Zero
        return -2 / sp.sqrt(sp.pi) * erfc_ratio(*self.args)

    def _eval_evalf(self, prec):
        return sp.log(sp.erfc(self.args[0]))._eval_evalf(prec)


def _split_log_of_erfc(log: sp.log) -> sp.Expr:
    """log(c erfc(x)) as log(c) + log erfc(x), the second differentiated by erfc_ratio."""
    factors = sp.Mul.make_args(log.args[0])
    tails = [f for f in factors if isinstance(f, sp.erfc)]
    if not tails:
        return log
    rest = sp.Mul(*(f for f in factors if not isinstance(f, sp.erfc)))
    return sp.log(rest) + sp.Add(*(log_erfc(f.args[0], f) for f in tails))


class atan2(sp.atan2):  # noqa: N801
    """SymPy's atan2(y, x) with torch's gradient 0 at the origin, where the derivatives
    x / (x**2 + y**2) and -y / (x**2 + y**2) are 0/0."""

    def fdiff(self, argindex=1):
        y, x = self.args
        r2 = x**2 + y**2
        return sp.Piecewise(
            (0, sp.Eq(r2, 0)), ((x if argindex == 1 else -y) / r2, True)
        )


def _unevaluated(minmax: type) -> type:
    """``minmax`` (sp.Max or sp.Min) that does not compare symbolic arguments when it is
    built: for a formula in placeholders SymPy cannot decide which is larger, and tries
    for milliseconds every time an expression holding it is rebuilt (compile time grew
    with the number of sigmoids in a model). Numbers are still compared."""

    def new(cls, *args, **_options):  # (SymPy's rebuilds may pass evaluate=True)
        if all(sp.sympify(a).is_number for a in args):
            return minmax(*args)
        return minmax.__new__(cls, *args, evaluate=False)

    return type(f"_{minmax.__name__}", (minmax,), {"__new__": new})


# Also not flattened: max(max(a, b), c) splits a three-way tie 1/4, 1/4, 1/2, as torch
# does, where the derivative of SymPy's Max(a, b, c) gives each argument 1/2.
Max, Min = _unevaluated(sp.Max), _unevaluated(sp.Min)


def _binary(minmax: sp.Expr) -> sp.Expr:
    """A Max or Min of three or more arguments as a left fold of binary ones."""
    fold = Max if isinstance(minmax, sp.Max) else Min
    folded = minmax.args[0]
    for a in minmax.args[1:]:
        folded = fold(folded, a)
    return folded


def _abs_form_sigmoid(x: sp.Expr) -> sp.Expr:
    e = sp.exp(-_abs(x))
    return sp.Piecewise((1, x >= 0), (e, True)) / (1 + e)


def _abs(x: sp.Expr) -> sp.Abs:
    """|x| written one way for a sum and its negation (|a - b| is |b - a|), so
    softplus(a - b) and softplus(b - a) share exp(-|a - b|)."""
    if x.is_Add:
        x = min(x, sp.Add(*(-term for term in x.args)), key=sp.default_sort_key)
    return sp.Abs(x)


_LOWERED = {  # (softplus_slope first: replacing sigmoid would also take its subclass)
    softplus_slope: _abs_form_sigmoid,
    sigmoid: lambda x: 1 / (1 + sp.exp(Min(-x, 709))),  # exp(709) is finite
    softplus: lambda x: Max(x, 0) + log1p(sp.exp(-_abs(x))),
    relu: lambda x: Max(x, 0),
    masked_sqrt: sp.sqrt,
}


def lower(expr: sp.Expr) -> sp.Expr:
    """Rewrite the activations above into stable primitive forms, so CSE sees inside them."""
    while expr.has(*_LOWERED):  # again: Max(relu(2), 0) evaluates back to relu(2)
        for fn, form in _LOWERED.items():
            expr = expr.replace(fn, form)
    if expr.has(sp.And, sp.Or):
        expr = expr.replace(
            lambda e: isinstance(e, sp.Piecewise),
            lambda e: sp.Piecewise(*((v, _minimal(c)) for v, c in e.args)),
        )
    return expr


def _minimal(cond: sp.Basic) -> sp.Basic:
    """A condition reduced by Boolean algebra alone, its comparisons taken as opaque:
    And(x < lo, Or(x < lo, lo < hi)) is x < lo. (simplify_logic on the comparisons
    themselves would also turn Not(x < y) into x >= y, which differs where x is NaN.)"""
    if not isinstance(cond, sp.And | sp.Or) or cond.has(sp.Not):
        return cond
    leaves = {}
    for sub in sp.preorder_traversal(cond):
        if not isinstance(sub, sp.And | sp.Or):
            leaves.setdefault(sub, sp.Dummy())
    simple = sp.simplify_logic(cond.xreplace(leaves))
    if simple.has(sp.Not) or sp.count_ops(simple) >= sp.count_ops(cond):
        return cond
    return simple.xreplace({v: k for k, v in leaves.items()})


_RECIPROCALS = {
    sp.sec: sp.cos, sp.csc: sp.sin, sp.cot: sp.tan,
    sp.sech: sp.cosh, sp.csch: sp.sinh, sp.coth: sp.tanh,
}  # fmt: skip


def without_reciprocal_functions(expr: sp.Expr) -> sp.Expr:
    """sec(x) as 1/cos(x), and so on: NumPy has none of them."""
    for reciprocal, fn in _RECIPROCALS.items():
        expr = expr.replace(reciprocal, lambda x, fn=fn: 1 / fn(x))
    return expr


# Functions an elementwise expression may use: each has a NumPy spelling in the printer
# (erf, erfc, erfc_ratio, log_erfc, loggamma, polygamma: helpers of the module, as NumPy
# has none) and a tape op in reference.py.
FUNCTIONS = (
    sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.sinh, sp.cosh, sp.tanh, sp.asin,
    sp.acos, sp.atan, sp.asinh, sp.acosh, sp.atanh, sp.atan2, sp.erf, sp.erfc, sp.Abs,
    sp.sign, sp.Heaviside, sp.Max, sp.Min, sp.floor, sp.ceiling, sigmoid, softplus,
    relu, log1p, expm1, erfc, erfc_ratio, log_erfc, atan2, sp.loggamma, sp.polygamma,
)  # fmt: skip
_ATOMS = (sp.Symbol, sp.Number, sp.NumberSymbol)
_OPERATORS = (
    sp.Add, sp.Mul, sp.Pow, sp.Piecewise, ExprCondPair, sp.core.relational.Relational,
    BooleanAtom, sp.And, sp.Or, sp.Not,
)  # fmt: skip


def check_supported(expr: sp.Basic, what: str) -> None:
    """Raise ``UnsupportedError`` naming the first subexpression symgrad cannot handle."""
    for sub in sp.preorder_traversal(expr):
        if isinstance(sub, _ATOMS + _OPERATORS) or type(sub) in FUNCTIONS:
            if sub.is_Number and not sub.is_finite:
                raise UnsupportedError(
                    f"{what}: infinite constant {sub} is not supported"
                )
            continue
        if isinstance(sub, sp.Derivative):
            raise UnsupportedError(
                f"{what}: unevaluated derivative {sub} is not supported"
            )
        if isinstance(sub, sp.core.function.AppliedUndef):
            raise UnsupportedError(
                f"{what}: undefined function {sub.func} in {sub}; "
                "use sg.elementwise with an explicit formula"
            )
        raise UnsupportedError(
            f"{what}: {type(sub).__name__} in {sub} is not supported"
        )


# The derivatives of formulas up to this many operations are simplified (partial).
SIMPLIFY_OPS = 40


class _RealSign(sp.Function):
    """sign(u) while differentiating: 0 almost everywhere, also where SymPy cannot
    prove u real (sqrt(p) - 1) and would leave the derivative unevaluated."""

    def fdiff(self, argindex=1):
        return sp.S.Zero


class _RealAbs(sp.Function):
    """|u| while differentiating: sign(u) u' (torch's, 0 at u = 0), also where SymPy
    cannot prove u real (log(p) of a real p) and would take (re u re u' + im u im u')
    / |u|, which is 0/0 at u = 0."""

    def fdiff(self, argindex=1):
        return _RealSign(self.args[0])


_REAL = {sp.Abs: _RealAbs, sp.sign: _RealSign}  # while differentiating


@cache
def partial(expr: sp.Expr, i: int) -> sp.Expr:
    """d(expr)/d(_i), simplified, with ``expr`` itself replaced by ``OUT`` where it recurs.

    Simplification is limited to ``factor_terms``: ``sympy.simplify`` may rewrite stable
    forms into ones that overflow (it turns a logistic derivative into cosh(x/2)**-2).
    DiracDelta (the derivative of sign and Heaviside) is zero almost everywhere and is
    dropped, which matches PyTorch's gradients of sign, abs and relu. log erfc(u) is
    differentiated as a whole (erfc_ratio), finite where erfc underflows.
    """
    nary = lambda e: isinstance(e, sp.Max | sp.Min) and len(e.args) > 2  # noqa: E731
    binary = expr.replace(nary, _binary)
    for function, real in _REAL.items():
        binary = binary.replace(function, real)
    binary = binary.replace(sp.log, lambda x: _split_log_of_erfc(sp.log(x)))
    d = sp.diff(binary, arg(i)).replace(sp.DiracDelta, lambda *a: sp.S.Zero)
    for function, real in _REAL.items():
        d = d.replace(real, function)
    if d.has(sp.Derivative, sp.Subs):
        missing = sorted({str(x.expr.func) for x in d.atoms(sp.Derivative)})
        raise UnsupportedError(f"{', '.join(missing) or d} has no derivative")
    d = d.replace(lambda e: e.is_Mul, _power_rule)
    d = d.replace(lambda e: e.is_Mul and e.has(sp.Heaviside, sp.Piecewise), relu_masked)
    d = d.xreplace(_log_of_bases(expr, arg(i)))
    # subs also finds expr inside products and powers (sigmoid' = OUT**2 e**-x), and
    # factor_terms pulls common factors out; both take seconds on large fused formulas
    # (their second derivatives), where a structural match must do
    small = sp.count_ops(expr) <= SIMPLIFY_OPS
    if not expr.is_Symbol and not expr.is_Number:
        reused = d.subs(expr, OUT) if small else d.xreplace({expr: OUT})
        # only if expr was found (subs may rewrite a miss: (1 + nu e^-x)**(-1/nu) as
        # e^(x/nu) (nu + e^x)**(-1/nu), which overflows), and u**(p-1) stays: as OUT/u
        # it would be 0/0 at u = 0
        if reused.has(OUT) and not (
            _fractional_power(expr) and reused.has(1 / expr.base)
        ):
            d = reused
    return _forward_sums(sp.factor_terms(d), expr) if small else d


def _forward_sums(d: sp.Expr, expr: sp.Expr) -> sp.Expr:
    """``d`` with each sum that is a rational multiple of a sum of ``expr`` written as
    that multiple: factor_terms clears denominators, 4*x - 4*y + 9 for the forward's
    x - y + 9/4, and CSE would compute both."""
    forward = {}
    for a in expr.atoms(sp.Add):
        content, primitive = a.as_content_primitive()
        forward[primitive] = (content, a)
    shared = {}
    for b in d.atoms(sp.Add):
        content, primitive = b.as_content_primitive()
        if primitive in forward and forward[primitive][1] != b:
            c, a = forward[primitive]
            shared[b] = (content / c) * a
    return d.xreplace(shared)


def _log_of_bases(expr: sp.Expr, x: sp.Symbol) -> dict:
    """d(u**p)/dp = u**p*log(u), with log(u) read as log(1) = 0 where u = 0, as torch
    masks it: 0**p*log(0) would be 0*(-inf) = nan (a power law fitted to data with zeros).
    """
    bases = {
        p.base for p in expr.atoms(sp.Pow) if p.exp.has(x) and not p.base.is_Number
    }
    return {sp.log(b): sp.log(sp.Piecewise((1, sp.Eq(b, 0)), (b, True))) for b in bases}


def _fractional_power(expr: sp.Expr) -> bool:
    return expr.is_Pow and not expr.exp.is_Integer


def relu_masked(product: sp.Mul, infinite=lambda factor, x: False) -> sp.Expr:
    """H(x) * g, where g divides by (or takes a root of) relu(x), as g where x > 0 and 0
    elsewhere: torch's relu backward masks the gradient, so sqrt(relu(x))' is 0 at
    x <= 0, where the product would be 0 * inf = nan. Likewise a clip's derivative (a
    Piecewise, 0 where the clip binds) times a root of the clipped value, as torch's
    clamp backward. ``infinite(factor, key)`` says whether a factor that reads arrays
    computed elsewhere may be infinite where ``key`` (x, a clip's condition) holds."""
    for h in product.args:
        if not isinstance(h, sp.Heaviside | sp.Piecewise):
            continue
        rest = sp.Mul(*(f for f in product.args if f is not h))
        if isinstance(h, sp.Heaviside):
            x, h0 = h.args

            def clamped(base, x=x):  # (Max(x, 0) only when asked: x may not take it)
                return base.has(relu(x), sp.Max(x, 0))

            picked = h0 not in (0, 1) and _not_polynomial(rest)  # max/min's branch
            if picked or _may_be_infinite(rest, [x], clamped, infinite):
                kept = rest * h if h0 not in (0, 1) else rest  # (a tie's share, 1/2)
                return sp.Piecewise((kept, x > 0 if h0 == 0 else x >= 0), (0, True))
        elif isinstance(h, sp.Piecewise) and any(e == 0 for e, _ in h.args):
            keys = [k for e, c in h.args if e == 0 for k in cases(c)]
            if _may_be_infinite(rest, keys, lambda b, k=keys: b.has(*k), infinite):
                return sp.Piecewise(
                    *((0 if e == 0 else e * rest, c) for e, c in h.args)
                )
    return product


def _not_polynomial(rest: sp.Expr) -> bool:
    """Whether ``rest`` may be nan where its arguments are finite (inf / inf from
    log(1 + exp(x)) at x = 1e6): the derivative of the branch a max or min does not
    pick is then selected away, as torch does, not multiplied by 0."""
    return bool(rest.free_symbols) and not rest.is_polynomial(*rest.free_symbols)


def _may_be_infinite(rest: sp.Expr, keys: list, clamped, infinite) -> bool:
    """Whether ``rest`` may be infinite where one of ``keys`` holds: a negative or
    fractional power of a base ``clamped`` says holds the clamped value, or a
    factor ``infinite`` says may be."""
    return any(
        _singular(p) and (clamped(p.base) or any(infinite(p, k) for k in keys))
        for p in rest.atoms(sp.Pow)
    ) or any(infinite(s, k) for s in rest.free_symbols for k in keys)


def cases(condition: sp.Basic) -> list:
    """A Piecewise branch's condition and, for an Or, each of its alternatives: where
    a clip's bound binds, as its value's and its derivative's branches say it."""
    return [condition, *condition.args] if isinstance(condition, sp.Or) else [condition]


def _singular(power: sp.Pow) -> bool:
    """Whether ``power`` may be infinite where its base is 0 (1/u, sqrt(u))."""
    return not (power.exp.is_Integer and power.exp > 0)


def _power_rule(term: sp.Expr) -> sp.Expr:
    """SymPy's p*u**p/u (for u = a*x: p*u**p/a) as p*u**(p-1) (p*u**(p-1)*x), as torch
    computes it: finite at u = 0, where the other is 0/0, and no underflow for tiny u.
    """
    factors = list(sp.Mul.make_args(term))
    for k, power in enumerate(factors):
        if not _fractional_power(power):
            continue
        for m, divisor in enumerate(factors):
            if divisor.is_Pow and divisor.exp == -1:
                quotient = sp.cancel(power.base / divisor.base)
                if sp.fraction(quotient)[1] == 1:
                    factors[k] = power.base ** (power.exp - 1)
                    if power.exp.free_symbols:  # p = 0 takes p * 0**(-1) as 0, as torch
                        zero = sp.Eq(power.exp, 0)
                        factors[k] = sp.Piecewise((0, zero), (factors[k], True))
                    factors[m] = quotient
                    return sp.Mul(*factors)
    return term
