"""Tape round 19: what a new user reaches for that round 18 found missing, run on
torch (float64) and on symgrad.tape through tests/tape_scripts.py's harness
(values, gradients, dtypes, shapes, Python types, printed text, or the exception
type where torch raises), each in a user's training step.

Covered, and agreeing with torch: optim.NAdam (momentum_decay, L2 and decoupled
weight decay), optim.RAdam (the rectified and the momentum-only steps, decoupled
weight decay) and optim.Adamax, several steps' parameters, their state_dict keys
and groups, the printed optimizers and their argument checks; nn.GLU and
nn.LogSigmoid (and F.glu), nn.Bilinear and F.bilinear, nn.PixelShuffle and
nn.PixelUnshuffle (and F.), F.unfold/F.fold and nn.Unfold/nn.Fold with kernel,
dilation, padding and stride (a convolution by im2col against conv2d, patches
folded back), a gradient penalty through them (second order);
distributions.Bernoulli (probs= and logits=, log_prob, entropy, mean, variance),
MultivariateNormal (covariance_matrix, scale_tril, precision_matrix: log_prob,
entropy, the derived matrices, rsample's shape) and distributions.kl_divergence
for Normal, Categorical, Bernoulli and MultivariateNormal pairs; linalg.
solve_triangular, which MultivariateNormal builds on.

Found and fixed: autograd.grad(y, x) raised where another backward had freed a branch
of y's graph that does not lead to x (torch never visits it; now the tape runs only
the nodes that lead to an input, autograd._leading_to).

Not compared: random draws (rsample, sample: the tape's generator is not torch's
stream, so only shapes are compared).
"""

import numpy as np
import pytest
from tape_scripts import cases, check, draws, init_from

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


# ==== (1) optimizers: NAdam, RAdam, Adamax ====


def regression(torch):
    x = torch.tensor(draws(16, 3, seed=1))
    y = torch.tensor(draws(16, 1, seed=2))
    return x, y


def train_with(name, steps=12, **options):
    """A small regression net trained with the optimizer; the losses, the final
    parameters and gradients, the state_dict and the printed optimizer."""

    def script(torch):
        nn = torch.nn
        x, y = regression(torch)
        model = init_from(
            nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)), torch
        )
        optimizer = getattr(torch.optim, name)(model.parameters(), **options)
        losses = []
        for _ in range(steps):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        state = optimizer.state_dict()
        return (
            losses,
            list(model.parameters()),
            [p.grad for p in model.parameters()],
            state["state"],
            state["param_groups"],
            str(optimizer),
        )

    return script


OPTIMIZERS = {
    "NAdam defaults": train_with("NAdam"),
    "NAdam lr, weight_decay (L2)": train_with("NAdam", lr=0.05, weight_decay=0.1),
    "NAdam decoupled_weight_decay, momentum_decay": train_with(
        "NAdam",
        lr=0.05,
        weight_decay=0.1,
        decoupled_weight_decay=True,
        momentum_decay=0.01,
    ),
    "NAdam maximize, betas": train_with("NAdam", betas=(0.8, 0.99), maximize=True),
    "RAdam defaults (momentum-only steps)": train_with("RAdam"),
    "RAdam rectified steps (beta2=0.5)": train_with("RAdam", lr=0.05, betas=(0.9, 0.5)),
    "RAdam weight_decay (L2)": train_with(
        "RAdam", lr=0.05, betas=(0.9, 0.6), weight_decay=0.1
    ),
    "RAdam decoupled_weight_decay": train_with(
        "RAdam",
        lr=0.05,
        betas=(0.9, 0.6),
        weight_decay=0.1,
        decoupled_weight_decay=True,
    ),
    "Adamax defaults": train_with("Adamax"),
    "Adamax lr, weight_decay, eps": train_with(
        "Adamax", lr=0.1, weight_decay=0.1, eps=1e-3
    ),
}


@pytest.mark.parametrize("script", cases(OPTIMIZERS))
def test_optimizers(script):
    check(script)


def resumed(name):
    """Checkpoint after 3 steps, a fresh optimizer loads it, 3 more steps."""

    def script(torch):
        w = torch.tensor(draws(3, seed=4), requires_grad=True)
        x, y = regression(torch)

        def step(opt):
            opt.zero_grad()
            loss = ((x @ w - y[:, 0]) ** 2).mean()
            loss.backward()
            opt.step()

        opt = getattr(torch.optim, name)([w], lr=0.1)
        for _ in range(3):
            step(opt)
        saved = opt.state_dict()
        opt = getattr(torch.optim, name)([w], lr=0.1)
        opt.load_state_dict(saved)
        for _ in range(3):
            step(opt)
        return w, opt.state_dict()["state"]

    return script


