"""The leaderboard's tables as CSV, Markdown, LaTeX (booktabs; ``bench_cli.results.latex``) or
JSON text, and for the terminal.

CSV and JSON carry the numbers (full precision; ``inf`` is a censored bound, empty/null is
undefined); Markdown, LaTeX and the terminal show text cells: ``median [lo, hi] level%`` with the
interval's true coverage, ``>x`` / ``<x`` where censoring leaves only a bound, ``-`` where nothing
is defined, and the speedup with its verdict. ``legend`` explains them under each table.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd

from bench_cli.errors import BenchError
from bench_cli.results import inference
from bench_cli.results.defaults import COMPACT, WIDE
from bench_cli.results.leaderboard import Leaderboard
from bench_cli.results.store import atomic_write_text

FORMATS = ("csv", "md", "latex", "json")
TABLES = ("all", "tasks", "ranking")


# ---- numbers as text ---------------------------------------------------------------------------


class Style:
    """How a renderer spells a missing value and infinity."""

    def __init__(self, na: str = "—", inf: str = "∞", gt: str = ">", lt: str = "<", pct: str = "%"):
        self.na, self.inf, self.gt, self.lt, self.pct = na, inf, gt, lt, pct


PLAIN = Style()
LATEX = Style(na="--", inf=r"$\infty$", gt="$>$", lt="$<$", pct=r"\%")


def _special(x: float | None, style: Style) -> str | None:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return style.na
    if math.isinf(x):
        return style.inf if x > 0 else "-" + style.inf
    return None


def fmt_count(x: float | None, style: Style = PLAIN) -> str:
    """3 significant digits with k/M/B/T: 1234567 -> '1.23M'."""
    if (s := _special(x, style)) is not None:
        return s
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div * (1 - 5e-4):  # so that 999_950 reads '1M', not '1e+03k'
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def fmt_seconds(x: float | None, style: Style = PLAIN) -> str:
    if (s := _special(x, style)) is not None:
        return s
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def fmt_metric(x: float | None, style: Style = PLAIN) -> str:
    return s if (s := _special(x, style)) is not None else f"{x:.4g}"


def fmt_ratio(x: float | None, style: Style = PLAIN) -> str:
    return s if (s := _special(x, style)) is not None else f"{x:.2f}"


def fmt_level(level: float, style: Style = PLAIN) -> str:
    """A coverage as a whole percent, rounded down so it never claims more: 0.9785 -> '97%'."""
    return f"{math.floor(level * 100 + 1e-9):.0f}{style.pct}"


def fmt_median(row: Mapping, col: str, fmt: Callable[..., str], style: Style = PLAIN) -> str:
    """``median [lo, hi] level%``; a censored median as ``>x``, a censored upper end as ``>x``;
    no interval where there is none (one seed, a seed-independent task)."""
    median, low = row[col], row[f"{col}_low"]
    if not math.isnan(median):
        text = fmt(median, style)
    elif math.isfinite(low):
        text = style.gt + fmt(low, style)
    else:
        return style.na
    lo, hi, level = row[f"{col}_lo"], row[f"{col}_hi"], row[f"{col}_level"]
    if math.isnan(level) or row.get("seed_independent", False):
        return text
    hi_text = fmt(hi, style) if math.isfinite(hi) else style.gt + fmt(row[f"{col}_hi_low"], style)
    if math.isinf(row[f"{col}_hi_low"]):
        hi_text = style.inf
    return f"{text} [{fmt(lo, style)}, {hi_text}] {fmt_level(level, style)}"


def fmt_speedup(value: float, lo: float, hi: float, style: Style = PLAIN) -> str:
    """``1.52x``, or a bound where censoring leaves the speedup open: ``>1.2x``, ``<0.8x``."""
    if not math.isnan(value):
        return f"{fmt_ratio(value, style)}x"
    if not math.isnan(lo) and lo > 0 and not math.isinf(lo):
        return f"{style.gt}{fmt_ratio(lo, style)}x"
    if not math.isnan(hi) and math.isfinite(hi):
        return f"{style.lt}{fmt_ratio(hi, style)}x"
    return style.na


def short_verdict(verdict: str) -> str:
    return "too few seeds" if verdict.startswith("too few seeds") else verdict


def speedup_cell(row: Mapping, style: Style = PLAIN) -> str:
    if row["verdict"] == "baseline":
        return "baseline"
    if row["verdict"] == "n/a":
        return style.na
    value = fmt_speedup(row["speedup"], row["speedup_lo"], row["speedup_hi"], style)
    if value == style.na:
        return value
    verdict = "" if row["verdict"] == "seed-independent" else " " + short_verdict(row["verdict"])
    return value + verdict


# ---- display tables (terminal, Markdown, LaTeX) ------------------------------------------------


def cell_columns(task: pd.DataFrame, style: Style) -> dict[str, tuple[str, list[str]]]:
    """Column id -> (header, cells) for every display column of one task."""
    unit, metric = task["unit"].iloc[0], task["metric"].iloc[0] or "metric"
    rows = task.to_dict("records")

    def best(row: Mapping) -> str:
        if math.isnan(row["best"]):
            return style.na
        return fmt_metric(row["best"], style)

    return {
        "optimizer": ("optimizer", list(task["optimizer"])),
        "reached": ("reached", [f"{r}/{n}" for r, n in zip(task["reached"], task["runs"])]),
        "tokens": (f"{unit} to target", [fmt_median(r, "tokens_to_target", fmt_count, style) for r in rows]),
        "speedup": ("speedup", [speedup_cell(r, style) for r in rows]),
        "best": (f"best {metric}", [best(r) for r in rows]),
        "seconds": ("seconds to target", [fmt_median(r, "seconds_to_target", fmt_seconds, style) for r in rows]),
        "final": (f"final {metric}", [fmt_metric(x, style) for x in task["final"]]),
        "throughput": (f"{unit}/s", [fmt_count(x, style) for x in task["tokens_per_second"]]),
        "state": ("state MB", [fmt_metric(x, style) for x in task["state_mb"]]),
        "grad_evals": ("grad evals", [fmt_count(x, style) for x in task["grad_evals"]]),
        "trials": ("trials", [f"{t} ({c} cfg)" for t, c in zip(task["trials"], task["configs"])]),
        "compute": ("tuning compute", [
            f"{fmt_count(t, style)} {unit}, {fmt_count(g, style) if g else style.na} grads"
            for t, g in zip(task["compute_tokens"], task["compute_grad_evals"])
        ]),
        "config": ("config", list(task["swept"])),
        "flags": ("flags", list(task["flags"])),
        "diverged": ("diverged", [str(x) for x in task["diverged"]]),
        "errors": ("errors", [str(x) for x in task["errors"]]),
    }  # fmt: skip


def parse_columns(text: str) -> tuple[str, ...]:
    """``--columns a,b,c`` -> column ids; an unknown id is refused with the list of known ones."""
    ids = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in ids if c not in WIDE]
    if unknown or not ids:
        raise BenchError(
            f"unknown column {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"choose from {', '.join(WIDE)}"
        )
    return ids


def display_task(
    task: pd.DataFrame, style: Style = PLAIN, columns: Sequence[str] = COMPACT
) -> pd.DataFrame:
    """One task's rows as text cells, the given column ids in order; in the wide view the
    diverged, errors, config and flags columns only when they say something."""
    cells = cell_columns(task, style)
    quiet = {"diverged": task["diverged"], "errors": task["errors"], "config": task["swept"]}
    quiet["flags"] = task["flags"]
    keep = [c for c in columns if c not in quiet or columns != WIDE or quiet[c].astype(bool).any()]
    return pd.DataFrame({cells[c][0]: cells[c][1] for c in keep})


def display_ranking(ranking: pd.DataFrame, style: Style = PLAIN) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": [str(r) for r in ranking["rank"]],
            "optimizer": list(ranking["optimizer"]),
            "tasks reached": [f"{r}/{n}" for r, n in zip(ranking["reached"], ranking["tasks"])],
            "speedup (geo. mean)": [fmt_ratio(x, style) for x in ranking["speedup"]],
            "profile score": [fmt_ratio(x, style) for x in ranking["profile_score"]],
            "trials": [str(t) for t in ranking["trials"]],
        }
    )


def target_line(lb: Leaderboard, task: str) -> str:
    t = lb.targets.get(task)
    if t is None:
        return "no target"
    return f"target {t.metric} {'<=' if t.direction == 'min' else '>='} {t.value:g}"


def title(lb: Leaderboard, task: str) -> str:
    """A task's table title: its target and baseline, then what to keep in mind."""
    text = f"{task}: {target_line(lb, task)}, baseline {lb.baseline}"
    rows = lb.tasks[lb.tasks["task"] == task]
    if rows["seed_independent"].any():
        text += "; seed-independent: its seeds count as one run (no interval, no verdict)"
    counts = (lb.budgets or {}).get(task, {})
    if rows["unequal"].any() and counts:
        usual = max(set(counts.values()), key=lambda n: (list(counts.values()).count(n), -n))
        odd = ", ".join(f"{o} {n}" for o, n in counts.items() if n != usual)
        text += f"; unequal budgets: {odd} configs, the others {usual}"
    trials = int(rows["trials"].fillna(0).sum()) if "trials" in rows else 0
    if trials:
        tokens = float(rows["compute_tokens"].fillna(0).sum()) if "compute_tokens" in rows else 0
        unit = rows["unit"].iloc[0] if len(rows) else "tokens"
        text += f"; {trials} trials, {fmt_count(tokens)} {unit} trained"
    return text


