"""Whole tensors in one batch, with no per-chunk copies and no per-chunk Python. Every shard
index is read and checked first (local files by native threads, remote objects fetched
concurrently; ``objects.stored_objects``). On the CPU, native threads then read runs of chunks
into memory they keep and decode them there, straight into each destination tensor
(``decode_stored``), so reading overlaps decoding. For the GPU, native threads read every object
into one pinned buffer, each chunk's container parsed by the thread that read it; one copy to
the device, during which the plan is laid out (``stage_and_plan``), and one kernel launch decode
the batch.

This applies to wcodec tensors whose chunks are runs of whole rows (``objects.row_layout``); the
destination has room for the last chunk's padding and the tensor is a view of its first rows.
Other tensors go through the CPU and are copied up.
"""

from __future__ import annotations

import math
import mmap
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..codec.errors import ChunkError, StageError
from ..codec.gpu import PreparedBatch, storage_dtype
from ..codec.native import core, cuda
from ..codec.staging import ObjectSlots, aligned
from ..zarr.pipeline import CorruptChunkError
from .frameworks import to_torch, torch_dtype
from .objects import StagedTensor, StoredObjects, StoredTensor, chunk_key, stored_objects

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


def _block_offsets(tensors: list[StagedTensor]) -> tuple[list[int], int]:
    """Where each staged tensor's output starts in one block for the batch, and its size."""
    starts, total = [], 0
    for t in tensors:
        starts.append(total)
        total += -(-t.count * t.chunk_nbytes // BLOCK_ALIGN) * BLOCK_ALIGN
    return starts, total


def load_to_cpu(
    tensors: Sequence[StoredTensor], threads: int | None = None
) -> dict[str, np.ndarray]:
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
        objects.check_unchanged()
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


def load_to_gpu(tensors: Sequence[StoredTensor], device: str, framework: str) -> dict[str, Any]:
    """The tensors on ``device`` as CuPy arrays (bfloat16/float8 as same-width unsigned
    integers) or PyTorch tensors; see the module documentation. The tensors of one call are
    views of one device allocation."""
    import cupy as cp

    with cp.cuda.Device(int(device.partition(":")[2] or 0)):
        objects = stored_objects(tensors)
        results: dict[str, Any] = {}
        if objects.tensors:
            starts, total = _block_offsets(objects.tensors)
            block = cp.empty(total, cp.uint8)
            _decode_into(block, starts, objects)
            objects.check_unchanged()
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
        plan = cuda().stage_and_plan(
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
