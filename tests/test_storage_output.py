"""Tokens written to object storage, against a real S3 protocol server on 127.0.0.1: built in a
local spool, uploaded whole (errors object first), invisible until committed, retried through an
outage, refused stores stop the run; resume, status and verify read the prefix from one listing."""

from __future__ import annotations

import asyncio
import errno
import logging
import shutil
import threading
from pathlib import Path, PurePosixPath

import botocore.exceptions
import pytest
from run_support import _config, _good_tars
from s3_support import FAST_FAIL, PATIENT, SECRET, S3Server, ensure_buckets
from tar_makers import python_tar

from tartok_tui.config import RunConfig
from tartok_tui.output.files import done_format_now, done_formats
from tartok_tui.output.read import count_records, read_error_keys, read_keys, read_rows
from tartok_tui.output.scan import scan_output
from tartok_tui.output.spool import SpoolTarget, spool_root
from tartok_tui.output.store import StoreOutput, StoreUnavailable
from tartok_tui.output.target import LocalTarget, OutputUnavailable
from tartok_tui.output.verify import verify
from tartok_tui.output.writer import TarWriter, make_record
from tartok_tui.shards.reader import iter_samples
from tartok_tui.storage import Access, RedactingFormatter, RetryPolicy, filesystem
from tartok_tui.supervisor.run_output import RunOutput
from tartok_tui.supervisor.summary import RunSummary
from tartok_tui.supervisor.supervisor import Supervisor
from tartok_tui.worker.options import WorkerOptions

BUCKET = "tartok-out"
QUICK = RetryPolicy(tries=2, first_delay_s=0.05, max_delay_s=0.05)


@pytest.fixture
def running_s3(s3: S3Server) -> S3Server:
    if not s3.running:
        s3.start()
    ensure_buckets(BUCKET)
    return s3


def access(retry: RetryPolicy = PATIENT) -> Access:
    return Access(options=FAST_FAIL, retry=retry)


def write_tar(
    out: Path | str, inp: Path, tar: Path, fmt: str, target=None, errors: bool = True
) -> TarWriter:
    """A writer for ``tar`` with three records and (optionally) one error record, uncommitted."""
    writer = TarWriter(out, inp, tar, lease_id=7, output_format=fmt, target=target)
    for i in range(3):
        meta = {"language": "en", "text": f"clip {i}", "duration": 1.5 + i}
        writer.add(i, make_record(f"k{i}", meta, range(32), [i, 5, 9, 4000 + i]))
    if errors:
        writer.add_error(3, "k3", "decode", "not audio")
    return writer


def objects(prefix: str) -> dict[str, bytes]:
    store = StoreOutput(prefix, access())
    return {str(key): store.read_bytes(key) for key in store.list_keys()}


def tar_in(tmp_path: Path, name: str = "EN-B000000.tar") -> tuple[Path, Path]:
    inp = tmp_path / "in"
    inp.mkdir(exist_ok=True)
    return inp, python_tar(inp / name, [("k0.json", b"{}")])


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_tar_appears_on_s3_only_at_commit_errors_first_and_as_a_local_run_writes_it(
    running_s3: S3Server, tmp_path: Path, fmt: str
) -> None:
    inp, tar = tar_in(tmp_path)
    url = f"s3://{BUCKET}/commit-{fmt}"
    spool = spool_root(tmp_path / "spool", url)
    store = StoreOutput(url, access())
    uploads: list[tuple[str, list[str]]] = []
    upload = store.upload

    def recording(local: Path, key: PurePosixPath) -> None:
        uploads.append((str(key), sorted(map(str, store.list_keys()))))
        upload(local, key)

    store.upload = recording  # type: ignore[method-assign]
    writer = write_tar(spool, inp, tar, fmt, SpoolTarget(store, spool))
    assert store.list_keys() == {}  # nothing of the tar is visible before its commit
    assert len(list((spool / ".partial").rglob("*.part"))) == 2
    writer.commit()
    tokens = f"EN-B000000.{fmt}"
    # The errors object first, then the tokens object (whose existence means "done").
    assert uploads == [("errors/EN-B000000.jsonl", []), (tokens, ["errors/EN-B000000.jsonl"])]
    assert not list((spool / ".partial").rglob("*.part"))  # uploaded, then dropped

    local = tmp_path / "local"
    write_tar(local, inp, tar, fmt).commit()
    remote = objects(url)
    assert remote == {
        tokens: (local / tokens).read_bytes(),
        "errors/EN-B000000.jsonl": (local / "errors/EN-B000000.jsonl").read_bytes(),
    }
    # Read back over the URL as from the local files.
    assert list(read_rows(f"{url}/{tokens}", access())) == list(read_rows(local / tokens))
    assert read_keys(f"{url}/{tokens}", access()).keys == ["k0", "k1", "k2"]
    assert count_records(f"{url}/{tokens}", access()) == 3
    assert read_error_keys(f"{url}/errors/EN-B000000.jsonl", access()).keys == ["k3"]


