"""Whole-model loads at LLM scale, against the plain and the fast safetensors loaders, in one run.

Generates a Llama-shaped model of --size-gb (4096x4096 attention, 14336x4096 MLP, a
128256x4096 embedding from 4 GB on, norms): bfloat16 N(0, 0.02) and a per-row int8 variant;
converts each; then loads it whole

- to the GPU (where CuPy, PyTorch and a GPU are): wcodec ``load_checkpoint`` and
  ``iter_tensors``; ``safetensors.torch.load_file(device="cuda")``; the file read into pinned
  memory in 256 MiB pieces with non-blocking copies (the fastest plain-safetensors path);
  fastsafetensors (``fastsafe_open``, no GDS); the Run:ai Model Streamer (to the CPU, each tensor
  copied up);
- to the CPU: wcodec, and ``safetensors.torch.load_file`` (or the file read whole, without
  PyTorch);
- from the page cache, and from a cold cache (``drop_caches`` as root, else each file evicted
  with ``posix_fadvise(DONTNEED)``);
- from the loopback S3 server (``wcodec_zarr.testing.ProcessS3``) limited to --s3-mbps: wcodec's
  loads against fetching the same objects concurrently with s3fs (the floor), and the
  safetensors file fetched whole.

Each row runs in a child process of its own: seconds (best of --repeats), GB/s of output, the
rise of its peak host RSS (VmHWM) and its peak device memory (CUDA's used memory sampled every
millisecond, or the allocator pools' reservations where larger). Every result is compared bit for
bit (CRC-32 of every tensor) with the source file. Writes benchmarks/results/load-*.md.

    python benchmarks/bench_load.py [--size-gb 8] [--dtype bf16 int8] [--workdir DIR]
        [--repeats 3] [--s3-mbps 100] [--window-mb 256] [--no-gpu] [--no-cold] [--no-s3]
        [--only REGEX]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from report import cpu_name, write_report

HIDDEN, MLP, VOCAB = 4096, 14336, 128256
PIECE = 256 << 20


def crc(data: Any) -> int:
    return zlib.crc32(np.ascontiguousarray(data).view(np.uint8).data)


# ----------------------------------------------------------------------------- the model


def shapes(size: int) -> list[tuple[str, tuple[int, ...]]]:
    """Llama-shaped tensors of about ``size`` bytes of bfloat16."""
    out: list[tuple[str, tuple[int, ...]]] = []
    total = 0
    if size >= 4 << 30:
        out.append(("model.embed_tokens.weight", (VOCAB, HIDDEN)))
        total += VOCAB * HIDDEN * 2
    layer = 0
    while total < size:
        p = f"model.layers.{layer}"
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out.append((f"{p}.self_attn.{name}.weight", (HIDDEN, HIDDEN)))
        for name, shape in (("gate_proj", (MLP, HIDDEN)), ("up_proj", (MLP, HIDDEN))):
            out.append((f"{p}.mlp.{name}.weight", shape))
        out.append((f"{p}.mlp.down_proj.weight", (HIDDEN, MLP)))
        out += [(f"{p}.input_layernorm.weight", (HIDDEN,))]
        out += [(f"{p}.post_attention_layernorm.weight", (HIDDEN,))]
        total += (4 * HIDDEN * HIDDEN + 3 * MLP * HIDDEN + 2 * HIDDEN) * 2
        layer += 1
    out.append(("model.norm.weight", (HIDDEN,)))
    return out


def _values(seed: int, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, np.float32)
    if dtype == "int8":
        if len(shape) == 1:
            return np.clip(np.rint(x * 20), -127, 127).astype(np.int8)
        x *= 127 / np.abs(x).max(axis=1, keepdims=True)
        return np.rint(x).astype(np.int8)
    if len(shape) == 1:
        x = 1 + 0.02 * x
    else:
        x *= 0.02
    bits = x.view(np.uint32)
    # round to nearest even, as a float32 -> bfloat16 cast does
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def generate(path: Path, size: int, dtype: str) -> None:
    """Writes the model tensor by tensor (generated on every core), never holding it whole."""
    code = {"bf16": "BF16", "int8": "I8"}[dtype]
    width = 2 if dtype == "bf16" else 1
    tensors = shapes(size)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * width
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as f, ThreadPoolExecutor(os.cpu_count()) as pool:
        f.write(len(text).to_bytes(8, "little") + text)
        jobs = [(i, shape) for i, (_, shape) in enumerate(tensors)]
        step = os.cpu_count() or 1
        for start in range(0, len(jobs), step):
            batch = jobs[start : start + step]
            for data in pool.map(lambda job: _values(job[0], job[1], dtype), batch):
                f.write(data.view(np.uint8).data)
    partial.rename(path)


def source_crcs(path: Path) -> dict[str, int]:
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = np.memmap(path, np.uint8, "r", offset=8 + n)
    return {
        name: crc(data[info["data_offsets"][0] : info["data_offsets"][1]])
        for name, info in header.items()
        if name != "__metadata__"
    }


def evict(paths: list[Path]) -> str:
    """Drops the files from the page cache: all caches as root, else file by file."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        pass
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for file in files:
            fd = os.open(file, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return "posix_fadvise(DONTNEED)"


# ----------------------------------------------------------------------------- one row


def high_water() -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(match.group(1)) * 1024 if match else 0


def reset_high_water() -> None:
    with contextlib.suppress(OSError):  # 5 resets VmHWM to the current RSS (Linux 4.0 on)
        Path("/proc/self/clear_refs").write_text("5\n")


class DeviceSampler:
    """Peak used device memory above the start, sampled every millisecond."""

    def __init__(self) -> None:
        import cupy as cp

        self.cp = cp
        free, total = cp.cuda.runtime.memGetInfo()
        self.base = total - free
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            free, total = self.cp.cuda.runtime.memGetInfo()
            self.peak = max(self.peak, total - free - self.base)
            time.sleep(0.001)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _to_host(value: Any) -> np.ndarray:
    if hasattr(value, "__cuda_array_interface__") and not hasattr(value, "cpu"):
        return np.asarray(value.get())
    if hasattr(value, "cpu"):  # torch
        import torch

        host: np.ndarray = value.detach().cpu().contiguous().view(torch.uint8).numpy()
        return host
    return np.asarray(value)


def _sync() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    except ImportError:
        pass
    try:
        import cupy as cp

        cp.cuda.Device().synchronize()
    except Exception:
        pass


def _read_pinned(path: str) -> dict[str, Any]:
    """The safetensors file read into pinned memory in pieces, each copied to the GPU with a
    non-blocking copy while the next is read; tensors are views of one device buffer."""
    import torch

    with open(path, "rb", buffering=0) as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        size = max(info["data_offsets"][1] for info in header.values())
        device = torch.empty(size, dtype=torch.uint8, device="cuda")
        global _PINNED
        if _PINNED is None:  # reused across repeats, as a loader would keep it
            _PINNED = [torch.empty(PIECE, dtype=torch.uint8).pin_memory() for _ in range(2)]
        events = [torch.cuda.Event(), torch.cuda.Event()]
        stream = torch.cuda.Stream()
        for i, start in enumerate(range(0, size, PIECE)):
            k = i % 2
            events[k].synchronize()
            buf = _PINNED[k][: min(PIECE, size - start)]
            f.readinto(memoryview(buf.numpy()))
            with torch.cuda.stream(stream):
                device[start : start + buf.numel()].copy_(buf, non_blocking=True)
                events[k].record(stream)
        stream.synchronize()
    dtypes = {"BF16": torch.bfloat16, "I8": torch.int8, "F32": torch.float32}
    out = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        out[name] = device[a:b].view(dtypes[info["dtype"]]).view(info["shape"])
    return out


_PINNED: list[Any] | None = None


def _runai(path: str) -> dict[str, Any]:
    from runai_model_streamer import SafetensorsStreamer  # type: ignore[import-not-found]

    out = {}
    with SafetensorsStreamer() as streamer:
        streamer.stream_file(path)
        for name, tensor in streamer.get_tensors():
            out[name] = tensor.to("cuda", non_blocking=True)
    return out


def _touched(tensors: dict[str, Any]) -> dict[str, Any]:
    """The tensors with every page read (``load_file`` maps the file: a page is read when
    touched), as a load that hands over tensors in memory has done."""
    import torch

    for t in tensors.values():
        t.reshape(-1).view(torch.uint8)[::4096].sum()
    return tensors


def _fastsafetensors(path: str) -> dict[str, Any]:
    from fastsafetensors import fastsafe_open  # type: ignore[import-not-found]

    with fastsafe_open([path], device="cuda:0", nogds=True) as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)


