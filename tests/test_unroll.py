"""Scalar-unrolled value_and_grad (m.unroll and automatic unrolling of small models).

The unrolled function must give what the vectorized code gives (<= 1e-12) and what
PyTorch gives (<= 1e-10), with the same structure of results, and value_and_grad must
dispatch to it exactly when the bound sizes match. No timing here: see benchmarks/.
"""

import warnings

import numpy as np
import pytest
import sympy as sp
from helpers import compile_module

import symgrad as sg
import symgrad.unroll
from symgrad.models import load
from symgrad.reference import reference
from symgrad.verify import relative_error, sample, verify

# --------------------------------------------------------------------------- test models


def kinks():
    """where, relu, abs and max, with a 0-d parameter."""
    m = sg.Model("kinks")
    x = m.input("x", ("batch", 3))
    w, c = m.param("w", (3,)), m.param("c")
    z = x * w + c
    branch = sg.where(z > 0, sg.relu(z) ** 2, 0.5 * sg.abs(z))
    both = sg.where((z < 1) & (x > 0), z, 1.0)
    m.loss(sg.mean(branch) + sg.sum(sg.max(z, axis=1)) + sg.max(w) + sg.mean(both))
    m.unroll(batch=2)
    return m


def lookup():
    """Gather with repeated indices, take_along_axis, slices with steps."""
    m = sg.Model("lookup")
    E = m.param("E", (5, 3))
    idx = m.input("idx", ("batch",), dtype="int64")
    labels = m.input("labels", ("batch",), dtype="int64")
    logits = 2 * sg.tanh(E[idx])
    picked = sg.take_along_axis(sg.log_softmax(logits, axis=1), labels[:, None], axis=1)
    m.loss(-sg.mean(picked) + sg.sum(E[::2, 1:] ** 2) + sg.sum(sg.sin(E[1::3, ::2])))
    m.unroll(batch=4)
    return m


def batched():
    """Batched matmul in all its forms, transpose and reshape."""
    m = sg.Model("batched")
    A = m.input("A", ("batch", 2, 3))
    W, v = m.param("W", (3, 4)), m.param("v", (4,))
    u, k = m.param("u", (2,)), m.param("k", (3,))
    P = A @ W  # (batch, 2, 4)
    gram = A @ sg.transpose(A, (0, 2, 1))  # (batch, 2, 2)
    total = sg.sum(sg.tanh(P) @ v) + sg.sum(sg.sigmoid(u @ A)) + sg.sum((A @ k) ** 2)
    swapped = sg.transpose(P, (0, 2, 1)).reshape(("batch", 8))
    m.loss(total + sg.sum(swapped**2) / 10 + sg.mean(gram * sg.softplus(P[:, :, :2])))
    m.unroll(batch=2)
    m.unroll(batch=1)
    return m


def decay():
    """The scalar front-end: 0-d parameters, data along a batch axis."""
    a, b, c, t, y = sp.symbols("a b c t y")
    m = sg.Model.from_expr(
        "decay", loss=(a * sp.exp(-b * t) + c - y) ** 2, params=[a, b, c], inputs=[t, y]
    )
    m.unroll(batch=3)
    return m


def plain():
    """No symbolic dims and few elements: unrolled without asking."""
    x, y = sp.symbols("x y")
    return sg.Model.from_expr(
        "plain", loss=sp.sin(x) * y**2 + sp.exp(x * y) / (1 + y**2), params=[x, y]
    )


def small_matrices():
    """No symbolic dims: softmax, log_softmax, max, outer products, steps."""
    m = sg.Model("small_matrices")
    w, u = m.param("w", (5,)), m.param("u", (5,))
    M = m.param("M", (5, 5))
    outer = w[None, :] * u[:, None]
    loss = (w @ u) ** 2 + sg.sum(sg.softmax(w) * u) + sg.max(w) + sg.mean(outer)
    m.loss(loss + u @ M @ w + sg.sum(sg.log_softmax(M, axis=0)[::2, 1:]))
    return m


UNROLLED = {
    "seed_mlp": lambda: load("seed_mlp"),
    "rosenbrock": lambda: load("rosenbrock"),
    "lennard_jones": lambda: load("lennard_jones"),
    "kinks": kinks,
    "lookup": lookup,
    "batched": batched,
    "decay": decay,
    "plain": plain,
    "small_matrices": small_matrices,
}


