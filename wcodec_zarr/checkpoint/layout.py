"""The checkpoint layout, the one place both the writer (``convert``) and the readers take it
from: the manifest's key and versions, the chunk and shard shapes chosen for a tensor, the chunk
key encoding, the shard index format and the checks a manifest entry must pass.

One Zarr array per tensor under its original name in the root group. Tensors of a wcodec dtype
use the ``wcodec`` serializer, others (bool, 64-bit, ...) zstd, and dtypes NumPy cannot hold
(F4, F8_E8M0, ...) are kept as their raw bytes (uint8, wcodec). Chunks are bands of whole rows of
at most ``chunk_bytes``; shards group whole chunks up to ``shard_bytes``; a tensor of a single
chunk is not sharded. The root group's ``wcodec_checkpoint`` attribute is the manifest
(``docs/FORMAT.md``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding

from ..codec.dtypes import is_supported
from .safetensors_file import TensorEntry
from .source import SourceFile

MANIFEST_KEY = "wcodec_checkpoint"
# 2: chunk keys "c.0.0" (version 1 wrote "c/0/0"; readers follow each array's metadata)
MANIFEST_VERSION = 2
READABLE_MANIFEST_VERSIONS = (1, 2)
SCALES_GROUP = "_wcodec_scales"
# the model's other files (config, tokenizer, ...), verbatim, each as the object
# ``<OTHER_FILES>/<name>``: not Zarr nodes, which zarr and xarray pass over
OTHER_FILES = "_wcodec_files"
CHUNK_BYTES = 1 << 20
SHARD_BYTES = 64 << 20
# Chunk keys "c.0.0" rather than "c/0/0": an array's objects sit in its own folder, with no
# folder per grid coordinate to create (a local convert otherwise spends a sixth of its time
# in mkdir). Readers take the separator from each array's metadata.
CHUNK_KEYS = DefaultChunkKeyEncoding(separator=".")
EMPTY = 2**64 - 1  # a shard index entry for a chunk that is not stored


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


# A root document as convert writes it begins with the manifest's checksum: the CRC32C of the
# whole document with these eight hex digits as zeros (docs/FORMAT.md, section 12)
CHECKSUM_HEAD = b'{"attributes":{"wcodec_checkpoint":{"checksum":"crc32c:'
UNSEALED = "crc32c:00000000"


def seal_root(raw: bytes) -> bytes:
    """A root document that begins with ``CHECKSUM_HEAD`` and eight placeholder digits, with
    the digits set to its checksum."""
    if not raw.startswith(CHECKSUM_HEAD):
        raise ValueError("the root document does not begin with the manifest's checksum")
    head = len(CHECKSUM_HEAD)
    unsealed = raw[:head] + b"00000000" + raw[head + 8 :]
    return raw[:head] + f"{google_crc32c.value(unsealed):08x}".encode() + raw[head + 8 :]


def check_root(raw: bytes) -> None:
    """``ValueError`` when a root document that begins with its checksum does not match it.
    A document in another layout (rewritten by another tool, or written before the checksum)
    has none that can be checked and passes."""
    if raw.startswith(CHECKSUM_HEAD) and seal_root(raw) != raw:
        raise ValueError("zarr.json: checksum mismatch (the root document is damaged)")


def partial_prefix(target: Path) -> str:
    """Where a local convert into ``target`` builds: beside it, under a hidden name that starts
    with this and goes on with the builder's host and process id."""
    return f".{target.name}.partial-"


def check_name(name: str) -> None:
    """A tensor name is a Zarr array path inside the checkpoint: no empty, ``.``, ``..``,
    ``__``-prefixed or ``zarr.json`` part (the metadata document's name), no backslash, not
    under the scales group."""
    parts = name.split("/")
    if (
        not name
        or "\\" in name
        or any(not p or p in (".", "..", "zarr.json") or p.startswith("__") for p in parts)
        or parts[0] in (SCALES_GROUP, OTHER_FILES)
    ):
        raise ValueError(f"tensor name {name!r} cannot be a Zarr array path")


