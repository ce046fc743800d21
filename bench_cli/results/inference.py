"""Distribution-free inference over seeds: a paired sign-flip test and order-statistic intervals.

Both work on *bounded* observations: each value is known to lie in ``[low, high]``. A run that
reached its target is a point (``low == high``); a run stopped before the target is right-censored
(``[tokens it trained, inf]``); a diverged run never reaches it (``[inf, inf]``).

**Paired sign-flip test.** Per paired seed the log speedup ``x = log(baseline / optimizer)`` is
known to lie in ``[L, U]``. Under the null hypothesis (both optimizers identical in distribution,
seeds independent) each ``x`` is symmetric about 0, so every pattern of sign flips is equally
likely; the p-value of "better" is the fraction of the ``2**n`` flips whose sum is at least the
observed sum, counted exactly for ``n <= EXACT_MAX_PAIRS`` and over ``RANDOM_FLIPS`` flips drawn
with a fixed seed above that (``(1 + hits) / (1 + draws)``, still a valid p-value).

*Censoring rule.* That p-value never increases when any ``x_i`` increases (raising ``x_i`` raises
the observed sum at least as much as any flipped sum). So evaluating it at the lower ends ``L`` --
every pair at its worst case for "better" -- gives a p-value at least as large as the one of the
unknown true values: the test keeps its size. "Worse" is tested the same way at the upper ends
``U``. A pair whose ratio could lie on either side of 1 (both runs censored, or a bound that
straddles 1) is thus counted against the claim, whichever it is. Infinite ends (``L = -inf`` when
the baseline reached the target and the optimizer diverged, or both censored) are handled exactly,
as the limit of a very large value: the sum compares first by its infinite part, then by its
finite part.

*Level.* Two-sided at ``alpha``: "better" when its one-sided p-value is at most ``alpha / 2``,
"worse" likewise. The smallest attainable p-value is ``2**-n``, so fewer than
``min_pairs(alpha)`` pairs (6 at 5%) can never reach a verdict: the verdict then says
"too few seeds (N needed)".

**Median intervals.** For ``n`` independent draws of a continuous distribution with median ``m``,
``[X_(k), X_(n+1-k)]`` covers ``m`` with probability ``1 - 2 P(B <= k-1)``, ``B ~ Binomial(n, 1/2)``,
whatever the distribution. We take the narrowest such pair whose coverage is at least ``LEVEL``;
where even ``[min, max]`` cannot reach it, ``[min, max]`` with the level it does give. With bounded
values the interval is ``[k-th smallest low, (n+1-k)-th smallest high]``, which contains the
interval of the true values, so its coverage is at least the stated one.

**Two-sample shift test** (``bench check``: did a pair get slower than its baseline runs?). The
baseline values are first scaled by ``1 + tolerance``; the statistic then counts, over every (new
run, baseline run), +1 when the new value is surely above the scaled baseline value (its low above
that high), -1 when surely below, 0 when the bounds leave it open. Under the null hypothesis (new
runs drawn as the baseline's times ``1 + tolerance``, with the same budget, so the observed bounds
are exchangeable) every split of the pooled runs into a "new" and a "baseline" group is equally
likely, so the p-value is the fraction of splits whose statistic is at least the observed one:
counted exactly up to ``EXACT_MAX_SPLITS`` splits, above that over ``RANDOM_SPLITS`` random splits
(``(1 + hits) / (1 + draws)``). New runs slower by less than the tolerance (or not slower) give
a p-value at least as large, so the test keeps its size. Its smallest p-value is
``1 / C(n + m, n)``: three seeds a side reach 5%, two do not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations, product

import numpy as np

ALPHA = 0.05
LEVEL = 0.95
EXACT_MAX_PAIRS = 16
RANDOM_FLIPS = 20_000
FLIP_SEED = 0
EXACT_MAX_SPLITS = 50_000
RANDOM_SPLITS = 20_000


# ---- the paired sign-flip test -----------------------------------------------------------------


def min_pairs(alpha: float = ALPHA) -> int:
    """The fewest pairs whose smallest two-sided p-value (``2 * 2**-n``) is at most ``alpha``."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    return max(1, math.ceil(math.log2(2 / alpha) - 1e-12))


