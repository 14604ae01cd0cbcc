"""``LoopbackS3``: an S3-compatible server, moto's server mode (its werkzeug application on a
thread, ``moto[server]``), with a WSGI layer in front that

- logs every request (method, key, Range header, response bytes) for request counting;
- fails a share of data requests with ``503 ServiceUnavailable`` or cuts their response off
  halfway (fault injection, seeded);
- limits the bandwidth of all responses together (a shared token bucket);
- can require one access key (anything else gets ``403 InvalidAccessKeyId``, as S3 answers).

    with LoopbackS3() as s3:
        s3.create_bucket("models")
        opts = s3.storage_options()  # endpoint_url, key, secret for s3fs

``ProcessS3`` runs one in a process of its own, for benchmarks.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from .base import Request, Server, serve_on_thread, stop_serving

if TYPE_CHECKING:
    from typing import Self

ACCESS_KEY = "wcodec-test-key"
SECRET_KEY = "wcodec-test-secret"

_ERROR = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>{message}</Message></Error>"
)


@dataclass
class Faults:
    """Shares of GET requests for object data (not listings) to fail or be damaged; 0
    disables. ``status_503``: answered 503; ``cut``: the connection dropped halfway through the
    body; ``short``: the body cut to half with a Content-Length to match (a proxy that shortens
    responses consistently); ``flip``: one bit of the body flipped (a proxy that corrupts)."""

    status_503: float = 0.0
    cut: float = 0.0
    short: float = 0.0
    flip: float = 0.0
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
        short = is_data and faults.short > 0 and faults.rng.random() < faults.short
        flip = is_data and faults.flip > 0 and faults.rng.random() < faults.flip
        answer: list[Any] = []

        def hold(code: str, headers: Any, *rest: Any) -> Any:
            answer[:] = [code, list(headers), *rest]  # sent once the body is known
            return lambda data: None

        body = self.app(environ, hold)
        data = b"".join(body)
        if hasattr(body, "close"):
            body.close()
        code, headers, *rest = answer
        status = int(code.split()[0])
        if status in (200, 206) and data:
            if short:
                data = data[: len(data) // 2]
                headers = [
                    (k, str(len(data)) if k.lower() == "content-length" else v) for k, v in headers
                ]
            if flip:
                bit = faults.rng.randrange(len(data) * 8)
                damaged = bytearray(data)
                damaged[bit // 8] ^= 1 << (bit % 8)
                data = bytes(damaged)
        start_response(code, headers, *rest)
        return self._send(data, method, key, byte_range, status, cut)

    def _send(
        self, data: bytes, method: str, key: str, byte_range: str | None, status: int, cut: bool
    ) -> Iterator[bytes]:
        s3 = self.server
        limit = len(data) // 2 if cut else len(data)
        # logged before the first byte goes out, so that a client that has its response
        # finds its request in the log
        s3.log(Request(method, key, byte_range, status, limit, cut))
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


class _Client(Server):
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
        self._server, self._thread = serve_on_thread(app, request_handler=MotoRequestHandler)
        return self

    def stop(self) -> None:
        stop_serving(self._server, self._thread)


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
