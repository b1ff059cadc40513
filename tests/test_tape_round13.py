"""Tape round 13: short PyTorch scripts a user plausibly runs that rounds 5-12 (and
round 13's layer file, tests/test_tape_round13_layers.py) did not try, each run on
torch (float64) and on symgrad.tape through tests/tape_scripts.py's harness: values,
gradients, dtypes, shapes, Python types and reprs compared, or, where torch raises,
the same exception type.

Covered, and agreeing with torch:

- training scripts: a PINN whose loss holds u'' from two autograd.grad calls
  (create_graph) trained by Adam; truncated BPTT with an LSTM language model (hidden
  state detached between chunks, clip_grad_norm_, SGD momentum); a bidirectional GRU
  classifier over padded tokens (AdamW, LinearLR warmup, label smoothing); a GRUCell
  seq2seq decoder with teacher forcing (RMSprop); a 2-layer MLP classifier with
  CrossEntropyLoss + Adam + StepLR and eval accuracy; knowledge distillation
  (kl_div log_target, temperature); focal loss by gather; InfoNCE over normalized
  embeddings; a VAE step with given noise; skip-gram with negative sampling (bmm,
  logsigmoid, Adagrad); matrix factorization with per-group weight decay; mixup;
  a gradient-reversal autograd.Function and a straight-through estimator;
  weight normalization by hand; GNN mean aggregation by index_add; masked mean and
  max pooling; discounted returns written in place into a buffer;
- autograd: separated advanced indices (tensor lists only), bool-mask assignment of a
  tracked value into a non-leaf, gather with repeated indices on dim -1, reductions
  over dim tuples (sum/mean/amax/amin/var(correction)/std/logsumexp/norm/
  vector_norm), maximum/minimum/amax/max(dim)/min ties, clamp(min > max), the
  where(x > 0, x.sqrt(), 0) NaN-free pattern, where broadcasting gradients into a 0-d
  operand, 0-d float64 times float32, grads flowing back through float32/float16
  casts, in-place sigmoid_ on a non-leaf, version-counter errors, retain_graph
  errors, autograd.grad over several outputs / with None grad_outputs / an unused
  input, hook handles and forward (pre-)hooks, nested grad modes, kinks of
  leaky_relu/elu/relu6/hardtanh/celu/abs/gelu(tanh)/silu at 0 and the bounds,
  double backward of label-smoothed cross-entropy;
- modules and optim: load_state_dict(strict=False) results and shape-mismatch errors,
  optimizer state_dict round trip into a new optimizer and the wrong-group error,
  named_parameters/buffers/modules (prefix, recurse, remove_duplicate, shared child),
  Sequential/ModuleList/ModuleDict mutation and reprs (repeated ModuleList entries
  folded as torch does), ParameterList/ParameterDict training, BatchNorm without
  running stats, MultiStepLR with a repeated milestone, CosineAnnealingLR past
  T_max, three-phase linear OneCycleLR (momentum cycled, and Adam's betas),
  ReduceLROnPlateau with an absolute threshold and per-group min_lr, StepLR /
  ExponentialLR / CosineAnnealingLR / LinearLR chaining from an lr changed by hand
  (and LambdaLR overwriting it), add_param_group before a scheduler, Adagrad lr_decay
  and initial_accumulator_value, SGD nesterov + maximize groups, Adam betas (0, .5)
  amsgrad maximize, RMSprop momentum + weight decay, clip_grad_norm_ with a None grad
  and inf norm, error_if_nonfinite, zero_grad(set_to_none=False);
- printing: summarized 3x1000 tensors, scientific notation, nan/inf, float16/float32
  suffixes, empty tensors, Parameter, a custom module's repr with several layer kinds.

Found and fixed: `x[0, :, idx]` (an int, then a slice, then an index tensor) came out
transposed, and `x[0, :, idx] = v` raised (NumPy counts the int as an advanced index;
torch applies it as a select first: shapes.ints_first now splits such an index);
`torch.cat` / `torch.stack` promoted with NumPy's rules (int64 with float32 gave
float64), `torch.cat([torch.tensor([]), x2d])` raised, `torch.where(c, float32,
torch.tensor(0.0))` gave float64; `bool - 1` computed, `bool - bool` raised NumPy's
TypeError, `torch.sign` of a bool tensor crashed, and `index_add` cast a float32
source silently (all now as torch).

Its strict xfails, all since fixed: `scheduler.step(epoch)` (CosineAnnealingWarmRestarts'
documented fractional epochs; the closed forms of the others, with torch's deprecation
warning) was a TypeError, as was `Module.load_state_dict(assign=True)`; and the missing
APIs a script reached for: scatter_reduce (every reduction, torch's tie rule),
index_put(_), Tensor.unfold, torch.testing.assert_close, torch.utils.checkpoint,
autograd.functional.jvp, autograd.grad(is_grads_batched=), nn.init.trunc_normal_,
lr_scheduler.ConstantLR and PolynomialLR, torch.bernoulli and multinomial (with
take_along_dim, lerp_, logaddexp, remainder, hstack and nn.CosineSimilarity, added
earlier). Each has further scripts here beyond the first repro.
"""

import io
import math
from importlib import import_module

import pytest
from tape_scripts import cases, check, draws, init_from

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


# ==== (1) small training scripts ========================================================


def mlp_classifier_adam_steplr(torch):
    nn = torch.nn
    m = init_from(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), torch)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x = torch.tensor(draws(10, 4))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    crit = nn.CrossEntropyLoss()
    hist = []
    for _ in range(5):
        m.train()
        opt.zero_grad()
        loss = crit(m(x), y)
        loss.backward()
        opt.step()
        sched.step()
        m.eval()
        with torch.no_grad():
            acc = (m(x).argmax(dim=1) == y).float().mean().item()
        hist.append((loss.item(), acc, sched.get_last_lr()[0]))
    return hist, [p.detach().clone() for p in m.parameters()]


def pinn_second_derivative(torch):
    nn = torch.nn
    net = init_from(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)), torch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xs = torch.linspace(0, 1, 7).view(-1, 1)
    losses = []
    for _ in range(3):
        x = xs.clone().requires_grad_(True)
        u = net(x)
        (du,) = torch.autograd.grad(u, x, torch.ones_like(u), create_graph=True)
        (d2u,) = torch.autograd.grad(du.sum(), x, create_graph=True)
        residual = d2u + math.pi**2 * torch.sin(math.pi * x)
        boundary = net(torch.tensor([[0.0], [1.0]]))
        loss = residual.pow(2).mean() + boundary.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in net.parameters()]


