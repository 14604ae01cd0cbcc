"""wcodec-zarr: a lossless entropy codec for neural-network weight tensors.

The package is layered; each layer imports only those below it (``docs/ARCHITECTURE.md``):
``cli`` -> ``fs`` -> ``checkpoint`` -> ``zarr`` -> ``codec``, with ``storage`` beside them.
This module only gathers the public names.
"""

from importlib.metadata import PackageNotFoundError, version

from .checkpoint import (
    Checkpoint,
    IncompleteCheckpointError,
    LazyTensor,
    convert,
    export_safetensors,
    load_checkpoint,
    load_module,
    open_checkpoint,
    verify,
)
from .codec import (
    FORMAT_VERSION,
    SUPPORTED_DTYPES,
    ChunkError,
    decode,
    decode_batch,
    encode,
    gpu_available,
    gpu_status,
    inspect,
)
from .storage import open_store
from .zarr import (
    BFloat16,
    CorruptChunkError,
    Float8E4M3FN,
    Float8E5M2,
    WCodec,
    WCodecNumcodec,
)
from .zarr.dtypes import register as _register_dtypes
from .zarr.pipeline import install as _install_pipeline

_install_pipeline()
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
    "load_module",
    "open_checkpoint",
    "open_store",
    "verify",
]
