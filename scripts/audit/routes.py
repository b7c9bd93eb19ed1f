"""Route tracing: which kernels a case ran, and route warnings when it did not take the one it was written
for."""
from .config import SMOKE

# ----------------------------------------------------------------------------------------------------------
# route tracing: wrap the launch helpers the op modules call by global name (in-process only)
# ----------------------------------------------------------------------------------------------------------
TRACE: list = []


def _kname(kernel) -> str:
    name = getattr(kernel, "__name__", None)
    if not name:
        name = getattr(getattr(kernel, "fn", None), "__name__", None)
    return name or type(kernel).__name__


def _install_route_hooks() -> None:
    def wrap_launcher(mod, tag):
        orig = mod.launcher

        def launcher(kernel):
            TRACE.append(f"{tag}:{_kname(kernel)}")
            return orig(kernel)

        mod.launcher = launcher

    def wrap_fn(mod, attr, label):
        orig = getattr(mod, attr)

        def fn(*a, **k):
            TRACE.append(label)
            return orig(*a, **k)

        setattr(mod, attr, fn)

    try:
        import trifuse.ops.attention as oa
        import trifuse.ops.attention_ws as ows
        import trifuse.ops.gemm as og
        import trifuse.ops.norm as on
        import trifuse.ops.softmax as osm

        wrap_launcher(og, "gemm")
        wrap_fn(og, "launch_gluon", "gemm:ws")  # both Gluon kernels
        wrap_launcher(oa, "attn")
        wrap_fn(ows, "launch_fwd", "attn:ws_fwd")
        wrap_fn(ows, "launch_dkdv", "attn:ws_dkdv")
        wrap_fn(ows, "launch_dq", "attn:ws_dq")
        wrap_launcher(on, "norm")
        wrap_launcher(osm, "softmax")
    except Exception as e:  # noqa: BLE001 - informational only
        print(f"(route hooks not installed: {type(e).__name__}: {e})")


def routes() -> str:
    seen = []
    for t in TRACE:
        if t not in seen:
            seen.append(t)
    return ",".join(seen)


WARNINGS = []


def expect_route(notes, want, absent=False):
    """want: a tag (or tuple of alternatives) that should (absent=False) / should not appear in TRACE."""
    wants = (want,) if isinstance(want, str) else tuple(want)
    hit = any(w in TRACE for w in wants)
    if SMOKE:
        return
    if hit == absent:
        msg = f"WARN route: {'did not expect' if absent else 'expected'} {'|'.join(wants)}"
        notes.add(msg)
        WARNINGS.append(msg)
