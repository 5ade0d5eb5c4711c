"""`WebServer`: the generated site served over real HTTP on 127.0.0.1 at a free port.

A stdlib `ThreadingHTTPServer` on a background thread; all page logic is in
`WebSite.route`, so this module only adapts it to HTTP (status, headers, body, 404s,
redirects). `start()` binds port 0 (the OS picks a free port) before returning, so
`base_url` is valid at once; `close()` stops the loop, joins the request threads and the
server thread and closes the socket (idempotent; the context manager calls it). The
server binds IPv4 loopback only, so nothing off the machine can reach it.

Imports: stdlib and agentic_rl.envs.tools.web.site only; never jax.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from agentic_rl.envs.tools.web.site import WebSite

HOST = "127.0.0.1"


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # request threads are joined by server_close()
    block_on_close = True

    def __init__(self, site: WebSite):
        self.site = site
        self.requests = 0  # requests served (tests use it to see that tools really fetched)
        self.count_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "Localpedia/1.0"
    timeout = 5.0  # a client that stalls cannot hold a request thread (and close()) for long

    def do_GET(self):  # noqa: N802 - the http.server naming
        self._respond(head=False)

    def do_HEAD(self):  # noqa: N802
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        parts = urlsplit(self.path)
        with self.server.count_lock:  # type: ignore[attr-defined]
            self.server.requests += 1  # type: ignore[attr-defined]
        status, headers, body = self.server.site.route(parts.path, parts.query)  # type: ignore[attr-defined]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - silence the per-request stderr log
        pass


class WebServer:
    """Serves `site` on 127.0.0.1:<free port> until `close()` (see the module docstring)."""

    def __init__(self, site: WebSite, *, poll_interval: float = 0.05):
        self.site = site
        self._poll = poll_interval
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def start(self) -> WebServer:
        with self._lock:
            if self._closed:
                raise RuntimeError("this WebServer was closed; make a new one")
            if self._server is None:
                server = _Server(self.site)
                thread = threading.Thread(target=server.serve_forever, args=(self._poll,),
                                          name=f"web-server-{server.server_address[1]}",
                                          daemon=True)  # fmt: skip
                thread.start()
                self._server, self._thread = server, thread
        return self

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not running (call start())")
        return int(self._server.server_address[1])

    @property
    def requests(self) -> int:
        """Requests served so far (0 when not running)."""
        return self._server.requests if self._server is not None else 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
