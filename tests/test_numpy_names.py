"""NumPy's names a user reaches for: sg.prod, sg.norm, sg.dot, sg.squeeze, sg.swapaxes,
sg.moveaxis, sg.diff, sg.pad, sg.roll, sg.broadcast_to, sg.zeros_like/ones_like/full_like,
x.flatten(), len(), sg.stop_gradient (torch's detach), slice bounds
written with sizes (x[:, : x.shape[1] - 1], torch's idiom), and torch-style methods
(x.exp(), x.view()) answered with NumPy's spelling.
Values, gradients and Hessians against torch, with the edge cases torch defines: a
product with zero factors, the norm of a zero vector."""

import numpy as np
import pytest
from helpers import assert_second_order_agrees, check, compile_module, spy_unrolled

import symgrad as sg

torch = pytest.importorskip("torch")


def prod_model(hessian=False):
    m = sg.Model("noisy_or", hessian=hessian)
    p = m.param("p", (5, 3))
    w = m.param("w", (3,))
    keep = sg.prod(1 - sg.sigmoid(p) * w, axis=1)  # noisy-OR: 1 - prod(1 - p_k)
    m.output("keep", keep)
    whole = p.prod(axis=(0, 1), keepdims=True)
    m.loss(sg.sum((1 - keep) ** 2) + sg.sum(whole) + sg.prod(w))

    def reference(t, _):
        keep = torch.prod(1 - torch.sigmoid(t["p"]) * t["w"], dim=1)
        whole = t["p"].prod()
        return torch.sum((1 - keep) ** 2) + whole + t["w"].prod(), {"keep": keep}

    return m, reference


def norm_model(hessian=False):
    m = sg.Model("norms", hessian=hessian)
    X = m.param("X", ("B", 4))
    v = m.param("v", (4,))
    rows = sg.norm(X, axis=1, keepdims=True)
    m.output("rows", rows)
    m.loss(sg.sum(X / (rows + 1.0)) + sg.norm(v) ** 3 + sg.norm(X))

    def reference(t, _):
        rows = torch.linalg.vector_norm(t["X"], dim=1, keepdim=True)
        loss = torch.sum(t["X"] / (rows + 1.0)) + torch.linalg.vector_norm(t["v"]) ** 3
        return loss + torch.linalg.norm(t["X"]), {"rows": rows}

    return m, reference


def shapes_model(hessian=False):
    m = sg.Model("shapes", hessian=hessian)
    A = m.param("A", (2, 1, 3, 4))
    v = m.param("v", (4,))
    M = m.param("M", (3, 4))
    x = m.input("x", ("n",))
    t = sg.squeeze(A, axis=1)  # (2, 3, 4)
    u = sg.moveaxis(t, 0, -1)  # (3, 4, 2)
    s = u.swapaxes(0, 1)  # (4, 3, 2)
    y = sg.dot(M, v) + M.dot(v) * sg.dot(v, v)  # (3,)
    z = sg.squeeze(s[:1, :, :1])  # (3,)
    m.loss(sg.sum(sg.tanh(s) * 2.0) + sg.sum(y * z) + sg.dot(2.0, sg.sum(x)) * len(M))

    def reference(t, i):
        s = torch.squeeze(t["A"], 1).movedim(0, -1).transpose(0, 1)
        y = t["M"] @ t["v"] + (t["M"] @ t["v"]) * torch.dot(t["v"], t["v"])
        z = s[:1, :, :1].squeeze()
        loss = torch.sum(torch.tanh(s) * 2.0) + torch.sum(y * z)
        return loss + 2.0 * i["x"].sum() * 3, {}

    return m, reference


def ported_model(hessian=False):
    """torch idioms: T = x.shape[1] in slice bounds, a detached baseline, diffs."""
    m = sg.Model("ported", hessian=hessian)
    x = m.input("x", ("B", "T"))
    w = m.param("w", (3,))
    T = x.shape[1]
    h = sg.tanh(x[:, : T - 1] * w[0] + x[:, 1:T] * w[1])  # (B, T - 1)
    baseline = sg.stop_gradient(sg.mean(h, axis=1, keepdims=True))
    steps = sg.diff(h, axis=-1)  # (B, T - 2)
    tail = x[:, T - 2 :].flatten() + x[:, T - 1].sum() * x[:, np.int64(0)].sum()
    m.loss(sg.sum((h - baseline) ** 2) + sg.sum(steps**2) * w[2] + sg.sum(tail) * w[2])

    def reference(t, i):
        x, w = i["x"], t["w"]
        T = x.shape[1]
        h = torch.tanh(x[:, : T - 1] * w[0] + x[:, 1:T] * w[1])
        baseline = h.mean(dim=1, keepdim=True).detach()
        steps = torch.diff(h, dim=-1)
        tail = x[:, T - 2 :].flatten() + x[:, T - 1].sum() * x[:, 0].sum()
        loss = ((h - baseline) ** 2).sum() + (steps**2).sum() * w[2]
        return loss + tail.sum() * w[2], {}

    return m, reference


