"""Aliasing fuzz of generated modules: in-place writes into memory something else sees.

The generated code computes large elementwise formulas in place into arrays it believes
dead, keeps arrays alive while views of them live, caches arrays for ``backward`` and
returns outputs and gradients that must never alias the caller's arrays, the cache or
each other. Random recipes (drawn with hypothesis, derandomized) compose views
(``.T``, ``transpose`` with permutations, ``reshape`` merging and splitting axes, basic
slicing with steps, ``[None]``, ``sg.swapaxes``, ``sg.moveaxis``, ``sg.broadcast_to``,
``sg.expand_dims``, ``sg.squeeze``, ``sg.flip``), contractions (``@``, ``sg.einsum``
``'bchw,oc->bohw'``, ``'bhwc,oc->bhwo'``, ``'bij,bjk->bik'``, ``'bij,bkj->bik'``),
elementwise maps over >= 1000 elements (so the in-place path runs), reductions with
``keepdims``, ``concatenate``/``stack``/``split``, ``m.let`` and ``m.output`` of views of
intermediates, inputs and params, outputs used again later, and values with several
consumers. One interpreter runs a recipe on symgrad and on a torch float64 twin. Each
model is checked for: (1) outputs and loss vs torch, (2) ``value_and_grad`` vs torch
autograd, (3) ``backward(cache)`` and ``backward(cache, -1.5)`` vs value_and_grad, (4)
a second ``forward`` with other values leaves the first cache intact, (5) read-only
params/inputs are unchanged bit for bit, (6) zeroing returned outputs does not change a
later ``backward(cache)``, (7) gradients share no memory with each other, the cache, the
outputs or the caller's arrays (and editing them changes nothing else).

Every input is passed read-only, in C order, Fortran order or as a strided view, so the
caller's layout also varies which reshapes and transposes are views.

Found (pinned below, hand-shrunk), one cause in two shapes: ``forward`` returned an
output that shared memory with the cache, so ``out["y"][...] = 0`` changed a later
``backward(cache)``: (a) an output that is itself a *named view* of a fresh array
(``(x @ W.T).reshape(...)``, or the 1x1 conv ``sg.einsum("bchw,oc->bohw", x, W)``),
cached under its own name; (b) an output array of which a *view* is cached
(``h = m.let("h", y[None])``). ``_return`` in codegen.py now copies an output that
shares a base with any cached value.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from helpers import compile_module, rel
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

import symgrad as sg
from symgrad.cli import generate

torch = pytest.importorskip("torch")

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    report_multiple_bugs=False,
)
BASE = (2, 4, 8, 16)  # 1024 elements: formulas over it are computed in place
TOL = 1e-9
IN_PLACE = re.compile(r"out=|[-+*/]= ")  # np.tanh(t1, out=t1), t1 *= ...


# ----------------------------------------------------------------------- backends


class SG:
    """The recipe's operations on symgrad expressions (declaring into ``m``)."""

    def __init__(self, model):
        self.m = model

    def param(self, name, shape):
        return self.m.param(name, shape)

    def input(self, name, shape):
        return self.m.input(name, shape)

    def output(self, name, v):
        return self.m.output(name, v)

    def let(self, name, v):
        return self.m.let(name, v)

    tanh, sin, sigmoid, exp = map(staticmethod, (sg.tanh, sg.sin, sg.sigmoid, sg.exp))
    einsum, swapaxes, moveaxis = map(
        staticmethod, (sg.einsum, sg.swapaxes, sg.moveaxis)
    )
    broadcast_to, expand_dims, squeeze, flip = map(
        staticmethod, (sg.broadcast_to, sg.expand_dims, sg.squeeze, sg.flip)
    )

    @staticmethod
    def T(v):
        return v.T

    @staticmethod
    def transpose(v, perm):
        return v.transpose(perm)

    @staticmethod
    def reshape(v, shape):
        return v.reshape(shape)

    @staticmethod
    def sum(v, axis, keepdims):
        return sg.sum(v, axis=axis, keepdims=keepdims)

    @staticmethod
    def mean(v, axis, keepdims):
        return sg.mean(v, axis=axis, keepdims=keepdims)

    @staticmethod
    def max(v, axis, keepdims):
        return sg.max(v, axis=axis, keepdims=keepdims)

    @staticmethod
    def concatenate(vs, axis):
        return sg.concatenate(vs, axis=axis)

    @staticmethod
    def stack(vs, axis):
        return sg.stack(vs, axis=axis)

    @staticmethod
    def split(v, axis):
        return sg.split(v, 2, axis=axis)


