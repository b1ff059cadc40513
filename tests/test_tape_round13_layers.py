"""Tape round 13: torch scripts for layers and functions a CNN, RNN or GP script
reaches for beyond the earlier rounds, run on torch (float64) and on symgrad.tape
through tests/tape_scripts.py's harness (values, gradients, dtypes, reprs, or the
exception type where torch raises).

New on the tape for this round: nn.BatchNorm2d and nn.GroupNorm (F.group_norm), the
SELU / CELU / Mish / Hardswish / Hardsigmoid / Softsign / Tanhshrink / Softmin / PReLU
activations (modules and F. functions, in place where torch allows; first and second
derivatives, at the kinks +-3 and 0 too), F.pairwise_distance, torch.nan_to_num,
std_mean / var_mean, cdist, logcumsumexp and rot90, distributions.Normal (log_prob,
cdf, entropy, rsample; a Gaussian policy-gradient step with Adam), linalg.cholesky
(lower and upper, batched, second derivatives, a GP's negative log likelihood) and
Tensor.diagonal (offsets, any two dims), median (of all: ties share the gradient; along
a dim, with indices), kthvalue, and nearest F.interpolate / nn.Upsample (sizes and
fractional scale factors; a small conv-pool-upsample net trained two SGD steps). Also checked, already there:
LSTM (batch_first) and 2-layer GRU gradients, BatchNorm1d train/eval statistics,
linalg solve / slogdet / inv / det, autograd.functional jacobian / hessian, a
bilinear einsum, AdamW parameter groups, OneCycleLR and CosineAnnealingWarmRestarts
schedules, clamp with tensor bounds, flip / roll.

Not on the tape (found while writing this round, not attempted): TransformerEncoder
layers, ConvTranspose2d, bilinear interpolation, F.unfold / fold, nn.Bilinear,
quantile, cummax, NAdam / RAdam / Adamax /
Adadelta / ASGD / Rprop and the rarer margin losses.
"""

import numpy as np
import pytest
from tape_scripts import cases, check, draws, init_from

pytestmark = pytest.mark.usefixtures("torch_float64")


def lstm_seq(torch):
    torch.manual_seed(0)
    lstm = init_from(torch.nn.LSTM(3, 4, batch_first=True), torch)
    x = torch.tensor(draws(2, 5, 3), requires_grad=True)
    out, (h, c) = lstm(x)
    (out.sum() + h.pow(2).sum() + c.mean()).backward()
    return out, h, c, x.grad, [p.grad for p in lstm.parameters()]


def gru_two_layers(torch):
    gru = init_from(torch.nn.GRU(3, 4, num_layers=2), torch)
    x = torch.tensor(draws(5, 2, 3))
    out, h = gru(x)
    out.sum().backward()
    return out, h, [p.grad for p in gru.parameters()]


def batchnorm_train_eval(torch):
    bn = torch.nn.BatchNorm1d(3)
    x = torch.tensor(draws(6, 3), requires_grad=True)
    y = bn(x)
    (y * torch.tensor(draws(6, 3, seed=1))).sum().backward()
    bn.eval()
    z = bn(x)
    return (
        y,
        z,
        x.grad,
        bn.running_mean,
        bn.running_var,
        bn.num_batches_tracked,
        bn.weight.grad,
    )


def linalg_ops(torch):
    a = torch.tensor(draws(3, 3) + 3 * np.eye(3), requires_grad=True)
    b = torch.tensor(draws(3, 2, seed=1))
    x = torch.linalg.solve(a, b)
    s, ld = torch.linalg.slogdet(a)
    (x.sum() + ld + torch.linalg.inv(a).trace() + torch.det(a)).backward()
    return x, s, ld, a.grad


def jacobian_hessian(torch):
    def f(x):
        return (x**3).sum() + x[0] * x[1]

    x = torch.tensor([1.0, 2.0, 3.0])
    return torch.autograd.functional.jacobian(
        lambda x: x**2 * x.sum(), x
    ), torch.autograd.functional.hessian(f, x)


def einsum_bilinear(torch):
    x = torch.tensor(draws(4, 3), requires_grad=True)
    W = torch.tensor(draws(2, 3, 3, seed=1), requires_grad=True)
    y = torch.einsum("bi,oij,bj->bo", x, W, x)
    y.sum().backward()
    return y, x.grad, W.grad


