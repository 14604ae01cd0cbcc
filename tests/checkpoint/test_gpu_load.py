"""Whole-model loads onto the GPU (marker ``gpu``; skipped without a GPU): every dtype equal to
the CPU load, as CuPy arrays or PyTorch tensors (zero-copy through DLPack), many shards, errors
naming the object, and the caller's device."""

from __future__ import annotations

import itertools
import json
from typing import Any

import numpy as np
import pytest
from helpers import weight_like

import wcodec_zarr as wc
from wcodec_zarr.checkpoint.frameworks import to_torch
from wcodec_zarr.checkpoint.layout import seal_root

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


def test_a_manifest_claiming_more_than_the_card_is_a_value_error(tmp_path: Any) -> None:
    """A writer's bug (checksum and all) that claims an exabyte tensor: a GPU load refuses it
    before allocating, with a ValueError rather than CuPy's OutOfMemoryError."""
    ckpt = sharded_model(tmp_path)
    root = ckpt / "zarr.json"
    document = json.loads(root.read_bytes())
    manifest = document["attributes"]["wcodec_checkpoint"]
    manifest["tensors"]["c.i8"].update(shape=[2**50, 1024], chunks=[2**50, 1024], shards=None)
    root.write_bytes(seal_root(json.dumps(document, separators=(",", ":")).encode()))
    with pytest.raises(ValueError, match="more than cuda:0's memory"):
        wc.load_checkpoint(ckpt, device="cuda:0")


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


def test_streamed_gpu_loads_with_a_tiny_window(tmp_path: Any) -> None:
    """Pieces of a few kB (many turns of the three staging buffers and arenas, outputs at
    unaligned offsets through the scratch area): whole loads and ``iter_tensors`` equal the CPU
    load, every tensor of ``iter_tensors`` in device memory of its own."""
    import cupy as cp
    from safetensors_helpers import synthetic_tensors, write_raw

    src = tmp_path / "m.safetensors"
    write_raw(src, synthetic_tensors(np.random.default_rng(10)))
    wc.convert(src, tmp_path / "ckpt", chunk_bytes=4096, shard_bytes=16384, progress=False)
    on_cpu = wc.load_checkpoint(tmp_path / "ckpt")
    for window in (3 * 20_000, None):
        on_gpu = wc.load_checkpoint(tmp_path / "ckpt", device="cuda", window=window)
        assert list(on_gpu) == list(on_cpu)
        for name, array in on_cpu.items():
            assert cp.asnumpy(on_gpu[name]).tobytes() == array.tobytes(), (window, name)
    streamed = list(
        wc.open_checkpoint(tmp_path / "ckpt").iter_tensors(device="cuda", window=60_000)
    )
    assert [n for n, _ in streamed] == list(on_cpu)
    spans = []
    for name, array in streamed:
        assert isinstance(array, cp.ndarray), name
        assert cp.asnumpy(array).tobytes() == on_cpu[name].tobytes(), name
        if array.nbytes:
            spans.append((array.data.ptr, array.data.ptr + array.nbytes))
    spans.sort()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_fetched_objects_stream_to_the_gpu(tmp_path: Any) -> None:
    """Objects fetched from a store (their bytes staged, not files read by path): a tiny
    window, whole loads and ``iter_tensors``, equal to the CPU load."""
    import cupy as cp
    from helpers import memory_store

    ckpt = sharded_model(tmp_path)
    on_cpu = wc.load_checkpoint(ckpt)
    store = memory_store(ckpt)
    on_gpu = wc.load_checkpoint(store, device="cuda", window=3 * (600 << 10))
    streamed = dict(wc.open_checkpoint(store).iter_tensors(device="cuda", window=3 << 20))
    for name, array in on_cpu.items():
        assert cp.asnumpy(on_gpu[name]).tobytes() == array.tobytes(), name
        assert cp.asnumpy(streamed[name]).tobytes() == array.tobytes(), name


def test_gpu_load_device_memory_bounded_by_the_window(tmp_path: Any) -> None:
    """A 48 MiB bfloat16 model loaded with a 6 MiB window: CuPy's pool (which keeps what it
    freed) grows by the output and at most two windows, not by the stored model."""
    import cupy as cp
    import ml_dtypes
    from safetensors_helpers import write_raw

    rng = np.random.default_rng(11)
    arrays = {
        f"w{i}": (rng.standard_normal((2048, 2048), np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        for i in range(6)
    }
    src = tmp_path / "m.safetensors"
    write_raw(src, [(n, "BF16", list(a.shape), a.tobytes()) for n, a in arrays.items()])
    wc.convert(src, tmp_path / "ckpt", shard_bytes=2 << 20, progress=False)
    window = 6 << 20
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    before = pool.total_bytes()
    loaded = wc.load_checkpoint(tmp_path / "ckpt", device="cuda", window=window)
    grown = pool.total_bytes() - before
    output = sum(a.nbytes for a in arrays.values())
    assert output <= grown <= output + 2 * window, (grown - output) >> 20
    for name, array in arrays.items():
        assert cp.asnumpy(loaded[name]).tobytes() == array.tobytes(), name


def test_load_module_built_on_the_meta_device(tmp_path: Any) -> None:
    """A ``torch.nn.Module`` made on the meta device (no memory) takes the checkpoint's tensors
    as they are: from ``load_checkpoint`` through ``load_state_dict(..., assign=True)``, and
    tensor by tensor through ``load_module`` (``iter_tensors``), with the names that do not
    match reported."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    def net() -> Any:
        return torch.nn.Sequential(
            torch.nn.Linear(256, 512),
            torch.nn.GELU(),
            torch.nn.Linear(512, 256),
            torch.nn.LayerNorm(256),
        ).to(torch.bfloat16)

    torch.manual_seed(0)
    real = net()
    state = {k: v.contiguous() for k, v in real.state_dict().items()}
    save_file(state, str(tmp_path / "m.safetensors"))
    wc.convert(tmp_path / "m.safetensors", tmp_path / "ckpt", progress=False)

    def same(module: Any) -> bool:
        got = module.state_dict()
        return all(
            got[k].device.type == "cuda"
            and torch.equal(got[k].cpu().view(torch.int16), v.view(torch.int16))
            for k, v in state.items()
        )

    with torch.device("meta"):
        whole = net()
    whole.load_state_dict(
        wc.load_checkpoint(tmp_path / "ckpt", device="cuda", framework="torch"), assign=True
    )
    assert same(whole)
    with torch.device("meta"):
        streamed = net()
    assert wc.load_module(streamed, tmp_path / "ckpt", device="cuda") == ([], [])
    assert same(streamed)
    partial = {k: v for k, v in state.items() if k != "3.bias"} | {"extra": state["3.bias"]}
    save_file(partial, str(tmp_path / "p.safetensors"))
    wc.convert(tmp_path / "p.safetensors", tmp_path / "partial", progress=False)
    with torch.device("meta"):
        module = net()
    with pytest.raises(ValueError, match=r"missing \['3.bias'\], unexpected \['extra'\]"):
        wc.load_module(module, tmp_path / "partial", device="cuda")
    with torch.device("meta"):
        module = net()
    report = wc.load_module(module, tmp_path / "partial", device="cuda", strict=False)
    assert report.missing_keys == ["3.bias"] and report.unexpected_keys == ["extra"]
    assert module.state_dict()["3.bias"].is_meta
    assert module.state_dict()["0.weight"].is_cuda
