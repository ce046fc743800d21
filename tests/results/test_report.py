"""``bench report``: one self-contained HTML page, checked as text and in headless Chromium."""

from __future__ import annotations

import json
import re
import warnings
from html import escape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli.cli import app
from bench_cli.describe import docstrings
from bench_cli.results import export
from bench_cli.results.defaults import WIDE
from bench_cli.results.record import EvalPoint, TrainPoint
from bench_cli.results.report import build_report
from tests.results import make_record, suite, write_all

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SUITE_TEXT = "name: report-test\nseeds: [0, 1, 2]\n"


def rich_records() -> list:
    """Two tasks, three optimizers, three seeds; the 'lm' runs kept per-step training losses
    and a forgetting probe; the optimizers are named like built-ins so their rules render."""
    names = {"fast": "lion", "slow": "ademamix", "adamw": "adamw"}
    out = []
    for r in suite():
        update = {
            "optimizer": names[r.optimizer],
            "run_id": r.run_id.replace(r.optimizer, names[r.optimizer]),
        }
        if r.task == "lm":
            update["train_curve"] = [
                TrainPoint(step=p.step, loss=p.metrics["val_loss"] + 0.1, lr=1e-3)
                for p in r.curve[1:]
            ]
            update["curve"] = [
                EvalPoint(
                    step=p.step,
                    tokens=p.tokens,
                    seconds=p.seconds,
                    metrics={**p.metrics, "probe_loss": 3.0 - p.step / 100},
                )
                for p in r.curve
            ]
            update["task_options"] = {"probe_batch_step": 30}
        out.append(r.model_copy(update=update))
    return out


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = write_all(tmp_path / "suite", rich_records())
    (folder / "suite.resolved.yaml").write_text(SUITE_TEXT)
    (folder / "environment.json").write_text(json.dumps({"host": "test-host", "torch": "9.9"}))
    return folder


def test_report_holds_tables_figures_rules_suite_and_environment(results: Path) -> None:
    html = build_report(rich_records(), "adamw", docstrings(), results)
    assert html.count('<table class="dataframe data">') == 4  # lm, valley, overall, lm's probe
    # the probe table at the run's end (step 100; the batch replaced batch 31): excess
    # (3.0 - 1.0 - val_100) - (3.0 - 0.3 - val_30); adamw's median seed (1, ttt 4100) gives
    # -0.7 - 0.5 + (2 - 3000/4100), lion's (seed 1, ttt 2050) -0.7 - 0.5 + (2 - 3000/2050),
    # below adamw's on all three seeds: the smallest two-sided p of three pairs, 2/8
    assert "<h4>lm: probe batch in place of batch 31</h4>" in html
    assert f"<td>{-0.7 - 0.5 + 2 - 3000 / 4100:+.4f}</td>" in html
    assert f"<td>{-0.7 - 0.5 + 2 - 3000 / 2050:+.4f} (3/3 below, p 0.25)</td>" in html
    for section in ("Loss against tokens", "Loss against training time", "Forgetting probe"):
        assert f"<h3>{section}</h3>" in html
    assert "Training loss at every logged step" in html and "Performance profile" in html
    assert html.count("<svg") == 2 + 2 + 1 + 1 + 1  # 2 tasks x 2 axes, train, probe, profile
    assert html.count("<math") > 20 and "β" not in re.sub(r"<math.*?</math>", "", html, flags=re.S)
    for name in ("adamw", "lion", "ademamix"):
        assert f"<h3>{name}</h3>" in html
    assert "seeds: [0, 1, 2]" in html and "test-host" in html
    # self-contained: no script, stylesheet link, frame or external source of any kind
    assert not re.search(r"<script|<link|<iframe|<img|src=|@import|url\((?!#)", html)


def test_probe_runs_the_probe_table_refuses_are_named_with_the_reason(results: Path) -> None:
    # lion's runs put the probe batch elsewhere: no table, and the page says why
    records = [
        r.model_copy(update={"task_options": {"probe_batch_step": 40}})
        if r.optimizer == "lion" and r.task == "lm"
        else r
        for r in rich_records()
    ]
    html = build_report(records, "adamw", docstrings(), results)
    assert html.count('<table class="dataframe data">') == 3  # lm, valley, overall
    assert (
        "No probe table: task lm: its runs put the probe batch at different steps (30, 40)" in html
    )


