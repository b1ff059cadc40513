"""symgrad.tape ops against PyTorch (float64): values and gradients agree to 1e-12.

Each case is a function `fn(lib, *leaves)` written once and run with lib = symgrad.tape
and lib = torch; the two APIs share names, so the same code drives both engines. The
backward pass starts from fixed random weights on every output element, so every
gradient entry is exercised. The tape side runs with NumPy warnings turned into errors.
"""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from symgrad import tape

torch = pytest.importorskip("torch")

TOL = dict(rtol=1e-12, atol=1e-12)


pytestmark = pytest.mark.usefixtures("torch_float64")


def _run(lib, fn, arrays):
    leaves = [lib.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = fn(lib, *leaves)
    outs = out if isinstance(out, tuple) else (out,)
    weighted = [
        (o * lib.tensor(np.random.default_rng(i).standard_normal(o.shape))).sum()
        for i, o in enumerate(outs)
        if o.requires_grad
    ]
    if weighted:
        sum(weighted[1:], weighted[0]).backward()
    values = [o.detach().numpy() for o in outs]
    grads = [t.grad.numpy() if t.grad is not None else None for t in leaves]
    return values, grads


def check(fn, *arrays):
    """fn gives the same outputs (shape, dtype, values) and input gradients in both."""
    arrays = [np.asarray(a) for a in arrays]
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        ours, our_grads = _run(tape, fn, arrays)
    theirs, their_grads = _run(torch, fn, arrays)
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(a, b, **TOL)
    for a, b in zip(our_grads, their_grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape
            np.testing.assert_allclose(a, b, **TOL)
    return ours, our_grads


def rand(*shape, low=-2.0, high=2.0, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


# ---- arithmetic and broadcasting ----------------------------------------------

BINARY = {
    "add": lambda m, a, b: a + b,
    "sub": lambda m, a, b: a - b,
    "mul": lambda m, a, b: a * b,
    "div": lambda m, a, b: a / b,
    "pow": lambda m, a, b: a**b,
}
SHAPES = [
    ((3, 1), (1, 4)),
    ((), (2, 3)),
    ((2, 3), ()),
    ((4,), (3, 4)),
    ((2, 1, 3), (4, 1)),
    ((2, 3), (2, 3)),
]


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
def test_binary_broadcasting_reduces_grads_to_operand_shapes(op, shapes):
    a = rand(*shapes[0], low=0.5, high=2.0, seed=1)
    b = rand(*shapes[1], low=0.5, high=2.0, seed=2)
    _, (ga, gb) = check(BINARY[op], a, b)
    assert ga.shape == shapes[0] and gb.shape == shapes[1]


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x: x + 2,
        lambda m, x: 2 + x,
        lambda m, x: x - 2.5,
        lambda m, x: 2.5 - x,
        lambda m, x: x * 3,
        lambda m, x: 3 * x,
        lambda m, x: x / 4,
        lambda m, x: 4 / x,
        lambda m, x: x**2,
        lambda m, x: x**0.5,
        lambda m, x: x**-1.5,
        lambda m, x: x**0,
        lambda m, x: 2**x,
        lambda m, x: -x,
        lambda m, x: (x * x - x) / (x + 1),
    ],
)
def test_python_numbers_on_either_side(fn):
    check(fn, rand(2, 3, low=0.5, high=2.0))


def test_integer_tensors_stay_int64_and_float_scalars_promote_to_float64():
    x = tape.tensor([1, 2, 3])
    assert x.dtype == np.int64 and (x * 2).dtype == np.int64
    assert (x * 0.5).dtype == np.float64 and (x / 2).dtype == np.float64
    assert tape.tensor([1.0, 2.0]).dtype == np.float64


@pytest.mark.parametrize("op", ["lt", "gt", "le", "ge", "eq", "ne"])
def test_comparisons_give_bool_tensors_without_grad(op):
    fn = lambda m, a, b: getattr(a, f"__{op}__")(b)  # noqa: E731
    a, b = np.array([1.0, 2.0, 3.0]), np.array([[2.0], [3.0]])
    (out,), _ = check(fn, a, b)
    assert out.dtype == np.bool_
    x = tape.tensor(a, requires_grad=True)
    assert not (x > 2).requires_grad and (x > 2).grad_fn is None


def test_broadcast_mismatch_names_both_shapes():
    with pytest.raises(
        RuntimeError, match=r"tensor a \(3\) must match .* tensor b \(4\)"
    ):
        torch.ones(2, 3) + torch.ones(4)
    with pytest.raises(
        RuntimeError, match=r"tensor a \(3\) must match .*\(2, 3\) and \(4,\)"
    ):
        tape.ones(2, 3) + tape.ones(4)


MATMUL_SHAPES = [
    ((3,), (3,)),
    ((2, 3), (3, 4)),
    ((3,), (3, 4)),
    ((2, 3), (3,)),
    ((5, 2, 3), (3, 4)),
    ((3,), (5, 3, 4)),
    ((5, 2, 3), (3,)),
    ((5, 2, 3), (5, 3, 4)),
    ((2, 1, 2, 3), (5, 3, 4)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul_1d_2d_and_batched(shapes):
    check(lambda m, a, b: a @ b, rand(*shapes[0], seed=1), rand(*shapes[1], seed=2))
    check(lambda m, a, b: m.matmul(a, b), rand(*shapes[0]), rand(*shapes[1]))


@pytest.mark.parametrize(
    "shapes", [((2, 3), (4, 5)), ((3,), (4,)), ((2, 3), (4,)), ((4,), (2, 3))], ids=str
)
def test_matmul_shape_mismatch_names_both_shapes(shapes):
    a, b = shapes
    with pytest.raises(RuntimeError):
        torch.ones(*a) @ torch.ones(*b)
    ax, bx = "x".join(map(str, a)), "x".join(map(str, b))
    with pytest.raises(RuntimeError, match=f"cannot be multiplied \\({ax} and {bx}\\)"):
        tape.ones(*a) @ tape.ones(*b)


@given(
    shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=3),
    op=st.sampled_from(["add", "sub", "mul", "div"]),
)
@settings(max_examples=40, deadline=None)
def test_random_broadcastable_shapes_match_torch(shapes, op):
    a, b = shapes.input_shapes
    check(BINARY[op], rand(*a, low=0.5, high=2.0, seed=1), rand(*b, low=0.5, seed=2))


# ---- reductions -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["sum", "mean", "amax"])
def test_full_reductions(name):
    check(lambda m, x: getattr(x, name)(), rand(2, 3, 4))
    check(lambda m, x: getattr(m, name)(x), rand(2, 3, 4))


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, -1, 1, (0, 2), (-1, 0)], ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "amax", "logsumexp"])
def test_reductions_with_dim_and_keepdim(name, dim, keepdim):
    check(lambda m, x: getattr(x, name)(dim, keepdim=keepdim), rand(2, 3, 4))
    check(lambda m, x: getattr(m, name)(x, dim=dim, keepdim=keepdim), rand(2, 3, 4))


