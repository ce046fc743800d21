"""Plug-ins: --plugin with a file or a module, entry points, duplicates, broken plug-ins."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli.cli import app
from bench_cli.errors import BenchError, UnknownNameError
from bench_cli.plugins import Registry, load_plugin

PLUGIN = textwrap.dedent(
    '''
    import torch
    from bench_cli.registry import OPTIMIZERS
    from bench_cli.tasks import TASKS
    from bench_cli.tasks.valleys import Rosenbrock

    @OPTIMIZERS.register("{opt}")
    class PlainSGD(torch.optim.SGD):
        """Plain SGD, registered by a plug-in."""
        def __init__(self, params, lr=1e-3):
            super().__init__(params, lr=lr)

    @TASKS.register("{task}")
    class Shifted(Rosenbrock):
        """Rosenbrock registered again by a plug-in."""
    '''
)


def _write(tmp_path: Path, name: str, opt: str, task: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(PLUGIN.format(opt=opt, task=task))
    return path


def test_plugin_file_registers_an_optimizer_and_a_task(tmp_path: Path) -> None:
    plugin = _write(tmp_path, "myplug", "plug-sgd", "plug-valley")
    res = CliRunner().invoke(
        app,
        [
            "run",
            "--plugin",
            str(plugin),
            "--opt",
            "Plug_SGD",
            "--task",
            "plug-valley",
            "--steps",
            "20",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "o").glob("*.json"))) == 1
    res = CliRunner().invoke(app, ["list", "--plugin", str(plugin)])
    assert "plug-sgd" in res.output and "Plain SGD, registered by a plug-in." in res.output


def test_plugin_module_path(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path, "bench_test_plugmod", "mod-sgd", "mod-valley")
    monkeypatch.syspath_prepend(str(tmp_path))
    load_plugin("bench_test_plugmod")
    from bench_cli.registry import OPTIMIZERS

    assert "mod-sgd" in OPTIMIZERS


@pytest.mark.parametrize("as_module", [False, True])
def test_a_plugin_that_registers_nothing_is_one_clear_error(
    tmp_path: Path, monkeypatch, as_module: bool
) -> None:
    """A wrong file or module named (a helper, a typo'd path) would otherwise pass unnoticed."""
    (tmp_path / f"bench_test_empty_{as_module}.py").write_text("import torch\nVALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = (
        f"bench_test_empty_{as_module}"
        if as_module
        else str(tmp_path / "bench_test_empty_False.py")
    )
    for _ in range(2):  # named again, refused again
        res = CliRunner().invoke(
            app, ["run", "--opt", "adamw", "--task", "noisy-quadratic", "--plugin", spec,
                  "--out", str(tmp_path / "out")],
        )  # fmt: skip
        assert res.exit_code == 1, res.output
        (line,) = res.output.splitlines()
        assert f"plug-in {spec!r} registered no optimizer or task" in line
        assert "@OPTIMIZERS.register(NAME)" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("spec", "refused"), [("os", True), ("json", True),
                                             ("bench_cli.registry.adamw", False), ("bench_cli", False)])  # fmt: skip
def test_a_module_imported_before_is_judged_by_what_came_from_it(spec, refused) -> None:
    """``os`` was imported long before: nothing it holds is registered, so it is refused; a
    module (or package) whose classes are registered is accepted."""
    assert spec in sys.modules
    res = CliRunner().invoke(app, ["list", "--plugin", spec])
    assert (res.exit_code == 1) is refused, res.output
    if refused:
        assert f"plug-in {spec!r} registered no optimizer or task" in res.output
    assert spec in sys.modules  # never taken out


def test_a_plugin_file_that_is_not_python_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plug.txt").write_text("x = 1\n")
    res = CliRunner().invoke(app, ["list", "--plugin", str(tmp_path / "plug.txt")])
    assert res.exit_code == 1
    assert res.output.strip() == (
        f"error: plug-in file {str(tmp_path / 'plug.txt')!r} is not a .py file; pass a Python "
        "file or a module path"
    )


def test_duplicate_name_is_an_error() -> None:
    reg: Registry[object] = Registry("thing", "bench_cli.test_nothing")
    reg.add("a-b", type("A", (), {}))
    with pytest.raises(BenchError, match="registered twice"):
        reg.add("A_B", type("B", (), {}))


def test_unknown_name_suggests_and_lists() -> None:
    reg: Registry[object] = Registry("thing", "bench_cli.test_nothing")
    reg.add("ademamix", type("C", (), {}))
    with pytest.raises(UnknownNameError, match="Did you mean 'ademamix'.*Known things: ademamix"):
        reg.get("ademamx")


def test_entry_points_and_a_broken_plugin_that_errors_only_when_selected(
    tmp_path: Path, monkeypatch
) -> None:
    """A fake installed distribution declares two entry points: one good, one broken."""
    (tmp_path / "bench_test_ep.py").write_text("class Good:\n    '''An entry-point plug-in.'''\n")
    (tmp_path / "bench_test_ep_exits.py").write_text("import sys\nsys.exit(2)\n")
    dist = tmp_path / "bench_test_ep-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: bench-test-ep\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[bench_cli.test_group]\ngood-one = bench_test_ep:Good\n"
        "broken-one = bench_test_ep_missing:Nope\nexiting-one = bench_test_ep_exits:Any\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry[type] = Registry("widget", "bench_cli.test_group")
    assert reg.names() == ["broken-one", "exiting-one", "good-one"]
    assert reg.get("GOOD_ONE").__name__ == "Good"
    assert [n for n, _ in reg.items()] == ["good-one"]  # listing skips the broken one
    with pytest.raises(BenchError, match="broken-one.*failed to load"):
        reg.get("broken-one")
    with pytest.raises(BenchError, match="exiting-one.*failed to load: SystemExit: 2"):
        reg.get("exiting-one")


def test_broken_plugin_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    res = CliRunner().invoke(app, ["list", "--plugin", str(bad)])
    assert res.exit_code == 1 and "failed to load: RuntimeError: boom" in res.output
    assert not any(name.startswith("bench_plugin_") and "bad" in name for name in sys.modules)


def test_a_plugin_file_that_calls_sys_exit_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "exits.py"
    bad.write_text("import sys\nsys.exit(4)\n")
    res = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "noisy-quadratic", "--plugin", str(bad),
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 1
    assert "plug-in" in res.output and "failed to load: SystemExit: 4" in res.output
    assert not (tmp_path / "out").exists()


def test_a_task_that_calls_sys_exit_while_the_command_plans_is_one_clear_error(
    tmp_path: Path,
) -> None:
    plugin = tmp_path / "exits_on_init.py"
    plugin.write_text(
        textwrap.dedent(
            """
            import sys
            from bench_cli.tasks import TASKS
            from bench_cli.tasks.valleys import NoisyQuadratic

            @TASKS.register("exits-on-init")
            class ExitsOnInit(NoisyQuadratic):
                def __init__(self, options):
                    sys.exit(0)
            """
        )
    )
    res = CliRunner().invoke(
        app, ["run", "--opt", "adamw", "--task", "exits-on-init", "--plugin", str(plugin),
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 1  # not the 0 it asked for: nothing ran
    assert "error: SystemExit: 0 (the task's, optimizer's or plug-in's code called" in res.output
    assert not (tmp_path / "out").exists()
