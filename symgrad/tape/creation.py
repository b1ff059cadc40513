"""Tensor factories and the seeded random generator they (and nn init) share.

Floats default to float64, a deliberate difference from torch's float32. Every
factory takes torch's `device=` and ignores it: the CPU is the only device.
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


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf tensor holding a copy of `data`."""
    return Tensor._wrap(
        np.array(as_array(data), dtype=dtype, order="C"), requires_grad=requires_grad
    )


def as_tensor(data, dtype=None, device=None):
    """`data` itself if it is a tensor of that dtype, a tensor sharing an array's
    memory where the dtype allows, else a new tensor."""
    if isinstance(data, Tensor):
        return data.to(dtype)
    return Tensor._wrap(np.asarray(as_array(data), dtype=dtype))


def from_numpy(array):
    """A tensor sharing memory with `array`."""
    return Tensor._wrap(array)


def _new(array, dtype, requires_grad):
    dtype = np.float64 if dtype is None else dtype  # (a np.dtype is falsy: no `or`)
    return Tensor._wrap(array.astype(dtype, copy=False), requires_grad)


def _checked_shape(shape):
    if any(n < 0 for n in shape):
        raise RuntimeError(
            f"Trying to create tensor with negative dimension "
            f"{next(n for n in shape if n < 0)}: {list(shape)}"
        )
    return shape


def _factory(fill):
    """f(*size, size=None, dtype=None, device=None, requires_grad=False) making
    fill(shape): sizes given as f(2, 3), f((2, 3)) or f(size=(2, 3))."""

    def factory(*args, size=None, dtype=None, device=None, requires_grad=False):
        shape = _checked_shape(_shape_arg(args if size is None else (size,)))
        return _new(fill(shape), dtype, requires_grad)

    return factory


zeros = _factory(np.zeros)
ones = _factory(np.ones)
empty = _factory(np.zeros)  # uninitialised memory in torch; zeros are as good a value
rand = _factory(lambda shape: default_generator.random(shape))  # uniform on [0, 1)
randn = _factory(lambda shape: default_generator.standard_normal(shape))


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """`size` filled with fill_value, whose type gives the default dtype."""
    if not isinstance(size, tuple | list):
        raise TypeError(
            "full(): argument 'size' (position 1) must be tuple of ints, not "
            f"{type(size).__name__}"
        )
    dtype = np.asarray(fill_value).dtype if dtype is None else dtype
    return _new(np.full(_checked_shape(tuple(size)), fill_value), dtype, requires_grad)


def _like(factory):
    """f_like(input, *args, dtype=None, ...): factory of input's shape and dtype."""

    def like(input, *args, dtype=None, device=None, requires_grad=False):
        dtype = input.dtype if dtype is None else dtype
        return factory(input.shape, *args, dtype=dtype, requires_grad=requires_grad)

    return like


zeros_like, ones_like, full_like = _like(zeros), _like(ones), _like(full)
empty_like, rand_like, randn_like = _like(empty), _like(rand), _like(randn)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The n x m (default n x n) identity matrix."""
    for name, k in (("n", n), ("m", m)):
        if k is not None and k < 0:
            raise RuntimeError(f"{name} must be greater or equal to 0, got {k}")
    return _new(np.eye(n, m), dtype, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """int64 for integer arguments, float64 otherwise."""
    start, end = (0, start) if end is None else (start, end)
    if step == 0:
        raise RuntimeError("step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError("upper bound and lower bound inconsistent with step sign")
    return Tensor._wrap(np.arange(start, end, step, dtype=dtype), requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """`steps` evenly spaced values from start to end inclusive."""
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    return _new(np.linspace(start, end, steps), dtype, requires_grad)


def randint(*args, size=None, dtype=None, device=None):
    """randint(high, size) or randint(low, high, size): int64 values in [low, high)."""
    if size is None:
        *args, size = args
    low, high = (0, *args) if len(args) == 1 else args
    values = default_generator.integers(low, high, _shape_arg((size,)))
    return Tensor._wrap(values if dtype is None else values.astype(dtype))


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None):
    """Draws from Normal(mean, std): numbers with a size, or tensors broadcast
    together; no gradient."""
    if size is not None:
        return _new(
            default_generator.normal(mean, std, _shape_arg((size,))), dtype, False
        )
    mean, std = (getattr(v, "_data", v) for v in (mean, std))
    draws = default_generator.normal(mean, std)
    dtype = np.result_type(mean, std) if dtype is None else dtype
    return Tensor._wrap(np.asarray(draws, dtype))


def bernoulli(input, p=None, *, generator=None):
    """0/1 draws, 1 with probability `input` (or p), in input's dtype; no gradient."""
    probability = input._data if p is None else p
    draws = default_generator.random(input.shape) < probability
    return Tensor._wrap(draws.astype(input.dtype))


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Indices drawn with weights `input` (a row or a batch of rows), int64. Without
    replacement, an exponential race: zero weights come last, in index order."""
    rows = np.atleast_2d(input._data).astype(np.float64)
    if not replacement and num_samples > rows.shape[-1]:
        raise RuntimeError(
            "cannot sample n_sample > prob_dist.size(-1) samples without replacement"
        )
    if replacement:
        picks = [
            default_generator.choice(r.size, num_samples, p=r / r.sum()) for r in rows
        ]
    else:
        with np.errstate(divide="ignore"):
            keys = np.log(default_generator.random(rows.shape)) / rows
        picks = np.argsort(-keys, axis=-1, kind="stable")[:, :num_samples]
    picks = np.asarray(picks, np.int64)
    return Tensor._wrap(picks.reshape(*input.shape[:-1], num_samples))


def randperm(n, dtype=np.int64, device=None, requires_grad=False):
    """A random permutation of 0 .. n-1."""
    return Tensor._wrap(default_generator.permutation(n).astype(dtype), requires_grad)
