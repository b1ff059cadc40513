"""Round 29 of new-user models, aimed at the day's code-generation changes, with PyTorch
float64 and central finite differences as the judges: reductions over at most 4 static
elements printed as elementwise ops on slices (sum/max/min/mean/var/std, keepdims both
ways, negative axes, axis tuples out of order, leading axes, 1-element axes mixed in,
transposed/reshaped/reversed/strided views and sliding windows, 3- and 4-way ties split
as torch's amax/amin, -inf and NaN entries, softmax/log_softmax/logsumexp over 2-3
classes at +-900, constant-valued arrays, a 2x2 max-pool unrolled at n = 1 and vectorized
with ties, Hessians through all of them); ReLU's derivative and 0/1 masks printed as
comparisons (sg.where(c, 1.0, 0.0) as float64 outputs, masks times masks, masks in sums
and denominators, relu of relu, leaky relu, clip at its exact bounds with a learned lower
bound, nn.ReLU6's port, one-hot labels from an int64 input, a 0-d mask); the relu
derivative masked where a factor is singular at relu(x) = 0 (sqrt(relu), relu**0.5,
relu**(1/3), guarded 1/relu and log, log1p, relu**1.5 and **2.5 Hessians) at x = 0 and
x < 0; the 0-d scale of a matmul operand moved onto the product (learned scales, /n,
transposed operands, vector-matrix, matrix-vector, batched, outer products, a PINN with a
learned wave number); and both halves of sg.slogdet from one call (batched, with sg.det,
halves split between outputs and loss, two matrices, a singular one).

Everything above agrees with torch to ~1e-9 (loss, outputs, gradients, Hessians).
Found and fixed: the relu masking applied only inside one fused elementwise formula
(symbolic.relu_masked, called from partial), so sqrt(relu(x)) still gave nan gradients,
where torch's threshold_backward gives 0, whenever relu(x) was its own graph node: relu
used twice, relu declared as an output, a row sum of relus under a sqrt, and sg.grad
through sqrt(relu) (there even the loss was nan). Now optimize.mask_relu_gradients
masks relu's derivative wherever the factor it multiplies divides by (or takes a root
of) an array computed from that relu.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
    normal,
    rel,
    torch_twin,
)

import symgrad as sg
from symgrad.cli import generate

torch = pytest.importorskip("torch")
F = torch.nn.functional

T_REDUCE = {"max": torch.amax, "min": torch.amin, "sum": torch.sum, "mean": torch.mean}


def _function(source: str, name: str = "value_and_grad") -> str:
    start = source.index(f"def {name}(")
    end = source.find("\ndef ", start + 1)
    return source[start : end if end > 0 else None]


def _agree(build, reference, params, inputs, hessian=False, fd=True):
    """Compile ``build(hessian)``, compare with the torch twin (and its Hessian) and,
    if ``fd``, with central differences (not at kinks: ties, relu(0))."""
    module = compile_module(build(hessian))
    check(module, reference, params, inputs)
    if fd:
        assert_matches_central_differences(module, params, inputs)
    if hessian:
        assert_second_order_agrees(module, reference, params, inputs, scaled=True)
    return module


# ================================================================ 1. short reductions

SHORT = [  # (op, axis, keepdims) over x of shape (n, 2, 1, 2): every reduction <= 4
    ("max", (-1, 1), True),
    ("min", (3, 1), False),
    ("sum", (-3, -1), False),
    ("mean", (2, 1, 3), True),
    ("max", (2, 3), False),  # a 1-element axis with a 2-element one
    ("sum", 1, True),
]


@pytest.mark.parametrize("op, axis, keepdims", SHORT)
def test_short_reductions_odd_axes_agree_with_torch_and_hessian(op, axis, keepdims):
    def build(hessian):
        m = sg.Model("short_axes", hessian=hessian)
        x = m.input("x", ("n", 2, 1, 2))
        w = m.param("w", (2, 1, 2))
        r = getattr(sg, op)(sg.sin(x * w) + w, axis=axis, keepdims=keepdims)
        m.output("r", r)
        m.loss(sg.sum(r * r * r))
        return m

    def reference(p, i):
        r = T_REDUCE[op](
            torch.sin(i["x"] * p["w"]) + p["w"], dim=axis, keepdim=keepdims
        )
        return (r**3).sum(), {"r": r}

    rng = np.random.default_rng(1)
    source = generate(build(False))[0]
    assert f".{op}(axis=" not in _function(source, "forward")
    params, inputs = {"w": normal(rng, 2, 1, 2)}, {"x": normal(rng, 5, 2, 1, 2)}
    _agree(build, reference, params, inputs, hessian=True)


def test_short_reductions_over_a_leading_fixed_axis_auto_unrolled():
    """All sizes fixed and small: value_and_grad runs the unrolled code, forward and
    backward the sliced NumPy one; reductions over axis 0 and (0, 2)."""

    def build(hessian):
        m = sg.Model("leading_axes", hessian=hessian)
        x = m.input("x", (3, 2, 2))
        w = m.param("w", (3, 2, 2))
        y = sg.tanh(x * w)
        a = sg.max(y, axis=0)
        b = sg.min(y, axis=(0, 2), keepdims=True)
        c = sg.mean(y, axis=(2, 0))
        m.output("a", a)
        m.loss(sg.sum(a**2) + sg.sum(b) + sg.sum(c * c))
        return m

    def reference(p, i):
        y = torch.tanh(i["x"] * p["w"])
        a = y.amax(0)
        b = y.amin((0, 2), keepdim=True)
        c = y.mean((2, 0))
        return (a**2).sum() + b.sum() + (c * c).sum(), {"a": a}

    rng = np.random.default_rng(2)
    params, inputs = {"w": normal(rng, 3, 2, 2)}, {"x": normal(rng, 3, 2, 2)}
    _agree(build, reference, params, inputs, hessian=True)


@pytest.mark.parametrize("op", ["max", "min"])
def test_three_and_four_way_ties_split_as_torch_amax_amin(op):
    """Rows of 3 and 4 equal values (and pairs): torch's amax/amin gives each 1/3 or
    1/4 of the gradient; the pairwise np.maximum chain must count all of them."""

    def build(hessian):
        m = sg.Model("ties", hessian=hessian)
        x, y = m.input("x", ("n", 3)), m.input("y", ("n", 2, 2))
        w, v = m.param("w", (3,)), m.param("v", (2, 2))
        r = getattr(sg, op)(x * w, axis=1)
        q = getattr(sg, op)(y * v, axis=(2, 1))
        m.output("r", r)
        m.loss(sg.sum(r * r) + sg.sum(q * q * q))
        return m

    fn = T_REDUCE[op]

    def reference(p, i):
        r = fn(i["x"] * p["w"], dim=1)
        q = fn(i["y"] * p["v"], dim=(2, 1))
        return (r * r).sum() + (q**3).sum(), {"r": r}

    x = np.array([[1.0, 1.0, 1.0], [2.0, -1.0, 2.0], [-1.0, -1.0, 0.5], [0.0, 3, 0]])
    y = np.array([[[1.0, 1.0], [1.0, 1.0]], [[2.0, -2.0], [-2.0, 2.0]]])
    y = np.concatenate([y, y + 0.5])
    params = {"w": np.ones(3), "v": np.ones((2, 2))}
    module = _agree(build, reference, params, {"x": x, "y": y}, hessian=True, fd=False)
    grads = module.value_and_grad(params, {"x": x, "y": y})[1]
    assert grads["w"][0] != 0.0  # the first of three tied entries gets its share


def test_short_reductions_of_views_transposes_reshapes_and_strides():
    def build(hessian):
        m = sg.Model("views", hessian=hessian)
        x = m.input("x", ("n", 3, 2))
        w = m.param("w", (3, 2))
        y = sg.tanh(x * w)
        r1 = sg.max(sg.swapaxes(y, 1, 2), axis=-1)
        r2 = sg.min(y.reshape(("n", 6))[:, ::2], axis=1, keepdims=True)
        r3 = sg.sum(y[:, ::-1, :], axis=(2, 1))
        r4 = sg.mean(sg.transpose(y, (2, 0, 1)), axis=0)
        r5 = sg.max(sg.expand_dims(y, 1)[:, 0], axis=1)
        m.output("r1", r1)
        m.output("r4", r4)
        m.loss(sg.sum(r1 * r1) + sg.sum(r2 * r4) + sg.sum(r3**3) + sg.sum(sg.exp(r5)))
        return m

    def reference(p, i):
        y = torch.tanh(i["x"] * p["w"])
        r1 = y.transpose(1, 2).amax(-1)
        r2 = y.reshape(-1, 6)[:, ::2].amin(1, keepdim=True)
        r3 = y.flip(1).sum((2, 1))
        r4 = y.permute(2, 0, 1).mean(0)
        r5 = y[:, None][:, 0].amax(1)
        loss = (r1 * r1).sum() + (r2 * r4).sum() + (r3**3).sum() + torch.exp(r5).sum()
        return loss, {"r1": r1, "r4": r4}

    rng = np.random.default_rng(3)
    params, inputs = {"w": normal(rng, 3, 2)}, {"x": normal(rng, 5, 3, 2)}
    _agree(build, reference, params, inputs, hessian=True)


def _windows_model(hessian):
    m = sg.Model("windows", hessian=hessian)
    x = m.input("x", ("n", 7))
    w = m.param("w", (7,))
    y = x * w
    win = sg.sliding_window_view(y, 3, axis=1)
    r = sg.max(win, axis=-1) + sg.min(win, axis=-1) + sg.mean(win, axis=-1)
    r2 = sg.max(sg.sliding_window_view(y, 2, axis=1)[:, ::2], axis=-1)
    m.output("r", r)
    m.loss(sg.sum(r**2) + sg.sum(r2))
    return m


def _torch_windows(p, i):
    y = i["x"] * p["w"]
    win = y.unfold(1, 3, 1)
    r = win.amax(-1) + win.amin(-1) + win.mean(-1)
    r2 = y.unfold(1, 2, 2).amax(-1)
    return (r**2).sum() + r2.sum(), {"r": r}


def test_sliding_window_max_min_mean_of_three_with_ties():
    rng = np.random.default_rng(4)
    tied = np.round(normal(rng, 4, 7))  # integers: many tied windows
    _agree(_windows_model, _torch_windows, {"w": np.ones(7)}, {"x": tied}, True, False)
    params, inputs = {"w": normal(rng, 7)}, {"x": normal(rng, 4, 7)}
    _agree(_windows_model, _torch_windows, params, inputs, hessian=True)


def test_var_and_std_over_short_axes_including_a_constant_row():
    def build(hessian):
        m = sg.Model("short_var", hessian=hessian)
        x = m.input("x", ("n", 4))
        w = m.param("w", (4,))
        y = x * w
        v = (
            sg.var(y, axis=1)
            + sg.std(y, axis=-1, ddof=1)
            + sg.std(y[:, :2], axis=1, keepdims=True)[:, 0]
        )
        m.output("v", v)
        m.loss(sg.sum(v))
        return m

    def reference(p, i):
        y = i["x"] * p["w"]
        v = y.var(1, unbiased=False) + y.std(-1)
        v = v + y[:, :2].std(1, unbiased=False, keepdim=True)[:, 0]
        return v.sum(), {"v": v}

    rng = np.random.default_rng(5)
    params, inputs = {"w": normal(rng, 4)}, {"x": normal(rng, 6, 4)}
    _agree(build, reference, params, inputs, hessian=True)
    x = normal(rng, 6, 4)
    x[2] = 1.0  # std of a constant row: gradient 0, as torch
    _agree(build, reference, {"w": np.ones(4)}, {"x": x}, fd=False)


def _softmax_model(hessian):
    m = sg.Model("short_softmax", hessian=hessian)
    x, y = m.input("x", ("n", 3)), m.input("y", ("n", 3))
    W = m.param("W", (3, 3))
    z = x @ W
    lp = sg.log_softmax(z, axis=1)
    s = sg.softmax(z[:, :2], axis=-1)
    lse = sg.logsumexp(z.reshape(("n", 3, 1)), axis=1)
    m.output("s", s)
    m.loss(-sg.mean(sg.sum(lp * y, axis=1)) + sg.sum(s[:, 0] ** 2) + sg.sum(lse))
    return m


def _torch_softmax(p, i):
    z = i["x"] @ p["W"]
    lp = torch.log_softmax(z, 1)
    s = torch.softmax(z[:, :2], -1)
    lse = torch.logsumexp(z.reshape(-1, 3, 1), 1)
    return -(lp * i["y"]).sum(1).mean() + (s[:, 0] ** 2).sum() + lse.sum(), {"s": s}


def test_softmax_log_softmax_logsumexp_over_two_and_three_classes():
    rng = np.random.default_rng(6)
    params = {"W": normal(rng, 3, 3)}
    inputs = {"x": normal(rng, 5, 3), "y": normal(rng, 5, 3)}
    _agree(_softmax_model, _torch_softmax, params, inputs, hessian=True)
    big = {"x": 900 * np.sign(normal(rng, 5, 3)), "y": normal(rng, 5, 3)}
    _agree(_softmax_model, _torch_softmax, {"W": np.eye(3)}, big, fd=False)


def test_short_max_of_masked_minus_inf_entries_and_nan():
    def build(hessian):
        m = sg.Model("short_inf", hessian=hessian)
        x = m.input("x", ("n", 3))
        w = m.param("w", (3,))
        r = sg.max(x + w, axis=1)
        m.output("r", r)
        m.loss(sg.sum(sg.tanh(r)))
        return m

    def reference(p, i):
        r = torch.amax(i["x"] + p["w"], 1)
        return torch.tanh(r).sum(), {"r": r}

    rng = np.random.default_rng(7)
    x = normal(rng, 4, 3)
    x[0, 1], x[1] = -np.inf, [-np.inf, -np.inf, 0.5]
    x[2, 2] = -1e308
    params = {"w": normal(rng, 3)}
    module = _agree(build, reference, params, {"x": x}, fd=False)
    x[3, 0] = np.nan
    with np.errstate(invalid="ignore"):
        r = module.forward(params, {"x": x})[0]["r"]
    assert np.isnan(r[3]) and np.isfinite(r[:3]).all()


def _pool_model(hessian):
    m = sg.Model("relu_pool", hessian=hessian)
    x = m.input("x", ("n", 4, 4))
    K, s = m.param("K", (4, 4)), m.param("s", ())
    a = sg.relu(x * K - 0.1)
    p = a.reshape(("n", 2, 2, 2, 2)).max(axis=(2, 4))
    q = sg.mean(a.reshape(("n", 2, 2, 2, 2)), axis=(4, 2), keepdims=True)
    r = (s * p.reshape(("n", 4))) @ K
    m.output("p", p)
    m.loss(sg.sum(r**2) + sg.sum(q) + sg.sum(sg.where(p > 0.5, 1.0, 0.0) * p))
    return m


def _torch_pool(params, i):
    a = torch.relu(i["x"] * params["K"] - 0.1)
    p = a.reshape(-1, 2, 2, 2, 2).amax(dim=(2, 4))
    q = a.reshape(-1, 2, 2, 2, 2).mean(dim=(4, 2), keepdim=True)
    r = (params["s"] * p.reshape(-1, 4)) @ params["K"]
    hits = torch.where(p > 0.5, 1.0, 0.0).double()
    return (r**2).sum() + q.sum() + (hits * p).sum(), {"p": p}


def test_relu_max_pool_unrolled_at_one_and_vectorized_with_ties():
    rng = np.random.default_rng(8)
    x = np.round(normal(rng, 1, 4, 4), 1)
    x[0, :2, :2] = 1.1  # a window of four ties
    x[0, 2:, 2:] = 0.1  # a window of four relu zeros
    params = {"K": np.ones((4, 4)), "s": np.array(0.3)}
    model = _pool_model(False)
    model.unroll(n=1)
    check_unrolled(compile_module(model), _torch_pool, params, {"x": x})
    tied = {"x": np.concatenate([x, x[:, ::-1]])}
    _agree(_pool_model, _torch_pool, params, tied, hessian=True, fd=False)
    params = {"K": normal(rng, 4, 4), "s": np.array(-0.7)}
    _agree(_pool_model, _torch_pool, params, {"x": normal(rng, 3, 4, 4)}, True)


def test_short_reductions_of_constant_valued_arrays():
    def build(hessian):
        m = sg.Model("const_reduce", hessian=hessian)
        x = m.input("x", ("n", 3))
        s, w = m.param("s", ()), m.param("w", (3,))
        r1 = sg.max(sg.ones_like(x) * s, axis=1)
        r2 = sg.sum(sg.full_like(x, 2.0), axis=1)
        r3 = sg.min(sg.broadcast_to(s, (5, 3)), axis=1, keepdims=True)
        r4 = sg.max(sg.broadcast_to(s * s, (2, 2)), axis=0)
        r5 = sg.sum(sg.zeros_like(x) + w, axis=1)
        r6 = sg.mean(sg.broadcast_to(w * s, (4, 3)), axis=0)
        m.loss(
            sg.sum(r1 * sg.sum(x, axis=1))
            + sg.sum(r2 * r1)
            + sg.sum(r3)
            + sg.sum(r4**2)
            + sg.sum(r5 * r1)
            + sg.sum(r6**2)
        )
        return m

    def reference(p, i):
        x, s, w = i["x"], p["s"], p["w"]
        r1 = (torch.ones_like(x) * s).amax(1)
        r2 = torch.full_like(x, 2.0).sum(1)
        r3 = torch.broadcast_to(s, (5, 3)).amin(1, keepdim=True)
        r4 = torch.broadcast_to(s * s, (2, 2)).amax(0)
        r5 = (torch.zeros_like(x) + w).sum(1)
        r6 = torch.broadcast_to(w * s, (4, 3)).mean(0)
        loss = (r1 * x.sum(1)).sum() + (r2 * r1).sum() + r3.sum() + (r4**2).sum()
        return loss + (r5 * r1).sum() + (r6**2).sum(), {}

    rng = np.random.default_rng(9)
    params = {"s": np.array(0.6), "w": normal(rng, 3)}
    _agree(build, reference, params, {"x": normal(rng, 4, 3)}, hessian=True)


def test_counting_a_bool_mask_over_three_columns_and_int_sums_refused():
    """A count of True per row is sg.sum(sg.where(keep, 1.0, 0.0)) (a float, through
    the sliced sum); an int64 input itself cannot be summed."""
    m = sg.Model("mask_count")
    x = m.input("x", ("n", 3))
    keep = m.input("keep", ("n", 3), dtype="bool")
    w = m.param("w", (3,))
    count = sg.sum(sg.where(keep, 1.0, 0.0), axis=1)
    m.output("count", count)
    m.loss(sg.sum(count * (x @ w)))
    module = compile_module(m)
    rng = np.random.default_rng(10)
    k = rng.random((6, 3)) < 0.5
    x = normal(rng, 6, 3)
    outputs = module.forward({"w": np.ones(3)}, {"x": x, "keep": k})[0]
    assert outputs["count"].dtype == np.float64
    np.testing.assert_array_equal(outputs["count"], k.sum(axis=1))
    assert rel(outputs["loss"], np.sum(k.sum(axis=1) * x.sum(axis=1))) < 1e-12

    bad = sg.Model("int_sum")
    labels = bad.input("labels", ("n", 3), dtype="int64")
    with pytest.raises(sg.ModelError, match="int64"):
        sg.sum(labels, axis=1)


# ====================================================================== 2. masks


def test_where_masks_as_float64_outputs_products_sums_and_denominators():
    def build(hessian):
        m = sg.Model("mask_outputs", hessian=hessian)
        x = m.input("x", ("n", 3))
        w = m.param("w", (3,))
        z = x * w
        hit = sg.where(z > 0.2, 1.0, 0.0)
        both = sg.where((z > 0) & (x < 1), 1.0, 0.0)
        m.output("hit", hit)
        m.output("both", both)
        m.output("prod", hit * both)
        m.output("either", hit + both)
        m.loss(sg.sum(hit * z) + sg.sum(both * hit * z**2) + sg.sum(hit / (1.0 + both)))
        return m

    def reference(p, i):
        z = i["x"] * p["w"]
        hit = torch.where(z > 0.2, 1.0, 0.0).double()
        both = torch.where((z > 0) & (i["x"] < 1), 1.0, 0.0).double()
        loss = (hit * z).sum() + (both * hit * z**2).sum() + (hit / (1 + both)).sum()
        return loss, {
            "hit": hit,
            "both": both,
            "prod": hit * both,
            "either": hit + both,
        }

    assert ", 1.0, 0.0)" not in generate(build(False))[0]
    rng = np.random.default_rng(11)
    params, inputs = {"w": normal(rng, 3)}, {"x": normal(rng, 6, 3)}
    module = _agree(build, reference, params, inputs, hessian=True, fd=False)
    outputs = module.forward(params, inputs)[0]
    for name in ("hit", "both", "prod", "either"):
        assert outputs[name].dtype == np.float64 and outputs[name].shape == (6, 3)


def test_relu_of_relu_and_masks_in_sums_on_a_large_batch_with_exact_zeros():
    def build(hessian):
        m = sg.Model("relu_chain", hessian=hessian)
        x = m.input("x", ("n", 3))
        W = m.param("W", (3, 3))
        a = x @ W
        e = sg.where(a > 0, 1.0, 0.0) + sg.where(a < -0.5, 1.0, 0.0)
        m.output("e", e)
        m.loss(
            sg.sum(sg.relu(sg.relu(a) - 0.1))
            + sg.sum(sg.relu(sg.relu(sg.relu(a))))
            + sg.sum(e * a)
            + sg.sum(sg.relu(a) / (1.0 + e))
        )
        return m

    def reference(p, i):
        a = i["x"] @ p["W"]
        e = torch.where(a > 0, 1.0, 0.0).double()
        e = e + torch.where(a < -0.5, 1.0, 0.0).double()
        loss = torch.relu(torch.relu(a) - 0.1).sum()
        loss = loss + torch.relu(torch.relu(torch.relu(a))).sum()
        return loss + (e * a).sum() + (torch.relu(a) / (1 + e)).sum(), {"e": e}

    rng = np.random.default_rng(12)
    x = normal(rng, 2000, 3)
    x[:5] = 0.0  # a = 0 exactly: relu'(0) = 0
    _agree(build, reference, {"W": normal(rng, 3, 3)}, {"x": x}, hessian=True)


def _activations_model(hessian):
    m = sg.Model("activations", hessian=hessian)
    x = m.input("x", ("n", 4))
    W, b = m.param("W", (4, 4)), m.param("b", (4,))
    a = x @ W + b
    h1, h2 = sg.relu(a), sg.relu(-a + 0.5)
    leaky = sg.where(a > 0, a, 0.01 * a)
    m.loss(
        sg.sum(h1 * h2)
        + sg.sum(sg.relu(h1) * h1)
        + sg.sum(leaky**2)
        + sg.sum(sg.clip(a, 0.0, 6.0) * sg.clip(a, -1.0, 1.0))
        + sg.sum(sg.relu(a) ** 2 / (1.0 + h2))
    )
    return m


def _torch_activations(p, i):
    a = i["x"] @ p["W"] + p["b"]
    h1, h2 = torch.relu(a), torch.relu(-a + 0.5)
    loss = (h1 * h2).sum() + (torch.relu(h1) * h1).sum()
    loss = loss + (F.leaky_relu(a, 0.01) ** 2).sum()
    loss = loss + (torch.clamp(a, 0, 6) * torch.clamp(a, -1, 1)).sum()
    return loss + (torch.relu(a) ** 2 / (1 + h2)).sum(), {}


def test_leaky_relu_clamp_and_relu_products_at_kinks_and_hessian():
    rng = np.random.default_rng(13)
    x = normal(rng, 8, 4)
    x[:2] = 0.0
    params = {"W": normal(rng, 4, 4), "b": normal(rng, 4)}
    params["b"][:2] = [0.0, 0.5]  # a = 0 and -a + 0.5 = 0 on the zero rows
    _agree(_activations_model, _torch_activations, params, {"x": x}, True, False)
    params = {"W": normal(rng, 4, 4), "b": normal(rng, 4)}
    _agree(
        _activations_model, _torch_activations, params, {"x": normal(rng, 8, 4)}, True
    )


def test_clip_at_its_exact_bounds_with_a_learned_lower_bound():
    def build(hessian):
        m = sg.Model("clip_bounds", hessian=hessian)
        x = m.input("x", ("n", 4))
        w, lo = m.param("w", (4,)), m.param("lo", ())
        a = x * w
        c = sg.clip(a, lo, 1.0)
        m.loss(
            sg.sum(c * c * x)
            + sg.sum(sg.exp(sg.clip(a, None, 0.5)))
            + sg.sum(sg.relu(a) ** 2 * sg.relu(x))
        )
        return m

    def reference(p, i):
        a = i["x"] * p["w"]
        c = torch.clamp(a, min=p["lo"], max=torch.tensor(1.0, dtype=torch.float64))
        loss = (c * c * i["x"]).sum() + torch.exp(torch.clamp(a, max=0.5)).sum()
        return loss + (torch.relu(a) ** 2 * torch.relu(i["x"])).sum(), {}

    x = np.array([[-0.5, 0.0, 1.0, 0.5], [0.25, -1.0, 2.0, 0.0], [0.5, 1.0, -0.5, 1.0]])
    params = {"w": np.ones(4), "lo": np.array(-0.5)}
    _agree(build, reference, params, {"x": x}, hessian=True, fd=False)


def test_relu6_ported_with_where_matches_torch_at_0_and_6():
    """torch's F.relu6 (hardtanh) passes no gradient at 0 and 6 exactly, unlike clamp
    (sg.clip, which the README documents as torch.clamp): a port with sg.where agrees
    with F.relu6 there, sg.clip with torch.clamp."""

    def build(hessian, clip=False):
        m = sg.Model("relu6", hessian=hessian)
        x = m.input("x", ("n",))
        w = m.param("w", ())
        a = x * w
        r6 = sg.clip(a, 0.0, 6.0) if clip else sg.where(a <= 0, 0.0, sg.minimum(a, 6.0))
        if not clip:
            r6 = sg.where(a >= 6, 6.0, r6)
        m.loss(sg.sum(r6 * x))
        return m

    def reference(p, i, clip=False):
        a = i["x"] * p["w"]
        r6 = torch.clamp(a, 0, 6) if clip else F.relu6(a)
        return (r6 * i["x"]).sum(), {}

    inputs = {"x": np.array([0.0, 6.0, 3.0, -1.0, 7.0])}
    params = {"w": np.array(1.0)}
    _agree(build, reference, params, inputs, fd=False)
    check(
        compile_module(build(False, clip=True)),
        lambda p, i: reference(p, i, clip=True),
        params,
        inputs,
    )


def test_one_hot_from_int64_labels_in_a_cross_entropy():
    def build(hessian):
        m = sg.Model("one_hot_ce", hessian=hessian)
        x = m.input("x", ("n", 4))
        labels = m.input("labels", ("n", 1), dtype="int64")
        W = m.param("W", (4, 3))
        z = x @ W
        onehot = sg.concatenate(
            [sg.where(labels == k, 1.0, 0.0) for k in range(3)], axis=1
        )
        m.output("onehot", onehot)
        m.loss(-sg.mean(sg.sum(onehot * sg.log_softmax(z, axis=1), axis=1)))
        return m

    def reference(p, i):
        z = i["x"] @ p["W"]
        onehot = F.one_hot(i["labels"][:, 0], 3).double()
        return F.cross_entropy(z, i["labels"][:, 0]), {"onehot": onehot}

    rng = np.random.default_rng(14)
    inputs = {"x": normal(rng, 7, 4), "labels": rng.integers(0, 3, (7, 1))}
    _agree(build, reference, {"W": normal(rng, 4, 3)}, inputs, hessian=True)


def test_a_zero_d_mask_times_an_array():
    def build(hessian):
        m = sg.Model("scalar_mask", hessian=hessian)
        x = m.input("x", ("n", 3))
        s, w = m.param("s", ()), m.param("w", (3,))
        gate = sg.where(s > 0, 1.0, 0.0)
        y = gate * x * w + sg.relu(s) * x
        m.output("y", y)
        m.loss(sg.sum(y**2))
        return m

    def reference(p, i):
        gate = torch.where(p["s"] > 0, 1.0, 0.0).double()
        y = gate * i["x"] * p["w"] + torch.relu(p["s"]) * i["x"]
        return (y**2).sum(), {"y": y}

    rng = np.random.default_rng(15)
    inputs = {"x": normal(rng, 5, 3)}
    for s in (0.7, -0.7, 0.0):
        params = {"s": np.array(s), "w": normal(rng, 3)}
        _agree(build, reference, params, inputs, hessian=True, fd=s != 0.0)


# =========================================================== 3. relu masked backward

SINGULAR = {  # name: (symgrad, torch) of a = x * w + c
    "sqrt_relu": (lambda a: sg.sqrt(sg.relu(a)), lambda a: torch.sqrt(torch.relu(a))),
    "pow_half": (lambda a: sg.relu(a) ** 0.5, lambda a: torch.relu(a) ** 0.5),
    "cube_root": (lambda a: sg.relu(a) ** (1 / 3), lambda a: torch.relu(a) ** (1 / 3)),
    "guarded_reciprocal": (
        lambda a: sg.where(a > 0, 1.0 / sg.relu(a), 0.0),
        lambda a: torch.where(a > 0, 1.0 / torch.relu(a), 0.0),
    ),
    "guarded_log": (
        lambda a: sg.where(a > 0, sg.log(sg.relu(a)), 0.0),
        lambda a: torch.where(a > 0, torch.log(torch.relu(a)), 0.0),
    ),
    "log1p_relu": (
        lambda a: sg.log1p(sg.relu(a)),
        lambda a: torch.log1p(torch.relu(a)),
    ),
    "relu_sqrt_relu": (
        lambda a: sg.relu(a) * sg.sqrt(sg.relu(a)),
        lambda a: torch.relu(a) * torch.sqrt(torch.relu(a)),
    ),
    "sqrt_relu_neg": (
        lambda a: sg.sqrt(sg.relu(0.3 - a)),
        lambda a: torch.sqrt(torch.relu(0.3 - a)),
    ),
    "sqrt_relu_plus_eps": (
        lambda a: sg.sqrt(sg.relu(a) + 1e-12),
        lambda a: torch.sqrt(torch.relu(a) + 1e-12),
    ),
}

X_KINKS = np.array([[0.0, -1.0, 0.7], [0.3, 0.0, -0.2], [0.5, 0.15, 0.3]])


def _singular_model(f, hessian, out=False):
    m = sg.Model("singular_at_zero", hessian=hessian)
    x = m.input("x", ("n", 3))
    w, c = m.param("w", (3,)), m.param("c", (3,))
    v = f(x * w + c)
    if out:
        m.output("v", v)
    m.loss(sg.sum(v * sg.cos(x)))
    return m


def _torch_singular(tf, out=False):
    def reference(p, i):
        v = tf(i["x"] * p["w"] + p["c"])
        return (v * torch.cos(i["x"])).sum(), ({"v": v} if out else {})

    return reference


@pytest.mark.parametrize("name", sorted(SINGULAR))
def test_relu_derivative_masks_factors_singular_at_zero_as_torch(name):
    """At a = 0 (x = 0 and the 0.3 - a kink) and a < 0 torch's threshold_backward
    gives 0; the gradient with respect to c is then finite, and exactly 0 for the
    masked entries' columns, where 0 * inf used to be nan."""
    f, tf = SINGULAR[name]
    params = {"w": np.array([1.0, 2.0, 1.0]), "c": np.zeros(3)}
    if name == "sqrt_relu_neg":
        params["w"] = np.array([1.0, 2.0, 2.0])  # 0.3 - a = 0 at x = 0.15, w = 2
    _agree(
        lambda h: _singular_model(f, h, out=True),
        _torch_singular(tf, out=True),
        params,
        {"x": X_KINKS},
        fd=False,
    )


