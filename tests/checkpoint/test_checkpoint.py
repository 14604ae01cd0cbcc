"""The checkpoint toolkit: convert -> verify -> open/load -> export, bit-exact and
metadata-exact, on real MiniLM weights and synthetic models of every dtype; lazy reads touch
only their chunks; bad sources are refused before anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
import zarr
from helpers import memory_store, tree_bytes, weight_like
from safetensors_helpers import synthetic_tensors, write_header, write_raw, write_sharded_model
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore
from zarr_helpers import CountingStore

import wcodec_zarr as wc
from wcodec_zarr.checkpoint import IncompleteCheckpointError
from wcodec_zarr.checkpoint.convert import entropy_bound
from wcodec_zarr.checkpoint.layout import CHUNK_BYTES, chunk_shape, seal_root
from wcodec_zarr.checkpoint.objects import stored_objects
from wcodec_zarr.codec.staging import place_objects
from wcodec_zarr.storage import ReplacedError
from wcodec_zarr.testing.weights import load_safetensors, minilm_path

SMALL = {"chunk_bytes": 4096, "shard_bytes": 16384}  # many chunks and shards per tensor


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "model.safetensors"
    raw = write_raw(
        path,
        synthetic_tensors(np.random.default_rng(0)),
        {"format": "pt", "note": "synthetic"},
        pad=5,
    )
    return path, raw


@pytest.fixture
def sharded(tmp_path: Path) -> Path:
    return write_sharded_model(tmp_path / "sharded", np.random.default_rng(1))


def test_minilm_round_trip(minilm: object, tmp_path: Path) -> None:

    src = minilm_path()
    wc.convert(src, tmp_path / "ckpt", progress=False)
    assert wc.verify(src, tmp_path / "ckpt").ok
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    assert ckpt.nbytes == sum(t.nbytes for t in load_safetensors(src).values())
    assert ckpt.nbytes / ckpt.stored_nbytes > 1.2  # fp32 as shipped; the bound is about 1.21
    loaded = wc.load_checkpoint(tmp_path / "ckpt")
    original = load_safetensors(src)
    assert list(loaded) == list(ckpt)
    assert all(loaded[k].tobytes() == original[k].tobytes() for k in original)
    wc.export_safetensors(tmp_path / "ckpt", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == src.read_bytes()


def test_every_dtype_round_trips(model: tuple[Path, bytes], tmp_path: Path) -> None:
    path, raw = model
    manifest = wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    assert wc.verify(path, tmp_path / "ckpt").ok
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    assert ckpt.metadata == {"format": "pt", "note": "synthetic"}
    codecs = {name: t["codec"] for name, t in manifest["tensors"].items()}
    assert codecs["layer.0.i8"] == codecs["layer.6.bf16"] == "wcodec"
    assert codecs["layer.11.i64"] == codecs["layer.10.bool"] == "zstd"
    assert codecs["packed.f4"] == "wcodec"  # its bytes, as uint8
    assert ckpt["layer.6.bf16"].dtype == np.dtype(ml_dtypes.bfloat16)
    assert ckpt["packed.f4"].dtype == np.uint8  # kept as its bytes
    assert ckpt["layer.3.u16"].shape == ()
    assert ckpt["layer.5.f16"].shape == (0, 4)
    assert ckpt["layer.4.i32"].array.shards is not None  # 1000x33 spans several shards
    wc.export_safetensors(tmp_path / "ckpt", tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == raw  # padding and order included


def test_manifest_sizes_and_bounds(model: tuple[Path, bytes], tmp_path: Path) -> None:
    """Each tensor's stored size is the sum of its objects in the store, and its entropy bound
    is the order-0 entropy of each byte plane of each shard's region (counted by the encoder)."""

    path, _ = model
    manifest = wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    original = wc.load_checkpoint(tmp_path / "ckpt")
    for name, info in manifest["tensors"].items():
        folder = tmp_path / "ckpt" / name
        objects = [p for p in folder.rglob("*") if p.is_file() and p.name != "zarr.json"]
        assert info["stored_nbytes"] == sum(p.stat().st_size for p in objects), name
        data = original[name]
        if info["codec"] == "zstd" or data.size == 0:
            assert info["entropy_bound_bytes"] is None, name
            continue
        if data.ndim == 0:
            expected = entropy_bound(data)
        else:
            rows = (info["shards"] or info["chunks"])[0]
            bounds = [entropy_bound(data[i : i + rows]) for i in range(0, len(data), rows)]
            expected = sum(b for b in bounds if b is not None)
        assert info["entropy_bound_bytes"] == pytest.approx(expected, rel=1e-9, abs=1e-9), name


