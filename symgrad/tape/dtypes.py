"""torch's dtypes as NumPy scalar types (torch.float32 is np.float32, ...), torch's
names for them ('Double', 'Long'), which its error messages use, and torch.device."""

import numpy as np

float16 = half = np.float16
float32 = float = np.float32
float64 = double = np.float64
uint8 = np.uint8
int8 = np.int8
int16 = short = np.int16
int32 = int = np.int32
int64 = long = np.int64
bool = np.bool_

_SCALAR_NAMES = {
    np.dtype(np.float16): "Half",
    np.dtype(np.float32): "Float",
    np.dtype(np.float64): "Double",
    np.dtype(np.uint8): "Byte",
    np.dtype(np.int8): "Char",
    np.dtype(np.int16): "Short",
    np.dtype(np.int32): "Int",
    np.dtype(np.int64): "Long",
    np.dtype(np.bool_): "Bool",
}


def scalar_name(dtype):
    """torch's name for dtype in messages: 'Long' for int64 (NumPy's name if torch
    has no such dtype)."""
    return _SCALAR_NAMES.get(np.dtype(dtype), str(dtype))


class finfo:
    """torch.finfo: a float dtype's limits (the default dtype's if not given), as
    Python floats."""

    def __init__(self, type=None):
        info = np.finfo(get_default_dtype() if type is None else type)
        self.bits, self.dtype = info.bits, str(info.dtype)
        self.eps, self.max, self.min = info.eps.item(), info.max.item(), info.min.item()
        self.tiny = self.smallest_normal = info.smallest_normal.item()
        self.resolution = info.resolution.item()


class iinfo:
    """torch.iinfo: an integer dtype's limits, as Python ints."""

    def __init__(self, type):
        info = np.iinfo(type)
        self.bits, self.dtype, self.max, self.min = (
            info.bits,
            str(info.dtype),
            info.max,
            info.min,
        )


def get_default_dtype():
    """The dtype of floats made without one: float64 in the tape (torch: float32)."""
    return float64


def set_default_dtype(d):
    """Accepted for float64, the tape's fixed default, so that scripts setting it
    run unchanged; other floats raise rather than be silently ignored."""
    if np.dtype(d).kind != "f":
        raise TypeError("only floating-point types are supported as the default type")
    if np.dtype(d) != np.float64:
        raise NotImplementedError(
            "symgrad.tape computes in float64 by default and cannot change it to "
            f"{np.dtype(d)}"
        )


class device:
    """torch.device: the CPU is the only one, so every tensor's .device is cpu."""

    def __init__(self, type="cpu", index=None):
        if str(type).partition(":")[0] != "cpu":
            raise RuntimeError(f"symgrad.tape runs on the CPU only, not {type}")
        self.type, self.index = "cpu", None

    def __eq__(self, other):
        return isinstance(other, device)

    def __hash__(self):
        return hash(self.type)

    def __str__(self):
        return "cpu"

    def __repr__(self):
        return "device(type='cpu')"
