"""Benchmarks. Each module runs on its own: `python -m bench.vote_overhead --help`."""
