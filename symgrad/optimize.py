"""Graph rewrites between differentiation and printing: detach removal, CSE, map fusion.

Each pass takes the program's roots and returns new roots; nodes are immutable, so a pass
rebuilds every node whose arguments changed.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

import sympy as sp

from . import ops
from . import symbolic as ew
from .ir import Node, broadcast, broadcast_shapes, consumers, toposort


def rewrite(roots: Sequence[Node], fn: Callable[[Node, Node], Node]) -> list[Node]:
    """Rebuild the graph bottom-up, replacing each node by ``fn(node, node with new args)``."""
    new: dict[Node, Node] = {}
    for node in toposort(roots):
        args = tuple(new[a] for a in node.args)
        rebuilt = node if args == node.args else replace(node, args=args)
        new[node] = fn(node, rebuilt)
    return [new[r] for r in roots]


def strip_detach(roots: Sequence[Node]) -> list[Node]:
    """``detach`` only matters to differentiation; afterwards it is the identity."""
    return rewrite(roots, lambda _, n: n.args[0] if n.op == "detach" else n)


def fold_constants(roots: Sequence[Node]) -> list[Node]:
    """A view of an array of one value (a constant, the cotangent of a sum) is that
    value at another shape (``0.0[None]`` is not valid source), and a formula reads such
    an array as its value: ``x * 0.5``, not ``x * np.full((B, 1), 0.5)``. A matrix of
    one value times another is that value times the other's column (row) sums."""

    def fold(_: Node, n: Node) -> Node:
        if n.op == "matmul" and n.args[0].ndim <= 2 and n.args[1].ndim <= 2:
            return _one_value_product(n) or _one_line_product(n) or n
        if (
            n.op in ("index", "transpose", "reshape", "windows")
            and n.args[0].op == "map"
            and all(a.ndim == 0 for a in n.args[0].args)
        ):
            return ops.map_(n.args[0].attrs[0], n.args[0].args, n.shape)
        if n.op == "map" and any(map(ops.one_value, n.args)):
            return ops.map_(n.attrs[0], n.args, n.shape)
        return n

    return rewrite(roots, fold)


def _one_value_product(n: Node) -> Node | None:
    """``c @ b`` with c an array of one value (the cotangent of a sum, as when sg.grad
    differentiates sg.sum(u)): c times b's column sums, broadcast; ``a @ c`` likewise.
    """
    a, b = n.args
    for constant, other, axis in ((a, b, 0), (b, a, a.ndim - 1)):
        if ops.broadcast_scalars(constant):
            if n.ndim < 2 or other.shape[axis] != 1:  # (matrices keep the summed axis)
                other = ops.reduce_sum(other, (axis,), keepdims=n.ndim == 2)
            k = len(constant.args)
            formula = constant.attrs[0] * ew.arg(k)
            return ops.map_(formula, (*constant.args, other), n.shape)
    return None


def _one_line_product(n: Node) -> Node | None:
    """``a @ b`` where a or b is zeros with one row or column written (the adjoint of
    picking it, as sg.grad(sg.sum(du[:, 0]), x) does): a product with that line, not
    a matrix product with the zeros."""
    a, b = n.args
    if a.ndim != 2 or b.ndim != 2:
        return None
    for side, matrix, other in ((0, a, b), (1, b, a)):
        line = _single_line(matrix)
        if line is None:
            continue
        axis, k, value = line
        whole = slice(None)
        if axis != side:  # the line is along the contracted axis: an outer product
            picked = ops.index(
                other, ops.normalize_index(other, (k,) if side == 0 else (whole, k))
            )
            column, row = (value, picked) if side == 0 else (picked, value)
            if column.ndim:  # (a 0-d value, the seed 1.0, broadcasts as it is)
                column = ops.index(column, ops.normalize_index(column, (whole, None)))
            if row.ndim:
                row = ops.index(row, ops.normalize_index(row, (None, whole)))
            return ops.apply(lambda p, q: p * q, column, row, shape=n.shape)
        if not value.ndim:
            value = ops.map_(ew.arg(0), [value], (matrix.shape[1 - axis],))
        product = ops.matmul(value, other) if side == 0 else ops.matmul(other, value)
        spec = (k,) if side == 0 else (whole, k)
        return ops.scatter(
            n.shape, [(("slice", ops.normalize_index(n, spec)), product)]
        )
    return None