@pytest.mark.parametrize("power", [0.5, 1.5, 2.5])
def test_hessians_through_relu_powers_at_zero(power):
    def f(a):
        return sg.relu(a) ** power

    def tf(a):
        return torch.relu(a) ** power

    params = {"w": np.array([1.0, 2.0, 1.0]), "c": np.zeros(3)}
    if power == 0.5:  # torch's double backward is nan at 0 for sqrt: keep away
        params["c"] = np.array([0.05, 0.1, 0.4])
        x = np.abs(X_KINKS)
    else:
        x = X_KINKS
    _agree(
        lambda h: _singular_model(f, h),
        _torch_singular(tf),
        params,
        {"x": x},
        True,
        False,
    )


def test_plain_relu_mlp_is_unaffected_by_the_masking():
    def build(hessian):
        m = sg.Model("relu_mlp29", hessian=hessian)
        x, y = m.input("x", ("batch", 3)), m.input("y", ("batch",))
        W1, b1, w2 = m.param("W1", (6, 3)), m.param("b1", (6,)), m.param("w2", (6,))
        h = sg.relu(x @ W1.T + b1)
        m.loss(sg.mean((h @ w2 - y) ** 2) + 0.1 * sg.mean(h))
        return m

    def reference(p, i):
        h = torch.relu(i["x"] @ p["W1"].T + p["b1"])
        return ((h @ p["w2"] - i["y"]) ** 2).mean() + 0.1 * h.mean(), {}

    body = _function(generate(build(False))[0])
    assert "np.where" not in body and "np.heaviside" not in body
    rng = np.random.default_rng(16)
    params = {"W1": normal(rng, 6, 3), "b1": normal(rng, 6), "w2": normal(rng, 6)}
    inputs = {"x": normal(rng, 12, 3), "y": normal(rng, 12)}
    _agree(build, reference, params, inputs, hessian=True)
    params["b1"][:2], inputs["x"][:3] = 0.0, 0.0
    _agree(build, reference, params, inputs, fd=False)


