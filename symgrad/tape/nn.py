"""torch.nn: Modules that register Parameters by attribute assignment, and the layers
and losses the examples need."""

import math
import sys
from collections import OrderedDict, namedtuple

from . import functional
from .creation import default_generator
from .tensor import Tensor, as_array

# `import symgrad.tape.nn.functional as F` then works like `import torch.nn.functional`.
sys.modules[__name__ + ".functional"] = functional

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A leaf tensor that requires grad and that a Module registers on assignment."""

    def __init__(self, data, requires_grad=True):
        self._setup(as_array(data), requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class: assigning a Parameter or Module attribute registers it."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
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
        for other in (self.__dict__, self._parameters, self._modules):
            if other is not store:
                other.pop(name, None)
        store[name] = value

    def __getattr__(self, name):
        """Registered parameters and submodules (only called when normal lookup
        fails)."""
        for store in ("_parameters", "_modules"):
            if name in self.__dict__.get(store, ()):
                return self.__dict__[store][name]
        raise AttributeError(
            f"'{type(self).__name__}' object has no attribute '{name}'"
        )

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(
            f'Module [{type(self).__name__}] is missing the required "forward" function'
        )

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

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

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, Parameter) pairs; a shared Parameter is listed once unless
        remove_duplicate=False (as state_dict lists it under every name)."""
        seen = set()
        walk = self.named_modules(None, prefix, remove_duplicate)
        for module_prefix, module in walk if recurse else [(prefix, self)]:
            for name, param in module._parameters.items():
                if param is None or remove_duplicate and id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse=True):
        return (param for _, param in self.named_parameters(recurse=recurse))

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

    def state_dict(self):
        """Name -> detached tensor sharing the parameter's storage."""
        params = self.named_parameters(remove_duplicate=False)
        return OrderedDict((name, param.detach()) for name, param in params)

    def load_state_dict(self, state_dict, strict=True):
        """Copy values into the existing parameters (in place, keeping identities)."""
        own = dict(self.named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        values = {k: as_array(v) for k, v in state_dict.items() if k in own}
        errors = [
            f"size mismatch for {k}: copying a param with shape {v.shape} from "
            f"checkpoint, the shape in current model is {own[k].shape}."
            for k, v in values.items()
            if v.shape != own[k].shape
        ]
        if strict and missing:
            errors.append(f"Missing key(s) in state_dict: {missing}.")
        if strict and unexpected:
            errors.append(f"Unexpected key(s) in state_dict: {unexpected}.")
        if errors:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
            )
        for k, v in values.items():
            own[k]._data[...] = v
        return IncompatibleKeys(missing, unexpected)

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [
            f"({name}): {module!r}".replace("\n", "\n  ")
            for name, module in self._modules.items()
        ]
        body = "\n  " + "\n  ".join(lines) + "\n" if lines else ""
        return f"{type(self).__name__}({self.extra_repr()}{body})"


class Linear(Module):
    """y = x @ weight.T + bias, with torch's default init: weight and bias drawn from
    U(-1/sqrt(in_features), 1/sqrt(in_features)) (kaiming_uniform with a=sqrt(5))."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
        uniform = default_generator.uniform
        self.weight = Parameter(uniform(-bound, bound, (out_features, in_features)))
        self.bias = Parameter(uniform(-bound, bound, out_features)) if bias else None

    def forward(self, input):
        return functional.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


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

    def __len__(self):
        return len(self._modules)


class ModuleList(Module):
    """A list of modules, each registered (named "0", "1", ...) so that
    parameters() finds them; it has no forward of its own."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module):
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

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


class Sigmoid(Module):
    def forward(self, input):
        return functional.sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return functional.tanh(input)


class ReLU(Module):
    def forward(self, input):
        return functional.relu(input)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, input):
        return functional.leaky_relu(input, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


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


class LogSoftmax(Softmax):
    def forward(self, input):
        return functional.log_softmax(input, self.dim)


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = reduction


class MSELoss(_Loss):
    def forward(self, input, target):
        return functional.mse_loss(input, target, reduction=self.reduction)


class NLLLoss(_Loss):
    """Negative log-likelihood of class indices given log-probabilities."""

    loss = staticmethod(functional.nll_loss)

    def __init__(self, weight=None, *, ignore_index=-100, reduction="mean"):
        super().__init__(reduction)
        self.weight, self.ignore_index = weight, ignore_index

    def forward(self, input, target):
        return self.loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


class CrossEntropyLoss(NLLLoss):
    """NLLLoss of log_softmax(input): takes raw scores (logits)."""

    loss = staticmethod(functional.cross_entropy)


class BCEWithLogitsLoss(_Loss):
    def forward(self, input, target):
        return functional.binary_cross_entropy_with_logits(
            input, target, reduction=self.reduction
        )
