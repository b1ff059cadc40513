"""Round 11: whole PyTorch tutorial-style scripts run on symgrad.tape, with torch as the
judge.

Each script is a function `script(torch)` written only with `torch.` names (nn, optim,
nn.functional and nn.init reached through the module), as the PyTorch tutorials write
them: the autograd and tensors tutorials, "Learning PyTorch with Examples" (tensors,
autograd, a custom autograd.Function, nn, optim, a custom Module, a dynamic net), the
quickstart classifier, an n-gram language model, a character RNN, an LSTM tagger written
from scratch, the EmbeddingBag text classifier, transfer learning with frozen layers,
weight tying, checkpoints through io.BytesIO, BatchNorm/Dropout in train and eval mode,
gradient clipping, accumulation, schedulers and early stopping. The script runs twice,
once on torch (at float64, the tape's default) and once on the tape, and everything it
returns (what the tutorial prints: losses per step, final parameters, gradients, reprs,
dtypes, shapes, exception types and messages) is compared.

The tape's RNG is NumPy's PCG64, not torch's generator (symgrad/tape/creation.py), so
weights are set from NumPy draws in both runs (`init_from`) and manual_seed is only
checked for what it means (same seed, same draws).

Strict xfails document each difference found: "missing: <name>" where the tape lacks
something so basic a tutorial script uses it, otherwise the cause, with the place in
symgrad/tape/ where the fix belongs and `raises=` pinning how the tape fails.
"""

import copy
import io
import math
import random
from collections import OrderedDict

import numpy as np
import pytest
from tape_scripts import cases, check, draws, init_from, no_address

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


# ==== (1) the autograd and tensors tutorials ===========================================


def autograd_tutorial(torch):
    out = []
    x = torch.ones(2, 2, requires_grad=True)
    out.append(repr(x))
    y = x + 2
    out += [repr(y), no_address(repr(y.grad_fn))]
    z = y * y * 3
    result = z.mean()
    out += [repr(z), repr(result)]
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    a = (a * 3) / (a - 1)
    out.append(a.requires_grad)
    a.requires_grad_(True)
    out.append(a.requires_grad)
    b = (a * a).sum()
    out.append(no_address(str(b.grad_fn)))
    result.backward()
    out.append(repr(x.grad))

    x = torch.tensor([0.3, -1.2, 0.5], requires_grad=True)
    y = x * 2
    steps = 0
    while y.data.norm() < 1000:
        y = y * 2
        steps += 1
    out += [repr(y), steps]
    v = torch.tensor([0.1, 1.0, 0.0001], dtype=torch.float64)
    y.backward(v)
    out += [repr(x.grad), x.requires_grad, (x**2).requires_grad]
    with torch.no_grad():
        out.append((x**2).requires_grad)
    y = x.detach()
    out += [y.requires_grad, repr(x.eq(y).all())]
    try:
        x.sum().backward()
        (x * 2).backward()
    except RuntimeError as exc:
        out.append(str(exc))
    out.append(x.grad)
    y[0] = 9.0  # detach() shares storage
    out.append(x)
    return out


def autograd_mechanics_tutorial(torch):
    """The 'Automatic differentiation with torch.autograd' tutorial."""
    out = []
    x = torch.ones(5)
    y = torch.zeros(3)
    w = torch.tensor(np.arange(15.0).reshape(5, 3) / 10, requires_grad=True)
    b = torch.tensor([0.1, -0.2, 0.3], requires_grad=True)
    z = torch.matmul(x, w) + b
    loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    out.append(no_address(f"Gradient function for z = {z.grad_fn}"))
    out.append(no_address(f"Gradient function for loss = {loss.grad_fn}"))
    loss.backward()
    out += [w.grad, b.grad, repr(b.grad)]
    try:
        loss.backward()
    except RuntimeError as exc:
        out.append(str(exc).split(".")[0])
    out.append((torch.matmul(x, w) + b).requires_grad)
    with torch.no_grad():
        out.append((torch.matmul(x, w) + b).requires_grad)
    out.append((torch.matmul(x, w) + b).detach().requires_grad)

    inp = torch.eye(4, 5, requires_grad=True)
    res = (inp + 1).pow(2).t()
    res.backward(torch.ones_like(res), retain_graph=True)
    out.append(f"First call\n{inp.grad}")
    res.backward(torch.ones_like(res), retain_graph=True)
    out.append(f"\nSecond call\n{inp.grad}")
    inp.grad.zero_()
    res.backward(torch.ones_like(res), retain_graph=True)
    out.append(f"\nCall after zeroing gradients\n{inp.grad}")
    try:
        torch.ones(3, requires_grad=True).pow(2).backward()
    except RuntimeError as exc:
        out.append(str(exc))
    return out


def tensors_tutorial(torch):
    """The 'Tensors' tutorial, minus its out= calls (see the xfail below)."""
    out = []
    data = [[1, 2], [3, 4]]
    x_data = torch.tensor(data)
    x_np = torch.from_numpy(np.array(data))
    out += [repr(x_data), repr(x_np)]
    x_ones = torch.ones_like(x_data)
    out.append(f"Ones Tensor: \n {x_ones} \n")
    x_rand = torch.rand_like(x_data, dtype=torch.float)
    out += [x_rand.dtype, x_rand.shape, bool(((x_rand >= 0) & (x_rand < 1)).all())]
    shape = (2, 3)
    out += [f"Ones Tensor: \n {torch.ones(shape)} \n", repr(torch.zeros(shape))]
    t = torch.rand(3, 4)
    out.append(f"Shape of tensor: {t.shape}")
    out.append(f"Datatype of tensor: {t.dtype}")
    out.append(f"Device tensor is stored on: {t.device}")
    tensor = torch.ones(4, 4)
    out.append(f"First row: {tensor[0]}")
    out.append(f"First column: {tensor[:, 0]}")
    out.append(f"Last column: {tensor[..., -1]}")
    tensor[:, 1] = 0
    out.append(str(tensor))
    out.append(str(torch.cat([tensor, tensor, tensor], dim=1)))
    y1 = tensor @ tensor.T
    y2 = tensor.matmul(tensor.T)
    z1 = tensor * tensor
    z2 = tensor.mul(tensor)
    out += [y1, y2, z1, z2]
    agg = tensor.sum()
    agg_item = agg.item()
    out += [agg_item, type(agg_item).__name__]
    out.append(f"{tensor} \n")
    tensor.add_(5)
    out.append(str(tensor))
    t = torch.ones(5)
    n = t.numpy()
    t.add_(1)
    out += [f"t: {t}", f"n: {n}"]
    n = np.ones(5)
    t = torch.from_numpy(n)
    np.add(n, 1, out=n)
    out += [f"t: {t}", f"n: {n}"]
    out += [f"{torch.tensor(1.23456):.3f}", format(torch.tensor(2.5), ">8.2f")]
    return out


