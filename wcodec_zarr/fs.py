"""The ``wcodec`` fsspec filesystem: a checkpoint presented as the safetensors files it was
converted from, read only, byte for byte, over any fsspec URL.

    fs = fsspec.filesystem("wcodec", target="s3://bucket/model.zarr", target_options={...})
    fs.ls("")                       # model.safetensors (or the shards and the index)
    with fsspec.open("wcodec::s3://bucket/model.zarr/model.safetensors", "rb") as f:
        f.seek(8); ...

A read decodes only the row bands that cover the requested range, with a cache of decoded
bands and bands decoded ahead for sequential readers (``checkpoint.presented``, which this
module adapts to fsspec).

A file also opens as ``wcodec://model.safetensors::s3://bucket/model.zarr`` (the inner path
first, as with ``zip://``). ``safetensors.safe_open`` needs a local path (it memory-maps the
file): ``fsspec.open("simplecache::wcodec://model.safetensors::<checkpoint url>")`` decodes
the file once into a local cache, and the open file's ``name`` is its local path (simplecache
keys its files by that inner path: give each checkpoint its own ``cache_storage``). Readers
that take bytes or a file object (``safetensors.numpy.load``, plain ``read``/``seek``) work on
the file object directly.
"""

from __future__ import annotations

from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from .checkpoint.presented import CACHE_BYTES, PREFETCH, PresentedFiles
from .checkpoint.reader import Checkpoint, IncompleteCheckpointError, open_checkpoint


class WcodecFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """Read-only view of a checkpoint as its original safetensors files (see the module doc).

    ``target``: the checkpoint's URL (or an open ``Checkpoint``); ``target_options``: its
    fsspec storage options. Chained
    URLs (``wcodec::s3://bucket/model.zarr/model.safetensors``) pass the file's URL instead.
    """

    protocol = "wcodec"
    root_marker = ""

    def __init__(
        self,
        target: str | Checkpoint | None = None,
        target_options: dict[str, Any] | None = None,
        fo: str | None = None,
        target_protocol: str | None = None,
        cache_bytes: int = CACHE_BYTES,
        prefetch: int = PREFETCH,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        options = dict(target_options or {})
        self.default_file = ""
        if target is None:
            if not fo:
                raise ValueError("wcodec filesystem: pass target= (a checkpoint URL)")
            # fsspec strips the protocol from chained paths, except where it keeps the whole URL
            # (http)
            keep = target_protocol in (None, "file") or "://" in fo
            url = fo if keep else f"{target_protocol}://{fo}"
            try:  # the chained URL names the checkpoint itself...
                self.ckpt = open_checkpoint(url, storage_options=options)
            except (FileNotFoundError, IncompleteCheckpointError):
                # ...or one of its files
                target, _, self.default_file = url.rstrip("/").rpartition("/")
                self.ckpt = open_checkpoint(target, storage_options=options)
        elif isinstance(target, Checkpoint):
            self.ckpt = target
        else:
            self.ckpt = open_checkpoint(target, storage_options=options)
        self.presented = PresentedFiles(self.ckpt, cache_bytes, prefetch)

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        path = path.removeprefix("wcodec://").removeprefix("wcodec::")
        return path.strip("/")

    def _name(self, path: str) -> str:
        name = self._strip_protocol(path) or self.default_file
        if name and name not in self.presented:
            raise FileNotFoundError(f"{name}: not a file of {self.ckpt.url}")
        return name

    def _entry(self, name: str) -> dict[str, Any]:
        if not name:
            return {"name": "", "size": 0, "type": "directory"}
        return {"name": name, "size": self.presented.size(name), "type": "file"}

    def ls(self, path: str = "", detail: bool = True, **kwargs: Any) -> list[Any]:
        name = self._name(path)
        names = [name] if name else self.presented.names()
        entries = [self._entry(n) for n in names]
        return entries if detail else [e["name"] for e in entries]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._entry(self._name(path))

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AbstractBufferedFile:
        if mode != "rb":
            raise PermissionError("the wcodec filesystem is read-only")
        name = self._name(path)
        if not name:
            raise IsADirectoryError(f"{self.ckpt.url} is a directory of files")
        return WcodecFile(
            self, name, mode, block_size=block_size or 4 << 20, cache_type="none", **kwargs
        )


class WcodecFile(AbstractBufferedFile):  # type: ignore[misc]
    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: WcodecFileSystem = self.fs
        return fs.presented.read_range(self.path, start, end)
