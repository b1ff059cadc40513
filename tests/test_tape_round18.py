"""Tape round 18: training scripts a new user copies that earlier rounds did not
cover, run on torch (float64) and on symgrad.tape through tests/tape_scripts.py's
harness (values, gradients, dtypes, shapes, Python types, printed text, or the
exception type where torch raises). Random draws are replaced by NumPy draws
(draws/init_from), dropout runs with p=0 or in eval mode, and loops and sizes are
shortened.

Covered, and agreeing with torch: graph networks by hand (a GCN with self loops,
degrees by index_add_, deg^-1/2 with inf masked, messages index_add_'ed into a
zeros tensor, Adam(weight_decay), nll_loss on a bool train mask; GraphSAGE's mean
aggregator by scatter_add_ with an expanded index and bincount(minlength=);
global mean/max pooling by index_add and scatter_reduce('amax',
include_self=False)); a RealNVP flow (masks as buffers, Tanh-ended s and t nets,
log-det, the inverse, Normal(0, 1).log_prob, sampling) and the log-det of an
autograd.functional.jacobian by slogdet/logdet with create_graph; a top-2
mixture of experts (softmax(dtype=), topk, torch.where(selected == i),
index_add_, one_hot load-balancing loss, gather) and a dense one by einsum with
noisy top-k's scatter into -inf; the "NLP from scratch" seq2seq GRU encoder-
decoder with Bahdanau attention, teacher forcing and greedy decoding; a char-RNN
(Embedding + 2-layer LSTM, hidden carried by detach, clip_grad_norm_'s returned
norm) under OneCycleLR, CosineAnnealingWarmRestarts stepped by fractional epochs,
and ReduceLROnPlateau; SimCLR's NT-Xent in sthalles/SimCLR's form and by
masked_fill(-inf); knowledge distillation (the tutorial's manual KL,
KLDivLoss(batchmean) with and without log_target, T**2 scaling);
CrossEntropyLoss with weight + ignore_index + label_smoothing together, on
(N, C, L) logits, and all targets ignored (nan); gradient accumulation with
model.zero_grad(set_to_none=True) against one big batch; an EMA by mul_/add_,
lerp_ and copy_ under no_grad; optim.swa_utils (AveragedModel's equal average,
get_ema_multi_avg_fn and avg_fn EMAs, SWALR cos/linear, update_bn); weight
tying (parameters() once, named_parameters(remove_duplicate=False), the summed
gradient, state_dict sharing storage); register_buffer (persistent=False), a
checkpoint of model + optimizer through torch.save/load resuming Adam exactly,
load_state_dict(strict=False)'s keys and the shape-mismatch error; AdamW
parameter groups with their own lr/weight_decay, StepLR over them,
add_param_group, the printed optimizer, and a parameter in two groups;
utils.data (a Dataset subclass with a transform, random_split by fractions and
by lengths with a seeded Generator, Subset, drop_last, collate_fn); the
parametrizations weight_norm (dim=0/1/None, on Linear and Conv2d) and
spectral_norm (power iteration in training mode, none in eval, sigma -> 1),
a user parametrization (the tutorial's Symmetric) with parametrize.cached(), the
printed ParametrizedLinear, the weight setter, remove_parametrizations; and
autograd.functional jacobian/hessian/hvp of a small network with a Newton step.

Found:

- fixed: optim.swa_utils missing (swa_utils.py: AveragedModel, the
  get_ema/get_swa avg and multi_avg functions, SWALR, update_bn; registered in
  optim.py); nn.utils.parametrize and nn.utils.parametrizations missing
  (nn_parametrize.py: register_parametrization by torch's class swap and
  property, ParametrizationList holding original or original0.., the setter's
  right_inverse, cached(), is_parametrized, remove_parametrizations;
  nn_parametrizations.py: weight_norm and spectral_norm with torch's originals,
  _u/_v buffers and defaults; loaded lazily by nn_utils.py's __getattr__).
- not compared: random draws (spectral_norm's _u/_v starts, random_split's
  permutation: the tape's Generator is not torch's stream, so only the split
  sizes, coverage and reproducibility are compared); torch.linalg.svdvals and
  matrix_norm(ord=2), which the tape lacks (the spectral norm's check uses
  NumPy's svd).
"""

import io
import math

import numpy as np
import pytest
from tape_scripts import cases, check, draws, init_from

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


# ==== (1) graph neural networks by hand: index_add_ / scatter_add_ message passing ====

EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (1, 3), (2, 5), (5, 0)]


