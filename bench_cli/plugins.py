"""One registry mechanism for optimizers and tasks, fed from three sources.

Built-ins register with a decorator and an explicit name; installed packages through entry points
(groups ``bench_cli.optimizers`` and ``bench_cli.tasks``); user code through ``--plugin
some.module`` or ``--plugin path/to/file.py``. Names are matched ignoring case and ``-``/``_``.
A plug-in that fails to load becomes a placeholder that errors only when it is selected.

Names become parts of run ids and so of file names: a name must match
``bench_cli.results.store.NAME_PATTERN`` (letters, digits, ``. _ + = , ( ) -``, starting with a
letter or digit, at most 100 characters); any other is refused when it is registered.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Generic, TypeVar

from bench_cli.errors import BenchError, Terminated, UnknownNameError, clip, describe
from bench_cli.results.store import name_problem

T = TypeVar("T")


def normalize(name: str) -> str:
    """Canonical form of a registry name: lower case, hyphens."""
    return name.strip().lower().replace("_", "-")


def suggestion(name: str, names: list[str]) -> str:
    """`` Did you mean 'x'?`` for the closest known name, or an empty string."""
    close = difflib.get_close_matches(normalize(name), names, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


#: names registered so far, in every registry: a plug-in that adds none is a mistake
_registrations = 0
_modules: set[str] = set()  # and the modules they came from


class _Broken:
    """Stands in for a plug-in that failed to load; raises only when selected."""

    def __init__(self, source: str, error: BaseException):
        self.source = source
        self.error = error


class Registry(Generic[T]):
    """Name -> object, with loud errors and lazily loaded entry points."""

    def __init__(self, kind: str, entry_point_group: str):
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T | _Broken] = {}
        self._entry_points_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@OPTIMIZERS.register("ademamix")``."""

        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T | _Broken) -> None:
        if not isinstance(name, str) or (problem := name_problem(normalize(name))):
            problem = "must be text" if not isinstance(name, str) else problem
            raise BenchError(
                f"{self.kind} name {clip(repr(name))} is refused: it {problem}; register it "
                "under another name"
            )
        key = normalize(name)
        if key in self._items and self._items[key] is not obj:
            raise BenchError(
                f"{self.kind} name {key!r} is registered twice; rename one of the plug-ins"
            )
        global _registrations
        _registrations += 1
        _modules.add(getattr(obj, "__module__", None) or "")
        self._items[key] = obj
        if not isinstance(obj, _Broken):
            obj.registry_name = key  # type: ignore[attr-defined]

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """Every loadable entry (broken plug-ins are left out)."""
        return [(n, o) for n in self.names() if not isinstance(o := self._items[n], _Broken)]

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return normalize(name) in self._items

    def get(self, name: str) -> T:
        self._load_entry_points()
        key = normalize(name)
        if key not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{suggestion(name, list(self._items))} Known {self.kind}s: "
                f"{', '.join(sorted(self._items))}."
            )
        obj = self._items[key]
        if isinstance(obj, _Broken):
            raise BenchError(
                f"{self.kind} {key!r} from {obj.source} failed to load: {describe(obj.error)}"
            )
        return obj

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if normalize(ep.name) in self._items:
                continue
            try:
                obj = ep.load()
                self.add(ep.name, obj)
            except Terminated:
                raise
            except (Exception, SystemExit) as exc:  # a broken plug-in must not break the others
                self._items[normalize(ep.name)] = _Broken(f"entry point {ep.value}", exc)


def load_plugin(spec: str) -> None:
    """Import user code that registers optimizers or tasks: a module path or a ``.py`` file. One
    that registers nothing when first imported is refused: a wrong module or file was named."""
    before = _registrations
    name, fresh = _import(spec)
    # imported now: it must have registered something (from wherever its classes come); a file
    # imported before (by us, under a name of ours) was kept only when it did; a module imported
    # before (os, say): something registered must come from it
    if _registrations > before if fresh else (name != spec or _registers(name)):
        return
    if fresh:
        sys.modules.pop(name, None)  # named again, it is refused again
    raise BenchError(
        f"plug-in {spec!r} registered no optimizer or task; name the module or file whose "
        "classes carry @OPTIMIZERS.register(NAME) or @TASKS.register(NAME)"
    )


def _registers(module: str) -> bool:
    """Whether something registered so far comes from ``module`` or a module inside it."""
    return any(m == module or m.startswith(module + ".") for m in _modules)


def _import(spec: str) -> tuple[str, bool]:
    """Import the plug-in: its module's name, and whether it was imported now."""
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise BenchError(f"plug-in file {spec!r} does not exist; check the path")
            if path.suffix != ".py":
                raise BenchError(
                    f"plug-in file {spec!r} is not a .py file; pass a Python file or a module path"
                )
            mod_name = f"bench_plugin_{abs(hash(str(path.resolve())))}"
            if mod_name in sys.modules:
                return mod_name, False
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            assert module_spec is not None and module_spec.loader is not None
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[mod_name]
                raise
        elif spec in sys.modules:
            return spec, False
        else:
            mod_name = spec
            importlib.import_module(spec)
        return mod_name, True
    except BenchError:
        raise
    except ModuleNotFoundError as exc:
        raise BenchError(
            f"plug-in {spec!r} could not be imported ({exc}); pass an importable module path "
            "or a path to a .py file"
        ) from exc
    except Terminated:
        raise
    except (Exception, SystemExit) as exc:
        raise BenchError(f"plug-in {spec!r} failed to load: {describe(exc)}") from exc