def tensors_tutorial_out(torch):
    """The same tutorial's `out=` calls: torch.matmul(a, b, out=y3), torch.mul(out=)."""
    tensor = torch.ones(4, 4)
    tensor[:, 1] = 0
    y3 = torch.rand_like(tensor)
    torch.matmul(tensor, tensor.T, out=y3)
    z3 = torch.rand_like(tensor)
    torch.mul(tensor, tensor, out=z3)
    return [str(y3), str(z3)]


TUTORIALS = {
    "autograd tutorial": autograd_tutorial,
    "autograd mechanics tutorial": autograd_mechanics_tutorial,
    "tensors tutorial": tensors_tutorial,
    "tensors tutorial, out=": tensors_tutorial_out,
}


@pytest.mark.parametrize("script", cases(TUTORIALS))
def test_tutorials(script):
    check(script)


# ==== (2) "Learning PyTorch with Examples": fitting sin(x) with a cubic ================


def sine_data(torch, n=2000):
    x = torch.linspace(-math.pi, math.pi, n)
    return x, torch.sin(x)


def poly_tensors(torch):
    """Forward and backward by hand, on tensors."""
    x, y = sine_data(torch)
    a, b, c, d = (torch.tensor(v) for v in draws(4, seed=1))
    learning_rate = 1e-6
    out = []
    for t in range(500):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = (y_pred - y).pow(2).sum().item()
        if t % 100 == 99:
            out.append((t, loss))
        grad_y_pred = 2.0 * (y_pred - y)
        grad_a = grad_y_pred.sum()
        grad_b = (grad_y_pred * x).sum()
        grad_c = (grad_y_pred * x**2).sum()
        grad_d = (grad_y_pred * x**3).sum()
        a -= learning_rate * grad_a
        b -= learning_rate * grad_b
        c -= learning_rate * grad_c
        d -= learning_rate * grad_d
    out.append(
        f"Result: y = {a.item()} + {b.item()} x + {c.item()} x^2 + {d.item()} x^3"
    )
    return out, [a, b, c, d]


def poly_autograd(torch):
    x, y = sine_data(torch)
    a, b, c, d = (torch.tensor(v, requires_grad=True) for v in draws(4, seed=1))
    learning_rate = 1e-6
    out = []
    for t in range(500):
        y_pred = a + b * x + c * x**2 + d * x**3
        loss = (y_pred - y).pow(2).sum()
        if t % 100 == 99:
            out.append((t, loss.item(), repr(loss)))
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    return out, [a, b, c, d], [a.is_leaf, a.grad]


def poly_legendre_function(torch):
    """A custom autograd.Function with ctx.save_for_backward."""

    class LegendrePolynomial3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input**3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input**2 - 1)

    x, y = sine_data(torch)
    a = torch.full((), 0.0, requires_grad=True)
    b = torch.full((), -1.0, requires_grad=True)
    c = torch.full((), 0.0, requires_grad=True)
    d = torch.full((), 0.3, requires_grad=True)
    learning_rate = 5e-6
    out = []
    for t in range(500):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        if t % 100 == 99:
            out.append((t, loss.item()))
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    return out, [a, b, c, d], type(y_pred.grad_fn).__name__


def poly_nn(torch):
    x, y = sine_data(torch)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
    init_from(model, torch, seed=2, scale=0.1)
    loss_fn = torch.nn.MSELoss(reduction="sum")
    learning_rate = 1e-6
    out = [xx.dtype, xx.shape, str(model)]
    for t in range(500):
        y_pred = model(xx)
        loss = loss_fn(y_pred, y)
        if t % 100 == 99:
            out.append((t, loss.item()))
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= learning_rate * param.grad
    linear_layer = model[0]
    out.append(
        f"Result: y = {linear_layer.bias.item()} + {linear_layer.weight[:, 0].item()} x"
        f" + {linear_layer.weight[:, 1].item()} x^2 + {linear_layer.weight[:, 2].item()}"
        " x^3"
    )
    return out, list(model.parameters())


