"""Checkpoint benchmark: convert throughput, size and load time of real models against the same
tensors as uncompressed safetensors, measured in the same run on the same machine.

Models: MiniLM as shipped (fp32), its bf16 view and its int8 per-row quantized view (see
wcodec_zarr.testing.weights), each written as a safetensors file first; or --model FILE
(repeatable).

- convert MB/s (of safetensors bytes) into a new destination (removing the last one is not
  timed): pinned to 1 CPU (the median over 3 processes), with every CPU, and as Dask tasks on a
  LocalCluster of 2 single-threaded worker processes (started before the timing); median of
  --repeats;
- size: the checkpoint's chunk bytes against the safetensors file;
- load to CPU from the page cache (files read once before): ``load_checkpoint`` against
  ``safetensors.numpy.load_file``, median of --repeats;
- with --gpu: load to GPU, ``load_checkpoint(device="cuda", framework="torch")`` against
  ``safetensors.torch.load_file(device="cuda")``, each ending in a device synchronisation.

Writes benchmarks/results/checkpoint-<cpu or card>-<date>.md.

    python benchmarks/bench_checkpoint.py [--repeats 5] [--gpu] [--model FILE ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import cpu_name, cuda_synced, median_time, write_report

import wcodec_zarr as wc
from wcodec_zarr.testing.weights import minilm_views


def write_models(folder: Path) -> list[Path]:
    from safetensors.numpy import save_file

    paths = []
    for view, tensors in minilm_views().items():
        path = folder / f"minilm-{view}.safetensors"
        save_file({k: np.ascontiguousarray(t) for k, t in tensors.items()}, str(path))
        paths.append(path)
    return paths


CONVERT_ONE_CPU = """
import os, shutil, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import wcodec_zarr as wc
times = []
for _ in range(int(sys.argv[3])):
    start = time.perf_counter()
    wc.convert(sys.argv[1], sys.argv[2], progress=False)
    times.append(time.perf_counter() - start)
    shutil.rmtree(sys.argv[2])
