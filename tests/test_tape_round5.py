"""Round 5: symgrad.tape as a new user coming from PyTorch would use it.

Every test runs the same code with lib = symgrad.tape and lib = torch (float64) and
compares values and gradients to rtol 1e-10, or the exception type for errors.
Differences from torch on must-have or very common features are strict xfails
(none remain).
"""

import math
import warnings

import numpy as np
import pytest
from tape_compare import RTOL, assert_same, check, check_raises, data, dtype_name

from symgrad import tape

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


def both(fn):
    return fn(tape), fn(torch)


def grads(*leaves):
    return tuple(t.grad for t in leaves)


# ---- autograd core ------------------------------------------------------------------


def test_grad_is_none_before_backward_then_accumulates():
    def fn(lib):
        x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        before = x.grad
        (x * x).sum().backward()
        first = x.grad.clone()
        (x.exp() * 2).sum().backward()
        return before, first, x.grad, x.grad.requires_grad, x.grad.is_leaf

    check(fn)


def test_backward_with_gradient_on_a_matrix_output_and_retain_graph():
    def fn(lib):
        a = lib.tensor(data(2, 3), requires_grad=True)
        b = lib.tensor(data(3, 4, seed=1), requires_grad=True)
        y = (a @ b).tanh()
        y.backward(gradient=lib.tensor(data(2, 4, seed=2)), retain_graph=True)
        y.backward(lib.ones(2, 4))
        return y, a.grad, b.grad

    check(fn)


def test_grad_zeroed_by_hand_and_set_to_none():
    def fn(lib):
        w = lib.tensor([0.5, -1.0], requires_grad=True)
        out = []
        for k in range(3):
            ((w * (k + 1.0)) ** 2).sum().backward()
            out.append(w.grad.clone())
            w.grad.zero_()
        w.grad = None
        return out, w.grad

    check(fn)


def test_shared_leaf_used_in_many_branches():
    def fn(lib):
        x = lib.tensor(data(3, 2), requires_grad=True)
        h = x.sigmoid()
        y = (h * x).sum() + (h @ x.T).mean() + x[0].exp().sum() - h.log_softmax(1).sum()
        y.backward()
        return y, x.grad

    check(fn)