def graph(torch, n_nodes=6, n_feats=4):
    src = [a for a, b in EDGES] + [b for a, b in EDGES]
    dst = [b for a, b in EDGES] + [a for a, b in EDGES]
    edge_index = torch.tensor([src, dst])
    x = torch.tensor(draws(n_nodes, n_feats, seed=1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    train_mask = torch.tensor([True, True, True, True, False, False])
    return edge_index, x, y, train_mask


def gcn(torch):
    """A two-layer GCN (Kipf & Welling) written without torch_geometric: self loops
    by cat, degrees by index_add_ of ones, symmetric normalisation deg^-1/2 with
    inf masked to 0, messages x[src] * norm summed into dst by index_add_ on a
    zeros tensor; Adam with weight_decay, cross_entropy on the train mask,
    accuracy on the rest."""
    nn, F = torch.nn, torch.nn.functional
    edge_index, x, y, train_mask = graph(torch)

    class GCNConv(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.lin = nn.Linear(in_channels, out_channels, bias=False)
            self.bias = nn.Parameter(torch.zeros(out_channels))

        def forward(self, x, edge_index):
            loops = torch.arange(x.size(0)).unsqueeze(0).repeat(2, 1)
            edge_index = torch.cat([edge_index, loops], dim=1)
            src, dst = edge_index
            deg = torch.zeros(x.size(0), dtype=x.dtype)
            deg.index_add_(0, dst, torch.ones(dst.size(0), dtype=x.dtype))
            deg_inv_sqrt = deg.pow(-0.5)
            deg_inv_sqrt[deg_inv_sqrt == float("inf")] = 0
            norm = deg_inv_sqrt[src] * deg_inv_sqrt[dst]
            h = self.lin(x)
            out = torch.zeros_like(h).index_add_(0, dst, h[src] * norm.view(-1, 1))
            return out + self.bias

    class GCN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = GCNConv(4, 8)
            self.conv2 = GCNConv(8, 3)

        def forward(self, x, edge_index):
            x = F.relu(self.conv1(x, edge_index))
            x = F.dropout(x, p=0.5, training=False)
            return F.log_softmax(self.conv2(x, edge_index), dim=1)

    model = init_from(GCN(), torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    losses = []
    for _ in range(3):
        model.train()
        optimizer.zero_grad()
        out = model(x, edge_index)
        loss = F.nll_loss(out[train_mask], y[train_mask])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    pred = model(x, edge_index).argmax(dim=1)
    correct = (pred[~train_mask] == y[~train_mask]).sum()
    acc = int(correct) / int((~train_mask).sum())
    return losses, pred, acc, [p.grad for p in model.parameters()]


def graphsage_mean(torch):
    """GraphSAGE's mean aggregator: neighbour sums by scatter_add_ with the index
    expanded over features, counts by bincount(minlength=), clamp(min=1), the
    root and neighbour Linear layers, F.normalize of the output; SGD(momentum)."""
    nn, F = torch.nn, torch.nn.functional
    edge_index, x, y, train_mask = graph(torch)

    class SAGEConv(nn.Module):
        def __init__(self, i, o):
            super().__init__()
            self.lin_l = nn.Linear(i, o)
            self.lin_r = nn.Linear(i, o, bias=False)

        def forward(self, x, edge_index):
            src, dst = edge_index[0], edge_index[1]
            index = dst.unsqueeze(-1).expand(-1, x.size(1))
            summed = torch.zeros_like(x).scatter_add_(0, index, x[src])
            count = torch.bincount(dst, minlength=x.size(0)).clamp(min=1)
            mean = summed / count.unsqueeze(-1)
            out = self.lin_l(mean) + self.lin_r(x)
            return F.normalize(out, p=2.0, dim=-1)

    conv1, conv2 = SAGEConv(4, 8), SAGEConv(8, 3)
    model = init_from(nn.ModuleList([conv1, conv2]), torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        h = conv2(F.relu(conv1(x, edge_index)), edge_index)
        loss = F.cross_entropy(h[train_mask] * 5, y[train_mask])
        loss.backward()
        opt.step()
    return h, loss, [p.grad for p in model.parameters()]


def scatter_mean_max(torch):
    """Pooling a batch of graphs to graph embeddings: global mean by index_add_
    and bincount, global max by scatter_reduce(reduce='amax', include_self=False),
    and the gradient through both."""
    x = torch.tensor(draws(7, 3, seed=2), requires_grad=True)
    batch = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    size = int(batch.max()) + 1
    sums = torch.zeros(size, 3).index_add(0, batch, x)
    mean = sums / torch.bincount(batch).unsqueeze(1)
    index = batch.view(-1, 1).expand_as(x)
    amax = torch.zeros(size, 3).scatter_reduce(
        0, index, x, reduce="amax", include_self=False
    )
    (mean.sum() + (amax * torch.arange(1.0, 4.0)).sum()).backward()
    return mean, amax, x.grad


GRAPHS = {
    "GCN by index_add_, Adam": gcn,
    "GraphSAGE mean by scatter_add_, bincount": graphsage_mean,
    "global mean/max pooling by index_add, scatter_reduce": scatter_mean_max,
}


@pytest.mark.parametrize("script", cases(GRAPHS))
def test_graphs(script):
    check(script)


# ==== (2) a RealNVP normalizing flow: affine coupling layers with log-det ====


def realnvp(torch, steps=3):
    """RealNVP on 2-d points: alternating binary masks registered as buffers,
    s (Tanh-ended) and t nets, forward z = x*mask + (1-mask)*(x*exp(s)+t), the
    log-det s.sum(1), the inverse recovering x, the loss -(prior.log_prob(z) +
    log_det).mean() with prior Normal(0, 1) summed over dims, Adam and sampling
    from fixed normal draws by the inverse."""
    nn = torch.nn

    class Coupling(nn.Module):
        def __init__(self, mask, hidden=8):
            super().__init__()
            self.register_buffer("mask", mask)
            self.s = nn.Sequential(
                nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, 2), nn.Tanh()
            )
            self.t = nn.Sequential(
                nn.Linear(2, hidden), nn.LeakyReLU(), nn.Linear(hidden, 2)
            )

        def forward(self, x):
            x_ = x * self.mask
            s = self.s(x_) * (1 - self.mask)
            t = self.t(x_) * (1 - self.mask)
            z = x_ + (1 - self.mask) * (x * torch.exp(s) + t)
            return z, s.sum(dim=1)

        def inverse(self, z):
            z_ = z * self.mask
            s = self.s(z_) * (1 - self.mask)
            t = self.t(z_) * (1 - self.mask)
            return z_ + (1 - self.mask) * ((z - t) * torch.exp(-s))

    class RealNVP(nn.Module):
        def __init__(self, n_layers=4):
            super().__init__()
            masks = [
                torch.tensor([i % 2, (i + 1) % 2]).double() for i in range(n_layers)
            ]
            self.layers = nn.ModuleList(Coupling(m) for m in masks)
            self.prior = torch.distributions.Normal(
                torch.tensor(0.0), torch.tensor(1.0)
            )

        def forward(self, x):
            log_det = torch.zeros(x.shape[0])
            for layer in self.layers:
                x, ld = layer(x)
                log_det = log_det + ld
            return x, log_det

        def inverse(self, z):
            for layer in reversed(self.layers):
                z = layer.inverse(z)
            return z

        def log_prob(self, x):
            z, log_det = self(x)
            return self.prior.log_prob(z).sum(dim=1) + log_det

    flow = init_from(RealNVP(), torch, scale=0.3)
    x = torch.tensor(draws(16, 2, seed=4)) * torch.tensor([1.0, 0.3])
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = -flow.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        z, log_det = flow(x)
        x_back = flow.inverse(z)
        samples = flow.inverse(torch.tensor(draws(5, 2, seed=5)))
    return (
        losses,
        z,
        log_det,
        torch.allclose(x_back, x),
        samples,
        sorted(flow.state_dict())[:3],
        [p.grad for p in flow.parameters()],
    )


def planar_flow_logdet_by_slogdet(torch):
    """The log-det of a 2x2 Jacobian computed three ways: the coupling's closed
    form, torch.autograd.functional.jacobian + torch.logdet, and
    torch.linalg.slogdet; the gradient of the log-det wrt the parameters via
    create_graph=True."""
    w = torch.tensor([0.7, -0.4], requires_grad=True)

    def f(x):
        s = torch.tanh(w[0] * x[0] + w[1])
        return torch.stack([x[0], x[1] * torch.exp(s) + x[0] ** 2])

    x = torch.tensor([0.3, -1.2])
    J = torch.autograd.functional.jacobian(f, x, create_graph=True)
    closed = torch.tanh(w[0] * x[0] + w[1])
    sign, logabs = torch.linalg.slogdet(J)
    ld = torch.logdet(J)
    (g,) = torch.autograd.grad(logabs, w)
    return J, closed, sign, logabs, ld, g


FLOWS = {
    "RealNVP coupling layers, log-det, inverse": realnvp,
    "log-det of a jacobian: slogdet, logdet": planar_flow_logdet_by_slogdet,
}


@pytest.mark.parametrize("script", cases(FLOWS))
def test_flows(script):
    check(script)


# ==== (3) a mixture of experts with top-k routing ====


def moe(torch):
    """A sparse MoE layer as in the Switch/Mixtral tutorials: router logits,
    softmax, topk(k=2), renormalised weights, each expert run on the tokens routed
    to it (torch.where(selected == i), index_add_ back into the output), the
    load-balancing auxiliary loss from one_hot(...).float().mean, backward, and
    torch.gather of the chosen probabilities."""
    nn, F = torch.nn, torch.nn.functional

    class MoE(nn.Module):
        def __init__(self, d=4, n_experts=3, k=2):
            super().__init__()
            self.k, self.n = k, n_experts
            self.router = nn.Linear(d, n_experts, bias=False)
            self.experts = nn.ModuleList(
                nn.Sequential(nn.Linear(d, 8), nn.GELU(), nn.Linear(8, d))
                for _ in range(n_experts)
            )

        def forward(self, x):
            B, T, D = x.shape
            x = x.view(-1, D)
            logits = self.router(x)
            probs = F.softmax(logits, dim=-1, dtype=torch.float64)
            weights, selected = torch.topk(probs, self.k, dim=-1)
            weights = weights / weights.sum(dim=-1, keepdim=True)
            out = torch.zeros_like(x)
            for i, expert in enumerate(self.experts):
                token_idx, slot = torch.where(selected == i)
                if token_idx.numel() == 0:
                    continue
                y = expert(x[token_idx]) * weights[token_idx, slot, None]
                out.index_add_(0, token_idx, y)
            mask = F.one_hot(selected, self.n).float().sum(1)
            aux = self.n * (mask.mean(0) * probs.mean(0)).sum()
            chosen = torch.gather(probs, 1, selected)
            return out.view(B, T, D), aux, chosen, selected

    layer = init_from(MoE(), torch)
    x = torch.tensor(draws(2, 5, 4, seed=6))
    out, aux, chosen, selected = layer(x)
    loss = out.pow(2).mean() + 0.01 * aux
    loss.backward()
    return out, aux, chosen, selected, [p.grad for p in layer.parameters()]


def moe_dense_einsum(torch):
    """The dense (soft) MoE: all experts' weights stacked as nn.Parameters of shape
    (E, d, h), run by einsum, mixed by the softmax gate; noisy top-k gating's
    scatter of topk values into a -inf filled tensor before the softmax."""
    nn, F = torch.nn, torch.nn.functional
    E, d, h = 3, 4, 5
    W1 = nn.Parameter(torch.tensor(draws(E, d, h, seed=7)) * 0.3)
    W2 = nn.Parameter(torch.tensor(draws(E, h, d, seed=8)) * 0.3)
    gate = nn.Parameter(torch.tensor(draws(d, E, seed=9)))
    x = torch.tensor(draws(6, d, seed=10))
    logits = x @ gate
    top_logits, top_idx = logits.topk(2, dim=-1)
    zeros = torch.full_like(logits, float("-inf"))
    sparse = zeros.scatter(-1, top_idx, top_logits)
    g = F.softmax(sparse, dim=-1)
    hidden = F.silu(torch.einsum("nd,edh->neh", x, W1))
    y = torch.einsum("neh,ehd->ned", hidden, W2)
    out = (g.unsqueeze(-1) * y).sum(1)
    out.sum().backward()
    return g, out, W1.grad, W2.grad, gate.grad


MOE = {
    "MoE top-2 routing, index_add_, aux loss": moe,
    "dense MoE by einsum, noisy top-k scatter": moe_dense_einsum,
}


@pytest.mark.parametrize("script", cases(MOE))
def test_moe(script):
    check(script)


# ==== (4) sequence models: seq2seq GRU with Bahdanau attention, a char-RNN ====


def seq2seq_bahdanau(torch):
    """The PyTorch "NLP from scratch: translation with a sequence to sequence
    network and attention" tutorial in miniature: EncoderRNN (Embedding, Dropout,
    GRU(batch_first=True)), BahdanauAttention (Wa, Ua, Va; scores.squeeze(2)
    .unsqueeze(1), softmax, bmm), AttnDecoderRNN with teacher forcing (the target
    token fed next via target_tensor[:, i].unsqueeze(1)) and greedy decoding
    (topk(1), squeeze(-1).detach()), log_softmax, NLLLoss over view(-1), two
    Adam optimizers."""
    nn, F = torch.nn, torch.nn.functional
    SOS, MAX_LEN, V_IN, V_OUT, H = 0, 4, 7, 6, 5

    class EncoderRNN(nn.Module):
        def __init__(self, input_size, hidden_size, dropout_p=0.0):
            super().__init__()
            self.embedding = nn.Embedding(input_size, hidden_size)
            self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input):
            embedded = self.dropout(self.embedding(input))
            output, hidden = self.gru(embedded)
            return output, hidden

    class BahdanauAttention(nn.Module):
        def __init__(self, hidden_size):
            super().__init__()
            self.Wa = nn.Linear(hidden_size, hidden_size)
            self.Ua = nn.Linear(hidden_size, hidden_size)
            self.Va = nn.Linear(hidden_size, 1)

        def forward(self, query, keys):
            scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
            scores = scores.squeeze(2).unsqueeze(1)
            weights = F.softmax(scores, dim=-1)
            context = torch.bmm(weights, keys)
            return context, weights

    class AttnDecoderRNN(nn.Module):
        def __init__(self, hidden_size, output_size, dropout_p=0.0):
            super().__init__()
            self.embedding = nn.Embedding(output_size, hidden_size)
            self.attention = BahdanauAttention(hidden_size)
            self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
            self.out = nn.Linear(hidden_size, output_size)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, encoder_outputs, encoder_hidden, target_tensor=None):
            batch_size = encoder_outputs.size(0)
            decoder_input = torch.empty(batch_size, 1, dtype=torch.long).fill_(SOS)
            decoder_hidden = encoder_hidden
            decoder_outputs, attentions = [], []
            for i in range(MAX_LEN):
                decoder_output, decoder_hidden, attn_weights = self.forward_step(
                    decoder_input, decoder_hidden, encoder_outputs
                )
                decoder_outputs.append(decoder_output)
                attentions.append(attn_weights)
                if target_tensor is not None:
                    decoder_input = target_tensor[:, i].unsqueeze(1)
                else:
                    _, topi = decoder_output.topk(1)
                    decoder_input = topi.squeeze(-1).detach()
            decoder_outputs = torch.cat(decoder_outputs, dim=1)
            decoder_outputs = F.log_softmax(decoder_outputs, dim=-1)
            attentions = torch.cat(attentions, dim=1)
            return decoder_outputs, decoder_hidden, attentions

        def forward_step(self, input, hidden, encoder_outputs):
            embedded = self.dropout(self.embedding(input))
            query = hidden.permute(1, 0, 2)
            context, attn_weights = self.attention(query, encoder_outputs)
            input_gru = torch.cat((embedded, context), dim=2)
            output, hidden = self.gru(input_gru, hidden)
            output = self.out(output)
            return output, hidden, attn_weights

    encoder = init_from(EncoderRNN(V_IN, H), torch, seed=1)
    decoder = init_from(AttnDecoderRNN(H, V_OUT), torch, seed=2)
    enc_opt = torch.optim.Adam(encoder.parameters(), lr=0.01)
    dec_opt = torch.optim.Adam(decoder.parameters(), lr=0.01)
    criterion = nn.NLLLoss()
    rng = np.random.default_rng(11)
    input_tensor = torch.tensor(rng.integers(1, V_IN, (3, 5)))
    target_tensor = torch.tensor(rng.integers(1, V_OUT, (3, MAX_LEN)))
    losses = []
    for _ in range(2):
        enc_opt.zero_grad()
        dec_opt.zero_grad()
        encoder_outputs, encoder_hidden = encoder(input_tensor)
        decoder_outputs, _, _ = decoder(encoder_outputs, encoder_hidden, target_tensor)
        loss = criterion(
            decoder_outputs.view(-1, decoder_outputs.size(-1)), target_tensor.view(-1)
        )
        loss.backward()
        enc_opt.step()
        dec_opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        encoder_outputs, encoder_hidden = encoder(input_tensor[:1])
        decoder_outputs, decoder_hidden, attentions = decoder(
            encoder_outputs, encoder_hidden
        )
        _, topi = decoder_outputs.topk(1)
        decoded_ids = topi.squeeze()
    return (
        losses,
        decoded_ids,
        attentions,
        decoder_hidden,
        [p.grad for p in decoder.parameters()],
        [p.grad for p in encoder.parameters()],
    )


def char_rnn(torch, scheduler_name):
    """A char-RNN (Karpathy's min-char-rnn in PyTorch): text -> stoi via sorted
    set, Embedding + 2-layer LSTM(batch_first, dropout=0) + Linear, the hidden state
    carried across batches with detach(), cross_entropy over
    logits.view(-1, vocab), clip_grad_norm_ (its returned total norm), and a
    scheduler stepped per batch or per epoch; sampling by argmax from a prime."""
    nn, F = torch.nn, torch.nn.functional
    text = "hello world, hello tape. the quick brown fox"
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for ch, i in stoi.items()}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    V, seq_len, batch = len(chars), 6, 2

    class CharRNN(nn.Module):
        def __init__(self, hidden=8, layers=2):
            super().__init__()
            self.embed = nn.Embedding(V, 6)
            self.lstm = nn.LSTM(6, hidden, layers, batch_first=True, dropout=0.0)
            self.fc = nn.Linear(hidden, V)

        def forward(self, x, hidden=None):
            out, hidden = self.lstm(self.embed(x), hidden)
            return self.fc(out), hidden

    model = init_from(CharRNN(), torch, scale=0.3)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    n_batches = (len(data) - 1) // (seq_len * batch)
    epochs = 2
    if scheduler_name == "OneCycleLR":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=0.05, steps_per_epoch=n_batches, epochs=epochs
        )
    elif scheduler_name == "CosineAnnealingWarmRestarts":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=2, T_mult=2, eta_min=1e-4
        )
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.5, patience=0, threshold=10.0
        )
    log = []
    for epoch in range(epochs):
        hidden = None
        total = 0.0
        for b in range(n_batches):
            start = b * seq_len * batch
            chunk = data[start : start + seq_len * batch + 1]
            x = chunk[:-1].view(batch, seq_len)
            y = chunk[1:].view(batch, seq_len)
            if hidden is not None:
                hidden = tuple(h.detach() for h in hidden)
            logits, hidden = model(x, hidden)
            loss = F.cross_entropy(logits.view(-1, V), y.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            optimizer.step()
            total += loss.item()
            if scheduler_name == "OneCycleLR":
                scheduler.step()
            elif scheduler_name == "CosineAnnealingWarmRestarts":
                scheduler.step(epoch + b / n_batches)
            log.append((round(loss.item(), 10), norm, optimizer.param_groups[0]["lr"]))
        if scheduler_name == "ReduceLROnPlateau":
            scheduler.step(total / n_batches)
        log.append(f"epoch {epoch} loss {total / n_batches:.4f}")
    model.eval()
    with torch.no_grad():
        prime = "hel"
        idx = torch.tensor([[stoi[c] for c in prime]])
        out, hidden = model(idx)
        generated = prime
        for _ in range(5):
            nxt = out[0, -1].argmax().item()
            generated += itos[nxt]
            out, hidden = model(torch.tensor([[nxt]]), hidden)
    return (
        log,
        generated,
        scheduler.state_dict().get("last_epoch"),
        model.fc.weight.grad,
    )


SEQ = {
    "seq2seq GRU, Bahdanau attention, teacher forcing": seq2seq_bahdanau,
    "char-RNN, clip_grad_norm_, OneCycleLR": lambda torch: char_rnn(
        torch, "OneCycleLR"
    ),
    "char-RNN, CosineAnnealingWarmRestarts(epoch float)": lambda torch: char_rnn(
        torch, "CosineAnnealingWarmRestarts"
    ),
    "char-RNN, ReduceLROnPlateau": lambda torch: char_rnn(torch, "ReduceLROnPlateau"),
}


@pytest.mark.parametrize("script", cases(SEQ))
def test_sequence_models(script):
    check(script)


# ==== (5) losses of self-supervised and distillation training ====


def simclr_nt_xent(torch, temperature=0.5):
    """SimCLR's NT-Xent loss as in sthalles/SimCLR's info_nce_loss: labels by
    cat of arange, (labels.unsqueeze(0) == labels.unsqueeze(1)).float(),
    F.normalize, similarity_matrix, the diagonal dropped by a bool eye mask and
    view, positives and negatives split and cat, zero labels, CrossEntropyLoss;
    also the alternative by masked_fill(-inf) of the diagonal and cross_entropy
    against (arange + n) % 2n; an SGD step of the projection head."""
    nn, F = torch.nn, torch.nn.functional
    batch_size, n_views = 4, 2
    encoder = init_from(
        nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 6)), torch
    )
    x = torch.tensor(draws(batch_size, 5, seed=12))
    noise = torch.tensor(draws(batch_size, 5, seed=13)) * 0.1
    images = torch.cat([x + noise, x - noise], dim=0)
    features = encoder(images)

    labels = torch.cat([torch.arange(batch_size) for i in range(n_views)], dim=0)
    labels = (labels.unsqueeze(0) == labels.unsqueeze(1)).float()
    features_n = F.normalize(features, dim=1)
    similarity_matrix = torch.matmul(features_n, features_n.T)
    mask = torch.eye(labels.shape[0], dtype=torch.bool)
    labels = labels[~mask].view(labels.shape[0], -1)
    similarity_matrix = similarity_matrix[~mask].view(similarity_matrix.shape[0], -1)
    positives = similarity_matrix[labels.bool()].view(labels.shape[0], -1)
    negatives = similarity_matrix[~labels.bool()].view(similarity_matrix.shape[0], -1)
    logits = torch.cat([positives, negatives], dim=1)
    targets = torch.zeros(logits.shape[0], dtype=torch.long)
    logits = logits / temperature
    loss = nn.CrossEntropyLoss()(logits, targets)

    z = F.normalize(features, dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * batch_size, dtype=torch.bool), float("-inf"))
    n = batch_size
    target = (torch.arange(2 * n) + n) % (2 * n)
    loss2 = F.cross_entropy(sim, target)

    opt = torch.optim.SGD(encoder.parameters(), lr=0.1)
    opt.zero_grad()
    loss.backward()
    grads = [p.grad.clone() for p in encoder.parameters()]
    opt.step()
    return logits.shape, loss, loss2, grads, list(encoder.parameters())


