"""torch.f(..., out=t): the torch-level functions' out= keyword, which the Tensor
methods they are made from do not take."""

import warnings

import numpy as np

from . import autograd
from .dtypes import scalar_name
from .tensor import Tensor


def with_out(fn):
    """fn taking out=: its result written into out (resized if its shape differs,
    as torch does, with torch's warning unless out was empty), and out returned."""

    def wrapper(*args, out=None, **kwargs):
        if out is None:
            return fn(*args, **kwargs)
        tensors = [a for a in (*args, out) if isinstance(a, Tensor)]
        if autograd.recording() and any(t.requires_grad for t in tensors):
            raise RuntimeError(
                f"{fn.__name__}(): functions with out=... arguments don't support "
                "automatic differentiation, but one of the arguments requires grad."
            )
        result = fn(*args, **kwargs)._data
        if not np.can_cast(result.dtype, out.dtype, "same_kind"):
            raise RuntimeError(
                f"result type {scalar_name(result.dtype)} can't be cast to the "
                f"desired output type {scalar_name(out.dtype)}"
            )
        if out.shape == result.shape:
            out.copy_(result)  # counted as an in-place write, as torch counts it
        else:
            if out.numel():
                warnings.warn(
                    f"An output with one or more elements was resized since it had "
                    f"shape {list(out.shape)}, which does not match the required "
                    f"output shape {list(result.shape)}.",
                    UserWarning,
                    stacklevel=2,
                )
            out.data = result.astype(out.dtype)
        return out

    wrapper.__name__, wrapper.__qualname__ = fn.__name__, fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    return wrapper
