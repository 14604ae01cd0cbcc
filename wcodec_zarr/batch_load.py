"""Whole tensors in one batch, with no per-chunk copies and no per-chunk Python. Every shard
index is read and checked first (local files by native threads, remote objects fetched
concurrently). On the CPU, native threads then read runs of chunks into memory they keep and
decode them there, straight into each destination tensor (``decode_stored``), so reading
overlaps decoding. For the GPU, native threads read every object into one pinned buffer, each
chunk's container parsed by the thread that read it; one copy to the device, during which the
plan is laid out (``stage_and_plan``), and one kernel launch decode the batch.

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
import math
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ._native import core
from .api import ChunkError, StageError, decode_batch
from .pipeline import CorruptChunkError
from .storage import local_root

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
    rest = (0,) * (len(tensor.shape) - 1)
    chunks = -(-tensor.shape[0] // layout.rows)
    jobs = []
    for shard in range(first // layout.per_shard, (stop - 1) // layout.per_shard + 1):
        key = tensor.checkpoint.chunk_key(tensor.name, (shard, *rest))
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


async def _fetch(store: Store, keys: list[str]) -> list[np.ndarray]:
    prototype = default_buffer_prototype()

    async def one(key: str) -> np.ndarray:
        buffer = await store.get(key, prototype)
        if buffer is None:
            raise ValueError(f"{key}: object missing from the store")
        return buffer.as_numpy_array()

    return list(await asyncio.gather(*(one(k) for k in keys)))


@dataclass
class StagedTensor:
    tensor: LazyTensor
    rows: int  # rows per chunk
    first: int  # index of its first chunk in the batch
    count: int  # its chunks: chunk i holds rows [i * rows, (i + 1) * rows), the last one padded
    keys: list[str]  # its objects, in row order
    per_shard: int  # chunks per object (1 when unsharded)

    @property
    def chunk_nbytes(self) -> int:
        return self.rows * math.prod(self.tensor.shape[1:]) * self.tensor.dtype.itemsize


def chunk_key(tensors: list[StagedTensor], chunk: int) -> str:
    """The object key (and inner chunk) of chunk ``chunk`` of a batch, for errors."""
    for t in tensors:
        if t.first <= chunk < t.first + t.count:
            i = chunk - t.first
            if t.tensor.shards is None:
                return t.keys[i]
            return f"{t.keys[i // t.per_shard]} (inner chunk {i % t.per_shard})"
    raise IndexError(chunk)


@dataclass
class StoredObjects:
    """The stored objects of a batch's whole tensors, their chunks numbered in object order."""

    tensors: list[StagedTensor]
    keys: list[str]
    sources: list[Any]  # file paths (a local store) or the objects' bytes
    sizes: list[int]
    per_shard: list[int]  # inner chunks of each shard; 0 for a plain chunk
    nchunks: list[int]  # chunks each object holds for the batch


def aligned(allocate: Callable[[int], np.ndarray], nbytes: int, align: int) -> np.ndarray:
    """``nbytes`` of memory from ``allocate`` starting at a multiple of ``align``."""
    raw = allocate(nbytes + align - 1)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes]


