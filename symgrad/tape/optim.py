"""torch.optim: SGD, Adam, AdamW, NAdam, RAdam, Adamax, RMSprop, Adagrad, Adadelta
and LBFGS, following
PyTorch's documented update rules step by step, and optimizer checkpoints
(state_dict/load_state_dict).

Updates are in place on each parameter's array, outside the graph, and count as
in-place writes (a graph that saved the old value then refuses to backward, as in
torch). Per-parameter state holds tensors, as torch's does.
"""

import math
import sys
import warnings
from collections import defaultdict

import numpy as np

from . import lr_scheduler, swa_utils
from .autograd import enable_grad
from .tensor import Tensor

# `from symgrad.tape.optim import lr_scheduler` and `optim.lr_scheduler.StepLR` work;
# likewise swa_utils.
sys.modules[__name__ + ".lr_scheduler"] = lr_scheduler
sys.modules[__name__ + ".swa_utils"] = swa_utils


class Optimizer:
    """Holds param_groups (dicts of params plus hyperparameters) and per-param state.

    The built-in optimizers take torch's keywords foreach, fused, capturable and
    differentiable, by name in their signatures as torch's do (scripts look for
    them with inspect.signature), with torch's defaults, kept in the groups as
    torch keeps them. They choose how torch computes a step, not what it
    computes, so they change nothing here; differentiable=True, a step recorded
    for autograd, is not there. The base class takes none, so the groups of a
    user's subclass hold only its own defaults, as in torch."""

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
        self.state = defaultdict(dict)
        self.param_groups = []
        for group in groups:
            self.add_param_group(group)
        if hasattr(self, "_update"):  # a step computed here: the flags checked
            _check_flags(defaults)

    def __repr__(self):
        """Each group's hyperparameters, sorted by name, as torch prints them."""
        text = type(self).__name__ + " ("
        for i, group in enumerate(self.param_groups):
            text += f"\nParameter Group {i}\n"
            text += "".join(
                f"    {k}: {group[k]}\n" for k in sorted(group) if k != "params"
            )
        return text + ")"

    def add_param_group(self, param_group):
        """Optimize more parameters, with their own hyperparameters (the defaults
        fill in the ones the group does not give)."""
        params = _params(param_group)
        if len({id(p) for p in params}) != len(params):
            # torch only warns here (tied weights listed twice), and steps p twice.
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in "
                "future, this will cause an error; see "
                "github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )
        earlier = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in earlier for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        group = {**param_group, "params": params}  # the given order, then defaults
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    def step(self, closure=None):
        """One update of every parameter that has a gradient; `closure`, if given,
        recomputes the loss (with grad enabled) first, and its result is returned.
        With maximize=True the update climbs the gradient instead."""
        loss = None
        self._opt_called = True  # read by lr_scheduler, as torch's flag of that name
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            hyper = _numbers(group)
            for p in group["params"]:
                if p.grad is not None:
                    g = -p.grad._data if group["maximize"] else p.grad._data
                    self._update(p._data, g, self.state[p], hyper)
                    p._counter.value += 1
        return loss

    def state_dict(self):
        """{"state": per-parameter state, "param_groups": hyperparameters}, with the
        parameters numbered in order across groups, as torch does; the state's
        tensors are shared, not copied."""
        params = [p for g in self.param_groups for p in g["params"]]
        index = {id(p): i for i, p in enumerate(params)}
        groups = [  # "params" last, as torch packs them
            {k: v for k, v in g.items() if k != "params"}
            | {"params": [index[id(p)] for p in g["params"]]}
            for g in self.param_groups
        ]
        state = {index[id(p)]: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Take the hyperparameters and per-parameter state of a state_dict() of an
        optimizer over parameters of the same shapes, in the same groups."""
        saved = state_dict["param_groups"]
        if len(saved) != len(self.param_groups):
            raise ValueError(
                "loaded state dict has a different number of parameter groups"
            )
        if any(
            len(s["params"]) != len(g["params"])
            for s, g in zip(saved, self.param_groups, strict=True)
        ):
            raise ValueError(
                "loaded state dict contains a parameter group that doesn't match the "
                "size of optimizer's group"
            )
        params = {
            i: p
            for s, g in zip(saved, self.param_groups, strict=True)
            for i, p in zip(s["params"], g["params"], strict=True)
        }
        self.state = defaultdict(dict)
        self.state.update(
            (params[i], {k: _cast(v, params[i], k) for k, v in s.items()})
            for i, s in state_dict["state"].items()
        )
        self.param_groups = [
            {**s, "params": g["params"]}
            for s, g in zip(saved, self.param_groups, strict=True)
        ]


def _numbers(group):
    """The group with its tensor hyperparameters (torch accepts lr, betas, ... as
    0-d tensors) as Python numbers: `p -= lr * g` on an array with a Tensor `lr`
    would defer to Tensor and rebind `p` instead of updating it."""

    def number(v):
        return v.item() if isinstance(v, Tensor) else v

    return {
        k: tuple(map(number, v)) if isinstance(v, tuple) else number(v)
        for k, v in group.items()
        if k != "params"
    }


def _cast(value, param, key):
    """A state tensor in its parameter's dtype (the step count stays as it is)."""
    if isinstance(value, Tensor) and key != "step":
        return value.to(param.dtype)
    return value


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


def _init_state(state, p, names, fill=0.0):
    """A step count (a tensor of the default float dtype, whatever p's, as torch's)
    and a buffer of p's shape and dtype, filled with `fill`, per name."""
    state["step"] = Tensor._wrap(np.zeros((), np.float64))
    state.update((name, Tensor._wrap(np.full_like(p, fill))) for name in names)


def _with_weight_decay(p, g, group):
    """g plus the gradient of the L2 penalty, weight_decay * p (none when it is 0)."""
    return g + group["weight_decay"] * p if group["weight_decay"] != 0 else g


def _decayed(p, g, group):
    """The gradient with L2 weight decay added, or (decoupled, as AdamW) the
    gradient as it is, p decayed instead."""
    if group["decoupled_weight_decay"]:
        p *= 1 - group["lr"] * group["weight_decay"]
        return g
    return _with_weight_decay(p, g, group)


def _check(ok, what, value):
    if not ok:
        raise ValueError(f"Invalid {what}: {value}")


def _adam_args(lr, betas, eps, weight_decay):
    """The checks Adam and its variants make, in torch's order."""
    _check(lr >= 0, "learning rate", lr)
    _check(eps >= 0, "epsilon value", eps)
    _check(0 <= betas[0] < 1, "beta parameter at index 0", betas[0])
    _check(0 <= betas[1] < 1, "beta parameter at index 1", betas[1])
    _check(weight_decay >= 0, "weight_decay value", weight_decay)


def _check_flags(defaults):
    """torch's refusals of its flags, after the parameters' checks as in torch:
    fused=True (accepted on CPU, float64 too) neither with differentiable nor with
    foreach; differentiable=True is not in symgrad.tape."""
    if defaults.get("fused"):
        if defaults.get("differentiable"):
            raise RuntimeError("`fused` does not support `differentiable`")
        if defaults.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if defaults.get("differentiable"):
        raise NotImplementedError(
            "optimizers with differentiable=True are not in symgrad.tape"
        )


def _moments(g, state, group):
    """Adam's moving averages updated in place: m = lerp(m, g, 1-beta1),
    v = beta2*v + (1-beta2)*g^2; returns m, v and the step count t."""
    beta1, beta2 = group["betas"]
    state["step"]._data += 1
    m, v = state["exp_avg"]._data, state["exp_avg_sq"]._data
    m += (1 - beta1) * (g - m)  # torch's exp_avg.lerp_(grad, 1 - beta1)
    v *= beta2
    v += (1 - beta2) * g * g
    return m, v, state["step"].item()


class SGD(Optimizer):
    """g = grad + weight_decay*p; buf = momentum*buf + (1-dampening)*g (buf = g on the
    first step); g = g + momentum*buf if nesterov else buf; p -= lr*g."""

    def __init__(
        self,
        params,
        lr=1e-3,
        momentum=0,
        dampening=0,
        weight_decay=0,
        nesterov=False,
        *,
        maximize=False,
        foreach=None,
        differentiable=False,
        fused=None,
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
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        g = _with_weight_decay(p, g, group)
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
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        fused=None,
        decoupled_weight_decay=False,
    ):
        _adam_args(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        beta1, beta2 = group["betas"]
        g = _decayed(p, g, group)
        if not state:
            names = ["exp_avg", "exp_avg_sq"] + ["max_exp_avg_sq"] * group["amsgrad"]
            _init_state(state, p, names)
        m, v, t = _moments(g, state, group)
        if group["amsgrad"]:
            v = np.maximum(
                state["max_exp_avg_sq"]._data, v, out=state["max_exp_avg_sq"]._data
            )
        step_size = group["lr"] / (1 - beta1**t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + group["eps"]
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr*weight_decay, then the Adam
    step on the plain gradient."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        foreach=None,
        capturable=False,
        differentiable=False,
        fused=None,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )


class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat): the momentum coefficient mu_t =
    beta1 (1 - 0.5 * 0.96^(t momentum_decay)) and its running product weight the
    gradient and the next step's momentum; p -= lr ((1-mu_t)/(1-prod mu) g +
    mu_{t+1}/(1-prod mu * mu_{t+1}) m) / (sqrt(v/(1-beta2^t)) + eps)."""

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        momentum_decay=4e-3,
        decoupled_weight_decay=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
    ):
        _adam_args(lr, betas, eps, weight_decay)
        _check(momentum_decay >= 0, "momentum_decay value", momentum_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        if not state:
            _init_state(state, p, ["mu_product", "exp_avg", "exp_avg_sq"])
            state["mu_product"] = Tensor._wrap(np.ones((), np.float64))
        g = _decayed(p, g, group)
        m, v, t = _moments(g, state, group)
        beta1, beta2 = group["betas"]
        lr, decay = group["lr"], group["momentum_decay"]
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * decay))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * decay))
        state["mu_product"]._data *= mu
        product = state["mu_product"].item()
        denom = np.sqrt(v / (1 - beta2**t)) + group["eps"]
        p -= lr * (1 - mu) / (1 - product) * g / denom
        p -= lr * mu_next / (1 - product * mu_next) * m / denom


class RAdam(Optimizer):
    """Adam with the variance of its adaptive step rectified (Liu et al.): while
    the approximated SMA length rho_t is at most 5 the step is plain momentum,
    p -= lr m/(1-beta1^t); after, the Adam step times the rectification term."""

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        decoupled_weight_decay=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
    ):
        _adam_args(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            decoupled_weight_decay=decoupled_weight_decay,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        if not state:
            _init_state(state, p, ["exp_avg", "exp_avg_sq"])
        g = _decayed(p, g, group)
        m, v, t = _moments(g, state, group)
        beta1, beta2 = group["betas"]
        step = group["lr"] * m / (1 - beta1**t)
        rho_inf = 2 / (1 - beta2) - 1
        rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho > 5.0:
            rect = (
                (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)
            )
            step = step * (math.sqrt(1 - beta2**t) / (np.sqrt(v) + group["eps"]))
            step = step * math.sqrt(rect)
        p -= step


class Adamax(Optimizer):
    """Adam in the infinity norm: u = max(beta2*u, |g| + eps) in place of v;
    p -= lr/(1-beta1^t) * m/u (weight decay as L2, added to the gradient)."""

    def __init__(
        self,
        params,
        lr=2e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        capturable=False,
    ):
        _adam_args(lr, betas, eps, weight_decay)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            capturable=capturable,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        beta1, beta2 = group["betas"]
        if not state:
            _init_state(state, p, ["exp_avg", "exp_inf"])
        state["step"]._data += 1
        t = state["step"].item()
        g = _with_weight_decay(p, g, group)
        m, u = state["exp_avg"]._data, state["exp_inf"]._data
        m += (1 - beta1) * (g - m)
        u *= beta2
        np.maximum(u, np.abs(g) + group["eps"], out=u)
        p -= group["lr"] / (1 - beta1**t) * (m / u)


class RMSprop(Optimizer):
    """g = grad + weight_decay*p; v = alpha*v + (1-alpha)*g^2; centered: a = lerp(a,
    g, 1-alpha) and v - a^2 in place of v; d = sqrt(v) + eps; p -= lr*g/d, or with
    momentum buf = momentum*buf + g/d and p -= lr*buf."""

    def __init__(
        self,
        params,
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0,
        momentum=0,
        centered=False,
        capturable=False,
        foreach=None,
        maximize=False,
        differentiable=False,
    ):
        _check(lr >= 0, "learning rate", lr)
        _check(eps >= 0, "epsilon value", eps)
        _check(momentum >= 0, "momentum value", momentum)
        _check(weight_decay >= 0, "weight_decay value", weight_decay)
        _check(alpha >= 0, "alpha value", alpha)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        alpha, momentum = group["alpha"], group["momentum"]
        if not state:
            names = ["square_avg"] + ["momentum_buffer"] * (momentum > 0)
            names += ["grad_avg"] * group["centered"]
            _init_state(state, p, names)
        state["step"]._data += 1
        g = _with_weight_decay(p, g, group)
        v = state["square_avg"]._data
        v *= alpha
        v += (1 - alpha) * g * g
        if group["centered"]:
            a = state["grad_avg"]._data
            a += (1 - alpha) * (g - a)  # torch's grad_avg.lerp_(grad, 1 - alpha)
            v = v - a * a
        denom = np.sqrt(v) + group["eps"]
        if momentum > 0:
            buf = state["momentum_buffer"]._data
            buf *= momentum
            buf += g / denom
            p -= group["lr"] * buf
        else:
            p -= group["lr"] * (g / denom)


class Adagrad(Optimizer):
    """g = grad + weight_decay*p; sum += g^2; p -= lr/(1 + (t-1)*lr_decay) * g /
    (sqrt(sum) + eps). As in torch, each parameter's state exists as soon as the
    parameter is added."""

    def __init__(
        self,
        params,
        lr=1e-2,
        lr_decay=0,
        weight_decay=0,
        initial_accumulator_value=0,
        eps=1e-10,
        foreach=None,
        *,
        maximize=False,
        differentiable=False,
        fused=None,
    ):
        _check(lr >= 0, "learning rate", lr)
        _check(lr_decay >= 0, "lr_decay value", lr_decay)
        _check(weight_decay >= 0, "weight_decay value", weight_decay)
        _check(
            initial_accumulator_value >= 0,
            "initial_accumulator_value value",
            initial_accumulator_value,
        )
        _check(eps >= 0, "epsilon value", eps)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for p in group["params"]:
            init = group["initial_accumulator_value"]
            _init_state(self.state[p], p._data, ["sum"], init)

    def _update(self, p, g, state, group):
        state["step"]._data += 1
        t = state["step"].item()
        g = _with_weight_decay(p, g, group)
        clr = group["lr"] / (1 + (t - 1) * group["lr_decay"])
        total = state["sum"]._data
        total += g * g
        p -= clr * g / (np.sqrt(total) + group["eps"])


class Adadelta(Optimizer):
    """g = grad + weight_decay*p; v = rho*v + (1-rho)*g^2; delta = sqrt(u + eps) /
    sqrt(v + eps) * g; u = rho*u + (1-rho)*delta^2; p -= lr*delta."""

    def __init__(
        self,
        params,
        lr=1.0,
        rho=0.9,
        eps=1e-6,
        weight_decay=0,
        foreach=None,
        *,
        capturable=False,
        maximize=False,
        differentiable=False,
    ):
        _check(lr >= 0, "learning rate", lr)
        _check(0 <= rho <= 1, "rho value", rho)
        _check(eps >= 0, "epsilon value", eps)
        _check(weight_decay >= 0, "weight_decay value", weight_decay)
        defaults = dict(
            lr=lr,
            rho=rho,
            eps=eps,
            weight_decay=weight_decay,
            maximize=maximize,
            capturable=capturable,
            foreach=foreach,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        rho, eps = group["rho"], group["eps"]
        if not state:
            _init_state(state, p, ["square_avg", "acc_delta"])
        state["step"]._data += 1
        g = _with_weight_decay(p, g, group)
        v, u = state["square_avg"]._data, state["acc_delta"]._data
        v *= rho
        v += (1 - rho) * g * g
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u *= rho
        u += (1 - rho) * delta * delta
        p -= group["lr"] * delta


class LBFGS(Optimizer):
    """L-BFGS, torch's algorithm step by step: each step(closure) runs up to
    max_iter iterations, each a move of step t along the direction the last
    history_size curvature pairs give (the two-loop recursion), the first t =
    lr * min(1, 1/|g|_1), then lr, or with line_search_fn="strong_wolfe" the t
    torch's line search picks (_strong_wolfe). The state persists across steps, as
    torch's."""

    def __init__(
        self,
        params,
        lr=1,
        max_iter=20,
        max_eval=None,
        tolerance_grad=1e-7,
        tolerance_change=1e-9,
        history_size=100,
        line_search_fn=None,
    ):
        _check(lr >= 0, "learning rate", lr)
        defaults = dict(
            lr=lr,
            max_iter=max_iter,
            max_eval=max_iter * 5 // 4 if max_eval is None else max_eval,
            tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change,
            history_size=history_size,
            line_search_fn=line_search_fn,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                "LBFGS doesn't support per-parameter options (parameter groups)"
            )

    def _flat_grad(self):
        return np.concatenate(
            [
                np.zeros(p.numel()) if p.grad is None else p.grad._data.ravel()
                for p in self.param_groups[0]["params"]
            ]
        )

    def _move(self, t, d):
        """Each parameter += t * its part of d, in place."""
        start = 0
        for p in self.param_groups[0]["params"]:
            n = p.numel()
            p._data += (t * d[start : start + n]).reshape(p.shape).astype(p.dtype)
            p._counter.value += 1
            start += n

    def _evaluate(self, closure, t, d):
        """(loss, flat gradient) at the parameters moved by t * d; the parameters
        are then put back (torch's _directional_evaluate)."""
        x = [p._data.copy() for p in self.param_groups[0]["params"]]
        self._move(t, d)
        with enable_grad():
            loss = float(closure())
        g = self._flat_grad()
        for p, saved in zip(self.param_groups[0]["params"], x, strict=True):
            p._data[...] = saved
            p._counter.value += 1
        return loss, g

    def step(self, closure):
        """Iterate as above and return the loss closure() gave first."""
        group = self.param_groups[0]
        lr, history_size = group["lr"], group["history_size"]
        tol_change = group["tolerance_change"]
        state = self.state[group["params"][0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        with enable_grad():
            orig_loss = closure()
        loss, evals = float(orig_loss), 1
        state["func_evals"] += 1
        g = self._flat_grad()
        if np.abs(g).max() <= group["tolerance_grad"]:
            return orig_loss
        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps = state.get("old_dirs"), state.get("old_stps")
        ro, h_diag = state.get("ro"), state.get("H_diag")
        prev_g, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        n_iter = 0
        while n_iter < group["max_iter"]:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d, old_dirs, old_stps, ro, h_diag = -g, [], [], [], 1
            else:
                y, s = g - prev_g, d * t
                ys = y @ s
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        del old_dirs[0], old_stps[0], ro[0]
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / (y @ y)
                al = [0.0] * len(old_dirs)
                q = -g
                for i in reversed(range(len(old_dirs))):
                    al[i] = (old_stps[i] @ q) * ro[i]
                    q = q - al[i] * old_dirs[i]
                d = q * h_diag
                for i in range(len(old_dirs)):
                    d = d + (al[i] - (old_dirs[i] @ d) * ro[i]) * old_stps[i]
            prev_g, prev_loss = g.copy(), loss
            t = min(1.0, 1.0 / np.abs(g).sum()) * lr if state["n_iter"] == 1 else lr
            gtd = g @ d
            if gtd > -tol_change:
                break
            if group["line_search_fn"] is not None:
                if group["line_search_fn"] != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                loss, g, t, ls_evals = _strong_wolfe(
                    lambda t, d: self._evaluate(closure, t, d),
                    t,
                    d,
                    loss,
                    g,
                    gtd,
                    max_ls=group["max_eval"] - evals,
                )
                self._move(t, d)
                evals += ls_evals
                state["func_evals"] += ls_evals
            else:
                self._move(t, d)
                if n_iter != group["max_iter"]:
                    with enable_grad():
                        loss = float(closure())
                    g = self._flat_grad()
                    evals += 1
                    state["func_evals"] += 1
            if (
                n_iter == group["max_iter"]
                or evals >= group["max_eval"]
                or np.abs(g).max() <= group["tolerance_grad"]
                or np.abs(d * t).max() <= tol_change
                or abs(loss - prev_loss) < tol_change
            ):
                break
        state.update(
            d=d,
            t=t,
            old_dirs=old_dirs,
            old_stps=old_stps,
            ro=ro,
            H_diag=h_diag,
            prev_flat_grad=prev_g,
            prev_loss=prev_loss,
        )
        return orig_loss


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimizer of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2,
    clamped to `bounds` (default: between x1 and x2); their midpoint if the cubic
    has no minimum. torch's, line by line."""
    xmin_bound, xmax_bound = bounds or ((x1, x2) if x1 <= x2 else (x2, x1))
    with np.errstate(all="ignore"):  # a collapsed bracket gives nan, as in torch
        d1 = g1 + g2 - 3 * (f1 - f2) / np.float64(x1 - x2)
        d2_square = d1**2 - g1 * g2
        if d2_square >= 0:
            d2 = np.sqrt(d2_square)
            if x1 <= x2:
                min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
            else:
                min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
            return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(
    obj_func, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25
):
    """torch's line search along d from loss f (gradient g, slope gtd): a step t
    meeting the strong Wolfe conditions (sufficient decrease c1, curvature c2),
    found by bracketing then zooming with cubic interpolation; obj_func(t, d) is
    (loss, gradient) there. Returns (loss, gradient, t, evaluations)."""
    d_norm = np.abs(d).max()
    f_new, g_new = obj_func(t, d)
    ls_func_evals = 1
    gtd_new = g_new @ d
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:  # bracketing
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new], [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(
            t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step)
        )
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
        f_new, g_new = obj_func(t, d)
        ls_func_evals += 1
        gtd_new = g_new @ d
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    insuf_progress = False  # zoom: shrink the bracket until the conditions hold
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(
            bracket[0],
            bracket_f[0],
            bracket_gtd[0],
            bracket[1],
            bracket_f[1],
            bracket_gtd[1],
        )
        # a t too near the bracket's ends makes too little progress: move it in
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(t, d)
        ls_func_evals += 1
        gtd_new = g_new @ d
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new, gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new, gtd_new
    return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_func_evals