def check_names_apart(names: list[str]) -> None:
    """No tensor name is a folder of another's: array ``a`` and array ``a/b`` would share the
    store folder ``a/``, where ``a``'s chunk objects also lie."""
    seen = set(names)
    for name in names:
        parts = name.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in seen:
                raise ValueError(
                    f"tensor names {folder!r} and {name!r} collide: a Zarr array cannot also "
                    "be the group of another"
                )


def check_file_name(name: str) -> None:
    """A file of the original model is a plain file name (export writes it into a directory)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"file name {name!r} is not a plain file name")


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
    tensor decode straight into its destination (``batch``).

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
    check_name(entry.name)
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


def regions(plan: TensorPlan) -> Iterator[tuple[tuple[int, int], ...]]:
    """The tensor's objects as ``(start, stop)`` per dimension: one region per shard (per chunk
    when unsharded), in C order of the grid; convert writes each as one task. A tensor with no
    elements has none (its grid may still be huge: ``[2**60, 0]``)."""
    if 0 in plan.shape:
        return
    block = plan.shards or plan.chunks
    counts = [-(-s // b) if s else 1 for s, b in zip(plan.shape, block, strict=True)]
    for index in np.ndindex(*counts):
        yield tuple(
            (i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block, plan.shape, strict=True)
        )


def index_entries(key: str, index: np.ndarray, count: int) -> list[tuple[int, int] | None]:
    """A shard index's (offset, nbytes) per inner chunk, None where not stored; the CRC32C
    of the index is checked. The index is zarr's default: at the end of the shard object,
    ``offset, nbytes`` as little-endian uint64 per inner chunk in C order, then a CRC32C of
    those bytes."""
    if index.size != count * 16 + 4:
        raise ValueError(f"{key}: shard index of {index.size} bytes, expected {count * 16 + 4}")
    if google_crc32c.value(index[:-4].tobytes()) != int.from_bytes(index[-4:].tobytes(), "little"):
        raise ValueError(f"{key}: shard index checksum mismatch")
    entries = index[:-4].view("<u8").reshape(count, 2).tolist()
    return [None if (o, n) == (EMPTY, EMPTY) else (o, n) for o, n in entries]


def check_row_order(key: str, entries: list[tuple[int, int]], first: int = 0) -> None:
    """The entries of a shard of row bands (inner chunks ``first``, ``first + 1``, ...) lie one
    after another in row order, as ``convert`` (and zarr, in Morton order of an n x 1 grid)
    writes them. Entries swapped, or two pointing at the same bytes, would otherwise decode,
    checksums intact, into the wrong rows."""
    end = 0
    for i, (offset, nbytes) in enumerate(entries):
        if offset < end:
            raise ValueError(
                f"{key}: shard index entry {first + i} overlaps or precedes the entry before it "
                "(entries out of order)"
            )
        end = offset + nbytes


@dataclass(frozen=True)
class KeyEncoding:
    """A chunk key encoding of the Zarr v3 specification, as an array's metadata (or the
    manifest) names it: ``default`` keys are ``c`` and the grid coordinates, joined by the
    separator (``c`` alone for a 0-d array); ``v2`` keys the coordinates joined by the separator
    (``0`` for a 0-d array)."""

    name: str
    separator: str

    def encode(self, coords: tuple[int, ...]) -> str:
        if self.name == "default":
            return self.separator.join(["c", *map(str, coords)])
        return self.separator.join(map(str, coords)) or "0"


@cache
def _key_encoding(name: Any, separator: Any) -> KeyEncoding:
    if name not in ("default", "v2"):
        raise ValueError(f"unknown chunk key encoding {name!r}")
    if separator is None:
        separator = "/" if name == "default" else "."
    if separator not in ("/", "."):
        raise ValueError(f"chunk key separator {separator!r} is neither '/' nor '.'")
    return KeyEncoding(name, separator)


def key_encoding(config: Any) -> KeyEncoding:
    """The chunk key encoding of a JSON configuration (``{"name": ..., "configuration":
    {"separator": ...}}``, the configuration optional); ``ValueError`` for any other."""
    if not isinstance(config, dict):
        raise ValueError(f"chunk key encoding {config!r} is not an object")
    options = config.get("configuration") or {}
    if not isinstance(options, dict):
        raise ValueError(f"chunk key encoding configuration {options!r} is not an object")
    name, separator = config.get("name"), options.get("separator")
    if not isinstance(name, str) or not isinstance(separator, str | None):
        raise ValueError(f"chunk key encoding {config!r} is malformed")
    return _key_encoding(name, separator)


@cache
def morton_order(grid: tuple[int, ...]) -> np.ndarray:
    """The coordinates (one row each) of a chunk grid in the order zarr's sharding codec (and
    ``convert``) writes a shard's inner chunks: by their compressed Morton code, whose bits
    interleave the coordinates' bits from the lowest, dimension 0 first at each bit, skipping a
    dimension once its extent's bits are spent (row order for a column of row bands)."""
    coords = np.stack([c.reshape(-1) for c in np.indices(grid, dtype=np.int64)], axis=1).reshape(
        -1, len(grid)
    )
    codes = np.zeros(len(coords), np.int64)
    bits = [(n - 1).bit_length() for n in grid]
    out_bit = 0
    for bit in range(max(bits, default=0)):
        for dim, width in enumerate(bits):
            if bit < width:
                codes |= ((coords[:, dim] >> bit) & 1) << out_bit
                out_bit += 1
    order = coords[np.argsort(codes, kind="stable")]
    order.flags.writeable = False
    return order


