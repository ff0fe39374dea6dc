"""`tartok-tui export`: a run's committed tokens as a Hugging Face dataset folder, memmap token
files and Spark-TTS training lines; exactly once, resumable, byte-identical after a kill."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from output_support import files_under, tokens_output
from typer.testing import CliRunner

from tartok_tui import __version__
from tartok_tui.cli import app
from tartok_tui.exit_codes import ExitCode
from tartok_tui.export.destination import Destination
from tartok_tui.output.manifest import Manifest, write_manifest

runner = CliRunner()

TARS = {"EN-B000000.tar": 9, "sub/EN-B000001.tar": 14, "EN-B000002.tar": 5}


def manifest() -> Manifest:
    return Manifest(
        codec="bicodec",
        tokens_version=1,
        weights="f" * 64,
        precision="fp32",
        token_options={"audio_exts": ["wav"]},
        weight_files={"BiCodec/model.safetensors": "a" * 64},
    )


@pytest.fixture
def output(tmp_path: Path) -> tuple[Path, dict[str, dict]]:
    """Two tars in JSONL, one in Parquet (an output can hold both), with a run manifest."""
    out, records = tokens_output(tmp_path / "jsonl", dict(list(TARS.items())[:2]), "jsonl")
    other, more = tokens_output(tmp_path / "pq", dict(list(TARS.items())[2:]), "parquet", seed=1)
    shutil.copy(other / "EN-B000002.parquet", out / "EN-B000002.parquet")
    write_manifest(out, manifest())
    return out, {**records, **more}


def export(source: Path | str, dest: Path | str, fmt: str, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["export", str(source), "--format", fmt, "--to", str(dest), *extra])
    return result.exit_code, result.output


def contents(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in files_under(root)}


def other_fields(record: dict) -> dict:
    fixed = ("key", "language", "text", "global_tokens", "semantic_tokens")
    return {k: v for k, v in record.items() if k not in fixed}


# ---------------------------------------------------------------------- the formats


def test_hf_loads_with_datasets_whole_and_per_language_and_its_card_says_how_it_was_made(
    output, tmp_path: Path
) -> None:
    from datasets import load_dataset

    out, records = output
    dest = tmp_path / "hf"
    code, text = export(out, dest, "hf", "--split-by", "language")
    assert code == ExitCode.OK, text
    everything = load_dataset(str(dest), split="train")
    assert sorted(everything["key"]) == sorted(records)
    assert str(everything.features["semantic_tokens"]) == "List(Value('uint16'))"
    for row in everything:
        record = records[row["key"]]
        assert row["global_tokens"] == record["global_tokens"]
        assert row["semantic_tokens"] == record["semantic_tokens"]
        assert (row["language"], row["text"]) == (record["language"], record["text"])
        assert json.loads(row["metadata"]) == other_fields(record)
    languages = Counter(r["language"] for r in records.values())
    for language, n in languages.items():
        one = load_dataset(str(dest), language, split="train")
        assert len(one) == n and set(one["language"]) == {language}
    by_glob = load_dataset("parquet", data_files=str(dest / "data/**/*.parquet"), split="train")
    assert len(by_glob) == len(records)

    card = (dest / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    configs = {c["config_name"]: c for c in header["configs"]}
    assert set(configs) == {"all", *languages} and configs["all"]["default"] is True
    info = {i["config_name"]: i for i in header["dataset_info"]}
    assert info["all"]["splits"][0]["num_examples"] == len(records)
    assert {"name": "semantic_tokens", "list": "uint16"} in info["all"]["features"]
    assert manifest().fingerprint in card and manifest().weights in card
    assert f"tartok-tui {__version__}" in card


def test_memmap_reads_back_with_numpy_in_the_documented_layout(output, tmp_path: Path) -> None:
    out, records = output
    dest = tmp_path / "memmap"
    code, text = export(out, dest, "memmap")
    assert code == ExitCode.OK, text
    layout = json.loads((dest / "memmap.json").read_text())
    assert layout["index"]["columns"] == [
        "global_offset",
        "global_length",
        "semantic_offset",
        "semantic_length",
    ]
    assert [s["path"] for s in layout["shards"]] == ["EN-B000000", "EN-B000002", "sub/EN-B000001"]
    seen = []
    for shard in layout["shards"]:
        folder = dest / shard["path"]
        glob = np.memmap(folder / "global.bin", dtype="<u2", mode="r")
        sem = np.memmap(folder / "semantic.bin", dtype="<u2", mode="r")
        index = np.load(folder / "index.npy")
        assert index.dtype == np.dtype("<i8") and index.shape == (shard["samples"], 4)
        metas = [json.loads(line) for line in (folder / "meta.jsonl").read_text().splitlines()]
        for (g_off, g_len, s_off, s_len), meta in zip(index, metas, strict=True):
            record = records[meta["key"]]
            assert glob[g_off : g_off + g_len].tolist() == record["global_tokens"]
            assert sem[s_off : s_off + s_len].tolist() == record["semantic_tokens"]
            assert {k: v for k, v in meta.items() if k not in ("key", "language", "text")} == (
                other_fields(record)
            )
            seen.append(meta["key"])
    assert sorted(seen) == sorted(records) and layout["samples"] == len(records)
    assert layout["fingerprint"] == manifest().fingerprint


def test_spark_tts_lines_are_the_reference_prompt_continued_by_the_semantic_tokens(
    output, tmp_path: Path
) -> None:
    import torch
    from spark_tts_lib.SparkTTS import SparkTTS

    out, records = output
    dest = tmp_path / "spark"
    code, text = export(out, dest, "spark-tts")
    assert code == ExitCode.OK, text
    without_text = [k for k, r in records.items() if not r["text"]]
    assert without_text and f"{len(without_text)} samples without text skipped" in text

    class Tokens:
        """The reference's audio tokenizer, answering with a record's tokens."""

        record: dict

        def tokenize(self, path: str):
            return (
                torch.tensor([[self.record["global_tokens"]]]),
                torch.tensor([self.record["semantic_tokens"]]),
            )

    reference = object.__new__(SparkTTS)  # its prompt builder only: no LLM is loaded
    reference.audio_tokenizer = Tokens()
    lines = [json.loads(line) for f in sorted(dest.rglob("*.jsonl")) for line in f.open()]
    assert sorted(line["key"] for line in lines) == sorted(set(records) - set(without_text))
    for line in lines:
        record = records[line["key"]]
        reference.audio_tokenizer.record = record
        prompt, _ = reference.process_prompt(record["text"], "clip.wav")
        # With the text as the reference clip's transcript, the reference continues the
        # prompt with that clip's semantic tokens: exactly a training line before its end.
        continued, _ = reference.process_prompt("", "clip.wav", prompt_text=record["text"])
        assert line["text"].startswith(prompt)
        assert line["text"] == continued + "<|end_semantic_token|><|im_end|>"


# ---------------------------------------------------------------------- exactly once


@pytest.mark.parametrize("fmt", ["hf", "memmap", "spark-tts"])
def test_an_export_killed_mid_unit_reruns_to_the_bytes_of_an_export_never_stopped(
    output, tmp_path: Path, monkeypatch, fmt: str
) -> None:
    out, _ = output
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert export(out, clean, fmt)[0] == ExitCode.OK
    records = []
    real_publish = Destination.publish

    def publish_then_die(self, part) -> None:
        real_publish(self, part)
        if part.key.parts[0] == ".tartok-export":
            records.extend([part.key] if part.key.parts[1] == "units" else [])
        elif records:  # the second unit's first file is in place; its record never will be
            raise KeyboardInterrupt

    monkeypatch.setattr(Destination, "publish", publish_then_die)
    code, text = export(out, killed, fmt)
    assert code == ExitCode.INTERRUPTED, text
    monkeypatch.setattr(Destination, "publish", real_publish)
    assert contents(killed) != contents(clean)
    code, text = export(out, killed, fmt)
    assert code == ExitCode.OK, text
    assert "already done" in text and not text.startswith(f"{fmt}: 0 of")
    assert contents(killed) == contents(clean)


def test_a_rerun_skips_every_unit_and_a_changed_tokens_file_is_exported_again(
    output, tmp_path: Path
) -> None:
    out, _ = output
    dest = tmp_path / "hf"
    assert export(out, dest, "hf")[0] == ExitCode.OK
    before = contents(dest)
    code, text = export(out, dest, "hf")
    assert (
        code == ExitCode.OK and "0 of 3 tokens files exported" in text and "3 already done" in text
    )
    assert contents(dest) == before
    # The tar redone with other samples (another run into the same output after a delete).
    redone, _ = tokens_output(tmp_path / "redo", {"EN-B000002.tar": 3}, "jsonl", seed=7)
    (out / "EN-B000002.parquet").unlink()
    shutil.copy(redone / "EN-B000002.jsonl", out / "EN-B000002.jsonl")
    code, text = export(out, dest, "hf")
    assert code == ExitCode.OK and "1 of 3 tokens files exported" in text, text
    fresh = tmp_path / "fresh"
    assert export(out, fresh, "hf")[0] == ExitCode.OK
    assert contents(dest) == contents(fresh)


def test_a_broken_tokens_file_fails_its_unit_only_and_a_rerun_finishes(
    output, tmp_path: Path
) -> None:
    out, _ = output
    good = (out / "EN-B000000.jsonl").read_bytes()
    (out / "EN-B000000.jsonl").write_bytes(good + b"{not json\n")
    dest = tmp_path / "memmap"
    code, text = export(out, dest, "memmap")
    assert code == ExitCode.INCOMPLETE
    assert "EN-B000000.jsonl not exported" in text and "2 of 3 tokens files exported" in text
    assert not (dest / "memmap.json").exists()  # the index waits for every unit
    assert not (dest / "EN-B000000").exists()
    (out / "EN-B000000.jsonl").write_bytes(good)
    code, text = export(out, dest, "memmap")
    assert code == ExitCode.OK and "1 of 3 tokens files exported" in text, text
    assert json.loads((dest / "memmap.json").read_text())["samples"] == sum(TARS.values())


def test_an_export_into_a_folder_of_another_export_or_with_a_bad_split_exits_2(
    output, tmp_path: Path
) -> None:
    out, _ = output
    dest = tmp_path / "dest"
    assert export(out, dest, "memmap")[0] == ExitCode.OK
    code, text = export(out, dest, "hf")
    assert code == ExitCode.BAD_ARGS and "format: memmap there, hf now" in text
    code, text = export(out, tmp_path / "x", "memmap", "--split-by", "language")
    assert code == ExitCode.BAD_ARGS and "not available for --format memmap" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    code, text = export(empty, tmp_path / "y", "hf")
    assert code == ExitCode.BAD_ARGS and "no committed tokens files" in text


def test_memory_stays_flat_however_long_a_tokens_file_is(tmp_path: Path) -> None:
    import tracemalloc

    from tartok_tui.export.run import run_export

    warm, _ = tokens_output(tmp_path / "warm", {"X.tar": 10}, "jsonl")
    assert run_export(warm, tmp_path / "hf-warm", "hf").ok  # imports and caches, untraced
    peaks = {}
    for n in (4500, 18000):
        out, _ = tokens_output(tmp_path / str(n), {"X.tar": n}, "jsonl", frames=(40, 60))
        tracemalloc.start()
        result = run_export(out, tmp_path / f"hf-{n}", "hf")
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert result.ok and result.samples == n
    # Four times the samples (several row groups, 18k lines): the peak does not follow.
    assert peaks[18000] < 1.5 * peaks[4500], peaks


def test_an_export_from_and_to_s3_holds_the_bytes_of_a_local_export(
    output, tmp_path: Path, s3
) -> None:
    from s3_support import FAST_FAIL, ensure_buckets

    from tartok_tui.output.store import StoreOutput
    from tartok_tui.storage import Access, filesystem

    out, _ = output
    ensure_buckets("tartok-export")
    fs, _ = filesystem("s3://tartok-export", FAST_FAIL)
    for name in files_under(out):
        fs.pipe_file(f"tartok-export/out/{name}", (out / name).read_bytes())
    local = tmp_path / "local"
    assert export(out, local, "hf", "--split-by", "language")[0] == ExitCode.OK
    url = "s3://tartok-export/hf"
    spool = ("--spool-dir", str(tmp_path / "spool"))
    code, text = export("s3://tartok-export/out", url, "hf", "--split-by", "language", *spool)
    assert code == ExitCode.OK, text
    store = StoreOutput(url, Access(options=FAST_FAIL))
    objects = {str(key): store.read_bytes(key) for key in store.list_keys()}
    assert objects == contents(local)
    code, text = export("s3://tartok-export/out", url, "hf", "--split-by", "language", *spool)
    assert code == ExitCode.OK and "3 already done" in text, text
    # And from the store to a local folder: the same bytes again.
    code, text = export(
        "s3://tartok-export/out", tmp_path / "from-s3", "hf", "--split-by", "language"
    )
    assert code == ExitCode.OK and contents(tmp_path / "from-s3") == contents(local)


def test_an_export_process_killed_outright_resumes_to_the_same_bytes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    out, _ = tokens_output(tmp_path, {f"T{i:02d}.tar": 60 for i in range(12)}, "parquet")
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert export(out, clean, "memmap")[0] == ExitCode.OK
    args = [sys.executable, "-m", "tartok_tui", "export", str(out), "-f", "memmap", "--to"]
    proc = subprocess.Popen([*args, str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    units = killed / ".tartok-export" / "units"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if units.is_dir() and any(units.iterdir()):
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    code, text = export(out, killed, "memmap")
    assert code == ExitCode.OK, text
    assert contents(killed) == contents(clean)  # stale partial files of the dead process gone too
