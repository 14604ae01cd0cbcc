"""Zarr integration: the wcodec serializer in real stores, sharded and not, every dtype,
format 3 and format 2, partial reads, corrupt chunks, batching, pickling."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import zarr
from helpers import DTYPES, weight_like
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore, MemoryStore, ZipStore
from zarr_helpers import CountingStore, flip_bits, wcodec_array

import wcodec_zarr as wc
from wcodec_zarr.zarr import pipeline, serializer


def make_store(kind: str, tmp_path: Path) -> Any:
    if kind == "local":
        return LocalStore(tmp_path / "store")
    if kind == "memory":
        return MemoryStore()
    return ZipStore(tmp_path / "store.zip", mode="w")


@pytest.mark.parametrize("kind", ["local", "memory", "zip"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shards", [None, (64, 300)])
def test_round_trip_in_store(
    tmp_path: Path, kind: str, dtype: np.dtype[Any], shards: tuple[int, int] | None
) -> None:
    data = weight_like(np.random.default_rng(0), (130, 610), dtype)
    store = make_store(kind, tmp_path)
    z = wcodec_array(store, data, chunks=(32, 100), shards=shards)
    back = z[:]
    assert back.dtype == dtype
    assert back.tobytes() == data.tobytes()
    assert z[5:70, 99:401].tobytes() == np.ascontiguousarray(data[5:70, 99:401]).tobytes()
    if kind == "zip":
        store.close()


def test_metadata_names_the_codec_and_its_configuration(tmp_path: Path) -> None:
    z = zarr.create_array(
        LocalStore(tmp_path),
        shape=(10,),
        dtype="int8",
        serializer=wc.WCodec(checksum=False),
        compressors=None,
    )
    meta = z.metadata.to_dict()
    assert meta["codecs"][0] == {
        "name": "wcodec",
        "configuration": {"format_version": 1, "checksum": False, "predict": True},
    }


def test_unsupported_dtype_rejected_at_creation() -> None:
    with pytest.raises(TypeError, match="does not support dtype float64"):
        zarr.create_array(
            MemoryStore(), shape=(4,), dtype="float64", serializer=wc.WCodec(), compressors=None
        )


def test_newer_format_version_is_refused() -> None:
    with pytest.raises(ValueError, match="format version 2"):
        wc.WCodec.from_dict({"name": "wcodec", "configuration": {"format_version": 2}})


def test_codec_pickles_by_configuration() -> None:
    codec = wc.WCodec(checksum=False, predict=False)
    assert pickle.loads(pickle.dumps(codec)) == codec
    numcodec = wc.WCodecNumcodec(checksum=False)
    assert pickle.loads(pickle.dumps(numcodec)).get_config() == numcodec.get_config()
    z = zarr.create_array(
        MemoryStore(), shape=(50, 50), dtype="int16", serializer=codec, compressors=None
    )
    z[:] = 7
    assert pickle.loads(pickle.dumps(z))[:].tobytes() == z[:].tobytes()


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", ["int8", "uint16", "float16", "float32", "int32"])
def test_format_2_with_numcodecs_compressor(tmp_path: Path, order: str, dtype: str) -> None:
    data = weight_like(np.random.default_rng(1), (70, 45), np.dtype(dtype))
    z = zarr.create_array(
        LocalStore(tmp_path),
        shape=data.shape,
        dtype=dtype,
        chunks=(32, 20),
        zarr_format=2,
        compressors=wc.WCodecNumcodec(),
        order=order,
    )
    z[:] = data
    assert zarr.open_array(LocalStore(tmp_path), mode="r")[:].tobytes() == data.tobytes()


def test_fresh_interpreter_reads_without_importing_the_package(tmp_path: Path) -> None:
    int8 = weight_like(np.random.default_rng(2), (64, 96), np.dtype(np.int8))
    f16 = weight_like(np.random.default_rng(3), (40, 30), np.dtype(np.float16))
    wcodec_array(LocalStore(tmp_path / "v3"), int8, chunks=(16, 32), shards=(32, 96))
    v2 = zarr.create_array(
        LocalStore(tmp_path / "v2"),
        shape=f16.shape,
        dtype="float16",
        chunks=(16, 16),
        zarr_format=2,
        compressors=wc.WCodecNumcodec(),
    )
    v2[:] = f16
    np.save(tmp_path / "int8.npy", int8)
    np.save(tmp_path / "f16.npy", f16)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import zarr
        assert "wcodec_zarr" not in sys.modules
        a = zarr.open_array({str(tmp_path / "v3")!r}, mode="r")[:]
        b = zarr.open_array({str(tmp_path / "v2")!r}, mode="r")[:]
        assert a.tobytes() == np.load({str(tmp_path / "int8.npy")!r}).tobytes()
        assert b.tobytes() == np.load({str(tmp_path / "f16.npy")!r}).tobytes()
        print("ok", "wcodec_zarr" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr
    # the entry points loaded the package on demand
    assert result.stdout.split() == ["ok", "True"]


# zarr 3.4 loads the `zarr.data_type` entry points when it parses metadata; earlier versions
# parse the data type before anything loads the package
ZARR_LOADS_DATA_TYPES = tuple(int(p) for p in zarr.__version__.split(".")[:2]) >= (3, 4)


@pytest.mark.parametrize("first", ["", "import wcodec_zarr"], ids=["plain", "imported"])
def test_bfloat16_and_float8_checkpoint_in_a_process_with_only_zarr(
    tmp_path: Path, first: str
) -> None:
    from safetensors_helpers import write_raw

    bf16 = weight_like(np.random.default_rng(4), (33, 65), np.dtype(ml_dtypes.bfloat16))
    f8 = weight_like(np.random.default_rng(5), (16, 8), np.dtype(ml_dtypes.float8_e4m3fn))
    write_raw(
        tmp_path / "m.safetensors",
        [("w", "BF16", [33, 65], bf16.tobytes()), ("f8", "F8_E4M3", [16, 8], f8.tobytes())],
    )
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False)
    script = textwrap.dedent(
        f"""
        {first}
        import sys
        import zarr
        group = zarr.open_group({str(tmp_path / "ckpt")!r}, mode="r")
        w, f8 = group["w"][:], group["f8"][:]
        print(w.dtype, f8.dtype, file=sys.stderr)
        sys.stdout.buffer.write(w.tobytes() + f8.tobytes())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, cwd=tmp_path, check=False
    )
    if first or ZARR_LOADS_DATA_TYPES:
        assert result.returncode == 0, result.stderr.decode()
        assert result.stderr.decode().split() == ["bfloat16", "float8_e4m3fn"]
        assert result.stdout == bf16.tobytes() + f8.tobytes()
    else:
        assert b"No Zarr data type found that matches 'bfloat16'" in result.stderr


