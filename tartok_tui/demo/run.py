"""``tartok-tui demo``: a small Emilia-style dataset and a tiny random-weight
model, built once in a cache directory, then the real pipeline on them."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from tartok_tui.codec.random_model import write_random_model
from tartok_tui.config import RunConfig
from tartok_tui.demo.data import write_emilia_tar

# Bump when what build_demo writes changes, so old caches are rebuilt.
DEMO_LAYOUT = 1

# Broken samples planted in the demo data: (tar number, sample index, kind).
DEMO_BROKEN: tuple[tuple[int, int, str], ...] = (
    (1, 3, "bad_json"),
    (1, 7, "undecodable_audio"),
    (2, 5, "no_audio"),
    (3, 2, "too_long"),
)


@dataclass(frozen=True)
class DemoData:
    root: Path
    input_dir: Path
    model_dir: Path
    output_dir: Path
    samples: int
    broken: int


def default_demo_dir() -> Path:
    override = os.environ.get("TARTOK_DEMO_DIR")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "tartok-tui" / "demo"


def build_demo(root: Path, tars: int = 6, samples_per_tar: int = 24, seed: int = 0) -> DemoData:
    """Write the demo dataset and model under ``root`` unless an identical one is there."""
    input_dir, model_dir = root / "input", root / "model"
    spec = {"layout": DEMO_LAYOUT, "tars": tars, "samples_per_tar": samples_per_tar, "seed": seed}
    marker = root / "demo.json"
    broken = [(t, i, kind) for t, i, kind in DEMO_BROKEN if t < tars and i < samples_per_tar]
    if not (marker.is_file() and json.loads(marker.read_text()) == spec):
        shutil.rmtree(input_dir, ignore_errors=True)
        shutil.rmtree(model_dir, ignore_errors=True)
        input_dir.mkdir(parents=True)
        for t in range(tars):
            write_emilia_tar(
                input_dir / f"EN-B{t:06d}.tar",
                samples_per_tar,
                seed=seed + t,
                lang="EN",
                min_s=2.0,
                max_s=9.0,
                broken={i: kind for bt, i, kind in broken if bt == t},
                batch=t,
            )
        write_random_model(model_dir, preset="tiny", seed=seed)
        marker.write_text(json.dumps(spec))
    return DemoData(
        root=root,
        input_dir=input_dir,
        model_dir=model_dir,
        output_dir=root / "output",
        samples=tars * samples_per_tar,
        broken=len(broken),
    )


def demo_config(data: DemoData, num_proc: int | None, device: str) -> RunConfig:
    return RunConfig(
        input_dir=data.input_dir,
        output_dir=data.output_dir,
        model_dir=str(data.model_dir),
        num_proc=num_proc,
        device=device,
        # Restarts in the demo should be quick to watch.
        backoff_initial_s=0.5,
        backoff_max_s=5.0,
    )


def run_demo(
    *,
    root: Path | None,
    tars: int,
    samples_per_tar: int,
    num_proc: int | None,
    device: str,
    tui: bool,
    keep_output: bool,
    console: Console,
) -> int:
    """Build (or reuse) the demo data, run the pipeline on it, verify the result."""
    from tartok_tui.output.verify import verify
    from tartok_tui.run import run_pipeline

    root = root if root is not None else default_demo_dir()
    console.print(f"[bold]tartok-tui demo[/] in {root}")
    console.print(
        "[yellow]The demo model has random weights: its tokens mean nothing.[/] "
        "It shows the pipeline, the dashboard, error records and resume; "
        "use --model-dir with the real Spark-TTS-0.5B for real tokens."
    )
    with console.status("building the demo dataset and tiny model (first time only)"):
        data = build_demo(root, tars=tars, samples_per_tar=samples_per_tar)
    console.print(
        f"dataset: {tars} tars, {data.samples} samples ({data.broken} deliberately broken) "
        f"in {data.input_dir}"
    )
    if not keep_output:
        shutil.rmtree(data.output_dir, ignore_errors=True)
    code = run_pipeline(demo_config(data, num_proc, device), tui=tui, console=console)
    report = verify(data.input_dir, data.output_dir)
    verdict = "[green]every sample accounted for[/]" if report.ok else "[red]loss or duplicates[/]"
    console.print(
        f"verify: {verdict}; tokens in {data.output_dir}, error records in "
        f"{data.output_dir / 'errors'}"
    )
    return code if report.ok else max(code, 1)
