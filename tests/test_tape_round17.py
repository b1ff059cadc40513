"""Tape round 17: scripts from the pytorch/examples repository and popular small
training code, as a new user copies them, run on torch (float64) and on symgrad.tape
through tests/tape_scripts.py's harness (values, gradients, dtypes, shapes, Python
types, printed text, or the exception type where torch raises). Random draws are
replaced by NumPy draws (draws/init_from), dropout runs with p=0 or in eval mode, and
loops and sizes are shortened.

Covered, and agreeing with torch: pytorch/examples mnist (the Net with Conv2d,
max_pool2d, Dropout, flatten and log_softmax; train()/test() with F.nll_loss, the
reduction='sum' test loss, argmax/eq/view_as accuracy and the printed lines;
Adadelta(lr=1.0) with StepLR(gamma=0.7), its state and options; Dropout in eval mode;
the state_dict saved by torch.save and loaded into a fresh Net);
time_sequence_prediction (two LSTMCells stepped over input.split(1, dim=1), future
steps, model.double(), LBFGS with a closure printing its loss, prediction under
no_grad, .numpy(); an LSTMCell stepped against nn.LSTM with its weights);
word_language_model (RNNModel with Embedding + LSTM / GRU / RNN_TANH + Linear
decoder, tied weights and the tie error, init_hidden by weight.new_zeros, batchify
by narrow/view/t/contiguous, get_batch, repackage_hidden by detach, NLLLoss,
clip_grad_norm_, p.data.add_(p.grad, alpha=-lr), the evaluate loop and the epoch
line with perplexity; generate.py feeding words back by input.fill_(word_idx); the
TransformerModel with a register_buffer'd positional encoding, a log(tril(ones))
mask and nn.TransformerEncoder in eval mode); vae (reparameterize with a fixed eps,
BCE(reduction='sum') + KLD, Adam, a decoded sample); regression (polynomial
features by cat of powers, F.smooth_l1_loss, '{:+.2f}' formatting 0-d tensors);
an snli-style bag of embeddings (padding_idx, lengths, [u, v, |u-v|, u*v]);
REINFORCE and actor-critic with fixed actions (Categorical.log_prob, returns
normalized by std + float32 eps, deque.appendleft, SavedAction, smooth_l1_loss of
a value against torch.tensor([R]), log_softmax + gather), and the script's .float()
state into a float64 policy raising in both; nanoGPT (LayerNorm with optional bias,
CausalSelfAttention by masked_fill of a registered tril buffer and by
scaled_dot_product_attention(is_causal=True), GELU MLP, weight tying,
get_num_params, cross_entropy with ignore_index=-1, configure_optimizers' AdamW
decay/no-decay groups, get_lr warmup + cosine written into param_groups, gradient
accumulation, clip_grad_norm_, estimate_loss, generate with top-k under
@torch.no_grad(), the checkpoint with the '_orig_mod.' prefix stripped,
crop_block_size, load_state_dict strict and not); minGPT's configure_optimizers by
module types, NewGELU against GELU(approximate='tanh'), a LambdaLR warmup + cosine
schedule; a siamese network with the contrastive loss (pairwise_distance keepdim,
clamp), cosine_similarity, triplet_margin_loss / TripletMarginLoss,
cosine_embedding_loss and margin_ranking_loss; a WGAN-GP critic and generator step
(autograd.Variable, autograd.grad(create_graph=True, only_inputs=True),
D_real.backward(mone) with a float32 mone); a custom Dataset of dicts through
DataLoader(shuffle=False); DCGAN's float32 labels refused by BCELoss.

Found:

- fixed: optim.Adadelta missing (optim.py Adadelta, torch's update and defaults);
  F.triplet_margin_loss / nn.TripletMarginLoss, F.cosine_embedding_loss /
  nn.CosineEmbeddingLoss and F.margin_ranking_loss / nn.MarginRankingLoss missing
  (functional.py, nn.py); autograd.grad refused only_inputs= (autograd.py grad: now
  in torch's position, ignored, False warns as in torch); nn.ConvTranspose2d
  (DCGAN's generator) missing (nn_conv.py conv_transpose1d/2d, ConvTranspose1d/2d).
- fixed since (tests/test_tape_round17_layers.py): nn.ReflectionPad2d and
  nn.InstanceNorm2d (fast_neural_style) missing (nn.py: the padding Modules over
  F.pad, _InstanceNorm on a _NormBase shared with BatchNorm; functional.py
  instance_norm); torch.amp (nanoGPT's GradScaler(enabled=False)) missing (amp.py
  GradScaler and autocast, cuda_amp.py torch.cuda.amp); optimizers took foreach/
  fused/capturable/differentiable through **flags, so nanoGPT's
  `"fused" in inspect.signature(torch.optim.AdamW).parameters` was False (optim.py:
  each optimizer's signature now has torch's keywords, names, order and defaults).
- not compared: float32 round-off (the TransformerModel's positional encoding is
  built in float64 here), random draws (dropout runs with p=0 or in eval mode,
  sampling is replaced by argmax/top-1 or fixed actions).
"""

import inspect
import io
import math
from collections import OrderedDict, deque, namedtuple
from contextlib import nullcontext

import numpy as np
import pytest
from tape_scripts import cases, check, draws, init_from

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


# ==== (1) pytorch/examples mnist: Conv2d, Dropout, log_softmax + nll_loss, Adadelta ====


