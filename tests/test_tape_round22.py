"""Tape round 22: random tape programs against torch.

A seeded NumPy generator draws, per seed, a small program as Python SOURCE TEXT
written against a namespace ``T`` (``torch`` or ``symgrad.tape``); the program runs
line by line on both, and after every line every tensor in its namespace is compared:
shape, dtype, values, requires_grad, is_leaf, grad_fn being None or not, and .grad.
Where torch raises, the tape must raise the same exception type on the same line.
A failing seed prints the program, which pastes into a shell with
``import torch as T`` (in float64: ``T.set_default_dtype(T.float64)``) or
``from symgrad import tape as T``.

A program: 1-3 leaves requiring grad (up to 3-D, sizes 1-4, float64), sometimes a
constant; 3-8 ops drawn from elementwise ops (add/sub/mul/div with broadcasting and
numbers, pow, exp of bounded values, log/sqrt of positive ones, tanh, sigmoid, relu,
abs, clamp, where), reductions with dim/keepdim (sum, mean, prod, max/min with dim,
amax/amin, norm, logsumexp, var/std with correction), shape ops (view, reshape,
permute, transpose, t, unsqueeze, squeeze, expand, repeat, flatten, cat, stack,
split, chunk, narrow, indexing with ints, slices, None, Ellipsis, index tensors and
bool masks, gather), matmul/@/bmm/einsum, softmax/log_softmax, cumsum, sort/topk
values, in-place ops (add_, mul_, clamp_, masked_fill_, index assignment; on
non-leaves, on views, on detach()ed and .data aliases, and now and then on a leaf
that requires grad, which torch refuses), detach and .data; then a backward: a scalar
loss, backward(gradient=) of a non-scalar, twice with retain_graph=True
(accumulation), twice without it, a non-scalar without gradient, autograd.grad,
autograd.grad(create_graph=True) and a second backward through it (double
backward), and .retain_grad() on intermediates.

Every op of the table exists on the tape (nothing everyday was missing from it).

Found (repros in test_found; strict xfails, their seeds left out of SEEDS, unless
fixed since):
- fixed since: an all-integer index of a tensor (a[0] of a 1-D one, unbind's
  outputs) was a copy, not a 0-d view: writes through either side were lost (wrong
  values), and writing to x[0] of a leaf was not refused;
- fixed since: x.flatten() of a 1-D tensor was a new non-leaf (torch returns x);
- fixed since: var saved its result, so writing to it in place failed backward
  (torch: no error; std does save its result, in both);
- fixed since: missing version-counter errors: prod's result written in place
  (torch's prod saves its result), and x.tanh_() (sigmoid_, exp_, relu_) followed by
  another write to x (the tape's in-place methods saved a clone);
- fixed since: missing in-place errors: writing to an output of chunk/split/unbind,
  and partial overlap (v.mul_(v[:1]));
- create_graph=True through a view whose base was written after it was made
  (AsStridedBackward0 is once_differentiable: RuntimeError, torch works);
- fixed since: softmax, log_softmax and logsumexp of an empty tensor raised
  ValueError;
- second derivatives: std's at zero spread was nan (torch 0; fixed since), norm's at
  zero is 0 (torch nan); relu's gradient under create_graph did not require grad
  (torch's does), so a second backward through it raised (fixed since);
- torch fills .grad of retain_grad() tensors in autograd.grad; the tape does not
  (the draws do not mix the two).

Not compared: grad_fn's class names (the tape's differ for einsum, index_put,
gradients' own graphs); whether einsum('ij->ji') is a view (torch's is, so writing
to it refuses for a leaf). Ordering ops (sort, topk, max/min, amax/amin) are not
drawn on values that may hold ties (after relu, clamp, where, expand, repeat, ...),
where the index torch picks is an implementation detail.
"""

import warnings

import numpy as np
import pytest
from tape_scripts import cases, check, differs

from symgrad import tape

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("torch_float64")

RTOL, ATOL = 1e-9, 1e-11
MAX_NUMEL, MAX_NDIM = 256, 5


# ==== drawing a program ====


def literal(values):
    """A NumPy array as a nested Python list literal."""
    return repr(np.round(values, 3).tolist())


def tensor_of(shape, rng, requires_grad=False, positive=False):
    while True:
        values = np.round(rng.standard_normal(shape), 3)
        if positive:
            values = np.abs(values) + 0.5
        if len(np.unique(values)) == values.size:  # no ties
            break
    rg = ", requires_grad=True" if requires_grad else ""
    return f"T.tensor({literal(values)}, dtype=T.float64{rg})"


