"""Benchmark runner: generated modules vs hand-written NumPy, PyTorch and JAX.

Usage::

    python -m benchmarks.run [CASE_PATTERN ...] [--generated-dir generated] [--quick]
    python benchmarks/run.py W3 W5          # only the mlp_classifier and LJ cases

For every case of :mod:`benchmarks.workloads` it loads ``<generated_dir>/<model>.py``
by file path (a missing module is skipped with a note), checks that the generated,
hand-written and PyTorch/JAX results agree to ``rtol=1e-9`` (max abs difference
relative to the largest magnitude of each array) and that nobody modified the inputs,
and only then times ``value_and_grad`` of every implementation in this one process,
single-threaded, interleaved round by round, best of ``repeat`` rounds.  The table
gives the hand NumPy time and every other implementation as a ratio to it; the target
is generated <= 1.10x hand NumPy (<= 0.5x for the tiny fixed-size cases) and the
status column says PASS or MISS.  It then measures the import time of each generated
module in a fresh interpreter against ``import numpy`` alone (target: <= numpy + 5 ms)
and the tracemalloc peak of generated vs hand ``value_and_grad`` on W3 batch 1024
(target: <= 1.5x).

Exit status of :func:`main`: 1 when a result is wrong (or ``--strict`` and a target is
missed), else 0.
"""

from __future__ import annotations

import os
import sys

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
_XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

if __name__ == "__main__":
    # Run as a script: pin every BLAS to one thread before NumPy is first imported.
    for _var in _THREAD_VARS:
        os.environ[_var] = "1"
    os.environ.setdefault("XLA_FLAGS", _XLA_ONE_THREAD)
    if not __package__:  # python benchmarks/run.py: make `benchmarks` importable
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import timeit  # noqa: E402
import tracemalloc  # noqa: E402
from collections.abc import Callable, Iterable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks import hand_numpy, hand_scalar, workloads  # noqa: E402
from benchmarks.workloads import Case  # noqa: E402

__all__ = [
    "run",
    "main",
    "measure",
    "agreement",
    "load_generated",
    "import_times",
    "peak_memory",
    "pin_threads",
    "unrolled_path",
]

RTOL = 1e-9  # agreement required before anything is timed
IMPORT_BUDGET_S = 0.005  # generated import may cost at most this over `import numpy`
MEMORY_TARGET = 1.5  # generated peak memory / hand peak memory
MEMORY_CASE = "W3/batch=1024"
REPO_ROOT = Path(__file__).resolve().parent.parent

IMPLS = ("generated", "hand", "scalar", "torch", "jax")


# --------------------------------------------------------------------------- setup


