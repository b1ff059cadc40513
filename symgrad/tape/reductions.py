"""Reductions over `dim` (an int or tuple, negatives allowed; None means all dims).

Each forward keeps the reduced dims (keepdims=True) so that its backward can reshape
g to that kept shape and broadcast it back over the input.
"""

import math
import warnings
from collections import namedtuple

import numpy as np

from .dtypes import scalar_name
from .namespaces import silent_methods

DOF_WARNING = (
    "{}(): degrees of freedom is <= 0. Correction should be strictly less than the "
    "reduction factor (input numel divided by output numel)."
)


def _return_type(name, fields=("values", "indices")):
    """torch.return_types.<name>: a (values, indices) namedtuple (or of other
    fields), printed as torch prints it (one field a line)."""

    def __repr__(self):
        lines = ",\n".join(f"{f}={v!r}" for f, v in zip(fields, self, strict=True))
        return f"torch.return_types.{name}(\n{lines})"

    base = namedtuple(name, fields)
    return type(name, (base,), {"__slots__": (), "__repr__": __repr__})


MaxResult, MinResult = _return_type("max"), _return_type("min")
SortResult, TopkResult = _return_type("sort"), _return_type("topk")
MedianResult, KthvalueResult = _return_type("median"), _return_type("kthvalue")
ModeResult = _return_type("mode")
CummaxResult, CumminResult = _return_type("cummax"), _return_type("cummin")
AminmaxResult = _return_type("aminmax", ("min", "max"))
# quantile's interpolations: how each rounds a fractional rank (None: it does not,
# the value is interpolated between the ranks around it); np.round rounds half to
# even, as torch's round
QUANTILE_ROUNDING = dict(
    linear=None, lower=np.floor, higher=np.ceil, midpoint=None, nearest=np.round
)


def _all_dims(dim):
    """dim=None, () and [] all mean every dim, as in torch."""
    return dim is None or isinstance(dim, tuple | list) and not dim


def normalize_dims(dim, ndim):
    """Sorted non-negative axes for `dim`, with torch's errors for out-of-range and
    repeated dims."""
    if _all_dims(dim):
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, int | np.integer) else tuple(dim)
    n = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1
    for d in dims:
        if not -n <= d < n:
            raise IndexError(
                f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], "
                f"but got {d})"
            )
    axes = [d % n for d in dims]
    for d in axes:
        if axes.count(d) > 1:
            raise RuntimeError(f"dim {d} appears multiple times in the list of dims")
    return tuple(sorted(axes)) if ndim else ()


def _check_nonempty(x, dim, dims, op):
    """torch refuses to take an extreme over nothing: over all dims of an empty
    tensor (RuntimeError), or over a dim of size 0 (IndexError)."""
    if _all_dims(dim):
        if x.size == 0:
            raise RuntimeError(
                f"{op}(): Expected reduction dim to be specified for input.numel() "
                "== 0. Specify the reduction dim with the 'dim' argument."
            )
        return
    for d in dims:
        if x.shape[d] == 0:
            raise IndexError(
                f"{op}(): Expected reduction dim {d} to have non-zero size."
            )


def _check_softmax_dtype(x, op):
    """torch has no integer softmax: it wants a float input (or a dtype= argument)."""
    if x.dtype.kind != "f":
        raise NotImplementedError(f"\"{op}\" not implemented for '{x.dtype}'")


def _accumulator(x):
    """The dtype torch sums (and multiplies) in: int64 for every integer and bool
    dtype, else the input's own (None)."""
    return np.int64 if x.dtype.kind in "biu" else None


def _finite_max(x, dims):
    """The max over dims as a shift for exp, 0 where it is not finite (a slice of
    all -inf), so that the shift itself makes no inf - inf. An empty x needs no
    shift (NumPy's max of no elements raises; torch's results are empty or -inf)."""
    if not x.size:
        return 0
    m = x.max(axis=dims, keepdims=True)
    return np.where(np.isfinite(m), m, 0)