def test_negative_zeros_and_nan_payloads_survive(model: tuple[Path, bytes], tmp_path: Path) -> None:
    # zarr would skip a chunk that compares equal to the fill value 0; -0.0 == 0 in NumPy
    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    zeros = ckpt["zeros.negative"].numpy()
    assert np.signbit(zeros).all()
    special = ckpt["special.f32"].numpy().view(np.uint32)
    assert (special[-5:] == 0x7FC00001).all()


def test_sharded_model_with_index(sharded: Path, tmp_path: Path) -> None:
    wc.convert(sharded, tmp_path / "ckpt", progress=False, **SMALL)
    assert wc.verify(sharded, tmp_path / "ckpt").ok
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    assert [f.name for f in ckpt.files] == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert ckpt.index is not None and ckpt.index[0] == "model.safetensors.index.json"
    written = wc.export_safetensors(tmp_path / "ckpt", tmp_path / "out")
    assert len(written) == 3
    assert tree_bytes(tmp_path / "out") == tree_bytes(sharded)


def test_lazy_slice_reads_only_its_chunks(tmp_path: Path) -> None:
    weight = weight_like(np.random.default_rng(5), (1000, 64), np.dtype(np.int8))
    write_raw(tmp_path / "m.safetensors", [("w", "I8", [1000, 64], weight.tobytes())])
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False, **SMALL)
    store = CountingStore(LocalStore(tmp_path / "ckpt", read_only=True))
    ckpt = wc.open_checkpoint(store)
    assert [key for key, _ in store.log.reads] == ["zarr.json"]  # consolidated: one read
    tensor = ckpt["w"]
    # rank 0 of 8 gets 125 rows: chunks of 25 rows (the largest divisor of 125 that fits 4096
    # bytes), shards of 10 chunks
    assert (tensor.shape, tensor.chunks, tensor.array.shards) == ((1000, 64), (25, 64), (250, 64))
    assert 0 < tensor.stored_nbytes < tensor.nbytes  # from the manifest: nothing read
    assert len(store.log.reads) == 1

    store.log.reset()
    part = ckpt.shard("w", 0, rank=0, world_size=8)  # rows 0..124: chunks 0 to 4 of shard 0
    assert part.shape == (125, 64)
    assert part.numpy().tobytes() == weight[:125].tobytes()
    # the shard index, then chunks 0 to 4, stored one after the other, in one ranged read;
    # then the check that the checkpoint was not replaced meanwhile: the few bytes of the root
    # document that hold the manifest's generation
    assert [key for key, _ in store.log.reads] == ["w/c.0.0"] * 2 + ["zarr.json"]
    check = store.log.reads[-1][1]
    assert isinstance(check, RangeByteRequest) and check.end - check.start < 64
    index_bytes = 10 * 16 + 4
    assert store.log.bytes_read < tensor.stored_nbytes / 8 * 1.05 + index_bytes + 64

    store.log.reset()
    assert part[10:20, 5].tobytes() == weight[10:20, 5].tobytes()
    assert [key for key, _ in store.log.reads] == ["w/c.0.0"] * 2 + ["zarr.json"]  # chunk 0


def test_a_root_document_without_a_generation_is_compared_whole(tmp_path: Path) -> None:
    """A root document without the manifest's generation (rewritten by another tool) has no
    bytes to read back: the check after a lazy read reads the whole document, and another
    model's document in its place is still a replacement."""
    store = CountingStore(memory_store_of(tmp_path, "a", 7))
    other = memory_store_of(tmp_path, "b", 8)  # other weights of the same shape

    def without_generation(source: Any) -> Any:
        raw = sync(source.get("zarr.json", default_buffer_prototype())).to_bytes()
        stripped = re.sub(rb'"generation":"[0-9a-f]+",', b"", raw)
        assert stripped != raw
        return default_buffer_prototype().buffer.from_bytes(seal_root(stripped))

    sync(store.set("zarr.json", without_generation(store)))
    ckpt = wc.open_checkpoint(store)
    store.log.reset()
    assert ckpt["w"][:4].tobytes() == memory_weight(7)[:4].tobytes()
    assert store.log.reads[-1] == ("zarr.json", None)  # the whole document
    sync(store.set("zarr.json", without_generation(other)))
    with pytest.raises(ReplacedError, match="replaced while it was read"):
        ckpt["w"][:4]


