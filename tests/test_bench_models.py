"""What the benchmark times and the work it divides by: a direction's timed function runs the passes its
work model counts, and the naive byte counts follow the composition each naive provider runs."""
import pytest
import torch

import trifuse
from trifuse.bench import attention, gemm, norm, report, softmax
from trifuse.bench.suite import Case
from trifuse.ops.softmax import naive_softmax_bytes

SMALL_CASES = [
    (softmax.SUITE, (8, 16), (("fn", "softmax"),), "softmax"),
    (norm.SUITE, (8, 16), (("kind", "rms_norm"),), "rms_norm"),
    (norm.SUITE, (8, 16), (("kind", "add_rms_norm"),), "add_rms_norm"),
    (attention.SUITE, (1, 2, 16, 32), (("causal", True), ("hkv", 1)), "attention"),
    (gemm.SUITE, (16, 16, 16), (("epilogue", "bias+silu"),), "linear"),
]


@pytest.mark.parametrize("suite, shape, params, op", SMALL_CASES, ids=[c[3] for c in SMALL_CASES])
@pytest.mark.parametrize("direction, forwards", [("bwd", 0), ("fwd+bwd", 2)])
def test_a_backward_direction_times_the_passes_its_model_counts(monkeypatch, device, suite, shape, params, op,
                                                                direction, forwards):
    """fwd+bwd models count both passes, so its timed function must run the forward each call; bwd times the
    backward alone (softmax, norm and attention timed only the backward under fwd+bwd: their GB/s and
    TFLOP/s read 1.4-1.7x too high)."""
    case = Case(shape, torch.float32, direction, params)
    calls = []
    original = getattr(trifuse, op)

    def counted(*args, **kwargs):
        calls.append(op)
        return original(*args, **kwargs)

    monkeypatch.setattr(trifuse, op, counted)
    fn = suite.providers(case)["trifuse"](suite.inputs(case, device))
    calls.clear()
    fn()
    fn()
    assert len(calls) == forwards


@pytest.mark.parametrize("direction, per_element", [("fwd", 10), ("bwd", 12), ("fwd+bwd", 22)])
def test_naive_log_softmax_counts_its_log(direction, per_element):
    """The naive log-softmax is naive_softmax(x).log(): the log adds a read and a write forward and dy / y
    backward."""
    case = Case((8, 16), torch.bfloat16, direction, (("fn", "log_softmax"),))
    assert softmax.naive_bytes(case) == per_element * 8 * 16 * 2
    assert naive_softmax_bytes(8, 16, 2, direction, log=True) == per_element * 8 * 16 * 2


def test_compact_report_shows_no_speedup_where_trifuse_was_skipped():
    rows = [{"op": "norm", "case": "c", "dtype": "bfloat16", "direction": "fwd", "provider": "trifuse",
             "skipped": "out of memory"},
            {"op": "norm", "case": "c", "dtype": "bfloat16", "direction": "fwd", "provider": "torch", "ms": 0.02,
             "gb_per_s": 100.0, "model_bytes": 256}]
    result = {"provenance": {"gpu": "g", "torch": "t", "triton": "tr", "date": "d"}, "ceilings": {}, "rows": rows}
    md = report.markdown(result, compact=True)
    assert "| c | bfloat16 | fwd | - | - | - | - |" in md  # not the peer's 0.0200 ms as a speedup