def _mean(x, dims, count):
    """x's mean over dims (kept): nan over no elements, without np.mean's warning."""
    if count:
        return x.mean(axis=dims, keepdims=True)
    kept = [1 if d in dims else n for d, n in enumerate(x.shape)]
    return np.full(kept, np.nan, x.dtype)


def _reduced(self, out_kept, dims, keepdim, backward, name, saves=True):
    out = out_kept if keepdim else np.squeeze(out_kept, axis=dims)
    return self._result(out, (self,), backward, name, saves)


def _extreme(self, dim, keepdim, reduce, op, name):
    """amax/amin over `dim`; the gradient is shared evenly among tied extremes."""
    x, dims = self._data, normalize_dims(dim, self.ndim)
    _check_nonempty(x, dim, dims, op)
    out = reduce(x, axis=dims, keepdims=True)
    kept = out.shape

    def backward(xp, g, x, out):
        ties = x == out.reshape(kept)
        return (g.reshape(kept) * ties / ties.sum(axis=dims, keepdims=True),)

    return _reduced(self, out, dims, keepdim, backward, name, (self, "out"))


def _select(self, dim, keepdim, arg, result, name):
    """(values, indices) of max(dim)/min(dim): the gradient goes to the first pick."""
    if not isinstance(dim, int | np.integer):
        raise TypeError(
            f"{result.__name__}() received an invalid combination of arguments - got "
            f"(dim={type(dim).__name__}), but expected (int dim, bool keepdim = False)"
        )
    x, dims = self._data, normalize_dims(dim, self.ndim)
    _check_nonempty(x, dim, dims, result.__name__)
    (dim,) = dims
    idx = arg(x, axis=dim, keepdims=True)
    where = _along(idx, dim)

    def backward(xp, g):
        return (xp.scatter(g.reshape(idx.shape), x.shape, where),)

    values = np.take_along_axis(x, idx, axis=dim)
    values = _reduced(self, values, (dim,), keepdim, backward, name, saves=())
    return result(values, self._result(idx if keepdim else np.squeeze(idx, axis=dim)))


def _ranked(k):
    """An `arg` for _select: the index of the k-th smallest along axis (k(n) of the
    axis' length n), ties in order of position."""

    def arg(x, axis, keepdims):
        order = np.argsort(x, axis=axis, kind="stable")
        pick = np.take(order, [k(x.shape[axis])], axis=axis)
        return pick if keepdims else np.squeeze(pick, axis)

    return arg


