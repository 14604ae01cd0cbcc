"""Real servers on loopback for tests and benchmarks.

``LoopbackS3``/``ProcessS3``: an S3-compatible server, moto's server mode (its werkzeug
application on a thread, ``moto[server]``), with a WSGI layer in front that

- logs every request (method, key, Range header, response bytes) for request counting;
- fails a share of data requests with ``503 ServiceUnavailable`` or cuts their response off halfway
  (fault injection, seeded);
- limits the bandwidth of all responses together (a shared token bucket);
- can require one access key (anything else gets ``403 InvalidAccessKeyId``, as S3 answers).

    with LoopbackS3() as s3:
        s3.create_bucket("models")
        opts = s3.storage_options()  # endpoint_url, key, secret for s3fs

``LoopbackHTTP``: a directory served read-only over plain HTTP (werkzeug), with byte ranges
(suffix ranges included) and the same request log: the ``http(s)://`` path of fsspec and obstore.

``LoopbackGCS``: a Google Cloud Storage emulator (gcp-storage-emulator) with the same request
log, for ``gs://`` through gcsfs.

Only 127.0.0.1 is bound, on a free port.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self

ACCESS_KEY = "wcodec-test-key"
SECRET_KEY = "wcodec-test-secret"

_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error>"
)


@dataclass(frozen=True)
class Request:
    method: str
    key: str  # "bucket/key" (path without the leading slash)
    range: str | None
    status: int
    nbytes: int  # response body bytes sent (or being sent)
    cut: bool = False  # the connection was dropped before the whole body was sent


@dataclass
class Faults:
    """Shares of GET requests for object data (not listings) to fail; 0 disables."""

    status_503: float = 0.0
    cut: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class _TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def take(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
            wait = self._next - now
        if wait > 0:
            time.sleep(wait)


class _Middleware:
    def __init__(self, app: Callable[..., Iterable[bytes]], server: LoopbackS3) -> None:
        self.app = app
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        s3 = self.server
        method = environ["REQUEST_METHOD"]
        key = environ.get("PATH_INFO", "").lstrip("/")
        byte_range = environ.get("HTTP_RANGE")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if s3.required_key is not None and f"Credential={s3.required_key}/" not in auth:
            return self._error(start_response, method, key, byte_range, 403, "InvalidAccessKeyId")
        is_data = method == "GET" and "/" in key and not environ.get("QUERY_STRING")
        faults = s3.faults
        if is_data and faults.status_503 and faults.rng.random() < faults.status_503:
            return self._error(start_response, method, key, byte_range, 503, "ServiceUnavailable")
        cut = is_data and faults.cut > 0 and faults.rng.random() < faults.cut
        status: list[int] = [0]

        def record_status(code: str, headers: Any, *rest: Any) -> Any:
            status[0] = int(code.split()[0])
            return start_response(code, headers, *rest)

        body = self.app(environ, record_status)
        return self._send(body, method, key, byte_range, status, cut)

    def _send(
        self,
        body: Iterable[bytes],
        method: str,
        key: str,
        byte_range: str | None,
        status: list[int],
        cut: bool,
    ) -> Iterator[bytes]:
        s3 = self.server
        data = b"".join(body)
        if hasattr(body, "close"):
            body.close()
        limit = len(data) // 2 if cut else len(data)
        # logged before the first byte goes out, so that a client that has its response
        # finds its request in the log
        s3.log(Request(method, key, byte_range, status[0], limit, cut))
        for start in range(0, limit, 1 << 16):
            block = data[start : min(start + (1 << 16), limit)]
            if s3.bucket is not None:
                s3.bucket.take(len(block))
            yield block
        if cut:
            # the connection drops mid-body: the client sees a truncated response
            raise ConnectionAbortedError("fault injection: response cut off")

    def _error(
        self,
        start_response: Callable[..., Any],
        method: str,
        key: str,
        byte_range: str | None,
        code: int,
        name: str,
    ) -> list[bytes]:
        body = _ERROR.format(code=name, message=name).encode()
        reason = {403: "Forbidden", 503: "Service Unavailable"}[code]
        start_response(
            f"{code} {reason}",
            [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
        )
        self.server.log(Request(method, key, byte_range, code, len(body)))
        return [body]


class _Server:
    """A context manager that starts and stops a server."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _serve_on_thread(app: Any, **options: Any) -> tuple[Any, threading.Thread]:
    """A werkzeug server of the WSGI ``app`` on 127.0.0.1 (a free port), on a daemon thread."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    server = make_server("127.0.0.1", 0, app, threaded=True, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _stop_serving(server: Any, thread: threading.Thread | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join()


class _Client(_Server):
    """What a client of the S3 server needs: its address, credentials and buckets."""

    @property
    def endpoint(self) -> str:
        raise NotImplementedError

    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """s3fs options for this server (credentials included)."""
        return {
            "endpoint_url": self.endpoint,
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"region_name": "us-east-1"},
            **extra,
        }

    def obstore_options(self, **extra: Any) -> dict[str, Any]:
        """obstore ``from_url`` arguments for this server (``open_store(backend="obstore")``)."""
        return {
            "config": {
                "endpoint": self.endpoint,
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
                "region": "us-east-1",
            },
            "client_options": {"allow_http": True},
            **extra,
        }

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)


class LoopbackS3(_Client):
    """moto's S3 on 127.0.0.1 behind request logging, faults and a bandwidth limit, on a thread
    of this process (so that tests can change faults and read the log directly)."""

    def __init__(self, bandwidth: float | None = None) -> None:
        self.requests: list[Request] = []
        self.faults = Faults()
        self.required_key: str | None = None
        self.bucket = None if bandwidth is None else _TokenBucket(bandwidth)
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def set_bandwidth(self, rate: float | None) -> None:
        self.bucket = None if rate is None else _TokenBucket(rate)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        app = _Middleware(DomainDispatcherApplication(create_backend_app), self)
        self._server, self._thread = _serve_on_thread(app, request_handler=MotoRequestHandler)
        return self

    def stop(self) -> None:
        _stop_serving(self._server, self._thread)


def _serve(conn: Connection, bandwidth: float | None) -> None:
    """The child process of ``ProcessS3``: a ``LoopbackS3`` answering commands on ``conn``."""
    with LoopbackS3(bandwidth) as s3:
        conn.send(s3.endpoint)
        while True:
            command, argument = conn.recv()
            if command == "stop":
                return
            if command == "bandwidth":
                s3.set_bandwidth(argument)
            elif command == "reset":
                s3.reset_log()
            elif command == "log":
                with s3._lock:
                    conn.send(list(s3.requests))


class ProcessS3(_Client):
    """A ``LoopbackS3`` in a process of its own, for benchmarks: moto's request handling then
    does not share this process's interpreter lock (in-process, it caps a client at about 140
    requests per second on this project's machines). Offers the bandwidth limit and the request
    log; faults and credential checks are ``LoopbackS3``'s."""

    def __init__(self, bandwidth: float | None = None) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self._bandwidth = bandwidth
        self._conn: Connection | None = None
        self._process: Any = None
        self._endpoint = ""

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def _send(self, command: str, argument: Any = None) -> None:
        assert self._conn is not None, "start() first"
        self._conn.send((command, argument))

    def set_bandwidth(self, rate: float | None) -> None:
        self._send("bandwidth", rate)

    def reset_log(self) -> None:
        self._send("reset")

    @property
    def requests(self) -> list[Request]:
        self._send("log")
        assert self._conn is not None
        log: list[Request] = self._conn.recv()
        return log

    def start(self) -> Self:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_serve, args=(child, self._bandwidth), daemon=True
        )
        self._process.start()
        self._conn = parent
        self._endpoint = parent.recv()
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._send("stop")
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()


