"""torch.autograd.Function: an op whose forward and backward the user writes with
Tensor ops, recorded as one node of the graph."""

from .tensor import Tensor


class FunctionCtx:
    """The `ctx` that forward and backward share: save_for_backward() keeps tensors
    (their in-place changes are checked, as for built-in ops), and any other
    attribute can be set on it."""

    def __init__(self, args):
        self.needs_input_grad = tuple(
            isinstance(a, Tensor) and a.requires_grad for a in args
        )
        self.saved_tensors = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


class Function:
    """Subclass with static forward(ctx, *args) and backward(ctx, *grads) (one
    gradient per argument of forward, None for non-tensors), then call
    apply(*args). forward runs without recording; backward runs recorded under
    create_graph=True, so a backward written in differentiable ops can be
    differentiated again."""

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError(
            "You must implement the forward function for custom autograd.Function."
        )

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError(
            "You must implement either the backward or vjp method for your custom "
            "autograd.Function to use it with backward mode AD."
        )

    @classmethod
    def apply(cls, *args):
        from .autograd import no_grad  # here: autograd offers this class

        ctx = FunctionCtx(args)
        with no_grad():
            out = cls.forward(ctx, *args)
        if not isinstance(out, Tensor):
            raise NotImplementedError(
                "autograd.Function: symgrad.tape supports one Tensor output"
            )
        name = f"{cls.__name__}Backward"
        tensor_args = [isinstance(a, Tensor) for a in args]

        def rule(xp, g, *saved):
            grads = cls.backward(ctx, g if xp.records else Tensor._wrap(g))
            grads = grads if isinstance(grads, tuple) else (grads,)
            if len(grads) != len(args):
                raise RuntimeError(
                    f"function {name} returned an incorrect number of gradients "
                    f"(expected {len(args)}, got {len(grads)})"
                )
            return tuple(
                None if grad is None else grad if xp.records else grad._data
                for grad, is_tensor in zip(grads, tensor_args, strict=True)
                if is_tensor
            )

        inputs = [a for a in args if isinstance(a, Tensor)]
        saves = ctx.saved_tensors or False
        return Tensor._result(out._data, inputs, rule, name, saves)
