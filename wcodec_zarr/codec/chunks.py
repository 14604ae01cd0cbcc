"""encode / decode / decode_batch / inspect on NumPy arrays and byte buffers. Batches decode in
one multi-threaded native call on the CPU, or in one kernel launch on the GPU (``gpu``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .buffers import as_bytes_view
from .dtypes import CODE_TO_DTYPE, check_declared, dtype_code, little_endian
from .errors import ChunkError
from .gpu import decode_batch_gpu, gpu_status
from .native import core

SEGMENT_KIB = 64
FORMAT_VERSION: int = core.FORMAT_VERSION


def _threads(threads: int | None) -> int:
    """Native thread count: 0 means every core."""
    if threads is None:
        return 0
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    return threads


def encode(
    array: npt.ArrayLike,
    *,
    threads: int | None = None,
    checksum: bool = True,
    predict: bool = True,
) -> bytes:
    """Encodes an array into one self-describing chunk.

    Any layout is accepted (Fortran order, strided views, big-endian): the chunk stores the
    values in C order, little-endian. ``checksum`` stores a CRC32C of the decoded bytes that
    every decode verifies; ``predict`` lets the encoder use the delta predictor on segments
    where it lowers the coded size. ``threads=None`` uses every core, ``threads=1`` only the
    calling thread.
    """
    arr = np.asarray(array)
    code = dtype_code(arr.dtype)
    contiguous = np.asarray(arr, dtype=little_endian(arr.dtype), order="C")
    flat = contiguous.reshape(-1).view(np.uint8)
    shape = [int(n) for n in arr.shape]
    encoded: bytes = core.encode(
        flat, code, shape, _threads(threads), bool(checksum), bool(predict), SEGMENT_KIB
    )
    return encoded


def _check_out(out: Any, dtype: np.dtype[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, the chunk decodes to {dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, the chunk decodes to {shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writeable C-contiguous array")
    return out


def _prepare(
    data: Any, out: Any | None, max_nbytes: int | None
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[Any]]:
    buf = as_bytes_view(data)
    code, shape = core.header(buf)
    check_declared(code, shape, max_nbytes)
    dtype = CODE_TO_DTYPE[code]
    target = np.empty(shape, dtype=dtype) if out is None else _check_out(out, dtype, shape)
    return buf, target


class DecodedBatch(list[Any]):
    """The arrays of a batch decode, and where they were decoded.

    ``device`` is ``"cpu"`` or ``"cuda"``; ``fallback_reason`` says why ``device="auto"`` used
    the CPU (empty otherwise).
    """

    def __init__(self, arrays: list[Any], device: str, fallback_reason: str = "") -> None:
        super().__init__(arrays)
        self.device = device
        self.fallback_reason = fallback_reason


def _resolve_device(device: str) -> tuple[str, str]:
    if device not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    if device == "cpu":
        return "cpu", ""
    status = gpu_status()
    if status["available"]:
        return "cuda", ""
    if device == "cuda":
        raise RuntimeError(f"GPU decoding is unavailable: {status['reason']}")
    return "cpu", status["reason"]


def decode(
    data: Any,
    *,
    out: Any = None,
    threads: int | None = None,
    device: str = "cpu",
    stream: Any = None,
    max_nbytes: int | None = None,
) -> Any:
    """Decodes one chunk; dtype and shape come from its header.

    ``out`` (a writeable C-contiguous array of exactly that dtype and shape) is filled in place
    and returned. Corrupt or truncated input raises ``ValueError`` naming the problem.
    ``device="cuda"`` decodes on the GPU into a CuPy array (on ``stream``, default the current
    one); ``"auto"`` does so when a GPU is usable and decodes on the CPU otherwise.
    ``max_nbytes`` refuses, before allocating, a chunk that declares more decoded bytes (a few
    bytes of constant planes can declare gigabytes): pass it for input you did not write.
    """
    return decode_batch(
        [data],
        outs=None if out is None else [out],
        threads=threads,
        device=device,
        stream=stream,
        max_nbytes=max_nbytes,
    )[0]


def decode_batch(
    chunks: Sequence[Any],
    *,
    outs: Sequence[Any] | None = None,
    threads: int | None = None,
    device: str = "cpu",
    stream: Any = None,
    max_nbytes: int | None = None,
) -> DecodedBatch:
    """Decodes many chunks in one native call whose threads share all their segments (CPU), or
    in one kernel launch (``device="cuda"``, or ``"auto"`` with a usable GPU).

    A corrupt chunk raises ``ChunkError`` (a ``ValueError``) whose message starts with
    ``chunk <i>:``; so does one that declares more than ``max_nbytes`` decoded bytes.
    """
    where, reason = _resolve_device(device)
    if where == "cuda":
        decoded = decode_batch_gpu(chunks, outs=outs, stream=stream, max_nbytes=max_nbytes)
        return DecodedBatch(decoded, "cuda")
    return DecodedBatch(_decode_batch_cpu(chunks, outs, threads, max_nbytes), "cpu", reason)


def _decode_batch_cpu(
    chunks: Sequence[Any],
    outs: Sequence[Any] | None,
    threads: int | None,
    max_nbytes: int | None,
) -> list[Any]:
    if outs is not None and len(outs) != len(chunks):
        raise ValueError(f"got {len(outs)} output arrays for {len(chunks)} chunks")
    bufs: list[npt.NDArray[np.uint8]] = []
    targets: list[npt.NDArray[Any]] = []
    for i, data in enumerate(chunks):
        try:
            buf, target = _prepare(data, None if outs is None else outs[i], max_nbytes)
        except ValueError as exc:
            raise ChunkError(f"chunk {i}: {exc}", i, str(exc)) from None
        bufs.append(buf)
        targets.append(target)
    core.decode_batch(bufs, [t.reshape(-1).view(np.uint8) for t in targets], _threads(threads))
    return targets


def inspect(data: Any) -> dict[str, Any]:
    """Describes a chunk: header fields, per-plane coding, sizes and order-0 entropy bounds.

    The entropy bound of a plane is its order-0 entropy (bits per element, computed on the
    decoded bytes, so this decodes the chunk). ``coded_bound_bytes`` counts raw planes at their
    stored size, the bound the codec is measured against.
    """
    buf = as_bytes_view(data)
    info: dict[str, Any] = dict(core.inspect(buf))
    dtype = CODE_TO_DTYPE[info.pop("dtype_code")]
    decoded = decode(buf)
    nelem = int(decoded.size)
    entropy = core.plane_entropy(decoded.reshape(-1).view(np.uint8), dtype_code(dtype))
    planes = []
    bound = 0.0
    coded_bound = 0.0
    for plane, bits in zip(info["planes"], entropy, strict=True):
        plane = dict(plane)
        plane["entropy_bits"] = bits
        plane["bound_bytes"] = bits * nelem / 8
        plane["bytes"] = plane["descriptor_bytes"] + plane["index_bytes"] + plane["payload_bytes"]
        bound += plane["bound_bytes"]
        coded_bound += nelem if plane["mode"] == "raw" else plane["bound_bytes"]
        planes.append(plane)
    compressed = int(buf.size)
    info.update(
        dtype=str(dtype),
        compressed_nbytes=compressed,
        ratio=info["nbytes"] / compressed if compressed else float("inf"),
        planes=planes,
        entropy_bound_bytes=bound,
        coded_bound_bytes=coded_bound,
    )
    return info
