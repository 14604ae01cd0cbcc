"""wcodec-zarr: a lossless entropy codec for neural-network weight tensors."""

from importlib.metadata import PackageNotFoundError, version

from ._native import core as _core
from .api import decode, decode_batch, encode, inspect
from .dtypes import SUPPORTED_DTYPES

FORMAT_VERSION: int = _core.FORMAT_VERSION

try:
    __version__ = version("wcodec-zarr")
except PackageNotFoundError:  # pragma: no cover - running from an unbuilt tree
    __version__ = "0.0.0"

__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_DTYPES",
    "__version__",
    "decode",
    "decode_batch",
    "encode",
    "inspect",
]
