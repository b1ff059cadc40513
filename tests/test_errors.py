"""Reliability and safety: bad declarations, bad model files, hostile names, bad data at
run time, numerical stability, and gradient conventions at non-differentiable points.

Every test here exercises one protection and would fail without it. Oracles are PyTorch
(when installed), the tape engine and the NumPy semantics of the operation; no expected
number is copied from symgrad's own output.
"""

import importlib.util
import re
import subprocess
import sys
import timeit
import warnings

import numpy as np
import pytest
import sympy as sp
from helpers import compile_module

import symgrad as sg
from symgrad import tape
from symgrad.cli import generate, main
from symgrad.compiler import compile_model
from symgrad.models import load
from symgrad.reference import reference
from symgrad.verify import relative_error, verify

try:
    import torch
except ImportError:  # pragma: no cover - torch is a test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs PyTorch")


def build(declare):
    """Compile (differentiate, optimize, print) a model declared by ``declare(m)``."""
    m = sg.Model("m")
    declare(m)
    return generate(m)


# --------------------------------------------------------------------------- shapes


def test_matmul_inner_dimension_mismatch_names_both_operands_and_shapes():
    m = sg.Model("m")
    x, W = m.input("x", ("batch", 3)), m.param("W", (2, 4))
    with pytest.raises(sg.ShapeError) as e:
        x @ W.T
    assert re.search(r"\bx\b.*\bW\b", str(e.value)), e.value
    assert "(batch, 3)" in str(e.value) and "(4, 2)" in str(e.value)


def test_vector_matmul_mismatch():
    m = sg.Model("m")
    w, u = m.param("w", (3,)), m.param("u", (4,))
    with pytest.raises(sg.ShapeError, match=r"w.*u.*\(3,\).*\(4,\)"):
        w @ u


def test_batched_matmul_mismatched_batch_dims():
    m = sg.Model("m")
    A, B = m.param("A", (2, 3, 4)), m.param("B", (5, 4, 2))
    with pytest.raises(sg.ShapeError, match=r"A.*B"):
        A @ B


@pytest.mark.parametrize(
    "shape_b, shown",
    [((4,), r"\(4,\)"), (("n", 3), r"\(n, 3\)"), ((2, 3, "batch"), r"\(2, 3, batch\)")],
)
def test_broadcast_mismatch_names_both_operands_and_shapes(shape_b, shown):
    m = sg.Model("m")
    x, b = m.input("x", ("batch", 3)), m.param("b", shape_b)
    for attempt in (lambda: x + b, lambda: b * x, lambda: sg.where(x > b, x, 0.0)):
        with pytest.raises(sg.ShapeError) as e:
            attempt()
        message = str(e.value)
        assert "x of shape (batch, 3)" in message, message
        assert re.search(r"\bb of shape " + shown, message), message


def test_operands_described_alike_are_not_merged_or_cancelled():
    m = sg.Model("m")
    x, w, v = m.input("x", ("batch", 3)), m.param("w", (4,)), m.param("v", (5,))
    # both operands of each formula print as <index>: they must stay two operands
    for formula, shown in [
        (lambda: sg.log(x[:, :2] * w[:2]), "log(<index>*<index>)"),
        (lambda: sg.exp(x[:, :2] - w[:2]), "exp(<index> - <index>)"),
    ]:
        with pytest.raises(sg.ShapeError) as e:
            formula() + v
        assert str(e.value).startswith(f"cannot broadcast {shown} of shape"), e.value


def test_where_branches_must_broadcast():
    m = sg.Model("m")
    x, v = m.input("x", (3,)), m.param("v", (2,))
    with pytest.raises(sg.ShapeError, match=r"x of shape \(3,\).*v of shape \(2,\)"):
        sg.where(x > 0, x, v)


def test_reshape_to_a_different_size_and_bad_axes():
    m = sg.Model("m")
    p = m.param("p", (2, 3))
    with pytest.raises(sg.ShapeError, match=r"p.*\(2, 3\).*\(4, 2\)"):
        p.reshape(4, 2)
    with pytest.raises(sg.ShapeError, match="axis 2 is out of range for p"):
        sg.sum(p, axis=2)
    with pytest.raises(sg.ShapeError, match="not a permutation"):
        p.transpose(0, 0)


def test_gather_needs_an_integer_index():
    m = sg.Model("m")
    E, idx = m.param("E", (5, 3)), m.input("idx", ("k",))
    with pytest.raises(sg.ShapeError, match="idx must be an int64 input"):
        E[idx]


def test_constant_index_arrays_are_a_clear_error():
    m = sg.Model("m")
    W = m.param("W", (2, 3))
    with pytest.raises(sg.ShapeError, match=r"unsupported index .*int64 input"):
        W[..., np.array(0)]
    for key in (
        np.array([[0, 1]]),
        ([0, 1], [1, 2]),
        [0.0, 1.0],
    ):  # (lists: test_porting)
        with pytest.raises(sg.ShapeError, match=r"one non-empty list of ints"):
            W[key]


@pytest.mark.parametrize("shape", [("batch", 3), (2, 3), ()])
def test_iterating_over_an_expression_is_a_clear_error(shape):
    m = sg.Model("m")
    x = m.param("x", shape)
    # iter() alone, not list() or builtin sum(): without the error, Python would iterate
    # by x[0], x[1], ... and a symbolic first axis would never end
    with pytest.raises(TypeError, match=r"cannot iterate over x.*sg\.sum\(x, axis=0\)"):
        iter(x)


# --------------------------------------------------------------------------- formulas

a, b, t = sp.symbols("a b t")


def test_undefined_function_in_from_expr():
    with pytest.raises(sg.UnsupportedError, match=r"undefined function f in f\(t\)"):
        sg.Model.from_expr("m", loss=sp.Function("f")(t) * a, params=[a], inputs=[t])