def test_no_grad_context_and_decorator_give_untracked_leaves():
    def fn(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        with lib.no_grad():
            y = x * 2
        inner = lib.no_grad()(lambda t: t.exp())(x)
        z = x * 2
        return (
            y.requires_grad,
            y.is_leaf,
            y.grad_fn is None,
            inner.requires_grad,
            z.requires_grad,
            z.is_leaf,
        )

    check(fn)


def test_detach_and_data_share_storage_and_cut_the_graph():
    def fn(lib):
        x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x * 3
        d = y.detach()
        d += 1  # shared with y
        x.data *= 2  # shared with x, not recorded
        z = (x * x).sum()
        z.backward()
        return y, d.requires_grad, d.is_leaf, x, x.grad, x.data.requires_grad

    check(fn)


def test_item_float_int_and_len():
    def fn(lib):
        s = lib.tensor([[1.5, 2.5]]).sum()
        n = lib.tensor([7])
        return s.item(), float(s), int(n), n.item(), len(lib.zeros(4, 2))

    ours, theirs = both(fn)
    assert ours == theirs
    assert [type(v) for v in ours] == [type(v) for v in theirs]


def test_leaf_and_non_leaf_rules():
    def fn(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        y.retain_grad()
        z = lib.tensor([1.0, 2.0])
        w = z * 2
        (y * y).sum().backward()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            non_leaf_grad = (x + 1).grad
        return (
            x.is_leaf,
            y.is_leaf,
            z.is_leaf,
            w.is_leaf,
            w.requires_grad,
            y.grad,
            x.grad,
            non_leaf_grad,
        )

    check(fn)


def test_grad_of_a_non_leaf_warns_like_torch():
    for lib in (tape, torch):
        y = lib.tensor([1.0], requires_grad=True) * 2
        with pytest.warns(UserWarning, match="not a leaf"):
            assert y.grad is None


def test_iterating_over_rows_keeps_the_graph():
    def fn(lib):
        x = lib.tensor(data(3, 2), requires_grad=True)
        total = sum((row * (i + 1)).sum() for i, row in enumerate(x))
        total.backward()
        return total, x.grad

    check(fn)


ERRORS = {
    "backward twice": lambda m: [
        y.backward() for y in [(m.tensor([2.0], requires_grad=True).exp()).sum()] * 2
    ],
    "non-scalar backward": lambda m: (m.ones(3, requires_grad=True) * 2).backward(),
    "wrong gradient shape": lambda m: (m.ones(3, requires_grad=True) * 2).backward(
        m.ones(2)
    ),
    "backward without grad": lambda m: m.ones(3).sum().backward(),
    "backward of no_grad result": lambda m: m.no_grad()(lambda t: (t * 2).sum())(
        m.ones(2, requires_grad=True)
    ).backward(),
    "+= on leaf": lambda m: m.ones(2, requires_grad=True).__iadd__(1.0),
    "*= on leaf": lambda m: m.ones(2, requires_grad=True).__imul__(2.0),
    "zero_ on leaf": lambda m: m.ones(2, requires_grad=True).zero_(),
    "setitem on leaf": lambda m: m.ones(2, requires_grad=True).__setitem__(0, 5.0),
    "int requires grad": lambda m: m.tensor([1, 2], requires_grad=True),
    "item of many": lambda m: m.ones(2).item(),
    "numpy of grad tensor": lambda m: m.ones(2, requires_grad=True).numpy(),
    "index out of range": lambda m: m.zeros(3)[3],
    "dim out of range": lambda m: m.zeros(2, 3).sum(dim=2),
    "unsqueeze out of range": lambda m: m.zeros(3).unsqueeze(3),
    "matmul mismatch": lambda m: m.ones(2, 3) @ m.ones(2, 3),
    "broadcast mismatch": lambda m: m.ones(2, 3) + m.ones(2),
    "len of 0-d": lambda m: len(m.tensor(1.0)),
    "bool of many": lambda m: bool(m.ones(2) > 0),
    "mask of wrong shape": lambda m: m.zeros(3)[m.tensor([True, False])],
    "cross entropy class out of range": lambda m: (
        m.nn.functional.cross_entropy(m.ones(2, 3), m.tensor([0, 5]))
    ),
    "negation of bool": lambda m: -(m.ones(2) > 0),
    "int to negative power": lambda m: m.tensor([2, 3]) ** -1,
    "reshape to a wrong size": lambda m: m.arange(6).reshape(4, 4),
    "view of a transposed tensor": lambda m: m.zeros(2, 3).transpose(0, 1).view(6),
    "cat of mismatched shapes": lambda m: m.cat([m.zeros(2, 3), m.zeros(2, 4)]),
    "float() of many": lambda m: float(m.ones(2)),
    "mean of an int tensor": lambda m: m.tensor([1, 2, 3]).mean(),
}


@pytest.mark.parametrize("case", ERRORS)
def test_error_types_match_torch(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_raises(ERRORS[case])


# ---- arithmetic, broadcasting and dtypes ---------------------------------------------


def test_broadcast_chain_reduces_grads_to_each_operand_shape():
    def fn(lib):
        a = lib.tensor(data(4, 1, 3), requires_grad=True)
        b = lib.tensor(data(2, 1, seed=1), requires_grad=True)
        c = lib.tensor(data(3, seed=2), requires_grad=True)
        d = lib.tensor(2.5, requires_grad=True)
        y = ((a * b + c) / d - b**2 + 1.0 - 2 * c / (1 + d)).exp()
        (y * lib.tensor(data(4, 2, 3, seed=3))).sum().backward()
        return y, a.grad, b.grad, c.grad, d.grad

    check(fn)


def test_python_numbers_on_either_side_and_reflected_ops():
    def fn(lib):
        x = lib.tensor([0.5, 1.5, 2.0], requires_grad=True)
        y = 3 - x + 2 * x - x / 4 + 1 / x + 2**x + x**3 + x**0.5 - (-x)
        y.sum().backward()
        return y, x.grad

    check(fn)


DTYPE_CASES = {
    "int64 * python float": lambda m: m.tensor([1, 2]) * 2.5,
    "int64 / int64": lambda m: m.tensor([1, 3]) / m.tensor([2, 2]),
    "int64 + python int": lambda m: m.tensor([1, 3]) + 4,
    "int64 + float64 tensor": lambda m: m.tensor([1, 3]) + m.tensor([0.5, 0.5]),
    "float32 + python float": lambda m: m.ones(2, dtype=m.float32) + 0.1,
    "float32 + float64 tensor": lambda m: m.ones(2, dtype=m.float32) + m.ones(2),
    "float32 exp": lambda m: m.tensor([0.1, 0.2], dtype=m.float32).exp(),
    "bool sum": lambda m: (m.tensor([1.0, 2.0, 3.0]) > 1).sum(),
    "accuracy idiom": lambda m: (
        m.tensor([[0.1, 0.9], [0.8, 0.2]]).argmax(1) == m.tensor([1, 1])
    )
    .float()
    .mean(),
    "comparison with int": lambda m: m.tensor([1, 2, 3]) >= 2,
    "float vs int tensors": lambda m: m.tensor([1.0, 2.0]) == m.tensor([1, 3]),
    "long()": lambda m: m.tensor([1.7, -1.7]).long(),
    "double() of float32": lambda m: m.tensor([1.5], dtype=m.float32).double(),
    "Tensor([1, 2, 3])": lambda m: m.Tensor([1, 2, 3]),
    "int64 + float32 tensor": lambda m: m.tensor([1, 2]) + m.ones(2, dtype=m.float32),
    "float32 * 0-d float64 tensor": lambda m: m.ones(2, dtype=m.float32)
    * m.tensor(2.0),
    "int64 // 2": lambda m: m.tensor([3, 4]) // 2,
    "int64 % 2": lambda m: m.tensor([3, 4]) % 2,
}


@pytest.mark.parametrize("case", DTYPE_CASES)
def test_dtypes_and_values_match_torch(case):
    check(DTYPE_CASES[case])


def test_float32_training_step_stays_float32():
    def fn(lib):
        x = lib.tensor(data(4, 3), dtype=lib.float32)
        w = lib.tensor(data(3, 2, seed=1), dtype=lib.float32, requires_grad=True)
        loss = ((x @ w).sigmoid() - 0.5).abs().mean()
        loss.backward()
        return loss.dtype == lib.float32, w.grad.dtype == lib.float32

    ours, theirs = both(fn)
    assert ours == theirs == (True, True)


def test_pow_method_and_function():
    def fn(lib):
        x = lib.tensor([0.5, 1.5, 2.0], requires_grad=True)
        y = x.pow(2) + lib.pow(x, 3) + x.pow(lib.tensor([1.0, 2.0, 0.5]))
        y.sum().backward()
        return y, x.grad

    check(fn)


def test_elementwise_max_of_two_tensors():
    check(lambda m: m.max(m.tensor([1.0, 5.0]), m.tensor([3.0, 2.0])))


def test_to_device_string_is_a_no_op():
    check(lambda m: m.ones(2).to("cpu"))


# ---- matmul --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shapes",
    [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)), ((3,), (4, 3, 2))]
    + [
        ((4, 2, 3), (3,)),
        ((4, 2, 3), (3, 5)),
        ((2, 3), (4, 3, 5)),
        ((1, 2, 3), (4, 3, 2)),
    ],
)
def test_matmul_1d_2d_3d_values_and_grads(shapes):
    def fn(lib):
        a = lib.tensor(data(*shapes[0]), requires_grad=True)
        b = lib.tensor(data(*shapes[1], seed=1), requires_grad=True)
        y = lib.matmul(a, b) if len(shapes[0]) == 3 else a @ b
        (y * lib.tensor(data(*y.shape, seed=2))).sum().backward()
        return y, a.grad, b.grad

    check(fn)