def truncated_bptt_lstm(torch):
    emb = init_from(torch.nn.Embedding(6, 3), torch, seed=1)
    lstm = init_from(torch.nn.LSTM(3, 4, batch_first=True), torch, seed=2)
    head = init_from(torch.nn.Linear(4, 6), torch, seed=3)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    data = torch.tensor([[0, 1, 2, 3, 4, 5, 0, 1, 2], [5, 4, 3, 2, 1, 0, 5, 4, 3]])
    hidden, losses = None, []
    for start in range(0, 8, 4):
        x, y = data[:, start : start + 4], data[:, start + 1 : start + 5]
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden)
        out, hidden = lstm(emb(x), hidden)
        loss = torch.nn.functional.cross_entropy(
            head(out).reshape(-1, 6), y.reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        opt.step()
        losses.append(loss.item())
    return losses, hidden[0], [p.detach().clone() for p in params]


def gru_classifier_over_padded_tokens(torch):
    F = torch.nn.functional

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(7, 4, padding_idx=0)
            self.gru = torch.nn.GRU(4, 5, batch_first=True, bidirectional=True)
            self.head = torch.nn.Linear(10, 3)

        def forward(self, t):
            _, h = self.gru(self.emb(t))
            return self.head(torch.cat([h[0], h[1]], dim=1))

    m = init_from(M(), torch)
    with torch.no_grad():
        m.emb.weight[0].zero_()
    opt = torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=3)
    t = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 1, 2, 3]])
    y = torch.tensor([0, 2, 1])
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(m(t), y, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses, m.emb.weight, m.head.bias, sched.get_last_lr()


def seq2seq_grucell_teacher_forcing(torch):
    F = torch.nn.functional
    enc = init_from(torch.nn.GRU(3, 4), torch, seed=1)
    cell = init_from(torch.nn.GRUCell(5, 4), torch, seed=2)
    emb = init_from(torch.nn.Embedding(5, 5), torch, seed=3)
    out = init_from(torch.nn.Linear(4, 5), torch, seed=4)
    params = [*enc.parameters(), *cell.parameters(), *emb.parameters()]
    params += list(out.parameters())
    opt = torch.optim.RMSprop(params, lr=0.01)
    src = torch.tensor(draws(6, 2, 3))
    tgt = torch.tensor([[1, 2], [3, 4], [0, 1]])
    losses = []
    for _ in range(2):
        h = enc(src)[1][0]
        inp, loss = torch.zeros(2, dtype=torch.long), 0
        for t in range(tgt.shape[0]):
            h = cell(emb(inp), h)
            loss = loss + F.cross_entropy(out(h), tgt[t])
            inp = tgt[t]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in params]