def _iter(url: str, device: str, options: Any, window: int) -> tuple[dict[str, Any], float]:
    import wcodec_zarr as wc

    start = time.perf_counter()
    out: dict[str, Any] = {}
    first = 0.0
    ckpt = wc.open_checkpoint(url, storage_options=options)
    framework = "torch" if device == "cuda" else None
    for name, value in ckpt.iter_tensors(device=device, framework=framework, window=window):
        if not out:
            _sync()
            first = time.perf_counter() - start
        out[name] = value
    return out, first


def run_row(kind: str, source: str, options: Any, repeats: int, window: int) -> dict[str, Any]:
    """One loader ``repeats`` times in this process; the best time, memory and the CRCs."""
    import wcodec_zarr as wc

    loaders: dict[str, Callable[[], Any]] = {
        "wcodec-cuda": lambda: wc.load_checkpoint(
            source, device="cuda", framework="torch", storage_options=options, window=window
        ),
        "wcodec-iter-cuda": lambda: _iter(source, "cuda", options, window),
        "wcodec-cpu": lambda: wc.load_checkpoint(source, storage_options=options, window=window),
        "wcodec-iter-cpu": lambda: _iter(source, "cpu", options, window),
        "safetensors-cuda": lambda: __import__("safetensors.torch").torch.load_file(
            source, device="cuda"
        ),
        "safetensors-pinned-cuda": lambda: _read_pinned(source),
        "fastsafetensors-cuda": lambda: _fastsafetensors(source),
        "runai-cuda": lambda: _runai(source),
        "safetensors-cpu": lambda: _touched(
            __import__("safetensors.torch").torch.load_file(source)
        ),
        "read-cpu": lambda: [np.fromfile(source, np.uint8)],
        "s3fs-fetch-objects": lambda: _fetch_all(source, options),
        "s3fs-fetch-file": lambda: _fetch_file(source, options),
    }
    gpu = kind.endswith("cuda")
    if gpu:
        import cupy as cp
        import torch

        torch.empty(1, device="cuda")
        cp.empty(1)
    evicting = bool(os.environ.get("BENCH_EVICT"))
    best, first, peak_host, peak_device, result = float("inf"), 0.0, 0, 0, None
    for _ in range(repeats):
        result = None
        if evicting:
            evict([Path(p) for p in os.environ["BENCH_EVICT"].split(os.pathsep)])
        _sync()
        reset_high_water()
        host0 = high_water()
        sampler = DeviceSampler() if gpu else None
        start = time.perf_counter()
        result = loaders[kind]()
        _sync()
        seconds = time.perf_counter() - start
        if sampler is not None:
            import cupy as cp
            import torch

            pools = cp.get_default_memory_pool().total_bytes() + torch.cuda.max_memory_reserved()
            peak_device = max(peak_device, sampler.stop(), pools)
        peak_host = max(peak_host, high_water() - host0)
        if isinstance(result, tuple):
            result, first_s = result
            first = first_s if seconds < best else first
        best = min(best, seconds)
    assert result is not None
    if isinstance(result, list):  # bytes, not tensors
        crcs: dict[str, int] = {}
        nbytes = sum(int(v.size) for v in result)
    else:
        crcs = {name: crc(_to_host(value).view(np.uint8)) for name, value in result.items()}
        nbytes = sum(int(_to_host(v).nbytes) for v in result.values())
    return {
        "seconds": best,
        "first": first,
        "nbytes": nbytes,
        "host": peak_host,
        "device": peak_device,
        "crcs": crcs,
    }


