"""sg.solve, sg.inv, sg.slogdet and sg.det end to end, and the tape's torch.linalg ops.

A Gaussian process' negative log marginal likelihood with learned kernel
hyperparameters over a symbolic n, batched solves whose batch axes broadcast, a
full-covariance Gaussian through sg.inv, signed determinants: against PyTorch float64,
central differences and torch's double backward (Hessians); the command line, the
unroller's refusal, determinism and shape errors. The tape's solve, inv, slogdet, logdet
and det against torch, first and second derivatives, with its gradcheck.
"""

import math
import re
import warnings

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
    rel,
    run_cli,
)

import symgrad as sg
from symgrad import tape
from symgrad.cli import generate
from symgrad.unroll import UnrollError

torch = pytest.importorskip("torch")


def identity_like(r):
    """The identity of a square (n, n) expression's shape, from its triangles."""
    return sg.triu(sg.tril(sg.ones_like(r)))


# --------------------------------------------------------------------------- models


def gp_nll(hessian=False):
    """GP regression: 0.5 y^T K^-1 y + 0.5 log|K|, K an RBF kernel plus noise."""
    m = sg.Model("gp_nll", doc="GP negative log marginal likelihood.", hessian=hessian)
    X, y = m.input("X", ("n", 2)), m.input("y", ("n",))
    log_ell, log_sf = m.param("log_ell", ()), m.param("log_sf", ())
    log_noise = m.param("log_noise", ())
    r2 = sg.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    kernel = sg.exp(2 * log_sf) * sg.exp(-0.5 * r2 / sg.exp(2 * log_ell))
    K = m.let("K", kernel + sg.exp(2 * log_noise) * identity_like(r2))
    alpha = m.let("alpha", sg.solve(K, y))
    _, logdet = sg.slogdet(K)
    m.loss(0.5 * (y @ alpha) + 0.5 * logdet)
    return m


def gp_torch(p, i):
    X, y = i["X"], i["y"]
    r2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    kernel = torch.exp(2 * p["log_sf"]) * torch.exp(
        -0.5 * r2 / torch.exp(2 * p["log_ell"])
    )
    eye = torch.eye(len(y), dtype=torch.float64)
    K = kernel + torch.exp(2 * p["log_noise"]) * eye
    return 0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.logdet(K), {}


def gp_data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=n)
    params = {"log_ell": 0.2, "log_sf": 0.1, "log_noise": -1.2}
    return {k: np.array(v) for k, v in params.items()}, {"X": X, "y": y}


def batched_solves(hessian=False):
    """Solves whose batch axes broadcast: a (2, 1) batch against a (3,) one, a vector
    against a batch, one matrix against a batch, and (3, 3) right-hand sides for a
    (3,) batch of matrices, which NumPy reads as matrices (torch as vectors)."""
    m = sg.Model("batched_solves", hessian=hessian)
    A, B = m.param("A", (2, 1, "n", "n")), m.param("B", (3, "n", 2))
    v, C = m.param("v", ("n",)), m.param("C", ("n", "n"))
    D, E = m.param("D", (3, 3, 3)), m.param("E", (3, 3))
    W = m.input("W", (2, 3, "n", 2))
    X = m.output("X", sg.solve(A, B))
    x = m.output("x", sg.solve(A, v))
    Y = m.output("Y", sg.solve(C, B))
    Z = m.output("Z", sg.solve(D, E))
    m.loss(sg.sum(sg.sin(X) * W) + sg.sum(x**2) + sg.sum(Y * B) + sg.sum(Z**3))
    return m


def batched_torch(p, i):
    solve = torch.linalg.solve
    X, x = solve(p["A"], p["B"]), solve(p["A"], p["v"])
    Y, Z = solve(p["C"], p["B"]), solve(p["D"], p["E"].expand(3, 3, 3))
    loss = (X.sin() * i["W"]).sum() + (x**2).sum() + (Y * p["B"]).sum() + (Z**3).sum()
    return loss, {"X": X, "x": x, "Y": Y, "Z": Z}


def well_conditioned(rng, *shape):
    """Random matrices plus n on the diagonal: far from singular."""
    n = shape[-1]
    return rng.normal(size=shape) + n * np.eye(n)