def mnist_net(torch, p1=0.25, p2=0.5):
    nn, F = torch.nn, torch.nn.functional

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, 1)
            self.conv2 = nn.Conv2d(4, 6, 3, 1)
            self.dropout1 = nn.Dropout(p1)
            self.dropout2 = nn.Dropout(p2)
            self.fc1 = nn.Linear(24, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    return init_from(Net(), torch, scale=0.3)


def mnist_loaders(torch, n_train=12, n_test=8, batch_size=4):
    rng = np.random.default_rng(3)
    images = rng.random((n_train + n_test, 1, 8, 8))
    labels = rng.integers(0, 10, n_train + n_test)
    x = (torch.tensor(images) - 0.1307) / 0.3081  # transforms.Normalize
    y = torch.tensor(labels)
    data = torch.utils.data
    train = data.TensorDataset(x[:n_train], y[:n_train])
    test = data.TensorDataset(x[n_train:], y[n_train:])
    return (
        data.DataLoader(train, batch_size=batch_size, shuffle=False),
        data.DataLoader(test, batch_size=batch_size, shuffle=False),
    )


def mnist_train(torch, model, train_loader, optimizer, epoch, log):
    F = torch.nn.functional
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % 2 == 0:
            log.append(
                f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} ({100.0 * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item():.6f}"
            )


def mnist_test(torch, model, test_loader, log):
    F = torch.nn.functional
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    log.append(
        f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{len(test_loader.dataset)} ({100.0 * correct / len(test_loader.dataset):.0f}%)\n"
    )
    return test_loss, correct


def mnist_main(torch):
    """main() with --epochs 2: Adadelta(lr=1.0) and StepLR(step_size=1, gamma=0.7);
    dropout p=0 in training (the random masks are not compared)."""
    model = mnist_net(torch, 0.0, 0.0)
    train_loader, test_loader = mnist_loaders(torch)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    log, results = [], []
    for epoch in range(1, 3):
        mnist_train(torch, model, train_loader, optimizer, epoch, log)
        results.append(mnist_test(torch, model, test_loader, log))
        scheduler.step()
    state = optimizer.state[model.conv1.weight]
    return (
        log,
        results,
        scheduler.get_last_lr(),
        list(model.parameters()),
        [p.grad for p in model.parameters()],
        sorted(state),
        state["step"],
        state["acc_delta"],
        repr(optimizer),
    )


def mnist_eval_dropout_and_checkpoint(torch):
    """Dropout(0.25)/(0.5) in eval mode are identities; the saved state_dict
    (torch.save(model.state_dict(), "mnist_cnn.pt")) loads into a fresh Net."""
    model = mnist_net(torch)
    _, test_loader = mnist_loaders(torch)
    log = []
    first = mnist_test(torch, model, test_loader, log)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = mnist_net(torch, 0.1, 0.2)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    keys = fresh.load_state_dict(torch.load(buffer, weights_only=True))
    second = mnist_test(torch, fresh, test_loader, log)
    return first, second, log, list(model.state_dict()), repr(keys), repr(fresh)


def mnist_adadelta_options(torch):
    """Adadelta with weight_decay, rho, eps and maximize; its defaults and
    state_dict; invalid rho."""
    w = torch.tensor(draws(3, 2), requires_grad=True)
    b = torch.tensor(draws(2, seed=1), requires_grad=True)
    opt = torch.optim.Adadelta(
        [{"params": [w]}, {"params": [b], "lr": 0.5, "maximize": True}],
        rho=0.8,
        eps=1e-4,
        weight_decay=0.1,
    )
    x = torch.tensor(draws(4, 3, seed=2))
    trail = []
    for _ in range(3):
        opt.zero_grad()
        loss = ((x @ w + b).tanh() ** 2).sum()
        loss.backward()
        opt.step()
        trail.append((w.detach().clone(), b.detach().clone()))
    sd = opt.state_dict()
    try:
        torch.optim.Adadelta([w], rho=1.5)
    except ValueError as exc:
        error = str(exc)
    return trail, opt.defaults, sd["param_groups"], sd["state"], error


MNIST = {
    "main(): Adadelta + StepLR, train/test logs": mnist_main,
    "eval-mode Dropout, state_dict save/load": mnist_eval_dropout_and_checkpoint,
    "Adadelta options and state": mnist_adadelta_options,
}


@pytest.mark.parametrize("script", cases(MNIST))
def test_examples_mnist(script):
    check(script)


# ==== (2) time_sequence_prediction: LSTMCell stepped, LBFGS with a closure ==============


def sequence_model(torch, hidden=6):
    nn = torch.nn

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, hidden)
            self.lstm2 = nn.LSTMCell(hidden, hidden)
            self.linear = nn.Linear(hidden, 1)

        def forward(self, input, future=0):
            outputs = []
            h_t = torch.zeros(input.size(0), hidden, dtype=torch.double)
            c_t = torch.zeros(input.size(0), hidden, dtype=torch.double)
            h_t2 = torch.zeros(input.size(0), hidden, dtype=torch.double)
            c_t2 = torch.zeros(input.size(0), hidden, dtype=torch.double)

            for input_t in input.split(1, dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for _i in range(future):  # if we should predict the future
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            outputs = torch.cat(outputs, dim=1)
            return outputs

    return Sequence()


def sine_waves(T=20, L=16, N=5):
    x = np.empty((N, L), "int64")
    x[:] = np.array(range(L)) + np.array([-13, 2, 27, -40, 8]).reshape(N, 1)
    return np.sin(x / 1.0 / T).astype("float64")


def time_sequence_prediction(torch):
    """train.py with 2 steps of LBFGS(lr=0.8) (max_iter 20 each), the closure
    printing its loss, then the prediction with future=4 under no_grad."""
    data = sine_waves()
    input = torch.from_numpy(data[2:, :-1])
    target = torch.from_numpy(data[2:, 1:])
    test_input = torch.from_numpy(data[:2, :-1])
    test_target = torch.from_numpy(data[:2, 1:])
    seq = sequence_model(torch)
    seq.double()
    init_from(seq, torch, scale=0.3)
    criterion = torch.nn.MSELoss()
    optimizer = torch.optim.LBFGS(seq.parameters(), lr=0.8, max_iter=6)
    printed = []
    for i in range(2):
        printed.append("STEP: " + str(i))

        def closure():
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            printed.append("loss: " + str(loss.item()))
            loss.backward()
            return loss

        result = optimizer.step(closure)
        with torch.no_grad():
            future = 4
            pred = seq(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            printed.append("test loss: " + str(loss.item()))
            y = pred.detach().numpy()
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    counts = state["func_evals"], state["n_iter"], len(state["old_dirs"])
    return printed, result, type(y).__name__, y.shape, list(seq.parameters()), counts


def lstm_cell_unrolled_equals_lstm(torch):
    """An LSTMCell stepped over the sequence and an nn.LSTM with the same weights
    (the cell's weight_ih/weight_hh/bias_* are the layer's *_l0)."""
    cell = init_from(torch.nn.LSTMCell(3, 4), torch)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    lstm.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x = torch.tensor(draws(2, 5, 3, seed=1), requires_grad=True)
    h = c = torch.zeros(2, 4)
    outs = []
    for x_t in x.unbind(1):
        h, c = cell(x_t, (h, c))
        outs.append(h)
    stepped = torch.stack(outs, 1)
    full, (hn, cn) = lstm(x)
    (stepped.sum() + c.sum()).backward()
    gx = x.grad.clone()
    x.grad = None
    (full.sum() + cn.sum()).backward()
    return (
        stepped,
        full,
        hn[0],
        h,
        gx,
        x.grad,
        cell.weight_hh.grad,
        list(cell.state_dict()),
    )


TIME_SEQUENCE = {
    "train.py: LSTMCell x2, LBFGS closure, future": time_sequence_prediction,
    "LSTMCell stepped == nn.LSTM": lstm_cell_unrolled_equals_lstm,
}


@pytest.mark.parametrize("script", cases(TIME_SEQUENCE))
def test_examples_time_sequence_prediction(script):
    check(script)


# ==== (3) word_language_model: Embedding + LSTM/GRU + tied decoder, clip_grad_norm_ =====


def rnn_model(torch, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.0, tie=False):
    nn, F = torch.nn, torch.nn.functional

    class RNNModel(nn.Module):
        """Container module with an encoder, a recurrent module, and a decoder."""

        def __init__(self):
            super().__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            if rnn_type in ["LSTM", "GRU"]:
                self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            else:
                nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[rnn_type]
                self.rnn = nn.RNN(
                    ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout
                )
            self.decoder = nn.Linear(nhid, ntoken)
            if tie:
                if nhid != ninp:
                    raise ValueError(
                        "When using the tied flag, nhid must be equal to emsize"
                    )
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type = rnn_type
            self.nhid = nhid
            self.nlayers = nlayers

        def init_weights(self):
            initrange = 0.1
            nn.init.zeros_(self.decoder.bias)
            with torch.no_grad():  # nn.init.uniform_ from NumPy draws
                self.encoder.weight.copy_(
                    torch.tensor(initrange * draws(ntoken, ninp, seed=5))
                )

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output)
            decoded = decoded.view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if self.rnn_type == "LSTM":
                return (
                    weight.new_zeros(self.nlayers, bsz, self.nhid),
                    weight.new_zeros(self.nlayers, bsz, self.nhid),
                )
            else:
                return weight.new_zeros(self.nlayers, bsz, self.nhid)

    return RNNModel()


def batchify(torch, data, bsz):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    data = data.view(bsz, -1).t().contiguous()
    return data


def get_batch(source, i, bptt=5):
    seq_len = min(bptt, len(source) - 1 - i)
    data = source[i : i + seq_len]
    target = source[i + 1 : i + 1 + seq_len].view(-1)
    return data, target


def repackage_hidden(torch, h):
    """Wraps hidden states in new Tensors, to detach them from their history."""
    if isinstance(h, torch.Tensor):
        return h.detach()
    else:
        return tuple(repackage_hidden(torch, v) for v in h)


def word_language_model(rnn_type, tie=False, nlayers=2):
    def script(torch):
        ntoken, bsz, eval_bsz, lr, clip = 11, 3, 2, 20.0, 0.25
        corpus = torch.tensor(np.random.default_rng(7).integers(0, ntoken, 40))
        train_data = batchify(torch, corpus[:32], bsz)
        val_data = batchify(torch, corpus[32:], eval_bsz)
        model = rnn_model(torch, rnn_type, ntoken, 4, 4, nlayers, tie=tie)
        init_from(model, torch, scale=0.4)
        criterion = torch.nn.NLLLoss()
        log, norms = [], []

        def evaluate(data_source):
            model.eval()
            total_loss = 0.0
            hidden = model.init_hidden(eval_bsz)
            with torch.no_grad():
                for i in range(0, data_source.size(0) - 1, 5):
                    data, targets = get_batch(data_source, i)
                    output, hidden = model(data, hidden)
                    hidden = repackage_hidden(torch, hidden)
                    total_loss += len(data) * criterion(output, targets).item()
            return total_loss / (len(data_source) - 1)

        for epoch in range(1, 3):
            model.train()
            total_loss = 0.0
            hidden = model.init_hidden(bsz)
            for _batch, i in enumerate(range(0, train_data.size(0) - 1, 5)):
                data, targets = get_batch(train_data, i)
                model.zero_grad()
                hidden = repackage_hidden(torch, hidden)
                output, hidden = model(data, hidden)
                loss = criterion(output, targets)
                loss.backward()
                norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
                for p in model.parameters():
                    p.data.add_(p.grad, alpha=-lr)
                total_loss += loss.item()
            val_loss = evaluate(val_data)
            log.append(
                f"| end of epoch {epoch:3d} | valid loss {val_loss:5.2f} | "
                f"valid ppl {math.exp(val_loss):8.2f}"
            )
        names = [n for n, _ in model.named_parameters()]
        return (
            train_data,
            log,
            norms,
            names,
            list(model.state_dict()),
            list(model.parameters()),
            [p.grad for p in model.parameters()],
            hidden,
            repr(model),
        )

    return script


def word_language_model_tie_error(torch):
    return rnn_model(torch, "LSTM", 10, 4, 6, 1, tie=True)


def word_language_model_transformer(torch):
    """model.py's TransformerModel: PositionalEncoding (a registered pe buffer),
    _generate_square_subsequent_mask by log(tril(ones)), nn.TransformerEncoder,
    in eval mode."""
    nn, F = torch.nn, torch.nn.functional

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=5000):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            pe = torch.zeros(max_len, d_model)
            # the script's dtype=torch.float and .float(), at the tape's precision
            position = torch.arange(0, max_len, dtype=torch.double).unsqueeze(1)
            div_term = torch.exp(
                torch.arange(0, d_model, 2).double() * (-math.log(10000.0) / d_model)
            )
            pe[:, 0::2] = torch.sin(position * div_term)
            pe[:, 1::2] = torch.cos(position * div_term)
            pe = pe.unsqueeze(0).transpose(0, 1)
            self.register_buffer("pe", pe)

        def forward(self, x):
            x = x + self.pe[: x.size(0), :]
            return self.dropout(x)

    class TransformerModelEncoder(nn.Module):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super().__init__()
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout, max_len=50)
            encoder_layers = nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout)
            self.transformer_encoder = nn.TransformerEncoder(encoder_layers, nlayers)
            self.input_emb = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)

        def _generate_square_subsequent_mask(self, sz):
            return torch.log(torch.tril(torch.ones(sz, sz)))

        def forward(self, src, has_mask=True):
            if has_mask:
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    mask = self._generate_square_subsequent_mask(len(src))
                    self.src_mask = mask
            else:
                self.src_mask = None
            src = self.input_emb(src) * math.sqrt(self.ninp)
            src = self.pos_encoder(src)
            output = self.transformer_encoder(src, self.src_mask)
            output = self.decoder(output)
            return F.log_softmax(output, dim=-1)

    model = TransformerModelEncoder(9, 4, 2, 8, 2)
    init_from(model, torch, scale=0.3)
    model.eval()
    src = torch.tensor(np.random.default_rng(2).integers(0, 9, (5, 2)))
    out = model(src)
    loss = torch.nn.NLLLoss()(out.view(-1, 9), src.roll(-1, 0).reshape(-1))
    loss.backward()
    return (
        out,
        loss,
        model.src_mask,
        model.pos_encoder.pe[:3],
        "pe" in model.state_dict(),
        [k for k in model.state_dict() if "pe" in k],
        model.input_emb.weight.grad,
    )


