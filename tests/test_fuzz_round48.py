"""Round 48: fuzz of contractions under broadcasting, keepdims reductions, symbolic dims
and second order, against a torch float64 twin.

tests/test_fuzz.py draws elementwise formulas over one dim; tests/test_symbolic_dims_fuzz.py
reductions and a few einsums at symbolic sizes (no second order); tests/test_codegen_aliasing_fuzz.py
contractions at fixed sizes for aliasing; tests/test_fuzz_round45.py the rare structural ops
(Hessian on every third program). Here round 45's ``Program`` (imported: emit, pick,
bounded, loss terms, source) is subclassed so leaves may have symbolic dims (``n``, ``k``,
sizes 1-4 at run time, 1 included) next to fixed ones (1-3), and draws, from a seeded
NumPy generator per seed (a fixed list: CI is deterministic):

* contractions under broadcasting: ``@``/``sg.matmul`` with batch dims that broadcast
  (dropped leading dims, 1 vs n, one more leading dim), vector @ (batched) matrix and
  matrix @ vector, ``sg.einsum`` with 2-3 operands, broadcasting ``...`` and random output
  orders, ``sg.outer``, ``sg.dot``/``.dot``, chains ``A @ B @ v``, ``v @ A @ B``,
  ``A @ B @ C``, ``A.T @ A``, ``v @ A @ w``; ``.T``, ``transpose(perm)``, ``swapaxes``,
  ``moveaxis`` (ints and tuples) of the results;
* reductions over axis tuples (negative axes too) with keepdims=True feeding broadcasts
  (``x - mean``, ``x * sum``, ``x / (1.5 + tanh(var))``, another value times it), or
  keepdims=False put back by ``expand_dims``; ``softmax``/``log_softmax`` over mostly
  non-last axes, ``logsumexp`` over axes or tuples (also ``x - logsumexp(x, keepdims)``);
* the same subexpression under several broadcasts (``x[:, None] * x[None, :]``, ...),
  contractions written out again (``tanh(SRC) + 0.5 * SRC * v``: CSE), partners reused
  across ops, ``m.let`` names (15 %), ``m.output`` of a term (30 %);
* ``sg.grad(f(z), x)`` with z a contraction/reduction of x (gradient terms in the loss),
  and gradient penalties ``sg.grad(f(X @ h), X)`` with respect to float INPUTS X.

The torch twin runs every step while drawing (the sg model is declared alongside and its
shapes checked against torch's) and again as the oracle. The loss is round 45's
``sum(v * w) + 0.05 sum(v * v)`` over up to three values that depend on a param, plus
``0.01 |p|^2`` per param (so no torch gradient or Hessian is exactly 0 where ours is
round-off: a softmax over a symbolic axis of size 1 is the constant 1). Each program is
compiled once (vectorized only) and run at its draw sizes and, if symbolic, at a second
assignment with some symbolic dim = 1: ``helpers.check`` (loss, output, ``value_and_grad``
and ``forward`` + ``backward(cache, grad_loss=-1.5)`` vs torch at 1e-9, NumPy warnings as
errors), central differences (1e-5: differences of a loss ~10 carry ~1e-9 round-off) at the
first; EVERY program with at most 30 parameter elements at a size set also checks
``hessian`` and ``hvp`` against ``torch.autograd.functional.hessian`` (third derivatives
where ``sg.grad`` is in the loss); every third program is unrolled (``m.unroll`` at its
smallest sizes) and must run the unrolled function, not NumPy's fallback, to equal results.

Budget: 51 programs (~50 s on one core); about 1 300 seeds were explored in scratch runs
(/tmp/sg/r48), about 95 % of programs checking the Hessian. Found:

Both fixed since in codegen.Emitter.lines (a formula whose remaining names broadcast to
less than its value's shape is printed as np.full of the value's shape):

* ``test_cancelled_formula_into_matmul`` / ``..._einsum`` (strict xfail): an elementwise
  formula that cancels to a number once two maps are fused, ``(p + 1) - (p + 1)`` of shape
  (3,), is generated as the bare scalar ``t1 = 0.0``, its shape lost; an elementwise use
  broadcasts it (right), but ``A @ t1`` or ``t1[None]`` (einsum) raise in
  ``value_and_grad``. Met in the fuzz as ``log_softmax(tanh(v) + v)`` over an axis of size
  1 (constant 0) contracted with a param. Suspected place: codegen.py ``Emitter.lines`` /
  ``_print_map`` (the ``t1 - t1`` guard only sees formulas with names left). The unrolled
  function is right, so only sizes past the auto-unroll limit show it.
* ``test_fuzz_round48_seed_54`` (strict xfail): ``value_and_grad`` raises a matmul
  core-dimension mismatch (3 vs 1): ``log_softmax(v) - (v - sum(v, keepdims))`` fuses to
  sums of v only (SymPy cancels v), printed at their (1,) shape
  (``test_formula_that_keeps_only_sums_keeps_its_shape``).

After this round, 1,640 more seeds of rounds 45 and 48 (scratch) found two more, fixed
and pinned at the end of this file: a where and a minimum of one lgamma(softplus(.))
failed to build (symbolic._unevaluated's Max/Min refused SymPy's evaluate=), and
sg.cumprod of an empty axis was refused.

Not bugs, for the record (the draw avoids them): softmax/var over an axis of size 1 fold
to constants, so ``sg.grad`` of them raises "y does not use x" where torch's graph keeps x
(the README's rule; the draw then passes ``allow_unused=True``, torch's zeros); an identity
view (``swapaxes(x, 0, -2)`` of 2-D x) is its operand's node, so naming both raises
"already named"; ``sg.std`` of a zero-spread row has gradient 0 where torch's is nan
(README), so std is not drawn.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import (
    assert_matches_central_differences,
    assert_second_order_agrees,
    check,
    compile_module,
    spy_unrolled,
)
from test_fuzz_round45 import Program as Program45
from test_fuzz_round45 import vectorized_only

import symgrad as sg

torch = pytest.importorskip("torch")

SEED_BASE = 48_000
SEEDS = [s for s in range(52) if s != 54]  # fixed: CI is deterministic
MAX_HESSIAN_PARAMS = 30  # hessian + hvp on every program with at most this many
UNROLL_EVERY = 3  # the unrolled function on every third program
SYM = ("n", "k")
MAX_ELEMENTS = 48  # a value bigger than this (at the draw's sizes) is summed away


def bdims(a, b):
    """NumPy broadcasting of two dims tuples (ints and symbolic names), or None."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(reversed(out))


