"""The README's tables say what the code does: options, exit codes, keys, error stages."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from tartok_tui.config import DisplayOptions, RunConfig
from tartok_tui.exit_codes import ExitCode
from tartok_tui.stages import Stage

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_every_run_option_is_in_the_options_table_and_nothing_else_is() -> None:
    rows = [line for line in _section("Options of `tartok-tui run`").splitlines()
            if line.startswith("| `")]  # fmt: skip
    listed = {opt for row in rows for opt in re.findall(r"(--[a-z][a-z-]*)", row.split("|")[1])}
    declared = {f"--{f.name.replace('_', '-')}" for cls in (RunConfig, DisplayOptions)
                for f in fields(cls)}  # fmt: skip
    assert listed == declared


def test_every_exit_code_is_in_the_exit_code_table() -> None:
    table = _section("Exit codes")
    listed = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.M)}
    assert listed == {int(code) for code in ExitCode}


def test_the_help_names_every_exit_code() -> None:
    from tartok_tui.cli import EXAMPLES
    from tartok_tui.exit_codes import SHORT

    assert set(SHORT) == set(ExitCode)
    line = next(line for line in EXAMPLES.splitlines() if line.startswith("[bold]Exit codes"))
    assert all(f"{int(code)} {SHORT[code]}" in line for code in ExitCode)


def test_every_dashboard_key_is_in_the_key_table() -> None:
    from tartok_tui.tui.actions import DASHBOARD_KEYS

    table = _section("The dashboard")
    listed = set(re.findall(r"`([^`]+)`", table.split("\n\n")[1]))
    shown = {k.keys for k in DASHBOARD_KEYS if k.show}
    spelled = {"question_mark": "?"}
    assert {spelled.get(key, key) for key in shown} <= listed


def test_every_error_stage_is_described() -> None:
    stages = set(re.findall(r"`([a-z_]+)`", _section("Output")))
    assert {str(s) for s in Stage} <= stages


def test_the_readme_test_command_is_what_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "uv run pytest" in README and "\nuv run pytest\n" in ci
