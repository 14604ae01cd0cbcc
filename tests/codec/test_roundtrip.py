"""Round trips are bit-exact for every dtype, shape, layout, data kind and thread count."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import google_crc32c
import ml_dtypes
import numpy as np
import pytest
from helpers import DTYPES, assert_round_trip, random_bits, weight_like

import wcodec_zarr as wc

SHAPES = [(), (0,), (1,), (31,), (1000,), (3, 0, 2), (7, 65537), (65536 * 2 + 17,), (2, 3, 4, 5)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_round_trip_weights(dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(abs(hash((str(dtype), shape))) % 2**32)
    assert_round_trip(weight_like(rng, shape, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("threads", [1, 2, 5, None])
def test_round_trip_random_bits_any_thread_count(dtype: np.dtype[Any], threads: int | None) -> None:
    array = random_bits(np.random.default_rng(5), (3, 70001), dtype)
    encoded = wc.encode(array, threads=threads)
    assert wc.decode(encoded, threads=threads).tobytes() == array.tobytes()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_random_data_expands_by_at_most_64_bytes_plus_a_thousandth(dtype: np.dtype[Any]) -> None:
    array = random_bits(np.random.default_rng(1), (1 << 20,), dtype)
    encoded = assert_round_trip(array)
    assert len(encoded) <= array.nbytes * 1.001 + 64


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_constant_array_is_a_few_dozen_bytes(dtype: np.dtype[Any]) -> None:
    array = np.full((1000, 1000), 3, dtype=np.int8).view(np.uint8).astype(dtype)
    encoded = assert_round_trip(array)
    # header, shape, one mode and one value byte per plane, zero padding to 8 bytes
    assert len(encoded) <= 16 + 8 * 2 + 8
    assert {p["mode"] for p in wc.inspect(encoded)["planes"]} == {"constant"}


def test_two_symbols_and_single_dominant_symbol() -> None:
    rng = np.random.default_rng(2)
    two = rng.choice(np.array([-1, 1], dtype=np.int8), size=200_000)
    assert len(assert_round_trip(two)) < 200_000 / 8 * 1.02 + 200
    dominant = np.zeros(300_000, dtype=np.int8)
    dominant[rng.integers(0, dominant.size, 3)] = 5
    assert len(assert_round_trip(dominant)) < 3000


@pytest.mark.parametrize("dtype", [np.dtype(np.int16), np.dtype(np.float32)], ids=str)
def test_fortran_strided_and_big_endian_inputs(dtype: np.dtype[Any]) -> None:
    base = weight_like(np.random.default_rng(3), (300, 400), dtype)
    fortran = np.asfortranarray(base)
    assert wc.decode(wc.encode(fortran)).tobytes() == base.tobytes()
    strided = base[::3, 1::2]
    assert wc.decode(wc.encode(strided)).tobytes() == np.ascontiguousarray(strided).tobytes()
    big = base.astype(dtype.newbyteorder(">"))
    decoded = wc.decode(wc.encode(big))
    assert decoded.dtype == dtype and decoded.tobytes() == base.tobytes()


def test_bfloat16_views_of_same_bits_differ_only_in_dtype() -> None:
    bits = np.arange(65536, dtype=np.uint16)
    bf16 = bits.view(ml_dtypes.bfloat16)
    decoded = wc.decode(wc.encode(bf16))
    assert decoded.dtype == np.dtype(ml_dtypes.bfloat16)
    assert decoded.view(np.uint16).tobytes() == bits.tobytes()


def test_header_checksum_is_crc32c_of_the_decoded_bytes() -> None:
    array = weight_like(np.random.default_rng(4), (513, 129), np.dtype(np.float16))
    encoded = wc.encode(array)
    expected = google_crc32c.value(array.tobytes())
    assert int.from_bytes(encoded[12:16], "little") == expected
    assert wc.inspect(encoded)["checksum"] == expected
    unchecked = wc.encode(array, checksum=False)
    assert wc.inspect(unchecked)["checksum"] is None
    assert wc.decode(unchecked).tobytes() == array.tobytes()


def test_decode_into_out() -> None:
    array = weight_like(np.random.default_rng(6), (64, 1000), np.dtype(np.int8))
    out = np.full_like(array, 99)
    result = wc.decode(wc.encode(array), out=out)
    assert result is out
    assert out.tobytes() == array.tobytes()


def test_decode_accepts_bytes_bytearray_memoryview_and_ndarray() -> None:
    array = weight_like(np.random.default_rng(7), (1000,), np.dtype(np.int16))
    encoded = wc.encode(array)
    for data in (
        encoded,
        bytearray(encoded),
        memoryview(encoded),
        np.frombuffer(encoded, np.uint8),
    ):
        assert wc.decode(data).tobytes() == array.tobytes()


def test_decode_batch_mixed_chunks() -> None:
    rng = np.random.default_rng(8)
    arrays = [
        weight_like(rng, (n, 333), dt) for n, dt in zip(range(1, 400, 57), DTYPES, strict=False)
    ]
    decoded = wc.decode_batch([wc.encode(a) for a in arrays], threads=2)
    assert [d.tobytes() for d in decoded] == [a.tobytes() for a in arrays]
    outs = [np.empty_like(a) for a in arrays]
    wc.decode_batch([wc.encode(a) for a in arrays], outs=outs)
    assert [o.tobytes() for o in outs] == [a.tobytes() for a in arrays]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_batch_of_more_tables_than_are_kept_builds_them_per_task(threads: int) -> None:
    """A batch of hundreds of small chunks (more decode tables than the decoder keeps between
    calls: every task then builds the tables of its own segments) decodes bit-exact: every
    dtype, delta-coded rows, and chunks of several segments beside one-segment ones."""
    rng = np.random.default_rng(10)
    smooth = np.cumsum(rng.integers(-2, 3, size=(16, 4096)), axis=1).astype(np.int8)
    arrays = [weight_like(rng, (8, 300 + i % 50), DTYPES[i % len(DTYPES)]) for i in range(700)]
    arrays[::97] = [smooth, weight_like(rng, (300, 1000), np.dtype(ml_dtypes.bfloat16))] * 4
    chunks = [wc.encode(a) for a in arrays]
    assert sum(wc.inspect(c)["segments"] > 1 for c in chunks) >= 4
    assert any(p["delta_segments"] for c in chunks for p in wc.inspect(c)["planes"])
    decoded = wc.decode_batch(chunks, threads=threads)
    assert [d.tobytes() for d in decoded] == [a.tobytes() for a in arrays]
    damaged = bytearray(chunks[500])
    damaged[-1] ^= 1
    with pytest.raises(ValueError, match=r"^chunk 500: "):
        wc.decode_batch([*chunks[:500], bytes(damaged), *chunks[501:]], threads=threads)


def test_delta_predictor_wins_on_smooth_rows_and_never_loses_much() -> None:
    rng = np.random.default_rng(9)
    smooth = np.cumsum(rng.integers(-2, 3, size=(64, 4096)), axis=1).astype(np.int8)
    with_pred = assert_round_trip(smooth)
    without = assert_round_trip(smooth, predict=False)
    assert wc.inspect(with_pred)["planes"][0]["delta_segments"] > 0
    assert len(with_pred) < 0.5 * len(without)
    for array in (
        weight_like(rng, (300, 3000), np.dtype(np.int8)),
        random_bits(rng, (9, 50000), np.dtype(np.float16)),
    ):
        segments = wc.inspect(wc.encode(array))["segments"] * array.dtype.itemsize
        assert len(wc.encode(array)) <= len(wc.encode(array, predict=False)) + segments


@pytest.mark.parametrize(
    ("nelem", "segments", "segment_elements"),
    [
        (64 * 1024, 1, 64 * 1024),
        (18 * 1024, 1, 64 * 1024),
        (72 * 1024, 2, 36 * 1024),  # not 64 Ki + 8 Ki: segments pair up
        (64 * 1024 + 1, 2, 33 * 1024),
        (1908 * 384, 12, 60 * 1024),
        (3 * 64 * 1024, 3, 64 * 1024),
    ],
)
def test_chunks_split_into_the_fewest_segments_of_one_length(
    nelem: int, segments: int, segment_elements: int
) -> None:
    array = weight_like(np.random.default_rng(nelem), (nelem,), np.dtype(np.int8))
    info = wc.inspect(assert_round_trip(array))
    assert (info["segments"], info["segment_elements"]) == (segments, segment_elements)


def test_inspect_reports_planes_and_bounds() -> None:
    array = weight_like(np.random.default_rng(10), (512, 512), np.dtype(ml_dtypes.bfloat16))
    info = wc.inspect(wc.encode(array))
    assert info["dtype"] == "bfloat16"
    assert info["shape"] == (512, 512)
    assert info["nbytes"] == array.nbytes
    assert info["ratio"] == pytest.approx(array.nbytes / info["compressed_nbytes"])
    assert info["segments"] == 4
    exponent, mantissa = info["planes"]
    assert exponent["mode"] == "rans" and exponent["entropy_bits"] < 4
    assert mantissa["entropy_bits"] > 7.9
    assert info["compressed_nbytes"] >= info["coded_bound_bytes"]


def test_auto_device_falls_back_to_cpu_and_says_why() -> None:
    array = weight_like(np.random.default_rng(11), (100, 100), np.dtype(np.int8))
    batch = wc.decode_batch([wc.encode(array)], device="auto")
    if wc.gpu_available():
        assert batch.device == "cuda"
        return
    assert batch.device == "cpu"
    assert batch.fallback_reason == wc.gpu_status()["reason"] != ""
    assert isinstance(batch[0], np.ndarray) and batch[0].tobytes() == array.tobytes()
    with pytest.raises(RuntimeError, match="GPU decoding is unavailable"):
        wc.decode(wc.encode(array), device="cuda")


SIMD_SCRIPT = """
import hashlib, sys
import numpy as np
import wcodec_zarr as wc
from wcodec_zarr.codec.native import core
encoded = open(sys.argv[1], "rb").read()
decoded = wc.decode_batch([encoded] * 3, threads=int(sys.argv[2]))
again = wc.encode(decoded[0], threads=int(sys.argv[2]))
print(core.simd(), hashlib.sha256(b"".join(d.tobytes() for d in decoded)).hexdigest(),
      hashlib.sha256(again).hexdigest())