def test_undefined_function_in_elementwise():
    m = sg.Model("m")
    p = m.param("p", (3,))
    with pytest.raises(sg.UnsupportedError, match="undefined function g"):
        sg.elementwise(lambda z: sp.Function("g")(z) + z, p)


def test_symbol_that_is_neither_input_nor_param():
    with pytest.raises(sg.ModelError, match=r"undefined symbol\(s\) b in"):
        sg.Model.from_expr("m", loss=(a * t - b) ** 2, params=[a], inputs=[t])
    m = sg.Model("m")
    p = m.param("p", (3,))
    with pytest.raises(sg.ModelError, match=r"undefined symbol\(s\) b"):
        sg.elementwise(lambda z: z * b, p)


@pytest.mark.parametrize("fn", [sp.floor, sp.ceiling])
def test_floor_of_a_parameter_fails_at_build_naming_it(fn):
    def declare(m):
        p, x = m.param("p", (3,)), m.input("x", (3,))
        m.loss(sg.sum(sg.elementwise(lambda z: fn(z), p) * x))

    with pytest.raises(sg.UnsupportedError) as e:
        build(declare)
    # In the model's own names, not in internal placeholders such as _0.
    assert f"{fn.__name__}(p)" in str(e.value) and "_0" not in str(e.value), e.value

    loss = sp.floor(a) * t
    with pytest.raises(sg.UnsupportedError, match=r"floor\(a\)"):
        generate(sg.Model.from_expr("m2", loss=loss, params=[a], inputs=[t]))


def test_floor_of_data_alone_is_fine():
    """Only a derivative through floor is missing: floor of an input is plain data."""
    module = compile_module(
        sg.Model.from_expr("m", loss=(a - sp.floor(t)) ** 2, params=[a], inputs=[t])
    )
    data = np.array([0.5, 1.5, 2.7])
    loss, grads = module.value_and_grad({"a": 1.0}, {"t": data})
    assert np.isclose(loss, np.mean((1.0 - np.floor(data)) ** 2))
    assert np.isclose(grads["a"], np.mean(2 * (1.0 - np.floor(data))))


def test_piecewise_without_a_default_branch_is_refused():
    with pytest.raises(sg.ModelError, match=r"no value where no condition holds"):
        sg.Model.from_expr(
            "m", loss=sp.Piecewise((a * t, t > 0)), params=[a], inputs=[t]
        )
    m = sg.Model("m")
    p = m.param("p", (3,))
    with pytest.raises(sg.ModelError, match=r"end it with an \(expr, True\) branch"):
        sg.elementwise(lambda z: sp.Piecewise((z, z > 0), (-z, z < -1)), p)


def test_concatenate_and_stack_name_the_mismatch():
    m = sg.Model("m")
    x, y = m.param("x", (3, 2)), m.param("y", ("n", 4))
    with pytest.raises(
        sg.ShapeError, match=r"x of shape \(3, 2\) and y .* along axis 0"
    ):
        sg.concatenate([x, y])
    with pytest.raises(sg.ShapeError, match=r"stack x .* and y .* must be equal"):
        sg.stack([x, y], axis=1)
    with pytest.raises(sg.ShapeError, match="only one part may have a symbolic size"):
        sg.concatenate([y, y], axis=0)
    with pytest.raises(sg.ShapeError, match="0-d"):
        sg.concatenate([m.param("s"), m.param("t")])
    with pytest.raises(sg.ShapeError, match=r"\(int64\) and .*: the parts need one"):
        sg.stack([m.input("i", (3,), dtype="int64"), x[:, 0]])
    with pytest.raises(TypeError, match="sg expressions, got 1.0"):
        sg.concatenate([x, 1.0])


def test_numpy_functions_on_expressions_name_the_sg_twin():
    x = sg.Model("m").param("x", (3,))
    for fn, twin in [(np.clip, "sg.clip"), (np.concatenate, "sg.concatenate")]:
        with pytest.raises(TypeError, match=f"numpy.{fn.__name__} .*; use {twin}"):
            fn(x, 0, 1) if fn is np.clip else fn([x, x])
    with pytest.raises(TypeError, match="numpy.sort .*; use sg.sort"):
        np.sort(x)
    with pytest.raises(TypeError, match="use sg's functions"):
        np.unique(x)
    with pytest.raises(ValueError, match="sg.clip needs a_min or a_max"):
        sg.clip(x)


def test_numpy_ufuncs_on_expressions_name_the_sg_twin():
    x = sg.Model("m").param("x", (3,))
    for fn, hint in [(np.exp, "use sg.exp"), (np.log1p, "use sg.log1p")]:
        with pytest.raises(TypeError, match=f"numpy.{fn.__name__} .*; {hint}"):
            fn(x)
    with pytest.raises(TypeError, match="numpy.multiply .*; use sg's functions"):
        np.multiply(x, 2.0, out=np.ones(3))
    with pytest.raises(TypeError, match=r"NumPy array of shape \(3,\): .*m.input"):
        np.ones(3) * x


def test_an_expression_does_not_become_a_numpy_array():
    """np.asarray in NumPy or SciPy code (scipy.stats.norm.cdf(x)) has no values to take:
    once an object array, or an unrelated error deep inside SciPy."""
    x = sg.Model("m").param("x", (3,))
    for convert in (np.asarray, lambda e: np.array([e, e]), np.ascontiguousarray):
        with pytest.raises(
            TypeError, match="x is symbolic: NumPy and SciPy .*sg.stack"
        ):
            convert(x)


