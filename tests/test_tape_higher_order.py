"""Higher-order gradients (create_graph=True) in symgrad.tape, compared with torch.

Each scenario is a function of the module (`m` is symgrad.tape or torch, the latter
at float64 like tape) run on both; values, gradients, dtypes and shapes are compared.
"""

import numpy as np
import pytest
from tape_compare import check, check_raises, data, set_linear, weights

from symgrad import tape

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.usefixtures("torch_float64"),
    pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph"),
]


def inside(*shape, seed=0, low=0.2, high=0.8):
    """Values in (low, high): inside the domain of every function below."""
    return np.random.default_rng(seed).uniform(low, high, shape)


def grad_and_hvp(op, shape=(2, 3), low=0.2, high=0.8):
    """op(m, x), g = d(sum(op * w))/dx recorded with create_graph, and the
    Hessian-vector product d(sum(g * v))/dx. Where that is 0, torch may still record
    g (relu's mask) and give a ZeroTensor: zeros are compared, not how they came."""

    def fn(m):
        x = m.tensor(inside(*shape, low=low, high=high), requires_grad=True)
        y = op(m, x)
        (g,) = m.autograd.grad((y * weights(y, m)).sum(), x, create_graph=True)
        h = None
        if g.requires_grad:
            v = weights(g, m, seed=5)
            (h,) = m.autograd.grad((g * v).sum(), x, allow_unused=True)
        return y, g, m.zeros_like(x) + (0 if h is None else h)

    return fn


def method(name):
    return lambda m, x: getattr(x, name)()


POINTWISE = {
    name: method(name)
    for name in (
        "exp log log1p expm1 sqrt rsqrt reciprocal sin cos tan sinh cosh tanh asin "
        "acos atan asinh atanh erf erfc abs sigmoid relu neg square"
    ).split()
}
POINTWISE |= {
    "acosh": lambda m, x: (x + 1.5).acosh(),
    "relu of both signs": lambda m, x: (x - 0.5).relu() * x,
    "pow 3": lambda m, x: x**3,
    "pow 2.5": lambda m, x: x**2.5,
    "pow 0": lambda m, x: x**0 * x,
    "x ** x": lambda m, x: x**x,
    "2 ** x": lambda m, x: 2**x,
    "1 / x": lambda m, x: 1 / x,
    "clamp": lambda m, x: x.clamp(0.3, 0.7) * x,
    "softplus": lambda m, x: m.nn.functional.softplus(3 * x - 1, beta=2.0),
    "logsigmoid": lambda m, x: m.nn.functional.logsigmoid(3 * x - 1),
    "silu": lambda m, x: m.nn.functional.silu(3 * x - 1),
    "gelu": lambda m, x: m.nn.functional.gelu(3 * x - 1),
    "gelu tanh": lambda m, x: m.nn.functional.gelu(3 * x - 1, approximate="tanh"),
    "leaky_relu": lambda m, x: m.nn.functional.leaky_relu(x - 0.5, 0.1) * x,
    "to float32 and back": lambda m, x: (x.float() * x.float()).double(),
}


@pytest.mark.parametrize("op", POINTWISE.values(), ids=list(POINTWISE))
def test_second_derivatives_of_pointwise_functions(op):
    check(grad_and_hvp(op))


@pytest.mark.parametrize(
    "op",
    [POINTWISE[k] for k in ("softplus", "logsigmoid", "silu", "leaky_relu", "clamp")],
    ids=["softplus", "logsigmoid", "silu", "leaky_relu", "clamp"],
)
def test_second_derivatives_of_a_zero_dimensional_tensor(op):
    """Rules that branch with where get a NumPy bool scalar, not an array, at 0-d."""
    check(grad_and_hvp(op, shape=()))


def two_operands(op, sa=(2, 3), sb=(3,)):
    """op(a, b) with broadcasting; the gradient in both and its derivatives."""

    def fn(m):
        a = m.tensor(inside(*sa, seed=1), requires_grad=True)
        b = m.tensor(inside(*sb, seed=2, low=1.1, high=1.9), requires_grad=True)
        y = op(a, b)
        ga, gb = m.autograd.grad((y * weights(y, m)).sum(), (a, b), create_graph=True)
        penalty = (ga * ga).sum() + (gb * weights(gb, m, seed=4)).sum()
        return y, ga, gb, m.autograd.grad(penalty, (a, b), allow_unused=True)

    return fn


