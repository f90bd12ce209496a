"""settings.yaml (a small block-YAML subset, stdlib only), its JSON Schema and a validator."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .fsutil import canonical_json, sha256_json

DEFAULT_SETTINGS: dict[str, Any] = {
    "environment": "paper",
    "mode": "live",
    "db_path": "state/core.db",
    "metrics_log_path": "logs/metrics.log",
    "filters_enabled": True,
    "backfill_window_ms": 3_600_000,
    "symbols": ["XAUUSD", "BTCUSDT"],
    "safety": {"startup_mode": "ARMED_LIVE"},
    "ingest": {"maintenance_skip_gap": False, "bar_interval_ms": 60_000},
    "execution": {
        "retry_budget_max_attempts": 3,
        "retry_budget_window_sec": 300,
        "retry_budget_mode": "ARMED_SAFE",
        "max_slippage_bps": 5.0,
        "min_notional": 5.0,
        "order_ttl_bars": 3,
        # seed 002 Mode-Specific Validation: the execution adapter places orders at the exchange.
        # The service runs it only in mode live (dry-run and backfill-only disable it); false keeps
        # it off in live too. Reported by `simcore post-start` as execution_adapter=enabled|disabled.
        "adapter_enabled": True,
    },
    "risk": {
        "max_daily_loss_pct": 2.0,
        "max_drawdown_pct": 5.0,
        "max_position_notional": 50_000.0,
    },
    "reconcile": {"tolerance_qty": 1e-9, "critical_drift_pct": 10.0},
    "data": {"max_staleness_sec": 180, "check_window_bars": 240, "anomaly_return_pct": 3.0},
}

_MODES = ["ARMED_LIVE", "ARMED_SAFE", "HALT"]


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required if required is not None else sorted(props),
        "additionalProperties": False,
    }


SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "simcore settings",
    **_obj(
        {
            "environment": {"type": "string", "enum": ["paper", "testnet", "production"]},
            "mode": {"type": "string", "enum": ["live", "dry-run", "backfill-only"]},
            "db_path": {"type": "string", "minLength": 1},
            "metrics_log_path": {"type": "string", "minLength": 1},
            "filters_enabled": {"type": "boolean"},
            "backfill_window_ms": {"type": "integer", "minimum": 60000},
            "symbols": {"type": "array", "items": {"type": "string"}},
            "safety": _obj({"startup_mode": {"type": "string", "enum": _MODES}}),
            "ingest": _obj(
                {
                    "maintenance_skip_gap": {"type": "boolean"},
                    "bar_interval_ms": {"type": "integer", "minimum": 1000},
                }
            ),
            "execution": _obj(
                {
                    "retry_budget_max_attempts": {"type": "integer", "minimum": 1},
                    "retry_budget_window_sec": {"type": "integer", "minimum": 1},
                    "retry_budget_mode": {"type": "string", "enum": ["ARMED_SAFE", "HALT"]},
                    "max_slippage_bps": {"type": "number", "minimum": 0},
                    "min_notional": {"type": "number", "minimum": 0},
                    "order_ttl_bars": {"type": "integer", "minimum": 1},
                    "adapter_enabled": {"type": "boolean"},
                },
                # adapter_enabled is optional (default true): configs written before it stay valid
                ["max_slippage_bps", "min_notional", "order_ttl_bars", "retry_budget_max_attempts",
                 "retry_budget_mode", "retry_budget_window_sec"],
            ),
            "risk": _obj(
                {
                    "max_daily_loss_pct": {"type": "number", "minimum": 0},
                    "max_drawdown_pct": {"type": "number", "minimum": 0},
                    "max_position_notional": {"type": "number", "minimum": 0},
                }
            ),
            "reconcile": _obj(
                {
                    "tolerance_qty": {"type": "number", "minimum": 0},
                    "critical_drift_pct": {"type": "number", "minimum": 0},
                }
            ),
            "data": _obj(
                {
                    "max_staleness_sec": {"type": "integer", "minimum": 1},
                    "check_window_bars": {"type": "integer", "minimum": 2},
                    "anomaly_return_pct": {"type": "number", "minimum": 0},
                }
            ),
        }
    ),
}

# ---------------------------------------------------------------- YAML subset


def _scalar(text: str) -> Any:
    t = text.strip()
    if t == "" or t in ("~", "null", "Null", "NULL"):
        return None
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if t.startswith("[") and t.endswith("]"):
        inner = t[1:-1].strip()
        return [] if not inner else [_scalar(p) for p in inner.split(",")]
    if t[0] in "\"'" and t[-1] == t[0] and len(t) >= 2:
        return json.loads(t) if t[0] == '"' else t[1:-1].replace("''", "'")
    if re.fullmatch(r"[-+]?\d+", t.replace("_", "")):
        return int(t.replace("_", ""))
    try:
        return float(t)
    except ValueError:
        return t


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


class ConfigError(ValueError):
    """settings.yaml cannot be parsed."""


def parse_yaml(text: str) -> dict[str, Any]:
    """Parse nested block mappings of scalars and flow lists (the subset settings.yaml uses).

    A document starting with `{` is parsed as JSON (JSON is YAML too).
    """
    if text.lstrip().startswith("{"):
        loaded: dict[str, Any] = json.loads(text)
        return loaded
    root: dict[str, Any] = {}
    stack: list[tuple[int, dict[str, Any]]] = [(-1, root)]
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line.strip() or line.strip() == "---":
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, sep, rest = line.strip().partition(":")
        if not sep or not key:
            raise ConfigError(f"line {lineno}: expected 'key: value', got {raw.strip()!r}")
        while stack and indent <= stack[-1][0]:
            stack.pop()
        if not stack:
            raise ConfigError(f"line {lineno}: bad indentation")
        parent = stack[-1][1]
        key = key.strip().strip("\"'")
        if key in parent:
            raise ConfigError(f"line {lineno}: duplicate key {key!r}")
        if rest.strip() == "":
            child: dict[str, Any] = {}
            parent[key] = child
            stack.append((indent, child))
        else:
            parent[key] = _scalar(rest)
    return root


def _dump_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, list):
        return "[" + ", ".join(_dump_scalar(x) for x in v) + "]"
    if isinstance(v, int | float):
        return repr(v)
    s = str(v)
    return s if re.fullmatch(r"[A-Za-z0-9_./-]+", s) and _scalar(s) == s else json.dumps(s)


def dump_yaml(data: dict[str, Any], indent: int = 0) -> str:
    """Inverse of parse_yaml."""
    out: list[str] = []
    for k, v in data.items():
        if isinstance(v, dict):
            out.append(" " * indent + f"{k}:")
            out.append(dump_yaml(v, indent + 2).rstrip("\n"))
        else:
            out.append(" " * indent + f"{k}: {_dump_scalar(v)}")
    return "\n".join(out) + "\n"


def load_settings(path: Path) -> dict[str, Any]:
    """Read settings.yaml (raises ConfigError on syntax errors)."""
    try:
        return parse_yaml(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, ConfigError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def config_hash(settings: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the parsed settings."""
    return sha256_json(settings)


