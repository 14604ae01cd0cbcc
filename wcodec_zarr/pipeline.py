"""A codec pipeline for wcodec arrays: zarr's BatchedCodecPipeline, except that

- a corrupt chunk raises ``CorruptChunkError`` naming its store key (and, inside a shard, the
  inner chunk's coordinates) instead of a bare decode error;
- wcodec chunks read whole into a contiguous block of a host output array are decoded straight
  into it, all chunks of a batch in one native call (zarr would decode each into a new array
  and copy it over).

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
from zarr.core.codec_pipeline import BatchedCodecPipeline, fill_value_or_default
from zarr.core.common import concurrent_map
from zarr.registry import register_pipeline

from . import api
from .api import ChunkError
from .codec import WCodec
from .dtypes import is_supported, little_endian

DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"
KEYED_PIPELINE = "wcodec_zarr.pipeline.KeyedCodecPipeline"


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


class KeyedCodecPipeline(BatchedCodecPipeline):
    async def read_batch(
        self, batch_info: Iterable[Any], out: Any, drop_axes: tuple[int, ...] = ()
    ) -> None:
        items = list(batch_info)
        try:
            if not await self._read_into(items, out, drop_axes):
                await super().read_batch(items, out, drop_axes)
        except (ChunkError, CorruptChunkError) as exc:
            culprit, inner = await self._find_culprit(items, out, drop_axes, exc)
            reason = exc.reason
            raise CorruptChunkError([_where(culprit[0]), *inner], reason) from None

    async def _read_into(self, items: list[Any], out: Any, drop_axes: tuple[int, ...]) -> bool:
        """Decodes the batch straight into ``out`` when every chunk is read whole into a
        contiguous block of a host array; returns False (nothing done) otherwise."""
        if (
            not isinstance(self.array_bytes_codec, WCodec)
            or self.array_array_codecs
            or self.bytes_bytes_codecs
            or drop_axes
        ):
            return False
        target = out.as_ndarray_like()
        if not isinstance(target, np.ndarray) or not is_supported(target.dtype):
            return False
        if little_endian(target.dtype) != target.dtype:
            return False
        views = []
        for _, spec, _, out_selection, is_complete in items:
            view = target[out_selection]
            if not is_complete or view.shape != spec.shape or not view.flags.c_contiguous:
                return False
            views.append(view)
        chunks = await concurrent_map(
            [(getter, spec.prototype) for getter, spec, *_ in items],
            lambda getter, prototype: getter.get(prototype),
            zarr.config.get("async.concurrency"),
        )
        present = [i for i, c in enumerate(chunks) if c is not None]
        for i, chunk in enumerate(chunks):
            if chunk is None:
                views[i][...] = fill_value_or_default(items[i][1])
        try:
            await asyncio.to_thread(
                api.decode_batch,
                [chunks[i].as_numpy_array() for i in present],
                outs=[views[i] for i in present],
            )
        except ChunkError as exc:
            index = present[exc.index]
            raise ChunkError(f"corrupt wcodec chunk: {exc.reason}", index, exc.reason) from None
        return True

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
            except ChunkError:
                return item, []
        return items[0], []


register_pipeline(KeyedCodecPipeline)


def install() -> None:
    """Selects the keyed pipeline unless the configuration names another non-default one."""
    if zarr.config.get("codec_pipeline.path") == DEFAULT_PIPELINE:
        zarr.config.set({"codec_pipeline.path": KEYED_PIPELINE})
