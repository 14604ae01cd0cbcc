"""The Zarr GPU read path (marker ``gpu``; skipped without a GPU): with
``zarr.config.enable_gpu()``, wcodec chunks decode on the GPU into CuPy arrays, bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from helpers import weight_like
from zarr.storage import MemoryStore
from zarr_helpers import wcodec_array

import wcodec_zarr  # noqa: F401  registers the codec pipeline

pytestmark = pytest.mark.gpu


# zarr warns that MemoryStore's host buffers are copied into its GPU buffers
@pytest.mark.filterwarnings("ignore:Creating a zarr.buffer.gpu.Buffer:UserWarning")
def test_zarr_gpu_read_path() -> None:
    import cupy as cp

    data = weight_like(np.random.default_rng(4), (256, 512), np.dtype(np.float16))
    z = wcodec_array(MemoryStore(), data, chunks=(64, 128), shards=(128, 512))
    with zarr.config.enable_gpu(), zarr.config.set({"codec_pipeline.batch_size": 8}):
        got = zarr.open_array(z.store, mode="r")[:]
        assert isinstance(got, cp.ndarray)
        assert cp.asnumpy(got).tobytes() == data.tobytes()
