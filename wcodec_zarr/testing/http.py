"""``LoopbackHTTP``: a directory served read-only over plain HTTP (werkzeug), with byte ranges
(suffix ranges included) and a request log: the ``http(s)://`` path of fsspec and obstore."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Request, Server, serve_on_thread, stop_serving

if TYPE_CHECKING:
    from typing import Self


class LoopbackHTTP(Server):
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
        self._server, self._thread = serve_on_thread(self._app)
        return self

    def stop(self) -> None:
        stop_serving(self._server, self._thread)
