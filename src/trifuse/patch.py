"""Patch a Hugging Face (or any nn.Module) model in place to run trifuse's fused kernels.

`patch_model(model)` walks `model.named_modules()` and changes three kinds of module; everything else
(attention, rotary embeddings, embeddings, the LM head, activations outside gated MLPs) is left alone.
transformers is never imported: modules are recognised by class name and structure.

What is patched
- RMSNorm (`rms_norm=True`): a module whose class name ends in "RMSNorm" (HF LlamaRMSNorm,
  MistralRMSNorm, Qwen2RMSNorm, ..., and torch.nn.RMSNorm), with a 1-D `weight` Parameter and a float
  epsilon in `variance_epsilon` (HF) or `eps` (torch; None = the compute type's machine epsilon). It is
  replaced on its parent by a `PatchedRMSNorm` (a `trifuse.nn.RMSNorm`) that holds the *same* weight
  Parameter object, so optimizers, tied references and state_dict keys are unchanged. Zero-centred norms
  that scale by `1 + weight` in fp32 (HF GemmaRMSNorm, Gemma2/3, Qwen3-Next's) are patched too
  (`weight_offset` 1.0):
  the kernel then takes the fp32 weight `1 + weight` and rounds the output once, as their formula does.
- LayerNorm (`layer_norm=True`): an exact `torch.nn.LayerNorm` (any normalized_shape, with or without
  weight/bias) is replaced by a `PatchedLayerNorm` (a `trifuse.nn.LayerNorm`) holding the same
  weight and bias Parameters.
- Gated SiLU MLP (`mlp=True`): a module with `gate_proj`, `up_proj`, `down_proj` nn.Linear children and an
  `act_fn` that is SiLU (HF LlamaMLP, MistralMLP, Qwen2MLP, ...). The module object stays (same class,
  attributes, children, state_dict keys); only its `forward` is rebound on the instance to
      down_proj(trifuse.linear(x, gate_proj.weight, gate_proj.bias, activation="silu") * up_proj(x))
  i.e. the gate GEMM, its bias and the SiLU run in one kernel.

What is skipped (counted in `*_skipped`, reason logged on the "trifuse.patch" logger at INFO)
- RMSNorm-named modules that have no 1-D weight Parameter, parameters or buffers besides it, or no float
  epsilon, or whose forward (on an fp32 copy, at a scale where eps is negligible and one where it is not)
  computes neither rms_norm(x) * weight nor rms_norm(x) * (1 + weight).
- Subclasses of nn.LayerNorm (they may override forward; trifuse's own modules are not counted).
- Modules with gate_proj/up_proj/down_proj Linear children whose `act_fn` is missing or not SiLU, that
  have other child modules (dropout, adapters: the patched forward would skip them), whose
  gate_proj is a subclass of nn.Linear (quantized or LoRA layers: their weight is not the plain
  weight), or whose forward, run on a probe input, is not down(silu(gate(x)) * up(x)).
- The root module itself when it is a norm (there is no parent to replace it on).
Probes run eager PyTorch (no trifuse kernel) under no_grad on a 2-row input from a private generator
(the global RNG is untouched); on the meta device they are skipped and the name/structure rules decide
(there a `1 + weight` norm is recognised only by "Gemma" or "Qwen3Next" in its class name).

Numerics and fallbacks. The patched modules run a kernel only when it computes what the original
module would; otherwise they call the original forward (the same Parameters, so the same result):
- norms: the input is fp32/fp16/bf16 on a device the kernels take (CUDA; CPU under TRITON_INTERPRET=1),
  an RMSNorm's weight has the input's dtype (HF's mixed-dtype formulas differ in output dtype: Llama's
  `weight * x_hat.to(input_dtype)` promotes, others cast back), and under autocast only fp32 inputs
  (autocast runs norms in fp32 anyway);
- MLP: x and the three projections' weights share one dtype, gate_proj is still a plain nn.Linear,
  and autocast is off.
With matching dtypes trifuse normalises and scales in fp32 and rounds once, where HF's Llama-style
RMSNorm rounds x_hat to the input dtype before scaling, and HF's MLP rounds gate(x) before the SiLU:
in bf16/fp16 the patched model is at least as close to an fp32 run as the original, not bitwise equal.

Not preserved: forward/backward hooks registered on a replaced norm module (the MLP keeps its own);
patching is not undone (keep a copy.deepcopy of the model to compare against). Patching twice is a
no-op: already patched modules are recognised and not counted.
"""
from __future__ import annotations

import copy
import logging
import math
import numbers
import types

