"""The n-dimensional Rosenbrock function, written with slices so n stays symbolic."""

import symgrad as sg


def build() -> sg.Model:
    m = sg.Model("rosenbrock", doc="Rosenbrock function of a vector x of any length n.")
    x = m.param("x", ("n",))
    head, tail = x[:-1], x[1:]
    m.loss(sg.sum(100 * (tail - head**2) ** 2 + (1 - head) ** 2))
    m.unroll(n=10)  # a small fixed n: straight-line Python beats NumPy
    return m