def cosine_embedding(torch):
    a = torch.tensor(draws(4, 3), requires_grad=True)
    b = torch.tensor(draws(4, 3, seed=1))
    l = (
        torch.nn.functional.cosine_similarity(a, b).sum()
        + torch.nn.functional.pairwise_distance(a, b).sum()
    )
    l.backward()
    return l, a.grad


def softmin_logsoftmax_modules(torch):
    x = torch.tensor(draws(4, 3), requires_grad=True)
    y = (
        torch.nn.Softmin(dim=1)(x)
        + torch.nn.LogSoftmax(dim=0)(x)
        + torch.nn.Softsign()(x)
        + torch.nn.Tanhshrink()(x)
    )
    y.sum().backward()
    return y, x.grad


def mish_hardswish(torch):
    x = torch.tensor(draws(10), requires_grad=True)
    F = torch.nn.functional
    y = (
        F.mish(x)
        + F.hardswish(x)
        + F.hardsigmoid(x)
        + F.selu(x)
        + F.celu(x)
        + F.logsigmoid(x)
    )
    y.sum().backward()
    return y, x.grad


def weight_decay_groups(torch):
    w = torch.nn.Parameter(torch.tensor(draws(3)))
    b = torch.nn.Parameter(torch.tensor(draws(2, seed=1)))
    opt = torch.optim.AdamW(
        [{"params": [w]}, {"params": [b], "weight_decay": 0.0}],
        lr=0.1,
        weight_decay=0.5,
    )
    for _ in range(3):
        opt.zero_grad()
        ((w**2).sum() + b.sum()).backward()
        opt.step()
    return w, b


def onecycle(torch):
    w = torch.nn.Parameter(torch.tensor(draws(3)))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    sch = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10)
    lrs = []
    for _ in range(10):
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
        sch.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs, w


def cosine_warm(torch):
    w = torch.nn.Parameter(torch.tensor(draws(3)))
    opt = torch.optim.Adam([w], lr=0.1)
    sch = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=3, T_mult=2)
    lrs = []
    for _ in range(8):
        opt.step()
        sch.step()
        lrs.append(sch.get_last_lr()[0])
    return lrs


def clamp_tensor_bounds(torch):
    x = torch.tensor(draws(5), requires_grad=True)
    lo = torch.tensor(draws(5, seed=1) - 1, requires_grad=True)
    y = torch.clamp(x, min=lo, max=torch.tensor(0.5, dtype=torch.float64))
    y.sum().backward()
    return y, x.grad, lo.grad


def flip_roll_rot(torch):
    x = torch.tensor(draws(3, 4), requires_grad=True)
    y = torch.rot90(x, 1, (0, 1)).flatten() + torch.roll(x, 2).T.flatten()
    (y * torch.arange(12.0, dtype=torch.float64)).sum().backward()
    return y, x.grad


def where_scalar_and_nan_to_num(torch):
    x = torch.tensor([1.0, -2.0, 0.0, 3.0], requires_grad=True)
    y = torch.where(x > 0, x, 0.0) + torch.nan_to_num(
        torch.log(x), neginf=-5.0, nan=0.0
    )
    y.sum().backward()
    return y, x.grad


def batchnorm2d(torch):
    bn = torch.nn.BatchNorm2d(2)
    x = torch.tensor(draws(3, 2, 4, 4), requires_grad=True)
    (bn(x) ** 2 * torch.tensor(draws(3, 2, 4, 4, seed=1))).sum().backward()
    bn.eval()
    return x.grad, bn.running_var, bn.running_mean, bn(x), repr(bn), bn.weight.grad


def batchnorm2d_rank(torch):
    return torch.nn.BatchNorm2d(2)(torch.ones(2, 2, 3))


def batchnorm1d_rank(torch):
    return torch.nn.BatchNorm1d(2)(torch.ones(2, 2, 3, 3))


def groupnorm(torch):
    gn = torch.nn.GroupNorm(2, 4)
    x = torch.tensor(draws(3, 4, 5), requires_grad=True)
    (gn(x) * torch.tensor(draws(3, 4, 5, seed=2))).sum().backward()
    return (
        x.grad,
        gn.weight.grad,
        gn.bias.grad,
        repr(gn),
        repr(torch.nn.GroupNorm(1, 3, affine=False)),
    )


def groupnorm4d(torch):
    x = torch.tensor(draws(2, 6, 3, 3), requires_grad=True)
    w = torch.tensor(draws(6, seed=4), requires_grad=True)
    y = torch.nn.functional.group_norm(x, 3, w, None, 1e-3)
    (y**3).sum().backward()
    return y, x.grad, w.grad


