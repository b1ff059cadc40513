"""A gradient of an sg.grad whose inner gradient scatters a broadcast value.

sg.grad of a loss summing a picked array (a slice, a gather, a take_along_axis) along
an axis scatters the sum's adjoint broadcast back over that axis; optimize.fuse drops
the broadcast from the scatter's value (``+=`` and ``np.add.at`` broadcast it), so
the scatter's adjoint must sum the picked cotangent back to the value's shape. It did
not, and a gradient penalty through such a pick failed to build with a ShapeError
(tests/test_new_user_round58.py). Judged by torch float64 (autograd.grad with
create_graph=True) and central differences.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
)

import symgrad as sg

torch = pytest.importorskip("torch")


def _slice(X, _):
    return X[1:]


def _gather(X, i):
    return X[i["tok"]]  # an embedding bag: E[tok] summed over the bag


def _take_along_axis(X, i):
    if isinstance(X, sg.Expr):
        return sg.take_along_axis(X, i["idx"], axis=1)
    return torch.gather(X, 1, i["idx"])


TOK = np.array([[0, 1, 1], [2, 3, 0]], dtype=np.int64)  # a repeated row in a bag
IDX = np.array([[0, 0], [1, 2], [2, 2], [0, 1]], dtype=np.int64)

CASES = {
    "slice": (_slice, (3, 2), {}, {}),
    "gather": (_gather, (5, 3), {"tok": ("B", "L")}, {"tok": TOK}),
    "take_along_axis": (_take_along_axis, (4, 3), {"idx": (4, 2)}, {"idx": IDX}),
}


def _build(name, pick, shape, dims, hessian=False):
    m = sg.Model(f"penalty_{name}", hessian=hessian)
    X = m.param("X", shape)
    inputs = {k: m.input(k, d, dtype="int64") for k, d in dims.items()}
    h = sg.sum(pick(X, inputs), axis=1)
    g = sg.grad(sg.sum(h**3), X)
    m.loss(sg.sum(g**2))
    return compile_module(m)


def _reference(pick):
    def reference(p, i):
        h = pick(p["X"], i).sum(1)
        (g,) = torch.autograd.grad((h**3).sum(), p["X"], create_graph=True)
        return (g**2).sum(), {}

    return reference


@pytest.mark.parametrize("name", list(CASES))
def test_gradient_penalty_through_a_pick_and_a_sum(name):
    pick, shape, dims, inputs = CASES[name]
    module = _build(name, pick, shape, dims)
    params = {"X": np.random.default_rng(7).standard_normal(shape)}
    check(module, _reference(pick), params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_gradient_penalty_through_a_gather_differentiated_twice():
    pick, shape, dims, inputs = CASES["gather"]
    module = _build("gather_hessian", pick, shape, dims, hessian=True)
    params = {"X": np.random.default_rng(8).standard_normal(shape)}
    reference = _reference(pick)
    check(module, reference, params, inputs)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)
