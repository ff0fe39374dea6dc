"""The claims of an output URL (``URL/.claims/NAME``): the store decides, where it can.

On S3 every step is one conditional request the store itself decides: create with
``If-None-Match: *``, replace with ``If-Match: <ETag read>``, delete with ``If-Match`` too; a
failed condition is a 412 and changes nothing. So exactly one of two racing runs wins, and a
holder whose claim was taken learns it at its next heartbeat.

Other stores (``gs://``, ``hf://``) are asked through plain reads and writes: check, write,
read back. That is not atomic: two runs starting within a second or two of each other may
both go on, and the one whose write was overwritten finds out at its next heartbeat and
stops (so both write for at most one heartbeat). On the Hugging Face Hub every write is a
commit, and commits are rate-limited per hour: there the heartbeat is every 5 minutes, and a
claim is stale after 30.
"""

from __future__ import annotations

import time
from pathlib import PurePosixPath

from tartok_tui.output.claim_files import CLAIM_SUFFIX, Found, digest
from tartok_tui.output.paths import CLAIMS_DIR
from tartok_tui.output.store import StoreOutput
from tartok_tui.storage import Access, join, redact_url, scheme

HUB_HEARTBEAT_S = 300.0
HUB_STALE_AFTER_S = 1800.0


class ObjectClaims:
    """The claims of an output on object storage."""

    def __init__(self, url: str, access: Access | None = None) -> None:
        self.store = StoreOutput(str(join(url, CLAIMS_DIR)), access)
        self.where = redact_url(url)
        self.atomic = self.store.conditional
        hub = scheme(url) == "hf"
        self.heartbeat_s = HUB_HEARTBEAT_S if hub else 30.0
        self.stale_after_s = HUB_STALE_AFTER_S if hub else 300.0

    def names(self) -> list[str]:
        keys = self.store.list_keys()
        return sorted(str(k) for k in keys if len(k.parts) == 1 and k.name.endswith(CLAIM_SUFFIX))

    def create(self, name: str, data: bytes) -> str | None:
        if self.atomic:
            return self.store.put_if(name, data, None)
        if self.store.exists(name):
            return None
        self.store.put_bytes(name, data)
        return self._read_back(name, data)

    def read(self, name: str) -> Found | None:
        if self.atomic:
            tagged = self.store.read_tagged(name)
            if tagged is None:
                return None
            data, etag, modified = tagged
            return Found(data, etag, max(time.time() - modified, 0.0))
        try:
            data = self.store.read_bytes(PurePosixPath(name))
        except FileNotFoundError:
            return None
        return Found(data, digest(data), None)

    def replace(self, name: str, data: bytes, token: str) -> str | None:
        if self.atomic:
            return self.store.put_if(name, data, token)
        found = self.read(name)
        if found is None or found.token != token:
            return None
        self.store.put_bytes(name, data)
        return self._read_back(name, data)

    def delete(self, name: str, token: str) -> bool:
        if self.atomic:
            return self.store.remove_if(name, token)
        found = self.read(name)
        if found is None or found.token != token:
            return False
        self.store.remove(name)
        return True

    def _read_back(self, name: str, data: bytes) -> str | None:
        """Our token if our write is what the store holds now (a racer's write may have
        replaced it, or been replaced by it: the last write stands)."""
        found = self.read(name)
        return found.token if found is not None and found.data == data else None
