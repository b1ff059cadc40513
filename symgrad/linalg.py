"""NumPy's linear algebra on expressions: solve, inv, slogdet, det (and norm: sg.norm).

Each works on the last two axes, batched over the others as ``np.linalg``'s are, and
prints as the ``np.linalg`` call; its gradient is built from these functions again
(``solve`` of the transpose, ``inv``), so Hessians exist too.
"""

from __future__ import annotations

from typing import NamedTuple

import symgrad

from . import ops
from .ir import ShapeError
from .model import TORCH_SPELLINGS, Expr, _expr, _values, norm, with_numpy_keywords

__all__ = ["det", "inv", "norm", "slogdet", "solve"]  # norm: np.linalg.norm, sg.norm


def __getattr__(name):
    """torch.linalg.cholesky, sg.linalg.einsum: name sg's twin or recipe."""
    hint = TORCH_SPELLINGS.get(name) or (
        f"sg.{name}" if name in symgrad.__all__ else None
    )
    raise AttributeError(
        f"module 'symgrad.linalg' has no attribute {name!r}"
        + (f"; use {hint}" if hint else "")
    )


def _matrices(*xs, what: str) -> list:
    return _values([_expr(x, what) for x in xs], what)


def solve(a: Expr, b: Expr) -> Expr:
    """x with ``a @ x == b``: NumPy 2's ``np.linalg.solve``. ``a`` is (..., n, n); ``b``
    is one vector (n,) when 1-D, else (..., n, k); the batch axes broadcast."""
    a_node, b_node = _matrices(a, b, what="sg.solve")
    try:
        return Expr(ops.solve(a_node, b_node))
    except ShapeError as error:
        if b_node.ndim < 2 or b_node.shape[-1] != a_node.shape[-1]:
            raise
        raise ShapeError(  # torch.linalg.solve reads it as a batch of vectors
            f"{error}; NumPy 2 reads a b of 2 or more axes as matrices: for a batch of "
            "vectors (torch's reading) write "
            f"sg.solve({a_node.describe()}, {b_node.describe()}[..., None])[..., 0]"
        ) from None


def inv(a: Expr) -> Expr:
    """The inverse of each square matrix (..., n, n): ``np.linalg.inv``."""
    return Expr(ops.inv(*_matrices(a, what="sg.inv")))


class SlogdetResult(NamedTuple):
    """NumPy 2's (and torch's) named pair."""

    sign: Expr
    logabsdet: Expr


def slogdet(a: Expr) -> SlogdetResult:
    """``(sign, logabsdet)`` of the determinants of (..., n, n), as ``np.linalg.slogdet``;
    only ``logabsdet`` has a gradient (the sign is piecewise constant, as in torch).
    Each half is computed only if used."""
    (node,) = _matrices(a, what="sg.slogdet")
    return SlogdetResult(Expr(ops.det_sign(node)), Expr(ops.logabsdet(node)))


def det(a: Expr) -> Expr:
    """The determinants of (..., n, n): ``np.linalg.det``; its gradient, det(a) times
    inv(a)^T, needs ``a`` invertible."""
    return Expr(ops.det(*_matrices(a, what="sg.det")))


with_numpy_keywords(globals())