BINARY = {
    "add": lambda a, b: (a + b) ** 2,
    "sub": lambda a, b: (a - b) ** 2,
    "rsub": lambda a, b: (1 - a * b) ** 2,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a**b,
    "atan2": lambda a, b: a.atan2(b),
    "maximum": lambda a, b: a.maximum(b * 0.4) * a,
    "minimum": lambda a, b: a.minimum(b * 0.4) * b,
    "matmul matrix-vector": lambda a, b: (a @ b).exp(),
    "matmul matrix-matrix": lambda a, b: (a.T @ a * b).tanh(),
    "where": lambda a, b: tape_or_torch(a).where(a > 0.5, a * b, b * b),
}


def tape_or_torch(t):
    return tape if isinstance(t, tape.Tensor) else torch


@pytest.mark.parametrize("op", BINARY.values(), ids=list(BINARY))
def test_second_derivatives_of_binary_ops(op):
    check(two_operands(op))


def test_matmul_mm_bmm_hessian_vector_products():
    def fn(m):
        a = m.tensor(data(4, 2, 3, seed=1), requires_grad=True)
        b = m.tensor(data(4, 3, 2, seed=2), requires_grad=True)
        y = m.bmm(a, b).sigmoid().sum() + m.mm(a[0], b[1]).pow(2).sum()
        y = y + (a[1].reshape(-1) @ a[2].reshape(-1)).sin()
        ga, gb = m.autograd.grad(y, (a, b), create_graph=True)
        return ga, gb, m.autograd.grad((ga * ga).sum() + (gb**3).sum(), (a, b))

    check(fn)


SHAPES_AND_REDUCTIONS = {
    "sum": lambda m, x: x.sum() ** 2,
    "sum(dim)": lambda m, x: (x * x).sum(1, keepdim=True) * x,
    "mean": lambda m, x: x.mean(0) ** 3,
    "softmax": lambda m, x: x.softmax(-1),
    "log_softmax": lambda m, x: x.log_softmax(0),
    "logsumexp": lambda m, x: x.logsumexp(1) ** 2,
    "amax": lambda m, x: x.amax(1) * x.sum(),
    "max": lambda m, x: x.max() * x,
    "reshape": lambda m, x: x.reshape(3, 2) ** 3,
    "view and flatten": lambda m, x: x.view(6).flatten() ** 3,
    "transpose, T and t": lambda m, x: (x.t() * x.T).transpose(0, 1) ** 3,
    "permute": lambda m, x: x[None].permute(2, 0, 1) ** 3,
    "unsqueeze and squeeze": lambda m, x: x.unsqueeze(1).squeeze() ** 3,
    "expand": lambda m, x: x[:, :1].expand(2, 4) ** 3,
    "repeat": lambda m, x: x.repeat(2, 1) ** 3,
    "flip": lambda m, x: x.flip(1) * x,
    "basic indexing": lambda m, x: x[1:, ::2].sum() ** 3 + x[0, 1] * x,
    "advanced indexing": lambda m, x: x[m.tensor([0, 1, 1]), m.tensor([2, 0, 0])] ** 3,
    "gather": lambda m, x: x.gather(1, m.tensor([[0, 0], [2, 1]])) ** 3,
    "index_select": lambda m, x: x.index_select(1, m.tensor([2, 2, 0])) ** 3,
    "masked_fill": lambda m, x: x.masked_fill(x > 0.5, 0.0) ** 3,
    "tril": lambda m, x: x.tril() ** 3,
    "cumsum": lambda m, x: x.cumsum(1) ** 3,
    "var": lambda m, x: x.var() * x,
    "var(dim, correction=0)": lambda m, x: x.var(1, correction=0, keepdim=True) * x,
    "std": lambda m, x: x.std(0) ** 2 * x.std(),
    "prod": lambda m, x: x.prod() * x,
    "prod(dim) with a zero": lambda m, x: (x - x[0, 1].detach()).prod(1) ** 2,
    "sort descending": lambda m, x: x.sort(1, descending=True)[0] ** 3,
    "topk": lambda m, x: x.topk(2, dim=0)[0] * x.flatten()[:3],
    "einsum with '...' and a diagonal": lambda m, x: (
        m.einsum("...i,...i->...", x, x.exp()) * m.einsum("ii->i", x[:, :2] ** 2)
    ),
    "cat": lambda m, x: m.cat([x, x * x], 1) ** 2,
    "stack": lambda m, x: m.stack([x, x.exp()], -1) ** 2,
    "split and unbind": lambda m, x: x.split(2, 1)[1] ** 3 + x.unbind(1)[0].sum(),
    "layer_norm": lambda m, x: m.nn.functional.layer_norm(x, (3,)),
    "normalize": lambda m, x: m.nn.functional.normalize(x, dim=1),
}