@given(
    shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3),
    data=st.data(),
    keepdim=st.booleans(),
    name=st.sampled_from(["sum", "mean", "amax", "logsumexp"]),
)
@settings(max_examples=40, deadline=None)
def test_random_reduction_dims_match_torch(shape, data, keepdim, name):
    axes = st.integers(-len(shape), len(shape) - 1)
    dims = data.draw(
        st.lists(
            axes, min_size=1, max_size=len(shape), unique_by=lambda d: d % len(shape)
        )
    )
    check(lambda m, x: getattr(x, name)(tuple(dims), keepdim=keepdim), rand(*shape))


@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_max_along_dim_returns_values_and_indices(dim, keepdim):
    x = np.array([[1.0, 5.0, 5.0], [7.0, 2.0, 7.0]])  # ties: first index wins

    def fn(m, x):
        values, indices = x.max(dim, keepdim=keepdim)
        return values, indices

    (_, indices), _ = check(fn, x)
    assert indices.dtype == np.int64
    check(lambda m, x: m.max(x, dim, keepdim)[0], x)
    check(lambda m, x: x.argmax(dim, keepdim=keepdim), x)


def test_max_ties_share_the_gradient_evenly():
    x = np.array([[1.0, 5.0], [5.0, 5.0]])
    _, (grad,) = check(lambda m, x: x.max(), x)
    assert grad[0, 0] == 0 and grad[0, 1] == grad[1, 0] == grad[1, 1] != 0
    check(lambda m, x: x.amax(1), x)
    check(lambda m, x: m.max(x), x)


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax(name, dim):
    check(lambda m, x: getattr(x, name)(dim), rand(2, 3, 4))
    check(lambda m, x: getattr(m, name)(x, dim), rand(2, 3, 4))
    check(lambda m, x: getattr(m.nn.functional, name)(x, dim=dim), rand(2, 3, 4))


