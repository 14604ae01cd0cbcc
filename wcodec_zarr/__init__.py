"""wcodec-zarr: a lossless entropy codec for neural-network weight tensors."""

from importlib.metadata import PackageNotFoundError, version

from . import pipeline as _pipeline
from .api import FORMAT_VERSION, ChunkError, decode, decode_batch, encode, inspect
from .codec import WCodec
from .dtypes import SUPPORTED_DTYPES
from .gpu import gpu_available, gpu_status
from .numcodec import WCodecNumcodec
from .pipeline import CorruptChunkError
from .zarr_dtypes import BFloat16, Float8E4M3FN, Float8E5M2
from .zarr_dtypes import register as _register_dtypes

_pipeline.install()
_register_dtypes()

try:
    __version__ = version("wcodec-zarr")
except PackageNotFoundError:  # pragma: no cover - running from an unbuilt tree
    __version__ = "0.0.0"

__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_DTYPES",
    "BFloat16",
    "ChunkError",
    "CorruptChunkError",
    "Float8E4M3FN",
    "Float8E5M2",
    "WCodec",
    "WCodecNumcodec",
    "__version__",
    "decode",
    "decode_batch",
    "encode",
    "gpu_available",
    "gpu_status",
    "inspect",
]
