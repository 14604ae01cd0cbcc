"""URLs to Zarr stores: local paths, ``file://``, ``memory://``, ``.zip`` files, and every
protocol fsspec reaches (``s3://``, ``gs://``, ``http(s)://``...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import fsspec
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore, ZipStore

Mode = Literal["r", "w", "a"]


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
) -> Store:
    """A Zarr store for ``url``: ``LocalStore`` for local directories, ``ZipStore`` for local
    ``.zip`` files, zarr's ``FsspecStore`` for anything else fsspec can open.

    ``storage_options`` go to fsspec for remote URLs (local paths need none and ignore them).
    ``mode="r"`` opens read-only; ``"w"`` and ``"a"`` open for writing (the caller decides
    about existing content: the store itself is never cleared here). A Zarr ``Store`` passes
    through unchanged.
    """
    if isinstance(url, Store):
        return url
    if mode not in ("r", "w", "a"):
        raise ValueError(f"mode must be 'r', 'w' or 'a', got {mode!r}")
    read_only = mode == "r"
    path = local_path(url)
    if path is not None:
        if path.suffix == ".zip":
            if read_only and not path.is_file():
                raise FileNotFoundError(f"{path}: no such zip file")
            return ZipStore(path, mode=mode)
        if read_only and not path.is_dir():
            raise FileNotFoundError(f"{path}: no such directory")
        return LocalStore(path, read_only=read_only)
    url = str(url)
    return FsspecStore.from_url(url, storage_options=storage_options, read_only=read_only)


def filesystem(
    url: str | Path, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path for ``url`` (local paths included)."""
    fs, path = fsspec.core.url_to_fs(str(url), **(storage_options or {}))
    return fs, path