def word_language_model_generate(torch):
    """generate.py: the model in eval mode fed one word at a time, word_weights =
    output.squeeze().div(temperature).exp(), the chosen index written back by
    input.fill_(word_idx) (argmax for torch.multinomial), words joined by the
    corpus's idx2word."""
    idx2word = [f"w{i}" for i in range(11)]
    model = rnn_model(torch, "LSTM", 11, 4, 5, 2)
    init_from(model, torch, scale=0.6)
    model.eval()
    hidden = model.init_hidden(1)
    input = torch.tensor([[3]], dtype=torch.long)
    words, weights = [], []
    with torch.no_grad():
        for i in range(6):
            output, hidden = model(input, hidden)
            word_weights = output.squeeze().div(0.8).exp().cpu()
            word_idx = word_weights.argmax()  # torch.multinomial(word_weights, 1)[0]
            input.fill_(word_idx)
            word = idx2word[word_idx]
            words.append(word + ("\n" if i % 3 == 2 else " "))
            weights.append(word_weights)
    return "".join(words), weights, input, hidden


WORD_LANGUAGE_MODEL = {
    "generate.py: fill_ with the chosen word": word_language_model_generate,
    "LSTM, 2 layers": word_language_model("LSTM"),
    "GRU, tied weights": word_language_model("GRU", tie=True),
    "RNN_TANH, 1 layer": word_language_model("RNN_TANH", nlayers=1),
    "tied flag with nhid != emsize": word_language_model_tie_error,
    "TransformerModel, eval mode": word_language_model_transformer,
}


@pytest.mark.parametrize("script", cases(WORD_LANGUAGE_MODEL))
def test_examples_word_language_model(script):
    check(script)


# ==== (4) vae and regression ============================================================


def vae(torch):
    """vae/main.py in miniature (16 -> 8 -> 2): reparameterize with a fixed eps,
    BCE(reduction='sum') + KLD, Adam(lr=1e-3), the printed averages, and a decoded
    sample under no_grad."""
    nn, F = torch.nn, torch.nn.functional
    eps_draws = iter([torch.tensor(draws(4, 2, seed=s)) for s in range(10, 20)])

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(16, 8)
            self.fc21 = nn.Linear(8, 2)
            self.fc22 = nn.Linear(8, 2)
            self.fc3 = nn.Linear(2, 8)
            self.fc4 = nn.Linear(8, 16)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = next(eps_draws)  # torch.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 16))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 16), reduction="sum")
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    model = init_from(VAE(), torch, scale=0.4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = torch.tensor(np.random.default_rng(4).random((8, 1, 4, 4)))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images), batch_size=4
    )
    log = []
    for epoch in range(1, 3):
        model.train()
        train_loss = 0
        for _batch_idx, (data,) in enumerate(loader):
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data)
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        log.append(
            f"====> Epoch: {epoch} Average loss: {train_loss / len(loader.dataset):.4f}"
        )
    with torch.no_grad():
        sample = model.decode(torch.tensor(draws(3, 2, seed=30)))
        image = sample.view(3, 1, 4, 4)
    return log, [p.grad for p in model.parameters()], image, recon_batch.grad_fn.name()


