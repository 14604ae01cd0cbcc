"""The ``wcodec`` command (also ``python -m wcodec_zarr``): convert, info, verify, export, demo.

User mistakes (a missing file, a bad header, an existing destination) print one line starting
with ``wcodec: error:`` and exit with status 2; ``verify`` exits with 1 when the checkpoint
differs from its source. Ctrl-C prints ``wcodec: interrupted`` and exits with status 130, with
what the command had started removed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..checkpoint import convert, export_safetensors, open_checkpoint, verify
from ..checkpoint.layout import CHUNK_BYTES, SHARD_BYTES
from ..codec.native import core
from . import demo
from .tables import format_info, info_json, info_rows, mb


def _storage_options(pairs: list[str] | None) -> dict[str, Any] | None:
    """``-o key=value`` pairs; values are JSON where they parse (numbers, true, objects)."""
    if not pairs:
        return None
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"storage option {pair!r} is not key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _workers(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _convert(args: argparse.Namespace) -> int:
    manifest = convert(
        args.src,
        args.dst,
        shard_bytes=int(args.shard_mb * 2**20),
        chunk_bytes=int(args.chunk_kb * 2**10),
        quantize=args.quantize,
        workers=_workers(args.workers),
        storage_options=_storage_options(args.storage_option),
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    tensors = manifest["tensors"].values()
    total = sum(t["nbytes"] for t in tensors)
    stored = sum(t["stored_nbytes"] for t in tensors)
    if not args.quiet:
        print(
            f"{args.dst}: {len(tensors)} tensors, {mb(total)} MB -> {mb(stored)} MB "
            f"(ratio {total / stored:.4f})"
        )
    return 0


def _info(args: argparse.Namespace) -> int:
    ckpt = open_checkpoint(args.url, storage_options=_storage_options(args.storage_option))
    rows = info_rows(ckpt)
    if args.json:
        print(json.dumps(info_json(args.url, ckpt, rows), allow_nan=False))
    else:
        print(format_info(ckpt, rows))
    return 0


def _verify(args: argparse.Namespace) -> int:
    report = verify(
        args.src,
        args.url,
        workers=_workers(args.workers),
        storage_options=_storage_options(args.storage_option),
        progress=False if args.quiet else None,
    )
    for source, held in report.renamed:
        print(f"note: {source} is {held} in the checkpoint (identical header and size)")
    if report.exact:
        print(f"OK: {report.checked} tensors bit-exact, headers identical")
        return 0
    if report.ok:
        worst = max(report.lossy, key=lambda row: row[2])
        print(
            f"OK, LOSSY: {len(report.lossy)} of {report.checked} tensors are quantized (int8 "
            f"per row) and equal a fresh quantization of the source, the others bit-exact; "
            f"largest relative RMS error {worst[2]:.3g} ({worst[0]}), largest absolute error "
            f"{max(row[1] for row in report.lossy):.3g}"
        )
        return 0
    name, what = report.mismatches[0]
    print(
        f"MISMATCH: {name}: {what} ({len(report.mismatches)} difference(s) in all)",
        file=sys.stderr,
    )
    return 1


def _export(args: argparse.Namespace) -> int:
    written = export_safetensors(
        args.url,
        args.dst,
        storage_options=_storage_options(args.storage_option),
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    if not args.quiet:
        for path in written:
            print(path)
    return 0


def _demo(args: argparse.Namespace) -> int:
    return demo.main(args.model, args.out, args.threads, args.repeats, args.tensors)


def _positive(flag: str) -> Any:
    """An argparse type: a number above 0 (the error names ``flag``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes a number, not {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number, got {text}")
        return value

    return parse


def _version() -> str:
    try:
        package = version("wcodec-zarr")
    except PackageNotFoundError:  # pragma: no cover - running from an unbuilt tree
        package = "unknown"
    return f"wcodec {package} (bitstream format v{core.FORMAT_VERSION}, decoder {core.simd()})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wcodec",
        description="Lossless compression of neural-network weights: safetensors models as "
        "compressed, lazily readable Zarr checkpoints (local or s3://, gs://, ... URLs).",
        epilog="'wcodec COMMAND -h' describes a command. Exit status: 0 done, 1 verify found a "
        "difference, 2 an error (one 'wcodec: error:' line), 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show storage retries and error tracebacks"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help="one of:")

    def storage(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-o",
            "--storage-option",
            action="append",
            metavar="KEY=VALUE",
            help="fsspec option for remote URLs, e.g. endpoint_url=http://... (repeatable; "
            "values parse as JSON where they can)",
        )

    def quiet(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("-q", "--quiet", action="store_true", help=f"no progress bar{what}")

    p = sub.add_parser(
        "convert",
        help="safetensors model -> compressed Zarr checkpoint",
        description="Converts a safetensors model (a file, a sharded model's index.json, or a "
        "model folder, whose other files come along) into a checkpoint.",
    )
    p.add_argument(
        "src", help="a .safetensors file, a *.safetensors.index.json, or a model folder (or URL)"
    )
    p.add_argument("dst", help="the checkpoint to write: a directory or a URL (s3://..., gs://...)")
    p.add_argument(
        "--shard-mb",
        type=_positive("--shard-mb"),
        default=SHARD_BYTES / 2**20,
        metavar="MB",
        help="largest stored object (shard) in MiB (default %(default)g)",
    )
    p.add_argument(
        "--chunk-kb",
        type=_positive("--chunk-kb"),
        default=CHUNK_BYTES / 2**10,
        metavar="KB",
        help="largest chunk, the unit of a partial read, in KiB (default %(default)g)",
    )
    p.add_argument("--quantize", choices=["int8"], help="LOSSY: per-row int8 of 2-D weights")
    p.add_argument(
        "--workers", metavar="N|ADDRESS", help="encode on Dask: a worker count or a scheduler"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    quiet(p, " or summary")
    storage(p)
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "info",
        help="per-tensor table: dtype, shape, size, ratio, bound",
        description="Describes a checkpoint: per tensor its dtype, shape, sizes, ratio and "
        "entropy bound, then the totals and the model's files.",
    )
    p.add_argument("url", help="the checkpoint: a directory, a .zip or a URL")
    p.add_argument("--json", action="store_true", help="machine-readable output, with totals")
    storage(p)
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "verify",
        help="bit-exact comparison with the source model",
        description="Compares a checkpoint with the model it was converted from: headers, "
        "every tensor bit for bit, the other files byte for byte. Exit status 1 on a "
        "difference.",
    )
    p.add_argument("src", help="the source model, as given to convert")
    p.add_argument("url", help="the checkpoint")
    p.add_argument(
        "--workers", metavar="N|ADDRESS", help="compare on Dask: a worker count or a scheduler"
    )
    quiet(p, "")
    storage(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser(
        "export",
        help="write the original safetensors files back",
        description="Writes the model's original files back, byte-identical: the weights, "
        "the index and the other files a folder had.",
    )
    p.add_argument("url", help="the checkpoint")
    p.add_argument("dst", help="a .safetensors path (a model of one file) or a directory (or URL)")
    p.add_argument("--overwrite", action="store_true", help="replace files that exist")
    quiet(p, " or list of files written")
    storage(p)
    p.set_defaults(func=_export)

    p = sub.add_parser(
        "demo",
        help="convert, inspect, verify and load the real MiniLM model",
        description="The main job on the real all-MiniLM-L6-v2 weights (or --model): "
        "convert, verify, a lazy slice, a GPU load where there is a GPU, and the codec alone "
        "on fp32, bf16 and int8.",
    )
    p.add_argument("--model", type=Path, help="a safetensors file instead of MiniLM")
    p.add_argument("--out", default="wcodec-demo.zarr", help="checkpoint to write (replaced)")
    p.add_argument("--threads", type=int, default=0, help="0 (default): every core")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (best is shown)")
    p.add_argument("--tensors", action="store_true", help="print the per-tensor table too")
    p.set_defaults(func=_demo)
    return parser


# packages whose errors are about the storage a command reached (an endpoint, credentials,
# a missing client library), not about wcodec: reported as one line like user mistakes
_REMOTE_PACKAGES = frozenset(
    ["botocore", "aiobotocore", "aiohttp", "s3fs", "gcsfs", "google", "obstore", "fsspec"]
)


def _remote_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in _REMOTE_PACKAGES


def _urls(args: argparse.Namespace) -> list[str]:
    """The command's remote URLs, which a storage error is about."""
    places = [getattr(args, name, None) for name in ("src", "url", "dst")]
    return [str(p) for p in places if p is not None and "://" in str(p)]


def _verbose(enabled: bool) -> None:
    """``-v``: storage retries (botocore, s3fs) and errors' tracebacks on stderr."""
    if enabled:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("wcodec: %(name)s: %(message)s"))
        for name in ("botocore.retries", "botocore.retryhandler", "s3fs", "gcsfs"):
            logger = logging.getLogger(name)
            logger.setLevel(logging.DEBUG)
            logger.addHandler(handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: the help, as a question
        parser.print_help()
        return 0
    _verbose(args.verbose)
    try:
        code: int = args.func(args)
    except (ValueError, TypeError, OSError, KeyError, ImportError) as exc:
        if args.verbose:
            traceback.print_exc()
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        where = ", ".join(_urls(args)) if isinstance(exc, ImportError) else ""
        print(f"wcodec: error: {where + ': ' if where else ''}{message}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _remote_error(exc):
            raise
        if args.verbose:
            traceback.print_exc()
        where = ", ".join(_urls(args)) or "storage"
        print(f"wcodec: error: {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # what the command had started is removed on the way out (convert's build folder,
        # export's partial files)
        print("wcodec: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
