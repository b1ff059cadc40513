"""Broadcasting arithmetic, comparisons, bitwise ops and matmul.

A broadcast operand's gradient is summed back to the operand's own shape
(`unbroadcast`). Python numbers on either side are lifted to constant tensors, and
both operands are cast to torch's result dtype (`result_type`) before the op.
"""

import numpy as np

from .namespaces import silent_methods


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
            f"(shapes {tuple(a)} and {tuple(b)})"
        ) from None


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, giving `shape`."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=stretched, keepdims=True) if stretched else g


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2}  # torch promotes bool < int < float


def result_type(a, b):
    """torch's promotion: a higher category wins; within one category a 0-d tensor
    does not promote a dimensioned one (float32 * tensor(2.0) stays float32). A NumPy
    dtype, which NumPy takes faster than a tape dtype."""
    a, b = a._data, b._data
    ka, kb = _CATEGORY[a.dtype.kind], _CATEGORY[b.dtype.kind]
    if ka != kb:
        return (a if ka > kb else b).dtype
    if (a.ndim == 0) != (b.ndim == 0):
        return (a if a.ndim else b).dtype
    return np.promote_types(a.dtype, b.dtype)


def _no_bool_subtraction(a, b):
    if a.dtype == np.bool_ or getattr(b, "dtype", None) == np.bool_:
        raise RuntimeError(
            "Subtraction, the `-` operator, with a bool tensor is not supported. If "
            "you are trying to invert a mask, use the `~` or `logical_not()` operator "
            "instead."
        )


def joined_dtype(tensors):
    """torch's promotion of tensors joined by cat or stack: the highest category
    (bool < int < float) wins, promoted within it."""
    top = max(_CATEGORY[t.dtype.kind] for t in tensors)
    return np.result_type(*(t.dtype for t in tensors if _CATEGORY[t.dtype.kind] == top))


def operands(a, b):
    """(b as a Tensor, a's array, b's array), both cast to the result dtype."""
    b = a._lift(b)
    broadcast_shape(a.shape, b.shape)
    dtype = result_type(a, b)
    return b, a._data.astype(dtype, copy=False), b._data.astype(dtype, copy=False)


def _binary(a, b, forward, rules, name, reads=None):
    """Elementwise op; rules[i](xp, g, x, y, out) is the gradient for operand i, and
    reads[i] names the values it uses ("x", "y", "o" for out; None: none at all).
    As in torch, only the values that the needed rules read are saved (x * 2 saves
    nothing: the rules get None), so only those are checked for later in-place
    changes."""
    b, x, y = operands(a, b)
    out = forward(x, y)
    needed = (
        r for r, t in zip(reads or ("", ""), (a, b), strict=True) if t.requires_grad
    )
    used = "".join(needed)
    saves = tuple(
        v if k in used else None for k, v in zip("xyo", (a, b, "out"), strict=True)
    )
    dtype = x.dtype  # the saved operands' values are cast to it, as in forward

    def backward(xp, g, x=None, y=None, out=None):
        x, y = (v if v is None else xp.cast(v, dtype) for v in (x, y))
        return tuple(
            unbroadcast(rule(xp, g, x, y, out), t.shape) if t.requires_grad else None
            for rule, t in zip(rules, (a, b), strict=True)
        )

    return a._result(out, (a, b), backward, name, bool(used) and saves)


def _power(x, p):
    """x ** p, with torch's error type for integers to negative integer powers."""
    try:
        return np.power(x, p)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from None


def _tensor_power(x, p):
    """x ** p for a tensor p: integers to negative powers as torch's, 0 except for
    bases 1 and -1 (NumPy refuses them; torch does too, but only for a number p)."""
    if x.dtype.kind in "iu" and p.dtype.kind == "i" and (p < 0).any():
        return np.where((p >= 0) | (np.abs(x) == 1), np.power(x, np.abs(p)), 0)
    return np.power(x, p)


