"""torch.linalg: solve, solve_triangular, inv, slogdet, det and cholesky with their
gradients, the norms and cross.

The matrix functions work on the last two dims, batched over the others (which
broadcast, as torch's do). Their backward rules are written in `xp` (namespaces.py),
whose `solve` and `inv` are these functions again on Tensors: gradients of every order.
"""

from collections import namedtuple

import numpy as np

from .arithmetic import unbroadcast
from .dtypes import scalar_name
from .tensor import Tensor


class LinAlgError(RuntimeError):
    """A singular matrix (torch.linalg.LinAlgError, a RuntimeError)."""


linalg_slogdet = namedtuple("linalg_slogdet", ["sign", "logabsdet"])


def _check_square(A, op):
    """torch's errors for what is not a float (batch of) square matrix."""
    if A.ndim < 2:
        raise RuntimeError(f"{op}: The input tensor A must have at least 2 dimensions.")
    if A.shape[-1] != A.shape[-2]:
        raise RuntimeError(
            f"{op}: A must be batches of square matrices, but they are "
            f"{A.shape[-2]} by {A.shape[-1]} matrices"
        )
    if A.dtype.kind != "f":
        raise RuntimeError(
            f"{op}: Expected a floating point or complex tensor as input. Got "
            f"{scalar_name(A.dtype)}"
        )


def _lapack(fn, message, *arrays):
    """fn(*arrays), NumPy's error for a singular matrix raised as torch's."""
    try:
        return fn(*arrays)
    except np.linalg.LinAlgError:
        raise LinAlgError(message) from None


def solve(A, B, *, left=True):
    """X with A @ X = B (X @ A = B if not left). torch's rule: B is a vector (or a
    batch of them) if it is 1-D or has the shape A.shape[:-1], else matrices."""
    if not left:
        return solve(A.mT, B.mT).mT
    _check_square(A, "linalg.solve")
    if A.dtype != B.dtype:
        raise RuntimeError(
            "linalg.solve: Expected A and B to have the same dtype, but found A of "
            f"type {scalar_name(A.dtype)} and B of type {scalar_name(B.dtype)} instead"
        )
    vector = B.ndim == 1 or (B.ndim == A.ndim - 1 and B.shape == A.shape[:-1])
    b = B._data[..., None] if vector else B._data
    if b.ndim < 2 or b.shape[-2] != A.shape[-1]:
        n = A.shape[-1]
        raise RuntimeError(
            "linalg.solve: Incompatible shapes of A and B for the equation AX = B "
            f"({n}x{n} and {'x'.join(map(str, b.shape[-2:]))})"
        )
    x = _lapack(
        np.linalg.solve,
        "torch.linalg.solve: The solver failed because the input matrix is singular.",
        A._data,
        b,
    )

    def backward(xp, g, a, x):
        # as matrices (..., n, k): a vector's gradient gets a trailing dim of 1
        gb = xp.solve(xp.matrix_transpose(a), g[..., None] if vector else g)
        x = x[..., None] if vector else x
        ga = -(gb @ xp.matrix_transpose(x))
        gb = gb[..., 0] if vector else gb
        return (
            unbroadcast(ga, A.shape) if A.requires_grad else None,
            unbroadcast(gb, B.shape) if B.requires_grad else None,
        )

    out = x[..., 0] if vector else x
    return Tensor._result(out, (A, B), backward, "LinalgSolveExBackward0", (A, "out"))


def solve_triangular(A, B, *, upper, left=True, unitriangular=False):
    """X with A @ X = B (X @ A = B if not left), reading only A's upper or lower
    triangle (its diagonal as ones if unitriangular): solve with the triangle, so
    that A's gradient lies in it, as torch's."""
    if B.ndim < 2:
        raise RuntimeError(
            "linalg.solve_triangular: The input tensor B must have at least 2 "
            "dimensions."
        )
    A = A.triu() if upper else A.tril()
    if unitriangular:
        A = A - A.diagonal(0, -2, -1).diag_embed() + A.new_ones(A.shape[-1]).diag()
    if not left:
        return solve(A.mT, B.mT).mT
    return solve(A, B)


def inv(A):
    """The inverse of each matrix; its gradient is -Y^T g Y^T, Y the inverse."""
    _check_square(A, "linalg.inv")
    y = _lapack(
        np.linalg.inv,
        "linalg.inv: The inversion could not be completed because the input matrix "
        "is singular.",
        A._data,
    )

    def backward(xp, g, y):
        y_t = xp.matrix_transpose(y)
        return (-(y_t @ g @ y_t),)

    return Tensor._result(y, (A,), backward, "LinalgInvExBackward0", ("out",))


