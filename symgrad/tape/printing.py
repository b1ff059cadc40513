"""A tensor's repr laid out as torch's _tensor_str does: the element formats, the
rows wrapped at 80 columns, the middle of large tensors elided, and the suffixes
(dtype=, grad_fn=...) moved to a new line where they would pass 80 columns; all
as set by set_printoptions."""

import math

import numpy as np

PREFIX = len("tensor(")  # the indent of every line after the first
PROFILES = {
    "default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
    "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
    "full": {"precision": 4, "threshold": math.inf, "edgeitems": 3, "linewidth": 80},
}
# decimals; elements above which a tensor is summarized; elements shown at each end
# of a summarized dim; line width; scientific notation (None: where torch chooses it)
options = {**PROFILES["default"], "sci_mode": None}


def set_printoptions(
    precision=None,
    threshold=None,
    edgeitems=None,
    linewidth=None,
    profile=None,
    sci_mode=None,
):
    """torch.set_printoptions: a profile's options ("default", "short", "full"),
    then those given; sci_mode is set each call, as in torch."""
    if profile is not None:
        options.update(PROFILES[profile])
    given = dict(
        precision=precision,
        threshold=threshold,
        edgeitems=edgeitems,
        linewidth=linewidth,
    )
    options.update((k, v) for k, v in given.items() if v is not None)
    options["sci_mode"] = sci_mode


def _shown(x):
    """The elements the repr shows: torch sizes the columns from these alone."""
    edge = options["edgeitems"]
    if x.size <= options["threshold"]:
        return x
    for axis, n in enumerate(x.shape):
        if n > 2 * edge:
            x = np.take(x, [*range(edge), *range(n - edge, n)], axis)
    return x


def _float_format(x):
    """torch's float format: "1." if every non-zero finite value is integral, else
    `precision` decimals, scientific where the magnitudes span over 1e3 (or pass
    1e8, or, with decimals, go below 1e-4) unless sci_mode says; every value
    right-aligned to the width of the widest non-zero finite one (so nan, inf and
    -0. do not widen the columns)."""
    values = _shown(x)
    values = values[np.isfinite(values) & (values != 0)].astype(np.float64).ravel()
    big, integral = np.abs(values), np.all(values == np.ceil(values))
    digits = options["precision"]
    spec = ".0f" if integral else f".{digits}f"
    sci = options["sci_mode"]
    if sci is None:
        sci = bool(big.size) and (
            big.max() / big.min() > 1e3
            or big.max() > 1e8
            or (not integral and big.min() < 1e-4)
        )
    if sci:
        spec = f".{digits}e"

    def text(v):
        dot = "." if spec == ".0f" and np.isfinite(v) else ""
        return format(float(v), spec) + dot

    return text, max((len(text(v)) for v in values), default=1)


def _format(x):
    """(element -> text right-aligned to the width, that width) for x's dtype; torch
    wraps rows by the width."""
    shown = _shown(x)
    if x.dtype.kind == "f":
        text, width = _float_format(x)
    elif x.dtype == np.bool_:
        text, width = (lambda v: str(bool(v))), (4 if np.all(shown) else 5)
    else:
        text = str
        width = max((len(str(v)) for v in shown.ravel().tolist()), default=1)
    return (lambda v: text(v).rjust(width)), width


def _vector(x, indent, fmt, width, summarize):
    edge = options["edgeitems"]
    if summarize and len(x) > 2 * edge:
        items = [*map(fmt, x[:edge]), " ...", *map(fmt, x[-edge:])]
    else:
        items = [fmt(v) for v in x]
    per_line = max(1, math.floor((options["linewidth"] - indent) / (width + 2)))
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"


def _nested(x, indent, fmt, width, summarize):
    if x.ndim == 1:
        return _vector(x, indent, fmt, width, summarize)
    rows, edge = range(len(x)), options["edgeitems"]
    if summarize and len(x) > 2 * edge:
        rows = [*range(edge), None, *range(len(x) - edge, len(x))]
    slices = [
        "..." if i is None else _nested(x[i], indent + 1, fmt, width, summarize)
        for i in rows
    ]
    return "[" + ("," + "\n" * (x.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def array_str(x, indent=PREFIX):
    """x's values as torch's repr shows them after `indent` columns of prefix."""
    if x.size == 0:
        return "[]"
    fmt, width = _format(x)
    if x.ndim == 0:
        return fmt(x.item())
    return _nested(x, indent, fmt, width, summarize=x.size > options["threshold"])


def with_suffixes(text, suffixes, indent=PREFIX):
    """text + ", suffix" for each, a suffix starting a new line where it would pass
    the line width (torch counts the last line 2 columns longer than it is)."""
    parts, last = [text], len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        if last + len(suffix) + 2 > options["linewidth"]:
            parts.append(",\n" + " " * indent + suffix)
            last = indent + len(suffix)
        else:
            parts.append(", " + suffix)
            last += len(suffix) + 2
    return "".join(parts) + ")"