def test_svg_ids_are_unique_across_figures(results: Path) -> None:
    html = build_report(rich_records(), "adamw", docstrings(), results)
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    for ref in re.findall(r"url\(#([^)]+)\)", html):
        assert ref in ids


def test_one_seed_shows_no_interval(tmp_path: Path) -> None:
    records = [make_record("lm", o, 0, t) for o, t in (("adamw", 4000.0), ("lion", 2000.0))]
    html = build_report(records, "adamw", docstrings(), tmp_path)
    tables = "".join(re.findall(r'<table class="dataframe data">.*?</table>', html, flags=re.S))
    assert tables and "[" not in tables
    assert "<td>4k</td>" in tables and "<td>2k</td>" in tables  # tokens to target
    assert "<td>2.00x too few seeds</td>" in tables  # lion over adamw: 4000 / 2000


def test_the_page_shows_the_leaderboards_cells_censored_medians_and_coverage(tmp_path) -> None:
    """A median that only some seeds reach is a bound (>x), as the leaderboard prints it, and
    each interval says its true coverage: the page and the terminal never disagree."""
    from bench_cli.results import leaderboard

    records = [make_record("lm", "adamw", s, t) for s, t in enumerate((3000.0, None, None))]
    records += [make_record("lm", "lion", s, t) for s, t in enumerate((1000.0, 1500.0, 2000.0))]
    html = build_report(records, "adamw", docstrings(), tmp_path)
    lb = leaderboard.build(records, "adamw")
    ((_, task),) = export.tasks_of(lb)
    cells = export.display_task(task, columns=WIDE)
    for value in cells.to_numpy().ravel():
        assert f"<td>{escape(value)}</td>" in html
    assert any(v.startswith(">") for v in cells["tokens to target"])  # adamw: at least 10k
    assert "75%" in " ".join(cells["tokens to target"])  # three seeds: 75% coverage
    assert "true coverage" in html and "tokens_to_target_lo" not in html


def test_report_command_writes_the_file(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(results), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("<!DOCTYPE html>")
    res = CliRunner().invoke(app, ["report", str(results)])
    assert res.exit_code == 0 and (results / "report.html").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/missing"], "does not exist"),
        (["{tmp}/empty"], "no run records"),
        (["{results}", "--baseline", "sgd"], "baseline 'sgd' has no runs here"),
        (["{results}", "--out", "{tmp}/r.txt"], "give a .html name"),
    ],
)
def test_report_refuses_bad_input_in_one_line(results, tmp_path, args, message) -> None:
    (tmp_path / "empty").mkdir()
    args = [a.format(tmp=tmp_path, results=results) for a in args]
    before = sorted(p.name for p in results.iterdir())
    res = CliRunner().invoke(app, ["report", *args])
    assert res.exit_code == 1 and message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert sorted(p.name for p in results.iterdir()) == before  # nothing written


# ---- in a real browser -------------------------------------------------------------------------


