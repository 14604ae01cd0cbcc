"""The ``wcodec`` command: each subcommand's output and exit codes; user mistakes are one line
on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import new_bucket, server_fixture, weight_like
from safetensors_helpers import write_raw

import wcodec_zarr as wc
from wcodec_zarr.cli import build_parser, main
from wcodec_zarr.testing import LoopbackS3


@pytest.fixture
def model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    weight = weight_like(rng, (256, 128), np.dtype(np.float32))
    path = tmp_path / "m.safetensors"
    write_raw(
        path,
        [("w", "F32", [256, 128], weight.tobytes()), ("zero", "F32", [16], bytes(64))],
        {"format": "pt"},
    )
    return path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wcodec_zarr", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,  # not the source tree, which would shadow the installed package
    )


def test_convert_info_verify_export(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(tmp_path / "ckpt")
    assert main(["convert", str(model), ckpt, "--quiet"]) == 0
    assert capsys.readouterr().out == ""

    assert main(["info", ckpt]) == 0
    table = capsys.readouterr().out.splitlines()
    row = next(line.split() for line in table if line.startswith("w "))
    assert row[1:3] == ["F32", "256x128"]
    assert float(row[5]) > 1.0  # ratio
    assert any(line.startswith("total (2 tensors)") for line in table)

    assert main(["info", ckpt, "--json"]) == 0
    info = json.loads(capsys.readouterr().out, parse_constant=pytest.fail)  # no NaN, Infinity
    assert [t["name"] for t in info["tensors"]] == ["w", "zero"]
    w, zero = info["tensors"]
    # all zeros: an entropy of 0 bytes, an unbounded ratio (the table's "inf")
    assert (zero["bound_bytes"], zero["bound_ratio"]) == (0.0, None)
    assert w["bound_ratio"] == w["nbytes"] / w["bound_bytes"]
    totals = info["totals"]
    assert totals["tensors"] == 2
    assert totals["nbytes"] == 256 * 128 * 4 + 64
    assert totals["stored_nbytes"] == w["stored_nbytes"] + zero["stored_nbytes"]
    assert totals["ratio"] == totals["nbytes"] / totals["stored_nbytes"]
    assert totals["bound_bytes"] == w["bound_bytes"]
    assert totals["bound_ratio"] == totals["nbytes"] / totals["bound_bytes"]
    assert info["files"] == [{"name": "m.safetensors", "size": model.stat().st_size}]
    assert (info["index"], info["other_files"]) == (None, [])

    assert main(["verify", str(model), ckpt]) == 0
    assert capsys.readouterr().out.startswith("OK: 2 tensors bit-exact")

    assert main(["export", ckpt, str(tmp_path / "back.safetensors")]) == 0
    assert (tmp_path / "back.safetensors").read_bytes() == model.read_bytes()


def test_verify_names_the_first_differing_tensor(model: Path, tmp_path: Path) -> None:
    assert run_cli("convert", str(model), "ckpt", "-q", cwd=tmp_path).returncode == 0
    raw = bytearray(model.read_bytes())
    raw[-100] ^= 1  # inside "w" ("zero" holds the last 64 bytes)
    changed = tmp_path / "changed" / "m.safetensors"
    changed.parent.mkdir()
    changed.write_bytes(bytes(raw))
    result = run_cli("verify", str(changed), "ckpt", "-q", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("MISMATCH: w: bytes differ in region")


def test_verify_of_a_quantized_checkpoint_says_lossy(model: Path, tmp_path: Path) -> None:
    assert (
        run_cli("convert", str(model), "q", "-q", "--quantize", "int8", cwd=tmp_path).returncode
        == 0
    )
    result = run_cli("verify", str(model), "q", "-q", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("OK, LOSSY: 1 of 2 tensors are quantized (int8 per row)")
    assert "largest relative RMS error" in result.stdout and "(w)" in result.stdout


def test_verify_finds_a_renamed_file_and_names_what_the_checkpoint_holds(
    model: Path, tmp_path: Path
) -> None:
    assert run_cli("convert", str(model), "ckpt", "-q", cwd=tmp_path).returncode == 0
    (tmp_path / "renamed").mkdir()
    (tmp_path / "renamed" / "model.safetensors").write_bytes(model.read_bytes())
    result = run_cli("verify", "renamed/model.safetensors", "ckpt", "-q", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "note: model.safetensors is m.safetensors in the checkpoint (identical header and size)",
        "OK: 2 tensors bit-exact, headers identical",
    ]
    other = tmp_path / "other.safetensors"
    write_raw(other, [("w", "F32", [4], bytes(16))])
    result = run_cli("verify", str(other), "ckpt", "-q", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "MISMATCH: other.safetensors: file missing from the checkpoint (it holds m.safetensors)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["convert", "missing.safetensors", "out"], "missing.safetensors: no such file"),
        (["convert", "m.safetensors", "exists"], "exists; pass overwrite=True (--overwrite)"),
        (["info", "nowhere"], "nowhere: no such directory"),
        (
            ["info", "m.safetensors"],
            "m.safetensors: a file, not a Zarr store (a directory, a .zip file or a URL); a "
            "safetensors model, which 'wcodec convert m.safetensors <checkpoint>' converts",
        ),
        (["info", "exists"], "exists: no checkpoint there (no Zarr group)"),
        (["convert", "garbage.safetensors", "out"], "not a valid safetensors file"),
        (["convert", "m.safetensors", "out", "-o", "novalue"], "is not key=value"),
        (["demo", "--model", "none.safetensors"], "none.safetensors: no such file"),
        (["convert", "m.safetensors", "m.safetensors", "--overwrite"], "overlaps the source"),
    ],
)
def test_user_mistakes_are_one_clear_line(
    model: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "exists").mkdir()
    (tmp_path / "garbage.safetensors").write_bytes(b"\x05\0\0\0\0\0\0\0hello")
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("wcodec: error:")
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "m.safetensors").read_bytes() == model.read_bytes()


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"wcodec {wc.__version__} (bitstream format v1, ")


def test_no_arguments_print_the_help(tmp_path: Path) -> None:
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: wcodec")
    for command in ("convert", "info", "verify", "export", "demo"):
        assert f"    {command} " in result.stdout


def test_every_argument_is_described_in_plain_text() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name, sub in [("wcodec", parser), *commands.choices.items()]:
        assert sub.description and "``" not in sub.description, name
        for action in sub._actions:
            assert action.help and "``" not in action.help, (name, action.dest)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chunk-kb", "0"], "argument --chunk-kb: --chunk-kb must be a positive number, got 0"),
        (["--shard-mb", "-1"], "argument --shard-mb: --shard-mb must be a positive number"),
        (["--chunk-kb", "big"], "argument --chunk-kb: --chunk-kb takes a number, not 'big'"),
        (["--quantize", "int4"], "argument --quantize: invalid choice: 'int4'"),
    ],
)
def test_bad_options_are_named(model: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli("convert", str(model), "out", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith(f"wcodec convert: error: {message}")
    assert not (tmp_path / "out").exists()


def test_export_quiet_and_progress(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(tmp_path / "ckpt")
    assert main(["convert", str(model), ckpt, "-q"]) == 0
    assert main(["export", ckpt, str(tmp_path / "a.safetensors"), "-q"]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["export", ckpt, str(tmp_path / "b.safetensors")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'b.safetensors'}\n"
    wc.export_safetensors(ckpt, tmp_path / "c.safetensors", progress=True)
    bar = capsys.readouterr().err
    assert "export" in bar and "100%" in bar
    for name in "abc":
        assert (tmp_path / f"{name}.safetensors").read_bytes() == model.read_bytes()


def test_demo_runs_the_main_job(
    minilm: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo.zarr"
    assert main(["demo", "--repeats", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("wcodec demo: all-MiniLM-L6-v2 (model.safetensors), format v1")
    # the summary leads, a line per step
    labels = [line.split(":")[0] for line in lines[2:7]]
    assert labels == ["model", "checkpoint", "verify", "lazy slice", "GPU load"]
    assert lines[2].endswith("104 tensors (103 F32, 1 I64), 90.86 MB")
    assert "ratio 1.22" in lines[3] and "(order-0 bound 1.21" in lines[3]
    assert lines[4].endswith("OK, 104 tensors bit-exact")
    assert lines[5].startswith("lazy slice:  rank 1 of 8") and lines[5].endswith("bit-exact yes")
    assert not any(line.startswith("total (104 tensors)") for line in lines)
    for view in ("fp32", "bf16", "int8"):
        line = next(line for line in lines if line.startswith(view + " "))
        assert line.rstrip().endswith("yes")
    assert [line.split(":")[0] for line in lines[-3:]] == ["ratio", "bound", "views"]
    assert (out / "zarr.json").is_file()

    assert main(["demo", "--repeats", "1", "--out", str(out), "--tensors"]) == 0
    assert "total (104 tensors)" in capsys.readouterr().out


server = server_fixture(LoopbackS3)


def start_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "wcodec_zarr", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def interrupt_when(process: subprocess.Popen[str], started: Callable[[], bool]) -> tuple[int, str]:
    """Sends SIGINT (Ctrl-C) once ``started()`` holds; the exit status and stderr."""
    deadline = time.monotonic() + 60
    while not started():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the command did not start writing"
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr


@pytest.mark.s3
@pytest.mark.parametrize("command", ["convert", "export"])
def test_ctrl_c_is_one_line_and_leaves_nothing(
    server: LoopbackS3, tmp_path: Path, command: str
) -> None:
    """Interrupted while it writes (its remote side slowed down by the server's bandwidth limit),
    a command prints one line, exits with 130 and leaves nothing of what it was writing."""
    rng = np.random.default_rng(5)
    # 8 MiB in eight tensors: their objects are read and written one after another over the
    # throttled seconds, so a command is still at work when its first output appears
    weights = [weight_like(rng, (256, 1024), np.dtype(np.float32)) for _ in range(8)]
    model = tmp_path / "m.safetensors"
    write_raw(model, [(f"w{i}", "F32", [256, 1024], w.tobytes()) for i, w in enumerate(weights)])
    bucket = new_bucket(server)
    options = server.storage_options()
    wc.convert(model, f"s3://{bucket}/ckpt", storage_options=options, progress=False)
    wc.export_safetensors(
        f"s3://{bucket}/ckpt", f"s3://{bucket}/m.safetensors", storage_options=options
    )
    flags = [f"-o{key}={json.dumps(value)}" for key, value in options.items()]
    out = tmp_path / "out"
    out.mkdir()
    server.set_bandwidth(2e6)
    try:
        if command == "convert":
            process = start_cli(
                "convert", f"s3://{bucket}/m.safetensors", "out/ckpt", *flags, cwd=tmp_path
            )
        else:
            process = start_cli("export", f"s3://{bucket}/ckpt", "out", *flags, cwd=tmp_path)
        code, stderr = interrupt_when(process, lambda: any(out.iterdir()))
    finally:
        server.set_bandwidth(None)
    assert (code, stderr) == (130, "wcodec: interrupted\n")
    assert list(out.iterdir()) == []


def test_an_unreachable_endpoint_is_one_line_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    result = run_cli(
        "info",
        "s3://bucket/model.zarr",
        f"-oendpoint_url=http://127.0.0.1:{port}",
        "-okey=k",
        "-osecret=s",
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - start
    assert result.returncode == 2
    assert result.stderr.startswith("wcodec: error: s3://bucket/model.zarr: ")
    assert "Could not connect" in result.stderr and len(result.stderr.splitlines()) == 1
    assert elapsed < 20


@pytest.mark.s3
def test_no_credentials_is_one_line(server: LoopbackS3, tmp_path: Path) -> None:
    """An S3 URL with no credentials anywhere (no options, no environment, no AWS files): one
    line naming the URL and botocore's reason, exit 2."""
    bucket = new_bucket(server)
    empty = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": os.devnull}
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | empty
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    url = f"s3://{bucket}/model.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "wcodec_zarr", "info", url, f"-oendpoint_url={server.endpoint}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 2
    assert (
        result.stderr == f"wcodec: error: {url}: NoCredentialsError: Unable to locate credentials\n"
    )


def test_a_missing_storage_client_is_one_line(tmp_path: Path) -> None:
    """Without s3fs (its import blocked in the child), s3:// URLs fail with fsspec's advice."""
    script = (
        "import sys; sys.modules['s3fs'] = None\n"
        "from wcodec_zarr.cli import main\n"
        "sys.exit(main(['info', 's3://bucket/model.zarr']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("wcodec: error: s3://bucket/model.zarr: ")
    assert "s3fs" in result.stderr and len(result.stderr.splitlines()) == 1
