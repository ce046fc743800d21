"""Compiled bytecode for installations that do not keep their own.

A fresh ``bench`` process imports a few thousand modules (torch alone is about 2,000). Python
caches each module's compiled bytecode in a ``__pycache__`` folder beside its source. Where
packages were installed without their ``.pyc`` files (some installers skip them) and Python may
not write them there (a read-only image, or ``PYTHONDONTWRITEBYTECODE`` to keep the source tree
clean), every process compiles them all again: seconds before the first training step, in the
coordinator and in every worker.

In that case, and only then, the ``bench`` command (not an import of the library)
calls ``keep_bytecode``, which points Python's bytecode cache
(``sys.pycache_prefix``, PEP 3147's ``PYTHONPYCACHEPREFIX``) at ``~/.cache/bench-cli/pycache``
(under ``XDG_CACHE_HOME`` when set) and writes the bytecode there, never beside the sources, so
the compilation is paid once. Worker processes inherit the setting through the environment.
A ``PYTHONPYCACHEPREFIX`` of the user's wins; ``BENCH_BYTECODE_CACHE=0`` turns this off.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "bench-cli" / "pycache"


def needs_cache(package: str = "torch") -> bool:
    """Whether ``package`` (found, not imported) has no bytecode and Python will not write it."""
    if sys.pycache_prefix is not None or os.environ.get("BENCH_BYTECODE_CACHE") == "0":
        return False
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    if os.path.exists(importlib.util.cache_from_source(spec.origin)):
        return False
    return sys.dont_write_bytecode or not os.access(os.path.dirname(spec.origin), os.W_OK)


def keep_bytecode(package: str = "torch") -> Path | None:
    """Cache bytecode in the user's cache when ``package``'s installation does not keep it; the
    folder used, or None where nothing changed."""
    if package in sys.modules or not needs_cache(package):
        return None
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    sys.pycache_prefix = str(folder)
    sys.dont_write_bytecode = False  # written under the prefix only, never beside the sources
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    return folder
