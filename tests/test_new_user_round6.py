"""Round 6 of new-user models: SymPy formulas (``Model.from_expr``) with Hessians, deep
and wide models built in Python loops (with their compile times), unrolled models with
where/max/softmax/gathers at the unrolled sizes and at others, Hessian-vector products,
many named outputs and views, and the readability of the generated source. Everything
is compared with the same model written by hand in PyTorch (float64).
"""

from __future__ import annotations

import functools
import re
import signal
import time
import warnings

import numpy as np
import pytest
import sympy as sp
from helpers import (
    assert_agrees_with_torch,
    assert_second_order_agrees,
    compile_module,
    rel,
    torch_hessian,
)

import symgrad as sg
from symgrad.cli import generate
from symgrad.verify import load_source

torch = pytest.importorskip("torch")
F = torch.nn.functional

TOL = 1e-9
GRAD_LOSS = -1.5
COMPILE_LIMIT = 10.0  # seconds: slower than this is a bug for models of this size


def check(module, reference, params, inputs, tol=TOL):
    assert_agrees_with_torch(module, reference, params, inputs, tol, GRAD_LOSS)


def timed_compile(model):
    start = time.perf_counter()
    module = compile_module(model)
    return module, time.perf_counter() - start


# ===================================================================== 1. from_expr

x, y, z = sp.symbols("x y z")
T_, Y_, W_ = sp.symbols("t y_obs w")
PI = float(np.pi)

