"""A safetensors model as its files: one ``.safetensors`` file, an ``*.index.json`` with its
shards, or a directory holding either, every header read and validated up front; and reading
any region of one of its tensors in as few contiguous runs as the region allows."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..storage import filesystem
from .safetensors_file import Header, read_header, read_into, read_region

# files of a model folder that are weights in another format (or another copy of them): not
# carried into a checkpoint
OTHER_WEIGHTS = (
    ".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf",
    ".tflite", ".ot", ".npz",
)  # fmt: skip


def check_relative_name(name: str) -> None:
    """Another file of the model is a relative path inside its folder (``config.json``,
    ``1_Pooling/config.json``): export writes it under its destination, never outside."""
    parts = name.split("/")
    if not name or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"file name {name!r} is not a relative path inside the model folder")


def carried(name: str) -> bool:
    """Whether a file of a model folder (relative path) goes into the checkpoint beside the
    weights: not hidden (``.gitattributes``, ``.cache/``), not weights in another format."""
    hidden = any(part.startswith(".") for part in name.split("/"))
    return not hidden and not name.lower().endswith(OTHER_WEIGHTS)


@dataclass(frozen=True)
class SourceFile:
    name: str  # the file name the checkpoint presents (relative to the model directory)
    url: str
    size: int
    header: Header


@dataclass(frozen=True)
class OtherFile:
    """A file of the model folder beside the weights (config, tokenizer, README, ...)."""

    name: str  # relative to the model folder, "/" between folders
    url: str
    size: int


@dataclass(frozen=True)
class Source:
    files: tuple[SourceFile, ...]
    index: tuple[str, str] | None  # (file name, text) of model.safetensors.index.json
    # the folder's other files (``carried``), for a folder or an index; none for a file
    others: tuple[OtherFile, ...] = ()


def _other_files(fs: Any, folder: str, base: str, taken: set[str]) -> tuple[OtherFile, ...]:
    """The files under ``folder`` (fsspec path; ``base`` its URL) that go along with the
    weights, ``taken`` (the weights and the index) left out, by name."""
    found = fs.find(folder, detail=True)
    others = []
    prefix = folder.rstrip("/") + "/"
    for path, info in sorted(found.items()):
        if not path.startswith(prefix):
            continue
        name = path[len(prefix) :]
        if info.get("type") != "file" or name in taken or not carried(name):
            continue
        check_relative_name(name)
        others.append(OtherFile(name, f"{base}/{name}", int(info["size"])))
    return tuple(others)


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
        files = tuple(_open_file(f"{base}/{n}", storage_options) for n in found)
        return Source(files, None, _other_files(fs, path, base, set(found)))
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
    except RecursionError:
        raise ValueError(f"{src}: not a safetensors index: JSON nested too deeply") from None
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
    taken = {f.name for f in files} | {Path(path).name}
    others = _other_files(fs, path.rsplit("/", 1)[0] if "/" in path else ".", folder, taken)
    return Source(files, (Path(path).name, text), others)


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