"""


@pytest.mark.parametrize("level", ["scalar", "avx2", "best", "best-gather", "best-permute"])
def test_every_simd_level_decodes_and_encodes_the_same_bytes(level: str, tmp_path: Path) -> None:
    # WCODEC_SIMD caps the kernels at a level, WCODEC_LOOKUP picks how the AVX-512 decoder looks
    # entries up; every choice must agree byte for byte, with segments of unequal length (the
    # last one short) interleaved in one group.
    array = weight_like(np.random.default_rng(12), (3, 70001), np.dtype(np.int8))
    encoded = wc.encode(array)
    (tmp_path / "chunk").write_bytes(encoded)
    env = {k: v for k, v in os.environ.items() if k not in ("WCODEC_SIMD", "WCODEC_LOOKUP")}
    level, _, lookup = level.partition("-")
    if level != "best":
        env["WCODEC_SIMD"] = level
    if lookup:
        env["WCODEC_LOOKUP"] = lookup
    results = {
        threads: subprocess.run(
            [sys.executable, "-c", SIMD_SCRIPT, str(tmp_path / "chunk"), str(threads)],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        for threads in (1, 2)
    }
    expected = [
        hashlib.sha256(array.tobytes() * 3).hexdigest(),
        hashlib.sha256(encoded).hexdigest(),
    ]
    for simd, *digests in results.values():
        assert level in ("best", simd) or simd == "scalar"
        assert digests == expected
