"""Round 61 of new-user models: a user who writes models as SymPy formulas
(``sg.Model.from_expr`` with scalar params and batch inputs as SymPy symbols, and
``sg.elementwise`` for custom activations), with torch 2.13 CPU float64 autograd,
central finite differences and SymPy / mpmath evaluation at 30 digits as the judges.

Covered: 16 scalar formulas (rational functions, nested radicals and a cube root, a
Piecewise of three branches with And / Or conditions, Max / Min / Abs / sign /
Heaviside, floor / ceiling of an input, the constants pi, E, Rational(1, 3), sqrt(2),
huge (1e300) and tiny (1e-300, subnormal 1e-320) Float constants, Gaussians
exp(-x^2) with erf / erfc, loggamma, atan2, log(x, 10) and log(y, 2), x**y with both
symbolic, a formula SymPy reduces to a constant, a formula whose derivative in one param
is identically zero) against torch twins, central differences and SymPy's exact value
and gradient; Hessians of nine of them against torch.autograd.functional.hessian; seven
custom activations by sg.elementwise inside a 3-4-1 MLP (Mish as x tanh(log(1 + e^x)),
GELU-tanh, Swish-beta with a learnable beta, SELU and ELU as Piecewise, hard-sigmoid as
a three-branch Piecewise, a learnable rational activation) against F.mish / F.gelu /
F.selu / F.elu / torch.where twins (and Mish by sg.softplus), five Hessians and hvps,
three unrolled; 15 formula edges and 5 activation-edge sets (Piecewise
boundaries exactly, Abs and sign at 0, Max / Min ties, x**y at x = 0, log at 1e-300,
atan2 on the negative axis, the activations' kinks at 0 and +-3, Mish at +-800 written
with sg.softplus); messages for unsupported SymPy functions (besseli, gamma, zeta,
LambertW, Mod, Sum, factorial: each named), floor of a parameter, a Piecewise with no
True branch, an unknown symbol, an undefined function, a non-symbol param.

Found (were strict xfails; all fixed the same day: checked_formula swaps sp.atan2 for
symbolic.atan2, symbolic._power_rule masks p * u**(p - 1) where p = 0 as torch does,
and the printer refuses the imaginary unit): (1) sp.atan2 written in a formula
(from_expr or sg.elementwise) has a nan gradient at the origin where torch and
sg.arctan2 give 0: the user's sp.atan2 is not swapped for symgrad's atan2 subclass
(symbolic.atan2, which carries torch's convention). (2) d/dx x**y at x = y = 0 is nan
(0 * 0**-1) where torch gives 0 (and the true partial is 0: x**0 = 1 for every x), in
from_expr and for X ** Y of two sg parameters alike. (3) the square root of an
expression SymPy can prove negative, sp.sqrt(-x**2 - 1) or sg.sqrt(-X**2 - 1), is
printed as ``1j * np.sqrt(1.0 + x**2)``: the loss and gradient come back complex
(1.044j) where NumPy on the formula gives nan, and the README promises an
UnsupportedError for a complex value.

Noted, not bugs: Mish written with sp.log(1 + sp.exp(x)) has a nan gradient at x = 800
(exp overflows in e^x / (1 + e^x), exactly as the formula's SymPy derivative evaluated
in NumPy does; the README says formulas are computed as written and points to
sg.softplus, with which Mish matches F.mish at +-800), and at x = -40 its gradient is
2.5% off F.mish's since log(1 + 4e-18) rounds to 0 in float64 (the formula's own
round-off: NumPy on it gives the same). A floor of a parameter is refused ("cannot
differentiate floor(x) with respect to x") where torch gives a zero gradient: as
documented. F.hardsigmoid's backward multiplies by a float32 1/6 (0.16666666170, 3e-8
off) even in float64, so the hard-sigmoid twin is a torch.where (torch's own kinks at
+-3 agree at 1e-7).
"""

from __future__ import annotations

import functools
import math
import re
import warnings

import numpy as np
import pytest
import sympy as sp
from helpers import (
    Families,
    assert_agrees_with_torch,
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
    normal,
    rel,
    torch_twin,
)

import symgrad as sg

torch = pytest.importorskip("torch")
F = torch.nn.functional

FAMILIES = Families()
family = FAMILIES.add
module_of = FAMILIES.module

x, y = sp.symbols("x y")
t = sp.Symbol("t")
SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def _tensor(v):
    return torch.as_tensor(v, dtype=torch.float64)


