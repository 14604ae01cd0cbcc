"""The ``wcodec`` fsspec filesystem: a checkpoint read as its original safetensors files,
byte for byte, whole and by random ranges, locally and from the loopback S3 server; reads decode
only the chunks they touch."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import fsspec
import numpy as np
import pytest
from helpers import tree_bytes, weight_like
from hypothesis import given
from hypothesis import strategies as st
from safetensors_helpers import synthetic_tensors, write_raw, write_sharded_model
from zarr.storage import LocalStore
from zarr_helpers import CountingStore

import wcodec_zarr as wc
from wcodec_zarr.checkpoint.layout import seal_root
from wcodec_zarr.fs import WcodecFileSystem

SMALL = {"chunk_bytes": 4096, "shard_bytes": 16384, "progress": False}


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic model of every dtype (header padded) and its checkpoint."""
    root = tmp_path_factory.mktemp("fs")
    src = root / "model.safetensors"
    write_raw(src, synthetic_tensors(np.random.default_rng(0)), {"format": "pt"}, pad=3)
    wc.convert(src, root / "ckpt", **SMALL)
    return src, root / "ckpt"


def test_presents_the_original_file(converted: tuple[Path, Path]) -> None:
    src, ckpt = converted
    fs = fsspec.filesystem("wcodec", target=str(ckpt))  # through the fsspec.specs entry point
    assert isinstance(fs, WcodecFileSystem)
    assert fs.ls("", detail=False) == ["model.safetensors"]
    assert fs.info("model.safetensors") == {
        "name": "model.safetensors",
        "size": src.stat().st_size,
        "type": "file",
    }
    assert fs.cat_file("model.safetensors") == src.read_bytes()
    with fsspec.open(f"wcodec::file://{ckpt}/model.safetensors", "rb") as f:
        assert f.read() == src.read_bytes()
    with fsspec.open(f"wcodec://model.safetensors::file://{ckpt}", "rb") as f:
        assert f.read() == src.read_bytes()


@given(st.data())
def test_random_ranges_and_seeks(converted: tuple[Path, Path], data: st.DataObject) -> None:
    src, ckpt = converted
    original = src.read_bytes()
    fs = WcodecFileSystem(target=str(ckpt), skip_instance_cache=True)
    start = data.draw(st.integers(0, len(original)))
    end = data.draw(st.integers(start, len(original) + 10))
    assert fs.cat_file("model.safetensors", start, end) == original[start:end]
    with fs.open("model.safetensors", "rb") as f:
        f.seek(start)
        assert f.read(end - start) == original[start:end]
        f.seek(-min(5, len(original)), 2)
        assert f.read() == original[-5:]


def test_sharded_model_files_and_index(tmp_path: Path) -> None:
    folder = write_sharded_model(tmp_path / "model", np.random.default_rng(1))
    wc.convert(folder, tmp_path / "ckpt", **SMALL)
    fs = WcodecFileSystem(target=str(tmp_path / "ckpt"), skip_instance_cache=True)
    assert sorted(fs.ls("", detail=False)) == sorted(p.name for p in folder.iterdir())
    fs.get(
        [f"{n}" for n in fs.ls("", detail=False)],
        [str(tmp_path / "copy" / n) for n in fs.ls("", detail=False)],
    )
    assert tree_bytes(tmp_path / "copy") == tree_bytes(folder)


