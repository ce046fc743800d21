"""Records on disk: one JSON file per run, written atomically, read back into ``RunRecord``s.

Names that become part of a file name (registry names, suite task ids, tier names) must match
``NAME_PATTERN``: a letter or digit, then letters, digits and ``. _ + = , ( ) -``, at most
``MAX_NAME`` characters; no ``/``, no leading dot. File names built from other text (task labels,
run ids) go through ``safe_filename``.

Reading a folder never skips a file silently: every ``*.json`` file (hidden ones and the suite's
``SIDE_FILES`` aside) is a record, and one that cannot be read is reported with its reason. Only
regular files are opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from bench_cli.errors import BenchError, DamagedRecordsError, clip
from bench_cli.results.record import SCHEMA_VERSION, RunRecord

RECORD_SUFFIX = ".json"
#: JSON files of a suite folder that are not run records (``bench_cli.folder`` writes them)
SIDE_FILES = frozenset({"calibration.json", "environment.json", "selection.json"})
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+=,()-]*"
MAX_NAME = 100
MAX_RECORD_BYTES = 256 * 2**20
_NAME = re.compile(NAME_PATTERN)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=,()-]+")
_SLUG_LEN = 200  # with the hash and suffix, under the usual 255-byte limit


def name_problem(name: object) -> str | None:
    """Why ``name`` cannot be part of a file name, or None when it can."""
    if not isinstance(name, str):
        return f"must be text, got {type(name).__name__}"
    if not name:
        return "must not be empty"
    if len(name) > MAX_NAME:
        return f"is longer than {MAX_NAME} characters"
    if not _NAME.fullmatch(name):
        return (
            "may hold only letters, digits and . _ + = , ( ) - and must start with a letter or "
            "digit"
        )
    return None


def check_name(name: object, what: str) -> str:
    """``name`` itself, or a ``BenchError`` saying which ``what`` is not a valid name and why."""
    problem = name_problem(name)
    if problem:
        raise BenchError(f"{what} {clip(repr(name))} {problem}; rename it")
    return name  # type: ignore[return-value]


def safe_filename(name: str) -> str:
    """``name`` when it is a safe file name; else a slug of it plus a short hash of ``name``, so
    that different names never share a file and no name leaves its folder."""
    if len(name) <= _SLUG_LEN and _NAME.fullmatch(name):
        return name
    slug = _UNSAFE.sub("-", name).lstrip("._+=,()-")[:_SLUG_LEN] or "x"
    return f"{slug}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"


def record_path(out_dir: Path, run_id: str) -> Path:
    return Path(out_dir) / f"{safe_filename(run_id)}{RECORD_SUFFIX}"


def _not_a_folder(path: Path) -> Path | None:
    """The first existing part of ``path`` that is not a folder (``path`` itself included)."""
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
    return None


def check_parent_folder(path: Path, option: str = "--out") -> None:
    """A ``BenchError`` when a file stands where ``path``'s folders would be."""
    blocker = _not_a_folder(Path(path).parent)
    if blocker is not None:
        raise BenchError(
            f"cannot write {str(path)!r}: {str(blocker)!r} is a file, not a folder; "
            f"choose another {option}"
        )


