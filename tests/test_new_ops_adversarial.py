"""Adversarial tests of the newest operations, as a new user comparing with PyTorch
(float64): sg.concatenate, sg.stack, sg.cumsum, sg.var/std (ddof), sg.min / x.min(),
sg.clip (torch.clamp's gradient), sg.log1p, negative slice steps (x[::-1] on symbolic
axes, x[5::-2] on fixed ones) and sp.Piecewise in sg.elementwise / Model.from_expr.

They are combined with each other and with gathers, take_along_axis, matmul,
broadcasting, reshape, softmax/logsumexp, where and maximum; at size-1 and other
symbolic sizes; vectorized, unrolled (m.unroll, and small fixed models unrolled
automatically: the unrolled `_value_and_grad_*` is also called directly) and with
hessian=True; through `symgrad build` + `symgrad verify` on a model file; and for
determinism and clear errors on misuse. Bugs are strict xfails whose reason is the
diagnosis.
"""

from __future__ import annotations

import functools
import inspect
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import sympy as sp
from helpers import (
    assert_agrees_with_torch,
    assert_second_order_agrees,
    check,
    compile_module,
    rel,
    symbolic_sizes,
    torch_hessian,
    torch_twin,
)

import symgrad as sg
from symgrad.cli import generate
from symgrad.verify import load_source, verify

torch = pytest.importorskip("torch")


def picks(sl: slice, n: int):
    """NumPy's positions of ``sl`` on an axis of ``n``, for torch (no negative steps)."""
    return torch.tensor(np.arange(n)[sl].copy())


# ===================================================================== 1. model families
# Each family: hessian -> (model, torch twin, data(rng, size) -> (params, inputs), sizes).
# A size of None means the model has no symbolic dims.

FAMILIES = {}


def family(fn):
    FAMILIES[fn.__name__] = fn
    return fn


@family
def concat_symbolic_axis_middle(hessian=False):
    """The symbolic part between fixed parts along axis 0, then cumsum and tanh."""
    m = sg.Model("concat_symbolic_axis_middle", hessian=hessian)
    x = m.input("x", ("n", 3))
    W, b, c = m.param("W", (2, 3)), m.param("b", (1, 3)), m.param("c", (3, 3))
    y = sg.concatenate([W, x * W[0], b, c], axis=0)  # sin(c): see the xfail below
    m.output("y", y)
    m.loss(sg.sum(sg.tanh(y) * sg.cumsum(y, axis=0)) + sg.mean(y[-4:] ** 2))

    def reference(p, i):
        y = torch.cat([p["W"], i["x"] * p["W"][0], p["b"], p["c"]], 0)
        loss = (torch.tanh(y) * torch.cumsum(y, 0)).sum() + (y[-4:] ** 2).mean()
        return loss, {"y": y}

    def data(rng, n):
        params = {"W": rng.standard_normal((2, 3)), "b": rng.standard_normal((1, 3))}
        params["c"] = rng.standard_normal((3, 3))
        return params, {"x": rng.standard_normal((n, 3))}

    return m, reference, data, [1, 4]


@family
def concat_last_axis_nested_reversal(hessian=False):
    """axis=-1 along a symbolic last axis: a nested concatenation, reversed, inside
    another, then softmax and a reversed cumsum."""
    m = sg.Model("concat_last_axis_nested_reversal", hessian=hessian)
    x = m.input("x", (2, "n"))
    a, c = m.param("a", (2, 1)), m.param("c", (2, 2))
    inner = sg.concatenate([a, x * a], axis=-1)
    y = sg.concatenate([c, inner[:, ::-1], a * 2], axis=-1)
    m.output("y", y)
    m.loss(
        sg.sum(sg.softmax(y, axis=-1) * y)
        + sg.sum(sg.cumsum(y, axis=-1)[:, ::-1] ** 2) / 10
    )

    def reference(p, i):
        inner = torch.cat([p["a"], i["x"] * p["a"]], -1)
        y = torch.cat([p["c"], inner.flip(-1), p["a"] * 2], -1)
        loss = (torch.softmax(y, -1) * y).sum()
        return loss + (torch.cumsum(y, -1).flip(-1) ** 2).sum() / 10, {"y": y}

    def data(rng, n):
        params = {"a": rng.standard_normal((2, 1)), "c": rng.standard_normal((2, 2))}
        return params, {"x": rng.standard_normal((2, n))}

    return m, reference, data, [1, 5]


@family
def concat_slices_of_one_array(hessian=False):
    """A rotation w[1:] ++ w[:1] of a symbolic vector, a reversal concatenated with a
    slice of itself, and a cumsum over such a concatenation."""
    m = sg.Model("concat_slices_of_one_array", hessian=hessian)
    w = m.param("w", ("n",))
    s = m.input("s", ("n",))
    rot = m.output("rot", sg.concatenate([w[1:], w[:1]]))
    left = sg.concatenate([w[::-1], w[:2]])
    right = sg.cumsum(sg.concatenate([w[:2] * s[:2], (w * s)[::-1]]))
    m.loss(sg.sum((rot - w) ** 2) + sg.sum(left * right) / 3)

    def reference(p, i):
        w, s = p["w"], i["s"]
        rot = torch.cat([w[1:], w[:1]])
        left = torch.cat([w.flip(0), w[:2]])
        right = torch.cumsum(torch.cat([w[:2] * s[:2], (w * s).flip(0)]), 0)
        return ((rot - w) ** 2).sum() + (left * right).sum() / 3, {"rot": rot}

    def data(rng, n):
        return {"w": rng.standard_normal(n)}, {"s": rng.standard_normal(n)}

    return m, reference, data, [2, 6]


@family
def stack_on_every_axis(hessian=False):
    """stack at axis=-1 and 1, of 0-d values, of rows; matmul of a reversed stack."""
    m = sg.Model("stack_on_every_axis", hessian=hessian)
    x = m.input("x", ("n", 3))
    w, k = m.param("w", (3,)), m.param("k")
    s = m.output("s", sg.stack([x * w, sg.tanh(x), x + w], axis=-1))  # (n, 3, 3)
    s2 = sg.stack([w, w * k], axis=1)  # (3, 2)
    pair = sg.stack([w[0] * k, w[1]])  # (2,) of 0-d values
    rows = sg.stack([x[:, 0], x[:, 2] * k], axis=0)  # (2, n)
    m.loss(
        sg.sum(s**2 * sg.cumsum(s, axis=1)) / 10
        + sg.sum(s2[:, ::-1] @ pair)
        + sg.sum(sg.logsumexp(rows, axis=0))
    )

    def reference(p, i):
        x, w, k = i["x"], p["w"], p["k"]
        s = torch.stack([x * w, torch.tanh(x), x + w], -1)
        s2 = torch.stack([w, w * k], 1)
        pair = torch.stack([w[0] * k, w[1]])
        rows = torch.stack([x[:, 0], x[:, 2] * k], 0)
        loss = (s**2 * torch.cumsum(s, 1)).sum() / 10 + (s2.flip(1) @ pair).sum()
        return loss + torch.logsumexp(rows, 0).sum(), {"s": s}

    def data(rng, n):
        params = {"w": rng.standard_normal(3), "k": np.array(0.7)}
        return params, {"x": rng.standard_normal((n, 3))}

    return m, reference, data, [1, 4]


