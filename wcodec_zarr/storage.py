"""URLs to Zarr stores, with a reader configuration for object storage.

``open_store`` takes local paths, ``file://``, ``memory://``, ``.zip`` files, and every
protocol fsspec reaches (``s3://`` with s3fs, ``gs://`` with gcsfs, ``http(s)://``...).

Reader configuration, applied by default and overridable through ``storage_options``:

- ``s3://``: no HEAD before a GET (s3fs ``max_concurrency=1``: whole objects in one GET, never a
  size request first); retries with backoff inside botocore (``config_kwargs.retries``,
  ``standard`` mode: 5xx, throttling and dropped connections, 4 retries) and in s3fs for
  truncated bodies (``S3FileSystem.retries``, 5); timeouts of 5 s to connect and 20 s waiting
  for response bytes (``config_kwargs.connect_timeout``, ``read_timeout``); 64 pooled
  connections (``config_kwargs.max_pool_connections``).
- Read-only stores cache shard indexes (``ShardIndexCache``): zarr reads a shard's index with a
  suffix request before each partial read; repeated partial reads of a shard fetch it once.
- ``READER_CONFIG`` (zarr configuration for reads through zarr): 64 concurrent requests and
  batches of 16 chunks per native decode call. ``LazyTensor`` reads apply it; use
  ``zarr.config.set(READER_CONFIG)`` for arrays read directly.
- Checkpoints have consolidated metadata: opening one is a single GET of the root document.

``backend="obstore"`` opens remote URLs (``s3://``, ``gs://``, ``az://``, ``http(s)://``)
with zarr's ``ObjectStore`` over obstore (extra ``[obstore]``; Rust clients, retries with
backoff built in) instead of fsspec: on the loopback S3 server it loads MiniLM 8-30% faster
and reads tensor-parallel slices 18-30% faster (``benchmarks/bench_remote.py``).
``storage_options`` are then obstore's ``from_url`` arguments (``config``, ``client_options``,
``retry_config``, or config keys such as ``aws_endpoint``).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import fsspec
from zarr.abc.store import ByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, LocalStore, WrapperStore, ZipStore

Mode = Literal["r", "w", "a"]
Backend = Literal["fsspec", "obstore"]

READER_CONFIG: dict[str, Any] = {"async.concurrency": 64, "codec_pipeline.batch_size": 16}

S3_DEFAULTS: dict[str, Any] = {
    "max_concurrency": 1,
    "config_kwargs": {
        # four retries (five attempts) ride out transient 5xx and dropped connections; an
        # endpoint that refuses connections is reported within 15 s of backoff (seven retries
        # took 47 s)
        "retries": {"max_attempts": 4, "mode": "standard"},
        # seconds to connect, and to wait for the next bytes of a response (not the whole
        # transfer): a dead endpoint is named in seconds, not after minutes
        "connect_timeout": 5,
        "read_timeout": 20,
        "max_pool_connections": 64,
    },
}


def storage_defaults(url: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` over the reader defaults for the URL's protocol (nested
    ``config_kwargs`` merged key by key)."""
    options = dict(storage_options or {})
    if not url.startswith(("s3://", "s3a://")):
        return options
    merged = {**S3_DEFAULTS, **options}
    merged["config_kwargs"] = {**S3_DEFAULTS["config_kwargs"], **options.get("config_kwargs", {})}
    return merged


class EveryReadWrapper(WrapperStore[Store]):
    """A wrapper whose ``get`` sees every read. zarr's wrapper hands partial reads
    (``get_partial_values``, ``_get_many``, and from zarr 3.2 ``get_ranges`` and the synchronous
    reads) to the wrapped store directly, past the wrapper's checks; here they go through
    ``get``, and the wrapper declares no synchronous reads, so zarr takes its asynchronous
    path."""

    # zarr 3.2+: callers that read synchronously ask this first (False: they use ``get``)
    _supports_sync_io = False

    def _with_store(self, store: Store) -> EveryReadWrapper:
        return type(self)(store)

    def with_read_only(self, read_only: bool = False) -> EveryReadWrapper:
        """This wrapper over the wrapped store's read-only (or writable) copy (zarr 3.1.0's
        wrapper has none)."""
        return self._with_store(self._store.with_read_only(read_only))

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(key, prototype, r) for key, r in key_ranges)))

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    def get_ranges(
        self, key: str, byte_ranges: Sequence[ByteRequest | None], **options: Any
    ) -> AsyncIterator[Sequence[tuple[int, Buffer | None]]]:
        """zarr 3.2+: many ranges of one object, merged where close, each read by ``get``
        (zarr's base ``Store.get_ranges``)."""
        ranges: Any = Store.get_ranges  # type: ignore[attr-defined]  # zarr 3.2+
        given = {name: value for name, value in options.items() if value is not None}
        result: AsyncIterator[Sequence[tuple[int, Buffer | None]]] = ranges(
            self, key, byte_ranges, **given
        )
        return result

    def get_sync(self, key: str, **options: Any) -> Buffer | None:
        raise TypeError(f"{type(self).__name__} reads asynchronously only ({key})")

    async def getsize(self, key: str) -> int:
        # zarr's wrapper inherits the default, which reads the whole object
        return await self._store.getsize(key)


