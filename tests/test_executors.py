"""Executors: one path for every run, worker pools, crashes, shared folders, Ray, SLURM.

Each test runs real suites on the CPU (tiny tasks) and compares records against the records of
another executor or an uninterrupted run, timings aside.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli import suite
from bench_cli.cli import app
from bench_cli.results.record import RunRecord
from bench_cli.results.store import read_record

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).with_name("executor_plugins.py")
SIDE = {"environment.json", "calibration.json", "selection.json"}


def records_in(folder: Path) -> dict[str, RunRecord]:
    return {
        r.run_id: r
        for r in (read_record(p) for p in Path(folder).glob("*.json") if p.name not in SIDE)
    }


def comparable(r: RunRecord) -> dict:
    """A record without what varies between identical runs: clocks, host load, threads."""
    d = r.model_dump(
        exclude={
            "started_at",
            "finished_at",
            "train_seconds",
            "eval_seconds",
            "setup_seconds",
            "tokens_per_second",
            "seconds_to_target",
        }
    )
    d["env"] = {k: v for k, v in d["env"].items() if k in ("device", "torch", "world_size")}
    d["curve"] = [{k: v for k, v in p.items() if k != "seconds"} for p in d["curve"]]
    return d


def bench(*args: str, env: dict | None = None, cwd: Path | None = None):
    full = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "bench_cli", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=600,
    )


PLAIN = "  - name: adamw\n  - name: lion\n"
TUNED = "  - name: adamw\n    sweep: {lr: [0.01, 0.03]}\n"


def write_suite(
    path: Path,
    task: str,
    seeds: str = "[0, 1, 2]",
    extra: str = "",
    optimizers: str = PLAIN,
    steps: int = 30,
) -> Path:
    path.write_text(
        f"""
name: {path.stem}
seeds: {seeds}
device: cpu
plugins: [{PLUGINS}]
tasks:
  - name: {task}
    options: {{preset: tiny}}
    budget: {{steps: {steps}, eval_interval: 10}}
optimizers:
{optimizers}{extra}
"""
    )
    return path


def tuned_suite(path: Path, seeds: str = "[0, 1, 2]", steps: int = 30, lion: bool = True) -> Path:
    """``counted-quadratic`` with a tuning phase (AdamW's two learning rates, and Lion's) and a
    scoring phase."""
    lion_sweep = "  - name: lion\n    sweep: {lr: [0.0001, 0.0003]}\n" if lion else ""
    return write_suite(path, "counted-quadratic", seeds, "", TUNED + lion_sweep, steps)


def test_jobs_2_gives_the_records_of_jobs_1_on_the_smoke_suite(tmp_path, shared_data) -> None:
    env = {"BENCH_DATA_DIR": str(shared_data)}
    one = bench(
        "suite",
        "run",
        str(ROOT / "suites/ci-smoke.yaml"),
        "--out",
        str(tmp_path / "a"),
        "--jobs",
        "1",
        "--threads",
        "1",
        "--quiet",
        env=env,
    )
    two = bench(
        "suite",
        "run",
        str(ROOT / "suites/ci-smoke.yaml"),
        "--out",
        str(tmp_path / "b"),
        "--jobs",
        "2",
        "--threads",
        "1",
        env=env,
    )
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    a, b = records_in(tmp_path / "a"), records_in(tmp_path / "b")
    assert len(a) == 37 and sorted(a) == sorted(b)
    assert all(comparable(a[k]) == comparable(b[k]) for k in a)
    assert {r.env.threads for r in b.values()} == {1}
    # off a terminal, progress is one plain line per finished cell
    assert two.stderr.count("done     score") + two.stderr.count("diverged score") == 28


def test_a_killed_worker_leaves_an_error_record_and_the_suite_goes_on(tmp_path) -> None:
    path = write_suite(tmp_path / "kill.yaml", "killer-quadratic")
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2})
    by_seed = {(r.optimizer, r.seed): r for r in summary.records}
    assert {k for k, r in by_seed.items() if r.status == "error"} == {("adamw", 1), ("lion", 1)}
    assert "SIGKILL" in by_seed[("adamw", 1)].error
    threads = max(1, (os.cpu_count() or 1) // 2)  # the cores shared by the two workers
    assert by_seed[("adamw", 1)].env.threads == by_seed[("adamw", 0)].env.threads == threads
    assert all(r.status == "done" for k, r in by_seed.items() if k[1] != 1)
    assert not list((tmp_path / "out" / ".running").iterdir())


def test_a_worker_killed_in_the_middle_of_a_message_leaves_the_others_theirs(tmp_path) -> None:
    """A worker that dies halfway through a message breaks only its own pipe: its cell gets an
    error record, and the other worker's messages and cells go on."""
    path = write_suite(tmp_path / "half.yaml", "half-sent-quadratic", "[0, 1, 2, 3]")
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2})
    by_seed = {(r.optimizer, r.seed): r for r in summary.records}
    assert {k for k, r in by_seed.items() if r.status == "error"} == {("adamw", 1), ("lion", 1)}
    assert "SIGKILL" in by_seed[("adamw", 1)].error
    threads = max(1, (os.cpu_count() or 1) // 2)  # the cores shared by the two workers
    assert by_seed[("adamw", 1)].env.threads == by_seed[("adamw", 0)].env.threads == threads
    assert all(r.status == "done" for k, r in by_seed.items() if k[1] != 1)
    assert len(by_seed) == 8


@pytest.mark.parametrize(
    "task, where",
    [("exiting-quadratic", "in at_step"), ("exiting-record-quadratic", "in seed_independent")],
)
def test_sys_exit_in_a_run_fails_that_run_alone_inline_and_in_workers(tmp_path, task, where):
    """A task's ``sys.exit``, in its training loop or as its record is made, is its run's error
    record, in the coordinator (``--jobs 1``) as in a worker: the other runs go on, and both
    folders hold the same records."""
    out = {}
    for jobs in ("1", "2"):
        out[jobs] = tmp_path / f"jobs{jobs}"
        done = bench(
            "run", "--opt", "adamw", "--task", task, "--seed", "0,1,2",
            "--plugin", str(PLUGINS), "--out", str(out[jobs]), "--jobs", jobs, "-q",
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "SystemExit: 3 (the task's" in done.stderr
    a, b = records_in(out["1"]), records_in(out["2"])
    assert sorted(r.status for r in a.values()) == ["done", "done", "error"]
    [failed] = [r for r in a.values() if r.status == "error"]
    assert failed.seed == 1 and where in failed.error  # where it exited, from its traceback
    assert sorted(a) == sorted(b) and all(comparable(a[k]) == comparable(b[k]) for k in a)


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize(
    "task, why",
    [
        ("failing-setup-quadratic", "RuntimeError: no data for this task"),
        ("exiting-setup-quadratic", "SystemExit: 5 (the task's"),  # it called sys.exit
    ],
)
def test_a_failed_set_up_is_an_error_record_with_its_traceback(tmp_path, jobs, task, why):
    path = write_suite(tmp_path / "setup.yaml", task, "[0]")
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": jobs})
    assert [r.status for r in summary.records] == ["error", "error"]
    for r in summary.records:
        assert f"set-up failed: {why}" in r.error
        assert "in prepare" in r.error  # where it failed, from its own traceback


def test_workers_start_once_for_every_phase_of_a_suite(tmp_path, monkeypatch) -> None:
    path = tuned_suite(tmp_path / "phases.yaml")
    count = tmp_path / "count.txt"
    monkeypatch.setenv("BENCH_TEST_COUNT", str(count))
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2})
    roles = {r.role for r in summary.records}
    assert {"tune", "score"} <= roles  # two phases, each with cells for both workers
    pids = count.read_text().splitlines()
    assert len(pids) == len(summary.records) == summary.ran
    assert os.getpid() not in map(int, pids)  # the cells ran in workers
    assert len(set(pids)) == 2  # one worker per job, started once for both phases


