"""The compiler end to end: declared models -> generated modules that agree with PyTorch,
the tape engine and central finite differences."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from helpers import compile_module

import symgrad as sg
from symgrad.cli import generate
from symgrad.models import BUILTIN, load
from symgrad.reference import reference
from symgrad.verify import load_source, relative_error, sample, verify

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- test-only models


def softmax_regression():
    m = sg.Model("softmax_regression")
    x = m.input("x", ("batch", 4))
    labels = m.input("labels", ("batch",), dtype="int64")
    W, b = m.param("W", (3, 4)), m.param("b", (3,))
    z = x @ W.T + b
    picked = sg.take_along_axis(z, labels[:, None], axis=1)[:, 0]
    m.loss(sg.mean(sg.logsumexp(z, axis=-1) - picked))
    return m


def piecewise():
    m = sg.Model("piecewise")
    x = m.input("x", ("batch", 3))
    w, c = m.param("w", (3,)), m.param("c")
    z = x * w + c
    branch = sg.where(z > 0, sg.relu(z) ** 2, 0.5 * sg.abs(z))
    m.loss(
        sg.mean(branch)
        + 0.01 * sg.sum(w**2)
        + sg.mean(sg.where((z < 1) & (x > 0), z, 1.0))
    )
    return m


def batched():
    m = sg.Model("batched")
    A = m.input("A", ("batch", 2, 3))
    W, v = m.param("W", (3, 4)), m.param("v", (4,))
    P = A @ W
    m.output("P", P)
    total = sg.sum(sg.tanh(P) @ v) + sg.mean(sg.sum(P, axis=(1, 2)))
    swapped = sg.transpose(P, (0, 2, 1))
    m.loss(total + sg.sum(swapped.reshape(("batch", 8)) ** 2) / 10)
    return m


def vectors():
    m = sg.Model("vectors")
    w, u = m.param("w", (5,)), m.param("u", (5,))
    M = m.param("M", (5, 5))
    outer = w[None, :] * u[:, None]
    loss = (
        (w @ u) ** 2
        + sg.sum(sg.softmax(w) * u)
        + sg.max(w)
        + sg.mean(outer.reshape(25))
    )
    m.loss(
        loss + u @ M @ w + sg.sum(sg.log_softmax(M, axis=0)[::2, 1:]) + sg.sum(M[:, 1])
    )
    return m


def custom():
    m = sg.Model("custom")
    x = m.input("x", ("batch", 2))
    W = m.param("W", (2, 2))
    swish = sg.elementwise(lambda z: z / (1 + sp.exp(-z)), x @ W)
    bump = sg.elementwise(lambda a, b: sp.exp(-(a**2)) * sp.cos(b), x, swish)
    m.loss(sg.mean(swish**2) + sg.sum(bump) + sg.mean(sg.sqrt(1 + W**2)))
    return m


def no_inputs():
    a, b = sp.symbols("a b")
    return sg.Model.from_expr(
        "no_inputs",
        loss=sp.sin(a) * b**2 + sp.exp(a * b) / (1 + b**2),
        params=[a, b],
        inputs=[],
    )


def embedding():
    m = sg.Model("embedding")
    E = m.param("E", (6, 3))
    idx = m.input("idx", ("batch",), dtype="int64")
    x = m.input("x", ("batch", 3))
    rows = E[idx]  # duplicates in idx must accumulate
    m.loss(sg.sum(sg.tanh(rows) * x) + sg.sum(E[idx][..., 1:] ** 2))
    return m


def centred():
    m = sg.Model("centred")
    P = m.param("P", (3, 4))
    centred = P - sg.mean(P, axis=0, keepdims=True)
    gram = centred.T @ centred
    m.loss(sg.sum(gram**2) / 100 + sg.sum(sg.max(P, axis=1) * sg.softplus(P[:, 0])))
    return m


def outer():
    """Full-size results made only of smaller operands (found by the fuzzer)."""
    m = sg.Model("outer")
    p0, p1 = m.param("p0", (2,)), m.param("p1", (2, "n"))
    u = m.param("u", ("n",))
    m.loss(sg.sum(sg.sin(p0 @ p1)) + sg.sum(sg.tanh(u[:, None] * u[None, :] + 1)))
    return m


EXTRA = [
    outer,
    softmax_regression,
    piecewise,
    batched,
    vectors,
    custom,
    no_inputs,
    embedding,
    centred,
]


def all_models():
    return [pytest.param(lambda n=n: load(n), id=n) for n in BUILTIN] + [
        pytest.param(f, id=f.__name__) for f in EXTRA
    ]


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("build", all_models())
def test_generated_agrees_with_tape_and_finite_differences(build):
    model = build()
    report = verify(model, compile_module(model))  # two sizes of every symbolic dim
    assert report.ok, report.table()
    assert len(report.dims) == 2 + len(model.unrolls)  # and the m.unroll sizes


@pytest.mark.parametrize("build", all_models())
@pytest.mark.parametrize("size", [1, 6])
def test_generated_agrees_with_pytorch(build, size):
    torch = pytest.importorskip("torch")
    model = build()
    module = compile_module(model)
    params, inputs = sample(
        model, np.random.default_rng(size), {d: size for d in model.dims}
    )
    loss, grads = module.value_and_grad(params, inputs)
    outputs, _ = module.forward(params, inputs)
    ref_loss, ref_outputs, ref_grads = reference(model, params, inputs, engine=torch)
    assert relative_error(loss, ref_loss) <= 1e-10
    for name in model.outputs:
        assert relative_error(outputs[name], ref_outputs[name]) <= 1e-10
    for name, g in grads.items():
        assert np.shape(g) == np.shape(params[name])
        assert relative_error(g, ref_grads[name]) <= 1e-10, name


@pytest.mark.parametrize("name", BUILTIN)
def test_backward_scales_with_grad_loss(name, rng):
    model = load(name)
    module = compile_module(model)
    params, inputs = sample(model, rng, {d: 4 for d in model.dims})
    _, grads = module.value_and_grad(params, inputs)
    outputs, cache = module.forward(params, inputs)
    for g in (0.0, 1.0, -3.5):
        scaled = module.backward(cache, grad_loss=g)
        for k in grads:
            assert relative_error(scaled[k], g * grads[k]) <= 1e-12
    assert module.backward(cache).keys() == grads.keys()  # grad_loss defaults to 1


def test_results_never_alias_arguments():
    m = sg.Model("alias")
    x = m.input("x", (3,))
    w = m.param("w", (3,))
    m.loss(sg.sum(w * x))  # d loss / d w is x itself
    module = compile_module(m)
    inputs = {"x": np.array([1.0, 2.0, 3.0])}
    _, grads = module.value_and_grad({"w": np.zeros(3)}, inputs)
    grads["w"] *= 2
    np.testing.assert_array_equal(inputs["x"], [1.0, 2.0, 3.0])


# --------------------------------------------------------------------------- the generated files


@pytest.mark.parametrize("name", BUILTIN)
def test_generated_files_import_only_numpy_and_math(name):
    tree = ast.parse((ROOT / "generated" / f"{name}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= {"numpy", "math"} and "numpy" in imported  # math: unrolled code


def test_generated_modules_run_without_sympy():
    script = """