def distillation_kl(torch):
    F = torch.nn.functional
    student = init_from(torch.nn.Linear(4, 3), torch)
    teacher = torch.tensor(draws(5, 3, seed=4))
    x, y = torch.tensor(draws(5, 4, seed=5)), torch.tensor([0, 2, 1, 1, 0])
    T = 2.0
    s = student(x)
    kd = F.kl_div(
        F.log_softmax(s / T, dim=1),
        F.log_softmax(teacher / T, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    loss = 0.7 * kd * T * T + 0.3 * F.cross_entropy(s, y)
    loss.backward()
    return loss, student.weight.grad, student.bias.grad


def focal_loss(torch):
    logits = torch.tensor(draws(6, 4), requires_grad=True)
    y = torch.tensor([0, 3, 1, 1, 2, 0])
    logpt = torch.log_softmax(logits, dim=-1).gather(1, y.unsqueeze(1)).squeeze(1)
    alpha = torch.tensor([0.25, 0.5, 0.75, 1.0])[y]
    loss = (-alpha * (1 - logpt.exp()) ** 2 * logpt).mean()
    loss.backward()
    return loss, logits.grad


def info_nce(torch):
    F = torch.nn.functional
    a = torch.tensor(draws(4, 5), requires_grad=True)
    b = torch.tensor(draws(4, 5, seed=1), requires_grad=True)
    logits = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / 0.1
    labels = torch.arange(4)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss.backward()
    return loss, a.grad, b.grad


def vae_step(torch):
    F = torch.nn.functional
    enc = init_from(torch.nn.Linear(6, 4), torch, seed=1)
    dec = init_from(torch.nn.Linear(2, 6), torch, seed=2)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)
    x = torch.tensor((draws(5, 6, seed=3) > 0).astype(float))
    eps = torch.tensor(draws(5, 2, seed=4))
    out = []
    for _ in range(3):
        mu, logvar = enc(x).chunk(2, dim=1)
        z = mu + eps * torch.exp(0.5 * logvar)
        recon = F.binary_cross_entropy_with_logits(dec(z), x, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        loss = (recon + kl) / x.shape[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out, enc.weight, dec.bias


def skipgram_negative_sampling(torch):
    F = torch.nn.functional
    inp = init_from(torch.nn.Embedding(10, 4), torch, seed=1)
    ctx = init_from(torch.nn.Embedding(10, 4), torch, seed=2)
    opt = torch.optim.Adagrad([*inp.parameters(), *ctx.parameters()], lr=0.1)
    center, pos = torch.tensor([1, 2, 3]), torch.tensor([2, 3, 4])
    neg = torch.tensor([[5, 6], [7, 8], [9, 5]])
    for _ in range(2):
        v = inp(center)
        positive = F.logsigmoid((v * ctx(pos)).sum(-1))
        negative = F.logsigmoid(-torch.bmm(ctx(neg), v.unsqueeze(2)).squeeze(2))
        loss = -(positive + negative.sum(-1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss, inp.weight, ctx.weight


def matrix_factorization(torch):
    users = init_from(torch.nn.Embedding(4, 3), torch, seed=1)
    items = init_from(torch.nn.Embedding(5, 3), torch, seed=2)
    bias = torch.nn.Embedding(4, 1)
    torch.nn.init.zeros_(bias.weight)
    opt = torch.optim.SGD(
        [
            {"params": [users.weight, items.weight], "weight_decay": 0.01},
            {"params": bias.parameters(), "lr": 0.5},
        ],
        lr=0.1,
    )
    u, i = torch.tensor([0, 1, 2, 3, 0]), torch.tensor([4, 3, 2, 1, 0])
    r = torch.tensor([5.0, 3.0, 4.0, 1.0, 2.0])
    for _ in range(3):
        pred = (users(u) * items(i)).sum(1) + bias(u).squeeze(1)
        loss = torch.nn.functional.mse_loss(pred, r)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss, users.weight, items.weight, bias.weight


def mixup_step(torch):
    model = init_from(torch.nn.Linear(3, 2), torch)
    x, y = torch.tensor(draws(4, 3)), torch.tensor([0, 1, 1, 0])
    perm, lam = torch.tensor([2, 0, 3, 1]), 0.3
    out = model(lam * x + (1 - lam) * x[perm])
    ce = torch.nn.CrossEntropyLoss()
    loss = lam * ce(out, y) + (1 - lam) * ce(out, y[perm])
    loss.backward()
    return loss, model.weight.grad


def gradient_reversal_and_straight_through(torch):
    class Reverse(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, lam):
            ctx.lam = lam
            return x.view_as(x)

        @staticmethod
        def backward(ctx, g):
            return -ctx.lam * g, None

    x = torch.tensor([0.2, 1.7, -0.6], requires_grad=True)
    q = x + (x.round() - x).detach()
    (q * q).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    y = Reverse.apply(x * 2, 0.5)
    (y**2).sum().backward()
    return q, y, g1, x.grad


def weight_norm_by_hand(torch):
    v = torch.tensor(draws(3, 4), requires_grad=True)
    g = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    w = g.unsqueeze(1) * v / v.norm(dim=1, keepdim=True)
    out = torch.nn.functional.linear(torch.tensor(draws(5, 4, seed=1)), w)
    out.tanh().sum().backward()
    return out, v.grad, g.grad


def gnn_mean_aggregation(torch):
    x = torch.tensor(draws(5, 3), requires_grad=True)
    src, dst = torch.tensor([0, 1, 2, 3, 4, 0]), torch.tensor([1, 0, 1, 2, 2, 2])
    agg = torch.zeros(3, 3).index_add(0, dst, x[src])
    deg = torch.zeros(3).index_add(0, dst, torch.ones(6)).clamp(min=1)
    out = agg / deg.unsqueeze(1)
    out.pow(2).sum().backward()
    return out, x.grad


def masked_mean_and_max_pooling(torch):
    h = torch.tensor(draws(2, 4, 3), requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    m = mask.unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    hidden = ~mask.bool().unsqueeze(-1)
    maxed = h.masked_fill(hidden, float("-inf")).max(dim=1).values
    (pooled.sum() + maxed.sum()).backward()
    return pooled, maxed, h.grad


def discounted_returns_in_place(torch):
    r = torch.tensor(draws(2, 4), requires_grad=True)
    returns = torch.zeros_like(r)
    running = torch.zeros(2)
    for t in reversed(range(4)):
        running = r[:, t] + 0.9 * running
        returns[:, t] = running
    rev = r.flip(-1).cumsum(-1).flip(-1)
    (rev * returns).sum().backward()
    return returns, rev, r.grad


TRAINING = {
    "MLP classifier: CrossEntropyLoss, Adam, StepLR, eval accuracy": (
        mlp_classifier_adam_steplr
    ),
    "PINN: u'' by two autograd.grad calls, trained by Adam": pinn_second_derivative,
    "truncated BPTT: LSTM LM with detached hidden state": truncated_bptt_lstm,
    "bidirectional GRU classifier, AdamW + LinearLR warmup": (
        gru_classifier_over_padded_tokens
    ),
    "GRUCell seq2seq decoder with teacher forcing": seq2seq_grucell_teacher_forcing,
    "knowledge distillation: kl_div(log_target) with temperature": distillation_kl,
    "focal loss by gather": focal_loss,
    "InfoNCE over normalized embeddings": info_nce,
    "VAE steps with given noise": vae_step,
    "skip-gram with negative sampling": skipgram_negative_sampling,
    "matrix factorization with per-group weight decay": matrix_factorization,
    "mixup": mixup_step,
    "gradient reversal Function and straight-through estimator": (
        gradient_reversal_and_straight_through
    ),
    "weight normalization by hand": weight_norm_by_hand,
    "GNN mean aggregation by index_add": gnn_mean_aggregation,
    "masked mean and max pooling": masked_mean_and_max_pooling,
    "discounted returns written into a buffer": discounted_returns_in_place,
}


@pytest.mark.parametrize("script", cases(TRAINING))
def test_training_scripts(script):
    check(script)


# ==== (2) autograd and tensor semantics =================================================


def separated_advanced_indices(torch):
    x = torch.tensor(draws(3, 4, 5), requires_grad=True)
    y = x[[0, 2, 2], :, [1, 1, 4]]
    z = x[:, [[0, 1], [3, 3]], 1:4:2]
    w = x[..., None, -1]
    (y.sin().sum() + (z**2).sum() + w.sum()).backward()
    return y, z, w.shape, x.grad


def int_slice_then_index_tensor(torch):
    x = torch.arange(24.0).view(2, 3, 4).requires_grad_()
    y = x[0, :, torch.tensor([0, 1])]
    y.pow(2).sum().backward()
    return y, x.grad


def int_slice_then_index_tensor_assignment(torch):
    x = torch.zeros(2, 3, 4)
    x[0, :, torch.tensor([0, 1])] = torch.arange(6.0).view(3, 2)
    return x


def tracked_value_into_a_bool_mask(torch):
    x = torch.tensor(draws(4, 3), requires_grad=True)
    v = torch.tensor(draws(5, seed=1), requires_grad=True)
    h = (x * 2).clone()
    mask = h > 0
    n = int(mask.sum())
    h[mask] = v[:n] * 3
    (h * torch.arange(12.0).view(4, 3)).sum().backward()
    return h, x.grad, v.grad, n


def gather_on_dim_minus_one_with_repeats(torch):
    x = torch.tensor(draws(3, 4), requires_grad=True)
    y = x.gather(-1, torch.tensor([[0, 0, 3], [1, 1, 1], [2, 3, 2]]))
    (y * torch.tensor(draws(3, 3, seed=2))).sum().backward()
    return y, x.grad


def reductions_over_dim_tuples(torch):
    x = torch.tensor(draws(2, 3, 4), requires_grad=True)
    outs = [
        x.sum(dim=(0, 2), keepdim=True),
        x.mean(dim=[-1, -3]),
        x.amax(dim=(1, 2)),
        x.amin(dim=(0, -1), keepdim=True),
        x.var(dim=(0, 2), correction=0),
        x.std(dim=(1, 2), unbiased=False, keepdim=True),
        x.logsumexp(dim=(0, 1)),
        x.norm(p=1, dim=(0, 2)),
        torch.linalg.vector_norm(x, ord=3, dim=(1, 2)),
        torch.sum(x, dim=None, keepdim=True),
    ]
    sum(o.sum() for o in outs).backward()
    return outs, x.grad


def ties_in_maximum_amax_and_max(torch):
    a = torch.tensor([1.0, 2.0, 3.0, 3.0], requires_grad=True)
    b = torch.tensor([1.0, 0.0, 3.0, 4.0], requires_grad=True)
    (torch.maximum(a, b) + torch.minimum(a, b) * 2).sum().backward()
    c = torch.tensor([[2.0, 2.0, 1.0], [0.0, 5.0, 5.0]], requires_grad=True)
    m = c.max(dim=1)
    (c.amax(dim=1).sum() + m.values.sum() * 10 + c.min() * 100).backward()
    return a.grad, b.grad, c.grad, m.indices


def clamp_and_where_edges(torch):
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], requires_grad=True)
    y = torch.clamp(x, min=1.0, max=0.0)
    z = torch.where(x > 0, x.sqrt(), torch.zeros_like(x))
    w = torch.clamp(x, max=torch.tensor(0.5))
    (y.sum() + z.sum() + w.sum()).backward()
    return y, z, w, x.grad


def where_broadcasts_grads_into_a_0d_operand(torch):
    c = torch.tensor([[True], [False], [True]])
    a = torch.tensor(draws(1, 4), requires_grad=True)
    b = torch.tensor(2.0, requires_grad=True)
    y = torch.where(c, a, b)
    (y * torch.arange(12.0).view(3, 4)).sum().backward()
    return y, a.grad, b.grad


def zero_dim_float64_times_float32(torch):
    w = torch.tensor(2.0, requires_grad=True)
    x = torch.ones(3, dtype=torch.float32, requires_grad=True)
    y = w * x
    y.sum().backward()
    return y.dtype, w.grad, x.grad, (torch.arange(3) * 0.5).dtype


def grads_flow_back_through_casts(torch):
    x = torch.tensor([0.1, 0.2, 0.3], requires_grad=True)
    y = x.float() ** 2
    z = y.double().sum() + x.to(torch.float16).float().sum()
    z.backward()
    return y.dtype, z.dtype, x.grad


def sigmoid_in_place_on_a_non_leaf(torch):
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    s = (x * 1).sigmoid_()
    s.sum().backward()
    return s, x.grad, s.grad_fn.name()


def chained_in_place_on_a_clone(torch):
    x = torch.tensor(draws(3), requires_grad=True)
    h = x.clone()
    h.mul_(2).add_(1).clamp_(min=0).pow_(2)
    h.sum().backward()
    return h, x.grad


def autograd_grad_of_several_outputs(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    h = x * w
    a, b = h.sum(), (h**2).sum()
    ga = torch.autograd.grad([a, b], [x, w], [torch.tensor(2.0), None], True)
    gb = torch.autograd.grad(b, h, retain_graph=True)
    (gx,) = torch.autograd.grad(b, x, create_graph=True)
    hvp = torch.autograd.grad(gx @ torch.tensor([1.0, 0.0]), w)
    return ga, gb, hvp, x.grad


def hook_handles_and_forward_hooks(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    h1 = x.register_hook(lambda g: calls.append(g.clone()))
    h2 = x.register_hook(lambda g: g * 10)
    h1.remove()
    (x * x).sum().backward()
    h2.remove()
    (x * x).sum().backward()
    lin = init_from(torch.nn.Linear(2, 2), torch)
    hh = lin.register_forward_hook(lambda m, i, o: o * 0 + 1)
    r1 = lin(torch.ones(1, 2))
    hh.remove()
    r2 = lin(torch.ones(1, 2))
    lin.register_forward_pre_hook(lambda m, i: (i[0] * 2,))
    return len(calls), x.grad, r1, r2, lin(torch.ones(1, 2))


def nested_grad_modes(torch):
    x = torch.ones(2, requires_grad=True)
    out = []
    with torch.no_grad():
        out.append(torch.is_grad_enabled())
        with torch.enable_grad():
            out.append((x * 2).requires_grad)
        out.append((x * 2).requires_grad)
        with torch.set_grad_enabled(True):
            out.append((x * 3).requires_grad)
    torch.set_grad_enabled(False)
    out.append((x * 4).requires_grad)
    torch.set_grad_enabled(True)
    with torch.inference_mode(mode=False):
        out.append((x * 5).requires_grad)
    return out


def activation_kinks(torch):
    F = torch.nn.functional
    x = torch.tensor([0.0, -1.0, 1.0, 6.0, -6.0], requires_grad=True)
    outs = [
        F.leaky_relu(x, 0.1),
        F.elu(x),
        F.relu6(x),
        F.hardtanh(x, -1.0, 1.0),
        F.celu(x, 2.0),
        x.abs(),
        F.gelu(x, approximate="tanh"),
        F.silu(x),
    ]
    return outs, [torch.autograd.grad(o.sum(), x, retain_graph=True) for o in outs]


def double_backward_of_smoothed_cross_entropy(torch):
    x = torch.tensor(draws(3, 4), requires_grad=True)
    loss = torch.nn.functional.cross_entropy(
        x, torch.tensor([0, 3, 1]), label_smoothing=0.2
    )
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    g.pow(2).sum().backward()
    return g, x.grad


def cat_promotes_as_torch(torch):
    return torch.cat([torch.arange(2), torch.ones(2, dtype=torch.float32)]).dtype


def cat_onto_a_legacy_empty_tensor(torch):
    out = torch.tensor([])
    for k in range(3):
        out = torch.cat([out, torch.full((1, 2), float(k))])
    return out


def where_with_a_0d_other(torch):
    x = torch.ones(2, dtype=torch.float32)
    return torch.where(x > 0, x, torch.tensor(0.0)).dtype


def bool_minus_int(torch):
    return torch.tensor([True, False]) - 1


def bool_minus_bool(torch):
    return torch.tensor([True]) - torch.tensor([False])


def sign_of_bool(torch):
    return torch.tensor([True, False]).sign()


def index_add_of_another_dtype(torch):
    return torch.zeros(3).index_add(
        0, torch.tensor([0, 2]), torch.ones(2, dtype=torch.float32)
    )


AUTOGRAD = {
    "separated advanced indices (tensor lists)": separated_advanced_indices,
    "x[0, :, idx]: an int, a slice, then an index tensor": int_slice_then_index_tensor,
    "x[0, :, idx] = v": int_slice_then_index_tensor_assignment,
    "a tracked value assigned through a bool mask": tracked_value_into_a_bool_mask,
    "gather on dim -1 with repeated indices": gather_on_dim_minus_one_with_repeats,
    "reductions over dim tuples, keepdim, correction": reductions_over_dim_tuples,
    "ties: maximum/minimum, amax, max(dim), min()": ties_in_maximum_amax_and_max,
    "clamp(min > max), where(x > 0, sqrt(x), 0)": clamp_and_where_edges,
    "where broadcasts its gradients into a 0-d operand": (
        where_broadcasts_grads_into_a_0d_operand
    ),
    "0-d float64 times float32": zero_dim_float64_times_float32,
    "gradients flow back through float32 / float16 casts": (
        grads_flow_back_through_casts
    ),
    "sigmoid_ on a non-leaf": sigmoid_in_place_on_a_non_leaf,
    "chained in-place ops on a clone": chained_in_place_on_a_clone,
    "autograd.grad of several outputs, None grad_outputs, hvp": (
        autograd_grad_of_several_outputs
    ),
    "hook handles; forward and forward-pre hooks": hook_handles_and_forward_hooks,
    "nested grad modes": nested_grad_modes,
    "activation gradients at kinks and bounds": activation_kinks,
    "double backward of label-smoothed cross_entropy": (
        double_backward_of_smoothed_cross_entropy
    ),
    "torch.cat promotes int64 with float32 to float32": cat_promotes_as_torch,
    "torch.cat onto a legacy empty tensor([])": cat_onto_a_legacy_empty_tensor,
    "torch.where(c, float32, 0-d float64)": where_with_a_0d_other,
    "bool tensor minus an int": bool_minus_int,
    "bool tensor minus a bool tensor": bool_minus_bool,
    "sign of a bool tensor": sign_of_bool,
    "index_add of a float32 source into float64": index_add_of_another_dtype,
}


@pytest.mark.parametrize("script", cases(AUTOGRAD))
def test_autograd_and_tensors(script):
    check(script)


# ==== (3) errors torch raises ===========================================================


def int_tensor_requiring_grad(torch):
    return torch.tensor([1, 2], requires_grad=True)


def requires_grad_on_an_int_tensor(torch):
    return torch.arange(3).requires_grad_()


def mean_of_an_int_tensor(torch):
    return torch.arange(4).mean()


def int_to_a_negative_power(torch):
    return torch.tensor([2, 3]) ** -1


def requires_grad_false_on_a_non_leaf(torch):
    return (torch.ones(2, requires_grad=True) * 2).requires_grad_(False)


def tanh_overwrites_a_value_pow_saved(torch):
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    a = x * 1
    b = a**2
    a.tanh_()
    b.sum().backward()


def exp_output_edited_before_backward(torch):
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    y = x.exp()
    y[0] = 0.0
    y.sum().backward()


def second_backward_without_retain_graph(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward()
    y.backward()


def autograd_grad_of_an_unused_input(torch):
    x = torch.tensor([1.0], requires_grad=True)
    z = torch.tensor([1.0], requires_grad=True)
    torch.autograd.grad((x * 2).sum(), [x, z])


def load_state_dict_shape_mismatch(torch):
    torch.nn.Linear(3, 3).load_state_dict(torch.nn.Linear(2, 3).state_dict())


def load_state_dict_shape_mismatch_non_strict(torch):
    b = torch.nn.Linear(3, 3)
    b.load_state_dict(torch.nn.Linear(2, 3).state_dict(), strict=False)


def optimizer_state_of_another_group_count(torch):
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    o1 = torch.optim.SGD([{"params": [p]}, {"params": [q]}], lr=0.1)
    torch.optim.SGD([p, q], lr=0.1).load_state_dict(o1.state_dict())


def clip_grad_norm_error_if_nonfinite(torch):
    a = torch.nn.Parameter(torch.tensor([1.0]))
    a.grad = torch.tensor([float("inf")])
    torch.nn.utils.clip_grad_norm_([a], 1.0, error_if_nonfinite=True)


ERRORS = {
    "tensor(int, requires_grad=True)": int_tensor_requiring_grad,
    "requires_grad_() on an int tensor": requires_grad_on_an_int_tensor,
    "mean of an int tensor": mean_of_an_int_tensor,
    "int tensor to a negative power": int_to_a_negative_power,
    "requires_grad_(False) on a non-leaf": requires_grad_false_on_a_non_leaf,
    "tanh_ overwrites the value pow saved": tanh_overwrites_a_value_pow_saved,
    "exp's output edited before backward": exp_output_edited_before_backward,
    "second backward without retain_graph": second_backward_without_retain_graph,
    "autograd.grad of an unused input": autograd_grad_of_an_unused_input,
    "load_state_dict: shape mismatch": load_state_dict_shape_mismatch,
    "load_state_dict(strict=False): shape mismatch still raises": (
        load_state_dict_shape_mismatch_non_strict
    ),
    "optimizer.load_state_dict with another group count": (
        optimizer_state_of_another_group_count
    ),
    "clip_grad_norm_(error_if_nonfinite=True)": clip_grad_norm_error_if_nonfinite,
}


@pytest.mark.parametrize("script", cases(ERRORS))
def test_errors_match_torch(script):
    check(script)


# ==== (4) modules, state dicts, optimizers, schedulers ==================================


def load_state_dict_non_strict_results(torch):
    nn = torch.nn
    a = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    b = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    r1 = b.load_state_dict(a.state_dict(), strict=False)
    sd = b.state_dict()
    sd["extra"] = torch.zeros(1)
    r2 = a.load_state_dict(sd, strict=False)
    r3 = b.load_state_dict(b.state_dict())
    return (
        r1.missing_keys,
        r1.unexpected_keys,
        r2.missing_keys,
        r2.unexpected_keys,
        (
            str(r3),
            repr(r1),
        ),
    )


def load_state_dict_assign(torch):
    a = init_from(torch.nn.Linear(2, 2), torch)
    b = torch.nn.Linear(2, 2)
    sd = {k: v.clone() for k, v in a.state_dict().items()}
    b.bias.requires_grad_(False)
    b.load_state_dict(sd, assign=True)
    sd["weight"][0, 0] = 7.0  # assigned, not copied: the model sees it
    return b.weight, b.bias, type(b.weight).__name__, list(dict(b.named_parameters()))


def optimizer_state_into_a_new_optimizer(torch):
    model = init_from(torch.nn.Linear(3, 2), torch)
    opt = torch.optim.Adam(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    x = torch.tensor(draws(4, 3))
    for _ in range(2):
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        opt.step()
    sd = opt.state_dict()
    model2 = torch.nn.Linear(3, 2)
    model2.load_state_dict(model.state_dict())
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    opt2.load_state_dict(sd)
    for o, m in ((opt, model), (opt2, model2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    group = opt2.param_groups[0]
    return (
        model.weight,
        model2.weight,
        group["lr"],
        group["betas"],
        (
            sorted(sd["state"][0]),
            sd["param_groups"][0]["params"],
        ),
    )


def module_introspection(torch):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 2)
            self.scale = torch.nn.Parameter(torch.ones(1))
            self.register_buffer("steps", torch.zeros((), dtype=torch.int64))

        def extra_repr(self):
            return "custom=True"

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Block()
            self.b = self.a
            self.head = torch.nn.Linear(2, 1)

    n = Net()
    s = torch.nn.Sequential(n.head, n.head)
    return (
        [k for k, _ in n.named_parameters()],
        [k for k, _ in n.named_parameters(prefix="net")],
        [k for k, _ in n.a.named_parameters(recurse=False)],
        [k for k, _ in n.named_buffers()],
        [k for k, _ in n.named_modules()],
        [k for k, _ in s.named_parameters(remove_duplicate=False)],
        [k for k, _ in s.named_modules(remove_duplicate=False)],
        list(n.state_dict()),
        [v.requires_grad for v in n.state_dict(keep_vars=True).values()],
        repr(n),
        sum(p.numel() for p in n.parameters()),
    )


def containers_mutated(torch):
    nn = torch.nn
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    seq.append(nn.Linear(3, 1))
    seq.insert(1, nn.Tanh())
    seq.extend([nn.Sigmoid()])
    popped = seq.pop(1)
    del seq[0]
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)] + [nn.ReLU(), nn.ReLU()])
    ml.insert(0, nn.Tanh())
    ml += nn.ModuleList([nn.Identity()])
    md = nn.ModuleDict({"a": nn.ReLU()})
    md.update({"b": nn.Tanh(), "c": nn.Linear(1, 2)})
    dropped = md.pop("a")
    return (
        repr(seq),
        repr(popped),
        repr(ml),
        repr(ml[1:3]),
        list(md),
        (
            repr(dropped),
            repr(md),
            len(seq),
        ),
    )


def parameter_list_and_dict_training(torch):
    nn = torch.nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.ws = nn.ParameterList(
                [nn.Parameter(torch.tensor(draws(2, 2, seed=i))) for i in range(2)]
            )
            self.bs = nn.ParameterDict(
                {"a": nn.Parameter(torch.zeros(2)), "b": nn.Parameter(torch.ones(2))}
            )

        def forward(self, x):
            for w in self.ws:
                x = torch.tanh(x @ w)
            return x + self.bs["a"] * self.bs["b"]

    m = M()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5)
    x = torch.tensor(draws(3, 2, seed=5))
    for _ in range(2):
        opt.zero_grad()
        m(x).pow(2).sum().backward()
        opt.step()
    return (
        [k for k, _ in m.named_parameters()],
        list(m.state_dict()),
        (
            [p.detach().clone() for p in m.parameters()],
            repr(m),
        ),
    )


def batchnorm_without_running_stats_in_eval(torch):
    bn = torch.nn.BatchNorm1d(3, track_running_stats=False)
    x = torch.tensor(draws(4, 3), requires_grad=True)
    bn.eval()
    y = bn(x)
    y.pow(3).sum().backward()
    return y, x.grad, bn.running_mean, list(bn.state_dict())


def checkpoint_with_weights_only(torch):
    m = init_from(torch.nn.Linear(2, 2), torch)
    buf = io.BytesIO()
    torch.save({"model": m.state_dict(), "step": 3}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True, map_location="cpu")
    m2 = torch.nn.Linear(2, 2)
    m2.load_state_dict(ckpt["model"])
    return m2.weight, ckpt["step"]


def lr_path(opt, scheduler, steps, changes=None):
    lrs = []
    for k in range(steps):
        if changes and k in changes:
            opt.param_groups[0]["lr"] = changes[k]
        opt.step()
        scheduler.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    return lrs


def one_param_sgd(torch, **kw):
    return torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], **{"lr": 1.0, **kw})


def schedules(torch):
    S = torch.optim.lr_scheduler
    o = one_param_sgd(torch)
    multistep = lr_path(o, S.MultiStepLR(o, milestones=[2, 2, 4], gamma=0.5), 6)
    o = one_param_sgd(torch)
    cosine = lr_path(o, S.CosineAnnealingLR(o, T_max=4, eta_min=0.1), 11)
    o = one_param_sgd(torch, lr=0.1, momentum=0.9)
    s = S.OneCycleLR(
        o, max_lr=1.0, total_steps=10, anneal_strategy="linear", three_phase=True
    )
    cycle = [(lr, o.param_groups[0]["momentum"]) for lr in lr_path(o, s, 9)]
    return multistep, cosine, cycle


def schedules_after_lr_changed_by_hand(torch):
    S = torch.optim.lr_scheduler
    o = one_param_sgd(torch)
    step = lr_path(o, S.StepLR(o, step_size=2, gamma=0.5), 6, {3: 10.0})
    o = one_param_sgd(torch)
    exp = lr_path(o, S.ExponentialLR(o, gamma=0.5), 5, {2: 3.0})
    o = one_param_sgd(torch)
    cos = lr_path(o, S.CosineAnnealingLR(o, T_max=5), 6, {2: 3.0})
    o = one_param_sgd(torch)
    linear = lr_path(o, S.LinearLR(o, 1.0, 0.5, total_iters=4), 6, {1: 2.0})
    o = one_param_sgd(torch)
    lam = lr_path(o, S.LambdaLR(o, lambda e: 0.9**e), 4, {1: 5.0})
    return step, exp, cos, linear, lam


def plateau_abs_threshold_per_group_min_lr(torch):
    p, q = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=1.0)
    s = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        factor=0.1,
        patience=1,
        threshold=0.5,
        threshold_mode="abs",
        min_lr=[0.05, 0.2],
    )
    lrs = []
    for loss in [5.0, 4.8, 4.7, 4.6, 3.0, 2.9, 2.8, 2.7, 2.6]:
        opt.step()
        s.step(loss)
        lrs.append([g["lr"] for g in opt.param_groups])
    return lrs


def one_cycle_cycles_adams_betas(torch):
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = torch.optim.Adam([p], lr=0.1)
    s = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=6)
    out = []
    for _ in range(5):
        opt.zero_grad()
        (p**2).sum().backward()
        opt.step()
        s.step()
        out.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"]))
    return out, p


