"""Native object staging (``wcodec/staging.h``): shard objects from files or memory land in one
buffer with every chunk aligned; hostile shard indexes are refused with the object's index and
a reason, never read or written out of bounds. (Entries that overlap are read as they say: the
chunks' own checks catch what that does to their bytes.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import pytest

import wcodec_zarr as wc
from wcodec_zarr.codec.errors import ChunkError
from wcodec_zarr.codec.native import core
from wcodec_zarr.codec.staging import place_objects

EMPTY = 2**64 - 1


def shard(chunks: list[bytes], entries: list[tuple[int, int]] | None = None) -> bytes:
    """A shard object: the chunks one after another, then the index and its CRC32C."""
    if entries is None:
        entries, offset = [], 0
        for c in chunks:
            entries.append((offset, len(c)))
            offset += len(c)
    table = np.asarray(entries, "<u8").tobytes()
    return b"".join(chunks) + table + google_crc32c.value(table).to_bytes(4, "little")


def run_stage(
    sources: list[Any], per_shard: list[int], nchunks: list[int], align: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sizes = [Path(s).stat().st_size if isinstance(s, str) else len(s) for s in sources]
    blobs = [s if isinstance(s, str) else np.frombuffer(s, np.uint8) for s in sources]
    return place_objects(blobs, sizes, per_shard, nchunks, align, lambda n: np.zeros(n, np.uint8))


@pytest.mark.parametrize("align", [1, 4, 16, 256])
def test_chunks_land_aligned_from_files_and_memory(tmp_path: Path, align: int) -> None:
    rng = np.random.default_rng(0)
    # chunks of several MiB are read in pieces by several threads
    sizes = (1001, 37, 2_500_000, 3_000_001, 777)
    arrays = [rng.integers(-128, 128, n, np.int8) for n in sizes]
    chunks = [wc.encode(a) for a in arrays]
    (tmp_path / "s0").write_bytes(shard(chunks[:3]))
    (tmp_path / "c").write_bytes(chunks[3])
    sources: list[Any] = [str(tmp_path / "s0"), str(tmp_path / "c"), shard([*chunks[4:], b"x"])]
    # the last shard holds a second entry past the tensor's end: only the first is used
    buffer, offsets, lens = run_stage(sources, [3, 0, 2], [3, 1, 1], align)
    assert (offsets % align == 0).all()
    for k, array in enumerate(arrays):
        got = buffer[int(offsets[k]) : int(offsets[k] + lens[k])]
        assert np.array_equal(wc.decode(got), array)


def test_chunks_in_order_with_gaps_between_them(tmp_path: Path) -> None:
    a, b = wc.encode(np.arange(100, dtype=np.int8)), wc.encode(np.ones(9, np.int8))
    blob = shard([a, bytes(7), b], [(0, len(a)), (len(a) + 7, len(b))])
    buffer, offsets, lens = run_stage([blob], [2], [2], 16)
    assert bytes(buffer[int(offsets[0]) : int(offsets[0] + lens[0])]) == a
    assert bytes(buffer[int(offsets[1]) : int(offsets[1] + lens[1])]) == b


@pytest.mark.parametrize("stored", ["swapped", "shared"])
def test_chunks_out_of_row_order_are_refused(stored: str) -> None:
    """Staged shards hold row bands in row order: entries that are not (two swapped, two on the
    same bytes) cannot be told from a damaged index, whose chunks would decode, checksums
    intact, into the wrong rows."""
    a, b = wc.encode(np.arange(100, dtype=np.int8)), wc.encode(np.ones(9, np.int8))
    if stored == "swapped":  # b stored first, a second; the index lists a then b
        blob = shard([b, a], [(len(b), len(a)), (0, len(b))])
    else:
        blob = shard([a], [(0, len(a)), (0, len(a))])
    with pytest.raises(ChunkError, match="entry 1 overlaps or precedes the entry before it"):
        run_stage([blob], [2], [2], 16)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([(0, 10), (EMPTY, EMPTY)], "inner chunk 1 is missing from the shard"),
        ([(0, 10), (15, 10)], "shard index entry 1 is out of range"),
        ([(0, 10), (2**63, 2**63)], "shard index entry 1 is out of range"),
    ],
)
def test_hostile_indexes_are_refused(entries: list[tuple[int, int]], reason: str) -> None:
    blob = shard([bytes(20)], entries)
    with pytest.raises(ChunkError, match=reason) as excinfo:
        run_stage([bytes(5), blob], [0, 2], [1, 2], 16)
    assert excinfo.value.index == 1


def test_bad_checksum_short_object_and_missing_file(tmp_path: Path) -> None:
    blob = bytearray(shard([bytes(20)]))
    blob[-1] ^= 1
    with pytest.raises(ChunkError, match="shard index checksum mismatch"):
        run_stage([bytes(blob)], [1], [1], 16)
    with pytest.raises(ChunkError, match="shard of 7 bytes is shorter than its index"):
        run_stage([bytes(7)], [1], [1], 16)
    (tmp_path / "gone").write_bytes(b"abc")
    vanished = str(tmp_path / "gone")
    (tmp_path / "gone").unlink()
    with pytest.raises(ChunkError, match="object missing from the store"):
        stage_one(vanished, size=3, slot=0, slot_len=64, buffer_len=64)


def test_inconsistent_descriptions_are_refused() -> None:
    with pytest.raises(ValueError, match="described inconsistently"):
        stage_one(bytes(4), size=4, slot=64, slot_len=32, buffer_len=64)  # past the buffer


def stage_one(source: Any, *, size: int, slot: int, slot_len: int, buffer_len: int) -> None:
    """One unsharded object described by hand, straight to the native call."""
    core.stage_objects(
        [source],
        np.asarray([size], np.uint64),
        np.asarray([slot], np.uint64),
        np.asarray([slot_len], np.uint64),
        np.asarray([0], np.uint32),
        np.asarray([1], np.uint32),
        np.asarray([0], np.uint64),
        np.zeros(buffer_len, np.uint8),
        16,
        np.zeros(1, np.uint64),
        np.zeros(1, np.uint64),
        0,
    )
