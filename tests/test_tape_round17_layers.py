"""Tape round 17, what its scripts found missing, now in symgrad.tape, each compared
with torch (float64) through tests/tape_scripts.py's harness (values, gradients,
dtypes, reprs, or the exception type where torch raises): the padding Modules
(nn.ReflectionPad1d/2d/3d, ReplicationPad*, CircularPad*, ConstantPad*, ZeroPad*)
over F.pad; nn.InstanceNorm1d/2d/3d and F.instance_norm (affine, tracked running
statistics in training and eval mode, momentum=None, unbatched input, the errors);
torch.amp's GradScaler (disabled: a pass-through; enabled on 'cpu': scaling,
unscale_, a step skipped on inf, backoff and growth, its state_dict and errors),
torch.amp.autocast / torch.autocast / torch.cuda.amp (float64 code unchanged, as
torch's CPU autocast leaves it); the optimizers' signatures (foreach, fused,
capturable, differentiable by name, as inspect.signature shows torch's) and fused=True.
"""

import inspect
from contextlib import nullcontext

import numpy as np
import pytest
from tape_scripts import cases, check, draws, init_from

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


# ==== (1) padding Modules ================================================================


def padded(make, *shape):
    """A padding Module's output, its input's gradient and its repr."""

    def script(torch):
        module = make(torch.nn)
        x = torch.tensor(draws(*shape), requires_grad=True)
        y = module(x)
        (y * torch.tensor(draws(*y.shape, seed=1))).sum().backward()
        return y, x.grad, repr(module), module.padding

    return script


PADDING = {
    "ReflectionPad1d(2)": padded(lambda nn: nn.ReflectionPad1d(2), 2, 3, 5),
    "ReflectionPad1d((3, 1)), unbatched": padded(
        lambda nn: nn.ReflectionPad1d((3, 1)), 3, 5
    ),
    "ReflectionPad2d(1)": padded(lambda nn: nn.ReflectionPad2d(1), 2, 3, 4, 5),
    "ReflectionPad2d((1, 2, 0, 3))": padded(
        lambda nn: nn.ReflectionPad2d((1, 2, 0, 3)), 1, 2, 4, 5
    ),
    "ReflectionPad2d, negative crop": padded(
        lambda nn: nn.ReflectionPad2d([-1, 2, 1, -1]), 2, 4, 5
    ),
    "ReflectionPad3d(1)": padded(lambda nn: nn.ReflectionPad3d(1), 1, 2, 3, 3, 3),
    "ReplicationPad1d((2, 0))": padded(lambda nn: nn.ReplicationPad1d((2, 0)), 2, 3, 4),
    "ReplicationPad2d(3)": padded(lambda nn: nn.ReplicationPad2d(3), 1, 2, 3, 2),
    "ReplicationPad3d((1, 0, 0, 2, 1, 1))": padded(
        lambda nn: nn.ReplicationPad3d((1, 0, 0, 2, 1, 1)), 2, 2, 2, 3
    ),
    "CircularPad1d(2)": padded(lambda nn: nn.CircularPad1d(2), 2, 3, 4),
    "CircularPad2d((1, 0, 2, 1))": padded(
        lambda nn: nn.CircularPad2d((1, 0, 2, 1)), 2, 2, 3, 3
    ),
    "ConstantPad1d(2, 3.5)": padded(lambda nn: nn.ConstantPad1d(2, 3.5), 2, 4),
    "ConstantPad2d((1, 0, 2, 1), -1)": padded(
        lambda nn: nn.ConstantPad2d((1, 0, 2, 1), -1), 2, 2, 3
    ),
    "ConstantPad3d(1, 0.5)": padded(lambda nn: nn.ConstantPad3d(1, 0.5), 1, 2, 2, 2),
    "ZeroPad1d((0, 2))": padded(lambda nn: nn.ZeroPad1d((0, 2)), 2, 3),
    "ZeroPad2d(2)": padded(lambda nn: nn.ZeroPad2d(2), 1, 1, 3, 3),
    "ZeroPad2d((1, 1, 2, 0))": padded(lambda nn: nn.ZeroPad2d((1, 1, 2, 0)), 2, 3, 3),
    "ZeroPad3d(1)": padded(lambda nn: nn.ZeroPad3d(1), 1, 2, 2, 2),
    "ReflectionPad2d wider than the input": padded(
        lambda nn: nn.ReflectionPad2d(3), 1, 1, 3, 3
    ),
    "CircularPad2d of a 2-D input": padded(lambda nn: nn.CircularPad2d(1), 3, 3),
}


