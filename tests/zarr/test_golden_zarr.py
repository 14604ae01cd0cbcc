"""The committed Zarr stores of every format version read bit-exact, forever."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zarr
from zarr.storage import ZipStore

import wcodec_zarr  # noqa: F401  registers the bfloat16 / float8 data types with zarr 3.1

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden_zarr"
CASES = [
    (version_dir, name, meta)
    for version_dir in sorted(GOLDEN.glob("v*"))
    for name, meta in json.loads((version_dir / "manifest.json").read_text()).items()
]


@pytest.mark.parametrize(
    ("version_dir", "name", "meta"), CASES, ids=[f"{v.name}/{n}" for v, n, _ in CASES]
)
def test_golden_store_array_reads_bit_exact(
    version_dir: Path, name: str, meta: dict[str, object]
) -> None:
    store = ZipStore(version_dir / "store.zip", mode="r")
    array = zarr.open_group(store, mode="r")[name]
    assert isinstance(array, zarr.Array)
    data = array[:]
    assert str(data.dtype) == meta["dtype"]
    assert list(data.shape) == meta["shape"]
    assert hashlib.sha256(data.tobytes()).hexdigest() == meta["sha256"]
    store.close()
