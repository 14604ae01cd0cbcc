"""Whole-model loads onto the GPU (marker ``gpu``; skipped without a GPU): every dtype equal to
the CPU load, as CuPy arrays or PyTorch tensors (zero-copy through DLPack), many shards, errors
naming the object, and the caller's device."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import weight_like

import wcodec_zarr as wc
from wcodec_zarr.checkpoint.frameworks import to_torch

pytestmark = pytest.mark.gpu


def test_dlpack_into_torch() -> None:
    torch = pytest.importorskip("torch")
    import ml_dtypes

    array = weight_like(np.random.default_rng(5), (128, 256), np.dtype(ml_dtypes.bfloat16))
    got = wc.decode(wc.encode(array), device="cuda")
    tensor = to_torch(got, array.dtype)
    assert tensor.dtype == torch.bfloat16
    assert tensor.is_cuda
    assert tensor.data_ptr() == got.data.ptr  # zero-copy
    assert tensor.view(torch.int16).cpu().numpy().tobytes() == array.tobytes()


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
