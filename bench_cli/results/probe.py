"""The forgetting probe's table: how much of one batch a run keeps, against the baseline.

A run with the task option ``probe_batch_step = K`` trains once on a batch it never sees
otherwise, in place of batch K + 1, and records that batch's loss (``probe_loss``) at every
evaluation. The probe's *excess* d steps after injection is ``probe_loss - val_loss`` at the
first evaluation at or after step K + d, less the same difference at the last evaluation at or
before step K. Subtracting the validation loss removes what the model learns (or, on repeated
data, overfits) in general; what is left is what it kept of that one batch. More negative:
more kept.

Per task and optimizer, over the scoring runs of the configuration the leaderboard keeps
(diverged runs up to their last finite evaluation): the median excess at each offset and,
paired by seed with the baseline, how many seeds sit below the baseline's and the two-sided
sign-flip p-value of the differences (exact up to 16 pairs). These describe several offsets
with no correction for the number of looks, so the tool states no verdict from them. An offset
asked for between two evaluations is reported at the evaluation used, with its true offset.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench_cli.errors import BenchError
from bench_cli.results import export, inference, stats
from bench_cli.results.defaults import DEFAULT_AFTER
from bench_cli.results.record import RunRecord

END = "end"
FORMATS = ("md", "csv", "json")
COLUMNS = [
    "task", "optimizer", "probe_step", "after", "step", "excess", "seeds", "runs", "below",
    "pairs", "p",
]  # fmt: skip


def probe_step(record: RunRecord) -> int | None:
    """K: the probe batch replaced batch K + 1 (None: the run had no probe)."""
    k = record.task_options.get("probe_batch_step")
    return k if isinstance(k, int) and not isinstance(k, bool) else None


def _points(record: RunRecord) -> list[tuple[int, float]]:
    """(step, probe_loss - val_loss) at every evaluation where both are finite."""
    out = []
    for p in record.probe_curve or record.curve:
        if "probe_loss" in p.metrics and "val_loss" in p.metrics:
            d = p.metrics["probe_loss"] - p.metrics["val_loss"]
            if math.isfinite(d):
                out.append((p.step, d))
    return sorted(out)


def has_probe(record: RunRecord) -> bool:
    """A run that trained with a probe batch and recorded its loss (not one that errored)."""
    return (
        record.status in ("done", "diverged")
        and probe_step(record) is not None
        and any("probe_loss" in p.metrics for p in record.probe_curve or record.curve)
    )


def excess(record: RunRecord, after: Sequence[int | str]) -> dict[int | str, tuple[float, int]]:
    """Per offset, the probe's excess and the evaluation step it was read at (NaN and -1 where
    the run has no finite evaluation that late, or none before injection)."""
    k, points = probe_step(record), _points(record)
    before = [d for s, d in points if k is not None and s <= k]
    out: dict[int | str, tuple[float, int]] = {}
    for a in after:
        if a == END:
            hit = next(((s, d) for s, d in reversed(points) if k is not None and s > k), None)
        else:
            hit = next(((s, d) for s, d in points if k is not None and s >= k + int(a)), None)
        out[a] = (math.nan, -1) if hit is None or not before else (hit[1] - before[-1], hit[0])
    return out


def two_sided_p(differences: Sequence[float]) -> float:
    """Two-sided sign-flip p-value that paired differences are centred on 0 (exact up to
    ``inference.EXACT_MAX_PAIRS`` pairs)."""
    x = [float(v) for v in differences]
    if not x:
        return 1.0
    return min(1.0, 2 * min(inference.sign_flip_p(x), inference.sign_flip_p([-v for v in x])))


def _kept_runs(records: Sequence[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    """Per (task, optimizer): the scoring runs of the configuration kept that carry a probe."""
    choices, _ = stats.kept_choices(records)
    kept = {key: [o.record for o in c.runs if has_probe(o.record)] for key, c in choices.items()}
    kept = {key: runs for key, runs in kept.items() if runs}
    if not kept:
        if any(has_probe(r) for r in records):
            raise BenchError(
                "the probe runs here are tuning or calibration runs only; run the suite to the "
                "end to score the selected configurations"
            )
        raise BenchError(
            "no scoring run with a forgetting probe here; run a task with the option "
            "probe_batch_step (for example lm-markov or lm-medium in suites/ademamix-claims.yaml)"
        )
    return kept


def _task_step(task: str, runs: list[RunRecord]) -> int:
    steps = sorted({probe_step(r) for r in runs})
    if len(steps) > 1:
        raise BenchError(
            f"task {task}: its runs put the probe batch at different steps "
            f"({', '.join(map(str, steps))}); compare runs with one probe_batch_step"
        )
    return steps[0]


def table(
    records: Sequence[RunRecord], baseline: str, after: Sequence[int] = DEFAULT_AFTER
) -> pd.DataFrame:
    """One row per task, optimizer and offset (``COLUMNS``); ``after`` is the offset of the
    evaluation used, ``seeds`` how many of the ``runs`` have a value there."""
    kept = _kept_runs(records)
    asked: list[int | str] = [*after, END]
    rows = []
    for task in sorted({t for t, _ in kept}):
        opts = sorted((o for t, o in kept if t == task), key=lambda o: (o != baseline, o))
        k = _task_step(task, [r for o in opts for r in kept[(task, o)]])
        values = {o: {r.seed: excess(r, asked) for r in kept[(task, o)]} for o in opts}
        used: dict[int | str, int] = {}  # offset asked -> the evaluation step most runs read
        for a in asked:
            found = Counter(e[a][1] for per in values.values() for e in per.values())
            found.pop(-1, None)
            if found and (a == END or found.most_common(1)[0][0] not in used.values()):
                used[a] = found.most_common(1)[0][0]
        # a run counts at a column only if read at that column's evaluation step (a diverged
        # run's last finite evaluation is not the end)
        at = {
            o: {a: {s: e[a][0] if e[a][1] == step else math.nan for s, e in per.items()}
                for a, step in used.items()}
            for o, per in values.items()
        }  # fmt: skip
        base = at.get(baseline, {})
        for o in opts:
            for a, step in used.items():
                mine = at[o][a]
                got = [v for v in mine.values() if not math.isnan(v)]
                row = {"task": task, "optimizer": o, "probe_step": k, "step": step}
                row["runs"] = len(mine)
                row.update(after=END if a == END else step - k, seeds=len(got))
                row["excess"] = float(np.median(got)) if got else math.nan
                row.update(below=None, pairs=None, p=math.nan)
                if o != baseline and base:
                    diffs = [
                        mine[s] - base[a][s]
                        for s in sorted(set(mine) & set(base[a]))
                        if not (math.isnan(mine[s]) or math.isnan(base[a][s]))
                    ]
                    row.update(below=sum(d < 0 for d in diffs), pairs=len(diffs))
                    row["p"] = two_sided_p(diffs) if diffs else math.nan
                rows.append(row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("below", "pairs"):
        df[col] = df[col].astype("Int64")
    return df


def _cell(row) -> str:
    if math.isnan(row.excess):
        return "—"
    text = f"{row.excess:+.4f}"
    if not pd.isna(row.pairs) and row.pairs > 0:
        text += f" ({row.below}/{row.pairs} below, p {row.p:.2g})"
    if row.seeds < row.runs:
        text += f" [{row.seeds} of {row.runs} runs]"
    return text


def pivots(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Per task, a title and a table of optimizers against offsets, as text cells."""
    out = []
    for task, rows in df.groupby("task", sort=True):
        offsets = rows.drop_duplicates("after")
        heads = [
            f"end (step {r.step:,})" if r.after == END else f"+{r.after:,}"
            for r in offsets.itertuples()
        ]
        cells = {
            opt: [_cell(r) for r in group.itertuples()]
            for opt, group in rows.groupby("optimizer", sort=False)
        }
        table = pd.DataFrame([[opt, *c] for opt, c in cells.items()], columns=["optimizer", *heads])
        k = int(rows.probe_step.iloc[0])
        out.append((f"{task}: probe batch in place of batch {k + 1:,}", table))
    return out


def legend(baseline: str) -> str:
    return (
        "Excess: probe_loss - val_loss, less the same before injection, at the first evaluation "
        "at or after the step asked; median over seeds; more negative: more of the batch kept. "
        f"Below: seeds where it is below {baseline}'s (paired by seed); p: two-sided sign-flip "
        "test of the paired differences, one per offset with no correction for the number of "
        "offsets, so no verdict is stated. [n of m runs]: the other runs have no finite "
        "evaluation there (diverged earlier)."
    )


def to_markdown(df: pd.DataFrame, baseline: str) -> str:
    parts = [f"### {title}\n\n{export.md_table(table)}\n" for title, table in pivots(df)]
    return "\n".join([*parts, legend(baseline) + "\n"])


def render(df: pd.DataFrame, fmt: str, baseline: str) -> str:
    if fmt == "md":
        return to_markdown(df, baseline)
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":  # an object the record store knows is not a record
        rows = [{k: export.jsonable(v) for k, v in row.items()} for row in df.to_dict("records")]
        return json.dumps({"baseline": baseline, "probe": rows}, indent=1, allow_nan=False) + "\n"
    raise BenchError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
