"""Helpers shared by the tests."""

import functools
import os
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from symgrad.cli import generate
from symgrad.verify import load_source


def compile_module(model):
    """Generate ``model``'s module in memory and import it."""
    source, _ = generate(model)
    return load_source(source, model.name)


class Families(dict):
    """A round of new-user model families by name. ``@FAMILIES.add`` registers
    ``fn(hessian=False) -> (model, torch twin, params, inputs)``; ``module(name)``
    compiles one once (unrolled at its data's sizes if asked)."""

    def add(self, fn):
        self[fn.__name__] = fn
        return fn

    @functools.cache  # noqa: B019 - a round's families live as long as its tests
    def module(self, name, hessian=False, unroll=False):
        model, _, params, inputs = self[name](hessian=hessian)
        if unroll:
            model.unroll(**symbolic_sizes(compile_module(model), params, inputs))
        return compile_module(model)

    def assert_agrees(self, name):
        """Loss, outputs and gradients against the twin and central differences."""
        _, reference, params, inputs = self[name]()
        module = self.module(name)
        check(module, reference, params, inputs)
        assert_matches_central_differences(module, params, inputs)

    def assert_second_order_agrees(self, name):
        _, reference, params, inputs = self[name]()
        module = self.module(name, hessian=True)
        assert_second_order_agrees(module, reference, params, inputs, scaled=True)
        check(module, reference, params, inputs)  # the hessian build keeps the gradient

    def assert_unrolled_agrees(self, name):
        """The unrolled function at the data's sizes gives the result (not NumPy's
        fallback, which would hide an exception in it)."""
        _, reference, params, inputs = self[name]()
        check_unrolled(self.module(name, unroll=True), reference, params, inputs)

    def __hash__(self):  # one registry per round: cached by identity
        return id(self)


def symgrad_command() -> list[str]:
    """The installed ``symgrad`` command (or the module, in a tree not installed)."""
    exe = shutil.which("symgrad")
    return [exe] if exe else [sys.executable, "-m", "symgrad.cli"]


