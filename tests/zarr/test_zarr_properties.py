"""Property tests with zarr's own hypothesis strategies: random shapes, chunk and shard shapes,
dtypes and selections (basic and orthogonal) read back exactly what NumPy holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import zarr
from helpers import DTYPES, random_bits
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from zarr.storage import MemoryStore
from zarr.testing.strategies import basic_indices, chunk_shapes, orthogonal_indices, shard_shapes

import wcodec_zarr as wc

# zarr compares each written chunk with the fill value; random float bit patterns hold NaNs
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in equal:RuntimeWarning")


@st.composite
def wcodec_arrays(draw: st.DrawFn) -> tuple[Any, Any]:
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=24))
    chunks = draw(chunk_shapes(shape=shape))
    shards = draw(st.none() | shard_shapes(shape=shape, chunk_shape=chunks))
    seed = draw(st.integers(0, 2**32 - 1))
    data = random_bits(np.random.default_rng(seed), shape, dtype)
    if draw(st.booleans()):  # low-entropy data takes the rANS and constant paths
        data = (data.view(np.uint8) & 3).view(dtype)
    z = zarr.create_array(
        MemoryStore(),
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        shards=shards,
        serializer=wc.WCodec(),
        compressors=None,
        fill_value=0,
        # a chunk of -0.0 (or NaN payloads) compares equal to the fill value: zarr would skip
        # storing it and read back +0.0
        config={"write_empty_chunks": True},
    )
    z[:] = data
    return z, data


@given(wcodec_arrays(), st.data())
def test_basic_selection_matches_numpy(
    array_and_data: tuple[Any, Any], data: st.DataObject
) -> None:
    z, expected = array_and_data
    index = data.draw(basic_indices(shape=expected.shape))
    assert np.asarray(z[index]).tobytes() == np.ascontiguousarray(expected[index]).tobytes()


@given(wcodec_arrays(), st.data())
def test_orthogonal_selection_matches_numpy(
    array_and_data: tuple[Any, Any], data: st.DataObject
) -> None:
    z, expected = array_and_data
    zindex, npindex = data.draw(orthogonal_indices(shape=expected.shape))
    got = z.oindex[zindex]
    assert got.tobytes() == np.ascontiguousarray(expected[npindex]).tobytes()
