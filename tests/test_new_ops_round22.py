"""Round 22, adversarial: the porter's operations (sg.tile, sg.repeat, sg.split,
sg.tril/triu, sg.cumprod, sg.gelu, sg.silu, x[:, [2, 0]], sg.einsum's ``...`` and
repeated letters, bool masks) in combination with each other and with older ops, at
their edges, against PyTorch (float64) and central differences.

Covered: an attention block using all of them with gathers, softmax, logsumexp and
stop_gradient (one module over symbolic sizes 1 to 4, all-False and all-True masks,
its Hessian, unrolled code, ``verify``); edges one by one (k beyond the matrix, splits
into one part or at 0 and at the end, repetitions of 1, repeated and negative picks,
``...`` covering no axis or broadcasting size 1, traces over ``...``, cumprod with zeros
and along a size-1 axis, gelu/silu at 0 and at large |x|), their Hessians and unrolled
code; masks as floats through sg.where; deterministic source (another
PYTHONHASHSEED); the generated module's checks of masks (and Python bools and lists
for them, through the unrolled code) and of picks on a symbolic axis; and the errors a
porter meets.

Found and fixed: sg.einsum refused 0-d operands; sg.tile/sg.repeat of a mask and a
list pick of an int64 input were refused (broadcasts and concatenations now keep
their dtype); sg.split at 0 or at the size of a symbolic axis, and into equal
sections of a 2n axis, failed (empty parts are constants, sections a reshape); raw
errors for per-entry repeats, a float section count, torch's diagonal=, mask.float()
and x.diagonal().
"""

import os
import subprocess
import sys

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
from symgrad.verify import verify

torch = pytest.importorskip("torch")
F = torch.nn.functional


# ---------------------------------------------------------------------------- block


def block_model(hessian=False):
    """Attention over T tokens: embeddings gathered by int64 labels, q/k/v by
    sg.split, scores by einsum with ``...``, a causal tril & padding mask, then gelu,
    silu, picks, repeat, tile, cumprod and logsumexp; padded rows dropped by the mask.
    """
    m = sg.Model("block22", hessian=hessian)
    x = m.input("x", ("T", 4))
    keep = m.input("keep", ("T",), dtype="bool")
    labels = m.input("labels", ("T",), dtype="int64")
    E = m.param("E", (5, 4))
    W = m.param("W", (4, 6))
    g = m.param("g", (3,))
    h = x + E[labels]
    q, k, v = sg.split(h @ W, 3, axis=1)  # (T, 2) each
    scores = sg.einsum("...id,...jd->...ij", q, k)  # (T, T)
    causal = sg.tril(sg.ones_like(scores)) > 0
    scores = sg.where(causal & keep[None, :], scores, -1e9)
    p = sg.softmax(scores, axis=-1)
    ctx = p @ v  # (T, 2)
    y = sg.gelu(ctx[:, [1, 0, -1]] * g) + sg.silu(sg.repeat(ctx, 2, axis=1)[:, 1:])
    z = sg.cumprod(sg.tanh(y), axis=1)  # (T, 3)
    lse = sg.logsumexp(sg.tile(z, (1, 2)) * g[[0, -1, 1, 2, 2, 0]], axis=1)  # (T,)
    m.output("p", p)
    m.output("z", z)
    baseline = sg.stop_gradient(sg.mean(lse))
    m.loss(
        sg.sum(sg.where(keep & (lse > baseline), lse**2, lse))
        + sg.sum(sg.triu(p, 1) * 0.0 + sg.tril(p, -1) * sg.stop_gradient(p))
        + sg.einsum("ii", sg.einsum("ti,tj->ij", y, z))
    )

    def reference(t, i):
        E, W, g = t["E"], t["W"], t["g"]
        keep = i["keep"]
        h = i["x"] + E[i["labels"]]
        q, k, v = torch.split(h @ W, 2, dim=1)
        scores = torch.einsum("...id,...jd->...ij", q, k)
        causal = torch.tril(torch.ones_like(scores)) > 0
        scores = torch.where(causal & keep[None, :], scores, -1e9)
        p = torch.softmax(scores, -1)
        ctx = p @ v
        y = F.gelu(ctx[:, [1, 0, -1]] * g) + F.silu(
            ctx.repeat_interleave(2, dim=1)[:, 1:]
        )
        z = torch.cumprod(torch.tanh(y), 1)
        lse = torch.logsumexp(z.repeat(1, 2) * g[[0, -1, 1, 2, 2, 0]], 1)
        baseline = lse.mean().detach()
        loss = torch.where(keep & (lse > baseline), lse**2, lse).sum()
        loss = loss + (torch.triu(p, 1) * 0.0 + torch.tril(p, -1) * p.detach()).sum()
        loss = loss + torch.einsum("ii", torch.einsum("ti,tj->ij", y, z))
        return loss, {"p": p, "z": z}

    return m, reference