# ============================================================ 1. scalar formulas
# name -> (formula, params, inputs, torch twin of the per-sample loss, points). The
# loss is the sum over the batch (reduce="sum"); points give the params (and t).

PW = sp.Piecewise(
    (x**2, sp.And(x > 0, y > 0)),
    (x * y, sp.Or(x < -1, y < -1)),
    (sp.sin(x) + y, True),
)


def _pw_torch(p):
    a, b = p["x"], p["y"]
    return torch.where(
        (a > 0) & (b > 0),
        a**2,
        torch.where((a < -1) | (b < -1), a * b, torch.sin(a) + b),
    )


def _heaviside(u):
    """SymPy's Heaviside(u) (1/2 at 0) with torch's zero gradient."""
    return (u > 0).double() + 0.5 * (u == 0).double()


FORMULAS = {
    "rational": (
        (x**3 - 2 * x * y + 1) / (x**2 + y**2 + 1) - 1 / (x - y),
        lambda p: (p["x"] ** 3 - 2 * p["x"] * p["y"] + 1)
        / (p["x"] ** 2 + p["y"] ** 2 + 1)
        - 1 / (p["x"] - p["y"]),
        [(0.3, 0.7), (-1.2, 0.4)],
    ),
    "nested_radicals": (
        sp.sqrt(1 + sp.sqrt(x**2 + 1))
        + sp.cbrt(y**2 + 1)
        + (x**2 + y**2 + 1) ** sp.Rational(-3, 2),
        lambda p: torch.sqrt(1 + torch.sqrt(p["x"] ** 2 + 1))
        + (p["y"] ** 2 + 1) ** (1 / 3)
        + (p["x"] ** 2 + p["y"] ** 2 + 1) ** -1.5,
        [(0.3, 0.7), (-2.0, 1.5)],
    ),
    "piecewise_and_or": (
        PW,
        _pw_torch,
        [(0.5, 0.5), (-2.0, 0.3), (0.3, -0.2), (1.0, -3.0)],
    ),
    "max_min_abs_sign_heaviside": (
        sp.Max(x, y, 0) * sp.Min(x, 2 * y)
        + sp.Abs(x - y)
        + sp.sign(x) * y
        + sp.Heaviside(y) * x,
        lambda p: torch.maximum(torch.maximum(p["x"], p["y"]), _tensor(0.0))
        * torch.minimum(p["x"], 2 * p["y"])
        + (p["x"] - p["y"]).abs()
        + torch.sign(p["x"]) * p["y"]
        + _heaviside(p["y"]) * p["x"],
        [(0.5, -0.3), (-1.0, 2.0), (0.7, 0.2)],
    ),
    "constants": (
        sp.pi * x + sp.E * y**2 + sp.Rational(1, 3) * x * y + sp.sqrt(2) * sp.exp(x),
        lambda p: math.pi * p["x"]
        + math.e * p["y"] ** 2
        + p["x"] * p["y"] / 3
        + math.sqrt(2) * torch.exp(p["x"]),
        [(0.3, 0.7), (-1.5, 2.0)],
    ),
    "huge_and_tiny_floats": (
        sp.Float("1e300") * x + sp.Float("1e-300") * y**2 + sp.Float("1e-320") * x * y,
        lambda p: 1e300 * p["x"] + 1e-300 * p["y"] ** 2 + 1e-320 * p["x"] * p["y"],
        [(0.3, 0.7)],
    ),
    "gaussian_erf_erfc": (
        sp.exp(-(x**2)) * y + sp.erf(x * y) + sp.erfc(x - y),
        lambda p: torch.exp(-p["x"] ** 2) * p["y"]
        + torch.erf(p["x"] * p["y"])
        + torch.erfc(p["x"] - p["y"]),
        [(0.3, 0.7), (2.0, -1.5), (5.0, 5.0)],
    ),
    "loggamma": (
        sp.loggamma(x) + sp.loggamma(y**2 + 1),
        lambda p: torch.lgamma(p["x"]) + torch.lgamma(p["y"] ** 2 + 1),
        [(0.3, 0.7), (100.0, 3.0), (1e-8, 2.0)],
    ),
    "atan2": (
        sp.atan2(y, x) * (1 + x**2) + sp.atan2(x, 2.0),
        lambda p: torch.atan2(p["y"], p["x"]) * (1 + p["x"] ** 2)
        + torch.atan2(p["x"], _tensor(2.0)),
        [(0.3, 0.7), (-1.0, 0.2), (-0.5, -2.0)],
    ),
    "log_bases": (
        sp.log(x, 10) + sp.log(y, 2) + sp.log(x * y + 1),
        lambda p: torch.log10(p["x"])
        + torch.log2(p["y"])
        + torch.log(p["x"] * p["y"] + 1),
        [(0.3, 0.7), (1e-3, 50.0)],
    ),
    "power_both_symbolic": (
        x**y + y**x,
        lambda p: p["x"] ** p["y"] + p["y"] ** p["x"],
        [(0.3, 0.7), (2.5, 1.5), (1.0, 3.0)],
    ),
    "gaussian_bump_with_input": (
        x * sp.exp(-((t - y) ** 2) / 2) + sp.Rational(1, 3) * sp.floor(t) * x,
        lambda p: p["x"] * torch.exp(-((p["t"] - p["y"]) ** 2) / 2)
        + torch.floor(p["t"]) * p["x"] / 3,
        [(1.3, 0.2)],
    ),
    "floor_ceiling_of_an_input": (
        sp.floor(t) * x + sp.ceiling(t) * y**2,
        lambda p: torch.floor(p["t"]) * p["x"] + torch.ceil(p["t"]) * p["y"] ** 2,
        [(1.5, 2.0), (-0.5, 0.25)],
    ),
    "simplifies_to_a_constant": (
        # SymPy cancels y - y on construction: the loss is 1 + sin^2 + cos^2 - 1
        3 + y - y + sp.sin(x) ** 2 + sp.cos(x) ** 2 - 1,
        lambda p: 2 + torch.sin(p["x"]) ** 2 + torch.cos(p["x"]) ** 2 + 0 * p["y"],
        [(0.3, 0.7)],
    ),
    "zero_derivative_in_y": (
        x**2 + sp.Heaviside(y) + sp.floor(t) ** 2 * 0 + sp.sign(y) ** 2,
        lambda p: p["x"] ** 2 + _heaviside(p["y"]) + torch.sign(p["y"]) ** 2,
        [(0.3, 0.7), (-0.4, -2.0)],
    ),
    "gaussian_ratio_of_polys": (
        sp.exp(-(x**2) / (1 + y**2)) / (1 + x**2 + x**4 / 2),
        lambda p: torch.exp(-p["x"] ** 2 / (1 + p["y"] ** 2))
        / (1 + p["x"] ** 2 + p["x"] ** 4 / 2),
        [(0.3, 0.7), (-1.7, 0.1)],
    ),
}
WITH_T = {name for name, (f, *_) in FORMULAS.items() if t in f.free_symbols}
T_DATA = np.array([-1.5, -0.5, 0.25, 1.0, 2.75])


