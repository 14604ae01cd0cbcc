"""xarray opens a checkpoint as a Dataset of its tensors (each axis named ``<tensor>.dim_<i>``),
and a lazy selection, with Dask or without, reads only the chunks it needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors_helpers import synthetic_tensors, write_mixed_model, write_raw
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.storage import LocalStore
from zarr_helpers import CountingStore

import wcodec_zarr as wc

xr = pytest.importorskip("xarray")
pytest.importorskip("dask")


def test_every_tensor_of_every_dtype_opens_bit_exact(tmp_path: Path) -> None:
    tensors = synthetic_tensors(np.random.default_rng(1))
    write_raw(tmp_path / "m.safetensors", tensors, {"format": "pt"})
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    ds = xr.open_zarr(tmp_path / "ckpt")
    assert sorted(ds.data_vars) == sorted(ckpt)
    for name in ckpt:
        variable = ds[name]
        assert variable.dims == tuple(f"{name}.dim_{i}" for i in range(variable.ndim))
        assert variable.dtype == ckpt[name].dtype
        assert variable.values.tobytes() == ckpt[name].numpy().tobytes(), name


@pytest.mark.parametrize("dask", [True, False], ids=["dask", "lazy"])
def test_isel_reads_only_the_chunks_it_needs(tmp_path: Path, dask: bool) -> None:
    arrays = write_mixed_model(tmp_path / "m.safetensors")
    # the 300x256 int8 weights in bands of rows, several to a shard
    wc.convert(
        tmp_path / "m.safetensors",
        tmp_path / "ckpt",
        chunk_bytes=64 * 256,
        shard_bytes=4 * 64 * 256,
        progress=False,
    )
    name = "layers.2.q.weight"
    tensor = wc.open_checkpoint(tmp_path / "ckpt")[name]
    rows = tensor.chunks[0]
    assert tensor.shards is not None and tensor.shards[0] >= 3 * rows
    store = CountingStore(LocalStore(tmp_path / "ckpt", read_only=True))
    ds = xr.open_zarr(store, chunks={} if dask else None)
    store.log.reset()
    # rows inside the second chunk of the first shard
    selection = slice(rows + 2, 2 * rows - 2)
    part = ds[name].isel({f"{name}.dim_0": selection}).values
    assert part.tobytes() == arrays[name][selection].tobytes()
    # the shard's index (a suffix request), then that one chunk's bytes
    assert [key for key, _ in store.log.reads] == [f"{name}/c.0.0"] * 2
    index, chunk = (request for _, request in store.log.reads)
    assert isinstance(index, SuffixByteRequest)
    assert isinstance(chunk, RangeByteRequest)
    assert store.log.bytes_read == index.suffix + chunk.end - chunk.start
