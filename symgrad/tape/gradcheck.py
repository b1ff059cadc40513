"""torch.autograd.gradcheck: the tape's gradient against central differences.

Each Jacobian column comes from backward passes seeded with one-hot gradients, each
row from perturbing one input element by +-eps, so a wrong backward rule (a custom
Function's, say) shows as a mismatch at a named output, input and element."""

import numpy as np

from . import autograd
from .tensor import Tensor


class GradcheckError(RuntimeError):
    """torch.autograd.gradcheck.GradcheckError: the Jacobians disagree."""


def _outputs(func, inputs):
    """func's float outputs: the others have no gradient to check."""
    out = func(*inputs)
    return [
        o
        for o in (out if isinstance(out, tuple | list) else (out,))
        if o.dtype.kind == "f"
    ]


def _numerical(func, inputs, i, eps):
    """d(outputs)/d(inputs[i]) by central differences: one (out numel, in numel)
    array per output."""
    x = inputs[i]
    base = x.detach().numpy().astype(np.float64)
    columns = []
    for k in range(base.size):
        values = []
        for step in (eps, -eps):
            moved = base.copy()
            moved.flat[k] += step
            args = list(inputs)
            args[i] = Tensor._wrap(moved.astype(x.dtype))
            with autograd.no_grad():
                values.append(
                    [o.detach().numpy().ravel() for o in _outputs(func, args)]
                )
        columns.append([(p - m) / (2 * eps) for p, m in zip(*values, strict=True)])
    return [np.stack(col, axis=1) for col in zip(*columns, strict=True)]


def _analytical(outputs, x):
    """d(outputs)/d(x) from the tape: one backward pass per output element."""
    jacobians = []
    for o in outputs:
        if not o.requires_grad:  # does not depend on x: a zero Jacobian
            jacobians.append(np.zeros((o.numel(), x.numel())))
            continue
        rows = []
        for j in range(o.numel()):
            seed = np.zeros(o.shape, o.dtype)
            seed.flat[j] = 1
            (g,) = autograd.grad(
                o, x, Tensor._wrap(seed), retain_graph=True, allow_unused=True
            )
            rows.append(np.zeros(x.numel()) if g is None else g.numpy().ravel())
        jacobians.append(np.array(rows).reshape(o.numel(), x.numel()))
    return jacobians


def gradcheck(
    func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, **_
):
    """True if func's tape gradients match its numerical ones for every input that
    requires grad; else GradcheckError, or False if raise_exception=False. The
    options of torch's further checks (nondet_tol, check_batched_grad, ...) are
    accepted and those checks not run."""
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    outputs = _outputs(func, inputs)
    for i, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        numerical = _numerical(func, inputs, i, eps)
        analytical = _analytical(outputs, x)
        for o, (a, n) in enumerate(zip(analytical, numerical, strict=True)):
            if not np.allclose(a, n, rtol, atol):
                if not raise_exception:
                    return False
                raise GradcheckError(
                    f"Jacobian mismatch for output {o} with respect to input {i},\n"
                    f"numerical:{n}\nanalytical:{a}\n"
                )
    return True