def bad(name, **options):
    return lambda torch: getattr(torch.optim, name)(
        [torch.zeros(2, requires_grad=True)], **options
    )


CHECKS = {
    "NAdam resumed from state_dict": resumed("NAdam"),
    "RAdam resumed from state_dict": resumed("RAdam"),
    "Adamax resumed from state_dict": resumed("Adamax"),
    "NAdam negative lr": bad("NAdam", lr=-1.0),
    "NAdam negative momentum_decay": bad("NAdam", momentum_decay=-1.0),
    "NAdam beta 1": bad("NAdam", betas=(1.0, 0.9)),
    "RAdam negative eps": bad("RAdam", eps=-1.0),
    "RAdam beta2 1": bad("RAdam", betas=(0.9, 1.0)),
    "Adamax negative weight_decay": bad("Adamax", weight_decay=-1.0),
    "Adamax beta1 negative": bad("Adamax", betas=(-0.1, 0.9)),
}


@pytest.mark.parametrize("script", cases(CHECKS))
def test_optimizer_checkpoints_and_checks(script):
    check(script)


# ==== (2) layers: GLU, LogSigmoid, Bilinear, PixelShuffle, unfold/fold ====


def glu_logsigmoid(torch):
    """A gated MLP (Linear to 2h, GLU) classifying with a LogSigmoid output and
    -logsigmoid(y * f(x)) as the loss; F.glu along dim 1 too."""
    nn, F = torch.nn, torch.nn.functional
    x, _ = regression(torch)
    labels = torch.tensor(np.sign(draws(16, 1, seed=3)))
    model = init_from(nn.Sequential(nn.Linear(3, 8), nn.GLU(), nn.Linear(4, 1)), torch)
    logsig = nn.LogSigmoid()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss = -logsig(labels * model(x)).mean()
        loss.backward()
        opt.step()
    gated = F.glu(model[0](x).view(16, 8), dim=1)
    return loss, gated, [p.grad for p in model.parameters()], str(model), str(logsig)


def bilinear_step(torch):
    """A bilinear scorer of (user, item) embeddings, nn.Bilinear and F.bilinear
    with and without bias, batched and on (B, T, d) inputs; Adam."""
    nn, F = torch.nn, torch.nn.functional
    users = torch.tensor(draws(6, 3, seed=5))
    items = torch.tensor(draws(6, 4, seed=6))
    target = torch.tensor(draws(6, 2, seed=7))
    layer = init_from(nn.Bilinear(3, 4, 2), torch)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        loss = F.mse_loss(layer(users, items), target)
        loss.backward()
        opt.step()
    seq = F.bilinear(users.view(2, 3, 3), items.view(2, 3, 4), layer.weight)
    one = F.bilinear(users[0], items[0], layer.weight, layer.bias)
    return loss, layer.weight.grad, layer.bias.grad, seq, one, str(layer)


def pixel_shuffle_sr(torch):
    """ESPCN's sub-pixel super-resolution: conv to C r^2 channels, PixelShuffle(2),
    an L1 loss against the high-resolution image; PixelUnshuffle inverts it."""
    nn, F = torch.nn, torch.nn.functional
    low = torch.tensor(draws(2, 1, 4, 4, seed=8))
    high = torch.tensor(draws(2, 1, 8, 8, seed=9))
    model = init_from(
        nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(8, 4, 3, padding=1),
            nn.PixelShuffle(2),
        ),
        torch,
        scale=0.3,
    )
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        out = model(low)
        loss = F.l1_loss(out, high)
        loss.backward()
        opt.step()
    back = nn.PixelUnshuffle(2)(out)
    same = torch.equal(F.pixel_shuffle(back, 2), out)
    return loss, out.shape, back, same, [p.grad for p in model.parameters()], str(model)


