"""Grad mode, graph nodes and the backward pass: a topological sort plus the
recorded rules run in reverse.

A rule, `rule(xp, g, *saved)`, maps d(out) to d(inputs) given the values of the
tensors its op saved; `xp` is the namespace it computes with (namespaces.py): NumPy
arrays in an ordinary pass, Tensors under create_graph=True, so that the gradients
are recorded too and can be differentiated again.

Apart from the seeds and grad()'s results, nothing here builds a Tensor: a tensor is
anything with `requires_grad`, `grad_fn`, `retains_grad`, `_run_hooks(g)` and
`_accumulate_grad(g)`, where g is an array, or a Tensor under create_graph.
"""

import contextlib
import warnings

import numpy as np

from . import autograd_graph as graph  # torch.autograd.graph
from .dtypes import scalar_name
from .namespaces import NumPyOps, TensorOps, silent

_grad_enabled = True
_inference = (
    False  # torch's inference mode: nothing is recorded, even under enable_grad
)
_anomaly = {"enabled": False, "check_nan": True}
_CO_GENERATOR = 0x20  # inspect.CO_GENERATOR (the engine imports little of the stdlib)

FREED_GRAPH = (
    "Trying to backward through the graph a second time (or directly access saved "
    "tensors after they have already been freed). Saved intermediate values of the "
    "graph are freed when you call .backward() or autograd.grad(). Specify "
    "retain_graph=True if you need to backward through the graph a second time or if "
    "you need to access saved tensors after calling backward."
)


def __getattr__(name):
    """autograd.Function and autograd.function (function.py), autograd.functional
    (autograd_functional.py), autograd.gradcheck (gradcheck.py), autograd.Variable
    (tensor.py): they build on
    Tensor, which builds on this module, so they are imported when first asked for."""
    if name in ("Function", "function"):
        from . import function

        return function if name == "function" else function.Function
    if name == "functional":
        from . import autograd_functional

        return autograd_functional
    if name == "Variable":
        from .tensor import Variable

        return Variable
    if name == "gradcheck":
        from .gradcheck import gradcheck

        return gradcheck
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_grad_enabled():
    return _grad_enabled


def is_inference_mode_enabled():
    return _inference


def recording():
    """Whether ops are recorded now: grad mode on, outside inference mode."""
    return _grad_enabled and not _inference


class _ModeDecorator(contextlib.ContextDecorator):
    """A context manager whose decorator also covers a generator function's body:
    the mode is entered at each resume and left at each yield, as torch's is (a
    plain ContextDecorator would only cover creating the generator)."""

    def __call__(self, func):
        code = getattr(func, "__code__", None)
        if code is None or not code.co_flags & _CO_GENERATOR:
            return super().__call__(func)

        def generator(*args, **kwargs):
            with self:
                gen = func(*args, **kwargs)
            resume, value = gen.send, None
            while True:
                try:
                    with self:
                        out = resume(value)
                except StopIteration as stop:
                    return stop.value
                try:
                    resume, value = gen.send, (yield out)
                except GeneratorExit:
                    with self:
                        gen.close()
                    raise
                except BaseException as exc:  # thrown in: passed on to func's body
                    resume, value = gen.throw, exc

        generator.__name__, generator.__qualname__ = func.__name__, func.__qualname__
        generator.__doc__, generator.__wrapped__ = func.__doc__, func
        return generator


class _GradMode(_ModeDecorator):
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


class inference_mode(_GradMode):
    """No recording inside, not even under an inner enable_grad, and grad mode off;
    inference_mode(False) turns grad mode on, as torch's does. Tensors made inside are
    inference tensors (is_inference()), which a recorded op may not save. (torch
    also forbids in-place writes to them outside the mode; the tape does not.)"""

    def __new__(cls, mode=True):
        return super().__new__(cls, mode if callable(mode) else None)

    def __init__(self, mode=True):
        super().__init__()
        self._mode = bool(mode)

    def __enter__(self):
        global _grad_enabled, _inference
        self._saved.append((_grad_enabled, _inference))
        _grad_enabled, _inference = not self._mode, self._mode

    def __exit__(self, *exc_info):
        global _grad_enabled, _inference
        _grad_enabled, _inference = self._saved.pop()


