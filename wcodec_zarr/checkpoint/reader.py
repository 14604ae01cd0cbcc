"""Reading a checkpoint made by ``convert``: ``open_checkpoint`` gives a ``Checkpoint``, a
mapping of ``LazyTensor``. Nothing of a tensor is read until it is indexed; a range of rows
takes the fast path of ``objects.read_rows``, anything else goes through zarr, and a whole
tensor bound for the GPU decodes there in one batch (``batch``).

``open_checkpoint`` reads one object, the root ``zarr.json`` (consolidated metadata plus the
manifest); it refuses a store without the manifest, which ``convert`` writes last.
"""

from __future__ import annotations

import glob
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import zarr
from zarr.abc.store import ByteRequest, RangeByteRequest, Store, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.group import AsyncGroup
from zarr.core.sync import sync
from zarr.storage import StorePath

from ..storage import (
    READER_CONFIG,
    EveryReadWrapper,
    MissingObjectError,
    ReplacedError,
    RequiredObjects,
    check_unchanged,
    local_path,
    local_root,
    open_store,
    read_regular_file,
    sizes_are_free,
)
from .batch import iter_tensors, load_to_gpu
from .frameworks import numpy_to_torch, resolve_framework, to_framework
from .layout import (
    MANIFEST_KEY,
    OTHER_FILES,
    READABLE_MANIFEST_VERSIONS,
    SCALES_GROUP,
    KeyEncoding,
    check_entry,
    check_file_name,
    check_name,
    check_root,
    check_write_order,
    index_entries,
    key_encoding,
    partial_prefix,
)
from .objects import check_size, object_limit, read_rows
from .quantize import dequantize
from .safetensors_file import Header, TensorEntry, json_error, parse_header
from .source import check_relative_name


class IncompleteCheckpointError(ValueError):
    """The store is not a complete checkpoint: no manifest (conversion unfinished, or not a
    checkpoint at all), or a manifest this version cannot read."""


def _compose(region: tuple[slice, ...], selection: Any) -> tuple[Any, ...] | None:
    """``selection`` (ints and slices) applied to ``region``, in the coordinates of the whole
    tensor; None when the selection is not basic."""
    if not isinstance(selection, tuple):
        selection = (selection,)
    if any(s is Ellipsis for s in selection):
        i = selection.index(Ellipsis)
        fill = (slice(None),) * (len(region) - len(selection) + 1)
        selection = selection[:i] + fill + selection[i + 1 :]
    if len(selection) > len(region) or not all(
        isinstance(s, (int, np.integer, slice)) for s in selection
    ):
        return None
    selection = selection + (slice(None),) * (len(region) - len(selection))
    out: list[Any] = []
    for r, s in zip(region, selection, strict=True):
        picked = range(r.start, r.stop)[s]
        out.append(
            picked if isinstance(picked, int) else slice(picked.start, picked.stop, picked.step)
        )
    return tuple(out)