def batched_data(n, seed=1):
    rng = np.random.default_rng(seed)
    params = {
        "A": well_conditioned(rng, 2, 1, n, n),
        "B": rng.normal(size=(3, n, 2)),
        "v": rng.normal(size=n),
        "C": well_conditioned(rng, n, n),
        "D": well_conditioned(rng, 3, 3, 3),
        "E": rng.normal(size=(3, 3)),
    }
    return params, {"W": rng.normal(size=(2, 3, n, 2))}


def full_covariance(hessian=False):
    """A full-covariance Gaussian's mean negative log-likelihood (constants dropped):
    the precision by sg.inv, the log-determinant by sg.slogdet."""
    m = sg.Model("full_cov_gaussian", hessian=hessian)
    x = m.input("x", ("batch", "d"))
    mu, L = m.param("mu", ("d",)), m.param("L", ("d", "d"))
    S = m.let("S", L @ L.T + 0.5 * identity_like(L))
    P = m.let("P", sg.inv(S))
    r = x - mu
    _, logdet = sg.slogdet(S)
    m.loss(0.5 * sg.mean(sg.sum((r @ P) * r, axis=-1)) + 0.5 * logdet)
    return m


def full_covariance_torch(p, i):
    L = p["L"]
    S = L @ L.T + 0.5 * torch.eye(L.shape[0], dtype=torch.float64)
    r = i["x"] - p["mu"]
    quad = ((r @ torch.linalg.inv(S)) * r).sum(-1)
    return 0.5 * quad.mean() + 0.5 * torch.linalg.slogdet(S).logabsdet, {}


def full_covariance_data(batch, d, seed=2):
    rng = np.random.default_rng(seed)
    params = {"mu": rng.normal(size=d), "L": rng.normal(size=(d, d))}
    return params, {"x": rng.normal(size=(batch, d))}


def signed_det(hessian=False):
    """A fixed 3 x 3 matrix whose determinant is negative: sign, log|det| and det,
    and a column of its inverse (a gradient that is not symmetric)."""
    m = sg.Model("signed_det", hessian=hessian)
    A = m.param("A", (3, 3))
    sign, logabsdet = sg.slogdet(A)
    m.output("sign", sign)
    det = m.output("det", sg.det(A))
    column = sg.sum(sg.inv(A)[:, 0])
    m.loss(2.0 * logabsdet + det**2 + sign * sg.sum(A) + column)
    return m


def signed_det_torch(p, i):
    sign, logabsdet = torch.linalg.slogdet(p["A"])
    det = torch.det(p["A"])
    column = torch.linalg.inv(p["A"])[:, 0].sum()
    loss = 2.0 * logabsdet + det**2 + sign * p["A"].sum() + column
    return loss, {"sign": sign, "det": det}


def negative_det_matrix(seed=3):
    A = well_conditioned(np.random.default_rng(seed), 3, 3)
    return A[::-1].copy()  # swapping rows 0 and 2 flips the sign: det < 0


@pytest.fixture(scope="module")
def gp_module():
    return compile_module(gp_nll())


# --------------------------------------------------------------------------- vs torch


@pytest.mark.parametrize("n", [5, 9])
def test_gp_marginal_likelihood_matches_torch(gp_module, n):
    params, inputs = gp_data(n, seed=n)
    check(gp_module, gp_torch, params, inputs)
    assert_matches_central_differences(gp_module, params, inputs)


def test_gp_generated_code_reads_like_numpy():
    """np.linalg calls on the model's names; each computed once per function, and the
    solve's adjoint a product with the inverse the log-determinant's needs anyway."""
    source, _ = generate(gp_nll())
    value_and_grad = source[source.index("def value_and_grad") :]
    value_and_grad = value_and_grad[: value_and_grad.index("\ndef ")]
    assert "alpha = np.linalg.solve(K, y)" in value_and_grad
    assert "np.linalg.slogdet(K)[1]" in value_and_grad
    assert value_and_grad.count("np.linalg.inv(K)") == 1
    assert "np.linalg.solve(K.T, " not in value_and_grad
    assert value_and_grad.count("np.linalg.solve(") == 1
    assert value_and_grad.count("np.linalg.slogdet(") == 1
    assert "# Model digest" in source and "Ops: forward" in source


