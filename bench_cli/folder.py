"""A results folder shared by many writers: records, claims, and the suite it holds.

- ``<run_id>.json``: one record per finished cell, written atomically.
- ``suite.resolved.yaml``: the suite run there (tier applied, executor settings left out).
  It is created atomically (a hard link that fails if the file exists), so two coordinators that
  start a different suite at the same moment cannot both claim the folder. ``bench run`` writes
  its one-task suites under ``.runs/`` instead, so that runs of several commands can share a
  folder.
- ``.running/<run_id>``: a cell's claim, holding the host, pid, the process's start time and
  when it was claimed. It is created whole, as a hard link to a file written first, which fails
  if the claim exists (as ``O_EXCL`` does); no interruption leaves an empty one. Its holder
  touches it every ``HEARTBEAT`` seconds. A claim is stale, and is taken over, when its process
  is gone (on this host: no such pid, or a pid of another process) or, from another host, when
  it was last touched more than ``LEASE`` seconds ago.
- ``calibration.json`` and ``selection.json``: the calibrated targets and selected configurations.
- ``.checkpoints/<run_id>.pt``: checkpoints of long runs in progress.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench_cli.errors import BenchError, cannot_write
from bench_cli.results.record import RunRecord
from bench_cli.results.store import (
    atomic_write_text,
    create_whole,
    ensure_writable_dir,
    read_record,
    record_path,
    write_record,
)

RESOLVED, ENVIRONMENT, CALIBRATION, SELECTION = (
    "suite.resolved.yaml",
    "environment.json",
    "calibration.json",
    "selection.json",
)
MARKERS, CHECKPOINTS, RUNS = ".running", ".checkpoints", ".runs"
HEARTBEAT, LEASE = 30.0, 300.0


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Folder:
    """One results folder: read and write records, claim cells, store side files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
        }
        self.held: set[str] = set()
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()

    # -- records --------------------------------------------------------------------------------

    def record(self, run_id: str) -> RunRecord | None:
        """The cell's record if it exists and reads back whole, else None (a damaged one is
        reported by the caller through ``damaged``)."""
        path = record_path(self.path, run_id)
        if not path.is_file():
            return None
        try:
            record = read_record(path)
        except BenchError:
            return None
        return record if record.run_id == run_id else None

    def record_since(self, run_id: str, since: float) -> RunRecord | None:
        """The cell's record if it was written at ``since`` (a Unix time) or later, within a
        second for file systems with coarse times: the record of the run started then, not one
        that ``--rerun`` is replacing."""
        try:
            written = record_path(self.path, run_id).stat().st_mtime
        except OSError:
            return None
        return self.record(run_id) if written >= since - 1.0 else None

    def version(self, run_id: str) -> tuple[int, int, int] | None:
        """Which file holds the cell's record (its inode, time in ns and size), None if none
        does: a record written again (atomically, a new file) has another version."""
        try:
            st = record_path(self.path, run_id).stat()
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def damaged(self, run_id: str) -> bool:
        """Whether the cell's record file is there (a dangling link too) but cannot be read."""
        return os.path.lexists(record_path(self.path, run_id)) and self.record(run_id) is None

    def write(self, record: RunRecord) -> None:
        """Write a record (atomically); a failed write is one line naming it and the fix."""
        try:
            write_record(record, self.path)
        except OSError as exc:
            raise cannot_write(exc, f"the record of {record.run_id} to {self.path}") from None

    def discard(self, run_id: str) -> None:
        """Remove the cell's record, so that the cell runs again (its run was lost to a failure
        outside it)."""
        record_path(self.path, run_id).unlink(missing_ok=True)

    def read_json(self, name: str, fix: str = "delete it to recompute it") -> dict[str, Any]:
        """A side file's object ({} when it is not there); a damaged one is one line ending in
        ``fix``."""
        path = self.path / name
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BenchError(f"{path} is damaged ({type(exc).__name__}); {fix}") from exc
        if not isinstance(data, dict):
            raise BenchError(f"{path} is damaged (not a JSON object); {fix}")
        return data

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        atomic_write_text(self.path / name, json.dumps(data, indent=1, default=str))

    def merge_json(self, name: str, entries: dict[str, Any]) -> None:
        """Set ``entries`` in the JSON object ``name`` and keep its other keys, under a lock:
        coordinators running different tasks of one suite into this folder each add theirs."""
        import fcntl

        with open(self.path / f".{name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self.write_json(name, {**self.read_json(name), **entries})
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- the suite it holds ---------------------------------------------------------------------

    def claim_suite(self, resolved_text: str, name: str = RESOLVED) -> None:
        """Make the folder hold this suite, or check that it already does (atomically)."""
        from bench_cli.config import read_yaml

        if damage := self.damage():
            raise BenchError(damage)
        ensure_writable_dir(self.path)
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            if name == RESOLVED and self.foreign_records():
                raise BenchError(
                    f"{self.path} holds run records of `bench run`, not of a suite; "
                    "choose another --out"
                )
            try:
                create_whole(path, resolved_text)  # False: another coordinator got there first
            except OSError as exc:
                raise cannot_write(exc, str(path)) from None
        old = _by_content(read_suite_file(path, "choose another --out"))
        new = _by_content(read_yaml(resolved_text, name))
        if old != new:
            raise BenchError(
                f"{self.path} holds another suite ({_difference(old, new)} differs from its "
                f"{name}); choose another --out"
            )

    def damage(self) -> str | None:
        """What is in the way of the folder's own subfolders (its claims, checkpoints, and the
        suites of `bench run`), if anything: a file, or a link to nowhere, by that name."""
        for name, what in ((MARKERS, "claims"), (CHECKPOINTS, "checkpoints"), (RUNS, "runs")):
            path = self.path / name
            if (path.exists() or path.is_symlink()) and not path.is_dir():
                return (
                    f"{path} is not a folder: a results folder keeps its {what} there; move it "
                    "away, or choose another --out"
                )
        return None

    def foreign_records(self) -> bool:
        """Whether records from ``bench run`` are here (a suite folder has none)."""
        return (self.path / RUNS).is_dir()

    def is_suite(self) -> bool:
        return (self.path / RESOLVED).is_file()

    def check_for_run(self) -> None:
        """For `bench run`: refuse a folder that holds a suite run."""
        if self.is_suite():
            raise BenchError(f"{self.path} holds a suite run; choose another --out for `bench run`")

    # -- claims ---------------------------------------------------------------------------------

    def _marker(self, run_id: str) -> Path:
        return self.path / MARKERS / run_id

    def claim(self, run_id: str) -> bool:
        """Claim a cell for this process; False if a live claim of another holds it. The claim
        appears whole or not at all (``create_whole``), so no interruption leaves an empty or
        half-written one."""
        marker = self._marker(run_id)
        marker.parent.mkdir(exist_ok=True)
        for _ in range(2):
            if create_whole(marker, json.dumps({**self.me, "claimed_at": now()})):
                self.held.add(run_id)
                return True
            if not self._take_over(marker):
                return False
        return False

    def _take_over(self, marker: Path) -> bool:
        """Remove ``marker`` if it is stale; True if it is gone now."""
        if self.alive(marker):
            return False
        grave = marker.with_name(f".{marker.name}.{os.getpid()}.stale")
        try:
            os.rename(marker, grave)  # atomic: one coordinator wins the take-over
        except FileNotFoundError:
            return True
        if grave.is_dir() and not grave.is_symlink():  # damage: no claim is a folder
            shutil.rmtree(grave, ignore_errors=True)
        else:
            grave.unlink(missing_ok=True)
        return True

    def alive(self, marker: Path) -> bool:
        """Whether the claim ``marker`` is held by a live process. A claim is created whole
        (``create_whole``), so one that does not read back is damaged, and held by no one."""
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
            age = time.time() - marker.stat().st_mtime
        except (OSError, ValueError):  # gone, or damaged: a folder, garbage, not UTF-8
            return False
        if not isinstance(info, dict):
            return False
        if info.get("host") != self.me["host"]:
            return age < LEASE
        try:
            pid = int(info["pid"])
        except (KeyError, TypeError, ValueError):
            return False
        if not _pid_alive(pid):
            return False
        start = _process_start(pid)
        return start is None or info.get("pid_start") in (None, start)

    def release(self, run_id: str) -> None:
        self._marker(run_id).unlink(missing_ok=True)
        self.held.discard(run_id)

    def running(self, run_id: str) -> str | None:
        """'running' or 'interrupted' when a claim exists for the cell, else None."""
        marker = self._marker(run_id)
        if not marker.exists():
            return None
        return "running" if self.alive(marker) else "interrupted"

    def __enter__(self) -> Folder:
        """Keep this process's claims fresh while it works."""
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True)
        self._beat.start()
        self.clean_leftovers()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for run_id in list(self.held):
            self.release(run_id)

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            for run_id in list(self.held):
                try:
                    os.utime(self._marker(run_id))
                except OSError:
                    pass

    def clean_leftovers(self) -> None:
        """Temporary files left by a process killed mid-write (they are never read). A claim's
        goes as soon as the process it names is gone, as the claim itself would; any other once
        it is older than a heartbeat."""
        for folder in (self.path, self.path / MARKERS, self.path / CHECKPOINTS):
            if not folder.is_dir():
                continue
            for tmp in folder.glob(".*.tmp"):
                pid = tmp.name.rsplit(".", 2)[-2] if tmp.name.count(".") >= 3 else ""
                if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
                    continue  # another live writer's file
                try:
                    if folder.name == MARKERS:  # a claim being made: it says whose it is
                        stale = not self.alive(tmp)
                    else:
                        stale = time.time() - tmp.stat().st_mtime > HEARTBEAT
                except FileNotFoundError:
                    continue  # its writer has just finished with it
                if stale:
                    tmp.unlink(missing_ok=True)


