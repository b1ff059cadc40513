"""The torch functions of several tensors: joining (cat, stack, hstack, ...), where,
meshgrid, the products (addmm, baddbmm, addmv, mv, tensordot, inner, einsum), cdist
and std_mean/var_mean; and the index helpers triu_indices, searchsorted, bucketize."""

import math
import warnings

import numpy as np

from .arithmetic import (
    _bmm_check,
    _matmul_check,
    broadcast_shape,
    joined_dtype,
    result_type,
    unbroadcast,
)
from .dtypes import scalar_name
from .reductions import normalize_dims
from .tensor import Tensor, numpy_keywords


def _check_cat(tensors, dim):
    """torch's errors for tensors that cannot be joined along dim."""
    first = tensors[0]
    if first.ndim == 0:
        raise RuntimeError(
            "zero-dimensional tensor (at position 0) cannot be concatenated"
        )
    (axis,) = normalize_dims(dim, first.ndim)
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim:
            raise RuntimeError(
                "Tensors must have same number of dimensions: got "
                f"{first.ndim} and {t.ndim}"
            )
        for d, (n, m) in enumerate(zip(first.shape, t.shape, strict=True)):
            if d != axis and n != m:
                raise RuntimeError(
                    f"Sizes of tensors must match except in dimension {axis}. "
                    f"Expected size {n} but got size {m} for tensor number {i} in "
                    "the list."
                )


@numpy_keywords
def cat(tensors, dim=0):
    """Join tensors along an existing dim; g is split back into the pieces. As in
    torch, 1-d empty tensors are left out (`out = torch.tensor([])`, then cat)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    dtype = joined_dtype(tensors)
    tensors = [t for t in tensors if t.shape != (0,)] or tensors
    _check_cat(tensors, dim)
    out = np.concatenate([t._data.astype(dtype, copy=False) for t in tensors], dim)
    ends = np.cumsum([t.shape[dim] for t in tensors])
    lead = (slice(None),) * (dim % out.ndim)
    pieces = [
        lead + (slice(end - t.shape[dim], end),)
        for t, end in zip(tensors, ends, strict=True)
    ]

    def backward(xp, g):
        return tuple(g[piece] for piece in pieces)

    return Tensor._result(out, tensors, backward, "CatBackward0", saves=False)


@numpy_keywords
def stack(tensors, dim=0):
    """Join equal-shaped tensors along a new dim; g is unstacked into the pieces."""
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise RuntimeError(
                "stack expects each tensor to be equal size, but got "
                f"{list(tensors[0].shape)} at entry 0 and {list(t.shape)} at entry {i}"
            )
    dtype = joined_dtype(tensors)
    out = np.stack([t._data.astype(dtype, copy=False) for t in tensors], axis=dim)
    lead = (slice(None),) * (dim % out.ndim)

    def backward(xp, g):
        return tuple(g[lead + (i,)] for i in range(len(tensors)))

    return Tensor._result(out, tensors, backward, "StackBackward0", saves=False)


def meshgrid(*tensors, indexing=None):
    """Coordinate grids: output i is 1-d tensors[i] expanded (a view) along every
    other dim ('ij'); 'xy' swaps the first two dims, as NumPy's meshgrid does.
    Without indexing, 'ij' with torch's warning."""
    if len(tensors) == 1 and isinstance(tensors[0], list | tuple):
        tensors = tuple(tensors[0])
    if indexing is None:
        warnings.warn(
            "torch.meshgrid: in an upcoming release, it will be required to pass the "
            "indexing argument.",
            UserWarning,
            stacklevel=2,
        )
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError(
            'torch.meshgrid: indexing must be one of "xy" or "ij", but received: '
            f"{indexing}"
        )
    axes = list(range(len(tensors)))
    if indexing == "xy" and len(axes) > 1:
        axes[0], axes[1] = 1, 0
    shape = [0] * len(tensors)
    for t, axis in zip(tensors, axes, strict=True):
        shape[axis] = t.numel()
    grids = []
    for t, axis in zip(tensors, axes, strict=True):
        along = [-1 if d == axis else 1 for d in range(len(shape))]
        grids.append(t.reshape(along).expand(shape))
    return tuple(grids)