def normalized_model(hessian=False):
    """A norm and a std as divisors (unit rows, z-scores): their derivatives have a
    0/0 at 0 that must not reach the printer as SymPy's zoo."""
    m = sg.Model("normalized", hessian=hessian)
    X = m.param("X", ("B", 4))
    unit = X / sg.norm(X, axis=1, keepdims=True)
    z = (X - sg.mean(X, axis=0)) / sg.std(X, axis=0, ddof=1)
    m.loss(sg.sum(unit[:, :2] ** 3) + sg.sum(sg.tanh(z) * unit))

    def reference(t, _):
        X = t["X"]
        unit = X / torch.linalg.vector_norm(X, dim=1, keepdim=True)
        z = (X - X.mean(dim=0)) / X.std(dim=0)
        return (unit[:, :2] ** 3).sum() + (torch.tanh(z) * unit).sum(), {}

    return m, reference


def padded_model(hessian=False):
    """A causal conv by zero padding, a rolled (circular) neighbour, a constant baseline
    and a bias broadcast over the batch, as torch's F.pad, roll, full_like, expand."""
    m = sg.Model("padded", hessian=hessian)
    x = m.input("x", ("B", "T"))
    k, b = m.param("k", (3,)), m.param("b", (4,))
    xp = sg.pad(x, ((0, 0), (2, 0)), constant_values=0.5)
    T = x.shape[1]
    conv = k[0] * xp[:, :T] + k[1] * xp[:, 1 : T + 1] + k[2] * xp[:, 2:]
    ring = sg.roll(conv, 1, axis=1) - sg.roll(conv, -2, axis=1)
    bias = sg.broadcast_to(b, (x.shape[0], 4))
    base = sg.full_like(conv, 0.25) + sg.zeros_like(ring) * 3.0 + sg.ones_like(conv)
    m.loss(sg.sum(sg.tanh(ring + base) ** 2) + sg.sum(bias**2 * sg.roll(b, 1)))

    def reference(t, i):
        x, k, b = i["x"], t["k"], t["b"]
        xp = torch.nn.functional.pad(x, (2, 0), value=0.5)
        T = x.shape[1]
        conv = k[0] * xp[:, :T] + k[1] * xp[:, 1 : T + 1] + k[2] * xp[:, 2:]
        ring = torch.roll(conv, 1, dims=1) - torch.roll(conv, -2, dims=1)
        base = torch.full_like(conv, 0.25) + 1.0
        bias = b.expand(x.shape[0], 4)
        loss = (torch.tanh(ring + base) ** 2).sum()
        return loss + (bias**2 * torch.roll(b, 1)).sum(), {}

    return m, reference


FAMILIES = {
    "padded": padded_model,
    "normalized": normalized_model,
    "prod": prod_model,
    "norm": norm_model,
    "shapes": shapes_model,
    "ported": ported_model,
}


def data(name, rng):
    params = {
        "prod": lambda: {"p": rng.standard_normal((5, 3)), "w": rng.uniform(0, 1, 3)},
        "norm": lambda: {"X": rng.standard_normal((6, 4)), "v": rng.standard_normal(4)},
        "shapes": lambda: {
            "A": rng.standard_normal((2, 1, 3, 4)),
            "v": rng.standard_normal(4),
            "M": rng.standard_normal((3, 4)),
        },
        "ported": lambda: {"w": rng.standard_normal(3)},
        "normalized": lambda: {"X": rng.standard_normal((5, 4))},
        "padded": lambda: {"k": rng.standard_normal(3), "b": rng.standard_normal(4)},
    }[name]()
    inputs = {
        "shapes": {"x": rng.standard_normal(5)},
        "ported": {"x": rng.standard_normal((4, 6))},
        "padded": {"x": rng.standard_normal((3, 7))},
    }.get(name, {})
    return params, inputs


@pytest.mark.parametrize("name", FAMILIES)
def test_values_gradients_and_hessians_agree_with_torch(name):
    params, inputs = data(name, np.random.default_rng(1))
    model, reference = FAMILIES[name]()
    check(compile_module(model), reference, params, inputs)
    model, reference = FAMILIES[name](hessian=True)
    module = compile_module(model)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_prod_gradient_is_exact_with_zero_factors():
    """prod / x would be 0/0: torch's gradient of a product with one zero factor is the
    product of the others at that factor and 0 elsewhere; with two zeros, all 0."""
    model, reference = prod_model()
    params, inputs = data("prod", np.random.default_rng(2))
    params["w"] = np.array([0.5, 0.0, 2.0])
    params["p"][1, 2] = params["p"][3, 0] = 0.0
    check(compile_module(model), reference, params, inputs)
    params["w"][2] = 0.0
    check(compile_module(model), reference, params, inputs)


