"""Tape round 20: the last strict xfails of the tape, run on torch (float64) and on
symgrad.tape through tests/tape_scripts.py's harness (values, gradients, dtypes,
shapes, Python types, printed text, or the exception type where torch raises).

Covered, and agreeing with torch: nn.utils.rnn's PackedSequence, pack_padded_sequence
(enforce_sorted True and False, batch_first, list and tensor lengths),
pad_packed_sequence (padding_value, total_length), pack_sequence, unpack_sequence,
unpad_sequence and invert_permutation, their errors and printed form; nn.RNN, GRU and
LSTM run on a PackedSequence (stacked, bidirectional, proj_size, an initial state),
each sequence's final state taken at its own length, with gradients.
autograd.graph.saved_tensors_hooks (pack when an op saves, unpack in backward, the
unpacked values used, nesting), disable_saved_tensors_hooks and save_on_cpu (also
under create_graph). Inference tensors (is_inference(); a recorded op that saves one
raises). to('cuda'), cuda() and device='cuda' raise AssertionError, as torch without
CUDA does (a module without tensors moves without complaint).

Not done: torch's in-place and requires_grad_ errors on inference tensors outside
inference mode; saved_tensors_hooks see what the tape's rules save, which for some
ops is not torch's choice or order (torch's MulBackward0 packs `other` first);
torch.bfloat16 (skipped for lack of time).
"""

import pytest
from tape_scripts import cases, check, draws, init_from

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")


# ==== (1) packed sequences ====


def packed_forms(torch):
    rnn = torch.nn.utils.rnn
    x = torch.tensor(draws(3, 4, 2), requires_grad=True)
    sorted_ = rnn.pack_padded_sequence(x, torch.tensor([4, 2, 1]), batch_first=True)
    unsorted = rnn.pack_padded_sequence(
        x.transpose(0, 1), [2, 4, 1], enforce_sorted=False
    )
    seqs = [torch.tensor(draws(n, 2, seed=n)) for n in (2, 3, 1)]
    packed = rnn.pack_sequence(seqs, enforce_sorted=False)
    return (
        tuple(sorted_),
        tuple(unsorted),
        type(sorted_).__name__,
        isinstance(sorted_, tuple),
        str(sorted_),
        type(sorted_.data.grad_fn).__name__,
        tuple(packed),
        rnn.unpack_sequence(packed),
        rnn.unpad_sequence(rnn.pad_sequence(seqs), torch.tensor([2, 3, 1])),
        rnn.invert_permutation(torch.tensor([2, 0, 1])),
        rnn.PackedSequence(packed.data, packed.batch_sizes, packed.sorted_indices)[3],
    )


def pad_packed_round_trip(torch):
    rnn = torch.nn.utils.rnn
    x = torch.tensor(draws(4, 3, 2), requires_grad=True)
    packed = rnn.pack_padded_sequence(x, [3, 4, 1], enforce_sorted=False)
    y, lengths = rnn.pad_packed_sequence(packed, padding_value=-1.0, total_length=5)
    z, _ = rnn.pad_packed_sequence(packed, batch_first=True)
    (y * torch.tensor(draws(5, 3, 2, seed=1))).sum().backward()
    return y, lengths, z, x.grad


def packed_errors(torch):
    rnn = torch.nn.utils.rnn
    x = torch.ones(4, 3, 2)
    out = []
    for f in (
        lambda: rnn.pack_padded_sequence(x, [2, 4, 1]),
        lambda: rnn.pack_padded_sequence(x, [4, 2, 0]),
        lambda: rnn.pack_padded_sequence(x, [4, 2]),
        lambda: rnn.pad_packed_sequence(
            rnn.pack_padded_sequence(x, [4, 2, 1]), total_length=3
        ),
        lambda: torch.nn.LSTM(2, 3)(rnn.pack_padded_sequence(x, [4, 2, 1]).data),
    ):
        try:
            f()
            out.append("no error")
        except Exception as e:  # noqa: BLE001 - the type and message are compared
            out.append((type(e).__name__, str(e)))
    return out


def run_packed(kind, enforce_sorted=True, with_state=False, **options):
    """A recurrent net on packed sequences: packed output, h_n (and c_n), the padded
    output, and the gradients of the input and the weights."""

    def script(torch):
        rnn = torch.nn.utils.rnn
        net = init_from(getattr(torch.nn, kind)(2, 3, **options), torch)
        lengths = [4, 3, 1] if enforce_sorted else [3, 4, 1]
        x = torch.tensor(draws(4, 3, 2), requires_grad=True)
        packed = rnn.pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
        hx = None
        if with_state:
            layers = options.get("num_layers", 1) * (
                2 if options.get("bidirectional") else 1
            )
            h0 = torch.tensor(draws(layers, 3, options.get("proj_size") or 3, seed=2))
            hx = (
                (h0, torch.tensor(draws(layers, 3, 3, seed=3)))
                if kind == "LSTM"
                else h0
            )
        out, state = net(packed, hx)
        y, _ = rnn.pad_packed_sequence(out)
        h = state[0] if kind == "LSTM" else state
        (y.sin().sum() + h.square().sum()).backward()
        return (
            type(out).__name__,
            tuple(out),
            state,
            y,
            x.grad,
            [p.grad for p in net.parameters()],
        )

    return script