def poly_optim(torch):
    x, y = sine_data(torch)
    xx = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))
    model = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0, 1))
    init_from(model, torch, seed=2, scale=0.1)
    loss_fn = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-3)
    out = []
    for t in range(500):
        loss = loss_fn(model(xx), y)
        if t % 100 == 99:
            out.append((t, loss.item()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = optimizer.state_dict()["state"]
    return out, list(model.parameters()), sorted(state), state[0]["square_avg"]


def poly_custom_module(torch):
    class Polynomial3(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(0.1))
            self.b = torch.nn.Parameter(torch.tensor(0.2))
            self.c = torch.nn.Parameter(torch.tensor(-0.1))
            self.d = torch.nn.Parameter(torch.tensor(0.05))

        def forward(self, x):
            return self.a + self.b * x + self.c * x**2 + self.d * x**3

        def string(self):
            return (
                f"y = {self.a.item()} + {self.b.item()} x + {self.c.item()} x^2"
                f" + {self.d.item()} x^3"
            )

    x, y = sine_data(torch)
    model = Polynomial3()
    criterion = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6)
    out = [str(model), repr(model.a), [n for n, _ in model.named_parameters()]]
    for t in range(500):
        loss = criterion(model(x), y)
        if t % 100 == 99:
            out.append((t, loss.item()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out.append(f"Result: {model.string()}")
    return out


def poly_dynamic_net(torch):
    """Control flow in forward: a random number of x^4, x^5 terms sharing e."""
    random.seed(0)

    class DynamicNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, v in zip("abcde", [0.1, 0.2, -0.1, 0.05, 0.01], strict=True):
                setattr(self, name, torch.nn.Parameter(torch.tensor(v)))

        def forward(self, x):
            y = self.a + self.b * x + self.c * x**2 + self.d * x**3
            for exp in range(4, random.randint(4, 6)):
                y = y + self.e * x**exp
            return y

    x, y = sine_data(torch)
    model = DynamicNet()
    criterion = torch.nn.MSELoss(reduction="sum")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-8, momentum=0.9)
    out = [str(model), [n for n, _ in model.named_parameters()]]
    for t in range(500):
        loss = criterion(model(x), y)
        if t % 100 == 99:
            out.append((t, loss.item()))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return out, list(model.parameters())


def two_layer_net_by_hand_then_my_relu(torch):
    """The original two-layer net: backprop by hand with mm/clamp/t, then MyReLU."""
    rng = np.random.default_rng(0)
    N, D_in, H, D_out = 16, 10, 8, 3
    x, y = torch.tensor(rng.standard_normal((N, D_in))), torch.tensor(
        rng.standard_normal((N, D_out))
    )
    w1 = torch.tensor(rng.standard_normal((D_in, H)))
    w2 = torch.tensor(rng.standard_normal((H, D_out)))
    learning_rate = 1e-4
    out = []
    for t in range(100):
        h = x.mm(w1)
        h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum().item()
        if t % 20 == 19:
            out.append((t, loss))
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h = grad_y_pred.mm(w2.t()).clone()
        grad_h[h < 0] = 0
        grad_w1 = x.t().mm(grad_h)
        w1 -= learning_rate * grad_w1
        w2 -= learning_rate * grad_w2
    out += [w1, w2]

    class MyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return input.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            grad_input = grad_output.clone()
            grad_input[input < 0] = 0
            return grad_input

    w1 = torch.tensor(rng.standard_normal((D_in, H)), requires_grad=True)
    w2 = torch.tensor(rng.standard_normal((H, D_out)), requires_grad=True)
    for t in range(100):
        y_pred = MyReLU.apply(x.mm(w1)).mm(w2)
        loss = (y_pred - y).pow(2).sum()
        if t % 20 == 19:
            out.append((t, loss.item()))
        loss.backward()
        with torch.no_grad():
            w1 -= learning_rate * w1.grad
            w2 -= learning_rate * w2.grad
            w1.grad.zero_()
            w2.grad.zero_()
    inner = y_pred.grad_fn.next_functions[0][0]
    nexts = [type(n).__name__ for n, _ in inner.next_functions]
    out += [w1, w2, nexts, w1.is_leaf, y_pred.is_leaf]
    return out


def custom_function_grad_fn_printed(torch):
    """print(y.grad_fn) for a custom autograd.Function's output."""

    class MyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return input.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            return grad_output * (input > 0)

    y = MyReLU.apply(torch.tensor([1.0, -1.0], requires_grad=True))
    node = y.grad_fn
    return type(node).__name__, no_address(repr(node)), no_address(str(node))


EXAMPLES = {
    "tensors, gradients by hand": poly_tensors,
    "autograd, manual updates": poly_autograd,
    "custom autograd.Function (Legendre P3)": poly_legendre_function,
    "nn.Sequential, MSELoss(sum), manual updates": poly_nn,
    "optim.RMSprop": poly_optim,
    "custom nn.Module Polynomial3": poly_custom_module,
    "dynamic net, SGD momentum": poly_dynamic_net,
    "two-layer net by hand, then MyReLU": two_layer_net_by_hand_then_my_relu,
    "custom Function's grad_fn printed": custom_function_grad_fn_printed,
}


@pytest.mark.parametrize("script", cases(EXAMPLES))
def test_learning_pytorch_with_examples(script):
    check(script)


# ==== (3) classifiers, language models and sequence models =============================


def quickstart_classifier(torch):
    """The quickstart: Flatten + Linear/ReLU stack, CrossEntropyLoss, Adam, 50 steps,
    train/test loops with accuracy."""
    nn = torch.nn

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(3 * 2, 6),
                nn.ReLU(),
                nn.Linear(6, 6),
                nn.ReLU(),
                nn.Linear(6, 3),
            )

        def forward(self, x):
            return self.linear_relu_stack(self.flatten(x))

    model = init_from(NeuralNetwork(), torch)
    out = [f"Model structure: {model}\n\n"]
    for name, param in model.named_parameters():
        out += [f"Layer: {name} | Size: {param.size()}", param[:2]]  # print: (6)
    out.append(sum(p.numel() for p in model.parameters()))
    rng = np.random.default_rng(1)
    X = torch.tensor(rng.standard_normal((30, 3, 2)))
    y = torch.tensor(rng.integers(0, 3, 30))
    logits = model(X[:1])
    pred_probab = nn.Softmax(dim=1)(logits)
    out.append(f"Predicted class: {pred_probab.argmax(1)}")
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    size = len(X)
    for step in range(50):
        model.train()
        batch = step % 3
        Xb, yb = X[batch * 10 : (batch + 1) * 10], y[batch * 10 : (batch + 1) * 10]
        loss = loss_fn(model(Xb), yb)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        out.append(loss.item())
        if step % 10 == 0:
            loss, current = loss.item(), (batch + 1) * len(Xb)
            out.append(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")
    model.eval()
    test_loss, correct = 0, 0
    with torch.no_grad():
        pred = model(X)
        test_loss += loss_fn(pred, y).item()
        correct += (pred.argmax(1) == y).type(torch.float).sum().item()
    correct /= size
    out.append(f"Accuracy: {(100 * correct):>0.1f}%, Avg loss: {test_loss:>8f} \n")
    state = optimizer.state_dict()
    out += [[p.grad for p in model.parameters()], list(model.parameters())]
    out += [state["state"][0]["step"], state["state"][5]["exp_avg_sq"]]
    out.append({k: state["param_groups"][0][k] for k in ("lr", "betas", "eps")})
    return out


def ngram_language_model(torch):
    """The word-embeddings tutorial's N-gram model: Embedding, view, log_softmax, NLLLoss."""
    nn, F = torch.nn, torch.nn.functional
    CONTEXT_SIZE, EMBEDDING_DIM = 2, 5
    test_sentence = """When forty winters shall besiege thy brow,
    And dig deep trenches in thy beauty's field,
    Thy youth's proud livery so gazed on now,
    Will be a totter'd weed of small worth held""".split()
    ngrams = [
        ([test_sentence[i - j - 1] for j in range(CONTEXT_SIZE)], test_sentence[i])
        for i in range(CONTEXT_SIZE, len(test_sentence))
    ]
    vocab = sorted(set(test_sentence))
    word_to_ix = {word: i for i, word in enumerate(vocab)}

    class NGramLanguageModeler(nn.Module):
        def __init__(self, vocab_size, embedding_dim, context_size):
            super().__init__()
            self.embeddings = nn.Embedding(vocab_size, embedding_dim)
            self.linear1 = nn.Linear(context_size * embedding_dim, 16)
            self.linear2 = nn.Linear(16, vocab_size)

        def forward(self, inputs):
            embeds = self.embeddings(inputs).view((1, -1))
            out = F.relu(self.linear1(embeds))
            return F.log_softmax(self.linear2(out), dim=1)

    losses = []
    loss_function = nn.NLLLoss()
    model = NGramLanguageModeler(len(vocab), EMBEDDING_DIM, CONTEXT_SIZE)
    init_from(model, torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(3):
        total_loss = 0
        for context, target in ngrams:
            context_idxs = torch.tensor(
                [word_to_ix[w] for w in context], dtype=torch.long
            )
            model.zero_grad()
            log_probs = model(context_idxs)
            loss = loss_function(
                log_probs, torch.tensor([word_to_ix[target]], dtype=torch.long)
            )
            loss.backward()
            optimizer.step()
            total_loss += loss.item()
        losses.append(total_loss)
    return (
        losses,
        model.embeddings.weight[word_to_ix["beauty's"]],
        str(model),
        repr(model.embeddings.weight.grad[:2]),
    )


def char_rnn_classifier(torch):
    """'Classifying names with a character-level RNN': i2h on cat((input, hidden)),
    LogSoftmax, NLLLoss, the update p.data.add_(p.grad.data, alpha=-lr), topk."""
    nn = torch.nn

    class RNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super().__init__()
            self.hidden_size = hidden_size
            self.i2h = nn.Linear(input_size + hidden_size, hidden_size)
            self.h2o = nn.Linear(hidden_size, output_size)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, input, hidden):
            hidden = torch.tanh(self.i2h(torch.cat((input, hidden), 1)))
            return self.softmax(self.h2o(hidden)), hidden

        def initHidden(self):
            return torch.zeros(1, self.hidden_size)

    letters = "abcdefgh"

    def lineToTensor(line):
        tensor = torch.zeros(len(line), 1, len(letters))
        for li, letter in enumerate(line):
            tensor[li][0][letters.find(letter)] = 1
        return tensor

    rnn = init_from(RNN(len(letters), 6, 3), torch)
    criterion = nn.NLLLoss()
    data = [("abc", 0), ("hgf", 1), ("ddee", 2), ("bad", 0), ("fed", 1)]
    out = [str(rnn), repr(lineToTensor("ab"))]
    for _ in range(4):
        for line, cat in data:
            category_tensor = torch.tensor([cat], dtype=torch.long)
            line_tensor = lineToTensor(line)
            hidden = rnn.initHidden()
            rnn.zero_grad()
            for i in range(line_tensor.size()[0]):
                output, hidden = rnn(line_tensor[i], hidden)
            loss = criterion(output, category_tensor)
            loss.backward()
            for p in rnn.parameters():
                p.data.add_(p.grad.data, alpha=-0.05)
            out.append(loss.item())
    top_n, top_i = output.topk(1)
    out += [top_n, top_i, top_i[0].item(), list(rnn.parameters())]
    return out


def lstm_tagger_from_scratch(torch):
    """An LSTM cell written with chunk/sigmoid/tanh over Embedding(padding_idx=0),
    masked mean pooling over time, RMSprop."""
    nn = torch.nn

    class LSTMCellScratch(nn.Module):
        def __init__(self, n_in, n_h):
            super().__init__()
            self.x2g = nn.Linear(n_in, 4 * n_h)
            self.h2g = nn.Linear(n_h, 4 * n_h, bias=False)

        def forward(self, x, state):
            h, c = state
            i, f, g, o = (self.x2g(x) + self.h2g(h)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c

    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4, padding_idx=0)
            self.cell = LSTMCellScratch(4, 5)
            self.out = nn.Linear(5, 3)

        def forward(self, seq):
            B, T = seq.shape
            h, c = torch.zeros(B, 5), torch.zeros(B, 5)
            e = self.emb(seq)
            hs = []
            for t in range(T):
                h, c = self.cell(e[:, t], (h, c))
                hs.append(h)
            hs = torch.stack(hs, dim=1)
            mask = (seq != 0).unsqueeze(-1).float()
            return self.out((hs * mask).sum(1) / mask.sum(1)), hs

    m = init_from(Tagger(), torch)
    with torch.no_grad():
        m.emb.weight[0].zero_()
    seq = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])
    y = torch.tensor([0, 2, 1])
    opt = torch.optim.RMSprop(m.parameters(), lr=0.01)
    out = [str(m)]
    for _ in range(10):
        opt.zero_grad()
        logits, hs = m(seq)
        loss = nn.functional.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        out.append(loss.item())
    out += [m.emb.weight.grad, hs.shape, list(m.parameters())]
    return out


