"""torch.nn.utils.rnn: batching sequences of different lengths, padded (pad_sequence)
or packed (PackedSequence, which nn.RNN/GRU/LSTM run without touching the padding)."""

from collections import namedtuple

import numpy as np

from .tensor import Tensor, as_array

UNSORTED = (
    "`lengths` array must be sorted in decreasing order when `enforce_sorted` is "
    "True. You can pass `enforce_sorted=False` to pack_padded_sequence and/or "
    "pack_sequence to sidestep this requirement if you do not need ONNX "
    "exportability."
)


def invert_permutation(permutation):
    """The permutation undoing `permutation` (None stays None)."""
    if permutation is None:
        return None
    return Tensor._wrap(np.argsort(permutation._data, kind="stable"))


class PackedSequence(
    namedtuple(
        "PackedSequence_", ["data", "batch_sizes", "sorted_indices", "unsorted_indices"]
    )
):
    """The steps of a batch of sequences sorted by decreasing length, laid end to
    end: `data` holds step 0 of every sequence, then step 1 of those that have one,
    ...; batch_sizes[t] counts the sequences at step t. sorted_indices says which
    input sequence each slot holds (None if the input was sorted already)."""

    def __new__(
        cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None
    ):
        if unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    def to(self, *args, **kwargs):
        """data moved or cast; the index tensors stay int64."""
        data = self.data.to(*args, **kwargs)
        return self if data is self.data else type(self)(data, *self[1:])

    @property
    def is_cuda(self):
        return self.data.is_cuda


def _steps(batch_sizes):
    """(time, slot) index arrays of the packed order: each step's live slots."""
    time = np.repeat(np.arange(len(batch_sizes)), batch_sizes)
    slot = np.concatenate([np.arange(b) for b in batch_sizes])
    return time, slot


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """The padded (T, B, *) input (batch first: (B, T, *)) packed, leaving out each
    sequence's steps past its length; with enforce_sorted=False the sequences are
    sorted by decreasing length first (and unsorted again by pad_packed_sequence)."""
    lengths = np.asarray(as_array(lengths)).astype(np.int64).reshape(-1)
    sorted_indices = None
    if not enforce_sorted:
        order = np.argsort(-lengths, kind="stable")
        lengths, sorted_indices = lengths[order], Tensor._wrap(order)
        input = input.index_select(0 if batch_first else 1, sorted_indices)
    if batch_first:
        input = input.transpose(0, 1)
    if input.numel() == 0:
        raise RuntimeError("Cannot pack empty tensors.")
    batch = input.shape[1]
    if len(lengths) != batch:
        raise RuntimeError(
            "Expected `len(lengths)` to be equal to batch_size, but got "
            f"{len(lengths)} (batch_size={batch})"
        )
    if lengths[-1] <= 0:
        raise RuntimeError(
            "Length of all samples has to be greater than 0, but found an element "
            "in 'lengths' that is <= 0"
        )
    if (np.diff(lengths) > 0).any():
        raise RuntimeError(UNSORTED)
    batch_sizes = (lengths[None, :] > np.arange(lengths[0])[:, None]).sum(1)
    index, shape = _steps(batch_sizes), tuple(input.shape)

    def backward(xp, g):
        return (xp.scatter(g, shape, index),)

    data = input._result(
        input._data[index],
        (input,),
        backward,
        "PackPaddedSequenceBackward0",
        saves=False,
    )
    return PackedSequence(data, Tensor._wrap(batch_sizes), sorted_indices)


def pad_packed_sequence(
    sequence, batch_first=False, padding_value=0.0, total_length=None
):
    """(padded, lengths): the inverse of pack_padded_sequence, each sequence back in
    its input slot, padded with padding_value to the longest (or total_length)."""
    data, batch_sizes = sequence.data, sequence.batch_sizes._data
    steps = len(batch_sizes)
    if total_length is not None:
        if total_length < steps:
            raise ValueError(
                "Expected total_length to be at least the length of the longest "
                f"sequence in input, but got total_length={total_length} and max "
                f"sequence length being {steps}"
            )
        steps = total_length
    lengths = (batch_sizes[None, :] > np.arange(batch_sizes[0])[:, None]).sum(1)
    index = _steps(batch_sizes)
    out = np.full((steps, batch_sizes[0], *data.shape[1:]), padding_value, data.dtype)
    out[index] = data._data

    def backward(xp, g):
        return (g[index],)

    padded = data._result(
        out, (data,), backward, "PadPackedSequenceBackward0", saves=False
    )
    padded = padded.transpose(0, 1) if batch_first else padded
    lengths = Tensor._wrap(lengths)
    if sequence.unsorted_indices is not None:
        padded = padded.index_select(0 if batch_first else 1, sequence.unsorted_indices)
        lengths = lengths[sequence.unsorted_indices]
    return padded, lengths


def pad_sequence(sequences, batch_first=False, padding_value=0.0, padding_side="right"):
    """The sequences (tensors of shape (L_i, *)) in one tensor of padding_value,
    (max L, B, *) or with batch_first (B, max L, *), each written at the start (or
    with padding_side="left" the end) of its slot; gradients flow to the
    sequences through the writes (CopySlices), as in torch."""
    if padding_side not in ("left", "right"):
        raise ValueError(
            f"Expected padding_side to be one of left or right, but got {padding_side}."
        )
    sequences = list(sequences)
    longest = max(len(s) for s in sequences)
    trailing = tuple(sequences[0].shape[1:])
    shape = (len(sequences), longest) if batch_first else (longest, len(sequences))
    out = sequences[0].new_full(shape + trailing, padding_value)
    for i, seq in enumerate(sequences):
        n = len(seq)
        steps = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
        out[(i, steps) if batch_first else (steps, i)] = seq
    return out


def pack_sequence(sequences, enforce_sorted=True):
    """The sequences (tensors of shape (L_i, *)) packed: pad, then pack."""
    lengths = [len(s) for s in sequences]
    return pack_padded_sequence(
        pad_sequence(sequences), lengths, enforce_sorted=enforce_sorted
    )


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """The sequences of a padded batch, each cut to its length."""
    if not batch_first:
        padded_sequences = padded_sequences.transpose(0, 1)
    return [seq[: int(n)] for seq, n in zip(padded_sequences, lengths, strict=True)]


def unpack_sequence(packed_sequences):
    """The sequences of a PackedSequence, in their input order."""
    padded, lengths = pad_packed_sequence(packed_sequences, batch_first=True)
    return unpad_sequence(padded, lengths, batch_first=True)
