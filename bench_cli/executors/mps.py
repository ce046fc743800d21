"""NVIDIA's Multi-Process Service (MPS) for the local pool's workers that share a GPU.

The pool starts its own control daemon (``start``) before its first worker, in a folder of its
own, ``bench-mps-<pid>-<random>`` in the temporary directory, holding the daemon's pipe and log
folders (so it never touches another user's daemon); a worker gets them through its environment
when it starts (``Daemon.env``). When the daemon exits, or a run fails because the MPS server
failed under it (``failed``), the pool replaces its workers and starts the daemon again if it has
exited (``Daemon.restart``); it stops the daemon when it closes. Starting a daemon first removes
the folders that coordinators killed with SIGKILL left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench_cli.errors import BenchError, ended

if TYPE_CHECKING:
    from bench_cli.executors.local import Slot

#: a daemon's folder: the pid of the coordinator that made it, then tempfile's random part
_FOLDER = re.compile(r"bench-mps-(\d+)-[a-z0-9_]+")


def use_mps(asked: bool | None, slots: list[Slot]) -> bool:
    """MPS when asked; by default when runs share a GPU and NVIDIA's MPS control is installed
    (without it, processes on one GPU are time-sliced and run about a third slower together)."""
    gpus = [s.gpu for s in slots if s.gpu is not None]
    if asked is not None:
        return asked and bool(gpus)
    return len(gpus) > len(set(gpus)) and shutil.which("nvidia-cuda-mps-control") is not None


def _control(command: str, env: dict, timeout: float = 30) -> int:
    """One command to the MPS control daemon through its client; the client's exit code."""
    done = subprocess.run(
        ["nvidia-cuda-mps-control"],
        input=command + "\n",
        text=True,
        env=env,
        timeout=timeout,
        capture_output=True,
    )
    return done.returncode


def _start_control_daemon(env: dict, log: Path, wait: float = 30) -> subprocess.Popen:
    """The MPS control daemon in the foreground, as this process's child, once it answers. On
    Linux it gets SIGTERM when this process dies however it dies (``setpriv --pdeathsig``), so a
    coordinator killed with SIGKILL leaves no daemon behind; ``-d`` would detach it for good.
    Its own session keeps a terminal's Ctrl-C for the coordinator, which stops it last. If it
    does not answer within ``wait`` seconds, or the wait is interrupted, it is stopped."""
    cmd = ["nvidia-cuda-mps-control", "-f"]
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "TERM", *cmd]
    with open(log, "wb") as err:
        daemon = subprocess.Popen(
            cmd, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
        )
    try:
        answered = _answers(daemon, env, wait)  # a CUDA context made once it answers uses it
        if answered is None:
            raise subprocess.SubprocessError(f"it did not answer within {wait:g} s")
    except BaseException:  # not answering, Ctrl-C, SIGTERM: no daemon is left running
        daemon.kill()
        daemon.wait()
        raise
    if answered:
        return daemon
    detail = log.read_text(errors="replace").strip().splitlines()
    raise subprocess.SubprocessError(
        ended(daemon.returncode) + (f": {detail[-1]}" if detail else "")
    )


