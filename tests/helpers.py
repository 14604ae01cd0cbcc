"""Shared checkers: a round trip must give back the same dtype, shape and bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest

import wcodec_zarr as wc

DTYPES = [
    np.dtype(np.int8),
    np.dtype(np.uint8),
    np.dtype(np.int16),
    np.dtype(np.uint16),
    np.dtype(np.int32),
    np.dtype(np.float16),
    np.dtype(ml_dtypes.bfloat16),
    np.dtype(np.float32),
    np.dtype(ml_dtypes.float8_e4m3fn),
    np.dtype(ml_dtypes.float8_e5m2),
]


def random_bits(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    """Uniformly random bit patterns (NaNs and infinities included) viewed as dtype."""
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * dtype.itemsize, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def weight_like(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    """Gaussian values of a plausible scale for the dtype: what weights look like."""
    scale = 0.05 if dtype.kind == "f" or (dtype.itemsize == 1 and dtype.kind == "V") else 20.0
    values = rng.standard_normal(shape) * scale
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(dtype)


def assert_round_trip(array: Any, **encode_kwargs: Any) -> bytes:
    encoded = wc.encode(array, **encode_kwargs)
    decoded = wc.decode(encoded)
    expected = np.asarray(array, order="C")
    assert decoded.dtype == expected.dtype.newbyteorder("<") or decoded.dtype == expected.dtype
    assert decoded.shape == expected.shape
    assert decoded.tobytes() == expected.astype(decoded.dtype).tobytes()
    return encoded


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def parts_read_alike(ckpt: Any, expected: Any, world: int = 4, threads: int = 8) -> bool:
    """Every rank's part (of ``world``, along the rows) of every tensor of checkpoint ``ckpt``,
    each read twice from a pool of ``threads`` threads, equals that of ``expected``."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(name, rank) for name in ckpt for rank in range(world)] * 2

    def read(job: tuple[str, int]) -> bool:
        name, rank = job
        got = ckpt.shard(name, 0, rank, world).numpy()
        return bool(got.tobytes() == expected.shard(name, 0, rank, world).numpy().tobytes())

    with ThreadPoolExecutor(threads) as pool:
        return all(pool.map(read, jobs))


def server_fixture(server_type: Callable[[], Any]) -> Any:
    """A module-scoped fixture running a loopback object store (``wcodec_zarr.testing``) for
    the module's tests: ``server = server_fixture(LoopbackS3)``."""

    @pytest.fixture(scope="module")
    def server() -> Iterator[Any]:
        with server_type() as running:
            yield running

    return server


def new_bucket(server: Any) -> str:
    """A bucket of its own on a loopback object store (``wcodec_zarr.testing``), its request
    log cleared."""
    import uuid

    name = f"b-{uuid.uuid4().hex[:12]}"
    server.create_bucket(name)
    server.reset_log()
    return name


# chunks of 16 KiB in shards of 64 KiB: a small model makes a checkpoint of many objects, as a
# large one does on object storage
STORE_LAYOUT = {"chunk_bytes": 16384, "shard_bytes": 65536}


def convert_to_store(server: Any, model: Path, url: str) -> dict[str, Any]:
    """Converts ``model`` to ``url`` on a loopback object store in ``STORE_LAYOUT``; returns
    the storage options that reach the store."""
    options: dict[str, Any] = server.storage_options()
    wc.convert(model, url, storage_options=options, progress=False, **STORE_LAYOUT)
    return options


def memory_store(local: Path) -> Any:
    """The checkpoint's objects in a zarr ``MemoryStore``: a store with no local files, whose
    objects loads fetch as they would from object storage."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    prototype = default_buffer_prototype()
    objects_ = {
        str(p.relative_to(local)): prototype.buffer.from_bytes(p.read_bytes())
        for p in local.rglob("*")
        if p.is_file()
    }
    return MemoryStore(objects_)
