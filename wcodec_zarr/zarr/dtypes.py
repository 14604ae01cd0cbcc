"""Zarr data types for bfloat16 and the float8 formats, backed by ml_dtypes, under the names of
the zarr-extensions registry. Registered through the ``zarr.data_type`` entry point, so
``zarr.create_array(dtype=ml_dtypes.bfloat16, ...)`` works and reads return ml_dtypes arrays.
Zarr format 3 only: format 2 has no name for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import ml_dtypes
import numpy as np
from zarr.core.dtype import data_type_registry
from zarr.core.dtype.npy.float import BaseFloat


@dataclass(frozen=True, kw_only=True)
class _MlDtypesFloat(BaseFloat):  # type: ignore[type-arg]
    """A float data type backed by an ml_dtypes scalar type; format 3 only."""

    _zarr_v2_names: ClassVar[tuple[str, ...]] = ()

    @property
    def item_size(self) -> int:
        return int(self.dtype_cls().itemsize)


@dataclass(frozen=True, kw_only=True)
class BFloat16(_MlDtypesFloat):
    """bfloat16: 1 sign, 8 exponent, 7 mantissa bits."""

    dtype_cls = type(np.dtype(ml_dtypes.bfloat16))
    _zarr_v3_name = "bfloat16"


@dataclass(frozen=True, kw_only=True)
class Float8E4M3FN(_MlDtypesFloat):
    """float8_e4m3fn: 4 exponent and 3 mantissa bits, finite, one NaN pattern per sign."""

    dtype_cls = type(np.dtype(ml_dtypes.float8_e4m3fn))
    _zarr_v3_name = "float8_e4m3fn"


@dataclass(frozen=True, kw_only=True)
class Float8E5M2(_MlDtypesFloat):
    """float8_e5m2: 5 exponent and 2 mantissa bits, IEEE-like (infinities and NaNs)."""

    dtype_cls = type(np.dtype(ml_dtypes.float8_e5m2))
    _zarr_v3_name = "float8_e5m2"


def register() -> None:
    """Registers the data types with zarr directly: zarr 3.1 lists the ``zarr.data_type`` entry
    points but never loads them, so the entry points alone are not enough there."""
    for cls in (BFloat16, Float8E4M3FN, Float8E5M2):
        data_type_registry.register(cls._zarr_v3_name, cls)
