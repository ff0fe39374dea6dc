"""Output files for object storage: built on local disk, then uploaded whole.

An output URL (``s3://bucket/tokens``) gets a local spool folder, laid out like a local
output directory: partial files under ``.partial/`` (written through ``LocalTarget``, so
a full spool disk is recognised like a full output disk), isolation journals, and, unless
``--log-dir`` says otherwise, the worker logs. ``SpoolTarget.publish`` uploads a finished
file as one object (see ``output.store``) and deletes it from the spool; the writer
publishes the errors file first and the tokens file last, so the tokens object, whose
existence means "tar done", appears only after everything else of the tar is in place.

The spool folder of an output is ``<spool dir>/<readable name>-<hash of the URL>``: runs
into different outputs never share partial files, and one output always gets the same
folder (its stale partial files are swept like a local output's).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from tartok_tui.output.store import StoreOutput
from tartok_tui.output.target import LocalTarget, PartialFile
from tartok_tui.storage.spool import default_spool_dir, make_spool, spool_root

__all__ = ["SpoolTarget", "default_spool_dir", "make_spool", "spool_root"]


class SpoolTarget:
    """An ``OutputTarget`` for an output on object storage (see the module doc)."""

    def __init__(self, store: StoreOutput, root: Path, local: LocalTarget | None = None) -> None:
        self.store = store
        self.root = Path(root)
        self.local = local if local is not None else LocalTarget(self.root)

    def open_partial(self, key: PurePosixPath, suffix: str) -> PartialFile:
        return self.local.open_partial(key, suffix)

    def publish(self, part: PartialFile) -> None:
        """Upload ``part`` as the object ``OUTPUT/<part.key>``, then drop the spool file.

        OutputUnavailable when the spool disk or the store is full (or the store refuses);
        StoreUnavailable when the store could not be reached after retries (the spool file
        is kept for the writer to discard)."""
        part.flush()
        part.close()
        self.store.upload(part.path, part.key)
        self.local.discard(part)

    def remove(self, key: PurePosixPath) -> None:
        self.store.remove(key)

    def exists(self, key: PurePosixPath) -> bool:
        return self.store.exists(key)

    def discard(self, part: PartialFile) -> None:
        self.local.discard(part)
