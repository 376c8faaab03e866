"""Benchmarks and studies: run from the repository root as `python -m bench.NAME`. Not installed;
they may import preprocess and train, and nothing imports them."""
