"""torch.autograd.Function: an op whose forward and backward the user writes with
Tensor ops, recorded as one node of the graph."""

from . import autograd
from .arithmetic import broadcast_shape, unbroadcast
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
        self.materialize_grads = True
        self._non_differentiable = ()

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def mark_non_differentiable(self, *tensors):
        """These outputs of forward are returned not requiring grad."""
        self._non_differentiable = tensors

    def set_materialize_grads(self, value):
        """With one output its gradient is never None, so only the flag is kept."""
        self.materialize_grads = value


class BackwardCFunction(autograd.Node):
    """The node of a Function's output: in torch it is the ctx itself, so ctx's
    attributes (saved_tensors, needs_input_grad, ...) read through it."""

    def __init__(self, ctx, *args):
        super().__init__(*args)
        self._ctx = ctx

    def __getattr__(self, name):
        if name.startswith("_"):  # not set yet, or not there: no recursion
            raise AttributeError(name)
        return getattr(self._ctx, name)


def once_differentiable(backward):
    """torch.autograd.function.once_differentiable for a Function's backward: it
    runs without recording, and create_graph through it raises (Node.apply)."""

    def wrapper(ctx, *grads):
        with autograd.no_grad():
            return backward(ctx, *grads)

    wrapper.once_differentiable = True
    return wrapper


def _positional(forward, args, kwargs):
    """apply's arguments as forward's positional ones after ctx, as torch binds
    them (its defaults fill the gaps), so that each has its place in backward's
    gradients."""
    code, defaults = forward.__code__, forward.__defaults__ or ()
    names = code.co_varnames[1 : code.co_argcount]
    defaults = dict(zip(names[len(names) - len(defaults) :], defaults, strict=True))
    for key in kwargs:
        if key not in names[len(args) :]:
            raise TypeError(f"forward() got an unexpected keyword argument '{key}'")
    rest = names[len(args) : max([names.index(k) + 1 for k in kwargs], default=0)]
    for key in rest:
        if key not in kwargs and key not in defaults:
            raise TypeError(
                f"forward() missing required argument: '{key}' (position "
                f"{names.index(key)})"
            )
    return (*args, *(kwargs[k] if k in kwargs else defaults[k] for k in rest))


def _checked(name, grads, args):
    """backward's results, one per argument of forward, as torch checks them: None
    at a non-tensor, a gradient that sums to the input's shape at a tensor (and
    None for any parameter of forward left to its default)."""
    grads = grads if isinstance(grads, tuple) else (grads,)
    if len(grads) > len(args) and all(g is None for g in grads[len(args) :]):
        grads = grads[: len(args)]
    if len(grads) != len(args):
        raise RuntimeError(
            f"function {name} returned an incorrect number of gradients "
            f"(expected {len(args)}, got {len(grads)})"
        )
    checked = []
    for i, (grad, arg) in enumerate(zip(grads, args, strict=True)):
        if not isinstance(arg, Tensor):
            if grad is not None:
                raise RuntimeError(
                    f"function {name} returned a gradient different than None at "
                    f"position {i + 1}, but the corresponding forward input was not "
                    "a Variable"
                )
            continue
        if grad is not None and grad.shape != arg.shape:
            if broadcast_shape(arg.shape, grad.shape) != grad.shape:
                raise RuntimeError(
                    f"Function {name} returned an invalid gradient at index {i} - got "
                    f"{list(grad.shape)} but expected shape compatible with "
                    f"{list(arg.shape)}"
                )
            grad = unbroadcast(grad, arg.shape)
        checked.append(grad)
    return checked


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
    def apply(cls, *args, **kwargs):
        args = _positional(cls.forward, args, kwargs)
        ctx = FunctionCtx(args)
        with autograd.no_grad():
            out = cls.forward(ctx, *args)
        if not isinstance(out, Tensor):
            raise NotImplementedError(
                "autograd.Function: symgrad.tape supports one Tensor output"
            )
        if any(t is out for t in ctx._non_differentiable):
            return Tensor._wrap(out._data)
        name = f"{cls.__name__}Backward"

        def rule(xp, g, *saved):
            # the values saved, recorded under create_graph ("out" below: the
            # output apply returns, so a saved result is differentiable again)
            ctx.saved_tensors = tuple(
                v if xp.records or v is None else Tensor._wrap(v) for v in saved
            )
            grads = _checked(
                name, cls.backward(ctx, g if xp.records else Tensor._wrap(g)), args
            )
            return tuple(
                None if grad is None else grad if xp.records else grad._data
                for grad in grads
            )

        rule.once_differentiable = getattr(cls.backward, "once_differentiable", False)
        inputs = [a for a in args if isinstance(a, Tensor)]
        saves = tuple("out" if t is out else t for t in ctx.saved_tensors) or False

        def node(*node_args):
            return BackwardCFunction(ctx, *node_args)

        return Tensor._result(out._data, inputs, rule, name, saves, node=node)
