"""Least-squares fit of an exponential decay, declared as one SymPy formula."""

import sympy as sp

import symgrad as sg


def build() -> sg.Model:
    a, b, c, t, y = sp.symbols("a b c t y")
    return sg.Model.from_expr(
        "decay_fit",
        loss=(a * sp.exp(-b * t) + c - y) ** 2,
        params=[a, b, c],
        inputs=[t, y],
        reduce="mean",
        doc="Fit y ~ a exp(-b t) + c by mean squared error.",
    )
