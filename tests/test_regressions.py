"""One small test per bug found by tests/test_fuzz.py and tests/test_errors.py, shrunk.

Each model is checked with the fuzz suite's ``check``: generated value_and_grad, forward
and backward against PyTorch (or the tape) at 1e-10 and central differences at 1e-6.
"""

import numpy as np
import pytest
from helpers import compile_module
from test_fuzz import check

import symgrad as sg
from symgrad.reference import reference

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test extra
    torch = None


def model(declare):
    m = sg.Model("regression")
    declare(m)
    return m


def test_backward_binds_a_symbolic_dim_it_broadcasts_to():
    """grad_p = np.full((n,), grad_loss) in backward(), where n was never unpacked."""
    m = model(lambda m: m.loss(sg.sum(m.param("p", ("n",)))))
    module = compile_module(m)
    _, cache = module.forward({"p": np.zeros(4)}, {})
    np.testing.assert_array_equal(module.backward(cache, 2.0)["p"], np.full(4, 2.0))
    check(m)


def test_compound_condition_of_different_shapes():
    """SymPy prints And as np.logical_and.reduce((a, b)), which cannot broadcast."""

    def declare(m):
        p, c = m.param("p", (3,)), m.param("c", ())
        m.loss(sg.sum(sg.sin(sg.where((p < 0.2) & (c > -0.5), p * c, c))))

    check(model(declare))


def test_view_of_a_constant():
    """(x - x)[None] printed as (0)[None]: indexing a Python literal. Two fixes: x - x
    kept x as an (unused) argument, so it was not a constant; views of constants are now
    constants."""

    def declare(m):
        x, p = m.input("x", ()), m.param("p", ())
        m.loss(sg.sum(sg.sin((x - x)[None])) + sg.sin(x - p))

    check(model(declare))


def test_scatter_into_a_scalar_gradient():
    """The gradient of p[None] was added in place into a NumPy scalar (read-only)."""

    def declare(m):
        p = m.param("p", ())
        m.loss(sg.sum(sg.cos(sg.log_softmax(p[None], axis=0))) + sg.sin(1 / (1 + p**2)))

    check(model(declare))


def test_scatter_into_a_broadcast_gradient_slice():
    """The gradient of a mean was np.broadcast_to (read-only), then updated in place."""

    def declare(m):
        p = m.param("p", (3, 2))
        m.loss(sg.sum(sg.sin(p[..., None])) + sg.sin(sg.mean(p, axis=0)[-1]))

    check(model(declare))


def test_scatter_add_into_a_broadcast_gradient():
    """np.add.at into that read-only view raised, or added into one shared element."""

    def declare(m):
        p = m.param("p", ("n",))
        idx = m.input("idx", (3, 2), dtype="int64")
        m.loss(sg.sin(sg.mean(p)) + sg.logsumexp(p[idx]))

    check(model(declare))


def test_scatter_add_rows_into_a_broadcast_gradient():
    def declare(m):
        p = m.param("p", (3, "n", 1))
        i, j = (m.input(k, (2, "n"), dtype="int64") for k in "ij")
        m.loss(sg.sum(sg.sin(p[i])) + sg.sum(sg.sin(sg.mean(p, axis=1))) + sg.sum(p[j]))

    check(model(declare))


def test_constant_loss_and_its_zero_gradient():
    """loss = sin(p - p) = 0 and grad_p = 0 were one node: backward() returned `loss`,
    a name it does not have (NameError); the torch reference could not backpropagate."""

    def declare(m):
        p = m.param("p", ())
        m.loss(sg.sin(p - p))

    module = compile_module(model(declare))
    outputs, cache = module.forward({"p": np.float64(0.5)}, {})
    assert outputs["loss"] == 0.0 and module.backward(cache)["p"] == 0.0
    check(model(declare))


def test_gradients_never_alias_each_other_or_outputs():
    """Equal gradients (and zero ones) were returned as one shared array."""

    def declare(m):
        a, b, c, d = (m.param(k, (3,)) for k in "abcd")
        x = m.input("x", (3,))
        m.output("zeros", sg.exp(d - d) * 0)
        m.loss(sg.sum(a * sg.sin(x)) + sg.sum(b * sg.sin(x)))

    module = compile_module(model(declare))
    params = {k: np.ones(3) for k in "abcd"}
    inputs = {"x": np.linspace(0.1, 1, 3)}
    outputs, cache = module.forward(params, inputs)
    for grads in (module.value_and_grad(params, inputs)[1], module.backward(cache)):
        arrays = [grads[k] for k in "abcd"] + [outputs["zeros"]]
        for i, first in enumerate(arrays):
            for second in arrays[i + 1 :]:
                assert not np.shares_memory(first, second)
        grads["a"] += 1  # an in-place update touches one gradient only
        np.testing.assert_array_equal(grads["b"], np.sin(inputs["x"]))
        np.testing.assert_array_equal(grads["c"], np.zeros(3))


def test_reshape_minus_one_of_a_fixed_size_array():
    """size / size was a float, so -1 "could not be inferred" for (2, 3) -> (-1,)."""
    m = sg.Model("m")
    p = m.param("p", (2, 3))
    assert p.reshape(-1).shape == (6,)
    assert sg.reshape(p, (3, -1)).shape == (3, 2)
    assert m.param("s", ()).reshape(-1).shape == (1,)


def test_reference_broadcasts_constants_and_allows_a_constant_loss():
    """The reference interpreter returned x - x as a 0-d tensor and called backward() on
    a loss that needs no gradient (torch raises)."""

    def declare(m):
        p = m.param("p", (2, "n"))
        m.loss(sg.sum(sg.sin((p - p)[..., None])))

    params = {"p": np.ones((2, 3))}
    for engine in [None] + ([torch] if torch is not None else []):
        kwargs = {} if engine is None else {"engine": engine}
        loss, _, grads = reference(model(declare), params, {}, **kwargs)
        assert loss == 0.0
        np.testing.assert_array_equal(grads["p"], np.zeros((2, 3)))


@pytest.mark.skipif(torch is None, reason="needs PyTorch")
def test_reference_condition_of_different_shapes():
    def declare(m):
        p, c = m.param("p", (3,)), m.param("c", ())
        m.loss(sg.sum(sg.where((p < 0.2) | ~(c > -0.5), p * c, c)))

    params = {"p": np.array([0.1, 0.5, -1.0]), "c": np.array(0.3)}
    loss, _, grads = reference(model(declare), params, {}, engine=torch)
    hit = params["p"] < 0.2
    assert loss == pytest.approx(np.sum(np.where(hit, params["p"] * 0.3, 0.3)))
    np.testing.assert_allclose(grads["p"], np.where(hit, 0.3, 0.0))


def test_zero_gradient_of_symbolic_shape_in_backward():
    """backward() returned np.zeros((3, n, 2)) without n in its cache."""

    def declare(m):
        p = m.param("p", (3, "n", 2))
        m.loss(sg.sum(sg.sin(p - p)))

    check(model(declare))
