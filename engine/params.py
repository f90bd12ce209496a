"""Run params: `--param k=v` and `--params-file`, coerced and checked against `params:`."""

from __future__ import annotations

import json
from typing import Any

from engine.errors import InvalidRunbook, Problem
from engine.model import Runbook

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """`k=v` strings -> mapping; InvalidRunbook naming the bad one."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidRunbook([Problem("--param", None, None, None, f"{pair!r}: expected NAME=VALUE")])
        out[key.strip()] = value
    return out


def load_params_file(path: str) -> dict[str, Any]:
    """A YAML or JSON params file -> mapping."""
    from engine.loader import load_file

    doc = load_file(path)
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise InvalidRunbook([doc.problem((), "params file must be a mapping of NAME: VALUE")])
    return doc.data


def _coerce(name: str, text: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    for k in kinds:
        try:
            if k == "integer":
                return int(text)
            if k == "number":
                return float(text)
            if k == "boolean":
                low = text.lower()
                if low in _TRUE or low in _FALSE:
                    return low in _TRUE
                continue
            if k in ("array", "object"):
                return json.loads(text)
            if k == "null" and text in ("", "null"):
                return None
            if k in ("string", None):
                return text
        except ValueError:
            continue
    raise InvalidRunbook([Problem("--param", None, None, None,
        f"param '{name}': {text!r} is not valid (expected {' or '.join(map(str, kinds))})")])


def resolve_params(runbook: Runbook, file_values: dict[str, Any], cli_values: dict[str, str]) -> dict[str, Any]:
    """Declared defaults, then the params file, then `--param`; unknown or ill-typed params rejected."""
    declared = runbook.params
    problems = [
        Problem(str(runbook.path), None, None, None,
                f"unknown param '{k}' (expected one of: {', '.join(sorted(declared)) or 'none declared'})")
        for k in [*file_values, *cli_values] if k not in declared
    ]
    if problems:
        raise InvalidRunbook(problems)
    values = {**runbook.param_defaults(), **file_values}
    for name, text in cli_values.items():
        values[name] = _coerce(name, text, declared[name])
    supplied = bool(file_values or cli_values)
    missing = [n for n, s in declared.items() if n not in values and not (isinstance(s, dict) and "default" in s)]
    if missing:
        raise InvalidRunbook([Problem(str(runbook.path), None, None, None, f"missing required param '{m}'") for m in missing])
    if supplied:
        _check_types(runbook, values)
    return values


def _check_types(runbook: Runbook, values: dict[str, Any]) -> None:
    from jsonschema import Draft202012Validator

    schema = {"type": "object", "properties": runbook.params}
    errors = list(Draft202012Validator(schema).iter_errors(values))
    if errors:
        raise InvalidRunbook([
            Problem("--param", None, None, None,
                    f"param '{'/'.join(map(str, e.absolute_path)) or '?'}': {e.message}") for e in errors
        ])
