"""Hessian-vector products and dense Hessians of models declared with hessian=True."""

import numpy as np
import pytest
import sympy as sp
from helpers import compile_module

import symgrad as sg
from symgrad.cli import generate, main
from symgrad.models import BUILTIN, load
from symgrad.reference import evaluate
from symgrad.verify import load_source, relative_error, sample, verify

SMALL = [n for n in BUILTIN if n != "mlp_classifier"]  # a dense 100k x 100k Hessian: no


def with_hessian(build):
    model = build()
    model.hessian = True
    return model


def torch_hessian(model, params, inputs):
    torch = pytest.importorskip("torch")
    names = list(model.params)
    sizes = [int(np.size(params[k])) for k in names]
    flat = torch.tensor(np.concatenate([np.ravel(params[k]) for k in names]))

    def loss(x):
        parts = torch.split(x, sizes)
        tensors = {
            k: parts[i].reshape(np.shape(params[k])) for i, k in enumerate(names)
        }
        return evaluate(model, tensors, inputs, engine=torch)[model.loss_node]

    return torch.autograd.functional.hessian(loss, flat).numpy()


@pytest.mark.parametrize("name", SMALL)
def test_dense_hessian_matches_pytorch(name):
    model = with_hessian(lambda: load(name))
    module = compile_module(model)
    params, inputs = sample(model, np.random.default_rng(3), {d: 3 for d in model.dims})
    H = module.hessian(params, inputs)
    assert relative_error(H, torch_hessian(model, params, inputs)) <= 1e-10
    assert relative_error(H, H.T) <= 1e-12


def test_hvp_of_a_large_model_matches_pytorch():
    torch = pytest.importorskip("torch")
    model = with_hessian(lambda: load("mlp_classifier"))
    module = compile_module(model)
    rng = np.random.default_rng(0)
    params, inputs = sample(model, rng, {"batch": 4})
    v = {k: rng.standard_normal(np.shape(p)) for k, p in params.items()}
    products = module.hvp(params, inputs, v)
    names = list(params)

    def loss(*tensors):
        return evaluate(
            model, dict(zip(names, tensors, strict=True)), inputs, engine=torch
        )[model.loss_node]

    _, expected = torch.autograd.functional.hvp(
        loss,
        tuple(torch.tensor(params[k]) for k in names),
        tuple(torch.tensor(v[k]) for k in names),
    )
    for k, e in zip(names, expected, strict=True):
        assert relative_error(products[k], e.numpy()) <= 1e-10, k


def test_hessian_of_a_formula_is_sympys_hessian():
    a, b = sp.symbols("a b")
    f = sp.sin(a) * b**2 + sp.exp(a * b)
    model = sg.Model.from_expr("formula", loss=f, params=[a, b], hessian=True)
    module = compile_module(model)
    point = {"a": np.array(0.3), "b": np.array(-0.7)}
    expected = np.array(sp.hessian(f, (a, b)).subs({a: 0.3, b: -0.7}), dtype=float)
    assert relative_error(module.hessian(point, {}), expected) <= 1e-12


def test_verify_checks_hvp_and_catches_a_wrong_one():
    model = with_hessian(lambda: load("rosenbrock"))
    source = generate(model)[0]
    report = verify(model, load_source(source, "rosenbrock"))
    assert report.ok and "hvp x" in report.rows
    assert report.rows["hvp x"].tape_error <= 1e-12  # the tape's double backward
    wrong = source.replace('return {"x": hvp_x}', 'return {"x": 1.01 * hvp_x}')
    assert wrong != source
    assert not verify(model, load_source(wrong, "rosenbrock")).ok
    # Off by 1e-8: below what central differences resolve, not below the tape's check.
    slightly = source.replace('return {"x": hvp_x}', 'return {"x": hvp_x * 1.00000001}')
    report = verify(model, load_source(slightly, "rosenbrock"))
    assert report.rows["hvp x"].fd_error <= 1e-6
    assert not report.ok and report.rows["hvp x"].tape_error > 1e-10


def test_hvp_rejects_a_badly_shaped_vector():
    module = compile_module(with_hessian(lambda: load("rosenbrock")))
    with pytest.raises(ValueError, match=r"v\['x'\]"):
        module.hvp({"x": np.ones(4)}, {}, {"x": np.ones(3)})
    with pytest.raises(KeyError):
        module.hvp({"x": np.ones(4)}, {}, {})


def test_build_hessian_flag(tmp_path, capsys):
    assert main(["build", "decay_fit", "--hessian", "--out", str(tmp_path)]) == 0
    module = load_source((tmp_path / "decay_fit.py").read_text(), "decay_fit")
    assert callable(module.hvp) and callable(module.hessian)
    plain = compile_module(load("decay_fit"))
    assert not hasattr(plain, "hvp")
