"""The declaration API: ``sg.Model`` and the expressions users build models from.

``Expr`` wraps an IR node and gives it NumPy's operators; shapes are checked as each
operation is declared, so a mismatch is reported at the line that caused it.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import inspect
import itertools
import keyword
import math
import numbers
import operator
import re
import sys
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import sympy as sp

import symgrad

from . import ops
from . import symbolic as ew
from .ir import (
    Node,
    ShapeError,
    as_dim,
    as_shape,
    format_shape,
    is_size,
    size,
    size_symbol,
    toposort,
)


class ModelError(ValueError):
    """A model declaration is invalid: a bad or duplicate name, a non-scalar loss, ..."""


# Names the generated module itself uses; a model name equal to one of them would shadow it.
RESERVED = {
    "np", "numpy", "params", "inputs", "cache", "grads", "outputs", "loss", "grad_loss",
    "forward", "backward", "value_and_grad", "init_params", "hessian", "hvp",
    "PARAMS", "INPUTS", "OUTPUTS", "seed", "rng", "math",
}  # fmt: skip
_TEMPORARY = re.compile(r"t\d+|grad_.*|_.*")


def check_name(name: object, what: str) -> str:
    """Reject anything that is not a plain identifier we can safely write into source."""
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
        if isinstance(name, str) and name.isidentifier():  # 'modèle'
            raise ModelError(
                f"{what} name {name!r} is not ASCII: generated source takes names of "
                "ASCII letters, digits and _"
            )
        raise ModelError(f"{what} name {name!r} is not a Python identifier")
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ModelError(f"{what} name {name!r} is a Python keyword")
    if name in RESERVED or hasattr(builtins, name):
        raise ModelError(
            f"{what} name {name!r} would shadow a name the generated module uses"
        )
    if _TEMPORARY.fullmatch(name):
        raise ModelError(
            f"{what} name {name!r} is reserved for generated code (t<N>, grad_*, _*)"
        )
    return name


def _number(value) -> sp.Expr:
    """A Python number as a SymPy constant: integers exact, other floats as ``sp.Float``,
    which prints back as written (0.1) and which SymPy never factors out of a sum (an
    exact ``Rational(1e-5)`` turned ``x + 1e-5`` into ``(590295810358705651712 x +
    5902958103587057) / 590295810358705651712``)."""
    if isinstance(value, sp.Expr) and value.is_number and value.is_real:
        value = value if value.is_Rational else float(value)  # sp.pi, sp.sqrt(2)
    if hasattr(type(value), "__array__"):  # NumPy's and torch's arrays (not classes)
        if np.ndim(value):
            kind = (
                "NumPy array" if isinstance(value, np.ndarray) else type(value).__name__
            )
            raise TypeError(
                f"expected an sg expression or a real number, got a {kind} of shape "
                f"{tuple(np.shape(value))}: declare array data with m.input(name, shape) and "
                "pass it in the inputs"
            )
        value = value.item()  # np.float64(1) < x, torch.tensor(2.0) * x
    if isinstance(value, Cond):
        raise TypeError(AS_NUMBERS)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"expected an sg expression or a real number, got {value!r}")
    if not math.isfinite(value):
        raise ModelError(
            f"non-finite constant {value!r} is not supported; to mask, use a large "
            "finite value such as -1e30 (exp of it is 0 just the same)"
        )
    if (
        float(value).is_integer() and -(2**53) < value < 2**53
    ):  # 2.0 is 2: x**2, not x**2.0
        return sp.Integer(int(value))
    return sp.Float(float(value))  # (an exact 10**300 would print as 301 digits)


def requirement(need: sp.Expr) -> str:
    """``need >= 0`` as a person says it: ``n >= 3`` for ``n - 3``; ``C - B != 0``."""
    if isinstance(need, sp.Ne):
        return f"{need.lhs} != 0"
    least = lower_bound(need)
    return f"{least[0]} >= {least[1]}" if least else f"{need} >= 0"


def holds(need: sp.Expr, sizes: dict) -> bool:
    """Whether a size requirement holds at these sizes."""
    value = need.xreplace(sizes)
    return bool(value) if isinstance(need, sp.Ne) else value >= 0


def lower_bound(need: sp.Expr) -> tuple[sp.Symbol, int] | None:
    """``(n, 3)`` when the requirement ``need >= 0`` is ``n - 3 >= 0``, i.e. ``n >= 3``."""
    symbols = need.free_symbols
    if len(symbols) != 1:
        return None
    (symbol,) = symbols
    rest = need - symbol
    return (symbol, int(-rest)) if rest.is_Integer else None


_SIZE_UFUNCS = ("add", "subtract", "multiply", "divide", "power")  # Size's arithmetic
_OPERATORS = {  # NumPy's binary ufuncs: (our method, our reflected method)
    "add": ("__add__", "__radd__"),
    "subtract": ("__sub__", "__rsub__"),
    "multiply": ("__mul__", "__rmul__"),
    "divide": ("__truediv__", "__rtruediv__"),
    "power": ("__pow__", "__rpow__"),
    "matmul": ("__matmul__", "__rmatmul__"),
    "less": ("__lt__", "__gt__"),
    "less_equal": ("__le__", "__ge__"),
    "greater": ("__gt__", "__lt__"),
    "greater_equal": ("__ge__", "__le__"),
    "equal": ("__eq__", "__eq__"),
    "not_equal": ("__ne__", "__ne__"),
}


def _numpy_refused(name: str, where: str = "") -> TypeError:
    """np.exp(x), scipy.special's ufuncs (expit, ndtr) or torch's functions (where
    "torch.") on an expression."""
    if name in symgrad.__all__:
        hint = f"use sg.{name}"
    else:
        hint = "use " + TORCH_SPELLINGS.get(name, "sg's functions")
    where = where or ("numpy." if hasattr(np, name.partition(".")[0]) else "")
    return TypeError(f"{where}{name} cannot take a symgrad expression; {hint}")


class Expr:
    """A symbolic array: the result of an operation in a model."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """``np.float64(2) * x`` arrives as np.multiply: do it with our operators.
        Any other ufunc (np.exp(x)) cannot see inside an expression: name the sg twin.
        """
        if ufunc.__name__ not in _OPERATORS or method != "__call__" or kwargs:
            raise _numpy_refused(
                ufunc.__name__ if method == "__call__" else f"{ufunc.__name__}.{method}"
            )
        forward, reflected = _OPERATORS[ufunc.__name__]
        a, b = inputs
        if isinstance(a, Expr):
            return getattr(a, forward)(b)
        return getattr(b, reflected)(a)

    def __array_function__(self, func, types, args, kwargs):
        """np.sum(x) and friends cannot see inside an expression: name the sg twin."""
        raise _numpy_refused(func.__name__)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch.tanh(x), torch.special.i0(x): torch's functions ask an expression
        for this before refusing it; name the sg twin, as for NumPy's."""
        name = getattr(func, "__name__", str(func))
        if name in ("min", "max") and len(args) > 1 and not isinstance(args[1], int):
            raise TypeError(  # torch.min(q1, q2): elementwise, where sg.min reduces
                f"torch.{name} cannot take a symgrad expression; use sg.{name}imum(a, "
                f"b) (torch.{name}(x, dim) is sg.{name}(x, axis))"
            )
        raise _numpy_refused(
            name.removeprefix("special_").removeprefix("linalg_"), "torch."
        )

    def __init__(self, node: Node):
        self.node = node

    @property
    def shape(self) -> tuple:
        return tuple(d if isinstance(d, int) else Size(d) for d in self.node.shape)

    @property
    def ndim(self) -> int:
        return self.node.ndim

    def __repr__(self) -> str:
        return f"Expr({self.node.describe()}, shape={format_shape(self.node.shape)})"

    def __add__(self, o):
        return _elementwise(lambda a, b: a + b, self, o)  # noqa: E704

    def __radd__(self, o):
        return _elementwise(lambda a, b: a + b, o, self)  # noqa: E704

    def __sub__(self, o):
        return _elementwise(lambda a, b: a - b, self, o)  # noqa: E704

    def __rsub__(self, o):
        return _elementwise(lambda a, b: a - b, o, self)  # noqa: E704

    def __mul__(self, o):
        return _elementwise(lambda a, b: a * b, self, o)  # noqa: E704

    def __rmul__(self, o):
        return _elementwise(lambda a, b: a * b, o, self)  # noqa: E704

    def __truediv__(self, o):
        return _elementwise(lambda a, b: a / b, self, o)  # noqa: E704

    def __rtruediv__(self, o):
        return _elementwise(lambda a, b: a / b, o, self)  # noqa: E704

    def __pow__(self, o):
        return _elementwise(lambda a, b: a**b, self, o)  # noqa: E704

    def __rpow__(self, o):
        return _elementwise(lambda a, b: a**b, o, self)  # noqa: E704

    def __mod__(self, o):
        raise TypeError(
            "%, // and divmod are not defined on expressions (steps, with no "
            f"gradient rule); use {TORCH_SPELLINGS['mod']}"
        )

    __rmod__ = __floordiv__ = __rfloordiv__ = __divmod__ = __rdivmod__ = __mod__

    def __neg__(self):
        return _elementwise(lambda a: -a, self)  # noqa: E704

    def __abs__(self):
        return _elementwise(sp.Abs, self)  # noqa: E704

    def __pos__(self):
        return self  # noqa: E704

    def __lt__(self, o):
        return _compare(sp.StrictLessThan, self, o)  # noqa: E704

    def __le__(self, o):
        return _compare(sp.LessThan, self, o)  # noqa: E704

    def __gt__(self, o):
        return _compare(sp.StrictGreaterThan, self, o)  # noqa: E704

    def __ge__(self, o):
        return _compare(sp.GreaterThan, self, o)  # noqa: E704

    def __eq__(self, o):  # a condition, as in NumPy and torch (labels == 2)
        if isinstance(o, type):  # NumPy's dtype checks ask x in (np.float64, ...)
            return NotImplemented
        return _compare(sp.Eq, self, o)

    def __ne__(self, o):
        return _compare(sp.Ne, self, o)  # noqa: E704

    def __and__(self, other):  # a bool input: mask & (x > 0)
        return _condition(self, "&") & other

    def __or__(self, other):
        return _condition(self, "|") | other

    def __invert__(self):
        return ~_condition(self, "~")

    def __matmul__(self, other: Expr) -> Expr:
        return Expr(ops.matmul(*_values([self, _expr(other, "@")], "@")))

    def __rmatmul__(self, other: Expr) -> Expr:
        return Expr(ops.matmul(*_values([_expr(other, "@"), self], "@")))

    def __getitem__(self, key) -> Expr:
        if any(
            isinstance(k, Cond) for k in (key if isinstance(key, tuple) else (key,))
        ):
            raise ShapeError(
                f"index of {self.node.describe()} by a condition (x[x > 0]): the "
                "result's size would depend on the data; use sg.where(cond, x, 0.0) "
                "(sg.sum of it sums the selected entries)"
            )
        if isinstance(key, Expr):
            (source,) = _values([self], "gather")
            return Expr(ops.gather(source, key.node))
        if any(_is_index_list(k) for k in (key if isinstance(key, tuple) else (key,))):
            return _pick(self, key if isinstance(key, tuple) else (key,))
        if any(isinstance(k, Expr) for k in (key if isinstance(key, tuple) else ())):
            raise ShapeError(
                "index arrays are supported alone only: x[idx], not x[idx, 0]; "
                "for pairs A[i, j], sg.take_along_axis(A[i], j[..., None], "
                "axis=-1)[..., 0]; the columns A[:, idx] are A.T[idx].T"
            )
        return Expr(ops.index(self.node, ops.normalize_index(self.node, key)))

    def __bool__(self):
        raise TypeError(
            "a symbolic expression has no truth value; use sg.where for branches"
        )

    def __round__(self, ndigits=None):
        raise TypeError(f"round() of an expression: use {TORCH_SPELLINGS['round']}")

    def __iter__(self):
        # without this, Python iterates by x[0], x[1], ... and a symbolic axis never ends
        raise TypeError(
            f"cannot iterate over {self.node.describe()} (builtin sum() and list() "
            "iterate): use sg.sum(x, axis=0) to reduce, or index it: x[0], x[1:]"
        )

    def __array__(self, dtype=None, copy=None):
        # np.asarray(x) in NumPy or SciPy code (scipy.stats.norm.cdf(x)): no values yet
        raise TypeError(
            f"{self.node.describe()} is symbolic: NumPy and SciPy functions cannot take "
            "it (np.asarray, np.array, scipy.stats); use sg's functions "
            "(scipy.stats.norm.cdf(x) is 0.5 * sg.erfc(-x / sqrt(2)), a logpdf is its "
            "formula written out), sg.stack for a list of expressions"
        )

    __hash__ = object.__hash__

    @property
    def T(self) -> Expr:  # noqa: N802 - NumPy's name
        return Expr(ops.transpose(self.node, fold=False))

    def transpose(self, *axes) -> Expr:
        if self.ndim == 2 and axes in ((0, 1), (-2, -1), (0, -1), (-2, 1)):
            raise ShapeError(  # NumPy's identity, where torch swaps the two axes
                f"x.transpose{axes} of the 2-D {self.node.describe()} keeps its axes "
                "in place (NumPy's permutation; torch's transpose swaps them): write "
                "x.T or x.swapaxes(0, 1)"
            )
        axes = (
            axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        )
        return Expr(ops.transpose(self.node, axes or None, fold=False))

    def reshape(self, *shape) -> Expr:
        shape = (
            shape[0]
            if len(shape) == 1 and isinstance(shape[0], (tuple, list))
            else shape
        )
        return reshape(self, shape)

    def sum(self, axis=None, keepdims=False) -> Expr:
        return sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False) -> Expr:
        return mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False) -> Expr:
        return max(self, axis, keepdims)

    def min(self, axis=None, keepdims=False) -> Expr:
        return min(self, axis, keepdims)

    def var(self, axis=None, keepdims=False, ddof=0) -> Expr:
        return var(self, axis, keepdims, ddof)

    def std(self, axis=None, keepdims=False, ddof=0) -> Expr:
        return std(self, axis, keepdims, ddof)

    def cumsum(self, axis=None) -> Expr:
        return cumsum(self, axis)

    def clip(self, a_min=None, a_max=None, *, min=None, max=None) -> Expr:  # noqa: A002
        return clip(self, a_min, a_max, min=min, max=max)

    def prod(self, axis=None, keepdims=False) -> Expr:
        return prod(self, axis, keepdims)

    def dot(self, other) -> Expr:
        return dot(self, other)

    def squeeze(self, axis=None) -> Expr:
        return squeeze(self, axis)

    def swapaxes(self, axis1: int, axis2: int) -> Expr:
        return swapaxes(self, axis1, axis2)

    def __float__(self):
        raise TypeError(
            f"{self.node.describe()} is symbolic, not a number: math functions and "
            "float() cannot take it; use sg's functions (sg.exp, sg.sqrt, "
            "sg.arctan2 for math.atan2, ...)"
        )

    def __setitem__(self, key, value):
        raise TypeError(
            "an expression cannot be assigned into (x[...] = v, torch's way of "
            "building an array): build it with sg.stack or sg.concatenate of its "
            "parts, or sg.where(mask, v, x)"
        )

    def __len__(self) -> int:
        if not self.node.shape:
            raise TypeError(
                "len() of a 0-d expression: a matrix of 0-d expressions is "
                "sg.stack([sg.stack([a, b]), sg.stack([c, d])]), not torch.tensor or "
                "np.array of them"
            )
        first = self.node.shape[0]
        if not isinstance(first, int):
            raise TypeError(
                f"len() of {self.node.describe()}: its first axis {first} is symbolic; "
                "use x.shape[0] (a size that does arithmetic)"
            )
        return first

    def flatten(self, *torch_dims) -> Expr:
        if torch_dims:  # NumPy's flatten has no axes (its first argument is order=)
            raise TypeError(
                f"x.flatten({', '.join(map(str, torch_dims))}) is torch's (from an "
                "axis on); NumPy's "
                "x.flatten() flattens all axes: write x.reshape((x.shape[0], -1))"
            )
        return reshape(self, (-1,))

    def __getattr__(self, name: str):
        """x.exp(), x.view(...) are torch's spellings: name NumPy's."""
        hint = TORCH_SPELLINGS.get(name)
        if hint is None and not name.startswith("__") and name in symgrad.__all__:
            params = list(inspect.signature(getattr(symgrad, name)).parameters.values())
            required = [
                p
                for p in params
                if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
            ]
            if params[0].name not in ("x", "a", "y"):  # einsum(subscripts, ...)
                hint = f"sg.{name}(...)"
            else:
                hint = f"sg.{name}(x{', ...' if len(required) > 1 else ''})"
        if hint is None and name.endswith("_") and not name.startswith("_"):
            base = name[:-1]  # torch's x.add_(v), x.clamp_(...)
            twins = [f"x.{base}(...)"] if hasattr(Expr, base) else []
            twins += [f"sg.{base}(x, ...)"] if base in symgrad.__all__ else []
            hint = (
                TORCH_SPELLINGS.get(base)
                or " or ".join(twins)
                or "sg's functions or an operator"
            ) + " (expressions are never changed in place)"
        if hint:
            raise AttributeError(f"an expression has no method {name!r}; use {hint}")
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )


TORCH_SPELLINGS = {  # torch's tensor methods, as NumPy (and sg) spell them
    "view": "x.reshape(...)",
    "contiguous": "x itself: drop .contiguous() (x.reshape takes any layout)",
    "clone": "x itself (expressions are never changed in place)",
    "to": "x itself: drop .to(...) (every expression is float64, on the CPU)",
    "double": "x itself: drop .double() (every expression is float64)",
    "dtype": "-1e30 for a mask value, not torch.finfo(x.dtype).min (every expression "
    "is float64, and exp(-1e30) is 0 just the same)",
    "dim": "x.ndim (torch.distributions cannot take an expression either: "
    "Categorical(logits=x).log_prob(a) is sg.take_along_axis(sg.log_softmax(x, "
    "axis=-1), a[..., None], axis=-1)[..., 0], a Normal's log_prob its formula; nor "
    "can nn.Embedding.from_pretrained: the rows of a table E picked by an int64 "
    "input y are E[y])",
    "mT": "x.swapaxes(-2, -1)",
    "rsqrt": "1 / sg.sqrt(x)",
    "permute": "x.transpose(...)",
    "unsqueeze": "sg.expand_dims(x, axis)",
    "clamp": "x.clip(a_min, a_max)",
    "mm": "x @ y",
    **{
        name: f"x {operator} v"
        for name, operator in (
            ("eq", "=="),
            ("ne", "!="),
            ("lt", "<"),
            ("le", "<="),
            ("gt", ">"),
            ("ge", ">="),
        )
    },
    **dict.fromkeys(
        ("new_zeros", "new_ones", "new_full", "new_empty", "zero"),
        "sg.zeros_like(x), sg.ones_like(x) or sg.full_like(x, v) (of an expression "
        "of the wanted shape)",
    ),
    "fill_diagonal": "x * (1 - sg.eye(n)) + v * sg.eye(n)",
    "copy": "the new value itself",
    "linear": "x @ W.T + b",
    "cosine_similarity": "sg.sum(a * b, axis=-1) / sg.maximum(sg.norm(a, axis=-1) * "
    "sg.norm(b, axis=-1), eps)",
    **dict.fromkeys(
        ("randn_like", "rand_like", "randn", "rand", "randint", "normal", "bernoulli"),
        "noise drawn in NumPy and passed in as an input (m.input): a model is a "
        "deterministic function of its params and inputs",
    ),
    "dropout": "x itself at evaluation; in training, x * keep / (1 - p) with a 0/1 "
    "keep mask drawn in NumPy and passed as an input (m.input)",
    "glu": "a * sg.sigmoid(b) with a, b = sg.split(x, 2, axis=-1)",
    "baddbmm": "beta * c + alpha * (a @ b)",
    "at": "sg.where(mask, v, x) or sg.concatenate of slices and v (JAX's "
    "x.at[i].set(v): expressions are never changed in place)",
    "take": "x[idx] (rows of axis 0, idx an int64 input) or sg.take_along_axis(x, idx, "
    "axis)",
    "power": "x ** p",
    **dict.fromkeys(
        ("array", "asarray", "tensor"),
        "sg.stack([...]) for a vector of expressions; data is an input (m.input)",
    ),
    "inner": "a @ b (vectors) or sg.dot(a, b)",
    "vdot": "sg.sum(a * b)",
    "nn": "sg.relu, sg.gelu, sg.silu, sg.softplus, sg.sigmoid, sg.log_softmax, ... "
    "(the activations are at the top level: there is no sg.nn)",
    "interp": "hat functions over fixed knots xk (spacing h): sg.sum(fk * "
    "sg.relu(1 - sg.abs(x[..., None] - xk) / h), axis=-1) (np.interp inside the "
    "knots)",
    **dict.fromkeys(
        ("mod", "remainder", "fmod"),
        "sg.arctan2(sg.sin(t), sg.cos(t)) to wrap an angle t to (-pi, pi]; in general "
        "x - c * k with k = x // c computed in NumPy and passed as an input",
    ),
    "bmm": "x @ y",
    "expand_as": "sg.broadcast_to(x, y.shape)",
    "astype": "x itself: drop .astype(...) (every expression is float64)",
    **dict.fromkeys(
        ("ndtri", "erfinv"),
        "none: sg has no inverse normal CDF; compute the normal scores of data in NumPy "
        "(scipy.special.ndtri) and pass them as an input",
    ),
    **dict.fromkeys(
        ("stft", "istft", "spectrogram"),
        "frames sg.sliding_window_view(x, n_fft, axis=-1)[..., ::hop, :] * window, "
        "then the DFT as matrix products (re = frames @ C.T, im = -(frames @ S.T); C, "
        "S, window: inputs); an inverse, the transposed products overlap-added",
    ),
    **dict.fromkeys(
        ("view_as_real", "real", "imag", "view_as_complex", "complex"),
        "real and imaginary parts as two real arrays (re = y @ C.T, im = -(y @ S.T)): "
        "expressions are real",
    ),
    "angle": "sg.arctan2(im, re) (the phase of re + i im)",
    "lfilter": "a recursion over the samples: y = [] and y.append(b0 * x[t] - a1 * "
    "y[-1] - ...) in a Python loop over a fixed length, then sg.stack(y)",
    **dict.fromkeys(
        ("rfft", "fft", "fft_rfft", "fft_fft"),
        "the DFT as matrix products with cos and sin matrices passed as inputs: "
        "re = y @ C.T, im = -(y @ S.T), C[k, n] = cos(2 pi k n / N)",
    ),
    **dict.fromkeys(
        ("convolve", "correlate"),
        "sg.einsum('...nk,k->...n', sg.sliding_window_view(x, len(h), axis=-1), h) "
        "(correlate; reverse h for convolve, sg.pad x first for mode='full')",
    ),
    "sinc": "sg.where(small, 1 - x**2 / 6, sg.sin(xs) / xs) with xs = sg.where(small, "
    "1.0, x), small = sg.abs(x) < 1e-4 (torch's sinc is of pi x)",
    "matrix_exp": "none: there is no matrix exponential; for a 3x3 skew matrix K of "
    "angle t, Rodrigues' I + sin(t) / t K + (1 - cos(t)) / t**2 K @ K",
    "hypot": "sg.norm(sg.stack([a, b]), axis=0)",
    "clamp_min": "x.clip(a_min, None)",
    "clamp_max": "x.clip(None, a_max)",
    "mul": "x * y",
    "add": "x + y",
    "sub": "x - y",
    "div": "x / y",
    "kron": "sg.einsum('ij,kl->ikjl', a, b).reshape((n * p, m * q)) (a: (n, m), "
    "b: (p, q))",
    "logit": "sg.log(p) - sg.log1p(-p)",
    **dict.fromkeys(
        ("trapezoid", "trapz"), "sg.sum((f[1:] + f[:-1]) * sg.diff(t)) / 2"
    ),
    "polyval": "Horner's loop: y = c[0]; then y = y * x + c[k] for each next k",
    "broadcast_tensors": "the log-density written out (torch.distributions broadcast "
    "their arguments first): Normal(mu, sigma).log_prob(y) = -0.5 * ((y - mu) / "
    "sigma) ** 2 - sg.log(sigma) - 0.5 * log(2 pi); .rsample() is mu + sigma * eps "
    "with the noise eps an m.input; kl_divergence(Normal(m1, s1), Normal(m2, s2)) = "
    "sg.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5; or "
    "sg.broadcast_to(x, shape)",
    "masked_fill": "sg.where(mask, value, x)",
    "detach": "sg.stop_gradient(x)",
    "pow": "x ** p",
    "matmul": "x @ y",
    "amax": "x.max(axis)",
    "amin": "x.min(axis)",
    "size": "x.shape",
    "t": "x.T",
    "repeat": "sg.tile(x, reps) (torch's x.repeat is NumPy's tile)",
    "repeat_interleave": "sg.repeat(x, repeats, axis)",
    "expand": "sg.broadcast_to(x, shape)",
    "chunk": "sg.split(x, sections, axis)",
    "float": "sg.where(mask, 1.0, 0.0) (a mask is a condition, not a number)",
    "diagonal": "sg.einsum('...ii->...i', x)",
    "trace": "sg.einsum('ii', x)",
    "logdet": "sg.slogdet(x)[1] (log |det x|)",
    **dict.fromkeys(
        ("lu", "lu_factor", "lu_unpack"),
        "sg.slogdet(w)[1] for log |det w| (there is no LU); Glow's LU-parameterised "
        "w is p @ (sg.tril(l, -1) + sg.eye(n)) @ (sg.triu(u, 1) + sg.eye(n) * s), "
        "with p a fixed permutation input",
    ),
    "solve_triangular": "sg.solve(a, b) (a triangular a is solved as any square one)",
    "diag_embed": "sg.eye(n) * v[..., None, :] (v on the diagonal of each matrix)",
    "random": "noise drawn in NumPy and passed in as an input (m.input): a model is "
    "a deterministic function of its params and inputs",
    "inverse": "sg.inv(x)",
    "det": "sg.det(x)",
    "unfold": "sg.sliding_window_view(x, size, axis) (a step: then [..., ::step, :])",
    **dict.fromkeys(
        ("index_add", "index_add_"),
        "x + sg.segment_sum(source, index, x.shape[0]) (rows of axis 0)",
    ),
    **dict.fromkeys(
        ("scatter_add", "add.at", "segment_reduce"),
        "sg.segment_sum(source, index, n) (rows of axis 0)",
    ),
    **dict.fromkeys(
        ("embedding_bag", "segment_mean"),
        "sg.segment_sum(E[ids], bag_of_each_id, n_bags) (the rows of each bag "
        "summed; mode='mean': divided by each bag's count, an input)",
    ),
    "index_select": "x[idx] (index_select(x, 0, idx); another axis: "
    "x.swapaxes(0, axis)[idx].swapaxes(0, axis))",
    **dict.fromkeys(
        ("round", "rint", "floor", "ceil", "trunc"),
        "k = np.round(x / c) (or floor) computed in NumPy and passed as an input "
        "(rounding has no gradient): the minimum image is d - L * k",
    ),
    "pdist": "sg.norm(x[i] - x[j], axis=-1) with (i, j) = np.triu_indices(n, 1) "
    "(torch.cdist: sg.norm(a[:, None] - b[None], axis=-1))",
    "bincount": "np.bincount on the data (counts are data: pass them as an input), "
    "or sg.segment_sum of ones",
    "margin_ranking_loss": "sg.mean(sg.relu(-y * (x1 - x2) + margin))",
    "triplet_margin_loss": "sg.mean(sg.relu(sg.norm(a - p, axis=-1) - sg.norm(a - "
    "n, axis=-1) + margin))",
    "sort": "sg.sort(x, axis)",
    "argsort": "sg.argsort(x, axis)",
    "topk": "sg.flip(sg.sort(x, axis=-1), -1)[..., :k]",
    "median": "sg.sort(x, axis=-1)[..., n // 2] (n odd)",
    "cat": "sg.concatenate(xs, axis)",
    "cholesky": "sg.solve and sg.slogdet (there is no cholesky)",
    "svd": "none: there is no SVD; for a best-fit rotation (Kabsch, Procrustes), "
    "learn it as a unit quaternion or a Rodrigues vector and minimise the residual",
    **dict.fromkeys(("deg2rad", "radians"), "x * (math.pi / 180)"),
    **dict.fromkeys(("rad2deg", "degrees"), "x * (180 / math.pi)"),
    "vecdot": "sg.sum(a * b, axis=-1)",
    "acos": "sg.arccos(x)",
    "asin": "sg.arcsin(x)",
    "atan": "sg.arctan(x)",
    "acosh": "sg.arccosh(x)",
    "asinh": "sg.arcsinh(x)",
    "atanh": "sg.arctanh(x)",
    "atan2": "sg.arctan2(y, x)",
    **dict.fromkeys(("logsigmoid", "log_sigmoid"), "-sg.softplus(-x)"),
    "softmin": "sg.softmax(-x, axis) (a soft minimum itself: -g * sg.logsumexp(-x / g, "
    "axis))",
    "nan_to_num": "np.nan_to_num on the data before passing it (a nan is not found "
    "in a model: x == x is taken as true)",
    "logcumsumexp": "a running sg.logaddexp along a fixed-size axis (y = [x[0]]; then "
    "y.append(sg.logaddexp(y[-1], x[i])); sg.stack(y)); sg.log(sg.cumsum(sg.exp(x - "
    "m))) + m with m = sg.max(x) is shorter but gives -inf where a prefix lies ~745 "
    "below the max",
    "xlogy": "x * sg.log(sg.where(x == 0, 1.0, y)) (0 where x is 0, gradient too)",
    "item": "the generated module's results (out['loss']): an expression is symbolic, "
    "a number only once the module runs",
    "expit": "sg.sigmoid(x)",
    "i0": "its series, sum((x / 2) ** (2 * k) / math.factorial(k) ** 2 for k in "
    "range(K)) (K ~ 30 for |x| < 20; beyond, exp(|x|) / sqrt(2 pi |x|) to first order)",
    "special": "sg's functions directly (sg.erf, sg.erfc, sg.lgamma, sg.digamma, "
    "sg.log_softmax): there is no sg.special",
    "gammaln": "sg.lgamma(x)",
    **dict.fromkeys(
        ("ndtr", "norm_cdf"), "0.5 * sg.erfc(-x / sqrt(2)) (the normal CDF)"
    ),
    **dict.fromkeys(
        ("log_ndtr", "logcdf"),
        "sg.log(0.5 * sg.erfc(-x / sqrt(2))) (the normal CDF's log)",
    ),
    "stats": "the formulas: the standard normal's cdf is 0.5 * sg.erfc(-x / sqrt(2)), "
    "its logcdf sg.log(0.5 * sg.erfc(-x / sqrt(2))), a logpdf is its formula written "
    "out",
    "erfcx": "sg.exp(x**2) * sg.erfc(x) (inf for x < -26.6); for log erfc(x) itself "
    "write sg.log(sg.erfc(x)), whose derivatives symgrad keeps finite in the tail",
    **dict.fromkeys(
        ("polygamma", "trigamma"),
        "sg.digamma(x) for order 0; higher orders are not available (trigamma is "
        "only sg.digamma's derivative)",
    ),
    "betaln": "sg.lgamma(a) + sg.lgamma(b) - sg.lgamma(a + b)",
    "gamma": "sg.exp(sg.lgamma(x)) (x > 0)",
    "log1mexp": "sg.log(-sg.expm1(x)) for x < 0 (near 0; below -log 2, "
    "sg.log1p(-sg.exp(x)) is the more accurate)",
    "xlog1py": "x * sg.log1p(sg.where(x == 0, 0.0, y)) (0 where x is 0, gradient too)",
    "argmax": "index 0 along axis of sg.argsort(-x, axis) (the first of ties)",
    "argmin": "index 0 along axis of sg.argsort(x, axis) (the first of ties)",
    "layer_norm": "(x - sg.mean(x, -1, keepdims=True)) / sg.sqrt(sg.var(x, -1, "
    "keepdims=True) + eps) * g + b",
    "relu6": "sg.minimum(sg.relu(x), 6.0)",
    "leaky_relu": "sg.where(x > 0, x, slope * x)",
    "elu": "sg.where(x > 0, x, alpha * sg.expm1(sg.minimum(x, 0.0)))",
    "mse_loss": "sg.mean((a - b) ** 2)",
    **dict.fromkeys(
        ("huber_loss", "smooth_l1_loss"),
        "sg.mean(sg.where(sg.abs(d) < delta, 0.5 * d**2, delta * (sg.abs(d) - "
        "0.5 * delta))) with d = a - b (smooth_l1: that / delta)",
    ),
    "gaussian_nll_loss": "0.5 * sg.mean(sg.log(var) + (y - mu) ** 2 / var)",
    "poisson_nll_loss": "sg.mean(sg.exp(z) - k * z) (z: the log rate, log_input=True)",
    "binary_cross_entropy_with_logits": "sg.mean(sg.softplus(z) - t * z) (stable for "
    "any z)",
    "kl_div": "sg.sum(p * (sg.log(p) - log_q)) / batch (reduction='batchmean'; p > 0)",
    "cross_entropy": "-sg.mean(sg.take_along_axis(sg.log_softmax(logits, axis=1), "
    "y[:, None], axis=1)) (y: an int64 input; weights, ignore_index: sg.where on the "
    "per-row terms)",
    "nll_loss": "-sg.mean(sg.take_along_axis(logp, y[:, None], axis=1)) (y: an int64 "
    "input)",
    "embedding": "E[y] (the rows of the table E picked by an int64 input y)",
    "rms_norm": "x / sg.sqrt(sg.mean(x * x, -1, keepdims=True) + eps) * g",
    "batch_norm": "(x - sg.mean(x, 0)) / sg.sqrt(sg.var(x, 0) + eps) * g + b (training "
    "mode: the batch's biased variance)",
    "group_norm": "x.reshape((B, G, -1)) normalized over its last axis as in "
    "layer_norm, reshaped back, then * g + b per channel",
    "scaled_dot_product_attention": "sg.softmax(q @ k.swapaxes(-2, -1) / d ** 0.5 + "
    "mask, axis=-1) @ v (mask: 0 where attended, -1e30 elsewhere)",
    "normalize": "x / sg.maximum(sg.norm(x, axis=-1, keepdims=True), eps)",
    "arange": "an input holding np.arange(n) (int64 to index with)",
    "gather": "sg.take_along_axis(x, index, axis)",
    "one_hot": "sg.stack([sg.where(y == k, 1.0, 0.0) for k in range(K)], axis=-1)",
    "cdist": "sg.norm(a[:, None] - b[None], axis=-1)",
    "diag": "sg.eye(n) * v (a vector's), sg.einsum('ii->i', x) (a matrix's)",
    "values": "x.max(axis) itself: sg.max, sg.min and sg.sort return the values "
    "(torch's .values)",
    "indices": "sg.argsort(x, axis) (torch's sort(dim).indices); for max(dim).indices, "
    "index 0 along axis of sg.argsort(-x, axis) (the first of ties, as np.argmax)",
    **{  # torch.nn.functional's: the README's porting recipes (Porting from PyTorch)
        name: f"{recipe} (README: Porting from PyTorch)"
        for name, recipe in {
            "conv1d": "sg.einsum('bctk,ock->bot', "
            "sg.sliding_window_view(x, k, axis=2), W) (pad first with sg.pad)",
            "conv2d": "sg.einsum('bchwij,ocij->bohw', "
            "sg.sliding_window_view(x, (kh, kw), axis=(2, 3)), K) (pad first with "
            "sg.pad)",
            "max_pool1d": "sg.sliding_window_view(x, k, axis=2)[:, :, ::stride]"
            ".max(axis=-1)",
            "max_pool2d": "sg.sliding_window_view(x, (k, k), axis=(2, 3))"
            "[:, :, ::s, ::s].max(axis=(-2, -1))",
            "avg_pool1d": "sg.sliding_window_view(x, k, axis=2)[:, :, ::stride]"
            ".mean(axis=-1)",
            "avg_pool2d": "sg.sliding_window_view(x, (k, k), axis=(2, 3))"
            "[:, :, ::s, ::s].mean(axis=(-2, -1))",
            "interpolate": "sg.repeat(x, s, axis) on each axis (mode='nearest', an "
            "int scale s); bilinear: weighted sums of slices",
        }.items()
    },
}