def regression(torch):
    """regression/main.py: polynomial features, F.smooth_l1_loss, p.data.add_, and
    the poly_desc strings formatting 0-d tensors with '{:+.2f}'."""
    F = torch.nn.functional
    POLY_DEGREE = 4
    W_target = torch.tensor(draws(POLY_DEGREE, 1)) * 5
    b_target = torch.tensor(draws(1, seed=1)) * 5
    batches = iter([torch.tensor(draws(32, seed=s)) for s in range(100, 200)])

    def make_features(x):
        """Builds features i.e. a matrix with columns [x, x^2, x^3, x^4]."""
        x = x.unsqueeze(1)
        return torch.cat([x**i for i in range(1, POLY_DEGREE + 1)], 1)

    def f(x):
        """Approximated function."""
        return x.mm(W_target) + b_target.item()

    def poly_desc(W, b):
        """Creates a string description of a polynomial."""
        result = "y = "
        for i, w in enumerate(W):
            result += f"{w:+.2f} x^{i + 1} "
        result += f"{b[0]:+.2f}"
        return result

    def get_batch(batch_size=32):
        """Builds a batch i.e. (x, f(x)) pair."""
        random = next(batches)
        x = make_features(random)
        y = f(x)
        return x, y

    fc = torch.nn.Linear(W_target.size(0), 1)
    init_from(fc, torch)
    losses = []
    for batch_idx in range(1, 61):  # noqa: B007 - printed after the loop
        batch_x, batch_y = get_batch()
        fc.zero_grad()
        output = F.smooth_l1_loss(fc(batch_x), batch_y)
        loss = output.item()
        losses.append(loss)
        output.backward()
        for param in fc.parameters():
            param.data.add_(-0.01 * param.grad)
        if loss < 1e-3:
            break
    return (
        f"Loss: {loss:.6f} after {batch_idx} batches",
        "==> Learned function:\t" + poly_desc(fc.weight.view(-1), fc.bias),
        "==> Actual function:\t" + poly_desc(W_target.view(-1), b_target),
        losses[::10],
        fc.weight.grad,
    )


VAE_REGRESSION = {
    "vae: reparameterize, BCE sum + KLD, Adam": vae,
    "regression: smooth_l1_loss, poly_desc": regression,
}


@pytest.mark.parametrize("script", cases(VAE_REGRESSION))
def test_examples_vae_regression(script):
    check(script)


# ==== (5) snli-style bag of embeddings, REINFORCE and actor-critic =====================


def bag_of_embeddings_classifier(torch):
    """An snli-style encoder: padded premise/hypothesis token ids (padding_idx=0),
    embeddings summed and divided by the lengths, features [u, v, |u-v|, u*v], an MLP
    with cross_entropy, Adam; accuracy by (argmax == label).sum()."""
    nn, F = torch.nn, torch.nn.functional
    rng = np.random.default_rng(11)
    premise = rng.integers(1, 12, (6, 5))
    hypothesis = rng.integers(1, 12, (6, 4))
    premise[:, 3:] *= rng.random((6, 2)) < 0.5  # padding
    hypothesis[:, 2:] *= rng.random((6, 2)) < 0.5
    labels = torch.tensor(rng.integers(0, 3, 6))

    class BagEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(12, 5, padding_idx=0)
            self.out = nn.Sequential(
                nn.Linear(20, 8), nn.ReLU(), nn.Dropout(0.0), nn.Linear(8, 3)
            )

        def encode(self, tokens):
            lengths = (tokens != 0).sum(1, keepdim=True).clamp(min=1)
            return self.embed(tokens).sum(1) / lengths

        def forward(self, p, h):
            u, v = self.encode(p), self.encode(h)
            return self.out(torch.cat([u, v, (u - v).abs(), u * v], 1))

    model = init_from(BagEncoder(), torch)
    with torch.no_grad():
        model.embed.weight[0].fill_(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    p, h = torch.tensor(premise), torch.tensor(hypothesis)
    log = []
    for _it in range(5):
        opt.zero_grad()
        answer = model(p, h)
        loss = F.cross_entropy(answer, labels)
        loss.backward()
        opt.step()
        n_correct = (torch.max(answer, 1)[1].view(labels.size()) == labels).sum()
        log.append((loss.item(), n_correct.item(), 100.0 * n_correct / len(labels)))
    return log, model.embed.weight.grad, answer.dtype, n_correct.dtype


def reinforce(torch):
    """reinforce.py's Policy and finish_episode, with the sampled actions fixed:
    Categorical(probs).log_prob, returns normalized by std + float32 eps, the
    policy loss by torch.cat(...).sum(), deque.appendleft."""
    nn, F = torch.nn, torch.nn.functional
    Categorical = torch.distributions.Categorical
    eps = np.finfo(np.float32).eps.item()
    gamma = 0.99

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(4, 16)
            self.dropout = nn.Dropout(p=0.6)
            self.affine2 = nn.Linear(16, 2)
            self.saved_log_probs = []
            self.rewards = []

        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)

    policy = init_from(Policy(), torch)
    policy.eval()  # the dropout's random mask is not compared
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    states = draws(6, 4, seed=8)
    actions = [0, 1, 1, 0, 1, 0]

    def select_action(state, fixed):
        state = torch.from_numpy(state).unsqueeze(0)
        probs = policy(state)
        m = Categorical(probs)
        action = torch.tensor([fixed])  # m.sample()
        policy.saved_log_probs.append(m.log_prob(action))
        return action.item()

    def finish_episode():
        R = 0
        policy_loss = []
        returns = deque()
        for r in policy.rewards[::-1]:
            R = r + gamma * R
            returns.appendleft(R)
        returns = torch.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns, strict=False):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = torch.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        del policy.rewards[:]
        del policy.saved_log_probs[:]
        return policy_loss, returns

    results = []
    running_reward = 10
    for i_episode in range(2):
        ep_reward = 0
        for t, (state, a) in enumerate(zip(states, actions, strict=False)):
            action = select_action(state, a)
            reward = 1.0 if action == (t % 2) else 0.5
            policy.rewards.append(reward)
            ep_reward += reward
        running_reward = 0.05 * ep_reward + (1 - 0.05) * running_reward
        loss, returns = finish_episode()
        results.append((loss, returns, [p.grad.clone() for p in policy.parameters()]))
        results.append(
            f"Episode {i_episode}\tLast reward: {ep_reward:.2f}\tAverage reward: {running_reward:.2f}"
        )
    return results, type(action).__name__


def reinforce_float_state_as_written(torch):
    """reinforce.py's torch.from_numpy(state).float() into a float64 policy: the
    mat1/mat2 dtype error, in both."""
    policy = torch.nn.Linear(4, 2)
    state = torch.from_numpy(draws(4)).float().unsqueeze(0)
    return policy(state)


