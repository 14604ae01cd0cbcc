"""Where a tensor's chunks are stored, and getting them without zarr. A tensor whose chunks span
every dimension but the first (the layout ``convert`` writes for 2-D weights) has chunk ``i``
holding the contiguous run of rows ``[i * rows, (i + 1) * rows)``, so a range of rows is a run
of whole chunks: ``read_rows`` fetches such a run (the shard index, then one ranged GET per
shard touched) and decodes it in one native call, and ``stored_objects`` lists every object of
whole tensors for the batch loads (``batch``).

Shard objects follow the Zarr sharding format with the layout zarr writes by default
(``layout.index_entries``). The functions here take any object with the attributes of
``StoredTensor`` (``reader.StoredTensor`` is the one the package passes).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..codec.chunks import decode_batch
from ..codec.errors import ChunkError
from ..storage import local_root
from ..zarr.pipeline import CorruptChunkError
from .layout import check_row_order, index_entries


class StoredCheckpoint(Protocol):
    """The store a tensor's objects are in and their keys (``reader.Checkpoint``)."""

    @property
    def store(self) -> Store: ...

    def chunk_key(self, path: str, coords: tuple[int, ...]) -> str: ...

    def check_unchanged(self) -> None: ...


class StoredTensor(Protocol):
    """A tensor (or a region of one) of a checkpoint (``reader.StoredTensor``)."""

    @property
    def name(self) -> str: ...

    @property
    def checkpoint(self) -> StoredCheckpoint: ...

    @property
    def info(self) -> Mapping[str, Any]: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype[Any]: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def chunks(self) -> tuple[int, ...]: ...

    @property
    def shards(self) -> tuple[int, ...] | None: ...

    @property
    def is_whole(self) -> bool: ...

    def numpy(self) -> np.ndarray: ...


@dataclass
class RowLayout:
    rows: int  # rows per chunk
    per_shard: int  # chunks per shard object (1 when unsharded)