X_ZERO_ROW = np.array([[0.0, -1.0, 0.7], [-0.3, 0.0, -0.2], [0.5, 0.2, 0.1]])
W_ZERO_ROW = {"w": np.array([1.0, 2.0, 1.0])}
RELU_NODE_REASON = (
    "symgrad/symbolic.py:_relu_masked only rewrites H(x) * g inside partial(), i.e. "
    "when relu and the singular factor are one fused elementwise formula; when relu(x) "
    "is its own graph node, its adjoint H(x) * g multiplies the cotangent g = "
    "1/(2 sqrt(relu(x))) = inf at relu(x) = 0 (0 * inf = nan, with a 'divide by zero' "
    "warning) where torch's threshold_backward masks it to 0. Repro: "
)


def _relu_node_model(kind):
    m = sg.Model(f"relu_node_{kind}")
    x = m.input("x", ("n", 3))
    w = m.param("w", (3,))
    r = sg.relu(x * w)
    if kind == "twice":
        m.loss(sg.sum(sg.sqrt(r) + r))
    elif kind == "output":
        m.output("r", r)
        m.loss(sg.sum(sg.sqrt(r)))
    else:
        m.loss(sg.sum(sg.sqrt(sg.sum(r, axis=1))))
    return m


def _torch_relu_node(kind):
    def reference(p, i):
        r = torch.relu(i["x"] * p["w"])
        if kind == "twice":
            return (torch.sqrt(r) + r).sum(), {}
        if kind == "output":
            return torch.sqrt(r).sum(), {"r": r}
        return torch.sqrt(r.sum(1)).sum(), {}

    return reference


