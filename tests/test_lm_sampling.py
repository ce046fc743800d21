"""Stratified validation windows and their standard error, on simulated splits whose loss is
known: the estimate is unbiased, the interval of +-1.96 standard errors covers the truth at least
95% of the time, and on a split made of files that differ (as real text does) it is several times
more precise than simple random windows. Hand-computed cases for the formula and a census."""

from __future__ import annotations

import math

import pytest
import torch

from bench_cli.tasks.lm.sampling import stratified_mean_se, stratified_starts


def _files_split(n_starts: int, seed: int) -> torch.Tensor:
    """Window losses along a split of files: each file its own mean (spread 0.8 nats, like
    Python sources), neighbouring windows nearly alike (they share most of their tokens)."""
    gen = torch.Generator().manual_seed(seed)
    out, pos = torch.empty(n_starts, dtype=torch.float64), 0
    while pos < n_starts:
        length = min(int(torch.randint(200, 4000, (1,), generator=gen)), n_starts - pos)
        mean = 3.0 + 0.8 * torch.randn((), generator=gen, dtype=torch.float64)
        walk = torch.cumsum(0.01 * torch.randn(length, generator=gen, dtype=torch.float64), 0)
        out[pos : pos + length] = mean + walk + 0.02 * torch.randn(length, generator=gen)
        pos += length
    return out


def _draws(split: torch.Tensor, n: int, reps: int) -> tuple[torch.Tensor, torch.Tensor]:
    est, se = [], []
    for r in range(reps):
        starts, weights, groups = stratified_starts(len(split), n, torch.Generator().manual_seed(r))
        m, s = stratified_mean_se(split[starts], weights, groups)
        est.append(float(m))
        se.append(float(s))
    return torch.tensor(est, dtype=torch.float64), torch.tensor(se, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["files", "independent"])
def test_unbiased_and_covers_the_split_loss(kind: str) -> None:
    n_starts, n, reps = 50_000, 800, 400
    if kind == "files":
        split = _files_split(n_starts, 0)
    else:  # no structure at all: stratifying gains nothing and must not lose coverage
        split = 3.0 + 0.8 * torch.randn(n_starts, generator=torch.Generator().manual_seed(0))
        split = split.double()
    truth = float(split.mean())
    est, se = _draws(split, n, reps)
    spread = float(est.std())
    assert abs(float(est.mean()) - truth) < 3 * spread / math.sqrt(reps)  # unbiased
    covered = float(((est - truth).abs() <= 1.96 * se).double().mean())
    assert covered >= 0.93  # nominal 0.95; the estimator errs on the wide side
    srs = float(split.std()) / math.sqrt(n)  # simple random windows, same count
    if kind == "files":
        assert spread < srs / 4  # the files' differences no longer enter the error
        assert float(se.mean()) < srs / 2  # and the reported error shows it
    else:
        assert float(se.mean()) == pytest.approx(spread, rel=0.15)
        assert spread == pytest.approx(srs, rel=0.15)


def test_formula_by_hand_with_an_odd_count() -> None:
    # five strata of equal size: pairs (1, 2) and the last group (3, 4, 5)
    starts, weights, groups = stratified_starts(50, 5, torch.Generator().manual_seed(0))
    assert groups.tolist() == [0, 0, 1, 1, 1]
    assert all(10 * h <= s < 10 * h + 10 for h, s in enumerate(starts.tolist()))
    mean, se = stratified_mean_se(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]), weights, groups)
    # 0.4^2 * 0.5 / 2 + 0.6^2 * 1.0 / 3 = 0.04 + 0.12
    assert float(mean) == pytest.approx(3.0) and float(se) == pytest.approx(0.4)


def test_small_split_is_scored_whole_with_no_error() -> None:
    split = torch.arange(30, dtype=torch.float64)
    starts, weights, groups = stratified_starts(30, 64, torch.Generator().manual_seed(0))
    assert starts.tolist() == list(range(30))
    mean, se = stratified_mean_se(split[starts], weights, groups)
    assert float(mean) == pytest.approx(14.5) and float(se) == 0.0


def test_unequal_strata_are_weighted_by_their_sizes() -> None:
    """1,200 starts in 800 strata: sizes of 1 and 2 in turn. On a split whose windows in the
    strata of 2 have loss 1 and the others 0 (true mean 2/3), the size weights give 2/3 at every
    draw, where equal weights would give 1/2."""
    n_starts, n = 1200, 800
    bounds = [h * n_starts // n for h in range(n + 1)]
    sizes = [bounds[h + 1] - bounds[h] for h in range(n)]
    assert set(sizes) == {1, 2}
    split = torch.zeros(n_starts, dtype=torch.float64)
    for h, k in enumerate(sizes):
        split[bounds[h] : bounds[h + 1]] = float(k == 2)
    for r in range(20):
        starts, weights, groups = stratified_starts(n_starts, n, torch.Generator().manual_seed(r))
        assert weights.tolist() == [k / n_starts for k in sizes]
        mean, _ = stratified_mean_se(split[starts], weights, groups)
        assert mean == pytest.approx(float(split.mean()))
        assert float(split[starts].mean()) == pytest.approx(0.5)


def test_fewer_than_two_windows_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 validation windows"):
        stratified_starts(100, 1, torch.Generator().manual_seed(0))
