"""Benchmarks of the targets in DESIGN.md: `make bench` and `make bench-quick`."""
