"""Benchmarks of the targets in docs/architecture.md: `make bench` and `make bench-quick`."""
