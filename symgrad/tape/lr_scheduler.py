"""torch.optim.lr_scheduler: schedules that set each param group's "lr" on every
step(). Like torch's, most compute the new rate from the current one (so a rate
changed by hand between steps carries on), and the constructor takes step 0.
"""

import math


class LRScheduler:
    """Base class: step() advances last_epoch and sets the groups' rates to
    get_lr(); base_lrs are the rates the schedule started from."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self.step()

    def get_lr(self):
        """The rates for self.last_epoch, given the current ones."""
        raise NotImplementedError

    def _current(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def step(self):
        self.last_epoch += 1
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        self.__dict__.update(state_dict)


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(epoch), one function or one per param group."""

    def __init__(self, optimizer, lr_lambda):
        groups = len(optimizer.param_groups)
        self.lr_lambdas = (
            list(lr_lambda)
            if isinstance(lr_lambda, list | tuple)
            else [lr_lambda] * groups
        )
        if len(self.lr_lambdas) != groups:
            raise ValueError(
                f"Expected {groups} lr_lambdas, but got {len(self.lr_lambdas)}"
            )
        super().__init__(optimizer)

    def get_lr(self):
        return [
            base * f(self.last_epoch)
            for base, f in zip(self.base_lrs, self.lr_lambdas, strict=True)
        ]


class StepLR(LRScheduler):
    """lr *= gamma every step_size epochs."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size:
            return self._current()
        return [lr * self.gamma for lr in self._current()]


class MultiStepLR(LRScheduler):
    """lr *= gamma at each epoch listed in milestones (twice if listed twice)."""

    def __init__(self, optimizer, milestones, gamma=0.1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer)

    def get_lr(self):
        times = self.milestones.count(self.last_epoch)
        return [lr * self.gamma**times for lr in self._current()]


class ExponentialLR(LRScheduler):
    """lr *= gamma every epoch."""

    def __init__(self, optimizer, gamma):
        self.gamma = gamma
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch == 0:
            return self._current()
        return [lr * self.gamma for lr in self._current()]


class CosineAnnealingLR(LRScheduler):
    """lr follows eta_min + (base_lr - eta_min) (1 + cos(pi epoch / T_max)) / 2,
    each rate derived from the previous one with torch's recurrence, climbing back
    after T_max."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer)

    def get_lr(self):
        t, n, low = self.last_epoch, self.T_max, self.eta_min
        if t == 0:
            return self._current()
        if (t - 1 - n) % (2 * n) == 0:  # the bottom, where the recurrence is 0/0
            return [
                lr + (base - low) * (1 - math.cos(math.pi / n)) / 2
                for lr, base in zip(self._current(), self.base_lrs, strict=True)
            ]
        ratio = (1 + math.cos(math.pi * t / n)) / (1 + math.cos(math.pi * (t - 1) / n))
        return [ratio * (lr - low) + low for lr in self._current()]
