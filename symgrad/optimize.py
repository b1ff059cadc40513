"""Graph rewrites between differentiation and printing: detach removal, CSE, map fusion.

Each pass takes the program's roots and returns new roots; nodes are immutable, so a pass
rebuilds every node whose arguments changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from . import ops
from . import symbolic as ew
from .ir import Node, consumers, toposort


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


def eliminate_common(roots: Sequence[Node]) -> list[Node]:
    """Merge structurally identical nodes (same op, arguments, attributes and shape)."""
    seen: dict[tuple, Node] = {}

    def canonical(_: Node, node: Node) -> Node:
        if not node.args and node.op != "map":
            return node  # inputs and params are unique by construction
        key = (node.op, tuple(map(id, node.args)), node.attrs, node.shape, node.dtype)
        return seen.setdefault(key, node)

    return rewrite(roots, canonical)


def fuse(roots: Sequence[Node]) -> list[Node]:
    """Inline elementwise nodes into the elementwise nodes that use them.

    A node is inlined into its only consumer, or into all of them when it is cheap to
    repeat (a broadcast, or arithmetic on scalars). Fused chains become one SymPy
    expression, so SymPy differentiates and simplifies them as a whole. Roots and named
    nodes stay separate: their values are needed as such.
    """
    users = consumers(toposort(roots))
    keep = {id(r) for r in roots}
    fusible = {
        id(n)
        for n, us in users.items()
        if n.op == "map" and n.name is None and id(n) not in keep and us
        and all(u.op == "map" for u in us) and (len(us) == 1 or _cheap(n))
    }  # fmt: skip

    def inline(old: Node, node: Node) -> Node:
        if node.op == "scatter":
            return _unbroadcast_values(node)
        if node.op != "map" or not any(id(a) in fusible for a in old.args):
            return node
        args: list[Node] = []
        pieces = {}
        for i, (a_old, a) in enumerate(zip(old.args, node.args, strict=True)):
            if id(a_old) in fusible and a.op == "map":
                offset = len(args)
                args.extend(a.args)
                sub = {ew.arg(j): ew.arg(offset + j) for j in range(len(a.args))}
                pieces[ew.arg(i)] = a.attrs[0].xreplace(sub)
            else:
                pieces[ew.arg(i)] = ew.arg(len(args))
                args.append(a)
        fused = ops.map_(node.attrs[0].xreplace(pieces), args, node.shape)
        return replace(fused, name=node.name) if node.name else fused

    return rewrite(roots, inline)


def _cheap(node: Node) -> bool:
    """A broadcast of one array, or arithmetic on scalars: free to recompute."""
    return node.attrs[0].is_Symbol or all(a.ndim == 0 for a in node.args)


def _unbroadcast_values(node: Node) -> Node:
    """Scatter values broadcast on their own (``+=``, ``np.add.at``): drop broadcasts."""
    first = 1 if node.attrs[1] else 0  # a base must keep its shape
    args = node.args[:first] + tuple(
        ops.map_(a.attrs[0], a.args) if a.op == "map" and a.args and _cheap(a) else a
        for a in node.args[first:]
    )
    return node if args == node.args else replace(node, args=args)


def optimize(roots: Sequence[Node]) -> list[Node]:
    return fuse(eliminate_common(strip_detach(roots)))
