"""NumPy's array functions that symgrad builds from its primitive expressions
(slices, concatenations, broadcasts, comparisons, picks), so their derivatives are
those of the pieces: padding, rolling, tiling, splitting, triangles, running products,
windows, sorting."""

from __future__ import annotations

import builtins
import itertools
import operator
from collections.abc import Callable

import numpy as np
import sympy as sp

from . import ops
from . import symbolic as ew
from .ir import (
    Node,
    ShapeError,
    as_dim,
    as_shape,
    broadcast,
    format_shape,
    same_dim,
    toposort,
)
from .model import (
    Expr,
    Size,
    _along,
    _expr,
    _number,
    _values,
    concatenate,
    cumsum,
    fixed_length,
    reshape,
    stack,
    take_along_axis,
    transpose,
    where,
    with_numpy_keywords,
)


def _one_axis(node, axis, what: str) -> tuple[int]:
    if not isinstance(ops.python_int(axis), int):
        raise TypeError(f"{what}: axis must be one int, not {axis!r}")
    return ops.normalize_axes(node, ops.python_int(axis))


def full_like(x: Expr, fill_value) -> Expr:
    """NumPy's full_like: a constant array of x's shape (no gradient, no NaN from x,
    where 0 * x would carry one). ``fill_value`` may be an expression (a 0-d one: a
    learned value), broadcast to x's shape, with its gradient."""
    shape = _expr(x, "sg.full_like").node.shape
    if isinstance(fill_value, Expr):
        return broadcast_to(fill_value, shape)
    return Expr(ops.const(_number(fill_value), shape))


def zeros_like(x: Expr) -> Expr:
    return full_like(x, 0)


def ones_like(x: Expr) -> Expr:
    return full_like(x, 1)


def broadcast_to(x: Expr, shape) -> Expr:
    """NumPy's broadcast_to; dims may be names ("B") or sizes (y.shape[0]) of the
    model's arrays."""
    shape, node = as_shape(shape), _expr(x, "sg.broadcast_to").node
    try:
        fits = all(
            same_dim(a, b)
            for a, b in zip(broadcast(node, ops.const(0, shape)), shape, strict=True)
        )
    except ShapeError:
        fits = False
    if not fits:
        raise ShapeError(
            f"cannot broadcast {node.describe()} of shape "
            f"{format_shape(node.shape)} to {format_shape(shape)}"
        )
    return Expr(ops.map_(ew.arg(0), (node,), shape))  # (indices and masks too)


def positions(rows, cols) -> tuple[Expr, Expr]:
    """The row and the column number (from 1) of each entry of a (rows, cols) matrix,
    as a column and a row that broadcast: triangles and diagonals are comparisons."""
    row = cumsum(Expr(ops.const(1, (as_dim(rows), 1))), axis=0)
    col = cumsum(Expr(ops.const(1, (1, as_dim(cols)))), axis=1)
    return row, col


def eye(N, M=None, k: int = 0) -> Expr:
    """NumPy's eye: ones on diagonal ``k`` of an (N, M) matrix (sizes: ints, or sizes
    of the model's arrays such as ``x.shape[0]``), zeros elsewhere."""
    return Expr(ops.eye(as_dim(N), as_dim(N if M is None else M), operator.index(k)))


def moveaxis(x: Expr, source, destination) -> Expr:
    """NumPy's moveaxis: the axes ``source`` go to ``destination``, the others keep
    their order."""
    node = _expr(x, "sg.moveaxis").node
    source = [ops.normalize_axes(node, a)[0] for a in np.atleast_1d(source).tolist()]
    destination = [
        ops.normalize_axes(node, a)[0] for a in np.atleast_1d(destination).tolist()
    ]
    if len(source) != len(destination):
        raise ShapeError(
            "sg.moveaxis: source and destination must have the same number of axes"
        )
    order = [k for k in range(node.ndim) if k not in source]
    for to, frm in sorted(zip(destination, source, strict=True)):
        order.insert(to, frm)
    return transpose(x, order)


def flip(x: Expr, axis=None) -> Expr:
    """NumPy's flip: reversed along ``axis`` (an int or a tuple), or along every axis."""
    axes = ops.normalize_axes(_expr(x, "sg.flip").node, axis)
    return x[tuple(slice(None, None, -1 if k in axes else 1) for k in range(x.ndim))]


