"""Which values are secret: known by declaration, never by guessing alone.

Secrets are the values of `env:` variables, params declared `secret: true` or
named like a credential (`api_key`, `password`, ...), credential-named fields
of a trigger, and the engine's own keys. Each is registered with
engine.redact, so every writer and printer of the engine masks it. The
engine's own keys are taken out of the process environment at start, so no
step's process ever inherits them.
"""

from __future__ import annotations

import os
from typing import Any

from engine import redact
from engine.model import Runbook

_ENGINE_KEYS: dict[str, str] = {}


def take_engine_keys(config: Any) -> None:
    """Move the engine's own keys out of the environment (steps inherit it) into memory."""
    name = getattr(config, "signing_key_env", None)
    if name and name in os.environ:
        value = os.environ.pop(name)
        if value:
            _ENGINE_KEYS[name] = value
    redact.register(_ENGINE_KEYS.values())


def engine_key(name: str) -> str | None:
    """One of the engine's own keys, taken from the environment at start."""
    return _ENGINE_KEYS.get(name) or os.environ.get(name) or None


def secret_param_names(runbook: Runbook) -> list[str]:
    """Params whose values are secrets: declared `secret: true`, or named like a credential."""
    return [name for name, schema in runbook.params.items()
            if (isinstance(schema, dict) and schema.get("secret") is True) or redact.credential_name(name)]


def secret_defaults(runbook: Runbook, params: dict[str, Any]) -> list[str]:
    """Secret params that kept their declared default (resume can take it from the file again)."""
    defaults = runbook.param_defaults()
    return [n for n in secret_param_names(runbook) if n in defaults and params.get(n) == defaults[n]]


def declared(runbook: Runbook | None, params: dict[str, Any], env: dict[str, str], trigger: Any) -> tuple[str, ...]:
    """Every secret value of one run, registered for masking."""
    values: list[str] = [v for v in env.values() if v]
    names = set(secret_param_names(runbook)) if runbook is not None else set()
    for name, value in params.items():
        if name in names:
            values.extend(_scalars(value))
    values.extend(_credential_fields(params))
    values.extend(_credential_fields(trigger))
    values.extend(_ENGINE_KEYS.values())
    redact.register(values)
    return tuple(dict.fromkeys(values))


def _scalars(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _scalars(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _scalars(v)]
    if value is None or isinstance(value, bool):
        return []
    return [str(value)]


def _credential_fields(value: Any) -> list[str]:
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            if redact.credential_name(str(key)):
                out.extend(_scalars(item))
            else:
                out.extend(_credential_fields(item))
        return out
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _credential_fields(v)]
    return []