def im2col_conv(torch):
    """A convolution by hand (the docs' unfold example): unfold, matmul with the
    flattened weight, view back; against conv2d with the same geometry, and its
    gradients through both."""
    F = torch.nn.functional
    x = torch.tensor(draws(2, 3, 7, 6, seed=10), requires_grad=True)
    w = torch.tensor(draws(4, 3, 2, 3, seed=11), requires_grad=True)
    geometry = dict(dilation=(2, 1), padding=1, stride=(1, 2))
    cols = F.unfold(x, (2, 3), **geometry)
    out = (w.view(4, -1) @ cols).view(2, 4, 7, 3)
    ref = F.conv2d(x, w, **geometry)
    (out.pow(2).sum() + ref.sum()).backward()
    return cols.shape, out, torch.allclose(out, ref), x.grad, w.grad


def patches_fold(torch):
    """Patch embedding and its inverse: nn.Unfold into 2x2 patches with stride 2,
    a Linear on each patch, nn.Fold back; overlapping windows summed by fold
    (divided by fold(unfold(ones)), the overlap count); unbatched too."""
    nn = torch.nn
    img = torch.tensor(draws(2, 3, 6, 6, seed=12))
    unfold, fold = nn.Unfold(2, stride=2), nn.Fold((6, 6), 2, stride=2)
    proj = init_from(nn.Linear(12, 12), torch)
    opt = torch.optim.SGD(proj.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        patches = unfold(img).transpose(1, 2)  # (N, L, C*k*k)
        recon = fold(proj(patches).transpose(1, 2))
        loss = (recon - img).pow(2).mean()
        loss.backward()
        opt.step()
    F = nn.functional
    ones = torch.ones(1, 1, 5, 5)
    overlap = F.fold(F.unfold(ones, 3, padding=1), (5, 5), 3, padding=1)
    single = F.fold(F.unfold(img[0], 3, dilation=2), (6, 6), 3, dilation=2)
    return loss, recon, proj.weight.grad, overlap, single, str(unfold), str(fold)


def gradient_penalty(torch):
    """A WGAN-GP style penalty through GLU, Bilinear, unfold and PixelShuffle: the
    input gradient with create_graph, its norm penalized, backward again."""
    nn, F = torch.nn, torch.nn.functional
    x = torch.tensor(draws(2, 4, 4, 4, seed=13), requires_grad=True)
    bil = init_from(nn.Bilinear(8, 8, 3), torch)
    h = F.pixel_shuffle(x, 2)  # (2, 1, 8, 8)
    cols = F.unfold(h, 2, stride=2).mean(-1)  # (2, 4)
    g = F.glu(torch.cat([cols, cols.tanh()], 1), 1)  # (2, 4)
    z = torch.cat([g, F.logsigmoid(g)], 1)
    score = bil(z, z).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=True)
    penalty = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
    penalty.backward()
    return score, penalty, x.grad, bil.weight.grad


LAYERS = {
    "GLU + LogSigmoid classifier": glu_logsigmoid,
    "Bilinear scorer, F.bilinear": bilinear_step,
    "PixelShuffle super-resolution, PixelUnshuffle": pixel_shuffle_sr,
    "conv by unfold + matmul vs conv2d": im2col_conv,
    "Unfold/Fold patch embedding, overlap counts": patches_fold,
    "gradient penalty through them (second order)": gradient_penalty,
}


@pytest.mark.parametrize("script", cases(LAYERS))
def test_layers(script):
    check(script)


LAYER_ERRORS = {
    "glu odd dim": lambda torch: torch.nn.functional.glu(torch.zeros(3, 5)),
    "glu scalar": lambda torch: torch.nn.functional.glu(torch.tensor(1.0)),
    "bilinear batch mismatch": lambda torch: torch.nn.functional.bilinear(
        torch.zeros(3, 2), torch.zeros(4, 3), torch.zeros(5, 2, 3)
    ),
    "bilinear size mismatch": lambda torch: torch.nn.Bilinear(2, 3, 5)(
        torch.zeros(3, 2), torch.zeros(3, 4)
    ),
    "pixel_shuffle channels": lambda torch: torch.nn.PixelShuffle(2)(
        torch.zeros(2, 7, 3, 3)
    ),
    "pixel_shuffle rank": lambda torch: torch.nn.functional.pixel_shuffle(
        torch.zeros(7, 3), 2
    ),
    "pixel_unshuffle height": lambda torch: torch.nn.functional.pixel_unshuffle(
        torch.zeros(2, 2, 5, 4), 2
    ),
    "unfold 2-d input": lambda torch: torch.nn.functional.unfold(torch.zeros(6, 25), 2),
    "unfold kernel too big": lambda torch: torch.nn.Unfold(7)(torch.zeros(1, 1, 5, 5)),
    "unfold stride 0": lambda torch: torch.nn.functional.unfold(
        torch.zeros(1, 1, 5, 5), 2, stride=0
    ),
    "unfold negative padding": lambda torch: torch.nn.functional.unfold(
        torch.zeros(1, 1, 5, 5), 2, padding=-1
    ),
    "fold wrong L": lambda torch: torch.nn.Fold((6, 5), 2)(torch.zeros(1, 12, 16)),
    "fold channels not divisible": lambda torch: torch.nn.functional.fold(
        torch.zeros(1, 11, 16), (5, 5), 2
    ),
    "fold 4-d input": lambda torch: torch.nn.functional.fold(
        torch.zeros(1, 3, 5, 5), (5, 5), 2
    ),
}