def where(condition, input=None, other=None):
    """input where condition holds, else other; either may be a Python number.
    where(condition) alone is condition.nonzero(as_tuple=True)."""
    if input is None and other is None:
        return condition.nonzero(as_tuple=True)
    if not isinstance(input, Tensor):
        input = (
            Tensor._wrap(input) if not isinstance(other, Tensor) else other._lift(input)
        )
    other = input._lift(other)
    if condition.dtype != np.bool_:
        raise RuntimeError(
            "where expected condition to be a boolean tensor, but got a tensor with "
            f"dtype {scalar_name(condition.dtype)}"
        )
    cond = condition._data
    broadcast_shape(broadcast_shape(cond.shape, input.shape), other.shape)
    dtype = result_type(input, other)
    out = np.where(
        cond,
        input._data.astype(dtype, copy=False),
        other._data.astype(dtype, copy=False),
    )

    def backward(xp, g, condition):
        return (
            (
                unbroadcast(xp.where(cond, g, 0), input.shape)
                if input.requires_grad
                else None
            ),
            (
                unbroadcast(xp.where(cond, 0, g), other.shape)
                if other.requires_grad
                else None
            ),
        )

    return Tensor._result(out, (input, other), backward, "WhereBackward0", (condition,))


def hstack(tensors):
    """Join along dim 1 (dim 0 for 1-d tensors); 0-d tensors count as 1-d."""
    tensors = [t if t.ndim else t.reshape(1) for t in tensors]
    return cat(tensors, 0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    """Join along dim 0, 0-d and 1-d tensors taken as rows (1, n)."""
    return cat([t if t.ndim > 1 else t.reshape(1, -1) for t in tensors], 0)


concat = cat  # torch's alias


def broadcast_tensors(*tensors):
    """The tensors expanded (as views) to the shape they broadcast to."""
    shape = ()
    for t in tensors:
        shape = broadcast_shape(shape, t.shape)
    return tuple(t.expand(shape) for t in tensors)


def _indices(triangle, row, col, offset, dtype):
    """The (2, N) row and column indices of a triangle of a row x col matrix (NumPy's
    triu_indices or tril_indices), row by row as torch lists them."""
    for what, n in (("row", row), ("col", col)):
        if n < 0:
            raise RuntimeError(f"{what} must be non-negative, got{n}")
    name = f"{triangle.__name__.partition('_')[0]}_indices"
    if np.dtype(dtype).kind not in "iu":
        raise NotImplementedError(
            f"\"{name}\" not implemented for '{scalar_name(dtype)}'"
        )
    return Tensor._wrap(np.stack(triangle(row, offset, col)).astype(dtype))


def triu_indices(row, col, offset=0, *, dtype=np.int64, device=None):
    return _indices(np.triu_indices, row, col, offset, dtype)


def tril_indices(row, col, offset=0, *, dtype=np.int64, device=None):
    return _indices(np.tril_indices, row, col, offset, dtype)


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None):
    """For each value, the position in sorted_sequence (1-D, or rows matching
    input's leading dims) that keeps it sorted; int64, no gradient."""
    side = side or ("right" if right else "left")
    seq, values = sorted_sequence._data, np.asarray(getattr(input, "_data", input))
    if seq.ndim == 1:
        out = np.searchsorted(seq, values, side)
    else:
        rows = zip(
            seq.reshape(-1, seq.shape[-1]),
            values.reshape(-1, values.shape[-1]),
            strict=True,
        )
        out = np.stack([np.searchsorted(s, v, side) for s, v in rows]).reshape(
            values.shape
        )
    return Tensor._wrap(out.astype(np.int32 if out_int32 else np.int64))


def bucketize(input, boundaries, *, out_int32=False, right=False):
    """The bucket of each value among 1-D boundaries: searchsorted's other order."""
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def std_mean(input, dim=None, unbiased=True, keepdim=False, *, correction=None):
    """(std, mean) of input over dim, in one call as torch's."""
    std = input.std(dim, unbiased, keepdim, correction=correction)
    return std, input.mean(dim, keepdim=keepdim) if dim is not None else input.mean()


