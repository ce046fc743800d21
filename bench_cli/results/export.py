"""The leaderboard's tables as CSV, Markdown, LaTeX (booktabs) or JSON text, and for the terminal.

CSV and JSON carry the numbers (full precision; ``inf`` is a censored bound, empty/null is
undefined); Markdown, LaTeX and the terminal show ``median [lo, hi]`` cells. LaTeX bolds a cell only
when its interval lies entirely on the better side of every other optimizer's interval.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from bench_cli.errors import BenchError
from bench_cli.results.leaderboard import Leaderboard
from bench_cli.results.store import atomic_write_text

FORMATS = ("csv", "md", "latex", "json")
TABLES = ("all", "tasks", "ranking")
NOTE = (
    "Medians over seeds of the best configuration, [95% bootstrap interval]; a median is shown "
    "only when more than half of the seeds reached the target. Speedup: geometric mean over "
    "paired seeds of baseline / optimizer {unit}-to-target, censored runs counted at their budget."
)
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


# ---- numbers as text ---------------------------------------------------------------------------


class Style:
    """How a renderer spells a missing value and infinity."""

    def __init__(self, na: str = "—", inf: str = "∞"):
        self.na, self.inf = na, inf


PLAIN = Style()
LATEX = Style(na="--", inf=r"$\infty$")


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


def fmt_interval(
    value: float, lo: float, hi: float, fmt: Callable[..., str], style: Style = PLAIN
) -> str:
    if _special(value, style) == style.na:
        return style.na
    return f"{fmt(value, style)} [{fmt(lo, style)}, {fmt(hi, style)}]"


def winner(value: Sequence[float], lo: Sequence[float], hi: Sequence[float], lower: bool) -> int:
    """Index of the best row when its interval excludes every other row's interval, else -1."""
    rows = [i for i, v in enumerate(value) if math.isfinite(v)]
    if len(value) < 2 or not rows:
        return -1
    best = (min if lower else max)(rows, key=lambda i: value[i])
    for j in range(len(value)):
        if j == best or math.isnan(lo[j]) or math.isnan(hi[j]):
            continue
        if (lower and not hi[best] < lo[j]) or (not lower and not lo[best] > hi[j]):
            return -1
    return best


# ---- display tables (terminal, Markdown, LaTeX) ------------------------------------------------


def _columns(task: pd.DataFrame, style: Style) -> dict[str, list[str]]:
    unit, metric = task["unit"].iloc[0], task["metric"].iloc[0] or "metric"

    def interval(col: str, fmt: Callable[..., str]) -> list[str]:
        rows = zip(task[col], task[f"{col}_lo"], task[f"{col}_hi"])
        return [fmt_interval(v, lo, hi, fmt, style) for v, lo, hi in rows]

    return {
        "optimizer": list(task["optimizer"]),
        "reached": [f"{r}/{n}" for r, n in zip(task["reached"], task["runs"])],
        f"{unit} to target": interval("tokens_to_target", fmt_count),
        "seconds to target": interval("seconds_to_target", fmt_seconds),
        "speedup": interval("speedup", fmt_ratio),
        "verdict": list(task["verdict"]),
        f"best {metric}": interval("best", fmt_metric),
        f"final {metric}": [fmt_metric(x, style) for x in task["final"]],
        f"{unit}/s": [fmt_count(x, style) for x in task["tokens_per_second"]],
        "state MB": [fmt_metric(x, style) for x in task["state_mb"]],
        "trials": [f"{t} ({c} cfg)" for t, c in zip(task["trials"], task["configs"])],
        f"compute ({unit}, s)": [
            f"{fmt_count(t, style)}, {fmt_seconds(s, style)}"
            for t, s in zip(task["compute_tokens"], task["compute_seconds"])
        ],
        "best config": list(task["swept"]),
        "diverged": [str(x) for x in task["diverged"]],
        "errors": [str(x) for x in task["errors"]],
    }


def display_task(task: pd.DataFrame, style: Style = PLAIN) -> pd.DataFrame:
    """One task's rows as text cells; the diverged, errors and best-config columns only when
    they say something."""
    df = pd.DataFrame(_columns(task, style))
    for col, source in (("diverged", "diverged"), ("errors", "errors"), ("best config", "swept")):
        if not task[source].astype(bool).any():
            df = df.drop(columns=col)
    return df


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


