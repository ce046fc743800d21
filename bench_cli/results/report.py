"""``bench report``: one self-contained HTML page of a folder of records, to open or send.

The page holds the leaderboard (per task and overall; ``bench probe``'s tables where runs
carry a forgetting probe), the figures as inline SVG (loss against
tokens and against time, per-step training loss, the forgetting probe, performance profiles),
each optimizer's update rule as MathML, published references beside our runs, the resolved
suite and the environment. It loads nothing from anywhere: no scripts, fonts or images from the
network (a Content-Security-Policy forbids them), so it opens offline and in a mail attachment.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import jinja2
import pandas as pd

from bench_cli.errors import BenchError
from bench_cli.mathtext import to_html
from bench_cli.references import reference_lines
from bench_cli.results import export, leaderboard, plots, probe, stats
from bench_cli.results.defaults import WIDE
from bench_cli.results.record import RunRecord
from bench_cli.results.store import check_results_folder, load_records, nothing_scored


def _html(cells: pd.DataFrame) -> str:
    """A table of text cells, as the leaderboard prints them, in HTML."""
    return cells.to_html(index=False, classes="data", border=0, escape=True)


def _svg_inline(svg: str, prefix: str) -> str:
    """An SVG file as an inline element: no XML prolog, element ids made unique per figure."""
    svg = re.sub(r"^.*?(?=<svg)", "", svg, flags=re.S)
    svg = re.sub(r'id="([^"]+)"', rf'id="{prefix}-\1"', svg)
    svg = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}-\1)", svg)
    return re.sub(r'href="#([^"]+)"', rf'href="#{prefix}-\1"', svg)


FIGURE_SECTIONS = (
    ("Loss against tokens", "__vs_tokens"),
    ("Loss against training time", "__vs_seconds"),
    ("Training loss at every logged step", "__train_loss"),
    ("Forgetting probe", "__probe"),
    ("Performance profile", "performance_profile"),
)


def figures(records: Sequence[RunRecord], baseline: str) -> list[tuple[str, list]]:
    """Every figure of ``bench plot`` as inline SVG, grouped into the report's sections."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = plots.plot_all(records, Path(tmp), plots.PlotOptions(fmt="svg", baseline=baseline))
        drawn = [(p.stem, _svg_inline(p.read_text(), f"fig{i}")) for i, p in enumerate(paths)]
    sections = []
    for title, marker in FIGURE_SECTIONS:
        chosen = [(stem.split("__")[0], svg) for stem, svg in drawn if stem.endswith(marker)]
        if chosen:
            sections.append((title, chosen))
    return sections


def probe_tables(records: Sequence[RunRecord], baseline: str) -> tuple[list[tuple[str, str]], str]:
    """``bench probe``'s tables, one per task with a forgetting probe, and the legend; where
    runs carry a probe but ``bench probe`` refuses them, no table and its reason instead."""
    if not any(probe.has_probe(r) for r in records):
        return [], ""
    try:
        df = probe.table(records, baseline)
    except BenchError as exc:  # e.g. probe runs in tuning only: the page says why
        return [], f"No probe table: {exc}."
    tables = [
        (t, table.to_html(index=False, classes="data", border=0)) for t, table in probe.pivots(df)
    ]
    return tables, probe.legend(baseline)


def _environment(directory: Path, records: Sequence[RunRecord]) -> str:
    """The suite's environment.json, else the environments the records carry; a file that cannot
    be read is one line naming it and the fix."""
    from bench_cli.folder import ENVIRONMENT, Folder

    if (Path(directory) / ENVIRONMENT).is_file():
        fix = "restore it, or remove it to show the environment each record carries"
        return json.dumps(Folder(directory).read_json(ENVIRONMENT, fix), indent=2)
    envs = {r.env.model_dump_json(indent=2) for r in records}
    return "\n".join(sorted(envs))


def build_report(
    records: Sequence[RunRecord],
    baseline: str,
    docstrings: Mapping[str, str],
    directory: Path,
) -> str:
    """The page's HTML for ``records`` (read from ``directory``, whose suite files it shows)."""
    environment = _environment(directory, records)  # a damaged file fails before any work
    lb = leaderboard.build(records, baseline)
    # the leaderboard's own cells (censored medians as >x, coverage beside each interval)
    task_tables = [
        (name, _html(export.display_task(task, columns=WIDE))) for name, task in export.tasks_of(lb)
    ]
    optimizers = sorted({r.optimizer for r in records})
    rules = [(o, to_html(docstrings[o])) for o in optimizers if docstrings.get(o)]
    references = [
        line for t in sorted({r.task for r in records}) for line in reference_lines(t, records)
    ]
    suite_file = directory / "suite.resolved.yaml"
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files(__package__).joinpath("report.html").read_text())
    return template.render(
        title=f"bench report: {directory.name or directory}",
        summary=(
            f"{len(records)} runs of {len(optimizers)} optimizers on "
            f"{len({r.task_key for r in records})} task variants; baseline {baseline}; "
            f"written {datetime.now(timezone.utc).isoformat(timespec='seconds')}."
        ),
        note=f"Each optimizer at its best configuration. {export.legend(lb)}",
        task_tables=task_tables,
        ranking=_html(export.display_ranking(lb.ranking)),
        figure_sections=figures(records, baseline),
        probe=probe_tables(records, baseline),
        rules=rules,
        references=references,
        suite=suite_file.read_text(errors="replace") if suite_file.is_file() else None,
        directory=str(directory),
        environment=environment,
    )


def write_report(directory: Path, out: Path, baseline: str, docstrings: Mapping[str, str]) -> Path:
    """Read the records under ``directory`` and write the report to ``out`` (atomically)."""
    directory, out = check_results_folder(directory), Path(out)
    records = load_records(directory)
    if not records:
        raise BenchError(f"no run records in {str(directory)!r}")
    if baseline not in {r.optimizer for r in records}:
        names = ", ".join(sorted({r.optimizer for r in records}))
        raise BenchError(
            f"baseline {baseline!r} has no runs here (optimizers: {names}); choose one with "
            "--baseline"
        )
    if not stats.scored(records):  # as leaderboard and plot: no page of empty tables
        raise nothing_scored(directory, records)
    html = build_report(records, baseline, docstrings, directory)
    # missing folders are created, a folder or a read-only place is one line: as for export
    return export.write(html, out)