def var_mean(input, dim=None, unbiased=True, keepdim=False, *, correction=None):
    """(var, mean) of input over dim, in one call as torch's."""
    var = input.var(dim, unbiased, keepdim, correction=correction)
    return var, input.mean(dim, keepdim=keepdim) if dim is not None else input.mean()


def cdist(x1, x2, p=2.0):
    """The p-norm distance of every row of x1 to every row of x2 (batched). For
    p=0, the count of differences that are not 0 made so that, as torch's, its
    gradient is 0 (norm's is undefined) and a nan difference gives nan."""
    diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)
    return diff.sign().abs().sum(-1) if p == 0 else diff.norm(p, dim=-1)


def _add_product(op, input, mat, other, beta, alpha):
    """beta * input + alpha * (mat @ other) as one op (grad_fn <Op>Backward0, as
    torch's addmm, baddbmm and addmv), input broadcast to the product's shape; other
    may be a vector (addmv). With beta 0, input is not read: its nan and inf do not
    reach the result, as in torch."""
    product = mat._data @ other._data
    if broadcast_shape(input.shape, product.shape) != product.shape:
        raise RuntimeError(
            f"{op}: input of shape {list(input.shape)} cannot be expanded to the "
            f"product's shape {list(product.shape)}"
        )
    out = product if alpha == 1 else alpha * product
    if beta != 0:
        out = (input._data if beta == 1 else beta * input._data) + out
    vector = other.ndim == 1

    def backward(xp, g, m, o):
        gm = g if alpha == 1 else g * alpha
        if o is not None:  # mat's gradient, an outer product for a vector other
            o = gm[..., None] * o if vector else gm @ xp.matrix_transpose(o)
        return (
            unbroadcast(g if beta == 1 else g * beta, input.shape),
            o,
            None if m is None else xp.matrix_transpose(m) @ gm,
        )

    saves = (mat if other.requires_grad else None, other if mat.requires_grad else None)
    name = f"{op.capitalize()}Backward0"
    return Tensor._result(out, (input, mat, other), backward, name, saves)


