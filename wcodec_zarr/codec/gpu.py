"""GPU decoding with the CUDA module and CuPy.

``decode_batch_gpu`` gathers the chunks into one pinned host buffer, copies it to the device in
one transfer, plans the batch on the host (headers, tables and index are parsed and validated
there) and decodes every chunk in one kernel launch on the given stream. Chunks already in
device memory (CuPy arrays) stay there: only their heads (header, tables, index) are copied to
the host to plan. It then waits for that
stream, because per-chunk errors are reported as exceptions; ``PreparedBatch`` separates the
steps for callers that wait themselves, and the native API underneath
(``native/include/wcodec/cuda_decode.h``) never synchronises.

CuPy has no bfloat16 or float8 dtypes: those chunks decode into arrays of the unsigned integer
of the same width holding the same bits (``checkpoint.frameworks.to_torch`` reinterprets them
for PyTorch).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

from . import native
from .buffers import as_bytes_view
from .dtypes import CODE_TO_DTYPE, check_declared
from .errors import ChunkError
from .staging import place_objects

ALIGN = 256

# Storage dtypes for the decoded bits where CuPy lacks the logical dtype.
_BITS_DTYPE = {"bfloat16": np.uint16, "float8_e4m3fn": np.uint8, "float8_e5m2": np.uint8}


@cache
def gpu_status() -> dict[str, Any]:
    """Whether GPU decoding works here, and why not: the CUDA module, CuPy and a device."""
    report = native.cuda_report()
    status: dict[str, Any] = {
        "available": False,
        "cuda_module": report["built"],
        "cupy": importlib.util.find_spec("cupy") is not None,
        "devices": report["devices"],
        "reason": "",
    }
    if not report["built"]:
        status["reason"] = report["error"]
    elif not report["devices"]:
        status["reason"] = f"no usable CUDA device: {report['error'] or 'none found'}"
    elif not status["cupy"]:
        status["reason"] = "CuPy is not installed (pip install 'wcodec-zarr[gpu]')"
    else:
        status["available"] = True
    return status


def gpu_available() -> bool:
    """Whether chunks can be decoded on a GPU here: the CUDA module built and a usable device
    (``gpu_status()`` says why not)."""
    return bool(gpu_status()["available"])


def storage_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype a GPU result is held in: the dtype itself, or same-width bits (bfloat16...)."""
    return np.dtype(_BITS_DTYPE.get(str(dtype), dtype))


# Bytes of each device-resident chunk copied to the host first: its fixed header, and the whole
# head (as bounded by core.head: the largest tables a descriptor can hold, then the index) of a
# chunk of up to about 880 segments of one plane or 110 of four (7 MiB of fp32).
HEAD_PREFIX = 8192


def _heads(devs: Sequence[Any], sizes: Sequence[int]) -> list[np.ndarray]:
    """The first sizes[i] bytes of each device array, gathered on the device and copied to the
    host in one transfer."""
    import cupy as cp

    if not devs:
        return []
    host = cp.concatenate([d[:n] for d, n in zip(devs, sizes, strict=True)]).get()
    return np.split(host, np.cumsum(sizes)[:-1])


def _host_bytes(chunk: Any) -> np.ndarray:
    """Host bytes of a chunk (a chunk in device memory, in a batch that mixes host and device
    chunks, is copied back)."""
    if hasattr(chunk, "__cuda_array_interface__"):
        import cupy as cp

        host: np.ndarray = cp.asarray(chunk).reshape(-1).view(cp.uint8).get()
        return host
    return as_bytes_view(chunk)


