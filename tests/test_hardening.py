"""Bad input through the CLI, as a user would give it: one clear error line, a non-zero exit code,
nothing written outside the results folder, and a damaged store reported, never skipped silently.
"""

from __future__ import annotations

import json
import os
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bench_cli.cli import app
from bench_cli.config import parse_value, read_yaml
from bench_cli.results import store
from bench_cli.results.store import load_records, record_path, safe_filename
from tests.results import make_record, suite, write_all

runner = CliRunner()

SUITE = """\
name: hard
tasks:
  - name: rosenbrock
    id: {task_id}
    budget: {{steps: 4, eval_interval: 2}}
optimizers:
  - name: adamw
{extra}"""


def bench(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def error_lines(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("error:")]


def one_line_error(res, *fragments: str) -> str:
    """The run failed with exit 1 and exactly one error line (no traceback) holding ``fragments``."""
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    (line,) = error_lines(res)
    for fragment in fragments:
        assert fragment in line, line
    return line


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


# -- 1. path traversal ------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["../../../x", "/abs/x", "a/b", ".hidden", "''"])
def test_suite_task_id_that_would_leave_the_folder_is_refused(tmp_path: Path, task_id) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(task_id=json.dumps(task_id), extra=""))
    one_line_error(bench("suite", "validate", path), "tasks[0].id", "letters, digits")


def test_tier_name_that_would_leave_suite_runs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(task_id="rb", extra='tiers:\n  "/../..": {seeds: [0]}\n'))
    one_line_error(bench("suite", "validate", path), "tiers", "/../..")
    path.write_text(SUITE.format(task_id="rb", extra="tiers:\n  smoke-1: {seeds: [0]}\n"))
    assert bench("suite", "validate", path).exit_code == 0


def test_a_valid_label_like_task_id_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(task_id='"lm-small(preset=tiny,lr=1e-3)"', extra=""))
    res = bench("suite", "validate", path)
    assert res.exit_code == 0, res.output


def test_plugin_optimizer_named_like_a_path_is_refused_at_registration(tmp_path: Path) -> None:
    plugin = tmp_path / "evil.py"
    plugin.write_text(
        textwrap.dedent(
            """
            import torch
            from bench_cli.registry import OPTIMIZERS

            @OPTIMIZERS.register("../../x")
            class Evil(torch.optim.SGD):
                def __init__(self, params, lr=1e-3):
                    super().__init__(params, lr=lr)
            """
        )
    )
    out = tmp_path / "deep" / "er" / "out"
    res = bench(
        "run", "--plugin", plugin, "--opt", "../../x", "--task", "rosenbrock", "--steps", "2",
        "--out", out, "--quiet",
    )  # fmt: skip
    one_line_error(res, "'../../x'", "refused")
    assert files_under(tmp_path) == {plugin}  # nothing written, inside --out or outside it


def test_safe_filename_keeps_safe_names_and_never_leaves_the_folder(tmp_path: Path) -> None:
    for name in ("lm-small(preset=tiny)__adamw__seed0__0123456789", "rosenbrock(x0=-3.0)"):
        assert safe_filename(name) == name
    names = ["../../x", "/etc/passwd", "a/b", "a\\b", "..", ".", "", "x" * 300, "a b", "a-b"]
    files = {safe_filename(n) for n in names}
    assert len(files) == len(names)  # a slug plus a hash: different names, different files
    for name in names:
        path = record_path(tmp_path, name)
        assert path.parent == tmp_path and re.fullmatch(store.NAME_PATTERN, path.stem)
        assert len(path.name.encode()) <= 255


def test_plot_keeps_figures_of_a_hostile_task_id_inside_the_out_folder(tmp_path: Path) -> None:
    # one hostile id per task: runs of two tasks under one id are refused as ambiguous
    records = [r.model_copy(update={"task_id": f"../../../escaped-{r.task}"}) for r in suite((0,))]
    results = write_all(tmp_path / "a" / "b" / "res", records)
    out = tmp_path / "a" / "b" / "res" / "figs"
    res = bench("plot", results, "--out", out, "--format", "svg")
    assert res.exit_code == 0, res.output
    written = files_under(tmp_path) - files_under(results)
    assert written == set(), written  # everything new is under results/figs
    figures = files_under(out)
    assert any("escaped" in p.name for p in figures) and len(figures) >= 3


# -- 2. damaged records -----------------------------------------------------------------------