class Cond:
    """A comparison of expressions: only meaningful as the condition of ``sg.where``."""

    def __init__(self, relation: sp.Basic, args: tuple[Node, ...]):
        self.relation, self.args = relation, args

    def _combine(self, other: Cond, fn) -> Cond:
        other = _condition(other, "combine with a condition")
        n = len(self.args)
        shifted = other.relation.xreplace(
            {ew.arg(i): ew.arg(n + i) for i in range(len(other.args))}
        )
        return Cond(fn(self.relation, shifted), self.args + other.args)

    def __and__(self, other):
        return self._combine(other, sp.And)  # noqa: E704

    def __or__(self, other):
        return self._combine(other, sp.Or)  # noqa: E704

    def __invert__(self):
        return Cond(sp.Not(self.relation), self.args)  # noqa: E704

    def __bool__(self):
        raise TypeError(
            "a symbolic condition has no truth value; use sg.where(cond, a, b), "
            "or sg.maximum(a, b) for max(a, b); combine conditions with & and |, "
            "not `and`, `or` or a chained a < x < b"
        )

    def _as_numbers(self, *_):
        raise TypeError(AS_NUMBERS)

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _as_numbers
    __truediv__ = __rtruediv__ = __neg__ = __array__ = _as_numbers
    __array_ufunc__ = __array_function__ = _as_numbers

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch.where(mask, x, 0.0): torch asks a condition too; name sg's twin."""
        return Expr.__torch_function__(func, types, args, kwargs)

    def __getattr__(self, name: str):
        """mask.float(), mask.sum(): torch's masks are numbers, sg's conditions."""
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"a comparison has no {name!r}: {AS_NUMBERS}")