def _fetch_all(url: str, options: Any) -> list[np.ndarray]:
    """Every stored object of the checkpoint at once, concurrently (s3fs's batched cat)."""
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    paths = [p for p in fs.find(url.removeprefix("s3://")) if re.search(r"/c\.[\d.]+$", p)]
    got = fs.cat(paths, batch_size=len(paths))
    return [np.frombuffer(got[p], np.uint8) for p in paths]


def interleaved(url: str, options: Any, repeats: int) -> dict[str, Any]:
    """A whole load and the concurrent fetch of the same objects, alternated in one process
    after a load that opens the connections: the ratio of each pair (the server shares the
    machine, whose speed drifts between processes)."""
    import wcodec_zarr as wc

    wc.load_checkpoint(url, storage_options=options)
    ratios = []
    for _ in range(repeats):
        start = time.perf_counter()
        _fetch_all(url, options)
        floor = time.perf_counter() - start
        start = time.perf_counter()
        wc.load_checkpoint(url, storage_options=options)
        ratios.append((time.perf_counter() - start) / floor)
    return {"ratios": ratios}


def _fetch_file(url: str, options: Any) -> list[np.ndarray]:
    import s3fs

    fs = s3fs.S3FileSystem(**options, skip_instance_cache=True)
    return [np.frombuffer(fs.cat_file(url.removeprefix("s3://")), np.uint8)]


