"""Correctness of the hand-written benchmark baselines (benchmarks/hand_*.py).

They are the speed baseline generated code is measured against, so they must be right:
each is checked against PyTorch autograd (``benchmarks.torch_impl``), against a naive
NumPy formula of the loss written here, and against central finite differences of that
naive loss.  Also: stability for +-1000 pre-activations, every scatter path of the
Lennard-Jones gradient, inputs left untouched, and a smoke run of the benchmark runner
on a stand-in generated module (no timing is asserted anywhere).
"""

from __future__ import annotations

import importlib
import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

hand_numpy = importlib.import_module("benchmarks.hand_numpy")
hand_scalar = importlib.import_module("benchmarks.hand_scalar")
workloads = importlib.import_module("benchmarks.workloads")

MODELS = list(hand_numpy.WORKLOADS)
SCALAR_MODELS = list(hand_scalar.WORKLOADS)


# ------------------------------------------------------------ naive references


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def ref_seed_mlp(p, d):
    h = _sigmoid(d["x"] @ p["W1"].T + p["b1"])
    y = _sigmoid(h @ p["W2"].T + p["b2"])
    return np.mean((y - d["target"]) ** 2)


def ref_logistic_regression(p, d):
    z = d["X"] @ p["w"] + p["b"]
    return np.mean(np.logaddexp(0.0, z) - d["y"] * z)


def ref_mlp_classifier(p, d):
    h = np.tanh(d["x"] @ p["W1"].T + p["b1"])
    logits = h @ p["W2"].T + p["b2"]
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(d["labels"])), d["labels"]])


def ref_rosenbrock(p, d):
    x = p["x"]
    return np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def ref_lennard_jones(p, d):
    diff = p["pos"][d["i"]] - p["pos"][d["j"]]
    r2 = np.sum(diff**2, axis=1)
    s6 = r2**-3.0
    return np.sum(4.0 * (s6**2 - s6))


def ref_decay_fit(p, d):
    return np.mean((p["a"] * np.exp(-p["b"] * d["t"]) + p["c"] - d["y"]) ** 2)


REFERENCE = {
    "seed_mlp": ref_seed_mlp,
    "logistic_regression": ref_logistic_regression,
    "mlp_classifier": ref_mlp_classifier,
    "rosenbrock": ref_rosenbrock,
    "lennard_jones": ref_lennard_jones,
    "decay_fit": ref_decay_fit,
}

# Small instances for the finite-difference checks (the benchmark sizes are checked
# against PyTorch below).
SMALL = {
    "seed_mlp": [{"batch": 1}, {"batch": 7}],
    "logistic_regression": [{"batch": 50}, {"batch": 3, "features": 20}],
    "mlp_classifier": [{"batch": 1}, {"batch": 16}],
    "rosenbrock": [{"n": 2}, {"n": 10}, {"n": 37}],
    "lennard_jones": [{"n_atoms": 2}, {"n_atoms": 8}, {"n_atoms": 27}],
    "decay_fit": [{"batch": 1}, {"batch": 100}],
}
MAKERS = {
    "seed_mlp": workloads.make_seed_mlp,
    "logistic_regression": workloads.make_logistic_regression,
    "mlp_classifier": workloads.make_mlp_classifier,
    "rosenbrock": workloads.make_rosenbrock,
    "lennard_jones": workloads.make_lennard_jones,
    "decay_fit": workloads.make_decay_fit,
}


def small_instances(models):
    for model in models:
        for size in SMALL[model]:
            label = ",".join(f"{k}={v}" for k, v in size.items())
            yield pytest.param(model, size, id=f"{model}-{label}")


def impl_params(models_numpy=MODELS, models_scalar=SCALAR_MODELS):
    for m in models_numpy:
        yield pytest.param(hand_numpy.WORKLOADS[m], m, id=f"numpy-{m}")
    for m in models_scalar:
        yield pytest.param(hand_scalar.WORKLOADS[m], m, id=f"scalar-{m}")


# --------------------------------------------------------------------- helpers