def _single_line(m: Node) -> tuple[int, int, Node] | None:
    """(axis, k, value) when the matrix ``m`` is zeros with only ``m[k]`` (axis 0) or
    ``m[:, k]`` (axis 1) written, else None."""
    if m.op != "scatter" or m.attrs[1] or len(m.attrs[0]) != 1:
        return None
    ((kind, value, *_),) = ops.scatter_updates(m)  # (rows and along carry an index)
    if kind[0] != "slice" or kind[-1] == "-":
        return None
    entries = kind[1]
    whole = ("slice", None, None, None)
    for axis in (0, 1):
        if (
            entries[axis][0] == "int"
            and entries[1 - axis] == whole
            and len(entries) == 2
        ):
            return axis, entries[axis][1], value
    return None


def eliminate_common(roots: Sequence[Node]) -> list[Node]:
    """Merge structurally identical nodes (same op, arguments, attributes and shape)."""
    seen: dict[tuple, Node] = {}

    def canonical(_: Node, node: Node) -> Node:
        if not node.args and node.op != "map":
            return node  # inputs and params are unique by construction
        if node.op == "map" and len(set(node.args)) < len(node.args):
            merged = ops.map_(node.attrs[0], node.args, node.shape)  # x / x is 1
            if merged.op != "map":
                return merged
            node = replace(merged, name=node.name, hint=node.hint)  # (m.let's name)
        key = (node.op, tuple(map(id, node.args)), node.attrs, node.shape, node.dtype)
        return seen.setdefault(key, node)

    return rewrite(roots, canonical)


# A fused formula reads at most this many arrays: a chain beyond (a loss accumulated
# over a loop of many steps) is cut into statements, as SymPy's work on one formula
# grows with its size times its number of arguments (one derivative per argument).
FUSED_ARGS = 16


def fuse(roots: Sequence[Node]) -> list[Node]:
    """Inline elementwise nodes into the elementwise nodes that use them.

    A node is inlined where it is used once, and a broadcast of one array wherever it is
    used. Fused chains become one SymPy
    expression, so SymPy differentiates and simplifies them as a whole. Roots and named
    nodes stay separate: their values are needed as such.
    """
    users = consumers(toposort(roots))
    keep = {id(r) for r in roots}
    kept = {id(n) for n in users}  # the graph's nodes; minus fusible, below: computed
    uses: dict[int, Counter] = {}
    fusible = {
        id(n)
        for n, us in users.items()
        if n.op == "map" and n.name is None and id(n) not in keep and us
        and all(u.op == "map" for u in us)
        and (n.attrs[0].is_Symbol or _copies(n, us, uses) == 1)
    }  # fmt: skip
    kept -= fusible

    def inline(old: Node, node: Node) -> Node:
        if node.op == "scatter":
            return _subtract_negations(_unbroadcast_values(node))
        if node.op != "map" or not any(id(a) in fusible for a in old.args):
            return node
        inner: dict[int, Node] = {}
        reads = 0  # arrays the fused formula reads so far
        for i, (a_old, a) in enumerate(zip(old.args, node.args, strict=True)):
            # A fused chain may simplify to one of its inputs (log(exp(x)) is x): an
            # input that is computed anyway is read, not inlined as a second copy.
            if (
                id(a_old) in fusible
                and a.op == "map"
                and id(a) not in kept
                and reads + len(a.args) + len(old.args) - i <= FUSED_ARGS
            ):
                inner[i] = a
                reads += len(a.args)
            else:
                reads += 1
        fused = ops.map_(*ops.compose(node.attrs[0], node.args, inner), node.shape)
        return fused.named(node.name)

    return rewrite(roots, inline)


def _copies(node: Node, users: list[Node], uses: dict[int, Counter]) -> int:
    """How many copies of ``node``'s formula inlining it would make: one per use in its
    users' formulas. More than one multiplies along a chain (ten steps of
    z + sin(z)/10 - z**3/30, or of r*x*(1 - x) on a scalar, would make a tree of 3**10
    or 2**10 copies for SymPy to differentiate), so such a node is computed once.
    ``uses`` memoizes each user's count of its placeholders: one walk of its formula."""
    total = 0
    for u in users:
        if id(u) not in uses:
            walk = sp.preorder_traversal(u.attrs[0])
            uses[id(u)] = Counter(s for s in walk if s.is_Symbol)
        total += sum(uses[id(u)][ew.arg(i)] for i, a in enumerate(u.args) if a is node)
    return total


