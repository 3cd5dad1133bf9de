"""An HTTP proxy in front of a real Iceberg REST catalog that can answer one commit with a 5xx.

PyIceberg turns HTTP 500, 502 and 504 on a table commit into ``CommitStateUnknownException``:
the commit may or may not have happened. A real catalog produces that on demand only by
failing, so the proxy injects it: for the next commit request it either forwards the request
(the commit lands) and answers 502 anyway, answers 504 without forwarding (nothing lands), or
forwards it and drops the connection without any answer (the commit lands, the client sees a
broken connection). Every other request is passed through unchanged.
"""

from __future__ import annotations

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from infra.ports import LOOPBACK

# POST /v1/{prefix}/namespaces/{namespace}/tables/{table} commits; POST .../tables creates.
_COMMIT_PATH = re.compile(r"^/v1/(?:.+/)?namespaces/[^/]+/tables/[^/]+$")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class RestFaultProxy:
    """``with RestFaultProxy(upstream_uri) as proxy:`` then use ``proxy.uri`` as the catalog URI."""

    def __init__(self, upstream_uri: str) -> None:
        parts = urlsplit(upstream_uri)
        self._upstream = (parts.hostname or LOOPBACK, parts.port or 80)
        self._lock = threading.Lock()
        self._fault: str | None = None
        self.faults_served: list[str] = []
        self.commits_forwarded = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = None
                if self.command == "POST" and _COMMIT_PATH.match(self.path.split("?")[0]):
                    with proxy._lock:
                        fault, proxy._fault = proxy._fault, None
                        if fault != "lost":
                            proxy.commits_forwarded += 1
                if fault == "lost":
                    proxy.faults_served.append(fault)
                    self._answer(504, b'{"error": {"message": "gateway timeout", "code": 504}}')
                    return
                status, headers, payload = proxy._forward(
                    self.command, self.path, self.headers, body
                )
                if fault == "landed":
                    proxy.faults_served.append(fault)
                    self._answer(502, b'{"error": {"message": "bad gateway", "code": 502}}')
                    return
                if fault == "dropped":
                    proxy.faults_served.append(fault)
                    self.close_connection = True  # hang up without a status line
                    return
                self._answer(status, payload, headers)

            def _answer(
                self, status: int, payload: bytes, headers: list[tuple[str, str]] | None = None
            ) -> None:
                self.send_response(status)
                for key, value in headers or [("Content-Type", "application/json")]:
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay  # noqa: N815

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def fail_next_commit(self, fault: str) -> None:
        """``landed``: forward the next commit, answer 502; ``lost``: answer 504 without
        forwarding; ``dropped``: forward it and hang up without answering."""
        assert fault in ("landed", "lost", "dropped")
        with self._lock:
            self._fault = fault

    def _forward(
        self, method: str, path: str, headers: object, body: bytes | None
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}  # type: ignore[attr-defined]
            connection.request(method, path, body=body, headers=forwarded)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def __enter__(self) -> RestFaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
