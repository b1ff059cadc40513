"""symgrad.tape against PyTorch: the chapter's examples, autograd semantics (leaves,
accumulation, retain_graph, no_grad, errors), nn.Module and the optimizers.

Gradients and parameters are compared with torch in float64 to 1e-12, starting from
identical weights copied across.
"""

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from symgrad import tape
from symgrad.tape import nn

torch = pytest.importorskip("torch")

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = dict(rtol=1e-12, atol=1e-12)


pytestmark = pytest.mark.usefixtures("torch_float64")


def close(ours, theirs):
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), **TOL)


def torch_repr(fn):
    """repr of fn(torch) at torch's own float32 default, whose repr shows no dtype."""
    torch.set_default_dtype(torch.float32)
    try:
        return repr(fn(torch))
    finally:
        torch.set_default_dtype(torch.float64)


def both(fn):
    """Run fn(lib) with lib = tape and lib = torch."""
    return fn(tape), fn(torch)


# ---- the chapter's two examples ----------------------------------------------------


def test_example_1_sum_gradient_and_repr_match_torch():
    def run(lib):
        x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x.sum()
        y.backward()
        return x, y

    (x, y), (tx, _) = both(run)
    close(x.grad, tx.grad)
    assert repr(x.grad) == torch_repr(lambda lib: run(lib)[0].grad)
    assert repr(x) == torch_repr(lambda lib: run(lib)[0])
    assert repr(y) == torch_repr(lambda lib: run(lib)[1])


def make_net(lib):
    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = lib.nn.Linear(3, 2)
            self.fc2 = lib.nn.Linear(2, 1)

        def forward(self, x):
            x = lib.sigmoid(self.fc1(x))
            x = lib.sigmoid(self.fc2(x))
            return x

    return Net()


def copy_weights(ours, theirs):
    """Give the tape module torch's initial weights (same names, same order)."""
    pairs = list(zip(ours.named_parameters(), theirs.named_parameters(), strict=True))
    for (name, p), (tname, tp) in pairs:
        assert name == tname
        p.data = tp.detach().numpy().copy()
    return [(p, tp) for (_, p), (_, tp) in pairs]


def chapter_step(lib, net):
    """The chapter's training step; returns output, loss and the gradients."""
    criterion = lib.nn.MSELoss()
    optimizer = lib.optim.SGD(net.parameters(), lr=0.1)
    x, target = lib.tensor([1.0, 2.0, 3.0]), lib.tensor([0.5])
    optimizer.zero_grad()
    output = net(x)
    loss = criterion(output, target)
    loss.backward()
    grads = [p.grad.numpy().copy() for p in net.parameters()]
    optimizer.step()
    return output, loss, grads


def test_example_2_one_sgd_step_matches_torch():
    net, tnet = make_net(tape), make_net(torch)
    pairs = copy_weights(net, tnet)
    output, loss, grads = chapter_step(tape, net)
    t_output, t_loss, t_grads = chapter_step(torch, tnet)
    close(output, t_output)
    close(loss, t_loss)
    for ours, theirs in zip(grads, t_grads, strict=True):
        np.testing.assert_allclose(ours, theirs, **TOL)
    for p, tp in pairs:  # parameters after the SGD step
        close(p, tp)


def run_example(name):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return result.stdout


def test_example_scripts_run():
    expected = torch_repr(lambda lib: lib.ones(3))  # tensor([1., 1., 1.])
    assert run_example("autograd_sum.py").strip() == expected
    out = run_example("train_seed_mlp.py")
    assert "fc2.bias after step" in out and "loss after step" in out


# ---- autograd semantics ------------------------------------------------------------