def distillation(torch, T=2.0, alpha=0.7):
    """Knowledge distillation (the PyTorch "Knowledge Distillation" tutorial):
    soft targets softmax(teacher/T), student log_softmax(student/T), the
    sum(soft_targets * (log soft_targets - soft_prob)) / batch * T**2 form, and
    nn.KLDivLoss(reduction='batchmean') with and without log_target=True, plus
    the hard-label cross_entropy mixed by alpha; the teacher under no_grad in
    eval mode; the student's gradients."""
    nn, F = torch.nn, torch.nn.functional
    teacher = init_from(
        nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 3)), torch, seed=1
    )
    student = init_from(nn.Linear(4, 3), torch, seed=2)
    x = torch.tensor(draws(6, 4, seed=14))
    labels = torch.tensor([0, 1, 2, 2, 1, 0])
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(x)
    student_logits = student(x)
    soft_targets = F.softmax(teacher_logits / T, dim=-1)
    soft_prob = F.log_softmax(student_logits / T, dim=-1)
    manual = (
        torch.sum(soft_targets * (soft_targets.log() - soft_prob))
        / soft_prob.size()[0]
        * (T**2)
    )
    kl = nn.KLDivLoss(reduction="batchmean")(soft_prob, soft_targets) * T**2
    kl_log = (
        nn.KLDivLoss(reduction="batchmean", log_target=True)(
            soft_prob, F.log_softmax(teacher_logits / T, dim=-1)
        )
        * T**2
    )
    kl_none = F.kl_div(soft_prob, soft_targets, reduction="none")
    kl_mean = F.kl_div(soft_prob, soft_targets, reduction="mean")
    ce = nn.CrossEntropyLoss()(student_logits, labels)
    loss = alpha * kl_log + (1 - alpha) * ce
    loss.backward()
    return (
        manual,
        kl,
        kl_log,
        kl_none,
        kl_mean,
        loss,
        [p.grad for p in student.parameters()],
        teacher_logits.requires_grad,
    )


