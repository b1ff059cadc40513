"""torch.nn: Modules that register Parameters (and buffers) by attribute assignment,
and the layers and losses the examples need."""

import math
import sys
import warnings
from collections import OrderedDict, namedtuple

import numpy as np

from . import dtypes, functional, nn_init, nn_utils
from .creation import numpy_generator
from .nn_hooks import RemovableHandle, call_with_backward_hooks
from .tensor import Tensor, as_array

# `import symgrad.tape.nn.functional as F` then works like `import torch.nn.functional`;
# likewise nn.init and nn.utils.
sys.modules[__name__ + ".functional"] = functional
sys.modules[__name__ + ".init"] = init = nn_init
sys.modules[__name__ + ".utils"] = utils = nn_utils


def __getattr__(name):
    """The recurrent cells and layers (nn_rnn.py), MultiheadAttention and the
    Transformer encoder (nn_attention.py), the convolutions (nn_conv.py) and
    Unfold/Fold/PixelShuffle (nn_fold.py), which build on Module: imported when
    first asked for."""
    cells = ("RNNCellBase", "RNNCell", "GRUCell", "LSTMCell")
    if name in (*cells, "RNNBase", "RNN", "GRU", "LSTM"):
        from . import nn_rnn

        return getattr(nn_rnn, name)
    attention = ("MultiheadAttention", "NonDynamicallyQuantizableLinear")
    if name in (*attention, "TransformerEncoderLayer", "TransformerEncoder"):
        from . import nn_attention  # likewise

        return getattr(nn_attention, name)
    from . import nn_conv  # convolutions and pooling: likewise

    if name in nn_conv.MODULES:
        return getattr(nn_conv, name)
    from . import nn_fold  # im2col and the pixel shuffles: likewise

    if name in nn_fold.MODULES:
        return getattr(nn_fold, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _IncompatibleKeys(
    namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
):
    """What load_state_dict returns, printed as torch prints it."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _layout(name, extra, children):
    """name(...) around the lines of extra_repr and of the children, as torch."""
    if len(extra) == 1 and not children:
        return f"{name}({extra[0]})"
    lines = extra + children
    return f"{name}(" + ("\n  " + "\n  ".join(lines) + "\n" if lines else "") + ")"


def _parameter_lines(items, type_name=str):
    """A ParameterList's or ParameterDict's extra_repr: "(key): Parameter
    containing: [torch.float64 of size 2x3]" for each (ParameterDict names the
    type by type_name, torch.DoubleTensor)."""
    return "\n".join(
        f"  ({k}): {'Parameter' if isinstance(p, Parameter) else 'Tensor'} "
        f"containing: [{type_name(p.dtype)} of size {'x'.join(map(str, p.shape))}]"
        for k, p in items
    )


def _quoted(keys):
    """Keys as torch lists them in its messages: "a", "b"."""
    return ", ".join(f'"{k}"' for k in keys)


class Parameter(Tensor):
    """A leaf tensor that requires grad and that a Module registers on assignment."""

    def __init__(self, data, requires_grad=True):
        self._setup(as_array(data), requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __deepcopy__(self, memo):
        """The values and requires_grad, not the grad (torch's Parameter: a copied
        model starts without gradients)."""
        if id(self) not in memo:
            memo[id(self)] = Parameter(self._data.copy(), self.requires_grad)
        return memo[id(self)]


def _hooks(n):
    return tuple(OrderedDict() for _ in range(n))


def _register(hooks, hook, prepend, options):
    """hooks[id] = hook, last or (prepend) first; of the (dict, on) options, the
    dicts whose option is on mark the id. The handle's remove() takes the id out
    of them all."""
    marks = [d for d, on in options if on]
    handle = RemovableHandle(hooks, *marks)
    hooks[handle.id] = hook
    for d in marks:
        d[handle.id] = True
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


class Module:
    """Base class: assigning a Parameter or Module attribute registers it."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        self._non_persistent_buffers = set()
        # hooks by handle id, in calling order, and the ids taking options (torch's)
        self._forward_pre_hooks, self._forward_pre_hooks_with_kwargs = _hooks(2)
        self._forward_hooks, self._forward_hooks_with_kwargs = _hooks(2)
        self._forward_hooks_always_called = OrderedDict()
        self._backward_pre_hooks, self._backward_hooks = _hooks(2)
        self.training = True

    def __setattr__(self, name, value):
        """As torch: a Parameter or Module is registered, and a registered name takes
        only its own kind or None."""
        params, modules = self.__dict__.get("_parameters"), self.__dict__.get(
            "_modules"
        )
        if params is None and isinstance(value, Parameter | Module):
            raise AttributeError(
                "cannot assign parameters or modules before Module.__init__() call"
            )
        if params is not None and (isinstance(value, Parameter) or name in params):
            self._register(params, name, value, Parameter, "parameter")
        elif params is not None and (isinstance(value, Module) or name in modules):
            self._register(modules, name, value, Module, "child module")
        elif params is not None and name in self._buffers:
            self._register(self._buffers, name, value, Tensor, "buffer")
        else:
            object.__setattr__(self, name, value)

    def _register(self, store, name, value, kind, what):
        """store[name] = value, a `kind` or None; a replaced entry keeps its slot, so
        the order of parameters() does not change."""
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"cannot assign '{type(value).__name__}' as {what} '{name}' "
                f"(torch.nn.{kind.__name__} or None expected)"
            )
        for other in (self.__dict__, self._parameters, self._buffers, self._modules):
            if other is not store:
                other.pop(name, None)
        store[name] = value

    def __getattr__(self, name):
        """Registered parameters and submodules (only called when normal lookup
        fails)."""
        for store in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(store, ()):
                return self.__dict__[store][name]
        raise AttributeError(
            f"'{type(self).__name__}' object has no attribute '{name}'"
        )

    def __delattr__(self, name):
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor, persistent=True):
        """Keep `tensor` as module state that is not a parameter (running
        statistics, constants): to() converts it, and state_dict() holds it unless
        persistent is False."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                "(torch Tensor or None required)"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)

    def register_parameter(self, name, param):
        """Register `param` (a Parameter, or None for an optional one such as a
        missing bias) under `name`, with torch's checks."""
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                "cannot assign parameter before Module.__init__() call"
            )
        if not isinstance(name, str):
            raise TypeError(
                f"parameter name should be a string. Got {type(name).__name__}"
            )
        if "." in name or not name:
            raise KeyError('parameter name can\'t contain "." or be empty')
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(torch.nn.Parameter or None required)"
            )
        self._parameters[name] = param

    def get_submodule(self, target):
        """The submodule at a dotted path ("" is this module)."""
        module = self
        for item in target.split(".") if target else ():
            if not hasattr(module, item):
                raise AttributeError(
                    f"{type(module).__name__} has no attribute `{item}`"
                )
            module = getattr(module, item)
            if not isinstance(module, Module):
                raise AttributeError(f"`{item}` is not an nn.Module")
        return module

    def get_parameter(self, target):
        """The parameter at a dotted path ("0.bias")."""
        path, _, name = target.rpartition(".")
        module = self.get_submodule(path)
        if not hasattr(module, name):
            raise AttributeError(f"{type(module).__name__} has no attribute `{name}`")
        param = getattr(module, name)
        if not isinstance(param, Parameter):
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return param

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function'
        )

    def __call__(self, *args, **kwargs):
        """Each forward pre-hook: hook(module, args) (or with_kwargs, hook(module,
        args, kwargs)), whose result, if not None, replaces args (a single value is
        wrapped in a tuple; or (args, kwargs)); forward(); then each forward hook:
        hook(module, args, output) (or hook(module, args, kwargs, output)), whose
        result, if not None, replaces the output. Full backward (pre-)hooks run in
        the backward pass. If anything raises, the always_call forward hooks not yet
        run are run (with the output so far, None if none) before it propagates."""
        out, called = None, set()

        def forward(*args, **kwargs):
            nonlocal out
            out = self.forward(*args, **kwargs)
            for i, hook in list(self._forward_hooks.items()):
                called.add(i)
                replaced = self._forward_hook(i, hook, args, kwargs, out)
                out = out if replaced is None else replaced
            return out

        for i, hook in list(self._forward_pre_hooks.items()):
            if i in self._forward_pre_hooks_with_kwargs:
                replaced = hook(self, args, kwargs)
                if replaced is not None:
                    if not (isinstance(replaced, tuple) and len(replaced) == 2):
                        raise RuntimeError(
                            "forward pre-hook must return None or a tuple of "
                            f"(new_args, new_kwargs), but got {replaced}."
                        )
                    args, kwargs = replaced
            else:
                replaced = hook(self, args)
                if replaced is not None:
                    args = replaced if isinstance(replaced, tuple) else (replaced,)
        try:
            if self._backward_hooks or self._backward_pre_hooks:
                return call_with_backward_hooks(self, forward, args, kwargs)
            return forward(*args, **kwargs)
        except Exception:
            for i, hook in list(self._forward_hooks.items()):
                if i in self._forward_hooks_always_called and i not in called:
                    try:
                        replaced = self._forward_hook(i, hook, args, kwargs, out)
                    except Exception as e:  # noqa: BLE001 - torch warns, then raises
                        warnings.warn(
                            "module forward hook with ``always_call=True`` raised an "
                            "exception that was silenced as another error was "
                            f"raised in forward: {e}",
                            stacklevel=2,
                        )
                        continue
                    out = out if replaced is None else replaced
            raise

    def _forward_hook(self, i, hook, args, kwargs, out):
        if i in self._forward_hooks_with_kwargs:
            return hook(self, args, kwargs, out)
        return hook(self, args, out)

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """Call hook(module, args), or with_kwargs hook(module, args, kwargs), before
        every forward(), after those registered before (before them if prepend);
        the handle's remove() undoes it."""
        options = [(self._forward_pre_hooks_with_kwargs, with_kwargs)]
        return _register(self._forward_pre_hooks, hook, prepend, options)

    def register_forward_hook(
        self, hook, *, prepend=False, with_kwargs=False, always_call=False
    ):
        """Call hook(module, args, output), or with_kwargs hook(module, args, kwargs,
        output), after every forward() (with always_call, also when it raises),
        ordered as forward pre-hooks are; the handle's remove() undoes it."""
        options = [
            (self._forward_hooks_with_kwargs, with_kwargs),
            (self._forward_hooks_always_called, always_call),
        ]
        return _register(self._forward_hooks, hook, prepend, options)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """Call hook(module, grad_output) in each backward pass when the gradients
        of the module's outputs are known; a returned tuple replaces grad_output,
        for the module's backward and its full backward hooks."""
        return _register(self._backward_pre_hooks, hook, prepend, [])

    def register_full_backward_hook(self, hook, prepend=False):
        """Call hook(module, grad_input, grad_output) in each backward pass once the
        gradients of the module's tensor inputs are known (None for an input not
        requiring grad); a returned tuple replaces grad_input."""
        return _register(self._backward_hooks, hook, prepend, [])

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """This module and its submodules, depth first, with dotted names."""
        memo = set() if memo is None else memo
        if remove_duplicate and id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            path = f"{prefix}.{name}" if prefix else name
            yield from module.named_modules(memo, path, remove_duplicate)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_children(self):
        """(name, module) of the direct submodules, each module once."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        return (module for _, module in self.named_children())

    def add_module(self, name, module):
        """Register `module` (a Module or None) as the submodule `name`."""
        if not isinstance(name, str):
            raise TypeError(
                f"module name should be a string. Got {type(name).__name__}"
            )
        if "." in name or not name:
            raise KeyError(f'module name can\'t contain ".", got: {name}')
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._register(self._modules, name, module, Module, "child module")

    register_module = add_module

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad on every parameter (False freezes the module)."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def apply(self, fn):
        """Call fn on every submodule (depth first), then on this module."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    def _named_tensors(self, store, prefix, recurse, remove_duplicate):
        """(dotted name, tensor) pairs of one store ("_parameters" or "_buffers") of
        this module and, with recurse, its submodules; a shared tensor is listed
        once unless remove_duplicate=False (as state_dict lists it under every
        name)."""
        seen = set()
        walk = self.named_modules(None, prefix, remove_duplicate)
        for module_prefix, module in walk if recurse else [(prefix, self)]:
            for name, t in getattr(module, store).items():
                if t is None or remove_duplicate and id(t) in seen:
                    continue
                seen.add(id(t))
                yield (f"{module_prefix}.{name}" if module_prefix else name), t

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_tensors("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        return (param for _, param in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_tensors("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        return (buffer for _, buffer in self.named_buffers(recurse=recurse))

    def to(self, *args, dtype=None, device=None, non_blocking=False):
        """Cast floating-point parameters (in place, so they stay the same objects)
        and buffers to `dtype`; the CPU is the only device, so non_blocking (given
        by keyword or as a bool after the device or dtype) changes nothing; a CUDA
        device raises, as in torch without CUDA, if there is a tensor to move."""
        if (
            next(self.parameters(), None) is not None
            or next(self.buffers(), None) is not None
        ):
            for d in (*args, device):
                dtypes.check_device(d)
        dtype = next(
            (a for a in args if not isinstance(a, str | dtypes.device | bool)), dtype
        )
        if isinstance(dtype, Tensor):  # to(other): other's dtype
            dtype = dtype.dtype
        if dtype is None:
            return self
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None and p.dtype.kind == "f":
                    p.data = p._data.astype(dtype, copy=False)
                    if p.grad is not None:
                        p.grad.data = p.grad._data.astype(dtype, copy=False)
            for name, b in module._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    module._buffers[name] = b.to(dtype)
        return self

    def double(self):
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    def cpu(self):
        return self

    def cuda(self, device=None):
        return self.to("cuda")

    def zero_grad(self, set_to_none=True):
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    def train(self, mode=True):
        for module in self.modules():
            module.training = mode
        return self

    def eval(self):
        return self.train(False)

    def state_dict(self, *, destination=None, prefix="", keep_vars=False):
        """Name -> detached tensor sharing storage (the tensor itself with
        keep_vars): each module's parameters, then its persistent buffers, then its
        submodules' entries, as torch orders them; each name follows `prefix` as
        given (torch adds no dot), and the entries go into `destination` if given."""
        out = OrderedDict() if destination is None else destination
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            buffers = [
                (name, b)
                for name, b in module._buffers.items()
                if name not in module._non_persistent_buffers
            ]
            for name, t in [*module._parameters.items(), *buffers]:
                if t is not None:
                    key = f"{module_prefix}.{name}" if module_prefix else name
                    out[prefix + key] = t if keep_vars else t.detach()
        return out

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy values into the existing parameters and buffers (in place, keeping
        identities), or with assign=True put the given tensors in their place
        (parameters keep their requires_grad, as torch's)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        values = {k: as_array(v) for k, v in state_dict.items() if k in own}
        errors = [
            f"{what} key(s) in state_dict: {_quoted(keys)}. "
            for what, keys in (("Missing", missing), ("Unexpected", unexpected))
            if strict and keys
        ]
        errors += [
            f"size mismatch for {k}: copying a param with shape "
            f"torch.Size({list(v.shape)}) from checkpoint, the shape in current "
            f"model is torch.Size({list(own[k].shape)})."
            for k, v in values.items()
            if v.shape != own[k].shape
        ]
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
            )
        for k, v in values.items():
            if not assign:
                own[k]._data[...] = v
                continue
            *path, name = k.split(".")
            module = self.get_submodule(".".join(path))
            old = getattr(module, name)
            new = state_dict[k]
            if isinstance(old, Parameter):
                new = Parameter(new, requires_grad=old.requires_grad)
            setattr(module, name, new)
        return _IncompatibleKeys(missing, unexpected)

    def extra_repr(self):
        return ""

    def __repr__(self):
        """extra_repr inline if it is one line and there are no children, else
        one line each, then "(name): child" lines, as torch lays them out."""
        extra = self.extra_repr()
        extra = extra.split("\n") if extra else []
        children = [
            f"({name}): {module!r}".replace("\n", "\n  ")
            for name, module in self._modules.items()
        ]
        return _layout(type(self).__name__, extra, children)


class Linear(Module):
    """y = x @ weight.T + bias, with torch's default init: weight and bias drawn from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) (kaiming_uniform with a=sqrt(5))."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0

        def uniform(shape):  # astype(None) keeps float64, the tape's default
            draws = numpy_generator().uniform(-bound, bound, shape)
            return Parameter(draws.astype(dtype))

        self.weight = uniform((out_features, in_features))
        self.bias = uniform(out_features) if bias else None

    def forward(self, input):
        return functional.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Bilinear(Module):
    """y = x1 @ weight[o] @ x2 + bias_o, weight (out, in1, in2); torch's init:
    weight and bias from U(-1/sqrt(in1_features), 1/sqrt(in1_features))."""

    def __init__(
        self,
        in1_features,
        in2_features,
        out_features,
        bias=True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in1_features, self.in2_features = in1_features, in2_features
        self.out_features = out_features
        bound = 1 / math.sqrt(in1_features)

        def uniform(shape):  # as Linear's
            draws = numpy_generator().uniform(-bound, bound, shape)
            return Parameter(draws.astype(dtype))

        self.weight = uniform((out_features, in1_features, in2_features))
        self.bias = uniform(out_features) if bias else None

    def forward(self, input1, input2):
        return functional.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self):
        return (
            f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


def _append(self, module):
    """Add `module` at the end, named by its position."""
    self.add_module(str(len(self)), module)
    return self


def _extend(self, modules):
    for module in modules:
        self.append(module)
    return self


def _renumbered(self, edit):
    """self with its modules, as a list, changed by edit(list), then renamed "0",
    "1", ... as torch renames them after an insert or a deletion; edit's result."""
    modules = list(self._modules.values())
    result = edit(modules)
    self._modules.clear()
    self.extend(modules)
    return result


def _insert(self, index, module):
    _renumbered(self, lambda modules: modules.insert(index, module))


def _pop(self, index=-1):
    return _renumbered(self, lambda modules: modules.pop(index))


def _delitem(self, i):
    def delete(modules):
        del modules[i]

    _renumbered(self, delete)


class Sequential(Module):
    """Apply the given modules (or an OrderedDict of named modules) in order."""

    def __init__(self, *modules):
        super().__init__()
        named = (
            modules[0].items()
            if len(modules) == 1 and isinstance(modules[0], OrderedDict)
            else enumerate(modules)
        )
        for name, module in named:
            setattr(self, str(name), module)

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input

    def __getitem__(self, i):
        """The i-th module; a slice is a Sequential keeping the modules' names."""
        if isinstance(i, slice):
            return Sequential(OrderedDict(list(self._modules.items())[i]))
        return list(self._modules.values())[i]

    def __setitem__(self, i, module):
        """Replace the i-th module, under its name."""
        setattr(self, list(self._modules)[i], module)

    def __len__(self):
        return len(self._modules)

    append, extend, pop, __delitem__ = _append, _extend, _pop, _delitem

    def insert(self, index, module):
        _insert(self, index, module)
        return self  # as torch's Sequential.insert (ModuleList's returns None)


class ModuleList(Module):
    """A list of modules, each registered (named "0", "1", ...) so that
    parameters() finds them; it has no forward of its own."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    append, extend, insert, pop, __delitem__ = _append, _extend, _insert, _pop, _delitem

    def __getitem__(self, i):
        """The i-th module; a slice is a ModuleList of those modules."""
        if isinstance(i, slice):
            return ModuleList(list(self._modules.values())[i])
        return list(self._modules.values())[i]

    def __setitem__(self, i, module):
        setattr(self, list(self._modules)[i], module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __repr__(self):
        """Runs of equal modules folded, as torch does: "(0-2): 3 x Linear(...)"."""
        runs = []  # [first index, last index, repr]
        for i, module in enumerate(self):
            if runs and repr(module) == runs[-1][2]:
                runs[-1][1] = i
            else:
                runs.append([i, i, repr(module)])
        lines = [
            (f"({a}): {r}" if a == b else f"({a}-{b}): {b - a + 1} x {r}").replace(
                "\n", "\n  "
            )
            for a, b, r in runs
        ]
        return _layout(type(self).__name__, [], lines)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList([*self, *other])


def _as_parameter(value):
    """A tensor put in a ParameterList or ParameterDict becomes a Parameter."""
    if isinstance(value, Tensor) and not isinstance(value, Parameter):
        return Parameter(value)
    return value


class ParameterList(Module):
    """A list of parameters, each registered (named "0", "1", ...) so that
    parameters() finds them; a plain tensor is made a Parameter."""

    def __init__(self, values=None):
        super().__init__()
        self.extend(values or ())

    def append(self, value):
        setattr(self, str(len(self)), _as_parameter(value))
        return self

    def extend(self, values):
        for value in values:
            self.append(value)
        return self

    def __getitem__(self, i):
        return list(self._parameters.values())[i]

    def __setitem__(self, i, value):
        setattr(self, list(self._parameters)[i], _as_parameter(value))

    def __len__(self):
        return len(self._parameters)

    def __iter__(self):
        return iter(list(self._parameters.values()))

    def extra_repr(self):
        return _parameter_lines(enumerate(self))


class _Dict(Module):
    """What ParameterDict and ModuleDict share: a dict's reading side and
    deletion, over their registry, _entries (the Module's _parameters or
    _modules)."""

    def __getitem__(self, key):
        return self._entries[key]

    def __delitem__(self, key):
        del self._entries[key]

    def __contains__(self, key):
        return key in self._entries

    def __len__(self):
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def keys(self):
        return self._entries.keys()

    def values(self):
        return self._entries.values()

    def items(self):
        return self._entries.items()


class ParameterDict(_Dict):
    """A dict of parameters, each registered under its key so that parameters()
    finds them; a plain tensor is made a Parameter."""

    def __init__(self, parameters=None):
        super().__init__()
        self.update(parameters or {})

    def update(self, parameters):
        items = parameters.items() if hasattr(parameters, "items") else parameters
        for key, value in items:
            self[key] = value

    @property
    def _entries(self):
        return self._parameters

    def __setitem__(self, key, value):
        setattr(self, key, _as_parameter(value))

    def extra_repr(self):
        return _parameter_lines(
            self.items(), lambda dtype: f"torch.{dtypes.scalar_name(dtype)}Tensor"
        )


class ModuleDict(_Dict):
    """A dict of modules, each registered under its key so that parameters()
    finds them; it has no forward of its own."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def update(self, modules):
        items = modules.items() if hasattr(modules, "items") else modules
        for name, module in items:
            self[name] = module

    @property
    def _entries(self):
        return self._modules

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def pop(self, name):
        return self._modules.pop(name)


def _refuse_options(**options):
    """Refuse, by name, an option the tape does not implement, given a value other
    than torch's default (None or False); the defaults are accepted."""
    for name, value in options.items():
        if value not in (None, False):
            raise NotImplementedError(f"{name}={value!r} is not in symgrad.tape")


class Embedding(Module):
    """A lookup table of num_embeddings rows of size embedding_dim, drawn from
    N(0, 1) as in torch; the padding_idx row starts at 0 and gets no gradient."""

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        sparse=False,
        _weight=None,
        _freeze=False,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _refuse_options(sparse=sparse)
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise AssertionError("Padding_idx must be within num_embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = padding_idx
        if _weight is None:
            draws = numpy_generator().standard_normal((num_embeddings, embedding_dim))
            if padding_idx is not None:
                draws[padding_idx] = 0
            self.weight = Parameter(draws.astype(dtype), requires_grad=not _freeze)
        elif list(_weight.shape) != [num_embeddings, embedding_dim]:
            raise AssertionError(
                "Shape of weight does not match num_embeddings and embedding_dim"
            )
        else:  # shared, not copied, and its padding row kept, as in torch
            self.weight = Parameter(_weight, requires_grad=not _freeze)

    @classmethod
    def from_pretrained(
        cls,
        embeddings,
        freeze=True,
        padding_idx=None,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        sparse=False,
    ):
        """An Embedding whose weight is the 2-d `embeddings` (trained unless
        freeze)."""
        if embeddings.dim() != 2:
            raise AssertionError("Embeddings parameter is expected to be 2-dimensional")
        return cls(
            *embeddings.shape,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            scale_grad_by_freq=scale_grad_by_freq,
            sparse=sparse,
            _weight=embeddings,
            _freeze=freeze,
        )

    def forward(self, input):
        return functional.embedding(
            input,
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
        )

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text + self._options_repr()

    def _options_repr(self):
        text = "" if self.max_norm is None else f", max_norm={self.max_norm}"
        text += f", norm_type={self.norm_type}" if self.norm_type != 2 else ""
        if self.scale_grad_by_freq is not False:
            text += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        return text


class EmbeddingBag(Embedding):
    """Embedding whose forward reduces each bag of rows (F.embedding_bag), drawn
    and padded as Embedding's."""

    def __init__(
        self,
        num_embeddings,
        embedding_dim,
        max_norm=None,
        norm_type=2.0,
        scale_grad_by_freq=False,
        mode="mean",
        sparse=False,
        include_last_offset=False,
        padding_idx=None,
        device=None,
        dtype=None,
    ):
        _refuse_options(max_norm=max_norm)
        super().__init__(
            num_embeddings,
            embedding_dim,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            dtype=dtype,
        )
        self.mode, self.include_last_offset = mode, include_last_offset

    def forward(self, input, offsets=None, per_sample_weights=None):
        return functional.embedding_bag(
            input,
            self.weight,
            offsets,
            mode=self.mode,
            per_sample_weights=per_sample_weights,
            include_last_offset=self.include_last_offset,
            padding_idx=self.padding_idx,
            scale_grad_by_freq=self.scale_grad_by_freq,
        )

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}{self._options_repr()}"
        text += f", mode='{self.mode}'"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        return text


class LayerNorm(Module):
    """Normalize over the last dims (normalized_shape) to mean 0 and variance 1,
    then scale by weight (ones) and shift by bias (zeros)."""

    def __init__(
        self,
        normalized_shape,
        eps=1e-5,
        elementwise_affine=True,
        bias=True,
        dtype=None,
    ):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self.elementwise_affine = elementwise_affine
        self.weight = self.bias = None
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype))

    def forward(self, input):
        return functional.layer_norm(
            input, self.normalized_shape, self.weight, self.bias, self.eps
        )

    def extra_repr(self):
        return (
            f"{self.normalized_shape}, eps={self.eps}, "
            f"elementwise_affine={self.elementwise_affine}, "
            f"bias={self.bias is not None}"
        )


