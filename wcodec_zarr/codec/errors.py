"""The codec's errors. Every decode failure is a ``ValueError``, so callers that catch bad input
as ``ValueError`` catch these too; the native module raises ``ChunkError`` itself (registered
by ``native``)."""

from __future__ import annotations


class ChunkError(ValueError):
    """A chunk failed to decode. ``index``: its position in the batch; ``reason``: the message
    without its ``chunk <i>:`` prefix."""

    def __init__(self, message: str, index: int = 0, reason: str | None = None) -> None:
        super().__init__(message)
        self.index = index
        self.reason = message if reason is None else reason


class StageError(ChunkError):
    """A stored object of a staged batch could not be read, or its shard index is bad.
    ``index``: the object's position in the batch."""