class LoopbackHTTP(_Server):
    """The files below ``root`` over HTTP on 127.0.0.1 (GET and HEAD, ``Range`` answered with
    206), every request logged. ``url(path)`` is a file's URL."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "") -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{path}"

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        from werkzeug.wrappers import Request as WRequest
        from werkzeug.wrappers import Response
        from werkzeug.wsgi import wrap_file

        request = WRequest(environ)
        path = (self.root / request.path.lstrip("/")).resolve()
        if self.root not in path.parents or not path.is_file():
            response = Response("not found", status=404)
        else:
            size = path.stat().st_size
            response = Response(
                wrap_file(environ, path.open("rb")),
                mimetype="application/octet-stream",
                direct_passthrough=True,
            )
            response.content_length = size
            response = response.make_conditional(request, accept_ranges=True, complete_length=size)
        nbytes = 0 if request.method == "HEAD" else int(response.content_length or 0)
        with self._lock:
            self.requests.append(
                Request(
                    request.method,
                    request.path.lstrip("/"),
                    request.headers.get("Range"),
                    response.status_code,
                    nbytes,
                )
            )
        return response(environ, start_response)

    def start(self) -> Self:
        self._server, self._thread = _serve_on_thread(self._app)
        return self

    def stop(self) -> None:
        _stop_serving(self._server, self._thread)


_GCS_OBJECT = re.compile(r"^/(?:download/)?storage/v1/b/(?P<bucket>[^/]+)/o/(?P<object>.+)$")


class LoopbackGCS(_Server):
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
        from functools import partial
        from http.server import ThreadingHTTPServer
        from urllib.parse import unquote, urlsplit

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
        _stop_serving(self._server, self._thread)
