"""The ``wcodec`` command: demo output and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wcodec_zarr.cli import main


def test_demo_reports_every_view_bit_exact(
    minilm: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for view in ("fp32", "bf16", "int8"):
        line = next(line for line in out.splitlines() if line.startswith(view))
        assert line.rstrip().endswith("yes")


def test_demo_with_missing_model_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wcodec_zarr",
            "demo",
            "--model",
            str(tmp_path / "none.safetensors"),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # not the source tree, which would shadow the installed package
    )
    assert result.returncode == 2
    assert result.stderr.startswith("wcodec: error:")
    assert "Traceback" not in result.stderr
