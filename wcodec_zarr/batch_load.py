"""Whole tensors in one batch: every shard object of every tensor is fetched concurrently, the
shard indexes are parsed on the host, and all inner chunks decode in one call straight into each
destination tensor, with no per-chunk copies: on the CPU one native call whose threads share
every segment of every chunk, on the GPU one kernel launch (one pinned host buffer, one
host-to-device copy).

This applies to wcodec tensors whose chunks span every dimension but the first, so that chunk
``i`` is the contiguous run of rows ``[i * rows, (i + 1) * rows)`` (the layout ``convert``
writes for 2-D weights); the destination has room for the last chunk's padding and the tensor is
a view of its first rows. Other tensors go through the CPU and are copied up.

Shard objects follow the Zarr sharding format with the layout zarr writes by default: the index
(``offset, nbytes`` as little-endian uint64 per inner chunk, C order, then a CRC32C of those
bytes) at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, WrapperStore

from .api import ChunkError, decode_batch
from .pipeline import CorruptChunkError

if TYPE_CHECKING:
    from .checkpoint import LazyTensor

EMPTY = 2**64 - 1  # an index entry for a chunk that is not stored
GPU_ALIGN = 16  # the GPU decoder's alignment for outputs


@dataclass
class _Layout:
    rows: int  # rows per chunk
    per_shard: int  # chunks per shard object (1 when unsharded)


def _layout(tensor: LazyTensor) -> _Layout | None:
    """The chunk layout (from the manifest) when the fast path applies, else None."""
    shape, chunks, shards = tensor.shape, tensor.chunks, tensor.shards
    if tensor.info["codec"] != "wcodec" or not shape or 0 in shape or chunks[1:] != shape[1:]:
        return None
    if shards is None:
        return _Layout(chunks[0], 1)
    if shards[1:] != chunks[1:]:
        return None
    return _Layout(chunks[0], shards[0] // chunks[0])


def _index_entries(key: str, index: np.ndarray, count: int) -> list[tuple[int, int] | None]:
    """A shard index's (offset, nbytes) per inner chunk, None where not stored; the CRC32C
    of the index is checked."""
    if index.size != count * 16 + 4:
        raise ValueError(f"{key}: shard index of {index.size} bytes, expected {count * 16 + 4}")
    if google_crc32c.value(index[:-4].tobytes()) != int.from_bytes(index[-4:].tobytes(), "little"):
        raise ValueError(f"{key}: shard index checksum mismatch")
    entries = index[:-4].view("<u8").reshape(count, 2).tolist()
    return [None if (o, n) == (EMPTY, EMPTY) else (o, n) for o, n in entries]


def _inner_chunks(key: str, blob: np.ndarray, count: int) -> list[np.ndarray | None]:
    """The inner chunks of a shard object, in index order (None where not stored)."""
    size = count * 16 + 4
    if blob.size < size:
        raise ValueError(f"{key}: shard of {blob.size} bytes is shorter than its index")
    out: list[np.ndarray | None] = []
    for entry in _index_entries(key, blob[-size:], count):
        if entry is None:
            out.append(None)
        elif entry[0] + entry[1] > blob.size - size:
            raise ValueError(f"{key}: shard index entry [{entry[0]}, +{entry[1]}) is out of range")
        else:
            out.append(blob[entry[0] : entry[0] + entry[1]])
    return out


async def _shard_chunks(
    store: Store, key: str, per_shard: int, first: int, stop: int
) -> list[np.ndarray]:
    """Inner chunks ``[first, stop)`` of a shard: its index (a suffix request; read-only stores
    from ``open_store`` cache it), then one ranged GET for the run of chunks, which zarr stores
    one after another."""
    prototype = default_buffer_prototype()
    index = await store.get(key, prototype, SuffixByteRequest(per_shard * 16 + 4))
    if index is None:
        raise ValueError(f"{key}: object missing from the store")
    entries = _index_entries(key, index.as_numpy_array(), per_shard)[first:stop]
    if any(e is None for e in entries):
        raise ValueError(f"{key}: a chunk is missing from the shard")
    spans = [e for e in entries if e is not None]
    if all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(spans)):
        runs = [(spans[0][0], spans[-1][0] + spans[-1][1])]
    else:  # not one after another (written by another tool): one GET per chunk
        runs = [(o, o + n) for o, n in spans]
    blobs = await asyncio.gather(
        *(store.get(key, prototype, RangeByteRequest(a, b)) for a, b in runs)
    )
    if any(blob is None or len(blob) != b - a for blob, (a, b) in zip(blobs, runs, strict=True)):
        raise ValueError(f"{key}: shard index entries point past the end of the object")
    if len(runs) > 1:
        return [blob.as_numpy_array() for blob in blobs if blob is not None]
    assert blobs[0] is not None
    data, start = blobs[0].as_numpy_array(), runs[0][0]
    return [data[o - start : o - start + n] for o, n in spans]


async def _whole_shard(
    store: Store, key: str, per_shard: int, first: int, stop: int
) -> list[np.ndarray]:
    blob = (await _fetch(store, [key]))[0]
    chunks = _inner_chunks(key, blob, per_shard)[first:stop]
    if any(c is None for c in chunks):
        raise ValueError(f"{key}: a chunk is missing from the shard")
    return [c for c in chunks if c is not None]


async def _rows_chunks(tensor: LazyTensor, layout: _Layout, first: int, stop: int) -> list[Any]:
    """Chunk bytes (and where they come from) for chunks ``[first, stop)`` of a tensor."""
    store = tensor.checkpoint.store
    rest = "/0" * (len(tensor.shape) - 1)
    chunks = -(-tensor.shape[0] // layout.rows)
    jobs = []
    for shard in range(first // layout.per_shard, (stop - 1) // layout.per_shard + 1):
        key = f"{tensor.name}/c/{shard}{rest}"
        lo = max(first, shard * layout.per_shard) - shard * layout.per_shard
        hi = min(stop, (shard + 1) * layout.per_shard) - shard * layout.per_shard
        if tensor.shards is None:
            jobs.append((key, lo, _fetch(store, [key])))
        elif lo == 0 and hi == min(layout.per_shard, chunks - shard * layout.per_shard):
            # every chunk of the shard: the whole object in one GET, its index at the end
            jobs.append((key, lo, _whole_shard(store, key, layout.per_shard, lo, hi)))
        else:
            jobs.append((key, lo, _shard_chunks(store, key, layout.per_shard, lo, hi)))
    results = await asyncio.gather(*(job for _, _, job in jobs))
    return [
        (data, f"{key} (inner chunk {lo + i})" if tensor.shards is not None else key)
        for (key, lo, _), chunks in zip(jobs, results, strict=True)
        for i, data in enumerate(chunks)
    ]


def read_rows(tensor: LazyTensor, start: int, stop: int) -> np.ndarray | None:
    """Rows ``[start, stop)`` of a whole tensor, fetched and decoded without zarr: one ranged
    GET per shard touched and one native decode call into the result. None when the fast path
    does not apply (see the module documentation)."""
    layout = _layout(tensor) if tensor._whole() else None
    if layout is None or not 0 <= start < stop <= tensor.shape[0]:
        return None
    first, last = start // layout.rows, -(-stop // layout.rows)
    found = sync(_rows_chunks(tensor, layout, first, last))
    dest = np.empty(((last - first) * layout.rows, *tensor.shape[1:]), tensor.dtype)
    outs = [dest[i * layout.rows : (i + 1) * layout.rows] for i in range(len(found))]
    with _naming([where for _, where in found]):
        decode_batch([data for data, _ in found], outs=outs)
    offset = first * layout.rows
    return dest[start - offset : stop - offset]


def local_root(store: Store) -> Path | None:
    """The directory of a local store (through wrappers), else None."""
    while isinstance(store, WrapperStore):
        store = store._store
    return Path(store.root) if isinstance(store, LocalStore) else None


def _read_file(root: Path, key: str) -> np.ndarray:
    """An object of a local store, read straight from its file: many times faster than
    through the store's thread hops for a model's hundreds of objects."""
    try:
        return np.fromfile(root / key, np.uint8)
    except FileNotFoundError:
        raise ValueError(f"{key}: object missing from the store") from None


async def _fetch(store: Store, keys: list[str]) -> list[np.ndarray]:
    prototype = default_buffer_prototype()

    async def one(key: str) -> np.ndarray:
        buffer = await store.get(key, prototype)
        if buffer is None:
            raise ValueError(f"{key}: object missing from the store")
        return buffer.as_numpy_array()

    return list(await asyncio.gather(*(one(k) for k in keys)))


@dataclass
class TensorChunks:
    """A tensor's stored chunks, ready to decode: ``chunks[i]`` holds rows
    ``[i * rows, (i + 1) * rows)`` (the last one padded past the tensor's end)."""

    tensor: LazyTensor
    rows: int
    chunks: list[np.ndarray]
    where: list[str]  # each chunk's object key (and inner chunk), for errors


def gather_chunks(tensors: list[LazyTensor]) -> list[TensorChunks]:
    """The chunk bytes of every tensor the fast path applies to, all objects fetched
    concurrently and every shard index checked; other tensors are left out."""
    eligible = [(t, layout) for t in tensors if t._whole() and (layout := _layout(t)) is not None]
    keys = [_shard_keys(t, layout) for t, layout in eligible]
    stores = {id(t.checkpoint.store): t.checkpoint.store for t, _ in eligible}
    if len(stores) > 1:
        raise ValueError("tensors of one batch must come from one checkpoint")
    store = next(iter(stores.values()), None)
    flat = [k for ks in keys for k in ks]
    root = None if store is None else local_root(store)
    if root is not None:
        blobs = [_read_file(root, key) for key in flat]
    else:
        blobs = [] if store is None else sync(_fetch(store, flat))
    starts = np.cumsum([0] + [len(k) for k in keys]).tolist()
    out = []
    for i, ((tensor, layout), names) in enumerate(zip(eligible, keys, strict=True)):
        objects = blobs[starts[i] : starts[i + 1]]
        n_chunks = -(-tensor.shape[0] // layout.rows)
        chunks: list[np.ndarray] = []
        where: list[str] = []
        for key, blob in zip(names, objects, strict=True):
            sharded = tensor.shards is not None
            inner = _inner_chunks(key, blob, layout.per_shard) if sharded else [blob]
            for i, data in enumerate(inner):
                if len(chunks) == n_chunks:
                    break
                if data is None:
                    raise ValueError(f"{tensor.name}: chunk {len(chunks)} is missing from {key}")
                chunks.append(data)
                where.append(f"{key} (inner chunk {i})" if sharded else key)
        out.append(TensorChunks(tensor, layout.rows, chunks, where))
    return out


def load_to_cpu(tensors: list[LazyTensor], threads: int | None = None) -> dict[str, np.ndarray]:
    """The tensors as NumPy arrays, in the order given; see the module documentation."""
    chunks: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    where: list[str] = []
    results: dict[str, np.ndarray] = {}
    for planned in gather_chunks(tensors):
        tensor, rows = planned.tensor, planned.rows
        dest = np.empty((len(planned.chunks) * rows, *tensor.shape[1:]), tensor.dtype)
        chunks += planned.chunks
        where += planned.where
        outs += [dest[i * rows : (i + 1) * rows] for i in range(len(planned.chunks))]
        results[tensor.name] = dest[: tensor.shape[0]]
    if chunks:
        with _naming(where):
            decode_batch(chunks, outs=outs, threads=threads)
    return {t.name: results[t.name] if t.name in results else t.numpy() for t in tensors}


def load_to_gpu(tensors: list[LazyTensor], device: str, framework: str) -> dict[str, Any]:
    """The tensors on ``device`` as CuPy arrays (bfloat16/float8 as same-width unsigned
    integers) or PyTorch tensors; see the module documentation."""
    import cupy as cp

    from .gpu import decode_batch_gpu, storage_dtype, to_torch

    with cp.cuda.Device(int(device.partition(":")[2] or 0)):
        chunks: list[np.ndarray] = []
        outs: list[Any] = []
        where: list[str] = []
        results: dict[str, Any] = {}
        for planned in gather_chunks(tensors):
            tensor, rows = planned.tensor, planned.rows
            shape = (len(planned.chunks) * rows, *tensor.shape[1:])
            dest = cp.empty(shape, storage_dtype(tensor.dtype))
            chunks += planned.chunks
            where += planned.where
            views = [dest[i * rows : (i + 1) * rows] for i in range(len(planned.chunks))]
            # the kernel writes 16-byte aligned outputs: chunks of other sizes decode apart and
            # are copied into place
            outs += [v if v.data.ptr % GPU_ALIGN == 0 else None for v in views]
            results[tensor.name] = (dest[: tensor.shape[0]], views)
        with _naming(where):
            decoded = decode_batch_gpu(chunks, outs=outs) if chunks else []
        position = 0
        for _, views in results.values():
            for view in views:
                if outs[position] is None:
                    view[...] = decoded[position]
                position += 1
        out: dict[str, Any] = {}
        for tensor in tensors:
            result = results[tensor.name][0] if tensor.name in results else None
            if result is None:
                host = tensor.numpy()
                result = cp.asarray(host.view(storage_dtype(host.dtype)))
            out[tensor.name] = to_torch(result, tensor.dtype) if framework == "torch" else result
        return out


@contextlib.contextmanager
def _naming(where: list[str]) -> Iterator[None]:
    """A corrupt chunk's error names its object (and inner chunk), as zarr reads do."""
    try:
        yield
    except ChunkError as exc:
        raise CorruptChunkError([where[exc.index]], exc.reason) from None


def _shard_keys(tensor: LazyTensor, layout: _Layout) -> list[str]:
    """Store keys of the tensor's shard objects (chunk objects when unsharded), in row order:
    ``convert`` writes the default chunk key encoding, ``<name>/c/<i>/0/...``."""
    per_object = layout.rows * layout.per_shard
    count = -(-tensor.shape[0] // per_object)
    rest = "/0" * (len(tensor.shape) - 1)
    return [f"{tensor.name}/c/{i}{rest}" for i in range(count)]
