"""Misuse and hostile checkpoints: nothing of the user's is lost, nothing is read or written
outside the checkpoint (or the export's destination), nothing blocks forever, and every refusal
is a ``ValueError`` (or ``FileExistsError``) naming what is wrong."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import google_crc32c
import numpy as np
import pytest
from helpers import weight_like
from safetensors.numpy import load_file
from safetensors_helpers import write_raw

import wcodec_zarr as wc
from wcodec_zarr.checkpoint import IncompleteCheckpointError
from wcodec_zarr.checkpoint.batch import load_to_cpu
from wcodec_zarr.checkpoint.layout import seal_root

SMALL = {"chunk_bytes": 4096, "shard_bytes": 16384}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.safetensors"
    write_raw(
        path,
        [
            ("w", "I8", [1024, 64], weight_like(rng, (1024, 64), np.dtype(np.int8)).tobytes()),
            ("ids", "I64", [32], np.arange(32, dtype=np.int64).tobytes()),
        ],
    )
    return path


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["the file", "its folder", "inside its folder"])
def test_convert_never_writes_over_or_into_its_source(model: Path, where: str) -> None:
    folder = model.parent
    src, dst = {
        "the file": (model, model),
        "its folder": (model, folder),
        "inside its folder": (folder, folder / "ckpt"),
    }[where]
    before = model.read_bytes()
    files = listing(folder.parent)
    with pytest.raises(ValueError, match="overlaps the source"):
        wc.convert(src, dst, overwrite=True, progress=False)
    assert model.read_bytes() == before
    assert listing(folder.parent) == files  # nothing written, not even a build folder


def test_export_into_the_checkpoint_is_refused(model: Path, tmp_path: Path) -> None:
    wc.convert(model, tmp_path / "ckpt", progress=False)
    with pytest.raises(ValueError, match="overlaps the checkpoint"):
        wc.export_safetensors(tmp_path / "ckpt", tmp_path / "ckpt" / "out")


def test_a_failed_export_leaves_no_partial_file(model: Path, tmp_path: Path) -> None:
    wc.convert(model, tmp_path / "ckpt", progress=False, **SMALL)
    shard = tmp_path / "ckpt" / "w" / "c.1.0"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # a payload byte of an inner chunk: caught by its checksum
    shard.write_bytes(bytes(raw))
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match=r"w/c\.1\.0"):
        wc.export_safetensors(tmp_path / "ckpt", tmp_path / "out")
    assert listing(tmp_path / "out") == []


def rewrite_manifest(ckpt: Path, change: Any) -> None:
    root = ckpt / "zarr.json"
    document = json.loads(root.read_text())
    change(document["attributes"]["wcodec_checkpoint"])
    root.write_text(json.dumps(document))


def rename_tensor(manifest: dict[str, Any], old: str, new: str) -> None:
    manifest["tensors"][new] = manifest["tensors"].pop(old)
    header = json.loads(manifest["files"][0]["header"])
    header[new] = header.pop(old)
    manifest["files"][0]["header"] = json.dumps(header)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["files"][0].update(name="../escaped.safetensors"), "not a plain file name"),
        (
            lambda m: m.update(index={"name": "../../escaped.index.json", "text": "{}"}),
            "not a plain file name",
        ),
        (lambda m: rename_tensor(m, "w", "../victim/w"), "cannot be a Zarr array path"),
        (lambda m: rename_tensor(m, "w", "/etc/w"), "cannot be a Zarr array path"),
    ],
    ids=["file", "index", "tensor", "absolute tensor"],
)
def test_manifest_names_cannot_lead_outside(
    model: Path, tmp_path: Path, change: Any, message: str
) -> None:
    wc.convert(model, tmp_path / "ckpt", progress=False)
    rewrite_manifest(tmp_path / "ckpt", change)
    with pytest.raises(IncompleteCheckpointError, match=message):
        wc.open_checkpoint(tmp_path / "ckpt")
    with pytest.raises(IncompleteCheckpointError, match=message):
        wc.export_safetensors(tmp_path / "ckpt", tmp_path / "out")
    assert not (tmp_path / "escaped.safetensors").exists()


def in_child(script: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``script`` in a fresh interpreter, killed after ``timeout`` seconds: a read that blocks
    fails the test instead of hanging the suite. (``cwd`` is not the source tree, which would
    shadow the installed package.)"""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize(
    ("fifo", "read"),
    [
        ("w/c.0.0", "wc.load_checkpoint(url)"),  # native staging (whole loads)
        ("w/c.0.0", "wc.open_checkpoint(url)['w'][10:20]"),  # row reads
        ("ids/c.0", "wc.open_checkpoint(url)['ids'][:]"),  # zarr (a zstd tensor)
        ("zarr.json", "wc.open_checkpoint(url)"),
    ],
)
def test_objects_that_are_not_regular_files_are_refused(
    model: Path, tmp_path: Path, fifo: str, read: str
) -> None:
    """A FIFO among the objects (or a link to one) would block a reader forever in open(2)."""
    ckpt = tmp_path / "ckpt"
    wc.convert(model, ckpt, progress=False, **SMALL)
    target = ckpt / fifo
    assert target.is_file(), fifo
    target.unlink()
    os.mkfifo(tmp_path / "fifo")
    target.symlink_to(tmp_path / "fifo")
    result = in_child(
        "import sys, wcodec_zarr as wc\n"
        f"url = {str(ckpt)!r}\n"
        "try:\n"
        f"    {read}\n"
        "except ValueError as exc:\n"
        "    print(exc); sys.exit(3)\n",
        tmp_path,
    )
    assert result.returncode == 3, result.stderr
    assert "not a regular file" in result.stdout


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["a", "a/b"], "'a' and 'a/b' collide"),
        (["x", "x/c.0"], "'x' and 'x/c.0' collide"),
        (["zarr.json"], "cannot be a Zarr array path"),
        (["x/zarr.json"], "cannot be a Zarr array path"),
    ],
)
def test_tensor_names_that_collide_in_the_store_are_refused(
    tmp_path: Path, names: list[str], message: str
) -> None:
    rng = np.random.default_rng(4)
    tensors = [
        (n, "I8", [16, 8], weight_like(rng, (16, 8), np.dtype(np.int8)).tobytes()) for n in names
    ]
    write_raw(tmp_path / "m.safetensors", tensors)
    with pytest.raises(ValueError, match=message):
        wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False)
    assert not (tmp_path / "ckpt").exists()


