"""Evaluate a declared model with a PyTorch-like engine: ``symgrad.tape``, or torch itself.

This interprets the model as declared, before any symbolic work, and lets the engine's own
autograd compute the gradients: the reference the generated code is checked against.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from . import ops, symbolic, tape
from .ir import Node, toposort
from .model import Model


def reference(model: Model, params: dict, inputs: dict, engine=tape) -> tuple:
    """(loss, outputs, grads) of the model computed by ``engine`` (float64 throughout)."""
    leaves = _leaves(params, engine)
    values = evaluate(model, leaves, inputs, engine)
    loss = values[model.loss_node]
    if loss.requires_grad:  # else the loss is constant: every gradient is zero
        loss.backward()
    grads = {
        k: np.zeros(np.shape(params[k])) if t.grad is None else t.grad.numpy()
        for k, t in leaves.items()
    }
    outputs = {k: values[n].detach().numpy() for k, n in model.outputs.items()}
    return loss.item(), outputs, grads


def hvp(model: Model, params: dict, inputs: dict, v: dict, engine=tape) -> dict:
    """The Hessian of the loss times ``v``, by ``engine``'s double backward."""
    leaves = _leaves(params, engine)
    loss = evaluate(model, leaves, inputs, engine)[model.loss_node]
    products = {k: np.zeros(np.shape(p)) for k, p in params.items()}
    if loss.requires_grad:  # else the loss is constant
        grads = engine.autograd.grad(
            loss, list(leaves.values()), create_graph=True, allow_unused=True
        )
        along_v = [
            (g * engine.tensor(np.asarray(v[k], dtype=float))).sum()
            for k, g in zip(leaves, grads, strict=True)
            if g is not None and g.requires_grad
        ]
        if along_v:  # else the gradient is constant
            hv = engine.autograd.grad(
                sum(along_v), list(leaves.values()), allow_unused=True
            )
            for k, h in zip(leaves, hv, strict=True):
                if h is not None:
                    products[k] = h.numpy()
    return products


def _leaves(params: dict, engine) -> dict:
    """The parameters as float64 leaf tensors of ``engine`` that require grad."""
    return {
        k: engine.tensor(np.asarray(p, dtype=float), requires_grad=True)
        for k, p in params.items()
    }


def evaluate(model: Model, params: dict, inputs: dict, engine=tape) -> dict:
    """The value of every node of the declared model, as ``engine`` tensors.

    ``params`` are engine tensors (so the caller decides what requires grad, e.g. for
    ``torch.autograd.functional.hessian``); ``inputs`` are arrays.
    """
    run = _Interpreter(engine)
    values: dict[Node, object] = {n: params[k] for k, n in model.params.items()}
    values.update(
        {n: engine.tensor(np.asarray(inputs[k])) for k, n in model.inputs.items()}
    )
    shapes = {k: tuple(t.shape) for k, t in params.items()}
    sizes = {model.dims[k]: v for k, v in bound_dims(model, shapes, inputs).items()}
    order = toposort([model.loss_node, *model.outputs.values()])
    targets = {n.args[1] for n in order if n.op == "grad"}  # sg.grad's wrt
    for node in order:
        if node not in values:
            values[node] = run.node(node, [values[a] for a in node.args], sizes)
        if node in targets and not values[node].requires_grad:  # x.requires_grad_()
            values[node] = values[node].detach().requires_grad_()
    return values


def bound_dims(model: Model, params: dict, inputs: dict) -> dict[str, int]:
    """The size of every symbolic dim, read off the arrays."""
    dims = {}
    for nodes, arrays in ((model.params, params), (model.inputs, inputs)):
        for name, node in nodes.items():
            shape = (
                arrays[name]
                if isinstance(arrays[name], tuple)
                else np.shape(arrays[name])
            )
            for d, n in zip(node.shape, shape, strict=True):
                if isinstance(d, sp.Symbol):
                    dims[d.name] = n
    return dims


def _index_key(spec: tuple) -> tuple:
    key = {
        "new": lambda e: None,
        "int": lambda e: e[1],
        "slice": lambda e: slice(*e[1:]),
    }
    return tuple(key[entry[0]](entry) for entry in spec)


_COMPARE = {
    "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
    "==": np.equal, "!=": np.not_equal,
}  # fmt: skip