def memory_weight(seed: int) -> np.ndarray:
    return weight_like(np.random.default_rng(seed), (256, 64), np.dtype(np.int8))


def memory_store_of(tmp_path: Path, name: str, seed: int) -> Any:
    """``memory_weight(seed)`` converted as ``w`` into a store with no local files
    (``memory_store``)."""
    weight = memory_weight(seed)
    write_raw(tmp_path / f"{name}.safetensors", [("w", "I8", [256, 64], weight.tobytes())])
    wc.convert(tmp_path / f"{name}.safetensors", tmp_path / name, progress=False, **SMALL)
    return memory_store(tmp_path / name)


def test_every_rank_of_an_uneven_split_reads_only_its_chunks(tmp_path: Path) -> None:
    """1001 rows in 8 parts: 126 rows each, 119 for the last. Chunks of 126 rows (or a divisor)
    make every part whole chunks, so the 8 ranks together read the tensor's data once."""
    weight = weight_like(np.random.default_rng(6), (1001, 32), np.dtype(np.int8))
    write_raw(tmp_path / "m.safetensors", [("w", "I8", [1001, 32], weight.tobytes())])
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False, **SMALL)
    store = CountingStore(LocalStore(tmp_path / "ckpt", read_only=True))
    ckpt = wc.open_checkpoint(store)
    tensor = ckpt["w"]
    assert tensor.chunks[0] == 126 and tensor.shards is not None
    per_shard = tensor.shards[0] // tensor.chunks[0]
    nshards = -(-1001 // tensor.shards[0])
    data_read = 0
    for rank in range(8):
        store.log.reset()
        part = ckpt.shard("w", 0, rank, 8).numpy()
        assert part.tobytes() == weight[126 * rank : 126 * (rank + 1)].tobytes()
        index_reads = [r for _, r in store.log.reads if isinstance(r, SuffixByteRequest)]
        (check,) = [r for key, r in store.log.reads if key == "zarr.json"]  # not replaced
        assert isinstance(check, RangeByteRequest)
        data_read += (
            store.log.bytes_read
            - len(index_reads) * (16 * per_shard + 4)
            - (check.end - check.start)
        )
    # every chunk once: the shards' bytes without their indexes
    shard_bytes = sum((tmp_path / "ckpt" / "w" / f"c.{i}.0").stat().st_size for i in range(nshards))
    assert data_read == shard_bytes - nshards * (16 * per_shard + 4)


@pytest.mark.parametrize(
    ("shape", "itemsize", "rows"),
    [
        ((384, 384), 1, 48),  # 147 KB: eight chunks of its eight parts
        ((1536, 384), 2, 192),
        ((30522, 384), 2, 1272),  # rank 0 gets 3816 rows: three chunks of them
        ((30522, 384), 1, 1908),
        ((11008, 4096), 2, 86),  # 1376 rows per rank, 16 chunks of 704 KB
        ((2, 384), 2, 2),  # under 8 rows: whole
        ((64, 16), 4, 64),  # its parts would be tiny: whole
        ((8241, 256), 4, 1024),  # 1031 rows (prime, over 1 MiB) per rank: plain 1 MiB bands
    ],
)
def test_chunks_fit_the_first_ranks_rows(shape: tuple[int, int], itemsize: int, rows: int) -> None:

    assert chunk_shape(shape, itemsize, CHUNK_BYTES) == (rows, shape[1])


def test_shard_splits_like_torch_chunk(model: tuple[Path, bytes], tmp_path: Path) -> None:
    """Parts of ceil(size / world_size), the last ones shorter or empty, as torch.chunk and
    DTensor's Shard placement split a tensor."""
    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    whole = ckpt["layer.0.i8"].numpy()  # 300x200
    for dim, world, sizes in [
        (0, 7, [43] * 6 + [42]),
        (1, 7, [29] * 6 + [26]),
        (-1, 7, [29] * 6 + [26]),
        (0, 8, [38] * 7 + [34]),
        (0, 32, [10] * 30 + [0, 0]),  # 30 parts of 10 rows hold all 300
    ]:
        parts = [ckpt.shard("layer.0.i8", dim, r, world).numpy() for r in range(world)]
        assert [p.shape[dim] for p in parts] == sizes
        assert np.concatenate(parts, axis=dim).tobytes() == whole.tobytes()
    with pytest.raises(ValueError, match="rank 7"):
        ckpt.shard("layer.0.i8", 0, 7, 7)
    with pytest.raises(ValueError, match="no dimension 2"):
        ckpt.shard("layer.0.i8", 2, 0, 2)


def test_load_selected_names_and_dtype_map(model: tuple[Path, bytes], tmp_path: Path) -> None:
    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    out = wc.load_checkpoint(
        tmp_path / "ckpt", names=["layer.6.bf16", "layer.0.i8"], dtype_map={"bfloat16": "float32"}
    )
    assert list(out) == ["layer.6.bf16", "layer.0.i8"]
    assert out["layer.6.bf16"].dtype == np.float32
    assert (out["layer.6.bf16"] == ckpt["layer.6.bf16"].numpy().astype(np.float32)).all()
    with pytest.raises(KeyError, match="nope"):
        wc.load_checkpoint(tmp_path / "ckpt", names=["nope"])


def test_torch_state_dict(model: tuple[Path, bytes], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    state = wc.load_checkpoint(tmp_path / "ckpt", framework="torch")
    assert state["layer.6.bf16"].dtype == torch.bfloat16
    assert state["layer.8.f8_e4m3"].dtype == torch.float8_e4m3fn
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    expected = ckpt["layer.6.bf16"].numpy().view(np.int16)
    assert (state["layer.6.bf16"].view(torch.int16).numpy() == expected).all()


def test_quantize_int8_is_labelled_lossy(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    weight = (rng.standard_normal((64, 48)) * 0.05).astype(np.float32)
    weight[3] = 0  # a row of zeros stays zero
    bias = rng.standard_normal(48).astype(np.float32)
    src = tmp_path / "m.safetensors"
    write_raw(src, [("w", "F32", [64, 48], weight.tobytes()), ("b", "F32", [48], bias.tobytes())])
    manifest = wc.convert(src, tmp_path / "q", quantize="int8", progress=False, chunk_bytes=512)
    assert manifest["tensors"]["w"]["quantized"] and not manifest["tensors"]["b"]["quantized"]
    report = wc.verify(src, tmp_path / "q")  # int8 values and scales as a fresh quantization
    assert report.ok and not report.exact  # what convert makes, and not bit-exact
    ckpt = wc.open_checkpoint(tmp_path / "q")
    [(name, max_error, rms_error)] = report.lossy
    dequantized = ckpt["w"].numpy().astype(np.float64) * ckpt["w"].scales()[:, None]
    assert name == "w"
    assert max_error == pytest.approx(np.abs(weight - dequantized).max())
    assert 0 < rms_error < 0.02  # int8 of N(0, 0.05) rows: about 0.6% of the RMS
    assert ckpt["w"].dtype == np.int8 and ckpt["w"].safetensors_dtype == "F32"
    restored = wc.load_checkpoint(tmp_path / "q", dequantize=True)
    scales = ckpt["w"].scales()
    assert np.abs(restored["w"] - weight).max() <= scales.max() / 2 * 1.0001
    assert (restored["w"][3] == 0).all()
    assert restored["b"].tobytes() == bias.tobytes()  # 1-D tensors stay lossless
    with pytest.raises(ValueError, match="quantization"):
        wc.export_safetensors(tmp_path / "q", tmp_path / "x.safetensors")


@pytest.mark.parametrize(
    ("header", "body", "message"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 9, "trailing"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12"),
        (
            {
                "a": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]},
                "b": {"dtype": "I8", "shape": [4], "data_offsets": [2, 6]},
            },
            b"\0" * 6,
            "overlaps",
        ),
        ({"a": {"dtype": "I8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6, "gap"),
        ({"a": {"dtype": "STR", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4, "unknown dtype"),
        ({"a": {"dtype": "I8", "shape": [-1], "data_offsets": [0, 0]}}, b"", "non-negative"),
        ({"__metadata__": {"k": 1}}, b"", "strings to strings"),
        ([1, 2], b"", "not a JSON object"),
    ],
)
def test_bad_sources_are_refused_before_writing(
    tmp_path: Path, header: Any, body: bytes, message: str
) -> None:
    src = tmp_path / "bad.safetensors"
    write_header(src, header, body)
    with pytest.raises(ValueError, match=message):
        wc.convert(src, tmp_path / "ckpt", progress=False)
    assert not (tmp_path / "ckpt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.safetensors"]


def test_header_length_and_encoding_are_checked(tmp_path: Path) -> None:
    src = tmp_path / "bad.safetensors"
    src.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="header length"):
        wc.convert(src, tmp_path / "ckpt", progress=False)
    src.write_bytes((2).to_bytes(8, "little") + b"\xff\xfe")
    with pytest.raises(ValueError, match="not UTF-8"):
        wc.convert(src, tmp_path / "ckpt", progress=False)
    src.write_bytes(b"\x01")
    with pytest.raises(ValueError, match="too short"):
        wc.convert(src, tmp_path / "ckpt", progress=False)


@pytest.mark.parametrize(
    ("text", "duplicate"),
    [
        (
            b'{"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"I8","shape":[2],'
            b'"data_offsets":[0,2]}}',
            "a",
        ),
        (b'{"a":{"dtype":"I8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}', "dtype"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: bytes, duplicate: str) -> None:
    src = tmp_path / "bad.safetensors"
    src.write_bytes(len(text).to_bytes(8, "little") + text + b"\0\0")
    with pytest.raises(ValueError, match=f"duplicate key '{duplicate}'"):
        wc.convert(src, tmp_path / "ckpt", progress=False)
    assert not (tmp_path / "ckpt").exists()


def test_existing_destination_needs_overwrite(model: tuple[Path, bytes], tmp_path: Path) -> None:
    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False)
    with pytest.raises(FileExistsError, match="overwrite"):
        wc.convert(path, tmp_path / "ckpt", progress=False)
    wc.convert(path, tmp_path / "ckpt", progress=False, overwrite=True, **SMALL)
    assert wc.verify(path, tmp_path / "ckpt").ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "model.safetensors"]


def test_store_without_manifest_does_not_open(tmp_path: Path) -> None:
    root = zarr.create_group(LocalStore(tmp_path / "half"), zarr_format=3)
    root.create_array("a", shape=(4,), dtype="int8")
    with pytest.raises(IncompleteCheckpointError, match="not a complete wcodec checkpoint"):
        wc.open_checkpoint(tmp_path / "half")
    with pytest.raises(FileNotFoundError):
        wc.open_checkpoint(tmp_path / "nothing")


def test_killed_convert_leaves_no_checkpoint(tmp_path: Path) -> None:
    """A convert killed mid-way (SIGKILL: no cleanup runs) leaves nothing at the destination."""
    rng = np.random.default_rng(3)
    tensors = [
        (f"w{i}", "BF16", [1024, 1024], rng.integers(0, 2**16, 2**20, np.uint16).tobytes())
        for i in range(48)
    ]
    src = tmp_path / "big.safetensors"
    write_raw(src, tensors)
    script = f"import wcodec_zarr as wc; wc.convert({str(src)!r}, {str(tmp_path / 'ckpt')!r})"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob(".ckpt.partial-*/w*/c.*"))) < 4:  # some shards written
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert not (tmp_path / "ckpt").exists()
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".ckpt.partial")]
    assert len(partial) == 1
    with pytest.raises(IncompleteCheckpointError):
        wc.open_checkpoint(partial[0])
    with pytest.raises(FileNotFoundError, match=f"builds at {re.escape(str(partial[0]))}"):
        wc.open_checkpoint(tmp_path / "ckpt")  # points at what the killed convert left
    # the next convert into the same place removes it: its process is gone
    small = tmp_path / "small.safetensors"
    write_raw(small, [("w", "I8", [4], bytes(4))])
    wc.convert(small, tmp_path / "ckpt", progress=False)
    assert not partial[0].exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt")] == []


def test_a_running_convert_keeps_its_build_folder(tmp_path: Path) -> None:
    """Only builds of dead processes are removed: one of a live process (here this one's) is
    another convert still at work."""
    live = tmp_path / f".ckpt.partial-{socket.gethostname()}-{os.getpid()}-0123abcd"
    live.mkdir()
    write_raw(tmp_path / "m.safetensors", [("w", "I8", [4], bytes(4))])
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False)
    assert live.is_dir()