def test_dim_out_of_range_raises_index_error_like_torch():
    for lib in (tape, torch):
        with pytest.raises(IndexError, match="Dimension out of range"):
            lib.ones(2, 3).sum(2)


# ---- shapes, indexing, gather -----------------------------------------------------

SHAPE_OPS = {
    "reshape": lambda m, x: x.reshape(4, 6),
    "reshape_tuple": lambda m, x: m.reshape(x, (6, -1)),
    "view": lambda m, x: x.view(-1),
    "transpose": lambda m, x: x.transpose(0, 2),
    "transpose_neg": lambda m, x: m.transpose(x, -1, 1),
    "permute": lambda m, x: x.permute(2, 0, 1),
    "permute_tuple": lambda m, x: m.permute(x, (1, 2, 0)),
    "T": lambda m, x: x[0].T,
    "mT": lambda m, x: x.mT,
    "unsqueeze": lambda m, x: x.unsqueeze(1),
    "unsqueeze_neg": lambda m, x: m.unsqueeze(x, -1),
    "squeeze": lambda m, x: x[:, :1, None].squeeze(),
    "squeeze_dim": lambda m, x: x[:, :1].squeeze(1),
    "squeeze_non_one": lambda m, x: x.squeeze(0),
    "flatten": lambda m, x: x.flatten(),
    "flatten_from_1": lambda m, x: m.flatten(x, 1),
    "expand": lambda m, x: x[:, :1, :1].expand(2, 3, 4),
    "expand_keep": lambda m, x: x[:1].expand(5, -1, -1, -1),
    "cat": lambda m, x: m.cat([x, x[:1], x * 2], dim=0),
    "cat_neg": lambda m, x: m.cat([x, x], dim=-1),
    "stack": lambda m, x: m.stack([x, x * 3]),
    "stack_dim": lambda m, x: m.stack([x, x * 3], dim=2),
    "clone": lambda m, x: x.clone() * 2,
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_ops(name):
    check(SHAPE_OPS[name], rand(2, 3, 4))


INDEXING = {
    "slice": lambda m, x: x[1:],
    "none": lambda m, x: x[:, None, :],
    "step": lambda m, x: x[::2],
    "negative_step_free": lambda m, x: x[-1, 1:3],
    "int": lambda m, x: x[2],
    "ellipsis": lambda m, x: x[..., 0],
    "tensor_duplicates": lambda m, x: x[m.tensor([0, 2, 0, 0])],
    "list_duplicates": lambda m, x: x[[1, 1, 3]],
    "pairs": lambda m, x: x[m.tensor([0, 0, 3]), m.tensor([1, 1, 2])],
    "mixed": lambda m, x: x[1:, m.tensor([2, 2, 0])],
    "mask": lambda m, x: x[x > 0],
    "gather0": lambda m, x: x.gather(0, m.tensor([[0, 1, 0], [3, 3, 3]])),
    "gather1": lambda m, x: m.gather(x, 1, m.tensor([[2, 2], [0, 1], [1, 1], [0, 0]])),
    "gather_neg": lambda m, x: x.gather(-1, m.tensor([[0], [0], [2], [1]])),
    "where": lambda m, x: m.where(x > 0, x, x * x),
    "where_scalars": lambda m, x: m.where(x > 0, x, 0.0) + m.where(x < 1, 2.0, x),
    "where_broadcast": lambda m, x: m.where(x[:1] > 0, x[:, :1], x),
}


@pytest.mark.parametrize("name", INDEXING)
def test_indexing_gather_and_where(name):
    check(INDEXING[name], rand(4, 3))


def test_repeated_indices_accumulate_their_gradients():
    _, (grad,) = check(lambda m, x: x[m.tensor([0, 2, 0, 0])], np.arange(3.0))
    assert grad[1] == 0 and grad[0] != 0


# ---- elementwise -----------------------------------------------------------------

WITH_ZEROS = np.array([[-1.5, -0.0, 0.0], [0.3, 2.0, -0.7]])
UNARY_DOMAINS = {
    "exp": rand(2, 3),
    "log": rand(2, 3, low=0.1, high=3.0),
    "sqrt": rand(2, 3, low=0.1, high=3.0),
    "sin": rand(2, 3),
    "cos": rand(2, 3),
    "tan": rand(2, 3, low=-1.2, high=1.2),
    "tanh": rand(2, 3),
    "sinh": rand(2, 3),
    "cosh": rand(2, 3),
    "asin": rand(2, 3, low=-0.9, high=0.9),
    "acos": rand(2, 3, low=-0.9, high=0.9),
    "atan": rand(2, 3),
    "abs": WITH_ZEROS,
    "sign": WITH_ZEROS,
    "sigmoid": rand(2, 3, low=-8, high=8),
    "relu": WITH_ZEROS,
    "neg": rand(2, 3),
}


@pytest.mark.parametrize("name", UNARY_DOMAINS)
def test_elementwise_method_and_function(name):
    x = UNARY_DOMAINS[name]
    check(lambda m, x: getattr(x, name)(), x)
    check(lambda m, x: getattr(m, name)(x), x)


@pytest.mark.parametrize("name", ["sigmoid", "relu", "tanh"])
def test_functional_activations(name):
    check(lambda m, x: getattr(m.nn.functional, name)(x), WITH_ZEROS)


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, x: x.clamp(-0.5, 0.5),
        lambda m, x: x.clamp(min=0.0),
        lambda m, x: m.clamp(x, max=0.3),
        lambda m, x: x.clamp(-0.7, 0.3),  # -0.7 and 0.3 sit exactly on the bounds
    ],
)
def test_clamp_passes_gradient_inside_and_on_the_bounds(fn):
    check(fn, WITH_ZEROS)