def _cheap(node: Node) -> bool:
    """A broadcast of one array, or arithmetic on scalars: free to recompute."""
    return node.attrs[0].is_Symbol or all(a.ndim == 0 for a in node.args)


def _subtract_negations(node: Node) -> Node:
    """``out[:-1] += -t`` and ``out[1:] += t`` (the adjoint of ``x[1:] - x[:-1]``) as
    ``out[:-1] -= t``: one product, no negated copy."""
    updates = ops.scatter_updates(node)
    values = {(v.attrs[0], v.args) for _, v, *_ in updates if v.op == "map"}
    rewritten = []
    for kind, value, *idx in updates:
        if kind[0] == "slice" and kind[-1] != "-" and value.op == "map":
            formula = value.attrs[0]
            if formula.could_extract_minus_sign() and (-formula, value.args) in values:
                kind, value = (*kind, "-"), ops.map_(-formula, value.args)
        rewritten.append((kind, value, *idx))
    if rewritten == updates:
        return node
    return ops.scatter(node.shape, rewritten, node.args[0] if node.attrs[1] else None)


def _unbroadcast_values(node: Node) -> Node:
    """Scatter values broadcast on their own (``+=``, ``np.add.at``): drop broadcasts."""
    first = 1 if node.attrs[1] else 0  # a base must keep its shape
    args = node.args[:first] + tuple(
        ops.map_(a.attrs[0], a.args) if a.op == "map" and a.args and _cheap(a) else a
        for a in node.args[first:]
    )
    return node if args == node.args else replace(node, args=args)


def factor_sums(roots: Sequence[Node]) -> list[Node]:
    """Sum products before scaling them: ``sum(c * a * b)`` becomes ``c * (a @ b)``.

    Factors that are constant along the summed axes (scalars, sizes, keepdims-shaped
    arrays) move outside the sum; a sum over everything of a product of two arrays (or of
    a square) becomes a dot product: no temporary, one pass, BLAS. A full sum of several
    terms is split where that turns terms into dot products. The sum of values scattered
    along the summed axis (a one-hot, in softmax cross-entropy) is the sum of the values.
    """
    users = consumers(toposort(roots))
    keep = {id(r) for r in roots}

    def single(old: Node) -> bool:
        """Whether ``old`` is an intermediate no one else reads."""
        return not old.name and id(old) not in keep and len(users[old]) == 1

    def visit(old: Node, node: Node) -> Node:
        if node.op == "matmul":
            return _scale_after_product(old, node, single) or node
        if node.op != "sum":
            return node
        (m,) = node.args
        axes, keepdims = node.attrs
        if m.op == "scatter":
            return _sum_of_scatter(node) or node
        if (
            m.op != "map"
            or m.name
            or id(old.args[0]) in keep
            or len(users[old.args[0]]) != 1
        ):
            return node
        full = len(axes) == m.ndim and not keepdims
        terms = sp.Add.make_args(m.attrs[0]) if full else (m.attrs[0],)
        reduced = {t: _reduce_product(t, m, axes, keepdims) for t in terms}
        if all(r is None for r in reduced.values()):
            return node
        rest = [t for t, r in reduced.items() if r is None]
        parts = [r for r in reduced.values() if r is not None]
        if rest:
            parts.append(
                ops.reduce_sum(ops.map_(sp.Add(*rest), m.args, m.shape), axes, keepdims)
            )
        return ops.apply(lambda *xs: sp.Add(*xs), *parts, shape=node.shape)

    return rewrite(roots, visit)


def _reduce_product(term: sp.Expr, m: Node, axes: tuple, keepdims: bool) -> Node | None:
    """``sum(term)`` with constant factors outside and a dot product where possible."""
    outside, inside = [], []
    for f in sp.Mul.make_args(term):
        constant = all(
            _constant_along(m.args[i], axes, m.ndim, keepdims) for i in _placeholders(f)
        )
        (outside if constant else inside).append(f)
    total = _dot(inside, m) if len(axes) == m.ndim and not keepdims else None
    if total is None:
        if not outside or not inside:
            return None
        total = ops.reduce_sum(
            ops.map_(sp.Mul(*inside), m.args, m.shape), axes, keepdims
        )
    scale = sp.Mul(*outside) * ew.arg(len(m.args))
    used = [m.args[i] for i in range(len(m.args)) if scale.has(ew.arg(i))]
    return ops.map_(scale, (*m.args, total), broadcast(*used, total))


