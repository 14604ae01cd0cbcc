"""Bit flips in every kind of stored object of a checkpoint, one at a time: does a whole load and
an export either refuse the damage (a ValueError or OSError naming it) or still give the source
bit for bit? A result that differs from the source without an error is a silent wrong result.

Kinds: wcodec chunk bytes inside shards, shard indexes, zstd chunks (bool and int64 tensors),
the arrays' own zarr.json documents, the root zarr.json (manifest and consolidated metadata).
Writes results/bitflip-<cpu>-<date>.md.

    python benchmarks/bitflip_campaign.py [--flips 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
from report import cpu_name, write_report
from safetensors.numpy import load_file, save_file

import wcodec_zarr as wc

INDEX = 4 * 16 + 4  # the index of a shard of four inner chunks, and its CRC32C


def make_model(folder: Path, rng: np.random.Generator) -> Path:
    tensors = {
        "w.int8": np.clip(rng.normal(0, 30, (1024, 256)), -127, 127).astype(np.int8),
        "w.bf16": rng.normal(0, 0.02, (512, 256)).astype(ml_dtypes.bfloat16),
        "ids.int64": np.arange(4096, dtype=np.int64),
        "mask.bool": rng.random((64, 64)) < 0.5,
        "norm.f32": rng.normal(1, 0.1, 256).astype(np.float32),
    }
    path = folder / "model.safetensors"
    save_file(tensors, str(path))
    return path


def regions(ckpt: Path) -> dict[str, list[tuple[Path, int, int]]]:
    """Per kind of object: (file, first byte, end) ranges whose bits the campaign flips."""
    shards = [p for p in (ckpt / "w.int8").glob("c.*")] + [p for p in (ckpt / "w.bf16").glob("c.*")]
    zstd = [p for name in ("ids.int64", "mask.bool") for p in (ckpt / name).glob("c.*")]
    documents = [p for p in ckpt.glob("*/zarr.json")]
    return {
        "wcodec chunks (in shards)": [(p, 0, p.stat().st_size - INDEX) for p in shards],
        "shard indexes": [(p, p.stat().st_size - INDEX, p.stat().st_size) for p in shards],
        "zstd chunks": [(p, 0, p.stat().st_size) for p in zstd],
        "array documents": [(p, 0, p.stat().st_size) for p in documents],
        "root document": [(ckpt / "zarr.json", 0, (ckpt / "zarr.json").stat().st_size)],
    }


def outcome(ckpt: Path, source: Path, tensors: dict[str, np.ndarray], out: Path) -> str:
    """'refused', 'exact', 'silent' or 'other error' for the checkpoint as it is on disk."""
    try:
        loaded = wc.load_checkpoint(ckpt)
        exported = wc.export_safetensors(ckpt, out, overwrite=True)
    except (ValueError, OSError, KeyError):
        return "refused"
    except Exception as exc:  # an error outside the documented ones: a finding in itself
        print(f"  {type(exc).__name__}: {exc}")
        return "other error"
    same = set(loaded) == set(tensors) and all(
        loaded[k].tobytes() == tensors[k].tobytes() for k in tensors
    )
    same = same and Path(exported[0]).read_bytes() == source.read_bytes()
    return "exact" if same else "silent"


def flip(path: Path, bit: int, apply: Callable[[], str]) -> str:
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[bit // 8] ^= 1 << (bit % 8)
    path.write_bytes(bytes(damaged))
    try:
        return apply()
    finally:
        path.write_bytes(good)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=200, help="bit flips per kind of object")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pick = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        source = make_model(folder, np.random.default_rng(args.seed))
        tensors = load_file(str(source))
        ckpt = folder / "ckpt"
        wc.convert(source, ckpt, chunk_bytes=16 << 10, shard_bytes=64 << 10, progress=False)
        out = folder / "out.safetensors"
        assert outcome(ckpt, source, tensors, out) == "exact"
        for kind, spans in regions(ckpt).items():
            counts: Counter[str] = Counter()
            for _ in range(args.flips):
                path, start, end = pick.choice(spans)
                bit = pick.randrange(start * 8, end * 8)
                counts[flip(path, bit, lambda: outcome(ckpt, source, tensors, out))] += 1
            rows.append((kind, counts))
            print(kind, dict(counts))
    lines = [
        f"# Bit flips in stored objects ({cpu_name()})",
        "",
        f"Command: `python benchmarks/bitflip_campaign.py --flips {args.flips} --seed {args.seed}`."
        " One flip at a time, then a whole load (`load_checkpoint`) and an export compared with"
        " the source: refused (a ValueError or OSError), exact (the source bit for bit despite"
        " the flip), silent (a different result without an error) or other error (an exception"
        " outside the documented ones).",
        "",
        "| object | flips | refused | exact | silent | other error |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {kind} | {sum(c.values())} | {c['refused']} | {c['exact']} | {c['silent']} "
            f"| {c['other error']} |"
            for kind, c in rows
        ),
    ]
    write_report("bitflip", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
