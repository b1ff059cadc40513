"""torch.nn.utils.rnn: pad_sequence, for batching sequences of different lengths."""


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