@family
def cumsum_of_0d_and_flattened(hessian=False):
    """cumsum of a 0-d value (NumPy: shape (1,)), axis=None of a matrix and of its
    transpose (flattened in C order); small and fixed: unrolled automatically."""
    m = sg.Model("cumsum_of_0d_and_flattened", hessian=hessian)
    c, W = m.param("c"), m.param("W", (2, 3))
    a = m.output("a", sg.cumsum(c))
    flat = sg.cumsum(W)
    m.output("flat", flat)
    m.loss(
        sg.sum(a * 3)
        + sg.sum(sg.sin(flat))
        + sg.sum(sg.cumsum(W.T, axis=None) ** 2)
        + sg.sum(sg.cumsum(W, axis=-1) * sg.cumsum(W, axis=0))
    )

    def reference(p, i):
        c, W = p["c"], p["W"]
        a = torch.cumsum(c.reshape(1), 0)
        flat = torch.cumsum(W.reshape(-1), 0)
        loss = (a * 3).sum() + torch.sin(flat).sum()
        loss = loss + (torch.cumsum(W.T.reshape(-1), 0) ** 2).sum()
        loss = loss + (torch.cumsum(W, -1) * torch.cumsum(W, 0)).sum()
        return loss, {"a": a, "flat": flat}

    def data(rng, n):
        return {"c": np.array(0.7), "W": rng.standard_normal((2, 3))}, {}

    return m, reference, data, [None]


@family
def reversed_cumsum_tricks(hessian=False):
    """cumsum(z[::-1])[::-1] (a suffix sum), a double reversal, a size-1 axis."""
    m = sg.Model("reversed_cumsum_tricks", hessian=hessian)
    x = m.input("x", ("n", 1))
    w = m.param("w", (1,))
    z = x * w + w**2
    rev = m.output("rev", sg.cumsum(z[::-1], axis=0)[::-1])
    m.loss(
        sg.sum(rev * sg.cumsum(z, axis=0))
        + sg.sum(sg.cumsum(z[::-1, ::-1], axis=1))
        + sg.sum(sg.cumsum(z[::-1][::-1][::-1], axis=0) ** 2)
    )

    def reference(p, i):
        z = i["x"] * p["w"] + p["w"] ** 2
        rev = torch.cumsum(z.flip(0), 0).flip(0)
        loss = (rev * torch.cumsum(z, 0)).sum() + torch.cumsum(z.flip(0, 1), 1).sum()
        return loss + (torch.cumsum(z.flip(0), 0) ** 2).sum(), {"rev": rev}

    def data(rng, n):
        return {"w": rng.standard_normal(1)}, {"x": rng.standard_normal((n, 1))}

    return m, reference, data, [1, 5]


@family
def var_std_ddof_and_axis_tuples(hessian=False):
    """var/std with ddof 0 and 1, tuple and negative axes, keepdims; torch's correction."""
    m = sg.Model("var_std_ddof_and_axis_tuples", hessian=hessian)
    x = m.input("x", ("n", 3, 2))
    w = m.param("w", (3, 2))
    z = x * w + w
    v0 = m.output("v0", sg.var(z, axis=0, ddof=1))
    s1 = m.output("s1", sg.std(z, axis=(1, 2), keepdims=True))
    m.loss(
        sg.sum(v0)
        + sg.sum(s1)
        + sg.var(z)
        + sg.sum(sg.std(z, axis=(0, -1), ddof=1))
        + sg.sum(sg.var(w, axis=-1, ddof=1))
    )

    def reference(p, i):
        z = i["x"] * p["w"] + p["w"]
        v0 = z.var(0, correction=1)
        s1 = z.std(dim=(1, 2), keepdim=True, correction=0)
        loss = v0.sum() + s1.sum() + z.var(correction=0)
        loss = loss + z.std(dim=(0, -1), correction=1).sum()
        return loss + p["w"].var(-1, correction=1).sum(), {"v0": v0, "s1": s1}

    def data(rng, n):
        return {"w": rng.standard_normal((3, 2))}, {"x": rng.standard_normal((n, 3, 2))}

    return m, reference, data, [2, 5]


@family
def min_and_max_with_ties(hessian=False):
    """sg.min / x.min() over axes with exact ties (shared as torch's amin shares them)."""
    m = sg.Model("min_and_max_with_ties", hessian=hessian)
    w = m.param("w", (3, 4))
    m0 = m.output("m0", sg.min(w, axis=0))
    m.loss(
        sg.sum(m0 * 1.5)
        + w.min()
        + sg.sum(w.min(axis=1, keepdims=True) ** 2)
        + sg.max(w, axis=(0, 1))
        + sg.sum(sg.maximum(sg.min(w, axis=-1), w[:, 0]))
    )

    def reference(p, i):
        w = p["w"]
        m0 = torch.amin(w, 0)
        loss = (
            (m0 * 1.5).sum()
            + torch.amin(w)
            + (torch.amin(w, 1, keepdim=True) ** 2).sum()
        )
        loss = loss + torch.amax(w) + torch.maximum(torch.amin(w, -1), w[:, 0]).sum()
        return loss, {"m0": m0}

    def data(rng, n):
        w = [[1.0, 2.0, 2.0, -1.0], [1.0, 0.5, 3.0, -1.0], [4.0, 0.5, 4.0, -1.0]]
        return {"w": np.array(w)}, {}

    return m, reference, data, [None]