@pytest.mark.parametrize("script", cases(PADDING))
def test_padding_modules(script):
    check(script)


def padding_classes(torch):
    """The class hierarchy scripts test with isinstance: ZeroPad2d is a
    ConstantPad2d; the 1d/2d/3d classes are siblings."""
    nn = torch.nn
    return (
        isinstance(nn.ZeroPad2d(1), nn.ConstantPad2d),
        isinstance(nn.ReflectionPad2d(1), nn.ReflectionPad1d),
        isinstance(nn.ReplicationPad1d(1), nn.Module),
        nn.ZeroPad1d(1).value,
        repr(nn.Sequential(nn.ReflectionPad2d(2), nn.ZeroPad2d((1, 2, 3, 4)))),
    )


def test_padding_classes():
    check(padding_classes)


# ==== (2) InstanceNorm and F.instance_norm ==============================================


def instance_norm(make, *shape, steps=2, evaluate=True):
    """A module trained on `steps` inputs, then (if evaluate) in eval mode: outputs,
    input gradients, parameters' gradients, buffers, state_dict keys and repr."""

    def script(torch):
        module = make(torch.nn)
        init_from(module, torch)
        results = []
        for step in range(steps):
            x = torch.tensor(draws(*shape, seed=step) * (1 + step), requires_grad=True)
            y = module(x)
            (y * torch.tensor(draws(*y.shape, seed=9))).sum().backward()
            results += [y, x.grad]
        if evaluate:
            module.eval()
            results.append(module(torch.tensor(draws(*shape, seed=5))))
        return (
            results,
            [p.grad for p in module.parameters()],
            list(module.buffers()),
            list(module.state_dict()),
            repr(module),
        )

    return script


INSTANCE_NORM = {
    "InstanceNorm1d(3)": instance_norm(lambda nn: nn.InstanceNorm1d(3), 2, 3, 5),
    "InstanceNorm2d(3)": instance_norm(lambda nn: nn.InstanceNorm2d(3), 2, 3, 4, 4),
    "InstanceNorm2d(3, affine=True)": instance_norm(
        lambda nn: nn.InstanceNorm2d(3, affine=True), 2, 3, 3, 4
    ),
    "InstanceNorm2d affine, bias=False, eps": instance_norm(
        lambda nn: nn.InstanceNorm2d(2, eps=1e-2, affine=True, bias=False), 1, 2, 3, 3
    ),
    "InstanceNorm1d tracked, train then eval": instance_norm(
        lambda nn: nn.InstanceNorm1d(3, momentum=0.3, track_running_stats=True),
        4,
        3,
        6,
    ),
    "InstanceNorm2d tracked, affine": instance_norm(
        lambda nn: nn.InstanceNorm2d(2, affine=True, track_running_stats=True),
        3,
        2,
        2,
        3,
    ),
    "InstanceNorm1d tracked, momentum=None": instance_norm(
        lambda nn: nn.InstanceNorm1d(3, momentum=None, track_running_stats=True),
        2,
        3,
        4,
    ),
    "InstanceNorm1d, unbatched": instance_norm(
        lambda nn: nn.InstanceNorm1d(3, affine=True), 3, 5
    ),
    "InstanceNorm2d, unbatched, tracked": instance_norm(
        lambda nn: nn.InstanceNorm2d(2, track_running_stats=True), 2, 3, 3
    ),
    "InstanceNorm3d(2, affine=True)": instance_norm(
        lambda nn: nn.InstanceNorm3d(2, affine=True), 2, 2, 2, 2, 3
    ),
    "InstanceNorm2d, num_features unused (affine=False)": instance_norm(
        lambda nn: nn.InstanceNorm2d(5), 2, 3, 3, 3
    ),
    "InstanceNorm2d affine, wrong num_features": instance_norm(
        lambda nn: nn.InstanceNorm2d(5, affine=True), 2, 3, 3, 3
    ),
    "InstanceNorm2d of a 2-D input": instance_norm(
        lambda nn: nn.InstanceNorm2d(3), 3, 4
    ),
    "InstanceNorm1d, one spatial element": instance_norm(
        lambda nn: nn.InstanceNorm1d(3), 2, 3, 1
    ),
    "InstanceNorm1d eval, one spatial element": instance_norm(
        lambda nn: nn.InstanceNorm1d(3, track_running_stats=True).eval(),
        2,
        3,
        1,
        evaluate=False,
    ),
}


@pytest.mark.parametrize("script", cases(INSTANCE_NORM))
def test_instance_norm_modules(script):
    check(script)


