"""Program -> NumPy module source: scheduling, naming, CSE, template, black, atomic write.

Every map node becomes one assignment of a printed SymPy expression; ``sympy.cse`` runs
over all of them at once, so a subexpression shared by the forward and the backward pass is
computed once (in the forward pass) and cached. View operations (``W.T``, ``g[:, None]``)
and scalar constants are written inline where they are used. Large formulas are printed as
in-place ufunc calls into arrays no later statement reads (inplace.py), and small fixed
sizes also get a scalar-unrolled value_and_grad (unroll.py).
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import black
import jinja2
import numpy as np
import sympy as sp

from . import __version__, inplace
from . import symbolic as ew
from .compiler import Program, unit_seed, vectorized
from .ir import (
    Node,
    broadcast,
    broadcast_shapes,
    consumers,
    format_shape,
    size,
    toposort,
)
from .model import requirement
from .ops import LINALG, PRIMITIVES, is_const
from .printer import NumPyPrinter, literal, to_numpy
from .symbolic import factored
from .tape import special

VIEWS = ("transpose", "index", "reshape", "windows")
# A scalar map is written into its users' formulas only up to this many operations
# (counted as a tree); beyond, it gets a statement, as an array would.
INLINE_OPS = 40
LEAVES = ("input", "param", "seed")
# Operations whose result is a new array of the node's shape, safe to overwrite when dead.
FRESH = (
    "map",
    "matmul",
    "concatenate",
    "cumsum",
    "sum",
    "max",
    "min",
    "gather",
    "take_along_axis",
    "scatter",
    "pair_scatter",
    *LINALG,
)
TEMPLATES = [
    Path(__file__).parent / "templates",
    Path(__file__).parent.parent / "templates",
]


@dataclass(eq=False)
class Statement:
    """One assignment (or a few lines, for scatters) of the generated code."""

    target: Node | sp.Symbol  # a CSE temporary is a symbol
    backward: bool
    expr: sp.Expr | None = None  # maps and CSE temporaries: over placeholder symbols
    reads: set = field(default_factory=set)  # Nodes and symbols this statement uses
    name: str = ""

    @property
    def alias(self) -> bool:
        """Whether it only gives another value (or a view of it) a second name."""
        return self.expr is not None and self.expr.is_Symbol


class Emitter:
    """Turns a Program into ordered, named statements and prints them."""

    def __init__(self, program: Program):
        self.program = program
        forward_roots = [program.loss, *program.outputs.values()]
        self.roots = set(forward_roots) | set(program.grads.values())
        forward = toposort(forward_roots)
        everything = toposort(forward_roots + list(program.grads.values()))
        in_forward = set(forward)
        self.order = forward + [n for n in everything if n not in in_forward]
        self.backward_nodes = set(self.order) - in_forward
        self.symbol = {
            n: sp.Symbol(f"_v{i}", real=True) for i, n in enumerate(self.order)
        }
        self.node_of = {s: n for n, s in self.symbol.items()}
        self.dims = set(program.model.dims.values())
        self.users = consumers(self.order)
        self.statements: list[Statement] = []
        self.names: dict[object, str] = {}
        self.alias: dict[Node, object] = {}  # nodes whose value a CSE temporary holds
        self._exprs: dict[Node, sp.Expr] = {}
        self._ops: dict[Node, int] = {}
        with program.timed("cse"):
            self._schedule()
        self._name()
        self.size_names = {self.names[d] for d in self.dims}  # Python ints when printed
        self.statement_of = {st.target: st for st in self.statements}
        self._temp_shapes: dict[sp.Symbol, tuple] = {}

    # ------------------------------------------------------------------ scheduling

    def inline(self, node: Node) -> bool:
        """Views and scalar constants are written where used, not assigned."""
        if node in self.roots or node.name or node.op in LEAVES:
            # A constant result nothing else reads is written where it is returned.
            unused = is_const(node) and not node.name and not self.users[node]
            return node.op in LEAVES or unused
        if node.op in VIEWS and len(self.users[node]) > 1 and node.args[0].op in LEAVES:
            return False  # x[:-1] used twice: one view object, not one per use
        if (
            node.op == "reshape"
            and node.args[0].op == "transpose"
            and len(self.users[node]) > 1
        ):
            return False  # axes moved, then merged: a copy (einsum's im2col), made once
        if _scalar_map(node):  # into formulas, where CSE sees it, or where it is cheap
            if self._inlined_ops(node) > INLINE_OPS:
                return False
            users = self.users[node]
            return (
                all(u.op == "map" for u in users) or sp.count_ops(self._expr(node)) <= 2
            )
        return node.op in VIEWS or is_const(node)

    def _inlined_ops(self, node: Node) -> int:
        """Operations in a scalar map's formula with its inlined scalar maps written out,
        counted as a tree (``x = r*x*(1 - x)`` iterated doubles it per step)."""
        if node not in self._ops:
            formula = ew.lower(node.attrs[0])
            self._ops[node] = sp.count_ops(formula) + sum(
                formula.count(ew.arg(i)) * self._inlined_ops(a)
                for i, a in enumerate(node.args)
                if _scalar_map(a) and self.inline(a)
            )
        return self._ops[node]

    def _expr(self, node: Node) -> sp.Expr:
        """A map's formula over placeholders, with activations lowered to stable forms."""
        if node not in self._exprs:
            args = {ew.arg(i): self._operand(a) for i, a in enumerate(node.args)}
            self._exprs[node] = ew.lower(node.attrs[0]).xreplace(args)
        return self._exprs[node]

    def _operand(self, node: Node) -> sp.Expr:
        if node.op == "map" and self.inline(node) and node.shape == ():
            return self._expr(node)  # scalar arithmetic: written into the formula
        return self.symbol[node]

    def _schedule(self) -> None:
        computed = [n for n in self.order if not self.inline(n)]
        maps = [n for n in computed if n.op == "map" and n.args]
        exprs = [self._expr(n) for n in maps]
        temps, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("_c", real=True))
        temps, reduced = _sizes_inline(temps, reduced, self.dims)
        temps, reduced = _power_chains(temps, reduced, self.dims)
        self.cse_targets = {symbol for symbol, _ in temps}
        reduced_of = dict(zip(maps, reduced, strict=True))
        pending = dict(temps)
        for node in computed:
            backward = node in self.backward_nodes
            if node not in reduced_of:
                reads = {d for a in node.args for d in self._resolve(a)}
                for shaped in (node, *node.args):  # np.ones((1, n)) @ x: x's sizes
                    reads |= self._dims(shaped)
                self.statements.append(Statement(node, backward, reads=reads))
                continue
            expr = reduced_of[node]
            # The whole formula is a shared subexpression, of the node's shape (a
            # broadcast of one gets a statement of its own, printed with its shape).
            shared = expr in self.cse_targets and not _broadcast_map(node)
            if shared and expr in pending:  # computed here, under the node's name
                self.node_of[expr] = node
                expr = pending.pop(expr)
            elif shared and node not in self.roots and not node.name:
                self.alias[node] = self.node_of.get(expr, expr)  # computed already
                continue
            self._emit_temps(expr, pending, backward)
            reads = self._reads(expr)
            if _broadcast_map(node):  # printed with its shape: np.full, np.broadcast_to
                reads |= self._dims(node)
            self.statements.append(Statement(node, backward, expr, reads))

    def _emit_temps(self, expr: sp.Expr, pending: dict, backward: bool) -> None:
        """Emit the CSE temporaries ``expr`` needs, each right before its first use."""
        for symbol in sorted(expr.free_symbols & pending.keys(), key=lambda s: s.name):
            if symbol in pending:
                value = pending.pop(symbol)
                self._emit_temps(value, pending, backward)
                self.statements.append(
                    Statement(symbol, backward, value, self._reads(value))
                )

    def _reads(self, expr: sp.Expr) -> set:
        reads = set()
        for s in expr.free_symbols:
            reads |= self._resolve(self.node_of[s]) if s in self.node_of else {s}
        return reads

    def _resolve(self, node: Node) -> set:
        """What using ``node`` reads: itself, or for an inlined view, what it views."""
        if node in self.alias:
            return {self.alias[node]}
        if not self.inline(node) or node.op in LEAVES:
            return {node}
        reads = self._dims(node)
        for a in node.args:
            reads |= self._resolve(a)
        return reads

    def _dims(self, node: Node) -> set:
        free = set()
        for d in node.shape:
            if isinstance(d, sp.Expr):
                free |= d.free_symbols
        return free & self.dims

    # ------------------------------------------------------------------ naming

    def _name(self) -> None:
        """User names first, then hints (grad_h), then t1, t2, ... in order of appearance."""
        for node in self.order:
            if node.name:
                self.names[node] = node.name
        if not self.inline(self.program.loss):  # a constant loss is written out
            self.names.setdefault(self.program.loss, "loss")
        for pname, g in self.program.grads.items():
            if not self.inline(g):
                self.names.setdefault(
                    g, f"{'hvp' if self.program.vectors else 'grad'}_{pname}"
                )
        for d in self.dims:
            self.names[d] = d.name
        used = set(self.names.values())
        counter = 0
        for st in self.statements:
            if st.target in self.names:
                st.name = self.names[st.target]
                continue
            hint = getattr(st.target, "hint", None)
            if hint and hint not in used:
                name = hint
            else:
                counter += 1
                name = f"t{counter}"
            used.add(name)
            st.name = self.names[st.target] = name

    # ------------------------------------------------------------------ printing

    def code(self, node: Node) -> str:
        """Source for using ``node``: its name, or the inlined view or constant."""
        if node in self.alias:
            return self.names[self.alias[node]]
        if node in self.names:
            return self.names[node]
        if is_const(node):
            return self._print_constant(node)
        if node.op == "map":
            return f"({self._print_expr(self._expr(node))})"
        return PRIMITIVES[node.op].numpy([self.code(a) for a in node.args], node)

    def lines(self, st: Statement, dead: set = frozenset()) -> list[str]:
        shape = self.shape(st.target)
        if st.expr is not None:
            named, shapes = self._named(st.expr)
            left = [shapes[s.name] for s in named.free_symbols if s.name in shapes]
            node = st.target
            natural = broadcast(*node.args) if isinstance(node, Node) else shape
            if broadcast_shapes(*left) != natural:
                # what is left is smaller than the value: t1 - t1 once a CSE temporary
                # and its node print as one name (0.0), or what SymPy left of
                # log_softmax(v) - (v - sum(v)): sums of v only
                text = to_numpy(named, self._ranks(shapes))
                return [f"{st.name} = np.full({format_shape(shape)}, {text})"]
        if st.expr is not None and _large(shape) and not _broadcast_map(st.target):
            uses = Counter()  # of each array, by name or through a view (t1[None][0])
            for s in st.expr.free_symbols:
                for array in self._reads(s):
                    uses[array] += st.expr.count(s)
            owned = {
                self.names[r] for r in dead if self.fresh(r, shape) and uses[r] == 1
            }
            printer = NumPyPrinter(self._ranks(shapes))
            return inplace.lower(named, st.name, printer, shapes, shape, owned)
        if st.expr is not None:
            return [f"{st.name} = {self._print_map(st)}"]
        node = st.target
        if is_const(node):
            return [f"{st.name} = {self._print_constant(node)}"]
        code = PRIMITIVES[node.op].numpy([self.code(a) for a in node.args], node)
        if isinstance(code, str):
            return [f"{st.name} = {code}"]
        base = node.args[0] if node.op == "scatter" and node.attrs[1] else None
        if base in dead and self.fresh(base, node.shape):  # update the base in place
            code[0] = code[0].removesuffix(".copy()")
        return [line.replace("{out}", st.name) for line in code]

    def _print_map(self, st: Statement) -> str:
        text = self._print_expr(st.expr)
        node = st.target
        if isinstance(node, Node) and broadcast(*node.args) != node.shape:
            if node in self.roots:  # returned arrays must own their memory
                return f"np.full({format_shape(node.shape)}, {text})"
            return f"np.broadcast_to({text}, {format_shape(node.shape)})"
        return text

    def _print_expr(self, expr: sp.Expr) -> str:
        named, shapes = self._named(expr)
        return to_numpy(named, self._ranks(shapes))

    def _ranks(self, shapes: dict) -> dict[str, int]:
        """The printer's ranks of named values; -1 for sizes, which are Python ints."""
        return {
            code: -1 if code in self.size_names else len(s)
            for code, s in shapes.items()
        }

    def _named(self, expr: sp.Expr) -> tuple[sp.Expr, dict]:
        """``expr`` over symbols named by the code of their values, and those shapes."""
        names, shapes = {}, {}
        for s in expr.free_symbols:
            target = self.node_of.get(s, s)
            code = self.code(target) if isinstance(target, Node) else self.names[target]
            names[s] = sp.Symbol(code, real=True)
            shapes[code] = self.shape(target)
        return expr.xreplace(names), shapes

    def shape(self, target) -> tuple:
        """The shape of a value (of a CSE temporary: the broadcast of its inputs)."""
        if isinstance(target, Node):
            return target.shape
        if target in self.dims:
            return ()
        if target not in self._temp_shapes:  # memoized: temporaries form a DAG
            expr = self.statement_of[target].expr  # not reads: those see views
            self._temp_shapes[target] = broadcast_shapes(
                *(self.shape(self.node_of.get(s, s)) for s in expr.free_symbols)
            )
        return self._temp_shapes[target]

    def base(self, target):
        """The value ``target`` is a view or another name of (``t3 = X``, ``t3.T``):
        the node or CSE temporary whose memory it shares."""
        while True:
            if isinstance(target, Node) and target.op in VIEWS:
                target = target.args[0]
            elif target in self.alias:
                target = self.alias[target]
            elif target in self.statement_of and self.statement_of[target].alias:
                expr = self.statement_of[target].expr
                target = self.node_of.get(expr, expr)
            else:
                return target

    def fresh(self, target, shape: tuple) -> bool:
        """Whether ``target`` is an array this function allocated, of exactly ``shape``."""
        if target not in self.statement_of or target in self.dims:
            return False
        if self.shape(target) != shape:
            return False
        if self.statement_of[target].alias:
            return False
        return not isinstance(target, Node) or (
            target.op in FRESH
            and not _broadcast_map(target)
            and target.dtype == "float64"
        )

    def _print_constant(self, node: Node) -> str:
        value = node.attrs[0]
        text = literal(value) if value.is_Number else f"({to_numpy(value)})"
        if node.shape == ():
            return text
        if value == 0:
            return f"np.zeros({format_shape(node.shape)})"
        return f"np.full({format_shape(node.shape)}, {text})"

    # ------------------------------------------------------------------ functions

    def needed(self, statements: list[Statement], results: set) -> list[Statement]:
        """The statements that ``results`` depend on, in order (dead ones dropped)."""
        needed = set(results)
        kept = []
        for st in reversed(statements):
            if st.target in needed:
                needed |= st.reads
                kept.append(st)
        return kept[::-1]

    def body(self, statements: list[Statement], keep: set) -> list[str]:
        """The statements' lines; arrays not in ``keep`` may be overwritten after their
        last use (computing the statement that reads them last, in place), except those
        the model names: a reviewer reading ``mu`` should find the mean in it."""
        last = {r: k for k, st in enumerate(statements) for r in st.reads}
        for st in reversed(statements):  # an array lives as long as a view or alias
            view = isinstance(st.target, Node) and st.target.op in VIEWS
            if view or st.alias:  # (forever, if the view is kept: cached, returned)
                end = len(statements) if st.target in keep else last.get(st.target, -1)
                for r in st.reads:
                    last[r] = max(last[r], end)
        local = {  # never overwrite what the caller passed
            st.target
            for st in statements
            if not (isinstance(st.target, Node) and st.target.name)
        }
        readers = Counter(r for st in statements for r in st.reads)
        halves = _slogdet_halves(statements)
        seconds = set(halves.values())
        lines, names, borrowed = [], dict(self.names), set()
        for k, st in enumerate(statements):
            if st in seconds:
                continue  # printed with the other half
            dead = {
                r for r in st.reads if last[r] == k and r in local and r not in keep
            }
            if st in halves:
                sign, logabsdet = sorted(
                    (st, halves[st]), key=lambda s: s.target.op == "logabsdet"
                )
                matrix = self.code(st.target.args[0])
                out = [f"{sign.name}, {logabsdet.name} = np.linalg.slogdet({matrix})"]
            else:
                out = self.lines(st, dead)
            # ``h = t1`` after computing h in place in the dead temporary t1: one name.
            alias = next(
                (a for a in out if re.fullmatch(rf"{st.name} = t\d+", a)), None
            )
            owner = {self.names[r]: r for r in dead}.get(
                alias and alias.split(" = ")[1]
            )
            if owner is not None and readers[owner] == 1 and owner not in borrowed:
                # t1 only ever was h in the making: it is called h from its first line
                name = self.names[owner]
                first = max(
                    i for i, a in enumerate(lines) if a.startswith(f"{name} = ")
                )
                buffer = re.compile(rf"\b{name}\b")
                lines[first:] = [buffer.sub(st.name, a) for a in lines[first:]]
                out = [buffer.sub(st.name, a) for a in out if a is not alias]
            elif owner is not None and _temporary(st.name) and st.target not in keep:
                name = self.names[st.target] = self.names[owner]  # t3 = t1: t1 here
                borrowed.add(st.target)
                target = re.compile(rf"\b{st.name}\b")
                out = [target.sub(name, a) for a in out if a is not alias]
            lines += out
        self.names = names
        return lines

    def op_count(self, backward: bool) -> int:
        total = 0
        for st in self.statements:
            if st.backward == backward:
                total += sp.count_ops(st.expr) if st.expr is not None else 1
        return total