def cross_entropy_options(torch):
    """CrossEntropyLoss with class weights, ignore_index and label_smoothing
    together, for reductions mean/sum/none; on (N, C, L) sequence logits too;
    the gradient of the mean; a target all ignore_index (nan mean, as torch)."""
    nn, F = torch.nn, torch.nn.functional
    logits = torch.tensor(draws(6, 4, seed=15), requires_grad=True)
    target = torch.tensor([0, 3, -100, 1, 2, 3])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.5])
    out = []
    for reduction in ("mean", "sum", "none"):
        crit = nn.CrossEntropyLoss(
            weight=weight, ignore_index=-100, label_smoothing=0.1, reduction=reduction
        )
        out.append(crit(logits, target))
    out[0].backward()
    seq = torch.tensor(draws(2, 4, 3, seed=16), requires_grad=True)
    seq_target = torch.tensor([[0, 1, 2], [3, 0, 0]])
    seq_loss = F.cross_entropy(
        seq, seq_target, ignore_index=0, label_smoothing=0.2, weight=weight
    )
    seq_loss.backward()
    all_ignored = F.cross_entropy(logits.detach(), torch.full((6,), -100))
    pad = F.cross_entropy(
        logits.detach(), target.clamp(min=0), ignore_index=3, label_smoothing=0.3
    )
    return out, logits.grad, seq_loss, seq.grad, all_ignored, pad


