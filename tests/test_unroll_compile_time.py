"""unroll._replaced: xreplace without SymPy's slow assumption queries, and the same result.

The unrolled function inlines single-use values by substitution; skipping evaluation
where it cannot change anything must give exactly xreplace's tree (generated code is
compared byte for byte), in and out of symgrad's factored SymPy settings.
"""

import pytest
import sympy as sp

from symgrad.symbolic import Max, Min, factored
from symgrad.unroll import _replaced

a, b, c, s = sp.symbols("a b c s", real=True)
SUM = 2 * a * b - 3 * c + 1


def _sigmoid(x):
    return 1 / (1 + sp.exp(Min(709, -x)))


CASES = [
    (_sigmoid(s), {s: SUM}),  # the case it is for: exp and the power skip evaluation
    (_sigmoid(s) * (1 - _sigmoid(s)), {s: a * b}),
    (sp.exp(Max(0, s)), {s: SUM}),  # a zero number: exp evaluates as usual
    (sp.exp(Min(709, s)), {s: sp.log(a)}),
    (sp.exp(Min(709, s)), {s: sp.Integer(3)}),  # Min of numbers: a number
    ((1 + s) ** -2, {s: a + b}),
    ((1 + s) ** -1, {s: sp.I * a}),  # a literal a + I*b: Add's _eval_power applies
    ((1 + s) ** -1, {s: -1}),  # 1/0
    ((s + a) ** 2, {s: -a}),
    ((s + 1) ** sp.Rational(1, 2), {s: 3}),
    (sp.tanh(s) + s**3, {s: -a - b}),
    (sp.Piecewise((s, a > 0), (0, True)), {s: SUM, a: b}),
    (a * b, {c: s}),  # nothing to replace: the same object
]


def _both(expr, rule):
    return _replaced(expr, rule), expr.xreplace(rule)


@pytest.mark.parametrize("run", [_both, factored(_both)], ids=["plain", "factored"])
@pytest.mark.parametrize(("expr", "rule"), CASES)
def test_replaced_is_xreplace(expr, rule, run):
    got, want = run(expr, rule)
    assert sp.srepr(got) == sp.srepr(want)
    if want is expr:
        assert got is expr
