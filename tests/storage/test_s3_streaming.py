"""Whole-model loads from S3 stream (``checkpoint.batch``): objects fetched a few pieces of a
bounded window ahead of decoding, large ones as parallel ranged GETs, faults retried or named;
a child process measures the memory of a load several times the window."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from helpers import STORE_LAYOUT, new_bucket, server_fixture
from safetensors_helpers import write_mixed_model, write_raw

import wcodec_zarr as wc
from wcodec_zarr.checkpoint import objects
from wcodec_zarr.checkpoint.batch import load_to_cpu

pytest.importorskip("s3fs")
moto = pytest.importorskip("moto.server", reason="needs moto[server]")

from wcodec_zarr.testing import LoopbackS3, ProcessS3  # noqa: E402

pytestmark = pytest.mark.s3

WINDOW = 3 * 40_000  # pieces of at most 40 kB: about one 64 KiB shard object each

server = server_fixture(LoopbackS3)


def exact(got: dict[str, Any], expected: dict[str, np.ndarray]) -> bool:
    return list(got) == list(expected) and all(
        got[n].dtype == a.dtype and got[n].shape == a.shape and got[n].tobytes() == a.tobytes()
        for n, a in expected.items()
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    return path, write_mixed_model(path)


@pytest.fixture
def remote(server: LoopbackS3, model: tuple[Path, dict[str, np.ndarray]]) -> tuple[str, Any]:
    server.faults.status_503 = server.faults.cut = 0.0
    bucket = new_bucket(server)
    url = f"s3://{bucket}/model.zarr"
    options = server.storage_options()
    wc.convert(model[0], url, storage_options=options, progress=False, **STORE_LAYOUT)
    return url, options


def test_remote_loads_bit_exact_with_a_tiny_window(
    server: LoopbackS3, remote: tuple[str, Any], model: tuple[Path, dict[str, np.ndarray]]
) -> None:
    url, options = remote
    expected = model[1]
    server.reset_log()
    assert exact(wc.load_checkpoint(url, storage_options=options, window=WINDOW), expected)
    shard = [r for r in server.requests if r.method == "GET" and "/c." in r.key]
    assert len({r.key for r in shard}) >= 12  # every object fetched, once
    ckpt = wc.open_checkpoint(url, storage_options=options)
    assert exact(dict(ckpt.iter_tensors(window=WINDOW)), expected)


def test_large_objects_fetched_as_parallel_ranges(
    server: LoopbackS3, remote: tuple[str, Any]
) -> None:
    url, options = remote
    ckpt = wc.open_checkpoint(url, storage_options=options)
    stored = objects.stored_objects([ckpt["layers.1.q.weight"]])
    from zarr.core.sync import sync

    keys, most = stored.keys, stored.most
    whole = sync(objects.fetch_objects(ckpt.store, keys, [0] * len(keys), most))
    server.reset_log()
    ranged = sync(objects.fetch_objects(ckpt.store, keys, stored.sizes, most, part_size=8192))
    assert [a.tobytes() for a in ranged] == [a.tobytes() for a in whole]
    gets = [r for r in server.requests if r.method == "GET"]
    assert len(gets) == sum(-(-a.size // 8192) for a in whole)
    assert all(r.range for r in gets)
    # an object larger than its chunks can take is refused, whole or by its announced size
    small = [8] * len(keys)
    for bounds in ([0] * len(keys), stored.sizes):
        with pytest.raises(
            ValueError, match=r"/c\.\d\.0: object of \d+ bytes is larger than its chunks"
        ):
            sync(objects.fetch_objects(ckpt.store, keys, bounds, small, part_size=8192))


def test_faults_in_a_streamed_load_retried_or_named(
    server: LoopbackS3, remote: tuple[str, Any], model: tuple[Path, dict[str, np.ndarray]]
) -> None:
    url, options = remote
    ckpt = wc.open_checkpoint(url, storage_options=options)
    server.faults.status_503, server.faults.cut = 0.1, 0.1
    try:
        loaded = wc.load_checkpoint(url, storage_options=options, window=WINDOW)
        streamed = dict(ckpt.iter_tensors(window=WINDOW))
    finally:
        server.faults.status_503 = server.faults.cut = 0.0
    assert exact(loaded, model[1]) and exact(streamed, model[1])
    assert any(r.status == 503 for r in server.requests)
    quick = server.storage_options(config_kwargs={"retries": {"max_attempts": 2}})
    ckpt = wc.open_checkpoint(url, storage_options=quick)
    server.faults.status_503 = 1.0
    try:
        with pytest.raises(OSError, match=r"^layers\.0\.q\.weight/c\.0\.0: .*Unavailable"):
            next(ckpt.iter_tensors(window=WINDOW))
    finally:
        server.faults.status_503 = 0.0


_MEMORY = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path
    import wcodec_zarr as wc

    def high_water():  # VmHWM: of this process alone (ru_maxrss carries the parent's over exec)
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024

    url, options, window = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    wc.open_checkpoint(url, storage_options=options)  # imports and first connections
    before = high_water()
    loaded = wc.load_checkpoint(url, storage_options=options, window=window)
    after = high_water()
    out = sum(a.nbytes for a in loaded.values())
    print(json.dumps({"before": before, "after": after, "output": out}))
    """
)


