"""Reductions over `dim` (an int or tuple, negatives allowed; None means all dims).

Each forward keeps the reduced dims (keepdims=True) so that its backward can reshape
g to that kept shape and broadcast it back over the input.
"""

import math
from collections import namedtuple

import numpy as np

from .autograd import underflow_ok

MaxResult = namedtuple("max", ["values", "indices"])


def _dims(dim, ndim):
    """Sorted non-negative axes for `dim`, with torch's error for out-of-range dims."""
    if dim is None or dim == ():
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int | np.integer) else tuple(dim)
    n = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1
    for d in dims:
        if not -n <= d < n:
            raise IndexError(
                f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                f"but got {d})"
            )
    return tuple(sorted({d % n for d in dims})) if ndim else ()


def _reduced(self, out_kept, dims, keepdim, backward, name, saves=True):
    out = out_kept if keepdim else np.squeeze(out_kept, axis=dims)
    return self._result(out, (self,), backward, name, saves)


class ReductionOps:
    def sum(self, dim=None, keepdim=False):
        x, dims = self._data, _dims(dim, self.ndim)
        out = x.sum(axis=dims, keepdims=True)

        def backward(g):
            return (np.broadcast_to(g.reshape(out.shape), x.shape),)

        return _reduced(self, out, dims, keepdim, backward, "SumBackward0", saves=False)

    def mean(self, dim=None, keepdim=False):
        x, dims = self._data, _dims(dim, self.ndim)
        out = x.mean(axis=dims, keepdims=True)
        count = math.prod(x.shape[d] for d in dims)

        def backward(g):
            return (np.broadcast_to(g.reshape(out.shape) / count, x.shape),)

        return _reduced(
            self, out, dims, keepdim, backward, "MeanBackward0", saves=False
        )

    def amax(self, dim=(), keepdim=False):
        """Maximum over `dim`; the gradient is shared evenly among tied maxima."""
        x, dims = self._data, _dims(dim, self.ndim)
        out = x.max(axis=dims, keepdims=True)

        def backward(g):
            ties = x == out
            return (g.reshape(out.shape) * ties / ties.sum(axis=dims, keepdims=True),)

        return _reduced(self, out, dims, keepdim, backward, "AmaxBackward0")

    def max(self, dim=None, keepdim=False):
        """max() reduces everything (ties share the gradient); max(dim) gives
        (values, indices) and routes the gradient to the first maximum, as in torch."""
        if dim is None:
            return self.amax()
        x, (dim,) = self._data, _dims(dim, self.ndim)
        idx = np.argmax(x, axis=dim, keepdims=True)

        def backward(g):
            grad = np.zeros_like(x, dtype=g.dtype)
            np.put_along_axis(grad, idx, g.reshape(idx.shape), axis=dim)
            return (grad,)

        values = np.take_along_axis(x, idx, axis=dim)
        values = _reduced(self, values, (dim,), keepdim, backward, "MaxBackward0")
        indices = self._result(idx if keepdim else np.squeeze(idx, axis=dim))
        return MaxResult(values, indices)

    def argmax(self, dim=None, keepdim=False):
        x = self._data
        if dim is None:
            return self._result(np.argmax(x))
        return self._result(np.argmax(x, axis=dim, keepdims=keepdim))

    @underflow_ok
    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(x))) computed as m + log(sum(exp(x - m))) with m the max."""
        x, dims = self._data, _dims(dim, self.ndim)
        m = x.max(axis=dims, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)  # all -inf (or an inf) slice: shift by 0
        out = np.log(np.exp(x - m).sum(axis=dims, keepdims=True)) + m

        def backward(g):
            return (g.reshape(out.shape) * np.exp(x - out),)

        return _reduced(self, out, dims, keepdim, backward, "LogsumexpBackward0")

    @underflow_ok
    def softmax(self, dim):
        x = self._data
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        out = e / e.sum(axis=dim, keepdims=True)

        def backward(g):
            return (out * (g - (g * out).sum(axis=dim, keepdims=True)),)

        return self._result(out, (self,), backward, "SoftmaxBackward0")

    @underflow_ok
    def log_softmax(self, dim):
        x = self._data
        shifted = x - x.max(axis=dim, keepdims=True)
        out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))

        def backward(g):
            return (g - np.exp(out) * g.sum(axis=dim, keepdims=True),)

        return self._result(out, (self,), backward, "LogSoftmaxBackward0")
