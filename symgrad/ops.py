"""The primitive table: for each primitive, its shape rule, NumPy spelling and adjoint.

Builders (``matmul(a, b)``, ``reduce_sum(a, axes)``, ...) check shapes and create nodes.
``PRIMITIVES[op]`` holds the rest, one entry per primitive:

- ``numpy(args, node)``: NumPy source for the node, given its arguments' source. It returns
  an expression, or a list of statements assigning ``{out}`` for scatters.
- ``vjp(g, node, i)``: the cotangent of argument ``i`` as a new node, given the cotangent
  ``g`` of the node (the little language of PyTorch's derivatives.yaml, in graph form).
  ``None`` means the argument gets no gradient (integer indices, ``detach``).

Every elementwise function is one primitive, ``map``, whose adjoint SymPy derives.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import operator
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import sympy as sp

from . import symbolic as ew
from .ir import (
    CeilDiv,
    Dim,
    Node,
    Shape,
    ShapeError,
    as_dim,
    broadcast,
    broadcast_shapes,
    format_index,
    format_shape,
    is_size,
    size,
)

# --------------------------------------------------------------------------- builders


def compose(
    expr: sp.Expr, args: Sequence[Node], inner: dict[int, Node]
) -> tuple[sp.Expr, list[Node]]:
    """``expr`` over ``args`` with the maps ``inner[i]`` written in for argument ``i``,
    their arguments taking its place: one formula, no array in between."""
    composed_args: list[Node] = []
    pieces = {}
    for i, a in enumerate(args):
        if i in inner:
            m = inner[i]
            shift = {
                ew.arg(j): ew.arg(len(composed_args) + j) for j in range(len(m.args))
            }
            pieces[ew.arg(i)] = m.attrs[0].xreplace(shift)
            composed_args += m.args
        else:
            pieces[ew.arg(i)] = ew.arg(len(composed_args))
            composed_args.append(a)
    return expr.xreplace(pieces), composed_args


def leaf(op: str, name: str, shape: Shape, dtype: str = "float64") -> Node:
    return Node(op, (), shape, dtype, name=name)


def map_(expr: sp.Expr, args: Sequence[Node] = (), shape: Shape | None = None) -> Node:
    """Elementwise node computing ``expr`` (in placeholders ``_0.._k``) over ``args``.

    ``shape`` defaults to the broadcast of the arguments; a larger ``shape`` broadcasts the
    result (the adjoint of a reduction). Repeated or unused arguments are dropped.
    """
    expr = sp.sympify(expr)
    # 0.5 * 2 is the Float 1.0, which SymPy keeps as a factor: a pass multiplying by one
    whole = {
        f: sp.Integer(int(f))
        for f in expr.atoms(sp.Float)
        if abs(f) < 2**53 and f % 1 == 0
    }
    if whole:
        expr = expr.xreplace(whole)
    if shape is None:
        shape = broadcast(*args)
    others = [a for a in args if not one_value(a)]
    scalars = all(a.ndim == 0 for a in args if one_value(a))
    if len(args) > len(others) > 0 and (scalars or broadcast(*others) == tuple(shape)):
        # a 0-d constant, or an array of one value (a constant, the cotangent of a sum)
        # whose shape the others give anyway: its formula in this one
        expr, args = compose(
            expr, args, {i: a for i, a in enumerate(args) if one_value(a)}
        )
    kept: list[Node] = []
    renames = {}
    present = expr.free_symbols  # once: expr.has per argument is quadratic in a fusion
    for i, a in enumerate(args):
        if ew.arg(i) in present:
            if a not in kept:
                kept.append(a)
            renames[ew.arg(i)] = ew.arg(kept.index(a))
    expr = expr.xreplace(renames)  # simultaneous, so _1 -> _0 never collides
    present = expr.free_symbols
    if not all(ew.arg(i) in present for i in range(len(kept))):
        return map_(expr, kept, shape)  # merged arguments cancelled out: x - x
    if expr == ew.arg(0) and kept[0].shape == tuple(shape):
        return kept[0]
    boolean = expr.is_Relational or isinstance(expr, sp.logic.boolalg.BooleanFunction)
    dtype = "bool" if boolean else "float64"
    if expr == ew.arg(0):  # a broadcast keeps its argument's dtype (an index, a mask)
        dtype = kept[0].dtype
    node = Node("map", tuple(kept), tuple(shape), dtype, attrs=(expr,))
    if expr.has(sp.I):  # sg.sqrt(-1.0): SymPy folds it to I
        what = node.describe() if kept else f"the constant {expr}"
        raise ew.UnsupportedError(f"{what} is complex: a root or log of a negative?")
    return node


def one_value(node: Node) -> bool:
    """An array of one value or a 0-d constant (grad_loss = 1 in value_and_grad)."""
    return broadcast_scalars(node) or is_const(node)


def broadcast_scalars(node: Node) -> bool:
    """Whether ``node`` is an array of one value: a formula of 0-d values broadcast to
    its shape (a constant, or the cotangent of a sum), so any view of it is the same
    formula at another shape."""
    return node.op == "map" and node.ndim > 0 and all(a.ndim == 0 for a in node.args)


def apply(fn: Callable[..., sp.Expr], *args: Node, shape: Shape | None = None) -> Node:
    """``map_`` from a Python function of SymPy placeholders: ``apply(lambda a: 2 * a, x)``."""
    return map_(fn(*(ew.arg(i) for i in range(len(args)))), args, shape)


def const(value, shape: Shape = ()) -> Node:
    return map_(sp.sympify(value), (), shape)


def is_const(node: Node, value=None) -> bool:
    if node.op != "map" or node.args:
        return False
    return value is None or node.attrs[0] == value


def matmul(a: Node, b: Node) -> Node:
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(
            f"matmul needs arrays of rank >= 1: {a.describe()} has shape "
            f"{format_shape(a.shape)}, {b.describe()} has shape {format_shape(b.shape)}"
        )
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ShapeError(
            f"matmul {a.describe()} @ {b.describe()}: inner dimensions differ, "
            f"{format_shape(a.shape)} @ {format_shape(b.shape)}"
        )
    batch = ()
    if a.ndim > 2 or b.ndim > 2:
        batch_a = leaf("input", a.describe(), a.shape[:-2])
        batch_b = leaf("input", b.describe(), b.shape[:-2])
        batch = broadcast(batch_a, batch_b)
    rows = a.shape[-2:-1] if a.ndim > 1 else ()
    cols = b.shape[-1:] if b.ndim > 1 else ()
    return Node("matmul", (a, b), batch + rows + cols)


def transpose(a: Node, perm: Sequence[int] | None = None, fold: bool = True) -> Node:
    """a's axes permuted. ``fold`` composes a transpose of a transpose into one, for
    adjoints (.T of .T is free); a model's own transposes keep the inner one, which
    sg.grad may name."""
    perm = tuple(reversed(range(a.ndim))) if perm is None else tuple(perm)
    if sorted(p % a.ndim for p in perm) != list(range(a.ndim)) or len(perm) != a.ndim:
        hint = ""
        if len(perm) == 2 and a.ndim != 2:  # torch's transpose(d0, d1)
            d0, d1 = perm
            hint = (
                f" of its {a.ndim} axes; torch's x.transpose({d0}, {d1}) swaps two "
                f"axes: x.swapaxes({d0}, {d1})"
            )
        raise ShapeError(
            f"transpose of {a.describe()}: {perm} is not a permutation{hint}"
        )
    perm = tuple(p % a.ndim for p in perm)
    if perm == tuple(range(a.ndim)):
        return a
    if fold and a.op == "transpose":
        return transpose(a.args[0], [a.attrs[0][p] for p in perm])
    return Node("transpose", (a,), tuple(a.shape[p] for p in perm), a.dtype, (perm,))


def reshape(a: Node, shape: Shape, fold: bool = True) -> Node:
    """a with another shape. ``fold`` makes a reshape of a reshape one reshape, for
    adjoints; a model's own reshapes keep the inner one, which sg.grad may name."""
    if fold and a.op == "reshape":
        a = a.args[0]
    if shape == a.shape:
        return a
    if sp.simplify(sp.Mul(*shape) - sp.Mul(*a.shape)) != 0:
        raise ShapeError(
            f"cannot reshape {a.describe()} of shape {format_shape(a.shape)} "
            f"into {format_shape(shape)}"
        )
    return Node("reshape", (a,), tuple(shape), a.dtype, (tuple(shape),))