def _scale_after_product(old: Node, node: Node, single) -> Node | None:
    """``(-2 * s * a) @ b`` with s 0-d as ``-2 * s * (a @ b)``: the scale goes on the
    product (usually smaller, or written into its user's formula), not in a pass over
    ``a``. An outer product (contracting one element) keeps it where it is."""
    if node.args[0].shape[-1] == 1:
        return None
    for i, (arg_old, arg) in enumerate(zip(old.args, node.args, strict=True)):
        view = arg.op == "transpose" and single(arg_old)
        m_old, m = (arg_old.args[0], arg.args[0]) if view else (arg_old, arg)
        if m.op != "map" or not m.args or not single(m_old):
            continue
        factors = sp.Mul.make_args(m.attrs[0])
        scalar = [f for f in factors if _scalar(f, m)]
        if not scalar or len(scalar) == len(factors):
            continue
        inside = ops.map_(
            sp.Mul(*(f for f in factors if f not in scalar)), m.args, m.shape
        )
        operands = list(node.args)
        operands[i] = ops.transpose(inside, arg.attrs[0]) if view else inside
        product = ops.matmul(*operands)
        return ops.map_(
            sp.Mul(*scalar) * ew.arg(len(m.args)), (*m.args, product), node.shape
        )
    return None


def _scalar(formula: sp.Expr, m: Node) -> bool:
    """Whether ``formula`` (a piece of m's) reads only 0-d arguments and sizes."""
    return all(m.args[i].ndim == 0 for i in _placeholders(formula))


def _sum_of_scatter(node: Node) -> Node | None:
    (scatter,) = node.args
    axes, keepdims = node.attrs
    kinds, has_base = scatter.attrs
    if has_base or any(k[0] != "along" or k[1] not in axes for k in kinds):
        return None
    parts = [  # (an index broadcasting along another axis: the values' shape is wider)
        ops.reduce_sum(
            ops.map_(ew.arg(0), (value,), broadcast_shapes(value.shape, idx.shape)),
            axes,
            keepdims,
        )
        for _, value, idx in ops.scatter_updates(scatter)
    ]
    return ops.apply(lambda *xs: sp.Add(*xs), *parts, shape=node.shape)


def _constant_along(arg: Node, axes: tuple, ndim: int, keepdims: bool) -> bool:
    if not keepdims:
        return arg.ndim == 0
    padded = (1,) * (ndim - arg.ndim) + arg.shape
    return all(padded[a] == 1 for a in axes)


def _dot(factors: list, m: Node) -> Node | None:
    """A dot product of two full-shape factors, e.g. sum(r**2) -> r @ r."""
    if len(factors) == 1 and factors[0].is_Pow and factors[0].exp == 2:
        a = b = factors[0].base
    elif len(factors) >= 2:
        a, b = factors[0], sp.Mul(*factors[1:])
    else:
        return None
    left, right = ops.map_(a, m.args), ops.map_(b, m.args)
    if left.shape != m.shape or right.shape != m.shape:
        return None
    return ops.dot(left, left if a == b else right)


def optimize(roots: Sequence[Node]) -> list[Node]:
    roots = fuse(eliminate_common(fold_constants(strip_detach(roots))))
    roots = reuse_inverses(eliminate_common(fold_constants(fuse(factor_sums(roots)))))
    return mask_relu_gradients(eliminate_common(roots))


