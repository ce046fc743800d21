"""YAML suites: schema errors with key paths, grids, tiers, resume (also after SIGKILL), the
folder's status per phase, folders of another suite, and the `bench suite` and `bench plan`
commands. The protocol's rules themselves are in test_protocol.py. Runs are tiny presets of the
noisy quadratic and Rosenbrock for a few dozen steps."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bench_cli import api, suite
from bench_cli.cli_suite import suite_app
from bench_cli.config import expand_grid, load_suite, parse_suite
from bench_cli.errors import BenchError, ConfigError
from bench_cli.plan import build_plan
from bench_cli.progress import Progress
from bench_cli.results.record import RunRecord
from bench_cli.results.store import read_record, record_path, write_record

ROOT = Path(__file__).resolve().parents[1]
NQ = "noisy-quadratic(preset=tiny)"

#: two optimizers with two configurations each: 4 tune cells (seed 2), then 2 x 2 scored cells;
#: with ``target: calibrate`` also 2 calibration cells (seeds 3, 4). One thread per run: on a
#: loaded machine, two threads make these tiny runs many times slower
SUITE = """
name: nq
seeds: [0, 1]
tasks:
  - name: noisy-quadratic
    options: {preset: tiny}
    budget: {steps: STEPS, eval_interval: INTERVAL}
    TARGET
optimizers:
  - name: adamw
    sweep: {lr: [0.1, 0.03]}
  - name: lion
    sweep: {lr: [0.01, 0.003]}
