"""Round 20, adversarial: the operations added with NumPy's names, against PyTorch
(float64) and central differences.

Covered: sg.prod (several and unsorted axes, keepdims, size-1 axes, zero factors and
ties, Hessians, unrolled code); sg.norm and sg.std through masked_sqrt (zero vectors,
constant rows, as divisors: unit rows and z-scores, Hessians, unrolled); sg.dot,
sg.squeeze, sg.swapaxes, sg.moveaxis, sg.diff, x.flatten(), len(x); sg.stop_gradient
(first and second derivatives against torch's detach, chained, on outputs, next to the
same undetached value, unrolled); slice bounds written with the axis' own size
(T - 1, 1:T, T - 3:, with None, ellipsis, int indices and steps; minimum sizes checked
by the generated module; other axes' sizes refused); reshapes to sizes computed from
x.shape and ops on their results; sg.erfc of negated arguments deep in the tail and
sg.arctan2 at the origin (and their Hessians, the erfc one deep in the tail against
differences of the gradient); torch-spelling hints; ``symgrad.verify`` (tape vs
generated) on a few of the models, and ``symgrad build`` of a model file.

Bugs are strict xfails whose reason is the diagnosis.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
    spy_unrolled,
)

import symgrad as sg
from symgrad.verify import verify

torch = pytest.importorskip("torch")


def _unrolled_check(model, reference, params, inputs, name, **sizes):
    if sizes:
        model.unroll(**sizes)
    module = compile_module(model)
    calls, restore = spy_unrolled(module)
    try:
        check(module, reference, params, inputs)
    finally:
        restore()
    assert set(calls) == {name}, calls
    return module


# ---------------------------------------------------------------------------- prod


def prod_axes_model(hessian=False):
    m = sg.Model("prod_axes", hessian=hessian)
    x = m.param("x", (2, 3, 4))
    c = m.param("c", (3, 1))
    a = sg.prod(x, axis=(2, 0))  # unsorted axes: (3,)
    b = x.prod(axis=(-1, 0), keepdims=True)  # (1, 3, 1)
    whole = sg.prod(x, keepdims=True)  # (1, 1, 1)
    one = sg.prod(c, axis=1)  # a size-1 axis: (3,)
    m.output("a", a)
    m.output("b", b)
    m.loss(sg.sum(sg.tanh(a)) + sg.sum(b * c) + sg.sum(whole) * 0.5 + sg.sum(one * a))

    def reference(t, _):
        x, c = t["x"], t["c"]
        a = x.prod(dim=2).prod(dim=0)
        b = x.prod(dim=-1, keepdim=True).prod(dim=0, keepdim=True)
        whole = x.prod()
        one = c.prod(dim=1)
        loss = torch.tanh(a).sum() + (b * c).sum() + whole * 0.5 + (one * a).sum()
        return loss, {"a": a, "b": b}

    return m, reference


def prod_data(rng, zeros=0):
    x = rng.uniform(0.6, 1.4, (2, 3, 4)) * rng.choice([-1.0, 1.0], (2, 3, 4))
    if zeros >= 1:
        x[1, 2, 3] = 0.0  # one zero in slice a[2]
    if zeros >= 2:
        x[0, 2, 1] = 0.0  # a second zero in the same slice
        x[1, 0, 0] = 0.0
    return {"x": x, "c": rng.standard_normal((3, 1))}, {}


@pytest.mark.parametrize("zeros", [0, 1, 2])
def test_prod_over_unsorted_axes_agrees_with_torch(zeros):
    model, reference = prod_axes_model()
    params, inputs = prod_data(np.random.default_rng(zeros), zeros)
    module = compile_module(model)
    check(module, reference, params, inputs)
    assert np.shape(module.forward(params, inputs)[0]["b"]) == (1, 3, 1)


@pytest.mark.parametrize("zeros", [0, 1])
def test_prod_hessian_agrees_with_torch(zeros):
    model, reference = prod_axes_model(hessian=True)
    params, inputs = prod_data(np.random.default_rng(10 + zeros), zeros)
    module = compile_module(model)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_prod_unrolled_with_zero_factors():
    model, reference = prod_axes_model()
    params, inputs = prod_data(np.random.default_rng(7), 2)
    _unrolled_check(model, reference, params, inputs, "_value_and_grad_unrolled")


def test_prod_of_a_symbolic_batch_row_and_ties():
    m = sg.Model("prod_rows")
    X = m.param("X", ("B", 3))
    r = m.output("r", X.prod(axis=-1))
    m.loss(sg.sum(r * r) + sg.sum(sg.max(X, axis=1)))

    def reference(t, _):
        r = t["X"].prod(dim=-1)
        return (r * r).sum() + t["X"].amax(dim=1).sum(), {"r": r}

    module = compile_module(m)
    for B in (1, 4):
        X = np.random.default_rng(B).standard_normal((B, 3))
        X[0] = [0.5, 0.5, 0.0]  # a tie and a zero
        check(module, reference, {"X": X}, {})


# ---------------------------------------------------------------------------- norm/std


def norms_model(hessian=False):
    m = sg.Model("norms20", hessian=hessian)
    X = m.param("X", ("B", 4))
    c = m.param("c", (4,))
    Y = m.param("Y", (2, 3, 2))
    d = X - c  # zero rows where X == c
    rn = sg.norm(d, axis=-1, keepdims=True)
    unit = d / (rn + 0.5)
    cols = sg.norm(X, axis=0)
    slab = sg.norm(Y, axis=(0, 2), keepdims=True)  # (1, 3, 1)
    z = (X - sg.mean(X, axis=0)) / (sg.std(X, axis=0) + 0.1)
    m.output("rn", rn)
    m.loss(
        sg.sum(unit**2 * c)
        + sg.sum(cols * c)
        + sg.sum(slab * Y)
        + sg.norm(Y) ** 2
        + sg.sum(sg.sin(z))
        + sg.sum(sg.std(X, axis=1, ddof=1))
    )

    def reference(t, _):
        X, c, Y = t["X"], t["c"], t["Y"]
        d = X - c
        rn = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
        unit = d / (rn + 0.5)
        cols = torch.linalg.vector_norm(X, dim=0)
        slab = torch.linalg.vector_norm(Y, dim=(0, 2), keepdim=True)
        z = (X - X.mean(dim=0)) / (X.std(dim=0, unbiased=False) + 0.1)
        loss = (unit**2 * c).sum() + (cols * c).sum() + (slab * Y).sum()
        loss = loss + torch.linalg.vector_norm(Y) ** 2 + torch.sin(z).sum()
        return loss + X.std(dim=1).sum(), {"rn": rn}

    return m, reference


def norms_data(rng, B=5, degenerate=False):
    X = rng.standard_normal((B, 4))
    c = rng.standard_normal(4)
    Y = rng.standard_normal((2, 3, 2))
    if degenerate:
        X[0] = c  # a zero row of X - c
        X[-1] = 0.7  # a constant row: std 0
        X[:, 2] = 0.3  # a constant column: std 0 in the z-scores
        Y[:, 1, :] = 0.0  # a zero slab
    return {"X": X, "c": c, "Y": Y}, {}


@pytest.mark.parametrize("degenerate", [False, True])
@pytest.mark.parametrize("B", [1, 5])
def test_norms_and_stds_agree_with_torch(B, degenerate):
    if B == 1 and degenerate:
        B = 2  # X[0] == c and X[-1] constant: two rows
    model, reference = norms_model()
    params, inputs = norms_data(np.random.default_rng(B), B, degenerate)
    check(compile_module(model), reference, params, inputs)


def test_norms_hessian_agrees_with_torch():
    model, reference = norms_model(hessian=True)
    params, inputs = norms_data(np.random.default_rng(3))
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )


def test_norms_unrolled_with_zero_rows():
    model, reference = norms_model()
    params, inputs = norms_data(np.random.default_rng(4), 3, degenerate=True)
    _unrolled_check(model, reference, params, inputs, "_value_and_grad_B_3", B=3)


def test_unit_rows_and_zscores_as_divisors_hessian():
    m = sg.Model("divisors", hessian=True)
    X = m.param("X", (3, 4))
    unit = X / sg.norm(X, axis=1, keepdims=True)
    z = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True, ddof=1)
    m.loss(sg.sum(unit * z) + sg.norm(unit[:, 1:]) + sg.sum(z[:, :2] ** 3))

    def reference(t, _):
        X = t["X"]
        unit = X / torch.linalg.vector_norm(X, dim=1, keepdim=True)
        z = (X - X.mean(dim=1, keepdim=True)) / X.std(dim=1, keepdim=True)
        loss = (unit * z).sum() + torch.linalg.vector_norm(unit[:, 1:])
        return loss + (z[:, :2] ** 3).sum(), {}

    params = {"X": np.random.default_rng(5).standard_normal((3, 4))}
    module = compile_module(m)
    check(module, reference, params, {})
    assert_second_order_agrees(module, reference, params, {}, scaled=True)


def test_norm_and_std_of_a_zero_vector_in_a_hessian_model_have_zero_gradient():
    """The gradient (not the Hessian, nan in torch) at the kink, from a hessian build."""
    m = sg.Model("kinks", hessian=True)
    v = m.param("v", (3,))
    m.loss(sg.norm(v) + sg.std(v) + sg.norm(v - 1.0) ** 2)

    def reference(t, _):
        v = t["v"]
        loss = torch.linalg.vector_norm(v) + v.std(unbiased=False)
        return loss + torch.linalg.vector_norm(v - 1.0) ** 2, {}

    module = compile_module(m)
    check(module, reference, {"v": np.zeros(3)}, {})
    check(module, reference, {"v": np.ones(3)}, {})


# ---------------------------------------------------------------------------- stop_gradient


def detach_model(hessian=False):
    m = sg.Model("detached", hessian=hessian)
    w = m.param("w", ("n",))
    W = m.param("W", (2, 3))
    x = m.input("x", ("n",))
    wd = sg.stop_gradient(w)
    twice = sg.stop_gradient(sg.stop_gradient(sg.tanh(w) * x))
    m.output("wd", wd)
    m.output("frozen", sg.stop_gradient(W @ W.T))
    loss = (
        sg.sum(wd * w**2)  # the same value detached and not, side by side
        + sg.sum(w * wd)
        + sg.sum(twice * sg.sin(w))
        + sg.sum(sg.stop_gradient(W) * W**3)
        + sg.sum(sg.exp(sg.stop_gradient(sg.sum(W * W))) * W) * 0.01
        + sg.sum(sg.stop_gradient(x) * w)
    )
    m.loss(loss)

    def reference(t, i):
        w, W, x = t["w"], t["W"], i["x"]
        wd = w.detach()
        twice = (torch.tanh(w) * x).detach().detach()
        loss = (
            (wd * w**2).sum()
            + (w * wd).sum()
            + (twice * torch.sin(w)).sum()
            + (W.detach() * W**3).sum()
            + (torch.exp((W * W).sum().detach()) * W).sum() * 0.01
            + (x * w).sum()
        )
        return loss, {"wd": wd, "frozen": (W @ W.T).detach()}

    return m, reference


def detach_data(rng, n=4):
    return (
        {"w": rng.standard_normal(n), "W": rng.standard_normal((2, 3))},
        {"x": rng.standard_normal(n)},
    )


@pytest.mark.parametrize("n", [1, 4])
def test_stop_gradient_first_order(n):
    model, reference = detach_model()
    params, inputs = detach_data(np.random.default_rng(n), n)
    check(compile_module(model), reference, params, inputs)


def test_stop_gradient_second_order():
    model, reference = detach_model(hessian=True)
    params, inputs = detach_data(np.random.default_rng(8))
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )


def test_stop_gradient_unrolled():
    model, reference = detach_model()
    params, inputs = detach_data(np.random.default_rng(9), 3)
    _unrolled_check(model, reference, params, inputs, "_value_and_grad_n_3", n=3)


def test_stop_gradient_of_a_value_also_used_undetached():
    """tanh(w) and its detached copy are the same value: CSE may share the forward
    computation, never the derivative."""
    m = sg.Model("same_value", hessian=True)
    w = m.param("w", (3,))
    t = sg.tanh(w)
    branch = sg.where(w > 0, sg.stop_gradient(w) * w, w**2)
    m.loss(sg.sum(t * sg.stop_gradient(t)) + sg.sum(branch))

    def reference(p, _):
        w = p["w"]
        t = torch.tanh(w)
        branch = torch.where(w > 0, w.detach() * w, w**2)
        return (t * t.detach()).sum() + branch.sum(), {}

    params = {"w": np.array([0.3, -1.2, 2.0])}
    module = compile_module(m)
    check(module, reference, params, {})
    assert_second_order_agrees(module, reference, params, {}, scaled=True)


def test_a_loss_that_is_all_stop_gradient_has_zero_gradients():
    m = sg.Model("frozen_loss", hessian=True)
    w = m.param("w", (3,))
    m.loss(sg.sum(sg.stop_gradient(w) ** 2))
    module = compile_module(m)
    w = np.array([1.0, -2.0, 3.0])
    loss, grads = module.value_and_grad({"w": w}, {})
    assert float(loss) == 14.0 and np.all(grads["w"] == 0)
    assert np.all(module.hessian({"w": w}, {}) == 0)


# ---------------------------------------------------------------------------- shapes


def shape_ops_model(hessian=False):
    m = sg.Model("shape_ops20", hessian=hessian)
    A = m.param("A", (1, 3, 1, 2))
    M = m.param("M", (3, 2))
    v = m.param("v", (2,))
    r = m.param("r", (1, 3))
    s = sg.squeeze(A, axis=(0, -2))  # (3, 2)
    t = sg.moveaxis(A, [-1, 0], [0, 2])  # (2, 3, 1, 1)
    u = sg.swapaxes(t, 1, -1)  # (2, 1, 1, 3)
    p = u.squeeze()  # (2, 3)
    q = sg.dot(v, p)  # (3,)
    mv = sg.dot(M, v) + sg.dot(sg.dot(r, M)[0], v) * sg.dot(v, v)  # (3,)
    dd = sg.diff(s, axis=0)  # (2, 2)
    d1 = sg.diff(r, axis=0)  # (0, 3): a size-1 axis
    flat = (s * M).flatten()  # (6,)
    m.loss(
        sg.sum(q * mv)
        + sg.sum(dd**2)
        + sg.sum(d1)
        + sg.sum(sg.tanh(flat)) * len(M)
        + sg.sum(sg.dot(r, r.T))
        + sg.sum(sg.diff(sg.squeeze(r)) ** 3)
    )

    def reference(t, _):
        A, M, v, r = t["A"], t["M"], t["v"], t["r"]
        s = A.squeeze(0).squeeze(-2)
        tt = torch.movedim(A, (-1, 0), (0, 2))
        p = tt.transpose(1, -1).squeeze()
        q = v @ p
        mv = M @ v + ((r @ M)[0] @ v) * (v @ v)
        dd = torch.diff(s, dim=0)
        d1 = torch.diff(r, dim=0)
        flat = (s * M).flatten()
        loss = (q * mv).sum() + (dd**2).sum() + d1.sum() + torch.tanh(flat).sum() * 3
        loss = loss + (r @ r.T).sum() + (torch.diff(r.squeeze()) ** 3).sum()
        return loss, {}

    return m, reference


def shape_ops_data(rng):
    return {
        "A": rng.standard_normal((1, 3, 1, 2)),
        "M": rng.standard_normal((3, 2)),
        "v": rng.standard_normal(2),
        "r": rng.standard_normal((1, 3)),
    }, {}


def test_shape_ops_agree_with_torch():
    model, reference = shape_ops_model()
    params, inputs = shape_ops_data(np.random.default_rng(11))
    module = compile_module(model)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_shape_ops_hessian():
    model, reference = shape_ops_model(hessian=True)
    params, inputs = shape_ops_data(np.random.default_rng(12))
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )


def test_shape_ops_unrolled():
    model, reference = shape_ops_model()
    params, inputs = shape_ops_data(np.random.default_rng(13))
    _unrolled_check(model, reference, params, inputs, "_value_and_grad_unrolled")


def test_diff_of_a_symbolic_axis_at_its_minimum():
    """diff along T needs nothing of T: at T = 1 it is empty, as in NumPy and torch."""
    m = sg.Model("diffs")
    X = m.param("X", ("B", "T"))
    w = m.param("w", (2,))
    m.loss(sg.sum(sg.diff(X) ** 2) * w[0] + sg.sum(sg.diff(X, axis=0) * w[1]))

    def reference(t, _):
        X, w = t["X"], t["w"]
        return (torch.diff(X) ** 2).sum() * w[0] + (
            torch.diff(X, dim=0) * w[1]
        ).sum(), {}

    module = compile_module(m)
    rng = np.random.default_rng(14)
    for shape in [(3, 4), (1, 4), (3, 2)]:
        check(module, reference, {"X": rng.standard_normal(shape), "w": [0.5, 2.0]}, {})


# ---------------------------------------------------------------------------- T-bounds


def bounds_model(hessian=False):
    m = sg.Model("bounds20", hessian=hessian)
    x = m.input("x", ("B", "T"))
    P = m.param("P", ("T",))
    w = m.param("w", (4,))
    T = x.shape[1]
    a = x[:, : T - 1] * P[1:T]  # (B, T - 1)
    b = x[None, :, T - 3 :, None]  # (1, B, 3, 1)
    c = x[..., 1:T] - x[..., : T - 1]  # (B, T - 1)
    d = x[0, T - 2 :]  # (2,)
    e = P[: P.shape[0] - 1] * P[1 : P.shape[0]]
    y = x[:, 1:T:1]  # (B, T - 1)
    L = y.shape[1]
    f = y[:, L - 3 :][:, ::-2]  # (B, 2): a step on the fixed length; needs T >= 4
    m.loss(
        sg.sum(sg.tanh(a * w[0]))
        + sg.sum(b[0, :, :, 0] * w[1:4])
        + sg.sum(c**2) * w[0]
        + sg.sum(d * w[2:])
        + sg.sum(e)
        + sg.sum(f) * w[3]
    )

    def reference(t, i):
        x, P, w = i["x"], t["P"], t["w"]
        T = x.shape[1]
        a = x[:, : T - 1] * P[1:T]
        b = x[None, :, T - 3 :, None]
        c = x[..., 1:T] - x[..., : T - 1]
        d = x[0, T - 2 :]
        e = P[: T - 1] * P[1:T]
        f = x[:, 1:T:1][:, T - 4 :].flip(1)[:, ::2]
        loss = torch.tanh(a * w[0]).sum() + (b[0, :, :, 0] * w[1:4]).sum()
        loss = loss + (c**2).sum() * w[0] + (d * w[2:]).sum() + e.sum()
        return loss + f.sum() * w[3], {}

    return m, reference


def bounds_data(rng, B, T):
    return (
        {"P": rng.standard_normal(T), "w": rng.standard_normal(4)},
        {"x": rng.standard_normal((B, T))},
    )


@pytest.mark.parametrize("B, T", [(1, 4), (2, 5), (3, 7)])
def test_bounds_with_the_axis_size_agree_with_torch(B, T):
    model, reference = bounds_model()
    params, inputs = bounds_data(np.random.default_rng(T), B, T)
    check(compile_module(model), reference, params, inputs)


def test_bounds_hessian_and_unrolled():
    model, reference = bounds_model(hessian=True)
    params, inputs = bounds_data(np.random.default_rng(15), 2, 4)
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )
    model, reference = bounds_model()
    _unrolled_check(
        model, reference, params, inputs, "_value_and_grad_B_2_T_4", B=2, T=4
    )


def test_bounds_below_the_minimum_size_are_refused_by_the_module():
    model, _ = bounds_model()
    module = compile_module(model)
    params, inputs = bounds_data(np.random.default_rng(16), 2, 3)
    with pytest.raises(ValueError, match="T"):
        module.value_and_grad(params, inputs)


def test_bounds_on_a_square_matrix_of_symbolic_size():
    """Both axes are T: a bound from either axis' shape fits the other; the smallest
    T the slices allow (2) runs the unrolled code, T = 1 is refused."""

    def build():
        m = sg.Model("square20", hessian=True)
        S = m.param("S", ("T", "T"))
        T = S.shape[0]
        U = S[: T - 1, 1:T]
        V = S[T - 1 : T, T - 2 :]
        W = S[..., None][T - 2 :, : S.shape[1] - 1, 0]
        D = sg.diff(S[:, T - 2 :], axis=-1)
        m.loss(sg.sum(U**2) + sg.sum(V * 3.0) + sg.sum(sg.tanh(W)) + sg.sum(D**3))
        return m

    def reference(p, _):
        S = p["S"]
        T = S.shape[0]
        loss = (S[: T - 1, 1:T] ** 2).sum() + (S[T - 1 : T, T - 2 :] * 3.0).sum()
        loss = loss + torch.tanh(S[..., None][T - 2 :, : T - 1, 0]).sum()
        return loss + (torch.diff(S[:, T - 2 :], dim=-1) ** 3).sum(), {}

    module = compile_module(build())
    for n in (2, 5):
        params = {"S": np.random.default_rng(n).standard_normal((n, n))}
        check(module, reference, params, {})
        assert_second_order_agrees(module, reference, params, {}, scaled=True)
    with pytest.raises(ValueError, match="T >= 2"):
        module.value_and_grad({"S": np.ones((1, 1))}, {})
    params = {"S": np.random.default_rng(0).standard_normal((2, 2))}
    _unrolled_check(build(), reference, params, {}, "_value_and_grad_T_2", T=2)


@pytest.mark.parametrize(
    "index",
    [
        lambda x: x[:, : x.shape[0] - 1],  # the other axis' size
        lambda x: x[: x.shape[1] - 1],
        lambda x: x[:, x.shape[1] :],
        lambda x: x[:, : x.shape[1] + 1],
        lambda x: x[:, 1 : 2 * x.shape[1]],
    ],
)
def test_bounds_with_another_size_are_refused(index):
    m = sg.Model("other")
    with pytest.raises(sg.ShapeError):
        index(m.input("x", ("B", "T")))


# ---------------------------------------------------------------------------- reshape


def reshaped_model(hessian=False):
    m = sg.Model("reshaped20", hessian=hessian)
    x = m.input("x", ("B", 4, "T"))
    W = m.param("W", (2, 3))
    b = m.param("b", (2, 3))
    P = m.param("P", ("B", 6))
    y = sg.tanh(x) * W[0, 0]
    y2 = y.reshape(x.shape[0], 2, 2 * x.shape[2])  # (B, 2, 2T)
    z = x.reshape(x.shape[0] * 2, -1)  # (2B, 2T)
    h = sg.sum(y2, axis=2) @ W  # (B, 3)
    g = sg.sum(z, axis=1).reshape(x.shape[0], 2) @ W + b[0]  # (B, 3)
    Q = P.reshape(P.shape[0] * 2, 3) * b[1]  # (2B, 3)
    R = Q.reshape(-1, 2, 3) + b  # (B, 2, 3)
    m.loss(sg.sum(h * g) + sg.sum(R**2) + sg.sum(sg.mean(y2, axis=0) ** 2))

    def reference(t, i):
        x, W, b, P = i["x"], t["W"], t["b"], t["P"]
        B, _, T = x.shape
        y = torch.tanh(x) * W[0, 0]
        y2 = y.reshape(B, 2, 2 * T)
        z = x.reshape(B * 2, -1)
        h = y2.sum(dim=2) @ W
        g = z.sum(dim=1).reshape(B, 2) @ W + b[0]
        R = (P.reshape(B * 2, 3) * b[1]).reshape(-1, 2, 3) + b
        loss = (h * g).sum() + (R**2).sum() + (y2.mean(dim=0) ** 2).sum()
        return loss, {}

    return m, reference


def reshaped_data(rng, B, T):
    return (
        {
            "W": rng.standard_normal((2, 3)),
            "b": rng.standard_normal((2, 3)),
            "P": rng.standard_normal((B, 6)),
        },
        {"x": rng.standard_normal((B, 4, T))},
    )


@pytest.mark.parametrize("B, T", [(1, 1), (3, 2)])
def test_reshapes_to_computed_sizes_agree_with_torch(B, T):
    model, reference = reshaped_model()
    params, inputs = reshaped_data(np.random.default_rng(B + T), B, T)
    module = compile_module(model)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_reshapes_hessian_and_unrolled():
    model, reference = reshaped_model(hessian=True)
    params, inputs = reshaped_data(np.random.default_rng(17), 2, 1)
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )
    model, reference = reshaped_model()
    _unrolled_check(
        model, reference, params, inputs, "_value_and_grad_B_2_T_1", B=2, T=1
    )


def test_reshaped_module_refuses_mismatched_sizes():
    model, _ = reshaped_model()
    module = compile_module(model)
    params, inputs = reshaped_data(np.random.default_rng(18), 3, 2)
    bad = dict(inputs, x=np.zeros((3, 5, 2)))
    with pytest.raises(ValueError, match="x"):
        module.value_and_grad(params, bad)
    bad_params = dict(params, P=np.zeros((2, 6)))  # B = 2 against x's B = 3
    with pytest.raises(ValueError, match="B"):
        module.value_and_grad(bad_params, inputs)


def test_reshape_needing_an_even_size_is_refused_when_declared():
    """(B, T) -> (B, 2, -1) would need an even T: refused when declared (NumPy and
    torch take it at run time), rather than a wrong or late failure."""
    m = sg.Model("halves")
    x = m.input("x", ("B", "T"))
    with pytest.raises(sg.ShapeError, match="-1"):
        x.reshape(x.shape[0], 2, -1)
    y = x.reshape(x.shape[0], 1, x.shape[1])  # sizes that divide: fine
    w = m.param("w", (1,))
    m.loss(sg.sum(sg.sum(y, axis=2) * w))
    module = compile_module(m)
    loss, grads = module.value_and_grad({"w": np.ones(1)}, {"x": np.ones((2, 3))})
    assert float(loss) == 6.0 and grads["w"].tolist() == [6.0]


def test_std_over_a_symbolic_axis_with_ddof_at_its_minimum():
    m = sg.Model("zscores")
    X = m.param("X", ("B", 3))
    z = (X - X.mean(axis=0)) / (X.std(axis=0, ddof=1) + 0.01)
    m.loss(sg.sum(z**3) + sg.sum(X.std(axis=0, ddof=1)))

    def reference(t, _):
        X = t["X"]
        z = (X - X.mean(dim=0)) / (X.std(dim=0) + 0.01)
        return (z**3).sum() + X.std(dim=0).sum(), {}

    module = compile_module(m)
    X = np.array([[0.3, 1.0, -2.0], [0.3, -0.5, 1.5]])  # a constant column
    check(module, reference, {"X": X}, {})
    with pytest.raises(ValueError, match="B"):
        module.value_and_grad({"X": X[:1]}, {})


def test_prod_over_32_with_zero_factors():
    m = sg.Model("p32")
    w = m.param("w", (32,))
    V = m.param("V", (2, 32))
    m.loss(sg.prod(w) + sg.sum(sg.prod(V, axis=-1) ** 2))

    def reference(t, _):
        return t["w"].prod() + (t["V"].prod(dim=-1) ** 2).sum(), {}

    rng = np.random.default_rng(21)
    params = {"w": rng.uniform(0.8, 1.25, 32), "V": rng.uniform(0.8, 1.25, (2, 32))}
    params["w"][3] = 0.0
    params["V"][1, [4, 9]] = 0.0
    check(compile_module(m), reference, params, {})


# ---------------------------------------------------------------------------- erfc/atan2


def probit_model(hessian=False):
    m = sg.Model("probit20", hessian=hessian)
    a = m.param("a", ())
    b = m.param("b", ())
    t = m.input("t", ("n",))
    s = a * t + b
    m.output("logcdf", sg.log(sg.erfc(-s / math.sqrt(2)) / 2))
    m.loss(
        -sg.sum(sg.log(sg.erfc(-s / math.sqrt(2)) / 2))
        - sg.sum(sg.log(sg.erfc(b - a * t)))
    )

    def reference(t_, i):
        a, b, t = t_["a"], t_["b"], i["t"]
        s = a * t + b
        logcdf = torch.log(torch.special.erfc(-s / math.sqrt(2)) / 2)
        loss = -logcdf.sum() - torch.log(torch.special.erfc(b - a * t)).sum()
        return loss, {"logcdf": logcdf}

    return m, reference


def test_erfc_of_negated_arguments_deep_in_the_tail():
    model, reference = probit_model()
    module = compile_module(model)
    params = {"a": np.array(1.0), "b": np.array(0.0)}
    inputs = {"t": np.array([-25.0, -20.0, -8.0, -1.0, 0.0, 3.0])}
    check(module, reference, params, inputs)
    value = module.forward(params, inputs)[0]["logcdf"][0]
    expected = math.log(math.erfc(25 / math.sqrt(2)) / 2)  # -316.64, not -inf
    assert abs(value - expected) < 1e-12 * abs(expected)


def test_erfc_hessian_and_unrolled():
    model, reference = probit_model(hessian=True)
    params = {"a": np.array(0.8), "b": np.array(-0.3)}
    inputs = {"t": np.array([-6.0, -2.0, 0.5, 4.0])}
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )
    model, reference = probit_model()
    inputs = {"t": np.array([-25.0, -3.0, 1.0])}
    params = {"a": np.array(1.0), "b": np.array(0.0)}
    _unrolled_check(model, reference, params, inputs, "_value_and_grad_n_3", n=3)


def test_erfc_hessian_deep_in_the_tail_against_differences_of_the_gradient():
    """torch's double backward overflows here too (inf): the judge is the central
    difference of the module's own gradient, which is right (checked vs torch). Was a
    strict xfail: H[a, :] was nan, exp(-2 s**2) (0) times (1/erfc(s))**2 (inf)."""
    m = sg.Model("tail", hessian=True)
    a, b = m.param("a", ()), m.param("b", ())
    t = m.input("t", ("n",))
    m.loss(-sg.sum(sg.log(sg.erfc(b - a * t))))
    module = compile_module(m)
    params = {"a": np.array(1.0), "b": np.array(0.0)}
    inputs = {"t": np.array([-20.0, -1.0])}
    eps = 1e-6
    columns = []
    for k in ("a", "b"):
        plus = dict(params, **{k: params[k] + eps})
        minus = dict(params, **{k: params[k] - eps})
        gp, gm = (
            module.value_and_grad(plus, inputs)[1],
            module.value_and_grad(minus, inputs)[1],
        )
        columns.append([(gp[j] - gm[j]) / (2 * eps) for j in ("a", "b")])
    expected = np.array(columns).T
    with np.errstate(all="ignore"):
        H = module.hessian(params, inputs)
    assert np.allclose(H, expected, rtol=1e-5), (H, expected)


def angles_model(hessian=False):
    m = sg.Model("angles20", hessian=hessian)
    p = m.param("p", (3,))
    q = m.param("q", (3,))
    y = m.input("y", (3,))
    ang = sg.arctan2(p * y, q) + sg.arctan2(p, 1.0) + sg.arctan2(0.5, q)
    m.output("ang", ang)
    m.loss(sg.sum(ang * y) + sg.sum(sg.arctan2(p, q) ** 2))

    def reference(t, i):
        p, q, y = t["p"], t["q"], i["y"]
        one = torch.ones_like(q)
        ang = torch.atan2(p * y, q) + torch.atan2(p, one) + torch.atan2(0.5 * one, q)
        return (ang * y).sum() + (torch.atan2(p, q) ** 2).sum(), {"ang": ang}

    return m, reference


ORIGIN = (
    {"p": np.array([0.0, 0.0, 1.0]), "q": np.array([0.0, -1.0, 0.0])},
    {"y": np.array([0.0, 2.0, -1.0])},  # p * y = 0 at q = 0: the origin
)


@pytest.mark.parametrize("hessian", [False, True])
def test_arctan2_at_the_origin_has_torchs_zero_gradient(hessian):
    model, reference = angles_model(hessian=hessian)
    check(compile_module(model), reference, *ORIGIN)


@pytest.mark.xfail(
    strict=True,
    reason="unrolled arctan2 at the origin raises ZeroDivisionError and falls back to "
    "NumPy: the shared 1/(p**2 + q**2) of both partials is CSE'd out of the guarded "
    "Piecewise into an unconditional line (t4_0 = 1.0 / t2_0) in the straight-line code "
    "(symgrad/unroll.py: hoisted temporaries are not guarded by the branch that uses them)",
)
def test_arctan2_at_the_origin_runs_the_unrolled_code():
    model, reference = angles_model()
    _unrolled_check(model, reference, *ORIGIN, "_value_and_grad_unrolled")


def test_arctan2_hessian_off_the_origin():
    model, reference = angles_model(hessian=True)
    rng = np.random.default_rng(19)
    params = {"p": rng.standard_normal(3), "q": rng.standard_normal(3)}
    inputs = {"y": rng.standard_normal(3)}
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )


# ---------------------------------------------------------------------------- hints


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda x: x.exp(), AttributeError, r"sg\.exp\(x\)"),
        (lambda x: x.view(2, 3), AttributeError, r"x\.reshape"),
        (lambda x: x.detach(), AttributeError, r"sg\.stop_gradient\(x\)"),
        (lambda x: x.sigmoid(), AttributeError, r"sg\.sigmoid\(x\)"),
        (lambda x: x.unsqueeze(0), AttributeError, r"sg\.expand_dims"),
        (lambda x: x.clamp(0, 1), AttributeError, r"x\.clip"),
        (lambda x: x.size(), AttributeError, r"x\.shape"),
        (lambda x: x.abs(), AttributeError, r"sg\.abs\(x\)"),
        (lambda x: x.maximum(x), AttributeError, r"sg\.maximum\(x, \.\.\.\)"),
        (lambda x: math.exp(x), TypeError, r"sg\.exp"),
        (lambda x: math.sqrt(sg.sum(x)), TypeError, r"sg\."),
        (lambda x: float(x[0, 0]), TypeError, r"sg\."),
        (lambda x: sg.max(x, x), TypeError, r"sg\.maximum\(a, b\)"),
        (lambda x: sg.min(x, x * 2), TypeError, r"sg\.minimum\(a, b\)"),
        (lambda x: x.max(x), TypeError, r"sg\.maximum"),
        (lambda x: x.t(), AttributeError, r"x\.T"),
    ],
)
def test_torch_spellings_name_numpys(call, error, message):
    m = sg.Model("hints")
    with pytest.raises(error, match=message):
        call(m.param("x", (2, 3)))


@pytest.mark.parametrize("call", [math.sqrt, float])
def test_math_on_a_symbolic_size_names_sg(call):
    """torch's attention scaling, / math.sqrt(x.shape[1]), with a symbolic size."""
    m = sg.Model("scale")
    x = m.input("x", ("B", "d"))
    with pytest.raises(TypeError, match=r"sg\."):
        call(x.shape[1])