def current_umask() -> int:
    """This process's umask (reading it means setting it, so it is set back at once)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _written_beside(path: Path, text: str) -> str:
    """A new temporary file beside ``path``, holding ``text`` on disk, with a name of its own
    (``.NAME.XXXXXXXX.tmp``, which ``Folder.clean_leftovers`` removes if it is left)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600; a record should read like any other file
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one; a link
    is written through (its target is replaced, not the link)."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    tmp = _written_beside(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def create_whole(path: Path, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists (False then), atomically: a hard link to
    a file written first, which fails if ``path`` exists, as ``O_EXCL`` does, so no reader or
    interruption ever sees it empty or half written."""
    path = Path(path)
    tmp = _written_beside(path, text)
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:  # another's, or ours with the reply lost (NFS): count the links
            return os.stat(tmp).st_nlink > 1
        return True
    finally:
        os.unlink(tmp)


def write_record(record: RunRecord, out_dir: Path) -> Path:
    path = record_path(out_dir, record.run_id)
    atomic_write_text(path, record.model_dump_json(indent=1))
    return path


# -- reading ------------------------------------------------------------------------------------


class UnreadableRecord(BenchError):
    """One record file that cannot be read; ``reason`` says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _kind(mode: int) -> str:
    for test, what in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def read_regular_text(path: Path, limit: int = MAX_RECORD_BYTES) -> str:
    """The UTF-8 text of a regular file; anything else (folder, FIFO, device, too large, binary,
    unreadable) raises ``UnreadableRecord`` with the reason. A FIFO is never opened."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UnreadableRecord(path, "does not exist (a broken link?)") from None
    except OSError as exc:
        raise UnreadableRecord(path, f"cannot be read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise UnreadableRecord(path, f"is {_kind(mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError:
        raise UnreadableRecord(path, "permission denied") from None
    except OSError as exc:
        raise UnreadableRecord(path, f"cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())  # the file may have been swapped since the stat
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableRecord(path, f"is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise UnreadableRecord(path, f"is larger than {limit // 2**20} MiB")
        data = fh.read(limit + 1)
    if not data:
        raise UnreadableRecord(path, "is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableRecord(
            path, f"is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}; binary?)"
        ) from None


def _parse(path: Path, text: str) -> RunRecord:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableRecord(
            path,
            f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}; truncated?)",
        ) from None
    if not isinstance(data, dict):
        raise UnreadableRecord(path, f"holds a JSON {type(data).__name__}, not a run record")
    version = data.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > SCHEMA_VERSION:
        raise UnreadableRecord(
            path,
            f"was written by a newer bench (record schema {version}; this one reads "
            f"{SCHEMA_VERSION}); upgrade bench to read it",
        )
    lost = [name for name in RunRecord.model_fields if name not in data]
    if lost:  # a record is written whole, defaults too: a field gone is damage, not a default
        more = f" (and {len(lost) - 1} more)" if len(lost) > 1 else ""
        raise UnreadableRecord(path, f"is not a run record: {lost[0]}: Field required{more}")
    try:
        return RunRecord.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise UnreadableRecord(
            path, f"is not a run record: {where}: {first['msg']}{more}"
        ) from None


def read_record(path: Path) -> RunRecord:
    """One record file; ``UnreadableRecord`` (a ``BenchError``) says why it cannot be read."""
    return _parse(Path(path), read_regular_text(path))


def _is_export(text: str) -> bool:
    """A table written by ``bench export`` or ``bench probe`` as JSON (not a record)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return False
    return (
        isinstance(data, dict)
        and "baseline" in data
        and "run_id" not in data
        and set(data) <= {"baseline", "targets", "tasks", "ranking", "probe"}
    )


@dataclass
class Scan:
    """What a folder holds: the records, the files that could not be read, and copies of a
    record (same run id, same content) found at a second path: (copy, the one kept)."""

    records: list[RunRecord] = field(default_factory=list)
    damaged: list[UnreadableRecord] = field(default_factory=list)
    copies: list[tuple[Path, Path]] = field(default_factory=list)
    #: links to folders, not followed (a link may loop, or reach far outside)
    linked: list[Path] = field(default_factory=list)


def check_results_folder(
    directory: Path,
    what: str = "results folder",
    fix: str = "pass the folder that holds the .json run records",
) -> Path:
    """``directory`` when it is a folder; else a ``BenchError`` saying that it does not exist or
    is a file, and ``fix``. Every command that reads a folder checks it so, before any work."""
    directory = Path(directory)
    if not directory.exists():
        raise BenchError(f"{what} {str(directory)!r} does not exist; {fix}")
    if not directory.is_dir():
        raise BenchError(f"{str(directory)!r} is a file, not a folder; {fix}")
    return directory


