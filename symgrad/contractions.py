"""``sg.einsum``: NumPy's subscripts lowered to the model's own transposes, sums and
matmuls, so its derivatives are theirs."""

from __future__ import annotations

import string

from . import ops
from .arrays import positions
from .ir import ShapeError, size
from .model import Expr, _expr, swapaxes, transpose, where
from .model import sum as _sum


def einsum(subscripts: str, *operands: Expr, optimize=False) -> Expr:
    """NumPy's einsum: a pair of operands with one contracted letter is a matmul;
    others multiply and sum. More than two operands contract left to right; ``...``
    is lettered, and a letter repeated in one operand takes the diagonal. NumPy's
    ``optimize`` (a speed hint) is accepted and ignored: symgrad's contraction order
    is its own (left to right, as matmuls)."""
    del optimize
    if not isinstance(subscripts, str):
        raise TypeError(
            "sg.einsum takes the subscripts string first, sg.einsum('ij,ij->', a, "
            "b); NumPy's sublist form einsum(a, [0, 1], b, [0, 1]) is not supported"
        )
    inputs, arrow, output = subscripts.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands):
        raise ValueError(
            f"sg.einsum {subscripts!r}: {len(terms)} terms, {len(operands)} operands"
        )
    operands = [_expr(x, "sg.einsum") for x in operands]
    terms, operands, dots = _lettered(subscripts, terms, operands)
    if not arrow:  # implicit output: ``...``, then the letters seen once, in order
        once = [c for c in set("".join(terms)) - set(dots) if inputs.count(c) == 1]
        output = dots + "".join(sorted(once))
    elif "..." in output:
        output = output.replace("...", dots)
    elif dots:
        raise ShapeError(
            f"sg.einsum {subscripts!r}: the output needs '...' for the axes the "
            "inputs' '...' stands for"
        )
    sizes = {}
    for term, x in zip(terms, operands, strict=True):
        shape = x.node.shape
        if not (term.isalpha() or term == "") or len(term) != len(shape):
            raise ShapeError(
                f"sg.einsum {subscripts!r}: {term!r} must name each of the "
                f"{len(shape)} axes of {x.node.describe()} by a letter"
            )
        for letter, d in zip(term, shape, strict=True):
            if sizes.setdefault(letter, d) != d:
                raise ShapeError(
                    f"sg.einsum {subscripts!r}: {letter} is {sizes[letter]} in one "
                    f"operand and {d} in another"
                )
    if not set(output) <= set(sizes) or len(set(output)) != len(output):
        raise ShapeError(f"sg.einsum {subscripts!r}: bad output {output!r}")
    terms, operands = zip(*map(_diagonal, terms, operands), strict=True)
    term, x = terms[0], operands[0]
    for k in range(1, len(terms)):
        needed = set(output).union(*terms[k + 1 :])
        term, x = _contract(term, x, terms[k], operands[k], needed)
    return _summed_to(term, x, output)


def _contract(ta: str, a: Expr, tb: str, b: Expr, needed: set) -> tuple[str, Expr]:
    """a * b summed over the letters they share that are not ``needed`` later."""
    ta_kept = "".join(c for c in ta if c in tb or c in needed)
    tb_kept = "".join(c for c in tb if c in ta or c in needed)
    a, b = _summed_to(ta, a, ta_kept), _summed_to(tb, b, tb_kept)
    batch = "".join(c for c in ta_kept if c in tb_kept and c in needed)
    summed = "".join(c for c in ta_kept if c in tb_kept and c not in needed)
    left = "".join(c for c in ta_kept if c not in tb_kept)
    right = "".join(c for c in tb_kept if c not in ta_kept)
    if len(summed) == 1 and len(left) <= 1 and len(right) <= 1:  # a matmul
        a = _summed_to(ta_kept, a, batch + left + summed)
        b = _summed_to(tb_kept, b, batch + summed + right)
        product = (a if left else a[..., None, :]) @ (b if right else b[..., None])
        if not right:
            product = product[..., 0]
        if not left:
            product = product[..., 0, :] if right else product[..., 0]
        return batch + left + right, product
    if summed:  # several letters: grouped by reshapes into one matmul, as im2col does
        sizes = {
            c: d
            for t, x in ((ta_kept, a), (tb_kept, b))
            for c, d in zip(t, x.node.shape, strict=True)
        }
        product = _matrix(ta_kept, a, batch, left, summed, sizes) @ _matrix(
            tb_kept, b, batch, summed, right, sizes
        )
        shape = tuple(sizes[c] for c in batch + left + right)
        return batch + left + right, _reshaped(product, shape)
    full = batch + left + right + summed
    product = _aligned(ta_kept, a, full) * _aligned(tb_kept, b, full)
    if summed:
        product = _sum(product, axis=tuple(range(len(full) - len(summed), len(full))))
    return batch + left + right, product


