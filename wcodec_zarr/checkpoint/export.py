"""``export_safetensors``: a checkpoint's original safetensors files written back,
byte-identical, as plain copies of the files ``presented`` makes of it (streamed: memory stays
a few bands). Each file is written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from tqdm.auto import tqdm
from zarr.abc.store import Store

from ..storage import filesystem, local_path, overlap
from .presented import PresentedFiles
from .reader import open_checkpoint

EXPORT_BLOCK = 16 << 20


def _write_atomic(fs: Any, path: str, presented: PresentedFiles, name: str, bar: Any) -> None:
    """Copies a presented file to ``path`` whole or not at all: a local file through a
    temporary name and a rename; a remote one as an upload committed only once it is complete
    (fsspec's ``autocommit=False``: ``commit``, or ``discard`` on failure)."""
    local = isinstance(fs, LocalFileSystem)
    target = f"{path}.partial-{uuid.uuid4().hex[:8]}" if local else path
    size = presented.size(name)
    file = fs.open(target, "wb", autocommit=local)
    try:
        with file:
            for start in range(0, size, EXPORT_BLOCK):
                file.write(presented.read_range(name, start, min(start + EXPORT_BLOCK, size)))
                bar.update(min(EXPORT_BLOCK, size - start))
        # before the file is put in place: every byte of it is of the checkpoint opened
        presented.ckpt.check_unchanged()
    except BaseException:
        # a corrupt chunk, a failed read or Ctrl-C: nothing of the file stays behind
        if local:
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)
        else:
            file.discard()
        raise
    if local:
        os.replace(target, path)
    else:
        file.commit()


def export_safetensors(
    url: str | Path | Store,
    dst: str | Path,
    *,
    storage_options: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool | None = False,
) -> list[str]:
    """Writes the original safetensors files back, byte-identical (streamed: memory stays a few
    bands); returns their paths.

    A checkpoint of one file goes to ``dst`` when it ends in ``.safetensors``; otherwise
    ``dst`` is a directory that receives every original file under its name, the index, and
    the model's other files (config, tokenizer, ...) that convert kept.
    A quantized checkpoint cannot be exported: its originals were not kept. ``progress``:
    a tqdm bar of the bytes written (None: on a terminal).
    """
    ckpt = open_checkpoint(url, storage_options=storage_options)
    if ckpt.quantized:
        raise ValueError(f"{url} was converted with quantization (lossy); it cannot be exported")
    dst = str(dst)
    if not isinstance(url, Store) and overlap(dst, url):
        raise ValueError(f"{dst} overlaps the checkpoint {url}: export somewhere else")
    fs, base = filesystem(dst, storage_options if local_path(dst) is None else None)
    single = len(ckpt.files) == 1 and ckpt.index is None and dst.endswith(".safetensors")
    with contextlib.closing(PresentedFiles(ckpt)) as presented:
        # one file: the weights alone; a directory: every file, the model's other files too
        names = [ckpt.files[0].name] if single else presented.names()
        targets = [base] if single else [f"{base.rstrip('/')}/{n}" for n in names]
        for target in targets:
            if fs.exists(target) and not overwrite:
                raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite)")
        for folder in sorted({t.rsplit("/", 1)[0] for t in targets} if not single else ()):
            fs.makedirs(folder, exist_ok=True)
        show = sys.stderr.isatty() if progress is None else progress
        total = sum(presented.size(n) for n in names)
        with tqdm(total=total, unit="B", unit_scale=True, desc="export", disable=not show) as bar:
            for name, target in zip(names, targets, strict=True):
                _write_atomic(fs, target, presented, name, bar)
    return targets
