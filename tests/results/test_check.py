"""``bench check``: passes on identical results, fails on prepared regressions and says why."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from bench_cli.cli_results import register
from bench_cli.errors import BenchError
from bench_cli.results.check import compare
from tests.results import make_record, suite, write_all

runner = CliRunner()


def replaced(records, task, optimizer, seed, **kw):
    """``records`` with one run remade (same configuration)."""
    out = [r for r in records if (r.task, r.optimizer, r.seed) != (task, optimizer, seed)]
    return [*out, make_record(task, optimizer, seed, **kw)]


def test_identical_results_pass() -> None:
    assert compare(suite(), suite()) == []


def test_slower_beyond_the_interval_fails_and_says_why() -> None:
    new = [
        r
        for r in suite()
        if not (r.task == "lm" and r.optimizer == "fast")  # was 2000, 2050, 2100 tokens
    ] + [make_record("lm", "fast", s, 2600.0) for s in (0, 1, 2)]
    (problem,) = compare(new, suite())
    assert "lm / fast" in problem and "2.6k" in problem and "[2k, 2.1k]" in problem


def test_tolerance_allows_a_small_slowdown() -> None:
    new = [r for r in suite() if not (r.task == "lm" and r.optimizer == "fast")]
    new += [make_record("lm", "fast", s, 2150.0) for s in (0, 1, 2)]  # 2.4% above 2100
    assert compare(new, suite(), tolerance=0.05) == []
    assert len(compare(new, suite(), tolerance=0.0)) == 1


def test_new_divergence_and_new_error_fail() -> None:
    new = replaced(suite(), "lm", "adamw", 1, ttt=None, status="diverged", steps_done=30)
    new = replaced(new, "valley", "slow", 0, status="error")
    problems = compare(new, suite())
    assert any("lm / adamw seed 1: diverged (was done)" in p for p in problems)
    assert any("valley / slow seed 0: error: RuntimeError: boom (was done)" in p for p in problems)


def test_a_median_that_becomes_censored_fails() -> None:
    new = [r for r in suite() if not (r.task == "lm" and r.optimizer == "slow")]
    new += [make_record("lm", "slow", s, None) for s in (0, 1, 2)]
    (problem,) = compare(new, suite())
    assert "lm / slow: reached the target in 0/3 seeds (baseline 3/3)" in problem


def test_missing_task_and_optimizer_fail() -> None:
    new = [r for r in suite() if r.task == "lm" and r.optimizer != "slow"]
    assert compare(new, suite()) == [
        "valley: no runs in the new results",
        "lm / slow: no runs in the new results",
    ]


def test_a_new_sweep_configuration_may_diverge() -> None:
    extra = make_record("lm", "fast", 0, None, hparams={"lr": 1.0}, status="diverged")
    assert compare([*suite(), extra], suite()) == []


def test_a_changed_default_that_diverges_is_still_caught() -> None:
    base = suite()
    new = [r for r in base if not (r.task == "lm" and r.optimizer == "slow")]
    new += [make_record("lm", "slow", s, 6000.0, hparams={"lr": 2e-3}) for s in (0, 1)]
    new.append(make_record("lm", "slow", 2, None, hparams={"lr": 2e-3}, status="diverged"))
    assert any("lm / slow seed 2: diverged (was done)" in p for p in compare(new, base))


def test_negative_tolerance_is_refused() -> None:
    with pytest.raises(BenchError, match="tolerance"):
        compare(suite(), suite(), tolerance=-0.1)


def test_check_command_exit_codes(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    base = write_all(tmp_path / "base", suite())
    same = write_all(tmp_path / "same", suite())
    worse = write_all(
        tmp_path / "worse", replaced(suite(), "lm", "fast", 0, ttt=None, status="diverged")
    )
    ok = runner.invoke(app, ["check", str(same), "--against", str(base)])
    assert ok.exit_code == 0 and "no regressions" in ok.stdout
    bad = runner.invoke(app, ["check", str(worse), "--against", str(base), "--tolerance", "0.1"])
    assert bad.exit_code == 1 and "lm / fast seed 0: diverged (was done)" in bad.output
    missing = runner.invoke(app, ["check", str(same), "--against", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