def _slogdet_halves(statements: list[Statement]) -> dict[Statement, Statement]:
    """Pairs of statements computing the sign and the log |det| of one matrix (first ->
    second), so that one np.linalg.slogdet call gives both."""
    first, pairs = {}, {}
    for st in statements:
        if isinstance(st.target, Node) and st.target.op in ("det_sign", "logabsdet"):
            matrix = st.target.args[0]
            if matrix in first and first[matrix].target.op != st.target.op:
                pairs[first.pop(matrix)] = st
            else:
                first[matrix] = st
    return pairs


def _large(shape: tuple) -> bool:
    """Worth computing in place: a symbolic size, or at least a thousand elements."""
    return bool(shape) and (
        any(isinstance(d, sp.Expr) for d in shape) or int(np.prod(shape)) >= 1000
    )


def _broadcast_map(node) -> bool:
    """A map whose result is larger than its arguments (the adjoint of a sum)."""
    return (
        isinstance(node, Node)
        and node.op == "map"
        and broadcast(*node.args) != node.shape
    )


def _sizes_inline(temps: list, reduced: list, dims: set) -> tuple[list, list]:
    """Put temporaries of sizes alone (``1/batch``) back where they are used: free to
    recompute, never worth a cache entry. (``cse(ignore=dims)`` would instead skip every
    subexpression with a size in it, such as ``sqrt(var/d + eps)``.)"""
    sizes: dict[sp.Symbol, sp.Expr] = {}
    kept = []
    for symbol, value in temps:
        value = value.xreplace(sizes)
        if value.free_symbols <= dims:
            sizes[symbol] = value
        else:
            kept.append((symbol, value))
    return kept, [e.xreplace(sizes) for e in reduced]