def test_deeply_nested_json_is_a_value_error(model: Path, tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    text = '{"x": ' + deep + "}"
    raw = text.encode()
    (tmp_path / "deep.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(ValueError, match="nested too deeply"):
        wc.convert(tmp_path / "deep.safetensors", tmp_path / "out", progress=False)

    wc.convert(model, tmp_path / "ckpt", progress=False)
    (tmp_path / "ckpt" / "zarr.json").write_text('{"attributes": ' + deep + "}")
    with pytest.raises(ValueError, match="nested too deeply"):
        wc.open_checkpoint(tmp_path / "ckpt")


def test_trailing_bytes_are_named(model: Path, tmp_path: Path) -> None:
    padded = tmp_path / "padded.safetensors"
    padded.write_bytes(model.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="the file has trailing bytes"):
        wc.convert(padded, tmp_path / "out", progress=False)


@pytest.mark.parametrize("key", ["w/c.1.0", "ids/c.0"])
def test_a_missing_object_is_an_error_on_every_read_path(
    model: Path, tmp_path: Path, key: str
) -> None:
    """Zarr reads a missing chunk as the fill value; a checkpoint's objects were all written,
    so a missing one (an interrupted copy, a lifecycle rule) is an error naming it, never
    zeros."""
    ckpt = tmp_path / "ckpt"
    wc.convert(model, ckpt, progress=False, **SMALL)
    (ckpt / key).unlink()
    name = key.split("/")[0]
    escaped = key.replace(".", r"\.")
    with pytest.raises(ValueError, match=escaped):
        wc.load_checkpoint(ckpt)
    tensor = wc.open_checkpoint(ckpt)[name]
    with pytest.raises(ValueError, match=escaped):
        tensor.numpy()
    with pytest.raises(ValueError, match=escaped):
        tensor[min(300, len(tensor) - 1)]  # one row (of shard 1 of w), through zarr
    if tensor.shape[1:]:
        with pytest.raises(ValueError, match=escaped):
            tensor[:, 3]  # a column: through zarr, every shard
    fs = fsspec.filesystem("wcodec", target=str(ckpt), skip_instance_cache=True)
    with pytest.raises(ValueError, match=escaped):
        fs.cat_file("m.safetensors")


def test_every_bit_flip_in_a_zstd_chunk_is_caught(model: Path, tmp_path: Path) -> None:
    """bool and 64-bit tensors are stored with zstd, whose frames carry no checksum here: the
    crc32c codec after it catches every flip, where zstd alone decoded most to wrong values."""
    ckpt = tmp_path / "ckpt"
    wc.convert(model, ckpt, progress=False)
    obj = ckpt / "ids" / "c.0"
    good = obj.read_bytes()
    silent = []
    for bit in range(len(good) * 8):
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        obj.write_bytes(bytes(flipped))
        try:
            got = wc.open_checkpoint(ckpt)["ids"].numpy()
        except ValueError:
            continue
        if got.tobytes() != np.arange(32, dtype=np.int64).tobytes():
            silent.append(bit)
    assert silent == []


def test_an_empty_tensor_with_a_huge_dimension_converts_at_once(tmp_path: Path) -> None:
    """[2**60, 0] holds nothing: no task per cell of its chunk grid (2**40 of them)."""
    write_raw(tmp_path / "m.safetensors", [("e", "I8", [2**60, 0], b""), ("x", "I8", [4], b"abcd")])
    result = in_child(
        "import wcodec_zarr as wc\n"
        "wc.convert('m.safetensors', 'ckpt', progress=False)\n"
        "state = wc.load_checkpoint('ckpt')\n"
        "print(state['e'].shape == (2**60, 0), state['x'].tobytes())\n",
        tmp_path,
        timeout=60,
    )
    assert result.stdout.split() == ["True", "b'abcd'"], result.stderr


@pytest.mark.parametrize(
    ("offset", "nbytes"),
    [(None, 2**63), (None, 2**64 - 2), (2**62, None), (None, 2**62), (2**63, 2**63)],
)
def test_hostile_shard_index_entries_are_value_errors(
    model: Path, tmp_path: Path, offset: int | None, nbytes: int | None
) -> None:
    """An entry (CRC recomputed, as a hostile writer would) that claims exabytes: every read
    path refuses it with a ValueError, none overflows or asks for the memory."""
    ckpt = tmp_path / "ckpt"
    wc.convert(model, ckpt, progress=False, **SMALL)
    obj = ckpt / "w" / "c.1.0"  # rows 256-511, four inner chunks of 64 rows
    raw = bytearray(obj.read_bytes())
    index = raw[-(4 * 16 + 4) : -4]
    first = struct.unpack_from("<QQ", index, 0)
    struct.pack_into("<QQ", index, 0, offset or first[0], nbytes or first[1])
    crc = google_crc32c.value(bytes(index)).to_bytes(4, "little")
    obj.write_bytes(bytes(raw[: -(4 * 16 + 4)] + index + crc))
    reads = {
        "whole load": lambda: wc.load_checkpoint(ckpt),
        "rows": lambda: wc.open_checkpoint(ckpt)["w"][260:270],
        "column (zarr)": lambda: wc.open_checkpoint(ckpt)["w"][:, 3],
        "wcodec filesystem": lambda: fsspec.filesystem(
            "wcodec", target=str(ckpt), skip_instance_cache=True
        ).cat_file("m.safetensors"),
    }
    for read in reads.values():
        with pytest.raises(ValueError, match=r"w/c\.1\.0"):
            read()


def rewrite_index(obj: Path, per_shard: int, change: Any) -> None:
    """Rewrites a shard's index entries as a buggy or hostile writer would: CRC recomputed."""
    raw = obj.read_bytes()
    size = per_shard * 16 + 4
    entries = [
        list(struct.unpack_from("<QQ", raw, len(raw) - size + 16 * i)) for i in range(per_shard)
    ]
    change(entries)
    index = b"".join(struct.pack("<QQ", *e) for e in entries)
    obj.write_bytes(raw[:-size] + index + google_crc32c.value(index).to_bytes(4, "little"))


@pytest.mark.parametrize(
    "change",
    [
        lambda e: e.__setitem__(slice(1, 3), [e[2], e[1]]),  # two chunks swapped
        lambda e: e.__setitem__(2, list(e[1])),  # two entries, the same bytes
    ],
    ids=["swapped", "duplicated"],
)
def test_shard_entries_out_of_row_order_are_refused(
    model: Path, tmp_path: Path, change: Any
) -> None:
    """Each chunk's checksum says its bytes are intact, not that they are the rows asked for:
    whole loads, row reads and reads through zarr take a shard's chunks only in writing
    order."""
    ckpt = tmp_path / "ckpt"
    wc.convert(model, ckpt, progress=False, **SMALL)
    rewrite_index(ckpt / "w" / "c.1.0", 4, change)
    with pytest.raises(ValueError, match=r"w/c\.1\.0.*out of order"):
        wc.load_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"w/c\.1\.0.*out of order"):
        wc.open_checkpoint(ckpt)["w"][256:512]  # the whole shard
    with pytest.raises(ValueError, match=r"w/c\.1\.0.*out of order"):
        wc.open_checkpoint(ckpt)["w"][330:400]  # two of its chunks
    with pytest.raises(ValueError, match=r"w/c\.1\.0.*out of order"):
        wc.open_checkpoint(ckpt)["w"][:, 3]  # a column: read through zarr
    with pytest.raises(ValueError, match=r"w/c\.1\.0.*out of order"):
        wc.open_checkpoint(ckpt)["w"][::2]  # rows with a step: read through zarr
    assert wc.open_checkpoint(ckpt)["w"][:256, 3].shape == (256,)  # the other shards read


def test_damaged_consolidated_metadata_is_a_value_error(model: Path, tmp_path: Path) -> None:
    """A flipped bit that renames a codec's key: zarr's parser raises TypeError; the reader
    names zarr.json in a ValueError."""
    ckpt = tmp_path / "ckpt"
    wc.convert(model, ckpt, progress=False, **SMALL)
    root = ckpt / "zarr.json"
    text = root.read_text()
    assert "index_codecs" in text
    damaged = text.replace("index_codecs", "index_cmdecs", 1).encode()
    root.write_bytes(damaged)  # a flipped bit: the document's checksum catches it
    with pytest.raises(ValueError, match=r"zarr\.json: checksum mismatch"):
        wc.open_checkpoint(ckpt)
    root.write_bytes(seal_root(damaged))  # a writer's bug, checksum and all
    with pytest.raises(ValueError, match=r"consolidated metadata in zarr\.json is malformed"):
        wc.open_checkpoint(ckpt)["ids"].numpy()


def test_the_root_document_is_checksummed(model: Path, tmp_path: Path) -> None:
    """The manifest (original headers exported verbatim, shapes, chunk layout) and the
    consolidated metadata: one flipped bit anywhere in the root document is refused."""
    ckpt = tmp_path / "ckpt"
    manifest = wc.convert(model, ckpt, progress=False, **SMALL)
    root = ckpt / "zarr.json"
    good = root.read_bytes()
    assert good.startswith(b'{"attributes":{"wcodec_checkpoint":{"checksum":"crc32c:')
    assert manifest["checksum"] == json.loads(good)["attributes"]["wcodec_checkpoint"]["checksum"]
    header = good.index(b"data_offsets")  # inside an original header, exported as it is
    for position in (header + 20, len(good) // 2, len(good) - 10):
        damaged = bytearray(good)
        damaged[position] ^= 0x01
        root.write_bytes(bytes(damaged))
        with pytest.raises(ValueError, match="checksum mismatch"):
            wc.open_checkpoint(ckpt)
    root.write_bytes(good)
    assert wc.verify(model, ckpt).exact


def two_models(folder: Path) -> tuple[Path, Path]:
    """Two models of the same names, dtypes and shapes and different values."""
    paths = []
    for seed in (10, 11):
        rng = np.random.default_rng(seed)
        path = folder / f"m{seed}.safetensors"
        write_raw(
            path,
            [
                ("w", "I8", [1024, 64], weight_like(rng, (1024, 64), np.dtype(np.int8)).tobytes()),
                ("ids", "I64", [32], rng.integers(0, 1000, 32, dtype=np.int64).tobytes()),
            ],
        )
        paths.append(path)
    return paths[0], paths[1]


def test_a_checkpoint_replaced_while_read_is_an_error_not_a_mix(tmp_path: Path) -> None:
    """convert(overwrite=True) renames a new checkpoint into place: reads of the one opened
    before fail instead of returning the new one's objects under the old manifest."""
    old, new = two_models(tmp_path)
    ckpt = tmp_path / "ckpt"
    wc.convert(old, ckpt, progress=False, **SMALL)
    opened = wc.open_checkpoint(ckpt)
    wc.convert(new, ckpt, overwrite=True, progress=False, **SMALL)
    for read in (
        lambda: opened["w"][100:600],  # row reads
        lambda: opened["ids"].numpy(),  # zarr
        lambda: load_to_cpu([opened[name] for name in opened]),  # native whole loads
    ):
        with pytest.raises(ValueError, match="replaced while it was read"):
            read()
    expected = {k: np.asarray(v) for k, v in load_file(str(new)).items()}
    fresh = wc.load_checkpoint(ckpt)
    assert all(fresh[k].tobytes() == expected[k].tobytes() for k in expected)


def test_a_checkpoint_replaced_by_one_of_the_same_shape_is_still_noticed(tmp_path: Path) -> None:
    """Two chunks of a weight swapped inside their shard: the same names, shapes, header, sizes
    and entropy, so the same root document but for the generation each convert writes; a
    reader that opened the first still finds it replaced."""
    old, _ = two_models(tmp_path)
    tensors = load_file(str(old))
    w = np.concatenate([tensors["w"][64:128], tensors["w"][:64], tensors["w"][128:]])
    (tmp_path / "swapped").mkdir()
    swapped = tmp_path / "swapped" / old.name
    write_raw(
        swapped,
        [("w", "I8", [1024, 64], w.tobytes()), ("ids", "I64", [32], tensors["ids"].tobytes())],
    )
    ckpt = tmp_path / "ckpt"
    first = wc.convert(old, ckpt, progress=False, **SMALL)
    opened = wc.open_checkpoint(ckpt)
    second = wc.convert(swapped, ckpt, overwrite=True, progress=False, **SMALL)
    differ = {k for k in first if first[k] != second[k]}
    assert differ == {"generation", "checksum"}, differ
    with pytest.raises(ValueError, match="replaced while it was read"):
        load_to_cpu([opened[name] for name in opened])


def test_readers_during_overwrites_see_old_new_or_an_error(tmp_path: Path) -> None:
    """Whole loads while another process converts two models into the same place over and
    over: every load is one model or the other, whole, or an error; never a mix."""
    old, new = two_models(tmp_path)
    models = [{k: v.tobytes() for k, v in load_file(str(p)).items()} for p in (old, new)]
    ckpt = tmp_path / "ckpt"
    wc.convert(old, ckpt, progress=False, **SMALL)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import wcodec_zarr as wc\n"
            "for i in range(30):\n"
            f"    wc.convert({[str(old), str(new)]!r}[i % 2], 'ckpt', overwrite=True,"
            " progress=False, chunk_bytes=4096, shard_bytes=16384)\n",
        ],
        cwd=tmp_path,
    )
    outcomes: Counter[str] = Counter()
    try:
        while writer.poll() is None:
            try:
                loaded = wc.load_checkpoint(ckpt)
            except (ValueError, OSError):
                outcomes["error"] += 1
                continue
            got = {k: v.tobytes() for k, v in loaded.items()}
            outcomes["whole" if got in models else "mixed"] += 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    assert outcomes["mixed"] == 0, outcomes
    assert outcomes["whole"] > 0, outcomes


