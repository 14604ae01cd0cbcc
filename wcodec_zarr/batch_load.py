"""Whole tensors in one batch. ``stage`` puts every shard object of every tensor in one buffer
(local files read straight into it by native threads, remote objects fetched concurrently),
checking every shard index; then all inner chunks decode in one call straight into each
destination tensor, with no per-chunk copies and no per-chunk Python: on the CPU one native call
whose threads share every segment of every chunk, on the GPU (the buffer pinned) one
host-to-device copy and one kernel launch.

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
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ._native import core
from .api import ChunkError, decode_batch
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


@dataclass
class Staged:
    """Every chunk of a batch of whole tensors in one buffer: chunk ``k`` is
    ``buffer[offsets[k] : offsets[k] + lens[k]]``, at an ``align``-aligned offset."""

    buffer: np.ndarray
    offsets: np.ndarray  # uint64
    lens: np.ndarray  # uint64
    tensors: list[StagedTensor]

    def where(self, chunk: int) -> str:
        """The object key (and inner chunk) of chunk ``chunk``, for errors."""
        for t in self.tensors:
            if t.first <= chunk < t.first + t.count:
                i = chunk - t.first
                if t.tensor.shards is None:
                    return t.keys[i]
                return f"{t.keys[i // t.per_shard]} (inner chunk {i % t.per_shard})"
        raise IndexError(chunk)


def aligned(allocate: Callable[[int], np.ndarray], nbytes: int, align: int) -> np.ndarray:
    """``nbytes`` of memory from ``allocate`` starting at a multiple of ``align``."""
    raw = allocate(nbytes + align - 1)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes]


def stage(tensors: list[LazyTensor], align: int, allocate: Callable[[int], np.ndarray]) -> Staged:
    """Stages the chunks of every tensor the fast path applies to (others are left out): local
    objects are read straight from their files, remote ones fetched concurrently; then one
    native call, on every core, places each object and its chunks in the buffer that
    ``allocate(nbytes)`` returns and checks every shard index (``wcodec/staging.h``)."""
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
    try:
        buffer, offsets, lens = place_objects(sources, sizes, per_shard, nchunks, align, allocate)
    except ChunkError as exc:
        raise ValueError(f"{keys[exc.index]}: {exc.reason}") from None
    return Staged(buffer, offsets, lens, staged)


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
    size = np.asarray(sizes, np.uint64)
    count = np.asarray(nchunks, np.uint64)
    slot_len = (size + count * align + (align - 1)) // align * align
    slots = np.concatenate([[0], np.cumsum(slot_len)]).astype(np.uint64)
    buffer = aligned(allocate, max(int(slots[-1]), 1), align)
    offsets = np.zeros(int(count.sum()), np.uint64)
    lens = np.zeros(int(count.sum()), np.uint64)
    core.stage_objects(
        sources,
        size,
        slots[:-1].copy(),
        slot_len,
        np.asarray(per_shard, np.uint32),
        np.asarray(nchunks, np.uint32),
        (np.cumsum(count) - count).astype(np.uint64),
        buffer,
        align,
        offsets,
        lens,
        0,
    )
    return buffer, offsets, lens


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


class _KeptBuffer:
    """One host staging buffer kept between CPU loads (up to KEEP_MAX bytes): staging into
    fresh memory costs a page fault per page, which the kernel zeroes first, about as much as
    reading the objects. A load running while another holds the buffer allocates its own."""

    KEEP_MAX = 256 << 20

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: np.ndarray | None = None

    @contextlib.contextmanager
    def allocator(self) -> Iterator[Callable[[int], np.ndarray]]:
        with self._lock:
            kept, self._kept = self._kept, None
        used: list[np.ndarray] = []

        def allocate(nbytes: int) -> np.ndarray:
            buffer = kept if kept is not None and kept.size >= nbytes else host_block(nbytes)
            used.append(buffer)
            return buffer[:nbytes]

        try:
            yield allocate
        finally:
            keep = max([b for b in [kept, *used] if b is not None], key=len, default=None)
            if keep is not None and keep.size <= self.KEEP_MAX:
                with self._lock:
                    if self._kept is None or self._kept.size < keep.size:
                        self._kept = keep


_staging = _KeptBuffer()


def _block_offsets(staged: Staged) -> tuple[list[int], int]:
    """Where each staged tensor's output starts in one block for the batch, and its size."""
    starts, total = [], 0
    for t in staged.tensors:
        starts.append(total)
        total += -(-t.count * t.chunk_nbytes // BLOCK_ALIGN) * BLOCK_ALIGN
    return starts, total


def load_to_cpu(tensors: list[LazyTensor], threads: int | None = None) -> dict[str, np.ndarray]:
    """The tensors as NumPy arrays, in the order given; see the module documentation. The
    arrays of one call are views of one block of memory, freed when none is left."""
    with _staging.allocator() as allocate:
        return _load_to_cpu(tensors, stage(tensors, 1, allocate), threads)


def _load_to_cpu(
    tensors: list[LazyTensor], staged: Staged, threads: int | None
) -> dict[str, np.ndarray]:
    results: dict[str, np.ndarray] = {}
    if staged.tensors:
        starts, total = _block_offsets(staged)
        block = host_block(total)
        for t, start in zip(staged.tensors, starts, strict=True):
            whole = block[start : start + t.count * t.chunk_nbytes].view(t.tensor.dtype)
            results[t.tensor.name] = whole.reshape(-1, *t.tensor.shape[1:])[: t.tensor.shape[0]]
        index, dst_offsets, dst_lens = _destinations(staged)
        try:
            core.decode_into(
                staged.buffer,
                staged.offsets,
                staged.lens,
                [block],
                np.zeros_like(index),
                dst_offsets + np.asarray(starts, np.uint64)[index],
                dst_lens,
                0 if threads is None else threads,
            )
        except ChunkError as exc:
            raise CorruptChunkError([staged.where(exc.index)], exc.reason) from None
    return {t.name: results[t.name] if t.name in results else t.numpy() for t in tensors}


def _destinations(staged: Staged) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per chunk: its tensor's position in the batch, its byte offset there and its size."""
    counts = [t.count for t in staged.tensors]
    sizes = np.repeat(np.asarray([t.chunk_nbytes for t in staged.tensors], np.uint64), counts)
    index = np.repeat(np.arange(len(counts), dtype=np.uint32), counts)
    within = np.arange(int(sum(counts)), dtype=np.uint64) - np.repeat(
        np.asarray([t.first for t in staged.tensors], np.uint64), counts
    )
    return index, within * sizes, sizes


def load_to_gpu(tensors: list[LazyTensor], device: str, framework: str) -> dict[str, Any]:
    """The tensors on ``device`` as CuPy arrays (bfloat16/float8 as same-width unsigned
    integers) or PyTorch tensors; see the module documentation. The tensors of one call are
    views of one device allocation."""
    import cupy as cp

    from .gpu import PreparedBatch, storage_dtype, to_torch, torch_dtype

    def pinned(nbytes: int) -> np.ndarray:
        return np.frombuffer(cp.cuda.alloc_pinned_memory(nbytes), np.uint8, nbytes)

    with cp.cuda.Device(int(device.partition(":")[2] or 0)):
        staged = stage(tensors, GPU_ALIGN, pinned)
        results: dict[str, Any] = {}
        if staged.tensors:
            starts, total = _block_offsets(staged)
            block = cp.empty(total, cp.uint8)
            index, dst_offsets, dst_lens = _destinations(staged)
            out_ptrs = block.data.ptr + np.asarray(starts, np.uint64)[index] + dst_offsets
            # the kernel writes 16-byte aligned outputs: chunks elsewhere decode into a scratch
            # area and are copied into place
            apart = np.flatnonzero(out_ptrs % GPU_ALIGN)
            room = (dst_lens[apart] + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN
            scratch = cp.empty(max(int(room.sum()), 1), cp.uint8)
            places = np.cumsum(room) - room
            targets = out_ptrs[apart] - block.data.ptr
            out_ptrs[apart] = scratch.data.ptr + places
            batch = PreparedBatch.staged(
                staged.buffer, staged.offsets, staged.lens, out_ptrs, dst_lens
            )
            batch.launch()
            try:
                batch.check()
            except ChunkError as exc:
                raise CorruptChunkError([staged.where(exc.index)], exc.reason) from None
            for k, place, target in zip(apart, places.tolist(), targets.tolist(), strict=True):
                n = int(dst_lens[k])
                block[target : target + n] = scratch[place : place + n]
            if framework == "torch":
                results |= _torch_views(to_torch(block, np.uint8), staged, starts, torch_dtype)
            else:
                for t, start in zip(staged.tensors, starts, strict=True):
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


def _torch_views(
    base: Any, staged: Staged, starts: list[int], torch_dtype: Callable[[Any], Any]
) -> dict[str, Any]:
    """Each staged tensor as a view of the batch's device block (one ``as_strided`` each, on a
    view of the block per dtype: a few microseconds a tensor)."""
    import torch

    typed: dict[Any, Any] = {}
    out = {}
    for t, start in zip(staged.tensors, starts, strict=True):
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