def add_param_group_before_a_scheduler(torch):
    p, q = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=1.0, momentum=0.9)
    opt.add_param_group({"params": [q], "lr": 0.1})
    s = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    for _ in range(2):
        opt.zero_grad()
        (p * q).sum().backward()
        opt.step()
        s.step()
    return p, q, s.get_last_lr(), s.base_lrs, opt.param_groups[1]["momentum"]


def closed_form_schedules(torch):
    import warnings

    S = torch.optim.lr_scheduler
    makers = [
        lambda o: S.StepLR(o, step_size=2, gamma=0.5),
        lambda o: S.MultiStepLR(o, milestones=[1, 3, 3], gamma=0.5),
        lambda o: S.ExponentialLR(o, gamma=0.7),
        lambda o: S.CosineAnnealingLR(o, T_max=4, eta_min=0.1),
        lambda o: S.LinearLR(o, start_factor=0.25, total_iters=3),
        lambda o: S.ConstantLR(o, factor=0.5, total_iters=2),
        lambda o: S.PolynomialLR(o, total_iters=4, power=2.0),
    ]
    paths, messages = [], set()
    for make in makers:
        o = one_param_sgd(torch)
        s = make(o)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for epoch in (3, 1, 5, 2):  # jumps, backwards too
                o.step()
                s.step(epoch)
                paths.append([o.param_groups[0]["lr"], s.last_epoch, s.get_last_lr()])
            s.step()  # and on from there by the recurrence
            paths.append(o.param_groups[0]["lr"])
        messages |= {str(w.message)[:40] for w in caught}
    return paths, sorted(messages)


