"""nn.RNN, nn.GRU and nn.LSTM on symgrad.tape against torch: the same weights (torch's
state_dict loaded into the tape's module, or the other way), the same inputs, then
outputs, final states and every gradient compared, over a grid of the layers'
options; also parameter names and order, reprs, training curves, dropout between
layers, and the errors torch raises for bad shapes and options."""

import copy
import io
import itertools

import numpy as np
import pytest
from tape_compare import data, raised, to_np

from symgrad import tape

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")

RTOL, ATOL = 1e-12, 1e-13
SEQ, BATCH, INPUT, HIDDEN = 4, 3, 2, 5

KINDS = {
    "RNN-tanh": ("RNN", {}),
    "RNN-relu": ("RNN", {"nonlinearity": "relu"}),
    "GRU": ("GRU", {}),
    "LSTM": ("LSTM", {}),
    "LSTM-proj": ("LSTM", {"proj_size": 3}),
}


def close(ours, theirs, what):
    np.testing.assert_allclose(
        to_np(ours), to_np(theirs), rtol=RTOL, atol=ATOL, err_msg=what
    )


def pair(kind, **options):
    """The torch module (float64, torch's init) and the tape module loaded from its
    state_dict; names, shapes and order of the parameters checked equal."""
    name, defaults = KINDS[kind]
    theirs = getattr(torch.nn, name)(INPUT, HIDDEN, **defaults, **options)
    ours = getattr(tape.nn, name)(INPUT, HIDDEN, **defaults, **options)
    shapes = [(n, tuple(p.shape)) for n, p in theirs.named_parameters()]
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == shapes
    result = ours.load_state_dict(
        {k: v.numpy() for k, v in theirs.state_dict().items()}
    )
    assert str(result) == "<All keys matched successfully>"
    return ours, theirs


def state_shapes(module, batched):
    """hx's shape(s): (layers * directions, [batch,] H) (h of proj_size with it)."""
    lead = (module.num_layers * (2 if module.bidirectional else 1),)
    lead += (BATCH,) if batched else ()
    h = lead + (module.proj_size or module.hidden_size,)
    return [h, lead + (module.hidden_size,)] if module.mode == "LSTM" else [h]


def run(module, lib, batched=True, given_hx=True):
    """forward on fixed inputs, then backward of a weighted sum of the output and the
    final states: {name: tensor} of the output, the final states and the grads of
    the input, of hx and of every parameter."""
    shape = (SEQ, BATCH, INPUT) if batched else (SEQ, INPUT)
    if batched and module.batch_first:
        shape = (BATCH, SEQ, INPUT)
    x = lib.tensor(data(*shape, seed=1), requires_grad=True)
    hx = [
        lib.tensor(0.5 * data(*s, seed=2 + i), requires_grad=True)
        for i, s in enumerate(state_shapes(module, batched))
    ]
    state = (tuple(hx) if len(hx) == 2 else hx[0]) if given_hx else None
    output, final = module(x, state)
    finals = list(final) if isinstance(final, tuple) else [final]
    loss = sum(
        (t * lib.tensor(data(*t.shape, seed=9 + i))).sum()
        for i, t in enumerate([output, *finals])
    )
    loss.backward()
    out = {"output": output, "input grad": x.grad}
    out.update((f"final state {i}", t) for i, t in enumerate(finals))
    out.update((f"hx[{i}] grad", h.grad) for i, h in enumerate(hx) if given_hx)
    out.update((f"{n} grad", p.grad) for n, p in module.named_parameters())
    return out


def same(got, want):
    assert list(got) == list(want)
    for what in want:
        assert tuple(got[what].shape) == tuple(want[what].shape), what
        close(got[what], want[what], what)


GRID = list(
    itertools.product(
        KINDS,
        [1, 2],  # num_layers
        [False, True],  # bidirectional
        [False, True],  # batch_first
        [True, False],  # bias
        [True, False],  # batched input
        [False, True],  # hx given
    )
)


@pytest.mark.parametrize(
    "kind, num_layers, bidirectional, batch_first, bias, batched, given_hx",
    GRID,
    ids=[
        f"{k}-L{n}{'-bi' if bi else ''}{'-bf' if bf else ''}{'' if b else '-nobias'}"
        f"{'' if batched else '-unbatched'}{'-hx' if hx else ''}"
        for k, n, bi, bf, b, batched, hx in GRID
    ],
)
def test_forward_and_gradients(
    kind, num_layers, bidirectional, batch_first, bias, batched, given_hx
):
    ours, theirs = pair(
        kind,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        bias=bias,
    )
    same(run(ours, tape, batched, given_hx), run(theirs, torch, batched, given_hx))


