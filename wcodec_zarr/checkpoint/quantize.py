"""The lossy option of ``convert``: 2-D float weights stored as int8 per output row, with each
row's float32 scale in an array of its own (``layout.SCALES_GROUP``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .safetensors_file import NUMPY_DTYPES

QUANTIZE_SCHEME = "int8, symmetric, per output row: w ~ q * scale[row]"


def quantize_rows(weight: npt.ArrayLike) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Symmetric per-output-row int8 quantization of a 2-D weight: the int8 values and each
    row's float32 scale (1 for a row of zeros, which stays zero)."""
    w = np.asarray(weight, dtype=np.float32)
    absmax = np.abs(w).max(axis=1)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return quantized, scale


def dequantize(values: np.ndarray, scales: np.ndarray, safetensors_dtype: str) -> np.ndarray:
    """``q * scale[row]`` in the tensor's original float dtype (lossy)."""
    restored: np.ndarray = values.astype(np.float32) * scales[:, None]
    return restored.astype(NUMPY_DTYPES[safetensors_dtype])
