"""Remote benchmark: loading a converted real model from S3 (the loopback moto server of
wcodec_zarr.testing, with all responses limited to --mbps MB/s together), compressed against
the same tensors stored uncompressed, in the same run:

- wcodec: ``load_checkpoint`` (whole model) and ``Checkpoint.shard`` (tensor-parallel slice);
- wcodec-obstore: the same through ``open_store(..., backend="obstore")``;
- zarr-raw: the same layout (chunks, shards) with no compression, read through zarr;
- safetensors: the original file read by ranged GETs (header, then each tensor's range).

The slice is rank 0 of 8 along the rows of every 2-D weight. Bytes are counted at the server.
Median of --repeats. Writes benchmarks/results/remote-<cpu>-<date>.md.

    python benchmarks/bench_remote.py [--mbps 50] [--repeats 3] [--views fp32 bf16 int8]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import s3fs
import zarr
from report import cpu_name, median_time, write_report
from zarr.core.sync import sync

import wcodec_zarr as wc
from wcodec_zarr.checkpoint.safetensors_file import read_header
from wcodec_zarr.storage import READER_CONFIG, open_store
from wcodec_zarr.testing import ProcessS3
from wcodec_zarr.testing.weights import minilm_views


def upload_raw_zarr(ckpt: wc.Checkpoint, url: str, opts: dict[str, Any]) -> None:
    """The checkpoint's tensors with the same chunks and shards, uncompressed."""
    root = zarr.create_group(open_store(url, storage_options=opts, mode="w"), zarr_format=3)
    for name in ckpt:
        t = ckpt[name]
        z = root.create_array(
            name=name, shape=t.shape, dtype=t.dtype, chunks=t.chunks, shards=t.shards,
            compressors=None, fill_value=0, config={"write_empty_chunks": True},
        )  # fmt: skip
        z[...] = t.numpy()


async def _read_arrays(arrays: list[Any], selections: list[Any]) -> list[Any]:
    return list(
        await asyncio.gather(
            *(a._async_array.getitem(s) for a, s in zip(arrays, selections, strict=True))
        )
    )