def test_tape_weights_into_torch():
    """The other way: the tape's own init loaded into torch gives torch's results."""
    ours = tape.nn.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    theirs = torch.nn.GRU(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    theirs.load_state_dict(
        {k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()}
    )
    same(run(ours, tape), run(theirs, torch))


def test_copies_and_checkpoints():
    """deepcopy and a save/load round trip of the state_dict keep the results."""
    ours, theirs = pair("LSTM", num_layers=2, bidirectional=True)
    buffer = io.BytesIO()
    tape.save(ours.state_dict(), buffer)
    buffer.seek(0)
    loaded = tape.nn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    loaded.load_state_dict(tape.load(buffer))
    want = run(theirs, torch)
    same(run(copy.deepcopy(ours), tape), want)
    same(run(loaded, tape), want)


def test_init_draws_from_the_tape_generator():
    """U(-1/sqrt(H), 1/sqrt(H)) for every parameter, and manual_seed repeats them."""
    tape.manual_seed(3)
    a = tape.nn.LSTM(INPUT, 4, num_layers=2, proj_size=2)
    tape.manual_seed(3)
    b = tape.nn.LSTM(INPUT, 4, num_layers=2, proj_size=2)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy())
        assert np.abs(p.detach().numpy()).max() <= 0.5 and p.requires_grad