executor: {threads: 1}
"""
CALIBRATE = "target: calibrate\n    margin: 0.5"


def write_suite(
    tmp_path: Path, steps: int = 20, target: str = "", name: str = "s.yaml", interval: int = 10
) -> Path:
    path = tmp_path / name
    text = SUITE.replace("STEPS", str(steps)).replace("INTERVAL", str(interval))
    path.write_text(text.replace("TARGET", target))
    return path


def invalid(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        build_plan(parse_suite(text, "f.yaml"))
    return str(info.value)


def records_in(out: Path) -> dict[str, RunRecord]:
    return {p.stem: read_record(p) for p in out.glob("noisy-quadratic__*.json")}


def without_timings(record: RunRecord) -> dict:
    data = record.model_dump()
    timings = ("started_at", "finished_at", "train_seconds", "eval_seconds", "setup_seconds")
    for key in (*timings, "tokens_per_second", "seconds_to_target"):
        data.pop(key)
    data["env"].pop("load_average")
    data["env"].pop("git_sha")  # the checkout may move on while a test runs
    data["curve"] = [{k: v for k, v in p.items() if k != "seconds"} for p in data["curve"]]
    return data


class Count(Progress):
    """Counts the cells the executor starts and the ones it reuses."""

    def __init__(self) -> None:
        super().__init__(quiet=True)
        self.starts = 0

    def started(self, cell) -> None:
        self.starts += 1
        super().started(cell)


# -- schema -------------------------------------------------------------------------------------


def test_unknown_keys_are_refused_with_their_path() -> None:
    msg = invalid("tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw}, {name: lion, hp: {}}]")
    assert msg == "f.yaml: optimizers[1].hp: unknown key"
    msg = invalid("tasks: [{name: rosenbrock, budget: {step: 3}}]\noptimizers: [{name: adamw}]")
    assert "tasks[0].budget.step: unknown key" in msg
    msg = invalid(
        "tasks: [{name: rosenbrock, settings: {steps: 3, foo: 1}}]\noptimizers: [{name: adamw}]"
    )
    assert "tasks[0].settings.steps: write it as budget.steps" in msg
    assert "tasks[0].settings.foo: unknown run setting" in msg
    assert "optimizers: List should have at least 1 item" in invalid(
        "tasks: [{name: x}]\noptimizers: []"
    )
    msg = invalid("tasks: [{name: rosenbrock, target: calib}]\noptimizers: [{name: adamw}]")
    assert "tasks[0].target: expected a finite number or 'calibrate'" in msg
    msg = invalid("tasks: [{name: rosenbrock, target: .nan}]\noptimizers: [{name: adamw}]")
    assert "tasks[0].target: expected a finite number" in msg
    msg = invalid("tasks: [{name: rosenbrock, margin: 0.1}]\noptimizers: [{name: adamw}]")
    assert msg == "f.yaml: tasks[0].margin: only applies with target: calibrate"
    head = "tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw}]\n"
    assert "tuning.budget: Input should be 'equal' or 'unequal'" in invalid(
        head + "tuning: {budget: fair}"
    )
    assert "tuning.seeds: List should have at least 1 item" in invalid(head + "tuning: {seeds: []}")
    assert invalid(head + "tuning: {sedes: [3]}") == "f.yaml: tuning.sedes: unknown key"


def test_margin_defaults_to_one_percent() -> None:
    s = parse_suite("tasks: [{name: rosenbrock, target: calibrate}]\noptimizers: [{name: adamw}]")
    assert s.tasks[0].margin == 0.01 and s.tuning.budget == "equal"


def test_hyperparameters_are_checked_against_the_optimizer_with_their_path() -> None:
    head = "tasks: [{name: rosenbrock}]\noptimizers:\n  - {name: adamw}\n"
    msg = invalid(head + "  - {name: lion, hparams: {lrr: 1}}")
    assert msg.startswith("optimizers[1].hparams.lrr: optimizer 'lion' has no hyperparameter")
    assert "optimizers[1].sweep.foo:" in invalid(head + "  - {name: lion, sweep: {foo: [1]}}")
    msg = invalid(head + "  - {name: lion, hparams: {lr: [1.0e-3, 1.0e-2]}}")
    assert "optimizers[1].hparams.lr: a list in hparams is one value" in msg and "sweep" in msg
    msg = invalid(head + "  - {name: lion, sweep: {betas: [0.9, 0.99]}}")
    assert "optimizers[1].sweep.betas: " in msg and "list of lists" in msg
    # every configuration is resolved before anything runs
    sweeps = "tasks: [{name: rosenbrock}]\noptimizers:\n  - {name: adamw, sweep: {lr: [1, 2]}}\n"
    msg = invalid(sweeps + "  - {name: lion, sweep: {lr: [1.0e-3, -1]}}")
    assert (
        msg.startswith("optimizers[1] (lion {'lr': -1}) on tasks[0] (rosenbrock)") and "lr" in msg
    )
    assert "optimizers[1].name: unknown optimizer 'adamx'" in invalid(head + "  - {name: adamx}")
    assert invalid(head + "  - {name: adamw}") == (
        "optimizers[0] and optimizers[1] (adamw) on rosenbrock, seed 0 are the same run; remove one"
    )
    assert invalid(sweeps + "  - {name: lion, sweep: {lr: [0.1, 0.1]}}") == (
        "optimizers[1].sweep: lr=0.1 and lr=0.1 are the same run of lion (a value given twice, "
        "say); remove one"
    )
    assert invalid("tasks: [rosenbrock]\noptimizers: [{name: adamw}]") == (
        "f.yaml: tasks[0]: Input should be a mapping of keys to values (got 'rosenbrock')"
    )
    msg = invalid("tasks: [{name: rosenbrock, target: calibrate}]\noptimizers: [{name: lion}]")
    assert msg == "baseline: 'adamw' is not among the optimizers; calibrate needs it"


def test_malformed_yaml_names_line_and_column() -> None:
    with pytest.raises(
        ConfigError,
        match=r"f.yaml: invalid YAML at line 3, column 11: .* flow mapping at line 2, column 5",
    ):
        parse_suite("tasks:\n  - {name: rosenbrock\noptimizers: [{name: adamw}]\n", "f.yaml")
    with pytest.raises(ConfigError, match="line 2, column 1: key 'tasks' appears twice"):
        parse_suite("tasks: []\ntasks: []\n", "f.yaml")
    with pytest.raises(ConfigError, match="a suite is a mapping"):
        parse_suite("- rosenbrock\n", "f.yaml")
    s = parse_suite(
        "tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw, sweep: {lr: [1e-3, 2E-2]}}]"
    )
    assert s.optimizers[0].sweep["lr"] == [1e-3, 2e-2]  # YAML 1.1 would read strings


def test_example_suites_are_valid_files() -> None:
    paths = sorted((ROOT / "suites").glob("*.yaml"))
    assert {"ci-smoke", "valleys", "lm", "vit"} <= {p.stem for p in paths}
    for path in paths:
        s = load_suite(path)
        assert s.tasks and s.optimizers
    smoke = load_suite(ROOT / "suites" / "ci-smoke.yaml")
    assert smoke.default_tier == "smoke"
    names = {"adamw", "ademamix", "simplified-ademamix", "aggmo-adam", "lion", "schedule-free"}
    assert {o.name for o in smoke.optimizers} == names | {"mars"}
    # 4 tasks, of which rosenbrock is calibrated: adamw's 2 configurations tune on each task
    # (rosenbrock: seed-independent, one seed), then 7 optimizers x 4 tasks are scored on seed 0
    sizes = suite.validate_suite(ROOT / "suites" / "ci-smoke.yaml")
    assert sizes["smoke"] == {"tune": 8, "calibrate": 1, "score": 28}


@pytest.mark.parametrize("path", sorted((ROOT / "suites").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_suite_plans_under_every_tier(path: Path) -> None:
    sizes = suite.validate_suite(path)
    assert sizes and all(sum(per.values()) > 0 for per in sizes.values())


# -- grids and tiers ----------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_and_a_list_in_hparams_is_one_value() -> None:
    grid = expand_grid(
        {"betas": [0.9, 0.99], "eps": 1e-8},
        {"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 0.1]},
    )
    assert len(grid) == 6 and all(p["betas"] == [0.9, 0.99] for p in grid)
    assert grid[1] == {"betas": [0.9, 0.99], "eps": 1e-8, "lr": 1e-3, "weight_decay": 0.1}
    betas = expand_grid({}, {"betas": [[0.9, 0.99], [0.95, 0.98]]})
    assert betas == [{"betas": [0.9, 0.99]}, {"betas": [0.95, 0.98]}]
    assert expand_grid({"lr": 1.0}, {}) == [{"lr": 1.0}]
    text = SUITE.replace("STEPS", "30").replace("INTERVAL", "10").replace("TARGET", "")
    text = text.replace("    sweep: {lr: [0.01, 0.003]}\n", "    hparams: {betas: [0.9, 0.99]}\n")
    ademamix = (
        "  - name: ademamix\n    sweep: {betas: [[0.9, 0.999, 0.999], [0.9, 0.999, 0.9999]], "
    )
    ademamix += "alpha: [2.0, 5.0]}\ntuning: {budget: unequal}\n"
    text = text.replace("executor: {threads: 1}\n", ademamix)
    plan = build_plan(parse_suite(text))
    tune = plan.tune_cells()
    # 2 adamw + 4 ademamix configurations tune on seed 2; lion has one and does not tune
    assert [c.spec.optimizer for c in tune] == ["adamw"] * 2 + ["ademamix"] * 4
    assert {c.spec.seed for c in tune} == {2} and len({c.run_id for c in tune}) == 6
    assert [c.label for c in tune if c.spec.optimizer == "ademamix"] == [
        "betas=[0.9, 0.999, 0.999], alpha=2.0",
        "betas=[0.9, 0.999, 0.999], alpha=5.0",
        "betas=[0.9, 0.999, 0.9999], alpha=2.0",
        "betas=[0.9, 0.999, 0.9999], alpha=5.0",
    ]
    assert all(c.spec.config == {"lr": c.spec.hparams["lr"]} for c in tune[:2])
    score = plan.score_cells({}, {})  # before selection: each optimizer's first configuration
    assert [(c.spec.optimizer, c.spec.seed) for c in score] == [
        (o, s) for o in ("adamw", "lion", "ademamix") for s in (0, 1)
    ]
    lion = [c for c in score if c.spec.optimizer == "lion"]
    assert all(c.spec.hparams["betas"] == [0.9, 0.99] and c.spec.config == {} for c in lion)
    assert plan.phase_sizes() == {"tune": 6, "calibrate": 0, "score": 6}


def test_tier_overrides_seeds_and_budgets_per_task() -> None:
    text = """