def _power_chains(temps: list, reduced: list, dims: set) -> tuple[list, list]:
    """Several integer powers of one value as a chain of products, one power from the
    next smaller: with ``x**-3`` and ``x**-4``, ``r = 1 / x``, ``r3 = r * r * r``,
    ``r4 = r3 * r`` (4 array passes, not 7). ``sympy.cse`` cannot share ``x**3`` in ``x**4``.
    """
    exponents: dict[sp.Symbol, set[int]] = {}
    for expr in [e for _, e in temps] + reduced:
        for power in expr.atoms(sp.Pow):
            base, exp = power.as_base_exp()
            if base.is_Symbol and base not in dims and exp.is_Integer:
                exponents.setdefault(base, set()).add(int(exp))
    names = sp.numbered_symbols("_p", real=True)
    chain, subs = [], {}
    for base in sorted(exponents, key=str):
        for sign in (1, -1):
            wanted = sorted(sign * e for e in exponents[base] if sign * e > 0)
            if len(wanted) < 2:
                continue
            unit = base
            if sign < 0:
                unit = subs[1 / base] = next(names)
                chain.append((unit, 1 / base))
            previous, done = unit, 1
            for e in wanted[1:] if wanted[0] == 1 else wanted:
                symbol = subs[base ** (sign * e)] = next(names)
                chain.append((symbol, previous * unit ** (e - done)))
                previous, done = symbol, e
    if not subs:
        return temps, reduced
    temps = [(s, e.xreplace(subs)) for s, e in temps]
    # A temporary that was one of the powers is now a second name for a link: drop it.
    renamed = {s: e for s, e in temps if e.is_Symbol}
    temps = [(s, e.xreplace(renamed)) for s, e in temps + chain if s not in renamed]
    return temps, [e.xreplace(subs).xreplace(renamed) for e in reduced]