def test_sqrt_of_a_relu_used_twice_masks_as_torch():
    module = compile_module(_relu_node_model("twice"))
    with np.errstate(divide="ignore", invalid="ignore"):  # judged by values
        check(module, _torch_relu_node("twice"), W_ZERO_ROW, {"x": X_ZERO_ROW})


def test_sqrt_of_a_relu_declared_as_output_masks_as_torch():
    module = compile_module(_relu_node_model("output"))
    with np.errstate(divide="ignore", invalid="ignore"):  # judged by values
        check(module, _torch_relu_node("output"), W_ZERO_ROW, {"x": X_ZERO_ROW})


def test_sqrt_of_a_row_sum_of_relus_with_a_dead_row_masks_as_torch():
    module = compile_module(_relu_node_model("rowsum"))
    with np.errstate(divide="ignore", invalid="ignore"):  # judged by values
        check(module, _torch_relu_node("rowsum"), W_ZERO_ROW, {"x": X_ZERO_ROW})


def test_grad_through_sqrt_relu_inside_the_model_is_finite_as_torch():
    m = sg.Model("pinn_sqrt_relu")
    x = m.input("x", ("n",))
    w = m.param("w", (3,))
    du = sg.grad(sg.sum(sg.sqrt(sg.relu(x[:, None] * w))), x)
    m.output("du", du)
    m.loss(sg.sum(du**2))

    def reference(p, i):
        xt = i["x"].clone().requires_grad_(True)
        u = torch.sqrt(torch.relu(xt[:, None] * p["w"])).sum()
        du = torch.autograd.grad(u, xt, create_graph=True)[0]
        return (du**2).sum(), {"du": du}

    params, inputs = {"w": np.array([1.0, -1.0, 0.5])}, {"x": np.array([0, 1, -2, 0.5])}
    expected_loss, _, expected = torch_twin(reference, params, inputs)
    assert np.isfinite(expected_loss) and np.isfinite(expected["w"]).all()
    with np.errstate(divide="ignore", invalid="ignore"):  # judged by values
        check(compile_module(m), reference, params, inputs)