tasks:
  - {name: noisy-quadratic, options: {preset: tiny}, budget: {steps: 100, eval_interval: 10}}
  - {name: lm-small, options: {preset: tiny}, budget: {steps: 50}}
optimizers: [{name: adamw}]
seeds: [0, 1, 2]
tiers:
  smoke: {seeds: [7], budget: {steps: 20, max_seconds: 5}, tasks: {lm-small: {steps: 4}}}
default_tier: smoke
"""
    s = parse_suite(text)
    plan = build_plan(s)  # the default tier
    assert plan.tier == "smoke" and plan.seeds == {"score": [7], "tune": [8], "calibrate": [9]}
    cells = plan.score_cells({}, {})
    steps = {c.spec.task_id: c.spec.settings.steps for c in cells}
    assert steps == {NQ: 20, "lm-small(preset=tiny)": 4} and {c.spec.seed for c in cells} == {7}
    assert all(c.spec.settings.max_seconds == 5 for c in cells)
    assert cells[0].spec.settings.eval_interval == 10  # kept: the tier does not set it
    plain = build_plan(parse_suite(text.replace("default_tier: smoke", "")))
    assert plain.tier is None and plain.phase_sizes() == {"tune": 0, "calibrate": 0, "score": 6}
    assert plain.score_cells({}, {})[0].spec.settings.steps == 100
    with pytest.raises(ConfigError, match="no tier named 'full' in this suite; tiers: smoke"):
        build_plan(s, "full")
    with pytest.raises(ConfigError, match=r"tiers.smoke.tasks.lm: no task with that id"):
        parse_suite(text.replace("tasks: {lm-small:", "tasks: {lm:"))
    # a tier's seeds must stay apart from the tuning seeds too
    clash = text.replace("default_tier: smoke", "tuning: {seeds: [7]}")
    with pytest.raises(ConfigError, match=r"^tuning: tuning.seeds and seeds share seed 7"):
        build_plan(parse_suite(clash), "smoke")
    assert build_plan(parse_suite(clash)).seeds["tune"] == [7]  # fine as written


# -- running and resuming -----------------------------------------------------------------------


def test_rerun_reuses_every_record(tmp_path: Path) -> None:
    path, out = write_suite(tmp_path), tmp_path / "out"
    count = Count()
    first = suite.run_suite(path, out=out, progress=count)
    assert first.ran == 8 and first.skipped == 0 and count.starts == 8
    assert len(records_in(out)) == 8
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("noisy-quadratic__*.json")}
    count = Count()
    again = suite.run_suite(path, out=out, progress=count)
    assert again.ran == 0 and again.skipped == 8 and count.starts == 0 and count.reused_n == 8
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("noisy-quadratic__*.json")} == before
    assert [r.run_id for r in again.records] == [r.run_id for r in first.records]
    assert again.selection == first.selection
    for name in ("suite.resolved.yaml", "environment.json", "selection.json"):
        assert (out / name).is_file()
    with pytest.raises(BenchError, match="already holds records; resume"):
        suite.run_suite(path, out=out, resume=False)
    assert not list((out / ".running").iterdir())


def test_sigkill_mid_suite_then_rerun_gives_the_records_of_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    path = write_suite(tmp_path, steps=600, target=CALIBRATE, interval=100)
    out = tmp_path / "killed"
    script = (
        "import sys; from bench_cli.suite import run_suite; run_suite(sys.argv[1], out=sys.argv[2])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(out)], env=env)
    deadline = time.monotonic() + 120
    while not records_in(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the suite finished before it could be killed"
    kept = records_in(out)
    assert 0 < len(kept) < 10  # 4 tune, 2 calibrate, 4 score cells
    states = suite.suite_status(out)["state"].value_counts().to_dict()
    # the killed process's claim, if it held one, is stale: interrupted, never running
    assert states["done"] == len(kept) and "running" not in states
    assert set(states) <= {"done", "interrupted", "missing"} and states.get("interrupted", 0) <= 1

    resumed = suite.run_suite(path, out=out)
    assert resumed.skipped == len(kept) and resumed.ran + resumed.skipped == 10
    clean = suite.run_suite(path, out=tmp_path / "clean")
    got, want = records_in(out), records_in(tmp_path / "clean")
    assert sorted(got) == sorted(want) and len(got) == 10
    for k in want:
        a, b = without_timings(got[k]), without_timings(want[k])
        assert a == b, {f: (a[f], b[f]) for f in a if a[f] != b[f]}
    assert json.loads((out / "calibration.json").read_text()) == clean.calibration
    assert json.loads((out / "selection.json").read_text()) == clean.selection
    assert set(suite.suite_status(out)["state"]) == {"done"}
    assert not list((out / ".running").iterdir())


# -- status -------------------------------------------------------------------------------------


def claim(out: Path, run_id: str, age: float = 0.0, **info) -> None:
    marker = out / ".running" / run_id
    marker.write_text(json.dumps(info))
    if age:
        os.utime(marker, (time.time() - age, time.time() - age))


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (proc(5)): the process's start time in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[22 - 3]


def test_status_per_phase_done_diverged_failed_running_interrupted_missing(tmp_path: Path) -> None:
    path, out = write_suite(tmp_path, target=CALIBRATE), tmp_path / "out"
    summary = suite.run_suite(path, out=out)
    cells = {(c.spec.role, c.spec.optimizer, c.label, c.spec.seed): c.run_id for c in summary.cells}
    assert len(cells) == 10
    lion_pick = summary.selection[f"{NQ}/lion"]["config"]["lr"]
    lion_other = 0.003 if lion_pick == 0.01 else 0.01
    adamw_lrs = sorted(k[2] for k in cells if k[:2] == ("tune", "adamw"))
    cal_lr = summary.calibration[NQ]["config"]["lr"]
    adamw_pick = summary.selection[f"{NQ}/adamw"]["config"]["lr"]
    me, host = os.getpid(), socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def edit(key, status=None, **holder) -> None:
        run_id = cells[key]
        if status is not None:
            rec = read_record(record_path(out, run_id))
            write_record(rec.model_copy(update={"status": status, "error": "boom"}), out)
            return
        record_path(out, run_id).unlink()
        if holder:
            claim(out, run_id, **holder)

    # tune: one done, one failed (lion's configuration that was not selected), one held by a
    # fresh claim of another host (running), one whose claim on another host ran out (interrupted)
    edit(("tune", "lion", f"lr={lion_other}", 2), "error")
    edit(("tune", "lion", f"lr={lion_pick}", 2), host="elsewhere", pid=1)
    edit(("tune", "adamw", adamw_lrs[0], 2), host="elsewhere", pid=1, age=400)
    # calibrate: one done, one missing (no record, no claim)
    edit(("calibrate", "adamw", f"lr={cal_lr}", 4))
    # score: diverged; held by this live process (running); held by a dead process and by a
    # live pid whose start time differs (the pid was reused): interrupted
    edit(("score", "adamw", f"lr={adamw_pick}", 0), "diverged")
    edit(("score", "adamw", f"lr={adamw_pick}", 1), host=host, pid=me, pid_start=start_time(me))
    edit(("score", "lion", f"lr={lion_pick}", 0), host=host, pid=dead.pid, pid_start="1")
    edit(("score", "lion", f"lr={lion_pick}", 1), host=host, pid=me, pid_start="1")

    table = suite.suite_status(out)
    assert list(table.columns) == [
        "phase",
        "task",
        "optimizer",
        "config",
        "seed",
        "state",
        "run_id",
    ]
    assert (
        len(table) == 10
        and list(table["phase"]) == ["tune"] * 4 + ["calibrate"] * 2 + ["score"] * 4
    )
    counts = table["state"].value_counts().to_dict()
    assert counts == {
        "done": 2, "diverged": 1, "failed": 1, "running": 2, "interrupted": 3, "missing": 1,
    }  # fmt: skip
    per = suite.status_counts(table)
    assert list(per.columns) == ["phase", "task", "optimizer", *suite.STATES]
    got = {
        (row.phase, row.optimizer): {s: getattr(row, s) for s in suite.STATES if getattr(row, s)}
        for row in per.itertuples()
    }
    assert got == {
        ("tune", "adamw"): {"done": 1, "interrupted": 1},
        ("tune", "lion"): {"failed": 1, "running": 1},
        ("calibrate", "adamw"): {"done": 1, "missing": 1},
        ("score", "adamw"): {"diverged": 1, "running": 1},
        ("score", "lion"): {"interrupted": 2},
    }
    # a diverged or failed run is a result: once the live claims are gone, a rerun runs the six
    # cells without a record, and the stale claims are taken over
    for key in (("tune", "lion", f"lr={lion_pick}", 2), ("score", "adamw", f"lr={adamw_pick}", 1)):
        (out / ".running" / cells[key]).unlink()
    again = suite.run_suite(path, out=out)
    assert again.ran == 6 and again.selection == summary.selection
    assert again.calibration == summary.calibration
    assert suite.suite_status(out)["state"].value_counts().to_dict() == {
        "done": 8, "diverged": 1, "failed": 1,
    }  # fmt: skip


def test_status_lists_no_score_cells_before_selection_and_refuses_a_plain_folder(
    tmp_path: Path,
) -> None:
    path, out = write_suite(tmp_path), tmp_path / "out"
    summary = suite.run_suite(path, out=out)
    (out / "selection.json").unlink()  # as after a kill in the tuning phase
    record_path(out, next(r for r in summary.records if r.role == "tune").run_id).unlink()
    table = suite.suite_status(out)
    assert list(table["phase"]) == ["tune"] * 4
    assert sorted(table["state"]) == ["done", "done", "done", "missing"]
    with pytest.raises(BenchError, match="holds no suite run .*; run a suite there first"):
        suite.suite_status(tmp_path)


def test_status_during_calibration_shows_the_calibration_cells_that_run(tmp_path: Path) -> None:
    text = write_suite(tmp_path, target=CALIBRATE).read_text()
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("[0.1, 0.03]", "[0.03, 0.1]"))  # lr 0.1 is chosen, not 0.03
    out = tmp_path / "out"
    summary = suite.run_suite(path, out=out)
    assert summary.calibration[NQ]["config"] == {"lr": 0.1}
    # the folder as a kill at the end of the calibrate phase leaves it
    for name in ("calibration.json", "selection.json"):
        (out / name).unlink()
    for r in summary.scored:
        record_path(out, r.run_id).unlink()
    table = suite.suite_status(out)
    cal = table[table["phase"] == "calibrate"]
    assert list(cal["config"]) == ["lr=0.1", "lr=0.1"] and set(cal["state"]) == {"done"}


def test_folders_merged_by_copying_records_show_the_whole_suite_done(tmp_path: Path) -> None:
    """Each task of a tuned, calibrated suite run in a folder of its own (``--only``), then the
    records copied both ways: each folder's status is the whole suite's, done, as a run there
    finds it, though each folder's selection and calibration files hold its own task only."""
    rb = "  - name: rosenbrock\n    options: {preset: tiny}\n    budget: {steps: 20}\n"
    text = write_suite(tmp_path, target=CALIBRATE).read_text().replace("tasks:\n", "tasks:\n" + rb)
    path = tmp_path / "two.yaml"
    path.write_text(text)
    a, b, whole = tmp_path / "a", tmp_path / "b", tmp_path / "whole"
    suite.run_suite(path, out=a, only=[NQ])
    suite.run_suite(path, out=b, only=["rosenbrock(preset=tiny)"])
    mine = {folder: list(folder.glob("*__*.json")) for folder in (a, b)}
    for source, target in ((a, b), (b, a)):
        for p in mine[source]:
            shutil.copy(p, target / p.name)
    expected = suite.suite_status(suite.run_suite(path, out=whole).out)
    for folder in (a, b):
        table = suite.suite_status(folder)
        assert sorted(table["run_id"]) == sorted(expected["run_id"]), folder
        assert set(table["state"]) == {"done"}
        assert suite.run_suite(path, out=folder).ran == 0  # a run there agrees: nothing to do