class Program:
    """A program drawn line by line; each line is run on torch as it is drawn, so the
    generator knows every tensor's shape, and a line torch refuses is dropped unless
    it was drawn to provoke that error (then the program ends there)."""

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.lines = []
        self.ns = fresh(torch)
        self.tied = set()  # names whose values may hold ties
        self.count = 0
        self.failed = False

    # -- helpers --

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def chance(self, p):
        return self.rng.random() < p

    def new(self):
        self.count += 1
        return f"v{self.count}"

    def tensors(self, kind="float"):
        out = []
        for name, value in self.ns.items():
            if isinstance(value, torch.Tensor) and name[0] in "xcvg":
                if kind == "float" and value.is_floating_point():
                    out.append(name)
        return out

    def shape(self, name):
        return tuple(self.ns[name].shape)

    def emit(self, line, may_fail=False, tied=()):
        """Run `line` on torch; keep it if it runs (or if it was meant to fail)."""
        try:
            quiet_exec(line, self.ns)
        except Exception:  # noqa: BLE001 - torch refusing is part of the draw
            if may_fail:
                self.lines.append(line)
                self.failed = True
                return True
            self.ns = fresh(torch)
            for old in self.lines:
                quiet_exec(old, self.ns)
            return False
        big = [
            n
            for n, v in self.ns.items()
            if isinstance(v, torch.Tensor)
            and (v.numel() > MAX_NUMEL or v.dim() > MAX_NDIM)
        ]
        if big:
            self.ns = fresh(torch)
            for old in self.lines:
                quiet_exec(old, self.ns)
            return False
        self.lines.append(line)
        self.tied.update(tied)
        return True

    def source(self):
        return "\n".join(self.lines)

    # -- operands --

    def var(self, prefer_grad=True):
        names = self.tensors()
        if prefer_grad:
            rg = [n for n in names if self.ns[n].requires_grad]
            if rg and self.chance(0.85):
                names = rg
        # the recent ones more often
        weights = np.arange(1, len(names) + 1, dtype=float) ** 1.5
        return names[int(self.rng.choice(len(names), p=weights / weights.sum()))]

    def dim(self, name):
        nd = len(self.shape(name))
        if nd == 0:
            return None
        d = int(self.rng.integers(nd))
        return d - nd if self.chance(0.3) else d

    def partner(self, name):
        """Something that broadcasts with `name`: another tensor, a constant, a
        number."""
        shape = self.shape(name)
        r = self.rng.random()
        if r < 0.25:
            return self.pick(["1.5", "-0.75", "2", "0.5"])
        if r < 0.65:
            fits = [
                n
                for n in self.tensors()
                if n != name and broadcasts(self.shape(n), shape)
            ]
            if fits:
                return self.pick(fits)
        if r < 0.8:
            return name
        # a constant of a shape that broadcasts: a suffix, some sizes set to 1
        k = int(self.rng.integers(len(shape) + 1))
        sub = tuple(1 if self.chance(0.3) else s for s in shape[len(shape) - k :])
        return tensor_of(sub, self.rng)

    def positive(self, name):
        return self.pick(
            [
                f"({name}.abs() + 0.5)",
                f"({name} * {name} + 0.25)",
                f"{name}.exp()",
                f"T.sigmoid({name})",
            ]
        )

    # -- the ops --

    def op(self):
        kind = self.pick(
            ["binary"] * 5
            + ["unary"] * 5
            + ["reduce"] * 4
            + ["shape"] * 5
            + ["index"] * 3
            + ["matmul"] * 2
            + ["other"] * 3
            + ["inplace"] * 3
            + ["alias"]
        )
        getattr(self, "op_" + kind)()

    def op_binary(self):
        a = self.var()
        b = self.partner(a)
        out = self.new()
        form = self.pick(
            [
                f"{a} + {b}",
                f"{b} + {a}",
                f"{a} - {b}",
                f"{b} - {a}",
                f"{a} * {b}",
                f"{b} * {a}",
                f"T.add({a}, {b}, alpha=0.5)",
                f"{a}.sub({b})",
                f"T.mul({a}, {b})",
                f"{a} / {self.positive(b) if not number(b) else b}",
                f"{b} / {self.positive(a)}",
                f"T.div({a}, {self.positive(b) if not number(b) else b})",
                f"T.maximum({a}, {b})" if not number(b) else f"{a} * {b}",
                f"T.where({a} > 0, {a}, {b})",
                f"T.where({a} < 0.3, {b}, 0.5)",
                f"{self.positive(a)} ** {b}" if not number(b) else f"{a} ** 2",
            ]
        )
        tied = [out] if form.startswith(("T.where", "T.maximum")) else []
        self.emit(f"{out} = {form}", tied=tied)

    def op_unary(self):
        a = self.var()
        out = self.new()
        forms = [
            (f"{a}.tanh()", False),
            (f"T.sigmoid({a})", False),
            (f"{a}.relu()", True),
            (f"T.relu({a})", True),
            (f"{a}.abs()", True),
            (f"{a}.clamp(-0.5, 0.8)", True),
            (f"{a}.clamp(min=0.1)", True),
            (f"T.clamp({a}, max=0.2)", True),
            (f"{a}.tanh().exp()", False),
            (f"T.exp({a}.clamp(-3, 3))", True),
            (f"{self.positive(a)}.log()", False),
            (f"T.log({self.positive(a)})", False),
            (f"{self.positive(a)}.sqrt()", False),
            (f"{a}.pow(2)", False),
            (f"{a} ** 3", False),
            (f"{self.positive(a)}.pow(1.5)", False),
            (f"{self.positive(a)} ** -0.5", False),
            (f"-{a}", False),
            (f"2.0 ** {a}.tanh()", False),
            (f"{a}.sin()", False),
            (f"{a}.square()", False),
        ]
        form, tied = self.pick(forms)
        self.emit(f"{out} = {form}", tied=[out] if tied else [])

    def op_reduce(self):
        a = self.var()
        d = self.dim(a)
        kd = self.pick(["", ", keepdim=True", ", keepdim=False"])
        out = self.new()
        orderly = a not in self.tied
        if d is None:
            forms = [f"{a}.sum()", f"{a}.mean()", f"{a}.prod()", f"{a}.norm()"]
            if orderly:
                forms += [f"{a}.max()", f"{a}.amin()"]
            return self.emit(f"{out} = {self.pick(forms)}")
        n = self.shape(a)[d]
        c = self.pick([0, 1] if n > 1 else [0])
        forms = [
            f"{a}.sum({d}{kd})",
            f"{a}.sum(dim={d}{kd})",
            f"T.sum({a}, dim=({d},){kd})",
            f"{a}.mean(dim={d}{kd})",
            f"{a}.prod({d}{kd})",
            f"{a}.norm(dim={d}{kd})",
            f"T.norm({a}, p=1, dim={d}{kd})",
            f"{a}.logsumexp({d}{kd})",
            f"{a}.var(dim={d}, correction={c}{kd})",
            f"{a}.std({d}, correction={c}{kd})",
            f"{a}.sum()",
            f"{a}.mean()",
            f"{a}.var()" if self.ns[a].numel() > 1 else f"{a}.sum()",
        ]
        if orderly:
            forms += [f"{a}.amax({d}{kd})", f"T.amin({a}, dim={d}{kd})"]
            if self.chance(0.35):
                idx = self.new()
                fn = self.pick(["max", "min"])
                return self.emit(f"{out}, {idx} = {a}.{fn}(dim={d}{kd})")
        self.emit(f"{out} = {self.pick(forms)}")

    def op_shape(self):
        a = self.var()
        shape = self.shape(a)
        nd = len(shape)
        out = self.new()
        n = int(np.prod(shape)) if shape else 1
        forms = [
            f"{a}.reshape(-1)",
            f"{a}.view({n})",
            f"{a}.unsqueeze({int(self.rng.integers(-nd - 1, nd + 1))})",
            f"{a}.flatten()",
            f"{a}.repeat({', '.join(str(self.pick([1, 2])) for _ in range(max(nd, 1)))})",
            f"T.stack([{a}, {self.same_shape(a)}], dim={int(self.rng.integers(nd + 1))})",
            f"{a}.unsqueeze(0).expand(2, *{a}.shape)",
            f"{a}.expand({', '.join(['-1'] * nd)})" if nd else f"{a}.expand(3)",
        ]
        if nd >= 1:
            d = self.dim(a)
            forms += [
                f"T.cat([{a}, {self.same_shape(a)}], dim={d})",
                f"{a}.narrow({d}, 0, {max(1, shape[d] - 1)})",
                f"{a}.split(2, dim={d})[{int(self.rng.integers(-1, (shape[d] + 1) // 2))}]",
                f"{a}.chunk(2, {d})[0]",
                f"{a}.cumsum({d})",
                f"{a}.softmax({d})",
                f"T.log_softmax({a}, dim={d})",
            ]
            divisors = [k for k in (2, 3, 4) if n % k == 0]
            if divisors:
                k = self.pick(divisors)
                forms.append(f"{a}.view({k}, -1)")
                forms.append(f"{a}.reshape(-1, {k})")
            ones = [i for i, s in enumerate(shape) if s == 1]
            if ones:
                i = self.pick(ones)
                forms.append(f"{a}.squeeze({i})")
                forms.append(
                    f"{a}.expand({', '.join('3' if j == i else '-1' for j in range(nd))})"
                )
            forms.append(f"{a}.squeeze()")
            if a not in self.tied and shape[d] > 0:
                forms.append(f"{a}.sort(dim={d})[0]")
                forms.append(f"{a}.sort({d}, descending=True).values")
                forms.append(
                    f"{a}.topk({int(self.rng.integers(1, shape[d] + 1))}, dim={d}).values"
                )
        if nd >= 2:
            perm = [int(i) for i in self.rng.permutation(nd)]
            forms += [
                f"{a}.permute({', '.join(map(str, perm))})",
                f"{a}.transpose(0, {nd - 1})",
                f"{a}.transpose(-1, -2)",
                f"{a}.flatten(0, 1)",
            ]
            if nd == 2:
                forms += [f"{a}.t()", f"T.t({a})"]
        form = self.pick(forms)
        copies = ("expand", "repeat", "stack", "cat")
        tied = [out] if any(c in form for c in copies) else []
        self.emit(f"{out} = {form}", tied=tied)

    def same_shape(self, a):
        fits = [n for n in self.tensors() if self.shape(n) == self.shape(a) and n != a]
        if fits and self.chance(0.6):
            return self.pick(fits)
        if self.chance(0.5):
            return a
        return tensor_of(self.shape(a), self.rng)

    def index_expr(self, a):
        shape = self.shape(a)
        nd = len(shape)
        if nd == 0 or 0 in shape:
            return self.pick(["[None]", "[...]", "[None, ...]"])
        s0 = shape[0]
        i = int(self.rng.integers(-s0, s0))
        n_picks = int(self.rng.integers(1, 4))
        picks = [int(j) for j in self.rng.integers(0, s0, size=n_picks)]
        forms = [
            f"[{i}]",
            f"[{int(self.rng.integers(0, s0 + 1))}:]",
            "[::2]",
            f"[..., {int(self.rng.integers(-shape[-1], shape[-1])) if shape[-1] else 0}]",
            f"[None, {i}]",
            "[:, None]",
            f"[T.tensor({picks}, dtype=T.int64)]",
            f"[{a} > 0]",
            f"[{a}.detach() < 0.5]",
        ]
        if nd >= 2:
            s1 = shape[1]
            forms += [
                f"[:, {int(self.rng.integers(-s1, s1)) if s1 else 0}]",
                f"[{i}, 1:]",
                "[..., None, :1]",
                f"[T.tensor([0, {s0 - 1}]), T.tensor([{s1 - 1}, 0])]",
                f"[:, T.tensor([{s1 - 1}, 0, {s1 - 1}])]",
                f"[({a}.sum(-1) > 0)]",
            ]
        return self.pick(forms)

    def op_index(self):
        a = self.var()
        out = self.new()
        if self.chance(0.25) and self.shape(a):
            shape = self.shape(a)
            d = int(self.rng.integers(len(shape)))
            idx_shape = tuple(
                (
                    int(self.rng.integers(1, s + 1))
                    if j != d
                    else int(self.rng.integers(1, 4))
                )
                for j, s in enumerate(shape)
            )
            if 0 in shape:
                return
            idx = self.rng.integers(0, shape[d], size=idx_shape)
            return self.emit(
                f"{out} = {a}.gather({d}, T.tensor({idx.tolist()}))", tied=[out]
            )
        expr = self.index_expr(a)
        self.emit(f"{out} = {a}{expr}", tied=[out] if "T.tensor" in expr else [])

    def op_matmul(self):
        a = self.var()
        shape = self.shape(a)
        nd = len(shape)
        out = self.new()
        if nd == 0:
            return self.emit(f"{out} = {a} * {a}")
        forms = [
            f"{a} @ T.linspace(-1.0, 1.0, {shape[-1]})",
            f"T.einsum('...i,...i->...', {a}, {a})",
        ]
        others = [
            n
            for n in self.tensors()
            if len(self.shape(n)) >= 1 and self.shape(n)[0] == shape[-1]
        ]
        if nd >= 2:
            forms += [
                f"{a} @ {a}.transpose(-1, -2)",
                f"T.matmul({a}.transpose(-1, -2), {a})",
                f"T.einsum('...ij,...kj->...ik', {a}, {a})",
            ]
            if others:
                b = self.pick(others)
                if len(self.shape(b)) <= 2:
                    forms.append(f"{a} @ {b}")
        if nd == 2:
            forms += [
                f"{a}.mm({a}.t())",
                f"T.einsum('ij,ij->j', {a}, {a})",
                f"{a} @ {tensor_of((shape[1], int(self.rng.integers(1, 4))), self.rng)}",
            ]
        if nd == 3:
            forms += [
                f"T.bmm({a}, {a}.transpose(1, 2))",
                f"{a}.bmm({a}.permute(0, 2, 1))",
                f"T.einsum('bij,bkj->bik', {a}, {a})",
            ]
        self.emit(f"{out} = {self.pick(forms)}")

    def op_other(self):
        a = self.var()
        out = self.new()
        forms = [
            f"{a}.detach()",
            f"{a}.data",
            f"{a}.clone()",
            f"{a}.detach().requires_grad_()",
            f"{a}.masked_fill({a} > 0.5, -1.0)",
        ]
        form = self.pick(forms)
        self.emit(f"{out} = {form}", tied=[out] if "masked" in form else [])

    def op_alias(self):
        """A view or an alias, written to later (through the base or the view)."""
        a = self.var()
        if leaf(self.ns[a]) and self.chance(0.8):
            return self.op_other()
        out = self.new()
        shape = self.shape(a)
        forms = [f"{a}.detach()", f"{a}.data", f"{a}.view(-1)"]
        if shape and shape[0]:
            forms += [f"{a}[0]", f"{a}[:1]", f"{a}.transpose(0, -1)"]
        self.emit(f"{out} = {self.pick(forms)}")
        if self.chance(0.7):
            self.inplace_on(self.pick([out, a]))

    def op_inplace(self):
        names = self.tensors()
        leaves = [n for n in names if leaf(self.ns[n]) and self.ns[n].requires_grad]
        if leaves and self.chance(0.12):
            return self.inplace_on(self.pick(leaves))
        others = [
            n for n in names if not (leaf(self.ns[n]) and self.ns[n].requires_grad)
        ]
        if not others:
            return
        self.inplace_on(self.pick(others))

    def inplace_on(self, a):
        shape = self.shape(a)
        b = self.partner(a)
        forms = [
            f"{a}.add_(1.5)",
            f"{a}.mul_(0.5)",
            f"{a}.mul_({b})",
            f"{a}.add_({b}, alpha=2)",
            f"{a}.sub_({b})",
            f"{a}.clamp_(-0.6, 0.6)",
            f"{a}.clamp_(min=0.0)",
            f"{a}.masked_fill_({a} < 0, 0.25)",
            f"{a}.div_(2.0)",
            f"{a}.tanh_()",
            f"{a}.exp_()" if a not in self.tied else f"{a}.sigmoid_()",
        ]
        if shape and shape[0]:
            forms += [
                f"{a}[0] = 0.5",
                f"{a}[{shape[0] - 1}] = {a}[0] * 2",
                f"{a}[{a} > 0.4] = -0.3",
                f"{a}[..., :1] = {self.var()}.sum()",
            ]
        form = self.pick(forms)
        self.emit(
            form,
            may_fail=True,
            tied=[a] if "clamp" in form or "=" in form or "masked" in form else [],
        )

    # -- the program --

    def draw(self):
        n_leaves = int(self.rng.integers(1, 4))
        for i in range(n_leaves):
            nd = int(self.rng.integers(0, 4))
            shape = tuple(int(s) for s in self.rng.integers(1, 5, size=nd))
            self.emit(f"x{i} = {tensor_of(shape, self.rng, requires_grad=True)}")
        if self.chance(0.35):
            nd = int(self.rng.integers(1, 3))
            shape = tuple(int(s) for s in self.rng.integers(1, 5, size=nd))
            self.emit(f"c0 = {tensor_of(shape, self.rng)}")
        n_ops = int(self.rng.integers(3, 9))
        attempts = 0
        while len(self.lines) < n_leaves + n_ops and attempts < 60 and not self.failed:
            attempts += 1
            self.op()
        if not self.failed:
            self.backward()
        return self

    def used(self, out, leaves):
        """The leaves `out` depends on (and now and then one it does not)."""
        used = []
        for x in leaves:
            try:
                (g,) = torch.autograd.grad(
                    self.ns[out].sum(), self.ns[x], allow_unused=True, retain_graph=True
                )
            except Exception:  # noqa: BLE001
                g = None
            if g is not None:
                used.append(x)
        return used if used and self.chance(0.9) else leaves

    def backward(self):
        names = self.tensors()
        rg = [n for n in names if self.ns[n].requires_grad]
        out = self.pick(rg[-3:]) if rg else self.pick(names)
        mode = self.pick(
            ["scalar"] * 6
            + ["gradient"] * 3
            + ["twice_retained"] * 2
            + ["twice"] * 2
            + ["grad"] * 2
            + ["double"] * 4
            + ["nonscalar"]
        )
        mids = [n for n in rg if not leaf(self.ns[n]) and n != out]
        # (torch fills retained .grads in autograd.grad too: test_retain_grad_...)
        if mids and mode not in ("grad", "double") and self.chance(0.4):
            for m in self.rng.permutation(mids)[: int(self.rng.integers(1, 3))]:
                self.emit(f"{m}.retain_grad()", may_fail=True)
        if self.chance(0.05):
            non = [n for n in names if not self.ns[n].requires_grad]
            if non:
                self.emit(f"{self.pick(non)}.retain_grad()", may_fail=True)
        shape = self.shape(out)
        n = int(np.prod(shape)) if shape else 1
        weight = f"T.linspace(-1.0, 1.5, {n}).reshape({shape})"
        loss = self.pick(
            [
                f"loss = ({out} * {weight}).sum()",
                f"loss = {out}.sum()",
                f"loss = ({out} * {out}).mean()" if n else f"loss = {out}.sum()",
                f"loss = {out}.tanh().sum() + {self.var()}.sum()",
            ]
        )
        leaves = [n for n in names if n.startswith("x")]
        used = self.used(out, leaves)
        steps = []
        if mode == "gradient":
            steps.append(f"{out}.backward(gradient={weight}.cos())")
        elif mode == "nonscalar":
            steps.append(f"{out}.backward()")
        else:
            steps.append(loss)
            if mode == "scalar":
                steps.append("loss.backward()")
            elif mode == "twice_retained":
                steps += ["loss.backward(retain_graph=True)", "loss.backward()"]
                if self.chance(0.4):
                    steps.append("loss.backward()")
            elif mode == "twice":
                steps += ["loss.backward()", "loss.backward()"]
            elif mode == "grad":
                wrt = list(self.rng.permutation(used)[: int(self.rng.integers(1, 3))])
                steps.append(f"g0 = T.autograd.grad(loss, [{', '.join(wrt)}])")
            else:  # double backward
                wrt = self.pick(used)
                steps.append(f"g0, = T.autograd.grad(loss, [{wrt}], create_graph=True)")
                steps.append(
                    self.pick(
                        [
                            "(g0 * g0).sum().backward()",
                            "g0.sum().backward()",
                            f"(g0.tanh() * {wrt}).sum().backward()",
                        ]
                    )
                )
        for line in steps:
            if not self.emit(line, may_fail=True) or self.failed:
                break