def read_raw_zarr(url: str, opts: dict[str, Any], names: list[str], part: bool) -> int:
    group = zarr.open_group(open_store(url, storage_options=opts), mode="r", zarr_format=3)
    arrays = [a for n in names if isinstance(a := group[n], zarr.Array)]
    selections = [
        np.s_[: -(-a.shape[0] // 8)] if part and a.ndim == 2 else np.s_[...] for a in arrays
    ]
    with zarr.config.set(READER_CONFIG):
        out = sync(_read_arrays(arrays, selections))
    return sum(o.nbytes for o in out)


def read_safetensors(fs: s3fs.S3FileSystem, path: str, part: bool) -> int:
    size = fs.size(path)
    with fs.open(path, "rb", block_size=1 << 16) as f:
        header = read_header(f, size, path)
    starts, ends = [], []
    for t in header.tensors:
        begin, end = header.data_start + t.begin, header.data_start + t.end
        if part and len(t.shape) == 2:
            rows = -(-t.shape[0] // 8)
            end = begin + rows * (t.nbytes // max(t.shape[0], 1))
        starts.append(begin)
        ends.append(end)
    data = fs.cat_ranges([path] * len(starts), starts, ends)
    return sum(len(d) for d in data)


def read_wcodec(
    url: str | Callable[[], Any], opts: dict[str, Any], part: bool, rank: int = 0
) -> int:
    """``url``, or a function that opens the store (a new one each time, as a new reader would)."""
    source = url() if callable(url) else url
    if not part:
        return sum(t.nbytes for t in wc.load_checkpoint(source, storage_options=opts).values())
    ckpt = wc.open_checkpoint(source, storage_options=opts)
    total = 0
    for name in ckpt:
        tensor = ckpt[name]
        data = ckpt.shard(name, 0, rank, 8).numpy() if len(tensor.shape) == 2 else tensor.numpy()
        total += data.nbytes
    return total


def slice_needs(tensor: wc.LazyTensor, rank: int = 0) -> float:
    """Stored bytes a rank-of-8 row slice needs: its share of a 2-D weight's rows (as
    ``Checkpoint.shard`` splits them: ``ceil(rows / 8)`` rows, the last rank fewer) and the
    shard index; any other tensor whole."""
    if len(tensor.shape) != 2:
        return tensor.stored_nbytes
    rows = tensor.shape[0]
    index = 0 if tensor.shards is None else 16 * tensor.shards[0] // tensor.chunks[0] + 4
    part = -(-rows // 8)
    share = min(rows, part * (rank + 1)) - min(rows, part * rank)
    return tensor.stored_nbytes * share / rows + index


def bench_view(
    s3: ProcessS3, view: str, tensors: dict[str, np.ndarray], repeats: int, work: Path
) -> dict[str, Any]:
    from safetensors.numpy import save_file

    src = work / f"minilm-{view}.safetensors"
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(src))
    bucket = f"bench-{view}"
    s3.create_bucket(bucket)
    opts = s3.storage_options()
    s3.set_bandwidth(None)
    url = f"s3://{bucket}/wcodec.zarr"
    wc.convert(src, url, storage_options=opts, progress=False)
    ckpt = wc.open_checkpoint(url, storage_options=opts)
    fs = s3fs.S3FileSystem(**opts, max_concurrency=1, skip_instance_cache=True)
    raw_url = f"s3://{bucket}/raw.zarr"
    upload_raw_zarr(ckpt, raw_url, opts)
    st_path = f"{bucket}/model.safetensors"
    fs.put_file(str(src), st_path)
    names = list(ckpt)
    row: dict[str, Any] = {"view": view, "MB": src.stat().st_size / 1e6}
    row["ratio"] = src.stat().st_size / ckpt.stored_nbytes
    row["slice-needed"] = fs.size(f"{bucket}/wcodec.zarr/zarr.json") + sum(
        slice_needs(ckpt[n]) for n in names
    )
    s3.set_bandwidth(MBPS * 1e6)

    def obstore() -> Any:
        return wc.open_store(url, storage_options=s3.obstore_options(), backend="obstore")

    readers: dict[str, Callable[[bool], int]] = {
        "wcodec": lambda part: read_wcodec(url, opts, part),
        "wcodec-obstore": lambda part: read_wcodec(obstore, {}, part),
        "zarr-raw": lambda part: read_raw_zarr(raw_url, opts, names, part),
        "safetensors": lambda part: read_safetensors(fs, st_path, part),
    }
    for name, reader in readers.items():
        for part in (False, True):
            label = f"{name}-{'slice' if part else 'all'}"
            reader(part)  # warm-up (fsspec instances, connections)
            s3.reset_log()
            row[f"{label}-s"] = median_time(lambda r=reader, p=part: r(p), repeats)  # type: ignore[misc]
            row[f"{label}-bytes"] = sum(r.nbytes for r in s3.requests) / repeats
            row[f"{label}-gets"] = len([r for r in s3.requests if r.method == "GET"]) / repeats
    s3.set_bandwidth(None)
    # every rank's slice, for its bytes: the first rows of a tensor need not compress as well as
    # its average, so one rank's share says little alone
    fetched_all = needed_all = 0.0
    for rank in range(8):
        needed = fs.size(f"{bucket}/wcodec.zarr/zarr.json") + sum(
            slice_needs(ckpt[n], rank) for n in names
        )
        s3.reset_log()
        read_wcodec(url, opts, True, rank)
        fetched = sum(r.nbytes for r in s3.requests)
        row[f"rank{rank}-share"] = fetched / needed
        fetched_all += fetched
        needed_all += needed
    row["ranks-share"] = fetched_all / needed_all
    return row


MBPS = 50.0  # on a 2-core machine moto serves about 70 MB/s: a lower limit is the one that binds


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"# Remote benchmark: loopback S3 (moto) limited to {MBPS:.0f} MB/s, {cpu_name()}",
        "",
        "| view | MB | ratio | reader | whole s | whole MB fetched | GETs | slice s "
        "| slice MB fetched | GETs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for reader in ("wcodec", "wcodec-obstore", "zarr-raw", "safetensors"):
            lines.append(
                f"| {r['view']} | {r['MB']:.1f} | {r['ratio']:.4f} | {reader} "
                f"| {r[f'{reader}-all-s']:.3f} | {r[f'{reader}-all-bytes'] / 1e6:.2f} "
                f"| {r[f'{reader}-all-gets']:.0f} | {r[f'{reader}-slice-s']:.3f} "
                f"| {r[f'{reader}-slice-bytes'] / 1e6:.2f} | {r[f'{reader}-slice-gets']:.0f} |"
            )
    lines += ["", "Bars:"]
    for r in rows:
        for peer in ("zarr-raw", "safetensors"):
            speedup = r[f"{peer}-all-s"] / r["wcodec-all-s"]
            ok = speedup >= 0.9 * r["ratio"]
            lines.append(
                f"- {r['view']}: whole load {speedup:.2f}x faster than {peer}, size ratio "
                f"{r['ratio']:.2f} (bar: at least 90% of it): {'PASS' if ok else 'FAIL'}"
            )
        share = r["wcodec-slice-bytes"] / r["slice-needed"]
        lines.append(
            f"- {r['view']}: the slice fetched {r['wcodec-slice-bytes'] / 1e6:.2f} MB, "
            f"{share:.2f}x the {r['slice-needed'] / 1e6:.2f} MB it needs (rank 0's rows of "
            f"each 2-D weight, other tensors whole, shard indexes; bar 1.0x): "
            f"{'PASS' if share <= 1.0 else 'FAIL'}"
        )
        shares = ", ".join(f"{r[f'rank{k}-share']:.3f}" for k in range(8))
        lines.append(
            f"- {r['view']}: bytes fetched over bytes needed, ranks 0-7: {shares}; "
            f"all 8 together: {r['ranks-share']:.4f}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    global MBPS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mbps", type=float, default=MBPS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--views", nargs="+", default=["fp32", "bf16", "int8"])
    args = parser.parse_args()
    MBPS = args.mbps
    views = minilm_views()
    with tempfile.TemporaryDirectory() as tmp, ProcessS3() as s3:
        rows = [bench_view(s3, v, views[v], args.repeats, Path(tmp)) for v in args.views]
    write_report("remote", report(rows))


if __name__ == "__main__":
    main()