LOSSES = {
    "SimCLR NT-Xent, two formulations": simclr_nt_xent,
    "knowledge distillation, KLDivLoss(log_target)": distillation,
    "CrossEntropyLoss weight + ignore_index + label_smoothing": cross_entropy_options,
}


@pytest.mark.parametrize("script", cases(LOSSES))
def test_losses(script):
    check(script)


# ==== (6) training mechanics ====


def small_mlp(torch, seed=0):
    nn = torch.nn
    return init_from(
        nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)), torch, seed=seed
    )


def gradient_accumulation(torch, accum=3):
    """Gradient accumulation: loss / accumulation_steps, backward each micro-batch,
    step and model.zero_grad(set_to_none=True) every accum steps (grads None in
    between), against one big batch; optimizer.zero_grad(set_to_none=False) leaving
    zeros; a step with all grads None leaves the parameters."""
    F = torch.nn.functional
    x = torch.tensor(draws(6, 3, seed=17))
    y = torch.tensor(draws(6, 2, seed=18))
    model = small_mlp(torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = []
    for i, (xb, yb) in enumerate(zip(x.split(2), y.split(2), strict=True)):
        loss = F.mse_loss(model(xb), yb) / accum
        loss.backward()
        if (i + 1) % accum == 0:
            opt.step()
            model.zero_grad(set_to_none=True)
        seen.append([p.grad is None for p in model.parameters()])
    big = small_mlp(torch)
    opt2 = torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9)
    F.mse_loss(big(x), y).backward()
    opt2.step()
    same_step = all(
        torch.allclose(a, b)
        for a, b in zip(model.parameters(), big.parameters(), strict=True)
    )
    opt2.zero_grad(set_to_none=False)
    zeros = [p.grad for p in big.parameters()]
    opt2.zero_grad()
    before = [p.clone() for p in big.parameters()]
    opt2.step()
    return seen, same_step, zeros, before, list(big.parameters())


