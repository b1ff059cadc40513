"""The NumPy printer: whatever SymPy expression it is given, the source computes its value."""

import math

import numpy as np
import sympy as sp
from helpers import compile_module
from hypothesis import given, settings
from hypothesis import strategies as st
from sympy.core.parameters import distribute

import symgrad as sg
from symgrad.printer import to_numpy
from symgrad.symbolic import lower, relu, sigmoid, softplus

X, Y, Z = sp.symbols("x y z", real=True)
VALUES = {"x": 0.7, "y": -1.3, "z": 2.1}


def expressions():
    """Builders of random expressions: built inside the test, under its SymPy settings."""
    leaves = st.sampled_from([X, Y, Z, sp.Integer(2), sp.Integer(-3), sp.Rational(1, 3),
                              sp.Rational(0.1), sp.Float(0.25)]).map(lambda e: lambda: e)  # fmt: skip
    unary = [sp.exp, sp.sin, sp.tanh, sp.Abs, sigmoid, softplus, relu, lambda e: -e]
    binary = [
        lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b,
        lambda a, b: a / (2 + b**2), lambda a, b: a - (a + b), lambda a, b: -(a + b) * b,
        lambda a, b: 3 * (a - b), lambda a, b: sp.Max(a, b),
        lambda a, b: 1 - sp.Rational(1, 2) * (sp.Float(0.7) * a * (b + 1) + a * b),
        lambda a, b: sp.Piecewise((a, a > b), (b, True)),
    ]  # fmt: skip
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.tuples(st.sampled_from(unary), inner).map(
                lambda p: lambda: p[0](p[1]())
            ),
            st.tuples(st.sampled_from(binary), inner, inner).map(
                lambda p: lambda: p[0](p[1](), p[2]())
            ),
            st.tuples(inner, st.sampled_from([2, 3, -1, -2])).map(
                lambda p: lambda: p[0]() ** p[1]
            ),
        ),
        max_leaves=8,
    )


def evaluate(source: str) -> float:
    return float(eval(source, {"np": np, **VALUES}))  # noqa: S307 - our own output


@settings(max_examples=300, deadline=None, derandomize=True)
@given(expressions(), st.booleans())
def test_printed_source_computes_the_expression(build, factored):
    with distribute(not factored):
        expr = lower(build())
        subs = {sp.Symbol(k, real=True): v for k, v in VALUES.items()}
        try:
            expected = float(expr.evalf(subs=subs))
        except (TypeError, ValueError):  # zoo, nan: nothing to compare
            return
        if not math.isfinite(expected):
            return
        with np.errstate(all="ignore"):
            actual = evaluate(to_numpy(expr))
    assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12), to_numpy(expr)


def test_negated_sums_keep_their_parentheses():
    with distribute(False):
        for expr in [
            -(X + Y),
            X - (Y + sp.log(Z)),
            -2 * (X + Y),
            sp.Min(-(X + Y), 709),
            # a product that prints as a sum (its coefficient distributed) is one
            1
            - sp.Rational(1, 2) * (sp.Float(0.7) * X * (Y + Z) + sp.Float(0.7) * Y * Z),
        ]:
            subs = {X: 0.7, Y: -1.3, Z: 2.1}
            assert math.isclose(evaluate(to_numpy(expr)), float(expr.evalf(subs=subs)))


def test_reads_like_hand_written_numpy():
    assert to_numpy(1 / X) == "1.0/x"
    assert to_numpy(X / 3) == "x/3.0"
    assert to_numpy(Y - X) == "y - x"
    assert to_numpy(sp.Rational(0.1) * X) == "0.1*x"
    assert to_numpy(sp.Piecewise((X, X > 0), (Y, True))) == "np.where(x > 0.0, x, y)"


def test_user_floats_print_as_written():
    expr = sp.Rational(1.37) * X + sp.Rational(1.74) * Y
    assert to_numpy(expr) in ("1.37*x + 1.74*y", "1.74*y + 1.37*x")
    assert to_numpy(200 * X - 200 * Y) == "200.0*(x - y)"


