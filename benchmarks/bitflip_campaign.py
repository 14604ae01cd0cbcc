"""Damage to a checkpoint's stored objects, one case at a time: does every read (a whole load, an
export, and lazy reads of rows and of a column of each 2-D tensor, through the row fast path
and through zarr) either refuse it (a ValueError or OSError naming it) or still give the source
bit for bit? A result that differs from the source without an error is a silent wrong result.

Three campaigns:
- bit flips in every kind of stored object: wcodec chunk bytes inside shards, shard indexes,
  zstd chunks (bool and int64 tensors), the arrays' own zarr.json documents, the root zarr.json
  (manifest and consolidated metadata);
- missing objects: every object of the checkpoint removed in turn (an interrupted copy or sync,
  an object-store lifecycle rule);
- shard index tampering with the index checksum recomputed, as a buggy or hostile writer would:
  two entries swapped, one copied over another, an offset or a length moved, an entry marked
  empty, another shard's index put in.

Writes results/bitflip-<cpu>-<date>.md.

    python benchmarks/bitflip_campaign.py [--flips 200] [--tampers 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import struct
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import google_crc32c
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


def reads(ckpt: Path, out: Path) -> tuple[dict[str, np.ndarray], bytes, dict[str, np.ndarray]]:
    """A whole load, an export's bytes, and lazy reads: for each 2-D tensor its middle third of
    rows (the row fast path) and its column 1 (through zarr)."""
    loaded = wc.load_checkpoint(ckpt)
    exported = Path(wc.export_safetensors(ckpt, out, overwrite=True)[0]).read_bytes()
    lazy = {}
    with wc.open_checkpoint(ckpt) as opened:
        for name in opened:
            tensor = opened[name]
            if len(tensor.shape) == 2:
                third = tensor.shape[0] // 3
                lazy[f"{name}[rows]"] = np.asarray(tensor[third : 2 * third])
                lazy[f"{name}[:, 1]"] = np.asarray(tensor[:, 1])
    return loaded, exported, lazy


def expected_lazy(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    lazy = {}
    for name, t in tensors.items():
        if t.ndim == 2:
            third = t.shape[0] // 3
            lazy[f"{name}[rows]"] = t[third : 2 * third]
            lazy[f"{name}[:, 1]"] = t[:, 1]
    return lazy


def outcome(ckpt: Path, source: Path, tensors: dict[str, np.ndarray], out: Path) -> str:
    """'refused', 'exact', 'silent' or 'other error' for the checkpoint as it is on disk."""
    try:
        loaded, exported, lazy = reads(ckpt, out)
    except (ValueError, OSError, KeyError):
        return "refused"
    except Exception as exc:  # an error outside the documented ones: a finding in itself
        print(f"  {type(exc).__name__}: {exc}")
        return "other error"
    expected = expected_lazy(tensors)
    same = (
        set(loaded) == set(tensors)
        and all(loaded[k].tobytes() == tensors[k].tobytes() for k in tensors)
        and exported == source.read_bytes()
        and set(lazy) == set(expected)
        and all(lazy[k].tobytes() == expected[k].tobytes() for k in expected)
    )
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


def removed(path: Path, apply: Callable[[], str]) -> str:
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    try:
        return apply()
    finally:
        aside.rename(path)


Entries = list[list[int]]
EMPTY = 2**64 - 1  # an index entry's offset and length for a chunk that is not stored


def swapped(e: Entries, pick: random.Random, other: Entries) -> None:
    i, j = pick.sample(range(len(e)), 2)
    e[i], e[j] = e[j], e[i]


def copied(e: Entries, pick: random.Random, other: Entries) -> None:
    i, j = pick.sample(range(len(e)), 2)
    e[j] = list(e[i])


def offset_moved(e: Entries, pick: random.Random, other: Entries) -> None:
    entry = pick.choice([x for x in e if x[0] != EMPTY])
    entry[0] = max(0, entry[0] + pick.choice([-16, -4, -1, 1, 4, 16]))


def length_changed(e: Entries, pick: random.Random, other: Entries) -> None:
    entry = pick.choice([x for x in e if x[0] != EMPTY])
    entry[1] = max(0, entry[1] + pick.choice([-16, -4, -1, 1, 4, 16]))


def marked_empty(e: Entries, pick: random.Random, other: Entries) -> None:
    pick.choice(e)[:] = [EMPTY, EMPTY]


def other_shard(e: Entries, pick: random.Random, other: Entries) -> None:
    e[:] = [list(x) for x in other]


TAMPERS: dict[str, Callable[[Entries, random.Random, Entries], None]] = {
    "two entries swapped": swapped,
    "an entry copied over another": copied,
    "an entry's offset moved": offset_moved,
    "an entry's length changed": length_changed,
    "an entry marked empty": marked_empty,
    "another shard's index of the array": other_shard,
}


def index_entries(path: Path) -> Entries:
    raw = path.read_bytes()
    return [list(struct.unpack_from("<QQ", raw, len(raw) - INDEX + 16 * i)) for i in range(4)]


def tampered(path: Path, entries: Entries, apply: Callable[[], str]) -> str:
    """``path``'s shard index replaced by ``entries``, its CRC32C recomputed."""
    good = path.read_bytes()
    index = b"".join(struct.pack("<QQ", *e) for e in entries)
    path.write_bytes(good[:-INDEX] + index + google_crc32c.value(index).to_bytes(4, "little"))
    try:
        return apply()
    finally:
        path.write_bytes(good)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=200, help="bit flips per kind of object")
    parser.add_argument("--tampers", type=int, default=50, help="index rewrites per kind")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pick = random.Random(args.seed)
    rows: list[tuple[str, str, Counter[str]]] = []
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        source = make_model(folder, np.random.default_rng(args.seed))
        tensors = load_file(str(source))
        ckpt = folder / "ckpt"
        wc.convert(source, ckpt, chunk_bytes=16 << 10, shard_bytes=64 << 10, progress=False)
        out = folder / "out.safetensors"

        def check() -> str:
            return outcome(ckpt, source, tensors, out)

        assert check() == "exact"
        for kind, spans in regions(ckpt).items():
            counts: Counter[str] = Counter()
            for _ in range(args.flips):
                path, start, end = pick.choice(spans)
                counts[flip(path, pick.randrange(start * 8, end * 8), check)] += 1
            rows.append(("bit flip", kind, counts))
            print("bit flip", kind, dict(counts))
        objects = sorted(p for p in ckpt.rglob("*") if p.is_file())
        counts = Counter(removed(p, check) for p in objects)
        rows.append(("missing object", "every object in turn", counts))
        print("missing", dict(counts))
        shards = {name: sorted((ckpt / name).glob("c.*")) for name in ("w.int8", "w.bf16")}
        for kind, change in TAMPERS.items():
            counts = Counter()
            for _ in range(args.tampers):
                name = pick.choice(list(shards))
                path, other = pick.sample(shards[name], 2)
                entries = index_entries(path)
                change(entries, pick, index_entries(other))
                counts[tampered(path, entries, check)] += 1
            rows.append(("index tampering", kind, counts))
            print("tamper", kind, dict(counts))
    lines = [
        f"# Damaged, missing and tampered objects ({cpu_name()})",
        "",
        f"Command: `python benchmarks/bitflip_campaign.py --flips {args.flips} --tampers "
        f"{args.tampers} --seed {args.seed}`. One case at a time, then a whole load "
        "(`load_checkpoint`), an export, and lazy reads of each 2-D tensor (its middle third of "
        "rows, its column 1) compared with the source: refused (a ValueError or OSError), exact "
        "(the source bit for bit despite the damage), silent (a different result without an "
        "error) or other error (an exception outside the documented ones). These readers take "
        "the arrays' metadata from the root document's consolidated copy: damage to an array's "
        "own zarr.json, or its loss, leaves them exact.",
        "",
        "| campaign | case | cases | refused | exact | silent | other error |",
        "|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {campaign} | {kind} | {sum(c.values())} | {c['refused']} | {c['exact']} "
            f"| {c['silent']} | {c['other error']} |"
            for campaign, kind, c in rows
        ),
    ]
    write_report("bitflip", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
