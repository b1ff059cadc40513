"""Scalar-unrolled ``value_and_grad`` for small fixed sizes: straight-line Python on floats.

For a handful of numbers every NumPy call costs ~0.5 us of overhead, far more than the
arithmetic; plain Python on floats does the arithmetic in ~10-30 ns an operation. So for
the size sets a model asks for (``m.unroll(batch=1)``), and for models without symbolic
dims whose arrays are all small (see ``AUTO_ELEMENTS``), the generated module gets one
more function: the statements of the vectorized ``value_and_grad`` (the ``Emitter`` of
``unit_seed(program)``), expanded element by element at those sizes:

- maps: the statement's SymPy formula per element, with NumPy broadcasting, printed by
  ``printer.MathPrinter``; sums, matmuls, dot products and maxima: per-element sums;
- views (index, transpose, reshape): index arithmetic at compile time, no code;
- gathers and ``take_along_axis`` with runtime index arrays: Python list lookups;
  scatters: static sums for slices, ``g[i_0][1] += v`` for index arrays.

Arguments are unpacked with ``.tolist()`` (one C call for the whole array) into locals
named after the model (``W1_0_1`` is ``W1[0, 1]``); results are built with ``np.array``.
Expanding per element is only ever done at small concrete sizes, so it costs
milliseconds; the vectorized code, whose compile time is flat in the sizes, is unchanged
and runs for every other size.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import sympy as sp

from .codegen import LEAVES, VIEWS
from .ir import Node, format_shape
from .model import ModelError
from .ops import LINALG, along_shape, concatenated_at, is_const, scatter_updates
from .printer import MathPrinter

# A model without symbolic dims is unrolled automatically when no array in its
# value_and_grad (parameters, inputs, intermediates, gradients) has more than this many
# elements: then each NumPy call would do little more than its ~0.5 us of overhead.
AUTO_ELEMENTS = 32
# Explicit m.unroll(...) sizes: refuse when the values computed plus the values they
# read exceed this (the function would be tens of thousands of lines; 10_000 takes
# seconds to expand and format).
MAX_WORK = 10_000

Index = tuple[int, ...]


class UnrollError(ModelError):
    """An unroll size set cannot be expanded (too large for straight-line code)."""


@dataclass
class Unrolled:
    """One straight-line function of the generated module."""

    name: str  # _value_and_grad_batch_1
    sizes: dict[str, int]  # {"batch": 1}; {} when the model has no symbolic dims
    args: list[str]  # the arrays _unpack returns, passed in order
    lines: list[str] = field(default_factory=list)  # the body

    @property
    def condition(self) -> str:
        """When value_and_grad dispatches here: ``batch == 1 and n == 10``."""
        return " and ".join(f"{k} == {v}" for k, v in self.sizes.items()) or "True"

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.sizes.items()) or "its fixed sizes"


def size_sets(model, emitter) -> list[dict[str, int]]:
    """The size sets to unroll: the model's ``m.unroll`` sets, or ``[{}]`` for a small
    model without symbolic dims (every array at most ``AUTO_ELEMENTS`` elements)."""
    sizes = model.unroll_sizes()
    if sizes or model.dims:
        return sizes
    nodes = [st.target for st in emitter.statements if isinstance(st.target, Node)]
    nodes += [*model.params.values(), *model.inputs.values()]
    small = all(_count(n.shape) <= AUTO_ELEMENTS for n in nodes)
    if (
        small
        and not _without_scalar_form(emitter.statements)  # (they stay in NumPy)
        and _Expander(emitter, {}).work(emitter.statements) <= MAX_WORK
    ):
        return [{}]
    return []  # (many small arrays can still make too long a function)


def unroll(emitter, statements: list, sizes: dict[str, int]) -> Unrolled:
    """The function computing ``statements`` (value_and_grad's) at ``sizes``."""
    model = emitter.program.model
    suffix = "_".join(f"{k}_{v}" for k, v in sizes.items()) or "unrolled"
    args = [*model.params, *model.inputs]
    out = Unrolled(f"_value_and_grad_{suffix}", dict(sizes), args)
    if whole := _without_scalar_form(statements):
        raise UnrollError(
            f"model {model.name!r} cannot be unrolled at {out.label}: "
            f"{whole[0].describe()} ({WHOLE_ARRAY[whole[0].op]}) has no scalar "
            "form; remove m.unroll"
        )
    expander = _Expander(emitter, sizes)
    if expander.work(statements) > MAX_WORK:
        raise UnrollError(
            f"model {model.name!r} is too large to unroll at {out.label} (more than "
            f"{MAX_WORK} values to compute and read); use smaller m.unroll sizes"
        )
    out.lines = expander.function(statements)
    return out


# Functions of whole arrays, with no per-element formula to expand: they stay in NumPy.
WHOLE_ARRAY = dict.fromkeys(LINALG, "np.linalg") | {"argsort": "a sort"}


def _without_scalar_form(statements: list) -> list[Node]:
    return [
        st.target
        for st in statements
        if isinstance(st.target, Node) and st.target.op in WHOLE_ARRAY
    ]


def _count(shape) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def _indices(shape) -> list[Index]:
    return list(itertools.product(*(range(d) for d in shape)))


def _suffix(idx: Index, shape: tuple) -> str:
    """``_0_1``; zero-padded (``_07``) where an axis has 10 or more elements, so that
    names sort in index order (SymPy prints the terms of a sum sorted by name)."""
    return "".join(f"_{i:0{len(str(d - 1))}}" for i, d in zip(idx, shape, strict=True))


def _broadcast_index(idx: Index, shape: tuple) -> Index:
    """The element of an operand of ``shape`` that NumPy broadcasting pairs with ``idx``."""
    idx = idx[len(idx) - len(shape) :] if shape else ()
    return tuple(0 if d == 1 else i for i, d in zip(idx, shape, strict=True))


def _index_source(spec: tuple, shape: tuple, idx: Index) -> Index:
    """``a[spec][idx]`` is ``a[result]``: an element of a basic-index view."""
    source, k, axis = [], 0, 0
    for entry in spec:
        if entry[0] == "new":
            k += 1
            continue
        dim = shape[axis]
        axis += 1
        if entry[0] == "int":
            source.append(entry[1] % dim)
        else:
            source.append(range(*slice(*entry[1:]).indices(dim))[idx[k]])
            k += 1
    return tuple(source)


def _view_shape(spec: tuple, shape: tuple) -> tuple[int, ...]:
    """The shape of ``a[spec]`` for ``a`` of ``shape``."""
    out, axis = [], 0
    for entry in spec:
        if entry[0] == "new":
            out.append(1)
            continue
        if entry[0] == "slice":
            out.append(len(range(*slice(*entry[1:]).indices(shape[axis]))))
        axis += 1
    return tuple(out)


def _pattern(shape: tuple, names: dict) -> str:
    """A nested unpacking target: ``(a_0_0, a_0_1), (a_1_0, a_1_1)``."""

    def build(prefix: Index, top: bool) -> str:
        if len(prefix) == len(shape):
            return names[prefix]
        parts = [build(prefix + (i,), False) for i in range(shape[len(prefix)])]
        text = ", ".join(parts) + ("," if len(parts) == 1 else "")
        return text if top else f"({text})"

    return build((), True)


def _nested(shape: tuple) -> str:
    """``[[{}, {}], [{}, {}]]``: a list literal with a placeholder per element."""
    if not shape:
        return "{}"
    return "[" + ", ".join([_nested(shape[1:])] * shape[0]) + "]"


def _replaced(expr: sp.Expr, rule: dict) -> sp.Expr:
    """``expr.xreplace(rule)``, with the changed nodes rebuilt by ``_rebuilt``."""

    def walk(e: sp.Basic) -> tuple[sp.Basic, bool]:
        if e in rule:
            return rule[e], True
        args, changed = [], False
        for a in e.args:
            new, hit = walk(a) if isinstance(a, sp.Basic) else (a, False)
            args.append(new)
            changed |= hit
        return (_rebuilt(e.func, args), True) if changed else (e, False)

    return walk(expr)[0]


def _rebuilt(func, args: list) -> sp.Expr:
    """``func(*args)``, skipping SymPy's evaluation where it provably changes nothing.

    Evaluation asks assumptions of the arguments (zero? infinite?), which SymPy cannot
    decide for a large formula in real symbols and tries for milliseconds, every time
    an inlined value rebuilds a sigmoid ``1/(1 + exp(Min(709, -x)))``:

    - ``exp(m)``, ``m`` a symbolic Min or Max with a nonzero number among its
      arguments: exp simplifies only a zero (or a number, log, sum or product), and
      each assumption of a Min or Max holds only if it holds for all its arguments;
    - ``s**n``, ``s`` a symbolic sum without ``I``, ``n`` an integer other than 0 and
      1: Add's ``_eval_power`` simplifies only numbers and a literal ``a + I*b``.

    And one where it would change the value: ``exp(c + s)`` with a float ``c`` (an
    element padded with -1e30, shifted by the max) is split into ``exp(c) * exp(s)``,
    ``0.0 * exp(-s)``, which overflows where the whole is finite.
    """
    if func is sp.exp and (
        _never_zero(args[0])
        or type(args[0]) is sp.Add
        and any(a.is_Float for a in args[0].args)
    ):
        return sp.exp(args[0], evaluate=False)
    if func is sp.Pow and type(args[0]) is sp.Add and args[1].is_Integer:
        base, exp = args
        if exp not in (0, 1) and base.free_symbols and not base.has(sp.I):
            return sp.Pow(base, exp, evaluate=False)
    return func(*args)


def _never_zero(m: sp.Expr) -> bool:
    """A symbolic Min or Max with a nonzero number among its arguments."""
    return (
        isinstance(m, sp.Min | sp.Max)
        and any(a.is_Number and a != 0 for a in m.args)
        and bool(m.free_symbols)
    )


@dataclass
class _Line:
    """A line of the function; its ``{}`` placeholders are filled with printed ``exprs``.

    A line that defines one local from one formula (``define``) is left out when the
    local is used exactly once: the formula is written where it is used instead.
    """

    text: str
    exprs: list = field(default_factory=list)
    define: sp.Symbol | None = None
    keep: bool = False  # a value the model names (h, r2) or the loss: always a line


class _Expander:
    """Expands value_and_grad's statements element by element, then prints them."""

    def __init__(self, emitter, sizes: dict[str, int]):
        self.em = emitter
        dims = emitter.program.model.dims
        self.dims = {dims[k]: sp.Integer(v) for k, v in sizes.items()}
        self.values: dict[object, dict[Index, sp.Expr]] = {}
        self.lists: dict[object, str] = {}  # runtime nested lists of values
        self.prologue: dict[Node, list[_Line]] = {}  # arguments unpacked into locals
        self.lines: list[_Line] = []
        # The function's arguments and the globals it uses; locals get fresh names.
        self.used = {*emitter.program.model.params, *emitter.program.model.inputs}
        self.used |= {"np", "math", "min", "max", "_min", "_max", "abs", "float", "int"}
        self.out: list[str] = []
        self.target = ""  # the line printed: its hoisted temporaries are named after it
        self._temp_shapes: dict[sp.Symbol, tuple[int, ...]] = {}
        self.printer = MathPrinter(hoist=self._hoist)

    # ------------------------------------------------------------------ the function

    def work(self, statements: list) -> int:
        """Values the function computes and reads: its size, before expanding it."""
        model = self.em.program.model
        total = sum(
            _count(self.shape(n))
            for n in [*model.params.values(), *model.inputs.values()]
        )
        for st in statements:
            total += _count(self.shape(st.target))
            if isinstance(st.target, Node) and st.expr is None:
                total += sum(_count(self.shape(a)) for a in st.target.args)
        return total

    def function(self, statements: list) -> list[str]:
        for st in statements:
            self._statement(st)
        program = self.em.program
        loss = self.elem(program.loss, ())
        if not (loss.is_Symbol or loss.is_Number):  # named, as in the NumPy code
            local = self._symbol(self._fresh("loss"))
            self.lines.append(_Line(f"{local.name} = {{}}", [loss], local, keep=True))
            loss = local
        exprs = [loss]
        grads = []
        for name, node in program.grads.items():
            text, values = self._array(node)
            grads.append(f'"{name}": {text}')
            exprs += values
        ret = "return np.array({}), {{" + ", ".join(grads) + "}}"
        args = [*program.model.params.values(), *program.model.inputs.values()]
        prologue = [line for leaf in args for line in self.prologue.get(leaf, [])]
        return self._render([*prologue, *self.lines, _Line(ret, exprs)])

    def _array(self, node: Node) -> tuple[str, list]:
        """A fresh float64 array of the node's values: source and its placeholders."""
        node = self._resolve(node)
        shape = self.shape(node)
        if node in self.lists:
            return f"np.array({self.lists[node]})", []
        values = [self.elem(node, idx) for idx in _indices(shape)]
        if all(v == 0 for v in values):
            return f"np.zeros({format_shape(shape)})", []
        if not shape:
            return "np.array({})", values
        items = ", ".join(["{}"] * len(values))
        if len(shape) == 1:
            return f"np.array([{items}])", values
        return f"np.array([{items}]).reshape({format_shape(shape)})", values

    def _render(self, lines: list[_Line]) -> list[str]:
        """Print the lines; a local used once is written into its use instead."""
        uses: dict[sp.Symbol, int] = {}
        for line in lines:
            for e in line.exprs:
                for sub in sp.preorder_traversal(e):  # (count() walks once per name)
                    if sub.is_Symbol:
                        uses[sub] = uses.get(sub, 0) + 1
        inline: dict[sp.Symbol, sp.Expr] = {}
        self.out = []
        for line in lines:
            exprs = [
                _replaced(e, inline) if inline and e.free_symbols & inline.keys() else e
                for e in line.exprs
            ]
            if line.define is not None and not line.keep:
                count = uses.get(line.define, 0)
                if count <= 1:
                    if count:
                        inline[line.define] = exprs[0]
                    continue
            self.target = line.define.name if line.define is not None else "u"
            texts = [self._print(e) for e in exprs]
            self.out.append(line.text.format(*texts))
        return self.out

    # ------------------------------------------------------------------ values

    def shape(self, target) -> tuple[int, ...]:
        """Concrete shape of a node or CSE temporary (the broadcast of its operands)."""
        if isinstance(target, Node):
            return tuple(int(sp.sympify(d).xreplace(self.dims)) for d in target.shape)
        if target not in self._temp_shapes:  # memoized: temporaries form a DAG
            expr = self.em.statement_of[target].expr
            operands = sorted(expr.free_symbols - set(self.dims), key=str)
            shapes = [self.shape(self._operand(s)) for s in operands]
            ndim = max((len(s) for s in shapes), default=0)
            padded = [(1,) * (ndim - len(s)) + s for s in shapes]
            self._temp_shapes[target] = tuple(
                0 if 0 in dims else max(dims) for dims in zip(*padded, strict=True)
            )
        return self._temp_shapes[target]

    def _operand(self, symbol):
        """What a symbol of a printed formula stands for: a node or a CSE temporary."""
        return self.em.node_of.get(symbol, symbol)

    def _resolve(self, node):
        while isinstance(node, Node) and node in self.em.alias:
            node = self.em.alias[node]
        return node

    def elem(self, target, idx: Index) -> sp.Expr:
        """The value of one element: a local, a number or a small expression."""
        target = self._resolve(target)
        if target not in self.values:
            if target in self.lists:
                self._unpack(target, self.lists[target], self.lines)
            elif isinstance(target, Node):
                self._node(target)
            else:
                raise AssertionError(f"{target} used before it is computed")
        return self.values[target][idx]

    def _node(self, node: Node) -> None:
        """Values of a node that is no statement: leaves, views, constants, scalars."""
        shape = self.shape(node)
        if node.op in LEAVES:
            self._unpack(
                node, f"{node.name}.tolist()", self.prologue.setdefault(node, [])
            )
        elif is_const(node):
            value = node.attrs[0].xreplace(self.dims)
            self.values[node] = dict.fromkeys(_indices(shape), value)
        elif node.op in VIEWS:
            self.values[node] = {
                idx: self.elem(node.args[0], self._view_source(node, idx))
                for idx in _indices(shape)
            }
        else:  # arithmetic on scalars, written where it is used in the NumPy code
            self._compute(node, self.em.names.get(node) or "s")

    def _view_source(self, node: Node, idx: Index) -> Index:
        source_shape = self.shape(node.args[0])
        if node.op == "transpose":
            source = [0] * len(idx)
            for k, p in enumerate(node.attrs[0]):
                source[p] = idx[k]
            return tuple(source)
        if node.op == "windows":  # position idx[-1] of window idx[axis]
            axis = node.attrs[0]
            return idx[:axis] + (idx[axis] + idx[-1],) + idx[axis + 1 : -1]
        if node.op == "reshape":
            flat = 0
            for i, d in zip(idx, self.shape(node), strict=True):
                flat = flat * d + i
            source = []
            for d in reversed(source_shape):
                flat, i = divmod(flat, d)
                source.append(i)
            return tuple(reversed(source))
        return _index_source(node.attrs[0], source_shape, idx)

    def _unpack(self, node, source: str, lines: list[_Line]) -> None:
        """``(a_0_0, a_0_1), (a_1_0, a_1_1) = source``: elements into locals."""
        shape = self.shape(node)
        integer = node.dtype == "int64"
        if not shape and node.op in LEAVES:
            name = node.name  # a 0-d argument becomes the Python number itself
            lines.append(_Line(f"{name} = {'int' if integer else 'float'}({name})"))
            self.values[node] = {(): self._symbol(name, integer)}
            return
        base = node.name if node.op in LEAVES else self.em.names[node]
        names = {i: self._fresh(base + _suffix(i, shape)) for i in _indices(shape)}
        self.values[node] = {i: self._symbol(n, integer) for i, n in names.items()}
        lines.append(_Line(f"{_pattern(shape, names)} = {source}"))

    def _list(self, target) -> str:
        """A local holding ``target``'s values as nested Python lists (runtime lookups)."""
        target = self._resolve(target)
        if target not in self.lists:
            if isinstance(target, Node) and target.op in LEAVES:
                name = self._fresh(f"{target.name}_list")
                line = _Line(f"{name} = {target.name}.tolist()")
                self.prologue.setdefault(target, []).insert(0, line)
            else:
                shape = self.shape(target)
                values = [self.elem(target, idx) for idx in _indices(shape)]
                base = self.em.names.get(target) or "t"
                name = self._fresh(f"{base}_list")
                self.lines.append(_Line(f"{name} = {_nested(shape)}", values))
            self.lists[target] = name
        return self.lists[target]

    # ------------------------------------------------------------------ statements

    def _statement(self, st) -> None:
        target = st.target
        if target in self.values or target in self.lists:
            return
        if st.expr is None:
            self._compute(target, st.name)
            return
        shape = self.shape(target)
        keep = isinstance(target, Node) and (
            bool(target.name) or target is self.em.program.loss
        )
        self.values[target] = {
            idx: self._store(st.name, idx, shape, self._map(st.expr, idx), keep)
            for idx in _indices(shape)
        }

    def _map(self, expr: sp.Expr, idx: Index) -> sp.Expr:
        """One element of a formula, with NumPy broadcasting of its operands."""
        subs = {}
        for s in sorted(expr.free_symbols, key=str):  # a fixed order of first uses
            if s in self.dims:
                subs[s] = self.dims[s]
                continue
            operand = self._operand(s)
            subs[s] = self.elem(operand, _broadcast_index(idx, self.shape(operand)))
        return _replaced(expr, subs)

    def _compute(self, node: Node, name: str) -> None:
        shape = self.shape(node)
        keep = bool(node.name) or node is self.em.program.loss
        if node.op == "map":  # a scalar formula written inline in the NumPy code
            expr = self.em._expr(node)
            self.values[node] = {
                idx: self._store(name, idx, shape, self._map(expr, idx), keep)
                for idx in _indices(shape)
            }
        elif is_const(node) or node.op in VIEWS:
            self._node(node)
        elif node.op in ("gather", "take_along_axis"):
            self._lookup(node, name, shape)
        elif node.op == "scatter":
            self._scatter(node, name, shape)
        else:
            reduce = getattr(self, f"_{node.op}", None)
            if reduce is None:
                raise UnrollError(f"cannot unroll {node.op} in {node.describe()}")
            self.values[node] = {
                idx: self._store(name, idx, shape, reduce(node, idx), keep)
                for idx in _indices(shape)
            }

    def _matmul(self, node: Node, idx: Index) -> sp.Expr:
        a, b = node.args
        sa, sb = self.shape(a), self.shape(b)
        inner = sa[-1]
        if len(sa) == 1 and len(sb) == 1:
            pairs = [((k,), (k,)) for k in range(inner)]
        elif len(sa) == 1:  # (k,) @ (..., k, m)
            bb = _broadcast_index(idx[:-1], sb[:-2])
            pairs = [((k,), (*bb, k, idx[-1])) for k in range(inner)]
        elif len(sb) == 1:  # (..., n, k) @ (k,)
            ba = _broadcast_index(idx[:-1], sa[:-2])
            pairs = [((*ba, idx[-1], k), (k,)) for k in range(inner)]
        else:
            ba, bb = _broadcast_index(idx[:-2], sa[:-2]), _broadcast_index(
                idx[:-2], sb[:-2]
            )
            pairs = [((*ba, idx[-2], k), (*bb, k, idx[-1])) for k in range(inner)]
        return sp.Add(*(self.elem(a, p) * self.elem(b, q) for p, q in pairs))

    def _reduced(self, node: Node, idx: Index) -> list[sp.Expr]:
        """The elements of the argument that reduce into element ``idx``."""
        (a,) = node.args
        axes, keepdims = node.attrs
        kept = [k for k in range(a.ndim) if k not in axes]
        if keepdims:
            idx = tuple(idx[k] for k in kept)
        return [
            self.elem(a, source)
            for source in _indices(self.shape(a))
            if tuple(source[k] for k in kept) == idx
        ]

    def _concatenate(self, node: Node, idx: Index) -> sp.Expr:
        axis = node.attrs[0]
        for i in reversed(range(len(node.args))):
            start = int(sp.sympify(concatenated_at(node, i)).subs(self.dims))
            if idx[axis] >= start:
                shifted = idx[:axis] + (idx[axis] - start,) + idx[axis + 1 :]
                return self.elem(node.args[i], shifted)
        raise AssertionError(idx)

    def _cumsum(self, node: Node, idx: Index) -> sp.Expr:
        axis, reverse = node.attrs
        n = self.shape(node)[axis]
        span = range(idx[axis], n) if reverse else range(idx[axis] + 1)
        return sp.Add(
            *(
                self.elem(node.args[0], idx[:axis] + (k,) + idx[axis + 1 :])
                for k in span
            )
        )

    def _eye(self, node: Node, idx: Index) -> sp.Expr:
        return sp.Float(1.0) if idx[1] - idx[0] == node.attrs[0] else sp.Float(0.0)

    def _sum(self, node: Node, idx: Index) -> sp.Expr:
        return sp.Add(*self._reduced(node, idx))

    def _max(self, node: Node, idx: Index) -> sp.Expr:
        return sp.Max(*self._reduced(node, idx))

    def _min(self, node: Node, idx: Index) -> sp.Expr:
        return sp.Min(*self._reduced(node, idx))

    def _dot(self, node: Node, idx: Index) -> sp.Expr:
        a, b = node.args
        return sp.Add(
            *(self.elem(a, k) * self.elem(b, k) for k in _indices(self.shape(a)))
        )

    def _lookup(self, node: Node, name: str, shape: tuple) -> None:
        """Gathers at runtime indices: ``t1_0_0, t1_0_1 = pos_list[i_0]``."""
        source, index = node.args
        table = self._list(source)
        values = {}
        if node.op == "gather":
            ishape = self.shape(index)
            tail = self.shape(source)[1:]
            for p in _indices(ishape):
                names = {
                    c: self._fresh(name + _suffix(p + c, shape)) for c in _indices(tail)
                }
                at = self._at(self.elem(index, p))
                target = f"{_pattern(tail, names)} = " if names else ""  # (rows of 0)
                self.lines.append(_Line(f"{target}{table}[{at}]"))
                values.update({p + c: self._symbol(n) for c, n in names.items()})
        else:
            axis, ishape = node.attrs[0], self.shape(index)
            for p in _indices(shape):
                path = [str(i) for i in p]
                path[axis] = self._at(self.elem(index, _broadcast_index(p, ishape)))
                local = self._fresh(name + _suffix(p, shape))
                at = "".join(f"[{i}]" for i in path)
                self.lines.append(_Line(f"{local} = {table}{at}"))
                values[p] = self._symbol(local)
        self.values[node] = values

    def _scatter(self, node: Node, name: str, shape: tuple) -> None:
        """Static contributions are summed here; runtime-indexed ones update a list."""
        kinds, has_base = node.attrs
        static = {idx: [] for idx in _indices(shape)}
        if has_base:
            for idx in static:
                static[idx].append(self.elem(node.args[0], idx))
        runtime = []  # (path of printed indices, value)
        for kind, value, *index in scatter_updates(node):
            vshape = self.shape(value)  # values broadcast against what they update

            def update(k, vshape=vshape, value=value):
                return self.elem(value, _broadcast_index(k, vshape))

            if kind[0] == "slice":
                sign = -1 if kind[-1] == "-" else 1
                for k in _indices(_view_shape(kind[1], shape)):
                    static[_index_source(kind[1], shape, k)].append(sign * update(k))
                continue
            ishape = self.shape(index[0])
            picked = (
                ishape if kind[0] == "rows" else along_shape(shape, kind[1], ishape)
            )
            for p in _indices(picked):
                at = self._at(self.elem(index[0], _broadcast_index(p, ishape)))
                if kind[0] == "rows":
                    for c in _indices(shape[1:]):
                        runtime.append(([at, *map(str, c)], update(p + c)))
                else:
                    path = [str(i) for i in p]
                    path[kind[1]] = at
                    runtime.append((path, update(p)))
        values = {
            idx: self._store(name, idx, shape, sp.Add(*terms), False)
            for idx, terms in static.items()
        }
        if not runtime:
            self.values[node] = values
            return
        table = self._fresh(name)
        self.lines.append(
            _Line(f"{table} = {_nested(shape)}", [values[i] for i in _indices(shape)])
        )
        for path, value in runtime:
            if value == 0:
                continue
            op = "+="
            if value.could_extract_minus_sign():
                op, value = "-=", -value
            at = "".join(f"[{i}]" for i in path)
            self.lines.append(_Line(f"{table}{at} {op} {{}}", [value]))
        self.lists[node] = table

    # ------------------------------------------------------------------ printing

    def _store(
        self, name: str, idx: Index, shape: tuple, value: sp.Expr, keep: bool
    ) -> sp.Expr:
        """A local for ``value``, unless it is a name, a number or a negated name."""
        if value.is_Symbol or value.is_Number:
            return value
        if value.is_Mul and len(value.args) == 2 and value.args[0] == -1:
            if value.args[1].is_Symbol:
                return value
        local = self._symbol(self._fresh(name + _suffix(idx, shape)))
        self.lines.append(_Line(f"{local.name} = {{}}", [value], local, keep))
        return local

    def _print(self, value: sp.Expr) -> str:
        return value.name if value.is_Symbol else self.printer.doprint(value)

    def _at(self, value: sp.Expr) -> str:
        """A list index: a local holding a runtime index, or an int."""
        return value.name if value.is_Symbol else str(int(value))

    def _hoist(self, text: str) -> str:
        """Assign a subexpression that a conditional needs twice to a local."""
        local = self._fresh(f"{self.target}_arg")
        self.out.append(f"{local} = {text}")
        return local

    def _fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_v{k}"
        self.used.add(name)
        return name

    @staticmethod
    def _symbol(name: str, integer: bool = False) -> sp.Symbol:
        if integer:
            return sp.Symbol(name, integer=True)
        return sp.Symbol(name, real=True)
