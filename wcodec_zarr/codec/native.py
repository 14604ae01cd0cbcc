"""Loads the compiled modules: ``_core`` (CPU codec, always built) and ``_cuda`` (optional).

The CUDA module is optional by design: its absence, or the absence of a usable GPU, is reported
as a reason string instead of an import error.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

from .errors import ChunkError

try:
    from . import _core  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - only without a build
    raise ImportError(
        "wcodec_zarr's compiled module _core is missing: install the package with "
        "'pip install .' (tests import the installed package, not the source tree)"
    ) from exc

core: Any = _core
core.set_chunk_error_type(ChunkError)


@cache
def cuda_module() -> tuple[ModuleType | None, str]:
    """Returns ``(module, "")`` when the CUDA module is built, else ``(None, reason)``."""
    try:
        from . import _cuda  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, f"the CUDA module was not built (no nvcc at build time?): {exc}"
    return _cuda, ""


def cuda() -> Any:
    """The CUDA module; ``RuntimeError`` naming the reason when it was not built."""
    module, reason = cuda_module()
    if module is None:
        raise RuntimeError(f"GPU decoding is unavailable: {reason}")
    return module


def cuda_report() -> dict[str, Any]:
    """Devices the CUDA runtime sees, or why none is usable."""
    module, reason = cuda_module()
    if module is None:
        return {"built": False, "devices": [], "error": reason}
    report: dict[str, Any] = dict(module.query_devices())
    report["built"] = True
    return report