def _temporary(name: str) -> bool:
    """A name the generator made up (t3), not one the model or a hint gave."""
    return re.fullmatch(r"t\d+", name) is not None


def _scalar_map(node: Node) -> bool:
    """Arithmetic on scalars (``-grad_loss / batch``): written where it is used."""
    return node.op == "map" and node.shape == () and all(a.ndim == 0 for a in node.args)


def _return(values: dict[str, Node], emitter: Emitter, cached=frozenset()) -> str:
    """A dict literal of results that never alias arguments, the cache or each other.

    Leaves, cached values, views of them and repeated values are copied: a caller who
    edits an output must not change what backward() reads. Constants (zero gradients)
    are written afresh: one may equal a forward value, whose name backward() does not
    have. 0-d results are arrays too (0-d arithmetic gives NumPy scalars or floats).
    """
    items, seen = [], {emitter.base(c) for c in cached}
    for key, node in values.items():
        value = emitter._print_constant(node) if is_const(node) else emitter.code(node)
        base = emitter.base(node)
        if node.shape == ():
            value = f"np.array({value})"
        elif not is_const(node) and (
            getattr(base, "op", None) in LEAVES or base in seen
        ):
            value += ".copy()"
        seen.add(base)
        items.append(f'"{key}": {value}')
    return "{" + ", ".join(items) + "}"


