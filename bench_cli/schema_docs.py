"""The suite file's JSON Schema (``bench suite schema``) and its reference page, generated.

``docs/suite-reference.md`` and ``docs/suite.schema.json`` are written by
``python -m bench_cli.schema_docs docs/`` from ``bench_cli.config.SuiteFile``; a test fails when
the committed files differ from what this module generates, so the docs cannot drift from the
schema. Each key's example is the first value a committed suite (``suites/*.yaml``) gives it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from bench_cli.config import SuiteFile

SCHEMA_ID = "https://bench-cli.invalid/suite.schema.json"  # an identifier, never fetched
ROOT = Path(__file__).resolve().parents[1]

#: what the schema's own descriptions leave out; a test checks that every key has one
DESCRIPTIONS: dict[tuple[str, str], str] = {
    (
        "SuiteFile",
        "name",
    ): "the suite's name: groups its tracker runs (the default folder, suite-runs/FILE-TIER, comes from the file's name)",
    ("SuiteFile", "description"): "free text, shown by `bench suite validate`",
    ("SuiteFile", "tasks"): "the tasks to run, each with options, budget and target",
    ("SuiteFile", "optimizers"): "the optimizers to run, each with fixed values and a sweep grid",
    ("SuiteFile", "seeds"): "the seeds every scored configuration runs with",
    ("SuiteFile", "baseline"): "the optimizer that speedups are measured against (the "
    "leaderboard's default in the suite's folder) and targets calibrated from; one of `optimizers`",
    ("SuiteFile", "device"): "auto, cpu, cuda, cuda:N or mps for every run (default: auto)",
    ("SuiteFile", "plugins"): "modules or .py files to import first; they register optimizers "
    "and tasks (as `--plugin`)",
    ("SuiteFile", "tiers"): "named variants of the suite (`--tier NAME`): fewer seeds, budgets",
    ("SuiteFile", "default_tier"): "the tier used when `--tier` is not given",
    ("SuiteFile", "tuning"): "how configurations are chosen before scoring",
    ("SuiteFile", "executor"): "how cells run: locally, on Ray or on SLURM",
    ("TaskEntry", "name"): "a registered task (`bench list`)",
    ("TaskEntry", "id"): "the variant's name in tables, when one task appears twice",
    ("TaskEntry", "options"): "task options (`bench show TASK`), such as preset or n_layer",
    ("TaskEntry", "budget"): "what each run may spend",
    ("TaskEntry", "settings"): "run settings: warmup_steps, schedule, grad_clip, log_interval, ...",
    ("TaskEntry", "target"): "a number, `calibrate` (from the baseline's runs) or unset (the "
    "task's own target)",
    ("TaskEntry", "margin"): "calibrate only: the target is the baseline's best value, relaxed by "
    "this fraction",
    ("OptimizerEntry", "name"): "a registered optimizer (`bench list`)",
    ("OptimizerEntry", "hparams"): "fixed hyperparameters, over the recipe's values",
    ("OptimizerEntry", "sweep"): "a grid: each key takes every value of its list",
    ("Budget", "steps"): "optimizer steps per run",
    ("Budget", "max_seconds"): "stop a run after this many training seconds",
    ("Budget", "eval_interval"): "steps between evaluations",
    ("Tier", "description"): "free text",
    ("Tier", "seeds"): "the seeds of this tier (replaces the suite's)",
    ("Tier", "budget"): "a budget over every task's",
    ("Tier", "tasks"): "budgets per task id, over the tier's budget",
    ("SlurmSettings", "partition"): "the SLURM partition",
    ("SlurmSettings", "gpus_per_node"): "GPUs each job asks for",
    ("SlurmSettings", "cpus_per_task"): "CPUs each job asks for",
    ("SlurmSettings", "mem_gb"): "memory each job asks for",
    ("SlurmSettings", "account"): "the SLURM account to charge",
    ("ExecutorSettings", "kind"): "local (this machine), ray or slurm",
    ("ExecutorSettings", "slurm"): "where SLURM jobs go",
}


#: examples for keys that no committed suite uses
EXAMPLES: dict[tuple[str, str], Any] = {
    ("SuiteFile", "plugins"): ["my_opt.py", "mypackage.optimizers"],
    ("SuiteFile", "log"): ["tensorboard", "mlflow"],
    ("Tuning", "seeds"): [100],
    ("Tuning", "calibration_seeds"): [200, 201, 202],
    ("Budget", "max_seconds"): 600,
    ("SlurmSettings", "cluster"): "local",
    ("SlurmSettings", "partition"): "gpu",
    ("SlurmSettings", "time_minutes"): 120,
    ("SlurmSettings", "gpus_per_node"): 1,
    ("SlurmSettings", "cpus_per_task"): 8,
    ("SlurmSettings", "mem_gb"): 32,
    ("SlurmSettings", "account"): "my-lab",
    ("SlurmSettings", "array_parallelism"): 16,
    ("SlurmSettings", "extra"): {"qos": "high"},
    ("ExecutorSettings", "kind"): "slurm",
    ("ExecutorSettings", "jobs"): 2,
    ("ExecutorSettings", "threads"): 1,
    ("ExecutorSettings", "gpus"): [0, 1],
    ("ExecutorSettings", "runs_per_gpu"): 2,
    ("ExecutorSettings", "ray_address"): "auto",
    ("ExecutorSettings", "mps"): True,
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a suite file, for editors (draft 2020-12)."""
    schema = SuiteFile.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "bench suite file",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