@pytest.mark.parametrize("beta, threshold", [(1.0, 20.0), (2.0, 20.0), (0.5, 3.0)])
def test_softplus_matches_torch_including_its_linear_regime(beta, threshold):
    x = np.array([-30.0, -2.0, 0.0, 1.0, 5.9, 6.1, 15.0, 25.0])
    check(lambda m, x: m.nn.functional.softplus(x, beta, threshold), x)


def test_float32_stays_float32_through_ops_and_grads():
    x = tape.tensor([1.0, 2.0], dtype=tape.float32, requires_grad=True)
    y = (x * 2.5 + 1).exp().sum()
    y.backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    check(lambda m, x: (x.to(m.float32) * 2).double(), rand(3))


# ---- numerically stable functions at extreme inputs -------------------------------

EXTREME = np.array([-1000.0, -40.0, -1.0, 0.0, 1.0, 40.0, 1000.0])
STABLE = {
    "sigmoid": lambda m, x: x.sigmoid(),
    "softplus": lambda m, x: m.nn.functional.softplus(x),
    "logsigmoid": lambda m, x: m.nn.functional.logsigmoid(x),
    "logsumexp": lambda m, x: x.reshape(1, -1).logsumexp(1),
    "logsumexp_pairs": lambda m, x: m.stack([x, -x, x * 0]).logsumexp(0),
    "softmax": lambda m, x: m.softmax(x.reshape(1, -1), 1),
    "log_softmax": lambda m, x: m.log_softmax(x.reshape(1, -1), 1),
    "softmax_pairs": lambda m, x: m.stack([x, -x]).softmax(0),
    "log_softmax_pairs": lambda m, x: m.stack([x, -x]).log_softmax(0),
    "cross_entropy": lambda m, x: m.nn.functional.cross_entropy(
        m.stack([x, -x, x * 0], dim=1), m.tensor([0, 1, 2, 0, 1, 2, 0])
    ),
    "bce_with_logits": lambda m, x: m.nn.functional.binary_cross_entropy_with_logits(
        x, m.tensor([0.0, 1.0, 1.0, 0.5, 0.0, 0.0, 1.0])
    ),
}


