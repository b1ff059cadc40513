"""torch.autograd.Function: an op whose forward and backward the user writes with
Tensor ops, recorded as one node of the graph."""

import numpy as np

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

    def __init__(self, ctx, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._ctx = ctx

    def __getattr__(self, name):
        if name.startswith("_"):  # not set yet, or not there: no recursion
            raise AttributeError(name)
        return getattr(self._ctx, name)

    def __repr__(self):
        return f"<torch.autograd.function.{type(self).__name__} object>"


def _backward_class(cls):
    """The node class of Function cls, made once as torch makes it: a
    BackwardCFunction named <Name>Backward, which type(y.grad_fn) shows."""
    if "_backward_cls" not in vars(cls):  # not a parent Function's
        name = f"{cls.__name__}Backward"
        cls._backward_cls = type(name, (BackwardCFunction,), {"_forward_cls": cls})
    return cls._backward_cls


def once_differentiable(backward):
    """torch.autograd.function.once_differentiable for a Function's backward: it
    runs without recording, and create_graph through it raises (Node.apply)."""

    def wrapper(ctx, *grads):
        with autograd.no_grad():
            return backward(ctx, *grads)

    wrapper.once_differentiable = True
    return wrapper


def _positional(forward, args, kwargs, with_ctx):
    """apply's arguments as forward's positional ones (after ctx, if forward takes
    it), as torch binds them (its defaults fill the gaps), so that each has its
    place in backward's gradients."""
    code, defaults = forward.__code__, forward.__defaults__ or ()
    names = code.co_varnames[with_ctx : code.co_argcount]
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
    apply(*args); or, in torch's newer style, forward(*args) without ctx and
    setup_context(ctx, inputs, output) to fill ctx. forward runs without recording;
    backward runs recorded under create_graph=True, so a backward written in
    differentiable ops can be differentiated again."""

    @staticmethod
    def forward(ctx, *args):
        raise NotImplementedError(
            "You must implement the forward function for custom autograd.Function."
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError(
            "You must implement either the backward or vjp method for your custom "
            "autograd.Function to use it with backward mode AD."
        )

    @classmethod
    def apply(cls, *args, **kwargs):
        separate = cls.setup_context is not Function.setup_context
        args = _positional(cls.forward, args, kwargs, with_ctx=not separate)
        ctx = FunctionCtx(args)
        with autograd.no_grad():
            if separate:
                out = cls.forward(*args)
                cls.setup_context(ctx, args, out)
            else:
                out = cls.forward(ctx, *args)
        several = isinstance(out, tuple)
        outs = out if several else (out,)
        if not all(isinstance(o, Tensor) for o in outs):
            raise NotImplementedError(
                "autograd.Function: symgrad.tape supports Tensor outputs only"
            )
        name = f"{cls.__name__}Backward"

        def rule(xp, g, *saved):
            # the values saved, recorded under create_graph ("out" below: the
            # output apply returns, so a saved result is differentiable again)
            ctx.saved_tensors = tuple(
                v if xp.records or v is None else Tensor._wrap(v) for v in saved
            )
            grads = g if several else (g,)
            grads = _checked(name, cls.backward(ctx, *_given(ctx, grads, outs)), args)
            return tuple(
                None if grad is None else grad if xp.records else grad._data
                for grad in grads
            )

        rule.once_differentiable = getattr(cls.backward, "once_differentiable", False)
        node_class = _backward_class(cls)
        if several:
            return _several(ctx, args, outs, rule, name, node_class)
        if any(t is out for t in ctx._non_differentiable):
            return Tensor._wrap(out._data)
        inputs = [a for a in args if isinstance(a, Tensor)]
        saves = tuple("out" if t is out else t for t in ctx.saved_tensors) or False

        def node(*node_args, **kwargs):
            return node_class(ctx, *node_args, **kwargs)

        return Tensor._result(out._data, inputs, rule, name, saves, node=node)


def _given(ctx, grads, outs):
    """The gradients backward is given, one per output, as Tensors: an output no
    gradient reached gets zeros, or None after ctx.set_materialize_grads(False)."""
    for grad, out in zip(grads, outs, strict=True):
        if grad is None and ctx.materialize_grads:
            grad = np.zeros(out.shape, out.dtype)
        yield Tensor._wrap(grad) if isinstance(grad, np.ndarray) else grad


class _Slots(tuple):
    """The gradients of the outputs of a Function with several, None where none
    arrived: what flows into its node, added slot by slot."""

    def __add__(self, other):
        return _Slots(
            b if a is None else a if b is None else a + b
            for a, b in zip(self, other, strict=True)
        )

    @property
    def requires_grad(self):
        return any(g is not None and g.requires_grad for g in self)


class _OutputNode(autograd.Node):
    """The grad_fn of one output of a Function with several. The engine gives each
    tensor one gradient, so the Function's node hangs off a hidden joint tensor, and
    output i passes its gradient into slot i of the joint's; reading an attribute
    reads the Function's node (its ctx), as torch's shared grad_fn would."""

    def __init__(self, joint, i, n):
        def rule(xp, g):
            return (_Slots(g if j == i else None for j in range(n)),)

        super().__init__(joint.grad_fn.name(), (joint,), rule)
        self._node = joint.grad_fn

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._node, name)

    def __repr__(self):
        return repr(self._node)

    @property
    def next_functions(self):
        return self._node.next_functions


def _several(ctx, args, outs, rule, name, node_class):
    """apply's tuple of outputs: each recorded with an _OutputNode, unless marked
    non-differentiable or not float."""
    inputs = [a for a in args if isinstance(a, Tensor)]
    results = tuple(Tensor._wrap(np.asarray(o._data, order="C")) for o in outs)
    recorded = {id(o): r for o, r in zip(outs, results, strict=True)}
    saves = tuple(recorded.get(id(t), t) for t in ctx.saved_tensors)

    def node(*node_args, **kwargs):
        return node_class(ctx, *node_args, **kwargs)

    joint = Tensor._result(np.empty(0), inputs, rule, name, saves or False, node=node)
    if joint.grad_fn is None:
        return results
    for i, (out, result) in enumerate(zip(outs, results, strict=True)):
        if result.dtype.kind == "f" and not any(
            t is out for t in ctx._non_differentiable
        ):
            result._grad_fn = _OutputNode(joint, i, len(outs))
    return results