class set_grad_enabled(_ModeDecorator):
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


def is_anomaly_enabled():
    return _anomaly["enabled"]


def is_anomaly_check_nan_enabled():
    return _anomaly["check_nan"]


class set_detect_anomaly(_ModeDecorator):
    """Anomaly detection on or off, on construction (so a plain call works) and
    inside a with block, restoring the previous setting on exit. While on (with
    check_nan), a backward rule returning NaN raises, naming its node."""

    def __init__(self, mode, check_nan=True):
        self._previous = dict(_anomaly)
        self._mode = {"enabled": bool(mode), "check_nan": check_nan}
        _anomaly.update(self._mode)

    def __enter__(self):
        _anomaly.update(self._mode)

    def __exit__(self, *exc_info):
        _anomaly.update(self._previous)


class detect_anomaly(_ModeDecorator):
    """Anomaly detection on inside a with block or a decorated function."""

    def __init__(self, check_nan=True):
        self._mode = {"enabled": True, "check_nan": check_nan}
        self._saved = []
        warnings.warn(
            "Anomaly Detection has been enabled. This mode will increase the runtime "
            "and should only be enabled for debugging.",
            UserWarning,
            stacklevel=2,
        )

    def __enter__(self):
        self._saved.append(dict(_anomaly))
        _anomaly.update(self._mode)

    def __exit__(self, *exc_info):
        _anomaly.update(self._saved.pop())


def _check_nan(fn, grads):
    """Anomaly detection's error for a rule that returned NaN."""
    for i, g in enumerate(grads):
        if g is not None and np.isnan(getattr(g, "_data", g)).any():
            raise RuntimeError(
                f"Function '{fn.name()}' returned nan values in its {i}th output."
            )


MODIFIED_INPLACE = (
    "one of the variables needed for gradient computation has been modified by an "
    "inplace operation: [torch.{scalar}Tensor {shape}]{producer} is at version {now}; "
    "expected version {then} instead. Hint: enable anomaly detection to find the "
    "operation that failed to compute its gradient, with "
    "torch.autograd.set_detect_anomaly(True, check_nan=False)."
)


def _modified_inplace(t, version, producer):
    """MODIFIED_INPLACE for saved tensor t, naming the op that made it as torch
    does: the grad_fn's name without "Backward0" (PowBackward1 is "Pow1")."""
    op = producer and producer.name()
    head, backward, number = (op or "").rpartition("Backward")
    if backward and (number == "" or number.isdigit()):
        op = head + ("" if number == "0" else number)
    return MODIFIED_INPLACE.format(
        scalar=scalar_name(t.dtype),
        shape=list(t.shape),
        producer=f", which is output 0 of {op}," if op else "",
        now=t._version,
        then=version,
    )


class VersionCounter:
    """Counts the in-place writes to one memory: shared by a tensor, its views and
    detach(), so that a saved value changed through any of them is noticed."""

    def __init__(self):
        self.value = 0


DOUBLE_BACKWARD = (
    "derivative for {op} is not implemented: symgrad.tape cannot differentiate its "
    "gradient again (create_graph=True)"
)


def once_differentiable(backward):
    """A rule for an op whose gradient is computed by `backward(g)` on NumPy arrays
    only (torch's decorator of that name). Under create_graph its result enters the
    graph as a constant: Node.apply allows that only where it is exact, when neither
    g nor the saved values require grad, and otherwise raises naming the op."""

    def rule(xp, g, *saved):
        if not xp.records:
            return backward(g)
        return tuple(None if a is None else type(g)._wrap(a) for a in backward(g._data))

    rule.once_differentiable = True
    return rule


