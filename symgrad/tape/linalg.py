"""torch.linalg: the norms (Tensor.norm does the computing)."""


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