def _truncated(path: Path) -> None:
    text = make_record("lm", "adamw", 7, 4000.0).model_dump_json(indent=1)
    path.write_text(text[: len(text) // 2])


DAMAGE = {
    "truncated": (_truncated, "not valid JSON"),
    "empty": (lambda p: p.write_text(""), "is empty"),
    "binary": (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00"), "not UTF-8"),
    "list": (lambda p: p.write_text("[1, 2, 3]"), "JSON list, not a run record"),
    "wrong-schema": (lambda p: p.write_text('{"run_id": "x", "curve": 3}'), "not a run record"),
    "folder": (lambda p: p.mkdir(), "is a folder, not a regular file"),
    "fifo": (lambda p: os.mkfifo(p), "FIFO"),
    # values no run can have (a hand edit): they would rank first, "33x better"
    "negative-tokens": (
        lambda p: _edited(p, tokens_to_target=-50.0),
        "tokens_to_target: Input should be greater than or equal to 0",
    ),
    "infinite-tokens": (
        lambda p: _edited(p, tokens_to_target=float("inf")),
        "tokens_to_target: Input should be a finite number",
    ),
    "nan-seconds": (
        lambda p: _edited(p, seconds_to_target=float("nan")),
        "seconds_to_target: Input should be a finite number",
    ),
    "negative-steps": (lambda p: _edited(p, steps_done=-1), "steps_done: Input should be greater"),
    "newer-schema": (
        lambda p: _edited(p, schema_version=99),
        "was written by a newer bench (record schema 99; this one reads 1); upgrade bench",
    ),
}


def _edited(path: Path, **values) -> None:
    """A whole record, with ``values`` written over its fields (JSON allows NaN and Infinity)."""
    data = json.loads(make_record("lm", "lion", 7, 4000.0).model_dump_json())
    path.write_text(json.dumps({**data, **values}))


def _damaged_results(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    results = write_all(tmp_path / "res", suite((0, 1)))
    bad = results / "sub" / f"{kind}.json"
    bad.parent.mkdir()
    DAMAGE[kind][0](bad)
    return results, bad


@pytest.mark.parametrize("kind", sorted(DAMAGE))
@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_readers_name_each_damaged_file_and_fail(tmp_path: Path, kind: str, command: str) -> None:
    results, bad = _damaged_results(tmp_path, kind)
    res = bench(command, results)
    one_line_error(res, "1 file", "--skip-damaged")
    (named,) = [line for line in res.stderr.splitlines() if line.startswith("damaged:")]
    assert str(bad) in named and DAMAGE[kind][1] in named
    assert res.stdout == ""
    ok = bench(command, results, "--skip-damaged")
    assert ok.exit_code == 0, ok.output
    (warning,) = [line for line in ok.stderr.splitlines() if line.startswith("warning:")]
    assert str(bad) in warning and DAMAGE[kind][1] in warning
    assert ok.stdout == bench(command, write_all(tmp_path / "clean", suite((0, 1)))).stdout


def test_plot_names_a_damaged_file(tmp_path: Path) -> None:
    results, bad = _damaged_results(tmp_path, "truncated")
    one_line_error(bench("plot", results), "--skip-damaged")
    assert not (results / "plots").exists()
    ok = bench("plot", results, "--skip-damaged", "--format", "svg")
    assert ok.exit_code == 0 and str(bad) in ok.stderr


def test_unreadable_record_permission_denied(tmp_path: Path, monkeypatch) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    locked = next(results.glob("*.json"))
    real_open = os.open

    def deny(path, *args, **kwargs):  # root reads any file: deny this one as a user's OS would
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(store.os, "open", deny)
    res = bench("leaderboard", results)
    one_line_error(res)
    assert f"damaged: {locked}: permission denied" in res.stderr


def test_check_fails_when_a_record_it_needs_is_unreadable(tmp_path: Path) -> None:
    base = write_all(tmp_path / "base", suite())
    new = write_all(tmp_path / "new", suite())
    regression = next(new.glob("lm__fast__seed0*.json"))
    regression.write_text(regression.read_text()[:100])  # the record that would show a change
    res = bench("check", new, "--against", base)
    one_line_error(res, "cannot check", "repair or remove")
    assert f"damaged: {regression}" in res.stderr
    res = bench("check", base, "--against", new)  # the damaged side is the baseline
    one_line_error(res, "cannot check")


def test_check_on_a_wrong_schema_record_is_one_line(tmp_path: Path) -> None:
    base = write_all(tmp_path / "base", suite())
    new = write_all(tmp_path / "new", suite())
    (new / "odd.json").write_text(json.dumps({"run_id": "odd", "task": 3}))
    res = bench("check", new, "--against", base)
    one_line_error(res, "cannot check")
    assert "odd.json: is not a run record" in res.stderr


def test_a_record_with_fields_cut_out_is_damaged_not_read_with_defaults(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite())
    cut = next(results.glob("lm__fast__seed0*.json"))
    data = json.loads(cut.read_text())
    del data["curve"], data["best_metrics"]  # the model's defaults ([] and {}) would hide this
    cut.write_text(json.dumps(data))
    res = bench("leaderboard", results)
    one_line_error(res, "cannot be read as run records")
    assert f"damaged: {cut}: is not a run record: best_metrics: Field required" in res.stderr


def test_a_nested_copy_of_the_results_does_not_double_trials(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0, 1)))
    before = bench("export", results, "--format", "json").stdout
    copy = results / "backup"
    write_all(copy, suite((0, 1)))
    res = bench("export", results, "--format", "json")
    assert res.exit_code == 0 and res.stdout == before  # same trials, same numbers
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == len(suite((0, 1))) and all("a copy of" in w for w in warnings)
    check = bench("check", results, "--against", write_all(tmp_path / "base", suite((0, 1))))
    assert check.exit_code == 0 and check.stderr.count("a copy of") == len(suite((0, 1)))
    changed = next(copy.glob("lm__adamw__seed0*.json"))
    data = json.loads(changed.read_text())
    data["status"] = "diverged"
    changed.write_text(json.dumps(data))
    one_line_error(bench("leaderboard", results), "stored twice with different contents")


def test_suite_side_files_and_exports_are_not_damaged_records(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    assert bench("export", results, "--format", "json", "--out", results / "t.json").exit_code == 0
    (results / "calibration.json").write_text("{}")
    res = bench("leaderboard", results)
    assert res.exit_code == 0 and "damaged" not in res.output


# -- 3. one-line errors for bad YAML ----------------------------------------------------------


def test_binary_suite_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"name: x\n\xff\xfe\x00\x01tasks: []\n")
    one_line_error(bench("suite", "validate", path), "not UTF-8")


def test_suite_file_that_is_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    os.mkfifo(path)
    one_line_error(bench("suite", "validate", path), "not a regular file")


def test_yaml_key_that_is_a_list_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("{? [1, 2] : 3}\n")
    one_line_error(bench("suite", "validate", path), "key must be a plain name", "line 1")


def test_yaml_alias_bomb_is_refused_quickly_with_a_short_message(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\ntasks: *a8\n")
    assert path.stat().st_size < 1024  # 9**9 strings once expanded
    res = bench("suite", "validate", path)
    line = one_line_error(res, "expands to more than")
    assert len(res.output) < 400 and len(line) < 300


def test_yaml_self_referencing_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text("tasks: &t [*t]\n")
    one_line_error(bench("suite", "validate", path), "contains it")


def test_long_values_are_cut_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(task_id="rb", extra=f"seeds: ['{'x' * 5000}']\n"))
    line = one_line_error(bench("suite", "validate", path), "seeds")
    assert len(line) < 300


# -- 4. validation that agrees with itself -----------------------------------------------------


def run_rosenbrock(tmp_path: Path, *extra: str, steps: str | None = "3"):
    out = tmp_path / "out"
    budget = ["--steps", steps] if steps else []
    res = bench("run", "--opt", "adamw", "--task", "rosenbrock", *budget, "--out", out, "--quiet",
                *extra)  # fmt: skip
    return res, out


@pytest.mark.parametrize(
    ("value", "says"),
    [("inf", "lr must be a finite number"), ("1e999", "finite"), ("true", "not true/false"),
     (".nan", "finite"), ("-.inf", "finite")],
)  # fmt: skip
def test_non_finite_or_boolean_learning_rates_are_refused(tmp_path: Path, value, says) -> None:
    res, out = run_rosenbrock(tmp_path, "--set", f"lr={value}")
    one_line_error(res, says)
    assert not out.exists() or not any(out.iterdir())


def test_boolean_weight_decay_is_refused(tmp_path: Path) -> None:
    res, _ = run_rosenbrock(tmp_path, "--set", "weight_decay=false")
    one_line_error(res, "weight_decay")


def test_set_parses_values_exactly_like_a_yaml_file(tmp_path: Path) -> None:
    for text in ["[0.9, 1e-1]", "1e-3", "3.0e-4", "null", "true", "[1, 2]", "cosine", "0x10", ""]:
        assert parse_value(text) == read_yaml(f"v: {text}\n", "f")["v"], text
    res, out = run_rosenbrock(tmp_path, "--set", "betas=[0.9, 1e-1]")
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert record["hparams"]["betas"] == [0.9, 0.1]


def test_set_with_invalid_yaml_says_so(tmp_path: Path) -> None:
    res, _ = run_rosenbrock(tmp_path, "--set", "betas=[0.9, 0.99")
    one_line_error(res, "--set betas", "invalid YAML")


@pytest.mark.parametrize("steps", [str(10**9 + 1), str(10**23)])
def test_huge_step_counts_are_refused(tmp_path: Path, steps: str) -> None:
    res, out = run_rosenbrock(tmp_path, steps=steps)
    one_line_error(res, "steps", "less than or equal to 1000000000")
    assert not out.exists()
    res, out = run_rosenbrock(tmp_path, "--set", f"run.steps={steps}", steps=None)
    one_line_error(res, "steps", "less than or equal to 1000000000")


def test_data_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    for data in ("/dev/zero", str(fifo)):
        res = bench(
            "run", "--opt", "adamw", "--task", "lm-small", "--steps", "2", "--data", data,
            "--out", tmp_path / "o", "--quiet",
        )  # fmt: skip
        one_line_error(res, "is not a regular file")
    res = bench(
        "run", "--opt", "adamw", "--task", "lm-small", "--steps", "2", "--set",
        "val_data=/dev/zero", "--out", tmp_path / "o", "--quiet",
    )  # fmt: skip
    one_line_error(res, "is not a regular file", "val_data")
    for task in ("vit-small", "vit-small --set dataset=cifar10"):
        name, *more = task.split()
        res = bench("run", "--opt", "adamw", "--task", name, *more, "--steps", "2", "--data",
                    "/dev/zero", "--out", tmp_path / "o", "--quiet")  # fmt: skip
        one_line_error(res, "is not a regular file")


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="reads Linux's MemAvailable")
@pytest.mark.parametrize("size", ["batch_size=1000000000", "n_embd=1000000"])
def test_sizes_that_cannot_fit_in_memory_are_refused_before_allocating(tmp_path, size) -> None:
    out = tmp_path / "o"
    res = bench("run", "--opt", "adamw", "--task", "lm-small", "--set", size, "--steps", "2",
                "--device", "cpu", "--out", out, "--quiet")  # fmt: skip
    one_line_error(res, "needs about", "GiB available", size)
    assert not out.exists()


# -- 5. terminal output -----------------------------------------------------------------------

HOSTILE = "lm\x1b[31m\x1b]0;pwned\x07\x1b[2J\rX\x08\x9b"


def test_control_characters_never_reach_the_terminal(tmp_path: Path) -> None:
    records = [r.model_copy(update={"task_id": HOSTILE + r.task}) for r in suite((0,))]
    results = write_all(tmp_path / "res", records)
    for args in (
        ["leaderboard", results],
        ["export", results],
        ["export", results, "--format", "csv"],
    ):
        res = bench(*args)
        assert res.exit_code == 0, res.output
        assert "lm" in res.stdout and "pwned" not in res.stdout
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", res.output), repr(res.output)


# -- 6. messages that say what is wrong -------------------------------------------------------


def test_out_under_a_file_says_the_file_is_not_a_folder(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line_error(
        bench("export", results, "--out", blocker / "x.md"), "is a file, not a folder"
    )
    assert "File exists" not in line
    one_line_error(bench("plot", results, "--out", blocker), "is a file, not a folder")
    res, _ = run_rosenbrock(tmp_path, "--out", str(blocker / "sub"))
    one_line_error(res, "is a file, not a folder")


def test_a_file_where_a_folder_is_expected(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    record = next(results.glob("*.json"))
    line = one_line_error(bench("leaderboard", record), "is a file, not a folder")
    assert "does not exist" not in line
    one_line_error(bench("check", results, "--against", record), "is a file, not a folder")
    one_line_error(bench("leaderboard", tmp_path / "nope"), "does not exist")


# -- 7. bench check says exactly what it compared ---------------------------------------------


def test_check_never_rounds_away_the_difference(tmp_path: Path) -> None:
    base = suite()  # lm / fast reaches the target at 2000, 2050 and 2100 tokens
    new = [r for r in base if not (r.task == "lm" and r.optimizer == "fast")]
    new += [make_record("lm", "fast", s, 2100.5) for s in (0, 1, 2)]  # just above the interval
    res = bench(
        "check", write_all(tmp_path / "new", new), "--against", write_all(tmp_path / "b", base),
        "--tolerance", "0",
    )  # fmt: skip
    assert res.exit_code == 1
    (line,) = [x for x in res.stderr.splitlines() if "lm / fast" in x]
    median, hi = re.search(r"to-target (\S+) against \S+ \[\S+, (\S+)\]", line).groups()
    assert median != hi, line
    assert "0% tolerance" in line


def test_a_passing_check_says_what_it_compared(tmp_path: Path) -> None:
    base = write_all(tmp_path / "b", suite())
    res = bench("check", write_all(tmp_path / "n", suite()), "--against", base)
    assert res.exit_code == 0, res.output
    n_runs = len(suite())
    assert (
        f"compared 2 tasks and 3 optimizers (6 task-optimizer pairs, {n_runs} runs against "
        f"{n_runs} baseline runs), tolerance 5%" in res.stdout
    )


def test_the_yaml_loader_is_the_suite_loader() -> None:
    # a guard for the parse tests above: PyYAML alone reads 1e-1 as text
    assert yaml.safe_load("v: 1e-1")["v"] == "1e-1" and read_yaml("v: 1e-1", "f")["v"] == 0.1


def test_only_true_and_false_are_booleans_so_off_reaches_a_choice(tmp_path: Path) -> None:
    """YAML 1.1 reads yes/no/on/off as booleans: ``autocast: off`` (a choice of auto, off and
    bf16) arrived as False and was refused."""
    assert [read_yaml(f"v: {t}", "f")["v"] for t in ("off", "on", "yes", "no")] == [
        "off", "on", "yes", "no"
    ]  # fmt: skip
    assert [read_yaml(f"v: {t}", "f")["v"] for t in ("true", "False", "TRUE")] == [
        True, False, True
    ]  # fmt: skip
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: b\ntasks:\n  - name: lm-markov\n    options: {preset: tiny, autocast: off}\n"
        "    budget: {steps: 2, eval_interval: 1}\n    settings: {compile: no}\n"
        "optimizers:\n  - name: adamw\n"
    )
    res = bench("suite", "run", suite, "--out", tmp_path / "o", "--quiet")
    assert res.exit_code == 0, res.output
    (record,) = load_records(tmp_path / "o")
    assert record.task_options["autocast"] == "off"
    assert record.settings["compile"] is False  # a true/false field still takes "no"


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-"])
def test_a_command_started_without_stdout_or_stderr_still_runs(tmp_path: Path, closed) -> None:
    # a process started with a standard stream closed (a daemon, some schedulers) has it as None
    import shlex
    import subprocess
    import sys

    out = tmp_path / "out"
    run = [sys.executable, "-m", "bench_cli", "run", "--opt", "adamw", "--task", "noisy-quadratic"]
    line = shlex.join([*run, "--steps", "5", "--out", str(out)])
    res = subprocess.run(["bash", "-c", f"{line} {closed}"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (record,) = out.glob("noisy-quadratic*.json")
    assert json.loads(record.read_text())["status"] == "done"
    # an export to a closed stdout is refused with its fix, on stderr
    line = shlex.join([sys.executable, "-m", "bench_cli", "export", str(out)])
    res = subprocess.run(["bash", "-c", f"{line} >&-"], capture_output=True, text=True)
    assert res.returncode == 1
    refusal = "error: the standard output is closed; pass --out FILE to write to a file"
    assert res.stderr.strip() == refusal


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--seed", ""], "--seed takes a number or several, like 0,1,2; got ''"),
        (["--seed", " , "], "--seed takes a number or several"),
        (["--dry-run", "--jobs", "0"], "executor setting jobs: Input should be greater than"),
    ],
)
def test_bad_run_options_are_one_line_and_write_nothing(tmp_path: Path, args, fragment) -> None:
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", "--opt", "adamw", "--task", "rosenbrock", *args,
                              "--out", str(out)])  # fmt: skip
    one_line_error(res, fragment)
    assert not out.exists()