@cache
def write_order(grid: tuple[int, ...]) -> tuple[int, ...]:
    """The C-order positions of a shard's inner chunks in writing order (``morton_order``)."""
    if not grid:
        return (0,)
    return tuple(np.ravel_multi_index(morton_order(grid).T, grid).tolist())


def check_write_order(
    key: str, entries: list[tuple[int, int] | None], grid: tuple[int, ...]
) -> None:
    """The stored entries of a shard index lie one after another in writing order
    (``write_order``), none overlapping another: what ``check_row_order`` asks of row bands,
    for any chunk grid."""
    check_row_order(key, [e for i in write_order(grid) if (e := entries[i]) is not None])


def _sizes(value: Any, low: int) -> bool:
    """``value`` is a list of ints (bool refused) of at least ``low`` each."""
    if type(value) is not list:
        return False
    # a loop, not all(): no generator per call, and opening a checkpoint checks every tensor
    for v in value:  # noqa: SIM110
        if type(v) is not int or v < low:
            return False
    return True


@cache
def _readable_dtype(name: str) -> bool:
    try:
        np.dtype(name)
    except TypeError:
        return False
    return True


def check_entry(name: str, info: Any) -> None:
    """A manifest tensor entry has the layout readers rely on (sizes they divide by, shapes
    they allocate)."""
    shape, chunks, shards = info["shape"], info["chunks"], info["shards"]
    if not (_sizes(shape, 0) and _sizes(chunks, 1) and len(chunks) == len(shape)):
        raise ValueError(f"tensor {name!r}: bad shape {shape!r} or chunks {chunks!r}")
    if shards is not None and not (
        _sizes(shards, 1)
        and len(shards) == len(chunks)
        and all(s % c == 0 for s, c in zip(shards, chunks, strict=True))
    ):
        raise ValueError(f"tensor {name!r}: bad shards {shards!r}")
    if info["codec"] not in ("wcodec", "zstd") or type(info["nbytes"]) is not int:
        raise ValueError(f"tensor {name!r}: bad codec or size")
    dtype = info["dtype"]
    if type(dtype) is not str or not _readable_dtype(dtype):
        raise ValueError(f"tensor {name!r}: data type {dtype!r} not understood")