# -- folders ------------------------------------------------------------------------------------


def test_a_folder_of_another_suite_or_of_bench_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    suite.run_suite(write_suite(tmp_path, steps=10), out=out)
    suite.run_suite(write_suite(tmp_path, steps=10, name="copy.yaml"), out=out)  # identical: fine
    with pytest.raises(BenchError, match=r"tasks\[0\].budget.steps differs .* another --out"):
        suite.run_suite(write_suite(tmp_path, steps=11), out=out)
    text = write_suite(tmp_path, steps=10).read_text() + "tiers: {t: {}}\n"
    (tmp_path / "t.yaml").write_text(text)
    with pytest.raises(BenchError, match="holds another suite \\(tier differs"):
        suite.run_suite(tmp_path / "t.yaml", tier="t", out=out)
    # the executor settings are not part of the suite: another executor may resume it
    (tmp_path / "e.yaml").write_text(text.replace("{threads: 1}", "{threads: 1, jobs: 1}"))
    assert suite.run_suite(tmp_path / "e.yaml", out=out).ran == 0
    # `bench run` folders and suite folders do not mix
    runs = tmp_path / "runs"
    req = api.RunRequest(
        task="rosenbrock", optimizers=["adamw"], task_options={"preset": "tiny"}, steps=10
    )
    assert len(api.run(req, runs)) == 1
    table = suite.suite_status(runs)  # its one-task suite is under .runs/
    assert [(r.phase, r.optimizer, r.seed, r.state) for r in table.itertuples()] == [
        ("score", "adamw", 0, "done")
    ]
    with pytest.raises(BenchError, match="holds run records of `bench run`, not of a suite"):
        suite.run_suite(write_suite(tmp_path, steps=10), out=runs)
    assert not (runs / "suite.resolved.yaml").exists()
    with pytest.raises(BenchError, match="holds a suite run; choose another --out for `bench run`"):
        api.run(req, out)