def test_an_executor_count_written_as_true_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw}]\nexecutor: {jobs: true}\n"
    )
    res = runner.invoke(app, ["suite", "run", str(path), "--out", str(tmp_path / "out")])
    one_line_error(res, "executor.jobs: Input should be a valid integer")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--opt", "adamw", "--task", "noisy-quadratic", "--steps", "3", "--out", ""],
        ["run", "--opt", "adamw", "--task", "noisy-quadratic", "--steps", "3", "--out="],
        ["suite", "run", "SUITE", "--out", ""],
        ["export", ".", "--out", ""],
    ],
)
def test_an_empty_out_is_refused_and_nothing_is_written(tmp_path, monkeypatch, command) -> None:
    """``--out "$DIR"`` with DIR unset: not the current folder."""
    (tmp_path / "s.yaml").write_text(SUITE.format(task_id="r", extra=""))
    monkeypatch.chdir(tmp_path)
    res = bench(*(str(tmp_path / "s.yaml") if a == "SUITE" else a for a in command))
    assert res.exit_code == 2, res.output
    assert "'--out': it is empty; name a file or folder" in " ".join(res.output.split())
    assert [p.name for p in tmp_path.iterdir()] == ["s.yaml"]


@pytest.mark.parametrize(
    ("command", "fragments"),
    [
        (["run", "--foo"], ["No such option: --foo", "see 'bench run --help'"]),
        (["run", "--opt"], ["Option '--opt' requires an argument"]),
        (["runn"], ["No such command 'runn'. Did you mean 'run'?", "See 'bench --help'"]),
        (["run", "--opt", "adamw"], ["Missing option '--task'", "see 'bench run --help'"]),
        (["suite", "run"], ["Missing argument 'file'", "see 'bench suite run --help'"]),
        (["run", "--opt", "adamw", "--task", "noisy-quadratic", "--steps", "abc"], ["'--steps'"]),
        (["--bogus"], ["No such option: --bogus", "see 'bench --help'"]),
    ],
)
def test_a_mistyped_command_line_is_one_line_and_exit_2(tmp_path, monkeypatch, command, fragments):
    monkeypatch.chdir(tmp_path)
    res = bench(*command)
    assert res.exit_code == 2, res.output
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith("error: ")
    for fragment in fragments:
        assert fragment in line, line
    assert list(tmp_path.iterdir()) == []