@pytest.mark.parametrize("script", cases(LAYER_ERRORS))
def test_layer_errors(script):
    check(script)


# ==== (3) distributions: Bernoulli, MultivariateNormal, kl_divergence ====


def bernoulli_policy(torch):
    """REINFORCE with a Bernoulli policy (a coin per state, logits from a Linear):
    log_prob of fixed actions times the returns, an entropy bonus; probs= gives
    the same log_prob, mean and variance."""
    nn = torch.nn
    D = torch.distributions
    states = torch.tensor(draws(8, 3, seed=14))
    actions = torch.tensor((draws(8, seed=15) > 0).astype(float))
    returns = torch.tensor(draws(8, seed=16))
    policy = init_from(nn.Linear(3, 1), torch)
    opt = torch.optim.Adam(policy.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        dist = D.Bernoulli(logits=policy(states).squeeze(-1))
        text = str(dist)
        loss = -(dist.log_prob(actions) * returns).mean() - 0.01 * dist.entropy().mean()
        loss.backward()
        opt.step()
    by_probs = D.Bernoulli(probs=dist.probs)
    return (
        loss,
        text,
        dist.log_prob(actions),
        by_probs.log_prob(actions),
        by_probs.entropy(),
        by_probs.mean,
        by_probs.variance,
        dist.batch_shape,
        dist.event_shape,
        dist.sample((5,)).shape,
        [p.grad for p in policy.parameters()],
    )


def bernoulli_decoder(torch):
    """A Bernoulli decoder's reconstruction term on binary pixels, summed over
    pixels, probs from a sigmoid; broadcast of one probability over a batch of
    values; a probability of 0 and 1 at the edges."""
    D = torch.distributions
    z = torch.tensor(draws(4, 2, seed=17), requires_grad=True)
    w = torch.tensor(draws(2, 6, seed=18), requires_grad=True)
    pixels = torch.tensor((draws(4, 6, seed=19) > 0.3).astype(float))
    probs = torch.sigmoid(z @ w)
    nll = -D.Bernoulli(probs=probs).log_prob(pixels).sum(-1).mean()
    nll.backward()
    edges = D.Bernoulli(probs=torch.tensor([0.0, 1.0, 0.25]))
    coin = D.Bernoulli(0.3)
    return (
        nll,
        z.grad,
        w.grad,
        edges.log_prob(torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])),
        edges.entropy(),
        edges.logits,
        coin.log_prob(torch.tensor([1.0, 0.0])),
        coin.batch_shape,
    )


def mvn_fit(torch, kind):
    """Fitting a correlated Gaussian by maximum likelihood: loc and an
    unconstrained factor, the matrix built from it (scale_tril, covariance
    L L^T + eps I, or precision), -log_prob(data).mean() with Adam; entropy,
    mean, variance and the derived matrices; rsample's shape."""

    def script(torch):
        D = torch.distributions
        data = torch.tensor(draws(20, 3, seed=20)) @ torch.tensor(
            [[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.5]]
        )
        loc = torch.zeros(3, requires_grad=True)
        raw = torch.tensor(np.eye(3) + 0.1 * draws(3, 3, seed=21), requires_grad=True)
        opt = torch.optim.Adam([loc, raw], lr=0.05)
        for _ in range(3):
            opt.zero_grad()
            low = torch.tril(raw, -1) + torch.diag(
                torch.nn.functional.softplus(torch.diagonal(raw))
            )
            if kind == "scale_tril":
                dist = D.MultivariateNormal(loc, scale_tril=low)
            elif kind == "covariance_matrix":
                dist = D.MultivariateNormal(
                    loc, covariance_matrix=low @ low.T + 1e-3 * torch.eye(3)
                )
            else:
                dist = D.MultivariateNormal(
                    loc, precision_matrix=low @ low.T + 1e-3 * torch.eye(3)
                )
            text = str(dist)
            loss = -dist.log_prob(data).mean()
            loss.backward()
            opt.step()
        return (
            loss,
            text,
            loc.grad,
            raw.grad,
            dist.entropy(),
            dist.mean,
            dist.variance,
            dist.scale_tril,
            dist.covariance_matrix,
            dist.precision_matrix,
            dist.batch_shape,
            dist.event_shape,
            dist.rsample((4,)).shape,
            dist.sample().shape,
        )

    return script


