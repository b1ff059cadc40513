"""symgrad: a symbolic differentiation compiler that writes standalone NumPy modules.

Declare a model with ``sg.Model``; ``symgrad build`` derives its gradients with SymPy and
writes a NumPy module with ``forward``/``backward``/``value_and_grad``.

The declaration API is loaded on first use, so ``from symgrad import tape`` (the reference
engine) never imports SymPy or the compiler.
"""

from importlib import import_module as _import_module

__version__ = "0.1.0"

_API = {
    "symgrad.model": (
        "Cond Expr Model ModelError abs arccos arccosh arcsin arcsinh arctan arctan2 "
        "arctanh clip concatenate cos cosh cumsum digamma dot elementwise erf erfc "
        "exp expm1 gelu grad lgamma log log10 log1p log2 log_softmax logaddexp "
        "logsumexp matmul max maximum mean min minimum norm prod relu reshape "
        "segment_sum sigmoid sign silu sin sinh softmax softplus sqrt square squeeze "
        "stack std stop_gradient sum swapaxes take_along_axis tan tanh transpose var "
        "where"
    ).split(),
    "symgrad.arrays": (
        "argsort broadcast_to cross cumprod diff expand_dims eye flip full_like "
        "moveaxis ones_like outer pad repeat roll sliding_window_view sort split tile "
        "tril triu zeros_like"
    ).split(),
    "symgrad.contractions": ["einsum"],
    "symgrad.linalg": ["det", "inv", "slogdet", "solve"],
    "symgrad.ir": ["ShapeError"],
    "symgrad.symbolic": ["UnsupportedError"],
    "symgrad.reverse": ["GradientError"],
}
_HOME = {name: module for module, names in _API.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name):
    if name == "linalg":  # sg.linalg.slogdet, as torch.linalg's (and np.linalg's)
        return _import_module("symgrad.linalg")
    if name in _HOME:
        value = getattr(_import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    torch_spelling = _import_module("symgrad.model").TORCH_SPELLINGS.get(name)
    hint = f"; use {torch_spelling}" if torch_spelling else ""
    raise AttributeError(f"module 'symgrad' has no attribute {name!r}{hint}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
