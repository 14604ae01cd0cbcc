"""Tables the command prints: the per-tensor ``info`` table of a checkpoint."""

from __future__ import annotations

from typing import Any

from ..checkpoint import Checkpoint


def mb(n: float) -> str:
    """Bytes as megabytes (10^6), two decimals."""
    return f"{n / 1e6:.2f}"


def info_rows(ckpt: Checkpoint) -> list[dict[str, Any]]:
    """Per tensor: names, dtypes, shape, sizes, ratio, entropy bound (bytes), codec; in file
    order."""
    rows = []
    for name in ckpt:
        t = ckpt[name]
        rows.append(
            {
                "name": name,
                "dtype": t.safetensors_dtype,
                "stored_dtype": str(t.dtype),
                "shape": list(ckpt.entry(name).shape),
                "nbytes": t.nbytes,
                "stored_nbytes": t.stored_nbytes,
                "ratio": t.nbytes / t.stored_nbytes if t.stored_nbytes else None,
                "bound_bytes": t.entropy_bound_bytes,
                "codec": ckpt.manifest["tensors"][name]["codec"],
                "quantized": t.quantized,
            }
        )
    return rows


def _ratio(nbytes: float, bound: float | None) -> float | None:
    """original / bound; None where there is no bound (a tensor stored with zstd) or it is 0 (a
    constant tensor: the ratio is unbounded)."""
    return nbytes / bound if bound else None


def info_json(url: str, ckpt: Checkpoint, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``info --json``: the rows, the totals, the files (every number finite: ratios are left
    out where they are unbounded, the bound bytes say why)."""
    coded = [r for r in rows if r["bound_bytes"] is not None]
    bound = sum(r["bound_bytes"] for r in coded)
    totals = {
        "tensors": len(rows),
        "nbytes": ckpt.nbytes,
        "stored_nbytes": ckpt.stored_nbytes,
        "ratio": ckpt.nbytes / ckpt.stored_nbytes if ckpt.stored_nbytes else None,
        "wcodec_nbytes": sum(r["nbytes"] for r in coded),
        "bound_bytes": bound,
        "bound_ratio": _ratio(sum(r["nbytes"] for r in coded), bound),
        "quantized": ckpt.quantized,
    }
    return {
        "url": url,
        "files": [{"name": f.name, "size": f.size} for f in ckpt.files],
        "index": None if ckpt.index is None else ckpt.index[0],
        "other_files": [{"name": f.name, "size": f.size} for f in ckpt.other_files],
        "tensors": [{**r, "bound_ratio": _ratio(r["nbytes"], r["bound_bytes"])} for r in rows],
        "totals": totals,
    }


def format_info(ckpt: Checkpoint, rows: list[dict[str, Any]]) -> str:
    width = max([len("tensor"), *(len(r["name"]) for r in rows)])
    header = (
        f"{'tensor':<{width}} {'dtype':<7} {'shape':<14} {'MB':>8} {'stored':>8} "
        f"{'ratio':>7} {'bound':>7}  codec"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        ratio = _ratio(r["nbytes"], r["bound_bytes"])
        bound = "-" if r["bound_bytes"] is None else ("inf" if ratio is None else f"{ratio:.4f}")
        codec = r["codec"] + (" (int8, lossy)" if r["quantized"] else "")
        lines.append(
            f"{r['name']:<{width}} {r['dtype']:<7} {'x'.join(map(str, r['shape'])) or '()':<14} "
            f"{mb(r['nbytes']):>8} {mb(r['stored_nbytes']):>8} "
            f"{(r['ratio'] or 0):>7.4f} {bound:>7}  {codec}"
        )
    lines.append("-" * len(header))
    total, stored = ckpt.nbytes, ckpt.stored_nbytes
    coded = [r for r in rows if r["bound_bytes"] is not None]
    bound_ratio = _ratio(sum(r["nbytes"] for r in coded), sum(r["bound_bytes"] for r in coded))
    lines.append(
        f"{'total (' + str(len(rows)) + ' tensors)':<{width}} {'':<7} {'':<14} {mb(total):>8} "
        f"{mb(stored):>8} {(total / stored if stored else 0):>7.4f} "
        f"{('-' if bound_ratio is None else f'{bound_ratio:.4f}'):>7}"
    )
    lines.append(
        "ratio: original / stored chunk bytes (Zarr metadata not counted)\n"
        "bound: original / order-0 entropy of each byte plane, measured per shard (wcodec "
        "tensors only); the codec's tables are per segment of a chunk, so a tensor whose "
        "statistics vary within a shard can beat it"
    )
    if ckpt.other_files:
        names = ", ".join(f.name for f in ckpt.other_files)
        lines.append(f"other files ({len(ckpt.other_files)}): {names}")
    return "\n".join(lines)