def max_rel_err(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    scale = max(np.max(np.abs(b)), 1e-300) if b.size else 1.0
    return float(np.max(np.abs(a - b)) / scale) if a.size else 0.0


def assert_grads_close(grads, ref_grads, params, rtol):
    assert set(grads) == set(params)
    for k in params:
        g = np.asarray(grads[k])
        assert g.shape == np.shape(params[k]), k
        assert g.dtype == np.float64, k
        assert np.all(np.isfinite(g)), k
        err = max_rel_err(g, ref_grads[k])
        assert err <= rtol, f"grad {k}: relative error {err:.3g}"


def perturbed(params, name, index, delta):
    out = dict(params)
    arr = np.array(params[name], dtype=np.float64, copy=True)
    arr[index] += delta
    out[name] = arr
    return out


def fd_grads(loss, params, inputs, h=1e-6):
    """Central differences, element by element (small parameter counts only)."""
    out = {}
    for name, value in params.items():
        value = np.asarray(value, dtype=np.float64)
        g = np.empty(value.shape)
        for index in np.ndindex(value.shape):
            step = h * max(1.0, abs(value[index]))
            up = loss(perturbed(params, name, index, step), inputs)
            down = loss(perturbed(params, name, index, -step), inputs)
            g[index] = (up - down) / (2 * step)
        out[name] = g
    return out


def fd_directional(loss, params, inputs, grads, rng, n_dirs=3, h=1e-6):
    """v . grad against (f(p + h v) - f(p - h v)) / 2h for random directions v."""
    for _ in range(n_dirs):
        v = {k: rng.normal(size=np.shape(p)) for k, p in params.items()}
        up = loss({k: params[k] + h * v[k] for k in params}, inputs)
        down = loss({k: params[k] - h * v[k] for k in params}, inputs)
        fd = (up - down) / (2 * h)
        an = sum(float(np.sum(grads[k] * v[k])) for k in params)
        assert abs(fd - an) <= 1e-6 * max(abs(an), abs(fd), 1e-8), (fd, an)


# ----------------------------------------------------------------------- tests


def test_workloads_match_hand_tables():
    assert set(hand_numpy.WORKLOADS) == set(MAKERS) == set(REFERENCE)
    assert set(hand_scalar.WORKLOADS) <= set(hand_numpy.WORKLOADS)
    for case in workloads.CASES:
        assert case.model in hand_numpy.WORKLOADS
        assert (case.target == workloads.TARGET_SMALL) == case.small
    assert {c.model for c in workloads.CASES if c.small} == set(SCALAR_MODELS)


def test_cases_are_deterministic_and_well_formed():
    for case in workloads.CASES:
        p1, i1 = case.make()
        p2, i2 = case.make()
        for a, b in ((p1, p2), (i1, i2)):
            assert a.keys() == b.keys()
            for k in a:
                assert np.array_equal(a[k], b[k])
                assert a[k].dtype in (np.float64, np.int64)
    params, inputs = workloads.select(["W5/n_atoms=128"])[0].make()
    pos = params["pos"]
    diff = pos[inputs["i"]] - pos[inputs["j"]]
    assert np.all(inputs["i"] < inputs["j"])
    assert len(inputs["i"]) == 128 * 127 // 2
    assert np.min(np.sum(diff**2, axis=1)) > 0.8  # r2 never tiny


def test_case_shapes_match_models():
    shapes = {
        "seed_mlp": {"W1": (2, 3), "b1": (2,), "W2": (1, 2), "b2": (1,)},
        "logistic_regression": {"w": (20,), "b": ()},
        "mlp_classifier": {"W1": (128, 784), "b1": (128,), "W2": (10, 128)},
        "decay_fit": {"a": (), "b": (), "c": ()},
    }
    for case in workloads.CASES:
        params, inputs = case.make()
        for name, shape in shapes.get(case.model, {}).items():
            assert params[name].shape == shape
    _, inputs = workloads.make_mlp_classifier(5)
    assert inputs["labels"].dtype == np.int64 and inputs["labels"].max() < 10


def test_select():
    assert [c.id for c in workloads.select(["W1/batch=1"])] == ["W1/batch=1"]
    assert len(workloads.select(["W4"])) == 3
    assert len(workloads.select(["lennard"])) == 3
    assert workloads.select(None) == list(workloads.CASES)
    assert workloads.select(["nothing-like-this"]) == []


@pytest.mark.parametrize("model,size", list(small_instances(MODELS)))
def test_hand_numpy_matches_naive_loss_and_finite_differences(model, size):
    params, inputs = MAKERS[model](**size, seed=3)
    loss, grads = hand_numpy.WORKLOADS[model](params, inputs)
    ref = REFERENCE[model]
    assert np.ndim(loss) == 0
    assert abs(float(loss) - ref(params, inputs)) <= 1e-12 * max(1.0, abs(loss))
    if model == "mlp_classifier":  # 100k parameters: random directions
        fd_directional(ref, params, inputs, grads, np.random.default_rng(0))
    else:
        assert_grads_close(grads, fd_grads(ref, params, inputs), params, 1e-6)


@pytest.mark.parametrize("model,size", list(small_instances(SCALAR_MODELS)))
def test_hand_scalar_matches_naive_loss_and_finite_differences(model, size):
    params, inputs = MAKERS[model](**size, seed=4)
    loss, grads = hand_scalar.WORKLOADS[model](params, inputs)
    ref = REFERENCE[model]
    assert abs(float(loss) - ref(params, inputs)) <= 1e-12 * max(1.0, abs(loss))
    assert_grads_close(grads, fd_grads(ref, params, inputs), params, 1e-6)


@pytest.mark.parametrize("case", workloads.CASES, ids=lambda c: c.id)
def test_hand_matches_torch_on_benchmark_cases(case):
    torch_impl = pytest.importorskip("benchmarks.torch_impl", exc_type=ImportError)
    params, inputs = case.make()
    t_loss, t_grads = torch_impl.WORKLOADS[case.model](params, inputs)
    impls = [hand_numpy.WORKLOADS[case.model]]
    if case.model in hand_scalar.WORKLOADS:
        impls.append(hand_scalar.WORKLOADS[case.model])
    for fn in impls:
        loss, grads = fn(params, inputs)
        assert max_rel_err(loss, t_loss) <= 1e-12
        assert_grads_close(grads, t_grads, params, 1e-10)


@pytest.mark.parametrize("model,size", list(small_instances(MODELS)))
def test_hand_numpy_matches_torch_on_small_instances(model, size):
    torch_impl = pytest.importorskip("benchmarks.torch_impl", exc_type=ImportError)
    params, inputs = MAKERS[model](**size, seed=5)
    t_loss, t_grads = torch_impl.WORKLOADS[model](params, inputs)
    loss, grads = hand_numpy.WORKLOADS[model](params, inputs)
    assert max_rel_err(loss, t_loss) <= 1e-12
    assert_grads_close(grads, t_grads, params, 1e-10)


def lj_instance(n_atoms, pairs, seed=0):
    rng = np.random.default_rng(seed)
    pos = workloads.lattice(n_atoms, seed=seed)
    if pairs == "all":
        i, j = np.triu_indices(n_atoms, k=1)
    else:  # random distinct-atom pairs in both orders, with repeats
        i = rng.integers(0, n_atoms, size=pairs)
        j = (i + rng.integers(1, n_atoms, size=pairs)) % n_atoms
        i = np.concatenate([i, i[:3]])
        j = np.concatenate([j, j[:3]])
    return {"pos": pos}, {"i": i.astype(np.int64), "j": j.astype(np.int64)}


@pytest.mark.parametrize(
    "n_atoms,pairs",
    [
        (8, "all"),  # dense pair matrix, a + a.T (n <= 64)
        (80, "all"),  # dense pair matrix, two matmuls (n > 64)
        (6, 40),  # dense, with repeated pairs
        (40, 60),  # sparse: one bincount per coordinate
        (3, 1),
    ],
)
def test_lennard_jones_scatter_paths(n_atoms, pairs):
    params, inputs = lj_instance(n_atoms, pairs)
    ref_loss = ref_lennard_jones(params, inputs)
    # the gradient by plain np.add.at, the slow obvious way
    pos = params["pos"]
    i, j = inputs["i"], inputs["j"]
    d = pos[i] - pos[j]
    r2 = np.sum(d**2, axis=1)
    f = (24.0 * r2**-3 * (1.0 - 2.0 * r2**-3) / r2)[:, None] * d
    expected = np.zeros_like(pos)
    np.add.at(expected, i, f)
    np.add.at(expected, j, -f)
    for fn in (hand_numpy.lennard_jones, hand_scalar.lennard_jones):
        loss, grads = fn(params, inputs)
        assert max_rel_err(loss, ref_loss) <= 1e-12
        assert_grads_close(grads, {"pos": expected}, params, 1e-12)
    if n_atoms <= 8:
        grads = hand_numpy.lennard_jones(params, inputs)[1]
        fd = fd_grads(ref_lennard_jones, params, inputs)
        assert_grads_close(grads, fd, params, 1e-6)


def test_rosenbrock_scalar_paths_agree():
    for n in (0, 1, 2, 9, 10, 11):
        params = {"x": np.random.default_rng(n).uniform(-2, 2, size=n)}
        loss_s, g_s = hand_scalar.rosenbrock(params, {})
        loss_n, g_n = hand_numpy.rosenbrock(params, {})
        assert g_s["x"].shape == g_n["x"].shape == (n,)
        if n >= 2:
            assert max_rel_err(loss_s, loss_n) <= 1e-13
            assert max_rel_err(g_s["x"], g_n["x"]) <= 1e-13
        else:
            assert loss_s == 0.0 and np.all(g_s["x"] == 0.0)


def extreme_instances():
    """Pre-activations / logits of about +-1000 for every model with a sigmoid,
    softplus or softmax."""
    p, d = workloads.make_seed_mlp(6, seed=1)
    rows = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 0], [0.5, -0.5, 0.25]]
    d["x"] = 1500.0 * np.array(rows)
    d["target"] = np.linspace(0.0, 1.0, 6)[:, None]
    p["W1"] = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    p["W2"] = np.array([[800.0, -900.0]])
    p["b2"] = np.array([100.0])
    yield "seed_mlp", p, d
    p, d = workloads.make_logistic_regression(8, seed=1)
    d["X"][:4] *= 1000.0 / np.abs(d["X"][:4] @ p["w"])[:, None]
    d["X"][4:] *= -1000.0 / np.abs(d["X"][4:] @ p["w"])[:, None]
    d["y"] = np.array([0.0, 1.0] * 4)
    yield "logistic_regression", p, d
    p, d = workloads.make_mlp_classifier(4, seed=1)
    p["b2"] = np.array([1000.0, -1000.0, 0, 0, 0, 0, 0, 0, 0, 999.0])
    d["labels"] = np.array([0, 1, 9, 5], dtype=np.int64)
    yield "mlp_classifier", p, d