AS_NUMBERS = (
    "a comparison is a condition for sg.where, not numbers; as numbers it is "
    "sg.where(cond, 1.0, 0.0) (torch's mask.float(); sg.sum of that counts)"
)


def _condition(x, what: str) -> Cond:
    """A comparison, or a bool input (a mask) as the condition it is."""
    if isinstance(x, Expr) and x.node.dtype == "bool":
        return Cond(ew.arg(0), (x.node,))  # (a placeholder is a SymPy Boolean too)
    if not isinstance(x, Cond):
        raise TypeError(
            f"{what} needs a comparison of expressions (x > 0) or a bool input, "
            f"got {x!r}"
        )
    return x


def _expr(x, what: str) -> Expr:
    if isinstance(x, Cond):
        raise TypeError(
            f"{what} needs sg expressions, got a comparison: sg.where(cond, 1.0, 0.0) "
            "is it as numbers"
        )
    if isinstance(x, np.ndarray):
        raise TypeError(
            f"{what} needs sg expressions, got a NumPy array of shape {x.shape}: "
            "declare array data with m.input(name, shape) and pass it in the inputs"
        )
    if isinstance(x, numbers.Number):
        raise TypeError(
            f"{what} needs sg expressions, got {x!r}: a constant entry is "
            "sg.full_like(e, value) (sg.zeros_like(e) for 0) of an expression e of "
            "its shape"
        )
    if isinstance(x, (list, tuple)):
        raise TypeError(
            f"{what} takes one expression, got a {type(x).__name__} of "
            f"{len(x)}: sg.stack(xs) them first, then reduce over axis 0 (or "
            "pairwise: sg.minimum, sg.maximum, sg.logaddexp)"
        )
    if not isinstance(x, Expr):
        raise TypeError(f"{what} needs sg expressions, got {x!r}")
    return x


def _values(xs: Sequence[Expr], what: str) -> list[Node]:
    """The nodes of ``xs``, which are computed with (and so differentiated through).

    Integer arrays only index (``X[idx]``, ``sg.take_along_axis``) and appear in
    conditions: symgrad computes in float64 and never differentiates them, so arithmetic
    on one is a declaration mistake, not something to run as integer NumPy code.
    """
    for x in xs:
        if x.node.dtype == "int64":
            raise ModelError(
                f"{what}: {x.node.describe()} is an int64 array (indices or labels) and "
                "cannot be computed with; declare it with dtype='float64' instead"
            )
        if x.node.dtype == "bool":
            raise ModelError(
                f"{what}: {x.node.describe()} is a bool array (a mask) and cannot be "
                "computed with; use it as a condition: sg.where(mask, x, 0)"
            )
    return [x.node for x in xs]


def _size_arithmetic(fn: Callable[[sp.Expr, sp.Expr], sp.Expr]):
    def op(self, other):
        if isinstance(other, Size):
            return Size(fn(self.size, other.size))
        if isinstance(other, numbers.Real) and not isinstance(other, bool):
            return Size(fn(self.size, _number(other)))
        return NotImplemented  # an Expr operand: its reflected method handles it

    return op


class Size(str):
    """A symbolic size as ``Expr.shape`` gives it: its name, a str as before, which
    arithmetic reads as the size (``kl / x.shape[0]``, ``x.shape[0] - 1``, as in
    torch), not as text (``2 * x.shape[0]`` would repeat the name)."""

    def __new__(cls, size: sp.Expr):
        name = super().__new__(cls, str(size))
        name.size = size
        return name

    __add__ = _size_arithmetic(lambda a, b: a + b)
    __radd__ = _size_arithmetic(lambda a, b: b + a)
    __sub__ = _size_arithmetic(lambda a, b: a - b)
    __rsub__ = _size_arithmetic(lambda a, b: b - a)
    __mul__ = _size_arithmetic(lambda a, b: a * b)
    __rmul__ = _size_arithmetic(lambda a, b: b * a)
    __truediv__ = _size_arithmetic(lambda a, b: a / b)
    __rtruediv__ = _size_arithmetic(lambda a, b: b / a)
    __pow__ = _size_arithmetic(lambda a, b: a**b)
    __rpow__ = _size_arithmetic(lambda a, b: b**a)

    def __neg__(self):
        return Size(-self.size)

    def __pos__(self):
        return self

    def __float__(self):
        raise TypeError(
            f"the size {self} is symbolic, not a number: math functions and float() "
            f"cannot take it; use size arithmetic ({self} ** 0.5) or sg.sqrt({self})"
        )

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """np.float64(2) * size is size arithmetic; np.sqrt(size) is not."""
        name = ufunc.__name__
        if name in _SIZE_UFUNCS and method == "__call__" and not kwargs:
            a, b = inputs
            forward, reflected = _OPERATORS[name]
            return getattr(a, forward)(b) if a is self else getattr(b, reflected)(a)
        twin = f"sg.{name}({self})" if name in symgrad.__all__ else "sg's functions"
        raise TypeError(
            f"numpy.{name} cannot take the symbolic size {self}; use size arithmetic "
            f"({self} ** 0.5 for a square root) or {twin}"
        )

    def __index__(self):
        raise TypeError(
            f"the size {self} is symbolic, not an int: np.zeros, range() and indexing "
            f"cannot take it; zeros of shape ({self}, H) are sg.broadcast_to("
            f"sg.zeros_like(x[:, :1]), (x.shape[0], H)), and a Python loop needs a "
            "fixed size (an int in the declared shape)"
        )

    def __floordiv__(self, other):
        raise TypeError(
            f"{self} // {other}: a symbolic size is not known to divide evenly; "
            f"declare the factor as its own axis (an input of shape ('N', {other}, ...) "
            f"rather than ({self}, ...)) or use a fixed size"
        )


def _lift(operands) -> tuple[list[sp.Expr], list[Node]]:
    """Placeholders for expression operands, SymPy constants for numbers and sizes."""
    symbols, nodes = [], []
    for x in operands:
        if isinstance(x, Expr):
            symbols.append(ew.arg(len(nodes)))
            nodes.append(x.node)
        else:
            symbols.append(x.size if isinstance(x, Size) else _number(x))
    return symbols, nodes


def _elementwise(fn: Callable[..., sp.Expr], *operands) -> Expr:
    _values([x for x in operands if isinstance(x, Expr)], "arithmetic")
    symbols, nodes = _lift(operands)
    return Expr(ops.map_(fn(*symbols), nodes))


def _compare(relation, a, b) -> Cond:
    if (
        isinstance(a, Expr)
        and isinstance(b, Expr)
        and a.node is b.node
        and relation not in (sp.StrictLessThan, sp.StrictGreaterThan)  # (false for nan)
    ):
        raise ModelError(  # SymPy folds x == x to True, where NumPy's nan == nan is False
            f"{a.node.describe()} compared with itself: symgrad takes x == x as "
            "always true and x != x as always false, so it cannot find a nan; replace "
            "nans in the data with NumPy before passing it (np.nan_to_num)"
        )
    symbols, nodes = _lift((a, b))
    ops.map_(symbols[0] + symbols[1], nodes)  # checks that the operands broadcast
    return Cond(relation(*symbols), tuple(nodes))


def where(cond: Cond, a, b) -> Expr:
    """``np.where``: ``a`` where ``cond`` holds, else ``b``; the gradient follows the branch."""
    cond = _condition(cond, "sg.where")
    n = len(cond.args)
    for x in (a, b):
        if isinstance(x, Expr) and x.node.dtype == "int64":
            raise ModelError(
                f"sg.where: {x.node.describe()} is an int64 array (indices or labels), "
                "which sg.where cannot pick from: make safe indices in NumPy before "
                "the call (np.where(y == -100, 0, y), passed as an input) and mask "
                "what they pick (sg.where(y != -100, loss, 0.0))"
            )
    _values([x for x in (a, b) if isinstance(x, Expr)], "sg.where")
    symbols, nodes = _lift((a, b))
    symbols = [
        s.xreplace({ew.arg(i): ew.arg(n + i) for i in range(len(nodes))})
        for s in symbols
    ]
    expr = sp.Piecewise((symbols[0], cond.relation), (symbols[1], True))
    return Expr(ops.map_(expr, cond.args + tuple(nodes)))