def test_a_commit_without_errors_removes_an_errors_object_left_by_an_earlier_attempt(
    running_s3: S3Server, tmp_path: Path
) -> None:
    inp, tar = tar_in(tmp_path)
    url = f"s3://{BUCKET}/orphan"
    store = StoreOutput(url, access())
    store.put_bytes("errors/EN-B000000.jsonl", b'{"key": "old"}\n')
    spool = tmp_path / "spool"
    write_tar(spool, inp, tar, "jsonl", SpoolTarget(store, spool), errors=False).commit()
    assert sorted(objects(url)) == ["EN-B000000.jsonl"]


def test_an_upload_through_a_server_outage_is_retried_and_lands_whole(
    running_s3: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inp, tar = tar_in(tmp_path)
    url = f"s3://{BUCKET}/outage"
    spool = tmp_path / "spool"
    writer = write_tar(spool, inp, tar, "jsonl", SpoolTarget(StoreOutput(url, access()), spool))
    retried = threading.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "retry" in record.getMessage():
                retried.set()

    handler = Seen()
    logging.getLogger("tartok_tui.storage").addHandler(handler)
    running_s3.stop()

    def restart() -> None:
        retried.wait(timeout=120)  # the upload has met the outage: end it
        running_s3.start()

    restarter = threading.Thread(target=restart)
    restarter.start()
    try:
        writer.commit()
    finally:
        restarter.join()
        logging.getLogger("tartok_tui.storage").removeHandler(handler)
    assert retried.is_set() and writer.committed
    assert sorted(objects(url)) == ["EN-B000000.jsonl", "errors/EN-B000000.jsonl"]
    assert SECRET not in caplog.text


def test_a_store_that_stays_down_leaves_the_tar_uncommitted_and_nothing_visible(
    running_s3: S3Server, tmp_path: Path
) -> None:
    inp, tar = tar_in(tmp_path)
    url = f"s3://{BUCKET}/down"
    spool = tmp_path / "spool"
    store = StoreOutput(url, access(QUICK))
    writer = write_tar(spool, inp, tar, "jsonl", SpoolTarget(store, spool))
    running_s3.stop()
    with pytest.raises(StoreUnavailable) as err:
        writer.commit()
    assert "failed after 2 tries" in str(err.value) and SECRET not in str(err.value)
    assert not writer.committed
    writer.abort()  # what the worker does with a lease that failed
    assert not list(spool.rglob("*.part"))
    running_s3.start()
    assert objects(url) == {}


def _client_error(code: str, message: str = "") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message or code}}, "PutObject"
    )


def test_a_refused_upload_stops_the_run_with_the_store_s_reason_and_no_secret(
    running_s3: S3Server, tmp_path: Path
) -> None:
    inp, tar = tar_in(tmp_path)
    url = f"s3://{BUCKET}/refused"
    spool = tmp_path / "spool"
    options = {**FAST_FAIL, "key": "tartok-test-key-id", "secret": "opt-secret-7d1f0c"}
    store = StoreOutput(url, Access(options=options))

    class Refusing:
        """The store's filesystem, but every upload is refused as a full MinIO would."""

        def __init__(self, fs: object) -> None:
            self.fs = fs

        def __getattr__(self, name: str) -> object:
            return getattr(self.fs, name)

        def put_file(self, local: str, path: str) -> None:
            raise _client_error("XMinioStorageFull", "drive full; signed with opt-secret-7d1f0c")

    store.fs = Refusing(store.fs)
    writer = write_tar(spool, inp, tar, "jsonl", SpoolTarget(store, spool))
    with pytest.raises(OutputUnavailable) as err:
        writer.commit()
    text = str(err.value)
    assert err.value.errno == errno.ENOSPC and "drive full" in text
    assert f"{url}/errors/EN-B000000.jsonl" in text and "opt-secret-7d1f0c" not in text
    assert "partial files removed" in text and not list(spool.rglob("*.part"))


