"""Shared by the benchmarks: the machine's name, a timer and the report writer."""

from __future__ import annotations

import datetime
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"model name\s*:\s*(.+)", text)
        if match:
            return match.group(1).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_report(kind: str, text: str) -> None:
    """Prints a report and writes it to results/<kind>-<cpu>-<date>.md."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", f"{kind}-{cpu_name()}".lower()).strip("-")
    out = RESULTS / f"{slug}-{datetime.date.today().isoformat()}.md"
    out.write_text(text)
    print(f"wrote {out}")


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cuda_synced(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` followed by a wait for the GPU, so that a timing covers the work it queued."""
    import torch

    def run() -> Any:
        out = fn()
        torch.cuda.synchronize()
        return out

    return run