def normalize_axes(a: Node, axis) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(a.ndim))
    try:
        axes = tuple(
            map(operator.index, axis if isinstance(axis, tuple | list) else [axis])
        )
    except TypeError:
        raise TypeError(
            f"axis={axis!r} for {a.describe()}: an axis is an int, or a tuple of ints"
        ) from None
    for ax in axes:
        if not -a.ndim <= ax < a.ndim:
            raise ShapeError(
                f"axis {ax} is out of range for {a.describe()} of rank {a.ndim}"
            )
    unique = {ax % a.ndim for ax in axes}
    if len(unique) < len(axes):
        raise ShapeError(f"duplicate value in axis={axis} for {a.describe()}")
    return tuple(sorted(unique))


def _reduced(a: Node, axes: tuple[int, ...], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(a.shape))
    return tuple(d for i, d in enumerate(a.shape) if i not in axes)


def reduce_sum(a: Node, axis=None, keepdims: bool = False) -> Node:
    axes = normalize_axes(a, axis)
    if keepdims:  # summing a size-1 axis and keeping it changes nothing
        axes = tuple(ax for ax in axes if a.shape[ax] != 1)
    if not axes:
        return a
    if is_const(a):  # a constant times the count: no array to sum
        count = size(tuple(a.shape[ax] for ax in axes))
        return const(a.attrs[0] * count, _reduced(a, axes, keepdims))
    return Node("sum", (a,), _reduced(a, axes, keepdims), attrs=(axes, keepdims))


def dot(a: Node, b: Node) -> Node:
    """Sum over all elements of ``a * b`` (same shapes): NumPy's vdot."""
    return Node("dot", (a, b), ())


def reduce_max(a: Node, axis=None, keepdims: bool = False, op: str = "max") -> Node:
    """NumPy's max (or, with ``op="min"``, min) over ``axis``."""
    axes = normalize_axes(a, axis)
    return Node(op, (a,), _reduced(a, axes, keepdims), attrs=(axes, keepdims))


def cumsum(a: Node, axis: int, reverse: bool = False) -> Node:
    """NumPy's cumsum along ``axis``; ``reverse`` sums from the end (its adjoint)."""
    if isinstance(axis, tuple | list):
        raise ShapeError(
            f"cumsum of {a.describe()}: one axis (an int) or None, not {axis}"
        )
    (axis,) = normalize_axes(a, axis)
    if a.op == "index" and _flipped_axes(a.attrs[0]) == {axis}:  # x[::-1]: sum the
        return index(cumsum(a.args[0], axis, not reverse), a.attrs[0])  # other way
    return Node("cumsum", (a,), a.shape, attrs=(axis, reverse))


def concatenate(parts: Sequence[Node], axis: int) -> Node:
    """NumPy's concatenate: shapes agree except along ``axis`` (no broadcasting)."""
    first = parts[0]
    if first.ndim == 0:
        raise ShapeError(f"concatenate of {first.describe()}: 0-d values have no axis")
    if not isinstance(python_int(axis), int):
        raise TypeError(
            f"concatenate of {first.describe()}: axis must be one int (or None, to "
            f"join the flattened parts), not {axis!r}"
        )
    (axis,) = normalize_axes(first, python_int(axis))
    for part in parts[1:]:
        others = [p.shape[:axis] + p.shape[axis + 1 :] for p in (first, part)]
        if part.ndim != first.ndim or others[0] != others[1]:
            raise ShapeError(
                f"cannot concatenate {first.describe()} of shape "
                f"{format_shape(first.shape)} and {part.describe()} of shape "
                f"{format_shape(part.shape)} along axis {axis}"
            )
    symbolic = [p for p in parts if not sp.sympify(p.shape[axis]).is_Integer]
    if len(symbolic) > 1:
        raise ShapeError(
            f"concatenate along axis {axis}: only one part may have a symbolic size "
            f"there, but {symbolic[0].describe()} and {symbolic[1].describe()} have "
            f"{symbolic[0].shape[axis]} and {symbolic[1].shape[axis]}; parts of one "
            "shape join as sg.stack(parts, axis) reshaped (axis 0: "
            "sg.stack(parts).reshape((-1, ...)))"
        )
    if len({p.dtype for p in parts}) > 1:
        raise ShapeError(
            f"cannot concatenate {first.describe()} ({first.dtype}) and "
            + ", ".join(f"{p.describe()} ({p.dtype})" for p in parts[1:])
            + ": the parts need one dtype"
        )
    if len(parts) == 1:
        return first
    length = as_dim(sp.Add(*(p.shape[axis] for p in parts)))
    shape = first.shape[:axis] + (length,) + first.shape[axis + 1 :]
    return Node("concatenate", tuple(parts), shape, first.dtype, (axis,))


def grad_of(y: Node, x: Node) -> Node:
    """The gradient of the 0-d ``y`` with respect to ``x`` (sg.grad): expanded into its
    reverse-mode graph before the model is differentiated (grad.expand_grads)."""
    return Node("grad", (y, x), x.shape)