def test_runs_per_gpu_come_from_nvml_without_a_cuda_context(monkeypatch) -> None:
    import types

    import torch

    from bench_cli.executors import local

    free = {"GPU-aaa": 40 * 2**30, "GPU-bbb": 20 * 2**30}  # NVML knows GPUs by UUID
    calls = []
    nvml = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetHandleByUUID=lambda uuid: uuid,
        nvmlDeviceGetMemoryInfo=lambda handle: types.SimpleNamespace(free=free[handle]),
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    props = [types.SimpleNamespace(uuid="aaa"), types.SimpleNamespace(uuid="bbb")]
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda g: props[g])

    def context(g):
        raise AssertionError("the coordinator made a CUDA context")

    monkeypatch.setattr(torch.cuda, "mem_get_info", context)
    # 90% of the fullest GPU's free memory over the task's need, at least 1, at most 4
    assert local.default_runs_per_gpu([0, 1], 6.0) == 3  # 20 GiB: 18 // 6
    assert local.default_runs_per_gpu([0], 6.0) == 4  # 40 GiB: 36 // 6 = 6, at most 4
    assert local.default_runs_per_gpu([1], 30.0) == 1
    assert calls == ["init", "shutdown"] * 3
    # without NVML (no library, no driver), CUDA's own count
    monkeypatch.setattr(nvml, "nvmlInit", lambda: (_ for _ in ()).throw(RuntimeError("no NVML")))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda g: ([7, 9][g] * 2**30, 80 * 2**30))
    assert local.default_runs_per_gpu([0, 1], 2.0) == 3  # 7 GiB: 6.3 // 2


def test_a_phase_that_needs_less_memory_keeps_the_pool(tmp_path, monkeypatch) -> None:
    """Calibration runs only the calibrated (small) task; tuning and scoring run the big one
    too. The pool chose its runs per GPU from the larger need and serves every phase."""
    import torch

    from bench_cli.executors import local

    needs = []
    monkeypatch.setattr(local, "default_runs_per_gpu", lambda gpus, need: needs.append(need) or 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # as on a machine with one GPU
    path = tmp_path / "need.yaml"
    path.write_text(
        f"""
name: need
seeds: [0, 1]
device: cpu
plugins: [{PLUGINS}]
tasks:
  - name: counted-quadratic
    options: {{preset: tiny}}
    budget: {{steps: 20, eval_interval: 10}}
    target: calibrate
  - name: big-quadratic
    options: {{preset: tiny}}
    budget: {{steps: 20, eval_interval: 10}}
optimizers:
  - name: adamw
    sweep: {{lr: [0.01, 0.03]}}
"""
    )
    count = tmp_path / "count.txt"
    monkeypatch.setenv("BENCH_TEST_COUNT", str(count))
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"gpus": [0], "mps": False})
    assert {r.role for r in summary.records} == {"tune", "calibrate", "score"}
    assert needs == [8.0]  # one pool, sized for the big task
    assert len(set(count.read_text().splitlines())) == 2  # its two workers ran every cell


def test_an_idle_worker_killed_before_its_end_was_read_leaves_the_next_phase_alone(
    tmp_path, monkeypatch
) -> None:
    """Both workers finish their tuning cells and send "end"; before the coordinator reads
    those messages both are killed (the OOM killer, a user). The cells keep their records and
    statuses, and the scoring phase runs on new workers, unbothered by the stale messages."""
    import multiprocessing as mp

    from bench_cli.folder import Folder
    from bench_cli.progress import Progress

    class SlowOnce(Progress):
        def __init__(self, out: Path):
            super().__init__(quiet=True)
            self.out, self.cells, self.stalled, self.finished_as = out, [], False, []

        def started(self, cell):
            self.cells.append(cell)
            super().started(cell)

        def step(self, run_id, step, total):
            if not self.stalled and len(self.cells) == 2:
                self.stalled = True
                folder, deadline = Folder(self.out), time.monotonic() + 120
                while any(folder.record(c.run_id) is None for c in self.cells):
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
                time.sleep(1.0)  # their "end" messages are in the queue
                for p in mp.active_children():
                    os.kill(p.pid, signal.SIGKILL)
                time.sleep(0.5)
            super().step(run_id, step, total)

        def finished(self, cell, status):
            self.finished_as.append((cell.spec.role, status))
            super().finished(cell, status)

    path = tuned_suite(tmp_path / "stale.yaml", lion=False)
    monkeypatch.setenv("BENCH_TEST_COUNT", str(tmp_path / "count.txt"))
    progress = SlowOnce(tmp_path / "out")
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2}, progress=progress)
    assert progress.stalled
    assert {r.status for r in summary.records} == {"done"}
    assert progress.finished_as == [("tune", "done")] * 2 + [("score", "done")] * 3


