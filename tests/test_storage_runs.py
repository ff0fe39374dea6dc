"""`tartok-tui run --no-tui` from S3 to S3 for real: a subprocess, worker subprocesses, the tiny
model, and a real S3 protocol server on 127.0.0.1 (moto) that the tests stop and restart."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_support import FAST_FAIL, SECRET, S3Server, ensure_buckets
from throttle_proxy import ThrottlingProxy, hub_quotas, quota_exceeded, requests_to, slow_down

from tartok_tui.demo.data import write_emilia_tar
from tartok_tui.output.read import read_error_keys, read_keys
from tartok_tui.output.spool import spool_root
from tartok_tui.output.store import StoreOutput
from tartok_tui.storage import Access, filesystem

pytestmark = pytest.mark.timeout(600)

REPO = Path(__file__).resolve().parents[1]
IN, OUT = "tartok-runs-in", "tartok-runs-out"
OPT_SECRET = "opt-secret-b81e4d"
"""A secret given in --storage-options: it must appear in no output, log or object."""
OPTIONS = json.dumps({**FAST_FAIL, "key": "tartok-test-key-id", "secret": OPT_SECRET})
ACCESS = Access(options=FAST_FAIL)


@pytest.fixture
def running_s3(s3: S3Server) -> Iterator[S3Server]:
    if not s3.running:
        s3.start()
    ensure_buckets(IN, OUT)
    yield s3
    if not s3.running:
        s3.start()


def cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tartok_tui", *args],
        capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env,
    )  # fmt: skip


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tartok_tui", *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO
        )  # fmt: skip


def wait_for(find: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while (found := find()) is None or found is False:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return found


def put_tars(
    tmp_path: Path, prefix: str, n_tars: int, n_samples: int, **kw: Any
) -> tuple[str, set[str]]:
    """Generated tars uploaded under s3://IN/prefix; the URL and the good samples' keys."""
    fs, _ = filesystem(f"s3://{IN}", FAST_FAIL)
    good: set[str] = set()
    for i in range(n_tars):
        local = tmp_path / "tars" / prefix / f"EN-B{i:06d}.tar"
        kw_i = {"audio_format": "flac", "min_s": 1.0, "max_s": 2.0, **kw}
        if i == 1:
            kw_i.setdefault("broken", {1: "undecodable_audio"})
        written = write_emilia_tar(local, n_samples, seed=i, batch=i, **kw_i)
        good |= {s.key for s in written if s.broken is None}
        fs.put_file(str(local), f"{IN}/{prefix}/{local.name}")
    return f"s3://{IN}/{prefix}", good


def objects(url: str) -> dict[str, bytes]:
    store = StoreOutput(url, ACCESS)
    return {str(key): store.read_bytes(key) for key in store.list_keys()}


def assert_exactly_once(url: str, good: set[str]) -> None:
    """Every good sample's tokens appear once under the output URL, nothing else but error
    records, commit records and the manifest, and nothing partial."""
    keys: Counter[str] = Counter()
    errors: list[str] = []
    tokens_files, records = set(), set()
    for name in objects(url):
        if name.startswith("errors/"):
            errors += read_error_keys(f"{url}/{name}", ACCESS).keys
        elif name.startswith("meta/"):
            assert name.endswith(".json"), name
            records.add(name.removeprefix("meta/").removesuffix(".json"))
        elif name not in ("run-summary.json", "manifest.json"):
            tokens_files.add(name.rsplit(".", 1)[0])
            assert name.endswith((".jsonl", ".parquet")), name  # never a partial file
            keys.update(read_keys(f"{url}/{name}", ACCESS).keys)
    assert set(keys) == good and max(keys.values()) == 1, keys
    assert not set(errors) & good
    assert records == tokens_files  # every done tar has its commit record


def run_args(inp: str, out: str, model_dir: Path, spool: Path, *extra: str) -> list[str]:
    return [
        "run", "--no-tui", "-i", inp, "-o", out, "-m", str(model_dir), "--device", "cpu",
        "--threads-per-worker", "1", "--backoff-initial-s", "0.1", "--storage-options", OPTIONS,
        "--spool-dir", str(spool), *extra,
    ]  # fmt: skip


def partial_pid(spool: Path) -> int | None:
    """The pid of a worker writing a tar now (named in its partial file), or None."""
    for part in (spool / ".partial" / "out").rglob("*.part"):
        return int(part.name.rsplit(".", 2)[-2].rsplit("-", 2)[1])
    return None


def samples_done(log: Path) -> int:
    """The last count of samples done in the run's progress lines."""
    counts = re.findall(r"samples ([\d,]+)", log.read_text(errors="replace"))
    return int(counts[-1].replace(",", "")) if counts else 0


def worker_logs(spool: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((spool / "logs").glob("*.log")))


def assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert OPT_SECRET.encode() not in data and SECRET.encode() not in data


def test_a_run_from_s3_to_s3_survives_a_killed_worker_and_a_rerun_changes_nothing(
    running_s3: S3Server, tmp_path: Path, model_dir: Path
) -> None:
    inp, good = put_tars(tmp_path, "kill", n_tars=4, n_samples=5)
    out = f"s3://{OUT}/kill"
    spool_dir = tmp_path / "spool"
    spool = spool_root(spool_dir, out)
    args = run_args(inp, out, model_dir, spool_dir, "--num-proc", "2")
    log = tmp_path / "run.log"
    proc = start([*args, "--worker-env", "TARTOK_FAULT_INJECT=slow_ms=300"], log)
    try:
        pid = wait_for(lambda: partial_pid(spool), 180, "a tar in progress")
        # The worker's options travel in its environment: its command line shows no secret.
        assert_no_secret(Path(f"/proc/{pid}/cmdline").read_bytes())
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=400) == 0, log.read_text()
    finally:
        proc.kill()
    text = log.read_text()
    assert "killed by SIGKILL" in text and "worker logs in " + str(spool / "logs") in text
    assert_exactly_once(out, good)
    first = objects(out)
    assert sorted(first) == [
        *(f"EN-B00000{i}.jsonl" for i in range(4)), "errors/EN-B000001.jsonl", "manifest.json",
        *(f"meta/EN-B00000{i}.json" for i in range(4)), "run-summary.json",
    ]  # fmt: skip
    summary = json.loads(first["run-summary.json"])
    assert summary["exit_code"] == 0 and summary["worker_restarts"] >= 1

    status = cli("status", out, "--json", "--counts", "--storage-options", OPTIONS)
    data = json.loads(status.stdout)
    assert (data["tars_done"], data["lines"], data["error_records"]) == (4, 19, 1)
    assert data["summary"]["exit_code"] == 0 and data["partial_tars"] == []
    verified = cli("verify", inp, out, "--storage-options", OPTIONS)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "every sample accounted for exactly once" in verified.stdout

    again = cli(*args)  # a rerun: nothing to do, nothing rewritten
    assert again.returncode == 0 and "4 tars, 4 already done, 0 to process" in again.stdout
    second = objects(out)
    assert {k: v for k, v in second.items() if k != "run-summary.json"} == {
        k: v for k, v in first.items() if k != "run-summary.json"
    }
    StoreOutput(out, ACCESS).remove("EN-B000001.jsonl")  # a tar not done: redone identically
    redo = cli(*args)
    assert redo.returncode == 0 and "4 tars, 3 already done, 1 to process" in redo.stdout
    third = objects(out)
    assert third["EN-B000001.jsonl"] == first["EN-B000001.jsonl"]
    assert third["errors/EN-B000001.jsonl"] == first["errors/EN-B000001.jsonl"]

    assert_no_secret(
        text, status.stdout, status.stderr, verified.stdout, again.stdout, again.stderr,
        redo.stdout, worker_logs(spool), *third.values(),
        *(p.read_bytes() for p in spool.rglob("*") if p.is_file()),
    )  # fmt: skip


def padded_tar(path: Path, n_samples: int, pad_bytes: int) -> set[str]:
    """A tar whose samples each carry a ``.bin`` member of ``pad_bytes`` (read, not used), so
    that the reader crosses many read-ahead blocks; the good samples' keys."""
    plain = path.with_suffix(".plain")
    written = write_emilia_tar(plain, n_samples, seed=5, audio_format="flac", min_s=1, max_s=1.5)
    with tarfile.open(plain) as src, tarfile.open(path, "w") as dst:
        members = src.getmembers()
        for member in members:
            dst.addfile(member, src.extractfile(member))
            if member.name.endswith(".flac"):
                pad = tarfile.TarInfo(member.name[: -len(".flac")] + ".bin")
                pad.size = pad_bytes
                dst.addfile(pad, io.BytesIO(os.urandom(pad_bytes)))
    plain.unlink()
    return {s.key for s in written}


