"""A real S3 protocol server on 127.0.0.1 (moto's server mode) for the storage tests.

Everything the tests do stays on 127.0.0.1: the endpoint is set, instance-metadata probing is
off, proxies and the user's AWS config files are out of the way.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

import pytest

from tartok_tui.storage import RetryPolicy, filesystem

SECRET = "tartok-test-secret-8f2c1e"
"""The secret access key the tests use: it must never appear in any message."""
FAST_FAIL = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}
"""Storage options that leave retrying to tartok-tui (botocore would retry for ~10 s)."""
PATIENT = RetryPolicy(tries=400, first_delay_s=0.05, max_delay_s=0.25)
"""Retries for ~100 s: far longer than any restart of the server takes."""


def ensure_buckets(*names: str) -> None:
    """Create each bucket the server does not hold yet."""
    fs, _ = filesystem(f"s3://{names[0]}", FAST_FAIL)
    for name in names:
        if not fs.exists(name):
            fs.mkdir(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's ThreadedMotoServer on a fixed local port, stoppable and restartable.

    The buckets live in the process (moto's backends), so a restarted server serves the
    same objects: like a store that was unreachable for a while.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def running(self) -> bool:
        return self._server is not None


def serving() -> Iterator[S3Server]:
    """A started server with the environment pointing at it (for a module-scoped fixture)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = S3Server()
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_SECURITY_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", "tartok-test-key-id")
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/tartok-aws-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/tartok-aws-credentials")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        mp.setenv("AWS_ENDPOINT_URL", server.endpoint)
        server.start()
        try:
            yield server
        finally:
            server.stop()
