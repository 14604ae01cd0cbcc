"""A codec pipeline whose read errors name the chunk: zarr's BatchedCodecPipeline, unchanged
except that a corrupt chunk raises ``CorruptChunkError`` naming its store key (and, inside a
shard, the inner chunk's coordinates) instead of a bare decode error.

Importing ``wcodec_zarr`` selects it in ``zarr.config`` when the configuration still names
zarr's default pipeline, so a reader that never imports the package gets it too (zarr imports
the package when it loads the ``wcodec`` codec from its entry point).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline

from .api import ChunkError

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
            await super().read_batch(items, out, drop_axes)
        except (ChunkError, CorruptChunkError) as exc:
            culprit, inner = await self._find_culprit(items, out, drop_axes, exc)
            reason = exc.reason
            raise CorruptChunkError([_where(culprit[0]), *inner], reason) from None

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