import sys, runpy
import numpy as np
sys.modules["sympy"] = None  # any import of sympy now fails
for name in sys.argv[1:]:
    mod = runpy.run_path(f"generated/{name}.py")
    assert "sympy" not in sys.modules or sys.modules["sympy"] is None
    rng = np.random.default_rng(0)
    params = {k: rng.standard_normal([4 if isinstance(d, str) else d for d in s])
              for k, s in mod["PARAMS"].items()}
    inputs = {k: (np.zeros if k in ("labels", "i") else np.ones)(
                  [4 if isinstance(d, str) else d for d in s],
                  dtype=int if k in ("labels", "i", "j") else float)
              for k, s in mod["INPUTS"].items()}
    if "j" in inputs:
        inputs["j"] += 1
    loss, grads = mod["value_and_grad"](params, inputs)
    assert np.isfinite(loss), name
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script, *BUILTIN],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_init_params_is_pytorch_style_and_deterministic():
    module = compile_module(load("mlp_classifier"))
    a, b = module.init_params(seed=3), module.init_params(seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W1"], module.init_params(seed=4)["W1"])
    bound = 1 / np.sqrt(784)  # nn.Linear: U(-1/sqrt(in_features), 1/sqrt(in_features))
    assert np.abs(a["W1"]).max() <= bound and np.abs(a["b1"]).max() <= bound
    assert np.abs(a["W1"]).max() > 0.9 * bound  # really spread over the range
    assert {k: v.shape for k, v in a.items()} == module.PARAMS


def test_init_params_needs_symbolic_sizes():
    module = compile_module(load("rosenbrock"))
    assert module.init_params(n=7)["x"].shape == (7,)
    with pytest.raises(TypeError, match="n"):
        module.init_params()


def test_readme_training_walkthrough_matches_tape_step_for_step():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from train_generated import train
    finally:
        sys.path.pop(0)
    losses = train(steps=5)
    assert len(losses) == 5
    for generated, reference_loss in losses:
        assert abs(generated - reference_loss) <= 1e-12 * abs(reference_loss)
    assert losses[-1][0] < losses[0][0]  # it does train


def test_compile_time_does_not_grow_with_parameter_count():
    """The symbolic work is per tensor operation, never per parameter element."""
    from symgrad.codegen import render
    from symgrad.compiler import compile_model
    from symgrad.ir import toposort
    from symgrad.models import mlp_classifier

    small = compile_model(mlp_classifier.build(hidden=8))
    large = compile_model(mlp_classifier.build(hidden=4096))
    assert len(toposort(small.roots())) == len(toposort(large.roots()))
    digits = str.maketrans("", "", "0123456789")
    code = [
        render(p).split("import numpy", 1)[1].translate(digits) for p in (small, large)
    ]
    assert code[0] == code[1]  # the same program, only sizes differ


def test_importing_the_tape_engine_loads_no_sympy():
    """The reference engine stays independent of the symbolic compiler."""
    script = "import sys, symgrad.tape; print('sympy' in sys.modules, 'symgrad.model' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True
    )
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_integer_powers_of_one_value_share_one_reciprocal():
    torch = pytest.importorskip("torch")
    m = sg.Model("powers")
    r = m.param("r", ("n",))
    m.loss(sg.sum(r**-6 - r**-3 + r**2 * sg.sin(r)))
    source, _ = generate(m)
    fused = source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]
    divisions = fused.count("np.reciprocal(") + fused.count("1 / ")
    assert divisions == 1, fused  # r**-3, r**-4, r**-6, r**-7 from one 1 / r
    module = load_source(source, m.name)
    params = {"r": np.linspace(0.8, 1.9, 9)}
    loss, grads = module.value_and_grad(params, {})
    ref_loss, _, ref_grads = reference(m, params, {}, engine=torch)
    assert relative_error(loss, ref_loss) <= 1e-12
    assert relative_error(grads["r"], ref_grads["r"]) <= 1e-12