def test_numpy_scalars_combine_with_expressions_like_python_numbers():
    """np.float64(2) * x goes through NumPy's ufunc protocol before our operators."""

    def source(number):
        m = sg.Model("scaled")
        x = m.param("x", (3,))
        y = number(2) * x - number(1) / x + number(0.5) ** x
        m.loss(sg.sum(sg.where(number(0.25) < y, y, number(3) * y**2)))
        return generate(m)[0]

    expected = source(float)
    for number in (np.float64, np.float32, np.array):
        assert source(number) == expected, number


def test_unevaluated_derivative_and_unknown_functions():
    with pytest.raises(sg.UnsupportedError, match="Derivative"):
        sg.Model.from_expr("m", loss=sp.Derivative(a**2 * t, a), params=[a], inputs=[t])
    with pytest.raises(sg.UnsupportedError, match=r"gamma"):
        sg.Model.from_expr("m", loss=sp.gamma(a) * t, params=[a], inputs=[t])
    with pytest.raises(sg.UnsupportedError, match="infinite"):
        sg.Model.from_expr("m", loss=a * t + sp.oo, params=[a], inputs=[t])


def test_infinite_constants_suggest_a_finite_mask():
    m = sg.Model("m")
    s = m.param("s", (3,))
    for value in (-np.inf, float("nan")):
        with pytest.raises(sg.ModelError, match="non-finite constant.*-1e30"):
            sg.where(s > 0, s, value)


def test_from_expr_needs_symbols():
    with pytest.raises(sg.ModelError, match="must be SymPy symbols"):
        sg.Model.from_expr("m", loss=a**2, params=[a**2])


# --------------------------------------------------------------------------- names


def test_duplicate_names():
    m = sg.Model("m")
    p = m.param("p", ("n",))
    with pytest.raises(sg.ModelError, match="duplicate name 'p'"):
        m.input("p", (3,))
    with pytest.raises(sg.ModelError, match="duplicate name 'n'"):
        m.param("n", ())
    with pytest.raises(sg.ModelError, match="duplicate name 'p'"):
        m.let("p", p * 2)
    m.output("y", p * 3)
    with pytest.raises(sg.ModelError, match="duplicate name 'y'"):
        m.let("y", p * 4)
    m2 = sg.Model("m2")
    m2.param("x", (3,))
    with pytest.raises(sg.ModelError, match="duplicate name 'x'"):
        m2.input("q", ("x",))  # a dimension named like a parameter
    with pytest.raises(sg.ModelError, match="duplicate name 'a'"):
        sg.Model.from_expr("m", loss=a * t, params=[a], inputs=[a, t])


def test_a_value_takes_one_name_and_outputs_are_computed():
    """A let-named value returned as an output, and an output that simplifies to a
    param, are refused with what to write instead."""
    m = sg.Model("m")
    p = m.param("p", (3,))
    h = m.let("h", sg.sin(p))
    with pytest.raises(sg.ModelError, match="already named 'h'.*in place of the let"):
        m.output("o", h)
    with pytest.raises(sg.ModelError, match=r"is p itself.*p \* 1\.0"):
        m.output("y", p * 1.0)


@pytest.mark.parametrize(
    "declare",
    [
        lambda m, L: m.loss(sg.sum(L * m.param("w", ("batch",)))),
        lambda m, L: m.loss(sg.sum(sg.exp(L))),
        lambda m, L: m.loss(sg.mean(L)),
        lambda m, L: m.loss(sg.max(L)),
        lambda m, L: m.loss(sg.sum(L @ m.param("W", ("batch", 2)))),
        lambda m, L: m.loss(sg.sum(L[m.input("i", (2,), dtype="int64")])),
        lambda m, L: m.loss(L[0]),
    ],
    ids=["mul", "exp", "mean", "max", "matmul", "gather-source", "loss"],
)
def test_integer_input_used_as_a_differentiable_value(declare):
    m = sg.Model("m")
    labels = m.input("labels", ("batch",), dtype="int64")
    with pytest.raises(sg.ModelError, match="labels.*int64"):
        declare(m, labels)


def test_integer_inputs_still_index_and_compare():
    def declare(m):
        x, w = m.input("x", ("batch", 3)), m.param("w", (3,))
        labels = m.input("labels", ("batch",), dtype="int64")
        picked = sg.take_along_axis(x * w, labels[:, None], axis=1)
        m.loss(sg.sum(sg.where(labels[:, None] > 0, picked, 2 * picked)))

    source, _ = build(declare)
    assert "[np.arange(batch)[:, None], t1]" in source  # take_along_axis, fancy


def test_loss_must_be_a_scalar_and_must_exist():
    m = sg.Model("m")
    p = m.param("p", (3,))
    with pytest.raises(sg.ModelError, match=r"scalar, got shape \(3,\); reduce it"):
        m.loss(p * 2)
    m.output("y", p * 2)
    with pytest.raises(sg.ModelError, match="model 'm' has no loss"):
        compile_model(m)
    m.loss(sg.sum(p))
    with pytest.raises(sg.ModelError, match="already has a loss"):
        m.loss(sg.sum(p))


def test_a_loss_of_one_element_is_a_scalar_as_for_torch_backward():
    """torch's loss.backward() takes a (1,) tensor (an MSE with dim=0 over one output)."""
    torch = pytest.importorskip("torch")
    m = sg.Model("one_element_loss")
    y, w = m.input("y", ("B", 1)), m.param("w", (1,))
    m.loss(sg.mean((y - w) ** 2, axis=0))
    y_, w_ = np.array([[0.5], [2.0], [-1.0]]), np.array([0.25])
    loss, grads = compile_module(m).value_and_grad({"w": w_}, {"y": y_})
    w_t = torch.tensor(w_, requires_grad=True)
    expected = ((torch.tensor(y_) - w_t) ** 2).mean(0)
    expected.backward()
    assert loss.shape == () and np.isclose(loss, expected.item(), rtol=1e-14)
    assert np.allclose(grads["w"], w_t.grad.numpy(), rtol=1e-14)


