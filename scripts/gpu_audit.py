#!/usr/bin/env python3
"""GPU audit of trifuse (H100 / sm_90): wrong results, crashes, NaNs and unclear errors on the kernel
routes the CPU interpreter never runs (16-bit math, the Hopper TMA GEMM, the Gluon warp-specialized GEMM and
attention kernels, wide norms/softmax, torch.compile).

    python3 scripts/gpu_audit.py            # every case, ~4 min budget (from the repository root)
    python3 scripts/gpu_audit.py ws_ attn_ws                  # only cases whose name contains a substring
    python3 scripts/gpu_audit.py ~torch_compile ~attn_bf16_   # all but cases containing a substring
    python3 scripts/gpu_audit.py --list                       # list the cases, run nothing

Env: OUT=<dir> also writes <dir>/gpu_audit.txt (line by line, so a crash or a kill keeps what ran);
AUDIT_BUDGET_S (default 235): cases starting after this many seconds are SKIPped; AUDIT_CASE_TIMEOUT_S
(default 150): a case running longer than this is reported as a HANG and the process exits (a deadlocked GPU
kernel cannot be interrupted otherwise); AUDIT_CPU_SMOKE=1: run tiny shapes on the CPU in Triton's interpreter
(only to check this script's own logic). After an illegal memory access the CUDA context is lost: the rest is
SKIPped; rerun the remaining cases by name (and with CUDA_LAUNCH_BLOCKING=1 to pin the kernel).

Each case compares against an fp64 reference; the budget is max(2 x torch's own error in the same low
precision, floor x max(1, max|ref|)) with the test suite's floors. Lines: STATUS name [seconds] notes. Notes
give err/budget per checked tensor and the kernels that ran (routes); "WARN route" means the case did not take
the route it was written for (it still checks numerics).
"""
import os
import sys

sys.path.insert(0, "src")
# the audit package (scripts/audit) lies next to this file: the script's own directory, after src as before
sys.path.insert(1, os.path.dirname(os.path.abspath(__file__)))

# audit before torch: its config selects Triton's interpreter (the smoke mode) before torch and Triton load
from audit.cases_attention import c_attn
from audit.cases_gemm import c_gemm_bwd, c_gemm_dropout, c_gemm_fwd, c_gemm_seed_view, c_gemm_zero
from audit.cases_misc import c_compile, c_device_mismatch
from audit.cases_norm import c_norm
from audit.cases_softmax import c_softmax
from audit.config import BF16, BUDGET, CASE_TIMEOUT, FP16, FP32, LIST_ONLY, SMOKE, Z
from audit.harness import add, emit, run_all
from audit.routes import _install_route_hooks

# isort: split
import torch

# ----------------------------------------------------------------------------------------------------------
# the cases, in priority order (the budget skips from the end)
# ----------------------------------------------------------------------------------------------------------
K4 = Z(4096, 64)
WS = "gemm:ws"
TMA = "gemm:gemm_tma_kernel"
PORT = "gemm:gemm_fwd_kernel"

add("device_mismatch_errors", c_device_mismatch)

# --- warp-specialized Gluon GEMM (bias + silu/gelu/gelu_tanh, M*N*K >= 2^36, N, K <= 4096) ---
# An out dtype other than the operands' takes the Triton TMA kernel (the Gluon kernels stage 16-bit tiles).
add("gemm_ws_bf16_silu_bias_out_fp32", c_gemm_fwd, K4, K4, K4, BF16, "silu", out_dtype=FP32,
    expect=TMA)
add("gemm_ws_bf16_gelu_bias_out_fp16", c_gemm_fwd, K4, K4, K4, BF16, "gelu", out_dtype=FP16,
    expect=TMA)
add("linear_ws_bf16_silu_bias_x3d_determinism", c_gemm_fwd, K4, K4, K4, BF16, "silu", api="linear",
    x3d=(4, Z(1024, 16)), expect=WS, determinism=True)
