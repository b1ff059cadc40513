"""Tensor factories and the seeded random generators they (and nn init) draw from.

Floats default to float64, a deliberate difference from torch's float32. Every
factory takes torch's `device=` and ignores it: the CPU is the only device (a CUDA
one raises, as in torch without CUDA).
"""

import numpy as np

from .dtypes import check_device
from .dtypes import device as _device
from .shapes import _shape_arg
from .tensor import Tensor, as_array


class Generator:
    """torch.Generator: a stream of draws that manual_seed (or set_state) makes
    reproducible. NumPy's PCG64 draws them, so the values are not torch's."""

    def __init__(self, device="cpu"):
        self._device = _device(device)
        self._numpy = np.random.default_rng()
        self.manual_seed(67280421310721)  # torch's seed for a new Generator

    @property
    def device(self):
        return self._device

    def manual_seed(self, seed):
        """Restart the stream from `seed` (an int; a negative one wraps to 64 bits,
        as in torch); returns the generator. Reseeded in place, so that whoever
        holds this generator sees the new seed."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RuntimeError(
                f"manual_seed expected a long, but got {type(seed).__name__}"
            )
        if not -(2**63) <= seed < 2**64:
            raise ValueError("Overflow when unpacking long long")
        self._seed = seed % 2**64
        self._numpy.bit_generator.state = np.random.PCG64(self._seed).state
        return self

    def seed(self):
        """Reseed from fresh entropy; returns the new seed."""
        seed = int(np.random.SeedSequence().entropy) % 2**64
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """The stream's position as a uint8 tensor, for set_state."""
        state = self._numpy.bit_generator.state
        words = (state["state"]["state"], state["state"]["inc"], state["uinteger"])
        data = b"".join(w.to_bytes(16, "little") for w in words)
        return Tensor._wrap(
            np.frombuffer(data + bytes([state["has_uint32"]]), np.uint8)
        )

    def set_state(self, new_state):
        """Continue from a get_state() position; returns the generator."""
        if not isinstance(new_state, Tensor):
            raise TypeError(
                f"expected a torch.ByteTensor, but got {type(new_state).__name__}"
            )
        if new_state.dtype != np.uint8:
            raise TypeError("RNG state must be a torch.ByteTensor")
        data = new_state._data.tobytes()
        if len(data) != 49:
            raise RuntimeError(
                "Expected a CPUGeneratorImplState of size 49 but found the input "
                f"RNG state size to be {len(data)}"
            )
        state, inc, uinteger = (
            int.from_bytes(data[i : i + 16], "little") for i in (0, 16, 32)
        )
        self._numpy.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": state, "inc": inc},
            "has_uint32": data[48],
            "uinteger": uinteger,
        }
        return self


# The generator draws take when given none; it starts from a fresh seed.
default_generator = Generator()
default_generator.seed()


def numpy_generator(generator=None):
    """The NumPy stream behind `generator` (the default generator if None)."""
    if generator is None:
        return default_generator._numpy
    if not isinstance(generator, Generator):
        raise TypeError(
            f"argument 'generator' must be torch.Generator, not "
            f"{type(generator).__name__}"
        )
    return generator._numpy


def manual_seed(seed):
    return default_generator.manual_seed(seed)


def seed():
    return default_generator.seed()


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(new_state):
    default_generator.set_state(new_state)


def tensor(data, dtype=None, device=None, requires_grad=False):
    """A new leaf tensor holding a copy of `data`."""
    check_device(device)
    return Tensor._wrap(
        np.array(as_array(data), dtype=dtype, order="C"), requires_grad=requires_grad
    )


def as_tensor(data, dtype=None, device=None):
    """`data` itself if it is a tensor of that dtype, a tensor sharing an array's
    memory where the dtype allows, else a new tensor."""
    check_device(device)
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
        check_device(device)
        shape = _checked_shape(_shape_arg(args if size is None else (size,)))
        return _new(fill(shape), dtype, requires_grad)

    return factory


zeros = _factory(np.zeros)
ones = _factory(np.ones)
empty = _factory(np.zeros)  # uninitialised memory in torch; zeros are as good a value


def _random(draw):
    """f(*size, generator=None, size=None, dtype=None, ...) filled by
    draw(NumPy stream, shape)."""

    def factory(*args, size=None, generator=None, **options):
        rng = numpy_generator(generator)
        return _factory(lambda shape: draw(rng, shape))(*args, size=size, **options)

    return factory