def test_a_negated_size_is_a_size():
    m = sg.Model("negsize")
    x = m.param("x", ("B",))
    m.loss(sg.sum(x) / -x.shape[0])
    module = compile_module(m)
    loss, grads = module.value_and_grad({"x": np.array([1.0, 2.0, 3.0, 6.0])}, {})
    assert float(loss) == -3.0 and np.allclose(grads["x"], -0.25)


# ---------------------------------------------------------------------------- verify


@pytest.mark.parametrize(
    "build",
    [
        detach_model,
        bounds_model,
        reshaped_model,
        norms_model,
        prod_axes_model,
        shape_ops_model,
    ],
)
def test_verify_passes(build):
    model, _ = build(hessian=True)
    report = verify(model, compile_module(model))
    assert report.ok, report.table()


SGMODEL = """
import symgrad as sg


def build():
    m = sg.Model("{name}")
    x = m.input("x", ("B", "T"))
    w = m.param("w", (2,))
    T = x.shape[1]
    h = sg.tanh(x[:, : T - 1] * w[0] + x[:, 1:T] * w[1])
    m.loss({loss} + sg.norm(w) * sg.prod(w))
    return m
"""


@pytest.mark.parametrize(
    "loss",
    [
        # a baseline: its gradient contribution sums to 0, so differences agree
        "sg.sum((h - sg.stop_gradient(sg.mean(h, axis=1, keepdims=True))) ** 2)",
        "sg.sum(h * sg.stop_gradient(h))",
    ],
)
def test_symgrad_build_verifies_and_writes(tmp_path, loss):
    name = "cli_round20"
    path = tmp_path / f"{name}.py"
    path.write_text(SGMODEL.format(name=name, loss=loss))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "symgrad.cli", "build", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / f"{name}.py").exists()