add("gemm_ws_bf16_gelu_bias_5000x4096x4096", c_gemm_fwd, Z(5000, 70), K4, K4, BF16, "gelu", expect=WS)
add("linear_ws_bf16_gelu_tanh_nobias_4200x4000x4096", c_gemm_fwd, Z(4200, 70), Z(4000, 56), K4, BF16,
    "gelu_tanh", api="linear", bias=False, expect=WS)
add("gemm_ws_fp16_silu_nobias", c_gemm_fwd, K4, K4, K4, FP16, "silu", bias=False, expect=WS)
add("linear_ws_fp16_gelu_bias_4400x4000x4000", c_gemm_fwd, Z(4400, 70), Z(4000, 56), Z(4000, 40), FP16, "gelu",
    api="linear", expect=WS)
add("gemm_ws_fp16_gelu_tanh_bias_b_transposed", c_gemm_fwd, K4, K4, K4, FP16, "gelu_tanh", b_layout="t",
    expect=WS)
add("linear_ws_bf16_silu_padded_x_w_and_bias_off1", c_gemm_fwd, K4, K4, K4, BF16, "silu", api="linear",
    a_layout="pad8", b_layout="pad8", bias_off=1, expect=WS)
add("linear_ws_dropout_bf16_silu_p0.1", c_gemm_dropout, K4, K4, K4, BF16, "silu", 0.1, 1234, expect=WS,
    extra=True)
add("linear_ws_dropout_seed_tensor_view", c_gemm_seed_view)

