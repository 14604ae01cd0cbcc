"""A checkpoint served over plain HTTP (``http(s)://`` through fsspec, or obstore): a real
server on 127.0.0.1 with byte ranges, requests counted at the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
from helpers import STORE_LAYOUT, weight_like
from safetensors_helpers import write_raw

import wcodec_zarr as wc
from wcodec_zarr.testing import LoopbackHTTP

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackHTTP, Path]]:
    root = tmp_path_factory.mktemp("www")
    rng = np.random.default_rng(0)
    tensors = [
        ("w8", "I8", [512, 256], weight_like(rng, (512, 256), np.dtype(np.int8)).tobytes()),
        ("w32", "F32", [96, 80], weight_like(rng, (96, 80), np.dtype(np.float32)).tobytes()),
        ("bias", "F32", [80], weight_like(rng, (80,), np.dtype(np.float32)).tobytes()),
    ]
    write_raw(root / "model.safetensors", tensors, {"format": "pt"})
    wc.convert(root / "model.safetensors", root / "ckpt", progress=False, **STORE_LAYOUT)
    with LoopbackHTTP(root) as server:
        yield server, root


def test_open_and_partial_reads_are_counted(served: tuple[LoopbackHTTP, Path]) -> None:
    server, root = served
    server.reset_log()
    ckpt = wc.open_checkpoint(server.url("ckpt"))
    assert [(r.method, r.key) for r in server.requests] == [("GET", "ckpt/zarr.json")]
    server.reset_log()
    rows = ckpt["w8"][0:8]
    shard = "ckpt/w8/c.0.0"
    # the shard index (4 chunks), one ranged GET, then the check that the checkpoint was not
    # replaced meanwhile: the root document's bytes that hold the manifest's generation
    index, chunk, check = server.requests
    assert (index.key, index.range) == (shard, f"bytes=-{4 * 16 + 4}")
    assert chunk.key == shard and chunk.range is not None and chunk.range.startswith("bytes=0-")
    assert chunk.nbytes < 64 * 256  # one compressed chunk, not the shard
    assert check.key == "ckpt/zarr.json" and check.nbytes < 64
    server.reset_log()
    assert ckpt["w8"][0:8].tobytes() == rows.tobytes()
    assert len(server.requests) == 2  # the shard index is cached
    local = wc.open_checkpoint(root / "ckpt")
    assert rows.tobytes() == local["w8"][0:8].tobytes()


def test_whole_loads_and_files_are_bit_exact(served: tuple[LoopbackHTTP, Path]) -> None:
    server, root = served
    loaded = wc.load_checkpoint(server.url("ckpt"))
    local = wc.load_checkpoint(root / "ckpt")
    assert list(loaded) == list(local)
    assert all(loaded[k].tobytes() == local[k].tobytes() for k in local)
    with fsspec.open(f"wcodec::{server.url('ckpt/model.safetensors')}", "rb") as f:
        assert f.read() == (root / "model.safetensors").read_bytes()


def test_obstore_over_http(served: tuple[LoopbackHTTP, Path]) -> None:
    pytest.importorskip("obstore")
    server, root = served
    options = {"client_options": {"allow_http": True}}
    store = wc.open_store(server.url("ckpt"), backend="obstore", storage_options=options)
    loaded = wc.load_checkpoint(store)
    local = wc.load_checkpoint(root / "ckpt")
    assert all(loaded[k].tobytes() == local[k].tobytes() for k in local)


def test_missing_checkpoint(served: tuple[LoopbackHTTP, Path]) -> None:
    server, _ = served
    with pytest.raises(FileNotFoundError):
        wc.open_checkpoint(server.url("nothing"))