def eye(rows: Dim, cols: Dim, k: int) -> Node:
    """NumPy's eye: ones on diagonal ``k``, zeros elsewhere (a constant array)."""
    return Node("eye", (), (rows, cols), attrs=(k,))


def argsort(a: Node, axis: int) -> Node:
    """NumPy's stable argsort: int64 positions, which have no gradient."""
    (axis,) = normalize_axes(a, axis)
    return Node("argsort", (a,), a.shape, "int64", (axis,))


def windows(a: Node, axis: int, width: int) -> Node:
    """NumPy's sliding_window_view along one axis: a view with each window of ``width``
    in a new last axis (the axis needs ``width`` elements, a size requirement)."""
    shape = list(a.shape)
    shape[axis] = a.shape[axis] - width + 1
    return Node("windows", (a,), tuple(shape) + (width,), a.dtype, (axis, width))


def concatenated_at(node: Node, i: int) -> Dim:
    """Where part ``i`` of a concatenation starts along its axis."""
    return as_dim(sp.Add(*(p.shape[node.attrs[0]] for p in node.args[:i])))


def detach(a: Node, stop_gradient: bool = False) -> Node:
    """``a``'s value with no gradient through it. Internal ones (a softmax's shift)
    leave the gradient the loss's derivative; a user's ``sg.stop_gradient`` does not."""
    return Node("detach", (a,), a.shape, a.dtype, ("stop_gradient",) * stop_gradient)


# Index specs are tuples of ("slice", start, stop, step) | ("new",) | ("int", i), one per
# result-producing entry, covering every axis of the operand.


def expand_ellipsis(a: Node, key: tuple) -> tuple:
    """``key`` with its ``...`` (or its end) written out as the ``:`` it stands for."""
    # by identity: `Ellipsis in key` would compare a NumPy array key with ==
    dots = [n for n, k in enumerate(key) if k is Ellipsis]
    if len(dots) > 1:
        raise ShapeError(f"index of {a.describe()}: at most one ... allowed")
    consumed = sum(k is not None and k is not Ellipsis for k in key)
    if consumed > a.ndim:
        raise ShapeError(f"too many indices for {a.describe()} of rank {a.ndim}")
    fill = (slice(None),) * (a.ndim - consumed)
    return key[: dots[0]] + fill + key[dots[0] + 1 :] if dots else key + fill


def normalize_index(a: Node, key) -> tuple:
    key = expand_ellipsis(a, key if isinstance(key, tuple) else (key,))
    spec, dims = [], iter(a.shape)
    for k in key:
        if k is None:
            spec.append(("new",))
        elif isinstance(k, slice):
            dim = next(dims)
            start, stop = _from_end(k.start, dim), _from_end(k.stop, dim, stop=True)
            start, stop, step = map(python_int, (start, stop, k.step))
            if is_size(start) and sp.expand(start.size - dim) == 0:
                raise ShapeError(
                    f"index of {a.describe()}: a slice from {dim}, the end of the axis, "
                    "is empty"
                )
            for part in (start, stop, step):
                if part is not None and (
                    isinstance(part, bool) or not isinstance(part, int)
                ):
                    raise ShapeError(
                        f"index of {a.describe()}: slice bounds must be ints, or the "
                        f"axis' own size plus an int ({dim} - 1), not {part}"
                    )
            if step == 0:
                raise ShapeError(f"index of {a.describe()}: slice step cannot be zero")
            spec.append(("slice", start, stop, step))
        elif is_size(k) or isinstance(python_int(k), int) and not isinstance(k, bool):
            k = python_int(_from_end(k, next(dims)))  # x[:, T - 1]: x[:, -1]
            if not isinstance(k, int):
                raise ShapeError(
                    f"index of {a.describe()}: an index from a size must be the "
                    f"axis' own size minus an int ({k} is not)"
                )
            spec.append(("int", k))
        else:
            raise ShapeError(
                f"index of {a.describe()}: unsupported index {k!r}; ints, slices, None "
                "and ... are supported, and rows are picked by an int64 input: x[idx]"
            )
    return tuple(spec)


def python_int(x):
    """NumPy's integers (np.int64(2), from a loop over np.arange) as Python's."""
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return int(x)
    return x


def _from_end(bound, dim, stop: bool = False):
    """A slice bound or index given as a size of its own axis (x[:, : x.shape[1] - 1],
    torch's idiom) as the int it is, counted from the end: -1 (None for a stop at the
    end)."""
    if not is_size(bound) or isinstance(dim, int):
        return bound
    offset = sp.expand(bound.size - dim)
    if offset.is_Integer and (offset < 0 or offset == 0 and stop):
        return int(offset) or None
    return bound


def _slice_len(dim, start, stop, step, what: str):
    if isinstance(dim, int):
        return len(range(*slice(start, stop, step).indices(dim)))
    if step == -1 and start is None and stop is None:
        return dim  # the whole axis reversed
    if step is not None and step < 0:
        raise ShapeError(
            f"{what}: a negative step other than ::-1 needs a fixed-size axis, not {dim}"
        )
    length = sp.expand(_bound(dim, stop, dim) - _bound(dim, start, 0))
    if length.is_nonpositive:
        raise ShapeError(f"{what}: slice {start}:{stop} of axis {dim} is empty")
    if step not in (None, 1):
        length = CeilDiv(length, step)  # x[::2] of n: (n + 1) // 2
    return int(length) if length.is_Integer else length  # x[-3:] of n: 3, fixed


def _bound(dim, b, default):
    """A slice bound on a symbolic axis, as SymPy: ``-1`` of ``n`` is ``n - 1``."""
    return default if b is None else (dim + b if b < 0 else sp.Integer(b))


