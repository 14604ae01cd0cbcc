"""The ``wcodec`` command (also ``python -m wcodec_zarr``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ._native import core
from .weights import ModelNotFoundError


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    threads = None if args.threads == 0 else args.threads
    print(
        f"wcodec demo: all-MiniLM-L6-v2 weights, format v{core.FORMAT_VERSION}, "
        f"decoder {core.simd()}, threads {'all' if threads is None else threads}"
    )
    results = demo.run(args.model, threads, args.repeats)
    print(demo.format_table(results))
    print(
        "ratio: original / compressed bytes; bound: the same for the order-0 entropy of each "
        "coded byte plane (one table per tensor); gap: size over that bound"
    )
    return 0 if all(r.exact for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wcodec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="compress the real MiniLM weights and report")
    demo.add_argument("--model", type=Path, help="a safetensors file instead of MiniLM")
    demo.add_argument("--threads", type=int, default=0, help="0 (default): every core")
    demo.add_argument("--repeats", type=int, default=3, help="timing repeats (best is shown)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ModelNotFoundError, ValueError, TypeError) as exc:
        print(f"wcodec: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