@family
def clip_with_array_bounds(hessian=False):
    """sg.clip(x * w, lo, hi) with parameter bounds; x at a bound, a_min > a_max."""
    m = sg.Model("clip_with_array_bounds", hessian=hessian)
    x = m.input("x", ("n", 4))
    lo, hi, w = m.param("lo", (4,)), m.param("hi", (4,)), m.param("w", (4,))
    c = m.output("c", sg.clip(x * w, lo, hi))
    m.loss(sg.sum(c * sg.cumsum(c, axis=1)) + sg.sum(sg.clip(x, lo, None) * w))

    def reference(p, i):
        c = torch.clamp(i["x"] * p["w"], p["lo"], p["hi"])
        loss = (c * torch.cumsum(c, 1)).sum()
        return loss + (torch.clamp(i["x"], min=p["lo"]) * p["w"]).sum(), {"c": c}

    def data(rng, n):
        lo, hi = np.array([-0.5, 0.2, 0.3, 1.0]), np.array([0.5, 0.6, -0.3, 2.0])
        rows = [
            [-0.5, 0.2, 0.0, 1.5],  # at lo
            [0.5, 0.6, 0.3, 2.0],  # at hi
            [0.0, 0.3, -0.3, 0.9],
            [-1.0, 0.9, 1.0, 3.0],
        ]
        x = np.array((rows * 2)[:n])
        return {"lo": lo, "hi": hi, "w": np.ones(4)}, {"x": x}

    return m, reference, data, [1, 4]


@family
def clip_scalar_and_one_sided(hessian=False):
    """Python-number bounds, one bound None, log1p of a clip; values at the bounds."""
    m = sg.Model("clip_scalar_and_one_sided", hessian=hessian)
    w = m.param("w", (5,))
    m.loss(
        sg.sum(sg.clip(w, -1.0, 1.0) ** 2)
        + sg.sum(sg.clip(w, None, 0.5))
        + sg.sum(sg.clip(w, a_min=0.0) * w)
        + sg.sum(sg.log1p(sg.clip(w, 0.0, None)))
        + sg.sum(sg.clip(w * w, w, 1.0))
    )

    def reference(p, i):
        w = p["w"]
        loss = (torch.clamp(w, -1, 1) ** 2).sum() + torch.clamp(w, max=0.5).sum()
        loss = loss + (torch.clamp(w, min=0.0) * w).sum()
        loss = loss + torch.log1p(torch.clamp(w, min=0.0)).sum()
        one = torch.ones((), dtype=torch.float64)
        return loss + torch.clamp(w * w, w, one).sum(), {}

    def data(rng, n):
        return {"w": np.array([-1.0, 1.0, 0.5, 0.0, 2.0])}, {}

    return m, reference, data, [None]


def _pw(z):
    return sp.Piecewise(
        (-z - sp.Rational(1, 2), z < -1),
        (z**2 / 2, (z >= -1) & (z < 1)),
        (sp.log(z) + sp.Rational(1, 2), sp.Eq(z, 1) | (z > 1)),
        (0, True),
    )


@family
def piecewise_in_elementwise(hessian=False):
    """A four-branch Piecewise (log in a branch NumPy computes everywhere), and a
    two-argument one with ~ and sp.Eq."""
    m = sg.Model("piecewise_in_elementwise", hessian=hessian)
    x = m.input("x", ("n",))
    w = m.param("w")
    y = m.output("y", sg.elementwise(_pw, x * w))
    y2 = sg.elementwise(
        lambda a, b: sp.Piecewise(
            (a * b, ~(a > b)), (a - b, sp.Eq(a, 2 * b)), (sp.sin(a * b), True)
        ),
        x,
        x * w,
    )
    m.output("y2", y2)
    m.loss(sg.sum(y) + sg.sum(y2 * 0.5))

    def reference(p, i):
        z = i["x"] * p["w"]
        big = torch.log(z.clamp(min=1e-300)) + 0.5
        y = torch.where(
            z < -1,
            -z - 0.5,
            torch.where((z >= -1) & (z < 1), z**2 / 2, torch.where(z >= 1, big, 0 * z)),
        )
        a, b = i["x"], z
        y2 = torch.where(
            ~(a > b), a * b, torch.where(a == 2 * b, a - b, torch.sin(a * b))
        )
        return y.sum() + (y2 * 0.5).sum(), {"y": y, "y2": y2}

    def data(rng, n):
        x = np.array([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0])
        return {"w": np.array(0.5 if n == 8 else 1.0)}, {"x": np.resize(x, n)}

    return m, reference, data, [3, 8]


a_, c_, t_, y_ = sp.symbols("a c t y")


@family
def piecewise_from_expr_huber(hessian=False):
    """A Huber-type loss declared as one SymPy formula with a parameter threshold."""
    d = a_ * t_ - y_
    loss = sp.Piecewise((d**2, sp.Abs(d) < c_), (c_ * (2 * sp.Abs(d) - c_), True))
    m = sg.Model.from_expr(
        "piecewise_from_expr_huber",
        loss=loss,
        params=[a_, c_],
        inputs=[t_, y_],
        reduce="mean",
        hessian=hessian,
    )

    def reference(p, i):
        d = p["a"] * i["t"] - i["y"]
        loss = torch.where(d.abs() < p["c"], d**2, p["c"] * (2 * d.abs() - p["c"]))
        return loss.mean(), {}

    def data(rng, n):
        params = {"a": np.array(1.3), "c": np.array(0.8)}
        return params, {"t": rng.standard_normal(n), "y": rng.standard_normal(n)}

    return m, reference, data, [1, 7]


@family
def negative_steps_on_fixed_axes(hessian=False):
    """x[5::-2], x[:0:-1, -2::-3], x[-1:-3:-1] on fixed axes (start past the end, as
    NumPy clips it), a full reversal of both axes of a symbolic array, and a matmul
    of reversed slices."""
    m = sg.Model("negative_steps_on_fixed_axes", hessian=hessian)
    w = m.param("w", (4, 6))
    x = m.input("x", ("n", 6))
    c = m.output("c", w[:0:-1, -2::-3])
    m.loss(
        sg.sum(w[5::-2] ** 2)
        + sg.sum(sg.sin(w[:, 5::-2]) * w[:, 4::-2])
        + sg.sum(c * w[1:, :2])
        + sg.sum(x[::-1, ::-1] * w[0])
        + sg.sum((x[:, 1::-1] @ w[-1:-3:-1, :2]) ** 2)
    )

    def reference(p, i):
        w, x = p["w"], i["x"]
        c = w[picks(slice(None, 0, -1), 4)][:, picks(slice(-2, None, -3), 6)]
        loss = (w[picks(slice(5, None, -2), 4)] ** 2).sum()
        loss = (
            loss
            + (
                torch.sin(w[:, picks(slice(5, None, -2), 6)])
                * w[:, picks(slice(4, None, -2), 6)]
            ).sum()
        )
        loss = loss + (c * w[1:, :2]).sum() + (x.flip(0, 1) * w[0]).sum()
        e = x[:, picks(slice(1, None, -1), 6)] @ w[picks(slice(-1, -3, -1), 4)][:, :2]
        return loss + (e**2).sum(), {"c": c}

    def data(rng, n):
        return {"w": rng.standard_normal((4, 6))}, {"x": rng.standard_normal((n, 6))}

    return m, reference, data, [1, 3]