# The call that built an index node, where the user did not write the slice (the
# reflect slices of sg.pad): what its size requirements name. Weak: nodes can go.
MADE_BY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def size_requirements(node: Node) -> list[sp.Expr]:
    """What must be >= 0 for a slice of a symbolic axis to be as long as its shape says,
    or for a division by a size to be defined (``Ne(d, 0)``: what must not be 0).

    ``x[:3]`` has 3 elements only if ``n >= 3`` (NumPy would silently give fewer),
    ``x[1:-1]`` has ``n - 2`` only if ``n >= 2``, and a mean or max over ``n`` needs ``n >= 1``;
    a division by ``C - B``, which may be negative, needs ``C - B != 0``. The generated
    ``_unpack`` checks these.
    """
    if node.op == "map":  # a mean over an empty axis would divide by zero
        needs = set()
        for p in node.attrs[0].atoms(sp.Pow):
            sizes = p.base.free_symbols
            if p.exp.is_negative and sizes and all(s.is_integer for s in sizes):
                # 1/(n*(m - 2)): n, m - 2; also when expanded, 1/(7*T - 7): T - 1
                for factor in sp.Mul.make_args(sp.factor(p.base)):
                    factor = factor.base if factor.is_Pow else factor
                    if len(factor.free_symbols) > 1:  # C - B (factor may write B - C)
                        sign = -1 if sp.expand(factor + p.base) == 0 else 1
                        needs.add(sp.Ne(sp.expand(sign * factor), 0))
                    elif not factor.is_number:  # a count, n or n - 1: positive
                        needs.add(sp.expand(factor - 1))
        return sorted(needs, key=str)
    # nor has an empty axis a max or min (also the shift of a softmax)
    if node.op in ("max", "min"):
        dims = {node.args[0].shape[k] for k in node.attrs[0]}
        return [d - 1 for d in sorted(dims, key=str) if not isinstance(d, int)]
    if node.op == "windows":  # at least as long as the window, as NumPy requires
        needs = [node.args[0].shape[node.attrs[0]] - node.attrs[1]]
    elif node.op == "index":
        needs = []
        for entry, dim in _entries(node.attrs[0], node.args[0].shape):
            if entry[0] == "slice" and not isinstance(dim, int):
                start, stop = _bound(dim, entry[1], 0), _bound(dim, entry[2], dim)
                needs += [start, dim - stop, stop - start]
            elif entry[0] == "int" and not isinstance(dim, int):
                needs.append(dim - entry[1] - 1 if entry[1] >= 0 else dim + entry[1])
    else:
        return []
    needs = [sp.expand(e) for e in needs]  # n - (n - 1) is 1
    return [e for e in needs if may_be_negative(e)]


@functools.cache
def may_be_negative(size: sp.Expr) -> bool:
    """Whether a size expression can be negative: a size may be 0 at run time (an empty
    batch), where x[1:] would be -1 long."""
    empty = {s: sp.Dummy(integer=True, nonnegative=True) for s in size.free_symbols}
    return not size.xreplace(empty).is_nonnegative


def _entries(spec: tuple, shape: Shape) -> list[tuple]:
    """(entry, size of the axis it picks along) for each entry of a basic index of an
    array of ``shape`` except ``None``, which adds an axis."""
    return list(zip([e for e in spec if e[0] != "new"], shape, strict=True))


def _flipped_axes(spec: tuple) -> set[int] | None:
    """The axes an index reverses (``x[::-1, :]``: {0}), if it only reverses axes."""
    if all(e[:3] == ("slice", None, None) and e[3] in (None, -1) for e in spec):
        return {k for k, e in enumerate(spec) if e[3] == -1}
    return None


def index(a: Node, spec: tuple) -> Node:
    if a.op == "index" and None not in (_flipped_axes(a.attrs[0]), _flipped_axes(spec)):
        flipped = _flipped_axes(a.attrs[0]) ^ _flipped_axes(spec)  # x[::-1][::-1] is x
        spec = tuple(
            ("slice", None, None, -1 if k in flipped else None)
            for k in range(len(spec))
        )
        a = a.args[0]
    shape, axis = [], 0
    for entry in spec:
        if entry[0] == "new":
            shape.append(1)
            continue
        dim = a.shape[axis]
        axis += 1
        if entry[0] == "int":
            if isinstance(dim, int) and not -dim <= entry[1] < dim:
                raise ShapeError(
                    f"index {entry[1]} is out of bounds for axis of size {dim}"
                )
            continue
        shape.append(_slice_len(dim, *entry[1:], f"index of {a.describe()}"))
    if all(e == ("slice", None, None, None) for e in spec):
        return a
    return Node("index", (a,), tuple(shape), a.dtype, (spec,))


def check_index_array(idx: Node, what: str) -> None:
    if idx.dtype != "int64":
        raise ShapeError(f"{what}: index {idx.describe()} must be an int64 input")


def gather(a: Node, idx: Node) -> Node:
    """``a[idx]``: rows of ``a`` picked by an integer array (adjoint: scatter-add)."""
    check_index_array(idx, f"gather from {a.describe()}")
    if a.ndim == 0:
        raise ShapeError(f"cannot index 0-d {a.describe()}")
    return Node("gather", (a, idx), idx.shape + a.shape[1:], a.dtype)


def take_along_axis(a: Node, idx: Node, axis: int) -> Node:
    what = f"take_along_axis({a.describe()}, {idx.describe()})"
    check_index_array(idx, what)
    if idx.ndim != a.ndim:
        raise ShapeError(
            f"{what}: index rank {idx.ndim} differs from array rank {a.ndim}"
        )
    (axis,) = normalize_axes(a, axis)
    for k, (d_a, d_i) in enumerate(zip(a.shape, idx.shape, strict=True)):
        if k != axis and d_a != d_i and 1 not in (d_a, d_i):
            raise ShapeError(
                f"{what}: shapes {format_shape(a.shape)} and {format_shape(idx.shape)} "
                f"do not broadcast outside axis {axis}"
            )
    # They broadcast against each other outside the axis, as in NumPy. An array
    # broadcast up is a map (its gradient sums back); an index broadcasts in NumPy.
    wide = along_shape(broadcast_shapes(a.shape, idx.shape), axis, a.shape)
    if wide != a.shape:
        a = map_(ew.arg(0), [a], wide)
    return Node("take_along_axis", (a, idx), along_shape(wide, axis, idx.shape),
                a.dtype, (axis,))  # fmt: skip


# A scatter adds updates into zeros (or into a dense ``base``): the adjoint of picking
# elements. Each update is ("slice", spec) for a basic index (("slice", spec, "-") subtracts
# it: the optimizer's form of adding a negation), ("rows",) for ``x[idx]`` (np.add.at) or
# ("along", axis) for take_along_axis; the last two carry an index array.
# Merging all updates of one cotangent into one scatter writes one buffer, not several.


def scatter(shape: Shape, updates: Sequence[tuple], base: Node | None = None) -> Node:
    """``updates`` are (kind, value) or (kind, value, idx) tuples."""
    kinds = tuple(u[0] for u in updates)
    args = tuple(a for u in updates for a in u[1:])
    return Node("scatter", (() if base is None else (base,)) + args, shape,
                attrs=(kinds, base is not None))  # fmt: skip


def scatter_updates(node: Node) -> list[tuple]:
    """The (kind, value[, idx]) updates of a scatter node, and its base or None."""
    kinds, has_base = node.attrs
    args = list(node.args[1:] if has_base else node.args)
    updates = []
    for kind in kinds:
        take = 1 if kind[0] == "slice" else 2
        updates.append((kind, *args[:take]))
        del args[:take]
    return updates


def pair_scatter(x: Node, i: Node, j: Node, c: Node) -> Node:
    """Adds ``c[k] (x[i[k]] - x[j[k]])`` to row ``i[k]`` and subtracts it from row ``j[k]``:
    the gradient of a pair energy, which the optimizer finds in scatters (optimize.py).
    """
    return Node("pair_scatter", (x, i, j, c), x.shape)


