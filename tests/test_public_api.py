"""The public surface: every public name of the package, and every public method and property
of its classes, says what it is (a docstring); ``wcodec_zarr.__all__`` lists what exists."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import wcodec_zarr as wc
from wcodec_zarr import checkpoint, codec
from wcodec_zarr import zarr as wzarr
from wcodec_zarr.checkpoint.reader import FileInfo, TensorSlice

# classes reached through the public ones (what open_checkpoint and get_slice return)
REACHED = [TensorSlice, FileInfo]


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    for attr, member in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(member, property):
            yield attr, member.fget
        elif isinstance(member, staticmethod | classmethod):
            yield attr, member.__func__
        elif inspect.isfunction(member):
            yield attr, member


def public_objects() -> Iterator[tuple[str, Any]]:
    seen: set[int] = set()
    modules = [wc, checkpoint, codec, wzarr]
    named = [(name, getattr(m, name)) for m in modules for name in getattr(m, "__all__", [])]
    named += [(cls.__name__, cls) for cls in REACHED]
    for name, obj in named:
        if id(obj) in seen or not (inspect.isclass(obj) or callable(obj)):
            continue  # constants (FORMAT_VERSION, __version__) document themselves in use
        seen.add(id(obj))
        yield name, obj
        if inspect.isclass(obj):
            for attr, member in _members(obj):
                yield f"{name}.{attr}", member


def test_every_public_name_has_a_docstring() -> None:
    missing = [name for name, obj in public_objects() if not (obj.__doc__ or "").strip()]
    assert missing == []


def test_all_lists_names_that_exist() -> None:
    for module in (wc, checkpoint, codec, wzarr):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
