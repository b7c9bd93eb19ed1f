"""The GPU audit harness behind scripts/gpu_audit.py (the entry point: usage, the case registry and main).

config: environment, command line, device, dtypes and error floors (imported first: it selects Triton's
interpreter before torch and Triton load); harness: output lines, the case registry and the runner; routes:
route tracing; checks: numeric checks and tensor makers; references: the fp64 / torch compositions the
cases compare against; cases_gemm, cases_attention, cases_norm, cases_softmax, cases_misc: the case functions.
"""
# config first, whichever module is imported: the smoke mode selects Triton's interpreter (TRITON_INTERPRET)
# before torch, Triton and trifuse's kernels load.
from . import config  # noqa: F401