def trace_weighted():
    """A product with grad_loss, which value_and_grad sets to 1 (once left as t6 = a)."""
    m = sg.Model("trace_weighted")
    x, a = m.param("x", ("n", "n")), m.param("a", ("n",))
    m.loss(sg.sum(sg.einsum("ii->i", x) * a))
    return m


@pytest.mark.parametrize("build", [*all_models(), trace_weighted])
def test_no_line_only_renames_a_value(build):
    """``t4 = grad_h`` is only written to take over grad_h's buffer for in-place work."""
    source, _ = generate(build())
    aliases = re.findall(r"^ +(t\d+) = [A-Za-z_]\w*$", source, re.MULTILINE)
    idle = [t for t in aliases if not re.search(rf"\b{t} [-+*/]= |out={t}\b", source)]
    assert not idle, idle


def test_named_values_are_never_overwritten_in_place():
    """A reviewer reading ``mu`` in the generated code should find the mean in it."""
    m = sg.Model("gaussian_nll")
    x, y = m.input("x", ("batch", 3)), m.input("y", ("batch",))
    w, s = m.param("w", (3,)), m.param("s", ())
    mu = m.let("mu", x @ w)
    m.loss(sg.mean((y - mu) ** 2 * sg.exp(-s) + s))
    source, _ = generate(m)
    body = source.split("def value_and_grad", 1)[1]
    assert "mu = x @ w" in body
    assert "out=mu)" not in body and not re.search(r"\bmu [-+*/]= ", body)