def block_data(T, seed=0, keep=None):
    rng = np.random.default_rng(seed)
    params = {
        "E": rng.standard_normal((5, 4)),
        "W": rng.standard_normal((4, 6)) * 0.7,
        "g": rng.standard_normal(3),
    }
    if keep is None:
        keep = rng.random(T) < 0.6
    inputs = {
        "x": rng.standard_normal((T, 4)),
        "keep": np.broadcast_to(np.asarray(keep, bool), (T,)).copy(),
        "labels": rng.integers(0, 5, T),
    }
    return params, inputs


@pytest.fixture(scope="module")
def block_module():
    return compile_module(block_model()[0])


@pytest.mark.parametrize(
    "T, keep", [(1, None), (1, False), (2, True), (3, None), (4, False), (4, None)]
)
def test_block_one_module_over_sizes_and_masks(block_module, T, keep):
    """keep all False: every row is masked out entirely (softmax of equal -1e9s is
    uniform, and its gradient to the scores 0), as in torch."""
    _, reference = block_model()
    params, inputs = block_data(T, seed=T, keep=keep)
    check(block_module, reference, params, inputs)


def test_block_hessian():
    model, reference = block_model(hessian=True)
    params, inputs = block_data(3, seed=11, keep=[True, False, True])
    module = compile_module(model)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_block_unrolled_and_verified():
    model, reference = block_model()
    model.unroll(T=2)
    module = compile_module(model)
    params, inputs = block_data(2, seed=12, keep=[True, True])
    check_unrolled(module, reference, params, inputs, "_value_and_grad_T_2")
    report = verify(model, module)
    assert report.ok, report.table()


DECLARATION = """
import symgrad as sg


def build():
    m = sg.Model("porter22", hessian=True)
    x = m.input("x", ("T", 4))
    keep = m.input("keep", ("T",), dtype="bool")
    W = m.param("W", (4, 6))
    q, k, v = sg.split(x @ W, 3, axis=1)
    s = sg.einsum("...id,...jd->...ij", q, k)
    s = sg.where((sg.tril(sg.ones_like(s)) > 0) & keep[None, :], s, -1e9)
    y = sg.softmax(s, axis=-1) @ v
    z = sg.gelu(sg.repeat(y, 2, axis=1)[:, [3, 0, -1]]) + sg.silu(sg.tile(y, (1, 2)))[:, :3]
    m.loss(sg.sum(sg.cumprod(z, axis=1)) + sg.einsum("ii", z.T @ z))
    return m
"""


