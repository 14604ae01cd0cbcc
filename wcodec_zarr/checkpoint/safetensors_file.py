"""The safetensors file format: header parsing with full validation, region reads, and the
writer used by ``export_safetensors``.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON (an
object mapping tensor names to ``{"dtype", "shape", "data_offsets"}`` plus an optional
``"__metadata__"`` of strings, possibly padded with spaces), then the tensors' bytes. Offsets
are relative to the end of the header. A checkpoint keeps the header text verbatim, so an
exported file is byte-identical to the original.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import IO, Any

import ml_dtypes
import numpy as np

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the limit the safetensors library itself enforces
METADATA_KEY = "__metadata__"

# safetensors dtype -> NumPy dtype. Dtypes NumPy cannot hold (F4, F6_*, F8_E8M0, ...) have
# bits per element instead and are kept as raw bytes.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "U32": np.dtype("<u4"),
    "I32": np.dtype("<i4"),
    "F32": np.dtype("<f4"),
    "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "C64": np.dtype("<c8"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
RAW_DTYPE_BITS: dict[str, int] = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str  # the safetensors dtype string
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the data section
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numpy_dtype(self) -> np.dtype[Any] | None:
        """The NumPy dtype, or None for dtypes kept as raw bytes."""
        return NUMPY_DTYPES.get(self.dtype)


@dataclass(frozen=True)
class Header:
    text: str  # the JSON exactly as stored, padding included
    tensors: tuple[TensorEntry, ...]  # in data order
    metadata: dict[str, str] | None

    @property
    def data_start(self) -> int:
        return 8 + len(self.text.encode("utf-8"))

    @property
    def file_size(self) -> int:
        return self.data_start + (self.tensors[-1].end if self.tensors else 0)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _expected_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    count = math.prod(shape)
    if dtype in NUMPY_DTYPES:
        return count * NUMPY_DTYPES[dtype].itemsize
    bits = count * RAW_DTYPE_BITS[dtype]
    if bits % 8:
        raise ValueError(f"{bits} bits of {dtype} do not fill whole bytes")
    return bits // 8


_ENTRY_KEYS = frozenset(("dtype", "shape", "data_offsets"))


def _entry(name: str, info: Any) -> TensorEntry:
    if type(info) is not dict or info.keys() != _ENTRY_KEYS:
        raise ValueError(f"tensor {name!r}: expected keys dtype, shape, data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in NUMPY_DTYPES and dtype not in RAW_DTYPE_BITS:
        raise ValueError(f"tensor {name!r}: unknown dtype {dtype!r}")
    # type(...) is int: JSON gives exact ints, and bool (a subclass) is refused
    if type(shape) is not list or not _naturals(shape):
        raise ValueError(f"tensor {name!r}: shape must be a list of non-negative integers")
    if (
        type(offsets) is not list
        or len(offsets) != 2
        or type(offsets[0]) is not int
        or type(offsets[1]) is not int
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise ValueError(f"tensor {name!r}: data_offsets must be [begin, end] with begin <= end")
    try:
        expected = _expected_nbytes(dtype, tuple(shape))
    except ValueError as exc:
        raise ValueError(f"tensor {name!r}: {exc}") from None
    if offsets[1] - offsets[0] != expected:
        raise ValueError(
            f"tensor {name!r}: data_offsets span {offsets[1] - offsets[0]} bytes, "
            f"{dtype}{shape} needs {expected}"
        )
    return TensorEntry(name, dtype, tuple(shape), offsets[0], offsets[1])


def _naturals(values: list[Any]) -> bool:
    # a loop, not all(): no generator per call, and a header has an entry per tensor
    for v in values:  # noqa: SIM110
        if type(v) is not int or v < 0:
            return False
    return True


def json_error(exc: Exception) -> str:
    """What a JSON parser's error says (Python's parser recurses, so deep nesting overflows)."""
    return "nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def parse_header(text: str) -> Header:
    """Validates a header's JSON: known dtypes, sizes that match shapes, offsets that tile the
    data section without gaps or overlaps."""
    if not text.startswith("{"):
        raise ValueError("the header is not a JSON object")
    try:
        raw = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"the header is not valid JSON: {json_error(exc)}") from None
    if not isinstance(raw, dict):
        raise ValueError("the header is not a JSON object")
    metadata = raw.pop(METADATA_KEY, None)
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise ValueError(f"{METADATA_KEY} must map strings to strings")
    tensors = sorted((_entry(name, info) for name, info in raw.items()), key=lambda t: t.begin)
    position = 0
    for t in tensors:
        if t.begin != position:
            what = "overlaps the previous tensor" if t.begin < position else "leaves a gap"
            raise ValueError(f"tensor {t.name!r}: data_offsets {[t.begin, t.end]} {what}")
        position = t.end
    return Header(text, tuple(tensors), metadata)


def read_header(file: IO[bytes], size: int, where: str) -> Header:
    """Reads and validates the header of an open file of ``size`` bytes; the data section must
    end exactly where the last tensor ends. ``where`` names the file in errors."""
    try:
        prefix = file.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{size} bytes is too short for a safetensors file")
        length = int.from_bytes(prefix, "little")
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise ValueError(f"header length {length} does not fit a file of {size} bytes")
        try:
            text = file.read(length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"the header is not UTF-8: {exc}") from None
        header = parse_header(text)
        if header.file_size != size:
            what = "is truncated" if header.file_size > size else "has trailing bytes"
            raise ValueError(
                f"the file {what}: the header describes {header.file_size} bytes, "
                f"the file has {size}"
            )
    except ValueError as exc:
        raise ValueError(f"{where}: not a valid safetensors file: {exc}") from None
    return header


def read_region(file: IO[bytes], start: int, nbytes: int) -> np.ndarray:
    """``nbytes`` bytes from ``start`` of an open file, as a fresh uint8 array."""
    out = np.empty(nbytes, np.uint8)
    read_into(file, start, out)
    return out


def read_into(file: IO[bytes], start: int, out: np.ndarray) -> None:
    """Fills the contiguous uint8 array ``out`` with the bytes from ``start`` of an open file."""
    file.seek(start)
    view = out.data
    done = 0
    while done < out.size:
        got = file.readinto(view[done:])  # type: ignore[attr-defined]
        if not got:
            raise ValueError(f"unexpected end of file at byte {start + done}")
        done += got
