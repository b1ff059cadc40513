"""What a PyTorch porter writes, with NumPy's names: sg.tile (torch's x.repeat),
sg.repeat (repeat_interleave), sg.split (torch.split / chunk), sg.tril / sg.triu,
sg.cumprod, sg.gelu (exact and tanh), sg.silu, indexing by a list of ints
(x[:, [0, 2]]) and sg.einsum's ``...`` and repeated letters (traces, diagonals), against PyTorch (float64) and central differences, at fixed and at
symbolic sizes; bool inputs as masks (attention with causal and padding masks);
their Hessians and unrolled code; and the errors and hints a porter meets (torch's
dim= and keepdim=, x.repeat, bad lists and repetitions, arithmetic on a mask).
"""

import re

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    check_unrolled,
    compile_module,
)

import symgrad as sg
from symgrad.cli import generate
from symgrad.unroll import UnrollError

torch = pytest.importorskip("torch")
F = torch.nn.functional


# Each case: name -> (param shapes, sg function, torch function); a result that is not
# a scalar is an output (compared entry by entry) and enters the loss as sum(sin(y) y).
CASES = {
    "tile_2d": (
        {"x": ("n", 3)},
        lambda p: sg.tile(p["x"], (2, 3)),
        lambda p: p["x"].repeat(2, 3),
    ),
    "tile_int_and_new_axes": (
        {"x": (2, "n")},
        lambda p: sg.tile(p["x"], (3, 1, 2)),
        lambda p: p["x"].repeat(3, 1, 2),
    ),
    "tile_int": (
        {"x": ("n",)},
        lambda p: sg.tile(p["x"], 3),
        lambda p: p["x"].repeat(3),
    ),
    "repeat_axis": (
        {"x": ("n", 3)},
        lambda p: sg.repeat(p["x"], 2, axis=1),
        lambda p: p["x"].repeat_interleave(2, dim=1),
    ),
    "repeat_axis0_negative": (
        {"x": ("n", 2, 3)},
        lambda p: sg.repeat(p["x"], 3, axis=-3),
        lambda p: p["x"].repeat_interleave(3, dim=0),
    ),
    "repeat_flat": (
        {"x": (2, "n")},
        lambda p: sg.repeat(p["x"], 2),
        lambda p: p["x"].repeat_interleave(2),
    ),
    "split_sections": (
        {"x": ("n", 6)},
        lambda p: _weighted_parts(sg.split(p["x"], 3, axis=1)),
        lambda p: _weighted_parts(torch.chunk(p["x"], 3, dim=1)),
    ),
    "split_indices": (
        {"x": ("n", 7)},
        lambda p: _weighted_parts(sg.split(p["x"], [2, 3, 5], axis=-1)),
        lambda p: _weighted_parts(torch.split(p["x"], [2, 1, 2, 2], dim=-1)),
    ),
    "split_symbolic_axis_at_indices": (
        {"x": ("n", 2)},
        lambda p: _weighted_parts(sg.split(p["x"], [1, 3])),
        lambda p: _weighted_parts(
            torch.split(p["x"], [1, 2, p["x"].shape[0] - 3], dim=0)
        ),
    ),
    "tril": (
        {"x": ("n", "n")},
        lambda p: sg.tril(p["x"]),
        lambda p: torch.tril(p["x"]),
    ),
    "triu_k1_batched_rectangular": (
        {"x": (2, "n", 5)},
        lambda p: sg.triu(p["x"], k=1),
        lambda p: torch.triu(p["x"], diagonal=1),
    ),
    "tril_negative_k": (
        {"x": (4, "n")},
        lambda p: sg.tril(p["x"], -2),
        lambda p: torch.tril(p["x"], -2),
    ),
    "causal_mask_attention": (
        {"x": ("n", "n")},
        lambda p: sg.softmax(
            sg.where(sg.triu(sg.ones_like(p["x"]), 1) > 0, -1e9, p["x"]), axis=-1
        ),
        lambda p: torch.softmax(
            p["x"].masked_fill(torch.triu(torch.ones_like(p["x"]), 1) > 0, -1e9),
            dim=-1,
        ),
    ),
    "cumprod": (
        {"x": ("n", 4)},
        lambda p: sg.cumprod(p["x"], axis=1),
        lambda p: torch.cumprod(p["x"], dim=1),
    ),
    "cumprod_flat": (
        {"x": (2, 3)},
        lambda p: p["x"].reshape(-1)[None, :] * sg.cumprod(p["x"]),
        lambda p: p["x"].reshape(-1)[None, :] * torch.cumprod(p["x"].reshape(-1), 0),
    ),
    "gelu": (
        {"x": ("n", 3)},
        lambda p: sg.gelu(p["x"]),
        lambda p: F.gelu(p["x"]),
    ),
    "gelu_tanh": (
        {"x": ("n", 3)},
        lambda p: sg.gelu(p["x"], approximate="tanh"),
        lambda p: F.gelu(p["x"], approximate="tanh"),
    ),
    "silu": (
        {"x": ("n", 3)},
        lambda p: sg.silu(p["x"]),
        lambda p: F.silu(p["x"]),
    ),
    "pick_columns": (
        {"x": ("n", 4)},
        lambda p: p["x"][:, [3, 0, 0, -2]],
        lambda p: p["x"][:, [3, 0, 0, -2]],
    ),
    "pick_rows_then_slice": (
        {"x": (5, "n")},
        lambda p: p["x"][[4, 1], 1:],
        lambda p: p["x"][[4, 1], 1:],
    ),
    "pick_with_ellipsis_and_new_axis": (
        {"x": (2, "n", 3)},
        lambda p: p["x"][None, ..., np.array([2, 0])],
        lambda p: p["x"][None, ..., [2, 0]],
    ),
    "pick_next_to_an_int": (
        {"x": (3, 4, "n")},
        lambda p: p["x"][1, [0, 2]] + p["x"][:, 0, [1, 2]].sum(),
        lambda p: p["x"][1, [0, 2]] + p["x"][:, 0, [1, 2]].sum(),
    ),
    "einsum_batched_ellipsis": (
        {"a": ("n", 2, 3), "b": (3, 4)},
        lambda p: sg.einsum("...ij,...jk->...ik", p["a"], p["b"]),
        lambda p: torch.einsum("...ij,...jk->...ik", p["a"], p["b"]),
    ),
    "einsum_implicit_ellipsis_broadcast_one": (
        {"a": (2, "n", 3), "b": (1, 3)},
        lambda p: sg.einsum("...i,...i", p["a"], p["b"]),
        lambda p: torch.einsum("...i,...i", p["a"], p["b"]),
    ),
    "einsum_trace": (
        {"a": ("n", "n")},
        lambda p: sg.einsum("ii", p["a"]) * sg.einsum("ij,ji", p["a"], p["a"]),
        lambda p: torch.einsum("ii", p["a"]) * torch.einsum("ij,ji", p["a"], p["a"]),
    ),
    "einsum_diagonals": (
        {"a": (2, "n", "n"), "b": (3, 3, 2)},
        lambda p: sg.einsum("bii->bi", p["a"]).sum(1, keepdims=True)
        * sg.einsum("iij->ji", p["b"]),
        lambda p: torch.einsum("bii->bi", p["a"]).sum(1, keepdim=True)
        * torch.einsum("iij->ji", p["b"]),
    ),
    "sort_rows": (
        {"x": ("n", 4)},
        lambda p: sg.sort(p["x"], axis=1),
        lambda p: torch.sort(p["x"], dim=1, stable=True).values,
    ),
    "sort_symbolic_axis": (
        {"x": ("n", 3)},
        lambda p: sg.sort(p["x"] ** 3, axis=0),
        lambda p: torch.sort(p["x"] ** 3, dim=0, stable=True).values,
    ),
    "sort_flat": (
        {"x": (2, "n")},
        lambda p: sg.sort(p["x"], axis=None),
        lambda p: torch.sort(p["x"].flatten(), stable=True).values,
    ),
    "argsort_orders_another": (
        {"x": ("n", 4), "y": ("n", 4)},
        lambda p: sg.take_along_axis(p["y"], sg.argsort(p["x"]), 1) * p["x"],
        lambda p: torch.gather(p["y"], 1, torch.argsort(p["x"], stable=True)) * p["x"],
    ),
    "topk_median_by_sort": (
        {"x": ("n", 5)},
        lambda p: sg.flip(sg.sort(p["x"]), -1)[:, :2] * sg.sort(p["x"])[:, 2:3],
        lambda p: torch.topk(p["x"], 2).values * p["x"].median(dim=1).values[:, None],
    ),
    "eye": (
        {"x": ("n", "n"), "y": ("n", 3)},
        lambda p: sg.solve(p["x"] @ p["x"].T + sg.eye(p["x"].shape[0]), p["y"])
        + sg.eye(p["y"].shape[0], 3, k=-1) * p["y"]
        + sg.eye(3, k=1)[0],
        lambda p: torch.linalg.solve(
            p["x"] @ p["x"].T + torch.eye(len(p["x"]), dtype=torch.float64), p["y"]
        )
        + torch.tensor(np.eye(len(p["y"]), 3, -1)) * p["y"]
        + torch.tensor(np.eye(3, k=1)[0]),
    ),
    "eye_offsets": (
        {"x": ("n", 4)},
        lambda p: (p["x"] - sg.eye(p["x"].shape[0], 4, k=1))
        * sg.eye(p["x"].shape[0], 4, -1)
        + sg.eye(p["x"].shape[0]) @ p["x"],
        lambda p: (p["x"] - torch.tensor(np.eye(len(p["x"]), 4, 1)))
        * torch.tensor(np.eye(len(p["x"]), 4, -1))
        + torch.eye(len(p["x"]), dtype=torch.float64) @ p["x"],
    ),
    "pick_symbolic_axis": (
        {"x": ("n", 2)},
        lambda p: p["x"][[0, -1, 1]],
        lambda p: p["x"][[0, -1, 1]],
    ),
}
SIZES = {"n": 4}


