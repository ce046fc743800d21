"""The defaults and choices the analysis commands name in their ``--help``.

They live here, apart from the modules that use them (``leaderboard``, ``export``, ``probe``,
``check``), because typer builds every command's help when the command line is imported, and
those modules import pandas (0.2-1 s): every ``bench`` command, ``bench run`` too, would wait
for it before it starts.
"""

#: the optimizer that speedups are measured against, unless ``--baseline`` names another
DEFAULT_BASELINE = "adamw"
#: the per-task display columns: the compact default, then the rest (``--wide``)
COMPACT = ("optimizer", "reached", "tokens", "speedup", "best")
WIDE = (
    *COMPACT, "seconds", "final", "throughput", "state", "grad_evals", "trials", "compute",
    "config", "flags", "diverged", "errors",
)  # fmt: skip
#: the forgetting probe's steps after the probe batch
DEFAULT_AFTER = (100, 200, 500, 1000)
#: ``bench check``'s allowed slack beyond the baseline's interval
DEFAULT_TOLERANCE = 0.05
