"""Tiny stand-ins mirroring Hugging Face's Llama/Gemma module classes, for tests/test_patch.py."""
import torch
from torch import nn

HIDDEN, INTER = 48, 80



class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class GemmaRMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float())
        output = output * (1.0 + self.weight.float())
        return output.type_as(x)


class ZeroCenteredRMSNorm(GemmaRMSNorm):
    """(1 + weight) without "Gemma" in the name (as Qwen3-Next's): only the probe can tell."""


class LlamaMLP(nn.Module):
    def __init__(self, hidden_size, intermediate_size, bias=False, act_fn=None):
        super().__init__()
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)
        self.act_fn = nn.SiLU() if act_fn is None else act_fn

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class SwappedMLP(LlamaMLP):
    """Activation on the up projection: same structure, different function."""

    def forward(self, x):
        return self.down_proj(self.gate_proj(x) * self.act_fn(self.up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, hidden, inter, mlp_bias=False):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(hidden)
        self.self_attn = nn.Linear(hidden, hidden)  # stands in for attention
        self.post_attention_layernorm = LlamaRMSNorm(hidden, eps=1e-5)
        self.mlp = LlamaMLP(hidden, inter, bias=mlp_bias)
        self.out_ln = nn.LayerNorm(hidden)

    def forward(self, x):
        h = x + self.self_attn(self.input_layernorm(x))
        h = h + self.mlp(self.post_attention_layernorm(h))
        return self.out_ln(h)


class TinyModel(nn.Module):
    def __init__(self, hidden=HIDDEN, inter=INTER, layers=2, mlp_bias=False):
        super().__init__()
        self.layers = nn.ModuleList([DecoderLayer(hidden, inter, mlp_bias) for _ in range(layers)])
        self.norm = LlamaRMSNorm(hidden)
        self.gemma_norm = GemmaRMSNorm(hidden)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(self.gemma_norm(self.norm(x)))
