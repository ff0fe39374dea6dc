"""Proof that a cluster node writes the driver's output, not a place of its own.

A path like ``/data/tokens`` can be a different disk on every node, and an output URL
can lead a node elsewhere (another endpoint or account in its environment). A node that
commits somewhere else loses its work without a word: the driver's resume and ``verify``
never see it. Only a file the driver writes and the node reads back proves they share the
output, so on a cluster the driver writes a random token into the output's reserved
``logs/`` folder before the first worker starts, each worker's host reads it back from
its node, through the same path or store calls its worker commits with, and the driver
removes it when the run ends. The spool folder of an output URL (partial files,
journals) is node-local by design and needs no proof.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tartok_tui.output.paths import LOGS_DIR
from tartok_tui.output.store import StoreOutput
from tartok_tui.storage import Access, Location, is_url, redact_location

PROOF_PREFIX = ".shared-output-"
"""Name of the token file under the output's ``logs/`` folder (never a tar's output)."""


@dataclass(frozen=True)
class SharedProof:
    key: str
    """The token file, relative to the output (``logs/.shared-output-<hex>``)."""
    content: bytes


def _read(output: Location, access: Access, key: str) -> bytes:
    if is_url(output):
        return StoreOutput(str(output), access).read_bytes(key)
    return (Path(output) / key).read_bytes()


def write_proof(output: Location, access: Access) -> SharedProof:
    """Write a fresh token file into ``output`` (OSError when it cannot be written)."""
    token = secrets.token_hex(16)
    proof = SharedProof(
        str(PurePosixPath(LOGS_DIR) / f"{PROOF_PREFIX}{token}"),
        f"tartok-tui shared-output check {token}\n".encode(),
    )
    if is_url(output):
        StoreOutput(str(output), access).put_bytes(proof.key, proof.content)
    else:
        path = Path(output) / proof.key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(proof.content)
    return proof


def proof_problem(output: Location, access: Access, proof: SharedProof) -> str | None:
    """Why ``output``, as seen from here, is not the output the driver wrote ``proof``
    into; None when it is."""
    where = f"output {redact_location(output)} is not shared with the driver"
    try:
        found = _read(output, access, proof.key)
    except FileNotFoundError:
        return f"{where}: the check file {proof.key} the driver wrote there is missing here"
    except OSError as exc:
        return f"{where}? the check file {proof.key} cannot be read here: {exc}"
    if found != proof.content:
        return (
            f"{where}: the check file {proof.key} holds other content here "
            f"({len(found)} bytes, not the driver's {len(proof.content)})"
        )
    return None


def remove_proof(output: Location, access: Access, proof: SharedProof) -> None:
    """Delete the token file (OSError when it cannot be deleted)."""
    if is_url(output):
        StoreOutput(str(output), access).remove(proof.key)
    else:
        (Path(output) / proof.key).unlink(missing_ok=True)
