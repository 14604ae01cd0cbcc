"""The long fuzz campaign, run once per release: the native decoder under coverage-guided
libFuzzer (clang, ASan + UBSan), the mutation fuzzers of the decoder and of object staging
(gcc, ASan + UBSan), and atheris over the Python decode path. Prints and writes a table of
inputs, coverage, speed and findings to results/fuzz-<cpu>-<date>.md; exits non-zero when any
fuzzer finds something (a crash, a sanitizer report, an unclean exception).

    python benchmarks/fuzz_campaign.py [--runs 10000000] [--mutations 100000] [--atheris 50000]

Needs clang (Debian: clang-14 libclang-rt-14-dev), gcc and CMake; atheris for its row.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import cpu_name, write_report

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "fixtures" / "golden" / "v1"


def build(folder: str, compiler: dict[str, str], options: list[str], targets: list[str]) -> Path:
    out = ROOT / "build" / folder
    env = {**os.environ, **compiler}
    subprocess.run(
        ["cmake", "-S", str(ROOT / "native"), "-B", str(out), "-DWCODEC_PYTHON=OFF",
         "-DWCODEC_CUDA=OFF", *options],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run(
        ["cmake", "--build", str(out), "-j", str(os.cpu_count() or 2), "--target", *targets],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return out


def timed(command: list[str], cwd: Path | None = None) -> tuple[int, str, float]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    return result.returncode, result.stdout + result.stderr, time.perf_counter() - start


def libfuzzer(runs: int, seed: int) -> list[str]:
    folder = build(
        "libfuzz",
        {"CC": "clang-14", "CXX": "clang++-14"},
        ["-DWCODEC_LIBFUZZER=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
        ["wcodec_libfuzz_decode"],
    )
    with tempfile.TemporaryDirectory() as work:
        corpus = Path(work) / "corpus"
        shutil.copytree(GOLDEN, corpus)
        code, log, seconds = timed(
            [str(folder / "wcodec_libfuzz_decode"), f"-runs={runs}", "-max_len=8192",
             f"-seed={seed}", f"-artifact_prefix={work}/", str(corpus)],
        )  # fmt: skip
        findings = [p.name for p in Path(work).iterdir() if p.name != "corpus"]
    done = re.findall(r"DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/", log)
    cov, features, corpus_size = done[-1] if done else ("-", "-", "-")
    return [
        "libFuzzer, native decoder (clang, ASan+UBSan, coverage of the whole core)",
        f"{runs:,}",
        f"{cov} edges, {features} features, corpus {corpus_size}",
        f"{runs / seconds:.0f}/s",
        f"{seconds:.0f} s",
        "none" if code == 0 and not findings else f"exit {code}, artifacts {findings}",
    ]


def mutation(target: str, iterations: int, seed: int) -> list[str]:
    folder = build(
        "sanitize",
        {},
        ["-DWCODEC_TESTS=ON", "-DWCODEC_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug"],
        [target],
    )
    code, log, seconds = timed([str(folder / target), str(iterations), str(seed)])
    last = log.strip().splitlines()[-1] if log.strip() else ""
    return [
        f"{target} (gcc, ASan+UBSan, mutations of valid inputs)",
        f"{iterations:,}",
        last.removeprefix("fuzz: ").removeprefix("fuzz_stage: "),
        f"{iterations / seconds:.0f}/s",
        f"{seconds:.0f} s",
        "none" if code == 0 else f"exit {code}: {last}",
    ]


def atheris(runs: int) -> list[str]:
    code, log, seconds = timed(
        [sys.executable, str(ROOT / "tests" / "fuzz" / "fuzz_decode.py"), f"-runs={runs}",
         "-max_len=4096", str(GOLDEN)],
        cwd=ROOT / "benchmarks",
    )  # fmt: skip
    done = re.findall(r"DONE\s+cov: (\d+) ft: (\d+)", log)
    cov = f"{done[-1][0]} edges (Python)" if done else "-"
    return [
        "atheris, Python decode path",
        f"{runs:,}",
        cov,
        f"{runs / seconds:.0f}/s",
        f"{seconds:.0f} s",
        "none" if code == 0 else f"exit {code}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000_000, help="libFuzzer inputs")
    parser.add_argument("--mutations", type=int, default=100_000, help="decoder mutations")
    parser.add_argument("--atheris", type=int, default=50_000, help="atheris inputs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rows = [
        libfuzzer(args.runs, args.seed),
        mutation("wcodec_fuzz_decode", args.mutations, args.seed),
        mutation("wcodec_fuzz_stage", args.mutations // 10, args.seed),
        atheris(args.atheris),
    ]
    lines = [
        f"# Fuzz campaign ({cpu_name()}, {os.cpu_count()} CPUs)",
        "",
        "Command: `python benchmarks/fuzz_campaign.py "
        f"--runs {args.runs} --mutations {args.mutations} --atheris {args.atheris} "
        f"--seed {args.seed}`",
        "",
        "| fuzzer | inputs | coverage / outcome | speed | time | findings |",
        "|---|---:|---|---:|---:|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]
    write_report("fuzz", "\n".join(lines) + "\n")
    if any(row[-1] != "none" for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