PACKED = {
    "PackedSequence, pack_padded_sequence, pack_sequence, unpack/unpad": packed_forms,
    "pad_packed_sequence: unsorted, padding_value, total_length, gradients": (
        pad_packed_round_trip
    ),
    "packing errors": packed_errors,
    "RNN on a PackedSequence": run_packed("RNN"),
    "GRU on an unsorted PackedSequence": run_packed("GRU", enforce_sorted=False),
    "LSTM, 2 layers, bidirectional, packed": run_packed(
        "LSTM", num_layers=2, bidirectional=True
    ),
    "LSTM proj_size, unsorted, with an initial state": run_packed(
        "LSTM", enforce_sorted=False, with_state=True, proj_size=2
    ),
    "GRU bidirectional, unsorted, with an initial state": run_packed(
        "GRU", enforce_sorted=False, with_state=True, bidirectional=True
    ),
    "RNN relu, 2 layers, unsorted": run_packed(
        "RNN", enforce_sorted=False, num_layers=2, nonlinearity="relu"
    ),
}


@pytest.mark.parametrize("script", cases(PACKED))
def test_packed_sequences(script):
    check(script)


# ==== (2) saved tensors hooks ====


def hooks_record(torch):
    seen = []

    def pack(x):
        seen.append(("pack", tuple(x.shape), x.requires_grad))
        return x

    def unpack(x):
        seen.append(("unpack", tuple(x.shape)))
        return x

    a = torch.tensor(draws(3, 2), requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        y = a.exp()  # saves its result
        z = y[0].sin()  # saves its input
        w = z.sum()  # saves nothing
    outside = w.cos()  # not packed: the block is closed
    outside.backward()
    return seen, a.grad


def hooks_values(torch):
    """backward reads what unpack returns, and a packed copy does not see a later
    in-place change (no version error)."""
    a = torch.tensor(draws(4), requires_grad=True)
    b = torch.tensor(draws(4, seed=1))
    with torch.autograd.graph.saved_tensors_hooks(lambda x: x.clone(), lambda x: x):
        y = a * b
    b.add_(1)
    y.sum().backward()
    first = a.grad.clone()
    a.grad = None
    with torch.autograd.graph.saved_tensors_hooks(
        lambda x: None, lambda p: torch.full((4,), 3.0)
    ):
        y = a.exp()
    y.sum().backward()
    return first, a.grad


def hooks_nested_and_disabled(torch):
    seen = []
    outer = torch.autograd.graph.saved_tensors_hooks(
        lambda x: seen.append("outer") or x, lambda x: x
    )
    inner = torch.autograd.graph.saved_tensors_hooks(
        lambda x: seen.append("inner") or x, lambda x: x
    )
    a = torch.ones(2, requires_grad=True)
    with outer:
        a.exp()
        with inner:
            a.exp()
        a.exp()
    out = [seen]
    with torch.autograd.graph.disable_saved_tensors_hooks("no hooks here"):
        try:
            with outer:
                pass
        except RuntimeError as e:
            out.append(str(e))
    with outer:
        try:
            with torch.autograd.graph.disable_saved_tensors_hooks("not now"):
                pass
        except RuntimeError as e:
            out.append(str(e))
    return out


def save_on_cpu_double_backward(torch):
    a = torch.tensor(draws(3), requires_grad=True)
    with torch.autograd.graph.save_on_cpu(pin_memory=False):
        y = (a.exp() * a.sin()).sum()
        saved = y.grad_fn.next_functions[0][0].next_functions[0][0]._saved_result
    (g,) = torch.autograd.grad(y, a, create_graph=True)
    g.sum().backward()
    return saved.detach(), g, a.grad


HOOKS = {
    "saved_tensors_hooks: pack on save, unpack in backward": hooks_record,
    "saved_tensors_hooks: backward reads the unpacked values": hooks_values,
    "saved_tensors_hooks nested; disable_saved_tensors_hooks": (
        hooks_nested_and_disabled
    ),
    "save_on_cpu, a second derivative": save_on_cpu_double_backward,
}


@pytest.mark.parametrize("script", cases(HOOKS))
def test_saved_tensors_hooks(script):
    check(script)


# ==== (3) inference tensors; CUDA without CUDA ====


def inference_tensors(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    with torch.inference_mode():
        w = torch.ones(2) * 2
    out = [w.is_inference(), x.is_inference(), w.clone().is_inference(), x + w]
    for f in (lambda: x * w, lambda: (w * x).sum(), lambda: x.exp() * w):
        try:
            f()
        except RuntimeError as e:
            out.append(str(e))
    (x * w.clone()).sum().backward()
    return out, x.grad


def cuda_without_cuda(torch):
    out = [torch.nn.ReLU().cuda(), torch.nn.ReLU().to("cuda"), torch.ones(2).to("cpu")]
    for f in (
        lambda: torch.ones(2).to("cuda:0"),
        lambda: torch.ones(2).to(device="cuda", dtype=torch.float64),
        lambda: torch.ones(2).cuda(),
        lambda: torch.nn.Linear(1, 1).to("cuda"),
        lambda: torch.nn.Linear(1, 1).cuda(),
        lambda: torch.zeros(2, device="cuda"),
        lambda: torch.tensor([1.0], device="cuda"),
    ):
        try:
            f()
        except AssertionError as e:
            out.append(str(e))
    return [str(o) for o in out]


DEVICES = {
    "inference tensors cannot be saved for backward": inference_tensors,
    "to('cuda'), cuda(), device='cuda' without CUDA": cuda_without_cuda,
}


@pytest.mark.parametrize("script", cases(DEVICES))
def test_inference_tensors_and_devices(script):
    check(script)
