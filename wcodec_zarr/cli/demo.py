"""``wcodec demo``: the main job on the real all-MiniLM-L6-v2 model. Converts it to a checkpoint,
prints the ``info`` table, verifies it bit for bit, reads one tensor-parallel slice lazily, loads
it on the GPU when one is usable, then reports the codec alone on three dtype views (fp32 as
shipped, bf16, int8 per-row quantized): ratio beside the order-0 entropy bound, encode/decode
speed, bit-exactness."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import convert, load_checkpoint, open_checkpoint, verify
from ..codec.chunks import decode, encode, inspect
from ..codec.dtypes import is_supported
from ..codec.gpu import gpu_status
from ..codec.native import core
from ..testing.weights import Tensors, load_safetensors, minilm_path, minilm_views
from .tables import format_info, info_rows


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
        encoded = {k: encode(t, threads=threads) for k, t in supported.items()}
        encode_s = min(encode_s, time.perf_counter() - start)
        start = time.perf_counter()
        decoded = {k: decode(e, threads=threads) for k, e in encoded.items()}
        decode_s = min(decode_s, time.perf_counter() - start)
    exact = all(decoded[k].tobytes() == t.tobytes() for k, t in supported.items())
    bound = sum(inspect(e)["coded_bound_bytes"] for e in encoded.values())
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


SLICE_TENSOR = "encoder.layer.0.intermediate.dense.weight"


def checkpoint_steps(model: Path, out: str) -> bool:
    """Convert, info, verify, a lazy slice and (with a GPU) a GPU load; True if all bit-exact."""
    start = time.perf_counter()
    convert(model, out, overwrite=True)
    elapsed = time.perf_counter() - start
    ckpt = open_checkpoint(out)
    print(f"\nconverted {model.name} -> {out} in {elapsed:.2f} s\n")
    print(format_info(ckpt, info_rows(ckpt)))

    report = verify(model, out)
    print(f"\nverify: {'OK' if report.ok else 'MISMATCH'}, {report.checked} tensors bit-exact")

    original = load_safetensors(model)
    name = SLICE_TENSOR if SLICE_TENSOR in ckpt else next(iter(ckpt))
    part = ckpt.shard(name, 0, 1, 8)
    start = time.perf_counter()
    data = part.numpy()
    elapsed = time.perf_counter() - start
    part_rows = -(-len(original[name]) // 8) if original[name].ndim else 0
    expected = original[name][part_rows : 2 * part_rows] if part_rows else original[name]
    exact = data.tobytes() == expected.tobytes()
    print(
        f"lazy slice: rank 1 of 8 of {name} {part.shape}, {data.nbytes / 1e6:.2f} MB in "
        f"{elapsed * 1e3:.1f} ms, bit-exact {'yes' if exact else 'NO'}"
    )

    status = gpu_status()
    if status["available"]:
        start = time.perf_counter()
        tensors = load_checkpoint(out, device="cuda")
        elapsed = time.perf_counter() - start
        gpu_exact = all(tensors[k].get().tobytes() == original[k].tobytes() for k in tensors)
        print(
            f"GPU load: {len(tensors)} tensors in {elapsed * 1e3:.1f} ms, "
            f"bit-exact {'yes' if gpu_exact else 'NO'}"
        )
        exact = exact and gpu_exact
    else:
        print(f"GPU load: skipped ({status['reason']})")
    return report.ok and exact


def main(model: Path | None, out: str, threads: int, repeats: int) -> int:
    path = model if model is not None else minilm_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    n = None if threads == 0 else threads
    print(
        f"wcodec demo: {path.name}, format v{core.FORMAT_VERSION}, decoder {core.simd()}, "
        f"threads {'all' if n is None else n}"
    )
    ok = checkpoint_steps(path, out)
    print("\ncodec alone, per dtype view (whole tensors, one chunk each):")
    results = run(path, n, repeats)
    print(format_table(results))
    print(
        "ratio: original / compressed bytes; bound: the same for the order-0 entropy of each "
        "coded byte plane (one table per tensor); gap: size over that bound"
    )
    return 0 if ok and all(r.exact for r in results) else 1