def test_a_second_ctrl_c_while_the_pool_closes_leaves_no_worker_and_stops_the_daemon() -> None:
    """Ctrl-C during the wait for the workers to stop: every worker left is killed and the MPS
    daemon stopped before the interruption goes on."""
    from bench_cli.executors import local

    class Process:  # a worker that does not stop while it is waited for
        alive = True

        def is_alive(self):
            return self.alive

        def terminate(self):
            pass

        def join(self, timeout=None):
            raise KeyboardInterrupt

        def kill(self):
            self.alive = False

    class Daemon:
        closed = False

        def close(self):
            self.closed = True

    pool = local.LocalExecutor([local.Slot(None, 1)] * 3)
    workers = [
        local._Worker(s, Process(), inbox=None, results=None, cell="busy") for s in pool.slots
    ]
    pool._workers = list(workers)
    pool._mps = daemon = Daemon()
    with pytest.raises(KeyboardInterrupt):
        pool.close()
    assert not any(w.process.is_alive() for w in workers)
    assert daemon.closed


def test_two_coordinators_on_one_folder_run_each_cell_exactly_once(tmp_path) -> None:
    path = write_suite(tmp_path / "count.yaml", "counted-quadratic", "[0, 1, 2, 3, 4, 5]")
    count = tmp_path / "count.txt"
    env = {"BENCH_TEST_COUNT": str(count)}
    args = [
        sys.executable,
        "-m",
        "bench_cli",
        "suite",
        "run",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--quiet",
    ]
    procs = [
        subprocess.Popen(args, env={**os.environ, **env}, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert len(count.read_text().splitlines()) == 12  # 2 optimizers x 6 seeds, once each
    assert len(records_in(tmp_path / "out")) == 12


def test_two_rerun_coordinators_on_one_folder_replace_each_record_once(tmp_path) -> None:
    count, out = tmp_path / "count.txt", tmp_path / "out"
    args = [
        sys.executable, "-m", "bench_cli", "run", "--plugin", str(PLUGINS), "--opt", "adamw,lion",
        "--task", "counted-quadratic", "--set", "preset=tiny", "--steps", "30", "--seed",
        "0,1,2,3,4,5", "--device", "cpu", "--out", str(out), "--quiet", "--rerun",
    ]  # fmt: skip
    env = {**os.environ, "BENCH_TEST_COUNT": str(count)}
    subprocess.run(args, env=env, check=True, capture_output=True)
    old = {p.name: p.stat().st_ino for p in out.glob("counted-quadratic*.json")}
    count.unlink()
    # both under way before either replaces a record: a coordinator that starts after a record
    # was replaced takes that record for one its --rerun must replace, and rightly runs it again
    env["BENCH_TEST_TOGETHER"] = "2"
    procs = [subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    assert len(count.read_text().splitlines()) == 12  # 2 optimizers x 6 seeds, once each
    new = {p.name: p.stat().st_ino for p in out.glob("counted-quadratic*.json")}
    assert len(old) == 12 and sorted(new) == sorted(old)
    assert all(new[k] != old[k] for k in old)  # every record replaced


def test_bench_run_commands_that_share_cells_count_them_once_in_status(tmp_path) -> None:
    out = str(tmp_path / "out")
    base = ["run", "--task", "noisy-quadratic", "--set", "preset=tiny", "--opt", "adamw"]
    runner = CliRunner()
    for seeds in ("0", "0,1"):  # the second reuses seed 0's record
        assert runner.invoke(app, [*base, "--seed", seeds, "--out", out, "-q"]).exit_code == 0
    table = suite.suite_status(out)
    assert sorted(table["seed"]) == [0, 1] and set(table["state"]) == {"done"}


def test_two_different_suites_started_together_in_one_folder_are_refused(tmp_path) -> None:
    a = write_suite(tmp_path / "a.yaml", "noisy-quadratic")
    b = write_suite(tmp_path / "b.yaml", "noisy-quadratic", "[7]")
    out = str(tmp_path / "out")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench_cli", "suite", "run", str(p), "--out", out, "--quiet"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in (a, b)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1]
    refused = next(err for code, err in results if code == 1)
    assert "holds another suite" in refused and len(refused.strip().splitlines()) == 1


def test_bench_run_reuses_its_records_and_rerun_replaces_them(tmp_path) -> None:
    runner = CliRunner()
    args = [
        "run",
        "--opt",
        "adamw,lion",
        "--task",
        "noisy-quadratic",
        "--set",
        "preset=tiny",
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0 and "records written to" in first.output, first.output
    before = {k: r.finished_at for k, r in records_in(tmp_path).items()}
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "reused 2 records" in again.output
    assert "records written" not in again.output  # nothing was
    assert {k: r.finished_at for k, r in records_in(tmp_path).items()} == before
    time.sleep(1.1)
    rerun = runner.invoke(app, [*args, "--rerun"])
    assert rerun.exit_code == 0 and "reused" not in rerun.output
    after = records_in(tmp_path)
    assert sorted(after) == sorted(before)
    assert all(after[k].finished_at != before[k] for k in before)
    status = runner.invoke(app, ["suite", "status", str(tmp_path)])
    assert status.exit_code == 0 and "2 done" in status.output


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _stop_mid_run(tmp_path: Path, args: list[str], sig: int, runs: int = 2, env=None):
    """Start ``bench ARGS`` on stalled-quadratic cells, send ``sig`` once ``runs`` of them (or
    more) are in their ten-minute set-up; its exit code, the pids that ran them, and its
    stderr."""
    count = tmp_path / "n"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TEST_COUNT": str(count), **(env or {})}
    # a shell that starts the tests in the background ignores SIGINT in them; Ctrl-C's own
    # handling is what is tested here, so the command gets the default back
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench_cli", *args],
            env=env,
            stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(pids := _pids(count)) < runs:
            time.sleep(0.05)
        assert len(pids) >= runs, "the runs should have started"
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    return code, pids, (tmp_path / "stderr").read_text()


def _pids(count: Path) -> list[int]:
    return [int(x) for x in count.read_text().split()] if count.exists() else []


def _gone(pids: list[int], seconds: float) -> bool:
    t0 = time.time()
    while time.time() - t0 < seconds and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    return not any(_alive(pid) for pid in pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_coordinator_stops_its_busy_workers_at_once(tmp_path, sig) -> None:
    # stalled-quadratic spends ten minutes in set-up, where a run sends no progress
    path = write_suite(tmp_path / "stop.yaml", "stalled-quadratic", "[0]")
    out = tmp_path / "out"
    args = ["suite", "run", str(path), "--out", str(out), "--jobs", "2", "--quiet"]
    code, pids, stderr = _stop_mid_run(tmp_path, args, sig)
    # a busy worker is stopped, not waited for; a killed coordinator's workers die with it
    assert _gone(pids, 5)
    assert not list(out.glob("stalled-quadratic*.json"))
    claims = list((out / ".running").iterdir())
    if sig == signal.SIGKILL:  # no cleanup can run: the claims stay, held by a dead process
        assert code == -signal.SIGKILL and len(claims) == 2
        status = CliRunner().invoke(app, ["suite", "status", str(out)])
        assert "2 interrupted" in status.output
    else:
        assert code != 0 and not claims  # a rerun runs them: nobody holds them
    if sig != signal.SIGKILL:  # said in one line, as Ctrl-C or as SIGTERM
        said = {signal.SIGINT: "stopped by Ctrl-C", signal.SIGTERM: "stopped by SIGTERM"}[sig]
        assert code == 128 + sig and said in stderr and "the same command resumes" in stderr
        assert "Traceback" not in stderr


def test_sigterm_during_a_run_in_the_coordinator_stops_the_command(tmp_path) -> None:
    """With one job the cells run in the coordinator: SIGTERM there stops the command, unlike a
    ``sys.exit`` in a task's code, which only fails its run."""
    path = write_suite(tmp_path / "stop.yaml", "stalled-quadratic", "[0]")
    out = tmp_path / "out"
    args = ["suite", "run", str(path), "--out", str(out), "--jobs", "1", "--quiet"]
    code, pids, stderr = _stop_mid_run(tmp_path, args, signal.SIGTERM, runs=1)
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in stderr
    assert _pids(tmp_path / "n") == pids  # the other cell never started
    assert not list(out.glob("stalled-quadratic*.json")) and not list((out / ".running").iterdir())


def test_a_ray_coordinator_stops_on_sigterm_as_the_local_one_does(tmp_path) -> None:
    """Ray puts a SIGTERM handler of its own (an abort, exit 134) in place of the command's."""
    pytest.importorskip("ray")
    path = write_suite(tmp_path / "stop.yaml", "stalled-quadratic", "[0]")
    out = tmp_path / "out"
    args = ["suite", "run", str(path), "--out", str(out), "--quiet", "--executor", "ray"]
    code, _, stderr = _stop_mid_run(tmp_path, args, signal.SIGTERM, runs=1)
    assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in stderr
    assert not list((out / ".running").iterdir())


def test_a_sigterm_during_rays_last_call_is_acted_on_and_a_second_one_kills() -> None:
    from bench_cli.executors.ray import _sigterm_between_calls

    class Stop(Exception):
        pass

    def handler(signum, frame):  # as the command's: a second SIGTERM kills at once
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Stop

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Stop), _sigterm_between_calls(handler) as check:
            check()  # nothing yet
            os.kill(os.getpid(), signal.SIGTERM)  # while Ray waits on its last cell: noted
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_rerun_of_a_cell_whose_ray_task_dies_records_the_new_failure_and_ends(tmp_path) -> None:
    """The old record stays until the new one replaces it: a task that dies writes none, and
    its failure is recorded, not taken for the old record (which sent the cell again forever)."""
    pytest.importorskip("ray")
    args = [
        "run", "--plugin", str(PLUGINS), "--opt", "adamw", "--task", "killer-quadratic", "--set",
        "preset=tiny", "--steps", "10", "--seed", "1", "--device", "cpu", "--executor", "ray",
        "--threads", "1", "--out", str(tmp_path / "out"), "--quiet",
    ]  # fmt: skip
    first = subprocess.run([sys.executable, "-m", "bench_cli", *args], capture_output=True)
    [old] = records_in(tmp_path / "out").values()
    again = subprocess.run(
        [sys.executable, "-m", "bench_cli", *args, "--rerun"], capture_output=True, timeout=240
    )
    assert first.returncode == again.returncode == 1
    [new] = records_in(tmp_path / "out").values()
    assert old.status == new.status == "error" and new.started_at >= old.finished_at
    assert "the Ray task running this cell failed" in new.error


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stopped_slurm_coordinator_cancels_its_jobs(tmp_path) -> None:
    pytest.importorskip("submitit")
    path = write_suite(tmp_path / "stop.yaml", "stalled-quadratic", "[0]")
    out = tmp_path / "out"
    args = ["suite", "run", str(path), "--out", str(out), "--quiet"]
    args += ["--executor", "slurm", "--slurm-cluster", "local", "--threads", "1"]
    code, pids, stderr = _stop_mid_run(tmp_path, args, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    assert _gone(pids, 30)  # its claims are released, so its jobs must not run on
    assert not list((out / ".running").iterdir())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_under_torchrun_sigterm_keeps_its_default_action(tmp_path) -> None:
    # torchrun stops its ranks with SIGTERM; a rank blocked in a collective could not run a
    # Python handler, so a rank keeps the default action: to die at once
    args = ["run", "--plugin", str(PLUGINS), "--opt", "adamw", "--task", "stalled-quadratic"]
    args += ["--set", "preset=tiny", "--device", "cpu", "--quiet", "--out", str(tmp_path / "o")]
    env = {"TORCHELASTIC_RUN_ID": "test"}
    code, pids, stderr = _stop_mid_run(tmp_path, args, signal.SIGTERM, runs=1, env=env)
    assert code == -signal.SIGTERM and "stopped by SIGTERM" not in stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server")
def test_the_fork_server_starts_early_only_for_workers_that_will_use_it(monkeypatch) -> None:
    from multiprocessing import forkserver

    from bench_cli.config import ExecutorSettings
    from bench_cli.executors import forks

    started = []
    monkeypatch.setattr(forkserver, "ensure_running", lambda: started.append(1))
    monkeypatch.setattr(forks.os.path, "exists", lambda path: path == "/dev/nvidiactl")  # a GPU

    def starts(script: bool = False, device: str | None = None, world: int = 1, **settings):
        monkeypatch.setattr(forks, "_runs_a_script", lambda: script)
        monkeypatch.setenv("WORLD_SIZE", str(world))
        started.clear()
        forks.prestart(ExecutorSettings(**settings), device)
        return bool(started)

    assert starts() and starts(jobs=2) and starts(runs_per_gpu=4, gpus=[0])
    assert starts(runs_per_gpu=1, gpus=[0, 1])
    assert not starts(runs_per_gpu=1, gpus=[0])  # one run on one GPU: no pool
    assert not starts(device="cpu") and starts(device="cpu", jobs=2)
    assert not starts(kind="ray") and not starts(kind="slurm", jobs=2)
    assert not starts(script=True, jobs=2)  # a script's workers are spawned
    assert not starts(world=2, jobs=2)  # a torchrun rank trains in its own process


def test_workers_started_by_spawn_run_their_cells(tmp_path, monkeypatch) -> None:
    # where there is no fork server, each worker is a fresh interpreter
    from bench_cli.executors import forks, local

    monkeypatch.setattr(forks.mp, "get_all_start_methods", lambda: ["spawn"])
    assert local.LocalExecutor(local.cpu_slots(2, 1)).ctx.get_start_method() == "spawn"
    path = write_suite(tmp_path / "fs.yaml", "noisy-quadratic", "[0, 1]")
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2, "threads": 1})
    assert summary.records and {r.status for r in summary.records} == {"done"}


PATH_PLUGIN = """
import os
from bench_cli.tasks import TASKS
from bench_cli.tasks.valleys import NoisyQuadratic

@TASKS.register("path-quadratic")
class PathQuadratic(NoisyQuadratic):
    def build_model(self):
        with open(os.environ["BENCH_TEST_COUNT"], "a") as fh:
            fh.write(f"{os.getpid()} {os.environ.get('BENCH_TEST_MARK', '-')}\\n")
        return super().build_model()
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server")
def test_a_forked_worker_runs_with_the_coordinators_environment_and_path_of_its_start(
    tmp_path, monkeypatch
) -> None:
    # the fork server keeps the environment and sys.path of its own start; the variables and the
    # plug-in's folder below come later, and a worker forked from it must still see them
    from multiprocessing import forkserver

    from bench_cli.config import ExecutorSettings
    from bench_cli.executors import forks

    forks.prestart(ExecutorSettings(jobs=2), None)
    forkserver.ensure_running()
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "path_plugin_for_workers.py").write_text(PATH_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    count = tmp_path / "count.txt"
    monkeypatch.setenv("BENCH_TEST_COUNT", str(count))
    monkeypatch.setenv("BENCH_TEST_MARK", "seen")
    path = tmp_path / "env.yaml"
    path.write_text(
        "name: env\nseeds: [0, 1]\ndevice: cpu\nplugins: [path_plugin_for_workers]\n"
        "tasks:\n  - name: path-quadratic\n    options: {preset: tiny}\n"
        "    budget: {steps: 10, eval_interval: 5}\noptimizers:\n  - name: adamw\n"
    )
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2, "threads": 1})
    assert [r.status for r in summary.records] == ["done", "done"]
    lines = [line.split() for line in count.read_text().splitlines()]
    assert len(lines) == 2 and all(mark == "seen" for _, mark in lines)
    assert str(os.getpid()) not in {pid for pid, _ in lines}  # they ran in workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server, /proc")
def test_workers_outlive_their_fork_server_and_their_cells_finish(tmp_path, monkeypatch) -> None:
    # multiprocessing reads a forked worker's exit from its fork server: with the fork server
    # killed, the busy workers must not be taken for dead (error records, workers dropped)
    count = tmp_path / "count.txt"
    monkeypatch.setenv("BENCH_TEST_COUNT", str(count))
    path = write_suite(tmp_path / "fk.yaml", "forkserver-killer-quadratic", "[0, 1, 2, 3]")
    summary = suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2, "threads": 1})
    assert [r.status for r in summary.records] == ["done"] * 8, [r.error for r in summary.records]
    assert len(set(count.read_text().split())) == 2  # the same two workers ran every cell
    assert not list((tmp_path / "out" / ".running").iterdir())


SCRIPT = """
import os, sys
if __name__ == "__mp_main__" and os.environ.get("BENCH_TEST_MARKS"):  # a worker runs it again
    with open(os.environ["BENCH_TEST_MARKS"], "a") as fh:
        fh.write(os.environ.get("BENCH_TEST_MARK", "-") + "\\n")
if __name__ == "__main__":
    from multiprocessing import forkserver
    from bench_cli import suite
    from bench_cli.executors import forks

    if forks.context().get_start_method() == "forkserver":
        forkserver.ensure_running()  # started before the variables below are set
    os.environ["BENCH_TEST_MARKS"], os.environ["BENCH_TEST_MARK"] = sys.argv[2], "seen"
    suite.run_suite(sys.argv[1], out=sys.argv[3], executor={"jobs": 2, "threads": 1})
"""


def test_a_library_script_run_again_in_workers_sees_their_environment(tmp_path) -> None:
    # multiprocessing runs the coordinator's script again in each worker before the worker can
    # set its environment; module-level CUDA calls there must see the worker's GPU, as spawn gave
    script = tmp_path / "lib_script.py"
    script.write_text(SCRIPT)
    path = write_suite(tmp_path / "lib.yaml", "noisy-quadratic", "[0, 1]")
    marks = tmp_path / "marks.txt"
    args = [sys.executable, str(script), str(path), str(marks), str(tmp_path / "out")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert marks.read_text().split() == ["seen", "seen"]  # both workers, with the variable


LAUNCHER = """
import os, sys
if __name__ == "__mp_main__":
    with open(os.environ["BENCH_TEST_MARKS"], "a") as fh:
        fh.write("run again\\n")
from bench_cli.cli import main
if __name__ == "__main__":
    sys.exit(main())
"""


def test_workers_do_not_run_the_bench_launcher_again(tmp_path) -> None:
    # the launcher imports the whole command line; a worker started from it would import it
    # again before it could start, unless bench runs as bench_cli.__main__
    (tmp_path / "bin").mkdir()
    launcher = tmp_path / "bin" / "bench"
    launcher.write_text(LAUNCHER)
    path = write_suite(tmp_path / "l.yaml", "noisy-quadratic", "[0, 1]")
    marks = tmp_path / "marks.txt"
    args = [sys.executable, str(launcher), "suite", "run", str(path), "--out", str(tmp_path / "o")]
    env = {**os.environ, "BENCH_TEST_MARKS": str(marks)}
    done = subprocess.run(
        [*args, "--jobs", "2", "--quiet"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(records_in(tmp_path / "o")) == 4
    assert not marks.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server")
def test_a_forked_worker_writes_with_the_coordinators_umask(tmp_path, monkeypatch) -> None:
    from multiprocessing import forkserver

    from bench_cli.config import ExecutorSettings
    from bench_cli.executors import forks

    forks.prestart(ExecutorSettings(jobs=2), None)
    forkserver.ensure_running()  # with the umask of the tests
    path = write_suite(tmp_path / "um.yaml", "noisy-quadratic", "[0, 1]")
    old = os.umask(0o027)
    try:
        suite.run_suite(path, out=tmp_path / "out", executor={"jobs": 2, "threads": 1})
    finally:
        os.umask(old)
    modes = {p.stat().st_mode & 0o777 for p in (tmp_path / "out").glob("noisy-quadratic*.json")}
    assert modes == {0o640}  # 0o666 less the coordinator's umask


def test_a_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_record(tmp_path) -> None:
    # counted-quadratic takes 10 ms a step, so 400 steps outlast the kill on any machine
    args = [
        "run",
        "--plugin",
        str(PLUGINS),
        "--opt",
        "ademamix",
        "--task",
        "counted-quadratic",
        "--set",
        "preset=tiny",
        "--steps",
        "400",
        "--set",
        "eval_interval=10",
        "--set",
        "checkpoint_minutes=1e-9",
        "--device",
        "cpu",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_TEST_COUNT": str(tmp_path / "n")}
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bench_cli", *args, "--out", str(out)], env=env)
    ckpt_dir = out / ".checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and not (ckpt_dir.is_dir() and any(ckpt_dir.glob("*.pt"))):
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert not list(out.glob("*.json")), "the run finished before it could be killed"
    import torch

    saved = torch.load(next(ckpt_dir.glob("*.pt")), weights_only=True)
    assert 0 < saved["step"] < 400
    resumed = bench(*args, "--out", str(out), env=env)
    assert resumed.returncode == 0, resumed.stderr
    clean = bench(*args, "--out", str(tmp_path / "clean"), env=env)
    assert clean.returncode == 0, clean.stderr
    [a], [b] = records_in(out).values(), records_in(tmp_path / "clean").values()
    assert comparable(a) == comparable(b)
    assert not list(ckpt_dir.glob("*.pt"))  # removed once the record exists


def test_a_damaged_checkpoint_is_reported_and_the_run_starts_over(tmp_path, capsys) -> None:
    from bench_cli.checkpoint import Checkpointer

    ckpt = Checkpointer(tmp_path, "some-run", 1.0)
    ckpt.save({"step": 3})
    assert ckpt.load() == {"step": 3, "run_id": "some-run"}
    ckpt.path.write_bytes(ckpt.path.read_bytes()[:50])  # cut short: damaged on disk
    assert ckpt.load() is None
    err = capsys.readouterr().err
    assert f"warning: the checkpoint {ckpt.path} is damaged" in err and "starts over" in err


def test_another_runs_checkpoint_is_reported_and_the_run_starts_over(tmp_path, capsys) -> None:
    """A checkpoint copied (or renamed) from another run's file would load into a model or
    optimizer of another shape, or resume the wrong run: it is set aside like a damaged one."""
    from bench_cli.checkpoint import Checkpointer

    mine, other = Checkpointer(tmp_path, "run-b", 1.0), Checkpointer(tmp_path, "run-a", 1.0)
    other.save({"step": 3})
    mine.path.write_bytes(other.path.read_bytes())
    assert mine.load() is None
    err = capsys.readouterr().err
    assert f"warning: the checkpoint {mine.path} is not this run's (it holds run-a)" in err
    import torch

    torch.save({"step": 3}, mine.path)  # no run id: not known to be this run's
    assert mine.load() is None and "(it holds no run id)" in capsys.readouterr().err


def test_ray_runs_a_small_suite_to_the_records_of_the_local_executor(tmp_path) -> None:
    pytest.importorskip("ray")
    path = write_suite(tmp_path / "ray.yaml", "noisy-quadratic", "[0, 1]")
    local = suite.run_suite(path, out=tmp_path / "local", executor={"threads": 1})
    remote = bench(
        "suite",
        "run",
        str(path),
        "--out",
        str(tmp_path / "ray"),
        "--executor",
        "ray",
        "--threads",
        "1",
        env={"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0"},
    )
    assert remote.returncode == 0, remote.stderr[-2000:]
    a, b = records_in(tmp_path / "local"), records_in(tmp_path / "ray")
    assert len(a) == 4 and sorted(a) == sorted(b)
    assert all(comparable(a[k]) == comparable(b[k]) for k in a)
    del local


def test_slurm_local_cluster_runs_a_small_suite_end_to_end(tmp_path) -> None:
    pytest.importorskip("submitit")
    path = write_suite(tmp_path / "slurm.yaml", "noisy-quadratic", "[0, 1]")
    local = suite.run_suite(path, out=tmp_path / "local", executor={"threads": 1})
    got = suite.run_suite(
        path,
        out=tmp_path / "slurm",
        executor={"kind": "slurm", "threads": 1, "slurm": {"cluster": "local", "time_minutes": 5}},
    )
    assert [r.status for r in got.records] == ["done"] * 4
    a, b = records_in(tmp_path / "local"), records_in(tmp_path / "slurm")
    assert all(comparable(a[k]) == comparable(b[k]) for k in a)
    assert (tmp_path / "slurm" / ".slurm").is_dir()
    del local


def test_slurm_job_parameters_reach_sbatch(tmp_path, monkeypatch) -> None:
    """A stand-in ``sbatch`` keeps the script submitit writes; its #SBATCH lines are checked."""
    pytest.importorskip("submitit")
    from bench_cli.config import load_suite
    from bench_cli.executors.slurm import SlurmExecutor
    from bench_cli.folder import Folder
    from bench_cli.plan import build_plan

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    path = write_suite(tmp_path / "s.yaml", "noisy-quadratic", "[0, 1]")
    plan = build_plan(load_suite(path))
    settings = suite.executor_settings(
        plan.suite.executor,
        {
            "kind": "slurm",
            "slurm": {
                "cluster": "slurm",
                "partition": "gpu",
                "time_minutes": 90,
                "gpus_per_node": 2,
                "account": "optim",
                "extra": {"qos": "high"},
            },
        },
    )
    folder = Folder(tmp_path / "out")
    (tmp_path / "out").mkdir()
    jobs = SlurmExecutor(settings).submit(
        plan.score_cells({}, {}), folder, lambda c: folder.claim(c.run_id)
    )
    assert len(jobs) == 4
    script = (tmp_path / "submitted.sh").read_text()
    for line in (
        "--partition=gpu",
        "--time=90",
        "--gpus-per-node=2",
        "--account=optim",
        "--qos=high",
        "--array=0-3",
    ):
        assert f"#SBATCH {line}" in script, script


def test_missing_extras_are_one_line_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    path = write_suite(tmp_path / "x.yaml", "noisy-quadratic", "[0]")
    runner = CliRunner()
    for kind, extra in (("ray", "ray"), ("slurm", "slurm")):
        for command in (
            ["suite", "run", str(path)],
            ["run", "--opt", "adamw", "--task", "rosenbrock"],
        ):
            out = tmp_path / f"{kind}-{command[0]}"
            res = runner.invoke(app, [*command, "--out", str(out), "--executor", kind])
            assert res.exit_code == 1
            assert f'pip install "bench-cli[{extra}]"' in res.output
            assert not out.exists()  # refused before anything is written


def _free_port() -> int:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago, closed again
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _refused(tmp_path, *options: str, suite: bool = False):
    """``bench run`` (or ``suite run``) with ``options``: one error line, nothing written."""
    out = tmp_path / "out"
    command = ["run", "--opt", "adamw", "--task", "rosenbrock", "--steps", "5"]
    if suite:
        command = ["suite", "run", str(write_suite(tmp_path / "x.yaml", "noisy-quadratic", "[0]"))]
    res = CliRunner().invoke(app, [*command, *options, "--out", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and res.output.startswith("error:")
    assert not out.exists()  # refused before anything is written
    return " ".join(res.output.split())


def test_the_slurm_executor_without_slurm_is_refused_unless_the_local_cluster_is_asked(
    tmp_path, monkeypatch
) -> None:
    """submitit would quietly run the cells on this machine, dropping partition and flags."""
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    for as_suite in (False, True):
        said = _refused(tmp_path, "--executor", "slurm", "--slurm-partition", "gpu", suite=as_suite)
        assert "--executor slurm: SLURM is not here (no sbatch on PATH)" in said
        assert "--slurm-cluster local" in said


@pytest.mark.parametrize(
    ("options", "flag", "takes"),
    [
        (["--slurm-partition", "gpu"], "--slurm-partition", "--executor slurm"),
        (["--slurm-flag", "qos=high"], "--slurm-flag", "--executor slurm"),
        (["--ray-address", "127.0.0.1:1"], "--ray-address", "--executor ray"),
        (["--executor", "ray", "--slurm-time", "5"], "--slurm-time", "--executor slurm"),
        (["--executor", "ray", "--jobs", "2"], "--jobs", "--executor local"),
        (["--executor", "ray", "--mps"], "--mps", "--executor local"),
        (["--executor", "slurm", "--slurm-cluster", "debug", "--gpus", "0"], "--gpus", "--executor local"),
        (
            ["--executor", "slurm", "--slurm-cluster", "debug", "--runs-per-gpu", "2"],
            "--runs-per-gpu",
            "--executor local or --executor ray",
        ),
    ],
)  # fmt: skip
def test_an_option_of_another_executor_is_refused(tmp_path, options, flag, takes) -> None:
    said = _refused(tmp_path, *options)
    assert f"error: {flag} is an option of {takes}, and the runs go to the" in said


@pytest.mark.parametrize("uri", ["a free port", "foo://x", "without --log mlflow"])
def test_an_mlflow_address_it_cannot_use_is_refused_at_once(tmp_path, uri) -> None:
    """MLflow's client would retry a server where nothing answers for minutes."""
    pytest.importorskip("mlflow")
    log = ["--log", "mlflow"]
    if uri == "a free port":
        uri = f"http://127.0.0.1:{_free_port()}"
        why = "nothing answers at 127.0.0.1:"
    elif uri == "foo://x":
        why = "MLflow cannot use it"
    else:
        uri, log, why = "http://127.0.0.1:1", [], "add --log mlflow"
    started = time.monotonic()
    said = _refused(tmp_path, *log, "--mlflow-uri", uri)
    assert said.startswith(f"error: --mlflow-uri {uri}" if log else "error: --mlflow-uri is where")
    assert why in said
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("address", ["a free port", "host-without-port", "auto", "127.0.0.1:99999"])
def test_a_ray_address_where_nothing_answers_is_refused_at_once(
    tmp_path, address, monkeypatch
) -> None:
    """ray.init would retry an address where no cluster listens for minutes; ``auto`` with no
    cluster on this machine failed only once the command had written the suite's files."""
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if address == "auto":  # as on a machine where no Ray runs, whatever else runs here now
        from ray._private import services

        monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
        monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    if address == "a free port":
        address = f"127.0.0.1:{_free_port()}"
    path = write_suite(tmp_path / "x.yaml", "noisy-quadratic", "[0]")
    out = tmp_path / "out"
    started = time.monotonic()
    res = CliRunner().invoke(
        app, ["suite", "run", str(path), "--out", str(out), "--executor", "ray",
              "--ray-address", address],
    )  # fmt: skip
    assert res.exit_code == 1 and time.monotonic() - started < 60
    why = "nothing answers at 127.0.0.1:" if ":" in address else "give the head's HOST:PORT"
    why = "no Ray cluster runs on this machine" if address == "auto" else why
    why = "give the head's HOST:PORT" if address.endswith(":99999") else why  # no such port
    assert f"--ray-address (or executor.ray_address in a suite file) {address}" in res.output
    assert why in res.output and "Traceback" not in res.output
    assert not out.exists()  # refused before anything is written


@pytest.fixture
def web_server():
    """An HTTP/1 server on a free port: it accepts a connection, but speaks no gRPC."""
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_ray_address_where_a_web_server_answers_is_refused_in_seconds(
    tmp_path, web_server, monkeypatch
) -> None:
    """ray.init waited minutes there (then died of the SIGTERM that stopped it)."""
    pytest.importorskip("ray")
    from bench_cli.executors import ray as ray_executor

    monkeypatch.setattr(ray_executor, "TIMEOUT", 1.0)  # the handshake's wait, 5 s by default
    path = write_suite(tmp_path / "x.yaml", "noisy-quadratic", "[0]")
    address = f"127.0.0.1:{web_server}"
    started = time.monotonic()
    res = CliRunner().invoke(
        app, ["suite", "run", str(path), "--out", str(tmp_path / "out"), "--executor", "ray",
              "--ray-address", address],
    )  # fmt: skip
    assert res.exit_code == 1 and time.monotonic() - started < 30, res.output
    assert (
        f"{address}: 127.0.0.1:{web_server} answers, but not as a Ray cluster does (no gRPC within 1 s)"
        in (" ".join(res.output.split()))
    )
    assert not (tmp_path / "out").exists()


def test_a_sigterm_while_ray_starts_stops_the_command_as_a_sigterm(tmp_path, monkeypatch) -> None:
    """ray.init's own SIGTERM handler exits with the signal's number: that is the command
    stopped (exit 143), not a task's sys.exit."""
    ray = pytest.importorskip("ray")

    def init_interrupted(*args, **kwargs):
        raise SystemExit(signal.SIGTERM)  # what Ray's handler does

    monkeypatch.setattr(ray, "init", init_interrupted)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    path = write_suite(tmp_path / "x.yaml", "noisy-quadratic", "[0]")
    res = CliRunner().invoke(
        app, ["suite", "run", str(path), "--out", str(tmp_path / "out"), "--executor", "ray"]
    )
    assert res.exit_code == 128 + signal.SIGTERM, res.output
    assert "sys.exit" not in res.output


def test_an_empty_ray_address_is_refused_not_a_local_ray(tmp_path) -> None:
    """``--ray-address "$RAY_HEAD"`` with the variable unset: the cluster was meant."""
    res = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "rosenbrock", "--executor", "ray",
              "--ray-address", "", "--out", str(tmp_path / "o")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        "error: executor setting ray_address: String should have at least 1 character (got '')"
    )
    assert not (tmp_path / "o").exists()


def test_the_ray_address_check_accepts_a_grpc_server() -> None:
    grpc = pytest.importorskip("grpc")
    from concurrent.futures import ThreadPoolExecutor

    from bench_cli.executors.ray import speaks_grpc

    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        assert speaks_grpc("127.0.0.1", port)
    finally:
        server.stop(None)


def test_gpus_without_runs_per_gpu_where_torch_sees_none_are_refused_up_front(tmp_path) -> None:
    """--gpus with --device cpu went on to ask for the GPUs' free memory to choose how many runs
    share one: a traceback, after the suite's files were written."""
    import torch

    if torch.cuda.device_count():
        pytest.skip("a machine with a CUDA GPU can choose")
    out = tmp_path / "out"
    run = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "rosenbrock", "--device", "cpu", "--gpus", "0",
              "--out", str(out)],
    )  # fmt: skip
    path = write_suite(tmp_path / "x.yaml", "noisy-quadratic", "[0]")
    path.write_text(path.read_text() + "executor: {gpus: [0]}\n")  # its device: cpu
    suite = CliRunner().invoke(app, ["suite", "run", str(path), "--out", str(out)])
    for res in (run, suite):
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert res.stderr.strip().splitlines() == [
            "error: --gpus (or executor.gpus in a suite file) without --runs-per-gpu: how many "
            "runs share a GPU is chosen from its free memory, and torch sees no CUDA GPU here; "
            "leave --gpus out (--jobs N runs N at once on the CPU), or give --runs-per-gpu"
        ]
    assert not out.exists()


def test_gpus_that_torch_does_not_see_are_refused_before_anything_is_written(tmp_path) -> None:
    import torch

    n = torch.cuda.device_count()
    res = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "rosenbrock", "--gpus", str(n),
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert f"GPU {n} (--gpus, or executor.gpus in a suite file) is not there" in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("executor", "flag"),
    [
        (["--runs-per-gpu", "2"], "--runs-per-gpu"),
        (["--jobs", "2", "--runs-per-gpu", "2"], "--runs-per-gpu"),
        (["--mps"], "--mps"),
    ],
)
@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_gpu_sharing_for_runs_on_the_cpu_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, executor, flag, device
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # auto: a machine with no GPU
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "rosenbrock", "--device", device, *executor,
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
    key = flag.lstrip("-").replace("-", "_")
    said = " ".join(res.output.split())
    assert f"error: {flag} (or executor.{key} in a suite file): the runs are on the CPU" in said
    assert not out.exists()


def test_result_commands_do_not_import_torch(tmp_path) -> None:
    """leaderboard, export, plot, probe and check work on records alone (and start fast)."""
    base = str(ROOT / "suites" / "baselines" / "ci-smoke")
    claims = str(ROOT / "docs" / "results" / "ademamix-claims")
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from bench_cli.cli import app\n"
        "r = CliRunner()\n"
        f"cmds = [['leaderboard', {base!r}], ['export', {base!r}, '--format', 'csv', '--out', "
        f"{str(tmp_path / 't.csv')!r}], ['plot', {base!r}, '--out', {str(tmp_path / 'p')!r}], "
        f"['check', {base!r}, '--against', {base!r}], ['probe', {claims!r}]]\n"
        "for c in cmds:\n"
        "    res = r.invoke(app, c)\n"
        "    assert res.exit_code == 0, (c, res.output)\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "False"


def test_log_flag_sends_each_cell_to_tensorboard_from_the_workers(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write_suite(tmp_path / "tb.yaml", "noisy-quadratic", "[0, 1]")
    res = bench(
        "suite",
        "run",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--jobs",
        "2",
        "--log",
        "tensorboard",
        "--quiet",
    )
    assert res.returncode == 0, res.stderr
    runs = sorted(p for p in (tmp_path / "out" / "tensorboard" / "tb").iterdir() if p.is_dir())
    assert len(runs) == 4  # one tracker run per cell, grouped under the suite's name
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        losses = [
            e.value for e in acc.Scalars(next(t for t in acc.Tags()["scalars"] if "loss" in t))
        ]
        assert losses and all(v == v for v in losses)
    bad = bench("suite", "run", str(path), "--out", str(tmp_path / "x"), "--log", "neptune")
    assert bad.returncode == 1 and "--log 'neptune'" in bad.stderr