def test_a_bare_group_still_prints_its_help() -> None:
    res = bench("suite")
    assert res.exit_code == 2
    assert "Usage: bench suite" in res.output and "error:" not in res.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "lr=-1"], "error: optimizer 'adamw': lr must be a finite number >= 0, got -1"),
        (["--set", "n_layer=0"], "error: task 'lm-small' option n_layer: Input should be greater"),
        (["--data", "DIR/none.txt"], "error: data 'DIR/none.txt' does not exist; fix the path"),
        (["--set", "lr=-1", "--dry-run"], "error: optimizer 'adamw': lr must be a finite number"),
    ],
)
def test_bench_run_errors_name_no_suite_key_path(tmp_path, monkeypatch, extra, message) -> None:
    """bench run plans a one-task suite the user never wrote: no ``tasks[0] (lm-small):``."""
    monkeypatch.chdir(tmp_path)
    extra = [a.replace("DIR", str(tmp_path)) for a in extra]
    res = bench("run", "--opt", "adamw", "--task", "lm-small", "--set", "preset=tiny", *extra)
    line = one_line_error(res)
    assert line.startswith(message.replace("DIR", str(tmp_path))), line
    assert list(tmp_path.iterdir()) == []


def test_bench_run_calibrates_a_target_as_a_suite_does(tmp_path) -> None:
    """target=calibrate: the baseline's calibration runs first, then every optimizer is scored
    against its relaxed best (the command failed with an IndexError)."""
    out = tmp_path / "o"
    res = bench("run", "--opt", "adamw,lion", "--task", "noisy-quadratic", "--set", "preset=tiny",
                "--set", "target=calibrate", "--out", out, "--quiet")  # fmt: skip
    assert res.exit_code == 0, res.output
    (calibration,) = json.loads((out / "calibration.json").read_text()).values()
    (baseline_best,) = calibration["baseline_values"]
    assert calibration["value"] == pytest.approx(baseline_best * 1.01)  # the default margin
    scored = [r for r in load_records(out) if r.role == "score"]
    assert sorted(r.optimizer for r in scored) == ["adamw", "lion"]
    assert all(r.target.value == calibration["value"] for r in scored)


