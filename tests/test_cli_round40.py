"""Round 40: a new user drives the command line on their own model files.

Not covered by test_workflow.py: several user files in one build, sibling helper
modules, paths with spaces and non-ASCII characters, --out pointing at a file or at a
nested directory that does not exist yet, following check's "run: ..." hint literally,
--hessian builds checked with and without the flag, Ctrl-C while a model builds or a
module is written, determinism of a user build across processes, and using a generated
module in a process where sympy, torch and symgrad cannot be imported (SciPy's
minimize with jac=True, then the optimum checked against PyTorch).

Found (9 strict xfails when written, all fixed since): two model files whose sibling
helpers.py differ got the first file's helpers, silently (cli._load_file now drops the
file's own modules after it); a @dataclass in a model file could not load (the module
is now in sys.modules while it runs); a file without .py gave "'NoneType' object has
no attribute 'loader'"; a folder was called missing; a duplicate model name did not say
which files; check's hint was not shell-quoted (shlex.join); --hessian builds' phases
left out the hessian time; `python -m symgrad` did not run (symgrad/__main__.py); a
non-ASCII model name was said not to be a Python identifier (it is; it is not ASCII).
"""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import run_cli, symgrad_command

import symgrad.codegen
from symgrad.cli import _timing, main

ROOT = Path(__file__).resolve().parents[1]

TINY = """
import symgrad as sg

def build():
    m = sg.Model({name!r}, doc="A user's tiny model.")
    x = m.input("x", ("batch", 2))
    w = m.param("w", (2,))
    m.loss(sg.mean(sg.{activation}(x @ w) ** 2))
    return m
"""

# A model that imports its activation from a sibling helper module, as `python
# model.py` would find it.
HELPER = """
import symgrad as sg

def act(z):
    return sg.{activation}(z)
"""

WITH_HELPER = """
import symgrad as sg
from helpers import act

def build():
    m = sg.Model({name!r})
    x = m.input("x", ("batch", 2))
    w = m.param("w", (2,))
    m.loss(sg.mean(act(x @ w) ** 2))
    return m
"""

MLP = """
import symgrad as sg

def build():
    m = sg.Model("user_mlp", doc="2-4-1 tanh/softplus regression.")
    x = m.input("x", ("batch", 2))
    y = m.input("y", ("batch", 1))
    W1, b1 = m.param("W1", (4, 2)), m.param("b1", (4,))
    W2, b2 = m.param("W2", (1, 4)), m.param("b2", (1,))
    h = m.let("h", sg.tanh(x @ W1.T + b1))
    pred = m.output("pred", sg.softplus(h @ W2.T + b2))
    m.loss(sg.mean((pred - y) ** 2) + 1e-3 * (sg.sum(W1**2) + sg.sum(W2**2)))
    return m
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def tiny(path: Path, name: str = "tiny", activation: str = "tanh") -> Path:
    return write(path, TINY.format(name=name, activation=activation))


def snapshot(directory: Path) -> dict:
    if not directory.exists():
        return {}
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def leftovers(directory: Path) -> list[str]:
    """Temporary files a write could leave behind."""
    return sorted(p.name for p in directory.rglob("*") if p.name.endswith(".tmp"))


def rebuild_hint(stdout: str, path_name: str) -> list[str]:
    """The words of check's `(run: symgrad build ...)` for the module ``path_name``."""
    match = re.search(
        rf"stale: .*{re.escape(path_name)} \(run: (symgrad build .*)\)", stdout
    )
    assert match, stdout
    return shlex.split(match.group(1))


# --------------------------------------------------------------------------- builds


