"""GEMM configs: a frozen dataclass, the named heuristic default, the committed tuned table, and an
opt-in autotuner with an on-disk cache keyed by (GPU family, shape bucket, dtype, epilogue).

Lookup order for a launch (`choose`): an explicit config, then the autotuner when TRIFUSE_GEMM_AUTOTUNE=1
(never the default: a first call must not spend a minute tuning), then the tuned table
(`gemm_tuned.json`, written by `scripts/tune_gemm.py` on the GPU), then `heuristic_config`.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..runtime import cache_dir
from ._launch import cdiv, next_pow2

TABLE_PATH = Path(__file__).with_name("gemm_tuned.json")
# Shared memory a block may use on sm_90 (227 KB); tuning candidates above it are pruned.
SMEM_LIMIT_SM90 = 232448
# Smallest problem (M*N*K) that goes to the persistent TMA kernel: below 512^3 the host-side launch and
# descriptor setup are a visible share of a few-microsecond GEMM and the pointer kernel does as well
# (to be confirmed by the sweep in scripts/tune_gemm.py).
TMA_MIN_WORK = 512 ** 3
# Rows at or below which the small-M portable config is used (decode-like shapes: one tile row).
SMALL_M = 64


@dataclass(frozen=True)
class GemmConfig:
    kernel: str  # "portable" (pointer loads) or "tma" (persistent, tensor descriptors, sm_90)
    block_m: int
    block_n: int
    block_k: int
    group_m: int = 8
    num_warps: int = 4
    num_stages: int = 3
    epi_subtile: bool = False  # tma only: epilogue on two column halves
    flatten: bool = False  # tma only: tl.range(flatten=...) of the persistent loop (hurt at 8192^3)

    def smem_bytes(self, elem: int) -> int:
        stage = (self.block_m * self.block_k + self.block_k * self.block_n) * elem
        out_tile = self.block_m * self.block_n * elem // (2 if self.epi_subtile else 1)
        return stage * self.num_stages + (out_tile if self.kernel == "tma" else 0)


def family(capability: tuple[int, int] | None) -> str:
    return "interpreter" if capability is None else f"sm{capability[0]}{capability[1]}"


def _pow2_bucket(x: int, lo: int = 64, hi: int = 16384) -> int:
    return min(hi, max(lo, next_pow2(max(x, 1))))


def bucket(M: int, N: int, K: int) -> str:
    """Power-of-two bucket of each dim (clamped to [64, 16384]) so every new M does not re-tune."""
    return f"m{_pow2_bucket(M)}_n{_pow2_bucket(N)}_k{_pow2_bucket(K)}"


def table_key(capability, M, N, K, dtype_name: str) -> str:
    return f"{family(capability)}/{dtype_name}/{bucket(M, N, K)}"


def heuristic_config(M: int, N: int, K: int, elem: int, capability, num_sms: int, tma_ok: bool) -> GemmConfig:
    """The default: fixed configs by problem size, no measurement at call time."""
    if capability is None:
        # Interpreter: tl.dot runs in numpy, per-program overhead dominates; the largest tile that
        # covers the problem (up to 64) means the fewest programs.
        bm, bn = (min(64, max(16, next_pow2(x))) for x in (M, N))
        return GemmConfig("portable", bm, bn, min(64, max(16, next_pow2(K))), num_stages=1)
    bk = 64 if elem <= 2 else 32  # one 128-byte row of K per stage either way
    if M <= SMALL_M:
        # Decode-like: one row of tiles; narrow M tile, many N tiles to fill the SMs.
        bm = max(16, next_pow2(M))
        bn = 64 if N <= 4096 else 128
        return GemmConfig("portable", bm, bn, bk, num_warps=4, num_stages=4)
    if tma_ok and capability[0] == 9 and M * N * K >= TMA_MIN_WORK:
        # ANCHORS feasibility check (H200): 128x256x64, 8 warps, 3-4 stages best at >= 4096^3; 128x128
        # 8-14% slower there. Smaller problems: the largest tile that still gives ~one wave of tiles.
        for bm, bn in ((128, 256), (128, 128), (64, 128)):
            if cdiv(M, bm) * cdiv(N, bn) >= 0.75 * num_sms:
                break
        stages = 3 if bn == 256 else 4
        return GemmConfig("tma", bm, bn, 64, group_m=8, num_warps=8 if bm * bn >= 128 * 128 else 4,
                          num_stages=stages, epi_subtile=bn == 256)
    if M * N * K <= 256 ** 3:
        return GemmConfig("portable", 64, 64, bk, num_warps=4, num_stages=4)
    return GemmConfig("portable", 128, 128, bk, num_warps=8, num_stages=3)


_TABLE: dict | None = None


def tuned_table() -> dict:
    global _TABLE
    if _TABLE is None:
        try:
            _TABLE = json.loads(TABLE_PATH.read_text()).get("configs", {})
        except (OSError, json.JSONDecodeError):
            _TABLE = {}
    return _TABLE


def from_dict(d: dict) -> GemmConfig:
    fields = GemmConfig.__dataclass_fields__
    return GemmConfig(**{k: v for k, v in d.items() if k in fields})


def table_config(key: str, tma_ok: bool) -> GemmConfig | None:
    entry = tuned_table().get(key)
    if entry is None:
        return None
    cfg = from_dict(entry)
    return None if cfg.kernel == "tma" and not tma_ok else cfg


def candidates(M: int, N: int, K: int, elem: int, tma_ok: bool) -> list[GemmConfig]:
    """The autotuner's and the tuning script's search space, pruned by shared memory."""
    out = []
    for bm, bn, bk in ((128, 256, 64), (128, 128, 64), (64, 128, 64), (128, 64, 64), (64, 64, 64),
                       (256, 128, 64), (128, 128, 128)):
        for warps in (4, 8):
            for stages in (3, 4, 5):
                out.append(GemmConfig("portable", bm, bn, bk, 8, warps, stages))
                if tma_ok:
                    for sub in (False, True):
                        out.append(GemmConfig("tma", bm, bn, bk, 8, warps, stages, epi_subtile=sub))
    small = min(M, N, K) < 128
    out = [c for c in out if c.smem_bytes(elem) <= SMEM_LIMIT_SM90 and not (small and c.block_m > 64 and M < 64)]
    return out


# ---- opt-in autotuning, cached on disk -------------------------------------------------------------

def autotune_enabled() -> bool:
    return os.environ.get("TRIFUSE_GEMM_AUTOTUNE", "0") == "1"


def cache_path() -> Path:
    return cache_dir() / "gemm_autotune.json"


_CACHE: dict | None = None


def cached_tuned(key: str) -> GemmConfig | None:
    global _CACHE
    if _CACHE is None:
        try:
            _CACHE = json.loads(cache_path().read_text())
        except (OSError, json.JSONDecodeError):
            _CACHE = {}
    return from_dict(_CACHE[key]) if key in _CACHE else None


def store_tuned(key: str, cfg: GemmConfig) -> None:
    cached_tuned(key)  # loads _CACHE
    _CACHE[key] = asdict(cfg)
    try:
        path = cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_CACHE, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home must not break a GEMM


def autotune(key: str, configs: list[GemmConfig], run) -> GemmConfig:
    """Time run(cfg) for each config (median of triton.testing.do_bench), keep and cache the fastest."""
    hit = cached_tuned(key)
    if hit is not None:
        return hit
    from triton.testing import do_bench

    best, best_ms = None, float("inf")
    for cfg in configs:
        try:
            ms = do_bench(lambda cfg=cfg: run(cfg), warmup=5, rep=20, return_mode="median")
        except Exception:  # noqa: BLE001, S112 -- a config that does not compile or fit here is skipped
            continue
        if ms < best_ms:
            best, best_ms = cfg, ms
    if best is None:
        raise RuntimeError(f"trifuse gemm autotune: no config ran for {key}")
    store_tuned(key, best)
    return best
