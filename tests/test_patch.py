"""trifuse.patch.patch_model on whole models: HF-style stand-ins patched in place, numerics against the
unpatched model, parameters, state_dicts, fallbacks, flags (test_patch_rules.py: which modules are taken)."""
import copy

import pytest
import torch
from torch import nn

import trifuse.nn
from helpers import assert_close_to_ref
from hf_standins import HIDDEN, INTER, LlamaMLP, LlamaRMSNorm, TinyModel
from patch_cases import EXPECTED, FLOOR, check_matches, randomize, tiny
from trifuse.patch import PatchedLayerNorm, PatchedRMSNorm, patch_model


def test_tiny_decoder_matches_unpatched(device):
    model = tiny(device)
    x = torch.randn(2, 5, HIDDEN, device=device) * 2 + 0.5
    patched, counts = check_matches(model, x)
    assert counts == EXPECTED
    for layer in patched.layers:
        assert type(layer.input_layernorm) is PatchedRMSNorm
        assert isinstance(layer.input_layernorm, trifuse.nn.RMSNorm)
        assert layer.post_attention_layernorm.eps == 1e-5
        assert type(layer.out_ln) is PatchedLayerNorm
        assert type(layer.mlp) is LlamaMLP  # the MLP object stays; only its forward is rebound
        assert type(layer.self_attn) is nn.Linear
    assert type(patched.gemma_norm) is PatchedRMSNorm and patched.gemma_norm.weight_offset == 1.0
    assert patched.norm.weight_offset == 0.0


def test_kernel_paths_are_taken(device, monkeypatch):
    import trifuse.functional.gemm as gemm_mod
    import trifuse.functional.norm as norm_mod

    calls = {"rms_norm": 0, "layer_norm": 0, "linear": 0}

    def counting(mod, name):
        fn = getattr(mod, name)

        def wrapper(*args, **kw):
            calls[name] += 1
            return fn(*args, **kw)
        monkeypatch.setattr(mod, name, wrapper)

    counting(norm_mod, "rms_norm")
    counting(norm_mod, "layer_norm")
    counting(gemm_mod, "linear")
    model = tiny(device)
    patch_model(model)
    model(torch.randn(3, HIDDEN, device=device))
    assert calls == {"rms_norm": 6, "layer_norm": 2, "linear": 2}


def test_mlp_with_biases_matches(device):
    model = tiny(device, mlp_bias=True, layers=1)
    x = torch.randn(7, HIDDEN, device=device)
    _, counts = check_matches(model, x)
    assert counts["mlp"] == 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_rms_norm(device, dtype):
    # Same-dtype weight: the kernel path, which rounds once where HF's formula rounds twice.
    norm = randomize(LlamaRMSNorm(HIDDEN)).to(device, dtype)
    model = nn.Sequential(norm, nn.LayerNorm(HIDDEN, device=device, dtype=dtype))
    randomize(model)
    x = (torch.randn(9, HIDDEN, device=device) * 2 + 0.5).to(dtype)
    patched, counts = check_matches(model, x)
    assert counts["rms_norm"] == 1 and counts["layer_norm"] == 1
    assert patched(x).dtype == dtype


