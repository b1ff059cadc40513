"""SymPy expression -> NumPy source, as a person would write it (``np.exp(x)``, ``1 / x``),
and -> plain Python on floats (``math.exp(x)``) for scalar-unrolled code."""

from __future__ import annotations

import math

import sympy as sp
from sympy.printing.numpy import NumPyPrinter as _SymPyNumPyPrinter
from sympy.printing.precedence import PRECEDENCE, precedence
from sympy.printing.pycode import PythonCodePrinter

from .symbolic import UnsupportedError


def coefficient_into_sum(e: sp.Expr) -> sp.Expr:
    """-24*a*(2*b - 1) as a*(24 - 48*b): a numeric coefficient goes into a sum factor
    whose terms it scales for free (their own coefficients, constants, a sign), instead of
    costing a pass of its own."""
    c, rest = e.as_coeff_Mul()
    if c == 1:
        return e
    factors = sp.Mul.make_args(rest)
    for add in factors:
        if not add.is_Add:
            continue
        scaled = [_scaled(c, t) for t in add.args]
        if _scalings(scaled) <= _scalings(add.args):
            others = (f for f in factors if f is not add)
            return sp.Mul(*others, sp.Add(*scaled, evaluate=False), evaluate=False)
    return e


def _scaled(c: sp.Expr, term: sp.Expr) -> sp.Expr:
    """c * term, without the 1.0 * x that a float c leaves: 0.5 * (2*x) is x."""
    k, rest = (c * term).as_coeff_Mul()
    return rest * int(k) if k.is_Float and abs(k) == 1.0 else k * rest


def _scalings(terms) -> int:
    """How many terms of a sum cost a multiplication by their coefficient."""
    return sum(not t.is_number and abs(t.as_coeff_Mul()[0]) != 1 for t in terms)


def literal(c: sp.Expr, module: str = "np") -> str:
    """A number as a float literal, as written (1e-05); ``np.inf`` where no literal is."""
    value = float(c)
    if math.isfinite(value):
        return repr(value)
    text = f"{module}.nan" if math.isnan(value) else f"{module}.inf"
    return "-" + text if value < 0 else text


def fold_numbers(expr: sp.Expr) -> sp.Expr:
    """``sqrt(2)/sqrt(pi)`` as one float: printed as it is, it would cost a NumPy call on
    every run. Plain numbers (``1/3``, ``2*pi``) stay as people write them."""
    return expr.replace(
        lambda e: e.is_number and e.has(sp.Pow, sp.Function) and not e.is_Rational,
        lambda e: sp.Float(float(e)) if e.is_real else e,
    )


def rational(c: sp.Rational) -> str:
    """0.5 and 2.25 as decimals, 1/3 as 1.0/3.0 (CPython folds it): both read better than
    0.3333333333333333, and stay floats."""
    text = repr(float(c))
    return text if len(text) <= 8 else f"{float(c.p)!r}/{float(c.q)!r}"


def _simple(c: sp.Expr) -> bool:
    """A number people write as a fraction: 200, 1/3 (not the exact form of 1.37)."""
    return c.is_Rational and abs(c.p) < 10**6 and c.q < 1000