def test_convert_memory_stays_bounded(tmp_path: Path) -> None:
    """Converting a 2 GB model (16 tensors of 128 MB) raises the process's peak RSS by at most
    4 times its largest tensor (512 MiB): a few shards in flight, never the model. Measured by
    the converting process itself, from its peak after imports (which on a machine with CUDA
    and PyTorch libraries is already most of a gigabyte)."""
    src = tmp_path / "big.safetensors"
    rng = np.random.default_rng(4)
    size = 128 << 20
    header: dict[str, Any] = {
        f"w{i}": {
            "dtype": "BF16",
            "shape": [8192, 8192],
            "data_offsets": [i * size, (i + 1) * size],
        }
        for i in range(16)
    }
    text = json.dumps(header).encode()
    with src.open("wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        block = rng.integers(0, 2**16, 8 << 20, np.uint16).tobytes()  # 16 MB, repeated
        for _ in range(16 * size // len(block)):
            f.write(block)
    script = textwrap.dedent(
        f"""
        import resource, wcodec_zarr as wc
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        wc.convert({str(src)!r}, {str(tmp_path / "ckpt")!r}, progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(before * 1024, after * 1024)
        """
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=tmp_path
        )
        assert os.path.getsize(src) > 2 * 10**9
    finally:
        # 4 GB of model and checkpoint: gone before the next test writes its own
        src.unlink()
        shutil.rmtree(tmp_path / "ckpt", ignore_errors=True)
    before, after = map(int, result.stdout.split())
    growth = after - before
    assert growth < 4 * size, f"peak RSS grew {growth / 2**20:.0f} MiB (to {after / 2**20:.0f})"


@pytest.mark.parametrize("align", [1, 16, 256])
def test_staging_places_every_chunk_in_row_order(
    model: tuple[Path, bytes], tmp_path: Path, align: int
) -> None:
    """The whole-tensor paths' host side: the objects ``stored_objects`` lists, placed by the
    native staging (``place_objects``; the GPU path stages the same way) with every chunk at an
    aligned offset of one buffer, decode to the tensor's rows; tensors the paths cannot take
    are left out."""

    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    objects = stored_objects([ckpt[name] for name in ckpt])
    buffer, offsets, lens = place_objects(
        objects.sources,
        objects.sizes,
        objects.per_shard,
        objects.nchunks,
        align,
        lambda n: np.empty(n, np.uint8),
    )
    names = [t.tensor.name for t in objects.tensors]
    # zstd tensors, the scalar and the empty tensor are left out
    assert not {"layer.11.i64", "layer.10.bool", "layer.3.u16", "layer.5.f16"} & set(names)
    assert {"layer.0.i8", "layer.4.i32", "layer.6.bf16", "special.f32", "packed.f4"} <= set(names)
    assert (offsets % align == 0).all()
    for t in objects.tensors:
        chunks = [
            buffer[int(offsets[k]) : int(offsets[k] + lens[k])]
            for k in range(t.first, t.first + t.count)
        ]
        rows = np.concatenate(list(wc.decode_batch(chunks)))[: t.tensor.shape[0]]
        assert rows.tobytes() == t.tensor.numpy().tobytes(), t.tensor.name


def test_whole_loads_reject_a_corrupt_shard_index(tmp_path: Path) -> None:
    weight = weight_like(np.random.default_rng(6), (1000, 64), np.dtype(np.int8))
    write_raw(tmp_path / "m.safetensors", [("w", "I8", [1000, 64], weight.tobytes())])
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False, **SMALL)
    shard = tmp_path / "ckpt" / "w" / "c.0.0"
    raw = bytearray(shard.read_bytes())
    raw[-10] ^= 0xFF  # inside the index
    shard.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"w/c\.0\.0: shard index checksum mismatch"):
        wc.load_checkpoint(tmp_path / "ckpt")
    shard.write_bytes(bytes(raw[:10]))  # shorter than its index
    with pytest.raises(ValueError, match=r"w/c\.0\.0: shard of 10 bytes is shorter than its index"):
        wc.load_checkpoint(tmp_path / "ckpt")
    shard.unlink()
    with pytest.raises(ValueError, match=r"w/c\.0\.0: object missing from the store"):
        wc.load_checkpoint(tmp_path / "ckpt")


