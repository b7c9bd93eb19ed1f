"""Build trifuse's GPU kernels for sm_90 on a machine without a GPU (ptxas comes with the triton wheel) and
report registers, spill stack, shared memory and, with --sass, the SASS instruction mix. No device time.

  python3 scripts/sm90_build.py gemm [--act silu] [--tile 128,256,64] [--warps 8] [--stages 3] [--split 1]
                                     [--dropout] [--sass]
  python3 scripts/sm90_build.py gemm-ws [--act gelu] [--dropout] [--b-rowmajor] [--sass]
  python3 scripts/sm90_build.py gemm-coop [--act gelu] [--dropout] [--b-rowmajor] [--sass]
  python3 scripts/sm90_build.py attn-fwd [--head-dim 128] [--causal] [--fold] [--sass]
  python3 scripts/sm90_build.py attn-fwd-ws [--head-dim 128] [--causal] [--stages 2] [--schedule S] [--sass]
  python3 scripts/sm90_build.py attn-dkdv-ws [--head-dim 128] [--causal] [--stages 2] [--sass]
  python3 scripts/sm90_build.py attn-dq-ws [--head-dim 128] [--causal] [--stages 3] [--sass]
  python3 scripts/sm90_build.py norm-bwd [--kind ln|bias-ln|rms|add-rms|add-ln] [--shape 8192x8192]
                                         [--dtype bf16|fp32] [--stages S] [--acc-rows] [--sass]
                                         (the launcher's choice)
  python3 scripts/sm90_build.py norm-fwd [--kind ...] [--shape 8192x512] [--dtype fp16] [--no-stats] [--sass]
                                         [--set NAME=VALUE ...] (ops/norm_configs.py constants, e.g.
                                         MAX_FUSED_N_FWD=4096 LOOP_FWD_ACC_LANES=1 for the looped kernel)

Integer arguments get the 16-divisibility and unit strides the GPU's specialization gives them (without
them the build is not the one the GPU runs: unvectorized loads, spills). SASS counts are per kernel, so
the difference between two builds (an epilogue with and without an activation, say) is that part's cost.
"""
from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

TARGET = GPUTarget("cuda", 90, 32)
BIN = Path(triton.__path__[0]) / "backends" / "nvidia" / "bin"


def _cuobjdump(compiled, *flags: str) -> str:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        return subprocess.run([str(BIN / "cuobjdump"), *flags, f.name], capture_output=True, text=True, check=False).stdout


def report(compiled, tag: str, sass: bool) -> None:
    usage = _cuobjdump(compiled, "--dump-resource-usage")
    regs, stack = re.search(r"REG:(\d+)", usage), re.search(r"STACK:(\d+)", usage)
    print(f"{tag}: registers {regs.group(1) if regs else '?'}, spill stack {stack.group(1) if stack else '?'} B, "
          f"shared memory {compiled.metadata.shared} B, warps {compiled.metadata.num_warps}")
    if sass:
        ops = re.findall(r"/\*[0-9a-f]{4,6}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", _cuobjdump(compiled, "-sass"))
        mix = collections.Counter(o if o.startswith("MUFU") else o.split(".")[0] for o in ops)
        print(f"  {sum(mix.values())} SASS instructions: " + ", ".join(f"{k} {v}" for k, v in mix.most_common(24)))


def _source(fn, sig: dict, constexprs: dict, aligned: tuple[str, ...], cls=ASTSource):
    sig = dict(sig, **{n: "constexpr" for n in constexprs})
    names = list(sig)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    return cls(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)


def gemm(args) -> None:
    from trifuse.kernels import gemm_tma as kt

    bm, bn, bk = (int(x) for x in args.tile.split(","))
    sig = {n: "*bf16" for n in ("a_ptr", "b_ptr", "out_ptr", "bias_ptr", "res_ptr", "pre_ptr")}
    sig["seed_ptr"] = "*i64"
    sig.update({n: "i32" for n in ("M", "N", "K", "stride_a", "stride_b", "stride_om", "stride_rm", "stride_rn",
                                   "stride_pm")})
    sig["p"] = "fp32"
    ce = {"ACT": args.act, "HAS_BIAS": not args.no_bias, "HAS_RES": False, "DROPOUT": args.dropout, "STORE_PRE": False, "PRECISION": "tf32",
              "A_T": False, "B_T": True, "BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "NUM_SMS": 132,
              "EPI_SPLIT": args.split, "FLATTEN": False}
    aligned = ("a_ptr", "b_ptr", "out_ptr", "bias_ptr", "stride_a", "stride_b", "stride_om")
    c = triton.compile(_source(kt.gemm_tma_kernel, sig, ce, aligned), target=TARGET,
                       options={"num_warps": args.warps, "num_stages": args.stages})
    report(c, f"gemm_tma {bm}x{bn}x{bk} w{args.warps} s{args.stages} split {args.split} {args.act}"
              f"{' +dropout' if args.dropout else ''}", args.sass)