# ---- reductions ----------------------------------------------------------------------

REDUCTIONS = {
    "sum": lambda x: x.sum(),
    "sum dim": lambda x: x.sum(1),
    "sum dims keepdim": lambda x: x.sum(dim=(0, -1), keepdim=True),
    "mean dim -1": lambda x: x.mean(-1),
    "mean keepdim": lambda x: x.mean(dim=1, keepdim=True),
    "max": lambda x: x.max(),
    "max dim values": lambda x: x.max(dim=1).values,
    "max dim [0] keepdim": lambda x: x.max(2, keepdim=True)[0],
    "max dim indices": lambda x: x.max(dim=0).indices,
    "argmax": lambda x: x.argmax(),
    "argmax dim keepdim": lambda x: x.argmax(dim=-1, keepdim=True),
    "torch.sum dim": lambda x: torch_or_tape(x).sum(x, dim=0),
    "torch.mean": lambda x: torch_or_tape(x).mean(x),
    "softmax": lambda x: x.softmax(dim=1),
    "log_softmax": lambda x: torch_or_tape(x).log_softmax(x, dim=-1),
    "F.softmax": lambda x: torch_or_tape(x).nn.functional.softmax(x, dim=0),
    "logsumexp": lambda x: x.logsumexp(dim=2),
    "min": lambda x: x.min(),
    "min dim": lambda x: x.min(dim=1).values,
    "argmin": lambda x: x.argmin(dim=1),
}


