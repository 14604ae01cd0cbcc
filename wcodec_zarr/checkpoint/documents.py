"""The Zarr metadata documents of a checkpoint, made without zarr's per-array machinery.

zarr parses, validates and writes each array's document one at a time: about half a millisecond
of Python per array, and one request at a time to object storage, for models of hundreds of
tensors. Here zarr makes one template document per kind of array (data type, codec, sharded or
not, rank) in memory, and each tensor's document is its template with the tensor's shape, chunk
and shard shapes and attributes put in (``tests/checkpoint/test_documents.py`` checks them
against the documents zarr makes itself). The root document carries the consolidated metadata,
in the form zarr writes it, and the checkpoint's manifest; ``convert`` writes it last.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.array import AsyncArray
from zarr.core.array_spec import ArrayConfig
from zarr.core.buffer import default_buffer_prototype
from zarr.core.metadata.v3 import ArrayV3Metadata
from zarr.core.sync import sync
from zarr.storage import MemoryStore, StorePath

from ..storage import local_root
from ..zarr.serializer import WCodec
from .layout import CHUNK_KEYS
from .shard_writer import DirectLayout, direct_layout

# A chunk equal to the fill value must still be stored: -0.0 and NaN payloads compare equal to 0
# or are skipped by zarr's emptiness test, but differ in bits.
ARRAY_CONFIG = ArrayConfig(order="C", write_empty_chunks=True)


@dataclass(frozen=True)
class ArraySpec:
    path: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    codec: str  # "wcodec" or "zstd"
    attributes: dict[str, Any]

    @property
    def dimension_names(self) -> tuple[str, ...]:
        """``<path>.dim_<axis>``, one per axis: names unique to the array, because xarray joins
        the dimensions of a group's arrays by name (and tensors of one size need not share an
        axis)."""
        return tuple(f"{self.path}.dim_{axis}" for axis in range(len(self.shape)))


@dataclass(frozen=True)
class Target:
    """Where one array's objects go: encoded by ``shard_writer`` when ``layout`` is set, else
    written through zarr. Pickles (with its store) for Dask workers."""

    store: Store
    path: str
    document: dict[str, Any]
    layout: DirectLayout | None

    def array(self) -> zarr.Array[Any]:
        metadata = ArrayV3Metadata.from_dict(self.document)
        return zarr.Array(AsyncArray(metadata, StorePath(self.store, self.path), ARRAY_CONFIG))


def _codecs(spec: ArraySpec) -> dict[str, Any]:
    if spec.codec == "wcodec":
        return {"serializer": WCodec(), "compressors": None}  # its chunks carry their CRC32C
    # zstd frames are not checksummed here: a CRC32C of each compressed chunk catches any flip
    return {"compressors": (ZstdCodec(level=3), Crc32cCodec())}


Kind = tuple[np.dtype[Any], str, bool, int]  # dtype, codec, unsharded, ndim
# One zarr-made document (as JSON text, each target's copy parsed from it) and direct layout per
# kind of array, kept for the process: zarr makes them on its event loop, a round trip that
# costs more than a small tensor's encoding.
_templates: dict[Kind, tuple[str, DirectLayout | None]] = {}
_templates_lock = threading.Lock()


def _kind(spec: ArraySpec) -> Kind:
    # the dtype itself: str() of a NumPy dtype costs microseconds, twice per tensor
    return (spec.dtype, spec.codec, spec.shards is None, len(spec.shape))


async def _make(spec: ArraySpec) -> tuple[str, DirectLayout | None]:
    ones = (1,) * len(spec.shape)
    store = MemoryStore()
    array = await zarr.api.asynchronous.create_array(
        store,
        shape=ones,
        dtype=spec.dtype,
        chunks=ones,
        shards=None if spec.shards is None else ones,
        fill_value=0,
        config=ARRAY_CONFIG,
        chunk_key_encoding=CHUNK_KEYS,
        # zarr leaves the key out for a 0-d array
        dimension_names=spec.dimension_names or None,
        **_codecs(spec),
    )
    buffer = await store.get("zarr.json", default_buffer_prototype())
    assert buffer is not None
    return buffer.to_bytes().decode(), direct_layout(array.metadata)


def _target(store: Store, spec: ArraySpec) -> Target:
    template, layout = _templates[_kind(spec)]
    document = json.loads(template)
    document["shape"] = list(spec.shape)
    document["chunk_grid"]["configuration"]["chunk_shape"] = list(spec.shards or spec.chunks)
    if spec.shards is not None:
        document["codecs"][0]["configuration"]["chunk_shape"] = list(spec.chunks)
    document["attributes"] = spec.attributes
    if spec.dimension_names:
        document["dimension_names"] = list(spec.dimension_names)
    if 0 in spec.shape:
        layout = None  # nothing is stored for an empty array; zarr knows
    elif layout is not None:
        layout = replace(
            layout,
            block=spec.shards or spec.chunks,
            inner=None if spec.shards is None else spec.chunks,
        )
    return Target(store, spec.path, document, layout)


def _group(consolidated: dict[str, Any] | None = None) -> dict[str, Any]:
    # the consolidated metadata last: a reader that needs only the attributes (the manifest)
    # parses them and leaves the rest of the text for later (checkpoint.split_root)
    document: dict[str, Any] = {"attributes": {}, "zarr_format": 3, "node_type": "group"}
    if consolidated is not None:
        document["consolidated_metadata"] = {
            "kind": "inline",
            "must_understand": False,
            "metadata": consolidated,
        }
    return document


def _parents(paths: list[str]) -> list[str]:
    """Every group path between the root and the arrays (``a`` and ``a/b`` for ``a/b/c``)."""
    found: set[str] = set()
    for path in paths:
        parts = path.split("/")[:-1]
        found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return sorted(found)


def _encode(document: Any) -> bytes:
    """Compact JSON: Python's indenting encoder is pure Python, and a checkpoint's documents
    are read by programs."""
    return json.dumps(document, separators=(",", ":")).encode()


def write_documents(store: Store, targets: list[Target]) -> dict[str, bytes]:
    """Every array's document and every group's, all at once; returns the arrays' documents
    by path, for ``root_document``. The root's is a plain group until ``root_document``
    replaces it: a store stopped half-way opens as a group that is not a complete checkpoint.

    A local checkpoint is built in a folder of its own and renamed into place once complete
    (``convert``), so its documents are plain files written from this thread: zarr's local
    store would write each through a temporary name and a hop to its event loop and a thread,
    which costs more than the write."""
    arrays = {t.path: _encode(t.document) for t in targets}
    documents = {f"{path}/zarr.json": document for path, document in arrays.items()}
    groups = _parents(list(arrays))
    documents |= {f"{g}/zarr.json": _encode(_group()) for g in groups}
    documents["zarr.json"] = _encode(_group())
    root = local_root(store)
    if root is None:
        sync(_set_all(store, documents))
        return arrays
    folder = str(root)
    for key, document in documents.items():
        path = os.path.join(folder, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(document)
    return arrays


async def _set_all(store: Store, documents: dict[str, bytes]) -> None:
    prototype = default_buffer_prototype()
    await asyncio.gather(
        *(store.set(key, prototype.buffer.from_bytes(doc)) for key, doc in documents.items())
    )


def root_document(arrays: dict[str, bytes], attributes: dict[str, Any]) -> bytes:
    """The root group's document: ``attributes`` and the consolidated metadata of every node,
    the arrays' documents (``write_documents``) spliced in as they were encoded. Key order as
    ``_group``'s."""
    nodes = {g: _encode(_group({})) for g in _parents(list(arrays))} | arrays
    metadata = b",".join(_encode(path) + b":" + document for path, document in nodes.items())
    return b"".join(
        (
            b'{"attributes":',
            _encode(attributes),
            b',"zarr_format":3,"node_type":"group","consolidated_metadata":',
            b'{"kind":"inline","must_understand":false,"metadata":{',
            metadata,
            b"}}}",
        )
    )


def make_targets(store: Store, specs: list[ArraySpec]) -> list[Target]:
    with _templates_lock:
        missing = {_kind(spec): spec for spec in specs if _kind(spec) not in _templates}
        if missing:

            async def make() -> list[tuple[str, DirectLayout | None]]:
                return [await _make(spec) for spec in missing.values()]

            _templates.update(zip(missing, sync(make()), strict=True))
    return [_target(store, spec) for spec in specs]
