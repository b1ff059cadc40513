"""Tape round 21: torch.special on the tape, run on torch (float64) and on
symgrad.tape through tests/tape_scripts.py's harness (values, gradients, dtypes,
shapes, grad_fn names, or the exception type where torch raises).

Covered, and agreeing with torch: erf, erfc, erfcx, erfinv, expit, logit (eps),
log1p, expm1, exp2, xlogy, xlog1py, gammaln, digamma, psi, polygamma, multigammaln,
i0, i0e, i1, i1e, ndtr, ndtri, log_ndtr, logsumexp, softmax, log_softmax, entr, sinc
and round: values and gradients over grids reaching the tails (log_ndtr at -40,
erfcx to 50, the Bessel functions on both sides of the series/asymptotic switch at
|x| = 30), second derivatives, float32 inputs (to float32 round-off: the tape
computes in float64 and rounds), integer inputs, broadcasting and numbers in the
binary ones, out=, and errors.

Not matched: the second derivative of sinc at 0 (torch: nan; the tape: 0, where the
true value is -pi^2/3); in float32, torch's own float32 arithmetic (erfcx's gradient
past 25, ndtr below -5, sinc's gradient at integers) differs from the tape's rounded
float64 results by more than float32 round-off; special.zeta, gammainc and the
bessel_j/y families are not done.
"""

import pytest
import tape_scripts
from tape_scripts import cases, check

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")

GENERAL = [-6.5, -2.25, -1.0, -0.3, 0.0, 0.4, 1.0, 2.5, 7.0]
POSITIVE = [1e-3, 0.2, 0.5, 1.0, 2.5, 7.0, 30.0]
GRIDS = {
    "erf": GENERAL,
    "erfc": [-7.0, -2.0, -0.5, 0.0, 0.5, 2.0, 7.0, 26.0],
    "erfcx": [-20.0, -5.0, -1.0, 0.0, 0.5, 3.0, 10.0, 24.9, 25.0, 26.0, 30.0, 50.0],
    "erfinv": [-1.0, -0.999999, -0.6, -0.5, -1e-10, 0.0, 1e-300, 0.3, 0.51, 0.9, 1.0],
    "expit": [-800.0, -30.0, -2.0, 0.0, 1.5, 40.0],
    "log1p": [-0.999, -0.5, 0.0, 1e-10, 3.0],
    "expm1": [-30.0, -1.0, 1e-12, 0.0, 2.0],
    "exp2": [-30.0, -1.5, 0.0, 3.0, 20.0],
    "gammaln": [-2.5, -0.5, 0.1, 1.0, 2.0, 3.7, 50.0],
    "digamma": [-2.5, -0.5, 0.1, 1.0, 2.0, 3.7, 50.0],
    "psi": [-1.5, 0.3, 4.0],
    "i0": [-50.0, -31.0, -30.0, -8.0, -1.0, 0.0, 1e-3, 2.0, 8.0, 29.9, 30.5, 100.0],
    "i0e": [-50.0, -31.0, -30.0, -8.0, -1.0, 0.0, 1e-3, 2.0, 8.0, 29.9, 30.5, 1e4],
    "i1": [-50.0, -31.0, -30.0, -8.0, -1.0, 0.0, 1e-3, 2.0, 8.0, 29.9, 30.5, 100.0],
    "i1e": [-50.0, -31.0, -30.0, -8.0, -1.0, 0.0, 1e-3, 2.0, 8.0, 29.9, 30.5, 1e4],
    "ndtr": [-40.0, -10.0, -5.0, -1.0, 0.0, 0.7, 5.0, 10.0],
    "ndtri": [0.0, 1e-300, 1e-20, 1e-5, 0.02, 0.3, 0.5, 0.7, 0.99, 1 - 1e-12, 1.0],
    "log_ndtr": [-40.0, -10.0, -5.0, -1.5, -1.0, -0.5, 0.0, 1.0, 5.0, 10.0],
    "entr": [0.0, 1e-3, 0.5, 1.0, 3.0],
    "sinc": [-3.5, -1.0, -0.25, 0.0, 0.3, 2.5],
    "round": [-2.5, -1.5, -0.4, 0.5, 1.5, 2.6],
}
# not a number outside the domain (and its gradient)
OUTSIDE = {"erfinv": [-1.5, 2.0], "ndtri": [-0.5, 1.5], "entr": [-1.0], "log1p": [-2]}


def value_and_grad(name, grid, dtype="float64"):
    def script(torch):
        x = torch.tensor(grid, dtype=getattr(torch, dtype), requires_grad=True)
        y = getattr(torch.special, name)(x)
        (g,) = torch.autograd.grad(y.sum(), x)
        return y, g, type(y.grad_fn).__name__

    return script