def functional_instance_norm(torch):
    """F.instance_norm with running statistics moved in place, then used
    (use_input_stats=False); gradients to input, weight and bias."""
    F = torch.nn.functional
    x = torch.tensor(draws(3, 2, 5), requires_grad=True)
    w = torch.tensor(draws(2, seed=1), requires_grad=True)
    b = torch.tensor(draws(2, seed=2), requires_grad=True)
    mean, var = torch.zeros(2), torch.ones(2)
    y = F.instance_norm(x, mean, var, w, b, momentum=0.2, eps=1e-3)
    z = F.instance_norm(x, mean, var, w, b, use_input_stats=False)
    (y.pow(2).sum() + (z * x).sum()).backward()
    plain = F.instance_norm(x.detach())
    return y, z, mean, var, x.grad, w.grad, b.grad, plain


def functional_instance_norm_without_stats(torch):
    x = torch.tensor(draws(2, 3, 4))
    return torch.nn.functional.instance_norm(x, use_input_stats=False)


def fast_neural_style_transformer_block(torch):
    """fast_neural_style's ResidualBlock: ConvLayer (ReflectionPad2d + Conv2d),
    InstanceNorm2d(affine=True), ReLU, added to the input; SGD steps (Adam's would
    magnify round-off in the near-zero gradients past the harness's tolerance)."""
    nn = torch.nn

    class ConvLayer(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride):
            super().__init__()
            self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            return self.conv2d(self.reflection_pad(x))

    class ResidualBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in1 = nn.InstanceNorm2d(channels, affine=True)
            self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
            self.in2 = nn.InstanceNorm2d(channels, affine=True)
            self.relu = nn.ReLU()

        def forward(self, x):
            residual = x
            out = self.relu(self.in1(self.conv1(x)))
            out = self.in2(self.conv2(out))
            return out + residual

    block = init_from(ResidualBlock(2), torch, scale=0.4)
    optimizer = torch.optim.SGD(block.parameters(), lr=0.1, momentum=0.9)
    x = torch.tensor(draws(2, 2, 4, 4))
    losses = []
    for _ in range(3):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(block(x), x.flip(-1))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, list(block.parameters()), repr(block)


FUNCTIONAL = {
    "F.instance_norm with running statistics": functional_instance_norm,
    "F.instance_norm(use_input_stats=False) without them": (
        functional_instance_norm_without_stats
    ),
    "fast_neural_style ResidualBlock, SGD": fast_neural_style_transformer_block,
}


@pytest.mark.parametrize("script", cases(FUNCTIONAL))
def test_instance_norm_functional(script):
    check(script)


# ==== (3) torch.amp: GradScaler and autocast ============================================


def scaler_step(torch, scaler, optimizer, model, x, clip=None):
    optimizer.zero_grad(set_to_none=True)
    loss = model(x).pow(2).mean()
    scaled = scaler.scale(loss)
    scaled.backward()
    if clip is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    result = scaler.step(optimizer)
    scaler.update()
    return loss, scaled, result


