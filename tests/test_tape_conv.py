"""Convolutions and pooling on symgrad.tape (symgrad/tape/nn_conv.py), with torch as the
judge, in float64: forward values, input/weight/bias gradients and double backward
(create_graph) over many argument combinations, max-pool ties (the whole gradient to the
first maximum of each window), return_indices, module reprs, default init, errors, and
PyTorch's "Training a classifier" CIFAR-10 Net trained for three SGD steps on both
engines from the same initial weights."""

import math
import warnings

import numpy as np
import pytest

from symgrad import tape

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")

RTOL, ATOL = 1e-10, 1e-12


# ==== harness ==========================================================================


def draws(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def ties(*shape, seed=0):
    """Small integers: windows full of equal maxima."""
    return np.floor(np.random.default_rng(seed).uniform(0, 3, shape))


def derivatives(lib, op, arrays):
    """op(lib, *tensors), the gradients of sum(tanh(y) * w) (w fixed, distinct per
    element) and the gradients of the squared norm of those (double backward)."""
    ts = [lib.tensor(a, requires_grad=True) for a in arrays]
    y = op(lib, *ts)
    w = lib.tensor(draws(*y.shape, seed=99))
    grads = lib.autograd.grad((y.tanh() * w).sum(), ts, create_graph=True)
    square = sum((g * g).sum() for g in grads)
    second = lib.autograd.grad(square, ts, allow_unused=True)
    return [y, *grads, *second]


def check(op, *arrays):
    """The same values, gradients and second derivatives on both engines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = derivatives(torch, op, arrays)
    ours = derivatives(tape, op, arrays)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if b is None:
            assert a is None or not a.detach().numpy().any(), i
            continue
        assert tuple(a.shape) == tuple(b.shape), (i, a.shape, b.shape)
        np.testing.assert_allclose(
            a.detach().numpy(), b.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg=i
        )


def cases(table):
    return [pytest.param(*v, id=k) for k, v in table.items()]


# ==== convolutions ====================================================================

CONV2D = {
    "plain": ((2, 3, 7, 8), (4, 3, 3, 3), {}),
    "stride": ((2, 3, 9, 8), (4, 3, 3, 2), {"stride": 2}),
    "stride-pair": ((1, 2, 9, 10), (3, 2, 2, 3), {"stride": (3, 2)}),
    "padding": ((2, 2, 5, 6), (3, 2, 3, 3), {"padding": 1}),
    "padding-pair": ((2, 2, 5, 6), (3, 2, 3, 4), {"padding": (2, 1)}),
    "dilation": ((2, 2, 9, 8), (3, 2, 3, 2), {"dilation": (2, 3)}),
    "groups": ((2, 4, 6, 7), (6, 2, 3, 3), {"groups": 2}),
    "depthwise": ((2, 3, 6, 5), (6, 1, 2, 2), {"groups": 3, "padding": 1}),
    "same-odd": ((2, 2, 6, 7), (3, 2, 3, 5), {"padding": "same"}),
    "same-even": ((2, 2, 6, 7), (3, 2, 4, 2), {"padding": "same", "dilation": 1}),
    "same-dilated": ((1, 2, 7, 6), (2, 2, 2, 3), {"padding": "same", "dilation": 3}),
    "valid": ((2, 2, 6, 7), (3, 2, 3, 3), {"padding": "valid"}),
    "all": ((2, 4, 11, 9), (4, 2, 3, 2), {"stride": 2, "padding": (1, 2), "groups": 2}),
    "dilated-strided": ((1, 2, 12, 11), (2, 2, 3, 3), {"stride": 2, "dilation": 2}),
    "kernel=input": ((2, 3, 4, 5), (2, 3, 4, 5), {}),
    "1x1": ((2, 3, 4, 5), (5, 3, 1, 1), {}),
}


@pytest.mark.parametrize("x_shape, w_shape, kwargs", cases(CONV2D))
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_conv2d(x_shape, w_shape, kwargs, bias):
    arrays = [draws(*x_shape), draws(*w_shape, seed=1)]
    if bias:
        arrays.append(draws(w_shape[0], seed=2))
    check(lambda m, x, w, *b: m.nn.functional.conv2d(x, w, *b, **kwargs), *arrays)


CONV1D = {
    "plain": ((2, 3, 9), (4, 3, 3), {}),
    "stride-padding": ((2, 3, 10), (4, 3, 4), {"stride": 3, "padding": 2}),
    "dilation-groups": ((2, 4, 11), (6, 2, 3), {"dilation": 2, "groups": 2}),
    "same-even": ((2, 2, 8), (3, 2, 4), {"padding": "same", "dilation": 3}),
    "tuple-args": ((1, 2, 9), (2, 2, 2), {"stride": (2,), "padding": [1]}),
}


@pytest.mark.parametrize("x_shape, w_shape, kwargs", cases(CONV1D))
def test_conv1d(x_shape, w_shape, kwargs):
    arrays = [draws(*x_shape), draws(*w_shape, seed=1), draws(w_shape[0], seed=2)]
    check(lambda m, x, w, b: m.nn.functional.conv1d(x, w, b, **kwargs), *arrays)


def test_conv_unbatched_inputs():
    check(
        lambda m, x, w, b: m.nn.functional.conv2d(x, w, b, padding=1),
        draws(3, 5, 6),
        draws(2, 3, 3, 3, seed=1),
        draws(2, seed=2),
    )
    check(
        lambda m, x, w: m.nn.functional.conv1d(x, w, stride=2),
        draws(3, 9),
        draws(2, 3, 3, seed=1),
    )


def module_results(lib, make, x, state):
    """A module made in lib, given `state`: its output and the gradients of the
    input and of each parameter."""
    module = make(lib.nn)
    module.load_state_dict({k: lib.tensor(v) for k, v in state.items()})
    x = lib.tensor(x, requires_grad=True)
    y = module(x)
    (y.tanh() * lib.tensor(draws(*y.shape, seed=99))).sum().backward()
    return [y, x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize(
    "make, x_shape",
    [
        (lambda nn: nn.Conv2d(4, 6, (3, 2), 2, 1, 2, groups=2), (2, 4, 9, 8)),
        (lambda nn: nn.Conv2d(3, 2, 3, padding="same"), (3, 5, 6)),
        (lambda nn: nn.Conv1d(3, 2, 3, padding="same", bias=False), (2, 3, 7)),
        (lambda nn: nn.Conv1d(4, 4, 2, stride=2, groups=4), (4, 9)),
    ],
)
def test_conv_modules_with_copied_weights(make, x_shape):
    reference = make(torch.nn)
    state = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}
    x = draws(*x_shape)
    ours, theirs = module_results(tape, make, x, state), module_results(
        torch, make, x, state
    )
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(
            a.detach().numpy(), b.detach().numpy(), rtol=RTOL, atol=ATOL
        )


# ==== pooling =========================================================================

MAX_POOL2D = {
    "k2": (2, {}),
    "k3-s2-p1": (3, {"stride": 2, "padding": 1}),
    "k3-s1": (3, {"stride": 1}),
    "k-pair": ((2, 3), {"stride": (1, 2), "padding": (1, 1)}),
    "dilation": (2, {"stride": 1, "dilation": 2}),
    "dilation-pad": (3, {"stride": 2, "dilation": (2, 3), "padding": (1, 1)}),
    "ceil": (2, {"ceil_mode": True}),
    "ceil-s2-p1": (3, {"stride": 2, "padding": 1, "ceil_mode": True}),
    "ceil-s3": (2, {"stride": 3, "ceil_mode": True}),
}


@pytest.mark.parametrize("kernel, kwargs", cases(MAX_POOL2D))
@pytest.mark.parametrize("data", [draws, ties], ids=["distinct", "ties"])
def test_max_pool2d(kernel, kwargs, data):
    check(
        lambda m, x: m.nn.functional.max_pool2d(x, kernel, **kwargs), data(2, 3, 7, 9)
    )


MAX_POOL1D = {
    "k2": (2, {}),
    "k3-s1-p1": (3, {"stride": 1, "padding": 1}),
    "dilation": (3, {"stride": 2, "dilation": 3, "padding": 1}),
    "ceil": (3, {"stride": 2, "ceil_mode": True}),
}


@pytest.mark.parametrize("kernel, kwargs", cases(MAX_POOL1D))
@pytest.mark.parametrize("data", [draws, ties], ids=["distinct", "ties"])
def test_max_pool1d(kernel, kwargs, data):
    check(lambda m, x: m.nn.functional.max_pool1d(x, kernel, **kwargs), data(2, 3, 10))


def test_max_pool_ties_give_one_element_the_whole_gradient():
    """A window of equal values: the first (row-major) gets the gradient."""

    def grad(lib):
        x = lib.tensor(np.ones((1, 1, 4, 4)), requires_grad=True)
        lib.nn.functional.max_pool2d(x, 2).sum().backward()
        return x.grad.numpy()

    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(grad(torch)[0, 0], expected)
    np.testing.assert_array_equal(grad(tape)[0, 0], expected)


@pytest.mark.parametrize("unbatched", [False, True])
def test_max_pool_return_indices(unbatched):
    x = ties(2, 7, 9)[None] if not unbatched else ties(2, 7, 9)
    kw = {"stride": 2, "padding": 1, "dilation": (1, 2), "ceil_mode": True}
    v0, i0 = torch.nn.functional.max_pool2d(
        torch.tensor(x), 3, return_indices=True, **kw
    )
    v1, i1 = tape.nn.functional.max_pool2d(tape.tensor(x), 3, return_indices=True, **kw)
    np.testing.assert_array_equal(v1.numpy(), v0.numpy())
    assert str(i1.dtype) == str(i0.dtype)
    np.testing.assert_array_equal(i1.numpy(), i0.numpy())
    v0, i0 = torch.nn.MaxPool1d(3, 2, return_indices=True)(torch.tensor(x[..., 0, :]))
    v1, i1 = tape.nn.MaxPool1d(3, 2, return_indices=True)(tape.tensor(x[..., 0, :]))
    np.testing.assert_array_equal(i1.numpy(), i0.numpy())


AVG_POOL2D = {
    "k2": (2, {}),
    "k3-s2-p1": (3, {"stride": 2, "padding": 1}),
    "exclude-pad": (3, {"stride": 2, "padding": 1, "count_include_pad": False}),
    "k-pair": ((3, 2), {"stride": (1, 2), "padding": (1, 0)}),
    "ceil": (2, {"ceil_mode": True}),
    "ceil-pad": (3, {"stride": 2, "padding": 1, "ceil_mode": True}),
    "ceil-exclude": (
        3,
        {"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False},
    ),
    "ceil-s3": (2, {"stride": 3, "ceil_mode": True}),
    "divisor": (3, {"stride": 2, "padding": 1, "divisor_override": 5}),
}


@pytest.mark.parametrize("kernel, kwargs", cases(AVG_POOL2D))
def test_avg_pool2d(kernel, kwargs):
    check(
        lambda m, x: m.nn.functional.avg_pool2d(x, kernel, **kwargs), draws(2, 3, 7, 9)
    )


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"stride": 1, "padding": 1}, {"stride": 2, "padding": 1, "ceil_mode": True}]
    + [{"stride": 2, "padding": 1, "ceil_mode": True, "count_include_pad": False}],
)
def test_avg_pool1d(kwargs):
    check(lambda m, x: m.nn.functional.avg_pool1d(x, 3, **kwargs), draws(2, 3, 10))


@pytest.mark.parametrize(
    "size", [1, (2, 3), (7, 9), (3, None), (4, 5), (5, 2), (None, 4)], ids=str
)
def test_adaptive_avg_pool2d(size):
    check(lambda m, x: m.nn.functional.adaptive_avg_pool2d(x, size), draws(2, 3, 6, 9))
    check(lambda m, x: m.nn.AdaptiveAvgPool2d(size)(x), draws(3, 6, 9))


@pytest.mark.parametrize("size", [1, 3, 4, 7])
def test_adaptive_avg_pool1d(size):
    check(lambda m, x: m.nn.functional.adaptive_avg_pool1d(x, size), draws(2, 3, 9))


def test_pool_modules_and_unbatched_inputs():
    check(lambda m, x: m.nn.MaxPool2d(3, 2, 1, ceil_mode=True)(x), ties(3, 7, 8))
    check(lambda m, x: m.nn.MaxPool1d(2)(x), draws(3, 7))
    check(
        lambda m, x: m.nn.AvgPool2d(3, 2, 1, count_include_pad=False)(x), draws(3, 7, 8)
    )
    check(lambda m, x: m.nn.AvgPool1d(3, 2, 1, ceil_mode=True)(x), draws(3, 8))
    check(lambda m, x: m.nn.AdaptiveAvgPool1d(4)(x), draws(2, 3, 10))


def test_unflatten_and_flatten():
    check(lambda m, x: m.nn.Unflatten(1, (2, 3))(x) * 2, draws(4, 6, 5))
    check(lambda m, x: m.nn.Unflatten(-1, (-1, 2))(x).flatten(1), draws(4, 6))
    check(lambda m, x: m.flatten(m.nn.Flatten()(x), 0), draws(2, 3, 4))


# ==== modules: reprs, parameters, init =================================================


def modules(nn):
    return [
        nn.Conv2d(3, 6, 5),
        nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, dilation=2, groups=2),
        nn.Conv2d(3, 6, 3, padding="same", bias=False),
        nn.Conv2d(3, 6, 3, padding="valid"),
        nn.Conv1d(3, 6, 5, padding="same", bias=False, groups=3),
        nn.Conv1d(2, 4, 3, stride=(2,), padding=1),
        nn.MaxPool2d(2, 2),
        nn.MaxPool2d((2, 3), ceil_mode=True),
        nn.MaxPool2d(3, stride=1, padding=1, dilation=(2, 1)),
        nn.MaxPool1d(3),
        nn.AvgPool2d(2),
        nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        nn.AvgPool1d(3),
        nn.AvgPool1d(4, 2, 1),
        nn.AdaptiveAvgPool2d((5, None)),
        nn.AdaptiveAvgPool2d(1),
        nn.AdaptiveAvgPool1d(3),
        nn.Unflatten(1, (2, 3)),
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),
    ]


def test_module_reprs():
    for ours, theirs in zip(modules(tape.nn), modules(torch.nn), strict=True):
        assert repr(ours) == repr(theirs)


def test_conv_parameters_and_state_dict():
    ours, theirs = tape.nn.Conv2d(4, 6, 3, groups=2), torch.nn.Conv2d(4, 6, 3, groups=2)
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in theirs.named_parameters()
    ]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    attributes = ["in_channels", "out_channels", "kernel_size", "stride", "padding"]
    attributes += ["dilation", "groups", "padding_mode", "output_padding"]
    for name in attributes:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert tape.nn.Conv1d(2, 3, 2, bias=False).bias is None
    assert len(list(tape.nn.Conv1d(2, 3, 2, bias=False).parameters())) == 1
    optimizer = tape.optim.SGD(ours.parameters(), lr=0.1)
    assert len(optimizer.param_groups[0]["params"]) == 2


@pytest.mark.parametrize(
    "args", [(3, 6, 5), (16, 8, (3, 2)), (8, 4, 3, 1, 0, 1, 4)], ids=str
)
def test_conv_default_init_bounds(args):
    """kaiming_uniform_(a=sqrt(5)) and the bias both U(+-1/sqrt(fan_in))."""
    tape.manual_seed(0)
    conv = tape.nn.Conv2d(*args)
    fan_in = conv.weight.shape[1] * math.prod(conv.weight.shape[2:])
    bound = 1 / math.sqrt(fan_in)
    for p in (conv.weight, conv.bias):
        assert np.abs(p.detach().numpy()).max() <= bound
    weight = conv.weight.detach().numpy()
    assert np.abs(weight).max() > 0.9 * bound  # spread over the whole interval
    assert abs(weight.mean()) < 0.2 * bound
    np.testing.assert_allclose(weight.std(), bound / math.sqrt(3), rtol=0.25)
    tape.manual_seed(0)
    again = tape.nn.Conv2d(*args)
    np.testing.assert_array_equal(again.weight.detach().numpy(), weight)


# ==== errors ==========================================================================

X4 = draws(2, 3, 8, 8)

ERRORS = {
    "conv2d-rank": lambda m: m.nn.functional.conv2d(
        m.tensor(X4[0, 0]), m.ones(6, 3, 3, 3)
    ),
    "conv1d-rank": lambda m: m.nn.functional.conv1d(m.tensor(X4), m.ones(6, 3, 3)),
    "channels": lambda m: m.nn.functional.conv2d(
        m.ones(2, 4, 8, 8), m.ones(6, 3, 3, 3)
    ),
    "groups-channels": lambda m: m.nn.functional.conv2d(
        m.tensor(X4), m.ones(6, 3, 3, 3), groups=2
    ),
    "bias-size": lambda m: m.nn.functional.conv2d(
        m.tensor(X4), m.ones(6, 3, 3, 3), m.ones(5)
    ),
    "same-strided": lambda m: m.nn.functional.conv2d(
        m.tensor(X4), m.ones(6, 3, 3, 3), stride=2, padding="same"
    ),
    "bad-padding-string": lambda m: m.nn.functional.conv2d(
        m.tensor(X4), m.ones(6, 3, 3, 3), padding="foo"
    ),
    "kernel-too-big": lambda m: m.nn.functional.conv2d(
        m.tensor(X4), m.ones(6, 3, 9, 9)
    ),
    "zero-stride": lambda m: m.nn.functional.conv2d(
        m.tensor(X4), m.ones(6, 3, 3, 3), stride=0
    ),
    "negative-padding": lambda m: m.nn.functional.conv2d(
        m.tensor(X4), m.ones(6, 3, 3, 3), padding=-1
    ),
    "module-channels": lambda m: m.nn.Conv2d(3, 6, 3)(m.ones(2, 4, 8, 8)),
    "module-rank": lambda m: m.nn.Conv2d(3, 6, 3)(m.ones(8, 8)),
    "module-groups": lambda m: m.nn.Conv2d(3, 6, 3, groups=2),
    "module-out-groups": lambda m: m.nn.Conv2d(4, 6, 3, groups=4),
    "module-groups-zero": lambda m: m.nn.Conv2d(3, 6, 3, groups=0),
    "module-padding-mode": lambda m: m.nn.Conv2d(3, 6, 3, padding_mode="foo"),
    "module-padding-string": lambda m: m.nn.Conv2d(3, 6, 3, padding="foo"),
    "module-same-strided": lambda m: m.nn.Conv2d(3, 6, 3, stride=2, padding="same"),
    "pool-pad-too-big": lambda m: m.nn.functional.max_pool2d(
        m.tensor(X4), 2, padding=2
    ),
    "avg-pad-too-big": lambda m: m.nn.functional.avg_pool2d(m.tensor(X4), 3, padding=2),
    "pool-rank": lambda m: m.nn.functional.max_pool2d(m.tensor(X4[0, 0, 0]), 2),
    "pool1d-rank": lambda m: m.nn.functional.max_pool1d(m.tensor(X4), 2),
    "avg1d-rank": lambda m: m.nn.functional.avg_pool1d(m.tensor(X4), 2),
    "pool-too-small": lambda m: m.nn.functional.max_pool2d(m.tensor(X4), 9),
    "avg-too-small": lambda m: m.nn.functional.avg_pool2d(m.tensor(X4), 9),
    "pool-zero-stride": lambda m: m.nn.functional.max_pool2d(m.tensor(X4), 2, stride=0),
    "adaptive-rank": lambda m: m.nn.functional.adaptive_avg_pool2d(
        m.tensor(X4[0, 0, 0]), 2
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


def test_refusals_are_clear():
    with pytest.raises(NotImplementedError, match="padding_mode='reflect'"):
        tape.nn.Conv2d(3, 6, 3, padding_mode="reflect")


# ==== the "Training a classifier" tutorial ==============================================


def tutorial_net(nn, F, torch):
    """The CIFAR-10 tutorial's Net, verbatim."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)  # flatten all dimensions except batch
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    return Net()


def train(lib, state, batches):
    """Three steps of the tutorial's loop from the given initial state_dict."""
    net = tutorial_net(lib.nn, lib.nn.functional, lib)
    net.load_state_dict({k: lib.tensor(v) for k, v in state.items()})
    criterion = lib.nn.CrossEntropyLoss()
    optimizer = lib.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    losses = []
    for inputs, labels in batches:
        optimizer.zero_grad()
        outputs = net(lib.tensor(inputs))
        loss = criterion(outputs, lib.tensor(labels))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return net, losses


def test_cifar_tutorial_net_trains_the_same():
    torch.manual_seed(0)
    reference = tutorial_net(torch.nn, torch.nn.functional, torch)
    state = {k: v.numpy().copy() for k, v in reference.state_dict().items()}
    rng = np.random.default_rng(0)
    batches = [
        (rng.standard_normal((4, 3, 32, 32)), rng.integers(0, 10, 4)) for _ in range(3)
    ]
    theirs, their_losses = train(torch, state, batches)
    ours, our_losses = train(tape, state, batches)
    assert repr(ours) == repr(theirs)
    np.testing.assert_allclose(our_losses, their_losses, rtol=RTOL, atol=ATOL)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for k, v in theirs_state.items():
        np.testing.assert_allclose(
            ours_state[k].numpy(), v.numpy(), rtol=RTOL, atol=ATOL, err_msg=k
        )
    assert not np.allclose(ours_state["conv1.weight"].numpy(), state["conv1.weight"])
