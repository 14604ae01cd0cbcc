"""Tables the command prints: the per-tensor ``info`` table of a checkpoint."""

from __future__ import annotations

from typing import Any

from ..checkpoint import Checkpoint


def mb(n: float) -> str:
    """Bytes as megabytes (10^6), two decimals."""
    return f"{n / 1e6:.2f}"


def info_rows(ckpt: Checkpoint) -> list[dict[str, Any]]:
    """Per tensor: names, dtypes, shape, sizes, ratio, bound ratio, codec; in file order."""
    rows = []
    for name in ckpt:
        t = ckpt[name]
        bound = t.entropy_bound_bytes
        rows.append(
            {
                "name": name,
                "dtype": t.safetensors_dtype,
                "stored_dtype": str(t.dtype),
                "shape": list(ckpt.entry(name).shape),
                "nbytes": t.nbytes,
                "stored_nbytes": t.stored_nbytes,
                "ratio": t.nbytes / t.stored_nbytes if t.stored_nbytes else None,
                "bound_ratio": None
                if bound is None
                else (t.nbytes / bound if bound else float("inf")),
                "codec": ckpt.manifest["tensors"][name]["codec"],
                "quantized": t.quantized,
            }
        )
    return rows


def format_info(ckpt: Checkpoint, rows: list[dict[str, Any]]) -> str:
    width = max([len("tensor"), *(len(r["name"]) for r in rows)])
    header = (
        f"{'tensor':<{width}} {'dtype':<7} {'shape':<14} {'MB':>8} {'stored':>8} "
        f"{'ratio':>7} {'bound':>7}  codec"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        bound = "-" if r["bound_ratio"] is None else f"{r['bound_ratio']:.4f}"
        codec = r["codec"] + (" (int8, lossy)" if r["quantized"] else "")
        lines.append(
            f"{r['name']:<{width}} {r['dtype']:<7} {'x'.join(map(str, r['shape'])) or '()':<14} "
            f"{mb(r['nbytes']):>8} {mb(r['stored_nbytes']):>8} "
            f"{(r['ratio'] or 0):>7.4f} {bound:>7}  {codec}"
        )
    lines.append("-" * len(header))
    total, stored = ckpt.nbytes, ckpt.stored_nbytes
    bounds = [r["nbytes"] / r["bound_ratio"] for r in rows if r["bound_ratio"] is not None]
    coded = sum(r["nbytes"] for r in rows if r["bound_ratio"] is not None)
    lines.append(
        f"{'total (' + str(len(rows)) + ' tensors)':<{width}} {'':<7} {'':<14} {mb(total):>8} "
        f"{mb(stored):>8} {total / stored:>7.4f} "
        f"{(coded / sum(bounds) if bounds else 0):>7.4f}"
    )
    lines.append(
        "ratio: original / stored chunk bytes (Zarr metadata not counted); bound: original / "
        "order-0 entropy of each byte plane, per shard (wcodec tensors only)"
    )
    return "\n".join(lines)
