"""GPU benchmark (run on the GPU machine): decode GB/s of output for MINILM_INT8 and MINILM_BF16
tiled to 256 MiB, as 4 MiB chunks and as a batch of random 1-4 MiB chunks, against the
device-to-device copy (the ceiling) and nvCOMP's ANS codec on the same data in the same run;
plus the time to load a sharded checkpoint from local disk into GPU memory against safetensors.
CUDA events, median of --repeats (after warm-up). Writes benchmarks/results/gpu-<card>-<date>.md.

    python benchmarks/bench_gpu.py [--repeats 20] [--mib 256] [--views int8 bf16]

The GPU machine is offline and takes a limited upload: export the views there as wcodec
chunks first (python benchmarks/bench_gpu.py --export DIR --views int8 [--skip REGEX]) and
run with --from DIR; the tensors skipped are named in the report.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import wcodec_zarr as wc
from wcodec_zarr.codec.gpu import PreparedBatch, storage_dtype
from wcodec_zarr.testing.weights import as_rows, minilm_views

try:  # --export runs where there is no GPU
    import cupy as cp
except ImportError:
    cp = None

RESULTS = Path(__file__).parent / "results"


def event_median(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    """Median seconds of fn on the current stream, by CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return float(statistics.median(times))


def tile(flat: np.ndarray, nbytes: int) -> np.ndarray:
    reps = -(-nbytes // flat.nbytes)
    return np.tile(flat, reps)[: nbytes // flat.dtype.itemsize]


def chunk_sizes(total: int, rng: np.random.Generator | None) -> list[int]:
    sizes = []
    left = total
    while left > 0:
        # random sizes in whole pages: output buffers must be 16-byte aligned
        size = 4 << 20 if rng is None else int(rng.integers(256, 1024)) * 4096
        sizes.append(min(size, left))
        left -= sizes[-1]
    return sizes


def bench_wcodec(data: np.ndarray, sizes: list[int], repeats: int) -> tuple[float, float, float]:
    """(output GB/s, the same without checking the CRC32C checksums, ratio) of one launch
    decoding all chunks, already on the device, into one output buffer (CUDA events around the
    launch only)."""
    item = data.dtype.itemsize
    flat = data.reshape(-1)
    out = cp.empty(flat.size, storage_dtype(flat.dtype))
    pieces, outs, at = [], [], 0
    for size in sizes:
        pieces.append(flat[at // item : (at + size) // item])
        outs.append(out[at // item : (at + size) // item])
        at += size
    encoded = [wc.encode(p) for p in pieces]
    batch = PreparedBatch(encoded, outs, None)
    unchecked = event_median(lambda: batch.launch(verify=False), repeats)
    seconds = event_median(batch.launch, repeats)
    batch.check()
    assert cp.asnumpy(out).tobytes() == flat.tobytes()
    ratio = data.nbytes / sum(len(e) for e in encoded)
    return data.nbytes / seconds / 1e9, data.nbytes / unchecked / 1e9, ratio


def bench_copy(nbytes: int, repeats: int) -> float:
    """cudaMemcpyAsync device to device: GB/s of bytes copied (each read once, written once)."""
    src = cp.empty(nbytes, cp.uint8)
    dst = cp.empty(nbytes, cp.uint8)
    stream = cp.cuda.get_current_stream()

    def copy() -> None:
        cp.cuda.runtime.memcpyAsync(
            dst.data.ptr, src.data.ptr, nbytes, cp.cuda.runtime.memcpyDeviceToDevice, stream.ptr
        )

    return nbytes / event_median(copy, repeats) / 1e9


def bench_nvcomp(data: np.ndarray, sizes: list[int], repeats: int) -> tuple[float, float] | str:
    """(output GB/s, ratio) of nvCOMP ANS (byte mode) batch decode; wall clock, because its
    Python API synchronises."""
    try:
        from nvidia import nvcomp
    except ImportError as exc:
        return f"nvCOMP unavailable: {exc}"
    flat = data.reshape(-1).view(np.uint8)
    device = cp.asarray(flat)
    pieces, at = [], 0
    for size in sizes:
        pieces.append(nvcomp.as_array(device[at : at + size]))
        at += size
    try:
        codec = nvcomp.Codec(algorithm="ANS")
        encoded = codec.encode(nvcomp.as_arrays(pieces))
        cp.cuda.get_current_stream().synchronize()
        decoded = codec.decode(encoded)
        cp.cuda.get_current_stream().synchronize()
    except Exception as exc:  # report, do not hide, a peer that does not run
        return f"nvCOMP ANS failed: {type(exc).__name__}: {exc}"
    got = cp.concatenate([cp.asarray(d).view(cp.uint8).reshape(-1) for d in decoded])
    assert cp.asnumpy(got).tobytes() == flat.tobytes()
    times = []
    for _ in range(repeats + 3):
        cp.cuda.Device().synchronize()
        start = time.perf_counter()
        codec.decode(encoded)
        cp.cuda.Device().synchronize()
        times.append(time.perf_counter() - start)
    ratio = flat.nbytes / sum(e.buffer_size for e in encoded)
    return flat.nbytes / statistics.median(times[3:]) / 1e9, ratio


def load_views(source: Path | None, names: list[str]) -> dict[str, dict[str, np.ndarray]]:
    if source is None:
        views = minilm_views()
        return {n: views[n] for n in names}
    return {
        n: {p.stem: wc.decode(p.read_bytes()) for p in sorted((source / n).glob("*.wcz"))}
        for n in names
    }


def export_views(target: Path, names: list[str], skip: str | None) -> None:
    views = minilm_views()
    for n in names:
        (target / n).mkdir(parents=True, exist_ok=True)
        for key, t in views[n].items():
            if skip is None or not re.search(skip, key):
                (target / n / f"{key}.wcz").write_bytes(wc.encode(t))


def zarr_gpu_loader(root: Path, tensors: dict[str, np.ndarray]) -> Callable[[], None]:
    """Writes ``tensors`` as a plain wcodec Zarr group (about 4 MiB chunks) and returns a
    function that reads every array through zarr's GPU pipeline."""
    import zarr
    from zarr.storage import LocalStore

    group = zarr.open_group(LocalStore(root), mode="w")
    for key, t in tensors.items():
        rows = max(1, min(t.shape[0], (4 << 20) // max(1, t[0].nbytes)))
        z = group.create_array(
            key,
            shape=t.shape,
            dtype=t.dtype,
            chunks=(rows, *t.shape[1:]),
            serializer=wc.WCodec(),
            compressors=None,
        )
        z[:] = t

    def load() -> None:
        with zarr.config.enable_gpu(), zarr.config.set({"codec_pipeline.batch_size": 64}):
            g = zarr.open_group(LocalStore(root), mode="r")
            for key in tensors:
                array = g[key]
                assert isinstance(array, zarr.Array)
                array[...]
        cp.cuda.Device().synchronize()

    return load


def bench_checkpoint(views: dict[str, dict[str, np.ndarray]], repeats: int) -> list[str]:
    """A whole model view from local disk into GPU memory: a checkpoint made by ``convert``
    through ``load_checkpoint(device="cuda", framework="torch")`` (one staging read, one upload,
    one launch), and a plain wcodec Zarr group read through zarr under
    zarr.config.enable_gpu() (per-chunk pipeline), against
    safetensors.torch.load_file(device='cuda'). The bf16 view has no zarr GPU row: CuPy has
    no bfloat16, so zarr's GPU buffers cannot hold it."""
    import safetensors.numpy
    import safetensors.torch
    import torch

    lines = []
    for name, tensors in views.items():
        with tempfile.TemporaryDirectory() as tmp:
            st_path = Path(tmp) / "model.safetensors"
            safetensors.numpy.save_file(tensors, st_path)
            wc.convert(st_path, Path(tmp) / "checkpoint.zarr", progress=False)

            def load_checkpoint(root: Path = Path(tmp) / "checkpoint.zarr") -> None:
                wc.load_checkpoint(root, device="cuda", framework="torch")
                torch.cuda.synchronize()

            def load_safetensors(path: Path = st_path) -> None:
                safetensors.torch.load_file(path, device="cuda")
                torch.cuda.synchronize()

            loaders: list[tuple[str, Callable[[], None]]] = [
                ("checkpoint", load_checkpoint),
                ("safetensors", load_safetensors),
            ]
            if name != "bf16":
                loaders.append(("wcodec zarr", zarr_gpu_loader(Path(tmp) / "model.zarr", tensors)))
            results = {}
            for label, fn in loaders:
                fn()
                times = []
                for _ in range(min(repeats, 10)):
                    start = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - start)
                results[label] = statistics.median(times)
            raw = sum(t.nbytes for t in tensors.values())
            zarr_ms = f"{1e3 * results['wcodec zarr']:.1f}" if "wcodec zarr" in results else "-"
            lines.append(
                f"| MiniLM {name} ({raw / 1e6:.1f} MB) | {1e3 * results['checkpoint']:.1f} | "
                f"{zarr_ms} | {1e3 * results['safetensors']:.1f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--views", nargs="+", default=["int8", "bf16"], choices=["int8", "bf16"])
    parser.add_argument("--from", dest="source", type=Path, help="views exported with --export")
    parser.add_argument("--export", type=Path, help="write the views as wcodec chunks and exit")
    parser.add_argument("--skip", help="with --export: leave out tensors whose name matches")
    args = parser.parse_args()
    if args.export is not None:
        export_views(args.export, args.views, args.skip)
        return
    card = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    views = load_views(args.source, args.views)
    nbytes = args.mib << 20
    datasets = {
        f"MINILM_{n.upper()}": tile(as_rows(tensors).reshape(-1), nbytes)
        for n, tensors in views.items()
    }
    tensors_used = "; ".join(
        f"{n}: {len(t)} tensors, {sum(a.nbytes for a in t.values()) / 1e6:.1f} MB"
        for n, t in views.items()
    )
    copy = bench_copy(nbytes, args.repeats)
    rows = [f"| device-to-device copy | | {copy:.0f} | | | |"]
    bars = []
    for name, data in datasets.items():
        for label, rng in (("4 MiB chunks", None), ("1-4 MiB chunks", np.random.default_rng(0))):
            sizes = chunk_sizes(data.nbytes, rng)
            gbs, unchecked, ratio = bench_wcodec(data, sizes, args.repeats)
            nv = bench_nvcomp(data, sizes, args.repeats)
            if isinstance(nv, str):
                nv_cell, nv_ratio, speedup = nv, "", float("nan")
            else:
                nv_cell, nv_ratio, speedup = f"{nv[0]:.0f}", f"{nv[1]:.4f}", gbs / nv[0]
            cells = [
                f"{name}, {label} ({len(sizes)})",
                f"{ratio:.4f}",
                f"{gbs:.0f}",
                f"{unchecked:.0f}",
                nv_ratio,
                nv_cell,
            ]
            rows.append("| " + " | ".join(cells) + " |")
            bars.append((f"{name} {label}: >= 2x nvCOMP ANS ({speedup:.2f}x)", speedup >= 2))
        if name == "MINILM_INT8":
            bars.append(
                ("MINILM_INT8 4 MiB chunks: >= 800 GB/s", float(rows[1].split("|")[3]) >= 800)
            )
    checkpoint = bench_checkpoint(views, args.repeats)
    text = "\n".join(
        [
            f"# GPU benchmark, {datetime.date.today().isoformat()}",
            "",
            f"GPU: {card}; wcodec {wc.__version__}; data tiled to {args.mib} MiB; CUDA events, "
            f"median of {args.repeats} after 3 warm-ups (nvCOMP: wall clock around its "
            f"synchronising Python call). GB/s are of decoded output. MiniLM views used: "
            f"{tensors_used}.",
            "Command: `python benchmarks/bench_gpu.py`",
            "",
            "| data (chunks) | wcodec ratio | wcodec GB/s | wcodec GB/s, checksums not checked "
            "| nvCOMP ANS ratio | nvCOMP ANS GB/s |",
            "|---|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Whole checkpoint from local disk (page cache warm) into GPU memory, ms:",
            "",
            "| model | wcodec load_checkpoint(device='cuda') | wcodec Zarr, enable_gpu "
            "| safetensors.torch.load_file(device='cuda') |",
            "|---|---:|---:|---:|",
            *checkpoint,
            "",
            "Bars:",
            "",
            *[f"- [{'x' if ok else ' '}] {t}" for t, ok in bars],
            "",
        ]
    )
    print(text)
    RESULTS.mkdir(exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", card.lower()).strip("-")
    suffix = "-".join(args.views)
    (RESULTS / f"gpu-{slug}-{suffix}-{datetime.date.today().isoformat()}.md").write_text(text)


if __name__ == "__main__":
    main()