def zeros(shape: Shape) -> Node:
    return const(0, shape)


def unbroadcast(g: Node, shape: Shape) -> Node:
    """Sum ``g`` down to ``shape``: the adjoint of NumPy broadcasting."""
    lead = g.ndim - len(shape)
    g = reduce_sum(g, tuple(range(lead)))
    ones = tuple(i for i, d in enumerate(shape) if d == 1 and g.shape[i] != 1)
    return reduce_sum(g, ones, keepdims=True)


def expand(g: Node, axes: tuple[int, ...], ndim: int) -> Node:
    """Reinsert reduced ``axes`` as size-1 axes, so ``g`` broadcasts against the input."""
    if not axes or g.ndim == 0:
        return g
    spec = tuple(
        ("new",) if i in axes else ("slice", None, None, None) for i in range(ndim)
    )
    return index(g, spec)


# --------------------------------------------------------------------------- adjoints


def _vjp_map(g: Node, out: Node, i: int) -> Node | None:
    expr = out.attrs[0]
    d = ew.partial(expr, i)
    if d == 0:  # (floor, sign, or a formula that does not depend on this argument)
        return None
    if d.has(sp.I):  # (-2)**w: d/dw = log(-2) (-2)**w, and SymPy's log(-2) is complex
        raise ew.UnsupportedError("its derivative is complex: a negative base?")
    args = (*out.args, g, out)
    n = len(out.args)
    local = d.xreplace({ew.OUT: ew.arg(n + 1)}) * ew.arg(n)
    return unbroadcast(map_(local, args, out.shape), out.args[i].shape)


def _mul(x: sp.Expr, y: sp.Expr) -> sp.Expr:
    return x * y


def swap_last(ndim: int) -> tuple[int, ...]:
    return (*range(ndim - 2), ndim - 1, ndim - 2)


def _col(x: Node) -> Node:  # x[..., None]
    return index(x, normalize_index(x, (Ellipsis, None)))


def _row(x: Node) -> Node:  # x[..., None, :]
    return index(x, normalize_index(x, (Ellipsis, None, slice(None))))


def _matvec(m: Node, v: Node) -> Node:
    """(..., p, q) @ (..., q) -> (..., p), for batched vectors too."""
    if v.ndim == 1:
        return matmul(m, v)
    product = matmul(m, _col(v))
    return index(product, normalize_index(product, (Ellipsis, 0)))


def _vjp_matmul(g: Node, out: Node, i: int) -> Node:
    a, b = out.args
    if a.ndim == 1 and b.ndim == 1:
        return apply(_mul, g, b if i == 0 else a)
    if a.ndim == 1:  # (k,) @ (..., k, m) -> (..., m)
        if i == 0:
            return unbroadcast(_matvec(b, g), a.shape)
        return unbroadcast(apply(_mul, _col(a), _row(g)), b.shape)
    if b.ndim == 1:  # (..., n, k) @ (k,) -> (..., n)
        if i == 0:
            return apply(_mul, _col(g), b)
        return unbroadcast(_matvec(transpose(a, swap_last(a.ndim)), g), b.shape)
    if i == 0:
        return unbroadcast(matmul(g, transpose(b, swap_last(b.ndim))), a.shape)
    if b.ndim == 2 and a.ndim > 2:  # one weight for a batch: one product, no sum
        rows = sp.Mul(*a.shape[:-1])
        rows = int(rows) if rows.is_Integer else rows
        a2, g2 = reshape(a, (rows, a.shape[-1])), reshape(g, (rows, g.shape[-1]))
        return matmul(transpose(a2), g2)
    return unbroadcast(matmul(transpose(a, swap_last(a.ndim)), g), b.shape)


def _vjp_dot(g: Node, out: Node, i: int) -> Node:
    return apply(_mul, g, out.args[1 - i])


def _vjp_transpose(g: Node, out: Node, i: int) -> Node:
    perm = out.attrs[0]
    if g.op == "matmul" and g.ndim == 2 and g.args[0].ndim == g.args[1].ndim == 2:
        # (A @ B).T == B.T @ A.T: saves a transposed copy of the product.
        return matmul(transpose(g.args[1]), transpose(g.args[0]))
    return transpose(g, sorted(range(len(perm)), key=perm.__getitem__))


def _vjp_sum(g: Node, out: Node, i: int) -> Node:
    (a,) = out.args
    axes, keepdims = out.attrs
    g = g if keepdims else expand(g, axes, a.ndim)
    return map_(ew.arg(0), (g,), a.shape)


def _vjp_max(g: Node, out: Node, i: int) -> Node:
    """Ties share the gradient equally, as PyTorch's amax and amin do."""
    (a,) = out.args
    axes, keepdims = out.attrs
    if not keepdims:
        g, out = expand(g, axes, a.ndim), expand(out, axes, a.ndim)
    x, m = ew.arg(0), ew.arg(1)
    hit = map_(sp.Piecewise((1, sp.Eq(x, m)), (0, True)), (a, out))
    count = reduce_sum(hit, axes, keepdims=True)
    return apply(lambda h, c, g_: h * g_ / c, hit, count, g)


def _vjp_index(g: Node, out: Node, i: int) -> Node:
    """A scatter into zeros; a reshape when the index keeps every element (``x[:, None]``,
    ``x[..., 0]`` of a size-1 axis), and the same view when it reverses whole axes
    (``x[::-1]``): no buffer to fill."""
    a = out.args[0]
    if _flipped_axes(out.attrs[0]) is not None:
        return index(g, out.attrs[0])
    if all(
        entry == ("slice", None, None, None) or (entry[0] == "int" and dim == 1)
        for entry, dim in _entries(out.attrs[0], a.shape)
    ):
        return reshape(g, a.shape)
    return scatter(a.shape, [(("slice", out.attrs[0]), g)])


def _vjp_cumsum(g: Node, out: Node, i: int) -> Node:
    axis, reverse = out.attrs
    return cumsum(g, axis, not reverse)


def _numpy_cumsum(args: list[str], node: Node) -> str:
    axis, reverse = node.attrs
    if not reverse:
        return f"np.cumsum({args[0]}, axis={axis})"
    return f"np.flip(np.cumsum(np.flip({args[0]}, {axis}), axis={axis}), {axis})"


def _vjp_windows(g: Node, out: Node, i: int) -> Node:
    """Window position k of every window adds back into the k-th shifted slice."""
    axis, width = out.attrs
    a = out.args[0]
    updates = []
    for k in range(width):
        shifted = slice(k or None, None if k == width - 1 else k - width + 1)
        key = (slice(None),) * axis + (shifted,)
        position = index(g, normalize_index(g, (Ellipsis, k)))
        updates.append((("slice", normalize_index(a, key)), position))
    return scatter(a.shape, updates)