def test_source_is_deterministic_across_hash_seeds():
    namespace = {}
    exec(DECLARATION, namespace)  # noqa: S102 - the declaration above
    source = generate(namespace["build"]())[0]
    script = DECLARATION + (
        "import sys\nfrom symgrad.cli import generate\n"
        "sys.stdout.write(generate(build())[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONHASHSEED="12345"),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == source


# ---------------------------------------------------------------------------- edges

# name -> (param shapes, sg function, torch function); a non-scalar result is an output
# and enters the loss as sum(sin(y) * y + y).
EDGES = {
    "tril_k_beyond": (
        {"x": (3, 4)},
        lambda p: sg.tril(p["x"], 7) - sg.tril(p["x"], -5) + sg.triu(p["x"], 4),
        lambda p: torch.tril(p["x"], 7)
        - torch.tril(p["x"], -5)
        + torch.triu(p["x"], 4),
    ),
    "triu_k_negative_beyond_batched": (
        {"x": (2, "n", 3)},
        lambda p: sg.triu(p["x"], -9) * sg.tril(p["x"], -1) + sg.triu(p["x"], 3),
        lambda p: torch.triu(p["x"], -9) * torch.tril(p["x"], -1)
        + torch.triu(p["x"], 3),
    ),
    "tril_of_transposed_square": (
        {"x": ("n", "n")},
        lambda p: sg.tril(p["x"].T @ p["x"], -1) + sg.triu(sg.tril(p["x"], 0), 0),
        lambda p: torch.tril(p["x"].T @ p["x"], -1)
        + torch.triu(torch.tril(p["x"], 0), 0),
    ),
    "split_one_section_and_empty_parts": (
        {"x": (3, 4)},
        lambda p: _weighted(
            sg.split(p["x"], 1, axis=1)
            + sg.split(p["x"], [0, 2, 2, 4], axis=-1)
            + sg.split(p["x"], [3, 1], axis=1)
            + sg.split(p["x"], [-1, 9], axis=0)
        ),
        lambda p: _weighted(
            [p["x"]]
            + [p["x"][:, a:b] for a, b in [(0, 0), (0, 2), (2, 2), (2, 4), (4, 4)]]
            + [p["x"][:, :3], p["x"][:, 3:1], p["x"][:, 1:]]
            + [p["x"][:-1], p["x"][-1:9], p["x"][9:]]
        ),
    ),
    "split_symbolic_overlapping": (
        {"x": ("n", 2)},
        lambda p: _weighted(
            sg.split(p["x"], [1, -1])
            + sg.split(p["x"].T, 2, axis=0)
            + sg.split(p["x"], [p["x"].shape[0] - 1])
            + [sg.stack(sg.split(p["x"], 2, axis=1)[::-1], axis=0)]
        ),
        lambda p: _weighted(
            [p["x"][:1], p["x"][1:-1], p["x"][-1:]]
            + list(torch.split(p["x"].T, 1, 0))
            + [p["x"][:-1], p["x"][-1:]]
            + [torch.stack(torch.chunk(p["x"], 2, 1)[::-1], 0)]
        ),
    ),
    "tile_and_repeat_by_one": (
        {"x": (2, "n")},
        lambda p: sg.tile(p["x"], 1) * sg.repeat(p["x"], 1, axis=1)
        + sg.tile(p["x"], (1, 1, 1))[0]
        + sg.repeat(p["x"], 1).reshape(2, -1),
        lambda p: p["x"].repeat(1, 1) * p["x"].repeat_interleave(1, dim=1)
        + p["x"].repeat(1, 1, 1)[0]
        + p["x"].repeat_interleave(1).reshape(2, -1),
    ),
    "tile_repeat_chain_symbolic": (
        {"x": ("n", 2), "w": (3,)},
        lambda p: sg.repeat(sg.tile(p["x"], (2, 1, 3)), 2, axis=-2)
        @ sg.repeat(p["w"], 2)
        + sg.tile(p["w"][None, :], (1, 2))[:, [5, 0]].sum(),
        lambda p: p["x"].repeat(2, 1, 3).repeat_interleave(2, dim=-2)
        @ p["w"].repeat_interleave(2)
        + p["w"][None, :].repeat(1, 2)[:, [5, 0]].sum(),
    ),
    "repeat_flat_of_3d_and_0d": (
        {"x": (2, 1, 3), "s": ()},
        lambda p: sg.repeat(p["x"], 2) * sg.repeat(p["s"], 12),
        lambda p: p["x"].repeat_interleave(2) * p["s"].repeat_interleave(12),
    ),
    "pick_repeated_negative_symbolic": (
        {"x": ("n", 3)},
        lambda p: p["x"][[-1, -1, 0, -3]][:, [2, -3, 2]] * p["x"][[2]]
        + p["x"].T[[0, 0]].sum(),
        lambda p: p["x"][[-1, -1, 0, -3]][:, [2, -3, 2]] * p["x"][[2]]
        + p["x"].T[[0, 0]].sum(),
    ),
    "pick_after_reshape_and_transpose": (
        {"x": (2, 3, 2)},
        lambda p: sg.softmax(
            p["x"].reshape(3, 4)[:, [3, 3, 0]].T[[2, 0]] @ p["x"][0], axis=0
        ),
        lambda p: torch.softmax(
            p["x"].reshape(3, 4)[:, [3, 3, 0]].T[[2, 0]] @ p["x"][0], 0
        ),
    ),
    "pick_with_np_ints_and_none": (
        {"x": (3, "n", 2)},
        lambda p: p["x"][None, np.array([2, 2, -3]), np.int64(-1)]
        + (p["x"][..., [1, 0], None] * p["x"][..., None]).sum(),
        lambda p: p["x"][None, [2, 2, -3], -1]
        + (p["x"][..., [1, 0], None] * p["x"][..., None]).sum(),
    ),
    "einsum_dots_cover_nothing": (
        {"a": (2, 3), "b": (3, 2)},
        lambda p: sg.einsum("...ij,...jk->...ik", p["a"], p["b"])
        + sg.einsum("...ij,jk", p["a"], p["b"])
        + sg.einsum("...i,ij->...j", p["a"][0], p["b"])[None, :2],
        lambda p: torch.einsum("...ij,...jk->...ik", p["a"], p["b"])
        + torch.einsum("...ij,jk", p["a"], p["b"])
        + torch.einsum("...i,ij->...j", p["a"][0], p["b"])[None, :2],
    ),
    "einsum_dots_broadcast_size_one": (
        {"a": (1, 3, 2, 3), "b": (4, 1, 3, 2)},
        lambda p: sg.einsum("...ij,...jk->...ik", p["a"], p["b"]),
        lambda p: torch.einsum("...ij,...jk->...ik", p["a"], p["b"]),
    ),
    "einsum_dots_symbolic_vs_one": (
        {"a": ("n", 1, 3), "b": (1, 2, 3)},
        lambda p: sg.einsum("...i,...i->...", p["a"], p["b"])
        + sg.einsum("...i,...i", p["b"], p["a"]),
        lambda p: torch.einsum("...i,...i->...", p["a"], p["b"])
        + torch.einsum("...i,...i", p["b"], p["a"]),
    ),
    "einsum_batched_trace_and_diag_in_the_middle": (
        {"a": ("n", 3, 3), "b": (3, 2, 3)},
        lambda p: sg.einsum("...ii->...", p["a"])[:, None]
        * sg.einsum("i...i->...", p["b"])
        + sg.einsum("...ii->...i", p["a"]).sum(),
        lambda p: torch.einsum("...ii->...", p["a"])[:, None]
        * torch.einsum("i...i->...", p["b"])
        + torch.einsum("...ii->...i", p["a"]).sum(),
    ),
    "einsum_three_operands_with_dots": (
        {"u": ("n", 3), "M": (3, 4), "v": (1, 4)},
        lambda p: sg.einsum("...i,ij,...j->...", p["u"], p["M"], p["v"])
        + sg.einsum(
            "iij,jk->ik", sg.tile(p["M"][None, :3, :], (3, 1, 1)), p["M"].T
        ).sum(),
        lambda p: torch.einsum("...i,ij,...j->...", p["u"], p["M"], p["v"])
        + torch.einsum(
            "iij,jk->ik", p["M"][None, :3, :].repeat(3, 1, 1), p["M"].T
        ).sum(),
    ),
    "einsum_diag_outer_and_triple": (
        {"a": (3, 3), "c": (2, 2, 2)},
        lambda p: sg.einsum("ii,jj->ij", p["a"], p["a"] * p["a"])
        + sg.einsum("ii,ij->j", p["a"], p["a"].T)[:, None]
        + sg.einsum("iii->i", p["c"]).sum()
        + sg.einsum("ij,ij->", p["a"], sg.tril(p["a"])),
        lambda p: torch.einsum("ii,jj->ij", p["a"], p["a"] * p["a"])
        + torch.einsum("ii,ij->j", p["a"], p["a"].T)[:, None]
        + torch.einsum("iii->i", p["c"]).sum()
        + torch.einsum("ij,ij->", p["a"], torch.tril(p["a"])),
    ),
    "numpy_integer_arguments": (
        {"x": (2, 4)},
        lambda p: sg.tile(p["x"], np.array([2, 1]))
        * sg.repeat(p["x"], np.int64(2), axis=np.int64(0))
        + sg.tril(sg.tile(p["x"], (np.int32(2), 1)), np.int64(1))
        + sg.split(p["x"], np.int64(2), axis=np.int64(1))[1].sum()
        + sg.cumprod(p["x"], axis=np.int64(1))[np.array([1, 0, 1, 0], np.int32)],
        lambda p: p["x"].repeat(2, 1) * p["x"].repeat_interleave(2, dim=0)
        + torch.tril(p["x"].repeat(2, 1), 1)
        + torch.chunk(p["x"], 2, 1)[1].sum()
        + torch.cumprod(p["x"], 1)[[1, 0, 1, 0]],
    ),
    "cumprod_size_one_axis": (
        {"x": (1, 4), "y": ("n", 1)},
        lambda p: sg.cumprod(p["x"], axis=0) * sg.cumprod(p["x"], axis=-1)
        + sg.cumprod(p["y"], axis=1).sum(),
        lambda p: torch.cumprod(p["x"], 0) * torch.cumprod(p["x"], -1)
        + torch.cumprod(p["y"], 1).sum(),
    ),
    "cumprod_flat_3d_then_reversed": (
        {"x": (2, 2, 2)},
        lambda p: sg.cumprod(p["x"])[::-1]
        * sg.cumprod(sg.flip(p["x"], 2), axis=2).reshape(-1),
        lambda p: torch.cumprod(p["x"].reshape(-1), 0).flip(0)
        * torch.cumprod(p["x"].flip(2), 2).reshape(-1),
    ),
}
SIZES = {"n": 3}
MINIMUM_N = {"split_symbolic_overlapping": 2, "pick_repeated_negative_symbolic": 3}


def _weighted(parts):
    total = 0
    for k, part in enumerate(parts):
        total = total + (k + 1.5) * (part * part).sum() + (part * (k - 1.0)).sum()
    return total


def _scalar(value):
    return not isinstance(value, (sg.Expr, torch.Tensor)) or not value.ndim


def build_edge(name, hessian=False, n=SIZES["n"], seed=None, zeros=False):
    shapes, sg_fn, torch_fn = EDGES[name]
    m = sg.Model(name, hessian=hessian)
    out = sg_fn({k: m.param(k, shape) for k, shape in shapes.items()})
    if not _scalar(out):
        m.output("out", out)
        out = sg.sum(sg.sin(out) * out + out)
    m.loss(out)

    def reference(t, _):
        y = torch_fn(t)
        if _scalar(y):
            return y, {}
        return (torch.sin(y) * y + y).sum(), {"out": y}

    rng = np.random.default_rng(len(name) if seed is None else seed)
    params = {
        k: rng.standard_normal(tuple(n if d == "n" else d for d in shape))
        for k, shape in shapes.items()
    }
    if zeros:  # a zero factor and a zero row where there is one
        for v in params.values():
            if v.ndim:
                v.reshape(-1)[1] = 0.0
                v[-1] = 0.0
    return m, reference, params, {}


@pytest.mark.parametrize("name", EDGES)
def test_edges_agree_with_torch_and_differences(name):
    m, reference, params, inputs = build_edge(name)
    module = compile_module(m)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)
    if any("n" in shape for shape in EDGES[name][0].values()):  # the same module
        for n in (1, 2, 5):
            if n < MINIMUM_N.get(name, 1):
                continue  # x[1:-1] needs n >= 2, x[[-3]] n >= 3: the module checks
            _, _, params, inputs = build_edge(name, n=n, seed=n)
            check(module, reference, params, inputs)


