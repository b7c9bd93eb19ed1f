"""Which GELU cuBLASLt's fused epilogue (torch._addmm_activation(use_gelu=True)) computes: its fp32 output against
F.gelu exact (erf) and tanh-approximated on the same pre-activations. GPU only: python3 scripts/cublaslt_gelu_form.py"""
import torch
import torch.nn.functional as F

torch.manual_seed(0)
x = torch.randn(512, 256, device="cuda")
w = torch.randn(384, 256, device="cuda") / 256 ** 0.5 * 1.5
b = torch.randn(384, device="cuda")
torch.backends.cuda.matmul.allow_tf32 = False
pre = torch.addmm(b, x, w.t())
lt = torch._addmm_activation(b, x, w.t(), use_gelu=True)
for name, ref in (("erf", F.gelu(pre)), ("tanh", F.gelu(pre, approximate="tanh"))):
    print(f"cuBLASLt GELU vs {name} GELU (fp32): max abs diff {(lt - ref).abs().max().item():.3e}")
print("erf vs tanh:", (F.gelu(pre) - F.gelu(pre, approximate="tanh")).abs().max().item(), "pre range", pre.min().item(), pre.max().item())