def gemm_ws(args) -> None:
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    import trifuse.ops.gemm_gluon as og
    from trifuse.kernels import gemm_coop as kc
    from trifuse.kernels import gemm_ws as kw
    from trifuse.ops._gluon import descriptor

    coop = args.kernel == "gemm-coop"
    cfg, b_t = (og.COOP_CONFIG if coop else og.WS_CONFIG), not args.b_rowmajor
    bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
    a = torch.empty(256, 256, dtype=torch.bfloat16)  # descriptors only need the layout and dtype here
    descs = {"a_desc": descriptor(a, (bm, bk)), "b_desc": descriptor(a, (bn, bk) if b_t else (bk, bn)),
                 "c_desc": descriptor(a, (bm, bn))}
    sig = {n: mangle_type(d) for n, d in descs.items()}
    sig.update(bias_ptr="*bf16", seed_ptr="*i64", p="fp32", M="i32", N="i32", K="i32")
    ce = {"ACT": args.act, "HAS_BIAS": not args.no_bias, "DROPOUT": args.dropout, "B_T": b_t, "STAGES": cfg.num_stages, "GROUP_M": cfg.group_m, "NUM_SMS": 132,
              **({"CONSUMER_REGS": og.COOP_REGS[0], "OTHER_REGS": og.COOP_REGS[1]} if coop else
                 {"CONSUMER_REGS": og.WS_REGS[0], "PRODUCER_REGS": og.WS_REGS[1]})}
    kernel = kc.gemm_coop_kernel if coop else kw.gemm_ws_kernel
    c = triton.compile(_source(kernel, sig, ce, ("bias_ptr",), GluonASTSource), target=TARGET,
                       options={"num_warps": 4, "maxnreg": og.COOP_MAXNREG if coop else og.WS_MAXNREG})
    report(c, f"{kernel.__name__} {bm}x{bn}x{bk} s{cfg.num_stages} {args.act} dropout={args.dropout} b_t={b_t}", args.sass)


def attn_fwd(args) -> None:
    from trifuse.kernels import attention_fwd as kf
    from trifuse.ops.attention import block_d, fwd_config

    d = args.head_dim
    cfg = fwd_config(d, args.causal, torch.bfloat16, 4096)
    sig = {n: "*bf16" for n in ("Q", "K", "V", "O")}
    sig["LSE"] = "*fp32"
    strides = [f"stride_{t}{s}" for t in "qkvo" for s in ("b", "h", "m" if t in "qo" else "n", "d")]
    sig.update({n: "i32" for n in strides if not n.endswith("d")})
    sig.update({n: "i32" for n in ("Hq", "Hkv", "Sq", "Skv")}, sm_scale="fp32", chunk="i32")
    ce = {n: 1 for n in strides if n.endswith("d")}  # unit head-dim strides, as the GPU specializes them
    ce.update(CAUSAL=args.causal, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d(d), HEAD_D=d,
              PREC="tf32", NUM_STAGES=cfg.num_stages, FOLD_SCALE=args.fold)
    aligned = ("Q", "K", "V", "O", "LSE", *(n for n in strides if not n.endswith("d")))
    c = triton.compile(_source(kf.attention_fwd, sig, ce, aligned), target=TARGET,
                       options={"num_warps": cfg.num_warps, "num_stages": cfg.num_stages})
    report(c, f"attention_fwd D={d} causal={args.causal} fold={args.fold} {cfg}", args.sass)