def test_a_manifest_claiming_more_than_memory_is_a_value_error(model: Path, tmp_path: Path) -> None:
    """A writer's bug (checksum and all) that claims an exabyte tensor: whole loads refuse it
    before allocating, with a ValueError rather than MemoryError."""
    ckpt = tmp_path / "ckpt"
    wc.convert(model, ckpt, progress=False, **SMALL)
    root = ckpt / "zarr.json"
    document = json.loads(root.read_bytes())
    manifest = document["attributes"]["wcodec_checkpoint"]
    manifest["tensors"]["w"].update(shape=[2**50, 64], chunks=[2**50, 64], shards=None)
    root.write_bytes(seal_root(json.dumps(document, separators=(",", ":")).encode()))
    with pytest.raises(ValueError, match="more than this machine's memory"):
        wc.load_checkpoint(ckpt)


GOLDEN_V1 = Path(__file__).parent.parent / "fixtures" / "golden_checkpoint" / "v1"


def _zip_with_a_bomb(ckpt: Path, dst: Path, bombed: str, inflated: int) -> None:
    """``ckpt`` zipped (as ``zip -r`` would, deflated), the member ``bombed`` replaced by
    ``inflated`` bytes of zeros: a few hundred KiB that declare and inflate to far more."""
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(ckpt.rglob("*")):
            key = str(path.relative_to(ckpt))
            if path.is_file() and key != bombed:
                zf.write(path, key)
        with zf.open(zipfile.ZipInfo(bombed), "w") as member:
            zeros = bytes(1 << 20)
            for _ in range(inflated >> 20):
                member.write(zeros)


