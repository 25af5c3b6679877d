"""Benchmarks for the thread-to-event-loop stream bridge (``python -m benchmarks.bench_bridge``)."""