def ema_of_weights(torch, decay=0.9):
    """An EMA copy of a model (copy.deepcopy, requires_grad_(False)) updated under
    torch.no_grad() three ways: ema.mul_(d).add_(p, alpha=1 - d), ema.lerp_(p,
    1 - d) and ema.copy_(d * ema + (1 - d) * p); buffers copied by copy_; the
    torch._foreach_-free loop over zip(parameters()); and
    optim.swa_utils.AveragedModel with get_ema_multi_avg_fn."""
    import copy

    F = torch.nn.functional
    model = small_mlp(torch)
    emas = [copy.deepcopy(model).requires_grad_(False) for _ in range(3)]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.tensor(draws(5, 3, seed=19))
    y = torch.tensor(draws(5, 2, seed=20))
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        with torch.no_grad():
            for e0, e1, e2, p in zip(
                *(e.parameters() for e in emas), model.parameters(), strict=True
            ):
                e0.mul_(decay).add_(p, alpha=1 - decay)
                e1.lerp_(p, 1 - decay)
                e2.copy_(decay * e2 + (1 - decay) * p)
    return (
        [list(e.parameters()) for e in emas],
        [p.requires_grad for p in emas[0].parameters()],
        emas[0](x),
    )


def swa_averaged_model(torch, decay=0.9):
    """optim.swa_utils.AveragedModel: the equal average (the default), the EMA by
    multi_avg_fn=get_ema_multi_avg_fn(decay) and by avg_fn, n_averaged, calling the
    averaged model, update_parameters after each step, and SWALR annealing."""
    swa = torch.optim.swa_utils
    F = torch.nn.functional
    model = small_mlp(torch)
    avg = swa.AveragedModel(model)
    ema = swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(decay))
    ema_fn = swa.AveragedModel(
        model, avg_fn=lambda a, p, n: decay * a + (1 - decay) * p
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = swa.SWALR(opt, swa_lr=0.05, anneal_epochs=2, anneal_strategy="cos")
    x = torch.tensor(draws(5, 3, seed=19))
    y = torch.tensor(draws(5, 2, seed=20))
    lrs = []
    for _ in range(3):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        for a in (avg, ema, ema_fn):
            a.update_parameters(model)
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return (
        [list(a.module.parameters()) for a in (avg, ema, ema_fn)],
        avg.n_averaged,
        avg(x),
        lrs,
        sorted(avg.state_dict()),
    )


def swa_update_bn(torch):
    """The SWA tutorial's end: swa_utils.update_bn(loader, swa_model) recomputing a
    BatchNorm1d's running statistics for the averaged weights (a cumulative
    average over the loader's (x, y) batches, the momentum restored after), and
    SWALR with anneal_strategy='linear' and anneal_epochs=0."""
    nn, swa = torch.nn, torch.optim.swa_utils
    model = init_from(
        nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU()), torch
    )
    swa_model = swa.AveragedModel(model)
    x = torch.tensor(draws(8, 3, seed=31))
    data = torch.utils.data
    loader = data.DataLoader(data.TensorDataset(x, torch.zeros(8)), batch_size=3)
    swa_model.update_parameters(model)
    swa_model.train(False)
    swa.update_bn(loader, swa_model)
    bn = swa_model.module[1]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    lin = swa.SWALR(opt, swa_lr=[0.1], anneal_epochs=0, anneal_strategy="linear")
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(2):
        opt.step()
        lin.step()
        lrs.append(opt.param_groups[0]["lr"])
    return (
        bn.running_mean,
        bn.running_var,
        bn.num_batches_tracked,
        bn.momentum,
        swa_model.training,
        lrs,
        swa_model(x),
    )


def weight_tying(torch):
    """Tied input/output embeddings (Press & Wolf): decoder.weight =
    encoder.weight, parameters() yields the shared one once, named_parameters
    (remove_duplicate=False) twice, the gradient is the sum of both uses, and
    state_dict keeps both keys sharing storage."""
    nn, F = torch.nn, torch.nn.functional

    class LM(nn.Module):
        def __init__(self, V=7, d=4):
            super().__init__()
            self.encoder = nn.Embedding(V, d)
            self.proj = nn.Linear(d, d)
            self.decoder = nn.Linear(d, V, bias=False)
            self.decoder.weight = self.encoder.weight

        def forward(self, idx):
            return self.decoder(torch.tanh(self.proj(self.encoder(idx))))

    model = init_from(LM(), torch)
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    loss = F.cross_entropy(model(idx).view(-1, 7), idx.roll(1, dims=1).reshape(-1))
    loss.backward()
    sd = model.state_dict()
    return (
        loss,
        len(list(model.parameters())),
        [n for n, _ in model.named_parameters()],
        [n for n, _ in model.named_parameters(remove_duplicate=False)],
        model.encoder.weight.grad,
        model.decoder.weight is model.encoder.weight,
        list(sd),
        sd["encoder.weight"].data_ptr() == sd["decoder.weight"].data_ptr(),
        sum(p.numel() for p in model.parameters()),
    )


def buffers_and_state_dict(torch):
    """register_buffer (persistent and persistent=False), named_buffers, a
    buffer updated in forward under no_grad (a running count), the state_dict
    keys and values, torch.save of the state_dict to a BytesIO and
    load_state_dict into a fresh model (the returned _IncompatibleKeys), the
    non-persistent buffer not saved, strict=False with an extra and a missing
    key, and an optimizer's state_dict round trip resuming Adam identically."""
    nn, F = torch.nn, torch.nn.functional

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.register_buffer("count", torch.zeros((), dtype=torch.long))
            self.register_buffer("scale", torch.full((2,), 2.0))
            self.register_buffer("cache", torch.ones(2), persistent=False)

        def forward(self, x):
            with torch.no_grad():
                self.count += 1
            return self.lin(x) * self.scale + self.cache

    x = torch.tensor(draws(4, 3, seed=21))
    y = torch.tensor(draws(4, 2, seed=22))
    model = init_from(Scaled(), torch)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": 2}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    fresh = Scaled()
    result = fresh.load_state_dict(ckpt["model"])
    opt2 = torch.optim.Adam(fresh.parameters(), lr=0.1)
    opt2.load_state_dict(ckpt["opt"])
    for m, o in ((model, opt), (fresh, opt2)):
        o.zero_grad()
        F.mse_loss(m(x), y).backward()
        o.step()
    partial = dict(ckpt["model"])
    partial["extra"] = torch.zeros(1)
    del partial["scale"]
    keys = Scaled().load_state_dict(partial, strict=False)
    return (
        list(ckpt["model"]),
        [n for n, _ in model.named_buffers()],
        str(result),
        ckpt["epoch"],
        list(model.parameters()),
        list(fresh.parameters()),
        fresh.count,
        keys.missing_keys,
        keys.unexpected_keys,
        ckpt["opt"]["param_groups"][0]["params"],
    )


