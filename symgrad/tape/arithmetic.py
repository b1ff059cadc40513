"""Broadcasting arithmetic, comparisons and matmul.

A broadcast operand's gradient is summed back to the operand's own shape
(`unbroadcast`). Python numbers on either side are lifted to constant tensors.
"""

import numpy as np


def broadcast_shape(a, b):
    """The broadcast of shapes a and b, or torch's error naming both shapes."""
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        d = next(
            d for d in range(1, min(len(a), len(b)) + 1) if 1 != a[-d] != b[-d] != 1
        )
        raise RuntimeError(
            f"The size of tensor a ({a[-d]}) must match the size of tensor b ({b[-d]}) "
            f"at non-singleton dimension {max(len(a), len(b)) - d} "
            f"(shapes {a} and {b})"
        ) from None


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, giving `shape`."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=stretched, keepdims=True) if stretched else g


def _binary(a, b, forward, rules, name, saves=True):
    """Elementwise op; rules[i](g, x, y, out) is the gradient for operand i."""
    b = a._lift(b)
    broadcast_shape(a.shape, b.shape)
    x, y = a._data, b._data
    out = forward(x, y)

    def backward(g):
        return tuple(
            unbroadcast(rule(g, x, y, out), t.shape) if t.requires_grad else None
            for rule, t in zip(rules, (a, b), strict=True)
        )

    return a._result(out, (a, b), backward, name, saves)


def _matmul_check(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(
            f"both arguments to matmul need to be at least 1D, but they are "
            f"{a.ndim}D and {b.ndim}D"
        )
    k = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if a.shape[-1] != k:
        raise RuntimeError(
            "mat1 and mat2 shapes cannot be multiplied "
            f"({'x'.join(map(str, a.shape))} and {'x'.join(map(str, b.shape))})"
        )


class ArithmeticOps:
    def __add__(self, other):
        rules = (lambda g, x, y, out: g, lambda g, x, y, out: g)
        return _binary(self, other, np.add, rules, "AddBackward0", saves=False)

    def __sub__(self, other):
        rules = (lambda g, x, y, out: g, lambda g, x, y, out: -g)
        return _binary(self, other, np.subtract, rules, "SubBackward0", saves=False)

    def __mul__(self, other):
        rules = (lambda g, x, y, out: g * y, lambda g, x, y, out: g * x)
        return _binary(self, other, np.multiply, rules, "MulBackward0")

    def __truediv__(self, other):
        rules = (lambda g, x, y, out: g / y, lambda g, x, y, out: -g * x / (y * y))
        return _binary(self, other, np.true_divide, rules, "DivBackward0")

    def __pow__(self, other):
        if isinstance(other, int | float):  # x ** p: no log(x) needed for x < 0
            p = other
            x = self._data
            out = x**p

            def backward(g):
                return (np.zeros_like(g) if p == 0 else g * p * x ** (p - 1),)

            return self._result(out, (self,), backward, "PowBackward0")
        rules = (
            lambda g, x, y, out: g * y * x ** (y - 1),
            # d/dy x**y = out * log(x), taken as 0 where x == 0 like torch
            lambda g, x, y, out: g * out * np.log(np.where(x == 0, 1, x)),
        )
        return _binary(self, other, np.power, rules, "PowBackward1")

    def __radd__(self, other):
        return self._lift(other) + self

    def __rsub__(self, other):
        return self._lift(other) - self

    def __rmul__(self, other):
        return self._lift(other) * self

    def __rtruediv__(self, other):
        return self._lift(other) / self

    def __rpow__(self, other):
        return self._lift(other) ** self

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        return self._lift(other).matmul(self)

    def matmul(self, other):
        """torch.matmul: a 1-D operand becomes a matrix and the extra dim is dropped."""
        other = self._lift(other)
        _matmul_check(self, other)
        a, b = self._data, other._data
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        out2_shape = broadcast_shape(a2.shape[:-2], b2.shape[:-2]) + (
            a2.shape[-2],
            b2.shape[-1],
        )
        out = np.matmul(a, b)

        def backward(g):
            g2 = g.reshape(out2_shape)
            ga = gb = None
            if self.requires_grad:
                ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape).reshape(
                    a.shape
                )
            if other.requires_grad:
                gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape).reshape(
                    b.shape
                )
            return ga, gb

        return self._result(out, (self, other), backward, "MmBackward0")

    # comparisons give bool tensors that never require grad
    def _compare(self, other, fn):
        other = self._lift(other)
        broadcast_shape(self.shape, other.shape)
        return self._result(fn(self._data, other._data))

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)
