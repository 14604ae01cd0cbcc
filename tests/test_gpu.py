"""GPU decoder (marker ``gpu``; skipped without a GPU): bit-exact against the CPU decoder for
every dtype, sizes and segment counts, mixed batches, corrupt chunks, the Zarr GPU read path
and DLPack into PyTorch."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zarr
from helpers import DTYPES, random_bits, weight_like
from zarr.storage import MemoryStore
from zarr_helpers import wcodec_array

import wcodec_zarr as wc
from wcodec_zarr.gpu import storage_dtype

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

    from wcodec_zarr.gpu import PreparedBatch

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


# zarr warns that MemoryStore's host buffers are copied into its GPU buffers
@pytest.mark.filterwarnings("ignore:Creating a zarr.buffer.gpu.Buffer:UserWarning")
def test_zarr_gpu_read_path() -> None:
    import cupy as cp

    data = weight_like(np.random.default_rng(4), (256, 512), np.dtype(np.float16))
    z = wcodec_array(MemoryStore(), data, chunks=(64, 128), shards=(128, 512))
    with zarr.config.enable_gpu(), zarr.config.set({"codec_pipeline.batch_size": 8}):
        got = zarr.open_array(z.store, mode="r")[:]
        assert isinstance(got, cp.ndarray)
        assert cp.asnumpy(got).tobytes() == data.tobytes()


def test_dlpack_into_torch() -> None:
    torch = pytest.importorskip("torch")
    import ml_dtypes

    array = weight_like(np.random.default_rng(5), (128, 256), np.dtype(ml_dtypes.bfloat16))
    got = wc.decode(wc.encode(array), device="cuda")
    tensor = wc.gpu.to_torch(got, array.dtype)
    assert tensor.dtype == torch.bfloat16
    assert tensor.is_cuda
    assert tensor.data_ptr() == got.data.ptr  # zero-copy
    assert tensor.view(torch.int16).cpu().numpy().tobytes() == array.tobytes()


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


def test_load_checkpoint_to_gpu(tmp_path: Any) -> None:
    """Every tensor of a synthetic model of every dtype, on the GPU through the one-launch
    whole-tensor path (or the CPU for what it cannot take), equals the CPU load."""
    import cupy as cp
    from safetensors_helpers import synthetic_tensors, write_raw

    src = tmp_path / "m.safetensors"
    write_raw(src, synthetic_tensors(np.random.default_rng(6)))
    wc.convert(src, tmp_path / "ckpt", chunk_bytes=4096, shard_bytes=16384, progress=False)
    on_cpu = wc.load_checkpoint(tmp_path / "ckpt")
    on_gpu = wc.load_checkpoint(tmp_path / "ckpt", device="cuda")
    assert list(on_gpu) == list(on_cpu)
    for name, array in on_cpu.items():
        got = on_gpu[name]
        assert isinstance(got, cp.ndarray) and got.shape == array.shape, name
        assert cp.asnumpy(got).tobytes() == array.tobytes(), name
    ckpt = wc.open_checkpoint(tmp_path / "ckpt")
    part = ckpt.shard("layer.0.i8", 0, 1, 4)
    assert cp.asnumpy(part.cupy()).tobytes() == part.numpy().tobytes()


def test_load_checkpoint_to_torch_on_gpu(tmp_path: Any) -> None:
    torch = pytest.importorskip("torch")
    from safetensors_helpers import synthetic_tensors, write_raw

    src = tmp_path / "m.safetensors"
    write_raw(src, synthetic_tensors(np.random.default_rng(7)))
    wc.convert(src, tmp_path / "ckpt", chunk_bytes=4096, shard_bytes=16384, progress=False)
    state = wc.load_checkpoint(tmp_path / "ckpt", device="cuda", framework="torch")
    on_cpu = wc.load_checkpoint(tmp_path / "ckpt")
    assert state["layer.6.bf16"].dtype == torch.bfloat16
    assert state["layer.8.f8_e4m3"].dtype == torch.float8_e4m3fn
    for name, tensor in state.items():
        assert tensor.is_cuda, name
        bits = tensor.cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        assert bits == on_cpu[name].tobytes(), name
    weight = wc.open_checkpoint(tmp_path / "ckpt")["layer.7.f32"]
    assert weight.torch(device="cuda").dtype == torch.float32


def sharded_model(tmp_path: Any) -> Any:
    """About 6 MB of weights in 14 shards of 4 inner chunks: a GPU whole load reads each chunk
    in its own piece and parses it on the thread that read it."""
    from safetensors_helpers import write_raw

    rng = np.random.default_rng(8)
    tensors = [
        ("a.i8", "I8", [3000, 1024], weight_like(rng, (3000, 1024), np.dtype(np.int8))),
        ("b.f32", "F32", [512, 1024], weight_like(rng, (512, 1024), np.dtype(np.float32))),
        ("c.i8", "I8", [2000, 1024], weight_like(rng, (2000, 1024), np.dtype(np.int8))),
    ]
    src = tmp_path / "m.safetensors"
    write_raw(src, [(n, code, shape, a.tobytes()) for n, code, shape, a in tensors])
    wc.convert(src, tmp_path / "ckpt", chunk_bytes=128 << 10, shard_bytes=512 << 10, progress=False)
    return tmp_path / "ckpt"


def test_whole_load_of_many_shards_equals_the_cpu_load(tmp_path: Any) -> None:
    import cupy as cp

    ckpt = sharded_model(tmp_path)
    on_cpu = wc.load_checkpoint(ckpt)
    on_gpu = wc.load_checkpoint(ckpt, device="cuda")
    for name, array in on_cpu.items():
        assert cp.asnumpy(on_gpu[name]).tobytes() == array.tobytes(), name


def test_whole_load_errors_name_the_object(tmp_path: Any) -> None:
    """A bad object or chunk (here the last one) is reported by its key, whichever step finds
    it: the staging (shard index), the plan (container) or the kernel (payload)."""
    ckpt = sharded_model(tmp_path)
    shard = ckpt / "c.i8" / "c.3.0"
    good = shard.read_bytes()

    def damaged(at: int) -> None:
        raw = bytearray(good)
        raw[at] ^= 0xFF
        shard.write_bytes(bytes(raw))

    damaged(len(good) - 10)  # inside the shard index
    with pytest.raises(ValueError, match=r"c\.i8/c\.3\.0: shard index checksum mismatch"):
        wc.load_checkpoint(ckpt, device="cuda")
    damaged(0)  # the first inner chunk's magic
    with pytest.raises(ValueError, match=r"c\.i8/c\.3\.0 \(inner chunk 0\).*bad magic"):
        wc.load_checkpoint(ckpt, device="cuda")
    damaged(len(good) // 3)  # inside a payload
    with pytest.raises(ValueError, match=r"c\.i8/c\.3\.0 \(inner chunk \d\)"):
        wc.load_checkpoint(ckpt, device="cuda")
    shard.unlink()
    with pytest.raises(ValueError, match=r"c\.i8/c\.3\.0: object missing from the store"):
        wc.load_checkpoint(ckpt, device="cuda")
    shard.write_bytes(good)
    assert wc.load_checkpoint(ckpt, device="cuda")["c.i8"].shape == (2000, 1024)


def test_decodes_on_the_callers_device(tmp_path: Any) -> None:
    """With two GPUs, work goes to the device the caller chose (``cuda:1``, or CuPy's current
    device), not to the CUDA module's default device."""
    import cupy as cp

    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    ckpt = sharded_model(tmp_path)
    on_cpu = wc.load_checkpoint(ckpt)
    on_second = wc.load_checkpoint(ckpt, device="cuda:1")
    for name, array in on_cpu.items():
        assert on_second[name].device.id == 1, name
        assert cp.asnumpy(on_second[name]).tobytes() == array.tobytes(), name
    weights = weight_like(np.random.default_rng(9), (1000, 300), np.dtype(np.int8))
    with cp.cuda.Device(1):
        decoded = wc.decode(wc.encode(weights), device="cuda")
    assert decoded.device.id == 1
    assert cp.asnumpy(decoded).tobytes() == weights.tobytes()