def data(model, rng, sizes):
    params, inputs = sample(model, rng, sizes)
    if model.name == "lookup":  # repeated indices must accumulate
        inputs["idx"] = np.array([1, 4, 1, 3, 1, 0, 4, 2][: sizes["batch"]])
    return params, inputs


def unroll_sizes(model):
    return model.unroll_sizes() or [{}]


def function_name(sizes):
    suffix = "_".join(f"{k}_{v}" for k, v in sizes.items()) or "unrolled"
    return f"_value_and_grad_{suffix}"


def vectorized(model):
    """The same model's module without any unrolled function."""
    model.unrolls = []
    saved, symgrad.unroll.AUTO_ELEMENTS = symgrad.unroll.AUTO_ELEMENTS, 0
    try:
        return compile_module(model)
    finally:
        symgrad.unroll.AUTO_ELEMENTS = saved


def call_unrolled(module, model, sizes, params, inputs):
    """The unrolled function called directly (no fallback can hide a mistake)."""
    arrays = [np.asarray(params[k]) for k in model.params]
    arrays += [np.asarray(inputs[k]) for k in model.inputs]
    return getattr(module, function_name(sizes))(*arrays)


def assert_same_structure(result, params):
    loss, grads = result
    assert np.ndim(loss) == 0 and np.isfinite(loss)
    assert list(grads) == list(params)
    for name, g in grads.items():
        assert isinstance(g, np.ndarray) and g.dtype == np.float64, name
        assert g.shape == np.shape(params[name]), name


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_agrees_with_vectorized_code(name):
    module = compile_module(UNROLLED[name]())
    model = UNROLLED[name]()
    plain_module = vectorized(UNROLLED[name]())
    for k, sizes in enumerate(unroll_sizes(model)):
        params, inputs = data(model, np.random.default_rng(k), sizes)
        unrolled = call_unrolled(module, model, sizes, params, inputs)
        dispatched = module.value_and_grad(params, inputs)
        expected = plain_module.value_and_grad(params, inputs)
        assert not hasattr(plain_module, function_name(sizes))
        outputs, cache = module.forward(params, inputs)  # vectorized, as before
        for result in (unrolled, dispatched):
            assert_same_structure(result, params)
            assert relative_error(result[0], expected[0]) <= 1e-12
            assert relative_error(result[0], outputs["loss"]) <= 1e-12
            for key, g in expected[1].items():
                assert relative_error(result[1][key], g) <= 1e-12, key


@pytest.mark.parametrize("name", UNROLLED)
def test_unrolled_agrees_with_pytorch(name):
    torch = pytest.importorskip("torch")
    model = UNROLLED[name]()
    module = compile_module(model)
    for k, sizes in enumerate(unroll_sizes(model)):
        params, inputs = data(model, np.random.default_rng(10 + k), sizes)
        loss, grads = call_unrolled(module, model, sizes, params, inputs)
        ref_loss, _, ref_grads = reference(model, params, inputs, engine=torch)
        assert relative_error(loss, ref_loss) <= 1e-10
        for key, g in ref_grads.items():
            assert relative_error(grads[key], g) <= 1e-10, key


def test_kinks_ties_and_zeros_follow_pytorch():
    """relu'(0) = abs'(0) = 0 and tied maxima share the gradient, as in PyTorch."""
    torch = pytest.importorskip("torch")
    model = kinks()
    module = compile_module(model)
    params = {"w": np.array([0.5, 0.5, -1.0]), "c": np.array(0.0)}
    inputs = {"x": np.array([[2.0, 2.0, 0.0], [0.0, 1.0, -3.0]])}  # ties, z = 0
    loss, grads = call_unrolled(module, model, {"batch": 2}, params, inputs)
    ref_loss, _, ref_grads = reference(model, params, inputs, engine=torch)
    assert relative_error(loss, ref_loss) <= 1e-12
    for key, g in ref_grads.items():
        assert relative_error(grads[key], g) <= 1e-12, key