@pytest.mark.parametrize("model,params,inputs", list(extreme_instances()))
def test_stable_for_extreme_values(model, params, inputs):
    torch_impl = pytest.importorskip("benchmarks.torch_impl", exc_type=ImportError)
    t_loss, t_grads = torch_impl.WORKLOADS[model](params, inputs)
    impls = [hand_numpy.WORKLOADS[model]]
    if model in hand_scalar.WORKLOADS:
        impls.append(hand_scalar.WORKLOADS[model])
    for fn in impls:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # any NumPy RuntimeWarning fails
            loss, grads = fn(params, inputs)
        assert np.isfinite(loss)
        assert max_rel_err(loss, t_loss) <= 1e-12
        assert_grads_close(grads, t_grads, params, 1e-10)


def test_sigmoid_is_accurate_in_both_tails():
    z = np.concatenate([np.linspace(-745.0, 745.0, 10001), [-1000.0, 1000.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="ignore"):
            s = hand_numpy._sigmoid_(z.copy())
    exact = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))), 0.0)
    neg = z < 0
    e = np.exp(z[neg])
    exact[neg] = e / (1.0 + e)
    rel = np.abs(s - exact) / np.maximum(exact, 1e-300)
    assert np.all(rel[exact > 1e-300] < 4e-16)
    assert s[-2] == 0.0 and s[-1] == 1.0