@pytest.mark.parametrize(
    "name",
    [
        "cumprod_size_one_axis",
        "cumprod_flat_3d_then_reversed",
        "tile_repeat_chain_symbolic",
    ],
)
def test_edges_with_zero_factors(name):
    m, reference, params, inputs = build_edge(name, zeros=True)
    check(compile_module(m), reference, params, inputs)


@pytest.mark.parametrize(
    "name",
    [
        "split_one_section_and_empty_parts",
        "tile_repeat_chain_symbolic",
        "einsum_dots_broadcast_size_one",
        "einsum_batched_trace_and_diag_in_the_middle",
        "cumprod_flat_3d_then_reversed",
        "pick_with_np_ints_and_none",
    ],
)
def test_edges_hessian(name):
    m, reference, params, inputs = build_edge(name, hessian=True)
    module = compile_module(m)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


@pytest.mark.parametrize(
    "name",
    [
        "split_one_section_and_empty_parts",
        "triu_k_negative_beyond_batched",
        "pick_repeated_negative_symbolic",
        "einsum_dots_symbolic_vs_one",
        "einsum_diag_outer_and_triple",
        "cumprod_size_one_axis",
        "tile_repeat_chain_symbolic",
        "einsum_batched_trace_and_diag_in_the_middle",
    ],
)
def test_edges_unrolled(name):
    m, reference, params, inputs = build_edge(name)
    if any("n" in shape for shape in EDGES[name][0].values()):
        m.unroll(n=SIZES["n"])
    check_unrolled(compile_module(m), reference, params, inputs)


