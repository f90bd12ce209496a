"""The plugin contract (checks and actions), the registry, and entry-point discovery.

A plugin is a class with a `name`, a JSON Schema for its `with:` params and a
`run` method. Actions also say what they would do (`plan`) and, where they
can, whether an interrupted invocation took effect (`verify`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, overload, runtime_checkable

from engine.cache import read_cached, write_cached
from engine.durations import DURATION_EXAMPLES, DURATION_PATTERN, parse_duration
from engine.errors import InvalidRunbook, PluginError, Problem
from engine.evidence import sha256_file
from engine.redact import Redactor
from engine.runs import process_alive
from engine.signals import uninterrupted

__all__ = [
    "DURATION_EXAMPLES",
    "DURATION_PATTERN",
    "Action",
    "Check",
    "Plan",
    "Plugin",
    "PluginContractError",
    "PluginError",
    "Registry",
    "StepContext",
    "load_registry",
    "load_yaml",
    "parse_duration",
    "process_alive",
    "sha256_file",
    "uninterrupted",
    "verify_contract",
]

CHECK_GROUP = "runbook.checks"
ACTION_GROUP = "runbook.actions"


@dataclass(frozen=True)
class Plan:
    """What an action would do, concretely: shown in dry-run and kept as evidence.

    `summary` is one line for humans; `details` holds the concrete request
    (argv, SQL, target path and diff, method + URL + body ...).
    """

    summary: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StepContext:
    """What the engine tells a plugin about the invocation it is running."""

    run_id: str
    step_id: str
    attempt: int
    mode: str  # "live" | "dry-run"
    workdir: Path
    timeout_s: float | None = None
    item_index: int | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    log: Callable[[str], None] = lambda message: None

    @property
    def idempotency_token(self) -> str:
        """Stable per run, step, item and attempt: pass it on (e.g. as a clientOrderId)."""
        item = f":{self.item_index}" if self.item_index is not None else ""
        return f"{self.run_id}:{self.step_id}{item}:{self.attempt}"

    def resolve(self, path: str | Path) -> Path:
        """A path from the runbook, relative to the run's working directory."""
        p = Path(path)
        return p if p.is_absolute() else self.workdir / p

    def redact(self, text: str) -> str:
        """`text` as the evidence will hold it: the run's secrets and credential-looking text as '***'."""
        return Redactor(self.secrets).text(text)

    def redact_headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        """HTTP headers as a plan may show them: credential headers and secret values as '***'."""
        return Redactor(self.secrets).headers(headers)


@runtime_checkable
class Check(Protocol):
    """A read-only plugin. `run` returns the step's `result` mapping or raises PluginError."""

    name: ClassVar[str]
    params_schema: ClassVar[Mapping[str, Any]]
    mutates: ClassVar[bool]

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> Mapping[str, Any]:
        """Do the work with rendered, validated params; the mapping is the step's `result`.

        A key `ok` (bool) is the verdict when the step has no `expect`. Raise PluginError
        (optionally with a partial `result`) for an expected failure.
        """
        ...


@runtime_checkable
class Action(Check, Protocol):
    """A mutating plugin: planned in dry-run, verified after a crash where possible."""

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """Say concretely what `run` would do, without doing any of it (dry-run)."""
        ...

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """True: the effect is present; False: absent; None: cannot tell."""
        ...


def load_yaml(text: str, path: str) -> Any:
    """Parse YAML as runbooks are read (YAML 1.2 meaning, duplicate keys refused).

    Ill-formed text raises InvalidRunbook whose problems carry `path:line:col`.
    """
    from engine.loader import load_text  # PyYAML is imported only by plugins that read YAML

    return load_text(text, path).data


class PluginContractError(InvalidRunbook):
    """A plugin that breaks the contract, or whose module cannot be imported (exit 20, located).

    The problem names the plugin's file (and the class's line) or the entry point, so the
    message reads like a compiler's: `acme/fx.py:12:1: plugin 'acme.spread' ...`.
    """


Plugin = Check | Action


def _where(obj: Any, fallback: str) -> tuple[str, int | None]:
    """The file and line where a plugin class (or module) is defined, else `fallback`."""
    import inspect

    try:
        path = inspect.getsourcefile(obj) or fallback
        line = inspect.getsourcelines(obj)[1] if inspect.isclass(obj) else None
    except (OSError, TypeError):
        return fallback, None
    return path, line