def test_batched_solves_broadcast_like_numpy():
    module = compile_module(batched_solves())
    params, inputs = batched_data(4)
    check(module, batched_torch, params, inputs)
    assert_matches_central_differences(module, params, inputs)
    outputs, _ = module.forward(params, inputs)
    # NumPy's own reading: (3, 3) right-hand sides are matrices, 1-D ones a vector
    expected_Z = np.linalg.solve(params["D"], params["E"])
    assert rel(outputs["Z"], expected_Z) <= 1e-12
    assert rel(outputs["x"], np.linalg.solve(params["A"], params["v"])) <= 1e-12
    assert outputs["X"].shape == (2, 3, 4, 2) and outputs["x"].shape == (2, 1, 4)


def test_inv_in_a_model_shares_the_inverse():
    model = full_covariance()
    module = compile_module(model)
    for batch, d in ((6, 3), (4, 5)):
        params, inputs = full_covariance_data(batch, d, seed=batch)
        check(module, full_covariance_torch, params, inputs)
        assert_matches_central_differences(module, params, inputs)
    source, _ = generate(model)
    value_and_grad = source[source.index("def value_and_grad") :]
    # log|S|'s gradient inv(S)^T is the precision P the forward computed
    assert value_and_grad.count("np.linalg.inv(") == 1
    assert "P = np.linalg.inv(S)" in value_and_grad


def test_slogdet_of_a_negative_determinant():
    module = compile_module(signed_det())
    A = negative_det_matrix()
    assert np.linalg.det(A) < 0
    params = {"A": A}
    check(module, signed_det_torch, params, {})
    assert_matches_central_differences(module, params, {})
    outputs, _ = module.forward(params, {})
    assert outputs["sign"] == -1.0
    assert math.isclose(outputs["det"], np.linalg.det(A), rel_tol=1e-12)


# --------------------------------------------------------------------------- Hessians


@pytest.mark.parametrize(
    "build, reference, data",
    [
        (gp_nll, gp_torch, lambda: gp_data(6)),
        (batched_solves, batched_torch, lambda: batched_data(3)),
        (full_covariance, full_covariance_torch, lambda: full_covariance_data(5, 3)),
        (signed_det, signed_det_torch, lambda: ({"A": negative_det_matrix()}, {})),
    ],
    ids=["gp", "batched", "full_cov", "signed_det"],
)
def test_hessians_match_torch_double_backward(build, reference, data):
    module = compile_module(build(hessian=True))
    params, inputs = data()
    assert_second_order_agrees(module, reference, params, inputs, scaled=True)
    check(module, reference, params, inputs)


# --------------------------------------------------------------------------- CLI


GP_FILE = """
import symgrad as sg


def build():
    m = sg.Model("gp_file", doc="GP marginal likelihood from a file.")
    X, y = m.input("X", ("n", 1)), m.input("y", ("n",))
    log_ell, log_noise = m.param("log_ell", ()), m.param("log_noise", ())
    r2 = sg.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    eye = sg.triu(sg.tril(sg.ones_like(r2)))
    K = m.let("K", sg.exp(-0.5 * r2 / sg.exp(2 * log_ell)) + sg.exp(log_noise) * eye)
    sign, logdet = sg.slogdet(K)
    m.loss(0.5 * (y @ sg.solve(K, y)) + 0.5 * logdet)
    return m
"""

FIXED_FILE = """
import symgrad as sg


def build():
    m = sg.Model("fixed_inv")
    A = m.param("A", (3, 3))
    b = m.input("b", (3,))
    m.loss(sg.sum(sg.inv(A) @ b) + sg.det(A))
    return m
"""