def groupnorm_bad(torch):
    return torch.nn.functional.group_norm(torch.ones(2, 5, 3), 2)


def activations(torch):
    x = torch.tensor(
        np.r_[draws(12) * 4, -3.0, 3.0, 0.0, 25.0, -25.0], requires_grad=True
    )
    F = torch.nn.functional
    ys = [
        F.selu(x),
        F.celu(x, 0.7),
        F.mish(x),
        F.hardswish(x),
        F.hardsigmoid(x),
        F.softsign(x),
        F.tanhshrink(x),
    ]
    grads = [torch.autograd.grad(y.sum(), x, create_graph=True)[0] for y in ys]
    second = [torch.autograd.grad(g.sum(), x)[0] for g in grads]
    return ys, [g.detach() for g in grads], second


def activation_modules(torch):
    nn = torch.nn
    x = torch.tensor(draws(4, 3), requires_grad=True)
    mods = [
        nn.SELU(),
        nn.CELU(0.5),
        nn.Mish(),
        nn.Hardswish(),
        nn.Hardsigmoid(),
        nn.Softsign(),
        nn.Tanhshrink(),
        nn.Softmin(dim=1),
        nn.PReLU(),
        nn.PReLU(3, 0.1),
    ]
    y = sum((m(x) * (i + 1)).sum() for i, m in enumerate(mods))
    y.backward()
    return x.grad, [repr(m) for m in mods], mods[-1].weight.grad, mods[-2].weight.grad


def inplace_activations(torch):
    F = torch.nn.functional
    out = []
    for f in (F.selu, F.celu, F.mish, F.hardswish, F.hardsigmoid):
        x = torch.tensor(draws(5))
        y = f(x, inplace=True)
        out.append((x, y is x))
    return out


def prelu_conv_shape(torch):
    m = torch.nn.PReLU(2)
    x = torch.tensor(draws(3, 2, 4), requires_grad=True)
    m(x).pow(2).sum().backward()
    return x.grad, m.weight.grad


def nan_to_num(torch):
    x = torch.tensor(
        [1.0, float("nan"), float("inf"), -float("inf"), -2.0], requires_grad=True
    )
    y = torch.nan_to_num(x, neginf=-5.0) + x.nan_to_num(nan=1.5, posinf=9.0) * 2
    y.sum().backward()
    return y, x.grad, torch.nan_to_num(torch.tensor([float("inf")]))


def std_var_mean(torch):
    x = torch.tensor(draws(4, 3), requires_grad=True)
    s, m = torch.std_mean(x, dim=0)
    v, m2 = torch.var_mean(x, 1, correction=0, keepdim=True)
    s3, m3 = torch.std_mean(x)
    (s.sum() + m.sum() + v.sum() + m2.sum() + s3 * m3).backward()
    return s, m, v, m2, s3, m3, x.grad, type(torch.std_mean(x)).__name__


def cdist_grad(torch):
    a = torch.tensor(draws(4, 3), requires_grad=True)
    b = torch.tensor(draws(5, 3, seed=1), requires_grad=True)
    d = torch.cdist(a, b) + torch.cdist(a[None], b[None], p=1.0)[0]
    d.sum().backward()
    return d, a.grad, b.grad


def logcumsumexp_rot90(torch):
    x = torch.tensor(draws(3, 4), requires_grad=True)
    y = torch.logcumsumexp(x, 1) + x.logcumsumexp(dim=0)
    z = (
        torch.rot90(x, 1, (0, 1)).flatten()
        + x.rot90(-1).flatten()
        + x.rot90(2, [1, 0]).flatten()
    )
    (y.sum() + (z * torch.arange(12.0)).sum()).backward()
    return y, z, x.grad, x.rot90(0), x.rot90(3, (1, 0))


def pairwise(torch):
    F = torch.nn.functional
    a = torch.tensor(draws(4, 3), requires_grad=True)
    b = torch.tensor(draws(4, 3, seed=1))
    l = (
        F.pairwise_distance(a, b).sum()
        + F.pairwise_distance(a, b, p=1, keepdim=True).sum()
    )
    l.backward()
    return l, a.grad


def normal_log_prob(torch):
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    sd = torch.tensor([1.5, 0.3], requires_grad=True)
    d = torch.distributions.Normal(mu, sd)
    v = torch.tensor([[0.0, 1.0], [2.0, -1.0], [0.3, 0.1]])
    lp = d.log_prob(v).sum() + d.entropy().sum() + d.cdf(v).sum()
    lp.backward()
    return lp, mu.grad, sd.grad, d.mean, d.stddev, d.variance, d.batch_shape


