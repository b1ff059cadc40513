"""torch.utils: only what training scripts reach, torch.utils.data and checkpoint."""

from . import checkpoint, data

__all__ = ["checkpoint", "data"]
