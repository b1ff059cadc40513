"""Grad mode, graph nodes and the backward pass: a topological sort plus the
recorded closures run in reverse.

Apart from grad(), which returns Tensors, nothing here knows about Tensor itself: a
tensor is anything with `requires_grad`, `grad_fn`, `retains_grad`, `_run_hooks(array)`
and `_accumulate_grad(array)`.
"""

import contextlib

import numpy as np

_grad_enabled = True

# A result too small for float64 rounds to 0: in the tails of exp that is the correctly
# rounded answer, not an error, so it is not reported. Overflow, invalid and
# divide-by-zero are never silenced.
underflow_ok = np.errstate(under="ignore")

FREED_GRAPH = (
    "Trying to backward through the graph a second time (or directly access saved "
    "tensors after they have already been freed). Saved intermediate values of the "
    "graph are freed when you call .backward() or autograd.grad(). Specify "
    "retain_graph=True if you need to backward through the graph a second time or if "
    "you need to access saved tensors after calling backward."
)


def is_grad_enabled():
    return _grad_enabled


class _GradMode(contextlib.ContextDecorator):
    """Grad mode set to `enabled` inside a with block or a decorated function (used
    as @no_grad() or @no_grad)."""

    enabled = None

    def __new__(cls, func=None):
        return super().__new__(cls) if func is None else cls()(func)

    def __init__(self, func=None):
        self._saved = []  # a stack, so one instance can decorate a recursive function

    def __enter__(self):
        global _grad_enabled
        self._saved.append(_grad_enabled)
        _grad_enabled = self.enabled

    def __exit__(self, *exc_info):
        global _grad_enabled
        _grad_enabled = self._saved.pop()


class no_grad(_GradMode):
    """Ops inside are not recorded."""

    enabled = False


class enable_grad(_GradMode):
    """Ops inside are recorded, even within no_grad."""

    enabled = True


class set_grad_enabled(contextlib.ContextDecorator):
    """Sets grad mode on construction, so a plain call works too; as a context
    manager it restores the previous mode on exit."""

    def __init__(self, mode):
        global _grad_enabled
        self._mode, self._previous = bool(mode), _grad_enabled
        _grad_enabled = self._mode

    def __enter__(self):
        global _grad_enabled
        _grad_enabled = self._mode

    def __exit__(self, *exc_info):
        global _grad_enabled
        _grad_enabled = self._previous


MODIFIED_INPLACE = (
    "one of the variables needed for gradient computation has been modified by an "
    "inplace operation: [{dtype} {shape}], saved by {op}, is at version {now}; "
    "expected version {then} instead."
)


class VersionCounter:
    """Counts the in-place writes to one memory: shared by a tensor, its views and
    detach(), so that a saved value changed through any of them is noticed."""

    def __init__(self):
        self.value = 0


class Node:
    """One recorded op: the versions of its inputs and the closure mapping d(out) to
    d(inputs).

    `edges` holds, per input, (tensor, its grad_fn when the op ran) if it required grad
    then, else None: an in-place op (`y[0] = 0`) later gives the tensor a new grad_fn,
    and this op's gradient must still reach the version it used.
    `backward(g)` returns one NumPy gradient (or None) per input. `saved` is None for
    ops whose closure holds no values, else the tensors whose values it holds: as in
    PyTorch, their versions are checked before backward runs (an in-place change since
    makes the gradient wrong, so it raises), and the closure is dropped after a
    backward pass without retain_graph; ops that save nothing can be traversed again.
    """

    def __init__(self, name, inputs, backward, saved=None):
        self._name = name
        self.edges = tuple((t, t.grad_fn) if t.requires_grad else None for t in inputs)
        self._backward = backward
        self._saved = saved if saved is None else tuple((t, t._version) for t in saved)

    def name(self):
        return self._name

    def _type_name(self):
        """torch's class name for the node (name() may add a C++ namespace)."""
        return self._name.rpartition("::")[2]

    def __repr__(self):
        return f"<{self._type_name()} object>"

    @property
    def next_functions(self):
        """(node, 0) per input: its op, AccumulateGrad for a leaf that requires
        grad, None for an input that does not."""
        return tuple(
            (None if e is None else e[1] or AccumulateGrad(e[0]), 0) for e in self.edges
        )

    def apply(self, g, retain_graph):
        if self._backward is None:
            raise RuntimeError(FREED_GRAPH)
        for t, version in self._saved or ():
            if t._version != version:
                raise RuntimeError(
                    MODIFIED_INPLACE.format(
                        dtype=t.dtype,
                        shape=list(t.shape),
                        op=self._name,
                        now=t._version,
                        then=version,
                    )
                )
        grads = self._backward(g)
        if self._saved is not None and not retain_graph:
            self._backward = None
        return grads


class AccumulateGrad(Node):
    """The node that adds a leaf's gradient to its .grad (seen in next_functions)."""

    def __init__(self, variable):
        super().__init__("torch::autograd::AccumulateGrad", (), None)
        self.variable = variable