@functools.cache
def formula_module(name, hessian=False):
    f = FORMULAS[name][0]
    inputs = [t] if name in WITH_T else []
    model = sg.Model.from_expr(
        name, loss=f, params=[x, y], inputs=inputs, reduce="sum", hessian=hessian
    )
    return compile_module(model)


def formula_case(name, point):
    _, per_sample, _ = FORMULAS[name]
    params = {"x": np.array(float(point[0])), "y": np.array(float(point[1]))}
    inputs = {"t": T_DATA.copy()} if name in WITH_T else {}

    def reference(p, i):
        per = per_sample({**p, **i})
        loss = per.sum() if name in WITH_T else per
        return loss + 0 * (p["x"] + p["y"]), {}

    return params, inputs, reference


CASES = [
    (name, k) for name, (_, _, points) in FORMULAS.items() for k in range(len(points))
]


# loggamma at x = 1e-8: curvature 1e16, the difference step (1e-9) is not small
NO_DIFFERENCES = {("loggamma", 2)}


@pytest.mark.parametrize(("name", "k"), CASES)
def test_formula_agrees_with_pytorch_and_central_differences(name, k):
    params, inputs, reference = formula_case(name, FORMULAS[name][2][k])
    module = formula_module(name)
    check(module, reference, params, inputs)
    if (name, k) not in NO_DIFFERENCES:
        assert_matches_central_differences(module, params, inputs)


