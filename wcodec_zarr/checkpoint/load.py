"""Whole-model loads: every tensor of a checkpoint (or those named) as a dict, usable as a
``load_state_dict`` source, on the CPU or a GPU, as NumPy, CuPy or PyTorch tensors."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from tqdm.auto import tqdm
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
    progress: bool | None = False,
) -> dict[str, Any]:
    """Every tensor (or those in ``names``) as a dict, usable as a ``load_state_dict`` source
    with ``framework="torch"``; ``progress``: a tqdm bar of the bytes loaded (None: on a
    terminal).

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
    show = sys.stderr.isatty() if progress is None else progress
    total = sum(t.nbytes for t in tensors)
    with tqdm(total=total, unit="B", unit_scale=True, desc="load", disable=not show) as bar:
        if device.startswith("cuda") and not dequantize and not dtype_map:
            return load_to_gpu(tensors, device, framework, window, bar.update)
        arrays = load_to_cpu(tensors, window=window, done=bar.update)
    out: dict[str, Any] = {}
    for tensor in tensors:
        data = arrays[tensor.name]
        if dequantize and tensor.quantized:
            data = quantize.dequantize(data, tensor.scales(), tensor.safetensors_dtype)
        if dtype_map and str(data.dtype) in dtype_map:
            data = data.astype(dtype_map[str(data.dtype)])
        out[tensor.name] = to_framework(data, framework, device)
    return out


class ModuleLoad(NamedTuple):
    """What ``load_module`` did not match, as ``torch.nn.Module.load_state_dict`` reports it."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def load_module(
    module: Any,
    url: str | Path | Store,
    *,
    device: str = "cpu",
    strict: bool = True,
    window: int | None = None,
    storage_options: dict[str, Any] | None = None,
) -> ModuleLoad:
    """Loads a checkpoint into a ``torch.nn.Module`` tensor by tensor: each is decoded onto
    ``device``, assigned in place of the module's own (``load_state_dict(..., assign=True)``,
    so a module built on the ``meta`` device takes the loaded tensors as they are) and dropped
    by the loader, so that memory never holds the model twice.

    Returns the module's names no tensor was loaded into and the checkpoint's names the module
    does not have; with ``strict``, either raises ``ValueError`` naming them once every tensor
    that matches is loaded (as ``load_state_dict`` does). A shape that does not match raises
    PyTorch's ``RuntimeError``."""
    ckpt = open_checkpoint(url, storage_options=storage_options)
    expected = list(module.state_dict(keep_vars=True))
    wanted = set(expected)
    unexpected = [name for name in ckpt if name not in wanted]
    loaded = set()
    names = [name for name in ckpt if name in wanted]
    for name, tensor in ckpt.iter_tensors(names, device=device, framework="torch", window=window):
        module.load_state_dict({name: tensor}, strict=False, assign=True)
        loaded.add(name)
    result = ModuleLoad([n for n in expected if n not in loaded], unexpected)
    if strict and (result.missing_keys or result.unexpected_keys):
        raise ValueError(
            f"{ckpt.url} does not match the module: missing {result.missing_keys[:10]}, "
            f"unexpected {result.unexpected_keys[:10]}"
        )
    return result