def tasks_of(lb: Leaderboard) -> list[tuple[str, pd.DataFrame]]:
    return [(str(name), group) for name, group in lb.tasks.groupby("task", sort=True)]


# ---- renderers ---------------------------------------------------------------------------------


def _md_table(df: pd.DataFrame) -> str:
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
            parts.append(f"### {name}\n\n{target_line(lb, name)}, baseline {lb.baseline}.\n")
            parts.append(_md_table(display_task(task)) + "\n")
        parts.append(NOTE.format(unit="tokens") + "\n")
    if table in ("all", "ranking"):
        parts.append("### Overall ranking\n\n" + _md_table(display_ranking(lb.ranking)) + "\n")
    return "\n".join(parts)


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in str(text))


def _tabular(header: list[str], rows: list[list[str]]) -> str:
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule"]
    lines.append(" & ".join(header) + r" \\")
    lines.append(r"\midrule")
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _latex_task(lb: Leaderboard, name: str, task: pd.DataFrame) -> str:
    cells = _columns(task, LATEX)
    unit, metric = task["unit"].iloc[0], task["metric"].iloc[0] or "metric"
    bold = {  # column -> (values, direction): bold the winner whose interval excludes the rest
        f"{unit} to target": ("tokens_to_target", True),
        "seconds to target": ("seconds_to_target", True),
        f"best {metric}": ("best", task["direction"].iloc[0] != "max"),
    }
    for col, (key, lower) in bold.items():
        i = winner(list(task[key]), list(task[f"{key}_lo"]), list(task[f"{key}_hi"]), lower)
        if i >= 0:
            cells[col][i] = r"\textbf{" + cells[col][i] + "}"
    keep = ["optimizer", "reached", f"{unit} to target", "seconds to target", "speedup"]
    keep += [f"best {metric}", "trials"]
    escaped = {"optimizer", "reached", "trials"}
    rows = [
        [latex_escape(cells[c][i]) if c in escaped else cells[c][i] for c in keep]
        for i in range(len(task))
    ]
    header = [latex_escape(c[:1].upper() + c[1:]) for c in keep]
    comment = f"% {name}: {target_line(lb, name)}, baseline {lb.baseline}"
    return comment.replace("\n", " ") + "\n" + _tabular(header, rows)


def to_latex(lb: Leaderboard, table: str = "all") -> str:
    parts = ["% requires \\usepackage{booktabs}; " + NOTE.format(unit="tokens")]
    if table in ("all", "tasks"):
        parts += [_latex_task(lb, name, task) for name, task in tasks_of(lb)]
    if table in ("all", "ranking"):
        shown = display_ranking(lb.ranking, LATEX)
        rows = [[latex_escape(x) for x in row] for row in shown.itertuples(index=False)]
        parts.append("% overall ranking\n" + _tabular([c.capitalize() for c in shown], rows))
    return "\n\n".join(parts) + "\n"


def _jsonable(x: object) -> object:
    if isinstance(x, float):
        return (
            None if math.isnan(x) else ("inf" if x == math.inf else "-inf") if math.isinf(x) else x
        )
    if hasattr(x, "item"):  # numpy scalars
        return _jsonable(x.item())
    return x


def to_json(lb: Leaderboard, table: str = "all") -> str:
    """NaN (undefined) becomes null and an infinite bound the string "inf"."""

    def rows(df: pd.DataFrame) -> list[dict]:
        return [{k: _jsonable(v) for k, v in row.items()} for row in df.to_dict("records")]

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


RENDERERS = {"csv": to_csv, "md": to_markdown, "latex": to_latex, "json": to_json}


def render(lb: Leaderboard, fmt: str, table: str = "all") -> str:
    if fmt not in RENDERERS:
        raise BenchError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if table not in TABLES:
        raise BenchError(f"unknown table {table!r}; choose one of {', '.join(TABLES)}")
    return RENDERERS[fmt](lb, table)


def write(text: str, out: Path) -> Path:
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text)
    except OSError as exc:
        raise BenchError(f"cannot write {str(out)!r} ({exc.strerror or exc})") from exc
    return out
