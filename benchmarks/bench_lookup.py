"""What a table lookup costs on this CPU: the bound on a decoder that makes one lookup per
symbol. Builds ``lookup_probe.cpp`` (g++, AVX-512) and times three ways to load 16 entries of a
16 KiB table along eight dependent chains, the median of --repeats runs; prints a table with
the decode speed (GB/s of int8) that one lookup per symbol at that cost allows, beside zstd -3's
decode of MINILM_INT8 on one thread in the same run. Then the decoder itself both ways: one
thread's decode of MINILM_INT8 and MINILM_BF16 with ``WCODEC_LOOKUP=gather`` and ``=permute``
(a process each, alternated, the best of 10 calls in each; medians of --repeats processes).

Writes benchmarks/results/lookup-<cpu>-<date>.md.

    python benchmarks/bench_lookup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard
from report import cpu_name, write_report

from wcodec_zarr.testing.weights import minilm_views

PROBE = Path(__file__).with_name("lookup_probe.cpp")


def probe(repeats: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        binary = Path(folder) / "lookup_probe"
        subprocess.run(
            ["g++", "-O2", "-mavx512f", "-mavx512vl", "-msse4.1", "-o", str(binary), str(PROBE)],
            check=True,
        )
        runs: dict[str, list[float]] = {}
        for _ in range(repeats):
            out = subprocess.run(
                [str(binary)], check=True, capture_output=True, text=True
            ).stdout.split()
            for way, ns in zip(out[::2], out[1::2], strict=True):
                runs.setdefault(way, []).append(float(ns))
    return {way: statistics.median(times) for way, times in runs.items()}


def zstd_decode_mbs(repeats: int) -> float:
    tensors = list(minilm_views()["int8"].values())
    frames = [zstandard.ZstdCompressor(level=3).compress(t.tobytes()) for t in tensors]
    decompressor = zstandard.ZstdDecompressor()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for frame in frames:
            decompressor.decompress(frame)
        times.append(time.perf_counter() - start)
    return sum(t.nbytes for t in tensors) / statistics.median(times) / 1e6


DECODE = """
import sys, time
import wcodec_zarr as wc
from wcodec_zarr.testing.weights import minilm_views
for name in ("int8", "bf16"):
    tensors = list(minilm_views()[name].values())
    chunks = [wc.encode(t) for t in tensors]
    outs = [t.copy() for t in tensors]
    times = []
    for _ in range(10):
        start = time.perf_counter()
        wc.decode_batch(chunks, outs=outs, threads=1)
        times.append(time.perf_counter() - start)
    print(name, sum(t.nbytes for t in tensors) / min(times) / 1e6)
"""


def decode_both_ways(repeats: int) -> dict[tuple[str, str], float]:
    """MB/s of one thread's decode, by (lookup, dataset)."""
    runs: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for lookup in ("gather", "permute"):
            # -P: the installed package, not the source tree of the working directory
            out = subprocess.run(
                [sys.executable, "-P", "-c", DECODE],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "WCODEC_LOOKUP": lookup},
            ).stdout.split()
            for name, mbs in zip(out[::2], out[1::2], strict=True):
                runs.setdefault((lookup, name), []).append(float(mbs))
    return {key: statistics.median(v) for key, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ns = probe(args.repeats)
    zstd = zstd_decode_mbs(args.repeats)
    lines = [
        f"# Table lookups, {datetime.date.today().isoformat()}",
        "",
        f"CPU: {cpu_name()}. Median of {args.repeats} runs. "
        f"Command: `python benchmarks/bench_lookup.py --repeats {args.repeats}`",
        "",
        "| 16 lookups by | ns | G lookups/s | int8 decode bound (one lookup a symbol) |"
        " vs zstd -3 decode |",
        "|---|---:|---:|---:|---:|",
    ]
    for way, t in ns.items():
        rate = 16 / t  # G lookups/s = GB/s of int8 at one lookup a symbol
        lines.append(f"| {way} | {t:.2f} | {rate:.2f} | {rate * 1e3:.0f} MB/s | "
                     f"{rate * 1e3 / zstd:.2f}x |")  # fmt: skip
    lines += ["", f"zstd -3 decodes MINILM_INT8 at {zstd:.0f} MB/s on one thread in this run.", ""]
    decoded = decode_both_ways(args.repeats)
    lines += [
        "The AVX-512 decoder both ways (one thread, MB/s of output):",
        "",
        "| data | gathers | byte permutes | permutes / gathers |",
        "|---|---:|---:|---:|",
    ]
    for name in ("int8", "bf16"):
        g, p = decoded[("gather", name)], decoded[("permute", name)]
        lines.append(f"| MINILM_{name.upper()} | {g:.0f} | {p:.0f} | {p / g:.2f}x |")
    lines.append("")
    write_report("lookup", "\n".join(lines))


if __name__ == "__main__":
    main()