@pytest.mark.parametrize("name", ["../../escape", "ABS/abs", "a b"])
def test_a_suite_name_that_is_no_file_name_is_refused(tmp_path, name) -> None:
    """The suite's name names its tracker runs' folders: '../../x' wrote outside --out."""
    name = name.replace("ABS", str(tmp_path))
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(task_id="r", extra="").replace("name: hard", f"name: '{name}'"))
    res = bench("suite", "run", path, "--out", tmp_path / "o", "--log", "tensorboard")
    one_line_error(res, "name: may hold only letters, digits", repr(name)[:12])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize(
    ("where", "says"),
    [
        (["--set", "steps=true"], "run setting: steps is a number, not true/false (got True)"),
        (["--set", "grad_clip=true"], "run setting: grad_clip is a number, not true/false"),
        (["--set", "x0=false"], "task 'rosenbrock' option: x0 is a number, not true/false"),
        (["SUITE"], "tasks[0].budget: steps is a number, not true/false (got True)"),
    ],
)
def test_true_and_false_are_not_numbers(tmp_path, where, says) -> None:
    """pydantic reads True as 1: --set steps=true trained one step."""
    out = tmp_path / "o"
    if where == ["SUITE"]:
        path = tmp_path / "s.yaml"
        path.write_text(SUITE.format(task_id="r", extra="").replace("steps: 4", "steps: true"))
        res = bench("suite", "run", path, "--out", out)
    else:
        res = bench("run", "--opt", "adamw", "--task", "rosenbrock", *where, "--out", out)
    one_line_error(res, says)
    assert not out.exists()


