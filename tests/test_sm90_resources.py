"""Launch configs fit an H100's per-program shared memory: the norm backward's (whose choice depends on
dtype and width), the attention forwards' (at D = 128 each takes 224 of the 227 KB) and the Gluon GEMMs'; the warp-specialized
attention forward also builds without spilling.

scripts/sm90_build.py compiles the kernel and constants the launcher picks (`ops.norm_bwd_configs.bwd_launch`,
`ops.attention.fwd_config`) for sm_90 with the ptxas the triton wheel ships, so no GPU is needed. A config
over the limit compiles but fails at launch on the GPU (OutOfResources), which the interpreter tests
cannot see. It runs in a child process: under TRITON_INTERPRET=1 the kernels are interpreter functions,
which do not compile."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import triton

ROOT = Path(__file__).resolve().parents[1]
SM90_MAX_SHARED = 232448  # bytes a program may opt into on sm_90 (227 KB)
pytestmark = pytest.mark.skipif(
    not (Path(triton.__path__[0]) / "backends" / "nvidia" / "bin" / "ptxas").exists(),
    reason="the triton wheel's ptxas is needed to build for sm_90")


@pytest.mark.parametrize("kind, dtype, shape", [
    ("add-ln", "bf16", "4096x12288"),   # looped, 16 rows, h, dy and dh_out staged
    ("add-ln", "fp32", "4096x12288"),   # looped, 8 rows
    ("add-ln", "fp32", "1024x65536"),   # looped past 32k: 4 rows
    ("bias-ln", "fp32", "4096x12288"),  # looped, input bias re-added
    ("bias-ln", "bf16", "8192x8192"),   # one-pass, pipelined through shared memory
    ("bias-ln", "bf16", "4096x4096"),   # one-pass, one program per SM keeping its five vectors
])
def test_norm_backward_fits_shared_memory(kind, dtype, shape):
    assert _shared_bytes("norm-bwd", "--kind", kind, "--dtype", dtype, "--shape", shape) <= SM90_MAX_SHARED


@pytest.mark.parametrize("kind, shape", [("ln", "8192x512"), ("bias-ln", "8192x512"), ("add-rms", "16384x1024"),
                                         ("rms", "4096x4096")])
def test_norm_backward_whole_tile_column_sums_build(kind, shape):
    # ACC_ROWS (kernels/norm_bwd.py; by default up to N = 512, forced on here at any width) compiles for
    # sm_90 without spilling: its first GPU run failed to compile where the interpreter had run it (a helper
    # returning two types across a constexpr branch), so the build is checked here, on the CPU.
    report = _build("norm-bwd", "--kind", kind, "--dtype", "bf16", "--shape", shape, "--acc-rows")
    assert "ACC_ROWS True" in report, report
    assert re.search(r"spill stack (\d+) B", report).group(1) == "0", report
    assert int(re.search(r"shared memory (\d+) B", report).group(1)) <= SM90_MAX_SHARED


@pytest.mark.parametrize("head_dim", [128, 256])
def test_attention_forward_fits_shared_memory(head_dim):
    assert _shared_bytes("attn-fwd", "--head-dim", str(head_dim)) <= SM90_MAX_SHARED


@pytest.mark.parametrize("head_dim, causal", [(128, False), (128, True), (64, True)])
def test_warp_specialized_attention_forward_builds_without_spills(head_dim, causal):
    # The Gluon kernel's ring (3 stages at D = 128: 224 KB) and its consumers' registers (setmaxnreg 240).
    # With causal one register (8 B of stack) goes to local memory around the dynamic schedule's loop, a few
    # times a tile: measured faster than the spill-free per-tile grid (ops.attention_ws).
    report = _build("attn-fwd-ws", "--head-dim", str(head_dim), *(["--causal"] if causal else []))
    assert int(re.search(r"shared memory (\d+) B", report).group(1)) <= SM90_MAX_SHARED
    assert int(re.search(r"spill stack (\d+) B", report).group(1)) <= (8 if causal else 0), report


@pytest.mark.parametrize("head_dim, causal", [(128, True), (64, False)])
def test_gluon_attention_dkdv_builds(head_dim, causal):
    # The Gluon dK/dV kernel keeps building and fitting shared memory; at D = 64 it does not spill (D = 128:
    # 64-112 B with the dynamic schedule's tile loop, docs/NOTES.md "Tenth session").
    report = _build("attn-dkdv-ws", "--head-dim", str(head_dim), *(["--causal"] if causal else []))
    assert int(re.search(r"shared memory (\d+) B", report).group(1)) <= SM90_MAX_SHARED
    if head_dim == 64:
        assert re.search(r"spill stack (\d+) B", report).group(1) == "0", report


@pytest.mark.parametrize("head_dim, causal", [(128, True), (64, False)])
def test_experimental_attention_dq_builds_without_spills(head_dim, causal):
    report = _build("attn-dq-ws", "--head-dim", str(head_dim), *(["--causal"] if causal else []))
    assert int(re.search(r"shared memory (\d+) B", report).group(1)) <= SM90_MAX_SHARED
    assert re.search(r"spill stack (\d+) B", report).group(1) == "0", report


@pytest.mark.parametrize("kernel, flags", [("gemm-ws", ["--dropout"]), ("gemm-coop", []),
                                           ("gemm-coop", ["--act", "gelu", "--dropout"]),
                                           ("gemm-coop", ["--b-rowmajor"])])
def test_gluon_gemm_builds_without_spills(kernel, flags):
    # The Gluon GEMMs' rings and staging tiles fit shared memory and their partitions their registers (the
    # cooperative kernel's 64x256 accumulators need 154 of its 168; a bias added at the end spilled 312 B).
    report = _build(kernel, *flags)
    assert int(re.search(r"shared memory (\d+) B", report).group(1)) <= SM90_MAX_SHARED
    assert re.search(r"spill stack (\d+) B", report).group(1) == "0", report


def _build(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, str(ROOT / "scripts" / "sm90_build.py"), *args]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=600)  # read below
    assert "shared memory" in out.stdout, out.stdout + out.stderr
    return out.stdout


def _shared_bytes(*args: str) -> int:
    return int(re.search(r"shared memory (\d+) B", _build(*args)).group(1))
