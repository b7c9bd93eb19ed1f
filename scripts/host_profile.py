"""Host time per call of trifuse.linear / trifuse.gemm on a CPU-only machine, with the launch a no-op.

Imports trifuse in compiled mode (TRITON_INTERPRET unset) and fakes just enough of a CUDA device for the
eager path to take the branches a CUDA call takes: kernel_device_ok/check_kernel_device accept CPU tensors,
`device_info` reports an sm_90 with 132 SMs, and FastKernel's cache holds a no-op C launch per key (its
key building and lookup still run). Not measured: the CUDA caching allocator (CPU torch.empty instead),
torch.randint's kernel launch for dropout's seed, the real C launch (~5 us on the H200's host).
Run: python3 scripts/host_profile_gemm.py [--profile]
"""
import cProfile
import functools
import os
import pstats
import sys
import time

os.environ.pop("TRITON_INTERPRET", None)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import torch

import trifuse
from trifuse import runtime
from trifuse.ops import _launch
from trifuse.ops import gemm as og


def _fake_cuda():
    assert not runtime.INTERPRET and not og.INTERPRET and not _launch.INTERPRET  # the compiled branches
    runtime.INTERPRET = True  # read per call by the device checks only: they now accept CPU tensors

    @functools.cache
    def _info(index):
        return (9, 0), 132

    def device_info(t):  # the same work as the real one on a CUDA tensor
        if og.INTERPRET or not t.is_cpu:
            return None, 1
        return _info(t.get_device())

    og.device_info = device_info
    _launch._raw_stream = lambda device: 0
    torch.cuda.current_device = lambda: 0

    class _Compiled:  # what kernel[grid](...) returns on a cache miss; never launched
        def __getitem__(self, grid):
            return lambda *args, **meta: self

    def noop(*args):
        return None

    _launch.FastKernel._entry = lambda self, compiled, n_args, meta: (noop, (), ())
    init = _launch.FastKernel.__init__

    def fake_init(self, kernel):
        init(self, kernel)
        self.kernel = _Compiled()

    _launch.FastKernel.__init__ = fake_init


def per_call_us(calls: dict, n=300, rounds=40) -> dict:
    """Best of `rounds` short timings of each call, the calls interleaved (this VM's timings drift)."""
    for fn in calls.values():
        for _ in range(100):
            fn()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / n * 1e6)
    return best


def main():
    _fake_cuda()
    torch.manual_seed(0)
    dt = torch.bfloat16
    x = torch.randn(8, 512, dtype=dt)
    x3 = torch.randn(2, 4, 512, dtype=dt)
    w = torch.randn(256, 512, dtype=dt)
    bias = torch.randn(256, dtype=dt)
    b = torch.randn(512, 256, dtype=dt)
    wg = w.clone().requires_grad_()
    calls = {
        "torch.empty (8, 256)": lambda: torch.empty((8, 256), dtype=dt),
        "linear silu 2-D": lambda: trifuse.linear(x, w, activation="silu"),
        "linear silu 3-D": lambda: trifuse.linear(x3, w, activation="silu"),
        "linear silu + bias": lambda: trifuse.linear(x, w, bias, activation="silu"),
        "gemm bare": lambda: trifuse.gemm(x, b),
        "gemm dropout 0.1": lambda: trifuse.gemm(x, b, dropout_p=0.1),
        "gemm dropout, int seed": lambda: trifuse.gemm(x, b, dropout_p=0.1, seed=3),
        "linear silu, w requires grad": lambda: trifuse.linear(x, wg, activation="silu"),
    }
    for name, us in per_call_us(calls).items():
        print(f"{name:32s} {us:7.2f} us/call", flush=True)
    if "--profile" in sys.argv[1:]:
        for name in ("linear silu 3-D", "gemm dropout 0.1"):
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(2000):
                calls[name]()
            prof.disable()
            print(f"--- profile of {name} (2000 calls)")
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
