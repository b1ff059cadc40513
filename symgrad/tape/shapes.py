"""Shape ops, indexing and gather. Their backward moves g back to the input layout;
indexing scatter-adds, so repeated indices accumulate."""

import math
import warnings

import numpy as np

from . import autograd
from .arithmetic import broadcast_shape, unbroadcast
from .dtypes import scalar_name
from .reductions import normalize_dims


class Size(tuple):
    """torch.Size: a tensor's shape, a tuple that prints as torch.Size([2, 3])."""

    def __repr__(self):
        return f"torch.Size({list(self)})"

    def __getitem__(self, index):
        item = super().__getitem__(index)
        return Size(item) if isinstance(index, slice) else item

    def __add__(self, other):
        return Size(tuple(self) + tuple(other))

    def numel(self):
        """The number of elements of a tensor of this shape."""
        return math.prod(self)


def _shape_arg(shape):
    """Accept both f(2, 3) and f((2, 3)), as torch does."""
    return (
        tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
    )


def _basic_index_name(parts):
    """torch's grad_fn for a basic index: named by its last step, where a full slice
    `:` next to other steps is no step at all."""
    steps = [p for p in parts if p is not Ellipsis]
    steps = [p for p in steps if p != slice(None)] or steps
    if not steps:
        return "AliasBackward0"
    last = steps[-1]
    if last is None:
        return "UnsqueezeBackward0"
    return "SliceBackward0" if isinstance(last, slice) else "SelectBackward0"


def _broadcast_view(a, shape):
    """np.broadcast_to, but writable like torch's expand: a write reaches the one
    memory location that a broadcast dim repeats."""
    strides = np.broadcast_to(a, shape).strides
    return np.lib.stride_tricks.as_strided(a, shape, strides)


def _multi_output(views, name):
    """The views one op (grad_fn `name`) returns together, marked so that writing to
    one refuses as torch's do ("Output 1 of Split" for split's second)."""
    views = tuple(views)
    for i, v in enumerate(views):
        if v._base is not None:
            v._multi_output = f"Output {i} of {name.removesuffix('Backward0')}"
    return views


def _tensors(parts):
    """The index tensors in an index, which an op that keeps them saves."""
    return tuple(p for p in parts if isinstance(p, ShapeOps))


UINT8_INDEX = (
    "indexing with dtype torch.uint8 is now deprecated, please use a dtype "
    "torch.bool instead."
)


def _index_array(t):
    """An index tensor's array; a uint8 one is a mask in torch, so a bool one."""
    if t.dtype != np.uint8:
        return t._data
    warnings.warn(UINT8_INDEX, UserWarning, stacklevel=4)
    return t._data.astype(bool)


def _axis(dim, ndim):
    """One dim as a non-negative axis, with torch's IndexError when out of range."""
    normalize_dims(dim, ndim)
    return dim % max(ndim, 1)


def _check_index(index, size, dim, op):
    """An integer index tensor's array, checked as torch checks the index of
    gather, scatter_add and index_add into a dim of `size`."""
    if index.dtype not in (np.int32, np.int64):
        raise RuntimeError(f"{op}(): Expected dtype int32/int64 for index")
    i = index._data
    bad = (i < 0) | (i >= size)
    if bad.any():
        raise RuntimeError(
            f"index {i[bad].flat[0]} is out of bounds for dimension {dim} with size "
            f"{size}"
        )
    return i


def _scatter_positions(self, dim, index, op):
    """(axis, NumPy index): the elements gather reads or scatter_add writes,
    self[index[i][j]][j] for dim 0 and so on."""
    if index.ndim != self.ndim:
        raise RuntimeError(
            "Index tensor must have the same number of dimensions as input tensor"
        )
    axis = _axis(dim, self.ndim)
    where = list(np.indices(index.shape, sparse=True))
    where[axis] = _check_index(index, self.shape[axis], axis, op)
    return axis, tuple(where)


REDUCTIONS = {  # the ufunc, and what a position starts from without self's value
    "sum": (np.add, 0),
    "mean": (np.add, 0),
    "prod": (np.multiply, 1),
    "amax": (np.maximum, -np.inf),
    "amin": (np.minimum, np.inf),
}