class LazyTensor:
    """One tensor of a checkpoint (or a region of it, from ``Checkpoint.shard``). Nothing is read
    until indexed: ``t[rows, cols]`` and ``t.numpy()`` fetch and decode only the chunks they
    cover; shape, dtype and sizes come from the manifest.

    ``dtype`` is the stored NumPy dtype (bfloat16 and float8 from ml_dtypes; int8 for a quantized
    tensor, uint8 bytes for a dtype NumPy cannot hold), ``safetensors_dtype`` the original one.
    """

    def __init__(
        self,
        name: str,
        checkpoint: Checkpoint,
        info: Mapping[str, Any],
        region: tuple[slice, ...] | None = None,
    ) -> None:
        self.name = name
        self.checkpoint = checkpoint
        self.info = info
        self._region = region or tuple(slice(0, n) for n in info["shape"])
        self._shape = tuple(r.stop - r.start for r in self._region)
        self._dtype: np.dtype[Any] = np.dtype(info["dtype"])

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the tensor (or region)."""
        return self._shape

    @property
    def dtype(self) -> np.dtype[Any]:
        """The stored NumPy dtype (see the class documentation)."""
        return self._dtype

    @property
    def safetensors_dtype(self) -> str:
        """The dtype in the original safetensors header ("BF16", "F32", ...)."""
        return self.checkpoint.entry(self.name).dtype

    @property
    def nbytes(self) -> int:
        """Bytes of this tensor (or region) as stored in the original file."""
        whole = int(self.info["nbytes"])
        full = math.prod(self.info["shape"])
        return whole if full == 0 else whole * math.prod(self.shape) // full

    @property
    def stored_nbytes(self) -> int:
        """Bytes of the whole tensor's chunks in the checkpoint (scales included, Zarr
        metadata not)."""
        return int(self.info["stored_nbytes"])

    @property
    def entropy_bound_bytes(self) -> float | None:
        """The order-0 entropy of the tensor's byte planes, per shard, in bytes (wcodec tensors
        only; None for others)."""
        bound = self.info.get("entropy_bound_bytes")
        return None if bound is None else float(bound)

    @property
    def quantized(self) -> bool:
        """Stored as int8 with per-row scales by ``convert(quantize="int8")``: lossy."""
        return bool(self.info.get("quantized"))

    @property
    def chunks(self) -> tuple[int, ...]:
        """The shape of the tensor's chunks (the unit of a read)."""
        return tuple(self.info["chunks"])

    @property
    def shards(self) -> tuple[int, ...] | None:
        """The shape of its shards (stored objects of several chunks), None if not sharded."""
        shards = self.info.get("shards")
        return None if shards is None else tuple(shards)

    @property
    def array(self) -> zarr.Array[Any]:
        """The underlying Zarr array (the whole tensor)."""
        return self.checkpoint.array(self.name)

    def _with_region(self, region: tuple[slice, ...]) -> LazyTensor:
        return LazyTensor(self.name, self.checkpoint, self.info, region)

    def __repr__(self) -> str:
        region = (
            ""
            if self.is_whole
            else ", region=[" + ", ".join(f"{r.start}:{r.stop}" for r in self._region) + "]"
        )
        lossy = ", quantized" if self.quantized else ""
        return f"LazyTensor({self.name!r}, shape={self.shape}, dtype={self.dtype}{region}{lossy})"

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, selection: Any) -> np.ndarray:
        whole = _compose(self._region, selection)
        if whole is None:
            return np.asarray(self.numpy()[selection])
        return self._read(whole)

    def _read(self, selection: tuple[Any, ...]) -> np.ndarray:
        """``selection`` (ints and slices, whole-tensor coordinates) read through the row fast
        path when it applies (a step-1 range of rows), else through zarr; then checked against
        a replacement of the checkpoint meanwhile (``open_checkpoint``'s ``check_replaced``)."""
        return self._checked(self._fetch(selection))

    def _checked(self, data: np.ndarray) -> np.ndarray:
        if self.checkpoint.check_replaced or local_root(self.checkpoint.store) is not None:
            self.checkpoint.check_unchanged()
        return data

    def _fetch(self, selection: tuple[Any, ...]) -> np.ndarray:
        first = selection[0] if selection else None
        if isinstance(first, slice) and first.step in (None, 1) and first.stop > first.start:
            rows = read_rows(self.checkpoint[self.name], first.start, first.stop)
            if rows is not None:
                return np.asarray(rows[(slice(None), *selection[1:])])
        with zarr.config.set(READER_CONFIG):
            return np.asarray(self.array[selection])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self.numpy()
        return data if dtype is None else data.astype(dtype)

    def numpy(self) -> np.ndarray:
        """The tensor (or region) read and decoded into a NumPy array."""
        return self._read(self._region)

    def scales(self) -> np.ndarray:
        """The per-row float32 scales of a quantized tensor."""
        if not self.quantized:
            raise ValueError(f"{self.name} is not quantized")
        scales = self.checkpoint.array(f"{SCALES_GROUP}/{self.name}")
        return self._checked(np.asarray(scales[self._region[0]]))

    def dequantize(self) -> np.ndarray:
        """A quantized tensor as ``q * scale[row]``, in its original float dtype (lossy)."""
        return dequantize(self.numpy(), self.scales(), self.safetensors_dtype)

    @property
    def is_whole(self) -> bool:
        """The whole tensor, not a region of it."""
        return self.shape == tuple(self.info["shape"])

    def cupy(self, device: str = "cuda") -> Any:
        """The tensor in GPU memory (CuPy). bfloat16/float8 come as same-width unsigned
        integers holding the bits (CuPy has no such dtypes); ``torch`` gives the real dtype.
        A whole tensor decodes on the GPU in one batch (see ``batch``)."""
        if self.is_whole:
            return load_to_gpu([self], device, "cupy")[self.name]
        return to_framework(self.numpy(), "cupy", device)

    def torch(self, device: str = "cpu") -> Any:
        """A PyTorch tensor on ``device``; a whole tensor bound for CUDA decodes on the GPU."""
        if device.startswith("cuda") and self.is_whole:
            return load_to_gpu([self], device, "torch")[self.name]
        return numpy_to_torch(self.numpy(), device)