def elementwise(fn: Callable[..., sp.Expr], *args) -> Expr:
    """Apply any elementwise function given as a SymPy formula; SymPy derives its gradient.

    ``sg.elementwise(lambda z: z / (1 + sp.exp(-z)), t)``.
    """
    what = f"sg.elementwise({getattr(fn, '__name__', fn)})"
    _values([x for x in args if isinstance(x, Expr)], what)
    symbols, nodes = _lift(args)
    expr = sp.sympify(fn(*symbols))
    expr = checked_formula(expr, {ew.arg(i) for i in range(len(nodes))}, what)
    return Expr(ops.map_(expr, nodes))


def checked_formula(expr: sp.Basic, allowed: set, what: str) -> sp.Expr:
    """A formula from a user, which may use known functions of its own arguments only;
    sec, csc, cot and their hyperbolic kin become the reciprocals they are, and atan2
    symgrad's (gradient 0 at the origin, as torch's)."""
    if not isinstance(expr, sp.Expr):
        raise ModelError(f"{what}: expected a SymPy expression, got {expr!r}")
    for piecewise in expr.atoms(sp.Piecewise):
        if piecewise.args[-1].cond != sp.true:
            raise ModelError(
                f"{what}: {piecewise} has no value where no condition holds; "
                "end it with an (expr, True) branch"
            )
    expr = ew.without_reciprocal_functions(expr).replace(sp.atan2, ew.atan2)
    ew.check_supported(expr, what)
    unknown = expr.free_symbols - allowed
    if unknown:
        names = ", ".join(sorted(str(s) for s in unknown))
        raise ModelError(f"{what}: undefined symbol(s) {names} in {expr}")
    return expr


def _unary(fn: Callable[[sp.Expr], sp.Expr], name: str) -> Callable[[Expr], Expr]:
    """sg.name: ``fn`` (SymPy's, often named otherwise: acos) on every element."""

    def op(x, *more):
        if more:  # F.softplus(x, 20)
            extra = _TORCH_EXTRA_ARGUMENTS.get(name, "")
            raise TypeError(f"sg.{name}(x) takes one argument{extra}")
        return _elementwise(fn, x)

    op.__name__ = name
    return op


exp = _unary(sp.exp, "exp")
_log = _unary(sp.log, "log")


def log(x, *more):
    """sg.log. Of a product with sigmoid(u) or erfc(u) factors (composed from the maps
    that made them, whatever fusion decides later), a sum of logs: log sigmoid(u) as
    -softplus(-u), exact below u = -709, where sigmoid's floor exp(-709) is not; log
    erfc(u) differentiated as a whole, finite where erfc underflows (erfc_ratio)."""
    product = _positive_product(x.node) if isinstance(x, Expr) and not more else None
    if product is None:
        return _log(x, *more)
    logs = {f: _own_log(f) for f in sp.Mul.make_args(product.attrs[0])}
    rest = sp.Mul(*(f for f, own in logs.items() if own is None))
    own = sp.Add(*(own for own in logs.values() if own is not None))
    # (the rest's sign is the product's: its factors' logs may be nan, its own not)
    return Expr(ops.map_(sp.log(rest) + own, product.args, product.shape))


def _own_log(factor: sp.Expr) -> sp.Expr | None:
    """The log of a power of sigmoid(u) or erfc(u) in a form of its own, else None."""
    base, power = factor.as_base_exp()
    if isinstance(base, ew.sigmoid):
        return -power * ew.softplus(-base.args[0])
    if isinstance(base, sp.erfc):
        return power * ew.log_erfc(base.args[0], base)
    return None


def _positive_product(node: Node) -> Node | None:
    """``node`` as one map c * sigmoid(u)**p * erfc(v) ..., its factors that are such
    maps composed into it (sg.erfc(x) / 2 is one formula), or None without such
    factors."""
    if node.op != "map":
        return None
    bases = {f.as_base_exp()[0] for f in sp.Mul.make_args(node.attrs[0])}
    inner = {
        i: _positive_product(a) for i, a in enumerate(node.args) if ew.arg(i) in bases
    }
    inner = {i: m for i, m in inner.items() if m is not None}
    if inner:
        node = ops.map_(*ops.compose(node.attrs[0], node.args, inner), node.shape)
    positive = node.op == "map" and any(
        _own_log(f) is not None for f in sp.Mul.make_args(node.attrs[0])
    )
    return node if positive else None


sqrt = _unary(sp.sqrt, "sqrt")
sin = _unary(sp.sin, "sin")
cos = _unary(sp.cos, "cos")
tanh = _unary(sp.tanh, "tanh")
log1p = _unary(ew.log1p, "log1p")
expm1 = _unary(ew.expm1, "expm1")
erf = _unary(sp.erf, "erf")
erfc = _unary(ew.erfc, "erfc")
lgamma = _unary(sp.loggamma, "lgamma")  # log|Gamma(x)|: torch.lgamma, scipy's gammaln
digamma = _unary(functools.partial(sp.polygamma, 0), "digamma")  # lgamma's derivative
abs = _unary(sp.Abs, "abs")  # noqa: A001 - NumPy's name
sign = _unary(sp.sign, "sign")
tan = _unary(sp.tan, "tan")
sinh = _unary(sp.sinh, "sinh")
cosh = _unary(sp.cosh, "cosh")
arcsin = _unary(sp.asin, "arcsin")
arccos = _unary(sp.acos, "arccos")
arctan = _unary(sp.atan, "arctan")
arcsinh = _unary(sp.asinh, "arcsinh")
arccosh = _unary(sp.acosh, "arccosh")
arctanh = _unary(sp.atanh, "arctanh")
sigmoid = _unary(ew.sigmoid, "sigmoid")
softplus = _unary(ew.softplus, "softplus")
relu = _unary(ew.relu, "relu")


def square(x) -> Expr:
    return _elementwise(lambda z: z**2, x)


def log2(x) -> Expr:
    return _elementwise(lambda z: sp.log(z) / sp.log(2), x)


def log10(x) -> Expr:
    return _elementwise(lambda z: sp.log(z) / sp.log(10), x)


def arctan2(y, x) -> Expr:
    """NumPy's arctan2(y, x): the angle of the point (x, y), broadcast."""
    return _elementwise(ew.atan2, y, x)


def logaddexp(a, b) -> Expr:
    """NumPy's log(exp(a) + exp(b)), as the larger plus softplus(smaller - larger): it
    never overflows, and keeps a small a where b is hugely negative (b + softplus(a -
    b) cancels to 0 at a = 1, b = -1e17); each branch has every derivative right."""
    return _elementwise(
        lambda p, q: sp.Piecewise(
            (p + ew.softplus(q - p), p >= q), (q + ew.softplus(p - q), True)
        ),
        a,
        b,
    )


def maximum(a, b) -> Expr:
    """Elementwise max of two operands (broadcast); ties split the gradient, as in torch."""
    return _elementwise(ew.Max, a, b)


def minimum(a, b) -> Expr:
    """Elementwise min of two operands (broadcast); ties split the gradient, as in torch."""
    return _elementwise(ew.Min, a, b)


def clip(x, a_min=None, a_max=None, *, min=None, max=None) -> Expr:  # noqa: A002
    """NumPy's clip (torch's clamp): the gradient passes where a_min <= x <= a_max and
    goes to the bound elsewhere; a_min > a_max gives a_max, as both libraries do.
    ``min=`` and ``max=`` (NumPy >= 2.1's and torch's keywords) are a_min and a_max."""
    if min is not None and a_min is not None or max is not None and a_max is not None:
        raise TypeError("sg.clip: pass a_min= or min= (a_max= or max=), not both")
    a_min = a_min if min is None else min
    a_max = a_max if max is None else max
    if a_min is None and a_max is None:
        raise ValueError("sg.clip needs a_min or a_max")
    if a_min is None:
        return _elementwise(
            lambda z, hi: sp.Piecewise((hi, z > hi), (z, True)), x, a_max
        )
    if a_max is None:
        return _elementwise(
            lambda z, lo: sp.Piecewise((lo, z < lo), (z, True)), x, a_min
        )
    # torch's gradients: a_min gets it only below a proper range; with equal bounds
    # below them nobody does (the value is a_min, detached)
    frozen = Expr(ops.detach(a_min.node)) if isinstance(a_min, Expr) else a_min
    return _elementwise(
        lambda z, lo, hi, lo_: sp.Piecewise(
            (hi, (z > hi) | (lo > hi)), (lo, (z < lo) & (lo < hi)), (lo_, z < lo), (z, True)
        ),
        x, a_min, a_max, frozen,
    )  # fmt: skip


def sum(x: Expr, axis=None, keepdims: bool = False) -> Expr:  # noqa: A001
    (node,) = _values([_expr(x, "sg.sum")], "sg.sum")
    return Expr(ops.reduce_sum(node, axis, keepdims))


def mean(x: Expr, axis=None, keepdims: bool = False) -> Expr:
    count = _count(_expr(x, "sg.mean").node, axis)
    return _elementwise(lambda s: s / count, sum(x, axis, keepdims))


def max(x: Expr, axis=None, keepdims: bool = False) -> Expr:  # noqa: A001
    """NumPy's max; ties share the gradient equally (PyTorch's amax)."""
    _not_elementwise("max", axis)
    (node,) = _values([_expr(x, "sg.max")], "sg.max")
    return _AxisExtreme.of(ops.reduce_max(node, axis, keepdims), "max", axis)


class _AxisExtreme(Expr):
    """x.max(axis) or x.min(axis): NumPy's values, where torch's x.max(dim) is the
    pair (values, indices), so a ported x.max(1)[0] would silently pick row 0."""

    @classmethod
    def of(cls, node: Node, name: str, axis) -> Expr:
        if axis is None:
            return Expr(node)
        out = cls(node)
        out.call = f"x.{name}({axis})"
        out.argsort = "sg.argsort(-x, axis)" if name == "max" else "sg.argsort(x, axis)"
        return out

    def __getitem__(self, key) -> Expr:
        if isinstance(key, int) and not isinstance(key, bool) and key in (0, 1):
            torch_meaning = ("the values themselves", "the indices")[key]
            warnings.warn(
                f"{self.call}[{key}] is entry {key} of NumPy's values along that "
                f"axis (sg follows NumPy); if this is torch's {self.call}[{key}], "
                f"{torch_meaning}, write "
                + (self.call if key == 0 else f"{self.argsort} at 0 along axis"),
                stacklevel=2,
            )
        return super().__getitem__(key)


def prod(x: Expr, axis=None, keepdims: bool = False) -> Expr:
    """NumPy's prod over axes of fixed size, written as the product of the slices: the
    gradient is exact where factors are 0 (as torch's), unlike prod / x."""
    node = _expr(x, "sg.prod").node
    axes = ops.normalize_axes(node, axis)
    for a in axes:
        fixed_length(node, a, "sg.prod", "sg.exp(sg.sum(sg.log(x), axis))")
    out = x
    for a in reversed(axes):  # from the last, so the earlier axes keep their numbers
        slices = [_along(out, a, k) for k in range(node.shape[a])]
        out = functools.reduce(operator.mul, slices)
    if keepdims:
        return out[tuple(None if k in axes else slice(None) for k in range(x.ndim))]
    return out


PROD_MAX = 32  # one slice per element: a product of more is a long formula


def fixed_length(node: Node, axis: int, what: str, instead: str) -> int:
    """The size of ``axis``, which a product of its slices needs fixed and short."""
    n = node.shape[axis]
    if not isinstance(n, int) or not 0 < n <= PROD_MAX:
        raise ShapeError(
            f"{what} of {node.describe()} along axis {axis} of size {n}: it needs a "
            f"fixed size from 1 to {PROD_MAX}; for positive x, {instead} does it "
            "over any axis"
        )
    return n


