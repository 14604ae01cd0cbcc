"""A checkpoint's original safetensors files, presented as bytes decoded on demand: what the
``wcodec`` filesystem serves and ``export`` copies.

A file's first bytes (the 8-byte length and the JSON header) are the original header, kept
verbatim in the manifest. Every other byte belongs to one tensor: a read decodes only the row
bands (runs of whole chunks along the first dimension, about ``BAND_BYTES``) that cover the
requested range. Decoded bands stay in a small cache (``cache_bytes``, least recently used
out), so neighbouring reads do not decode a band twice, and a sequential reader gets the next
bands decoded ahead, concurrently (``prefetch`` bands).
"""

from __future__ import annotations

import bisect
import functools
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .reader import Checkpoint, LazyTensor

CACHE_BYTES = 64 << 20
BAND_BYTES = 2 << 20
PREFETCH = 8


def band_rows(tensor: LazyTensor) -> int:
    """Rows per band: whole chunks along the first dimension, about ``BAND_BYTES`` of them (one
    zarr read fetches and decodes a band's chunks together)."""
    chunk = tensor.chunks[0]
    row_bytes = tensor.nbytes // max(tensor.shape[0], 1)
    return chunk * max(1, BAND_BYTES // max(chunk * row_bytes, 1))


class BandCache:
    """Decoded row bands of a checkpoint's tensors, keyed by (tensor, band), as futures so that
    a band being decoded (by a prefetch) is awaited rather than decoded again."""

    def __init__(self, ckpt: Checkpoint, limit: int, workers: int) -> None:
        self.ckpt = ckpt
        self.limit = limit
        self._bands: OrderedDict[tuple[str, int], Future[memoryview]] = OrderedDict()
        self._sizes: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="wcodec-fs")
        self.decoded = 0  # bands decoded so far (for tests and statistics)

    def _decode(self, name: str, band: int) -> memoryview:
        """The band's bytes: a view of the decoded rows (no copy when they are contiguous)."""
        tensor = self.ckpt[name]
        rows = band_rows(tensor) if tensor.shape else 1
        data = tensor[band * rows : (band + 1) * rows] if tensor.shape else tensor.numpy()
        with self._lock:
            self.decoded += 1
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8).data

    def __contains__(self, key: tuple[str, int]) -> bool:
        with self._lock:
            return key in self._bands

    def get(self, name: str, band: int, wait: bool = True) -> memoryview | None:
        key = (name, band)
        with self._lock:
            future = self._bands.get(key)
            submitted = future is None
            if future is None:
                future = self._pool.submit(self._decode, name, band)
                self._bands[key] = future
            else:
                self._bands.move_to_end(key)
        if submitted:
            # outside the lock: a future already done runs the callback here, and it takes the
            # lock
            future.add_done_callback(functools.partial(self._sized, key))
        return future.result() if wait else None

    def _sized(self, key: tuple[str, int], future: Future[memoryview]) -> None:
        if future.exception() is not None:
            with self._lock:
                self._bands.pop(key, None)
            return
        with self._lock:
            if key not in self._bands:
                return
            self._sizes[key] = len(future.result())
            while sum(self._sizes.values()) > self.limit and len(self._sizes) > 1:
                oldest = next(k for k in self._bands if k in self._sizes)
                if oldest == key:
                    break
                del self._bands[oldest]
                del self._sizes[oldest]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Presented:
    """One presented file: its header bytes and its tensors' byte ranges."""

    def __init__(self, ckpt: Checkpoint, index: int) -> None:
        info = ckpt.files[index]
        text = info.header.text.encode("utf-8")
        self.name = info.name
        self.size = info.size
        self.head = len(text).to_bytes(8, "little") + text
        self.tensors = list(info.header.tensors)
        self.starts = [len(self.head) + t.begin for t in self.tensors]


