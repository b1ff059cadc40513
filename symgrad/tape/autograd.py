"""Grad mode, graph nodes and the backward pass: a topological sort plus the
recorded closures run in reverse.

Nothing here knows about Tensor itself: a tensor is anything with `requires_grad`,
`grad_fn`, `retains_grad` and `_accumulate_grad(array)`.
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


class no_grad(contextlib.ContextDecorator):
    """Context manager and decorator (`@no_grad()` or `@no_grad`) that stops ops
    from being recorded."""

    def __new__(cls, func=None):
        return super().__new__(cls) if func is None else cls()(func)

    def __init__(self, func=None):
        self._saved = []  # a stack, so one instance can decorate a recursive function

    def __enter__(self):
        global _grad_enabled
        self._saved.append(_grad_enabled)
        _grad_enabled = False

    def __exit__(self, *exc_info):
        global _grad_enabled
        _grad_enabled = self._saved.pop()


class Node:
    """One recorded op: the versions of its inputs and the closure mapping d(out) to
    d(inputs).

    `edges` holds, per input, (tensor, its grad_fn when the op ran) if it required grad
    then, else None: a recorded assignment (`y[0] = 0`) later gives the tensor a new
    grad_fn, and this op's gradient must still reach the version it used.
    `backward(g)` returns one NumPy gradient (or None) per input. Ops whose closure
    holds saved arrays (`saves=True`) drop it after a backward pass without
    retain_graph, as PyTorch frees saved tensors; ops that save nothing can be
    traversed again, also as in PyTorch.
    """

    def __init__(self, name, inputs, backward, saves):
        self._name = name
        self.edges = tuple((t, t.grad_fn) if t.requires_grad else None for t in inputs)
        self._backward = backward
        self._saves = saves

    def name(self):
        return self._name

    def __repr__(self):
        return f"<{self._name} object>"

    def apply(self, g, retain_graph):
        if self._backward is None:
            raise RuntimeError(FREED_GRAPH)
        grads = self._backward(g)
        if self._saves and not retain_graph:
            self._backward = None
        return grads


def _key(version):
    """A (tensor, grad_fn) version: a non-leaf is named by its op, a leaf by itself."""
    t, fn = version
    return id(t) if fn is None else id(fn)


def _topological_order(root):
    """Versions that need a gradient, each after all of its inputs (iterative DFS)."""
    order, seen, stack = [], set(), [((root, root.grad_fn), False)]
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
def backward(root, grad, retain_graph=False):
    """Propagate `grad` (d root / d root) to every leaf reachable from `root`."""
    grads = {_key((root, root.grad_fn)): grad}
    for t, fn in reversed(_topological_order(root)):
        g = grads.pop(_key((t, fn)), None)
        if g is None:
            continue
        if fn is None or (t.retains_grad and t.grad_fn is fn):
            t._accumulate_grad(g)
        if fn is None:
            continue
        for edge, pg in zip(fn.edges, fn.apply(g, retain_graph), strict=True):
            if pg is not None and edge is not None:
                k = _key(edge)
                grads[k] = pg if k not in grads else grads[k] + pg
