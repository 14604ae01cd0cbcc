"""``verify``: a checkpoint against the model it was converted from. File names, sizes and
headers must match exactly, and every tensor bit for bit, one shard at a time; a quantized
tensor's values and scales must equal a fresh quantization of its source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from zarr.abc.store import Store

from ..storage import filesystem
from .quantize import quantize_rows
from .reader import open_checkpoint
from .safetensors_file import TensorEntry
from .source import read_block, resolve_source
from .tasks import run_tasks


@dataclass(frozen=True)
class VerifyTask:
    src: str
    offset: int
    entry: TensorEntry
    url: str | Store
    storage_options: dict[str, Any] | None


def _verify_tensor(task: VerifyTask) -> str | None:
    """None when the checkpoint's tensor equals the source bit for bit (a quantized one: its
    int8 values and scales equal a fresh quantization of the source), else the difference."""
    ckpt = open_checkpoint(task.url, storage_options=task.storage_options)
    tensor = ckpt[task.entry.name]
    array = tensor.array
    source_dtype = task.entry.numpy_dtype or np.dtype(np.uint8)
    if tensor.safetensors_dtype != task.entry.dtype or (
        tuple(array.shape) != task.entry.shape and task.entry.numpy_dtype is not None
    ):
        return f"dtype or shape differs: {tensor.safetensors_dtype}{list(array.shape)}"
    block = array.shards or array.chunks
    fs, path = filesystem(task.src, task.storage_options)
    with fs.open(path, "rb") as f:
        counts = [-(-s // b) if s else 1 for s, b in zip(array.shape, block, strict=True)]
        for index in np.ndindex(*counts):
            region = tuple(
                (i * b, min((i + 1) * b, s))
                for i, b, s in zip(index, block, array.shape, strict=True)
            )
            selection = tuple(slice(a, b) for a, b in region)
            original = read_block(f, task.offset, source_dtype, tuple(array.shape), region)
            stored = np.asarray(array[selection])
            if tensor.quantized:
                values, scales = quantize_rows(original)
                if (
                    stored.tobytes() != values.tobytes()
                    or tensor.scales()[selection[0]].tobytes() != scales.tobytes()
                ):
                    return f"quantized values differ in region {list(region)}"
            elif stored.tobytes() != original.tobytes():
                return f"bytes differ in region {list(region)}"
    return None


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    mismatches: list[tuple[str, str]]  # (tensor or file, what differs), in file order

    @property
    def ok(self) -> bool:
        return not self.mismatches


def verify(
    src: str | Path,
    url: str | Path | Store,
    *,
    workers: Any = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = False,
) -> VerifyReport:
    """Compares a checkpoint with its source model: file names, sizes and headers exactly, and
    every tensor bit for bit, one shard at a time (``workers``: Dask, as in ``convert``)."""
    source = resolve_source(src, storage_options)
    ckpt = open_checkpoint(url, storage_options=storage_options)
    mismatches: list[tuple[str, str]] = []
    theirs = {f.name: f for f in ckpt.files}
    for f in source.files:
        mine = theirs.get(f.name)
        if mine is None:
            mismatches.append((f.name, "file missing from the checkpoint"))
        elif mine.size != f.size or mine.header.text != f.header.text:
            mismatches.append((f.name, "safetensors header or size differs"))
    if sorted(theirs) != sorted(f.name for f in source.files):
        mismatches.append(("files", f"checkpoint has files {sorted(theirs)}"))
    if (source.index is None) != (ckpt.index is None) or (
        source.index is not None and ckpt.index is not None and source.index[1] != ckpt.index[1]
    ):
        mismatches.append(("index", "the index file differs"))
    tasks = [
        VerifyTask(
            f.url,
            f.header.data_start + t.begin,
            t,
            url if isinstance(url, Store) else str(url),
            storage_options,
        )
        for f in source.files
        for t in f.header.tensors
        if t.name in ckpt
    ]
    missing = [
        (t.name, "tensor missing from the checkpoint")
        for f in source.files
        for t in f.header.tensors
        if t.name not in ckpt
    ]
    results = run_tasks(
        _verify_tensor,
        tasks,
        [t.entry.nbytes for t in tasks],
        workers=workers,
        progress=progress,
        desc="verify",
    )
    differing = {t.entry.name: r for t, r in zip(tasks, results, strict=True) if r is not None}
    order = [t.name for f in source.files for t in f.header.tensors]
    problems = dict(missing) | differing
    mismatches += [(n, problems[n]) for n in order if n in problems]
    return VerifyReport(checked=len(tasks), mismatches=mismatches)
