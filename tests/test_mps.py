"""NVIDIA MPS for runs sharing a GPU: when it is used, how its daemon starts and stops, and what
happens when it cannot start. A stand-in ``nvidia-cuda-mps-control`` on PATH records how it is
called: with ``-f`` it is the daemon (until a client sends ``quit``), otherwise a client, which
fails while no daemon is up."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench_cli.errors import BenchError
from bench_cli.executors.local import Slot, gpu_slots, mps_daemon, use_mps

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
    bin_dir.mkdir()
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
    with mps_daemon():
        pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]  # the workers started here inherit it
        assert (Path(pipe) / "up").exists()  # it answered before any worker could start
        pid = int(Path(f"{log}.pid").read_text())
        assert _alive(pid)
    calls = log.read_text().splitlines()
    [daemon] = [c for c in calls if c.startswith("-f ")]
    assert daemon.split("pipe=")[1].split()[0] == pipe
    assert all(pipe in c for c in calls)
    assert calls[-2].endswith("stdin=get_server_list") and calls[-1].endswith("stdin=quit")
    assert not _alive(pid)
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ and not Path(pipe).exists()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("setpriv") is None,
    reason="the parent-death signal needs Linux's setpriv",
)
def test_daemon_dies_with_a_coordinator_killed_with_sigkill(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch, 0)
    code = (
        "import time\n"
        "from bench_cli.executors.local import mps_daemon\n"
        "with mps_daemon():\n"
        "    print('up', flush=True)\n"
        "    time.sleep(60)\n"
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


def test_daemon_that_cannot_start(tmp_path, monkeypatch, capsys):
    _fake_control(tmp_path, monkeypatch, 1)
    with pytest.raises(BenchError, match="cannot start the CUDA MPS daemon.*; run with --no-mps"):
        with mps_daemon(required=True):
            pass
    ran = []
    with mps_daemon(required=False):  # the default: warn and go on time-sliced
        ran.append("CUDA_MPS_PIPE_DIRECTORY" in os.environ)
    assert ran == [False]
    assert "time-sliced" in capsys.readouterr().err


def test_an_error_of_the_runs_is_not_chained_to_a_daemon_that_did_not_start(tmp_path, monkeypatch):
    _fake_control(tmp_path, monkeypatch, 1)
    with pytest.raises(RuntimeError) as info:
        with mps_daemon(required=False):
            raise RuntimeError("a run failed")
    assert info.value.__context__ is None


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
    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
    with pytest.raises(KeyboardInterrupt):
        with mps_daemon():
            pass
    assert not _alive(int(Path(f"{log}.pid").read_text()))
    assert not list(tmp.glob("bench-mps-*"))


def test_a_daemon_whose_client_hangs_is_stopped_at_the_deadline(tmp_path, monkeypatch):
    from bench_cli.executors.local import _start_control_daemon

    log = _fake_control(tmp_path, monkeypatch, 0, up_after=0, client_sleep=20)
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(pipe)}
    t0 = time.monotonic()
    with pytest.raises(subprocess.SubprocessError, match="did not answer within 1 s"):
        _start_control_daemon(env, tmp_path / "control.out", wait=1)
    assert time.monotonic() - t0 < 10  # the deadline bounds the wait, not the client's timeout
    assert not _alive(int(Path(f"{log}.pid").read_text()))
