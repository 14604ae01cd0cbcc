from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def minilm() -> dict[str, dict[str, object]]:
    from wcodec_zarr.testing.weights import ModelNotFoundError, minilm_views

    try:
        return minilm_views()  # type: ignore[return-value]
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """GPU tests run only where the CUDA module, CuPy and a device are all present."""
    from wcodec_zarr import gpu_status

    status = gpu_status()
    if status["available"]:
        return
    skip = pytest.mark.skip(reason=f"no GPU decoding here: {status['reason']}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
