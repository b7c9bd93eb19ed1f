"""Picks the mode before any kernel is imported: compiled on a CUDA GPU, Triton's interpreter otherwise."""
import os
import zlib

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

# Registers every torch.ops.trifuse op, whichever test a worker happens to run first.
import trifuse.library.attention
import trifuse.library.gemm
import trifuse.library.norm
import trifuse.library.softmax  # noqa: F401
from trifuse.runtime import INTERPRET

DEVICE = torch.device("cpu" if INTERPRET else "cuda")


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture(autouse=True)
def _release_gpu_memory():
    # Sixteen workers share one GPU: a test's cached blocks would starve the next launch's local memory
    # (fp32 attention tests failed to launch with "out of memory" beside the long-sequence ones).
    yield
    if not INTERPRET:
        torch.cuda.empty_cache()


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    # Fresh but reproducible data for every test: the seed follows the test's id.
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


def pytest_collection_modifyitems(config, items):
    if not INTERPRET:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU: run by `make gpu-check` on the lent GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