def test_cli_builds_checks_and_is_deterministic(tmp_path):
    (tmp_path / "gp.py").write_text(GP_FILE)
    (tmp_path / "fixed.py").write_text(FIXED_FILE)
    outs = [tmp_path / "out", tmp_path / "out_seed"]
    for out, seed in zip(outs, ["0", "123"], strict=True):
        built = run_cli(
            ["build", "gp.py", "fixed.py", "--out", str(out)], tmp_path, seed
        )
        assert built.returncode == 0, built.stderr
        assert built.stdout.count("verified") == 2, built.stdout
    for name in ("gp_file.py", "fixed_inv.py"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
    checked = run_cli(["check", "gp.py", "fixed.py", "--out", str(outs[0])], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    gp_source = (outs[0] / "gp_file.py").read_text()
    assert (
        "np.linalg.slogdet(K)[1]" in gp_source and "np.linalg.solve(K, y)" in gp_source
    )
    # a model of small fixed sizes is not unrolled (np.linalg has no scalar form)
    assert "_value_and_grad_unrolled" not in (outs[0] / "fixed_inv.py").read_text()


def test_generated_source_is_deterministic():
    assert generate(gp_nll())[0] == generate(gp_nll())[0]
    assert generate(batched_solves())[0] == generate(batched_solves())[0]


# --------------------------------------------------------------------------- unrolling


def test_small_fixed_sizes_run_numpy_code():
    module = compile_module(signed_det())
    assert not [k for k in vars(module) if k.startswith("_value_and_grad_")]
    A = negative_det_matrix()
    check(module, signed_det_torch, {"A": A}, {})


@pytest.mark.parametrize(
    "build, sizes", [(gp_nll, {"n": 3}), (signed_det, {})], ids=["gp", "fixed"]
)
def test_unrolling_linear_algebra_is_refused(build, sizes):
    model = build()
    model.unroll(**sizes)
    with pytest.raises(UnrollError, match=r"\(np.linalg\) has no scalar form"):
        generate(model)


def test_cli_names_the_unroll_refusal(tmp_path):
    source = FIXED_FILE.replace("    return m", "    m.unroll()\n    return m")
    (tmp_path / "unrolled.py").write_text(source)
    built = run_cli(["build", "unrolled.py", "--out", str(tmp_path)], tmp_path)
    assert built.returncode == 1
    assert "cannot be unrolled" in built.stderr and "Traceback" not in built.stderr
    assert not (tmp_path / "fixed_inv.py").exists()


# --------------------------------------------------------------------------- shape errors


def test_non_square_matrices_are_refused():
    m = sg.Model("bad")
    W, v = m.param("W", (3, "n")), m.param("v", ("n",))
    for fn in (sg.inv, sg.slogdet, sg.det):
        with pytest.raises(sg.ShapeError, match=re.escape("W of shape (3, n)")):
            fn(W)
    with pytest.raises(
        sg.ShapeError, match=re.escape("v of shape (n,) is not a square")
    ):
        sg.inv(v)
    with pytest.raises(sg.ShapeError, match=re.escape("W of shape (3, n) is not")):
        sg.solve(W, v)


def test_mismatched_solve_names_both_shapes():
    m = sg.Model("bad")
    K, y = m.param("K", ("n", "n")), m.input("y", ("m",))
    B = m.input("B", (2, "n", 3))
    with pytest.raises(sg.ShapeError) as error:
        sg.solve(K, y)
    assert "K of shape (n, n)" in str(error.value)
    assert "y of shape (m,)" in str(error.value)
    with pytest.raises(sg.ShapeError, match=re.escape("B of shape (2, n, 3)")):
        sg.solve(m.param("M", ("m", "m")), B)
    A3 = m.param("A3", (3, "n", "n"))
    with pytest.raises(sg.ShapeError, match="do not broadcast") as error:
        sg.solve(A3, B)
    assert "A3 of shape (3, n, n)" in str(error.value)
    # NumPy 2: a 2-D b is a matrix, (n, 3) fits; its transpose does not
    assert sg.solve(K, B[0]).node.shape == K.node.shape[:1] + (3,)
    with pytest.raises(sg.ShapeError):
        sg.solve(K, B[0].T)


def test_index_arrays_are_not_matrices():
    m = sg.Model("bad")
    idx = m.input("idx", (3, 3), dtype="int64")
    with pytest.raises(sg.ModelError, match="int64"):
        sg.inv(idx)
    with pytest.raises(TypeError, match="sg expressions"):
        sg.solve(np.eye(3), m.param("b", (3,)))


# --------------------------------------------------------------------------- the tape


def spd(rng, *shape):
    a = rng.normal(size=shape)
    return a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])