@pytest.mark.parametrize("fn,model", list(impl_params()))
def test_inputs_are_not_modified(fn, model):
    case = next(c for c in workloads.CASES if c.model == model)
    params, inputs = case.make()
    before = {k: v.copy() for k, v in {**params, **inputs}.items()}
    fn(params, inputs)
    fn(params, inputs)
    for k, v in {**params, **inputs}.items():
        assert np.array_equal(v, before[k]), k


def test_jax_impl_matches_hand_when_installed():
    jax_impl = pytest.importorskip("benchmarks.jax_impl", exc_type=ImportError)
    for model in MODELS:
        params, inputs = MAKERS[model](**SMALL[model][-1], seed=6)
        loss, grads = jax_impl.WORKLOADS[model](params, inputs)
        h_loss, h_grads = hand_numpy.WORKLOADS[model](params, inputs)
        assert max_rel_err(loss, h_loss) <= 1e-12
        assert_grads_close(grads, h_grads, params, 1e-10)


# ----------------------------------------------------------------- the runner


def test_runner_smoke(tmp_path):
    """The runner checks, times and reports; a wrong module FAILs, a missing one is
    skipped.  No assertion on any time or on PASS vs MISS."""
    pytest.importorskip("benchmarks.torch_impl", exc_type=ImportError)
    run = importlib.import_module("benchmarks.run")
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "rosenbrock.py").write_text(
        f"import sys\nsys.path.insert(0, {str(root)!r})\n"
        "from benchmarks.hand_numpy import rosenbrock as value_and_grad\n"
    )
    (tmp_path / "decay_fit.py").write_text(
        "import numpy as np\n"
        "def value_and_grad(params, inputs):\n"
        "    g = {k: np.zeros(()) for k in 'abc'}\n"
        "    return 0.0, g\n"
    )
    out = io.StringIO()
    records = run.run(
        ["W4/n=10", "W6", "W1/batch=1"],
        generated_dir=tmp_path,
        repeat=1,
        file=out,
        min_time=1e-4,
        memory=False,
        configure_process=False,  # leave this pytest process's threads and malloc
    )
    text = out.getvalue()
    by_case = {r["case"]: r for r in records if r["kind"] == "time"}
    assert by_case["W4/n=10"]["status"] in ("PASS", "MISS")
    assert by_case["W4/n=10"]["errors"]["generated"] <= 1e-15
    assert set(by_case["W4/n=10"]["ratios"]) >= {"generated", "scalar", "torch"}
    assert by_case["W6/batch=1000"]["status"] == "FAIL"
    assert "differs from hand NumPy" in text
    assert by_case["W1/batch=1"]["status"] == "SKIP"
    assert "no generated module" in text
    imports = [r for r in records if r["kind"] == "import"]
    assert {r["model"] for r in imports} == {"rosenbrock", "decay_fit"}
    assert "summary:" in text