def _exact(f, point, inputs):
    """The summed loss and its gradient by SymPy at 30 digits."""
    values = [t_ for t_ in inputs.get("t", [None])]
    loss, gx, gy = sp.S.Zero, sp.S.Zero, sp.S.Zero
    for tv in values:
        sub = {x: sp.Float(point[0], 30), y: sp.Float(point[1], 30)}
        if tv is not None:
            sub[t] = sp.Float(float(tv), 30)
        loss += f.subs(sub)
        gx += sp.diff(f, x).subs(sub)
        gy += sp.diff(f, y).subs(sub)
    return [float(sp.N(v, 30)) for v in (loss, gx, gy)]


EXACT_SKIP = {  # SymPy's diff of these has no value at a point (Subs of re / sign)
    "max_min_abs_sign_heaviside",
    "zero_derivative_in_y",
    "floor_ceiling_of_an_input",
    "gaussian_bump_with_input",
}


@pytest.mark.parametrize(("name", "k"), [c for c in CASES if c[0] not in EXACT_SKIP])
def test_formula_value_and_gradient_against_sympy_at_30_digits(name, k):
    point = FORMULAS[name][2][k]
    params, inputs, _ = formula_case(name, point)
    loss, grads = formula_module(name).value_and_grad(params, inputs)
    exact_loss, gx, gy = _exact(FORMULAS[name][0], point, inputs)
    scale = max(abs(gx), abs(gy))
    assert abs(loss - exact_loss) <= 1e-13 * max(abs(exact_loss), 1.0)
    assert abs(grads["x"] - gx) <= 1e-12 * scale + 1e-300
    assert abs(grads["y"] - gy) <= 1e-12 * scale + 1e-300


SECOND_ORDER_FORMULAS = [
    ("rational", 0),
    ("nested_radicals", 1),
    ("piecewise_and_or", 0),
    ("piecewise_and_or", 2),
    ("gaussian_erf_erfc", 1),
    ("loggamma", 0),
    ("atan2", 1),
    ("power_both_symbolic", 1),
    ("gaussian_bump_with_input", 0),
    ("gaussian_ratio_of_polys", 1),
]


@pytest.mark.parametrize(("name", "k"), SECOND_ORDER_FORMULAS)
def test_formula_hessian_agrees_with_pytorch(name, k):
    params, inputs, reference = formula_case(name, FORMULAS[name][2][k])
    module = formula_module(name, hessian=True)
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)


def test_formula_reduced_to_a_constant_keeps_both_params_with_zero_gradients():
    module = formula_module("simplifies_to_a_constant")
    assert module.PARAMS == {"x": (), "y": ()}
    loss, grads = module.value_and_grad({"x": np.array(0.3), "y": np.array(-4.0)}, {})
    assert abs(loss - 3.0) <= 1e-15
    assert abs(grads["x"]) <= 1e-15 and grads["y"] == 0.0


def test_formula_that_is_a_literal_constant():
    """loss = 3 + y - y is the Integer 3 before from_expr sees it."""
    module = compile_module(
        sg.Model.from_expr("literal_three", loss=3 + y - y, params=[x, y])
    )
    loss, grads = module.value_and_grad({"x": np.array(1.0), "y": np.array(2.0)}, {})
    assert loss == 3.0 and grads["x"] == 0.0 and grads["y"] == 0.0


def test_huge_constant_gradient_is_exact_and_tiny_ones_survive():
    """1e300 x + 1e-300 y^2 + 1e-320 x y: the subnormal 1e-320 x is kept in d/dy."""
    module = formula_module("huge_and_tiny_floats")
    loss, grads = module.value_and_grad({"x": np.array(0.3), "y": np.array(0.7)}, {})
    assert grads["x"] == 1e300 + 1e-320 * 0.7
    assert rel(grads["y"], 2e-300 * 0.7 + 1e-320 * 0.3) <= 1e-6  # subnormal: ~5 digits
    assert rel(loss, 3e299) <= 1e-15


# ======================================================== 2. custom activations


def _mish(u):
    return u * sp.tanh(sp.log(1 + sp.exp(u)))


def _gelu_tanh(u):
    c = sp.sqrt(2 / sp.pi)
    return u / 2 * (1 + sp.tanh(c * (u + sp.Float("0.044715") * u**3)))


def _swish_beta(u, beta):
    return u / (1 + sp.exp(-beta * u))


def _selu(u):
    return SELU_SCALE * sp.Piecewise((u, u > 0), (SELU_ALPHA * (sp.exp(u) - 1), True))


def _elu(u):
    return sp.Piecewise((u, u > 0), (sp.exp(u) - 1, True))


def _hard_sigmoid(u):
    return sp.Piecewise((0, u <= -3), (1, u >= 3), (u / 6 + sp.Rational(1, 2), True))


