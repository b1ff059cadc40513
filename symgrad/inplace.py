"""An elementwise formula as in-place NumPy calls: one buffer instead of a temporary per op.

``h = np.tanh(b1 + t1)`` allocates two arrays; when ``t1`` is dead afterwards,

    t1 += b1
    h = np.tanh(t1, out=t1)

allocates none. For large arrays that saves the allocation, the page faults of fresh
memory and the peak memory of the temporaries, as careful hand-written NumPy does.
Subexpressions smaller than the result (scalars, rows being broadcast) are printed as
ordinary expressions; the formula's own full-size values are computed into a buffer that
is either a dead array of the same shape (``owned``) or freshly allocated once.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

from .ir import broadcast_shapes
from .printer import NumPyPrinter, coefficient_into_sum, mask

UFUNCS = {
    sp.exp: "exp", expm1: "expm1", sp.log: "log", log1p: "log1p", sp.sin: "sin",
    sp.cos: "cos", sp.tan: "tan", sp.sinh: "sinh", sp.cosh: "cosh", sp.tanh: "tanh",
    sp.asin: "arcsin", sp.acos: "arccos", sp.atan: "arctan", sp.Abs: "abs",
    sp.sign: "sign",
}  # fmt: skip


class InPlace:
    """Lowers one formula; ``shapes`` maps printed names to shapes (scalars absent)."""

    def __init__(
        self, printer: NumPyPrinter, shapes: dict, shape: tuple, owned: set[str]
    ):
        self.printer, self.shapes, self.shape, self.owned = (
            printer,
            shapes,
            shape,
            owned,
        )
        self.lines: list[str] = []
        self.fresh = 0

    def full(self, e: sp.Expr) -> bool:
        """Whether ``e`` has the result's full shape (else it is printed as is)."""
        shapes = [self.shapes[s.name] for s in e.free_symbols if s.name in self.shapes]
        return bool(shapes) and broadcast_shapes(*shapes) == self.shape

    def emit(self, e: sp.Expr, name: str) -> tuple[str, bool]:
        """Code computing ``e`` and whether it is a buffer this formula may overwrite."""
        if not self.full(e):
            return self.printer.doprint(e), False
        if e.is_Symbol:
            return e.name, e.name in self.owned
        if e.is_Mul:
            e = coefficient_into_sum(e)
        if e.is_Mul and e.args[0] == -1 and self.full(-e) and e.args[1:] == (-e,):
            return self.unary("negative", -e, name)
        if e.is_Add or e.is_Mul:
            return self.nary(e, name)
        if e.is_Pow and e.exp.is_Integer and e.exp in (2, -1):
            fn = "square" if e.exp == 2 else "reciprocal"
            return self.unary(fn, e.base, name)
        if type(e) in UFUNCS:
            return self.unary(UFUNCS[type(e)], e.args[0], name)
        if isinstance(e, (sp.Max, sp.Min)) and len(e.args) == 2:
            big, small = sorted(e.args, key=self.full, reverse=True)
            buf, owned = self.emit(big, name)
            fn = "maximum" if isinstance(e, sp.Max) else "minimum"
            return self.apply(
                f"np.{fn}({{}}, {self.printer.doprint(small)}, out={{}})",
                buf,
                owned,
                name,
            )
        return self.assign(name, self.printer.doprint(e))

    def factor(self, term: tuple[bool, sp.Expr], name: str, masks: bool) -> tuple:
        """(inverse, code, owned) of a full-size factor; with ``masks``, Heaviside(x)
        as the boolean comparison x > 0, multiplied in without a float copy."""
        inverse, t = term
        if masks and _mask(term):
            return inverse, mask(self.emit(t.args[0], name)[0], t.args[1]), False
        return inverse, *self.emit(t, name)

    def unary(self, fn: str, arg: sp.Expr, name: str) -> tuple[str, bool]:
        buf, owned = self.emit(arg, name)
        return self.apply(f"np.{fn}({{}}, out={{}})", buf, owned, name)

    def apply(
        self, template: str, buf: str, owned: bool, name: str
    ) -> tuple[str, bool]:
        """``template`` applied to ``buf`` in place, or into a fresh buffer."""
        if owned:
            self.lines.append(template.format(buf, buf))
            return buf, True
        return self.assign(name, template.replace(", out={}", "").format(buf))

    def assign(self, name: str, code: str) -> tuple[str, bool]:
        target = self.buffer(name)
        self.lines.append(f"{target} = {code}")
        return target, True

    def buffer(self, name: str) -> str:
        """A fresh array: ``_tmp<k>``; the one holding the result is renamed at the end."""
        self.fresh += 1
        return f"_tmp{self.fresh}"

    def nary(self, e: sp.Expr, name: str) -> tuple[str, bool]:
        """A sum or product: accumulate into one buffer with +=, -=, *=, /=."""
        add = e.is_Add
        op, inv = ("+", "-") if add else ("*", "/")
        big = sorted(
            (_inverse(t, add) for t in e.args if self.full(t)), key=lambda p: p[0]
        )
        small = [_inverse(t, add) for t in e.args if not self.full(t)]
        if not big:  # an outer product of smaller operands: NumPy allocates the result
            return self.assign(name, self.printer.doprint(e))
        join = sp.Add if add else sp.Mul
        direct = [t for inverse, t in small if not inverse]
        inverted = [t for inverse, t in small if inverse]
        head = self.printer.doprint(join(*direct)) if direct else None
        tail = [self.printer.doprint(join(*inverted))] if inverted else []
        masks = not add and not all(map(_mask, big))
        if masks:  # multiplied in as booleans; a float operand allocates the result
            big.sort(key=_mask)
        operands = [self.factor(p, name, masks) for p in big]
        owned = next((o for o in operands if o[2] and not o[0]), None) or next(
            (o for o in operands if o[2]), None
        )
        if owned is not None:
            operands.remove(owned)
            inverse, buf, _ = owned
        else:  # nothing to overwrite: the first operation allocates
            (inverse, code, _), *operands = operands
            if inverse:
                start = head if head is not None else ("0" if add else "1.0")
                buf = self.assign(
                    name, f"-{code}" if start == "0" else f"{start} {inv} {code}"
                )[0]
                inverse, head = False, None
            elif operands:
                second, *operands = operands
                buf = self.assign(
                    name, f"{code} {inv if second[0] else op} {second[1]}"
                )[0]
            elif head is not None:
                buf = self.assign(name, f"{code} {op} {_grouped(head)}")[0]
                head = None
            else:
                buf = self.assign(name, f"{code} {inv} {_grouped(tail.pop(0))}")[0]
        if inverse and head is None and any(not o[0] for o in operands):
            # d - buf or d / buf, with d a full-size operand: one pass
            direct = next(o for o in operands if not o[0])
            operands.remove(direct)
            fn = "subtract" if add else "divide"
            self.lines.append(f"np.{fn}({direct[1]}, {buf}, out={buf})")
            inverse = False
        if inverse:  # s - buf or s / buf, in place
            fn = (
                {(True, False): "negative", (True, True): "subtract"}[
                    (add, head is not None)
                ]
                if add
                else ("reciprocal" if head is None else "divide")
            )
            args = f"{head}, {buf}" if head is not None else buf
            self.lines.append(f"np.{fn}({args}, out={buf})")
            head = None
        for inverse, code, _ in operands:
            self.lines.append(f"{buf} {inv if inverse else op}= {code}")
        if head is not None and tail:  # 2/n: one pass with the whole small part
            small = [
                t if not inverse else (-t if add else 1 / t) for inverse, t in small
            ]
            self.lines.append(f"{buf} {op}= {self.printer.doprint(join(*small))}")
        elif head is not None:
            self.lines.append(f"{buf} {op}= {head}")
        else:
            self.lines += [f"{buf} {inv}= {code}" for code in tail]
        return buf, True