def embedding_bag_text_classifier(torch, sparse=None):
    """The text classification tutorial's model (EmbeddingBag + offsets), SGD lr=5,
    clip_grad_norm_, StepLR; then mean pooling through nn.Embedding."""
    nn = torch.nn
    bag_kw = {} if sparse is None else {"sparse": sparse}

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super().__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, **bag_kw)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            r = 0.5
            w = torch.linspace(-r, r, 20 * 6).reshape(20, 6)
            self.embedding.weight.data.copy_(w)
            self.fc.weight.data.copy_(torch.linspace(-r, r, 6 * 4).reshape(4, 6))
            self.fc.bias.data.zero_()

        def forward(self, text, offsets):
            return self.fc(self.embedding(text, offsets))

    model = TextClassificationModel(20, 6, 4)
    text = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    offsets = torch.tensor([0, 3, 5, 9])
    label = torch.tensor([0, 1, 2, 3])
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=5)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.1)
    out = [str(model)]
    for _ in range(3):
        optimizer.zero_grad()
        predicted_label = model(text, offsets)
        loss = criterion(predicted_label, label)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        acc = (predicted_label.argmax(1) == label).sum().item()
        out.append((loss.item(), acc, scheduler.get_last_lr()))
        scheduler.step()
    out.append(model.embedding.weight)
    emb = nn.Embedding(20, 6)
    emb.weight.data.copy_(model.embedding.weight.data)
    pooled = emb(torch.tensor([[1, 2, 3], [4, 5, 6]])).mean(dim=1)
    pooled.sum().backward()
    out += [pooled, emb.weight.grad]
    return out