def test_reads_touch_only_their_tensor(converted: tuple[Path, Path]) -> None:
    src, ckpt_path = converted
    store = CountingStore(LocalStore(ckpt_path, read_only=True))
    ckpt = wc.open_checkpoint(store)
    fs = WcodecFileSystem(target=ckpt, prefetch=0, skip_instance_cache=True)
    store.log.reset()
    with fs.open("model.safetensors", "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = f.read(length)
    assert header.decode().startswith("{")
    assert store.log.reads == []  # the header is in the manifest
    entry = ckpt.entry("layer.4.i32")  # 1000x33 int32 over several shards
    start = 8 + length + entry.begin
    original = src.read_bytes()
    assert (
        fs.cat_file("model.safetensors", start, start + entry.nbytes)
        == original[start : start + entry.nbytes]
    )
    # its objects, then the check that the checkpoint was not replaced meanwhile
    assert {key.split("/c.")[0] for key, _ in store.log.reads} == {"layer.4.i32", "zarr.json"}
    store.log.reset()
    row_bytes = 33 * 4
    assert (
        fs.cat_file("model.safetensors", start, start + row_bytes)
        == original[start : start + row_bytes]
    )
    assert store.log.reads == []  # the first band is cached


def test_neighbouring_reads_decode_each_band_once(converted: tuple[Path, Path]) -> None:
    src, ckpt = converted
    fs = WcodecFileSystem(target=str(ckpt), prefetch=0, skip_instance_cache=True)
    original = src.read_bytes()
    with fs.open("model.safetensors", "rb") as f:
        for position in range(0, len(original), 1000):
            f.seek(position)
            assert f.read(1000) == original[position : position + 1000]
    bands = fs.presented.bands.decoded
    fs.cat_file("model.safetensors", 5000, 9000)
    assert fs.presented.bands.decoded == bands  # all cached
    assert bands < len(original) // 1000


def test_sequential_reads_prefetch(tmp_path: Path) -> None:
    weight = weight_like(np.random.default_rng(2), (16384, 256), np.dtype(np.float32))
    src = tmp_path / "m.safetensors"
    write_raw(src, [("w", "F32", [16384, 256], weight.tobytes())])  # 8 bands of 2 MiB
    wc.convert(src, tmp_path / "ckpt", chunk_bytes=1 << 16, shard_bytes=1 << 20, progress=False)
    fs = WcodecFileSystem(target=str(tmp_path / "ckpt"), prefetch=3, skip_instance_cache=True)
    with fs.open("m.safetensors", "rb") as f:
        f.read(100)
        fs.presented.bands._pool.shutdown(wait=True)  # let the prefetches finish
    assert fs.presented.bands.decoded == 4  # the band read and three ahead, of 8


def test_whole_file_copy_streams_with_bounded_memory(tmp_path: Path) -> None:
    weight = weight_like(np.random.default_rng(3), (16384, 1024), np.dtype(np.float32))  # 64 MiB
    src = tmp_path / "m.safetensors"
    write_raw(src, [("w", "F32", [16384, 1024], weight.tobytes())])
    wc.convert(src, tmp_path / "ckpt", progress=False)
    del weight
    fs = WcodecFileSystem(
        target=str(tmp_path / "ckpt"), cache_bytes=4 << 20, prefetch=1, skip_instance_cache=True
    )
    tracemalloc.start()
    try:
        fs.get_file("m.safetensors", str(tmp_path / "copy.safetensors"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "copy.safetensors").read_bytes() == src.read_bytes()
    # the 4 MiB band cache, two 2 MiB bands in flight, fsspec's 4 MiB copy block and its
    # copies: a bound set by those sizes, not by the file's
    assert peak < 24 << 20, f"peak {peak / 2**20:.1f} MiB for a 64 MiB file"


def test_safe_open_through_a_local_cache(converted: tuple[Path, Path], tmp_path: Path) -> None:
    from safetensors import safe_open

    src, ckpt = converted
    # the inner path comes first (as with zip://), so that the local cache is keyed by it; the
    # cached file's name is a local path for safe_open, which memory-maps it
    with (
        fsspec.open(
            f"simplecache::wcodec://model.safetensors::file://{ckpt}",
            "rb",
            simplecache={"cache_storage": str(tmp_path / "cache")},
        ) as local,
        safe_open(local.name, framework="numpy") as f,
    ):
        got = f.get_tensor("layer.0.i8")
    with safe_open(str(src), framework="numpy") as f:
        assert got.tobytes() == f.get_tensor("layer.0.i8").tobytes()


def test_read_only_and_missing(converted: tuple[Path, Path]) -> None:
    _, ckpt = converted
    fs = WcodecFileSystem(target=str(ckpt), skip_instance_cache=True)
    with pytest.raises(PermissionError, match="read-only"):
        fs.open("model.safetensors", "wb")
    with pytest.raises(FileNotFoundError, match=r"other\.safetensors"):
        fs.info("other.safetensors")


def test_from_the_s3_server(converted: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from wcodec_zarr.testing import LoopbackS3

    src, _ = converted
    with LoopbackS3() as s3:
        s3.create_bucket("fs-test")
        opts = s3.storage_options()
        wc.convert(src, "s3://fs-test/ckpt", storage_options=opts, **SMALL)
        with fsspec.open("wcodec::s3://fs-test/ckpt/model.safetensors", "rb", s3=opts) as f:
            assert f.read() == src.read_bytes()
        fs = WcodecFileSystem(target="s3://fs-test/ckpt", target_options=opts)
        original = src.read_bytes()
        rng = np.random.default_rng(4)
        for _ in range(20):
            a, b = sorted(rng.integers(0, len(original), 2).tolist())
            assert fs.cat_file("model.safetensors", a, b) == original[a:b]


def test_a_band_that_fails_at_once_does_not_deadlock(tmp_path: Path) -> None:
    """A band whose decode fails before its future's callback is attached (here: a zstd tensor,
    read through zarr, in a checkpoint whose consolidated metadata is not valid JSON) raises
    every time; no read blocks on the band cache's lock."""
    ids = np.arange(4096, dtype=np.int64)
    write_raw(tmp_path / "m.safetensors", [("ids", "I64", [4096], ids.tobytes())])
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False)
    root = tmp_path / "ckpt" / "zarr.json"
    text = root.read_text()
    head = text.index(',"consolidated_metadata":') + len(',"consolidated_metadata":')
    root.write_bytes(seal_root((text[:head] + "{not json}}").encode()))  # checksum and all
    script = (
        "import fsspec, wcodec_zarr\n"
        f"fs = fsspec.filesystem('wcodec', target={str(tmp_path / 'ckpt')!r}, prefetch=0)\n"
        "for _ in range(300):\n"
        "    try:\n"
        "        fs.cat_file('m.safetensors', 200, 300)\n"
        "    except ValueError as exc:\n"
        "        assert 'not valid JSON' in str(exc), exc\n"
        "    else:\n"
        "        raise AssertionError('read a band that cannot be decoded')\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,  # not the source tree, which would shadow the installed package
    )
    assert result.stdout.strip() == "ok", result.stderr
