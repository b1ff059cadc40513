"""torch.cuda.amp: torch's deprecated CUDA spellings of torch.amp's GradScaler and
autocast. There is no GPU here, so, as torch's without one, they warn and disable
themselves (a disabled GradScaler is a pass-through)."""

import warnings

from . import amp
from .dtypes import float16


def _deprecated(name):
    warnings.warn(
        f"`torch.cuda.amp.{name}(args...)` is deprecated. Please use "
        f"`torch.amp.{name}('cuda', args...)` instead.",
        FutureWarning,
        stacklevel=3,
    )


class GradScaler(amp.GradScaler):
    def __init__(
        self,
        init_scale=2.0**16,
        growth_factor=2.0,
        backoff_factor=0.5,
        growth_interval=2000,
        enabled=True,
    ):
        _deprecated("GradScaler")
        super().__init__(
            "cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled
        )


class autocast(amp.autocast):
    def __init__(self, enabled=True, dtype=float16, cache_enabled=True):
        _deprecated("autocast")
        super().__init__("cuda", dtype, enabled, cache_enabled)
