"""Benchmarks of ``threading_utils.Batcher`` (``python -m benchmarks.batching.bench_batching``)."""