class _NormBase(Module):
    """What BatchNorm and InstanceNorm share, as in torch: the per-channel weight
    (ones) and bias (zeros) if affine, the running statistics (buffers, None
    unless track_running_stats) and the repr."""

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=True,
        track_running_stats=True,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = self.bias = None
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
            if bias:
                self.bias = Parameter(np.zeros(num_features, dtype))
        for name, fill in (("running_mean", 0.0), ("running_var", 1.0)):
            stat = np.full(num_features, fill, dtype) if track_running_stats else None
            self.register_buffer(name, None if stat is None else Tensor._wrap(stat))
        tracked = Tensor._wrap(np.array(0)) if track_running_stats else None
        self.register_buffer("num_batches_tracked", tracked)

    def reset_running_stats(self):
        """Back to the initial statistics, in place (the buffers stay the same)."""
        if self.track_running_stats:
            self.running_mean._data[...] = 0
            self.running_var._data[...] = 1
            self.num_batches_tracked._data[...] = 0

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(_NormBase):
    """Per-channel normalization of (N, C) or (N, C, L) input by the batch's
    statistics in training (tracked in running_mean and running_var, by
    `momentum`, or by a cumulative average if it is None), by the running ones in
    eval mode; then scaled by weight (ones) and shifted by bias (zeros)."""

    _RANKS = {2: "2D or 3D", 3: "2D or 3D"}  # (the input ranks allowed, as said)

    def forward(self, input):
        if input.ndim not in self._RANKS:
            allowed = next(iter(self._RANKS.values()))
            raise ValueError(f"expected {allowed} input (got {input.ndim}D input)")
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if momentum is None:  # a cumulative moving average
                momentum = 1.0 / self.num_batches_tracked.item()
        batch_stats = self.training or not self.track_running_stats
        tracked = not self.training or self.track_running_stats
        return functional.batch_norm(
            input,
            self.running_mean if tracked else None,
            self.running_var if tracked else None,
            self.weight,
            self.bias,
            batch_stats,
            momentum,
            self.eps,
        )