@family
def reversal_of_symbolic_axis_with_slices(hessian=False):
    """x[::-1][1:], x[1:][::-1], x[::-1, 0], a triple reversal under cumsum."""
    m = sg.Model("reversal_of_symbolic_axis_with_slices", hessian=hessian)
    x = m.input("x", ("n", 2))
    w = m.param("w", (2,))
    z = x * w
    o = m.output("o", z[::-1][1:])
    m.loss(
        sg.sum(o * z[:-1])
        + sg.sum(z[1:][::-1] ** 2)
        + sg.sum(z[::-1, 0] * z[:, 1])
        + sg.sum(sg.cumsum(z[::-1][::-1][::-1], axis=0))
    )

    def reference(p, i):
        z = i["x"] * p["w"]
        o = z.flip(0)[1:]
        loss = (o * z[:-1]).sum() + (z[1:].flip(0) ** 2).sum()
        loss = loss + (z.flip(0)[:, 0] * z[:, 1]).sum()
        return loss + torch.cumsum(z.flip(0), 0).sum(), {"o": o}

    def data(rng, n):
        return {"w": rng.standard_normal(2)}, {"x": rng.standard_normal((n, 2))}

    return m, reference, data, [2, 5]


@family
def gathers_from_concatenations(hessian=False):
    """A padded embedding table built by concatenate, gathered at int64 indices (one
    negative), concatenated along features with a matmul and a clip against a
    per-sample bound, log_softmax, take_along_axis of a cumsum, and a maximum of a min
    and a logsumexp over a concatenation with a stack."""
    m = sg.Model("gathers_from_concatenations", hessian=hessian)
    E, pad = m.param("E", (4, 3)), m.param("pad", (1, 3))
    lo = m.param("lo", (3,))
    idx = m.input("idx", ("n",), dtype="int64")
    lab = m.input("lab", ("n",), dtype="int64")
    x, hi = m.input("x", ("n", 2)), m.input("hi", ("n", 1))
    rows = sg.concatenate([pad, E], axis=0)[idx]
    logits = sg.concatenate([rows, x @ E[:2, :2], sg.clip(rows, lo, hi)], axis=1)
    lp = sg.log_softmax(logits, axis=1)
    pick = sg.take_along_axis(sg.cumsum(lp, axis=1), lab[:, None], axis=1)
    extra = sg.stack([x[:, 0], x[:, 1] * pad[0, 0]], axis=1)
    lse = sg.logsumexp(sg.concatenate([logits, extra], axis=1), axis=1)
    mx = m.output("mx", sg.maximum(sg.min(logits, axis=1), lse - 3))
    m.loss(-sg.mean(pick) + sg.mean(mx) + sg.sum(sg.cumsum(x * pad[0, :2]) ** 2) / 10)

    def reference(p, i):
        rows = torch.cat([p["pad"], p["E"]], 0)[i["idx"]]
        logits = torch.cat(
            [rows, i["x"] @ p["E"][:2, :2], torch.clamp(rows, p["lo"], i["hi"])], 1
        )
        lp = torch.log_softmax(logits, 1)
        pick = torch.gather(torch.cumsum(lp, 1), 1, i["lab"][:, None])
        extra = torch.stack([i["x"][:, 0], i["x"][:, 1] * p["pad"][0, 0]], 1)
        lse = torch.logsumexp(torch.cat([logits, extra], 1), 1)
        mx = torch.maximum(torch.amin(logits, 1), lse - 3)
        cs = torch.cumsum((i["x"] * p["pad"][0, :2]).reshape(-1), 0)
        return -pick.mean() + mx.mean() + (cs**2).sum() / 10, {"mx": mx}

    def data(rng, n):
        params = {"E": rng.standard_normal((4, 3)), "pad": rng.standard_normal((1, 3))}
        params["lo"] = np.full(3, -0.5)
        inputs = {
            "idx": np.resize([0, 4, -1, 2, 2, 1], n),
            "lab": rng.integers(0, 8, n),
        }
        inputs["x"] = rng.standard_normal((n, 2))
        inputs["hi"] = rng.uniform(0, 1, (n, 1))
        return params, inputs

    return m, reference, data, [1, 6]


@family
def everything_at_once(hessian=False):
    """concatenate, clip, suffix cumsum, std ddof=1, min, log1p and a stack of a
    reversal, over an axis of size n + 2."""
    m = sg.Model("everything_at_once", hessian=hessian)
    x = m.input("x", ("n", 3))
    W, lo = m.param("W", (2, 3)), m.param("lo", (3,))
    y = sg.concatenate([W, x * W[0]], axis=0)
    z = sg.clip(y, lo, 1.0)
    cs = m.output("cs", sg.cumsum(z[::-1], axis=0)[::-1])
    m.loss(
        sg.sum(cs * z)
        + sg.sum(sg.std(y, axis=0, ddof=1))
        + sg.min(y)
        + sg.sum(sg.log1p(z * z))
        + sg.sum(sg.stack([z[0], z[-1]], axis=1)[::-1] ** 3)
    )

    def reference(p, i):
        y = torch.cat([p["W"], i["x"] * p["W"][0]], 0)
        z = torch.clamp(y, p["lo"], torch.tensor(1.0, dtype=torch.float64))
        cs = torch.cumsum(z.flip(0), 0).flip(0)
        loss = (cs * z).sum() + y.std(0, correction=1).sum() + y.amin()
        loss = loss + torch.log1p(z * z).sum()
        return loss + (torch.stack([z[0], z[-1]], 1).flip(0) ** 3).sum(), {"cs": cs}

    def data(rng, n):
        params = {"W": rng.standard_normal((2, 3)), "lo": np.full(3, -0.3)}
        return params, {"x": rng.standard_normal((n, 3))}

    return m, reference, data, [1, 3]


@functools.cache
def module_of(name, hessian=False):
    """The family's module, unrolled at its first size (fixed models unroll by
    themselves when small), compiled once."""
    model, reference, data, sizes = FAMILIES[name](hessian)
    if sizes[0] is not None and not hessian:
        (dim,) = model.dims  # one symbolic dim: n, or batch of Model.from_expr
        model.unroll(**{dim: sizes[0]})
    return compile_module(model)