# --- Gluon attention forward + Gluon dK/dV backward ---
S2 = Z(2048, 40)
H16 = Z(16, 4)
add("attn_ws_bf16_d128_B2H16S2048_fwd_bwd_determinism", c_attn, 2, H16, H16, S2, S2, 128, BF16, False,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv", determinism=True)
add("attn_ws_fp16_d128_causal_bshd_do_bshd", c_attn, 2, H16, H16, S2, S2, 128, FP16, True, layout="bshd",
    do_mode="bshd", expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_d64_causal_B1H16S4096", c_attn, 1, H16, H16, Z(4096, 48), Z(4096, 48), 64, BF16, True,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_fp16_d64_noncausal_gqa4_B2H16S2048", c_attn, 2, H16, Z(4, 2), S2, S2, 64, FP16, False,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_d128_causal_gqa8_split", c_attn, 2, H16, Z(2, 1), S2, S2, 128, BF16, True,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_fused_qkv_views", c_attn, 2, H16, H16, S2, S2, 128, BF16, False, layout="qkv",
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_sq2048_skv1100", c_attn, 2, H16, H16, S2, Z(1100, 24), 128, BF16, False,
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_sq1101_skv2048_bshd", c_attn, 2, H16, H16, Z(1101, 23), S2, 128, BF16, False, layout="bshd",
    expect_fwd="attn:ws_fwd", expect_bwd="attn:ws_dkdv")
add("attn_ws_bf16_kv_expanded_over_batch_stride0", c_attn, 2, H16, H16, S2, S2, 128, BF16, False,
    layout="expand_kv", expect_fwd="attn:attention_fwd", expect_bwd="attn:attention_bwd_dkdv")  # zero strides: no TMA
add("attn_ws_bf16_do_strides_0001", c_attn, 2, H16, H16, S2, S2, 128, BF16, False, do_mode="expand_d",
    expect_bwd="attn:attention_bwd_dkdv")  # a zero-strided dO is not TMA-addressable
add("attn_misaligned_q1_k3_vstride2_fallback", c_attn, 2, H16, H16, S2, S2, 128, BF16, True, layout="misalign",
    not_expect="attn:ws_fwd")
add("attn_ws_fp16_peaky_logits_fwd", c_attn, 2, H16, H16, S2, S2, 128, FP16, False, qk_scale=4.0, bwd=False,
    expect_fwd="attn:ws_fwd")

# --- dropout on the Triton TMA and portable kernels ---
add("gemm_tma_dropout_fp16_gelu_p0.2_seed-1", c_gemm_dropout, K4, K4, Z(2048, 32), FP16, "gelu", 0.2, -1,
    api="gemm", expect=TMA)
add("linear_portable_dropout_bf16_relu_p0.5", c_gemm_dropout, 300, 500, 200, BF16, "relu", 0.5, 2 ** 40 + 7,
    extra=True)

# --- Triton TMA GEMM (large, layouts, activations) ---
# --- the cooperative Gluon kernel with a producer warp (ops.gemm_gluon.coop_applies; traced as gemm:ws) ---
add("gemm_coop_bf16_none_nobias_4096^3", c_gemm_fwd, K4, K4, K4, BF16, "none", bias=False, expect=WS)
add("linear_coop_bf16_silu_bias_ragged_5003x4104x4360", c_gemm_fwd, Z(5003, 67), Z(4104, 72), Z(4360, 40), BF16,
    "silu", api="linear", expect=WS)
add("gemm_coop_fp16_gelu_tanh_8192x4096x8192", c_gemm_fwd, Z(8192, 64), K4, Z(8192, 64), FP16, "gelu_tanh",
    expect=WS)
add("linear_tma_bf16_relu_expanded_bias", c_gemm_fwd, K4, K4, K4, BF16, "relu", api="linear", bias_layout="expand",
    expect=TMA)
add("gemm_tma_fp16_relu2_bias_residual", c_gemm_fwd, K4, K4, Z(2048, 32), FP16, "relu2", res="contig",
    expect=TMA)
add("gemm_tma_fp16_leaky_ragged_3001x5000x1000", c_gemm_fwd, Z(3001, 67), Z(5000, 72), Z(1000, 40), FP16,
    "leaky_relu", bias=False, expect=TMA)
add("gemm_tma_bf16_silu_a_transposed", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "silu", a_layout="t", expect=TMA)
add("gemm_tma_bf16_gelu_tanh_out_fp32", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "gelu_tanh", out_dtype=FP32,
    expect=TMA)
add("gemm_tma_bf16_gelu_K8", c_gemm_fwd, K4, K4, 8, BF16, "gelu", expect=TMA)
add("gemm_tma_bf16_silu_N8_M65536", c_gemm_fwd, Z(65536, 96), 8, Z(256, 16), BF16, "silu", expect=TMA)
add("gemm_tma_bf16_padded_a_b_rows", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "none", a_layout="pad8",
    b_layout="pad8", expect=TMA)
add("gemm_tma_bf16_relu_residual_off1_bias_off1", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "relu", res="contig",
    res_off=1, bias_off=1, expect=TMA)
add("gemm_tma_fp16_gelu_residual_expanded_rows", c_gemm_fwd, K4, K4, Z(2048, 32), FP16, "gelu", res="expand",
    expect=TMA)

# --- misaligned / odd-stride operands (must fall back, stay correct) ---
add("linear_bf16_silu_x_off1_4096^3_fallback", c_gemm_fwd, K4, K4, K4, BF16, "silu", api="linear", a_off=1,
    not_expect=(WS, TMA))
add("gemm_bf16_none_b_off3_fallback", c_gemm_fwd, K4, K4, Z(2048, 32), BF16, "none", b_off=3,
    not_expect=(WS, TMA))
add("linear_bf16_silu_x_rowstride4100_fallback", c_gemm_fwd, Z(2048, 32), K4, K4, BF16, "silu", api="linear",
    a_layout="pad4", not_expect=(WS, TMA))
add("linear_bf16_gelu_weight_off1_and_transposed", c_gemm_fwd, Z(2048, 32), Z(2048, 48), Z(2048, 40), BF16,
    "gelu", api="linear", b_layout="t", b_off=1, not_expect=(WS, TMA))

# --- backward ---
add("linear_bwd_bf16_silu_bias_x3d", c_gemm_bwd, Z(2048, 32), K4, Z(1024, 32), BF16, "silu", x3d=(2, Z(1024, 16)),
    expect=TMA)
add("linear_bwd_bf16_gelu_recompute_4096^3", c_gemm_bwd, K4, K4, K4, BF16, "gelu", recompute=True, expect=WS)
add("linear_bwd_bf16_gelu_tanh_dropout_p0.1_both_recompute", c_gemm_bwd, Z(1024, 32), Z(2048, 48), Z(1024, 32),
    BF16, "gelu_tanh", p=0.1, seed=77, both_recompute=True)
add("gemm_bwd_fp16_gelu_residual_out_fp32", c_gemm_bwd, 1000, 1536, 768, FP16, "gelu", api="gemm", res=True,
    out_dtype=FP32)
add("linear_bwd_fp16_relu2_nobias_residual", c_gemm_bwd, Z(4096, 64), Z(2048, 48), Z(2048, 32), FP16, "relu2",
    bias=False, res=True)

# --- torch.compile (inductor; the traced path takes the Triton kernels, never the Gluon ones) ---
add("torch_compile_fullgraph_linear_rms_attn_softmax_fwd_bwd", c_compile, min_left=70)

# --- norms ---
for width, M in ((1, 4099), (3, 4099), (4097, 1031), (65537, 67)):
    add(f"layer_norm_bf16_w{width}_bias_inbias_fwd_bwd", c_norm, "layer_norm", Z(M, 5), Z(width, min(width, 300)),
        BF16, ib=True)
    add(f"rms_norm_fp16_w{width}_fwd_bwd", c_norm, "rms_norm", Z(M, 5), Z(width, min(width, 300)), FP16)
add("add_rms_norm_bf16_4096^2_inbias_res_determinism", c_norm, "add_rms_norm", K4, K4, BF16, ib=True, res=True,
    determinism=True)
add("add_layer_norm_fp16_2048x5120_inbias_res", c_norm, "add_layer_norm", Z(2048, 16), Z(5120, 80), FP16, ib=True,
    res=True)
add("add_rms_norm_bf16_w65537_res", c_norm, "add_rms_norm", Z(67, 5), Z(65537, 300), BF16, res=True)
add("rms_norm_bf16_weight_fp32_eps_none", c_norm, "rms_norm", Z(2048, 16), K4, BF16, wdtype=FP32, eps=None)
add("layer_norm_bf16_x_off1_weight_off3", c_norm, "layer_norm", Z(1024, 8), K4, BF16, x_off=1, w_off=3)
add("layer_norm_bf16_x_transposed", c_norm, "layer_norm", Z(1024, 8), K4, BF16, layout="t", ib=True)
add("rms_norm_bf16_x_rowstride4100", c_norm, "rms_norm", Z(1024, 8), K4, BF16, layout="pad4")
add("add_layer_norm_bf16_residual_expanded_x_t", c_norm, "add_layer_norm", Z(512, 8), Z(2048, 40), BF16,
    layout="t", res=True, res_layout="expand")
add("layer_norm_bf16_8192^2_determinism", c_norm, "layer_norm", Z(8192, 16), Z(8192, 64), BF16, determinism=True)

# --- softmax ---
for width, M in ((1, 4099), (3, 4099), (4097, 1031), (32768, 64), (65537, 67)):
    add(f"softmax_bf16_w{width}_fwd_bwd", c_softmax, Z(M, 5), Z(width, min(width, 300)), BF16)
add("log_softmax_fp16_w65537_fwd_bwd_determinism", c_softmax, Z(67, 5), Z(65537, 300), FP16, log=True,
    determinism=True)
add("log_softmax_bf16_w4097_dy_transposed", c_softmax, Z(1031, 5), Z(4097, 100), BF16, log=True, do_mode="t")
add("softmax_fp32_w65537_dy_expanded", c_softmax, Z(33, 5), Z(65537, 300), FP32, do_mode="expand")
add("softmax_bf16_w65537_specials_inf_nan", c_softmax, Z(16, 6), Z(65537, 300), BF16, specials=True)
add("softmax_fp16_w4097_specials_inf_nan", c_softmax, Z(16, 6), Z(4097, 100), FP16, specials=True)
add("log_softmax_bf16_w65537_specials", c_softmax, Z(16, 6), Z(65537, 300), BF16, log=True, specials=True)
add("softmax_bf16_dim0_4097x96", c_softmax, 96, Z(4097, 100), BF16, dim=0)
add("softmax_bf16_x_transposed_w4097", c_softmax, Z(1031, 5), Z(4097, 100), BF16, layout="t")
add("softmax_bf16_x_off1_w65537", c_softmax, Z(67, 5), Z(65537, 300), BF16, x_off=1)


# --- odd sizes ---
add("linear_bf16_gelu_M1", c_gemm_fwd, 1, K4, K4, BF16, "gelu", api="linear")
add("gemm_bf16_gelu_N1_257x4099", c_gemm_fwd, 257, 1, Z(4099, 67), BF16, "gelu")
add("gemm_bf16_gelu_K1_127x257", c_gemm_fwd, 127, 257, 1, BF16, "gelu")
add("gemm_fp16_silu_primes_127x4099x257_residual", c_gemm_fwd, 127, Z(4099, 67), 257, FP16, "silu", res="contig")
add("gemm_bf16_relu_primes_4099x127x257", c_gemm_fwd, Z(4099, 67), 127, 257, BF16, "relu")
add("linear_bf16_zero_sizes_fwd_bwd", c_gemm_zero, BF16)
add("attn_bf16_S1_causal", c_attn, 1, 4, 4, 1, 1, 128, BF16, True)
add("attn_bf16_decode_sq1_skv4099_gqa8", c_attn, 2, Z(16, 8), 2, 1, Z(4099, 67), 128, BF16, False)
add("attn_fp16_causal_gqa4_S257_d64", c_attn, 2, 8, 2, 257, 257, 64, FP16, True)
add("attn_bf16_causal_sq1000_skv300_mqa", c_attn, 1, 4, 1, Z(1000, 50), Z(300, 20), 128, BF16, True)
add("attn_bf16_causal_sq300_skv1000_d96", c_attn, 1, 4, 4, Z(300, 20), Z(1000, 50), 96, BF16, True)
add("attn_fp16_causal_d256_S513", c_attn, 1, 2, 2, Z(513, 33), Z(513, 33), 256, FP16, True)
add("attn_bf16_d32_gqa_bshd_S777", c_attn, 2, 8, 2, Z(777, 33), Z(777, 33), 32, BF16, False, layout="bshd")
add("attn_bf16_skv0_zeros", c_attn, 1, 4, 2, 5, 0, 64, BF16, False)
add("attn_bf16_sq0_empty", c_attn, 1, 4, 2, 0, 7, 64, BF16, True)


if __name__ == "__main__":
    if not SMOKE and not LIST_ONLY:
        if not torch.cuda.is_available():
            print("no CUDA device: run this on the GPU machine (or AUDIT_CPU_SMOKE=1 for a CPU logic check)")
            sys.exit(2)
        emit(f"# budget {BUDGET:.0f}s (AUDIT_BUDGET_S), per-case watchdog {CASE_TIMEOUT:.0f}s (AUDIT_CASE_TIMEOUT_S)")
        cap = torch.cuda.get_device_capability()
        emit(f"# torch {torch.__version__} triton {__import__('triton').__version__} "
             f"gpu {torch.cuda.get_device_name()} sm_{cap[0]}{cap[1]} python {sys.version.split()[0]}")
        if cap != (9, 0):
            emit("# WARNING: not sm_90: the TMA / Gluon routes are not taken; route warnings expected")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    if not LIST_ONLY:
        _install_route_hooks()
    sys.exit(run_all())