@pytest.mark.parametrize("name", ["seed_mlp", "rosenbrock"])  # unrolled and vectorized
@pytest.mark.parametrize("size", [1, 10, 7])
def test_loss_and_0d_results_are_arrays_on_every_path(name, size, rng):
    model = load(name)
    module = compile_module(model)
    params, inputs = sample(model, rng, {d: size for d in model.dims})
    loss, grads = module.value_and_grad(params, inputs)
    outputs, _ = module.forward(params, inputs)
    for value in (loss, outputs["loss"], *grads.values()):
        assert isinstance(value, np.ndarray) and value.dtype == np.float64
    # the unrolled path sums in another order than BLAS: equal to rounding, not bitwise
    assert loss.shape == () and loss == pytest.approx(outputs["loss"], rel=1e-14)


@pytest.mark.parametrize("name", BUILTIN)
def test_no_temporary_is_a_second_name_for_another(name):
    """``np.square(t1, out=t1)`` then ``t3 = t1``: the in-place result keeps t1's name."""
    source = (ROOT / "generated" / f"{name}.py").read_text()
    assert not re.search(r"(?m)^\s+t\d+ = t\d+$", source)


def test_shared_weight_and_unit_axis_gradients_read_like_hand_written_numpy():
    """grad_W of x @ W with x (batch, 4, 3) is one product of reshaped arrays, not a
    batched product and a sum; the adjoint of b[None, None] or of t[:, :, 0] on a size-1
    axis is a reshape, not a scatter into zeros."""
    torch = pytest.importorskip("torch")
    m = sg.Model("shared_weight")
    x = m.input("x", ("batch", 4, 3))
    W, b, v = m.param("W", (3, 2)), m.param("b", (2,)), m.param("v", (2, 1))
    h = sg.tanh(x @ W + b[None, None])
    m.loss(sg.sum((h @ v)[:, :, 0] ** 2))
    source, _ = generate(m)
    fused = source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]
    assert "x.reshape((4 * batch, 3)).T @ " in fused
    assert re.search(r"@ t\d+\.reshape\(\(4 \* batch, 1\)\)", fused)  # reshaped once
    assert "np.zeros" not in fused
    module = load_source(source, m.name)
    for batch in (1, 5):
        params, inputs = sample(m, np.random.default_rng(batch), {"batch": batch})
        loss, grads = module.value_and_grad(params, inputs)
        ref_loss, _, ref_grads = reference(m, params, inputs, engine=torch)
        assert relative_error(loss, ref_loss) <= 1e-12
        for k in grads:
            assert relative_error(grads[k], ref_grads[k]) <= 1e-12, k


def test_a_scalar_input_needs_no_shape():
    m = sg.Model("scalar_input")
    w, k = m.param("w", (2,)), m.input("k")  # both default to shape ()
    m.loss(k * sg.sum(w**2))
    loss, grads = compile_module(m).value_and_grad({"w": np.ones(2)}, {"k": 3.0})
    assert float(loss) == 6.0 and grads["w"].tolist() == [6.0, 6.0]


def test_disjoint_slice_gradients_are_assigned_not_added():
    """Gate blocks z[:, 0:4], z[:, 4:8], z[:, 8:12]: each block of the gradient buffer is
    written once, with =, and an overlapping z[:, 2:6] still adds."""
    torch = pytest.importorskip("torch")
    m = sg.Model("gates")
    x, W = m.input("x", ("batch", 3)), m.param("W", (12, 3))
    z = x @ W.T
    gates = sg.tanh(z[:, 0:4]) * sg.sigmoid(z[:, 4:8]) + z[:, 8:12] ** 2
    m.loss(sg.sum(gates) + sg.sum(sg.sin(z[:, 2:6])))
    source, _ = generate(m)
    fused = source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]
    assert re.search(r"\[:, 8:12\] = ", fused) and re.search(r"\[:, 0:4\] \+= ", fused)
    module = load_source(source, m.name)
    params, inputs = sample(m, np.random.default_rng(0), {"batch": 5})
    loss, grads = module.value_and_grad(params, inputs)
    ref_loss, _, ref_grads = reference(m, params, inputs, engine=torch)
    assert relative_error(loss, ref_loss) <= 1e-12
    assert relative_error(grads["W"], ref_grads["W"]) <= 1e-12


