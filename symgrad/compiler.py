"""The pipeline from a declared model to optimized forward and gradient graphs."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from . import ops, optimize
from .ir import Node
from .model import Model
from .reverse import expand_grads, gradients
from .symbolic import factored


@dataclass
class Program:
    """A model's loss, named outputs and parameter gradients, ready to print."""

    model: Model
    loss: Node
    outputs: dict[str, Node]
    grads: dict[str, Node]
    seed: Node  # grad_loss: backward() computes the gradient of grad_loss * loss
    timings: dict[str, float] = field(default_factory=dict)
    hvp: Program | None = (
        None  # Hessian-vector products, for models declared hessian=True
    )
    vectors: dict[str, Node] = field(
        default_factory=dict
    )  # the v of hvp(params, inputs, v)

    def roots(self) -> list[Node]:
        return [self.loss, *self.outputs.values(), *self.grads.values()]

    def set_roots(self, roots: list[Node]) -> None:
        """New roots in the order of ``roots()``: loss, outputs, gradients."""
        n = 1 + len(self.outputs)
        self.loss = roots[0]
        self.outputs = dict(zip(self.outputs, roots[1:n], strict=True))
        self.grads = dict(zip(self.grads, roots[n:], strict=True))

    @contextmanager
    def timed(self, phase: str):
        start = time.perf_counter()
        yield
        self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - start


@factored
def compile_model(model: Model) -> Program:
    """Differentiate the model's loss with respect to every parameter and optimize."""
    program = Program(  # outputs and grads are set below, in this order
        model,
        model.loss_node,
        dict(model.outputs),
        dict(model.params),
        Node("seed", (), (), name="grad_loss"),
    )
    with program.timed("fuse"):
        roots = [model.loss_node, *model.outputs.values()]
        roots = optimize.rewrite(
            roots, lambda old, new: new.named(model.names.get(old))
        )
        loss, *outputs = optimize.fuse(expand_grads(roots))
    with program.timed("differentiate"):
        params = list(model.params.values())
        grads, origin = gradients(loss, params, program.seed)
    with program.timed("optimize"):
        hints = {
            g: f"grad_{f.name}" for g, f in origin.items() if f.name and not g.name
        }
        roots = [loss, *outputs, *grads]
        roots = optimize.rewrite(roots, lambda old, new: _hinted(new, hints.get(old)))
        roots = optimize.optimize(roots)
    program.set_roots(roots)
    if model.hessian:
        with program.timed("hessian"):
            program.hvp = _hessian_vector_product(model, loss, grads, program.seed)
    return program


def _hessian_vector_product(
    model: Model, loss: Node, grads: list[Node], seed: Node
) -> Program:
    """Reverse over reverse: the gradient of sum_k <grad_k, v_k>, with v_k new inputs.

    Works on the gradient graphs before optimization, where ``detach`` still marks what
    is constant (the shift of logsumexp), so no cancelling terms are differentiated.
    """
    one = ops.const(1)
    grads = optimize.rewrite(grads, lambda old, new: one if old is seed else new)
    vectors = [
        ops.leaf("input", f"_v_{name}", p.shape) for name, p in model.params.items()
    ]
    total = ops.apply(lambda *xs: sum(xs), *map(ops.dot, grads, vectors))
    products, _ = gradients(total, list(model.params.values()), one)
    loss, *products = optimize.optimize([loss, *products])
    program = Program(
        model, loss, {}, dict(zip(model.params, products, strict=True)), one
    )
    program.vectors = dict(zip(model.params, vectors, strict=True))
    return program


@factored
def unit_seed(program: Program) -> Program:
    """The same program with ``grad_loss = 1`` folded in: what value_and_grad computes."""
    one = ops.const(1)
    unit = replace(program, timings=program.timings)
    with program.timed("optimize"):
        roots = optimize.rewrite(
            program.roots(), lambda old, new: one if old is program.seed else new
        )
        unit.set_roots(optimize.optimize(roots))
    return unit


@factored
def vectorized(program: Program) -> Program:
    """The program as the NumPy code computes it (``optimize.pair_differences``); the
    scalar-unrolled code works on the program itself."""
    with program.timed("optimize"):
        roots = optimize.pair_differences(program.roots())
    if all(a is b for a, b in zip(roots, program.roots(), strict=True)):
        return program
    numpy = replace(program, timings=program.timings)
    numpy.set_roots(roots)
    return numpy


def _hinted(node: Node, hint: str | None) -> Node:
    return (
        replace(node, hint=hint) if hint and node.op not in ("param", "input") else node
    )
