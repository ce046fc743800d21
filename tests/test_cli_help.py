"""Help text: flags show no value type, every command has help; shell completion is offered."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from bench_cli.cli import app

runner = CliRunner()


def _command_paths(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [path]
    if getattr(command, "commands", None):  # a group
        for name, sub in command.commands.items():
            out += _command_paths(sub, (*path, name))
    return out


def test_no_help_page_shows_a_value_type_after_a_flag() -> None:
    paths = _command_paths(typer.main.get_command(app))
    assert ("report",) in paths and ("suite", "schema") in paths and ("show",) in paths
    for path in paths:
        res = runner.invoke(app, [*path, "--help"], terminal_width=120)
        assert res.exit_code == 0, path
        assert "<bool>" not in res.output, path
        flat = " ".join(res.output.replace("│", " ").split())  # help text wraps in its box
        assert "Show this message and exit." in flat, path


def test_flags_still_work_as_flags() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("bench ")


def test_shell_completion_is_offered_and_prints_a_script(monkeypatch) -> None:
    res = runner.invoke(app, ["--help"], terminal_width=120)
    assert "--install-completion" in res.output and "--show-completion" in res.output
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # name the shell
    res = runner.invoke(app, ["--show-completion", "bash"], prog_name="bench")
    assert res.exit_code == 0
    assert "_BENCH_COMPLETE=complete_bash" in res.output and "complete " in res.output


def test_the_command_line_loads_without_torch_or_pandas_and_names_the_defaults() -> None:
    # every command imports the whole command line first: what the commands need (torch for
    # runs, pandas for tables) is imported by the commands, and the help still shows the
    # analysis commands' defaults, which their own modules use
    import subprocess
    import sys

    from bench_cli.results import check, export, leaderboard, probe

    code = "import sys, bench_cli.cli; print(sorted({'torch', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

    def flat_help(*command: str) -> str:
        res = runner.invoke(app, [*command, "--help"])
        return " ".join(res.output.replace("│", " ").split())  # help text wraps in its box

    shown = flat_help("leaderboard")
    assert f"folder, else {leaderboard.DEFAULT_BASELINE})" in shown
    assert ", ".join(export.WIDE) in shown
    assert ",".join(map(str, probe.DEFAULT_AFTER)) in flat_help("probe")
    assert f"[default: {check.DEFAULT_TOLERANCE}]" in flat_help("check")