@lru_cache(maxsize=32)
def _signs(n: int) -> np.ndarray:
    if n <= EXACT_MAX_PAIRS:
        return np.array(list(product((1.0, -1.0), repeat=n))).reshape(-1, n)
    rng = np.random.default_rng(FLIP_SEED)
    return rng.choice((1.0, -1.0), size=(RANDOM_FLIPS, n))


def sign_flip_p(values: Sequence[float]) -> float:
    """One-sided p-value that the paired values are centred above 0 (``inf`` entries allowed)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0 or np.isnan(x).any():
        return 1.0
    infinite = np.isinf(x)
    inf_part = np.where(infinite, np.sign(x), 0.0)
    fin_part = np.where(infinite, 0.0, x)
    signs = _signs(x.size)
    flipped_inf = signs @ np.abs(inf_part)
    flipped_fin = signs @ np.abs(fin_part)
    obs_inf, obs_fin = inf_part.sum(), fin_part.sum()
    slack = 1e-9 * (1.0 + np.abs(fin_part).sum())  # float sums of equal sets may differ a little
    hits = (flipped_inf > obs_inf) | ((flipped_inf == obs_inf) & (flipped_fin >= obs_fin - slack))
    if x.size <= EXACT_MAX_PAIRS:
        return float(hits.mean())
    return float((1 + hits.sum()) / (1 + hits.size))


@dataclass(frozen=True)
class Verdict:
    verdict: str  # better, worse, inconclusive or "too few seeds (N needed)"
    p_better: float  # one-sided p-values at the worst case for each claim
    p_worse: float
    pairs: int


def too_few(alpha: float = ALPHA) -> str:
    return f"too few seeds ({min_pairs(alpha)} needed)"


def paired_verdict(lows: Sequence[float], highs: Sequence[float], alpha: float = ALPHA) -> Verdict:
    """Verdict on paired log speedups known to lie in ``[lows[i], highs[i]]`` (see the module)."""
    n = len(lows)
    if n < min_pairs(alpha):
        return Verdict(too_few(alpha), math.nan, math.nan, n)
    p_better = sign_flip_p(lows)
    p_worse = sign_flip_p([-h for h in highs])
    if p_better <= alpha / 2:
        verdict = "better"
    elif p_worse <= alpha / 2:
        verdict = "worse"
    else:
        verdict = "inconclusive"
    return Verdict(verdict, p_better, p_worse, n)


# ---- order-statistic intervals for the median --------------------------------------------------


def median_coverage(n: int, k: int) -> float:
    """Coverage of ``[X_(k), X_(n+1-k)]`` (1-based) for the median of a continuous law."""
    tail = sum(math.comb(n, i) for i in range(k)) / 2**n  # P(B <= k-1), exactly
    return float(1.0 - 2.0 * tail)


def median_rank(n: int, level: float = LEVEL) -> tuple[int, float] | None:
    """``(k, coverage)`` of the narrowest symmetric interval with coverage >= ``level``; where
    none reaches it, ``(1, coverage of [min, max])``; None for fewer than two values."""
    if n < 2:
        return None
    best = 1
    for k in range(1, n // 2 + 1):
        if median_coverage(n, k) >= level:
            best = k
        else:
            break
    return best, median_coverage(n, best)


@dataclass(frozen=True)
class MedianSummary:
    """The median of bounded values with its order-statistic interval.

    ``median`` is the value when the bounds pin it down, else nan; ``median_low`` is what it is
    known to be at least. ``lo``/``hi`` are the interval's ends (``hi`` is ``inf`` when its order
    statistic is censored, and ``hi_low`` is that statistic's known lower bound); ``level`` is
    the interval's true coverage, nan for a single value, whose "interval" is its own bounds.
    """

    median: float
    median_low: float
    lo: float
    hi: float
    hi_low: float
    level: float
    reached: int
    total: int


def _mid(sorted_values: np.ndarray) -> float:
    n = sorted_values.size
    a, b = sorted_values[(n - 1) // 2], sorted_values[n // 2]
    return float(a) if a == b else float((a + b) / 2)


def summarize(
    lows: Sequence[float], highs: Sequence[float] | None = None, level: float = LEVEL
) -> MedianSummary:
    """Median and interval of values known to lie in ``[lows[i], highs[i]]`` (points when
    ``highs`` is None)."""
    lo_v = np.sort(np.asarray(lows, dtype=float))
    hi_v = np.sort(np.asarray(lows if highs is None else highs, dtype=float))
    n = lo_v.size
    reached = int(np.sum(np.isfinite(hi_v)))
    if n == 0:
        return MedianSummary(*(math.nan,) * 6, 0, 0)
    m_low, m_high = _mid(lo_v), _mid(hi_v)
    median = m_low if m_low == m_high and math.isfinite(m_low) else math.nan
    rank = median_rank(n, level)
    if rank is None:  # one value: no interval (level nan); its ends are the value's bounds
        return MedianSummary(median, m_low, m_low, m_high, m_low, math.nan, reached, n)
    k, cover = rank
    return MedianSummary(
        median, m_low, float(lo_v[k - 1]), float(hi_v[n - k]), float(lo_v[n - k]), cover,
        reached, n,
    )  # fmt: skip


# ---- the two-sample shift test -----------------------------------------------------------------


def min_shift_p(n_new: int, n_base: int) -> float:
    """The smallest p-value ``shift_p`` can give with these group sizes."""
    return 1.0 / math.comb(n_new + n_base, n_new) if n_new and n_base else 1.0


@lru_cache(maxsize=16)
def _splits(n: int, k: int) -> tuple[np.ndarray, bool]:
    """Rows of 0/1 marking which of ``n`` pooled runs form the "new" group of ``k``: every split
    (True) or ``RANDOM_SPLITS`` random ones drawn with a fixed seed (False)."""
    if math.comb(n, k) <= EXACT_MAX_SPLITS:
        rows = np.zeros((math.comb(n, k), n))
        for i, chosen in enumerate(combinations(range(n), k)):
            rows[i, list(chosen)] = 1.0
        return rows, True
    rng = np.random.default_rng(FLIP_SEED)
    order = np.argsort(rng.random((RANDOM_SPLITS, n)), axis=1)
    rows = np.zeros((RANDOM_SPLITS, n))
    np.put_along_axis(rows, order[:, :k], 1.0, axis=1)
    return rows, False


def shift_p(
    new_lows: Sequence[float],
    new_highs: Sequence[float],
    base_lows: Sequence[float],
    base_highs: Sequence[float],
    factor: float = 1.0,
) -> float:
    """One-sided p-value that the new values lie above the baseline values times ``factor``,
    each value known to lie in ``[low, high]`` (see the module)."""
    k = len(new_lows)
    # the baseline values scaled by the tolerance: the null is "new drawn as factor x baseline"
    lows = np.asarray([*new_lows, *(factor * b for b in base_lows)], dtype=float)
    highs = np.asarray([*new_highs, *(factor * b for b in base_highs)], dtype=float)
    if k == 0 or k == lows.size:
        return 1.0
    # score[a, b]: run a taken as new against run b taken as baseline
    score = (lows[:, None] > highs[None, :]).astype(float)
    score -= (highs[:, None] < lows[None, :]).astype(float)
    observed = score[:k, k:].sum()
    rows, exact = _splits(lows.size, k)
    stats = ((rows @ score) * (1.0 - rows)).sum(axis=1)
    hits = int(np.sum(stats >= observed - 1e-9))
    if exact:
        return hits / rows.shape[0]
    return (1 + hits) / (1 + rows.shape[0])