def actor_critic(torch):
    """actor_critic.py: a shared affine layer with action and value heads, the
    SavedAction namedtuple, F.smooth_l1_loss(value, torch.tensor([R])), the loss as
    torch.stack(policy_losses).sum() + torch.stack(value_losses).sum(); the log-prob
    also by log_softmax + gather."""
    nn, F = torch.nn, torch.nn.functional
    Categorical = torch.distributions.Categorical
    SavedAction = namedtuple("SavedAction", ["log_prob", "value"])
    eps = np.finfo(np.float32).eps.item()

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(4, 16)
            self.action_head = nn.Linear(16, 2)
            self.value_head = nn.Linear(16, 1)
            self.saved_actions = []
            self.rewards = []

        def forward(self, x):
            x = F.relu(self.affine1(x))
            action_prob = F.softmax(self.action_head(x), dim=-1)
            state_values = self.value_head(x)
            return action_prob, state_values

    model = init_from(Policy(), torch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    gathered = []
    for t, (state, a) in enumerate(
        zip(draws(5, 4, seed=9), [1, 0, 0, 1, 1], strict=False)
    ):
        state = torch.from_numpy(state)
        probs, state_value = model(state)
        m = Categorical(probs)
        action = torch.tensor(a)
        model.saved_actions.append(SavedAction(m.log_prob(action), state_value))
        logits = model.action_head(F.relu(model.affine1(state.unsqueeze(0))))
        gathered.append(
            F.log_softmax(logits, dim=1).gather(1, action.view(1, 1)).squeeze()
        )
        model.rewards.append(float(t % 3))

    R = 0
    saved_actions = model.saved_actions
    policy_losses = []
    value_losses = []
    returns = []
    for r in model.rewards[::-1]:
        R = r + 0.99 * R
        returns.insert(0, R)
    returns = torch.tensor(returns)
    returns = (returns - returns.mean()) / (returns.std() + eps)
    for (log_prob, value), R in zip(saved_actions, returns, strict=False):
        advantage = R - value.item()
        policy_losses.append(-log_prob * advantage)
        value_losses.append(F.smooth_l1_loss(value, torch.tensor([R])))
    optimizer.zero_grad()
    loss = torch.stack(policy_losses).sum() + torch.stack(value_losses).sum()
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    log_probs = torch.stack([s.log_prob for s in saved_actions])
    return loss, grads, log_probs, torch.stack(gathered), value_losses[0].shape


POLICIES = {
    "snli-style bag of embeddings": bag_of_embeddings_classifier,
    "REINFORCE with fixed actions": reinforce,
    "REINFORCE's .float() state into a float64 policy": (
        reinforce_float_state_as_written
    ),
    "actor-critic, SavedAction, smooth_l1_loss": actor_critic,
}


@pytest.mark.parametrize("script", cases(POLICIES))
def test_examples_policies(script):
    check(script)


# ==== (6) minGPT / nanoGPT =============================================================


def gpt_classes(torch, flash=False):
    """nanoGPT's model.py (LayerNorm with optional bias, CausalSelfAttention with a
    tril buffer or the flash path, MLP with GELU, Block, GPT with weight tying)."""
    nn, F = torch.nn, torch.nn.functional

    class GPTConfig:
        block_size = 6
        vocab_size = 11
        n_layer = 2
        n_head = 2
        n_embd = 8
        dropout = 0.0
        bias = True

    class LayerNorm(nn.Module):
        """LayerNorm but with an optional bias."""

        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.n_embd % config.n_head == 0
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
            self.attn_dropout = nn.Dropout(config.dropout)
            self.resid_dropout = nn.Dropout(config.dropout)
            self.n_head = config.n_head
            self.n_embd = config.n_embd
            self.dropout = config.dropout
            self.flash = flash and hasattr(
                torch.nn.functional, "scaled_dot_product_attention"
            )
            if not self.flash:
                self.register_buffer(
                    "bias",
                    torch.tril(torch.ones(config.block_size, config.block_size)).view(
                        1, 1, config.block_size, config.block_size
                    ),
                )

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            if self.flash:
                y = torch.nn.functional.scaled_dot_product_attention(
                    q,
                    k,
                    v,
                    attn_mask=None,
                    dropout_p=self.dropout if self.training else 0,
                    is_causal=True,
                )
            else:
                att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
                att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
                att = F.softmax(att, dim=-1)
                att = self.attn_dropout(att)
                y = att @ v
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            y = self.resid_dropout(self.c_proj(y))
            return y

    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
            self.dropout = nn.Dropout(config.dropout)

        def forward(self, x):
            x = self.c_fc(x)
            x = self.gelu(x)
            x = self.c_proj(x)
            x = self.dropout(x)
            return x

    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
            self.attn = CausalSelfAttention(config)
            self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
            return x

    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.vocab_size is not None
            assert config.block_size is not None
            self.config = config

            self.transformer = nn.ModuleDict(
                dict(
                    wte=nn.Embedding(config.vocab_size, config.n_embd),
                    wpe=nn.Embedding(config.block_size, config.n_embd),
                    drop=nn.Dropout(config.dropout),
                    h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                    ln_f=LayerNorm(config.n_embd, bias=config.bias),
                )
            )
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight
            init_from(self, torch, scale=0.3)  # self.apply(self._init_weights)

        def get_num_params(self, non_embedding=True):
            n_params = sum(p.numel() for p in self.parameters())
            if non_embedding:
                n_params -= self.transformer.wpe.weight.numel()
            return n_params

        def forward(self, idx, targets=None):
            device = idx.device
            b, t = idx.size()
            assert (
                t <= self.config.block_size
            ), f"Cannot forward sequence of length {t}, block size is only {self.config.block_size}"
            pos = torch.arange(0, t, dtype=torch.long, device=device)
            tok_emb = self.transformer.wte(idx)
            pos_emb = self.transformer.wpe(pos)
            x = self.transformer.drop(tok_emb + pos_emb)
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(
                    logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1
                )
            else:
                logits = self.lm_head(x[:, [-1], :])
                loss = None
            return logits, loss

        def crop_block_size(self, block_size):
            assert block_size <= self.config.block_size
            self.config.block_size = block_size
            self.transformer.wpe.weight = nn.Parameter(
                self.transformer.wpe.weight[:block_size]
            )
            for block in self.transformer.h:
                if hasattr(block.attn, "bias"):
                    block.attn.bias = block.attn.bias[:, :, :block_size, :block_size]

        def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
            param_dict = {pn: p for pn, p in self.named_parameters()}
            param_dict = {pn: p for pn, p in param_dict.items() if p.requires_grad}
            decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
            nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
            optim_groups = [
                {"params": decay_params, "weight_decay": weight_decay},
                {"params": nodecay_params, "weight_decay": 0.0},
            ]
            num_decay_params = sum(p.numel() for p in decay_params)
            num_nodecay_params = sum(p.numel() for p in nodecay_params)
            printed = [
                f"num decayed parameter tensors: {len(decay_params)}, with "
                f"{num_decay_params:,} parameters",
                f"num non-decayed parameter tensors: {len(nodecay_params)}, with "
                f"{num_nodecay_params:,} parameters",
            ]
            fused_available = "fused" in inspect.signature(torch.optim.AdamW).parameters
            use_fused = fused_available and device_type == "cuda"
            extra_args = dict(fused=True) if use_fused else dict()
            optimizer = torch.optim.AdamW(
                optim_groups, lr=learning_rate, betas=betas, **extra_args
            )
            printed.append(f"using fused AdamW: {use_fused}")
            return optimizer, printed

        @torch.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
            for _ in range(max_new_tokens):
                idx_cond = (
                    idx
                    if idx.size(1) <= self.config.block_size
                    else idx[:, -self.config.block_size :]
                )
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float("Inf")
                probs = F.softmax(logits, dim=-1)
                _, idx_next = torch.topk(probs, k=1, dim=-1)  # do_sample=False
                idx = torch.cat((idx, idx_next), dim=1)
            return idx

    return GPTConfig, GPT


def gpt_batches(n, seed=0, b=2, t=6, vocab=11):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, vocab, 60)
    out = []
    for _ in range(n):
        ix = rng.integers(0, len(data) - t, b)
        x = np.stack([data[i : i + t] for i in ix])
        y = np.stack([data[i + 1 : i + 1 + t] for i in ix])
        out.append((x, y))
    return out


