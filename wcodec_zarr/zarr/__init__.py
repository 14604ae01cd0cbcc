"""The codec inside Zarr: ``WCodec`` (the format 3 serializer ``"wcodec"``), ``WCodecNumcodec``
(the numcodecs codec, e.g. a format 2 compressor), the codec pipeline that decodes whole chunks
and shards straight into their destination and names corrupt objects, and the bfloat16 and
float8 data types. Built on ``codec``; knows nothing of checkpoints.
"""

from .dtypes import BFloat16, Float8E4M3FN, Float8E5M2
from .numcodec import WCodecNumcodec
from .pipeline import CorruptChunkError, KeyedCodecPipeline
from .serializer import WCodec

__all__ = [
    "BFloat16",
    "CorruptChunkError",
    "Float8E4M3FN",
    "Float8E5M2",
    "KeyedCodecPipeline",
    "WCodec",
    "WCodecNumcodec",
]