def _matrix(term: str, x: Expr, batch: str, rows: str, cols: str, sizes: dict):
    """x (lettered ``term``) as matrices of the ``rows`` letters by the ``cols``, after
    the ``batch`` axes: a reshape, transposed after it where that makes it a view."""
    batch_shape = tuple(sizes[c] for c in batch)
    n_rows, n_cols = (size(tuple(sizes[c] for c in group)) for group in (rows, cols))
    if rows and cols and term == batch + cols + rows:
        return swapaxes(_reshaped(x, batch_shape + (n_cols, n_rows)), -1, -2)
    x = _summed_to(term, x, batch + rows + cols)
    return _reshaped(x, batch_shape + (n_rows, n_cols))


def _reshaped(x: Expr, shape) -> Expr:
    """A reshape into axes grouped or split: sizes sg.reshape cannot prove (T - 3 is a
    size only where the model's slices hold, which the module checks)."""
    return Expr(ops.reshape(x.node, shape, fold=False))


def _summed_to(term: str, x: Expr, out: str) -> Expr:
    """x with the axes of ``term`` not in ``out`` summed, the rest in ``out``'s order."""
    axes = tuple(k for k, c in enumerate(term) if c not in out)
    if axes:
        x, term = _sum(x, axis=axes), "".join(c for c in term if c in out)
    order = [term.index(c) for c in out]
    return x if order == sorted(order) else transpose(x, order)


def _aligned(term: str, x: Expr, full: str) -> Expr:
    """x's axes in ``full``'s order, with new axes for the letters it lacks."""
    x = _summed_to(term, x, "".join(c for c in full if c in term))
    return x[tuple(slice(None) if c in term else None for c in full)]


def _lettered(subscripts: str, terms: list, operands: list) -> tuple:
    """Each term's ``...`` spelled with unused letters, right-aligned across operands as
    NumPy broadcasts them; an axis of size 1 against a longer one is dropped (it
    broadcasts). Returns the terms, the operands and the letters of the widest ``...``.
    """
    spare = [c for c in string.ascii_letters if c not in subscripts]
    widths = [x.ndim - len(t) + 3 for t, x in zip(terms, operands, strict=True)]
    width = max(
        (w for t, w in zip(terms, widths, strict=True) if "..." in t), default=0
    )
    dots = "".join(spare[:width])
    terms = [
        t.replace("...", dots[width - w :]) if "..." in t else t
        for t, w in zip(terms, widths, strict=True)
    ]
    longest = {}
    for t, x in zip(terms, operands, strict=True):
        for c, d in zip(t, x.node.shape, strict=False):
            if c in dots and d != 1:
                longest.setdefault(c, d)
    for k, (t, x) in enumerate(zip(terms, operands, strict=True)):
        ones = [
            n
            for n, c in enumerate(t)
            if c in longest and n < x.ndim and x.node.shape[n] == 1
        ]
        if ones:
            terms[k] = "".join(c for n, c in enumerate(t) if n not in ones)
            operands[k] = x[
                tuple(0 if n in ones else slice(None) for n in range(x.ndim))
            ]
    return terms, operands, dots


def _diagonal(term: str, x: Expr) -> tuple[str, Expr]:
    """A letter repeated in one operand (``ii``): the entries where those axes agree,
    as a sum with the identity's mask."""
    for c in sorted(set(term), key=term.index):
        while term.count(c) > 1:
            p, q = term.index(c), term.index(c, term.index(c) + 1)
            row, col = positions(x.node.shape[p], x.node.shape[q])
            eye = where(row == col, 1.0, 0.0)
            eye = eye[
                tuple(slice(None) if n in (p, q) else None for n in range(x.ndim))
            ]
            x, term = _sum(x * eye, axis=q), term[:q] + term[q + 1 :]
    return term, x
