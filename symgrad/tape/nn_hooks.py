"""Module full backward hooks, as torch runs them: the module's tensor inputs and
its outputs pass through identity Functions (BackwardHookFunction), whose backward
passes run the pre-hooks on the gradients of the outputs, record them, and then,
once the gradients of the inputs are known, call each hook(module, grad_input,
grad_output)."""

from .function import Function
from .tensor import Tensor


class BackwardHookFunction(Function):
    """The identity on tensors, whose backward hands the gradients to `callback`
    and passes on what it returns. One tensor is returned alone, so that its
    grad_fn is named as torch's."""

    @staticmethod
    def forward(ctx, callback, *tensors):
        ctx.callback = callback
        return tensors[0] if len(tensors) == 1 else tensors

    @staticmethod
    def backward(ctx, *grads):
        return (None, *ctx.callback(grads))


def call_with_backward_hooks(module, forward, args, kwargs):
    """forward(*args, **kwargs) (the module's forward and forward hooks) with the
    module's full backward pre-hooks and hooks run in its backward pass. Inputs
    that do not require grad get None in grad_input, as in torch."""
    places = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
    needs = [args[i].requires_grad for i in places]
    grad_output = []

    def run_hooks(grads):
        grad_input = tuple(g if n else None for g, n in zip(grads, needs, strict=True))
        for hook in list(module._backward_hooks.values()):
            replaced = hook(module, grad_input, tuple(grad_output))
            if replaced is not None:
                if len(replaced) != len(grad_input):
                    raise RuntimeError(
                        f"Backward hook returned an invalid number of grad_input, "
                        f"got {len(replaced)}, but expected {len(grad_input)}"
                    )
                grad_input = tuple(replaced)
        return grad_input

    def at_outputs(grads):
        for hook in list(module._backward_pre_hooks.values()):
            replaced = hook(module, tuple(grads))
            if replaced is not None:
                if len(replaced) != len(grads):
                    raise RuntimeError(
                        "Backward pre hook returned an invalid number of grad_output, "
                        f"got {len(replaced)}, but expected {len(grads)}"
                    )
                grads = tuple(replaced)
        grad_output[:] = grads
        if not any(needs):  # no input gradient will come: the hooks run now
            run_hooks([None] * len(places))
        return grads

    if any(needs):
        args = list(args)
        wrapped = _identity(run_hooks, [args[i] for i in places])
        for i, t in zip(places, wrapped, strict=True):
            args[i] = t
    out = forward(*args, **kwargs)
    several = isinstance(out, tuple)
    outs = out if several else (out,)
    if not all(isinstance(o, Tensor) for o in outs) or not any(
        o.requires_grad for o in outs
    ):
        return out
    hooked = _identity(at_outputs, outs)
    return hooked if several else hooked[0]


class RemovableHandle:
    """torch.utils.hooks.RemovableHandle for a module's hooks: remove() takes its
    id out of the hook dict and the dicts marking the hook's options."""

    next_id = 0

    def __init__(self, *dicts):
        self.id, RemovableHandle.next_id = RemovableHandle.next_id, self.next_id + 1
        self._dicts = dicts

    def remove(self):
        for d in self._dicts:
            d.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.remove()


def _identity(callback, tensors):
    out = BackwardHookFunction.apply(callback, *tensors)
    return out if isinstance(out, tuple) else (out,)
