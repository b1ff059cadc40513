"""Faster NumPy spellings the generator picks, each checked for the numbers (PyTorch
float64 as the judge, ties and NaN included) and for the spelling itself:
reductions over at most 4 elements as elementwise operations on slices (a 2x2 pool, the 3
coordinates of a vector: NumPy's reductions over short axes are 5-20x slower), and
ReLU's derivative and 0/1 masks as comparisons (np.heaviside and np.where(c, 1.0, 0.0)
are 6-8x slower)."""

import numpy as np
import pytest
from helpers import check, compile_module, normal

import symgrad as sg
from symgrad.cli import generate

torch = pytest.importorskip("torch")


def _function(source: str, name: str = "value_and_grad") -> str:
    start = source.index(f"def {name}(")
    return source[start : source.index("\ndef ", start + 1)]


REDUCTIONS = [  # (op, shape, axis, keepdims)
    ("max", ("n", 2, 2), (1, 2), False),
    ("min", ("n", 3), 1, False),
    ("sum", ("n", 3), -1, True),
    ("max", ("n", 4, 5), 1, True),
    ("sum", ("n", 2, 5, 2), (1, 3), False),
    ("max", (2, "n"), 0, False),
]


def _reduction_model(op, shape, axis, keepdims):
    m = sg.Model("short_reduction")
    x = m.input("x", shape)
    w = m.param("w", tuple(1 if d == "n" else d for d in shape))
    reduced = getattr(sg, op)(sg.tanh(x * w), axis=axis, keepdims=keepdims)
    m.output("r", reduced)
    m.loss(sg.sum(reduced * reduced))
    return m


def _torch_reduction(op, axis, keepdims):
    fn = {"max": torch.amax, "min": torch.amin, "sum": torch.sum}[op]

    def reference(p, i):
        r = fn(torch.tanh(i["x"] * p["w"]), dim=axis, keepdim=keepdims)
        return (r * r).sum(), {"r": r}

    return reference


@pytest.mark.parametrize("op, shape, axis, keepdims", REDUCTIONS)
def test_short_reductions_are_elementwise_and_agree_with_torch(
    op, shape, axis, keepdims
):
    model = _reduction_model(op, shape, axis, keepdims)
    assert f".{op}(axis=" not in _function(generate(model)[0], "forward")
    rng = np.random.default_rng(len(shape))
    size = {d: 7 for d in shape if d == "n"}
    x = normal(rng, *(size.get(d, d) for d in shape))
    w = normal(rng, *(1 if d == "n" else d for d in shape))
    check(
        compile_module(model), _torch_reduction(op, axis, keepdims), {"w": w}, {"x": x}
    )


@pytest.mark.parametrize("op", ["max", "min", "sum"])
def test_short_reductions_split_ties_and_keep_nan_as_torch(op):
    """Ties (a window of equal values) share the gradient as torch's amax/amin; a NaN
    in a window gives NaN, as np.max and torch do."""
    model = _reduction_model(op, ("n", 2, 2), (1, 2), False)
    module = compile_module(model)
    x = np.ones((3, 2, 2))
    x[1] = [[0.5, 0.5], [-0.5, 0.5]]
    w = np.array([[[0.3, 0.3], [0.3, -0.3]]])
    check(module, _torch_reduction(op, (1, 2), False), {"w": w}, {"x": x})
    x[2, 0, 1] = np.nan
    with np.errstate(invalid="ignore"):
        r = module.forward({"w": w}, {"x": x})[0]["r"]
    assert np.isnan(r[2]) and np.isfinite(r[:2]).all()


def test_longer_and_symbolic_reductions_stay_numpy_reductions():
    m = sg.Model("long_reductions")
    x = m.input("x", ("n", 5))
    y = m.input("y", ("n", "k"))
    w = m.param("w", (5,))
    m.loss(sg.sum(sg.max(x * w, axis=1)) + sg.sum(sg.max(y, axis=1) * sg.sum(w)))
    body = _function(generate(m)[0])
    assert ".max(axis=1)" in body and "np.maximum" not in body


def _relu_mlp():
    m = sg.Model("relu_mlp")
    x, y = m.input("x", ("batch", 4)), m.input("y", ("batch",))
    W1, b1 = m.param("W1", (8, 4)), m.param("b1", (8,))
    w2 = m.param("w2", (8,))
    h = sg.relu(x @ W1.T + b1)
    hits = sg.where(h > 0.5, 1.0, 0.0)  # a 0/1 mask the loss reads
    m.loss(sg.mean((h @ w2 - y) ** 2) + sg.mean(hits * h))
    return m


def _torch_relu_mlp(p, i):
    h = torch.relu(i["x"] @ p["W1"].T + p["b1"])
    hits = torch.where(h > 0.5, 1.0, 0.0).double()
    return ((h @ p["w2"] - i["y"]) ** 2).mean() + (hits * h).mean(), {}


def test_relu_derivative_and_masks_are_comparisons_and_agree_with_torch():
    source = generate(_relu_mlp())[0]
    body = _function(source)
    assert "np.heaviside" not in body and ", 1.0, 0.0)" not in body
    assert "> 0.0" in body
    rng = np.random.default_rng(5)
    params = {"W1": normal(rng, 8, 4), "b1": normal(rng, 8), "w2": normal(rng, 8)}
    inputs = {"x": normal(rng, 16, 4), "y": normal(rng, 16)}
    inputs["x"][:2] = 0.0  # rows where the pre-activation is exactly the bias
    params["b1"][:3] = 0.0  # relu'(0) = 0, as torch
    module = compile_module(_relu_mlp())
    check(module, _torch_relu_mlp, params, inputs)
    loss, grads = module.value_and_grad(params, inputs)
    assert all(g.dtype == np.float64 for g in grads.values())


def test_relu_before_a_max_pool_is_masked_by_multiplying():
    """The pool's adjoint divides by the count of each window's maxima (ties split), an
    array made from relu(x) but through a comparison, so never 0: relu's derivative
    stays a product with x > 0 (np.where, the masked form kept for factors that can be
    infinite where relu(x) = 0, is 4x slower)."""
    m = sg.Model("relu_pool")
    x = m.input("x", ("B", 2, 4, 4))
    w = m.param("w", (2, 1, 1))
    h = sg.relu(x * w)
    pooled = h.reshape((-1, 2, 2, 2, 2, 2)).max(axis=(3, 5))
    m.loss(sg.sum(pooled**2))
    assert "np.where" not in _function(generate(m)[0])

    def reference(p, i):
        h = torch.relu(i["x"] * p["w"])
        return (torch.nn.functional.max_pool2d(h, 2) ** 2).sum(), {}

    rng = np.random.default_rng(9)
    params, inputs = {"w": normal(rng, 2, 1, 1)}, {"x": normal(rng, 3, 2, 4, 4)}
    check(compile_module(m), reference, params, inputs)
