"""Hand-written NumPy ``value_and_grad`` for every benchmark workload.

These are the speed baseline that generated modules are measured against, so they are
written the way an expert would write them in plain NumPy (float64):

* as few passes over memory and as few temporaries as possible (``out=`` and in-place
  operators wherever the buffer is ours and no longer needed);
* matmuls in the orientation BLAS likes (transposes are passed as views, never copied);
* gathers with ``np.take`` (several times faster than fancy indexing) and scatter-adds
  with ``np.bincount`` (several times faster than ``np.add.at``);
* stable, accurate primitives: sigmoid as ``1 / (1 + exp(-z))`` with the overflow of
  ``exp`` to ``inf`` (for z < -709, where the result correctly becomes 0) silenced --
  this is accurate to ~1 ulp in *relative* terms everywhere and is ~4x faster than
  ``exp(-logaddexp(0, -z))`` for batch-sized arrays; softplus as
  ``max(z, 0) + log1p(exp(-|z|))`` (exactly what ``np.logaddexp(0, z)`` computes, but
  vectorised: ~6x faster); log-softmax with the row maximum subtracted.

Each function has the generated-module signature
``value_and_grad(params, inputs) -> (loss, grads)`` where ``grads`` maps every parameter
name to an array of that parameter's shape.  Inputs are never modified.

The variants that were measured to pick these forms are described in
``benchmarks/README.md``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "seed_mlp",
    "logistic_regression",
    "mlp_classifier",
    "rosenbrock",
    "lennard_jones",
    "decay_fit",
    "WORKLOADS",
]

_ONES3 = np.ones(3)
_ONES3.flags.writeable = False


def _sigmoid_(z):
    """In place: ``z <- 1 / (1 + exp(-z))``.

    The caller wraps it in ``np.errstate(over="ignore")``: ``exp(-z)`` overflows to
    ``inf`` for z < -709 and then the result is the correctly rounded 0.
    """
    np.negative(z, out=z)
    np.exp(z, out=z)
    z += 1.0
    return np.reciprocal(z, out=z)


def seed_mlp(params, inputs):
    """3-2-1 sigmoid MLP, MSE loss.  h = s(x W1^T + b1), y = s(h W2^T + b2)."""
    W1 = params["W1"]
    b1 = params["b1"]
    W2 = params["W2"]
    b2 = params["b2"]
    x = inputs["x"]
    target = inputs["target"]

    with np.errstate(over="ignore"):
        h = x @ W1.T  # (batch, 2)
        h += b1
        _sigmoid_(h)
        y = h @ W2.T  # (batch, 1)
        y += b2
        _sigmoid_(y)
    r = y - target
    n = r.size
    loss = np.vdot(r, r) / n

    # d loss / d a2 = (2 / n) * r * y * (1 - y); y's buffer is reused.
    r *= 2.0 / n
    r *= y
    np.subtract(1.0, y, out=y)
    r *= y  # da2, (batch, 1)
    grad_W2 = r.T @ h  # (1, 2)
    grad_b2 = r.sum(axis=0)
    # W2 has one row, so da2 @ W2 is an outer product: broadcast instead of matmul.
    dh = r * W2  # (batch, 2)
    dh *= h
    np.subtract(1.0, h, out=h)
    dh *= h  # da1
    grad_W1 = dh.T @ x  # (2, 3)
    # Column sums of a (batch, 2) array: a gemv beats the strided add.reduce ~3x.
    grad_b1 = np.ones(n) @ dh
    return loss, {"W1": grad_W1, "b1": grad_b1, "W2": grad_W2, "b2": grad_b2}


def logistic_regression(params, inputs):
    """Logistic regression, mean BCE with logits: mean(softplus(z) - y z), z = X w + b."""
    w = params["w"]
    b = params["b"]
    X = inputs["X"]
    y = inputs["y"]
    n = y.shape[0]

    z = X @ w
    z += b
    # e = exp(-|z|) in (0, 1]: never overflows.
    e = np.abs(z)
    sum_abs = e.sum()
    np.negative(e, out=e)
    np.exp(e, out=e)
    l = np.log1p(e)
    # sum softplus(z) = sum max(z, 0) + sum log1p(e); sum max(z, 0) = (sum z + sum |z|)/2
    loss = (0.5 * (z.sum() + sum_abs) + l.sum() - y @ z) / n

    # sigmoid(z) = 1 / (1 + e) for z >= 0 and e / (1 + e) for z < 0.
    np.add(e, 1.0, out=l)
    s = np.where(z >= 0.0, 1.0, e)
    s /= l
    s -= y
    s *= 1.0 / n  # d loss / d z
    grad_w = s @ X
    grad_b = np.array(s.sum())
    return loss, {"w": grad_w, "b": grad_b}


def mlp_classifier(params, inputs):
    """784-128-10 tanh MLP, mean cross-entropy over integer labels."""
    W1 = params["W1"]
    b1 = params["b1"]
    W2 = params["W2"]
    b2 = params["b2"]
    x = inputs["x"]
    labels = inputs["labels"]
    batch = x.shape[0]
    n_cls = W2.shape[0]

    h = x @ W1.T  # (batch, 128)
    h += b1
    np.tanh(h, out=h)
    z = h @ W2.T  # (batch, 10)
    z += b2
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    se = e.sum(axis=1, keepdims=True)
    # Flat positions of each row's label in the (batch, n_cls) arrays.
    pick = np.arange(0, batch * n_cls, n_cls)
    pick += labels
    loss = (np.log(se).sum() - np.take(z, pick).sum()) / batch

    # d loss / d z = (softmax(z) - onehot) / batch
    se *= batch
    np.reciprocal(se, out=se)
    e *= se
    e.ravel()[pick] -= 1.0 / batch  # e is a fresh C-contiguous array: ravel is a view
    ones = np.ones(batch)  # column sums as gemv: ~2x faster than sum(axis=0)
    grad_W2 = e.T @ h  # (10, 128)
    grad_b2 = ones @ e
    dh = e @ W2  # (batch, 128)
    np.multiply(h, h, out=h)
    np.subtract(1.0, h, out=h)
    dh *= h  # through tanh: 1 - h^2
    grad_W1 = dh.T @ x  # (128, 784)
    grad_b1 = ones @ dh
    return loss, {"W1": grad_W1, "b1": grad_b1, "W2": grad_W2, "b2": grad_b2}


def rosenbrock(params, inputs):
    """sum(100 (x[1:] - x[:-1]^2)^2 + (1 - x[:-1])^2)."""
    x = params["x"]
    a = x[:-1]
    t = a * a
    np.subtract(x[1:], t, out=t)  # t = x[1:] - x[:-1]^2
    u = np.subtract(1.0, a)  # u = 1 - x[:-1]
    loss = 100.0 * (t @ t) + u @ u

    g = np.empty_like(x)
    g[1:] = t
    if g.shape[0]:  # (n = 0 has no g[0]; a g[:1] slice costs 0.3 us more)
        g[0] = 0.0
    g *= 200.0  # d/dx[1:] = 200 t
    # d/dx[:-1] += -400 t x[:-1] - 2 u = -2 (200 t x[:-1] + u)
    np.multiply(g[1:], a, out=t)
    t += u
    t *= 2.0
    g[:-1] -= t
    return loss, {"x": g}


def lennard_jones(params, inputs):
    """Lennard-Jones energy sum(4 (s^2 - s)), s = r^-6, over the pairs (i[k], j[k]).

    The gradient scatter-adds +f to row i and -f to row j.  When the pairs are dense
    (n^2 <= 4 * pairs, e.g. all i < j) the scatter goes through an (n, n) pair matrix of
    the scalar coefficients c (one bincount and a matmul); otherwise one bincount per
    coordinate.  Both are correct for any index arrays, repeated pairs included.
    """
    pos = params["pos"]
    i = inputs["i"]
    j = inputs["j"]
    n = pos.shape[0]
    p = i.shape[0]

    # Coordinates in rows, so the gathers and every per-pair array are contiguous.
    pt = pos.T.copy()  # (3, n)
    d = np.take(pt, i, axis=1)  # (3, pairs)
    d -= np.take(pt, j, axis=1)
    sq = d * d
    r2 = _ONES3 @ sq
    inv = np.reciprocal(r2, out=r2)  # 1 / r^2
    s6 = inv * inv
    s6 *= inv
    energy = 4.0 * (s6 @ s6 - s6.sum())

    # dE/dd = c d with c = 2 dE/dr2 = 24 s (1 - 2 s) / r^2
    c = s6 * -48.0
    c += 24.0
    c *= s6
    c *= inv

    if n * n <= 4 * p:
        k = i * n
        k += j
        a = np.bincount(k, c, n * n).reshape(n, n)  # a[u, v] = sum of c over (u, v)
        # grad[u] = sum_v (a[u, v] + a[v, u]) (pos[u] - pos[v])
        if n <= 64:
            a = a + a.T
            g = a.sum(axis=1)[:, None] * pos
            g -= a @ pos
        else:
            g = (a.sum(axis=1) + a.sum(axis=0))[:, None] * pos
            g -= a @ pos
            g -= a.T @ pos
    else:
        d *= c  # dE/dd, (3, pairs)
        g = np.empty_like(pos)
        for col in range(3):
            f = d[col]
            g[:, col] = np.bincount(i, f, n) - np.bincount(j, f, n)
    return energy, {"pos": g}


def decay_fit(params, inputs):
    """mean((a exp(-b t) + c - y)^2) over the batch; a, b, c are 0-d."""
    a = float(params["a"])
    b = float(params["b"])
    c = float(params["c"])
    t = inputs["t"]
    y = inputs["y"]
    n = t.shape[0]

    e = t * -b
    np.exp(e, out=e)  # exp(-b t)
    r = e * a
    r += c
    r -= y  # residual
    loss = (r @ r) / n
    k = 2.0 / n
    grad_a = k * (r @ e)
    grad_c = k * r.sum()
    e *= t
    grad_b = -a * k * (r @ e)
    return loss, {
        "a": np.array(grad_a),
        "b": np.array(grad_b),
        "c": np.array(grad_c),
    }


WORKLOADS = {
    "seed_mlp": seed_mlp,
    "logistic_regression": logistic_regression,
    "mlp_classifier": mlp_classifier,
    "rosenbrock": rosenbrock,
    "lennard_jones": lennard_jones,
    "decay_fit": decay_fit,
}
