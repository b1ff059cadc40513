"""Differentiable functions of several tensors: cat, stack and where."""

import numpy as np

from .arithmetic import broadcast_shape, unbroadcast
from .dtypes import scalar_name
from .reductions import normalize_dims
from .tensor import Tensor


def _check_cat(tensors, dim):
    """torch's errors for tensors that cannot be joined along dim."""
    first = tensors[0]
    if first.ndim == 0:
        raise RuntimeError(
            "zero-dimensional tensor (at position 0) cannot be concatenated"
        )
    (axis,) = normalize_dims(dim, first.ndim)
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim:
            raise RuntimeError(
                "Tensors must have same number of dimensions: got "
                f"{first.ndim} and {t.ndim}"
            )
        for d, (n, m) in enumerate(zip(first.shape, t.shape, strict=True)):
            if d != axis and n != m:
                raise RuntimeError(
                    f"Sizes of tensors must match except in dimension {axis}. "
                    f"Expected size {n} but got size {m} for tensor number {i} in "
                    "the list."
                )


def cat(tensors, dim=0):
    """Join tensors along an existing dim; g is split back into the pieces."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    _check_cat(tensors, dim)
    out = np.concatenate([t._data for t in tensors], axis=dim)
    cuts = np.cumsum([t.shape[dim] for t in tensors])[:-1]

    def backward(g):
        return tuple(np.split(g, cuts, axis=dim))

    return Tensor._result(out, tensors, backward, "CatBackward0", saves=False)


def stack(tensors, dim=0):
    """Join equal-shaped tensors along a new dim; g is unstacked into the pieces."""
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise RuntimeError(
                "stack expects each tensor to be equal size, but got "
                f"{list(tensors[0].shape)} at entry 0 and {list(t.shape)} at entry {i}"
            )
    out = np.stack([t._data for t in tensors], axis=dim)

    def backward(g):
        return tuple(np.moveaxis(g, dim, 0))

    return Tensor._result(out, tensors, backward, "StackBackward0", saves=False)


def where(condition, input=None, other=None):
    """input where condition holds, else other; either may be a Python number.
    where(condition) alone is condition.nonzero(as_tuple=True)."""
    if input is None and other is None:
        return condition.nonzero(as_tuple=True)
    if not isinstance(input, Tensor):
        input = (
            Tensor._wrap(input) if not isinstance(other, Tensor) else other._lift(input)
        )
    other = input._lift(other)
    if condition.dtype != np.bool_:
        raise RuntimeError(
            "where expected condition to be a boolean tensor, but got a tensor with "
            f"dtype {scalar_name(condition.dtype)}"
        )
    cond = condition._data
    broadcast_shape(broadcast_shape(cond.shape, input.shape), other.shape)
    out = np.where(cond, input._data, other._data)

    def backward(g):
        return (
            (
                unbroadcast(np.where(cond, g, 0), input.shape)
                if input.requires_grad
                else None
            ),
            (
                unbroadcast(np.where(cond, 0, g), other.shape)
                if other.requires_grad
                else None
            ),
        )

    return Tensor._result(out, (input, other), backward, "WhereBackward0", (condition,))