def _mask(term: tuple[bool, sp.Expr]) -> bool:
    """A factor Heaviside(x) with H(0) = 0 or 1: the comparison x > 0 (or >=)."""
    inverse, t = term
    return not inverse and isinstance(t, sp.Heaviside) and t.args[1] in (0, 1)


def _grouped(code: str) -> str:
    return code if re.fullmatch(r"[\w.]+", code) else f"({code})"


def _inverse(term: sp.Expr, add: bool) -> tuple[bool, sp.Expr]:
    """(True, t) for a term -t of a sum or a factor 1/t of a product, else (False, term)."""
    if add and term.as_coeff_Mul()[0].is_negative:
        return True, -term
    if not add and term.is_Pow and term.exp == -1:
        return True, term.base
    return False, term


def lower(
    expr: sp.Expr,
    name: str,
    printer: NumPyPrinter,
    shapes: dict,
    shape: tuple,
    owned: set[str],
) -> list[str]:
    """Lines computing ``expr`` into ``name`` with in-place ufuncs."""
    lowering = InPlace(printer, shapes, shape, owned)
    result, overwritten = lowering.emit(expr, name)
    lines = lowering.lines
    if result.startswith("_tmp"):  # the result's own buffer: call it by its name
        return [re.sub(rf"\b{result}\b", name, line) for line in lines]
    if (
        overwritten and lines
    ):  # a dead array's buffer: named as the result from the start
        rename = [re.sub(rf"\b{result}\b", name, line) for line in lines]
        return [f"{name} = {result}", *rename]
    return [*lines, f"{name} = {result}"]
