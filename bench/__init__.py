"""Measurement scripts (not installed, not imported by the packages): `python -m bench.NAME` from the
repository root. Each prints what it measured and ends with one JSON line; docs/benchmarks.md quotes
them with the command that made each figure."""
