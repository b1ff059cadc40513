"""Adjoints of views (index, reshape), of x @ W with batched x, slice-size checks and
scatter printing, against PyTorch (value_and_grad, forward + backward, hvp)."""

import numpy as np
import pytest
from helpers import compile_module

import symgrad as sg
from symgrad.reference import evaluate, reference
from symgrad.verify import relative_error, sample, verify

torch = pytest.importorskip("torch")
S = sg.sum


def check(model, dim_sets=({},), seed=0):
    module = compile_module(model)
    rng = np.random.default_rng(seed)
    for dims in dim_sets:
        params, inputs = sample(model, rng, dims)
        loss, outputs, grads = reference(model, params, inputs, engine=torch)
        value, g = module.value_and_grad(params, inputs)
        assert relative_error(value, loss) <= 1e-10, dims
        out, cache = module.forward(params, inputs)
        back = module.backward(cache, grad_loss=-1.5)
        assert relative_error(out["loss"], loss) <= 1e-10, dims
        for k, o in outputs.items():
            assert relative_error(out[k], o) <= 1e-10, (k, dims)
        for k, e in grads.items():
            assert np.shape(g[k]) == np.shape(e) == np.shape(back[k]), (k, dims)
            assert relative_error(g[k], e) <= 1e-10, (k, dims)
            assert relative_error(back[k], -1.5 * e) <= 1e-10, (k, dims)
        if model.hessian:
            names = list(model.params)
            v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
            products = module.hvp(params, inputs, v)

            def f(*ts, inputs=inputs, names=names):
                leaves = dict(zip(names, ts, strict=True))
                return evaluate(model, leaves, inputs, engine=torch)[model.loss_node]

            _, expected = torch.autograd.functional.hvp(
                f,
                tuple(torch.tensor(np.asarray(params[k], float)) for k in names),
                tuple(torch.tensor(v[k]) for k in names),
            )
            for k, e in zip(names, expected, strict=True):
                assert relative_error(products[k], e.numpy()) <= 1e-10, (k, dims)


def sizes(model, *values):
    return [{d: s for d in model.dims} for s in values] if model.dims else [{}]


# ------------------------------------------------------- 1. index keeping every element


def new_axes(m):
    x = m.param("x", (3,))
    return S(sg.sin(x[:, None]) * x[None, :]) + S(x[None, :, None] ** 3)


def size_one_axes(m):
    x, y = m.param("x", (3, 1)), m.param("y", (1, 4))
    return S(sg.exp(x[:, 0])) + S(sg.cos(y[0])) + S(x[..., 0] * 2)


def scalar_param(m):
    c = m.param("c")
    return (
        S(sg.sin(c[None]) ** 2) + S(c[None, None] * c) + S(sg.reshape(c, (1, 1)) ** 3)
    )


def scalar_computed(m):
    c, d = m.param("c"), m.param("d")
    s = sg.sin(c * d)
    return (
        S(s[None] * sg.reshape(s, (1,)))
        + S(sg.reshape(c * c, (1, 1, 1)))
        + S(sg.reshape(d[None], ()))
    )


def symbolic_new_axes(m):
    x, w = m.input("x", ("b", "n")), m.param("w", (1,))
    return S(sg.sin((x * w)[:, :, None])) + S(w[0] * x[:, None, :])


def three_d(m):
    x = m.param("x", (2, 1, 3))
    return (
        S(x[:, 0] ** 2 * x[:, 0, :]) + S(sg.exp(x[None, :, 0, None])) + S(x[1, 0][None])
    )


def computed_new_axis(m):
    x, W = m.input("x", ("b", 3)), m.param("W", (3, 2))
    y = sg.tanh(x @ W)
    return S(sg.sin(y[..., None])[..., 0]) + S(y[:, None] ** 2)


def computed_reshape(m):
    x, W = m.input("x", ("n", 3)), m.param("W", (3, 2))
    return S(sg.reshape(sg.tanh(x @ W), ("n", 1, 2)) ** 2)


INDEX = [
    new_axes,
    size_one_axes,
    scalar_param,
    scalar_computed,
    symbolic_new_axes,
    three_d,
    computed_new_axis,
    computed_reshape,
]


@pytest.mark.parametrize("hessian", [False, True])
@pytest.mark.parametrize("build", INDEX, ids=lambda f: f.__name__)
def test_index_keeping_every_element(build, hessian):
    m = sg.Model(build.__name__, hessian=hessian)
    m.loss(build(m))
    check(m, sizes(m, 1, 3))