def legend(lb: Leaderboard, style: Style = PLAIN) -> str:
    """What the cells mean, the test and its level: printed under the tables."""
    alpha = lb.alpha
    return (
        f"Medians over scoring seeds; [lo, hi] N%: order-statistic interval for the median, N% "
        f"its true coverage, at least that where runs are censored (none for one seed). "
        f"{style.na}: not defined. >x: at least x (a run "
        f"that stopped short of the target counts as at least what it trained). <x: at most x. "
        f"Speedup: {lb.baseline} over optimizer tokens-to-target (in the task's unit), geometric "
        f"mean over paired seeds. Verdict: exact paired sign-flip permutation test on per-seed "
        f"log speedups, two-sided at {alpha:g}, censored pairs taken at their worst case for the "
        f"claim; too few seeds: fewer than {inference.min_pairs(alpha)} pairs, the least that "
        f"level can decide with."
        + (
            " A configuration picked among k on the scored seeds themselves (no tuning seeds) is "
            "tested at the level over k (Bonferroni, times the baseline's k; more seeds needed) "
            "and its intervals state the coverage left after the pick."
            if "alpha" in lb.tasks and (lb.tasks["alpha"] < alpha).any()
            else ""
        )
    )


def tasks_of(lb: Leaderboard) -> list[tuple[str, pd.DataFrame]]:
    return [(str(name), group) for name, group in lb.tasks.groupby("task", sort=True)]


