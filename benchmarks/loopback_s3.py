"""A moto S3 server on 127.0.0.1 for the benchmarks that read or write S3, counting what
it serves (requests and response bytes by path), so a benchmark can say how much of an
object a client really read."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any


class Traffic:
    """WSGI middleware: every request's method, path and response bytes."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []

    def __call__(self, environ: dict, start_response: Any) -> Iterator[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        sent = 0
        try:
            body: Iterable[bytes] = self.app(environ, start_response)
            for chunk in body:
                sent += len(chunk)
                yield chunk
        finally:
            with self._lock:
                self.requests.append((method, path, sent))

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def under(self, prefix: str) -> tuple[int, int]:
        """(requests, response bytes) for paths under ``prefix`` (``/bucket/key-prefix``;
        ``/bucket`` alone takes in the bucket's listings)."""
        with self._lock:
            hits = [n for _, path, n in self.requests if path.startswith(prefix)]
        return len(hits), sum(hits)


class LoopbackS3:
    """moto's S3 app behind werkzeug's threaded server (as moto's ThreadedMotoServer
    runs it), with its traffic counted."""

    def __init__(self, port: int) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self.traffic = Traffic(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1", port, self.traffic, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


def start_loopback_s3() -> tuple[LoopbackS3, str]:
    """Start a moto S3 server on 127.0.0.1 and point this process's environment (which
    the runs it starts inherit) at it, away from any real account, profile or proxy; the
    server (``.stop()`` it, ``.traffic`` counts) and its endpoint URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE="/nonexistent/tartok-bench-aws-config",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/tartok-bench-aws-credentials",
        NO_PROXY="127.0.0.1,localhost",
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "HTTP_PROXY",
                 "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):  # fmt: skip
        os.environ.pop(name, None)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return LoopbackS3(port), endpoint