def test_index_keeping_every_element_unrolled():
    m = sg.Model("unrolled_views")
    x, c = m.input("x", ("b", 2)), m.param("c")
    w = m.param("w", (2, 1))
    y = sg.tanh(x @ w)  # (b, 1)
    m.loss(S(y[:, 0][:, None] * c[None]) + S(sg.reshape(c, (1,)) * w[None, :, 0]))
    m.unroll(b=1)
    m.unroll(b=2)
    check(m, sizes(m, 1, 2, 3))
    assert verify(m, compile_module(m)).ok


def round_trip_param(m):
    W = m.param("W", ("n", 2))
    return S(sg.tanh(W * 2.0)[None][0] ** 2)


def round_trip_computed(m):
    x, W = m.input("x", ("n", 3)), m.param("W", (3, 2))
    return S(sg.tanh(x @ W)[:, None][:, 0] ** 2)


@pytest.mark.parametrize(
    "build", [round_trip_param, round_trip_computed], ids=lambda f: f.__name__
)
def test_round_trip_view_of_an_in_place_buffer(build):
    m = sg.Model(build.__name__)
    m.loss(build(m))
    check(m, sizes(m, 1, 3))


# ------------------------------------------------------------ 2. x @ W with x batched


def batch_l(m):
    x, W = m.input("x", ("b", "L", 3)), m.param("W", (3, 2))
    return S(sg.tanh(x @ W)) + S(W**2)


def rank_four(m):
    x, W, v = m.input("x", ("a", 2, "c", 3)), m.param("W", (3, 4)), m.param("v", (4,))
    return S(sg.sin(x @ W) * v) + S(sg.exp(W @ v))


def transposed_input(m):
    y, W = m.input("y", ("b", 3, "L")), m.param("W", (3, 2))
    return S(sg.tanh(sg.transpose(y, (0, 2, 1)) @ W) ** 2)


def transposed_computed(m):
    y, A, W = m.input("y", ("b", 3, "L")), m.param("A", (3, 3)), m.param("W", (3, 2))
    z = sg.tanh(A @ y)
    return S(sg.cos(sg.transpose(z, (0, 2, 1)) @ W))


def chained(m):
    y, W = m.input("y", ("a", "b", "L", 3)), m.param("W", (3, 3))
    z = sg.tanh(y @ W)
    return S(sg.sin(z @ W) * z) + S(sg.transpose(z, (0, 1, 3, 2)) @ y)


def param_batch(m):
    x, W = m.param("x", (2, 3, 3)), m.param("W", (3, 2))
    return S(sg.tanh(x @ W)) + S(sg.transpose(x, (1, 0, 2)) @ W)


def size_one_everywhere(m):
    x, W = m.input("x", ("b", 1, 3)), m.param("W", (3, 1))
    return S(sg.tanh(x @ W) * (x @ W))


MATMUL = [
    batch_l,
    rank_four,
    transposed_input,
    transposed_computed,
    chained,
    param_batch,
    size_one_everywhere,
]


@pytest.mark.parametrize("hessian", [False, True])
@pytest.mark.parametrize("build", MATMUL, ids=lambda f: f.__name__)
def test_batched_matmul_weight_gradient(build, hessian):
    m = sg.Model(build.__name__, hessian=hessian)
    m.loss(build(m))
    dims = sizes(m, 1, 3) + (
        [dict(zip(m.dims, [1, 4, 2], strict=False))] * bool(m.dims)
    )
    check(m, dims)


# ------------------------------------------------------- 3. slices of symbolic axes

SLICES = {
    "first3": (lambda x: S(sg.sin(x[:3])), 3, "x[:3] needs n >= 3"),
    "middle": (lambda x: S(sg.sin(x[1:-1]) ** 2), 2, "x[1:-1] needs n >= 2"),
    "last3": (lambda x: S(sg.exp(x[-3:])), 3, "x[-3:] needs n >= 3"),
    "slice_of_slice": (lambda x: S(x[1:][1:-1] ** 2), 3, "needs n >= 3"),
    "int4": (lambda x: sg.sin(x[4]) + S(x**2), 5, "x[4] needs n >= 5"),
    "neg_int": (lambda x: sg.sin(x[-2]) * x[0], 2, "x[-2] needs n >= 2"),
    "stop_neg": (lambda x: S(x[:-2] ** 2), 2, "x[:-2] needs n >= 2"),
    "two": (lambda x: S(x[2:5] * x[:3]), 5, "x[2:5] needs n >= 5"),
    "diff": (lambda x: S((x[1:] - x[:-1]) ** 2), 1, None),
}


