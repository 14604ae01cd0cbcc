"""GPU decoder (marker ``gpu``; skipped without a GPU): bit-exact against the CPU decoder for
every dtype, sizes and segment counts, mixed batches, replayed launches, chunks already in
device memory and corrupt chunks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import DTYPES, random_bits, weight_like

import wcodec_zarr as wc
from wcodec_zarr.codec import gpu, native
from wcodec_zarr.codec.gpu import PreparedBatch, storage_dtype

pytestmark = pytest.mark.gpu

SHAPES = [(1,), (31,), (1000,), (3, 70001), (7, 65536 * 2 + 5), (5, 0)]


def cpu_bits(encoded: bytes) -> bytes:
    decoded: bytes = wc.decode(encoded).tobytes()
    return decoded


def kinds(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype[Any]) -> list[Any]:
    # gaussian weights, random bits (raw planes), smooth rows (delta predictor), constant
    smooth = np.cumsum(rng.integers(-2, 3, size=shape), axis=-1).astype(np.int8).astype(dtype)
    return [
        weight_like(rng, shape, dtype),
        random_bits(rng, shape, dtype),
        smooth,
        np.zeros(shape, dtype),
    ]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gpu_matches_cpu(dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    import cupy as cp

    rng = np.random.default_rng(abs(hash((str(dtype), shape))) % 2**32)
    for array in kinds(rng, shape, dtype):
        for checksum in (True, False):
            encoded = wc.encode(array, checksum=checksum)
            got = wc.decode(encoded, device="cuda")
            assert isinstance(got, cp.ndarray)
            assert got.dtype == storage_dtype(dtype)
            assert got.shape == array.shape
            assert cp.asnumpy(got).tobytes() == cpu_bits(encoded)


def test_mixed_batch_and_outs() -> None:
    import cupy as cp

    rng = np.random.default_rng(1)
    arrays = [weight_like(rng, (int(rng.integers(1, 300)), 4099), dt) for dt in DTYPES * 3]
    encoded = [wc.encode(a) for a in arrays]
    batch = wc.decode_batch(encoded, device="cuda")
    assert batch.device == "cuda"
    assert [cp.asnumpy(b).tobytes() for b in batch] == [cpu_bits(e) for e in encoded]
    outs = [cp.full(a.shape, 0x2B, storage_dtype(a.dtype)) for a in arrays]
    wc.decode_batch(encoded, device="cuda", outs=outs)
    assert [cp.asnumpy(o).tobytes() for o in outs] == [cpu_bits(e) for e in encoded]


def test_a_batch_launched_again_replays_its_graph() -> None:
    """From the second launch on, a prepared batch replays a recorded CUDA graph: every launch
    writes every output byte and every status again, with and without checksums."""
    import cupy as cp

    rng = np.random.default_rng(6)
    arrays = [weight_like(rng, (40, 9000), dt) for dt in DTYPES]
    encoded = [wc.encode(a) for a in arrays]
    # an int8 chunk is all rANS payload past its header: a flipped byte fails the decode itself
    tampered = bytearray(encoded[0])
    tampered[len(tampered) // 2] ^= 0x5A
    batch = PreparedBatch([*encoded, bytes(tampered)], None, None)
    for verify in (True, True, True, False, False, True):
        for out in batch.results:
            out.fill(0x2B)
        batch.launch(verify)
        with pytest.raises(wc.ChunkError, match=f"^chunk {len(encoded)}:"):
            batch.check()
        got = [cp.asnumpy(r).tobytes() for r in batch.results[: len(encoded)]]
        assert got == [cpu_bits(e) for e in encoded]


def test_a_batch_of_more_thread_blocks_than_the_gpu_holds_at_once() -> None:
    """A thread block per chunk here: three an SM are more than the bfloat16 kernel with every
    register it wants holds at once (two), so the batch goes to the one held to fewer registers
    (three)."""
    import cupy as cp

    rng = np.random.default_rng(7)
    sms = cp.cuda.Device().attributes["MultiProcessorCount"]
    arrays = [weight_like(rng, (5, 1000), np.dtype("bfloat16")) for _ in range(3 * sms)]
    encoded = [wc.encode(a) for a in arrays]
    batch = wc.decode_batch(encoded, device="cuda")
    assert [cp.asnumpy(b).tobytes() for b in batch] == [cpu_bits(e) for e in encoded]


def test_cupy_input() -> None:
    import cupy as cp

    array = weight_like(np.random.default_rng(2), (300, 1000), np.dtype(np.float16))
    encoded = wc.encode(array)
    device_input = cp.asarray(np.frombuffer(encoded, np.uint8))
    assert cp.asnumpy(wc.decode(device_input, device="cuda")).tobytes() == array.tobytes()


def test_device_resident_chunks_are_planned_from_their_heads() -> None:
    """A batch of chunks already in device memory decodes where it lies: chunks of every dtype,
    one whose head is longer than the first read (two reads of heads), and chunks at unaligned
    offsets of one buffer (as inner chunks of a shard are), which are copied on the device."""
    import cupy as cp

    rng = np.random.default_rng(8)
    arrays = [weight_like(rng, (30, 7001), dt) for dt in DTYPES]
    arrays.append(weight_like(rng, (120, 65536), np.dtype(np.float32)))  # 120 segments
    encoded = [wc.encode(a) for a in arrays]
    last = np.frombuffer(encoded[-1], np.uint8)
    assert native.core.head(last[: gpu.HEAD_PREFIX], last.size)[2] > gpu.HEAD_PREFIX
    got = wc.decode_batch([cp.asarray(np.frombuffer(e, np.uint8)) for e in encoded], device="cuda")
    assert [cp.asnumpy(g).tobytes() for g in got] == [a.tobytes() for a in arrays]
    # one buffer, each chunk 3 bytes after the previous one's end
    offsets = np.cumsum([0] + [len(e) + 3 for e in encoded[:-1]])
    shard = np.zeros(int(offsets[-1]) + len(encoded[-1]), np.uint8)
    for e, at in zip(encoded, offsets, strict=True):
        shard[at : at + len(e)] = np.frombuffer(e, np.uint8)
    on_device = cp.asarray(shard)
    views = [on_device[at : at + len(e)] for e, at in zip(encoded, offsets, strict=True)]
    got = wc.decode_batch(views, device="cuda")
    assert [cp.asnumpy(g).tobytes() for g in got] == [a.tobytes() for a in arrays]
    truncated = cp.asarray(np.frombuffer(encoded[0][:100], np.uint8))
    with pytest.raises(wc.ChunkError, match=r"^chunk 1: "):
        wc.decode_batch([views[0], truncated], device="cuda")


def test_nonzero_padding_is_found_on_the_device() -> None:
    """The padding between segments lies in the payload, which a plan from heads alone does not
    read: the kernel checks it, so a device-resident chunk is rejected as its host copy is."""
    import cupy as cp

    for seed in range(20):
        array = weight_like(np.random.default_rng(seed), (2, 65536), np.dtype(np.int8))
        encoded = bytearray(wc.encode(array))
        data = wc.inspect(bytes(encoded))["header_bytes"]
        # one rANS plane of two segments: its index is the 16 bytes before the data section
        end0 = int.from_bytes(encoded[data - 16 : data - 8], "little") >> 8
        if end0 % 4:
            break
    else:
        pytest.fail("no segment of these arrays needs padding")
    encoded[data + end0] = 0x01
    with pytest.raises(ValueError, match="bad padding"):
        wc.decode(bytes(encoded))
    with pytest.raises(wc.ChunkError, match="nonzero padding"):
        wc.decode_batch([cp.asarray(np.frombuffer(bytes(encoded), np.uint8))], device="cuda")


@pytest.mark.parametrize("checksum", [True, False])
def test_corrupt_chunks_report_errors_without_crashing(checksum: bool) -> None:
    import cupy as cp

    rng = np.random.default_rng(3)
    good = weight_like(rng, (4, 70000), np.dtype(np.int8))
    encoded = wc.encode(good, checksum=checksum)
    failures = 0
    for pos in rng.choice(np.arange(200, len(encoded)), size=40, replace=False):
        tampered = bytearray(encoded)
        tampered[pos] ^= 0x5A
        try:
            batch = wc.decode_batch([encoded, bytes(tampered)], device="cuda")
        except ValueError as exc:
            assert str(exc).startswith("chunk 1:")
            failures += 1
        else:
            assert cp.asnumpy(batch[1]).tobytes() == good.tobytes() or not checksum
    assert failures > 0
    # the device is still healthy
    assert cp.asnumpy(wc.decode(encoded, device="cuda")).tobytes() == good.tobytes()


def test_checksum_of_an_empty_chunk_is_checked() -> None:
    # an empty chunk has no segment whose warp could compare its checksum: the plan does
    encoded = bytearray(wc.encode(np.zeros((5, 0), np.int8)))
    encoded[12] ^= 0x01  # the header's CRC32C of the decoded bytes (0 for no bytes)
    with pytest.raises(ValueError, match="checksum mismatch"):
        wc.decode(bytes(encoded))
    with pytest.raises(ValueError, match="checksum mismatch"):
        wc.decode_batch([wc.encode(np.ones(10, np.int8)), bytes(encoded)], device="cuda")


def test_unaligned_output_is_refused() -> None:
    import cupy as cp

    array = np.arange(1000, dtype=np.int8)
    buffer = cp.empty(1001, cp.int8)
    with pytest.raises(ValueError, match="16-byte aligned"):
        wc.decode(wc.encode(array), device="cuda", out=buffer[1:])