def nanogpt_train(flash):
    def script(torch):
        """train.py in miniature: configure_optimizers (AdamW, decay/no-decay groups),
        get_lr (linear warmup, cosine decay) written into param_groups, gradient
        accumulation, clip_grad_norm_, zero_grad(set_to_none=True), estimate_loss
        under no_grad in eval mode, generate."""
        GPTConfig, GPT = gpt_classes(torch, flash)
        model = GPT(GPTConfig())
        n_params = model.get_num_params()
        optimizer, printed = model.configure_optimizers(0.1, 6e-3, (0.9, 0.95), "cpu")
        warmup_iters, lr_decay_iters, learning_rate, min_lr = 2, 6, 6e-3, 6e-4

        def get_lr(it):
            if it < warmup_iters:
                return learning_rate * (it + 1) / (warmup_iters + 1)
            if it > lr_decay_iters:
                return min_lr
            decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
            assert 0 <= decay_ratio <= 1
            coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
            return min_lr + coeff * (learning_rate - min_lr)

        @torch.no_grad()
        def estimate_loss():
            out = {}
            model.eval()
            for split, seed in (("train", 1), ("val", 2)):
                losses = torch.zeros(3)
                for k, (x, y) in enumerate(gpt_batches(3, seed)):
                    logits, loss = model(torch.from_numpy(x), torch.from_numpy(y))
                    losses[k] = loss.item()
                out[split] = losses.mean()
            model.train()
            return out

        ctx = nullcontext()
        grad_accum, grad_clip = 2, 1.0
        batches = iter(gpt_batches(20, seed=3))
        log, norms = [], []
        for iter_num in range(8):
            lr = get_lr(iter_num)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            if iter_num % 4 == 0:
                losses = estimate_loss()
                log.append(
                    f"step {iter_num}: train loss {losses['train']:.4f}, "
                    f"val loss {losses['val']:.4f}"
                )
            for _micro_step in range(grad_accum):
                X, Y = map(torch.from_numpy, next(batches))
                with ctx:
                    logits, loss = model(X, Y)
                    loss = loss / grad_accum
                loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lossf = loss.item() * grad_accum
            log.append(f"iter {iter_num}: loss {lossf:.4f}, lr {lr:.6f}")
        start = torch.tensor([[1, 2]], dtype=torch.long)
        generated = model.generate(start, 6, temperature=0.8, top_k=4)
        state = optimizer.state[model.lm_head.weight]
        return (
            n_params,
            printed,
            log,
            norms,
            generated,
            [g["weight_decay"] for g in optimizer.param_groups],
            [len(g["params"]) for g in optimizer.param_groups],
            list(model.parameters()),
            state["exp_avg"],
            model.lm_head.weight is model.transformer.wte.weight,
        )

    return script


def nanogpt_checkpoint(torch):
    """train.py's checkpoint: model.state_dict() with the tied weights and the tril
    buffers, the '_orig_mod.' prefix stripped, load_state_dict into a fresh GPT;
    crop_block_size; a missing and an unexpected key under strict=False."""
    GPTConfig, GPT = gpt_classes(torch)
    model = GPT(GPTConfig())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    sd = model.state_dict()
    buffer = io.BytesIO()
    torch.save({"model": {"_orig_mod." + k: v for k, v in sd.items()}}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    state_dict = checkpoint["model"]
    unwanted_prefix = "_orig_mod."
    for k, _v in list(state_dict.items()):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix) :]] = state_dict.pop(k)
    fresh = GPT(GPTConfig())
    result = fresh.load_state_dict(state_dict)
    x = torch.from_numpy(gpt_batches(1)[0][0])
    same_logits = fresh(x)[0]
    fresh.crop_block_size(4)
    cropped = fresh(x[:, :4])[0]
    del state_dict["lm_head.weight"]
    state_dict["extra.weight"] = torch.zeros(1)
    loose = fresh.load_state_dict(state_dict, strict=False)
    return (
        list(sd),
        sd["transformer.h.0.attn.bias"],
        repr(result),
        same_logits,
        cropped,
        fresh.transformer.wpe.weight.shape,
        fresh.transformer.h[0].attn.bias.shape,
        loose.missing_keys,
        loose.unexpected_keys,
        repr(loose),
    )


def nanogpt_strict_load_error(torch):
    GPTConfig, GPT = gpt_classes(torch)
    model = GPT(GPTConfig())
    sd = model.state_dict()
    sd.pop("transformer.ln_f.bias")
    model.load_state_dict(sd)


def nanogpt_flash_equals_manual(torch):
    """The flash path (scaled_dot_product_attention(is_causal=True)) and the
    masked_fill path give the same logits, loss and gradients."""
    GPTConfig, GPT = gpt_classes(torch, flash=False)
    GPTConfig2, GPT2 = gpt_classes(torch, flash=True)
    a, b = GPT(GPTConfig()), GPT2(GPTConfig2())
    x, y = map(torch.from_numpy, gpt_batches(1, seed=4)[0])
    y[0, :2] = -1  # ignore_index=-1
    la, lossa = a(x, y)
    lb, lossb = b(x, y)
    lossa.backward()
    lossb.backward()
    return (
        (la - lb).abs().max() < 1e-12,
        lossa,
        lossb,
        a.transformer.wte.weight.grad,
        b.transformer.wte.weight.grad,
        a.transformer.h[0].attn.c_attn.weight.grad,
        b.transformer.h[0].attn.c_attn.weight.grad,
        list(b.state_dict())
        == [k for k in a.state_dict() if not k.endswith("attn.bias")],
    )


def mingpt_configure_optimizers(torch):
    """minGPT's configure_optimizers: decay/no_decay sets by module type over
    named_modules/named_parameters, AdamW groups by sorted names; NewGELU against
    nn.GELU(approximate='tanh'); a cosine schedule with warmup by LambdaLR."""
    nn = torch.nn

    class NewGELU(nn.Module):
        def forward(self, x):
            return (
                0.5
                * x
                * (
                    1.0
                    + torch.tanh(
                        math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))
                    )
                )
            )

    model = nn.Sequential(
        OrderedDict(
            wte=nn.Embedding(7, 4),
            ln=nn.LayerNorm(4),
            fc=nn.Linear(4, 8),
            act=NewGELU(),
            proj=nn.Linear(8, 7),
        )
    )
    init_from(model, torch)
    decay, no_decay = set(), set()
    whitelist_weight_modules = (torch.nn.Linear,)
    blacklist_weight_modules = (torch.nn.LayerNorm, torch.nn.Embedding)
    for mn, m in model.named_modules():
        for pn, _p in m.named_parameters():
            fpn = f"{mn}.{pn}" if mn else pn
            if pn.endswith("bias"):
                no_decay.add(fpn)
            elif pn.endswith("weight") and isinstance(m, whitelist_weight_modules):
                decay.add(fpn)
            elif pn.endswith("weight") and isinstance(m, blacklist_weight_modules):
                no_decay.add(fpn)
    param_dict = {pn: p for pn, p in model.named_parameters()}
    inter_params = decay & no_decay
    union_params = decay | no_decay
    assert len(inter_params) == 0
    assert len(param_dict.keys() - union_params) == 0
    optim_groups = [
        {
            "params": [param_dict[pn] for pn in sorted(list(decay))],
            "weight_decay": 0.1,
        },
        {
            "params": [param_dict[pn] for pn in sorted(list(no_decay))],
            "weight_decay": 0.0,
        },
    ]
    optimizer = torch.optim.AdamW(optim_groups, lr=5e-3, betas=(0.9, 0.95))
    warmup, total = 3, 10

    def lr_lambda(step):
        if step < warmup:
            return float(step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    idx = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 1]])
    targets = torch.tensor([[2, 3, 4, -100], [6, 0, 1, 2]])
    lrs, losses = [], []
    for _ in range(6):
        logits = model(idx)
        loss = torch.nn.functional.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100
        )
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
        losses.append(loss)
    x = torch.tensor(draws(5, seed=2), requires_grad=True)
    gelu = NewGELU()(x)
    (g,) = torch.autograd.grad(gelu.sum(), x)
    return (
        sorted(decay),
        sorted(no_decay),
        lrs,
        losses,
        gelu,
        nn.GELU(approximate="tanh")(x),
        g,
        list(model.parameters()),
        repr(model),
    )


