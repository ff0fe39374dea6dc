"""One output holds one model's tokens: the run manifest and each tar's commit record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tartok_tui.codec.fingerprint import weights_fingerprint
from tartok_tui.codec.random_model import write_random_model
from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.output.manifest import MANIFEST_NAME, Manifest, build_manifest, read_manifest
from tartok_tui.output.parquet import parquet_fingerprint
from tartok_tui.output.tarmeta import InputIdentity, TarMeta, input_identity
from tartok_tui.output.writer import TarWriter

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "tartok_tui"]


def _tars(inp: Path, first: int, n: int) -> None:
    for batch in range(first, first + n):
        write_emilia_tar(
            inp / f"EN-B{batch:06d}.tar", 2, seed=batch, batch=batch, audio_format="flac",
            min_s=1.0, max_s=1.5,
        )  # fmt: skip


def _run(inp: Path, out: Path, model: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["run", "-i", str(inp), "-o", str(out), "-m", str(model), "--num-proc", "1",
            "--device", "cpu", "--threads-per-worker", "1", "--no-tui", *extra]  # fmt: skip
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=REPO, timeout=240)


def _tokens_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.jsonl"))


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny architecture again with other random weights."""
    return write_random_model(tmp_path_factory.mktemp("other-model"), "tiny", seed=7)


def test_a_resume_with_other_weights_or_precision_is_refused_and_the_same_model_resumes(
    tmp_path: Path, tiny_model_dir: Path, other_model: Path
):
    inp, out = tmp_path / "in", tmp_path / "out"
    _tars(inp, 0, 2)
    first = _run(inp, out, tiny_model_dir)
    assert first.returncode == 0, first.stdout + first.stderr
    manifest = read_manifest(out)
    assert manifest is not None and manifest.precision == "fp32"
    for meta_file in sorted((out / "meta").glob("*.json")):
        assert TarMeta.from_bytes(meta_file.read_bytes()).fingerprint == manifest.fingerprint

    _tars(inp, 2, 2)  # more tars arrive: the resume has work to do
    weights = _run(inp, out, other_model)
    assert weights.returncode == 2, weights.stdout + weights.stderr
    said = " ".join((weights.stdout + weights.stderr).split())
    assert "model weights:" in said and "BiCodec/model.safetensors" in said
    assert "another output directory" in said
    assert _tokens_files(out) == ["EN-B000000.jsonl", "EN-B000001.jsonl"]  # nothing written

    precision = _run(inp, out, tiny_model_dir, "--precision", "bf16")
    assert precision.returncode == 2
    assert "precision: fp32 in the output, bf16 now" in " ".join(precision.stderr.split())
    assert _tokens_files(out) == ["EN-B000000.jsonl", "EN-B000001.jsonl"]

    exts = _run(inp, out, tiny_model_dir, "--audio-exts", "wav")
    assert exts.returncode == 2 and "token options:" in " ".join(exts.stderr.split())

    same = _run(inp, out, tiny_model_dir)
    assert same.returncode == 0, same.stdout + same.stderr
    assert len(_tokens_files(out)) == 4
    assert read_manifest(out) == manifest  # kept, not rewritten
    metas = [TarMeta.from_bytes(p.read_bytes()) for p in sorted((out / "meta").glob("*.json"))]
    assert [m.fingerprint for m in metas] == [manifest.fingerprint] * 4