def leaf(t):
    try:
        return t.is_leaf
    except RuntimeError:  # a multi-output view whose base was written to
        return False


def number(text):
    return text[:1].isdigit() or text[:2].startswith("-") and text[1:2].isdigit()


def broadcasts(a, b):
    """a broadcasts with b to b's shape."""
    if len(a) > len(b):
        return False
    return all(x in (1, y) for x, y in zip(a[::-1], b[::-1], strict=False))


# ==== running it on both ====


def fresh(lib):
    return {"T": lib}


def quiet_exec(line, ns):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(line, ns)  # noqa: S102 - the program is ours


def state(ns, lib):
    """Everything compared about the tensors of a namespace, as plain data."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, value in ns.items():
            if name == "T":
                continue
            if isinstance(value, tuple | list):
                for i, v in enumerate(value):
                    if isinstance(v, lib.Tensor):
                        out[f"{name}[{i}]"] = describe(v)
            elif isinstance(value, lib.Tensor):
                out[name] = describe(value)
    return out


def describe(t):
    """A tensor's state; an attribute torch refuses to show (a multi-output view
    whose base was written to) is the exception's type."""
    out = {}
    for key, get in (
        ("shape", lambda: tuple(t.shape)),
        ("dtype", lambda: str(t.dtype)),
        ("value", lambda: array(t)),
        ("requires_grad", lambda: t.requires_grad),
        ("is_leaf", lambda: t.is_leaf),
        ("grad_fn", lambda: t.grad_fn is not None),
        ("grad", lambda: None if t.grad is None else array(t.grad)),
    ):
        try:
            out[key] = get()
        except Exception as exc:  # noqa: BLE001 - the type is compared
            out[key] = type(exc).__name__
    return out