def polynomial_and_constant_lr(torch):
    S = torch.optim.lr_scheduler
    o = one_param_sgd(torch, lr=0.3)
    poly = lr_path(o, S.PolynomialLR(o, total_iters=4, power=1.5), 7, {2: 0.2})
    o = one_param_sgd(torch)
    const = lr_path(o, S.ConstantLR(o, factor=0.25, total_iters=3), 6, {1: 0.5})
    return poly, const


def scheduler_step_with_an_epoch(torch):
    o = one_param_sgd(torch)
    s = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        o, T_0=2, T_mult=2, eta_min=0.1
    )
    lrs = []
    for epoch in range(3):
        for i in range(3):
            o.step()
            s.step(epoch + i / 3)
            lrs.append(o.param_groups[0]["lr"])
    return lrs


def optimizer_variants(torch):
    def run(make, loss, steps=3):
        p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        opt = make([p])
        for _ in range(steps):
            opt.zero_grad()
            loss(p).backward()
            opt.step()
        return p.detach().clone(), {k: v for k, v in opt.state[p].items()}

    O = torch.optim
    return [
        run(
            lambda ps: O.Adagrad(
                ps, lr=0.5, lr_decay=0.1, initial_accumulator_value=0.3, eps=1e-3
            ),
            lambda p: (p**3).sum(),
        ),
        run(
            lambda ps: O.Adam(
                ps, lr=0.1, betas=(0.0, 0.5), eps=0.1, amsgrad=True, maximize=True
            ),
            lambda p: -(p - 0.3).pow(2).sum(),
        ),
        run(
            lambda ps: O.RMSprop(
                ps, lr=0.01, alpha=0.9, eps=1e-3, weight_decay=0.1, momentum=0.5
            ),
            lambda p: p.sin().sum(),
        ),
    ]


