"""NumPy's linear algebra on expressions: solve, inv, slogdet, det.

Each works on the last two axes, batched over the others as ``np.linalg``'s are, and
prints as the ``np.linalg`` call; its gradient is built from these functions again
(``solve`` of the transpose, ``inv``), so Hessians exist too.
"""

from __future__ import annotations

from . import ops
from .model import Expr, _expr, _values


def _matrices(*xs, what: str) -> list:
    return _values([_expr(x, what) for x in xs], what)


def solve(a: Expr, b: Expr) -> Expr:
    """x with ``a @ x == b``: NumPy 2's ``np.linalg.solve``. ``a`` is (..., n, n); ``b``
    is one vector (n,) when 1-D, else (..., n, k); the batch axes broadcast."""
    return Expr(ops.solve(*_matrices(a, b, what="sg.solve")))


def inv(a: Expr) -> Expr:
    """The inverse of each square matrix (..., n, n): ``np.linalg.inv``."""
    return Expr(ops.inv(*_matrices(a, what="sg.inv")))


def slogdet(a: Expr) -> tuple[Expr, Expr]:
    """``(sign, logabsdet)`` of the determinants of (..., n, n), as ``np.linalg.slogdet``;
    only ``logabsdet`` has a gradient (the sign is piecewise constant, as in torch).
    Each half is computed only if used."""
    (node,) = _matrices(a, what="sg.slogdet")
    return Expr(ops.det_sign(node)), Expr(ops.logabsdet(node))


def det(a: Expr) -> Expr:
    """The determinants of (..., n, n): ``np.linalg.det``; its gradient, det(a) times
    inv(a)^T, needs ``a`` invertible."""
    return Expr(ops.det(*_matrices(a, what="sg.det")))
