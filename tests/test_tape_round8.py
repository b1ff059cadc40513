"""Round 8: more small real PyTorch scripts and API usages, ported to symgrad.tape, with
torch as the judge.

Each scenario is a function of the module (`m` is symgrad.tape or torch, the latter at
float64 like tape) run on both; values, gradients, dtypes, shapes, grad_fn names and
error types (and, for common mistakes, messages) are compared. Strict xfails document
each difference from torch found in this round: "missing: <name>" where the tape lacks
a feature a script uses, otherwise the cause, with the place in symgrad/tape/ where the
fix belongs and `raises=` pinning how the tape fails.
"""

import copy
import io
import warnings
from collections import OrderedDict

import numpy as np
import pytest
from tape_compare import (
    check,
    check_raises,
    data,
    raised,
    set_linear,
    values_and_grad,
    weights,
)

from symgrad import tape

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


def cases(table):
    """Parametrize over a dict whose values are a callable or (callable, mark)."""
    params = []
    for name, value in table.items():
        fn, marks = value if isinstance(value, tuple) else (value, ())
        params.append(pytest.param(fn, marks=marks, id=name))
    return params


def check_message(fn):
    """torch and tape raise the same exception type with the same message."""
    theirs, ours = raised(fn, torch), raised(fn, tape)
    assert theirs is not None, "torch did not raise"
    assert ours is not None, "tape did not raise"
    assert isinstance(ours, type(theirs)), (type(ours), type(theirs))
    assert str(ours) == str(theirs)


def mlp(m, act="Tanh"):
    net = m.nn.Sequential(m.nn.Linear(4, 6), getattr(m.nn, act)(), m.nn.Linear(6, 3))
    set_linear(net[0], m, seed=1)
    set_linear(net[2], m, seed=3)
    return net


def features(m, n=8):
    return m.tensor(data(n, 4, seed=5))


def labels(m, n=8):
    return m.tensor(np.arange(n) % 3)


# ---- whole training scripts ----------------------------------------------------------


def test_classifier_with_adam_weight_decay_and_cross_entropy_module():
    def fn(m):
        net = mlp(m)
        opt = m.optim.Adam(net.parameters(), lr=0.05, weight_decay=0.01)
        loss_fn = m.nn.CrossEntropyLoss()
        x, y = features(m), labels(m)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, net.state_dict(), opt.state_dict()["state"][0]

    check(fn)