@pytest.mark.parametrize(
    "name",
    [
        "tile_repeat_chain_symbolic",
        "einsum_three_operands_with_dots",
        "split_one_section_and_empty_parts",
    ],
)
def test_edges_verified(name):
    m = build_edge(name, hessian=True)[0]
    report = verify(m, compile_module(m))
    assert report.ok, report.table()


def test_pick_beyond_a_symbolic_axis_is_refused_by_the_module():
    """x[[2]] and x[[-3]] of an axis of n need n >= 3, as x[2:3] does: checked."""
    m, _, params, inputs = build_edge("pick_repeated_negative_symbolic")
    module = compile_module(m)
    small = {"x": np.ones((2, 3))}
    with pytest.raises(ValueError, match="n >= 3"):
        module.value_and_grad(small, inputs)


# ---------------------------------------------------------------------------- activations

EXTREMES = np.array([-1000.0, -40.0, -9.0, -1e-8, 0.0, 1e-8, 3.0, 40.0, 1000.0])


def activations_model(hessian=False):
    m = sg.Model("acts22", hessian=hessian)
    x = m.param("x", (9,))
    a = m.param("a", ())
    y = sg.gelu(x) + sg.gelu(x, approximate="tanh") * a + sg.silu(x) * a * a
    m.output("y", y)
    m.loss(sg.sum(y * sg.tanh(x)) + sg.sum(sg.silu(-x) * sg.gelu(a * x)))

    def reference(t, _):
        x, a = t["x"], t["a"]
        y = F.gelu(x) + F.gelu(x, approximate="tanh") * a + F.silu(x) * a * a
        loss = (y * torch.tanh(x)).sum() + (F.silu(-x) * F.gelu(a * x)).sum()
        return loss, {"y": y}

    return m, reference


ACT_PARAMS = {"x": EXTREMES, "a": np.array(0.7)}


def test_activations_at_extremes_agree_with_torch():
    model, reference = activations_model()
    check(compile_module(model), reference, ACT_PARAMS, {})


def test_activations_at_extremes_hessian():
    model, reference = activations_model(hessian=True)
    module = compile_module(model)
    assert_second_order_agrees(module, reference, ACT_PARAMS, {}, scaled=True)


def test_activations_at_extremes_unrolled():
    model, reference = activations_model()
    check_unrolled(compile_module(model), reference, ACT_PARAMS, {})


def test_activations_away_from_extremes_match_differences():
    model, _ = activations_model()
    params = {"x": np.linspace(-4, 4, 9), "a": np.array(-1.3)}
    assert_matches_central_differences(compile_module(model), params, {})


