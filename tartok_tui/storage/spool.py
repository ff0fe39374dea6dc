"""Local spool folders: where files for object storage are built before their upload.

See ``output.spool`` for what lives in one; this module only names and creates them.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from tartok_tui.storage.urls import redact_url


def default_spool_dir() -> Path:
    """``<system temp dir>/tartok-tui-spool-<uid>``: local disk (``TMPDIR``, which batch
    schedulers point at node-local scratch), never a home-directory quota; per user, since
    the folder is made private."""
    return Path(tempfile.gettempdir()) / f"tartok-tui-spool-{os.getuid()}"


def spool_root(spool_dir: Path | str | None, output_url: str) -> Path:
    """The spool folder of ``output_url`` under ``spool_dir`` (default: ``default_spool_dir``)."""
    base = Path(spool_dir) if spool_dir else default_spool_dir()
    # The query string (a signed URL's) is left out of both: it changes, the output does not.
    url = redact_url(output_url.rstrip("/")).partition("?")[0]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", url.replace("://", "_"))[-60:].strip("_")
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    return base / f"{readable}-{digest}"


def make_spool(root: Path) -> Path:
    """Create a spool folder and its parent, both readable by their owner only (the files
    in flight are the user's data)."""
    root.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.mkdir(exist_ok=True, mode=0o700)
    return root