def expand_dims(x: Expr, axis) -> Expr:
    """NumPy's expand_dims: a new axis of size 1 at ``axis`` (an int, or a tuple: one
    at each of those places of the result)."""
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    ndim = _expr(x, "sg.expand_dims").ndim + len(axes)
    places = set()
    for a in map(ops.python_int, axes):
        if not isinstance(a, int):
            raise TypeError(
                f"sg.expand_dims: axis must be an int or a tuple of ints, not {axis!r}"
            )
        if not -ndim <= a < ndim:
            raise ShapeError(
                f"sg.expand_dims: axis {a} is out of range for rank {ndim}"
            )
        if a % ndim in places:
            raise ShapeError(f"sg.expand_dims: repeated axis in {axis!r}")
        places.add(a % ndim)
    return x[tuple(None if k in places else slice(None) for k in range(ndim))]


def roll(x: Expr, shift: int, axis=None) -> Expr:
    """NumPy's roll: element i goes to i + shift, cyclically (of the flattened array
    without ``axis``)."""
    node = _expr(x, "sg.roll").node
    if axis is None:
        return reshape(roll(reshape(x, (-1,)), shift, 0), node.shape)
    (axis,) = _one_axis(node, axis, "sg.roll")
    n, shift = node.shape[axis], operator.index(shift)
    shift = shift % n if isinstance(n, int) and n else shift
    if shift == 0:
        return x
    if not isinstance(n, int) and 1 < builtins.abs(shift) <= _ROLL_STEPS:
        # a symbolic axis may be shorter than the shift: steps of one are cyclic for
        # any size (one slice of x[-3:] would need n >= 3)
        for _ in range(builtins.abs(shift)):
            x = roll(x, 1 if shift > 0 else -1, axis)
        return x
    tail, head = _along(x, axis, slice(-shift, None)), _along(x, axis, slice(-shift))
    rolled = concatenate([tail, head], axis)
    return _made_by(
        rolled, node, f"sg.roll of {node.describe()} by {shift} on axis {axis}"
    )


_ROLL_STEPS = 8  # a longer roll of a symbolic axis needs the axis at least as long


def tile(x: Expr, reps) -> Expr:
    """NumPy's tile (torch's x.repeat): x repeated whole ``reps`` times along each axis."""
    return _copies(x, reps, "sg.tile", inner=False)


def repeat(x: Expr, repeats: int, axis=None) -> Expr:
    """NumPy's repeat (torch's repeat_interleave): each entry ``repeats`` times in a row
    along ``axis`` (of the flattened array without it)."""
    node = _expr(x, "sg.repeat").node
    if not isinstance(ops.python_int(repeats), int):
        raise ShapeError(
            f"sg.repeat: repeats must be one int, not {repeats!r} (for counts per "
            "entry, concatenate the repeats of slices)"
        )
    if axis is None:
        return repeat(reshape(x, (-1,)), repeats, 0)
    (axis,) = _one_axis(node, axis, "sg.repeat")
    reps = [1] * node.ndim
    reps[axis] = repeats
    return _copies(x, reps, "sg.repeat", inner=True)


def _copies(x: Expr, reps, what: str, inner: bool) -> Expr:
    """Copies along each axis by broadcasting a new axis of size r next to it (after it
    for ``inner``: entry by entry; before it: whole), then merging the two."""
    reps = np.atleast_1d(reps).tolist()
    if not all(isinstance(r, int) and r >= 1 for r in reps):
        raise ShapeError(f"{what}: repetitions must be ints >= 1, not {reps}")
    x = _expr(x, what)
    x = x[(None,) * (len(reps) - x.ndim)]
    reps = [1] * (x.ndim - len(reps)) + reps
    for axis, r in enumerate(reps):
        if r > 1:
            shape = x.node.shape
            new = axis + inner
            spread = shape[:new] + (r,) + shape[new:]
            merged = shape[:axis] + (r * shape[axis],) + shape[axis + 1 :]
            x = reshape(broadcast_to(_along(x, new, None), spread), merged)
    return x


