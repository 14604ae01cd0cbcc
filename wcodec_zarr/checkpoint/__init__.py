"""Checkpoints: a safetensors model as a chunked Zarr store of compressed tensors.

- ``safetensors_file``, ``source``: the source format and a model's files.
- ``layout``: the manifest, chunk and shard planning, keys and the shard index format, the one
  place both writer and readers take them from; ``quantize``: the lossy int8 option.
- ``convert`` (with ``documents`` and ``shard_writer``, run by ``tasks``): the writer.
- ``reader``: ``open_checkpoint``, ``Checkpoint``, ``LazyTensor``; ``objects``: where a
  tensor's chunks are stored and fetching runs of them.
- ``batch`` and ``load``: whole-model loads onto the CPU or a GPU; ``frameworks``: handing
  results to PyTorch and CuPy.
- ``presented``: the original files as byte ranges; ``export`` and ``verify``.
"""

from .convert import convert
from .export import export_safetensors
from .load import ModuleLoad, load_checkpoint, load_module
from .reader import Checkpoint, IncompleteCheckpointError, LazyTensor, open_checkpoint
from .verify import VerifyReport, verify

__all__ = [
    "Checkpoint",
    "IncompleteCheckpointError",
    "LazyTensor",
    "ModuleLoad",
    "VerifyReport",
    "convert",
    "export_safetensors",
    "load_checkpoint",
    "load_module",
    "open_checkpoint",
    "verify",
]
