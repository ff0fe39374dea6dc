"""The command line: options, spellings, environment, exit codes, status and verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest
import typer
from fake_supervisor import FakeSupervisor
from typer.testing import CliRunner

from tartok_tui import __version__, cli
from tartok_tui import run as pipeline
from tartok_tui.config import ConfigError, RunConfig
from tartok_tui.exit_codes import ExitCode

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def captured(monkeypatch) -> list:
    """Replace the pipeline: record the RunConfig and the tui flag, exit 0."""
    seen: list = []

    def fake_pipeline(config, tui, **kwargs):
        seen.append((config, tui))
        return 0

    monkeypatch.setattr(cli, "run_pipeline", fake_pipeline)
    # A stray TARTOK_* in the developer's shell must not leak into these tests.
    for name in list(os.environ):
        if name.startswith("TARTOK_"):
            monkeypatch.delenv(name)
    return seen


def run_options() -> set[str]:
    command = typer.main.get_command(cli.app).commands["run"]
    return {opt for param in command.params for opt in param.opts}


def test_every_run_config_field_is_a_run_option_in_both_spellings():
    options = run_options()
    for f in fields(RunConfig):
        assert f"--{f.name.replace('_', '-')}" in options, f.name
        assert f"--{f.name}" in options, f.name


def test_every_run_option_can_come_from_the_environment():
    command = typer.main.get_command(cli.app).commands["run"]
    for param in command.params:
        if param.name == "help":
            continue
        assert param.envvar == f"TARTOK_{param.name.upper()}", param.name


def test_help_shows_examples_and_exit_codes():
    result = runner.invoke(cli.app, ["run", "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0
    assert "tartok-tui run -i /data/Emilia/EN" in result.output
    assert "130 interrupted" in result.output
    assert "TARTOK_INPUT_DIR" in result.output
    # Bracketed text in option help is shown, not eaten as rich markup.
    assert "[default: the last tar]" in result.output


def test_the_commands_are_registered_and_listed_in_the_help():
    group = typer.main.get_command(cli.app)
    assert set(group.commands) == {"run", "status", "verify", "demo", "export", "decode"}
    result = runner.invoke(cli.app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    # The "Commands" panel lists each command with its one-line help (the examples text
    # mentions the names too, so look for the help lines).
    for name, command in group.commands.items():
        first_line = (command.help or "").strip().splitlines()[0][:40]
        assert first_line in result.output, name


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    result = runner.invoke(cli.app, [flag])
    assert result.exit_code == 0
    assert result.output.strip() == f"tartok-tui {__version__}"


def test_old_script_spellings_give_the_same_config(captured, tmp_path):
    new = ["run", "--input-dir", "in", "--output-dir", "out", "--model-dir", "m",
           "--num-proc", "3", "--from-index", "2", "--to-index", "9",
           "--batch-seconds", "120", "--memory-limit-gb", "50"]  # fmt: skip
    old = ["run", "--input_dir", "in", "--output_dir", "out", "--model_dir", "m",
           "--num_proc", "3", "--from_index", "2", "--to_index", "9",
           "--batch_seconds", "120", "--memory_limit_gb", "50"]  # fmt: skip
    assert runner.invoke(cli.app, new).exit_code == 0
    assert runner.invoke(cli.app, old).exit_code == 0
    (a, _), (b, _) = captured
    assert a == b
    assert (a.num_proc, a.from_index, a.to_index, a.batch_seconds, a.memory_limit_gb) == (
        3,
        2,
        9,
        120.0,
        50.0,
    )
    assert a.input_dir == Path("in") and a.model_dir == "m"


def test_options_map_onto_the_config(captured):
    args = ["run", "-i", "in", "-o", "out", "-m", "org/model", "--recursive", "--device", "cuda:0,1",
            "--precision", "bf16", "--audio-exts", "FLAC, .wav", "--worker-env", "A=1",
            "--worker-env", "B=x=y", "--crash-limit", "7", "--log-dir", "logs", "--no-tui"]  # fmt: skip
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    ((config, tui),) = captured
    assert not tui
    assert config.recursive and config.device == "cuda:0,1" and config.precision == "bf16"
    assert config.audio_exts == ("flac", "wav")
    assert config.worker_env == {"A": "1", "B": "x=y"}
    assert config.crash_limit == 7 and config.log_dir == Path("logs")
    # Untouched options keep RunConfig's defaults.
    defaults = RunConfig(Path("in"), Path("out"), "org/model")
    assert config.stats_every == defaults.stats_every
    assert config.backoff_max_s == defaults.backoff_max_s


def test_environment_sets_options_and_the_command_line_wins(captured):
    env = {"TARTOK_INPUT_DIR": "env-in", "TARTOK_OUTPUT_DIR": "env-out", "TARTOK_MODEL_DIR": "env-m",
           "TARTOK_NUM_PROC": "8", "TARTOK_RECURSIVE": "1", "TARTOK_NO_TUI": "1",
           "TARTOK_PRECISION": "fp16"}  # fmt: skip
    result = runner.invoke(cli.app, ["run", "--num-proc", "2"], env=env)
    assert result.exit_code == 0, result.output
    ((config, tui),) = captured
    assert config.input_dir == Path("env-in") and config.model_dir == "env-m"
    assert config.num_proc == 2  # the command line beats the environment
    assert config.recursive and config.precision == "fp16" and not tui


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-o", "out", "-m", "m"],  # no input dir
        ["run", "-i", "in", "-o", "out"],  # no model dir
        ["run", "-i", "in", "-o", "out", "-m", "m", "--num-proc", "0"],
        ["run", "-i", "in", "-o", "out", "-m", "m", "--precision", "fp8"],
        ["run", "-i", "in", "-o", "out", "-m", "m", "--worker-env", "NOEQUALS"],
        ["run", "-i", "in", "-o", "out", "-m", "m", "--audio-exts", ","],
        ["run", "-i", "in", "-o", "out", "-m", "m", "--no-such-option"],
        ["run", "-i", "in", "-o", "out", "-m", "m", "--from-index", "-1"],
    ],
)
def test_bad_arguments_exit_2(captured, args):
    result = runner.invoke(cli.app, args)
    assert result.exit_code == ExitCode.BAD_ARGS, result.output
    assert captured == []


def test_a_config_error_exits_2_before_any_worker(monkeypatch, tmp_path):
    started = []
    monkeypatch.setattr(pipeline, "make_supervisor", lambda *a: started.append(a))
    result = runner.invoke(
        cli.app,
        [
            "run",
            "-i",
            str(tmp_path / "missing"),
            "-o",
            str(tmp_path / "out"),
            "-m",
            str(tmp_path),
            "--no-tui",
        ],
    )
    assert result.exit_code == ExitCode.BAD_ARGS
    assert "input directory does not exist" in result.output
    assert started == []


def test_a_validation_error_is_reported_and_exits_2(monkeypatch):
    def reject(config):
        raise ConfigError("--device cuda:7: no such GPU")

    monkeypatch.setattr(pipeline, "validate_config", reject)
    result = runner.invoke(cli.app, ["run", "-i", "in", "-o", "out", "-m", "m", "--no-tui"])
    assert result.exit_code == ExitCode.BAD_ARGS
    assert "no such GPU" in result.output


def use_fake(monkeypatch, **fake_kwargs) -> None:
    monkeypatch.setattr(pipeline, "validate_config", lambda config: (config, None))
    monkeypatch.setattr(
        pipeline,
        "make_supervisor",
        lambda config, on_event, validated: FakeSupervisor(on_event=on_event, **fake_kwargs),
    )


def test_no_tui_run_prints_events_and_a_summary_and_returns_the_run_exit_code(monkeypatch):
    use_fake(monkeypatch, step_s=0.01, max_steps=40, sim_step_s=60.0, exit_code=ExitCode.INCOMPLETE)
    result = runner.invoke(
        cli.app,
        ["run", "-i", "in", "-o", "out", "-m", "m", "--no-tui", "--progress-interval", "0.1"],
    )
    assert result.exit_code == ExitCode.INCOMPLETE, result.output
    assert "EN-B000040.tar done: 25000 samples" in result.output  # an event line
    assert "| tars " in result.output  # a plain progress line (not a terminal)
    assert "Run finished: some tars failed or are unfinished (exit code 1)" in result.output
    assert "\x1b[" not in result.output  # no escape codes in a log file
    # The summary ends with how to check the output, listen to it and export it.
    after = result.output.split("next:\n")[1]
    assert after.splitlines()[:3] == [
        "  tartok-tui status out",
        "  tartok-tui decode out --model-dir m --to out-listen --count 5",
        "  tartok-tui export out --format hf --to out-hf",
    ]


def test_dashboard_falls_back_to_plain_output_without_a_terminal(monkeypatch):
    use_fake(monkeypatch, step_s=0.01, max_steps=2)
    result = runner.invoke(cli.app, ["run", "-i", "in", "-o", "out", "-m", "m"])
    assert result.exit_code == 0, result.output
    assert "not a terminal" in result.output
    assert "Run finished: all tars done" in result.output


NO_TEXTUAL = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, "tests")  # the fake supervisor is test scaffolding
    from tartok_tui import cli
    from tartok_tui import run as pipeline
    from fake_supervisor import FakeSupervisor

    pipeline.validate_config = lambda config: (config, None)
    pipeline.make_supervisor = lambda config, on_event, validated: FakeSupervisor(on_event=on_event, step_s=0.01, max_steps=3)
    try:
        cli.app(["run", "-i", "in", "-o", "out", "-m", "m", "--no-tui"])
    except SystemExit as exc:
        code = exc.code
    loaded = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    print("EXIT", code, "TEXTUAL", loaded)
    """
)