def mvn_batched(torch):
    """A batch of two Gaussians (batched loc, one shared covariance) scored on
    values broadcast against the batch; rsample differentiable in loc."""
    D = torch.distributions
    loc = torch.tensor(draws(2, 3, seed=22), requires_grad=True)
    cov = torch.tensor(
        [[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]], requires_grad=True
    )
    dist = D.MultivariateNormal(loc, cov)
    values = torch.tensor(draws(5, 1, 3, seed=23))
    lp = dist.log_prob(values)
    sample = dist.rsample((4,))
    (lp.sum() + dist.entropy().sum()).backward(retain_graph=True)
    sample_grad = torch.autograd.grad(sample.sum(), loc)[0]
    return (
        lp,
        dist.entropy(),
        dist.variance,
        loc.grad,
        cov.grad,
        sample.shape,
        sample_grad,
        str(dist),
    )


def vae_kl(torch):
    """The VAE's KL term by kl_divergence(Normal(mu, sigma), Normal(0, 1)) against
    the closed form, in an encoder's training step."""
    nn, D = torch.nn, torch.distributions
    x, _ = regression(torch)
    encoder = init_from(nn.Linear(3, 4), torch)
    opt = torch.optim.SGD(encoder.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        mu, log_var = encoder(x).chunk(2, dim=-1)
        q = D.Normal(mu, torch.exp(0.5 * log_var))
        p = D.Normal(torch.zeros_like(mu), torch.ones_like(mu))
        kl = D.kl_divergence(q, p).sum(-1).mean()
        closed = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp())).sum(-1).mean()
        kl.backward()
        opt.step()
    return kl, closed, [p.grad for p in encoder.parameters()]


def kl_pairs(torch):
    """kl_divergence for Categorical (probs= against logits=), Bernoulli and
    MultivariateNormal pairs (batched, scale_tril against covariance), with their
    gradients; the infinities and zeros where a distribution has no mass."""
    D = torch.distributions
    a = torch.tensor(np.abs(draws(3, 4, seed=24)) + 0.1, requires_grad=True)
    b = torch.tensor(draws(3, 4, seed=25), requires_grad=True)
    cat = D.kl_divergence(D.Categorical(probs=a), D.Categorical(logits=b))
    bern = D.kl_divergence(D.Bernoulli(probs=a / a.sum()), D.Bernoulli(logits=b))
    low = torch.tensor(
        np.tril(draws(2, 3, 3, seed=26), -1) + np.diag([1.0, 0.7, 1.3]),
        requires_grad=True,
    )
    cov = torch.tensor(
        [[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.5]], requires_grad=True
    )
    mvn = D.kl_divergence(
        D.MultivariateNormal(b[:2, :3], scale_tril=low),
        D.MultivariateNormal(a[0, :3], cov),
    )
    (cat.sum() + bern.sum() + mvn.sum()).backward()
    zero_mass = D.kl_divergence(
        D.Bernoulli(torch.tensor([0.0, 1.0, 0.5, 0.5])),
        D.Bernoulli(torch.tensor([0.5, 1.0, 1.0, 0.0])),
    )
    no_support = D.kl_divergence(
        D.Categorical(torch.tensor([[0.0, 1.0], [0.5, 0.5]])),
        D.Categorical(torch.tensor([[0.5, 0.5], [0.0, 1.0]])),
    )
    return cat, bern, mvn, a.grad, b.grad, low.grad, cov.grad, zero_mass, no_support


def solve_triangular(torch):
    """linalg.solve_triangular (lower, upper, left=False, unitriangular): only the
    triangle read, so the gradient lies in it."""
    A = torch.tensor(draws(2, 3, 3, seed=27) + 3 * np.eye(3), requires_grad=True)
    B = torch.tensor(draws(2, 3, 4, seed=28), requires_grad=True)
    lower = torch.linalg.solve_triangular(A, B, upper=False)
    upper = torch.linalg.solve_triangular(A, B, upper=True)
    right = torch.linalg.solve_triangular(A, B.mT, upper=False, left=False)
    unit = torch.linalg.solve_triangular(A, B, upper=True, unitriangular=True)
    (
        lower.pow(2).sum() + upper.sum() + right.pow(2).sum() + unit.pow(2).sum()
    ).backward()
    return lower, upper, right, unit, A.grad, B.grad