def sgd_nesterov_maximize_groups(torch):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    q = torch.nn.Parameter(torch.tensor([0.5]))
    opt = torch.optim.SGD(
        [
            {"params": [p], "nesterov": True, "momentum": 0.9},
            {"params": [q], "lr": 0.01},
        ],
        lr=0.1,
        weight_decay=0.05,
        maximize=True,
    )
    for _ in range(3):
        opt.zero_grad()
        (-(p**2).sum() - (q**2).sum()).backward()
        opt.step()
    return p, q, opt.state[p]["momentum_buffer"]


def clipping_with_a_missing_grad(torch):
    a = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    b = torch.nn.Parameter(torch.tensor([1.0]))
    (a * 2).sum().backward()
    n = torch.nn.utils.clip_grad_norm_([a, b], max_norm=1.0)
    n2 = torch.nn.utils.clip_grad_norm_(a, max_norm=0.5, norm_type="inf")
    torch.nn.utils.clip_grad_value_([a, b], 0.1)
    return n, n2, a.grad, b.grad


def zero_grad_keeping_the_tensor(torch):
    m = init_from(torch.nn.Linear(2, 1), torch)
    m(torch.ones(1, 2)).sum().backward()
    g = m.weight.grad
    m.zero_grad(set_to_none=False)
    kept = m.weight.grad is g, m.weight.grad
    torch.optim.SGD(m.parameters(), lr=0.1).zero_grad()
    return kept, m.weight.grad, m.bias.grad