def _weighted_parts(parts):
    """Each part weighted differently, so parts swapped or misplaced change the loss."""
    total = 0
    for k, part in enumerate(parts):
        total = total + (k + 1.5) * (part * part).sum() + (part * (k - 1.0)).sum()
    return total


def _is_scalar(value):
    return not isinstance(value, (sg.Expr, torch.Tensor)) or not value.ndim


def build(name, hessian=False, n=SIZES["n"]):
    shapes, sg_fn, torch_fn = CASES[name]
    m = sg.Model(name, hessian=hessian)
    params = {k: m.param(k, shape) for k, shape in shapes.items()}
    out = sg_fn(params)
    if not _is_scalar(out):
        m.output("out", out)
        out = sg.sum(sg.sin(out) * out)
    m.loss(out)

    def reference(t, _):
        y = torch_fn(t)
        if _is_scalar(y):
            return y, {}
        return (torch.sin(y) * y).sum(), {"out": y}

    rng = np.random.default_rng(len(name))
    data = {
        k: rng.standard_normal(tuple(n if d == "n" else d for d in shape))
        for k, shape in shapes.items()
    }
    return m, reference, data, {}


@pytest.mark.parametrize("name", CASES)
def test_agrees_with_torch_and_differences(name):
    m, reference, params, inputs = build(name)
    module = compile_module(m)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