class Torch:
    """The same operations on torch tensors."""

    def __init__(self, params, inputs):
        self.params, self.inputs, self.outputs = params, inputs, {}

    def param(self, name, shape):
        return self.params[name]

    def input(self, name, shape):
        return self.inputs[name]

    def output(self, name, v):
        self.outputs[name] = v
        return v

    def let(self, name, v):
        return v

    tanh, sin, sigmoid, exp = map(
        staticmethod, (torch.tanh, torch.sin, torch.sigmoid, torch.exp)
    )
    einsum, swapaxes, moveaxis = map(
        staticmethod, (torch.einsum, torch.swapaxes, torch.moveaxis)
    )
    broadcast_to, expand_dims, squeeze = map(
        staticmethod, (torch.broadcast_to, torch.unsqueeze, torch.squeeze)
    )

    @staticmethod
    def flip(v, axis):
        return torch.flip(v, (axis,))

    @staticmethod
    def T(v):
        return v.permute(*reversed(range(v.ndim)))

    @staticmethod
    def transpose(v, perm):
        return v.permute(*perm)

    @staticmethod
    def reshape(v, shape):
        return v.reshape(shape)

    @staticmethod
    def sum(v, axis, keepdims):
        return v.sum(dim=axis, keepdim=keepdims)

    @staticmethod
    def mean(v, axis, keepdims):
        return v.mean(dim=axis, keepdim=keepdims)

    @staticmethod
    def max(v, axis, keepdims):
        return torch.amax(v, dim=axis, keepdim=keepdims)

    @staticmethod
    def concatenate(vs, axis):
        return torch.cat(vs, dim=axis)

    @staticmethod
    def stack(vs, axis):
        return torch.stack(vs, dim=axis)

    @staticmethod
    def split(v, axis):
        return list(torch.split(v, v.shape[axis] // 2, dim=axis))


# ----------------------------------------------------------------------- recipes


def apply(B, step, pool):
    """Run one recipe step on backend ``B``; returns the values it adds to ``pool``."""
    op, a, *rest = step
    x = pool[a] if isinstance(a, int) else None
    if op == "param":
        return [B.param(a, rest[0])]
    if op == "input":
        return [B.input(a, rest[0])]
    if op == "output":
        return [B.output(rest[1], pool[rest[0]])]
    if op == "let":
        return [B.let(rest[1], pool[rest[0]])]
    if op == "unary":
        fn = rest[0]
        if fn == "square":
            return [x * x]
        if fn == "exp":
            return [B.exp(B.tanh(x))]
        if fn == "affine":
            return [2.5 * x - 0.5]
        if fn == "neg":
            return [-x]
        return [getattr(B, fn)(x)]
    if op == "binary":
        y = pool[rest[1]]
        fn = rest[0]
        if fn == "add":
            return [x + y]
        if fn == "sub":
            return [y - x]
        if fn == "mul":
            return [x * y]
        if fn == "div":
            return [x / (2.0 + B.tanh(y))]
        if fn == "fma":
            return [B.tanh(x * y + x - 0.25 * y)]
    if op == "T":
        return [B.T(x)]
    if op == "transpose":
        return [B.transpose(x, rest[0])]
    if op == "reshape":
        return [B.reshape(x, rest[0])]
    if op == "slice":
        axis, start, stop, step_ = rest
        index = (slice(None),) * axis + (slice(start, stop, step_),)
        return [x[index]]
    if op == "none":
        return [x[None]]
    if op == "squeeze":
        return [B.squeeze(x, rest[0])]
    if op == "expand_dims":
        return [B.expand_dims(x, rest[0])]
    if op == "swapaxes":
        return [B.swapaxes(x, *rest)]
    if op == "moveaxis":
        return [B.moveaxis(x, *rest)]
    if op == "broadcast_to":
        return [B.broadcast_to(x, rest[0])]
    if op == "flip":
        return [B.flip(x, rest[0])]
    if op == "einsum":
        return [B.einsum(rest[0], x, pool[rest[1]])]
    if op == "matmul":
        return [x @ pool[rest[0]]]
    if op == "matmul_T":  # x @ y^T over the last two axes
        return [x @ B.swapaxes(pool[rest[0]], -1, -2)]
    if op == "center":  # x - reduce(x, axis, keepdims=True)
        reduce, axis = rest
        return [x - getattr(B, reduce)(x, axis, True)]
    if op == "reduce":
        reduce, axis = rest
        return [getattr(B, reduce)(x, axis, False)]
    if op == "concatenate":
        return [B.concatenate([x, pool[rest[0]]], rest[1])]
    if op == "stack":
        return [B.stack([x, pool[rest[0]]], rest[1])]
    if op == "split":
        return B.split(x, rest[0])
    raise AssertionError(step)


def loss_of(B, pool, picks):
    total = 0.0
    for k, i in enumerate(picks):
        v = pool[i]
        term = B.sin(v) * v if k % 2 == 0 else B.tanh(v) + 0.5 * v * v
        total = total + (1.0 + 0.25 * k) * B.mean(term, None, False)
    return total


def build_sg(name, recipe, picks):
    m = sg.Model(name)
    B, pool = SG(m), []
    for step in recipe:
        pool += apply(B, step, pool)
    m.loss(loss_of(B, pool, picks))
    return m


def torch_reference(recipe, picks, params, inputs):
    """Loss, outputs and parameter gradients of the torch float64 twin."""
    tp = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in params.items()}
    ti = {k: torch.tensor(np.array(v)) for k, v in inputs.items()}
    B, pool = Torch(tp, ti), []
    for step in recipe:
        pool += apply(B, step, pool)
    loss = loss_of(B, pool, picks)
    if loss.requires_grad:  # (a loss of the inputs alone has no graph)
        loss.backward()
    grads = {
        k: np.zeros(v.shape) if v.grad is None else v.grad.numpy()
        for k, v in tp.items()
    }
    outputs = {k: v.detach().numpy().copy() for k, v in B.outputs.items()}
    return loss.detach().numpy(), outputs, grads


class Drawer:
    """Draws a recipe step by step, tracking shapes with a NumPy shadow."""

    def __init__(self, draw):
        self.draw = draw
        self.recipe, self.shapes = [], []
        self.count = {"param": 0, "input": 0, "out": 0, "let": 0}
        self.params, self.inputs = {}, {}
        self.unnamable = set()  # leaves (outputs must be computed) and named values

    def add(self, step, shapes):
        self.recipe.append(step)
        self.shapes += shapes

    def leaf(self, kind, shape):
        name = f"{'P' if kind == 'param' else 'X'}{self.count[kind]}"
        self.count[kind] += 1
        (self.params if kind == "param" else self.inputs)[name] = tuple(shape)
        self.add((kind, name, tuple(shape)), [tuple(shape)])
        self.unnamable.add(len(self.shapes) - 1)
        return len(self.shapes) - 1

    def pick(self, pred=lambda s: True, exclude=()):
        choices = [i for i, s in enumerate(self.shapes) if pred(s) and i not in exclude]
        return self.draw(st.sampled_from(choices)) if choices else None

    def same_shape(self, shape):
        """A value of ``shape`` from the pool, or a new param/input of it."""
        i = self.pick(lambda s: s == shape)
        if i is None or self.draw(st.integers(0, 3)) == 0:
            kind = self.draw(st.sampled_from(["param", "input"]))
            i = self.leaf(kind, shape)
        return i

    def step(self):
        d = self.draw
        op = d(
            st.sampled_from(
                [
                    "unary", "binary", "binary", "T", "transpose", "reshape", "slice",
                    "none", "expand_dims", "swapaxes", "moveaxis", "broadcast_to",
                    "flip", "einsum", "einsum", "matmul", "matmul_T", "center",
                    "reduce", "concatenate", "stack", "split", "output", "output",
                    "let",
                ]
            )
        )  # fmt: skip
        a = self.pick(lambda s: len(s) >= 1)
        s = self.shapes[a]
        n = len(s)
        if op == "unary":
            fn = d(
                st.sampled_from(
                    ["tanh", "sin", "sigmoid", "exp", "square", "affine", "neg"]
                )
            )
            self.add((op, a, fn), [s])
        elif op == "binary":
            fn = d(st.sampled_from(["add", "sub", "mul", "div", "fma"]))
            if d(st.booleans()):
                b = self.same_shape(s)
            else:  # a broadcast operand: a row along the last axes
                k = d(st.integers(0, n))
                b = self.same_shape(s[k:])
            self.add((op, a, fn, b), [s])
        elif op == "T":
            if n < 2:
                return
            self.add((op, a), [s[::-1]])
        elif op == "transpose":
            perm = tuple(d(st.permutations(range(n))))
            if perm == tuple(range(n)):  # (the same node: it could not be named)
                return
            self.add((op, a, perm), [tuple(s[p] for p in perm)])
        elif op == "reshape":
            kind = d(st.sampled_from(["merge", "split", "flat2"]))
            if kind == "merge" and n >= 2:
                k = d(st.integers(0, n - 2))
                new = s[:k] + (s[k] * s[k + 1],) + s[k + 2 :]
            elif kind == "split" and any(x % 2 == 0 and x > 2 for x in s):
                k = d(
                    st.sampled_from(
                        [i for i, x in enumerate(s) if x % 2 == 0 and x > 2]
                    )
                )
                new = s[:k] + (2, s[k] // 2) + s[k + 1 :]
            else:
                new = (s[0], int(np.prod(s[1:])))
            self.add((op, a, new), [new])
        elif op == "slice":
            k = d(st.integers(0, n - 1))
            size = s[k]
            start = d(st.integers(0, max(0, size // 2 - 1)))
            step_ = d(st.sampled_from([1, 1, 2, 3]))
            stop = d(st.sampled_from([None, size]))
            new = s[:k] + (len(range(start, size, step_)),) + s[k + 1 :]
            self.add((op, a, k, start, stop, step_), [new])
        elif op == "none":
            self.add((op, a), [(1, *s)])
        elif op == "expand_dims":
            k = d(st.integers(0, n))
            new = s[:k] + (1,) + s[k:]
            self.add((op, a, k), [new])
            if d(st.booleans()):  # and back
                self.add(("squeeze", len(self.shapes) - 1, k), [s])
                self.unnamable |= {a, len(self.shapes) - 1}  # (x itself again)
        elif op == "swapaxes":
            i, j = d(st.integers(0, n - 1)), d(st.integers(0, n - 1))
            if i == j or s[i] == s[j] == 1:
                return
            new = list(s)
            new[i], new[j] = new[j], new[i]
            self.add((op, a, i, j), [tuple(new)])
        elif op == "moveaxis":
            i, j = d(st.integers(0, n - 1)), d(st.integers(0, n - 1))
            if i == j:
                return
            new = list(s)
            new.insert(j, new.pop(i))
            self.add((op, a, i, j), [tuple(new)])
        elif op == "broadcast_to":
            if n >= 5:  # (to its own shape: the same node)
                return
            new = (2, *s)
            self.add((op, a, new), [new])
        elif op == "flip":
            self.add((op, a, d(st.integers(0, n - 1))), [s])
        elif op == "einsum":
            if n == 4 and d(st.booleans()):
                sub = d(st.sampled_from(["bchw,oc->bohw", "bhwc,oc->bhwo"]))
                c = s[1] if sub.startswith("bchw") else s[3]
                w = self.same_shape((c, c))
                new = s
            elif n == 3:
                sub = d(st.sampled_from(["bij,bjk->bik", "bij,bkj->bik"]))
                if sub == "bij,bjk->bik":
                    w = self.same_shape((s[0], s[2], s[2]))
                    new = s
                else:
                    w = self.same_shape(s)
                    new = (s[0], s[1], s[1])
            else:
                sub = "...j,kj->...k"
                w = self.same_shape((s[-1], s[-1]))
                new = s
            self.add((op, a, sub, w), [new])
        elif op == "matmul":
            w = self.same_shape((s[-1], s[-1]))
            self.add((op, a, w), [s])
        elif op == "matmul_T":
            if n < 2:
                return
            b = self.same_shape(s)
            self.add((op, a, b), [s[:-1] + (s[-2],)])
        elif op in ("center", "reduce"):
            reduce = d(st.sampled_from(["sum", "mean", "max"]))
            k = d(st.integers(0, n - 1))
            new = s if op == "center" else s[:k] + s[k + 1 :]
            if not new:
                return
            self.add((op, a, reduce, k), [new])
        elif op in ("concatenate", "stack"):
            b = self.same_shape(s)
            k = d(st.integers(0, n - (op == "concatenate")))
            if op == "concatenate":
                new = s[:k] + (2 * s[k],) + s[k + 1 :]
            else:
                new = s[:k] + (2,) + s[k:]
            self.add((op, a, b, k), [new])
        elif op == "split":
            even = [k for k, x in enumerate(s) if x % 2 == 0]
            if not even:
                return
            k = d(st.sampled_from(even))
            half = s[:k] + (s[k] // 2,) + s[k + 1 :]
            self.add((op, a, k), [half, half])
        elif op in ("output", "let"):
            a = self.pick(lambda s: True, exclude=self.unnamable)
            if a is None:
                return
            self.unnamable |= {a, len(self.shapes)}
            key = "out" if op == "output" else "let"
            name = f"{'y' if key == 'out' else 'h'}{self.count[key]}"
            self.count[key] += 1
            self.add((op, None, a, name), [self.shapes[a]])


@st.composite
def recipes(draw):
    dr = Drawer(draw)
    dr.leaf("param", BASE)
    dr.leaf("input", BASE)
    for _ in range(draw(st.integers(3, 10))):
        dr.step()
        if max(int(np.prod(s)) for s in dr.shapes[-3:]) > 40000:
            break  # keep it quick
    picks = sorted(
        set(draw(st.lists(st.integers(0, len(dr.shapes) - 1), min_size=1, max_size=3)))
        | {len(dr.shapes) - 1}
    )
    if draw(st.booleans()):  # an output used again later, or of a leaf's view
        pass
    return dr.recipe, picks, dr.params, dr.inputs


# ----------------------------------------------------------------------- checks


def data(shapes_params, shapes_inputs, seed, layout="C"):
    """Read-only arrays in C order, Fortran order or as strided views of a larger buffer
    (the caller's layout decides which reshapes and transposes are views)."""
    rng = np.random.default_rng(seed)

    def arr(shape):
        scale = 1.0 / np.sqrt(shape[-1]) if len(shape) == 2 else 1.0
        a = np.array(scale * rng.standard_normal(shape))
        if layout == "F" and a.ndim:
            a = np.asfortranarray(a)
        elif layout == "strided" and a.ndim:
            buffer = np.zeros((*shape[:-1], 2 * shape[-1]))
            buffer[..., ::2] = a
            a = buffer[..., ::2]
        a.flags.writeable = False  # (5): the module must never write into it
        return a

    params = {k: arr(s) for k, s in shapes_params.items()}
    inputs = {k: arr(s) for k, s in shapes_inputs.items()}
    return params, inputs


def arrays(d):
    return [(k, v) for k, v in d.items() if isinstance(v, np.ndarray) and v.size]


def assert_disjoint(group_a, group_b, what):
    same = group_a is group_b
    for ia, (ka, a) in enumerate(group_a):
        for ib, (kb, b) in enumerate(group_b):
            if same and ib <= ia:
                continue
            assert not np.shares_memory(a, b), f"{what}: {ka} shares memory with {kb}"


def check_model(model, recipe, picks, pshapes, ishapes, seed=0, layout="C"):
    """Checks (1)-(7) above; returns the generated source."""
    source, _ = generate(model)
    module = compile_module(model)
    params, inputs = data(pshapes, ishapes, seed, layout)
    frozen = {k: v.tobytes() for k, v in {**params, **inputs}.items()}
    exp_loss, exp_out, exp_grads = torch_reference(recipe, picks, params, inputs)
    floor = 1e-3 * max(np.max(np.abs(g), initial=1e-300) for g in exp_grads.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = module.value_and_grad(params, inputs)
        # (1) outputs and loss, (2) gradients against torch
        out, cache = module.forward(params, inputs)
        assert rel(loss, exp_loss) <= TOL and rel(out["loss"], exp_loss) <= TOL
        assert set(out) == {"loss", *exp_out}
        for k, ref in exp_out.items():
            assert rel(out[k], ref) <= TOL, k
        for k, ref in exp_grads.items():
            assert rel(grads[k], ref, floor) <= TOL, (k, "value_and_grad vs torch")
        # (3) backward at 1 and -1.5
        g1 = module.backward(cache)
        g2 = module.backward(cache, grad_loss=-1.5)
        for k, ref in exp_grads.items():
            assert rel(g1[k], ref, floor) <= TOL, (k, "backward vs torch")
            assert rel(g2[k], -1.5 * ref, 1.5 * floor) <= TOL, (k, "grad_loss=-1.5")
        # (7) results own their memory
        if isinstance(cache, dict):
            assert_disjoint(arrays(out), arrays(cache), "output vs cache")
            assert_disjoint(arrays(g1), arrays(cache), "grad vs cache")
        for group, what in ((out, "outputs"), (g1, "grads"), (grads, "vg grads")):
            group = arrays(group)
            assert_disjoint(group, group, what)
        caller = arrays({**params, **inputs})
        for results in (out, g1, grads):
            assert_disjoint(arrays(results), caller, "result vs caller")
        assert_disjoint(arrays(g1), arrays(g2), "grads of two backward calls")
        # (4) a second forward with other values leaves the first cache intact
        params2, inputs2 = data(pshapes, ishapes, seed + 1, layout)
        out2, _ = module.forward(params2, inputs2)
        g3 = module.backward(cache)
        for k, ref in exp_grads.items():
            assert rel(g3[k], ref, floor) <= TOL, (k, "after a second forward")
        # (6) editing the outputs and grads does not change a later backward
        for _, v in arrays(out):
            if v.flags.writeable:
                v[...] = 0.0
        for v in g1.values():
            if isinstance(v, np.ndarray) and v.flags.writeable:
                v[...] = 7.0
        g4 = module.backward(cache)
        for k, ref in exp_grads.items():
            assert rel(g4[k], ref, floor) <= TOL, (k, "after editing outputs")
    # (5) the caller's arrays are bit-for-bit unchanged
    for k, v in {**params, **inputs}.items():
        assert v.tobytes() == frozen[k], k
    return source


def describe(recipe, picks):
    return "\n".join(map(repr, recipe)) + f"\nloss picks {picks}"


@FUZZ
@given(recipes(), st.sampled_from(["C", "C", "F", "strided"]))
def test_random_view_contraction_recipes(drawn, layout):
    recipe, picks, pshapes, ishapes = drawn
    try:
        model = build_sg("fuzz", recipe, picks)
    except sg.ModelError as e:  # one value named twice: two steps gave the same node
        assert "already named" in str(e)
        reject()
    try:
        source = check_model(model, recipe, picks, pshapes, ishapes, layout=layout)
    except AssertionError as e:
        raise AssertionError(f"{e}\n{describe(recipe, picks)}") from None
    event("in place" if IN_PLACE.search(source) else "no in-place write")


# ----------------------------------------------------------------------- hand-picked

BASE_RECIPE = [("param", "P0", BASE), ("input", "X0", BASE)]
HAND = {
    # the last round's bug: a cached transposed reshape of a matmul result whose
    # memory layout is transposed (a view), the matmul result then overwritten
    "einsum_conv_then_inplace": (
        [
            *BASE_RECIPE,
            ("param", "P1", (4, 4)),
            ("einsum", 1, "bchw,oc->bohw", 2),
            ("unary", 3, "tanh"),
            ("binary", 4, "fma", 0),
            ("einsum", 5, "bchw,oc->bohw", 2),
        ],
        [6],
    ),
    "channels_last_einsum_chain": (
        [
            *BASE_RECIPE,
            ("param", "P1", (16, 16)),
            ("einsum", 0, "bhwc,oc->bhwo", 2),
            ("transpose", 3, (0, 3, 1, 2)),
            ("unary", 4, "sigmoid"),
            ("binary", 5, "mul", 4),
            ("reshape", 6, (2, 16, 32)),
            ("matmul_T", 7, 7),
        ],
        [6, 8],
    ),
    "batched_matmul_shared_by_three": (
        [
            ("param", "P0", (8, 16, 16)),
            ("input", "X0", (8, 16, 16)),
            ("einsum", 1, "bij,bjk->bik", 0),
            ("unary", 2, "tanh"),
            ("binary", 3, "add", 2),
            ("einsum", 3, "bij,bkj->bik", 2),
            ("swapaxes", 2, 1, 2),
            ("binary", 6, "mul", 4),
            ("let", None, 6, "h0"),
        ],
        [5, 7, 8],
    ),
    "output_used_again_in_place": (
        [
            *BASE_RECIPE,
            ("binary", 0, "mul", 1),
            ("output", None, 2, "y0"),
            ("unary", 3, "tanh"),
            ("binary", 4, "fma", 3),
            ("moveaxis", 3, 0, 3),
            ("binary", 6, "add", 6),
        ],
        [5, 7],
    ),
    "views_of_leaves_as_outputs": (
        [
            *BASE_RECIPE,
            ("slice", 0, 2, 1, None, 3),
            ("output", None, 2, "y0"),
            ("T", 1),
            ("output", None, 4, "y1"),
            ("broadcast_to", 0, (2, 2, 4, 8, 16)),
            ("binary", 6, "mul", 0),
        ],
        [3, 5, 7],
    ),
    "concatenate_split_stack": (
        [
            *BASE_RECIPE,
            ("concatenate", 0, 1, 3),
            ("unary", 2, "sin"),
            ("split", 3, 3),
            ("binary", 4, "mul", 5),
            ("stack", 6, 4, 1),
            ("center", 7, "max", 2),
        ],
        [8, 5],
    ),
}


@pytest.mark.parametrize("name", sorted(HAND))
def test_hand_picked(name):
    recipe, picks = HAND[name]
    drawn = Drawer(None)
    for step in recipe:  # the leaves' shapes
        if step[0] in ("param", "input"):
            (drawn.params if step[0] == "param" else drawn.inputs)[step[1]] = step[2]
    source = check_model(
        build_sg(name, recipe, picks), recipe, picks, drawn.params, drawn.inputs
    )
    assert IN_PLACE.search(source)  # the in-place path ran


def test_named_reshape_of_matmul_output_aliases_cache():
    recipe = [
        ("input", "X0", (64, 16)),
        ("param", "P0", (16, 16)),
        ("matmul_T", 0, 1),  # x @ W.T
        ("reshape", 2, (4, 16, 16)),
        ("output", None, 3, "y0"),
    ]
    check_model(
        build_sg("a", recipe, [4]), recipe, [4], {"P0": (16, 16)}, {"X0": (64, 16)}
    )


def test_named_einsum_conv_output_aliases_cache():
    recipe = [
        ("input", "X0", BASE),
        ("param", "P0", (4, 4)),
        ("einsum", 0, "bchw,oc->bohw", 1),
        ("output", None, 2, "y0"),
    ]
    check_model(build_sg("b", recipe, [3]), recipe, [3], {"P0": (4, 4)}, {"X0": BASE})


def test_output_whose_view_is_cached_aliases_cache():
    recipe = [
        ("param", "P0", (64, 16)),
        ("unary", 0, "sin"),
        ("output", None, 1, "y0"),
        ("none", 2),
        ("let", None, 3, "h0"),
    ]
    check_model(build_sg("c", recipe, [4]), recipe, [4], {"P0": (64, 16)}, {})
