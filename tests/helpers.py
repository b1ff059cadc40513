"""Helpers shared by the tests."""

import numpy as np

from symgrad.cli import generate
from symgrad.verify import load_source


def compile_module(model):
    """Generate ``model``'s module in memory and import it."""
    source, _ = generate(model)
    return load_source(source, model.name)


def rel(actual, expected, floor=1e-300) -> float:
    """max |actual - expected| over the largest magnitude of ``expected``, or ``floor``
    if that is larger (a gradient that is zero up to round-off); shapes must agree."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.max(np.abs(expected), initial=0.0), floor, 1e-300)
    diff = np.max(np.abs(actual - expected), initial=0.0)
    return 0.0 if diff == 0 else float(diff / scale)
