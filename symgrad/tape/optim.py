"""torch.optim: SGD and Adam, following PyTorch's documented update rules step by step.

Updates are in place on each parameter's array, outside the graph, and count as
in-place writes (a graph that saved the old value then refuses to backward, as in
torch). Per-parameter state holds tensors, as torch's does.
"""

import math

import numpy as np

from .tensor import Tensor


class Optimizer:
    """Holds param_groups (dicts of params plus hyperparameters) and per-param state."""

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of "
                f"Tensors or dicts, but got {type(params).__name__}"
            )
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = [{**defaults, **g, "params": _params(g)} for g in groups]
        every = [p for g in self.param_groups for p in g["params"]]
        if len({id(p) for p in every}) != len(every):
            raise ValueError("some parameters appear in more than one parameter group")
        self.state = {}

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(
                        p._data, p.grad._data, self.state.setdefault(p, {}), group
                    )
                    p._counter.value += 1


def _params(group):
    """A group's parameters as a list (one tensor alone is wrapped, as in torch)."""
    params = group["params"]
    params = [params] if isinstance(params, Tensor) else list(params)
    for p in params:
        if not isinstance(p, Tensor):
            raise TypeError(
                "optimizer can only optimize Tensors, but one of the params is "
                f"{type(p).__name__}"
            )
        if not p.is_leaf:
            raise ValueError("can't optimize a non-leaf Tensor")
    return params


def _check(ok, what, value):
    if not ok:
        raise ValueError(f"Invalid {what}: {value}")


class SGD(Optimizer):
    """g = grad + weight_decay*p; buf = momentum*buf + (1-dampening)*g (buf = g on the
    first step); g = g + momentum*buf if nesterov else buf; p -= lr*g."""

    def __init__(
        self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False
    ):
        _check(lr >= 0, "learning rate", lr)
        _check(momentum >= 0, "momentum value", momentum)
        _check(weight_decay >= 0, "weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        momentum = group["momentum"]
        if momentum != 0:
            if "momentum_buffer" not in state:
                buf = g.copy()
                state["momentum_buffer"] = Tensor._wrap(buf)
            else:
                buf = state["momentum_buffer"]._data
                buf *= momentum
                buf += (1 - group["dampening"]) * g
            g = g + momentum * buf if group["nesterov"] else buf
        p -= group["lr"] * g


class Adam(Optimizer):
    """g = grad + weight_decay*p; m = lerp(m, g, 1-beta1); v = beta2*v + (1-beta2)*g^2
    (amsgrad: v = the max of all v so far);
    p -= lr/(1-beta1^t) * m / (sqrt(v)/sqrt(1-beta2^t) + eps)."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        amsgrad=False,
    ):
        _check(lr >= 0, "learning rate", lr)
        _check(eps >= 0, "epsilon value", eps)
        _check(0 <= betas[0] < 1, "beta parameter at index 0", betas[0])
        _check(0 <= betas[1] < 1, "beta parameter at index 1", betas[1])
        _check(weight_decay >= 0, "weight_decay value", weight_decay)
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        beta1, beta2 = group["betas"]
        if group["weight_decay"] != 0:
            g = g + group["weight_decay"] * p
        if not state:
            names = ["exp_avg", "exp_avg_sq"] + ["max_exp_avg_sq"] * group["amsgrad"]
            state["step"] = Tensor._wrap(np.zeros((), p.dtype))
            state.update((name, Tensor._wrap(np.zeros_like(p))) for name in names)
        state["step"]._data += 1
        t = state["step"].item()
        m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
        m += (1 - beta1) * (g - m)  # torch's exp_avg.lerp_(grad, 1 - beta1)
        v *= beta2
        v += (1 - beta2) * g * g
        if group["amsgrad"]:
            v = np.maximum(
                state["max_exp_avg_sq"]._data, v, out=state["max_exp_avg_sq"]._data
            )
        step_size = group["lr"] / (1 - beta1**t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + group["eps"]
        p -= step_size * (m / denom)