def embedding_bag_sparse_keyword(torch):
    """The tutorial's exact line: nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)."""
    return embedding_bag_text_classifier(torch, sparse=False)


def rnn_module_script(kind):
    """A sequence classifier on torch's own recurrent layers."""

    def script(torch):
        nn = torch.nn

        class SeqClassifier(nn.Module):
            def __init__(self):
                super().__init__()
                self.rnn = getattr(nn, kind)(3, 4, batch_first=True)
                self.fc = nn.Linear(4, 2)

            def forward(self, x):
                output, _ = self.rnn(x)
                return self.fc(output[:, -1])

        model = init_from(SeqClassifier(), torch)
        x, y = torch.tensor(draws(5, 6, 3)), torch.tensor([0, 1, 1, 0, 1])
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        losses = []
        for _ in range(5):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return str(model), [n for n, _ in model.named_parameters()], losses

    script.__name__ = f"{kind.lower()}_classifier"
    return script


def rnn_cell_loop(torch):
    """The cell loop: nn.RNNCell/GRUCell/LSTMCell stepped over time by hand."""
    nn = torch.nn
    cells = [nn.RNNCell(3, 4), nn.GRUCell(3, 4), nn.LSTMCell(3, 4)]
    for cell in cells:
        init_from(cell, torch)
    x = torch.tensor(draws(6, 2, 3))
    h = torch.zeros(2, 4)
    g = torch.zeros(2, 4)
    hc = (torch.zeros(2, 4), torch.zeros(2, 4))
    for t in range(6):
        h = cells[0](x[t], h)
        g = cells[1](x[t], g)
        hc = cells[2](x[t], hc)
    (h.sum() + g.sum() + hc[0].sum()).backward()
    return (
        [str(c) for c in cells],
        h,
        g,
        hc,
        [p.grad for c in cells for p in c.parameters()],
    )


MODELS = {
    "quickstart classifier, CrossEntropyLoss + Adam, 50 steps": quickstart_classifier,
    "n-gram language model": ngram_language_model,
    "character RNN classifier": char_rnn_classifier,
    "LSTM tagger from scratch": lstm_tagger_from_scratch,
    "EmbeddingBag text classifier": embedding_bag_text_classifier,
    "EmbeddingBag(sparse=False)": embedding_bag_sparse_keyword,
    "nn.RNN classifier": rnn_module_script("RNN"),
    "nn.GRU classifier": rnn_module_script("GRU"),
    "nn.LSTM classifier": rnn_module_script("LSTM"),
    "RNNCell/GRUCell/LSTMCell loop": rnn_cell_loop,
}


@pytest.mark.parametrize("script", cases(MODELS))
def test_models(script):
    check(script)


# ==== (4) training mechanics ===========================================================


def batchnorm_dropout_train_eval(torch):
    """train()/eval() flags; Dropout compared by what it does (zero or x / (1 - p)),
    not by its draws; BatchNorm's running statistics; eval outputs."""
    nn = torch.nn
    model = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2)
    )
    init_from(model, torch)
    out = [str(model), model.training, [m.training for m in model]]
    x = torch.tensor(draws(16, 4, seed=5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        h = model[2](model[1](model[0](x)))
        d = model[3](h)
        out.append(bool(((d == 0) | ((d - 2 * h).abs() < 1e-12)).all()))
        opt.zero_grad()
        model[4](h).pow(2).mean().backward()  # dropout's draws left out of the loss
        opt.step()
    bn = model[1]
    out += [repr(bn.running_mean), bn.running_var, bn.num_batches_tracked]
    model.eval()
    out.append([m.training for m in model])
    with torch.no_grad():
        out.append(model(x))
    out.append(torch.equal(model[3](h), h))
    out.append(list(bn.state_dict().keys()))
    plain = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    out += [str(plain), plain(x[:, :3]), list(plain.state_dict())]
    plain.eval()
    out.append(plain(x[:, :3]))
    model.train()
    try:
        model(x[:1])
    except ValueError as exc:
        out.append(str(exc))
    return out


def clipping_and_step_lr(torch):
    nn = torch.nn
    model = init_from(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)), torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    x = torch.tensor(draws(16, 3, seed=5)) * 10
    y = x.sum(1, keepdim=True)
    out = [sched.get_last_lr()]
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        total = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        after = torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))
        out += [total, repr(total), after]
        nn.utils.clip_grad_value_(model.parameters(), 0.05)
        out.append(max(p.grad.abs().max().item() for p in model.parameters()))
        opt.step()
        sched.step()
        out.append((loss.item(), sched.get_last_lr(), opt.param_groups[0]["lr"]))
    out += [sched.last_epoch, list(model.parameters())]
    return out


def gradient_accumulation(torch):
    """Micro-batches of one, loss / accum, AdamW, label smoothing."""
    nn = torch.nn
    model = init_from(nn.Sequential(nn.Linear(3, 4), nn.SiLU(), nn.Linear(4, 2)), torch)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
    rng = np.random.default_rng(3)
    X, Y = torch.tensor(rng.standard_normal((12, 3))), torch.tensor(
        rng.integers(0, 2, 12)
    )
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    accum, out = 3, []
    opt.zero_grad()
    for i in range(12):
        loss = crit(model(X[i : i + 1]), Y[i : i + 1]) / accum
        loss.backward()
        if (i + 1) % accum == 0:
            out.append([p.grad.clone() for p in model.parameters()])
            opt.step()
            opt.zero_grad()
            out.append([p.grad for p in model.parameters()])  # None: set_to_none
        out.append(loss.item())
    out.append(list(model.parameters()))
    return out