TAPE_CASES = {
    "solve_vector": (lambda lib, A, b: lib.linalg.solve(A, b), [(3, 3), (3,)]),
    "solve_batched_broadcast": (
        lambda lib, A, B: lib.linalg.solve(A, B),
        [(2, 1, 3, 3), (4, 3, 2)],
    ),
    "solve_batch_of_vectors": (  # torch's rule: B of shape A.shape[:-1] is vectors
        lambda lib, A, B: lib.linalg.solve(A, B),
        [(2, 3, 3), (2, 3)],
    ),
    "solve_right": (
        lambda lib, A, B: lib.linalg.solve(A, B, left=False),
        [(3, 3), (2, 3)],
    ),
    "inv": (lambda lib, A: lib.linalg.inv(A), [(2, 3, 3)]),
    "inverse": (lambda lib, A: lib.inverse(A), [(3, 3)]),
    "slogdet": (lambda lib, A: lib.linalg.slogdet(A).logabsdet, [(2, 3, 3)]),
    "slogdet_function": (lambda lib, A: lib.slogdet(A)[1], [(3, 3)]),
    "logdet": (lambda lib, A: lib.logdet(A), ["spd"]),
    "det": (lambda lib, A: lib.linalg.det(A), [(2, 3, 3)]),
    "det_function": (lambda lib, A: lib.det(A), [(3, 3)]),
}