def _vjp_concatenate(g: Node, out: Node, i: int) -> Node | None:
    """The part's slice of ``g``, its bounds counted from whichever end is of fixed
    size (at most one part's size is symbolic)."""
    axis = out.attrs[0]
    sizes = [as_dim(sp.sympify(p.shape[axis])) for p in out.args]
    before, size, after = sizes[:i], sizes[i], sizes[i + 1 :]
    if size == 0:
        return None  # an empty part (where a bound of 0 would mean "from the end")
    if all(isinstance(d, int) for d in before):
        start = sum(before)
        stop = start + size if after and isinstance(size, int) else -sum(after)
    else:
        stop = -sum(after)
        start = stop - size
    whole = ("slice", None, None, None)
    spec = (whole,) * axis + (("slice", start or None, stop or None, None),)
    return index(g, spec + (whole,) * (out.ndim - axis - 1))


def _vjp_gather(g: Node, out: Node, i: int) -> Node | None:
    return scatter(out.args[0].shape, [(("rows",), g, out.args[1])]) if i == 0 else None


def _vjp_take_along_axis(g: Node, out: Node, i: int) -> Node | None:
    if i == 1:
        return None
    return scatter(out.args[0].shape, [(("along", out.attrs[0]), g, out.args[1])])


def _vjp_scatter(g: Node, out: Node, i: int) -> Node | None:
    """Each update's value gets the cotangent picked back out; the base gets it all.

    A value may be smaller than the elements it updates: ``+=`` and ``np.add.at``
    broadcast it (optimize.fuse drops such broadcasts, before a gradient of an
    ``sg.grad`` is taken), so the picked cotangent is summed back to its shape.
    """
    if out.attrs[1] and i == 0:
        return g
    position = 1 if out.attrs[1] else 0
    for kind, value, *idx in scatter_updates(out):
        if i == position:
            if kind[0] == "slice":
                picked = index(g, kind[1])
                if kind[-1] == "-":
                    picked = apply(lambda x: -x, picked)
            elif kind[0] == "rows":
                picked = gather(g, idx[0])
            else:
                picked = take_along_axis(g, idx[0], kind[1])
            return unbroadcast(picked, value.shape)
        position += 1 + len(idx)
    return None  # an index array


# --------------------------------------------------------------------------- NumPy spelling


def _axis_kw(axes: tuple[int, ...], keepdims: bool, ndim: int) -> str:
    parts = []
    if len(axes) != ndim:
        parts.append(f"axis={axes[0] if len(axes) == 1 else axes}")
    if keepdims:
        parts.append("keepdims=True")
    return ", ".join(parts)


def _numpy_max(args: list[str], node: Node) -> str:  # or min
    pieces = _short_reduction(args[0], node)
    if pieces:
        fn = "np.maximum" if node.op == "max" else "np.minimum"
        while len(pieces) > 1:  # pairwise: (a, b), (c, d), then the two
            pairs = zip(pieces[::2], pieces[1::2], strict=False)
            pieces = [f"{fn}({p}, {q})" for p, q in pairs] + pieces[len(pieces) & ~1 :]
        return pieces[0]
    axes, keepdims = node.attrs
    return f"{args[0]}.{node.op}({_axis_kw(axes, keepdims, node.args[0].ndim)})"


def _short_reduction(a: str, node: Node) -> list[str]:
    """The slices a reduction over at most 4 elements (a 2x2 pooling window, the 3
    coordinates of a vector) combines, to be written as elementwise operations: NumPy's
    reductions over short axes are 5-20x slower than adding or comparing the slices."""
    (arg,) = node.args
    axes, keepdims = node.attrs
    sizes = [arg.shape[i] for i in axes]
    if len(axes) == arg.ndim or not all(isinstance(d, int) for d in sizes):
        return []
    if not 2 <= math.prod(sizes) <= 4:
        return []
    pieces = []
    for picks in itertools.product(*map(range, sizes)):
        key = [":"] * arg.ndim
        for axis, k in zip(axes, picks, strict=True):
            key[axis] = f"{k}:{k + 1}" if keepdims else str(k)
        while key[-1] == ":":
            key.pop()
        pieces.append(f"{a}[{', '.join(key)}]")
    return pieces


def _numpy_sum(args: list[str], node: Node) -> str:
    """Row and column sums of a matrix as products with ones: NumPy's strided reductions
    are several times slower than a BLAS matrix-vector product for narrow matrices
    (a single row or column is summed as it is: nothing is strided)."""
    (a,) = node.args
    axes, keepdims = node.attrs
    if a.ndim == 2 and len(axes) == 1 and a.shape[1 - axes[0]] != 1:
        rows, cols = a.shape
        if axes == (0,):
            return f"{_ones((1, rows) if keepdims else (rows,))} @ {args[0]}"
        return f"{args[0]} @ {_ones((cols, 1) if keepdims else (cols,))}"
    return " + ".join(_short_reduction(args[0], node)) or (
        f"{args[0]}.sum({_axis_kw(axes, keepdims, a.ndim)})"
    )


def _ones(shape: Shape) -> str:
    """Ones to sum with: a module constant (``_ONES_3``) when the size is fixed, since
    ``np.ones`` costs a microsecond a call."""
    if all(isinstance(d, int) for d in shape):
        return "_ONES_" + "x".join(map(str, shape))
    return f"np.ones({shape[0] if len(shape) == 1 else format_shape(shape)})"


def _numpy_gather(args: list[str], node: Node) -> str:
    """Rows of a narrow matrix are taken as columns of its transpose: the result is a
    Fortran-ordered view whose columns are contiguous, so the per-coordinate arithmetic
    that follows (``d * c[:, None]``) runs long inner loops (5x faster at 8k rows)."""
    a, idx = node.args
    if a.ndim == 2 and idx.ndim == 1 and narrow(a.shape[1]):
        return f"{args[0]}.T.take({args[1]}, axis=1).T"
    return f"{args[0]}.take({args[1]}, axis=0)"


def narrow(dim) -> bool:
    """A static trailing dim small enough that NumPy code loops over it."""
    return isinstance(dim, int) and 1 < dim <= 8


def _numpy_transpose(args: list[str], node: Node) -> str:
    perm = node.attrs[0]
    if perm == tuple(reversed(range(len(perm)))):
        return f"{args[0]}.T"
    if perm == swap_last(len(perm)):
        return f"np.swapaxes({args[0]}, -1, -2)"
    return f"np.transpose({args[0]}, {perm})"