@pytest.mark.parametrize(
    "op", SHAPES_AND_REDUCTIONS.values(), ids=list(SHAPES_AND_REDUCTIONS)
)
def test_second_derivatives_through_shapes_and_reductions(op):
    check(grad_and_hvp(op))


def _targets(m):
    return m.tensor([2, 0])


LOSSES = {
    "cross_entropy": lambda m, x: m.nn.functional.cross_entropy(3 * x, _targets(m)),
    "cross_entropy, smoothing and weights": lambda m, x: m.nn.CrossEntropyLoss(
        weight=m.tensor([1.0, 2.0, 0.5]), label_smoothing=0.1
    )(3 * x, _targets(m)),
    "cross_entropy, probabilities": lambda m, x: m.nn.functional.cross_entropy(
        3 * x, (2 * x.detach()).softmax(1)
    ),
    "nll_loss sum": lambda m, x: m.nn.functional.nll_loss(
        x.log(), _targets(m), reduction="sum"
    ),
    "mse_loss": lambda m, x: m.nn.functional.mse_loss(x.exp(), x.detach() * 2),
    "MSELoss sum, target requiring grad": lambda m, x: m.nn.MSELoss(reduction="sum")(
        x[0], x[1] ** 2
    ),
    "smooth_l1_loss": lambda m, x: m.nn.functional.smooth_l1_loss(
        x.exp(), 2 * x.detach(), beta=0.5
    ),
    "huber_loss": lambda m, x: m.nn.functional.huber_loss(x**2, 1 - x.detach()),
    "binary_cross_entropy_with_logits": lambda m, x: (
        m.nn.functional.binary_cross_entropy_with_logits(
            3 * x - 1, (x.detach() > 0.5).double(), pos_weight=m.tensor([1.0, 2.0, 0.5])
        )
    ),
    "binary_cross_entropy": lambda m, x: m.nn.functional.binary_cross_entropy(
        x, (x.detach() > 0.5).double()
    ),
    "kl_div": lambda m, x: m.nn.functional.kl_div(
        x.log_softmax(1), x.detach().softmax(1), reduction="batchmean"
    ),
}


@pytest.mark.parametrize("op", LOSSES.values(), ids=list(LOSSES))
def test_second_derivatives_of_losses(op):
    check(grad_and_hvp(op))


def hessian(m, f, x):
    """The Hessian of a scalar function, one autograd.grad per gradient element
    (the double loop of torch.autograd.functional.hessian)."""
    (g,) = m.autograd.grad(f(m, x), x, create_graph=True)
    rows = [m.autograd.grad(gi, x, retain_graph=True)[0] for gi in g.reshape(-1)]
    return m.stack(rows).reshape(x.shape + x.shape)


FUNCTIONS = {
    "rosenbrock": lambda m, x: (1 - x[:-1]).pow(2).sum()
    + 100 * (x[1:] - x[:-1] ** 2).pow(2).sum(),
    "log-sum-exp of a quadratic form": lambda m, x: (
        x @ m.tensor(data(4, 4, seed=3)) * x
    ).logsumexp(0),
    "softmax entropy": lambda m, x: -(x.softmax(0) * x.log_softmax(0)).sum(),
    "tanh network": lambda m, x: (m.tensor(data(3, 4, seed=1)) @ x.tanh())
    .sigmoid()
    .log()
    .sum(),
}


@pytest.mark.parametrize("f", FUNCTIONS.values(), ids=list(FUNCTIONS))
def test_hessians_of_small_functions(f):
    check(lambda m: hessian(m, f, m.tensor(inside(4), requires_grad=True)))


