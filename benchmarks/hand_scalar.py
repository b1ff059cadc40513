"""Plain-Python (``math`` module, unrolled) ``value_and_grad`` for the tiny workloads.

For a handful of numbers every NumPy call costs ~0.5 us of overhead, so straight-line
Python on floats beats NumPy: these are the fastest hand-written forms we found for the
small fixed-size cases (seed_mlp batch 1, rosenbrock n=10, lennard_jones N=8).  The
runner times them next to ``hand_numpy`` to show what unrolled code can reach there.

They take and return NumPy arrays like every other implementation, are correct for
any size (seed_mlp loops over the batch, rosenbrock has an unrolled n = 10 path and a
loop for other n, lennard_jones loops over the pairs) and use stable formulas (a
branching sigmoid: ``math.exp`` raises on overflow instead of returning inf).
"""

from __future__ import annotations

from math import exp

import numpy as np

__all__ = ["seed_mlp", "rosenbrock", "lennard_jones", "WORKLOADS"]


def _sigmoid(a):
    if a >= 0.0:
        return 1.0 / (1.0 + exp(-a))
    e = exp(a)
    return e / (1.0 + e)


def seed_mlp(params, inputs):
    """3-2-1 sigmoid MLP, MSE loss; unrolled over the units, a loop over the batch."""
    (w00, w01, w02), (w10, w11, w12) = params["W1"].tolist()
    c0, c1 = params["b1"].tolist()
    ((v0, v1),) = params["W2"].tolist()
    (d0,) = params["b2"].tolist()
    xs = inputs["x"].tolist()
    ts = inputs["target"].tolist()
    k = 2.0 / len(xs)  # d mean(r^2) / d r = k r

    sq = 0.0
    g00 = g01 = g02 = g10 = g11 = g12 = gc0 = gc1 = gv0 = gv1 = gd0 = 0.0
    for (x0, x1, x2), (t,) in zip(xs, ts, strict=True):
        h0 = _sigmoid(w00 * x0 + w01 * x1 + w02 * x2 + c0)
        h1 = _sigmoid(w10 * x0 + w11 * x1 + w12 * x2 + c1)
        y = _sigmoid(v0 * h0 + v1 * h1 + d0)
        r = y - t
        sq += r * r
        da2 = k * r * y * (1.0 - y)
        gd0 += da2
        gv0 += da2 * h0
        gv1 += da2 * h1
        da = da2 * v0 * h0 * (1.0 - h0)
        gc0 += da
        g00 += da * x0
        g01 += da * x1
        g02 += da * x2
        da = da2 * v1 * h1 * (1.0 - h1)
        gc1 += da
        g10 += da * x0
        g11 += da * x1
        g12 += da * x2
    return 0.5 * k * sq, {
        "W1": np.array(((g00, g01, g02), (g10, g11, g12))),
        "b1": np.array((gc0, gc1)),
        "W2": np.array(((gv0, gv1),)),
        "b2": np.array((gd0,)),
    }


def _rosenbrock_10(x):
    x0, x1, x2, x3, x4, x5, x6, x7, x8, x9 = x
    t0 = x1 - x0 * x0
    t1 = x2 - x1 * x1
    t2 = x3 - x2 * x2
    t3 = x4 - x3 * x3
    t4 = x5 - x4 * x4
    t5 = x6 - x5 * x5
    t6 = x7 - x6 * x6
    t7 = x8 - x7 * x7
    t8 = x9 - x8 * x8
    u0 = 1.0 - x0
    u1 = 1.0 - x1
    u2 = 1.0 - x2
    u3 = 1.0 - x3
    u4 = 1.0 - x4
    u5 = 1.0 - x5
    u6 = 1.0 - x6
    u7 = 1.0 - x7
    u8 = 1.0 - x8
    loss = 100.0 * (
        t0 * t0
        + t1 * t1
        + t2 * t2
        + t3 * t3
        + t4 * t4
        + t5 * t5
        + t6 * t6
        + t7 * t7
        + t8 * t8
    ) + (
        u0 * u0
        + u1 * u1
        + u2 * u2
        + u3 * u3
        + u4 * u4
        + u5 * u5
        + u6 * u6
        + u7 * u7
        + u8 * u8
    )
    t0 *= 200.0
    t1 *= 200.0
    t2 *= 200.0
    t3 *= 200.0
    t4 *= 200.0
    t5 *= 200.0
    t6 *= 200.0
    t7 *= 200.0
    t8 *= 200.0
    grad = (
        -2.0 * (t0 * x0 + u0),
        t0 - 2.0 * (t1 * x1 + u1),
        t1 - 2.0 * (t2 * x2 + u2),
        t2 - 2.0 * (t3 * x3 + u3),
        t3 - 2.0 * (t4 * x4 + u4),
        t4 - 2.0 * (t5 * x5 + u5),
        t5 - 2.0 * (t6 * x6 + u6),
        t6 - 2.0 * (t7 * x7 + u7),
        t7 - 2.0 * (t8 * x8 + u8),
        t8,
    )
    return loss, grad


def _rosenbrock_loop(x):
    loss = 0.0
    grad = []
    carry = 0.0  # 200 t of the previous term: d/dx[k] of term k - 1
    for a, b in zip(x, x[1:], strict=False):
        t = b - a * a
        u = 1.0 - a
        loss += 100.0 * t * t + u * u
        t *= 200.0
        grad.append(carry - 2.0 * (t * a + u))
        carry = t
    grad.append(carry)
    return loss, grad


def rosenbrock(params, inputs):
    """sum(100 (x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2); unrolled for n = 10."""
    x = params["x"].tolist()
    if len(x) == 10:
        loss, grad = _rosenbrock_10(x)
    elif len(x) < 2:
        loss, grad = 0.0, [0.0] * len(x)
    else:
        loss, grad = _rosenbrock_loop(x)
    return loss, {"x": np.array(grad)}


def lennard_jones(params, inputs):
    """Lennard-Jones energy and its gradient, a loop over the (i, j) pairs."""
    pos = params["pos"].tolist()
    grad = [[0.0, 0.0, 0.0] for _ in pos]
    energy = 0.0
    for a, b in zip(inputs["i"].tolist(), inputs["j"].tolist(), strict=True):
        ax, ay, az = pos[a]
        bx, by, bz = pos[b]
        dx = ax - bx
        dy = ay - by
        dz = az - bz
        inv = 1.0 / (dx * dx + dy * dy + dz * dz)
        s = inv * inv * inv
        energy += s * s - s
        c = 24.0 * s * (1.0 - 2.0 * s) * inv  # dE/d(pos[a] - pos[b]) = c d
        fx = c * dx
        fy = c * dy
        fz = c * dz
        ga = grad[a]
        gb = grad[b]
        ga[0] += fx
        ga[1] += fy
        ga[2] += fz
        gb[0] -= fx
        gb[1] -= fy
        gb[2] -= fz
    return 4.0 * energy, {"pos": np.array(grad).reshape(len(pos), 3)}


WORKLOADS = {
    "seed_mlp": seed_mlp,
    "rosenbrock": rosenbrock,
    "lennard_jones": lennard_jones,
}
