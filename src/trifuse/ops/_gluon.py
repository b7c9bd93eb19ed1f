"""Host side of the Gluon (warp-specialized, sm_90) kernels: the triton release they need and their tensor
descriptors."""
from __future__ import annotations

import functools

import torch
import triton

# The Gluon kernels are written against triton 3.6's API (list-of-(function, args) warp_specialize, host
# TensorDescriptor); older releases (>= 3.2 is allowed) keep the Triton kernels.
GLUON_API = tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 6)


@functools.cache
def nvmma_layout(block: tuple[int, ...], dtype: torch.dtype):
    """The default 16-bit NVMMA shared layout for [block] tiles."""
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout.get_default_for(list(block), gl.bfloat16 if dtype == torch.bfloat16 else gl.float16)


def descriptor(t: torch.Tensor, block, *, shape=None, strides=None, layout=None):
    """A host tensor descriptor for [block] tiles of t (of t seen with `shape` and `strides` when given),
    with nvmma_layout unless `layout` is given. Built without the dataclass's own checks (~100 us of Python
    a descriptor on a slow host, several a call): the callers have checked the alignment they check."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    desc = object.__new__(TensorDescriptor)
    desc.base, desc.padding = t, "zero"
    desc.shape = list(t.shape) if shape is None else list(shape)
    desc.strides = list(t.stride()) if strides is None else list(strides)
    desc.block_shape = list(block)
    desc.layout = nvmma_layout(tuple(block), t.dtype) if layout is None else layout
    return desc