def split(x: Expr, indices_or_sections, axis: int = 0) -> list[Expr]:
    """NumPy's split: into ``sections`` equal parts, or at the given indices (ints, or
    the axis' own size plus an int: ``x.shape[0] - 1``)."""
    node = _expr(x, "sg.split").node
    (axis,) = _one_axis(node, axis, "sg.split")
    n = node.shape[axis]
    sections = indices_or_sections
    if isinstance(sections, float) and sections.is_integer():
        sections = int(sections)  # (NumPy takes 2.0)
    if isinstance(ops.python_int(sections), int):
        sections = ops.python_int(sections)
        part = sp.sympify(n) / sections if sections >= 1 else sp.nan
        if not (part.is_integer and part.is_nonnegative):
            raise ShapeError(
                f"sg.split of {node.describe()}: axis {axis} of size {n} does not "
                f"divide into {indices_or_sections} equal sections"
            )
        if not isinstance(n, int):  # n/2 is not a bound slices take: one axis each
            shape = (
                node.shape[:axis] + (sections, as_dim(part)) + node.shape[axis + 1 :]
            )
            return [_along(reshape(x, shape), axis, k) for k in range(sections)]
        return split(x, [int(part) * k for k in range(1, sections)], axis)
    if not isinstance(sections, (list, tuple, np.ndarray)):
        raise TypeError(
            f"sg.split: indices_or_sections must be an int (equal sections) or a "
            f"list of indices, not {indices_or_sections!r}"
        )
    cuts = [ops.python_int(i) for i in sections]
    cuts = [n + i if isinstance(i, int) and i < 0 else as_dim(i) for i in cuts]
    bounds = [0, *cuts, n]
    return [_part(x, axis, a, b) for a, b in itertools.pairwise(bounds)]


def _part(x: Expr, axis: int, start, stop) -> Expr:
    """x[..., start:stop] along ``axis``; empty (as NumPy's) where stop <= start."""
    n = x.node.shape[axis]
    if sp.sympify(stop - start).is_nonpositive:
        return Expr(ops.const(0, x.node.shape[:axis] + (0,) + x.node.shape[axis + 1 :]))
    bound = [_as_index(b, n) for b in (start, stop)]
    return _along(x, axis, slice(bound[0] or None, None if stop == n else bound[1]))


def _as_index(bound, n):
    """A size-expression bound as slices take it: an int, or the axis' size plus one."""
    return int(bound) if sp.sympify(bound).is_Integer else Size(bound)


def pad(x: Expr, pad_width, mode: str = "constant", constant_values=0) -> Expr:
    """NumPy's pad: ``pad_width`` is an int, a (before, after) pair, or one pair per
    axis; ``mode`` "constant" (a number, or a 0-d expression: a learned value),
    "edge", "reflect", "symmetric" or "wrap", each as NumPy's."""
    node = _expr(x, "sg.pad").node
    widths = _pad_widths(node, pad_width)
    if mode in _TORCH_PAD_MODES:
        raise ValueError(
            f"sg.pad: mode {mode!r} is torch's; NumPy's name is "
            f"{_TORCH_PAD_MODES[mode]!r}"
        )
    if mode not in _PAD_BLOCKS:
        raise ValueError(
            f"sg.pad: mode must be one of {', '.join(_PAD_BLOCKS)}, " f"not {mode!r}"
        )
    if isinstance(constant_values, Expr) and constant_values.ndim:
        raise ShapeError("sg.pad: an expression as constant_values must be 0-d")
    if mode == "constant" and not isinstance(constant_values, Expr):
        constant_values = _number(constant_values)
    for axis, (before, after) in enumerate(widths):
        if builtins.min(before, after) < 0:
            raise ShapeError(
                f"sg.pad: negative pad width {before, after} on axis {axis}"
            )
        n, most = node.shape[axis], builtins.max(before, after)
        if mode != "constant" and isinstance(n, int) and most > n - (mode == "reflect"):
            raise ShapeError(
                f"sg.pad: mode {mode!r} pads axis {axis} of size {n} by at most "
                f"{n - (mode == 'reflect')}, not {most}"
            )
        blocks = [
            _PAD_BLOCKS[mode](x, axis, width, end, constant_values) if width else None
            for end, width in ((0, before), (-1, after))
        ]
        for block, width in zip(blocks, (before, after), strict=True):
            if block is not None and mode != "constant":
                what = f"sg.pad of {node.describe()} by {width} on axis {axis} ({mode})"
                _made_by(block, node, what)
        parts = [blocks[0], x, blocks[1]]
        x = concatenate([part for part in parts if part is not None], axis)
        node = x.node
    return x


