"""Benchmarks: ``python -m bench.<name>`` prints a table and writes
``bench/results/<name>.json``. They report numbers; they never pass or fail
on timings (machines differ; tests must not)."""
