"""``bench perf optimizers``: the table's paths and its byte counts, checked by hand."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench_cli import perf
from bench_cli.cli import app

# bytes per fp32 parameter: p read and written, g read, each state buffer read and written
# (4 x (3 + 2 S)); MARS reads g and g_prev once more for its per-tensor norm clip
HAND = {
    perf.TORCH_ADAMW: 28,
    "adamw": 28,
    "ademamix": 36,
    "aggmo": 36,  # three momentum buffers by default
    "aggmo-adam": 36,  # v and two nonzero-beta momenta (the beta = 0 one is g itself)
    "lion": 20,
    "mars": 44,  # m, v, g_prev (36) + the norm pass's second read of g and g_prev (8)
    "schedule-free": 28,
    "simplified-ademamix": 28,
}


def test_cpu_table_rows_and_bytes_per_parameter() -> None:
    """Matrices only (every tensor takes MARS's branch): each optimizer on its foreach and loop
    paths, torch's foreach AdamW as the yardstick, bytes per parameter as counted by hand."""
    ours = sorted(set(HAND) - {perf.TORCH_ADAMW})  # the project's seven optimizers and AggMo
    res = CliRunner().invoke(
        app, ["perf", "optimizers", "--device", "cpu", "--params", "8000", "--iters", "1",
              "--opt", ",".join(ours), "--format", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    table = json.loads(res.stdout)
    assert table["params"] == 8000 and table["copy_bandwidth_tb_s"] is None
    rows = {(r["optimizer"], r["path"]): r for r in table["rows"]}
    expected = {(perf.TORCH_ADAMW, "foreach")} | {
        (n, path) for n in ours for path in ("foreach", "loop")
    }
    assert set(rows) == expected
    for (name, _), row in rows.items():
        assert abs(row["bytes_per_param"] - HAND[name]) < 0.01, name  # + step counters
        assert row["ms_per_step"] > 0 and row["x_bound"] is None
    assert rows[(perf.TORCH_ADAMW, "foreach")]["x_torch_fused_adamw"] == 1.0


def test_an_optimizer_named_twice_is_timed_once_and_the_cpu_yardstick_is_named() -> None:
    res = CliRunner().invoke(
        app, ["perf", "optimizers", "--device", "cpu", "--params", "8000", "--iters", "1",
              "--opt", "lion,Lion,adamw,lion"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    table = [line.split("|")[1:3] for line in res.stdout.splitlines() if line.startswith("| ")]
    header, _rule, *rows = [[c.strip() for c in cells] for cells in table]
    assert rows == [
        [perf.TORCH_ADAMW, "foreach"], ["lion", "foreach"], ["lion", "loop"],
        ["adamw", "foreach"], ["adamw", "loop"],
    ]  # fmt: skip
    assert "x torch foreach AdamW" in res.stdout and "fused" not in res.stdout


def test_a_slow_rate_keeps_its_digits() -> None:
    row = perf.Row("lion", "loop", 1.0, 0.4321, 20.0, None, 1.0, 0.0)
    header = {"device": "cpu", "torch": "x", "params": 8000, "tensors": 1}
    line = perf.as_markdown({**header, "yardstick": "torch.optim.AdamW (foreach)"}, [row])
    assert "| 0.43 |" in line.splitlines()[-1]
    assert "| 1771 |" in perf.as_markdown(
        header, [perf.Row("a", "b", 1.0, 1771.2, 28.0, None, 1.0, 0.0)]
    )


def test_bad_parameter_count_is_one_line() -> None:
    res = CliRunner().invoke(app, ["perf", "optimizers", "--device", "cpu", "--params", "ten"])
    assert res.exit_code != 0
    assert "--params must be gpt2-small or a number" in res.output


def _one_line_error(res, *fragments: str) -> str:
    """Exit 1, no traceback, one line on stderr starting ``error:`` that holds ``fragments``."""
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error:"), line
    for fragment in fragments:
        assert fragment in line, line
    return line


def test_bad_device_is_bench_runs_one_line(tmp_path) -> None:
    res = CliRunner().invoke(app, ["perf", "optimizers", "--device", "tpu", "--params", "8000"])
    line = _one_line_error(res, "unknown device 'tpu'", "use auto, cpu, cuda")
    out = tmp_path / "out"
    run = CliRunner().invoke(app, ["run", "--opt", "adamw", "--task", "rosenbrock",
                                   "--device", "tpu", "--out", str(out), "--quiet"])  # fmt: skip
    assert run.exit_code == 1 and not out.exists()
    assert run.stderr.strip().endswith(line.removeprefix("error: "))  # the same words


@pytest.mark.parametrize("params", ["1e20", str(10**30), "1e400", "inf"])
def test_huge_parameter_counts_are_refused_before_allocating(params) -> None:
    res = CliRunner().invoke(app, ["perf", "optimizers", "--device", "cpu", "--params", params])
    _one_line_error(res, "--params must be at most 100,000,000,000", params[:6])


def test_parameters_that_cannot_fit_in_memory_are_refused(monkeypatch) -> None:
    """As ``bench run``'s "needs about N GiB": 1e7 parameters (0.2 GiB with their gradients
    and state) on a host with 0.1 GiB available."""
    monkeypatch.setattr("bench_cli.api.host_memory_gib", lambda: 0.1)
    res = CliRunner().invoke(app, ["perf", "optimizers", "--device", "cpu", "--params", "1e7",
                                   "--opt", "lion", "--iters", "1"])  # fmt: skip
    _one_line_error(res, "--params 1e7 needs about 0.2 GiB", "0.1 GiB available", "lower")
