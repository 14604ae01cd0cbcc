"""A codec pipeline for wcodec arrays: zarr's BatchedCodecPipeline, except that

- a corrupt chunk raises ``CorruptChunkError`` naming its store key (and, inside a shard, the
  inner chunk's coordinates) instead of a bare decode error;
- wcodec chunks read whole into a contiguous block of a host output array are decoded straight
  into it, all chunks of a batch in one native call (zarr would decode each into a new array
  and copy it over); for whole shards of wcodec chunks this covers every inner chunk of every
  shard of the batch, which skips zarr's per-shard buffer and its copy. The shard layout is read
  with zarr's own sharding classes (zarr 3.1 to 3.4).

Importing ``wcodec_zarr`` selects it in ``zarr.config`` when the configuration still names
zarr's default pipeline, so a reader that never imports the package gets it too (zarr imports
the package when it loads the ``wcodec`` codec from its entry point).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import numpy as np
import zarr
from zarr.codecs.sharding import ShardingCodec, _ShardReader
from zarr.core.codec_pipeline import BatchedCodecPipeline, fill_value_or_default
from zarr.core.common import concurrent_map
from zarr.registry import register_pipeline

from ..codec.chunks import decode_batch
from ..codec.dtypes import is_supported, little_endian
from ..codec.errors import ChunkError
from .serializer import WCodec

DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"
KEYED_PIPELINE = "wcodec_zarr.zarr.pipeline.KeyedCodecPipeline"


class CorruptChunkError(ValueError):
    """A chunk failed to decode. ``locations``: its store key, then inner chunk coordinates."""

    def __init__(self, locations: list[str], reason: str) -> None:
        super().__init__(f"corrupt chunk {' '.join(locations)}: {reason}")
        self.locations = locations
        self.reason = reason


def _where(byte_getter: Any) -> str:
    path = getattr(byte_getter, "path", None)
    if isinstance(path, str):
        return repr(path)
    coords = getattr(byte_getter, "chunk_coords", None)
    return f"(inner chunk {tuple(coords)})" if coords is not None else repr(byte_getter)


def _host_target(out: Any) -> np.ndarray | None:
    """The output as a NumPy array of a dtype wcodec decodes into, or None."""
    target = out.as_ndarray_like()
    if not isinstance(target, np.ndarray) or not is_supported(target.dtype):
        return None
    return target if little_endian(target.dtype) == target.dtype else None


class KeyedCodecPipeline(BatchedCodecPipeline):
    """zarr's batched pipeline, with corrupt chunks named by key and wcodec chunks decoded
    straight into the output (see the module documentation)."""

    async def read_batch(
        self, batch_info: Iterable[Any], out: Any, drop_axes: tuple[int, ...] = ()
    ) -> Any:
        """Reads a batch into ``out``; returns, per item in order, whether its object was
        present (zarr 3.2 and later check this for ``array.read_missing_chunks``)."""
        items = list(batch_info)
        status: dict[int, str] = {}
        try:
            rest = await self._read_shards_into(items, out, drop_axes, status)
            rest = await self._read_into(rest, out, drop_axes, status)
            if rest:
                # None up to zarr 3.1, a status per item from 3.2
                results: Any = await super().read_batch(rest, out, drop_axes)  # type: ignore[func-returns-value]
                for item, result in zip(rest, results or [{}] * len(rest), strict=True):
                    status[id(item)] = result.get("status", "present")
        except (ChunkError, CorruptChunkError) as exc:
            culprit, inner = await self._find_culprit(items, out, drop_axes, exc)
            raise CorruptChunkError([_where(culprit[0]), *inner], exc.reason) from None
        except ValueError as exc:
            # zarr's own checks of stored bytes (a shard index's CRC32C, its offsets) fail
            # without naming the object
            culprit, inner = await self._find_culprit(items, out, drop_axes, exc)
            raise CorruptChunkError([_where(culprit[0]), *inner], str(exc)) from None
        return tuple({"status": status.get(id(item), "present")} for item in items)

    def _direct_target(
        self, chunk_codec: Any, items: list[Any], out: Any, drop_axes: tuple[int, ...]
    ) -> np.ndarray | None:
        """``out`` as a NumPy array when wcodec chunks (chunk_codec) may be decoded straight
        into it: no other codecs, no dropped axes, a host array of a wcodec dtype."""
        if (
            not items
            or not isinstance(chunk_codec, WCodec)
            or self.array_array_codecs
            or self.bytes_bytes_codecs
            or drop_axes
        ):
            return None
        return _host_target(out)

    async def _read_into(
        self, items: list[Any], out: Any, drop_axes: tuple[int, ...], status: dict[int, str]
    ) -> list[Any]:
        """Decodes the chunks read whole into a contiguous block of a host array straight into
        ``out``; returns the items it left to zarr and notes in ``status`` those it found
        missing."""
        target = self._direct_target(self.array_bytes_codec, items, out, drop_axes)
        if target is None:
            return items
        taken, rest, views = [], [], []
        for item in items:
            _, spec, _, out_selection, is_complete = item
            view = target[out_selection]  # a NumPy scalar, not a view, for a 0-d array
            if (
                is_complete
                and isinstance(view, np.ndarray)
                and view.shape == spec.shape
                and view.flags.c_contiguous
            ):
                taken.append(item)
                views.append(view)
            else:
                rest.append(item)
        if not taken:
            return rest
        items = taken
        chunks = await concurrent_map(
            [(getter, spec.prototype) for getter, spec, *_ in items],
            lambda getter, prototype: getter.get(prototype),
            zarr.config.get("async.concurrency"),
        )
        present = [i for i, c in enumerate(chunks) if c is not None]
        for i, chunk in enumerate(chunks):
            if chunk is None:
                views[i][...] = fill_value_or_default(items[i][1])
                status[id(items[i])] = "missing"
        try:
            await asyncio.to_thread(
                decode_batch,
                [chunks[i].as_numpy_array() for i in present],
                outs=[views[i] for i in present],
            )
        except ChunkError as exc:
            raise CorruptChunkError([_where(items[present[exc.index]][0])], exc.reason) from None
        return rest

    async def _read_shards_into(
        self, items: list[Any], out: Any, drop_axes: tuple[int, ...], status: dict[int, str]
    ) -> list[Any]:
        """Decodes whole shards of wcodec chunks straight into ``out`` (each inner chunk a
        contiguous block of a host array); returns the items it left to zarr and notes in
        ``status`` the shards it found missing."""
        codec = self.array_bytes_codec
        if not isinstance(codec, ShardingCodec) or len(codec.codecs) != 1:
            return items
        target = self._direct_target(codec.codecs[0], items, out, drop_axes)
        if target is None:
            return items
        inner_shape = codec.chunk_shape
        taken: list[Any] = []
        rest: list[Any] = []
        plans = []  # per shard taken: its view of out and its inner chunks' (coords, block)
        for item in items:
            _, spec, _, out_selection, is_complete = item
            view = target[out_selection]
            inner = []
            if is_complete and view.shape == spec.shape:
                for coords in np.ndindex(*codec._get_chunks_per_shard(spec)):
                    block = view[
                        tuple(
                            slice(c * n, (c + 1) * n)
                            for c, n in zip(coords, inner_shape, strict=True)
                        )
                    ]
                    if not block.flags.c_contiguous:
                        break
                    inner.append((coords, block))
                else:
                    taken.append(item)
                    plans.append((view, inner))
                    continue
            rest.append(item)
        if not taken:
            return rest
        shards = await concurrent_map(
            [(getter, spec.prototype) for getter, spec, *_ in taken],
            lambda getter, prototype: getter.get(prototype),
            zarr.config.get("async.concurrency"),
        )
        chunks, outs, where = [], [], []
        for item, shard, (view, inner) in zip(taken, shards, plans, strict=True):
            getter, spec, *_ = item
            if shard is None:
                view[...] = fill_value_or_default(spec)
                status[id(item)] = "missing"
                continue
            reader = await _ShardReader.from_bytes(shard, codec, codec._get_chunks_per_shard(spec))
            for coords, block in inner:
                span = reader.index.get_chunk_slice(coords)
                if span is None:
                    block[...] = fill_value_or_default(spec)
                    continue
                chunks.append(shard[span[0] : span[1]].as_numpy_array())
                outs.append(block)
                where.append((getter, coords))
        try:
            await asyncio.to_thread(decode_batch, chunks, outs=outs)
        except ChunkError as exc:
            getter, coords = where[exc.index]
            raise CorruptChunkError(
                [_where(getter), f"(inner chunk {tuple(coords)})"], exc.reason
            ) from None
        return rest

    async def _find_culprit(
        self, items: list[Any], out: Any, drop_axes: tuple[int, ...], exc: Exception
    ) -> tuple[Any, list[str]]:
        if isinstance(exc, ChunkError) and not self.supports_partial_decode:
            return items[exc.index], []
        # Partial (sharded) reads decode inside each shard: read the items one by one to find
        # which one fails. This runs only on the error path.
        for item in items:
            try:
                await super().read_batch([item], out, drop_axes)
            except CorruptChunkError as inner:
                return item, inner.locations
            except ValueError:
                return item, []
        return items[0], []


register_pipeline(KeyedCodecPipeline)


def install() -> None:
    """Selects the keyed pipeline unless the configuration names another non-default one."""
    if zarr.config.get("codec_pipeline.path") == DEFAULT_PIPELINE:
        zarr.config.set({"codec_pipeline.path": KEYED_PIPELINE})