@pytest.mark.parametrize("name", ["rosenbrock", "softmax entropy"])
def test_hessian_matches_torch_autograd_functional(name):
    f = FUNCTIONS[name]
    x = inside(4)
    ours = hessian(tape, f, tape.tensor(x, requires_grad=True))
    theirs = torch.autograd.functional.hessian(lambda t: f(torch, t), torch.tensor(x))
    np.testing.assert_allclose(ours.detach().numpy(), theirs.numpy(), rtol=1e-10)


def test_newton_steps_on_a_small_function():
    f = FUNCTIONS["rosenbrock"]

    def fn(m):
        x = m.tensor([-0.5, 0.8, 1.2], requires_grad=True)
        path = []
        for _ in range(4):
            (g,) = m.autograd.grad(f(m, x), x, create_graph=True)
            rows = [m.autograd.grad(gi, x, retain_graph=True)[0] for gi in g]
            step = np.linalg.solve(m.stack(rows).detach().numpy(), g.detach().numpy())
            with m.no_grad():
                x -= m.tensor(step)
            path.append(x.detach().clone())
        return path

    check(fn)


def test_third_derivative_of_a_scalar_function():
    def fn(m):
        x = m.tensor(0.7, requires_grad=True)
        y = x.sin() * x**4 + (2 * x).exp() / (1 + x * x)
        (d1,) = m.autograd.grad(y, x, create_graph=True)
        (d2,) = m.autograd.grad(d1, x, create_graph=True)
        (d3,) = m.autograd.grad(d2, x, create_graph=True)
        (d4,) = m.autograd.grad(d3, x)
        return d1, d2, d3, d4, [d.requires_grad for d in (d1, d2, d3, d4)]

    check(fn)


def test_gradient_penalty_training_steps():
    """WGAN-GP style: loss plus the squared norm of d(output)/d(input), optimised."""

    def fn(m):
        net = m.nn.Sequential(
            m.nn.Linear(3, 5), m.nn.Tanh(), m.nn.Linear(5, 4), m.nn.Softplus()
        )
        head = m.nn.Linear(4, 1)
        for i, lin in enumerate((net[0], net[2], head)):
            set_linear(lin, m, seed=i)
        params = [*net.parameters(), *head.parameters()]
        opt = m.optim.Adam(params, lr=0.05)
        x, target = m.tensor(data(6, 3, seed=7)), m.tensor(data(6, 1, seed=8))
        losses = []
        for _ in range(3):
            opt.zero_grad()
            inp = x.clone().requires_grad_()
            out = head(net(inp))
            (gx,) = m.autograd.grad(out.sum(), inp, create_graph=True)
            penalty = ((gx.norm(2, dim=1) - 1) ** 2).mean()
            loss = m.nn.functional.mse_loss(out, target) + 0.5 * penalty
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, [p.detach() for p in params]

    check(fn)


def test_gradient_penalty_through_backward_create_graph():
    def fn(m):
        w = m.tensor(data(3, 2, seed=1), requires_grad=True)
        x = m.tensor(data(4, 3, seed=2), requires_grad=True)
        loss = (x @ w).tanh().pow(2).sum()
        loss.backward(create_graph=True)
        grads = x.grad, w.grad
        flags = [g.requires_grad for g in grads] + [x.grad.grad_fn is not None]
        x.grad, w.grad = None, None
        (grads[0].pow(2).sum() + grads[1].sum()).backward()
        return grads, flags, x.grad, w.grad

    check(fn)


def test_create_graph_accumulates_out_of_place_and_stays_differentiable():
    def fn(m):
        x = m.tensor([0.5, 1.5], requires_grad=True)
        (x**3).sum().backward(create_graph=True)
        first = x.grad
        (x.sin()).sum().backward(create_graph=True)
        second = x.grad
        (h,) = m.autograd.grad(second.sum(), x)
        return first, second, h, first is second

    check(fn)


def test_retain_graph_interplay():
    def fn(m):
        x = m.tensor([0.5, 1.5], requires_grad=True)
        y = (x.exp() * x).sum()
        (g,) = m.autograd.grad(y, x, create_graph=True)  # retains the graph too
        y.backward(retain_graph=True)
        (h,) = m.autograd.grad(g.sum(), x, retain_graph=True)
        (h2,) = m.autograd.grad(g.sum(), x)
        return g, x.grad, h, h2

    check(fn)