_ONES = re.compile(r"\b(_ONES_(\d+(?:x\d+)?))\b")  # ops._ones: constant vectors of ones


def _unpicked_errors(program) -> str:
    """The NumPy errors an ``sg.where`` may guard against in the branch it does not pick,
    as ``errstate`` keywords ("" for none): NumPy computes both branches, and would warn.
    ``where(x > 0, sqrt(x), 0)``: invalid and divide; ``where(z > 0, z, exp(z) - 1)``:
    overflow, for large z. What counts is each branch and the formulas computed for it
    alone, in the derivatives too: d/dp (x**p) reads log(x) only where x != 0, and the
    second derivative divides by x there.
    """
    programs = [program, program.hvp] if program.hvp else [program]
    exprs, seen = [], set()
    for node in toposort([root for p in programs for root in p.roots()]):
        if node.op == "map":
            for where in node.attrs[0].atoms(sp.Piecewise):
                exprs += [value for value, _ in where.args]
                exprs += _feeding(node, where, seen)
    sizes = set(program.model.dims.values())
    powers = [  # x**-1, sqrt(x): undefined at 0 or below; 1/n for a size n is fine
        p for e in exprs for p in e.atoms(sp.Pow) if not p.base.free_symbols <= sizes
    ]
    partial = (sp.log, ew.log1p, sp.asin, sp.acos, sp.acosh, sp.atanh)
    invalid = any(e.has(*partial) for e in exprs) or any(
        not (p.exp.is_integer and p.exp.is_nonnegative) for p in powers
    )
    growing = [f for e in exprs for f in e.atoms(sp.exp, ew.expm1, sp.cosh, sp.sinh)]
    over = any(  # (exp(-|z|) of a stable sigmoid never overflows)
        not (f.func in (sp.exp, ew.expm1) and f.args[0].is_nonpositive) for f in growing
    ) or any(p.exp.free_symbols for p in powers)
    errors = ["divide", "invalid"] if invalid else []
    return ", ".join(f'{e}="ignore"' for e in errors + ["over"] * over)