def _blas_library():
    """The OpenBLAS shared library already loaded into this process, or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None, None
    for path in sorted(p for p in paths if ".so" in p):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}_set_num_threads{suffix}"):
                    return lib, (prefix, suffix)
    return None, None


def pin_threads() -> str:
    """Single-thread every math library, also when NumPy is already imported.

    Sets the thread variables (for subprocesses and libraries not loaded yet), calls
    OpenBLAS's own ``set_num_threads(1)`` through ctypes (no threadpoolctl needed) and
    ``torch.set_num_threads(1)`` when torch is loaded.  Returns a one-line description.
    """
    for var in _THREAD_VARS:
        os.environ[var] = "1"
    os.environ.setdefault("XLA_FLAGS", _XLA_ONE_THREAD)
    desc = []
    lib, names = _blas_library()
    if lib is not None:
        prefix, suffix = names
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(1)
        get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
        core = getattr(lib, f"{prefix}_get_corename{suffix}", None)
        threads = get() if get is not None else "?"
        kernel = ""
        if core is not None:
            core.restype = ctypes.c_char_p
            kernel = f", {core().decode()} kernels"
        desc.append(f"OpenBLAS {threads} thread{kernel}")
    else:
        desc.append("BLAS threads via environment only")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
        desc.append(f"torch {sys.modules['torch'].get_num_threads()} thread")
    return "; ".join(desc)


def _tune_malloc() -> str:
    """Keep glibc from returning large temporaries to the OS after every call.

    By default glibc serves allocations above a dynamic threshold (128 KiB at start)
    with fresh mmap()s, so a function whose temporaries are just above it page-faults
    on every call while an identical one run after a bigger allocation does not:
    timings then depend on which implementation ran first (3x on W5 N=128).  Fixed
    thresholds make every implementation reuse heap memory, as in a warmed-up
    long-running process.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(-3, 32 * 2**20)  # M_MMAP_THRESHOLD: 32 MiB (glibc's maximum)
        ok = ok and libc.mallopt(-1, 512 * 2**20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        return "default malloc"
    return (
        "glibc malloc: mmap threshold 32 MiB, no trimming" if ok else "default malloc"
    )


def _optional(name):
    """Import benchmarks.<name> (torch_impl / jax_impl); (module or None, note)."""
    try:
        module = importlib.import_module(f"benchmarks.{name}")
    except ImportError as exc:
        return None, f"{name.split('_')[0]} not installed ({exc.name or exc})"
    return module, None


def load_generated(model: str, generated_dir="generated"):
    """Load ``<generated_dir>/<model>.py`` by file path.

    Returns ``(module, None)``, or ``(None, note)`` when the file is missing or fails
    to import.
    """
    path = _resolve_dir(generated_dir) / f"{model}.py"
    if not path.is_file():
        return None, f"no generated module {path}"
    spec = importlib.util.spec_from_file_location(f"_symgrad_bench_{model}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # a broken generated module is a result, not a crash
        return None, f"{path} failed to import: {type(exc).__name__}: {exc}"
    if not callable(getattr(module, "value_and_grad", None)):
        return None, f"{path} has no value_and_grad"
    return module, None


def unrolled_path(module, params, inputs) -> str | None:
    """The scalar-unrolled function (``_value_and_grad_batch_1``, ...) the module's
    ``value_and_grad`` dispatches to for these arrays, or None for the NumPy code."""
    names = [k for k in vars(module) if k.startswith("_value_and_grad_")]
    saved = {k: getattr(module, k) for k in names}
    ran = []
    for k in names:
        setattr(module, k, lambda *a, k=k: ran.append(k) or saved[k](*a))
    try:
        module.value_and_grad(params, inputs)
    finally:
        for k, fn in saved.items():
            setattr(module, k, fn)
    return ran[0] if ran else None


def _resolve_dir(generated_dir) -> Path:
    path = Path(generated_dir)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        return REPO_ROOT / path
    return path


# -------------------------------------------------------------------------- checks


def _max_rel_err(a, b) -> float:
    """max |a - b| relative to max |b|: round-off in entries that cancel to ~0 is
    judged against the array's scale, not against the tiny entry itself."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    diff = np.max(np.abs(a - b))
    scale = np.max(np.abs(b))
    if not np.isfinite(diff):
        return float("inf")
    return float(diff / scale) if scale > 0 else float(diff)


def agreement(result, reference, param_names) -> tuple[float, str | None]:
    """Worst relative error of ``(loss, grads)`` against the reference, and a problem
    description (wrong keys or shapes) or None."""
    loss, grads = result
    ref_loss, ref_grads = reference
    if not isinstance(grads, dict) or set(grads) != set(param_names):
        got = sorted(grads) if isinstance(grads, dict) else type(grads).__name__
        return float("inf"), f"gradient keys {got}, expected {sorted(param_names)}"
    worst = _max_rel_err(loss, ref_loss)
    for name in param_names:
        if np.shape(grads[name]) != np.shape(ref_grads[name]):
            return float("inf"), (
                f"grad {name} has shape {np.shape(grads[name])}, "
                f"expected {np.shape(ref_grads[name])}"
            )
        worst = max(worst, _max_rel_err(grads[name], ref_grads[name]))
    return worst, None


def _snapshot(arrays):
    return {k: np.array(v, copy=True) for k, v in arrays.items()}


def _unchanged(arrays, snapshot) -> bool:
    return all(np.array_equal(arrays[k], v) for k, v in snapshot.items())


# -------------------------------------------------------------------------- timing


def measure(
    fns: dict[str, Callable[[], object]], repeat: int = 15, min_time: float = 0.02
) -> dict[str, float]:
    """Best seconds per call of each zero-argument callable (timeit-style).

    The loop count of each callable is chosen (1, 2, 5, 10, 20, ...) so that one
    round takes at least ``min_time``; then ``repeat`` rounds run the callables
    interleaved in shuffled order, so slow drifts of the machine hit all of them
    alike, and the minimum over rounds is kept.  ``timeit`` switches the garbage
    collector off while timing.
    """
    timers = {name: timeit.Timer(fn) for name, fn in fns.items()}
    loops = {}
    for name, timer in timers.items():
        timer.timeit(1)  # warm up
        number = 1
        while True:
            for factor in (1, 2, 5):
                n = number * factor
                if timer.timeit(n) >= min_time:
                    break
            else:
                number *= 10
                continue
            break
        loops[name] = n
    best = dict.fromkeys(fns, float("inf"))
    order = list(timers)
    shuffle = random.Random(0).shuffle  # same orders on every run
    for _ in range(repeat):
        # A fresh order each round, so no callable always runs right after the same
        # neighbour (PyTorch or JAX leave caches cold and helper threads winding
        # down), and a short untimed run of the same callable just before each round.
        shuffle(order)
        for name in order:
            timers[name].timeit(max(1, loops[name] // 10))
            seconds = timers[name].timeit(loops[name]) / loops[name]
            best[name] = min(best[name], seconds)
    return best


# ---------------------------------------------------------------- import and memory

_IMPORT = """
import importlib.util, sys, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
spec = importlib.util.spec_from_file_location("generated_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(t1 - t0, time.perf_counter() - t1)
"""


def import_times(paths: Sequence[Path], runs: int = 5) -> tuple[float, dict]:
    """Best-of-``runs`` seconds of ``import numpy`` and, per module, of loading it
    after that, in the same fresh interpreter: the module's own cost, without the
    noise of subtracting two processes' timings.

    As in production, both load cached bytecode, also where the environment sets
    PYTHONDONTWRITEBYTECODE: the interpreters share a temporary pycache prefix, which
    a first, uncounted, load of each module fills."""
    numpy_s = float("inf")
    module_s = dict.fromkeys(paths, float("inf"))
    with tempfile.TemporaryDirectory() as pycache:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": pycache}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for run in range(runs + 1):
            for path in paths:
                out = subprocess.run(
                    [sys.executable, "-c", _IMPORT, str(path)],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                )
                numpy, module = map(float, out.stdout.split()[-2:])
                if run:
                    numpy_s = min(numpy_s, numpy)
                    module_s[path] = min(module_s[path], module)
    return numpy_s, module_s


def peak_memory(fn, params, inputs) -> int:
    """Peak bytes traced by tracemalloc during one ``fn(params, inputs)`` call, above
    what was allocated before it (NumPy reports its array buffers to tracemalloc)."""
    fn(params, inputs)  # warm: lazy imports, caches
    gc.collect()
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn(params, inputs)
        peak = tracemalloc.get_traced_memory()[1] - base
        del result
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return peak


# --------------------------------------------------------------------------- run


def _fmt_ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def _as_cases(cases) -> list[Case]:
    """Case objects and/or id/model patterns -> cases in table order, no repeats."""
    if cases is None:
        return list(workloads.CASES)
    if isinstance(cases, str | Case):
        cases = [cases]
    cases = list(cases)
    ids = {c.id for c in cases if isinstance(c, Case)}
    patterns = [c for c in cases if not isinstance(c, Case)]
    if patterns:
        ids |= {c.id for c in workloads.select(patterns)}
    extra = [c for c in cases if isinstance(c, Case) and c not in workloads.CASES]
    selected = [c for c in workloads.CASES if c.id in ids] + extra
    if not selected:
        raise ValueError(f"no benchmark case matches {cases}")
    return selected


def _bench_case(case, gen, impls, repeat, min_time) -> dict:
    """Check then time one case; return its record."""
    params, inputs = case.make()
    names = list(params)
    hand = hand_numpy.WORKLOADS[case.model]
    fns = {"hand": hand}
    if gen is not None:
        fns["generated"] = gen.value_and_grad
    if case.small and case.model in hand_scalar.WORKLOADS:
        fns["scalar"] = hand_scalar.WORKLOADS[case.model]
    for key, module in impls.items():
        if module is not None and case.model in module.WORKLOADS:
            fns[key] = module.WORKLOADS[case.model]

    record = {
        "kind": "time",
        "case": case.id,
        "model": case.model,
        "target": case.target,
        "times_us": {},
        "ratios": {},
        "errors": {},
        "notes": [],
    }
    snap_p, snap_i = _snapshot(params), _snapshot(inputs)
    reference = hand(params, inputs)
    ok = {}
    for key, fn in fns.items():
        try:
            result = reference if key == "hand" else fn(params, inputs)
            err, problem = agreement(result, reference, names)
        except Exception as exc:  # report, do not crash the whole run
            err, problem = float("inf"), f"raised {type(exc).__name__}: {exc}"
        if not (_unchanged(params, snap_p) and _unchanged(inputs, snap_i)):
            problem = "modified its params/inputs"
            params, inputs = case.make()
        record["errors"][key] = err
        if problem is None and not err <= RTOL:
            problem = f"differs from hand NumPy by {err:.2e} (rtol {RTOL:g})"
        if problem is not None:
            record["notes"].append(f"{key}: {problem}; not timed")
        ok[key] = problem is None

    if not ok["hand"]:  # no baseline to compare with: nothing is timed
        record["status"] = "FAIL"
        return record
    timed = {k: (lambda fn=fn: fn(params, inputs)) for k, fn in fns.items() if ok[k]}
    seconds = measure(timed, repeat=repeat, min_time=min_time)
    hand_s = seconds["hand"]
    for key, s in seconds.items():
        record["times_us"][key] = s * 1e6
        if key != "hand":
            record["ratios"][key] = s / hand_s

    if gen is not None and ok["generated"]:
        record["path"] = unrolled_path(gen, params, inputs)
        if case.small:
            path = record["path"] or "the vectorized NumPy code (no m.unroll size)"
            record["notes"].append(f"generated value_and_grad ran {path}")
    if gen is None:
        record["status"] = "SKIP"
    elif not ok["generated"]:
        record["status"] = "FAIL"
    else:
        passed = record["ratios"]["generated"] <= case.target
        record["status"] = "PASS" if passed else "MISS"
        if not passed:
            record["notes"].append(
                f"generated is {record['ratios']['generated']:.2f}x hand NumPy, "
                f"target <= {case.target:.2f}x: MISSED"
            )
    return record


def _row(cells, widths) -> str:
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def run(
    cases=None,
    generated_dir="generated",
    repeat: int = 15,
    file=sys.stdout,
    *,
    min_time: float = 0.02,
    imports: bool = True,
    memory: bool = True,
    configure_process: bool = True,
) -> list[dict]:
    """Benchmark ``cases`` (Case objects or id/model patterns; None: all) and print a
    report to ``file``.  Returns one dict per case (``kind="time"``), per generated
    module import (``kind="import"``) and for the memory check (``kind="memory"``),
    each with a ``status`` of PASS, MISS, FAIL or SKIP.

    With ``configure_process`` (the default) it first pins BLAS/torch to one thread
    (:func:`pin_threads`) and fixes glibc's malloc thresholds, for the rest of the
    process; pass False to leave the process as it is (tests)."""

    def emit(*lines):
        for line in lines:
            print(line, file=file, flush=True)

    selected = _as_cases(cases)
    malloc = _tune_malloc() if configure_process else "malloc untouched"
    impls = {}
    notes = []
    for key, name in (("torch", "torch_impl"), ("jax", "jax_impl")):
        impls[key], note = _optional(name)
        if note:
            notes.append(note)
    # after the imports: torch_impl has loaded torch
    threads = pin_threads() if configure_process else "threads untouched"

    versions = [f"Python {platform.python_version()}", f"NumPy {np.__version__}"]
    for key, mod in (("torch", "torch"), ("jax", "jax")):
        if impls[key] is not None:
            versions.append(f"{mod} {sys.modules[mod].__version__}")
    emit(f"symgrad bench: {', '.join(versions)}")
    emit(f"  {threads}; {malloc}")
    if os.environ.get("OPENBLAS_CORETYPE"):
        emit(
            f"  note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set: "
            "absolute times (and torch/jax ratios) reflect that BLAS kernel"
        )
    for note in notes:
        emit(f"  note: {note}: column skipped")
    emit(
        f"  fwd+bwd value_and_grad, best of {repeat} interleaved rounds of "
        f">= {min_time * 1e3:g} ms; results checked to rtol {RTOL:g} first",
        "",
    )

    cols = ["case", "hand us", "gen/hand", "scalar/hand", "torch/hand", "jax/hand"]
    cols += ["target", "status"]
    widths = [22, 10, 9, 12, 11, 9, 7, 6]
    emit(_row(cols, widths), _row(["-" * w for w in widths], widths))

    records = []
    generated = {}
    for case in selected:
        if case.model not in generated:
            generated[case.model] = load_generated(case.model, generated_dir)
        gen, note = generated[case.model]
        rec = _bench_case(case, gen, impls, repeat, min_time)
        if note:
            rec["notes"].insert(0, f"generated: {note}")
        records.append(rec)
        r = rec["ratios"]
        emit(
            _row(
                [
                    case.id,
                    f"{rec['times_us']['hand']:.1f}" if rec["times_us"] else "-",
                    _fmt_ratio(r.get("generated")),
                    _fmt_ratio(r.get("scalar")),
                    _fmt_ratio(r.get("torch")),
                    _fmt_ratio(r.get("jax")),
                    f"<={case.target:.2f}",
                    rec["status"],
                ],
                widths,
            )
        )
        for line in rec["notes"]:
            emit(f"    {line}")

    loaded = {m: mod for m, (mod, _) in generated.items() if mod is not None}
    if imports and loaded:
        records.extend(_import_section(loaded, emit))
    elif imports:
        emit("", "import time: skipped (no generated module was loaded)")
    if memory:
        records.extend(_memory_section(generated, generated_dir, emit))

    emit("", _summary(records))
    return records


def _import_section(loaded: dict, emit) -> list[dict]:
    paths = {m: Path(mod.__file__) for m, mod in loaded.items()}
    numpy_s, module_s = import_times(list(paths.values()))
    emit(
        "",
        f"import time in a fresh interpreter, bytecode cached (best of 5): numpy "
        f"{numpy_s * 1e3:.1f} ms, then the module; target <= numpy + "
        f"{IMPORT_BUDGET_S * 1e3:g} ms",
    )
    records = []
    for model, path in paths.items():
        extra = module_s[path]
        status = "PASS" if extra <= IMPORT_BUDGET_S else "MISS"
        emit(f"  {model:<22} numpy + {extra * 1e3:5.2f} ms  {status}")
        records.append(
            {
                "kind": "import",
                "model": model,
                "numpy_ms": numpy_s * 1e3,
                "extra_ms": extra * 1e3,
                "target_ms": IMPORT_BUDGET_S * 1e3,
                "status": status,
            }
        )
    return records


def _memory_section(generated: dict, generated_dir, emit) -> list[dict]:
    case = workloads.select([MEMORY_CASE])[0]
    params, inputs = case.make()
    hand_peak = peak_memory(hand_numpy.WORKLOADS[case.model], params, inputs)
    if case.model not in generated:
        generated[case.model] = load_generated(case.model, generated_dir)
    gen, note = generated[case.model]
    record = {
        "kind": "memory",
        "case": case.id,
        "hand_bytes": hand_peak,
        "generated_bytes": None,
        "ratio": None,
        "target": MEMORY_TARGET,
        "status": "SKIP",
    }
    line = f"  hand {hand_peak / 2**20:.2f} MiB"
    if gen is not None:
        gen_peak = peak_memory(gen.value_and_grad, params, inputs)
        ratio = gen_peak / hand_peak
        record.update(generated_bytes=gen_peak, ratio=ratio)
        record["status"] = "PASS" if ratio <= MEMORY_TARGET else "MISS"
        line += (
            f", generated {gen_peak / 2**20:.2f} MiB: {ratio:.2f}x "
            f"(target <= {MEMORY_TARGET:g}x)  {record['status']}"
        )
    else:
        line += f"; generated skipped ({note})"
    emit("", f"peak memory of one value_and_grad on {case.id} (tracemalloc):", line)
    return [record]


def _summary(records) -> str:
    counts = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    labels = {"time": "{case}", "import": "import {model}", "memory": "memory {case}"}
    missed = [
        labels[r["kind"]].format(**r)
        for r in records
        if r["status"] in ("MISS", "FAIL")
    ]
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if missed:
        text += f"; missed or wrong: {', '.join(missed)}"
    return f"summary: {text}"


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="symgrad bench",
        description="Time generated value_and_grad against hand-written NumPy, "
        "PyTorch and JAX (one process, one thread).",
    )
    parser.add_argument(
        "cases", nargs="*", help="case ids or substrings (W3, lennard, W1/batch=1)"
    )
    parser.add_argument("--generated-dir", default="generated")
    parser.add_argument("--repeat", type=int, default=15, help="timing rounds")
    parser.add_argument(
        "--min-time", type=float, default=0.02, help="seconds per round and impl"
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 rounds of >= 10 ms (rough numbers)"
    )
    parser.add_argument("--no-import", action="store_true", help="skip import times")
    parser.add_argument("--no-memory", action="store_true", help="skip memory peak")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a target is missed"
    )
    args = parser.parse_args(None if argv is None else list(argv))
    repeat, min_time = (3, 0.01) if args.quick else (args.repeat, args.min_time)
    try:
        records = run(
            args.cases or None,
            generated_dir=args.generated_dir,
            repeat=repeat,
            min_time=min_time,
            imports=not args.no_import,
            memory=not args.no_memory,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    statuses = {r["status"] for r in records}
    if "FAIL" in statuses or (args.strict and "MISS" in statuses):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
