from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def minilm() -> dict[str, dict[str, object]]:
    from wcodec_zarr.weights import ModelNotFoundError, minilm_views

    try:
        return minilm_views()  # type: ignore[return-value]
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
