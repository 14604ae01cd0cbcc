"""wcodec-zarr: a lossless entropy codec for neural-network weight tensors."""

from importlib.metadata import PackageNotFoundError, version

from . import pipeline as _pipeline
from .api import FORMAT_VERSION, ChunkError, decode, decode_batch, encode, inspect
from .checkpoint import (
    Checkpoint,
    IncompleteCheckpointError,
    LazyTensor,
    export_safetensors,
    load_checkpoint,
    open_checkpoint,
    verify,
)
from .codec import WCodec
from .conversion import convert
from .dtypes import SUPPORTED_DTYPES
from .gpu import gpu_available, gpu_status
from .numcodec import WCodecNumcodec
from .pipeline import CorruptChunkError
from .storage import open_store
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
    "Checkpoint",
    "ChunkError",
    "CorruptChunkError",
    "Float8E4M3FN",
    "Float8E5M2",
    "IncompleteCheckpointError",
    "LazyTensor",
    "WCodec",
    "WCodecNumcodec",
    "__version__",
    "convert",
    "decode",
    "decode_batch",
    "encode",
    "export_safetensors",
    "gpu_available",
    "gpu_status",
    "inspect",
    "load_checkpoint",
    "open_checkpoint",
    "open_store",
    "verify",
]
