"""The built-in models: each module defines ``build() -> sg.Model``."""

from __future__ import annotations

import importlib

BUILTIN = (
    "seed_mlp",
    "logistic_regression",
    "mlp_classifier",
    "rosenbrock",
    "lennard_jones",
    "decay_fit",
)


def load(name: str):
    """The built-in model called ``name``."""
    if name not in BUILTIN:
        raise KeyError(
            f"no built-in model {name!r}; built-ins are {', '.join(BUILTIN)}"
        )
    return importlib.import_module(f"{__name__}.{name}").build()