def test_grad_accumulates_across_backward_calls():
    def run(lib):
        x = lib.tensor([0.5, -1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        (x.exp() * 3).sum().backward()
        return x.grad

    close(*both(run))


def test_retain_graph_allows_a_second_backward():
    def run(lib):
        x = lib.tensor([0.5, -1.0, 2.0], requires_grad=True)
        y = (x.sin() * x).sum()
        y.backward(retain_graph=True)
        y.backward(retain_graph=True)
        y.backward()
        return x.grad

    close(*both(run))


GRAPHS = {
    "sum": lambda x: x.sum(),
    "mean": lambda x: x.mean(),
    "add_view_slice": lambda x: (x + 1).view(3, 1)[1:].sum(),
    "exp": lambda x: x.exp().sum(),
    "mul": lambda x: (x * 2).sum(),
    "index": lambda x: x[[0, 0]].sum(),
    "amax": lambda x: x.amax(),
}


@pytest.mark.parametrize("graph", GRAPHS)
def test_second_backward_without_retain_graph_behaves_like_torch(graph):
    """torch frees only saved tensors, so graphs that save none may be re-run."""
    outcomes = []
    for lib in (tape, torch):
        x = lib.tensor([0.5, -1.0, 2.0], requires_grad=True)
        y = GRAPHS[graph](x)
        y.backward()
        try:
            y.backward()
            outcomes.append(x.grad.numpy().tolist())
        except RuntimeError as error:
            assert "Trying to backward through the graph a second time" in str(error)
            assert "retain_graph=True" in str(error)
            outcomes.append("freed")
    assert outcomes[0] == outcomes[1]


def test_shared_subexpressions_sum_their_gradients():
    def run(lib):
        x = lib.tensor([[0.3, -0.2], [1.5, 0.7]], requires_grad=True)
        w = lib.tensor([0.1, 0.2], requires_grad=True)
        h = (x @ w).tanh()
        z = h * h + h.exp() + (x * h.unsqueeze(1)).sum()
        z.sum().backward()
        return x.grad, w.grad

    (gx, gw), (tgx, tgw) = both(run)
    close(gx, tgx)
    close(gw, tgw)


def test_explicit_gradient_for_non_scalar_output():
    def run(lib):
        x = lib.tensor([0.5, -1.0, 2.0], requires_grad=True)
        (x**3).backward(lib.tensor([1.0, 0.1, 0.01]))
        return x.grad

    close(*both(run))


def test_leaf_and_non_leaf_rules_like_torch():
    for lib in (tape, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        c = lib.tensor([3.0, 4.0])
        y = x * c
        z = y.sum()
        y.retain_grad()
        z.backward()
        assert x.is_leaf and c.is_leaf and not y.is_leaf
        assert x.grad_fn is None and y.grad_fn is not None
        assert y.requires_grad and not c.requires_grad and c.grad is None
        assert y.grad is not None  # retain_grad keeps y's
        with pytest.warns(UserWarning, match="not a leaf Tensor"):
            assert z.grad is None
        assert y.grad_fn.name() == "MulBackward0"
    assert repr(y) == torch_repr(
        lambda lib: lib.tensor([1.0, 2.0], requires_grad=True) * lib.tensor([3.0, 4.0])
    )


@pytest.mark.parametrize("lib", [tape, torch], ids=["tape", "torch"])
def test_no_grad_as_context_and_decorator(lib):
    @lib.no_grad()
    def scaled(t):
        return t * 2

    @lib.no_grad
    def doubled(t):
        return t * 2

    x = lib.tensor([1.0], requires_grad=True)
    with lib.no_grad():
        assert not (x * 2).requires_grad and not lib.is_grad_enabled()
        with lib.no_grad():
            pass
        assert not lib.is_grad_enabled()
    assert not scaled(x).requires_grad and scaled.__name__ == "scaled"
    assert not doubled(x).requires_grad and doubled.__name__ == "doubled"
    assert (x * 2).requires_grad and lib.is_grad_enabled()
    with pytest.raises(ValueError), lib.no_grad():
        raise ValueError
    assert lib.is_grad_enabled()


def test_detach_data_item_and_shape_accessors():
    def run(lib):
        x = lib.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
        d = x.detach()
        d[0, 0] = 10.0  # detach shares storage
        return [
            d.requires_grad,
            d.grad_fn is None,
            x.data[0, 0].item(),
            x.data.requires_grad,
            tuple(x.shape),
            x.ndim,
            x.dim(),
            tuple(x.size()),
            x.size(1),
            x.numel(),
            tuple(x.T.shape),
            tuple(lib.ones(4, 2, 3).mT.shape),
            type(x[1, 2].item()),
            x.sum().item(),
            x.tolist(),
            float(x.data[0, 1]),
            int(x.data[1, 1]),
            f"{x.sum():.2f}",
            len(x),
        ]

    ours, theirs = both(run)
    assert ours == theirs


def test_manual_sgd_under_no_grad_like_torch():
    def run(lib):
        w = lib.tensor([0.5, -0.3], requires_grad=True)
        x = lib.tensor([[1.0, 2.0], [3.0, -1.0]])
        for _ in range(3):
            loss = ((x @ w - 1) ** 2).mean()
            loss.backward()
            with lib.no_grad():
                w -= 0.1 * w.grad
            w.grad.zero_()
        return w

    close(*both(run))


def test_inplace_add_on_a_non_leaf_is_recorded_like_torch():
    def run(lib):
        x = lib.tensor([0.5, -1.0], requires_grad=True)
        total = 0
        for k in range(3):
            total += (x * k).exp().sum()
        total.backward()
        return x.grad

    close(*both(run))


def test_deep_graphs_do_not_hit_the_recursion_limit():
    x = tape.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad.item() == pytest.approx(1.0001**5000, rel=1e-9)


def test_inplace_ops_on_tracked_tensors_are_recorded_like_torch():
    """zero_ of a non-leaf and assignment of a tracked value into a buffer are recorded:
    the gradients are torch's (none through the zeroed values, x[1]'s through the slot).
    """
    for m in (tape, torch):
        x = m.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        y.zero_()
        buffer = m.zeros(2)
        buffer[0] = x[1]
        (y.sum() + 3 * buffer.sum()).backward()
        assert x.grad.tolist() == [0.0, 3.0], m
        with m.no_grad():
            x[0] = 5.0  # allowed outside the graph
        assert x.tolist() == [5.0, 2.0]


def test_requires_grad_and_zero_():
    x = tape.tensor([1.0, 2.0]).requires_grad_()
    assert x.requires_grad and x.is_leaf
    x.sum().backward()
    x.grad.zero_()
    assert x.grad.numpy().tolist() == [0.0, 0.0]


ERRORS = {
    "non-scalar backward": (
        lambda m: m.tensor([1.0, 2.0], requires_grad=True).exp().backward(),
        "grad can be implicitly created only for scalar outputs",
    ),
    "backward without grad": (
        lambda m: m.tensor([1.0, 2.0]).sum().backward(),
        "does not require grad",
    ),
    "second backward": (
        lambda m: [
            y.backward() for y in [m.tensor([1.0], requires_grad=True).exp().sum()] * 2
        ],
        "backward through the graph a second time",
    ),
    "gradient shape": (
        lambda m: m.tensor([1.0, 2.0], requires_grad=True).exp().backward(m.ones(3)),
        "Mismatch in shape",
    ),
    "leaf in-place": (
        lambda m: m.tensor([1.0], requires_grad=True).zero_(),
        "a leaf Variable that requires grad is being used in an in-place operation",
    ),
    "leaf +=": (
        lambda m: m.tensor([1.0], requires_grad=True).__iadd__(1),
        "a leaf Variable that requires grad is being used in an in-place operation",
    ),
    "leaf setitem": (
        lambda m: m.tensor([1.0], requires_grad=True).__setitem__(0, 2.0),
        "a leaf Variable that requires grad is being used in an in-place operation",
    ),
    "numpy of grad tensor": (
        lambda m: m.tensor([1.0], requires_grad=True).numpy(),
        "Can't call numpy\\(\\) on Tensor that requires grad",
    ),
    "retain_grad without grad": (
        lambda m: m.tensor([1.0]).retain_grad(),
        "can't retain_grad on Tensor that has requires_grad=False",
    ),
    "int requires grad": (
        lambda m: m.tensor([1, 2], requires_grad=True),
        "Only Tensors of floating point",
    ),
    "non-leaf requires_grad_(False)": (
        lambda m: (m.tensor([1.0], requires_grad=True) * 2).requires_grad_(False),
        "you can only change requires_grad flags of leaf variables",
    ),
    "item of many": (lambda m: m.ones(2).item(), "a Tensor with 2 elements cannot"),
    "bool of many": (lambda m: bool(m.ones(2)), "Boolean value of Tensor with more"),
    "matmul mismatch": (
        lambda m: m.ones(2, 3) @ m.ones(4, 5),
        "mat1 and mat2 shapes cannot be multiplied \\(2x3 and 4x5\\)",
    ),
    "broadcast mismatch": (
        lambda m: m.ones(2, 3) * m.ones(4),
        "The size of tensor a \\(3\\) must match the size of tensor b \\(4\\)",
    ),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_match_torch(case):
    fn, message = ERRORS[case]
    for lib in (tape, torch):
        with pytest.raises(RuntimeError, match=message):
            fn(lib)


# ---- factories -----------------------------------------------------------------

FACTORIES = {
    "zeros": lambda m: m.zeros(2, 3),
    "ones_tuple": lambda m: m.ones((2, 3)),
    "zeros_like": lambda m: m.zeros_like(m.tensor([[1, 2]])),
    "ones_like_dtype": lambda m: m.ones_like(m.tensor([1, 2]), dtype=m.float64),
    "full_float": lambda m: m.full((2,), 1.5),
    "full_int": lambda m: m.full((2, 2), 7),
    "empty_shape": lambda m: m.empty(3, 1).shape,
    "arange": lambda m: m.arange(5),
    "arange_float": lambda m: m.arange(0.0, 1.0, 0.25),
    "arange_start": lambda m: m.arange(2, 9, 3),
    "tensor_int": lambda m: m.tensor([[1, 2], [3, 4]]),
    "tensor_bool": lambda m: m.tensor([True, False]),
    "tensor_float32": lambda m: m.tensor([1.5], dtype=m.float32),
    "tensor_int64": lambda m: m.tensor([1.0, 2.0], dtype=m.int64),
    "stack": lambda m: m.stack([m.ones(2), m.zeros(2)], dim=1),
    "cat": lambda m: m.cat([m.ones(2, 1), m.zeros(2, 2)], dim=1),
}


@pytest.mark.parametrize("name", FACTORIES)
def test_factories_match_torch_dtype_and_values(name):
    ours, theirs = both(FACTORIES[name])
    if isinstance(ours, tuple):
        assert ours == tuple(theirs)
        return
    expected = theirs.numpy()
    assert ours.numpy().dtype == expected.dtype
    np.testing.assert_array_equal(ours.numpy(), expected)


def test_random_factories_are_seeded_and_in_range():
    def draw():
        return tape.rand(100), tape.randn(3, 4), tape.randint(2, 5, (50,))

    tape.manual_seed(1)
    first = draw()
    tape.manual_seed(1)
    second = draw()
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.numpy(), b.numpy())
    u, n, k = first
    assert u.dtype == n.dtype == np.float64 and k.dtype == np.int64
    assert 0 <= u.numpy().min() and u.numpy().max() < 1 and n.shape == (3, 4)
    assert set(k.tolist()) <= {2, 3, 4}
    assert tape.randint(3, (2, 2)).shape == (2, 2)
    assert tape.rand(2, requires_grad=True).requires_grad


def test_from_numpy_shares_memory_and_tensor_copies():
    array = np.zeros(3)
    shared, copied = tape.from_numpy(array), tape.tensor(array)
    array[0] = 1.0
    assert shared[0].item() == 1.0 and copied[0].item() == 0.0


# ---- nn ---------------------------------------------------------------------------


def test_linear_init_is_torch_default_and_reproducible_with_manual_seed():
    tape.manual_seed(0)
    a = nn.Linear(400, 300)
    tape.manual_seed(0)
    b = nn.Linear(400, 300)
    c = nn.Linear(400, 300)
    assert np.array_equal(a.weight.data.numpy(), b.weight.data.numpy())
    assert not np.array_equal(b.weight.data.numpy(), c.weight.data.numpy())
    t = torch.nn.Linear(400, 300)
    for ours, theirs in ((a.weight, t.weight), (a.bias, t.bias)):
        assert ours.shape == tuple(theirs.shape) and ours.dtype == np.float64
        ours, theirs = ours.detach().numpy(), theirs.detach().numpy()
        bound = 1 / np.sqrt(400)  # U(-bound, bound): both fill the same interval
        assert np.abs(ours).max() <= bound and np.abs(theirs).max() <= bound
        assert abs(ours.max() - theirs.max()) < 0.05 * bound
        assert abs(ours.min() - theirs.min()) < 0.05 * bound


def test_parameter_registration_matches_torch():
    def build(lib):
        class Block(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.scale = lib.nn.Parameter(lib.ones(2))
                self.body = lib.nn.Sequential(
                    lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 2, bias=False)
                )
                self.shared = self.body[0]  # the same parameters, listed once
                self.note = "not a parameter"

            def forward(self, x):
                return self.body(x) * self.scale

        return Block()

    ours, theirs = both(build)
    names = [n for n, _ in ours.named_parameters()]
    assert names == [n for n, _ in theirs.named_parameters()]
    assert len(list(ours.parameters())) == len(list(theirs.parameters())) == 4
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(ours.state_dict())  # shared entries load back too
    assert all(
        isinstance(p, nn.Parameter) and p.requires_grad for p in ours.parameters()
    )
    assert ours.train() is ours and ours.training
    assert not ours.eval().training and not ours.body[1].training
    assert "(body): Sequential(" in repr(ours) and repr(ours.body[0]) == repr(
        theirs.body[0]
    )


@pytest.mark.parametrize("lib", [tape, torch], ids=["tape", "torch"])
def test_assigning_a_parameter_before_module_init_raises_like_torch(lib):
    class Broken(lib.nn.Module):
        def __init__(self):
            self.note = "plain attributes are fine"
            self.w = lib.nn.Parameter(lib.ones(1))

    with pytest.raises(AttributeError, match=r"before Module.__init__\(\) call"):
        Broken()


def test_state_dict_round_trip_and_errors():
    src, dst = nn.Linear(3, 2), nn.Linear(3, 2)
    weight = dst.weight
    dst.load_state_dict(src.state_dict())
    assert dst.weight is weight  # copied in place
    assert np.array_equal(dst.weight.data.numpy(), src.weight.data.numpy())
    bad = {"weight": tape.zeros(3, 3), "extra": tape.zeros(1)}
    for lib, module in ((tape, nn.Linear(3, 2)), (torch, torch.nn.Linear(3, 2))):
        lib_bad = {k: lib.tensor(v.numpy()) for k, v in bad.items()}
        with pytest.raises(RuntimeError, match="size mismatch for weight") as error:
            module.load_state_dict(lib_bad)
        assert "Missing key(s)" in str(error.value) and "Unexpected key" in str(
            error.value
        )


def test_module_zero_grad_and_activations_match_torch():
    def run(lib):
        lib.manual_seed(0)
        model = lib.nn.Sequential(
            lib.nn.Linear(3, 4), lib.nn.ReLU(), lib.nn.Linear(4, 4), lib.nn.Sigmoid()
        )
        return model

    ours, theirs = both(run)
    copy_weights(ours, theirs)
    for lib, model in ((tape, ours), (torch, theirs)):
        x = lib.tensor([[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]])
        model(x).sum().backward()
        model.zero_grad(set_to_none=False)
        model.out = model(x)
        model.out.sum().backward()
    close(ours.out, theirs.out)
    for p, tp in zip(ours.parameters(), theirs.parameters(), strict=True):
        close(p.grad, tp.grad)
    ours.zero_grad()
    assert all(p.grad is None for p in ours.parameters())


# ---- optimizers ----------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda o, ps: o.SGD(ps, lr=0.1),
    "sgd_momentum": lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9),
    "sgd_dampening": lambda o, ps: o.SGD(ps, lr=0.1, momentum=0.9, dampening=0.3),
    "sgd_weight_decay": lambda o, ps: o.SGD(ps, lr=0.1, weight_decay=0.01),
    "sgd_nesterov": lambda o, ps: o.SGD(
        ps, lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.02
    ),
    "adam": lambda o, ps: o.Adam(ps, lr=0.01),
    "adam_custom": lambda o, ps: o.Adam(
        ps, lr=0.02, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1
    ),
    "adam_amsgrad": lambda o, ps: o.Adam(ps, lr=0.01, amsgrad=True),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_steps_match_torch(name):
    """Six steps of a 3-4-3 tanh network on cross-entropy; params compared each step."""

    def build(lib):
        return lib.nn.Sequential(
            lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 3)
        )

    ours, theirs = both(build)
    pairs = copy_weights(ours, theirs)
    x = np.random.default_rng(0).standard_normal((8, 3))
    y = np.random.default_rng(1).integers(0, 3, 8)
    opts = [
        OPTIMIZERS[name](lib.optim, m.parameters())
        for lib, m in ((tape, ours), (torch, theirs))
    ]
    for step in range(6):
        for lib, model, opt in ((tape, ours, opts[0]), (torch, theirs, opts[1])):
            opt.zero_grad()
            xs = lib.tensor(x[step:] if step % 2 else x)  # vary the batch
            loss = lib.nn.functional.cross_entropy(model(xs), lib.tensor(y[-len(xs) :]))
            loss.backward()
            opt.step()
        for p, tp in pairs:
            close(p, tp)


def test_param_groups_and_zero_grad_modes():
    a, b = (tape.tensor([1.0, 2.0], requires_grad=True) for _ in range(2))
    ta, tb = (torch.tensor([1.0, 2.0], requires_grad=True) for _ in range(2))
    for lib, (p, q) in ((tape, (a, b)), (torch, (ta, tb))):
        opt = lib.optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1)
        (p * q).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
        assert p.grad is not None and not p.grad.numpy().any()
        opt.zero_grad()
        assert p.grad is None
    close(a, ta)
    close(b, tb)


@pytest.mark.parametrize(
    "make",
    [
        lambda o, ps: o.SGD(ps, lr=-1),
        lambda o, ps: o.SGD(ps, lr=0.1, nesterov=True),
        lambda o, ps: o.Adam(ps, betas=(1.0, 0.9)),
        lambda o, ps: o.SGD(ps[:0], lr=0.1),
    ],
)
def test_invalid_optimizer_arguments_raise_value_error_like_torch(make):
    for lib in (tape, torch):
        with pytest.raises(ValueError):
            make(lib.optim, [lib.ones(1, requires_grad=True)])


# ---- independence --------------------------------------------------------------------


def test_engine_imports_only_numpy_and_the_standard_library():
    allowed = {"numpy", "collections", "contextlib", "copy", "math", "sys", "warnings"}
    for path in (ROOT / "symgrad" / "tape").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, f"{path.name} imports {roots - allowed}"