MODULES_AND_OPTIM = {
    "load_state_dict(strict=False) results": load_state_dict_non_strict_results,
    "load_state_dict(assign=True)": load_state_dict_assign,
    "optimizer state into a new optimizer": optimizer_state_into_a_new_optimizer,
    "named_parameters/buffers/modules, keep_vars, extra_repr": module_introspection,
    "Sequential/ModuleList/ModuleDict mutated, folded reprs": containers_mutated,
    "ParameterList and ParameterDict trained": parameter_list_and_dict_training,
    "BatchNorm1d(track_running_stats=False) in eval": (
        batchnorm_without_running_stats_in_eval
    ),
    "torch.load(weights_only=True, map_location='cpu')": checkpoint_with_weights_only,
    "MultiStepLR repeated milestone, cosine past T_max, 3-phase OneCycleLR": schedules,
    "schedulers after the lr is changed by hand": schedules_after_lr_changed_by_hand,
    "ReduceLROnPlateau: abs threshold, per-group min_lr": (
        plateau_abs_threshold_per_group_min_lr
    ),
    "OneCycleLR cycles Adam's betas": one_cycle_cycles_adams_betas,
    "add_param_group before a scheduler": add_param_group_before_a_scheduler,
    "scheduler.step(epoch): warm restarts at fractional epochs": (
        scheduler_step_with_an_epoch
    ),
    "scheduler.step(epoch): closed forms, and the warning": closed_form_schedules,
    "PolynomialLR and ConstantLR, chained by step()": polynomial_and_constant_lr,
    "Adagrad lr_decay, Adam betas (0, .5) amsgrad maximize, RMSprop momentum": (
        optimizer_variants
    ),
    "SGD nesterov + maximize in groups": sgd_nesterov_maximize_groups,
    "clip_grad_norm_/value_ with a missing grad, inf norm": (
        clipping_with_a_missing_grad
    ),
    "zero_grad(set_to_none=False) keeps the tensor": zero_grad_keeping_the_tensor,
}


@pytest.mark.parametrize("script", cases(MODULES_AND_OPTIM))
def test_modules_and_optimizers(script):
    check(script)


# ==== (5) printing =====================================================================


def tensor_reprs(torch):
    return [
        repr(torch.arange(3000.0).view(3, 1000) / 7),
        repr(torch.arange(2000).view(2, 1000)),
        repr(torch.tensor([1e-8, 1.0, 1e8])),
        repr(torch.tensor([[float("nan"), float("inf")], [-float("inf"), 1.5]])),
        repr(torch.tensor([0.1, 2.0], dtype=torch.float32, requires_grad=True) * 2),
        repr(torch.tensor([1.0, 2.0], dtype=torch.float16)),
        repr(torch.tensor(-0.0)),
        repr(torch.zeros(2, 0, 3)),
        repr(torch.ones(2, 2, 2)),
        str(torch.nn.Parameter(torch.ones(2, 2))),
    ]


def module_repr_with_many_layer_kinds(torch):
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(3, 4, bias=False), nn.LeakyReLU(0.2))
            self.norm = nn.LayerNorm(4, eps=1e-6)
            self.drop = nn.Dropout(p=0.25)
            self.emb = nn.Embedding(10, 3, padding_idx=0)
            self.gelu = nn.GELU(approximate="tanh")
            self.sm = nn.LogSoftmax(dim=-1)
            self.bn = nn.BatchNorm1d(4, momentum=None, affine=False)
            self.loss = nn.CrossEntropyLoss(label_smoothing=0.1)

    return repr(Net())


PRINTING = {
    "tensor reprs: summarized, scientific, nan/inf, dtypes, empty": tensor_reprs,
    "a module's repr with many layer kinds": module_repr_with_many_layer_kinds,
}


@pytest.mark.parametrize("script", cases(PRINTING))
def test_printing(script):
    check(script)


# ==== (6) missing APIs a script reaches for ============================================


def take_along_dim(torch):
    x = torch.tensor(draws(3, 5), requires_grad=True)
    y = torch.take_along_dim(x, x.argsort(dim=1, descending=True)[:, :2], dim=1)
    y.sum().backward()
    return y, x.grad


def scatter_reduce_amax(torch):
    src = torch.tensor([1.0, 5.0, 2.0, 5.0, 3.0], requires_grad=True)
    idx = torch.tensor([0, 1, 0, 1, 2])
    out = torch.zeros(3).scatter_reduce(0, idx, src, "amax", include_self=False)
    out.sum().backward()
    return out, src.grad


def index_put_accumulate(torch):
    v = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = torch.zeros(5).index_put_((torch.tensor([1, 1, 3]),), v * v, accumulate=True)
    (y * torch.arange(5.0)).sum().backward()
    return y, v.grad


def ema_with_lerp_(torch):
    avg = torch.tensor([1.0, 2.0])
    avg.lerp_(torch.tensor([3.0, 0.0]), 0.1)
    return avg


def logaddexp(torch):
    return torch.logaddexp(torch.tensor([0.0, -1000.0]), torch.tensor([1.0, -1000.0]))


def remainder_function(torch):
    return torch.remainder(torch.tensor([7.0, -7.0]), 2.5)


def hstack(torch):
    return torch.hstack([torch.ones(2, 1), torch.zeros(2, 2)])


def tensor_unfold(torch):
    x = torch.arange(10.0, requires_grad=True)
    w = x.unfold(0, 4, 2)
    (w * torch.arange(16.0).view(4, 4)).sum().backward()
    return w, x.grad


def assert_close_of_near_tensors(torch):
    torch.testing.assert_close(torch.tensor([1.0]), torch.tensor([1.0 + 1e-12]))


def activation_checkpointing(torch):
    checkpoint = import_module(torch.__name__ + ".utils.checkpoint").checkpoint
    lin = init_from(torch.nn.Linear(3, 3), torch)
    x = torch.tensor(draws(2, 3), requires_grad=True)
    y = checkpoint(lambda t: lin(t).tanh(), x, use_reentrant=False)
    y.sum().backward()
    return y, x.grad, lin.weight.grad


def forward_mode_jvp(torch):
    a, v = torch.tensor([0.3, 0.7]), torch.tensor([1.0, 2.0])
    return torch.autograd.functional.jvp(lambda t: t.sin() * t, a, v)


