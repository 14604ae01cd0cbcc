"""Whole objects of a wcodec array encoded here, without zarr's per-chunk write pipeline.

``convert`` writes every tensor one shard (or, unsharded, one chunk) at a time, from a region
that covers that object exactly. zarr would encode each inner chunk through its codec pipeline
and event loop, a fixed cost of milliseconds per array write that outweighs the encoding of a
small tensor. ``encode_object`` produces the same bytes directly, in one native call per object
(``wcodec/shard.h``, the inner chunks encoded in parallel): each inner chunk padded with the
fill value to the chunk shape (inner chunks wholly past the array's edge are not stored),
encoded with the array's ``WCodec`` settings, laid out in Morton order, then the shard index
(``offset, nbytes`` as little-endian uint64 per inner chunk, C order of the chunk grid) and its
CRC32C, as zarr's sharding codec writes them by default. The encoder also counts each byte
plane's symbols, which gives the entropy bound without another pass over the data. For a local
store, ``write_object`` writes the object to its file straight from the encoder's memory.
``tests/checkpoint/test_shard_writer.py`` checks byte equality with zarr's own writes.

Arrays whose codecs differ from that layout (zstd, another index location, ...) return None
from ``direct_layout`` and are written through zarr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.core.chunk_key_encodings import ChunkKeyEncoding
from zarr.core.metadata.v3 import ArrayV3Metadata

from ..codec.chunks import SEGMENT_KIB
from ..codec.dtypes import dtype_code
from ..codec.native import core
from ..zarr.serializer import WCodec
from .layout import morton_order


@dataclass(frozen=True)
class DirectLayout:
    block: tuple[int, ...]  # the shape of one object's region (a shard, or the chunk)
    inner: tuple[int, ...] | None  # inner chunk shape when sharded
    codec: WCodec
    fill_value: np.ndarray  # 0-d, of the array's dtype
    keys: ChunkKeyEncoding  # the array's own, which names each object

    def plane_counts(self) -> np.ndarray:
        """Zeroed per-plane symbol counts (itemsize x 256) for ``encode_object``."""
        return np.zeros((self.fill_value.itemsize, 256), dtype=np.uint64)


def _name(option: Any) -> Any:
    """A codec option's name: zarr 3.1 holds options as enums, later versions as strings."""
    return getattr(option, "value", option)


def direct_layout(metadata: ArrayV3Metadata) -> DirectLayout | None:
    """The layout ``encode_object`` writes for this array, or None when its codecs are not
    exactly ``wcodec`` or ``sharding_indexed(wcodec)`` with the default index."""
    if not metadata.shape or 0 in metadata.shape:
        return None
    block = tuple(metadata.chunk_grid.chunk_shape)  # type: ignore[attr-defined]
    fill = np.asarray(metadata.fill_value, dtype=metadata.dtype.to_native_dtype())
    codecs = metadata.codecs
    keys = metadata.chunk_key_encoding
    if len(codecs) == 1 and isinstance(codecs[0], WCodec):
        return DirectLayout(block, None, codecs[0], fill, keys)
    if len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sharding = codecs[0]
    inner = sharding.codecs
    index = sharding.index_codecs
    if (
        len(inner) != 1
        or not isinstance(inner[0], WCodec)
        or _name(sharding.index_location) != "end"
        or len(index) != 2
        or not isinstance(index[0], BytesCodec)
        or _name(index[0].endian) != "little"
        or not isinstance(index[1], Crc32cCodec)
    ):
        return None
    return DirectLayout(block, tuple(sharding.chunk_shape), inner[0], fill, keys)


def _padded(data: np.ndarray, shape: tuple[int, ...], fill: Any) -> np.ndarray:
    """``data`` as a C-contiguous array of ``shape``, the missing tail filled with ``fill``."""
    if data.shape == shape:
        return np.ascontiguousarray(data)
    out = np.full(shape, fill, dtype=data.dtype)
    out[tuple(slice(0, n) for n in data.shape)] = data
    return out


def _encode(chunk: np.ndarray, codec: WCodec, counts: np.ndarray | None) -> bytes:
    flat = chunk.reshape(-1).view(np.uint8)
    plane_counts = None if counts is None else counts.reshape(-1)
    encoded: bytes = core.encode(
        flat,
        dtype_code(chunk.dtype),
        list(chunk.shape),
        0,
        codec.checksum,
        codec.predict,
        SEGMENT_KIB,
        plane_counts,
    )
    return encoded