def _tracked(*operands):
    """The operand an in-place op must record the graph for (one that requires grad),
    else the first."""
    return next(
        (t for t in operands if getattr(t, "requires_grad", False)), operands[0]
    )


def _checked_division(fn):
    """fn, except that integer division by zero raises, as in torch (NumPy gives
    0 with a warning)."""

    def divide(x, y):
        if x.dtype.kind in "iu" and not np.all(y):
            raise RuntimeError("ZeroDivisionError")
        return fn(x, y)

    return divide


def _scaled(other, alpha):
    """alpha * other, for add/sub's alpha= (other itself when alpha is 1)."""
    return other if alpha == 1 else other * alpha


# d/dx x**y and d/dy x**y = out * log(x), taken as 0 where x == 0 like torch
_POW_RULES = (
    lambda xp, g, x, y, out: g * y * x ** (y - 1),
    lambda xp, g, x, y, out: g * out * xp.log(xp.where(x == 0, 1, x)),
)


def _truncated_divide(x, y):
    """The quotient rounded toward 0, in the operands' dtype."""
    if x.dtype.kind in "iu":
        return np.where((x < 0) != (y < 0), -(-x // y), x // y)
    return np.trunc(x / y)


def _pick_rule(wins):
    """torch's maximum/minimum gradient: all to the winner, split evenly on a tie."""
    return lambda xp, g, x, y, out: xp.where(x == y, g / 2, g * wins(x, y))


def _off_origin(xp, numerator, x, y):
    """numerator / (x^2 + y^2), and 0 where that is 0/0: atan2's gradient at (0, 0)."""
    r2 = x * x + y * y
    return xp.where(r2 == 0, 0, numerator / r2)


# torch's grad_fn for matmul by the operands' dims (more dims: a batched matmul)
_MATMUL_NAMES = {
    (1, 1): "DotBackward0",
    (1, 2): "SqueezeBackward4",
    (2, 1): "MvBackward0",
    (2, 2): "MmBackward0",
}


def _bmm_check(batch1, batch2):
    """torch's checks of bmm's (and baddbmm's) operands: 3-d, batch sizes equal and
    the inner sizes matching (no broadcasting)."""
    for what, t in (("batch1", batch1), ("batch2", batch2)):
        if t.ndim != 3:
            raise RuntimeError(f"{what} must be a 3D tensor")
    expected = [batch1.shape[0], batch1.shape[2]]
    if list(batch2.shape[:2]) != expected:
        raise RuntimeError(
            "Expected size for first two dimensions of batch2 tensor to be: "
            f"{expected} but got: {list(batch2.shape[:2])}."
        )


def _matmul_check(a, b):
    if a.ndim == 0 or b.ndim == 0:
        raise RuntimeError(
            f"both arguments to matmul need to be at least 1D, but they are "
            f"{a.ndim}D and {b.ndim}D"
        )
    if a.dtype != b.dtype:  # torch does not promote inside matmul
        raise RuntimeError(
            "expected m1 and m2 to have the same dtype, but got: "
            f"{a.dtype} != {b.dtype}"
        )
    k = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if a.shape[-1] != k:
        raise RuntimeError(
            "mat1 and mat2 shapes cannot be multiplied "
            f"({'x'.join(map(str, a.shape))} and {'x'.join(map(str, b.shape))})"
        )


@silent_methods
class ArithmeticOps:
    def __add__(self, other):
        rules = (lambda xp, g, x, y, out: g, lambda xp, g, x, y, out: g)
        return _binary(self, other, np.add, rules, "AddBackward0")

    def add(self, other, *, alpha=1):
        """self + alpha * other (torch.add)."""
        return self + _scaled(other, alpha)

    def sub(self, other, *, alpha=1):
        """self - alpha * other (torch.sub)."""
        return self - _scaled(other, alpha)

    def mul(self, other):
        return self * other

    def div(self, other, *, rounding_mode=None):
        """self / other, or rounded down ("floor") or toward 0 ("trunc"), as
        torch.div: the rounded quotients are not differentiable."""
        if rounding_mode is None:
            return self / other
        if rounding_mode == "floor":
            return self // other
        if rounding_mode == "trunc":
            return self._untracked(other, _checked_division(_truncated_divide))
        raise RuntimeError(
            "div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
            f"found '{rounding_mode}'"
        )

    multiply, subtract, divide, true_divide = mul, sub, div, div

    def __sub__(self, other):
        _no_bool_subtraction(self, other)
        rules = (lambda xp, g, x, y, out: g, lambda xp, g, x, y, out: -g)
        return _binary(self, other, np.subtract, rules, "SubBackward0")

    def __mul__(self, other):
        rules = (lambda xp, g, x, y, out: g * y, lambda xp, g, x, y, out: g * x)
        return _binary(self, other, np.multiply, rules, "MulBackward0", ("y", "x"))

    def __truediv__(self, other):
        rules = (
            lambda xp, g, x, y, out: g / y,
            lambda xp, g, x, y, out: -g * x / (y * y),
        )
        return _binary(self, other, np.true_divide, rules, "DivBackward0", ("y", "xy"))

    def __pow__(self, other):
        if isinstance(other, int | float):  # x ** p: no log(x) needed for x < 0
            p = other
            out = _power(self._data, p)

            def backward(xp, g, x):
                return (xp.zeros_like(g) if p == 0 else g * p * x ** (p - 1),)

            return self._result(out, (self,), backward, "PowBackward0")
        return _binary(
            self, other, _tensor_power, _POW_RULES, "PowBackward1", ("xy", "xo")
        )

    pow = __pow__

    def __mod__(self, other):
        """torch.remainder: the result takes the sign of the divisor, as in Python."""
        rules = (
            lambda xp, g, x, y, out: g,
            lambda xp, g, x, y, out: -g * (x // y),
        )
        remainder = _checked_division(np.remainder)
        return _binary(self, other, remainder, rules, "RemainderBackward0", ("", "xy"))

    def fmod(self, other):
        """The remainder taking the dividend's sign (C's fmod; % is Python's)."""
        rules = (
            lambda xp, g, x, y, out: g,
            lambda xp, g, x, y, out: -g * ((x - out) / y),  # -trunc(x / y)
        )
        fmod = _checked_division(np.fmod)
        name = "FmodBackward1" if isinstance(other, ArithmeticOps) else "FmodBackward0"
        return _binary(self, other, fmod, rules, name, ("", "xyo"))

    def addcmul(self, tensor1, tensor2, *, value=1):
        """self + value * tensor1 * tensor2."""
        return self + value * tensor1 * tensor2

    def addcdiv(self, tensor1, tensor2, *, value=1):
        """self + value * tensor1 / tensor2."""
        return self + value * tensor1 / tensor2

    def addcmul_(self, tensor1, tensor2, *, value=1):
        return self._inplace(
            lambda t: t.addcmul(tensor1, tensor2, value=value),
            _tracked(tensor1, tensor2),
        )

    def addcdiv_(self, tensor1, tensor2, *, value=1):
        return self._inplace(
            lambda t: t.addcdiv(tensor1, tensor2, value=value),
            _tracked(tensor1, tensor2),
        )

    def __floordiv__(self, other):
        """Rounds down; not differentiable (torch records it, then fails in backward)."""
        return self._untracked(other, _checked_division(np.floor_divide))

    def maximum(self, other):
        rules = (_pick_rule(lambda x, y: x > y), _pick_rule(lambda x, y: x < y))
        return _binary(self, other, np.maximum, rules, "MaximumBackward0", ("xy", "xy"))

    def minimum(self, other):
        rules = (_pick_rule(lambda x, y: x < y), _pick_rule(lambda x, y: x > y))
        return _binary(self, other, np.minimum, rules, "MinimumBackward0", ("xy", "xy"))

    def atan2(self, other):
        """The angle of (other, self): d/dself = other / r^2, d/dother = -self / r^2,
        both 0 at the origin (as torch's, where they are 0/0)."""
        rules = (
            lambda xp, g, y, x, out: _off_origin(xp, g * x, x, y),
            lambda xp, g, y, x, out: _off_origin(xp, -g * y, x, y),
        )
        return _binary(self, other, np.arctan2, rules, "Atan2Backward0", ("xy", "xy"))

    def hypot(self, other):
        """sqrt(self^2 + other^2) without overflow; d/dself = self / out (0/0 = nan
        at the origin, as torch's)."""
        rules = (
            lambda xp, g, x, y, out: g * x / out,
            lambda xp, g, x, y, out: g * y / out,
        )
        return _binary(self, other, np.hypot, rules, "HypotBackward0", ("xo", "yo"))

    def xlogy(self, other):
        """self * log(other), 0 where self is 0 (unless other is nan), as torch's;
        d/dself = log(other), but 0 where self is 0 and other <= 0 (torch's rule),
        d/dother = self / other."""

        def forward(x, y):
            with np.errstate(divide="ignore", invalid="ignore"):
                return np.where((x == 0) & ~np.isnan(y), 0.0, x * np.log(y))

        rules = (
            lambda xp, g, x, y, out: xp.where((x == 0) & (y <= 0), 0.0, g * xp.log(y)),
            lambda xp, g, x, y, out: g * x / y,
        )
        return _binary(self, other, forward, rules, "XlogyBackward0", ("xy", "xy"))

    def __radd__(self, other):
        """self + other: torch records the tensor as the first input."""
        return self + other

    def __rsub__(self, other):
        """other - self for a number other: torch's RsubBackward1, whose one input is
        the tensor."""
        _no_bool_subtraction(self, other)
        _, x, y = operands(self, other)

        def backward(xp, g):
            return (unbroadcast(-g, self.shape),)

        return self._result(y - x, (self,), backward, "RsubBackward1", saves=False)

    def __rmul__(self, other):
        """self * other: torch records the tensor as the first input."""
        return self * other

    def __rtruediv__(self, other):
        """other / self as torch computes it: other times the reciprocal."""
        return self.reciprocal() * other

    def __rpow__(self, other):
        """other ** self, a number to a tensor power: torch's PowBackward2, whose one
        input is the tensor; d/dself = out * log(other), 0 where other is 0."""
        _, exponent, base = operands(self, other)
        with np.errstate(invalid="ignore"):  # a negative base: nan, as torch's
            log_base = np.log(np.where(base == 0, 1.0, base))

        def backward(xp, g, out):
            return (unbroadcast(g * out * log_base, self.shape),)

        out = _tensor_power(base, exponent)
        return self._result(out, (self,), backward, "PowBackward2", ("out",))

    def __rmod__(self, other):
        return self._lift(other) % self

    def __rfloordiv__(self, other):
        return self._lift(other) // self

    def __matmul__(self, other):
        return self.matmul(other)

    def __rmatmul__(self, other):
        return self._lift(other).matmul(self)

    def matmul(self, other, name=None):
        """torch.matmul: a 1-D operand becomes a matrix and the extra dim is dropped.
        `name` overrides the grad_fn name the operands' dims give."""
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

        def backward(xp, g, a=None, b=None):
            g2 = g.reshape(out2_shape)
            ga = gb = None
            if b is not None:
                bt = xp.matrix_transpose(b.reshape(b2.shape))
                ga = unbroadcast(g2 @ bt, a2.shape).reshape(self.shape)
            if a is not None:
                at = xp.matrix_transpose(a.reshape(a2.shape))
                gb = unbroadcast(at @ g2, b2.shape).reshape(other.shape)
            return ga, gb

        saves = (self if other.requires_grad else None,) + (
            other if self.requires_grad else None,
        )
        name = name or _MATMUL_NAMES.get((a.ndim, b.ndim), "UnsafeViewBackward0")
        return self._result(out, (self, other), backward, name, saves)

    def mm(self, mat2):
        """The product of two matrices (matmul without its 1-D and batch cases)."""
        for what, t in (("self", self), ("mat2", mat2)):
            if t.ndim != 2:
                raise RuntimeError(f"{what} must be a matrix")
        return self.matmul(mat2)

    # torch's methods of functions elsewhere, imported where called: those modules
    # build on Tensor, and so on this class.

    def mv(self, vec):
        from .functions import mv

        return mv(self, vec)

    def det(self):
        from .linalg import det

        return det(self)

    def dot(self, other):
        """The inner product of two 1-D tensors of the same length."""
        if self.ndim != 1 or other.ndim != 1:
            raise RuntimeError(
                f"1D tensors expected, but got {self.ndim}D and {other.ndim}D tensors"
            )
        if self.shape != other.shape:
            raise RuntimeError(
                f"inconsistent tensor size, expected tensor [{self.numel()}] and src "
                f"[{other.numel()}] to have the same number of elements, but got "
                f"{self.numel()} and {other.numel()} elements respectively"
            )
        return self.matmul(other)

    def outer(self, vec2):
        """The matrix of products self[i] * vec2[j] (torch computes it as this
        broadcast product)."""
        return self.reshape(-1, 1) * vec2

    def bmm(self, mat2):
        """Batched matrix product of (b, n, m) and (b, m, p) tensors (no
        broadcasting)."""
        _bmm_check(self, mat2)
        return self.matmul(mat2, "BmmBackward0")

    # comparisons and bitwise ops give tensors that never require grad
    def _untracked(self, other, fn):
        other, x, y = operands(self, other)
        return self._result(fn(x, y))

    def __lt__(self, other):
        return self._untracked(other, np.less)

    def __le__(self, other):
        return self._untracked(other, np.less_equal)

    def __gt__(self, other):
        return self._untracked(other, np.greater)

    def __ge__(self, other):
        return self._untracked(other, np.greater_equal)

    def __eq__(self, other):
        """Elementwise; against None it is False, as in torch (so `t in [None, t]`
        works)."""
        return other is not None and self._untracked(other, np.equal)

    def __ne__(self, other):
        return other is None or self._untracked(other, np.not_equal)

    lt, le, gt, ge, eq, ne = __lt__, __le__, __gt__, __ge__, __eq__, __ne__

    def logical_and(self, other):
        """Whether both are non-zero, elementwise (a bool tensor, whatever dtypes)."""
        return self._untracked(other, np.logical_and)

    def logical_or(self, other):
        return self._untracked(other, np.logical_or)

    def logical_xor(self, other):
        return self._untracked(other, np.logical_xor)

    def logical_not(self):
        return self._result(np.logical_not(self._data))

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        """Whether |self - other| <= atol + rtol |other| everywhere (a Python bool)."""
        _, x, y = operands(self, other)
        return bool(np.allclose(x, y, rtol, atol, equal_nan))

    def isclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        """allclose elementwise: a bool tensor."""
        return self._untracked(
            other, lambda x, y: np.isclose(x, y, rtol, atol, equal_nan)
        )

    def equal(self, other):
        """Whether both have the same shape and values (a Python bool)."""
        return self.shape == other.shape and bool(
            np.array_equal(*operands(self, other)[1:])
        )

    def __and__(self, other):
        return self._untracked(other, np.bitwise_and)

    def __or__(self, other):
        return self._untracked(other, np.bitwise_or)

    def __xor__(self, other):
        return self._untracked(other, np.bitwise_xor)

    def __invert__(self):
        """Logical not of a bool tensor (a mask), bitwise not of an integer one."""
        return self._result(np.invert(self._data))
