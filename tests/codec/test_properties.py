"""Hypothesis: any array of a supported dtype survives a round trip bit-exact."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from helpers import DTYPES
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import wcodec_zarr as wc


@st.composite
def arrays(draw: st.DrawFn) -> Any:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=70))
    nbytes = int(np.prod(shape)) * dtype.itemsize
    # Draw raw bytes from a small alphabet or from all 256 values, then view as dtype.
    alphabet = draw(st.sampled_from([2, 7, 256]))
    raw = draw(hnp.arrays(np.uint8, nbytes, elements=st.integers(0, alphabet - 1)))
    return raw.view(dtype).reshape(shape)


@given(arrays(), st.sampled_from([1, 2, 3]), st.booleans(), st.booleans())
def test_round_trip(array: Any, threads: int, checksum: bool, predict: bool) -> None:
    encoded = wc.encode(array, threads=threads, checksum=checksum, predict=predict)
    decoded = wc.decode(encoded, threads=threads)
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()


@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        wc.decode(b"WCZR\x01" + data)
