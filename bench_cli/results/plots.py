"""Loss curves and performance profiles, sized for one column of a paper (no torch, no pyplot).

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), so
plotting never switches the global backend or keeps figures alive in pyplot's registry. The file
format follows the suffix: ``png``, ``svg`` or ``pdf``.
"""

from __future__ import annotations

import math
import os
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter

from bench_cli.errors import BenchError
from bench_cli.results import leaderboard, stats
from bench_cli.results.record import RunRecord, Target
from bench_cli.results.store import safe_filename

PLOT_FORMATS = ("png", "svg", "pdf")
COLUMN_WIDTH = (3.4, 2.4)  # inches: one column of a two-column paper
STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "lines.linewidth": 1.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.4,
    "pdf.fonttype": 42,  # TrueType in PDFs: editable text, accepted by publishers
    "svg.fonttype": "none",
}
# Okabe-Ito, readable by colour-blind readers; the baseline is always black
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#999933"]
BUILTIN_ORDER = (
    "ademamix",
    "simplified-ademamix",
    "lion",
    "schedule-free",
    "mars",
    "aggmo-adam",
    "aggmo",
)
MAX_POINTS = 400  # per median line: enough for a column-wide figure


@dataclass(frozen=True)
class PlotOptions:
    fmt: str = "png"
    baseline: str = leaderboard.DEFAULT_BASELINE
    logx: bool = False
    targets: Mapping[str, Target] | None = None  # overrides, e.g. a calibrated target
    tau_max: float = stats.TAU_MAX


def colors(optimizers: Sequence[str], baseline: str) -> dict[str, str]:
    """A colour per optimizer: the baseline black, the built-ins always the same colour (so
    figures from different record sets match), others the next free colours in name order."""
    out = {baseline: "#000000"}
    free = list(PALETTE[len(BUILTIN_ORDER) :])
    free += [to_hex(matplotlib.colormaps["tab10"](i)) for i in range(10)]
    for name in sorted(set(optimizers) - {baseline}):
        if name in BUILTIN_ORDER:
            out[name] = PALETTE[BUILTIN_ORDER.index(name)]
        else:
            out[name] = free.pop(0) if free else "#777777"
    return out


def _series(runs: Sequence[stats.Outcome], metric: str, x_key: str) -> list[tuple]:
    """(x, y, diverged) per run, finite points only, x increasing."""
    out = []
    for o in runs:
        pts = [
            (getattr(p, x_key), p.metrics[metric])
            for p in o.record.curve
            if metric in p.metrics and math.isfinite(p.metrics[metric])
        ]
        if pts:
            x, y = (np.asarray(v, dtype=float) for v in zip(*sorted(pts)))
            out.append((x, y, o.record.status == "diverged"))
    return out