MOVES = ("scatter", "concatenate", "sum", "cumsum")  # (the adjoints of rearrangements)


def _feeding(node: Node, where: sp.Piecewise, seen: set) -> list[sp.Expr]:
    """The formulas of the maps upstream of ``where``'s branches in ``node`` (a log
    named with m.let, then picked by sg.where): NumPy computes them everywhere."""
    exprs = []
    values = [value for value, _ in where.args]
    stack = [
        a for k, a in enumerate(node.args) if any(v.has(ew.arg(k)) for v in values)
    ]
    while stack:
        arg = stack.pop()
        if arg.op in ("map", *VIEWS, *MOVES) and id(arg) not in seen:
            seen.add(id(arg))  # (a gradient computed for the branch, moved or summed)
            exprs += [arg.attrs[0]] if arg.op == "map" else []
            stack += arg.args
    return exprs


def _unpack(model) -> tuple[list[str], list[str]]:
    """Lines of ``_unpack`` and the names it returns: arrays then symbolic dims.

    A float array that is not float64 is converted (or refused, if it is not a float).
    Then one test per array: its rank, its fixed sizes, the sizes of dims bound by
    earlier arrays or by its own earlier axes (and for index arrays the dtype kind);
    dims it is first to use are bound after the test. A 0-d
    float array is returned as a NumPy scalar, whose arithmetic skips ufunc dispatch
    (``-2 * a`` in 60 ns, not 600 ns).
    """
    lines, bound = [], []
    for group, arrays in (("params", model.params), ("inputs", model.inputs)):
        for name, node in arrays.items():
            kind = {"int64": "an integer", "bool": "a bool"}.get(node.dtype, "a float")
            new = {d.name for d in node.shape if isinstance(d, sp.Symbol)} - set(bound)
            first = (
                {}
            )  # each dim's first axis: ("n", "n") binds n there, checks the rest
            for k, d in enumerate(node.shape):
                first.setdefault(d, k)
            if new:  # shape[k] is only valid once the rank is known
                tests = [f"{name}.ndim != {node.ndim}"]
                for k, d in enumerate(node.shape):
                    if not (isinstance(d, sp.Symbol) and d.name in new):
                        tests.append(f"{name}.shape[{k}] != {d}")
                    elif first[d] != k:
                        tests.append(f"{name}.shape[{k}] != {name}.shape[{first[d]}]")
            else:
                tests = [f"{name}.shape != {format_shape(node.shape)}"]
            if node.dtype == "int64":
                tests.append(f'{name}.dtype.kind not in "iu"')
            if node.dtype == "bool":
                tests.append(f'{name}.dtype.kind != "b"')
            shown = [
                (
                    f"{d}={{{d}}}"
                    if isinstance(d, sp.Symbol) and d.name not in new
                    else (
                        f"{d}={{{name}.shape[{first[d]}]}}"  # (its repeat, as bound)
                        if isinstance(d, sp.Symbol) and first[d] != k
                        else str(d)
                    )
                )
                for k, d in enumerate(node.shape)
            ]
            shown = f"({shown[0]},)" if node.ndim == 1 else f"({', '.join(shown)})"
            shown = f'f"{shown}"' if "{" in shown else f'"{shown}"'
            lines.append(f'{name} = {group}["{name}"]')
            lines.append(f"if type({name}) is not np.ndarray:")
            lines.append(f'    {name} = _array("{group}", "{name}", {name})')
            if node.dtype == "float64":  # float32 and the like are computed in float64
                lines.append(f'if {name}.dtype.char != "d":')
                lines.append(
                    f'    {name} = _float64("{group}", "{name}", {name}, {shown})'
                )
            lines.append(f"if {' or '.join(tests)}:")
            lines.append(f'    _bad("{group}", "{name}", {name}, {shown}, "{kind}")')
            if node.ndim == 0 and node.dtype == "float64":
                lines.append(f"{name} = {name}[()]")
            for k, d in enumerate(node.shape):
                if isinstance(d, sp.Symbol) and d.name in new and d.name not in bound:
                    lines.append(f"{d.name} = {name}.shape[{k}]")
                    bound.append(d.name)
    for need, where in model.size_requirements():
        wanted = requirement(need)  # n >= 3
        sizes = ", ".join(f"{s}={{{s}}}" for s in sorted(map(str, need.free_symbols)))
        violated = wanted.replace(" >= ", " < ").replace(" != ", " == ")
        lines.append(f"if {violated}:")
        lines.append(
            f'    raise ValueError(f"{sizes}: " + {where + " needs " + wanted!r})'
        )
    return lines, [*model.params, *model.inputs, *bound]


