"""Many alternating rounds of a few bench rows: how often trifuse beats each peer, not just the best round.

The bench keeps each provider's fastest of a few rounds; where trifuse and a peer both sit at the copy
ceiling, that ratio flips with run-to-run noise (1-2% at 14-90 us). This times trifuse and every peer
once per round, providers alternating, and prints per peer: the best-of ratio, the median and spread of
the per-round ratios, and the rounds trifuse won. Device time (host hidden), L2 flushed, as the bench.

  python3 scripts/peer_rounds.py [ROUNDS]   # the norm rows below; default 15 rounds

`bench --rounds N` now records the same per-round figures for every row (`rounds_trifuse_faster`,
`round_ratio_median`) and lists them beside each row slower than a provider; this script picks rows of
several kinds and shapes without running a whole suite.
"""
import statistics
import sys

import torch

sys.path.insert(0, "src")
from trifuse.bench import norm as bench_norm
from trifuse.bench.suite import Case, Unavailable
from trifuse.bench.timing import time_ms

BF16, FP32 = torch.bfloat16, torch.float32
# (kind, shape, dtype): norm forward rows within 3% of a peer in the thirteenth session's bench.
ROWS = [("rms_norm", (4096, 4096), BF16), ("layer_norm", (4096, 4096), BF16), ("layer_norm", (8192, 8192), BF16),
        ("rms_norm", (8192, 8192), BF16), ("rms_norm", (32768, 2048), BF16), ("rms_norm", (8192, 512), BF16),
        ("rms_norm", (8192, 512), torch.float16), ("bias_layer_norm", (8192, 512), torch.float16),
        ("add_rms_norm", (8192, 512), torch.float16), ("add_rms_norm", (512, 8192), FP32)]
PEERS = ("compile", "liger")


def main(rounds: int) -> None:
    for kind, shape, dtype in ROWS:
        case = Case(shape, dtype, "fwd", (("kind", kind),))
        inp = bench_norm.inputs(case, "cuda")
        fns = {}
        for name, build in bench_norm.providers(case).items():
            if name in ("trifuse", *PEERS):
                try:
                    fns[name] = build(inp)
                except Unavailable as e:
                    print(f"  {name}: {e}")
        times = {name: [] for name in fns}
        for _ in range(rounds):
            for name, fn in fns.items():
                times[name].append(time_ms(fn, hide_host=True))
        ours = times["trifuse"]
        parts = [f"trifuse best {min(ours) * 1e3:.1f}us median {statistics.median(ours) * 1e3:.1f}us"]
        for name in fns.keys() - {"trifuse"}:
            ratios = sorted(p / t for p, t in zip(times[name], ours))
            wins = sum(r > 1 for r in ratios)
            parts.append(f"{name}: best-of {min(times[name]) / min(ours):.3f}, per-round median "
                         f"{statistics.median(ratios):.3f} [{ratios[0]:.3f}-{ratios[-1]:.3f}], "
                         f"trifuse faster in {wins}/{rounds}")
        print(f"{kind} {shape[0]}x{shape[1]} {str(dtype)[6:]}: " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