def nanogpt_fused_available(torch):
    """configure_optimizers' check for a fused AdamW (then used only on CUDA)."""
    return "fused" in inspect.signature(torch.optim.AdamW).parameters


def nanogpt_grad_scaler(torch):
    """train.py's scaler = torch.amp.GradScaler(enabled=(dtype == 'float16')), a
    pass-through when disabled: scale(loss).backward(), unscale_, step, update."""
    model = init_from(torch.nn.Linear(3, 2), torch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = model(torch.tensor(draws(4, 3))).pow(2).mean()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    return list(model.parameters()), scaler.is_enabled()


GPT = {
    "configure_optimizers: 'fused' in AdamW's signature": nanogpt_fused_available,
    "train.py's disabled GradScaler": nanogpt_grad_scaler,
    "nanoGPT train.py, masked_fill attention": nanogpt_train(flash=False),
    "nanoGPT train.py, flash attention": nanogpt_train(flash=True),
    "nanoGPT checkpoint and crop_block_size": nanogpt_checkpoint,
    "nanoGPT strict load_state_dict error": nanogpt_strict_load_error,
    "flash == manual attention": nanogpt_flash_equals_manual,
    "minGPT configure_optimizers, LambdaLR warmup": mingpt_configure_optimizers,
}


@pytest.mark.parametrize("script", cases(GPT))
def test_gpt(script):
    check(script)


# ==== (7) siamese networks, WGAN-GP, a custom Dataset ===================================


def siamese_contrastive(torch):
    """A siamese network's shared tower, the contrastive loss by
    F.pairwise_distance(keepdim=True) and clamp(margin - d, min=0.0),
    F.cosine_similarity between the embeddings, SGD."""
    nn, F = torch.nn, torch.nn.functional

    class SiameseNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Sequential(
                nn.Linear(6, 8), nn.ReLU(inplace=True), nn.Linear(8, 3)
            )

        def forward_once(self, x):
            return self.fc(x)

        def forward(self, input1, input2):
            return self.forward_once(input1), self.forward_once(input2)

    class ContrastiveLoss(nn.Module):
        def __init__(self, margin=2.0):
            super().__init__()
            self.margin = margin

        def forward(self, output1, output2, label):
            euclidean_distance = F.pairwise_distance(output1, output2, keepdim=True)
            return torch.mean(
                (1 - label) * torch.pow(euclidean_distance, 2)
                + label
                * torch.pow(torch.clamp(self.margin - euclidean_distance, min=0.0), 2)
            )

    net = init_from(SiameseNetwork(), torch)
    criterion = ContrastiveLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x1, x2 = torch.tensor(draws(5, 6, seed=1)), torch.tensor(draws(5, 6, seed=2))
    label = torch.tensor([[0.0], [1.0], [1.0], [0.0], [1.0]])
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        o1, o2 = net(x1, x2)
        loss_contrastive = criterion(o1, o2, label)
        loss_contrastive.backward()
        optimizer.step()
        losses.append(loss_contrastive.item())
    d = F.pairwise_distance(o1, o2)
    cos = F.cosine_similarity(o1, o2)
    return losses, d, cos, [p.grad for p in net.parameters()], d.grad_fn is not None


def siamese_triplet(torch):
    """A triplet embedding network trained with F.triplet_margin_loss (margin,
    p, swap) and nn.TripletMarginLoss; the gradients of each."""
    nn, F = torch.nn, torch.nn.functional
    net = init_from(nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)), torch)
    a, p, n = (torch.tensor(draws(4, 5, seed=s)) for s in (1, 2, 3))
    losses = []
    for kw in ({}, {"margin": 2.0, "p": 1}, {"swap": True}, {"reduction": "sum"}):
        net.zero_grad()
        loss = F.triplet_margin_loss(net(a), net(p), net(n), **kw)
        loss.backward()
        losses.append((loss, net[0].weight.grad.clone()))
    criterion = nn.TripletMarginLoss(margin=1.5, reduction="none")
    each = criterion(net(a), net(p), net(n))
    return losses, each, repr(criterion)


def wgan_gp(torch):
    """The WGAN-GP critic step (gulrajani/improved_wgan_training ports):
    calc_gradient_penalty by autograd.grad(create_graph=True, retain_graph=True,
    only_inputs=True) with grad_outputs=ones(size()), D_real.backward(mone) with the
    script's one = torch.tensor(1, dtype=torch.float), Adam(betas=(0.5, 0.9))."""
    nn, autograd = torch.nn, torch.autograd
    LAMBDA = 10
    netD = init_from(
        nn.Sequential(
            nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)
        ),
        torch,
    )
    netG = init_from(
        nn.Sequential(nn.Linear(3, 8), nn.ReLU(True), nn.Linear(8, 2)), torch
    )
    optimizerD = torch.optim.Adam(netD.parameters(), lr=1e-3, betas=(0.5, 0.9))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.9))
    one = torch.tensor(1, dtype=torch.float)
    mone = one * -1

    def calc_gradient_penalty(netD, real_data, fake_data, alpha):
        alpha = alpha.expand(real_data.size())
        interpolates = alpha * real_data + ((1 - alpha) * fake_data)
        interpolates = autograd.Variable(interpolates, requires_grad=True)
        disc_interpolates = netD(interpolates)
        gradients = autograd.grad(
            outputs=disc_interpolates,
            inputs=interpolates,
            grad_outputs=torch.ones(disc_interpolates.size()),
            create_graph=True,
            retain_graph=True,
            only_inputs=True,
        )[0]
        return ((gradients.norm(2, dim=1) - 1) ** 2).mean() * LAMBDA

    trail = []
    for it in range(3):
        for p in netD.parameters():
            p.requires_grad = True
        real_data = torch.tensor(draws(6, 2, seed=it))
        netD.zero_grad()
        D_real = netD(real_data).mean()
        D_real.backward(mone)
        noise = torch.tensor(draws(6, 3, seed=10 + it))
        with torch.no_grad():
            fake = netG(noise)
        D_fake = netD(fake).mean()
        D_fake.backward(one)
        alpha = torch.tensor(np.random.default_rng(it).random((6, 1)))
        gradient_penalty = calc_gradient_penalty(netD, real_data, fake, alpha)
        gradient_penalty.backward()
        D_cost = D_fake - D_real + gradient_penalty
        Wasserstein_D = D_real - D_fake
        optimizerD.step()
        for p in netD.parameters():
            p.requires_grad = False
        netG.zero_grad()
        G = netD(netG(noise)).mean()
        G.backward(mone)
        G_cost = -G
        optimizerG.step()
        trail.append((D_cost, Wasserstein_D, G_cost, gradient_penalty))
    return (
        trail,
        [p.grad for p in netD.parameters()],
        [p.grad for p in netG.parameters()],
    )