# ---- renderers ---------------------------------------------------------------------------------


def md_table(df: pd.DataFrame) -> str:
    def cell(x: object) -> str:
        return str(x).replace("|", r"\|")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "--:" for i in range(len(df.columns))) + "|")
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(lb: Leaderboard, table: str = "all") -> str:
    parts = []
    if table in ("all", "tasks"):
        for name, task in tasks_of(lb):
            parts.append(f"### {name}\n\n{title(lb, name).split(': ', 1)[1]}.\n")
            parts.append(md_table(display_task(task, columns=WIDE)) + "\n")
        parts.append(legend(lb) + "\n")
    if table in ("all", "ranking"):
        parts.append("### Overall ranking\n\n" + md_table(display_ranking(lb.ranking)) + "\n")
    return "\n".join(parts)


def jsonable(x: object) -> object:
    """A cell as JSON: NaN and pandas' missing value become null, an infinity "inf"."""
    if x is None or x is pd.NA:
        return None
    if isinstance(x, float):
        return (
            None if math.isnan(x) else ("inf" if x == math.inf else "-inf") if math.isinf(x) else x
        )
    if hasattr(x, "item"):  # numpy scalars
        return jsonable(x.item())
    return x


def to_json(lb: Leaderboard, table: str = "all") -> str:
    """NaN (undefined) becomes null and an infinite bound the string "inf"."""

    def rows(df: pd.DataFrame) -> list[dict]:
        return [{k: jsonable(v) for k, v in row.items()} for row in df.to_dict("records")]

    out: dict[str, object] = {"baseline": lb.baseline}
    out["targets"] = {task: t.model_dump() for task, t in sorted(lb.targets.items())}
    if table in ("all", "tasks"):
        out["tasks"] = rows(lb.tasks)
    if table in ("all", "ranking"):
        out["ranking"] = rows(lb.ranking)
    return json.dumps(out, indent=1, allow_nan=False) + "\n"


def to_csv(lb: Leaderboard, table: str = "all") -> str:
    """One table per CSV: the per-task rows (``all`` or ``tasks``) or the ranking."""
    return (lb.ranking if table == "ranking" else lb.tasks).to_csv(index=False)


def to_latex(lb: Leaderboard, table: str = "all") -> str:
    from bench_cli.results.latex import to_latex as render_latex  # it builds on this module

    return render_latex(lb, table)


RENDERERS = {"csv": to_csv, "md": to_markdown, "latex": to_latex, "json": to_json}


def render(lb: Leaderboard, fmt: str, table: str = "all") -> str:
    if fmt not in RENDERERS:
        raise BenchError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if table not in TABLES:
        raise BenchError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    return RENDERERS[fmt](lb, table)


def write(text: str, out: Path) -> Path:
    """Write ``text`` to ``out`` atomically, creating its missing folders (as ``bench plot`` and
    ``bench run`` create theirs); when the write fails, the folders it created are removed."""
    out = Path(out)
    made = [folder for folder in out.parents if not folder.exists()]  # innermost first
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
    except OSError as exc:
        for folder in made:
            with contextlib.suppress(OSError):  # only an empty folder goes
                folder.rmdir()
        raise BenchError(f"cannot write {str(out)!r} ({exc.strerror or exc})") from exc
    return out