def test_reading_one_inner_chunk_fetches_the_index_and_that_chunk_only() -> None:
    data = weight_like(np.random.default_rng(5), (256, 512), np.dtype(np.int8))
    inner = MemoryStore()
    wcodec_array(inner, data, chunks=(32, 64), shards=(128, 256))
    counting = CountingStore(inner)
    z = zarr.open_array(counting, mode="r")
    log = counting.log
    log.reset()
    block = z[32:64, 64:128]
    assert block.tobytes() == np.ascontiguousarray(data[32:64, 64:128]).tobytes()
    assert [k for k, _ in log.reads] == ["c/0/0", "c/0/0"]
    index_bytes = 8 * 2 * (128 // 32) * (256 // 64) + 4  # offset+length per chunk, crc32c
    chunk_bytes = len(wc.encode(data[32:64, 64:128]))
    assert log.bytes_read == index_bytes + chunk_bytes


def test_corrupt_chunk_names_its_key_and_other_chunks_still_read(tmp_path: Path) -> None:
    data = weight_like(np.random.default_rng(6), (64, 64), np.dtype(np.float16))
    wcodec_array(LocalStore(tmp_path), data, chunks=(32, 32))
    path = tmp_path / "c" / "1" / "0"
    flip_bits(path, path.stat().st_size // 2, 0x55)
    z = zarr.open_array(LocalStore(tmp_path), mode="r")
    with pytest.raises(ValueError, match=r"corrupt chunk 'c/1/0'"):
        z[:]
    assert z[:32].tobytes() == np.ascontiguousarray(data[:32]).tobytes()
    assert z[32:, 32:].tobytes() == np.ascontiguousarray(data[32:, 32:]).tobytes()


def test_corrupt_inner_chunk_of_a_shard_names_shard_and_inner_chunk(tmp_path: Path) -> None:
    data = weight_like(np.random.default_rng(7), (64, 64), np.dtype(np.int8))
    wcodec_array(LocalStore(tmp_path), data, chunks=(16, 16), shards=(64, 64))
    # inside the first inner chunk's payload (the index is at the end)
    flip_bits(tmp_path / "c" / "0" / "0", 40, 0xFF)
    z = zarr.open_array(LocalStore(tmp_path), mode="r")
    with pytest.raises(ValueError, match=r"corrupt chunk 'c/0/0' \(inner chunk \(0, 0\)\)"):
        z[:]
    assert z[16:, 16:].tobytes() == np.ascontiguousarray(data[16:, 16:]).tobytes()


@pytest.fixture
def native_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of chunks of each native batch decode call, as they happen (clear it after
    writing: writes call it with empty batches)."""
    sizes: list[int] = []
    real = wc.decode_batch

    def recording(chunks: Any, **kwargs: Any) -> Any:
        sizes.append(len(chunks))
        return real(chunks, **kwargs)

    # the two callers in the zarr layer: the codec's batch decode and the pipeline's direct path
    monkeypatch.setattr(serializer, "decode_batch", recording)
    monkeypatch.setattr(pipeline, "decode_batch", recording)
    return sizes


def test_batch_size_above_one_decodes_whole_batches_in_one_native_call(
    native_batches: list[int],
) -> None:
    data = weight_like(np.random.default_rng(8), (64, 64), np.dtype(np.int8))
    z = wcodec_array(MemoryStore(), data, chunks=(16, 16))
    native_batches.clear()
    with zarr.config.set({"codec_pipeline.batch_size": 8}):
        assert zarr.open_array(z.store, mode="r")[:].tobytes() == data.tobytes()
    assert native_batches == [8, 8]


def test_zip_store_file_is_a_real_zip(tmp_path: Path) -> None:
    store = ZipStore(tmp_path / "w.zip", mode="w")
    z = zarr.create_array(
        store, shape=(100,), dtype="uint8", serializer=wc.WCodec(), compressors=None
    )
    z[:] = np.arange(100, dtype=np.uint8)
    store.close()
    assert "c/0" in zipfile.ZipFile(tmp_path / "w.zip").namelist()
    reopened = ZipStore(tmp_path / "w.zip", mode="r")
    assert zarr.open_array(reopened, mode="r")[:].tolist() == list(range(100))


def row_sharded(store: Any, data: Any) -> Any:
    """Inner chunks of whole rows: each is a contiguous block of a whole-array read."""
    return wcodec_array(
        store, data, chunks=(32, data.shape[1]), shards=(128, data.shape[1]), fill_value=0
    )


def test_whole_shards_decode_in_one_native_call(native_batches: list[int]) -> None:
    data = weight_like(np.random.default_rng(12), (512, 96), np.dtype(np.int16))
    data[32:64] = 0  # an inner chunk of fill values, which zarr does not store
    z = row_sharded(MemoryStore(), data)
    native_batches.clear()
    with zarr.config.set({"codec_pipeline.batch_size": 4}):
        assert zarr.open_array(z.store, mode="r")[:].tobytes() == data.tobytes()
    assert native_batches == [15]  # 4 shards of 4 inner chunks, one of them empty


def test_corrupt_inner_chunk_in_whole_shard_read_names_it(tmp_path: Path) -> None:
    data = weight_like(np.random.default_rng(13), (256, 64), np.dtype(np.float16))
    row_sharded(LocalStore(tmp_path), data)
    flip_bits(tmp_path / "c" / "1" / "0", 200, 0x10)  # the second shard's first inner chunk
    z = zarr.open_array(LocalStore(tmp_path), mode="r")
    with pytest.raises(ValueError, match=r"corrupt chunk 'c/1/0' \(inner chunk \(0, 0\)\)"):
        z[:]
    assert z[:128].tobytes() == np.ascontiguousarray(data[:128]).tobytes()


def test_a_chunk_declaring_more_than_its_array_is_refused_before_allocating() -> None:
    """A hostile chunk object of 32 bytes that declares 64 MiB of zeros: the read fails naming
    it, without allocating what it declares."""
    store = MemoryStore()
    z = zarr.create_array(
        store, shape=(64,), chunks=(16,), dtype="int8", serializer=wc.WCodec(), compressors=None
    )
    z[:] = np.arange(64, dtype=np.int8)
    bomb = wc.encode(np.zeros(64 << 20, np.int8))
    sync(store.set("c/1", default_buffer_prototype().buffer.from_bytes(bomb)))
    z = zarr.open_array(store, mode="r")
    tracemalloc.start()
    try:
        # decoded straight into the result (the pipeline), or by the codec (a strided read)
        with pytest.raises(ValueError, match=r"'c/1'.*decodes to \(67108864,\)"):
            z[:]
        with pytest.raises(ValueError, match=r"'c/1'.*declares 67108864 bytes"):
            z[::2]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