def _padding_counts(layout: DirectLayout, padding: int, counts: np.ndarray) -> None:
    """Takes ``padding`` fill elements back out of ``counts`` (their plane bytes are those of
    one fill element, split as the encoder splits planes)."""
    one = layout.plane_counts()
    _encode(layout.fill_value.reshape(1), layout.codec, one)
    counts -= one * np.uint64(padding)


def encode_object(
    layout: DirectLayout, data: np.ndarray, counts: np.ndarray | None = None
) -> bytes:
    """The stored object of one block whose in-bounds part is ``data`` (``data`` starts at the
    block's origin and may be smaller than the block at the array's edge). With ``counts``
    (from ``layout.plane_counts()``), the byte-plane symbol counts of ``data`` (padding
    excluded) are added to it."""
    return b"".join(encode_object_parts(layout, data, counts))


def encode_object_parts(
    layout: DirectLayout, data: np.ndarray, counts: np.ndarray | None = None
) -> list[bytes]:
    """``encode_object`` as the pieces whose concatenation is the object (a store takes them
    without joining them first)."""
    _check_order(data)
    if layout.inner is None:
        block = _padded(data, layout.block, layout.fill_value)
        padding = block.size - data.size
        encoded = _encode(block, layout.codec, counts)
        if counts is not None and padding:
            _padding_counts(layout, padding, counts)
        return [encoded]
    parts, padding = core.encode_shard(*_shard_arguments(layout, layout.inner, data, counts))
    if counts is not None and padding:
        _padding_counts(layout, padding, counts)
    return list(parts)


def write_object(
    layout: DirectLayout, data: np.ndarray, path: str, counts: np.ndarray | None = None
) -> int:
    """``encode_object`` written to a new file at ``path`` (its folder made when missing) and
    returns its size. A shard goes out straight from the encoder's memory, chunk by chunk as it
    is encoded, with no Python objects and no copy (``core.write_shard``); failed writes raise
    ``OSError`` naming ``path``."""
    _check_order(data)
    try:
        file = open(path, "wb")  # noqa: SIM115 (closed below, after the retry)
    except FileNotFoundError:  # the first object of its folder
        os.makedirs(os.path.dirname(path), exist_ok=True)
        file = open(path, "wb")  # noqa: SIM115
    try:
        with file:
            if layout.inner is None:
                encoded = encode_object(layout, data, counts)
                file.write(encoded)
                return len(encoded)
            # through the descriptor: nothing is ever in the file object's buffer
            written, padding = core.write_shard(
                file.fileno(), *_shard_arguments(layout, layout.inner, data, counts)
            )
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    if counts is not None and padding:
        _padding_counts(layout, padding, counts)
    return int(written)


def _check_order(data: np.ndarray) -> None:
    if data.dtype.byteorder == ">":
        raise ValueError("encode_object takes native little-endian data")


def _shard_arguments(
    layout: DirectLayout, inner: tuple[int, ...], data: np.ndarray, counts: np.ndarray | None
) -> tuple[Any, ...]:
    """The native shard call's arguments after the destination (``inner``: the layout's inner
    chunk shape): every inner chunk of the block gathered, padded, encoded and indexed in one
    call."""
    grid = tuple(b // c for b, c in zip(layout.block, inner, strict=True))
    return (
        np.ascontiguousarray(data).reshape(-1).view(np.uint8),
        dtype_code(data.dtype),
        list(data.shape),
        list(inner),
        list(grid),
        _write_order(grid),
        np.ascontiguousarray(layout.fill_value).reshape(1).view(np.uint8),
        0,
        layout.codec.checksum,
        layout.codec.predict,
        SEGMENT_KIB,
        None if counts is None else counts.reshape(-1),
    )


@cache
def _write_order(grid: tuple[int, ...]) -> np.ndarray:
    """The grid coordinates of a shard's inner chunks in writing order, flattened."""
    return morton_order(grid).astype(np.uint32).reshape(-1)


def object_key(layout: DirectLayout, region: tuple[tuple[int, int], ...]) -> str:
    """The key (relative to the array, by its chunk key encoding) of the object whose block
    starts at ``region``."""
    coords = tuple(a // b for (a, _), b in zip(region, layout.block, strict=True))
    return layout.keys.encode_chunk_key(coords)
