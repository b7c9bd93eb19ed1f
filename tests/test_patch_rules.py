"""trifuse.patch.patch_model's recognition rules: which norms and MLPs it takes (by name, structure and
probe, also on the meta device) and which it skips, and the original module behind a patched one."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_standins import HIDDEN, INTER, GemmaRMSNorm, LlamaMLP, LlamaRMSNorm, SwappedMLP, ZeroCenteredRMSNorm
from patch_cases import check_matches, randomize
from trifuse.patch import PatchedRMSNorm, patch_model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls", [GemmaRMSNorm, ZeroCenteredRMSNorm])
def test_zero_centered_rms_norm(device, cls, dtype):
    # rms_norm(x) * (1 + weight) in fp32, one rounding: Gemma by name and probe, Qwen3-Next's by probe alone.
    norm = cls(HIDDEN, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(HIDDEN) * 0.3)  # around 0: the scale is 1 + weight
    model = nn.Sequential(norm.to(device, dtype))
    x = (torch.randn(9, HIDDEN, device=device) * 2 + 0.5).to(dtype)
    patched, counts = check_matches(model, x)
    assert counts["rms_norm"] == 1 and counts["rms_norm_skipped"] == 0
    assert type(patched[0]) is PatchedRMSNorm and patched[0].weight_offset == 1.0
    assert patched[0].weight is not None and patched(x).dtype == dtype


def test_torch_norm_modules(device):
    model = nn.Sequential(nn.LayerNorm((4, 8)), nn.RMSNorm(8, eps=None), nn.RMSNorm([4, 8]),
                          nn.LayerNorm(8, bias=False), nn.LayerNorm(8, elementwise_affine=False)).to(device)
    randomize(model)
    x = torch.randn(3, 4, 8, device=device)
    patched, counts = check_matches(model, x)
    assert counts == {"rms_norm": 1, "rms_norm_skipped": 1, "layer_norm": 3, "layer_norm_skipped": 0,
                      "mlp": 0, "mlp_skipped": 0}
    assert [type(m).__name__ for m in patched] == ["PatchedLayerNorm", "PatchedRMSNorm", "RMSNorm",
                                                   "PatchedLayerNorm", "PatchedLayerNorm"]
    assert patched[1].eps is None and patched[3].bias is None and patched[4].weight is None


def test_variants_are_skipped(device):
    class SubLayerNorm(nn.LayerNorm):
        def forward(self, x):
            return super().forward(x) * 2

    class GatedRMSNorm(LlamaRMSNorm):
        def forward(self, x, gate):
            return super().forward(x) * F.silu(gate)

    class HalfScaledRMSNorm(LlamaRMSNorm):
        def forward(self, x):
            return super().forward(x) * 0.5

    model = nn.ModuleDict({
        "gated": GatedRMSNorm(HIDDEN),
        "half_scaled": HalfScaledRMSNorm(HIDDEN),
        "gelu_mlp": LlamaMLP(HIDDEN, INTER, act_fn=nn.GELU(approximate="tanh")),
        "swapped_mlp": SwappedMLP(HIDDEN, INTER),
        "sub_ln": SubLayerNorm(HIDDEN),
        "llama": LlamaRMSNorm(HIDDEN),
        "mlp": LlamaMLP(HIDDEN, INTER),
    }).to(device)
    randomize(model)
    counts = patch_model(model)
    assert counts == {"rms_norm": 1, "rms_norm_skipped": 2, "layer_norm": 0, "layer_norm_skipped": 1,
                      "mlp": 1, "mlp_skipped": 2}
    assert type(model["half_scaled"]) is HalfScaledRMSNorm and type(model["sub_ln"]) is SubLayerNorm
    assert "forward" not in vars(model["swapped_mlp"]) and "forward" in vars(model["mlp"])


def test_root_norm_is_skipped(device):
    norm = LlamaRMSNorm(8).to(device)
    assert patch_model(norm)["rms_norm_skipped"] == 1
    assert patch_model(nn.LayerNorm(8).to(device))["layer_norm_skipped"] == 1


def test_zero_centred_fallback_runs_the_original_module(device):
    # A Gemma norm whose fallback needs its own class's helper (HF's `_norm`): autocast with a 16-bit input
    # and fp64 both take the original module, which shares the weight.
    model = nn.Sequential(randomize(GemmaRMSNorm(HIDDEN)).to(device))
    ref = copy.deepcopy(model)
    assert patch_model(model)["rms_norm"] == 1
    x = torch.randn(3, HIDDEN, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        assert torch.equal(model(x.half()), ref(x.half()))
    model.double()
    ref.double()
    assert torch.equal(model(x.double()), ref(x.double()))


def test_norms_with_other_math_or_parameters_are_skipped(device):
    class BiasRMSNorm(LlamaRMSNorm):  # a bias the kernel would drop, even one that starts at zero
        def __init__(self, n):
            super().__init__(n)
            self.bias = nn.Parameter(torch.zeros(n))

        def forward(self, x):
            return super().forward(x) + self.bias

    class EpsOutsideRMSNorm(LlamaRMSNorm):  # x / (rms(x) + eps): equal to rms_norm only where eps is small
        def forward(self, x):
            return self.weight * x / (x.pow(2).mean(-1, keepdim=True).sqrt() + self.variance_epsilon)

    class ScaledRMSNorm(LlamaRMSNorm):  # 4% off: inside a bf16 probe's tolerance, not an fp32 one's
        def forward(self, x):
            return super().forward(x) * 1.04

    model = nn.ModuleDict({"bias": BiasRMSNorm(HIDDEN), "eps_out": EpsOutsideRMSNorm(HIDDEN),
                           "scaled": ScaledRMSNorm(HIDDEN).to(torch.bfloat16), "llama": LlamaRMSNorm(HIDDEN)})
    model.to(device)
    counts = patch_model(model)
    assert (counts["rms_norm"], counts["rms_norm_skipped"]) == (1, 3)
    assert "bias" in dict(model["bias"].named_parameters())


def test_mlp_with_other_children_is_skipped_and_probes_leave_the_rng_alone(device):
    class DropMLP(LlamaMLP):
        def __init__(self, *a):
            super().__init__(*a)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x):
            return self.down_proj(self.dropout(self.act_fn(self.gate_proj(x)) * self.up_proj(x)))

    model = nn.ModuleDict({"drop": DropMLP(HIDDEN, INTER), "mlp": LlamaMLP(HIDDEN, INTER)}).to(device)
    state = torch.get_rng_state()
    counts = patch_model(model.train())
    assert (counts["mlp"], counts["mlp_skipped"]) == (1, 1)
    assert "forward" not in vars(model["drop"])
    assert torch.equal(torch.get_rng_state(), state)


def test_meta_device_knows_qwen3_next_norms(device):
    class Qwen3NextRMSNorm(ZeroCenteredRMSNorm):
        pass

    with torch.device("meta"):
        model = nn.Sequential(Qwen3NextRMSNorm(HIDDEN))
    patch_model(model)
    assert model[0].weight_offset == 1.0
    model.to_empty(device=device)
    src = nn.Sequential(randomize(Qwen3NextRMSNorm(HIDDEN))).to(device)
    model.load_state_dict(src.state_dict())
    x = torch.randn(3, HIDDEN, device=device)
    with torch.no_grad():
        torch.testing.assert_close(model(x), src(x))
