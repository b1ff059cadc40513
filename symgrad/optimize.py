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
    """Inline each elementwise node into its only consumer when that is elementwise too.

    Fused chains become one SymPy expression, so SymPy differentiates and simplifies them
    as a whole. Roots and named nodes stay separate: their values are needed as such.
    """
    users = consumers(toposort(roots))
    keep = {id(r) for r in roots}
    fusible = {
        id(n)
        for n, us in users.items()
        if n.op == "map" and n.name is None and id(n) not in keep
        and len(us) == 1 and us[0].op == "map"
    }  # fmt: skip

    def inline(old: Node, node: Node) -> Node:
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
        expr = node.attrs[0].xreplace(pieces)
        fused = ops.map_(expr, args, node.shape)
        return replace(fused, name=node.name) if node.name else fused

    return rewrite(roots, inline)


def optimize(roots: Sequence[Node]) -> list[Node]:
    return fuse(eliminate_common(strip_detach(roots)))