class PreparedBatch:
    """A batch of chunks made ready to decode on the GPU: the chunk bytes uploaded (one pinned
    host buffer, one copy), the plan made, outputs and workspace allocated. ``launch`` enqueues
    the decode (no synchronisation) and can be repeated; ``check`` waits for the stream and
    raises ``ChunkError`` for a chunk that failed. ``results`` are the output arrays (the
    outputs of a batch made by ``planned`` belong to its caller)."""

    results: list[Any]

    def __init__(
        self,
        chunks: Sequence[Any],
        outs: Sequence[Any | None] | None,
        stream: Any,
        max_nbytes: int | None = None,
    ) -> None:
        import cupy as cp

        if not gpu_available():
            raise RuntimeError(f"GPU decoding is unavailable: {gpu_status()['reason']}")
        if outs is not None and len(outs) != len(chunks):
            raise ValueError(f"got {len(outs)} output arrays for {len(chunks)} chunks")
        if chunks and all(hasattr(c, "__cuda_array_interface__") for c in chunks):
            self._from_device(chunks, outs, stream, max_nbytes)
            return
        hosts = [_host_bytes(c) for c in chunks]
        count = len(hosts)
        # every chunk copied into place by native threads
        staging, offsets, lens = place_objects(
            hosts,
            [h.size for h in hosts],
            [0] * count,
            [1] * count,
            ALIGN,
            lambda n: np.frombuffer(cp.cuda.alloc_pinned_memory(n), np.uint8, n),
        )
        self.results = []
        for i, host in enumerate(hosts):
            try:
                code, shape = native.core.header(host)
            except ValueError as exc:
                raise ChunkError(f"chunk {i}: {exc}", i, str(exc)) from None
            self.results.append(self._output(i, code, shape, outs, max_nbytes))
        out_ptrs = np.asarray([r.data.ptr for r in self.results], np.uint64)
        out_lens = np.asarray([r.nbytes for r in self.results], np.uint64)
        self._setup(staging, offsets, lens, out_ptrs, out_lens, stream)

    @staticmethod
    def _output(
        i: int,
        code: int,
        shape: Sequence[int],
        outs: Sequence[Any | None] | None,
        limit: int | None,
    ) -> Any:
        """Chunk i's output: the caller's array, checked, or a new one."""
        import cupy as cp

        try:
            check_declared(code, shape, limit)
        except ValueError as exc:
            raise ChunkError(f"chunk {i}: {exc}", i, str(exc)) from None
        dtype = storage_dtype(CODE_TO_DTYPE[code])
        out = None if outs is None else outs[i]
        if out is None:
            return cp.empty(shape, dtype)
        if out.dtype != dtype or out.shape != tuple(shape) or not out.flags.c_contiguous:
            reason = f"out must be a C-contiguous {dtype} array of shape {tuple(shape)}"
            raise ChunkError(f"chunk {i}: {reason}", i, reason)
        return out

    def _from_device(
        self,
        chunks: Sequence[Any],
        outs: Sequence[Any | None] | None,
        stream: Any,
        max_nbytes: int | None,
    ) -> None:
        """Chunks already in device memory are planned from their heads (header, descriptors,
        index: a few KiB each, copied to the host in one transfer, two for chunks with long
        indexes) and decoded where they are; only a chunk not 16-byte aligned is copied, on the
        device."""
        import cupy as cp

        _cuda = native.cuda()
        self.device_id = cp.cuda.Device().id
        self.stream = stream if stream is not None else cp.cuda.get_current_stream()
        with self.stream:
            devs = [cp.ascontiguousarray(cp.asarray(c)).reshape(-1).view(cp.uint8) for c in chunks]
            devs = [d if d.data.ptr % 16 == 0 else d.copy() for d in devs]
            lens = [d.size for d in devs]
            heads = _heads(devs, [min(n, HEAD_PREFIX) for n in lens])
            self.results = []
            bounds = []
            for i, (h, n) in enumerate(zip(heads, lens, strict=True)):
                try:
                    code, shape, bound = native.core.head(h, n)
                except ValueError as exc:
                    raise ChunkError(f"chunk {i}: {exc}", i, str(exc)) from None
                bounds.append(bound)
                self.results.append(self._output(i, code, shape, outs, max_nbytes))
            longer = [i for i, h in enumerate(heads) if bounds[i] > h.size]
            more = _heads([devs[i] for i in longer], [bounds[i] for i in longer])
            for i, h in zip(longer, more, strict=True):
                heads[i] = h
            head_lens = np.asarray([h.size for h in heads], np.uint64)
            head_offsets = np.concatenate([[0], np.cumsum(head_lens)[:-1]]).astype(np.uint64)
            self._plan = _cuda.plan_heads(
                np.concatenate(heads),
                head_offsets,
                head_lens,
                np.asarray(lens, np.uint64),
                np.asarray([d.data.ptr for d in devs], np.uint64),
                np.asarray([r.data.ptr for r in self.results], np.uint64),
                np.asarray([r.nbytes for r in self.results], np.uint64),
            )
        self._inputs = devs  # the chunks stay alive while the batch can launch
        self._prepare(np.empty(0, np.uint8))

    @classmethod
    def planned(cls, plan: Any, arena: Any, staging: np.ndarray, stream: Any) -> PreparedBatch:
        """A batch whose chunks are on their way to ``arena`` on ``stream`` from ``staging``
        (pinned memory, kept until ``check``) and planned (``_cuda.stage_and_plan``, which
        ``checkpoint.batch`` calls). No per-chunk Python."""
        import cupy as cp

        batch = cls.__new__(cls)
        batch.results = []
        batch.device_id = cp.cuda.Device().id
        batch.stream = stream
        batch._arena = arena
        batch._plan = plan
        batch._prepare(staging)
        return batch

    def _setup(
        self,
        staging: np.ndarray,
        offsets: np.ndarray,
        lens: np.ndarray,
        out_ptrs: np.ndarray,
        out_lens: np.ndarray,
        stream: Any,
    ) -> None:
        import cupy as cp

        _cuda = native.cuda()
        self.device_id = cp.cuda.Device().id
        self.stream = stream if stream is not None else cp.cuda.get_current_stream()
        with self.stream:
            self._arena = cp.empty(staging.size, cp.uint8)
            self._arena.set(staging, stream=self.stream)
            self._plan = _cuda.plan_staged(
                staging, self._arena.data.ptr, offsets, lens, out_ptrs, out_lens
            )
        self._prepare(staging)

    def _prepare(self, staging: np.ndarray) -> None:
        """Workspace and status for the plan, the descriptors uploaded."""
        import cupy as cp

        with self.stream:
            self._workspace = cp.empty(max(self._plan.workspace_bytes, 1), cp.uint8)
            self._status = cp.zeros(max(self._plan.num_chunks, 1), cp.int32)
            # the descriptors go to the start of the workspace once, asynchronously from pinned
            # memory; every launch reuses them
            size = self._plan.descriptor_bytes
            desc_pinned = cp.cuda.alloc_pinned_memory(max(size, 1))
            desc = np.frombuffer(desc_pinned, np.uint8, size)
            desc[:] = self._plan.descriptors
            self._workspace[:size].set(desc, stream=self.stream)
        self._pinned = (staging, desc_pinned)  # the uploads may still be in flight
        self._count = self._plan.num_chunks
        self._launched: set[bool] = set()
        self._graphs: dict[bool, Any] = {}

    def launch(self, verify: bool = True) -> None:
        """Enqueues the decode on the batch's stream. From its second launch with the same
        ``verify`` on, a batch replays a CUDA graph recorded then: one submission, so that the
        GPU does not wait out the host's work between the kernels of a launch."""
        _cuda = native.cuda()
        work = (
            self._plan,
            self._workspace.data.ptr,
            self._plan.workspace_bytes,
            self._status.data.ptr,
            verify,
            self.device_id,
        )
        graph = self._graphs.get(verify)
        if graph is None and verify in self._launched:
            graph = self._graphs[verify] = _cuda.DecodeGraph(*work)
        if graph is not None:
            graph.launch(self.device_id, self.stream.ptr)
            return
        self._launched.add(verify)
        _cuda.enqueue(*work, self.stream.ptr)

    def check(self) -> None:
        _cuda = native.cuda()
        self.stream.synchronize()
        for i, code in enumerate(self._status.get()[: self._count]):
            if code:
                reason = _cuda.status_message(int(code))
                raise ChunkError(f"chunk {i}: {reason}", i, reason)


def decode_batch_gpu(
    chunks: Sequence[Any],
    *,
    outs: Sequence[Any | None] | None = None,
    stream: Any = None,
    verify: bool = True,
    max_nbytes: int | None = None,
) -> list[Any]:
    """Decodes chunks (bytes, NumPy or CuPy) into CuPy arrays in one launch; see the module doc.
    ``max_nbytes`` as in ``chunks.decode``."""
    batch = PreparedBatch(chunks, outs, stream, max_nbytes)
    batch.launch(verify)
    batch.check()
    return batch.results
