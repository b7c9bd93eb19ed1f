"""@triton.jit kernels only: they import triton and triton.language, never torch (DESIGN.md)."""
