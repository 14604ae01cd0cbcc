"""GPU benchmark (run on the GPU machine): decode GB/s of output for every dtype view of MiniLM
tiled to 256 MiB, as 4 MiB chunks and as a batch of random 1-4 MiB chunks, against the
device-to-device copy (the ceiling) and nvCOMP's ANS codec at its best on the same bytes in the
same run (one buffer and a list of chunks, byte mode and, for 2-byte data, its float16 mode; CUDA
events on the codec's stream); the batch APIs on host and on device-resident chunks; one large
sharded array read through zarr's GPU pipeline; and the time to load a sharded checkpoint from
local disk into GPU memory against safetensors. Writes benchmarks/results/gpu-<card>-<date>.md.

    python benchmarks/bench_gpu.py [--repeats 20] [--mib 256] [--views int8 uint8 ...]

The views (VIEWS below) are derived from MiniLM's fp32 weights. The GPU machine is offline and
takes a limited upload: export the fp32 weights there as wcodec chunks first
(python benchmarks/bench_gpu.py --export DIR [--skip REGEX]) and run with --from DIR; the
tensors skipped are named in the report.
"""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

import wcodec_zarr as wc
from wcodec_zarr.codec.gpu import PreparedBatch, storage_dtype
from wcodec_zarr.testing.weights import Tensors, as_rows, minilm_views, quantize_int8_per_row

try:  # --export runs where there is no GPU
    import cupy as cp
except ImportError:
    cp = None

RESULTS = Path(__file__).parent / "results"

# name: how the view is made from the fp32 weights
VIEWS = {
    "int8": "2-D weights, symmetric int8 per output row (MINILM_INT8)",
    "uint8": "MINILM_INT8 stored as uint8 with zero point 128",
    "skew8": "2-D weights, uint8 with zero point 128, one absmax scale per tensor (skewed)",
    "fp8": "2-D weights as float8_e4m3fn, one scale per tensor mapping absmax to 448",
    "bf16": "float tensors rounded to bfloat16 (MINILM_BF16)",
    "fp32": "float tensors as shipped",
}


def make_views(fp32: Tensors, names: list[str]) -> dict[str, Tensors]:
    floats = {k: t for k, t in fp32.items() if np.issubdtype(t.dtype, np.floating)}
    weights = {k: t for k, t in floats.items() if t.ndim == 2}
    int8: Tensors = {k: quantize_int8_per_row(t) for k, t in weights.items()}

    def per_tensor(t: np.ndarray) -> np.ndarray:
        absmax = float(np.abs(t).max()) or 1.0
        q = np.clip(np.rint(t / (absmax / 127)), -127, 127).astype(np.int16) + 128
        return q.astype(np.uint8)

    def fp8(t: np.ndarray) -> np.ndarray:
        absmax = float(np.abs(t).max()) or 1.0
        return (t * (448 / absmax)).astype(ml_dtypes.float8_e4m3fn)

    make: dict[str, Callable[[], Tensors]] = {
        "int8": lambda: int8,
        "uint8": lambda: {k: (q.view(np.uint8) ^ 0x80) for k, q in int8.items()},
        "skew8": lambda: {k: per_tensor(t) for k, t in weights.items()},
        "fp8": lambda: {k: fp8(t) for k, t in weights.items()},
        "bf16": lambda: {k: t.astype(ml_dtypes.bfloat16) for k, t in floats.items()},
        "fp32": lambda: floats,
    }
    return {n: make[n]() for n in names}


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


def bench_nvcomp(
    data: np.ndarray, sizes: list[int], repeats: int
) -> dict[str, tuple[float, float]] | str:
    """nvCOMP ANS decode, {mode: (output GB/s, ratio)}: the data as one buffer and as a list of
    the same chunks as wcodec's, in byte mode and (2-byte data) in its float16 mode; CUDA events
    around the synchronous decode call on the codec's stream, like wcodec's."""
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
    stream = cp.cuda.get_current_stream()
    types = ["|u1"] + (["<f2"] if data.dtype.itemsize == 2 else [])
    results: dict[str, tuple[float, float]] = {}
    errors = []
    for data_type in types:
        for layout, source in (
            ("one buffer", nvcomp.as_array(device)),
            ("list", nvcomp.as_arrays(pieces)),
        ):
            label = f"{layout}, {'float16' if data_type == '<f2' else 'bytes'}"
            try:
                codec = nvcomp.Codec(algorithm="ANS", data_type=data_type, cuda_stream=stream.ptr)
                encoded = codec.encode(source)
                decoded = codec.decode(encoded)
                outs = decoded if layout == "list" else [decoded]
                got = cp.concatenate([cp.asarray(d).view(cp.uint8).reshape(-1) for d in outs])
                assert cp.asnumpy(got).tobytes() == flat.tobytes()
                seconds = event_median(partial(codec.decode, encoded), repeats)
            except Exception as exc:  # report, do not hide, a mode that does not run
                errors.append(f"{label}: {type(exc).__name__}: {exc}")
                continue
            stored = (
                sum(e.buffer_size for e in encoded) if layout == "list" else encoded.buffer_size
            )
            results[label] = (flat.nbytes / seconds / 1e9, flat.nbytes / stored)
    return results or "; ".join(errors)