# ----------------------------------------------------------------------------- the run


def child(
    kind: str,
    source: Any,
    options: Any,
    repeats: int,
    window: int,
    evict_paths: list[Path],
    env_extra: dict[str, str] | None = None,
) -> dict[str, Any]:
    env = dict(os.environ) | (env_extra or {})
    if evict_paths:
        env["BENCH_EVICT"] = os.pathsep.join(str(p) for p in evict_paths)
    args = [sys.executable, __file__, "--row", kind, "--source", str(source)]
    args += ["--options", json.dumps(options), "--repeats", str(repeats), "--window", str(window)]
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    if run.returncode != 0:
        lines = (run.stderr or run.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {run.returncode}"}
    report: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return report


def available(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gb", type=float, default=8.0)
    parser.add_argument("--dtype", nargs="+", default=["bf16", "int8"], choices=["bf16", "int8"])
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--s3-mbps", type=float, default=100.0)
    parser.add_argument("--window-mb", type=float, default=256.0)
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--no-cold", action="store_true")
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--only", help="run the rows whose label matches this regex")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="null", help=argparse.SUPPRESS)
    parser.add_argument("--window", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row == "interleaved":
        print(json.dumps(interleaved(args.source, json.loads(args.options), args.repeats)))
        return
    if args.row:
        report = run_row(args.row, args.source, json.loads(args.options), args.repeats, args.window)
        print(json.dumps(report))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-load-"))
    workdir.mkdir(parents=True, exist_ok=True)
    window = int(args.window_mb * 2**20)
    gpu = not args.no_gpu and available("cupy") and available("torch") and _gpu_here()
    lines = [
        f"# Whole-model loads, {args.size_gb:g} GB Llama-shaped model",
        "",
        f"CPU: {cpu_name()} ({os.cpu_count()} cores)" + (f"; GPU: {_gpu_name()}" if gpu else ""),
        f"window {args.window_mb:g} MiB; best of {args.repeats}; cold rows: each repeat evicted",
        "",
    ]
    for dtype in args.dtype:  # the report so far after each dtype, should a run be cut short
        lines += run_dtype(args, dtype, workdir, window, gpu)
        write_report(f"load-{args.size_gb:g}gb", "\n".join(lines) + "\n")


def _gpu_here() -> bool:
    try:
        import wcodec_zarr as wc

        return wc.gpu_available()
    except Exception:
        return False


def _gpu_name() -> str:
    import cupy as cp

    return str(cp.cuda.runtime.getDeviceProperties(0)["name"].decode())


def run_dtype(args: Any, dtype: str, workdir: Path, window: int, gpu: bool) -> list[str]:
    import wcodec_zarr as wc

    model = workdir / f"model-{dtype}.safetensors"
    ckpt = workdir / f"model-{dtype}.zarr"
    if not model.exists():
        start = time.perf_counter()
        generate(model, int(args.size_gb * 1e9), dtype)
        print(f"generated {model} in {time.perf_counter() - start:.1f} s", flush=True)
    if not ckpt.exists():
        start = time.perf_counter()
        wc.convert(model, ckpt, progress=False)
        print(f"converted in {time.perf_counter() - start:.1f} s", flush=True)
    expected = source_crcs(model)
    size = model.stat().st_size
    stored = wc.open_checkpoint(ckpt).stored_nbytes
    rows: list[tuple[str, str, dict[str, Any]]] = []

    def row(
        label: str,
        kind: str,
        source: Any,
        options: Any = None,
        cold: list[Path] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        if args.only and not re.search(args.only, label):
            return
        print(f"{dtype}: {label}", flush=True)
        repeats = 1 if cold else args.repeats
        report = child(kind, source, options, repeats, window, cold or [], env)
        rows.append((label, kind, report))
        # each row as it comes, should a run be cut short before its table
        print({k: v for k, v in report.items() if k != "crcs"}, flush=True)

    caches = [("page cache", None)] + ([] if args.no_cold else [("cold", [model, ckpt])])
    for cache, cold in caches:
        if gpu:
            row(f"GPU, {cache}: wcodec load_checkpoint", "wcodec-cuda", ckpt, None, cold)
            row(f"GPU, {cache}: wcodec iter_tensors", "wcodec-iter-cuda", ckpt, None, cold)
            row(f"GPU, {cache}: safetensors load_file(cuda)", "safetensors-cuda", model, None, cold)
            row(
                f"GPU, {cache}: safetensors via pinned pieces",
                "safetensors-pinned-cuda",
                model,
                None,
                cold,
            )
            # fastsafetensors reads with O_DIRECT by default (past the page cache), buffered
            # with FASTSAFETENSORS_ODIRECT=0: both, its best is either
            peers: tuple[tuple[str, str, str, dict[str, str]], ...] = (
                ("fastsafetensors (O_DIRECT)", "fastsafetensors-cuda", "fastsafetensors", {}),
                (
                    "fastsafetensors (buffered)",
                    "fastsafetensors-cuda",
                    "fastsafetensors",
                    {"FASTSAFETENSORS_ODIRECT": "0"},
                ),
                ("Run:ai Model Streamer", "runai-cuda", "runai_model_streamer", {}),
            )
            for text, peer, module, env in peers:
                if available(module):
                    row(f"GPU, {cache}: {text}", peer, model, None, cold, env)
                else:
                    rows.append((f"GPU, {cache}: {text}", peer, {"error": f"{module} missing"}))
        row(f"CPU, {cache}: wcodec load_checkpoint", "wcodec-cpu", ckpt, None, cold)
        if available("torch"):
            text = "safetensors load_file (a mapping: every page touched)"
            row(f"CPU, {cache}: {text}", "safetensors-cpu", model, None, cold)
        else:
            row(
                f"CPU, {cache}: the file read whole (no PyTorch here)",
                "read-cpu",
                model,
                None,
                cold,
            )
    if not args.no_s3 and available("moto") and available("s3fs"):
        rows += s3_rows(args, dtype, model, window)
    lines = [
        f"## {dtype}: {size / 1e9:.2f} GB safetensors, {stored / 1e9:.2f} GB stored "
        f"(ratio {size / stored:.3f})",
        "",
        "| load | s | GB/s of output | vs safetensors | peak host RSS rise (MiB) "
        "| peak device (MiB) | bit-exact |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    baselines = {
        label.split(":")[0]: r["seconds"]
        for label, kind, r in rows
        if kind in ("safetensors-cuda", "safetensors-cpu", "read-cpu", "s3fs-fetch-file")
        and "seconds" in r
    }
    for label, kind, r in rows:
        if kind == "interleaved":
            continue
        if "error" in r:
            lines.append(f"| {label} | did not run: {r['error'][:150]} | | | | | |")
            continue
        exact = "n/a (bytes)" if not r["crcs"] else str(r["crcs"] == expected)
        base = baselines.get(label.split(":")[0])
        ratio = f"{base / r['seconds']:.2f}x" if base else ""
        first = f" (first tensor {r['first']:.2f} s)" if r.get("first") else ""
        lines.append(
            f"| {label} | {r['seconds']:.2f}{first} | {r['nbytes'] / r['seconds'] / 1e9:.2f} | "
            f"{ratio} | {r['host'] / 2**20:.0f} | {r['device'] / 2**20:.0f} | {exact} |"
        )
    for label, kind, r in rows:
        if kind == "interleaved" and "ratios" in r:
            ratios = ", ".join(f"{x:.3f}" for x in r["ratios"])
            lines.append(
                f"- {label}: median {sorted(r['ratios'])[len(r['ratios']) // 2]:.3f} ({ratios})"
            )
    floor = next((r for _, k, r in rows if k == "s3fs-fetch-objects" and "seconds" in r), None)
    if floor is not None:
        for label, kind, r in rows:
            if kind.startswith("wcodec") and label.startswith("S3") and "seconds" in r:
                lines.append(
                    f"- {label}: {r['seconds'] / floor['seconds']:.2f}x the time of fetching the "
                    f"same objects concurrently; memory beyond the output "
                    f"{(r['host'] - r['nbytes']) / 2**20:.0f} MiB"
                )
    return [*lines, ""]


def s3_rows(
    args: Any, dtype: str, model: Path, window: int
) -> list[tuple[str, str, dict[str, Any]]]:
    import wcodec_zarr as wc
    from wcodec_zarr.testing import ProcessS3

    rows = []
    label = f"S3 at {args.s3_mbps:g} MB/s"
    with ProcessS3() as s3:
        s3.create_bucket("models")
        options = s3.storage_options()
        url = f"s3://models/{dtype}.zarr"
        wc.convert(model, url, storage_options=options, progress=False)
        import s3fs

        s3fs.S3FileSystem(**options).put_file(str(model), f"models/{dtype}.safetensors")
        s3.set_bandwidth(args.s3_mbps * 1e6)
        for text, kind, source in (
            ("s3fs: every stored object fetched concurrently (floor)", "s3fs-fetch-objects", url),
            ("wcodec load_checkpoint (CPU)", "wcodec-cpu", url),
            ("wcodec iter_tensors (CPU)", "wcodec-iter-cpu", url),
            (
                "s3fs: the safetensors file fetched whole",
                "s3fs-fetch-file",
                f"s3://models/{dtype}.safetensors",
            ),
        ):
            print(f"{dtype}: {label}: {text}", flush=True)
            rows.append(
                (f"{label}: {text}", kind, child(kind, source, options, args.repeats, window, []))
            )
        print(f"{dtype}: {label}: interleaved", flush=True)
        pairs = child("interleaved", url, options, 2 * args.repeats, window, [])
        rows.append((f"{label}: load / floor, interleaved in one process", "interleaved", pairs))
    return rows


if __name__ == "__main__":
    main()
