"""The committed checkpoints of every manifest version open, verify, load, export and present
their files bit-exact, forever (tests/fixtures/make_golden_checkpoint.py wrote them)."""

from __future__ import annotations

from pathlib import Path

import pytest

import wcodec_zarr as wc
from wcodec_zarr.fs import WcodecFileSystem

GOLDEN = Path(__file__).parent.parent / "fixtures" / "golden_checkpoint"
VERSIONS = sorted(GOLDEN.glob("v*"))


@pytest.mark.parametrize("version", VERSIONS, ids=[v.name for v in VERSIONS])
def test_golden_checkpoint(version: Path, tmp_path: Path) -> None:
    model, ckpt = version / "model.safetensors", version / "checkpoint.zip"
    assert wc.verify(model, ckpt).ok
    wc.export_safetensors(ckpt, tmp_path / "back.safetensors")
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()
    fs = WcodecFileSystem(target=str(ckpt), skip_instance_cache=True)
    assert fs.cat_file("model.safetensors") == model.read_bytes()
    loaded = wc.load_checkpoint(ckpt)
    assert len(loaded) == len(wc.open_checkpoint(ckpt))