def test_two_user_files_in_one_build_into_a_nested_new_directory(
    tmp_path, monkeypatch, capsys
):
    """Relative paths, an --out three levels deep that does not exist yet; one line
    per model (op counts, phases, verification), then the writes, only after every
    model has been verified."""
    monkeypatch.chdir(tmp_path)
    tiny(tmp_path / "models" / "first.py", "first", "tanh")
    tiny(tmp_path / "models" / "second.py", "second", "softplus")
    out = Path("build") / "deep" / "gen"
    args = ["models/first.py", "models/second.py", "--out", str(out)]
    assert main(["build", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "first",
        "second",
        f"wrote {out / 'first.py'}",
        f"wrote {out / 'second.py'}",
    ]
    for line, name in zip(lines[:2], ["first", "second"], strict=True):
        header = (out / f"{name}.py").read_text().splitlines()[1]
        ops = header.split("Ops: forward ")[1]
        assert f"{name}: ops forward {ops}, compiled in " in line
        assert re.search(
            r"verified \(tape \de-\d\d, fd \de-\d\d\) \[\d+\.\d\d s\]$", line
        )
    assert sorted(p.name for p in out.iterdir()) == ["first.py", "second.py"]
    assert main(["check", *args]) == 0
    assert capsys.readouterr().out.count("ok: ") == 2


def test_out_that_is_an_existing_file_is_refused_and_left_alone(tmp_path, capsys):
    model = tiny(tmp_path / "tiny.py")
    target = write(tmp_path / "notes.txt", "my notes\n")
    for out in (target, target / "sub"):
        assert main(["build", str(model), "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1 and "is not a directory" in err and str(target) in err
        )
    assert target.read_text() == "my notes\n"


def test_out_being_the_model_files_own_directory_never_replaces_the_model(
    tmp_path, capsys
):
    model = tiny(tmp_path / "tiny.py")  # builds a model named "tiny": tiny.py again
    before = snapshot(tmp_path)
    assert main(["build", str(model), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "symgrad did not generate it" in err and "tiny.py" in err
    assert snapshot(tmp_path) == before


def test_user_file_with_a_sibling_helper_module_builds(tmp_path):
    write(tmp_path / "proj" / "helpers.py", HELPER.format(activation="sigmoid"))
    write(tmp_path / "proj" / "model.py", WITH_HELPER.format(name="helped"))
    done = run_cli(["build", "proj/model.py", "--out", "gen"], tmp_path)
    assert done.returncode == 0, done.stderr
    source = (tmp_path / "gen" / "helped.py").read_text()
    assert "np.exp" in source and "np.tanh" not in source


def test_two_model_files_with_same_named_sibling_helpers(tmp_path):
    """a/helpers.py uses tanh, b/helpers.py sigmoid; each model.py does `from helpers
    import act`. Building both in one command gives b's model a's tanh (and it
    'verifies', since the tape runs the same wrong model)."""
    for d, act in (("a", "tanh"), ("b", "sigmoid")):
        write(tmp_path / d / "helpers.py", HELPER.format(activation=act))
        write(tmp_path / d / "model.py", WITH_HELPER.format(name=f"m_{d}"))
    both = run_cli(["build", "a/model.py", "b/model.py", "--out", "both"], tmp_path)
    alone = run_cli(["build", "b/model.py", "--out", "alone", "--no-verify"], tmp_path)
    assert both.returncode == 0 and alone.returncode == 0, both.stderr + alone.stderr
    assert "np.tanh" not in (tmp_path / "both" / "m_b.py").read_text()
    assert (tmp_path / "both" / "m_b.py").read_bytes() == (
        tmp_path / "alone" / "m_b.py"
    ).read_bytes()


def test_a_model_file_with_a_dataclass_config(tmp_path, capsys):
    model = write(
        tmp_path / "configured.py",
        """
        from __future__ import annotations

        from dataclasses import dataclass

        import symgrad as sg


        @dataclass
        class Config:
            hidden: int = 3


        def build():
            m = sg.Model("configured")
            x = m.input("x", ("batch", 2))
            W = m.param("W", (Config().hidden, 2))
            m.loss(sg.mean(sg.tanh(x @ W.T) ** 2))
            return m
        """,
    )
    direct = subprocess.run(
        [sys.executable, str(model)], capture_output=True, text=True, cwd=tmp_path
    )
    assert direct.returncode == 0, direct.stderr  # plain Python runs it
    status = main(["build", str(model), "--out", str(tmp_path / "gen"), "--no-verify"])
    assert status == 0, capsys.readouterr().err
    assert (tmp_path / "gen" / "configured.py").is_file()


def test_a_model_file_without_the_py_suffix(tmp_path, capsys):
    model = tiny(tmp_path / "mymodel")  # an existing file: load_models takes it
    status = main(["build", str(model), "--out", str(tmp_path / "gen"), "--no-verify"])
    err = capsys.readouterr().err
    assert "NoneType" not in err
    assert status == 0 or str(model) in err


def test_two_files_declaring_the_same_model_name_are_both_named(tmp_path, capsys):
    first = tiny(tmp_path / "one" / "model.py", "tiny")
    second = tiny(tmp_path / "two" / "other.py", "tiny")
    assert main(["build", str(first), str(second), "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "two models are named 'tiny'" in err
    assert not (tmp_path / "g").exists()
    assert str(first) in err and str(second) in err


def test_a_directory_given_as_a_model_file_is_not_called_missing(tmp_path, capsys):
    (tmp_path / "models").mkdir()
    assert main(["build", str(tmp_path / "models"), "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "does not exist" not in err and "directory" in err


def test_a_non_ascii_model_name_is_refused_with_a_true_message(tmp_path, capsys):
    model = tiny(tmp_path / "mod.py", "modèle")
    assert "modèle".isidentifier()
    assert main(["build", str(model), "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert "modèle" in err and "not a Python identifier" not in err


# --------------------------------------------------------------------------- check


def test_following_checks_hint_literally_brings_a_spaced_path_up_to_date(
    tmp_path, monkeypatch, capsys
):
    """Paths with spaces and non-ASCII letters: build, edit, check (exit 1, a diff of
    the file, the command to run), rebuild, check (exit 0)."""
    monkeypatch.chdir(tmp_path)
    model = tiny(tmp_path / "mes modèles" / "tiny.py")
    rel_model, out = "mes modèles/tiny.py", "sortie générée"
    assert main(["build", rel_model, "--out", out, "--no-verify"]) == 0
    tiny(model, activation="softplus")
    capsys.readouterr()
    before = snapshot(tmp_path / out)
    assert main(["check", rel_model, "--out", out]) == 1
    stdout = capsys.readouterr().out
    assert f"--- {out}/tiny.py (committed)" in stdout
    assert f"+++ {out}/tiny.py (rebuilt)" in stdout
    assert snapshot(tmp_path / out) == before
    words = rebuild_hint(stdout, "tiny.py")
    assert words == ["symgrad", "build", rel_model, "--out", out]
    assert main(words[1:]) == 0
    assert main(["check", rel_model, "--out", out]) == 0


def test_checks_hint_is_a_shell_command_for_paths_with_spaces(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    model = tiny(tmp_path / "my models" / "tiny.py")
    assert main(["build", "my models/tiny.py", "--out", "out dir", "--no-verify"]) == 0
    tiny(model, activation="sigmoid")
    assert main(["check", "my models/tiny.py", "--out", "out dir"]) == 1
    words = rebuild_hint(capsys.readouterr().out, "tiny.py")
    assert words == ["symgrad", "build", "my models/tiny.py", "--out", "out dir"]


def test_hessian_build_checked_with_and_without_the_flag_then_edited(tmp_path):
    model = write(tmp_path / "mlp.py", MLP)
    out = tmp_path / "g"
    assert main(["build", str(model), "--out", str(out), "--hessian"]) == 0
    source = (out / "user_mlp.py").read_text()
    assert "def hvp(" in source and "def hessian(" in source
    assert main(["check", str(model), "--out", str(out)]) == 0
    assert main(["check", str(model), "--out", str(out), "--hessian"]) == 0
    write(model, MLP.replace("1e-3", "2e-3"))
    assert main(["check", str(model), "--out", str(out)]) == 1
    # A plain rebuild drops hvp; check then finds it fresh (as a plain module).
    assert main(["build", str(model), "--out", str(out), "--no-verify"]) == 0
    assert "def hvp(" not in (out / "user_mlp.py").read_text()
    assert main(["check", str(model), "--out", str(out)]) == 0
    assert main(["check", str(model), "--out", str(out), "--hessian"]) == 1


def test_hessian_check_hint_keeps_the_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "mlp.py", MLP)
    assert main(["build", "mlp.py", "--out", "g", "--hessian", "--no-verify"]) == 0
    write(tmp_path / "mlp.py", MLP.replace("1e-3", "2e-3"))
    capsys.readouterr()
    assert main(["check", "mlp.py", "--out", "g"]) == 1
    words = rebuild_hint(capsys.readouterr().out, "user_mlp.py")
    assert words == ["symgrad", "build", "mlp.py", "--out", "g", "--hessian"]
    assert main(words[1:]) == 0
    assert main(["check", "mlp.py", "--out", "g"]) == 0


# --------------------------------------------------------------------------- interrupts


def test_ctrl_c_while_a_model_builds_exits_130_and_writes_nothing(tmp_path):
    out = tmp_path / "gen"
    tiny(tmp_path / "old.py", "slow")
    assert (
        run_cli(["build", "old.py", "--out", "gen", "--no-verify"], tmp_path).returncode
        == 0
    )
    before = snapshot(out)
    marker = tmp_path / "building"
    write(
        tmp_path / "slow.py",
        f"""
        import pathlib, time
        import symgrad as sg

        def build():
            pathlib.Path({str(marker)!r}).write_text("x")
            time.sleep(60)
        """,
    )
    proc = subprocess.Popen(
        [*symgrad_command(), "build", "slow.py", "--out", "gen"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a CI job run in the background inherits SIGINT ignored (so would the child,
        # and Python then installs no KeyboardInterrupt): Ctrl-C as in a terminal
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert stderr == "symgrad: interrupted\n" and stdout == ""
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_ctrl_c_while_writing_leaves_whole_modules_and_no_temporaries(
    tmp_path, monkeypatch
):
    """Interrupted between the two writes: each module is its old or its new self."""
    models = [tiny(tmp_path / "a.py", "a"), tiny(tmp_path / "b.py", "b", "sigmoid")]
    out = tmp_path / "g"
    args = ["build", *map(str, models), "--out", str(out), "--no-verify"]
    assert main(args) == 0
    old = snapshot(out)
    tiny(models[0], "a", "softplus")
    tiny(models[1], "b", "softplus")
    real_replace, calls = os.replace, []

    def replace_then_interrupt(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(symgrad.codegen.os, "replace", replace_then_interrupt)
    assert main(args) == 130
    monkeypatch.undo()
    assert leftovers(tmp_path) == []
    now = snapshot(out)
    assert sorted(now) == ["a.py", "b.py"]
    assert now["b.py"] == old["b.py"]
    assert now["a.py"] != old["a.py"] and now["a.py"].startswith(b"# Generated by")
    assert main(["check", *map(str, models), "--out", str(out)]) == 1
    assert main(args) == 0
    assert main(["check", *map(str, models), "--out", str(out)]) == 0


# --------------------------------------------------------------------------- determinism


def test_user_build_is_byte_identical_across_processes_paths_and_hash_seeds(tmp_path):
    """The same model file with a sibling helper, built from two places (a relative
    path under one hash seed, an absolute path with spaces and accents under another).
    """
    sources = []
    for where, seed, absolute in (("plain", "0", False), ("dé jà/vu", "4242", True)):
        d = tmp_path / where
        write(d / "helpers.py", HELPER.format(activation="softplus"))
        model = write(d / "model.py", WITH_HELPER.format(name="same"))
        spec = str(model) if absolute else "model.py"
        done = run_cli(["build", spec, "--out", str(d / "g")], d, seed)
        assert done.returncode == 0, done.stderr
        sources.append((d / "g" / "same.py").read_bytes())
    assert sources[0] == sources[1]
    assert str(tmp_path).encode() not in sources[0]


# --------------------------------------------------------------------------- using it

USE_BLOCKED = r"""
import json, sys
for name in ("sympy", "torch", "symgrad", "black", "jinja2"):
    sys.modules[name] = None  # any import of these now fails
sys.path.insert(0, sys.argv[1])
import numpy as np
import user_mlp as mod

rng = np.random.default_rng(7)
x = rng.standard_normal((16, 2))
y = np.log1p(np.exp(np.sin(x[:, :1]) + 0.5 * x[:, 1:]))
inputs = {"x": x, "y": y}
params = mod.init_params(seed=3)
names = list(mod.PARAMS)
shapes = [params[k].shape for k in names]
sizes = [params[k].size for k in names]

def unflat(theta):
    parts = np.split(theta, np.cumsum(sizes)[:-1])
    return {k: p.reshape(s) for k, p, s in zip(names, parts, shapes)}

def fun(theta):
    loss, grads = mod.value_and_grad(unflat(theta), inputs)
    return float(loss), np.concatenate([grads[k].ravel() for k in names])

theta0 = np.concatenate([params[k].ravel() for k in names])
try:
    from scipy.optimize import minimize
except ImportError:
    theta = theta0.copy()
    for _ in range(3000):
        theta -= 0.2 * fun(theta)[1]
    method = "gd"
else:
    theta = minimize(fun, theta0, jac=True, method="L-BFGS-B",
                     options={"ftol": 0.0, "gtol": 1e-10, "maxiter": 5000}).x
    method = "scipy"
loss, grad = fun(theta)
H = mod.hessian(unflat(theta), inputs)
outputs, cache = mod.forward(unflat(theta), inputs)
blocked = [n for n in ("sympy", "torch", "symgrad") if sys.modules.get(n) is not None]
json.dump({"method": method, "theta": theta.tolist(), "loss": loss,
           "loss0": fun(theta0)[0], "grad": grad.tolist(), "H": H.tolist(),
           "pred": outputs["pred"].tolist(), "x": x.tolist(), "y": y.tolist(),
           "names": names, "shapes": [list(s) for s in shapes],
           "blocked": blocked}, sys.stdout)
"""


@pytest.fixture(scope="module")
def mlp_build(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlp")
    write(d / "mlp.py", MLP)
    done = run_cli(["build", "mlp.py", "--out", "gen", "--hessian"], d)
    assert done.returncode == 0, done.stderr
    return d


def test_generated_module_trains_with_nothing_but_numpy_and_matches_torch(mlp_build):
    torch = pytest.importorskip("torch")
    script = write(mlp_build / "use.py", USE_BLOCKED)
    run = subprocess.run(
        [sys.executable, str(script), str(mlp_build / "gen")],
        capture_output=True,
        text=True,
        cwd=mlp_build,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    assert got["blocked"] == []
    assert got["loss"] < 0.5 * got["loss0"]
    # PyTorch twin at the optimum the generated module found.
    theta = torch.tensor(got["theta"], dtype=torch.float64)
    x = torch.tensor(got["x"], dtype=torch.float64)
    y = torch.tensor(got["y"], dtype=torch.float64)

    def loss_fn(flat):
        parts = torch.split(flat, [int(np.prod(s)) for s in got["shapes"]])
        W1, b1, W2, b2 = (
            p.reshape(s) for p, s in zip(parts, got["shapes"], strict=True)
        )
        pred = torch.nn.functional.softplus(torch.tanh(x @ W1.T + b1) @ W2.T + b2)
        reg = 1e-3 * ((W1**2).sum() + (W2**2).sum())
        return ((pred - y) ** 2).mean() + reg, pred

    assert got["names"] == ["W1", "b1", "W2", "b2"]
    flat = theta.clone().requires_grad_(True)
    loss, pred = loss_fn(flat)
    (grad,) = torch.autograd.grad(loss, flat)
    np.testing.assert_allclose(got["loss"], loss.item(), rtol=1e-12)
    np.testing.assert_allclose(got["pred"], pred.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["grad"], grad.numpy(), rtol=1e-8, atol=1e-13)
    if got["method"] == "scipy":
        assert np.max(np.abs(grad.numpy())) < 1e-5  # a real minimum, per torch
    hessian = torch.autograd.functional.hessian(lambda t: loss_fn(t)[0], theta)
    np.testing.assert_allclose(got["H"], hessian.numpy(), rtol=1e-8, atol=1e-12)


def test_verify_of_a_user_file_prints_a_passing_table(tmp_path, capsys):
    model = write(tmp_path / "mlp.py", MLP.replace('"user_mlp"', '"vmlp"'))
    assert main(["verify", str(model), "--seed", "5"]) == 0
    table = capsys.readouterr().out
    assert "vmlp" in table and "FAIL" not in table
    for name in ("W1", "b1", "W2", "b2"):
        assert re.search(rf"\b{name}\b", table)


# --------------------------------------------------------------------------- help, UX


@pytest.mark.parametrize("command", ["build", "check"])
def test_help_lists_the_options_of_the_readme_table(command, capsys):
    readme = (ROOT / "README.md").read_text()
    row = re.search(rf"^\| `symgrad {command} (.*?)` \|", readme, re.M).group(1)
    options = re.findall(r"--[a-z-]+", row)
    assert options  # e.g. ['--out', '--no-verify', '--hessian']
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    for option in options:
        assert option in help_text
    assert "default: generated" in help_text


def test_python_dash_m_symgrad_runs_the_command_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "symgrad", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("symgrad ")


def test_build_line_phases_add_up_to_the_compile_time_with_hessian():
    """The phases a --hessian compile times (compiler.Program.timed), as cmd_build
    prints them: 1 s of the 1.6 s is nowhere in the breakdown."""
    timings = {"fuse": 0.1, "differentiate": 0.1, "optimize": 0.1, "hessian": 1.0}
    timings |= {"cse": 0.1, "print": 0.1, "black": 0.1}
    line = _timing(SimpleNamespace(timings=timings))
    total = float(re.search(r"compiled in (\d+\.\d\d) s", line).group(1))
    phases = re.search(r"compiled in [\d.]+ s \((.*?)\)", line).group(1)
    parts = [float(v) for v in re.findall(r"[a-z]+ (\d+\.\d\d)", phases)]
    assert total == 1.6
    assert abs(sum(parts) - total) < 0.005, line


def test_build_line_shows_the_unroll_phase_only_where_it_ran():
    """A model without small fixed sizes is not unrolled, yet its build line said
    "unroll 0.00"; seed_mlp's batch-1 form is unrolled, and says so."""
    from symgrad.cli import generate
    from symgrad.models import load

    for name, unrolled in (("logistic_regression", False), ("seed_mlp", True)):
        _, program = generate(load(name))
        assert ("unroll" in _timing(program)) == unrolled, name