def attn_fwd_ws(args) -> None:
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    import trifuse.ops.attention_ws as oa
    from trifuse.kernels import attention_fwd_ws as kw

    d = args.head_dim
    t = torch.empty(2, 4, 256, d, dtype=torch.bfloat16)  # descriptors only need the layout and dtype here
    descs = {"q_desc": oa.ws_desc(t, oa.WS_Q_ROWS), "k_desc": oa.ws_desc(t, oa.WS_BLOCK_N),
             "v_desc": oa.ws_desc(t, oa.WS_BLOCK_N), "o_desc": oa.ws_desc(t, oa.WS_Q_ROWS)}
    sig = {n: mangle_type(dsc) for n, dsc in descs.items()}
    schedule = args.schedule or oa.WS_SCHEDULE
    sig.update(lse_ptr="*fp32", counter="*i32" if schedule == "dynamic" else "*fp32", Hq="i32", Hkv="i32",
               Sq="i32", Skv="i32", sm_scale="fp32", chunk="i32", tiles="i32")
    stages = args.stages or oa.ws_stages(d)
    ce = {"CAUSAL": args.causal, "STAGES": stages, "SCHEDULE": oa._SCHEDULES[schedule], "CONSUMER_REGS": oa.WS_REGS[0],
          "PRODUCER_REGS": oa.WS_REGS[1]}
    c = triton.compile(_source(kw.attention_fwd_ws, sig, ce, ("lse_ptr",),
                                 GluonASTSource), target=TARGET,
                       options={"num_warps": 4, "maxnreg": oa.WS_MAXNREG})
    report(c, f"attention_fwd_ws D={d} causal={args.causal} stages={stages} {schedule}", args.sass)


def attn_dkdv_ws(args) -> None:
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    import trifuse.ops.attention_ws as oa
    from trifuse.kernels import attention_bwd_ws as kw

    d = args.head_dim
    t = torch.empty(2, 4, 256, d, dtype=torch.bfloat16)  # descriptors only need the layout and dtype here
    descs = {"q_desc": oa.ws_desc(t, oa.WS_BWD_BLOCK_M), "do_desc": oa.ws_desc(t, oa.WS_BWD_BLOCK_M),
             "k_desc": oa.ws_desc(t, 64), "v_desc": oa.ws_desc(t, 64)}
    rows = torch.empty(2, 4, 256)
    descs.update(lse_desc=oa.rows_desc(rows, oa.WS_BWD_BLOCK_M), delta_desc=oa.rows_desc(rows, oa.WS_BWD_BLOCK_M))
    sig = {n: mangle_type(dsc) for n, dsc in descs.items()}
    schedule = args.schedule or oa.WS_BWD_SCHEDULE
    sig.update(dk_ptr="*bf16", dv_ptr="*bf16", counter="*i32" if schedule == "dynamic" else "*fp32")
    strides = ("stride_dks", "stride_dkb", "stride_dkh", "stride_dkn", "stride_dvs", "stride_dvb", "stride_dvh",
               "stride_dvn")
    sig.update({n: "i32" for n in strides})
    sig.update(Hq="i32", Hkv="i32", Sq="i32", Skv="i32", row_pitch="i32", sm_scale="fp32", chunk="i32", split="i32",
               tiles="i32")
    stages = args.stages or oa.WS_BWD_STAGES
    ce = {"CAUSAL": args.causal, "STAGES": stages, "SCHEDULE": oa._SCHEDULES[schedule], "CONSUMER_REGS": oa.WS_REGS[0],
          "PRODUCER_REGS": oa.WS_REGS[1]}
    aligned = ("dk_ptr", "dv_ptr", *strides)
    c = triton.compile(_source(kw.attention_bwd_dkdv_ws, sig, ce, aligned, GluonASTSource), target=TARGET,
                       options={"num_warps": 4, "maxnreg": oa.WS_MAXNREG})
    report(c, f"attention_bwd_dkdv_ws D={d} causal={args.causal} stages={stages} {schedule}", args.sass)


def attn_dq_ws(args) -> None:
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    import trifuse.ops.attention_ws as oa
    from trifuse.kernels import attention_bwd_ws as kw

    d = args.head_dim
    t = torch.empty(2, 4, 256, d, dtype=torch.bfloat16)  # descriptors only need the layout and dtype here
    descs = {"q_desc": oa.ws_desc(t, 64), "do_desc": oa.ws_desc(t, 64), "k_desc": oa.ws_desc(t, oa.WS_DQ_BLOCK_N),
             "v_desc": oa.ws_desc(t, oa.WS_DQ_BLOCK_N)}
    sig = {n: mangle_type(dsc) for n, dsc in descs.items()}
    sig.update(lse_ptr="*fp32", delta_ptr="*fp32", dq_ptr="*bf16", stride_dqb="i32", stride_dqh="i32",
               stride_dqm="i32", Hq="i32", Hkv="i32", Sq="i32", Skv="i32", sm_scale="fp32", chunk="i32")
    stages = args.stages or oa.WS_DQ_STAGES
    ce = {"CAUSAL": args.causal, "STAGES": stages, "CONSUMER_REGS": oa.WS_REGS[0], "PRODUCER_REGS": oa.WS_REGS[1]}
    aligned = ("lse_ptr", "delta_ptr", "dq_ptr", "stride_dqb", "stride_dqh", "stride_dqm")
    c = triton.compile(_source(kw.attention_bwd_dq_ws, sig, ce, aligned, GluonASTSource), target=TARGET,
                       options={"num_warps": 4, "maxnreg": oa.WS_MAXNREG})
    report(c, f"attention_bwd_dq_ws D={d} causal={args.causal} stages={stages}", args.sass)


