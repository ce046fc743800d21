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


def test_a_pair_that_stops_reaching_the_target_fails_the_test() -> None:
    """Three seeds a side: every new run (censored at 10k) above every baseline run is the
    permutation test's smallest p-value, 1 / C(6, 3) = 0.05."""
    new = [r for r in suite() if not (r.task == "lm" and r.optimizer == "slow")]
    new += [make_record("lm", "slow", s, None) for s in (0, 1, 2)]
    (problem,) = compare(new, suite())
    assert problem.startswith("lm / slow: slower than the baseline beyond the 5% tolerance: ")
    assert "median tokens-to-target >10k against 6.15k [6k, 6.3k]" in problem
    assert "reached the target in 0/3 seeds (baseline 3/3)" in problem
    assert problem.endswith(
        "permutation test of the 3 new against the 3 baseline runs, p = 0.05 <= 0.05"
    )
    # at a level three seeds cannot reach, the values are compared as they are
    (fallback,) = compare(new, suite(), alpha=0.04)
    assert "now censored (3 and 3 seeds are too few for a test at 0.04" in fallback


def test_a_median_that_becomes_censored_fails_with_one_seed() -> None:
    """One seed a side (a deterministic CI smoke suite): no test, the values as they are."""
    base = suite(seeds=(0,))
    new = [r for r in base if not (r.task == "lm" and r.optimizer == "slow")]
    new.append(make_record("lm", "slow", 0, None))
    (problem,) = compare(new, base)
    assert problem == (
        "lm / slow: reached the target in 0/1 seeds (baseline 1/1); the median tokens-to-target "
        "is now censored (1 and 1 seeds are too few for a test at 0.05: the values were compared "
        "as they are)"
    )


def test_two_seeds_compare_values_three_test_them() -> None:
    """One new run of three far slower (a 1-in-3 fluke) moves the median past the baseline's
    interval: compared as values with two seeds a side it fails; tested with three, one slow
    run is no evidence and it passes."""
    base = suite(seeds=(0, 1))
    new = [r for r in base if not (r.task == "lm" and r.optimizer == "fast")]
    new += [make_record("lm", "fast", 0, 2000.0), make_record("lm", "fast", 1, 2600.0)]
    (problem,) = compare(new, base)
    assert "median tokens-to-target 2.3k is above the baseline's interval [2k, 2.05k]" in problem
    assert "2 and 2 seeds are too few for a test at 0.05" in problem
    base3 = suite()
    new3 = [r for r in base3 if not (r.task == "lm" and r.optimizer == "fast")]
    new3 += [make_record("lm", "fast", s, t) for s, t in ((0, 2000.0), (1, 2050.0), (2, 2600.0))]
    assert compare(new3, base3) == []


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


def test_missing_seeds_fail_and_are_named() -> None:
    new = [r for r in suite() if not (r.task == "lm" and r.optimizer == "fast" and r.seed > 0)]
    assert compare(new, suite()) == [
        "lm / fast: no runs for seeds 1, 2 in the new results (the baseline has seeds 0-2); "
        "run them, or check against a baseline with the same seeds"
    ]


def test_missing_seeds_are_listed_compactly() -> None:
    (problem, *_) = compare(suite(seeds=(0,)), suite(seeds=(0, 1, 2, 3, 4, 7)))
    assert problem.startswith(
        "lm / adamw: no runs for seeds 1-4, 7 in the new results (the baseline has seeds 0-4, 7)"
    )


def test_no_seed_in_common_fails_for_every_pair() -> None:
    shifted = [r.model_copy(update={"seed": r.seed + 50}) for r in suite()]  # same numbers
    problems = compare(shifted, suite())
    pairs = [f"{t} / {o}" for t in ("lm", "valley") for o in ("adamw", "fast", "slow")]
    assert [p.split(":")[0] for p in problems] == pairs
    assert all("no runs for seeds 0-2 in the new results" in p for p in problems)


def test_extra_seeds_and_unscored_runs_pass() -> None:
    tuning = [r.model_copy(update={"role": "tune", "seed": 9}) for r in suite(seeds=(0,))]
    assert compare(suite(seeds=(0, 1, 2, 3)), [*suite(), *tuning]) == []


def test_a_seed_independent_task_needs_one_seed() -> None:
    def independent(records):
        return [r.model_copy(update={"seed_independent": r.task == "valley"}) for r in records]

    new = independent([r for r in suite() if r.task == "lm" or r.seed == 0])
    assert compare(new, independent(suite())) == []


@pytest.mark.parametrize("tolerance", ["inf", "1e308", "nan", "5", "-0.1"])
def test_a_tolerance_outside_0_to_1_is_refused_in_one_line(tmp_path: Path, tolerance) -> None:
    app = typer.Typer()
    register(app)
    res = runner.invoke(app, ["check", str(tmp_path), "--against", "x", "--tolerance", tolerance])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.strip().splitlines() == [
        f"error: tolerance must lie between 0 and 1 (a fraction, 0.05 = 5%), got {float(tolerance)}"
    ]


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
    one_seed = write_all(tmp_path / "one", suite(seeds=(0,)))
    fewer = runner.invoke(app, ["check", str(one_seed), "--against", str(base)])
    assert fewer.exit_code == 1 and "no regressions" not in fewer.output
    assert "regression: lm / adamw: no runs for seeds 1, 2 in the new results" in fewer.stderr
    missing = runner.invoke(app, ["check", str(same), "--against", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