def _pad_widths(node: Node, pad_width) -> list[list[int]]:
    """NumPy's pad_width as one (before, after) pair per axis of ``node``."""
    try:
        return np.broadcast_to(np.asarray(pad_width), (node.ndim, 2)).tolist()
    except ValueError:
        pass
    flat = list(pad_width) if isinstance(pad_width, (tuple, list)) else []
    torch_form = ""
    if (
        all(isinstance(ops.python_int(w), int) for w in flat)
        and len(flat) % 2 == 0
        and 0 < len(flat) // 2 <= node.ndim
    ):
        pairs = [(0, 0)] * (node.ndim - len(flat) // 2)
        pairs += [tuple(flat[k : k + 2]) for k in range(len(flat) - 2, -1, -2)]
        torch_form = (
            "; torch's flat F.pad tuple lists (before, after) pairs from the last axis "
            f"first: F.pad(x, {tuple(flat)}) is sg.pad(x, {tuple(pairs)})"
        )
    raise ShapeError(
        f"sg.pad of {node.describe()} of rank {node.ndim}: pad_width {pad_width!r} "
        "is NumPy's, an int, a (before, after) pair, or one (before, after) pair per "
        f"axis, first axis first{torch_form}"
    )


def _constant_block(x: Expr, axis: int, width: int, _, value) -> Expr:
    shape = x.node.shape[:axis] + (width,) + x.node.shape[axis + 1 :]
    if isinstance(value, Expr):
        return broadcast_to(value, shape)
    return Expr(ops.const(value, shape))


def _edge_block(x: Expr, axis: int, width: int, end: int, _) -> Expr:
    shape = x.node.shape[:axis] + (width,) + x.node.shape[axis + 1 :]
    return broadcast_to(_along(x, axis, slice(end, end + 1 or None)), shape)


def _mirror_block(skip: int) -> Callable:
    """The ``width`` entries next to an end (after ``skip`` of them), reversed."""

    def block(x: Expr, axis: int, width: int, end: int, _) -> Expr:
        if end == 0:
            near = slice(skip, skip + width)
        else:
            near = slice(-width - skip, -skip or None)
        return flip(_along(x, axis, near), axis)

    return block


def _wrap_block(x: Expr, axis: int, width: int, end: int, _) -> Expr:
    return _along(x, axis, slice(-width, None) if end == 0 else slice(width))


_PAD_BLOCKS = {
    "constant": _constant_block,
    "edge": _edge_block,
    "reflect": _mirror_block(1),
    "symmetric": _mirror_block(0),
    "wrap": _wrap_block,
}


_TORCH_PAD_MODES = {"replicate": "edge", "circular": "wrap"}


def diff(x: Expr, n: int = 1, axis: int = -1, prepend=None, append=None) -> Expr:
    """NumPy's diff: x[1:] - x[:-1] along ``axis``, taken ``n`` times, of x with
    ``prepend`` and ``append`` joined on at its ends (a number: one slice of it)."""
    (axis,) = _one_axis(_expr(x, "sg.diff").node, axis, "sg.diff")
    n = ops.python_int(n)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"sg.diff: n must be an int >= 0, not {n!r}")
    ends = [
        end if isinstance(end, Expr) else full_like(_along(x, axis, slice(0, 1)), end)
        for end in (prepend, append)
        if end is not None
    ]
    if ends:
        first = [ends.pop(0)] if prepend is not None else []
        x = concatenate([*first, x, *ends], axis)
    for _ in range(n):
        x = _along(x, axis, slice(1, None)) - _along(x, axis, slice(-1))
    return x


def sliding_window_view(x: Expr, window_shape, axis=None) -> Expr:
    """NumPy's sliding_window_view: every window of ``window_shape`` along ``axis`` (every
    axis if None), each axis' windows in a new last axis: convolutions are an einsum
    with the kernel, pooling a max over them (torch's ``unfold``). A view, as NumPy's.
    """
    node = _expr(x, "sg.sliding_window_view").node
    sizes = (window_shape,) if isinstance(window_shape, int) else tuple(window_shape)
    if axis is None:
        axes = tuple(range(node.ndim))
    else:  # in the order given: it pairs them with the sizes and orders the windows
        axes = tuple(
            _one_axis(node, a, "sg.sliding_window_view")[0]
            for a in ((axis,) if isinstance(axis, int) else axis)
        )
    if len(sizes) != len(axes) or len(set(axes)) != len(axes):
        raise ShapeError(
            f"sg.sliding_window_view: window_shape {window_shape!r} needs one size per "
            f"axis of {axes} (each axis once)"
        )
    windows = node
    for a, w in zip(axes, sizes, strict=True):
        n = node.shape[a]
        if not isinstance(w, int) or w < 1 or isinstance(n, int) and w > n:
            raise ShapeError(
                f"sg.sliding_window_view: window size {w!r} for axis {a} of "
                f"{node.describe()} of shape {format_shape(node.shape)}: use an int "
                "from 1 to the axis' size"
            )
        windows = ops.windows(windows, a, w)
    return Expr(windows)


def _made_by(result: Expr, source: Node, what: str) -> Expr:
    """``result``, with ``what`` named in the size requirements of the slices that
    built it from ``source``: slices the user did not write."""
    for part in set(toposort([result.node])) - set(toposort([source])):
        ops.MADE_BY[part] = what
    return result