def test_stable_activations_stay_finite_at_extremes():
    """Sigmoid and softplus are unrolled in their stable forms: no overflow at +-1000."""
    m = sg.Model("extremes")
    z = m.param("z", (4,))
    m.loss(sg.sum(sg.sigmoid(z) + sg.softplus(z) - sg.logsumexp(z)))
    module = compile_module(m)
    params = {"z": np.array([1000.0, -1000.0, 0.0, 30.0])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = call_unrolled(module, m, {}, params, {})
    expected = vectorized(m).value_and_grad(params, {})
    assert relative_error(loss, expected[0]) <= 1e-12
    assert relative_error(grads["z"], expected[1]["z"]) <= 1e-12


def test_verify_checks_the_unroll_sizes():
    model = lookup()
    report = verify(model, compile_module(model))
    assert {"batch": 4} in report.dims and report.ok, report.table()


# --------------------------------------------------------------------------- dispatch


def spy(module, name):
    calls = []
    original = getattr(module, name)

    def wrapper(*args):
        calls.append(args)
        return original(*args)

    setattr(module, name, wrapper)
    return calls


def test_dispatch_only_at_the_unrolled_sizes(rng):
    model = batched()
    module = compile_module(model)
    one, two = spy(module, "_value_and_grad_batch_1"), spy(
        module, "_value_and_grad_batch_2"
    )
    for batch in (1, 2, 3, 2):
        params, inputs = sample(model, rng, {"batch": batch})
        assert_same_structure(module.value_and_grad(params, inputs), params)
        module.forward(params, inputs)  # forward/backward are never unrolled
    assert len(one) == 1 and len(two) == 2


def test_builtins_dispatch_at_their_benchmark_sizes(rng):
    for name, sizes, other in [
        ("seed_mlp", {"batch": 1}, {"batch": 2}),
        ("rosenbrock", {"n": 10}, {"n": 11}),
        ("lennard_jones", {"N": 8, "pairs": 28}, {"N": 7, "pairs": 21}),
    ]:
        model = load(name)
        assert model.unroll_sizes() == [sizes]
        module = compile_module(model)
        calls = spy(module, function_name(sizes))
        module.value_and_grad(*sample(model, rng, other))
        assert not calls
        module.value_and_grad(*sample(model, rng, sizes))
        assert len(calls) == 1


def test_validation_errors_are_raised_at_the_unrolled_sizes():
    module = compile_module(load("seed_mlp"))
    params = module.init_params()
    good = {"x": np.ones((1, 3)), "target": np.ones((1, 1))}
    with pytest.raises(ValueError, match=r"inputs\['x'\]"):
        module.value_and_grad(params, {**good, "x": np.ones((1, 4))})
    with pytest.raises(ValueError, match=r"inputs\['target'\]"):
        module.value_and_grad(params, {**good, "target": np.ones((1, 1), dtype=int)})
    with pytest.raises(ValueError, match=r"params\['W1'\]"):
        module.value_and_grad({**params, "W1": np.ones((3, 2))}, good)
    with pytest.raises(KeyError, match="b2"):
        module.value_and_grad({k: v for k, v in params.items() if k != "b2"}, good)


def test_math_errors_fall_back_to_numpy_semantics():
    """math.exp overflows with an exception where NumPy gives inf: same result as NumPy."""
    m = sg.Model("overflow")
    x = m.input("x", ("batch",))
    w = m.param("w", ())
    m.loss(sg.sum(sg.exp(w * x)))
    m.unroll(batch=2)
    module = compile_module(m)
    params, inputs = {"w": np.array(1.0)}, {"x": np.array([1000.0, 1.0])}
    with pytest.raises(OverflowError):
        call_unrolled(module, m, {"batch": 2}, params, inputs)
    with np.errstate(over="ignore"):
        loss, grads = module.value_and_grad(params, inputs)
    assert loss == np.inf and grads["w"] == np.inf


def test_index_errors_are_numpy_index_errors():
    model = lookup()
    module = compile_module(model)
    params, inputs = data(model, np.random.default_rng(0), {"batch": 4})
    inputs["idx"] = np.array([0, 1, 5, 2])  # E has 5 rows
    with pytest.raises(IndexError):
        module.value_and_grad(params, inputs)


def test_results_never_alias_arguments():
    m = sg.Model("alias")
    x = m.input("x", (3,))
    w = m.param("w", (3,))
    m.loss(sg.sum(w * x))  # d loss / d w is x itself
    module = compile_module(m)
    assert hasattr(module, "_value_and_grad_unrolled")
    inputs = {"x": np.array([1.0, 2.0, 3.0])}
    _, grads = module.value_and_grad({"w": np.zeros(3)}, inputs)
    grads["w"] *= 2
    np.testing.assert_array_equal(inputs["x"], [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- automatic


def test_small_models_without_dims_are_unrolled_automatically():
    limit = symgrad.unroll.AUTO_ELEMENTS
    for n, unrolled in [(limit, True), (limit + 1, False)]:
        m = sg.Model("auto")
        p = m.param("p", (n,))
        m.loss(sg.sum(sg.tanh(p) ** 2))
        module = compile_module(m)
        assert hasattr(module, "_value_and_grad_unrolled") == unrolled
        params = {"p": np.linspace(-1, 1, n)}
        loss, grads = module.value_and_grad(params, {})
        assert (
            relative_error(
                grads["p"], 2 * np.tanh(params["p"]) / np.cosh(params["p"]) ** 2
            )
            <= 1e-12
        )


def test_many_small_arrays_are_not_unrolled_past_the_work_limit(monkeypatch):
    monkeypatch.setattr(symgrad.unroll, "MAX_WORK", 20)
    module = compile_module(small_matrices())  # every array <= 25 elements
    assert not hasattr(module, "_value_and_grad_unrolled")


def test_models_with_dims_are_unrolled_only_when_asked():
    m = sg.Model("asked")
    x = m.input("x", ("batch",))
    w = m.param("w", ())
    m.loss(sg.sum((w * x) ** 2))
    module = compile_module(m)
    assert not [k for k in vars(module) if k.startswith("_value_and_grad")]
    assert "math" not in vars(module)  # imported only for unrolled code


# --------------------------------------------------------------------------- declaration


def declared():
    m = sg.Model("declared")
    x = m.input("x", ("batch", "n"))
    w = m.param("w", ("n",))
    m.loss(sg.sum(x @ w))
    return m


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({}, r"needs a size for each dim: m.unroll\(batch=1, n=1\)"),
        ({"rows": 2}, "'rows' is not a symbolic dim"),
        ({"batch": 0}, "positive int"),
        ({"batch": -1}, "positive int"),
        ({"batch": 1.0}, "positive int"),
        ({"batch": "1"}, "positive int"),
        ({"batch": True}, "positive int"),
    ],
)
def test_bad_unroll_arguments_raise_model_errors(sizes, message):
    with pytest.raises(sg.ModelError, match=message):
        declared().unroll(**sizes)


def test_unroll_needs_every_dim():
    m = declared()
    m.unroll(batch=1)
    with pytest.raises(sg.ModelError, match="no size for dim.*n"):
        compile_module(m)


def test_unroll_sets_are_kept_once_in_dim_order():
    m = declared()
    m.unroll(n=2, batch=1)
    m.unroll(batch=1, n=2)
    m.unroll(batch=3, n=2)
    assert m.unroll_sizes() == [{"batch": 1, "n": 2}, {"batch": 3, "n": 2}]
    module = compile_module(m)
    assert hasattr(module, "_value_and_grad_batch_1_n_2")
    assert hasattr(module, "_value_and_grad_batch_3_n_2")


def test_unroll_changes_the_model_digest():
    a, b = declared(), declared()
    b.unroll(batch=1, n=2)
    assert a.digest() != b.digest()


def test_too_large_unroll_sizes_are_refused():
    m = declared()
    m.unroll(batch=200, n=200)
    with pytest.raises(sg.ModelError, match="too large to unroll"):
        compile_module(m)


def test_math_is_a_reserved_name():
    with pytest.raises(sg.ModelError, match="shadow"):
        sg.Model("m").param("math", (2,))


def test_benchmark_runner_reports_the_path_it_measured():
    """benchmarks/run.py notes which function value_and_grad ran for a small case."""
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    run = importlib.import_module("benchmarks.run")
    workloads = importlib.import_module("benchmarks.workloads")
    module, note = run.load_generated("seed_mlp")
    assert note is None
    one, many = workloads.make_seed_mlp(1), workloads.make_seed_mlp(4)
    assert run.unrolled_path(module, *one) == "_value_and_grad_batch_1"
    assert run.unrolled_path(module, *many) is None
    assert callable(module._value_and_grad_batch_1)  # put back after the spying
    assert module._value_and_grad_batch_1.__name__ == "_value_and_grad_batch_1"


def test_unrolled_source_is_identical_across_hash_seeds():
    import os
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    script = (
        f"import sys; sys.path[:0] = [{str(here.parent)!r}, {str(here)!r}]\n"
        "import hashlib, test_unroll as t\n"
        "from symgrad.cli import generate\n"
        "models = [t.kinks, t.lookup, t.batched, t.small_matrices]\n"
        "text = ''.join(generate(f())[0] for f in models)\n"
        "print(hashlib.sha256(text.encode()).hexdigest())\n"
    )
    digests = set()
    for seed in ("1", "2", "777"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        digests.add(out.stdout.strip())
    assert len(digests) == 1