def _scatter_reduce_coefs(reduce, own, values, out, where, count, include_self):
    """d out / d self (elementwise) and d out[where] / d src: 1 for sums, 1/count for
    means (count: the values averaged into each position, at least 1), the share of a tie for amax/amin (self's value counts in the tie even if
    excluded, as in torch), the product of the other factors for prod."""
    ones = np.ones(out.shape)
    if reduce == "sum":
        return ones, np.ones(values.shape)
    if reduce == "mean":
        return 1 / count, 1 / count[where]
    if reduce in ("amax", "amin"):
        own_hit, src_hit = ones * (own == out), values == out[where]
        ties = own_hit.copy()
        np.add.at(ties, where, src_hit)
        return own_hit / ties, src_hit / ties[where]
    # prod: divide the product by each factor, or multiply the others where it is 0
    with np.errstate(divide="ignore", invalid="ignore"):
        own_coef = np.where(own != 0, out / own, 0.0)
        src_coef = np.where(values != 0, out[where] / values, 0.0)
    flat = np.ravel_multi_index(np.broadcast_arrays(*where), out.shape)
    for k in map(tuple, np.argwhere(values == 0)):
        others = flat == flat[k]
        others[k] = False
        src_coef[k] = values[others].prod() * (own.flat[flat[k]] if include_self else 1)
    for p in np.flatnonzero(own == 0):
        own_coef.flat[p] = np.prod(values[flat == p])
    return own_coef, src_coef


def as_tuple_if_torch_would(index):
    """torch still reads a short list holding a list, tensor, slice, None or ... as
    the tuple of those entries (x[[[0, 1], [2, 2]]] is x[[0, 1], [2, 2]]; NumPy's
    old rule), where NumPy now makes it one index array."""
    if isinstance(index, list) and len(index) < 32:
        if any(
            isinstance(p, list | tuple | slice | ShapeOps) or p is None or p is Ellipsis
            for p in index
        ):
            return tuple(index)
    return index


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(
        isinstance(p, int | np.integer | slice) or p is None or p is Ellipsis
        for p in parts
    )


def ints_first(index):
    """torch applies an index's integers before its tensors (x[0, :, i] is x[0][:, i],
    of shape (3, 2) for x of (2, 3, 4) and two i), where NumPy broadcasts them
    together and moves the result first ((2, 3)): (first, rest) to apply in turn,
    or None where the index has no integers beside tensors."""
    parts = index if isinstance(index, tuple) else (index,)
    ints = [isinstance(p, int | np.integer) and not isinstance(p, bool) for p in parts]
    if not any(ints) or _is_basic(index):
        return None
    first = tuple(
        p if i or p is None or p is Ellipsis else slice(None)
        for p, i in zip(parts, ints, strict=True)
    )
    rest = tuple(
        slice(None) if p is None else p
        for p, i in zip(parts, ints, strict=True)
        if not i
    )
    return first, rest