def _hard_sigmoid_torch(u):
    """F.hardsigmoid by torch.where: F.hardsigmoid's own backward multiplies by 1/6
    rounded to float32 (0.1666666617..., 3e-8 off) even in float64."""
    zero, one = _tensor(0.0), _tensor(1.0)
    return torch.where(u <= -3, zero, torch.where(u >= 3, one, u / 6 + 0.5))


def _rational(u, a, b):
    """A learnable Pade-style activation (a0 + a1 u + a2 u^2) / (1 + |b u|)."""
    return (a[0] + a[1] * u + a[2] * u**2) / (1 + sp.Abs(b * u))


def _rational_torch(u, a, b):
    return (a[0] + a[1] * u + a[2] * u**2) / (1 + (b * u).abs())


ACTIVATIONS = {
    "mish": (_mish, F.mish),
    "gelu_tanh": (_gelu_tanh, lambda u: F.gelu(u, approximate="tanh")),
    "selu": (_selu, F.selu),
    "elu": (_elu, F.elu),
    "hard_sigmoid": (_hard_sigmoid, lambda u: _hard_sigmoid_torch(u)),
}


def _mlp_data(seed, extra=None):
    rng = np.random.default_rng(seed)
    params = {
        "W1": normal(rng, 4, 3, scale=0.8),
        "b1": normal(rng, 4, scale=0.3),
        "W2": normal(rng, 1, 4, scale=0.6),
        "b2": normal(rng, 1, scale=0.1),
    }
    params.update(extra or {})
    inputs = {"x": normal(rng, 5, 3, scale=1.5), "target": normal(rng, 5, 1)}
    return params, inputs


def _mlp(name, hessian, act, params_extra=()):
    """A 3-4-1 MLP with the activation act(h, *extra params) and an MSE loss."""
    m = sg.Model(name, hessian=hessian)
    xin, target = m.input("x", ("batch", 3)), m.input("target", ("batch", 1))
    W1, b1 = m.param("W1", (4, 3)), m.param("b1", (4,))
    W2, b2 = m.param("W2", (1, 4)), m.param("b2", (1,))
    extra = [m.param(k, shape) for k, shape in params_extra]
    h = m.output("h", act(xin @ W1.T + b1, *extra))
    out = m.output("y", h @ W2.T + b2)
    m.loss(sg.mean((out - target) ** 2))
    return m


def _mlp_torch(act):
    def reference(p, i):
        h = act(i["x"] @ p["W1"].T + p["b1"], p)
        out = h @ p["W2"].T + p["b2"]
        return ((out - i["target"]) ** 2).mean(), {"h": h, "y": out}

    return reference


def _activation_family(name):
    fn, torch_fn = ACTIVATIONS[name]

    def build(hessian=False):
        model = _mlp(f"mlp_{name}", hessian, lambda h: sg.elementwise(fn, h))
        params, inputs = _mlp_data(len(name))
        return model, _mlp_torch(lambda u, p: torch_fn(u)), params, inputs

    build.__name__ = f"mlp_{name}"
    return build


for _name in ACTIVATIONS:
    family(_activation_family(_name))


@family
def mlp_swish_beta(hessian=False):
    """Swish-beta u sigmoid(beta u) with a learnable scalar beta, written as a SymPy
    formula of two arguments (the beta broadcast)."""
    model = _mlp(
        "mlp_swish_beta",
        hessian,
        lambda h, beta: sg.elementwise(_swish_beta, h, beta),
        [("beta", ())],
    )
    params, inputs = _mlp_data(11, {"beta": np.array(1.7)})
    return (
        model,
        _mlp_torch(lambda u, p: u * torch.sigmoid(p["beta"] * u)),
        params,
        inputs,
    )


@family
def mlp_rational(hessian=False):
    """A learnable rational activation (a0 + a1 u + a2 u^2) / (1 + |b u|), its four
    coefficients scalar params."""

    def act(h, a0, a1, a2, b):
        return sg.elementwise(
            lambda u, p0, p1, p2, q: _rational(u, (p0, p1, p2), q), h, a0, a1, a2, b
        )

    model = _mlp(
        "mlp_rational", hessian, act, [("a0", ()), ("a1", ()), ("a2", ()), ("b", ())]
    )
    extra = {
        k: np.array(v)
        for k, v in zip(("a0", "a1", "a2", "b"), (0.1, 1.0, 0.3, 0.7), strict=True)
    }
    params, inputs = _mlp_data(12, extra)
    return (
        model,
        _mlp_torch(
            lambda u, p: _rational_torch(u, (p["a0"], p["a1"], p["a2"]), p["b"])
        ),
        params,
        inputs,
    )


