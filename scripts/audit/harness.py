"""Output lines (stdout and $OUT/gpu_audit.txt), the case registry and the runner with its hang watchdog."""
import contextlib
import gc
import os
import threading
import time
import traceback
import zlib

import torch

from .checks import sync
from .config import ARGS, BUDGET, CASE_TIMEOUT, DEV, EXCLUDE, LIST_ONLY, SMOKE, T0
from .routes import TRACE, WARNINGS, routes

# An ERROR line names its last frames in trifuse and in the audit itself: the entry point (gpu_audit.py) and
# this package, where the case functions and the runner live.
_AUDIT_DIR = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------------
_OUT_FILE = None
if os.environ.get("OUT"):
    try:
        os.makedirs(os.environ["OUT"], exist_ok=True)
        _OUT_FILE = open(os.path.join(os.environ["OUT"], "gpu_audit.txt"), "w")  # noqa: SIM115
    except OSError as e:  # pragma: no cover
        print(f"cannot open $OUT/gpu_audit.txt: {e}")


def emit(line: str) -> None:
    print(line, flush=True)
    if _OUT_FILE is not None:
        _OUT_FILE.write(line + "\n")
        _OUT_FILE.flush()


class Notes(list):
    def add(self, s):
        self.append(s)


# ----------------------------------------------------------------------------------------------------------
# case registry and runner
# ----------------------------------------------------------------------------------------------------------
CASES = []


def add(name, fn, *args, gpu_only=False, min_left=0.0, **kw):
    CASES.append((name, fn, args, kw, gpu_only, min_left))


CURRENT = {"name": None, "t": None}


def _watchdog():
    while True:
        time.sleep(2.0)
        name, t = CURRENT["name"], CURRENT["t"]
        if name is not None and t is not None and time.time() - t > CASE_TIMEOUT:
            emit(f"ERROR {name} [>{CASE_TIMEOUT:.0f}s] HANG: no progress (deadlocked kernel or endless "
                 f"compile?); routes so far={routes()}")
            emit(f"SUMMARY aborted by the watchdog during {name} (elapsed {time.time() - T0:.0f}s)")
            if _OUT_FILE is not None:
                _OUT_FILE.flush()
            os._exit(3)


def run_all():
    counts = {"PASS": 0, "FAIL": 0, "ERROR": 0, "SKIP": 0}
    fatal = None
    selected = [c for c in CASES if (not ARGS or any(s in c[0] for s in ARGS))
                and not any(s in c[0] for s in EXCLUDE)]
    if LIST_ONLY:
        for c in selected:
            print(c[0])
        return 0
    if not SMOKE:
        threading.Thread(target=_watchdog, daemon=True).start()
    for name, fn, args, kw, gpu_only, min_left in selected:
        elapsed = time.time() - T0
        if fatal is not None:
            emit(f"SKIP  {name} (CUDA context lost in {fatal})")
            counts["SKIP"] += 1
            continue
        if SMOKE and gpu_only:
            emit(f"SKIP  {name} (GPU only)")
            counts["SKIP"] += 1
            continue
        if elapsed > BUDGET or (min_left and BUDGET - elapsed < min_left):
            emit(f"SKIP  {name} (time budget: {elapsed:.0f}s elapsed of {BUDGET:.0f}s)")
            counts["SKIP"] += 1
            continue
        torch.manual_seed(zlib.crc32(name.encode()))
        notes = Notes()
        TRACE.clear()
        msg = ""
        t = time.time()
        CURRENT.update(name=name, t=t)
        try:
            fn(notes, *args, **kw)
            sync()
            status = "PASS"
        except AssertionError as e:
            status, msg = "FAIL", str(e)
        except Exception as e:  # noqa: BLE001
            status = "ERROR"
            msg = f"{type(e).__name__}: {str(e).strip()[:600]}"
            tb = traceback.extract_tb(e.__traceback__)
            where = [f"{os.path.basename(f.filename)}:{f.lineno}" for f in tb if "trifuse" in f.filename
                     or "gpu_audit" in f.filename
                     or os.path.dirname(os.path.abspath(f.filename)) == _AUDIT_DIR][-3:]
            if where:
                msg += f" @ {' <- '.join(reversed(where))}"
            if DEV.type == "cuda":
                try:
                    torch.cuda.synchronize()
                except Exception as e2:  # noqa: BLE001
                    fatal = name
                    msg += f" | CUDA context lost: {type(e2).__name__}: {str(e2)[:200]}"
        finally:
            CURRENT.update(name=None, t=None)
        dt = time.time() - t
        counts[status] += 1
        r = routes()
        line = f"{status:5s} {name} [{dt:.1f}s] {' '.join(notes)}"
        if r:
            line += f" routes={r}"
        if msg:
            line += f" :: {' '.join(msg.split())}"
        emit(line)
        notes.clear()
        gc.collect()
        if DEV.type == "cuda" and fatal is None:
            with contextlib.suppress(Exception):  # a broken context must not stop the report
                torch.cuda.empty_cache()
    emit(f"SUMMARY pass={counts['PASS']} fail={counts['FAIL']} error={counts['ERROR']} skip={counts['SKIP']} "
         f"route_warnings={len(WARNINGS)} total={sum(counts.values())} elapsed={time.time() - T0:.0f}s")
    return 0 if counts["FAIL"] == counts["ERROR"] == 0 else 1