def normal_numbers(torch):
    d = torch.distributions.Normal(0.0, 2.0)
    return (
        d.log_prob(torch.tensor([0.5, 1.0])),
        d.entropy(),
        d.batch_shape,
        d.cdf(torch.tensor(1.0)),
    )


def normal_broadcast(torch):
    mu = torch.tensor(draws(3, 1), requires_grad=True)
    sd = torch.tensor(np.abs(draws(4)) + 0.1, requires_grad=True)
    d = torch.distributions.Normal(mu, sd)
    d.log_prob(torch.tensor(draws(3, 4, seed=2))).mean().backward()
    return d.batch_shape, mu.grad, sd.grad


def normal_rsample(torch):
    mu = torch.tensor([0.5, -1.0], requires_grad=True)
    sd = torch.tensor([1.5, 0.3], requires_grad=True)
    d = torch.distributions.Normal(mu, sd)
    x = d.rsample((5,))
    x.sum().backward()
    s = d.sample((2, 3))
    return tuple(x.shape), x.requires_grad, mu.grad, tuple(s.shape), s.requires_grad


def normal_bad_scale(torch):
    return torch.distributions.Normal(torch.tensor([0.0]), torch.tensor([-1.0]))


def gaussian_policy_step(torch):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(draws(2, 3)))
        net.bias.zero_()
    log_std = torch.nn.Parameter(torch.tensor([-0.5, 0.2]))
    opt = torch.optim.Adam([*net.parameters(), log_std], lr=0.01)
    obs = torch.tensor(draws(6, 3, seed=1))
    act = torch.tensor(draws(6, 2, seed=2))
    adv = torch.tensor(draws(6, seed=3))
    for _ in range(3):
        dist = torch.distributions.Normal(net(obs), log_std.exp())
        loss = -(dist.log_prob(act).sum(-1) * adv).mean() - 0.01 * dist.entropy().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss, net.weight, log_std


def cholesky_grad(torch):
    m = torch.tensor(draws(3, 3), requires_grad=True)
    a = m @ m.T + torch.eye(3)
    L = torch.linalg.cholesky(a)
    (L * torch.tensor(draws(3, 3, seed=5))).sum().backward()
    U = torch.linalg.cholesky(a.detach(), upper=True)
    return L, m.grad, U


def cholesky_batched_double(torch):
    m = torch.tensor(draws(2, 3, 3), requires_grad=True)
    a = m @ m.mT + 0.5 * torch.eye(3)
    L = torch.linalg.cholesky(a)
    (g,) = torch.autograd.grad(
        (L**2).sum() + L.diagonal(dim1=-2, dim2=-1).log().sum(), m, create_graph=True
    )
    (h,) = torch.autograd.grad((g**2).sum(), m)
    return L, g.detach(), h


def cholesky_gp(torch):
    x = torch.tensor(draws(6, 1))
    y = torch.tensor(draws(6, seed=1))
    log_ell = torch.tensor(0.2, requires_grad=True)
    log_sn = torch.tensor(-1.0, requires_grad=True)
    K = torch.exp(-0.5 * (x - x.T) ** 2 / log_ell.exp() ** 2) + (
        2 * log_sn
    ).exp() * torch.eye(6)
    L = torch.linalg.cholesky(K)
    a = torch.linalg.solve(K, y)
    nll = 0.5 * y @ a + L.diagonal().log().sum()
    nll.backward()
    return nll, log_ell.grad, log_sn.grad


def cholesky_not_pd(torch):
    try:
        torch.linalg.cholesky(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    except RuntimeError as error:  # torch.linalg.LinAlgError
        return "positive-definite" in str(error)


def diagonals(torch):
    x = torch.tensor(draws(2, 3, 4), requires_grad=True)
    ys = [
        x.diagonal(),
        x.diagonal(1, 1, 2),
        x.diagonal(-1, -1, -2),
        torch.diagonal(x, 0, 0, 2),
        x[0].diagonal(5),
        x.diagonal(offset=2, dim1=-2, dim2=-1),
    ]
    sum((y * (i + 1)).sum() for i, y in enumerate(ys)).backward()
    return ys, x.grad


def median_kthvalue(torch):
    x = torch.tensor(draws(3, 5), requires_grad=True)
    v, i = torch.median(x, dim=1)
    k, j = torch.kthvalue(x, 2, dim=1)
    m0 = x.median(0, keepdim=True)
    (v.sum() + 2 * k.sum() + 3 * x.median() + 4 * m0.values.sum()).backward()
    return (
        v,
        i,
        k,
        j,
        m0.values,
        m0.indices,
        x.grad,
        repr(torch.median(x, 1)),
        x.median(),
    )


def median_even_and_ties(torch):
    x = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 4.0], requires_grad=True)
    m = x.median()
    m.backward()
    return m, x.grad, torch.kthvalue(x, 6).values