def _init(model) -> list[tuple[str, str]]:
    """PyTorch's nn.Linear and nn.ConvNd init for weights (two axes or more: fan_in is
    the product of all but the first) and the biases after them; zeros otherwise."""
    values, weight = [], None
    for name, node in model.params.items():
        shape = format_shape(node.shape)
        fan_in = None
        if node.ndim >= 2:
            weight = node
        if node.ndim >= 2 or (
            node.ndim == 1 and weight is not None and weight.shape[0] == node.shape[0]
        ):
            fan_in = size(weight.shape[1:])
        if fan_in is None:
            values.append((name, f"np.zeros({shape})"))
            continue
        bound = (
            repr(fan_in**-0.5) if isinstance(fan_in, int) else f"1 / np.sqrt({fan_in})"
        )
        values.append((name, f"rng.uniform(-{bound}, {bound}, {shape})"))
    return values


def _docstring(text: str) -> str:
    text = text.strip()
    if text and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"""{text}"""'
    return repr(text)  # a plain literal: nothing in the doc can end the string early


@factored
def render(program: Program) -> str:
    """The generated module's source, formatted with black."""
    model = program.model
    unit_program = unit_seed(program)  # value_and_grad: grad_loss = 1 folded in
    scalar = Emitter(unit_program)
    unrolled = _unrolled(scalar)  # small fixed sizes: straight-line Python on floats
    numpy_unit = vectorized(unit_program)
    unit = scalar if numpy_unit is unit_program else Emitter(numpy_unit)
    program = vectorized(program)
    emitter = Emitter(program)
    with program.timed("print"):
        grads = set(program.grads.values())
        backward = [st for st in emitter.statements if st.backward]
        backward = emitter.needed(backward, grads)
        cached = set().union(*(st.reads for st in backward))
        cached |= {d for g in grads if is_const(g) for d in emitter._dims(g)}  # zeros
        cached -= {st.target for st in backward} | {program.seed}
        forward = emitter.needed(
            [st for st in emitter.statements if not st.backward],
            {program.loss, *program.outputs.values(), *cached},
        )
        cache_names = sorted(emitter.names[r] for r in cached)
        fused = unit.needed(
            unit.statements, {unit.program.loss, *unit.program.grads.values()}
        )
        unpack, unpacked = _unpack(model)
        context = dict(
            version=__version__,
            model=model.name,
            digest=model.digest(),
            ops_forward=emitter.op_count(backward=False),
            ops_backward=emitter.op_count(backward=True),
            docstring=_docstring(
                model.doc or f"Loss and gradients of model {model.name}."
            ),
            params=_shapes(model.params),
            inputs=_shapes(model.inputs),
            outputs=repr(tuple(model.outputs)),
            output_names=list(model.outputs),
            unpack=unpack,
            unpacked=", ".join(unpacked),
            forward=emitter.body(
                forward, {program.loss, *program.outputs.values(), *cached}
            ),
            forward_return=_return(
                {"loss": program.loss, **program.outputs}, emitter, cached
            ),
            cache="{" + ", ".join(f'"{n}": {n}' for n in cache_names) + "}",
            cache_names=cache_names,
            backward=emitter.body(backward, grads),
            grads_return=_return(program.grads, emitter, cached),
            value_and_grad=unit.body(
                fused, {unit.program.loss, *unit.program.grads.values()}
            ),
            loss=f"np.array({unit.code(unit.program.loss)})",  # 0-d, as forward's
            unit_grads_return=_return(unit.program.grads, unit),
            init_dims=sorted(
                {d.name for n in model.params.values() for d in _symbols(n.shape)}
            ),
            init=_init(model),
            hvp=_hvp(program.hvp) if program.hvp else None,
            unrolled=unrolled,
        )
        numbers: dict = {}  # forward and backward share names through the cache
        for key in (
            "forward", "forward_return", "cache", "cache_names", "backward", "grads_return"
        ):  # fmt: skip
            context[key] = _renumber(context[key], numbers)
        numbers = {}
        for key in ("value_and_grad", "loss", "unit_grads_return"):
            context[key] = _renumber(context[key], numbers)
        for f in unrolled:  # its t3_0_1 is value_and_grad's t3 at [0, 1]
            f.lines = _renumber(f.lines, dict(numbers))
        numbers = {}
        for key in ("lines", "returns") if context["hvp"] else ():
            context["hvp"][key] = _renumber(context["hvp"][key], numbers)
        bodies = ("forward", "backward", "value_and_grad")
        lines = [line for key in bodies for line in context[key]]
        lines += context["hvp"]["lines"] if context["hvp"] else []
        text = "\n".join(lines)
        scalar_text = "\n".join(line for f in unrolled for line in f.lines)
        # The module's helpers, each defined only if called
        context["pair_scatter"] = "_pair_scatter(" in text
        context["add_rows"] = "_add_rows(" in text
        # NumPy has no erf: the module defines _erf/_erfc (math's, vectorized) if used
        context["erf"] = [f for f in ("erf", "erfc") if f"_{f}(" in text]
        # nor lgamma, digamma, trigamma: the module gets the source of those it calls
        called, context["gamma"] = text + scalar_text, []
        for name, fn in special.HELPERS.items():
            if f"_{name}(" in called:
                context["gamma"].append(inspect.getsource(fn))
                called += context["gamma"][-1]  # the helpers it calls
        # unrolled max/min of several values (MathPrinter)
        context["nan_checked"] = [f for f in ("max", "min") if f"_{f}(" in scalar_text]
        context["quiet"] = _unpicked_errors(program)
        context["ones"] = sorted(
            (name, f"({size.replace('x', ', ')})" if "x" in size else size)
            for name, size in set(_ONES.findall(text))
        )
        source = _environment().get_template("module.py.j2").render(context)
    with program.timed("black"):
        return _black(source)


