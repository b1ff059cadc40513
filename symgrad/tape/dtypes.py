"""torch's dtypes (torch.float32, ...): small objects wrapping a NumPy dtype, torch's
names for them ('Double', 'Long'), which its error messages use, and torch.device."""

import numpy as np


class dtype:
    """torch.dtype: prints as torch.float64 and answers is_floating_point, as torch's
    does. NumPy takes it wherever it takes a dtype (it reads `.dtype`, the wrapped
    np.dtype); `.kind` is NumPy's, which the engine's code reads."""

    __slots__ = (
        "dtype",
        "kind",
        "itemsize",
        "is_floating_point",
        "is_complex",
        "is_signed",
    )

    def __init__(self, numpy_dtype):
        self.dtype = numpy_dtype
        self.kind, self.itemsize = numpy_dtype.kind, numpy_dtype.itemsize
        self.is_floating_point = self.kind == "f"
        self.is_complex = self.kind == "c"
        self.is_signed = self.kind in "fic"

    def __eq__(self, other):
        """Equal to the same dtype, and to the NumPy dtype or type it wraps, which
        the engine (and tests) compare with: `x.dtype == np.int64`."""
        if isinstance(other, dtype):
            return self.dtype == other.dtype
        if isinstance(other, np.dtype) or (
            isinstance(other, type) and issubclass(other, np.generic)
        ):
            return self.dtype == other
        return NotImplemented

    def __hash__(self):
        return hash(self.dtype)

    def __repr__(self):
        return f"torch.{self.dtype.name}"


class _OfNumpy(dict):
    """The dtype object of each NumPy dtype, made on first use (also for NumPy dtypes
    torch lacks, such as uint64), so that `x.dtype is torch.float32` holds."""

    def __missing__(self, numpy_dtype):
        self[numpy_dtype] = value = dtype(numpy_dtype)
        return value


of_numpy = _OfNumpy()

float16 = half = of_numpy[np.dtype(np.float16)]
float32 = float = of_numpy[np.dtype(np.float32)]
float64 = double = of_numpy[np.dtype(np.float64)]
uint8 = of_numpy[np.dtype(np.uint8)]
int8 = of_numpy[np.dtype(np.int8)]
int16 = short = of_numpy[np.dtype(np.int16)]
int32 = int = of_numpy[np.dtype(np.int32)]
int64 = long = of_numpy[np.dtype(np.int64)]
bool = of_numpy[np.dtype(np.bool_)]

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


def check_device(device):
    """torch built without CUDA, as the tape is, refuses to put anything on a CUDA
    device (a script must check cuda.is_available() first)."""
    if isinstance(device, str) and device.partition(":")[0] == "cuda":
        raise AssertionError("Torch not compiled with CUDA enabled")


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