class NumPyPrinter(_SymPyNumPyPrinter):
    """SymPy's NumPy printer with ``np.`` names and plain operators where NumPy has them.

    ``ranks`` gives the number of dimensions of each named array: sums and products put
    lower-rank operands first, so ``2 * s * X`` scales the scalar before the array.
    """

    def __init__(self, ranks: dict[str, int] | None = None):
        super().__init__(
            {"fully_qualified_modules": True, "allow_unknown_functions": False}
        )
        self.ranks = ranks or {}

    def _module_format(self, fqn: str, register: bool = True) -> str:
        return "np." + fqn.removeprefix("numpy.")

    def doprint(self, expr, assign_to=None):
        return super().doprint(fold_numbers(sp.sympify(expr)), assign_to)

    def _print_ImaginaryUnit(self, expr):
        """SymPy may find a value complex only once formulas are combined: sqrt(-x**2
        - 1) is I sqrt(x**2 + 1). NumPy's would be nan; refuse it by name."""
        raise UnsupportedError(
            "a formula of the model is complex: a root or log of a value that is "
            "always negative?"
        )

    def parenthesize(self, item, level, strict=False):
        """SymPy's, with a product judged by what it prints as: 2*(a + b) prints as
        the sum 2*a + 2*b (coefficient_into_sum), which needs parentheses where a sum
        does (1 - 2*(a + b) lost them, and the sign of b with them)."""
        shown = coefficient_into_sum(item) if item.is_Mul else item
        if precedence(shown) < level or (not strict and precedence(shown) <= level):
            return f"({self._print(item)})"
        return self._print(item)

    def _python(self, expr: sp.Expr) -> bool:
        """A number or a size: Python arithmetic, not a NumPy call."""
        return all(self.ranks.get(s.name, -1) < 0 for s in expr.free_symbols)

    def _rank(self, expr: sp.Expr) -> int:
        if expr.is_Number:
            return -1
        return max((self.ranks.get(s.name, 0) for s in expr.free_symbols), default=-1)

    def _print_Add(self, expr, order=None):
        content, rest = expr.as_content_primitive()
        if (
            content != 1
            and _simple(content)
            and all(_simple(t.as_coeff_Mul()[0]) for t in rest.args)
            and _scalings(rest.args) + 1 < _scalings(expr.args)
        ):
            # 200*(x - y), not 200*x - 200*y (a pass less); but 24 - 48*x stays, and
            # 1.37*a + 1.74*b stays as written
            return self._print_Mul(sp.Mul(content, sp.Symbol(f"({self._print(rest)})")))
        terms = sorted(
            expr.as_ordered_terms(),
            key=lambda t: (self._rank(t), t.as_coeff_Mul()[0].is_negative),
        )
        out = self._print(terms[0])
        for term in terms[1:]:
            if term.as_coeff_Mul()[0].is_negative:
                out += " - " + self.parenthesize(-term, precedence(expr))
            else:
                out += " + " + self.parenthesize(term, precedence(expr), strict=True)
        return out

    def _print_Mul(self, expr):
        expr = coefficient_into_sum(expr)
        if not expr.is_Mul:
            return self._print(expr)
        c, rest = expr.as_coeff_Mul()
        prec = PRECEDENCE["Mul"]  # precedence(expr) is Add's when expr is negative
        if c.is_negative:
            if (
                c == -1 and rest.is_Add
            ):  # -(b + t) as -b - t: one pass less when b is small
                return self._print(
                    sp.Add(*(-term for term in rest.args), evaluate=False)
                )
            return "-" + self.parenthesize(-expr, prec, strict=True)
        numer, denom = [], []
        if (
            c.is_Float or c.q >= 1000
        ):  # a user's float (or its exact form): print it back
            if math.isfinite(float(c)):
                numer.append(sp.Symbol(repr(float(c))))
            else:  # x / 1e-310, folded into x * 1e310 by SymPy: no float holds 1e310
                denom.append(sp.Symbol(repr(float(1 / c))))
        else:
            numer += [sp.Integer(c.p)] if c.p != 1 else []
            denom += [sp.Integer(c.q)] if c.q != 1 else []
        for f in sp.Mul.make_args(rest):
            if f.is_Pow and f.exp.is_Rational and f.exp.is_negative:
                denom.append(f.base**-f.exp)
            else:
                numer.append(f)
        numer, denom = self._ordered(numer), self._ordered(denom)
        if denom and all(map(self._python, denom)):
            # 2.0/n*x: Python divides the numbers, NumPy passes over x once, not twice
            scalars = [f for f in numer if self._python(f)]
            rest = [f for f in numer if not self._python(f)]
            if scalars and rest:
                return f"{self._product(scalars)}/{self._product(denom, True)}*{self._product(rest)}"
        arrays = [f for f in numer if self._rank(f) > 0]
        if denom and len(arrays) > 1 and all(self._rank(f) <= 0 for f in denom):
            # 2/n*a*b: scale once, not after the product of arrays
            scalars = [f for f in numer if self._rank(f) <= 0] or [sp.S.One]
            return f"{self._product(scalars)}/{self._product(denom, True)}*{self._product(arrays)}"
        out = self._product(numer or [sp.S.One])
        return f"{out}/{self._product(denom, True)}" if denom else out

    def _product(self, factors: list[sp.Expr], divisor: bool = False) -> str:
        text = "*".join(self.parenthesize(f, PRECEDENCE["Mul"]) for f in factors)
        return (
            f"({text})" if divisor and (len(factors) > 1 or factors[0].is_Mul) else text
        )

    def _ordered(self, factors: list[sp.Expr]) -> list[sp.Expr]:
        """SymPy's canonical order, then lower rank first."""
        if not factors:
            return []
        return sorted(
            sp.Mul(*factors, evaluate=False).as_ordered_factors(), key=self._rank
        )

    def _print_Integer(self, expr):
        """Numbers as floats: NumPy combines an array with a Python int ~0.2 us slower."""
        return literal(expr)

    def _print_Pow(self, expr, rational=False):
        if expr.exp.is_Rational and expr.exp.is_negative:  # 1/x**2, not x**(-2.0)
            return f"1.0/{self.parenthesize(1 / expr, precedence(expr), strict=True)}"
        if (
            expr.exp in (3, 4) and expr.base.is_Symbol
        ):  # NumPy's x**3 calls pow(): ~9x slower
            return "(" + "*".join([self._print(expr.base)] * int(expr.exp)) + ")"
        if expr.exp.is_Integer:  # x**2 (an integer power reads as one)
            base = self.parenthesize(expr.base, PRECEDENCE["Pow"], strict=True)
            return f"{base}**{expr.exp}"
        return self._hprint_Pow(expr, rational=rational, sqrt="numpy.sqrt")

    def _print_Float(self, expr):
        return literal(expr)

    def _print_Rational(self, expr):
        return rational(expr)

    def _print_Relational(self, expr):
        lhs = self.parenthesize(expr.lhs, precedence(expr))
        rhs = self.parenthesize(expr.rhs, precedence(expr))
        return (
            f"{lhs} {expr.rel_op} {rhs}"  # only ever an argument: np.where(x > 0, ...)
        )

    def _print_Piecewise(self, expr):
        *pairs, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError(f"Piecewise without a default branch: {expr}")
        if len(pairs) == 1 and pairs[0][0] == 1 and last == 0:
            if self._rank(pairs[0][1]) > 0:  # np.where(c, 1.0, 0.0) is ~6x slower
                return f"({self._print(pairs[0][1])}).astype(np.float64)"
        branch = self._print_branch
        out = branch(last)
        for value, cond in reversed(pairs):
            out = f"np.where({self._print(cond)}, {branch(value)}, {out})"
        return out

    def _print_branch(self, value) -> str:
        """Integer branches as floats: np.where(c, 1, 0) would give an integer array."""
        return repr(float(value)) if value.is_Integer else self._print(value)

    def _print_minmax(self, fn: str, args) -> str:
        first, *rest = sorted(args, key=lambda a: a.is_Number)  # np.minimum(x, 709)
        out = self._print(first)
        for a in rest:
            out = f"np.{fn}({out}, {self._print(a)})"
        return out

    def _print_And(self, expr):
        """Nested np.logical_and: SymPy's np.logical_and.reduce((a, b)) cannot broadcast."""
        return self._print_minmax("logical_and", expr.args)

    def _print_Or(self, expr):
        return self._print_minmax("logical_or", expr.args)

    def _print_Max(self, expr):
        return self._print_minmax("maximum", expr.args)

    def _print_Min(self, expr):
        return self._print_minmax("minimum", expr.args)

    def _print_Heaviside(self, expr):
        x, h0 = expr.args if len(expr.args) == 2 else (expr.args[0], sp.S.Half)
        if h0 in (0, 1) and self._rank(x) > 0:  # np.heaviside is ~8x slower
            return f"{mask(self._print(x), h0)}.astype(np.float64)"
        return f"np.heaviside({self._print(x)}, {float(h0)!r})"

    def _print_Abs(self, expr):
        return f"np.abs({self._print(expr.args[0])})"

    def _print_erf(self, expr):
        """NumPy has no erf: ``_erf`` is math.erf vectorized, emitted by the template."""
        return f"_erf({self._print(expr.args[0])})"

    def _print_erfc(self, expr):
        return f"_erfc({self._print(expr.args[0])})"

    def _print_erfc_ratio(self, expr):
        """``_erfc_ratio(x, erfc)``, the module's helper (it takes floats too, for
        unrolled code)."""
        x, erfc = (self._print(a) for a in expr.args)
        return f"_erfc_ratio({x}, {erfc})"

    def _print_log_erfc(self, expr):
        """``_log_erfc(x, erfc)``, the module's helper (it takes floats too)."""
        x, erfc = (self._print(a) for a in expr.args)
        return f"_log_erfc({x}, {erfc})"

    def _print_loggamma(self, expr):
        """``_lgamma`` is math.lgamma vectorized (inf at the poles), from the template."""
        return f"_lgamma({self._print(expr.args[0])})"

    def _print_polygamma(self, expr):
        """polygamma(0, x) and polygamma(1, x) as the module's ``_digamma`` and
        ``_trigamma`` (which also take floats, for unrolled code); no higher order."""
        n, x = expr.args
        if n not in (0, 1):
            raise UnsupportedError(
                f"polygamma({n}, x), digamma differentiated {n} times (as a Hessian "
                "through sg.digamma needs), is not supported: generated code has "
                "digamma and trigamma (orders 0 and 1) only"
            )
        return f"_{'trigamma' if n else 'digamma'}({self._print(x)})"