# ---------------------------------------------------------------------------- masks


def masks_model(hessian=False):
    """Masks broadcasting against each other and against values, combined with
    comparisons of an int64 input, nested sg.where, and a 0-d bool flag."""
    m = sg.Model("masks22", hessian=hessian)
    X = m.param("X", ("B", "T"))
    w = m.param("w", ("T",))
    rows = m.input("rows", ("B", 1), dtype="bool")
    cols = m.input("cols", ("T",), dtype="bool")
    flag = m.input("flag", (), dtype="bool")
    labels = m.input("labels", ("B",), dtype="int64")
    both = rows & cols  # (B, T)
    inner = sg.where(both | ~flag, X * w, sg.where(~cols, -X, w))
    picked = sg.where((labels[:, None] == 1) | ~rows, inner, 0.0)
    m.output("picked", picked)
    spread = sg.where(~~rows & (X > 0) | ~(cols | flag), w, sg.tanh(w) * 0.5)  # (B, T)
    m.loss(
        sg.sum(picked**2)
        + sg.sum(spread**3)
        + sg.sum(sg.where(cols, w, 2.0) * sg.cumprod(sg.tanh(w[:3]), axis=0)[-1])
        + sg.sum(sg.logsumexp(sg.where(both, X, -60.0), axis=1))
    )

    def reference(t, i):
        X, w = t["X"], t["w"]
        rows, cols, flag = i["rows"], i["cols"], i["flag"]
        both = rows & cols
        inner = torch.where(both | ~flag, X * w, torch.where(~cols, -X, w))
        picked = torch.where((i["labels"][:, None] == 1) | ~rows, inner, 0.0)
        spread = torch.where(rows & (X > 0) | ~(cols | flag), w, torch.tanh(w) * 0.5)
        loss = (picked**2).sum() + (spread**3).sum()
        loss = (
            loss
            + (
                torch.where(cols, w, 2.0) * torch.cumprod(torch.tanh(w[:3]), 0)[-1]
            ).sum()
        )
        loss = loss + torch.logsumexp(torch.where(both, X, -60.0), 1).sum()
        return loss, {"picked": picked}

    return m, reference


def masks_data(B, T, fill=None, flag=True, seed=0):
    rng = np.random.default_rng(seed)
    params = {"X": rng.standard_normal((B, T)), "w": rng.standard_normal(T)}

    def mask(shape):
        return np.full(shape, fill) if fill is not None else rng.random(shape) < 0.5

    inputs = {
        "rows": mask((B, 1)),
        "cols": mask((T,)),
        "flag": np.array(flag),
        "labels": rng.integers(0, 3, B),
    }
    return params, inputs


@pytest.fixture(scope="module")
def masks_module():
    return compile_module(masks_model()[0])


@pytest.mark.parametrize(
    "B, T, fill, flag",
    [(1, 3, None, True), (4, 3, True, True), (4, 5, False, True), (3, 4, None, False)],
)
def test_masks_agree_with_torch(masks_module, B, T, fill, flag):
    _, reference = masks_model()
    params, inputs = masks_data(B, T, fill, flag, seed=B * T)
    check(masks_module, reference, params, inputs)
    assert_matches_central_differences(masks_module, params, inputs)


def test_masks_hessian_and_unrolled():
    model, reference = masks_model(hessian=True)
    params, inputs = masks_data(2, 3, seed=5)
    assert_second_order_agrees(
        compile_module(model), reference, params, inputs, scaled=True
    )
    model, reference = masks_model()
    model.unroll(B=2, T=3)
    check_unrolled(compile_module(model), reference, params, inputs)


def test_masks_verified():
    model, _ = masks_model(hessian=True)
    report = verify(model, compile_module(model))
    assert report.ok, report.table()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("cols", np.array([1, 0, 1]), r"inputs\['cols'\]: expected a bool array"),
        ("cols", np.array([1.0, 0.0, 1.0]), r"inputs\['cols'\]"),
        ("flag", np.array(1), r"inputs\['flag'\]"),
        ("cols", np.ones(4, bool), r"cols"),  # T = 3 against X's T = 3
        ("rows", np.ones(2, bool), r"rows"),  # (B,) for (B, 1)
        ("labels", np.zeros(2), r"inputs\['labels'\]"),  # float for int64
    ],
)
def test_module_refuses_wrong_mask_inputs(masks_module, key, value, message):
    params, inputs = masks_data(2, 3, seed=1)
    with pytest.raises(ValueError, match=message):
        masks_module.value_and_grad(params, dict(inputs, **{key: value}))


def test_module_takes_a_python_bool_flag(masks_module):
    _, reference = masks_model()
    params, inputs = masks_data(2, 3, seed=2)
    for flag in (True, False, np.bool_(False)):
        check(masks_module, reference, params, dict(inputs, flag=flag))