def norm(x: Expr, ord=None, axis=None, keepdims: bool = False) -> Expr:  # noqa: A002
    """The 2-norm (np.linalg.norm's default: of vectors, Frobenius of matrices), with
    torch's gradient 0 at the zero vector, where sqrt's is infinite. The arguments are
    np.linalg.norm's, in its order (so sg.norm(x, 2) is torch.norm(x, 2) too); ``ord``
    may only name the 2-norm: 2 over one axis, "fro" over two."""
    if ord is not None:
        axes = ops.normalize_axes(_expr(x, "sg.norm").node, axis)
        if ord != {1: 2, 2: "fro"}.get(len(axes)):
            ndim = _expr(x, "sg.norm").ndim
            along = f"; the norms along axis {ord} are sg.norm(x, axis={ord})"
            raise TypeError(
                f"sg.norm(x, ord={ord!r}): sg.norm is the 2-norm only, "
                "np.linalg.norm's default (ord=None: ord=2 of vectors, 'fro' of "
                "matrices); for vectors, ord=1 is sg.sum(sg.abs(x), axis) and "
                "ord=inf sg.max(sg.abs(x), axis)"
                + (along if isinstance(ord, int) and -ndim <= ord < ndim else "")
            )
    return _elementwise(ew.masked_sqrt, sum(square(x), axis, keepdims))


_NORMAL = {  # scipy.stats.norm's methods, which a SciPy user may look for on sg.norm
    "cdf": "0.5 * sg.erfc(-x / sqrt(2))",
    "logcdf": "sg.log(0.5 * sg.erfc(-x / sqrt(2)))",
    "sf": "0.5 * sg.erfc(x / sqrt(2))",
    "logsf": "sg.log(0.5 * sg.erfc(x / sqrt(2)))",
    "pdf": "sg.exp(-(x**2) / 2) / sqrt(2 pi)",
    "logpdf": "-(x**2) / 2 - log(2 pi) / 2",
}


def _not_the_normal(method: str) -> Callable:
    def refuse(*_, **__):
        raise AttributeError(
            f"sg.norm is the vector norm (np.linalg.norm), not scipy.stats.norm: the "
            f"standard normal's {method}(x) is {_NORMAL[method]}"
        )

    return refuse


norm.__dict__.update({method: _not_the_normal(method) for method in _NORMAL})


def dot(a: Expr, b: Expr) -> Expr:
    """NumPy's dot for operands of rank <= 2: a product with a 0-d one, else a @ b."""
    ranks = [v.ndim if isinstance(v, Expr) else np.ndim(v) for v in (a, b)]
    if 0 in ranks:
        return a * b
    if builtins.max(ranks) > 2:
        raise ShapeError(
            "sg.dot of arrays of rank > 2: use sg.matmul (batched) or sg.einsum, "
            "whose summed axes are explicit"
        )
    return matmul(a, b)


def squeeze(x: Expr, axis=None) -> Expr:
    """NumPy's squeeze: without ``axis``, every axis of fixed size 1 goes."""
    node = _expr(x, "sg.squeeze").node
    if axis is None:
        axes = [k for k, n in enumerate(node.shape) if n == 1]
    else:
        axes = ops.normalize_axes(node, axis)
        for k in axes:
            if node.shape[k] != 1:
                raise ShapeError(
                    f"sg.squeeze of {node.describe()}: axis {k} has size "
                    f"{node.shape[k]}, not 1"
                )
    return x[tuple(0 if k in axes else slice(None) for k in range(node.ndim))]


def swapaxes(x: Expr, axis1: int, axis2: int) -> Expr:
    """NumPy's swapaxes, a transpose."""
    order = list(range(_expr(x, "sg.swapaxes").ndim))
    a, b = ops.normalize_axes(x.node, axis1)[0], ops.normalize_axes(x.node, axis2)[0]
    order[a], order[b] = order[b], order[a]
    return transpose(x, order)


def _not_elementwise(name: str, axis) -> None:
    """torch.max(a, b) is elementwise; NumPy's (and ours) reduces over the axis b."""
    if isinstance(axis, Expr) or (
        isinstance(axis, numbers.Real) and not isinstance(axis, numbers.Integral)
    ):  # sg.max(z - a, 0.0): a hinge, torch's max(a, b) habit
        raise TypeError(
            f"sg.{name}(a, b) reduces a over the axis b; for the elementwise "
            f"{name}imum of two arrays (or of an array and a number) use "
            f"sg.{name}imum(a, b)"
        )


def stop_gradient(x: Expr) -> Expr:
    """x's value, through which no gradient flows (torch's x.detach(), JAX's name)."""
    (node,) = _values([_expr(x, "sg.stop_gradient")], "sg.stop_gradient")
    return Expr(ops.detach(node, stop_gradient=True))


def _is_index_list(k) -> bool:
    return isinstance(k, list) or isinstance(k, np.ndarray) and k.ndim > 0


def _pick(x: Expr, key: tuple) -> Expr:
    """x[:, [0, 2]]: NumPy's indexing by one list of ints, as the entries' slices side by
    side, then the rest of the key with the list read as ``:``."""
    node, lists = x.node, [n for n, k in enumerate(key) if _is_index_list(k)]
    picks = np.asarray(key[lists[0]])
    if (
        len(lists) > 1
        or picks.ndim != 1
        or picks.dtype.kind not in "iu"
        or not len(picks)
    ):
        raise ShapeError(
            f"index of {node.describe()}: one non-empty list of ints per index is "
            f"supported, not {key[lists[0]]!r}; for a mask use sg.where(mask, x, 0), "
            "for rows picked by data an int64 input: x[idx]"
        )
    advanced = [
        n
        for n, k in enumerate(key)
        if n == lists[0] or isinstance(ops.python_int(k), int)
    ]
    if advanced != list(range(advanced[0], advanced[-1] + 1)):
        raise ShapeError(  # NumPy moves the picked axis to the front, torch does not
            f"index of {node.describe()}: an index list and an int separated by a "
            f"slice ({key!r}), where NumPy and torch order the result's axes "
            "differently; index in two steps, e.g. x[:, 0][[1, 2]]"
        )
    key = ops.expand_ellipsis(node, key)
    (position,) = (n for n, k in enumerate(key) if _is_index_list(k))
    axis = builtins.sum(k is not None for k in key[:position])
    n = node.shape[axis]
    for i in picks.tolist():
        if isinstance(n, int) and not -n <= i < n:
            raise ShapeError(
                f"index {i} is out of bounds for axis {axis} of {node.describe()} "
                f"with size {n}"
            )
    parts = [_along(x, axis, slice(i, i + 1 or None)) for i in picks.tolist()]
    rest = key[:position] + (slice(None),) + key[position + 1 :]
    return concatenate(parts, axis)[rest]


def gelu(x, approximate: str = "none") -> Expr:
    """torch's GELU, x Phi(x), exact through erf or with ``approximate="tanh"``."""
    if approximate == "tanh":
        c = sp.sqrt(2 / sp.pi)
        return _elementwise(
            lambda u: u * (1 + sp.tanh(c * (u + u**3 * 0.044715))) / 2, x
        )
    if approximate != "none":
        raise ValueError(
            f"sg.gelu: approximate must be 'none' or 'tanh', not {approximate!r}"
        )
    return _elementwise(lambda u: u * (1 + sp.erf(u / sp.sqrt(2))) / 2, x)


def silu(x) -> Expr:
    """torch's SiLU (swish), x sigmoid(x)."""
    return _elementwise(lambda u: u * ew.sigmoid(u), x)


def _along(x: Expr, axis: int, key) -> Expr:
    """x[..., key] with ``key`` (an int, slice or None) at position ``axis``."""
    return x[(slice(None),) * axis + (key,)]


def _count(node: Node, axis) -> sp.Expr:
    """How many elements a reduction over ``axis`` combines (a size expression)."""
    return sp.Mul(*(node.shape[a] for a in ops.normalize_axes(node, axis)))


def var(x: Expr, axis=None, keepdims: bool = False, ddof: int = 0) -> Expr:
    """NumPy's var: ``ddof=0`` divides by n (torch.var's default is ``ddof=1``)."""
    node = _expr(x, "sg.var").node
    count = _count(node, axis)
    if count.is_Integer and ddof >= count:
        raise ShapeError(
            f"sg.var of {node.describe()}: ddof={ddof} leaves no degrees of freedom "
            f"over {count} elements"
        )
    centered = x - mean(x, axis, keepdims=True)
    return _elementwise(lambda s: s / (count - ddof), sum(centered**2, axis, keepdims))


def std(x: Expr, axis=None, keepdims: bool = False, ddof: int = 0) -> Expr:
    """NumPy's std, the square root of ``sg.var``, with torch's gradient 0 where it is
    0 (a constant row), where sqrt's is infinite."""
    return _elementwise(ew.masked_sqrt, var(x, axis, keepdims, ddof))


def cumsum(x: Expr, axis=None) -> Expr:
    """NumPy's cumsum; without ``axis``, of the flattened array."""
    (node,) = _values([_expr(x, "sg.cumsum")], "sg.cumsum")
    if axis is None:
        node, axis = ops.reshape(node, (size(node.shape),), fold=False), 0
    return Expr(ops.cumsum(node, axis))


def min(x: Expr, axis=None, keepdims: bool = False) -> Expr:  # noqa: A001
    """NumPy's min; ties share the gradient equally (PyTorch's amin)."""
    _not_elementwise("min", axis)
    (node,) = _values([_expr(x, "sg.min")], "sg.min")
    return _AxisExtreme.of(ops.reduce_max(node, axis, keepdims, op="min"), "min", axis)


def concatenate(xs: Sequence[Expr], axis: int = 0) -> Expr:
    """NumPy's concatenate: the shapes agree except along ``axis``; ``axis=None``
    joins the flattened parts."""
    nodes = [_expr(x, "sg.concatenate").node for x in xs]  # (indices and masks too)
    if not nodes:
        raise ValueError("sg.concatenate needs at least one expression")
    if axis is None:
        return concatenate([reshape(Expr(node), (-1,)) for node in nodes], 0)
    return Expr(ops.concatenate(nodes, axis))


def stack(xs: Sequence[Expr], axis: int = 0) -> Expr:
    """NumPy's stack: same shapes, joined along a new axis ``axis``."""
    nodes = [_expr(x, "sg.stack").node for x in xs]  # (indices and masks too)
    if not nodes:
        raise ValueError("sg.stack needs at least one expression")
    ndim = nodes[0].ndim + 1
    if not -ndim <= axis < ndim:
        raise ShapeError(f"sg.stack: axis {axis} is out of range for rank {ndim}")
    whole = ("slice", None, None, None)
    spec = tuple(("new",) if k == axis % ndim else whole for k in range(ndim))
    for node in nodes[1:]:
        if node.shape != nodes[0].shape:
            raise ShapeError(
                f"cannot stack {nodes[0].describe()} of shape "
                f"{format_shape(nodes[0].shape)} and {node.describe()} of shape "
                f"{format_shape(node.shape)}: shapes must be equal"
            )
    return Expr(ops.concatenate([ops.index(n, spec) for n in nodes], axis))


def transpose(x: Expr, axes=None) -> Expr:
    return Expr(ops.transpose(_expr(x, "sg.transpose").node, axes, fold=False))


def matmul(a: Expr, b: Expr) -> Expr:
    return _expr(a, "sg.matmul") @ b