def run_cli(args, cwd, seed="0"):
    """``symgrad ARGS`` in ``cwd`` under a fixed hash seed, its output captured."""
    env = {**os.environ, "PYTHONHASHSEED": seed}
    return subprocess.run(
        [*symgrad_command(), *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def normal(rng, *shape, scale=1.0):
    return scale * rng.standard_normal(shape)


def rel(actual, expected, floor=1e-300) -> float:
    """max |actual - expected| over the largest magnitude of ``expected``, or ``floor``
    if that is larger (a gradient that is zero up to round-off); shapes must agree."""
    actual = np.asarray(actual, dtype=float)
    expected = np.asarray(expected, dtype=float)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.max(np.abs(expected), initial=0.0), floor, 1e-300)
    diff = np.max(np.abs(actual - expected), initial=0.0)
    return 0.0 if diff == 0 else float(diff / scale)


def torch_twin(reference, params, inputs):
    """Loss, outputs and parameter gradients of a model's PyTorch twin
    ``reference(tparams, tinputs) -> (loss, {output: tensor})``, as NumPy arrays; a
    parameter the loss does not use has a zero gradient."""
    import torch

    tparams = {
        k: torch.tensor(np.asarray(v, float), requires_grad=True)
        for k, v in params.items()
    }
    tinputs = {k: torch.tensor(v) for k, v in inputs.items()}
    loss, outputs = reference(tparams, tinputs)
    if loss.requires_grad:  # (a loss that is a constant has no graph)
        loss.backward()
    grads = {
        k: np.zeros(np.shape(params[k])) if p.grad is None else p.grad.numpy()
        for k, p in tparams.items()
    }
    outputs = {k: v.detach().numpy() for k, v in outputs.items()}
    return loss.detach().numpy(), outputs, grads


def assert_agrees_with_torch(module, reference, params, inputs, tol, grad_loss=1.0):
    """The loss, every output and every gradient of ``value_and_grad`` and of ``forward``
    + ``backward(cache, grad_loss)`` against the PyTorch twin, with NumPy warnings as
    errors (the twin gives none). Gradients are compared on the scale of the largest."""
    expected_loss, expected_outputs, expected = torch_twin(reference, params, inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = module.value_and_grad(params, inputs)
        outputs, cache = module.forward(params, inputs)
        grads_bw = module.backward(cache, grad_loss=grad_loss)
    assert set(grads) == set(params) == set(grads_bw)
    assert set(outputs) == {"loss", *expected_outputs}
    assert np.shape(loss) == () and np.isfinite(loss)
    assert rel(loss, expected_loss) <= tol, (loss, expected_loss)
    assert rel(outputs["loss"], expected_loss) <= tol
    for k, ref in expected_outputs.items():
        assert rel(outputs[k], ref) <= tol, k
    floor = 1e-3 * max(
        (np.max(np.abs(g), initial=1e-300) for g in expected.values()), default=1e-300
    )
    for k, ref in expected.items():
        assert np.shape(grads[k]) == np.shape(params[k]), k
        assert rel(grads[k], ref, floor) <= tol, (k, grads[k], ref)
        assert rel(grads_bw[k], grad_loss * ref, abs(grad_loss) * floor) <= tol, k


def check(module, reference, params, inputs, tol=1e-9):
    """``assert_agrees_with_torch`` at float64 accuracy, with a grad_loss other than 1 (a
    backward that ignored it would agree at 1): the new-user rounds' comparison."""
    assert_agrees_with_torch(module, reference, params, inputs, tol, grad_loss=-1.5)


def check_unrolled(module, reference, params, inputs, name=None):
    """``check`` through the unrolled function (``name``, if given): it ran and did not
    raise (NumPy's fallback would hide an exception in it)."""
    calls, restore = spy_unrolled(module)
    try:
        check(module, reference, params, inputs)
    finally:
        restore()
    if name:
        assert set(calls) == {name}, calls
    else:
        assert len(set(calls)) == 1 and " raised " not in calls[0], calls


def torch_hessian(reference, params, inputs) -> np.ndarray:
    """The dense Hessian of the twin's loss over the flattened parameters, in the order
    of ``params`` (as a generated ``hessian`` orders them)."""
    import torch

    names = list(params)
    sizes = [int(np.size(params[k])) for k in names]
    tinputs = {k: torch.tensor(v) for k, v in inputs.items()}

    def loss(flat):
        parts = torch.split(flat, sizes)
        p = {k: parts[n].reshape(np.shape(params[k])) for n, k in enumerate(names)}
        return reference(p, tinputs)[0]

    flat = np.concatenate([np.ravel(np.asarray(params[k], float)) for k in names])
    return torch.autograd.functional.hessian(loss, torch.tensor(flat)).numpy()


def symbolic_sizes(module, params, inputs) -> dict[str, int]:
    """The size of each symbolic dim of a generated module, read off its arguments
    (for ``m.unroll`` at the sizes of a test's data)."""
    sizes = {}
    for key, shape in {**module.INPUTS, **module.PARAMS}.items():
        value = {**params, **inputs}[key]
        for dim, size in zip(shape, np.shape(value), strict=True):
            if isinstance(dim, str):
                sizes[dim] = size
    return sizes


def assert_second_order_agrees(
    module, reference, params, inputs, tol=1e-8, scaled=False, seed=5
):
    """``module.hessian`` and ``module.hvp`` in a random direction agree with the
    twin's Hessian from torch, raising no NumPy warning. ``scaled``: errors count
    against at least 1e-3 of the largest entry, for results whose small entries are
    round-off (cancellations in torch's double backward as much as in ours)."""
    expected = torch_hessian(reference, params, inputs)
    rng = np.random.default_rng(seed)
    v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = module.hessian(params, inputs)
        product = module.hvp(params, inputs, v)
    floor = 1e-3 * np.max(np.abs(expected), initial=0.0) if scaled else 0.0
    assert rel(H, expected, floor) <= tol
    flat_v = np.concatenate([np.ravel(v[k]) for k in params])
    expected_hv = expected @ flat_v
    floor = 1e-3 * np.max(np.abs(expected_hv), initial=0.0) if scaled else 0.0
    sizes = np.cumsum([np.size(p) for p in params.values()])[:-1]
    for k, part in zip(params, np.split(expected_hv, sizes), strict=True):
        assert rel(product[k], part.reshape(np.shape(params[k])), floor) <= tol, k


@dataclass
class Case:
    build: Callable  # () -> sg.Model, the declaration
    reference: Callable  # (torch params, torch inputs) -> (loss, {output: tensor})
    data: Callable  # (rng, **dims) -> (params, inputs), NumPy arrays
    sizes: list = field(default_factory=lambda: [{}])  # dims to run at


class Zoo:
    """Models with their PyTorch twins and data, each compiled once and checked against
    its twin (``assert_agrees_with_torch``) at each of its sizes."""

    def __init__(self, tol: float, grad_loss: float):
        self.cases: dict[str, Case] = {}
        self.tol, self.grad_loss = tol, grad_loss

    def register(self, build, reference, data, *sizes):
        self.cases[build.__name__] = Case(build, reference, data, list(sizes) or [{}])

    @functools.cache  # noqa: B019 - one zoo per test module, alive for the session
    def module_of(self, name, unroll=()):
        model = self.cases[name].build()
        if unroll:
            model.unroll(**dict(unroll))
        return model, compile_module(model)

    def check(self, name, dims, seed=0, unroll=False):
        model, module = self.module_of(name, tuple(dims.items()) if unroll else ())
        case = self.cases[name]
        params, inputs = case.data(np.random.default_rng(seed), **dims)
        assert_agrees_with_torch(
            module, case.reference, params, inputs, self.tol, self.grad_loss
        )
        return model, module, params, inputs


def spy_unrolled(module):
    """Record which unrolled function each value_and_grad call ran (by name), or
    "NAME raised ERROR" (value_and_grad then quietly falls back to its NumPy code)."""
    calls, names = [], [k for k in vars(module) if k.startswith("_value_and_grad_")]
    saved = {name: getattr(module, name) for name in names}
    for name, inner in saved.items():

        def spy(*args, inner=inner, name=name):
            try:
                out = inner(*args)
            except Exception as e:
                calls.append(f"{name} raised {e!r}")
                raise
            calls.append(name)
            return out

        setattr(module, name, spy)

    def restore():
        for name, inner in saved.items():
            setattr(module, name, inner)

    return calls, restore


def assert_matches_central_differences(module, params, inputs, seed=3, tol=1e-6):
    """v . grad against (f(p + eps v) - f(p - eps v)) / 2 eps along random directions,
    eps relative to each parameter's size, as gradcheck's fast mode does."""
    _, grads = module.value_and_grad(params, inputs)
    rng = np.random.default_rng(seed)
    for _ in range(2):
        v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
        scale = {
            k: max(1e-3, float(np.max(np.abs(p), initial=0))) for k, p in params.items()
        }
        v = {k: x * scale[k] for k, x in v.items()}
        eps = 1e-6

        def f(sign, v=v, eps=eps):
            shifted = {k: params[k] + sign * eps * v[k] for k in params}
            return float(module.value_and_grad(shifted, inputs)[0])

        fd = (f(1) - f(-1)) / (2 * eps)
        exact = sum(float(np.sum(grads[k] * v[k])) for k in params)
        size = max(abs(exact), abs(fd), 1e-8)
        assert abs(exact - fd) <= tol * size + 1e-9, (exact, fd)


def first_along(module, inputs, dim, n):
    """The inputs cut to the first n entries along every axis named ``dim``."""
    out = {}
    for key, value in inputs.items():
        for axis, d in enumerate(module.INPUTS[key]):
            if d == dim:
                value = np.take(value, np.arange(n), axis=axis)
        out[key] = value
    return out