def strict_load_shape_error(torch):
    """Loading a state_dict with a wrongly shaped weight raises RuntimeError."""
    nn = torch.nn
    sd = nn.Linear(3, 2).state_dict()
    sd["weight"] = torch.zeros(2, 4)
    nn.Linear(3, 2).load_state_dict(sd)


def parameter_groups(torch):
    """Parameter groups with different lrs (a backbone at lr/10, a head at the
    default, no weight decay for biases), the per-group options filled from the
    defaults, a scheduler scaling every group, add_param_group for a new layer,
    and the printed optimizer."""
    nn, F = torch.nn, torch.nn.functional
    backbone = small_mlp(torch)
    head = init_from(nn.Linear(2, 1), torch, seed=3)
    decay = [p for n, p in backbone.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in backbone.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "lr": 1e-3},
            {"params": no_decay, "lr": 1e-3, "weight_decay": 0.0},
            {"params": head.parameters()},
        ],
        lr=1e-2,
        weight_decay=0.1,
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x = torch.tensor(draws(4, 3, seed=23))
    y = torch.tensor(draws(4, 1, seed=24))
    for _ in range(2):
        opt.zero_grad()
        F.mse_loss(head(backbone(x)), y).backward()
        opt.step()
        sched.step()
    extra = nn.Linear(1, 1)
    opt.add_param_group({"params": extra.parameters(), "lr": 0.5})
    return (
        [g["lr"] for g in opt.param_groups],
        [g["weight_decay"] for g in opt.param_groups],
        [g["initial_lr"] for g in opt.param_groups[:3]],
        sched.get_last_lr(),
        list(backbone.parameters()) + list(head.parameters()),
        repr(opt),
    )


def duplicate_param_groups(torch):
    """A parameter in two groups raises ValueError."""
    lin = torch.nn.Linear(2, 2)
    torch.optim.SGD([{"params": lin.parameters()}, {"params": [lin.weight]}], lr=0.1)


TRAINING = {
    "gradient accumulation, zero_grad(set_to_none=True)": gradient_accumulation,
    "EMA of weights: mul_/add_, lerp_, copy_": ema_of_weights,
    "swa_utils.AveragedModel, get_ema_multi_avg_fn, SWALR": swa_averaged_model,
    "swa_utils.update_bn, SWALR linear": swa_update_bn,
    "weight tying, named_parameters(remove_duplicate=False)": weight_tying,
    "register_buffer, state_dict save/load, optimizer resume": buffers_and_state_dict,
    "load_state_dict shape mismatch": strict_load_shape_error,
    "parameter groups with different lrs, add_param_group": parameter_groups,
    "a parameter in two groups": duplicate_param_groups,
}


@pytest.mark.parametrize("script", cases(TRAINING))
def test_training_mechanics(script):
    check(script)


# ==== (7) torch.utils.data ====


def data_pipeline(torch):
    """A map-style Dataset subclass (a synthetic regression set with a transform),
    random_split into 0.8/0.2 by fractions and by lengths with
    torch.Generator().manual_seed(42) (the split sizes, disjointness and coverage,
    and the same split again from the same seed; the permutation itself is the
    generator's and not compared), Subset indexing, DataLoader with drop_last and
    a collate_fn, len(loader), TensorDataset of two tensors, and an epoch of
    training over a shuffle=False loader."""
    data, F = torch.utils.data, torch.nn.functional

    class Regression(data.Dataset):
        def __init__(self, n=10, transform=None):
            rng = np.random.default_rng(25)
            self.x = torch.tensor(rng.standard_normal((n, 3)))
            self.y = self.x.sum(dim=1, keepdim=True)
            self.transform = transform

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            x = self.x[i]
            if self.transform:
                x = self.transform(x)
            return x, self.y[i]

    ds = Regression(transform=lambda x: x * 2)
    g = torch.Generator().manual_seed(42)
    train, val = data.random_split(ds, [0.8, 0.2], generator=g)
    a, b = data.random_split(ds, [7, 3], generator=torch.Generator().manual_seed(0))
    a2, _ = data.random_split(ds, [7, 3], generator=torch.Generator().manual_seed(0))
    cover = sorted(train.indices + val.indices)
    loader = data.DataLoader(train, batch_size=3, shuffle=False, drop_last=True)
    collate = data.DataLoader(
        val, batch_size=2, collate_fn=lambda batch: [len(batch), type(batch).__name__]
    )
    tds = data.TensorDataset(torch.arange(6.0).view(3, 2), torch.tensor([0, 1, 0]))
    model = small_mlp(torch)
    batches = []
    for xb, yb in data.DataLoader(ds, batch_size=4):
        loss = F.mse_loss(model(xb)[:, :1], yb)
        loss.backward()
        batches.append((tuple(xb.shape), type(yb).__name__))
    return (
        (len(train), len(val), len(a), len(b)),
        cover == list(range(10)),
        a.indices == a2.indices,
        type(train).__name__,
        len(loader),
        [len(xb) for xb, _ in loader],
        list(collate),
        tds[1],
        len(tds),
        batches,
        [p.grad for p in model.parameters()],
    )


def random_split_errors(torch):
    """random_split lengths that do not sum to the dataset's raise ValueError."""
    torch.utils.data.random_split(range(10), [3, 3])


DATA = {
    "Dataset subclass, random_split with a generator, DataLoader": data_pipeline,
    "random_split wrong lengths": random_split_errors,
}


@pytest.mark.parametrize("script", cases(DATA))
def test_data(script):
    check(script)


# ==== (8) parametrizations and higher-order autograd.functional ====


