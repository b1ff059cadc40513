"""Tensor factories and the seeded random generator they (and nn init) share.

Floats default to float64, a deliberate difference from torch's float32.
"""

import numpy as np

from .shapes import _shape_arg
from .tensor import Tensor, as_array

# One Generator object for the whole engine; manual_seed reseeds it in place so that
# modules holding a reference (nn's init) see the new seed.
default_generator = np.random.default_rng()


def manual_seed(seed):
    default_generator.bit_generator.state = np.random.PCG64(seed).state
    return default_generator


def tensor(data, dtype=None, requires_grad=False):
    """A new leaf tensor holding a copy of `data`."""
    return Tensor._wrap(
        np.array(as_array(data), dtype=dtype, order="C"), requires_grad=requires_grad
    )


def from_numpy(array):
    """A tensor sharing memory with `array`."""
    return Tensor._wrap(array)


def _new(array, dtype, requires_grad):
    dtype = np.float64 if dtype is None else dtype  # (a np.dtype is falsy: no `or`)
    return Tensor._wrap(array.astype(dtype, copy=False), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    dtype = np.asarray(fill_value).dtype if dtype is None else dtype
    return _new(np.full(_shape_arg((size,)), fill_value), dtype, requires_grad)


def zeros(*size, dtype=None, requires_grad=False):
    return _new(np.zeros(_shape_arg(size)), dtype, requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return _new(np.ones(_shape_arg(size)), dtype, requires_grad)


empty = zeros  # uninitialised memory in torch; zeros are as good an uninitialised value


def zeros_like(input, dtype=None, requires_grad=False):
    return zeros(
        input.shape,
        dtype=input.dtype if dtype is None else dtype,
        requires_grad=requires_grad,
    )


def ones_like(input, dtype=None, requires_grad=False):
    return ones(
        input.shape,
        dtype=input.dtype if dtype is None else dtype,
        requires_grad=requires_grad,
    )


def full_like(input, fill_value, dtype=None, requires_grad=False):
    return full(
        input.shape,
        fill_value,
        dtype=input.dtype if dtype is None else dtype,
        requires_grad=requires_grad,
    )


def eye(n, m=None, dtype=None, requires_grad=False):
    """The n x m (default n x n) identity matrix."""
    return _new(np.eye(n, m), dtype, requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    """int64 for integer arguments, float64 otherwise."""
    start, end = (0, start) if end is None else (start, end)
    return Tensor._wrap(np.arange(start, end, step, dtype=dtype), requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    """`steps` evenly spaced values from start to end inclusive."""
    return _new(np.linspace(start, end, steps), dtype, requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    """Uniform on [0, 1)."""
    return _new(default_generator.random(_shape_arg(size)), dtype, requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    """Standard normal."""
    return _new(
        default_generator.standard_normal(_shape_arg(size)), dtype, requires_grad
    )


def randint(*args, size=None, dtype=None):
    """randint(high, size) or randint(low, high, size): int64 values in [low, high)."""
    if size is None:
        *args, size = args
    low, high = (0, *args) if len(args) == 1 else args
    values = default_generator.integers(low, high, _shape_arg((size,)))
    return Tensor._wrap(values if dtype is None else values.astype(dtype))
