"""torch.nn.utils: gradient clipping, in place on the parameters' .grad tensors, and
the parameters as one vector; nn.utils.rnn is nn_utils_rnn.py, nn.utils.parametrize
and nn.utils.parametrizations are nn_parametrize.py and nn_parametrizations.py."""

import math
import sys

import numpy as np

from . import nn_utils_rnn
from .functions import cat
from .tensor import Tensor

# `import symgrad.tape.nn.utils.rnn` and `nn.utils.rnn.pad_sequence` work, as in torch.
sys.modules[f"{__package__}.nn.utils.rnn"] = rnn = nn_utils_rnn


def __getattr__(name):
    """parametrize and parametrizations, which build on nn.Module: imported when
    first asked for (nn imports this module)."""
    if name in ("parametrize", "parametrizations"):
        from . import nn_parametrizations, nn_parametrize

        module = {"parametrize": nn_parametrize}.get(name, nn_parametrizations)
        sys.modules[f"{__package__}.nn.utils.{name}"] = module
        return module
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


def _grads(parameters):
    parameters = [parameters] if isinstance(parameters, Tensor) else parameters
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(
    parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None
):
    """Scale every gradient by max_norm / (total_norm + 1e-6) where that is below 1,
    total_norm being the norm of all the gradients as one vector; return it.
    foreach only chooses torch's implementation, as for the optimizers."""
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


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element to [-clip_value, clip_value]."""
    for g in _grads(parameters):
        g.clamp_(-clip_value, clip_value)


def parameters_to_vector(parameters):
    """All parameters flattened and joined, in order (recorded: a view of each)."""
    return cat([p.view(-1) for p in parameters])


def vector_to_parameters(vec, parameters):
    """Each parameter's .data set to its slice of vec, in order (sharing vec's
    memory, as in torch)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {type(vec).__name__}")
    start = 0
    for p in parameters:
        n = p.numel()
        p.data = vec[start : start + n].view_as(p).data
        start += n