# ========================================================= 4. scales of matmul operands


def test_zero_d_scales_of_matmul_operands_learned_and_sizes():
    def build(hessian):
        m = sg.Model("matmul_scales", hessian=hessian)
        x = m.input("x", ("n", 3))
        s, t = m.param("s", ()), m.param("t", ())
        W, V = m.param("W", (3, 4)), m.param("V", (4, 2))
        h1 = sg.tanh((-2.0 * s * x) @ W)
        h2 = (t * h1 / x.shape[0]) @ (s * V)
        h3 = (s * h1).T @ (t * x)
        v = (s * sg.sum(x, axis=0)) @ W  # vector-matrix
        u = (W * t) @ (V[:, 0] * s)  # matrix-vector
        m.output("h2", h2)
        m.loss(sg.sum(h2**2) + sg.sum(sg.sin(h3)) + sg.sum(v**2) + sg.sum(u))
        return m

    def reference(p, i):
        x, s, t, W, V = i["x"], p["s"], p["t"], p["W"], p["V"]
        h1 = torch.tanh((-2.0 * s * x) @ W)
        h2 = (t * h1 / x.shape[0]) @ (s * V)
        h3 = (s * h1).T @ (t * x)
        v = (s * x.sum(0)) @ W
        u = (W * t) @ (V[:, 0] * s)
        loss = (h2**2).sum() + torch.sin(h3).sum() + (v**2).sum() + u.sum()
        return loss, {"h2": h2}

    rng = np.random.default_rng(17)
    params = {"s": np.array(0.7), "t": np.array(-1.3)}
    params.update(W=normal(rng, 3, 4), V=normal(rng, 4, 2))
    _agree(build, reference, params, {"x": normal(rng, 5, 3)}, hessian=True)
    params.update(s=np.array(0.0))  # a zero scale: all of h1's gradient is zero
    _agree(build, reference, params, {"x": normal(rng, 5, 3)}, fd=False)