def test_create_graph_without_retain_graph_frees_the_graph():
    def fn(m):
        x = m.tensor([0.5, 1.5], requires_grad=True)
        y = (x.exp() * x).sum()
        m.autograd.grad(y, x, create_graph=True, retain_graph=False)
        y.backward()

    check_raises(fn)


def test_gradients_graph_needs_the_values_a_first_order_pass_frees():
    def fn(m):
        x = m.tensor([0.5, 1.5], requires_grad=True)
        y = (x.exp() * x).sum()
        (g,) = m.autograd.grad(y, x, create_graph=True)
        y.backward()  # frees exp's saved output, which g's graph goes through
        m.autograd.grad(g.sum(), x)

    check_raises(fn)


def test_the_second_backward_pass_frees_the_gradient_graph():
    def fn(m):
        x = m.tensor([0.5, 1.5], requires_grad=True)
        (g,) = m.autograd.grad((x**3).sum(), x, create_graph=True)
        g.sum().backward()
        g.sum().backward()

    check_raises(fn)


def test_hooks_see_and_replace_recorded_gradients():
    def fn(m):
        x = m.tensor([0.5, 1.5, -0.3], requires_grad=True)
        h = x * x
        seen = []
        h.register_hook(lambda g: seen.append(g.requires_grad) or g * x)
        (g,) = m.autograd.grad(h.exp().sum(), x, create_graph=True)
        (gg,) = m.autograd.grad(g.sum(), x)
        return g, gg, seen

    check(fn)


def test_retain_grad_under_create_graph():
    def fn(m):
        x = m.tensor([0.5, 1.5, -0.3], requires_grad=True)
        h = x.sin()
        h.retain_grad()
        (h**3).sum().backward(create_graph=True)
        hg = h.grad
        (gg,) = m.autograd.grad(hg.sum(), x)
        return hg, hg.requires_grad, gg

    check(fn)


def test_grad_outputs_that_require_grad_are_differentiated():
    """The double-backward trick for a Jacobian-vector product: J u = d(J^T v . u)/dv."""

    def fn(m):
        x = m.tensor([0.5, 1.5, -0.3], requires_grad=True)
        y = x.exp() * x.flip(0)
        v = m.zeros(3, requires_grad=True)
        (vjp,) = m.autograd.grad(y, x, grad_outputs=v, create_graph=True)
        (jvp,) = m.autograd.grad(vjp, v, grad_outputs=m.tensor([1.0, 2.0, 3.0]))
        return vjp, jvp

    check(fn)


def test_backward_inputs_with_create_graph():
    def fn(m):
        x, w = m.tensor([1.0, 2.0], requires_grad=True), m.tensor(
            [3.0], requires_grad=True
        )
        (x * x * w).sum().backward(inputs=[x], create_graph=True)
        (gw,) = m.autograd.grad(x.grad.sum(), w)
        return x.grad, w.grad, gw

    check(fn)


def test_a_constant_gradient_from_a_first_order_op_is_exact():
    """sort's gradient is a permutation of g: with a constant g it is a constant,
    so create_graph may pass through it."""

    def fn(m):
        x = m.tensor([0.5, 1.5, -0.3], requires_grad=True)
        (g,) = m.autograd.grad(
            (x.sort().values * m.tensor([1.0, 2.0, 3.0])).sum(), x, create_graph=True
        )
        (x * g).sum().backward()
        return g, x.grad

    check(fn)


def test_a_function_with_two_outputs_differentiated_twice():
    """Both outputs' gradients reach one backward; its result is recorded."""

    def fn(m):
        class SinCos(m.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.sin(), x.cos()

            @staticmethod
            def backward(ctx, gs, gc):
                (x,) = ctx.saved_tensors
                return gs * x.cos() - gc * x.sin()

        x = m.tensor([0.3, 1.2], requires_grad=True)
        s, c = SinCos.apply(x)
        (g,) = m.autograd.grad((s * c + s**2).sum(), x, create_graph=True)
        return s, c, g, m.autograd.grad((g * g).sum(), x)

    check(fn)


def test_first_order_gradients_are_plain_tensors():
    x = tape.tensor([0.5, 1.5], requires_grad=True)
    (g,) = tape.autograd.grad((x**3).sum(), x)
    (x**3).sum().backward()
    assert not g.requires_grad and g.grad_fn is None
    assert not x.grad.requires_grad and x.grad.grad_fn is None
