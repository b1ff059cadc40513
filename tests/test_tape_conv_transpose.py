"""Transposed convolutions on symgrad.tape (nn_conv.py conv_transpose1d/2d and
nn.ConvTranspose1d/2d), with torch as the judge, in float64: values, gradients with
respect to input, weight and bias, and double backward (create_graph) over
stride/padding/output_padding/groups/dilation; the modules' weight shapes, reprs,
init and forward(output_size=); torch's argument checks and their error types."""

import itertools
import math

import numpy as np
import pytest
from test_tape_conv import check, draws, module_results

from symgrad import tape

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")

# stride, padding, output_padding, groups, dilation: every valid combination
GRID = [
    pytest.param(*args, id="s{}-p{}-op{}-g{}-d{}".format(*args))
    for args in itertools.product((1, 2, 3), (0, 2), (0, 1, 2), (1, 2), (1, 2))
    if args[2] < args[0] or args[2] < args[4]
]


@pytest.mark.parametrize("stride, padding, output_padding, groups, dilation", GRID)
def test_conv_transpose2d_grid(stride, padding, output_padding, groups, dilation):
    kwargs = dict(
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
    )
    arrays = [draws(2, 4, 5, 4), draws(4, 6 // groups, 3, 2, seed=1), draws(6, seed=2)]
    check(
        lambda m, x, w, b: m.nn.functional.conv_transpose2d(x, w, b, **kwargs), *arrays
    )


CONV_TRANSPOSE = {
    "1d-plain": (1, (2, 3, 6), (3, 4, 3), {}),
    "1d-all": (
        1,
        (2, 4, 5),
        (4, 3, 4),
        {"stride": 3, "padding": 2, "output_padding": 1, "groups": 2, "dilation": 2},
    ),
    "1d-unbatched": (1, (3, 6), (3, 2, 2), {"stride": 2}),
    "2d-pairs": (
        2,
        (2, 2, 4, 5),
        (2, 3, 2, 3),
        {"stride": (2, 1), "padding": (1, 0), "output_padding": (1, 0)},
    ),
    "2d-op-below-dilation": (
        2,
        (1, 2, 4, 4),
        (2, 2, 3, 3),
        {"output_padding": 1, "dilation": 2},
    ),
    "2d-unbatched": (2, (2, 3, 4), (2, 3, 3, 3), {"stride": 2, "padding": 1}),
    "2d-depthwise": (2, (2, 3, 4, 4), (3, 1, 2, 2), {"groups": 3, "stride": 2}),
    "2d-cropped-to-one": (2, (1, 2, 3, 3), (2, 1, 3, 3), {"padding": 2}),
}


@pytest.mark.parametrize("d, x_shape, w_shape, kwargs", [
    pytest.param(*v, id=k) for k, v in CONV_TRANSPOSE.items()
])  # fmt: skip
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_conv_transpose(d, x_shape, w_shape, kwargs, bias):
    arrays = [draws(*x_shape), draws(*w_shape, seed=1)]
    if bias:
        arrays.append(draws(w_shape[1] * kwargs.get("groups", 1), seed=2))

    def op(m, x, w, *b):
        fn = getattr(m.nn.functional, f"conv_transpose{d}d")
        return fn(x, w, *b, **kwargs)

    check(op, *arrays)


def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv(x, w), y> = <x, conv_transpose(y, w)>, output_padding restoring the
    input size that a strided conv rounds away."""
    F = tape.nn.functional
    x, w = tape.tensor(draws(2, 3, 9, 9)), tape.tensor(draws(4, 3, 3, 2, seed=1))
    y = F.conv2d(x, w, stride=2, padding=1)
    z = tape.tensor(draws(*y.shape, seed=2))
    back = F.conv_transpose2d(z, w, stride=2, padding=1, output_padding=(0, 1))
    assert back.shape == x.shape
    np.testing.assert_allclose((y * z).sum().item(), (x * back).sum().item())


def modules(nn):
    return [
        nn.ConvTranspose2d(3, 4, 3),
        nn.ConvTranspose2d(4, 6, (3, 2), 2, 1, 1, groups=2, dilation=2),
        nn.ConvTranspose2d(3, 6, 4, stride=2, padding=1, bias=False),
        nn.ConvTranspose1d(4, 6, 3, stride=2, output_padding=1, groups=2),
        nn.ConvTranspose1d(2, 2, 1),
    ]


def test_modules_match_torch():
    """Reprs, attributes, parameter shapes and the layers run with torch's
    weights."""
    for ours, theirs in zip(modules(tape.nn), modules(torch.nn), strict=True):
        assert repr(ours) == repr(theirs)
        for name in ("transposed", "output_padding", "kernel_size", "padding"):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == [
            (n, tuple(p.shape)) for n, p in theirs.named_parameters()
        ]
        state = {k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()}
        x = draws(2, theirs.in_channels, *(5,) * len(theirs.kernel_size))
        results = [
            module_results(lib, lambda nn, m=m: m, x, state)
            for lib, m in ((tape, ours), (torch, theirs))
        ]
        for a, b in zip(*results, strict=True):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy())


def test_default_init_bounds():
    """torch's init: fan_in from weight.shape[1] = out/groups."""
    tape.manual_seed(0)
    conv = tape.nn.ConvTranspose2d(16, 8, 3, groups=2)
    bound = 1 / math.sqrt(4 * 9)
    for p in (conv.weight, conv.bias):
        assert np.abs(p.detach().numpy()).max() <= bound
    assert np.abs(conv.weight.detach().numpy()).max() > 0.9 * bound


@pytest.mark.parametrize("output_size", [None, [9, 10], (2, 4, 10, 9)], ids=str)
def test_forward_output_size(output_size):
    def run(lib):
        lib.manual_seed(0)
        conv = lib.nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1)
        with lib.no_grad():
            conv.weight.copy_(lib.tensor(draws(3, 4, 3, 3)))
            conv.bias.copy_(lib.tensor(draws(4, seed=2)))
        return conv(lib.tensor(draws(2, 3, 5, 5, seed=1)), output_size=output_size)

    np.testing.assert_allclose(run(tape).detach().numpy(), run(torch).detach().numpy())


X = draws(2, 3, 8, 8)

ERRORS = {
    "output_padding-not-below-stride": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), stride=2, output_padding=2
    ),
    "output_padding-1d": lambda m: m.nn.functional.conv_transpose1d(
        m.tensor(X[0]), m.ones(8, 4, 3), output_padding=1
    ),
    "negative-output_padding": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), stride=2, output_padding=-1
    ),
    "output-too-small": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X[:, :, :2]), m.ones(3, 4, 3, 2), padding=2
    ),
    "negative-padding": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), padding=-1
    ),
    "padding-string": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), padding="same"
    ),
    "channels": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(2, 4, 3, 3)
    ),
    "groups-divide": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), groups=2
    ),
    "groups-zero": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), groups=0
    ),
    "bias-size": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), m.ones(3)
    ),
    "input-rank": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X[0, 0]), m.ones(3, 4, 3, 3)
    ),
    "zero-stride": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), stride=0
    ),
    "stride-length": lambda m: m.nn.functional.conv_transpose2d(
        m.tensor(X), m.ones(3, 4, 3, 3), stride=(1, 2, 3)
    ),
    "module-groups": lambda m: m.nn.ConvTranspose2d(3, 4, 3, groups=2),
    "module-padding-mode": lambda m: m.nn.ConvTranspose2d(
        3, 4, 3, padding_mode="reflect"
    ),
    "module-output_size": lambda m: m.nn.ConvTranspose2d(3, 4, 3, stride=2)(
        m.tensor(X), output_size=[20, 20]
    ),
}


