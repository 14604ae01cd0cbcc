"""The chunk codec on buffers: one self-describing chunk per array (``docs/FORMAT.md``).

The bottom layer of the package. It loads the native modules (``native``), maps dtypes to the
format's codes (``dtypes``), encodes, decodes, batch-decodes and inspects chunks on the CPU
(``chunks``) and on the GPU (``gpu``), and stages stored objects into one buffer with native
threads (``staging``). It does no I/O of its own beyond the files it is handed, and imports
nothing of zarr.
"""

from .chunks import FORMAT_VERSION, DecodedBatch, decode, decode_batch, encode, inspect
from .dtypes import SUPPORTED_DTYPES
from .errors import ChunkError, StageError
from .gpu import gpu_available, gpu_status

__all__ = [
    "FORMAT_VERSION",
    "SUPPORTED_DTYPES",
    "ChunkError",
    "DecodedBatch",
    "StageError",
    "decode",
    "decode_batch",
    "encode",
    "gpu_available",
    "gpu_status",
    "inspect",
]