def _stable(kind, what: str) -> None:
    """NumPy's kind=: sg's sort is always stable, which kind="stable" asks for."""
    if kind not in _STABLE_KINDS:
        raise ValueError(
            f"{what}: kind={kind!r} is not supported: sg's sort is always stable "
            "(equal values keep their order); use kind='stable' or leave it out"
        )


_STABLE_KINDS = (None, "stable", "mergesort")


def argsort(x: Expr, axis: int = -1, kind=None) -> Expr:
    """NumPy's argsort (stable: ties keep their order, as torch's stable sort): int64
    positions for sg.take_along_axis. ``kind`` may only ask for that ("stable")."""
    _stable(kind, "sg.argsort")
    (node,) = _values([_expr(x, "sg.argsort")], "sg.argsort")
    return Expr(ops.argsort(node, _one_axis(node, axis, "sg.argsort")[0]))


def sort(x: Expr, axis: int = -1, kind=None) -> Expr:
    """NumPy's sort along ``axis``; the gradient goes back to where each value came
    from, as torch's. ``axis=None`` sorts the flattened array. Stable, as
    ``kind="stable"`` asks."""
    _stable(kind, "sg.sort")
    if axis is None:
        return sort(reshape(_expr(x, "sg.sort"), (-1,)), 0)
    return take_along_axis(x, argsort(x, axis), axis)


def cumprod(x: Expr, axis=None) -> Expr:
    """NumPy's cumprod along an axis of fixed size, as running products of the slices
    (exact gradient where factors are 0, like sg.prod)."""
    node = _expr(x, "sg.cumprod").node
    if axis is None:
        return cumprod(reshape(x, (-1,)), 0)
    (axis,) = _one_axis(node, axis, "sg.cumprod")
    if node.shape[axis] == 0:
        return x  # empty, as NumPy's
    n = fixed_length(node, axis, "sg.cumprod", "sg.exp(sg.cumsum(sg.log(x), axis))")
    running = [_along(x, axis, slice(0, 1))]
    for i in range(1, n):
        running.append(running[-1] * _along(x, axis, slice(i, i + 1)))
    return concatenate(running, axis)


def cross(a: Expr, b: Expr, axis: int = -1) -> Expr:
    """NumPy's cross product of 3-vectors along ``axis`` (torch.linalg.cross); the
    other axes broadcast."""
    parts = []
    for v in (a, b):
        (k,) = _one_axis(_expr(v, "sg.cross").node, axis, "sg.cross")
        if v.node.shape[k] != 3:
            raise ShapeError(
                f"sg.cross of {v.node.describe()}: axis {axis} has size "
                f"{v.node.shape[k]}, not 3"
            )
        parts.append([_along(v, k, i) for i in range(3)])
    (a0, a1, a2), (b0, b1, b2) = parts
    try:
        broadcast(a0.node, b0.node)
    except ShapeError:  # (rather than name the components it slices out)
        raise ShapeError(
            f"sg.cross of {a.node.describe()} of shape {format_shape(a.node.shape)} "
            f"and {b.node.describe()} of shape {format_shape(b.node.shape)}: their "
            f"other axes (off axis {axis}) do not broadcast"
        ) from None
    return stack([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0], axis)


def outer(a: Expr, b: Expr) -> Expr:
    """NumPy's outer: of the flattened operands."""
    a, b = (_expr(x, "sg.outer") for x in (a, b))
    return reshape(a, (-1,))[:, None] * reshape(b, (-1,))[None, :]


def tril(x: Expr, k: int = 0) -> Expr:
    """NumPy's tril: the last two axes' entries on and below diagonal ``k``, others 0."""
    return _triangle(x, k, "sg.tril", lambda row, col: col - row <= k)


def triu(x: Expr, k: int = 0) -> Expr:
    """NumPy's triu: the last two axes' entries on and above diagonal ``k``, others 0."""
    return _triangle(x, k, "sg.triu", lambda row, col: col - row >= k)


def _triangle(x: Expr, k: int, what: str, keep: Callable) -> Expr:
    node = _expr(x, what).node
    if node.ndim < 2:
        raise ShapeError(f"{what} of {node.describe()}: it needs at least 2 axes")
    operator.index(k)
    inside = keep(*positions(*node.shape[-2:]))
    if node.dtype == "bool":  # a mask's triangle is a mask: torch's ones(T, T).tril()
        both = inside & x
        return Expr(ops.map_(both.relation, both.args))
    return where(inside, x, 0)


with_numpy_keywords(globals())
