"""Finding data files: an explicit path, ``$BENCH_DATA_DIR``, a cache, or a checked download.

On a machine that is offline with no local copy, the error says how to supply the file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench_cli.errors import DataError


@dataclass(frozen=True)
class RemoteFile:
    """A public data file: its canonical name, where it lives online, and its sha256."""

    name: str
    url: str
    sha256: str


TINY_SHAKESPEARE = RemoteFile(
    name="tinyshakespeare.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


def cache_dir() -> Path:
    base = os.environ.get("BENCH_CACHE_DIR")
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bench"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(remote: RemoteFile, dest: Path) -> Path:
    """Download ``remote`` to ``dest`` through a temporary file, checking its sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{remote.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=30) as resp:
            shutil.copyfileobj(resp, out)
        got = sha256_of(Path(tmp))
        if got != remote.sha256:
            raise DataError(
                f"downloaded {remote.name} from {remote.url} has sha256 {got}, expected "
                f"{remote.sha256}; the file was not saved"
            )
        os.replace(tmp, dest)
        return dest
    except OSError as exc:
        raise DataError(
            f"{remote.name} was not found locally and could not be downloaded from {remote.url} "
            f"({exc}). Pass --data PATH to a local copy, or put it in a folder and set "
            f"BENCH_DATA_DIR to that folder."
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def check_data_path(path: Path, option: str, folder_ok: bool = False) -> Path:
    """``path`` if it is a regular file (or, with ``folder_ok``, a folder); a device, FIFO or
    socket is refused without being opened, since reading one may never end."""
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist; check {option}")
    if path.is_dir() and not folder_ok:
        raise DataError(f"{str(path)!r} is a folder; pass a data file to {option}")
    if not path.is_dir() and not path.is_file():
        raise DataError(
            f"data file {str(path)!r} is not a regular file (a device, FIFO or socket); "
            f"pass a file to {option}"
        )
    return path


def locate(remote: RemoteFile, data: str | None) -> Path:
    """The local path of ``remote``: ``data`` (a file, or a folder holding it), else
    ``$BENCH_DATA_DIR/<name>``, else the cache, else a download into the cache."""
    if data:
        path = Path(data).expanduser()
        if path.is_dir():
            path = path / remote.name
        return check_data_path(path, "--data")
    env = os.environ.get("BENCH_DATA_DIR")
    if env:
        path = Path(env).expanduser() / remote.name
        if path.is_file():
            return path
    cached = cache_dir() / remote.name
    if cached.is_file():
        if sha256_of(cached) == remote.sha256:
            return cached
        cached.unlink()  # a corrupt cache entry is replaced by a fresh download
    return download(remote, cached)