def plateau_and_early_stopping(torch):
    nn = torch.nn
    model = init_from(nn.Linear(3, 1), torch)
    opt = torch.optim.Adam(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, "min", factor=0.5, patience=2
    )
    rng = np.random.default_rng(2)
    x, y = torch.tensor(rng.standard_normal((20, 3))), torch.tensor(
        rng.standard_normal((20, 1))
    )
    out, best, bad, best_state = [], float("inf"), 0, None
    for epoch in range(40):
        model.train()
        opt.zero_grad()
        loss = nn.MSELoss()(model(x[:15]), y[:15])
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val = nn.MSELoss()(model(x[15:]), y[15:]).item()
        sched.step(val)
        out.append((loss.item(), val, opt.param_groups[0]["lr"], sched.get_last_lr()))
        if val < best - 1e-4:
            best, bad = val, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= 5:
                out.append(("early stop", epoch))
                break
    model.load_state_dict(best_state)
    out += [model.weight, model.bias, best]
    return out


def transfer_learning_freeze(torch):
    """Freeze a backbone with requires_grad = False, replace the head, count trainable
    parameters, train only the head; then unfreeze with requires_grad_(True)."""
    nn = torch.nn

    class Backbone(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU()
            )
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            return self.fc(self.features(x))

    model = init_from(Backbone(), torch)
    for param in model.parameters():
        param.requires_grad = False
    model.fc = init_from(nn.Linear(model.fc.in_features, 2), torch, seed=7)
    out = [
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
        [(n, p.requires_grad) for n, p in model.named_parameters()],
        str(model),
    ]
    opt = torch.optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.tensor(draws(10, 6, seed=5)), torch.tensor([0, 1] * 5)
    criterion = nn.CrossEntropyLoss()
    for _ in range(5):
        opt.zero_grad()
        outputs = model(x)
        _, preds = torch.max(outputs, 1)
        loss = criterion(outputs, y)
        loss.backward()
        opt.step()
        corrects = torch.sum(preds == y)
        out.append((loss.item(), corrects.item(), (corrects.double() / 10).item()))
    out.append([p.grad for p in model.parameters()])
    model.features.requires_grad_(True)
    out.append([p.requires_grad for p in model.parameters()])
    return out


def weight_tying(torch):
    """decoder.weight = encoder.weight: one parameter listed once, in state_dict twice,
    gradients from both uses summed."""
    nn = torch.nn

    class TiedLM(nn.Module):
        def __init__(self, ntoken=7, d=4):
            super().__init__()
            self.encoder = nn.Embedding(ntoken, d)
            self.hidden = nn.Linear(d, d)
            self.decoder = nn.Linear(d, ntoken)
            self.decoder.weight = self.encoder.weight

        def forward(self, idx):
            return self.decoder(torch.tanh(self.hidden(self.encoder(idx))))

    m = init_from(TiedLM(), torch)
    out = [
        [n for n, _ in m.named_parameters()],
        list(m.state_dict().keys()),
        sum(p.numel() for p in m.parameters()),
        m.decoder.weight is m.encoder.weight,
        str(m),
        [n for n, _ in m.named_modules()],
        [n for n, _ in m.named_children()],
    ]
    idx = torch.tensor([[1, 2, 3], [4, 5, 6]])
    loss = nn.functional.cross_entropy(
        m(idx).reshape(-1, 7), torch.tensor([2, 3, 4, 5, 6, 0])
    )
    loss.backward()
    out += [loss, m.encoder.weight.grad, m.hidden.weight.grad]
    return out


def containers_training(torch):
    """ModuleList, ModuleDict (from a dict and from pairs), ParameterList in forward;
    Sequential from an OrderedDict; indexing, slicing, append/extend/add_module."""
    nn = torch.nn

    class MultiHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
            self.heads = nn.ModuleDict({"cls": nn.Linear(4, 3), "reg": nn.Linear(4, 1)})
            self.act = nn.ModuleDict(
                [["relu", nn.ReLU()], ["lrelu", nn.LeakyReLU(0.1)]]
            )
            self.scales = nn.ParameterList(
                [nn.Parameter(torch.ones(4) * (i + 1)) for i in range(2)]
            )

        def forward(self, x, act="relu"):
            for i, layer in enumerate(self.layers):
                x = self.act[act](layer(x) * self.scales[i % 2])
            return {k: h(x) for k, h in self.heads.items()}

    m = init_from(MultiHead(), torch)
    out = [
        [n for n, _ in m.named_parameters()],
        sum(p.numel() for p in m.parameters()),
        len(m.layers),
        list(m.heads.keys()),
        "cls" in m.heads,
    ]
    x = torch.tensor(draws(5, 4, seed=1))
    res = m(x, "lrelu")
    loss = nn.functional.cross_entropy(res["cls"], torch.tensor([0, 1, 2, 1, 0]))
    (loss + res["reg"].pow(2).mean()).backward()
    out += [res, [p.grad for p in m.parameters()]]
    m.layers.append(nn.Linear(4, 4))
    m.layers.extend([nn.Identity()])
    out += [len(list(m.modules())), type(m.layers[1:3]).__name__, str(m.layers[-1])]
    seq = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
    seq.add_module("out", nn.Linear(2, 1))
    out += [str(seq), str(seq[-1]), str(seq[:2]), len(seq)]
    seq2 = nn.Sequential(
        OrderedDict(
            [("fc1", nn.Linear(2, 3)), ("act", nn.Sigmoid()), ("fc2", nn.Linear(3, 1))]
        )
    )
    out += [str(seq2), str(seq2.fc1), list(seq2.state_dict().keys())]
    return out


def containers_printed(torch):
    """print(model) with repeated layers in a ModuleList and a ParameterList."""
    nn = torch.nn

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])
            self.layers.append(nn.ReLU())
            self.scales = nn.ParameterList(
                [nn.Parameter(torch.ones(4)) for _ in range(2)]
            )

    return str(Stack())