def cholesky(A, *, upper=False):
    """L lower triangular with L L^T = A (L^T if upper). torch's gradient:
    L^-T Phi(L^T g) L^-1, Phi keeping the lower triangle as a symmetric matrix's
    (its strict part mirrored, the diagonal halved)."""
    if upper:
        return cholesky(A).mT
    _check_square(A, "linalg.cholesky")
    low = _lapack(
        np.linalg.cholesky,
        "linalg.cholesky: The factorization could not be completed because the "
        "input is not positive-definite.",
        A._data,
    )

    def backward(xp, g, low):
        low_t = xp.matrix_transpose(low)
        p = xp.tril(low_t @ g)
        p = 0.5 * (p + xp.matrix_transpose(xp.tril(p, -1)))
        return (
            xp.matrix_transpose(
                xp.solve(low_t, xp.matrix_transpose(xp.solve(low_t, p)))
            ),
        )

    return Tensor._result(low, (A,), backward, "LinalgCholeskyExBackward0", ("out",))


def _per_matrix(g):
    """One number per matrix, (...,), as (..., 1, 1): to scale the matrices."""
    return g[..., None, None]


def slogdet(A):
    """(sign, logabsdet) of the determinants: log|det A|'s gradient is inv(A)^T;
    the sign, recorded as torch's is, passes none."""
    _check_square(A, "linalg.slogdet")
    sign, logabsdet = np.linalg.slogdet(A._data)

    def backward(xp, g, a):
        return (_per_matrix(g) * xp.matrix_transpose(xp.inv(a)),)

    name = "LinalgSlogdetBackward0"
    return linalg_slogdet(
        Tensor._result(sign, (A,), lambda xp, g: (None,), name, saves=False),
        Tensor._result(logabsdet, (A,), backward, name),
    )


def det(A):
    """The determinants; the gradient, det(A) inv(A)^T, needs A invertible (torch's
    also covers singular A)."""
    _check_square(A, "linalg.det")
    d = np.linalg.det(A._data)

    def backward(xp, g, a, d):
        return (_per_matrix(g * d) * xp.matrix_transpose(xp.inv(a)),)

    return Tensor._result(d, (A,), backward, "LinalgDetBackward0", (A, "out"))


def logdet(A):
    """log det A: log|det A|, and nan where det A < 0 (torch.logdet)."""
    from .functions import where  # here: functions builds on Tensor

    sign, logabsdet = slogdet(A)
    return where(sign == -1, np.nan, logabsdet)


def cross(input, other, *, dim=-1):
    """The cross products of the 3-vectors along dim (the other dims broadcast):
    components picked by index_select and multiplied, whose gradients are its."""
    if input.ndim != other.ndim:
        raise RuntimeError(
            "linalg.cross: inputs must have the same number of dimensions."
        )
    if input.shape[dim] != 3 or other.shape[dim] != 3:
        raise RuntimeError(
            f"linalg.cross: inputs dimension {dim} must have length 3. Got "
            f"{input.shape[dim]} and {other.shape[dim]}"
        )
    if input.dtype != other.dtype:
        raise RuntimeError(
            f"expected scalar type {scalar_name(input.dtype)} but found "
            f"{scalar_name(other.dtype)}"
        )

    def turned(t, order):  # (y, z, x) or (z, x, y) along dim
        return t.index_select(dim, Tensor._wrap(np.array(order)))

    a, b = (turned(input, [1, 2, 0]), turned(input, [2, 0, 1]))
    c, d = (turned(other, [2, 0, 1]), turned(other, [1, 2, 0]))
    return a * c - b * d


def vector_norm(x, ord=2, dim=None, keepdim=False):
    """The vector ord-norm over dim (all dims by default), whatever x's shape."""
    return x.norm(ord, dim, keepdim)


def norm(A, ord=None, dim=None, keepdim=False):
    """A vector norm when dim is one dim (or A is 1-D); else the Frobenius norm,
    the only matrix norm the tape has, over dim (default: all dims)."""
    dims = (dim,) if isinstance(dim, int) else (range(A.ndim) if dim is None else dim)
    if len(dims) == 1:
        return vector_norm(A, 2 if ord is None else ord, dim, keepdim)
    if ord not in (None, "fro"):
        raise NotImplementedError(f"linalg.norm: the matrix norm ord={ord!r}")
    return vector_norm(A, 2, dim, keepdim)