def test_max_of_expressions_suggests_sg_maximum():
    w = sg.Model("m").param("w", (3,))
    with pytest.raises(TypeError, match=r"sg.maximum\(a, b\) for max\(a, b\)"):
        max(w, 0)


# --------------------------------------------------------------------------- the CLI

BAD_MODELS = {
    "syntax": ("def build(:\n    pass\n", "syntax error at line 1"),
    "no_build": ("import symgrad as sg\nx = 1\n", "defines no build()"),
    "not_a_model": ("def build():\n    return 42\n", "returned int"),
    "shape": (
        "import symgrad as sg\n\ndef build():\n    m = sg.Model('m')\n"
        "    x, W = m.input('x', ('batch', 3)), m.param('W', (2, 4))\n"
        "    m.loss(sg.sum(x @ W.T))\n    return m\n",
        "inner dimensions differ",
    ),
    "undefined_function": (
        "import sympy as sp\nimport symgrad as sg\n\ndef build():\n"
        "    a, t = sp.symbols('a t')\n"
        "    return sg.Model.from_expr('m', loss=sp.Function('f')(a * t),"
        " params=[a], inputs=[t])\n",
        "undefined function f",
    ),
    "floor": (
        "import sympy as sp\nimport symgrad as sg\n\ndef build():\n"
        "    a, t = sp.symbols('a t')\n"
        "    return sg.Model.from_expr('m', loss=sp.floor(a) * t, params=[a], inputs=[t])\n",
        r"floor(a)",
    ),
    "no_loss": (
        "import symgrad as sg\n\ndef build():\n    m = sg.Model('m')\n"
        "    m.output('y', m.param('p', (2,)) * 2)\n    return m\n",
        "has no loss",
    ),
    "bad_name": (
        "import symgrad as sg\n\ndef build():\n    m = sg.Model('m')\n"
        "    m.param('x; import os', (2,))\n    return m\n",
        "not a Python identifier",
    ),
}


@pytest.mark.parametrize("command", ["build", "check", "verify"])
@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_cli_reports_a_bad_model_file_in_one_line(tmp_path, capsys, case, command):
    source, expected = BAD_MODELS[case]
    path = tmp_path / f"{case}.py"
    path.write_text(source)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command != "verify" else []
    status = main([command, str(path), *extra])
    captured = capsys.readouterr()
    assert status != 0
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("symgrad: error:") and expected in captured.err
    assert "Traceback" not in captured.out + captured.err
    assert not out.exists()  # nothing written