def _data(name, size, seed=0):
    _, reference, data, _ = FAMILIES[name]()
    params, inputs = data(np.random.default_rng(seed), size)
    return reference, params, inputs


CASES = [(name, size) for name, fn in FAMILIES.items() for size in fn()[3]]


@pytest.mark.parametrize("name,size", CASES)
def test_family_agrees_with_torch(name, size):
    """value_and_grad, forward and backward(grad_loss=-1.5) against torch, no warnings."""
    reference, params, inputs = _data(name, size)
    check(module_of(name), reference, params, inputs)


def _unrolled_function(module, params, inputs):
    fns = [k for k in dir(module) if k.startswith("_value_and_grad_")]
    assert fns, "no unrolled function"
    fn = getattr(module, fns[0])
    if len(fns) > 1:
        sizes = symbolic_sizes(module, params, inputs)
        suffix = "_".join(f"{k}_{v}" for k, v in sizes.items())
        fn = getattr(module, f"_value_and_grad_{suffix}")
    return fn


@pytest.mark.parametrize("name", list(FAMILIES))
def test_unrolled_function_called_directly_agrees_with_torch(name):
    """The straight-line function itself (value_and_grad may fall back to NumPy when
    math raises, which would hide a wrong unrolled function)."""
    _, _, _, sizes = FAMILIES[name]()
    reference, params, inputs = _data(name, sizes[0])
    module = module_of(name)
    fn = _unrolled_function(module, params, inputs)
    args = {**params, **inputs}
    expected_loss, _, expected = torch_twin(reference, params, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = fn(*[args[k] for k in inspect.signature(fn).parameters])
    assert rel(loss, expected_loss) <= 1e-10
    scale = max(np.max(np.abs(g)) for g in expected.values())
    for k, g in expected.items():
        assert rel(grads[k], g, 1e-3 * scale) <= 1e-10, k
    vectorized_loss, _ = module.value_and_grad(params, inputs)
    assert rel(loss, vectorized_loss) <= 1e-12


def _flat_loss(module, params, inputs, names, sizes, flat):
    parts = np.split(flat, np.cumsum(sizes)[:-1])
    p = {k: parts[n].reshape(np.shape(params[k])) for n, k in enumerate(names)}
    return float(module.value_and_grad(p, inputs)[0])


@pytest.mark.parametrize(
    "name",
    [
        "concat_symbolic_axis_middle",
        "concat_last_axis_nested_reversal",
        "var_std_ddof_and_axis_tuples",
        "reversal_of_symbolic_axis_with_slices",
    ],
)
def test_gradient_matches_central_differences(name):
    """Smooth families at the larger size (away from kinks): central differences of
    the generated loss itself."""
    _, _, _, sizes = FAMILIES[name]()
    _, params, inputs = _data(name, sizes[-1], seed=3)
    module = module_of(name)
    names = list(params)
    shapes = [int(np.size(params[k])) for k in names]
    flat = np.concatenate([np.ravel(params[k]) for k in names])
    _, grads = module.value_and_grad(params, inputs)
    expected = np.concatenate([np.ravel(grads[k]) for k in names])
    h = 1e-5
    fd = np.array(
        [
            (
                _flat_loss(module, params, inputs, names, shapes, flat + h * e)
                - _flat_loss(module, params, inputs, names, shapes, flat - h * e)
            )
            / (2 * h)
            for e in np.eye(flat.size)
        ]
    )
    assert rel(fd, expected) <= 1e-6


SECOND_ORDER = [
    ("concat_symbolic_axis_middle", False),
    ("stack_on_every_axis", False),
    ("var_std_ddof_and_axis_tuples", True),
    ("min_and_max_with_ties", False),
    ("clip_with_array_bounds", False),
    ("piecewise_in_elementwise", False),
    ("piecewise_from_expr_huber", False),
    ("everything_at_once", True),
]


@pytest.mark.parametrize("name,scaled", SECOND_ORDER)
def test_hessian_agrees_with_torch(name, scaled):
    _, _, _, sizes = FAMILIES[name]()
    reference, params, inputs = _data(name, sizes[-1])
    module = module_of(name, hessian=True)
    check(module, reference, params, inputs)
    assert_second_order_agrees(module, reference, params, inputs, scaled=scaled)


def test_generation_is_deterministic_with_every_new_op():
    """Two generate() calls, of two separately built models, give the same bytes (also
    with hvp and hessian)."""
    for name in ("everything_at_once", "gathers_from_concatenations"):
        first, _ = generate(FAMILIES[name]()[0], hessian=True)
        second, _ = generate(FAMILIES[name]()[0], hessian=True)
        assert first == second
        assert "def hvp(params, inputs, v):" in first


def test_reversed_cumsum_is_generated_without_copies():
    """README: sg.cumsum(x[::-1])[::-1] is generated without copies (flips are views)."""
    source, _ = generate(FAMILIES["reversed_cumsum_tricks"]()[0])
    body = source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]
    assert "[::-1].copy()" not in body and "np.ascontiguousarray" not in body
    assert "np.cumsum(" in body


# ===================================================================== 2. bugs found


def _sandwich(kind):
    """A symbolic part between fixed parts along axis 0, a nonlinear use of the last."""
    m = sg.Model(f"sandwich_{kind}")
    x = m.input("x", ("n", 3))
    b, c = m.param("b", (1, 3)), m.param("c", (3, 3))
    if kind == "adjoint_of_a_sin":
        m.loss(sg.sum(sg.concatenate([b, x * b, sg.sin(c)]) ** 2))
    else:  # the user's own slice of the last part, times something of its shape
        m.loss(sg.sum(sg.concatenate([b, x * b, c])[-3:] * sg.sin(c)))

    def reference(p, i):
        b, c, x = p["b"], p["c"], i["x"]
        if kind == "adjoint_of_a_sin":
            return (torch.cat([b, x * b, torch.sin(c)]) ** 2).sum(), {}
        return (torch.cat([b, x * b, c])[-3:] * torch.sin(c)).sum(), {}

    return m, reference


@pytest.mark.parametrize("kind", ["adjoint_of_a_sin", "slice_of_the_last_part"])
def test_fixed_part_after_a_symbolic_part_after_a_fixed_part(kind):
    model, reference = _sandwich(kind)
    rng = np.random.default_rng(0)
    params = {"b": rng.standard_normal((1, 3)), "c": rng.standard_normal((3, 3))}
    check(compile_module(model), reference, params, {"x": rng.standard_normal((4, 3))})


def test_nested_concatenation_gradient_is_not_printed_as_a_broadcast():
    source, _ = generate(FAMILIES["concat_last_axis_nested_reversal"]()[0])
    body = source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]
    assert "np.full(" not in body