@pytest.mark.parametrize("fn", [pytest.param(v, id=k) for k, v in ERRORS.items()])
def test_errors_have_torchs_types(fn):
    try:
        fn(torch)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        with pytest.raises(type(exc)):
            fn(tape)
    else:
        pytest.fail("torch did not raise")


# ==== the recorded graph: one node per convolution or pool, as torch's ================


def graph(fn):
    """The graph below grad_fn fn as nested (class name, children) tuples."""
    if fn is None:
        return None
    return type(fn).__name__, tuple(graph(f) for f, _ in fn.next_functions)


NODES = {
    "conv2d": lambda F, x, w, b: F.conv2d(x, w, b, padding=1),
    "conv2d-no-bias": lambda F, x, w, b: F.conv2d(x, w, stride=2),
    "conv2d-unbatched": lambda F, x, w, b: F.conv2d(x[0], w, b),
    "conv1d": lambda F, x, w, b: F.conv1d(x[:, :, 0], w[:, :, 0], b),
    "conv_transpose2d": lambda F, x, w, b: F.conv_transpose2d(
        x, w.transpose(0, 1), b, stride=2, output_padding=1
    ),
    "conv_transpose1d-unbatched": lambda F, x, w, b: F.conv_transpose1d(
        x[0][:, 0], w[:, :, 0].transpose(0, 1)
    ),
    "max_pool2d": lambda F, x, w, b: F.max_pool2d(x * 2, 2),
    "max_pool2d-unbatched": lambda F, x, w, b: F.max_pool2d(x[1], 3, 2, 1),
    "max_pool2d-indices": lambda F, x, w, b: F.max_pool2d(x, 2, return_indices=True)[0],
    "max_pool1d": lambda F, x, w, b: F.max_pool1d(x[0], 2),
    "avg_pool2d": lambda F, x, w, b: F.avg_pool2d(x, 2, ceil_mode=True),
    "avg_pool2d-unbatched": lambda F, x, w, b: F.avg_pool2d(x[0], 2),
    "avg_pool1d": lambda F, x, w, b: F.avg_pool1d(x[0][0], 3, 1, 1),
    "lenet-like": lambda F, x, w, b: F.max_pool2d(F.relu(F.conv2d(x, w, b)), 2).sum(),
}


