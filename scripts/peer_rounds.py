"""Many alternating rounds of a few bench rows: how often trifuse beats each peer, not just the best round.

The bench keeps each provider's fastest of a few rounds; where trifuse and a peer both sit at the copy
ceiling, that ratio flips with run-to-run noise (1-2% at 14-90 us). This runs the bench's own
`harness.run_case` on rows of several kinds, shapes and dtypes (without a whole suite) for many rounds and
prints per peer: the best-of ratio, the median per-round ratio and the rounds trifuse won. Device time
(host hidden), L2 flushed, as the bench.

  python3 scripts/peer_rounds.py [ROUNDS]   # the norm rows below; default 15 rounds
"""
import sys

import torch

sys.path.insert(0, "src")
from trifuse.bench import harness
from trifuse.bench import norm as bench_norm
from trifuse.bench.suite import Case

BF16, FP32 = torch.bfloat16, torch.float32
# (kind, shape, dtype): norm forward rows within 3% of a peer in the thirteenth session's bench.
ROWS = [("rms_norm", (4096, 4096), BF16), ("layer_norm", (4096, 4096), BF16), ("layer_norm", (8192, 8192), BF16),
        ("rms_norm", (8192, 8192), BF16), ("rms_norm", (32768, 2048), BF16), ("rms_norm", (8192, 512), BF16),
        ("rms_norm", (8192, 512), torch.float16), ("bias_layer_norm", (8192, 512), torch.float16),
        ("add_rms_norm", (8192, 512), torch.float16), ("add_rms_norm", (512, 8192), FP32)]
PEERS = frozenset({"compile", "liger"})


def main(rounds: int) -> None:
    for kind, shape, dtype in ROWS:
        case = Case(shape, dtype, "fwd", (("kind", kind),))
        ours, *peers = harness.run_case(bench_norm.SUITE, case, {}, hide_host=True, only=PEERS, rounds=rounds)
        parts = [f"trifuse best {ours['ms'] * 1e3:.1f}us"]
        for r in peers:
            if "rounds" not in r:
                parts.append(f"{r['provider']}: {r.get('skipped', 'not timed')}")
                continue
            parts.append(f"{r['provider']}: best-of {r['trifuse_speedup']:.3f}, per-round median "
                         f"{r['round_ratio_median']:.3f}, trifuse faster in {r['rounds_trifuse_faster']}/{r['rounds']}")
        print(f"{kind} {shape[0]}x{shape[1]} {str(dtype)[6:]}: " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