def test_any_fsspec_url(model: tuple[Path, bytes]) -> None:
    import uuid

    import fsspec

    path, raw = model
    base = f"memory://{uuid.uuid4().hex}"
    wc.convert(path, f"{base}/ckpt", progress=False, **SMALL)
    assert wc.verify(path, f"{base}/ckpt").ok
    wc.export_safetensors(f"{base}/ckpt", f"{base}/out/model.safetensors")
    assert fsspec.filesystem("memory").cat_file(f"{base}/out/model.safetensors") == raw


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["tensors"]["w"].update(chunks=[0, 64]), "bad shape"),
        (lambda m: m["tensors"]["w"].update(shards=[100, 64]), "bad shards"),
        (lambda m: m["tensors"].pop("w"), "'w'"),
        (lambda m: m["files"][0].update(header="[]"), "not a JSON object"),
        (lambda m: m["tensors"]["w"].update(dtype="nonsense"), "nonsense"),
    ],
)
def test_malformed_manifest_is_refused(tmp_path: Path, change: Any, message: str) -> None:
    weight = weight_like(np.random.default_rng(7), (256, 64), np.dtype(np.int8))
    write_raw(tmp_path / "m.safetensors", [("w", "I8", [256, 64], weight.tobytes())])
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False, **SMALL)
    root = tmp_path / "ckpt" / "zarr.json"
    document = json.loads(root.read_text())
    change(document["attributes"]["wcodec_checkpoint"])
    root.write_text(json.dumps(document))
    with pytest.raises(IncompleteCheckpointError, match=message):
        wc.open_checkpoint(tmp_path / "ckpt")


