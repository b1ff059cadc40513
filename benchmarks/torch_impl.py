"""PyTorch eager versions of the benchmark workloads (float64, one thread).

Same signature as the generated modules: ``value_and_grad(params, inputs) -> (loss,
grads)`` with NumPy arrays in and out; the conversion (zero-copy ``torch.from_numpy``
in, ``.numpy()`` out) is part of the measured time, as it is for any NumPy caller.
The code is what a PyTorch user would write (``F.linear``, the fused loss functions),
with gradients from ``torch.autograd.grad``.

Importing this module raises ``ImportError`` when PyTorch is not installed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "seed_mlp",
    "logistic_regression",
    "mlp_classifier",
    "rosenbrock",
    "lennard_jones",
    "decay_fit",
    "WORKLOADS",
]

torch.set_num_threads(1)


def _leaves(params):
    return {
        k: torch.from_numpy(np.asarray(v, dtype=np.float64)).requires_grad_()
        for k, v in params.items()
    }


def _data(inputs):
    return {k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}


def _value_and_grad(loss_fn):
    """Wrap ``loss_fn(tensor_params, tensor_inputs) -> loss`` as a NumPy value_and_grad."""

    def value_and_grad(params, inputs):
        p = _leaves(params)
        loss = loss_fn(p, _data(inputs))
        grads = torch.autograd.grad(loss, tuple(p.values()))
        return loss.item(), {k: g.numpy() for k, g in zip(p, grads, strict=True)}

    value_and_grad.__name__ = loss_fn.__name__
    value_and_grad.__doc__ = loss_fn.__doc__
    return value_and_grad


@_value_and_grad
def seed_mlp(p, d):
    h = torch.sigmoid(F.linear(d["x"], p["W1"], p["b1"]))
    y = torch.sigmoid(F.linear(h, p["W2"], p["b2"]))
    return F.mse_loss(y, d["target"])


@_value_and_grad
def logistic_regression(p, d):
    z = torch.mv(d["X"], p["w"]) + p["b"]
    return F.binary_cross_entropy_with_logits(z, d["y"])


@_value_and_grad
def mlp_classifier(p, d):
    h = torch.tanh(F.linear(d["x"], p["W1"], p["b1"]))
    logits = F.linear(h, p["W2"], p["b2"])
    return F.cross_entropy(logits, d["labels"])


@_value_and_grad
def rosenbrock(p, d):
    x = p["x"]
    a = x[:-1]
    return (100.0 * (x[1:] - a * a) ** 2 + (1.0 - a) ** 2).sum()


@_value_and_grad
def lennard_jones(p, d):
    pos = p["pos"]
    diff = pos.index_select(0, d["i"]) - pos.index_select(0, d["j"])
    r2 = (diff * diff).sum(dim=1)
    s6 = r2.pow(-3)
    return (4.0 * (s6 * s6 - s6)).sum()


@_value_and_grad
def decay_fit(p, d):
    r = p["a"] * torch.exp(-p["b"] * d["t"]) + p["c"] - d["y"]
    return (r * r).mean()


WORKLOADS = {
    "seed_mlp": seed_mlp,
    "logistic_regression": logistic_regression,
    "mlp_classifier": mlp_classifier,
    "rosenbrock": rosenbrock,
    "lennard_jones": lennard_jones,
    "decay_fit": decay_fit,
}