def mask_relu_gradients(roots: Sequence[Node]) -> list[Node]:
    """relu's (or a clip's) derivative times a gradient that may be infinite where the
    clamp binds (that of sqrt(r), r = relu(x) computed as its own array, sliced,
    summed, ...) as that gradient where it does not, else 0, as torch's masked relu
    and clamp backward: not 0 * inf = nan. symbolic.relu_masked does this within the
    formula it differentiates; this pass does it across arrays: a gradient may be
    infinite there when it is computed from a negative power of an array that is 0
    where the clamp binds (a sum or a slice of it, sqrt(c + 1) for c = clip(x, -1);
    not exp(relu(x)), nor a count of a window's maxima).

    A key names where a clamp binds: x for relu(x) (x <= 0), a clip's condition."""
    constants: dict[Node, dict] = {}  # each node: key -> the constant it is there
    unbounded: dict[tuple, bool] = {}

    def values(node: Node) -> dict:
        if node not in constants:
            if node.op != "map":  # (sums, products and rearrangements keep zeros)
                found = {
                    k: 0 for a in node.args for k, v in values(a).items() if v == 0
                }
            else:
                formula, found = node.attrs[0], {}
                for i, a in enumerate(node.args):
                    for key, value in values(a).items():
                        found[key] = _at(formula, {ew.arg(i): value})
                for r in formula.atoms(ew.relu, sp.Max):
                    if isinstance(r, ew.relu) or 0 in r.args:
                        (x,) = [a for a in r.args if a != 0]
                        found[_over_nodes(x, node.args)] = _at(formula, {r: 0})
                for r in formula.atoms(sp.Piecewise):
                    for value, condition in r.args:
                        at = _at(formula, {r: value})
                        for case in ew.cases(condition):
                            found[_over_nodes(case, node.args)] = at
            constants[node] = {k: v for k, v in found.items() if v is not None}
        return constants[node]

    def vanishes(node: Node, base: sp.Expr, key: sp.Expr) -> bool:
        """Whether ``base`` (over ``node``'s arguments) is 0 where ``key`` holds, or
        reads an argument that is (as torch masks a gradient, finite or not)."""
        known = {
            ew.arg(i): values(node.args[i])[key]
            for i in _placeholders(base)
            if key in values(node.args[i])
        }
        return 0 in known.values() or bool(known) and _at(base, known) == 0

    def infinite(node: Node, key: sp.Expr) -> bool:
        """Whether ``node`` may be infinite where ``key`` holds."""
        if (node, key) not in unbounded:  # (memoized: a DAG shares its ancestors)
            divides = node.op == "map" and any(
                vanishes(node, p.base, key)
                for p in node.attrs[0].atoms(sp.Pow)
                if p.exp.is_negative
            )
            unbounded[node, key] = divides or any(infinite(a, key) for a in node.args)
        return unbounded[node, key]

    def factor_infinite(node: Node, factor: sp.Expr, x: sp.Expr) -> bool:
        key = _over_nodes(x, node.args)
        if factor.is_Pow:
            return vanishes(node, factor.base, key)
        return any(infinite(node.args[i], key) for i in _placeholders(factor))

    def visit(_: Node, node: Node) -> Node:
        if node.op != "map" or not node.attrs[0].has(sp.Heaviside, sp.Piecewise):
            return node
        formula = node.attrs[0].replace(
            lambda e: e.is_Mul and e.has(sp.Heaviside, sp.Piecewise),
            lambda e: ew.relu_masked(e, lambda f, x: factor_infinite(node, f, x)),
        )
        if formula == node.attrs[0]:
            return node
        return ops.map_(formula, node.args, node.shape)

    return rewrite(roots, visit)


def _at(formula: sp.Expr, values: dict) -> sp.Expr | None:
    """``formula``'s finite constant value where its atoms take ``values``, or None."""
    try:
        at = sp.sympify(formula.xreplace(values))
    except (TypeError, ValueError):  # (a Max of values SymPy cannot compare)
        return None
    return at if at.is_number and at.is_finite else None


def _placeholders(expr: sp.Expr) -> list[int]:
    return [int(s.name[1:]) for s in expr.free_symbols if s.name.startswith("_")]


def _over_nodes(expr: sp.Expr, args: Sequence[Node]) -> sp.Expr:
    """``expr`` (over a map's placeholders) over symbols naming the argument nodes, so
    formulas of different maps compare."""
    return expr.xreplace(
        {ew.arg(i): sp.Symbol(f"node{id(a)}") for i, a in enumerate(args)}
    )


def reuse_inverses(roots: Sequence[Node]) -> list[Node]:
    """``solve(a.T, g)`` (the adjoint of a solve) where the program computes ``inv(a)``
    anyway (the adjoint of a log-determinant) is ``inv(a).T @ g``: a product instead of
    another factorization of ``a``."""
    inverted = {n.args[0] for n in toposort(roots) if n.op == "inv"}

    def visit(old: Node, node: Node) -> Node:
        a = old.args[0] if old.op == "solve" else None
        if a is None or a.op != "transpose" or a.args[0] not in inverted:
            return node
        swap = ops.swap_last(a.ndim)
        if a.attrs[0] != swap:
            return node
        inverse = ops.inv(node.args[0].args[0])  # merged with the program's by CSE
        return ops.matmul(ops.transpose(inverse, swap), node.args[1])

    return rewrite(roots, visit)


