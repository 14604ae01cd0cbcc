"""Checkpoints on S3: a real S3-compatible server (moto's server mode) on 127.0.0.1, behind a
layer that counts requests, injects faults and checks credentials (wcodec_zarr.testing).
Request counts are asserted at the server, bit-exactness on every read."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    STORE_LAYOUT,
    convert_to_store,
    new_bucket,
    parts_read_alike,
    server_fixture,
    weight_like,
)
from safetensors_helpers import write_layered_model, write_raw

import wcodec_zarr as wc
from wcodec_zarr.checkpoint import IncompleteCheckpointError

pytest.importorskip("moto.server", reason="needs moto[server]")
pytest.importorskip("s3fs")

from wcodec_zarr.testing import LoopbackS3

pytestmark = pytest.mark.s3


server = server_fixture(LoopbackS3)


@pytest.fixture
def bucket(server: LoopbackS3) -> str:
    server.faults.status_503 = server.faults.cut = 0.0
    server.required_key = None
    return new_bucket(server)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_layered_model(tmp_path_factory.mktemp("model") / "model.safetensors", 3)


def gets(server: LoopbackS3) -> list[Any]:
    return [r for r in server.requests if r.method == "GET"]


def test_convert_to_s3_and_load_bit_exact(server: LoopbackS3, bucket: str, model: Path) -> None:
    url = f"s3://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    assert wc.verify(model, url, storage_options=opts).ok
    loaded = wc.load_checkpoint(url, storage_options=opts)
    local = wc.load_checkpoint(_local_copy(model, bucket))
    assert all(loaded[k].tobytes() == local[k].tobytes() for k in local)
    server.reset_log()
    wc.export_safetensors(url, f"s3://{bucket}/export/model.safetensors", storage_options=opts)
    exported = _s3_bytes(server, bucket, "export/model.safetensors")
    assert exported == model.read_bytes()


def _local_copy(model: Path, bucket: str) -> Path:
    target = model.parent / f"local-{bucket}.zarr"
    if not target.exists():
        wc.convert(model, target, progress=False, **STORE_LAYOUT)
    return target


def _s3_bytes(server: LoopbackS3, bucket: str, key: str) -> bytes:
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options(), skip_instance_cache=True)
    data: bytes = fs.cat_file(f"{bucket}/{key}")
    return data


READER = textwrap.dedent(
    """
    import json, sys
    import wcodec_zarr as wc
    opts = json.loads(sys.argv[2])
    def step(name):
        print(name, flush=True)
        assert sys.stdin.readline() == "go\\n"
    ckpt = wc.open_checkpoint(sys.argv[1], storage_options=opts)
    step("opened")
    tensor = ckpt["layers.1.q.weight"]
    first = tensor[0:4].tobytes()
    step("read")
    again = tensor[0:4].tobytes()
    step("again")
    print(json.dumps({"first": first.hex(), "again": again.hex()}), flush=True)
    """
)


def test_requests_counted_at_the_server(server: LoopbackS3, bucket: str, model: Path) -> None:
    """A new process: opening costs one GET; one inner chunk of a shard costs the shard index,
    one ranged GET and the check against a replacement (a ranged GET of the root document);
    the same chunk again costs the last two (the index is cached)."""
    url = f"s3://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    ckpt = wc.open_checkpoint(url, storage_options=opts)
    weight = ckpt["layers.1.q.weight"]
    assert (weight.chunks, weight.shards) == ((32, 256), (256, 256))  # 8 chunks per shard
    counts = {}
    server.reset_log()
    with subprocess.Popen(
        [sys.executable, "-c", READER, url, json.dumps(opts)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=model.parent,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        for step in ("opened", "read", "again"):
            assert proc.stdout.readline().strip() == step
            counts[step] = gets(server)
            server.reset_log()
            proc.stdin.write("go\n")
            proc.stdin.flush()
        result = json.loads(proc.stdout.readline())
    assert proc.returncode == 0
    assert [r.key for r in counts["opened"]] == [f"{bucket}/model.zarr/zarr.json"]
    shard = f"{bucket}/model.zarr/layers.1.q.weight/c.0.0"
    read = counts["read"]
    root = f"{bucket}/model.zarr/zarr.json"
    assert [r.key for r in read] == [shard, shard, root]
    assert read[0].range == f"bytes=-{8 * 16 + 4}"  # the index: 8 chunks x 16 bytes + CRC32C
    assert read[1].range is not None and read[1].range.startswith("bytes=0-")
    assert read[1].nbytes < 32 * 256  # one compressed chunk, not the shard
    # not replaced meanwhile: the root document's bytes that hold the manifest's generation
    assert read[2].range is not None and read[2].nbytes < 64
    assert [(r.key, r.range) for r in counts["again"]] == [
        (shard, read[1].range),
        (root, read[2].range),
    ]
    expected = np.asarray(wc.open_checkpoint(url, storage_options=opts)["layers.1.q.weight"][0:4])
    assert bytes.fromhex(result["first"]) == bytes.fromhex(result["again"]) == expected.tobytes()
    assert not [r for r in server.requests if r.method == "HEAD"]


def test_concurrent_reads_from_8_threads(server: LoopbackS3, bucket: str, model: Path) -> None:
    url = f"s3://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    ckpt = wc.open_checkpoint(url, storage_options=opts)
    assert parts_read_alike(ckpt, wc.open_checkpoint(_local_copy(model, bucket)))


def test_transient_faults_are_retried(server: LoopbackS3, bucket: str, model: Path) -> None:
    url = f"s3://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    local = wc.load_checkpoint(_local_copy(model, bucket))
    server.reset_log()
    # a request fails for good after five 503s (the default four retries): 1e-5 at 10%
    server.faults.status_503, server.faults.cut = 0.1, 0.15
    loaded = wc.load_checkpoint(url, storage_options=opts)
    ckpt = wc.open_checkpoint(url, storage_options=opts)
    parts = {n: ckpt.shard(n, 0, 1, 3).numpy() for n in ckpt}
    server.faults.status_503 = server.faults.cut = 0.0
    assert all(loaded[k].tobytes() == local[k].tobytes() for k in local)
    third = {k: -(-len(v) // 3) for k, v in local.items()}  # rank 1 of 3: rows [p, 2p)
    assert all(parts[k].tobytes() == local[k][third[k] : 2 * third[k]].tobytes() for k in local)
    statuses = [r.status for r in server.requests]
    assert statuses.count(503) > 0
    assert any(r.cut for r in server.requests)


@pytest.mark.parametrize("damage", ["short", "flip"])
def test_damaging_proxies_give_exact_results_or_named_errors(
    server: LoopbackS3, bucket: str, model: Path, damage: str
) -> None:
    """Responses shortened consistently (Content-Length to match) or with a bit flipped, on a
    share of data GETs: every load, whole or a tensor-parallel slice, is bit-exact or fails
    with an error naming the object; none is silently wrong."""
    url = f"s3://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    local = wc.load_checkpoint(_local_copy(model, bucket))
    third = {k: -(-len(v) // 3) for k, v in local.items()}
    outcomes: list[str] = []
    setattr(server.faults, damage, 0.2)
    try:
        for _ in range(8):
            try:
                loaded = wc.load_checkpoint(url, storage_options=opts)
                ckpt = wc.open_checkpoint(url, storage_options=opts)
                parts = {n: ckpt.shard(n, 0, 1, 3).numpy() for n in ckpt}
            except ValueError as exc:
                assert re.search(r"/c\.\d|zarr\.json", str(exc)), exc  # names the object
                outcomes.append("refused")
                continue
            exact = all(loaded[k].tobytes() == local[k].tobytes() for k in local) and all(
                parts[k].tobytes() == local[k][third[k] : 2 * third[k]].tobytes() for k in local
            )
            outcomes.append("exact" if exact else "silent")
    finally:
        setattr(server.faults, damage, 0.0)
    assert "silent" not in outcomes, outcomes
    assert "refused" in outcomes, outcomes  # the damage was met


def test_obstore_backend(server: LoopbackS3, bucket: str, model: Path) -> None:
    """The same checkpoint through zarr's ObjectStore over obstore: bit-exact whole and in
    slices, one GET to open, the shard index, one ranged GET for one inner chunk and the
    replacement check, transient faults retried, a missing checkpoint a FileNotFoundError."""
    url = f"s3://{bucket}/model.zarr"
    convert_to_store(server, model, url)
    local = wc.load_checkpoint(_local_copy(model, bucket))

    def store(path: str = url) -> Any:
        return wc.open_store(path, storage_options=server.obstore_options(), backend="obstore")

    server.reset_log()
    ckpt = wc.open_checkpoint(store())
    assert [r.key for r in gets(server)] == [f"{bucket}/model.zarr/zarr.json"]
    server.reset_log()
    first = ckpt["layers.1.q.weight"][0:4]
    shard = f"{bucket}/model.zarr/layers.1.q.weight/c.0.0"
    read = gets(server)
    assert [r.key for r in read] == [shard, shard, f"{bucket}/model.zarr/zarr.json"]
    assert read[1].nbytes < 32 * 256 and read[2].nbytes < 64
    assert first.tobytes() == local["layers.1.q.weight"][0:4].tobytes()
    loaded = wc.load_checkpoint(store())
    assert all(loaded[k].tobytes() == local[k].tobytes() for k in local)
    server.reset_log()
    server.faults.status_503 = 0.5  # of about 10 GETs: all of them pass with probability 0.001
    try:
        again = wc.load_checkpoint(store())
    finally:
        server.faults.status_503 = 0.0
    assert all(again[k].tobytes() == local[k].tobytes() for k in local)
    assert any(r.status == 503 for r in server.requests)
    with pytest.raises(FileNotFoundError):
        wc.open_checkpoint(store(f"s3://{bucket}/nothing.zarr"))


def test_persistent_faults_fail_clearly(server: LoopbackS3, bucket: str, model: Path) -> None:
    url = f"s3://{bucket}/model.zarr"
    convert_to_store(server, model, url)
    quick = server.storage_options(config_kwargs={"retries": {"max_attempts": 2}})
    ckpt = wc.open_checkpoint(url, storage_options=quick)
    server.faults.status_503 = 1.0
    try:
        with pytest.raises(OSError, match=r"ServiceUnavailable|503"):
            wc.load_checkpoint(url, storage_options=quick)
        with pytest.raises(OSError, match=r"ServiceUnavailable|503"):
            ckpt["layers.0.q.weight"].numpy()
    finally:
        server.faults.status_503 = 0.0


def _rewrite(server: LoopbackS3, bucket: str, key: str, change: Any) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(**server.storage_options(), skip_instance_cache=True)
    path = f"{bucket}/{key}"
    fs.pipe_file(path, change(fs.cat_file(path)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b[: len(b) // 2], "layers.0.q.weight/c.0.0"),
        (lambda b: b[:100] + bytes([b[100] ^ 0x40]) + b[101:], "layers.0.q.weight/c.0.0"),
    ],
    ids=["truncated", "bit-flip"],
)
def test_damaged_objects_name_their_key(
    server: LoopbackS3, bucket: str, model: Path, change: Any, message: str
) -> None:
    url = f"s3://{bucket}/model.zarr"
    opts = convert_to_store(server, model, url)
    _rewrite(server, bucket, "model.zarr/layers.0.q.weight/c.0.0", change)
    with pytest.raises(ValueError, match=message):
        wc.load_checkpoint(url, storage_options=opts)
    with pytest.raises(ValueError, match=message):
        wc.open_checkpoint(url, storage_options=opts)["layers.0.q.weight"].numpy()
    other = wc.open_checkpoint(url, storage_options=opts)["layers.1.q.weight"].numpy()
    assert other.shape == (256, 256)


def test_missing_and_forbidden(server: LoopbackS3, bucket: str, model: Path) -> None:
    opts = server.storage_options()
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        wc.open_checkpoint(f"s3://{bucket}/nothing.zarr", storage_options=opts)
    with pytest.raises(FileNotFoundError, match="no checkpoint there"):
        wc.open_checkpoint("s3://no-such-bucket-wcodec/model.zarr", storage_options=opts)
    url = f"s3://{bucket}/model.zarr"
    wc.convert(model, url, storage_options=opts, progress=False, **STORE_LAYOUT)
    server.required_key = "the-right-key"
    try:
        with pytest.raises(PermissionError):
            wc.open_checkpoint(url, storage_options=server.storage_options())
    finally:
        server.required_key = None


@pytest.mark.parametrize("over", [False, True], ids=["fresh", "overwrite"])
def test_killed_writer_leaves_no_complete_checkpoint(
    server: LoopbackS3, bucket: str, tmp_path: Path, over: bool
) -> None:
    """A convert killed (SIGKILL) while it writes objects: the destination is refused as
    incomplete, also where it replaced a checkpoint (a remote convert removes the old one
    first: readers get the old model, an error, or the new one, never a mix), and the next
    convert gets through."""
    rng = np.random.default_rng(1)
    tensors = [
        (f"w{i}", "I8", [512, 512], weight_like(rng, (512, 512), np.dtype(np.int8)).tobytes())
        for i in range(40)
    ]
    src = tmp_path / "m.safetensors"
    write_raw(src, tensors)
    url = f"s3://{bucket}/killed.zarr"
    opts = server.storage_options()
    if over:
        old = tmp_path / "old.safetensors"
        write_raw(old, [(n, code, shape, bytes(reversed(b))) for n, code, shape, b in tensors])
        wc.convert(old, url, storage_options=opts, progress=False)
        server.reset_log()
    script = (
        "import json, sys, wcodec_zarr as wc; "
        "wc.convert(sys.argv[1], sys.argv[2], storage_options=json.loads(sys.argv[3]), "
        "chunk_bytes=16384, shard_bytes=65536, overwrite=True)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(src), url, json.dumps(opts)], cwd=tmp_path
    )
    deadline = time.monotonic() + 120
    while sum(1 for r in server.requests if r.method == "PUT" and "/c." in r.key) < 10:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    with pytest.raises(IncompleteCheckpointError, match="not a complete wcodec checkpoint"):
        wc.open_checkpoint(url, storage_options=opts)
    wc.convert(src, url, storage_options=opts, overwrite=True, progress=False)
    loaded = wc.load_checkpoint(url, storage_options=opts)
    assert {k: v.tobytes() for k, v in loaded.items()} == {n: b for n, _, _, b in tensors}


def test_server_in_its_own_process(model: Path) -> None:
    """The benchmarks' server: the same moto server and log, in a child process."""
    from wcodec_zarr.testing import ProcessS3

    with ProcessS3() as s3:
        s3.create_bucket("own-process")
        opts = s3.storage_options()
        url = "s3://own-process/model.zarr"
        wc.convert(model, url, storage_options=opts, progress=False, **STORE_LAYOUT)
        s3.reset_log()
        s3.set_bandwidth(50e6)
        loaded = wc.load_checkpoint(url, storage_options=opts)
        log = s3.requests
    local = wc.load_checkpoint(_local_copy(model, "own-process"))
    assert all(loaded[k].tobytes() == local[k].tobytes() for k in local)
    assert log and {r.method for r in log} == {"GET"}
    assert log[0].key == "own-process/model.zarr/zarr.json"
