"""Hardening of suite folders and runs, each case through the CLI as a user meets it: damaged
side files and claims, leftovers of a kill, a full disk, a task whose set-up fails, data paths,
plug-in paths and defaults, the divergence bound, and conflicting or huge requests."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli.cli import app

runner = CliRunner()
SIDE = {"environment.json", "calibration.json", "selection.json"}

SUITE = """
name: h
seeds: [0]
device: cpu
plugins: [{plugin}]
tasks:
  - name: {task}
    options: {{preset: tiny{options}}}
    budget: {{steps: 20, eval_interval: 10}}
    {target}
optimizers:
  - name: adamw
  - name: lion
"""


def suite_file(
    folder: Path,
    task: str = "noisy-quadratic",
    plugin: str = "",
    options: str = "",
    target: str = "",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "s.yaml"
    path.write_text(SUITE.format(plugin=plugin, task=task, options=options, target=target))
    return path


def records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in folder.glob("*.json") if p.name not in SIDE]


def one_line_error(res, *words: str) -> None:
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for w in words:
        assert w in lines[0], res.output


def test_a_full_disk_is_one_line_no_marker_and_the_cell_runs_on_resume(tmp_path) -> None:
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "bench_cli",
        "run",
        "--opt",
        "adamw",
        "--task",
        "rosenbrock",
        "--steps",
        "50",
        "--out",
        str(out),
        "--quiet",
    ]

    def small_files() -> None:  # like `ulimit -f 2`: no file over 2 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))

    full = subprocess.run(args, capture_output=True, text=True, preexec_fn=small_files)
    assert full.returncode == 1
    assert full.stderr.strip().startswith("error:") and len(full.stderr.strip().splitlines()) == 1
    assert "ulimit -f" in full.stderr  # the file-size limit stands in for a full disk
    assert not records(out) and not list((out / ".running").iterdir())
    assert not list(out.glob(".*.tmp"))
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert len(records(out)) == 1 and "reused" not in again.stderr


def test_a_disk_full_before_the_folders_first_file_is_one_line_and_leaves_no_file(
    tmp_path,
) -> None:
    out = tmp_path / "out"
    args = [sys.executable, "-m", "bench_cli", "run", "--opt", "adamw", "--task", "rosenbrock"]
    args += ["--steps", "20", "--out", str(out), "--quiet"]

    def tiny_files() -> None:  # no file over 64 bytes: not even the folder's suite file
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    full = subprocess.run(args, capture_output=True, text=True, preexec_fn=tiny_files)
    assert full.returncode == 1
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write"), full.stderr
    assert "ulimit -f" in lines[0]
    assert not [p for p in out.rglob("*") if p.is_file()]


def test_a_full_disk_anywhere_in_a_command_is_one_line_and_other_os_errors_are_not_hidden(
    capsys,
) -> None:
    import errno

    import pytest
    import typer

    from bench_cli.display import friendly

    def failing(code: int):
        @friendly
        def command() -> None:
            raise OSError(code, os.strerror(code))

        return command

    with pytest.raises(typer.Exit):
        failing(errno.ENOSPC)()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "free some space" in err[0]
    with pytest.raises(PermissionError):  # a bug or a setup problem: its traceback is shown
        failing(errno.EACCES)()


def test_a_claim_interrupted_while_it_is_written_is_not_left_behind(tmp_path, monkeypatch):
    import pytest

    from bench_cli import folder as folder_module
    from bench_cli.results import store

    folder = folder_module.Folder(tmp_path / "out")
    folder.path.mkdir()

    def interrupted(*args, **kwargs):  # Ctrl-C while the claim's file is written
        raise KeyboardInterrupt

    monkeypatch.setattr(store.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        folder.claim("cell")
    monkeypatch.undo()
    assert not list((folder.path / ".running").iterdir())  # no claim, no temporary file
    assert folder.running("cell") is None
    assert folder.claim("cell")  # free at once, not after a heartbeat


def test_a_task_whose_prepare_raises_gives_error_records_and_the_suite_goes_on(tmp_path) -> None:
    plugin = tmp_path / "broken.py"
    plugin.write_text(
        "from bench_cli.tasks import TASKS\n"
        "from bench_cli.tasks.valleys import NoisyQuadratic\n"
        "@TASKS.register('broken-quadratic')\n"
        "class Broken(NoisyQuadratic):\n"
        "    def prepare(self, device):\n"
        "        raise RuntimeError('the data server is down')\n"
    )
    path = suite_file(tmp_path, "broken-quadratic", plugin=str(plugin))
    with path.open("a") as fh:
        fh.write(
            "  - name: noisy-quadratic\n    options: {preset: tiny}\n"
            "    budget: {steps: 20, eval_interval: 10}\n"
        )
    text = path.read_text().replace("optimizers:\n  - name: adamw\n  - name: lion\n", "")
    path.write_text(text + "optimizers:\n  - name: adamw\n  - name: lion\n")
    res = runner.invoke(app, ["suite", "run", str(path), "--out", str(tmp_path / "out"), "-q"])
    assert res.exit_code == 1  # failed cells fail the command, after the suite has finished
    got = {(r["task"], r["optimizer"]): r for r in records(tmp_path / "out")}
    assert len(got) == 4
    assert all(got[("broken-quadratic", o)]["status"] == "error" for o in ("adamw", "lion"))
    assert "the data server is down" in got[("broken-quadratic", "adamw")]["error"]
    assert all(got[("noisy-quadratic", o)]["status"] == "done" for o in ("adamw", "lion"))


def test_damaged_side_files_are_one_line_errors(tmp_path) -> None:
    path = suite_file(tmp_path)
    out = tmp_path / "out"
    assert runner.invoke(app, ["suite", "run", str(path), "--out", str(out), "-q"]).exit_code == 0
    good = (out / "suite.resolved.yaml").read_bytes()
    (out / "suite.resolved.yaml").write_bytes(b"\xff\xfe\x00binary")
    one_line_error(runner.invoke(app, ["suite", "status", str(out)]), "suite.resolved.yaml")
    one_line_error(runner.invoke(app, ["suite", "run", str(path), "--out", str(out)]), "damaged")
    (out / "suite.resolved.yaml").write_bytes(b"name: [unclosed\n\x00")  # YAML, damaged
    one_line_error(runner.invoke(app, ["suite", "status", str(out)]), "is damaged", "restore it")
    one_line_error(runner.invoke(app, ["suite", "run", str(path), "--out", str(out)]), "damaged")
    (out / "suite.resolved.yaml").write_bytes(good)
    for bad in (
        b"\x00\xff binary",
        b"[1, 2]",
        b'{"noisy-quadratic(preset=tiny)": {"value": "abc"}}',
    ):
        (out / "calibration.json").write_bytes(bad)
        one_line_error(runner.invoke(app, ["suite", "status", str(out)]), "calibration.json")
    (out / "calibration.json").unlink()
    assert runner.invoke(app, ["suite", "status", str(out)]).exit_code == 0


@pytest.mark.parametrize("name", [".running", ".checkpoints", ".runs"])
def test_a_file_where_a_folder_keeps_its_claims_or_checkpoints_is_one_line(tmp_path, name) -> None:
    """A file (or a link to nowhere) named as one of the folder's own subfolders: `suite run`
    and `bench run` refuse the folder and write nothing; `suite status` warns."""
    path = suite_file(tmp_path)
    out, single = tmp_path / "out", tmp_path / "single"
    assert runner.invoke(app, ["suite", "run", str(path), "--out", str(out), "-q"]).exit_code == 0
    (out / f"{records(out)[0]['run_id']}.json").unlink()  # a cell left to run
    (out / ".running").rmdir()
    if name == ".runs":
        (out / name).symlink_to(out / "gone")  # a link to nowhere
    else:
        (out / name).write_text("x")
    before = sorted(p.name for p in out.iterdir())
    again = runner.invoke(app, ["suite", "run", str(path), "--out", str(out), "-q"])
    one_line_error(again, f"{out / name} is not a folder", "move it away")
    assert sorted(p.name for p in out.iterdir()) == before
    status = runner.invoke(app, ["suite", "status", str(out)])
    assert status.exit_code == 0 and f"warning: {out / name} is not a folder" in status.output
    single.mkdir()
    (single / name).write_text("x")
    run = ["run", "--opt", "adamw", "--task", "rosenbrock", "--steps", "5", "--out", str(single)]
    one_line_error(runner.invoke(app, [*run, "-q"]), f"{single / name} is not a folder")
    assert [p.name for p in single.iterdir()] == [name]


def test_status_names_records_copied_in_from_another_suite(tmp_path) -> None:
    """Merging copies records; one of another suite (here: other steps) is not this suite's cell.
    `bench leaderboard` would count it, so `suite status` names it."""
    path, other = suite_file(tmp_path / "a"), suite_file(tmp_path / "b")
    other.write_text(other.read_text().replace("steps: 20", "steps: 30"))
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    for suite, folder in ((path, out), (other, elsewhere)):
        res = runner.invoke(app, ["suite", "run", str(suite), "--out", str(folder), "-q"])
        assert res.exit_code == 0, res.output
    export = runner.invoke(
        app, ["export", str(out), "--format", "json", "--out", str(out / "t.json")]
    )
    assert export.exit_code == 0, export.output
    clean = runner.invoke(app, ["suite", "status", str(out)])
    assert clean.exit_code == 0 and "warning" not in clean.output, clean.output
    foreign = records(elsewhere)[0]["run_id"]
    (out / f"{foreign}.json").write_bytes((elsewhere / f"{foreign}.json").read_bytes())
    res = runner.invoke(app, ["suite", "status", str(out)])
    said = " ".join(res.output.split())
    assert res.exit_code == 0 and "2 done" in said, res.output
    assert (
        f"warning: 1 record file(s) here are not cells this suite has planned ({foreign})" in said
    )


@pytest.mark.parametrize("damage", ["garbage", "a folder"])
def test_claims_that_are_damaged_or_name_an_unrelated_live_pid_are_not_running(
    tmp_path, damage
) -> None:
    path = suite_file(tmp_path)
    out = tmp_path / "out"
    assert runner.invoke(app, ["suite", "run", str(path), "--out", str(out), "-q"]).exit_code == 0
    run_ids = [r["run_id"] for r in records(out)]
    for p in out.glob("*.json"):
        if p.name not in SIDE:
            p.unlink()
    markers = out / ".running"
    if damage == "garbage":
        (markers / run_ids[0]).write_text("[1,2,3]")
    else:
        (markers / run_ids[0]).mkdir()
        (markers / run_ids[0] / "x").write_text("x")
    unrelated = {"host": os.uname().nodename, "pid": 1, "pid_start": "0", "claimed_at": "x"}
    (markers / run_ids[1]).write_text(json.dumps(unrelated))  # pid 1 lives, but it is not ours
    old = time.time() - 3600  # the damaged claim is fresh: damage alone makes it no one's
    res = runner.invoke(app, ["suite", "status", str(out)])
    assert res.exit_code == 0 and "2 interrupted" in res.output, res.output
    (out / ".h.tmp").write_text("partial")  # what a kill mid-write leaves
    os.utime(out / ".h.tmp", (old, old))
    again = runner.invoke(app, ["suite", "run", str(path), "--out", str(out), "-q"])
    assert again.exit_code == 0
    assert len(records(out)) == 2 and not list(markers.iterdir())
    assert not (out / ".h.tmp").exists()


def test_status_reports_damaged_records_and_counts_them_missing(tmp_path) -> None:
    path = suite_file(tmp_path)
    out = tmp_path / "out"
    assert runner.invoke(app, ["suite", "run", str(path), "--out", str(out), "-q"]).exit_code == 0
    cut, link = sorted(r["run_id"] for r in records(out))
    (out / f"{cut}.json").write_bytes((out / f"{cut}.json").read_bytes()[:100])  # truncated
    (out / f"{link}.json").unlink()
    (out / f"{link}.json").symlink_to(out / "gone.json")  # a link to nothing
    res = runner.invoke(app, ["suite", "status", str(out)])
    assert res.exit_code == 0
    for run_id in (cut, link):
        assert f"warning: {run_id}: its record is damaged" in " ".join(res.output.split())
    assert "2 missing" in res.output


def test_suite_paths_resolve_from_the_suite_folder_and_are_checked_up_front(
    tmp_path, monkeypatch, shared_data
) -> None:
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "text.txt").write_bytes((shared_data / "tinyshakespeare.txt").read_bytes())
    plugin = folder / "myopt.py"
    plugin.write_text(
        "import torch\nfrom bench_cli.registry import OPTIMIZERS\n"
        "@OPTIMIZERS.register('mysgd')\n"
        "class MySGD(torch.optim.SGD):\n"
        "    def __init__(self, params, lr=0.01, weight_decay=0.0):\n"
        "        super().__init__(params, lr=lr, weight_decay=weight_decay)\n"
    )
    path = suite_file(folder, "lm-small", plugin="myopt.py", options=", data: text.txt")
    path.write_text(path.read_text().replace("  - name: lion", "  - name: mysgd"))
    monkeypatch.chdir(tmp_path)  # not the suite's folder
    out = tmp_path / "out"
    res = runner.invoke(app, ["suite", "run", "suites/s.yaml", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    mine = next(r for r in records(out) if r["optimizer"] == "mysgd")
    assert mine["hparams"]["lr"] == 0.01  # the plug-in's own default, not the task's AdamW lr
    # the same text at another path is the same data: the folder is the same suite, reused
    moved = tmp_path / "elsewhere.txt"
    moved.write_bytes((folder / "text.txt").read_bytes())
    path.write_text(path.read_text().replace("data: text.txt", f"data: {moved}"))
    again = runner.invoke(app, ["suite", "run", "suites/s.yaml", "--out", str(out), "-q"])
    assert again.exit_code == 0 and "0 runs now" in again.output, again.output
    path.write_text(path.read_text().replace(str(moved), "missing.txt"))
    res = runner.invoke(app, ["suite", "validate", "suites/s.yaml"])
    one_line_error(res, "tasks[0].options.data", "does not exist")


def test_a_loss_far_above_its_start_is_diverged_with_the_bound_recorded(tmp_path) -> None:
    res = runner.invoke(
        app,
        [
            "run",
            "--opt",
            "adamw,lion,mars",
            "--task",
            "rosenbrock",
            "--set",
            "lr=1e3",
            "--steps",
            "200",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    got = records(tmp_path)
    assert {r["status"] for r in got} == {"diverged"}
    start = got[0]["curve"][0]["metrics"]["distance"]
    assert all(r["divergence_bound"] == 10 * start for r in got)
    assert all("divergence bound" in r["error"] for r in got)
    ok = runner.invoke(
        app,
        [
            "run",
            "--opt",
            "adamw",
            "--task",
            "rosenbrock",
            "--steps",
            "200",
            "--out",
            str(tmp_path / "ok"),
            "--quiet",
        ],
    )
    assert ok.exit_code == 0 and records(tmp_path / "ok")[0]["status"] == "done"


def test_conflicting_and_oversized_requests_are_refused_before_anything_is_written(
    tmp_path,
) -> None:
    out = tmp_path / "out"
    one_line_error(
        runner.invoke(
            app,
            [
                "run",
                "--opt",
                "adamw",
                "--task",
                "rosenbrock",
                "--steps",
                "50",
                "--set",
                "steps=60",
                "--out",
                str(out),
            ],
        ),
        "disagree",
    )
    one_line_error(
        runner.invoke(
            app,
            [
                "run",
                "--opt",
                "adamw",
                "--task",
                "rosenbrock",
                "--device",
                "cpu",
                "--set",
                "device=cuda",
                "--out",
                str(out),
            ],
        ),
        "disagree",
    )
    path = suite_file(tmp_path)
    path.write_text(path.read_text().replace("seeds: [0]", f"seeds: {list(range(30))}"))
    one_line_error(
        runner.invoke(app, ["suite", "run", str(path), "--out", str(out), "--max-cells", "50"]),
        "--max-cells",
    )
    assert not out.exists()


def test_mars_on_a_vector_only_task_runs_and_records_its_mars_update(tmp_path) -> None:
    """Every parameter of the valleys is 1-D; MARS must not silently run its AdamW branch."""
    res = runner.invoke(
        app,
        [
            "run",
            "--opt",
            "adamw,mars",
            "--task",
            "rosenbrock",
            "--steps",
            "100",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
    )
    assert res.exit_code == 0, res.output
    got = {r["optimizer"]: r for r in records(tmp_path)}
    assert got["mars"]["optimizer_branches"] == {"mars": 1, "adamw": 0}
    assert got["adamw"]["optimizer_branches"] is None
    assert [p["metrics"] for p in got["mars"]["curve"]] != [
        p["metrics"] for p in got["adamw"]["curve"]
    ]


def test_bench_run_dry_run_shows_the_resolved_cells_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "run",
            "--opt",
            "adamw,lion",
            "--task",
            "rosenbrock",
            "--seed",
            "0,1",
            "--set",
            "lion.lr=0.001",
            "--out",
            str(out),
            "--dry-run",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "phase score: 2 cells" in res.output  # rosenbrock is seed-independent: one seed
    lion = next(ln for ln in res.output.splitlines() if " lion " in ln)
    assert "lr=0.001" in lion and "steps 3000" in lion
    assert not out.exists()


def test_two_claimers_in_one_process_race_for_a_cell_and_exactly_one_wins(tmp_path) -> None:
    """Two claimers with one pid (containers on two hosts sharing a folder, threads): each
    round exactly one holds the cell, and neither fails."""
    import threading

    from bench_cli.folder import Folder

    a, b = Folder(tmp_path / "out"), Folder(tmp_path / "out")
    a.path.mkdir()
    b.me = {**b.me, "host": "another-host"}

    def claim(folder: Folder, run_id: str, start, won: list, errors: list) -> None:
        start.wait()
        try:
            won.append(folder.claim(run_id))
        except Exception as exc:  # noqa: BLE001 - the test's finding
            errors.append(exc)

    for round_ in range(100):
        won, errors, start = [], [], threading.Barrier(2)
        args = [(f, f"cell{round_}", start, won, errors) for f in (a, b)]
        threads = [threading.Thread(target=claim, args=arg) for arg in args]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and sorted(won) == [False, True], (round_, errors, won)
    assert not list((tmp_path / "out" / ".running").glob(".*.tmp"))


def test_cleaning_leftovers_passes_over_a_temporary_file_that_vanishes(tmp_path, monkeypatch):
    from bench_cli.folder import Folder

    folder = Folder(tmp_path)
    (tmp_path / ".running").mkdir()
    gone = tmp_path / ".running" / ".cell.12345678.tmp"  # another host's writer, just finishing
    gone.write_text("{}")
    stat = Path.stat

    def vanished(self, *args, **kwargs):
        if self.name == gone.name:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", vanished)
    folder.clean_leftovers()  # no error


def test_a_claims_file_left_by_a_killed_coordinator_is_cleaned_at_once(tmp_path) -> None:
    """The file a claim is written to before it is linked into place says whose it is: once
    that process is gone it is removed by the next command, as a claim would be taken over; a
    live process's stays."""
    from bench_cli.folder import Folder

    folder = Folder(tmp_path)
    (tmp_path / ".running").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], text=True, capture_output=True
    )
    dead = tmp_path / ".running" / ".cell-a.k1ll3d00.tmp"
    dead.write_text(json.dumps({**folder.me, "pid": int(done.stdout)}))
    live = tmp_path / ".running" / ".cell-b.l1v3aaaa.tmp"
    live.write_text(json.dumps(folder.me))
    folder.clean_leftovers()
    assert not dead.exists() and live.exists()