def weight_norm_parametrization(torch):
    """nn.utils.parametrizations.weight_norm on a Linear: the original0 (g, the
    row norms) and original1 (v) parameters, weight recomputed as g * v / ||v||,
    the state_dict keys, a backward to g and v, and parametrize.is_parametrized;
    an SGD step changing the weight through g and v."""
    nn = torch.nn
    P = nn.utils.parametrizations
    lin = init_from(nn.Linear(3, 2), torch)
    lin = P.weight_norm(lin)
    x = torch.tensor(draws(4, 3, seed=26))
    loss = lin(x).pow(2).sum()
    loss.backward()
    g = lin.parametrizations.weight.original0
    v = lin.parametrizations.weight.original1
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    opt.step()
    return (
        g,
        v,
        g.grad,
        v.grad,
        lin.weight,
        sorted(lin.state_dict()),
        nn.utils.parametrize.is_parametrized(lin, "weight"),
        [n for n, _ in lin.named_parameters()],
    )


def top_singular_value(weight):
    return float(np.linalg.svd(weight.detach().numpy(), compute_uv=False)[0])


def spectral_norm_parametrization(torch):
    """nn.utils.parametrizations.spectral_norm: the _u/_v buffers (random starts,
    not compared), power iterations on each access in training mode and none in
    eval; once converged the weight's largest singular value is 1 (by NumPy's
    svd: the tape has no torch.linalg.svdvals); the gradient through weight / sigma; the state_dict
    keys; a Conv2d's weight reshaped to a matrix."""
    nn = torch.nn
    lin = init_from(nn.Linear(4, 3), torch)
    sn = nn.utils.parametrizations.spectral_norm(lin, n_power_iterations=20)
    for _ in range(10):
        sn.weight  # noqa: B018 - each access runs the power iterations
    sn.eval()
    sigma_1 = top_singular_value(sn.weight)
    x = torch.tensor(draws(2, 4, seed=30))
    sn(x).sum().backward()
    conv = nn.utils.parametrizations.spectral_norm(
        init_from(nn.Conv2d(2, 3, 2), torch), n_power_iterations=100
    )
    conv.weight  # noqa: B018 - likewise
    return (
        sigma_1,
        lin.parametrizations.weight.original.grad,
        sorted(sn.state_dict()),
        tuple(sn.parametrizations.weight[0]._u.shape),
        top_singular_value(conv.weight.flatten(1)),
        type(sn).__name__,
    )


def custom_parametrization(torch):
    """parametrize.register_parametrization with a user Module (a symmetric
    matrix from triu + triu.T, as in the Parametrizations tutorial), the
    gradient to the original, and parametrize.cached()."""
    nn, P = torch.nn, torch.nn.utils.parametrize

    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)

    layer = init_from(nn.Linear(3, 3), torch)
    P.register_parametrization(layer, "weight", Symmetric())
    W = layer.weight
    x = torch.tensor(draws(2, 3, seed=27))
    layer(x).sum().backward()
    with P.cached():
        cached_same = layer.weight is layer.weight
    return (
        W,
        torch.allclose(W, W.T),
        layer.parametrizations.weight.original.grad,
        cached_same,
        sorted(layer.state_dict()),
    )


def jacobian_hessian_of_model(torch):
    """torch.autograd.functional on a small network: the Jacobian of the outputs
    wrt the input (and wrt a tuple of inputs), the Hessian of a scalar loss wrt a
    flat parameter vector (vector_to_parameters-free: the weights unflattened by
    view inside the function), its symmetry, a Newton step solved by
    torch.linalg.solve, and hvp against the Hessian times v."""
    AF, F = torch.autograd.functional, torch.nn.functional
    x = torch.tensor(draws(3, 2, seed=28))
    y = torch.tensor([[1.0], [0.0], [1.0]])
    shapes = [(4, 2), (4,), (1, 4), (1,)]
    sizes = [math.prod(s) for s in shapes]
    theta = torch.tensor(draws(sum(sizes), seed=29)) * 0.5

    def loss_fn(flat):
        parts = [p.view(s) for p, s in zip(flat.split(sizes), shapes, strict=True)]
        h = torch.tanh(F.linear(x, parts[0], parts[1]))
        return F.binary_cross_entropy_with_logits(F.linear(h, parts[2], parts[3]), y)

    def net(inp):
        return torch.tanh(inp @ torch.ones(2, 3)) * inp.sum()

    J = AF.jacobian(net, x[0])
    J2 = AF.jacobian(lambda a, b: (a * b).sum(0), (x, y.expand(3, 2)))
    H = AF.hessian(loss_fn, theta)
    g = torch.autograd.grad(loss_fn(theta.requires_grad_()), theta)[0]
    step = torch.linalg.solve(H + 0.1 * torch.eye(len(theta)), g)
    v = torch.ones_like(theta)
    _, hv = AF.hvp(loss_fn, theta.detach(), v)
    return J, J2, H, torch.allclose(H, H.T), step, hv, torch.allclose(hv, H @ v)


def parametrization_lifecycle(torch):
    """weight_norm on a Conv2d with dim=None (one magnitude) and on a Linear with
    dim=1, the printed parametrized module, assigning module.weight (the setter
    runs right_inverse), remove_parametrizations leaving the current weight as a
    plain Parameter again (the class restored), and the error removing one that
    is not there."""
    nn = torch.nn
    P, PS = nn.utils.parametrize, nn.utils.parametrizations
    conv = PS.weight_norm(init_from(nn.Conv2d(2, 3, 2), torch), dim=None)
    lin = PS.weight_norm(init_from(nn.Linear(3, 2), torch), dim=1)
    shapes = [tuple(m.parametrizations.weight.original0.shape) for m in (conv, lin)]
    text = repr(lin)
    lin.weight = torch.ones(2, 3)
    g = lin.parametrizations.weight.original0.clone()
    sym = init_from(nn.Linear(3, 3), torch)
    P.register_parametrization(sym, "weight", nn.Identity(), unsafe=True)
    original = sym.parametrizations.weight.original
    P.remove_parametrizations(lin, "weight")
    P.remove_parametrizations(sym, "weight", leave_parametrized=False)
    try:
        P.remove_parametrizations(lin, "weight")
    except ValueError as exc:
        error = type(exc).__name__
    return (
        shapes,
        text,
        g,
        lin.weight,
        type(lin).__name__,
        type(lin.weight).__name__,
        [n for n, _ in lin.named_parameters()],
        sym.weight is original,
        error,
        P.is_parametrized(conv),
        P.is_parametrized(lin),
    )


PARAM = {
    "parametrize lifecycle: print, setter, remove": parametrization_lifecycle,
    "parametrizations.weight_norm": weight_norm_parametrization,
    "parametrizations.spectral_norm": spectral_norm_parametrization,
    "register_parametrization: a Symmetric matrix": custom_parametrization,
    "jacobian/hessian/hvp of a small network, Newton step": jacobian_hessian_of_model,
}


@pytest.mark.parametrize("script", cases(PARAM))
def test_parametrizations_and_functional(script):
    check(script)