def test_scales_on_batched_transposed_and_outer_products():
    def build(hessian):
        m = sg.Model("batched_scales", hessian=hessian)
        x = m.input("x", ("B", 3, 4))
        s = m.param("s", ())
        W, U = m.param("W", (4, 2)), m.param("U", (3, 3))
        y = (s * x) @ W
        z = (U * s) @ x
        q = sg.swapaxes(x * s, 1, 2) @ (x * 2.0)
        o = (s * x[:, :, :1]) @ (s * W[:1, :])  # contracting one element
        o2 = sg.outer(s * x[0, 0], W[:, 0] * s)
        m.loss(
            sg.sum(y**2)
            + sg.sum(sg.tanh(z))
            + sg.sum(q * q)
            + sg.sum(o**2)
            + sg.sum(o2)
        )
        return m

    def reference(p, i):
        x, s, W, U = i["x"], p["s"], p["W"], p["U"]
        y, z = (s * x) @ W, (U * s) @ x
        q = (x * s).transpose(1, 2) @ (x * 2.0)
        o = (s * x[:, :, :1]) @ (s * W[:1, :])
        o2 = torch.outer(s * x[0, 0], W[:, 0] * s)
        loss = (y**2).sum() + torch.tanh(z).sum() + (q * q).sum() + (o**2).sum()
        return loss + o2.sum(), {}

    rng = np.random.default_rng(18)
    params = {"s": np.array(0.4), "W": normal(rng, 4, 2), "U": normal(rng, 3, 3)}
    _agree(build, reference, params, {"x": normal(rng, 2, 3, 4)}, hessian=True)


