"""Logistic regression with binary cross-entropy on the logits (stable for any logit)."""

import symgrad as sg


def build() -> sg.Model:
    m = sg.Model(
        "logistic_regression", doc="Logistic regression, 20 features, BCE with logits."
    )
    X = m.input("X", ("batch", 20))
    y = m.input("y", ("batch",))  # labels in {0, 1}
    w, b = m.param("w", (20,)), m.param("b")
    z = m.output("logits", X @ w + b)
    # BCE with logits: -y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)) = softplus(z) - y z
    m.loss(sg.mean(sg.softplus(z) - y * z))
    return m
