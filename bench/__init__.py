"""Benchmarks and the chaos run, run from the repository root as modules: `python -m bench`, `python -m bench.chaos`."""
