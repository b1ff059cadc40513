"""A 784-128-10 tanh MLP with softmax cross-entropy on integer labels (MNIST-shaped)."""

import symgrad as sg


def build(hidden: int = 128) -> sg.Model:
    m = sg.Model(
        "mlp_classifier", doc=f"784-{hidden}-10 tanh MLP, softmax cross-entropy."
    )
    x = m.input("x", ("batch", 784))
    labels = m.input("labels", ("batch",), dtype="int64")
    W1, b1 = m.param("W1", (hidden, 784)), m.param("b1", (hidden,))
    W2, b2 = m.param("W2", (10, hidden)), m.param("b2", (10,))
    h = m.let("h", sg.tanh(x @ W1.T + b1))
    logits = m.output("logits", h @ W2.T + b2)
    log_probs = sg.log_softmax(logits, axis=-1)
    picked = sg.take_along_axis(log_probs, labels[:, None], axis=1)
    m.loss(-sg.mean(picked))
    return m