def test_no_tui_never_imports_textual():
    result = subprocess.run(
        [sys.executable, "-c", NO_TEXTUAL], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "EXIT 0 TEXTUAL []" in result.stdout, result.stdout + result.stderr


def test_python_dash_m_works():
    result = subprocess.run(
        [sys.executable, "-m", "tartok_tui", "--version"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"tartok-tui {__version__}"


# ---------------------------------------------------------------- status / verify


@pytest.fixture
def finished_output(tmp_path) -> tuple[Path, Path]:
    """Two small input tars and an output dir as a finished run leaves it (tokens faked)."""
    from tartok_tui.demo.data import write_emilia_tar
    from tartok_tui.output.writer import TarWriter

    inp, out = tmp_path / "in", tmp_path / "out"
    for i in range(2):
        samples = write_emilia_tar(inp / f"EN-B{i:06d}.tar", 3, seed=i, min_s=0.5, max_s=0.6)
        writer = TarWriter(out, inp, inp / f"EN-B{i:06d}.tar")
        for s in samples:
            if i == 1 and s.index == 2:
                writer.add_error(s.index, s.key, "decode", "not audio")
            else:
                writer.add(s.index, {"key": s.key, "language": "en", "text": "t", "global_tokens": [1],
                                     "semantic_tokens": [2]})  # fmt: skip
        writer.commit()
    return inp, out


def test_status_counts_done_tars_and_errors(finished_output):
    _, out = finished_output
    result = runner.invoke(cli.app, ["status", str(out)], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "2 tars (2 jsonl)" in result.output and "not counted" in result.output
    assert "EN-B000001.tar" in result.output  # listed among tars with errors
    result = runner.invoke(cli.app, ["status", str(out), "--counts"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "5 lines, 1 error records" in result.output
    assert "EN-B000001.tar" in result.output  # the table of tars with errors


def test_status_json(finished_output):
    _, out = finished_output
    result = runner.invoke(cli.app, ["status", str(out), "--json"])
    data = json.loads(result.output)
    assert (data["tars_done"], data["lines"], data["error_records"]) == (2, None, None)
    result = runner.invoke(cli.app, ["status", str(out), "--json", "--counts"])
    data = json.loads(result.output)
    assert (data["tars_done"], data["lines"], data["error_records"]) == (2, 5, 1)


def test_verify_passes_on_a_complete_output(finished_output):
    inp, out = finished_output
    result = runner.invoke(cli.app, ["verify", str(inp), str(out)], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "OK: every sample accounted for exactly once" in result.output


def test_verify_reports_lost_and_duplicated_samples_and_exits_1(finished_output):
    inp, out = finished_output
    first = out / "EN-B000000.jsonl"
    lines = first.read_text(encoding="utf-8").splitlines(keepends=True)
    first.write_text(
        lines[0] + lines[0] + lines[1], encoding="utf-8"
    )  # lose the third, repeat the first
    result = runner.invoke(cli.app, ["verify", str(inp), str(out)], terminal_width=160)
    assert result.exit_code == ExitCode.INCOMPLETE, result.output
    assert "PROBLEMS FOUND" in result.output
    assert "1 lost, 1 duplicated" in result.output
    data = json.loads(runner.invoke(cli.app, ["verify", str(inp), str(out), "--json"]).output)
    assert data["ok"] is False and data["lost_samples"] == 1 and data["duplicate_keys"] == 1


def test_verify_reports_a_tar_without_output(finished_output):
    inp, out = finished_output
    (out / "EN-B000001.jsonl").unlink()
    result = runner.invoke(cli.app, ["verify", str(inp), str(out), "--json"])
    assert result.exit_code == ExitCode.INCOMPLETE
    assert json.loads(result.output)["tars_missing_output"] == ["EN-B000001.tar"]


IMPORT_ALL_BUT_TUI = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    import tartok_tui

    names = [m.name for m in pkgutil.walk_packages(tartok_tui.__path__, "tartok_tui.")
             if not m.name.startswith("tartok_tui.tui") and not m.name.endswith("__main__")]
    for name in names:
        importlib.import_module(name)
    print(len(names), sorted(m for m in sys.modules if m == "textual" or m.startswith("textual.")))
    """
)


def test_nothing_outside_the_tui_package_imports_textual():
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_BUT_TUI],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().split(" ", 1)
    assert int(count) > 20  # the walk found the engine, not an empty package
    assert loaded == "[]", result.stdout


def test_status_names_partial_and_failed_tars(finished_output):
    _, out = finished_output
    partial = out / ".partial" / "out" / "EN-B000002.jsonl.host-123-7.part"
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text('{"key": "x"}\n', encoding="utf-8")
    summary = {"exit_code": 1, "exit_reason": "1 tars failed, 0 unfinished",
               "tars": [{"tar": "EN-B000003.tar", "status": "failed", "reason": "killed 3 workers"}]}  # fmt: skip
    (out / "run-summary.json").write_text(json.dumps(summary), encoding="utf-8")
    result = runner.invoke(cli.app, ["status", str(out)], terminal_width=120)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("partial") and "EN-B000002.tar" in line for line in lines), (
        result.output
    )
    assert any(line.startswith("failed") and "EN-B000003.tar" in line for line in lines), (
        result.output
    )
    assert any("exit code 1: 1 tars failed" in line for line in lines), result.output


def test_a_run_with_only_the_required_options_gets_every_default(captured):
    result = runner.invoke(cli.app, ["run", "-i", "in", "-o", "out", "-m", "m"])
    assert result.exit_code == 0, result.output
    ((config, tui),) = captured
    assert tui
    assert config == RunConfig(Path("in"), Path("out"), "m")


def test_storage_options_are_parsed_as_json_and_never_echoed_when_bad(captured):
    good = ["run", "-i", "in", "-o", "out", "-m", "m", "--storage-options", '{"anon": true}']
    assert runner.invoke(cli.app, good).exit_code == 0
    assert captured[0][0].storage_options == {"anon": True}
    secret = "AKIA-very-secret"
    bad = ["run", "-i", "in", "-o", "out", "-m", "m", "--storage-options", f'{{"key": "{secret}"']
    result = runner.invoke(cli.app, bad)
    assert result.exit_code == ExitCode.BAD_ARGS
    assert "not valid JSON" in result.output and secret not in result.output


def _table_rows(text: str) -> list[list[str]]:
    """Cells of every row of a rich table rendered with box characters."""
    return [
        [cell.strip() for cell in line.strip().strip("┃│").split("┃" if "┃" in line else "│")]
        for line in text.splitlines()
        if line.strip().startswith(("┃", "│"))
    ]


def test_verify_problem_table_puts_every_figure_under_its_header(finished_output):
    inp, out = finished_output
    first = out / "EN-B000000.jsonl"
    lines = first.read_text(encoding="utf-8").splitlines(keepends=True)
    first.write_text(lines[0] + lines[0] + lines[1], encoding="utf-8")  # lose one, repeat one
    result = runner.invoke(cli.app, ["verify", str(inp), str(out)], env={"COLUMNS": "200"})
    header, row = _table_rows(result.output)
    cells = dict(zip(header, row, strict=True))
    assert cells["tar"] == "EN-B000000.tar"
    assert (cells["expected"], cells["lines"], cells["errors"]) == ("3", "3", "0")
    assert (cells["lost"], cells["dup"], cells["unknown"]) == ("1", "1", "0")
    assert cells["note"].startswith("e.g. ")


def test_verify_says_which_range_it_checked_and_that_the_environment_narrowed_it(
    finished_output,
):
    inp, out = finished_output
    plain = runner.invoke(cli.app, ["verify", str(inp), str(out)], terminal_width=200)
    assert "range: tars [0, the end) of the sorted list, 2 in range" in plain.output
    narrowed = runner.invoke(
        cli.app, ["verify", str(inp), str(out)], env={"TARTOK_FROM_INDEX": "1"}, terminal_width=200
    )
    assert narrowed.exit_code == 0, narrowed.output
    assert "range: tars [1, the end) of the sorted list, 1 in range" in narrowed.output
    assert "set by TARTOK_FROM_INDEX in the environment" in narrowed.output
    empty = runner.invoke(cli.app, ["verify", str(inp), str(out), "--from-index", "5"])
    assert empty.exit_code == ExitCode.BAD_ARGS and "no tars in" in empty.output