def test_an_output_from_before_manifests_is_adopted_with_a_warning(
    tmp_path: Path, tiny_model_dir: Path
):
    inp, out = tmp_path / "in", tmp_path / "out"
    _tars(inp, 0, 1)
    assert _run(inp, out, tiny_model_dir).returncode == 0
    (out / MANIFEST_NAME).unlink()
    _tars(inp, 1, 1)
    again = _run(inp, out, tiny_model_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"the output had no {MANIFEST_NAME}" in " ".join(again.stdout.split())
    assert read_manifest(out) is not None


def test_the_manifest_names_what_differs_and_detects_an_edited_file(tiny_model_dir: Path):
    a = build_manifest(tiny_model_dir, "fp32", ("flac",))
    b = build_manifest(tiny_model_dir, "bf16", ("flac", "mp3"))
    assert a.fingerprint != b.fingerprint
    assert a.differences(b) == [
        "precision: fp32 in the output, bf16 now",
        'token options: {"audio_exts": ["flac"]} in the output, {"audio_exts": ["flac", "mp3"]} now',
    ]
    same_but_later = build_manifest(tiny_model_dir, "fp32", ("flac",))
    assert same_but_later.fingerprint == a.fingerprint  # time and host are not covered
    assert Manifest.from_bytes(a.to_bytes()) == a
    edited = json.loads(a.to_bytes())
    edited["precision"] = "bf16"
    with pytest.raises(ValueError, match="was edited"):
        Manifest.from_bytes(json.dumps(edited).encode())


def test_weight_digests_are_cached_by_size_and_mtime(tmp_path: Path):
    model = write_random_model(tmp_path / "m", "tiny", seed=3)
    cache = tmp_path / "digests.json"
    first = weights_fingerprint(model, cache=cache)
    assert set(first.files) >= {"BiCodec/model.safetensors", "config.yaml"}
    weights = model / "BiCodec" / "model.safetensors"
    st = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    # Same size and mtime: the cache answers (it is keyed by them, as promised)...
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights_fingerprint(model, cache=cache) == first
    # ...and a new mtime makes it hash the file again.
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = weights_fingerprint(model, cache=cache)
    assert changed.digest != first.digest
    assert changed.files["BiCodec/model.safetensors"] != first.files["BiCodec/model.safetensors"]


def test_a_commit_record_and_parquet_metadata_carry_the_fingerprint(tmp_path: Path):
    inp, out = tmp_path / "in", tmp_path / "out"
    tar = inp / "X.tar"
    tar.parent.mkdir()
    tar.write_bytes(b"\0" * 1024)
    identity = input_identity(tar)
    record = {
        "key": "a",
        "language": "en",
        "text": "t",
        "global_tokens": [1],
        "semantic_tokens": [2],
    }
    with TarWriter(out, inp, tar, output_format="parquet", fingerprint="f" * 32) as writer:
        writer.add(0, record)
        writer.add_error(1, "b", "decode", "bad")
        writer.commit(expected_samples=2, input_identity=identity)
    meta = TarMeta.from_bytes((out / "meta" / "X.json").read_bytes())
    assert (meta.fingerprint, meta.samples, meta.records, meta.errors) == ("f" * 32, 2, 1, 1)
    assert meta.keys == ["a", "b"] and meta.keys_source == "stream"
    assert meta.input == identity and identity.size == 1024
    assert parquet_fingerprint(out / "X.parquet") == "f" * 32
    assert pq.read_table(out / "X.parquet").num_rows == 1


def test_an_input_identity_says_what_changed():
    old = InputIdentity(size=10, etag="abc", mtime_ns=None)
    assert old.differs(InputIdentity(size=10, etag="abc")) is None
    assert old.differs(InputIdentity(size=11, etag="abc")) == "size 10 -> 11"
    assert old.differs(InputIdentity(size=10, etag="abd")) == "ETag abc -> abd"
    local = InputIdentity(size=10, mtime_ns=5)
    assert local.differs(InputIdentity(size=10, mtime_ns=6)) == "modified since it was tokenized"


def test_a_worker_refuses_weights_other_than_the_run_manifests(
    tmp_path: Path, tiny_model_dir: Path, other_model: Path
):
    from tartok_tui.worker.options import WorkerOptions
    from tartok_tui.worker.pipeline import check_run_fingerprint

    run = build_manifest(tiny_model_dir, "fp32", ("flac",))

    def options(model: Path) -> WorkerOptions:
        return WorkerOptions(
            slot=0, device="cpu", model_dir=model, threads=1, output_dir=tmp_path,
            input_dir=tmp_path, audio_exts=("flac",), fingerprint=run.fingerprint,
        )  # fmt: skip

    check_run_fingerprint(options(tiny_model_dir))
    with pytest.raises(ValueError, match="other weights than the run's"):
        check_run_fingerprint(options(other_model))


def test_verify_and_status_find_a_tar_made_under_another_fingerprint(
    tmp_path: Path, tiny_model_dir: Path
):
    inp, out = tmp_path / "in", tmp_path / "out"
    _tars(inp, 0, 2)
    assert _run(inp, out, tiny_model_dir).returncode == 0
    status = subprocess.run([*CLI, "status", str(out)], capture_output=True, text=True, timeout=120)
    assert "tokens by" in status.stdout and "bicodec" in status.stdout and "fp32" in status.stdout
    # A second writer with another model committed one tar (what the manifest prevents).
    record = out / "meta" / "EN-B000001.json"
    meta = TarMeta.from_bytes(record.read_bytes())
    record.write_bytes(replace(meta, fingerprint="0" * 32).to_bytes())

    verify = subprocess.run(
        [*CLI, "verify", str(inp), str(out), "--json"], capture_output=True, text=True, timeout=120
    )
    assert verify.returncode == 1, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["other_fingerprint_tars"] == ["EN-B000001.tar"]
    assert report["fingerprint"] == read_manifest(out).fingerprint  # type: ignore[union-attr]
    counted = subprocess.run(
        [*CLI, "status", str(out), "--counts", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(counted.stdout)["other_fingerprints"] == ["EN-B000001.tar"]
    human = subprocess.run([*CLI, "verify", str(inp), str(out)], capture_output=True, text=True)
    assert "mixed tokens" in human.stdout
