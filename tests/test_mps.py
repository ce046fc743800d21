"""NVIDIA MPS for runs sharing a GPU: when it is used, how its daemon starts, stops and starts
again, what happens when it cannot start, and which folders it leaves. A stand-in ``nvidia-cuda-mps-control`` on PATH records how it is
called: with ``-f`` it is the daemon (until a client sends ``quit``), otherwise a client, which
fails while no daemon is up."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench_cli.errors import BenchError
from bench_cli.executors import mps
from bench_cli.executors.local import Slot, gpu_slots
from bench_cli.executors.mps import use_mps

PLUGINS = Path(__file__).parent / "executor_plugins.py"

FAKE = """#!/bin/sh
in=$(cat -)
echo "$* pipe=$CUDA_MPS_PIPE_DIRECTORY stdin=$in" >> "{log}"
[ {code} -ne 0 ] && exit {code}
P="$CUDA_MPS_PIPE_DIRECTORY"
if [ "$1" = "-f" ]; then
  echo $$ > "{log}.pid"
  sleep {up_after}; touch "$P/up"
  while [ ! -e "$P/down" ]; do sleep 0.02; done
  exit 0
fi
[ "$in" = get_server_list ] && sleep {client_sleep}
[ -e "$P/up" ] || exit 1
[ "$in" = quit ] && touch "$P/down"
exit 0
"""


def _fake_control(
    tmp_path: Path, monkeypatch, code: int, up_after: float = 0.2, client_sleep: float = 0
) -> Path:
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)  # made again: the stand-in changes
    exe = bin_dir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE.format(log=log, code=code, up_after=up_after, client_sleep=client_sleep))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_default_is_on_only_when_runs_share_a_gpu_and_mps_is_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-cuda-mps-control
    assert not use_mps(None, gpu_slots([0], 4))
    _fake_control(tmp_path, monkeypatch, 0)
    assert use_mps(None, gpu_slots([0, 1], 2))
    assert not use_mps(None, gpu_slots([0, 1], 1))  # one run per GPU: nothing to share
    assert not use_mps(None, [Slot(None, 1), Slot(None, 1)])  # CPU workers
    assert not use_mps(False, gpu_slots([0], 4))  # --no-mps
    assert use_mps(True, gpu_slots([0], 1))  # --mps
    assert not use_mps(True, [Slot(None, 1)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_daemon_gets_private_pipes_answers_before_use_and_is_stopped(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch, 0)
    daemon = mps.start(required=True)
    pipe = daemon.env["CUDA_MPS_PIPE_DIRECTORY"]  # what the workers started now get
    assert (Path(pipe) / "up").exists()  # it answered before any worker could start
    assert daemon.folder.name.startswith(f"bench-mps-{os.getpid()}-")
    pid = int(Path(f"{log}.pid").read_text())
    assert _alive(pid) and daemon.alive()
    daemon.close()
    calls = log.read_text().splitlines()
    [started] = [c for c in calls if c.startswith("-f ")]
    assert started.split("pipe=")[1].split()[0] == pipe
    assert all(pipe in c for c in calls)
    assert calls[-2].endswith("stdin=get_server_list") and calls[-1].endswith("stdin=quit")
    assert not _alive(pid)
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ and not daemon.folder.exists()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("setpriv") is None,
    reason="the parent-death signal needs Linux's setpriv",
)
def test_daemon_dies_with_a_coordinator_killed_with_sigkill_and_its_folder_goes_later(
    tmp_path, monkeypatch
):
    log = _fake_control(tmp_path, monkeypatch, 0)
    tmp = _own_tmp(tmp_path, monkeypatch)
    code = (
        "import time\n"
        "from bench_cli.executors import mps\n"
        "mps.start(required=True)\n"
        "print('up', flush=True)\n"
        "time.sleep(60)\n"
    )
    coordinator = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert coordinator.stdout.readline().strip() == "up"
    pid = int(Path(f"{log}.pid").read_text())
    assert _alive(pid)
    coordinator.kill()
    coordinator.wait()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)
    [left] = tmp.glob(f"bench-mps-{coordinator.pid}-*")  # nothing removed it
    daemon = mps.start(required=True)  # the next daemon's start does
    daemon.close()
    assert not left.exists()


def test_only_this_users_folders_of_coordinators_that_are_gone_are_removed(tmp_path, monkeypatch):
    _fake_control(tmp_path, monkeypatch, 0)
    tmp = _own_tmp(tmp_path, monkeypatch)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is no process's now
    dead = tmp / f"bench-mps-{gone.pid}-abc_1234"
    live = tmp / f"bench-mps-{os.getpid()}-xyz_5678"
    unnamed = tmp / "bench-mps-12345678"  # no coordinator's pid in its name
    for d in (dead, live, unnamed):
        (d / "pipe").mkdir(parents=True)
    with monkeypatch.context() as m:  # seen by another user, the folder is not theirs
        m.setattr(os, "geteuid", lambda: dead.stat().st_uid + 1)
        mps._remove_left_folders(tmp)
    assert dead.exists()
    held = mps._lock(dead)  # a live coordinator's lock: its pid may be in another namespace
    mps._remove_left_folders(tmp)
    assert dead.exists()
    os.close(held)
    daemon = mps.start(required=True)
    assert not dead.exists() and live.exists() and unnamed.exists()
    daemon.close()
    assert sorted(tmp.iterdir()) == sorted([live, unnamed])


def test_a_daemon_settles_once_it_answers_or_has_exited(tmp_path, monkeypatch):
    """After a failure of its server, the daemon is waited for: one that answers lives, one
    that has exited does not, and one that neither answers nor exits is killed at the end of
    the wait."""
    _fake_control(tmp_path, monkeypatch, 0)
    _own_tmp(tmp_path, monkeypatch)
    daemon = mps.start(required=True)
    assert daemon.settled(wait=5)
    (daemon.folder / "pipe" / "up").unlink()  # the stand-in stops answering but lives
    t0 = time.monotonic()
    assert not daemon.settled(wait=0.5)
    assert 0.5 <= time.monotonic() - t0 < 5 and not daemon.alive()
    daemon.close()
    daemon = mps.start(required=True)
    daemon.process.kill()
    daemon.process.wait()
    assert not daemon.settled(wait=5)
    daemon.close()


def test_daemon_that_cannot_start(tmp_path, monkeypatch, capsys):
    _fake_control(tmp_path, monkeypatch, 1)
    tmp = _own_tmp(tmp_path, monkeypatch)
    with pytest.raises(BenchError, match="cannot start the CUDA MPS daemon.*; run with --no-mps"):
        mps.start(required=True)
    assert mps.start(required=False) is None  # the default: warn and go on time-sliced
    assert "time-sliced" in capsys.readouterr().err
    assert not list(tmp.iterdir())


def test_one_daemon_serves_every_phase_of_a_suite_and_stops_at_its_end(tmp_path, monkeypatch):
    """Two runs sharing "GPU 0" (CPU cells; the daemon is the stand-in) through a suite with a
    tuning and a scoring phase: the daemon starts once, before the pool's first worker, its
    pipes reach the workers, and it is stopped when the suite ends."""
    from bench_cli import suite
    from tests.test_executors import tuned_suite

    log = _fake_control(tmp_path, monkeypatch, 0)
    path = tuned_suite(tmp_path / "phases.yaml", seeds="[0, 1]", steps=20)
    monkeypatch.setenv("BENCH_TEST_COUNT", str(tmp_path / "count.txt"))
    monkeypatch.setenv("BENCH_TEST_ENV", "CUDA_MPS_PIPE_DIRECTORY")
    summary = suite.run_suite(
        path, out=tmp_path / "out", executor={"gpus": [0], "runs_per_gpu": 2, "mps": True}
    )
    assert {r.role for r in summary.records} == {"tune", "score"}
    calls = log.read_text().splitlines()
    [daemon] = [c for c in calls if c.startswith("-f ")]
    pipe = daemon.split("pipe=")[1].split()[0]
    assert calls[-1].endswith("stdin=quit") and pipe in calls[-1]
    assert not _alive(int(Path(f"{log}.pid").read_text()))
    seen = {line.split()[1] for line in (tmp_path / "count.txt").read_text().splitlines()}
    assert seen == {pipe}  # every cell ran in a worker under this daemon


def _own_tmp(tmp_path: Path, monkeypatch) -> Path:
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp


def test_ctrl_c_while_the_daemon_starts_leaves_no_daemon_and_no_folder(tmp_path, monkeypatch):
    import signal
    import threading

    log = _fake_control(tmp_path, monkeypatch, 0, up_after=60)  # it never answers in time
    tmp = _own_tmp(tmp_path, monkeypatch)
    # a shell that starts the tests in the background ignores SIGINT in them: Ctrl-C's own
    # handler here, whatever the tests inherited
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            mps.start(required=True)
    finally:
        signal.signal(signal.SIGINT, old)
    assert not _alive(int(Path(f"{log}.pid").read_text()))
    assert not list(tmp.glob("bench-mps-*"))


def test_a_daemon_whose_client_hangs_is_stopped_at_the_deadline(tmp_path, monkeypatch):
    from bench_cli.executors.mps import _start_control_daemon

    log = _fake_control(tmp_path, monkeypatch, 0, up_after=0, client_sleep=20)
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(pipe)}
    t0 = time.monotonic()
    with pytest.raises(subprocess.SubprocessError, match="did not answer within 1 s"):
        _start_control_daemon(env, tmp_path / "control.out", wait=1)
    assert time.monotonic() - t0 < 10  # the deadline bounds the wait, not the client's timeout
    assert not _alive(int(Path(f"{log}.pid").read_text()))


@pytest.mark.parametrize(
    "asked, again",
    [(True, True), (None, True), (True, False), (None, False)],
    ids=["asked", "default", "asked-cannot-start", "default-cannot-start"],
)
def test_a_daemon_that_exits_is_started_again_before_the_next_worker(
    tmp_path, monkeypatch, capsys, asked, again
):
    """Two runs sharing "GPU 0" through a suite with a tuning and a scoring phase (CPU cells,
    the stand-in daemon). When the scoring phase begins, the daemon is killed. The pool replaces
    its idle workers (their CUDA contexts went with the daemon) and starts a new daemon with a
    pipe folder of its own, which the new workers get. When it cannot start: an error if MPS was
    asked for (``--mps``), else the new workers run without MPS."""
    from bench_cli import suite
    from bench_cli.progress import Progress
    from tests.test_executors import tuned_suite

    log = _fake_control(tmp_path, monkeypatch, 0)
    tmp = _own_tmp(tmp_path, monkeypatch)
    killed = []

    class KillBeforeScoring(Progress):
        def phase(self, name: str, n: int) -> None:
            if name == "score":
                pid = int(Path(f"{log}.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.02)
                killed.append(pid)
                if not again:
                    _fake_control(tmp_path, monkeypatch, 1)
            super().phase(name, n)

    path = tuned_suite(tmp_path / "phases.yaml", lion=False)  # 2 tuning cells, 3 scoring cells
    count = tmp_path / "count.txt"
    monkeypatch.setenv("BENCH_TEST_COUNT", str(count))
    monkeypatch.setenv("BENCH_TEST_ENV", "CUDA_MPS_PIPE_DIRECTORY")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    executor = {"gpus": [0], "runs_per_gpu": 2, "mps": asked}

    def run():
        return suite.run_suite(
            path, out=tmp_path / "out", executor=executor, progress=KillBeforeScoring(quiet=True)
        )

    if asked and not again:
        with pytest.raises(
            BenchError, match="cannot start the CUDA MPS daemon.*; run with --no-mps"
        ):
            run()
    else:
        assert {r.status for r in run().records} == {"done"}
    pipes = [c.split("pipe=")[1].split()[0] for c in log.read_text().splitlines() if c[:3] == "-f "]
    runs = [(line.split() + [""])[:2] for line in count.read_text().splitlines()]
    seen = [env for _, env in runs]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(killed) == 1 and seen[:2] == [pipes[0]] * 2  # the tuning cells had the first
    assert err[0] == (
        "warning: the CUDA MPS daemon exited (killed by signal SIGKILL); starting it again, "
        "with new workers"
    )
    assert not {pid for pid, _ in runs[:2]} & {pid for pid, _ in runs[2:]}  # workers replaced
    if again:
        assert len(pipes) == 2 and pipes[1] != pipes[0]
        assert seen[2:] == [pipes[1]] * 3  # the new workers got the new daemon
        assert len(err) == 1
        assert not _alive(int(Path(f"{log}.pid").read_text()))  # stopped at the suite's end
    elif asked:
        assert len(seen) == 2  # no scoring cell ran
        assert not list((tmp_path / "out" / ".running").iterdir())
        assert len(err) == 1
    else:
        assert seen[2:] == [""] * 3  # no MPS, not the dead daemon's pipes
        assert len(err) == 2 and err[1].endswith("the runs sharing a GPU are time-sliced")
    assert not list(tmp.glob("bench-mps-*"))  # no folder is left


@pytest.mark.parametrize("how", ["once", "kill", "always"])
def test_cells_that_lose_their_mps_server_run_again_on_new_workers(
    tmp_path, monkeypatch, capsys, how
):
    """Eight cells (seeds 0-3, two optimizers) on two runs sharing "GPU 0" (CPU cells, the stand-in daemon). Seed 0 loses its
    MPS server at its 5th step: CUDA's MPS error while the daemon lives (``once``), or the daemon
    killed under it (``kill``). The workers are replaced, the daemon started again if it exited,
    the cells that were running run again, and every cell ends ``done``. A server that fails
    every time (``always``) stops the command at the third failure, with no error record left
    for the lost cells, so that a rerun takes them."""
    from bench_cli import suite
    from bench_cli.progress import Progress
    from tests.test_executors import write_suite

    log = _fake_control(tmp_path, monkeypatch, 0)
    tmp = _own_tmp(tmp_path, monkeypatch)
    path = write_suite(tmp_path / "lost.yaml", "mps-lost-quadratic", "[0, 1, 2, 3]")
    count = tmp_path / "count.txt"
    monkeypatch.setenv("BENCH_TEST_COUNT", str(count))
    monkeypatch.setenv("BENCH_TEST_ENV", "CUDA_MPS_PIPE_DIRECTORY")
    monkeypatch.setenv("BENCH_TEST_MPS", how)
    monkeypatch.setenv("BENCH_TEST_MPS_PID", f"{log}.pid")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    out = tmp_path / "out"

    def run():
        executor = {"gpus": [0], "runs_per_gpu": 2}
        return suite.run_suite(path, out=out, executor=executor, progress=Progress(quiet=True))

    if how == "always":
        with pytest.raises(BenchError, match=r"\(3 MPS failures in this command\); rerun"):
            run()
    else:
        records = run().records
        assert {r.status for r in records} == {"done"}
    pipes = [c.split("pipe=")[1].split()[0] for c in log.read_text().splitlines() if c[:3] == "-f "]
    runs = [line.split() for line in count.read_text().splitlines()]
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    lost = r"; the (cell that was running runs|\d cells that were running run) again$"
    if how == "kill":
        assert len(pipes) == 2 and len(err) == 1
        assert re.match(
            r"warning: the CUDA MPS daemon exited \(killed by signal SIGKILL\); starting it "
            r"again, with new workers" + lost,
            err[0],
        )
        assert runs[-1][1] == pipes[1]  # the last cell ran under the new daemon
    else:
        assert len(pipes) == 1  # the daemon lived: only its server failed
        assert len(err) == (2 if how == "always" else 1)
        for line in err:
            assert re.match(
                r"warning: the CUDA MPS server failed under a run; new workers replace the old"
                + lost,
                line,
            )
    assert len({pid for pid, _ in runs}) > 2  # new workers took the first two's places
    statuses = [json.loads(p.read_text())["status"] for p in out.glob("mps-lost-quadratic*.json")]
    assert "error" not in statuses and (how == "always" or len(statuses) == len(records))
    assert not list((out / ".running").iterdir())
    assert not list(tmp.glob("bench-mps-*"))


def test_a_rerun_that_loses_its_mps_server_runs_its_cells_again(tmp_path, monkeypatch):
    """``bench run --rerun`` into a folder holding records of the same cells, and the daemon
    killed under seed 0: the records the rerun replaces are not taken for the lost cells' own,
    so every cell ends with a record of this command."""
    from bench_cli import api
    from bench_cli.progress import Progress

    _fake_control(tmp_path, monkeypatch, 0)
    tmp = _own_tmp(tmp_path, monkeypatch)
    log = tmp_path / "calls.log"
    monkeypatch.setenv("BENCH_TEST_COUNT", str(tmp_path / "count.txt"))
    monkeypatch.setenv("BENCH_TEST_MPS_PID", f"{log}.pid")
    req = api.RunRequest(
        task="mps-lost-quadratic",
        optimizers=["adamw", "lion"],
        seeds=[0, 1],
        steps=30,
        device="cpu",
        task_options={"preset": "tiny"},
        plugins=[str(PLUGINS)],
    )
    out = tmp_path / "out"
    executor = {"gpus": [0], "runs_per_gpu": 2}
    monkeypatch.setenv("BENCH_TEST_MPS", "off")
    first = api.run(req, out, Progress(quiet=True), executor)
    time.sleep(1.5)  # the first records are older than the rerun by more than a second
    monkeypatch.setenv("BENCH_TEST_MPS", "kill")
    t0 = time.time()
    again = api.run(req, out, Progress(quiet=True), executor, rerun=True)
    assert len(again) == len(first) == 4 and {r.status for r in again} == {"done"}
    written = [p.stat().st_mtime for p in out.glob("mps-lost-quadratic*.json")]
    assert len(written) == 4 and min(written) >= t0
    assert not list(tmp.glob("bench-mps-*"))


def test_a_run_lost_with_its_mps_server_keeps_its_checkpoint(tmp_path, monkeypatch):
    """The cell runs again from its last checkpoint, so its worker leaves the checkpoint of a
    run that failed with CUDA's MPS error, and removes that of a run that failed otherwise."""
    from bench_cli import api
    from bench_cli.executors import worker
    from bench_cli.folder import CHECKPOINTS
    from bench_cli.plan import build_plan

    monkeypatch.setenv("BENCH_TEST_COUNT", str(tmp_path / "count.txt"))
    monkeypatch.setenv("BENCH_TEST_MPS", "always")
    req = api.RunRequest(
        task="mps-lost-quadratic",
        optimizers=["adamw"],
        seeds=[0, 1],
        steps=30,
        device="cpu",
        task_options={"preset": "tiny"},
        plugins=[str(PLUGINS)],
    )
    cells = build_plan(api.request_suite(req)).score_cells({}, {})
    out = tmp_path / "out"
    (out / CHECKPOINTS).mkdir(parents=True)
    for cell in cells:
        (out / CHECKPOINTS / f"{cell.run_id}.pt").write_bytes(b"a checkpoint")
        worker.execute_cell(cell, out)
    lost, done = (cells[0], cells[1]) if cells[0].spec.seed == 0 else (cells[1], cells[0])
    assert (out / CHECKPOINTS / f"{lost.run_id}.pt").exists()
    assert not (out / CHECKPOINTS / f"{done.run_id}.pt").exists()