@pytest.mark.parametrize(
    "name, options",
    [
        ("RNN", {}),
        ("RNN", {"nonlinearity": "relu", "num_layers": 3}),
        ("GRU", {"bias": False, "batch_first": True}),
        ("GRU", {"num_layers": 2, "dropout": 0.25, "bidirectional": True}),
        ("LSTM", {"num_layers": 2, "batch_first": True}),
        ("LSTM", {"proj_size": 2, "bidirectional": True, "bias": False}),
    ],
)
def test_names_shapes_order_and_repr(name, options):
    ours = getattr(tape.nn, name)(10, 20, **options)
    theirs = getattr(torch.nn, name)(10, 20, **options)
    assert repr(ours) == repr(theirs) and str(ours) == str(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in theirs.named_parameters()
    ]
    assert [[tuple(p.shape) for p in ps] for ps in ours.all_weights] == [
        [tuple(p.shape) for p in ps] for ps in theirs.all_weights
    ]
    for attr in ("mode", "num_layers", "bias", "batch_first", "dropout"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert getattr(ours, "nonlinearity", None) == getattr(theirs, "nonlinearity", None)
    assert ours.flatten_parameters() is theirs.flatten_parameters() is None


def test_repr_inside_a_model():
    def model(lib):
        nn = lib.nn
        return nn.Sequential(
            nn.LSTM(10, 20, num_layers=2, batch_first=True), nn.Linear(20, 2)
        )

    assert str(model(tape)) == str(model(torch))


def classifier(lib, name, state=None):
    """A sequence classifier: a two-layer bidirectional layer, then a Linear on the
    last step's features."""
    nn = lib.nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = getattr(nn, name)(
                3, 4, num_layers=2, bidirectional=True, batch_first=True
            )
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            output, _ = self.rnn(x)
            return self.head(output[:, -1])

    model = Classifier()
    if state is not None:
        model.load_state_dict({k: lib.tensor(v) for k, v in state.items()})
    return model


@pytest.mark.parametrize("name", ["RNN", "GRU", "LSTM"])
def test_training_loop(name):
    """A few SGD steps: the loss curves and the trained weights agree."""
    theirs = classifier(torch, name)
    state = {k: v.numpy().copy() for k, v in theirs.state_dict().items()}
    ours = classifier(tape, name, state)

    def train(lib, model):
        x = lib.tensor(data(6, 5, 3, seed=4))
        y = lib.tensor([0, 1, 1, 0, 1, 0])
        opt = lib.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        losses = []
        for _ in range(6):
            opt.zero_grad()
            loss = lib.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, model.state_dict()

    (got, got_state), (want, want_state) = train(tape, ours), train(torch, theirs)
    np.testing.assert_allclose(got, want, rtol=1e-11)
    assert want[-1] < want[0]
    for k in want_state:
        np.testing.assert_allclose(
            to_np(got_state[k]), to_np(want_state[k]), rtol=1e-10, atol=1e-12, err_msg=k
        )


@pytest.mark.parametrize("kind", ["RNN-tanh", "GRU", "LSTM"])
def test_dropout_between_layers(kind):
    """Dropout acts on every layer's output but the last, in training only: with p=1
    the upper layers see zeros (no draws involved, so torch can judge); in eval mode
    dropout does nothing."""
    x = data(SEQ, BATCH, INPUT, seed=5)
    ours, theirs = pair(kind, num_layers=3, dropout=1.0)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        got, want = ours(tape.tensor(x)), theirs(torch.tensor(x))
        close(got[0], want[0], f"output, train={train}")
        close(got[1][0], want[1][0], f"h_n, train={train}")
    plain = getattr(tape.nn, KINDS[kind][0])(INPUT, HIDDEN, num_layers=3)
    plain.load_state_dict(ours.state_dict())
    close(ours(tape.tensor(x))[0], plain(tape.tensor(x))[0], "eval ignores dropout")


def test_dropout_warning_for_one_layer():
    for lib in (tape, torch):
        with pytest.warns(
            UserWarning, match="num_layers greater than 1, but got dropout=0.5"
        ):
            lib.nn.GRU(INPUT, HIDDEN, dropout=0.5)


def test_float32_model():
    """dtype= builds float32 weights; a float32 input runs through them."""
    theirs = torch.nn.LSTM(INPUT, HIDDEN, dtype=torch.float32)
    ours = tape.nn.LSTM(INPUT, HIDDEN, dtype=tape.float32)
    assert all(str(p.dtype) == "torch.float32" for p in ours.parameters())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = data(SEQ, BATCH, INPUT).astype(np.float32)
    got, want = ours(tape.tensor(x)), theirs(torch.tensor(x))
    assert str(got[0].dtype) == "torch.float32"
    np.testing.assert_allclose(to_np(got[0]), to_np(want[0]), rtol=1e-5, atol=1e-6)


def bad_forward(name, x_shape, hx_shapes=None, dtype=None, **options):
    def fn(lib):
        module = getattr(lib.nn, name)(INPUT, HIDDEN, **options)
        x = lib.tensor(data(*x_shape), dtype=dtype and getattr(lib, dtype))
        hx = None
        if hx_shapes is not None:
            hx = [lib.zeros(*s) for s in hx_shapes]
            hx = tuple(hx) if name == "LSTM" else hx[0]
        return module(x, hx)

    return fn


ERRORS = {
    "input size": bad_forward("LSTM", (SEQ, BATCH, 7)),
    "input size, unbatched": bad_forward("RNN", (SEQ, 7)),
    "input size, batch_first": bad_forward("GRU", (BATCH, SEQ, 1), batch_first=True),
    "1-D input": bad_forward("RNN", (SEQ,)),
    "4-D input": bad_forward("GRU", (1, SEQ, BATCH, INPUT)),
    "4-D input, LSTM": bad_forward("LSTM", (1, SEQ, BATCH, INPUT)),
    "hidden size": bad_forward("RNN", (SEQ, BATCH, INPUT), [(1, BATCH, 4)]),
    "hidden batch": bad_forward(
        "GRU", (SEQ, BATCH, INPUT), [(2, 2, HIDDEN)], num_layers=2
    ),
    "hidden layers, bidirectional": bad_forward(
        "GRU", (SEQ, BATCH, INPUT), [(1, BATCH, HIDDEN)], bidirectional=True
    ),
    "LSTM h size": bad_forward(
        "LSTM",
        (SEQ, BATCH, INPUT),
        [(1, BATCH, HIDDEN), (1, BATCH, HIDDEN)],
        proj_size=2,
    ),
    "LSTM c size": bad_forward(
        "LSTM", (SEQ, BATCH, INPUT), [(1, BATCH, HIDDEN), (1, 1, HIDDEN)]
    ),
    "2-D hx for batched input": bad_forward("RNN", (SEQ, BATCH, INPUT), [(1, HIDDEN)]),
    "3-D hx for unbatched input": bad_forward("GRU", (SEQ, INPUT), [(1, 1, HIDDEN)]),
    "LSTM 2-D hx for batched input": bad_forward(
        "LSTM", (SEQ, BATCH, INPUT), [(1, BATCH, HIDDEN), (1, HIDDEN)]
    ),
    "LSTM 3-D hx for unbatched input": bad_forward(
        "LSTM", (SEQ, INPUT), [(1, 1, HIDDEN), (1, 1, HIDDEN)]
    ),
    "float32 input, float64 weights": bad_forward(
        "LSTM", (SEQ, BATCH, INPUT), dtype="float32"
    ),
    "empty sequence": bad_forward("RNN", (0, BATCH, INPUT)),
    "proj_size for GRU": lambda lib: lib.nn.GRU(3, 4, proj_size=2),
    "proj_size for RNN": lambda lib: lib.nn.RNN(3, 4, proj_size=2),
    "proj_size too large": lambda lib: lib.nn.LSTM(3, 4, proj_size=4),
    "negative proj_size": lambda lib: lib.nn.LSTM(3, 4, proj_size=-1),
    "nonlinearity": lambda lib: lib.nn.RNN(3, 4, nonlinearity="sigmoid"),
    "nonlinearity, positional": lambda lib: lib.nn.RNN(3, 4, 1, "gelu"),
    "dropout > 1": lambda lib: lib.nn.LSTM(3, 4, 2, dropout=1.5),
    "dropout bool": lambda lib: lib.nn.LSTM(3, 4, 2, dropout=True),
    "bias not bool": lambda lib: lib.nn.GRU(3, 4, bias=1),
    "batch_first not bool": lambda lib: lib.nn.GRU(3, 4, batch_first=None),
    "input_size 0": lambda lib: lib.nn.GRU(0, 4),
    "hidden_size float": lambda lib: lib.nn.GRU(3, 4.0),
    "num_layers 0": lambda lib: lib.nn.RNN(3, 4, 0),
}


@pytest.mark.parametrize("fn", ERRORS.values(), ids=list(ERRORS))
def test_errors(fn):
    """torch's exception type and message."""
    theirs = raised(fn, torch)
    assert theirs is not None, "torch did not raise"
    ours = raised(fn, tape)
    assert type(ours) is type(theirs), (ours, theirs)
    assert str(ours) == str(theirs)