def test_a_margin_that_would_overflow_the_target_is_refused_before_calibrating(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SUITE.format(task_id="r", extra="").replace(
        "    budget:", "    target: calibrate\n    margin: 1e308\n    budget:"))  # fmt: skip
    res = bench("suite", "run", path, "--out", tmp_path / "o")
    one_line_error(res, "tasks[0].margin: Input should be less than or equal to 100")
    assert not (tmp_path / "o").exists()


def test_a_reused_record_is_read_against_the_target_asked_for(tmp_path) -> None:
    """The target is not part of a run's id (it only decides where the curve is read): a second
    bench run with another target reuses the run and reads it against the new target."""
    out = tmp_path / "o"
    args = ["run", "--opt", "adamw", "--task", "noisy-quadratic", "--set", "preset=tiny",
            "--out", out, "--quiet"]  # fmt: skip
    assert bench(*args, "--set", "target=5").exit_code == 0
    (first,) = load_records(out)
    assert first.steps_to_target == 0  # the starting gap is below 5
    res = bench(*args, "--set", "target=0.0001")
    assert res.exit_code == 0 and "reused 1 records" in res.stderr
    (again,) = load_records(out)
    assert again.run_id == first.run_id and again.target.value == 0.0001
    assert min(p.metrics["gap"] for p in again.curve) > 0.0001 and again.steps_to_target is None
    assert "gap <= 0.0001" in res.stdout