import torch
import torch.nn.functional as F
from torch import nn

from . import nn as _tnn
from ._checks import FLOAT_DTYPES, check_bool
from .functional import norm as _fnorm
from .runtime import kernel_device_ok

__all__ = ["PatchedLayerNorm", "PatchedRMSNorm", "patch_model"]

_log = logging.getLogger("trifuse.patch")

_SILU_CLASS_NAMES = {"SiLU", "SiLUActivation", "SiLUActivationFunction"}
# Zero-centred RMSNorms (rms_norm(x) * (1 + weight)) known by name, for meta-device models (no probe).
_ZERO_CENTRED_NAMES = ("Gemma", "Qwen3Next")
_PROBE_ROWS = 2


def _autocast_on(x: torch.Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type)


def _norm_kernel_ok(x, weight) -> bool:
    """The kernel computes what the original norm would: supported dtype and device, and under autocast
    only fp32 (autocast's fp32 policy for norms then changes nothing)."""
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES or not kernel_device_ok(x):
        return False
    if weight is not None and weight.device != x.device:
        return False
    return x.dtype == torch.float32 or not _autocast_on(x)


class PatchedRMSNorm(_tnn.RMSNorm):
    """trifuse.nn.RMSNorm standing in for an RMSNorm-like module; falls back to the original module (kept,
    unregistered, as `_orig_module`: it shares the weight Parameter, and its own methods, HF Gemma's `_norm`
    say, stay reachable) whenever the kernel would change its numerics.

    weight_offset 1.0: a zero-centred norm, y = rms_norm(x) * (1 + weight) computed in fp32 and rounded
    once (HF Gemma's formula), so any input dtype the kernels take keeps its numerics."""

    weight_offset = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if _norm_kernel_ok(x, w):
            if self.weight_offset:
                return _fnorm.rms_norm(x, w.float() + self.weight_offset, self.eps)
            if w is None or w.dtype == x.dtype:
                return super().forward(x)
        orig = self._orig_module
        if orig.weight is not w:  # .to() with parameters overwritten on conversion: hand it the current one
            orig.weight = w
        return orig(x)


