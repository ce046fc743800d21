"""Bytecode for read-only installations: cached in the user's cache only when the package has
no ``.pyc`` and no writable folder, and then actually written there and reused."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

DRIVER = """
import os, sys
real_access = os.access
pkg = os.path.realpath(sys.argv[1])
if sys.argv[2] == "readonly":  # as a non-root user sees a read-only image
    os.access = lambda p, mode: False if os.path.realpath(p).startswith(pkg) else real_access(p, mode)
from bench_cli.bytecode import keep_bytecode
print(keep_bytecode("fakepkg"))
import fakepkg
print(fakepkg.VALUE)
"""


def _run(tmp_path: Path, mode: str, **env: str) -> list[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    site = tmp_path / "site"
    (site / "fakepkg").mkdir(parents=True, exist_ok=True)
    (site / "fakepkg" / "__init__.py").write_text("VALUE = 41 + 1\n")
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, str(site / "fakepkg"), mode],
        env={**base, "PYTHONPATH": f"{site}{os.pathsep}{os.getcwd()}",
             "XDG_CACHE_HOME": str(tmp_path / "cache"), **env},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.split()


def test_read_only_install_gets_a_bytecode_cache(tmp_path: Path) -> None:
    folder, value = _run(tmp_path, "readonly")
    assert value == "42"
    assert Path(folder) == tmp_path / "cache" / "bench-cli" / "pycache"
    source = tmp_path / "site" / "fakepkg" / "__init__.py"
    # Python's own layout under the prefix: the source's absolute path, then the .pyc name
    mirrored = Path(folder) / str(source.resolve()).lstrip(os.sep)
    pyc = Path(importlib.util.cache_from_source(str(mirrored)).replace("__pycache__/", ""))
    assert pyc.exists(), sorted(p.name for p in Path(folder).rglob("*.pyc"))
    assert not (source.parent / "__pycache__").exists()  # nothing beside the source
    assert _run(tmp_path, "readonly")[0] == folder  # the second process reuses the cache


def test_dont_write_bytecode_install_gets_the_cache_not_pycs_beside_sources(tmp_path: Path):
    folder, value = _run(tmp_path, "writable", PYTHONDONTWRITEBYTECODE="1")
    assert value == "42" and Path(folder) == tmp_path / "cache" / "bench-cli" / "pycache"
    assert list(Path(folder).rglob("*.pyc"))
    assert not (tmp_path / "site" / "fakepkg" / "__pycache__").exists()


def test_writable_install_or_user_choice_is_left_alone(tmp_path: Path) -> None:
    assert _run(tmp_path, "writable")[0] == "None"  # Python writes __pycache__ itself
    assert (tmp_path / "site" / "fakepkg" / "__pycache__").exists()
    assert _run(tmp_path / "b", "readonly", BENCH_BYTECODE_CACHE="0")[0] == "None"
    assert _run(tmp_path / "c", "readonly", PYTHONPYCACHEPREFIX=str(tmp_path / "mine"))[0] == "None"
    assert not (tmp_path / "b" / "cache").exists()