class BatchNorm2d(BatchNorm1d):
    """BatchNorm1d's normalization of (N, C, H, W) input, per channel."""

    _RANKS = {4: "4D"}


def _check_rank(input, dims):
    """torch's error for an input that is neither one sample over `dims` spatial dims
    (channels first) nor a batch of them."""
    if input.ndim not in (dims + 1, dims + 2):
        raise ValueError(
            f"expected {dims + 1}D or {dims + 2}D input (got {input.ndim}D input)"
        )


class _InstanceNorm(_NormBase):
    """Each sample's channels normalized over their own positions
    (F.instance_norm), an unbatched input as a batch of one; affine and
    track_running_stats off by default. Tracked statistics move in training by
    `momentum` (None: 0) and serve in eval mode; num_batches_tracked stays 0, as
    in torch."""

    _DIMS = 1  # the spatial dims

    def __init__(
        self,
        num_features,
        eps=1e-5,
        momentum=0.1,
        affine=False,
        track_running_stats=False,
        device=None,
        dtype=None,
        *,
        bias=True,
    ):
        super().__init__(
            num_features,
            eps,
            momentum,
            affine,
            track_running_stats,
            device,
            dtype,
            bias=bias,
        )

    def forward(self, input):
        _check_rank(input, self._DIMS)
        unbatched = self._DIMS + 1
        feature_dim = input.ndim - unbatched
        if input.shape[feature_dim] != self.num_features:
            if self.affine:
                raise ValueError(
                    f"expected input's size at dim={feature_dim} to match "
                    f"num_features ({self.num_features}), but got: "
                    f"{input.shape[feature_dim]}."
                )
            warnings.warn(
                f"input's size at dim={feature_dim} does not match num_features. "
                "You can silence this warning by not passing in num_features, which "
                "is not used because affine=False",
                stacklevel=2,
            )
        batch = input.unsqueeze(0) if input.ndim == unbatched else input
        out = functional.instance_norm(
            batch,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            self.training or not self.track_running_stats,
            0.0 if self.momentum is None else self.momentum,
            self.eps,
        )
        return out.squeeze(0) if input.ndim == unbatched else out


