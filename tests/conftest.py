"""Shared fixtures, and the ``rounds`` mark: the rounds of new-user models, fuzzers and
tape scripts (files named *round* or *fuzz*), about three quarters of the run time.
``python -m pytest -m "not rounds"`` runs the rest while iterating."""

import mpmath
import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _mpmath_precision():
    """A test that sets mpmath.mp.dps (50 digits for a closed form) leaves it as it
    found it: a quadrature elsewhere met infinities at the interval's ends."""
    dps = mpmath.mp.dps
    yield
    mpmath.mp.dps = dps


@pytest.fixture(scope="module")
def torch_float64():
    """torch defaults to float32 where tape defaults to float64; align them (tape tests)."""
    torch = pytest.importorskip("torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def pytest_collection_modifyitems(items):
    for item in items:
        if "round" in item.path.name or "fuzz" in item.path.name:
            item.add_marker(pytest.mark.rounds)
