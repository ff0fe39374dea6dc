"""The proof that a node writes the driver's output: a token file the driver writes and
each node reads back through the calls its worker commits with (local paths and S3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tartok_tui.config import RunConfig
from tartok_tui.output.shared import proof_problem, remove_proof, write_proof
from tartok_tui.storage import Access
from tartok_tui.supervisor.ray_host import NodePlace, WorkerHost, prepare_node
from tartok_tui.worker.options import WorkerOptions

pytestmark = pytest.mark.timeout(120)


def _options(tmp_path: Path, output, model_dir: Path) -> WorkerOptions:
    (tmp_path / "in").mkdir(exist_ok=True)
    config = RunConfig(input_dir=tmp_path / "in", output_dir=output, model_dir=str(model_dir))
    return WorkerOptions.for_slot(config, slot=0, device="cpu", threads=1, model_dir=model_dir)


def test_a_node_whose_output_path_is_another_disk_is_told_so_before_its_worker_starts(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    # The driver's /data/tokens and a node's own /data/tokens: the same path elsewhere,
    # here two directories.
    driver_out, node_out = tmp_path / "driver" / "tokens", tmp_path / "node" / "tokens"
    proof = write_proof(driver_out, Access())
    assert (driver_out / proof.key).read_bytes() == proof.content
    assert proof.key.startswith("logs/.shared-output-")

    _, problems = prepare_node(_options(tmp_path, driver_out, tiny_model_dir), None, proof)
    assert problems == []
    _, problems = prepare_node(_options(tmp_path, node_out, tiny_model_dir), None, proof)
    assert problems == [
        f"output {node_out} is not shared with the driver: the check file {proof.key} "
        "the driver wrote there is missing here"
    ]
    (node_out / proof.key).parent.mkdir(parents=True)
    (node_out / proof.key).write_bytes(b"stale\n")
    assert "holds other content here (6 bytes" in str(proof_problem(node_out, Access(), proof))

    remove_proof(driver_out, Access(), proof)
    assert not (driver_out / proof.key).exists()
    assert proof_problem(driver_out, Access(), proof) is not None


async def test_the_host_refuses_to_start_a_worker_on_a_node_without_the_proof(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    proof = write_proof(tmp_path / "driver", Access())
    options = _options(tmp_path, tmp_path / "node", tiny_model_dir)
    host = WorkerHost(0, place=lambda: NodePlace("f00d" * 8, "testhost", ()))
    info = await host.start(options.to_json(), {}, str(tmp_path / "w.log"), None, proof)
    assert info == {"error": str(proof_problem(tmp_path / "node", Access(), proof))}
    assert not (tmp_path / "w.log").exists()  # no worker, not even its log


def test_an_output_url_is_proven_through_the_store(s3) -> None:
    from s3_support import ensure_buckets

    ensure_buckets("shared-a", "shared-b")
    proof = write_proof("s3://shared-a/tokens", Access())
    assert proof_problem("s3://shared-a/tokens", Access(), proof) is None
    # Another bucket (or endpoint, or account) seen from a node: not the driver's output.
    assert "is missing here" in str(proof_problem("s3://shared-b/tokens", Access(), proof))
    remove_proof("s3://shared-a/tokens", Access(), proof)
    assert "is missing here" in str(proof_problem("s3://shared-a/tokens", Access(), proof))