def grad_scaler_disabled(torch):
    """nanoGPT's scaler = torch.amp.GradScaler(enabled=(dtype == 'float16')) with
    bfloat16/float32: scale(loss) is loss itself, step(opt) is opt.step()."""
    model = init_from(torch.nn.Linear(3, 2), torch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler(enabled=("bfloat16" == "float16"))
    x = torch.tensor(draws(4, 3))
    trail = [scaler_step(torch, scaler, optimizer, model, x, clip=1.0)]
    loss = model(x).sum()
    return (
        trail,
        scaler.scale(loss) is loss,
        scaler.get_scale(),
        scaler.is_enabled(),
        scaler.state_dict(),
        list(model.parameters()),
    )


def grad_scaler_enabled(torch):
    """On 'cpu': the loss times 2**16, the gradients unscaled before the step (the
    parameters as without scaling), growth after growth_interval clean steps."""
    model = init_from(torch.nn.Linear(3, 2), torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", growth_interval=2)
    x = torch.tensor(draws(4, 3))
    trail = []
    for i in range(3):
        loss, scaled, result = scaler_step(torch, scaler, optimizer, model, x, clip=i)
        trail.append((loss, scaled, result, scaler.get_scale(), scaler.state_dict()))
    return trail, list(model.parameters()), [p.grad for p in model.parameters()]


def grad_scaler_skips_inf(torch):
    """A gradient made inf: step() skips the optimizer's step, update() backs the
    scale off by backoff_factor and resets the growth tracker."""
    w = torch.tensor(draws(3), requires_grad=True)
    optimizer = torch.optim.Adam([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, backoff_factor=0.25)
    trail = []
    for bad in (False, True, False):
        optimizer.zero_grad()
        loss = (w * w).sum()
        scaler.scale(loss).backward()
        if bad:
            with torch.no_grad():
                w.grad[1] = float("inf")
        scaler.step(optimizer)
        scaler.update()
        trail.append((w.detach().clone(), scaler.get_scale(), scaler.state_dict()))
    return trail, sorted(optimizer.state[w]), optimizer.state[w]["step"]


def grad_scaler_nested_outputs_and_new_scale(torch):
    """scale() of a list and a tuple, update(new_scale), get/set of the factors,
    load_state_dict."""
    w = torch.tensor(draws(2), requires_grad=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    out = scaler.scale([w, (w * 2, w)])
    optimizer = torch.optim.SGD([w], lr=0.1)
    sum(o.sum() for o in (out[0], *out[1])).backward()
    scaler.step(optimizer)
    scaler.update(new_scale=3.0)
    scaler.set_growth_factor(3.0)
    scaler.set_backoff_factor(0.125)
    scaler.set_growth_interval(7)
    other = torch.amp.GradScaler("cpu")
    other.load_state_dict(scaler.state_dict())
    return (
        out,
        w,
        scaler.get_scale(),
        scaler.get_growth_factor(),
        scaler.get_backoff_factor(),
        scaler.get_growth_interval(),
        other.state_dict(),
        other.get_scale(),
    )


def grad_scaler_error(kind):
    """torch's refusals: a step or update before scale(); unscale_ twice or after
    step; step twice; update without a step; a closure; bad factors."""

    def script(torch):
        w = torch.tensor(draws(2), requires_grad=True)
        optimizer = torch.optim.SGD([w], lr=0.1)
        scaler = torch.amp.GradScaler("cpu")
        if kind == "step before scale":
            return scaler.step(optimizer)
        if kind == "update before scale":
            return scaler.update()
        if kind == "growth factor":
            return torch.amp.GradScaler("cpu", growth_factor=1.0)
        if kind == "backoff factor":
            return torch.amp.GradScaler("cpu", backoff_factor=1.0)
        scaler.scale(w.sum()).backward()
        if kind == "update without step":
            return scaler.update()
        if kind == "closure":
            return scaler.step(optimizer, closure=lambda: w.sum())
        scaler.unscale_(optimizer)
        if kind == "unscale twice":
            return scaler.unscale_(optimizer)
        scaler.step(optimizer)
        if kind == "step twice":
            return scaler.step(optimizer)
        return scaler.unscale_(optimizer)  # after step

    return script


def grad_scaler_cuda_disabled(torch):
    """The default device, 'cuda', has no GPU here: disabled with a warning, as in
    torch; so is the deprecated torch.cuda.amp.GradScaler."""
    w = torch.tensor(draws(2), requires_grad=True)
    loss = w.sum()
    scalers = [
        torch.amp.GradScaler(),
        torch.cuda.amp.GradScaler(),
        torch.cuda.amp.GradScaler(enabled=False),
    ]
    return [(s.is_enabled(), s.scale(loss) is loss, s.get_scale()) for s in scalers]


def autocast_float64(torch):
    """nanoGPT's ctx: nullcontext() on cpu, else torch.amp.autocast(...); and
    torch.autocast('cpu') itself, which leaves float64 tensors as they are."""
    model = init_from(torch.nn.Linear(3, 2), torch)
    x = torch.tensor(draws(4, 3))
    results = []
    for device_type in ("cpu", "cuda"):
        ctx = (
            nullcontext()
            if device_type == "cpu"
            else torch.amp.autocast(device_type=device_type, dtype=torch.float16)
        )
        with ctx:
            results.append(model(x))
    with torch.autocast("cpu"):
        results.append(model(x) @ x[:2])
    with torch.amp.autocast(device_type="cpu", dtype=torch.float16):
        y = model(x).sum()
    y.backward()

    @torch.autocast(device_type="cpu")
    def decorated(a):
        return torch.mm(a, a.t())

    results.append(decorated(x))
    with torch.cuda.amp.autocast():
        results.append(x.exp())
    with torch.amp.autocast("cpu", enabled=False):
        results.append(x.sum())
    return results, y, model.weight.grad, torch.amp.is_autocast_available("cpu")


def autocast_device_object(torch):
    return torch.amp.autocast(device_type=torch.device("cpu"))


def autocast_decorating_a_non_callable(torch):
    return torch.autocast("cpu")(3)


AMP = {
    "GradScaler(enabled=False), nanoGPT's": grad_scaler_disabled,
    "GradScaler('cpu'): scale, unscale_, growth": grad_scaler_enabled,
    "GradScaler('cpu'): an inf gradient skips the step": grad_scaler_skips_inf,
    "GradScaler: nested outputs, new_scale, state_dict": (
        grad_scaler_nested_outputs_and_new_scale
    ),
    "GradScaler on 'cuda' (none here): disabled": grad_scaler_cuda_disabled,
    "autocast: float64 unchanged, nanoGPT's ctx": autocast_float64,
    "autocast(device_type=a torch.device)": autocast_device_object,
    "autocast()(3)": autocast_decorating_a_non_callable,
}
AMP.update(
    (f"GradScaler error: {kind}", grad_scaler_error(kind))
    for kind in (
        "step before scale",
        "update before scale",
        "growth factor",
        "backoff factor",
        "update without step",
        "closure",
        "unscale twice",
        "step twice",
        "unscale after step",
    )
)


@pytest.mark.parametrize("script", cases(AMP))
def test_amp(script):
    check(script)


# ==== (4) the optimizers' signatures and fused=True ====================================

OPTIMIZERS = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "LBFGS")


def optimizer_signatures(torch):
    """inspect.signature of each optimizer class: names, kinds and defaults, in
    order (nanoGPT: `'fused' in inspect.signature(torch.optim.AdamW).parameters`)."""
    return {
        name: [
            (p.name, str(p.kind), repr(p.default))
            for p in inspect.signature(getattr(torch.optim, name)).parameters.values()
        ]
        for name in OPTIMIZERS
    }


def optimizer_defaults(torch):
    """Each optimizer's defaults (the flags included, in torch's order) and repr."""
    w = torch.tensor(draws(2), requires_grad=True)
    made = [getattr(torch.optim, name)([w]) for name in OPTIMIZERS[:-1]]
    return [(list(o.defaults.items()), repr(o)) for o in made]


def fused_steps(torch):
    """fused=True (torch accepts it on CPU, float64 too) computes the same steps;
    the flags given by keyword land in the groups."""
    trail = []
    for name in ("SGD", "Adam", "AdamW", "Adagrad"):
        w = torch.tensor(draws(3), requires_grad=True)
        opt = getattr(torch.optim, name)([w], lr=0.1, fused=True)
        for _ in range(2):
            opt.zero_grad()
            (w.sin() * w).sum().backward()
            opt.step()
        trail.append((w, opt.param_groups[0]["fused"]))
    w = torch.tensor(draws(3), requires_grad=True)
    flags = torch.optim.RMSprop([w], 0.1, 0.9, 1e-8, 0, 0, False, False, True, True)
    return trail, flags.defaults


def optimizer_flag_error(make):
    def script(torch):
        return make(torch.optim, [torch.tensor(draws(2), requires_grad=True)])

    return script


FLAG_ERRORS = {
    "fused and foreach": lambda o, ps: o.Adam(ps, fused=True, foreach=True),
    "fused and foreach, SGD": lambda o, ps: o.SGD(ps, fused=True, foreach=True),
    "RMSprop takes no fused": lambda o, ps: o.RMSprop(ps, fused=True),
    "Adadelta takes no fused": lambda o, ps: o.Adadelta(ps, fused=True),
    "LBFGS takes no foreach": lambda o, ps: o.LBFGS(ps, foreach=False),
    "SGD's flags are keyword-only": lambda o, ps: o.SGD(ps, 0.1, 0, 0, 0, False, True),
    "empty params before the flags": lambda o, ps: o.Adam([], fused=True, foreach=True),
}

SIGNATURES = {
    "inspect.signature of the optimizers": optimizer_signatures,
    "defaults with the flags, in torch's order": optimizer_defaults,
    "fused=True steps": fused_steps,
}
SIGNATURES.update(
    (name, optimizer_flag_error(make)) for name, make in FLAG_ERRORS.items()
)


@pytest.mark.parametrize("script", cases(SIGNATURES))
def test_optimizer_signatures(script):
    check(script)


def test_differentiable_is_refused_clearly():
    """torch's differentiable=True records the step for autograd; the tape says it
    has no such step rather than take the flag and ignore it."""
    from symgrad import tape

    w = tape.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(NotImplementedError, match="differentiable"):
        tape.optim.Adam([w], differentiable=True)
