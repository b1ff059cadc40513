"""The tensor expression DAG: immutable nodes, shapes with symbolic dims, traversal.

A shape is a tuple of dims; a dim is an ``int`` or a SymPy integer expression in named size
symbols (``batch``, ``n - 1``), so slices of symbolic dims still compare equal when they
should. Nodes are compared by identity; structural sharing is the optimizer's job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import sympy as sp
from sympy.printing.str import StrPrinter

Dim = int | sp.Expr
Shape = tuple[Dim, ...]


class ShapeError(ValueError):
    """Operands of an operation have incompatible shapes (raised at declaration time)."""


class CeilDiv(sp.Function):
    """ceil(a / b): how many elements a slice with step b takes from a of them
    (``x[::2]`` of n has ``(n + 1) // 2``), a size that prints as that Python."""

    is_integer = True
    is_nonnegative = True

    @classmethod
    def eval(cls, a, b):
        if a.is_Integer and b.is_Integer:
            return sp.Integer(-(-int(a) // int(b)))
        if not b.is_Integer or b < 1:
            return None
        # a = b*q + c with q integer-valued and c a constant: ceil(a / b) is
        # q + ceil(c / b), so the odd half of an axis of 2*k, ceil((2*k - 1) / 2), is k.
        c, q = sp.expand(a).as_coeff_Add()
        q = sp.expand(q / b)
        if q.is_integer and c.is_Integer:
            return q + cls(c, b)
        return None

    def _sympystr(self, printer) -> str:
        a, b = self.args
        a = sp.expand(a + b - 1)
        numerator = f"({printer._print(a)})" if a.is_Add else printer._print(a)
        return f"({numerator} // {printer._print(b)})"  # whole: Python's // binds as *

    _numpycode = _pythoncode = _sympystr


def size_symbol(name: str) -> sp.Symbol:
    """The SymPy symbol of a symbolic dim such as ``"batch"``."""
    return sp.Symbol(name, integer=True, positive=True)


def is_size(x: Any) -> bool:
    """A model.Size (2 * x.shape[0]): a str that carries its size expression, 2*B."""
    return isinstance(x, str) and hasattr(x, "size")


def as_dim(d: Any) -> Dim:
    if is_size(d):
        return as_dim(d.size)
    if isinstance(d, str):
        return size_symbol(d)
    if isinstance(d, sp.Expr):
        d = sp.sympify(d)
        return int(d) if d.is_Integer else d
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise ShapeError(f"invalid dimension {d!r}: use a non-negative int or a name")
    return d


def as_shape(shape: Iterable[Any]) -> Shape:
    if isinstance(shape, (int, str)):
        shape = (shape,)
    return tuple(as_dim(d) for d in shape)


def format_shape(shape: Shape) -> str:
    """``(batch, 3)``: how shapes read in messages and generated code."""
    inner = ", ".join(str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def size(shape: Shape) -> Dim:
    return (
        sp.Mul(*shape) if any(isinstance(d, sp.Expr) for d in shape) else _prod(shape)
    )


def _prod(dims: Iterable[int]) -> int:
    out = 1
    for d in dims:
        out *= d
    return out


def same_dim(a: Dim, b: Dim) -> bool:
    """Equal sizes, however written: (k + 2)*(n + 1) is k*n + k + 2*n + 2."""
    return (
        a == b
        or (isinstance(a, sp.Expr) or isinstance(b, sp.Expr))
        and sp.expand(a - b) == 0
    )


def broadcast(*operands: Node) -> Shape:
    """NumPy broadcasting of the operands' shapes; symbolic dims must match exactly."""
    ndim = max((len(x.shape) for x in operands), default=0)
    padded = [(1,) * (ndim - len(x.shape)) + x.shape for x in operands]
    out = []
    for axis, dims in enumerate(zip(*padded, strict=True)):
        sized = [d for d in dims if d != 1]
        if any(not same_dim(d, sized[0]) for d in sized):
            # Name the first sized operand and the first one that disagrees with it.
            sizes = [(x, p[axis]) for x, p in zip(operands, padded, strict=True)]
            a = next(x for x, d in sizes if d == sized[0])
            b, other = next(
                (x, d) for x, d in sizes if d != 1 and not same_dim(d, sized[0])
            )
            symbolic = not isinstance(sized[0], int) and not isinstance(other, int)
            raise ShapeError(
                f"cannot broadcast {a.describe()} of shape {format_shape(a.shape)} "
                f"with {b.describe()} of shape {format_shape(b.shape)}"
                + (
                    f": sizes {sized[0]} and {other} are never equal; derive one "
                    "array's size from the other's (slice with x[1:], or sg.pad)"
                    if symbolic
                    else ""
                )
            )
        out.append(sized[0] if sized else 1)
    return tuple(out)


def broadcast_shapes(*shapes: Shape) -> Shape:
    """NumPy broadcasting of shapes already known to be compatible."""
    ndim = max((len(s) for s in shapes), default=0)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    return tuple(
        next((d for d in dims if d != 1), 1) for dims in zip(*padded, strict=True)
    )


def format_index(spec: tuple) -> str:
    """``[1:, None]``: trailing full slices are left out, as a person would write it."""
    parts = []
    for entry in spec:
        if entry[0] == "new":
            parts.append("None")
        elif entry[0] == "int":
            parts.append(str(entry[1]))
        else:
            start, stop, step = ("" if v is None else str(v) for v in entry[1:])
            parts.append(f"{start}:{stop}" + (f":{step}" if step else ""))
    while len(parts) > 1 and parts[-1] == ":":
        parts.pop()
    return "[" + ", ".join(parts) + "]"


@dataclass(frozen=True, eq=False)
class Node:
    """One operation of the graph. ``op`` names a primitive in ``ops.PRIMITIVES``."""

    op: str
    args: tuple[Node, ...]
    shape: Shape
    dtype: str = "float64"
    attrs: tuple = ()
    name: str | None = None  # given by the user: always computed and shown under it
    hint: str | None = None  # a suggested name (grad_h), used if the node is computed

    def named(self, name: str | None) -> Node:
        """This value under ``name`` (m.let's); a parameter or input that a let folded
        to (-(-x)) keeps its own."""
        if not name or self.op in ("param", "input"):
            return self
        return replace(self, name=name)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def describe(self, depth: int = 2) -> str:
        """A short readable rendering for error messages."""
        if self.name is not None:
            return self.name
        if depth == 0 or not self.args:
            return "..." if self.op == "map" else f"<{self.op}>"
        if self.op == "map":  # the formula, with arguments in place of placeholders
            # a Dummy per argument: equal descriptions must not cancel (x@A - x@B is not 0)
            args = [sp.Dummy(a.describe(depth - 1), real=True) for a in self.args]
            formula = self.attrs[0].xreplace(
                {sp.Symbol(f"_{i}", real=True): d for i, d in enumerate(args)}
            )
            return _DescribePrinter().doprint(formula)
        if self.op == "index":
            return self.args[0].describe(depth - 1) + format_index(self.attrs[0])
        inner = ", ".join(a.describe(depth - 1) for a in self.args)
        return f"{self.op}({inner})"

    def __repr__(self) -> str:
        return f"Node({self.describe()}, shape={format_shape(self.shape)})"


class _DescribePrinter(StrPrinter):
    """Prints a Dummy by its name alone (StrPrinter prefixes an underscore)."""

    def _print_Dummy(self, expr):
        return expr.name


def toposort(roots: Iterable[Node]) -> list[Node]:
    """Nodes reachable from ``roots``, each after its args, in a deterministic order."""
    order: list[Node] = []
    seen: set[int] = set()
    for root in roots:
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((a, False) for a in reversed(node.args) if id(a) not in seen)
    return order


def consumers(order: list[Node]) -> dict[Node, list[Node]]:
    """Map each node to the nodes that use it (one entry per use)."""
    users: dict[Node, list[Node]] = {n: [] for n in order}
    for n in order:
        for a in n.args:
            users[a].append(n)
    return users