def reshape(x: Expr, shape) -> Expr:
    """NumPy's reshape; one dim may be -1, and dims may be names such as ``"batch"``."""
    node = _expr(x, "sg.reshape").node
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    known = as_shape(d for d in shape if d != -1)
    if shape.count(-1) > 1:
        raise ShapeError(f"reshape of {node.describe()}: only one dimension can be -1")
    if -1 in shape:
        missing = sp.simplify(sp.sympify(size(node.shape)) / size(known))
        if not _is_size(missing, node.shape):
            raise ShapeError(
                f"cannot infer -1 reshaping {node.describe()} into {shape}"
            )
        known = tuple(as_dim(missing) if d == -1 else as_dim(d) for d in shape)
    for d in known:  # a new size must follow from the old ones, as a whole number
        if isinstance(d, sp.Expr) and not _is_size(d, node.shape):
            raise ShapeError(
                f"cannot reshape {node.describe()} of shape {format_shape(node.shape)} "
                f"into {format_shape(known)}: {d} is not a size of it"
            )
    return Expr(ops.reshape(node, known, fold=False))


def _free(shape) -> set:
    return {s for d in shape if isinstance(d, sp.Expr) for s in d.free_symbols}


def _is_size(d: sp.Expr, shape) -> bool:
    """Whether ``d`` is a whole number >= 0 at every size ``shape`` can have: SymPy's
    answer, or a product of some of its dims (n - 2 of an (n - 2, 2) window, which
    SymPy cannot prove >= 0 for a size n >= 1, but the module checks at run time)."""
    if not (d.is_integer and d.free_symbols <= _free(shape)):
        return False
    return d.is_nonnegative or any(
        sp.expand(sp.Mul(*dims) - d) == 0
        for r in range(1, len(shape) + 1)
        for dims in itertools.combinations(shape, r)
    )


def take_along_axis(x: Expr, indices: Expr, axis: int) -> Expr:
    """NumPy's take_along_axis: e.g. each row's entry at its label."""
    (node,) = _values([_expr(x, "take_along_axis")], "take_along_axis")
    return Expr(ops.take_along_axis(node, _expr(indices, "take_along_axis").node, axis))


def grad(y: Expr, wrt, *, allow_unused: bool = False):
    """torch.autograd.grad(y, wrt, create_graph=True): the gradient of the 0-d ``y``
    with respect to ``wrt`` (an expression, or a list of them: a list back), as
    expressions the model computes with and differentiates again (gradient penalties,
    physics-informed losses, Hamiltonian networks). A ``wrt`` that ``y`` does not use is
    an error, as in torch, or zeros with ``allow_unused=True``."""
    what = "sg.grad(y, wrt)"
    if isinstance(y, (list, tuple)):
        raise TypeError(
            f"{what}: y is one 0-d expression; for the gradient of several (torch's "
            "grad([y1, y2], x)), differentiate their sum: sg.grad(y1 + y2, x)"
        )
    (y_node,) = _values([_expr(y, what)], what)
    if y_node.ndim:
        raise ShapeError(
            f"{what}: y must be 0-d, not {y_node.describe()} of shape "
            f"{format_shape(y_node.shape)}; for torch's grad_outputs of ones, sum it: "
            "sg.grad(sg.sum(y), x)"
        )
    many = isinstance(wrt, (list, tuple))
    nodes = _values([_expr(x, what) for x in (wrt if many else [wrt])], what)
    used = set(toposort([y_node]))
    for x in nodes:
        if x not in used and not allow_unused:
            shown, hint = x.describe(), ""
            if x.op == "index" and x.args[0] in used:  # X[:, 0] of an X y uses
                source, spec = x.args[0].describe(), ops.format_index(x.attrs[0])
                hint = f"a slice is a new value: slice the gradient, sg.grad(y, {source}){spec}; "
            raise ModelError(
                f"{what}: y does not use {shown}, as torch would say; {hint}pass "
                "allow_unused=True for zeros"
            )
    grads = [Expr(ops.grad_of(y_node, x)) for x in nodes]
    return grads if many else grads[0]


def segment_sum(data: Expr, segment_ids: Expr, num_segments) -> Expr:
    """Row k of ``data`` added into row ``segment_ids[k]`` of ``num_segments`` rows of
    zeros: torch's ``index_add``, the message sum of a graph network (adjoint: a gather).
    ``num_segments`` is an int or a size (``x.shape[0]``, a dim's name)."""
    what = "sg.segment_sum(data, segment_ids, num_segments)"
    if not isinstance(segment_ids, Expr) or _expr(data, what).node.dtype == "int64":
        raise TypeError(  # torch's index_add(dim, index, source) has another order
            f"{what} takes the rows to add first, then their int64 ids, then the count; "
            f"got {data!r}, {segment_ids!r}, {num_segments!r}"
        )
    (node,) = _values([_expr(data, what)], what)
    ids = segment_ids.node
    ops.check_index_array(ids, what)
    if ids.ndim != 1 or node.ndim == 0 or node.shape[0] != ids.shape[0]:
        raise ShapeError(
            f"{what}: segment ids {ids.describe()} must be 1-D with one id per row of "
            f"{node.describe()}"
        )
    shape = (as_dim(num_segments),) + node.shape[1:]
    return Expr(ops.scatter(shape, [(("rows",), node, ids)]))


def logsumexp(x: Expr, axis=None, keepdims: bool = False) -> Expr:
    """log(sum(exp(x))), shifted by the (detached) max so it never overflows; a row of
    -inf gives -inf (log 0), as in torch."""
    x = _expr(x, "sg.logsumexp")
    axes = ops.normalize_axes(x.node, axis)
    out = _logsumexp(x, axes, finite_shift=True)
    if keepdims:
        return out
    return out[tuple(0 if i in axes else slice(None) for i in range(x.node.ndim))]


def _logsumexp(x: Expr, axes: tuple[int, ...], finite_shift: bool) -> Expr:
    """logsumexp over ``axes``, kept as size-1 axes. ``finite_shift`` shifts by 0 where
    the max is infinite (one op on the reduced shape), as torch does."""
    shift = Expr(ops.detach(ops.reduce_max(x.node, axes, keepdims=True)))
    if finite_shift:
        shift = where(abs(shift) <= sys.float_info.max, shift, 0.0)
    return log(sum(exp(x - shift), axes, keepdims=True)) + shift


def log_softmax(x: Expr, axis: int = -1) -> Expr:
    """x - logsumexp(x); a row of -inf is nan either way, so the shift needs no guard."""
    x = _expr(x, "sg.log_softmax")
    return x - _logsumexp(x, ops.normalize_axes(x.node, axis), finite_shift=False)


def softmax(x: Expr, axis: int = -1) -> Expr:
    node = _expr(x, "sg.softmax").node
    shift = Expr(ops.detach(ops.reduce_max(node, axis, keepdims=True)))
    e = exp(x - shift)
    return e / sum(e, axis, keepdims=True)


