"""Whole-model loads stream (``checkpoint.batch``): the stored objects go through in pieces of a
bounded window (fetched from S3: ``tests/storage/test_s3_streaming.py``), and
``Checkpoint.iter_tensors`` hands each tensor over in memory of its own as soon as it is
decoded. Tiny windows make many pieces of a small model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import STORE_LAYOUT, memory_store
from safetensors_helpers import write_mixed_model

import wcodec_zarr as wc
from wcodec_zarr.checkpoint import batch, objects

WINDOW = 3 * 40_000  # pieces of at most 40 kB: about one 64 KiB shard object each


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    return path, write_mixed_model(path)


@pytest.fixture(scope="module")
def local(
    model: tuple[Path, dict[str, np.ndarray]], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "model.zarr"
    wc.convert(model[0], out, progress=False, **STORE_LAYOUT)
    return out


def exact(got: dict[str, Any], expected: dict[str, np.ndarray]) -> bool:
    return list(got) == list(expected) and all(
        got[n].dtype == a.dtype and got[n].shape == a.shape and got[n].tobytes() == a.tobytes()
        for n, a in expected.items()
    )


def test_pieces_keep_to_the_limit_and_cover_every_object(local: Path) -> None:
    ckpt = wc.open_checkpoint(local)
    stored = objects.stored_objects([ckpt[n] for n in ckpt])
    parts = batch.pieces(stored, 40_000)
    assert len(parts) > 10
    assert [o for p in parts for o in p.objects] == list(range(len(stored.keys)))
    assert [c for p in parts for c in p.chunks] == list(range(sum(stored.nchunks)))
    for p in parts:
        nbytes = sum(stored.sizes[o] for o in p.objects)
        assert nbytes <= 40_000 or len(p.objects) == 1
    # every tensor finishes once, in storage order, in the piece holding its last chunk
    finished = [t for p in parts for t in p.finished]
    assert finished == list(range(len(stored.tensors)))
    assert len(batch.pieces(stored, None)) == 1


def test_local_loads_bit_exact_with_a_tiny_window(
    local: Path, model: tuple[Path, dict[str, np.ndarray]]
) -> None:
    expected = model[1]
    assert exact(wc.load_checkpoint(local, window=WINDOW), expected)
    assert exact(wc.load_checkpoint(local), expected)
    with pytest.raises(ValueError, match="window must be at least"):
        wc.load_checkpoint(local, window=2)


def test_iter_tensors_in_order_each_in_its_own_memory(
    local: Path, model: tuple[Path, dict[str, np.ndarray]]
) -> None:
    expected = model[1]
    ckpt = wc.open_checkpoint(local)
    got = dict(ckpt.iter_tensors(window=WINDOW))
    assert exact(got, expected)
    arrays = list(got.values())
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1 :])
    some = ["layers.2.q.weight", "position_ids", "layers.0.q.bias"]
    assert [n for n, _ in ckpt.iter_tensors(some)] == some
    with pytest.raises(KeyError, match="not in the checkpoint: nothing"):
        ckpt.iter_tensors(["nothing"])
    with pytest.raises(ValueError, match="framework='cupy'"):
        ckpt.iter_tensors(framework="cupy")


def test_iter_tensors_hands_over_before_the_end(local: Path) -> None:
    """The first tensor comes while later objects are still unread: deleting one afterwards
    fails the iteration only when its tensor is reached, naming the object."""
    copy = local.parent / "partial.zarr"
    shutil.copytree(local, copy)
    ckpt = wc.open_checkpoint(copy)
    names = list(ckpt)
    it = ckpt.iter_tensors(window=WINDOW)
    first = next(it)
    assert first[0] == names[0]
    shutil.rmtree(copy / "layers.3.mlp.weight")
    seen = [first[0]]
    with pytest.raises(ValueError, match=r"layers\.3\.mlp\.weight/c\.0\.0"):
        for name, _ in it:
            seen.append(name)
    assert seen == names[: names.index("layers.3.mlp.weight")]


def test_corrupt_chunk_named_in_a_streamed_load(local: Path) -> None:
    copy = local.parent / "corrupt.zarr"
    shutil.copytree(local, copy)
    victim = copy / "layers.2.q.weight" / "c.1.0"
    raw = bytearray(victim.read_bytes())
    raw[200] ^= 0x10
    victim.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"layers\.2\.q\.weight/c\.1\.0 \(inner chunk \d\)"):
        wc.load_checkpoint(copy, window=WINDOW)
    with pytest.raises(ValueError, match=r"layers\.2\.q\.weight/c\.1\.0"):
        dict(wc.open_checkpoint(copy).iter_tensors(window=WINDOW))


def test_fetched_objects_stream_bit_exact(
    local: Path, model: tuple[Path, dict[str, np.ndarray]]
) -> None:
    """Objects fetched from a store (not read by path) go through the same pieces: a tiny
    window, whole loads and ``iter_tensors``."""
    store = memory_store(local)
    assert exact(wc.load_checkpoint(store, window=WINDOW), model[1])
    assert exact(dict(wc.open_checkpoint(store).iter_tensors(window=WINDOW)), model[1])


def test_objects_larger_than_their_chunks_are_refused(local: Path) -> None:
    """A shard object grown to a terabyte (a sparse file: a damaged or hostile store) is refused
    by its size, naming it, before a buffer is sized by it."""
    copy = local.parent / "huge.zarr"
    shutil.copytree(local, copy)
    victim = copy / "layers.1.q.weight" / "c.0.0"
    os.truncate(victim, 1 << 40)
    message = r"layers\.1\.q\.weight/c\.0\.0: object of 1099511627776 bytes is larger than"
    with pytest.raises(ValueError, match=message):
        wc.load_checkpoint(copy)
    with pytest.raises(ValueError, match=message):
        dict(wc.open_checkpoint(copy).iter_tensors())


def test_a_load_shows_a_bar_of_every_byte_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arrays = write_mixed_model(tmp_path / "m.safetensors")
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False)
    wc.load_checkpoint(tmp_path / "ckpt")
    assert capsys.readouterr().err == ""  # no bar by default
    tensors = wc.load_checkpoint(tmp_path / "ckpt", progress=True)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    total = sum(a.nbytes for a in arrays.values())  # int64 position_ids read through zarr too
    assert bar.startswith("load: 100%") and f"{total / 1e3:.3g}k/{total / 1e3:.3g}k" in bar
    assert all(tensors[n].tobytes() == a.tobytes() for n, a in arrays.items())