@pytest.mark.parametrize("n", [3, 7])
@pytest.mark.parametrize(
    "name",
    [
        "tile_2d",
        "repeat_flat",
        "split_symbolic_axis_at_indices",
        "tril",
        "pick_symbolic_axis",
        "sort_symbolic_axis",
        "eye",
    ],
)
def test_one_module_serves_other_sizes(name, n):
    module = compile_module(build(name)[0])
    _, reference, params, inputs = build(name, n=n)
    check(module, reference, params, inputs)


@pytest.mark.parametrize(
    "name",
    ["gelu", "gelu_tanh", "silu", "cumprod", "tile_2d", "argsort_orders_another"],
)
def test_hessian_agrees_with_torch(name):
    m, reference, params, inputs = build(name, hessian=True)
    module = compile_module(m)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


@pytest.mark.parametrize(
    "name",
    [
        "tril",
        "repeat_axis",
        "pick_columns",
        "split_indices",
        "gelu_tanh",
        "eye_offsets",
    ],
)
def test_unrolled(name):
    m, reference, params, inputs = build(name)
    m.unroll(n=SIZES["n"])
    module = compile_module(m)
    check_unrolled(module, reference, params, inputs)


def test_sorting_models_stay_in_numpy():
    """A sort has no scalar form: a small fixed-size model is not unrolled, and asking
    for it says why."""
    m = sg.Model("sorted_fixed")
    x = m.param("x", (2, 4))
    m.loss(sg.sum(sg.sort(x)[:, -1] ** 2))
    source, _ = generate(m)
    assert "_value_and_grad_" not in source and "np.argsort(" in source
    m.unroll()
    with pytest.raises(UnrollError, match=r"argsort\(x\) \(a sort\) has no scalar"):
        generate(m)


def test_sort_gradient_at_ties_follows_the_stable_order():
    """Equal values keep their order, so each gets the gradient of its stable rank."""
    m, reference, params, _ = build("sort_rows")
    params["x"][0] = [0.5, -1.0, 0.5, 0.5]
    params["x"][1, :2] = params["x"][1, 2:]
    check(compile_module(m), reference, params, {})


