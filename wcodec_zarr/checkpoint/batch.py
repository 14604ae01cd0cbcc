"""Whole tensors streamed from their stored objects, with no per-chunk copies and no per-chunk
Python, in bounded memory whatever the model's size.

The objects of a batch (``objects.stored_objects``) are cut, in storage order, into pieces of at
most a quarter of the window (``window``, bytes in flight; an object larger than that is a piece
of its own), and at most four pieces are held at once:

- Remote objects are fetched a piece at a time, three pieces ahead of the one being decoded,
  each piece's objects concurrently and a large object as parallel ranged requests
  (``objects.fetch_objects``): enough requests in flight to keep a link busy while one piece
  is decoded (``benchmarks/bench_load.py``, 2 cores, a server limited to 100 MB/s, a 0.97 GB
  bf16 model: 1.08x the time of fetching every object at once with three pieces ahead, 1.13x
  with two).
- On the CPU, native threads decode each piece straight from the objects (file paths, or the
  fetched bytes) into each destination tensor (``decode_stored``): they read runs of chunks into
  memory they keep, so reading overlaps decoding. A whole local load is one piece: the native
  threads already read it in bounded memory.
- For the GPU, each piece is read by native threads into a pinned staging buffer, each chunk's
  container parsed by the thread that read it, and copied to a device arena on a copy stream while
  the plan is laid out (``stage_and_plan``); its decode kernels run on a decode stream once the
  copy is done (an event). The three pieces' staging buffers and arenas take turns, so that the
  decode of piece i, the copy of piece i+1 and the reading of piece i+2 overlap. Pinned buffers
  come from CuPy's pinned memory pool and go back to it, for the next load to reuse.

Tensors are handed over as they complete, in storage order (``stream_to_cpu``,
``stream_to_gpu``): a whole load writes them all into one block; ``Checkpoint.iter_tensors``
gives each its own memory, for the caller to drop.

This applies to wcodec tensors whose chunks are runs of whole rows (``objects.row_layout``); a
destination has room for its last chunk's padding and the tensor is a view of its first rows.
Other tensors go through the CPU and are copied up.
"""

from __future__ import annotations

import math
import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.core.sync import sync

from ..codec.errors import ChunkError, StageError
from ..codec.gpu import PreparedBatch, storage_dtype
from ..codec.native import core, cuda
from ..codec.staging import ObjectSlots, aligned
from ..zarr.pipeline import CorruptChunkError
from .frameworks import to_framework, to_torch, torch_dtype
from .objects import (
    StagedTensor,
    StoredObjects,
    StoredTensor,
    chunk_key,
    fetch_objects,
    stored_objects,
)

WINDOW = 256 << 20  # default bytes of stored objects in flight during a load
PIECES = 4  # pieces of a window held at once: one decoded (or copied), the others fetched (or read)
SLOT_ROUND = 64 << 10  # a GPU load's staging buffers and arenas come in multiples of this
SLOW_START = 4 << 20  # the least limit of the first and the last pieces (see ``pieces``)

GPU_ALIGN = 16  # the GPU decoder's alignment for outputs

HUGE_PAGE = 2 << 20
BLOCK_ALIGN = 256  # outputs in a batch's block start at multiples of this