class InstanceNorm1d(_InstanceNorm):
    """Instance normalization of (N, C, L) or (C, L) input."""


class InstanceNorm2d(_InstanceNorm):
    """Instance normalization of (N, C, H, W) or (C, H, W) input."""

    _DIMS = 2


class InstanceNorm3d(_InstanceNorm):
    """Instance normalization of (N, C, D, H, W) or (C, D, H, W) input."""

    _DIMS = 3


class GroupNorm(Module):
    """Each sample's channels in num_groups groups, each normalized over its
    channels and positions; then scaled by weight (ones) and shifted by bias."""

    def __init__(
        self, num_groups, num_channels, eps=1e-5, affine=True, device=None, dtype=None
    ):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups, self.num_channels = num_groups, num_channels
        self.eps, self.affine = eps, affine
        self.weight = Parameter(np.ones(num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype)) if affine else None

    def forward(self, input):
        return functional.group_norm(
            input, self.num_groups, self.weight, self.bias, self.eps
        )

    def extra_repr(self):
        return (
            f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
            f"affine={self.affine}, bias={self.bias is not None}"
        )


class CosineSimilarity(Module):
    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x1, x2):
        return functional.cosine_similarity(x1, x2, self.dim, self.eps)


class PairwiseDistance(Module):
    def __init__(self, p=2.0, eps=1e-6, keepdim=False):
        super().__init__()
        self.norm, self.eps, self.keepdim = p, eps, keepdim

    def forward(self, x1, x2):
        return functional.pairwise_distance(x1, x2, self.norm, self.eps, self.keepdim)