def grads_batched(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    return torch.autograd.grad(x**2, x, torch.eye(2), is_grads_batched=True)


def trunc_normal_init(torch):
    v = torch.nn.init.trunc_normal_(torch.empty(1000), std=1.0, a=-0.5, b=0.5)
    return bool((v.abs() <= 0.5).all())


def constant_lr_warmup(torch):
    o = one_param_sgd(torch)
    return lr_path(o, torch.optim.lr_scheduler.ConstantLR(o, 0.5, total_iters=2), 4)


def bernoulli(torch):
    b = torch.bernoulli(torch.full((3, 4), 0.5))
    return b.shape, b.dtype


def cosine_similarity_module(torch):
    x = torch.tensor(draws(3, 4), requires_grad=True)
    s = torch.nn.CosineSimilarity(dim=1)(x, torch.tensor(draws(3, 4, seed=1)))
    s.sum().backward()
    return s, x.grad


def scatter_reduce_every_reduction(torch):
    """Ties (amax/amin share the gradient; torch counts self's value in a tie even
    when include_self=False), zeros in prod, untouched positions, both include_self."""
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    results = []
    for src, base, idx in [
        ([1.0, 5.0, 2.0, 5.0, 3.0], [0.5, 5.0, -1.0, 7.0], [0, 1, 0, 1, 2]),
        ([0.0, 2.0, 3.0, 0.0, 4.0], [2.0, 0.0, 1.5, 2.0], [0, 0, 1, 1, 2]),
        ([1.0, -2.0, 3.0, 2.0, 2.0], [2.0, 3.0, 2.0, 1.0], [2, 2, 2, 0, 0]),
    ]:
        for reduce in ("sum", "prod", "mean", "amax", "amin"):
            for include_self in (True, False):
                s = torch.tensor(src, requires_grad=True)
                b = torch.tensor(base, requires_grad=True)
                out = (b * 1).scatter_reduce(
                    0, torch.tensor(idx), s, reduce, include_self=include_self
                )
                (out * weights).sum().backward()
                results.append((out, s.grad, b.grad))
    return results


def scatter_reduce_2d_and_in_place(torch):
    src = torch.tensor(draws(2, 3), requires_grad=True)
    idx = torch.tensor([[0, 1, 0], [1, 1, 0]])
    out = torch.zeros(2, 3).scatter_reduce(1, idx, src, "mean")
    y = torch.ones(2, 3)
    y.scatter_reduce_(0, idx, src.detach(), "amax", include_self=False)
    (out**2).sum().backward()
    return out, y, src.grad


def index_put_variants(torch):
    v = torch.tensor([[1.0, 2.0]], requires_grad=True)  # broadcast over two rows
    x = torch.zeros(3, 2, requires_grad=True)
    rows = (torch.tensor([0, 2]),)
    put = (x * 2).index_put(rows, v)
    added = (x * 2).index_put(rows + (torch.tensor([1, 1]),), v[0, 1], accumulate=True)
    ((put + added) * torch.arange(6.0).view(3, 2)).sum().backward()
    y = torch.ones(3)
    y.index_put_((torch.tensor([0, 0]),), torch.tensor([2.0, 3.0]), accumulate=True)
    return put, added, v.grad, x.grad, y


def unfold_2d_and_second_order(torch):
    x = torch.tensor(draws(3, 7), requires_grad=True)
    w = x.unfold(1, 3, 2)  # (3, 3, 3), overlapping by one
    loss = (w.sin() * torch.arange(27.0).view(3, 3, 3)).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (g**2).sum().backward()
    errors = []
    for bad in (lambda: x.unfold(1, 8, 1), lambda: x.unfold(0, 2, 0)):
        try:
            bad()
        except RuntimeError as e:
            errors.append(str(e))
    return w.shape, w, g, x.grad, errors, torch.arange(4.0).unfold(0, 2, 3)


def assert_close_messages(torch):
    messages = []
    for a, b, kw in [
        ([1.0], [1.1], {}),
        ([1.0, 2.0, 3.0], [1.0, 2.5, 4.0], {}),
        ([1.0, 2.0], [1.0], {}),
        ([1.0, 2.0], [1.05, 2.0], {"rtol": 0.1, "atol": 0.0}),
    ]:
        try:
            torch.testing.assert_close(
                torch.tensor(a, dtype=torch.float32),
                torch.tensor(b, dtype=torch.float32),
                **kw,
            )
            messages.append(None)
        except AssertionError as e:
            messages.append(str(e))
    return messages


def jvp_of_two_inputs_and_two_outputs(torch):
    def f(a, b):
        return (a * b).sin(), a.exp().sum() * b

    a, b = torch.tensor(draws(3)), torch.tensor(draws(3, seed=2))
    va, vb = torch.tensor(draws(3, seed=3)), torch.tensor(draws(3, seed=4))
    out, tangents = torch.autograd.functional.jvp(f, (a, b), (va, vb))
    return out, tangents, torch.autograd.functional.jvp(torch.exp, torch.tensor(0.5))


def batched_grads_of_a_jacobian(torch):
    x = torch.tensor(draws(3), requires_grad=True)
    y = torch.stack([x.prod(), (x**2).sum(), x.sin().sum()])
    (jac,) = torch.autograd.grad(y, x, torch.eye(3), is_grads_batched=True)
    return jac


def schedulers_and_sampling_shapes(torch):
    torch.manual_seed(0)
    m = torch.multinomial(torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]]), 2)
    b = torch.bernoulli(torch.tensor([0.0, 1.0, 1.0]))
    t = torch.nn.init.trunc_normal_(torch.empty(500), mean=1.0, std=2.0, a=0.0, b=1.5)
    return (
        m.shape,
        m.dtype,
        bool((m[1] == 0).all()),
        b,
        bool((t >= 0).all() and (t <= 1.5).all()),
    )


MISSING = {
    "torch.take_along_dim": take_along_dim,
    "Tensor.scatter_reduce (GNN amax)": scatter_reduce_amax,
    "Tensor.index_put_(accumulate=True)": index_put_accumulate,
    "Tensor.lerp_ (EMA of weights)": ema_with_lerp_,
    "torch.logaddexp": logaddexp,
    "torch.remainder (while % works)": remainder_function,
    "torch.hstack": hstack,
    "Tensor.unfold (sliding windows)": tensor_unfold,
    "torch.testing.assert_close": assert_close_of_near_tensors,
    "torch.utils.checkpoint": activation_checkpointing,
    "autograd.functional.jvp": forward_mode_jvp,
    "autograd.grad(is_grads_batched=True)": grads_batched,
    "nn.init.trunc_normal_": trunc_normal_init,
    "lr_scheduler.ConstantLR": constant_lr_warmup,
    "torch.bernoulli": bernoulli,
    "nn.CosineSimilarity": cosine_similarity_module,
    "scatter_reduce: every reduction, ties, zeros, include_self": (
        scatter_reduce_every_reduction
    ),
    "scatter_reduce along dim 1, and in place": scatter_reduce_2d_and_in_place,
    "index_put: broadcast values, accumulate, in place": index_put_variants,
    "Tensor.unfold along dim 1, second order, errors": unfold_2d_and_second_order,
    "testing.assert_close messages": assert_close_messages,
    "autograd.functional.jvp of two inputs and outputs": (
        jvp_of_two_inputs_and_two_outputs
    ),
    "is_grads_batched: a Jacobian's rows": batched_grads_of_a_jacobian,
    "multinomial, bernoulli, trunc_normal_": schedulers_and_sampling_shapes,
}


@pytest.mark.parametrize("script", cases(MISSING))
def test_missing_apis(script):
    check(script)