def test_a_suite_of_more_cells_than_max_cells_is_refused_before_writing(tmp_path: Path) -> None:
    path, out = write_suite(tmp_path, target=CALIBRATE), tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        suite.run_suite(path, out=out, max_cells=9)
    assert str(info.value) == (
        f"{path}: 10 cells (4 tune, 2 calibrate, 4 score) is more than --max-cells 9; "
        "raise --max-cells to confirm"
    )
    assert not out.exists()
    with pytest.raises(ConfigError, match=r"^--max-cells .*: at least 1, got -1$"):
        suite.run_suite(path, out=out, max_cells=-1)
    assert not out.exists()


# -- the commands -------------------------------------------------------------------------------


def invoke(*args: str):
    app = typer.Typer()
    app.add_typer(suite_app, name="suite")
    return CliRunner().invoke(app, ["suite", *args], catch_exceptions=False)


def bench(*args: str):
    from bench_cli.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def one_error_line(res, message: str) -> None:
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output


def test_cli_validate_prints_the_cells_of_each_phase_per_tier(tmp_path: Path) -> None:
    path = write_suite(tmp_path, target=CALIBRATE)
    path.write_text(path.read_text() + "tiers: {one: {seeds: [7]}}\n")
    res = invoke("validate", str(path))
    assert res.exit_code == 0, res.output
    # as written: seeds 0, 1 -> 4 tune (seed 2), 2 calibrate (3, 4), 2 x 2 score;
    # tier one: seed 7 -> 4 tune (seed 8), 1 calibrate (9), 2 x 1 score
    assert res.output.splitlines() == [
        "  tier (as written): 10 runs (4 tune, 2 calibrate, 4 score)",
        "  tier one: 7 runs (4 tune, 1 calibrate, 2 score)",
        f"{path} is valid",
    ]
    plain = write_suite(tmp_path, name="plain.yaml")
    res = invoke("validate", str(plain))
    assert res.output.splitlines()[0] == "  tier (as written): 8 runs (4 tune, 4 score)"