class RemovableHandle:
    """What register_hook returns: remove() unregisters the hook."""

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def _key(version):
    """A (tensor, grad_fn) version: a non-leaf is named by its op, a leaf by itself."""
    t, fn = version
    return id(t) if fn is None else id(fn)


def _topological_order(roots):
    """Versions that need a gradient, each after all of its inputs (iterative DFS)."""
    order, seen, stack = [], set(), [((r, r.grad_fn), False) for r in roots]
    while stack:
        version, inputs_done = stack.pop()
        if inputs_done:
            order.append(version)
        elif _key(version) not in seen:
            seen.add(_key(version))
            stack.append((version, True))
            if version[1] is not None:
                stack.extend((e, False) for e in version[1].edges if e is not None)
    return order


@underflow_ok
def run_backward(roots, grads, retain_graph=False, inputs=None):
    """Propagate grads[i] (d root / d roots[i]) back through the graph. Without
    `inputs`, every leaf reached, and each non-leaf that retains its grad, adds its
    gradient to .grad; with `inputs`, nothing is accumulated: the gradient reaching
    each input is returned (None where none does). Each tensor's hooks see its
    gradient first and may replace it."""
    wanted = {_key((t, t.grad_fn)) for t in inputs or ()}
    found = {}
    pending = {}
    for root, grad in zip(roots, grads, strict=True):
        k = _key((root, root.grad_fn))
        pending[k] = grad if k not in pending else pending[k] + grad
    for t, fn in reversed(_topological_order(roots)):
        k = _key((t, fn))
        g = pending.pop(k, None)
        if g is None:
            continue
        if fn is None or t.grad_fn is fn:
            g = t._run_hooks(g)
        if k in wanted:
            found[k] = g
        if inputs is None and (fn is None or (t.retains_grad and t.grad_fn is fn)):
            t._accumulate_grad(g)
        if fn is None:
            continue
        for edge, pg in zip(fn.edges, fn.apply(g, retain_graph), strict=True):
            if pg is not None and edge is not None:
                k = _key(edge)
                pending[k] = pg if k not in pending else pending[k] + pg
    return [found.get(_key((t, t.grad_fn))) for t in inputs or ()]


def _tensors(value):
    """A tensor alone as a one-element list, else the list of value's items."""
    from .tensor import Tensor  # here: Tensor itself builds on this module

    return [value] if isinstance(value, Tensor) else list(value)


def _seeds(outputs, grad_outputs):
    """The gradient each output starts the backward pass with (grad_outputs[i], by
    default 1 for a one-element output), checked as torch checks them."""
    from .tensor import as_array

    grad_outputs = [None] * len(outputs) if grad_outputs is None else grad_outputs
    seeds = []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs, strict=True)):
        if not out.requires_grad:
            raise RuntimeError(
                f"element {i} of tensors does not require grad and does not have a "
                "grad_fn"
            )
        if g is None:
            if out.numel() != 1:
                raise RuntimeError(
                    "grad can be implicitly created only for scalar outputs"
                )
            g = np.ones(out.shape, out.dtype)
        g = as_array(g, out.dtype)
        if g.shape != out.shape:
            raise RuntimeError(
                f"Mismatch in shape: grad_output[{i}] has a shape of {g.shape} and "
                f"output[{i}] has a shape of {out.shape}."
            )
        seeds.append(g)
    return seeds


def backward(
    tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None
):
    """Add d(sum of tensors weighted by grad_tensors)/d(leaf) to each leaf's .grad
    (and to retain_grad() non-leaves'), or only to the .grad of `inputs`."""
    if create_graph:
        raise NotImplementedError("create_graph=True: no second-order gradients")
    tensors = _tensors(tensors)
    if grad_tensors is not None:
        grad_tensors = _tensors(grad_tensors)
    inputs = None if inputs is None else _tensors(inputs)
    seeds = _seeds(tensors, grad_tensors)
    grads = run_backward(tensors, seeds, bool(retain_graph), inputs)
    for t, g in zip(inputs or (), grads, strict=True):
        if g is not None:
            t._accumulate_grad(g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=False, allow_unused=False):
    """The gradients of outputs (weighted by grad_outputs, default 1 for scalars)
    with respect to each of inputs, as new tensors; .grad fields are left alone."""
    from .tensor import Tensor

    outputs, inputs = _tensors(outputs), _tensors(inputs)
    if grad_outputs is not None:
        grad_outputs = _tensors(grad_outputs)
    seeds = _seeds(outputs, grad_outputs)
    if not all(t.requires_grad for t in inputs):
        raise RuntimeError("One of the differentiated Tensors does not require grad")
    grads = run_backward(outputs, seeds, retain_graph, inputs)
    if not allow_unused and any(g is None for g in grads):
        raise RuntimeError(
            "One of the differentiated Tensors appears to not have been used in the "
            "graph. Set allow_unused=True if this is the desired behavior."
        )
    return tuple(
        None if g is None else Tensor._wrap(np.array(g, t.dtype))
        for t, g in zip(inputs, grads, strict=True)
    )
