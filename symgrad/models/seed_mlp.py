"""The autograd chapter's network: 3-2-1 with a sigmoid after each layer, MSE loss."""

import symgrad as sg


def build() -> sg.Model:
    m = sg.Model("seed_mlp", doc="3-2-1 sigmoid MLP with MSE loss.")
    x = m.input("x", ("batch", 3))
    target = m.input("target", ("batch", 1))
    W1, b1 = m.param("W1", (2, 3)), m.param("b1", (2,))
    W2, b2 = m.param("W2", (1, 2)), m.param("b2", (1,))
    h = m.let("h", sg.sigmoid(x @ W1.T + b1))  # nn.Linear convention: W is (out, in)
    y = m.output("y", sg.sigmoid(h @ W2.T + b2))
    m.loss(sg.mean((y - target) ** 2))
    m.unroll(batch=1)  # one sample at a time: straight-line Python beats NumPy
    return m