def containers_mutated(torch):
    """ModuleList.insert/pop/del/+ and Sequential.insert/pop/extend, as torch has."""
    nn = torch.nn
    ml = nn.ModuleList([nn.Linear(1, 1), nn.ReLU()])
    ml.insert(0, nn.Tanh())
    popped = ml.pop(1)
    del ml[0]
    ml += [nn.Sigmoid()]
    joined = ml + nn.ModuleList([nn.Tanh()])
    seq = nn.Sequential(nn.ReLU())
    seq.insert(0, nn.Tanh())
    seq.extend([nn.Sigmoid()])
    seq.pop(0)
    return str(popped), str(ml), str(joined), str(seq)


TRAINING = {
    "BatchNorm1d + Dropout, train and eval": batchnorm_dropout_train_eval,
    "gradient clipping + StepLR": clipping_and_step_lr,
    "gradient accumulation, AdamW, label smoothing": gradient_accumulation,
    "ReduceLROnPlateau + early stopping with deepcopy": plateau_and_early_stopping,
    "transfer learning: freeze backbone, new head": transfer_learning_freeze,
    "weight tying": weight_tying,
    "ModuleList/ModuleDict/ParameterList training": containers_training,
    "print(model) of ModuleList and ParameterList": containers_printed,
    "ModuleList/Sequential insert, pop, del, +": containers_mutated,
}


@pytest.mark.parametrize("script", cases(TRAINING))
def test_training(script):
    check(script)


# ==== (5) checkpoints, init, seeds, devices ============================================


class CheckpointNet:
    """A Net class per library: Linear, BatchNorm1d, buffers (one non-persistent)."""

    @staticmethod
    def make(torch):
        nn = torch.nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(3, 4)
                self.bn = nn.BatchNorm1d(4)
                self.fc2 = nn.Linear(4, 2)
                self.register_buffer("scale", torch.tensor([2.0, 3.0]))
                self.register_buffer("tmp", torch.zeros(1), persistent=False)

            def forward(self, x):
                return self.fc2(torch.relu(self.bn(self.fc1(x)))) * self.scale

        return Net


def checkpoint_round_trip(torch):
    """state_dict through torch.save/torch.load on io.BytesIO, deepcopy of a state_dict
    and of a model, load_state_dict(strict=False) and its errors, the whole model saved.
    """
    Net = CheckpointNet.make(torch)
    net = init_from(Net(), torch)
    out = [list(net.state_dict().keys())]
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.tensor(draws(6, 3, seed=3))
    for _ in range(3):
        opt.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        opt.step()
        out.append(loss.item())
    best = copy.deepcopy(net.state_dict())
    buf = io.BytesIO()
    torch.save({"model": net.state_dict(), "optim": opt.state_dict(), "epoch": 3}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    net2 = Net()
    res = net2.load_state_dict(ckpt["model"])
    out += [res.missing_keys, res.unexpected_keys, ckpt["epoch"]]
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.5)
    opt2.load_state_dict(ckpt["optim"])
    out += [opt2.param_groups[0]["lr"], opt2.param_groups[0]["momentum"]]
    net.eval()
    net2.eval()
    out += [net2(x), net(x), net2.bn.num_batches_tracked, net2.bn.running_var]
    with torch.no_grad():
        net.fc1.weight.add_(1.0)
    out.append(best["fc1.weight"])
    net.load_state_dict(best)
    out.append(net.fc1.weight)
    sd = dict(ckpt["model"])
    del sd["scale"]
    sd["extra"] = torch.ones(1)
    res = net2.load_state_dict(sd, strict=False)
    out += [res.missing_keys, res.unexpected_keys]
    try:
        net2.load_state_dict(sd)
    except RuntimeError as exc:
        out.append(str(exc))
    net3 = copy.deepcopy(net)
    out += [net3(x), net3.fc1.weight is net.fc1.weight, net3.training]
    buf = io.BytesIO()
    torch.save(net, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    out += [str(whole), whole(x), type(whole).__name__]
    return out


def load_state_dict_printed(torch):
    """The saving-and-loading tutorial prints what load_state_dict returns."""
    Net = CheckpointNet.make(torch)
    sd = Net().state_dict()
    matched = Net().load_state_dict(sd)
    del sd["scale"]
    partial = Net().load_state_dict(sd, strict=False)
    return [repr(matched), str(matched), repr(partial)]


def optimizer_printed(torch):
    """print(optimizer)."""
    w = torch.nn.Parameter(torch.ones(2))
    return [
        str(torch.optim.SGD([w], lr=0.1, momentum=0.9)),
        str(torch.optim.Adam([w], lr=1e-3)),
    ]


def init_script(torch):
    """net.apply(init_weights) with constants; xavier/kaiming checked by their bounds
    and scales (the draws are the tape's own); what the init functions return."""
    nn = torch.nn

    def init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.02)
            m.bias.data.fill_(0.01)

    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    out = [net.apply(init_weights) is net, list(net.parameters())]
    w = torch.empty(30, 50)
    out.append(nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("relu")) is w)
    out.append(bool(w.abs().max() <= math.sqrt(2.0) * math.sqrt(6.0 / 80)))
    out += [nn.init.calculate_gain("leaky_relu", 0.2), nn.init.calculate_gain("tanh")]
    w2 = torch.empty(200, 300)
    nn.init.kaiming_normal_(w2, mode="fan_out", nonlinearity="relu")
    out.append(abs(w2.std().item() / math.sqrt(2.0 / 200) - 1) < 0.05)
    w3 = torch.empty(100, 100)
    nn.init.kaiming_uniform_(w3, a=math.sqrt(5))
    out.append(bool(w3.abs().max() <= 1 / math.sqrt(100)))
    w4 = torch.empty(3, 3)
    nn.init.ones_(w4)
    p = nn.Parameter(torch.empty(2, 2))
    nn.init.zeros_(p)
    out += [w4, repr(p), p.requires_grad]
    out.append(nn.init.normal_(torch.empty(2, 2), mean=1.5, std=0.0))
    out.append(nn.init.uniform_(torch.empty(2), a=3.0, b=3.0))
    try:
        nn.init.xavier_uniform_(torch.empty(5))
    except ValueError as exc:
        out.append(str(exc))
    return out


