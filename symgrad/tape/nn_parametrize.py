"""torch.nn.utils.parametrize: a module's tensor recomputed on every access from
"original" parameters by a chain of Modules (weight_norm, spectral_norm, or the
user's). As in torch, the module's class is swapped for a subclass with a property
of that name, and the originals live in module.parametrizations[name]."""

from contextlib import contextmanager

from .autograd import no_grad
from .nn import ModuleDict, ModuleList, Parameter
from .tensor import Tensor

_cache_enabled = 0
_cache = {}


@contextmanager
def cached():
    """Within the block each parametrized tensor is computed once, at first access."""
    global _cache_enabled
    _cache_enabled += 1
    try:
        yield
    finally:
        _cache_enabled -= 1
        if not _cache_enabled:
            _cache.clear()


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor, in order, holding its originals: the
    tensor itself (kept as the same Parameter, so optimizers still see it) or, when
    the first one's right_inverse returns a tuple, original0, original1, ..."""

    def __init__(self, modules, original, unsafe=False):
        super().__init__(modules)
        self.unsafe = unsafe
        new = original
        with no_grad():
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    new = module.right_inverse(new)
        self.is_tensor = isinstance(new, Tensor)
        self.ntensors = 1 if self.is_tensor else len(new)
        if self.is_tensor:
            with no_grad():
                original.copy_(new)
            self._register_original("original", original)
        else:
            for i, value in enumerate(new):
                p = Parameter(value.detach().clone(), original.requires_grad)
                self._register_original(f"original{i}", p)

    def _register_original(self, name, tensor):
        if isinstance(tensor, Parameter):
            self.register_parameter(name, tensor)
        else:
            self.register_buffer(name, tensor)

    def right_inverse(self, value):
        """Set the originals so that the chain gives `value` (the property's setter)."""
        with no_grad():
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    value = module.right_inverse(value)
                elif not self.unsafe:
                    raise RuntimeError(
                        f"parametrization {type(module).__name__} does not implement "
                        "right_inverse."
                    )
            if self.is_tensor:
                self.original.copy_(value)
            else:
                for i, v in enumerate(value):
                    getattr(self, f"original{i}").copy_(v)

    def forward(self):
        if self.is_tensor:
            x = self[0](self.original)
        else:
            x = self[0](*(getattr(self, f"original{i}") for i in range(self.ntensors)))
        for module in list(self)[1:]:
            x = module(x)
        return x


def _parametrized_property(name):
    def get(module):
        if not _cache_enabled:
            return module.parametrizations[name]()
        key = (id(module), name)
        if key not in _cache:
            _cache[key] = module.parametrizations[name]()
        return _cache[key]

    def set(module, value):
        module.parametrizations[name].right_inverse(value)

    return property(get, set)


def register_parametrization(module, tensor_name, parametrization, *, unsafe=False):
    """Replace module.<tensor_name> by parametrization(original); a second call on
    the same name appends to its chain. Returns the module."""
    if is_parametrized(module, tensor_name):
        module.parametrizations[tensor_name].append(parametrization)
        return module
    original = getattr(module, tensor_name)
    if tensor_name in module._parameters or tensor_name in module._buffers:
        delattr(module, tensor_name)
    if not is_parametrized(module):
        cls = type(module)
        module.__class__ = type(f"Parametrized{cls.__name__}", (cls,), {})
        module.parametrizations = ModuleDict()
    module.parametrizations[tensor_name] = ParametrizationList(
        [parametrization], original, unsafe=unsafe
    )
    setattr(type(module), tensor_name, _parametrized_property(tensor_name))
    return module


def is_parametrized(module, tensor_name=None):
    parametrizations = module.__dict__.get("_modules", {}).get("parametrizations")
    if not isinstance(parametrizations, ModuleDict):
        return False
    return tensor_name is None or tensor_name in parametrizations


def remove_parametrizations(module, tensor_name, leave_parametrized=True):
    """Make module.<tensor_name> a plain Parameter again: its current value when
    leave_parametrized, else the single original."""
    if not is_parametrized(module, tensor_name):
        raise ValueError(
            f"Module {module} does not have a parametrization on {tensor_name}"
        )
    chain = module.parametrizations[tensor_name]
    if chain.is_tensor:
        original = chain.original
        if leave_parametrized:
            with no_grad():
                original.set_(getattr(module, tensor_name).detach())
    elif leave_parametrized:
        original = Parameter(getattr(module, tensor_name).detach().clone())
    else:
        raise ValueError(
            "Cannot leave unparametrized (`leave_parametrized=False`) a tensor "
            "that is parametrized in terms of a sequence of tensors."
        )
    delattr(type(module), tensor_name)
    del module.parametrizations[tensor_name]
    if isinstance(original, Parameter):
        module.register_parameter(tensor_name, original)
    else:
        module.register_buffer(tensor_name, original)
    if not module.parametrizations:
        delattr(module, "parametrizations")
        module.__class__ = type(module).__bases__[0]
    return module