@pytest.mark.parametrize("make", [pytest.param(v, id=k) for k, v in NODES.items()])
def test_graph_nodes_are_torchs(make):
    def run(lib):
        x = lib.tensor(draws(2, 4, 6, 6), requires_grad=True)
        w = lib.tensor(draws(6, 4, 3, 3, seed=1), requires_grad=True)
        b = lib.tensor(draws(6, seed=2), requires_grad=True)
        y = make(lib.nn.functional, x, w, b)
        y.backward(lib.tensor(draws(*y.shape, seed=3)))
        return graph(y.grad_fn), y, x.grad, w.grad, b.grad

    ours, theirs = run(tape), run(torch)
    assert ours[0] == theirs[0]
    for a, b in zip(ours[1:], theirs[1:], strict=True):
        if b is None:
            assert a is None
        else:
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy())


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "avg_pool2d"])
def test_graph_rules_as_torchs(op):
    """The node saves its input: a second backward raises, and so does an in-place
    change of the input before backward; a hook on the input sees its gradient
    once."""

    def make(lib, x):
        F = lib.nn.functional
        if op == "conv2d":
            return F.conv2d(x, lib.tensor(draws(2, 3, 2, 2)))
        return getattr(F, op)(x, 2)

    for lib in (tape, torch):
        x = lib.tensor(draws(1, 3, 4, 4), requires_grad=True)
        seen = []
        x.register_hook(seen.append)
        y = make(lib, x * 1).sum()
        y.backward(retain_graph=True)
        y.backward()
        assert len(seen) == 2
        with pytest.raises(RuntimeError, match="backward through the graph a second"):
            y.backward()
        h = x * 1
        y = make(lib, h).sum()
        h.add_(1)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()
