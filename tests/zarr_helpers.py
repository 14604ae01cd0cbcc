"""Zarr test helpers: a store wrapper that counts requests (real store underneath)."""

from __future__ import annotations

from typing import Any

from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype

from wcodec_zarr.storage import EveryReadWrapper


class ReadLog:
    def __init__(self) -> None:
        self.reads: list[tuple[str, ByteRequest | None]] = []
        self.bytes_read = 0

    def reset(self) -> None:
        self.reads.clear()
        self.bytes_read = 0


class CountingStore(EveryReadWrapper):
    """Records every read in ``log``: (key, byte range) per request and the bytes returned
    (every kind of read goes through ``get``, whatever the zarr version). Copies that zarr
    makes (``with_read_only``) share the log."""

    def __init__(self, store: Any, log: ReadLog | None = None) -> None:
        super().__init__(store)
        self.log = log if log is not None else ReadLog()

    def _with_store(self, store: Any) -> CountingStore:
        return CountingStore(store, self.log)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        self.log.reads.append((key, byte_range))
        result = await super().get(key, prototype, byte_range)
        self.log.bytes_read += 0 if result is None else len(result)
        return result


def wcodec_array(store: Any, data: Any, *, write: bool = True, **layout: Any) -> Any:
    """A Zarr array in `store` with the wcodec serializer, shaped like `data` and holding it
    unless write=False; `layout` passes chunks, shards and other create_array arguments."""
    import zarr

    import wcodec_zarr as wc

    z = zarr.create_array(
        store,
        shape=data.shape,
        dtype=data.dtype,
        serializer=wc.WCodec(),
        compressors=None,
        **layout,
    )
    if write:
        z[:] = data
    return z


def flip_bits(path: Any, position: int, mask: int) -> None:
    """Corrupts one byte of a stored chunk file."""
    raw = bytearray(path.read_bytes())
    raw[position] ^= mask
    path.write_bytes(bytes(raw))