def test_the_adjoint_of_a_difference_subtracts_instead_of_negating():
    """x[1:] - x[:-1]: grad[1:] += t and grad[:-1] -= t, not a negated copy of t."""
    torch = pytest.importorskip("torch")
    m = sg.Model("chain")
    pos = m.param("pos", ("n", 2))
    bond = pos[1:] - pos[:-1]
    m.loss(sg.sum((sg.sqrt(sg.sum(bond**2, axis=-1)) - 1.0) ** 2))
    source, _ = generate(m)
    fused = source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]
    assert not re.search(r"t\d+ = np.negative", fused)  # written into grad_pos[:-1]
    assert re.search(r"np.negative\(t\d+, out=grad_pos\[:-1\]\)", fused)
    module = load_source(source, m.name)
    for n in (2, 7):
        params, inputs = sample(m, np.random.default_rng(n), {"n": n})
        loss, grads = module.value_and_grad(params, inputs)
        _, cache = module.forward(params, inputs)
        ref_loss, _, ref_grads = reference(m, params, inputs, engine=torch)
        assert relative_error(loss, ref_loss) <= 1e-12
        assert relative_error(grads["pos"], ref_grads["pos"]) <= 1e-12
        scaled = module.backward(cache, grad_loss=-1.5)["pos"]
        assert relative_error(scaled, -1.5 * ref_grads["pos"]) <= 1e-12


def test_temporaries_are_numbered_in_order_of_first_use():
    """t1, t2, ... as they first appear: forward then backward (which share names
    through the cache), value_and_grad on its own."""
    m = sg.Model("numbered")
    x, W = m.input("x", ("batch", 3)), m.param("W", (2, 3))
    h = sg.tanh(x @ W.T)
    m.loss(sg.mean(sg.log_softmax(h, axis=-1) ** 2) + sg.sum(W**2))
    source, _ = generate(m)
    forward = source.split("def forward", 1)[1].split("\ndef value_and_grad", 1)[0]
    fused = source.split("def value_and_grad", 1)[1].split("\ndef ", 1)[0]
    for body in (forward, fused):
        first = [int(n) for n in dict.fromkeys(re.findall(r"\bt(\d+)\b", body))]
        assert first == list(range(1, len(first) + 1)), first


def test_a_loss_accumulated_over_a_long_loop_is_cut_into_bounded_formulas():
    """nll = nll + log(s) + r**2 / s over 48 steps of a variance recursion fused into one
    formula of ~100 arrays, differentiated once per array (seconds, growing as T**2);
    the forward's fused formulas read at most optimize.FUSED_ARGS arrays (a gradient may
    still sum many contributions in one), and the result is exact."""
    from symgrad import optimize
    from symgrad.compiler import compile_model
    from symgrad.ir import toposort

    torch = pytest.importorskip("torch")
    steps = 48
    m = sg.Model("long_recursion")
    r, a, b = m.input("r", ("S", steps)), m.param("a"), m.param("b")
    s, nll = sg.exp(a) + 0.0 * r[:, 0], 0.0
    for k in range(steps):
        if k:
            s = 0.1 + sg.sigmoid(b) * s + 0.2 * r[:, k - 1] ** 2
        nll = nll + sg.log(s) + r[:, k] ** 2 / s
    m.loss(sg.mean(nll))
    program = compile_model(m)
    differentiated = [n for n in toposort([program.loss]) if n.op == "map"]
    assert max(len(n.args) for n in differentiated) <= optimize.FUSED_ARGS

    data = np.random.default_rng(0).standard_normal((3, steps))
    params = {"a": np.array(0.3), "b": np.array(-0.5)}
    loss, grads = compile_module(m).value_and_grad(params, {"r": data})
    ta, tb = (torch.tensor(params[k], requires_grad=True) for k in "ab")
    tr = torch.tensor(data)
    s, nll = ta.exp() + 0.0 * tr[:, 0], 0.0
    for k in range(steps):
        if k:
            s = 0.1 + torch.sigmoid(tb) * s + 0.2 * tr[:, k - 1] ** 2
        nll = nll + torch.log(s) + tr[:, k] ** 2 / s
    expected = nll.mean()
    expected.backward()
    assert np.isclose(loss, expected.item(), rtol=1e-12, atol=0)
    assert np.isclose(grads["a"], ta.grad.item(), rtol=1e-10, atol=0)
    assert np.isclose(grads["b"], tb.grad.item(), rtol=1e-10, atol=0)