def _schema_problem(schema: Mapping[str, Any]) -> str | None:
    """Why `schema` is not a valid 2020-12 JSON Schema, or None.

    jsonschema's meta-schema check is the judge; a schema it accepted once is remembered by
    the sha256 of its canonical JSON (a marker file), so a run does not import jsonschema
    to re-prove the same built-in schemas. A refusal is never remembered."""
    try:
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):
        text = None
    name = f"schema-ok-{hashlib.sha256(text.encode()).hexdigest()[:32]}" if text is not None else None
    if name is not None and read_cached(name) is not None:
        return None
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        at = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        return f"has an invalid params_schema at {at}: {exc.message}"
    if name is not None:
        write_cached(name, b"")
    return None


def verify_contract(cls: Any, kind: str, name: str, origin: str) -> None:
    """Check a plugin class against the contract before it is used (pluggy's `_verify_hook`).

    `origin` names where the plugin came from (an entry point, or a plugin-path file). A
    class with no `name`, a name other than the one it is registered under, a `mutates`
    that contradicts its group, a missing `run`, `plan` or `verify`, or an invalid params
    schema raises PluginContractError naming the file and line of the class.
    """
    wrong: list[str] = []
    if not isinstance(cls, type):
        wrong.append(f"is {type(cls).__name__}, expected a class")
    else:
        declared = getattr(cls, "name", None)
        if declared != name:
            wrong.append(f"declares name {declared!r}, expected {name!r} (the name it is registered under)")
        mutates = getattr(cls, "mutates", None)
        if mutates is not (kind == "action"):
            wrong.append(f"has mutates = {mutates!r}, expected {kind == 'action'} for a{'n' if kind == 'action' else ''} {kind}")
        required = ("run", "plan", "verify") if kind == "action" else ("run",)
        missing = [method for method in required if not callable(getattr(cls, method, None))]
        if missing:
            wrong.append(f"has no {', '.join(missing)} method (every {kind} needs {', '.join(required)})")
        schema = getattr(cls, "params_schema", None)
        if not isinstance(schema, Mapping):
            wrong.append(f"has params_schema {type(schema).__name__}, expected a JSON Schema mapping")
        else:
            problem = _schema_problem(schema)
            if problem:
                wrong.append(problem)
            if schema.get("type") != "object":
                wrong.append("has a params_schema that is not `type: object` (`with:` is a mapping)")
    if wrong:
        path, line = _where(cls, origin)
        raise PluginContractError([Problem(path, line, 1 if line else None, None,
                                           f"{kind} plugin '{name}' ({origin}) {msg}") for msg in wrong])


class Registry:
    """Plugins by kind and name, loaded lazily so start-up stays cheap; checked on first load."""

    def __init__(self) -> None:
        self._factories: dict[tuple[str, str], tuple[Callable[[], Any], str]] = {}
        self._instances: dict[tuple[str, str], Plugin] = {}

    def add(self, kind: str, name: str, factory: Callable[[], Any], origin: str = "") -> None:
        """Register a plugin class (or a zero-argument loader of it) under `kind` ("check"/"action").

        `origin` says where it came from, for error messages; the first registration wins.
        """
        self._factories.setdefault((kind, name), (factory, origin or f"{kind} '{name}'"))

    def names(self, kind: str) -> list[str]:
        """The registered plugin names of one kind."""
        return sorted(n for k, n in self._factories if k == kind)

    def has(self, kind: str, name: str) -> bool:
        """True when a plugin of that kind and name exists."""
        return (kind, name) in self._factories

    @overload
    def get(self, kind: Literal["check"], name: str) -> Check: ...
    @overload
    def get(self, kind: Literal["action"], name: str) -> Action: ...
    @overload
    def get(self, kind: str, name: str) -> Plugin: ...

    def get(self, kind: str, name: str) -> Plugin:
        """The plugin instance, created and checked against the contract on first use.

        Unknown: PluginError. Not importable, or breaking the contract: PluginContractError.
        A plugin of kind "action" is an `Action` (it has `plan` and `verify`); of kind
        "check", a `Check`.
        """
        key = (kind, name)
        if key not in self._instances:
            try:
                factory, origin = self._factories[key]
            except KeyError:
                raise PluginError(f"unknown {kind} plugin '{name}'") from None
            cls = factory()
            verify_contract(cls, kind, name, origin)
            self._instances[key] = cls()
        return self._instances[key]