class Node:
    """One recorded op: the versions of its inputs and the rule mapping d(out) to
    d(inputs).

    `edges` holds, per input, (tensor, its grad_fn when the op ran) if it required grad
    then, else None: an in-place op (`y[0] = 0`) later gives the tensor a new grad_fn,
    and this op's gradient must still reach the version it used.
    `rule(xp, g, *values)` returns one gradient (or None) per input, given the values
    of the `saved` tensors (None entries stay None). `saved` is None for ops whose
    rule reads no values: as in PyTorch, the saved tensors' versions are checked
    before backward runs (an in-place change since makes the gradient wrong, so it
    raises), and the rule is dropped after a backward pass without retain_graph; ops
    that save nothing can be traversed again.
    """

    _classes = {}  # torch's class name of an op's node -> the subclass of that name

    def __new__(cls, name=None, *args, **kwargs):
        """A Node made for an op is an instance of a subclass named as torch's class
        for it (MulBackward0), so that type(grad_fn).__name__ reads as in torch."""
        if cls is Node:
            short = name.rpartition("::")[2]
            cls = Node._classes.get(short) or Node._classes.setdefault(
                short, type(short, (Node,), {})
            )
        return super().__new__(cls)

    def __init__(self, name, inputs, rule, saved=None, output=None):
        self._name = name
        self.edges = tuple((t, t.grad_fn) if t.requires_grad else None for t in inputs)
        self._rule = rule
        # per saved tensor: its version (None under saved_tensors_hooks), whether it
        # is this op's `output`, and the call that unpacks it (None without hooks)
        self._saved = saved and tuple(_save(t, output) for t in saved)

    def _resave_output(self, t):
        """Save the output t again at its version now: an in-place op wrote t into
        another tensor, whose version counter t has taken (torch's x.f_() saves x)."""

        def resaved(entry):  # (tensor, version or None under hooks, is output, unpack)
            if not (entry and entry[2]):
                return entry
            version = None if entry[1] is None else t._version
            return (t, version, *entry[2:])

        self._saved = self._saved and tuple(resaved(e) for e in self._saved)

    def name(self):
        return self._name

    def _type_name(self):
        """torch's class name for the node (name() may add a C++ namespace)."""
        return self._name.rpartition("::")[2]

    def __repr__(self):
        return f"<{self._type_name()} object at {id(self):#x}>"

    @property
    def _saved_self(self):
        """torch's grad_fn._saved_self: the first input, as this op saved it."""
        first = self._saved and self._saved[0]
        if not first or first[2]:
            raise AttributeError(f"{self._type_name()!r} saved no '_saved_self'")
        return _unpacked(first)

    @property
    def _saved_result(self):
        """torch's grad_fn._saved_result: the output, as this op saved it (another
        tensor object with its values, as in torch)."""
        result = next((s for s in self._saved or () if s and s[2]), None)
        if result is None:
            raise AttributeError(f"{self._type_name()!r} saved no '_saved_result'")
        return _unpacked(result).detach()

    @property
    def next_functions(self):
        """(node, 0) per input: its op, AccumulateGrad for a leaf that requires
        grad, None for an input that does not."""
        return tuple(
            (None if e is None else e[1] or AccumulateGrad(e[0]), 0) for e in self.edges
        )

    def apply(self, g, retain_graph, create_graph=False):
        """The gradients for the inputs: arrays, or Tensors if create_graph."""
        if self._rule is None:
            raise RuntimeError(FREED_GRAPH)
        for t, version, is_output, _ in filter(None, self._saved or ()):
            if version is not None and t._version != version:
                producer = self if is_output else t.grad_fn  # as torch names it
                raise RuntimeError(_modified_inplace(t, version, producer))
        saved = tuple(s and _read(s, create_graph) for s in self._saved or ())
        if create_graph:
            self._check_differentiable(g, saved)
            grads = self._rule(TensorOps, g, *saved)
        else:
            grads = self._rule(
                NumPyOps, g, *(t if t is None else t._data for t in saved)
            )
        if self._saved is not None and not retain_graph:
            self._rule = None
        return grads

    def _check_differentiable(self, g, saved):
        """A once_differentiable rule's constant result is exact only if nothing it
        reads depends on what is being differentiated."""
        if getattr(self._rule, "once_differentiable", False) and (
            g.requires_grad or any(t is not None and t.requires_grad for t in saved)
        ):
            raise RuntimeError(DOUBLE_BACKWARD.format(op=self._type_name()))


INFERENCE_SAVED = (
    "Inference tensors cannot be saved for backward. Please do not use Tensors "
    "created in inference mode in computation tracked by autograd. To work around "
    "this, you can make a clone to get a normal tensor and use it in autograd, or use "
    "`torch.no_grad()` instead of `torch.inference_mode()`."
)