def test_cumprod_gradient_exact_at_zero_factors():
    m, reference, params, _ = build("cumprod")
    params["x"][1, 1] = 0.0
    params["x"][2, [0, 2]] = 0.0
    params["x"][3, :] = 0.0
    _, reference, _, inputs = build("cumprod")
    check(compile_module(m), reference, params, inputs)


def test_gelu_far_tails_match_torch():
    m, reference, params, inputs = build("gelu")
    params["x"][0] = [-40.0, 30.0, -8.0]
    check(compile_module(m), reference, params, inputs)


def test_tile_and_split_shapes_follow_symbolic_sizes():
    m = sg.Model("shapes")
    x = m.param("x", ("n", 6))
    assert sg.tile(x, (2, 1)).shape == (2 * x.shape[0], 6)
    assert sg.repeat(x, 3, axis=0).shape == (3 * x.shape[0], 6)
    assert [p.shape for p in sg.split(x, 3, axis=1)] == [(x.shape[0], 2)] * 3
    assert [p.shape[0] for p in sg.split(x, [1], axis=0)] == [1, x.shape[0] - 1]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: x[:, [True, False, True]], "for a mask use sg.where"),
        (lambda x: x[[0, 1], [1, 2]], "one non-empty list of ints"),
        (lambda x: x[:, []], "one non-empty list of ints"),
        (lambda x: x[:, [0.5]], "one non-empty list of ints"),
        (lambda x: x[[0, 3], :], "index 3 is out of bounds for axis 0"),
        (lambda x: x[:, [-4]], "index -4 is out of bounds for axis 1"),
        (lambda x: x[[0, 1], :, 0], "separated by a slice"),
        (lambda x: x[1, :, [0, 1]], "separated by a slice"),
        (lambda x: sg.tile(x, (2, 0)), "repetitions must be ints >= 1"),
        (lambda x: sg.repeat(x, 1.5, axis=0), "repeats must be one int, not 1.5"),
        (lambda x: sg.split(x, 2, axis=1), "does not divide into 2 equal sections"),
        (lambda x: sg.split(x, 2, axis=3), "axis 3 is out of range"),
        (lambda x: sg.tril(x[0, 0]), "needs at least 2 axes"),
        (lambda x: sg.cumprod(x, axis=2), "fixed size from 1 to 32"),
        (lambda x: sg.gelu(x, approximate="erf"), "must be 'none' or 'tanh'"),
        (lambda x: sg.einsum("...i->i", x), "the output needs '...'"),
        (lambda x: sg.einsum("ijj", x), "j is 3 in one operand and n in another"),
    ],
)
def test_porting_errors_name_the_problem(make, message):
    m = sg.Model("errors")
    x = m.param("x", (3, 3, "n"))
    with pytest.raises((sg.ShapeError, ValueError)) as error:
        make(x)
    assert message in str(error.value)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: sg.sum(x, dim=1), "sg.sum() takes NumPy's axis=, not torch's dim="),
        (lambda x: x.mean(dim=0), "x.mean() takes NumPy's axis="),
        (lambda x: x.max(1, keepdim=True), "x.max() takes NumPy's keepdims="),
        (lambda x: sg.softmax(x, dim=-1), "sg.softmax() takes NumPy's axis="),
        (lambda x: sg.cumsum(x, dim=0), "sg.cumsum() takes NumPy's axis="),
        # without an axis, torch's keyword is one Python would refuse: by sg's name
        (lambda x: sg.exp(x, dim=0), "sg.exp() got an unexpected keyword argument"),
        (lambda x: sg.abs(x, out=x), "sg.abs() got an unexpected keyword argument"),
        (lambda x: sg.lgamma(x, dim=0), "sg.lgamma() got an unexpected keyword"),
    ],
)
def test_torch_keywords_name_numpys(make, message):
    m = sg.Model("keywords")
    x = m.param("x", (2, 3))
    with pytest.raises(
        TypeError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        make(x)


@pytest.mark.parametrize(
    "method, hint",
    [
        ("repeat", "sg.tile(x, reps) (torch's x.repeat is NumPy's tile)"),
        ("repeat_interleave", "sg.repeat(x, repeats, axis)"),
        ("expand", "sg.broadcast_to(x, shape)"),
        ("chunk", "sg.split(x, sections, axis)"),
    ],
)
def test_torch_methods_name_numpys_functions(method, hint):
    m = sg.Model("methods")
    x = m.param("x", (2, 3))
    with pytest.raises(AttributeError) as error:
        getattr(x, method)(2)
    assert hint in str(error.value)


def test_signatures_stay_readable():
    """The keyword check wraps the functions: help() still shows NumPy's parameters."""
    import inspect

    assert list(inspect.signature(sg.sum).parameters) == ["x", "axis", "keepdims"]
    assert list(inspect.signature(sg.Expr.max).parameters)[1:] == ["axis", "keepdims"]
    assert sg.softmax.__doc__ == sg.model.softmax.__wrapped__.__doc__


# ------------------------------------------------------------------- bool masks


def masked_attention_model():
    """Causal self-attention with a key padding mask, both bool inputs, as torch's
    masked_fill and a padded position's loss dropped by torch.where."""
    m = sg.Model("masked_attention")
    q, k = m.param("q", ("T", 4)), m.input("k", ("T", 4))
    causal = m.input("causal", ("T", "T"), dtype="bool")
    keep = m.input("keep", ("T",), dtype="bool")
    scores = sg.where(causal & keep[None, :], q @ k.T, -1e9)
    p = sg.softmax(scores, axis=-1)
    m.output("p", p)
    m.loss(sg.sum(sg.where(~keep | (p[:, 0] > 0.99), 0, sg.sum(p * scores, axis=1))))

    def reference(t, i):
        scores = t["q"] @ i["k"].T
        scores = scores.masked_fill(~(i["causal"] & i["keep"][None, :]), -1e9)
        p = torch.softmax(scores, -1)
        drop = ~i["keep"] | (p[:, 0] > 0.99)
        return torch.where(drop, 0.0, (p * scores).sum(1)).sum(), {"p": p}

    return m, reference


def masked_attention_data(T, seed=0):
    rng = np.random.default_rng(seed)
    keep = rng.random(T) < 0.7
    keep[0] = True  # row 0 keeps its first key: no row is masked out entirely
    params = {"q": rng.standard_normal((T, 4))}
    causal = np.tril(np.ones((T, T), bool))
    return params, {"k": rng.standard_normal((T, 4)), "causal": causal, "keep": keep}


@pytest.mark.parametrize("T", [1, 5])
def test_bool_masks_agree_with_torch(T):
    m, reference = masked_attention_model()
    module = compile_module(m)
    params, inputs = masked_attention_data(T)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


def test_bool_masks_unrolled_and_verified():
    from symgrad.verify import verify

    m, reference = masked_attention_model()
    m.unroll(T=3)
    module = compile_module(m)
    params, inputs = masked_attention_data(3, seed=1)
    check_unrolled(module, reference, params, inputs)
    report = verify(m, module)  # the tape, with random bool masks
    assert all(row.tape_error < 1e-9 for row in report.rows.values()), report


def test_bool_mask_errors_name_the_problem():
    m = sg.Model("mask_errors")
    x = m.param("x", (3,))
    mask = m.input("mask", (3,), dtype="bool")
    for compute in (lambda: mask * x, lambda: sg.sum(mask), lambda: -mask):
        with pytest.raises(sg.ModelError, match=r"bool array \(a mask\).*sg.where"):
            compute()
    with pytest.raises(TypeError, match="needs a comparison .* or a bool input"):
        sg.where(x, x, 0)
    with pytest.raises(TypeError, match="needs a comparison .* or a bool input"):
        (x > 0) & x
    with pytest.raises(sg.ModelError, match="'float64', 'int64' or 'bool'"):
        m.input("flag", (3,), dtype="bool_")
    m.loss(sg.sum(sg.where(mask, x, 0)))
    module = compile_module(m)
    with pytest.raises(ValueError, match=r"inputs\['mask'\]: expected a bool array"):
        module.value_and_grad({"x": np.ones(3)}, {"mask": np.ones(3)})
    loss, grads = module.value_and_grad(
        {"x": np.arange(3.0)}, {"mask": np.array([True, False, True])}
    )
    assert loss == 2.0 and grads["x"].tolist() == [1.0, 0.0, 1.0]


# --------------------------------------------------------------- pad modes, cross


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric", "wrap"])
@pytest.mark.parametrize("widths", [((1, 2), (0, 3)), 2, (3, 0)])
def test_pad_modes_pick_numpys_entries(mode, widths):
    """Each padded entry is the entry np.pad puts there (found by padding the entries'
    numbers), a learned 0-d value for "constant"; on a symbolic axis too."""
    m = sg.Model("pad_" + mode)
    x, v = m.param("x", (4, "n")), m.param("v", ())
    kw = {"constant_values": v} if mode == "constant" else {}
    y = sg.pad(x, widths, mode=mode, **kw)
    m.output("y", y)
    m.loss(sg.sum(sg.sin(y) * y))

    def reference(t, _):
        kw = {"constant_values": -1} if mode == "constant" else {}
        where = np.pad(np.arange(20).reshape(4, 5), widths, mode=mode, **kw)
        entries = torch.cat([t["x"].reshape(-1), t["v"].reshape(1)])
        y = entries[torch.tensor(np.where(where < 0, 20, where))]
        return (torch.sin(y) * y).sum(), {"y": y}

    rng = np.random.default_rng(0)
    params = {"x": rng.standard_normal((4, 5)), "v": np.array(0.7)}
    module = compile_module(m)
    check(module, reference, params, {})
    assert_matches_central_differences(module, params, {})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: sg.pad(x, 1, mode="replicate"), "torch's; NumPy's name is 'edge'"),
        (lambda x: sg.pad(x, 1, mode="circular"), "NumPy's name is 'wrap'"),
        (lambda x: sg.pad(x, 1, mode="mean"), "mode must be one of constant, edge"),
        (lambda x: sg.pad(x, 3, mode="reflect"), "axis 0 of size 3 by at most 2"),
        (lambda x: sg.pad(x, 4, mode="wrap"), "axis 0 of size 3 by at most 3, not 4"),
        (lambda x: sg.pad(x, 1, constant_values=x), "constant_values must be 0-d"),
        (lambda x: sg.cross(x, x, axis=-1), "axis -1 has size n, not 3"),
    ],
)
def test_pad_and_cross_errors(make, message):
    m = sg.Model("pad_errors")
    x = m.param("x", (3, "n"))
    with pytest.raises((sg.ShapeError, ValueError), match=re.escape(message)):
        make(x)