def bench_apis(data: np.ndarray, sizes: list[int], repeats: int) -> dict[str, float]:
    """Wall-clock GB/s of output (median, synchronised) of the batch APIs on the same chunks:
    PreparedBatch made from host bytes (upload and plan) plus one launch; decode_batch on host
    bytes; decode_batch on the chunks already in device memory."""
    item = data.dtype.itemsize
    flat = data.reshape(-1)
    hosts, at = [], 0
    for size in sizes:
        hosts.append(np.frombuffer(wc.encode(flat[at // item : (at + size) // item]), np.uint8))
        at += size
    devices = [cp.asarray(h) for h in hosts]

    def prepared() -> None:
        batch = PreparedBatch(hosts, None, None)
        batch.launch()
        batch.check()

    def wall(fn: Callable[[], Any]) -> float:
        fn()
        times = []
        for _ in range(min(repeats, 10)):
            cp.cuda.Device().synchronize()
            start = time.perf_counter()
            fn()
            cp.cuda.Device().synchronize()
            times.append(time.perf_counter() - start)
        return data.nbytes / statistics.median(times) / 1e9

    got = wc.decode_batch(devices, device="cuda")
    for g, h in zip(got, hosts, strict=True):
        assert cp.asnumpy(g).tobytes() == wc.decode(h).tobytes()
    return {
        "PreparedBatch from host bytes + launch": wall(prepared),
        "decode_batch, host bytes": wall(lambda: wc.decode_batch(hosts, device="cuda")),
        "decode_batch, device chunks": wall(lambda: wc.decode_batch(devices, device="cuda")),
    }


# the reader configuration the README recommends for GPU reads through zarr
READER_CONFIG = {"codec_pipeline.batch_size": 64, "async.concurrency": 16}


def bench_zarr_array(data: np.ndarray, repeats: int) -> list[str]:
    """One 14336x4096 array (an MLP weight's shape) of the view, 1 MiB inner chunks, read whole
    through zarr under zarr.config.enable_gpu() and READER_CONFIG, sharded (32 MiB shards) and
    not: GB/s."""
    import zarr
    from zarr.storage import LocalStore

    shape = (14336, 4096)
    values = tile(data.reshape(-1), shape[0] * shape[1] * data.dtype.itemsize).reshape(shape)
    rows = (1 << 20) // (shape[1] * data.dtype.itemsize)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, shards in (("sharded", (32 * rows, shape[1])), ("unsharded", None)):
            root = Path(tmp) / label
            z = zarr.create_array(
                LocalStore(root),
                shape=shape,
                dtype=values.dtype,
                chunks=(rows, shape[1]),
                shards=shards,
                serializer=wc.WCodec(),
                compressors=None,
            )
            z[:] = values

            def read(root: Path = root) -> Any:
                with zarr.config.enable_gpu(), zarr.config.set(READER_CONFIG):
                    out = zarr.open_array(LocalStore(root), mode="r")[...]
                cp.cuda.Device().synchronize()
                return out

            got = read()
            assert isinstance(got, cp.ndarray) and cp.asnumpy(got).tobytes() == values.tobytes()
            times = []
            for _ in range(min(repeats, 10)):
                start = time.perf_counter()
                read()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            lines.append(
                f"| {label}, {values.dtype}, {shape[0]}x{shape[1]}, 1 MiB chunks | "
                f"{1e3 * seconds:.1f} | {values.nbytes / seconds / 1e9:.1f} |"
            )
    return lines


SKIPPED = "skipped.txt"  # in an export: the float tensors left out, one name a line


def load_fp32(source: Path | None) -> Tensors:
    if source is None:
        return minilm_views()["fp32"]
    return {p.stem: wc.decode(p.read_bytes()) for p in sorted(source.glob("*.wcz"))}


def export_fp32(target: Path, skip: str | None) -> None:
    target.mkdir(parents=True, exist_ok=True)
    skipped = []
    for key, t in minilm_views()["fp32"].items():
        if not np.issubdtype(t.dtype, np.floating):
            continue
        if skip is not None and re.search(skip, key):
            skipped.append(key)
        else:
            (target / f"{key}.wcz").write_bytes(wc.encode(t))
    (target / SKIPPED).write_text("".join(f"{k}\n" for k in skipped))


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
    parser.add_argument("--views", nargs="+", default=list(VIEWS), choices=list(VIEWS))
    parser.add_argument("--from", dest="source", type=Path, help="fp32 weights from --export")
    parser.add_argument("--export", type=Path, help="write the fp32 weights as wcodec chunks, exit")
    parser.add_argument("--skip", help="with --export: leave out tensors whose name matches")
    args = parser.parse_args()
    if args.export is not None:
        export_fp32(args.export, args.skip)
        return
    card = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    fp32 = load_fp32(args.source)
    views = make_views(fp32, args.views)
    nbytes = args.mib << 20
    datasets = {n: tile(as_rows(tensors).reshape(-1), nbytes) for n, tensors in views.items()}
    copy = bench_copy(nbytes, args.repeats)
    rows = [f"| device-to-device copy | | {copy:.0f} | | | |"]
    apis, bars = [], []
    for name, data in datasets.items():
        for label, rng in (("4 MiB chunks", None), ("1-4 MiB chunks", np.random.default_rng(0))):
            sizes = chunk_sizes(data.nbytes, rng)
            gbs, unchecked, ratio = bench_wcodec(data, sizes, args.repeats)
            nv = bench_nvcomp(data, sizes, args.repeats)
            if isinstance(nv, str):
                nv_cells, best = [nv, "", ""], float("nan")
            else:
                mode, (best, nv_ratio) = max(nv.items(), key=lambda kv: kv[1][0])
                others = ", ".join(f"{m} {g:.0f}" for m, (g, _) in nv.items() if m != mode)
                nv_cells = [f"{best:.0f} ({mode})", f"{nv_ratio:.4f}", others]
            cells = [
                f"{name}, {label} ({len(sizes)})",
                f"{ratio:.4f}",
                f"{gbs:.0f}",
                f"{unchecked:.0f}",
            ]
            rows.append("| " + " | ".join([*cells, *nv_cells, f"{gbs / best:.2f}x"]) + " |")
            if label == "4 MiB chunks":
                if data.dtype.itemsize == 1:
                    bars.append((f"{name}: >= 800 GB/s ({gbs:.0f})", gbs >= 800))
                    bars.append(
                        (
                            f"{name}: >= 2x nvCOMP ANS at its best ({gbs / best:.2f}x)",
                            gbs >= 2 * best,
                        )
                    )
                elif name == "bf16" and not isinstance(nv, str) and "one buffer, float16" in nv:
                    fp16 = nv["one buffer, float16"][0]
                    bars.append(
                        (
                            f"bf16: >= 1.5x nvCOMP's float16 mode ({gbs / fp16:.2f}x)",
                            gbs >= 1.5 * fp16,
                        )
                    )
                if name in ("int8", "bf16"):
                    for api, rate in bench_apis(data, sizes, args.repeats).items():
                        apis.append(f"| {name} | {api} | {rate:.1f} |")
                    apis.append(
                        f"| {name} | PreparedBatch.launch alone (CUDA events) | {gbs:.0f} |"
                    )
    zarr_rows = bench_zarr_array(datasets["int8"], args.repeats) if "int8" in datasets else []
    checkpoint = bench_checkpoint(
        {n: views[n] for n in ("int8", "bf16") if n in views}, args.repeats
    )
    used = {
        n: f"{len(t)} tensors, {sum(a.nbytes for a in t.values()) / 1e6:.1f} MB"
        for n, t in views.items()
    }
    skipped = (args.source / SKIPPED).read_text().split() if args.source else []
    text = "\n".join(
        [
            f"# GPU benchmark, {datetime.date.today().isoformat()}",
            "",
            f"GPU: {card}; wcodec {wc.__version__}; data tiled to {args.mib} MiB; CUDA events, "
            f"median of {args.repeats} after 3 warm-ups, for wcodec's launch and nvCOMP's decode "
            "call alike. GB/s are of decoded output. nvCOMP ANS: the best of one buffer and a "
            "list of the same chunks, byte mode and (2-byte data) float16 mode; the other modes "
            "beside it.",
            "Views, from MiniLM's fp32 weights"
            + (f" (tensors left out: {', '.join(skipped)})" if skipped else "")
            + ":",
            "",
            *[f"- {n}: {VIEWS[n]}; {used[n]}" for n in views],
            "",
            "Command: `python benchmarks/bench_gpu.py`",
            "",
            "| data (chunks) | wcodec ratio | wcodec GB/s | wcodec GB/s, checksums not checked "
            "| nvCOMP ANS GB/s, best | its ratio | nvCOMP other modes | wcodec vs nvCOMP best |",
            "|---|---:|---:|---:|---:|---:|---|---:|",
            *rows,
            "",
            "Batch APIs on the 4 MiB chunks (wall clock, synchronised, median of up to 10), "
            "GB/s of output:",
            "",
            "| view | API | GB/s |",
            "|---|---|---:|",
            *apis,
            "",
            "One large array through zarr's GPU pipeline (`zarr.config.enable_gpu()`, "
            f"{READER_CONFIG}, local store, page cache warm, the whole array read; wall clock):",
            "",
            "| array | ms | GB/s |",
            "|---|---:|---:|",
            *zarr_rows,
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
    (RESULTS / f"gpu-{slug}-{datetime.date.today().isoformat()}.md").write_text(text)


if __name__ == "__main__":
    main()
