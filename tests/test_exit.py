"""How the ``bench`` process ends: after the command, as a normal exit would (threads joined,
then ``atexit`` handlers, streams flushed, the command's exit status), but without the
interpreter's teardown of every module and object."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLUGIN = """
import atexit, threading, time
from pathlib import Path

OUT = Path({out!r})


def late():  # a thread the command left running (not a daemon): waited for, as Python does
    time.sleep(0.5)
    (OUT / "thread").write_text("joined")


threading.Thread(target=late).start()
atexit.register(lambda: (OUT / "atexit").write_text(
    (OUT / "thread").read_text() if (OUT / "thread").exists() else "before the thread ended"))


class Finalized:  # freed only by the interpreter's teardown of this module
    def __init__(self, path):
        self.path = path

    def __del__(self, open=open):
        with open(self.path, "w") as f:
            f.write("ran")


KEEP = Finalized(str(OUT / "teardown"))
"""


def _bench(
    tmp_path: Path, label: str, how: list[str], *args: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """``bench ARGS`` started by ``how``, with the plug-in; what the plug-in left behind."""
    out = tmp_path / f"left-{label}"
    out.mkdir()
    plugin = out / "plugin.py"
    plugin.write_text(PLUGIN.format(out=str(out)))
    argv = [*args, "--plugin", str(plugin)]
    res = subprocess.run([*how, *argv], capture_output=True, text=True, cwd=tmp_path)
    return res, {p.name: p.read_text() for p in out.iterdir() if p.name != "plugin.py"}


def test_bench_ends_after_its_threads_and_exit_handlers_without_the_teardown(tmp_path) -> None:
    run = ["run", "--opt", "adamw", "--task", "noisy-quadratic", "--steps", "5", "--quiet"]
    res, left = _bench(tmp_path, "a", [sys.executable, "-m", "bench_cli"], *run, "--out", "a")
    assert res.returncode == 0, res.stderr
    assert "noisy-quadratic (seed 0)" in res.stdout and "records written to a" in res.stderr
    assert left == {"thread": "joined", "atexit": "joined"}  # in a normal exit's order
    assert (tmp_path / "a").is_dir() and list((tmp_path / "a").glob("*.json"))
    # the same command through ``main``, which returns as usual: the teardown runs there
    main = "import sys; from bench_cli.cli import main; sys.argv[0] = 'bench'; main()"
    res, left = _bench(tmp_path, "b", [sys.executable, "-c", main], *run, "--out", "b")
    assert res.returncode == 0, res.stderr
    assert left == {"thread": "joined", "atexit": "joined", "teardown": "ran"}


def test_bench_keeps_the_commands_exit_status(tmp_path) -> None:
    args = ["run", "--opt", "no-such-optimizer", "--task", "noisy-quadratic"]
    res, left = _bench(tmp_path, "bad", [sys.executable, "-m", "bench_cli"], *args)
    assert res.returncode == 1 and "unknown optimizer 'no-such-optimizer'" in res.stderr
    assert left == {"thread": "joined", "atexit": "joined"}
    res = subprocess.run([sys.executable, "-m", "bench_cli", "--version"], capture_output=True)
    assert res.returncode == 0 and res.stdout.startswith(b"bench ")