def test_cli_plan_prints_the_phases_and_their_cells(tmp_path: Path) -> None:
    path = write_suite(tmp_path, target=CALIBRATE)
    res = bench("plan", str(path))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    heads = [line for line in lines if not line.startswith("  ")]
    none = "no earlier records to estimate from"
    assert heads == [
        f"phase tune: 4 cells; {none}",
        f"phase calibrate: 2 cells (the baseline's configuration chosen in tuning); {none}",
        f"phase score: 4 cells (each optimizer's configuration selected in tuning); {none}",
        "10 cells in all (4 tune, 2 calibrate, 4 score)",
    ]
    cells = [line.split() for line in lines if line.startswith("  ")]
    assert [(c[1], c[3]) for c in cells] == [
        ("adamw", "2"), ("adamw", "2"), ("lion", "2"), ("lion", "2"), ("adamw", "3"),
        ("adamw", "4"), ("adamw", "0"), ("adamw", "1"), ("lion", "0"), ("lion", "1"),
    ]  # fmt: skip
    assert all(c[0] == NQ and c[5] == "20" for c in cells)
    assert "lr=0.03," in lines[2] and "lr=0.003," in lines[4]


def test_a_tuned_suite_folder_reads_back_as_its_records_and_plan_estimates_from_it(
    tmp_path: Path,
) -> None:
    from bench_cli.results.store import load_records

    path, out = write_suite(tmp_path, target=CALIBRATE), tmp_path / "out"
    summary = suite.run_suite(path, out=out)
    assert (out / "selection.json").is_file() and (out / "calibration.json").is_file()
    assert sorted(r.run_id for r in load_records(out)) == sorted(r.run_id for r in summary.records)
    res = bench("plan", str(path), "--history", str(out))
    assert res.exit_code == 0 and "no earlier records" not in res.output
    assert re.search(r"^phase tune: 4 cells; about \d+ s of run time$", res.output, re.M)
    assert re.search(r"10 cells in all \(.*\); about \d+ s of run time, before", res.output)
    damaged = sorted(out.glob("*adamw*.json"))[0]
    damaged.write_text(damaged.read_text()[:500])
    res = bench("plan", str(path), "--history", str(out))  # the other records still estimate
    assert res.exit_code == 0 and "no earlier records" not in res.stdout
    assert re.search(r"^phase tune: 4 cells; about \d+ s of run time$", res.stdout, re.M)
    assert f"warning: left out {damaged}: is not valid JSON" in " ".join(res.stderr.split())


