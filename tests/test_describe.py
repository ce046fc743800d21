"""``bench show`` and ``bench list``: readable update rules, resolved defaults, references."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli import mathtext
from bench_cli.cli import app
from bench_cli.references import REFERENCES, Reference, our_result
from bench_cli.registry import OPTIMIZERS
from bench_cli.registry.recipes import recommended_hparams
from bench_cli.results.store import write_record
from bench_cli.tasks import TASKS
from tests.results import make_record

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.mark.parametrize(
    "tex, text",
    [
        (r"m \leftarrow \beta_1 m + (1-\beta_1) g", "m ← β₁ m + (1-β₁) g"),
        (r"v \leftarrow \beta_2 v + (1-\beta_2) g^2", "v ← β₂ v + (1-β₂) g²"),
        (r"\frac{\eta}{1-\beta_1^t}", "η/(1-β₁ᵗ)"),
        (r"\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t} + \epsilon}", "m/(√v/√(1-β₂ᵗ) + ε)"),
        (r"\sqrt{(1-a)(1-b)}", "√((1-a)(1-b))"),
        (r"c / \max(1, \|c\|_2)", "c / max(1, ‖c‖₂)"),
        (r"\beta_{3,t}", "β_(3,t)"),
        (r"p - \eta\,\operatorname{sign}(c)", "p - η sign(c)"),
        (r"h^{-1}(x) = 0.5^{1/(x+1)}", "h⁻¹(x) = 0.5^(1/(x+1))"),
    ],
)
def test_latex_becomes_unambiguous_unicode(tex: str, text: str) -> None:
    assert mathtext.latex_text(tex) == text


def test_math_block_rows_align_at_the_ampersand() -> None:
    doc = "Intro :math:`\\eta` = ``lr``.\n\n.. math::\n    p &\\leftarrow p \\\\\n    mm &= 2\n"
    text = mathtext.to_text(doc)
    assert text.splitlines()[0] == "Intro η = lr."
    rows = text.splitlines()[2:]
    assert rows == ["     p ← p", "    mm = 2"]


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_update_rule_reads_without_markup(name: str) -> None:
    text = mathtext.to_text(inspect.getdoc(OPTIMIZERS.get(name)) or "")
    for markup in (".. math::", ":math:", "\\frac", "\\beta", "\\leftarrow", "``", "\\eta"):
        assert markup not in text, (name, markup)
    html = mathtext.to_html(inspect.getdoc(OPTIMIZERS.get(name)) or "")
    assert "<math" in html and ".. math::" not in html and ":math:" not in html


def test_show_prints_the_rule_as_unicode() -> None:
    res = invoke("show", "adamw")
    assert res.exit_code == 0
    assert "m ← β₁ m + (1-β₁) g" in res.output and "\\leftarrow" not in res.output
    assert "lr = 0.001" in res.output  # the class default without --task


def test_show_with_task_prints_the_recipe_applied() -> None:
    task = TASKS.get("rosenbrock")
    # the expectation: the recipe of lion applied to the task's stated AdamW baseline
    expected = recommended_hparams("lion", task.BASELINE, {"lr", "betas", "weight_decay"})
    res = invoke("show", "lion", "--task", "rosenbrock")
    assert res.exit_code == 0, res.output
    assert f"lr = {expected['lr']!r}" in res.output
    assert f"betas = {list(expected['betas'])!r}" in res.output
    assert "defaults on rosenbrock" in res.output


def test_show_with_task_fills_horizons_from_the_run_length() -> None:
    steps = TASKS.get("rosenbrock")(TASKS.get("rosenbrock").Options()).default_settings()["steps"]
    res = invoke("show", "ademamix", "--task", "rosenbrock")
    assert f"beta3_warmup = {steps}" in res.output and "(class default None)" in res.output


def test_show_with_unknown_task_is_one_line_error() -> None:
    res = invoke("show", "adamw", "--task", "rosenbrok")
    assert res.exit_code == 1
    assert "rosenbrock" in res.output and len(res.output.strip().splitlines()) == 1


def test_published_reference_beside_our_adamw_result(tmp_path: Path) -> None:
    ref = Reference("lm", "adamw", "val_loss", 1.5, steps=100, source="paper", options={})
    records = [make_record("lm", "adamw", s, 4000.0, best=1.4 + 0.1 * s) for s in (0, 1, 2)]
    ours = our_result(ref, records)
    assert ours is not None and ours.median == pytest.approx(1.5) and ours.runs == 3
    assert "+0.0000 vs published" in ours.line(ref)
    shorter = Reference("lm", "adamw", "val_loss", 1.5, steps=5000, source="paper")
    assert our_result(shorter, records) is None  # a run of another length is not comparable
    tuning = make_record("lm", "adamw", 3, 4000.0, best=9.0).model_copy(update={"role": "tune"})
    probed = make_record("lm", "adamw", 4, 4000.0, best=9.0)
    probed = probed.model_copy(update={"task_options": {"probe_batch_step": 50}})
    again = our_result(ref, [*records, tuning, probed])  # neither is the published set-up
    assert again is not None and again.runs == 3 and again.median == pytest.approx(1.5)


def test_show_lm_medium_prints_nanogpt_reference(tmp_path: Path) -> None:
    if "lm-medium" not in TASKS:
        pytest.skip("lm-medium is not registered")
    [ref] = [r for r in REFERENCES if r.task == "lm-medium"]
    rec = make_record("lm-medium", "adamw", 0, 4000.0, best=1.4801)
    rec = rec.model_copy(
        update={"settings": {**rec.settings, "steps": ref.steps}, "task_options": ref.options}
    )
    write_record(rec, tmp_path)
    res = invoke("show", "adamw", "--task", "lm-medium", "--results", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "val_loss 1.4697" in res.output and "best val_loss 1.4801" in res.output
    assert "+0.0104 vs published" in res.output
    (tmp_path / "broken.json").write_text("{not json")
    res = invoke("show", "adamw", "--task", "lm-medium", "--results", str(tmp_path))
    assert res.exit_code == 0, res.output  # the readable record is still set beside the paper
    assert "+0.0104 vs published" in res.output and "broken.json" in res.stderr
    res = invoke("show", "lm-medium", "--results", str(tmp_path / "none"))
    assert res.exit_code == 1 and "--results" in res.output and "not a folder" in res.output


def test_show_without_results_folder_shows_the_published_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "lm-medium" not in TASKS:
        pytest.skip("lm-medium is not registered")
    monkeypatch.chdir(tmp_path)  # no ./results here: the default folder is optional
    res = invoke("show", "lm-medium")
    assert res.exit_code == 0, res.output
    assert "val_loss 1.4697" in res.output and "no adamw run of this set-up" in res.output


def test_list_names_every_optimizer_and_cites_no_missing_file() -> None:
    res = invoke("list")
    for name in OPTIMIZERS.names():
        assert name in res.output
    root = Path(__file__).resolve().parents[1]
    for doc in {w.strip(".,;:()") for w in res.output.split() if w.endswith((".md", ".md)"))}:
        assert (root / doc).exists() or (root / "docs" / doc).exists(), doc
