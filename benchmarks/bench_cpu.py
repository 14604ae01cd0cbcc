"""CPU benchmark: wcodec against zstd -3, zstd -19, Blosc(zstd, byte shuffle), lz4 and the
order-0 entropy bound on real weights (MINILM_INT8 and MINILM_BF16, see
wcodec_zarr.testing.weights).

Every codec compresses each tensor separately (as a Zarr chunk would). Speeds are MB/s of
uncompressed bytes, the median of --repeats rounds that time every codec once each (encoders
slower than 5 s a run: once), with one thread and with all threads, and wcodec with 2 threads
for the scaling bar (peers: a thread pool over tensors; wcodec: its own threads, decoding all
tensors in one batch call).
Writes benchmarks/results/cpu-<cores>cores-<cpu>-<date>.md and prints the same table and the
bars.

    python benchmarks/bench_cpu.py [--repeats 9] [--model model.safetensors]

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
from wcodec_zarr.codec.native import core
from wcodec_zarr.testing.weights import minilm_views

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


SLOW = 5.0  # seconds: a codec this slow (zstd -19 encoding) is timed once, enough to rank it


def interleaved(fns: dict[Any, Callable[[], Any]], repeats: int) -> dict[Any, tuple[float, Any]]:
    """Median time and last result of each function, timed in rounds that run every function
    once (after one untimed warm-up round), so that a machine whose speed drifts during the run
    (shared or virtual CPUs) shifts every codec alike instead of the one timed at that moment."""
    times: dict[Any, list[float]] = {name: [] for name in fns}
    results = {}
    for name, fn in fns.items():  # the warm-up; a slow function's only run
        start = time.perf_counter()
        results[name] = fn()
        if (elapsed := time.perf_counter() - start) > SLOW:
            times[name].append(elapsed)
    for _ in range(repeats):
        for name, fn in fns.items():
            if times[name] and times[name][0] > SLOW:
                continue
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), results[name]) for name in fns}


def run_pool(fn: Callable[[Any], Any], items: list[Any], threads: int) -> list[Any]:
    if threads == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, items))


def bench_round(
    dataset: str, tensors: list[np.ndarray], threads: int, repeats: int, wcodec_threads: list[int]
) -> list[Row]:
    """The peers at ``threads`` and wcodec at each of ``wcodec_threads``, timed in the same
    interleaved rounds. wcodec runs its own threads: each tensor is encoded by one call, and
    all are decoded by one batch call whose threads share the segments of every chunk (as the
    Zarr codec decodes a batch of chunks)."""
    # (codec, threads) -> encoder
    encoders: dict[tuple[str, int], Callable[[], Any]] = {
        ("wcodec", n): partial(lambda n: [wc.encode(t, threads=n) for t in tensors], n)
        for n in wcodec_threads
    }
    decoders: dict[str, Decode] = {}
    for codec, (enc, dec) in peers(threads).items():
        encoders[codec, threads] = partial(run_pool, enc, tensors, threads)
        decoders[codec] = dec
    encodes = interleaved(encoders, repeats)

    def decode(key: tuple[str, int]) -> Callable[[], Any]:
        (name, n), encoded = key, encodes[key][1]
        if name == "wcodec":
            return lambda: wc.decode_batch(encoded, threads=n)
        pairs = list(zip(encoded, tensors, strict=True))
        return partial(run_pool, lambda p: decoders[name](*p), pairs, n)

    decodes = interleaved({key: decode(key) for key in encoders}, repeats)
    raw = sum(t.nbytes for t in tensors)
    rows = []
    for (name, n), (t_enc, encoded) in encodes.items():
        t_dec, decoded = decodes[name, n]
        assert all(
            (d.tobytes() if isinstance(d, np.ndarray) else bytes(d)) == t.tobytes()
            for d, t in zip(decoded, tensors, strict=True)
        )
        size = sum(len(e) for e in encoded)
        rows.append(Row(dataset, name, n, raw / size, raw / t_enc / 1e6, raw / t_dec / 1e6))
    return rows


def bench_dataset(name: str, tensors: list[np.ndarray], repeats: int) -> list[Row]:
    all_threads = os.cpu_count() or 1
    # the scaling bar compares wcodec's 2 threads with its 1, so they share rounds
    rows = bench_round(name, tensors, 1, repeats, [1, 2] if all_threads > 1 else [1])
    if all_threads > 1:
        rows += bench_round(name, tensors, all_threads, repeats, [all_threads] * (all_threads > 2))
    return sorted(rows, key=lambda r: r.threads)


def bounds(tensors: list[np.ndarray]) -> tuple[float, float]:
    """Ratios of the order-0 bounds: (coded planes with raw planes at size, all planes)."""
    raw = sum(t.nbytes for t in tensors)
    infos = [wc.inspect(wc.encode(t)) for t in tensors]
    return (
        raw / sum(i["coded_bound_bytes"] for i in infos),
        raw / sum(i["entropy_bound_bytes"] for i in infos),
    )


CLASSES = 8  # row or column classes of the grouped bound


def byte_planes(t: np.ndarray) -> list[np.ndarray]:
    """The byte planes of a tensor as wcodec cuts them (FORMAT.md section 3), each shaped as
    the tensor: plane 0 the most significant byte, a float's word rotated left by one bit."""
    size = t.dtype.itemsize
    word = t.view(f"u{size}").astype(np.uint64)
    if not np.issubdtype(t.dtype, np.integer):
        word = ((word << np.uint64(1)) | (word >> np.uint64(8 * size - 1))) & np.uint64(
            (1 << 8 * size) - 1
        )
    return [
        ((word >> np.uint64(8 * (size - 1 - k))) & np.uint64(255)).astype(np.uint8)
        for k in range(size)
    ]