def _refused_before_inflating(read: Callable[[], object], match: str) -> None:
    """``read`` raises a ValueError matching ``match`` while Python's allocations stay under
    16 MiB (the bombed member inflates to 256 MiB)."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            read()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("read", ["slice", "zarr", "load"])
def test_a_deflate_bomb_in_a_zip_checkpoint_is_refused_before_it_inflates(
    tmp_path: Path, read: str
) -> None:
    weight = weight_like(np.random.default_rng(3), (512, 256), np.dtype(np.int8))
    write_raw(tmp_path / "m.safetensors", [("w", "I8", [512, 256], weight.tobytes())])
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", chunk_bytes=1 << 14, progress=False)
    _zip_with_a_bomb(tmp_path / "ckpt", tmp_path / "ckpt.zip", "w/c.0.0", 256 << 20)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt.zip")
    reads = {
        "slice": lambda: ckpt["w"][0:4],
        "zarr": lambda: ckpt["w"].array[0:4, 3],
        "load": lambda: wc.load_checkpoint(tmp_path / "ckpt.zip"),
    }
    _refused_before_inflating(reads[read], r"w/c\.0\.0: object of 268435456 bytes is larger")


@pytest.mark.parametrize("read", ["zarr", "load"])
def test_a_deflate_bomb_in_a_version_1_zip_checkpoint_is_refused(tmp_path: Path, read: str) -> None:
    """The same through chunk keys with "/" separators (manifest version 1: ``c/0/0``)."""
    with zipfile.ZipFile(GOLDEN_V1 / "checkpoint.zip") as golden:
        golden.extractall(tmp_path / "ckpt")
    _zip_with_a_bomb(tmp_path / "ckpt", tmp_path / "ckpt.zip", "layer.0.i8/c/0/0", 256 << 20)
    ckpt = wc.open_checkpoint(tmp_path / "ckpt.zip")
    reads = {
        "zarr": lambda: ckpt["layer.0.i8"].array[0:2],
        "load": lambda: wc.load_checkpoint(tmp_path / "ckpt.zip"),
    }
    _refused_before_inflating(
        reads[read], r"layer\.0\.i8/c/0/0: object of 268435456 bytes is larger"
    )
