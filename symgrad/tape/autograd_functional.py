"""torch.autograd.functional: vjp, jvp, jacobian, hessian, hvp and vhp of a function
of tensors, each built on autograd.grad (jvp, hessian, hvp and vhp by double
backward).

As in torch, the inputs are detached copies that require grad, an input the
function does not use gets zeros, and the results are detached unless
create_graph=True."""

from .autograd import grad
from .creation import zeros_like
from .functions import stack
from .tensor import Tensor


def _as_tuple(value):
    """(value as a tuple, whether it was a single tensor)."""
    return ((value,), True) if isinstance(value, Tensor) else (tuple(value), False)


def _prepare(inputs, strict):
    """Detached copies of the inputs that require grad (strict mode, which raises
    where an output is independent of an input, is not there)."""
    if strict:
        raise NotImplementedError("autograd.functional: strict=True in symgrad.tape")
    inputs, single = _as_tuple(inputs)
    return tuple(x.detach().requires_grad_(True) for x in inputs), single


def _grads(outputs, inputs, grad_outputs, create_graph):
    """d(outputs . grad_outputs)/d(inputs), zeros where an input is unused."""
    if not any(o.requires_grad for o in outputs):  # func ignores every input
        return tuple(zeros_like(x) for x in inputs)
    grads = grad(
        [o for o in outputs if o.requires_grad],
        inputs,
        [g for o, g in zip(outputs, grad_outputs, strict=True) if o.requires_grad],
        retain_graph=True,
        create_graph=create_graph,
        allow_unused=True,
    )
    return tuple(
        zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)
    )


def _result(values, single, create_graph):
    values = tuple(v if create_graph else v.detach() for v in values)
    return values[0] if single else values


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): v defaults to 1 for a one-element output."""
    inputs, single = _prepare(inputs, strict)
    outputs, out_single = _as_tuple(func(*inputs))
    if v is not None:
        v = _as_tuple(v)[0]
    elif len(outputs) == 1 and outputs[0].numel() == 1:
        v = (outputs[0].new_ones(outputs[0].shape),)
    else:
        raise RuntimeError(
            "The vector v can only be None if the user-provided function returns a "
            "single Tensor with a single element."
        )
    grads = _grads(outputs, inputs, v, create_graph)
    return _result(outputs, out_single, create_graph), _result(
        grads, single, create_graph
    )


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v) by torch's double-backward trick: u^T J is linear in u, so
    J v is the gradient of (u^T J) v with respect to u."""
    inputs, single = _prepare(inputs, strict)
    outputs, out_single = _as_tuple(func(*inputs))
    if v is not None:
        v = _as_tuple(v)[0]
    elif len(inputs) == 1 and inputs[0].numel() == 1:
        v = (inputs[0].new_ones(inputs[0].shape),)
    else:
        raise RuntimeError(
            "The vector v can only be None if the input to the user-provided function "
            "is a single Tensor with a single element."
        )
    us = tuple(zeros_like(o).requires_grad_(True) for o in outputs)
    products = _grads(_grads(outputs, inputs, us, True), us, v, create_graph)
    return _result(outputs, out_single, create_graph), _result(
        products, out_single, create_graph
    )


def _jacobian_rows(output, inputs, create_graph):
    """d output / d input for each input, of shape output.shape + input.shape."""
    flat = output.reshape(-1)
    rows = [
        _grads((flat[k],), inputs, (flat.new_ones(()),), create_graph)
        for k in range(flat.shape[0])
    ]
    return tuple(
        (
            stack([row[j] for row in rows]) if rows else x.new_zeros((0, *x.shape))
        ).reshape(*output.shape, *x.shape)
        for j, x in enumerate(inputs)
    )


def jacobian(
    func,
    inputs,
    create_graph=False,
    strict=False,
    vectorize=False,
    strategy="reverse-mode",
):
    """The Jacobian of each output with respect to each input: a Tensor for one of
    each, a tuple over the one that is a tuple, else a tuple of tuples. vectorize
    and strategy change only how torch computes it."""
    inputs, single = _prepare(inputs, strict)
    outputs, out_single = _as_tuple(func(*inputs))
    per_output = tuple(
        _result(_jacobian_rows(o, inputs, create_graph), single, create_graph)
        for o in outputs
    )
    return per_output[0] if out_single else per_output


def hessian(
    func,
    inputs,
    create_graph=False,
    strict=False,
    vectorize=False,
    outer_jacobian_strategy="reverse-mode",
):
    """The Hessian of a function returning one element: the Jacobian of its
    gradient, which is recorded (create_graph=True) to be differentiated again."""
    inputs, single = _prepare(inputs, strict)

    def gradient(*xs):
        out = func(*xs)
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise RuntimeError(
                "The Tensor returned by the function given to hessian should contain "
                "a single element"
            )
        grads = _grads((out.reshape(()),), xs, (out.new_ones(()),), True)
        return grads[0] if single else grads

    return jacobian(gradient, inputs[0] if single else inputs, create_graph)


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T H) for a function returning one element."""
    inputs, single = _prepare(inputs, strict)
    out = func(*inputs)
    gradient = _grads((out,), inputs, (out.new_ones(out.shape),), True)
    v = _as_tuple(v)[0]
    products = _grads(gradient, inputs, v, create_graph)
    return _result((out,), True, create_graph), _result(products, single, create_graph)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v): H is symmetric, so this is vhp."""
    return vhp(func, inputs, v, create_graph, strict)