def test_loads_read_only_the_manifest_of_the_root_document(
    model: tuple[Path, bytes], tmp_path: Path
) -> None:
    """Opening, loading and slicing wcodec tensors of rows parse the manifest, not the
    consolidated metadata (most of the root document); zarr access parses it, and names it when
    it is broken."""
    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    names = [
        n
        for n, t in ckpt.items()
        if t.info["codec"] == "wcodec" and len(t.shape) == 2 and 0 not in t.shape
    ]
    expected = wc.load_checkpoint(tmp_path / "ckpt", names=names)
    root = tmp_path / "ckpt" / "zarr.json"
    text = root.read_text()
    assert text.endswith("}}}}")  # the consolidated metadata comes last
    broken = text[: text.index('"consolidated_metadata":') + 24] + "{broken}"
    root.write_bytes(seal_root(broken.encode()))  # checksum and all: a writer's bug
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    loaded = wc.load_checkpoint(tmp_path / "ckpt", names=names)
    assert len(names) == 3 and all(loaded[k].tobytes() == v.tobytes() for k, v in expected.items())
    name = names[0]
    assert ckpt[name][1:3].tobytes() == expected[name][1:3].tobytes()
    with pytest.raises(ValueError, match=r"consolidated metadata in zarr\.json is not valid JSON"):
        _ = ckpt.group


@pytest.mark.parametrize("rewrite", ["indented", "no key encoding in the manifest"])
def test_root_documents_of_any_layout_open(
    model: tuple[Path, bytes], tmp_path: Path, rewrite: str
) -> None:
    """A root document rewritten by another tool (any key order or spacing), or from before
    the manifest named the chunk key encoding, opens and loads the same."""
    path, _ = model
    wc.convert(path, tmp_path / "ckpt", progress=False, **SMALL)
    expected = wc.load_checkpoint(tmp_path / "ckpt")
    root = tmp_path / "ckpt" / "zarr.json"
    document = json.loads(root.read_text())
    if rewrite == "indented":
        document = {"node_type": "group", **document}
        root.write_text(json.dumps(document, indent=2))
    else:  # as written before the manifest had either
        del document["attributes"]["wcodec_checkpoint"]["chunk_key_encoding"]
        del document["attributes"]["wcodec_checkpoint"]["checksum"]
        root.write_text(json.dumps(document, separators=(",", ":")))
    loaded = wc.load_checkpoint(tmp_path / "ckpt")
    assert all(loaded[k].tobytes() == v.tobytes() for k, v in expected.items())
    assert isinstance(wc.open_checkpoint(tmp_path / "ckpt").group, zarr.Group)