def test_unrolled_masks_take_python_bools_and_lists():
    """Masks and labels as Python bools and lists run the unrolled code too."""
    model, reference = masks_model()
    model.unroll(B=2, T=3)
    module = compile_module(model)
    params, inputs = masks_data(2, 3, seed=6)
    for variant in (
        {"flag": False},
        {"cols": [True, False, True], "rows": [[False], [True]]},
        {"labels": [1, 1], "flag": np.bool_(True)},
    ):
        check_unrolled(module, reference, params, dict(inputs, **variant))


# ---------------------------------------------------------------------------- bugs


def test_einsum_with_a_0d_operand():
    m = sg.Model("einsum0d")
    s = m.param("s", ())
    v = m.param("v", (3,))
    m.loss(sg.sum(sg.einsum(",i->i", s, v) ** 2) + sg.sum(sg.einsum("...,...", s, v)))

    def reference(t, _):
        s, v = t["s"], t["v"]
        loss = (torch.einsum(",i->i", s, v) ** 2).sum()
        return loss + torch.einsum("...,...", s, v).sum(), {}

    params = {"s": np.array(1.5), "v": np.array([0.5, -1.0, 2.0])}
    check(compile_module(m), reference, params, {})


def test_tile_and_repeat_of_a_mask():
    """A key padding mask tiled across heads, as torch's keep.repeat(2)."""
    m = sg.Model("tiled_mask")
    x = m.param("x", (2, 6))
    keep = m.input("keep", (3,), dtype="bool")
    y = sg.where(sg.tile(keep, 2), x, 0.0) + sg.where(sg.repeat(keep, 2), x, 1.0)
    m.loss(sg.sum(y**2))

    def reference(t, i):
        keep = i["keep"]
        y = torch.where(keep.repeat(2), t["x"], 0.0)
        y = y + torch.where(keep.repeat_interleave(2), t["x"], 1.0)
        return (y**2).sum(), {}

    params = {"x": np.random.default_rng(0).standard_normal((2, 6))}
    inputs = {"keep": np.array([True, False, True])}
    check(compile_module(m), reference, params, inputs)


def test_picked_columns_of_an_int64_input_index_a_gather():
    m = sg.Model("picked_labels")
    E = m.param("E", (4, 2))
    idx = m.input("idx", ("B", 3), dtype="int64")
    m.loss(
        sg.sum(E[idx[:, [2, 0]]] ** 2)
        + sg.sum(sg.where(idx[:, [1]] == 0, 1.0, E[0, 0]))
    )

    def reference(t, i):
        E, idx = t["E"], i["idx"]
        loss = (E[idx[:, [2, 0]]] ** 2).sum()
        return loss + torch.where(idx[:, [1]] == 0, 1.0, E[0, 0]).sum(), {}

    params = {"E": np.random.default_rng(1).standard_normal((4, 2))}
    inputs = {"idx": np.array([[0, 1, 3], [2, 0, 1]])}
    check(compile_module(m), reference, params, inputs)


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(
            "zero",
        ),
        pytest.param(
            "end",
        ),
    ],
)
def test_split_of_a_symbolic_axis_at_its_ends(cut):
    m = sg.Model("split_ends")
    x = m.param("x", ("n", 2))
    first, second = sg.split(x, [0] if cut == "zero" else [x.shape[0]])
    m.loss(_weighted([first, second]))

    def reference(t, _):
        x = t["x"]
        at = 0 if cut == "zero" else x.shape[0]
        return _weighted([x[:at], x[at:]]), {}

    params = {"x": np.random.default_rng(2).standard_normal((3, 2))}
    check(compile_module(m), reference, params, {})