@pytest.mark.parametrize("name", STABLE)
def test_stable_functions_are_finite_at_extreme_inputs(name):
    """check() turns NumPy warnings into errors on the tape side."""
    (value, *_), (grad, *_) = check(STABLE[name], EXTREME)
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))


def test_sigmoid_keeps_full_relative_precision_for_large_negative_inputs():
    exact = 1 / (1 + math.exp(40))  # the division is exact to rounding here
    assert tape.sigmoid(tape.tensor(-40.0)).item() == pytest.approx(exact, rel=1e-15)
    softplus = tape.nn.functional.softplus(tape.tensor(-40.0)).item()
    assert softplus == pytest.approx(math.log1p(math.exp(-40)), rel=1e-15)


def test_zero_gradients_where_the_derivative_is_zero_over_zero():
    """torch masks these to 0: atan2 at the origin, std of a constant row (sqrt's
    slope at 0 times a zero deviation)."""
    y, x = np.array([0.0, 1.0, 0.0, 0.0]), np.array([0.0, 0.0, -2.0, 0.0])
    _, grads = check(lambda m, y, x: m.atan2(y, x), y, x)
    assert grads[0][0] == grads[1][0] == grads[0][3] == 0
    rows = np.array([[3.0, 3.0, 3.0], [1.0, 2.0, 4.0]])
    _, (grad,) = check(lambda m, a: a.std(dim=1), rows)
    assert np.all(grad[0] == 0) and np.all(grad[1] != 0)
    check(lambda m, a: a.std(dim=1, correction=0), rows)


# ---- losses ---------------------------------------------------------------------

REDUCTIONS = ["mean", "sum", "none"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss(reduction):
    def fn(m, a, b):
        return m.nn.MSELoss(reduction=reduction)(a, b) + m.nn.functional.mse_loss(
            a * 2, b, reduction=reduction
        )

    check(fn, rand(4, 3, seed=1), rand(4, 3, seed=2))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "shapes", [((5, 3), (5,)), ((3,), ()), ((2, 4, 3), (2, 3))], ids=str
)
def test_cross_entropy_with_class_index_targets(reduction, shapes):
    logits, target_shape = shapes
    n_classes = logits[0 if len(logits) == 1 else 1]
    target = np.random.default_rng(3).integers(0, n_classes, target_shape)

    def fn(m, x, t):
        return m.nn.CrossEntropyLoss(reduction=reduction)(x, t)

    check(fn, rand(*logits), target)
    check(
        lambda m, x, t: m.nn.functional.cross_entropy(x, t, reduction=reduction),
        rand(*logits),
        target,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_including_target_gradient(reduction):
    def fn(m, x, t):
        return m.nn.BCEWithLogitsLoss(reduction=reduction)(x, t)

    check(fn, rand(4, 3, low=-5, high=5), rand(4, 3, low=0, high=1, seed=4))


def test_linear_functional():
    check(
        lambda m, x, w, b: m.nn.functional.linear(x, w, b),
        rand(5, 3),
        rand(2, 3),
        rand(2),
    )
    check(lambda m, x, w: m.nn.functional.linear(x, w), rand(3), rand(2, 3))


def test_invalid_reduction_raises_value_error_like_torch():
    for lib in (tape, torch):
        with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
            lib.nn.functional.mse_loss(lib.ones(2), lib.ones(2), reduction="avg")


def test_mse_loss_warns_about_broadcast_targets_like_torch():
    for lib in (tape, torch):
        with pytest.warns(UserWarning, match="different to the input size"):
            lib.nn.functional.mse_loss(lib.ones(2, 1), lib.ones(2))