class ShardIndexCache(EveryReadWrapper):
    """A read-only store that keeps the results of suffix requests (how zarr reads the index at
    the end of a shard), up to ``entries`` of them, least recently used first out. Copies that
    zarr makes share the cache."""

    def __init__(
        self, store: Store, entries: int = 4096, cache: OrderedDict[Any, Buffer] | None = None
    ) -> None:
        super().__init__(store)
        self.entries = entries
        self._cache: OrderedDict[Any, Buffer] = cache if cache is not None else OrderedDict()

    def _with_store(self, store: Store) -> ShardIndexCache:
        return ShardIndexCache(store, self.entries, self._cache)

    def _remember(self, key: Any, value: Buffer) -> None:
        self._cache[key] = value
        while len(self._cache) > self.entries:
            self._cache.popitem(last=False)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if not isinstance(byte_range, SuffixByteRequest):
            return await super().get(key, prototype, byte_range)
        cache_key = (key, byte_range.suffix)
        cached = self._cache.get(cache_key)
        if cached is not None:
            self._cache.move_to_end(cache_key)
            return cached
        value = await super().get(key, prototype, byte_range)
        if value is not None:
            self._remember(cache_key, value)
        return value


class DirectoryZipStore(ZipStore):
    """zarr's ``ZipStore`` with object sizes from the zip's directory: zarr's ``getsize``
    reads the whole member, which a deflate bomb (a small member declaring gigabytes) would
    inflate before any size check could refuse it."""

    async def getsize(self, key: str) -> int:
        if not self._is_open:
            self._sync_open()
        try:
            return int(self._zf.getinfo(key).file_size)
        except KeyError:
            raise FileNotFoundError(key) from None


def sizes_are_free(store: Store) -> bool:
    """Whether ``getsize`` costs no request: a local directory or zip file (through
    ``ShardIndexCache``), where a size is checked before an object is read."""
    inner = store._store if isinstance(store, ShardIndexCache) else store
    return isinstance(inner, LocalStore | DirectoryZipStore)


class TransferError(ValueError):
    """An object's bytes failed the checksum its store sent with them, on every try."""


class TransferChecks(EveryReadWrapper):
    """Reads retried when the bytes that arrived fail the checksum the store sent with them
    (botocore checks S3's object checksums: a flipped or a missing byte between the store and
    here); after ``tries`` a ``TransferError`` naming the key, where botocore's own exception
    would escape the ``ValueError``s that damaged data raises everywhere else."""

    def __init__(self, store: Store, tries: int = 3) -> None:
        super().__init__(store)
        self.tries = tries

    def _with_store(self, store: Store) -> TransferChecks:
        return TransferChecks(store, self.tries)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        failure: BaseException | None = None
        for _ in range(self.tries):
            try:
                return await super().get(key, prototype, byte_range)
            except Exception as exc:
                if not _checksum_failure(exc):
                    raise
                failure = exc
        raise TransferError(f"{key}: {failure} ({self.tries} tries)")


def _checksum_failure(exc: BaseException) -> bool:
    # by name: botocore is an optional dependency (s3fs brings it)
    return type(exc).__name__ == "FlexibleChecksumError"


class MissingObjectError(ValueError):
    """An object that must exist is not in the store."""


class RequiredObjects(EveryReadWrapper):
    """Reads of a store whose every object must exist: a missing one raises
    ``MissingObjectError`` naming its key, where zarr would read it as the fill value. A
    checkpoint's arrays are read this way: ``convert`` stores every chunk, so a missing object is
    damage (an interrupted copy, a lifecycle rule), never zeros."""

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = await super().get(key, prototype, byte_range)
        if value is None:
            raise MissingObjectError(f"{key}: object missing from the store")
        return value