def _clip_model():
    m = sg.Model("clip_equal_bounds")
    x = m.input("x", ("n", 3))
    lo, hi = m.param("lo", (3,)), m.param("hi", (3,))
    w = m.param("w", (3,))
    c = m.output("c", sg.clip(x * w, lo, hi))
    m.loss(sg.sum(c * sg.cumsum(c, axis=1)))
    return m


def _clip_reference(p, i):
    c = torch.clamp(i["x"] * p["w"], p["lo"], p["hi"])
    return (c * torch.cumsum(c, 1)).sum(), {"c": c}


@pytest.mark.parametrize("x_value", [0.2, 0.3])
def test_clip_with_equal_bounds_at_and_above_the_bound(x_value):
    module = compile_module(_clip_model())
    params = {"lo": np.full(3, 0.2), "hi": np.full(3, 0.2), "w": np.ones(3)}
    check(module, _clip_reference, params, {"x": np.full((2, 3), x_value)})


def test_clip_with_equal_bounds_below_the_bound_matches_torch_clamp():
    module = compile_module(_clip_model())
    params = {"lo": np.full(3, 0.2), "hi": np.full(3, 0.2), "w": np.ones(3)}
    check(module, _clip_reference, params, {"x": np.full((2, 3), 0.1)})


def _size0_model(kind):
    m = sg.Model(f"concat_empty_{kind}")
    x = m.input("x", ("n", 3))
    w = m.param("w", (2, 3))
    parts = {
        "empty_first_then_symbolic": ([w[2:0], x * w[0]], 0),
        "symbolic_then_empty_last": ([x * w[0], w[1:1]], 0),
        "empty_first_fixed_axis1": ([w[:, :0], w], 1),
        "empty_first_fixed_axis0": ([w[:0], w], 0),
    }[kind]
    y = sg.concatenate(*parts)
    m.loss(sg.sum(y**2))

    def reference(p, i):
        w, x = p["w"], i["x"]
        tparts = {
            "empty_first_then_symbolic": ([w[2:0], x * w[0]], 0),
            "symbolic_then_empty_last": ([x * w[0], w[1:1]], 0),
            "empty_first_fixed_axis1": ([w[:, :0], w], 1),
            "empty_first_fixed_axis0": ([w[:0], w], 0),
        }[kind]
        return (torch.cat(*tparts) ** 2).sum(), {}

    return m, reference


@pytest.mark.parametrize(
    "kind",
    [
        "empty_first_then_symbolic",
        "symbolic_then_empty_last",
        "empty_first_fixed_axis1",
        "empty_first_fixed_axis0",
    ],
)
def test_concatenate_with_an_empty_part(kind):
    model, reference = _size0_model(kind)
    rng = np.random.default_rng(0)
    params, inputs = {"w": rng.standard_normal((2, 3))}, {
        "x": rng.standard_normal((3, 3))
    }
    check(compile_module(model), reference, params, inputs)


@pytest.mark.parametrize("ddof", [2, 3])
def test_var_with_ddof_not_below_the_count_is_refused_clearly(ddof):
    m = sg.Model("var_too_few")
    w = m.param("w", (2, 3))
    with pytest.raises((sg.ShapeError, sg.ModelError, ValueError), match="ddof"):
        m.loss(sg.sum(sg.var(w, axis=0, ddof=ddof)))
        generate(m)


def test_cumsum_over_a_tuple_of_axes_is_refused_clearly():
    m = sg.Model("cumsum_tuple")
    w = m.param("w", (2, 3))
    with pytest.raises((sg.ShapeError, TypeError), match="cumsum"):
        sg.cumsum(w, axis=(0, 1))


def test_too_short_axis_for_std_with_ddof_names_ddof_not_a_mean():
    m = sg.Model("std_ddof2")
    x, w = m.input("x", ("n",)), m.param("w")
    m.loss(sg.std(x * w, ddof=2))
    module = compile_module(m)
    with pytest.raises(ValueError, match="n >= 3") as info:
        module.value_and_grad({"w": np.array(1.5)}, {"x": np.ones(2)})
    assert "mean over n - 2" not in str(info.value)


def test_std_with_ddof_over_a_symbolic_axis_checks_its_size_and_agrees():
    m = sg.Model("std_ddof_sym")
    x, w = m.input("x", ("n",)), m.param("w")
    m.loss(sg.var(x * w, ddof=1) + sg.std(x * w, ddof=2))
    module = compile_module(m)

    def reference(p, i):
        z = i["x"] * p["w"]
        return z.var(correction=1) + z.std(correction=2), {}

    rng = np.random.default_rng(1)
    for n in (3, 6):
        check(module, reference, {"w": np.array(1.5)}, {"x": rng.standard_normal(n)})
    with pytest.raises(ValueError, match="n=2.*n >= 3"):
        module.value_and_grad({"w": np.array(1.5)}, {"x": np.ones(2)})


# ===================================================================== 3. misuse


def _misuse_model():
    m = sg.Model("misuse")
    x, y = m.input("x", ("n", 3)), m.input("y", ("k", 3))
    w, v, c = m.param("w", (2, 3)), m.param("v", (3,)), m.param("c")
    idx = m.input("idx", ("n",), dtype="int64")
    return locals()


