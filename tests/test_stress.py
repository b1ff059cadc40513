"""Adversarial tests of the latest optimizations, with PyTorch (float64) as the judge.

- pair scatters (``optimize.pair_differences``, ``_pair_scatter`` in generated code):
  radial functions, per-pair weights, both orders, repeats, i == j, sliced index arrays,
  widths 2/3/8 (pair path) and 9 (generic path), dense and sparse pair sets, N = 1,
  no pairs, three-body terms, gathers of two tables, linear differences, Hessians, unrolled
  code;
- power chains (several integer powers of one value, with fractional powers mixed in);
- CSE of subexpressions containing symbolic sizes (batch norm, layer norm, means);
- 0-d parameters and results, user float constants printed back exactly;
- named values (``m.let``, ``m.output``) never overwritten in place.

Each model is compared with the same model written by hand in PyTorch: loss, outputs and
every gradient from ``value_and_grad`` and from ``forward`` + ``backward(grad_loss=-1.5)``,
at two sizes of each symbolic dim, and checked with ``symgrad.verify.verify``. Known bugs
are strict xfails.
"""

from __future__ import annotations

import copy
import functools
import re

import numpy as np
import pytest
from helpers import assert_agrees_with_torch, compile_module, rel, torch_hessian

import symgrad as sg
from symgrad.cli import generate
from symgrad.verify import verify

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-10
GRAD_LOSS = -1.5


# --------------------------------------------------------------------------- harness


def compare(module, reference, params, inputs, tol=TOL) -> None:
    """The module against ``reference`` on one draw of data."""
    assert_agrees_with_torch(module, reference, params, inputs, tol, GRAD_LOSS)


def check(model, reference, data, sizes, tol=TOL, module=None, run_verify=True):
    """Compile ``model`` and compare it with ``reference`` at each of ``sizes``."""
    module = module or compile_module(model)
    for seed, dims in enumerate(sizes):
        params, inputs = data(np.random.default_rng(seed), **dims)
        compare(module, reference, params, inputs, tol)
    if run_verify:
        report = verify(model, module)
        assert report.ok, report.table()
    return module


def vectorized_source(model) -> str:
    """The body of the vectorized ``value_and_grad``."""
    source, _ = generate(model)
    return source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]


def with_sampler(model, data):
    model.sampler = lambda rng, **dims: data(rng, **dims)
    return model


class TorchOps:
    """The few functions the radial formulas need, spelled for torch."""

    sqrt = staticmethod(torch.sqrt)
    exp = staticmethod(torch.exp)
    relu = staticmethod(torch.relu)

    @staticmethod
    def maximum(a, b):
        return torch.maximum(a, torch.tensor(float(b), dtype=torch.float64))


# --------------------------------------------------------------------------- pair scatters

# energy of one pair as a function of its squared distance r2, for sg and for torch
RADIAL = {
    "lennard_jones": lambda r2, ns: 4 * (1 / r2**6 - 1 / r2**3),
    "spring": lambda r2, ns: (ns.sqrt(r2) - 1.0) ** 2,
    "morse": lambda r2, ns: (1 - ns.exp(-1.5 * (ns.sqrt(r2) - 1.2))) ** 2,
    "coulomb": lambda r2, ns: 1 / ns.sqrt(r2),
    "soft_sphere_relu": lambda r2, ns: ns.relu(1 - ns.sqrt(r2)) ** 2,
    "soft_sphere_maximum": lambda r2, ns: ns.maximum(1 - ns.sqrt(r2), 0.0) ** 2,
    "polynomial": lambda r2, ns: (r2 - 1.0) ** 2 + 0.5 * r2,  # finite at r = 0
}


def pair_model(radial, width, weighted=True, hessian=False, name="pairs"):
    m = sg.Model(name, hessian=hessian)
    x = m.param("x", ("n", width))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    d = x[i] - x[j]
    e = RADIAL[radial](sg.sum(d * d, axis=-1), sg)
    if weighted:
        e = m.input("w", ("pairs",)) * e
    m.loss(sg.sum(e))
    return m


def pair_reference(radial, weighted=True):
    def reference(p, inputs):
        d = p["x"][inputs["i"]] - p["x"][inputs["j"]]
        e = RADIAL[radial]((d * d).sum(-1), TorchOps)
        if weighted:
            e = inputs["w"] * e
        return e.sum(), {}

    return reference


