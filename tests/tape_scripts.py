"""Round 11's harness for PyTorch scripts run twice: a script is a function
`script(torch)` written only with `torch.` names; it runs once on torch (float64) and
once on symgrad.tape, and everything it returns is compared (values, Python types,
dtypes, shapes, printed text, or the exception type raised)."""

import re
import warnings

import numpy as np
import pytest

from symgrad import tape

torch = pytest.importorskip("torch")

RTOL, ATOL = 1e-9, 1e-12


def same(ours, theirs, path="result"):
    """`ours` (from the tape) matches `theirs` (from torch): structure, Python types,
    tensors' class, shape, dtype, requires_grad and values, strings exactly."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, tape.Tensor), f"{path}: {type(ours)}"
        assert type(ours).__name__ == type(theirs).__name__, path  # Parameter/Tensor
        assert tuple(ours.shape) == tuple(theirs.shape), path
        assert str(ours.dtype) == str(theirs.dtype), path
        assert ours.requires_grad == theirs.requires_grad, path
        np.testing.assert_allclose(
            np.asarray(ours.detach().numpy(), dtype=float),
            np.asarray(theirs.detach().numpy(), dtype=float),
            rtol=RTOL,
            atol=ATOL,
            err_msg=path,
        )
    elif isinstance(theirs, torch.dtype):
        assert str(ours) == str(theirs), path
    elif isinstance(theirs, torch.Size):
        assert isinstance(ours, tuple), path
        assert tuple(ours) == tuple(theirs) and str(ours) == str(theirs), path
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), path
        for k in theirs:
            same(ours[k], theirs[k], f"{path}[{k!r}]")
    elif isinstance(theirs, list | tuple):
        assert isinstance(ours, list) == isinstance(theirs, list), path
        assert isinstance(ours, tuple) == isinstance(theirs, tuple), path
        assert len(ours) == len(theirs), f"{path}: {ours!r} vs {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float):
        assert type(ours) is float, f"{path}: {ours!r} vs {theirs!r}"
        np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=path)
    elif isinstance(theirs, str):
        assert type(ours) is str, f"{path}: {ours!r} vs {theirs!r}"
        same_text(ours, theirs, path)
    else:
        assert type(ours) is type(theirs), f"{path}: {ours!r} vs {theirs!r}"
        assert ours == theirs, f"{path}: {ours!r} vs {theirs!r}"


NUMBER = re.compile(r"-?\d+\.\d{5,}(?:e[-+]?\d+)?")


def same_text(ours, theirs, path):
    """Printed text equal, except that numbers printed to full precision (f"{x}" of
    a float: five decimals or more) may differ in the last digits (round-off)."""
    if ours == theirs:
        return
    message = f"{path}:\n{ours}\n  vs torch\n{theirs}"
    assert NUMBER.split(ours) == NUMBER.split(theirs), message
    a = [float(v) for v in NUMBER.findall(ours)]
    b = [float(v) for v in NUMBER.findall(theirs)]
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=message)


def run(script, lib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return script(lib)


def check(script):
    """script(torch) and script(tape) return the same; where torch raises, the tape
    raises the same type."""
    try:
        theirs = run(script, torch)
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        with pytest.raises(type(exc)):
            run(script, tape)
        return
    same(run(script, tape), theirs)


def init_from(model, torch, seed=0, scale=0.5):
    """Every parameter from the same NumPy draws in both libraries, in order."""
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.tensor(scale * rng.standard_normal(tuple(p.shape))))
    return model


def draws(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def no_address(text):
    return re.sub(r" at 0x[0-9a-f]+", "", text)


def differs(reason, raises=AssertionError):
    """A strict xfail for a script whose tape result differs from torch's."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


def missing(name, raises=AttributeError):
    """A strict xfail for a script reaching for an API the tape lacks."""
    return pytest.mark.xfail(strict=True, raises=raises, reason=f"missing: {name}")


def cases(table):
    """Parametrize over a dict whose values are a script or (script, mark)."""
    params = []
    for name, value in table.items():
        fn, marks = value if isinstance(value, tuple) else (value, ())
        params.append(pytest.param(fn, marks=marks, id=name))
    return params