def test_parameters_shared_and_state_dict_round_trips(device):
    model = tiny(device)
    model.layers[1].input_layernorm.weight = model.layers[0].input_layernorm.weight  # tied
    before = dict(model.named_parameters())
    keys = list(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    unpatched = copy.deepcopy(model)
    counts = patch_model(model)
    assert counts == EXPECTED
    after = dict(model.named_parameters())
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert model.layers[1].input_layernorm.weight is model.layers[0].input_layernorm.weight
    assert list(model.state_dict()) == keys
    # an optimizer built before patching steps the patched model's parameters
    x = torch.randn(4, HIDDEN, device=device)
    model(x).square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    opt.step()
    assert not torch.equal(model.layers[0].out_ln.weight, unpatched.layers[0].out_ln.weight)
    # state_dicts load both ways, strictly, and give the same function
    fresh = TinyModel().to(device)
    fresh.load_state_dict(model.state_dict())
    repatched = copy.deepcopy(unpatched)
    patch_model(repatched)
    repatched.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert_close_to_ref(repatched(x), fresh(x).double(), floor=1e-4)


def test_shared_module_replaced_everywhere(device):
    model = tiny(device)
    model.layers[1].out_ln = model.layers[0].out_ln
    model.layers[1].mlp = model.layers[0].mlp
    counts = patch_model(model)
    assert counts["layer_norm"] == 1 and counts["mlp"] == 1
    assert type(model.layers[1].out_ln) is PatchedLayerNorm
    assert model.layers[1].out_ln is model.layers[0].out_ln


def test_flags_and_idempotence(device):
    model = tiny(device)
    counts = patch_model(model, rms_norm=False, mlp=False)
    assert counts == {**dict.fromkeys(EXPECTED, 0), "layer_norm": 2}
    assert type(model.norm) is LlamaRMSNorm and "forward" not in vars(model.layers[0].mlp)
    counts = patch_model(model)
    assert counts == {**EXPECTED, "layer_norm": 0}
    counts = patch_model(model)  # already patched: nothing new
    assert counts == dict.fromkeys(EXPECTED, 0)


def test_fallbacks_keep_original_numerics(device):
    # Mixed dtypes: HF's Llama RMSNorm promotes to the weight's fp32; the patched module must too.
    norm = randomize(LlamaRMSNorm(HIDDEN)).to(device)
    model = nn.Sequential(norm)
    ref = copy.deepcopy(model)
    patch_model(model)
    x = torch.randn(6, HIDDEN, device=device).to(torch.bfloat16)
    out = model(x)
    assert out.dtype == torch.float32 and torch.equal(out, ref(x))
    # Autocast: the MLP and a non-fp32 LayerNorm input take the original eager path.
    block = nn.ModuleDict({"mlp": LlamaMLP(HIDDEN, INTER), "ln": nn.LayerNorm(HIDDEN)}).to(device)
    randomize(block)
    ref = copy.deepcopy(block)
    patch_model(block)
    x = torch.randn(6, HIDDEN, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        assert torch.equal(block["mlp"](x), ref["mlp"](x))
        xb = x.to(torch.bfloat16)
        a, b = block["ln"](xb), ref["ln"](xb)
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_replaced_gate_proj_falls_back(device):
    # A later wrapper (as LoRA does) on gate_proj: the patched forward must call it, not read .weight.
    class LowRank(nn.Module):
        def __init__(self, base):
            super().__init__()
            self.base = base
            self.a = nn.Linear(base.in_features, 4, bias=False)
            self.b = nn.Linear(4, base.out_features, bias=False)

        def forward(self, x):
            return self.base(x) + self.b(self.a(x))

    mlp = randomize(LlamaMLP(HIDDEN, INTER)).to(device)
    ref = copy.deepcopy(mlp)
    assert patch_model(mlp)["mlp"] == 1
    mlp.gate_proj = LowRank(mlp.gate_proj).to(device)
    ref.gate_proj = copy.deepcopy(mlp.gate_proj)
    x = torch.randn(3, HIDDEN, device=device)
    assert torch.equal(mlp(x), ref(x))


def test_meta_device_then_load(device):
    with torch.device("meta"):
        model = TinyModel()
    counts = patch_model(model)  # no probes on meta: names and structure decide
    assert counts == EXPECTED
    model.to_empty(device=device)
    src = tiny(device)
    model.load_state_dict(src.state_dict())
    x = torch.randn(3, HIDDEN, device=device)
    ref = copy.deepcopy(src).double()
    with torch.no_grad():
        assert_close_to_ref(model(x), ref(x.double()), src(x), floor=FLOOR[torch.float32])


def test_deepcopy_keeps_patch(device):
    model = tiny(device)
    patch_model(model)
    clone = copy.deepcopy(model)
    assert clone.layers[0].mlp.forward.__self__ is clone.layers[0].mlp
    assert clone.layers[0].out_ln.weight is not model.layers[0].out_ln.weight
    x = torch.randn(3, HIDDEN, device=device)
    with torch.no_grad():
        assert torch.equal(clone(x), model(x))


@pytest.mark.parametrize("bad", [None, "model", {"a": nn.Linear(2, 2)}, [nn.LayerNorm(4)], nn.Linear])
def test_rejects_non_module(bad):
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        patch_model(bad)


def test_rejects_non_bool_flags():
    with pytest.raises(TypeError, match="mlp must be a bool"):
        patch_model(nn.Linear(2, 2), mlp=1)
    with pytest.raises(TypeError, match="trifuse.patch_model: rms_norm must be a bool, got str"):
        patch_model(nn.Linear(2, 2), rms_norm="no")


# -------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
def test_hf_llama_bf16(device):
    pytest.importorskip("transformers")
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=688, vocab_size=1000, max_position_embeddings=256)
    ref = randomize(LlamaForCausalLM(cfg)).to(device)  # fp32 reference
    base = copy.deepcopy(ref).to(torch.bfloat16)
    patched = copy.deepcopy(base)
    counts = patch_model(patched)
    assert counts == {"rms_norm": 5, "rms_norm_skipped": 0, "layer_norm": 0, "layer_norm_skipped": 0,
                      "mlp": 2, "mlp_skipped": 0}
    assert list(patched.state_dict()) == list(base.state_dict())
    ids = torch.randint(0, cfg.vocab_size, (2, 64), device=device)
    dlogits = None
    logits, grads = [], []
    for m in (patched, base, ref):
        out = m(input_ids=ids, use_cache=False).logits.float()
        dlogits = torch.randn_like(out) if dlogits is None else dlogits
        (out * dlogits).sum().backward()
        logits.append(out.detach())
        grads.append({k: p.grad for k, p in m.named_parameters()})
    floor = FLOOR[torch.bfloat16]
    assert_close_to_ref(logits[0], logits[2], logits[1], floor=floor, what="logits")
    for k in grads[2]:
        assert_close_to_ref(grads[0][k], grads[2][k], grads[1][k], floor=floor, what=f"d{k}")

    torch._dynamo.reset()
    compiled = torch.compile(patched, fullgraph=False)
    patched.zero_grad(set_to_none=True)
    out = compiled(input_ids=ids, use_cache=False).logits.float()
    (out * dlogits).sum().backward()
    assert_close_to_ref(out.detach(), logits[2], logits[1], floor=floor, what="compiled logits")
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in patched.parameters())