def test_split_of_a_tiled_symbolic_axis_into_equal_sections():
    m = sg.Model("chunks")
    x = m.param("x", ("n", 3))
    y = sg.tile(x, (2, 1)) * sg.repeat(x, 2, axis=0)  # (2n, 3)
    a, b = sg.split(y, 2)
    c, d, e = sg.split(sg.repeat(x, 3, axis=0), 3)
    m.loss(sg.sum(a * sg.tanh(b)) + sg.sum(c * d**2 * e))

    def reference(t, _):
        x = t["x"]
        y = x.repeat(2, 1) * x.repeat_interleave(2, dim=0)
        a, b = torch.chunk(y, 2)
        c, d, e = torch.chunk(x.repeat_interleave(3, dim=0), 3)
        return (a * torch.tanh(b)).sum() + (c * d**2 * e).sum(), {}

    module = compile_module(m)
    for n in (1, 3):
        params = {"x": np.random.default_rng(n).standard_normal((n, 3))}
        check(module, reference, params, {})


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda x: sg.split(x, 2, dim=1), TypeError, "NumPy's axis="),
        (lambda x: sg.repeat(x, 2, dim=0), TypeError, "NumPy's axis="),
        (lambda x: sg.cumprod(x, dim=0), TypeError, "NumPy's axis="),
        (lambda x: sg.cumprod(x[0]), ValueError, "fixed size"),  # a symbolic axis
        (lambda x: sg.tile(x, (2, x.shape[1])), ValueError, "ints >= 1"),
        (lambda x: sg.repeat(x, -1, axis=0), ValueError, "ints >= 1"),
        (lambda x: sg.split(x[0], 2), ValueError, "2 equal sections"),
        (lambda x: sg.split(x, 0, axis=0), ValueError, "0 equal sections"),
        (lambda x: x[[0, 3]], ValueError, "index 3 is out of bounds for axis 0"),
        (lambda x: x[[[0], [1]]], ValueError, "one non-empty list of ints"),
        (lambda x: x[:, [True, False, True]], ValueError, "sg.where"),
        (lambda x: x[[0, 1], :, 0], ValueError, "separated by a slice"),
        (lambda x: sg.einsum("ii->i", x), ValueError, "i is 3 in one operand and n"),
        (lambda x: sg.einsum("ij->ii", x), ValueError, "bad output 'ii'"),
        (lambda x: sg.einsum("ij,jk", x), ValueError, "2 terms, 1 operands"),
        (lambda x: sg.einsum("...i->i", x), ValueError, "the output needs '...'"),
        (lambda x: sg.gelu(x, approximate=True), ValueError, "'none' or 'tanh'"),
        (lambda x: sg.gelu(x, "Tanh"), ValueError, "'none' or 'tanh'"),
        pytest.param(
            lambda x: sg.repeat(x, [1, 2, 1], axis=0),
            ValueError,
            "sg.repeat",
        ),
        pytest.param(
            lambda x: sg.tril(x, diagonal=1),
            TypeError,
            "k=",
        ),
        pytest.param(
            lambda x: sg.split(x, 2.5, axis=1),
            TypeError,
            "sg.split: indices_or_sections must be an int",
        ),
    ],
)
def test_porting_mistakes_name_the_problem(make, error, message):
    m = sg.Model("mistakes22")
    x = m.param("x", (3, "n"))
    with pytest.raises(error) as raised:
        make(x)
    assert message in str(raised.value), raised.value


@pytest.mark.parametrize(
    "make",
    [
        lambda mask: sg.silu(mask),
        lambda mask: sg.gelu(mask, approximate="tanh"),
        lambda mask: sg.cumprod(mask, axis=0),
        lambda mask: sg.einsum("ij->i", mask),
        lambda mask: sg.stop_gradient(mask),
        lambda mask: sg.softmax(sg.where(mask, 0.0, 1.0) * mask),
    ],
)
def test_mask_used_as_a_number_names_sg_where(make):
    m = sg.Model("mask_numbers")
    mask = m.input("mask", (3, 3), dtype="bool")
    with pytest.raises(sg.ModelError, match=r"bool array \(a mask\).*sg\.where\(mask"):
        make(mask)


def test_mask_as_a_float_by_sg_where():
    """torch's mask.double() * x, and keep.sum() as a count, spelled with sg.where."""
    m = sg.Model("mask_floats", hessian=True)
    x = m.param("x", ("T", 2))
    keep = m.input("keep", ("T",), dtype="bool")
    weight = sg.where(keep, 1.0, 0.0)[:, None]
    count = sg.sum(sg.where(keep, 1.0, 0.0)) + 1.0
    m.loss(sg.sum(sg.silu(x) * weight) ** 2 / count + sg.sum(sg.gelu(x * weight)))

    def reference(t, i):
        x, keep = t["x"], i["keep"]
        weight = keep.double()[:, None]
        count = keep.double().sum() + 1.0
        loss = (F.silu(x) * weight).sum() ** 2 / count
        return loss + F.gelu(x * weight).sum(), {}

    module = compile_module(m)
    for keep in ([True], [False], [True, False, True]):
        keep = np.array(keep)
        params = {"x": np.random.default_rng(len(keep)).standard_normal((len(keep), 2))}
        check(module, reference, params, {"keep": keep})
        assert_second_order_agrees(module, reference, params, {"keep": keep})


@pytest.mark.parametrize(
    "method, hint",
    [
        pytest.param(
            "float",
            "sg.where(mask, 1.0, 0.0)",
        ),
        pytest.param(
            "diagonal",
            "sg.einsum",
        ),
        ("masked_fill", "sg.where(mask, value, x)"),
        ("repeat_interleave", "sg.repeat(x, repeats, axis)"),
        ("cumprod", "sg.cumprod(x)"),
        ("tril", "sg.tril(x)"),
    ],
)
def test_torch_methods_on_masks_and_matrices_name_sg(method, hint):
    m = sg.Model("mask_methods")
    mask = m.input("mask", (3, 3), dtype="bool")
    with pytest.raises(AttributeError) as raised:
        getattr(mask, method)()
    assert hint in str(raised.value), raised.value