@family
def mlp_mish_softplus(hessian=False):
    """Mish written with sg.softplus (the README's advice): x tanh(softplus x)."""
    model = _mlp("mlp_mish_softplus", hessian, lambda h: h * sg.tanh(sg.softplus(h)))
    params, inputs = _mlp_data(13)
    return model, _mlp_torch(lambda u, p: F.mish(u)), params, inputs


@pytest.mark.parametrize("name", list(FAMILIES))
def test_activation_mlp_agrees_with_pytorch_and_central_differences(name):
    FAMILIES.assert_agrees(name)


SECOND_ORDER = [
    "mlp_mish",
    "mlp_gelu_tanh",
    "mlp_swish_beta",
    "mlp_rational",
    "mlp_selu",
]


@pytest.mark.parametrize("name", SECOND_ORDER)
def test_activation_hessian_and_hvp_agree_with_pytorch(name):
    FAMILIES.assert_second_order_agrees(name)


UNROLLED = ["mlp_elu", "mlp_hard_sigmoid", "mlp_swish_beta"]


@pytest.mark.parametrize("name", UNROLLED)
def test_activation_unrolled_at_the_datas_sizes_agrees_with_pytorch(name):
    FAMILIES.assert_unrolled_agrees(name)


# ======================================================================== 3. edges
# name -> (formula name, point, t data or None, also second order?): exact kinks,
# boundaries and extreme values, against torch's conventions there.

FORMULA_EDGES = {
    "piecewise_at_x_eq_0_y_eq_0": ("piecewise_and_or", (0.0, 0.0), False),
    "piecewise_at_x_eq_minus_1": ("piecewise_and_or", (-1.0, 0.5), False),
    "piecewise_at_y_eq_minus_1": ("piecewise_and_or", (0.5, -1.0), False),
    "max_min_ties_at_1_1": ("max_min_abs_sign_heaviside", (1.0, 1.0), False),
    "max_min_ties_at_2_1": ("max_min_abs_sign_heaviside", (2.0, 1.0), False),
    "abs_sign_at_0_y_positive": ("max_min_abs_sign_heaviside", (0.0, 0.5), False),
    "power_at_x_0_y_2": ("power_both_symbolic", (0.0, 2.0), False),
    "power_at_x_0_y_1": ("power_both_symbolic", (0.0, 1.0), False),
    "power_at_x_1_y_1": ("power_both_symbolic", (1.0, 1.0), True),
    "log_at_1e-300": ("log_bases", (1e-300, 1e-300), False),
    "atan2_on_the_negative_axis": ("atan2", (-1.0, 0.0), False),
    "atan2_below_the_negative_axis": ("atan2", (-1.0, -1e-300), False),
    "loggamma_at_1_and_2": ("loggamma", (1.0, 1.0), True),
    "erfc_deep_tail": ("gaussian_erf_erfc", (30.0, -1.0), False),
    "zero_derivative_at_y_0": ("zero_derivative_in_y", (0.3, 0.0), False),
}


@pytest.mark.parametrize("case", list(FORMULA_EDGES))
def test_formula_edges_agree_with_pytorch(case):
    name, point, second = FORMULA_EDGES[case]
    params, inputs, reference = formula_case(name, point)
    check(formula_module(name), reference, params, inputs)
    if second:
        assert_second_order_agrees(
            formula_module(name, hessian=True), reference, params, inputs, scaled=True
        )


def test_piecewise_boundaries_pick_the_first_true_branch_like_torch_where():
    """Piecewise((x^2, x < 1), (2x - 1 + y, x <= 2), (x y, True)) exactly at x = 1
    and x = 2, and just either side: value continuous at 1, jumps at 2."""
    f = sp.Piecewise((x**2, x < 1), (2 * x - 1 + y, x <= 2), (x * y, True))
    module = compile_module(sg.Model.from_expr("boundaries", loss=f, params=[x, y]))

    def reference(p, i):
        a, b = p["x"], p["y"]
        return torch.where(a < 1, a**2, torch.where(a <= 2, 2 * a - 1 + b, a * b)), {}

    for point in (1.0, np.nextafter(1.0, 0), np.nextafter(1.0, 2), 2.0, 2.5):
        params = {"x": np.array(point), "y": np.array(0.5)}
        check(module, reference, params, {})