class PresentedFiles:
    """The original files of a checkpoint (and its index, if it had one, and the model's other
    files), by name. ``close`` stops its decoding threads."""

    def __init__(
        self, ckpt: Checkpoint, cache_bytes: int = CACHE_BYTES, prefetch: int = PREFETCH
    ) -> None:
        if ckpt.quantized:
            raise ValueError(
                f"{ckpt.url} was converted with quantization: its original files are gone"
            )
        self.ckpt = ckpt
        self.files = {f.name: _Presented(ckpt, i) for i, f in enumerate(ckpt.files)}
        index = ckpt.index
        self.index = None if index is None else (index[0], index[1].encode("utf-8"))
        self.others = {f.name: f for f in ckpt.other_files}
        self._other_bytes: dict[str, bytes] = {}  # read whole on first use (small files)
        self.prefetch = prefetch
        self.bands = BandCache(ckpt, cache_bytes, max(2, prefetch + 1))

    def close(self) -> None:
        self.bands.close()

    def names(self) -> list[str]:
        """Every file presented: the original files in order, the index, the other files."""
        index = [self.index[0]] if self.index is not None else []
        return [*self.files, *index, *self.others]

    def __contains__(self, name: object) -> bool:
        return (
            name in self.files
            or name in self.others
            or (self.index is not None and name == self.index[0])
        )

    def size(self, name: str) -> int:
        """The size in bytes of a presented file."""
        if self.index is not None and name == self.index[0]:
            return len(self.index[1])
        if name in self.others:
            return self.others[name].size
        return self.files[name].size

    def read_range(self, name: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of a presented file, decoding only the bands that cover them."""
        if self.index is not None and name == self.index[0]:
            return self.index[1][start:end]
        if name in self.others:
            data = self._other_bytes.get(name)
            if data is None:
                data = self._other_bytes[name] = self.ckpt.read_other_file(name)
            return data[start:end]
        presented = self.files[name]
        end = min(end, presented.size)
        if start >= end:
            return b""
        out = bytearray(end - start)
        view = memoryview(out)
        position = start
        if position < len(presented.head):
            head = presented.head[position:end]
            view[: len(head)] = head
            position += len(head)
        first = max(0, bisect.bisect_right(presented.starts, position) - 1)
        requested = [
            (tensor, base)
            for tensor, base in zip(
                presented.tensors[first:], presented.starts[first:], strict=True
            )
            if base < end and base + tensor.nbytes > position
        ]
        for tensor, base in requested:  # what this read needs first, then what comes next
            self._request(
                tensor.name, max(position, base) - base, min(end, base + tensor.nbytes) - base
            )
        self._prefetch(presented, end)
        for tensor, base in requested:
            lo, hi = max(position, base) - base, min(end, base + tensor.nbytes) - base
            self._copy_tensor_bytes(
                tensor.name, lo, hi, view[base + lo - start : base + hi - start]
            )
        return bytes(out)

    def _band_bytes(self, name: str) -> tuple[int, int]:
        """Bytes per band and number of bands of a tensor (a scalar is one band)."""
        lazy = self.ckpt[name]
        if not lazy.shape:
            return max(lazy.nbytes, 1), 1
        rows = band_rows(lazy)
        return max(rows * (lazy.nbytes // max(lazy.shape[0], 1)), 1), -(-lazy.shape[0] // rows)

    def _prefetch(self, presented: _Presented, position: int) -> None:
        """Starts decoding the next ``prefetch`` bands not yet decoded from ``position`` on,
        across tensors."""
        i = bisect.bisect_right(presented.starts, position) - 1
        if i < 0 or position >= presented.size:
            return
        left = self.prefetch
        band = (position - presented.starts[i]) // self._band_bytes(presented.tensors[i].name)[0]
        while left > 0 and i < len(presented.tensors):
            tensor = presented.tensors[i]
            _, count = self._band_bytes(tensor.name)
            while left > 0 and band < count and tensor.nbytes:
                if (tensor.name, band) not in self.bands:
                    self.bands.get(tensor.name, band, wait=False)
                    left -= 1
                band += 1
            i, band = i + 1, 0

    def _request(self, name: str, lo: int, hi: int) -> None:
        band_bytes, _ = self._band_bytes(name)
        for band in range(lo // band_bytes, (hi - 1) // band_bytes + 1):
            self.bands.get(name, band, wait=False)

    def _copy_tensor_bytes(self, name: str, lo: int, hi: int, into: memoryview) -> None:
        """Bytes ``[lo, hi)`` of a tensor copied into ``into``, band by band."""
        band_bytes, _ = self._band_bytes(name)
        for band in range(lo // band_bytes, (hi - 1) // band_bytes + 1):
            data = self.bands.get(name, band)
            assert data is not None
            offset = band * band_bytes
            a, b = max(lo, offset), min(hi, offset + len(data))
            into[a - lo : b - lo] = data[a - offset : b - offset]
