"""Helpers shared by the tests."""

from symgrad.cli import generate
from symgrad.verify import load_source


def compile_module(model):
    """Generate ``model``'s module in memory and import it."""
    source, _ = generate(model)
    return load_source(source, model.name)