def _import_target(target: str, origin: str) -> Callable[[], Any]:
    def load() -> Any:
        module, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's, reported located
            raise PluginContractError([_import_problem(exc, origin, module)]) from None
        return obj

    return load


def _import_problem(exc: BaseException, origin: str, module: str) -> Problem:
    """A located problem for a plugin module that failed to import: its file and line."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return Problem(exc.filename, exc.lineno, exc.offset, None,
                       f"plugin module {module} ({origin}) has a syntax error: {exc.msg}")
    import traceback

    path, line = origin, None
    frames = traceback.extract_tb(exc.__traceback__)
    for frame in reversed(frames):
        if not frame.filename.startswith("<"):
            path, line = frame.filename, frame.lineno
            break
    return Problem(path, line, 1 if line else None, None,
                   f"plugin module {module} ({origin}) failed to import: {type(exc).__name__}: {exc}")


def _environment_signature() -> str:
    """Changes whenever a distribution is installed or removed on sys.path.

    sys.path[0] is left out: it is where the engine was started from (the `runbook` script's
    directory, or the current directory under `python -m`), not where distributions live, and
    keying on it made every way of starting the engine invalidate the others' cache."""
    parts = []
    for entry in sys.path[1:]:
        try:
            parts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            continue
    return "|".join(parts)


def plugin_signature(plugin_paths: list[Path]) -> str:
    """Changes whenever a plugin's code may have: a distribution installed or removed, a plugin file edited."""
    files = [f"{file}:{hashlib.sha256(file.read_bytes()).hexdigest()}"
             for directory in plugin_paths for file in sorted(Path(directory).glob("*.py")) if file.is_file()]
    return "|".join([_environment_signature(), *files])


def _entry_points() -> dict[str, dict[str, str]]:
    """`{group: {name: "module:attr"}}`, kept in the engine's cache under the installed distributions'
    signature: every state directory (every new workspace) shares it, and an install or removal misses it."""
    signature = _environment_signature()
    name = f"entry-points-{hashlib.sha256(signature.encode()).hexdigest()[:24]}.json"
    cached = read_cached(name)
    if cached is not None:
        try:
            entry = json.loads(cached)
            if entry.get("signature") == signature:
                groups: dict[str, dict[str, str]] = entry["groups"]
                return groups
        except (ValueError, AttributeError, KeyError):
            pass
    from importlib.metadata import entry_points

    groups = {group: {ep.name: ep.value for ep in entry_points(group=group)} for group in (CHECK_GROUP, ACTION_GROUP)}
    write_cached(name, json.dumps({"signature": signature, "groups": groups}).encode())
    return groups


def load_registry(plugin_paths: list[Path] | None = None) -> Registry:
    """Discover plugins: entry points `runbook.checks` / `runbook.actions`, then `plugin_paths`.

    Entry-point plugins are imported only when first used; the entry-point
    table is cached (engine/cache.py) until installed distributions change. A
    module in a plugin path registers every class it defines that has `name`
    and `run`; classes with `mutates = True` are actions, others checks. Such a module that
    does not import, or a class that breaks the contract, raises PluginContractError naming
    the file and line.
    """
    registry = Registry()
    groups = _entry_points()
    for group, kind in ((CHECK_GROUP, "check"), (ACTION_GROUP, "action")):
        for name, target in groups.get(group, {}).items():
            origin = f"entry point {group}: {name} = {target}"
            registry.add(kind, name, _import_target(target, origin), origin)
    for directory in plugin_paths or []:
        for file in sorted(Path(directory).glob("*.py")):
            for cls in _plugin_classes(file):
                kind = "action" if getattr(cls, "mutates", False) else "check"
                name = str(cls.name)
                verify_contract(cls, kind, name, str(file))
                registry.add(kind, name, _constant(cls), str(file))
    return registry


def _constant(value: Any) -> Callable[[], Any]:
    """A loader that returns an already imported plugin class."""
    return lambda: value


def _plugin_classes(file: Path) -> list[Any]:
    module_name = f"runbook_plugin_{file.stem}_{abs(hash(str(file)))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        return []
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a broken plugin file is a located configuration error
        del sys.modules[module_name]
        raise PluginContractError([_import_problem(exc, f"plugin path {file.parent}", file.name)]) from None
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and obj.__module__ == module_name
        and isinstance(getattr(obj, "name", None), str)
        and callable(getattr(obj, "run", None))
    ]