def second_derivative(name, grid):
    def script(torch):
        x = torch.tensor(grid, requires_grad=True)
        y = getattr(torch.special, name)(x)
        (g,) = torch.autograd.grad(
            (y * torch.linspace(1, 2, len(grid))).sum(), x, create_graph=True
        )
        (h,) = torch.autograd.grad((g * torch.linspace(0.5, 1.5, len(grid))).sum(), x)
        return y, g, h

    return script


UNARY = {f"{name}": value_and_grad(name, grid) for name, grid in GRIDS.items()}
UNARY.update(
    {
        f"{name} outside its domain": value_and_grad(name, grid)
        for name, grid in OUTSIDE.items()
    }
)


@pytest.mark.parametrize("script", cases(UNARY))
def test_unary_values_and_gradients(script):
    check(script)


SECOND = {
    "erfcx": [-5.0, -1.0, 0.0, 0.5, 3.0, 10.0, 30.0],
    "erfinv": [-0.9, -0.2, 0.0, 0.6, 0.99],
    "log_ndtr": [-40.0, -10.0, -2.0, 0.0, 1.0, 10.0],
    "ndtr": [-3.0, 0.0, 2.0],
    "ndtri": [1e-10, 0.2, 0.5, 0.9],
    "i0": [-31.0, -2.0, 0.0, 1.5, 35.0],
    "i0e": [-31.0, -2.0, 1.5, 35.0],
    "i1": [-31.0, -2.0, 0.5, 1.5, 35.0],
    "i1e": [-31.0, -2.0, 0.5, 1.5, 35.0],
    "entr": [0.2, 1.0, 4.0],
    "sinc": [-1.5, 0.25, 2.0],
    "exp2": [-2.0, 0.0, 3.0],
    "expit": [-3.0, 0.0, 2.0],
    "gammaln": [0.5, 2.0, 7.5],
    "digamma": [0.5, 2.0, 7.5],
}


@pytest.mark.parametrize(
    "script", cases({n: second_derivative(n, g) for n, g in SECOND.items()})
)
def test_second_derivatives(script):
    check(script)


def softmax_to_float32(torch):
    s = torch.special
    x = torch.tensor([[0.1, 0.5, 0.97], [-1.0, 2.0, 3.5]], requires_grad=True)
    out = [s.softmax(x, dim=1, dtype=torch.float32), s.log_softmax(x, 0, torch.float32)]
    (g,) = torch.autograd.grad(sum(t.sin().sum() for t in out), x)
    return out, g


FLOAT32 = {
    "erf": GENERAL,
    "erfc": [-3.0, -0.5, 0.0, 0.5, 2.0, 7.0],
    "erfcx": [-5.0, -1.0, 0.0, 0.5, 3.0, 10.0],
    "erfinv": [-0.9, -0.2, 0.0, 0.6, 0.99],
    "expit": [-30.0, -2.0, 0.0, 1.5],
    "exp2": [-3.0, 0.0, 2.5],
    "gammaln": [0.1, 1.5, 3.7],
    "digamma": [0.1, 1.5, 3.7],
    "i0": [-8.0, -1.0, 0.0, 2.0, 31.0],
    "i0e": [-8.0, -1.0, 0.0, 2.0, 31.0],
    "i1": [-8.0, -1.0, 0.5, 2.0, 31.0],
    "i1e": [-8.0, -1.0, 0.5, 2.0, 31.0],
    "ndtr": [-3.0, 0.0, 0.7, 3.0],
    "ndtri": [0.01, 0.3, 0.5, 0.9],
    "log_ndtr": [-10.0, -3.0, 0.0, 1.0, 5.0],
    "entr": [0.0, 0.5, 2.0],
    "sinc": [-1.5, 0.0, 0.3, 2.5],
}


FLOAT32_SCRIPTS = {n: value_and_grad(n, g, "float32") for n, g in FLOAT32.items()}
FLOAT32_SCRIPTS["softmax, log_softmax with dtype=float32"] = softmax_to_float32


@pytest.mark.parametrize("script", cases(FLOAT32_SCRIPTS))
def test_float32_to_float32_round_off(script, monkeypatch):
    monkeypatch.setattr(tape_scripts, "RTOL", 2e-5)
    monkeypatch.setattr(tape_scripts, "ATOL", 1e-7)
    check(script)


# ==== binary functions, the rest of the namespace, errors ====


def binary(name, first, second):
    def script(torch):
        x = torch.tensor(first, requires_grad=True)
        y = torch.tensor(second, requires_grad=True)
        z = getattr(torch.special, name)(x, y)
        (z * torch.linspace(-1, 1, z.numel()).reshape(z.shape)).sum().backward()
        return z, x.grad, y.grad, type(z.grad_fn).__name__

    return script


