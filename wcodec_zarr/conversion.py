"""``convert``: a safetensors model (one file, a sharded model with its index, or a directory)
becomes a compressed Zarr checkpoint.

Layout: one array per tensor under its original name in the root group. Tensors of a wcodec
dtype use the ``wcodec`` serializer, others (bool, 64-bit, ...) zstd, and dtypes NumPy cannot
hold (F4, F8_E8M0, ...) are kept as their raw bytes (uint8, wcodec). Chunks are bands of whole
rows of at most ``chunk_bytes``; shards group whole chunks up to ``shard_bytes``; a tensor of a
single chunk is not sharded.

Work is one task per shard: read that region of the source file, encode, write one object.
Memory stays bounded by a few shards, never the whole model. Tasks run in this process (the
native encoder uses every core) or as Dask tasks (``workers=``).

Nothing is marked complete until every tensor is written: the root group's ``wcodec_checkpoint``
attribute (the manifest that ``open_checkpoint`` requires) is written last, with the
consolidated metadata. A local destination is built beside its final path and renamed into
place, so it either appears complete or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ._native import core
from .documents import (
    CHUNK_KEYS,
    ArraySpec,
    Target,
    make_targets,
    root_document,
    write_documents,
)
from .dtypes import dtype_code, is_supported
from .safetensors_file import Header, TensorEntry, read_header, read_into, read_region
from .shard_writer import encode_object_parts, object_key, write_object
from .storage import filesystem, local_path, local_root, open_store
from .weights import quantize_rows

MANIFEST_KEY = "wcodec_checkpoint"
# 2: chunk keys "c.0.0" (version 1 wrote "c/0/0"; readers follow each array's metadata)
MANIFEST_VERSION = 2
READABLE_MANIFEST_VERSIONS = (1, 2)
SCALES_GROUP = "_wcodec_scales"
CHUNK_BYTES = 1 << 20
SHARD_BYTES = 64 << 20
IN_FLIGHT_BYTES = 128 << 20  # source bytes of the tasks in flight in this process
MAX_TASKS = 8
QUANTIZE_SCHEME = "int8, symmetric, per output row: w ~ q * scale[row]"


@dataclass(frozen=True)
class SourceFile:
    name: str  # the file name the checkpoint presents (relative to the model directory)
    url: str
    size: int
    header: Header


@dataclass(frozen=True)
class Source:
    files: tuple[SourceFile, ...]
    index: tuple[str, str] | None  # (file name, text) of model.safetensors.index.json


@dataclass(frozen=True)
class TensorPlan:
    entry: TensorEntry
    file: SourceFile
    dtype: np.dtype[Any]  # the stored dtype
    shape: tuple[int, ...]  # the stored shape (raw-byte tensors: their byte count)
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    codec: str  # "wcodec" or "zstd"
    quantized: bool

    @property
    def path(self) -> str:
        return self.entry.name


@dataclass(frozen=True)
class RegionTask:
    """One shard of one tensor: everything a worker process needs to write it (the targets
    pickle with their store)."""

    tensor: Target
    scales: Target | None  # a quantized tensor's row scales
    storage_options: dict[str, Any] | None
    src: str
    offset: int  # absolute file offset of the tensor's first byte
    dtype: np.dtype[Any]  # of the source bytes
    shape: tuple[int, ...]
    region: tuple[tuple[int, int], ...]


def _check_name(name: str) -> None:
    parts = name.split("/")
    if (
        not name
        or any(not p or p in (".", "..") or p.startswith("__") for p in parts)
        or parts[0] == SCALES_GROUP
    ):
        raise ValueError(f"tensor name {name!r} cannot be a Zarr array path")


def _open_file(url: str, storage_options: dict[str, Any] | None) -> SourceFile:
    fs, path = filesystem(url, storage_options)
    if not fs.isfile(path):
        raise FileNotFoundError(f"{url}: no such file")
    size = int(fs.size(path))
    with fs.open(path, "rb") as f:
        header = read_header(f, size, url)
    return SourceFile(name=Path(path).name, url=url, size=size, header=header)


def resolve_source(src: str | Path, storage_options: dict[str, Any] | None = None) -> Source:
    """The files of a model: one ``.safetensors`` file, an ``*.index.json`` with its shards, or
    a directory holding either (every ``*.safetensors`` in it without an index). Every header
    is read and validated here, before anything is written."""
    fs, path = filesystem(src, storage_options)
    base = str(src).rstrip("/")
    if fs.isdir(path):
        names = sorted(Path(p).name for p in fs.ls(path, detail=False))
        indexes = [n for n in names if n.endswith(".safetensors.index.json")]
        if len(indexes) > 1:
            raise ValueError(f"{src}: several index files ({', '.join(indexes)}); pass one")
        if indexes:
            return resolve_source(f"{base}/{indexes[0]}", storage_options)
        found = [n for n in names if n.endswith(".safetensors")]
        if not found:
            raise FileNotFoundError(f"{src}: no .safetensors files")
        return Source(tuple(_open_file(f"{base}/{n}", storage_options) for n in found), None)
    if not fs.isfile(path):
        raise FileNotFoundError(f"{src}: no such file or directory")
    if not path.endswith(".json"):
        return Source((_open_file(str(src), storage_options),), None)
    text = fs.cat_file(path).decode("utf-8")
    try:
        weight_map = json.loads(text)["weight_map"]
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) and "/" not in v for v in weight_map.values()
        ):
            raise TypeError("weight_map must map tensor names to file names")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{src}: not a safetensors index: {exc}") from None
    folder = base.rsplit("/", 1)[0] if "/" in base else "."
    files = tuple(
        _open_file(f"{folder}/{n}", storage_options) for n in sorted(set(weight_map.values()))
    )
    listed = {t.name: f.name for f in files for t in f.header.tensors}
    if listed != weight_map:
        missing = (
            sorted(set(weight_map) ^ set(listed))[:3]
            or [k for k in weight_map if weight_map[k] != listed[k]][:3]
        )
        raise ValueError(f"{src}: the index and the files disagree about {missing}")
    return Source(files, (Path(path).name, text))


TP_PARTS = 8  # chunk boundaries fall on the parts of an 8-way row split
TP_MIN_FRACTION = 64  # such chunks hold at least 1/64 of the target (16 KiB of 1 MiB)


def _tp_rows(rows: int, row_bytes: int, target: int) -> int | None:
    """Rows per chunk such that every ``ceil(rows / TP_PARTS)`` rows (a rank's part of an 8-way
    split, as ``Checkpoint.shard`` and PyTorch's ``torch.chunk`` make it; of 4- and 2-way splits
    too when the rows divide evenly) are whole chunks: the part itself, or its largest divisor
    that fits ``target``. None when the part is under
    ``target / TP_MIN_FRACTION`` (smaller chunks cost more in headers and tables than they
    save) or no divisor gives chunks of at least a quarter of ``target``."""
    part = -(-rows // TP_PARTS)
    if rows < TP_PARTS or part * row_bytes < target // TP_MIN_FRACTION:
        return None
    if part * row_bytes <= target:
        return part
    for k in range(-(-part * row_bytes // target), part + 1):
        if (part // k) * row_bytes < target // 4:
            return None
        if part % k == 0:
            return part // k
    return None


def chunk_shape(shape: tuple[int, ...], itemsize: int, target: int) -> tuple[int, ...]:
    """Bands of whole rows (every dimension but the first kept whole) of at most ``target``
    bytes; only a row larger than ``target`` is split, the same way, along its own dimensions.
    Row bands keep reads of row ranges (tensor-parallel shards) contiguous, and let a whole
    tensor decode straight into its destination (``batch_load``).

    Where ``_tp_rows`` finds one, the row count makes a tensor-parallel rank's rows whole
    chunks, so that reading them fetches nothing else: a small weight (a 384x384 int8 matrix,
    147 KB) becomes eight chunks of its eight parts instead of one. Otherwise the row count is
    rounded to a multiple of 16 bytes, so that chunk views of a destination stay aligned for
    the GPU decoder."""
    chunk = [max(d, 1) for d in shape]
    if shape:
        rows = _tp_rows(shape[0], math.prod(chunk[1:]) * itemsize, target)
        if rows is not None:
            return (rows, *chunk[1:])
    for d in range(len(chunk)):
        inner = math.prod(chunk[d + 1 :]) * itemsize
        if inner * chunk[d] <= target:
            break
        if inner <= target:
            rows = target // inner
            step = 16 // math.gcd(inner, 16)
            chunk[d] = rows - rows % step if rows >= step else rows
            break
        chunk[d] = 1
    return tuple(chunk)


def shard_shape(
    shape: tuple[int, ...], chunks: tuple[int, ...], itemsize: int, target: int
) -> tuple[int, ...] | None:
    """Whole chunks grouped up to ``target`` bytes, the trailing dimensions filled first (so a
    shard of a 2-D weight is a band of whole rows); None when one chunk holds the tensor."""
    counts = [-(-max(s, 1) // c) for s, c in zip(shape, chunks, strict=True)]
    if math.prod(counts) <= 1:
        return None
    shard = list(chunks)
    for d in reversed(range(len(shape))):
        k = max(1, min(counts[d], target // (math.prod(shard) * itemsize)))
        shard[d] = chunks[d] * k
        if k < counts[d]:
            break
    return tuple(shard)


def plan_tensor(
    entry: TensorEntry,
    file: SourceFile,
    *,
    chunk_bytes: int,
    shard_bytes: int,
    quantize: str | None,
) -> TensorPlan:
    _check_name(entry.name)
    dtype = entry.numpy_dtype
    shape = entry.shape
    quantized = (
        quantize == "int8"
        and len(shape) == 2
        and entry.dtype in ("F32", "F16", "BF16")
        and 0 not in shape
    )
    if quantized:
        dtype = np.dtype(np.int8)
    if dtype is None:  # kept as raw bytes
        dtype, shape = np.dtype(np.uint8), (entry.nbytes,)
    if quantized:
        # whole rows per chunk: a row's scale needs the row
        rows = max(1, chunk_bytes // shape[1])
        chunks: tuple[int, ...] = (min(rows, shape[0]), shape[1])
    else:
        chunks = chunk_shape(shape, dtype.itemsize, chunk_bytes)
    return TensorPlan(
        entry=entry,
        file=file,
        dtype=dtype,
        shape=shape,
        chunks=chunks,
        shards=shard_shape(shape, chunks, dtype.itemsize, shard_bytes),
        codec="wcodec" if is_supported(dtype) else "zstd",
        quantized=quantized,
    )


def _regions(plan: TensorPlan) -> Iterator[tuple[tuple[int, int], ...]]:
    block = plan.shards or plan.chunks
    counts = [-(-s // b) if s else 1 for s, b in zip(plan.shape, block, strict=True)]
    for index in np.ndindex(*counts):
        yield tuple(
            (i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block, plan.shape, strict=True)
        )


def read_block(
    file: Any,
    offset: int,
    dtype: np.dtype[Any],
    shape: tuple[int, ...],
    region: tuple[tuple[int, int], ...],
) -> np.ndarray:
    """The ``region`` of a C-order tensor stored at ``offset`` of an open file, read in as few
    contiguous runs as the region allows (one when it spans whole trailing dimensions)."""
    if not shape:
        return read_region(file, offset, dtype.itemsize).view(dtype).reshape(())
    # the last dimension k that the region does not cover whole: runs are contiguous below it
    k = 0
    for d in range(len(shape)):
        if region[d] != (0, shape[d]):
            k = d
    inner = math.prod(shape[k + 1 :]) * dtype.itemsize
    lengths = [b - a for a, b in region]
    out = np.empty(math.prod(lengths) * dtype.itemsize, np.uint8)
    run = lengths[k] * inner
    strides = [math.prod(shape[d + 1 :]) * dtype.itemsize for d in range(len(shape))]
    for n, index in enumerate(np.ndindex(*lengths[:k])):
        start = sum((region[d][0] + i) * strides[d] for d, i in enumerate(index))
        start += region[k][0] * strides[k]
        read_into(file, offset + start, out[n * run : (n + 1) * run])
    return out.view(dtype).reshape(lengths)


def entropy_bound(data: np.ndarray) -> float | None:
    """Order-0 entropy of each byte plane of ``data`` (wcodec's plane layout), in bytes."""
    if not is_supported(data.dtype) or data.size == 0:
        return None
    flat = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    bits = core.plane_entropy(flat, dtype_code(data.dtype))
    return float(sum(bits)) * data.size / 8


@dataclass
class Region:
    """A task's output: objects encoded here (``shard_writer``), already written to a local
    store or ready to store, and array regions left to zarr (arrays whose codecs
    ``shard_writer`` does not write)."""

    objects: list[tuple[Target, str, list[bytes]]]  # remote: target, object key, bytes in parts
    through_zarr: list[tuple[Target, tuple[slice, ...], np.ndarray]]
    bound: float | None  # entropy bound in bytes (None if not a wcodec dtype)
    stored: int = 0  # bytes of objects already written to local stores


@dataclass(frozen=True)
class Written:
    bound: float | None  # the region's entropy bound in bytes (None if not a wcodec dtype)
    nbytes: int  # bytes of the objects encoded here (regions written through zarr not counted)


def _bound(counts: np.ndarray) -> float:
    """Order-0 entropy in bytes of byte planes given their symbol counts (planes x 256)."""
    total = counts.sum(axis=1, keepdims=True)
    p = np.where(counts > 0, counts / np.maximum(total, 1), 1.0)
    return float(-(counts * np.log2(p)).sum() / 8)


def _store_or_encode(
    target: Target, region: tuple[tuple[int, int], ...], data: np.ndarray, out: Region
) -> float | None:
    """Encodes the region's object into ``out``, or leaves it to zarr; returns the entropy
    bound of ``data`` in bytes (None if not a wcodec dtype)."""
    if target.layout is None:
        out.through_zarr.append((target, tuple(slice(a, b) for a, b in region), data))
        return entropy_bound(data)
    counts = target.layout.plane_counts()
    key = object_key(target.layout, region)
    root = local_root(target.store)
    if root is None:
        out.objects.append((target, key, encode_object_parts(target.layout, data, counts)))
    else:
        # a plain file per key, as zarr's local store writes, from this thread: the hops to
        # zarr's event loop and its file thread cost more than the write. The checkpoint is
        # complete only once its root document is written.
        path = os.path.join(root, target.path, key)
        out.stored += write_object(target.layout, data, path, counts)
    return _bound(counts)


def encode_task(task: RegionTask) -> Region:
    """A task's region read from its file, quantized when the tensor is, and encoded."""
    local = local_path(task.src)
    if local is not None:  # a plain file: fsspec's wrapper costs more than a small read
        with open(local, "rb") as f:
            data = read_block(f, task.offset, task.dtype, task.shape, task.region)
    else:
        fs, path = filesystem(task.src, task.storage_options)
        with fs.open(path, "rb") as f:
            data = read_block(f, task.offset, task.dtype, task.shape, task.region)
    scales = None
    if task.scales is not None:
        data, scales = quantize_rows(data)
    out = Region([], [], None)
    out.bound = _store_or_encode(task.tensor, task.region, data, out)
    if task.scales is not None and scales is not None:
        _store_or_encode(task.scales, task.region[:1], scales, out)
    return out


async def _commit(region: Region) -> Written:
    prototype = default_buffer_prototype()
    await asyncio.gather(
        *(
            target.store.set(f"{target.path}/{key}", prototype.buffer.from_bytes(b"".join(parts)))
            for target, key, parts in region.objects
        ),
        *(
            target.array()._async_array.setitem(selection, data)
            for target, selection, data in region.through_zarr
        ),
    )
    remote = sum(len(part) for _, _, parts in region.objects for part in parts)
    return Written(region.bound, region.stored + remote)


def write_region(task: RegionTask) -> Written:
    """Runs one task (in a thread here, or on a Dask worker)."""
    region = encode_task(task)
    if not region.objects and not region.through_zarr:
        return Written(region.bound, region.stored)  # all written locally: no event loop
    written: Written = sync(_commit(region))
    return written


async def write_region_async(task: RegionTask) -> Written:
    """``write_region`` on zarr's event loop: reading and encoding in a thread, the writes
    awaited, so that many tasks' fixed costs overlap."""
    region = await asyncio.to_thread(encode_task, task)
    return await _commit(region)


def _specs(plan: TensorPlan) -> list[ArraySpec]:
    """The tensor's array (and its scales' array when quantized)."""
    attributes: dict[str, Any] = {
        "safetensors": {
            "dtype": plan.entry.dtype,
            "shape": list(plan.entry.shape),
            "file": plan.file.name,
        }
    }
    if not plan.quantized:
        return [
            ArraySpec(
                plan.path, plan.dtype, plan.shape, plan.chunks, plan.shards, plan.codec, attributes
            )
        ]
    scales = f"{SCALES_GROUP}/{plan.path}"
    attributes["quantization"] = {"scheme": QUANTIZE_SCHEME, "scales": scales}
    return [
        ArraySpec(
            plan.path, plan.dtype, plan.shape, plan.chunks, plan.shards, plan.codec, attributes
        ),
        ArraySpec(
            scales,
            np.dtype(np.float32),
            (plan.shape[0],),
            ((plan.shards or plan.chunks)[0],),
            None,
            "wcodec",
            {},
        ),
    ]


@contextlib.contextmanager
def dask_client(workers: Any) -> Iterator[Any]:
    """A ``distributed`` client: ``workers`` is a worker count (a LocalCluster of that many
    single-threaded processes), a scheduler address, or a ``Client``."""
    import distributed

    if isinstance(workers, distributed.Client):
        yield workers
    elif isinstance(workers, str):
        with distributed.Client(workers) as client:  # type: ignore[no-untyped-call]
            yield client
    else:
        with (
            distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=int(workers),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            ) as cluster,
            distributed.Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            yield client


async def _gather_bounded(
    fn: Callable[[Any], Awaitable[Any]],
    tasks: Sequence[Any],
    weights: Sequence[int],
    budget: int,
    advance: Callable[[int], Any],
) -> list[Any]:
    """Runs the tasks in order, as many at once as fit in ``budget`` bytes of weight (at least
    one, at most ``MAX_TASKS``); results in task order. The first failure stops the launches."""

    async def run(task: Any, weight: int) -> Any:
        result = await fn(task)
        advance(weight)
        return result

    started: list[asyncio.Future[Any]] = []
    in_flight: list[tuple[asyncio.Future[Any], int]] = []
    for task, weight in zip(tasks, weights, strict=True):
        while in_flight and (
            len(in_flight) >= MAX_TASKS or sum(w for _, w in in_flight) + weight > budget
        ):
            done, _ = await asyncio.wait([f for f, _ in in_flight], return_when="FIRST_COMPLETED")
            for future in done:
                if future.exception() is not None:
                    await asyncio.gather(*(f for f, _ in in_flight), return_exceptions=True)
                    raise future.exception()  # type: ignore[misc]
            in_flight = [(f, w) for f, w in in_flight if f not in done]
        future = asyncio.ensure_future(run(task, weight))
        started.append(future)
        in_flight.append((future, weight))
    return list(await asyncio.gather(*started))


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    weights: Sequence[int],
    *,
    workers: Any,
    progress: bool | None,
    desc: str,
    local_fn: Callable[[Any], Awaitable[Any]] | None = None,
) -> list[Any]:
    """Runs ``fn`` over ``tasks`` here (``workers`` None or 1) or on Dask; results in task
    order. Here, ``local_fn`` (a coroutine function doing the same) runs on zarr's event loop
    instead when given. Tasks in flight here hold at most about ``IN_FLIGHT_BYTES``. The
    progress bar advances by each task's weight (bytes)."""
    from tqdm.auto import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=sum(weights), unit="B", unit_scale=True, desc=desc, disable=not show) as bar:
        if workers is None or workers == 1:
            # a few tasks in flight overlap one task's Python and I/O with another's encoding
            # (native code releases the GIL)
            budget = 0 if workers == 1 else IN_FLIGHT_BYTES
            if local_fn is not None:
                return sync(_gather_bounded(local_fn, tasks, weights, budget, bar.update))
            heaviest = max(weights, default=1)
            # more threads than CPUs only add switching (two still overlap reads with encoding)
            cpus = max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2)
            limit = max(1, min(MAX_TASKS, cpus, budget // max(heaviest, 1)))
            with ThreadPoolExecutor(limit) as pool:
                results = []
                for result, weight in zip(pool.map(fn, tasks), weights, strict=True):
                    results.append(result)
                    bar.update(weight)
                return results
        import distributed

        with dask_client(workers) as client:
            futures = client.map(fn, tasks, pure=False)
            position = {f.key: i for i, f in enumerate(futures)}
            for future in distributed.as_completed(futures):  # type: ignore[no-untyped-call]
                bar.update(weights[position[future.key]])
            gathered: list[Any] = client.gather(futures)
            return gathered


def _exists(url: str, storage_options: dict[str, Any] | None) -> bool:
    fs, path = filesystem(url, storage_options)
    return bool(fs.exists(path))


def _remove(url: str, storage_options: dict[str, Any] | None) -> None:
    fs, path = filesystem(url, storage_options)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    shard_bytes: int = SHARD_BYTES,
    chunk_bytes: int = CHUNK_BYTES,
    quantize: str | None = None,
    workers: Any = None,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Converts a safetensors model at ``src`` into a checkpoint at ``dst``; returns its
    manifest. ``quantize="int8"`` (lossy) stores 2-D float weights as per-row int8 with their
    scales. ``storage_options`` go to fsspec for remote ``src`` and ``dst``. See the module
    documentation for layout, memory and atomicity."""
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if chunk_bytes < 1 or shard_bytes < chunk_bytes:
        raise ValueError("need 1 <= chunk_bytes <= shard_bytes")
    source = resolve_source(src, storage_options)
    plans = [
        plan_tensor(t, f, chunk_bytes=chunk_bytes, shard_bytes=shard_bytes, quantize=quantize)
        for f in source.files
        for t in f.header.tensors
    ]
    names = [p.path for p in plans]
    if len(set(names)) != len(names):
        raise ValueError(f"{src}: a tensor name appears in more than one file")
    dst = str(dst)
    target = local_path(dst)
    if target is not None and target.suffix == ".zip":
        raise ValueError(f"{dst}: convert into a directory or a remote URL, not a zip file")
    if _exists(dst, storage_options) and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")

    # local: build beside the destination and rename into place; remote: write in place,
    # manifest last
    build = (
        str(target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}"))
        if target is not None
        else dst
    )
    if target is None:
        _remove(dst, storage_options)
    try:
        manifest = _write(source, plans, build, storage_options, workers, progress)
    except BaseException:
        if target is not None:
            shutil.rmtree(build, ignore_errors=True)
        raise
    if target is not None:
        _replace_dir(Path(build), target)
    return manifest


def _replace_dir(build: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    build.rename(target)
    shutil.rmtree(old, ignore_errors=True)


async def _data_nbytes(store: Store, prefix: str) -> int:
    """Bytes of the chunk and shard objects under ``prefix`` (metadata documents excluded)."""
    total = 0
    async for key in store.list_prefix(prefix):
        if not key.endswith("zarr.json"):
            total += await store.getsize(key)
    return total


async def _data_sizes(store: Store, prefixes: list[str]) -> list[int]:
    return list(await asyncio.gather(*(_data_nbytes(store, p) for p in prefixes)))


def _write(
    source: Source,
    plans: list[TensorPlan],
    dst: str,
    storage_options: dict[str, Any] | None,
    workers: Any,
    progress: bool | None,
) -> dict[str, Any]:
    store = open_store(dst, storage_options=storage_options, mode="w")
    specs = [_specs(plan) for plan in plans]
    targets = make_targets(store, [spec for pair in specs for spec in pair])
    arrays = write_documents(store, targets)
    target_of = {t.path: t for t in targets}
    tasks: list[RegionTask] = []
    weights: list[int] = []
    owners: list[str] = []
    for plan, pair in zip(plans, specs, strict=True):
        # the source bytes: raw-byte tensors are read as uint8, quantized ones as floats
        source_dtype = plan.entry.numpy_dtype if plan.entry.numpy_dtype is not None else plan.dtype
        for region in _regions(plan):
            tasks.append(
                RegionTask(
                    tensor=target_of[pair[0].path],
                    scales=target_of[pair[1].path] if len(pair) > 1 else None,
                    storage_options=storage_options,
                    src=plan.file.url,
                    offset=plan.file.header.data_start + plan.entry.begin,
                    dtype=source_dtype,
                    shape=plan.shape,
                    region=region,
                )
            )
            weights.append(math.prod(b - a for a, b in region) * source_dtype.itemsize)
            owners.append(plan.path)
    results: list[Written] = run_tasks(
        write_region,
        tasks,
        weights,
        workers=workers,
        progress=progress,
        desc="convert",
        # a local destination is written from the encoding threads (_store_or_encode); others
        # overlap their writes on zarr's event loop
        local_fn=None if local_root(store) is not None else write_region_async,
    )
    bound_of: dict[str, float | None] = {}
    stored_of: dict[str, int] = {}
    for owner, written in zip(owners, results, strict=True):
        previous = bound_of.get(owner, 0.0)
        bound = written.bound
        bound_of[owner] = None if bound is None or previous is None else previous + bound
        stored_of[owner] = stored_of.get(owner, 0) + written.nbytes
    # arrays written through zarr: their objects' sizes from the store
    through_zarr = [s.path for pair in specs for s in pair if target_of[s.path].layout is None]
    listed = sync(_data_sizes(store, [f"{path}/" for path in through_zarr])) if through_zarr else []
    for path, size in zip(through_zarr, listed, strict=True):
        owner = path.removeprefix(f"{SCALES_GROUP}/")
        stored_of[owner] = stored_of.get(owner, 0) + size
    tensors: dict[str, Any] = {}
    for plan in plans:
        tensors[plan.path] = {
            "file": plan.file.name,
            "dtype": str(plan.dtype),
            "shape": list(plan.shape),
            "chunks": list(plan.chunks),
            "shards": None if plan.shards is None else list(plan.shards),
            "codec": plan.codec,
            "nbytes": plan.entry.nbytes,
            "stored_nbytes": stored_of.get(plan.path, 0),
            "entropy_bound_bytes": bound_of.get(plan.path),
            "quantized": plan.quantized,
        }
    manifest = {
        "version": MANIFEST_VERSION,
        # every array's, as in its metadata: loads name objects without the consolidated metadata
        "chunk_key_encoding": CHUNK_KEYS.to_dict(),
        "files": [{"name": f.name, "size": f.size, "header": f.header.text} for f in source.files],
        "index": None
        if source.index is None
        else {"name": source.index[0], "text": source.index[1]},
        "tensors": tensors,
    }
    # written once and last: the checkpoint is complete only when this is there
    root = root_document(arrays, {MANIFEST_KEY: manifest})
    folder = local_root(store)
    if folder is not None:
        (folder / "zarr.json").write_bytes(root)  # the build folder is renamed into place later
    else:
        sync(store.set("zarr.json", default_buffer_prototype().buffer.from_bytes(root)))
    return manifest
