"""torch.save / torch.load for state dicts and other nests of dicts, lists and
tuples: tensors are stored as their arrays, the whole in NumPy's .npy format (an
object array, which NumPy pickles). Loading unpickles, so load only trusted files
(as torch.load with weights_only=False)."""

import contextlib

import numpy as np

from .tensor import Tensor


class _StoredTensor:
    """A tensor as saved: a copy of its array and whether it required grad."""

    def __init__(self, tensor):
        self.array = np.array(tensor._data)
        self.requires_grad = tensor.requires_grad


def _map(obj, fn, kind):
    """obj with fn applied to each `kind` inside its dicts, lists and tuples."""
    if isinstance(obj, kind):
        return fn(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _map(v, fn, kind)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_map(v, fn, kind) for v in obj)
    return obj


def _file(f, mode):
    """The path f opened (closed on exit), or f itself if it is a file object."""
    if isinstance(f, str) or hasattr(f, "__fspath__"):
        return open(f, mode)
    return contextlib.nullcontext(f)


def save(obj, f):
    """Write obj to f, a path (written as named) or a binary file object."""
    holder = np.empty((), object)  # a 0-d array, whatever obj is
    holder[()] = _map(obj, _StoredTensor, Tensor)
    with _file(f, "wb") as file:
        np.save(file, holder, allow_pickle=True)


def load(f, map_location=None, weights_only=False):
    """What save() wrote to f; the CPU is the only device, so map_location changes
    nothing."""
    with _file(f, "rb") as file:
        obj = np.load(file, allow_pickle=True)[()]
    return _map(obj, lambda s: Tensor._wrap(s.array, s.requires_grad), _StoredTensor)