def array(t):
    t = t.detach()
    if isinstance(t, torch.Tensor) and t._is_zerotensor():
        return np.zeros(tuple(t.shape), dtype=str(t.dtype).replace("torch.", ""))
    return np.array(t.numpy(), copy=True)


def execute(lines, lib):
    """Run line by line: the states after each line, and (line, exception) where it
    stopped."""
    ns = fresh(lib)
    states = []
    for i, line in enumerate(lines):
        try:
            quiet_exec(line, ns)
        except Exception as exc:  # noqa: BLE001 - the type is compared
            return states, (i, exc)
        states.append(state(ns, lib))
    return states, None


def close(ours, theirs, what):
    if theirs is None or ours is None:
        assert ours is None and theirs is None, f"{what}: {ours!r} vs {theirs!r}"
        return
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    if theirs.dtype == bool or ours.dtype == bool:
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
        return
    scale = max(1.0, float(np.max(np.abs(theirs[np.isfinite(theirs)]), initial=0)))
    np.testing.assert_allclose(
        ours.astype(float),
        theirs.astype(float),
        rtol=RTOL,
        atol=ATOL * scale,
        err_msg=what,
    )


def compare(lines):
    theirs, their_error = execute(lines, torch)
    ours, our_error = execute(lines, tape)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        where = f"after line {i + 1}: {lines[i]}"
        assert list(a) == list(b), f"{where}: names {list(a)} vs {list(b)}"
        for name in b:
            for key in b[name]:
                what = f"{where}: {name}.{key}"
                if key in ("value", "grad") and not isinstance(b[name][key], str):
                    close(a[name][key], b[name][key], what)
                else:
                    assert (
                        a[name][key] == b[name][key]
                    ), f"{what}: {a[name][key]!r} vs {b[name][key]!r}"
    if their_error is None:
        assert (
            our_error is None
        ), f"tape raised at line {our_error[0] + 1}: {our_error[1]!r}"
        return
    i, exc = their_error
    assert our_error is not None, f"tape did not raise at line {i + 1}: torch {exc!r}"
    assert (
        our_error[0] == i
    ), f"tape raised at line {our_error[0] + 1}, torch at {i + 1}: {exc!r}"
    assert isinstance(
        our_error[1], type(exc)
    ), f"line {i + 1}: {our_error[1]!r} vs torch {exc!r}"