def pair_differences(roots: Sequence[Node]) -> list[Node]:
    """Scatter-adds of ``h * (x[i] - x[j])`` into rows ``i`` and of its negation into rows
    ``j`` become one ``pair_scatter(x, i, j, h)``: the gradient of a pair energy (springs,
    Lennard-Jones), which NumPy computes through an (n, n) matrix of ``h`` when the pairs
    are dense (ops.py). Only the vectorized code uses it; unrolled code updates per pair.
    """

    def visit(_: Node, node: Node) -> Node:
        return _pair_scatter(node) or node if node.op == "scatter" else node

    roots = rewrite(roots, visit)
    return eliminate_common(fuse(roots))


def _pair_scatter(node: Node) -> Node | None:
    if node.ndim != 2 or not ops.narrow(node.shape[1]):
        return None
    updates = ops.scatter_updates(node)
    rows = [u for u in updates if u[0] == ("rows",) and u[2].ndim == 1]
    for first, second in itertools.combinations(rows, 2):
        pair = _pair(second, first, node.shape) or _pair(first, second, node.shape)
        if pair is None:
            continue
        rest = [u for u in updates if u is not first and u is not second]
        if node.attrs[1]:  # a dense base: added to the pairs' rows
            pair = ops.apply(lambda a, b: a + b, node.args[0], pair)
        return ops.scatter(node.shape, rest, pair) if rest else pair
    return None


def _pair(plus: tuple, minus: tuple, shape: tuple) -> Node | None:
    """``pair_scatter`` if ``plus`` adds ``h (x[i] - x[j])`` at ``i``, ``minus`` its negation
    at ``j``, for gathers ``x[i]``, ``x[j]`` of an ``x`` shaped like the scatter, and ``h``
    the same along rows (one number per pair)."""
    (_, v, i), (_, w, j) = plus, minus
    if v.op != "map" or w.op != "map" or i is j:
        return None
    gathers = {
        a.args: a for a in v.args if a.op == "gather" and a.shape[1:] == shape[1:]
    }
    for (x, idx), xi in gathers.items():
        xj = gathers.get((x, j))
        if idx is not i or xj is None or x.shape != shape:
            continue
        symbols = {
            n: sp.Symbol(f"_n{k}") for k, n in enumerate(dict.fromkeys(v.args + w.args))
        }
        a, b = symbols[xi], symbols[xj]
        h = _difference_coefficient(_formula(v, symbols), a, b)
        opposite = _difference_coefficient(_formula(w, symbols), a, b)
        if h is None or opposite is None or sp.expand(h + opposite) != 0:
            continue
        factors = {n: s for n, s in symbols.items() if s in h.free_symbols}
        if all(_per_pair(n, i.shape[0]) for n in factors):
            args = [_squeeze(n) for n in factors]
            local = {s: ew.arg(k) for k, s in enumerate(factors.values())}
            coefficient = ops.map_(h.xreplace(local), args, i.shape)
            return ops.pair_scatter(x, i, j, coefficient)
    return None


def _formula(node: Node, symbols: dict) -> sp.Expr:
    return node.attrs[0].xreplace(
        {ew.arg(k): symbols[a] for k, a in enumerate(node.args)}
    )


def _difference_coefficient(
    expr: sp.Expr, a: sp.Symbol, b: sp.Symbol
) -> sp.Expr | None:
    """``h`` when ``expr`` is ``h * (a - b)`` with ``h`` free of ``a`` and ``b`` (as
    written, not expanded: the checks expand, the code keeps the user's form)."""
    h = expr.diff(a)
    if h.has(a, b, sp.Derivative) or sp.expand(expr.diff(b) + h) != 0:
        return None
    return h if sp.expand(expr.xreplace({a: 0, b: 0})) == 0 else None


def _per_pair(node: Node, pairs) -> bool:
    """The same for every coordinate: a scalar, or one number per pair as a column."""
    return node.ndim == 0 or (
        node.ndim == 2 and node.shape[1] == 1 and node.shape[0] in (1, pairs)
    )


def _squeeze(node: Node) -> Node:
    """``c[:, None]`` -> ``c``: the column of per-pair numbers as a vector."""
    if node.ndim != 2:
        return node
    if node.op == "index" and node.attrs[0] == (("slice", None, None, None), ("new",)):
        return node.args[0]
    return ops.reshape(node, node.shape[:1])