def test_cli_run_and_status(tmp_path: Path) -> None:
    path, out = write_suite(tmp_path, target=CALIBRATE), tmp_path / "out"
    res = invoke("run", str(path), "--out", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    assert "10 runs now, 0 already done" in res.output and "adamw" in res.output
    value = json.loads((out / "calibration.json").read_text())[NQ]["value"]
    assert f"calibrated target of {NQ}: gap <= {value:.6g}" in res.output
    res = invoke("run", str(path), "--out", str(out), "--quiet")
    assert res.exit_code == 0 and "0 runs now, 10 already done" in res.output
    res = invoke("status", str(out))
    assert res.exit_code == 0
    assert "10 done, 0 diverged, 0 failed, 0 running, 0 interrupted, 0 missing (of 10 runs)" in (
        res.output
    )
    assert f"calibrated target of {NQ}" in res.output


def test_cli_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw, hparams: {lrr: 1}}]\n")
    one_error_line(invoke("validate", str(bad)), "optimizers[0].hparams.lrr")
    one_error_line(invoke("status", str(tmp_path)), "holds no suite run")
    one_error_line(invoke("run", str(tmp_path / "missing.yaml")), "cannot read suite file")
    clash = write_suite(tmp_path, name="clash.yaml")
    clash.write_text(clash.read_text() + "tuning: {seeds: [1]}\n")
    out = tmp_path / "out"
    res = invoke("run", str(clash), "--out", str(out))
    one_error_line(res, "tuning: tuning.seeds and seeds share seed 1: scoring seeds must be fresh")
    unequal = write_suite(tmp_path, name="unequal.yaml")
    unequal.write_text(unequal.read_text().replace("[0.01, 0.003]", "[0.01]"))
    res = invoke("run", str(unequal), "--out", str(out))
    one_error_line(res, "optimizers have different numbers of configurations (adamw 2, lion 1)")
    res = invoke("run", str(write_suite(tmp_path)), "--out", str(out), "--max-cells", "7")
    one_error_line(res, "8 cells (4 tune, 0 calibrate, 4 score) is more than --max-cells 7")
    assert not out.exists()


def test_bad_executor_settings_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    path, out = write_suite(tmp_path), tmp_path / "out"
    with pytest.raises(ConfigError) as info:
        suite.run_suite(path, out=out, executor={"jobs": 0})
    assert (
        str(info.value)
        == "executor setting jobs: Input should be greater than or equal to 1 (got 0)"
    )
    assert not out.exists()
    res = invoke("run", str(path), "--out", str(out), "--jobs", "0")
    one_error_line(res, "executor setting jobs: Input should be greater than or equal to 1")
    assert not out.exists()


def test_cli_run_exits_1_when_a_run_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench_cli.tasks import TASKS

    def broken(self, model, batch):
        raise RuntimeError("boom")

    monkeypatch.setattr(TASKS.get("noisy-quadratic"), "loss", broken)
    path = write_suite(tmp_path, steps=10)
    path.write_text(path.read_text().replace("sweep: {lr: [0.1, 0.03]}", "hparams: {lr: 0.1}"))
    path.write_text(path.read_text().replace("sweep: {lr: [0.01, 0.003]}", "hparams: {lr: 0.01}"))
    res = invoke("run", str(path), "--out", str(tmp_path / "o"), "-q")
    assert res.exit_code == 1 and "failed" in res.output and "boom" in res.output
    records = records_in(tmp_path / "o")  # a failed run is a record, the suite went on
    assert len(records) == 4 and {r.status for r in records.values()} == {"error"}
    res = invoke("status", str(tmp_path / "o"))
    assert res.exit_code == 0 and "0 done, 0 diverged, 4 failed" in res.output


#: SUITE's task twice, as ``short`` (20 steps) and ``long`` (30), each calibrated and tuned
TWO = SUITE.replace("name: nq", "name: two").replace(
    "  - name: noisy-quadratic\n    options: {preset: tiny}\n"
    "    budget: {steps: STEPS, eval_interval: INTERVAL}\n    TARGET\n",
    "".join(
        f"  - name: noisy-quadratic\n    id: {task_id}\n    options: {{preset: tiny}}\n"
        f"    budget: {{steps: {steps}, eval_interval: 10}}\n    {CALIBRATE}\n"
        for task_id, steps in (("short", 20), ("long", 30))
    ),
)


def test_only_runs_some_tasks_and_later_runs_complete_the_suite_as_one_run_would(
    tmp_path: Path,
) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(TWO)
    whole = tmp_path / "whole"
    suite.run_suite(path, out=whole)
    part = tmp_path / "part"
    first = suite.run_suite(path, out=part, only=["short"])
    assert {r.task_id for r in first.records} == {"short"}
    assert {read_record(p).task_id for p in part.glob("noisy-quadratic__*.json")} == {"short"}
    second = suite.run_suite(path, out=part, only=["long"])
    assert {r.task_id for r in second.records} == {"long"}
    for side in ("calibration.json", "selection.json"):  # each part kept the other's entries
        assert json.loads((part / side).read_text()) == json.loads((whole / side).read_text())
    again = suite.run_suite(path, out=part)
    assert again.ran == 0
    a, b = records_in(part), records_in(whole)
    assert sorted(a) == sorted(b) and len(a) == 2 * (4 + 2 + 4)
    assert all(without_timings(a[k]) == without_timings(b[k]) for k in a)


def test_only_with_a_task_the_suite_lacks_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(TWO)
    out = tmp_path / "out"
    result = CliRunner().invoke(suite_app, ["run", str(path), "--out", str(out), "--only", "nope"])
    assert result.exit_code != 0
    assert "no task 'nope' in this suite; --only takes task ids: short, long" in result.output
    assert not out.exists()


