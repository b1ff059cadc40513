"""Differentiable functions of several tensors: cat, stack and where."""

import numpy as np

from .arithmetic import broadcast_shape, unbroadcast
from .tensor import Tensor


def cat(tensors, dim=0):
    """Join tensors along an existing dim; g is split back into the pieces."""
    tensors = list(tensors)
    try:
        out = np.concatenate([t._data for t in tensors], axis=dim)
    except np.exceptions.AxisError:  # an IndexError, as in torch
        raise
    except ValueError as exc:  # mismatched shapes
        raise RuntimeError(str(exc)) from None
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


def where(condition, input, other):
    """input where condition holds, else other; either may be a Python number."""
    if not isinstance(input, Tensor):
        input = (
            Tensor._wrap(input) if not isinstance(other, Tensor) else other._lift(input)
        )
    other = input._lift(other)
    if condition.dtype != np.bool_:
        raise RuntimeError(
            "where expected condition to be a boolean tensor, but got a tensor with "
            f"dtype {condition.dtype}"
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
