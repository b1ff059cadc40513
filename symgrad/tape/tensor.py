"""Tensor: a NumPy array plus the bookkeeping reverse-mode autograd needs.

The differentiable ops live in the mixins (one module per family); each builds its
output with `_result`, passing the closure that maps d(out) to d(inputs).
"""

import math
import warnings

import numpy as np

from . import autograd
from .arithmetic import ArithmeticOps
from .dtypes import device, of_numpy, scalar_name
from .pointwise import PointwiseOps
from .printing import array_str, with_suffixes
from .reductions import ReductionOps
from .shapes import ShapeOps, Size, _shape_arg, as_tuple_if_torch_would, ints_first

NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its "
    ".grad attribute won't be populated during autograd.backward(). If you indeed want "
    "the .grad field to be populated for a non-leaf Tensor, use .retain_grad() on the "
    "non-leaf Tensor. If you access the non-leaf Tensor by mistake, make sure you "
    "access the leaf Tensor instead. See github.com/pytorch/pytorch/pull/30531 for "
    "more information."
)
LEAF_INPLACE = (
    "a leaf Variable that requires grad is being used in an in-place operation."
)
LEAF_VIEW_INPLACE = (
    "a view of a leaf Variable that requires grad is being used in an in-place "
    "operation."
)
NO_GRAD_VIEW = (
    "A view was created in no_grad mode and is being modified inplace with grad mode "
    "enabled. Given that this use case is ambiguous and error-prone, it is forbidden. "
    "You can clarify your code by moving both the view and the inplace either both "
    "inside the no_grad block (if you don't want the inplace to be tracked) or both "
    "outside (if you want the inplace to be tracked)."
)
MULTI_OUTPUT_INPLACE = (
    " is a view and is being modified inplace. This view is the output of a function "
    "that returns multiple views. Such functions do not allow the output views to be "
    "modified inplace. You should replace the inplace operation by an out-of-place one."
)
OVERLAPPING_WRITE = (
    "unsupported operation: more than one element of the written-to tensor refers to "
    "a single memory location. Please clone() the tensor before performing the "
    "operation."
)
PARTIAL_OVERLAP = (
    "unsupported operation: some elements of the input tensor and the written-to "
    "tensor refer to a single memory location. Please clone() the tensor before "
    "performing the operation."
)


def _bounds(a):
    """The first byte of a's elements and one past its last."""
    start = a.__array_interface__["data"][0]
    steps = [(n - 1) * s for n, s in zip(a.shape, a.strides, strict=True)]
    low, high = sum(min(s, 0) for s in steps), sum(max(s, 0) for s in steps)
    return start + low, start + high + a.itemsize


def _partly_overlapping(a, b):
    """Whether a and b share some memory but are not the same elements, as torch
    tells it (for dense arrays only; strided ones are too hard, and pass)."""
    if not (a.size and b.size):
        return False
    (a0, a1), (b0, b1) = _bounds(a), _bounds(b)
    if a1 - a0 != a.nbytes or b1 - b0 != b.nbytes:
        return False
    return a0 < b1 and b0 < a1 and (a0, a1) != (b0, b1)


def as_array(data, dtype=None):
    """NumPy's dtype rules give float64 for Python floats and int64 for Python ints.
    Tensors (also inside lists) give their values, even if they require grad."""
    arr = np.asarray(_values(data), dtype=dtype)
    if arr.dtype.kind in "US" and arr.ndim:  # torch's error for a list of strings
        raise ValueError(f"too many dimensions '{type(arr.flat[0].item()).__name__}'")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"can't convert {arr.dtype} data to a Tensor")
    return arr


def _values(data):
    if isinstance(data, Tensor):
        return data._data
    if isinstance(data, list | tuple):
        return [_values(d) for d in data]
    return data


