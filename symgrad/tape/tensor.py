"""Tensor: a NumPy array plus the bookkeeping reverse-mode autograd needs.

The differentiable ops live in the mixins (one module per family); each builds its
output with `_result`, passing the closure that maps d(out) to d(inputs).
"""

import warnings

import numpy as np

from . import autograd
from .arithmetic import ArithmeticOps
from .pointwise import PointwiseOps
from .reductions import ReductionOps
from .shapes import ShapeOps

NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
    ".grad attribute won't be populated during autograd.backward(). If you indeed want "
    "the .grad field to be populated for a non-leaf Tensor, use .retain_grad() on the "
    "non-leaf Tensor."
)
LEAF_INPLACE = (
    "a leaf Variable that requires grad is being used in an in-place operation."
)


def as_array(data, dtype=None):
    """NumPy's dtype rules give float64 for Python floats and int64 for Python ints."""
    arr = np.asarray(data._data if isinstance(data, Tensor) else data, dtype=dtype)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"can't convert {arr.dtype} data to a Tensor")
    return arr


class Tensor(ArithmeticOps, PointwiseOps, ReductionOps, ShapeOps):
    """An n-d array that can record the ops applied to it (PyTorch's torch.Tensor)."""

    __array_priority__ = 1000  # `ndarray + tensor` defers to Tensor.__radd__
    __hash__ = object.__hash__  # __eq__ is elementwise; hash by identity like torch

    def __init__(self, *data):
        """torch.Tensor(data) or torch.Tensor(*sizes): like torch, always the default
        float dtype (`tensor(data)` keeps the data's dtype)."""
        if all(isinstance(n, int) for n in data):  # sizes: uninitialised in torch
            data = (np.zeros(data or 0),)
        self._setup(as_array(data[0], np.float64))

    @classmethod
    def _wrap(cls, data, requires_grad=False):
        """The engine's own constructor: holds `data` with its dtype, sharing arrays."""
        t = cls.__new__(cls)
        t._setup(as_array(data), requires_grad)
        return t

    def _setup(self, array, requires_grad=False):
        self._data = array
        self.grad = None
        self.grad_fn = None
        self.retains_grad = False
        self._requires_grad = False
        self.requires_grad = requires_grad

    @staticmethod
    def _result(data, inputs=(), backward=None, name=None, saves=True, view=False):
        """Wrap an op's output; record it if grad mode is on and an input needs grad.

        Outputs are stored C-contiguous, as torch's are, unless the op is a `view`
        (sharing its input's memory and strides), so that view() fails where torch's
        does; NumPy alone would leave, say, a sum over a transposed array strided."""
        out = Tensor._wrap(data if view else np.asarray(data, order="C"))
        if (
            autograd.is_grad_enabled()
            and out.dtype.kind == "f"
            and any(t.requires_grad for t in inputs)
        ):
            out._requires_grad = True
            out.grad_fn = autograd.Node(name, tuple(inputs), backward, saves)
        return out

    def _lift(self, value):
        """Tensor for `value`; a Python number takes this tensor's float dtype."""
        if isinstance(value, Tensor):
            return value
        weak = isinstance(value, int | float) and self.dtype.kind == "f"
        return Tensor._wrap(np.asarray(value, dtype=self.dtype if weak else None))

    # ---- autograd state -------------------------------------------------------

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad=True):
        if self.grad_fn is not None and not requires_grad:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you "
                "want to use a computed variable in a subgraph that doesn't require "
                "differentiation use var_no_grad = var.detach()."
            )
        if requires_grad and self.dtype.kind != "f":
            raise RuntimeError(
                "Only Tensors of floating point and complex dtype can require gradients"
            )
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def grad(self):
        """d(root)/d(self) accumulated by backward(): leaves and retain_grad() only."""
        if self.grad_fn is not None and not self.retains_grad:
            warnings.warn(NON_LEAF_GRAD, UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def retain_grad(self):
        """Ask backward() to fill .grad on this non-leaf too."""
        if not self.requires_grad:
            raise RuntimeError(
                "can't retain_grad on Tensor that has requires_grad=False"
            )
        self.retains_grad = not self.is_leaf

    def detach(self):
        """A Tensor sharing this data but cut from the graph."""
        return Tensor._wrap(self._data)

    def backward(self, gradient=None, retain_graph=False):
        """Add d(self)/d(leaf) to each leaf's .grad (`gradient` defaults to 1)."""
        if not self.requires_grad:
            raise RuntimeError(
                "element 0 of tensors does not require grad and does not have a grad_fn"
            )
        if gradient is None:
            if self._data.size != 1:
                raise RuntimeError(
                    "grad can be implicitly created only for scalar outputs"
                )
            gradient = np.ones_like(self._data)
        gradient = as_array(gradient, self.dtype)
        if gradient.shape != self.shape:
            raise RuntimeError(
                f"Mismatch in shape: grad_output[0] has a shape of {gradient.shape} "
                f"and output[0] has a shape of {self.shape}."
            )
        autograd.backward(self, gradient, retain_graph)

    def _accumulate_grad(self, g):
        if self._grad is None:
            self._grad = Tensor._wrap(
                np.array(g, dtype=self.dtype)
            )  # copy: g may be a view
        else:
            self._grad._data += g

    # ---- in-place ops -------------------------------------------------------------

    def _records_inplace(self, value):
        """Whether an in-place op must be recorded in the graph (torch's error if this
        is a leaf that requires grad, whose value the graph may still need)."""
        tracked = autograd.is_grad_enabled() and (
            self.requires_grad or getattr(value, "requires_grad", False)
        )
        if tracked and self.is_leaf and self.requires_grad:
            raise RuntimeError(LEAF_INPLACE)
        return tracked

    def __setitem__(self, index, value):
        """In place; if the graph tracks this tensor or `value`, the assignment is
        recorded and this tensor becomes its result, as in torch. Having no version
        counters, the recorded form writes a fresh array (ops that saved the old one
        keep correct gradients) where torch would write in place."""
        if not self._records_inplace(value):
            self._data[self._index(index)] = as_array(value)
            return
        new = self._index_put(index, value)  # its graph keeps the version before
        self._data, self.grad_fn = new._data, new.grad_fn
        self._requires_grad = new.requires_grad

    def copy_(self, src):
        """Copy `src` (broadcast and cast) into this tensor."""
        self[...] = src
        return self

    def fill_(self, value):
        self[...] = value
        return self

    def zero_(self):
        return self.fill_(0)

    def _inplace(self, other, ufunc, op):
        """`x += y`: in place if untracked, else recorded out of place (rebinding x)."""
        other = self._lift(other)
        if self._records_inplace(other):
            return op(self, other)
        ufunc(self._data, other._data, out=self._data)
        return self

    def __iadd__(self, other):
        return self._inplace(other, np.add, Tensor.__add__)

    def __isub__(self, other):
        return self._inplace(other, np.subtract, Tensor.__sub__)

    def __imul__(self, other):
        return self._inplace(other, np.multiply, Tensor.__mul__)

    def __itruediv__(self, other):
        return self._inplace(other, np.divide, Tensor.__truediv__)

    # ---- properties and conversions --------------------------------------------

    @property
    def data(self):
        """The same storage as a Tensor that does not require grad (torch's .data)."""
        return Tensor._wrap(self._data)

    @data.setter
    def data(self, value):
        self._data = as_array(value)

    @property
    def shape(self):
        return self._data.shape

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def dtype(self):
        return self._data.dtype

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return self._data.size

    def item(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"a Tensor with {self._data.size} elements cannot be converted to "
                "Scalar"
            )
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def numpy(self):
        """The underlying array (shared, not copied)."""
        if self.requires_grad:
            raise RuntimeError(
                "Can't call numpy() on Tensor that requires grad. "
                "Use tensor.detach().numpy() instead."
            )
        return self._data

    def __array__(self, dtype=None, copy=None):
        return np.array(self.numpy(), dtype=dtype, copy=copy)

    def __len__(self):
        return len(self._data)

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(
                "Boolean value of Tensor with more than one value is ambiguous"
            )
        return bool(self._data)

    def _python_number(self):
        if self._data.size != 1:
            raise ValueError(
                "only one element tensors can be converted to Python scalars"
            )
        return self._data.item()

    def __float__(self):
        return float(self._python_number())

    def __int__(self):
        return int(self._python_number())

    def __format__(self, spec):
        return format(self.item(), spec) if self.ndim == 0 else repr(self)

    def __repr__(self):
        x = self._data
        finite = x[np.isfinite(x)] if x.dtype.kind == "f" else x
        fixed = x.dtype.kind == "f" and np.any(finite != np.round(finite))
        body = np.array2string(
            x,
            separator=", ",
            prefix="tensor(",
            precision=4 if fixed else 8,
            floatmode="fixed" if fixed else "maxprec",
        )
        extras = (
            [] if x.dtype in (np.float64, np.int64, np.bool_) else [f"dtype={x.dtype}"]
        )
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return f"tensor({', '.join([body, *extras])})"