def test_a_full_spool_disk_is_output_unavailable(running_s3: S3Server, tmp_path: Path) -> None:
    inp, tar = tar_in(tmp_path)
    spool = tmp_path / "spool"

    class FullDisk(LocalTarget):
        def _write(self, fd: int, data: memoryview) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    target = SpoolTarget(StoreOutput(f"s3://{BUCKET}/spool-full", access()), spool, FullDisk(spool))
    writer = write_tar(spool, inp, tar, "jsonl", target, errors=False)
    with pytest.raises(OutputUnavailable) as err:
        writer.commit()
    assert err.value.errno == errno.ENOSPC and str(spool) in str(err.value)


def test_resume_lists_the_output_prefix_once_instead_of_asking_per_tar(
    running_s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"s3://{BUCKET}/resume"
    store = StoreOutput(url, access())
    store.put_bytes("sub/A.jsonl", b"")
    store.put_bytes("sub/B.parquet", b"")
    store.put_bytes("errors/sub/C.jsonl", b"")  # errors alone: not done
    tars = [f"s3://in/ds/sub/{name}.tar" for name in "ABCD"]
    calls: list[str] = []
    for name in ("find", "info", "exists", "ls"):
        original = getattr(store.fs, name)  # the filesystem every call with these options uses

        def counted(*args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(store.fs, name, counted)
    found = done_formats(url, "s3://in/ds", tars, "jsonl", access())
    assert found == dict(zip(tars, ["jsonl", "parquet", None, None], strict=True))
    assert calls.count("find") == 1 and "info" not in calls and "exists" not in calls
    calls.clear()
    # One tar asked later (a worker died: did it commit first?) asks the store itself.
    assert done_format_now(url, "s3://in/ds", tars[1], "jsonl", access()) == "parquet"
    assert "find" not in calls and "info" in calls


def test_status_and_verify_over_urls_agree_with_the_local_output(
    running_s3: S3Server, tmp_path: Path
) -> None:
    from tartok_tui.demo.data import write_emilia_tar

    inp = tmp_path / "in"
    write_emilia_tar(inp / "EN-B000000.tar", 3, seed=0, audio_format="flac", min_s=1, max_s=2)
    write_emilia_tar(inp / "EN-B000001.tar", 2, seed=1, batch=1, audio_format="flac")
    local = tmp_path / "out"
    for tar, fmt in ((inp / "EN-B000000.tar", "jsonl"), (inp / "EN-B000001.tar", "parquet")):
        keys = [s.key for s in iter_samples(tar)]  # type: ignore[union-attr]
        writer = TarWriter(local, inp, tar, output_format=fmt)
        for i, key in enumerate(keys[:-1]):
            writer.add(i, make_record(key, {"text": "t"}, range(32), [1, 2, 3]))
        writer.add_error(len(keys) - 1, keys[-1], "decode", "bad")
        writer.commit()
    (local / "run-summary.json").write_text('{"exit_code": 0, "tars": []}')
    fs, _ = filesystem(f"s3://{BUCKET}", FAST_FAIL)
    for name in ("EN-B000000.tar", "EN-B000001.tar"):
        fs.put_file(str(inp / name), f"{BUCKET}/verify-in/{name}")
    fs.put(str(local) + "/", f"{BUCKET}/verify-out/", recursive=True)
    url_in, url_out = f"s3://{BUCKET}/verify-in", f"s3://{BUCKET}/verify-out"

    remote, here = scan_output(url_out, access()).to_dict(), scan_output(local).to_dict()
    assert remote.pop("output_dir") == url_out and here.pop("output_dir") == str(local)
    assert remote == here and remote["formats"] == {"jsonl": 1, "parquet": 1}
    report = verify(url_in, url_out, access=access())
    assert report.ok and report.samples_expected == 5 and report.input_dir == url_in
    fs.rm_file(f"{BUCKET}/verify-out/EN-B000001.parquet")
    broken = verify(url_in, url_out, access=access())
    assert broken.missing_tars == ["EN-B000001.tar"]


def test_urls_stay_strings_from_the_config_to_the_worker_and_paths_stay_paths(
    tmp_path: Path,
) -> None:
    config = RunConfig(input_dir="s3://in//ds", output_dir="s3://out/tok", model_dir="m")
    assert config.input_dir == "s3://in//ds" and config.output_is_url
    assert config.local_output_dir == spool_root(None, "s3://out/tok")
    assert config.logs_path == config.local_output_dir / "logs"
    options = WorkerOptions.for_slot(config, slot=0, device="cpu", threads=1, model_dir=tmp_path)
    back = WorkerOptions.from_json(options.to_json())
    assert back.input_dir == "s3://in//ds" and back.output_dir == "s3://out/tok"
    assert back.local_output_dir == config.local_output_dir

    local = RunConfig(input_dir=str(tmp_path / "in"), output_dir=tmp_path / "out", model_dir="m")
    assert local.input_dir == tmp_path / "in" and not local.output_is_url
    assert local.logs_path == tmp_path / "out" / "logs"
    options = WorkerOptions.for_slot(local, slot=0, device="cpu", threads=1, model_dir=tmp_path)
    back = WorkerOptions.from_json(options.to_json())
    assert back.output_dir == tmp_path / "out" and back.local_output_dir == tmp_path / "out"


def test_each_output_url_gets_its_own_stable_spool_folder_without_its_query(
    tmp_path: Path,
) -> None:
    a = spool_root(tmp_path, "s3://bucket/tokens/EN")
    assert a == spool_root(tmp_path, "s3://bucket/tokens/EN/")
    assert a != spool_root(tmp_path, "s3://bucket/tokens/ZH") and a.parent == tmp_path
    signed = spool_root(tmp_path, "s3://bucket/t?X-Amz-Signature=sig-secret-123")
    assert "sig-secret" not in str(signed) and signed.name.startswith("s3_bucket_t-")


def test_log_lines_lose_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    formatter = RedactingFormatter("%(message)s", {"secret": "opt-secret-55aa"})
    record = logging.LogRecord(
        "x", logging.WARNING, __file__, 1,
        "reading s3://b/k?X-Amz-Signature=sig-123456 with opt-secret-55aa and %s", (SECRET,), None,
    )  # fmt: skip
    line = formatter.format(record)
    assert "sig-123456" not in line and "opt-secret-55aa" not in line and SECRET not in line


def test_spooling_leaves_nothing_but_empty_folders(running_s3: S3Server, tmp_path: Path) -> None:
    inp, tar = tar_in(tmp_path)
    spool = tmp_path / "spool"
    url = f"s3://{BUCKET}/tidy"
    write_tar(spool, inp, tar, "parquet", SpoolTarget(StoreOutput(url, access()), spool)).commit()
    assert [p for p in spool.rglob("*") if p.is_file()] == []
    shutil.rmtree(spool)


def test_a_start_that_fails_ends_the_run_with_its_exit_code_and_never_raises(
    running_s3: S3Server, tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the supervisor's event loop: a refused write check exits 4, an output that
    cannot be listed (after its retries) 1, each with the reason in the events."""
    inp = tmp_path / "in"
    _good_tars(inp, n_tars=1, n_samples=2)
    events: list[str] = []

    def run(output: str) -> RunSummary:
        config = _config(inp, output, model_dir, storage_options=FAST_FAIL,
                         spool_dir=tmp_path / "spool")  # fmt: skip
        supervisor = Supervisor(config, tars=[inp / "EN-B000000.tar"],
                                on_event=lambda e: events.append(e.message))  # fmt: skip
        return asyncio.run(supervisor.run())

    refused = run("s3://tartok-no-such-bucket/out")
    assert refused.exit_code == 4 and "refuses writes" in refused.exit_reason

    async def unlistable(self: RunOutput, tars: object) -> list[object]:
        raise StoreUnavailable("listing s3://tartok-out/start failed after 900 s throttled")

    monkeypatch.setattr(RunOutput, "done_at_start", unlistable)
    unseen = run(f"s3://{BUCKET}/start")
    assert unseen.exit_code == 1 and "could not see which tars are done" in unseen.exit_reason
    assert any("run finished: could not see which tars are done" in e for e in events)