def dims_of(expr):
    return tuple(d if isinstance(d, int) else str(d) for d in expr.shape)


def t_softmax(kind, x, axis):
    if kind == "softmax":
        return torch.softmax(x, axis)
    return torch.log_softmax(x, axis)


def t_reduce(fn, x, axis, keep, ddof=0):
    if fn == "sum":
        return x.sum(dim=axis, keepdim=keep)
    if fn == "mean":
        return x.mean(dim=axis, keepdim=keep)
    if fn == "var":
        return torch.var(x, dim=axis, correction=ddof, keepdim=keep)
    if fn == "std":
        return torch.std(x, dim=axis, correction=ddof, keepdim=keep)
    return torch.logsumexp(x, dim=axis, keepdim=keep)


class Program(Program45):
    """Round 45's Program (emit, pick, bounded, op_smooth, loss terms, source) over
    leaves whose shapes may name the symbolic dims ``n`` and ``k``. The sg model is
    declared line by line while drawing, so its shapes are read back (and checked
    against the torch twin's at the draw's sizes)."""

    def __init__(self, seed: int):
        super().__init__(seed)
        self.rng = np.random.default_rng(SEED_BASE + seed)
        self.tie = False
        self.sym = self.rng.random() < 0.6
        self.sizes = {d: int(self.rng.integers(1, 5)) for d in SYM}
        self.leaves: dict[str, tuple] = {}  # name -> (kind, dims)
        self.dims: dict[str, tuple] = {}
        self.sg_env = {"sg": sg, "m": sg.Model(f"fuzz48_{seed}")}
        self.n_params = 0
        self.made: dict[str, tuple] = {}  # name -> (op, sg source, torch fn)

    # -- bookkeeping ------------------------------------------------------------
    def emit(self, op, src, fn):
        name = super().emit(op, src, fn)
        self.made[name] = (op, src, fn)
        exec(self.lines[-1], self.sg_env)
        if self.rng.random() < 0.15:  # a named intermediate (m.let)
            try:
                self.sg_env["m"].let(name, self.sg_env[name])
                self.lines[-1] = f"{name} = m.let({name!r}, {src})"
            except sg.ModelError as err:  # an identity view is its operand's node,
                assert "already named" in str(err)  # which may have a name already
        self.dims[name] = dims_of(self.sg_env[name])
        expected = tuple(self.sizes.get(d, d) for d in self.dims[name])
        assert expected == self.shape(name), (
            self.lines[-1],
            expected,
            self.shape(name),
        )
        return name

    def new_dim(self, sym=True):
        choices = [1, 2, 3, 2, 3]
        if self.sym and sym:
            choices += list(SYM)
        return self.choice(choices)

    def leaf(self, dims, kind=None):
        """A new param (while the budget lasts) or float input of these dims."""
        if kind is None:
            kind = (
                "param" if self.n_params < 3 and self.rng.random() < 0.55 else "input"
            )
        if kind == "param":
            name = f"p{self.n_params}"
            self.n_params += 1
        else:
            name = f"x{sum(k.startswith('x') for k in self.leaves)}"
        line = f"{name} = m.{kind}({name!r}, {dims!r})"
        self.lines.append(line)
        exec(line, self.sg_env)
        self.leaves[name] = (kind, dims)
        self.dims[name] = dims
        data = self.leaf_data(name, self.sizes, self.rng)
        self.env[name] = torch.tensor(data, requires_grad=kind == "param")
        if kind == "param":
            self.params[name] = data
        self.vals.append(name)
        return name

    def leaf_data(self, name, sizes, rng):
        kind, dims = self.leaves[name]
        shape = tuple(sizes.get(d, d) for d in dims)
        if kind == "param":
            return rng.uniform(-1.0, 1.0, size=shape)
        return 0.8 * rng.standard_normal(shape)

    def partner(self, dims, exclude=None):
        """An existing value of exactly these dims, or a new leaf."""
        same = [v for v in self.vals if self.dims[v] == dims and v != exclude]
        if same and self.rng.random() < 0.5:
            return self.choice(same)
        return self.leaf(dims)

    def live(self, v):
        return self.env[v].requires_grad  # (depends on a param)

    def pickd(self, pred, live=False):
        names = [
            v for v in self.vals if pred(self.dims[v]) and (self.live(v) or not live)
        ]
        if not names:
            return None
        weights = np.arange(1, len(names) + 1, dtype=float) ** 2
        return names[self.rng.choice(len(names), p=weights / weights.sum())]

    def variant(self, batch):
        """Batch dims that broadcast against ``batch``: leading ones dropped, some
        replaced by 1, maybe one more leading dim."""
        full, batch = len(batch), list(batch)
        while batch and self.rng.random() < 0.3:
            batch.pop(0)
        batch = [1 if self.rng.random() < 0.3 else d for d in batch]
        if len(batch) == full < 2 and self.rng.random() < 0.3:
            batch.insert(0, self.new_dim())
        return tuple(batch)

    def size(self, name):
        return int(np.prod(self.shape(name), dtype=int))

    # -- contractions -------------------------------------------------------------
    def op_matmul(self, x):
        d = self.dims[x]
        if not d:
            return None
        spell = self.choice(["{a} @ {b}", "sg.matmul({a}, {b})"])
        if len(d) == 1:
            y = self.partner((*self.variant(()), d[0], self.new_dim()))
            a, b = x, y
        elif self.rng.random() < 0.25:
            y = self.partner((d[-1],))
            a, b = x, y
        elif self.rng.random() < 0.3:
            y = self.partner((*self.variant(d[:-2]), self.new_dim(), d[-2]))
            a, b = y, x
        else:
            y = self.partner((*self.variant(d[:-2]), d[-1], self.new_dim()))
            a, b = x, y
        return self.emit(
            "matmul",
            spell.format(a=a, b=b),
            lambda e: torch.matmul(e[a], e[b]),
        )

    def op_chain(self, x):
        """A @ B @ v and friends: products the compiler may reassociate."""
        d = self.dims[x]
        if len(d) != 2:
            return None
        kind = self.choice(["ABv", "vAB", "ABC", "ATA", "vAv"])
        if kind == "ABv":
            b = self.partner((d[1], self.new_dim()))
            v = self.partner((self.dims[b][1],))
            src, fn = f"{x} @ {b} @ {v}", lambda e: e[x] @ e[b] @ e[v]
        elif kind == "vAB":
            v = self.partner((d[0],))
            b = self.partner((d[1], self.new_dim()))
            src, fn = f"{v} @ {x} @ {b}", lambda e: e[v] @ e[x] @ e[b]
        elif kind == "ABC":
            b = self.partner((d[1], self.new_dim()))
            c = self.partner((self.dims[b][1], self.new_dim()))
            src, fn = f"{x} @ {b} @ {c}", lambda e: e[x] @ e[b] @ e[c]
        elif kind == "ATA":
            src, fn = f"{x}.T @ {x}", lambda e: e[x].T @ e[x]
        else:
            v = self.partner((d[0],))
            w = self.partner((d[1],))
            src, fn = f"{v} @ {x} @ {w}", lambda e: e[v] @ e[x] @ e[w]
        return self.emit("chain", src, fn)

    def op_outer(self, x):
        d = self.dims[x]
        if len(d) != 1:
            return None
        y = self.partner((self.new_dim(),))
        a, b = (x, y) if self.rng.random() < 0.5 else (y, x)
        return self.emit(
            "outer", f"sg.outer({a}, {b})", lambda e: torch.outer(e[a], e[b])
        )

    def op_dot(self, x):
        d = self.dims[x]
        if not 1 <= len(d) <= 2:
            return None
        if len(d) == 1:
            y = self.partner(self.choice([(d[0],), (d[0], self.new_dim())]))
            a, b = x, y
        elif self.rng.random() < 0.5:
            y = self.partner(self.choice([(d[1],), (d[1], self.new_dim())]))
            a, b = x, y
        else:
            y = self.partner(self.choice([(d[0],), (self.new_dim(), d[0])]))
            a, b = y, x
        src = self.choice([f"sg.dot({a}, {b})", f"{a}.dot({b})"])
        return self.emit("dot", src, lambda e: torch.matmul(e[a], e[b]))

    def op_einsum(self, x):
        d = self.dims[x]
        if not d or len(d) > 4:
            return None
        n_ell = int(self.rng.integers(0, len(d))) if self.rng.random() < 0.6 else 0
        batch, core = d[:n_ell], d[n_ell:]
        letters = iter("abcdefgh")
        size = {}
        sub_x = ""
        for dim in core:
            c = next(letters)
            size[c] = dim
            sub_x += c
        n_ops = 3 if self.rng.random() < 0.4 else 2
        ellipsis = bool(batch) or self.rng.random() < 0.3
        ops, subs, acc = [x], [sub_x], batch  # acc: the ellipses broadcast so far
        for _ in range(n_ops - 1):
            pool = list(size)
            self.rng.shuffle(pool)
            chosen = pool[: int(self.rng.integers(1, 3))]
            if self.rng.random() < 0.4 or not chosen:
                c = next(letters)
                size[c] = self.new_dim()
                chosen.append(c)
            self.rng.shuffle(chosen)
            ell = self.variant(acc) if ellipsis and self.rng.random() < 0.7 else None
            acc = bdims(acc, ell or ())
            dims = (*(ell or ()), *(size[c] for c in chosen))
            if len(dims) > 4:
                return None
            ops.append(self.partner(dims, exclude=x))
            subs.append(("..." if ell is not None else "") + "".join(chosen))
        if ellipsis:
            subs[0] = "..." + subs[0]
        present = sorted(set("".join(s.replace("...", "") for s in subs)))
        out = [c for c in present if self.rng.random() < 0.5]
        self.rng.shuffle(out)
        has_ell = any(s.startswith("...") for s in subs)
        spec = ",".join(subs) + "->" + ("..." if has_ell else "") + "".join(out)
        names = ", ".join(ops)
        return self.emit(
            "einsum",
            f"sg.einsum({spec!r}, {names})",
            lambda e: torch.einsum(spec, *[e[o] for o in ops]),
        )

    # -- views of results ---------------------------------------------------------
    def op_axes(self, x):
        d = self.dims[x]
        r = len(d)
        if r < 2:
            return None
        kind = self.choice(["T", "swap", "move", "perm"])
        if kind == "T":
            perm = tuple(reversed(range(r)))
            return self.emit("axes", f"{x}.T", lambda e: e[x].permute(perm))
        a, b = (int(self.rng.integers(-r, r)) for _ in range(2))
        if kind == "swap":
            return self.emit(
                "axes",
                f"sg.swapaxes({x}, {a}, {b})",
                lambda e: torch.swapaxes(e[x], a, b),
            )
        if kind == "move" and r > 2 and self.rng.random() < 0.5:
            src_ax = tuple(int(i) for i in self.rng.choice(r, 2, replace=False))
            dst_ax = tuple(int(i) for i in self.rng.choice(r, 2, replace=False))
            return self.emit(
                "axes",
                f"sg.moveaxis({x}, {src_ax!r}, {dst_ax!r})",
                lambda e: torch.movedim(e[x], src_ax, dst_ax),
            )
        if kind == "move":
            return self.emit(
                "axes",
                f"sg.moveaxis({x}, {a}, {b})",
                lambda e: torch.movedim(e[x], a, b),
            )
        perm = tuple(int(i) for i in self.rng.permutation(r))
        return self.emit(
            "axes", f"{x}.transpose({perm!r})", lambda e: e[x].permute(perm)
        )

    # -- reductions ----------------------------------------------------------------
    def axis_tuple(self, d):
        r = len(d)
        k = int(self.rng.integers(1, r + 1))
        axes = sorted(int(a) for a in self.rng.choice(r, size=k, replace=False))
        axes = [a - r if self.rng.random() < 0.3 else a for a in axes]
        if len(axes) == 1 and self.rng.random() < 0.5:
            return axes[0]
        return tuple(axes)

    def op_reduce(self, x):
        """A reduction over an axis tuple with keepdims=True, broadcast against x or
        another value; or keepdims=False put back with expand_dims."""
        d = self.dims[x]
        if not d:
            return None
        axis = self.axis_tuple(d)
        axes = [axis] if isinstance(axis, int) else list(axis)
        # (no std: its gradient at a zero spread is 0 where torch's is nan, README;
        # a softmax over a size-1 axis makes such rows)
        fn = self.choice(["sum", "mean", "mean", "var", "logsumexp"])
        ddof = 0
        reduced = [d[a] for a in axes]
        fixed = all(isinstance(n, int) for n in reduced)
        count = int(np.prod([n for n in reduced if isinstance(n, int)]))
        if fn == "std" and not (fixed and count >= 2):
            fn = "var"  # (std's gradient at a zero spread: see the README)
        if fn in ("var", "std") and fixed and count >= 2 and self.rng.random() < 0.4:
            ddof = 1
        extra = f", ddof={ddof}" if fn in ("var", "std") else ""
        keep = self.rng.random() < 0.75
        r = f"sg.{fn}({x}, axis={axis!r}, keepdims={keep}{extra})"
        tr = lambda e: t_reduce(fn, e[x], axis, keep, ddof)  # noqa: E731
        if not keep:
            if self.rng.random() < 0.4:
                return self.emit("reduce", r, tr)
            pos = tuple(a % len(d) for a in axes)
            r = f"sg.expand_dims({r}, {pos!r})"
            tr0 = tr

            def tr(e, tr0=tr0, pos=pos):
                out = tr0(e)
                for p in pos:
                    out = out.unsqueeze(p)
                return out

        how = self.choice(["-", "*", "/", "other", "alone"])
        if how == "alone":
            return self.emit("reduce", r, tr)
        if how == "/":
            return self.emit(
                "reduce",
                f"{x} / (1.5 + sg.tanh({r}))",
                lambda e: e[x] / (1.5 + torch.tanh(tr(e))),
            )
        if how == "other":
            rd = tuple(
                1 if i in [a % len(d) for a in axes] else n for i, n in enumerate(d)
            )
            y = self.pickd(lambda t: t != rd and bdims(t, rd) is not None and t != ())
            if (
                y is not None
                and np.prod([self.sizes.get(n, n) for n in bdims(self.dims[y], rd)])
                <= MAX_ELEMENTS
            ):
                return self.emit("reduce", f"{y} * {r}", lambda e: e[y] * tr(e))
            how = "-"
        if how == "-":
            return self.emit("reduce", f"{x} - {r}", lambda e: e[x] - tr(e))
        return self.emit("reduce", f"{x} * {r}", lambda e: e[x] * tr(e))

    def op_softmax(self, x):
        d = self.dims[x]
        if not d:
            return None
        r = len(d)
        axis = int(self.rng.integers(-r, r))
        if r > 1 and axis in (-1, r - 1) and self.rng.random() < 0.7:
            axis = 0  # non-last axes mostly
        kind = self.choice(["softmax", "log_softmax", "logsumexp"])
        if kind == "logsumexp":
            keep = self.rng.random() < 0.6
            ax = self.axis_tuple(d) if self.rng.random() < 0.5 else axis
            src = f"sg.logsumexp({x}, axis={ax!r}, keepdims={keep})"
            if keep and self.rng.random() < 0.6:  # log_softmax by hand
                return self.emit(
                    "softmax",
                    f"{x} - {src}",
                    lambda e: e[x] - torch.logsumexp(e[x], ax, keepdim=True),
                )
            return self.emit(
                "softmax", src, lambda e: torch.logsumexp(e[x], ax, keepdim=keep)
            )
        return self.emit(
            "softmax",
            f"sg.{kind}({x}, axis={axis})",
            lambda e: t_softmax(kind, e[x], axis),
        )

    # -- one subexpression under several broadcasts -------------------------------------
    def op_share(self, x):
        d = self.dims[x]
        r = len(d)
        if r == 0 or r > 2:
            return None
        if r == 1:
            form = self.choice(
                [
                    "{x}[:, None] * {x}[None, :]",
                    "{x}[:, None] - {x}",
                    "sg.tanh({x})[None] * {x}[:, None] + {x}",
                    "sg.expand_dims({x}, 0) * sg.expand_dims(sg.sin({x}), 1)",
                ]
            )
        else:
            form = self.choice(
                [
                    "{x}[:, :, None] * {x}[:, None, :]",
                    "{x}[None] * {x}[:, None]",
                    "{x} * sg.sum({x}, axis=0, keepdims=True)"
                    " + sg.mean({x}, axis=1, keepdims=True)",
                    "sg.sin({x})[:, None, :] * {x}[None]",
                ]
            )
        src = form.format(x=x)

        def fn(e, src=src):
            tsrc = src.replace("sg.expand_dims", "torch.unsqueeze")
            tsrc = tsrc.replace("sg.sum", "torch.sum").replace("sg.mean", "torch.mean")
            tsrc = tsrc.replace("axis=", "dim=").replace("keepdims=", "keepdim=")
            tsrc = tsrc.replace("sg.", "torch.")
            return eval(tsrc, {"torch": torch}, {x: e[x]})

        return self.emit("share", src, fn)

    def op_binary(self, x):
        d = self.dims[x]
        y = self.pickd(lambda t: t != () and bdims(t, d) is not None)
        if y is None or y == x:
            return None
        out = bdims(self.dims[y], d)
        if np.prod([self.sizes.get(n, n) for n in out]) > MAX_ELEMENTS:
            return None
        f = self.choice(["+", "-", "*"])
        return self.emit(
            "binary",
            f"{x} {f} {y}",
            lambda e: (
                e[x] + e[y] if f == "+" else e[x] - e[y] if f == "-" else e[x] * e[y]
            ),
        )

    def op_smooth(self, x):
        fn = self.choice(["sin", "tanh", "sigmoid", "softplus"])
        tf = {
            "sigmoid": torch.sigmoid,
            "softplus": torch.nn.functional.softplus,
        }.get(
            fn
        ) or getattr(torch, fn)
        return self.emit("smooth", f"sg.{fn}({x})", lambda e: tf(e[x]))

    # -- gradients inside the loss ---------------------------------------------------------
    INNER = ("matmul", "einsum", "reduce", "softmax", "share", "chain", "outer", "dot")

    def op_gradin(self, x):
        """g = sg.grad(f(z), x) with z a contraction or reduction of x."""
        if not self.env[x].requires_grad:
            return None
        x = self.bounded(x, 1.5)
        inner = self.choice(self.INNER)
        z = getattr(self, f"op_{inner}")(x)
        if z is None:
            return None
        self.vals.remove(z)  # z is only used inside the gradient
        kind = self.choice(["sin", "tanh", "softplus"])
        sgf = {
            "sin": f"sg.sum(sg.sin({z}) * {z})",
            "tanh": f"sg.sum(sg.tanh({z}) ** 2)",
            "softplus": f"sg.sum(sg.softplus({z}))",
        }[kind]
        tf = {
            "sin": lambda t: (torch.sin(t) * t).sum(),
            "tanh": lambda t: (torch.tanh(t) ** 2).sum(),
            "softplus": lambda t: torch.nn.functional.softplus(t).sum(),
        }[kind]
        src = f"sg.grad({sgf}, {x})"
        try:
            eval(src, self.sg_env)
        except sg.ModelError as err:
            # a folded constant (softmax or var over an axis of size 1, x - mean(x)
            # over it) leaves x out of y's graph, where torch's graph keeps it and
            # gives zeros: symgrad's documented error; ask for the zeros instead
            if "does not use" not in str(err):
                raise
            src = f"sg.grad({sgf}, {x}, allow_unused=True)"
            self.flags.add("unused")
        return self.emit(
            "gradin",
            src,
            lambda e: torch.autograd.grad(tf(e[z]), e[x], create_graph=True)[0],
        )

    CONTRACTIONS = ("matmul", "chain", "outer", "dot", "einsum", "reduce", "softmax")

    def op_dup(self, x):
        """A contraction or reduction written out again, used twice more (the
        compiler's CSE merges the copies; the value itself may be in use too)."""
        names = [n for n, (op, _, _) in self.made.items() if op in self.CONTRACTIONS]
        if not names:
            return None
        v = self.choice(names)
        op, src, fn = self.made[v]
        return self.emit(
            "dup",
            f"sg.tanh({src}) + 0.5 * ({src}) * {v}",
            lambda e: torch.tanh(fn(e)) + 0.5 * fn(e) * e[v],
        )

    def op_gradx(self, h):
        """A gradient penalty: g = sg.grad(f(X @ h), X) for a float INPUT X (torch:
        X.requires_grad_()), then used in the loss: its Hessian is a third
        derivative of f."""
        d = self.dims[h]
        if not 1 <= len(d) <= 2:
            return None
        X = self.leaf((*self.variant(()), self.new_dim(), d[0]), "input")
        kind = self.choice(["softplus", "tanh", "softmax", "logsumexp"])
        sgf = {
            "softplus": "sg.sum(sg.softplus({X} @ {h}))",
            "tanh": "sg.sum(sg.tanh({X} @ {h}) ** 2)",
            "softmax": "sg.sum(sg.softmax({X} @ {h}, axis=0) * {X}[..., 0:1])",
            "logsumexp": "sg.sum(sg.logsumexp({X} @ {h}, axis=-2))",
        }[kind].format(X=X, h=h)
        if kind in ("softmax", "logsumexp") and len(d) == 1:
            return None  # (X @ h drops the last axis)

        def fn(e):
            Xr = e[X].detach().requires_grad_(True)
            z = Xr @ e[h]
            if kind == "softplus":
                y = torch.nn.functional.softplus(z).sum()
            elif kind == "tanh":
                y = (torch.tanh(z) ** 2).sum()
            elif kind == "softmax":
                y = (torch.softmax(z, 0) * Xr[..., 0:1]).sum()
            else:
                y = torch.logsumexp(z, -2).sum()
            return torch.autograd.grad(y, Xr, create_graph=True)[0]

        return self.emit("gradx", f"sg.grad({sgf}, {X})", fn)

    OPS = {
        "gradx": 2,
        "dup": 2,
        "matmul": 4,
        "chain": 2,
        "outer": 1,
        "dot": 1,
        "einsum": 4,
        "axes": 2,
        "reduce": 4,
        "softmax": 3,
        "share": 2,
        "binary": 2,
        "smooth": 2,
        "gradin": 2,
    }

    # -- drawing a whole program --------------------------------------------------------
    STEPS = (3, 7)

    def draw_params(self):
        for _ in range(int(self.rng.integers(1, 3))):
            rank = int(self.rng.integers(1, 4))
            self.leaf(tuple(self.new_dim() for _ in range(rank)), "param")

    def operand(self):
        """A recent value that depends on a param, summed over its first axis while
        it is too big."""
        x = self.pickd(lambda t: True, live=True)
        if self.size(x) > MAX_ELEMENTS or len(self.dims[x]) > 3:
            x = self.sum_of_sines(x)
        return x

    def loss_terms(self):
        """The last value that depends on a param, and maybe two more."""
        live = [v for v in self.vals if self.live(v) and v not in self.params]
        live = live or [v for v in self.vals if self.live(v)]
        if self.rng.random() < 0.5:
            return [live[-1], *live[-3:-1]]
        return [live[-1]]

    def finish(self):
        self.terms = self.loss_terms()
        self.output = self.terms[0] if self.rng.random() < 0.3 else None
        try:
            self.build()
        except sg.ModelError as err:  # a value has one name: m.output of a let (or
            assert "already named" in str(err)  # of an identity view of one) is
            self.output = None  # refused
        return self

    def data(self, sizes, salt=0):
        rng = np.random.default_rng([SEED_BASE + self.seed, salt])
        params, inputs = {}, {}
        for name, (kind, _) in self.leaves.items():
            (params if kind == "param" else inputs)[name] = self.leaf_data(
                name, sizes, rng
            )
        for j, v in enumerate(self.terms):
            shape = tuple(sizes.get(n, n) for n in self.dims[v])
            inputs[f"w{j}"] = rng.standard_normal(shape)
        return params, inputs

    def size_sets(self):
        """The draw's sizes, and for a symbolic program one more with a 1 in it."""
        used = sorted({d for dims in self.dims.values() for d in dims if d in SYM})
        if not used:
            return [{}]
        first = {d: self.sizes[d] for d in used}
        other = {d: int(self.rng.integers(1, 4)) for d in used}
        other[self.choice(used)] = 1
        if other == first:
            other = {d: 2 if s == 1 else 1 for d, s in first.items()}
        return [first, other]

    # the loss: round 45's terms, plus 0.01 |p|^2 per param, so that no gradient or
    # Hessian is exactly zero in torch where ours is round-off (a softmax over a
    # symbolic axis of size 1 is the constant 1, a log_softmax 0)
    def build(self, hessian=False):
        m = sg.Model(f"fuzz48_{self.seed}", hessian=hessian)
        env = {"sg": sg, "m": m}
        for line in self.lines:
            exec(line, env)
        loss = 0.0
        for j, v in enumerate(self.terms):
            w = m.input(f"w{j}", self.dims[v])
            loss = loss + sg.sum(env[v] * w) + 0.05 * sg.sum(env[v] * env[v])
        for p in self.params:
            loss = loss + 0.01 * sg.sum(env[p] * env[p])
        if self.output is not None:
            m.output("y", env[self.output])
        m.loss(loss)
        return m

    def reference(self, tparams, tinputs):
        e = {**tparams, **tinputs}
        for name, fn in self.steps:
            e[name] = fn(e)
        loss = 0.0
        for j, v in enumerate(self.terms):
            loss = loss + (e[v] * tinputs[f"w{j}"]).sum() + 0.05 * (e[v] * e[v]).sum()
        for p in self.params:
            loss = loss + 0.01 * (e[p] * e[p]).sum()
        return loss, ({"y": e[self.output]} if self.output is not None else {})

    def source(self):
        src = super().source().replace("fuzz45_", "fuzz48_")
        reg = " + ".join(f"0.01 * sg.sum({p} * {p})" for p in self.params)
        src = src.replace(")  # w{j}", f" + {reg})  # w{{j}}")
        if self.output is not None:
            src += f"\nm.output('y', {self.output})"
        return src