class ShapeOps:
    def reshape(self, *sizes, shape=None):
        """The values in the shape given as sizes, a tuple, or `shape=` (torch's
        keyword)."""
        return self._reshaped(
            _shape_arg(sizes if shape is None else (shape,)), "ViewBackward0"
        )

    def _reshaped(self, shape, name):
        """The values in `shape`, a view where NumPy can make one."""
        x = self._data
        if list(shape).count(-1) > 1:
            raise RuntimeError("only one dimension can be inferred")
        try:
            out = x.reshape(shape)
        except ValueError:
            raise RuntimeError(
                f"shape '{list(shape)}' is invalid for input of size {x.size}"
            ) from None

        def backward(xp, g):
            return (g.reshape(x.shape),)

        if out.size and not np.may_share_memory(out, x):  # torch copies, then views
            name = "UnsafeViewBackward0"
        return self._result(
            out,
            (self,),
            backward,
            name,
            saves=False,
            view=lambda a: a.reshape(shape),
        )

    def view(self, *shape):
        """reshape that never copies: like torch, an error where the strides of a
        transposed or sliced tensor would need a copy."""
        out = self.reshape(*shape)
        if self.numel() and not np.may_share_memory(out._data, self._data):
            raise RuntimeError(
                "view size is not compatible with input tensor's size and stride (at "
                "least one dimension spans across two contiguous subspaces). Use "
                ".reshape(...) instead."
            )
        return out

    def view_as(self, other):
        return self.view(other.shape)

    def contiguous(self):
        """This tensor if its elements are in C order in memory, else a copy that is."""
        return self if self._data.flags.c_contiguous else self.clone()

    def is_contiguous(self):
        return self._data.flags.c_contiguous

    def stride(self, dim=None):
        """Steps in elements between neighbours along each dim, as torch counts."""
        steps = tuple(s // self._data.itemsize for s in self._data.strides)
        return steps if dim is None else steps[normalize_dims(dim, self.ndim)[0]]

    def flatten(self, start_dim=0, end_dim=-1):
        shape = self.shape or (1,)
        for d in (start_dim, end_dim):
            normalize_dims(d, self.ndim)  # torch's IndexError
        start, end = start_dim % len(shape), end_dim % len(shape)
        if start > end:
            raise RuntimeError(
                "flatten() has invalid args: start_dim cannot come after end_dim"
            )
        if start == end and self.ndim:
            return self  # torch's: nothing to flatten, so no new tensor
        return self.reshape(shape[:start] + (-1,) + shape[end + 1 :])

    def unsqueeze(self, dim):
        shape = np.expand_dims(self._data, dim).shape
        return self._reshaped(shape, "UnsqueezeBackward0")

    def squeeze(self, dim=None):
        """Drop size-1 dims (only those in `dim` if given; other dims are kept)."""
        dims = normalize_dims(dim, self.ndim)
        shape = tuple(n for d, n in enumerate(self.shape) if not (d in dims and n == 1))
        overload = 0 if dim is None else 1 if isinstance(dim, int | np.integer) else 2
        return self._reshaped(shape, f"SqueezeBackward{overload}")

    def split(self, split_size_or_sections, dim=0):
        """Views of consecutive pieces along dim: each split_size long (the last may
        be shorter), or of the listed sizes."""
        (axis,) = normalize_dims(dim, self.ndim)
        n = self.shape[axis]
        if isinstance(split_size_or_sections, int):
            size = split_size_or_sections
            sizes = [min(size, n - start) for start in range(0, n, size)] or [0]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise RuntimeError(
                    f"split_with_sizes expects split_sizes to sum exactly to {n} "
                    f"(input tensor's size at dimension {dim}), but got "
                    f"split_sizes={sizes}"
                )
        ends = np.cumsum(sizes)
        lead = (slice(None),) * axis
        name = (
            "SplitBackward0"
            if isinstance(split_size_or_sections, int)
            else ("SplitWithSizesBackward0")
        )
        views = [
            self._indexed(lead + (slice(end - size, end),), name)
            for size, end in zip(sizes, ends, strict=True)
        ]
        return _multi_output(views, name)

    def chunk(self, chunks, dim=0):
        """At most `chunks` pieces along dim, all but the last of size
        ceil(n / chunks), as torch splits them."""
        if chunks <= 0:
            raise RuntimeError(
                f"chunk expects `chunks` to be greater than 0, got: {chunks}"
            )
        n = self.shape[normalize_dims(dim, self.ndim)[0]]
        return self.split(max(-(-n // chunks), 1), dim)

    def unbind(self, dim=0):
        """The slices along dim, that dim removed (views)."""
        (axis,) = normalize_dims(dim, self.ndim)
        lead = (slice(None),) * axis
        views = [
            self._indexed(lead + (i,), "UnbindBackward0")
            for i in range(self.shape[axis])
        ]
        return _multi_output(views, "UnbindBackward0")

    def flip(self, *dims):
        """A copy with the order of elements reversed along each of dims."""
        axes = normalize_dims(_shape_arg(dims), self.ndim)
        out = np.flip(self._data, axes)

        def backward(xp, g):
            return (xp.flip(g, axes),)

        return self._result(out, (self,), backward, "FlipBackward0", saves=False)

    def fliplr(self):
        """The order along dim 1 reversed."""
        if self.ndim < 2:
            raise RuntimeError("Input must be >= 2-d.")
        return self.flip(1)

    def flipud(self):
        """The order along dim 0 reversed."""
        if self.ndim < 1:
            raise RuntimeError("Input must be >= 1-d.")
        return self.flip(0)

    def take_along_dim(self, indices, dim=None):
        """gather with the two broadcast against each other except along dim (of
        everything flattened if dim is None)."""
        if dim is None:
            return self.reshape(-1).gather(0, indices.reshape(-1))
        axis = _axis(dim, self.ndim)
        ones = [
            tuple(1 if d == axis else n for d, n in enumerate(t.shape))
            for t in (self, indices)
        ]
        shape = list(broadcast_shape(*ones))
        own = [*shape[:axis], self.shape[axis], *shape[axis + 1 :]]
        shape[axis] = indices.shape[axis]
        return self.expand(own).gather(axis, indices.expand(shape))

    def rot90(self, k=1, dims=(0, 1)):
        """Rotated k quarter turns from dims[0] towards dims[1], as torch's."""
        first, second = dims
        k %= 4
        if k == 1:
            return self.flip(second).transpose(first, second)
        if k == 2:
            return self.flip(dims)
        return self.flip(first).transpose(first, second) if k == 3 else self.clone()

    def expand(self, *sizes):
        """Broadcast to `sizes` (-1 keeps a dim) without copying."""
        sizes = _shape_arg(sizes)
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise RuntimeError(
                f"expand: the number of sizes provided ({len(sizes)}) must be greater "
                f"or equal to the number of dimensions in the tensor ({self.ndim})"
            )
        shape = tuple(
            n if n != -1 else self.shape[i - lead] for i, n in enumerate(sizes)
        )
        for i, n in enumerate(self.shape):
            if n != 1 and n != shape[lead + i]:
                raise RuntimeError(
                    f"The expanded size of the tensor ({shape[lead + i]}) must match "
                    f"the existing size ({n}) at non-singleton dimension {lead + i}.  "
                    f"Target sizes: {list(sizes)}.  Tensor sizes: {list(self.shape)}"
                )
        x = self._data
        out = _broadcast_view(x, shape)

        def backward(xp, g):
            return (unbroadcast(g, x.shape),)

        return self._result(
            out,
            (self,),
            backward,
            "ExpandBackward0",
            saves=False,
            view=lambda a: _broadcast_view(a, shape),
        )

    def expand_as(self, other):
        return self.expand(other.shape)

    def repeat(self, *repeats):
        """Tile `repeats[i]` copies along dim i (leading repeats add dims)."""
        repeats = _shape_arg(repeats)
        if len(repeats) < self.ndim:
            raise RuntimeError(
                "Number of dimensions of repeat dims can not be smaller than number of "
                "dimensions of tensor"
            )
        x = self._data
        shape = (1,) * (len(repeats) - x.ndim) + x.shape
        out = np.tile(x.reshape(shape), repeats)

        def backward(xp, g):  # split each dim into (copy, original), sum the copies
            split = [n for pair in zip(repeats, shape, strict=True) for n in pair]
            copies = tuple(range(0, len(split), 2))
            return (g.reshape(split).sum(axis=copies).reshape(x.shape),)

        return self._result(out, (self,), backward, "RepeatBackward0", saves=False)

    def tile(self, *dims):
        """repeat with dims, shorter than self's, padded with leading 1s."""
        dims = _shape_arg(dims)
        return self.repeat((1,) * (self.ndim - len(dims)) + tuple(dims))

    def repeat_interleave(self, repeats=None, dim=None, *, output_size=None):
        """Each slice along dim (each element of the flattened tensor if dim is None)
        `repeats` times: an int, or a tensor of one count per slice. Without repeats
        (torch.repeat_interleave(counts)): each index i counts[i] times."""
        if repeats is None:
            return self._lift(np.repeat(np.arange(self.numel()), self._data))
        x = self.reshape(-1) if dim is None else self
        dim = 0 if dim is None else dim
        counts = getattr(repeats, "_data", repeats)
        index = np.repeat(np.arange(x.shape[dim]), counts)
        return x.index_select(dim, self._lift(index))

    def permute(self, *order, dims=None):
        """The dims in the order given as ints, a tuple, or `dims=` (torch's
        keyword)."""
        order = _shape_arg(order if dims is None else (dims,))
        return self._permuted(order, "PermuteBackward0")

    def _permuted(self, dims, name):
        """The dims reordered (a view): dim i of the result is dims[i] of self."""
        if len(dims) != self.ndim:
            raise RuntimeError(
                "permute(sparse_coo): number of dimensions in the tensor input does "
                "not match the length of the desired ordering of dimensions i.e. "
                f"input.dim() = {self.ndim} is not equal to len(dims) = {len(dims)}"
            )
        normalize_dims(dims, self.ndim)  # torch's errors for bad or repeated dims
        dims = [d % self.ndim for d in dims]
        out = np.transpose(self._data, dims)
        inverse = tuple(dims.index(d) for d in range(len(dims)))

        def backward(xp, g):
            return (xp.transpose(g, inverse),)

        return self._result(
            out,
            (self,),
            backward,
            name,
            saves=False,
            view=lambda a: np.transpose(a, dims),
        )

    def transpose(self, dim0, dim1):
        dims = list(range(self.ndim))
        dim0, dim1 = _axis(dim0, self.ndim), _axis(dim1, self.ndim)
        dims[dim0], dims[dim1] = dims[dim1], dims[dim0]
        return self._permuted(dims, "TransposeBackward0")

    swapaxes = swapdims = transpose

    def movedim(self, source, destination):
        """The dims `source` moved to positions `destination`, the others keeping
        their order (a permuted view)."""
        source, destination = (
            [_axis(d, self.ndim) for d in ((dims,) if isinstance(dims, int) else dims)]
            for dims in (source, destination)
        )
        order = [d for d in range(self.ndim) if d not in source]
        for d, s in sorted(zip(destination, source, strict=True)):
            order.insert(d, s)
        return self._permuted(order, "PermuteBackward0")

    moveaxis = movedim

    def broadcast_to(self, size):
        return self.expand(size)

    def unflatten(self, dim, sizes):
        """dim split into `sizes` (one of which may be -1)."""
        axis = _axis(dim, self.ndim)
        return self.reshape(*self.shape[:axis], *sizes, *self.shape[axis + 1 :])

    def tensor_split(self, indices_or_sections, dim=0):
        """Views along dim: n nearly equal parts (the first ones one longer), or the
        parts between the given indices."""
        axis = _axis(dim, self.ndim)
        length = self.shape[axis]
        if isinstance(indices_or_sections, int):
            n = indices_or_sections
            if n <= 0:
                raise RuntimeError(f"number of sections must be larger than 0, got {n}")
            sizes = [length // n + (k < length % n) for k in range(n)]
            bounds = np.cumsum([0, *sizes]).tolist()
        else:
            bounds = [0, *indices_or_sections, length]
        lead = (slice(None),) * axis
        return tuple(
            self[lead + (slice(a, max(a, b)),)]
            for a, b in zip(bounds, bounds[1:], strict=False)
        )

    def index_fill(self, dim, index, value):
        """A copy of self with the slices at `index` along dim set to value (a
        number or a 0-d tensor, which gets their gradients' sum)."""
        axis = _axis(dim, self.ndim)
        where = (slice(None),) * axis + (
            _check_index(index, self.shape[axis], axis, "index_fill_"),
        )
        value = self._lift(value)
        out = self._data.copy()
        out[where] = value._data
        filled = np.zeros(self.shape, bool)
        filled[where] = True

        def backward(xp, g, index):
            gvalue = (g * filled).sum() if value.requires_grad else None
            return xp.where(filled, 0, g), gvalue

        name = "IndexFillBackward1" if value.requires_grad else "IndexFillBackward0"
        return self._result(out, (self, value), backward, name, (index,))

    def index_fill_(self, dim, index, value):
        return self._inplace(lambda t: t.index_fill(dim, index, value), value)

    def select(self, dim, index):
        """The slice at `index` along dim, without that dim (a view)."""
        axis = _axis(dim, self.ndim)
        if not -self.shape[axis] <= index < self.shape[axis]:
            raise IndexError(
                f"select(): index {index} out of range for tensor of size "
                f"{list(self.shape)} at dimension {dim}"
            )
        return self[(slice(None),) * axis + (index,)]

    def diff(self, n=1, dim=-1, prepend=None, append=None):
        """The n-th forward difference along dim of self with prepend and append
        joined on at its ends (for bools: whether neighbours differ)."""
        from .functions import cat  # here: functions builds on Tensor

        parts = [t for t in (prepend, self, append) if t is not None]
        if any(t.ndim != self.ndim for t in parts):
            raise RuntimeError(
                "diff expects prepend or append to be the same dimension as input"
            )
        x = cat(parts, dim) if len(parts) > 1 else self
        lead = (slice(None),) * _axis(dim, self.ndim)
        for _ in range(n):
            later, earlier = x[lead + (slice(1, None),)], x[lead + (slice(None, -1),)]
            x = later != earlier if x.dtype == np.bool_ else later - earlier
        return x

    def narrow(self, dim, start, length):
        """The `length` elements from `start` along dim (a view)."""
        axis = _axis(dim, self.ndim)
        start = start % self.shape[axis] if start < 0 else start
        if start + length > self.shape[axis]:
            raise RuntimeError(
                f"start ({start}) + length ({length}) exceeds dimension size "
                f"({self.shape[axis]})."
            )
        return self[(slice(None),) * axis + (slice(start, start + length),)]

    def roll(self, shifts, dims=None):
        """Elements shifted along dims, those pushed off the end coming back at the
        start (dims None: over the flattened tensor)."""
        back = np.negative(shifts).tolist()

        def backward(xp, g):
            return (xp.roll(g, back, dims),)

        out = np.roll(self._data, shifts, dims)
        return self._result(out, (self,), backward, "RollBackward0", saves=False)

    def diagonal(self, offset=0, dim1=0, dim2=1):
        """The offset-th diagonal of the matrices in dims dim1, dim2, as the last dim
        (a copy; torch's is a view): an einsum with a repeated letter."""
        from .functions import einsum  # here: functions builds on Tensor

        first, second = _axis(dim1, self.ndim), _axis(dim2, self.ndim)
        if first == second:
            raise RuntimeError(
                f"diagonal dimensions cannot be identical {dim1}, {dim2}"
            )
        x, (start1, start2) = self, (0, offset) if offset >= 0 else (-offset, 0)
        n = max(min(self.shape[first] - start1, self.shape[second] - start2), 0)
        x = x.narrow(first, min(start1, x.shape[first]), n)
        x = x.narrow(second, min(start2, x.shape[second]), n)
        letters = [chr(ord("a") + i) for i in range(self.ndim)]
        letters[second] = letters[first]
        kept = [c for i, c in enumerate(letters) if i not in (first, second)]
        return einsum(f"{''.join(letters)}->{''.join(kept)}{letters[first]}", x)

    def diag(self, diagonal=0):
        """A 1-D tensor as the `diagonal`-th diagonal of a square matrix (zeros
        elsewhere), or a matrix's `diagonal`-th diagonal as a 1-D tensor."""
        if self.ndim not in (1, 2):
            raise RuntimeError(f"diag(): Supports 1D or 2D tensors. Got {self.ndim}D")
        x = self._data
        if self.ndim == 1:
            n = x.size + abs(diagonal)
            where = np.nonzero(np.eye(n, k=diagonal, dtype=bool))
            out = np.zeros((n, n), x.dtype)
            out[where] = x

            def backward(xp, g):
                return (g[where],)

            name = "DiagEmbedBackward0"
        else:
            where = np.nonzero(np.eye(*x.shape, k=diagonal, dtype=bool))
            out = x[where]

            def backward(xp, g):
                return (xp.scatter(g, x.shape, where),)

            name = "DiagonalBackward0_copy"
        return self._result(out, (self,), backward, name, saves=False)

    def diag_embed(self, offset=0, dim1=-2, dim2=-1):
        """Each vector along the last dim as the offset-th diagonal of a square matrix
        (zeros elsewhere), the matrices in dims dim1, dim2 of the result."""
        x = self._data
        n = x.shape[-1] + abs(offset)
        rows, cols = np.nonzero(np.eye(n, k=offset, dtype=bool))
        out = np.zeros(x.shape[:-1] + (n, n), x.dtype)
        out[..., rows, cols] = x

        def backward(xp, g):
            return (g[..., rows, cols],)

        embedded = self._result(
            out, (self,), backward, "DiagEmbedBackward0", saves=False
        )
        dims = tuple(_axis(d, out.ndim) for d in (dim1, dim2))
        if dims == (out.ndim - 2, out.ndim - 1):
            return embedded
        return embedded.movedim((-2, -1), dims)

    @property
    def T(self):
        """Reversed dims (the matrix transpose for 2-D tensors)."""
        return self.permute(list(reversed(range(self.ndim))))

    def t(self):
        """Matrix transpose; tensors of fewer than 2 dims are returned as they are."""
        if self.ndim > 2:
            raise RuntimeError(
                f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D"
            )
        return self._permuted(list(reversed(range(self.ndim))), "TBackward0")

    @property
    def mT(self):
        """Transpose of the last two dims (a batch of matrices)."""
        return self.transpose(-2, -1)

    @staticmethod
    def _index(index):
        """NumPy index for a torch index: Tensors inside become their arrays, a
        uint8 one a bool mask (torch's deprecated meaning, not positions)."""
        parts = index if isinstance(index, tuple) else (index,)
        parts = tuple(_index_array(p) if isinstance(p, ShapeOps) else p for p in parts)
        return parts if isinstance(index, tuple) else parts[0]

    def __getitem__(self, index):
        return self._indexed(as_tuple_if_torch_would(index))

    def _indexed(self, index, name=None):
        """self[index]; `name` overrides the grad_fn name of a view (split's)."""
        if split := ints_first(index):
            return self._indexed(split[0])._indexed(split[1], name)
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, slice) and (p.step or 1) < 0 for p in parts):
            raise ValueError("step must be greater than zero")
        index = self._index(index)
        if _is_basic(index) and not any(p is Ellipsis for p in parts):
            # x[0] of a 1-D array is a NumPy scalar (a copy); x[0, ...] is a 0-d view
            index = parts + (Ellipsis,)
        x = self._data
        try:
            out = x[index]
        except IndexError as exc:  # torch says dimension where NumPy says axis
            raise IndexError(str(exc).replace(" axis ", " dimension ")) from None

        def backward(xp, g, *index_tensors):
            return (xp.scatter(g, x.shape, index),)  # repeated indices accumulate

        if not _is_basic(index):  # a copy, and torch keeps the index tensors
            return self._result(
                out, (self,), backward, "IndexBackward0", _tensors(parts)
            )
        return self._result(
            out,
            (self,),
            backward,
            name or _basic_index_name(parts),
            saves=False,
            view=lambda a: a[index],
        )

    def _copy_slices(self, view_fn, index, value, name="torch::autograd::CopySlices"):
        """Record the write just made of `value` into view_fn(self)[index] (self
        itself if view_fn is None): value gets the gradient of the overwritten
        region, self's version before the write the rest. `name` is torch's for the
        node (CopyBackwards for a whole-tensor copy_)."""
        parts = index if isinstance(index, tuple) else (index,)
        index = self._index(index)

        def region(a):
            return a if view_fn is None else view_fn(a)

        shape = self.shape

        def backward(xp, g, *index_tensors):
            # both parts are indexing of g, so they are recorded under create_graph
            cells = region(np.arange(math.prod(shape)).reshape(shape))[index]
            written = np.zeros(shape, bool)
            written.reshape(-1)[cells] = True
            picked = g.reshape(-1)[cells]
            return xp.where(written, 0, g), (
                unbroadcast(picked, value.shape) if value.requires_grad else None
            )

        saved = None if _is_basic(index) else _tensors(parts)
        self._grad_fn = autograd.Node(name, (self, value), backward, saved)
        self._requires_grad = True

    def gather(self, dim, index):
        """out[i][j][k] = self[index[i][j][k]][j][k] for dim 0, and so on."""
        _, where = _scatter_positions(self, dim, index, "gather")
        x = self._data

        def backward(xp, g, x, index):
            return (xp.scatter(g, x.shape, where),)

        return self._result(
            x[where], (self,), backward, "GatherBackward0", (self, index)
        )

    def scatter_add(self, dim, index, src):
        """A copy of self with src[i][j][k] added at [index[i][j][k]][j][k] for dim
        0, and so on (repeated positions accumulate); gather's reverse."""
        _, where = _scatter_positions(self, dim, index, "scatter")
        picked = tuple(np.indices(index.shape, sparse=True))  # src's used part
        out = self._data.copy()
        np.add.at(out, where, src._data[picked])

        def backward(xp, g, index):
            gsrc = (
                xp.scatter(g[where], src.shape, picked) if src.requires_grad else None
            )
            return g, gsrc

        return self._result(out, (self, src), backward, "ScatterAddBackward0", (index,))

    def scatter(self, dim, index, src):
        """A copy of self with src[i][j][k] written at [index[i][j][k]][j][k] for
        dim 0, and so on; `src` may be a number, written at every position."""
        _, where = _scatter_positions(self, dim, index, "scatter")
        picked = tuple(np.indices(index.shape, sparse=True))  # src's used part
        src = self._lift(src)
        out = self._data.copy()
        out[where] = src._data[picked] if src.ndim else src._data
        written = np.zeros(self.shape, bool)
        written[where] = True

        def backward(xp, g, index):
            gsrc = (
                xp.scatter(g[where], src.shape, picked) if src.requires_grad else None
            )
            return xp.where(written, 0, g), gsrc

        name = "ScatterBackward0" if src.ndim else "ScatterBackward1"
        return self._result(out, (self, src), backward, name, (index,))

    def scatter_(self, dim, index, src):
        return self._inplace(lambda t: t.scatter(dim, index, src), src)

    def scatter_reduce(self, dim, index, src, reduce, *, include_self=True):
        """A copy of self with src[i][j][k] reduced into [index[i][j][k]][j][k] for
        dim 0, and so on: "sum", "prod", "mean", "amax" or "amin", with self's value
        taking part unless include_self=False. Ties of amax/amin share the gradient
        equally, as torch's."""
        if reduce not in REDUCTIONS:
            raise RuntimeError(
                "reduce argument must be either sum, prod, mean, amax or amin, got "
                + str(reduce)
            )
        _, where = _scatter_positions(self, dim, index, "scatter_reduce")
        picked = tuple(np.indices(index.shape, sparse=True))
        values = src._data[picked]
        touched = np.zeros(self.shape, bool)
        touched[where] = True
        count = np.zeros(self.shape, np.int64)
        np.add.at(count, where, 1)
        out = self._data.copy()
        if not include_self:
            out[touched] = REDUCTIONS[reduce][1]
        else:
            count += 1
        count = np.maximum(count, 1)
        REDUCTIONS[reduce][0].at(out, where, values)
        if reduce == "mean":
            out = np.where(touched, out / count, out).astype(out.dtype)
        self_coef, src_coef = _scatter_reduce_coefs(
            reduce, self._data, values, out, where, count, include_self
        )
        if not include_self:
            self_coef = np.where(touched, 0, self_coef)

        def backward(xp, g, index):
            if xp.records and reduce == "prod":
                raise RuntimeError(
                    "symgrad.tape: double backward of scatter_reduce(prod) is not "
                    "supported"
                )
            gsrc = None
            if src.requires_grad:
                gsrc = xp.scatter(g[where] * src_coef, src.shape, picked)
            return g * self_coef, gsrc

        return self._result(
            out, (self, src), backward, "ScatterReduceBackward0", (index,)
        )

    def scatter_reduce_(self, dim, index, src, reduce, *, include_self=True):
        return self._inplace(
            lambda t: t.scatter_reduce(
                dim, index, src, reduce, include_self=include_self
            ),
            src,
        )

    def index_put(self, indices, values, accumulate=False):
        """A copy of self with values written (or with accumulate, added: repeated
        positions add up) at self[indices], indices a tuple of index tensors."""
        values = self._lift(values)
        if not accumulate:
            out = self.clone()
            out[tuple(indices)] = values
            return out
        where = self._index(tuple(indices))
        out = self._data.copy()
        np.add.at(out, where, values._data)

        def backward(xp, g, *index_tensors):
            gvalues = (
                unbroadcast(g[where], values.shape) if values.requires_grad else None
            )
            return g, gvalues

        return self._result(
            out, (self, values), backward, "IndexPutBackward0", _tensors(indices)
        )

    def index_put_(self, indices, values, accumulate=False):
        if not accumulate:
            self[tuple(indices)] = values
            return self
        return self._inplace(lambda t: t.index_put(indices, values, True), values)

    def unfold(self, dimension, size, step):
        """A view of every window of `size` elements along `dimension`, `step` apart:
        that dim counts windows, and a new last dim runs along each."""
        axis = _axis(dimension, max(self.ndim, 1))
        length = self.shape[axis] if self.ndim else 1
        if size > length:
            raise RuntimeError(
                f"maximum size for tensor at dimension {axis} is {length} but size is "
                f"{size}"
            )
        if step <= 0:
            raise RuntimeError(f"step is {step} but must be > 0")

        def windows(a):
            if a.ndim == 0:
                return a.reshape(1)
            view = np.lib.stride_tricks.sliding_window_view(a, size, axis=axis)
            return view[(slice(None),) * axis + (slice(None, None, step),)]

        shape = self.shape
        cells = np.unravel_index(
            windows(np.arange(math.prod(shape)).reshape(shape)), shape
        )

        def backward(xp, g):
            return (xp.scatter(g, shape, cells),)  # overlapping windows add up

        return self._result(
            windows(self._data),
            (self,),
            backward,
            "UnfoldBackward0",
            saves=False,
            view=windows,
        )

    def scatter_add_(self, dim, index, src):
        return self._inplace(lambda t: t.scatter_add(dim, index, src), src)

    def index_select(self, dim, index):
        """The slices at `index` (a 1-D integer tensor) along dim."""
        if index.dtype not in (np.int32, np.int64):
            raise RuntimeError(
                "index_select(): Expected dtype int32 or int64 for index"
            )
        if index.ndim > 1:
            raise IndexError("index_select(): Index is supposed to be a vector")
        axis = _axis(dim, self.ndim)
        x, i = self._data, index._data.reshape(-1)
        if i.size and (i.min() < 0 or i.max() >= x.shape[axis]):
            raise IndexError("index out of range in self")
        lead = (slice(None),) * axis

        def backward(xp, g, index):
            return (xp.scatter(g, x.shape, lead + (i,)),)

        out = np.take(x, i, axis)
        return self._result(out, (self,), backward, "IndexSelectBackward0", (index,))

    def index_add(self, dim, index, source, *, alpha=1):
        """A copy of self with alpha * source's slices along dim added at the
        positions `index` (1-D) gives; repeated positions accumulate."""
        axis = _axis(dim, self.ndim)
        i = _check_index(index, self.shape[axis], axis, "index_add_")
        if source.dtype != self.dtype:
            raise RuntimeError(
                f"index_add_(): self ({scalar_name(self.dtype)}) and source "
                f"({scalar_name(source.dtype)}) must have the same scalar type"
            )
        lead = (slice(None),) * axis
        out = self._data.copy()
        np.add.at(out, lead + (i,), alpha * source._data)

        def backward(xp, g, index):
            gsrc = alpha * g[lead + (i,)] if source.requires_grad else None
            return g, gsrc

        return self._result(
            out, (self, source), backward, "IndexAddBackward0", (index,)
        )

    def index_add_(self, dim, index, source, *, alpha=1):
        return self._inplace(
            lambda t: t.index_add(dim, index, source, alpha=alpha), source
        )

    def _triangle(self, keep, diagonal, op):
        if self.ndim < 2:
            raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions")
        out = keep(self._data, diagonal)
        kept = keep(np.ones(out.shape[-2:], bool), diagonal)

        def backward(xp, g):
            return (xp.where(kept, g, 0),)

        name = f"{op.capitalize()}Backward0"
        return self._result(out, (self,), backward, name, saves=False)

    def tril(self, diagonal=0):
        """The lower triangle of the last two dims (on and below `diagonal`)."""
        return self._triangle(np.tril, diagonal, "tril")

    def triu(self, diagonal=0):
        """The upper triangle of the last two dims (on and above `diagonal`)."""
        return self._triangle(np.triu, diagonal, "triu")

    def masked_select(self, mask):
        """The elements where the bool mask (broadcast with self) holds, as 1-D."""
        if mask.dtype != np.bool_:
            raise RuntimeError("masked_select: expected BoolTensor for mask")
        shape = broadcast_shape(self.shape, mask.shape)
        where = np.nonzero(np.broadcast_to(mask._data, shape))
        out = np.broadcast_to(self._data, shape)[where]

        def backward(xp, g, mask):
            return (unbroadcast(xp.scatter(g, shape, where), self.shape),)

        return self._result(out, (self,), backward, "MaskedSelectBackward0", (mask,))

    def nonzero(self, *, as_tuple=False):
        """The indices of the non-zero elements: an (n, ndim) int64 tensor, or
        one 1-D tensor per dim with as_tuple=True."""
        if as_tuple:
            return tuple(self._result(i) for i in np.nonzero(np.atleast_1d(self._data)))
        return self._result(np.argwhere(self._data))