def _save(t, output):
    """A saved tensor's entry in Node._saved, packed by the saved_tensors_hooks in
    force."""
    if t is None:
        return None
    if t._inference:
        raise RuntimeError(INFERENCE_SAVED)
    hooks = graph.current_hooks()
    if hooks is None:
        return t, t._version, t is output, None
    pack, unpack = hooks
    packed = pack(t)
    return t, None, t is output, lambda: unpack(packed)


def _unpacked(entry):
    """A Node._saved entry's tensor, through its unpack hook if it has one."""
    return entry[0] if entry[3] is None else entry[3]()


def _read(entry, create_graph):
    """What a rule reads for a Node._saved entry: the unpacked tensor, or under
    create_graph the saved tensor itself, whose graph the gradient must go through
    (unpack hooks return the same content, by torch's contract)."""
    value = _unpacked(entry)
    return entry[0] if create_graph else value


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


def _leading_to(order, wanted):
    """The keys of versions (in topological order) from which a wanted one is reached:
    with `inputs`, torch runs only these, so a branch freed by an earlier backward
    that leads elsewhere is never visited."""
    needed = set()
    for version in order:
        fn = version[1]
        if _key(version) in wanted or (
            fn is not None
            and any(e is not None and _key(e) in needed for e in fn.edges)
        ):
            needed.add(_key(version))
    return needed


@silent
def run_backward(roots, grads, retain_graph=False, inputs=None, create_graph=False):
    """Propagate grads[i] (d root / d roots[i]) back through the graph. Without
    `inputs`, every leaf reached, and each non-leaf that retains its grad, adds its
    gradient to .grad; with `inputs`, nothing is accumulated: the gradient reaching
    each input is returned (None where none does). Each tensor's hooks see its
    gradient first and may replace it. Gradients are arrays, or recorded Tensors
    if create_graph (grad mode is on while they are computed, as in torch)."""
    wanted = {_key((t, t.grad_fn)) for t in inputs or ()}
    found = {}
    pending = {}
    for root, grad in zip(roots, grads, strict=True):
        k = _key((root, root.grad_fn))
        pending[k] = grad if k not in pending else pending[k] + grad
    order = _topological_order(roots)
    needed = _leading_to(order, wanted) if inputs else None
    with set_grad_enabled(create_graph):
        for t, fn in reversed(order):
            k = _key((t, fn))
            g = pending.pop(k, None)
            if g is None or (needed is not None and k not in needed):
                continue
            if fn is None or t.grad_fn is fn:
                g = t._run_hooks(g)
            if k in wanted:
                found[k] = g
            if inputs is None and (fn is None or (t.retains_grad and t.grad_fn is fn)):
                t._accumulate_grad(g)
            if fn is None:
                continue
            grads = fn.apply(g, retain_graph, create_graph)
            if _anomaly["enabled"] and _anomaly["check_nan"]:
                _check_nan(fn, grads)
            for edge, pg in zip(fn.edges, grads, strict=True):
                if pg is not None and edge is not None:
                    k = _key(edge)
                    pending[k] = pg if k not in pending else pending[k] + pg
    return [found.get(_key((t, t.grad_fn))) for t in inputs or ()]


def _tensors(value):
    """A tensor alone as a one-element list, else the list of value's items."""
    from .tensor import Tensor  # here: Tensor itself builds on this module

    return [value] if isinstance(value, Tensor) else list(value)


def _seeds(outputs, grad_outputs, create_graph):
    """The gradient each output starts the backward pass with (grad_outputs[i], by
    default 1 for a one-element output), checked as torch checks them: arrays, or
    Tensors if create_graph (a given Tensor itself, so that gradients reach it)."""
    from .tensor import Tensor, as_array

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
        array = as_array(g, out.dtype)
        if array.shape != out.shape:
            raise RuntimeError(
                f"Mismatch in shape: grad_output[{i}] has a shape of "
                f"torch.Size({list(array.shape)}) and output[{i}] has a shape of "
                f"torch.Size({list(out.shape)})."
            )
        if create_graph:
            array = g if isinstance(g, Tensor) else Tensor._wrap(array)
        seeds.append(array)
    return seeds


