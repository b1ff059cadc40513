"""Benchmarks of symgrad-generated modules against hand-written baselines.

Kept free of NumPy imports so that ``python -m benchmarks.run`` can pin BLAS threads
before NumPy is loaded.
"""
