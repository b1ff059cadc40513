"""torch.nn.functional: activations and losses.

Everything here is finite, with finite gradients, for any finite input: softplus and
logsigmoid are primitives written never to overflow, and the losses are built from
them and from log_softmax, which subtracts the max before exponentiating.
"""

import warnings

import numpy as np

from .autograd import underflow_ok


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def relu(input):
    return input.relu()


def softmax(input, dim):
    return input.softmax(dim)


def log_softmax(input, dim):
    return input.log_softmax(dim)


@underflow_ok
def softplus(input, beta=1.0, threshold=20.0):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as torch)."""
    x = input._data
    linear = beta * x > threshold
    z = np.exp(np.minimum(beta * x, threshold))  # capped, so exp cannot overflow

    def backward(g):
        return (np.where(linear, g, g * z / (1 + z)),)

    out = np.where(linear, x, np.log1p(z) / beta)
    return input._result(out, (input,), backward, "SoftplusBackward0")


@underflow_ok
def logsigmoid(input):
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)); its gradient is sigmoid(-x)."""
    x = input._data
    z = np.exp(-np.abs(x))

    def backward(g):
        return (g * np.where(x < 0, 1 / (1 + z), z / (1 + z)),)

    out = np.minimum(x, 0) - np.log1p(z)
    return input._result(out, (input,), backward, "LogSigmoidBackward0")


def linear(input, weight, bias=None):
    """input @ weight.T + bias, weight of shape (out_features, in_features)."""
    out = input @ weight.T
    return out if bias is None else out + bias


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"{reduction} is not a valid value for reduction")


def mse_loss(input, target, reduction="mean"):
    if target.shape != input.shape:
        warnings.warn(
            f"Using a target size ({target.shape}) that is different to the input size "
            f"({input.shape}). This will likely lead to incorrect results due to "
            "broadcasting. Please ensure they have the same size.",
            stacklevel=2,
        )
    return _reduce((input - target) ** 2, reduction)


def cross_entropy(input, target, reduction="mean", ignore_index=-100):
    """-log_softmax(input)[target] with classes along dim 1 (dim 0 for 1-D input);
    `target` holds integer class indices. Targets equal to ignore_index add nothing,
    and the mean is over the others, as in torch."""
    if target.dtype.kind not in "iu":
        raise RuntimeError(
            "expected target dtype to be an integer class index, but got "
            f"{target.dtype} (class-probability targets are not supported)"
        )
    dim = 0 if input.ndim == 1 else 1
    keep = target != ignore_index
    index = (target * keep).unsqueeze(dim)  # an ignored target picks class 0, unused
    loss = -input.log_softmax(dim).gather(dim, index).squeeze(dim) * keep
    return loss.sum() / keep.sum() if reduction == "mean" else _reduce(loss, reduction)


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """(1 - y) x - logsigmoid(x): torch's formula, finite for every logit x."""
    return _reduce((1 - target) * input - logsigmoid(input), reduction)