class Identity(Module):
    """Returns its input (a placeholder, e.g. for a removed layer)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Flatten(Module):
    """Flatten dims start_dim..end_dim into one (by default all but the batch dim)."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Dim `dim` of the input as the dims unflattened_size (one may be -1)."""

    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, unflattened_size

    def forward(self, input):
        shape = list(input.shape)
        dim = self.dim + input.ndim if self.dim < 0 else self.dim
        return input.reshape(*shape[:dim], *self.unflattened_size, *shape[dim + 1 :])

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class _PadNd(Module):
    """F.pad in the class's mode over the last _DIMS dims; padding is an int (every
    side) or the (before, after) amounts, last dim first, as F.pad takes them."""

    _MODE, _DIMS = "constant", 1

    def __init__(self, padding):
        super().__init__()
        if isinstance(padding, int):
            padding = (padding,) * (2 * self._DIMS)
        self.padding = tuple(padding)

    def forward(self, input):
        return functional.pad(input, self.padding, self._MODE)

    def extra_repr(self):
        return f"{self.padding}"


class _ReflectionPadNd(_PadNd):
    """Pads with the input mirrored at its edges (the edges not repeated)."""

    _MODE = "reflect"


class ReflectionPad1d(_ReflectionPadNd):
    pass


class ReflectionPad2d(_ReflectionPadNd):
    _DIMS = 2


