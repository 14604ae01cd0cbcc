"""``WCodec``: the Zarr format 3 array-to-bytes codec ``"wcodec"``.

Use it as the serializer, with no further compressors (the codec compresses)::

    zarr.create_array(store, shape=..., dtype="int8", chunks=..., shards=...,
                      serializer=WCodec(), compressors=None)

Its batch ``decode`` hands every chunk of a batch to one multi-threaded native call, off the
event loop; zarr calls it once per ``codec_pipeline.batch_size`` chunks.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codec.chunks import FORMAT_VERSION, decode_batch, encode
from ..codec.dtypes import SUPPORTED_DTYPES, dtype_code, is_supported
from ..codec.errors import ChunkError
from ..codec.gpu import gpu_available, storage_dtype

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec
    from zarr.core.buffer import Buffer, NDBuffer
    from zarr.core.chunk_grids import ChunkGrid
    from zarr.core.common import JSON
    from zarr.core.dtype.wrapper import TBaseDType, TBaseScalar, ZDType

from zarr.abc.codec import ArrayBytesCodec
from zarr.core.common import parse_named_configuration

CODEC_NAME = "wcodec"


def _parse_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"wcodec configuration {name!r} must be true or false, got {value!r}")
    return value


def _gpu_batch(spec: ArraySpec) -> bool:
    """Decode on the GPU: zarr asks for device buffers (zarr.config.enable_gpu()), a GPU is
    usable, and CuPy has the dtype (it lacks bfloat16 and float8, which decode on the CPU)."""
    # imported on first decode, not with the package: zarr's GPU buffer module imports CuPy (an
    # optional dependency, slow to import) wherever it is installed
    from zarr.core.buffer import gpu

    if not issubclass(spec.prototype.nd_buffer, gpu.NDBuffer):
        return False
    native = spec.dtype.to_native_dtype()
    return gpu_available() and storage_dtype(native) == native


@dataclass(frozen=True)
class WCodec(ArrayBytesCodec):
    """Lossless weight codec (format version 1; see docs/FORMAT.md).

    ``checksum``: store a CRC32C of each chunk's decoded bytes, verified on every read.
    ``predict``: let the encoder use the delta predictor where it lowers the size.
    Neither is needed to read: chunks are self-describing.
    """

    is_fixed_size = False

    checksum: bool = True
    predict: bool = True

    def __init__(self, *, checksum: bool = True, predict: bool = True) -> None:
        object.__setattr__(self, "checksum", _parse_bool("checksum", checksum))
        object.__setattr__(self, "predict", _parse_bool("predict", predict))

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        """The codec of a Zarr metadata entry; ``ValueError`` for another format version or
        unknown keys."""
        _, config = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        config = dict(config or {})
        version = config.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(
                f"wcodec format version {version} is not readable by this version of "
                f"wcodec-zarr (reads version {FORMAT_VERSION}); upgrade wcodec-zarr"
            )
        unknown = set(config) - {"checksum", "predict"}
        if unknown:
            raise ValueError(f"unknown wcodec configuration keys: {sorted(unknown)}")
        return cls(**config)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        """The codec's Zarr metadata entry, with the format version it writes."""
        return {
            "name": CODEC_NAME,
            "configuration": {
                "format_version": FORMAT_VERSION,
                "checksum": self.checksum,
                "predict": self.predict,
            },
        }

    def validate(
        self,
        *,
        shape: tuple[int, ...],
        dtype: ZDType[TBaseDType, TBaseScalar],
        chunk_grid: ChunkGrid,
    ) -> None:
        """``TypeError`` for an array whose dtype the codec does not hold."""
        native = dtype.to_native_dtype()
        if not is_supported(native):
            raise TypeError(
                f"the wcodec serializer does not support dtype {native}; supported: "
                + ", ".join(SUPPORTED_DTYPES)
            )

    def _decoded(self, array: Any, chunk_spec: ArraySpec, index: int) -> NDBuffer:
        expected = chunk_spec.dtype.to_native_dtype()
        on_host = isinstance(array, np.ndarray)
        # GPU results hold bfloat16/float8 as same-width integers; compare formats by code
        same = (
            dtype_code(array.dtype) == dtype_code(expected)
            if on_host
            else (array.dtype == expected)
        )
        if array.shape != chunk_spec.shape or not same:
            reason = (
                f"chunk holds {array.dtype}{list(array.shape)}, the array expects "
                f"{expected}{list(chunk_spec.shape)}"
            )
            raise ChunkError(f"corrupt wcodec chunk: {reason}", index, reason)
        if on_host:
            return chunk_spec.prototype.nd_buffer.from_numpy_array(array.view(expected))
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(array)

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_batch_sync([(chunk_bytes, chunk_spec)])[0]  # type: ignore[return-value]

    def _decode_batch_sync(
        self, batch: list[tuple[Buffer | None, ArraySpec]]
    ) -> list[NDBuffer | None]:
        present = [i for i, (data, _) in enumerate(batch) if data is not None]
        on_gpu = bool(present) and _gpu_batch(batch[present[0]][1])
        raw = [
            batch[i][0].as_array_like() if on_gpu else batch[i][0].as_numpy_array()  # type: ignore[union-attr]
            for i in present
        ]
        # a chunk may declare no more than the array's chunk shape: refused before allocating
        max_nbytes = max(
            (math.prod(spec.shape) * spec.dtype.to_native_dtype().itemsize for _, spec in batch),
            default=0,
        )
        try:
            arrays = decode_batch(raw, device="cuda" if on_gpu else "cpu", max_nbytes=max_nbytes)
        except ChunkError as exc:
            index = present[exc.index]
            raise ChunkError(f"corrupt wcodec chunk: {exc.reason}", index, exc.reason) from None
        out: list[NDBuffer | None] = [None] * len(batch)
        for i, array in zip(present, arrays, strict=True):
            out[i] = self._decoded(array, batch[i][1], i)
        return out

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    async def decode(
        self, chunks_and_specs: Iterable[tuple[Buffer | None, ArraySpec]]
    ) -> Iterable[NDBuffer | None]:
        """Decodes a batch of chunks (None for a missing one) in one native call."""
        # One native call for the whole batch, whose threads share all segments of all chunks.
        return await asyncio.to_thread(self._decode_batch_sync, list(chunks_and_specs))

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        encoded = encode(chunk_array.as_numpy_array(), checksum=self.checksum, predict=self.predict)
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        """Not known in advance: ``NotImplementedError`` (zarr asks only of fixed-size codecs)."""
        raise NotImplementedError("wcodec output size depends on the data")

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable by its configuration (Dask workers unpickle arrays and their codecs)
        return (WCodec, (), {"checksum": self.checksum, "predict": self.predict})

    def __setstate__(self, state: dict[str, bool]) -> None:
        object.__setattr__(self, "checksum", state["checksum"])
        object.__setattr__(self, "predict", state["predict"])