def _answers(daemon: subprocess.Popen, env: dict, wait: float) -> bool | None:
    """Whether the control daemon answers a client (True) or exits (False) first; None when it
    does neither within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while daemon.poll() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            if _control("get_server_list", env, timeout=left) == 0:
                return True
        except (OSError, subprocess.SubprocessError):
            pass  # the deadline decides
        time.sleep(0.05)
    return False


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts; so does a number that is no pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        pass
    return True


def _lock(folder: Path) -> int:
    """A file in ``folder``, open and locked for as long as this process keeps it open: the
    folder is in use. (A coordinator in another pid namespace, or on another host sharing the
    temporary directory, can look dead by its pid; its lock still holds.)"""
    import fcntl

    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _locked(folder: Path) -> bool:
    import fcntl

    try:
        fd = os.open(folder / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _remove_left_folders(tmp: Path) -> None:
    """Remove this user's daemon folders in ``tmp`` whose coordinator is gone (its pid is not
    running, and the folder's lock is free): one killed with SIGKILL takes its daemon with it
    (the parent-death signal) but leaves the folder."""
    for path in tmp.glob("bench-mps-*"):
        found = _FOLDER.fullmatch(path.name)
        if found is None or _running(int(found[1])):
            continue
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not _locked(path):
            shutil.rmtree(path, ignore_errors=True)


def failed(error: str | None) -> bool:
    """Whether a run's error is the CUDA runtime's report that the MPS server or its daemon
    failed under it (each of those errors names the MPS: "the remote procedural call between
    the MPS server and the MPS client failed", "the MPS client has been terminated by the
    server", ...). The worker's CUDA context is lost with it; the run itself was not at fault."""
    first = (error or "").split("\n", 1)[0]
    return "CUDA error" in first and re.search(r"\bMPS\b", first) is not None


def _mps_env(folder: Path) -> dict[str, str]:
    return {
        "CUDA_MPS_PIPE_DIRECTORY": str(folder / "pipe"),
        "CUDA_MPS_LOG_DIRECTORY": str(folder / "log"),
    }


class Daemon:
    """A running MPS control daemon (this process's child) and its folder. ``required``: MPS was
    asked for, so a daemon that cannot start again is an error."""

    def __init__(self, process: subprocess.Popen, folder: Path, lock: int, required: bool):
        self.process, self.folder, self.lock, self.required = process, folder, lock, required
        #: what a worker's environment gets, so that its CUDA uses this daemon
        self.env = _mps_env(folder)

    def alive(self) -> bool:
        return self.process.poll() is None

    def _client_env(self) -> dict[str, str]:
        """The environment of a control client that talks to this daemon."""
        return {**os.environ, **self.env}

    def settled(self, wait: float = 10) -> bool:
        """Whether the daemon lives, once it has either exited or answered a client. A daemon
        whose server failed may be shutting down: it is waited for, up to ``wait`` seconds, and
        then killed (one that does not answer serves no worker)."""
        answered = _answers(self.process, self._client_env(), wait)
        if answered is None:
            self.process.kill()
            self.process.wait()
        return bool(answered)

    def restart(self) -> Daemon | None:
        """A new daemon in place of this one, which has exited; when the new one cannot start,
        an error or None, as from ``start``."""
        self.close()
        return start(self.required)

    def close(self) -> None:
        """Stop the daemon, asked to quit (killed if it will not, or if this is interrupted),
        and remove its folder."""
        try:
            if self.alive():
                _control("quit", self._client_env())
                self.process.wait(timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass  # a daemon that will not quit must not hide the runs' own outcome: it is killed
        finally:
            if self.alive():
                self.process.kill()
            self.process.wait()
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.lock >= 0:
                os.close(self.lock)
                self.lock = -1


def start(required: bool) -> Daemon | None:
    """A new daemon in a new folder, once it answers. When it cannot start: an error if MPS was
    asked for (``required``), else one warning and None (the runs sharing a GPU are
    time-sliced)."""
    tmp = Path(tempfile.gettempdir())
    _remove_left_folders(tmp)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-mps-{os.getpid()}-", dir=tmp))
    lock = _lock(folder)
    env = _mps_env(folder)
    for d in env.values():
        Path(d).mkdir()
    try:
        process = _start_control_daemon({**os.environ, **env}, folder / "control.out")
    except (OSError, subprocess.SubprocessError) as exc:
        failure = f"cannot start the CUDA MPS daemon (nvidia-cuda-mps-control: {exc})"
    except BaseException:  # interrupted while it started: its folder goes with it
        shutil.rmtree(folder, ignore_errors=True)
        os.close(lock)
        raise
    else:
        return Daemon(process, folder, lock, required)
    shutil.rmtree(folder, ignore_errors=True)
    os.close(lock)
    if required:  # outside the except block: the error stands alone
        raise BenchError(f"{failure}; run with --no-mps")
    print(f"warning: {failure}; the runs sharing a GPU are time-sliced", file=sys.stderr)
    return None