def custom_dataset(torch):
    """A map-style Dataset with __len__/__getitem__ returning dicts (a transform
    applied per sample), DataLoader(shuffle=False): the collated dict of stacked
    tensors, int labels as int64, a string field as a list, the last short batch."""
    data = torch.utils.data

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, x):
            return (x - self.mean) / self.std

    class PointsDataset(data.Dataset):
        def __init__(self, n, transform=None):
            self.points = draws(n, 3, seed=21)
            self.labels = [i % 3 for i in range(n)]
            self.transform = transform

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, idx):
            if torch.is_tensor(idx):
                idx = idx.tolist()
            x = torch.from_numpy(self.points[idx])
            if self.transform:
                x = self.transform(x)
            return {"x": x, "label": self.labels[idx], "name": f"pt{idx}"}

    ds = PointsDataset(7, transform=Normalize(0.5, 2.0))
    loader = data.DataLoader(ds, batch_size=3, shuffle=False, num_workers=0)
    model = init_from(torch.nn.Linear(3, 3), torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches, losses = [], []
    for i_batch, sample_batched in enumerate(loader):
        batches.append(
            (
                i_batch,
                sample_batched["x"].size(),
                sample_batched["label"],
                sample_batched["name"],
            )
        )
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            model(sample_batched["x"]), sample_batched["label"]
        )
        loss.backward()
        opt.step()
        losses.append(loss)
    return len(ds), ds[torch.tensor(2)], batches, losses, len(loader)


def siamese_cosine_and_ranking(torch):
    """Pairs scored by F.cosine_embedding_loss (targets 1/-1, margin) and ranked by
    F.margin_ranking_loss, as functions and modules, with their gradients."""
    nn, F = torch.nn, torch.nn.functional
    net = init_from(nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)), torch)
    x1, x2 = (torch.tensor(draws(6, 5, seed=s)) for s in (4, 5))
    y = torch.tensor([1, -1, 1, -1, -1, 1])
    results = []
    for kw in ({}, {"margin": 0.2}, {"margin": -0.5, "reduction": "sum"}):
        net.zero_grad()
        loss = F.cosine_embedding_loss(net(x1), net(x2), y, **kw)
        loss.backward()
        results.append((loss, net[2].weight.grad.clone()))
    scores1, scores2 = net(x1)[:, 0], net(x2)[:, 0]
    ranking = nn.MarginRankingLoss(margin=0.3, reduction="none")(
        scores1, scores2, y.double()
    )
    net.zero_grad()
    F.margin_ranking_loss(scores1, scores2, y.double(), margin=0.1).backward()
    each = nn.CosineEmbeddingLoss(reduction="none")(net(x1), net(x2), y)
    return results, ranking, net[0].weight.grad, each, repr(nn.CosineEmbeddingLoss())


def dcgan(torch):
    """dcgan/main.py in miniature: weights_init by class name, a ConvTranspose2d
    generator with BatchNorm2d, BCELoss with labels by torch.full, one D and one G
    step and the printed line."""
    nn = torch.nn
    nz, ngf, ndf = 3, 4, 4

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            with torch.no_grad():
                m.weight.copy_(torch.tensor(0.02 * draws(*m.weight.shape, seed=1)))
        elif classname.find("BatchNorm") != -1:
            with torch.no_grad():
                m.weight.fill_(1.02)
            nn.init.constant_(m.bias.data, 0)

    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 2, 4, 1, 0, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, 1, 4, 2, 1, bias=False),
        nn.Tanh(),
    )
    netD = nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, 1, 4, 1, 0, bias=False),
        nn.Sigmoid(),
    )
    netG.apply(weights_init)
    netD.apply(weights_init)
    criterion = nn.BCELoss()
    optimizerD = torch.optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizerG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    real = torch.tensor(draws(2, 1, 8, 8, seed=2)).tanh()
    noise = torch.tensor(draws(2, nz, 1, 1, seed=3))
    real_label, fake_label = 1.0, 0.0
    netD.zero_grad()
    label = torch.full((2,), real_label, dtype=real.dtype)
    output = netD(real).view(-1)
    errD_real = criterion(output, label)
    errD_real.backward()
    D_x = output.mean().item()
    fake = netG(noise)
    label.fill_(fake_label)
    output = netD(fake.detach()).view(-1)
    errD_fake = criterion(output, label)
    errD_fake.backward()
    D_G_z1 = output.mean().item()
    errD = errD_real + errD_fake
    optimizerD.step()
    netG.zero_grad()
    label.fill_(real_label)
    output = netD(fake).view(-1)
    errG = criterion(output, label)
    errG.backward()
    D_G_z2 = output.mean().item()
    optimizerG.step()
    line = (
        "[%d/%d][%d/%d]\tLoss_D: %.4f\tLoss_G: %.4f\tD(x): %.4f\tD(G(z)): %.4f / %.4f"  # noqa: UP031, E501 - as written
        % (0, 1, 0, 1, errD.item(), errG.item(), D_x, D_G_z1, D_G_z2)
    )
    return line, fake.shape, [p.grad for p in netG.parameters()]


def dcgan_float_labels(torch):
    """dcgan's label = torch.full((b_size,), real_label, dtype=torch.float) against a
    float64 discriminator: BCELoss refuses the float32 target in both."""
    output = torch.sigmoid(torch.tensor(draws(4)))
    label = torch.full((4,), 1.0, dtype=torch.float)
    return torch.nn.BCELoss()(output, label)


def fast_neural_style(torch):
    """fast_neural_style's gram_matrix, normalize_batch (new_tensor, div_) and a
    ConvLayer (ReflectionPad2d + Conv2d) with InstanceNorm2d(affine=True)."""
    nn = torch.nn

    def gram_matrix(y):
        b, ch, h, w = y.size()
        features = y.view(b, ch, w * h)
        features_t = features.transpose(1, 2)
        gram = features.bmm(features_t) / (ch * h * w)
        return gram

    def normalize_batch(batch):
        mean = batch.new_tensor([0.485, 0.456, 0.406]).view(-1, 1, 1)
        std = batch.new_tensor([0.229, 0.224, 0.225]).view(-1, 1, 1)
        batch = batch.div_(255.0)
        return (batch - mean) / std

    class ConvLayer(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride):
            super().__init__()
            reflection_padding = kernel_size // 2
            self.reflection_pad = nn.ReflectionPad2d(reflection_padding)
            self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

        def forward(self, x):
            out = self.reflection_pad(x)
            out = self.conv2d(out)
            return out

    layer = nn.Sequential(ConvLayer(3, 4, 3, 1), nn.InstanceNorm2d(4, affine=True))
    init_from(layer, torch)
    x = normalize_batch(
        torch.tensor(255 * np.random.default_rng(5).random((2, 3, 5, 5)))
    )
    y = layer(x)
    gram = gram_matrix(y)
    style = gram_matrix(torch.tensor(draws(1, 4, 5, 5))).expand(2, -1, -1)
    loss = torch.nn.functional.mse_loss(gram, style)
    loss.backward()
    return x, y, gram, loss, [p.grad for p in layer.parameters()]


MISC = {
    "DCGAN: ConvTranspose2d generator, BCELoss": dcgan,
    "DCGAN's float32 labels into BCELoss": dcgan_float_labels,
    "fast_neural_style: gram_matrix, ConvLayer": fast_neural_style,
    "siamese: contrastive loss, pairwise_distance": siamese_contrastive,
    "siamese: triplet_margin_loss": siamese_triplet,
    "siamese: cosine_embedding_loss, margin_ranking_loss": (siamese_cosine_and_ranking),
    "WGAN-GP critic and generator steps": wgan_gp,
    "custom Dataset of dicts, DataLoader(shuffle=False)": custom_dataset,
}


@pytest.mark.parametrize("script", cases(MISC))
def test_misc_examples(script):
    check(script)