def addmm(input, mat1, mat2, *, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2) (nn.Linear's op)."""
    for what, t in (("mat1", mat1), ("mat2", mat2)):
        if t.ndim != 2:
            raise RuntimeError(f"{what} must be a matrix, got {t.ndim}-D tensor")
    _matmul_check(mat1, mat2)
    return _add_product("addmm", input, mat1, mat2, beta, alpha)


def baddbmm(input, batch1, batch2, *, beta=1, alpha=1):
    """beta * input + alpha * bmm(batch1, batch2)."""
    _bmm_check(batch1, batch2)
    return _add_product("baddbmm", input, batch1, batch2, beta, alpha)


def _check_mv(input_shape, mat, vec):
    """torch's errors for addmv's (and mv's) operands; mv's input is (rows,)."""
    if len(input_shape) > 1 or mat.ndim != 2 or vec.ndim != 1:
        raise RuntimeError(
            "vector + matrix @ vector expected, got "
            f"{len(input_shape)}, {mat.ndim}, {vec.ndim}"
        )
    if mat.shape[1] != vec.shape[0] or input_shape not in ((), (1,), mat.shape[:1]):
        raise RuntimeError(
            f"size mismatch, got input ({', '.join(map(str, input_shape))}), mat "
            f"({mat.shape[0]}x{mat.shape[1]}), vec ({vec.shape[0]})"
        )


def addmv(input, mat, vec, *, beta=1, alpha=1):
    """beta * input + alpha * (mat @ vec)."""
    _check_mv(input.shape, mat, vec)
    return _add_product("addmv", input, mat, vec, beta, alpha)


def mv(input, vec):
    """The product of a matrix and a vector."""
    _check_mv(input.shape[:1], input, vec)
    return input.matmul(vec, "MvBackward0")


def tensordot(a, b, dims=2):
    """The sum of products over dims[0] of a paired with dims[1] of b (an int n:
    a's last n dims with b's first n), computed as torch computes it: a matrix
    product of a and b permuted and reshaped, which gives the gradients."""
    if isinstance(dims, Tensor):
        dims = dims.tolist()
    if isinstance(dims, int):
        if dims < 0:
            raise RuntimeError(f"tensordot expects dims >= 0, but got dims={dims}")
        if dims > min(a.ndim, b.ndim):
            raise RuntimeError(
                f"tensordot expects dims < ndim_a or ndim_b, but got dims={dims}"
            )
        dims = range(a.ndim - dims, a.ndim), range(dims)
    dims_a, dims_b = dims
    dims_a = [normalize_dims(d, a.ndim)[0] for d in dims_a]
    dims_b = [normalize_dims(d, b.ndim)[0] for d in dims_b]
    if len(dims_a) != len(dims_b):
        raise RuntimeError("both dimension lists should have same length")
    for da, db in zip(dims_a, dims_b, strict=True):
        if a.shape[da] != b.shape[db]:
            raise RuntimeError(
                "contracted dimensions need to match, but first has size "
                f"{a.shape[da]} in dim {da} and second has size {b.shape[db]} in "
                f"dim {db}"
            )
    free_a = [d for d in range(a.ndim) if d not in dims_a]
    free_b = [d for d in range(b.ndim) if d not in dims_b]
    shape_a, shape_b = [a.shape[d] for d in free_a], [b.shape[d] for d in free_b]
    summed = math.prod(a.shape[d] for d in dims_a)
    left = a.permute(free_a + dims_a).reshape(math.prod(shape_a), summed)
    right = b.permute(dims_b + free_b).reshape(summed, math.prod(shape_b))
    return left.mm(right).reshape(shape_a + shape_b)


def inner(input, other):
    """The sums of products over the last dims (a product if either is 0-d)."""
    if not input.ndim or not other.ndim:
        return input * other
    if input.shape[-1] != other.shape[-1]:
        raise RuntimeError(
            "inner() the last dimension must match on both input tensors but got "
            f"shapes {list(input.shape)} and {list(other.shape)}"
        )
    return tensordot(input, other, ([-1], [-1]))


def _einsum_subscripts(equation, operands):
    """(input subscripts, output subscripts) of an einsum equation, with any '...'
    spelled out in letters; without "->" the output is the '...' dims and then the
    letters used once, in alphabetical order, as in torch."""
    equation = equation.replace(" ", "")
    inputs, arrow, output = equation.partition("->")
    inputs = inputs.split(",")
    if len(inputs) != len(operands):
        raise RuntimeError(
            "einsum(): more operands were provided than specified in the equation"
            if len(operands) > len(inputs)
            else "einsum(): fewer operands were provided than specified in the equation"
        )
    if not arrow:
        letters = "".join(inputs).replace(".", "")
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        output = "..." * ("..." in equation) + "".join(once)
    inputs, output = _spell_ellipsis(inputs, output, operands)
    for sub, t in zip(inputs, operands, strict=True):
        if len(sub) != t.ndim:
            raise RuntimeError(
                f"einsum(): the number of subscripts in the equation ({len(sub)}) does "
                f"not match the number of dimensions ({t.ndim}) for operand "
                f"{inputs.index(sub)} and no ellipsis was given"
            )
    sizes = {}
    for i, (sub, t) in enumerate(zip(inputs, operands, strict=True)):
        if t.dtype != operands[0].dtype:
            raise RuntimeError(
                f"expected scalar type {scalar_name(operands[0].dtype)} but found "
                f"{scalar_name(t.dtype)}"
            )
        for c, n in zip(sub, t.shape, strict=True):
            seen = sizes.setdefault(c, n)
            if 1 not in (seen, n) and seen != n:
                raise RuntimeError(
                    f"einsum(): subscript {c} has size {n} for operand {i} which "
                    f"does not broadcast with previously seen size {seen}"
                )
            sizes[c] = max(seen, n)  # a size-1 dim broadcasts, as in torch
    for c in output:
        if c not in sizes:
            raise RuntimeError(
                f"einsum(): output subscript {c} does not appear in the equation for "
                "any input operand"
            )
    return inputs, output


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"  # einsum's


def _spell_ellipsis(inputs, output, operands):
    """'...' replaced by letters the equation does not use, one per dim it stands
    for; operands covering fewer dims take the last ones, as dims broadcast from
    the right."""
    spans = [
        t.ndim - len(s) + 3 for s, t in zip(inputs, operands, strict=True) if "..." in s
    ]
    n = max(spans, default=0)
    used = "".join(inputs) + output
    free = [c for c in _LETTERS if c not in used][:n]
    inputs = [
        s.replace("...", "".join(free[n - t.ndim + len(s) - 3 :]))
        for s, t in zip(inputs, operands, strict=True)
    ]
    return inputs, output.replace("...", "".join(free))


def _sublist_equation(args):
    """(equation, operands) of einsum's sublist form (op1, sublist1, op2, ...,
    [output sublist]): as torch, subscripts 0-25 are the letters A-Z, 26-51 a-z."""

    def letters(sublist):
        return "".join("..." if n is Ellipsis else _subscript(n) for n in sublist)

    equation = ",".join(letters(sublist) for sublist in args[1::2])
    if len(args) % 2:
        return f"{equation}->{letters(args[-1])}", args[:-1:2]
    return equation, args[::2]


def _subscript(n):
    if not 0 <= n < 52:
        raise ValueError(
            "einsum(): subscript in subscript list is not within the valid range "
            "[0, 52)"
        )
    return chr(ord("A") + n) if n < 26 else chr(ord("a") + n - 26)


def einsum(equation, *operands):
    """The sum over the letters not in the output of the products of the operands'
    elements, as named by the equation ("bij,bkj->bik"; "ii->i" reads a diagonal),
    or by sublists (einsum(a, [0, 1], b, [1, 2], [0, 2])). An operand's gradient
    is einsum again: g with the other operands, to its letters (those it alone
    has, summed in the forward pass, come back by broadcasting, and a repeated
    letter's diagonal is scattered back)."""
    if isinstance(equation, Tensor):
        equation, operands = _sublist_equation((equation, *operands))
    if len(operands) == 1 and isinstance(operands[0], list | tuple):
        operands = tuple(operands[0])
    inputs, output = _einsum_subscripts(equation, operands)
    out = np.einsum(f"{','.join(inputs)}->{output}", *(t._data for t in operands))

    def backward(xp, g, *values):
        return tuple(
            _einsum_grad(xp, g, inputs, output, values, i) if t.requires_grad else None
            for i, t in enumerate(operands)
        )

    return Tensor._result(out, operands, backward, "EinsumBackward0")


def _einsum_grad(xp, g, inputs, output, values, i):
    sub, shape = inputs[i], values[i].shape
    letters = "".join(dict.fromkeys(sub))  # each once, in order
    others = [s for j, s in enumerate(inputs) if j != i]
    seen = output + "".join(others)
    kept = "".join(c for c in letters if c in seen)
    equation = f"{','.join([output, *others])}->{kept}"
    grad = xp.einsum(equation, g, *(v for j, v in enumerate(values) if j != i))
    own = dict(zip(sub, shape, strict=True))
    # letters this operand has at size 1 where g or the others are larger: summed
    summed = tuple(a for a, c in enumerate(kept) if own[c] == 1 and grad.shape[a] != 1)
    if summed:
        grad = grad.sum(axis=summed, keepdims=True)
    # letters grad lacks (this operand's alone) or has at size 1 where this
    # operand is larger (the others broadcast) come back by broadcasting
    got = dict(zip(kept, grad.shape, strict=True))
    grad = grad.reshape([got.get(c, 1) for c in letters])
    grad = xp.broadcast_to(grad, [own[c] for c in letters])
    if len(letters) == len(sub):
        return grad
    # a repeated letter read a diagonal: its gradient goes back there, 0 elsewhere
    index = np.indices(grad.shape, sparse=True)
    return xp.scatter(grad, shape, tuple(index[letters.index(c)] for c in sub))