def mask(x: str, h0) -> str:
    """Where Heaviside(x, h0) is 1 (h0 is 0 or 1), as a boolean array."""
    return f"({x} {'>=' if h0 else '>'} 0.0)"


def to_numpy(expr: sp.Expr, ranks: dict[str, int] | None = None) -> str:
    return NumPyPrinter(ranks).doprint(expr)


class MathPrinter(PythonCodePrinter):
    """SymPy expression -> Python on floats with the ``math`` module, for unrolled code.

    Sums and products print as in the NumPy code (the methods are shared). Numbers print
    as floats (``2.0 * x``: CPython's fast path is float-by-float), small powers as
    products (``x*x`` is 3x faster than ``x**2``), Min/Max/Heaviside/sign as conditional
    expressions (a builtin call costs more than the arithmetic). A conditional needs its
    argument twice, so an argument that is not a name or number is handed to ``hoist``,
    which assigns it to a local and returns the local's name. Where NumPy would give
    inf or nan, ``math`` raises (exp overflow, log(0), x / 0.0); the generated module
    catches that and runs the NumPy code instead, so results keep NumPy's semantics.
    """

    _rank = NumPyPrinter._rank
    _python = NumPyPrinter._python
    _print_Add = NumPyPrinter._print_Add
    _print_Mul = NumPyPrinter._print_Mul
    _product = NumPyPrinter._product
    _ordered = NumPyPrinter._ordered
    _print_Relational = NumPyPrinter._print_Relational
    _print_polygamma = NumPyPrinter._print_polygamma  # the module's helpers take floats
    _print_erfc_ratio = NumPyPrinter._print_erfc_ratio
    _print_log_erfc = NumPyPrinter._print_log_erfc
    parenthesize = NumPyPrinter.parenthesize

    def doprint(self, expr, assign_to=None):
        return super().doprint(fold_numbers(sp.sympify(expr)), assign_to)

    def __init__(self, hoist=None):
        super().__init__({"fully_qualified_modules": True})
        self.ranks: dict[str, int] = {}
        self.hoist = hoist

    def _atom(self, expr: sp.Expr) -> str:
        """A name or number standing for ``expr``, which is used more than once."""
        text = self._print(expr)
        if expr.is_Symbol or expr.is_Number or self.hoist is None:
            return text if expr.is_Atom else f"({text})"
        return self.hoist(text)

    def _print_Integer(self, expr):
        return repr(float(expr))

    def _print_Rational(self, expr):
        return rational(expr)

    def _print_Float(self, expr):
        return literal(expr, "math")

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.as_base_exp()
        if exp.is_Integer and exp < 0:
            return f"1.0/{self.parenthesize(1 / expr, PRECEDENCE['Mul'], strict=True)}"
        if exp.is_Integer and exp <= 4:  # x*x*x, not the pow() call behind x**3
            return "(" + "*".join([self._atom(base)] * int(exp)) + ")"
        if exp.is_Integer:
            return f"{self.parenthesize(base, PRECEDENCE['Pow'], strict=True)}**{exp}"
        if exp == sp.S.Half:
            return f"math.sqrt({self._print(base)})"
        if exp == -sp.S.Half:
            return f"1.0/math.sqrt({self._print(base)})"
        # math.pow raises for a negative base (x**1.5 would give a complex number)
        return f"math.pow({self._print(base)}, {self._print(exp)})"

    def _print_Piecewise(self, expr):
        *pairs, (last, cond) = expr.args
        if cond != sp.true:
            raise ValueError(f"Piecewise without a default branch: {expr}")
        parts = [f"{self._print(v)} if {self._print(c)} else" for v, c in pairs]
        return "(" + " ".join([*parts, self._print(last)]) + ")"

    def _print_minmax(self, expr, keep: str) -> str:
        """``(709.0 if a > 709.0 else a)``: NaN in ``a`` stays NaN, as with np.minimum.
        Of several values, any may be NaN, which max() would drop: the module's ``_max``
        raises on it instead, and the caller falls back to NumPy."""
        if sum(not a.is_Number for a in expr.args) > 1:
            args = ", ".join(self._print(a) for a in expr.args)
            return f"{'_max' if keep == '<' else '_min'}({args})"
        a, b = sorted(expr.args, key=lambda x: x.is_Number)
        a, b = self._atom(a), self._atom(b)
        return f"({b} if {a} {keep} {b} else {a})"

    def _print_Max(self, expr):
        return self._print_minmax(expr, "<")

    def _print_Min(self, expr):
        return self._print_minmax(expr, ">")

    def _print_Heaviside(self, expr):
        x, h0 = expr.args if len(expr.args) == 2 else (expr.args[0], sp.S.Half)
        if h0 == 0:
            return f"(1.0 if {self._print(x)} > 0.0 else 0.0)"
        x = self._atom(x)
        return f"(1.0 if {x} > 0.0 else {self._print(h0)} if {x} == 0.0 else 0.0)"

    def _print_sign(self, expr):
        x = self._atom(expr.args[0])
        return f"(1.0 if {x} > 0.0 else -1.0 if {x} < 0.0 else {x}*0.0)"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_floor(self, expr):
        return f"float(math.floor({self._print(expr.args[0])}))"

    def _print_ceiling(self, expr):
        return f"float(math.ceil({self._print(expr.args[0])}))"

    def _print_And(self, expr):
        return "(" + " and ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        return "(" + " or ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"(not {self._print(expr.args[0])})"