# -- 7. bench report's --out, as bench export's -----------------------------------------------


def test_report_out_that_is_a_folder_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    folder = tmp_path / "d"
    folder.mkdir()
    for out in (folder, f"{folder}/"):
        res = bench("report", results, "--out", out)
        one_line_error(res, f"--out {str(folder)!r} is a folder", "give a file name")
        assert res.stdout == ""
        assert list(folder.iterdir()) == [] and not (results / "report.html").exists()


def test_report_into_a_read_only_folder_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    locked = tmp_path / "ro"
    locked.mkdir()
    real_open = os.open

    def deny(path, *args, **kwargs):  # root writes anywhere: refuse as a user's read-only folder
        if Path(path).parent == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(store.os, "open", deny)
    res = bench("report", results, "--out", locked / "r.html")
    one_line_error(res, f"cannot write {str(locked / 'r.html')!r}", "Permission denied")
    assert res.stdout == "" and list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_report_into_a_really_read_only_folder(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        res = bench("report", results, "--out", locked / "r.html")
        one_line_error(res, "cannot write", "Permission denied")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "command, text, default",
    [
        ("report", "The HTML file to write", "DIR/report.html"),
        ("plot", "Folder for the figures", "DIR/plots"),
    ],
)
def test_out_help_shows_its_default_and_no_stray_dot(command, text, default) -> None:
    """``[default: ...]`` written into a help text is rich markup: it vanished, leaving " ."."""
    res = runner.invoke(app, [command, "--help"])
    assert res.exit_code == 0
    flat = " ".join(res.output.replace("│", " ").split())  # help text wraps in its box
    assert f"{text}. [default: ({default})]" in flat, flat
    assert f"{text} ." not in flat