def init_gains(torch):
    """calculate_gain for every nonlinearity torch names (its values and types)."""
    names = ["linear", "conv1d", "conv2d", "conv_transpose2d", "sigmoid", "tanh"]
    names += ["relu", "leaky_relu", "selu"]
    return [(n, torch.nn.init.calculate_gain(n)) for n in names]


def seed_semantics(torch):
    """manual_seed: the same seed gives the same draws (randn, rand, randint, randperm,
    nn.Linear's init, dropout), another seed others; dtypes and shapes of draws."""
    out = []
    torch.manual_seed(0)
    a, b = torch.randn(3, 4), torch.rand(2)
    torch.manual_seed(0)
    out.append(torch.equal(a, torch.randn(3, 4)) and torch.equal(b, torch.rand(2)))
    torch.manual_seed(1)
    out.append(torch.equal(a, torch.randn(3, 4)))
    torch.manual_seed(42)
    l1 = torch.nn.Linear(3, 2)
    torch.manual_seed(42)
    l2 = torch.nn.Linear(3, 2)
    out.append(torch.equal(l1.weight, l2.weight) and torch.equal(l1.bias, l2.bias))
    out.append(bool((l1.weight.abs() <= 1 / math.sqrt(3)).all()))
    torch.manual_seed(0)
    i = torch.randint(0, 10, (5,))
    out += [i.dtype, i.shape, bool(((i >= 0) & (i < 10)).all())]
    p = torch.randperm(6)
    out += [sorted(p.tolist()), p.dtype]
    torch.manual_seed(3)
    d1 = torch.nn.functional.dropout(torch.ones(20), 0.5)
    torch.manual_seed(3)
    out.append(torch.equal(d1, torch.nn.functional.dropout(torch.ones(20), 0.5)))
    out.append(bool(((d1 == 0) | (d1 == 2)).all()))
    out += [torch.randn(2, 3).dtype, torch.rand(2, dtype=torch.float32).dtype]
    out += [torch.randn(()).shape, torch.randn(2, 3).shape]
    return out


def no_grad_decorators(torch):
    model = init_from(torch.nn.Linear(2, 2), torch)

    @torch.no_grad()
    def evaluate(x):
        return model(x)

    @torch.inference_mode()
    def evaluate2(x):
        return model(x)

    x = torch.ones(3, 2)
    a, b = evaluate(x), evaluate2(x)
    out = [a.requires_grad, b.requires_grad, a, repr(a), torch.is_grad_enabled()]
    with torch.set_grad_enabled(False):
        out.append(model(x).requires_grad)
    out.append(model(x).requires_grad)
    model.double()
    model.to("cpu")
    out += [model.weight.dtype, str(model.weight.device), model(x)]
    return out


def device_object(torch):
    """device = torch.device("cpu"); model.to(device); x.to(device)."""
    device = torch.device("cpu")
    model = init_from(torch.nn.Linear(2, 2), torch).to(device)
    x = torch.ones(3, 2).to(device)
    return [str(device), repr(device), model(x), str(x.device)]


def device_selection_idiom(torch):
    """The tutorials' first line: pick CUDA if there is one."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = init_from(torch.nn.Linear(2, 1), torch).to(device)
    return f"Using {device} device", model(torch.ones(1, 2, device=device))


def dataloader_training(torch):
    """TensorDataset + DataLoader(batch_size, shuffle=False) in the training loop."""
    from_data = torch.utils.data
    X, y = torch.tensor(draws(10, 3)), torch.tensor([0, 1] * 5)
    loader = from_data.DataLoader(from_data.TensorDataset(X, y), batch_size=4)
    model = init_from(torch.nn.Linear(3, 2), torch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for xb, yb in loader:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append((loss.item(), xb.shape))
    return len(loader.dataset), len(loader), losses


def gradcheck_custom_function(torch):
    """The custom-Function tutorial checks its backward with autograd.gradcheck."""

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x**2 * g

    x = torch.tensor(draws(4), requires_grad=True)
    return torch.autograd.gradcheck(Cube.apply, (x,), eps=1e-6, atol=1e-4)


def detach_shares_storage_isclose(torch):
    """Checks written as torch users write them: data_ptr() to see shared storage,
    torch.isclose for dropout's 1 / (1 - p) scaling."""
    x = torch.tensor(draws(20), requires_grad=True)
    y = x.detach()
    d = torch.nn.functional.dropout(y, 0.5)
    scaled = (d == 0) | torch.isclose(d, 2 * y)
    return x.data_ptr() == y.data_ptr(), bool(scaled.all())


MISC = {
    "checkpoint round trip through BytesIO": checkpoint_round_trip,
    "print(model.load_state_dict(...))": load_state_dict_printed,
    "print(optimizer)": optimizer_printed,
    "nn.init and net.apply(init_weights)": init_script,
    "nn.init.calculate_gain for conv and selu": init_gains,
    "manual_seed semantics": seed_semantics,
    "no_grad/inference_mode decorators, .double(), .to('cpu')": no_grad_decorators,
    "model.to(torch.device('cpu'))": device_object,
    "device = 'cuda' if torch.cuda.is_available() else 'cpu'": device_selection_idiom,
    "TensorDataset + DataLoader": dataloader_training,
    "data_ptr() and torch.isclose": detach_shares_storage_isclose,
    "autograd.gradcheck on a custom Function": gradcheck_custom_function,
}


@pytest.mark.parametrize("script", cases(MISC))
def test_checkpoints_init_seeds_devices(script):
    check(script)


# ==== (6) how printed tensors wrap =====================================================


def wide_tensors_printed(torch):
    """The quickstart's print(f"... Values : {param[:2]}") of an nn.Linear(6, 6)
    weight, and wider rows: of more than 7 numbers."""
    linear = init_from(torch.nn.Linear(6, 6), torch)
    rows = torch.arange(16.0).reshape(2, 8) / 7
    x = (torch.arange(10.0) / 3).requires_grad_()
    return [
        f"Values : {linear.weight[:2]} \n",
        repr(torch.arange(20.0) / 3),
        repr(torch.arange(30)),
        repr(x),
        repr(x * 2),
        repr(torch.nn.Parameter(rows)),
    ]


def test_wide_tensors_print_as_torch_wraps_them():
    check(wide_tensors_printed)