def test_a_store_outage_mid_tar_is_retried_and_nothing_is_recorded_as_damage(
    running_s3: S3Server, tmp_path: Path, model_dir: Path
) -> None:
    local = tmp_path / "EN-B000000.tar"
    good = padded_tar(local, 60, 400_000)  # ~27 MB: the reader is held after ~12 MB
    fs, _ = filesystem(f"s3://{IN}", FAST_FAIL)
    fs.put_file(str(local), f"{IN}/outage/EN-B000000.tar")
    inp, out = f"s3://{IN}/outage", f"s3://{OUT}/outage"
    spool_dir = tmp_path / "spool"
    spool = spool_root(spool_dir, out)
    log = tmp_path / "run.log"
    # Small batches and a slow model keep the reader waiting mid-tar for the model.
    args = run_args(inp, out, model_dir, spool_dir, "--num-proc", "1", "--batch-seconds", "1")
    args += ["--progress-interval", "0.2", "--worker-env", "TARTOK_FAULT_INJECT=slow_ms=100"]
    proc = start(args, log)
    try:
        wait_for(lambda: samples_done(log) >= 10, 180, "the tar well under way")
        running_s3.stop()
        # Down until the worker has met the outage and said it retries; then back.
        wait_for(lambda: "retry 1/" in worker_logs(spool), 180, "a retried read")
        time.sleep(3)  # an outage of a few seconds: several retries
        running_s3.start()
        assert proc.wait(timeout=400) == 0, log.read_text() + worker_logs(spool)
    finally:
        proc.kill()
        if not running_s3.running:
            running_s3.start()
    logs = worker_logs(spool)
    retried = [line for line in logs.splitlines() if "failed (" in line and "retry" in line]
    assert any(f"reading {inp}/EN-B000000.tar at byte " in line for line in retried), logs
    assert all(" at byte 0 " not in line for line in retried if "reading" in line), logs
    assert len(retried) >= 2
    assert_exactly_once(out, good)
    assert not any(name.startswith("errors/") for name in objects(out))  # no damage recorded
    verified = cli("verify", inp, out, "--storage-options", OPTIONS)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert_no_secret(log.read_text(), logs)


def test_parquet_output_on_s3_verifies_and_a_redone_tar_is_byte_identical(
    running_s3: S3Server, tmp_path: Path, model_dir: Path
) -> None:
    inp, good = put_tars(tmp_path, "parquet", n_tars=2, n_samples=4)
    out = f"s3://{OUT}/parquet"
    args = run_args(inp, out, model_dir, tmp_path / "spool", "--num-proc", "1")
    first = cli(*args, "--output-format", "parquet")
    assert first.returncode == 0, first.stdout + first.stderr
    assert_exactly_once(out, good)
    before = objects(out)
    assert sorted(before) == [
        "EN-B000000.parquet", "EN-B000001.parquet", "errors/EN-B000001.jsonl", "manifest.json",
        "meta/EN-B000000.json", "meta/EN-B000001.json", "run-summary.json",
    ]  # fmt: skip
    status = json.loads(
        cli("status", out, "--json", "--counts", "--storage-options", OPTIONS).stdout
    )
    assert status["formats"] == {"parquet": 2} and status["lines"] == len(good)
    assert cli("verify", inp, out, "--storage-options", OPTIONS).returncode == 0
    StoreOutput(out, ACCESS).remove("EN-B000000.parquet")
    again = cli(*args, "--output-format", "parquet")
    assert again.returncode == 0 and "2 tars, 1 already done, 1 to process" in again.stdout
    assert objects(out)["EN-B000000.parquet"] == before["EN-B000000.parquet"]


BURST_S = 6.0
"""A throttling burst: longer than what botocore and s3fs retry on their own (here: s3fs's
5 quick tries, ~2 s), so tartok-tui's own waiting is what gets the run through."""


def through(proxy: ThrottlingProxy) -> dict[str, str]:
    """The environment of a run whose S3 calls go through ``proxy``."""
    return {**os.environ, "AWS_ENDPOINT_URL": proxy.endpoint}


def test_a_throttled_store_is_waited_out_and_the_run_is_done_exactly_once(
    running_s3: S3Server, tmp_path: Path, model_dir: Path
) -> None:
    inp, good = put_tars(tmp_path, "throttled", n_tars=2, n_samples=4, broken={})
    out = f"s3://{OUT}/throttled"
    spool_dir = tmp_path / "spool"
    bursts = [
        slow_down(requests_to("PUT", rf"^/{OUT}/throttled/logs/\.write-check"), BURST_S),
        slow_down(requests_to("GET", rf"^/{IN}/throttled/.+\.tar$"), BURST_S),
        hub_quotas(requests_to("PUT", rf"^/{OUT}/throttled/(?!logs/)"), BURST_S),
    ]
    args = run_args(inp, out, model_dir, spool_dir, "--num-proc", "1")
    with ThrottlingProxy(running_s3.endpoint, bursts) as proxy:
        run = cli(*args, "--progress-interval", "0.2", env=through(proxy))
    text = run.stdout + run.stderr
    logs = worker_logs(spool_root(spool_dir, out))
    assert run.returncode == 0, text + logs
    assert all(burst.over for burst in bursts), bursts  # each burst met, and outlasted
    assert_exactly_once(out, good)
    assert not any(name.startswith("errors/") for name in objects(out))  # no damage recorded
    verified = cli("verify", inp, out, "--storage-options", OPTIONS)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The write check says it waits; the dashboard's lines show the state...
    assert "write check: uploading" in run.stderr and "throttling (503 SlowDown)" in run.stderr
    assert "slot 0 throttled (retr" in run.stdout
    # ...the event log has a line per episode, the worker log one per retry.
    episodes = [line for line in run.stdout.splitlines() if "throttled by the store (" in line]
    assert any("503 SlowDown reading" in line for line in episodes), text
    # The first upload may be the run's claim, made before the event log starts: its
    # waits are the lines validation prints.
    claim_waits = [line for line in run.stderr.splitlines() if line.startswith("claim: ")]
    assert any("429 uploading" in line for line in episodes) or any(
        "429" in line for line in claim_waits
    ), text
    assert len(episodes) <= 4, episodes
    retries = [line for line in logs.splitlines() if "the store is throttling" in line]
    assert len(retries) + len(claim_waits) > len(episodes), logs
    assert "QuotaExceeded" not in text and "EDQUOT" not in text
    assert_no_secret(text, logs)