def test_regression_with_centered_rmsprop_momentum_and_weight_decay():
    def fn(m):
        net = mlp(m, "ReLU")
        x, y = features(m, 5), m.tensor(data(5, 3, seed=2))
        opt = m.optim.RMSprop(
            net.parameters(), lr=0.01, momentum=0.5, centered=True, weight_decay=0.01
        )
        losses = []
        for _ in range(4):
            opt.zero_grad()
            loss = m.nn.functional.mse_loss(net(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, net.state_dict()

    check(fn)


def test_nesterov_sgd_alternating_zero_grad_modes():
    def fn(m):
        w = m.tensor([1.0, -2.0], requires_grad=True)
        opt = m.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)
        trajectory = []
        for i in range(4):
            opt.zero_grad(set_to_none=i % 2 == 0)
            (w**2).sum().backward()
            opt.step()
            trajectory.append(w.clone())
        return trajectory, w.grad

    check(fn)


def test_fine_tuning_with_a_frozen_first_layer_and_filtered_parameters():
    def fn(m):
        net = mlp(m)
        for p in net[0].parameters():
            p.requires_grad_(False)
        trainable = filter(lambda p: p.requires_grad, net.parameters())
        opt = m.optim.SGD(trainable, lr=0.1, momentum=0.9)
        x, y = features(m, 3), m.tensor([0, 2, 1])
        for _ in range(2):
            opt.zero_grad()
            m.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return (
            net.state_dict(),
            net[0].weight.grad,
            [len(g["params"]) for g in opt.param_groups],
        )

    check(fn)


def test_exponential_moving_average_of_weights_with_add_alpha():
    def fn(m):
        net, ema = mlp(m), mlp(m)
        x, y = features(m), labels(m)
        opt = m.optim.SGD(net.parameters(), lr=0.2)
        for _ in range(3):
            opt.zero_grad()
            m.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            with m.no_grad():
                for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                    pe.mul_(0.9).add_(p, alpha=0.1)
        return ema.state_dict(), [p.requires_grad for p in ema.parameters()]

    check(fn)


def test_resume_adam_from_model_and_optimizer_checkpoints():
    def fn(m):
        net = mlp(m)
        x, y = features(m, 6), labels(m, 6)
        opt = m.optim.Adam(net.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            m.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        saved = opt.state_dict()
        net2 = m.nn.Sequential(m.nn.Linear(4, 6), m.nn.Tanh(), m.nn.Linear(6, 3))
        net2.load_state_dict(net.state_dict())
        opt2 = m.optim.Adam(net2.parameters(), lr=0.1)
        opt2.load_state_dict(saved)
        for o, n in ((opt, net), (opt2, net2)):
            o.zero_grad()
            m.nn.functional.cross_entropy(n(x), y).backward()
            o.step()
        return net.state_dict(), net2.state_dict(), opt2.state_dict()["state"][1]

    check(fn)


def test_gan_style_alternating_updates_with_detach():
    def fn(m):
        gen = set_linear(m.nn.Linear(2, 3), m, seed=1)
        disc = set_linear(m.nn.Linear(3, 1), m, seed=2)
        opt_g = m.optim.Adam(gen.parameters(), lr=0.05, betas=(0.5, 0.999))
        opt_d = m.optim.Adam(disc.parameters(), lr=0.05, betas=(0.5, 0.999))
        z, real = m.tensor(data(6, 2)), m.tensor(data(6, 3, seed=4))
        bce, ones, zeros = m.nn.BCEWithLogitsLoss(), m.ones(6, 1), m.zeros(6, 1)
        history = []
        for _ in range(3):
            fake = gen(z)
            opt_d.zero_grad()
            loss_d = bce(disc(real), ones) + bce(disc(fake.detach()), zeros)
            loss_d.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = bce(disc(fake), ones)
            loss_g.backward()
            opt_g.step()
            history.append((loss_d.item(), loss_g.item()))
        return history, gen.state_dict(), disc.state_dict()

    check(fn)


def test_adamw_amsgrad_with_a_parameter_that_sometimes_gets_no_gradient():
    def fn(m):
        w = m.tensor([1.0, 2.0], requires_grad=True)
        v = m.tensor([3.0], requires_grad=True)
        opt = m.optim.AdamW([w, v], lr=0.1, amsgrad=True)
        for i in range(4):
            opt.zero_grad()
            loss = (w**2).sum() + (0 if i % 2 else v.sum() * 3)
            loss.backward()
            opt.step()
        return w, v, opt.state[w]["step"], opt.state[v]["step"], sorted(opt.state[v])

    check(fn)


def test_residual_blocks_in_a_module_list():
    def fn(m):
        class Net(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.blocks = m.nn.ModuleList([m.nn.Linear(3, 3) for _ in range(2)])
                for i, block in enumerate(self.blocks):
                    set_linear(block, m, seed=i)

            def forward(self, x):
                for block in self.blocks:
                    x = block(x).relu() + x
                return x

        net = Net()
        out = net(m.tensor(data(4, 3)))
        out.sum().backward()
        names = [n for n, _ in net.named_parameters()]
        return out, names, [p.grad for p in net.parameters()], len(net.blocks)

    check(fn)


def test_custom_module_with_running_statistics_in_buffers():
    def fn(m):
        class Center(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("running_mean", m.zeros(2))
                self.register_buffer("scratch", m.ones(2), persistent=False)
                self.scale = m.nn.Parameter(m.ones(2))

            def forward(self, x):
                if self.training:
                    with m.no_grad():
                        self.running_mean.mul_(0.9).add_(x.mean(0) * 0.1)
                return x * self.scale - self.running_mean

        layer, x = Center(), m.tensor(data(4, 2))
        layer(x)
        layer(x)
        layer.eval()
        out = layer(x)
        saved = layer.state_dict()
        other = Center()
        other.load_state_dict(saved)
        return (
            out,
            list(saved),
            [n for n, _ in layer.named_buffers()],
            other.running_mean,
            layer.float().running_mean.dtype == m.float32,
            layer.scratch.dtype == m.float32,
        )

    check(fn)


def test_float32_model_and_data_train_in_float32():
    def fn(m):
        net = set_linear(m.nn.Linear(3, 2), m).float()
        opt = m.optim.Adam(net.parameters(), lr=0.1)
        x = m.tensor(data(4, 3)).float()
        for _ in range(2):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        return (
            net.weight.dtype == m.float32,
            net(x).dtype == m.float32,
            net.weight.grad.dtype == m.float32,
            opt.state[net.weight]["exp_avg"].dtype == m.float32,
        )

    check(fn)


def test_adam_step_count_dtype_for_float32_parameters():
    def fn(m):
        w = m.ones(2, dtype=m.float32, requires_grad=True)
        opt = m.optim.Adam([w])
        w.sum().backward()
        opt.step()
        return opt.state[w]["step"]

    check(fn)


def test_custom_optimizer_subclass_using_state_as_a_defaultdict():
    def fn(m):
        class Momentum(m.optim.Optimizer):
            def __init__(self, params, lr=0.1, beta=0.9):
                super().__init__(params, dict(lr=lr, beta=beta))

            @m.no_grad()
            def step(self):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is None:
                            continue
                        state = self.state[p]  # torch: a defaultdict(dict)
                        if len(state) == 0:
                            state["buf"] = m.zeros_like(p)
                        state["buf"].mul_(group["beta"]).add_(p.grad)
                        p.add_(state["buf"], alpha=-group["lr"])

        w = m.tensor([1.0, -2.0], requires_grad=True)
        opt = Momentum([w])
        for _ in range(3):
            opt.zero_grad()
            (w**2).sum().backward()
            opt.step()
        return w, opt.state[w]["buf"]

    check(fn)


def _scheduled(make, manual_at=None):
    """Eight epochs with two param groups; optionally set group 0's lr by hand."""

    def fn(m):
        w = m.tensor([1.0], requires_grad=True)
        v = m.tensor([2.0], requires_grad=True)
        opt = m.optim.SGD([{"params": [w]}, {"params": [v], "lr": 0.3}], lr=0.1)
        sched = make(m, opt)
        lrs = [sched.get_last_lr()]
        for epoch in range(8):
            opt.step()
            sched.step()
            lrs.append(sched.get_last_lr())
            if epoch == manual_at:
                opt.param_groups[0]["lr"] = 0.05
        return (
            lrs,
            sched.last_epoch,
            [g["initial_lr"] for g in opt.param_groups],
            sched.base_lrs,
        )

    return fn


SCHEDULES = {
    "StepLR": _scheduled(lambda m, o: m.optim.lr_scheduler.StepLR(o, 3, gamma=0.5)),
    "ExponentialLR": _scheduled(
        lambda m, o: m.optim.lr_scheduler.ExponentialLR(o, 0.9)
    ),
    "CosineAnnealingLR past T_max": _scheduled(
        lambda m, o: m.optim.lr_scheduler.CosineAnnealingLR(o, T_max=3, eta_min=0.01)
    ),
    "MultiStepLR repeated milestone": _scheduled(
        lambda m, o: m.optim.lr_scheduler.MultiStepLR(o, [2, 2, 5], 0.1)
    ),
    "LambdaLR one lambda per group": _scheduled(
        lambda m, o: m.optim.lr_scheduler.LambdaLR(
            o, [lambda e: 0.9**e, lambda e: 1 / (1 + e)]
        )
    ),
    "StepLR after a manual lr change": _scheduled(
        lambda m, o: m.optim.lr_scheduler.StepLR(o, 2, gamma=0.5), manual_at=2
    ),
}


@pytest.mark.parametrize("fn", cases(SCHEDULES))
def test_lr_schedules_with_two_param_groups(fn):
    check(fn)


def test_resume_optimizer_and_scheduler_from_their_state_dicts():
    def fn(m):
        def make(w):
            opt = m.optim.SGD([w], lr=0.1, momentum=0.9)
            return opt, m.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

        def train(w, opt, sched, steps):
            for _ in range(steps):
                opt.zero_grad()
                (w * w).sum().backward()
                opt.step()
                sched.step()

        w = m.tensor([1.0, 2.0], requires_grad=True)
        opt, sched = make(w)
        train(w, opt, sched, 3)
        w2 = m.tensor(w.tolist(), requires_grad=True)
        opt2, sched2 = make(w2)
        opt2.load_state_dict(opt.state_dict())
        sched2.load_state_dict(sched.state_dict())
        train(w, opt, sched, 3)
        train(w2, opt2, sched2, 3)
        return w, w2, sched2.get_last_lr(), sched2.last_epoch

    check(fn)


# ---- training features a script would plausibly use, missing from the tape ----------


def _maximize(m):
    w = m.tensor([1.0, 2.0], requires_grad=True)
    opt = m.optim.SGD([w], lr=0.1, momentum=0.9, maximize=True)
    (w * w).sum().backward()
    opt.step()
    return w


def _add_param_group(m):
    w, v = m.tensor([1.0, 2.0], requires_grad=True), m.tensor([3.0], requires_grad=True)
    opt = m.optim.SGD([w], lr=0.1)
    opt.add_param_group({"params": [v], "lr": 0.01})
    (w.sum() + v.sum()).backward()
    opt.step()
    return w, v, [g["lr"] for g in opt.param_groups]


def _closure(m):
    w = m.tensor([1.0, -2.0], requires_grad=True)
    opt = m.optim.SGD([w], lr=0.1)

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    return opt.step(closure), w


def _plateau(m):
    w = m.tensor([1.0], requires_grad=True)
    opt = m.optim.SGD([w], lr=1.0)
    sched = m.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    for val_loss in [1.0, 0.9, 0.95, 0.97, 0.99]:
        sched.step(val_loss)
    return opt.param_groups[0]["lr"]


def _warmup(m, name, **kw):
    w = m.tensor([1.0], requires_grad=True)
    opt = m.optim.SGD([w], lr=1.0)
    sched = getattr(m.optim.lr_scheduler, name)(opt, **kw)
    lrs = []
    for _ in range(5):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr())
    return lrs


def _adagrad(m):
    w = m.tensor([1.0, -2.0], requires_grad=True)
    opt = m.optim.Adagrad([w], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
    return w


def _save_load(m):
    net = mlp(m)
    buffer = io.BytesIO()
    m.save(net.state_dict(), buffer)
    buffer.seek(0)
    fresh = m.nn.Sequential(m.nn.Linear(4, 6), m.nn.Tanh(), m.nn.Linear(6, 3))
    fresh.load_state_dict(m.load(buffer))
    return fresh.state_dict()


def _custom_function(m):
    class StraightThroughRound(m.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 0 + (x * 2).long().double() / 2

        @staticmethod
        def backward(ctx, grad):
            return grad

    x = m.tensor([0.3, 0.8, 1.6], requires_grad=True)
    y = StraightThroughRound.apply(x)
    (y * y).sum().backward()
    return y, x.grad


def _shuffled_minibatches(m):
    m.manual_seed(0)
    x, y = features(m), labels(m)
    perm = m.randperm(len(x))
    return sorted(perm.tolist()), tuple(x[perm[:4]].shape), y[perm].sum()


def _requires_grad_module(m):
    net = mlp(m)
    net[0].requires_grad_(False)
    return [p.requires_grad for p in net.parameters()]


def _forward_hook(m):
    net, seen = mlp(m), []
    net[1].register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    net(features(m, 2))
    return seen


MISSING_TRAINING = {
    "SGD(maximize=True)": _maximize,
    "Optimizer.add_param_group": _add_param_group,
    "Optimizer.step(closure)": _closure,
    "ReduceLROnPlateau": _plateau,
    "LinearLR warmup": lambda m: _warmup(
        m, "LinearLR", start_factor=0.25, total_iters=3
    ),
    "OneCycleLR": lambda m: _warmup(m, "OneCycleLR", max_lr=0.5, total_steps=6),
    "Adagrad": _adagrad,
    "torch.save / torch.load": _save_load,
    "autograd.Function": _custom_function,
    "randperm for shuffling": _shuffled_minibatches,
    "Module.requires_grad_": _requires_grad_module,
    "Module.register_forward_hook": _forward_hook,
    "Module.named_children": lambda m: [n for n, _ in mlp(m).named_children()],
    "Module.add_module": lambda m: [n for n, _ in _add_module(m).named_parameters()],
    "Sequential.append": lambda m: len(
        m.nn.Sequential(m.nn.Linear(1, 1)).append(m.nn.ReLU())
    ),
}


def _add_module(m):
    net = m.nn.Module()
    net.add_module("fc", m.nn.Linear(2, 2))
    return net


@pytest.mark.parametrize("fn", cases(MISSING_TRAINING))
def test_missing_training_features(fn):
    check(fn)


# ---- layers and losses missing from the tape -----------------------------------------


def _copy_weight(module, m, name="weight", seed=0, scale=0.5):
    with m.no_grad():
        p = getattr(module, name)
        p.copy_(m.tensor(scale * data(*p.shape, seed=seed)))
    return module


def _embedding_bag_of_words(m):
    emb = _copy_weight(m.nn.Embedding(10, 4), m)
    head = set_linear(m.nn.Linear(4, 3), m, seed=2)
    tokens = m.tensor([[1, 2, 2, 0], [9, 3, 1, 1]])
    logits = head(emb(tokens).mean(1))
    loss = m.nn.functional.cross_entropy(logits, m.tensor([0, 2]))
    loss.backward()
    return loss, emb.weight.grad, head.weight.grad


def _layer_norm(m):
    ln = m.nn.LayerNorm(4)
    _copy_weight(ln, m, seed=1, scale=1.0)
    _copy_weight(ln, m, "bias", seed=2)
    x = m.tensor(data(3, 4), requires_grad=True)
    y = ln(x)
    (y * weights(y, m)).sum().backward()
    return y, x.grad, ln.weight.grad, ln.bias.grad


def _batch_norm(m):
    bn = m.nn.BatchNorm1d(3, momentum=0.2)
    x = m.tensor(data(5, 3), requires_grad=True)
    y = bn(x)
    (y * weights(y, m)).sum().backward()
    bn.eval()
    return y, x.grad, bn.running_mean, bn.running_var, bn(x[:2]), list(bn.state_dict())


def _module_dict(m):
    heads = m.nn.ModuleDict(
        {"a": set_linear(m.nn.Linear(2, 1), m), "b": set_linear(m.nn.Linear(2, 3), m)}
    )
    x = m.ones(1, 2)
    return [n for n, _ in heads.named_parameters()], heads["b"](x), list(heads.keys())


def _loss_case(make, target=None):
    def fn(m):
        x = m.tensor(data(5, 4), requires_grad=True)
        t = m.tensor(data(5, 4, seed=1)) if target is None else target(m, x)
        loss = make(m)(x, t)
        loss.backward()
        return loss, x.grad

    return fn


def _binary_targets(m, x):
    return (x.detach() > 0).double()


MISSING_LAYERS = {
    "nn.Embedding": _embedding_bag_of_words,
    "nn.LayerNorm": _layer_norm,
    "nn.BatchNorm1d": _batch_norm,
    "nn.ModuleDict": _module_dict,
    "nn.Softplus": values_and_grad(lambda m, x: m.nn.Softplus(beta=2.0)(x)),
    "nn.ELU": values_and_grad(lambda m, x: m.nn.ELU(alpha=0.5)(x)),
    "BCEWithLogitsLoss(pos_weight=)": _loss_case(
        lambda m: m.nn.BCEWithLogitsLoss(pos_weight=m.tensor([1.0, 2.0, 0.5, 3.0])),
        _binary_targets,
    ),
    "nn.BCELoss after sigmoid": _loss_case(
        lambda m: lambda x, t: m.nn.BCELoss()(x.sigmoid(), t), _binary_targets
    ),
    "nn.L1Loss": _loss_case(lambda m: m.nn.L1Loss()),
    "nn.SmoothL1Loss": _loss_case(lambda m: m.nn.SmoothL1Loss(beta=0.5)),
    "nn.HuberLoss": _loss_case(lambda m: m.nn.HuberLoss(delta=0.5)),
    "F.kl_div": _loss_case(
        lambda m: lambda x, t: m.nn.functional.kl_div(
            x.log_softmax(1), t.softmax(1), reduction="batchmean"
        )
    ),
}


@pytest.mark.parametrize("fn", cases(MISSING_LAYERS))
def test_missing_layers_and_losses(fn):
    check(fn)


# ---- the nn.Module API --------------------------------------------------------------


def test_named_parameters_flags_and_state_dict_key_types():
    def fn(m):
        net = mlp(m)
        return (
            [
                (n, tuple(p.shape), p.requires_grad, p.is_leaf)
                for n, p in net.named_parameters()
            ],
            [type(k).__name__ for k in net.state_dict()],
            [v.requires_grad for v in net.state_dict().values()],
        )

    check(fn)


def test_state_dict_round_trip_into_a_fresh_model_and_non_strict_load():
    def fn(m):
        net = mlp(m)
        fresh = m.nn.Sequential(m.nn.Linear(4, 6), m.nn.Tanh(), m.nn.Linear(6, 3))
        result = fresh.load_state_dict(net.state_dict())
        partial = {k: v for k, v in net.state_dict().items() if k != "2.bias"}
        partial["extra"] = m.zeros(1)
        loose = mlp(m).load_state_dict(partial, strict=False)
        return (
            fresh(features(m, 2)),
            result.missing_keys,
            result.unexpected_keys,
            loose.missing_keys,
            loose.unexpected_keys,
        )

    check(fn)


def test_counting_parameters_children_and_named_modules():
    def fn(m):
        net = m.nn.Sequential(mlp(m), m.nn.Sequential(m.nn.Linear(3, 2), m.nn.ReLU()))
        return (
            sum(p.numel() for p in net.parameters() if p.requires_grad),
            [type(c).__name__ for c in net.children()],
            [n for n, _ in net.named_modules()],
            [n for n, _ in net.named_parameters(prefix="model")],
            [n for n, _ in net[1].named_parameters(recurse=False)],
        )

    check(fn)


def test_deepcopy_of_a_model_is_independent_and_keeps_parameter_types():
    def fn(m):
        net = mlp(m)
        twin = copy.deepcopy(net)
        with m.no_grad():
            for p in twin.parameters():
                p.mul_(0.5)
        return (
            net.state_dict(),
            twin.state_dict(),
            all(isinstance(p, m.nn.Parameter) for p in twin.parameters()),
        )

    check(fn)


def test_train_eval_flags_and_module_zero_grad_modes():
    def fn(m):
        net = mlp(m)
        x = features(m, 3)
        net(x).sum().backward()
        net.zero_grad()
        after_none = [p.grad for p in net.parameters()]
        net(x).sum().backward()
        net.zero_grad(set_to_none=False)
        after_zeros = [p.grad for p in net.parameters()]
        returned = net.eval() is net
        flags = [mod.training for mod in net.modules()]
        net.train()
        return after_none, after_zeros, returned, flags, net[1].training

    check(fn)


def test_sequential_from_an_ordered_dict_by_name_index_and_iteration():
    def fn(m):
        net = m.nn.Sequential(
            OrderedDict(
                [
                    ("fc", set_linear(m.nn.Linear(2, 2), m)),
                    ("act", m.nn.ReLU()),
                    ("out", set_linear(m.nn.Linear(2, 1), m, seed=3)),
                ]
            )
        )
        return (
            net.fc.weight,
            type(net[-1]).__name__,
            len(net),
            [type(layer).__name__ for layer in net],
            list(net.state_dict()),
            net(m.ones(3, 2)),
        )

    check(fn)


def test_plain_tensor_attributes_are_not_registered():
    def fn(m):
        class Net(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = m.nn.Parameter(m.tensor([1.0, 2.0]))
                self.offset = m.tensor([5.0])  # a plain tensor: not module state

            def forward(self, x):
                return (self.w * x).sum() + self.offset

        net = Net()
        return (
            [n for n, _ in net.named_parameters()],
            list(net.state_dict()),
            net(m.ones(2)),
        )

    check(fn)


def test_parameter_from_a_computed_tensor_and_frozen_parameters():
    def fn(m):
        lin = set_linear(m.nn.Linear(2, 1), m)
        p = m.nn.Parameter(lin.weight * 2)
        q = m.nn.Parameter(m.ones(2), requires_grad=False)
        for param in lin.parameters():
            param.requires_grad = False
        out = lin(m.ones(1, 2))
        return p.is_leaf, p.requires_grad, q.requires_grad, out.requires_grad, p

    check(fn)


def test_no_grad_decorated_predict_method_and_flatten_front_end():
    def fn(m):
        class Net(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.body = m.nn.Sequential(
                    m.nn.Flatten(), set_linear(m.nn.Linear(6, 3), m)
                )

            @m.no_grad()
            def predict(self, x):
                return self.body(x).argmax(1)

            def forward(self, x):
                return self.body(x)

        net, x = Net(), m.tensor(data(4, 2, 3))
        out = net(x)
        out.sum().backward()
        return net.predict(x), out, net.body[1].weight.grad

    check(fn)


def test_gradient_clipping_by_value_and_by_l1_and_inf_norms():
    def fn(m):
        a = m.tensor([1.0, -2.0, 3.0], requires_grad=True)
        b = m.tensor([[0.5]], requires_grad=True)
        ((a * m.tensor([5.0, -0.2, -7.0])).sum() + (b * 4).sum()).backward()
        n1 = m.nn.utils.clip_grad_norm_([a, b], 2.0, norm_type=1)
        n_inf = m.nn.utils.clip_grad_norm_([a, b], 2.0, norm_type=float("inf"))
        m.nn.utils.clip_grad_value_([a, b], 0.3)
        return n1, n_inf, a.grad, b.grad

    check(fn)


def test_init_gains_and_bounds():
    def fn(m):
        m.manual_seed(0)
        w = m.nn.init.xavier_uniform_(m.empty(200, 100))
        v = m.nn.init.kaiming_normal_(m.empty(400, 50), nonlinearity="relu")
        gains = [m.nn.init.calculate_gain(n) for n in ("relu", "tanh")]
        gains.append(m.nn.init.calculate_gain("leaky_relu", 0.2))
        return gains, bool(w.abs().max() <= (6 / 300) ** 0.5), round(v.std().item(), 1)

    check(fn)


# ---- autograd ------------------------------------------------------------------------


def _retain_grad(m):
    x = m.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * 2
    h.retain_grad()
    y = (h**2).sum()
    y.backward()
    return h.grad, x.grad, h.is_leaf, h.retains_grad, y.grad_fn.name()


def _accumulate_over_graphs(m):
    w = m.tensor([1.0, 2.0], requires_grad=True)
    y = (w * w).sum()
    y.backward(retain_graph=True)
    y.backward()
    for i in range(2):
        (w * (i + 1)).pow(2).sum().backward()
    return w.grad


def _no_grad_then_requires_grad(m):
    x = m.tensor([1.0, 2.0], requires_grad=True)
    with m.no_grad():
        y = x * 2
    y.requires_grad_()
    (y * x).sum().backward()
    return y.requires_grad, y.is_leaf, y.grad, x.grad


def _detach_shares_memory(m):
    x = m.tensor([1.0, 2.0], requires_grad=True)
    d = x.detach()
    d[0] = 5.0
    return x, d, d.requires_grad


def _autograd_grad_variants(m):
    x = m.tensor([0.5, 1.5], requires_grad=True)
    w = m.tensor([2.0], requires_grad=True)
    first = m.autograd.grad((x.sin() * x).sum(), x, retain_graph=True)
    both = m.autograd.grad([x.sum(), (x * x).sum()], [x])
    unused = m.autograd.grad((x * x).sum(), [x, w], allow_unused=True)
    weighted = m.autograd.grad((x * x).sum(), x, grad_outputs=m.tensor(2.0))
    return first, both, unused, weighted, x.grad


def _autograd_grad_of_an_intermediate(m):
    x = m.tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    return m.autograd.grad((h * h).sum(), h)


def _hook_changes_then_removed(m):
    x = m.tensor([0.5, 1.5], requires_grad=True)
    y = x.exp()
    handle = y.register_hook(lambda g: g * 2)
    y.sum().backward(retain_graph=True)
    first = x.grad.clone()
    handle.remove()
    x.grad = None
    y.sum().backward()
    return first, x.grad


def _hook_clamps_leaf_grad(m):
    x = m.tensor([1.0, -3.0, 0.5], requires_grad=True)
    x.register_hook(lambda g: g.clamp(-1, 1))
    (x * m.tensor([5.0, -5.0, 0.5])).sum().backward()
    return x.grad


def _backward_with_gradient(m):
    x = m.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x @ x
    y.backward(m.ones_like(y))
    return x.grad


def _preset_grad_accumulates(m):
    x = m.tensor([1.0, 2.0], requires_grad=True)
    x.grad = m.tensor([10.0, 10.0])
    (x * x).sum().backward()
    return x.grad


def _backward_inputs_non_leaf(m):
    x = m.tensor([1.0, 2.0], requires_grad=True)
    h = x.exp()
    (h * 3).sum().backward(inputs=[h])
    return h.grad, x.grad


def _grad_modes(m):
    @m.no_grad()
    def doubled(t):
        return t * 2

    x = m.ones(2, requires_grad=True)
    with m.no_grad():
        with m.enable_grad():
            inner = x * 2
        outer = x * 2
    with m.set_grad_enabled(False):
        off = x * 3
    return (
        doubled(x).requires_grad,
        inner.requires_grad,
        outer.requires_grad,
        off.requires_grad,
        m.is_grad_enabled(),
    )


def _where_nan_trap(m):
    """The classic: where() picks 0, but sqrt's nan gradient still leaks through."""
    x = m.tensor([-1.0, 4.0], requires_grad=True)
    y = m.where(x > 0, x.sqrt(), m.zeros_like(x))
    y.sum().backward()
    return y, x.grad


def _where_safe(m):
    x = m.tensor([-1.0, 4.0], requires_grad=True)
    safe = m.where(x > 0, x, m.ones_like(x))
    y = m.where(x > 0, safe.sqrt(), m.zeros_like(x))
    y.sum().backward()
    return y, x.grad


def _duplicate_index_iadd(m):
    x = m.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 1
    y[[0, 0]] += 1  # index_put_ without accumulate: +1 once
    (y * m.tensor([1.0, 2.0, 3.0])).sum().backward()
    return y, x.grad


def _std_of_one_element(m):
    x = m.tensor([[2.0], [3.0]], requires_grad=True)
    s = x.std(1)
    s.sum().backward()
    return s, x.grad


def _masked_log_softmax(m):
    """Action masking: disallowed logits set to -inf before log_softmax."""
    x = m.tensor(data(2, 4), requires_grad=True)
    allowed = m.tensor([[True, False, True, True], [False, True, True, False]])
    logp = x.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    loss = -(logp.masked_fill(~allowed, 0.0) * logp.exp()).sum()
    loss.backward()
    return logp, loss, x.grad


AUTOGRAD = {
    "retain_grad on an intermediate": _retain_grad,
    "accumulation over retained and fresh graphs": _accumulate_over_graphs,
    "no_grad result made to require grad": _no_grad_then_requires_grad,
    "detach shares memory": _detach_shares_memory,
    "autograd.grad variants": _autograd_grad_variants,
    "autograd.grad of an intermediate": _autograd_grad_of_an_intermediate,
    "hook changes the grad, then removed": _hook_changes_then_removed,
    "hook clamps a leaf's grad": _hook_clamps_leaf_grad,
    "backward(gradient) of a matrix": _backward_with_gradient,
    "grad set by hand accumulates": _preset_grad_accumulates,
    "backward(inputs=[non-leaf])": _backward_inputs_non_leaf,
    "grad modes nested": _grad_modes,
    "where nan-gradient trap": _where_nan_trap,
    "where with a safe branch": _where_safe,
    "x[[0, 0]] += 1 on a non-leaf": _duplicate_index_iadd,
    "std of one element (nan)": _std_of_one_element,
    "masked log_softmax with -inf": _masked_log_softmax,
}


@pytest.mark.parametrize("fn", cases(AUTOGRAD))
def test_autograd_behaviour(fn):
    check(fn)


def _copy_slices_name(m):
    x = m.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.clone()
    y[1] = 0.0
    return y.grad_fn.name()


def _next_functions(m):
    x = m.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 2).exp()
    fn, _ = y.grad_fn.next_functions[0]
    return fn.name(), type(fn.next_functions[0][0]).__name__


def _autograd_backward(m):
    x = m.tensor([1.0, 2.0], requires_grad=True)
    m.autograd.backward([(x * x).sum(), (x * 3).sum()])
    return x.grad


def _mean_over_empty_dim_list(m):
    x = m.tensor([[1.0, 2.0], [3.0, 4.0]])
    return x.mean(dim=[]), x.sum(dim=[])


MISSING_AUTOGRAD = {
    "CopySlices grad_fn.name()": _copy_slices_name,
    "grad_fn.next_functions": _next_functions,
    "torch.autograd.backward(tensors)": _autograd_backward,
    "mean/sum over dim=[]": _mean_over_empty_dim_list,
}


@pytest.mark.parametrize("fn", cases(MISSING_AUTOGRAD))
def test_autograd_differences(fn):
    check(fn)


def test_causal_attention_with_a_fully_masked_row_warns_nothing():
    def fn(m):
        scores = m.tensor(data(3, 3), requires_grad=True)
        mask = m.tensor([[True, True, True], [False, True, True], [False, False, True]])
        return scores.masked_fill(mask, float("-inf")).softmax(-1)

    check(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn(torch)
        fn(tape)


# ---- errors for common mistakes: the same type and message ---------------------------

SAME_MESSAGES = {
    "backward twice": lambda m: [
        y.backward() for y in [m.ones(2, requires_grad=True).exp().sum()] * 2
    ],
    "in-place on a leaf that requires grad": lambda m: m.ones(
        2, requires_grad=True
    ).add_(1),
    "matmul shape mismatch": lambda m: m.ones(2, 3) @ m.ones(2, 3),
    "Linear on the wrong number of features": lambda m: m.nn.Linear(3, 2)(m.ones(4, 5)),
    "view of a transposed tensor": lambda m: m.ones(2, 3).t().view(6),
    "cross_entropy batch mismatch": lambda m: m.nn.functional.cross_entropy(
        m.ones(3, 4), m.tensor([0, 1])
    ),
    "cross_entropy target out of bounds": lambda m: m.nn.functional.cross_entropy(
        m.ones(3, 4), m.tensor([0, 1, 4])
    ),
    "optimizer given a non-leaf": lambda m: m.optim.SGD(
        [m.ones(2, requires_grad=True) * 2], lr=0.1
    ),
}


@pytest.mark.parametrize("fn", cases(SAME_MESSAGES))
def test_common_mistakes_raise_torchs_error_and_message(fn):
    check_message(fn)


ERROR_TYPES = {
    "cross_entropy with int32 targets": lambda m: m.nn.functional.cross_entropy(
        m.ones(3, 4), m.tensor([0, 1, 2], dtype=m.int32)
    ),
    "BCEWithLogitsLoss with int64 labels": lambda m: m.nn.BCEWithLogitsLoss()(
        m.ones(3), m.tensor([0, 1, 1])
    ),
    "mse_loss of int tensors": lambda m: m.nn.functional.mse_loss(
        m.tensor([1, 2]), m.tensor([1, 3])
    ),
    "int // 0": lambda m: m.tensor([1, 2]) // m.tensor([0, 1]),
    "gather with a float index": lambda m: m.ones(2, 3).gather(
        1, m.tensor([[0.0], [1.0]])
    ),
    "gather out of range": lambda m: m.ones(2, 3).gather(1, m.tensor([[3], [1]])),
    "chunk(0)": lambda m: m.ones(3).chunk(0),
    "arange with step 0": lambda m: m.arange(0, 5, 0),
    "zeros of a negative size": lambda m: m.zeros(-1),
    "full with an int size": lambda m: m.full(2, 1.0),
    "tensor of strings": lambda m: m.tensor(["a"]),
}


@pytest.mark.parametrize("fn", cases(ERROR_TYPES))
def test_misuse_raises_torchs_error_type(fn):
    check_raises(fn)


MESSAGES = {
    "load_state_dict size mismatch": lambda m: m.nn.Linear(2, 2).load_state_dict(
        {"weight": m.ones(3, 2), "bias": m.ones(2)}
    ),
    "cat of mismatched shapes": lambda m: m.cat([m.ones(2, 3), m.ones(3, 2)]),
    "index out of range": lambda m: m.ones(2, 3)[2],
    "transpose of a dim out of range": lambda m: m.ones(2, 3).transpose(0, 2),
    "where with a non-bool condition": lambda m: m.where(
        m.tensor([1, 0]), m.ones(2), m.zeros(2)
    ),
}


@pytest.mark.parametrize("fn", cases(MESSAGES))
def test_error_messages(fn):
    check_message(fn)


# ---- ops: values and gradients --------------------------------------------------------

OPS = {
    "standardize with keepdim": lambda m, x: (x - x.mean(-1, keepdim=True))
    / x.std(-1, keepdim=True),
    "manual layer norm": lambda m, x: (x - x.mean(-1, keepdim=True))
    / (x.var(-1, keepdim=True, unbiased=False) + 1e-5).sqrt(),
    "scaled dot-product attention": lambda m, x: (x @ x.transpose(-1, -2) / 2.0)
    .softmax(-1)
    .matmul(x),
    "l2 normalize by hand": lambda m, x: x / x.pow(2).sum(-1, keepdim=True).sqrt(),
    "causal mask fill then softmax": lambda m, x: x[0, :3, :3]
    .masked_fill(m.arange(3)[None, :] > m.arange(3)[:, None], float("-inf"))
    .softmax(-1),
    "max(keepdim).values - x": lambda m, x: x.max(dim=-1, keepdim=True).values - x,
    "log-probabilities by logsumexp": lambda m, x: x - x.logsumexp(-1, keepdim=True),
    "permute then reshape": lambda m, x: x.permute(0, 2, 1).reshape(2, -1),
    "split reversed and cat": lambda m, x: m.cat(x.split(2, dim=-1)[::-1], dim=-1),
    "maximum with a broadcast mean": lambda m, x: m.maximum(x, x.mean(0)),
    "outer product by broadcasting": lambda m, x: x[..., None] * x[:, :, None, :],
    "subtract a keepdim sum": lambda m, x: x - x.sum((1, 2), keepdim=True),
    "elu by hand with where": lambda m, x: m.where(x > 0, x, x.exp() - 1),
    "last time step": lambda m, x: x[:, -1] * 2 + x[:, -1].sum(),
    "picked logits x[arange, y]": lambda m, x: x[0][m.arange(3), m.tensor([3, 0, 3])],
    "embedding by indexing with repeats": lambda m, x: x[0][m.tensor([[0, 2], [2, 2]])],
    "expand as a repeat": lambda m, x: x[:, :1].expand(-1, 3, -1) * x,
    "repeat along a new dim": lambda m, x: x.unsqueeze(0).repeat(2, 1, 1, 1).sum(0),
}


@pytest.mark.parametrize("name", OPS)
def test_ops_values_and_grads(name):
    check(values_and_grad(OPS[name]))


def _bool_results(fn):
    """fn(m, t) on a fixed float tensor; for ops whose result is not differentiable."""
    return lambda m: fn(m, m.tensor([[0.5, -1.0, float("nan")], [2.0, 0.0, -0.5]]))


def _scatter_index(m):
    return m.tensor(np.broadcast_to(np.array([0, 4, 0])[None, :, None], (2, 3, 4)))


MISSING_OPS = {
    "index_select": values_and_grad(
        lambda m, x: x.index_select(1, m.tensor([2, 0, 2]))
    ),
    "scatter_add": values_and_grad(
        lambda m, x: m.zeros(2, 5, 4).scatter_add(1, _scatter_index(m), x)
    ),
    "index_add": values_and_grad(
        lambda m, x: m.zeros(4, 3, 4).index_add(0, m.tensor([3, 3]), x)
    ),
    "cumprod": values_and_grad(lambda m, x: x.cumprod(-1)),
    "sort": values_and_grad(lambda m, x: x.sort(dim=-1, descending=True).values),
    "topk": values_and_grad(lambda m, x: x.topk(2, dim=-1).values),
    "argsort": values_and_grad(lambda m, x: x.gather(-1, x.argsort(-1))),
    "einsum": values_and_grad(lambda m, x: m.einsum("bij,bkj->bik", x, x)),
    "bmm": values_and_grad(lambda m, x: m.bmm(x, x.transpose(1, 2))),
    "Tensor.norm": values_and_grad(lambda m, x: x.norm(dim=-1) + x.norm(p=1, dim=-1)),
    "torch.linalg.norm": values_and_grad(lambda m, x: m.linalg.norm(x, dim=-1)),
    "F.normalize": values_and_grad(lambda m, x: m.nn.functional.normalize(x, dim=-1)),
    "F.cosine_similarity": values_and_grad(
        lambda m, x: m.nn.functional.cosine_similarity(x, x.flip(0), dim=-1)
    ),
    "log1p": values_and_grad(lambda m, x: x.abs().log1p()),
    "square": values_and_grad(lambda m, x: x.square()),
    "rsqrt": values_and_grad(lambda m, x: (x * x + 1).rsqrt()),
    "floor and round": values_and_grad(lambda m, x: x.floor() + (x * 3).round() + x),
    "Tensor.add/mul methods": values_and_grad(
        lambda m, x: x.add(1).mul(x).sub(x, alpha=2)
    ),
    "expand_as": values_and_grad(lambda m, x: x[:, :1].expand_as(x) * x),
    "tril/triu": values_and_grad(lambda m, x: x.tril() + m.triu(x, diagonal=1) * 2),
    "masked_select": values_and_grad(lambda m, x: x.masked_select(x > 0)),
    "any/all": _bool_results(
        lambda m, t: [(t > 0).any(), (t > 0).all(dim=1), t.isnan()]
    ),
    "where(condition) alone": _bool_results(lambda m, t: m.where(t > 0)),
}


@pytest.mark.parametrize("fn", cases(MISSING_OPS))
def test_missing_ops(fn):
    check(fn)


# ---- grad_fn names -------------------------------------------------------------------


def _grad_fn_name(op):
    def fn(m):
        x = m.tensor(data(2, 3) + 2, requires_grad=True)
        return op(m, x).grad_fn.name()

    return fn


GRAD_FN_NAMES = {
    "x.var()": lambda m, x: x.var(),
    "x.std(1)": lambda m, x: x.std(1),
    "x.prod(1)": lambda m, x: x.prod(1),
    "x.cumsum(0)": lambda m, x: x.cumsum(0),
    "x.logsumexp(1)": lambda m, x: x.logsumexp(1),
    "1 - x": lambda m, x: 1 - x,
    "2 / x": lambda m, x: 2 / x,
    "2 ** x": lambda m, x: 2**x,
    "x.clamp_min(0)": lambda m, x: x.clamp_min(0),
    "reshape of a transposed tensor": lambda m, x: x.t().reshape(-1),
    "x.split(1, 1)[0]": lambda m, x: x.split(1, 1)[0],
    "x.unbind(0)[0]": lambda m, x: x.unbind(0)[0],
}


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(
            _grad_fn_name(v[0] if isinstance(v, tuple) else v),
            marks=v[1] if isinstance(v, tuple) else (),
            id=k,
        )
        for k, v in GRAD_FN_NAMES.items()
    ],
)
def test_grad_fn_names(fn):
    check(fn)


# ---- integer and bool tensors --------------------------------------------------------

INTEGERS = {
    "floor division of negatives": lambda m: m.tensor([-7, 7, -8])
    // m.tensor([2, -2, 3]),
    "remainder of negatives": lambda m: m.tensor([-7, 7, -8]) % m.tensor([2, -2, 3]),
    "int ** 2 and ** 0.5": lambda m: [m.tensor([2, 3]) ** 2, m.tensor([2, 3]) ** 0.5],
    "int32 + 0-d int64": lambda m: m.tensor([1, 2], dtype=m.int32) + m.tensor(3),
    "int32 * python float": lambda m: m.tensor([1, 2], dtype=m.int32) * 1.5,
    "float32 * int64": lambda m: m.ones(2, dtype=m.float32) * m.tensor([3, 4]),
    "bool sum over a dim": lambda m: (m.arange(6).reshape(2, 3) > 2).sum(1),
    "bool + bool, bool * int": lambda m: [
        m.tensor([True, False]) + m.tensor([True, True]),
        m.tensor([True, False]) * 3,
    ],
    "bool & | ^": lambda m: [
        m.tensor([True, False]) & m.tensor([True, True]),
        m.tensor([True, False]) | m.tensor([False, False]),
        m.tensor([True, False]) ^ m.tensor([True, True]),
    ],
    "int bitwise and ~": lambda m: [
        m.tensor([6, 3]) & m.tensor([3, 1]),
        m.tensor([6, 3]) | 1,
        ~m.tensor([0, 5]),
    ],
    "int max, argmax, max(0)": lambda m: [
        m.tensor([[1, 5], [7, 2]]).max(),
        m.tensor([[1, 5], [7, 2]]).argmax(),
        tuple(m.tensor([[1, 5], [7, 2]]).max(0)),
    ],
    "int clamp, sum, prod, cumsum": lambda m: [
        m.tensor([-3, 0, 9]).clamp(0, 5),
        m.tensor([2, 3, 4]).sum(),
        m.tensor([2, 3, 4]).prod(),
        m.tensor([2, 3, 4]).cumsum(0),
    ],
    "where of ints with scalars": lambda m: [
        m.where(m.tensor([True, False]), m.tensor([1, 2]), 0),
        m.where(m.tensor([True, False]), m.tensor([1, 2]), 0.5),
    ],
    "int masked_fill with a float value": lambda m: m.tensor([1, 2, 3]).masked_fill(
        m.tensor([True, False, True]), 2.7
    ),
    "python scalars on the left": lambda m: [
        1 / m.tensor([2, 4]),
        10 - m.tensor([2, 4]),
        2 ** m.tensor([2, 4]),
        2.0 ** m.tensor([2, 4]),
    ],
    "accuracy idiom": lambda m: (
        m.tensor([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]]).argmax(1) == m.tensor([1, 0, 0])
    )
    .float()
    .mean(),
}


@pytest.mark.parametrize("fn", cases(INTEGERS))
def test_integer_and_bool_ops(fn):
    check(fn)


# ---- creation and conversion ---------------------------------------------------------

CREATION = {
    "zeros_like keeps float32": lambda m: m.zeros_like(m.ones(2, dtype=m.float32)),
    "full_like of ints with a float": lambda m: m.full_like(m.tensor([1, 2]), 2.5),
    "full_like requires grad": lambda m: m.full_like(
        m.ones(2), 3.0, requires_grad=True
    ),
    "eye(n, m) and int eye": lambda m: [m.eye(2, 3), m.eye(3, dtype=m.int64)],
    "linspace float32 and int ends": lambda m: [
        m.linspace(0, 1, 5, dtype=m.float32),
        m.linspace(0, 10, steps=6),
    ],
    "arange float steps": lambda m: [m.arange(1.0, 2.0, 0.3), m.arange(1, -1, -0.5)],
    "arange int32 and float64 from ints": lambda m: [
        m.arange(3, dtype=m.int32),
        m.arange(0, 4, dtype=m.float64),
    ],
    "tensor of a numpy float32 scalar": lambda m: m.tensor(np.float32(2.5)),
    "random shapes under manual_seed": lambda m: (
        m.manual_seed(0),
        tuple(m.randn(3, 4).shape),
        tuple(m.rand(2, 5).shape),
        tuple(m.randint(0, 10, (3, 2)).shape),
        m.randint(3, (50,)).max().item() < 3,
        m.randn(2, requires_grad=True).requires_grad,
    )[1:],
}


@pytest.mark.parametrize("fn", cases(CREATION))
def test_creation(fn):
    check(fn)


CONVERSIONS = {
    "from_numpy shares memory": lambda m: (
        lambda a: (m.from_numpy(a).add_(1), a.tolist())[1]
    )(np.zeros(2)),
    "numpy() shares memory": lambda m: (
        lambda t: (t.numpy().__setitem__(0, 5.0), t.tolist())[1]
    )(m.zeros(2)),
    "tolist and item of float32": lambda m: [
        m.tensor([0.1], dtype=m.float32).tolist(),
        m.tensor(0.1, dtype=m.float32).item(),
    ],
    "tolist of ints and bools": lambda m: [
        m.tensor([[1, 2]]).tolist(),
        m.tensor([True]).tolist(),
    ],
    "float() and int() truncate": lambda m: [
        float(m.tensor(2.5)),
        int(m.tensor(3.9)),
        int(m.tensor(-3.9)),
    ],
    "dtype comparisons": lambda m: [
        m.ones(1).dtype == m.float64,
        m.tensor([1]).dtype == m.long,
        m.tensor([True]).dtype == m.bool,
        m.ones(1, dtype=m.float32).dtype == m.float,
    ],
    "shape comparisons": lambda m: [
        m.ones(2, 3).shape == (2, 3),
        m.ones(2, 3).size() == (2, 3),
        list(m.ones(2, 3).shape),
        m.ones(2, 3).shape[-1],
    ],
    "to(other) and to(device, dtype)": lambda m: [
        m.tensor([1, 2]).to(m.ones(1)),
        m.tensor([1, 2]).to("cpu", m.float32),
        m.tensor([1, 2]).to(dtype=m.float32),
    ],
}


@pytest.mark.parametrize("fn", cases(CONVERSIONS))
def test_conversions(fn):
    check(fn)


MISSING_CREATION = {
    "zeros(size=...)": lambda m: m.zeros(size=(2, 3)),
    "ones(device='cpu')": lambda m: m.ones(2, device="cpu"),
    "Tensor.device": lambda m: m.zeros(2, device=m.ones(1).device),
    "empty_like / randn_like": lambda m: [
        m.empty_like(m.ones(2, 3)).shape,
        m.randn_like(m.ones(2)).shape,
    ],
    "as_tensor": lambda m: m.as_tensor([1, 2]),
    "new_zeros / new_tensor": lambda m: [
        m.ones(2, dtype=m.float32).new_zeros(3),
        m.ones(2, dtype=m.float32).new_tensor([1, 2]),
    ],
    "int() and bool() casts": lambda m: [
        m.tensor([1.7, -1.7]).int(),
        m.tensor([0.0, 2.0]).bool(),
    ],
    "type(dtype) and type_as": lambda m: [
        m.tensor([1, 2]).type(m.float32),
        m.tensor([1, 2]).type_as(m.ones(1)),
    ],
    "uint8 masks": lambda m: m.tensor([1, 0, 1], dtype=m.uint8).sum(),
}


@pytest.mark.parametrize("fn", cases(MISSING_CREATION))
def test_missing_creation_and_conversion(fn):
    check(fn)


# ---- gradients of features added after round 8, against torch -------------------------

ADDED_GRADS = {
    "cumprod with zeros": lambda m, x: (x * (x.abs() > 0.5)).cumprod(1),
    "argsort and topk(largest=False)": lambda m, x: x.topk(3, dim=1, largest=False)[0]
    + x.gather(1, x.argsort(1, descending=True))[:, :3],
    "norm p=inf, p=0.5, p=3 and of zeros": lambda m, x: x.norm(p=float("inf"), dim=-1)
    + x.norm(p=0.5, dim=(0, 2)).sum()
    + x.norm(p=3)
    + (x * (x > 5)).norm(dim=-1),
    "reciprocal, expm1, ceil, trunc": lambda m, x: x.reciprocal()
    + x.expm1()
    + x.ceil()
    + x.trunc(),
    "rsub, rdiv, rpow": lambda m, x: (1 - x) * (2 / x) + 2**x,
    "clamp_min/max with tensor bounds": lambda m, x: x.clamp_min(x.mean(0))
    + x.clamp_max(x[0].detach()),
    "scatter_add and index_add onto a tensor that requires grad": lambda m, x: (
        x[:, :1].repeat(1, 5, 1).scatter_add(1, _scatter_index(m), x)
        + x.index_add(0, m.tensor([1, 1]), x, alpha=-2)[:, :1]
    ),
    "div rounding modes": lambda m, x: x.div(0.3, rounding_mode="floor")
    + x.div(0.3, rounding_mode="trunc")
    + m.sub(x, 1, alpha=3),
    "elu inplace on a non-leaf, softplus": lambda m, x: m.nn.functional.elu(
        x * 2, inplace=True
    )
    + m.nn.functional.softplus(x, beta=0.5, threshold=1.0),
    "layer_norm over two dims": lambda m, x: m.nn.functional.layer_norm(x, (3, 4)),
    "cosine_similarity broadcast": lambda m, x: m.nn.functional.cosine_similarity(
        x, x[:1] ** 2, dim=-1
    ),
    "normalize p=1": lambda m, x: m.nn.functional.normalize(x, p=1, dim=0),
}


@pytest.mark.parametrize("name", ADDED_GRADS)
def test_added_ops_values_and_grads(name):
    check(values_and_grad(ADDED_GRADS[name]))


def _loss_and_target_grads(make):
    """A loss of (x, t), both requiring grad, and both gradients."""

    def fn(m):
        x = m.tensor(data(3, 4), requires_grad=True)
        t = m.tensor(np.abs(data(3, 4, seed=1)) / 3, requires_grad=True)
        loss = make(m, x, t)
        loss.backward()
        return loss, x.grad, t.grad

    return fn


ADDED_LOSSES = {
    "BCEWithLogits weight and pos_weight": lambda m, x, t: (
        m.nn.functional.binary_cross_entropy_with_logits(
            x,
            t,
            weight=m.tensor([1.0, 0.5, 2.0, 1.0]),
            pos_weight=m.tensor([3.0, 1.0, 0.5, 2.0]),
            reduction="sum",
        )
    ),
    "BCE weight": lambda m, x, t: m.nn.BCELoss(weight=m.tensor([[1.0], [2.0], [0.5]]))(
        x.sigmoid(), t
    ),
    "kl_div log_target": lambda m, x, t: m.nn.KLDivLoss(
        reduction="sum", log_target=True
    )(x.log_softmax(1), t.log()),
    "kl_div with a zero target": lambda m, x, t: m.nn.functional.kl_div(
        x.log_softmax(1), t * (t > 0.2), reduction="batchmean"
    ),
    "smooth_l1 beta=0 and huber none": lambda m, x, t: m.nn.functional.smooth_l1_loss(
        x, t, beta=0.0
    )
    + m.nn.functional.huber_loss(x, t, reduction="none", delta=2.0).sum(),
    "l1 sum": lambda m, x, t: m.nn.L1Loss(reduction="sum")(x, t),
}


@pytest.mark.parametrize("name", ADDED_LOSSES)
def test_added_losses_and_target_grads(name):
    check(_loss_and_target_grads(ADDED_LOSSES[name]))


def test_embedding_padding_idx_gets_no_gradient():
    def fn(m):
        emb = _copy_weight(m.nn.Embedding(5, 3, padding_idx=-1), m)
        out = emb(m.tensor([[4, 1], [1, 0]]))
        (out * weights(out, m)).sum().backward()
        return out, emb.weight.grad, emb.padding_idx

    check(fn)


def _optimized(make, steps=4):
    """A few steps of an optimizer made by make(m, params); the params after."""

    def fn(m):
        w = m.tensor([1.0, -2.0, 0.5], requires_grad=True)
        v = m.tensor([[0.3, 0.1]], requires_grad=True)
        opt = make(m, [w, v])
        for _ in range(steps):
            opt.zero_grad()
            ((w**2).sum() * (v**2).sum() + w.sum()).backward()
            opt.step()
        return w, v, opt.state_dict()["state"]

    return fn


ADDED_OPTIMIZERS = {
    "Adagrad lr_decay, weight_decay, initial accumulator": lambda m, p: (
        m.optim.Adagrad(
            p, lr=0.3, lr_decay=0.1, weight_decay=0.05, initial_accumulator_value=0.2
        )
    ),
    "Adam maximize amsgrad": lambda m, p: m.optim.Adam(
        p, lr=0.1, amsgrad=True, maximize=True
    ),
    "RMSprop maximize": lambda m, p: m.optim.RMSprop(p, lr=0.01, maximize=True),
    "AdamW maximize": lambda m, p: m.optim.AdamW(p, lr=0.1, maximize=True),
}


@pytest.mark.parametrize("name", ADDED_OPTIMIZERS)
def test_added_optimizer_options(name):
    check(_optimized(ADDED_OPTIMIZERS[name]))


def _plateau_schedule(**kw):
    def fn(m):
        opt = m.optim.SGD([m.tensor([1.0], requires_grad=True)], lr=1.0)
        sched = m.optim.lr_scheduler.ReduceLROnPlateau(opt, **kw)
        lrs = []
        for metric in [-1.0, -1.05, -1.0, -0.9, -1.2, -1.1, -1.0, -1.0, -1.0, -1.0]:
            sched.step(metric)
            lrs.append(opt.param_groups[0]["lr"])
        return lrs, sched.get_last_lr(), sched.num_bad_epochs

    return fn


SCHEDULES_ADDED = {
    "plateau min rel with negative metrics": _plateau_schedule(patience=1, factor=0.5),
    "plateau max abs with cooldown and min_lr": _plateau_schedule(
        mode="max",
        threshold_mode="abs",
        threshold=0.01,
        patience=0,
        cooldown=2,
        min_lr=0.2,
    ),
    "LinearLR decay past total_iters": lambda m: _warmup(
        m, "LinearLR", start_factor=1.0, end_factor=0.5, total_iters=2
    ),
}


@pytest.mark.parametrize("fn", cases(SCHEDULES_ADDED))
def test_added_schedules(fn):
    check(fn)


# ---- the features added for the round's missing ones, more widely ------------------


def _einsum_case(equation, *shapes):
    def fn(m):
        xs = [
            m.tensor(data(*s, seed=i), requires_grad=True) for i, s in enumerate(shapes)
        ]
        y = m.einsum(equation, *xs)
        (y * weights(y, m)).sum().backward()
        return y, [x.grad for x in xs]

    return fn


def _batch_norm_run(shape=(5, 3), **kw):
    def fn(m):
        bn = m.nn.BatchNorm1d(3, **kw)
        x = m.tensor(data(*shape), requires_grad=True)
        y = bn(x) + bn(2 * x)
        (y * weights(y, m)).sum().backward()
        grads = [p.grad for p in bn.parameters()]
        bn.eval()
        return y, x.grad, grads, bn(x), dict(bn.state_dict()), repr(bn)

    return fn


def _function_twice_differentiable(m):
    class Cube(m.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(x)
            ctx.k = k
            return x**3 * k

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 3 * x**2 * ctx.k, None

    x = m.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = Cube.apply(x, 2.0)
    (g,) = m.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = m.autograd.grad(g.sum(), x)
    return y, g, h, y.grad_fn.name()


def _function_wrong_gradient_count(m):
    class Twice(m.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            return 2 * x + y

        @staticmethod
        def backward(ctx, grad):
            return 2 * grad

    x = m.tensor([1.0], requires_grad=True)
    Twice.apply(x, x).sum().backward()


def _function_saved_then_modified(m):
    class Square(m.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    x = m.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1
    y = Square.apply(h)
    h.add_(1)
    y.sum().backward()


def _save_load_file(m, tmp_path):
    net = mlp(m)
    opt = m.optim.Adam(net.parameters(), lr=0.1)
    net(features(m, 2)).sum().backward()
    opt.step()
    path = tmp_path / f"{m.__name__}.pt"
    m.save({"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 3}, path)
    loaded = m.load(path)
    fresh = mlp(m)
    fresh.load_state_dict(loaded["model"])
    groups = loaded["optim"]["param_groups"]
    return fresh.state_dict(), loaded["epoch"], [g["lr"] for g in groups]


def _hooks_replace_and_remove(m):
    net, seen = mlp(m), []
    handle = net[0].register_forward_hook(lambda mod, args, out: out * 0)
    net[2].register_forward_hook(lambda mod, args, out: seen.append(args[0].sum()))
    zeroed = net(features(m, 2))
    handle.remove()
    return zeroed, net(features(m, 2)), seen


def _one_cycle(optimizer, **kw):
    def fn(m):
        w = m.tensor([1.0], requires_grad=True)
        opt = getattr(m.optim, optimizer)([w], lr=1.0)
        sched = m.optim.lr_scheduler.OneCycleLR(opt, **kw)
        out = []
        for _ in range(8):
            opt.step()
            sched.step()
            group = opt.param_groups[0]
            out.append((sched.get_last_lr(), group.get("momentum"), group.get("betas")))
        return out

    return fn


ADDED_FEATURES = {
    "einsum matmul, implicit output": _einsum_case("ij,jk", (2, 3), (3, 4)),
    "einsum full sum": _einsum_case("ij->", (2, 3)),
    "einsum outer product": _einsum_case("i,j->ij", (3,), (4,)),
    "einsum summed-out letter": _einsum_case("ijk,k->j", (2, 3, 4), (4,)),
    "einsum chain of three": _einsum_case("ij,jk,kl->il", (2, 3), (3, 4), (4, 2)),
    "einsum operand list": lambda m: m.einsum(
        "ij,j->i", [m.tensor(data(2, 3)), m.tensor(data(3))]
    ),
    "linalg.norm whole tensor": values_and_grad(lambda m, x: m.linalg.norm(x)),
    "linalg.norm fro over two dims": values_and_grad(
        lambda m, x: m.linalg.norm(x, "fro", dim=(1, 2), keepdim=True)
    ),
    "linalg.norm ord=1 over a dim": values_and_grad(
        lambda m, x: m.linalg.norm(x, 1, dim=0)
    ),
    "linalg.vector_norm inf": values_and_grad(
        lambda m, x: m.linalg.vector_norm(x, float("inf"), dim=-1)
    ),
    "BatchNorm1d 3-d input": _batch_norm_run((4, 3, 2)),
    "BatchNorm1d cumulative average": _batch_norm_run(momentum=None),
    "BatchNorm1d without affine": _batch_norm_run(affine=False),
    "BatchNorm1d without running stats": _batch_norm_run(track_running_stats=False),
    "autograd.Function differentiated twice": _function_twice_differentiable,
    "forward hooks replace the output and are removed": _hooks_replace_and_remove,
    "OneCycleLR three phases, linear": _one_cycle(
        "SGD", max_lr=0.5, total_steps=9, three_phase=True, anneal_strategy="linear"
    ),
    "OneCycleLR cycles Adam's beta1": _one_cycle(
        "Adam", max_lr=[0.5], epochs=3, steps_per_epoch=3, pct_start=0.4
    ),
}


@pytest.mark.parametrize("fn", cases(ADDED_FEATURES))
def test_added_features(fn):
    check(fn)


ADDED_FEATURE_ERRORS = {
    "BatchNorm1d one value per channel": lambda m: m.nn.BatchNorm1d(3)(m.ones(1, 3)),
    "BatchNorm1d 4-d input": lambda m: m.nn.BatchNorm1d(3)(m.ones(2, 3, 2, 2)),
    "autograd.Function wrong gradient count": _function_wrong_gradient_count,
    "autograd.Function saved tensor modified": _function_saved_then_modified,
    "OneCycleLR past total_steps": _one_cycle("SGD", max_lr=0.5, total_steps=5),
    "OneCycleLR without a length": lambda m: m.optim.lr_scheduler.OneCycleLR(
        m.optim.SGD([m.tensor([1.0], requires_grad=True)], lr=0.1), max_lr=0.5
    ),
    "einsum wrong operand count": lambda m: m.einsum("ij,jk", m.ones(2, 2)),
}


@pytest.mark.parametrize("fn", cases(ADDED_FEATURE_ERRORS))
def test_added_feature_errors(fn):
    check_raises(fn)


def test_save_load_through_a_path(tmp_path):
    check(lambda m: _save_load_file(m, tmp_path))
