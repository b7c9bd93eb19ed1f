"""Shared-memory mbarrier arrays for the Gluon (warp-specialized, sm_90) kernels."""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier


@gluon.jit
def mbarriers(n: gl.constexpr, count: gl.constexpr):
    """n mbarriers ([n, 1]: `.index(i)` is barrier i), each completing a phase after `count` arrivals."""
    bars = gl.allocate_shared_memory(gl.int64, [n, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(n):
        mbarrier.init(bars.index(i), count=count)
    return bars