def _lower_median(x, axis, keepdims):
    """The lower of the two middle values of all of x (torch's median())."""
    value = np.sort(x, axis=None)[(x.size - 1) // 2]
    return np.reshape(value, (1,) * x.ndim if keepdims else ())


def _mode_index(x, axis, keepdims):
    """An `arg` for _select: the index of the most frequent value along axis (the
    smallest of those equally frequent), at its last occurrence. torch's CPU mode
    scans the runs of the sorted slice the same way, but its sort is unstable:
    beyond 16 elements its index may be another occurrence's."""
    order = np.argsort(x, axis=axis, kind="stable")
    s = np.take_along_axis(x, order, axis)
    n = x.shape[axis]
    lead = (slice(None),) * axis
    differs = s[lead + (slice(1, None),)] != s[lead + (slice(None, -1),)]
    edge = np.ones_like(s[lead + (slice(0, 1),)], dtype=bool)
    starts = np.concatenate([edge, differs], axis)
    ends = np.concatenate([differs, edge], axis)
    position = np.arange(n).reshape([-1 if d == axis else 1 for d in range(x.ndim)])
    start = np.maximum.accumulate(np.where(starts, position, 0), axis)
    length = np.where(ends, position - start + 1, 0)  # a run's length at its end
    best = np.argmax(length, axis=axis, keepdims=True)
    pick = np.take_along_axis(order, best, axis)
    return pick if keepdims else np.squeeze(pick, axis)


def _running(self, dim, accumulate, result, name):
    """(values, indices) of cummax/cummin along dim. As in torch, the index is the
    last position holding the running extreme (a tie moves it on; so does a nan,
    which then stays the extreme); the gradient goes back there."""
    (axis,) = normalize_dims(dim, self.ndim) or (0,)
    x = np.atleast_1d(self._data)  # a 0-d tensor has dims 0 and -1
    values = accumulate(x, axis=axis)
    hit = (x == values) | (np.isnan(x) if x.dtype.kind == "f" else False)
    position = np.arange(x.shape[axis]).reshape(
        [-1 if d == axis else 1 for d in range(x.ndim)]
    )
    idx = np.maximum.accumulate(np.where(hit, position, 0), axis)
    where = _along(idx, axis)

    def backward(xp, g):
        return (xp.scatter(g.reshape(x.shape), x.shape, where).reshape(self.shape),)

    values = self._result(values.reshape(self.shape), (self,), backward, name, False)
    return result(values, self._result(idx.reshape(self.shape)))


def _quantile_q(self, q):
    """q as a 1-d tensor of self's dtype, with torch's checks."""
    if self.dtype.kind != "f":
        raise RuntimeError(
            "quantile() input tensor must be either float or double dtype"
        )
    if not isinstance(q, ReductionOps):
        if not 0 <= q <= 1:
            raise RuntimeError(f"quantile() q must be in the range [0, 1] but got {q}")
        return self._lift(float(q)).reshape(1)
    if q.ndim > 1:
        raise RuntimeError("quantile() q must be a scalar or 1D tensor")
    if q.dtype != self.dtype:
        raise RuntimeError("quantile() q tensor must be same dtype as the input tensor")
    if not ((q._data >= 0) & (q._data <= 1)).all():
        raise RuntimeError("quantile() q values must be in the range [0, 1]")
    return q.reshape(-1)


def _arg(self, arg, dim, keepdim):
    if dim is None:  # the flat index; keepdim keeps every dim, as size 1
        return self._result(
            arg(self._data).reshape((1,) * self.ndim if keepdim else ())
        )
    return self._result(arg(self._data, axis=dim, keepdims=keepdim))


def _along(idx, axis):
    """The NumPy index of the positions idx holds along axis (put_along_axis's),
    so that a rule moves g back to them with xp.scatter, differentiably."""
    where = list(np.indices(idx.shape, sparse=True))
    where[axis] = idx
    return tuple(where)


def _others_product(xp, x, axis):
    """For each element, the product of the others along `axis`: exclusive
    cumulative products from both ends, exact where x has zeros (out / x is not)."""
    lead = (slice(None),) * axis
    ones = xp.zeros_like(x[lead + (slice(0, 1),)]) + 1
    before = xp.concatenate([ones, x[lead + (slice(None, -1),)]], axis).cumprod(axis)
    rest = xp.flip(x[lead + (slice(1, None),)], axis)
    after = xp.flip(xp.concatenate([ones, rest], axis).cumprod(axis), axis)
    return before * after


def _spread(self, dim, unbiased, keepdim, correction, root):
    """var (root=False) or std over `dim`, dividing by N - correction (Bessel's
    correction 1 by default; `unbiased` is torch's older spelling of 0 or 1)."""
    if self.dtype.kind != "f":
        raise RuntimeError("std and var only support floating point and complex dtypes")
    x, dims = self._data, normalize_dims(dim, self.ndim)
    c = int(unbiased) if correction is None else correction
    count = math.prod(x.shape[d] for d in dims)
    dof = max(count - c, 0)
    if dof == 0:
        warnings.warn(DOF_WARNING.format("std" if root else "var"), stacklevel=3)
    dev = x - _mean(x, dims, count)
    out = (dev * dev).sum(axis=dims, keepdims=True) / dof  # nan or inf if dof is 0
    out = np.sqrt(out) if root else out
    kept = out.shape

    def backward(xp, g, x, out=None):
        dev = x - x.sum(axis=dims, keepdims=True) / count
        if root:  # 0 where the std is 0, as torch's (sqrt's slope is infinite);
            # dividing by 1 there keeps that 0's own derivatives 0, not 0/0
            zero = out.reshape(kept) == 0
            safe = xp.where(zero, 1, out.reshape(kept))
            return (xp.where(zero, 0, g.reshape(kept) * dev / (dof * safe)),)
        return (g.reshape(kept) * (2 / dof if dof else math.inf) * dev,)

    # std's rule reads its result, var's only x (so var's result may be written)
    if root:
        return _reduced(
            self, out, dims, keepdim, backward, "StdBackward0", (self, "out")
        )
    return _reduced(self, out, dims, keepdim, backward, "VarBackward0")


def _cumprod_grad(xp, x, g, axis):
    """d(sum g * cumprod(x))/dx: element i gets the sum over j >= i of g[j] times
    the product of x[:j+1] without x[i], a cumprod of x with x[i] set to 1, so
    zeros in x are exact (out / x is not)."""
    perm = [d for d in range(x.ndim) if d != axis] + [axis]  # axis last
    x, g = xp.transpose(x, perm), xp.transpose(g, perm)
    i, j = np.indices((x.shape[-1],) * 2)
    others = xp.where(i == j, 1, x[..., None, :]).cumprod(-1)  # [..., i, j]
    grad = xp.where(j >= i, g[..., None, :] * others, 0).sum(-1)
    return xp.transpose(grad, [perm.index(d) for d in range(x.ndim)])


def _sorted(self, dim, descending, k, result, name):
    """(values, indices) of the k first (all if k is None) of the sorted slices
    along dim; ties keep their order. The gradient goes back to where each value
    came from."""
    (axis,) = normalize_dims(dim, self.ndim)
    x = self._data
    if descending:  # a stable ascending sort of the reversed slices, reversed
        n = x.shape[axis]
        idx = n - 1 - np.flip(np.argsort(np.flip(x, axis), axis, kind="stable"), axis)
    else:
        idx = np.argsort(x, axis, kind="stable")
    if k is not None:
        if not 0 <= k <= x.shape[axis]:
            raise RuntimeError("selected index k out of range")
        idx = np.take(idx, np.arange(k), axis)

    where = _along(idx, axis)

    def backward(xp, g):
        return (xp.scatter(g, x.shape, where),)

    values = np.take_along_axis(x, idx, axis)
    values = self._result(values, (self,), backward, name, saves=())
    return result(values, self._result(idx))


def _vector_norm(self, p, dim, keepdim):
    """(sum |x|^p)^(1/p) over dim (max |x| for inf, the count of non-zeros for
    0), with torch's gradient: sign(x) |x|^(p-1) / norm^(p-1), 0 where the norm
    is 0; for +-inf, sign(x) shared among the ties at the extreme; for 0 none
    (torch's is undefined: x.grad stays None)."""
    if self.dtype.kind != "f":
        raise RuntimeError(
            "linalg.vector_norm: Expected a floating point or complex tensor as "
            f"input. Got {scalar_name(self.dtype)}"
        )
    x, dims = self._data, normalize_dims(dim, self.ndim)
    a = np.abs(x)
    if p in (np.inf, -np.inf):
        out = (np.max if p > 0 else np.min)(a, axis=dims, keepdims=True)
    elif p == 0:
        out = (a != 0).sum(axis=dims, keepdims=True).astype(x.dtype)
    else:
        out = (a**p).sum(axis=dims, keepdims=True) ** (1 / p)

    kept = out.shape

    def backward(xp, g, x, out):
        g, out = g.reshape(kept), out.reshape(kept)
        if p in (np.inf, -np.inf):
            ties = xp.abs(x) == out
            return (xp.sign(x) * ties * g / ties.sum(axis=dims, keepdims=True),)
        if p == 0:
            return (None,)
        scale = xp.where(out == 0, 0, g * out ** (1 - p))
        return (xp.sign(x) * xp.where(x == 0, 0, xp.abs(x) ** (p - 1)) * scale,)

    name = "LinalgVectorNormBackward0"
    return _reduced(self, out, dims, keepdim, backward, name, (self, "out"))


@silent_methods
class ReductionOps:
    def sum(self, dim=None, keepdim=False, *, dtype=None, axis=None, keepdims=False):
        """`axis` and `keepdims` are torch's NumPy-style aliases (backward rules,
        which run on arrays too, use them). `dtype` casts self first, as in torch
        (so do mean's, prod's and cumsum's)."""
        if dtype is not None:
            return self.to(dtype).sum(dim, keepdim, axis=axis, keepdims=keepdims)
        dim, keepdim = dim if axis is None else axis, keepdim or keepdims
        x, dims = self._data, normalize_dims(dim, self.ndim)
        out = x.sum(axis=dims, keepdims=True, dtype=_accumulator(x))

        def backward(xp, g):
            return (xp.broadcast_to(g.reshape(out.shape), x.shape),)

        name = "SumBackward0" if dim is None else "SumBackward1"
        return _reduced(self, out, dims, keepdim, backward, name, saves=False)

    def mean(self, dim=None, keepdim=False, *, dtype=None):
        if dtype is not None:
            return self.to(dtype).mean(dim, keepdim)
        if self.dtype.kind != "f":
            raise RuntimeError(
                "mean(): could not infer output dtype. Input dtype must be either a "
                f"floating point or complex dtype. Got: {self.dtype}"
            )
        x, dims = self._data, normalize_dims(dim, self.ndim)
        count = math.prod(x.shape[d] for d in dims)
        out = _mean(x, dims, count)

        def backward(xp, g):
            return (xp.broadcast_to(g.reshape(out.shape) / count, x.shape),)

        name = "MeanBackward0" if dim is None else "MeanBackward1"
        return _reduced(self, out, dims, keepdim, backward, name, saves=False)

    def nansum(self, dim=None, keepdim=False, *, dtype=None):
        """The sum with each nan counted as 0. A nan's gradient is g times 0, as
        torch's (so nan where g is inf: nanmean of all nans)."""
        if dtype is not None:
            return self.to(dtype).nansum(dim, keepdim)
        x, dims = self._data, normalize_dims(dim, self.ndim)
        out = np.nansum(x, axis=dims, keepdims=True, dtype=_accumulator(x))
        counted = ~np.isnan(x) if x.dtype.kind == "f" else True

        def backward(xp, g):
            return (xp.broadcast_to(g.reshape(out.shape), x.shape) * counted,)

        return _reduced(self, out, dims, keepdim, backward, "NansumBackward0", False)

    def nanmean(self, dim=None, keepdim=False, *, dtype=None):
        """The mean of the values that are not nan: nansum over their count, as
        torch computes it (so nan where all are)."""
        if dtype is not None:
            return self.to(dtype).nanmean(dim, keepdim)
        if self.dtype.kind != "f":
            raise RuntimeError(
                "nanmean(): expected input to have floating point or complex dtype "
                f"but got {scalar_name(self.dtype)}"
            )
        count = self.isnan().logical_not().sum(dim, keepdim)
        return self.nansum(dim, keepdim) / count

    def trace(self):
        """The sum of a matrix's diagonal."""
        if self.ndim != 2:
            raise RuntimeError(
                f"trace: expected a matrix, but got tensor with dim {self.ndim}"
            )
        x = self._data
        diagonal = np.eye(*x.shape, dtype=bool)

        def backward(xp, g):
            return (xp.where(diagonal, g, 0),)

        out = np.trace(x, dtype=_accumulator(x))
        return self._result(out, (self,), backward, "TraceBackward0", saves=False)

    def var(self, dim=None, unbiased=True, keepdim=False, *, correction=None):
        return _spread(self, dim, unbiased, keepdim, correction, root=False)

    def std(self, dim=None, unbiased=True, keepdim=False, *, correction=None):
        return _spread(self, dim, unbiased, keepdim, correction, root=True)

    def prod(self, dim=None, keepdim=False, *, dtype=None):
        """The product over one dim, or over everything; the gradient of each
        element is g times the product of the others."""
        if dtype is not None:
            return self.to(dtype).prod(dim, keepdim)
        x = self._data
        if dim is None or self.ndim == 0:
            normalize_dims(dim, self.ndim)
            out = np.prod(x, dtype=_accumulator(x))

            def backward(xp, g, x, _):
                return (g * _others_product(xp, x.reshape(-1), 0).reshape(x.shape),)

            saves = (self, "out")  # as torch's prod: writing to the result is an error
            return self._result(out, (self,), backward, "ProdBackward0", saves)
        (axis,) = normalize_dims(dim, self.ndim)
        out = np.prod(x, axis=axis, keepdims=True, dtype=_accumulator(x))

        def backward(xp, g, x, _):
            return (g.reshape(out.shape) * _others_product(xp, x, axis),)

        return _reduced(
            self, out, (axis,), keepdim, backward, "ProdBackward1", (self, "out")
        )

    def cumsum(self, dim, *, dtype=None):
        """Running sums along dim; the gradient is g summed from the other end."""
        if dtype is not None:
            return self.to(dtype).cumsum(dim)
        normalize_dims(dim, self.ndim)
        x = np.atleast_1d(self._data)  # a 0-d tensor has dims 0 and -1
        out = np.cumsum(x, axis=dim, dtype=_accumulator(x)).reshape(self.shape)
        line = x.shape  # a 0-d tensor's sums run along a line of one

        def backward(xp, g):
            g = xp.flip(g.reshape(line), dim)
            return (xp.flip(g.cumsum(dim), dim).reshape(out.shape),)

        return self._result(out, (self,), backward, "CumsumBackward0", saves=False)

    def amax(self, dim=(), keepdim=False):
        return _extreme(self, dim, keepdim, np.max, "amax", "AmaxBackward0")

    def amin(self, dim=(), keepdim=False):
        return _extreme(self, dim, keepdim, np.min, "amin", "AminBackward0")

    def aminmax(self, *, dim=None, keepdim=False):
        """(min, max) over dim (all dims by default), amin's and amax's."""
        dim = () if dim is None else dim
        return AminmaxResult(self.amin(dim, keepdim), self.amax(dim, keepdim))

    def max(self, dim=None, keepdim=False):
        """max() reduces everything (ties share the gradient); max(dim) gives
        (values, indices) and routes the gradient to the first maximum, as in torch;
        max(other) is the elementwise maximum."""
        if isinstance(dim, ReductionOps):
            return self.maximum(dim)
        if dim is None:
            return _extreme(self, None, False, np.max, "max", "MaxBackward1")
        return _select(self, dim, keepdim, np.argmax, MaxResult, "MaxBackward0")

    def min(self, dim=None, keepdim=False):
        """The same as max for the minimum."""
        if isinstance(dim, ReductionOps):
            return self.minimum(dim)
        if dim is None:
            return _extreme(self, None, False, np.min, "min", "MinBackward1")
        return _select(self, dim, keepdim, np.argmin, MinResult, "MinBackward0")

    def median(self, dim=None, keepdim=False):
        """The lower of the two middle values: of everything (the gradient shared
        among ties, as max()'s), or along dim with its index (the gradient to it)."""
        if dim is None:
            return _extreme(
                self, None, False, _lower_median, "median", "MedianBackward0"
            )
        arg = _ranked(lambda n: (n - 1) // 2)
        return _select(self, dim, keepdim, arg, MedianResult, "MedianBackward1")

    def quantile(self, q, dim=None, keepdim=False, *, interpolation="linear"):
        """The q-quantiles along dim (of everything by default), torch's way: in the
        sorted slice, rank q (n - 1) (the last, a nan, in a slice with a nan), its
        value interpolated between the neighbouring ranks' (or one of them picked),
        so that the gradient reaches them through the sort. A tensor q's quantiles
        make the first dim."""
        qs = _quantile_q(self, q)
        if interpolation not in QUANTILE_ROUNDING:
            raise RuntimeError(
                "quantile() interpolation must be one of linear, lower, higher, "
                f"midpoint or nearest, but got {interpolation}"
            )
        if not self.numel():
            raise RuntimeError("quantile() input tensor must be non-empty")
        x = self.reshape(-1) if dim is None else self.movedim(dim, -1)
        ordered = x.sort().values
        n = ordered.shape[-1]
        nan = self._lift(np.isnan(ordered._data[..., -1:]))  # nan sorts last
        ranks = (qs * (n - 1)).expand(*x.shape[:-1], len(qs)).masked_fill(nan, n - 1)
        rounding, r = QUANTILE_ROUNDING[interpolation], ranks._data
        r = r if rounding is None else rounding(r)
        below = np.floor(r).astype(np.int64)
        out = ordered.gather(-1, self._lift(below))
        if rounding is None:
            above = ordered.gather(-1, self._lift(np.ceil(r).astype(np.int64)))
            out = out.lerp(above, 0.5 if interpolation == "midpoint" else ranks - below)
        out = out.movedim(-1, 0)
        if keepdim and dim is None:
            out = out.reshape(len(qs), *(1,) * self.ndim)
        elif keepdim:
            out = out.unsqueeze(normalize_dims(dim, self.ndim)[0] + 1)
        return out if isinstance(q, ReductionOps) and q.ndim else out.squeeze(0)

    def kthvalue(self, k, dim=-1, keepdim=False):
        """The k-th smallest value along dim and its index."""
        n = self.shape[dim] if self.ndim else 1
        if not 1 <= k <= n:
            raise RuntimeError(
                f"kthvalue(): selected number k out of range for dimension {dim}"
            )
        arg = _ranked(lambda n: k - 1)
        return _select(self, dim, keepdim, arg, KthvalueResult, "KthvalueBackward0")

    def mode(self, dim=-1, keepdim=False):
        """The most frequent value along dim and its index."""
        return _select(self, dim, keepdim, _mode_index, ModeResult, "ModeBackward0")

    def argmax(self, dim=None, keepdim=False):
        return _arg(self, np.argmax, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _arg(self, np.argmin, dim, keepdim)

    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(x))) computed as m + log(sum(exp(x - m))) with m the max."""
        x, dims = self._data, normalize_dims(dim, self.ndim)
        m = _finite_max(x, dims)
        out = np.log(np.exp(x - m).sum(axis=dims, keepdims=True)) + m
        kept = out.shape

        def backward(xp, g, x, out):
            return (g.reshape(kept) * xp.exp(x - out.reshape(kept)),)

        return _reduced(
            self, out, dims, keepdim, backward, "LogsumexpBackward0", (self, "out")
        )

    def logcumsumexp(self, dim):
        """log(cumsum(exp(x))) along dim, shifted by the max along dim (constant)."""
        m = self.detach().amax(dim, keepdim=True)
        return (self - m).exp().cumsum(dim).log() + m

    # A slice of all -inf gives nan (0/0), silently, as in torch.
    def softmax(self, dim, dtype=None):
        """exp(x) / sum(exp(x)) along dim, of x cast to dtype first if given."""
        if dtype is not None:
            return self.to(dtype).softmax(dim)
        x = self._data
        _check_softmax_dtype(x, "softmax")
        e = np.exp(x - _finite_max(x, dim))
        out = e / e.sum(axis=dim, keepdims=True)

        def backward(xp, g, out):
            return (out * (g - (g * out).sum(axis=dim, keepdims=True)),)

        return self._result(out, (self,), backward, "SoftmaxBackward0", ("out",))

    def log_softmax(self, dim, dtype=None):
        if dtype is not None:
            return self.to(dtype).log_softmax(dim)
        x = self._data
        _check_softmax_dtype(x, "log_softmax")
        shifted = x - _finite_max(x, dim)
        out = shifted - np.log(np.exp(shifted).sum(axis=dim, keepdims=True))

        def backward(xp, g, out):
            return (g - xp.exp(out) * g.sum(axis=dim, keepdims=True),)

        return self._result(out, (self,), backward, "LogSoftmaxBackward0", ("out",))

    def unique(self, sorted=True, return_inverse=False, return_counts=False, dim=None):
        """The distinct values (always sorted, as torch's are on the CPU), or
        distinct slices along dim; with the flags, also each element's (slice's)
        index into them and their counts. As in torch, there is no derivative."""
        x = self._data
        values, inverse, counts = np.unique(
            x, return_inverse=True, return_counts=True, axis=dim
        )
        inverse = inverse.reshape(x.shape if dim is None else -1)

        def backward(xp, g):
            raise RuntimeError("the derivative for '_unique2' is not implemented.")

        out = self._result(values, (self,), backward, "Unique2Backward0", saves=False)
        extras = [self._lift(inverse)] * return_inverse
        extras += [self._lift(counts)] * return_counts
        return (out, *extras) if extras else out

    def bincount(self, weights=None, minlength=0):
        """How many times each of 0 .. max (at least minlength) occurs in this 1-d
        int tensor, or the sum of the weights of its occurrences."""
        x = self._data
        if x.ndim != 1 or x.dtype.kind not in "iu" or (x.size and x.min() < 0):
            raise RuntimeError(
                "bincount only supports 1-d non-negative integral inputs."
            )
        w = None if weights is None else weights._data
        out = np.bincount(x, w, minlength)
        return self._lift(out.astype(np.int64 if w is None else w.dtype))

    def cumprod(self, dim):
        """Running products along dim."""
        (axis,) = normalize_dims(dim, self.ndim) or (0,)
        x = np.atleast_1d(self._data)  # a 0-d tensor has dims 0 and -1
        out = np.cumprod(x, axis=axis, dtype=_accumulator(x)).reshape(self.shape)

        def backward(xp, g, x1):
            grad = _cumprod_grad(xp, x1.reshape(x.shape), g.reshape(x.shape), axis)
            return (grad.reshape(out.shape),)

        return self._result(out, (self,), backward, "CumprodBackward0")

    def cummax(self, dim):
        return _running(
            self, dim, np.maximum.accumulate, CummaxResult, "CummaxBackward0"
        )

    def cummin(self, dim):
        return _running(
            self, dim, np.minimum.accumulate, CumminResult, "CumminBackward0"
        )

    def sort(self, dim=-1, descending=False, stable=False):
        return _sorted(self, dim, descending, None, SortResult, "SortBackward0")

    def argsort(self, dim=-1, descending=False, stable=False):
        return self.sort(dim, descending).indices

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """The k largest (smallest) values along dim, in order, and their indices."""
        return _sorted(self, dim, largest, k, TopkResult, "TopkBackward0")

    def norm(self, p="fro", dim=None, keepdim=False):
        """The vector p-norm over dim (all dims by default); "fro" is p=2."""
        return _vector_norm(self, 2 if p == "fro" else p, dim, keepdim)

    def dist(self, other, p=2):
        """The p-norm of self - other (broadcast)."""
        return (self - other).norm(p)

    def count_nonzero(self, dim=None):
        """How many elements are not 0 (nan counts) over dim (all by default)."""
        dims = normalize_dims(dim, self.ndim)
        return self._result((self._data != 0).sum(axis=dims, dtype=np.int64))

    def any(self, dim=None, keepdim=False):
        return self._result(
            np.any(self._data, normalize_dims(dim, self.ndim), keepdims=keepdim)
        )

    def all(self, dim=None, keepdim=False):
        return self._result(
            np.all(self._data, normalize_dims(dim, self.ndim), keepdims=keepdim)
        )