def test_integers_print_as_floats_but_powers_stay_integer():
    """NumPy combines an array with a Python int slower than with a float."""
    assert to_numpy(2 * X + Y) == "2.0*x + y"
    assert to_numpy(X**2) == "x**2"
    assert to_numpy(sp.Max(X, 0)) == "np.maximum(x, 0.0)"
    # fractions as the unrolled printer writes them: short decimals, or float / float
    assert to_numpy(sp.Rational(9, 4) + X) == "2.25 + x"
    assert to_numpy(X ** sp.Rational(1, 3)) == "x**(1.0/3.0)"


def test_a_coefficient_goes_into_a_sum_it_scales_for_free():
    """-24*x*y*(2*y - 1): the 24 rides on the sum's own coefficients, a pass less."""
    assert to_numpy(-24 * X * Y * (2 * Y - 1)) == "x*y*(24.0 - 48.0*y)"
    assert to_numpy(sp.Rational(1, 2) * X * (2 * Y + 4)) == "x*(2.0 + y)"
    # scaling x + y would cost two multiplications instead of one
    assert to_numpy(3 * X * (X + Y)) == "3.0*x*(x + y)"
    # and 24*(1 - 2*x) would cost one more than 24 - 48*x
    assert to_numpy(24 - 48 * X) == "24.0 - 48.0*x"


def test_numbers_over_sizes_are_divided_by_python_before_scaling_an_array():
    """2.0/n*x is one pass over x (n is a size: a Python int); 2.0*x/n is two."""
    n = sp.Symbol("n")
    ranks = {"x": 1, "y": 0, "n": -1}
    assert to_numpy(2 * X / n, ranks) == "2.0/n*x"
    assert to_numpy(-2 * X * Y / n, ranks) == "-2.0/n*y*x"
    assert to_numpy(X / n, ranks) == "x/n"  # nothing to fold: one pass already
    assert to_numpy(2 * X / Y, ranks) == "2.0*x/y"  # y is a 0-d array, not Python's
    values = {**VALUES, "n": 3}
    printed = eval(to_numpy(-2 * X * Y / n, ranks), values)  # noqa: S307 - our own
    assert math.isclose(printed, -2.0 * 0.7 * -1.3 / 3, rel_tol=1e-15)


def test_conditions_are_reduced_by_boolean_algebra_alone():
    """sg.clip's gradient had np.logical_and(t4, np.logical_or(t4, t5)), which is t4.
    The comparisons are taken as opaque, so NaN compares as it did (False)."""
    lo, hi = sp.symbols("lo hi", real=True)
    a, b, c = X < lo, lo < hi, Y > X
    conditions = [
        sp.And(a, sp.Or(a, b)),
        sp.Or(sp.And(a, b), sp.And(a, b, c), c),
        sp.And(sp.Or(a, b, c), sp.Or(a, b)),
    ]
    reduced = [a, sp.Or(sp.And(a, b), c), sp.Or(a, b)]
    for cond, expected in zip(conditions, reduced, strict=True):
        expr = sp.Piecewise((1, cond), (0, True))
        assert lower(expr) == sp.Piecewise((1, expected), (0, True))
        for x in (np.nan, -1.0, 0.5, 2.0):
            values = {"np": np, "x": x, "lo": 0.0, "y": 1.0, "hi": 1.0}
            before, after = (eval(to_numpy(e), values) for e in (expr, lower(expr)))
            assert before == after, (cond, x)


def test_numbers_of_functions_are_folded_into_one_float():
    """sqrt(2)/sqrt(pi) would be a NumPy call per run; 1/3 and 2*pi read as written."""
    assert (
        to_numpy(sp.sqrt(2) / sp.sqrt(sp.pi) * X) == f"{float(sp.sqrt(2 / sp.pi))!r}*x"
    )
    assert to_numpy(X / 3) == "x/3.0"
    assert "np.pi" in to_numpy(2 * sp.pi * X)


def test_sympy_numbers_are_constants_in_models():
    m = sg.Model("m")
    x = m.param("x", (3,))
    m.loss(sg.sum(x / sp.sqrt(2) + sp.pi + sp.Rational(1, 3)))
    x0 = np.array([0.5, -1.0, 2.0])
    loss, grads = compile_module(m).value_and_grad({"x": x0}, {})
    assert np.isclose(loss, np.sum(x0 / np.sqrt(2) + np.pi + 1 / 3), rtol=1e-15)
    assert np.allclose(grads["x"], 1 / np.sqrt(2), rtol=1e-15)