def pair_indices(rng, n, mode):
    if mode == "dense":  # all i < j: the (n, n) matrix path
        i, j = np.triu_indices(n, 1)
    elif mode == "both":  # both orders and repeated pairs, still dense
        i, j = np.triu_indices(n, 1)
        i, j = np.concatenate([i, j, i[:2]]), np.concatenate([j, i, j[:2]])
    elif mode == "sparse":  # a few random pairs, i != j: bincounts
        i = rng.integers(0, n, max(n // 2, 1))
        j = (i + rng.integers(1, max(n, 2), len(i))) % n
    elif mode == "self":  # i == j pairs (finite for the polynomial only)
        i, j = np.array([0, 0, n - 1]), np.array([0, n - 1, n - 1])
    else:  # no pairs at all
        i = j = np.zeros(0)
    return np.asarray(i, np.int64), np.asarray(j, np.int64)


def pair_data(width, mode, weighted=True):
    def data(rng, n, **_):
        i, j = pair_indices(rng, n, mode)
        x = rng.standard_normal((n, width)) + 0.3 * np.arange(n)[:, None]
        inputs = {"i": i, "j": j}
        if weighted:
            inputs["w"] = rng.uniform(0.5, 2.0, len(i))
        return {"x": x}, inputs

    return data


PAIR_SIZES = {"dense": [2, 6], "both": [3, 7], "sparse": [9, 20]}


@functools.cache
def pair_module(radial, width, weighted=True):
    model = pair_model(radial, width, weighted)
    return model, compile_module(model)


PAIR_CASES = [(r, w) for r in ("lennard_jones", "spring") for w in (2, 3, 8, 9)] + [
    (r, w)
    for r in ("morse", "coulomb", "soft_sphere_relu", "soft_sphere_maximum")
    for w in (3, 9)
]


@pytest.mark.parametrize("radial, width", PAIR_CASES)
def test_pair_energy_agrees_with_pytorch(radial, width):
    model, module = pair_module(radial, width)
    uses_pairs = "_pair_scatter(x, i, j, " in vectorized_source(model)
    assert uses_pairs == (width <= 8)  # 9 columns: the generic scatter
    for mode, sizes in PAIR_SIZES.items():
        data = pair_data(width, mode)
        for n in sizes:
            params, inputs = data(np.random.default_rng(n), n)
            dense = n * n <= 4 * len(inputs["i"])
            assert dense == (mode != "sparse")  # both paths of _pair_scatter
            compare(module, pair_reference(radial), params, inputs)
    with_sampler(model, pair_data(width, "sparse"))
    assert verify(model, module).ok


@pytest.mark.parametrize("width", [2, 3, 8, 9])
def test_self_pairs_and_a_single_particle(width):
    """i == j contributes nothing to the gradient (x[i] - x[i] = 0), on both paths."""
    model, module = pair_module("polynomial", width)
    data = pair_data(width, "self")
    check(
        model, pair_reference("polynomial"), data, [{"n": 1}, {"n": 4}], module=module
    )


@pytest.mark.parametrize("width", [2, 3, 9])
@pytest.mark.parametrize("radial", ["lennard_jones", "spring", "polynomial"])
def test_no_pairs_at_all(radial, width):
    model, module = pair_module(radial, width)
    data = pair_data(width, "empty")
    check(model, pair_reference(radial), data, [{"n": 1}, {"n": 4}], module=module)


@pytest.mark.parametrize("radial", ["lennard_jones", "spring"])
def test_no_pairs_gradient_is_float(radial):
    _, module = pair_module(radial, 3)
    params, inputs = pair_data(3, "empty")(np.random.default_rng(0), 4)
    _, grads = module.value_and_grad(params, inputs)
    _, cache = module.forward(params, inputs)
    assert grads["x"].dtype == np.float64
    assert module.backward(cache)["x"].dtype == np.float64


def tanh_table_springs():
    """Pairs of a computed, named table: the chain rule scales the scatter in place."""
    m = sg.Model("tanh_table_springs")
    x = m.param("x", ("n", 3))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    y = m.let("y", sg.tanh(x))
    d = y[i] - y[j]
    m.loss(sg.sum(sg.sqrt(sg.sum(d * d, axis=-1) + 1.0)))
    return m


def _tanh_table_springs_torch(p, inputs):
    y = torch.tanh(p["x"])
    d = y[inputs["i"]] - y[inputs["j"]]
    return torch.sqrt((d * d).sum(-1) + 1.0).sum(), {}


def test_pairs_of_a_computed_table():
    model = tanh_table_springs()
    assert "_pair_scatter(y, i, j, " in vectorized_source(model)
    for mode in PAIR_SIZES:
        data = pair_data(3, mode, weighted=False)
        sizes = [{"n": n} for n in PAIR_SIZES[mode]]
        check(model, _tanh_table_springs_torch, data, sizes, run_verify=mode == "dense")


def test_pairs_of_a_computed_table_without_pairs():
    data = pair_data(3, "empty", weighted=False)
    check(tanh_table_springs(), _tanh_table_springs_torch, data, [{"n": 3}])


def test_dense_pairs_far_from_the_origin():
    _, module = pair_module("spring", 3)
    params, inputs = pair_data(3, "dense")(np.random.default_rng(0), 8)
    params["x"] += 1e7
    compare(module, pair_reference("spring"), params, inputs)


def test_dense_pairs_far_from_the_origin_sparse_path_is_accurate():
    _, module = pair_module("spring", 3)
    params, inputs = pair_data(3, "sparse")(np.random.default_rng(0), 30)
    params["x"] += 1e7
    compare(module, pair_reference("spring"), params, inputs)


def extra_gather():
    """x[i] is also used on its own: that use stays an ordinary scatter."""
    m = sg.Model("extra_gather")
    x = m.param("x", ("n", 3))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    w = m.input("w", ("pairs",))
    d = x[i] - x[j]
    r = sg.sqrt(sg.sum(d * d, axis=-1))
    m.loss(sg.sum(w * (r - 1.0) ** 2) + sg.sum(x[i][:, 0] ** 2) + sg.sum(x[j] ** 3))
    return m


def _extra_gather_torch(p, inputs):
    x, i, j = p["x"], inputs["i"], inputs["j"]
    d = x[i] - x[j]
    r = (d * d).sum(-1).sqrt()
    e = (inputs["w"] * (r - 1.0) ** 2).sum()
    return e + (x[i][:, 0] ** 2).sum() + (x[j] ** 3).sum(), {}


@pytest.mark.parametrize("mode", ["dense", "both", "sparse"])
def test_pair_energy_with_other_uses_of_the_gathers(mode):
    model = with_sampler(extra_gather(), pair_data(3, "sparse"))
    sizes = [{"n": n} for n in PAIR_SIZES[mode]]
    check(model, _extra_gather_torch, pair_data(3, mode), sizes)


def sliced_pairs():
    """i and j are the columns of one (pairs, 2) index array."""
    m = sg.Model("sliced_pairs")
    x = m.param("x", ("n", 3))
    idx = m.input("idx", ("pairs", 2), dtype="int64")
    d = x[idx[:, 0]] - x[idx[:, 1]]
    r = sg.sqrt(sg.sum(d * d, axis=-1))
    m.loss(sg.sum(sg.exp(-r) + (r - 1.0) ** 2))
    return m


def _sliced_pairs_torch(p, inputs):
    idx = inputs["idx"]
    d = p["x"][idx[:, 0]] - p["x"][idx[:, 1]]
    r = (d * d).sum(-1).sqrt()
    return (torch.exp(-r) + (r - 1.0) ** 2).sum(), {}


@pytest.mark.parametrize("mode", ["dense", "sparse"])
def test_pairs_from_one_sliced_index_array(mode):
    def data(rng, n, **_):
        params, inputs = pair_data(3, mode, weighted=False)(rng, n)
        return params, {"idx": np.stack([inputs["i"], inputs["j"]], axis=1)}

    model = with_sampler(sliced_pairs(), data)
    assert "_pair_scatter(x, " in vectorized_source(model)
    check(model, _sliced_pairs_torch, data, [{"n": n} for n in PAIR_SIZES[mode]])


def three_body():
    """(x[i] - x[j]) and (x[j] - x[k]) share the gather x[j]."""
    m = sg.Model("three_body")
    x = m.param("x", ("n", 3))
    i, j, k = (m.input(s, ("t",), dtype="int64") for s in "ijk")
    a, b = x[i] - x[j], x[j] - x[k]
    ra, rb = sg.sum(a * a, axis=-1), sg.sum(b * b, axis=-1)
    cos = sg.sum(a * b, axis=-1)
    m.loss(sg.sum(ra * rb + 1 / (1 + ra) + cos**2 + sg.exp(-rb)))
    return m


def _three_body_torch(p, inputs):
    x = p["x"]
    a = x[inputs["i"]] - x[inputs["j"]]
    b = x[inputs["j"]] - x[inputs["k"]]
    ra, rb, cos = (a * a).sum(-1), (b * b).sum(-1), (a * b).sum(-1)
    return (ra * rb + 1 / (1 + ra) + cos**2 + torch.exp(-rb)).sum(), {}


@pytest.mark.parametrize("per_particle", [2, 8])  # sparse; dense
def test_three_body_terms(per_particle):
    def data(rng, n, **_):
        t = per_particle * n
        return {"x": rng.standard_normal((n, 3))}, {
            s: rng.integers(0, n, t) for s in "ijk"
        }

    check(three_body(), _three_body_torch, data, [{"n": 2}, {"n": 7}])


def two_tables():
    m = sg.Model("two_tables")
    x, y = m.param("x", ("n", 3)), m.param("y", ("n", 3))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    d = x[i] - y[j]
    m.loss(sg.sum(sg.sum(d * d, axis=-1) ** 1.5) + sg.sum(sg.sum(x[j] - y[i], axis=-1)))
    return m


def _two_tables_torch(p, inputs):
    x, y, i, j = p["x"], p["y"], inputs["i"], inputs["j"]
    d = x[i] - y[j]
    return ((d * d).sum(-1) ** 1.5).sum() + (x[j] - y[i]).sum(), {}


def test_differences_of_two_tables():
    def data(rng, n, **_):
        i, j = pair_indices(rng, n, "dense")
        params = {"x": rng.standard_normal((n, 3)), "y": rng.standard_normal((n, 3))}
        return params, {"i": i, "j": j}

    check(two_tables(), _two_tables_torch, data, [{"n": 2}, {"n": 6}])


LINEAR = ["input", "scalar_param", "none", "vector_param"]


def linear_differences(kind):
    """sum(w (x[i] - x[j])): a gradient that does not depend on x."""
    m = sg.Model(f"linear_{kind}")
    x = m.param("x", ("n", 3))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    d = x[i] - x[j]
    if kind == "input":
        e = sg.sum(m.input("w", ("pairs",))[:, None] * d)
    elif kind == "scalar_param":
        e = m.param("w", ()) * sg.sum(d)
    elif kind == "vector_param":
        e = sg.sum(m.param("w", (3,)) * d)
    else:
        e = sg.sum(d)
    m.loss(e + 0.5 * sg.sum(x**2))
    return m


def _linear_torch(kind):
    def reference(p, inputs):
        x = p["x"]
        d = x[inputs["i"]] - x[inputs["j"]]
        if kind == "input":
            e = (inputs["w"][:, None] * d).sum()
        elif kind == "none":
            e = d.sum()
        else:
            e = (p["w"] * d).sum()
        return e + 0.5 * (x**2).sum(), {}

    return reference


@pytest.mark.parametrize("kind", LINEAR)
def test_linear_differences(kind):
    def data(rng, n, mode="dense", **_):
        params, inputs = pair_data(3, mode)(rng, n)
        if kind != "input":
            inputs.pop("w")
        if kind == "scalar_param":
            params["w"] = np.array(1.7)
        if kind == "vector_param":
            params["w"] = rng.standard_normal(3)
        return params, inputs

    model = with_sampler(linear_differences(kind), data)
    module = compile_module(model)
    for mode, sizes in (("dense", [2, 9]), ("sparse", [2, 9]), ("empty", [1, 4])):
        for n in sizes:
            params, inputs = data(np.random.default_rng(n), n, mode)
            compare(module, _linear_torch(kind), params, inputs)
    assert verify(model, module).ok


COEFFICIENTS = {  # the h of h (x[i] - x[j]) in every shape the rewrite looks at
    "constant": (lambda m, d, x, i: sg.sum(d**2), lambda p, i, d: (d**2).sum()),
    "scalar_outside": (
        lambda m, d, x, i: m.param("w", ()) * sg.sum(d**2),
        lambda p, i, d: p["w"] * (d**2).sum(),
    ),
    "scalar_inside": (
        lambda m, d, x, i: sg.sum(m.param("w", ()) * d**2),
        lambda p, i, d: (p["w"] * d**2).sum(),
    ),
    "one_by_one": (
        lambda m, d, x, i: sg.sum(m.param("w", (1, 1)) * d**2),
        lambda p, i, d: (p["w"] * d**2).sum(),
    ),
    "one": (
        lambda m, d, x, i: sg.sum(m.param("w", (1,)) * d**2),
        lambda p, i, d: (p["w"] * d**2).sum(),
    ),
    "column": (
        lambda m, d, x, i: sg.sum(m.input("w", ("pairs", 1)) * d**2),
        lambda p, i, d: (i["w"] * d**2).sum(),
    ),
    "per_coordinate": (  # not one number per pair: no pair scatter
        lambda m, d, x, i: sg.sum(m.param("w", (3,)) * d**2),
        lambda p, i, d: (p["w"] * d**2).sum(),
    ),
    "gathered": (  # h = 2 x[i][:, 0:1]
        lambda m, d, x, i: sg.sum(x[i][:, 0:1] * d**2),
        lambda p, i, d: (p["x"][i["i"]][:, 0:1] * d**2).sum(),
    ),  # fmt: skip
}


def coefficient_model(kind):
    m = sg.Model(f"coefficient_{kind}")
    x = m.param("x", ("n", 3))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    m.loss(COEFFICIENTS[kind][0](m, x[i] - x[j], x, i))
    return m


def _coefficient_torch(kind):
    def reference(p, inputs):
        d = p["x"][inputs["i"]] - p["x"][inputs["j"]]
        return COEFFICIENTS[kind][1](p, inputs, d), {}

    return reference


@pytest.mark.parametrize("kind", COEFFICIENTS)
def test_pair_coefficient_shapes(kind):
    def data(rng, n, mode="dense", **_):
        params, inputs = pair_data(3, mode)(rng, n)
        w = inputs.pop("w")
        shapes = {"scalar_outside": (), "scalar_inside": (), "one_by_one": (1, 1)}
        if kind in shapes:
            params["w"] = np.full(shapes[kind], 1.3)
        elif kind == "one":
            params["w"] = np.array([1.3])
        elif kind == "per_coordinate":
            params["w"] = rng.uniform(0.5, 2.0, 3)
        elif kind == "column":
            inputs["w"] = w[:, None]
        return params, inputs

    model = with_sampler(coefficient_model(kind), data)
    module = compile_module(model)
    reference = _coefficient_torch(kind)
    for mode in ("dense", "sparse"):
        for n in PAIR_SIZES[mode]:
            params, inputs = data(np.random.default_rng(n), n, mode)
            compare(module, reference, params, inputs)
    assert verify(model, module).ok


GENERIC_SHAPES = {  # gathers the pair rewrite leaves alone
    "symbolic_width": (("n", "k"), [{"n": 3, "k": 2}, {"n": 5, "k": 9}]),
    "width_one": (("n", 1), [{"n": 1}, {"n": 4}]),
    "rows_of_matrices": (("n", 2, 3), [{"n": 2}, {"n": 5}]),
}


@pytest.mark.parametrize("case", GENERIC_SHAPES)
def test_pairs_of_other_shapes(case):
    shape, sizes = GENERIC_SHAPES[case]
    m = sg.Model(f"generic_{case}")
    x = m.param("x", shape)
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    d = x[i] - x[j]
    axes = tuple(range(1, len(shape)))
    m.loss(sg.sum(sg.sqrt(sg.sum(d * d, axis=axes) + 0.5)))

    def reference(p, inputs):
        d = p["x"][inputs["i"]] - p["x"][inputs["j"]]
        return torch.sqrt((d * d).sum(axes) + 0.5).sum(), {}

    def data(rng, n, k=2, **_):
        i, j = pair_indices(rng, n, "dense")
        concrete = tuple({"n": n, "k": k}.get(s, s) for s in shape)
        return {"x": rng.standard_normal(concrete)}, {"i": i, "j": j}

    check(m, reference, data, sizes)


def several_pair_energies(kind):
    m = sg.Model(f"several_{kind}")
    x = m.param("x", (5, 3) if kind == "static_n" else ("n", 3))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    d = x[i] - x[j]
    r2 = sg.sum(d * d, axis=-1)
    loss = sg.sum(1 / r2**6 - 1 / r2**3) + sg.sum((sg.sqrt(r2) - 1.0) ** 2)
    if kind == "two_lists":
        k = m.input("k", ("q",), dtype="int64")
        l_ = m.input("l", ("q",), dtype="int64")
        e = x[k] - x[l_]
        loss = loss + sg.sum(sg.exp(-sg.sum(e * e, axis=-1)))
    elif kind == "reversed_too":
        loss = loss + sg.sum(sg.tanh((x[j] - x[i])[:, 0]) * r2)
    elif kind == "products":
        loss = loss + sg.sum(x[j] * x[i])
    m.loss(loss)
    return m


def _several_torch(kind):
    def reference(p, inputs):
        x, i, j = p["x"], inputs["i"], inputs["j"]
        d = x[i] - x[j]
        r2 = (d * d).sum(-1)
        loss = (1 / r2**6 - 1 / r2**3).sum() + ((r2.sqrt() - 1.0) ** 2).sum()
        if kind == "two_lists":
            e = x[inputs["k"]] - x[inputs["l"]]
            loss = loss + torch.exp(-(e * e).sum(-1)).sum()
        elif kind == "reversed_too":
            loss = loss + (torch.tanh((x[j] - x[i])[:, 0]) * r2).sum()
        elif kind == "products":
            loss = loss + (x[j] * x[i]).sum()
        return loss, {}

    return reference


@pytest.mark.parametrize("kind", ["static_n", "plain", "two_lists", "reversed_too", "products"])  # fmt: skip
def test_several_pair_energies_on_one_table(kind):
    def data(rng, n=5, **_):
        params, inputs = pair_data(3, "both", weighted=False)(rng, n)
        if kind == "two_lists":
            inputs["k"], inputs["l"] = rng.integers(0, n, (2, 7))
        return params, inputs

    model = with_sampler(several_pair_energies(kind), data)
    sizes = [{}] if kind == "static_n" else [{"n": 2}, {"n": 6}]
    check(model, _several_torch(kind), data, sizes)


@pytest.mark.parametrize(
    "radial, width",
    [("lennard_jones", 2), ("lennard_jones", 9), ("spring", 3), ("morse", 3),
     ("soft_sphere_relu", 8)],
)  # fmt: skip
def test_pair_hessian_agrees_with_pytorch(radial, width):
    model = with_sampler(
        pair_model(radial, width, hessian=True), pair_data(width, "dense")
    )
    module = compile_module(model)
    reference = pair_reference(radial)
    for n, mode in ((3, "dense"), (4, "both"), (9, "sparse")):
        params, inputs = pair_data(width, mode)(np.random.default_rng(n), n)
        expected = torch_hessian(reference, params, inputs)
        assert rel(module.hessian(params, inputs), expected) <= TOL
        v = {"x": np.random.default_rng(0).standard_normal((n, width))}
        product = module.hvp(params, inputs, v)["x"]
        assert rel(product.ravel(), expected @ v["x"].ravel()) <= TOL
    assert verify(model, module).ok


@pytest.mark.parametrize(
    "radial, width", [("lennard_jones", 3), ("soft_sphere_maximum", 2)]
)
def test_unrolled_pair_energy_updates_per_pair(radial, width):
    model = pair_model(radial, width)
    sizes = [{"n": 2, "pairs": 1}, {"n": 3, "pairs": 8}]
    for dims in sizes:
        model.unroll(**dims)
    source, _ = generate(model)
    unrolled = source.split("\ndef _value_and_grad_n_", 1)[1]
    assert "_pair_scatter" not in unrolled
    module = compile_module(model)
    for dims, mode in zip(sizes, ["dense", "both"], strict=True):
        params, inputs = pair_data(width, mode)(np.random.default_rng(0), dims["n"])
        assert len(inputs["i"]) == dims["pairs"]
        compare(module, pair_reference(radial), params, inputs)


# --------------------------------------------------------------------------- power chains

POWERS = {
    "integers": lambda x, ns: x**-3 + 2 * x**-4 + x**2 - x**5 + 3 * x**-1,
    "with_fractions": lambda x, ns: 0.5 * x**-3 + x**-4 + x**2 + x**5 + x**-1
    + (x * x + 0.5) ** 1.5 + (x * x + 0.5) ** -2.5,  # fmt: skip
    "backward_only": lambda x, ns: x**-2,
    "positive_only": lambda x, ns: x**2 + x**3 + x**7 - 0.25 * x**4,
    "computed_base": lambda x, ns: (ns.tanh(x) + 2.0) ** -3
    + (ns.tanh(x) + 2.0) ** -6 + (ns.tanh(x) + 2.0) ** 4,  # fmt: skip
    "large_exponents": lambda x, ns: x**12 - x**-12 + x**11 + x**-7,
    "lennard_jones": lambda x, ns: 4 * ((x * x) ** -6 - (x * x) ** -3),
    "with_exp": lambda x, ns: ns.exp(-x * x) * x**-2 + x**-3 * ns.exp(x) + x**3,
    "two_bases": lambda x, ns: x**-2 * (x + 3.0) ** -3 + x**4 * (x + 3.0) ** 2
    + (x + 3.0) ** -1,  # fmt: skip
}


class TorchMath:
    exp = staticmethod(torch.exp)
    tanh = staticmethod(torch.tanh)


def power_model(case, hessian=False):
    m = sg.Model(f"powers_{case}", hessian=hessian)
    x = m.param("x", ("n",))
    a = m.input("a", ("n",))
    y = m.output("y", POWERS[case](x, sg))
    m.loss(sg.sum(a * y) + sg.sum(a**2 * x**-2) + sg.mean(x**3))
    return m


def _power_torch(case):
    def reference(p, inputs):
        x, a = p["x"], inputs["a"]
        y = POWERS[case](x, TorchMath)
        return (a * y).sum() + (a**2 * x**-2).sum() + (x**3).mean(), {"y": y}

    return reference


def power_data(sign):
    def data(rng, n, **_):
        x = rng.uniform(0.5, 2.0, n)
        if sign == "negative":
            x = -x
        elif sign == "mixed":
            x = x * rng.choice([-1.0, 1.0], n)
        return {"x": x}, {"a": rng.standard_normal(n)}

    return data


@pytest.mark.parametrize("case", POWERS)
def test_power_chains_agree_with_pytorch(case):
    signs = ["positive"] if case == "with_fractions" else ["mixed", "negative"]
    model = with_sampler(power_model(case), power_data(signs[0]))
    module = compile_module(model)
    for sign in signs:
        check(model, _power_torch(case), power_data(sign), [{"n": 1}, {"n": 6}],
              module=module, run_verify=False)  # fmt: skip
    assert verify(model, module).ok


def test_positive_powers_at_zero():
    def data(rng, n, **_):
        x = rng.standard_normal(n)
        x[0] = 0.0
        return {"x": x}, {"a": rng.standard_normal(n)}

    m = sg.Model("powers_at_zero")
    x = m.param("x", ("n",))
    a = m.input("a", ("n",))
    m.loss(sg.sum(a * (x**2 + x**3 + x**7 - 0.25 * x**4)) + sg.sum(x**5 * x**2))

    def reference(p, inputs):
        x = p["x"]
        return (inputs["a"] * (x**2 + x**3 + x**7 - 0.25 * x**4)).sum() + (
            x**5 * x**2
        ).sum(), {}

    check(m, reference, data, [{"n": 1}, {"n": 5}])


@pytest.mark.parametrize("case", ["integers", "lennard_jones", "two_bases"])
def test_power_chains_in_the_hessian(case):
    model = with_sampler(power_model(case, hessian=True), power_data("mixed"))
    module = compile_module(model)
    params, inputs = power_data("mixed")(np.random.default_rng(0), 4)
    expected = torch_hessian(_power_torch(case), params, inputs)
    assert rel(module.hessian(params, inputs), expected) <= TOL


# --------------------------------------------------------------------------- sizes in CSE


def batch_norm():
    m = sg.Model("batch_norm")
    x = m.input("x", ("batch", 3))
    W = m.param("W", ("d", 3))
    gamma, beta = m.param("gamma", ("d",)), m.param("beta", ("d",))
    h = x @ W.T
    mu = m.let("mu", sg.mean(h, axis=0))
    var = m.output("var", sg.mean((h - mu) ** 2, axis=0))
    y = m.output("y", (h - mu) / sg.sqrt(var + 1e-5) * gamma + beta)
    m.loss(sg.mean(sg.tanh(y) ** 2) + sg.sum(var) / 3.0)
    return m


def _batch_norm_torch(p, inputs):
    h = inputs["x"] @ p["W"].T
    var = h.var(0, unbiased=False)
    y = (h - h.mean(0)) / torch.sqrt(var + 1e-5) * p["gamma"] + p["beta"]
    return torch.mean(torch.tanh(y) ** 2) + var.sum() / 3.0, {"var": var, "y": y}


def _batch_norm_data(rng, batch, d, **_):
    params = {
        "W": rng.standard_normal((d, 3)),
        "gamma": 1 + 0.3 * rng.standard_normal(d),
        "beta": rng.standard_normal(d),
    }
    return params, {"x": 2 * rng.standard_normal((batch, 3)) + 1}


def layer_norm_3d():
    m = sg.Model("layer_norm_3d")
    x = m.param("x", ("batch", "T", "d"))
    mu = sg.mean(x, axis=-1, keepdims=True)
    var = sg.mean((x - mu) ** 2, axis=-1, keepdims=True)
    y = m.output("y", (x - mu) / sg.sqrt(var + 1e-5))
    z = sg.mean(y * y, axis=(0, 1))
    m.loss(sg.sum(z * sg.mean(x, axis=(0, 1))) + sg.mean(sg.sqrt(var + 1e-5)))
    return m


def _layer_norm_3d_torch(p, inputs):
    x = p["x"]
    y = F.layer_norm(x, x.shape[-1:], eps=1e-5)
    var = x.var(-1, unbiased=False, keepdim=True)
    z = (y * y).mean((0, 1))
    return (z * x.mean((0, 1))).sum() + torch.sqrt(var + 1e-5).mean(), {"y": y}


def _layer_norm_3d_data(rng, batch, T, d, **_):
    return {"x": 2 * rng.standard_normal((batch, T, d)) + 0.5}, {}


def means_of_means():
    m = sg.Model("means_of_means")
    x = m.param("x", ("batch", "d"))
    m.loss(
        sg.mean(x)
        + sg.mean(x**2) / 4.0
        + sg.sum(sg.mean(x, axis=0) ** 2)
        + sg.sum(sg.mean(x, axis=1) ** 3)
        + sg.mean(sg.mean(x, axis=0)) ** 2
    )
    return m


def _means_of_means_torch(p, inputs):
    x = p["x"]
    loss = x.mean() + (x**2).mean() / 4.0 + (x.mean(0) ** 2).sum()
    return loss + (x.mean(1) ** 3).sum() + x.mean(0).mean() ** 2, {}


def _matrix_data(rng, batch, d, **_):
    return {"x": rng.standard_normal((batch, d))}, {}


def unbiased_std():
    """batch / (batch - 1) as a count of ones: sizes and values in one formula."""
    m = sg.Model("unbiased_std")
    x = m.param("x", ("batch", "d"))
    mu = sg.mean(x, axis=0, keepdims=True)
    count = sg.sum(x * 0 + 1.0, axis=0, keepdims=True)
    var = sg.sum((x - mu) ** 2, axis=0, keepdims=True) / (count - 1)
    m.output("std", sg.sqrt(var))
    m.loss(sg.sum(sg.log(var)) + sg.mean((x - mu) / sg.sqrt(var + 0.1)))
    return m


def _unbiased_std_torch(p, inputs):
    x = p["x"]
    var = x.var(0, keepdim=True)
    centred = (x - x.mean(0, keepdim=True)) / (var + 0.1).sqrt()
    return torch.log(var).sum() + centred.mean(), {"std": var.sqrt()}


def scaled_attention():
    m = sg.Model("scaled_attention")
    X = m.input("X", ("T", "d"))
    Wq, Wk = m.param("Wq", ("d", "d")), m.param("Wk", ("d", "d"))
    S = (X @ Wq.T) @ (X @ Wk.T).T / sg.sqrt(sg.sum(X[0] * 0 + 1.0))  # / sqrt(d)
    A = m.output("A", sg.softmax(S, axis=-1))
    m.loss(sg.mean(A * sg.log(A + 1e-3)) + sg.mean(S))
    return m


def _scaled_attention_torch(p, inputs):
    X = inputs["X"]
    S = (X @ p["Wq"].T) @ (X @ p["Wk"].T).T / np.sqrt(X.shape[1])
    A = torch.softmax(S, -1)
    return (A * torch.log(A + 1e-3)).mean() + S.mean(), {"A": A}


def _scaled_attention_data(rng, T, d, **_):
    params = {
        "Wq": rng.standard_normal((d, d)) / d,
        "Wk": rng.standard_normal((d, d)),
    }
    return params, {"X": rng.standard_normal((T, d))}


SIZE_MODELS = {
    "batch_norm": (
        batch_norm,
        _batch_norm_torch,
        _batch_norm_data,
        [{"batch": 1, "d": 1}, {"batch": 2, "d": 1}, {"batch": 7, "d": 4}],
    ),
    "layer_norm_3d": (
        layer_norm_3d,
        _layer_norm_3d_torch,
        _layer_norm_3d_data,
        [{"batch": 1, "T": 1, "d": 1}, {"batch": 2, "T": 3, "d": 5}],
    ),
    "means_of_means": (
        means_of_means,
        _means_of_means_torch,
        _matrix_data,
        [{"batch": 1, "d": 1}, {"batch": 3, "d": 5}],
    ),
    "unbiased_std": (
        unbiased_std,
        _unbiased_std_torch,
        _matrix_data,
        [{"batch": 2, "d": 1}, {"batch": 6, "d": 3}],
    ),
    "scaled_attention": (
        scaled_attention,
        _scaled_attention_torch,
        _scaled_attention_data,
        [{"T": 1, "d": 1}, {"T": 4, "d": 3}],
    ),
}


@pytest.mark.parametrize("case", SIZE_MODELS)
def test_shared_subexpressions_with_sizes(case):
    build, reference, data, sizes = SIZE_MODELS[case]
    model = build()
    if case == "unbiased_std":  # batch = 1 divides by zero, in torch too
        with_sampler(model, lambda rng, **dims: data(rng, **{**dims, "batch": 4}))
    check(model, reference, data, sizes)


@pytest.mark.parametrize("case", ["batch_norm", "layer_norm_3d", "means_of_means"])
def test_shared_subexpressions_with_sizes_unrolled_and_hessian(case):
    build, reference, data, sizes = SIZE_MODELS[case]
    small = sizes[-2] if case == "batch_norm" else sizes[0]
    model = build()
    model.unroll(**small)
    check(model, reference, data, [small, sizes[-1]])

    model = build()
    model.hessian = True
    module = compile_module(model)
    for dims in (small, {k: 2 for k in small}):
        params, inputs = data(np.random.default_rng(3), **dims)
        expected = torch_hessian(reference, params, inputs)
        assert rel(module.hessian(params, inputs), expected) <= TOL
    assert verify(model, module).ok


# --------------------------------------------------------------------------- 0-d and constants


def scalars(hessian=False):
    m = sg.Model("scalars", hessian=hessian)
    a, b, c = m.param("a", ()), m.param("b", ()), m.param("c", ())
    x, y = m.input("x", ("n",)), m.input("y", ("n",))
    s = m.let("s", a * b + c)
    pred = m.output("pred", s * sg.exp(-b * x) + c / (1 + a**2))
    t = m.output("t", sg.mean((pred - y) ** 2))
    u = m.output("u", a**-3 + b**2 + a**-1 + c**5 + a**4)
    m.loss(t + 0.1 * u + s**2 * 1e-5 + sg.sum(x) * a)
    return m


def _scalars_torch(p, inputs):
    a, b, c = p["a"], p["b"], p["c"]
    s = a * b + c
    pred = s * torch.exp(-b * inputs["x"]) + c / (1 + a**2)
    t = ((pred - inputs["y"]) ** 2).mean()
    u = a**-3 + b**2 + a**-1 + c**5 + a**4
    loss = t + 0.1 * u + s**2 * 1e-5 + inputs["x"].sum() * a
    return loss, {"pred": pred, "t": t, "u": u}


def _scalars_data(rng, n, **_):
    params = {"a": np.array(1.3), "b": np.array(-0.4), "c": np.array(0.8)}
    return params, {"x": rng.standard_normal(n), "y": rng.standard_normal(n)}


@pytest.mark.parametrize("variant", ["vectorized", "unrolled", "hessian"])
def test_scalar_parameters_and_results(variant):
    model = scalars(hessian=variant == "hessian")
    if variant == "unrolled":
        model.unroll(n=2)
    module = check(model, _scalars_torch, _scalars_data, [{"n": 1}, {"n": 2}, {"n": 5}])
    params, inputs = _scalars_data(np.random.default_rng(0), 2)
    outputs, cache = module.forward(params, inputs)
    results = [
        outputs,
        module.value_and_grad(params, inputs)[1],
        module.backward(cache),
    ]
    if variant == "hessian":
        results.append(module.hvp(params, inputs, {k: np.array(1.0) for k in params}))
    for values in results:
        for k, v in values.items():
            assert isinstance(v, np.ndarray) and v.dtype == np.float64, k
    as_floats = {k: float(v) for k, v in params.items()}
    loss, grads = module.value_and_grad(as_floats, inputs)
    assert loss == module.value_and_grad(params, inputs)[0]


CONSTANTS = {
    "eps": 1e-5,
    "tenth": 0.1,
    "third": 1 / 3,
    "sqrt2": 2**0.5,
    "tiny": 1e-300,
    "subnormal": 5e-324,
}
FORMS = {
    "scale": (lambda x, w, c: sg.sum(c * x**2) * w, lambda x, w, c: (c * x**2).sum() * w),
    "shift": (
        lambda x, w, c: sg.sum((x - c) ** 2 * w),
        lambda x, w, c: ((x - c) ** 2 * w).sum(),
    ),
    "epsilon": (
        lambda x, w, c: sg.sum(sg.sqrt(x**2 + c)) * w,
        lambda x, w, c: torch.sqrt(x**2 + c).sum() * w,
    ),
    "divide": (lambda x, w, c: sg.sum(x / c) + w**2 / c, lambda x, w, c: (x / c).sum() + w**2 / c),
}  # fmt: skip


def constant_model(c, form):
    m = sg.Model("constant")
    x, w = m.param("x", ("n",)), m.param("w", ())
    m.loss(FORMS[form][0](x, w, c))
    return m


def _constant_data(rng, n, **_):
    return {"x": rng.standard_normal(n), "w": np.array(0.7)}, {}


def all_forms_model(c):
    """Every form as an output of its own (each compared at 1e-12); the loss sums them."""
    m = sg.Model("constants")
    x, w = m.param("x", ("n",)), m.param("w", ())
    forms = [f for f in FORMS if c > 1e-320 or f != "divide"]  # 1 / 5e-324 overflows
    m.loss(sum(m.output(f, FORMS[f][0](x, w, c)) for f in forms))
    return m


@pytest.mark.parametrize("name", CONSTANTS)
def test_float_constants_round_trip(name):
    c = CONSTANTS[name]
    model = all_forms_model(c)
    source = vectorized_source(model)
    assert repr(c) in source  # printed back exactly as written
    assert not re.search(r"\d{18}", source)

    def reference(p, inputs):
        outputs = {f: FORMS[f][1](p["x"], p["w"], c) for f in model.outputs}
        return sum(outputs.values()), outputs

    check(model, reference, _constant_data, [{"n": 1}, {"n": 5}], tol=1e-12,
          run_verify=False)  # fmt: skip


@pytest.mark.parametrize("c", [1e20, 2.0**70, 1e300])
def test_integer_valued_float_constants_are_not_giant_integers(c):
    source, _ = generate(constant_model(c, "scale"))
    assert not re.search(r"\d{18}", source), "giant integer literal"


@pytest.mark.xfail(
    strict=True,
    reason="constants near the float64 limit: scalar factors are folded first, so "
    "2 * 1e308 (or grad_loss / 5e-309) overflows where torch scales x first",
)
def test_largest_float_constant_gradient():
    m = sg.Model("huge_scale")
    m.loss(sg.sum(1e308 * m.param("x", ("n",)) ** 2))

    def reference(p, inputs):
        return (1e308 * p["x"] ** 2).sum(), {}

    check(m, reference, lambda rng, n: ({"x": np.array([0.25, -0.125])}, {}),
          [{"n": 2}], run_verify=False)  # fmt: skip


def test_division_by_a_subnormal():
    m = sg.Model("subnormal_divide")
    m.loss(sg.sum(m.param("x", ("n",)) / 1e-310))
    module = compile_module(m)
    x = np.array([0.001, -0.002])  # x / 1e-310 elementwise stays finite too
    loss, _ = module.value_and_grad({"x": x}, {})
    assert np.isfinite(loss)
    assert rel(loss, np.sum(x / 1e-310)) <= 1e-12


# --------------------------------------------------------------------------- named values


def named_chain():
    m = sg.Model("named_chain")
    x = m.input("x", ("batch", "d"))
    w, c = m.param("w", ("d",)), m.param("c", ())
    a = m.let("a", x * w + c)
    b = m.let("b", sg.exp(-a * a))
    s = m.let("s", sg.softplus(a))
    g = m.output("g", sg.relu(a) + sg.maximum(b, 0.3) - sg.minimum(s, 1.0))
    k = m.let("k", sg.log_softmax(g, axis=-1))
    lse = m.output("lse", sg.logsumexp(a, axis=0))
    wh = m.let("wh", sg.where(a > 0, a * b, s * 2.0))
    q = m.output("q", g * g * 2.0 + b)
    m.loss(
        -sg.mean(k) + sg.sum(lse) / 10 + sg.mean(wh) + sg.mean(sg.abs(a - 0.5))
        + sg.mean(sg.sigmoid(q) * a)
    )  # fmt: skip
    return m


def _named_chain_torch(p, inputs):
    a = inputs["x"] * p["w"] + p["c"]
    b, s = torch.exp(-a * a), F.softplus(a)
    g = torch.relu(a) + torch.clamp(b, min=0.3) - torch.clamp(s, max=1.0)
    lse = torch.logsumexp(a, 0)
    wh = torch.where(a > 0, a * b, s * 2.0)
    q = g * g * 2.0 + b
    loss = -torch.log_softmax(g, -1).mean() + lse.sum() / 10 + wh.mean()
    loss = loss + (a - 0.5).abs().mean() + (torch.sigmoid(q) * a).mean()
    return loss, {"g": g, "lse": lse, "q": q}


def _named_chain_data(rng, batch, d, **_):
    params = {"w": rng.standard_normal(d), "c": np.array(0.2)}
    return params, {"x": rng.standard_normal((batch, d))}


def named_pairs():
    m = sg.Model("named_pairs")
    x = m.param("x", ("n", 3))
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    d = m.let("d", x[i] - x[j])
    r2 = m.output("r2", sg.sum(d**2, axis=-1))
    s6 = m.let("s6", 1 / r2**3)
    m.loss(sg.sum(m.output("e", 4 * (s6**2 - s6))))
    return m


def _named_pairs_torch(p, inputs):
    d = p["x"][inputs["i"]] - p["x"][inputs["j"]]
    r2 = (d**2).sum(-1)
    e = 4 * (r2**-6 - r2**-3)
    return e.sum(), {"r2": r2, "e": e}


NAMED = {
    "chain": (named_chain, _named_chain_torch, _named_chain_data,
              [{"batch": 1, "d": 1}, {"batch": 40, "d": 30}]),
    "pairs": (named_pairs, _named_pairs_torch, pair_data(3, "dense", weighted=False),
              [{"n": 4}, {"n": 60}]),
    "batch_norm": SIZE_MODELS["batch_norm"][:3] + ([{"batch": 2000, "d": 3}],),
}  # fmt: skip


def in_place_writes_after_reads(source: str, name: str) -> list[str]:
    """Statements that write ``name`` (or an alias of it) in place after some other
    statement read it: such a write changes the value the model names."""
    found = []
    for function in source.split("\ndef ")[1:]:
        aliases, read = {name}, False
        for line in function.splitlines()[1:]:
            s = line.strip()
            if not s or s.startswith(('"', "#", "return", "def")):
                continue
            copy_ = re.fullmatch(r"(\w+) = (\w+)", s)
            if copy_ and (copy_[1] in aliases or copy_[2] in aliases):
                aliases |= {copy_[1], copy_[2]}
                continue
            writes = any(
                re.match(rf"{a} [-+*/]=", s) or re.search(rf"out={a}\b", s)
                for a in aliases
            )
            if writes and read:
                found.append(s)
            target, _, value = s.partition(" = ")
            if not writes and re.search(rf"\b{name}\b", value or s) and target != name:
                read = True
    return found


@pytest.mark.parametrize("case", NAMED)
def test_named_values_are_never_overwritten(case):
    build, reference, data, sizes = NAMED[case]
    model = with_sampler(build(), data)
    module = check(model, reference, data, sizes)
    names = [model.names[n] for n in model.names if model.names[n] in model.outputs] + [
        n for n in ("a", "b", "s", "k", "wh", "d", "s6", "mu") if n in model.names.values()
    ]  # fmt: skip
    source, _ = generate(model)
    for name in names:
        assert in_place_writes_after_reads(source, name) == [], name

    params, inputs = data(np.random.default_rng(0), **sizes[-1])
    before = copy.deepcopy((params, inputs))
    outputs, cache = module.forward(params, inputs)
    kept = copy.deepcopy(outputs)
    first = module.backward(cache, grad_loss=GRAD_LOSS)
    again = module.backward(cache, grad_loss=GRAD_LOSS)
    module.value_and_grad(params, inputs)
    for k in outputs:  # backward reads the cache, never writes what forward returned
        np.testing.assert_array_equal(outputs[k], kept[k])
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])
    for given, original in zip((params, inputs), before, strict=True):
        for k in given:
            np.testing.assert_array_equal(given[k], original[k])


def test_hessian_model_with_an_output():
    m = sg.Model("hessian_with_output", hessian=True)
    w = m.param("w", (3,))
    x = m.input("x", (4, 3))
    a = x * w
    b = m.output("b", sg.exp(a))
    m.loss(sg.sum(b * b) + sg.sum(a * b))

    def reference(p, inputs):
        a = inputs["x"] * p["w"]
        b = torch.exp(a)
        return (b * b).sum() + (a * b).sum(), {"b": b}

    def data(rng, **_):
        return {"w": 0.3 * rng.standard_normal(3)}, {"x": rng.standard_normal((4, 3))}

    module = check(m, reference, data, [{}])
    params, inputs = data(np.random.default_rng(0))
    expected = torch_hessian(reference, params, inputs)
    assert rel(module.hessian(params, inputs), expected) <= TOL