def test_memory_of_a_remote_load_bounded_by_the_window(tmp_path: Path) -> None:
    """A 128 MiB bfloat16 model (about 90 MiB stored, in shards of 8 MiB of weights) loaded
    from S3 with a 24 MiB window: the process's high-water mark grows by the output and at most
    a few windows, far less than the stored model."""
    rng = np.random.default_rng(1)
    shapes = {"embed": (4096, 4096), "up": (8192, 4096), "down": (4096, 4096), "norm": (4096,)}
    arrays = {
        n: (rng.standard_normal(s, np.float32) * 0.02).astype(ml_dtypes.bfloat16)
        for n, s in shapes.items()
    }
    path = tmp_path / "big.safetensors"
    write_raw(path, [(n, "BF16", list(a.shape), a.tobytes()) for n, a in arrays.items()])
    del arrays
    window = 24 << 20
    with ProcessS3() as s3:
        s3.create_bucket("big")
        url = "s3://big/model.zarr"
        wc.convert(
            path, url, storage_options=s3.storage_options(), progress=False, shard_bytes=8 << 20
        )
        stored = wc.open_checkpoint(url, storage_options=s3.storage_options()).stored_nbytes
        run = subprocess.run(
            [sys.executable, "-c", _MEMORY, url, json.dumps(s3.storage_options()), str(window)],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # the installed package, not the source tree
        )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    beyond = report["after"] - report["before"] - report["output"]
    assert report["output"] >= 128 << 20
    assert stored > 80 << 20
    assert beyond < 2 * window, (beyond >> 20, report)


def test_truncated_bodies_in_a_streamed_load_exact_or_named(
    server: LoopbackS3, remote: tuple[str, Any], model: tuple[Path, dict[str, np.ndarray]]
) -> None:
    """Responses cut short with a Content-Length to match (a proxy that shortens them) on half
    the GETs: every streamed load is bit-exact (S3's checksum of a whole object fails and the
    GET is retried) or fails naming the object (the retries spent, or a ranged GET, which S3
    sends no checksum for, caught by the checkpoint's own)."""
    url, options = remote
    ckpt = wc.open_checkpoint(url, storage_options=options)
    outcomes = []
    server.faults.short = 0.5
    try:
        for _ in range(4):
            try:
                streamed = dict(ckpt.iter_tensors(window=WINDOW))
            except ValueError as exc:
                assert re.search(r"^[\w.]+/c\.\d", str(exc)), exc  # names the object
                outcomes.append("refused")
                continue
            outcomes.append("exact" if exact(streamed, model[1]) else "silent")
    finally:
        server.faults.short = 0.0
    assert "silent" not in outcomes and "refused" in outcomes, outcomes


def test_reads_that_cross_an_overwrite_fail_instead_of_mixing(
    remote: tuple[str, Any], model: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    """convert(overwrite=True) into object storage removes the old objects and writes the new
    ones in place, the root document last: reads of the checkpoint opened before (the old
    manifest) would otherwise decode the new objects, or fail only where an object is gone."""
    url, options = remote
    opened = wc.open_checkpoint(url, storage_options=options)
    unchecked = wc.open_checkpoint(url, storage_options=options, check_replaced=False)
    other = {name: a.copy() for name, a in model[1].items()}
    for a in other.values():
        a.reshape(-1)[::7] = a.reshape(-1)[::-7][: a.reshape(-1)[::7].size]  # same shapes
    write_raw(
        tmp_path / "other.safetensors",
        [(n, {"int8": "I8", "bfloat16": "BF16", "float32": "F32", "int64": "I64"}[str(a.dtype)],
          list(a.shape), a.tobytes()) for n, a in other.items()],
    )  # fmt: skip
    wc.convert(
        tmp_path / "other.safetensors",
        url,
        storage_options=options,
        overwrite=True,
        progress=False,
        **STORE_LAYOUT,
    )
    with pytest.raises(ValueError, match="replaced while it was read"):
        dict(opened.iter_tensors(window=WINDOW))
    with pytest.raises(ValueError, match="replaced while it was read"):
        load_to_cpu([opened[name] for name in opened], window=WINDOW)
    # lazy reads too: a slice of rows, a tensor through zarr
    name = max(opened, key=lambda n: opened[n].nbytes)
    with pytest.raises(ValueError, match="replaced while it was read"):
        opened[name][:2]
    with pytest.raises(ValueError, match="replaced while it was read"):
        opened[name].numpy()
    # unless left out: then a lazy read returns what the objects hold now, the new model's
    assert unchecked[name][:2].tobytes() == other[name][:2].tobytes()
    # opened again: the new model, whole
    assert exact(wc.load_checkpoint(url, storage_options=options, window=WINDOW), other)