@pytest.mark.parametrize("name", SLICES)
def test_slices_of_symbolic_axes(name):
    fn, smallest, message = SLICES[name]
    m = sg.Model(name)
    m.loss(fn(m.param("x", ("n",))))
    check(m, [{"n": smallest}, {"n": smallest + 1}, {"n": smallest + 4}])
    module = compile_module(m)
    if message is not None:
        small = {"x": np.ones(smallest - 1)}
        with pytest.raises(ValueError, match=f"n={smallest - 1}: .*{message[-10:]}"):
            module.value_and_grad(small, {})
        with pytest.raises(ValueError, match="needs n >= "):
            module.forward(small, {})
        too_small = sg.Model(name + "_small")
        too_small.loss(fn(too_small.param("x", ("n",))))
        too_small.unroll(n=smallest - 1)
        with pytest.raises(sg.ModelError, match="needs"):
            compile_module(too_small)
    m.unroll(n=smallest)
    check(m, [{"n": smallest}, {"n": smallest + 2}])
    assert verify(m, compile_module(m)).ok


# ------------------------------------------------------------- 4. scatter printing

SCATTER = {
    "disjoint": lambda x: S(sg.sin(x[:2])) + S(sg.cos(x[2:5])) + S(x[5:] ** 3),
    "overlap": lambda x: S(sg.sin(x[:4])) + S(sg.cos(x[2:6])) + S(x[1:] ** 3),
    "int_mix": lambda x: (
        S(sg.sin(x[0]))
        + S(x[1:3] ** 2)
        + S(sg.exp(x[-1]))
        + S(x[-1, 1:] * 3)
        + S(x[2] * x[3])
    ),
    "steps": lambda x: S(sg.sin(x[::2])) + S(sg.cos(x[1::3])) + S(x[1::2, ::2] ** 2),
    "steps_disjoint": lambda x: S(sg.sin(x[::2])) + S(sg.cos(x[1::2])),
    "neg_int": lambda x: S(sg.sin(x[-1])) + S(x[-2] ** 2) + S(x[-7]) + S(x[0] * 2),
    "two_axes": lambda x: (
        S(sg.sin(x[:3, :2]))
        + S(sg.cos(x[3:, 2:]))
        + S(x[:3, 2:] ** 2)
        + S(x[3:, :2] ** 3)
        + S(x[1:5, 1:4])
    ),
    "columns": lambda x: (
        S(sg.sin(x[:, 0])) + S(x[:, 1:3] ** 2) + S(x[:, -1] * 3) + S(x[:, ::2])
    ),
    "same_twice": lambda x: S(sg.sin(x[1:3])) + S(sg.sin(x[1:3]) ** 2) + S(x[1:3, 0]),
    "new_axes": lambda x: S(sg.sin(x[None, 1:3])) + S(x[:2, None] ** 2) + S(x[4, None]),
    "gates": lambda x: S(sg.sigmoid(x[:, :2]) * sg.tanh(x[:, 2:4]))
    + S(sg.exp(x[:, 4])),
}


@pytest.mark.parametrize("name", SCATTER)
def test_scatter_of_slices(name):
    m = sg.Model(name)
    m.loss(SCATTER[name](m.param("x", (7, 5))))
    check(m)


def test_scatter_of_a_three_d_tensor():
    m = sg.Model("three_d_scatter")
    x = m.param("x", (3, 4, 3))
    m.loss(S(sg.sin(x[0, :, 1:])) + S(x[1:, ::2, 0] ** 2) + S(x[:, 1] * 2) + S(x[-1]))
    check(m)


GATHER = {
    "before": lambda x, i: S(sg.tanh(x[i])) + S(sg.sin(x[:3])) + S(x[3:] ** 2),
    "after": lambda x, i: S(sg.sin(x[:3])) + S(x[3:] ** 2) + S(sg.tanh(x[i]) * x[i]),
    "partial": lambda x, i: S(sg.sin(x[2:4])) + S(sg.tanh(x[i]) ** 2) + S(x[4]),
    "columns": lambda x, i: (
        S(sg.sin(x[:, 1:3])) + S(sg.tanh(x[i][:, 0])) + S(x[:, 0] ** 2)
    ),
}


@pytest.mark.parametrize("name", GATHER)
def test_scatter_of_slices_and_a_gather(name):
    m = sg.Model(name)
    x, i = m.param("x", (7, 5)), m.input("i", ("b",), dtype="int64")
    m.loss(GATHER[name](x, i))
    check(m, [{"b": 1}, {"b": 4}])


def test_scatter_on_a_symbolic_axis_with_a_gather():
    m = sg.Model("symbolic_rows")
    x, i = m.param("x", ("n", 3)), m.input("i", ("b",), dtype="int64")
    m.loss(
        S(sg.sin(x[:2])) + S(x[2:] ** 2) + S(sg.tanh(x[i])) + S(x[-1]) + S(x[1:-1] * 3)
    )
    check(m, [{"n": 2, "b": 1}, {"n": 3, "b": 5}, {"n": 9, "b": 2}])
