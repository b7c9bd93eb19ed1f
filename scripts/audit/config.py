"""Configuration from the environment and the command line (see scripts/gpu_audit.py's docstring), the
device, the dtypes and the error floors. The package imports it first (audit/__init__.py): the smoke mode
selects Triton's interpreter through the environment before torch and Triton load."""
import os
import sys
import time

SMOKE = os.environ.get("AUDIT_CPU_SMOKE") == "1"
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

T0 = time.time()
BUDGET = float(os.environ.get("AUDIT_BUDGET_S", "1e9" if SMOKE else "235"))
CASE_TIMEOUT = float(os.environ.get("AUDIT_CASE_TIMEOUT_S", "1e9" if SMOKE else "150"))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--") and not a.startswith("~")]
EXCLUDE = [a[1:] for a in sys.argv[1:] if a.startswith("~")]
LIST_ONLY = "--list" in sys.argv

import numpy as np  # noqa: F401  (allowed; not needed beyond torch)
import torch

DEV = torch.device("cpu" if SMOKE else "cuda")
# The smoke mode runs fp16 where the GPU run uses bf16: Triton's interpreter gives garbage for bf16 dots.
BF16 = torch.float16 if SMOKE else torch.bfloat16
FP16, FP32, FP64 = torch.float16, torch.float32, torch.float64
FLOOR = {FP32: 1e-5, FP16: 2e-3, BF16: 1e-2}
ATT_FLOOR = {FP32: 1e-5, FP16: 2e-3, BF16: 1.6e-2}
SM_FLOOR = {FP32: 1e-6, FP16: 1e-3, BF16: 8e-3}


def Z(n, small):
    """A size: n on the GPU, `small` in the CPU smoke mode."""
    return small if SMOKE else n
