"""``sg.einsum``: NumPy's subscripts lowered to the model's own transposes, sums and
matmuls, so its derivatives are theirs."""

from __future__ import annotations

from .ir import ShapeError
from .model import Expr, _expr, transpose
from .model import sum as _sum


def einsum(subscripts: str, *operands: Expr) -> Expr:
    """NumPy's einsum, without ``...`` or a letter repeated in one operand: a pair of
    operands with one contracted letter is a matmul; others multiply and sum. More than
    two operands contract left to right."""
    inputs, arrow, output = subscripts.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if not arrow:  # implicit output: the letters seen once, in order
        output = "".join(sorted(c for c in set(inputs) - {","} if inputs.count(c) == 1))
    if len(terms) != len(operands):
        raise ValueError(
            f"sg.einsum {subscripts!r}: {len(terms)} terms, {len(operands)} operands"
        )
    sizes = {}
    for term, x in zip(terms, operands, strict=True):
        shape = _expr(x, "sg.einsum").node.shape
        if not term.isalpha() or len(set(term)) != len(term) or len(term) != len(shape):
            raise ShapeError(
                f"sg.einsum {subscripts!r}: {term!r} must name each of the "
                f"{len(shape)} axes of {x.node.describe()} by a letter of its own"
            )
        for letter, d in zip(term, shape, strict=True):
            if sizes.setdefault(letter, d) != d:
                raise ShapeError(
                    f"sg.einsum {subscripts!r}: {letter} is {sizes[letter]} in one "
                    f"operand and {d} in another"
                )
    if not set(output) <= set(sizes) or len(set(output)) != len(output):
        raise ShapeError(f"sg.einsum {subscripts!r}: bad output {output!r}")
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
    full = batch + left + right + summed
    product = _aligned(ta_kept, a, full) * _aligned(tb_kept, b, full)
    if summed:
        product = _sum(product, axis=tuple(range(len(full) - len(summed), len(full))))
    return batch + left + right, product


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