class BoundedObjects(EveryReadWrapper):
    """Reads of chunk and shard objects refused, before a byte is read, when the object is
    larger than its array's chunks can take (``limits``: the most bytes of an object, by array
    path): a sparse file or a zip member that inflates to gigabytes would otherwise be read
    whole into memory first. For stores whose sizes cost no request (``sizes_are_free``)."""

    def __init__(self, store: Store, limits: dict[str, int]) -> None:
        super().__init__(store)
        self.limits = limits

    def _with_store(self, store: Store) -> BoundedObjects:
        return BoundedObjects(store, self.limits)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        path = _array_of(key, self.limits)
        most = None if path is None else self.limits[path]
        if most is not None:
            try:
                size = await self._store.getsize(key)
            except FileNotFoundError:
                return None
            check_size(key, size, most)
        return await super().get(key, prototype, byte_range)


def object_limits(manifest: dict[str, Any]) -> dict[str, int]:
    """The most bytes a stored object of each array can take (``objects.object_limit``), by
    array path; a quantized tensor's scales array too."""
    limits = {}
    for name, info in manifest["tensors"].items():
        chunk = math.prod(info["chunks"]) * np.dtype(info["dtype"]).itemsize
        shards = info.get("shards")
        if shards is None:
            limits[name] = object_limit(chunk, 1, 0)
        else:
            per_shard = math.prod(s // c for s, c in zip(shards, info["chunks"], strict=True))
            limits[name] = object_limit(chunk, per_shard, per_shard)
        if info.get("quantized"):
            limits[f"{SCALES_GROUP}/{name}"] = object_limit((shards or info["chunks"])[0] * 4, 1, 0)
    return limits


class TensorSlice:
    """A tensor to index, as safetensors' ``safe_open(...).get_slice(name)`` gives it:
    ``get_shape()``, ``get_dtype()`` (the safetensors dtype), and ``s[rows, cols]``, which reads
    only the chunks the selection covers and hands it over in the framework and on the device
    the checkpoint was opened with (``Checkpoint.get_slice``)."""

    def __init__(self, tensor: LazyTensor, framework: str, device: str) -> None:
        self.tensor = tensor
        self.framework = framework
        self.device = device

    def get_shape(self) -> list[int]:
        """The tensor's shape, as a list (as safetensors gives it)."""
        return list(self.tensor.shape)

    def get_dtype(self) -> str:
        """The tensor's safetensors dtype ("BF16", "F32", ...)."""
        return self.tensor.safetensors_dtype

    def __len__(self) -> int:
        return len(self.tensor)

    def __getitem__(self, selection: Any) -> Any:
        return to_framework(np.asarray(self.tensor[selection]), self.framework, self.device)

    def __repr__(self) -> str:
        return (
            f"TensorSlice({self.tensor.name!r}, shape={self.get_shape()}, "
            f"dtype={self.get_dtype()}, framework={self.framework!r}, device={self.device!r})"
        )


_CHUNK_KEY = re.compile(r"(c[./])?\d+([./]\d+)*")  # a chunk key's part after the array path


def _array_of(key: str, paths: Mapping[str, object]) -> str | None:
    """The array (one of ``paths``) whose chunk or shard object ``key`` is, whatever the chunk
    key separator; None for any other key (documents, other arrays)."""
    path = key.rpartition("/")[0]
    while path and path not in paths:  # chunk keys with "/" separators
        path = path.rpartition("/")[0]
    if not path or not _CHUNK_KEY.fullmatch(key[len(path) + 1 :]):
        return None
    return path


class OrderedShards(EveryReadWrapper):
    """Reads through zarr whose shard indexes are checked for their writing order before zarr
    uses them (``layout.check_write_order``): a chunk's checksum says its bytes are intact, not
    that they are the chunk asked for, so entries swapped, or two pointing at the same bytes,
    would read as the wrong part of a tensor. ``grids``: each sharded array's chunk grid within
    a shard, by path; an index is what zarr reads of a shard object, its last bytes."""

    def __init__(self, store: Store, grids: dict[str, tuple[int, ...]]) -> None:
        super().__init__(store)
        self.grids = grids

    def _with_store(self, store: Store) -> OrderedShards:
        return OrderedShards(store, self.grids)

    def _grid(self, key: str) -> tuple[int, ...] | None:
        """The shard grid of the array whose chunk (shard) object ``key`` is; None for any
        other key (documents, arrays that are not sharded)."""
        path = _array_of(key, self.grids)
        return None if path is None else self.grids[path]

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        value = await super().get(key, prototype, byte_range)
        grid = None if value is None else self._grid(key)
        if value is None or grid is None:
            return value
        count = math.prod(grid)
        size = count * 16 + 4
        if isinstance(byte_range, SuffixByteRequest) and byte_range.suffix == size:
            index = value
        elif byte_range is None and len(value) >= size:
            index = value[len(value) - size :]
        else:
            return value
        check_write_order(key, index_entries(key, index.as_numpy_array(), count), grid)
        return value


@dataclass(frozen=True)
class FileInfo:
    """One original safetensors file: its name, size in bytes and parsed header."""

    name: str
    size: int
    header: Header = field(repr=False)


@dataclass(frozen=True)
class OtherFileInfo:
    """Another file of the original model (config, tokenizer, ...), kept verbatim: its name
    relative to the model folder, its size in bytes and the CRC32C its reads are checked
    against (``Checkpoint.read_other_file``)."""

    name: str
    size: int
    crc32c: int = field(repr=False)


def _other_file(entry: Any) -> OtherFileInfo:
    name, size, crc = entry["name"], entry["size"], entry["crc32c"]
    check_relative_name(name)
    if type(size) is not int or size < 0:
        raise ValueError(f"other file {name!r}: size {size!r} is not a byte count")
    if not isinstance(crc, str) or not re.fullmatch(r"[0-9a-f]{8}", crc):
        raise ValueError(f"other file {name!r}: crc32c {crc!r} is not 8 hex digits")
    return OtherFileInfo(name, size, int(crc, 16))


class Checkpoint(Mapping[str, LazyTensor]):
    """A read-only mapping from tensor name to ``LazyTensor``, in the original file order, with
    the reading surface of safetensors' ``safe_open``: a context manager, ``keys()``,
    ``get_tensor(name)`` and ``get_slice(name)``, in the framework and on the device given to
    ``open_checkpoint``.

    Built from the root metadata document alone; the Zarr group (and its arrays, from the
    consolidated metadata) is made only when a tensor is read through zarr.
    """

    def __init__(
        self,
        store: Store,
        document: dict[str, Any],
        url: str,
        consolidated: str | None = None,
        *,
        framework: str | None = None,
        device: str = "cpu",
        owns_store: bool = False,
        root_mark: RootMark | None = None,
        check_replaced: bool = True,
    ) -> None:
        self.url = url
        self.store = store
        # whether lazy reads of a remote checkpoint end with check_unchanged (open_checkpoint)
        self.check_replaced = check_replaced
        # of the root document read at open, checked by check_unchanged
        self._root_mark = root_mark
        self.device = device
        self.framework = resolve_framework(device, framework)
        self.closed = False
        self._owns_store = owns_store
        self._document = document
        # the consolidated metadata's JSON text while it is not parsed (see split_root)
        self._consolidated = consolidated
        self.manifest: dict[str, Any] = document["attributes"][MANIFEST_KEY]
        try:
            self.files = [
                FileInfo(str(f["name"]), int(f["size"]), parse_header(f["header"]))
                for f in self.manifest["files"]
            ]
            # the model's other files, absent from checkpoints written before they were kept
            self.other_files = [_other_file(e) for e in self.manifest.get("other_files", [])]
            self._names = [t.name for f in self.files for t in f.header.tensors]
            self._entries = {t.name: t for f in self.files for t in f.header.tensors}
            # names become store keys and file paths: none may lead outside the checkpoint
            # (or, on export, outside its destination)
            for info in self.files:
                check_file_name(info.name)
            if self.manifest.get("index") is not None:
                check_file_name(self.manifest["index"]["name"])
            for name in self._names:
                check_name(name)
                check_entry(name, self.manifest["tensors"][name])
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompleteCheckpointError(
                f"{url}: malformed checkpoint manifest: {exc}"
            ) from None
        self._group: zarr.Group | None = None
        self._members: dict[str, Any] | None = None
        if sizes_are_free(store):
            # every read through zarr, and a zip checkpoint's loads, check sizes first (local
            # loads read files through the native reader, which checks them itself)
            bounded = BoundedObjects(store, object_limits(self.manifest))
            self._zarr_store: Store = bounded
            if local_root(store) is None:
                self.store = bounded
        else:
            self._zarr_store = store
        self._key_encodings: dict[str, KeyEncoding] = {}

    @property
    def group(self) -> zarr.Group:
        """The checkpoint as a Zarr group (from the document already read: no request). Its
        arrays raise ``MissingObjectError`` for an object that is not there (``RequiredObjects``)
        instead of reading it as the fill value."""
        if self._group is None:
            store = StorePath(OrderedShards(RequiredObjects(self._zarr_store), self._grids()))
            try:
                group = AsyncGroup.from_dict(store, dict(self._whole_document()))
            except (TypeError, KeyError, AttributeError) as exc:
                # zarr's parsing of a damaged document fails with whatever it meets first
                raise ValueError(
                    f"{self.url}: the consolidated metadata in zarr.json is malformed: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self._group = zarr.Group(group)
        return self._group

    def _grids(self) -> dict[str, tuple[int, ...]]:
        """Each sharded tensor's chunk grid within a shard, by array path."""
        grids = {}
        for name, info in self.manifest["tensors"].items():
            shards, chunks = info.get("shards"), info["chunks"]
            if shards is not None:
                grids[name] = tuple(s // c for s, c in zip(shards, chunks, strict=True))
        return grids

    def _whole_document(self) -> dict[str, Any]:
        """The root document with its consolidated metadata, parsed on first use."""
        if self._consolidated is not None:
            try:
                self._document["consolidated_metadata"] = json.loads(self._consolidated)
            except (ValueError, RecursionError) as exc:
                raise ValueError(
                    f"{self.url}: the consolidated metadata in zarr.json is not valid JSON: "
                    f"{json_error(exc)}"
                ) from None
            self._consolidated = None
        return self._document

    def __getitem__(self, name: str) -> LazyTensor:
        self._check_open()
        if name not in self._entries:
            raise KeyError(name)
        return LazyTensor(name, self, self.manifest["tensors"][name])

    def get_tensor(self, name: str) -> Any:
        """Tensor ``name``, whole, in the checkpoint's framework and on its device (as
        safetensors' ``get_tensor``)."""
        tensor = self[name]
        if self.framework == "torch":
            return tensor.torch(self.device)
        if self.framework == "cupy":
            return tensor.cupy(self.device)
        return tensor.numpy()

    def get_slice(self, name: str) -> TensorSlice:
        """Tensor ``name`` to index lazily (as safetensors' ``get_slice``): ``[a:b]`` reads
        only the chunks it covers."""
        return TensorSlice(self[name], self.framework, self.device)

    def read_other_file(self, name: str) -> bytes:
        """The bytes of another file of the original model (``other_files``: config,
        tokenizer, ...), checked against the size and CRC32C the manifest holds."""
        self._check_open()
        info = next((f for f in self.other_files if f.name == name), None)
        if info is None:
            raise FileNotFoundError(f"{name}: not a file of {self.url}")
        key = f"{OTHER_FILES}/{name}"
        # its size first: an object larger than the manifest says is not read into memory
        try:
            size = sync(self.store.getsize(key))
        except FileNotFoundError:
            raise MissingObjectError(f"{key}: object missing from the store") from None
        if size != info.size:
            raise ValueError(f"{self.url}: {key}: damaged ({size} bytes, {info.size} expected)")
        value = sync(RequiredObjects(self.store).get(key, default_buffer_prototype()))
        data = b"" if value is None else value.to_bytes()
        if len(data) != info.size or google_crc32c.value(data) != info.crc32c:
            raise ValueError(
                f"{self.url}: {key}: damaged ({len(data)} bytes, {info.size} expected, or a "
                "CRC32C mismatch)"
            )
        return data

    def check_unchanged(self) -> None:
        """``ReplacedError`` when the checkpoint at the URL is no longer the one opened: a
        local directory renamed away (``storage.RegularFileStore``), or a root document that
        differs from the one read at open, or is gone (``convert(overwrite=True)`` into object
        storage removes the objects and writes the root document last). Whole-model loads,
        ``iter_tensors``, export and verify call it after their reads: what they read is then
        all of the opened checkpoint, or they fail."""
        if local_root(self.store) is not None:
            check_unchanged(self.store)
            return
        if self._root_mark is None:
            return  # opened from a document given, not read
        if not sync(self._root_mark.matches(self.store)):
            raise ReplacedError(f"{self.url}: the checkpoint was replaced while it was read")

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"{self.url}: the checkpoint is closed")

    def close(self) -> None:
        """Closes the store ``open_checkpoint`` opened (a zip file's handle, for one); reads
        afterwards raise ``ValueError``. A store passed in by the caller stays open."""
        if self.closed:
            return
        self.closed = True
        self._group = None
        self._members = None
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        lossy = ", quantized (lossy)" if self.quantized else ""
        closed = ", closed" if self.closed else ""
        return (
            f"Checkpoint({self.url!r}, {len(self)} tensors, {self.nbytes / 1e6:.2f} MB stored "
            f"in {self.stored_nbytes / 1e6:.2f} MB{lossy}{closed})"
        )

    def chunk_key(self, path: str, coords: tuple[int, ...]) -> str:
        """The store key of the chunk (or shard) at grid ``coords`` of the array at ``path``,
        by the arrays' chunk key encoding that the manifest names or, in a manifest written
        before it named one, the array's own from the consolidated metadata (no request)."""
        encoding = self._key_encodings.get(path)
        if encoding is None:
            try:
                config = self.manifest.get("chunk_key_encoding")
                if config is None:
                    node = self._whole_document()["consolidated_metadata"]["metadata"][path]
                    config = node["chunk_key_encoding"]
                encoding = key_encoding(config)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(
                    f"{self.url}: array {path!r} has no valid chunk key encoding ({exc})"
                ) from None
            self._key_encodings[path] = encoding
        return f"{path}/{encoding.encode(coords)}"

    def array(self, path: str) -> zarr.Array[Any]:
        """The Zarr array at ``path`` (a tensor's name, or its scales' path)."""
        self._check_open()
        if self._members is None:
            # every node at once, from the consolidated metadata: no request per tensor
            self._members = dict(self.group.members(max_depth=None))
        node = self._members.get(path)
        if not isinstance(node, zarr.Array):
            raise ValueError(f"{self.url}: the manifest names {path!r}, which is not an array")
        return node

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._names)

    def entry(self, name: str) -> TensorEntry:
        """The tensor's entry in its original safetensors header."""
        return self._entries[name]

    @property
    def metadata(self) -> dict[str, str]:
        """The ``__metadata__`` of the original files (merged; they usually agree)."""
        merged: dict[str, str] = {}
        for f in self.files:
            merged.update(f.header.metadata or {})
        return merged

    @property
    def index(self) -> tuple[str, str] | None:
        """(file name, text) of the original ``*.safetensors.index.json``, if there was one."""
        index = self.manifest.get("index")
        return None if index is None else (index["name"], index["text"])

    @property
    def nbytes(self) -> int:
        """Bytes of every tensor as in the original files."""
        return sum(int(t["nbytes"]) for t in self.manifest["tensors"].values())

    @property
    def stored_nbytes(self) -> int:
        """Bytes of every tensor's chunks in the checkpoint (Zarr metadata not counted)."""
        return sum(int(t["stored_nbytes"]) for t in self.manifest["tensors"].values())

    @property
    def quantized(self) -> bool:
        """Whether any tensor was quantized (the checkpoint is then lossy)."""
        return any(t.get("quantized") for t in self.manifest["tensors"].values())

    def iter_tensors(
        self,
        names: Sequence[str] | None = None,
        *,
        device: str = "cpu",
        framework: str | None = None,
        window: int | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """``(name, tensor)`` for every tensor (or those in ``names``), in the checkpoint's
        order, each handed over as soon as it is decoded and in memory of its own: a caller can
        put each into a model and drop it, so that memory never holds the whole model twice.

        Streams as ``load_checkpoint`` does (at most ``window`` bytes of stored objects in
        flight, default 256 MiB); ``device`` and ``framework`` as there. A damaged object
        raises when its tensor is reached, naming the object; a checkpoint replaced while it
        was read raises ``ReplacedError`` after the last tensor (``check_unchanged``), so
        tensors handed over before it may be of either checkpoint."""
        self._check_open()
        selected = list(self) if names is None else list(names)
        missing = [n for n in selected if n not in self]
        if missing:
            raise KeyError(f"not in the checkpoint: {', '.join(missing[:5])}")
        framework = resolve_framework(device, framework)
        return iter_tensors([self[n] for n in selected], device, framework, window)

    def shard(self, name: str, dim: int, rank: int, world_size: int) -> LazyTensor:
        """Rank ``rank``'s part of tensor ``name`` split along ``dim`` into ``world_size``
        parts, lazily: reading it fetches only the chunks it covers.

        Parts are split as ``torch.chunk`` and PyTorch DTensor's ``Shard(dim)`` placement split
        them: every part has ``ceil(size / world_size)`` entries but the last ones, which are
        shorter or empty when the size does not divide. Along the rows of a converted weight,
        the parts of an 8-way split are then whole chunks (see ``layout.chunk_shape``)."""
        tensor = self[name]
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        if not -len(tensor.shape) <= dim < len(tensor.shape):
            raise ValueError(f"{name} has {len(tensor.shape)} dimensions, no dimension {dim}")
        dim %= len(tensor.shape)
        size = tensor.shape[dim]
        part = -(-size // world_size)
        start = min(rank * part, size)
        stop = min(start + part, size)
        region = list(tensor._region)
        region[dim] = slice(start, stop)
        return tensor._with_region(tuple(region))


def open_checkpoint(
    url: str | Path | Store,
    *,
    storage_options: dict[str, Any] | None = None,
    framework: str | None = None,
    device: str = "cpu",
    check_replaced: bool = True,
) -> Checkpoint:
    """Opens a checkpoint (a URL or a Zarr store) read-only: one read of the root metadata, no
    tensor data. Use it as safetensors' ``safe_open``, as a context manager::

        with wc.open_checkpoint("model.zarr", framework="pt") as ckpt:
            for name in ckpt.keys():
                tensor = ckpt.get_tensor(name)

    ``framework`` ("numpy" or "np", "torch" or "pt", "cupy") and ``device`` ("cpu", "cuda",
    "cuda:1") are where ``get_tensor`` and ``get_slice`` hand tensors over; NumPy on the CPU by
    default (CuPy when ``device`` is CUDA).

    Every read checks, after it, that the checkpoint was not replaced meanwhile
    (``Checkpoint.check_unchanged``; ``ReplacedError`` if it was, never a mix of two). For a
    remote checkpoint a lazy read (a slice, one tensor) pays one more request for that, a
    ranged read of the root document's bytes that hold the manifest's generation (``RootMark``);
    ``check_replaced=False`` leaves it out there, for checkpoints nobody overwrites in place.
    Whole-model loads and local reads are checked either way."""
    framework = resolve_framework(device, framework)
    try:
        store = open_store(url, storage_options=storage_options, mode="r")
    except NotADirectoryError as exc:
        if str(url).endswith(".safetensors"):
            hint = f"; a safetensors model, which 'wcodec convert {url} <checkpoint>' converts"
            raise NotADirectoryError(f"{exc}{hint}") from None
        raise
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}{_unfinished(url)}") from None
    found = _root_document(store)
    if found is None:
        raise FileNotFoundError(f"{url}: no checkpoint there (no Zarr group){_unfinished(url)}")
    document, consolidated, root_mark = found
    attributes = document.get("attributes")
    manifest = attributes.get(MANIFEST_KEY) if isinstance(attributes, dict) else None
    if not isinstance(manifest, dict):
        raise IncompleteCheckpointError(
            f"{url} is not a complete wcodec checkpoint: it has no manifest (the conversion did "
            "not finish, or it was not made by wcodec convert)"
        )
    if manifest.get("version") not in READABLE_MANIFEST_VERSIONS:
        readable = ", ".join(map(str, READABLE_MANIFEST_VERSIONS))
        raise IncompleteCheckpointError(
            f"{url}: checkpoint manifest version {manifest.get('version')!r} is not supported "
            f"(this version reads {readable})"
        )
    return Checkpoint(
        store,
        document,
        str(url),
        consolidated,
        framework=framework,
        device=device,
        owns_store=not isinstance(url, Store),
        root_mark=root_mark,
        check_replaced=check_replaced,
    )


def _unfinished(url: str | Path | Store) -> str:
    """For a local path: where conversions into it build (killed, or still running), if any."""
    path = None if isinstance(url, Store) else local_path(url)
    if path is None:
        return ""
    builds = sorted(path.parent.glob(f"{glob.escape(partial_prefix(path))}*"))
    if not builds:
        return ""
    more = f" and {len(builds) - 1} more" if len(builds) > 1 else ""
    return f"; a conversion into it (unfinished, or still running) builds at {builds[0]}{more}"


def root_fingerprint(raw: bytes) -> int:
    """What tells two root documents apart: their CRC32C and length. A conversion of other
    weights writes another document, as it holds each tensor's stored bytes and entropy bound
    (to the last digit of a float); documents alike mean the same data, but for weights that
    differ without changing either (rows swapped inside one shard, say)."""
    return int(google_crc32c.value(raw)) << 64 | len(raw)


@dataclass(frozen=True)
class RootMark:
    """What ``check_unchanged`` compares the root document with. Every ``convert`` writes a
    new random ``generation`` into the manifest: where the document read at open holds it,
    those bytes at that offset are read back (a ranged read of a few dozen bytes, not the
    document, which is mostly consolidated metadata: hundreds of KB for a large model). Another
    document holds other bytes there (another generation, or anything else: 32 random hex
    digits match by chance with probability 2^-128); none, or a shorter one, holds none.
    Documents without a generation are compared whole (``root_fingerprint``)."""

    fingerprint: int
    generation: tuple[int, bytes] | None  # (offset, bytes) of the generation in the document

    @classmethod
    def of(cls, raw: bytes, document: dict[str, Any]) -> RootMark:
        attributes = document.get("attributes")
        manifest = attributes.get(MANIFEST_KEY) if isinstance(attributes, dict) else None
        generation = manifest.get("generation") if isinstance(manifest, dict) else None
        span = None
        if isinstance(generation, str) and len(generation) >= 32:
            needle = b'"generation":' + json.dumps(generation).encode()
            offset = raw.find(needle)
            if offset >= 0:
                span = (offset, needle)
        return cls(root_fingerprint(raw), span)

    async def matches(self, store: Store) -> bool:
        """Whether the store's root document now is the one this mark was taken of; a
        ``ValueError`` naming ``zarr.json`` when what was read back is damaged (checked against
        the document's checksum: damage in transit is not taken for a replacement)."""
        await store._ensure_open()  # zarr opens stores on first use through its own calls
        if self.generation is not None:
            offset, expected = self.generation
            try:
                buffer = await store.get(
                    "zarr.json",
                    default_buffer_prototype(),
                    byte_range=RangeByteRequest(offset, offset + len(expected)),
                )
            except FileNotFoundError:
                return False
            if buffer is None:
                return False
            if buffer.to_bytes() == expected:
                return True
            # another document, or these bytes damaged on the way: the whole one tells
        raw = await _fetch_root(store)
        if raw is None:
            return False
        check_root(raw)
        return root_fingerprint(raw) == self.fingerprint


def _root_document(store: Store) -> tuple[dict[str, Any], str | None, RootMark] | None:
    """The root ``zarr.json`` as ``split_root`` gives it, with its ``RootMark``, or
    None when there is none (or not a format 3 group). A local checkpoint's is read from its
    file (zarr's local reads cost a hop to its event loop and a thread each)."""
    root = local_root(store)
    if root is not None:
        raw = read_regular_file(root / "zarr.json", "zarr.json")
    else:
        raw = sync(_fetch_root(store))
    if raw is None:
        return None
    check_root(raw)
    try:
        document, consolidated = split_root(raw)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"zarr.json is not valid JSON: {json_error(exc)}") from None
    if not isinstance(document, dict) or document.get("node_type") != "group":
        return None
    return document, consolidated, RootMark.of(raw, document)


_ROOT_HEAD = '{"attributes":'
_ROOT_TAIL = ',"zarr_format":3,"node_type":"group","consolidated_metadata":'


def split_root(raw: bytes) -> tuple[Any, str | None]:
    """A root document as JSON. Laid out as ``convert`` writes it (compact, the consolidated
    metadata last), only the attributes are parsed and the consolidated metadata comes back as
    its text: it is most of the document, and opening a checkpoint or loading it needs only
    the manifest. Any other document is parsed whole (None for the text)."""
    text = raw.decode("utf-8")
    if text.startswith(_ROOT_HEAD) and text.endswith("}"):
        try:
            attributes, end = _DECODER.raw_decode(text, len(_ROOT_HEAD))
        except (ValueError, RecursionError):
            attributes, end = None, 0
        if end and text.startswith(_ROOT_TAIL, end):
            head = {"attributes": attributes, "zarr_format": 3, "node_type": "group"}
            return head, text[end + len(_ROOT_TAIL) : -1]
    return json.loads(text), None


_DECODER = json.JSONDecoder()


async def _fetch_root(store: Store) -> bytes | None:
    await store._ensure_open()  # zarr opens stores on first use through its own calls
    buffer = await store.get("zarr.json", default_buffer_prototype())
    return None if buffer is None else buffer.to_bytes()
