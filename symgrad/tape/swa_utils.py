"""torch.optim.swa_utils: a running average of a model's weights (SWA's equal
average or an EMA), the SWALR schedule that anneals to a constant SWA rate, and
update_bn to recompute BatchNorm statistics for the averaged weights."""

import copy
import math

from .autograd import no_grad
from .creation import tensor
from .dtypes import int64
from .lr_scheduler import LRScheduler, _per_group
from .nn import BatchNorm1d, Module


def get_ema_multi_avg_fn(decay=0.999):
    """An update of every averaged tensor at once: ema.lerp_(current, 1 - decay)."""

    def ema_update(ema_param_list, current_param_list, _):
        with no_grad():
            for p_ema, p_model in zip(ema_param_list, current_param_list, strict=True):
                p_ema.lerp_(p_model, 1 - decay)

    return ema_update


def get_swa_multi_avg_fn():
    """The equal average of every averaged tensor at once (lerp_ by 1 / (n + 1))."""

    def swa_update(averaged_param_list, current_param_list, num_averaged):
        with no_grad():
            for p_avg, p_model in zip(
                averaged_param_list, current_param_list, strict=True
            ):
                p_avg.lerp_(p_model, 1 / (num_averaged + 1))

    return swa_update


def get_ema_avg_fn(decay=0.999):
    def ema_update(ema_param, current_param, num_averaged):
        with no_grad():
            return decay * ema_param + (1 - decay) * current_param

    return ema_update


def get_swa_avg_fn():
    def swa_update(averaged_param, current_param, num_averaged):
        with no_grad():
            return averaged_param + (current_param - averaged_param) / (
                num_averaged + 1
            )

    return swa_update


class AveragedModel(Module):
    """A deep copy of `model` whose parameters (and buffers, if use_buffers)
    update_parameters averages with the model's: by avg_fn one tensor at a time,
    by multi_avg_fn all at once, or else equally (SWA); n_averaged counts them."""

    def __init__(
        self, model, device=None, avg_fn=None, multi_avg_fn=None, use_buffers=False
    ):
        super().__init__()
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError(
                "Only one of avg_fn and multi_avg_fn should be provided"
            )
        self.module = copy.deepcopy(model)
        self.register_buffer("n_averaged", tensor(0, dtype=int64))
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def _averaged(self, module):
        tensors = list(module.parameters())
        return tensors + list(module.buffers()) if self.use_buffers else tensors

    def update_parameters(self, model):
        """The first call copies the model; later ones average it in (CPU torch
        runs the default through get_swa_avg_fn, one tensor at a time)."""
        mine = [p.detach() for p in self._averaged(self.module)]
        theirs = [p.detach() for p in self._averaged(model)]
        with no_grad():
            if self.n_averaged == 0:
                for p_avg, p_model in zip(mine, theirs, strict=True):
                    p_avg.copy_(p_model)
            elif self.multi_avg_fn is not None:
                self.multi_avg_fn(mine, theirs, self.n_averaged)
            else:
                avg_fn = self.avg_fn or get_swa_avg_fn()
                for p_avg, p_model in zip(mine, theirs, strict=True):
                    p_avg.copy_(avg_fn(p_avg, p_model, self.n_averaged))
            if not self.use_buffers:  # the buffers follow the model's
                for b_swa, b_model in zip(
                    self.module.buffers(), model.buffers(), strict=True
                ):
                    b_swa.copy_(b_model.detach())
            self.n_averaged += 1


def update_bn(loader, model, device=None):
    """One pass over `loader` (its batches, or their first items) in training mode,
    recomputing every BatchNorm's running statistics as a cumulative average."""
    momenta = {}
    for module in model.modules():
        if isinstance(module, BatchNorm1d):
            module.reset_running_stats()
            momenta[module] = module.momentum
    if not momenta:
        return
    was_training = model.training
    model.train()
    for module in momenta:
        module.momentum = None
    with no_grad():
        for input in loader:
            if isinstance(input, list | tuple):
                input = input[0]
            model(input)
    for module, momentum in momenta.items():
        module.momentum = momentum
    model.train(was_training)


class SWALR(LRScheduler):
    """Anneal each group's rate from its current value to swa_lr over
    anneal_epochs steps (by a cosine or linearly), then hold it."""

    def __init__(
        self, optimizer, swa_lr, anneal_epochs=10, anneal_strategy="cos", last_epoch=-1
    ):
        for lr, group in zip(
            _per_group("swa_lr", optimizer, swa_lr), optimizer.param_groups, strict=True
        ):
            group["swa_lr"] = lr
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                "anneal_strategy must by one of 'cos' or 'linear', instead got "
                f"{anneal_strategy}"
            )
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(
                f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}"
            )
        self.anneal_strategy = anneal_strategy
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    def _anneal(self, t):
        if self.anneal_strategy == "linear":
            return t
        return (1 - math.cos(math.pi * t)) / 2

    def get_lr(self):
        """torch's rule: undo the last step's mix to recover the rate being
        annealed from, then mix it with swa_lr at the new step."""
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        span = max(1, self.anneal_epochs)
        prev_alpha = self._anneal(max(0, min(1, (step - 1) / span)))
        alpha = self._anneal(max(0, min(1, step / span)))
        lrs = []
        for group in self.optimizer.param_groups:
            swa_lr = group["swa_lr"]
            if prev_alpha == 1:
                start = swa_lr
            else:
                start = (group["lr"] - prev_alpha * swa_lr) / (1 - prev_alpha)
            lrs.append(swa_lr * alpha + start * (1 - alpha))
        return lrs