def _check_hooked(hook, g, out):
    """torch's errors for a hook that returned a gradient of another size or dtype
    than the one it was given (g: an array, or a Tensor under create_graph)."""
    name = getattr(hook, "__name__", repr(hook))
    g_data = g._data if isinstance(g, Tensor) else g
    if out.shape != g_data.shape:
        raise RuntimeError(f"hook '{name}' has changed the size of value")
    if out._data.dtype != g_data.dtype:
        raise RuntimeError(
            f"hook '{name}' has changed the type of value (was "
            f"torch.{scalar_name(of_numpy[g_data.dtype])}Tensor got "
            f"torch.{scalar_name(out.dtype)}Tensor)"
        )


def _in_place(name):
    """The method x.name_(...): x.name(...) written into x."""

    def method(self, *args, **kwargs):
        return self._inplace(lambda t: getattr(t, name)(*args, **kwargs))

    return method


# elementwise methods with an in-place twin x.name_() (torch also has torch.name_)
IN_PLACE = (
    "sqrt exp log neg abs sigmoid tanh sin cos tan asin acos atan sinh cosh asinh "
    "acosh atanh erf erfc expm1 log1p log2 log10 reciprocal rsqrt square floor ceil "
    "round trunc sign clamp clamp_min clamp_max clip nan_to_num logit relu"
).split()