def _candidates(directory: Path, damaged: list[UnreadableRecord], linked: list[Path]) -> list[Path]:
    """Every record file under ``directory``; folders that cannot be listed go to ``damaged``,
    links to folders (not followed) to ``linked``."""
    found = []

    def unlisted(exc: OSError) -> None:
        damaged.append(
            UnreadableRecord(Path(exc.filename), f"folder cannot be listed ({exc.strerror})")
        )

    for root, dirs, files in os.walk(directory, onerror=unlisted):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        linked += [Path(root) / d for d in dirs if (Path(root) / d).is_symlink()]
        for name in [*dirs, *files]:
            if name.endswith(RECORD_SUFFIX) and not name.startswith("."):
                if name not in SIDE_FILES:
                    found.append(Path(root) / name)
    return sorted(found)


def scan_records(directory: Path) -> Scan:
    """Read every record under ``directory`` (recursively); nothing unreadable goes unreported."""
    directory = check_results_folder(directory)
    scan = Scan()
    kept: dict[str, tuple[Path, str]] = {}
    for path in sorted(
        _candidates(directory, scan.damaged, scan.linked), key=lambda p: (len(p.parts), p)
    ):
        try:
            text = read_regular_text(path)
            if _is_export(text):
                continue
            record = _parse(path, text)
        except UnreadableRecord as exc:
            scan.damaged.append(exc)
            continue
        dumped = record.model_dump_json()
        if record.run_id in kept:
            first, content = kept[record.run_id]
            if content != dumped:
                raise BenchError(
                    f"run {clip(record.run_id)} is stored twice with different contents, in "
                    f"{str(first)!r} and {str(path)!r}; remove the wrong one"
                )
            scan.copies.append((path, first))
            continue
        kept[record.run_id] = (path, dumped)
        scan.records.append(record)
    scan.records.sort(key=lambda r: (r.task_key, r.optimizer, r.seed, r.run_id))
    return scan


def load_records(
    directory: Path,
    skip_damaged: bool = False,
    warn: Callable[[str], None] | None = None,
    skip_hint: str = "",
) -> list[RunRecord]:
    """Every record under ``directory`` (recursively), sorted by task, optimizer and seed.

    An unreadable file raises ``DamagedRecordsError`` naming each one (its message ends with
    ``skip_hint``, say how to skip them), unless ``skip_damaged``: then ``warn`` hears of each.
    A second copy of a record is left out with a warning.
    """
    scan = scan_records(directory)
    say = warn or (lambda _msg: None)
    if scan.damaged and not skip_damaged:
        n = len(scan.damaged)
        raise DamagedRecordsError(
            f"{n} file{'s' * (n > 1)} in {str(directory)!r} cannot be read as run records; "
            f"repair or remove them{skip_hint}",
            [f"damaged: {d}" for d in scan.damaged],
        )
    for d in scan.damaged:
        say(f"left out {d}")
    for copy, first in scan.copies:
        say(f"left out {copy}: a copy of {first} (same run id and content)")
    for link in scan.linked:
        say(f"left out {link}: a link to a folder, which is not followed; copy the records in")
    return scan.records


def ensure_writable_dir(directory: Path) -> Path:
    """Create ``directory`` if needed and check that files can be written there."""
    directory = Path(directory)
    blocker = _not_a_folder(directory)
    if blocker is not None:
        raise BenchError(
            f"cannot write results to {str(directory)!r}: {str(blocker)!r} is a file, not a "
            "folder; choose another directory with --out"
        )
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


def nothing_scored(directory: Path, records: list[RunRecord]) -> BenchError:
    """The error of a results command on a folder whose records are all tuning or calibration
    runs: no table, figure or page of nothing."""
    return BenchError(
        f"no scored runs in {str(directory)!r} ({len(records)} tuning or calibration runs); "
        "run the suite to the end to score the selected configurations"
    )