def tape_case_arrays(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    shapes = TAPE_CASES[name][1]
    arrays = []
    for k, shape in enumerate(shapes):
        if shape == "spd":
            arrays.append(spd(rng, 3, 3))
        elif k == 0:  # the matrix
            arrays.append(well_conditioned(rng, *shape))
        else:
            arrays.append(rng.normal(size=shape))
    if name.startswith("slogdet") or name.startswith("det"):
        arrays[0][..., [0, 1], :] = arrays[0][..., [1, 0], :]  # negative determinants
    return arrays


def first_and_second(lib, fn, arrays, seed=7):
    """fn's value, the gradient of sum(w * fn) and the gradient of <that, v>: by
    ``lib``'s backward and double backward (create_graph=True)."""
    rng = np.random.default_rng(seed)
    xs = [lib.tensor(a, requires_grad=True) for a in arrays]
    out = fn(lib, *xs)
    w = lib.tensor(rng.normal(size=tuple(out.shape)))
    grads = lib.autograd.grad((out * w).sum(), xs, create_graph=True)
    vs = [lib.tensor(rng.normal(size=a.shape)) for a in arrays]
    inner = sum((g * v).sum() for g, v in zip(grads, vs, strict=True))
    second = lib.autograd.grad(inner, xs)
    name = type(out.grad_fn).__name__
    numpy = [t.detach().numpy() for t in (out, *grads, *second)]
    return name, numpy


@pytest.mark.parametrize("name", TAPE_CASES)
def test_tape_linalg_matches_torch_to_second_order(name):
    fn = TAPE_CASES[name][0]
    arrays = tape_case_arrays(name)
    ours_name, ours = first_and_second(tape, fn, arrays)
    torch_name, theirs = first_and_second(torch, fn, arrays)
    if name != "solve_right":  # (the tape's is a transpose of the left solve)
        assert ours_name == torch_name
    for mine, expected in zip(ours, theirs, strict=True):
        assert rel(mine, expected) <= 1e-10, name


@pytest.mark.parametrize("name", ["solve_batched_broadcast", "inv", "slogdet", "det"])
def test_tape_gradcheck_first_and_second_derivatives(name):
    fn = TAPE_CASES[name][0]
    xs = [tape.tensor(a, requires_grad=True) for a in tape_case_arrays(name)]
    assert tape.autograd.gradcheck(lambda *ts: fn(tape, *ts), xs)
    rng = np.random.default_rng(0)
    w = tape.tensor(rng.normal(size=tuple(fn(tape, *xs).shape)))

    def gradient(*ts):  # the first derivatives, as a function to check again
        with tape.enable_grad():  # (gradcheck perturbs inputs under no_grad)
            ts = [t if t.requires_grad else t.detach().requires_grad_() for t in ts]
            out = (fn(tape, *ts) * w).sum()
            return tape.autograd.grad(out, ts, create_graph=True)

    assert tape.autograd.gradcheck(gradient, xs)


def test_tape_slogdet_is_a_named_pair_like_torch():
    A = negative_det_matrix()
    A_tape, A_torch = tape.tensor(A, requires_grad=True), torch.tensor(
        A, requires_grad=True
    )
    ours, theirs = tape.linalg.slogdet(A_tape), torch.linalg.slogdet(A_torch)
    assert ours._fields == ("sign", "logabsdet")
    assert ours.sign.item() == theirs.sign.item() == -1.0
    assert math.isclose(ours.logabsdet.item(), theirs.logabsdet.item(), rel_tol=1e-14)
    assert ours.sign.requires_grad == theirs.sign.requires_grad
    ours.sign.backward()  # the sign passes no gradient
    theirs.sign.backward()
    assert A_tape.grad is A_torch.grad is None
    # log det of a negative determinant is nan, in both
    assert math.isnan(tape.logdet(tape.tensor(A)).item())
    assert math.isnan(torch.logdet(torch.tensor(A)).item())


def torch_error(fn, *arrays):
    """The exception torch raises for fn(torch, *tensors), to compare with the tape's."""
    with pytest.raises(Exception) as error:
        fn(torch, *(torch.tensor(a) for a in arrays))
    return error.value


@pytest.mark.parametrize(
    "fn, arrays",
    [
        (lambda lib, A, b: lib.linalg.solve(A, b), [np.ones((2, 3)), np.ones(3)]),
        (lambda lib, A, b: lib.linalg.solve(A, b), [np.eye(3), np.ones(2)]),
        (lambda lib, A: lib.linalg.inv(A), [np.ones(3)]),
        (lambda lib, A: lib.linalg.inv(A), [np.ones((3, 3), dtype=np.int64)]),
        (
            lambda lib, A, b: lib.linalg.solve(A, b),
            [np.eye(3), np.ones(3, dtype=np.float32)],
        ),
    ],
    ids=["not_square", "incompatible", "vector", "integers", "dtypes"],
)
def test_tape_errors_are_torchs(fn, arrays):
    expected = torch_error(fn, *arrays)
    with pytest.raises(type(expected)) as error:
        fn(tape, *(tape.tensor(a) for a in arrays))
    assert str(error.value) == str(expected)


@pytest.mark.parametrize(
    "fn",
    [
        lambda lib, A: lib.linalg.inv(A),
        lambda lib, A: lib.linalg.solve(A, lib.ones(3, dtype=lib.float64)),
    ],
    ids=["inv", "solve"],
)
def test_tape_singular_matrix_raises_a_linalg_error(fn):
    singular = np.ones((3, 3))
    expected = torch_error(fn, singular)
    assert isinstance(expected, RuntimeError)
    with pytest.raises(RuntimeError, match="singular") as error:
        fn(tape, tape.tensor(singular))
    assert isinstance(error.value, tape.linalg.LinAlgError)


def test_reference_engine_runs_the_model_as_torch_does():
    """symgrad.reference on the tape and on torch itself agree with the module."""
    from symgrad.reference import reference

    params, inputs = batched_data(3)
    model = batched_solves()
    module = compile_module(model)
    loss, grads = module.value_and_grad(params, inputs)
    for engine in (tape, torch):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ref_loss, _, ref_grads = reference(model, params, inputs, engine)
        assert rel(loss, ref_loss) <= 1e-10
        for k in params:
            assert rel(grads[k], ref_grads[k]) <= 1e-10, k


def test_torch_method_spellings_name_numpys():
    A = sg.Model("hints").param("A", (3, 3))
    with pytest.raises(AttributeError, match=re.escape("sg.slogdet(x)[1]")):
        A.logdet()
    with pytest.raises(AttributeError, match=re.escape("sg.inv(x)")):
        A.inverse()
