"""Convolutions, pooling and graph networks with NumPy's names, against PyTorch
(float64) and central differences: sg.sliding_window_view (torch's unfold; conv1d and
conv2d as an einsum with the kernel, max pooling as a max over windows),
sg.segment_sum (torch's index_add: message passing and graph pooling) and einsum
contractions over several letters, which run as one matmul of reshaped operands.
"""

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


def conv1d(p, i):
    windows = sg.sliding_window_view(i["x"], 4, axis=2)  # (B, C, T - 3, 4)
    return sg.einsum("bctk,ock->bot", windows, p["K"]) + p["b"][:, None]


def conv2d_pool(p, i):
    windows = sg.sliding_window_view(i["x"], (3, 3), axis=(2, 3))
    h = sg.relu(sg.einsum("bchwij,ocij->bohw", windows, p["K"]) + p["b"][:, None, None])
    return sg.sliding_window_view(h, (2, 2), axis=(2, 3))[:, :, ::2, ::2].max(
        axis=(-2, -1)
    )


def conv2d_same(p, i):
    x = sg.pad(i["x"], ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = sg.sliding_window_view(x, (3, 3), axis=(-2, -1))
    return sg.tanh(sg.einsum("bchwij,ocij->bohw", windows, p["K"]))


def message_passing(p, i):
    h = sg.tanh(i["x"] @ p["W"].T)
    messages = h[i["src"]] * sg.sigmoid(i["e"] @ p["a"])[:, None]
    return sg.segment_sum(messages, i["dst"], i["x"].shape[0]) + h


def message_passing_torch(p, i):
    h = torch.tanh(i["x"] @ p["W"].T)
    messages = h[i["src"]] * torch.sigmoid(i["e"] @ p["a"])[:, None]
    return torch.zeros_like(h).index_add(0, i["dst"], messages) + h


# name -> (param shapes, input shapes, sg function, torch function); an int64 input is
# (shape, low, high). The result enters the loss as sum(sin(y) y).
CASES = {
    "conv1d": (
        {"K": (3, 2, 4), "b": (3,)},
        {"x": ("B", 2, "T")},
        conv1d,
        lambda p, i: F.conv1d(i["x"], p["K"], p["b"]),
    ),
    "conv2d_relu_maxpool": (
        {"K": (4, 2, 3, 3), "b": (4,)},
        {"x": ("B", 2, 8, 9)},
        conv2d_pool,
        lambda p, i: F.max_pool2d(F.relu(F.conv2d(i["x"], p["K"], p["b"])), 2),
    ),
    "conv2d_same_padding_symbolic": (
        {"K": (3, 2, 3, 3)},
        {"x": (2, 2, "H", "W")},
        conv2d_same,
        lambda p, i: torch.tanh(F.conv2d(i["x"], p["K"], padding=1)),
    ),
    "conv1d_stride2_symbolic": (
        {"K": (3, 2, 4), "b": (3,)},
        {"x": ("B", 2, "T")},
        lambda p, i: conv1d(p, i)[:, :, ::2],
        lambda p, i: F.conv1d(i["x"], p["K"], p["b"], stride=2),
    ),
    "maxpool_stride2_symbolic_2d": (
        {"K": (2, 2, 3, 3)},
        {"x": ("B", 2, "H", "W")},
        lambda p, i: sg.sliding_window_view(conv2d_same(p, i), (2, 2), axis=(2, 3))[
            :, :, ::2, ::2
        ].max(axis=(-2, -1)),
        lambda p, i: F.max_pool2d(torch.tanh(F.conv2d(i["x"], p["K"], padding=1)), 2),
    ),
    "decimate_and_interleave": (
        {"x": ("B", "T")},
        {},
        lambda p, i: p["x"][:, 1::3]
        * sg.sum(p["x"][:, ::2] ** 2, axis=1, keepdims=True),
        lambda p, i: p["x"][:, 1::3] * (p["x"][:, ::2] ** 2).sum(1, keepdim=True),
    ),
    "windows_of_every_axis": (
        {"x": ("T", 5)},
        {},
        lambda p, i: sg.sliding_window_view(p["x"], (2, 3)),
        lambda p, i: p["x"].unfold(0, 2, 1).unfold(1, 3, 1),
    ),
    "windows_one_wide_and_whole": (
        {"x": (3, "T")},
        {},
        lambda p, i: sg.sliding_window_view(p["x"], (1, 3), axis=(1, 0)),
        lambda p, i: p["x"].unfold(1, 1, 1).unfold(0, 3, 1),
    ),
    "message_passing": (
        {"W": (3, 4), "a": (2,)},
        {
            "x": ("N", 4),
            "e": ("E", 2),
            "src": (("E",), 0, "N"),
            "dst": (("E",), 0, "N"),
        },
        message_passing,
        message_passing_torch,
    ),
    "graph_pooling": (
        {"W": (3, 4)},
        {"x": ("N", 4), "graph": (("N",), 0, "G"), "t": ("G", 3)},
        lambda p, i: sg.segment_sum(sg.tanh(i["x"] @ p["W"].T), i["graph"], "G")
        - i["t"],
        lambda p, i: torch.zeros_like(i["t"]).index_add(
            0, i["graph"], torch.tanh(i["x"] @ p["W"].T)
        )
        - i["t"],
    ),
    "segment_sum_1d_fixed_count": (
        {"w": ("E",)},
        {"ids": (("E",), 0, 5)},
        lambda p, i: sg.segment_sum(p["w"] ** 2, i["ids"], 5),
        lambda p, i: torch.zeros(5, dtype=torch.float64).index_add(
            0, i["ids"], p["w"] ** 2
        ),
    ),
    "segment_sum_3d_negative_ids": (
        {"w": ("E", 2, 3)},
        {"ids": (("E",), -4, 4)},  # negative ids count from the end
        lambda p, i: sg.segment_sum(sg.sin(p["w"]), i["ids"], 4),
        lambda p, i: torch.zeros(4, 2, 3, dtype=torch.float64).index_add(
            0, i["ids"] % 4, torch.sin(p["w"])
        ),
    ),
    "segment_sum_3d_rows_transposed": (
        {"w": (3, "E", 2)},
        {"ids": (("E",), 0, 5)},
        lambda p, i: sg.segment_sum(sg.transpose(p["w"], (1, 0, 2)) ** 2, i["ids"], 5),
        lambda p, i: torch.zeros(5, 3, 2, dtype=torch.float64).index_add(
            0, i["ids"], p["w"].transpose(0, 1) ** 2
        ),
    ),
    "einsum_two_letters_summed": (
        {"a": ("n", 3, 4), "b": (3, 4, 2)},
        {},
        lambda p, i: sg.einsum("abc,bcd->ad", p["a"], p["b"]),
        lambda p, i: torch.einsum("abc,bcd->ad", p["a"], p["b"]),
    ),
    "einsum_matrix_vector_grouped": (
        {"a": (2, "n", 3), "b": ("n", 3)},
        {},
        lambda p, i: sg.einsum("ijk,jk->i", p["a"], p["b"])
        + sg.einsum("jk,ijk->i", p["b"], p["a"]),
        lambda p, i: 2 * torch.einsum("ijk,jk->i", p["a"], p["b"]),
    ),
    "einsum_batched_grouped": (
        {"a": ("n", 2, 3, 4), "b": ("n", 4, 3, 5)},
        {},
        lambda p, i: sg.einsum("zxyc,zcyo->zxo", p["a"], p["b"]),
        lambda p, i: torch.einsum("zxyc,zcyo->zxo", p["a"], p["b"]),
    ),
}
SIZES = {"B": 2, "T": 7, "H": 5, "W": 6, "N": 5, "E": 9, "G": 3, "n": 3}


def _sized(shape, sizes):
    return tuple(sizes.get(d, d) for d in shape)


def build(name, hessian=False, sizes=SIZES, seed=0):
    param_shapes, input_specs, sg_fn, torch_fn = CASES[name]
    rng = np.random.default_rng(seed)
    m = sg.Model(name, hessian=hessian)
    params = {k: m.param(k, shape) for k, shape in param_shapes.items()}
    inputs, data = {}, {}
    for k, spec in input_specs.items():
        if isinstance(spec[0], tuple):  # (shape, low, high): indices
            inputs[k] = m.input(k, spec[0], dtype="int64")
            low, high = (sizes.get(b, b) for b in spec[1:])
            data[k] = rng.integers(low, high, _sized(spec[0], sizes))
        else:
            inputs[k] = m.input(k, spec)
            data[k] = rng.standard_normal(_sized(spec, sizes))
    out = sg_fn(params, inputs)
    m.output("out", out)
    m.loss(sg.sum(sg.sin(out) * out))

    def reference(p, i):
        y = torch_fn(p, i)
        return (torch.sin(y) * y).sum(), {"out": y}

    values = {k: rng.standard_normal(_sized(s, sizes)) for k, s in param_shapes.items()}
    return m, reference, values, data


@pytest.mark.parametrize("name", CASES)
def test_agrees_with_torch_and_differences(name):
    m, reference, params, inputs = build(name)
    module = compile_module(m)
    check(module, reference, params, inputs)
    assert_matches_central_differences(module, params, inputs)


@pytest.mark.parametrize(
    "name",
    ["conv1d", "conv2d_same_padding_symbolic", "message_passing", "graph_pooling"],
)
@pytest.mark.parametrize("scale", [1, 3])
def test_one_module_serves_other_sizes(name, scale):
    module = compile_module(build(name)[0])
    sizes = {k: v * scale + 1 for k, v in SIZES.items()}
    _, reference, params, inputs = build(name, sizes=sizes, seed=scale)
    check(module, reference, params, inputs)


@pytest.mark.parametrize(
    "name",
    [
        "conv1d",
        "message_passing",
        "segment_sum_3d_negative_ids",
        "maxpool_stride2_symbolic_2d",
    ],
)
def test_hessian_agrees_with_torch(name):
    m, reference, params, inputs = build(name, hessian=True)
    module = compile_module(m)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


@pytest.mark.parametrize(
    "name",
    ["conv1d", "graph_pooling", "windows_of_every_axis", "conv1d_stride2_symbolic"],
)
def test_unrolled(name):
    m, reference, params, inputs = build(name)
    m.unroll(**{d: SIZES[d] for d in m.dims})
    module = compile_module(m)
    check_unrolled(module, reference, params, inputs)


@pytest.mark.parametrize("name", ["message_passing", "graph_pooling"])
def test_verify_samples_ids_in_range(name):
    """symgrad build's check: ids sampled below the number of segments."""
    m = build(name)[0]
    report = verify(m, compile_module(m))
    assert report.ok, report


@pytest.mark.parametrize(
    "name",
    [
        "conv1d_stride2_symbolic",
        "maxpool_stride2_symbolic_2d",
        "decimate_and_interleave",
    ],
)
def test_strides_of_symbolic_axes_at_odd_and_even_sizes(name):
    """x[::2] of n has (n + 1) // 2 elements: one module for every size."""
    module = compile_module(build(name)[0])
    for n in (5, 6, 7, 8):
        sizes = dict(SIZES, T=n, H=n, W=n + 1)
        _, reference, params, inputs = build(name, sizes=sizes, seed=n)
        check(module, reference, params, inputs)


def test_edge_free_graph_and_repeated_ids():
    m, reference, params, inputs = build("message_passing")
    module = compile_module(m)
    for src, dst in (([], []), ([0, 0, 0], [2, 2, 2])):
        data = dict(inputs, src=np.array(src, int), dst=np.array(dst, int))
        data["e"] = np.ones((len(src), 2))
        check(module, reference, params, data)


def test_conv_runs_as_one_matmul():
    """im2col: the windows by the kernel in one matmul, not a broadcast product of
    every window with every output channel."""
    source, _ = generate(build("conv2d_relu_maxpool")[0])
    forward = source[source.index("def forward") : source.index("def backward")]
    assert "K.reshape((4, 18)).T" in forward
    assert "sliding_window_view(" in forward and "concatenate" not in forward  # views
    assert forward.count(" @ ") == 1
    # the window matrix (a copy) is made once, for the forward and the kernel's gradient
    fused = source[source.index("def value_and_grad") :]
    assert fused.count(".reshape((42 * B, 18))") == 1


def test_short_symbolic_axis_names_the_windows():
    m, _, params, inputs = build("conv1d")
    module = compile_module(m)
    module.value_and_grad(params, dict(inputs, x=np.ones((2, 2, 4))))  # one window
    with pytest.raises(ValueError, match=r"sg.sliding_window_view of x needs T >= 4"):
        module.value_and_grad(params, dict(inputs, x=np.ones((2, 2, 3))))


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda x, i: sg.sliding_window_view(x, 6, axis=1),
            r"window size 6 for axis 1 of .* \(n, 5\)",
        ),
        (lambda x, i: sg.sliding_window_view(x, (2, 2), axis=1), "one size per axis"),
        (
            lambda x, i: sg.sliding_window_view(x, (2, 2), axis=(1, -1)),
            "each axis once",
        ),
        (lambda x, i: sg.sliding_window_view(x, 0, axis=0), "window size 0"),
        (lambda x, i: sg.segment_sum(x, x, 3), "must be an int64 input"),
        (lambda x, i: sg.segment_sum(x[:2], i, 3), "one id per row"),
        (lambda x, i: sg.segment_sum(x, i[:, None], 3), "must be 1-D"),
        (lambda x, i: sg.segment_sum(x.sum(), i, 3), "one id per row"),
        (lambda x, i: sg.segment_sum(i, x, 3), "the rows to add first, then their"),
        (lambda x, i: sg.segment_sum(x, 0, i), "the rows to add first, then their"),
    ],
)
def test_errors_name_the_problem(make, message):
    m = sg.Model("bad")
    x, ids = m.param("x", ("n", 5)), m.input("ids", ("n",), dtype="int64")
    with pytest.raises((sg.ShapeError, TypeError), match=message):
        make(x, ids)


def test_segment_count_must_be_a_size_of_the_data():
    m = sg.Model("unbound")
    x, ids = m.param("x", ("n", 5)), m.input("ids", ("n",), dtype="int64")
    with pytest.raises(sg.ShapeError, match="uses the dims G, which no input"):
        m.loss(sg.sum(sg.segment_sum(x, ids, "G") ** 2))
        compile_module(m)