def test_import_times_count_the_module_after_numpy(tmp_path, monkeypatch):
    """A module that sleeps 20 ms on import costs at least that over numpy; the
    bytecode goes to a temporary prefix even where the environment forbids writing it,
    and never next to the module."""
    run = importlib.import_module("benchmarks.run")
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    slow, empty = tmp_path / "slow.py", tmp_path / "empty.py"
    slow.write_text("import time\ntime.sleep(0.02)\n")
    empty.write_text("")
    numpy_s, module_s = run.import_times([slow, empty], runs=1)
    assert numpy_s > 0 and module_s[slow] >= 0.02
    assert module_s[empty] < module_s[slow]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.py", "slow.py"]


def test_runner_helpers():
    run = importlib.import_module("benchmarks.run")
    calls = []
    best = run.measure({"a": lambda: calls.append(1)}, repeat=2, min_time=1e-4)
    assert best["a"] > 0 and calls
    params, inputs = workloads.make_rosenbrock(5)
    ref = hand_numpy.rosenbrock(params, inputs)
    assert run.agreement(ref, ref, ["x"]) == (0.0, None)
    bad = (ref[0], {"x": ref[1]["x"][:-1]})
    assert run.agreement(bad, ref, ["x"])[1].startswith("grad x has shape")
    peak = run.peak_memory(hand_numpy.rosenbrock, *workloads.make_rosenbrock(10_000))
    assert peak >= 10_000 * 8  # at least the gradient array is traced
