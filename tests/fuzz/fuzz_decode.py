"""Coverage-guided fuzzing of ``wcodec_zarr.decode`` with atheris.

    python tests/fuzz/fuzz_decode.py -runs=20000 tests/fixtures/golden/v1

Every input must decode or raise ValueError; anything else (another exception, a crash) is a
finding. Inputs whose header claims more than 64 MiB are skipped: allocation size is a limit
the format states (2^40 bytes), not something to exercise here.
"""

from __future__ import annotations

import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    import wcodec_zarr as wc
    from wcodec_zarr.codec.dtypes import CODE_TO_DTYPE
    from wcodec_zarr.codec.native import core

LIMIT = 64 << 20


def test_one_input(data: bytes) -> None:
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        code, shape = core.header(buf)
        if int(np.prod(shape, dtype=np.float64)) * CODE_TO_DTYPE[code].itemsize > LIMIT:
            return
        wc.decode(data, threads=2)
    except ValueError:
        pass


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
