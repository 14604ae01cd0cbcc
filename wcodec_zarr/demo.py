"""``wcodec demo``: compress real MiniLM weights in three dtype views and report, per view, the
ratio beside the order-0 entropy bound, encode/decode speed and a bit-exact check."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import api
from .dtypes import is_supported
from .weights import Tensors, minilm_views


@dataclass(frozen=True)
class ViewResult:
    view: str
    tensors: int
    nbytes: int
    compressed: int
    bound: float  # order-0 bound of the planes coded, raw planes at their size (bytes)
    encode_s: float
    decode_s: float
    exact: bool

    @property
    def ratio(self) -> float:
        return self.nbytes / self.compressed

    @property
    def bound_ratio(self) -> float:
        return self.nbytes / self.bound


def run_view(view: str, tensors: Tensors, threads: int | None, repeats: int) -> ViewResult:
    supported = {k: t for k, t in tensors.items() if is_supported(t.dtype)}
    encode_s = decode_s = float("inf")
    encoded: dict[str, bytes] = {}
    decoded: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = {k: api.encode(t, threads=threads) for k, t in supported.items()}
        encode_s = min(encode_s, time.perf_counter() - start)
        start = time.perf_counter()
        decoded = {k: api.decode(e, threads=threads) for k, e in encoded.items()}
        decode_s = min(decode_s, time.perf_counter() - start)
    exact = all(decoded[k].tobytes() == t.tobytes() for k, t in supported.items())
    bound = sum(api.inspect(e)["coded_bound_bytes"] for e in encoded.values())
    return ViewResult(
        view=view,
        tensors=len(supported),
        nbytes=sum(t.nbytes for t in supported.values()),
        compressed=sum(len(e) for e in encoded.values()),
        bound=bound,
        encode_s=encode_s,
        decode_s=decode_s,
        exact=exact,
    )


def format_table(results: list[ViewResult]) -> str:
    header = (
        f"{'view':<6} {'tensors':>7} {'MB':>8} {'ratio':>7} {'bound':>7} {'gap':>7} "
        f"{'enc MB/s':>9} {'dec MB/s':>9}  bit-exact"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.view:<6} {r.tensors:>7} {r.nbytes / 1e6:>8.2f} {r.ratio:>7.4f} "
            f"{r.bound_ratio:>7.4f} {100 * (r.compressed / r.bound - 1):>6.2f}% "
            f"{r.nbytes / r.encode_s / 1e6:>9.0f} {r.nbytes / r.decode_s / 1e6:>9.0f}  "
            f"{'yes' if r.exact else 'NO'}"
        )
    return "\n".join(lines)


def run(model: Path | None, threads: int | None, repeats: int) -> list[ViewResult]:
    views = minilm_views(model)
    return [run_view(name, tensors, threads, repeats) for name, tensors in views.items()]