def _ref(node: dict) -> str | None:
    ref = node.get("$ref") or next((a["$ref"] for a in node.get("anyOf", []) if "$ref" in a), None)
    return ref.rsplit("/", 1)[-1] if ref else None


def _bound(value: float) -> str:
    """A bound as text: ``2**63`` for a power of two above a million, else ``g``-formatted."""
    if isinstance(value, int) and value > 2**20 and value & (value - 1) == 0:
        return f"2**{value.bit_length() - 1}"
    return f"{value:g}"


def _type(node: dict) -> str:
    """A property's type as short text: ``int ≥ 1 | null``, ``list[int]``, ``local | ray``."""
    if "anyOf" in node:
        return " | ".join(_type(a) for a in node["anyOf"])
    if "$ref" in node:
        return node["$ref"].rsplit("/", 1)[-1]
    if "enum" in node:
        return " | ".join(json.dumps(v) for v in node["enum"])
    kind = node.get("type")
    names = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}
    if kind == "array":
        text = f"list[{_type(node.get('items', {})) or 'any'}]"
    elif kind == "object":
        extra = node.get("additionalProperties")
        text = f"map[str, {_type(extra)}]" if isinstance(extra, dict) and extra else "map"
    elif kind is None:
        return "any"
    else:
        text = names.get(kind, kind)
    bounds = [
        f"{sign} {_bound(node[key])}"
        for key, sign in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in node
    ]
    if "minItems" in node:
        bounds.append(f"≥ {node['minItems']} item(s)")
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _flow(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _collect(defs: dict, model: str, data: Any, out: dict) -> None:
    """Walk a suite file's data along the schema; keep each (model, key)'s first value."""
    if not isinstance(data, dict):
        return
    props = defs[model]["properties"]
    for key, value in data.items():
        if key not in props:
            continue
        out.setdefault((model, key), value)
        node = props[key]
        items = node.get("items", {}) if node.get("type") == "array" else {}
        extra = node.get("additionalProperties")
        if _ref(node):
            _collect(defs, _ref(node), value, out)
        elif _ref(items) and isinstance(value, list):
            for v in value:
                _collect(defs, _ref(items), v, out)
        elif isinstance(extra, dict) and _ref(extra) and isinstance(value, dict):
            for v in value.values():
                _collect(defs, _ref(extra), v, out)


def examples(suite_files: list[Path]) -> dict[tuple[str, str], Any]:
    schema = SuiteFile.model_json_schema()
    defs = {**schema.get("$defs", {}), "SuiteFile": schema}
    out: dict[tuple[str, str], Any] = {}
    for path in suite_files:
        _collect(defs, "SuiteFile", yaml.safe_load(path.read_text()), out)
    return out


def _sections(schema: dict) -> list[tuple[str, str, dict]]:
    """(path, model name, model schema) from the top level down, each model once."""
    defs = {**schema.get("$defs", {}), "SuiteFile": schema}
    order, queue, seen = [], [("", "SuiteFile")], set()
    while queue:
        path, name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        order.append((path or "(top level)", name, defs[name]))
        for key, node in defs[name]["properties"].items():
            items = node.get("items", {}) if node.get("type") == "array" else {}
            extra = node.get("additionalProperties")
            here = f"{path}.{key}" if path else key
            if _ref(node):
                queue.append((here, _ref(node)))
            elif _ref(items):
                queue.append((f"{here}[]", _ref(items)))
            elif isinstance(extra, dict) and _ref(extra):
                queue.append((f"{here}.NAME", _ref(extra)))
    return order


def _nested(node: dict) -> str | None:
    """For a key holding a model (or a list or map of them): how its section is named."""
    items = node.get("items", {}) if node.get("type") == "array" else {}
    extra = node.get("additionalProperties")
    if _ref(node):
        return ""
    if _ref(items):
        return "[]"
    if isinstance(extra, dict) and _ref(extra):
        return ".NAME"
    return None


def _example(model: str, key: str, found: dict) -> str:
    value = found.get((model, key), EXAMPLES.get((model, key)))
    return f"`{_flow(value)}`" if (model, key) in found or (model, key) in EXAMPLES else ""


def missing_examples() -> list[str]:
    """Keys without an example (a test keeps this empty)."""
    found = examples(sorted((ROOT / "suites").glob("*.yaml")))
    return [
        f"{name}.{key}"
        for _, name, model in _sections(SuiteFile.model_json_schema())
        for key, node in model["properties"].items()
        if _nested(node) is None and (name, key) not in found and (name, key) not in EXAMPLES
    ]


def _default(node: dict, required: bool) -> str:
    if required:
        return "required"
    if "default" not in node:
        return "-"
    return f"`{_flow(node['default'])}`" if node["default"] not in ({}, []) else "empty"


def reference_markdown(suite_files: list[Path] | None = None) -> str:
    """The suite-file reference: every key with its type, default, meaning and an example."""
    files = suite_files if suite_files is not None else sorted((ROOT / "suites").glob("*.yaml"))
    found = examples(files)
    schema = SuiteFile.model_json_schema()
    lines = [
        "# Suite file reference",
        "",
        "<!-- generated by `python -m bench_cli.schema_docs docs/` from bench_cli.config.SuiteFile;"
        " do not edit -->",
        "",
        "A suite is a YAML file run by `bench suite run FILE`. Unknown keys are errors. Examples "
        "are taken from the suites in `suites/`; `bench suite schema` prints the JSON Schema "
        "(also in [suite.schema.json](suite.schema.json)) for editors. Values are read as "
        "`--set` reads them: `1e-3` is a number, and only `true` and `false` are booleans "
        "(`off`, `yes`, `no` stay text, so `autocast: off` is the choice `off`).",
        "",
    ]
    for path, name, model in _sections(schema):
        lines += [f"## `{path}`", ""]
        if model.get("description"):
            lines += [model["description"], ""]
        lines += [
            "| key | type | default | description | example |",
            "| --- | --- | --- | --- | --- |",
        ]
        required = set(model.get("required", []))
        for key, node in model["properties"].items():
            text = node.get("description") or DESCRIPTIONS.get((name, key), "")
            default, example = _default(node, key in required), _example(name, key, found)
            if _nested(node) is not None:  # its keys are listed in a section of their own
                here = f"{'' if path.startswith('(') else path + '.'}{key}"
                default = default if default == "required" else "see below"
                example = f"see `{here}{_nested(node)}`"
            cells = [f"`{key}`", _type(node), default, text, example]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    smoke = ROOT / "suites" / "ci-smoke.yaml"
    if smoke.is_file():
        lines += [
            "## A whole suite: `suites/ci-smoke.yaml`",
            "",
            "```yaml",
            smoke.read_text().rstrip(),
            "```",
            "",
        ]
    return "\n".join(lines)


def undocumented() -> list[str]:
    """Keys with neither a schema description nor one here (a test keeps this empty)."""
    missing = []
    for _, name, model in _sections(SuiteFile.model_json_schema()):
        for key, node in model["properties"].items():
            if not node.get("description") and (name, key) not in DESCRIPTIONS:
                missing.append(f"{name}.{key}")
    return missing


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    ref, schema = folder / "suite-reference.md", folder / "suite.schema.json"
    ref.write_text(reference_markdown())
    schema.write_text(schema_text())
    return [ref, schema]


if __name__ == "__main__":  # python -m bench_cli.schema_docs docs/
    for written in write(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs")):
        print(written)
