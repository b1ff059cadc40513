"""torch.nn.utils: gradient clipping, in place on the parameters' .grad tensors."""

import math

import numpy as np

from .tensor import Tensor


def _grads(parameters):
    parameters = [parameters] if isinstance(parameters, Tensor) else parameters
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale every gradient by max_norm / (total_norm + 1e-6) where that is below 1,
    total_norm being the norm of all the gradients as one vector; return it."""
    grads = _grads(parameters)
    if not grads:
        return Tensor._wrap(np.zeros(()))
    norm_type = float(norm_type)
    norms = [np.linalg.norm(g._data.ravel(), norm_type) for g in grads]
    total = np.linalg.norm(norms, norm_type).astype(grads[0].dtype)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    scale = min(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g.mul_(scale)
    return Tensor._wrap(total)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value]."""
    for g in _grads(parameters):
        g.clamp_(-clip_value, clip_value)
