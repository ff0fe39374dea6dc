"""Helpers for tests that run the real supervisor with real worker processes."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from tartok_tui.config import RunConfig
from tartok_tui.demo.data import GeneratedSample, write_emilia_tar
from tartok_tui.supervisor.supervisor import Supervisor


def _good_tars(
    input_dir: Path, n_tars: int, n_samples: int, first_batch: int = 0
) -> dict[str, GeneratedSample]:
    good = {}
    for i in range(n_tars):
        batch = first_batch + i
        for s in write_emilia_tar(
            input_dir / f"EN-B{batch:06d}.tar",
            n_samples,
            seed=batch,
            batch=batch,
            audio_format="flac",
            min_s=1.0,
            max_s=2.5,
        ):
            good[s.key] = s
    return good


def _config(input_dir: Path, output_dir: Path, model_dir: Path, **kw) -> RunConfig:
    kw.setdefault("num_proc", 2)
    kw.setdefault("device", "cpu")
    kw.setdefault("backoff_initial_s", 0.1)
    return RunConfig(input_dir=input_dir, output_dir=output_dir, model_dir=str(model_dir), **kw)


def _read_outputs(output_dir: Path) -> tuple[Counter, dict[str, list[dict]]]:
    """Keys across every committed JSONL (with multiplicity), and error records by tar."""
    keys: Counter = Counter()
    for path in output_dir.rglob("*.jsonl"):
        if path.relative_to(output_dir).parts[0] in ("errors", ".partial", "logs"):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert len(record["semantic_tokens"]) > 0 and len(record["global_tokens"]) == 32
            keys[record["key"]] += 1
    errors: dict[str, list[dict]] = {}
    for path in (output_dir / "errors").glob("*.jsonl"):
        if path.is_dir():
            continue  # a test's blocker in place of an error file
        errors[path.stem] = [json.loads(line) for line in path.read_text().splitlines()]
    return keys, errors


def _assert_exactly_once(output_dir: Path, good: dict[str, GeneratedSample]) -> None:
    keys, _ = _read_outputs(output_dir)
    assert set(keys) == set(good), (set(good) - set(keys), set(keys) - set(good))
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]


async def _run(sup: Supervisor, timeout: float = 240.0):
    return await asyncio.wait_for(sup.run(), timeout)


async def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
