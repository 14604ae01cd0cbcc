"""``LoopbackGCS``: a Google Cloud Storage emulator (gcp-storage-emulator) with a request log,
for ``gs://`` through gcsfs."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from functools import partial
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from .base import Request, Server, stop_serving

if TYPE_CHECKING:
    from typing import Self


_GCS_OBJECT = re.compile(r"^/(?:download/)?storage/v1/b/(?P<bucket>[^/]+)/o/(?P<object>.+)$")


class LoopbackGCS(Server):
    """A Google Cloud Storage emulator (``gcp-storage-emulator``, objects in memory) on
    127.0.0.1, every request logged with its URL path as ``key``.

    Two differences from GCS are bridged: GCS answers suffix ranges (``bytes=-N``, how shard
    indexes are read) and the emulator does not, so they are rewritten to the equivalent absolute
    range before it sees them (the log keeps the original); and gcsfs probes every bucket over
    gRPC for its zonal-bucket support, which no emulator answers: set the environment variable
    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before gcsfs is imported.
    ``storage_options()`` are gcsfs's options for this server."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        # connections are accepted on threads, requests handled one at a time: the emulator's
        # storage is not thread-safe
        self._serial = threading.Lock()
        self._storage: Any = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "token": "anon", "project": "wcodec-test", **extra}

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def create_bucket(self, name: str) -> None:
        from gcp_storage_emulator.handlers import buckets

        with self._serial:
            buckets.create_bucket(name, self._storage)

    def start(self) -> Self:
        from gcp_storage_emulator.exceptions import NotFound
        from gcp_storage_emulator.server import RequestHandler
        from gcp_storage_emulator.storage import Storage

        logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
        storage = self._storage = Storage(use_memory_fs=True)
        owner = self

        class Handler(RequestHandler):  # type: ignore[misc]
            status = 0
            length = 0
            entry: tuple[str, str, str | None] | None = None  # method, key, range: to be logged

            def send_response(self, code: int, message: str | None = None) -> None:
                self.status = code
                super().send_response(code, message)

            def send_header(self, keyword: str, value: str) -> None:
                if keyword.lower() == "content-length":
                    self.length = int(value)
                super().send_header(keyword, value)

            def end_headers(self) -> None:
                # logged before the body goes out: a client holding its response finds it logged
                if self.entry is not None:
                    method, path, byte_range = self.entry
                    nbytes = self.length if method == "GET" else 0
                    request = Request(method, path, byte_range, self.status, nbytes)
                    with owner._lock:
                        owner.requests.append(request)
                    self.entry = None
                super().end_headers()

            def _logged(self, method: str, handle: Callable[[], None]) -> None:
                url = urlsplit(self.path)
                byte_range = self.headers.get("Range")
                self.entry = (method, unquote(url.path).lstrip("/"), byte_range)
                with owner._serial:
                    match = _GCS_OBJECT.match(url.path)
                    if match and byte_range and byte_range.startswith("bytes=-"):
                        self._absolute_range(match["bucket"], unquote(match["object"]), byte_range)
                    handle()

            def _absolute_range(self, bucket: str, name: str, suffix: str) -> None:
                try:
                    size = int(storage.get_file_obj(bucket, name)["size"])
                except NotFound:
                    return  # the emulator answers 404
                start = max(size - int(suffix[len("bytes=-") :]), 0)
                del self.headers["Range"]
                self.headers["Range"] = f"bytes={start}-{size - 1}"

            def do_GET(self) -> None:
                self._logged("GET", super().do_GET)

            def do_POST(self) -> None:
                self._logged("POST", super().do_POST)

            def do_PUT(self) -> None:
                self._logged("PUT", super().do_PUT)

            def do_DELETE(self) -> None:
                self._logged("DELETE", super().do_DELETE)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, storage))
        self._server = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        stop_serving(self._server, self._thread)
