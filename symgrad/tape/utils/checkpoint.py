"""torch.utils.checkpoint: torch recomputes the function's activations during backward
to save memory; the tape keeps them, so the results and gradients are the same."""


def checkpoint(function, *args, use_reentrant=None, **kwargs):
    return function(*args, **kwargs)