def grad_after_freed_branch(torch):
    """autograd.grad(y, x) after another backward freed a branch of y's graph that
    does not lead to x: torch never visits that branch (the tape visited it, and
    raised: rsample after log_prob's backward, in grad of loc)."""
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor([3.0, 4.0], requires_grad=True)
    branch = w.exp()
    branch.sum().backward()
    return torch.autograd.grad((x + branch).sum(), x)


DISTRIBUTIONS = {
    "Bernoulli policy (REINFORCE, entropy bonus)": bernoulli_policy,
    "Bernoulli decoder, edges, a number as probs": bernoulli_decoder,
    "MultivariateNormal fit by scale_tril": mvn_fit(torch, "scale_tril"),
    "MultivariateNormal fit by covariance_matrix": mvn_fit(torch, "covariance_matrix"),
    "MultivariateNormal fit by precision_matrix": mvn_fit(torch, "precision_matrix"),
    "MultivariateNormal batched, rsample": mvn_batched,
    "VAE KL by kl_divergence(Normal, Normal)": vae_kl,
    "kl_divergence Categorical, Bernoulli, MVN": kl_pairs,
    "linalg.solve_triangular": solve_triangular,
    "autograd.grad skips freed branches": grad_after_freed_branch,
}


@pytest.mark.parametrize("script", cases(DISTRIBUTIONS))
def test_distributions(script):
    check(script)


def mvn(torch, *args, **kwargs):
    return torch.distributions.MultivariateNormal(*args, **kwargs)


DISTRIBUTION_ERRORS = {
    "Bernoulli neither": lambda torch: torch.distributions.Bernoulli(),
    "Bernoulli both": lambda torch: torch.distributions.Bernoulli(0.3, logits=0.2),
    "Bernoulli probs above 1": lambda torch: torch.distributions.Bernoulli(
        torch.tensor([1.1, 0.5])
    ),
    "Bernoulli log_prob of 0.5": lambda torch: torch.distributions.Bernoulli(
        torch.tensor([0.1, 0.5])
    ).log_prob(torch.tensor([0.5, 1.0])),
    "MVN no matrix": lambda torch: mvn(torch, torch.zeros(2)),
    "MVN two matrices": lambda torch: mvn(
        torch, torch.zeros(2), torch.eye(2), scale_tril=torch.eye(2)
    ),
    "MVN 0-d loc": lambda torch: mvn(torch, torch.tensor(0.0), torch.eye(2)),
    "MVN 1-d scale_tril": lambda torch: mvn(
        torch, torch.zeros(2), scale_tril=torch.ones(2)
    ),
    "MVN indefinite covariance": lambda torch: mvn(
        torch, torch.zeros(2), torch.tensor([[1.0, 2], [2, 1]])
    ),
    "MVN asymmetric covariance": lambda torch: mvn(
        torch, torch.zeros(2), torch.tensor([[1.0, 0.5], [0, 1]])
    ),
    "MVN upper scale_tril": lambda torch: mvn(
        torch, torch.zeros(2), scale_tril=torch.tensor([[1.0, 0.5], [0, 1]])
    ),
    "MVN negative diagonal": lambda torch: mvn(
        torch, torch.zeros(2), scale_tril=torch.tensor([[-1.0, 0], [0, 1]])
    ),
    "MVN log_prob wrong size": lambda torch: mvn(
        torch, torch.zeros(2), torch.eye(2)
    ).log_prob(torch.zeros(3)),
    "kl Normal vs Bernoulli": lambda torch: torch.distributions.kl_divergence(
        torch.distributions.Normal(0.0, 1.0), torch.distributions.Bernoulli(0.3)
    ),
    "kl MVNs of different sizes": lambda torch: torch.distributions.kl_divergence(
        mvn(torch, torch.zeros(3), torch.eye(3)),
        mvn(torch, torch.zeros(2), torch.eye(2)),
    ),
}


@pytest.mark.parametrize("script", cases(DISTRIBUTION_ERRORS))
def test_distribution_errors(script):
    check(script)
