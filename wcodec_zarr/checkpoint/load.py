"""Whole-model loads: every tensor of a checkpoint (or those named) as a dict, usable as a
``load_state_dict`` source, on the CPU or a GPU, as NumPy, CuPy or PyTorch tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zarr.abc.store import Store

from . import quantize
from .batch import load_to_cpu, load_to_gpu
from .frameworks import to_framework
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
) -> dict[str, Any]:
    """Every tensor (or those in ``names``) as a dict, usable as a ``load_state_dict`` source
    with ``framework="torch"``.

    ``framework``: ``"numpy"`` (default on the CPU), ``"cupy"`` (default for ``device`` on
    CUDA) or ``"torch"`` (any ``device`` PyTorch accepts). ``dtype_map`` converts by dtype name,
    e.g. ``{"bfloat16": "float32"}``, after decoding. ``dequantize`` turns quantized tensors
    back into their original float dtype (lossy).
    """
    ckpt = open_checkpoint(url, storage_options=storage_options)
    selected = list(ckpt) if names is None else list(names)
    missing = [n for n in selected if n not in ckpt]
    if missing:
        raise KeyError(f"not in the checkpoint: {', '.join(missing[:5])}")
    on_gpu = device.startswith("cuda")
    framework = framework or ("cupy" if on_gpu else "numpy")
    if framework not in ("numpy", "cupy", "torch"):
        raise ValueError(f"framework must be 'numpy', 'cupy' or 'torch', got {framework!r}")
    if framework == "numpy" and on_gpu:
        raise ValueError("framework='numpy' holds tensors on the CPU; use 'cupy' or 'torch'")
    tensors = [ckpt[n] for n in selected]
    if on_gpu and not dequantize and not dtype_map:
        return load_to_gpu(tensors, device, framework)
    arrays = load_to_cpu(tensors)
    out: dict[str, Any] = {}
    for tensor in tensors:
        data = arrays[tensor.name]
        if dequantize and tensor.quantized:
            data = quantize.dequantize(data, tensor.scales(), tensor.safetensors_dtype)
        if dtype_map and str(data.dtype) in dtype_map:
            data = data.astype(dtype_map[str(data.dtype)])
        out[tensor.name] = to_framework(data, framework, device)
    return out
