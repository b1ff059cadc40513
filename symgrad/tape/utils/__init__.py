"""torch.utils: only what training scripts reach, torch.utils.data."""

from . import data

__all__ = ["data"]
