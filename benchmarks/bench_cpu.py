"""CPU benchmark: wcodec against zstd -3, zstd -19, Blosc(zstd, byte shuffle), lz4 and the
order-0 entropy bound on real weights (MINILM_INT8 and MINILM_BF16, see wcodec_zarr.weights).

Every codec compresses each tensor separately (as a Zarr chunk would). Speeds are MB/s of
uncompressed bytes, the median of --repeats runs (encoders slower than 20 MB/s run once), with
one thread and with all threads, and wcodec with 2 threads for the scaling bar (peers: a
thread pool over tensors; wcodec: its own threads, decoding all tensors in one batch call).
Writes benchmarks/results/cpu-<cores>cores-<cpu>-<date>.md and prints the same table and the
bars.

    python benchmarks/bench_cpu.py [--repeats 5] [--model model.safetensors]

``--model`` takes the MiniLM weights from a file (float32, as the package ships them) instead of
the installed package, for machines without it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import lz4.frame
import numcodecs
import numpy as np
import zstandard
from numcodecs import Blosc
from report import cpu_name, write_report

import wcodec_zarr as wc
from wcodec_zarr._native import core
from wcodec_zarr.weights import minilm_views

Encode = Callable[[np.ndarray], bytes]
Decode = Callable[[bytes, np.ndarray], Any]


@dataclass
class Row:
    dataset: str
    codec: str
    threads: int
    ratio: float
    encode_mbs: float
    decode_mbs: float


def peers(threads: int) -> dict[str, tuple[Encode, Decode]]:
    numcodecs.blosc.set_nthreads(1)  # parallelism comes from the pool, as for the other peers
    blosc = Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)

    # zstandard's (de)compressor objects are not thread-safe: one per call
    def zstd_encode(level: int) -> Encode:
        return lambda t: zstandard.ZstdCompressor(level=level).compress(t.tobytes())

    def zstd_decode(data: bytes, like: np.ndarray) -> bytes:
        return zstandard.ZstdDecompressor().decompress(data)

    def plain(t: np.ndarray) -> np.ndarray:
        # Blosc shuffles by itemsize; ml_dtypes arrays go in as same-size unsigned integers
        return t.view(f"u{t.dtype.itemsize}")

    return {
        "zstd -3": (zstd_encode(3), zstd_decode),
        "zstd -19": (zstd_encode(19), zstd_decode),
        "blosc zstd5+shuffle": (
            lambda t: blosc.encode(plain(t)),
            lambda d, like: blosc.decode(d),
        ),
        "lz4": (lambda t: lz4.frame.compress(t.tobytes()), lambda d, like: lz4.frame.decompress(d)),
    }


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        if times[0] > 5.0:  # slow encoders (zstd -19): one run is enough to rank them
            break
    return statistics.median(times), result


def run_pool(fn: Callable[[Any], Any], items: list[Any], threads: int) -> list[Any]:
    if threads == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def bench_codec(
    dataset: str,
    codec: str,
    enc: Encode,
    dec: Decode,
    tensors: list[np.ndarray],
    threads: int,
    repeats: int,
) -> Row:
    raw = sum(t.nbytes for t in tensors)
    t_enc, encoded = timed(partial(run_pool, enc, tensors, threads), repeats)
    pairs = list(zip(encoded, tensors, strict=True))
    t_dec, decoded = timed(partial(run_pool, lambda p: dec(*p), pairs, threads), repeats)
    assert all(bytes(d) == t.tobytes() for d, t in zip(decoded, tensors, strict=True))
    size = sum(len(e) for e in encoded)
    return Row(dataset, codec, threads, raw / size, raw / t_enc / 1e6, raw / t_dec / 1e6)


def bench_wcodec(dataset: str, tensors: list[np.ndarray], threads: int, repeats: int) -> Row:
    """wcodec runs its own threads: each tensor is encoded by one call, and all are decoded by
    one batch call whose threads share the segments of every chunk (as the Zarr codec decodes
    a batch of chunks)."""
    raw = sum(t.nbytes for t in tensors)
    t_enc, encoded = timed(lambda: [wc.encode(t, threads=threads) for t in tensors], repeats)
    t_dec, decoded = timed(lambda: wc.decode_batch(encoded, threads=threads), repeats)
    assert all(d.tobytes() == t.tobytes() for d, t in zip(decoded, tensors, strict=True))
    size = sum(len(e) for e in encoded)
    return Row(dataset, "wcodec", threads, raw / size, raw / t_enc / 1e6, raw / t_dec / 1e6)


def bench_dataset(name: str, tensors: list[np.ndarray], repeats: int) -> list[Row]:
    rows = []
    all_threads = os.cpu_count() or 1
    for threads in sorted({1, all_threads}):
        rows.append(bench_wcodec(name, tensors, threads, repeats))
        for codec, (enc, dec) in peers(threads).items():
            rows.append(bench_codec(name, codec, enc, dec, tensors, threads, repeats))
    if all_threads > 2:  # the scaling bar is for 2 threads
        rows.append(bench_wcodec(name, tensors, 2, repeats))
    return rows


def bounds(tensors: list[np.ndarray]) -> tuple[float, float]:
    """Ratios of the order-0 bounds: (coded planes with raw planes at size, all planes)."""
    raw = sum(t.nbytes for t in tensors)
    infos = [wc.inspect(wc.encode(t)) for t in tensors]
    return (
        raw / sum(i["coded_bound_bytes"] for i in infos),
        raw / sum(i["entropy_bound_bytes"] for i in infos),
    )


def find(rows: list[Row], dataset: str, codec: str, threads: int) -> Row:
    return next(r for r in rows if (r.dataset, r.codec, r.threads) == (dataset, codec, threads))


def bars(rows: list[Row], bound_ratio: dict[str, float]) -> list[tuple[str, bool]]:
    checks = []
    for ds in bound_ratio:
        w1 = find(rows, ds, "wcodec", 1)
        z3 = find(rows, ds, "zstd -3", 1)
        gap = bound_ratio[ds] / w1.ratio - 1
        checks += [
            (f"{ds}: ratio within 0.5% of the coded-plane bound ({100 * gap:.2f}%)", gap <= 0.005),
            (
                f"{ds}: ratio above zstd -19 and Blosc",
                w1.ratio > find(rows, ds, "zstd -19", 1).ratio
                and w1.ratio > find(rows, ds, "blosc zstd5+shuffle", 1).ratio,
            ),
            (
                f"{ds}: 1-thread decode >= 2x zstd -3 ({w1.decode_mbs / z3.decode_mbs:.2f}x)",
                w1.decode_mbs >= 2 * z3.decode_mbs,
            ),
            (
                f"{ds}: 1-thread encode >= zstd -3 ({w1.encode_mbs / z3.encode_mbs:.2f}x)",
                w1.encode_mbs >= z3.encode_mbs,
            ),
        ]
        if any(r.threads == 2 for r in rows):
            speedup = find(rows, ds, "wcodec", 2).decode_mbs / w1.decode_mbs
            checks.append(
                (f"{ds}: 2-thread decode >= 1.7x 1-thread ({speedup:.2f}x)", speedup >= 1.7)
            )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", help="MiniLM float32 safetensors (default: the package's)")
    args = parser.parse_args()
    views = minilm_views(args.model)
    datasets = {
        "MINILM_INT8": list(views["int8"].values()),
        "MINILM_BF16": list(views["bf16"].values()),
    }
    rows: list[Row] = []
    bound_ratio: dict[str, float] = {}
    lines = []
    for name, tensors in datasets.items():
        rows += bench_dataset(name, tensors, args.repeats)
        bound_ratio[name], h0 = bounds(tensors)
        lines.append(
            f"{name}: {sum(t.nbytes for t in tensors) / 1e6:.1f} MB, {len(tensors)} tensors; "
            f"order-0 bound {bound_ratio[name]:.4f}x over the planes wcodec codes "
            f"(raw planes at their size), {h0:.4f}x over all planes"
        )
    table = [
        "| dataset | codec | threads | ratio | encode MB/s | decode MB/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r.dataset} | {r.codec} | {r.threads} | {r.ratio:.4f} | {r.encode_mbs:.0f} | "
            f"{r.decode_mbs:.0f} |"
        )
    checks = bars(rows, bound_ratio)
    model_arg = f" --model {Path(args.model).name}" if args.model else ""
    report = [
        f"# CPU benchmark, {datetime.date.today().isoformat()}",
        "",
        f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; wcodec {wc.__version__} "
        f"(format v{wc.FORMAT_VERSION}, {core.simd()} decoder); zstandard "
        f"{zstandard.__version__}, numcodecs {numcodecs.__version__}. Median of {args.repeats} "
        "runs (encoders slower than 5 s per run: one run).",
        f"Command: `python benchmarks/bench_cpu.py{model_arg}`",
        "",
        *lines,
        "",
        *table,
        "",
        "Bars (same run, same machine):",
        "",
        *[f"- [{'x' if ok else ' '}] {text}" for text, ok in checks],
        "",
    ]
    write_report(f"cpu-{os.cpu_count()}cores", "\n".join(report))


if __name__ == "__main__":
    main()
