"""YAML suites: schema errors with key paths, grids, tiers, resume (also after SIGKILL), the
calibration rule, status and the `bench suite` commands. Rosenbrock runs of a few dozen steps."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bench_cli import suite
from bench_cli.cli_suite import suite_app
from bench_cli.errors import BenchError, ConfigError
from bench_cli.results.metrics import to_target
from bench_cli.results.record import Env, RunRecord, Target
from bench_cli.results.store import read_record, record_path, write_record
from bench_cli.runner import RunCallback

ROOT = Path(__file__).resolve().parents[1]

ROSEN = """
name: rosen
seeds: [0, 1]
tasks:
  - name: rosenbrock
    options: {preset: tiny}
    budget: {steps: STEPS, eval_interval: 10}
    TARGET
optimizers:
  - name: adamw
    sweep: {lr: [1.0e-2, 3.0e-2]}
  - name: lion
  - name: ademamix
"""


def write_suite(tmp_path: Path, steps: int = 30, target: str = "", name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(ROSEN.replace("STEPS", str(steps)).replace("TARGET", target))
    return path


def invalid(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        suite.plan_suite(suite.parse_suite(text, "f.yaml"))
    return str(info.value)


class Count(RunCallback):
    def __init__(self) -> None:
        self.started = 0

    def on_start(self, spec, unit) -> None:
        self.started += 1


def records_in(out: Path) -> dict[str, RunRecord]:
    return {p.stem: read_record(p) for p in out.glob("rosenbrock__*.json")}


def without_timings(record: RunRecord) -> dict:
    data = record.model_dump()
    timings = (
        "started_at",
        "finished_at",
        "train_seconds",
        "eval_seconds",
        "setup_seconds",
        "tokens_per_second",
    )
    data["env"].pop("load_average", None)
    for key in (*timings, "seconds_to_target"):
        data.pop(key)
    data["curve"] = [{k: v for k, v in p.items() if k != "seconds"} for p in data["curve"]]
    return data


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


def test_hyperparameters_are_checked_against_the_optimizer_with_their_path() -> None:
    head = "tasks: [{name: rosenbrock}]\noptimizers:\n  - {name: adamw}\n"
    msg = invalid(head + "  - {name: lion, hparams: {lrr: 1}}")
    assert msg.startswith("optimizers[1].hparams.lrr: optimizer 'lion' has no hyperparameter")
    assert "optimizers[1].sweep.foo:" in invalid(head + "  - {name: lion, sweep: {foo: [1]}}")
    msg = invalid(head + "  - {name: lion, hparams: {lr: [1.0e-3, 1.0e-2]}}")
    assert "optimizers[1].hparams.lr: a list in hparams is one value" in msg and "sweep" in msg
    msg = invalid(head + "  - {name: lion, sweep: {betas: [0.9, 0.99]}}")
    assert "optimizers[1].sweep.betas: " in msg and "list of lists" in msg
    msg = invalid(head + "  - {name: lion, sweep: {lr: [1.0e-3, -1]}}")
    assert msg.startswith("optimizers[1] (lion lr=-1) on tasks[0] (rosenbrock)") and "lr" in msg
    assert "optimizers[1].name: unknown optimizer 'adamx'" in invalid(head + "  - {name: adamx}")
    assert "the same run as optimizers[0]" in invalid(head + "  - {name: adamw}")
    msg = invalid("tasks: [{name: rosenbrock, target: calibrate}]\noptimizers: [{name: lion}]")
    assert msg.startswith("baseline: 'adamw' is not among the optimizers")


def test_malformed_yaml_names_line_and_column() -> None:
    with pytest.raises(
        ConfigError,
        match=r"f.yaml: invalid YAML at line 3, column 11: .* flow mapping at line 2, column 5",
    ):
        suite.parse_suite("tasks:\n  - {name: rosenbrock\noptimizers: [{name: adamw}]\n", "f.yaml")
    with pytest.raises(ConfigError, match="line 2, column 1: key 'tasks' appears twice"):
        suite.parse_suite("tasks: []\ntasks: []\n", "f.yaml")
    with pytest.raises(ConfigError, match="a suite is a mapping"):
        suite.parse_suite("- rosenbrock\n", "f.yaml")
    s = suite.parse_suite(
        "tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw, sweep: {lr: [1e-3, 2E-2]}}]"
    )
    assert s.optimizers[0].sweep["lr"] == [1e-3, 2e-2]  # YAML 1.1 would read strings


def test_example_suites_are_valid_files() -> None:
    paths = sorted((ROOT / "suites").glob("*.yaml"))
    assert {"ci-smoke", "valleys", "lm", "vit"} <= {p.stem for p in paths}
    for path in paths:
        s = suite.load_suite(path)
        assert s.tasks and s.optimizers
    smoke = suite.load_suite(ROOT / "suites" / "ci-smoke.yaml")
    assert smoke.default_tier == "smoke"
    names = {
        "adamw",
        "ademamix",
        "simplified-ademamix",
        "aggmo-adam",
        "lion",
        "schedule-free",
        "mars",
    }
    assert {o.name for o in smoke.optimizers} == names


# -- grids and tiers ----------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_and_a_list_in_hparams_is_one_value() -> None:
    grid = suite.expand_grid(
        {"betas": [0.9, 0.99], "eps": 1e-8},
        {"lr": [1e-3, 3e-3, 1e-2], "weight_decay": [0.0, 0.1]},
    )
    assert len(grid) == 6 and all(p["betas"] == [0.9, 0.99] for p in grid)
    assert grid[1] == {"betas": [0.9, 0.99], "eps": 1e-8, "lr": 1e-3, "weight_decay": 0.1}
    betas = suite.expand_grid({}, {"betas": [[0.9, 0.99], [0.95, 0.98]]})
    assert betas == [{"betas": [0.9, 0.99]}, {"betas": [0.95, 0.98]}]
    assert suite.expand_grid({"lr": 1.0}, {}) == [{"lr": 1.0}]
    text = ROSEN.replace("STEPS", "30").replace("TARGET", "")
    text = text.replace("  - name: lion\n", "  - name: lion\n    hparams: {betas: [0.9, 0.99]}\n")
    text += "    sweep: {betas: [[0.9, 0.999, 0.999], [0.9, 0.999, 0.9999]], alpha: [2.0, 5.0]}\n"
    cells = suite.plan_suite(suite.parse_suite(text))
    # (2 adamw + 1 lion + 4 ademamix configurations) x 2 seeds
    assert len(cells) == 14 and len({c.spec.run_id for c in cells}) == 14
    lion = [c for c in cells if c.optimizer == "lion"]
    assert all(c.spec.hparams["betas"] == [0.9, 0.99] for c in lion)
    assert {c.label for c in cells if c.optimizer == "ademamix"} >= {
        "betas=[0.9, 0.999, 0.9999], alpha=5.0"
    }


def test_tier_overrides_seeds_and_budgets_per_task() -> None:
    text = """
