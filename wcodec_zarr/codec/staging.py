"""Native object staging: stored objects (files, or their bytes) copied by native threads into
one buffer, each inner chunk of a shard at its own aligned offset, the shard indexes read and
checked on the way (``native/include/wcodec/staging.h``). The GPU decoder stages a batch this way
into pinned memory; whole-model loads do it object by object."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .native import core


def aligned(allocate: Callable[[int], np.ndarray], nbytes: int, align: int) -> np.ndarray:
    """``nbytes`` of memory from ``allocate`` starting at a multiple of ``align``."""
    raw = allocate(nbytes + align - 1)
    start = -raw.ctypes.data % align
    return raw[start : start + nbytes]


def place_objects(
    sources: list[Any],
    sizes: list[int],
    per_shard: list[int],
    nchunks: list[int],
    align: int,
    allocate: Callable[[int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objects copied into one new buffer by native threads: object ``k`` (a file path, or its
    bytes as a uint8 array)
    of ``sizes[k]`` bytes holds ``nchunks[k]`` chunks (a shard of ``per_shard[k]`` inner
    chunks, or one plain chunk when 0). Each object gets a slot with room for its chunks at
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