DEEPCOPY_NON_LEAF = (
    "Only Tensors created explicitly by the user (graph leaves) support the deepcopy "
    "protocol at the moment.  If you were attempting to deepcopy a module, this may be "
    "because of a torch.nn.utils.weight_norm usage, see "
    "https://github.com/pytorch/pytorch/pull/103001"
)


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

    def __deepcopy__(self, memo):
        """A leaf's values, requires_grad and grad, copied as torch copies them; a
        tensor made by an op refuses, with torch's message."""
        if not self.is_leaf:
            raise RuntimeError(DEEPCOPY_NON_LEAF)
        if id(self) not in memo:
            new = memo[id(self)] = self._wrap(self._data.copy(), self.requires_grad)
            if self._grad is not None:
                new._grad = self._grad.__deepcopy__(memo)
        return memo[id(self)]

    @classmethod
    def _wrap(cls, data, requires_grad=False):
        """The engine's own constructor: holds `data` with its dtype, sharing arrays."""
        t = cls.__new__(cls)
        t._setup(as_array(data), requires_grad)
        return t

    def _setup(self, array, requires_grad=False):
        self._data = array
        self._grad = None
        self._grad_fn = None
        self.retains_grad = False
        self._hooks, self._post_accumulate_hooks = [], []
        self._requires_grad = False
        self._counter = autograd.VersionCounter()
        # a view: the tensor whose memory it shows, and the NumPy function giving it
        # from that base's array (None if made under no_grad, when torch forbids
        # recording writes through it)
        self._base = self._view_fn = None
        # a view from split/chunk/unbind (or of one): torch's "Output i of Split",
        # which refuses in-place writes that autograd records
        self._multi_output = None
        self.requires_grad = requires_grad
        # made in inference mode: torch never lets autograd save such a tensor
        self._inference = autograd.is_inference_mode_enabled()

    def is_inference(self):
        return self._inference

    @staticmethod
    def _result(
        data, inputs=(), backward=None, name=None, saves=True, view=None, node=None
    ):
        """Wrap an op's output; record it if grad mode is on and an input needs grad.

        `saves` says which tensors' values the backward closure holds: False (none),
        True (the inputs) or a tuple in which "out" stands for the output. Outputs are
        stored C-contiguous, as torch's are, unless the op may return a view: then
        `view` is the NumPy function that made it from inputs[0]'s array, and a
        result sharing that memory is a view (so that view() fails where torch's
        does, and writes to it reach the base). `node` makes the grad_fn (default
        autograd.Node)."""
        out = Tensor._wrap(data if view else np.asarray(data, order="C"))
        if view is not None and np.may_share_memory(data, inputs[0]._data):
            out._view_of(inputs[0], view)
        if (
            autograd.recording()
            and out.dtype.kind == "f"
            and any(t.requires_grad for t in inputs)
        ):
            saved = None if saves is False else inputs if saves is True else saves
            saved = saved and tuple(out if isinstance(t, str) else t for t in saved)
            out._requires_grad = True
            node = node or autograd.Node
            out._grad_fn = node(name, tuple(inputs), backward, saved, output=out)
        return out

    def _view_of(self, src, fn):
        """Make this tensor a view of src's memory, shown by fn(src's array)."""
        self._counter = src._counter
        self._multi_output = src._multi_output
        if src._base is None:
            self._base, self._view_fn = src, fn
        else:
            outer = src._view_fn
            self._base, self._view_fn = src._base, outer and (lambda a: fn(outer(a)))
        if not autograd.recording():
            self._view_fn = None
        self._view_version = self._counter.value

    def _lift(self, value):
        """Tensor for `value`; a Python number takes this tensor's float dtype."""
        if isinstance(value, Tensor):
            return value
        dtype = self._data.dtype  # NumPy's, quicker for NumPy than a tape dtype
        weak = isinstance(value, int | float) and dtype.kind == "f"
        return Tensor._wrap(np.asarray(value, dtype=dtype if weak else None))

    # ---- autograd state -------------------------------------------------------

    @property
    def grad_fn(self):
        """The op that made this tensor, None for a leaf. A view whose memory was
        written in place since (through its base or another view) is re-derived from
        its base, whose graph recorded the write, as torch does."""
        if self._view_fn is not None and self._view_version != self._counter.value:
            self._view_version = self._counter.value
            if self._base.requires_grad:
                self._requires_grad = True
                self._grad_fn = autograd.Node(
                    "AsStridedBackward0", (self._base,), self._view_backward()
                )
        return self._grad_fn

    def _view_backward(self):
        """d(base) from d(view): each view element's gradient added to the base
        element it shows (found by viewing the base's flat positions)."""
        shape, fn = self._base.shape, self._view_fn

        @autograd.once_differentiable
        def backward(g):
            where = fn(np.arange(math.prod(shape)).reshape(shape)).ravel()
            grad = np.bincount(where, g.ravel(), math.prod(shape)).reshape(shape)
            return (grad.astype(g.dtype, copy=False),)

        return backward

    @property
    def _version(self):
        """How many in-place writes this tensor's memory has had (torch's _version)."""
        return self._counter.value

    @property
    def requires_grad(self):
        return self.grad_fn is not None or self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        """Unlike requires_grad_(True), the attribute is a leaf's only, as in torch."""
        if self.grad_fn is not None and flag:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables."
            )
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
        """A gradient set by hand must be a tensor of this tensor's shape and dtype."""
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(
                "assigned grad expected to be a Tensor or None but got grad of type "
                f"{type(value).__name__}"
            )
        if value is not None and value.shape != self.shape:
            raise RuntimeError(
                f"attempting to assign a gradient of size '{list(value.shape)}' to a "
                f"tensor of size '{list(self.shape)}'. Please ensure that the "
                "gradient and the tensor are the same size"
            )
        if value is not None and value.dtype != self.dtype:
            raise RuntimeError(
                "attempting to assign a gradient with dtype "
                f"'{scalar_name(value.dtype).lower()}' to a tensor with grad_dtype "
                f"'{scalar_name(self.dtype)}'. The gradient must match the tensor's "
                "grad_dtype (defaults to the tensor's dtype)."
            )
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
        out = Tensor._wrap(self._data)
        out._counter = self._counter  # as torch's: writes through it are noticed
        return out

    def detach_(self):
        """Cut this tensor itself from the graph: a leaf that does not require grad."""
        if self._base is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self._grad_fn, self._requires_grad, self.retains_grad = None, False, False
        return self

    def backward(
        self, gradient=None, retain_graph=None, create_graph=False, inputs=None
    ):
        """Add d(self)/d(leaf) to each leaf's .grad (`gradient` defaults to 1), or
        only to the .grad of the tensors in `inputs` (autograd.backward); with
        create_graph, recorded gradients that can be differentiated again."""
        autograd.backward([self], [gradient], retain_graph, create_graph, inputs)

    def register_hook(self, hook):
        """Call hook(grad) with this tensor's gradient whenever backward computes it;
        a returned tensor replaces the gradient. The handle's remove() undoes it."""
        if not self.requires_grad:
            raise RuntimeError(
                "cannot register a hook on a tensor that doesn't require gradient"
            )
        self._hooks.append(hook)
        return autograd.RemovableHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call hook(self) after each backward has added to this leaf's .grad (the
        place to step an optimizer per parameter)."""
        if not self.requires_grad:
            raise RuntimeError(
                "cannot register a hook on a tensor that doesn't require gradient"
            )
        if not self.is_leaf:
            raise RuntimeError(
                "post accumulate grad hooks cannot be registered on non-leaf tensors"
            )
        self._post_accumulate_hooks.append(hook)
        return autograd.RemovableHandle(self._post_accumulate_hooks, hook)

    def _run_hooks(self, g):
        """g (an array, or a Tensor under create_graph) as the hooks leave it."""
        recorded = isinstance(g, Tensor)
        for hook in self._hooks:
            out = hook(g if recorded else Tensor._wrap(g))
            if out is not None:
                _check_hooked(hook, g, out)
                g = out if recorded else out._data
        return g

    def _accumulate_grad(self, g):
        """Add g to .grad: in place for an array; for a recorded Tensor (under
        create_graph) out of place, so that .grad is differentiable, as in torch.
        Then the post-accumulate hooks."""
        if isinstance(g, Tensor):
            g = g.to(self.dtype)
            first = self._grad is None
            self._grad = (
                g._copy("torch::autograd::CopyBackwards") if first else self._grad + g
            )
        elif self._grad is None:
            self._grad = Tensor._wrap(np.array(g, self.dtype))  # copy: g may be a view
        else:
            self._grad._data += g
        for hook in self._post_accumulate_hooks:
            hook(self)

    # ---- in-place ops -------------------------------------------------------------
    # A write goes into this tensor's memory, which its views and detach() share, and
    # bumps the version counter they share. If the graph tracks it, it is recorded
    # too: on the base when this is a view (CopySlices), as in torch.

    def _records_inplace(self, value, written):
        """Whether an in-place write of `value` into the array `written` (this tensor
        or part of it) must be recorded in the graph, with torch's errors where it
        cannot be: a leaf that requires grad (the graph may need its value), a view
        of one, a view made under no_grad, and memory that `written` shows twice."""
        if any(
            n > 1 and step == 0
            for n, step in zip(written.shape, written.strides, strict=True)
        ):
            raise RuntimeError(OVERLAPPING_WRITE)  # an expand()ed tensor
        if not autograd.recording():
            return False
        value_grad = getattr(value, "requires_grad", False)
        base = self._base
        if (
            base is not None
            and self._view_fn is None
            and (base.requires_grad or value_grad)
        ):
            raise RuntimeError(NO_GRAD_VIEW)
        if not (self.requires_grad or value_grad):
            return False
        if self.is_leaf and self.requires_grad:
            raise RuntimeError(LEAF_INPLACE)
        if base is not None and base.is_leaf and base.requires_grad:
            raise RuntimeError(LEAF_VIEW_INPLACE)
        if self._multi_output:
            raise RuntimeError(self._multi_output + MULTI_OUTPUT_INPLACE)
        return True

    def __setitem__(self, index, value):
        """In place; if the graph tracks this tensor or `value`, the write is recorded
        and this tensor (or the base it is a view of) gets a CopySlices grad_fn."""
        index = as_tuple_if_torch_would(index)
        if split := ints_first(index):
            self[split[0]]._write(split[1], value)
        else:
            self._write(index, value)

    def _write(self, index, value, name="torch::autograd::CopySlices"):
        """self[index] = value; a write recorded on this tensor itself (not a view's
        base) gets a node named `name`."""
        value, where = self._lift(value), self._index(index)
        tracked = self._records_inplace(value, self._data[where])
        try:
            self._data[where] = value._data
        except ValueError as exc:  # value does not broadcast to the written shape
            raise RuntimeError(str(exc)) from None
        self._counter.value += 1
        if tracked:
            if self._base is None:
                self._copy_slices(None, index, value, name)
            else:
                self._base._copy_slices(self._view_fn, index, value)

    def copy_(self, src):
        """Copy `src` (broadcast and cast) into this tensor. Tracked, a view's base
        gets a CopySlices, and a whole tensor torch's CopyBackwards (the same rule:
        nothing to the old value, all to src)."""
        self._write(Ellipsis, src, "CopyBackwards")
        return self

    def fill_(self, value):
        self[...] = value
        return self

    def zero_(self):
        return self.fill_(0)

    def _inplace(self, op, other=None, reads=None):
        """`x += y` and the `x.f_()` methods: op(x)'s result written into x. If
        tracked, op runs on a clone (whose values its closure may hold) and x takes
        op's grad_fn, or a view's base takes a CopySlices. `other` is op's tensor
        operand, if any, that may require grad; `reads` one that an elementwise op
        reads as it writes x, which torch refuses where it overlaps x only in part."""
        tracked = self._records_inplace(other, self._data)
        if isinstance(reads, Tensor) and _partly_overlapping(self._data, reads._data):
            raise RuntimeError(PARTIAL_OVERLAP)
        new = op(self.clone() if tracked else self)
        if new.shape != self.shape:
            raise RuntimeError(
                f"output with shape {list(self.shape)} doesn't match the broadcast "
                f"shape {list(new.shape)}"
            )
        if not np.can_cast(new.dtype, self.dtype, "same_kind"):
            raise RuntimeError(
                f"result type {new.dtype} can't be cast to the desired output type "
                f"{self.dtype}"
            )
        self._data[...] = new._data
        self._counter.value += 1
        if tracked:  # op's result is now this memory: writes to it must be noticed
            new._counter = self._counter
            new.grad_fn._resave_output(new)
        if tracked and self._base is not None:
            self._base._copy_slices(self._view_fn, Ellipsis, new)
        elif tracked:
            self._grad_fn, self._requires_grad = new.grad_fn, True
        return self

    def add_(self, other, *, alpha=1):
        """self += alpha * other."""
        scaled = other if alpha == 1 else other * alpha
        return self._inplace(lambda t: t + scaled, scaled, other)

    def sub_(self, other, *, alpha=1):
        """self -= alpha * other."""
        scaled = other if alpha == 1 else other * alpha
        return self._inplace(lambda t: t - scaled, scaled, other)

    def mul_(self, other):
        return self._inplace(lambda t: t * other, other, other)

    def div_(self, other):
        return self._inplace(lambda t: t / other, other, other)

    def pow_(self, exponent):
        return self._inplace(lambda t: t.pow(exponent), exponent, exponent)

    def uniform_(self, low=0.0, high=1.0, *, generator=None):
        """Fill with draws from U(low, high) (torch's from, to), from `generator`
        (default: the one manual_seed seeds)."""
        from .creation import numpy_generator  # here: creation builds on Tensor

        draws = numpy_generator(generator).uniform(low, high, self.shape)
        return self.copy_(Tensor._wrap(draws))

    def normal_(self, mean=0.0, std=1.0, *, generator=None):
        """Fill with draws from N(mean, std^2)."""
        from .creation import numpy_generator  # here: creation builds on Tensor

        draws = numpy_generator(generator).normal(mean, std, self.shape)
        return self.copy_(Tensor._wrap(draws))

    def masked_fill_(self, mask, value):
        return self._inplace(lambda t: t.masked_fill(mask, value), value)

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

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
        return Size(self._data.shape)

    @property
    def device(self):
        return device("cpu")

    def data_ptr(self):
        """The address of the first element: equal for tensors sharing storage there,
        as torch users check after detach() or view()."""
        return self._data.__array_interface__["data"][0]

    def _new_filled(self, size, fill, dtype, requires_grad):
        """A tensor of `size` (given as torch's factories take it) of fill."""
        dtype = self.dtype if dtype is None else dtype
        array = np.full(_shape_arg(size), fill, dtype=dtype)
        return Tensor._wrap(array, requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        """zeros of this tensor's dtype (unless given); new_ones and new_full
        likewise."""
        return self._new_filled(size, 0, dtype, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new_filled(size, 1, dtype, requires_grad)

    new_empty = new_zeros

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new_filled((size,), fill_value, dtype, requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A copy of data with this tensor's dtype (unless given), whatever data's."""
        dtype = self.dtype if dtype is None else dtype
        return Tensor._wrap(np.array(as_array(data), dtype=dtype), requires_grad)

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def dtype(self):
        return of_numpy[self._data.dtype]

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return self._data.size

    nelement, ndimension = numel, dim

    def is_floating_point(self):
        return self.dtype.kind == "f"

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
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._data)

    def __iter__(self):
        """The sub-tensors along dim 0 (views, so gradients flow back)."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self)))

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

    def __index__(self):
        """A one-element integer tensor can index a list or size a range()."""
        if self.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError(
                "only integer tensors of a single element can be converted to an index"
            )
        return int(self._data.item())

    def __contains__(self, element):
        """`x in t`: whether any element of t equals x (a number or a tensor)."""
        if not isinstance(element, Tensor | int | float | np.number):
            raise RuntimeError(
                "Tensor.__contains__ only supports Tensor or scalar, but you passed in "
                f"a {type(element)}."
            )
        return bool((self == element).any())

    def __format__(self, spec):
        """A 0-d tensor formats as its number; others as object does (any spec is
        a TypeError), as in torch."""
        if self.ndim == 0:
            return format(self.item(), spec)
        return object.__format__(self, spec) if spec else repr(self)

    def __repr__(self):
        x = self._data
        body = array_str(x)
        extras = [f"size={x.shape}"] if x.size == 0 and x.ndim != 1 else []
        # torch names the dtype unless the values show it, which no values can
        if x.dtype not in (np.float64, np.int64, np.bool_) or (
            x.size == 0 and x.dtype != np.float64
        ):
            extras.append(
                f"dtype=torch.{x.dtype}"
            )  # as code importing tape as torch names it
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn._type_name()}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return with_suffixes("tensor(" + body, extras)


def numpy_keywords(fn):
    """fn taking torch's NumPy-style aliases too: axis= for dim=, keepdims= for
    keepdim= (torch's argument parser accepts them wherever dim= is taken)."""

    def wrapper(*args, **kwargs):
        if "axis" in kwargs:
            kwargs["dim"] = kwargs.pop("axis")
        if "keepdims" in kwargs:
            kwargs["keepdim"] = kwargs.pop("keepdims")
        return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__qualname__ = fn.__name__, fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper


def _parameters(fn):
    """The names of fn's parameters (of the function under any decorators)."""
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    code = fn.__code__
    return code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]


for _name in dir(Tensor):
    _fn = getattr(Tensor, _name)
    if (
        not _name.startswith("_")
        and isinstance(_fn, type(numpy_keywords))
        and "dim" in _parameters(_fn)
        and "axis" not in _parameters(_fn)
    ):
        setattr(Tensor, _name, numpy_keywords(_fn))
del _name, _fn


class _VariableType(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, Tensor)


class Variable(metaclass=_VariableType):
    """torch.autograd.Variable, the old name for a tensor that kept old scripts
    working: Variable(data) is data.detach() requiring grad as asked, and every
    tensor is an instance."""

    def __new__(cls, data, requires_grad=False, volatile=False):
        return data.detach().requires_grad_(requires_grad)


for _name in IN_PLACE:
    setattr(Tensor, f"{_name}_", _in_place(_name))
del _name
