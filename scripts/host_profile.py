"""Host time per call of every trifuse op, forward and backward, on a CPU-only machine, launches no-ops.

Imports trifuse in compiled mode (TRITON_INTERPRET unset) and fakes just enough of a CUDA device for the
eager path to take the branches a CUDA call takes: the device checks accept CPU tensors, `device_info`
reports an sm_90 with 132 SMs (gemm), the norm backward's persistent grid sizes itself for 132 SMs, and
FastKernel's cache holds a no-op C launch per key (its key building and lookup still run). Backward rows
time `torch.autograd.grad` over a retained graph (the autograd engine included, as on the GPU). Not
measured: the CUDA caching allocator (CPU torch.empty instead), torch.randint's kernel launch for
dropout's seed, the real C launch (~5 us on the H200's host). This VM drifts 30%+ between runs: compare
base and new from alternate runs, best of several.
Run: python3 scripts/host_profile.py [FILTER...] [--profile]  (FILTER: substrings of the row names)
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
from trifuse.ops import norm_bwd_configs as ob


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

    def persistent_programs(device, tiles, per_sm):  # the CUDA branch's work, 132 SMs
        if ob.INTERPRET or device.type != "cpu":
            return ob.INTERPRET_PROGRAMS
        return max(1, min(tiles, per_sm * _info(device.index if device.index is not None else 0)[1]))

    ob.persistent_programs = persistent_programs
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


def per_call_us(calls: dict, n=200, rounds=30) -> dict:
    """Best of `rounds` short timings of each call, the calls interleaved (this VM's timings drift)."""
    for fn in calls.values():
        for _ in range(50):
            fn()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / n * 1e6)
    return best


class NullFunction(torch.autograd.Function):
    """The floor of a Python autograd.Function's backward under autograd.grad."""

    @staticmethod
    def forward(ctx, x):
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, g):
        return torch.empty_like(g)


def _grad(outputs, inputs):
    """A backward row: autograd.grad through the retained graph of `outputs` (one grad per output)."""
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    grads = [torch.ones_like(o) for o in outputs]
    return lambda: torch.autograd.grad(outputs, inputs, grads, retain_graph=True)


def _calls() -> dict:
    torch.manual_seed(0)
    dt = torch.bfloat16

    def leaf(*shape):
        return torch.randn(*shape, dtype=dt).requires_grad_()

    x, x3 = torch.randn(8, 512, dtype=dt), torch.randn(2, 4, 512, dtype=dt)
    w, bias, b = torch.randn(256, 512, dtype=dt), torch.randn(256, dtype=dt), torch.randn(512, 256, dtype=dt)
    v, r = torch.randn(512, dtype=dt), torch.randn(8, 512, dtype=dt)
    q = torch.randn(1, 2, 64, 64, dtype=dt)
    xg, vg, bg, rg = leaf(8, 512), leaf(512), leaf(512), leaf(8, 512)
    qg, kg, wg = leaf(1, 2, 64, 64), leaf(1, 2, 64, 64), w.clone().requires_grad_()
    calls = {
        "torch.empty (8, 256)": lambda: torch.empty((8, 256), dtype=dt),
        "bwd no-op autograd.Function": _grad(NullFunction.apply(xg), [xg]),
        "linear silu 2-D": lambda: trifuse.linear(x, w, activation="silu"),
        "linear silu 3-D": lambda: trifuse.linear(x3, w, activation="silu"),
        "linear silu + bias": lambda: trifuse.linear(x, w, bias, activation="silu"),
        "gemm bare": lambda: trifuse.gemm(x, b),
        "gemm dropout 0.1": lambda: trifuse.gemm(x, b, dropout_p=0.1),
        "linear silu, w requires grad": lambda: trifuse.linear(x, wg, activation="silu"),
        "rms_norm": lambda: trifuse.rms_norm(x, v),
        "rms_norm 3-D": lambda: trifuse.rms_norm(x3, v),
        "layer_norm": lambda: trifuse.layer_norm(x, v, v),
        "add_rms_norm": lambda: trifuse.add_rms_norm(x, r, v),
        "add_layer_norm": lambda: trifuse.add_layer_norm(x, r, v, v),
        "rms_norm, requires grad": lambda: trifuse.rms_norm(xg, vg),
        "bwd rms_norm": _grad(trifuse.rms_norm(xg, vg), [xg, vg]),
        "bwd layer_norm": _grad(trifuse.layer_norm(xg, vg, bg), [xg, vg, bg]),
        "bwd add_rms_norm": _grad(trifuse.add_rms_norm(xg, rg, vg), [xg, rg, vg]),
        "bwd rms_norm + input_bias": _grad(trifuse.rms_norm(xg, vg, input_bias=bg), [xg, vg, bg]),
        "softmax": lambda: trifuse.softmax(x),
        "softmax 3-D": lambda: trifuse.softmax(x3),
        "log_softmax": lambda: trifuse.log_softmax(x),
        "softmax, requires grad": lambda: trifuse.softmax(xg),
        "bwd softmax": _grad(trifuse.softmax(xg), [xg]),
        "attention": lambda: trifuse.attention(q, q, q),
        "attention causal": lambda: trifuse.attention(q, q, q, causal=True),
        "attention, requires grad": lambda: trifuse.attention(qg, kg, kg),
        "bwd attention": _grad(trifuse.attention(qg, kg, kg), [qg, kg]),
    }
    return calls


def main():
    _fake_cuda()
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    calls = {name: fn for name, fn in _calls().items() if not args or any(a in name for a in args)}
    for name, us in per_call_us(calls).items():
        print(f"{name:32s} {us:7.2f} us/call", flush=True)
    if "--profile" in sys.argv[1:]:
        for name, fn in calls.items():
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(2000):
                fn()
            prof.disable()
            print(f"--- profile of {name} (2000 calls)")
            pstats.Stats(prof).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
