"""torch.library registration (triton_op + wrap_triton) and autograd for every op.

Ops take fixed-rank (2-D) tensors; the functional layer flattens batch dims before calling them, so the
graphs torch.compile sees keep stable ranks.
"""
