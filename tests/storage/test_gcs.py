"""Checkpoints on Google Cloud Storage (``gs://`` through gcsfs): a GCS emulator on 127.0.0.1
with a request log (wcodec_zarr.testing.LoopbackGCS). Request counts are asserted at the server,
bit-exactness on every read."""

from __future__ import annotations

import os
from pathlib import Path

# gcsfs's zonal-bucket support probes each bucket over gRPC, which no emulator answers; it is
# read when gcsfs is imported
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import pytest
from helpers import STORE_LAYOUT, convert_to_store, new_bucket, parts_read_alike, server_fixture
from safetensors_helpers import write_layered_model

import wcodec_zarr as wc

pytest.importorskip("gcsfs")
pytest.importorskip("gcp_storage_emulator", reason="needs gcp-storage-emulator")

from wcodec_zarr.testing import LoopbackGCS

pytestmark = pytest.mark.gcs


server = server_fixture(LoopbackGCS)


@pytest.fixture
def bucket(server: LoopbackGCS) -> str:
    return new_bucket(server)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_layered_model(tmp_path_factory.mktemp("model") / "model.safetensors", 2)


@pytest.fixture(scope="module")
def local(model: Path) -> Path:
    target = model.parent / "local.zarr"
    wc.convert(model, target, progress=False, **STORE_LAYOUT)
    return target


def test_convert_load_and_export_bit_exact(
    server: LoopbackGCS, bucket: str, model: Path, local: Path, tmp_path: Path
) -> None:
    url = f"gs://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    assert wc.verify(model, url, storage_options=opts).ok
    loaded = wc.load_checkpoint(url, storage_options=opts)
    expected = wc.load_checkpoint(local)
    assert loaded.keys() == expected.keys()
    assert all(loaded[k].tobytes() == expected[k].tobytes() for k in expected)
    wc.export_safetensors(url, tmp_path / "back.safetensors", storage_options=opts)
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()


def test_open_and_partial_reads_are_counted(
    server: LoopbackGCS, bucket: str, model: Path, local: Path
) -> None:
    """Opening costs one object read; one inner chunk of a shard costs the shard index (a suffix
    range), one ranged read and the check against a replacement (a ranged read of the root
    document); the same chunk again costs the last two."""
    url = f"gs://{bucket}/model.zarr"
    convert_to_store(server, model, url)
    # a new filesystem instance, as a new reader process would have: no listings cached
    opts = server.storage_options(skip_instance_cache=True)
    server.reset_log()
    ckpt = wc.open_checkpoint(url, storage_options=opts)
    objects = f"download/storage/v1/b/{bucket}/o/model.zarr"
    assert [r.key for r in server.requests] == [f"{objects}/zarr.json"]
    server.reset_log()
    rows = ckpt["layers.1.q.weight"][0:4]
    shard = f"{objects}/layers.1.q.weight/c.0.0"
    index, chunk, check = server.requests
    assert (index.key, index.range) == (shard, f"bytes=-{8 * 16 + 4}")  # 8 chunks + CRC32C
    assert chunk.key == shard and chunk.range is not None and chunk.range.startswith("bytes=0-")
    assert chunk.nbytes < 32 * 256  # one compressed chunk, not the shard
    # not replaced meanwhile: the root document's bytes that hold the manifest's generation
    assert check.key == f"{objects}/zarr.json" and check.nbytes < 64
    server.reset_log()
    assert ckpt["layers.1.q.weight"][0:4].tobytes() == rows.tobytes()
    assert [(r.key, r.range) for r in server.requests] == [
        (shard, chunk.range),
        (check.key, check.range),
    ]
    assert rows.tobytes() == wc.open_checkpoint(local)["layers.1.q.weight"][0:4].tobytes()


def test_damaged_object_names_its_key(server: LoopbackGCS, bucket: str, model: Path) -> None:
    import gcsfs

    url = f"gs://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    fs = gcsfs.GCSFileSystem(**opts, skip_instance_cache=True)
    key = f"{bucket}/model.zarr/layers.0.q.weight/c.0.0"
    data = bytearray(fs.cat_file(key))
    data[100] ^= 0x40
    fs.pipe_file(key, bytes(data))
    with pytest.raises(ValueError, match=r"layers\.0\.q\.weight/c\.0\.0"):
        wc.load_checkpoint(url, storage_options=opts)
    other = wc.open_checkpoint(url, storage_options=opts)["layers.1.q.weight"].numpy()
    assert other.shape == (256, 256)


def test_missing_checkpoint_and_bucket(server: LoopbackGCS, bucket: str) -> None:
    opts = server.storage_options()
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        wc.open_checkpoint(f"gs://{bucket}/nothing.zarr", storage_options=opts)
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        wc.open_checkpoint("gs://no-such-bucket-wcodec/model.zarr", storage_options=opts)


def test_concurrent_reads_from_8_threads(
    server: LoopbackGCS, bucket: str, model: Path, local: Path
) -> None:
    url = f"gs://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    ckpt = wc.open_checkpoint(url, storage_options=opts)
    assert parts_read_alike(ckpt, wc.open_checkpoint(local))