def _activation_at(name, values):
    fn, torch_fn = ACTIVATIONS[name]
    m = sg.Model(f"edge_{name}")
    u = m.param("u", (len(values),))
    m.loss(sg.sum(sg.elementwise(fn, u)))
    return compile_module(m), lambda p, i: (torch_fn(p["u"]).sum(), {})


ACTIVATION_EDGES = {
    "elu": [0.0, -0.0, -745.0, -1e-300, 30.0],
    "selu": [0.0, -1e-300, -50.0, 1e-300, 50.0],
    "hard_sigmoid": [-3.0, 3.0, -3.0000000000000004, 2.9999999999999996, 0.0],
    "gelu_tanh": [0.0, -30.0, 30.0, -5.0, 1e-300],
    "mish": [0.0, -5.0, 5.0, 30.0, -30.0],
}


@pytest.mark.parametrize("name", list(ACTIVATION_EDGES))
def test_activation_kinks_and_extremes_agree_with_pytorch(name):
    module, reference = _activation_at(name, ACTIVATION_EDGES[name])
    check(module, reference, {"u": np.array(ACTIVATION_EDGES[name])}, {})


def test_hard_sigmoid_kinks_follow_f_hardsigmoid_up_to_its_float32_sixth():
    """At -3 and 3 exactly F.hardsigmoid's gradient is 0 and inside 1/6, as the
    Piecewise's; torch's 1/6 is a float32 constant (agreement 3e-8 only)."""
    values = ACTIVATION_EDGES["hard_sigmoid"]
    module, _ = _activation_at("hard_sigmoid", values)
    reference = lambda p, i: (F.hardsigmoid(p["u"]).sum(), {})  # noqa: E731
    assert_agrees_with_torch(module, reference, {"u": np.array(values)}, {}, 1e-7)
    _, _, expected = torch_twin(reference, {"u": np.array(values)}, {})
    assert abs(expected["u"][3] - 1 / 6) > 1e-9  # torch's float32 sixth


def test_mish_with_softplus_is_finite_and_exact_at_800():
    m = sg.Model("mish_800")
    u = m.param("u", (4,))
    m.loss(sg.sum(u * sg.tanh(sg.softplus(u))))
    values = np.array([800.0, -800.0, 40.0, -40.0])
    check(compile_module(m), lambda p, i: (F.mish(p["u"]).sum(), {}), {"u": values}, {})


