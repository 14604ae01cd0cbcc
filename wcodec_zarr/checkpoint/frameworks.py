"""Decoded tensors handed over to PyTorch and CuPy. bfloat16 and float8 are reinterpreted bit
for bit: PyTorch has these dtypes; CuPy has none of them, so its arrays hold their bits as the
unsigned integer of the same width (``codec.gpu.storage_dtype``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codec.gpu import storage_dtype

# dtypes NumPy holds through ml_dtypes only: torch.from_numpy takes them as same-width integers
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def torch_dtype(dtype: Any) -> Any:
    """The PyTorch dtype of a NumPy (or ml_dtypes) dtype: PyTorch names them alike."""
    import torch

    return getattr(torch, str(np.dtype(dtype)))


def numpy_to_torch(array: np.ndarray, device: str = "cpu") -> Any:
    """A PyTorch tensor of ``array`` (bfloat16 and float8 reinterpreted bit for bit)."""
    import torch

    data = np.ascontiguousarray(array)
    if str(data.dtype) in _ML_DTYPES:
        same_width = np.int16 if data.dtype.itemsize == 2 else np.uint8
        return torch.from_numpy(data.view(same_width)).view(torch_dtype(data.dtype)).to(device)
    return torch.from_numpy(data).to(device)


def to_torch(array: Any, dtype: Any) -> Any:
    """A zero-copy PyTorch view (DLPack) of a GPU result, reinterpreted as the chunk's dtype."""
    import torch

    tensor = torch.from_dlpack(array)
    target = torch_dtype(dtype)
    return tensor.view(target) if tensor.dtype != target else tensor


# safetensors' names for the frameworks (``safe_open(..., framework="pt")``)
ALIASES = {"pt": "torch", "np": "numpy"}


def resolve_framework(device: str, framework: str | None) -> str:
    """The framework tensors are handed over in: ``framework`` (or its safetensors name, "pt"
    or "np") checked against ``device``, or the default, NumPy on the CPU and CuPy on CUDA."""
    on_gpu = device.startswith("cuda")
    framework = ALIASES.get(framework or "", framework) or ("cupy" if on_gpu else "numpy")
    if framework not in ("numpy", "cupy", "torch"):
        raise ValueError(
            f"framework must be 'numpy' ('np'), 'torch' ('pt') or 'cupy', got {framework!r}"
        )
    if framework == "numpy" and on_gpu:
        raise ValueError("framework='numpy' holds tensors on the CPU; use 'cupy' or 'torch'")
    if framework == "cupy" and not on_gpu:
        raise ValueError(f"framework='cupy' holds tensors on a CUDA device, not {device!r}")
    return framework


def to_framework(data: np.ndarray, framework: str, device: str) -> Any:
    """``data`` as ``framework`` ("numpy", "cupy" or "torch") holds it on ``device``."""
    if framework == "torch":
        return numpy_to_torch(data, device)
    if framework == "cupy":
        import cupy as cp

        with cp.cuda.Device(int(device.partition(":")[2] or 0)):
            return cp.asarray(data.view(storage_dtype(data.dtype)))
    return data