def host_block(nbytes: int) -> np.ndarray:
    """Fresh host memory for a batch: anonymous memory advised for transparent huge pages
    where the OS has them. Decoding threads that fault 4 KiB pages in parallel queue on the
    kernel's page-fault path; 2 MiB pages make 512 times fewer faults (MiniLM bf16 on 16 cores:
    decoding into fresh 4 KiB pages 11.8 ms, into huge pages 6.3 ms, into memory already
    faulted 5.8 ms). The block starts at a 2 MiB boundary and spans whole huge pages: the kernel
    backs only aligned 2 MiB ranges with them, and an unaligned head would fault 4 KiB at a
    time on the one thread that faults that range in (native ``decode_chunks``).

    A request beyond the machine's memory is a ``ValueError``: it comes from the sizes a
    manifest claims, and an allocation that cannot be would escape as ``MemoryError`` or
    ``OSError``."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > physical:
        raise ValueError(
            f"the tensors to load claim {nbytes} bytes, more than this machine's memory "
            f"({physical} bytes)"
        )
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(nbytes, np.uint8)
    size = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    block = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -np.frombuffer(block, np.uint8, count=1).ctypes.data % HUGE_PAGE
    block.madvise(mmap.MADV_HUGEPAGE, start, size)
    return np.frombuffer(block, np.uint8, count=nbytes, offset=start)


def padded_nbytes(t: StagedTensor) -> int:
    """Bytes a staged tensor's chunks decode to (its last chunk's padding included)."""
    return t.count * t.chunk_nbytes


def check_window(window: int | None) -> int:
    """The window a load streams with: ``window``, or ``WINDOW`` when None."""
    window = WINDOW if window is None else window
    if window < PIECES:
        raise ValueError(f"window must be at least {PIECES} bytes, got {window}")
    return window


@dataclass
class Piece:
    """Objects ``[objects.start, objects.stop)`` of a batch, holding its chunks ``chunks``."""

    objects: range
    chunks: range
    tensors: list[int]  # the staged tensors it holds chunks of
    finished: list[int]  # those whose last chunk it holds


def pieces(objects: StoredObjects, limit: int | None) -> list[Piece]:
    """Consecutive objects cut into pieces of at most ``limit`` bytes (``objects.sizes``; at
    least one object each); None: one piece. The first pieces are smaller, doubling from a
    sixteenth of the limit, and so are the last, a quarter of what is left at most: the first
    piece arrives and is decoded (its tensors handed over) while the next ones still share the
    bandwidth, and little is left to decode after the last byte has arrived."""
    owner = np.repeat(np.arange(len(objects.tensors)), [t.count for t in objects.tensors]).tolist()
    out: list[Piece] = []
    start = chunk = 0
    left = sum(objects.sizes)
    grow = None if limit is None else min(limit, max(limit // 16, SLOW_START))
    while start < len(objects.keys):
        cap = None if grow is None else min(grow, max(left // 4, SLOW_START))
        stop, nbytes = start + 1, objects.sizes[start]
        while stop < len(objects.keys) and (cap is None or nbytes + objects.sizes[stop] <= cap):
            nbytes += objects.sizes[stop]
            stop += 1
        end = chunk + sum(objects.nchunks[start:stop])
        held = list(range(owner[chunk], owner[end - 1] + 1))
        last = [t for t in held if objects.tensors[t].first + objects.tensors[t].count <= end]
        out.append(Piece(range(start, stop), range(chunk, end), held, last))
        start, chunk, left = stop, end, left - nbytes
        grow = None if limit is None or grow is None else min(limit, 2 * grow)
    return out


def _sources(objects: StoredObjects, parts: list[Piece]) -> Iterator[tuple[Piece, list[Any]]]:
    """Each piece with its objects: file paths, or their bytes fetched ``PIECES - 1`` pieces
    ahead of the one handed over (each fetch on a thread of its own, through zarr's loop)."""
    if objects.sources is not None:
        for part in parts:
            yield part, objects.sources[part.objects.start : part.objects.stop]
        return
    store = objects.store
    assert store is not None

    def fetch(part: Piece) -> list[np.ndarray]:
        o = part.objects
        keys, sizes = objects.keys[o.start : o.stop], objects.sizes[o.start : o.stop]
        most = objects.most[o.start : o.stop]
        return sync(fetch_objects(store, keys, sizes, most))

    ahead = PIECES - 1
    pool = ThreadPoolExecutor(ahead, thread_name_prefix="wcodec-fetch")
    try:
        pending: deque[Future[list[np.ndarray]]] = deque(
            pool.submit(fetch, p) for p in parts[:ahead]
        )
        for i, part in enumerate(parts):
            data = pending.popleft().result()
            yield part, data
            del data  # the piece is done with: at most PIECES are held
            if i + ahead < len(parts):
                pending.append(pool.submit(fetch, parts[i + ahead]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _destinations(tensors: list[StagedTensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per chunk of a batch: its tensor's position in the batch, its byte offset in the
    tensor's destination and its size."""
    counts = [t.count for t in tensors]
    sizes = np.repeat(np.asarray([t.chunk_nbytes for t in tensors], np.uint64), counts)
    index = np.repeat(np.arange(len(counts), dtype=np.uint32), counts)
    within = np.arange(int(sum(counts)), dtype=np.uint64) - np.repeat(
        np.asarray([t.first for t in tensors], np.uint64), counts
    )
    return index, within * sizes, sizes


def _object_arrays(
    objects: StoredObjects, part: Piece, data: list[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A piece's object sizes, shard sizes, chunk counts and first chunks (numbered from the
    piece's first)."""
    o = part.objects
    if objects.sources is None:
        sizes = np.asarray([d.size for d in data], np.uint64)
    else:
        sizes = np.asarray(objects.sizes[o.start : o.stop], np.uint64)
    nchunks = np.asarray(objects.nchunks[o.start : o.stop], np.uint64)
    per_shard = np.asarray(objects.per_shard[o.start : o.stop], np.uint32)
    return sizes, per_shard, nchunks, np.cumsum(nchunks) - nchunks


def stream_to_cpu(
    objects: StoredObjects,
    allocate: Callable[[StagedTensor], np.ndarray],
    window: int | None,
    threads: int | None = None,
) -> Iterator[tuple[StagedTensor, np.ndarray]]:
    """Each staged tensor with its destination (``allocate``: at least ``padded_nbytes`` bytes,
    asked for when its first piece is decoded), as soon as it is decoded, in storage order;
    ``window`` None: one piece (see the module documentation)."""
    index, dst_offsets, dst_lens = _destinations(objects.tensors)
    live: dict[int, np.ndarray] = {}
    limit = None if window is None else window // PIECES
    for part, data in _sources(objects, pieces(objects, limit)):
        for t in part.tensors:
            if t not in live:
                live[t] = allocate(objects.tensors[t])
        sizes, per_shard, nchunks, first = _object_arrays(objects, part, data)
        c = part.chunks
        src = np.zeros(len(c), np.uint64)
        length = np.zeros_like(src)
        try:
            core.locate_chunks(
                data, sizes, per_shard, nchunks.astype(np.uint32), first, src, length, 0
            )
        except ChunkError as exc:
            raise ValueError(
                f"{objects.keys[part.objects.start + exc.index]}: {exc.reason}"
            ) from None
        held = np.asarray(part.tensors, np.uint32)
        try:
            core.decode_stored(
                data,
                sizes,
                np.repeat(np.arange(len(data), dtype=np.uint32), nchunks.astype(np.int64)),
                src,
                length,
                [live[t] for t in part.tensors],
                index[c.start : c.stop] - held[0],
                dst_offsets[c.start : c.stop],
                dst_lens[c.start : c.stop],
                0 if threads is None else threads,
            )
        except ChunkError as exc:
            where = chunk_key(objects.tensors, c.start + exc.index)
            raise CorruptChunkError([where], exc.reason) from None
        del data
        for t in part.finished:
            yield objects.tensors[t], live.pop(t)


def _block(tensors: list[StagedTensor], allocate: Callable[[int], Any]) -> dict[int, Any]:
    """One block for the tensors' destinations (each from a multiple of ``BLOCK_ALIGN``), as a
    destination per tensor (by ``id``), each a view of the block."""
    starts, total = [], 0
    for t in tensors:
        starts.append(total)
        total += -(-padded_nbytes(t) // BLOCK_ALIGN) * BLOCK_ALIGN
    block = allocate(total)
    return {
        id(t): block[start : start + padded_nbytes(t)]
        for t, start in zip(tensors, starts, strict=True)
    }


def cpu_view(t: StagedTensor, dest: np.ndarray) -> np.ndarray:
    """The tensor in its destination's first bytes."""
    whole = dest[: padded_nbytes(t)].view(t.tensor.dtype)
    return whole.reshape(-1, *t.tensor.shape[1:])[: t.tensor.shape[0]]


def load_to_cpu(
    tensors: Sequence[StoredTensor],
    threads: int | None = None,
    window: int | None = None,
    done: Callable[[int], object] | None = None,
) -> dict[str, np.ndarray]:
    """The tensors as NumPy arrays, in the order given; see the module documentation. The
    arrays of one call are views of one block of memory, freed when none is left. ``done``
    is told the bytes of each tensor as it completes (a progress bar's ``update``)."""
    objects = stored_objects(tensors)
    window = check_window(window)
    results: dict[str, np.ndarray] = {}
    if objects.tensors:
        places = _block(objects.tensors, host_block)
        local = objects.sources is not None
        streamed = stream_to_cpu(
            objects, lambda t: places[id(t)], None if local else window, threads
        )
        for t, dest in streamed:
            results[t.tensor.name] = cpu_view(t, dest)
            if done is not None:
                done(t.tensor.nbytes)
        objects.check_unchanged()
    out: dict[str, np.ndarray] = {}
    for tensor in tensors:
        result = results.get(tensor.name)
        if result is None:  # read through zarr (zstd, empty or scalar tensors)
            result = tensor.numpy()
            if done is not None:
                done(tensor.nbytes)
        out[tensor.name] = result
    return out


class _Slot:
    """One of the GPU load's turns: its pinned staging buffer and device arena (grown to the
    largest piece it meets), and the piece decoding there."""

    def __init__(self) -> None:
        self.staging: np.ndarray | None = None
        self.arena: Any = None
        self.batch: PreparedBatch | None = None
        self.part: Piece | None = None
        self.scratch: Any = None

    def buffers(self, nbytes: int, size: int) -> tuple[np.ndarray, Any]:
        """Room for ``nbytes``; made of ``size`` bytes (rounded up) when larger ones are
        needed, so that the next load finds the same sizes in the pools."""
        import cupy as cp

        if self.staging is None or self.staging.size < nbytes:
            self.staging = self.arena = None  # back to the pools before the larger ones
            size = -(-max(size, nbytes) // SLOT_ROUND) * SLOT_ROUND
            self.staging = aligned(
                lambda n: np.frombuffer(cp.cuda.alloc_pinned_memory(n), np.uint8, n),
                size,
                GPU_ALIGN,
            )
            self.arena = cp.empty(size, cp.uint8)
        return self.staging[:nbytes], self.arena

    def finish(self, objects: StoredObjects) -> list[int]:
        """Waits for the piece decoding here; its finished tensors (``CorruptChunkError`` for a
        chunk that failed)."""
        if self.batch is None or self.part is None:
            return []
        batch, part = self.batch, self.part
        self.batch = self.part = self.scratch = None
        try:
            batch.check()
        except ChunkError as exc:
            where = chunk_key(objects.tensors, part.chunks.start + exc.index)
            raise CorruptChunkError([where], exc.reason) from None
        return part.finished


def stream_to_gpu(
    objects: StoredObjects, allocate: Callable[[StagedTensor], Any], window: int | None
) -> Iterator[tuple[StagedTensor, Any]]:
    """Each staged tensor with its destination on the current device (``allocate``: a CuPy
    uint8 array of at least ``padded_nbytes``), as soon as it is decoded, in storage order;
    see the module documentation."""
    import cupy as cp

    index, dst_offsets, dst_lens = _destinations(objects.tensors)
    copies = cp.cuda.Stream(non_blocking=True)
    decodes = cp.cuda.Stream(non_blocking=True)
    slots = [_Slot() for _ in range(PIECES)]
    live: dict[int, Any] = {}
    device = cp.cuda.Device().id
    limit = check_window(window) // PIECES
    # a slot's buffers: a piece's most, or the whole batch where that is less
    size = min(limit, sum(objects.sizes)) + sum(objects.nchunks) * 2 * GPU_ALIGN
    turn = 0
    try:
        for part, data in _sources(objects, pieces(objects, limit)):
            slot = slots[turn % PIECES]
            turn += 1
            for t in slot.finish(objects):
                yield objects.tensors[t], live.pop(t)
            for t in part.tensors:
                if t not in live:
                    live[t] = allocate(objects.tensors[t])
            destinations = (index, dst_offsets, dst_lens)
            _stage(objects, part, data, slot, size, live, destinations, copies, decodes, device)
            del data
        for _ in range(PIECES):
            slot = slots[turn % PIECES]
            turn += 1
            for t in slot.finish(objects):
                yield objects.tensors[t], live.pop(t)
    finally:
        # on an error or an abandoned load, nothing may still write into memory freed here
        copies.synchronize()
        decodes.synchronize()


def _stage(
    objects: StoredObjects,
    part: Piece,
    data: list[Any],
    slot: _Slot,
    size: int,
    live: dict[int, Any],
    destinations: tuple[np.ndarray, np.ndarray, np.ndarray],
    copies: Any,
    decodes: Any,
    device: int,
) -> None:
    """Reads, uploads and plans a piece in ``slot`` (free: its last piece is finished), and
    enqueues its decode after the upload."""
    import cupy as cp

    index, dst_offsets, dst_lens = destinations
    c = part.chunks
    sizes, per_shard, nchunks, first = _object_arrays(objects, part, data)
    bases = np.asarray([live[int(t)].data.ptr for t in index[c.start : c.stop]], np.uint64)
    out_ptrs = bases + dst_offsets[c.start : c.stop]
    lens = dst_lens[c.start : c.stop]
    # the kernel writes 16-byte aligned outputs: chunks elsewhere decode into a scratch area and
    # are copied into place
    apart = np.flatnonzero(out_ptrs % GPU_ALIGN)
    room = (lens[apart] + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN
    places = np.cumsum(room) - room
    targets = out_ptrs[apart]
    with decodes:
        scratch = cp.empty(max(int(room.sum()), 1), cp.uint8)
    out_ptrs[apart] = scratch.data.ptr + places
    layout = ObjectSlots(sizes.tolist(), nchunks.tolist(), GPU_ALIGN)
    staging, arena = slot.buffers(layout.nbytes, size)
    offsets = np.zeros(len(c), np.uint64)
    try:
        plan = cuda().stage_and_plan(
            data,
            layout.sizes,
            layout.starts,
            layout.lens,
            per_shard,
            nchunks.astype(np.uint32),
            first,
            staging,
            GPU_ALIGN,
            arena.data.ptr,
            out_ptrs,
            lens,
            offsets,
            np.zeros_like(offsets),
            device,
            copies.ptr,
            0,
        )
    except StageError as exc:
        raise ValueError(f"{objects.keys[part.objects.start + exc.index]}: {exc.reason}") from None
    except ChunkError as exc:
        where = chunk_key(objects.tensors, c.start + exc.index)
        raise CorruptChunkError([where], exc.reason) from None
    decodes.wait_event(copies.record())
    batch = PreparedBatch.planned(plan, arena, staging, decodes)
    batch.launch()
    with decodes:
        for k, place, target in zip(apart, places.tolist(), targets.tolist(), strict=True):
            n = int(lens[k])
            cp.cuda.runtime.memcpyAsync(
                target,
                scratch.data.ptr + place,
                n,
                cp.cuda.runtime.memcpyDeviceToDevice,
                decodes.ptr,
            )
    slot.batch, slot.part, slot.scratch = batch, part, scratch


def load_to_gpu(
    tensors: Sequence[StoredTensor],
    device: str,
    framework: str,
    window: int | None = None,
    done: Callable[[int], object] | None = None,
) -> dict[str, Any]:
    """The tensors on ``device`` as CuPy arrays (bfloat16/float8 as same-width unsigned
    integers) or PyTorch tensors; see the module documentation. The tensors of one call are
    views of one device allocation. ``done`` as for ``load_to_cpu``."""
    import cupy as cp

    with cp.cuda.Device(int(device.partition(":")[2] or 0)):
        objects = stored_objects(tensors)
        results: dict[str, Any] = {}
        if objects.tensors:
            nbytes = sum(-(-padded_nbytes(t) // BLOCK_ALIGN) * BLOCK_ALIGN for t in objects.tensors)
            total = cp.cuda.Device().mem_info[1]
            if nbytes > total:
                # the sizes come from the manifest: a claim past the card is refused, not tried
                raise ValueError(
                    f"the tensors to load claim {nbytes} bytes, more than {device}'s memory "
                    f"({total} bytes)"
                )
            block = cp.empty(nbytes, cp.uint8)
            places = _block(objects.tensors, lambda _: block)
            typed = _TorchViews(block) if framework == "torch" else None
            for t, dest in stream_to_gpu(objects, lambda t: places[id(t)], window):
                view = gpu_view(t, dest, "cupy") if typed is None else typed.view(t, dest)
                results[t.tensor.name] = view
                if done is not None:
                    done(t.tensor.nbytes)
            objects.check_unchanged()
        out: dict[str, Any] = {}
        for tensor in tensors:
            result = results.get(tensor.name)
            if result is None:
                result = upload(tensor.numpy(), tensor.dtype, framework)
                if done is not None:
                    done(tensor.nbytes)
            out[tensor.name] = result
        return out


class _TorchViews:
    """PyTorch views of tensors in one device block: one ``as_strided`` each, on a view of the
    block per dtype (a few microseconds a tensor)."""

    def __init__(self, block: Any) -> None:
        self.block = block
        self.base = to_torch(block, np.uint8)
        self.typed: dict[Any, Any] = {}

    def view(self, t: StagedTensor, dest: Any) -> Any:
        import torch

        dtype = t.tensor.dtype
        if dtype not in self.typed:
            self.typed[dtype] = self.base.view(torch_dtype(dtype))
        shape = t.tensor.shape
        strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
        offset = (dest.data.ptr - self.block.data.ptr) // dtype.itemsize
        return torch.as_strided(self.typed[dtype], shape, strides, offset)


def upload(host: np.ndarray, dtype: Any, framework: str) -> Any:
    """A host array copied to the current device as ``framework`` holds it."""
    import cupy as cp

    result = cp.asarray(host.view(storage_dtype(host.dtype)))
    return to_torch(result, dtype) if framework == "torch" else result


def gpu_view(t: StagedTensor, dest: Any, framework: str) -> Any:
    """The tensor in its device destination's first bytes, as CuPy (bfloat16 and float8 as
    same-width unsigned integers) or PyTorch holds it."""
    import cupy as cp

    shape = t.tensor.shape
    if framework != "torch":
        return cp.ndarray(shape, storage_dtype(t.tensor.dtype), memptr=dest.data)
    import torch

    dtype = t.tensor.dtype
    typed = to_torch(dest[: padded_nbytes(t)], np.uint8).view(torch_dtype(dtype))
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]
    return torch.as_strided(typed, shape, strides, 0)


def iter_tensors(
    tensors: Sequence[StoredTensor], device: str, framework: str, window: int | None = None
) -> Iterator[tuple[str, Any]]:
    """``(name, tensor)`` for each tensor in the order given (storage order, for whole loads),
    each in memory of its own, handed over as soon as it is decoded: the loads' streaming
    (see the module documentation) with a destination per tensor."""
    objects = stored_objects(tensors)
    staged = {t.tensor.name for t in objects.tensors}
    if not device.startswith("cuda"):
        cpu = stream_to_cpu(objects, lambda t: host_block(padded_nbytes(t)), check_window(window))
        for tensor in tensors:
            if tensor.name in staged:
                t, dest = next(cpu)
                data = cpu_view(t, dest)
            else:
                data = tensor.numpy()
            yield tensor.name, to_framework(data, framework, device)
        objects.check_unchanged()
        return
    import cupy as cp

    on = cp.cuda.Device(int(device.partition(":")[2] or 0))
    with on:
        gpu = stream_to_gpu(objects, lambda t: cp.empty(padded_nbytes(t), cp.uint8), window)
    for tensor in tensors:
        # the device is current while the stream works, not while the caller holds a tensor
        with on:
            if tensor.name in staged:
                t, dest = next(gpu)
                value = gpu_view(t, dest, framework)
            else:
                value = upload(tensor.numpy(), tensor.dtype, framework)
        yield tensor.name, value
    objects.check_unchanged()