@pytest.mark.parametrize(
    "a_shape, b_shape, axis",
    [((4, 3), (3,), -1), ((3, "n"), (3, 1), 0), ((2, "n", 3), ("n", 3), -1)],
)
def test_cross_agrees_with_torch(a_shape, b_shape, axis):
    m = sg.Model("cross")
    a, b = m.param("a", a_shape), m.param("b", b_shape)
    y = sg.cross(a, b, axis=axis)
    m.output("y", y)
    m.loss(sg.sum(sg.sin(y) * y))

    def reference(t, _):
        y = torch.linalg.cross(*torch.broadcast_tensors(t["a"], t["b"]), dim=axis)
        return (torch.sin(y) * y).sum(), {"y": y}

    rng = np.random.default_rng(1)
    sized = {
        k: tuple(5 if d == "n" else d for d in s)
        for k, s in zip("ab", (a_shape, b_shape), strict=True)
    }
    params = {k: rng.standard_normal(shape) for k, shape in sized.items()}
    module = compile_module(m)
    check(module, reference, params, {})
    assert_matches_central_differences(module, params, {})


def test_index_arrays_and_masks_are_rearranged_not_computed():
    """Pairs of indices stacked from two int64 columns pick rows; a mask stacked and
    tiled picks entries; each keeps its dtype (mixing dtypes is refused)."""
    m = sg.Model("rearranged")
    E = m.param("E", (5, 2))
    a, b = m.input("a", ("B",), dtype="int64"), m.input("b", ("B",), dtype="int64")
    keep = m.input("keep", ("B",), dtype="bool")
    pairs = sg.stack([a, b], axis=1)  # (B, 2) int64
    picked = E[pairs]  # (B, 2, 2)
    mask = sg.tile(sg.stack([keep, keep], axis=1), (1, 1))
    m.loss(sg.sum(sg.where(mask[:, :, None], picked, 0.0) ** 2))
    with pytest.raises(sg.ShapeError, match="the parts need one dtype"):
        sg.concatenate([a, E[:, 0]], axis=0)

    def reference(t, i):
        picked = t["E"][torch.stack([i["a"], i["b"]], 1)]
        mask = torch.stack([i["keep"], i["keep"]], 1)[:, :, None]
        return (torch.where(mask, picked, 0.0) ** 2).sum(), {}

    rng = np.random.default_rng(3)
    inputs = {
        "a": rng.integers(0, 5, 6),
        "b": rng.integers(0, 5, 6),
        "keep": rng.random(6) < 0.5,
    }
    check(compile_module(m), reference, {"E": rng.standard_normal((5, 2))}, inputs)
