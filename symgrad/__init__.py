"""symgrad: a symbolic differentiation compiler that writes standalone NumPy modules.

Declare a model with ``sg.Model``; ``symgrad build`` derives its gradients with SymPy and
writes a NumPy module with ``forward``/``backward``/``value_and_grad``.
"""

__version__ = "0.1.0"

from .grad import GradientError
from .ir import ShapeError
from .model import (
    Cond,
    Expr,
    Model,
    ModelError,
    abs,
    cos,
    elementwise,
    exp,
    log,
    log_softmax,
    logsumexp,
    max,
    mean,
    relu,
    reshape,
    sigmoid,
    sin,
    softmax,
    softplus,
    sqrt,
    sum,
    take_along_axis,
    tanh,
    transpose,
    where,
)
from .symbolic import UnsupportedError

__all__ = [
    "Cond", "Expr", "GradientError", "Model", "ModelError", "ShapeError",
    "UnsupportedError", "abs", "cos", "elementwise", "exp", "log", "log_softmax",
    "logsumexp", "max", "mean", "relu", "reshape", "sigmoid", "sin", "softmax",
    "softplus", "sqrt", "sum", "take_along_axis", "tanh", "transpose", "where",
]  # fmt: skip