tasks:
  - {name: rosenbrock, options: {preset: tiny}, budget: {steps: 100, eval_interval: 10}}
  - {name: lm-small, options: {preset: tiny}, budget: {steps: 50}}
optimizers: [{name: adamw}]
seeds: [0, 1, 2]
tiers:
  smoke: {seeds: [7], budget: {steps: 20, max_seconds: 5}, tasks: {lm-small: {steps: 4}}}
default_tier: smoke
"""
    s = suite.parse_suite(text)
    cells = suite.plan_suite(s)  # the default tier
    steps = {c.task_id: c.spec.settings.steps for c in cells}
    assert steps == {"rosenbrock": 20, "lm-small": 4} and {c.seed for c in cells} == {7}
    assert all(c.spec.settings.max_seconds == 5 for c in cells)
    assert cells[0].spec.settings.eval_interval == 10  # kept: the tier does not set it
    plain = suite.parse_suite(text.replace("default_tier: smoke", ""))
    assert (
        len(suite.plan_suite(plain)) == 6 and suite.plan_suite(plain)[0].spec.settings.steps == 100
    )
    with pytest.raises(ConfigError, match="no tier named 'full' in this suite; tiers: smoke"):
        suite.plan_suite(s, "full")
    with pytest.raises(ConfigError, match=r"tiers.smoke.tasks.lm: no task with that id"):
        suite.parse_suite(text.replace("tasks: {lm-small:", "tasks: {lm:"))


# -- running, resuming, calibrating ------------------------------------------------------------


def test_rerun_skips_finished_runs(tmp_path: Path) -> None:
    path, out = write_suite(tmp_path), tmp_path / "out"
    first = suite.run_suite(path, out=out, callback=Count())
    assert first.ran == 8 and first.skipped == 0 and len(records_in(out)) == 8
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    count = Count()
    again = suite.run_suite(path, out=out, callback=count)
    assert count.started == 0 and again.ran == 0 and again.skipped == 8
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("rosenbrock*.json")} == {
        k: v for k, v in before.items() if k.startswith("rosenbrock")
    }
    assert (out / "suite.resolved.yaml").is_file() and (out / "environment.json").is_file()
    with pytest.raises(BenchError, match="already holds 8 records; resume"):
        suite.run_suite(path, out=out, resume=False)
    assert not list((out / ".running").iterdir())


def test_sigkill_mid_suite_then_rerun_gives_the_records_of_an_uninterrupted_run(
    tmp_path: Path,
) -> None:
    path = write_suite(tmp_path, steps=400, target="target: calibrate\n    margin: 0.5")
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
    assert 0 < len(kept) < 8
    states = suite.suite_status(out)["state"].value_counts().to_dict()
    assert states.get("done") == len(kept) and "running" not in states

    resumed = suite.run_suite(path, out=out)
    assert resumed.skipped == len(kept) and resumed.ran + resumed.skipped == 8
    clean = suite.run_suite(path, out=tmp_path / "clean")
    got, want = records_in(out), records_in(tmp_path / "clean")
    assert sorted(got) == sorted(want) and len(got) == 8
    assert all(without_timings(got[k]) == without_timings(want[k]) for k in want)
    assert json.loads((out / "calibration.json").read_text()) == clean.calibration
    assert set(suite.suite_status(out)["state"]) == {"done"}


def _fake(best: float | None, status: str = "done", metric: str = "loss") -> RunRecord:
    env = Env(device="cpu", device_name="cpu", torch="-", bench="-", python="-", platform="-")
    return RunRecord(
        run_id="r", task="t", task_options={}, optimizer="adamw", hparams={}, settings={}, seed=0,
        unit="steps", status=status, best_metrics={} if best is None else {metric: best},
        env=env, started_at="", finished_at="",
    )  # fmt: skip


def test_calibration_rule_is_the_median_over_seeds_of_the_best_configuration() -> None:
    loss = Target(metric="loss", value=9.0, direction="min")
    runs = {
        "a": [_fake(3.0), _fake(1.0), _fake(2.0)],  # median 2.0
        "b": [_fake(1.5), _fake(2.5), _fake(0.1, "diverged")],  # median of 1.5, 2.5, worst
    }
    cal = suite.calibrated_target(loss, runs, margin=0.1)
    assert cal["best_config"] == "a" and cal["baseline_value"] == 2.0
    assert cal["value"] == pytest.approx(2.2) and cal["scores"] == {"a": 2.0, "b": 2.5}
    acc = Target(metric="acc", value=0.0, direction="max")
    runs = {
        "a": [_fake(0.8, metric="acc"), _fake(0.9, metric="acc")],  # median 0.85
        "b": [_fake(0.95, metric="acc"), _fake(None, "error", "acc")],  # 0.95 and worst
    }
    cal = suite.calibrated_target(acc, runs, margin=0.1)
    assert cal["best_config"] == "a" and cal["value"] == pytest.approx(0.85 * 0.9)
    with pytest.raises(BenchError, match="cannot calibrate"):
        suite.calibrated_target(loss, {"a": [_fake(1.0, "diverged")]})


def test_calibrated_target_is_stored_and_used_by_every_cell(tmp_path: Path) -> None:
    path = write_suite(tmp_path, steps=40, target="target: calibrate\n    margin: 0.5")
    out = tmp_path / "out"
    summary = suite.run_suite(path, out=out)
    records = list(records_in(out).values())
    base = [r for r in records if r.optimizer == "adamw"]
    by_lr: dict[float, list[float]] = {}
    for r in base:
        by_lr.setdefault(r.hparams["lr"], []).append(r.best_metrics["distance"])
    assert sorted(len(v) for v in by_lr.values()) == [2, 2]  # two configurations, two seeds
    value = min(sum(v) / 2 for v in by_lr.values()) * 1.5  # median of two: their mean
    stored = json.loads((out / "calibration.json").read_text())["rosenbrock"]
    assert stored["value"] == pytest.approx(value) and summary.calibration["rosenbrock"] == stored
    assert stored["metric"] == "distance" and stored["margin"] == 0.5
    target = Target(metric="distance", value=stored["value"], direction="min")
    for r in records:
        assert r.target == target
        reached = to_target(r.curve, target)
        assert r.tokens_to_target == (reached[0] if reached else None)
        assert r.settings["target"] == (None if r.optimizer == "adamw" else stored["value"])


def test_status_counts_done_diverged_failed_running_interrupted_missing(tmp_path: Path) -> None:
    path = write_suite(tmp_path, steps=20)
    path.write_text(path.read_text() + "  - {name: aggmo, hparams: {lr: 0.1}}\n")  # diverges
    out = tmp_path / "out"
    cells = suite.run_suite(path, out=out).cells
    ids = [c.spec.run_id for c in cells if c.optimizer == "lion"] + [
        c.spec.run_id for c in cells if c.optimizer == "ademamix"
    ]
    failed = read_record(record_path(out, ids[0]))
    write_record(failed.model_copy(update={"status": "error", "error": "boom"}), out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for run_id, pid in ((ids[1], os.getpid()), (ids[2], dead.pid), (ids[3], None)):
        record_path(out, run_id).unlink()
        if pid is not None:
            info = {"pid": pid, "host": socket.gethostname()}
            (out / ".running" / run_id).write_text(json.dumps(info))
    table = suite.suite_status(out)
    assert len(table) == 10 and list(table.columns[:5]) == [
        "task",
        "optimizer",
        "config",
        "seed",
        "state",
    ]
    counts = table["state"].value_counts().to_dict()
    assert counts == {
        "done": 4,
        "diverged": 2,
        "failed": 1,
        "running": 1,
        "interrupted": 1,
        "missing": 1,
    }
    per = suite.status_counts(table).set_index("optimizer")
    assert per.loc["aggmo", "diverged"] == 2 and per.loc["adamw", "done"] == 4
    assert list(per.columns[1:]) == list(suite.STATES)
    # a diverged or failed run is a result: a rerun runs only the three without a record
    assert suite.run_suite(path, out=out).ran == 3


def test_a_directory_of_another_suite_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    suite.run_suite(write_suite(tmp_path, steps=10), out=out)
    suite.run_suite(write_suite(tmp_path, steps=10, name="copy.yaml"), out=out)  # identical: fine
    with pytest.raises(BenchError, match=r"tasks\[0\].budget.steps differs .* another --out"):
        suite.run_suite(write_suite(tmp_path, steps=11), out=out)
    with pytest.raises(BenchError, match="tier differs"):
        text = write_suite(tmp_path, steps=10).read_text() + "tiers: {t: {}}\n"
        (tmp_path / "t.yaml").write_text(text)
        suite.run_suite(tmp_path / "t.yaml", tier="t", out=out)
    plain = tmp_path / "plain"
    plain.mkdir()
    write_record(next(iter(records_in(out).values())), plain)
    with pytest.raises(BenchError, match="not from a suite"):
        suite.run_suite(write_suite(tmp_path, steps=10), out=plain)
    assert not (plain / "suite.resolved.yaml").exists()


# -- the commands -------------------------------------------------------------------------------


def invoke(*args: str):
    app = typer.Typer()
    app.add_typer(suite_app, name="suite")
    return CliRunner().invoke(app, ["suite", *args], catch_exceptions=False)


def test_cli_validate_run_and_status(tmp_path: Path) -> None:
    path, out = write_suite(tmp_path, steps=10), tmp_path / "out"
    res = invoke("validate", str(path))
    assert res.exit_code == 0 and "8 runs" in res.output and "is valid" in res.output
    res = invoke("run", str(path), "--out", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    assert "8 runs now, 0 already done" in res.output and "adamw" in res.output
    res = invoke("run", str(path), "--out", str(out), "--quiet")
    assert res.exit_code == 0 and "0 runs now, 8 already done" in res.output
    res = invoke("status", str(out))
    assert res.exit_code == 0 and "8 done, 0 diverged, 0 failed" in res.output


def test_cli_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks: [{name: rosenbrock}]\noptimizers: [{name: adamw, hparams: {lrr: 1}}]\n")
    res = invoke("validate", str(bad))
    assert res.exit_code == 1 and "optimizers[0].hparams.lrr" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) <= 2
    res = invoke("status", str(tmp_path))
    assert res.exit_code == 1 and "not a suite directory" in res.output
    assert invoke("run", str(tmp_path / "missing.yaml")).exit_code == 1


def test_cli_run_exits_1_when_a_run_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench_cli.tasks.valleys import Rosenbrock

    def broken(self, model, batch):
        raise RuntimeError("boom")

    monkeypatch.setattr(Rosenbrock, "loss", broken)
    res = invoke("run", str(write_suite(tmp_path, steps=10)), "--out", str(tmp_path / "o"), "-q")
    assert res.exit_code == 1 and "failed" in res.output and "boom" in res.output
    assert len(records_in(tmp_path / "o")) == 8  # a failed run is a record, the suite went on