def test_a_damaged_calibration_file_stops_the_run_before_any_cell(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(TWO)
    out = tmp_path / "out"
    suite.run_suite(path, out=out, only=["short"])
    (out / "calibration.json").write_text('{"short": ')
    count = Count()
    with pytest.raises(BenchError, match="calibration.json is damaged"):
        suite.run_suite(path, out=out, progress=count)
    assert count.starts == 0


def _merge_many(folder: str, who: int, start: float) -> None:
    from bench_cli.folder import Folder

    time.sleep(max(0.0, start - time.time()))  # all at once, after each one's start-up
    for k in range(40):
        Folder(folder).merge_json("calibration.json", {f"{who}-{k}": k})


def test_coordinators_merging_the_side_files_at_once_lose_no_entry(tmp_path: Path) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    start = time.time() + 5
    procs = [ctx.Process(target=_merge_many, args=(str(tmp_path), w, start)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    got = json.loads((tmp_path / "calibration.json").read_text())
    assert got == {f"{w}-{k}": k for w in range(4) for k in range(40)}


def test_a_live_display_passed_to_the_suite_is_shown_once_and_taken_down(tmp_path) -> None:
    """The command line enters its display and hands it to the suite, which enters what it is
    given: one live display on the terminal, and the cursor shown again at the end."""
    import io

    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    with Progress(console, live=True) as progress:
        suite.run_suite(write_suite(tmp_path), out=tmp_path / "out", progress=progress)
    shown = screen.getvalue()
    assert shown.count("\x1b[?25l") == 1 and shown.count("\x1b[?25h") == 1  # hidden, shown
    assert progress.live is None


def test_off_a_terminal_running_cells_get_a_line_while_no_step_comes(tmp_path, monkeypatch):
    """An executor's wait (a SLURM job, a run in its set-up) sends no step: its ticks still give
    the running cells' plain lines, once a minute (here at once), saying no step came yet."""
    import io

    from rich.console import Console

    from bench_cli import progress as progress_module

    plan = build_plan(load_suite(write_suite(tmp_path)))
    cell = plan.tune_cells()[0]
    screen = io.StringIO()
    p = Progress(Console(file=screen, width=200), live=False)
    p.started(cell)
    monkeypatch.setattr(progress_module, "PLAIN_EVERY", 0.0)
    p.tick()
    assert "running  tune noisy-quadratic(preset=tiny) adamw" in screen.getvalue()
    assert "starting (no step reported yet)" in screen.getvalue()
    p.step(cell.run_id, 7, 20)
    assert "step 7/20" in screen.getvalue()


def test_the_suites_baseline_is_the_leaderboards_and_must_be_one_of_its_optimizers(
    tmp_path: Path,
) -> None:
    from bench_cli.cli import app

    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace("executor:", "baseline: lion\nexecutor:"))
    out = tmp_path / "out"
    suite.run_suite(path, out=out)
    runner = CliRunner()
    for command in (["leaderboard", str(out)], ["export", str(out), "--format", "csv"]):
        shown = runner.invoke(app, command)
        assert shown.exit_code == 0, shown.output
        given = runner.invoke(app, [*command, "--baseline", "adamw"])
        if command[0] == "leaderboard":
            assert "baseline lion" in shown.output and "baseline adamw" in given.output
        else:  # the baseline's own speedup is 1 and its verdict says it is the baseline
            lion = [ln for ln in shown.output.splitlines() if ",lion," in ln]
            adamw = [ln for ln in given.output.splitlines() if ",adamw," in ln]
            assert lion and adamw and all(",baseline," in ln for ln in lion + adamw)
    report = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert report.exit_code == 0, report.output
    assert "baseline lion" in (tmp_path / "r.html").read_text()
    path.write_text(path.read_text().replace("baseline: lion", "baseline: mars"))
    assert "baseline: 'mars' is not among the optimizers (adamw, lion)" in invalid(path.read_text())


@pytest.mark.parametrize(
    ("seeds", "why"),
    [
        ("seeds: [-1]", "seeds[0]: Input should be greater than or equal to 0 (got -1)"),
        ("seeds: [true]", "seeds[0]: Input should be a valid integer (got True)"),
        ("tuning: {seeds: [-3]}", "tuning.seeds[0]: Input should be greater than or equal to 0"),
    ],
)
def test_a_seed_in_a_suite_is_a_whole_number_from_zero_named_by_its_key(seeds, why) -> None:
    text = "tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw}]\n" + seeds + "\n"
    with pytest.raises(ConfigError) as info:
        parse_suite(text, "f.yaml")
    assert str(info.value).startswith("f.yaml: ") and why in str(info.value)
    assert "--seed" not in str(info.value)


def test_a_suite_resumes_with_another_checkpoint_interval_but_not_another_budget(
    tmp_path: Path,
) -> None:
    """How often runs checkpoint changes no run (nor its id): the folder takes the suite with a
    new interval and reuses every record; a new budget is another suite."""
    path = write_suite(tmp_path, target="settings: {checkpoint_minutes: 5}")
    out = tmp_path / "out"
    first = suite.run_suite(path, out=out)
    path.write_text(path.read_text().replace("checkpoint_minutes: 5", "checkpoint_minutes: 1"))
    again = suite.run_suite(path, out=out)
    assert again.ran == 0 and len(again.records) == len(first.records)
    path.write_text(path.read_text().replace("steps: 20", "steps: 30"))
    with pytest.raises(BenchError, match="holds another suite .tasks.0..budget.steps differs"):
        suite.run_suite(path, out=out)