def read_regular_file(path: Path, key: str) -> bytes | None:
    """The bytes of a regular file (links followed), None when there is none; ``ValueError``
    naming ``key`` for anything else there (a FIFO or a device would block a read, or never
    end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{key}: not a regular file")
    return path.read_bytes()


class ReplacedError(ValueError):
    """A local checkpoint's directory was replaced (renamed away, another put in its place)
    while it was being read."""


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which directory is at ``path``: its device and inode, and its ctime, which a rename into
    place sets (a removed directory's inode number may be given to the next one)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino, info.st_ctime_ns


class RegularFileStore(LocalStore):
    """A read-only local store that reads regular files only (see ``read_regular_file``), and
    only from the directory it opened. ``convert(overwrite=True)`` replaces a checkpoint by
    renaming a new directory into place: a read that may have crossed that swap (the directory
    at the path is no longer the one opened) raises ``ReplacedError`` instead of mixing the old
    checkpoint with the new."""

    def __init__(self, root: Path | str, *, read_only: bool = True) -> None:
        super().__init__(root, read_only=read_only)
        self.identity = _identity(self.root)

    def check_unchanged(self) -> None:
        """Raises ``ReplacedError`` when the directory at the root is not the one opened."""
        if _identity(self.root) != self.identity:
            raise ReplacedError(f"{self.root}: the checkpoint was replaced while it was read")

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        try:
            mode = os.stat(self.root / key).st_mode
        except FileNotFoundError:
            self.check_unchanged()
            return None
        if not stat.S_ISREG(mode):
            raise ValueError(f"{key}: not a regular file")
        value = await super().get(key, prototype, byte_range)
        # after the read: bytes read before a swap are still the opened checkpoint's
        self.check_unchanged()
        return value


def check_unchanged(store: Store) -> None:
    """For a store ``open_store`` opened on a local directory: ``ReplacedError`` when that
    directory was replaced since (reads of its files by path, as native loads make them, may
    then have mixed two checkpoints). Nothing for any other store."""
    inner = store._store if isinstance(store, ShardIndexCache) else store
    if isinstance(inner, RegularFileStore):
        inner.check_unchanged()


def overlap(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same place or one lies inside the other: local paths
    resolved (links followed), URLs compared by protocol and path."""
    local_a, local_b = local_path(a), local_path(b)
    if local_a is not None and local_b is not None:
        x, y = local_a.resolve(), local_b.resolve()
        return x == y or x in y.parents or y in x.parents
    if (local_a is None) != (local_b is None):
        return False
    protocol_a, path_a = fsspec.core.split_protocol(str(a))
    protocol_b, path_b = fsspec.core.split_protocol(str(b))
    parts_a = [p for p in path_a.split("/") if p]
    parts_b = [p for p in path_b.split("/") if p]
    shorter = min(len(parts_a), len(parts_b))
    return protocol_a == protocol_b and parts_a[:shorter] == parts_b[:shorter]


def local_path(url: str | Path) -> Path | None:
    """The filesystem path of a local URL (a plain path or ``file://``), else None."""
    if isinstance(url, Path):
        return url
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    return None if "://" in url else Path(url)


def open_store(
    url: str | Path | Store,
    *,
    storage_options: dict[str, Any] | None = None,
    mode: Mode = "r",
    backend: Backend = "fsspec",
) -> Store:
    """A Zarr store for ``url``: ``LocalStore`` for local directories, ``ZipStore`` for local
    ``.zip`` files, zarr's ``FsspecStore`` for anything else fsspec can open (or, with
    ``backend="obstore"``, zarr's ``ObjectStore``); read-only stores cache shard indexes. See
    the module documentation for the reader configuration.

    ``storage_options`` go to fsspec (or obstore) for remote URLs (local paths need none and
    ignore them).
    ``mode="r"`` opens read-only; ``"w"`` and ``"a"`` open for writing (the caller decides
    about existing content: the store itself is never cleared here). A Zarr ``Store`` passes
    through unchanged.
    """
    if isinstance(url, Store):
        return url
    if mode not in ("r", "w", "a"):
        raise ValueError(f"mode must be 'r', 'w' or 'a', got {mode!r}")
    if backend not in ("fsspec", "obstore"):
        raise ValueError(f"backend must be 'fsspec' or 'obstore', got {backend!r}")
    read_only = mode == "r"
    path = local_path(url)
    store: Store
    if path is not None:
        if path.suffix == ".zip":
            if read_only and not path.is_file():
                raise FileNotFoundError(f"{path}: no such zip file")
            store = DirectoryZipStore(path, mode=mode)
        else:
            if read_only and path.exists() and not path.is_dir():
                raise NotADirectoryError(
                    f"{path}: a file, not a Zarr store (a directory, a .zip file or a URL)"
                )
            if read_only and not path.is_dir():
                raise FileNotFoundError(f"{path}: no such directory")
            store = RegularFileStore(path, read_only=True) if read_only else LocalStore(path)
    elif backend == "obstore":
        store = _object_store(str(url), storage_options, read_only)
    else:
        url = str(url)
        store = FsspecStore.from_url(
            url, storage_options=storage_defaults(url, storage_options), read_only=read_only
        )
        store = TransferChecks(store) if read_only else store
    return ShardIndexCache(store) if read_only else store


def _object_store(url: str, storage_options: dict[str, Any] | None, read_only: bool) -> Store:
    try:
        import obstore.store
        from zarr.storage import ObjectStore
    except ImportError:
        raise ImportError(
            "backend='obstore' needs obstore: pip install 'wcodec-zarr[obstore]'"
        ) from None
    return ObjectStore(obstore.store.from_url(url, **(storage_options or {})), read_only=read_only)


def filesystem(
    url: str | Path, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path for ``url`` (local paths included), with the reader
    defaults for its protocol."""
    options = storage_defaults(str(url), storage_options) if local_path(url) is None else {}
    fs, path = fsspec.core.url_to_fs(str(url), **options)
    return fs, path


def local_root(store: Store) -> Path | None:
    """The directory of a local store (through ``ShardIndexCache``), whose files bulk reads may
    open themselves; None for any other store, including one a caller wrapped (its wrapper sees
    every read)."""
    if isinstance(store, ShardIndexCache):
        store = store._store
    return Path(store.root) if isinstance(store, LocalStore) else None