def _numpy_scatter(args: list[str], node: Node) -> list[str]:
    kinds, has_base = node.attrs
    if has_base:  # 0-d arithmetic gives NumPy scalars: np.array makes one writable
        copy = f"np.array({args[0]})" if node.shape == () else f"{args[0]}.copy()"
        lines = [f"{{out}} = {copy}"]
        args = args[1:]
    else:
        lines = [f"{{out}} = np.zeros({format_shape(node.shape)})"]
    written = [] if not has_base else None  # slices written so far, while all known
    for kind, value_node, *idx in scatter_updates(node):
        value, *index_code = args[: 1 + len(idx)]
        args = args[1 + len(idx) :]
        if kind[0] != "slice":
            written = None  # rows written at runtime: later slices add
        if kind[0] == "slice":  # a write into zeros nothing else wrote to need not add
            fresh = written is not None and all(
                _disjoint(kind[1], other, node.shape) for other in written
            )
            target = f"{{out}}{format_index(kind[1])}"
            if kind[-1] != "-":
                lines.append(f"{target} {'=' if fresh else '+='} {value}")
            elif fresh and sum(e[0] == "int" for e in kind[1]) < len(node.shape):
                lines.append(f"np.negative({value}, out={target})")  # (into a view)
            elif fresh:  # one element: out[0] is a NumPy scalar, not a view
                negated = value if value.isidentifier() else f"({value})"
                lines.append(f"{target} = -{negated}")
            else:
                lines.append(f"{target} -= {value}")
            if written is not None:
                written.append(kind[1])
        elif kind[0] == "rows":
            lines += _scatter_rows(value, index_code[0], value_node, idx[0], node.shape)
        elif idx[0].shape[kind[1]] == 1 or idx[0].op == "argsort":  # no index twice
            add = len(kinds) > 1 or has_base
            if along := _along(index_code[0], kind[1], node.shape):
                lines.append(f"{{out}}[{along}] {'+=' if add else '='} {value}")
                continue
            if add:
                value = f"np.take_along_axis({{out}}, {index_code[0]}, axis={kind[1]}) + {value}"
            lines.append(
                f"np.put_along_axis({{out}}, {index_code[0]}, {value}, axis={kind[1]})"
            )
        else:
            where = _along(index_code[0], kind[1], node.shape)
            if where is None:
                picked = along_shape(node.shape, kind[1], idx[0].shape)
                grid = f"np.indices({format_shape(picked)}, sparse=True)"
                where = f"tuple({index_code[0]} if k == {kind[1]} else r for k, r in enumerate({grid}))"
            lines.append(f"np.add.at({{out}}, ({where}), {value})")
    return lines


def along_shape(shape: Shape, axis: int, index_shape: Shape) -> Shape:
    """The shape take_along_axis picks from ``shape``: the index's size along ``axis``."""
    return shape[:axis] + (index_shape[axis],) + shape[axis + 1 :]


def _along(index: str, axis: int, shape: Shape) -> str | None:
    """``np.arange(n)[:, None], index``: the fancy index that picks ``index`` along
    ``axis`` of a matrix, as np.take_along_axis does without its Python-level overhead
    (3x faster at 64 rows); the index itself along a vector; None beyond two dimensions.
    """
    if len(shape) == 1:
        return index
    if len(shape) != 2:
        return None
    if axis % 2:
        return f"np.arange({shape[0]})[:, None], {index}"
    return f"{index}, np.arange({shape[1]})"


def _numpy_eye(args: list[str], node: Node) -> str:
    (rows, cols), (k,) = node.shape, node.attrs
    return (
        f"np.eye({rows})" if rows == cols and not k else f"np.eye({rows}, {cols}, {k})"
    )


def _numpy_take_along_axis(args: list[str], node: Node) -> str:
    along = _along(args[1], node.attrs[0], node.args[0].shape)
    if along:
        return f"{args[0]}[{along}]"
    return f"np.take_along_axis({args[0]}, {args[1]}, axis={node.attrs[0]})"


def _disjoint(spec: tuple, other: tuple, shape: Shape) -> bool:
    """Whether two basic indices of an array of ``shape`` pick no element in common:
    on some axis, their ranges (fixed sizes) or int positions do not meet."""
    return any(
        isinstance(dim, int) and not set(_positions(a, dim)) & set(_positions(b, dim))
        for (a, dim), (b, _) in zip(
            _entries(spec, shape), _entries(other, shape), strict=True
        )
    )


def _positions(entry: tuple, dim: int) -> range:
    if entry[0] == "int":
        return range(entry[1] % dim, entry[1] % dim + 1)
    return range(*slice(*entry[1:]).indices(dim))


def _scatter_rows(
    value: str, idx: str, value_node: Node, idx_node: Node, shape
) -> list[str]:
    """``out[idx[k]] += value[k]``: np.add.at, which counts negative indices from the end
    as the gather did; the rows of a narrow matrix go through the module's ``_add_rows``
    (np.bincount per column: several times faster there)."""
    row = tuple(shape[1:])
    if (
        idx_node.ndim == 1
        and value_node.shape == idx_node.shape + row
        and all(isinstance(d, int) for d in row)
        and size(row) <= 8
    ):
        return [f"_add_rows({{out}}, {idx}, {value})"]
    return [f"np.add.at({{out}}, {idx}, {value})"]


# --------------------------------------------------------------------------- linear algebra
# np.linalg's solve, inv, slogdet and det over the last two axes, batched as NumPy's
# gufuncs are. Their adjoints are built from these primitives again, so Hessians exist.


LINALG = ("solve", "inv", "logabsdet", "det_sign", "det")  # np.linalg's primitives


def _check_square(a: Node, what: str) -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ShapeError(
            f"{what}: {a.describe()} of shape {format_shape(a.shape)} is not a square "
            "matrix (or a batch of them): its last two axes must be equal"
        )


def solve(a: Node, b: Node) -> Node:
    """x with ``a @ x == b``, by NumPy 2's rule: ``b`` is one vector (n,) only when it is
    1-D, else matrices (..., n, k); the batch axes of ``a`` and ``b`` broadcast."""
    what = f"solve({a.describe()}, {b.describe()})"
    _check_square(a, what)
    vector = b.ndim == 1
    if b.ndim == 0 or b.shape[-1 if vector else -2] != a.shape[-1]:
        raise ShapeError(
            f"{what}: {a.describe()} of shape {format_shape(a.shape)} does not match "
            f"{b.describe()} of shape {format_shape(b.shape)}: b needs {a.shape[-1]} "
            f"{'elements' if vector else 'rows (axis -2)'}"
        )
    batch_a = leaf("input", a.describe(), a.shape[:-2])
    batch_b = leaf("input", b.describe(), () if vector else b.shape[:-2])
    try:
        batch = broadcast(batch_a, batch_b)
    except ShapeError:
        raise ShapeError(
            f"{what}: the batch axes of {a.describe()} of shape "
            f"{format_shape(a.shape)} and {b.describe()} of shape "
            f"{format_shape(b.shape)} do not broadcast"
        ) from None
    return Node("solve", (a, b), batch + b.shape[-1 if vector else -2 :])


