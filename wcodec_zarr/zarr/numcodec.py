"""``WCodecNumcodec``: the numcodecs codec ``"wcodec"``, e.g. the compressor of Zarr format 2
arrays. Its ``decode`` gets flat bytes; the chunk header restores dtype and shape."""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_contiguous_ndarray_like, ndarray_copy

from ..codec.chunks import decode as decode_chunk
from ..codec.chunks import encode as encode_chunk


class WCodecNumcodec(Codec):  # type: ignore[misc]
    """The wcodec codec for numcodecs (``numcodecs.get_codec({"id": "wcodec"})``): the
    compressor of Zarr format 2 arrays, or any flat-buffer use. Its chunks are the same bytes
    as the Zarr 3 serializer's (``docs/FORMAT.md``); ``checksum`` and ``predict`` as for
    ``WCodec``."""

    codec_id = "wcodec"

    def __init__(self, checksum: bool = True, predict: bool = True) -> None:
        self.checksum = bool(checksum)
        self.predict = bool(predict)

    def encode(self, buf: Any) -> bytes:
        """One chunk of ``buf`` (any array of a supported dtype), self-describing."""
        array = np.asanyarray(buf)
        # A Fortran-ordered chunk is stored as its transpose (C order, same bytes), so the flat
        # decoded buffer is in the order Zarr format 2 expects.
        if array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous:
            array = array.T
        return encode_chunk(array, checksum=self.checksum, predict=self.predict)

    def decode(self, buf: Any, out: Any = None) -> Any:
        """The array a chunk holds, or its bytes copied into ``out`` (which it must fit);
        ``ValueError`` naming the damage for a corrupt chunk."""
        data = ensure_contiguous_ndarray_like(buf).reshape(-1).view(np.uint8)
        # into a given buffer: a chunk declaring more than fits is refused before allocating
        limit = None if out is None else ensure_contiguous_ndarray_like(out).nbytes
        decoded = decode_chunk(data, max_nbytes=limit)
        return decoded if out is None else ndarray_copy(decoded, out)

    def __repr__(self) -> str:
        return f"WCodecNumcodec(checksum={self.checksum}, predict={self.predict})"
