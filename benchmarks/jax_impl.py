"""JAX versions of the benchmark workloads: ``jax.jit(jax.value_and_grad(loss))``.

float64 (``jax_enable_x64``) on the CPU, XLA asked for one thread.  Same NumPy-in /
NumPy-out signature as the generated modules; host-to-device transfer and the
conversion of the results back to NumPy are part of the measured time.  Each function
compiles once per input shape, so call it once before timing.

JAX is optional: importing this module raises ``ImportError`` when it is not installed.
"""

from __future__ import annotations

import os

# Before jax is imported: one XLA CPU thread, like the other implementations.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

__all__ = [
    "seed_mlp",
    "logistic_regression",
    "mlp_classifier",
    "rosenbrock",
    "lennard_jones",
    "decay_fit",
    "WORKLOADS",
]


def _value_and_grad(loss_fn):
    """Wrap ``loss_fn(params, inputs) -> loss`` as a NumPy value_and_grad."""
    vg = jax.jit(jax.value_and_grad(loss_fn))

    def value_and_grad(params, inputs):
        loss, grads = vg(params, inputs)
        return float(loss), {k: np.asarray(g) for k, g in grads.items()}

    value_and_grad.__name__ = loss_fn.__name__
    value_and_grad.__doc__ = loss_fn.__doc__
    return value_and_grad


@_value_and_grad
def seed_mlp(p, d):
    h = jax.nn.sigmoid(d["x"] @ p["W1"].T + p["b1"])
    y = jax.nn.sigmoid(h @ p["W2"].T + p["b2"])
    return jnp.mean((y - d["target"]) ** 2)


@_value_and_grad
def logistic_regression(p, d):
    z = d["X"] @ p["w"] + p["b"]
    return jnp.mean(jax.nn.softplus(z) - d["y"] * z)


@_value_and_grad
def mlp_classifier(p, d):
    h = jnp.tanh(d["x"] @ p["W1"].T + p["b1"])
    logp = jax.nn.log_softmax(h @ p["W2"].T + p["b2"], axis=-1)
    picked = jnp.take_along_axis(logp, d["labels"][:, None], axis=1)
    return -jnp.mean(picked)


@_value_and_grad
def rosenbrock(p, d):
    x = p["x"]
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@_value_and_grad
def lennard_jones(p, d):
    diff = p["pos"][d["i"]] - p["pos"][d["j"]]
    r2 = jnp.sum(diff * diff, axis=1)
    s6 = r2**-3
    return jnp.sum(4.0 * (s6 * s6 - s6))


@_value_and_grad
def decay_fit(p, d):
    r = p["a"] * jnp.exp(-p["b"] * d["t"]) + p["c"] - d["y"]
    return jnp.mean(r * r)


WORKLOADS = {
    "seed_mlp": seed_mlp,
    "logistic_regression": logistic_regression,
    "mlp_classifier": mlp_classifier,
    "rosenbrock": rosenbrock,
    "lennard_jones": lennard_jones,
    "decay_fit": decay_fit,
}