def torch_or_tape(x):
    return tape if isinstance(x, tape.Tensor) else torch


@pytest.mark.parametrize("name", REDUCTIONS)
def test_reductions_with_dim_and_keepdim(name):
    def fn(lib):
        x = lib.tensor(data(2, 3, 4), requires_grad=True)
        y = REDUCTIONS[name](x)
        if y.requires_grad:
            (y * lib.tensor(data(*y.shape, seed=5))).sum().backward()
        return y, x.grad

    check(fn)


# ---- shapes --------------------------------------------------------------------------

SHAPE_OPS = {
    "view -1": lambda x: x.view(-1, 4),
    "view tuple": lambda x: x.view((4, 6)),
    "reshape": lambda x: x.reshape(3, 8),
    "permute": lambda x: x.permute(2, 0, 1),
    "transpose neg": lambda x: x.transpose(-1, 0),
    "T of 2-D": lambda x: x[0].T,
    "unsqueeze -1": lambda x: x.unsqueeze(-1),
    "unsqueeze 1": lambda x: x.unsqueeze(1),
    "squeeze": lambda x: x[:, :1].squeeze(),
    "squeeze dim": lambda x: x[:, :1].squeeze(1),
    "squeeze non-1 dim": lambda x: x.squeeze(0),
    "flatten": lambda x: x.flatten(),
    "flatten start": lambda x: x.flatten(1),
    "expand": lambda x: x[:, :1].expand(2, 3, 4),
    "expand -1 and new dim": lambda x: x[:, :, :1].expand(5, -1, -1, 3),
    "cat dim -1": lambda x: torch_or_tape(x).cat([x, x * 2], dim=-1),
    "stack dim 1": lambda x: torch_or_tape(x).stack([x, x.exp()], dim=1),
    "torch.transpose": lambda x: torch_or_tape(x).transpose(x, 0, 1),
    "torch.flatten": lambda x: torch_or_tape(x).flatten(x, 0, 1),
    "repeat": lambda x: x.repeat(2, 1, 3),
    "t()": lambda x: x[0].t(),
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_ops_values_and_grads(name):
    def fn(lib):
        x = lib.tensor(data(2, 3, 4), requires_grad=True)
        y = SHAPE_OPS[name](x)
        (y * lib.tensor(data(*y.shape, seed=7))).sum().backward()
        return y, x.grad

    check(fn)


# ---- indexing ------------------------------------------------------------------------

INDEXES = {
    "int": lambda m, x: x[1],
    "negative int": lambda m, x: x[-1, -2],
    "slices": lambda m, x: x[:, 1:3, ::2],
    "negative slice": lambda m, x: x[..., -2:],
    "None": lambda m, x: x[:, None, 0],
    "int list": lambda m, x: x[[0, 1, 0]],
    "int tensor": lambda m, x: x[:, m.tensor([2, 0, 2])],
    "two int tensors": lambda m, x: x[m.tensor([0, 1]), m.tensor([2, -1])],
    "arange gather idiom": lambda m, x: x[0][m.arange(3), m.tensor([1, 3, 0])],
    "range gather idiom": lambda m, x: x[1][range(3), m.tensor([1, 3, 0])],
    "bool mask": lambda m, x: x[x > 0.3],
    "row mask": lambda m, x: x[:, m.tensor([True, False, True])],
}


@pytest.mark.parametrize("name", INDEXES)
def test_indexing_values_and_grads(name):
    def fn(lib):
        x = lib.tensor(data(2, 3, 4), requires_grad=True)
        y = INDEXES[name](lib, x)
        (y * lib.tensor(data(*y.shape, seed=3))).sum().backward()
        return y, x.grad

    check(fn)


def test_setitem_on_tensors_that_do_not_require_grad():
    def fn(lib):
        y = lib.zeros(2, 3)
        y[0] = 1.0
        y[:, -1] = lib.tensor([5.0, 6.0])
        y[y == 0] = -1.0
        y[1, [0, 1]] = lib.tensor([7.0, 8.0])
        return y

    check(fn)


def test_setitem_into_a_non_leaf_is_differentiable():
    def fn(lib):
        x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x * 2
        y[0] = 0.0
        (y * y).sum().backward()
        return y, x.grad

    check(fn)


def test_setitem_of_a_tracked_value_into_a_buffer():
    def fn(lib):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        out = lib.zeros(3)
        out[1:] = x.exp()
        out.sum().backward()
        return out, x.grad

    check(fn)


# ---- elementwise ---------------------------------------------------------------------


def test_elementwise_chain_through_methods_functions_and_functional():
    def fn(lib):
        F = lib.nn.functional
        x = lib.tensor(data(3, 4) + 3.0, requires_grad=True)
        y = (
            lib.sigmoid(x)
            + x.tanh()
            + F.relu(x - 3)
            + lib.exp(-x)
            + x.log()
            + lib.sqrt(x)
            + lib.abs(x - 3)
            + x.clamp(min=2.5, max=3.5)
            + lib.clamp(x, min=3.0)
            + lib.neg(x)
            + F.softmax(x, dim=1)
            + F.log_softmax(x, dim=0)
            + F.sigmoid(x) * F.tanh(x)
            + lib.relu(x - 3.2)
        )
        (y * lib.tensor(data(3, 4, seed=9))).sum().backward()
        return y, x.grad

    check(fn)


# ---- nn ------------------------------------------------------------------------------


def copy_state(dst, src, lib):
    """Load src's (a torch model's) weights into dst, a model built with lib."""
    dst.load_state_dict(
        {k: lib.tensor(v.detach().numpy()) for k, v in src.state_dict().items()}
    )


def make_net(lib):
    class Block(lib.nn.Module):
        def __init__(self, n):
            super().__init__()
            self.lin = lib.nn.Linear(n, n)
            self.scale = lib.nn.Parameter(lib.ones(n))

        def forward(self, x):
            return self.lin(x).tanh() * self.scale + x

    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = lib.nn.Linear(4, 6)
            self.block = Block(6)
            self.head = lib.nn.Sequential(
                lib.nn.ReLU(), lib.nn.Linear(6, 3, bias=False)
            )
            self.not_a_param = lib.ones(2)

        def forward(self, x):
            return self.head(self.block(self.inp(x)))

    return Net()


def test_nested_modules_register_parameters_like_torch():
    ours, theirs = both(make_net)
    names = [n for n, _ in ours.named_parameters()]
    assert names == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [tuple(p.shape) for p in ours.parameters()] == [
        tuple(p.shape) for p in theirs.parameters()
    ]
    assert len(ours.head) == len(theirs.head) == 2
    assert isinstance(ours.head[1], tape.nn.Linear)
    assert all(p.requires_grad and p.is_leaf for p in ours.parameters())


def test_nested_module_forward_and_backward_match_after_copying_weights():
    models = {}

    def fn(lib):
        model = make_net(lib)
        if lib is tape:
            copy_state(model, models["torch"], lib)
        models["tape" if lib is tape else "torch"] = model
        x = lib.tensor(data(5, 4))
        y = model(x)
        lib.nn.MSELoss()(y, lib.tensor(data(5, 3, seed=1))).backward()
        return y, {n: p.grad for n, p in model.named_parameters()}

    theirs = fn(torch)
    ours = fn(tape)
    assert_same(ours, theirs)


def test_state_dict_is_detached_and_shares_storage():
    def fn(lib):
        lin = lib.nn.Linear(2, 2)
        sd = lin.state_dict()
        with lib.no_grad():
            lin.weight *= 0
        return sd["weight"], sd["weight"].requires_grad, list(sd)

    check(fn)


def test_linear_default_init_is_bounded_and_seeded():
    def init(seed):
        tape.manual_seed(seed)
        lin = tape.nn.Linear(16, 4)
        return lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()

    w1, b1 = init(3)
    w2, b2 = init(3)
    w3, _ = init(4)
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(w1, w3)
    assert np.abs(w1).max() <= 0.25 and np.abs(b1).max() <= 0.25
    assert np.abs(w1).max() > 0.15  # uses the full U(-1/4, 1/4) range


def test_manual_seed_makes_random_factories_reproducible():
    for lib in (tape, torch):
        lib.manual_seed(0)
        a = (lib.randn(3), lib.rand(2), lib.randint(0, 10, (4,)))
        lib.manual_seed(0)
        b = (lib.randn(3), lib.rand(2), lib.randint(0, 10, (4,)))
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u.numpy(), v.numpy())
        assert dtype_name(a[2]) == "int64"


