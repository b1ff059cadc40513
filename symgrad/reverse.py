"""Symbolic reverse mode: a reversed topological walk applying the primitive table."""

from __future__ import annotations

from collections.abc import Sequence

from . import ops
from .ir import Node, toposort
from .optimize import rewrite
from .symbolic import UnsupportedError


class GradientError(ValueError):
    """A primitive on the path from a parameter to the loss has no adjoint rule."""


def gradients(
    loss: Node, wrt: Sequence[Node], seed: Node
) -> tuple[list[Node], dict[Node, Node]]:
    """Cotangent graphs of ``seed * loss`` with respect to each node of ``wrt``.

    Returns the gradient of each ``wrt`` node (same shape; zeros where the loss does not
    depend on it) and a map from each cotangent node to the forward node it is the
    gradient of, so the code generator can name it ``grad_<name>``.
    """
    order = toposort([loss])
    needed: set[Node] = set(wrt)
    for node in order:
        if any(a in needed for a in node.args):
            needed.add(node)
    parts: dict[Node, list[Node]] = {loss: [seed]}
    total: dict[Node, Node] = {}
    for node in reversed(order):
        if node not in needed or node not in parts:
            continue
        g = total[node] = accumulate(parts.pop(node))
        rule = ops.PRIMITIVES[node.op].vjp
        if node.args and rule is None:
            raise GradientError(f"no gradient rule for {node.op} in {node.describe()}")
        for i, a in enumerate(node.args):
            if a in needed and (contribution := _vjp(rule, g, node, i)) is not None:
                parts.setdefault(a, []).append(contribution)
    grads = [total.get(w) or ops.zeros(w.shape) for w in wrt]
    origin: dict[Node, Node] = {}
    for node, g in total.items():
        origin.setdefault(g, node)
    return grads, origin


def expand_grads(roots: Sequence[Node]) -> list[Node]:
    """Each ``sg.grad`` node replaced by its gradient graph (inner ones first), made of
    primitives that are differentiated again like the rest of the model."""
    one = ops.const(1)

    def expand(_: Node, node: Node) -> Node:
        if node.op != "grad":
            return node
        (gradient,), _ = gradients(node.args[0], [node.args[1]], one)
        return gradient

    return rewrite(roots, expand)


def _vjp(rule, g: Node, node: Node, i: int) -> Node | None:
    """Apply an adjoint rule; a formula SymPy cannot differentiate is named as declared."""
    try:
        return rule(g, node, i)
    except UnsupportedError as e:
        raise UnsupportedError(
            f"cannot differentiate {node.describe()} with respect to "
            f"{node.args[i].describe()}: {e}"
        ) from e


def accumulate(parts: list[Node]) -> Node:
    """Sum the contributions to one cotangent; scatters merge into one buffer."""
    if len(parts) == 1:
        return parts[0]
    shape = parts[0].shape
    scatters = [p for p in parts if p.op == "scatter" and not p.attrs[1]]
    dense = [p for p in parts if p not in scatters]
    base = ops.apply(lambda *xs: sum(xs), *dense, shape=shape) if dense else None
    if not scatters:
        return base
    updates = [u for s in scatters for u in ops.scatter_updates(s)]
    return ops.scatter(shape, updates, base)