def aggregate(series: Sequence[tuple]) -> tuple[np.ndarray, ...]:
    """Median and min-max band over seeds on a shared x grid.

    Each seed is interpolated only inside its own range; past a diverged seed's last finite
    point the statistics use the seeds still running (the divergence is marked on the plot).
    """
    grid = np.unique(np.concatenate([s[0] for s in series]))
    if grid.size > MAX_POINTS:
        grid = np.linspace(grid[0], grid[-1], MAX_POINTS)
    ys = np.full((len(series), grid.size), np.nan)
    for k, (x, y, _) in enumerate(series):
        inside = (grid >= x[0]) & (grid <= x[-1])
        ys[k, inside] = np.interp(grid[inside], x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-nan columns stay nan
        return grid, np.nanmedian(ys, axis=0), np.nanmin(ys, axis=0), np.nanmax(ys, axis=0)


def _save(fig: Figure, path: Path) -> Path:
    """Write atomically: a reader sees the old picture or the whole new one."""
    FigureCanvasAgg(fig)
    fmt = path.suffix.lstrip(".")
    # a plain new file (not mkstemp's, which is private to the owner) so the umask applies
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        metadata = {"CreationDate": None} if fmt == "pdf" else None  # reproducible files
        fig.savefig(tmp, format=fmt, dpi=300, metadata=metadata)  # margins: constrained layout
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _scale_y(ax, y: np.ndarray, target: Target | None) -> None:
    """Log scale for values over decades; else zoom on the approach to the target, so the
    crossings stay readable instead of being squashed under the first evaluation's loss."""
    y = y[np.isfinite(y)]
    if not y.size:
        return
    if y.min() > 0 and y.max() / y.min() > 50:
        ax.set_yscale("log")
        return
    if target is None:
        return
    lowest, highest = float(y.min()), float(y.max())
    if target.direction == "min" and lowest < target.value:
        top = min(highest, lowest + 5 * (target.value - lowest))
        ax.set_ylim(lowest - 0.05 * (top - lowest), top)
    elif target.direction == "max" and highest > target.value:
        bottom = max(lowest, highest - 5 * (highest - target.value))
        ax.set_ylim(bottom, highest + 0.05 * (highest - bottom))


def _legend(fig: Figure, ax, title: str) -> None:
    """Above the axes, so that no curve hides behind it; two columns when labels are long."""
    labels = ax.get_legend_handles_labels()[1]
    ncols = 3 if max(map(len, labels), default=0) <= 13 else 2
    fig.legend(
        loc="outside upper center",
        ncols=ncols,
        frameon=False,
        title=title,
        columnspacing=1.2,
        handlelength=1.6,
    )


def time_unit(seconds: float) -> tuple[float, str]:
    """A divisor and its name so that a time axis reads in whole seconds, minutes or hours."""
    if seconds >= 2 * 3600:
        return 3600.0, "hours"
    if seconds >= 120:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _in_time_unit(by_opt: dict) -> tuple[dict, str]:
    """The series with x in the unit that suits the longest run, and the axis label."""
    longest = max((float(x[-1]) for series in by_opt.values() for x, _, _ in series), default=0)
    div, name = time_unit(longest)
    scaled = {o: [(x / div, y, d) for x, y, d in series] for o, series in by_opt.items()}
    return scaled, f"training time ({name})"


@dataclass(frozen=True)
class Panel:
    """What one curve figure shows: its title, axes, target line and marks."""

    title: str
    xlabel: str
    ylabel: str
    target: Target | None = None
    time_axis: bool = False
    #: vertical lines (x, label), e.g. where the probe batch was trained on
    marks: tuple[tuple[float, str], ...] = ()


def _curve_figure(panel: Panel, by_opt: dict, opt: PlotOptions, palette: dict) -> Figure:
    fig = Figure(figsize=COLUMN_WIDTH, layout="constrained")
    ax = fig.add_subplot()
    all_y = []
    xlabel = panel.xlabel
    if panel.time_axis:  # plain numbers in a named unit: EngFormatter would read 5 ms as "5m"
        by_opt, xlabel = _in_time_unit(by_opt)
    for name, series in by_opt.items():
        grid, med, lo, hi = aggregate(series)
        keep = grid > 0 if opt.logx else np.ones_like(grid, dtype=bool)
        ax.fill_between(grid[keep], lo[keep], hi[keep], color=palette[name], alpha=0.2, lw=0)
        ax.plot(grid[keep], med[keep], color=palette[name], label=name)
        for x, y, diverged in series:
            if diverged:  # where a seed stopped: the statistics after it use fewer seeds
                ax.plot(x[-1], y[-1], marker="x", ms=4, color=palette[name], mew=1.0)
        all_y.append(np.concatenate([lo[keep], hi[keep]]))
    if panel.target is not None:
        ax.axhline(panel.target.value, color="0.35", ls="--", lw=0.8, label="target")
    for x, label in panel.marks:
        ax.axvline(x, color="0.35", ls=":", lw=0.8, label=label)
    _scale_y(ax, np.concatenate(all_y), panel.target)
    if opt.logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    if not panel.time_axis:
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylabel(panel.ylabel)
    _legend(fig, ax, panel.title)
    return fig


def _best_runs(records: Sequence[RunRecord], opt: PlotOptions):
    """Per task, each optimizer's scoring runs of its kept configuration, and the targets."""
    choices, targets = stats.kept_choices(records, opt.targets)
    by_task: dict[str, dict[str, list[stats.Outcome]]] = {}
    for (task, name), choice in sorted(choices.items()):
        by_task.setdefault(task, {})[name] = choice.runs
    return by_task, targets


def _path(out_dir: Path, stem: str, opt: PlotOptions) -> Path:
    return Path(out_dir) / f"{safe_filename(stem)}.{opt.fmt}"  # a task id never leaves out_dir


def plot_curves(records: Sequence[RunRecord], out_dir: Path, opt: PlotOptions) -> list[Path]:
    """Per task, the target metric against tokens and against training time."""
    by_task, targets = _best_runs(records, opt)
    units = {r.task_key: r.unit for r in records}
    palette = colors([r.optimizer for r in records], opt.baseline)
    paths = []
    for task, runs in by_task.items():
        target = targets.get(task)
        metric = target.metric if target else "val_loss"
        for x_key in ("tokens", "seconds"):
            by_opt = {o: s for o, r in runs.items() if (s := _series(r, metric, x_key))}
            if not by_opt:
                continue
            panel = Panel(
                title=task,
                xlabel=units.get(task, "tokens") if x_key == "tokens" else "seconds",
                ylabel=metric,
                target=target,
                time_axis=x_key == "seconds",
            )
            fig = _curve_figure(panel, by_opt, opt, palette)
            paths.append(_save(fig, _path(out_dir, f"{task}__vs_{x_key}", opt)))
    return paths


def _units_per_step(record: RunRecord) -> float:
    return record.tokens_done / record.steps_done if record.steps_done else 0.0


def _train_series(runs: Sequence[stats.Outcome]) -> list[tuple]:
    """(tokens, training loss, diverged) per run that kept its per-step curve."""
    out = []
    for o in runs:
        per_step = _units_per_step(o.record)
        pts = [
            (p.step * per_step, p.loss) for p in o.record.train_curve or [] if math.isfinite(p.loss)
        ]
        if pts:
            x, y = (np.asarray(v, dtype=float) for v in zip(*sorted(pts)))
            out.append((x, y, o.record.status == "diverged"))
    return out


def plot_train_curves(records: Sequence[RunRecord], out_dir: Path, opt: PlotOptions) -> list[Path]:
    """Per task, the training loss at every logged step against tokens (records that kept it)."""
    by_task, _ = _best_runs(records, opt)
    units = {r.task_key: r.unit for r in records}
    palette = colors([r.optimizer for r in records], opt.baseline)
    paths = []
    for task, runs in by_task.items():
        by_opt = {o: s for o, r in runs.items() if (s := _train_series(r))}
        if by_opt:
            panel = Panel(f"{task}: training loss", units.get(task, "tokens"), "train loss")
            fig = _curve_figure(panel, by_opt, opt, palette)
            paths.append(_save(fig, _path(out_dir, f"{task}__train_loss", opt)))
    return paths


def plot_probe(records: Sequence[RunRecord], out_dir: Path, opt: PlotOptions) -> list[Path]:
    """The forgetting probe: the held-out batch's loss against tokens, with the step it was
    trained on marked (records of runs with ``probe_batch_step``)."""
    by_task, _ = _best_runs(records, opt)
    units = {r.task_key: r.unit for r in records}
    palette = colors([r.optimizer for r in records], opt.baseline)
    paths = []
    for task, runs in by_task.items():
        by_opt = {o: s for o, r in runs.items() if (s := _series(r, "probe_loss", "tokens"))}
        if not by_opt:
            continue
        first = next(o.record for r in runs.values() for o in r)
        step = first.task_options.get("probe_batch_step")
        marks = ((step * _units_per_step(first), "probe batch"),) if step is not None else ()
        title, xlabel = f"{task}: forgetting probe", units.get(task, "tokens")
        fig = _curve_figure(Panel(title, xlabel, "probe loss", marks=marks), by_opt, opt, palette)
        paths.append(_save(fig, _path(out_dir, f"{task}__probe", opt)))
    return paths


def plot_profile(records: Sequence[RunRecord], out_dir: Path, opt: PlotOptions) -> Path:
    """The performance profile rho(tau) of every optimizer, with its score in the legend."""
    ratios = leaderboard.build(records, opt.baseline, opt.targets).ratios
    taus = np.linspace(1.0, opt.tau_max, 600)
    palette = colors(list(ratios), opt.baseline)
    fig = Figure(figsize=COLUMN_WIDTH, layout="constrained")
    ax = fig.add_subplot()
    ranked = sorted(ratios, key=lambda o: (-stats.profile_score(ratios[o], opt.tau_max), o))
    for name in ranked:
        rho = stats.profile_curve(ratios[name], taus)
        score = stats.profile_score(ratios[name], opt.tau_max)
        ax.plot(
            taus, rho, drawstyle="steps-post", color=palette[name], label=f"{name} ({score:.2f})"
        )
    ax.set_xlim(1.0, opt.tau_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(r"$\tau$ (tokens-to-target / fastest)")
    ax.set_ylabel("fraction of tasks")
    _legend(fig, ax, "performance profile (score)")
    return _save(fig, Path(out_dir) / f"performance_profile.{opt.fmt}")


def plot_all(records: Sequence[RunRecord], out_dir: Path, opt: PlotOptions) -> list[Path]:
    """Every figure of a record set; returns the paths written."""
    if opt.fmt not in PLOT_FORMATS:
        raise BenchError(
            f"unknown plot format {opt.fmt!r}; choose one of {', '.join(PLOT_FORMATS)}"
        )
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context(STYLE):
            return [
                *plot_curves(records, out_dir, opt),
                *plot_train_curves(records, out_dir, opt),
                *plot_probe(records, out_dir, opt),
                plot_profile(records, out_dir, opt),
            ]
    except OSError as exc:
        raise BenchError(
            f"cannot write figures to {str(out_dir)!r} ({exc.strerror or exc})"
        ) from exc
