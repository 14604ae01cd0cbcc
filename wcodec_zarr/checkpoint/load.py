"""Whole-model loads: every tensor of a checkpoint (or those named) as a dict, usable as a
``load_state_dict`` source, on the CPU or a GPU, as NumPy, CuPy or PyTorch tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zarr.abc.store import Store

from . import quantize
from .batch import load_to_cpu, load_to_gpu
from .frameworks import resolve_framework, to_framework
from .reader import open_checkpoint


def load_checkpoint(
    url: str | Path | Store,
    *,
    device: str = "cpu",
    names: Sequence[str] | None = None,
    dtype_map: Mapping[str, Any] | None = None,
    framework: str | None = None,
    dequantize: bool = False,
    storage_options: dict[str, Any] | None = None,
    window: int | None = None,
) -> dict[str, Any]:
    """Every tensor (or those in ``names``) as a dict, usable as a ``load_state_dict`` source
    with ``framework="torch"``.

    ``framework``: ``"numpy"`` (default on the CPU), ``"cupy"`` (default for ``device`` on
    CUDA) or ``"torch"`` (any ``device`` PyTorch accepts). ``dtype_map`` converts by dtype name,
    e.g. ``{"bfloat16": "float32"}``, after decoding. ``dequantize`` turns quantized tensors
    back into their original float dtype (lossy).

    The load streams: at most ``window`` bytes of stored objects (default 256 MiB) are held or
    in flight at once, fetched, copied and decoded in overlapped pieces (``batch``), so memory
    beyond the outputs stays within a small multiple of it whatever the model's size.
    ``Checkpoint.iter_tensors`` hands tensors over one by one instead.
    """
    ckpt = open_checkpoint(url, storage_options=storage_options)
    selected = list(ckpt) if names is None else list(names)
    missing = [n for n in selected if n not in ckpt]
    if missing:
        raise KeyError(f"not in the checkpoint: {', '.join(missing[:5])}")
    framework = resolve_framework(device, framework)
    tensors = [ckpt[n] for n in selected]
    if device.startswith("cuda") and not dequantize and not dtype_map:
        return load_to_gpu(tensors, device, framework, window)
    arrays = load_to_cpu(tensors, window=window)
    out: dict[str, Any] = {}
    for tensor in tensors:
        data = arrays[tensor.name]
        if dequantize and tensor.quantized:
            data = quantize.dequantize(data, tensor.scales(), tensor.safetensors_dtype)
        if dtype_map and str(data.dtype) in dtype_map:
            data = data.astype(dtype_map[str(data.dtype)])
        out[tensor.name] = to_framework(data, framework, device)
    return out