def row_layout(tensor: StoredTensor) -> RowLayout | None:
    """The chunk layout (from the manifest) when chunks are runs of whole rows, else None."""
    shape, chunks, shards = tensor.shape, tensor.chunks, tensor.shards
    if tensor.info["codec"] != "wcodec" or not shape or 0 in shape or chunks[1:] != shape[1:]:
        return None
    if shards is None:
        return RowLayout(chunks[0], 1)
    if shards[1:] != chunks[1:]:
        return None
    return RowLayout(chunks[0], shards[0] // chunks[0])


def _inner_chunks(key: str, blob: np.ndarray, count: int) -> list[np.ndarray | None]:
    """The inner chunks of a shard object, in index order (None where not stored)."""
    size = count * 16 + 4
    if blob.size < size:
        raise ValueError(f"{key}: shard of {blob.size} bytes is shorter than its index")
    entries = index_entries(key, blob[-size:], count)
    check_row_order(key, [e for e in entries if e is not None])
    out: list[np.ndarray | None] = []
    for entry in entries:
        if entry is None:
            out.append(None)
        elif entry[0] + entry[1] > blob.size - size:
            raise ValueError(f"{key}: shard index entry [{entry[0]}, +{entry[1]}) is out of range")
        else:
            out.append(blob[entry[0] : entry[0] + entry[1]])
    return out


async def _shard_chunks(
    store: Store, key: str, per_shard: int, first: int, stop: int, chunk_nbytes: int
) -> list[np.ndarray]:
    """Inner chunks ``[first, stop)`` of a shard: its index (a suffix request; read-only stores
    from ``open_store`` cache it), then one ranged GET for the run of chunks, which zarr stores
    one after another. Entries are checked against what chunks of ``chunk_nbytes`` decoded
    bytes can take before anything is requested: the object's size is not known here, and a
    hostile entry could otherwise ask for exabytes."""
    prototype = default_buffer_prototype()
    index = await store.get(key, prototype, SuffixByteRequest(per_shard * 16 + 4))
    if index is None:
        raise ValueError(f"{key}: object missing from the store")
    entries = index_entries(key, index.as_numpy_array(), per_shard)[first:stop]
    if any(e is None for e in entries):
        raise ValueError(f"{key}: a chunk is missing from the shard")
    spans = [e for e in entries if e is not None]
    check_row_order(key, spans, first)
    # an encoded chunk is never near twice its decoded size (raw planes store their bytes)
    largest = 2 * chunk_nbytes + (1 << 20)
    for offset, nbytes in spans:
        if nbytes > largest or offset > per_shard * largest:
            raise ValueError(f"{key}: shard index entry [{offset}, +{nbytes}) is out of range")
    if all(a[0] + a[1] == b[0] for a, b in itertools.pairwise(spans)):
        runs = [(spans[0][0], spans[-1][0] + spans[-1][1])]
    else:  # in order with gaps between them (written by another tool): one GET per chunk
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
    blob = (await fetch(store, [key]))[0]
    chunks = _inner_chunks(key, blob, per_shard)[first:stop]
    if any(c is None for c in chunks):
        raise ValueError(f"{key}: a chunk is missing from the shard")
    return [c for c in chunks if c is not None]


async def _rows_chunks(tensor: StoredTensor, layout: RowLayout, first: int, stop: int) -> list[Any]:
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
            jobs.append((key, lo, fetch(store, [key])))
        elif lo == 0 and hi == min(layout.per_shard, chunks - shard * layout.per_shard):
            # every chunk of the shard: the whole object in one GET, its index at the end
            jobs.append((key, lo, _whole_shard(store, key, layout.per_shard, lo, hi)))
        else:
            chunk_nbytes = layout.rows * math.prod(tensor.shape[1:]) * tensor.dtype.itemsize
            jobs.append(
                (key, lo, _shard_chunks(store, key, layout.per_shard, lo, hi, chunk_nbytes))
            )
    results = await asyncio.gather(*(job for _, _, job in jobs))
    return [
        (data, f"{key} (inner chunk {lo + i})" if tensor.shards is not None else key)
        for (key, lo, _), chunks in zip(jobs, results, strict=True)
        for i, data in enumerate(chunks)
    ]


def read_rows(tensor: StoredTensor, start: int, stop: int) -> np.ndarray | None:
    """Rows ``[start, stop)`` of a whole tensor, fetched and decoded without zarr: one ranged
    GET per shard touched and one native decode call into the result. None when the fast path
    does not apply (see the module documentation)."""
    layout = row_layout(tensor) if tensor.is_whole else None
    if layout is None or not 0 <= start < stop <= tensor.shape[0]:
        return None
    first, last = start // layout.rows, -(-stop // layout.rows)
    found = sync(_rows_chunks(tensor, layout, first, last))
    dest = np.empty(((last - first) * layout.rows, *tensor.shape[1:]), tensor.dtype)
    outs = [dest[i * layout.rows : (i + 1) * layout.rows] for i in range(len(found))]
    with naming([where for _, where in found]):
        decode_batch([data for data, _ in found], outs=outs)
    offset = first * layout.rows
    return dest[start - offset : stop - offset]


async def fetch(store: Store, keys: list[str]) -> list[np.ndarray]:
    prototype = default_buffer_prototype()

    async def one(key: str) -> np.ndarray:
        buffer = await store.get(key, prototype)
        if buffer is None:
            raise ValueError(f"{key}: object missing from the store")
        return buffer.as_numpy_array()

    return list(await asyncio.gather(*(one(k) for k in keys)))


@dataclass
class StagedTensor:
    tensor: StoredTensor
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


RANGE_PART = 8 << 20  # remote objects beyond this are fetched as parallel ranged GETs of it
CHUNK_SLACK = 64 << 10  # an encoded chunk's most bytes beyond its decoded size (header, tables)


@dataclass
class StoredObjects:
    """The stored objects of a batch's whole tensors, their chunks numbered in object order."""

    tensors: list[StagedTensor]
    keys: list[str]
    sources: list[str] | None  # file paths (a local store); None: fetch them (``fetch_objects``)
    sizes: list[int]  # a local object's size; a remote one's expected size (``expected_size``)
    most: list[int]  # the most bytes each object's chunks can take (``most_size``)
    per_shard: list[int]  # inner chunks of each shard; 0 for a plain chunk
    nchunks: list[int]  # chunks each object holds for the batch
    store: Store | None  # where they are stored (None when there are none)
    checkpoint: StoredCheckpoint | None  # the checkpoint they are of (None when there are none)

    def check_unchanged(self) -> None:
        """After the objects were read: ``ReplacedError`` when their checkpoint was replaced
        meanwhile (``Checkpoint.check_unchanged``)."""
        if self.checkpoint is not None:
            self.checkpoint.check_unchanged()


def stored_objects(tensors: Sequence[StoredTensor]) -> StoredObjects:
    """The objects of every tensor the fast path applies to (others are left out), in the
    order of the tensors and of their rows: local ones as file paths, remote ones by key (none
    is fetched here)."""
    eligible = [
        (t, layout) for t in tensors if t.is_whole and (layout := row_layout(t)) is not None
    ]
    stores = {id(t.checkpoint.store): t.checkpoint.store for t, _ in eligible}
    if len(stores) > 1:
        raise ValueError("tensors of one batch must come from one checkpoint")
    staged: list[StagedTensor] = []
    keys: list[str] = []
    per_shard: list[int] = []
    nchunks: list[int] = []
    bounds: list[int] = []
    most: list[int] = []
    total = 0
    for tensor, layout in eligible:
        count = -(-tensor.shape[0] // layout.rows)
        names = _shard_keys(tensor, layout)
        t = StagedTensor(tensor, layout.rows, total, count, names, layout.per_shard)
        staged.append(t)
        for i, key in enumerate(names):
            keys.append(key)
            per_shard.append(0 if tensor.shards is None else layout.per_shard)
            n = min(layout.per_shard, count - i * layout.per_shard)
            nchunks.append(n)
            most.append(most_size(t, n, per_shard[-1]))
            bounds.append(expected_size(t, n, most[-1]))
        total += count
    store = next(iter(stores.values()), None)
    checkpoint = eligible[0][0].checkpoint if eligible else None
    root = None if store is None else local_root(store)
    if root is None:
        return StoredObjects(
            staged, keys, None, bounds, most, per_shard, nchunks, store, checkpoint
        )
    folder = str(root)
    sources = [f"{folder}/{key}" for key in keys]
    try:
        found = [os.stat(path) for path in sources]
    except FileNotFoundError as exc:
        key = keys[sources.index(str(exc.filename))]
        raise ValueError(f"{key}: object missing from the store") from None
    for key, info in zip(keys, found, strict=True):
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the staging's reads
            raise ValueError(f"{key}: not a regular file")
    sizes = [info.st_size for info in found]
    for key, size, limit in zip(keys, sizes, most, strict=True):
        check_size(key, size, limit)
    return StoredObjects(staged, keys, sources, sizes, most, per_shard, nchunks, store, checkpoint)


def object_limit(chunk_nbytes: int, nchunks: int, per_shard: int) -> int:
    """The most bytes an object of ``nchunks`` chunks of ``chunk_nbytes`` decoded bytes each
    (a shard of ``per_shard`` inner chunks, or a plain chunk when 0) can take: each chunk's
    decoded size with room for its header and tables (and zstd's worst case, for chunks read
    through zarr), and the shard index."""
    return nchunks * (chunk_nbytes + chunk_nbytes // 128 + CHUNK_SLACK) + per_shard * 16 + 4


def most_size(t: StagedTensor, nchunks: int, per_shard: int) -> int:
    """The most bytes an object of ``nchunks`` chunks of the tensor can take (``object_limit``)."""
    return object_limit(t.chunk_nbytes, nchunks, per_shard)


def check_size(key: str, size: int, most: int) -> None:
    """An object larger than its chunks can take is refused before anything is allocated for
    it: a hostile size (a sparse file, a server's answer) would otherwise size the buffers."""
    if size > most:
        raise ValueError(
            f"{key}: object of {size} bytes is larger than its chunks can take ({most} bytes)"
        )


def expected_size(t: StagedTensor, nchunks: int, most: int) -> int:
    """The bytes an object of ``nchunks`` chunks of the tensor should take, from the tensor's
    stored size in the manifest: what loads plan their pieces by, without a request. Kept
    between a sixteenth of the chunks' decoded size and ``most`` (``most_size``)."""
    share = int(t.tensor.info.get("stored_nbytes", most)) * nchunks // t.count
    return min(most, max(share, nchunks * t.chunk_nbytes // 16))


async def fetch_objects(
    store: Store,
    keys: Sequence[str],
    bounds: Sequence[int],
    most: Sequence[int],
    part_size: int = RANGE_PART,
) -> list[np.ndarray]:
    """The objects' bytes, fetched concurrently. One that may be larger than ``part_size``
    (``bounds``) is fetched as ranged GETs of that size in parallel, after a request for its
    size, so that one large shard does not hold up a load on one connection. An object larger
    than ``most`` is refused (``check_size``). A store's error (an ``OSError``, once its
    retries are spent) names the key."""
    prototype = default_buffer_prototype()

    async def ranged(key: str, limit: int) -> np.ndarray:
        try:
            size = await store.getsize(key)
        except FileNotFoundError:
            raise ValueError(f"{key}: object missing from the store") from None
        check_size(key, size, limit)
        out = np.empty(size, np.uint8)

        async def part(start: int, stop: int) -> None:
            buffer = await store.get(key, prototype, RangeByteRequest(start, stop))
            if buffer is None:
                raise ValueError(f"{key}: object missing from the store")
            data = buffer.as_numpy_array()
            if data.size != stop - start:
                raise ValueError(f"{key}: object changed size while it was read")
            out[start:stop] = data

        starts = range(0, size, part_size)
        await asyncio.gather(*(part(a, min(a + part_size, size)) for a in starts))
        return out

    async def whole(key: str, limit: int) -> np.ndarray:
        data = (await fetch(store, [key]))[0]
        check_size(key, data.size, limit)
        return data

    async def named(key: str, bound: int, limit: int) -> np.ndarray:
        try:
            return await (ranged(key, limit) if bound > part_size else whole(key, limit))
        except OSError as exc:  # the store's own errors (after its retries) name no key
            raise _naming(exc, key) from exc

    jobs = zip(keys, bounds, most, strict=True)
    return list(await asyncio.gather(*(named(k, b, m) for k, b, m in jobs)))


def _naming(exc: OSError, key: str) -> OSError:
    """``exc`` (of its own class where that takes a message) with ``key`` in its message."""
    try:
        return type(exc)(f"{key}: {exc}")
    except TypeError:
        return OSError(f"{key}: {exc}")


@contextlib.contextmanager
def naming(where: list[str]) -> Iterator[None]:
    """A corrupt chunk's error names its object (and inner chunk), as zarr reads do."""
    try:
        yield
    except ChunkError as exc:
        raise CorruptChunkError([where[exc.index]], exc.reason) from None


def _shard_keys(tensor: StoredTensor, layout: RowLayout) -> list[str]:
    """Store keys of the tensor's shard objects (chunk objects when unsharded), in row order,
    by the array's chunk key encoding (``<name>/c.<i>.0...`` as ``convert`` writes it)."""
    per_object = layout.rows * layout.per_shard
    count = -(-tensor.shape[0] // per_object)
    rest = (0,) * (len(tensor.shape) - 1)
    return [tensor.checkpoint.chunk_key(tensor.name, (i, *rest)) for i in range(count)]
