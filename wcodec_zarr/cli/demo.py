"""``wcodec demo``: the main job on the real all-MiniLM-L6-v2 model. Converts it to a checkpoint,
verifies it bit for bit, reads one tensor-parallel slice lazily and loads it on the GPU when one
is usable, and prints a summary of that (the ``info`` table too with ``--tensors``); then
reports the codec alone on three dtype views (fp32 as shipped, bf16, int8 per-row quantized):
ratio beside the order-0 entropy bound, encode/decode speed, bit-exactness."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint, convert, load_checkpoint, open_checkpoint, verify
from ..codec.chunks import SEGMENT_KIB, decode, encode, inspect
from ..codec.dtypes import is_supported
from ..codec.gpu import gpu_status
from ..codec.native import core
from ..testing.weights import Tensors, load_safetensors, minilm_path, minilm_views
from .tables import format_info, info_rows, mb


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


def _dtypes(ckpt: Checkpoint) -> str:
    counts = Counter(ckpt[name].safetensors_dtype for name in ckpt)
    return ", ".join(f"{n} {dtype}" for dtype, n in counts.most_common())


def checkpoint_steps(model: Path, out: str, tensors: bool) -> bool:
    """Convert, verify, a lazy slice and (with a GPU) a GPU load, printed as a summary (the
    per-tensor table too with ``tensors``); True if all bit-exact."""
    start = time.perf_counter()
    convert(model, out, overwrite=True, progress=False)
    convert_s = time.perf_counter() - start
    ckpt = open_checkpoint(out)
    rows = info_rows(ckpt)
    bound = sum(r["bound_bytes"] for r in rows if r["bound_bytes"] is not None)
    coded = sum(r["nbytes"] for r in rows if r["bound_bytes"] is not None)
    report = verify(model, out)

    original = load_safetensors(model)
    name = SLICE_TENSOR if SLICE_TENSOR in ckpt else next(iter(ckpt))
    part = ckpt.shard(name, 0, 1, 8)
    start = time.perf_counter()
    data = part.numpy()
    slice_s = time.perf_counter() - start
    part_rows = -(-len(original[name]) // 8) if original[name].ndim else 0
    expected = original[name][part_rows : 2 * part_rows] if part_rows else original[name]
    exact = data.tobytes() == expected.tobytes()

    status = gpu_status()
    if status["available"]:
        start = time.perf_counter()
        loaded = load_checkpoint(out, device="cuda")
        gpu_s = time.perf_counter() - start
        gpu_exact = all(loaded[k].get().tobytes() == original[k].tobytes() for k in loaded)
        gpu = (
            f"{len(loaded)} tensors in {gpu_s * 1e3:.1f} ms, "
            f"bit-exact {'yes' if gpu_exact else 'NO'}"
        )
        exact = exact and gpu_exact
    else:
        gpu = f"skipped ({status['reason']})"

    summary = [
        ("model", f"{model.name}: {len(ckpt)} tensors ({_dtypes(ckpt)}), {mb(ckpt.nbytes)} MB"),
        (
            "checkpoint",
            f"{out}: {mb(ckpt.stored_nbytes)} MB, ratio {ckpt.nbytes / ckpt.stored_nbytes:.4f} "
            f"(order-0 bound {coded / bound:.4f}), converted in {convert_s:.2f} s",
        ),
        (
            "verify",
            f"{'OK' if report.ok else 'MISMATCH'}, {report.checked} tensors bit-exact"
            if report.exact
            else f"{'OK, LOSSY' if report.ok else 'MISMATCH'}: {len(report.mismatches)} "
            "difference(s)",
        ),
        (
            "lazy slice",
            f"rank 1 of 8 of {name} {part.shape}: {data.nbytes / 1e6:.2f} MB in "
            f"{slice_s * 1e3:.1f} ms, bit-exact {'yes' if exact else 'NO'}",
        ),
        ("GPU load", gpu),
    ]
    print()
    for label, text in summary:
        print(f"{label + ':':<12} {text}")
    if tensors:
        print()
        print(format_info(ckpt, rows))
    else:
        print(f"{'':<12} (per tensor: wcodec demo --tensors, or wcodec info {out})")
    return report.exact and exact


LEGEND = (
    "ratio: original / compressed bytes\n"
    "bound: original / the order-0 entropy of each coded byte plane, one table per tensor (per "
    f"shard in a checkpoint); the codec keeps a table per segment of {SEGMENT_KIB} KiB, so where "
    "a tensor's statistics vary it can beat this bound; gap: size over the bound\n"
    "views: fp32 as shipped; bf16 each float rounded to bfloat16; int8 the 2-D weights "
    "quantized per row (symmetric, scale max|w|/127), as int8 checkpoints store them"
)


def main(model: Path | None, out: str, threads: int, repeats: int, tensors: bool = False) -> int:
    path = model if model is not None else minilm_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    n = None if threads == 0 else threads
    label = path.name if model is not None else f"all-MiniLM-L6-v2 ({path.name})"
    print(
        f"wcodec demo: {label}, format v{core.FORMAT_VERSION}, decoder {core.simd()}, "
        f"threads {'all' if n is None else n}"
    )
    ok = checkpoint_steps(path, out, tensors)
    print("\ncodec alone, per dtype view (whole tensors, one chunk each):")
    results = run(path, n, repeats)
    print(format_table(results))
    print(LEGEND)
    return 0 if ok and all(r.exact for r in results) else 1
