"""``shard_writer``: the objects ``convert`` encodes itself are byte-identical to the ones zarr
writes for the same array, whether returned as bytes or written straight to a file, and the
plane counts it returns are those of the in-bounds data."""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from helpers import DTYPES, weight_like
from zarr.codecs import ShardingCodec, ZstdCodec
from zarr.storage import MemoryStore

from wcodec_zarr import WCodec
from wcodec_zarr.checkpoint.shard_writer import (
    direct_layout,
    encode_object,
    object_key,
    write_object,
)
from wcodec_zarr.codec.dtypes import dtype_code
from wcodec_zarr.codec.native import core

LAYOUTS = [
    # shape, chunks, shards: partial last shards with inner chunks wholly past the edge,
    # several dimensions split (Morton order), unsharded edge chunks, 1-D
    ((100, 48), (16, 48), (48, 48)),
    ((10, 7), (3, 7), (9, 7)),
    ((37,), (5,), (20,)),
    ((6, 9, 5), (2, 4, 5), (4, 8, 5)),
    ((30, 20), (30, 20), None),
    ((33, 20), (8, 20), None),
]


def _array(
    shape: Any, chunks: Any, shards: Any, dtype: np.dtype[Any], fill_value: Any = 0
) -> zarr.Array[Any]:
    return zarr.create_array(
        MemoryStore(),
        shape=shape,
        chunks=chunks,
        shards=shards,
        dtype=dtype,
        serializer=WCodec(),
        compressors=None,
        fill_value=fill_value,
        config={"write_empty_chunks": True},
    )


def _blocks(shape: tuple[int, ...], block: tuple[int, ...]) -> list[tuple[tuple[int, int], ...]]:
    ranges = [range(-(-s // b)) for s, b in zip(shape, block, strict=True)]
    return [
        tuple((i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block, shape, strict=True))
        for index in itertools.product(*ranges)
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("shape", "chunks", "shards"), LAYOUTS)
def test_objects_equal_zarrs_own(
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    shards: tuple[int, ...] | None,
    dtype: np.dtype[Any],
    tmp_path: Path,
) -> None:
    _check_objects(_array(shape, chunks, shards, dtype), dtype, tmp_path)


@pytest.mark.parametrize("dtype", [np.dtype(np.int8), np.dtype(np.float32)], ids=str)
def test_padding_with_another_fill_value(dtype: np.dtype[Any], tmp_path: Path) -> None:
    _check_objects(_array((100, 48), (16, 48), (48, 48), dtype, fill_value=3), dtype, tmp_path)


def _check_objects(array: zarr.Array[Any], dtype: np.dtype[Any], folder: Path) -> None:
    shape = array.shape
    data = weight_like(np.random.default_rng(1), shape, dtype)
    array[...] = data
    layout = direct_layout(array.metadata)  # type: ignore[arg-type]
    assert layout is not None
    store = array.store_path.store
    for region in _blocks(shape, layout.block):
        part = data[tuple(slice(a, b) for a, b in region)]
        counts = layout.plane_counts()
        encoded = encode_object(layout, part, counts)
        key = object_key(layout, region)
        assert encoded == store._store_dict[key].to_bytes(), key  # type: ignore[attr-defined]
        # written to a file (its folder made on the way): the same bytes and counts
        path = str(folder / "objects" / key)
        file_counts = layout.plane_counts()
        assert write_object(layout, part, path, file_counts) == len(encoded)
        assert Path(path).read_bytes() == encoded, key
        assert (file_counts == counts).all()
        # the counts are those of the region's own bytes, padding excluded
        flat = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
        bits = np.asarray(core.plane_entropy(flat, dtype_code(dtype)))
        total = counts.sum(axis=1)
        assert (total == part.size).all()
        p = np.where(counts > 0, counts / part.size, 1.0)
        assert np.allclose(-(p * np.log2(p)).sum(axis=1), bits)


def test_other_codecs_go_through_zarr() -> None:
    zstd = zarr.create_array(MemoryStore(), shape=(8, 8), chunks=(4, 8), dtype="int8")
    start = zarr.create_array(
        MemoryStore(),
        shape=(8, 8),
        dtype="int8",
        chunks=(8, 8),
        serializer=ShardingCodec(chunk_shape=(4, 8), codecs=[WCodec()], index_location="start"),
        compressors=None,
    )
    compressed = zarr.create_array(
        MemoryStore(),
        shape=(8, 8),
        chunks=(4, 8),
        dtype="int8",
        serializer=WCodec(),
        compressors=ZstdCodec(),
    )
    for array in (zstd, start, compressed):
        assert direct_layout(array.metadata) is None  # type: ignore[arg-type]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
@pytest.mark.parametrize("shards", [(48, 48), None], ids=["sharded", "unsharded"])
def test_a_failed_write_names_the_file(shards: tuple[int, int] | None) -> None:
    array = _array((100, 48), (16, 48), shards, np.dtype(np.int8))
    layout = direct_layout(array.metadata)  # type: ignore[arg-type]
    assert layout is not None
    data = weight_like(np.random.default_rng(2), layout.block, np.dtype(np.int8))
    with pytest.raises(OSError, match="/dev/full") as caught:
        write_object(layout, data, "/dev/full")
    assert caught.value.errno == errno.ENOSPC
