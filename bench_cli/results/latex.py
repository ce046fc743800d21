"""The leaderboard's tables in LaTeX: booktabs tables in captioned, labelled floats to ``\\input``.

LaTeX bolds a cell only when every row has an interval at a true coverage of at least ``1 - alpha``
(95% at the leaderboard's 5%) and the winner's lies entirely on the better side of every other's.
The coverage floor is the leaderboard's own: ``[min, max]`` of ``n`` seeds covers the median with
probability ``1 - 2 * 2**-n``, which reaches ``1 - alpha`` exactly when ``n`` is at least
``inference.min_pairs(alpha)``, the fewest seeds that can carry a verdict. So a row whose verdict
says "too few seeds" never has a bold cell beside it (two seeds give a 50% interval: those of
two identical optimizers are disjoint one time in three).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from bench_cli.results.export import LATEX, cell_columns, display_ranking, legend, tasks_of, title
from bench_cli.results.leaderboard import Leaderboard

_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def winner(value: Sequence[float], lo: Sequence[float], hi: Sequence[float], lower: bool) -> int:
    """Index of the best row when its interval excludes every other row's interval, else -1."""
    rows = [i for i, v in enumerate(value) if math.isfinite(v)]
    if len(value) < 2 or not rows or any(math.isnan(x) for x in (*lo, *hi)):
        return -1
    best = (min if lower else max)(rows, key=lambda i: value[i])
    for j in range(len(value)):
        if j == best or math.isnan(lo[j]) or math.isnan(hi[j]):
            continue
        if (lower and not hi[best] < lo[j]) or (not lower and not lo[best] > hi[j]):
            return -1
    return best


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
    cols = cell_columns(task, LATEX)
    cells = {c: list(cells) for c, (_, cells) in cols.items()}
    bold = {  # column id -> (values, lower is better): bold a winner whose interval excludes all
        "tokens": ("tokens_to_target", True),
        "seconds": ("seconds_to_target", True),
        "best": ("best", task["direction"].iloc[0] != "max"),
    }
    floor = 1 - lb.alpha - 1e-12  # the coverage a bold cell needs (see the module docstring)
    for col, (key, lower) in bold.items():
        level = task[f"{key}_level"]
        # no interval, or one too weak to decide with (fewer seeds than a verdict needs): no winner
        none = level.isna() | (level < floor) | task["seed_independent"]
        lo, hi = task[f"{key}_lo"].mask(none), task[f"{key}_hi"].mask(none)
        i = winner(list(task[key]), list(lo), list(hi), lower)
        if i >= 0:
            cells[col][i] = r"\textbf{" + cells[col][i] + "}"
    keep = ["optimizer", "reached", "tokens", "seconds", "speedup", "best", "trials"]
    escaped = {"optimizer", "reached", "trials"}  # the others are LaTeX already
    rows = [
        [latex_escape(cells[c][i]) if c in escaped else cells[c][i] for c in keep]
        for i in range(len(task))
    ]
    header = [latex_escape(cols[c][0][:1].upper() + cols[c][0][1:]) for c in keep]
    return _float(title(lb, name), name, _tabular(header, rows))


def _latex_text(text: str) -> str:
    """Prose in LaTeX: escaped, and <, >, <=, >= as math (text fonts print < as an inverted !)."""
    out = latex_escape(text)
    for plain, math_ in (("<=", r"$\le$"), (">=", r"$\ge$"), ("<", "$<$"), (">", "$>$")):
        out = out.replace(plain, math_)
    return out


def _float(caption: str, name: str, tabular: str) -> str:
    """A table float to ``\\input``: centred, captioned, with a label from ``name``
    (``tab:bench-lm-small-preset-tiny``) to refer to it by."""
    label = "tab:bench-" + (re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-") or "task")
    return "\n".join([
        f"% {caption}".replace("\n", " "), r"\begin{table}[t]", r"\centering",
        rf"\caption{{{_latex_text(caption)}}}", rf"\label{{{label}}}", tabular, r"\end{table}",
    ])  # fmt: skip


def to_latex(lb: Leaderboard, table: str = "all") -> str:
    parts = ["% requires \\usepackage{booktabs}; " + legend(lb, LATEX)]
    if table in ("all", "tasks"):
        parts += [_latex_task(lb, name, task) for name, task in tasks_of(lb)]
    if table in ("all", "ranking"):
        shown = display_ranking(lb.ranking, LATEX)
        rows = [[latex_escape(x) for x in row] for row in shown.itertuples(index=False)]
        tabular = _tabular([c.capitalize() for c in shown], rows)
        parts.append(_float("Overall ranking", "overall ranking", tabular))
    return "\n\n".join(parts) + "\n"