def test_mish_written_with_log_one_plus_exp_at_800_is_no_worse_than_numpy():
    """sp.log(1 + sp.exp(u)) is computed as written (README): at 800 the value is
    still F.mish's, and the gradient is what NumPy gives on the formula's own SymPy
    derivative (nan: e^u / (1 + e^u) = inf / inf), not something worse."""
    module, _ = _activation_at("mish", [800.0, 5.0])
    values = np.array([800.0, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, grads = module.value_and_grad({"u": values}, {})
        u = sp.Symbol("u")
        naive = sp.lambdify(u, sp.diff(_mish(u), u), "numpy")(values)
    assert rel(loss, F.mish(_tensor(values)).sum().numpy()) <= 1e-15
    assert np.array_equal(np.isfinite(grads["u"]), np.isfinite(naive))
    assert abs(grads["u"][1] - naive[1]) <= 1e-14


# ===================================================================== 4. bugs found


def test_sympy_atan2_in_from_expr_at_the_origin_has_torchs_zero_gradient():
    module = compile_module(
        sg.Model.from_expr("atan2_origin", loss=sp.atan2(y, x), params=[x, y])
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss, grads = module.value_and_grad(
            {"x": np.array(0.0), "y": np.array(0.0)}, {}
        )
    assert loss == 0.0
    assert grads["x"] == 0.0 and grads["y"] == 0.0  # torch.atan2: 0, 0


def test_sympy_atan2_in_elementwise_at_the_origin_has_torchs_zero_gradient():
    m = sg.Model("atan2_elementwise")
    X, Y = m.param("x", (2,)), m.param("y", (2,))
    m.loss(sg.sum(sg.elementwise(lambda a, b: sp.atan2(a, b), Y, X)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, grads = compile_module(m).value_and_grad(
            {"x": np.zeros(2), "y": np.zeros(2)}, {}
        )
    assert np.array_equal(grads["x"], np.zeros(2))
    assert np.array_equal(grads["y"], np.zeros(2))


def test_sg_arctan2_at_the_origin_has_torchs_zero_gradient():
    """The same through sg.arctan2: 0, 0 as documented (the contrast to the above)."""
    m = sg.Model("arctan2_origin")
    X, Y = m.param("x", ()), m.param("y", ())
    m.loss(sg.arctan2(Y, X))
    _, grads = compile_module(m).value_and_grad(
        {"x": np.array(0.0), "y": np.array(0.0)}, {}
    )
    assert grads["x"] == 0.0 and grads["y"] == 0.0


def _pow_reference(p, i):
    return p["x"] ** p["y"], {}


def test_power_of_two_symbols_at_zero_zero_from_expr():
    module = compile_module(sg.Model.from_expr("pow00", loss=x**y, params=[x, y]))
    params = {"x": np.array(0.0), "y": np.array(0.0)}
    check(module, _pow_reference, params, {})


def test_power_of_two_params_at_zero_zero_sg():
    m = sg.Model("pow00_sg")
    X, Y = m.param("x", ()), m.param("y", ())
    m.loss(X**Y)
    params = {"x": np.array(0.0), "y": np.array(0.0)}
    check(compile_module(m), _pow_reference, params, {})


def test_sqrt_of_a_negative_definite_formula_is_refused_not_complex():
    with pytest.raises(sg.UnsupportedError, match="complex"):
        compile_module(
            sg.Model.from_expr("sqrt_negative", loss=sp.sqrt(-(x**2) - 1), params=[x])
        )


def test_sg_sqrt_of_a_negative_definite_expression_is_not_complex():
    m = sg.Model("sg_sqrt_negative")
    X = m.param("x", ())
    m.loss(sg.sqrt(-(X**2) - 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            loss, grads = compile_module(m).value_and_grad({"x": np.array(0.3)}, {})
        except sg.UnsupportedError:
            return
    assert not np.iscomplexobj(loss) and not np.iscomplexobj(grads["x"])


# ==================================================================== 5. messages

MESSAGES = {
    "besseli": (sp.besseli(0, x) + y, sg.UnsupportedError, "besseli"),
    "gamma": (sp.gamma(x) * y, sg.UnsupportedError, "gamma in gamma(x)"),
    "zeta": (sp.zeta(x) + y, sg.UnsupportedError, "zeta in zeta(x)"),
    "LambertW": (sp.LambertW(x) + y, sg.UnsupportedError, "LambertW"),
    "Mod": (sp.Mod(x, 1) + y, sg.UnsupportedError, "Mod"),
    "factorial": (sp.factorial(x) + y, sg.UnsupportedError, "factorial"),
    "Sum": (sp.Sum(x * t, (t, 1, 3)) + y, sg.UnsupportedError, "Sum"),
    "floor of a param": (
        sp.floor(x) * y,
        sg.UnsupportedError,
        "y*floor(x) with respect to x: floor has no derivative",
    ),
    "ceiling of a param": (
        sp.ceiling(y) + x,
        sg.UnsupportedError,
        "with respect to y: ceiling has no derivative",
    ),
    "Piecewise without True": (
        sp.Piecewise((x, x > 0), (y, x < -1)),
        sg.ModelError,
        "(expr, True)",
    ),
    "unknown symbol": (x + sp.Symbol("q"), sg.ModelError, "undefined symbol(s) q"),
    "undefined function": (
        sp.Function("f")(x) + y,
        sg.UnsupportedError,
        "use sg.elementwise",
    ),
    "infinite constant": (sp.oo * x + y, sg.UnsupportedError, "infinite constant"),
}


@pytest.mark.parametrize("case", list(MESSAGES))
def test_clear_messages_for_unsupported_formulas(case):
    f, error, hint = MESSAGES[case]
    with pytest.raises(error, match=re.escape(hint)):
        compile_module(sg.Model.from_expr("bad", loss=f, params=[x, y]))


def test_non_symbol_param_is_refused_with_a_clear_message():
    with pytest.raises(sg.ModelError, match="must be SymPy symbols"):
        sg.Model.from_expr("bad", loss=x**2, params=[x**2])


def test_elementwise_with_an_unsupported_function_names_it():
    m = sg.Model("bad_act")
    h = m.param("h", (3,))
    with pytest.raises(sg.UnsupportedError, match=re.escape("besseli")):
        sg.elementwise(lambda u: sp.besseli(1, u), h)
