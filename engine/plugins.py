"""The plugin contract (checks and actions), the registry, and entry-point discovery.

A plugin is a class with a `name`, a JSON Schema for its `with:` params and a
`run` method. Actions also say what they would do (`plan`) and, where they
can, whether an interrupted invocation took effect (`verify`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from engine.errors import PluginError

__all__ = [
    "Action",
    "Check",
    "Plan",
    "PluginError",
    "Registry",
    "StepContext",
    "load_registry",
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


class Registry:
    """Plugins by kind and name, loaded lazily so start-up stays cheap."""

    def __init__(self) -> None:
        self._factories: dict[tuple[str, str], Callable[[], Any]] = {}
        self._instances: dict[tuple[str, str], Any] = {}

    def add(self, kind: str, name: str, factory: Callable[[], Any]) -> None:
        """Register a plugin class (or a zero-argument factory) under `kind` ("check"/"action")."""
        self._factories.setdefault((kind, name), factory)

    def names(self, kind: str) -> list[str]:
        """The registered plugin names of one kind."""
        return sorted(n for k, n in self._factories if k == kind)

    def has(self, kind: str, name: str) -> bool:
        """True when a plugin of that kind and name exists."""
        return (kind, name) in self._factories

    def get(self, kind: str, name: str) -> Any:
        """The plugin instance, created on first use."""
        key = (kind, name)
        if key not in self._instances:
            try:
                factory = self._factories[key]
            except KeyError:
                raise PluginError(f"unknown {kind} plugin '{name}'") from None
            loaded = factory()
            self._instances[key] = loaded() if isinstance(loaded, type) else loaded
        return self._instances[key]


def _import_target(target: str) -> Callable[[], Any]:
    def load() -> Any:
        import importlib

        module, _, attr = target.partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
        return obj

    return load


def _environment_signature() -> str:
    """Changes whenever a distribution is installed or removed on sys.path."""
    parts = []
    for entry in sys.path:
        try:
            parts.append(f"{entry}:{os.stat(entry or '.').st_mtime_ns}")
        except OSError:
            continue
    return "|".join(parts)


def _entry_points(cache_dir: Path | None) -> dict[str, dict[str, str]]:
    """`{group: {name: "module:attr"}}`, cached until the installed distributions change."""
    signature = _environment_signature()
    cache = cache_dir / "entry-points.json" if cache_dir else None
    if cache is not None:
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
            if cached.get("signature") == signature:
                groups: dict[str, dict[str, str]] = cached["groups"]
                return groups
        except (OSError, ValueError, AttributeError):
            pass
    from importlib.metadata import entry_points

    groups = {group: {ep.name: ep.value for ep in entry_points(group=group)} for group in (CHECK_GROUP, ACTION_GROUP)}
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
            tmp.write_text(json.dumps({"signature": signature, "groups": groups}), encoding="utf-8")
            os.replace(tmp, cache)
        except OSError:
            pass
    return groups


def load_registry(plugin_paths: list[Path] | None = None, cache_dir: Path | None = None) -> Registry:
    """Discover plugins: entry points `runbook.checks` / `runbook.actions`, then `plugin_paths`.

    Entry-point plugins are imported only when first used; the entry-point
    table is cached in `cache_dir` until installed distributions change. A
    module in a plugin path registers every class it defines that has `name`
    and `run`; classes with `mutates = True` are actions, others checks.
    """
    registry = Registry()
    groups = _entry_points(cache_dir)
    for group, kind in ((CHECK_GROUP, "check"), (ACTION_GROUP, "action")):
        for name, target in groups.get(group, {}).items():
            registry.add(kind, name, _import_target(target))
    for directory in plugin_paths or []:
        for file in sorted(Path(directory).glob("*.py")):
            for cls in _plugin_classes(file):
                kind = "action" if getattr(cls, "mutates", False) else "check"
                registry.add(kind, str(cls.name), cls)
    return registry


def _plugin_classes(file: Path) -> list[Any]:
    module_name = f"runbook_plugin_{file.stem}_{abs(hash(str(file)))}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        return []
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and obj.__module__ == module_name
        and isinstance(getattr(obj, "name", None), str)
        and callable(getattr(obj, "run", None))
    ]
