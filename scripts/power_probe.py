"""Steady-state GEMM time, SM clock and power: back-to-back loops (~2.5 s each, two alternating rounds) of
linear + bias + SiLU with and without dropout and cuBLAS's bare GEMM, while nvidia-smi samples SM clock and
power every 50 ms. On the lent H100 all three ran at the 700 W cap (twelfth session, docs/NOTES.md).

  python3 scripts/power_probe.py
"""
# ruff: noqa: B023 - each loop's lambdas run before the loop moves on
import subprocess
import sys
import time

import torch

sys.path.insert(0, "src")
import trifuse

shapes = [(16384, 4096, 4096), (8192, 8192, 8192), (8192, 4096, 14336)]
smi = subprocess.Popen(["nvidia-smi", "--query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu",
                        "--format=csv,noheader,nounits", "-lms", "50"], stdout=subprocess.PIPE, text=True)
marks = []
for m, n, k in shapes:
    x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) / k**0.5
    b = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    runs = {"silu": lambda: trifuse.linear(x, w, b, activation="silu"),
            "silu+drop": lambda: trifuse.linear(x, w, b, activation="silu", dropout_p=0.1, seed=1),
            "cublas": lambda: x @ w.T}
    for fn in runs.values():
        fn()
    torch.cuda.synchronize()
    for rnd in range(2):
        for name, fn in runs.items():
            t0 = time.time()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            n_it = 0
            s.record()
            while time.time() - t0 < 2.5:
                for _ in range(20):
                    fn()
                n_it += 20
                torch.cuda.synchronize()
            e.record()
            e.synchronize()
            marks.append((f"{m}x{n}x{k} {name} r{rnd}", t0, time.time(), s.elapsed_time(e) / n_it * 1e3))
            time.sleep(0.5)
smi.terminate()
samples = []
for line in smi.stdout.read().splitlines():
    ts, clk, pw, temp = [p.strip() for p in line.split(",")]
    t = time.mktime(time.strptime(ts.split(".")[0], "%Y/%m/%d %H:%M:%S")) + float("0." + ts.split(".")[1])
    samples.append((t, float(clk), float(pw), float(temp)))
for name, t0, t1, us in marks:
    sel = [s for s in samples if t0 + 0.5 < s[0] < t1]
    if sel:
        clk = sorted(s[1] for s in sel)[len(sel) // 2]
        pw = sorted(s[2] for s in sel)[len(sel) // 2]
        print(f"{name:36s} {us:8.1f} us/call  SM clock median {clk:.0f} MHz  power {pw:.0f} W  n={len(sel)}")
    else:
        print(f"{name:36s} {us:8.1f} us/call  (no samples)")
