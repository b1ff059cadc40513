"""The two array namespaces (`xp`) that backward rules run on.

A rule is written once, in Python operators, methods that NumPy arrays and Tensors
share (`reshape`, `sum(axis=, keepdims=)`, indexing) and the functions below. An
ordinary backward pass runs it on NumPy arrays (the fast path); under
create_graph=True it runs on Tensors, so the gradient is itself recorded and can be
differentiated again.
"""

import math

import numpy as np

from .special import digamma_array, polygamma_array

# torch computes inf and nan (exp(1000), log(0), 0/0, sqrt(-1)) without a word, and so
# does the tape: the ops (silent_methods) and the backward pass run under this.
silent = np.errstate(all="ignore")


def silent_methods(cls):
    """cls with each of its methods run under `silent`: one place for every op of an
    op family, however it computes (under a microsecond per call)."""
    for name, attr in list(vars(cls).items()):
        if hasattr(attr, "__code__"):  # a function (not a property)
            setattr(cls, name, silent(attr))
    return cls


@silent
def sigmoid_array(x):
    """1/(1+e^-x) for x >= 0, e^x/(1+e^x) below: never overflows, full precision."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


@silent
def logsigmoid_array(x):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)), finite for every x."""
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def elementwise(fn):
    """A `math` function applied element by element (NumPy has no erf), at Python
    speed; float inputs keep their dtype, as in torch."""
    vectorized = np.vectorize(fn, otypes=[np.float64])

    def forward(x):
        out = vectorized(x)
        return out.astype(x.dtype, copy=False) if x.dtype.kind == "f" else out

    return forward


erf_array = elementwise(math.erf)


def _scatter_array(g, shape, index):
    """Zeros of `shape` with g added at `index` (repeated positions accumulate)."""
    out = np.zeros(shape, g.dtype)
    np.add.at(out, index, g)  # unbuffered, unlike out[index] += g
    return out


class NumPyOps:
    """Rules on arrays: what a first-order backward pass uses."""

    records = False
    exp, log, sqrt, sin, cos = np.exp, np.log, np.sqrt, np.sin, np.cos
    sinh, cosh, tanh, abs, sign = np.sinh, np.cosh, np.tanh, np.abs, np.sign
    erf, concatenate = staticmethod(erf_array), np.concatenate
    digamma, polygamma = staticmethod(digamma_array), staticmethod(polygamma_array)
    where, broadcast_to, transpose, flip = (
        np.where,
        np.broadcast_to,
        np.transpose,
        np.flip,
    )
    maximum, einsum, roll, tril = np.maximum, np.einsum, np.roll, np.tril
    solve, inv = np.linalg.solve, np.linalg.inv
    zeros_like, scatter = np.zeros_like, staticmethod(_scatter_array)
    sigmoid, logsigmoid = staticmethod(sigmoid_array), staticmethod(logsigmoid_array)

    @staticmethod
    def matrix_transpose(a):
        return np.swapaxes(a, -1, -2)

    @staticmethod
    def cast(a, dtype):
        return a.astype(dtype, copy=False)


def _where(cond, a, b):
    from .functions import where  # here: functions builds on Tensor, which needs us
    from .tensor import Tensor

    if not isinstance(cond, Tensor):  # an array, or a NumPy bool scalar at 0-d
        cond = Tensor._wrap(np.asarray(cond))
    return where(cond, a, b)


def _concatenate(tensors, axis):
    from .functions import cat  # here: functions builds on Tensor

    return cat(tensors, axis)


def _einsum(equation, *operands):
    from .functions import einsum  # here: functions builds on Tensor

    return einsum(equation, *operands)


def _solve(a, b):
    from .linalg import solve  # here: linalg builds on Tensor

    return solve(a, b)


def _inv(a):
    from .linalg import inv  # here: linalg builds on Tensor

    return inv(a)


def _logsigmoid(a):
    from .functional import logsigmoid  # here: functional builds on Tensor

    return logsigmoid(a)


def _scatter_tensor(g, shape, index):
    """_scatter_array as a recorded op: its backward is indexing, whose backward
    is this again, so gradients of any order exist."""

    def backward(xp, gg):
        return (gg[index],)

    out = _scatter_array(g._data, shape, index)
    return g._result(out, (g,), backward, "IndexPutBackward0", saves=False)


def _method(name):
    """The Tensor method `name` as a function of the tensor."""
    return staticmethod(lambda a: getattr(a, name)())


class TensorOps:
    """Rules on Tensors, under create_graph=True: every step is recorded."""

    records = True
    exp, log, sqrt, sin = (
        _method("exp"),
        _method("log"),
        _method("sqrt"),
        _method("sin"),
    )
    cos, sinh, cosh = _method("cos"), _method("sinh"), _method("cosh")
    tanh, erf, digamma = _method("tanh"), _method("erf"), _method("digamma")
    tril = staticmethod(lambda a, diagonal=0: a.tril(diagonal))
    abs, sign, sigmoid = _method("abs"), _method("sign"), _method("sigmoid")
    where, scatter = staticmethod(_where), staticmethod(_scatter_tensor)
    logsigmoid, einsum = staticmethod(_logsigmoid), staticmethod(_einsum)
    concatenate = staticmethod(_concatenate)
    solve, inv = staticmethod(_solve), staticmethod(_inv)

    @staticmethod
    def broadcast_to(a, shape):
        return a.expand(shape)

    @staticmethod
    def matrix_transpose(a):
        return a.mT

    @staticmethod
    def maximum(a, b):
        return a.maximum(b)

    @staticmethod
    def polygamma(n, a):
        return a.polygamma(n)

    @staticmethod
    def zeros_like(a):
        return a.new_zeros(a.shape)

    @staticmethod
    def transpose(a, axes):
        return a.permute(axes)

    @staticmethod
    def flip(a, axes):
        return a.flip(axes)

    @staticmethod
    def roll(a, shifts, axis):
        return a.roll(shifts, axis)

    @staticmethod
    def cast(a, dtype):
        return a.to(dtype)