# ---------------------------------------------------------------- JSON Schema subset

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "null": (type(None),),
}


def validate(instance: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Errors of instance against a JSON Schema (type, enum, required, properties,
    additionalProperties, items, minimum, maximum, minLength); empty when valid."""
    errs: list[str] = []
    typ = schema.get("type")
    if typ is not None:
        types = typ if isinstance(typ, list) else [typ]
        ok = any(
            isinstance(instance, _TYPES[t])
            and not (t in ("integer", "number") and isinstance(instance, bool))
            for t in types
        )
        if not ok:
            return [f"{path}: {canonical_json(instance)} is not of type {typ!r}"]
    if "enum" in schema and instance not in schema["enum"]:
        errs.append(f"{path}: {canonical_json(instance)} is not one of {schema['enum']}")
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errs.append(f"{path}: {instance} is less than the minimum of {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errs.append(f"{path}: {instance} is greater than the maximum of {schema['maximum']}")
    if isinstance(instance, str) and len(instance) < schema.get("minLength", 0):
        errs.append(f"{path}: {instance!r} is too short")
    if isinstance(instance, list) and "items" in schema:
        for i, item in enumerate(instance):
            errs += validate(item, schema["items"], f"{path}[{i}]")
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for req in schema.get("required", []):
            if req not in instance:
                errs.append(f"{path}: {req!r} is a required property")
        for k, v in instance.items():
            if k in props:
                errs += validate(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: additional property {k!r} is not allowed")
    return errs


def execution_adapter_enabled(settings: dict[str, Any]) -> bool:
    """The execution adapter runs (places external orders) only in mode live with adapter_enabled
    (default true); dry-run and backfill-only disable it (seed 002 Mode-Specific Validation)."""
    execution = settings.get("execution") or {}
    return settings.get("mode", "live") == "live" and bool(execution.get("adapter_enabled", True))
