"""Encoded chunks as flat byte views, whatever buffer type holds them."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt


def as_bytes_view(data: Any) -> npt.NDArray[np.uint8]:
    """A zero-copy flat uint8 view of bytes, bytearray, memoryview or a contiguous ndarray."""
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise ValueError("encoded data must be a contiguous buffer")
        return data.reshape(-1).view(np.uint8)
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"expected a bytes-like object, got {type(data).__name__}") from None
    if not view.c_contiguous:
        raise ValueError("encoded data must be a contiguous buffer")
    return np.frombuffer(view.cast("B"), dtype=np.uint8)
