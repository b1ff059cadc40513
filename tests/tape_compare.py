"""Running one piece of PyTorch code on torch and on symgrad.tape and comparing results:
values, dtypes, shapes and Python types, or the type of the exception raised."""

import warnings

import numpy as np
import pytest

from symgrad import tape

torch = pytest.importorskip("torch")

RTOL = 1e-10


def dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def to_np(x):
    """Tensors (and nested tuples/lists/dicts of them) as NumPy arrays."""
    if isinstance(x, tape.Tensor | torch.Tensor):
        return np.array(x.detach().numpy())
    if isinstance(x, dict):
        return {k: to_np(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return type(x)(to_np(v) for v in x)
    return x


def assert_same(ours, theirs):
    """Same structure; tensors with the same shape, dtype and values (to RTOL)."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, tape.Tensor), type(ours)
        assert tuple(ours.shape) == tuple(theirs.shape)
        assert dtype_name(ours) == dtype_name(theirs)
        np.testing.assert_allclose(to_np(ours), to_np(theirs), rtol=RTOL, atol=1e-12)
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs)
        for k in theirs:
            assert_same(ours[k], theirs[k])
    elif isinstance(theirs, tuple | list):
        assert len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert_same(a, b)
    elif isinstance(theirs, torch.dtype):  # the tape's dtypes are its own objects
        assert isinstance(ours, tape.dtype) and str(ours) == str(theirs), ours
    elif isinstance(theirs, float) and not isinstance(theirs, bool):
        assert type(ours) is float
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-12)
    else:
        assert type(ours) is type(theirs), (ours, theirs)
        assert ours == theirs


def quiet(fn, lib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(lib)


def check(fn):
    """``fn(lib)`` gives the same on tape as on torch."""
    theirs = quiet(fn, torch)
    ours = quiet(fn, tape)
    assert_same(ours, theirs)


def raised(fn, lib):
    try:
        quiet(fn, lib)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return exc
    return None


def check_raises(fn):
    """torch raises, and tape raises an instance of torch's exception type."""
    theirs = raised(fn, torch)
    assert theirs is not None, "torch did not raise"
    ours = raised(fn, tape)
    assert ours is not None, "tape did not raise"
    assert isinstance(ours, type(theirs)), (type(ours), type(theirs))


def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def weights(y, m, seed=9):
    """A fixed cotangent of y's shape, so every output element gets its own weight."""
    return m.tensor(data(*y.shape, seed=seed))


def values_and_grad(op, shape=(2, 3, 4)):
    """op(m, x) and d(sum(op * w))/dx for x of `shape`."""

    def fn(m):
        x = m.tensor(data(*shape), requires_grad=True)
        y = op(m, x)
        if y.requires_grad:
            (y * weights(y, m)).sum().backward()
        return y, x.grad

    return fn


def set_linear(lin, m, seed=0):
    """Deterministic weights for an nn.Linear, the same in both libraries."""
    with m.no_grad():
        lin.weight.copy_(m.tensor(0.5 * data(*lin.weight.shape, seed=seed)))
        if lin.bias is not None:
            lin.bias.copy_(m.tensor(0.1 * data(*lin.bias.shape, seed=seed + 1)))
    return lin