def check_seed(seed):
    lines = Program(seed).draw().lines
    try:
        compare(lines)
    except AssertionError as err:
        raise AssertionError(f"seed {seed}:\n{chr(10).join(lines)}\n\n{err}") from None


# seeds 0-101, one left out: 24 (create_graph through a view re-derived after a
# write to its base); see test_found. A program depends on nothing but its seed (and
# torch's shapes).
SEEDS = [s for s in range(102) if s != 24]


@pytest.mark.parametrize("seed", SEEDS)
def test_random_program(seed):
    check_seed(seed)


# ==== what the random programs found: minimal repros ====


def zero_d_index_is_a_view(torch):
    a = torch.tensor([1.0, 2.0])
    b = a[0]
    b.mul_(10.0)  # torch: a == [10, 2]
    c = a[1]
    a.add_(100.0)  # torch: c == 102
    return a, b, c


def zero_d_unbind_outputs_are_views(torch):
    a = torch.tensor([1.0, 2.0])
    b, c = a.unbind()
    a.add_(100.0)  # torch: b == 101, c == 102
    return b, c


def zero_d_index_of_a_leaf_written(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    x[-1].mul_(2.0)  # torch: RuntimeError, a view of a leaf requiring grad


def flatten_of_1d_is_itself(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    return x.flatten() is x, x.flatten().is_leaf


def var_result_written_in_place(torch):
    x = torch.tensor([1.0, 2.0, 4.0], requires_grad=True)
    v = x.var()
    v.add_(1.0)  # var's backward needs x only: torch raises nothing
    v.backward()
    return x.grad


def prod_result_written_in_place(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    v = x.prod()
    v.add_(1.0)  # torch's prod saves its result: backward raises
    v.backward()
    return x.grad


def inplace_tanh_result_written(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    v = x * 1.5
    v.tanh_()  # torch's tanh_ saves v itself
    v.sub_(1.0)  # ... so backward raises, as after v = (x * 1.5).tanh()
    v.sum().backward()
    return x.grad


def multi_output_view_written(torch):
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    v = x * 1
    v.chunk(2)[0].mul_(2.0)  # torch: RuntimeError (split, chunk, unbind outputs)
    return v


def partial_overlap_written(torch):
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = x * 1
    v.mul_(v[:1])  # torch: RuntimeError, input and output partly overlap
    return v


def view_after_base_write_create_graph(torch):
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    v = x * 1
    w = v[:]
    v.mul_(2.0)  # w's grad_fn becomes AsStridedBackward0
    (g,) = torch.autograd.grad((w * w).sum(), [x], create_graph=True)
    g.sum().backward()
    return g, x.grad


def softmax_of_empty(torch):
    x = torch.tensor([[1.0, 2.0]], requires_grad=True)
    e = x[1:]
    return e.softmax(0), e.log_softmax(0), e.logsumexp(0)


def std_second_derivative_at_zero_spread(torch):
    x = torch.tensor([1.0, 1.0], requires_grad=True)
    (g,) = torch.autograd.grad(x.std(), [x], create_graph=True)
    g.sum().backward()
    return g, x.grad  # torch: x.grad == [0, 0] (the tape's was nan)


def norm_second_derivative_at_zero(torch):
    x = torch.tensor([0.0, 0.0], requires_grad=True)
    (g,) = torch.autograd.grad(x.norm(), [x], create_graph=True)
    g.sum().backward()
    return g, x.grad  # torch: x.grad == [nan, nan]; tape: 0


def relu_gradient_recorded(torch):
    x = torch.tensor([-0.175, 0.3], requires_grad=True)
    (g,) = torch.autograd.grad(x.relu().sum(), [x], create_graph=True)
    requires = g.requires_grad  # torch: True (ReluBackward0 saves its result)
    g.sum().backward()  # (the tape's g did not require grad: RuntimeError)
    return requires, x.grad


def retain_grad_in_autograd_grad(torch):
    x = torch.tensor([0.5, -1.0], requires_grad=True)
    v = x**3
    v.retain_grad()
    torch.autograd.grad((v * v).sum(), [x])
    return v.grad  # torch fills it; the tape leaves None


FOUND = {
    "a[0] of a 1-D tensor is a 0-d view": zero_d_index_is_a_view,
    "unbind's outputs of a 1-D tensor are 0-d views": zero_d_unbind_outputs_are_views,
    "x[-1] of a leaf written in place": zero_d_index_of_a_leaf_written,
    "flatten of a 1-D tensor returns it": flatten_of_1d_is_itself,
    "var's result written in place": var_result_written_in_place,
    "prod's result written in place": prod_result_written_in_place,
    "tanh_'s result written in place": inplace_tanh_result_written,
    "a chunk output written in place": multi_output_view_written,
    "v.mul_(v[:1]): partial overlap": partial_overlap_written,
    "create_graph through a view re-derived after a write to its base": (
        view_after_base_write_create_graph,
        differs(
            "AsStridedBackward0 is once_differentiable in the tape: RuntimeError "
            "under create_graph=True",
            raises=RuntimeError,
        ),
    ),
    "softmax, log_softmax, logsumexp of an empty tensor": softmax_of_empty,
    "std's second derivative at zero spread": std_second_derivative_at_zero_spread,
    "norm's second derivative at zero": (
        norm_second_derivative_at_zero,
        differs("torch: x.grad == [nan, nan]; tape: [0, 0]"),
    ),
    "relu's gradient under create_graph requires grad": relu_gradient_recorded,
    "retain_grad is filled by autograd.grad": (
        retain_grad_in_autograd_grad,
        differs("torch fills v.grad in autograd.grad; the tape leaves None"),
    ),
}


@pytest.mark.parametrize("script", cases(FOUND))
def test_found(script):
    check(script)
