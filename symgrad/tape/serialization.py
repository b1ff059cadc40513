"""torch.save / torch.load for state dicts and other nests of dicts, lists and
tuples: tensors are stored as their arrays, the whole in NumPy's .npy format (an
object array, which NumPy pickles). Loading unpickles, so load only trusted files
(as torch.load with weights_only=False)."""

import contextlib

import numpy as np

from .tensor import Tensor


class _StoredTensor:
    """A tensor as saved: its class, whether it required grad, and its array as a
    window (shape, strides, byte offset) into a copy of the memory it shows, which
    is shared by all tensors saved from that memory, so that views and repeats
    load sharing memory as in torch."""

    def __init__(self, tensor, memories):
        a = tensor._data
        root = a
        while isinstance(root.base, np.ndarray):
            root = root.base
        if not root.flags.c_contiguous:  # a window needs C-ordered memory: copy
            root = a
        if id(root) not in memories:  # root kept too, so that its id stays unique
            memories[id(root)] = (root, np.array(root))
        self.memory = memories[id(root)][1]
        self.window = (a.shape, a.strides, _address(a) - _address(root))
        self.cls, self.requires_grad = type(tensor), tensor.requires_grad

    def load(self, cache):
        """The tensor, made once per saved tensor (`cache` maps id(self))."""
        if id(self) not in cache:
            shape, strides, offset = self.window
            array = np.ndarray(shape, self.memory.dtype, self.memory, offset, strides)
            cache[id(self)] = (  # an nn.Parameter is restored as one, as in torch
                Tensor._wrap(array, self.requires_grad)
                if self.cls is Tensor
                else self.cls(array, self.requires_grad)
            )
        return cache[id(self)]


def _address(a):
    return a.__array_interface__["data"][0]


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
    memories, stored = {}, {}  # by id: one copy per memory, one record per tensor

    def store(t):
        if id(t) not in stored:
            stored[id(t)] = _StoredTensor(t, memories)
        return stored[id(t)]

    holder[()] = _map(obj, store, Tensor)
    with _file(f, "wb") as file:
        np.save(file, holder, allow_pickle=True)


def load(f, map_location=None, weights_only=False):
    """What save() wrote to f; the CPU is the only device, so map_location changes
    nothing."""
    with _file(f, "rb") as file:
        obj = np.load(file, allow_pickle=True)[()]
    cache = {}
    return _map(obj, lambda s: s.load(cache), _StoredTensor)
