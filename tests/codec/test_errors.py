"""Bad input: unsupported dtypes raise TypeError; corrupt, truncated or hostile chunks raise
ValueError naming the problem, and never crash."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from helpers import weight_like

import wcodec_zarr as wc


@pytest.fixture(scope="module")
def chunk() -> bytes:
    array = weight_like(np.random.default_rng(0), (3, 70000), np.dtype(np.float16))
    return wc.encode(array)


@pytest.mark.parametrize("dtype", ["float64", "int64", "uint32", "complex64", "bool", "U3", "O"])
def test_unsupported_dtype_is_a_type_error(dtype: str) -> None:
    with pytest.raises(TypeError, match="does not support dtype"):
        wc.encode(np.zeros(4, dtype=dtype))


def test_bad_magic(chunk: bytes) -> None:
    with pytest.raises(ValueError, match="bad magic"):
        wc.decode(b"XXXX" + chunk[4:])


def test_unsupported_version(chunk: bytes) -> None:
    with pytest.raises(ValueError, match="unsupported format version 2"):
        wc.decode(chunk[:4] + b"\x02" + chunk[5:])


def test_unknown_dtype_code(chunk: bytes) -> None:
    with pytest.raises(ValueError, match="unknown dtype code 99"):
        wc.decode(chunk[:5] + b"\x63" + chunk[6:])


def test_size_limit(chunk: bytes) -> None:
    huge = chunk[:16] + struct.pack("<Q", 1 << 41) + chunk[24:]
    with pytest.raises(ValueError, match="size limit"):
        wc.decode(huge)


def test_checksum_mismatch(chunk: bytes) -> None:
    tampered = chunk[:12] + bytes([chunk[12] ^ 1]) + chunk[13:]
    with pytest.raises(ValueError, match="checksum mismatch"):
        wc.decode(tampered)


def test_trailing_bytes(chunk: bytes) -> None:
    with pytest.raises(ValueError, match="trailing bytes"):
        wc.decode(chunk + b"\0")


@pytest.mark.parametrize("cut", [0, 3, 15, 20, 40, 200, -1000, -1])
def test_truncated(chunk: bytes, cut: int) -> None:
    with pytest.raises(ValueError, match="truncated"):
        wc.decode(chunk[:cut])


def test_bad_table_sum() -> None:
    array = np.tile(np.arange(-3, 4, dtype=np.int8), 1000)
    encoded = bytearray(wc.encode(array, checksum=False))
    table_at = 16 + 8 + 2  # header, shape, mode byte, table mask
    encoded[table_at + 32] ^= 0x01  # first frequency off by one
    with pytest.raises(ValueError, match="bad table: frequencies sum"):
        wc.decode(bytes(encoded))


def test_corrupt_segment_payload_without_checksum() -> None:
    array = weight_like(np.random.default_rng(1), (200_000,), np.dtype(np.int8))
    encoded = bytearray(wc.encode(array, checksum=False))
    encoded[-100] ^= 0x40
    encoded[-2000] ^= 0x01
    with pytest.raises(ValueError, match="segment"):
        wc.decode(bytes(encoded))


def test_every_byte_flip_is_rejected_or_harmless(chunk: bytes) -> None:
    original = wc.decode(chunk)
    rng = np.random.default_rng(2)
    for pos in rng.choice(len(chunk), size=300, replace=False):
        tampered = bytearray(chunk)
        tampered[pos] ^= int(rng.integers(1, 256))
        with contextlib.suppress(ValueError):
            assert wc.decode(bytes(tampered)).tobytes() == original.tobytes()


def test_batch_error_names_the_chunk(chunk: bytes) -> None:
    with pytest.raises(wc.ChunkError) as excinfo:
        wc.decode_batch([chunk, chunk[:12] + b"\0\0\0\0" + chunk[16:]])
    assert str(excinfo.value) == "chunk 1: checksum mismatch: decoded bytes are corrupt"
    assert excinfo.value.index == 1
    assert excinfo.value.reason == "checksum mismatch: decoded bytes are corrupt"
    assert isinstance(excinfo.value, ValueError)


def test_a_batch_that_cannot_take_a_buffer_lets_go_of_the_others(chunk: bytes) -> None:
    """The native batch call holds every chunk and output through the buffer protocol; an
    object that has no buffer (or a read-only output) fails the call, and the buffers already
    taken are given back: a bytearray among them can grow again."""
    from wcodec_zarr.codec.native import core

    held = bytearray(chunk)
    out = np.empty(wc.decode(chunk).nbytes, np.uint8)
    with pytest.raises(TypeError):
        core.decode_batch([held, object()], [out, out.copy()], 1)
    read_only = out.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        core.decode_batch([held, held], [out, read_only], 1)
    held.append(0)  # BufferError while an export is held
    assert held[:-1] == chunk


@pytest.mark.parametrize("threads", [1, 2, None])
def test_corrupt_segment_among_small_chunks_names_its_chunk(threads: int | None) -> None:
    # One-segment chunks decode side by side in groups that cross chunk boundaries; a segment
    # that fails names its own chunk, and the chunks around it are not blamed.
    rng = np.random.default_rng(3)
    chunks = [wc.encode(weight_like(rng, (48, 384), np.dtype(np.int8))) for _ in range(9)]
    tampered = bytearray(chunks[5])
    tampered[-40:] = bytes(40)  # the end of the segment's word stream
    chunks[5] = bytes(tampered)
    with pytest.raises(wc.ChunkError) as excinfo:
        wc.decode_batch(chunks, threads=threads)
    assert excinfo.value.index == 5
    assert str(excinfo.value).startswith("chunk 5: ")


def test_out_mismatches(chunk: bytes) -> None:
    with pytest.raises(ValueError, match="dtype"):
        wc.decode(chunk, out=np.empty((3, 70000), np.int16))
    with pytest.raises(ValueError, match="shape"):
        wc.decode(chunk, out=np.empty((70000, 3), np.float16))
    with pytest.raises(ValueError, match="C-contiguous"):
        wc.decode(chunk, out=np.empty((70000, 3), np.float16).T)
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        wc.decode(chunk, out=[0])  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_bad_thread_counts(chunk: bytes, threads: object) -> None:
    with pytest.raises(ValueError, match="threads"):
        wc.decode(chunk, threads=threads)  # type: ignore[arg-type]


def test_not_bytes() -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        wc.decode(12345)


def test_max_nbytes_refuses_a_chunk_before_allocating() -> None:
    """Constant planes cost no payload: a chunk of a few dozen bytes declares a megabyte."""
    chunk = wc.encode(np.zeros(1 << 20, np.int8))
    assert len(chunk) < 200
    with pytest.raises(wc.ChunkError, match=r"declares 1048576 bytes, more than max_nbytes=1000"):
        wc.decode(chunk, max_nbytes=1000)
    assert wc.decode(chunk, max_nbytes=1 << 20).nbytes == 1 << 20
    with pytest.raises(wc.ChunkError, match=r"^chunk 1: the chunk declares"):
        wc.decode_batch([wc.encode(np.ones(8, np.int8)), chunk], max_nbytes=1000)