class ReflectionPad3d(_ReflectionPadNd):
    _DIMS = 3


class _ReplicationPadNd(_PadNd):
    """Pads with the input's edge values repeated."""

    _MODE = "replicate"


class ReplicationPad1d(_ReplicationPadNd):
    pass


class ReplicationPad2d(_ReplicationPadNd):
    _DIMS = 2


class ReplicationPad3d(_ReplicationPadNd):
    _DIMS = 3


class _CircularPadNd(_PadNd):
    """Pads with the input wrapped around; the input must be batched or one
    unbatched sample (torch checks the rank here, not in F.pad)."""

    _MODE = "circular"

    def forward(self, input):
        _check_rank(input, self._DIMS)
        return super().forward(input)


class CircularPad1d(_CircularPadNd):
    pass


class CircularPad2d(_CircularPadNd):
    _DIMS = 2


class CircularPad3d(_CircularPadNd):
    _DIMS = 3


class _ConstantPadNd(_PadNd):
    """Pads with `value`."""

    def __init__(self, padding, value):
        super().__init__(padding)
        self.value = value

    def forward(self, input):
        return functional.pad(input, self.padding, "constant", self.value)

    def extra_repr(self):
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPadNd):
    pass


class ConstantPad2d(_ConstantPadNd):
    _DIMS = 2