def test_a_store_that_refuses_writes_stops_the_run_with_exit_4_and_commits_nothing(
    running_s3: S3Server, tmp_path: Path, model_dir: Path
) -> None:
    inp, _ = put_tars(tmp_path, "refused", n_tars=2, n_samples=3, broken={})
    out = f"s3://{OUT}/refused"
    args = run_args(inp, out, model_dir, tmp_path / "spool", "--num-proc", "1")
    # The tars' uploads (the claim and the manifest go through; a refused claim is below).
    uploads = quota_exceeded(
        requests_to("PUT", rf"^/{OUT}/refused/(?!logs/|\.claims/|manifest\.json)")
    )
    with ThrottlingProxy(running_s3.endpoint, [uploads]) as proxy:
        run = cli(*args, env=through(proxy))
    assert run.returncode == 4, run.stdout + run.stderr
    assert "the output takes no more data" in run.stdout and "403 QuotaExceeded" in run.stdout
    # Nothing committed, not even half (the run's manifest is no tar's output).
    assert uploads.answered >= 1 and set(objects(out)) <= {"manifest.json"}
    probe = quota_exceeded(requests_to("PUT", rf"^/{OUT}/refused/logs/\.write-check"))
    with ThrottlingProxy(running_s3.endpoint, [probe]) as proxy:
        refused = cli(*args, env=through(proxy))
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert f"output {out} refuses writes" in refused.stderr and probe.answered == 1
    assert "Traceback" not in refused.stdout + refused.stderr
    claim = quota_exceeded(requests_to("PUT", rf"^/{OUT}/refused/\.claims/"))
    with ThrottlingProxy(running_s3.endpoint, [claim]) as proxy:
        unclaimed = cli(*args, env=through(proxy))
    assert unclaimed.returncode == 4, unclaimed.stdout + unclaimed.stderr
    assert "cannot claim the output" in unclaimed.stderr and "QuotaExceeded" in unclaimed.stderr


# Runs the CLI with s3fs unimportable, as on a machine without the extra.
WITHOUT_S3FS = "import sys; sys.modules['s3fs'] = None; from tartok_tui.cli import main; main()"


def test_a_url_whose_backend_is_not_installed_exits_2_naming_the_extra(
    tmp_path: Path, model_dir: Path
) -> None:
    (tmp_path / "in").mkdir()

    def without_s3fs(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", WITHOUT_S3FS, *args],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip

    for inp, out in (("s3://b/in", str(tmp_path / "out")), (str(tmp_path / "in"), "s3://b/out")):
        result = without_s3fs("run", "--no-tui", "-i", inp, "-o", out, "-m", str(model_dir))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "s3fs, which is not installed: pip install 'tartok-tui[s3]'" in result.stderr
    for args in (("status", "s3://b/out"), ("verify", "s3://b/in", "s3://b/out")):
        result = without_s3fs(*args)
        assert result.returncode == 2 and "tartok-tui[s3]" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_signed_url_parameter_never_shows_in_what_the_run_prints(
    running_s3: S3Server, tmp_path: Path, model_dir: Path
) -> None:
    signed = f"s3://{IN}/nothing-here?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=sig-secret-9c1d"
    run = cli("run", "--no-tui", "-i", signed, "-o", str(tmp_path / "out"), "-m", str(model_dir),
              "--storage-options", OPTIONS)  # fmt: skip
    assert run.returncode == 2
    assert f"nothing found at s3://{IN}/nothing-here?***" in run.stderr
    verified = cli("verify", signed, f"s3://{OUT}/none", "--storage-options", OPTIONS)
    assert verified.returncode == 2
    for text in (run.stdout + run.stderr, verified.stdout + verified.stderr):
        assert "sig-secret-9c1d" not in text and "AKIDEXAMPLE" not in text
        assert_no_secret(text)