def kthvalue_bad(torch):
    return torch.kthvalue(torch.ones(3), 4)


def interpolate_nearest(torch):
    F = torch.nn.functional
    x = torch.tensor(draws(1, 2, 3, 3), requires_grad=True)
    ys = [
        F.interpolate(x, scale_factor=2),
        F.interpolate(x, size=(5, 4)),
        F.interpolate(x, scale_factor=(1.5, 0.7)),
        F.interpolate(x[:, :, 0], size=7),
        F.interpolate(x, size=2),
    ]
    sum(
        (y * torch.tensor(draws(*y.shape, seed=i))).sum() for i, y in enumerate(ys)
    ).backward()
    return ys, x.grad


def upsample_unet_step(torch):
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(2, 1, 1),
    )
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.copy_(torch.tensor(0.5 * draws(*p.shape, seed=i)))
    x = torch.tensor(draws(2, 1, 4, 4, seed=9))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss = ((net(x) - x) ** 2).mean()
        loss.backward()
        opt.step()
    return (
        loss,
        [p.detach().clone() for p in net.parameters()],
        repr(net),
        repr(nn.Upsample(size=(4, 4))),
    )


def interpolate_bad(torch):
    return torch.nn.functional.interpolate(torch.ones(1, 1, 2, 2))


SCRIPTS = {
    "lstm_seq": lstm_seq,
    "gru_two_layers": gru_two_layers,
    "batchnorm_train_eval": batchnorm_train_eval,
    "linalg_ops": linalg_ops,
    "jacobian_hessian": jacobian_hessian,
    "einsum_bilinear": einsum_bilinear,
    "cosine_embedding": cosine_embedding,
    "softmin_logsoftmax_modules": softmin_logsoftmax_modules,
    "mish_hardswish": mish_hardswish,
    "weight_decay_groups": weight_decay_groups,
    "onecycle": onecycle,
    "cosine_warm": cosine_warm,
    "clamp_tensor_bounds": clamp_tensor_bounds,
    "flip_roll_rot": flip_roll_rot,
    "where_scalar_and_nan_to_num": where_scalar_and_nan_to_num,
    "batchnorm2d": batchnorm2d,
    "batchnorm2d_rank": batchnorm2d_rank,
    "batchnorm1d_rank": batchnorm1d_rank,
    "groupnorm": groupnorm,
    "groupnorm4d": groupnorm4d,
    "groupnorm_bad": groupnorm_bad,
    "activations": activations,
    "activation_modules": activation_modules,
    "inplace_activations": inplace_activations,
    "prelu_conv_shape": prelu_conv_shape,
    "nan_to_num": nan_to_num,
    "std_var_mean": std_var_mean,
    "cdist_grad": cdist_grad,
    "logcumsumexp_rot90": logcumsumexp_rot90,
    "pairwise": pairwise,
    "normal_log_prob": normal_log_prob,
    "normal_numbers": normal_numbers,
    "normal_broadcast": normal_broadcast,
    "normal_rsample": normal_rsample,
    "normal_bad_scale": normal_bad_scale,
    "gaussian_policy_step": gaussian_policy_step,
    "cholesky_grad": cholesky_grad,
    "cholesky_batched_double": cholesky_batched_double,
    "cholesky_gp": cholesky_gp,
    "cholesky_not_pd": cholesky_not_pd,
    "diagonals": diagonals,
    "median_kthvalue": median_kthvalue,
    "median_even_and_ties": median_even_and_ties,
    "kthvalue_bad": kthvalue_bad,
    "interpolate_nearest": interpolate_nearest,
    "upsample_unet_step": upsample_unet_step,
    "interpolate_bad": interpolate_bad,
}


@pytest.mark.parametrize("script", cases(SCRIPTS))
def test_script_runs_as_on_torch(script):
    check(script)
