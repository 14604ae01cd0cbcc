"""What the loopback servers share: the request log's entries and starting and stopping a
server on a thread of this process, bound to 127.0.0.1 on a free port."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self


@dataclass(frozen=True)
class Request:
    method: str
    key: str  # "bucket/key" (path without the leading slash)
    range: str | None
    status: int
    nbytes: int  # response body bytes sent (or being sent)
    cut: bool = False  # the connection was dropped before the whole body was sent


class Server:
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


def serve_on_thread(app: Any, **options: Any) -> tuple[Any, threading.Thread]:
    """A werkzeug server of the WSGI ``app`` on 127.0.0.1 (a free port), on a daemon thread."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    server = make_server("127.0.0.1", 0, app, threaded=True, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def stop_serving(server: Any, thread: threading.Thread | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
    if thread is not None:
        thread.join()