# name -> (formula, torch twin of the formula over a dict of scalars)
PURE = {
    "himmelblau_rational": (
        (x**2 + y - 11) ** 2 / (1 + z**2) + (x + y**2 - 7) ** 2 / (2 + sp.sin(z)),
        lambda p: (p["x"] ** 2 + p["y"] - 11) ** 2 / (1 + p["z"] ** 2)
        + (p["x"] + p["y"] ** 2 - 7) ** 2 / (2 + torch.sin(p["z"])),
    ),
    "beale": (
        (sp.Rational(3, 2) - x + x * y) ** 2
        + (sp.Rational(9, 4) - x + x * y**2) ** 2
        + (sp.Rational(21, 8) - x + x * y**3) ** 2
        + z**2,
        lambda p: (1.5 - p["x"] + p["x"] * p["y"]) ** 2
        + (2.25 - p["x"] + p["x"] * p["y"] ** 2) ** 2
        + (2.625 - p["x"] + p["x"] * p["y"] ** 3) ** 2
        + p["z"] ** 2,
    ),
    "booth": (
        (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2 + sp.cosh(z),
        lambda p: (p["x"] + 2 * p["y"] - 7) ** 2
        + (2 * p["x"] + p["y"] - 5) ** 2
        + torch.cosh(p["z"]),
    ),
    "ackley": (
        -20 * sp.exp(-sp.Rational(1, 5) * sp.sqrt((x**2 + y**2 + z**2) / 3))
        - sp.exp(
            (sp.cos(2 * sp.pi * x) + sp.cos(2 * sp.pi * y) + sp.cos(2 * sp.pi * z)) / 3
        )
        + sp.E
        + 20,
        lambda p: -20
        * torch.exp(-0.2 * torch.sqrt((p["x"] ** 2 + p["y"] ** 2 + p["z"] ** 2) / 3))
        - torch.exp(
            (
                torch.cos(2 * PI * p["x"])
                + torch.cos(2 * PI * p["y"])
                + torch.cos(2 * PI * p["z"])
            )
            / 3
        )
        + np.e
        + 20,
    ),
    "goldstein_price": (
        (
            1
            + (x + y + 1) ** 2
            * (19 - 14 * x + 3 * x**2 - 14 * y + 6 * x * y + 3 * y**2)
        )
        * (
            30
            + (2 * x - 3 * y) ** 2
            * (18 - 32 * x + 12 * x**2 + 48 * y - 36 * x * y + 27 * y**2)
        )
        + z**2,
        lambda p: (
            1
            + (p["x"] + p["y"] + 1) ** 2
            * (
                19
                - 14 * p["x"]
                + 3 * p["x"] ** 2
                - 14 * p["y"]
                + 6 * p["x"] * p["y"]
                + 3 * p["y"] ** 2
            )
        )
        * (
            30
            + (2 * p["x"] - 3 * p["y"]) ** 2
            * (
                18
                - 32 * p["x"]
                + 12 * p["x"] ** 2
                + 48 * p["y"]
                - 36 * p["x"] * p["y"]
                + 27 * p["y"] ** 2
            )
        )
        + p["z"] ** 2,
    ),
    "max_min_abs": (
        sp.Max(x, y**2, z) + sp.Min(x * y, 1) + sp.Abs(x - z) + sp.Abs(y) ** 3,
        lambda p: torch.maximum(torch.maximum(p["x"], p["y"] ** 2), p["z"])
        + torch.clamp(p["x"] * p["y"], max=1.0)
        + (p["x"] - p["z"]).abs()
        + p["y"].abs() ** 3,
    ),
    "nested_exp_log": (
        sp.log(1 + sp.exp(sp.log(1 + x**2) * sp.exp(-(y**2))))
        + sp.exp(sp.exp(-(z**2)) - 1) * sp.log(sp.log(3 + x**2 * y**2)),
        lambda p: torch.log(
            1 + torch.exp(torch.log(1 + p["x"] ** 2) * torch.exp(-p["y"] ** 2))
        )
        + torch.exp(torch.exp(-p["z"] ** 2) - 1)
        * torch.log(torch.log(3 + p["x"] ** 2 * p["y"] ** 2)),
    ),
    "symbolic_powers": (
        (2 + x**2) ** sp.sin(y) + 3**x + (1 + z**2) ** (x * y) + sp.sqrt(1 + x**4),
        lambda p: (2 + p["x"] ** 2) ** torch.sin(p["y"])
        + 3.0 ** p["x"]
        + (1 + p["z"] ** 2) ** (p["x"] * p["y"])
        + torch.sqrt(1 + p["x"] ** 4),
    ),
    "trig_zoo": (
        sp.sin(x * y) * sp.cos(z)
        + sp.tan(x / 3)
        + sp.atan(y * z)
        + sp.asinh(x * z)
        + sp.acos(x / 2)
        + sp.asin(y / 2)
        + sp.tanh(z) ** 2,
        lambda p: torch.sin(p["x"] * p["y"]) * torch.cos(p["z"])
        + torch.tan(p["x"] / 3)
        + torch.atan(p["y"] * p["z"])
        + torch.asinh(p["x"] * p["z"])
        + torch.acos(p["x"] / 2)
        + torch.asin(p["y"] / 2)
        + torch.tanh(p["z"]) ** 2,
    ),
    "rational_log10": (
        sp.log(1 + x**2 * y**2, 10) / (1 + sp.sqrt(1 + z**4))
        + sp.cbrt(2 + x**2)
        - (x - y) ** -2
        + (x**2 + 1) / (y**2 + x * y + 3),
        lambda p: torch.log10(1 + p["x"] ** 2 * p["y"] ** 2)
        / (1 + torch.sqrt(1 + p["z"] ** 4))
        + (2 + p["x"] ** 2) ** (1 / 3)
        - (p["x"] - p["y"]) ** -2
        + (p["x"] ** 2 + 1) / (p["y"] ** 2 + p["x"] * p["y"] + 3),
    ),
}

PURE_POINTS = [
    {"x": 0.7, "y": -0.4, "z": 0.3},
    {"x": -1.1, "y": 0.9, "z": -0.6},
]


@functools.cache
def pure_module(name):
    return compile_module(
        sg.Model.from_expr(name, loss=PURE[name][0], params=[x, y, z], hessian=True)
    )


@pytest.mark.parametrize("name", list(PURE))
def test_pure_formula_value_grad_hessian(name):
    module = pure_module(name)
    assert module.INPUTS == {} and module.PARAMS == {"x": (), "y": (), "z": ()}
    formula = PURE[name][1]

    def ref(p, i):
        return formula(p), {}

    for point in PURE_POINTS:
        params = {k: np.array(v) for k, v in point.items()}
        check(module, ref, params, {})
        assert_second_order_agrees(module, ref, params, {}, scaled=True)


def test_styblinski_tang_and_rosenbrock_of_twelve_scalars():
    """Functions of 12 separate SymPy symbols: a Hessian of 144 entries."""
    zs = sp.symbols("z0:12")
    f = sum(zi**4 - 16 * zi**2 + 5 * zi for zi in zs) / 2
    f += (
        sum(100 * (zs[k + 1] - zs[k] ** 2) ** 2 + (1 - zs[k]) ** 2 for k in range(11))
        / 100
    )
    module = compile_module(
        sg.Model.from_expr("styblinski_rosen", loss=f, params=list(zs), hessian=True)
    )

    def ref(p, i):
        v = [p[f"z{k}"] for k in range(12)]
        s = sum(a**4 - 16 * a**2 + 5 * a for a in v) / 2
        s = (
            s
            + sum(
                100 * (v[k + 1] - v[k] ** 2) ** 2 + (1 - v[k]) ** 2 for k in range(11)
            )
            / 100
        )
        return s, {}

    rng = np.random.default_rng(1)
    params = {f"z{k}": np.array(rng.normal()) for k in range(12)}
    check(module, ref, params, {})
    assert_second_order_agrees(module, ref, params, {}, 1e-10)


def _multiexp(reduce, hessian):
    a, b = sp.symbols("a0:6"), sp.symbols("b0:6")
    f = W_ * (sum(a[k] * sp.exp(-b[k] * T_) for k in range(6)) - Y_) ** 2
    return sg.Model.from_expr(
        f"multiexp_{reduce}",
        loss=f,
        params=[*a, *b],
        inputs=[T_, Y_, W_],
        reduce=reduce,
        hessian=hessian,
    )


def _multiexp_ref(reduce):
    def ref(p, i):
        fit = sum(p[f"a{k}"] * torch.exp(-p[f"b{k}"] * i["t"]) for k in range(6))
        per = i["w"] * (fit - i["y_obs"]) ** 2
        return (per.sum() if reduce == "sum" else per.mean()), {}

    return ref


def _multiexp_data(rng, batch):
    params = {f"a{k}": np.array(rng.normal()) for k in range(6)}
    params |= {f"b{k}": np.array(0.2 * (k + 1)) for k in range(6)}
    inputs = {
        "t": 3 * rng.random(batch),
        "y_obs": rng.normal(size=batch),
        "w": rng.random(batch),
    }
    return params, inputs


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_twelve_parameter_exponential_fit_with_three_inputs(reduce):
    module = compile_module(_multiexp(reduce, hessian=reduce == "sum"))
    assert module.INPUTS == {"t": ("batch",), "y_obs": ("batch",), "w": ("batch",)}
    assert len(module.PARAMS) == 12
    ref = _multiexp_ref(reduce)
    rng = np.random.default_rng(2)
    for batch in (1, 9):
        params, inputs = _multiexp_data(rng, batch)
        check(module, ref, params, inputs)
    if reduce == "mean":
        assert not hasattr(module, "hvp")
        return
    assert_second_order_agrees(module, ref, params, inputs, scaled=True)


ROBUST = (
    sp.Min(sp.Abs(x * T_ - y), 1) ** 2 / 2
    + sp.Max(sp.Abs(x * T_ - y) - 1, 0)
    + 1 / (1 + sp.exp(-x * T_))
    + sp.Max(x * T_, y, 0) * z
)


def _robust_ref(p, i):
    r = (p["x"] * i["t"] - p["y"]).abs()
    m = torch.maximum(torch.maximum(p["x"] * i["t"], p["y"]), torch.zeros_like(i["t"]))
    per = (
        torch.clamp(r, max=1) ** 2 / 2
        + torch.clamp(r - 1, min=0)
        + torch.sigmoid(p["x"] * i["t"])
        + m * p["z"]
    )
    return per.mean(), {}


def test_huber_like_formula_with_max_min_abs_and_an_input():
    module = compile_module(
        sg.Model.from_expr(
            "robust", loss=ROBUST, params=[x, y, z], inputs=[T_], hessian=True
        )
    )
    rng = np.random.default_rng(3)
    params = {"x": np.array(0.6), "y": np.array(-0.8), "z": np.array(0.4)}
    for batch in (1, 11):
        check(module, _robust_ref, params, {"t": 3 * rng.normal(size=batch)})
    inputs = {"t": 3 * rng.normal(size=11)}
    expected = torch_hessian(_robust_ref, params, inputs)
    assert rel(module.hessian(params, inputs), expected) <= 1e-8


def test_max_and_min_ties_in_a_formula_split_like_torch():
    t = sp.Symbol("t")
    module = compile_module(
        sg.Model.from_expr(
            "ties",
            loss=sp.Max(x * t, y) + sp.Min(x, y * t),
            params=[x, y],
            inputs=[t],
            reduce="sum",
        )
    )

    def ref(p, i):
        per = torch.maximum(p["x"] * i["t"], p["y"]) + torch.minimum(
            p["x"], p["y"] * i["t"]
        )
        return per.sum(), {}

    params = {"x": np.array(2.0), "y": np.array(2.0)}
    check(module, ref, params, {"t": np.array([1.0, 0.5, 3.0])})


# ===================================================================== 2. deep and wide

DEPTH, WIDTH = 12, 6


def deep_mlp(hessian=False):
    m = sg.Model("deep12", hessian=hessian)
    h = m.input("x", ("batch", 4))
    target = m.input("target", ("batch", 1))
    fan = 4
    for layer in range(DEPTH):
        out = 1 if layer == DEPTH - 1 else WIDTH
        W, b = m.param(f"W{layer}", (out, fan)), m.param(f"b{layer}", (out,))
        h = h @ W.T + b
        if layer < DEPTH - 1:
            h = sg.tanh(h) if layer % 2 else sg.softplus(h)
        fan = out
    m.output("pred", h)
    m.loss(sg.mean((h - target) ** 2))
    return m


def deep_mlp_ref(p, i):
    h = i["x"]
    for layer in range(DEPTH):
        h = h @ p[f"W{layer}"].T + p[f"b{layer}"]
        if layer < DEPTH - 1:
            h = torch.tanh(h) if layer % 2 else F.softplus(h)
    return ((h - i["target"]) ** 2).mean(), {"pred": h}


def deep_mlp_data(rng, batch):
    params, fan = {}, 4
    for layer in range(DEPTH):
        out = 1 if layer == DEPTH - 1 else WIDTH
        params[f"W{layer}"] = rng.normal(size=(out, fan)) / np.sqrt(fan)
        params[f"b{layer}"] = 0.1 * rng.normal(size=out)
        fan = out
    return params, {
        "x": rng.normal(size=(batch, 4)),
        "target": rng.normal(size=(batch, 1)),
    }


N_WIDE = 30


def wide30(hessian=False):
    """30 parameter vectors, each in its own tanh / sin / softplus branch."""
    m = sg.Model("wide30", hessian=hessian)
    xin, target = m.input("x", ("batch", 3)), m.input("target", ("batch",))
    total = None
    for k in range(N_WIDE):
        act = (sg.tanh, sg.sin, sg.softplus)[k % 3]
        term = act(xin @ m.param(f"w{k}", (3,))) * ((k + 1) / N_WIDE)
        total = term if total is None else total + term
    m.loss(sg.mean((total - target) ** 2))
    return m


def wide30_ref(p, i):
    total = 0
    for k in range(N_WIDE):
        act = (torch.tanh, torch.sin, F.softplus)[k % 3]
        total = total + act(i["x"] @ p[f"w{k}"]) * ((k + 1) / N_WIDE)
    return ((total - i["target"]) ** 2).mean(), {}


def wide30_data(rng, batch):
    params = {f"w{k}": 0.5 * rng.normal(size=3) for k in range(N_WIDE)}
    return params, {"x": rng.normal(size=(batch, 3)), "target": rng.normal(size=batch)}


def smooth1d(hessian=False):
    """Denoising with first to fourth finite differences as regularizers."""
    m = sg.Model("smooth1d", hessian=hessian)
    yv, lam = m.input("y", ("n",)), m.input("lam", ())
    u = m.param("u", ("n",))
    d1 = u[1:] - u[:-1]
    d2 = m.output("d2", u[2:] - 2 * u[1:-1] + u[:-2])
    d3 = d2[1:] - d2[:-1]
    d4 = u[4:] - 4 * u[3:-1] + 6 * u[2:-2] - 4 * u[1:-3] + u[:-4]
    m.loss(
        sg.sum((u - yv) ** 2)
        + lam * sg.sum(d2**2)
        + 0.1 * sg.sum(sg.sqrt(d1**2 + 1e-3))
        + 0.01 * sg.sum(d3**2)
        + 0.001 * sg.mean(d4**2)
    )
    return m


def smooth1d_ref(p, i):
    u = p["u"]
    d1 = u[1:] - u[:-1]
    d2 = u[2:] - 2 * u[1:-1] + u[:-2]
    d3 = d2[1:] - d2[:-1]
    d4 = u[4:] - 4 * u[3:-1] + 6 * u[2:-2] - 4 * u[1:-3] + u[:-4]
    loss = (
        ((u - i["y"]) ** 2).sum()
        + i["lam"] * (d2**2).sum()
        + 0.1 * torch.sqrt(d1**2 + 1e-3).sum()
        + 0.01 * (d3**2).sum()
        + 0.001 * (d4**2).mean()
    )
    return loss, {"d2": d2}


def smooth1d_data(rng, n):
    return {"u": rng.normal(size=n)}, {"y": rng.normal(size=n), "lam": np.array(0.7)}


def image2d(hessian=False):
    """Second differences on both axes of an image, a mixed difference and smoothed TV."""
    m = sg.Model("image2d", hessian=hessian)
    f = m.input("f", ("H", "W"))
    u = m.param("u", ("H", "W"))
    dxx = u[:, 2:] - 2 * u[:, 1:-1] + u[:, :-2]
    dyy = u[2:, :] - 2 * u[1:-1, :] + u[:-2, :]
    dxy = u[1:, 1:] - u[1:, :-1] - u[:-1, 1:] + u[:-1, :-1]
    lap = m.output("lap", dxx[1:-1, :] + dyy[:, 1:-1])
    m.output("lapT", lap.T)
    gx, gy = u[:, 1:] - u[:, :-1], u[1:, :] - u[:-1, :]
    tv = sg.sqrt(gx[:-1, :] ** 2 + gy[:, :-1] ** 2 + 1e-6)
    m.loss(
        0.5 * sg.sum((u - f) ** 2)
        + 0.1 * sg.sum(lap**2)
        + 0.05 * sg.sum(dxy**2)
        + 0.2 * sg.sum(tv)
    )
    return m


def image2d_ref(p, i):
    u = p["u"]
    dxx = u[:, 2:] - 2 * u[:, 1:-1] + u[:, :-2]
    dyy = u[2:, :] - 2 * u[1:-1, :] + u[:-2, :]
    dxy = u[1:, 1:] - u[1:, :-1] - u[:-1, 1:] + u[:-1, :-1]
    lap = dxx[1:-1, :] + dyy[:, 1:-1]
    gx, gy = u[:, 1:] - u[:, :-1], u[1:, :] - u[:-1, :]
    tv = torch.sqrt(gx[:-1, :] ** 2 + gy[:, :-1] ** 2 + 1e-6)
    loss = (
        0.5 * ((u - i["f"]) ** 2).sum()
        + 0.1 * (lap**2).sum()
        + 0.05 * (dxy**2).sum()
        + 0.2 * tv.sum()
    )
    return loss, {"lap": lap, "lapT": lap.T}


def image2d_data(rng, H, W):
    return {"u": rng.normal(size=(H, W))}, {"f": rng.normal(size=(H, W))}


STEPS, HIDDEN = 8, 5


def rnn8(hessian=False):
    """An Elman RNN over 8 steps, unrolled in Python, with a softmax cross-entropy."""
    m = sg.Model("rnn8", hessian=hessian)
    xs = m.input("xs", ("batch", STEPS, 3))
    labels = m.input("labels", ("batch",), dtype="int64")
    Wx, Wh = m.param("Wx", (HIDDEN, 3)), m.param("Wh", (HIDDEN, HIDDEN))
    b, Wo, bo = m.param("b", (HIDDEN,)), m.param("Wo", (4, HIDDEN)), m.param("bo", (4,))
    h = sg.tanh(xs[:, 0, :] @ Wx.T + b)
    for t in range(1, STEPS):
        h = sg.tanh(xs[:, t, :] @ Wx.T + h @ Wh.T + b)
    logits = m.output("logits", h @ Wo.T + bo)
    picked = sg.take_along_axis(
        sg.log_softmax(logits, axis=-1), labels[:, None], axis=1
    )
    m.loss(-sg.mean(picked))
    return m


def rnn8_ref(p, i):
    h = torch.tanh(i["xs"][:, 0, :] @ p["Wx"].T + p["b"])
    for t in range(1, STEPS):
        h = torch.tanh(i["xs"][:, t, :] @ p["Wx"].T + h @ p["Wh"].T + p["b"])
    logits = h @ p["Wo"].T + p["bo"]
    return F.cross_entropy(logits, i["labels"]), {"logits": logits}


def rnn8_data(rng, batch):
    params = {
        "Wx": 0.5 * rng.normal(size=(HIDDEN, 3)),
        "Wh": 0.5 * rng.normal(size=(HIDDEN, HIDDEN)),
        "b": 0.1 * rng.normal(size=HIDDEN),
        "Wo": rng.normal(size=(4, HIDDEN)),
        "bo": rng.normal(size=4),
    }
    inputs = {
        "xs": rng.normal(size=(batch, STEPS, 3)),
        "labels": rng.integers(0, 4, batch),
    }
    return params, inputs


LSTM_H = 3


def lstm8(hessian=False):
    """An LSTM cell over 8 steps (gates as slices of one matmul)."""
    H = LSTM_H
    m = sg.Model("lstm8", hessian=hessian)
    xs, target = m.input("xs", ("batch", STEPS, 2)), m.input("target", ("batch",))
    W, U = m.param("W", (4 * H, 2)), m.param("U", (4 * H, H))
    b, v = m.param("b", (4 * H,)), m.param("v", (H,))
    h = c = None
    for t in range(STEPS):
        g = xs[:, t, :] @ W.T + b
        if h is not None:
            g = g + h @ U.T
        i_, f_ = sg.sigmoid(g[:, :H]), sg.sigmoid(g[:, H : 2 * H])
        cand, o_ = sg.tanh(g[:, 2 * H : 3 * H]), sg.sigmoid(g[:, 3 * H :])
        c = i_ * cand if c is None else f_ * c + i_ * cand
        h = o_ * sg.tanh(c)
    pred = m.output("pred", h @ v)
    m.loss(sg.mean((pred - target) ** 2))
    return m


def lstm8_ref(p, i):
    H = LSTM_H
    h = c = None
    for t in range(STEPS):
        g = i["xs"][:, t, :] @ p["W"].T + p["b"]
        if h is not None:
            g = g + h @ p["U"].T
        i_, f_ = torch.sigmoid(g[:, :H]), torch.sigmoid(g[:, H : 2 * H])
        cand, o_ = torch.tanh(g[:, 2 * H : 3 * H]), torch.sigmoid(g[:, 3 * H :])
        c = i_ * cand if c is None else f_ * c + i_ * cand
        h = o_ * torch.tanh(c)
    pred = h @ p["v"]
    return ((pred - i["target"]) ** 2).mean(), {"pred": pred}


def lstm8_data(rng, batch):
    H = LSTM_H
    params = {
        "W": 0.5 * rng.normal(size=(4 * H, 2)),
        "U": 0.5 * rng.normal(size=(4 * H, H)),
        "b": 0.1 * rng.normal(size=4 * H),
        "v": rng.normal(size=H),
    }
    return params, {
        "xs": rng.normal(size=(batch, STEPS, 2)),
        "target": rng.normal(size=batch),
    }


def leaky_scan(hessian=False):
    """A cumulative recurrence s_t = a s_{t-1} + w_t x_t with softplus readouts."""
    m = sg.Model("leaky_scan", hessian=hessian)
    xin = m.input("x", ("batch", STEPS))
    w, a = m.param("w", (STEPS,)), m.param("a", ())
    s, total = xin[:, 0] * w[0], 0.0
    for t in range(1, STEPS):
        s = a * s + xin[:, t] * w[t]
        total = total + sg.softplus(s)
    m.output("last", s)
    m.loss(sg.mean(total))
    return m


def leaky_scan_ref(p, i):
    s, total = i["x"][:, 0] * p["w"][0], 0.0
    for t in range(1, STEPS):
        s = p["a"] * s + i["x"][:, t] * p["w"][t]
        total = total + F.softplus(s)
    return total.mean(), {"last": s}


def leaky_scan_data(rng, batch):
    return {"w": rng.normal(size=STEPS), "a": np.array(0.8)}, {
        "x": rng.normal(size=(batch, STEPS))
    }


DEEP = {
    "deep_mlp": (deep_mlp, deep_mlp_ref, deep_mlp_data, [{"batch": 1}, {"batch": 6}]),
    "wide30": (wide30, wide30_ref, wide30_data, [{"batch": 5}]),
    "smooth1d": (
        smooth1d,
        smooth1d_ref,
        smooth1d_data,
        [{"n": 5}, {"n": 6}, {"n": 13}],
    ),
    "image2d": (
        image2d,
        image2d_ref,
        image2d_data,
        [{"H": 3, "W": 3}, {"H": 4, "W": 7}, {"H": 9, "W": 5}],
    ),
    "rnn8": (rnn8, rnn8_ref, rnn8_data, [{"batch": 1}, {"batch": 6}]),
    "lstm8": (lstm8, lstm8_ref, lstm8_data, [{"batch": 1}, {"batch": 4}]),
    "leaky_scan": (leaky_scan, leaky_scan_ref, leaky_scan_data, [{"batch": 3}]),
}

COMPILE_TIMES: dict = {}


@functools.cache
def deep_source(name):
    model = DEEP[name][0]()
    start = time.perf_counter()
    source, _ = generate(model)
    COMPILE_TIMES[name] = time.perf_counter() - start
    return source, model.name


def deep_module(name):
    return load_source(*deep_source(name))


@pytest.mark.parametrize("name", list(DEEP))
def test_deep_and_wide_models_agree_with_pytorch(name):
    _, ref, data, sizes = DEEP[name]
    module = deep_module(name)
    rng = np.random.default_rng(4)
    for dims in sizes:
        check(module, ref, *data(rng, **dims))
    print(f"{name}: compiled in {COMPILE_TIMES[name]:.2f} s")
    assert COMPILE_TIMES[name] < COMPILE_LIMIT


def test_deep_mlp_of_24_parameters_verifies_by_central_differences():
    module = deep_module("deep_mlp")
    params, inputs = deep_mlp_data(np.random.default_rng(5), 3)
    _, grads = module.value_and_grad(params, inputs)
    rng = np.random.default_rng(6)
    for _ in range(3):
        v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
        eps = 1e-6
        plus = {k: params[k] + eps * v[k] for k in params}
        minus = {k: params[k] - eps * v[k] for k in params}
        fd = (
            module.value_and_grad(plus, inputs)[0]
            - module.value_and_grad(minus, inputs)[0]
        ) / (2 * eps)
        exact = sum(np.vdot(grads[k], v[k]) for k in params)
        assert abs(fd - exact) <= 1e-6 * max(1.0, abs(exact))


def _sigmoid_sum(K):
    m = sg.Model(f"sigmoid_sum_{K}")
    xin, target = m.input("x", ("batch", 3)), m.input("target", ("batch",))
    total = None
    for k in range(K):
        term = sg.sigmoid(xin @ m.param(f"w{k}", (3,))) * ((k + 1) / K)
        total = term if total is None else total + term
    m.loss(sg.mean((total - target) ** 2))
    return m


class _CompileTimeout(Exception):
    pass


def test_sum_of_30_sigmoid_branches_compiles_in_under_10_s():
    def stop(*_):
        raise _CompileTimeout

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, COMPILE_LIMIT)
    try:
        module, seconds = timed_compile(_sigmoid_sum(30))
    except _CompileTimeout:
        pytest.fail(f"compiling 30 sigmoid branches took more than {COMPILE_LIMIT} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert seconds < COMPILE_LIMIT
    rng = np.random.default_rng(7)

    def ref(p, i):
        total = sum(
            torch.sigmoid(i["x"] @ p[f"w{k}"]) * ((k + 1) / 30) for k in range(30)
        )
        return ((total - i["target"]) ** 2).mean(), {}

    params = {f"w{k}": rng.normal(size=3) for k in range(30)}
    check(
        module,
        ref,
        params,
        {"x": rng.normal(size=(4, 3)), "target": rng.normal(size=4)},
    )


# ===================================================================== 3. unrolled


def unrolled_mix(hessian=False):
    m = sg.Model("unrolled_mix", hessian=hessian)
    xin = m.input("x", ("batch", 4))
    labels = m.input("labels", ("batch", 1), dtype="int64")
    idx = m.input("idx", ("k",), dtype="int64")
    W, E, g = m.param("W", (3, 4)), m.param("E", (5, 3)), m.param("g", ())
    h = xin @ W.T
    h = sg.where((h > 0) | (h < -2), h, g * h)
    top = sg.max(h, axis=1, keepdims=True)
    emb = E[idx]
    logits = m.output("logits", h - top + sg.max(emb, axis=0))
    p = m.output("p", sg.softmax(logits, axis=-1))
    picked = sg.take_along_axis(sg.log_softmax(logits, axis=-1), labels, axis=1)
    m.loss(
        -sg.mean(picked)
        + 0.1 * sg.sum(p * p)
        + 0.01 * sg.sum(sg.maximum(emb, 0.2 * emb))
        + 0.01 * sg.sum(sg.abs(E) * sg.relu(E))
    )
    return m


def unrolled_mix_ref(p, i):
    h = i["x"] @ p["W"].T
    h = torch.where((h > 0) | (h < -2), h, p["g"] * h)
    top = h.amax(1, keepdim=True)
    emb = p["E"][i["idx"]]
    logits = h - top + emb.amax(0)
    prob = torch.softmax(logits, -1)
    picked = torch.take_along_dim(torch.log_softmax(logits, -1), i["labels"], 1)
    loss = (
        -picked.mean()
        + 0.1 * (prob * prob).sum()
        + 0.01 * torch.maximum(emb, 0.2 * emb).sum()
        + 0.01 * (p["E"].abs() * torch.relu(p["E"])).sum()
    )
    return loss, {"logits": logits, "p": prob}


def unrolled_mix_data(rng, batch, k):
    params = {
        "W": rng.normal(size=(3, 4)),
        "E": rng.normal(size=(5, 3)),
        "g": np.array(0.1),
    }
    inputs = {
        "x": rng.normal(size=(batch, 4)),
        "labels": rng.integers(0, 3, (batch, 1)),
        "idx": rng.integers(0, 5, k),
    }
    return params, inputs


@functools.cache
def unrolled_mix_module():
    m = unrolled_mix()
    m.unroll(batch=2, k=3)
    m.unroll(batch=1, k=1)
    return compile_module(m)


def _spy(module, name):
    """Count calls of the module's unrolled function ``name``."""
    calls = []
    inner = getattr(module, name)

    def spy(*args):
        calls.append(1)
        return inner(*args)

    setattr(module, name, spy)
    return calls, lambda: setattr(module, name, inner)


@pytest.mark.parametrize(
    "batch, k, unrolled",
    [
        (2, 3, "_value_and_grad_batch_2_k_3"),
        (1, 1, "_value_and_grad_batch_1_k_1"),
        (1, 3, None),
        (2, 4, None),
        (5, 2, None),
    ],
)
def test_unrolled_where_max_softmax_gathers_at_and_off_the_unrolled_sizes(
    batch, k, unrolled
):
    module = unrolled_mix_module()
    rng = np.random.default_rng(8)
    names = [n for n in dir(module) if n.startswith("_value_and_grad_batch")]
    assert sorted(names) == [
        "_value_and_grad_batch_1_k_1",
        "_value_and_grad_batch_2_k_3",
    ]
    spies = [_spy(module, n) for n in names]
    try:
        for case in ("normal", "ties", "zeros", "large"):
            params, inputs = unrolled_mix_data(rng, batch, k)
            if case == "ties":
                inputs["idx"][:] = 1
                params["E"][1] = 0.5
            elif case == "zeros":
                inputs["x"][:] = 0.0
            elif case == "large":
                params["W"] *= 1000
            check(module, unrolled_mix_ref, params, inputs)
    finally:
        calls = {n: len(c) for n, (c, _) in zip(names, spies, strict=True)}
        for _, undo in spies:
            undo()
    expected = {n: (4 if n == unrolled else 0) for n in names}
    assert calls == expected


def test_unrolled_max_propagates_nan_like_numpy():
    """Python's max() drops a NaN unless it comes first; the unrolled code must not."""
    m = sg.Model("max_nan")
    xin, w = m.input("x", ("batch", 3)), m.param("w", (3,))
    m.loss(sg.sum(sg.max(xin * w, axis=1)))
    m.unroll(batch=1)
    module = compile_module(m)
    w0 = np.array([0.5, -0.3, 0.2])
    for batch in (2, 1):  # vectorized, then unrolled
        xv = np.ones((batch, 3))
        xv[0, 1] = np.nan
        tw = torch.tensor(w0, requires_grad=True)
        expected = (torch.tensor(xv) * tw).amax(1).sum()
        assert torch.isnan(expected)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss, _ = module.value_and_grad({"w": w0}, {"x": xv})
        assert np.isnan(loss), (batch, loss)


# ===================================================================== 4. hvp

HVP_FAMILIES = {
    "deep_mlp": (deep_mlp, deep_mlp_ref, deep_mlp_data, {"batch": 3}),
    "image2d": (image2d, image2d_ref, image2d_data, {"H": 4, "W": 5}),
    "rnn8": (rnn8, rnn8_ref, rnn8_data, {"batch": 3}),
    "smooth1d": (smooth1d, smooth1d_ref, smooth1d_data, {"n": 9}),
    "leaky_scan": (leaky_scan, leaky_scan_ref, leaky_scan_data, {"batch": 4}),
}


@pytest.mark.parametrize("name", list(HVP_FAMILIES))
def test_hvp_with_a_random_vector_agrees_with_torch(name):
    build, ref, data, dims = HVP_FAMILIES[name]
    module = compile_module(build(hessian=True))
    params, inputs = data(np.random.default_rng(9), **dims)
    for seed in (0, 1):
        assert_second_order_agrees(module, ref, params, inputs, scaled=True, seed=seed)


def test_hvp_and_hessian_of_the_unrolled_mix_agree_with_torch():
    module = compile_module(unrolled_mix(hessian=True))
    params, inputs = unrolled_mix_data(np.random.default_rng(10), 3, 4)
    assert_second_order_agrees(module, unrolled_mix_ref, params, inputs, scaled=True)


# ===================================================================== 5. outputs


def many_outputs():
    m = sg.Model("many_outputs")
    xin = m.input("x", ("batch", 4))
    idx = m.input("idx", ("k",), dtype="int64")
    labels = m.input("labels", ("batch",), dtype="int64")
    W, b, E = m.param("W", (3, 4)), m.param("b", (3,)), m.param("E", (6, 3))
    zz = m.let("zz", xin @ W.T + b)
    h = m.output("h", sg.tanh(zz))
    m.output("hT", h.T)
    m.output("h_first", h[0])
    m.output("h_tail", h[1:, ::2])
    m.output("h_col", h[:, 1])
    m.output("h3d", h[:, None, :])
    m.output("h_flat", sg.reshape(h, (-1,)))
    e = m.output("e", E[idx])
    m.output("e_sum", sg.sum(E[idx], axis=0))
    m.output("eT", E[idx].T)
    m.output("picked", sg.take_along_axis(h, labels[:, None], axis=1))
    m.output("rows", E[labels])
    m.output("ET", E.T)
    sq = m.let("sq", h * h)
    m.output("sq_mean", sg.mean(sq, axis=0))
    m.output("sq_T_every_other", sq.T[::2])
    loss = sg.mean(sq) + 0.1 * sg.sum(e**2)
    m.output("loss_copy", loss)
    m.loss(loss)
    return m


def many_outputs_ref(p, i):
    h = torch.tanh(i["x"] @ p["W"].T + p["b"])
    e = p["E"][i["idx"]]
    sq = h * h
    loss = sq.mean() + 0.1 * (e**2).sum()
    return loss, {
        "h": h,
        "hT": h.T,
        "h_first": h[0],
        "h_tail": h[1:, ::2],
        "h_col": h[:, 1],
        "h3d": h[:, None, :],
        "h_flat": h.reshape(-1),
        "e": e,
        "e_sum": e.sum(0),
        "eT": e.T,
        "picked": torch.take_along_dim(h, i["labels"][:, None], 1),
        "rows": p["E"][i["labels"]],
        "ET": p["E"].T,
        "sq_mean": sq.mean(0),
        "sq_T_every_other": sq.T[::2],
        "loss_copy": loss,
    }


def test_many_outputs_views_gathers_and_the_loss_itself():
    module = compile_module(many_outputs())
    expected_names = ["h", "hT", "h_first", "h_tail", "h_col", "h3d", "h_flat", "e"]
    expected_names += ["e_sum", "eT", "picked", "rows", "ET", "sq_mean"]
    assert module.OUTPUTS == (*expected_names, "sq_T_every_other", "loss_copy")
    rng = np.random.default_rng(12)
    params = {
        "W": rng.normal(size=(3, 4)),
        "b": rng.normal(size=3),
        "E": rng.normal(size=(6, 3)),
    }
    for batch, k in ((1, 1), (5, 3)):
        inputs = {
            "x": rng.normal(size=(batch, 4)),
            "idx": rng.integers(0, 6, k),
            "labels": rng.integers(0, 3, batch),
        }
        check(module, many_outputs_ref, params, inputs, tol=1e-12)
        outputs, cache = module.forward(params, inputs)
        assert outputs["loss_copy"] == outputs["loss"]
        before = module.backward(cache)
        for k_, value in outputs.items():  # outputs are the user's to edit
            assert not np.shares_memory(value, params["E"]), k_
            assert not np.shares_memory(value, inputs["x"]), k_
            value[...] = 7.0
        after = module.backward(cache)
        assert all(np.array_equal(before[k_], after[k_]) for k_ in before)


def test_one_value_named_twice_is_a_clear_error():
    m = sg.Model("named_twice")
    xin, w = m.input("x", ("batch", 2)), m.param("w", (2,))
    h = m.output("h", sg.tanh(xin @ w))
    with pytest.raises(sg.ModelError, match="already named 'h'"):
        m.output("h_again", h)


# ===================================================================== 6. source quality


def _function(source, name):
    return source.split(f"\ndef {name}(")[1].split("\ndef ")[0]


@pytest.mark.parametrize("name", ["deep_mlp", "image2d", "smooth1d", "rnn8"])
def test_generated_source_reads_like_hand_written_numpy(name):
    source, _ = deep_source(name)
    lines = source.splitlines()
    assert max(len(line) for line in lines if not line.strip().startswith('"""')) <= 88
    assert not re.search(
        r"(?<![\w.])\d{10,}(?![\d.])", source
    )  # no giant integers or fractions
    for fn in ("forward", "value_and_grad"):
        body = _function(source, fn)
        statements = [
            line.split(" = ", 1)[1].strip()
            for line in body.splitlines()
            if re.match(r"\s+\w+ = ", line) and not line.rstrip().endswith(("(", "["))
        ]
        repeated = {
            s for s in statements if statements.count(s) > 1 and "np.zeros" not in s
        }
        assert not repeated, (fn, repeated)


def _first_temporaries(body):
    seen = []
    for match in re.finditer(r"^\s+t(\d+) = ", body, re.M):
        if int(match.group(1)) not in seen:
            seen.append(int(match.group(1)))
    return seen


def test_lstm_temporaries_are_numbered_in_order_of_use():
    source, _ = deep_source("lstm8")
    seen = _first_temporaries(_function(source, "value_and_grad"))
    assert seen == sorted(seen), seen[:8]


def test_formula_residual_is_computed_once():
    """factor_terms clears the gradient's denominators (9 + 4*t2 - 4*x for the loss's
    9/4 + t2 - x); symbolic._forward_sums writes it back as the forward's sum."""
    module_source, _ = generate(
        sg.Model.from_expr(
            "residual_once", loss=(sp.Rational(9, 4) - x + x * y**2) ** 2, params=[x, y]
        )
    )
    body = _function(module_source, "value_and_grad").split("pass  #")[1]
    assert len(re.findall(r"t2 - (?:[\d.]+ \* )?x\b", body)) <= 1, body