def norm_bwd(args) -> None:
    import trifuse.ops.norm_bwd_configs as ob

    m, n = (int(v) for v in args.shape.split("x"))
    kind = args.kind
    rms, ib, dho = kind in ("rms", "add-rms"), kind == "bias-ln", kind.startswith("add")
    grads = 1 + (not rms) + ib
    elem = {"bf16": 2, "fp32": 4}[args.dtype]
    if not torch.cuda.is_available():  # the launcher sizes persistent grids from the H100's SM count
        ob.device_props = lambda index: ((9, 0), 132)
    if args.stages:
        ob.BWD_STAGES_LN = ob.LOOP_BWD_STAGES = args.stages
    if args.acc_rows:
        ob.BWD_ACC_ROWS_MAX_N = 1 << 30
    launch = ob.bwd_launch(m, n, 1 + ib + grads, elem, rms, torch.device("cuda", 0))
    ptr = f"*{args.dtype}"
    sig = {p.name: ptr for p in launch.kernel.params if p.name.endswith("_ptr")}
    sig.update({k: "*fp32" for k in ("mean_ptr", "rstd_ptr", "pdw_ptr", "pdb_ptr", "pdib_ptr")})
    sig.update({k: "i32" for k in ("M", "N", "stride_dym", "stride_dhm", "stride_sm")})
    ce = {"stride_dyn": 1, "stride_dhn": 1, "stride_sn": 1, "IS_RMS": rms, "HAS_W": True, "HAS_IB": ib,
          "HAS_DHO": dho, "NEED_DW": True, "NEED_DB": not rms, "NEED_DIB": ib, "LAUNCH_DEPENDENTS": True}
    ce.update({k: v for k, v in launch.meta.items() if k != "num_warps"})
    sig = {p.name: sig[p.name] for p in launch.kernel.params if p.name in sig}
    aligned = tuple(k for k in sig if k != "M")  # pointers, N and the row strides
    c = triton.compile(_source(launch.kernel, sig, ce, aligned), target=TARGET,
                       options={"num_warps": launch.meta["num_warps"]})
    meta = ", ".join(f"{k} {v}" for k, v in launch.meta.items())
    report(c, f"{launch.kernel.__name__} {kind} {args.dtype} {m}x{n}: {meta}, programs {launch.programs}", args.sass)


