"""torch.testing.assert_close for tensors: same shape and dtype, and every element
within atol + rtol * |expected|, with torch's default tolerances per dtype and its
message (how many elements differ, the greatest differences and where)."""

import numpy as np

from .tensor import Tensor

# rtol, atol by dtype, as torch's defaults
TOLERANCES = {
    "float16": (1e-3, 1e-5),
    "float32": (1.3e-6, 1e-5),
    "float64": (1e-7, 1e-7),
}


def assert_close(actual, expected, *, rtol=None, atol=None, equal_nan=False, **_):
    if (rtol is None) != (atol is None):
        raise ValueError("Both 'rtol' and 'atol' must be either specified or omitted")
    actual, expected = (
        t if isinstance(t, Tensor) else Tensor._wrap(np.asarray(t))
        for t in (actual, expected)
    )
    for attribute in ("shape", "dtype"):
        mine, theirs = getattr(actual, attribute), getattr(expected, attribute)
        if mine != theirs:
            raise AssertionError(
                f"The values for attribute '{attribute}' do not match: "
                f"{mine} != {theirs}."
            )
    if rtol is None:
        rtol, atol = TOLERANCES.get(str(actual._data.dtype), (0.0, 0.0))
    a, e = (  # differences in the tensors' own precision, as torch's
        t._data if t._data.dtype.kind == "f" else t._data.astype(float)
        for t in (actual, expected)
    )
    close = np.isclose(a, e, rtol, atol, equal_nan)
    if close.all():
        return
    difference = np.abs(a - e)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = difference / np.abs(e)
    lines = [
        "Tensor-likes are not close!",
        "",
        f"Mismatched elements: {(~close).sum()} / {close.size} "
        f"({100 * (~close).mean():.1f}%)",
    ]
    for what, values, allowed in (
        ("absolute", difference, atol),
        ("relative", relative, rtol),
    ):
        where = np.unravel_index(np.nanargmax(values), values.shape)
        lines.append(
            f"Greatest {what} difference: {float(values[where])} at index "
            f"{tuple(int(k) for k in where)} (up to {allowed} allowed)"
        )
    raise AssertionError("\n".join(lines))