def train(lib, build, make_opt, loss_fn, x, y, steps=20, reference=None):
    model = build(lib)
    if reference is not None:
        copy_state(model, reference, lib)
    opt = make_opt(lib, model)
    xs, ys = lib.tensor(x), lib.tensor(y)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(lib)(model(xs), ys)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


def mlp(lib):
    class MLP(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = lib.nn.Linear(5, 16)
            self.fc2 = lib.nn.Linear(16, 3)

        def forward(self, x):
            return self.fc2(lib.relu(self.fc1(x)))

    return MLP()


TRAINING = {
    "adam cross-entropy": (
        lambda lib, m: lib.optim.Adam(m.parameters(), lr=0.01),
        lambda lib: lib.nn.CrossEntropyLoss(),
        "class",
    ),
    "adam amsgrad weight decay": (
        lambda lib, m: lib.optim.Adam(
            m.parameters(), lr=0.02, weight_decay=0.01, amsgrad=True
        ),
        lambda lib: lib.nn.CrossEntropyLoss(reduction="sum"),
        "class",
    ),
    "sgd nesterov mse": (
        lambda lib, m: lib.optim.SGD(
            m.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3
        ),
        lambda lib: lib.nn.MSELoss(),
        "regression",
    ),
    "sgd dampening bce": (
        lambda lib, m: lib.optim.SGD(
            m.parameters(), lr=0.1, momentum=0.5, dampening=0.2
        ),
        lambda lib: lib.nn.BCEWithLogitsLoss(),
        "binary",
    ),
    "sgd per-layer param groups": (
        lambda lib, m: lib.optim.SGD(
            [
                {"params": m.fc1.parameters()},
                {"params": m.fc2.parameters(), "lr": 0.01},
            ],
            lr=0.1,
            momentum=0.9,
        ),
        lambda lib: lib.nn.CrossEntropyLoss(),
        "class",
    ),
}


def targets(kind):
    rng = np.random.default_rng(11)
    if kind == "class":
        return rng.integers(0, 3, 32)
    if kind == "binary":
        return rng.integers(0, 2, (32, 3)).astype(float)
    return rng.standard_normal((32, 3))


@pytest.mark.parametrize("name", TRAINING)
def test_mlp_training_loop_matches_torch(name):
    make_opt, loss_fn, kind = TRAINING[name]
    x, y = data(32, 5, seed=10), targets(kind)
    torch.manual_seed(0)
    theirs, their_losses = train(torch, mlp, make_opt, loss_fn, x, y)
    torch.manual_seed(0)
    reference = mlp(torch)  # the same initial weights torch trained from
    ours, our_losses = train(tape, mlp, make_opt, loss_fn, x, y, reference=reference)
    np.testing.assert_allclose(our_losses, their_losses, rtol=RTOL)
    assert their_losses[-1] < their_losses[0]
    assert_same(ours.state_dict(), theirs.state_dict())


def test_frozen_layer_is_skipped_by_the_optimizer():
    x, y = data(16, 5, seed=1), targets("class")[:16]

    def build(lib):
        model = mlp(lib)
        model.fc1.weight.requires_grad_(False)
        return model

    torch.manual_seed(1)
    theirs, their_losses = train(
        torch,
        build,
        TRAINING["adam cross-entropy"][0],
        TRAINING["adam cross-entropy"][1],
        x,
        y,
        steps=5,
    )
    torch.manual_seed(1)
    reference = mlp(torch)
    ours, our_losses = train(
        tape,
        build,
        TRAINING["adam cross-entropy"][0],
        TRAINING["adam cross-entropy"][1],
        x,
        y,
        steps=5,
        reference=reference,
    )
    np.testing.assert_allclose(our_losses, their_losses, rtol=RTOL)
    assert_same(ours.state_dict(), theirs.state_dict())
    np.testing.assert_array_equal(
        ours.fc1.weight.detach().numpy(), reference.fc1.weight.detach().numpy()
    )
    assert ours.fc1.weight.grad is None


def test_changing_lr_in_param_groups_mid_training():
    def fn(lib):
        w = lib.tensor([1.0, -2.0], requires_grad=True)
        opt = lib.optim.SGD([w], lr=0.1, momentum=0.5)
        out = []
        for step in range(4):
            if step == 2:
                for group in opt.param_groups:
                    group["lr"] = 0.01
            opt.zero_grad()
            (w * w * lib.tensor([1.0, 3.0])).sum().backward()
            opt.step()
            out.append(w.detach().clone())
        return out

    check(fn)


def test_cross_entropy_on_a_sequence_batch_and_1d_input():
    def fn(lib):
        F = lib.nn.functional
        logits = lib.tensor(data(2, 4, 3), requires_grad=True)  # (N, C, d)
        target = lib.tensor(np.array([[0, 3, 1], [2, 2, 0]]))
        one = lib.tensor(data(4, seed=2), requires_grad=True)
        loss = lib.nn.CrossEntropyLoss()(logits, target) + F.cross_entropy(
            one, lib.tensor(2)
        )
        loss.backward()
        return loss, logits.grad, one.grad

    check(fn)


def test_manual_nll_from_log_softmax_matches_cross_entropy():
    def fn(lib):
        logits = lib.tensor(data(6, 4), requires_grad=True)
        y = lib.tensor(np.array([0, 3, 1, 2, 2, 0]))
        logp = logits.log_softmax(dim=1)
        loss = -logp[lib.arange(6), y].mean()
        loss.backward()
        return loss, logits.grad, lib.nn.functional.cross_entropy(logits, y)

    check(fn)


# ---- the "Learning PyTorch with Examples" tutorial --------------------------------


def polynomial_tutorial_nn(lib):
    """The tutorial's nn version as written there (float64, fewer steps)."""
    x = lib.linspace(-math.pi, math.pi, 200)
    y = lib.sin(x)
    p = lib.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model = lib.nn.Sequential(lib.nn.Linear(3, 1), lib.nn.Flatten(0, 1))
    loss_fn = lib.nn.MSELoss(reduction="sum")
    lr = 1e-6
    for _ in range(20):
        loss = loss_fn(model(xx), y)
        model.zero_grad()
        loss.backward()
        with lib.no_grad():
            for param in model.parameters():
                param -= lr * param.grad
    return loss.item()


def test_polynomial_tutorial_runs_unchanged():
    polynomial_tutorial_nn(tape)


def test_polynomial_tutorial_with_the_missing_pieces_spelled_out():
    """The same training with linspace/pow/Flatten replaced by what tape has."""

    def run(lib, reference=None):
        x = lib.tensor(np.linspace(-math.pi, math.pi, 200))
        y = lib.sin(x)
        xx = lib.stack([x, x**2, x**3], dim=-1)
        model = lib.nn.Sequential(lib.nn.Linear(3, 1))
        if reference is not None:
            copy_state(model, reference, lib)
        loss_fn = lib.nn.MSELoss(reduction="sum")
        losses = []
        for _ in range(20):
            loss = loss_fn(model(xx).flatten(0, 1), y)
            model.zero_grad()
            loss.backward()
            with lib.no_grad():
                for param in model.parameters():
                    param -= 1e-6 * param.grad
            losses.append(loss.item())
        return model, losses

    torch.manual_seed(0)
    theirs, their_losses = run(torch)
    torch.manual_seed(0)
    ours, our_losses = run(tape, reference=torch.nn.Sequential(torch.nn.Linear(3, 1)))
    np.testing.assert_allclose(our_losses, their_losses, rtol=RTOL)
    assert_same(ours.state_dict(), theirs.state_dict())
    assert ours[0].bias.item() == pytest.approx(theirs[0].bias.item(), rel=RTOL)


def test_polynomial_tutorial_autograd_version():
    """The tutorial's raw-autograd version: 0-d leaves updated under no_grad."""

    def run(lib):
        x = lib.tensor(np.linspace(-math.pi, math.pi, 200))
        y = lib.sin(x)
        a, b, c, d = (lib.tensor(v, requires_grad=True) for v in (0.1, -0.2, 0.3, 0.05))
        for _ in range(20):
            y_pred = a + b * x + c * x**2 + d * x**3
            loss = ((y_pred - y) ** 2).sum()
            loss.backward()
            with lib.no_grad():
                for t in (a, b, c, d):
                    t -= 1e-6 * t.grad
                    t.grad = None
        return loss.item(), a, b, c, d, lib.randn(()).shape == ()

    check(run)


def test_copying_weights_with_copy_under_no_grad():
    def fn(lib):
        lin = lib.nn.Linear(2, 2)
        with lib.no_grad():
            lin.weight.copy_(lib.tensor([[1.0, 2.0], [3.0, 4.0]]))
            lin.bias.fill_(0.5)
        return lin(lib.tensor([1.0, 1.0]))

    check(fn)


# ---- masks, Sequential slicing, CrossEntropyLoss's default ignore_index ------------


@pytest.mark.parametrize(
    "combine",
    [
        lambda a, b: a & b,
        lambda a, b: a | b,
        lambda a, b: ~a,
    ],
    ids=["and", "or", "invert"],
)
def test_combining_boolean_masks(combine):
    def fn(lib):
        x = lib.tensor(data(6), requires_grad=True)
        mask = combine(x > -0.5, x < 0.8)
        y = x[mask]
        (y * y).sum().backward()
        return mask, y, x.grad

    check(fn)


def test_slicing_a_sequential_gives_a_runnable_sequential():
    def fn(lib):
        model = lib.nn.Sequential(
            lib.nn.Linear(2, 3), lib.nn.ReLU(), lib.nn.Linear(3, 1)
        )
        return type(model[:2]).__name__, len(model[:2])

    check(fn)


def test_cross_entropy_skips_targets_equal_to_minus_100_by_default():
    def fn(lib):
        logits = lib.tensor(data(4, 3), requires_grad=True)
        loss = lib.nn.CrossEntropyLoss()(logits, lib.tensor([0, -100, 2, -100]))
        loss.backward()
        return loss, logits.grad

    check(fn)