def browser():
    """Headless Chromium through chromedriver, logging the console and the network."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("no Chromium here: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (test extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument("--window-size=1280,2000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


def visit(driver, page: Path, profile: Path) -> dict:
    """Load ``page``; return its console errors, every URL it requested, and what it shows."""
    driver.get(page.resolve().as_uri())
    shown = driver.execute_script(
        """
        const seen = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
        return {
          tables: [...document.querySelectorAll('table.data')].filter(seen).length,
          rows: document.querySelectorAll('table.data tbody tr').length,
          figures: [...document.querySelectorAll('figure svg')].filter(seen).length,
          maths: [...document.querySelectorAll('math')].filter(seen).length,
          title: document.title,
        };
        """
    )
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            requests.append(message["params"]["request"]["url"])
    return {"errors": errors, "requests": requests, **shown}


@pytest.fixture
def driver(tmp_path: Path):
    d = browser()
    yield d
    d.quit()


def test_the_browser_check_catches_errors_and_requests(driver, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><body><img src="http://192.0.2.1/x.png"><script>undefinedCall()</script></body></html>'
    )
    seen = visit(driver, bad, tmp_path)
    assert any("undefinedCall" in e for e in seen["errors"])
    assert "http://192.0.2.1/x.png" in seen["requests"]


def test_report_in_chromium_loads_clean_and_shows_everything(driver, results, tmp_path) -> None:
    out = tmp_path / "report.html"
    assert CliRunner().invoke(app, ["report", str(results), "--out", str(out)]).exit_code == 0
    seen = visit(driver, out, tmp_path)
    assert seen["errors"] == []
    assert seen["requests"] == [out.resolve().as_uri()]  # the page itself, nothing else
    assert seen["tables"] == 4 and seen["rows"] == 3 + 3 + 3 + 3  # lm, valley, ranking, probe
    assert seen["figures"] == 7 and seen["maths"] > 20
    assert seen["title"] == "bench report: suite"


def test_report_screenshot(driver, results, tmp_path) -> None:
    out = tmp_path / "report.html"
    assert CliRunner().invoke(app, ["report", str(results), "--out", str(out)]).exit_code == 0
    driver.get(out.resolve().as_uri())
    shot = tmp_path / "report.png"
    assert driver.save_screenshot(str(shot))
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[1] == 1280 and pixels.shape[0] > 1000
    # a page with text and curves: many distinct colours, not a blank or error page
    colours = {tuple(p) for p in (pixels[::7, ::7, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 50


def test_report_sets_a_published_reference_beside_our_adamw(tmp_path: Path) -> None:
    from bench_cli.references import REFERENCES

    [ref] = [r for r in REFERENCES if r.task == "lm-medium"]
    runs = []
    for seed, best in ((0, 1.47), (1, 1.49), (2, 1.48)):
        r = make_record("lm-medium", "adamw", seed, 4000.0, best=best)
        settings = {**r.settings, "steps": ref.steps}
        runs.append(r.model_copy(update={"settings": settings, "task_options": ref.options}))
    html = build_report(runs, "adamw", docstrings(), tmp_path)
    assert "val_loss 1.4697 after 5,000 steps" in html
    assert "best val_loss 1.4800 (median of 3 run(s), seeds 0, 1, 2; +0.0103 vs published)" in html


@pytest.mark.parametrize(
    "content, why",
    [
        (b'{"a":\n', "JSONDecodeError"),
        (b"\xff\xfe", "UnicodeDecodeError"),
        (b"[1, 2]\n", "not a JSON object"),
    ],
)
def test_a_damaged_environment_file_is_one_line_naming_it(results, tmp_path, content, why) -> None:
    env = results / "environment.json"
    env.write_bytes(content)
    before = sorted(p.name for p in results.iterdir())
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(results), "--out", str(out)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [
        f"error: {env} is damaged ({why}); restore it, or remove it to show the environment "
        "each record carries"
    ]
    assert not out.exists() and sorted(p.name for p in results.iterdir()) == before
    env.unlink()  # the fix the line names: the page then shows the records' environment
    res = CliRunner().invoke(app, ["report", str(results), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "&#34;platform&#34;: &#34;test&#34;" in out.read_text()


def test_report_refuses_a_folder_with_only_tuning_runs(tmp_path: Path) -> None:
    tuning = [r.model_copy(update={"role": "tune"}) for r in rich_records()]
    folder = write_all(tmp_path / "tuning", tuning)
    before = sorted(p.name for p in folder.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib warning about empty figures either
        res = CliRunner().invoke(app, ["report", str(folder)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.output.strip().splitlines() == [
        f"error: no scored runs in {str(folder)!r} ({len(tuning)} tuning or calibration runs); "
        "run the suite to the end to score the selected configurations"
    ]
    assert sorted(p.name for p in folder.iterdir()) == before  # no report.html


def test_a_damaged_suite_file_names_the_fix_and_the_fix_works(results, tmp_path) -> None:
    (results / "suite.resolved.yaml").write_bytes(b"\xff")
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(results), "--out", str(out)])
    assert res.exit_code == 1 and "restore it, or pass --baseline" in " ".join(res.output.split())
    assert not out.exists()
    res = CliRunner().invoke(
        app, ["report", str(results), "--baseline", "adamw", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "baseline adamw" in out.read_text()
