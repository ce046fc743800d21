"""Reading YAML safely: suite files and ``--set`` values, with one loader and clear errors.

Safe YAML that reads ``1e-3`` as a number and only ``true``/``false`` as booleans, refuses a key given twice or a key that is a list or
mapping, and limits alias expansion (at most ``MAX_ALIASES`` aliases and ``MAX_NODES`` values), so
that a small file cannot expand into a huge document. Errors name the line and column.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bench_cli.errors import ConfigError, clip
from bench_cli.results.store import UnreadableRecord, read_regular_text

#: a document may use at most this many aliases (``*name``) and expand to this many values
MAX_ALIASES = 100
MAX_NODES = 100_000


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-3`` as a number (YAML 1.1 needs a dot), refuses a key given
    twice in one mapping (PyYAML would keep the last silently), a key that is not a plain value,
    and documents whose aliases expand beyond ``MAX_NODES`` values (an "alias bomb")."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_ALIASES:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"more than {MAX_ALIASES} aliases (*name); write the values out",
                    self.peek_event().start_mark,
                )
        return super().compose_node(parent, index)

    def get_single_node(self):  # noqa: ANN201
        node = super().get_single_node()
        if node is not None:
            _count_nodes(node)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    "a key must be a plain name, not a list or mapping",
                    key_node.start_mark,
                )
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {clip(repr(key))} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def _count_nodes(root: yaml.Node) -> int:
    """How many values ``root`` expands to, aliases repeated; refuses a cycle or too many."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise yaml.composer.ComposerError(
                None, None, "an alias refers to a value that contains it", node.start_mark
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the document expands to more than {MAX_NODES} values (aliases repeat their "
                "anchor's content); write it without nested aliases",
                node.start_mark,
            )
        sizes[key] = total
        return total

    return size(root)


# booleans as YAML 1.2 spells them: true and false. YAML 1.1 also reads yes, no, on and off,
# so a task's ``autocast: off`` would arrive as False; they stay text, which a true/false field
# still accepts
_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:

        def at(mark: yaml.Mark | None) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "an unknown place"

        message = f"{source}: invalid YAML at {at(exc.problem_mark)}: {clip(exc.problem, 160)}"
        if exc.context and exc.context_mark:
            message += f" ({clip(exc.context)} at {at(exc.context_mark)})"
        raise ConfigError(message) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"{source}: invalid YAML: {clip(' '.join(str(exc).split()), 160)}"
        ) from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: invalid YAML: nested too deeply") from exc


def key_path(loc: tuple) -> str:
    """``('optimizers', 2, 'hparams', 'lr')`` -> ``optimizers[2].hparams.lr``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def problem_text(err: dict) -> str:
    """One pydantic error as a reader wants it: the problem, then the value given, without
    pydantic's own words ("Value error, ", "or instance of TaskEntry"). A check of the whole
    model (an empty location) names its fields itself, so the whole input is not repeated."""
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    msg = re.sub(r"a valid dictionary or instance of \w+", "a mapping of keys to values", msg)
    if not err["loc"]:
        return msg
    return f"{msg} (got {clip(repr(err.get('input')), 60)})"


def schema_message(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        if err["type"] == "extra_forbidden":
            lines.append(f"{key_path(err['loc'])}: unknown key")
        else:
            lines.append(f"{key_path(err['loc'])}: {problem_text(err)}")
    return "; ".join(lines)


def read_text_file(path: str | Path, what: str, limit: int = 2**20) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes (a ``ConfigError`` else)."""
    try:
        return read_regular_text(Path(path), limit)
    except UnreadableRecord as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: it {exc.reason}") from exc
