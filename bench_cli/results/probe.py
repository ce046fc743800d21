"""The forgetting probe's table: how much of one batch a run keeps, against the baseline.

A run with the task option ``probe_batch_step = K`` trains once on a batch it never sees
otherwise, in place of batch K + 1, and records that batch's loss (``probe_loss``) at every
evaluation. The probe's *excess* d steps after injection is ``probe_loss - val_loss`` at the
first evaluation at or after step K + d, less the same difference at the last evaluation at or
before step K. Subtracting the validation loss removes what the model learns (or, on repeated
data, overfits) in general; what is left is what it kept of that one batch. More negative:
more kept.

Per task and optimizer, over the scoring runs of the configuration the leaderboard keeps: the
median excess at each offset and, paired by seed with the baseline, how many seeds sit below
the baseline's and the exact two-sided sign-flip p-value of the differences. These describe
several offsets with no correction for the number of looks, so the tool states no verdict from
them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench_cli.errors import BenchError
from bench_cli.results import inference, stats
from bench_cli.results.record import RunRecord

DEFAULT_AFTER = (100, 200, 500, 1000)
END = "end"
COLUMNS = ["task", "optimizer", "after", "step", "excess", "seeds", "below", "pairs", "p"]


def has_probe(record: RunRecord) -> bool:
    """A finished run with a probe batch and its loss recorded."""
    return (
        record.status == "done"
        and "probe_batch_step" in record.task_options
        and any("probe_loss" in p.metrics for p in record.probe_curve or record.curve)
    )


def excess(record: RunRecord, after: Sequence[int | str]) -> dict[int | str, float]:
    """The probe's excess at each offset (NaN where the run has no evaluation that late)."""
    k = record.task_options.get("probe_batch_step")
    points = sorted(
        (p.step, p.metrics["probe_loss"] - p.metrics["val_loss"])
        for p in record.probe_curve or record.curve
        if "probe_loss" in p.metrics and "val_loss" in p.metrics
    )
    before = [d for s, d in points if k is not None and s <= k]
    if not before:
        return {a: math.nan for a in after}
    out: dict[int | str, float] = {}
    for a in after:
        later = [d for s, d in points if s > k] if a == END else []
        if a == END:
            out[a] = later[-1] - before[-1] if later else math.nan
        else:
            hit = next((d for s, d in points if s >= k + int(a)), None)
            out[a] = math.nan if hit is None else hit - before[-1]
    return out


def two_sided_p(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip p-value that paired differences are centred on 0."""
    x = [float(v) for v in differences]
    if not x:
        return 1.0
    return min(1.0, 2 * min(inference.sign_flip_p(x), inference.sign_flip_p([-v for v in x])))


def _kept_runs(records: Sequence[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    """Per (task, optimizer): the scoring runs of the configuration kept that carry a probe."""
    choices, _ = stats.kept_choices(records)
    kept = {key: [o.record for o in c.runs if has_probe(o.record)] for key, c in choices.items()}
    return {key: runs for key, runs in kept.items() if runs}


def table(
    records: Sequence[RunRecord], baseline: str, after: Sequence[int] = DEFAULT_AFTER
) -> pd.DataFrame:
    """One row per task, optimizer and offset (``COLUMNS``); the baseline's rows have no p."""
    kept = _kept_runs(records)
    if not kept:
        raise BenchError(
            "no scoring run with a forgetting probe here; run a task with the option "
            "probe_batch_step (for example lm-markov or lm-medium in suites/ademamix-claims.yaml)"
        )
    offsets: list[int | str] = [*after, END]
    rows = []
    for (task, opt), runs in sorted(kept.items(), key=lambda kv: (kv[0][0], kv[0][1] != baseline)):
        mine = {r.seed: excess(r, offsets) for r in runs}
        base_runs = kept.get((task, baseline), [])
        base = {r.seed: excess(r, offsets) for r in base_runs}
        k = runs[0].task_options["probe_batch_step"]
        for a in offsets:
            values = [e[a] for e in mine.values() if not math.isnan(e[a])]
            step = max(r.steps_done for r in runs) if a == END else k + int(a)
            row = {"task": task, "optimizer": opt, "after": a, "step": step, "seeds": len(values)}
            row["excess"] = float(np.median(values)) if values else math.nan
            row.update(below=math.nan, pairs=math.nan, p=math.nan)
            if opt != baseline and base:
                diffs = [
                    mine[s][a] - base[s][a]
                    for s in sorted(set(mine) & set(base))
                    if not (math.isnan(mine[s][a]) or math.isnan(base[s][a]))
                ]
                row.update(below=sum(d < 0 for d in diffs), pairs=len(diffs))
                row["p"] = two_sided_p(diffs) if diffs else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _cell(row) -> str:
    if math.isnan(row.excess):
        return "—"
    text = f"{row.excess:+.4f}"
    if not math.isnan(row.pairs):
        text += f" ({int(row.below)}/{int(row.pairs)} below, p {row.p:.2g})"
    return text


def pivots(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Per task, a title and a table of optimizers against offsets, as text cells."""
    out = []
    for task, rows in df.groupby("task", sort=True):
        end = int(rows[rows.after == END].step.max())
        first = rows.iloc[0]
        k = int(first.step) - int(first.after) if first.after != END else end
        heads = [f"+{a:,}" if a != END else f"end (step {end:,})" for a in rows.after.unique()]
        cells = {
            opt: [_cell(r) for r in group.itertuples()]
            for opt, group in rows.groupby("optimizer", sort=False)
        }
        table = pd.DataFrame([[opt, *c] for opt, c in cells.items()], columns=["optimizer", *heads])
        out.append((f"{task}: probe batch in place of batch {k + 1:,}", table))
    return out


def legend(baseline: str) -> str:
    return (
        "Excess: probe_loss - val_loss, less the same before injection; median over seeds; "
        f"more negative: more of the batch kept. Below: seeds where it is below {baseline}'s "
        "(paired by seed); p: exact two-sided sign-flip test of the paired differences, one "
        "per offset with no correction for the number of offsets, so no verdict is stated."
    )


def to_markdown(df: pd.DataFrame, baseline: str) -> str:
    parts = []
    for title, table in pivots(df):
        lines = [f"### {title}\n", "| " + " | ".join(table.columns) + " |"]
        lines.append("|---" + "|--:" * (len(table.columns) - 1) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in table.itertuples(index=False)]
        parts.append("\n".join(lines) + "\n")
    parts.append(legend(baseline) + "\n")
    return "\n".join(parts)


def render(df: pd.DataFrame, fmt: str, baseline: str) -> str:
    if fmt == "md":
        return to_markdown(df, baseline)
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        out = df.astype(object).where(df.notna(), None)
        return out.to_json(orient="records", indent=1) + "\n"
    raise BenchError(f"unknown format {fmt!r}; choose one of md, csv, json")