rand = _random(lambda rng, shape: rng.random(shape))  # uniform on [0, 1)
randn = _random(lambda rng, shape: rng.standard_normal(shape))


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """`size` filled with fill_value, whose type gives the default dtype."""
    check_device(device)
    if not isinstance(size, tuple | list):
        raise TypeError(
            "full(): argument 'size' (position 1) must be tuple of ints, not "
            f"{type(size).__name__}"
        )
    dtype = np.asarray(fill_value).dtype if dtype is None else dtype
    return _new(np.full(_checked_shape(tuple(size)), fill_value), dtype, requires_grad)


def _like(factory):
    """f_like(input, *args, dtype=None, ...): factory of input's shape and dtype."""

    def like(input, *args, dtype=None, **options):
        dtype = input.dtype if dtype is None else dtype
        return factory(input.shape, *args, dtype=dtype, **options)

    return like


zeros_like, ones_like, full_like = _like(zeros), _like(ones), _like(full)
empty_like, rand_like, randn_like = _like(empty), _like(rand), _like(randn)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The n x m (default n x n) identity matrix."""
    check_device(device)
    for name, k in (("n", n), ("m", m)):
        if k is not None and k < 0:
            raise RuntimeError(f"{name} must be greater or equal to 0, got {k}")
    return _new(np.eye(n, m), dtype, requires_grad)


def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False):
    """int64 for integer arguments, float64 otherwise."""
    check_device(device)
    start, end = (0, start) if end is None else (start, end)
    if step == 0:
        raise RuntimeError("step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError("upper bound and lower bound inconsistent with step sign")
    return Tensor._wrap(np.arange(start, end, step, dtype=dtype), requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """`steps` evenly spaced values from start to end inclusive."""
    check_device(device)
    if steps < 0:
        raise RuntimeError("number of steps must be non-negative")
    return _new(np.linspace(start, end, steps), dtype, requires_grad)


def randint(*args, size=None, generator=None, dtype=None, device=None):
    """randint(high, size) or randint(low, high, size): int64 values in [low, high)."""
    check_device(device)
    if size is None:
        *args, size = args
    low, high = (0, *args) if len(args) == 1 else args
    values = numpy_generator(generator).integers(low, high, _shape_arg((size,)))
    return Tensor._wrap(values if dtype is None else values.astype(dtype))


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None):
    """Draws from Normal(mean, std): numbers with a size, or tensors broadcast
    together; no gradient."""
    rng = numpy_generator(generator)
    if size is not None:
        return _new(rng.normal(mean, std, _shape_arg((size,))), dtype, False)
    mean, std = (getattr(v, "_data", v) for v in (mean, std))
    draws = rng.normal(mean, std)
    dtype = np.result_type(mean, std) if dtype is None else dtype
    return Tensor._wrap(np.asarray(draws, dtype))


def bernoulli(input, p=None, *, generator=None):
    """0/1 draws, 1 with probability `input` (or p), in input's dtype; no gradient."""
    probability = input._data if p is None else p
    draws = numpy_generator(generator).random(input.shape) < probability
    return Tensor._wrap(draws.astype(input.dtype))


def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Indices drawn with weights `input` (a row or a batch of rows), int64. Without
    replacement, an exponential race: zero weights come last, in index order."""
    rng = numpy_generator(generator)
    rows = np.atleast_2d(input._data).astype(np.float64)
    if not replacement and num_samples > rows.shape[-1]:
        raise RuntimeError(
            "cannot sample n_sample > prob_dist.size(-1) samples without replacement"
        )
    if replacement:
        picks = [rng.choice(r.size, num_samples, p=r / r.sum()) for r in rows]
    else:
        with np.errstate(divide="ignore"):
            keys = np.log(rng.random(rows.shape)) / rows
        picks = np.argsort(-keys, axis=-1, kind="stable")[:, :num_samples]
    picks = np.asarray(picks, np.int64)
    return Tensor._wrap(picks.reshape(*input.shape[:-1], num_samples))


def randperm(n, *, generator=None, dtype=np.int64, device=None, requires_grad=False):
    """A random permutation of 0 .. n-1."""
    check_device(device)
    draws = numpy_generator(generator).permutation(n)
    return Tensor._wrap(draws.astype(dtype), requires_grad)
