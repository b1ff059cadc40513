"""symgrad: a symbolic differentiation compiler that writes standalone NumPy modules."""

__version__ = "0.1.0"
