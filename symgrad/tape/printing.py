"""The values part of a tensor's repr, as torch prints it: NumPy lays out the rows
(and elides the middle of large tensors); the element formats are torch's."""

import numpy as np

EDGE_ITEMS = 3  # shown at each end of a dim, when a tensor has over 1000 elements


def _shown(x):
    """The elements the repr shows: torch sizes the columns from these alone."""
    if x.size <= 1000:
        return x
    for axis, n in enumerate(x.shape):
        if n > 2 * EDGE_ITEMS:
            x = np.take(x, [*range(EDGE_ITEMS), *range(n - EDGE_ITEMS, n)], axis)
    return x


def _float_format(x):
    """torch's float format: "1." if every non-zero finite value is integral, else 4
    decimals, scientific where the magnitudes span over 1e3 (or pass 1e8, or, with
    decimals, go below 1e-4); every value right-aligned to the width of the widest
    non-zero finite one (so nan, inf and -0. do not widen the columns)."""
    values = _shown(x)
    values = values[np.isfinite(values) & (values != 0)].astype(np.float64).ravel()
    big, integral = np.abs(values), np.all(values == np.ceil(values))
    spec = ".0f" if integral else ".4f"
    if big.size and (
        big.max() / big.min() > 1e3
        or big.max() > 1e8
        or (not integral and big.min() < 1e-4)
    ):
        spec = ".4e"

    def text(v):
        dot = "." if spec == ".0f" and np.isfinite(v) else ""
        return format(float(v), spec) + dot

    width = max((len(text(v)) for v in values), default=1)
    return lambda v: text(v).rjust(width)


def _bool_format(x):
    """True and False, right-aligned to the longer of those present."""
    width = 5 if not np.all(x) else 4
    return lambda v: str(bool(v)).rjust(width)


def array_str(x):
    """x's values as torch's repr shows them inside tensor(...)."""
    formatter = {}
    if x.dtype.kind == "f":
        formatter["float_kind"] = _float_format(x)
    elif x.dtype == np.bool_:
        formatter["bool"] = _bool_format(_shown(x))
    body = np.array2string(x, separator=", ", prefix="tensor(", formatter=formatter)
    return body.replace(", ..., ", ",  ..., ")  # torch pads the elision in a row
