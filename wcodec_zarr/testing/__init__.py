"""Real servers on loopback for tests and benchmarks, one module each, and the real weights the
demo, tests and benchmarks use (``weights``).

- ``LoopbackS3`` / ``ProcessS3`` (``s3``): moto's S3 behind request logging, fault injection,
  a bandwidth limit and credential checks; ``ProcessS3`` in a process of its own.
- ``LoopbackHTTP`` (``http``): a directory over plain HTTP with byte ranges.
- ``LoopbackGCS`` (``gcs``): a Google Cloud Storage emulator.

Only 127.0.0.1 is bound, on a free port. The servers' own packages (``moto[server]``,
``gcp-storage-emulator``, werkzeug) come with the ``test`` extra and are imported when a server
starts. Of the package's layers only the CLI imports this package, for the demo's model.
"""

from .base import Request
from .gcs import LoopbackGCS
from .http import LoopbackHTTP
from .s3 import Faults, LoopbackS3, ProcessS3

__all__ = ["Faults", "LoopbackGCS", "LoopbackHTTP", "LoopbackS3", "ProcessS3", "Request"]