def draw(seed):
    program = Program(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own warnings while drawing
        try:
            return program.draw().finish()
        except BaseException as e:
            src = "\n".join(program.lines)
            raise AssertionError(f"while drawing (seed {seed}):\n{src}") from e


def run_program(seed, program=None):
    program = program or draw(seed)
    size_sets = program.size_sets()
    with vectorized_only():
        module = compile_module(program.build())
    for salt, sizes in enumerate(size_sets):
        params, inputs = program.data(sizes, salt)
        check(module, program.reference, params, inputs)
        if salt == 0:
            # (differences of a loss of ~10 carry ~1e-9 of round-off)
            assert_matches_central_differences(module, params, inputs, tol=1e-5)
    # second order on every program small enough, at its smallest sizes
    smallest = min(
        size_sets, key=lambda s: sum(np.size(p) for p in program.data(s)[0].values())
    )
    hmodule = None
    for salt, sizes in enumerate(size_sets):
        params, inputs = program.data(sizes, 7 + salt)
        if sum(np.size(p) for p in params.values()) > MAX_HESSIAN_PARAMS:
            continue
        if hmodule is None:
            with vectorized_only():
                hmodule = compile_module(program.build(hessian=True))
        assert_second_order_agrees(
            hmodule, program.reference, params, inputs, scaled=True
        )
    if seed % UNROLL_EVERY == 0:
        model = program.build()
        model.unroll(**smallest)
        unrolled = compile_module(model)
        params, inputs = program.data(smallest, 9)
        calls, restore = spy_unrolled(unrolled)
        try:
            check(unrolled, program.reference, params, inputs)
        finally:
            restore()
        assert len(set(calls)) == 1 and " raised " not in calls[0], calls


@pytest.mark.parametrize("seed", SEEDS)
def test_fuzz_round48(seed):
    program = None
    try:
        program = draw(seed)
        run_program(seed, program)
    except BaseException as e:
        src = program.source() if program and hasattr(program, "terms") else "?"
        raise AssertionError(f"program (seed {seed}):\n{src}") from e


# ---------------------------------------------------------------------------------
# regressions found by the fuzz, hand-minimised


def _cancelled(contract, reference):
    """A formula of p that cancels to 0, ``(p + 1) - (p + 1)``, fed to a
    contraction with A, next to |A|^2 so that the loss has a gradient."""
    m = sg.Model("cancelled")
    p, A = m.param("p", (3,)), m.param("A", (2, 3))
    m.loss(sg.sum(contract((p + 1.0) - (p + 1.0), A)) + sg.sum(A * A))
    with vectorized_only():
        module = compile_module(m)

    def twin(tp, ti):
        v = (tp["p"] + 1.0) - (tp["p"] + 1.0)
        return reference(v, tp["A"]).sum() + (tp["A"] * tp["A"]).sum(), {}

    params = {"p": np.array([0.1, -0.2, 0.3]), "A": np.arange(6.0).reshape(2, 3)}
    check(module, twin, params, {})


CANCELLED = (  # the strict xfails' reason, until codegen.Emitter.lines was fixed
    "an elementwise formula that SymPy cancels to a number when the two maps are "
    "fused, (p + 1) - (p + 1), is printed as the bare scalar `t1 = 0.0`: its (3,) "
    "shape is lost (codegen.py Emitter.lines/_print_map: the `t1 - t1` guard only "
    "sees formulas with names left, and _print_map prints the number since "
    "broadcast(*node.args) == node.shape), so value_and_grad raises where torch "
    "gives loss 55 (and the unrolled function, which hides it at small sizes, "
    "is right)"
)


def test_cancelled_formula_into_matmul():
    # value_and_grad: ValueError: matmul: Input operand 1 does not have enough
    # dimensions (has 0, ...): the generated `t2 = A @ t1` with t1 = 0.0
    _cancelled(lambda v, A: A @ v, lambda v, A: A @ v)


def test_cancelled_formula_into_einsum():
    # value_and_grad: TypeError: 'float' object is not subscriptable (t1[None])
    _cancelled(
        lambda v, A: sg.einsum("i,ji->j", v, A),
        lambda v, A: torch.einsum("i,ji->j", v, A),
    )


def test_cancelled_formula_into_elementwise_use_is_right():
    """The same formula used elementwise (the bare 0.0 broadcasts): right."""
    _cancelled(lambda v, A: v * A, lambda v, A: v * A)


def test_fuzz_round48_seed_54():
    """Was a strict xfail; minimised below."""
    run_program(54)


def test_formula_that_keeps_only_sums_keeps_its_shape():
    """Seed 54's cause: log_softmax(v) - (v - sum(v)) is, once fused, sums of v only
    (SymPy cancels v), so the (3,) value was printed as its (1,) keepdims formula and
    `t9 @ w` raised a core-dimension mismatch."""
    m = sg.Model("cancelled_to_sums")
    v, w = m.param("v", (3,)), m.input("w", (3,))
    d = sg.log_softmax(v, axis=-1) - (v - sg.sum(v, axis=0, keepdims=True))
    m.loss(sg.sum(d * w) + 0.05 * sg.sum(d * d))
    with vectorized_only():
        module = compile_module(m)

    def twin(tp, ti):
        d = torch.log_softmax(tp["v"], -1) - (tp["v"] - tp["v"].sum(0, keepdim=True))
        return (d * ti["w"]).sum() + 0.05 * (d * d).sum(), {}

    check(module, twin, {"v": np.array([0.1, -0.2, 0.3])}, {"w": np.array([1.0, 2, 3])})


def test_where_and_minimum_of_one_lgamma_softplus_compile():
    """Round 45's generator, seed 2626 (found after round 48): the build raised
    "_unevaluated.<locals>.new() got an unexpected keyword argument 'evaluate'":
    rebuilding the Piecewise of where over softplus's lowered Max(x, 0) let SymPy
    simplify its condition, which rebuilds a Max with evaluate=True
    (symbolic._unevaluated's __new__ took no keywords)."""
    m = sg.Model("lgamma_where_minimum")
    p = m.param("p", ())
    a = sg.lgamma(sg.softplus(p) + 0.3)
    m.loss(sg.logaddexp(sg.minimum(a, 0.2), sg.where(a > -0.1, a, 0.25)))
    with vectorized_only():
        module = compile_module(m)

    def twin(tp, ti):
        a = torch.lgamma(torch.nn.functional.softplus(tp["p"]) + 0.3)
        b = torch.where(a > -0.1, a, torch.tensor(0.25, dtype=torch.float64))
        return torch.logaddexp(torch.clamp(a, max=0.2), b), {}

    for value in (0.7, -0.4, 2.0):
        check(module, twin, {"p": np.array(value)}, {})


def test_cumprod_of_an_empty_axis_is_empty():
    """Round 45's generator, seed 2369: sg.cumprod of p[3:] (size 0) was refused ("it
    needs a fixed size from 1 to 32"); NumPy's and torch's cumprod of it is empty."""
    m = sg.Model("cumprod_empty")
    p = m.param("p", (3,))
    m.loss(sg.sum(sg.sin(p)) + sg.sum(sg.cumprod(p[3:])))
    module = compile_module(m)

    def twin(tp, ti):
        return tp["p"].sin().sum() + torch.cumprod(tp["p"][3:], 0).sum(), {}

    check(module, twin, {"p": np.array([0.1, -0.2, 0.3])}, {})
