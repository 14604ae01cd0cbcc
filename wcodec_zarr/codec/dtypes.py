"""The dtypes the bitstream supports and their codes (docs/FORMAT.md, header byte 5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import ml_dtypes
import numpy as np
import numpy.typing as npt

# Code -> dtype, in header order. Codes are part of the format: never renumber.
CODE_TO_DTYPE: dict[int, np.dtype[np.generic]] = {
    1: np.dtype(np.int8),
    2: np.dtype(np.uint8),
    3: np.dtype("<i2"),
    4: np.dtype("<u2"),
    5: np.dtype("<i4"),
    6: np.dtype("<f2"),
    7: np.dtype(ml_dtypes.bfloat16),
    8: np.dtype("<f4"),
    9: np.dtype(ml_dtypes.float8_e4m3fn),
    10: np.dtype(ml_dtypes.float8_e5m2),
}
DTYPE_TO_CODE: dict[np.dtype[np.generic], int] = {dt: code for code, dt in CODE_TO_DTYPE.items()}

SUPPORTED_DTYPES: tuple[str, ...] = tuple(str(dt) for dt in CODE_TO_DTYPE.values())


def little_endian(dtype: npt.DTypeLike) -> np.dtype[np.generic]:
    """The same dtype in little-endian byte order (single-byte and ml_dtypes types unchanged)."""
    dt = np.dtype(dtype)
    return dt.newbyteorder("<") if dt.byteorder == ">" else dt


def dtype_code(dtype: npt.DTypeLike) -> int:
    """The format's code for ``dtype``; ``TypeError`` for dtypes the codec does not support."""
    dt = little_endian(dtype)
    code = DTYPE_TO_CODE.get(dt)
    if code is None:
        raise TypeError(
            f"wcodec does not support dtype {np.dtype(dtype)}; supported: "
            + ", ".join(SUPPORTED_DTYPES)
        )
    return code


def check_declared(code: int, shape: Sequence[int], max_nbytes: int | None) -> None:
    """A chunk's header declares at most ``max_nbytes`` decoded bytes (None: no limit), checked
    before anything is allocated: a constant plane costs no payload, so a chunk of a few bytes
    can declare gigabytes."""
    if max_nbytes is None:
        return
    nbytes = math.prod(shape) * CODE_TO_DTYPE[code].itemsize
    if nbytes > max_nbytes:
        raise ValueError(f"the chunk declares {nbytes} bytes, more than max_nbytes={max_nbytes}")


def is_supported(dtype: npt.DTypeLike) -> bool:
    return little_endian(dtype) in DTYPE_TO_CODE
