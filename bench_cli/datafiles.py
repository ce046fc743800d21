"""What a data path holds, so that a moved or renamed copy of the same data is the same run.

A run id and a suite folder identify data by content, not by path: a file by its sha256, a
folder (of token shards, say) by the names and sizes of the files in it. A path that does not
exist is identified by itself.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

DATA_OPTIONS = ("data", "val_data")


@lru_cache(maxsize=256)
def _identity(path: str, size: int, mtime_ns: int) -> str:
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p)}\0{f.stat().st_size}\n".encode())
        return f"folder-sha256:{h.hexdigest()[:16]}"
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


def identity(value: object) -> object:
    """The content identity of a data path (or ``value`` itself when it is not one)."""
    if not isinstance(value, str):
        return value
    p = Path(value).expanduser()
    try:
        st = p.stat()
    except OSError:
        return value
    if not (p.is_file() or p.is_dir()):
        return value  # a FIFO or device: refused elsewhere, never read here
    return _identity(str(p.resolve()), st.st_size, st.st_mtime_ns)


def with_identities(options: dict) -> dict:
    return {k: identity(v) if k in DATA_OPTIONS else v for k, v in options.items()}


def missing(value: object) -> str | None:
    """Why a data path given in a suite cannot be used, or None."""
    if not isinstance(value, str):
        return None
    p = Path(value).expanduser()
    if not p.exists():
        return f"{value!r} does not exist"
    if not (p.is_file() or p.is_dir()):
        return f"{value!r} is not a regular file or folder"
    if not os.access(p, os.R_OK):
        return f"{value!r} cannot be read (permission denied)"
    return None
