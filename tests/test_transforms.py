"""torch.func.vmap and forward-mode AD over the public ops: vmap runs (through the registered ops), and a
dual input is refused with a clear error instead of its tangent being dropped."""
import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

import trifuse

OPS = {
    "softmax": (lambda x: trifuse.softmax(x, -1), lambda x: torch.softmax(x, -1)),
    "log_softmax": (lambda x: trifuse.log_softmax(x, -1), lambda x: torch.log_softmax(x, -1)),
    "layer_norm": (lambda x: trifuse.layer_norm(x), lambda x: F.layer_norm(x, x.shape[-1:])),
    "rms_norm": (lambda x: trifuse.rms_norm(x), lambda x: F.rms_norm(x, x.shape[-1:], eps=1e-6)),
    "gemm": (lambda x: trifuse.gemm(x, torch.ones(x.shape[-1], 5, device=x.device) / 4, activation="silu"),
             lambda x: F.silu(x @ (torch.ones(x.shape[-1], 5, device=x.device) / 4))),
}


@pytest.mark.parametrize("op", OPS)
def test_vmap_matches_torch(device, op):
    ours, ref = OPS[op]
    x = torch.randn(3, 4, 16, device=device)
    torch.testing.assert_close(torch.func.vmap(ours)(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_forward_mode_ad_is_a_clear_error(device, op, requires_grad):
    ours, _ = OPS[op]
    with fwAD.dual_level():
        x = fwAD.make_dual(torch.randn(4, 16, device=device, requires_grad=requires_grad),
                           torch.randn(4, 16, device=device))
        with pytest.raises(NotImplementedError):
            ours(x)
