"""Committed chunks of every format version decode to the recorded bytes, forever."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import wcodec_zarr as wc

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden"
CASES = [
    (version_dir.name, name, meta)
    for version_dir in sorted(GOLDEN.glob("v*"))
    for name, meta in json.loads((version_dir / "manifest.json").read_text()).items()
]


def test_every_format_version_has_golden_files() -> None:
    versions = {version for version, _, _ in CASES}
    assert f"v{wc.FORMAT_VERSION}" in versions
    assert len(CASES) >= 13


@pytest.mark.parametrize(("version", "name", "meta"), CASES, ids=[f"{v}/{n}" for v, n, _ in CASES])
def test_golden_chunk_decodes_bit_exact(version: str, name: str, meta: dict[str, object]) -> None:
    encoded = (GOLDEN / version / f"{name}.wcz").read_bytes()
    decoded = wc.decode(encoded)
    assert str(decoded.dtype) == meta["dtype"]
    assert list(decoded.shape) == meta["shape"]
    assert hashlib.sha256(decoded.tobytes()).hexdigest() == meta["sha256"]
    assert wc.decode(encoded, threads=1).tobytes() == decoded.tobytes()