def test_norm_of_a_zero_vector_has_torchs_zero_gradient():
    model, reference = norm_model()
    params, inputs = data("norm", np.random.default_rng(3))
    params["X"][2] = 0.0
    params["v"][:] = 0.0
    check(compile_module(model), reference, params, inputs)


@pytest.mark.parametrize(
    "name, unrolled",
    [("prod", "_value_and_grad_unrolled"), ("norm", "_value_and_grad_B_6")],
)
def test_unrolled_code_agrees_with_torch(name, unrolled):
    """prod's model has fixed sizes only (unrolled unasked); norm's is asked for B = 6.
    The norm of a zero row takes the other branch in the straight-line code too."""
    model, reference = FAMILIES[name]()
    params, inputs = data(name, np.random.default_rng(4))
    if name == "norm":
        model.unroll(B=6)
        params["X"][4] = 0.0
    module = compile_module(model)
    calls, restore = spy_unrolled(module)
    try:
        check(module, reference, params, inputs)
    finally:
        restore()
    assert set(calls) == {unrolled}, calls


def test_prod_over_a_symbolic_or_long_axis_names_the_alternative():
    m = sg.Model("p")
    with pytest.raises(sg.ShapeError, match=r"axis 0 of size n.*sg\.exp\(sg\.sum"):
        sg.prod(m.param("x", ("n",)))
    with pytest.raises(sg.ShapeError, match="size 40"):
        m.param("y", (2, 40)).prod(axis=1)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda x, W: sg.squeeze(W, axis=0), sg.ShapeError, "axis 0 has size 3, not 1"),
        (lambda x, W: sg.dot(W[None], W), sg.ShapeError, "rank > 2: use sg.matmul"),
        (lambda x, W: sg.moveaxis(W, [0, 1], [0]), sg.ShapeError, "same number"),
        (lambda x, W: len(x), TypeError, "first axis n is symbolic; use x.shape"),
        (lambda x, W: len(x[0]), TypeError, "0-d"),
        (lambda x, W: x.exp(), AttributeError, r"use sg\.exp\(x\)"),
        (lambda x, W: x.view(-1), AttributeError, r"use x\.reshape"),
        (lambda x, W: x.detach(), AttributeError, r"use sg\.stop_gradient\(x\)"),
        (lambda x, W: x.arctan2(W), AttributeError, r"use sg\.arctan2\(x, \.\.\.\)"),
        (lambda x, W: x[: x.shape[0] + 1], sg.ShapeError, r"own size plus an int"),
        (lambda x, W: x[x.shape[0] :], sg.ShapeError, r"from n, the end of the axis"),
        (
            lambda x, W: sg.diff(W, axis=(0, 1)),
            TypeError,
            "sg.diff: axis must be one int",
        ),
        (lambda x, W: sg.broadcast_to(W, (4,)), sg.ShapeError, "cannot broadcast"),
        (lambda x, W: sg.pad(W, (1, -1)), sg.ShapeError, "negative pad width"),
        (
            lambda x, W: sg.Model("other").loss(
                sg.sum(sg.broadcast_to(W, ("Q", 3, 4)))
            ),
            sg.ShapeError,
            "uses the dims Q, which no input or parameter has",
        ),
        (lambda x, W: x.logsumexp(), AttributeError, r"use sg\.logsumexp\(x\)"),
        (lambda x, W: x.no_such_thing, AttributeError, "has no attribute"),
        (lambda x, W: np.dot(W, W), TypeError, r"numpy\.dot .*use sg\.dot"),
        (lambda x, W: sg.swapaxes(W, 0, 2), sg.ShapeError, "out of range"),
    ],
)
def test_misuse_is_a_clear_error(call, error, message):
    m = sg.Model("misuse")
    with pytest.raises(error, match=message):
        call(m.param("x", ("n",)), m.param("W", (3, 4)))


def test_the_methods_are_the_functions():
    m = sg.Model("same")
    W = m.param("W", (3, 4))
    assert W.prod(axis=0).shape == (4,) and W.squeeze().shape == (3, 4)
    assert len(W) == 3 and sg.swapaxes(W, 0, -1).shape == (4, 3)
    assert sg.moveaxis(W[None], (0, 1), (2, 0)).shape == (3, 4, 1)
    assert np.moveaxis(np.zeros((1, 3, 4)), (0, 1), (2, 0)).shape == (3, 4, 1)