def stored_objects(tensors: list[LazyTensor]) -> StoredObjects:
    """The objects of every tensor the fast path applies to (others are left out): local ones
    as file paths, remote ones fetched concurrently."""
    eligible = [(t, layout) for t in tensors if t._whole() and (layout := _layout(t)) is not None]
    stores = {id(t.checkpoint.store): t.checkpoint.store for t, _ in eligible}
    if len(stores) > 1:
        raise ValueError("tensors of one batch must come from one checkpoint")
    staged: list[StagedTensor] = []
    keys: list[str] = []
    per_shard: list[int] = []
    nchunks: list[int] = []
    total = 0
    for tensor, layout in eligible:
        count = -(-tensor.shape[0] // layout.rows)
        names = _shard_keys(tensor, layout)
        staged.append(StagedTensor(tensor, layout.rows, total, count, names, layout.per_shard))
        for i, key in enumerate(names):
            keys.append(key)
            per_shard.append(0 if tensor.shards is None else layout.per_shard)
            nchunks.append(min(layout.per_shard, count - i * layout.per_shard))
        total += count
    store = next(iter(stores.values()), None)
    root = None if store is None else local_root(store)
    sources: list[Any]
    if root is not None:
        folder = str(root)
        sources = [f"{folder}/{key}" for key in keys]
        try:
            sizes = [os.stat(path).st_size for path in sources]
        except FileNotFoundError as exc:
            key = keys[sources.index(str(exc.filename))]
            raise ValueError(f"{key}: object missing from the store") from None
    else:
        sources = [] if store is None else sync(_fetch(store, keys))
        sizes = [int(blob.size) for blob in sources]
    return StoredObjects(staged, keys, sources, sizes, per_shard, nchunks)


def place_objects(
    sources: list[Any],
    sizes: list[int],
    per_shard: list[int],
    nchunks: list[int],
    align: int,
    allocate: Callable[[int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The native half of ``stage``: object ``k`` (a file path, or its bytes as a uint8 array)
    of ``sizes[k]`` bytes holds ``nchunks[k]`` chunks (a shard of ``per_shard[k]`` inner chunks,
    or one plain chunk when 0). Each object gets a slot with room for its chunks at
    ``align``-aligned offsets; the chunks are numbered in object order. Returns the buffer and
    every chunk's offset and length in it; a bad object raises ``ChunkError`` with its index."""
    slots = ObjectSlots(sizes, nchunks, align)
    buffer = aligned(allocate, slots.nbytes, align)
    offsets = np.zeros(slots.nchunks, np.uint64)
    lens = np.zeros(slots.nchunks, np.uint64)
    core.stage_objects(
        sources,
        slots.sizes,
        slots.starts,
        slots.lens,
        np.asarray(per_shard, np.uint32),
        np.asarray(nchunks, np.uint32),
        slots.first,
        buffer,
        align,
        offsets,
        lens,
        0,
    )
    return buffer, offsets, lens


class ObjectSlots:
    """Where objects go in a staging buffer: object ``k`` (``sizes[k]`` bytes, holding
    ``nchunks[k]`` chunks) gets ``lens[k]`` bytes from ``starts[k]``, room for its chunks at
    ``align``-aligned offsets; its chunks are numbered from ``first[k]``."""

    def __init__(self, sizes: list[int], nchunks: list[int], align: int) -> None:
        self.sizes = np.asarray(sizes, np.uint64)
        count = np.asarray(nchunks, np.uint64)
        self.lens = (self.sizes + count * align + (align - 1)) // align * align
        self.starts = (np.cumsum(self.lens) - self.lens).astype(np.uint64)
        self.first = (np.cumsum(count) - count).astype(np.uint64)
        self.nchunks = int(count.sum())
        self.nbytes = max(int(self.lens.sum()), 1)


HUGE_PAGE = 2 << 20
BLOCK_ALIGN = 256  # outputs in a batch's block start at multiples of this


def host_block(nbytes: int) -> np.ndarray:
    """Fresh host memory for a batch: anonymous memory advised for transparent huge pages
    where the OS has them. Decoding threads that fault 4 KiB pages in parallel queue on the
    kernel's page-fault path; 2 MiB pages make 512 times fewer faults (MiniLM bf16 on 16 cores:
    decoding into fresh 4 KiB pages 11.8 ms, into huge pages 6.3 ms, into memory already
    faulted 5.8 ms). The block starts at a 2 MiB boundary and spans whole huge pages: the kernel
    backs only aligned 2 MiB ranges with them, and an unaligned head would fault 4 KiB at a
    time on the one thread that faults that range in (native ``decode_chunks``)."""
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(nbytes, np.uint8)
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    block = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -np.frombuffer(block, np.uint8, count=1).ctypes.data % HUGE_PAGE
    block.madvise(mmap.MADV_HUGEPAGE, start, size)
    return np.frombuffer(block, np.uint8, count=nbytes, offset=start)


def _block_offsets(tensors: list[StagedTensor]) -> tuple[list[int], int]:
    """Where each staged tensor's output starts in one block for the batch, and its size."""
    starts, total = [], 0
    for t in tensors:
        starts.append(total)
        total += -(-t.count * t.chunk_nbytes // BLOCK_ALIGN) * BLOCK_ALIGN
    return starts, total


def load_to_cpu(tensors: list[LazyTensor], threads: int | None = None) -> dict[str, np.ndarray]:
    """The tensors as NumPy arrays, in the order given; see the module documentation. The
    arrays of one call are views of one block of memory, freed when none is left."""
    objects = stored_objects(tensors)
    results: dict[str, np.ndarray] = {}
    if objects.tensors:
        starts, total = _block_offsets(objects.tensors)
        block = host_block(total)
        for t, start in zip(objects.tensors, starts, strict=True):
            whole = block[start : start + t.count * t.chunk_nbytes].view(t.tensor.dtype)
            results[t.tensor.name] = whole.reshape(-1, *t.tensor.shape[1:])[: t.tensor.shape[0]]
        nchunks = np.asarray(objects.nchunks, np.uint64)
        src = np.zeros(int(nchunks.sum()), np.uint64)
        length = np.zeros_like(src)
        try:
            core.locate_chunks(
                objects.sources,
                np.asarray(objects.sizes, np.uint64),
                np.asarray(objects.per_shard, np.uint32),
                nchunks.astype(np.uint32),
                np.cumsum(nchunks) - nchunks,
                src,
                length,
                0,
            )
        except ChunkError as exc:
            raise ValueError(f"{objects.keys[exc.index]}: {exc.reason}") from None
        index, dst_offsets, dst_lens = _destinations(objects.tensors)
        try:
            core.decode_stored(
                objects.sources,
                np.asarray(objects.sizes, np.uint64),
                np.repeat(np.arange(len(objects.sources), dtype=np.uint32), objects.nchunks),
                src,
                length,
                [block],
                np.zeros_like(index),
                dst_offsets + np.asarray(starts, np.uint64)[index],
                dst_lens,
                0 if threads is None else threads,
            )
        except ChunkError as exc:
            where = chunk_key(objects.tensors, exc.index)
            raise CorruptChunkError([where], exc.reason) from None
    return {t.name: results[t.name] if t.name in results else t.numpy() for t in tensors}


def _destinations(tensors: list[StagedTensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per chunk: its tensor's position in the batch, its byte offset there and its size."""
    counts = [t.count for t in tensors]
    sizes = np.repeat(np.asarray([t.chunk_nbytes for t in tensors], np.uint64), counts)
    index = np.repeat(np.arange(len(counts), dtype=np.uint32), counts)
    within = np.arange(int(sum(counts)), dtype=np.uint64) - np.repeat(
        np.asarray([t.first for t in tensors], np.uint64), counts
    )
    return index, within * sizes, sizes


def load_to_gpu(tensors: list[LazyTensor], device: str, framework: str) -> dict[str, Any]:
    """The tensors on ``device`` as CuPy arrays (bfloat16/float8 as same-width unsigned
    integers) or PyTorch tensors; see the module documentation. The tensors of one call are
    views of one device allocation."""
    import cupy as cp

    from .gpu import storage_dtype, to_torch, torch_dtype

    with cp.cuda.Device(int(device.partition(":")[2] or 0)):
        objects = stored_objects(tensors)
        results: dict[str, Any] = {}
        if objects.tensors:
            starts, total = _block_offsets(objects.tensors)
            block = cp.empty(total, cp.uint8)
            _decode_into(block, starts, objects)
            if framework == "torch":
                base = to_torch(block, np.uint8)
                results |= _torch_views(base, objects.tensors, starts, torch_dtype)
            else:
                for t, start in zip(objects.tensors, starts, strict=True):
                    dtype = storage_dtype(t.tensor.dtype)
                    memory = block.data + start
                    results[t.tensor.name] = cp.ndarray(t.tensor.shape, dtype, memptr=memory)
        out: dict[str, Any] = {}
        for tensor in tensors:
            result = results.get(tensor.name)
            if result is None:
                host = tensor.numpy()
                result = cp.asarray(host.view(storage_dtype(host.dtype)))
                result = to_torch(result, tensor.dtype) if framework == "torch" else result
            out[tensor.name] = result
        return out


def _decode_into(block: Any, starts: list[int], objects: StoredObjects) -> None:
    """Stages, uploads and decodes every chunk of ``objects`` into the device ``block`` (tensor
    ``i`` from ``starts[i]``): one pinned buffer, one copy, one launch."""
    import cupy as cp

    from . import _cuda  # type: ignore[attr-defined]
    from .gpu import PreparedBatch

    index, dst_offsets, dst_lens = _destinations(objects.tensors)
    out_ptrs = block.data.ptr + np.asarray(starts, np.uint64)[index] + dst_offsets
    # the kernel writes 16-byte aligned outputs: chunks elsewhere decode into a scratch area and
    # are copied into place
    apart = np.flatnonzero(out_ptrs % GPU_ALIGN)
    room = (dst_lens[apart] + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN
    scratch = cp.empty(max(int(room.sum()), 1), cp.uint8)
    places = np.cumsum(room) - room
    targets = out_ptrs[apart] - block.data.ptr
    out_ptrs[apart] = scratch.data.ptr + places
    slots = ObjectSlots(objects.sizes, objects.nchunks, GPU_ALIGN)
    staging = aligned(
        lambda n: np.frombuffer(cp.cuda.alloc_pinned_memory(n), np.uint8, n),
        slots.nbytes,
        GPU_ALIGN,
    )
    arena = cp.empty(slots.nbytes, cp.uint8)
    stream = cp.cuda.get_current_stream()
    offsets = np.zeros(slots.nchunks, np.uint64)
    try:
        plan = _cuda.stage_and_plan(
            objects.sources,
            slots.sizes,
            slots.starts,
            slots.lens,
            np.asarray(objects.per_shard, np.uint32),
            np.asarray(objects.nchunks, np.uint32),
            slots.first,
            staging,
            GPU_ALIGN,
            arena.data.ptr,
            out_ptrs,
            dst_lens,
            offsets,
            np.zeros_like(offsets),
            cp.cuda.Device().id,
            stream.ptr,
            0,
        )
    except StageError as exc:
        raise ValueError(f"{objects.keys[exc.index]}: {exc.reason}") from None
    except ChunkError as exc:
        raise CorruptChunkError([chunk_key(objects.tensors, exc.index)], exc.reason) from None
    batch = PreparedBatch.planned(plan, arena, staging, stream)
    batch.launch()
    try:
        batch.check()
    except ChunkError as exc:
        raise CorruptChunkError([chunk_key(objects.tensors, exc.index)], exc.reason) from None
    for k, place, target in zip(apart, places.tolist(), targets.tolist(), strict=True):
        n = int(dst_lens[k])
        block[target : target + n] = scratch[place : place + n]


def _torch_views(
    base: Any, tensors: list[StagedTensor], starts: list[int], torch_dtype: Callable[[Any], Any]
) -> dict[str, Any]:
    """Each staged tensor as a view of the batch's device block (one ``as_strided`` each, on a
    view of the block per dtype: a few microseconds a tensor)."""
    import torch

    typed: dict[Any, Any] = {}
    out = {}
    for t, start in zip(tensors, starts, strict=True):
        dtype = t.tensor.dtype
        if dtype not in typed:
            typed[dtype] = base.view(torch_dtype(dtype))
        shape = t.tensor.shape
        strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
        out[t.tensor.name] = torch.as_strided(typed[dtype], shape, strides, start // dtype.itemsize)
    return out


@contextlib.contextmanager
def _naming(where: list[str]) -> Iterator[None]:
    """A corrupt chunk's error names its object (and inner chunk), as zarr reads do."""
    try:
        yield
    except ChunkError as exc:
        raise CorruptChunkError([where[exc.index]], exc.reason) from None


def _shard_keys(tensor: LazyTensor, layout: _Layout) -> list[str]:
    """Store keys of the tensor's shard objects (chunk objects when unsharded), in row order,
    by the array's chunk key encoding (``<name>/c.<i>.0...`` as ``convert`` writes it)."""
    per_object = layout.rows * layout.per_shard
    count = -(-tensor.shape[0] // per_object)
    rest = (0,) * (len(tensor.shape) - 1)
    return [tensor.checkpoint.chunk_key(tensor.name, (i, *rest)) for i in range(count)]
