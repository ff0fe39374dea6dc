"""A moto S3 server on 127.0.0.1 for the benchmarks that read or write S3."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any


def start_loopback_s3() -> tuple[Any, str]:
    """Start a moto S3 server on 127.0.0.1 and point this process's environment (which
    the runs it starts inherit) at it, away from any real account, profile or proxy; the
    server (``.stop()`` it) and its endpoint URL."""
    from moto.server import ThreadedMotoServer

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
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, endpoint