def entropy_bits(
    values: np.ndarray, classes: np.ndarray | None = None, groups: int = CLASSES
) -> float:
    """Plug-in order-0 bits of the bytes ``values``, with one histogram per class (``classes``
    of the same shape, ``groups`` of them) if given; the tables themselves are not counted."""
    if classes is None:
        classes, groups = np.zeros(values.shape, np.int64), 1
    key = classes.astype(np.int64) * 256 + values
    counts = np.bincount(key.ravel(), minlength=256 * groups).reshape(groups, 256).astype(float)
    total = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, total, out=np.ones_like(counts), where=counts > 0)
    return float(-(counts * np.log2(p)).sum())


def ranked_classes(feature: np.ndarray) -> np.ndarray:
    """Each entry's class: its rank in ``feature`` cut into CLASSES groups of equal count."""
    ranks = np.empty(feature.size, np.int64)
    ranks[np.argsort(feature, kind="stable")] = np.arange(feature.size)
    return ranks * CLASSES // feature.size


def grouped_bounds(tensors: list[np.ndarray]) -> dict[str, float]:
    """Ratios of plug-in bounds over every byte plane (a plane at most its raw size): order-0
    with one table per plane; rows, or columns, of each 2-D tensor put into CLASSES classes by
    their mean absolute deviation (signed for integer weights), a table per class; the best of
    the three for each plane; and order-1, the previous byte of the plane (in C order) as
    context, a table per value (no encoder yet; 256 tables cost more than small chunks hold)."""
    raw = sum(t.nbytes for t in tensors)
    totals = dict.fromkeys(("order-0", "rows", "columns", "best", "order-1"), 0.0)
    for t in tensors:
        for plane in byte_planes(t):
            cap = 8.0 * plane.size
            flat = plane.reshape(-1)
            previous = np.concatenate([[0], flat[:-1]])
            totals["order-1"] += min(cap, entropy_bits(flat, previous, 256)) / 8
            bits = {"order-0": min(cap, entropy_bits(plane))}
            bits["rows"] = bits["columns"] = bits["order-0"]
            if plane.ndim == 2 and min(plane.shape) >= CLASSES:
                values = plane.view(np.int8) if t.dtype == np.int8 else plane
                spread = np.abs(values - values.mean(axis=1, keepdims=True)).mean(axis=1)
                rows = np.broadcast_to(ranked_classes(spread)[:, None], plane.shape)
                bits["rows"] = min(cap, entropy_bits(plane, rows))
                spread = np.abs(values - values.mean(axis=0, keepdims=True)).mean(axis=0)
                cols = np.broadcast_to(ranked_classes(spread)[None, :], plane.shape)
                bits["columns"] = min(cap, entropy_bits(plane, cols))
            bits["best"] = min(bits.values())
            for key, b in bits.items():
                totals[key] += b / 8
    return {key: raw / b for key, b in totals.items()}


CHUNK_SIZES = (4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20)


