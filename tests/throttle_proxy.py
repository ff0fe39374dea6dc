"""A loopback HTTP proxy in front of the S3 test server that answers like a busy store.

Requests pass through to the server unchanged, except those a ``Burst`` matches while it
lasts: from the first request it answers, for ``seconds``, each gets the burst's status
and body instead (503 SlowDown as S3 sends it, 429 with the Hub's "exceeded our hourly
quotas" words, or a refusal that never ends). Point a client at ``proxy.endpoint``
(``AWS_ENDPOINT_URL``); everything stays on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>proxy</RequestId></Error>"
)
HUB_QUOTAS = b"You have exceeded our hourly quotas for action commit. We invite you to retry later."
QUOTA_EXCEEDED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>QuotaExceeded</Code>'
    b"<Message>Bucket quota exceeded</Message><RequestId>proxy</RequestId></Error>"
)


def slow_down(match: Callable[[str, str], bool], seconds: float) -> Burst:
    """S3's throttling answer: 503 SlowDown."""
    return Burst("slow down", match, 503, SLOW_DOWN, "application/xml", seconds)


def hub_quotas(match: Callable[[str, str], bool], seconds: float) -> Burst:
    """The Hub's throttling answer: 429, a plain-text body that speaks of "quotas"."""
    return Burst("hub quotas", match, 429, HUB_QUOTAS, "text/plain", seconds)


def quota_exceeded(match: Callable[[str, str], bool]) -> Burst:
    """A store that is full for good: 403 QuotaExceeded, for ever."""
    return Burst("quota exceeded", match, 403, QUOTA_EXCEEDED, "application/xml", math.inf)


def requests_to(method: str, pattern: str) -> Callable[[str, str], bool]:
    """Requests with this method whose path (``/bucket/key``) matches ``pattern``."""
    compiled = re.compile(pattern)
    return lambda m, path: m == method and compiled.search(path) is not None


@dataclass
class Burst:
    name: str
    match: Callable[[str, str], bool]
    """(method, path) -> whether the burst answers this request."""
    status: int
    body: bytes
    content_type: str
    seconds: float
    """How long the burst lasts from the first request it answers (math.inf: for ever)."""
    started: float | None = None
    answered: int = 0
    passed_after: int = 0
    """Matching requests let through after the burst ended."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answers(self, method: str, path: str) -> bool:
        if not self.match(method, path):
            return False
        with self.lock:
            now = time.monotonic()
            if self.started is None:
                self.started = now
            if now - self.started < self.seconds:
                self.answered += 1
                return True
            self.passed_after += 1
            return False

    @property
    def over(self) -> bool:
        """It answered, ran its course, and a request went through after it."""
        return self.answered > 0 and self.passed_after > 0


class ThrottlingProxy:
    """See the module doc. ``bursts`` are tried in order; the first that answers wins."""

    def __init__(self, upstream: str, bursts: list[Burst]) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.bursts = bursts
        self.passed = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return None  # quiet: the tests read the tool's logs, not ours

            def do_GET(self) -> None:
                proxy.handle(self)

            do_PUT = do_POST = do_HEAD = do_DELETE = do_GET

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ThrottlingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = _read_body(request)
        path = urlsplit(request.path).path
        burst = next((b for b in self.bursts if b.answers(request.command, path)), None)
        if burst is not None:
            payload = b"" if request.command == "HEAD" else burst.body
            _reply(request, burst.status, [("Content-Type", burst.content_type)], payload)
            return
        self.passed += 1
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if body or request.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            connection.request(request.command, request.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
        finally:
            connection.close()
        if request.command == "HEAD":
            length = response.getheader("Content-Length", "0")
            _reply(request, response.status, kept, b"", length)
        else:
            _reply(
                request,
                response.status,
                [h for h in kept if h[0].lower() != "content-length"],
                data,
            )


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        chunks = []
        while True:
            size = int(request.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(request.rfile.read(size))
            request.rfile.readline()
    length = int(request.headers.get("Content-Length") or 0)
    return request.rfile.read(length) if length else b""


def _reply(
    request: BaseHTTPRequestHandler,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    length: str | None = None,
) -> None:
    request.send_response(status)
    for name, value in headers:
        if name.lower() not in ("content-length", "date", "server"):
            request.send_header(name, value)
    request.send_header("Content-Length", length if length is not None else str(len(body)))
    request.end_headers()
    if body:
        request.wfile.write(body)
