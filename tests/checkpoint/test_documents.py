"""``documents``: the array documents ``convert`` makes from templates are the ones zarr makes
itself, and the root document's consolidated metadata opens the whole hierarchy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore

from wcodec_zarr import WCodec
from wcodec_zarr.checkpoint.documents import (
    ArraySpec,
    make_targets,
    root_document,
    write_documents,
)
from wcodec_zarr.checkpoint.layout import CHUNK_KEYS, key_encoding

SPECS = [
    ArraySpec("w", np.dtype(np.float32), (3000, 400), (163, 400), (652, 400), "wcodec", {"a": 1}),
    ArraySpec("b", np.dtype(ml_dtypes.bfloat16), (384,), (384,), None, "wcodec", {}),
    ArraySpec("s", np.dtype(np.float32), (), (), None, "wcodec", {}),
    ArraySpec("empty", np.dtype(np.float16), (0, 8), (1, 8), None, "wcodec", {}),
    ArraySpec("f8", np.dtype(ml_dtypes.float8_e4m3fn), (64, 64), (16, 64), (64, 64), "wcodec", {}),
    ArraySpec("pos", np.dtype(np.int64), (10,), (10,), None, "zstd", {"x": [1, 2]}),
    ArraySpec("flag", np.dtype(np.bool_), (1000, 3), (100, 3), (500, 3), "zstd", {}),
    ArraySpec("deep/er/name.weight", np.dtype(np.int8), (5, 7), (5, 7), None, "wcodec", {}),
]


def _zarrs_own(spec: ArraySpec) -> dict[str, Any]:
    store = MemoryStore()
    codecs: dict[str, Any] = (
        {"serializer": WCodec(), "compressors": None}
        if spec.codec == "wcodec"
        else {"compressors": (ZstdCodec(level=3), Crc32cCodec())}
    )
    zarr.create_array(
        store,
        shape=spec.shape,
        dtype=spec.dtype,
        chunks=spec.chunks,
        shards=spec.shards,
        fill_value=0,
        attributes=spec.attributes,
        chunk_key_encoding=CHUNK_KEYS,
        dimension_names=spec.dimension_names,
        **codecs,
    )
    document: dict[str, Any] = json.loads(store._store_dict["zarr.json"].to_bytes())  # type: ignore[attr-defined]
    return document


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.path)
def test_documents_equal_zarrs_own(spec: ArraySpec) -> None:
    (target,) = make_targets(MemoryStore(), [spec])
    assert target.document == _zarrs_own(spec)
    # encoded directly: wcodec arrays with data and at least one dimension
    direct = spec.codec == "wcodec" and spec.shape != () and 0 not in spec.shape
    assert (target.layout is not None) == direct


@pytest.mark.parametrize("kind", ["memory", "local"])
def test_root_document_opens_every_node(kind: str, tmp_path: Path) -> None:
    """Documents go through the store, or straight to the files of a local one."""
    store = MemoryStore() if kind == "memory" else LocalStore(tmp_path / "ckpt")
    targets = make_targets(store, SPECS)
    arrays = write_documents(store, targets)
    # before the root document: a plain group
    assert dict(zarr.open_group(store, mode="r").attrs) == {}
    root = root_document(arrays, {"manifest": {"version": 1}})

    # the arrays' documents are spliced in as written; the attributes (the manifest) come first
    def group(metadata: dict[str, Any]) -> dict[str, Any]:
        inline = {"kind": "inline", "must_understand": False, "metadata": metadata}
        return {"zarr_format": 3, "node_type": "group", "consolidated_metadata": inline}

    nodes = {g: {"attributes": {}, **group({})} for g in ("deep", "deep/er")}
    nodes |= {t.path: t.document for t in targets}
    parsed = json.loads(root)
    assert parsed == {"attributes": {"manifest": {"version": 1}}, **group(nodes)}
    assert list(parsed) == ["attributes", "zarr_format", "node_type", "consolidated_metadata"]
    sync(store.set("zarr.json", default_buffer_prototype().buffer.from_bytes(root)))
    group = zarr.open_group(store, mode="r", use_consolidated=True)
    assert group.attrs["manifest"] == {"version": 1}
    consolidated = group.metadata.consolidated_metadata
    assert consolidated is not None
    assert set(consolidated.flattened_metadata) == {
        *(s.path for s in SPECS),
        "deep",
        "deep/er",
    }
    for spec in SPECS:
        array = group[spec.path]
        assert isinstance(array, zarr.Array)
        assert array.shape == spec.shape and array.dtype == spec.dtype
    # every node's own document is in the store too
    plain = zarr.open_group(store, mode="r", use_consolidated=False)
    assert plain["deep/er/name.weight"].shape == (5, 7)


@pytest.mark.parametrize(
    "config",
    [
        {"name": "default"},
        {"name": "default", "configuration": {"separator": "."}},
        {"name": "v2"},
        {"name": "v2", "configuration": {"separator": "/"}},
    ],
    ids=lambda c: f"{c['name']}{c.get('configuration', {}).get('separator', '')}",
)
@pytest.mark.parametrize("coords", [(), (0,), (3, 12), (1, 0, 7)], ids=str)
def test_chunk_keys_are_the_ones_zarr_makes(
    config: dict[str, Any], coords: tuple[int, ...]
) -> None:
    array = zarr.create_array(
        MemoryStore(), shape=(20,) * len(coords), dtype="i1", chunk_key_encoding=config
    )
    assert key_encoding(config).encode(coords) == array.metadata.encode_chunk_key(coords)


@pytest.mark.parametrize(
    "config",
    [
        "default",
        {"name": "v3"},
        {"name": "default", "configuration": {"separator": "-"}},
        {"name": "default", "configuration": [1]},
        {"name": 1},
    ],
    ids=str,
)
def test_unknown_chunk_key_encodings_are_refused(config: Any) -> None:
    with pytest.raises(ValueError, match="chunk key"):
        key_encoding(config)
