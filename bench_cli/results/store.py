"""Records on disk: one JSON file per run, written atomically, read back into ``RunRecord``s."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from bench_cli.errors import BenchError
from bench_cli.results.record import RunRecord

RECORD_SUFFIX = ".json"


def record_path(out_dir: Path, run_id: str) -> Path:
    return Path(out_dir) / f"{run_id}{RECORD_SUFFIX}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a record should read like any file
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_record(record: RunRecord, out_dir: Path) -> Path:
    path = record_path(out_dir, record.run_id)
    atomic_write_text(path, record.model_dump_json(indent=1))
    return path


def read_record(path: Path) -> RunRecord:
    try:
        return RunRecord.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValidationError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is not a valid run record ({exc.__class__.__name__})") from exc


def load_records(directory: Path) -> list[RunRecord]:
    """Every record under ``directory`` (recursively), sorted by task, optimizer and seed."""
    directory = Path(directory)
    if not directory.is_dir():
        raise BenchError(f"results directory {str(directory)!r} does not exist")
    records = []
    for path in sorted(directory.rglob(f"*{RECORD_SUFFIX}")):
        if path.name.startswith("."):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(data, dict) and "run_id" in data and "curve" in data:
            records.append(RunRecord.model_validate(data))
    return sorted(records, key=lambda r: (r.task_key, r.optimizer, r.seed, r.run_id))


def ensure_writable_dir(directory: Path) -> Path:
    """Create ``directory`` if needed and check that files can be written there."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BenchError(
            f"cannot write results to {str(directory)!r} ({exc.strerror or exc}); "
            "choose another directory with --out"
        ) from exc
    return directory