def test_cli_reports_a_missing_file_in_one_line(tmp_path, capsys):
    assert main(["build", str(tmp_path / "nope.py"), "--out", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


def test_cli_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "shape.py"
    path.write_text(BAD_MODELS["shape"][0])
    with pytest.raises(sg.ShapeError):
        main(["--debug", "build", str(path), "--out", str(tmp_path / "out")])


def test_cli_subprocess_exit_status_and_single_line(tmp_path):
    path = tmp_path / "shape.py"
    path.write_text(BAD_MODELS["shape"][0])
    command = [sys.executable, "-m", "symgrad.cli", "build", str(path)]
    run = subprocess.run(
        [*command, "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "inner dimensions differ" in run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""
    debug = subprocess.run(
        [sys.executable, "-m", "symgrad.cli", "--debug", *command[3:]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


SELF_PAIRS = """
import symgrad as sg


def build():
    m = sg.Model("self_pairs")
    pos = m.param("pos", (1, 2))  # one particle: every random pair has i == j
    i = m.input("i", ("pairs",), dtype="int64")
    j = m.input("j", ("pairs",), dtype="int64")
    m.loss(sg.sum(sg.sqrt(sg.sum((pos[i] - pos[j]) ** 2, axis=-1))))
    return m
"""


@pytest.mark.parametrize("command", ["build", "verify"])
def test_cli_without_finite_sample_data_asks_for_a_sampler(tmp_path, capsys, command):
    path = tmp_path / "self_pairs.py"
    path.write_text(SELF_PAIRS)
    out = tmp_path / "out"
    extra = ["--out", str(out)] if command == "build" else []
    assert main([command, str(path), *extra]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Warning" not in err, err
    assert "non-finite loss or gradient" in err and "m.sampler = fn" in err, err
    assert not out.exists()


def test_verify_names_a_sampler_that_gives_non_finite_data():
    m = sg.Model("m")
    x, p = m.input("x", ("n",)), m.param("p")
    m.loss(p * sg.sum(sg.log(x)))
    m.sampler = lambda rng, n: ({"p": np.array(1.0)}, {"x": np.zeros(n)})
    module = compile_module(m)
    with pytest.raises(sg.ModelError, match="its sampler gave a non-finite loss"):
        verify(m, module)


# --------------------------------------------------------------------------- injection

HOSTILE = [
    "x; import os",
    "__import__('os')",
    "__class__",
    "__init__",
    "class",
    "lambda",
    "match",
    "print",
    "open",
    "exec",
    "t1",
    "t12",
    "grad_x",
    "_c0",
    "_private",
    "np",
    "loss",
    "params",
    "x\ny",
    "a b",
    "",
    "1x",
    "x\u00e9",  # not ASCII
    "\uff58",  # fullwidth x: NFKC-normalised to "x" by the parser
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_rejected_everywhere(name):
    declarations = [
        lambda m: m.param(name, (3,)),
        lambda m: m.input(name, (3,)),
        lambda m: m.param("p", (name, 3)),
        lambda m: m.let(name, m.param("p", (3,)) * 2),
        lambda m: m.output(name, m.param("p", (3,)) * 2),
    ]
    for declare in declarations:
        with pytest.raises(sg.ModelError) as e:
            declare(sg.Model("m"))
        assert repr(name) in str(e.value)
    with pytest.raises(sg.ModelError):
        sg.Model(name)
    symbol = sp.Symbol(name)
    with pytest.raises(sg.ModelError):
        sg.Model.from_expr("m", loss=symbol**2, params=[symbol])


@pytest.mark.parametrize(
    "dim",
    [
        sp.Symbol("__import__('os').system('touch PWNED')", integer=True) + 1,
        2 * sp.Symbol("exec('1')", positive=True),
        sp.Symbol("n") ** 2,
        sp.Symbol("n") - 1,
    ],
)
def test_formula_dimensions_are_rejected(dim, tmp_path):
    """Declared dims are ints or names: a formula could smuggle code into the module."""
    m = sg.Model("m")
    with pytest.raises(sg.ModelError, match="dimension"):
        m.param("p", (dim,))


def test_sympy_symbol_dimension_is_the_models_own_dimension():
    m = sg.Model("m")
    p = m.param("p", (sp.Symbol("n"),))
    q = m.param("q", ("n",))
    m.loss(sg.sum(p * q))  # the same dim, whatever assumptions the symbol carried
    module = compile_module(m)
    loss, grads = module.value_and_grad({"p": np.ones(4), "q": np.arange(4.0)}, {})
    assert loss == 6.0 and np.array_equal(grads["p"], np.arange(4.0))


def test_reshape_cannot_introduce_new_dimensions():
    m = sg.Model("m")
    p = m.param("p", ("n",))
    evil = sp.Symbol(
        "__import__('os').system('touch PWNED')", integer=True, positive=True
    )
    for shape in [(evil, p.node.shape[0] / evil), ("k",), ("n", "k")]:
        with pytest.raises(sg.ShapeError, match="reshape"):
            sg.reshape(p, shape)
    assert sg.reshape(p, (1, "n")).shape == (1, "n")


DOCS = [
    '"""; import os; os.system("touch PWNED"); """',
    "'''; import os; os.system('touch PWNED'); '''",
    'ends with a quote"',
    "ends with a backslash \\",
    "a backslash \\n that is not a newline, and \\x41",
    "two\nlines",
    "it's",
    "tab\tand \x00 nul and \x1b escape",
    "{{ jinja }} {% if x %} {# comment #}",
    "\\N{BULLET} \u2022 \U0001f600 non-ASCII",
    "# not a comment\n\nimport os",
]


@pytest.mark.parametrize("doc", DOCS)
def test_docstrings_are_escaped(doc, tmp_path, monkeypatch):
    """Import the written module: it must run nothing but its own definitions."""
    monkeypatch.chdir(tmp_path)
    m = sg.Model("hostile_doc", doc=doc)
    p = m.param("p", (2,))
    m.loss(sg.sum(p * p))
    source, _ = generate(m)
    path = tmp_path / "hostile_doc.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("hostile_doc", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert not (tmp_path / "PWNED").exists()
    assert module.__doc__ == doc.strip()
    public = {k for k in vars(module) if not k.startswith("__")}
    public -= {"math", "_value_and_grad_unrolled"}  # a model this small is unrolled
    assert public == {
        "np", "PARAMS", "INPUTS", "OUTPUTS", "_unpack", "_wrong_keys", "_not_mapping", "_array",
        "_float64", "_bad",
        "forward", "backward", "value_and_grad", "init_params",
    }  # fmt: skip


# --------------------------------------------------------------------------- bad data


@pytest.fixture(scope="module")
def seed_mlp():
    return compile_module(load("seed_mlp"))


@pytest.fixture(scope="module")
def classifier():
    m = sg.Model("classifier")
    x = m.input("x", ("batch", 4))
    labels = m.input("labels", ("batch",), dtype="int64")
    W = m.param("W", (3, 4))
    log_probs = sg.log_softmax(x @ W.T, axis=-1)
    m.loss(-sg.mean(sg.take_along_axis(log_probs, labels[:, None], axis=1)))
    return compile_module(m)


def mlp_data(batch=4, target_batch=None):
    rng = np.random.default_rng(0)
    target_batch = batch if target_batch is None else target_batch
    return {
        "x": rng.standard_normal((batch, 3)),
        "target": rng.standard_normal((target_batch, 1)),
    }


@pytest.mark.parametrize("entry", ["value_and_grad", "forward"])
def test_missing_and_extra_keys_raise_key_error_naming_them(seed_mlp, entry):
    run = getattr(seed_mlp, entry)
    params, inputs = seed_mlp.init_params(), mlp_data()
    with pytest.raises(KeyError, match=r"inputs: missing \['target'\]"):
        run(params, {"x": inputs["x"]})
    with pytest.raises(KeyError, match=r"inputs: .*unexpected \['z'\]"):
        run(params, {**inputs, "z": inputs["x"]})
    del params["b2"]
    with pytest.raises(KeyError, match=r"params: missing \['b2'\]"):
        run(params, inputs)


def test_a_model_without_inputs_refuses_any():
    m = sg.Model("no_inputs")
    m.loss(sg.sum(m.param("x", (2,)) ** 2))
    module = compile_module(m)
    for run in (module.value_and_grad, module.forward):
        with pytest.raises(KeyError, match=r"inputs: missing \[\], unexpected \['y'\]"):
            run({"x": np.ones(2)}, {"y": 1.0})
        assert run({"x": np.ones(2)}, {})[0]  # (a loss, or outputs with one)


BAD_ARRAYS = [
    # (which dict, name, array, pieces the message must contain)
    ("inputs", "x", np.ones(3), ["inputs['x']", "(batch, 3)", "shape (3,)"]),
    ("inputs", "x", np.ones((4, 2)), ["inputs['x']", "(batch, 3)", "(4, 2)"]),
    ("inputs", "x", np.ones((4, 3, 1)), ["inputs['x']", "(batch, 3)", "(4, 3, 1)"]),
    ("inputs", "target", np.ones(4), ["inputs['target']", "(batch=4, 1)", "(4,)"]),
    (
        "inputs",
        "target",
        np.ones((5, 1)),
        ["inputs['target']", "(batch=4, 1)", "(5, 1)"],
    ),
    ("inputs", "x", np.ones((4, 3), dtype=np.int64), ["float", "int64"]),
    ("inputs", "x", np.ones((4, 3), dtype=bool), ["float", "bool"]),
    ("inputs", "x", np.ones((4, 3), dtype=complex), ["float", "complex128"]),
    ("inputs", "x", np.full((4, 3), None), ["float", "object"]),
    ("params", "W1", np.ones((3, 2)), ["params['W1']", "(2, 3)", "(3, 2)"]),
    ("params", "b2", np.float64(1.0), ["params['b2']", "(1,)", "shape ()"]),
    ("params", "W2", np.ones((1, 2), dtype=np.int32), ["params['W2']", "int32"]),
]


@pytest.mark.parametrize("group, name, array, pieces", BAD_ARRAYS)
def test_bad_arrays_raise_value_error_naming_array_and_shapes(
    seed_mlp, group, name, array, pieces
):
    data = {"params": seed_mlp.init_params(), "inputs": mlp_data()}
    data[group][name] = array
    for entry in (seed_mlp.value_and_grad, seed_mlp.forward):
        with pytest.raises(ValueError) as e:
            entry(data["params"], data["inputs"])
        for piece in pieces:
            assert piece in str(e.value), e.value


def test_integer_inputs_must_be_integer_arrays(classifier):
    W = np.ones((3, 4))
    x = np.ones((2, 4))
    with pytest.raises(ValueError, match=r"inputs\['labels'\].*integer.*float64"):
        classifier.value_and_grad({"W": W}, {"x": x, "labels": np.array([0.0, 1.0])})
    with pytest.raises(ValueError, match=r"inputs\['labels'\].*\(batch=2,\).*\(3,\)"):
        classifier.value_and_grad({"W": W}, {"x": x, "labels": np.array([0, 1, 2])})
    loss, _ = classifier.value_and_grad({"W": W}, {"x": x, "labels": np.array([0, 2])})
    assert np.isclose(loss, np.log(3))  # equal logits: -log(1/3)


def test_valid_variants_are_accepted(seed_mlp):
    """Checks reject bad data only: lists, other batch sizes and float32 still work."""
    params = seed_mlp.init_params()
    for batch in (1, 7):
        inputs = mlp_data(batch)
        expected, _ = seed_mlp.value_and_grad(params, inputs)
        listed = {k: v.tolist() for k, v in inputs.items()}
        assert seed_mlp.value_and_grad(params, listed)[0] == expected
    narrow = {k: v.astype(np.float32) for k, v in mlp_data(3).items()}
    assert np.isfinite(seed_mlp.value_and_grad(params, narrow)[0])


def test_cost_of_runtime_checks(seed_mlp, capsys):
    """Measure (not assert) what _unpack's checks cost on seed_mlp at batch 1."""
    params, inputs = seed_mlp.init_params(), mlp_data(1)
    checked = seed_mlp._unpack

    def unchecked(p, i):  # the same arrays and dims, without a single check
        return (p["W1"], p["b1"], p["W2"], p["b2"], i["x"], i["target"], len(i["x"]))

    assert [np.shape(v) for v in unchecked(params, inputs)] == [
        np.shape(v) for v in checked(params, inputs)
    ]
    n = 20000

    def best(stmt):
        return min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e6

    with_checks = best(lambda: seed_mlp.value_and_grad(params, inputs))
    unpack_alone = best(lambda: checked(params, inputs))
    seed_mlp._unpack = unchecked
    try:
        without = best(lambda: seed_mlp.value_and_grad(params, inputs))
        assert seed_mlp.value_and_grad(params, inputs)[0] == pytest.approx(
            seed_mlp.forward(params, inputs)[0]["loss"]
        )
    finally:
        seed_mlp._unpack = checked
    with capsys.disabled():
        print(
            f"\nseed_mlp value_and_grad, batch 1: {with_checks:.1f} us with checks, "
            f"{without:.1f} us without ({with_checks - without:+.1f} us, "
            f"{(with_checks - without) / without:+.0%}); _unpack alone {unpack_alone:.1f} us"
        )


# --------------------------------------------------------------------------- stability

EXTREME = np.array(
    [[1000.0, -1000.0, 0.0], [0.0, 0.0, 0.0], [-1000.0, -1000.0, 1000.0]]
)
WEIGHTS = np.array([[1.0, -2.0, 0.5], [0.3, 0.2, -0.1], [2.0, 1.0, -1.0]])
LABELS = np.array([1, 0, 2])
TARGETS = np.array([[1.0, 0.0, 0.5], [0.3, 1.0, 0.0], [0.0, 1.0, 1.0]])


def strict():
    """Overflow, invalid operations and division by zero raise; underflow to 0 is fine."""
    return np.errstate(over="raise", invalid="raise", divide="raise", under="ignore")


# name -> (declaration of the loss in sg, the same loss in a torch-like library)
STABLE = {
    "sigmoid": (
        lambda z, w, lab, y: sg.sum(sg.sigmoid(z) * w),
        lambda L, z, w, lab, y: (L.sigmoid(z) * w).sum(),
    ),
    "softplus": (
        lambda z, w, lab, y: sg.sum(sg.softplus(z) * w),
        lambda L, z, w, lab, y: (L.nn.functional.softplus(z) * w).sum(),
    ),
    "logsumexp": (
        lambda z, w, lab, y: sg.sum(sg.logsumexp(z, axis=1) * w[0]),
        lambda L, z, w, lab, y: (L.logsumexp(z, dim=1) * w[0]).sum(),
    ),
    "logsumexp_all": (
        lambda z, w, lab, y: sg.logsumexp(z) * 3,
        lambda L, z, w, lab, y: L.logsumexp(z, dim=(0, 1)) * 3,
    ),
    "log_softmax": (
        lambda z, w, lab, y: sg.sum(sg.log_softmax(z, axis=1) * w),
        lambda L, z, w, lab, y: (L.log_softmax(z, dim=1) * w).sum(),
    ),
    "softmax": (
        lambda z, w, lab, y: sg.sum(sg.softmax(z, axis=0) * w),
        lambda L, z, w, lab, y: (L.softmax(z, dim=0) * w).sum(),
    ),
    "cross_entropy": (
        lambda z, w, lab, y: -sg.mean(
            sg.take_along_axis(sg.log_softmax(z, axis=1), lab[:, None], axis=1)
        ),
        lambda L, z, w, lab, y: L.nn.functional.cross_entropy(z, lab),
    ),
    "bce_with_logits": (  # the form logistic_regression uses
        lambda z, w, lab, y: sg.mean(sg.softplus(z) - y * z),
        lambda L, z, w, lab, y: L.nn.functional.binary_cross_entropy_with_logits(z, y),
    ),
    # Fused chains of stable functions: simplification must keep them stable.
    "sigmoid_of_minus": (
        lambda z, w, lab, y: sg.sum((1 - sg.sigmoid(-z)) * sg.sigmoid(z) * w),
        lambda L, z, w, lab, y: ((1 - L.sigmoid(-z)) * L.sigmoid(z) * w).sum(),
    ),
    "softplus_difference": (  # = z, mathematically
        lambda z, w, lab, y: sg.sum((sg.softplus(z) - sg.softplus(-z)) * w),
        lambda L, z, w, lab, y: (
            (L.nn.functional.softplus(z) - L.nn.functional.softplus(-z)) * w
        ).sum(),
    ),
    "log_softmax_scaled": (
        lambda z, w, lab, y: sg.sum(sg.log_softmax(2 * z - 1, axis=-1) ** 2 * w),
        lambda L, z, w, lab, y: (L.log_softmax(2 * z - 1, dim=-1) ** 2 * w).sum(),
    ),
}


def stable_model(name):
    m = sg.Model(f"stable_{name}")
    z = m.param("z", (3, 3))
    w = m.input("w", (3, 3))
    labels = m.input("labels", (3,), dtype="int64")
    y = m.input("y", (3, 3))
    m.loss(STABLE[name][0](z, w, labels, y))
    return m


def library_loss_and_grad(library, name, z):
    tensor = library.tensor
    zt = tensor(z, dtype=library.float64, requires_grad=True)
    loss = STABLE[name][1](
        library, zt, tensor(WEIGHTS), tensor(LABELS), tensor(TARGETS)
    )
    loss.backward()
    return loss.item(), zt.grad.numpy()


def inputs_for_stability():
    return {"w": WEIGHTS, "labels": LABELS, "y": TARGETS}


@pytest.mark.parametrize(
    "z", [EXTREME, -EXTREME, np.zeros((3, 3))], ids=["+", "-", "0"]
)
@pytest.mark.parametrize("name", sorted(STABLE))
def test_generated_code_is_stable(name, z):
    module = compile_module(stable_model(name))
    with strict(), warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = module.value_and_grad({"z": z}, inputs_for_stability())
        outputs, cache = module.forward({"z": z}, inputs_for_stability())
        backward = module.backward(cache, grad_loss=2.0)["z"]
    assert np.isfinite(loss) and np.all(np.isfinite(grads["z"]))
    assert relative_error(backward, 2 * grads["z"]) <= 1e-14
    assert relative_error(outputs["loss"], loss) <= 1e-14  # value_and_grad is unrolled
    oracle = torch if torch is not None else tape
    expected_loss, expected_grad = library_loss_and_grad(oracle, name, z)
    assert relative_error(loss, expected_loss) <= 1e-12
    assert relative_error(grads["z"], expected_grad) <= 1e-12


@pytest.mark.parametrize(
    "z", [EXTREME, -EXTREME, np.zeros((3, 3))], ids=["+", "-", "0"]
)
@pytest.mark.parametrize("name", sorted(STABLE))
def test_tape_engine_is_stable(name, z):
    with strict(), warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = library_loss_and_grad(tape, name, z)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    if torch is not None:
        expected_loss, expected_grad = library_loss_and_grad(torch, name, z)
        assert relative_error(loss, expected_loss) <= 1e-12
        assert relative_error(grad, expected_grad) <= 1e-12


def test_reference_interpreter_is_stable():
    """symgrad verify runs the declared model on the tape: that must be stable too."""
    for name in STABLE:
        with strict(), warnings.catch_warnings():
            warnings.simplefilter("error")
            loss, _, grads = reference(
                stable_model(name), {"z": EXTREME}, inputs_for_stability()
            )
        assert np.isfinite(loss) and np.all(np.isfinite(grads["z"])), name


def test_a_user_formula_is_computed_as_written():
    """sg.elementwise(log(1 + exp(z))) is *not* rewritten into the stable softplus: SymPy
    derives its gradient, exp(z) / (1 + exp(z)), and both overflow for large z, exactly
    as the same formula written in PyTorch does. Use sg.softplus for a stable one."""
    m = sg.Model("naive")
    z = m.param("z", (3,))
    m.loss(sg.sum(sg.elementwise(lambda u: sp.log(1 + sp.exp(u)), z)))
    module = compile_module(m)
    with strict(), pytest.raises(FloatingPointError, match="overflow"):
        module.value_and_grad({"z": np.array([1000.0, 0.0, -1000.0])}, {})
    moderate = np.array([30.0, 0.0, -30.0])
    loss, grads = module.value_and_grad({"z": moderate}, {})
    exact = np.logaddexp(0, moderate)
    np.testing.assert_allclose(loss, exact.sum(), rtol=1e-14)
    np.testing.assert_allclose(grads["z"], 1 / (1 + np.exp(-moderate)), rtol=1e-14)
    if torch is not None:
        zt = torch.tensor(
            [1000.0, 0.0, -1000.0], dtype=torch.float64, requires_grad=True
        )
        torch.log(1 + torch.exp(zt)).sum().backward()
        assert not torch.isfinite(zt.grad).all()  # the same formula in torch: nan


# --------------------------------------------------------------------------- kinks

KINKS = np.array([[0.0, 1.5, 1.5], [0.0, 0.0, -2.0], [3.0, -0.0, 3.0]])

# name -> (sg loss, torch-like loss): points with exact zeros and exact ties
CONVENTIONS = {
    "abs": (
        lambda p, w: sg.sum(sg.abs(p) * w),
        lambda L, p, w: (L.abs(p) * w).sum(),
    ),
    "relu": (
        lambda p, w: sg.sum(sg.relu(p) * w),
        lambda L, p, w: (L.relu(p) * w).sum(),
    ),
    "max_all": (lambda p, w: sg.max(p) * 2, lambda L, p, w: L.amax(p) * 2),
    "max_axis0": (
        lambda p, w: sg.sum(sg.max(p, axis=0) * w[0]),
        lambda L, p, w: (L.amax(p, dim=0) * w[0]).sum(),
    ),
    "max_axis1_keepdims": (
        lambda p, w: sg.sum(sg.max(p, axis=1, keepdims=True) * w),
        lambda L, p, w: (L.amax(p, dim=1, keepdim=True) * w).sum(),
    ),
    "where_at_equality": (
        lambda p, w: sg.sum(sg.where(p > 0, p * w, 2 * p)),
        lambda L, p, w: L.where(p > 0, p * w, 2 * p).sum(),
    ),
    "sign": (
        lambda p, w: sg.sum(sg.elementwise(lambda u: sp.sign(u) * (u + 1), p) * w),
        lambda L, p, w: (L.sign(p) * (p + 1) * w).sum(),
    ),
}


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_gradients_at_kinks_follow_pytorch(name):
    declare, same = CONVENTIONS[name]
    m = sg.Model(f"kink_{name}")
    p, w = m.param("p", (3, 3)), m.input("w", (3, 3))
    m.loss(declare(p, w))
    loss, grads = compile_module(m).value_and_grad({"p": KINKS}, {"w": WEIGHTS})
    for library in [tape] + ([torch] if torch is not None else []):
        pt = library.tensor(KINKS, dtype=library.float64, requires_grad=True)
        expected = same(library, pt, library.tensor(WEIGHTS))
        expected.backward()
        assert loss == pytest.approx(expected.item(), rel=1e-14)
        np.testing.assert_allclose(grads["p"], pt.grad.numpy(), rtol=1e-14, atol=0)


@needs_torch
@pytest.mark.parametrize("fn", [sp.Max, sp.Min])
def test_elementwise_max_and_min_split_ties_like_torch_maximum(fn):
    m = sg.Model("ties")
    p, q, w = m.param("p", (3, 3)), m.param("q", (3, 3)), m.input("w", (3,))
    m.loss(sg.sum(sg.elementwise(lambda u, v: fn(u, v) + 2 * fn(v, 0), p, q) * w))
    named = (
        sg.maximum if fn is sp.Max else sg.minimum
    )  # the same, spelled as NumPy does
    m.output("named", named(p, q) + 2 * named(q, 0))
    params, inputs = {"p": KINKS, "q": KINKS.T.copy()}, {"w": WEIGHTS[0]}
    loss, grads = compile_module(m).value_and_grad(params, inputs)
    pt, qt = (torch.tensor(params[k], requires_grad=True) for k in "pq")
    pick = torch.maximum if fn is sp.Max else torch.minimum
    zero = torch.zeros((), dtype=torch.float64)
    out = ((pick(pt, qt) + 2 * pick(qt, zero)) * torch.tensor(WEIGHTS[0])).sum()
    out.backward()
    assert loss == pytest.approx(out.item(), rel=1e-14)
    outputs, _ = compile_module(m).forward(params, inputs)
    expected = pick(pt, qt) + 2 * pick(qt, zero)
    np.testing.assert_allclose(outputs["named"], expected.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(grads["p"], pt.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(grads["q"], qt.grad.numpy(), rtol=1e-14)
    _, _, ref = reference(m, params, inputs, engine=torch)  # the verify oracle agrees
    np.testing.assert_allclose(ref["p"], pt.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(ref["q"], qt.grad.numpy(), rtol=1e-14)


@pytest.mark.parametrize("name", ["os", "json", "numpy", "symgrad"])
def test_model_names_that_would_shadow_a_module_are_rejected(name):
    with pytest.raises(sg.ModelError, match="shadow"):
        sg.Model(name)


def test_an_import_error_in_a_model_file_names_the_file(tmp_path, capsys):
    path = tmp_path / "broken_import.py"
    path.write_text("import not_a_module_anywhere\n\ndef build():\n    pass\n")
    assert main(["build", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "broken_import.py" in err and "not_a_module_anywhere" in err