def test_pinn_with_a_learned_wave_number_and_second_derivative():
    def build(hessian):
        m = sg.Model("pinn29", hessian=hessian)
        x = m.input("x", ("n", 1))
        W1, b1 = m.param("W1", (8, 1)), m.param("b1", (8,))
        W2, k = m.param("W2", (1, 8)), m.param("k", ())
        u = sg.tanh(x @ W1.T + b1) @ W2.T
        du = sg.grad(sg.sum(u), x)
        d2u = sg.grad(sg.sum(du), x)
        m.loss(sg.mean((d2u + k * k * u) ** 2) + sg.mean((u[:1] - 1.0) ** 2))
        return m

    def reference(p, i):
        x = i["x"].clone().requires_grad_(True)
        u = torch.tanh(x @ p["W1"].T + p["b1"]) @ p["W2"].T
        du = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
        d2u = torch.autograd.grad(du.sum(), x, create_graph=True)[0]
        return ((d2u + p["k"] ** 2 * u) ** 2).mean() + ((u[:1] - 1) ** 2).mean(), {}

    rng = np.random.default_rng(19)
    params = {"W1": normal(rng, 8, 1), "b1": normal(rng, 8)}
    params.update(W2=normal(rng, 1, 8), k=np.array(1.3))
    inputs = {"x": np.linspace(-1, 1, 7)[:, None]}
    _agree(build, reference, params, inputs, hessian=True)