class ConstantPad3d(_ConstantPadNd):
    _DIMS = 3


class _ZeroPad:
    """ZeroPadNd: its ConstantPadNd with value 0.0, printing only the padding."""

    def __init__(self, padding):
        super().__init__(padding, 0.0)

    extra_repr = _PadNd.extra_repr


class ZeroPad1d(_ZeroPad, ConstantPad1d):
    pass


class ZeroPad2d(_ZeroPad, ConstantPad2d):
    pass


class ZeroPad3d(_ZeroPad, ConstantPad3d):
    pass


class Sigmoid(Module):
    def forward(self, input):
        return functional.sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return functional.tanh(input)


class ReLU(Module):
    """max(x, 0); with inplace=True it overwrites its input, as relu_ does."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return functional.relu(input, self.inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Hardtanh(Module):
    """x clamped to [min_val, max_val]."""

    def __init__(self, min_val=-1.0, max_val=1.0, inplace=False):
        super().__init__()
        if not max_val > min_val:
            raise AssertionError
        self.min_val, self.max_val, self.inplace = min_val, max_val, inplace

    def forward(self, input):
        return functional.hardtanh(input, self.min_val, self.max_val, self.inplace)

    def extra_repr(self):
        inplace = ", inplace=True" if self.inplace else ""
        return f"min_val={self.min_val}, max_val={self.max_val}{inplace}"


class ReLU6(Hardtanh):
    """min(max(x, 0), 6): Hardtanh(0, 6)."""

    def __init__(self, inplace=False):
        super().__init__(0.0, 6.0, inplace)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input):
        return functional.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (
            ", inplace=True" if self.inplace else ""
        )


class Dropout(Module):
    """Zeroes each element with probability p while training, scaling the rest by
    1/(1-p); the identity in eval mode."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(
                f"dropout probability has to be between 0 and 1, but got {p}"
            )
        self.p, self.inplace = p, inplace

    def forward(self, input):
        return functional.dropout(input, self.p, self.training, self.inplace)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class SELU(ReLU):
    def forward(self, input):
        return functional.selu(input, self.inplace)