class _Interpreter:
    """Each IR primitive and SymPy function as the engine's operation."""

    def __init__(self, engine):
        self.engine = engine
        F = engine.nn.functional
        self.functions = {
            sp.exp: engine.exp, sp.log: engine.log, sp.sin: engine.sin, sp.cos: engine.cos,
            sp.tan: engine.tan, sp.sinh: engine.sinh, sp.cosh: engine.cosh,
            sp.tanh: engine.tanh, sp.asin: engine.asin, sp.acos: engine.acos,
            sp.atan: engine.atan, sp.asinh: engine.asinh, sp.acosh: engine.acosh,
            sp.atanh: engine.atanh, sp.atan2: engine.atan2, sp.erf: engine.erf,
            sp.erfc: engine.erfc, symbolic.erfc: engine.erfc,
            symbolic.erfc_ratio: lambda x, erfc: engine.exp(-x * x) / erfc,
            symbolic.log_erfc: lambda x, erfc: engine.log(erfc),
            symbolic.atan2: engine.atan2, symbolic.masked_sqrt: engine.sqrt,
            sp.Abs: engine.abs, sp.sign: engine.sign,
            symbolic.sigmoid: engine.sigmoid, symbolic.relu: engine.relu,
            symbolic.softplus: F.softplus, symbolic.log1p: lambda x: engine.log(1 + x),
            symbolic.expm1: engine.expm1, sp.loggamma: engine.lgamma,
            sp.polygamma: lambda n, x: engine.polygamma(int(n.item()), x),
        }  # fmt: skip

    def node(self, node: Node, args: list, sizes: dict):
        op, attrs = node.op, node.attrs
        if op == "map":
            out = self.formula(attrs[0], args, sizes)
            shape = _concrete(node.shape, sizes)
            if tuple(out.shape) != shape:  # a constant, such as x - x: broadcast it
                out = out + self.engine.zeros(shape, dtype=self.engine.float64)
            return out
        if op == "matmul":
            return args[0] @ args[1]
        if op == "transpose":
            return args[0].permute(*attrs[0])
        if op == "reshape":
            return args[0].reshape(_concrete(attrs[0], sizes))
        if op == "sum":
            return args[0].sum(dim=attrs[0], keepdim=attrs[1])
        if op == "max":
            return args[0].amax(dim=attrs[0], keepdim=attrs[1])
        if op == "min":
            return args[0].amin(dim=attrs[0], keepdim=attrs[1])
        if op == "index":
            return self._index(args[0], attrs[0], _concrete(node.args[0].shape, sizes))
        if op == "gather":
            return args[0][args[1]]
        if op == "take_along_axis":
            shape = _concrete(node.shape, sizes)  # torch's gather does not broadcast
            return args[0].gather(attrs[0], args[1].expand(*shape))
        if op == "cumsum":
            axis, reverse = attrs
            if reverse:
                return args[0].flip(axis).cumsum(axis).flip(axis)
            return args[0].cumsum(axis)
        if op == "concatenate":
            return self.engine.cat(args, dim=attrs[0])
        if op == "scatter" and node.attrs == ((("rows",),), False):  # sg.segment_sum
            shape = _concrete(node.shape, sizes)
            out = self.engine.zeros(shape, dtype=self.engine.float64)
            ids = args[1] % shape[0]  # negative ids count from the end, as in NumPy
            return out.index_add(0, ids, args[0])
        if op in ops.LINALG:
            return self._linalg(op, *args)
        if op == "grad":  # torch.autograd.grad(y, x, create_graph=True)
            y, x = args
            if y.requires_grad:
                grad = self.engine.autograd.grad
                (g,) = grad(y, x, create_graph=True, allow_unused=True)
                if g is not None:
                    return g
            return self.engine.zeros_like(x)
        if op == "eye":
            shape = _concrete(node.shape, sizes)
            return self.engine.tensor(np.eye(*shape, attrs[0]))
        if op == "argsort":
            return args[0].argsort(dim=attrs[0], stable=True)
        if op == "windows":
            axis, width = attrs
            n = args[0].shape[axis] - width + 1
            return self.engine.stack(
                [args[0].narrow(axis, k, n) for k in range(width)], dim=-1
            )
        if op == "detach":
            return args[0].detach()
        raise symbolic.UnsupportedError(f"no reference rule for {op}")

    def _linalg(self, op: str, a, b=None):
        """np.linalg's function as the engine's torch.linalg one."""
        linalg = self.engine.linalg
        if op == "solve":
            if 2 <= b.ndim < a.ndim:  # matrices, where torch would see vectors
                b = b.reshape((1,) * (a.ndim - b.ndim) + tuple(b.shape))
            return linalg.solve(a, b)
        if op in ("logabsdet", "det_sign"):
            return linalg.slogdet(a)[op == "logabsdet"]
        return linalg.inv(a) if op == "inv" else linalg.det(a)

    def _index(self, x, spec: tuple, shape: tuple):
        """``x[spec]``; torch has no negative steps: those axes pick by index_select."""
        picks, axis, out_axis = [], 0, 0
        basic = []
        for entry in spec:
            if entry[0] == "slice" and entry[3] is not None and entry[3] < 0:
                rows = range(*slice(*entry[1:]).indices(shape[axis]))
                picks.append((out_axis, list(rows)))
                entry = ("slice", None, None, None)
            basic.append(entry)
            axis += entry[0] != "new"
            out_axis += entry[0] != "int"
        x = x[_index_key(tuple(basic))]
        for dim, rows in picks:
            x = x.index_select(dim, self.engine.tensor(rows, dtype=self.engine.int64))
        return x

    def formula(self, expr: sp.Expr, args: list, sizes: dict):
        """A map's SymPy formula computed with the engine's ops on its argument tensors."""
        env = {symbolic.arg(i): a for i, a in enumerate(args)}
        return self.tensor(self._eval(expr, env, sizes))

    def _eval(self, e, env, sizes):
        if e in env:
            return env[e]
        if e.is_Relational or isinstance(e, sp.logic.boolalg.BooleanFunction):
            return self.engine.tensor(self._condition(e, env, sizes))  # a mask
        if not (e.free_symbols - sizes.keys()):
            return float(e.subs(sizes))
        if isinstance(e, sp.Piecewise):
            (value, cond), rest = e.args[0], e.args[1:]
            other = sp.Piecewise(*rest) if len(rest) > 1 else rest[0][0]
            mask = self.engine.tensor(self._condition(cond, env, sizes))
            return self.engine.where(
                mask,
                self.tensor(self._eval(value, env, sizes)),
                self.tensor(self._eval(other, env, sizes)),
            )
        parts = [self._eval(x, env, sizes) for x in e.args]
        if e.is_Add:
            return _fold(parts, lambda x, y: x + y)
        if e.is_Mul:
            return _fold(parts, lambda x, y: x * y)
        if e.is_Pow:
            return parts[0] ** parts[1]
        if type(e) in self.functions:
            return self.functions[type(e)](*(self.tensor(p) for p in parts))
        if isinstance(e, (sp.Max, sp.Min)):
            return _fold(parts, lambda x, y: self._pick(x, y, isinstance(e, sp.Max)))
        data = [_data(p) for p in parts]
        if isinstance(
            e, sp.Heaviside
        ):  # no gradient, like its derivative almost everywhere
            return self.engine.tensor(
                np.heaviside(data[0], data[1] if len(data) > 1 else 0.5)
            )
        if isinstance(e, (sp.floor, sp.ceiling)):
            return self.engine.tensor(
                (np.floor if isinstance(e, sp.floor) else np.ceil)(data[0])
            )
        raise symbolic.UnsupportedError(f"the reference engine cannot evaluate {e}")

    def _pick(self, x, y, larger: bool):
        """torch.maximum/minimum: the winner gets the gradient; ties share it equally."""
        wins = (np.greater if larger else np.less)(_data(x), _data(y))
        tie = np.equal(_data(x), _data(y))
        where, tensor = self.engine.where, self.engine.tensor
        return where(tensor(tie), (x + y) / 2, where(tensor(wins), x, y))

    def _condition(self, c, env, sizes) -> np.ndarray:
        if c in env:  # a mask
            return _data(env[c])
        if isinstance(c, sp.core.relational.Relational):
            lhs, rhs = (_data(self._eval(x, env, sizes)) for x in c.args)
            return _COMPARE[c.rel_op](lhs, rhs)
        parts = [self._condition(x, env, sizes) for x in c.args]
        if isinstance(c, sp.And):  # parts may differ in shape: they broadcast
            return functools.reduce(np.logical_and, parts)
        if isinstance(c, sp.Or):
            return functools.reduce(np.logical_or, parts)
        if isinstance(c, sp.Not):
            return np.logical_not(parts[0])
        return np.asarray(bool(c))

    def tensor(self, x):
        if isinstance(x, float):
            return self.engine.tensor(x, dtype=self.engine.float64)
        return x


def _concrete(shape, sizes: dict) -> tuple[int, ...]:
    return tuple(int(sp.sympify(d).subs(sizes)) for d in shape)


def _fold(parts, fn):
    out = parts[0]
    for p in parts[1:]:
        out = fn(out, p)
    return out


def _data(x):
    return x.detach().numpy() if hasattr(x, "detach") else x