# ================================================================= 5. slogdet halves


def test_batched_slogdet_both_halves_with_det_and_hessian():
    def build(hessian):
        m = sg.Model("slogdet29", hessian=hessian)
        x = m.input("x", ("B", 3, 3))
        A = m.param("A", (3, 3))
        M = x + A
        sign, lad = sg.slogdet(M)
        d = sg.det(M)
        m.output("sign", sign)
        m.output("lad", lad)
        m.output("d", d)
        m.loss(
            sg.sum(sign * lad) + 0.1 * sg.sum(d**2) + 0.3 * sg.sum(sign * sg.exp(lad))
        )
        return m

    def reference(p, i):
        M = i["x"] + p["A"]
        sign, lad = torch.linalg.slogdet(M)
        d = torch.linalg.det(M)
        loss = (sign * lad).sum() + 0.1 * (d**2).sum() + 0.3 * (sign * lad.exp()).sum()
        return loss, {"sign": sign, "lad": lad, "d": d}

    forward = _function(generate(build(False))[0], "forward")
    assert forward.count("np.linalg.slogdet(") == 1
    rng = np.random.default_rng(20)
    params, inputs = {"A": normal(rng, 3, 3)}, {"x": normal(rng, 4, 3, 3)}
    _agree(build, reference, params, inputs, hessian=True)


def test_slogdet_halves_split_between_outputs_and_loss_of_two_matrices():
    def build(hessian):
        m = sg.Model("slogdet_split", hessian=hessian)
        x = m.input("x", ("B", 2, 2))
        A = m.param("A", (2, 2))
        M = x @ A
        sign, lad = sg.slogdet(M)
        s2, l2 = sg.slogdet(sg.swapaxes(M, -1, -2) + 2.0 * sg.eye(2))
        m.output("sign", sign)
        m.output("s2", s2)
        m.loss(sg.mean(lad) + sg.sum(l2 * s2))
        return m

    def reference(p, i):
        M = i["x"] @ p["A"]
        sign, lad = torch.linalg.slogdet(M)
        eye = torch.eye(2, dtype=torch.float64)
        s2, l2 = torch.linalg.slogdet(M.transpose(-1, -2) + 2.0 * eye)
        return lad.mean() + (l2 * s2).sum(), {"sign": sign, "s2": s2}

    source = generate(build(False))[0]
    assert len(re.findall(r"\w+, \w+ = np\.linalg\.slogdet\(", source)) >= 2
    rng = np.random.default_rng(21)
    params, inputs = {"A": normal(rng, 2, 2)}, {"x": normal(rng, 5, 2, 2)}
    _agree(build, reference, params, inputs, hessian=True)


def test_slogdet_sign_only_output_of_a_singular_matrix():
    """Only the sign of one matrix (no gradient: an output) and only the log |det| of
    another (the loss); a singular first matrix has sign 0 and log |det| -inf, as
    torch's."""
    m = sg.Model("slogdet_singular")
    x = m.input("x", ("B", 2, 2))
    A = m.param("A", (2, 2))
    sign, lad = sg.slogdet(x)
    m.output("sign", sign)
    m.output("lad", lad)
    _, l2 = sg.slogdet(x @ A + 3.0 * sg.eye(2))
    m.loss(sg.sum(l2))
    module = compile_module(m)
    x = np.array([[[1.0, 2.0], [2.0, 4.0]], [[0.5, -1.0], [2.0, 1.0]]])
    A = np.array([[0.3, 0.1], [-0.2, 0.4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs = module.forward({"A": A}, {"x": x})[0]
        loss, grads = module.value_and_grad({"A": A}, {"x": x})
    t_sign, t_lad = torch.linalg.slogdet(torch.tensor(x))
    np.testing.assert_array_equal(outputs["sign"], t_sign.numpy())
    assert outputs["lad"][0] == -np.inf and rel(outputs["lad"][1], t_lad[1]) < 1e-12
    tA = torch.tensor(A, requires_grad=True)
    t_loss = torch.linalg.slogdet(torch.tensor(x) @ tA + 3.0 * torch.eye(2))[1].sum()
    t_loss.backward()
    assert rel(loss, t_loss.detach().numpy()) < 1e-12
    assert rel(grads["A"], tA.grad.numpy()) < 1e-10
