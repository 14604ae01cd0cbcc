"""A convert killed (SIGKILL: no cleanup runs) at random moments, into a fresh destination and
over an existing checkpoint: afterwards a fresh destination is refused or loads bit-exactly as
the new model, an existing one loads bit-exactly as the old model or the new one, never a mix;
and the next convert succeeds."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import weight_like
from safetensors_helpers import write_raw

import wcodec_zarr as wc
from wcodec_zarr.checkpoint import IncompleteCheckpointError


def write_model(path: Path, seed: int) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    tensors = [
        (f"w{i}", "BF16", [512, 1024], weight_like(rng, (512, 1024), np.dtype(np.float16)))
        for i in range(12)
    ]
    write_raw(path, [(n, code, shape, a.tobytes()) for n, code, shape, a in tensors])
    return {n: a.tobytes() for n, _, _, a in tensors}


def state(ckpt: Path) -> dict[str, bytes] | None:
    """The checkpoint's tensors as bytes, or None when it is refused."""
    try:
        loaded = wc.load_checkpoint(ckpt)
    except (FileNotFoundError, IncompleteCheckpointError):
        return None
    return {k: v.view(np.uint16).tobytes() for k, v in loaded.items()}


@pytest.mark.parametrize("over", [False, True], ids=["fresh", "overwrite"])
def test_a_convert_killed_at_random_moments(tmp_path: Path, over: bool) -> None:
    old = write_model(tmp_path / "old.safetensors", 1)
    new = write_model(tmp_path / "new.safetensors", 2)
    ckpt = tmp_path / "ckpt"
    script = (
        "import wcodec_zarr as wc; "
        "wc.convert('new.safetensors', 'ckpt', overwrite=True, progress=False, "
        "chunk_bytes=1 << 16, shard_bytes=1 << 18)"
    )
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True)
    whole = time.monotonic() - start  # a whole convert, the interpreter's start included
    pick = random.Random(0)
    seen = []
    for _ in range(8):
        if over:  # the old model in place, then the new one converted over it
            wc.convert(tmp_path / "old.safetensors", ckpt, overwrite=True, progress=False)
        else:
            shutil.rmtree(ckpt, ignore_errors=True)
        process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
        time.sleep(pick.uniform(0.3, 1.3) * whole)  # some before the end, some after
        process.kill()
        process.wait()
        got = state(ckpt)
        seen.append(
            "refused" if got is None else "new" if got == new else "old" if got == old else "mixed"
        )
    assert "mixed" not in seen, seen
    if over:  # the new checkpoint is swapped in whole (renameat2): one is there at every moment
        assert "refused" not in seen, seen
    else:
        assert "old" not in seen, seen
    # the next convert gets through, whatever the killed ones left
    wc.convert(tmp_path / "new.safetensors", ckpt, overwrite=True, progress=False)
    assert state(ckpt) == new
