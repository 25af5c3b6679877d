"""Benchmarks of the worked examples (``python -m benchmarks.examples.bench_audio``).

A fork deletes this folder with ``examples/``.
"""
