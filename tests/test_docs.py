"""The docs cannot drift: the suite reference and schema are regenerated and compared, every
link points into the repository, and every command and flag they show exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench_cli import schema_docs
from bench_cli.cli import app
from bench_cli.config import SuiteFile
from bench_cli.registry import OPTIMIZERS
from bench_cli.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
REGENERATE = "regenerate with: python -m bench_cli.schema_docs docs/"


def test_suite_reference_is_what_the_schema_generates() -> None:
    committed = (ROOT / "docs" / "suite-reference.md").read_text()
    assert committed == schema_docs.reference_markdown(), REGENERATE
    assert (ROOT / "docs" / "suite.schema.json").read_text() == schema_docs.schema_text(), (
        REGENERATE
    )


def test_every_key_has_a_type_description_and_example() -> None:
    assert schema_docs.undocumented() == []
    assert schema_docs.missing_examples() == []
    text = schema_docs.reference_markdown()
    for key in SuiteFile.model_fields:  # the top level, each key once in its table
        assert f"| `{key}` |" in text


def test_reference_rows_show_type_and_default_from_the_schema() -> None:
    text = schema_docs.reference_markdown()
    assert "| `seeds` | list[int (≥ 0, < 2**63)] (≥ 1 item(s)) | `[0]` |" in text
    assert '| `kind` | "local" \\| "ray" \\| "slurm" | `local` |' in text
    assert "| `steps` | int (≥ 1) \\| null | `null` |" in text


def test_schema_command_prints_the_json_schema() -> None:
    res = CliRunner().invoke(app, ["suite", "schema"])
    assert res.exit_code == 0
    schema = json.loads(res.stdout)
    assert schema["$schema"].endswith("2020-12/schema")
    assert set(schema["properties"]) == set(SuiteFile.model_fields)
    assert schema["additionalProperties"] is False  # unknown keys are flagged by editors


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_point_to_files_in_the_repository(doc: Path) -> None:
    for link in _links(doc):
        if link.startswith(("http://", "https://")):
            continue
        assert (doc.parent / link).exists(), f"{doc.name} links to missing {link}"


def test_no_document_names_a_file_that_is_not_here() -> None:
    named = {m for doc in DOCS for m in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", doc.read_text())}
    for name in named:
        assert list(ROOT.rglob(name)), f"{name} is cited but not in the repository"


def _commands() -> list[list[str]]:
    """Each `bench ...` line of the docs' shell blocks, as words (comments dropped)."""
    out = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S):
            for line in block.splitlines():
                line = line.split(" # ")[0].split("&&")[-1].strip()
                if line.startswith("bench "):
                    out.append(shlex.split(line)[1:])
    return out


def test_every_command_and_flag_in_the_docs_exists() -> None:
    runner = CliRunner()
    commands = _commands()
    assert len(commands) > 20
    for words in commands:
        path = [w for w in words[:2] if not w.startswith("-")]
        path = path[:1] if path[:1] not in (["suite"], ["perf"], ["data"]) else path
        res = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert res.exit_code == 0, words
        for flag in (w.split("=")[0] for w in words if w.startswith("--")):
            assert flag in res.output or flag == "--help", (words, flag)


def test_readme_lists_every_optimizer_and_task() -> None:
    readme = (ROOT / "README.md").read_text()
    # the project's own: tests that run suites in this process register their plug-ins too
    for registry in (OPTIMIZERS, TASKS):
        names = [n for n, obj in registry.items() if obj.__module__.startswith("bench_cli.")]
        assert len(names) >= 8
        for name in names:
            assert f"| `{name}` |" in readme, name