MISUSE = {
    "empty concatenate": (
        lambda s: sg.concatenate([]),
        ValueError,
        "needs at least one",
    ),
    "empty stack": (lambda s: sg.stack([]), ValueError, "needs at least one"),
    "int64 and float concatenate": (
        lambda s: sg.concatenate([s["idx"][:, None], s["x"]], axis=1),
        sg.ShapeError,
        r"idx.*\(int64\) and x \(float64\): the parts need one dtype",
    ),
    "int64 cumsum": (lambda s: sg.cumsum(s["idx"]), sg.ModelError, "int64"),
    "int64 min": (lambda s: sg.min(s["idx"]), sg.ModelError, "int64"),
    "int64 var": (lambda s: sg.var(s["idx"]), sg.ModelError, "int64"),
    "int64 clip": (lambda s: sg.clip(s["idx"], 0, 1), sg.ModelError, "int64"),
    "int64 log1p": (lambda s: sg.log1p(s["idx"]), sg.ModelError, "int64"),
    "two symbolic parts": (
        lambda s: sg.concatenate([s["x"], s["y"]]),
        sg.ShapeError,
        "only one part may have a symbolic size",
    ),
    "the same symbolic part twice": (
        lambda s: sg.concatenate([s["x"], s["x"]]),
        sg.ShapeError,
        "only one part may have a symbolic size",
    ),
    "rank mismatch": (
        lambda s: sg.concatenate([s["w"], s["v"]]),
        sg.ShapeError,
        r"cannot concatenate w of shape \(2, 3\) and v of shape \(3,\)",
    ),
    "other axis differs": (
        lambda s: sg.concatenate([s["w"], s["x"]], axis=1),
        sg.ShapeError,
        "cannot concatenate w",
    ),
    "axis out of range": (
        lambda s: sg.concatenate([s["w"], s["w"]], axis=-3),
        sg.ShapeError,
        "out of range",
    ),
    "0-d parts": (
        lambda s: sg.concatenate([s["c"], s["c"]]),
        sg.ShapeError,
        "0-d",
    ),
    "a number as a part": (
        lambda s: sg.concatenate([s["w"], 1.0]),
        TypeError,
        "sg expressions",
    ),
    "a NumPy array as a part": (
        lambda s: sg.concatenate([s["w"], np.ones((2, 3))]),
        TypeError,
        "sg expressions",
    ),
    "stack of different shapes": (
        lambda s: sg.stack([s["w"], s["w"].T]),
        sg.ShapeError,
        "shapes must be equal",
    ),
    "stack axis out of range": (
        lambda s: sg.stack([s["w"], s["w"]], axis=-4),
        sg.ShapeError,
        "out of range",
    ),
    "step 0": (lambda s: s["w"][::0], sg.ShapeError, "step cannot be zero"),
    "step 0 on a symbolic axis": (
        lambda s: s["x"][::0],
        sg.ShapeError,
        "step cannot be zero",
    ),
    "step -2 on a symbolic axis": (
        lambda s: s["x"][::-2],
        sg.ShapeError,
        "a negative step other than ::-1 needs a fixed-size axis",
    ),
    "cumsum axis out of range": (
        lambda s: sg.cumsum(s["w"], axis=2),
        sg.ShapeError,
        "out of range",
    ),
    "cumsum of a 0-d value along axis 0": (
        lambda s: sg.cumsum(s["c"], axis=0),
        sg.ShapeError,
        "out of range",
    ),
    "clip without bounds": (lambda s: sg.clip(s["w"]), ValueError, "a_min or a_max"),
    "clip bound that does not broadcast": (
        lambda s: sg.clip(s["w"], s["v"][:2], 1.0),
        sg.ShapeError,
        "cannot broadcast",
    ),
    "clip to -inf": (
        lambda s: sg.clip(s["w"], -float("inf"), 1.0),
        sg.ModelError,
        "non-finite",
    ),
    "np.clip": (lambda s: np.clip(s["w"], 0, 1), TypeError, "sg.clip"),
    "np.cumsum": (lambda s: np.cumsum(s["w"]), TypeError, "sg.cumsum"),
    "np.concatenate": (
        lambda s: np.concatenate([s["w"], s["w"]]),
        TypeError,
        "sg.concatenate",
    ),
    "np.stack": (lambda s: np.stack([s["w"], s["w"]]), TypeError, "sg.stack"),
    "np.var": (lambda s: np.var(s["w"]), TypeError, "sg.var"),
    "np.min": (lambda s: np.min(s["w"]), TypeError, "sg.min"),
    "Piecewise without True": (
        lambda s: sg.elementwise(lambda z: sp.Piecewise((z, z > 0)), s["w"]),
        sg.ModelError,
        r"\(expr, True\) branch",
    ),
    "Piecewise with an unknown symbol": (
        lambda s: sg.elementwise(
            lambda z: sp.Piecewise((z, z > sp.Symbol("q")), (0, True)), s["w"]
        ),
        sg.ModelError,
        "undefined symbol",
    ),
}


@pytest.mark.parametrize("what", list(MISUSE))
def test_misuse_is_refused_with_a_clear_error(what):
    fn, exception, pattern = MISUSE[what]
    with pytest.raises(exception, match=pattern):
        fn(_misuse_model())


def test_np_log1p_names_sg_log1p():
    w = _misuse_model()["w"]
    with pytest.raises(TypeError, match="sg.log1p"):
        np.log1p(w)


def test_wrong_shapes_at_call_time_are_named():
    """A concatenation along n: the module checks the input's shape and sizes."""
    module = module_of("concat_symbolic_axis_middle")
    _, params, inputs = _data("concat_symbolic_axis_middle", 4)
    with pytest.raises(ValueError, match=r"inputs\['x'\]"):
        module.value_and_grad(params, {"x": np.ones((4, 2))})
    with pytest.raises(ValueError, match=r"params\['c'\]"):
        module.value_and_grad({**params, "c": np.ones((2, 3))}, inputs)
    with pytest.raises(ValueError, match=r"inputs\['x'\]"):
        module.value_and_grad(params, {"x": np.ones((4, 3), dtype=np.int64)})


# ===================================================================== 4. command line

MODEL_FILE = """
import symgrad as sg
import sympy as sp


def build():
    m = sg.Model("new_ops_file", doc="every new op, from a user file")
    x = m.input("x", ("n", 3))
    W, lo = m.param("W", (2, 3)), m.param("lo", (3,))
    y = sg.concatenate([W, x * W[0]], axis=0)
    z = sg.clip(y, lo, 1.0)
    cs = sg.cumsum(z[::-1], axis=0)[::-1]
    h = sg.elementwise(lambda u: sp.Piecewise((u**2, sp.Abs(u) < 1), (u, True)), y)
    m.output("cs", cs)
    m.loss(
        sg.sum(cs * z) + sg.sum(sg.std(y, axis=0, ddof=1)) + sg.min(y)
        + sg.sum(sg.log1p(z * z)) + sg.sum(sg.stack([z[0], z[-1]], axis=1) ** 3)
        + sg.mean(h) + sg.sum(W[:, 2::2])  # no negative step: see the xfail below
    )
    return m
"""


def test_build_and_verify_of_a_model_file(tmp_path):
    (tmp_path / "new_ops.py").write_text(MODEL_FILE)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    script = (
        "import sys\nfrom symgrad.cli import main\n"
        "a = main(['build', 'new_ops.py', '--out', 'gen'])\n"
        "b = main(['verify', 'new_ops.py'])\n"
        "sys.exit(10 * a + b)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout and "wrote gen/new_ops_file.py" in done.stdout
    source = (tmp_path / "gen" / "new_ops_file.py").read_text()
    assert "np.concatenate(" in source and "np.cumsum(" in source
    assert str(tmp_path) not in source
    namespace = {}
    exec(compile(source, "new_ops_file.py", "exec"), namespace)  # noqa: S102
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((2, 3)), "lo": np.full(3, -0.3)}
    loss, grads = namespace["value_and_grad"](
        params, {"x": rng.standard_normal((4, 3))}
    )
    assert np.isfinite(loss) and set(grads) == {"W", "lo"}