def norm_fwd(args) -> None:
    import trifuse.ops.norm_configs as on

    m, n = (int(v) for v in args.shape.split("x"))
    kind = args.kind
    rms, ib, res = kind in ("rms", "add-rms"), kind == "bias-ln", kind.startswith("add")
    elem = {"bf16": 2, "fp16": 2, "fp32": 4}[args.dtype]
    for item in args.set:
        name, value = item.split("=")
        if not hasattr(on, name):
            raise SystemExit(f"--set: ops/norm_configs.py has no constant {name}")
        setattr(on, name, int(value))
    launch = on.fwd_launch(m, n, rms, res, elem, ib)
    ptr = f"*{args.dtype}"
    sig = {p.name: ptr for p in launch.kernel.params if p.name.endswith("_ptr")}
    sig.update({k: "*fp32" for k in ("mean_ptr", "rstd_ptr")})
    sig.update({k: "i32" for k in ("M", "N", "stride_xm", "stride_rm")})
    sig["eps"] = "fp32"
    ce = {"stride_xn": 1, "stride_rn": 1, "IS_RMS": rms, "HAS_W": True, "HAS_B": not rms, "HAS_IB": ib,
          "HAS_RES": res, "STORE_STATS": not args.no_stats}
    ce.update({k: v for k, v in launch.meta.items() if k != "num_warps"})
    sig = {p.name: sig[p.name] for p in launch.kernel.params if p.name in sig}
    aligned = tuple(k for k in sig if k not in ("M", "eps"))
    c = triton.compile(_source(launch.kernel, sig, ce, aligned), target=TARGET,
                       options={"num_warps": launch.meta["num_warps"]})
    meta = ", ".join(f"{k} {v}" for k, v in launch.meta.items())
    report(c, f"{launch.kernel.__name__} {kind} {args.dtype} {m}x{n}: {meta}", args.sass)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="kernel", required=True)
    g = sub.add_parser("gemm")
    g.add_argument("--act", default="silu")
    g.add_argument("--tile", default="128,256,64")
    g.add_argument("--warps", type=int, default=8)
    g.add_argument("--stages", type=int, default=3)
    g.add_argument("--split", type=int, default=1)
    g.add_argument("--dropout", action="store_true")
    g.add_argument("--no-bias", action="store_true", help="no bias")
    wc = sub.add_parser("gemm-coop")
    wc.add_argument("--act", default="silu")
    wc.add_argument("--b-rowmajor", action="store_true", help="b stored (K, N) instead of (N, K)")
    wc.add_argument("--dropout", action="store_true", help="the dropout epilogue")
    wc.add_argument("--no-bias", action="store_true", help="no bias")
    w = sub.add_parser("gemm-ws")
    w.add_argument("--act", default="silu")
    w.add_argument("--b-rowmajor", action="store_true", help="b stored (K, N) instead of (N, K)")
    w.add_argument("--dropout", action="store_true", help="the dropout epilogue")
    w.add_argument("--no-bias", action="store_true", help="no bias")
    f = sub.add_parser("attn-fwd")
    f.add_argument("--head-dim", type=int, default=128)
    f.add_argument("--causal", action="store_true")
    f.add_argument("--fold", action="store_true", help="FOLD_SCALE: the scale inside exp2's argument")
    fw = sub.add_parser("attn-fwd-ws")
    fw.add_argument("--head-dim", type=int, default=128)
    fw.add_argument("--causal", action="store_true")
    fw.add_argument("--stages", type=int, default=0, help="override the launcher's ring depth")
    fw.add_argument("--schedule", choices=("grid", "round_robin", "dynamic"), help="override the launcher's")
    bw = sub.add_parser("attn-dkdv-ws")
    bw.add_argument("--head-dim", type=int, default=128)
    bw.add_argument("--causal", action="store_true")
    bw.add_argument("--stages", type=int, default=0, help="override the ring depth")
    bw.add_argument("--schedule", choices=("grid", "round_robin", "dynamic"), help="override the launcher's")
    bq = sub.add_parser("attn-dq-ws")
    bq.add_argument("--head-dim", type=int, default=128)
    bq.add_argument("--causal", action="store_true")
    bq.add_argument("--stages", type=int, default=0, help="override the ring depth")
    nb = sub.add_parser("norm-bwd")
    nb.add_argument("--kind", default="ln", choices=("ln", "bias-ln", "rms", "add-rms", "add-ln"))
    nb.add_argument("--shape", default="8192x8192")
    nb.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    nb.add_argument("--stages", type=int, default=0, help="override the launcher's pipelining stages")
    nb.add_argument("--acc-rows", action="store_true", help="ACC_ROWS on (ops.norm_bwd_configs.BWD_ACC_ROWS_MAX_N) at any width")
    nf = sub.add_parser("norm-fwd")
    nf.add_argument("--kind", default="ln", choices=("ln", "bias-ln", "rms", "add-rms", "add-ln"))
    nf.add_argument("--shape", default="8192x8192")
    nf.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    nf.add_argument("--no-stats", action="store_true", help="the inference build: mean and rstd not stored")
    nf.add_argument("--set", nargs="*", default=[], help="NAME=INT: set an ops/norm_configs.py constant")
    for p in (g, w, wc, f, fw, bw, bq, nb, nf):
        p.add_argument("--sass", action="store_true", help="print the SASS instruction mix")
    args = ap.parse_args()
    {"gemm": gemm, "gemm-ws": gemm_ws, "gemm-coop": gemm_ws, "attn-fwd": attn_fwd, "attn-fwd-ws": attn_fwd_ws, "attn-dkdv-ws": attn_dkdv_ws, "attn-dq-ws": attn_dq_ws,
     "norm-bwd": norm_bwd, "norm-fwd": norm_fwd}[args.kernel](args)


if __name__ == "__main__":
    main()
