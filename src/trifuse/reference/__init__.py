"""Eager PyTorch oracles, one module per op; tests and benchmarks compare against these in fp32/fp64."""