CREATE_GRAPH_CYCLE = (
    "Using backward() with create_graph=True will create a reference cycle between "
    "the parameter and its gradient which can cause a memory leak. We recommend using "
    "autograd.grad when creating the graph to avoid this. If you have to use this "
    "function, make sure to reset the .grad fields of your parameters to None after "
    "use to break the cycle and avoid the leak."
)


def backward(
    tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None
):
    """Add d(sum of tensors weighted by grad_tensors)/d(leaf) to each leaf's .grad
    (and to retain_grad() non-leaves'), or only to the .grad of `inputs`. With
    create_graph the gradients added are recorded, differentiable tensors."""
    if create_graph:
        warnings.warn(CREATE_GRAPH_CYCLE, UserWarning, stacklevel=2)
    retain_graph = create_graph if retain_graph is None else retain_graph
    tensors = _tensors(tensors)
    if grad_tensors is not None:
        grad_tensors = _tensors(grad_tensors)
    inputs = None if inputs is None else _tensors(inputs)
    seeds = _seeds(tensors, grad_tensors, create_graph)
    grads = run_backward(tensors, seeds, retain_graph, inputs, create_graph)
    for t, g in zip(inputs or (), grads, strict=True):
        if g is not None:
            t._accumulate_grad(g)


def grad(
    outputs,
    inputs,
    grad_outputs=None,
    retain_graph=None,
    create_graph=False,
    only_inputs=True,
    allow_unused=None,
    is_grads_batched=False,
    materialize_grads=False,
):
    """The gradients of outputs (weighted by grad_outputs, default 1 for scalars)
    with respect to each of inputs, as new tensors; .grad fields are left alone.
    With create_graph they are recorded, so they can be differentiated again.
    materialize_grads gives zeros for unused inputs (allowing them).
    is_grads_batched takes grad_outputs' first dim as a batch of weightings (torch
    vectorizes them; here they run one by one). only_inputs is ignored, as in
    torch (False only warns)."""
    from .functions import stack
    from .tensor import Tensor

    if is_grads_batched:
        weights = _tensors(grad_outputs)
        rows = [
            grad(outputs, inputs, [w[k] for w in weights], True, create_graph,
                 allow_unused=allow_unused, materialize_grads=materialize_grads)
            for k in range(weights[0].shape[0])
        ]  # fmt: skip
        return tuple(
            None if column[0] is None else stack(column)
            for column in zip(*rows, strict=True)
        )

    if not only_inputs:
        warnings.warn(
            "only_inputs argument is deprecated and is ignored now (defaults to "
            "True). To accumulate gradient for other parts of the graph, please use "
            "torch.autograd.backward.",
            FutureWarning,
            stacklevel=2,
        )
    if materialize_grads and allow_unused is False:
        raise ValueError(
            "Expected allow_unused to be True or not passed when materialize_grads="
            "True, but got: allow_unused=False."
        )

    retain_graph = create_graph if retain_graph is None else retain_graph
    outputs, inputs = _tensors(outputs), _tensors(inputs)
    if grad_outputs is not None:
        grad_outputs = _tensors(grad_outputs)
    seeds = _seeds(outputs, grad_outputs, create_graph)
    if not all(t.requires_grad for t in inputs):
        raise RuntimeError("One of the differentiated Tensors does not require grad")
    grads = run_backward(outputs, seeds, retain_graph, inputs, create_graph)
    unused = [i for i, g in enumerate(grads) if g is None]
    if unused and not (allow_unused or materialize_grads):
        raise RuntimeError(
            f"The differentiated Tensor at index {unused[0]} appears to not have been "
            "used in the graph. Set allow_unused=True if this is the desired behavior."
        )
    if materialize_grads:  # zeros for unused inputs: arrays, or Tensors if recorded
        zeros = Tensor._wrap if create_graph else np.asarray
        grads = [
            zeros(np.zeros(t.shape, t.dtype)) if g is None else g
            for t, g in zip(inputs, grads, strict=True)
        ]
    if create_graph:
        return tuple(
            g if g is None else g.to(t.dtype)
            for t, g in zip(inputs, grads, strict=True)
        )
    return tuple(
        None if g is None else Tensor._wrap(np.array(g, t.dtype))
        for t, g in zip(inputs, grads, strict=True)
    )
