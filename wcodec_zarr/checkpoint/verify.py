"""``verify``: a checkpoint against the model it was converted from. File sizes and headers
must match exactly (a file under another name is found by its header), and every tensor bit
for bit, one shard at a time; a quantized tensor's values and scales must equal a fresh
quantization of its source, and it is reported as lossy with the error of that quantization."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from zarr.abc.store import Store

from ..storage import filesystem
from .quantize import quantize_rows
from .reader import Checkpoint, open_checkpoint
from .safetensors_file import TensorEntry
from .source import Source, read_block, resolve_source
from .tasks import run_tasks


@dataclass(frozen=True)
class VerifyTask:
    src: str
    offset: int
    entry: TensorEntry
    url: str | Store
    storage_options: dict[str, Any] | None


@dataclass(frozen=True)
class TensorCheck:
    """What verifying one tensor found: the difference (None when there is none) and, for a
    quantized tensor, its quantization error against the source."""

    difference: str | None
    max_error: float | None = None  # largest |w - q * scale[row]|
    rms_error: float | None = None  # RMS of w - q * scale[row], relative to the RMS of w


def _verify_tensor(task: VerifyTask) -> TensorCheck:
    """Compares the checkpoint's tensor with the source: bit for bit, or for a quantized one,
    its int8 values and scales against a fresh quantization of the source (and the error of
    that quantization measured)."""
    ckpt = open_checkpoint(task.url, storage_options=task.storage_options)
    tensor = ckpt[task.entry.name]
    array = tensor.array
    source_dtype = task.entry.numpy_dtype or np.dtype(np.uint8)
    if tensor.safetensors_dtype != task.entry.dtype or (
        tuple(array.shape) != task.entry.shape and task.entry.numpy_dtype is not None
    ):
        return TensorCheck(f"dtype or shape differs: {tensor.safetensors_dtype}{list(array.shape)}")
    block = array.shards or array.chunks
    max_error, squared_error, squared = 0.0, 0.0, 0.0
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
                stored_scales = tensor.scales()[selection[0]]
                if (
                    stored.tobytes() != values.tobytes()
                    or stored_scales.tobytes() != scales.tobytes()
                ):
                    return TensorCheck(f"quantized values differ in region {list(region)}")
                weights = original.astype(np.float64)
                error = weights - stored.astype(np.float64) * stored_scales[:, None]
                max_error = max(max_error, float(np.abs(error).max(initial=0.0)))
                squared_error += float(np.square(error).sum())
                squared += float(np.square(weights).sum())
            elif stored.tobytes() != original.tobytes():
                return TensorCheck(f"bytes differ in region {list(region)}")
    if not tensor.quantized:
        return TensorCheck(None)
    rms = math.sqrt(squared_error / squared) if squared else 0.0
    return TensorCheck(None, max_error, rms)


@dataclass(frozen=True)
class VerifyReport:
    """``checked`` tensors compared; ``mismatches`` (tensor or file, what differs) in file
    order; ``lossy``: the quantized tensors that equal a fresh quantization of their source,
    with its error (name, largest absolute error, relative RMS error): they are not bit-exact;
    ``renamed``: source files found in the checkpoint under another name (source, checkpoint)."""

    checked: int
    mismatches: list[tuple[str, str]]
    lossy: list[tuple[str, float, float]] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The checkpoint is what ``convert`` makes of the source (lossy or not)."""
        return not self.mismatches

    @property
    def exact(self) -> bool:
        """Every tensor is bit-exact: ``ok`` and nothing quantized."""
        return self.ok and not self.lossy


def _other_mismatches(
    source: Source, ckpt: Checkpoint, storage_options: dict[str, Any] | None
) -> list[tuple[str, str]]:
    """The source folder's other files (config, tokenizer, ...) that the checkpoint lacks or
    holds with other bytes."""
    held = {f.name for f in ckpt.other_files}
    found = []
    for other in source.others:
        if other.name not in held:
            found.append((other.name, "file missing from the checkpoint"))
            continue
        fs, path = filesystem(other.url, storage_options)
        if ckpt.read_other_file(other.name) != fs.cat_file(path):
            found.append((other.name, "file differs"))
    return found


def verify(
    src: str | Path,
    url: str | Path | Store,
    *,
    workers: Any = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool | None = False,
) -> VerifyReport:
    """Compares a checkpoint with its source model: file sizes and headers exactly (a file
    renamed but otherwise identical is found and listed in ``renamed``), and every tensor bit
    for bit, one shard at a time (``workers``: Dask, as in ``convert``). Quantized tensors are
    compared with a fresh quantization of the source and reported in ``lossy`` with their
    error: ``report.exact`` is true only when every tensor is bit-exact."""
    source = resolve_source(src, storage_options)
    ckpt = open_checkpoint(url, storage_options=storage_options)
    mismatches: list[tuple[str, str]] = []
    renamed: list[tuple[str, str]] = []
    theirs = {f.name: f for f in ckpt.files}
    # checkpoint files no source file has the name of: candidates for renamed source files
    spare = [f for f in ckpt.files if f.name not in {s.name for s in source.files}]
    for f in source.files:
        mine = theirs.get(f.name)
        if mine is None:
            same = [c for c in spare if c.size == f.size and c.header.text == f.header.text]
            if len(same) == 1:
                renamed.append((f.name, same[0].name))
                spare.remove(same[0])
            else:
                held = ", ".join(sorted(theirs))
                mismatches.append((f.name, f"file missing from the checkpoint (it holds {held})"))
        elif mine.size != f.size or mine.header.text != f.header.text:
            mismatches.append((f.name, "safetensors header or size differs"))
    mismatches += [(f.name, "file of the checkpoint not in the source") for f in spare]
    if (source.index is None) != (ckpt.index is None) or (
        source.index is not None and ckpt.index is not None and source.index[1] != ckpt.index[1]
    ):
        mismatches.append(("index", "the index file differs"))
    mismatches += _other_mismatches(source, ckpt, storage_options)
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
    # what was compared is all of the checkpoint opened, or the comparison fails
    ckpt.check_unchanged()
    checks: list[TensorCheck] = results
    differing = {
        t.entry.name: c.difference
        for t, c in zip(tasks, checks, strict=True)
        if c.difference is not None
    }
    order = [t.name for f in source.files for t in f.header.tensors]
    problems = dict(missing) | differing
    mismatches += [(n, problems[n]) for n in order if n in problems]
    lossy = [
        (t.entry.name, c.max_error, c.rms_error)
        for t, c in zip(tasks, checks, strict=True)
        if c.difference is None and c.max_error is not None and c.rms_error is not None
    ]
    return VerifyReport(len(tasks), mismatches, lossy, renamed)