def read_suite_file(path: Path, fix: str) -> Any:
    """The YAML data of a suite file that a results folder keeps (``RESOLVED``, ``RUNS/*``), or
    one line saying that it is damaged and ending in ``fix``."""
    from bench_cli.config import read_yaml

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is damaged ({type(exc).__name__}); {fix}") from None
    try:
        return read_yaml(text, str(path))
    except BenchError as exc:
        why = str(exc).removeprefix(f"{path}: ")
        raise BenchError(f"{path} is damaged ({why}); {fix}") from None


def _by_content(doc: Any) -> Any:
    """A resolved suite with its tasks' data paths replaced by what they hold, and without the
    settings that do not change what a run computes (how often it checkpoints)."""
    from bench_cli.config import NEUTRAL_SETTINGS
    from bench_cli.datafiles import with_identities

    def same_runs(task: dict) -> dict:
        settings = task.get("settings")
        if isinstance(settings, dict):
            settings = {k: v for k, v in settings.items() if k not in NEUTRAL_SETTINGS}
        return {**task, "options": with_identities(task.get("options") or {}), "settings": settings}

    if isinstance(doc, dict) and isinstance(doc.get("tasks"), list):
        doc = {**doc, "tasks": [same_runs(t) if isinstance(t, dict) else t for t in doc["tasks"]]}
    return doc


def _difference(old: Any, new: Any, path: tuple = ()) -> str:
    """The key path of the first difference between two parsed YAML documents."""
    from bench_cli.config import key_path

    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if old.get(key) != new.get(key):
                return _difference(old.get(key), new.get(key), (*path, key))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _difference(a, b, (*path, i))
    return key_path(path)
