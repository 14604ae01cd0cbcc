"""``convert``: a safetensors model (one file, a sharded model with its index, or a directory)
becomes a compressed Zarr checkpoint, laid out as ``layout`` says.

Work is one task per shard: read that region of the source file, encode, write one object.
Memory stays bounded by a few shards, never the whole model. Tasks run in this process (the
native encoder uses every core) or as Dask tasks (``workers=``; see ``tasks``).

Nothing is marked complete until every tensor is written: the root group's ``wcodec_checkpoint``
attribute (the manifest that ``open_checkpoint`` requires) is written last, with the
consolidated metadata. A local destination is built beside its final path and renamed into
place, so it either appears complete or not at all.
"""

from __future__ import annotations

import asyncio
import ctypes
import glob
import math
import os
import shutil
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from ..codec.dtypes import dtype_code, is_supported
from ..codec.native import core
from ..storage import filesystem, local_path, local_root, open_store, overlap
from .documents import ArraySpec, Target, make_targets, root_document, write_documents
from .layout import (
    CHECKSUM_HEAD,
    CHUNK_BYTES,
    CHUNK_KEYS,
    MANIFEST_KEY,
    MANIFEST_VERSION,
    OTHER_FILES,
    SCALES_GROUP,
    SHARD_BYTES,
    UNSEALED,
    TensorPlan,
    check_names_apart,
    partial_prefix,
    plan_tensor,
    regions,
    seal_root,
)
from .quantize import QUANTIZE_SCHEME, quantize_rows
from .shard_writer import encode_object_parts, object_key, write_object
from .source import OtherFile, Source, read_block, resolve_source
from .tasks import run_tasks


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
    check_names_apart(names)
    dst = str(dst)
    _check_apart(dst, src, source)
    target = local_path(dst)
    if target is not None and target.suffix == ".zip":
        raise ValueError(f"{dst}: convert into a directory or a remote URL, not a zip file")
    if _exists(dst, storage_options) and not overwrite:
        raise FileExistsError(f"{dst} exists; pass overwrite=True (--overwrite) to replace it")

    # local: build beside the destination and rename into place; remote: write in place,
    # manifest last
    if target is not None:
        _remove_stale_builds(target)
        build = str(target.with_name(f"{partial_prefix(target)}{_owner()}-{uuid.uuid4().hex[:8]}"))
    else:
        build = dst
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


def _check_apart(dst: str, src: str | Path, source: Source) -> None:
    """The destination neither is nor contains nor lies inside the source or one of its files
    (``convert m.safetensors m.safetensors --overwrite`` would otherwise replace the model)."""
    for place in [str(src), *(f.url for f in source.files)]:  # src: the index or directory
        if overlap(dst, place):
            raise ValueError(
                f"{dst} overlaps the source {place}: write the checkpoint somewhere else"
            )


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _remove_stale_builds(target: Path) -> None:
    """Removes the build folders of converts into ``target`` that were killed (a killed process
    runs no cleanup): those of this host whose process is gone. Another host's builds, on a
    shared filesystem, are left alone."""
    host = socket.gethostname()
    prefix = partial_prefix(target)
    for build in target.parent.glob(f"{glob.escape(prefix)}*"):
        owner, _, pid = build.name[len(prefix) :].rpartition("-")[0].rpartition("-")
        if owner != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(build, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two directories in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False
    where the system or the filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return bool(renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0)


def _replace_dir(build: Path, target: Path) -> None:
    """Puts the finished build in the target's place. An existing target is swapped with the
    build in one step where the system can, so that a checkpoint is at the target at every
    moment (a kill between two renames would leave none there); the old one is then removed."""
    if target.exists() and _exchange(build, target):
        shutil.rmtree(build, ignore_errors=True)  # the old checkpoint, now at the build's name
        return
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    build.rename(target)
    shutil.rmtree(old, ignore_errors=True)


async def _copy_other(
    store: Store, file: OtherFile, storage_options: dict[str, Any] | None
) -> dict[str, Any]:
    """Copies one of the model's other files into the checkpoint verbatim; its manifest entry
    (name, size and CRC32C, which readers check)."""
    fs, path = filesystem(file.url, storage_options)
    data = await asyncio.to_thread(fs.cat_file, path)
    if len(data) != file.size:
        raise ValueError(f"{file.url}: changed while it was converted ({file.size} bytes listed)")
    key = f"{OTHER_FILES}/{file.name}"
    await store.set(key, default_buffer_prototype().buffer.from_bytes(data))
    return {"name": file.name, "size": file.size, "crc32c": f"{google_crc32c.value(data):08x}"}


async def _copy_others(
    store: Store, files: tuple[OtherFile, ...], storage_options: dict[str, Any] | None
) -> list[dict[str, Any]]:
    # one at a time: memory holds the largest of them, not all (a folder may hold big ones)
    return [await _copy_other(store, f, storage_options) for f in files]


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
        for region in regions(plan):
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
    others = sync(_copy_others(store, source.others, storage_options)) if source.others else []
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
        "checksum": UNSEALED,  # first: the root document begins with it (layout.seal_root)
        "version": MANIFEST_VERSION,
        # new at every convert: a reader that finds the root document changed under it knows
        # it read two checkpoints, even where both hold the same names, shapes and sizes
        "generation": uuid.uuid4().hex,
        # every array's, as in its metadata: loads name objects without the consolidated metadata
        "chunk_key_encoding": CHUNK_KEYS.to_dict(),
        "files": [{"name": f.name, "size": f.size, "header": f.header.text} for f in source.files],
        "index": None
        if source.index is None
        else {"name": source.index[0], "text": source.index[1]},
        "tensors": tensors,
        "other_files": others,
    }
    # written once and last: the checkpoint is complete only when this is there
    root = seal_root(root_document(arrays, {MANIFEST_KEY: manifest}))
    digits = root[len(CHECKSUM_HEAD) : len(CHECKSUM_HEAD) + 8]
    manifest["checksum"] = "crc32c:" + digits.decode()
    folder = local_root(store)
    if folder is not None:
        (folder / "zarr.json").write_bytes(root)  # the build folder is renamed into place later
    else:
        sync(store.set("zarr.json", default_buffer_prototype().buffer.from_bytes(root)))
    return manifest