def binary_numbers(torch):
    s = torch.special
    y = torch.tensor([-1.0, 0.0, 0.5, float("nan")], requires_grad=True)
    f = torch.tensor([1.0, 2.0], dtype=torch.float32)
    out = [
        s.xlogy(2.0, y),
        s.xlog1py(2.0, y),
        s.xlogy(y, 3),
        s.xlog1py(y, 0.5),
        s.xlogy(0.0, y),
        s.xlog1py(f, 1.0),
        s.xlog1py(f, torch.tensor([1.0, 2.0])),
        s.xlog1py(torch.tensor([1, 2]), torch.tensor([0, 3])),
    ]
    out[1].sum().backward()
    return out, y.grad, [t.dtype for t in out]


def binary_double_backward(torch):
    x = torch.tensor([[0.5], [2.0]], requires_grad=True)
    y = torch.tensor([0.3, 1.5, 4.0], requires_grad=True)
    z = torch.special.xlog1py(x, y) + torch.special.xlogy(x, y)
    gx, gy = torch.autograd.grad(z.sum(), (x, y), create_graph=True)
    (gx.exp().sum() + gy.square().sum()).backward()
    return z, gx, gy, x.grad, y.grad


def multigammaln_second_derivative(torch):
    x = torch.tensor([1.7, 2.5, 6.0], requires_grad=True)
    y = torch.special.multigammaln(x, 4)
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (h,) = torch.autograd.grad((g * torch.tensor([1.0, 2.0, 3.0])).sum(), x)
    return y, g, h, type(y.grad_fn).__name__


def namespace_rest(torch):
    s = torch.special
    x = torch.tensor([[0.1, 0.5, 0.97], [-1.0, 2.0, 3.5]], requires_grad=True)
    p = torch.tensor([0.0, 0.01, 0.3, 0.99, 1.0], requires_grad=True)
    out = [
        s.logit(p),
        s.logit(p, eps=0.05),
        s.logit(p, 0.05),
        s.round(x * 3.3),
        s.round(x * 3.3, decimals=1),
        s.polygamma(2, x.abs() + 0.5),
        s.polygamma(0, x.abs() + 0.5),
        s.multigammaln(x.abs() + 2, 1),
        s.multigammaln(x.abs() + 2, 3),
        s.logsumexp(x, 1),
        s.logsumexp(x, (0, 1), keepdim=True),
        s.softmax(x, 0),
        s.log_softmax(x, -1),
    ]
    total = sum(t.double().sin().sum() for t in out[:3] + out[5:])
    grads = torch.autograd.grad(total, (x, p))
    return out, grads, [type(t.grad_fn).__name__ for t in out]


def integers_and_bools(torch):
    s = torch.special
    i = torch.tensor([0, 1, 3])
    b = torch.tensor([True, False])
    names = "erf erfc erfcx expit exp2 gammaln digamma i0 i0e i1 i1e ndtr log_ndtr "
    names += "entr sinc log1p expm1"
    return [getattr(s, n)(i) for n in names.split()] + [s.erfcx(b), s.i0(b)]


def out_argument(torch):
    s = torch.special
    x = torch.tensor([0.5, 1.5])
    o = [torch.empty(2) for _ in range(5)]
    s.erfcx(x, out=o[0])
    s.log_ndtr(x, out=o[1])
    s.erf(x, out=o[2])
    s.xlog1py(x, x, out=o[3])
    s.i0e(input=x, out=o[4])
    return o


def errors(torch):
    s = torch.special
    x = torch.tensor([1.5, 2.5])
    out = []
    for f in (
        lambda: s.erf(1.0),
        lambda: s.erfcx([1.0]),
        lambda: s.log_ndtr(0.5),
        lambda: s.polygamma(-1, x),
        lambda: s.multigammaln(x, 0),
        lambda: s.softmax(x),
        lambda: s.xlog1py(1.0, 2.0),
        lambda: s.erfcx(x, out=torch.empty(2, dtype=torch.int64)),
        lambda: s.not_a_function,
    ):
        try:
            f()
            out.append("no error")
        except Exception as e:  # noqa: BLE001 - the type is compared
            out.append(type(e).__name__)
    return out, hasattr(s, "erfcx"), callable(s.log_ndtr)


REST = {
    "xlogy, broadcast, at x = 0": binary("xlogy", [[0.0], [1.5]], [0.0, 0.5, 2.0]),
    "xlog1py, broadcast, at x = 0 and y = -1": binary(
        "xlog1py", [[0.0], [1.5]], [-1.0, 0.0, 0.5, 2.0]
    ),
    "xlogy and xlog1py with numbers, nan, dtypes": binary_numbers,
    "xlogy and xlog1py: second derivatives": binary_double_backward,
    "logit, round, polygamma, multigammaln, logsumexp, softmax, log_softmax": (
        namespace_rest
    ),
    "multigammaln: second derivative": multigammaln_second_derivative,
    "integer and bool inputs give floats": integers_and_bools,
    "out=": out_argument,
    "errors": errors,
}


@pytest.mark.parametrize("script", cases(REST))
def test_binary_and_the_rest(script):
    check(script)