def inv(a: Node) -> Node:
    _check_square(a, f"inv({a.describe()})")
    return Node("inv", (a,), a.shape)


def logabsdet(a: Node) -> Node:
    """log |det a|: the second half of NumPy's slogdet."""
    _check_square(a, f"slogdet({a.describe()})")
    return Node("logabsdet", (a,), a.shape[:-2])


def det_sign(a: Node) -> Node:
    """The sign of det a (1, -1 or 0): the first half of NumPy's slogdet."""
    _check_square(a, f"slogdet({a.describe()})")
    return Node("det_sign", (a,), a.shape[:-2])


def det(a: Node) -> Node:
    _check_square(a, f"det({a.describe()})")
    return Node("det", (a,), a.shape[:-2])


def _neg(x: sp.Expr) -> sp.Expr:
    return -x


def _vjp_solve(g: Node, out: Node, i: int) -> Node:
    """x = solve(a, b): gb = solve(a^T, g), ga = -gb x^T (an outer product for a 1-D b)."""
    a, b = out.args
    a_t = transpose(a, swap_last(a.ndim))
    if b.ndim > 1:
        gb = solve(a_t, g)
        if i == 1:
            return unbroadcast(gb, b.shape)
        ga = matmul(apply(_neg, gb), transpose(out, swap_last(out.ndim)))
        return unbroadcast(ga, a.shape)
    if g.ndim == 1:
        gb = solve(a_t, g)
        column = _col(gb)
    else:  # a batch of vectors, solved as (..., n, 1) matrices: NumPy 2 would read
        column = solve(a_t, _col(g))  # a 2-D g as one matrix
        gb = index(column, normalize_index(column, (Ellipsis, 0)))
    if i == 1:
        return unbroadcast(gb, b.shape)
    return unbroadcast(apply(lambda u, v: -u * v, column, _row(out)), a.shape)


def _vjp_inv(g: Node, out: Node, i: int) -> Node:
    """y = inv(a): ga = -y^T g y^T."""
    y_t = transpose(out, swap_last(out.ndim))
    return matmul(matmul(y_t, apply(_neg, g)), y_t)


def _per_matrix(x: Node) -> Node:
    """One number per matrix of a batch as (..., 1, 1), to scale the matrices."""
    return x if x.ndim == 0 else index(x, normalize_index(x, (Ellipsis, None, None)))


def _vjp_logabsdet(g: Node, out: Node, i: int) -> Node:
    """d log|det a| / da = inv(a)^T (the inverse a user's sg.inv(a) computes too)."""
    (a,) = out.args
    return apply(_mul, _per_matrix(g), transpose(inv(a), swap_last(a.ndim)))


def _vjp_det(g: Node, out: Node, i: int) -> Node:
    """d det a / da = det(a) inv(a)^T: needs an invertible ``a``."""
    (a,) = out.args
    inv_t = transpose(inv(a), swap_last(a.ndim))
    return apply(lambda g_, d, t: g_ * d * t, _per_matrix(g), _per_matrix(out), inv_t)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Primitive:
    numpy: Callable[[list[str], Node], str | list[str]] | None
    vjp: Callable[[Node, Node, int], Node | None] | None


def _no_grad(g: Node, out: Node, i: int) -> None:
    return None


PRIMITIVES: dict[str, Primitive] = {
    "input": Primitive(None, None),
    "seed": Primitive(None, None),  # grad_loss, the cotangent of the loss
    "param": Primitive(None, None),
    "map": Primitive(None, _vjp_map),  # printed by the SymPy printer
    "matmul": Primitive(lambda a, n: f"{a[0]} @ {a[1]}", _vjp_matmul),
    "transpose": Primitive(_numpy_transpose, _vjp_transpose),
    "dot": Primitive(
        lambda a, n: (
            f"{a[0]} @ {a[1]}" if n.args[0].ndim == 1 else f"np.vdot({a[0]}, {a[1]})"
        ),
        _vjp_dot,
    ),
    "reshape": Primitive(  # np.reshape: a 0-d value may be a Python float
        lambda a, n: (
            f"np.reshape({a[0]}, {format_shape(n.shape)})"
            if n.args[0].ndim == 0
            else f"{a[0]}.reshape({format_shape(n.shape)})"
        ),
        lambda g, out, i: reshape(g, out.args[0].shape),
    ),
    "sum": Primitive(_numpy_sum, _vjp_sum),
    "max": Primitive(_numpy_max, _vjp_max),
    "min": Primitive(_numpy_max, _vjp_max),
    "index": Primitive(lambda a, n: a[0] + format_index(n.attrs[0]), _vjp_index),
    "gather": Primitive(_numpy_gather, _vjp_gather),
    "take_along_axis": Primitive(_numpy_take_along_axis, _vjp_take_along_axis),
    "cumsum": Primitive(_numpy_cumsum, _vjp_cumsum),
    "concatenate": Primitive(
        lambda a, n: f"np.concatenate(({', '.join(a)}), axis={n.attrs[0]})",
        _vjp_concatenate,
    ),
    "eye": Primitive(_numpy_eye, None),
    "grad": Primitive(None, None),  # expanded before differentiation
    "argsort": Primitive(
        lambda a, n: f'np.argsort({a[0]}, axis={n.attrs[0]}, kind="stable")', _no_grad
    ),
    "windows": Primitive(
        lambda a, n: f"np.lib.stride_tricks.sliding_window_view({a[0]}, "
        f"{n.attrs[1]}, axis={n.attrs[0]})",
        _vjp_windows,
    ),
    "detach": Primitive(None, _no_grad),  # removed by the optimizer
    "scatter": Primitive(_numpy_scatter, _vjp_scatter),
    # A module-level helper (templates/module.py.j2): dense and sparse pairs differ.
    "pair_scatter": Primitive(lambda a, n: f"_pair_scatter({', '.join(a)})", None),
    "solve": Primitive(lambda a, n: f"np.linalg.solve({a[0]}, {a[1]})", _vjp_solve),
    "inv": Primitive(lambda a, n: f"np.linalg.inv({a[0]})", _vjp_inv),
    "logabsdet": Primitive(
        lambda a, n: f"np.linalg.slogdet({a[0]})[1]", _vjp_logabsdet
    ),
    "det_sign": Primitive(lambda a, n: f"np.linalg.slogdet({a[0]})[0]", _no_grad),
    "det": Primitive(lambda a, n: f"np.linalg.det({a[0]})", _vjp_det),
}
