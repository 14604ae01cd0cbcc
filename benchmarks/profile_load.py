"""Where the time of a whole-checkpoint load goes: open, staging, decode (CPU and GPU), against
safetensors on the same machine.

Usage: python profile_load.py CHECKPOINT MODEL.safetensors [--profile]"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from report import cuda_synced

import wcodec_zarr as wc
from wcodec_zarr.checkpoint import batch, objects
from wcodec_zarr.codec import staging


def median_ms(fn: Callable[[], Any], repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2] * 1e3


def stage(tensors: list[Any]) -> np.ndarray:
    """Every object of the tensors read into one host buffer, as the GPU path stages them."""
    stored = objects.stored_objects(tensors)
    if stored.sources is None:
        raise SystemExit("profile_load.py reads a local checkpoint")
    buffer, _, _ = staging.place_objects(
        stored.sources,
        stored.sizes,
        stored.per_shard,
        stored.nchunks,
        batch.GPU_ALIGN,
        lambda n: np.empty(n, np.uint8),
    )
    return buffer


def main() -> None:
    ckpt_url, model = sys.argv[1], sys.argv[2]
    from safetensors.numpy import load_file

    ckpt = wc.open_checkpoint(ckpt_url)
    tensors = [ckpt[n] for n in ckpt]
    rows = {
        "safetensors.numpy.load_file": median_ms(lambda: load_file(model)),
        "open_checkpoint": median_ms(lambda: wc.open_checkpoint(ckpt_url)),
        "stored_objects": median_ms(lambda: objects.stored_objects(tensors)),
        "stage (CPU buffer)": median_ms(lambda: stage(tensors)),
        "load_to_cpu": median_ms(lambda: batch.load_to_cpu(tensors)),
        "load_checkpoint cpu": median_ms(lambda: wc.load_checkpoint(ckpt_url)),
    }
    if wc.gpu_available():
        from safetensors.torch import load_file as load_torch

        rows["safetensors.torch.load_file cuda"] = median_ms(
            cuda_synced(lambda: load_torch(model, device="cuda"))
        )
        rows["load_to_gpu"] = median_ms(
            cuda_synced(lambda: batch.load_to_gpu(tensors, "cuda", "torch"))
        )
        rows["load_checkpoint cuda"] = median_ms(
            cuda_synced(lambda: wc.load_checkpoint(ckpt_url, device="cuda", framework="torch"))
        )
    for name, ms in rows.items():
        print(f"{name:40s} {ms:8.2f} ms")
    if "--profile" in sys.argv:
        import cProfile
        import pstats

        device = "cuda" if wc.gpu_available() else "cpu"
        cProfile.runctx(
            "for _ in range(10): wc.load_checkpoint(url, device=device, framework='torch')",
            {"wc": wc, "url": ckpt_url, "device": device},
            {},
            "load.prof",
        )
        pstats.Stats("load.prof").sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
