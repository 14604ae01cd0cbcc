"""Writing safetensors files byte by byte, for models the safetensors library would not write
(raw dtypes, padded headers, hostile offsets), and synthetic models of every dtype."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
from helpers import weight_like

# safetensors dtype -> NumPy dtype, for the synthetic models
ST_DTYPES = {
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "I32": np.dtype("<i4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype("<f4"),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "BOOL": np.dtype(np.bool_),
    "I64": np.dtype("<i8"),
    "F64": np.dtype("<f8"),
    "U32": np.dtype("<u4"),
}


def write_raw(
    path: Path,
    tensors: list[tuple[str, str, list[int], bytes]],
    metadata: dict[str, str] | None = None,
    *,
    pad: int = 0,
) -> bytes:
    """A safetensors file of (name, dtype, shape, bytes) in that order; ``pad`` spaces after the
    JSON. Returns the file's bytes."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    raw = len(text).to_bytes(8, "little") + text + b"".join(t[3] for t in tensors)
    path.write_bytes(raw)
    return raw


def write_header(path: Path, header: Any, body: bytes) -> None:
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + body)


def synthetic_tensors(
    rng: np.random.Generator, prefix: str = "", scale: int = 1
) -> list[tuple[str, str, list[int], bytes]]:
    """One tensor per dtype in ST_DTYPES (shapes from scalar to 3-D, some over several chunks;
    ``scale`` divides the large ones), plus special floats and a dtype NumPy cannot hold (F4,
    kept as raw bytes)."""
    shapes = [[300 // scale, 200], [7], [3, 5, 64], [], [1000 // scale, 33], [0, 4]]
    out = []
    for i, (st, dt) in enumerate(ST_DTYPES.items()):
        shape = shapes[i % len(shapes)]
        if dt.kind == "b":
            data = rng.integers(0, 2, size=shape).astype(np.bool_)
        else:
            data = weight_like(rng, tuple(shape), dt)
        out.append((f"{prefix}layer.{i}.{st.lower()}", st, shape, data.tobytes()))
    special = np.array([-0.0] * 4096 + [np.nan] * 10, np.float32)
    special.view(np.uint32)[-5:] = 0x7FC00001  # NaN payloads
    out.append((f"{prefix}special.f32", "F32", [special.size], special.tobytes()))
    out.append(
        (f"{prefix}zeros.negative", "F32", [2048], np.full(2048, -0.0, np.float32).tobytes())
    )
    out.append((f"{prefix}packed.f4", "F4", [64, 32], rng.bytes(64 * 16)))
    return out


def write_sharded_model(folder: Path, rng: np.random.Generator) -> Path:
    """A sharded model in ``folder``: two files of synthetic tensors and the
    ``model.safetensors.index.json`` that maps each tensor to its file."""
    folder.mkdir(parents=True, exist_ok=True)
    weight_map = {}
    for i in (1, 2):
        name = f"model-0000{i}-of-00002.safetensors"
        tensors = synthetic_tensors(rng, prefix=f"part{i}.")
        write_raw(folder / name, tensors, {"format": "pt"})
        weight_map |= {t[0]: name for t in tensors}
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder


def write_layered_model(path: Path, layers: int) -> Path:
    """A checkpoint-shaped model, as the object-store tests write it: per layer a 256x256 int8
    weight, a 128x192 bfloat16 weight and a float32 bias."""
    rng = np.random.default_rng(0)
    tensors = []
    for layer in range(layers):
        w8 = weight_like(rng, (256, 256), np.dtype(np.int8))
        w16 = weight_like(rng, (128, 192), np.dtype(ml_dtypes.bfloat16))
        bias = weight_like(rng, (256,), np.dtype(np.float32))
        tensors += [
            (f"layers.{layer}.q.weight", "I8", [256, 256], w8.tobytes()),
            (f"layers.{layer}.mlp.weight", "BF16", [128, 192], w16.tobytes()),
            (f"layers.{layer}.q.bias", "F32", [256], bias.tobytes()),
        ]
    write_raw(path, tensors, {"format": "pt"})
    return path


def write_mixed_model(path: Path) -> dict[str, np.ndarray]:
    """Weights of every kind a load meets: int8 and bfloat16 (rows that do not divide into
    chunks), a float32 bias, an int64 tensor (stored with zstd: read through zarr)."""
    rng = np.random.default_rng(7)
    arrays = {}
    for layer in range(4):
        arrays[f"layers.{layer}.q.weight"] = weight_like(rng, (300, 256), np.dtype(np.int8))
        arrays[f"layers.{layer}.mlp.weight"] = weight_like(
            rng, (250, 192), np.dtype(ml_dtypes.bfloat16)
        )
        arrays[f"layers.{layer}.q.bias"] = weight_like(rng, (256,), np.dtype(np.float32))
    arrays["position_ids"] = np.arange(512, dtype=np.int64)
    codes = {"int8": "I8", "bfloat16": "BF16", "float32": "F32", "int64": "I64"}
    write_raw(
        path,
        [(n, codes[str(a.dtype)], list(a.shape), a.tobytes()) for n, a in arrays.items()],
        {"format": "pt"},
    )
    return arrays
