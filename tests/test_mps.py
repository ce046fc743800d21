"""NVIDIA MPS for runs sharing a GPU: when it is used, and what happens when it cannot start.
A stand-in ``nvidia-cuda-mps-control`` on PATH records how it is called."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench_cli.errors import BenchError
from bench_cli.executors.local import Slot, gpu_slots, mps_daemon, use_mps

FAKE = """#!/bin/sh
echo "$* pipe=$CUDA_MPS_PIPE_DIRECTORY stdin=$(cat -)" >> "{log}"
exit {code}
"""


def _fake_control(tmp_path: Path, monkeypatch, code: int) -> Path:
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-cuda-mps-control"
    exe.write_text(FAKE.format(log=log, code=code))
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


def test_daemon_gets_private_pipes_and_is_stopped(tmp_path, monkeypatch):
    log = _fake_control(tmp_path, monkeypatch, 0)
    with mps_daemon():
        pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]  # the workers started here inherit it
    start, stop = log.read_text().splitlines()
    assert start.startswith("-d pipe=") and start.split("pipe=")[1].split()[0] == pipe
    assert stop.endswith("stdin=quit") and pipe in stop
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ and not Path(pipe).exists()


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


def test_an_error_of_the_runs_is_not_chained_to_a_daemon_that_did_not_start(
    tmp_path, monkeypatch
):
    _fake_control(tmp_path, monkeypatch, 1)
    with pytest.raises(RuntimeError) as info:
        with mps_daemon(required=False):
            raise RuntimeError("a run failed")
    assert info.value.__context__ is None