class Mish(Module):
    """x tanh(softplus(x)); Hardswish and Hardsigmoid are its piecewise cousins."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return functional.mish(input, self.inplace)


class Hardswish(Mish):
    def forward(self, input):
        return functional.hardswish(input, self.inplace)


class Hardsigmoid(Mish):
    def forward(self, input):
        return functional.hardsigmoid(input, self.inplace)


class Softsign(Module):
    def forward(self, input):
        return functional.softsign(input)


class Tanhshrink(Module):
    def forward(self, input):
        return functional.tanhshrink(input)


class PReLU(Module):
    """x where x > 0, else weight * x: one learned slope (init 0.25), or one per
    channel (dim 1)."""

    def __init__(self, num_parameters=1, init=0.25, device=None, dtype=None):
        super().__init__()
        self.num_parameters = num_parameters
        self.weight = Parameter(np.full(num_parameters, init, dtype))

    def forward(self, input):
        return functional.prelu(input, self.weight)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"


class ELU(Module):
    def __init__(self, alpha=1.0, inplace=False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, input):
        return functional.elu(input, self.alpha, self.inplace)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class CELU(ELU):
    def forward(self, input):
        return functional.celu(input, self.alpha, self.inplace)


class Softplus(Module):
    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def forward(self, input):
        return functional.softplus(input, self.beta, self.threshold)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, input):
        return functional.gelu(input, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    def forward(self, input):
        return functional.silu(input)


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return functional.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmin(Softmax):
    def forward(self, input):
        return functional.softmin(input, self.dim)


class LogSoftmax(Softmax):
    def forward(self, input):
        return functional.log_softmax(input, self.dim)


class LogSigmoid(Module):
    def forward(self, input):
        return functional.logsigmoid(input)


class GLU(Module):
    """The first half of the input along dim gated by the sigmoid of the second."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return functional.glu(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class _Loss(Module):
    """Base of the losses: size_average= and reduce=, deprecated in torch but
    still accepted (with its warning), choose the reduction when either is given
    (functional.legacy_reduction)."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = functional.legacy_reduction(
            size_average, reduce, reduction, stacklevel=4
        )


class MSELoss(_Loss):
    def forward(self, input, target):
        return functional.mse_loss(input, target, reduction=self.reduction)


class L1Loss(_Loss):
    def forward(self, input, target):
        return functional.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(_Loss):
    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__(size_average, reduce, reduction)
        self.beta = beta

    def forward(self, input, target):
        return functional.smooth_l1_loss(input, target, self.reduction, self.beta)


class HuberLoss(_Loss):
    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction=reduction)
        self.delta = delta

    def forward(self, input, target):
        return functional.huber_loss(input, target, self.reduction, self.delta)


class TripletMarginLoss(_Loss):
    def __init__(
        self, margin=1.0, p=2.0, eps=1e-6, swap=False, size_average=None,
        reduce=None, reduction="mean",
    ):  # fmt: skip
        super().__init__(size_average, reduce, reduction)
        self.margin, self.p, self.eps, self.swap = margin, p, eps, swap

    def forward(self, anchor, positive, negative):
        return functional.triplet_margin_loss(
            anchor, positive, negative, self.margin, self.p, self.eps, self.swap,
            reduction=self.reduction,
        )  # fmt: skip


class MarginRankingLoss(_Loss):
    def __init__(self, margin=0.0, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.margin = margin

    def forward(self, input1, input2, target):
        return functional.margin_ranking_loss(
            input1, input2, target, self.margin, reduction=self.reduction
        )


class CosineEmbeddingLoss(MarginRankingLoss):
    def forward(self, input1, input2, target):
        return functional.cosine_embedding_loss(
            input1, input2, target, self.margin, reduction=self.reduction
        )


class GaussianNLLLoss(_Loss):
    def __init__(self, *, full=False, eps=1e-6, reduction="mean"):
        super().__init__(None, None, reduction)
        self.full, self.eps = full, eps

    def forward(self, input, target, var):
        return functional.gaussian_nll_loss(
            input, target, var, self.full, self.eps, self.reduction
        )


class PoissonNLLLoss(_Loss):
    def __init__(
        self, log_input=True, full=False, size_average=None, eps=1e-8, reduce=None,
        reduction="mean",
    ):  # fmt: skip
        super().__init__(size_average, reduce, reduction)
        self.log_input, self.full, self.eps = log_input, full, eps

    def forward(self, log_input, target):
        return functional.poisson_nll_loss(
            log_input, target, self.log_input, self.full, eps=self.eps,
            reduction=self.reduction,
        )  # fmt: skip


class KLDivLoss(_Loss):
    def __init__(
        self, size_average=None, reduce=None, reduction="mean", log_target=False
    ):
        super().__init__(size_average, reduce, reduction)
        self.log_target = log_target

    def forward(self, input, target):
        return functional.kl_div(input, target, self.reduction, self.log_target)


class BCELoss(_Loss):
    """Binary cross entropy of probabilities, each element weighted by weight."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)

    def forward(self, input, target):
        return functional.binary_cross_entropy(
            input, target, self.weight, self.reduction
        )


class NLLLoss(_Loss):
    """Negative log-likelihood of class indices given log-probabilities."""

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index=-100,
        reduce=None,
        reduction="mean",
    ):
        super().__init__(size_average, reduce, reduction)
        self.weight, self.ignore_index = weight, ignore_index

    def forward(self, input, target):
        return functional.nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class CrossEntropyLoss(NLLLoss):
    """NLLLoss of log_softmax(input): takes raw scores (logits), and class indices
    or class probabilities as targets."""

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index=-100,
        reduce=None,
        reduction="mean",
        label_smoothing=0.0,
    ):
        super().__init__(weight, size_average, ignore_index, reduce, reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return functional.cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class BCEWithLogitsLoss(_Loss):
    """Binary cross entropy of logits; weight scales each element's loss and
    pos_weight (per class) the positive targets' term."""

    def __init__(
        self,
        weight=None,
        size_average=None,
        reduce=None,
        reduction="mean",
        pos_weight=None,
    ):
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input, target):
        return functional.binary_cross_entropy_with_logits(
            input, target, self.weight, self.reduction, self.pos_weight
        )
