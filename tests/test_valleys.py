"""The synthetic valleys: exact gradients, known optima, calibrated noise, speed, and targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench_cli import api
from bench_cli.cli import app
from bench_cli.tasks import TASKS

VALLEYS = ["rosenbrock-nd", "noisy-quadratic", "river-valley"]


def make(name: str, **options):
    cls = TASKS.get(name)
    task = cls(cls.Options(**options))
    task.prepare(torch.device("cpu"))
    return task


def grad_of(task, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    task.value(x).backward()
    return x.grad


@pytest.mark.parametrize("name", VALLEYS)
def test_gradient_matches_central_differences_in_float64(name: str) -> None:
    task = make(name, preset="tiny")
    gen = torch.Generator().manual_seed(0)
    h = 1e-6
    for _ in range(3):
        x = task.optimum() + torch.randn(task.start().shape, generator=gen, dtype=torch.float64)
        numeric = torch.empty_like(x).view(-1)
        for i in range(x.numel()):
            e = torch.zeros_like(x).view(-1)
            e[i] = h
            e = e.view_as(x)
            numeric[i] = (task.value(x + e) - task.value(x - e)) / (2 * h)
        analytic = grad_of(task, x)
        torch.testing.assert_close(analytic, numeric.view_as(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", VALLEYS)
def test_optimum_has_zero_gradient_and_zero_gap(name: str) -> None:
    task = make(name)
    x_star = task.optimum()
    assert float(task.value(x_star)) == 0.0
    assert torch.count_nonzero(grad_of(task, x_star)) == 0
    model = task.build_model()
    with torch.no_grad():
        model.x.copy_(x_star)
    metrics = task.evaluate(model)
    assert metrics["gap"] == 0.0 and metrics["distance"] == 0.0
    assert task.evaluate(task.build_model())["gap"] > 0.0  # the start is not the optimum


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("rosenbrock-nd", dict(noise=0.5)),
        ("noisy-quadratic", dict(batch_size=4)),
        ("river-valley", dict(noise=3.0)),
    ],
)
def test_noise_adds_to_the_gradient_with_the_stated_scale(name: str, options: dict) -> None:
    task = make(name, preset="tiny", **options)
    draws = torch.stack([n for n, _ in zip(task.batches(seed=7), range(4000))])
    o = task.options
    if name == "rosenbrock-nd":
        expected = torch.full(task.start().shape, o.noise, dtype=torch.float64)
        got = draws.std(dim=0)
    elif name == "noisy-quadratic":
        expected = (task.h / o.batch_size).sqrt()  # variance h_i / B
        got = draws.std(dim=0)
    else:
        along, across = draws @ task.t, draws @ task.n
        assert along.abs().max() < 1e-12  # the river itself is noise-free
        expected = torch.full((o.rivers,), o.noise, dtype=torch.float64)
        got = across.std(dim=0)
    torch.testing.assert_close(got, expected, rtol=0.1, atol=0.0)
    assert draws.mean(dim=0).abs().max() < 5 * expected.max() / 4000**0.5

    # the loss's gradient is exactly grad f + n
    model = task.build_model()
    noise = next(iter(task.batches(seed=3)))
    task.loss(model, noise).backward()
    torch.testing.assert_close(model.x.grad, grad_of(task, task.start()) + noise)


@pytest.mark.parametrize("name", VALLEYS)
def test_noise_is_deterministic_for_a_seed(name: str) -> None:
    task = make(name, preset="tiny", noise=1.0)

    def first(seed: int) -> list[torch.Tensor]:
        return [n for n, _ in zip(task.batches(seed), range(5))]

    a, b, c = first(0), first(0), first(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not any(torch.equal(x, y) for x, y in zip(a, c))


def test_without_noise_every_batch_is_the_exact_gradient() -> None:
    task = make("rosenbrock-nd")
    assert [b for b, _ in zip(task.batches(0), range(3))] == [None, None, None]


@pytest.mark.parametrize("name", VALLEYS)
def test_adamw_reaches_the_default_target_in_the_default_budget_quickly(
    name: str, tmp_path: Path
) -> None:
    (rec,) = api.run(api.RunRequest(task=name, optimizers=["adamw"], device="cpu"), tmp_path)
    assert rec.status == "done" and rec.unit == "steps"
    assert rec.steps_done == TASKS.get(name).SETTINGS["default"]["steps"]
    assert rec.steps_to_target is not None, rec.best_metrics
    assert rec.steps_to_target < 0.9 * rec.steps_done  # a margin, not a photo finish


@pytest.mark.parametrize("name", VALLEYS)
def test_tiny_preset_runs_through_the_cli(name: str, tmp_path: Path) -> None:
    args = ["run", "--opt", "adamw", "--task", name, "--set", "preset=tiny"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.glob("*.json")
    rec = json.loads(path.read_text())
    assert rec["status"] == "done" and rec["unit"] == "steps" and rec["steps_done"] == 100
    assert rec["target"]["metric"] == "gap" and rec["steps_to_target"] is not None
    assert rec["final_metrics"]["gap"] < rec["curve"][0]["metrics"]["gap"]
    assert rec["param_groups"][0]["weight_decay"] == 0.0


def test_show_states_formula_defaults_target_and_unit() -> None:
    res = CliRunner().invoke(app, ["show", "river-valley"])
    assert res.exit_code == 0
    assert "unit: steps" in res.output and "gap <= 1" in res.output and "kappa" in res.output


@pytest.mark.parametrize(
    ("name", "options", "independent"),
    [
        ("rosenbrock", {}, True),
        ("rosenbrock-nd", {}, True),
        ("rosenbrock-nd", {"noise": 0.1}, False),
        ("noisy-quadratic", {}, False),
        ("noisy-quadratic", {"noise": 0.0}, True),
        ("river-valley", {}, False),
        ("lm-markov", {"preset": "tiny"}, False),
    ],
)
def test_seed_independence_is_stated_where_nothing_depends_on_the_seed(
    name: str, options: dict, independent: bool
) -> None:
    cls = TASKS.get(name)
    task = cls(cls.Options(**options))
    assert task.seed_independent is independent
    if independent:  # the stream of every seed is the same
        task.prepare(torch.device("cpu"))
        a, b = next(iter(task.batches(0))), next(iter(task.batches(1)))
        assert a is None and b is None


def test_a_task_resumes_its_stream_at_any_step() -> None:
    cls = TASKS.get("noisy-quadratic")
    task = cls(cls.Options(preset="tiny"))
    task.prepare(torch.device("cpu"))
    whole = [b for b, _ in zip(task.batches(4), range(7))]
    resumed = [b for b, _ in zip(task.batches_from(4, 5), range(2))]
    assert all(torch.equal(x, y) for x, y in zip(whole[5:], resumed))