def test_a_report_named_as_another_format_and_a_missing_history_are_one_line(tmp_path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    res = bench("report", results, "--out", tmp_path / "r.pdf")
    one_line_error(res, "the report is one HTML page; give a .html name")
    assert not (tmp_path / "r.pdf").exists()
    plan = Path(__file__).resolve().parents[1] / "suites" / "ci-smoke.yaml"
    one_line_error(bench("plan", plan, "--history", tmp_path / "none"), "does not exist")
    one_line_error(bench("plan", plan, "--history", plan), "is a file, not a folder")


def test_a_linked_folder_of_records_is_named_not_skipped_in_silence(tmp_path: Path) -> None:
    records = suite((0, 1))
    results = write_all(tmp_path / "res", [r for r in records if r.optimizer == "adamw"])
    store_ = write_all(tmp_path / "store", [r for r in records if r.optimizer != "adamw"])
    (results / "more").symlink_to(store_, target_is_directory=True)
    res = bench("leaderboard", results)
    warning = " ".join(res.stderr.split())
    assert f"warning: left out {results / 'more'}: a link to a folder, which is not followed" in (
        warning
    ), res.stderr


def test_runs_of_one_task_in_two_units_are_one_line(tmp_path: Path) -> None:
    """A speedup across tokens and steps would mean nothing (a hand edit, a changed plug-in)."""
    records = suite((0, 1))
    odd = records[0].model_copy(update={"unit": "steps"})
    results = write_all(tmp_path / "res", [odd, *records[1:]])
    for command in ("leaderboard", "export"):
        res = bench(command, results)
        one_line_error(res, f"has runs counted in different units: steps ({odd.run_id})")


# -- 8. the input folder first, and every --out alike ----------------------------------------


def test_report_of_a_file_says_it_is_a_file_not_a_folder(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    record = next(results.glob("*.json"))
    before = files_under(tmp_path)
    line = one_line_error(bench("report", record), f"{str(record)!r} is a file, not a folder")
    assert "no folder" not in line
    one_line_error(bench("report", tmp_path / "nope"), "does not exist", "pass the folder")
    assert files_under(tmp_path) == before and not (tmp_path / "nope").exists()


def test_plot_of_a_file_names_the_input_before_writing_anything(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    record = next(results.glob("*.json"))
    before = files_under(tmp_path)
    for out in ([], ["--out", tmp_path / "figs"]):
        res = bench("plot", record, *out)
        line = one_line_error(res, f"{str(record)!r} is a file, not a folder", "pass the folder")
        assert "cannot write" not in line and "--out" not in line
    one_line_error(bench("plot", tmp_path / "nope"), "does not exist")
    assert files_under(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


@pytest.mark.parametrize("command", ["export", "probe", "report"])
def test_the_input_folder_is_checked_before_out(tmp_path: Path, command: str) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    record = next(results.glob("*.json"))
    res = bench(command, record, "--out", tmp_path)  # both wrong: the input is named first
    one_line_error(res, f"{str(record)!r} is a file, not a folder")


def test_suite_status_of_a_missing_folder_or_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for path, says in ((tmp_path / "nope", "does not exist"), (tmp_path / "f", "is a file")):
        line = one_line_error(bench("suite", "status", path), says, "bench suite run")
        assert "holds no suite run" not in line
    one_line_error(bench("suite", "status", tmp_path), "holds no suite run")  # a folder: as was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_results_commands_create_a_missing_out_folder_alike(tmp_path: Path) -> None:
    from tests.results.test_probe import probed

    results = write_all(tmp_path / "res", suite((0,)))
    probed_runs = [probed(o, s, 0.3) for o in ("adamw", "x") for s in (0, 1)]
    probes = write_all(tmp_path / "probes", probed_runs)
    runs = {
        "export": ("export", results, "--out", tmp_path / "a" / "b" / "t.md"),
        "report": ("report", results, "--out", tmp_path / "c" / "d" / "r.html"),
        "probe": ("probe", probes, "--out", tmp_path / "e" / "f" / "p.md"),
        "plot": ("plot", results, "--out", tmp_path / "g" / "h"),
    }
    for name, args in runs.items():
        res = bench(*args)
        assert res.exit_code == 0, (name, res.output)
        out = Path(args[-1])
        assert out.is_dir() if name == "plot" else out.is_file(), name
        assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], name  # no temp


def test_a_failed_write_leaves_no_folder_it_created(tmp_path: Path, monkeypatch) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    real_open = os.open

    def deny(path, *args, **kwargs):  # the folders are made, the file cannot be
        if Path(path).parent == tmp_path / "new" / "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(store.os, "open", deny)
    for command, name in (("export", "t.md"), ("report", "r.html")):
        res = bench(command, results, "--out", tmp_path / "new" / "sub" / name)
        one_line_error(res, "cannot write", "Permission denied")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["res"], command


def test_probe_help_says_what_its_baseline_is_for() -> None:
    def flat_help(*command: str) -> str:
        res = runner.invoke(app, [*command, "--help"], terminal_width=200)
        return " ".join(res.output.replace("│", " ").split())

    probe_help = flat_help("probe")
    assert "speedup" not in probe_help  # probe computes none
    assert "--baseline <str> Optimizer the others' probe excess is compared with" in probe_help
    assert "paired by seed" in probe_help
    assert "speedups are measured against" in flat_help("leaderboard")  # theirs as it was


def test_out_through_a_link_replaces_its_target_and_a_device_is_refused(tmp_path: Path) -> None:
    results = write_all(tmp_path / "res", suite((0,)))
    target = tmp_path / "real.md"
    target.write_text("original")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    res = bench("export", results, "--out", link)
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and target.read_text() == bench("export", results).stdout
    pipe = tmp_path / "pipe"  # as a device would, it holds no file to replace
    os.mkfifo(pipe)
    for command in (["export", results], ["report", results], ["probe", results]):
        one_line_error(bench(*command, "--out", pipe), "is not a regular file")
    assert pipe.is_fifo()
