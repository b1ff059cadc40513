"""Pair energies: scatters of c (x[i] - x[j]) become one _pair_scatter (optimize.py), whose
dense (pair matrix) and sparse (bincount) paths must both agree with PyTorch."""

import numpy as np
import pytest
from helpers import compile_module

import symgrad as sg
from symgrad.cli import generate
from symgrad.models import load
from symgrad.reference import reference
from symgrad.verify import relative_error


def springs(reversed_difference=False, extra_gather=False):
    """Springs k (|x_i - x_j| - 1)^2 in the plane, plus a weak pull to the origin."""
    m = sg.Model("springs")
    x = m.param("x", ("n", 2))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    k = m.input("k", ("pairs",))
    d = x[j] - x[i] if reversed_difference else x[i] - x[j]
    length = sg.sqrt(sg.sum(d * d, axis=-1))
    energy = sg.sum(k * (length - 1) ** 2) + 0.1 * sg.sum(x**2)
    if extra_gather:  # another use of x[i]: stays an ordinary scatter
        energy = energy + sg.sum(sg.tanh(x[i][:, 0]))
    m.loss(energy)
    return m


def pairs_data(rng, n, dense):
    """All pairs i < j (dense), or a few random ones with repeats and both orders."""
    if dense:
        i, j = np.triu_indices(n, k=1)
    else:
        i = rng.integers(0, n, 12)
        j = (i + rng.integers(1, n, 12)) % n  # no spring of zero length
        i[:3], j[:3] = [1, 4, 1], [4, 1, 4]  # both orders, and a repeated pair
    x = 2.0 * rng.standard_normal((n, 2))
    inputs = {"i": i, "j": j, "k": rng.uniform(0.5, 2.0, len(i))}
    return {"x": x}, inputs


CASES = {
    "plain": {},
    "reversed": {"reversed_difference": True},
    "extra_gather": {"extra_gather": True},
}


@pytest.mark.parametrize("case", CASES)
def test_springs_use_the_pair_scatter(case):
    source, _ = generate(springs(**CASES[case]))
    vectorized = source.split("def value_and_grad", 1)[1]
    assert "_pair_scatter(x, " in vectorized
    scatters = vectorized.split("def ", 1)[0].count("_add_rows(")
    assert scatters == (1 if case == "extra_gather" else 0)  # x[i][:, 0] on its own


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("n, dense", [(6, True), (20, False)])
def test_pair_scatter_agrees_with_pytorch(case, n, dense, rng):
    torch = pytest.importorskip("torch")
    model = springs(**CASES[case])
    module = compile_module(model)
    params, inputs = pairs_data(rng, n, dense)
    assert (n * n <= 4 * len(inputs["i"])) == dense  # the path under test
    ref_loss, _, ref_grads = reference(model, params, inputs, engine=torch)
    loss, grads = module.value_and_grad(params, inputs)
    assert relative_error(loss, ref_loss) <= 1e-10
    assert relative_error(grads["x"], ref_grads["x"]) <= 1e-10
    _, cache = module.forward(params, inputs)
    scaled = module.backward(cache, grad_loss=-1.5)
    assert relative_error(scaled["x"], -1.5 * ref_grads["x"]) <= 1e-10


def test_lennard_jones_pairs_agree_with_pytorch_dense_and_sparse(rng):
    torch = pytest.importorskip("torch")
    model = load("lennard_jones")
    module = compile_module(model)
    params, inputs = model.sampler(rng, N=12)  # 66 pairs: dense
    sparse = {"i": inputs["i"][::7], "j": inputs["j"][::7]}  # 10 pairs: bincounts
    for data in (inputs, sparse):
        ref_loss, _, ref_grads = reference(model, params, data, engine=torch)
        loss, grads = module.value_and_grad(params, data)
        assert relative_error(loss, ref_loss) <= 1e-10
        assert relative_error(grads["pos"], ref_grads["pos"]) <= 1e-10


@pytest.mark.parametrize("n, dense", [(6, True), (20, False)])
def test_negative_pair_indices_count_from_the_end(rng, n, dense):
    """As in the gathers (and in torch): i * n + j would misread them in the pair matrix."""
    module = compile_module(springs())
    params, inputs = pairs_data(rng, n, dense=dense)
    expected = module.value_and_grad(params, inputs)
    wrapped = {**inputs, "i": inputs["i"] - n * (inputs["i"] % 2), "j": inputs["j"] - n}
    loss, grads = module.value_and_grad(params, wrapped)
    assert loss == expected[0]
    np.testing.assert_allclose(grads["x"], expected[1]["x"], rtol=1e-12, atol=1e-14)


def test_unrolled_code_updates_per_pair():
    source, _ = generate(load("lennard_jones"))
    unrolled = source.split("def _value_and_grad_N_8_pairs_28", 1)[1]
    assert "_pair_scatter" not in unrolled
