"""Re-measure the alternatives behind the choices made in ``hand_numpy``.

    python -m benchmarks.variants            # sigmoid, softplus, gather, LJ scatter

Prints, for each primitive, the accuracy (max relative error in ulps against an
extended-precision reference, where it matters) and the best time per call of each
form at a few sizes, with the same timing helper as the runner.  Nothing here is
imported by the runner.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"
    if not __package__:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import warnings  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import hand_numpy, workloads  # noqa: E402
from benchmarks.run import _tune_malloc, measure, pin_threads  # noqa: E402

EPS = np.finfo(np.float64).eps


# ------------------------------------------------------------------- sigmoid


def sigmoid_logaddexp(z):
    return np.exp(-np.logaddexp(0.0, -z))


def sigmoid_recip(z):  # the chosen form
    with np.errstate(over="ignore"):
        return hand_numpy._sigmoid_(z.copy())


def sigmoid_clip(z):  # overflow avoided by clipping instead of errstate
    t = np.maximum(z, -708.0)
    np.negative(t, out=t)
    np.exp(t, out=t)
    t += 1.0
    return np.reciprocal(t, out=t)


def sigmoid_where(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0, e) / (1.0 + e)


def sigmoid_tanh(z):  # fast, but no relative accuracy in the lower tail
    t = z * 0.5
    np.tanh(t, out=t)
    t *= 0.5
    t += 0.5
    return t


SIGMOIDS = [sigmoid_recip, sigmoid_logaddexp, sigmoid_clip, sigmoid_where, sigmoid_tanh]


# ------------------------------------------------------------------ softplus


def softplus_logaddexp(z):
    return np.logaddexp(0.0, z)


def softplus_log1p(z):  # the chosen form (what logaddexp computes, vectorised)
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)
    np.log1p(e, out=e)
    e += np.maximum(z, 0.0)
    return e


SOFTPLUSES = [softplus_log1p, softplus_logaddexp]


# -------------------------------------------------------- LJ gather / scatter


def _lj_coeff(pos, i, j):
    d = np.take(pos, i, axis=0)
    d -= np.take(pos, j, axis=0)
    r2 = np.einsum("ij,ij->i", d, d)
    s6 = r2**-3.0
    return d, 24.0 * s6 * (1.0 - 2.0 * s6) / r2


def scatter_add_at(pos, i, j):
    d, c = _lj_coeff(pos, i, j)
    d *= c[:, None]
    g = np.zeros_like(pos)
    np.add.at(g, i, d)
    np.subtract.at(g, j, d)
    return g


def scatter_bincount_columns(pos, i, j):
    d, c = _lj_coeff(pos, i, j)
    d *= c[:, None]
    n = pos.shape[0]
    g = np.empty_like(pos)
    for k in range(3):
        g[:, k] = np.bincount(i, d[:, k], n) - np.bincount(j, d[:, k], n)
    return g


def scatter_dense_pairs(pos, i, j):
    _, c = _lj_coeff(pos, i, j)
    n = pos.shape[0]
    a = np.bincount(i * n + j, c, n * n).reshape(n, n)
    g = (a.sum(axis=1) + a.sum(axis=0))[:, None] * pos
    g -= a @ pos
    g -= a.T @ pos
    return g


def scatter_full_nn3(pos, i, j):
    """Dense (n, n, 3) differences for every pair, weighted by a pair matrix."""
    n = pos.shape[0]
    diff = pos[:, None, :] - pos[None, :, :]
    r2 = np.einsum("uvk,uvk->uv", diff, diff)
    k = i * n + j
    r2p = r2.ravel()[k]
    s6 = r2p**-3.0
    a = np.bincount(k, 24.0 * s6 * (1.0 - 2.0 * s6) / r2p, n * n).reshape(n, n)
    a += a.T.copy()
    return np.einsum("uv,uvk->uk", a, diff)


SCATTERS = [
    scatter_add_at,
    scatter_bincount_columns,
    scatter_dense_pairs,
    scatter_full_nn3,
]


def _ulps(approx, exact):
    exact = exact.astype(np.float64)
    ok = np.abs(exact) > 1e-300
    return float(np.max(np.abs(approx[ok] - exact[ok]) / np.abs(exact[ok])) / EPS)


def _table(title, fns, sizes, make_args, repeat):
    print(f"\n{title}: best us per call")
    print("  " + "size".rjust(8) + "".join(f.__name__.rjust(26) for f in fns))
    for size in sizes:
        args = make_args(size)
        best = measure(
            {f.__name__: (lambda f=f, args=args: f(*args)) for f in fns}, repeat=repeat
        )
        row = "".join(f"{best[f.__name__] * 1e6:26.2f}" for f in fns)
        print("  " + str(size).rjust(8) + row)


def main(repeat: int = 9) -> None:
    print(pin_threads() + "; " + _tune_malloc())
    rng = np.random.default_rng(0)

    z = np.concatenate([rng.normal(0.0, 5.0, 100_000), np.linspace(-745, 745, 10_001)])
    zl = z.astype(np.longdouble)
    exact_sig = 1.0 / (1.0 + np.exp(-zl))
    exact_sp = np.logaddexp(np.longdouble(0), zl)
    print("\naccuracy over [-745, 745] (max relative error, ulps; warnings?)")
    for f, exact in [(f, exact_sig) for f in SIGMOIDS] + [
        (f, exact_sp) for f in SOFTPLUSES
    ]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = f(np.concatenate([z, [-1000.0, 1000.0]]))
        print(
            f"  {f.__name__:22} {_ulps(value[:-2], exact):12.3g}"
            f"   finite={bool(np.all(np.isfinite(value)))} warnings={len(caught)}"
        )

    def vec(n):
        return (rng.normal(0.0, 3.0, n),)

    _table("sigmoid", SIGMOIDS, [2, 2048, 131_072], vec, repeat)
    _table("softplus", SOFTPLUSES, [2, 4096, 131_072], vec, repeat)

    def gather_args(n):
        params, inputs = workloads.make_lennard_jones(n)
        return params["pos"], inputs["i"]

    def fancy(pos, i):
        return pos[i]

    def take(pos, i):
        return np.take(pos, i, axis=0)

    _table(
        "gather pos[i] (N atoms, all pairs)", [fancy, take], [8, 128], gather_args, 5
    )

    def lj_args(n):
        params, inputs = workloads.make_lennard_jones(n)
        return params["pos"], inputs["i"], inputs["j"]

    ref = {n: scatter_add_at(*lj_args(n)) for n in (8, 32, 128)}
    for f in SCATTERS:
        for n, g in ref.items():
            assert np.allclose(f(*lj_args(n)), g, rtol=1e-10, atol=1e-12), f.__name__
    _table("LJ gradient incl. forward (N atoms, all pairs)", SCATTERS, [8, 32, 128],
           lj_args, repeat)  # fmt: skip


if __name__ == "__main__":
    main()