def _stepped(kind):
    m = sg.Model(f"stepped_{kind}")
    x, W = m.input("x", ("n", 3)), m.param("W", (2, 3))
    z = x * W[0]
    picked = {
        "reversal_of_symbolic_axis": z[::-1],
        "reversal_of_fixed_axis": z[:, ::-1],
        "step_minus_2_of_fixed_axis": z[:, 2::-2],
        "stack_then_reverse": sg.stack([W[0], W[1]], axis=1)[::-1],
    }[kind]
    m.loss(sg.sum(sg.sin(picked) * sg.cumsum(picked, axis=-1)))
    return m


@pytest.mark.parametrize(
    "kind",
    [
        "reversal_of_symbolic_axis",
        "reversal_of_fixed_axis",
        "step_minus_2_of_fixed_axis",
        "stack_then_reverse",
    ],
)
def test_verify_accepts_negative_slice_steps(kind):
    model = _stepped(kind)
    source, _ = generate(model)
    assert verify(model, load_source(source, model.name)).ok


def test_numpy_named_array_functions_and_methods_agree_with_pytorch():
    """sg.flip/expand_dims/outer/matmul and the var/std/cumsum/clip methods, as a NumPy
    user writes them, against the same model in torch (n symbolic: sizes 1 and 4)."""
    m = sg.Model("numpy_named_array_functions", hessian=True)
    x = m.input("x", ("n", 3))
    W, v = m.param("W", (3, 2)), m.param("v", (4,))
    h = sg.matmul(x, W)  # (n, 2)
    a = sg.flip(h, axis=0) * sg.flip(h) + sg.expand_dims(v[:2], 0)
    o = sg.outer(a[:, 0], v)  # (n, 4)
    y = o.cumsum(axis=1).clip(-1.0, 2.0) + sg.expand_dims(h.var(axis=1), -1)
    m.output("y", y)
    m.loss(sg.sum(y**2) + h.std(axis=0, ddof=1).sum() + sg.sum(sg.flip(v, 0) * v[0]))

    def reference(p, i):
        h = i["x"] @ p["W"]
        a = h.flip(0) * h.flip((0, 1)) + p["v"][:2].unsqueeze(0)
        o = torch.outer(a[:, 0], p["v"])
        var = h.var(dim=1, unbiased=False).unsqueeze(-1)
        y = o.cumsum(1).clamp(-1.0, 2.0) + var
        std = h.std(dim=0) if h.shape[0] > 1 else torch.full((2,), torch.nan)
        loss = (y**2).sum() + std.sum() + (p["v"].flip(0) * p["v"][0]).sum()
        return loss, {"y": y}

    def data(rng, n):
        params = {"W": rng.standard_normal((3, 2)), "v": rng.standard_normal(4)}
        return params, {"x": rng.standard_normal((n, 3))}

    module = compile_module(m)
    params, inputs = data(np.random.default_rng(0), 4)
    assert_agrees_with_torch(module, reference, params, inputs, 1e-10)
    expected = torch_hessian(reference, params, inputs)
    assert rel(module.hessian(params, inputs), expected) < 1e-8
    with pytest.raises(ValueError, match="n >= 2"):  # std with ddof=1 over n
        module.value_and_grad(*data(np.random.default_rng(1), 1))


EINSUMS = [
    "ij,jk->ik", "ij,jk", "i,i->", "i,j->ij", "bij,bjk->bik", "bhqd,bhkd->bhqk",
    "ij->ji", "ij->", "ijk->kj", "ij,ij->i", "ijk,jl->ilk", "ab,bc,cd->ad",
    "i,ij,j->", "ij,kl->ijkl", "abc,cd->abd", "ia,ib->ab", "ji,j->i",
]  # fmt: skip
EINSUM_SIZES = dict(zip("abcdhijklq", [2, 3, 4, 2, 2, 3, 4, 2, 3, 2], strict=True))


@pytest.mark.parametrize("subscripts", EINSUMS)
def test_einsum_agrees_with_torch_einsum(subscripts):
    """The first letter of the first operand is a symbolic size (n = 1 and 3)."""
    terms = subscripts.partition("->")[0].split(",")
    first = terms[0][0]
    m = sg.Model("einsum_" + "".join(c for c in subscripts if c.isalpha()))
    operands = [
        m.param(f"p{k}", tuple("n" if c == first else EINSUM_SIZES[c] for c in t))
        for k, t in enumerate(terms)
    ]
    m.output("y", sg.einsum(subscripts, *operands))
    m.loss(sg.sum(sg.sin(sg.einsum(subscripts, *operands))))
    module = compile_module(m)

    def reference(p, i):
        y = torch.einsum(subscripts, *p.values())
        return torch.sin(y).sum(), {"y": y}

    for n in (1, 3):
        rng = np.random.default_rng(n)
        sizes = {**EINSUM_SIZES, first: n}
        params = {
            f"p{k}": rng.standard_normal([sizes[c] for c in t])
            for k, t in enumerate(terms)
        }
        check(module, reference, params, {})


def test_einsum_attention_scores_hessian_and_errors():
    m = sg.Model("einsum_attention", hessian=True)
    q, k = m.param("q", (2, 3)), m.input("k", ("T", 3))
    scores = sg.einsum("qd,td->qt", q, k)
    m.loss(sg.sum(sg.logsumexp(scores, axis=1)))

    def reference(p, i):
        return torch.logsumexp(torch.einsum("qd,td->qt", p["q"], i["k"]), 1).sum(), {}

    rng = np.random.default_rng(0)
    params, inputs = {"q": rng.standard_normal((2, 3))}, {
        "k": rng.standard_normal((4, 3))
    }
    assert_second_order_agrees(compile_module(m), reference, params, inputs)
    for subscripts, operands, pattern in [
        ("qdd,td->t", [q, k], "must name each of the 2 axes of q by a letter"),
        ("...d,td->t", [q, k], "the output needs '...'"),
        ("i1,td->t", [q, k], "by a letter"),
        ("qd,tq->t", [q, k], "q is 2 in one operand and 3"),
        ("qd,td->qt", [q], "2 terms, 1 operands"),
        ("qd,td->qz", [q, k], "bad output 'qz'"),
    ]:
        with pytest.raises((sg.ShapeError, ValueError), match=pattern):
            sg.einsum(subscripts, *operands)
