"""Zarr benchmark: real MiniLM weights (MINILM_INT8 and MINILM_BF16), every tensor's elements laid
end to end as rows of 384 (the hidden size; a last partial row is dropped), stored as one
sharded array with the wcodec serializer against zarr's default zstd and Blosc(zstd, byte
shuffle). Reports bytes on disk, whole-array read MB/s (page cache warm, median of --repeats)
and the latency of reading 1% of the rows at 20 random offsets (median), beside an uncompressed
array as the floor of zarr's own overhead. Writes benchmarks/results/zarr-<cpu>-<date>.md.

    python benchmarks/bench_zarr.py [--repeats 5] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from report import cpu_name, median_time, write_report
from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec
from zarr.storage import LocalStore

import wcodec_zarr as wc
from wcodec_zarr.testing.weights import as_rows, minilm_views

CHUNK_BYTES = 1 << 20
SHARD_CHUNKS = 16


def codecs() -> dict[str, dict[str, Any]]:
    return {
        "uncompressed": {"compressors": None},
        "wcodec": {"serializer": wc.WCodec(), "compressors": None},
        "zstd (zarr default)": {"compressors": ZstdCodec(level=0)},
        "blosc zstd5+shuffle": {
            "compressors": BloscCodec(cname="zstd", clevel=5, shuffle=BloscShuffle.shuffle)
        },
    }


def layout(shape: tuple[int, ...], itemsize: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunks of whole rows (about CHUNK_BYTES, split evenly so that the edge chunk is not
    mostly padding), shards of SHARD_CHUNKS chunks."""
    row_bytes = itemsize * int(np.prod(shape[1:]))
    nchunks = -(-shape[0] * row_bytes // CHUNK_BYTES)
    rows = -(-shape[0] // nchunks)
    shard_rows = rows * min(SHARD_CHUNKS, -(-shape[0] // rows))
    return (rows, *shape[1:]), (shard_rows, *shape[1:])


def write(root: Path, data: np.ndarray, options: dict[str, Any]) -> zarr.Array[Any]:
    chunks, shards = layout(data.shape, data.dtype.itemsize)
    z = zarr.create_array(
        LocalStore(root),
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        **options,
    )
    z[:] = data
    return z


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "zarr.json")


def read_all(arr: zarr.Array[Any]) -> Any:
    return arr[:]


def bench(name: str, data: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    rows = []
    nrows = data.shape[0]
    block = max(1, nrows // 100)
    starts = np.random.default_rng(0).integers(0, nrows - block, size=20)
    with tempfile.TemporaryDirectory() as tmp:
        for codec, options in codecs().items():
            root = Path(tmp) / re.sub(r"\W+", "_", codec)
            write(root, data, options)
            arr = zarr.open_array(LocalStore(root), mode="r")
            assert np.asarray(arr[:]).tobytes() == data.tobytes()
            t_all = median_time(partial(read_all, arr), repeats)
            latencies = []
            for s in starts:
                start = time.perf_counter()
                arr[s : s + block]
                latencies.append(time.perf_counter() - start)
            rows.append(
                {
                    "dataset": name,
                    "codec": codec,
                    "layout": f"chunks {arr.chunks}, shards {arr.shards}",
                    "disk": disk_bytes(root),
                    "ratio": data.nbytes / disk_bytes(root),
                    "read_mbs": data.nbytes / t_all / 1e6,
                    "partial_ms": 1e3 * statistics.median(latencies),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16, help="codec_pipeline.batch_size")
    args = parser.parse_args()
    views = minilm_views()
    datasets = {"MINILM_INT8": as_rows(views["int8"]), "MINILM_BF16": as_rows(views["bf16"])}
    rows: list[dict[str, Any]] = []
    with zarr.config.set({"codec_pipeline.batch_size": args.batch_size}):
        for name, tensors in datasets.items():
            rows += bench(name, tensors, args.repeats)
    table = [
        "| dataset | codec | bytes on disk | ratio | whole read MB/s | 1% read ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        table.append(
            f"| {r['dataset']} | {r['codec']} | {r['disk']:,} | {r['ratio']:.4f} | "
            f"{r['read_mbs']:.0f} | {r['partial_ms']:.2f} |"
        )
    checks = []
    for ds in datasets:
        by = {r["codec"]: r for r in rows if r["dataset"] == ds}
        w, z, b = by["wcodec"], by["zstd (zarr default)"], by["blosc zstd5+shuffle"]
        checks.append(
            (f"{ds}: smaller on disk than zstd and Blosc", w["disk"] < min(z["disk"], b["disk"]))
        )
        speed = w["read_mbs"] / z["read_mbs"]
        checks.append((f"{ds}: whole read >= 1.5x the zstd array ({speed:.2f}x)", speed >= 1.5))
    layouts = "; ".join(sorted({f"{r['dataset']}: {r['layout']}" for r in rows}))
    text = "\n".join(
        [
            f"# Zarr benchmark, {datetime.date.today().isoformat()}",
            "",
            f"CPU: {cpu_name()}, {os.cpu_count()} logical cores; zarr {zarr.__version__}, "
            f"wcodec {wc.__version__}; LocalStore on local disk, page cache warm; "
            f"{layouts}; "
            f"codec_pipeline.batch_size {args.batch_size}; reads: median of {args.repeats}; "
            "1% read: 1% of the rows of the largest tensor at 20 random offsets, median.",
            "Command: `python benchmarks/bench_zarr.py`",
            "",
            *table,
            "",
            "Bars (same run):",
            "",
            *[f"- [{'x' if ok else ' '}] {text}" for text, ok in checks],
            "",
        ]
    )
    write_report("zarr", text)


if __name__ == "__main__":
    main()
