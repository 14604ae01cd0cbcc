"""Dask: wcodec arrays read and written by a distributed LocalCluster of 2 worker processes
(which unpickle the arrays and their codecs), bit-exact."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import tree_bytes, weight_like
from safetensors_helpers import synthetic_tensors, write_raw
from zarr.storage import LocalStore
from zarr_helpers import wcodec_array

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as dask_client,
    ):
        yield dask_client


def test_from_zarr_by_shards(client: Any, tmp_path: Path) -> None:
    data = weight_like(np.random.default_rng(0), (512, 384), np.dtype(np.int8))
    wcodec_array(LocalStore(tmp_path), data, chunks=(64, 128), shards=(256, 384))
    arr = da.from_zarr(zarr.open_array(LocalStore(tmp_path), mode="r"), chunks=(256, 384))
    assert arr.numblocks == (2, 1)
    assert arr.compute().tobytes() == data.tobytes()
    assert int(arr.astype(np.int64).sum().compute()) == int(data.astype(np.int64).sum())


def test_to_zarr_with_wcodec_serializer(client: Any, tmp_path: Path) -> None:
    data = weight_like(np.random.default_rng(1), (400, 300), np.dtype(np.float16))
    z = wcodec_array(LocalStore(tmp_path), data, write=False, chunks=(100, 100), shards=(200, 300))
    da.from_array(data, chunks=(200, 300)).to_zarr(z, compute=True)
    assert zarr.open_array(LocalStore(tmp_path), mode="r")[:].tobytes() == data.tobytes()


def test_convert_and_verify_on_the_cluster_match_serial(client: Any, tmp_path: Path) -> None:
    """Each shard of each tensor is one Dask task; the checkpoint is byte-identical to the one
    converted in this process but for the generation each convert draws (and the root
    document's checksum over it)."""
    import wcodec_zarr as wc

    src = tmp_path / "m.safetensors"
    write_raw(src, synthetic_tensors(np.random.default_rng(2)))
    layout = {"chunk_bytes": 4096, "shard_bytes": 16384, "progress": False}
    serial = wc.convert(src, tmp_path / "serial", **layout)
    dask = wc.convert(src, tmp_path / "dask", workers=client, **layout)
    trees = [tree_bytes(tmp_path / name) for name in ("serial", "dask")]
    roots = [json.loads(tree.pop("zarr.json")) for tree in trees]
    assert trees[0] == trees[1]  # every chunk, shard and array document
    for root, manifest in zip(roots, (serial, dask), strict=True):
        assert root["attributes"]["wcodec_checkpoint"] == manifest
        del manifest["generation"], manifest["checksum"]
    assert serial == dask
    assert roots[0]["consolidated_metadata"] == roots[1]["consolidated_metadata"]
    assert wc.verify(src, tmp_path / "dask", workers=client).ok