def chunk_rows(name: str, tensors: list[np.ndarray], repeats: int) -> list[str]:
    """Table rows for ``tensors`` cut into chunks of each of CHUNK_SIZES bytes (each tensor's
    elements in order, 1-D, its last chunk shorter, as a Zarr array of that chunk size):
    ratios of wcodec, zstd -3 and Blosc; wcodec's bytes per chunk above the whole-tensor
    order-0 bound; one thread's decode speed of wcodec and zstd -3, into new arrays."""
    blosc = Blosc(cname="zstd", clevel=5, shuffle=Blosc.SHUFFLE)
    numcodecs.blosc.set_nthreads(1)
    raw = sum(t.nbytes for t in tensors)
    bound = sum(i["coded_bound_bytes"] for i in (wc.inspect(wc.encode(t)) for t in tensors))
    rows = []
    for size in CHUNK_SIZES:
        pieces = [
            flat[i : i + size // flat.itemsize]
            for flat in (t.reshape(-1) for t in tensors)
            for i in range(0, flat.size, size // flat.itemsize)
        ]
        ours = [wc.encode(p) for p in pieces]
        zstd = [zstandard.ZstdCompressor(level=3).compress(p.tobytes()) for p in pieces]
        blosc_bytes = sum(len(blosc.encode(p.view(f"u{p.itemsize}"))) for p in pieces)
        timed = interleaved(
            {
                "wcodec": partial(wc.decode_batch, ours, threads=1),
                "zstd": partial(run_pool, zstandard.ZstdDecompressor().decompress, zstd, 1),
            },
            repeats,
        )
        ours_bytes = sum(len(c) for c in ours)
        speed = {k: raw / t / 1e6 for k, (t, _) in timed.items()}
        rows.append(
            f"| {name} | {size >> 10} KiB | {len(pieces)} | {raw / ours_bytes:.4f} | "
            f"{raw / sum(len(z) for z in zstd):.4f} | {raw / blosc_bytes:.4f} | "
            f"{(ours_bytes - bound) / len(pieces):.0f} | {speed['wcodec']:.0f} | "
            f"{speed['zstd']:.0f} |"
        )
    return rows


def find(rows: list[Row], dataset: str, codec: str, threads: int) -> Row:
    return next(r for r in rows if (r.dataset, r.codec, r.threads) == (dataset, codec, threads))


# decode speed on one thread against zstd -3's, per dataset
DECODE_BAR = {"MINILM_INT8": 2.5, "MINILM_BF16": 3.0}


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
                f"{ds}: 1-thread decode >= {DECODE_BAR[ds]}x zstd -3 "
                f"({w1.decode_mbs / z3.decode_mbs:.2f}x)",
                w1.decode_mbs >= DECODE_BAR[ds] * z3.decode_mbs,
            ),
            (
                f"{ds}: 1-thread encode >= 2x zstd -3 ({w1.encode_mbs / z3.encode_mbs:.2f}x)",
                w1.encode_mbs >= 2 * z3.encode_mbs,
            ),
        ]
        if ds == "MINILM_INT8" and core.simd() == "scalar":
            checks.append(
                (
                    f"{ds}: portable (scalar) decode >= 500 MB/s ({w1.decode_mbs:.0f} MB/s)",
                    w1.decode_mbs >= 500,
                )
            )
        if any(r.threads == 2 for r in rows):
            speedup = find(rows, ds, "wcodec", 2).decode_mbs / w1.decode_mbs
            checks.append(
                (f"{ds}: 2-thread decode >= 1.7x 1-thread ({speedup:.2f}x)", speedup >= 1.7)
            )
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
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
    chunk_table = [
        "| dataset | chunk | chunks | wcodec | zstd -3 | Blosc | wcodec bytes over the bound, "
        "per chunk | wcodec decode MB/s | zstd -3 decode MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, tensors in datasets.items():
        rows += bench_dataset(name, tensors, args.repeats)
        bound_ratio[name], h0 = bounds(tensors)
        grouped = grouped_bounds(tensors)
        lines += [
            f"{name}: {sum(t.nbytes for t in tensors) / 1e6:.1f} MB, {len(tensors)} tensors; "
            f"order-0 bound {bound_ratio[name]:.4f}x over the planes wcodec codes "
            f"(raw planes at their size), {h0:.4f}x over all planes. Grouped bounds (tables "
            f"not counted; {CLASSES} classes of rows or columns by mean absolute deviation): "
            f"order-0 {grouped['order-0']:.4f}x, rows {grouped['rows']:.4f}x, columns "
            f"{grouped['columns']:.4f}x, the best of the three per plane {grouped['best']:.4f}x; "
            f"order-1 (the previous byte of the plane as context) {grouped['order-1']:.4f}x.",
            "",
        ]
        chunk_table += chunk_rows(name, tensors, min(args.repeats, 5))
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
    # a run with the decoder capped (WCODEC_SIMD) says so in its command and file name
    capped = os.environ.get("WCODEC_SIMD")
    env = f"WCODEC_SIMD={capped} " if capped else ""
    report = [
        f"# CPU benchmark, {datetime.date.today().isoformat()}",
        "",
        f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; wcodec {wc.__version__} "
        f"(format v{wc.FORMAT_VERSION}, {core.simd()} decoder); zstandard "
        f"{zstandard.__version__}, numcodecs {numcodecs.__version__}. Median of {args.repeats} "
        "interleaved rounds after a warm-up (encoders slower than 5 s a run: one run).",
        f"Command: `{env}python benchmarks/bench_cpu.py --repeats {args.repeats}{model_arg}`",
        "",
        *lines,
        *table,
        "",
        "Each tensor cut into 1-D chunks of one size (as a Zarr array of that chunk size), "
        "ratios and one thread's decode into new arrays (median of up to 5 rounds):",
        "",
        *chunk_table,
        "",
        "Bars (same run, same machine):",
        "",
        *[f"- [{'x' if ok else ' '}] {text}" for text, ok in checks],
        "",
    ]
    write_report(
        f"cpu-{os.cpu_count()}cores" + (f"-{core.simd()}" if capped else ""), "\n".join(report)
    )


if __name__ == "__main__":
    main()
