"""The CLI end to end in a subprocess: info, bench (CSV/JSON with provenance), report."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trifuse.runtime import INTERPRET

SRC = str(Path(__file__).resolve().parents[1] / "src")


def run_cli(*args, tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "TRIFUSE_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "trifuse", *args], check=False, env=env, capture_output=True,
                          text=True, timeout=600)


def test_info(tmp_path):
    out = run_cli("info", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    for word in ("trifuse", "torch", "triton", "mode", "ceiling cache"):
        assert word in out.stdout


@pytest.mark.skipif(not INTERPRET, reason="the CPU-mode bench; the GPU bench runs in make gpu-check")
def test_bench_softmax_cpu_mode_writes_csv_json_and_report(tmp_path):
    csv_path, json_path = tmp_path / "s.csv", tmp_path / "s.json"
    out = run_cli("bench", "softmax", "--shapes", "8x300", "--csv", str(csv_path), "--json", str(json_path),
                  tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "CPU mode" in out.stdout and "not GPU timings" in out.stdout
    rows = list(csv.DictReader(csv_path.open()))
    ours = [r for r in rows if r["provider"] == "trifuse"]
    assert len(ours) == 1 and float(ours[0]["max_abs_err"]) < 1e-5
    assert ours[0]["model_bytes"] == str(2 * 8 * 300 * 4) and ours[0]["gpu"].startswith("none")
    result = json.loads(json_path.read_text())
    assert {"provenance", "ceilings", "rows"} <= set(result)
    assert "interpreter" in result["provenance"]["timing"]
    md = run_cli("report", "--markdown", str(json_path), tmp_path=tmp_path)
    assert md.returncode == 0 and "| 8x300 fn=softmax |" in md.stdout


def test_compact_report_keeps_speedups():
    from trifuse.bench import report

    rows = [{"op": "norm", "case": "8x8", "dtype": "bfloat16", "direction": "fwd", "provider": p, "ms": ms,
             "gb_per_s": 1.0, "ceiling_fraction": 0.5, "max_abs_err": 0.0, "model_bytes": 256,
             "trifuse_speedup": ms / 0.01} for p, ms in (("trifuse", 0.01), ("torch", 0.02))]
    rows.append({"op": "norm", "case": "8x8", "dtype": "bfloat16", "direction": "fwd", "provider": "liger",
                 "skipped": "not installed"})
    result = {"provenance": {"gpu": "g", "torch": "t", "triton": "tr", "date": "d", "timing": "hidden"},
              "ceilings": {}, "rows": rows}
    md = report.markdown(result, compact=True)
    assert "| case | dtype | dir | trifuse ms | GB/s | % ceiling | vs torch | vs liger |" in md
    assert "| 8x8 | bfloat16 | fwd | 0.0100 | 1 | 50.0 | 2.00x | skip |" in md
    assert "timing: hidden" in md


def test_report_lists_every_row_slower_than_a_provider():
    from trifuse.bench import report

    def row(case, provider, ms, ours):
        return {"op": "norm", "case": case, "dtype": "bfloat16", "direction": "bwd", "provider": provider, "ms": ms,
                "gb_per_s": 1.0, "ceiling_fraction": 0.5, "max_abs_err": 0.0, "model_bytes": 256,
                **({} if provider == "trifuse" else {"trifuse_speedup": ms / ours})}

    rows = [row("8x8", "trifuse", 0.010, 0.010), row("8x8", "torch", 0.020, 0.010), row("8x8", "compile", 0.009, 0.010),
            row("4x4", "trifuse", 0.010, 0.010), row("4x4", "torch", 0.008, 0.010), row("4x4", "compile", 0.011, 0.010)]
    result = {"provenance": {"gpu": "g", "torch": "t", "triton": "tr", "date": "d"}, "ceilings": {}, "rows": rows}
    slower, compared = report.slower_than_peers(result)
    assert compared == 4
    assert slower == ["4x4 bfloat16 bwd: torch 0.800x (0.0100 vs 0.0080 ms)",
                      "8x8 bfloat16 bwd: compile 0.900x (0.0100 vs 0.0090 ms)"]
    md = report.markdown(result)
    assert "Slower than a provider in 2 of 4 comparisons:" in md
    assert "- 4x4 bfloat16 bwd: torch 0.800x (0.0100 vs 0.0080 ms)" in md
    rows[4].update(rounds=9, rounds_trifuse_faster=4, round_ratio_median=0.995)
    assert report.slower_than_peers(result)[0][0] == ("4x4 bfloat16 bwd: torch 0.800x (0.0100 vs 0.0080 ms), "
                                                      "faster in 4/9 rounds, per-round median 0.995x")
    result["rows"] = rows[:2]
    assert "Slower than" not in report.markdown(result)
    result["rows"], result["provenance"]["mode"] = rows, "interpreter (CPU)"  # CPU timings: no verdicts
    assert report.slower_than_peers(result) == ([], 0)


def test_bad_arguments_are_clear_errors(tmp_path):
    out = run_cli("bench", "nosuchop", tmp_path=tmp_path)
    assert out.returncode == 2 and "unknown benchmark" in out.stderr
    out = run_cli("bench", "softmax", "--shapes", "8by300", tmp_path=tmp_path)
    assert out.returncode == 2 and "--shapes" in out.stderr
    out = run_cli("bench", "softmax", "--shapes", "8x300", "--providers", "torch,nosuch", tmp_path=tmp_path)
    assert out.returncode == 2 and "unknown provider(s) ['nosuch']" in out.stderr
    out = run_cli("bench", "softmax", "--shapes", "8x300", "--rounds", "0", tmp_path=tmp_path)
    assert out.returncode == 2 and "--rounds: expected a positive integer, got 0" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["bench", "softmax", "--shapes", "8x300", "--direction", "sideways"], "--direction: expected some of"),
    (["bench", "softmax", "--shapes", "8x300", "--direction", "fwd,"], "--direction: expected some of"),
    (["bench", "attention", "--shapes", "8x300"], "attention takes BxHxSxD items, got 8x300"),
    (["bench", "gemm", "--shapes", "8x300"], "gemm takes MxKxN items"),
    (["bench", "norm", "--shapes", "8x30x4"], "norm takes MxN items"),
    (["bench", "softmax", "--shapes=-4x8"], "every size must be in [1, 2^31)"),
    (["bench", "softmax", "--shapes", "0x5"], "every size must be in [1, 2^31)"),
    (["bench", "softmax", "--shapes", "99999999999x8"], "every size must be in [1, 2^31)"),
    (["bench", "softmax", "--shapes="], "expected items like 4096x4096, got ''"),
    (["bench", "softmax", "--shapes", "8x300", "--json", "/nonexistent-dir/x.json"], "--json: no directory"),
    (["report", "/nonexistent-dir/x.json"], "cannot read '/nonexistent-dir/x.json' as JSON"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_more_bad_arguments_fail_before_any_run(args, message, capsys):
    """Caught before a benchmark runs: exit 2 with a message naming the argument, no traceback."""
    from trifuse.cli import main

    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_report_rejects_json_that_is_not_a_bench_result(tmp_path, capsys):
    from trifuse.cli import main

    for i, text in enumerate(("{}", '{"provenance": {}, "rows": []}', "not json")):
        path = tmp_path / f"r{i}.json"
        path.write_text(text)
        with pytest.raises(SystemExit):
            main(["report", str(path)])
        assert str(path) in capsys.readouterr().err


@pytest.mark.skipif(not INTERPRET, reason="the CPU-mode bench; the GPU bench runs in make gpu-check")
def test_bench_providers_filter(tmp_path):
    json_path = tmp_path / "s.json"
    out = run_cli("bench", "softmax", "--shapes", "8x300", "--providers", "torch", "--json", str(json_path),
                  tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert {r["provider"] for r in json.loads(json_path.read_text())["rows"]} == {"trifuse", "torch"}


@pytest.mark.skipif(not INTERPRET, reason="the CPU-mode bench")
def test_failing_measurement_is_recorded_not_fatal(capsys):
    import dataclasses

    from trifuse.bench import harness, suites

    def broken(case, inputs):
        raise RuntimeError("probe failed")

    suite = dataclasses.replace(suites.load("softmax"), measured=broken)
    cases = suite.cases(scale="cpu", shapes=[(4, 40)], directions=["fwd"])
    result = harness.run_suite(suite, cases, progress=False, only=frozenset({"torch"}))
    assert {r["provider"] for r in result["rows"]} == {"trifuse", "torch"}
    assert all(r["measured_error"] == "RuntimeError: probe failed" and "ms" in r for r in result["rows"])
    assert "measured columns failed" in capsys.readouterr().err


def test_report_shows_the_same_size_copy_fraction_when_measured():
    from trifuse.bench import report

    rows = [{"op": "norm", "case": "8x8", "dtype": "bfloat16", "direction": "fwd", "provider": p, "ms": ms,
             "gb_per_s": 1.0, "ceiling_fraction": 0.5, "same_size_copy_fraction": 0.008 / ms,
             "max_abs_err": 0.0, "model_bytes": 256, "trifuse_speedup": ms / 0.01}
            for p, ms in (("trifuse", 0.01), ("torch", 0.02))]
    result = {"provenance": {"gpu": "g", "torch": "t", "triton": "tr", "date": "d"}, "ceilings": {}, "rows": rows}
    md = report.markdown(result, compact=True)
    assert "| case | dtype | dir | trifuse ms | GB/s | % ceiling | % same-size copy | vs torch |" in md
    assert "| 8x8 | bfloat16 | fwd | 0.0100 | 1 | 50.0 | 80.0 | 2.00x |" in md
    full = report.markdown(result)
    assert "| % ceiling | % same-size copy | max err |" in full


def test_timing_rounds_alternate_providers_and_keep_each_ones_fastest(monkeypatch):
    from trifuse.bench import harness, suites

    suite = suites.load("softmax")
    case = suite.cases(scale="cpu", shapes=[(4, 40)], directions=["fwd"])[0]
    calls = []
    # Round by round: trifuse 3.0, 1.0, 2.0 ms; torch 5.0, 6.0, 4.0 ms.
    times = iter([3.0, 5.0, 1.0, 6.0, 2.0, 4.0])

    def fake_time_ms(fn, **kw):
        calls.append(fn)
        return next(times)

    monkeypatch.setattr(harness, "time_ms", fake_time_ms)
    monkeypatch.setattr(harness, "same_size_copy_ms", lambda nbytes, hide_host: 0.5)  # its own timing
    rows = harness.run_case(suite, case, {}, only=frozenset({"torch"}), rounds=3)
    assert [r["provider"] for r in rows] == ["trifuse", "torch"]
    assert calls[0] is calls[2] is calls[4] and calls[1] is calls[3] is calls[5] and calls[0] is not calls[1]
    assert [r["ms"] for r in rows] == [1.0, 4.0]
    assert rows[1]["trifuse_speedup"] == 4.0
    assert [r["same_size_copy_fraction"] for r in rows] == [0.5, 0.125]
    # torch / trifuse by round: 5/3, 6/1, 4/2: trifuse faster in all three, median 2.0.
    assert (rows[1]["rounds"], rows[1]["rounds_trifuse_faster"], rows[1]["round_ratio_median"]) == (3, 3, 2.0)
    assert "rounds" not in rows[0]