print(sorted(times)[len(times) // 2])
"""


def convert_time(src: Path, dst: Path, repeats: int) -> float:
    """Median time to convert into a new destination (removing it is not timed)."""
    times = []
    for _ in range(repeats):
        shutil.rmtree(dst, ignore_errors=True)
        start = time.perf_counter()
        wc.convert(src, dst, progress=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def convert_one_cpu(src: Path, dst: Path, repeats: int, processes: int = 3) -> float:
    """Convert time in processes whose threads may only run on one CPU: the median of
    ``processes`` processes' medians (a shared machine's CPU speed drifts between processes:
    on the H100 host one process's median ranged over 150-330 MB/s for the same model)."""
    times = []
    for _ in range(processes):
        result = subprocess.run(
            [sys.executable, "-c", CONVERT_ONE_CPU, str(src), str(dst), str(repeats)],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(float(result.stdout.strip()))
    return statistics.median(times)


def bench_model(src: Path, work: Path, repeats: int, gpu: bool, dask: bool) -> dict[str, Any]:
    from safetensors.numpy import load_file

    size = src.stat().st_size
    dst = work / f"{src.stem}.zarr"
    all_cpus = convert_time(src, dst, repeats)
    shutil.rmtree(dst)
    one_cpu = convert_one_cpu(src, dst, repeats)
    row: dict[str, Any] = {
        "model": src.stem,
        "MB": size / 1e6,
        "convert_1cpu": size / one_cpu / 1e6,
        "convert_all": size / all_cpus / 1e6,
    }
    if dask:
        import distributed

        # the cluster starts (and imports the package on its workers) before the timing
        with (
            distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,  # type: ignore[no-untyped-call]
        ):
            client.run(lambda: __import__("wcodec_zarr"))
            times = []
            for _ in range(repeats):
                shutil.rmtree(dst, ignore_errors=True)
                start = time.perf_counter()
                wc.convert(src, dst, progress=False, workers=client)
                times.append(time.perf_counter() - start)
        row["convert_dask2"] = size / statistics.median(times) / 1e6
    wc.convert(src, dst, overwrite=True, progress=False)
    ckpt = wc.open_checkpoint(dst)
    row["ratio"] = size / ckpt.stored_nbytes
    src.read_bytes()  # both in the page cache
    wc.load_checkpoint(dst)
    row["load_safetensors_s"] = median_time(lambda: load_file(str(src)), repeats)
    row["load_wcodec_s"] = median_time(lambda: wc.load_checkpoint(dst), repeats)
    loaded = wc.load_checkpoint(dst)
    original = load_file(str(src))
    row["exact"] = all(loaded[k].tobytes() == original[k].tobytes() for k in original)
    if gpu:
        row |= bench_gpu_load(src, dst, repeats)
    return row


def bench_gpu_load(src: Path, dst: Path, repeats: int) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    def safetensors_load() -> Any:
        return load_file(str(src), device="cuda")

    def wcodec_load() -> Any:
        return wc.load_checkpoint(dst, device="cuda", framework="torch")

    cuda_synced(safetensors_load)()
    cuda_synced(wcodec_load)()
    ours = wcodec_load()
    theirs = safetensors_load()
    exact = all(
        ours[k].view(-1).view(torch.uint8).cpu().numpy().tobytes()
        == theirs[k].reshape(-1).view(torch.uint8).cpu().numpy().tobytes()
        for k in theirs
    )
    return {
        "gpu_safetensors_s": median_time(cuda_synced(safetensors_load), repeats),
        "gpu_wcodec_s": median_time(cuda_synced(wcodec_load), repeats),
        "gpu_exact": exact,
    }


def report(rows: list[dict[str, Any]], machine: str, gpu: bool) -> str:
    cols = [
        ("model", "model", "{}"),
        ("MB", "MB", "{:.1f}"),
        ("ratio", "ratio", "{:.4f}"),
        ("convert_1cpu", "conv 1 CPU MB/s", "{:.0f}"),
        ("convert_all", "conv all MB/s", "{:.0f}"),
        ("convert_dask2", "conv Dask 2 MB/s", "{:.0f}"),
        ("load_safetensors_s", "load st ms", "{:.1f}"),
        ("load_wcodec_s", "load wc ms", "{:.1f}"),
        ("exact", "bit-exact", "{}"),
    ]
    if gpu:
        cols += [
            ("gpu_safetensors_s", "GPU st ms", "{:.1f}"),
            ("gpu_wcodec_s", "GPU wc ms", "{:.1f}"),
            ("gpu_exact", "GPU exact", "{}"),
        ]
    ms = {"load_safetensors_s", "load_wcodec_s", "gpu_safetensors_s", "gpu_wcodec_s"}
    lines = [
        f"# Checkpoint benchmark, {machine}, {os.cpu_count()} CPUs",
        "",
        "| " + " | ".join(c[1] for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in rows:
        cells = [
            fmt.format(r[key] * 1e3 if key in ms else r[key]) if key in r else "-"
            for key, _, fmt in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Bars:"]
    cpus = os.cpu_count() or 1
    for r in rows:
        lines.append(
            f"- {r['model']}: convert {r['convert_1cpu']:.0f} MB/s on 1 CPU (bar 200): "
            f"{'PASS' if r['convert_1cpu'] >= 200 else 'FAIL'}; all {cpus} CPUs "
            f"{r['convert_all'] / cpus:.0f} MB/s per CPU"
        )
        speed = r["load_safetensors_s"] / r["load_wcodec_s"]
        lines.append(
            f"- {r['model']}: CPU load at {speed:.2f}x the speed of safetensors (bar 0.5x): "
            f"{'PASS' if speed >= 0.5 else 'FAIL'}"
        )
        if "gpu_wcodec_s" in r:
            gpu_speed = r["gpu_safetensors_s"] / r["gpu_wcodec_s"]
            lines.append(
                f"- {r['model']}: GPU load at {gpu_speed:.2f}x the speed of safetensors "
                f"(bar > 1x): {'PASS' if gpu_speed > 1 else 'FAIL'}"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", type=Path, action="append", help="safetensors file(s)")
    parser.add_argument("--gpu", action="store_true", help="also load to the GPU (torch)")
    parser.add_argument("--no-dask", action="store_true", help="skip the Dask convert")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = args.model or write_models(work)
        rows = [bench_model(m, work, args.repeats, args.gpu, not args.no_dask) for m in models]
    machine, kind = cpu_name(), "checkpoint"
    if args.gpu:
        import torch

        card = torch.cuda.get_device_name()
        machine, kind = f"{card} + {machine}", f"checkpoint-{card}"
    write_report(kind, report(rows, machine, args.gpu))


if __name__ == "__main__":
    main()