def _black(source: str) -> str:
    """One pass of black. ``black.format_str`` makes a second pass over any source the
    first changed, for trailing commas that a first pass adds inside optional parentheses;
    generated code has none of those cases (the tests check that the result is black's
    fixed point), and the second pass doubled the time of the slowest step of a build.
    """
    format_once = getattr(black, "_format_str_once", black.format_str)
    return format_once(source, mode=black.Mode())


_TEMPORARY = re.compile(r"\bt(\d+)(?=\b|_\d)")  # t3, and t3_0_1 in unrolled code


def _renumber(values, numbers: dict):
    """``values`` (a line, or lists of them) with temporaries renamed t1, t2, ... in order
    of first appearance, continuing ``numbers`` (old number -> new): in-place reuse and
    CSE leave gaps and names out of order (t93 on a function's third line)."""
    if not isinstance(values, str):
        return [_renumber(v, numbers) for v in values]

    def new(match: re.Match) -> str:
        return f"t{numbers.setdefault(match.group(1), len(numbers) + 1)}"

    return _TEMPORARY.sub(new, values)


def _hvp(program: Program) -> dict:
    """Template context of hvp(): the Hessian-vector products' statements."""
    emitter = Emitter(vectorized(program))
    program = emitter.program
    products = set(program.grads.values())
    statements = emitter.needed(emitter.statements, products)
    return dict(
        vectors=[(name, v.name) for name, v in program.vectors.items()],
        lines=emitter.body(statements, products),
        returns=_return(program.grads, emitter),
    )


# --------------------------------------------------------------------- unrolled (unroll.py)


def _unrolled(unit: Emitter) -> list:
    """value_and_grad expanded per element at the model's small fixed sizes."""
    from . import unroll  # noqa: PLC0415 - unroll.py imports this module

    program = unit.program
    size_sets = list(unroll.size_sets(program.model, unit))
    if not size_sets:  # (then the build line shows no unroll phase)
        return []
    with program.timed("unroll"):
        fused = unit.needed(unit.statements, {program.loss, *program.grads.values()})
        return [unroll.unroll(unit, fused, sizes) for sizes in size_sets]


# --------------------------------------------------------------------- helpers


def _symbols(shape) -> list[sp.Symbol]:
    return [d for d in shape if isinstance(d, sp.Symbol)]


def _shapes(arrays: dict[str, Node]) -> str:
    """``{"x": ("batch", 3)}``: symbolic dims as strings, as the contract says."""
    shapes = {
        name: tuple(str(d) if isinstance(d, sp.Expr) else d for d in node.shape)
        for name, node in arrays.items()
    }
    return repr(shapes)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in TEMPLATES]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and ``os.replace``: readers never see half a module."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        # mkstemp gives 0o600: a rebuilt file keeps its mode, a new one gets open()'s
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            umask = os.umask(0o022)  # the only way to read the umask; restored at once
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