class Model:
    """A model: inputs, parameters, named outputs and a scalar loss."""

    def __init__(self, name: str, doc: str = "", hessian: bool = False):
        self.name = check_name(name, "model")
        if name in sys.stdlib_module_names or name in ("numpy", "sympy", "symgrad"):
            raise ModelError(
                f"model name {name!r} would make generated/{name}.py shadow that module"
            )
        self.doc = str(doc)
        self.hessian = hessian
        self.inputs: dict[str, Node] = {}
        self.params: dict[str, Node] = {}
        self.outputs: dict[str, Node] = {}
        self.dims: dict[str, sp.Symbol] = {}
        self.names: dict[Node, str] = {}  # intermediate values named with let/output
        self.unrolls: list[dict[str, int]] = []  # size sets given to m.unroll(...)
        self._loss: Node | None = None

    def _claim(self, name: str, what: str) -> str:
        check_name(name, what)
        if name in self._taken():
            raise ModelError(f"duplicate name {name!r} in model {self.name!r}")
        return name

    def _taken(self) -> set[str]:
        return {
            *self.inputs,
            *self.params,
            *self.outputs,
            *self.dims,
            *self.names.values(),
        }

    def _shape(self, shape, what: str) -> tuple:
        """Dims are ints or names; a name becomes one of the model's size symbols.

        Not formulas: every symbolic dim must be bound by name from an array's shape,
        and its name is written into the generated module, so it must be checked.
        """
        dims = []
        for d in (shape,) if isinstance(shape, (int, str)) else shape:
            d = d.size if is_size(d) else d  # x.shape[0], 2 * x.shape[0]
            if isinstance(d, sp.Symbol):
                d = d.name  # the model's own symbol, whatever assumptions d carries
            elif isinstance(d, sp.Expr) and not d.is_Integer:
                raise ModelError(
                    f"{what}: dimension {d} must be an int or a name, not a formula"
                )
            if d == what:  # x = m.input("x", ("x",)): the array and its size
                raise ModelError(f"duplicate name {d!r}: {d} and one of its dimensions")
            if isinstance(d, str) and d not in self.dims:
                self.dims[self._claim(d, f"dimension of {what}")] = size_symbol(d)
            dims.append(d)
        return as_shape(dims)

    def input(self, name: str, shape=(), dtype: str = "float64") -> Expr:
        """A data array (a scalar by default, as for ``param``); ``dtype="int64"`` for
        labels and index arrays, ``"bool"`` for masks (conditions of sg.where)."""
        if dtype not in ("float64", "int64", "bool"):
            raise ModelError(
                f"input {name!r}: dtype must be 'float64', 'int64' or 'bool', "
                f"not {dtype!r}"
            )
        self._claim(name, "input")
        node = ops.leaf("input", name, self._shape(shape, name), dtype)
        self.inputs[name] = node
        return Expr(node)

    def param(self, name: str, shape=()) -> Expr:
        """A float64 parameter: the loss is differentiated with respect to it."""
        self._claim(name, "parameter")
        node = ops.leaf("param", name, self._shape(shape, name))
        self.params[name] = node
        return Expr(node)

    def let(self, name: str, x: Expr) -> Expr:
        """Name an intermediate value, so the generated code computes and names it."""
        self._name(name, _expr(x, "let").node, "value")
        return x

    def output(self, name: str, x: Expr) -> Expr:
        """Return this value from ``forward`` as ``outputs[name]``."""
        node = _expr(x, "output").node
        if node.op in ("input", "param"):
            raise ModelError(
                f"output {name!r} is {node.name} itself; outputs must be computed (an "
                f"expression that simplifies to it, such as {node.name} * 1.0, is it; "
                "the caller has its value already)"
            )
        self._known_dims(node, f"output {name!r}")
        self._name(name, node, "output")
        self.outputs[name] = node
        return x

    def _name(self, name: str, node: Node, what: str) -> None:
        if node in self.names:
            raise ModelError(
                f"{what} {name!r} is already named {self.names[node]!r}: a value takes "
                "one name (m.output names it as m.let does: output it in place of the "
                "let)"
            )
        self.names[node] = self._claim(name, what)

    def loss(self, x: Expr) -> Expr:
        """The scalar to minimize; one element of shape (1,) or (1, 1) also does, as it
        does for torch's backward()."""
        (node,) = _values([_expr(x, "loss")], "the loss")
        if node.shape and all(d == 1 for d in node.shape):
            node = reshape(x, ()).node
        if node.shape != ():
            raise ModelError(
                f"the loss must be a scalar, got shape {format_shape(node.shape)}; "
                "reduce it with sg.sum or sg.mean"
            )
        if self._loss is not None:
            raise ModelError(f"model {self.name!r} already has a loss")
        self._known_dims(node, "the loss")
        self._loss = node
        return x

    def _known_dims(self, node: Node, what: str) -> None:
        """Every size in the graph is a dim of an input or parameter (a new name in
        sg.broadcast_to would be undefined in the generated code)."""
        sizes = set().union(*(_free(n.shape) for n in toposort([node])))
        unknown = sorted(str(s) for s in sizes - set(self.dims.values()))
        if unknown:
            raise ShapeError(
                f"{what} of model {self.name!r} uses the dims {', '.join(unknown)}, "
                f"which no input or parameter has (its dims: "
                f"{', '.join(self.dims) or 'none'})"
            )

    def unroll(self, **sizes: int) -> None:
        """Also generate a scalar-unrolled ``value_and_grad`` for these sizes.

        ``m.unroll(batch=1)``: when ``value_and_grad`` is called with exactly these sizes,
        it runs straight-line Python on floats (``math``, no NumPy call per operation),
        which beats NumPy's per-call overhead on a handful of numbers; other sizes run
        the vectorized code. Call it once per size set; give a size to every symbolic
        dim. A model without symbolic dims whose arrays are all small is unrolled
        without asking (see ``symgrad.unroll.AUTO_ELEMENTS``); ``m.unroll()`` asks for a
        larger one.
        """
        if not sizes and self.dims:
            example = ", ".join(f"{d}=1" for d in self.dims)
            raise ModelError(
                f"m.unroll() needs a size for each dim: m.unroll({example})"
            )
        for name, value in sizes.items():
            if name not in self.dims:
                known = ", ".join(self.dims) or "none"
                raise ModelError(
                    f"m.unroll: {name!r} is not a symbolic dim of model "
                    f"{self.name!r} (its dims: {known})"
                )
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(
                    f"m.unroll: size of {name!r} must be a positive int, not {value!r}"
                )
        sizes = {d: int(sizes[d]) for d in self.dims if d in sizes}  # the dims' order
        if sizes not in self.unrolls:
            self.unrolls.append(sizes)

    def unroll_sizes(self) -> list[dict[str, int]]:
        """The ``m.unroll`` size sets, each checked to give every symbolic dim a size
        that the model's slices allow."""
        for sizes in self.unrolls:
            missing = [d for d in self.dims if d not in sizes]
            given = ", ".join(f"{k}={v}" for k, v in sizes.items())
            if missing:
                raise ModelError(
                    f"m.unroll({given}): no size for dim(s) {', '.join(missing)}; "
                    "an unrolled function needs every dim"
                )
            values = {self.dims[k]: v for k, v in sizes.items()}
            for need, where in self.size_requirements():
                if not holds(need, values):
                    raise ModelError(
                        f"m.unroll({given}): {where} needs {requirement(need)}"
                    )
        return list(self.unrolls)

    def size_requirements(self) -> list[tuple[sp.Expr, str]]:
        """(expression that must be >= 0, the value needing it), e.g. (n - 3, "x[:3]"):
        slices of symbolic axes whose length holds only for large enough sizes, and
        divisions by a size (means)."""
        needs: dict[sp.Expr, str] = {}

        def shown(node: Node) -> str:  # a value named with m.let by its name
            return self.names.get(node) or node.describe()

        for node in toposort([self.loss_node, *self.outputs.values()]):
            for need in ops.size_requirements(node):
                if node.op == "index":
                    where = ops.MADE_BY.get(node) or (
                        shown(node.args[0]) + ops.format_index(node.attrs[0])
                    )
                elif node.op == "windows":
                    source = node.args[0]
                    while source.op == "windows":
                        source = source.args[0]
                    where = f"sg.sliding_window_view of {shown(source)}"
                else:  # a map divides by the size (a mean); a max needs an element
                    size = need.lhs if isinstance(need, sp.Ne) else need + 1
                    if node.op != "map":  # a max: sg.max's, or a softmax's shift
                        where = f"a {node.op} over {size}" + (
                            " (sg.max, sg.logsumexp, sg.softmax)" * (node.op == "max")
                        )
                    elif size.is_Add:  # var(ddof=1) divides by n - 1
                        where = f"a division by {size}"
                    else:
                        where = f"a mean over {size}"
                needs.setdefault(need, where)
            for dim in node.shape:  # what a slice asked, if folding took the slice
                if isinstance(dim, sp.Expr) and ops.may_be_negative(dim):
                    shape = format_shape(node.shape)
                    needs.setdefault(sp.expand(dim), f"an array of shape {shape}")
        strongest: dict[sp.Symbol, tuple[int, sp.Expr]] = {}  # n >= 3 says n >= 2
        for need in sorted(needs, key=str):
            bound = lower_bound(need)
            if bound and bound[1] > strongest.get(bound[0], (0,))[0]:
                strongest[bound[0]] = (bound[1], need)
        kept = {need for _, need in strongest.values()}
        kept |= {need for need in needs if lower_bound(need) is None}
        return [(n, needs[n]) for n in sorted(kept, key=str)]

    @property
    def loss_node(self) -> Node:
        if self._loss is None:
            raise ModelError(f"model {self.name!r} has no loss: call m.loss(...)")
        return self._loss

    def digest(self) -> str:
        """A short hash of the declaration, shown in the generated header."""
        order = toposort([self.loss_node, *self.outputs.values()])
        index = {n: i for i, n in enumerate(order)}
        lines = [self.name, repr(self.doc), str(self.hessian)]
        lines += [f"unroll {sizes}" for sizes in self.unrolls]
        lines += [f"{n.op} {n.name} {n.shape} {n.dtype}" for n in self.params.values()]
        lines += [f"{n.op} {n.name} {n.shape} {n.dtype}" for n in self.inputs.values()]
        lines += [f"output {k} {index[n]}" for k, n in self.outputs.items()]
        for n in order:
            args = [index[a] for a in n.args]
            lines.append(
                f"{n.op} {args} {n.shape} {n.dtype} {n.attrs} {self.names.get(n)}"
            )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]

    @classmethod
    def from_expr(
        cls,
        name: str,
        loss: sp.Expr,
        params: Sequence[sp.Symbol],
        inputs: Sequence[sp.Symbol] = (),
        reduce: str = "mean",
        doc: str = "",
        hessian: bool = False,
    ) -> Model:
        """A model from one SymPy formula: ``inputs`` are data along a ``batch`` axis."""
        if reduce not in ("mean", "sum"):
            raise ModelError(f"reduce must be 'mean' or 'sum', not {reduce!r}")
        m = cls(name, doc=doc, hessian=hessian)
        loss = sp.sympify(loss)
        symbols = [*params, *inputs]
        for s in symbols:
            if not isinstance(s, sp.Symbol):
                raise ModelError(
                    f"model {name!r}: params and inputs must be SymPy symbols, got {s!r}"
                )
        if inputs and "batch" in {s.name for s in symbols}:
            raise ModelError(
                f"model {name!r}: 'batch' names the data axis of from_expr's inputs; "
                "rename the symbol"
            )
        args = [m.param(s.name).node for s in params]
        args += [m.input(s.name, ("batch",)).node for s in inputs]
        placeholders = {s: ew.arg(i) for i, s in enumerate(symbols)}
        loss = checked_formula(loss, set(symbols), f"model {name!r} loss")
        per_sample = Expr(ops.map_(loss.xreplace(placeholders), args))
        m.loss(
            (mean if reduce == "mean" else sum)(per_sample)
            if per_sample.ndim
            else per_sample
        )
        return m


_TORCH_KEYWORDS = {  # torch's keyword: NumPy's names for it, the function's own wins
    "dim": ("axis",),
    "keepdim": ("keepdims",),
    "diagonal": ("k",),
    "correction": ("ddof",),
    "dims": ("axis", "axes", "reps"),  # flip/roll, permute, tile
    "dim_size": ("num_segments",),  # torch_scatter's scatter_add
    "value": ("constant_values", "fill_value"),  # F.pad, full_like
}
_TORCH_ONLY_KEYWORDS = {
    "p": "sg.norm's order is NumPy's ord= (2, or 'fro' over two axes)",  # torch's keywords with no NumPy twin: what to write instead
    "descending": "-sg.sort(-x) and sg.argsort(-x) sort in descending order, keeping "
    "ties in order as torch's stable sort does",
    "stable": "sg.sort and sg.argsort are always stable",
    "left": "x @ a = b is sg.solve(a.T, b.T).T",
    "create_graph": "sg.grad's gradients are always differentiable again",
    "retain_graph": "sg.grad's gradients are always differentiable again",
    "grad_outputs": "sg.grad(sg.sum(y * v), x) weights y by v (torch's grad_outputs=v; "
    "for ones, sg.sum(y))",
    "outputs": "sg.grad(y, wrt) takes y and wrt by position",
    "inputs": "sg.grad(y, wrt) takes y and wrt by position",
    "only_inputs": "sg.grad(y, wrt) differentiates with respect to wrt only",
    "beta": "F.softplus(x, beta) is sg.softplus(beta * x) / beta",
    "unbiased": "unbiased=True is NumPy's ddof=1 (torch's default; sg's is ddof=0)",
    "b": "weights b > 0 of scipy's and JAX's logsumexp(a, b=b) are "
    "sg.logsumexp(a + sg.log(b))",
    "return_sign": "sg.logsumexp takes no signs: weights b > 0 go in as sg.log(b)",
    "step": "windows with a step (a hop) are a slice of all of them: "
    "sg.sliding_window_view(x, w, axis=-1)[..., ::step, :]",
    "where": "NumPy's where=mask is sg.where(mask, x, 0.0) first; a masked mean is "
    "sg.sum(sg.where(mask, x, 0.0)) / sg.sum(sg.where(mask, 1.0, 0.0))",
}


_TORCH_EXTRA_ARGUMENTS = {  # torch's positional extras of an elementwise function
    "softplus": ": " + _TORCH_ONLY_KEYWORDS["beta"],
    **dict.fromkeys(("arccos", "arcsin"), " (clip first: x.clip(-1.0, 1.0))"),
}


def _numpy_keywords(fn: Callable, call: str) -> Callable:
    """torch's dim=, keepdim= and diagonal= are NumPy's axis=, keepdims= and k=: say
    so, where Python would only say "unexpected keyword argument" (and what to write
    for torch's keywords that NumPy has no twin of). ``call`` is how users spell
    ``fn``: sg.exp(), x.sum()."""

    own = set(inspect.signature(fn).parameters)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        for torch_name in sorted((kwargs.keys() - own) & _TORCH_KEYWORDS.keys()):
            for numpy_name in _TORCH_KEYWORDS[torch_name]:
                if numpy_name in own:
                    raise TypeError(
                        f"{call} takes NumPy's {numpy_name}=, not torch's "
                        f"{torch_name}="
                    )
        for torch_name in sorted((kwargs.keys() - own) & _TORCH_ONLY_KEYWORDS.keys()):
            raise TypeError(
                f"{call} has no {torch_name}=: " f"{_TORCH_ONLY_KEYWORDS[torch_name]}"
            )
        for name in sorted(kwargs.keys() - own):
            raise TypeError(f"{call} got an unexpected keyword argument {name!r}")
        return fn(*args, **kwargs)

    return checked


def _has_torch_spelled_keyword(fn) -> bool:
    """Whether ``fn`` has a parameter torch spells otherwise (axis, keepdims, k)."""
    if not inspect.isfunction(fn):
        return False
    numpy_names = {name for names in _TORCH_KEYWORDS.values() for name in names}
    return not numpy_names.isdisjoint(inspect.signature(fn).parameters)


def with_numpy_keywords(namespace: dict) -> None:
    """Give a module's public functions the hints for torch's keywords (dim= for
    axis=, descending=, ...)."""
    for name, fn in list(namespace.items()):
        if (
            inspect.isfunction(fn)
            and not name.startswith("_")
            and fn.__module__ == namespace["__name__"]
        ):
            namespace[name] = _numpy_keywords(fn, f"sg.{name}()")


with_numpy_keywords(globals())
for _name, _fn in list(vars(Expr).items()):
    if _has_torch_spelled_keyword(_fn):
        setattr(Expr, _name, _numpy_keywords(_fn, f"x.{_name}()"))