class PatchedLayerNorm(_tnn.LayerNorm):
    """trifuse.nn.LayerNorm standing in for a torch.nn.LayerNorm; falls back to torch's forward whenever
    the kernel would change its numerics (unsupported dtype or device, autocast with a non-fp32 input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _norm_kernel_ok(x, self.weight):
            return super().forward(x)
        return nn.LayerNorm.forward(self, x)


def _mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    """The patched forward of a gated SiLU MLP (bound on the instance; named forward so that a pickled
    model unpickles with its class's own forward rather than failing)."""
    from .functional.gemm import linear

    gate, up, down = self.gate_proj, self.up_proj, self.down_proj
    if (type(gate) is nn.Linear and isinstance(x, torch.Tensor) and x.dtype in FLOAT_DTYPES
            and kernel_device_ok(x) and not _autocast_on(x)
            and all(t is None or (t.dtype == x.dtype and t.device == x.device)
                    for t in (gate.weight, gate.bias, getattr(up, "weight", None),
                              getattr(down, "weight", None)))):
        return down(linear(x, gate.weight, gate.bias, activation="silu") * up(x))
    return type(self).forward(self, x)


_mlp_forward.__name__ = "forward"


def _is_patched_mlp(m: nn.Module) -> bool:
    fwd = m.__dict__.get("forward")
    return getattr(fwd, "__func__", None) is _mlp_forward


# ---------------------------------------------------------------------------------------------- probes

def _probe_input(n: int, like: torch.Tensor, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(0x7F1F)
    x = torch.randn(_PROBE_ROWS, n, generator=g) * scale + shift
    return x.to(device=like.device, dtype=like.dtype)


def _close(out, ref: torch.Tensor, dtype: torch.dtype) -> bool:
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        return False
    tol = 8 * torch.finfo(dtype).eps * max(1.0, float(ref.abs().max()))
    return bool(torch.isfinite(out).all()) and float((out.double() - ref.double()).abs().max()) <= tol


def _eps_of(m: nn.Module):
    """(found, eps): HF's `variance_epsilon`, else torch's `eps` (None allowed: the compute type's machine
    epsilon, as trifuse.rms_norm resolves it)."""
    for attr in ("variance_epsilon", "eps"):
        if hasattr(m, attr):
            eps = getattr(m, attr)
            if eps is None and attr == "eps":
                return True, None
            real = isinstance(eps, numbers.Real) and not isinstance(eps, bool)
            if real and math.isfinite(eps) and eps >= 0:
                return True, float(eps)
            return False, None
    return False, None


def _rms_norm_reason(m: nn.Module) -> tuple[str | None, float | None, float]:
    """(why it cannot be patched or None, eps, weight offset: 0.0 for rms_norm(x) * weight, 1.0 for
    rms_norm(x) * (1 + weight))."""
    w = m._parameters.get("weight")
    if not isinstance(w, nn.Parameter) or w.dim() != 1:
        return "no 1-D weight Parameter", None, 0.0
    if w.dtype not in FLOAT_DTYPES:
        return f"weight dtype {w.dtype} is not supported", None, 0.0
    extra = [n for n, _ in m.named_parameters() if n != "weight"] + [n for n, _ in m.named_buffers()]
    if extra:
        return f"parameters or buffers besides weight ({', '.join(extra)}): the kernel would drop them", None, 0.0
    found, eps = _eps_of(m)
    if not found:
        return "no float epsilon in variance_epsilon or eps", None, 0.0
    if w.device.type == "meta":
        return None, eps, 1.0 if any(n in type(m).__name__ for n in _ZERO_CENTRED_NAMES) else 0.0
    # Probed in fp32 on a copy (a 16-bit probe's tolerance would pass a 4% difference), at two scales: one
    # where eps is negligible and one where it is not (eps inside or outside the square root).
    try:
        probe, dtype = copy.deepcopy(m).float(), torch.float32
    except Exception:  # noqa: BLE001 - a module that does not copy: probe it as it is
        probe, dtype = m, w.dtype
    wp = probe.weight
    offsets = (0.0, 1.0)  # the weight offsets every probe so far agrees with
    for scale in (2.0, math.sqrt(eps if eps else torch.finfo(torch.float32).eps)):
        x = _probe_input(w.shape[0], wp, scale, 0.25 * scale)
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                out = probe.forward(x)
        except Exception as e:  # noqa: BLE001 - e.g. a forward that takes more arguments: not a plain RMSNorm
            return f"forward(x) raised {type(e).__name__} on a probe input", None, 0.0
        with torch.no_grad():
            offsets = tuple(off for off in offsets
                            if _close(out, F.rms_norm(x.float(), (w.shape[0],), wp.float() + off, eps), dtype))
        if not offsets:
            return ("forward computes neither rms_norm(x) * weight nor rms_norm(x) * (1 + weight) on a probe "
                    "input"), None, 0.0
    return None, eps, offsets[0]


def _is_silu(act) -> bool:
    if isinstance(act, nn.SiLU) or type(act).__name__ in _SILU_CLASS_NAMES:
        return True
    if not callable(act):
        return False
    t = torch.linspace(-8.0, 8.0, 257)
    try:
        with torch.no_grad():
            out = act(t.clone())
    except Exception:  # noqa: BLE001 - an arbitrary callable: anything it raises means "not SiLU"
        return False
    return _close(out, F.silu(t), torch.float32)


def _mlp_reason(m: nn.Module) -> str | None:
    gate, up, down = m.gate_proj, m.up_proj, m.down_proj
    act = getattr(m, "act_fn", None)
    if act is None:
        return "no act_fn"
    other = [n for n in m._modules if n not in ("gate_proj", "up_proj", "down_proj", "act_fn")]
    if other:  # dropout, adapters, norms: the patched forward would skip them
        return f"child modules besides the projections and act_fn ({', '.join(other)})"
    if type(gate) is not nn.Linear:
        return f"gate_proj is a {type(gate).__name__}, not a plain nn.Linear"
    w = gate.weight
    if w.dtype not in FLOAT_DTYPES:
        return f"gate_proj weight dtype {w.dtype} is not supported"
    if up.in_features != gate.in_features or up.out_features != gate.out_features \
            or down.in_features != gate.out_features:
        return "gate_proj / up_proj / down_proj shapes do not chain"
    if w.device.type == "meta":
        return None if isinstance(act, nn.SiLU) or type(act).__name__ in _SILU_CLASS_NAMES \
            else f"act_fn {type(act).__name__} is not SiLU"
    if not _is_silu(act):
        return f"act_fn {type(act).__name__} is not SiLU"
    x = _probe_input(gate.in_features, w)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = m.forward(x)
    except Exception as e:  # noqa: BLE001 - e.g. a forward that takes more arguments (routing, adapters)
        return f"forward(x) raised {type(e).__name__} on a probe input"
    with torch.no_grad():
        ref = down(F.silu(gate(x)) * up(x))
    if not _close(out, ref, w.dtype):
        return "forward does not compute down_proj(silu(gate_proj(x)) * up_proj(x)) on a probe input"
    return None


# ------------------------------------------------------------------------------------------ builders

def _make_rms_norm(m: nn.Module, eps, weight_offset: float) -> PatchedRMSNorm:
    w = m.weight
    new = PatchedRMSNorm(w.shape[0], eps=eps, device="meta", dtype=w.dtype)
    new.weight = w  # the same Parameter object: no copy
    if weight_offset:
        new.weight_offset = weight_offset
    # Not a registered submodule (state_dict keys stay as they were); it shares the weight Parameter, which
    # .to() / .half() convert in place.
    object.__setattr__(new, "_orig_module", m)
    new.train(m.training)
    return new


def _make_layer_norm(m: nn.LayerNorm) -> PatchedLayerNorm:
    has_bias = m.bias is not None
    like = m.weight if m.weight is not None else m.bias
    new = PatchedLayerNorm(m.normalized_shape, eps=m.eps, elementwise_affine=m.elementwise_affine,
                           bias=has_bias, device="meta",
                           dtype=like.dtype if like is not None else None)
    new.weight = m.weight  # the same Parameter objects (or None)
    new.bias = m.bias
    new.train(m.training)
    return new


# ------------------------------------------------------------------------------------------------ API

def patch_model(model: nn.Module, *, rms_norm: bool = True, layer_norm: bool = True,
                mlp: bool = True) -> dict[str, int]:
    """Patch `model` in place (see the module docstring for exactly what) and return the counts:
    {"rms_norm", "rms_norm_skipped", "layer_norm", "layer_norm_skipped", "mlp", "mlp_skipped"}.

    A module referenced from several places is replaced everywhere by one new module. Parameters are
    shared, never copied: an optimizer built before patching keeps working, and state_dicts load both
    ways between patched and unpatched models.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"trifuse.patch_model: model must be a torch.nn.Module, got {type(model).__name__}")
    rms_norm, layer_norm, mlp = (check_bool("patch_model", arg, v) for arg, v in
                                 (("rms_norm", rms_norm), ("layer_norm", layer_norm), ("mlp", mlp)))
    counts = dict.fromkeys(("rms_norm", "rms_norm_skipped", "layer_norm", "layer_norm_skipped", "mlp",
                            "mlp_skipped"), 0)

    def skip(kind: str, path: str, m: nn.Module, reason: str) -> None:
        counts[f"{kind}_skipped"] += 1
        _log.info("trifuse.patch_model: not patching %s (%s): %s", path or "<root>", type(m).__name__, reason)

    # Decide once per module object (shared modules appear under several paths).
    replacement: dict[int, nn.Module] = {}
    decided: set[int] = set()
    for path, m in model.named_modules():
        if id(m) in decided:
            continue
        decided.add(id(m))
        if rms_norm and type(m).__name__.endswith("RMSNorm") and not isinstance(m, _tnn.RMSNorm):
            reason, eps, offset = _rms_norm_reason(m)
            if reason is None and m is model:
                reason = "the root module has no parent to be replaced on"
            if reason is not None:
                skip("rms_norm", path, m, reason)
            else:
                replacement[id(m)] = _make_rms_norm(m, eps, offset)
                counts["rms_norm"] += 1
        elif layer_norm and isinstance(m, nn.LayerNorm) and not isinstance(m, _tnn.LayerNorm):
            if type(m) is not nn.LayerNorm:
                skip("layer_norm", path, m, "a subclass of nn.LayerNorm (its forward may differ)")
            elif m is model:
                skip("layer_norm", path, m, "the root module has no parent to be replaced on")
            else:
                replacement[id(m)] = _make_layer_norm(m)
                counts["layer_norm"] += 1
        elif mlp and all(isinstance(getattr(m, c, None), nn.Linear) for c in ("gate_proj", "up_proj",
                                                                              "down_proj")):
            if _is_patched_mlp(m):
                continue
            reason = _mlp_reason(m)
            if reason is not None:
                skip("mlp", path, m, reason)
            else:
                m.forward = types.MethodType(_mlp_forward, m)
                counts["mlp"] += 1

    if replacement:
        # Every (parent, child name) edge, duplicates included, so shared norms are replaced everywhere.
        for parent in list(model.modules()):
            for name, child in list(parent._modules.items()):
                if child is not None and id(child) in replacement:
                    setattr(parent, name, replacement[id(child)])
    return counts
