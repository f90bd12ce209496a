"""Run params: `--param k=v` and `--params-file`, coerced and checked against `params:`."""

from __future__ import annotations

import json
import os
from typing import Any

from engine.errors import InvalidRunbook, Problem, UsageError
from engine.fastcheck import proves_valid
from engine.loader import Document, load_file
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
        if not _is_text(pair):
            shown = repr(os.fsencode(pair))[2:-1]
            raise InvalidRunbook([Problem("--param", None, None, None,
                f"{shown}: not valid UTF-8 (expected NAME=VALUE in UTF-8 text)")])
        out[key.strip()] = value
    return out


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class FileParams(dict[str, Any]):
    """The values of a params file, and the file they came from (for located messages)."""

    doc: Document | None = None


def load_params_file(path: str) -> FileParams:
    """A YAML or JSON params file -> mapping (remembering where each value was)."""
    doc = load_file(path)
    values = FileParams(doc.data if isinstance(doc.data, dict) else {})
    values.doc = doc
    if doc.data is not None and not isinstance(doc.data, dict):
        raise InvalidRunbook([doc.problem((), "params file must be a mapping of NAME: VALUE")])
    return values


def _file_problem(file_values: dict[str, Any], key: tuple[str | int, ...], message: str, at_key: bool = False) -> Problem:
    doc = getattr(file_values, "doc", None)
    if doc is None:
        return Problem("--params-file", None, None, None, message)
    line, col = doc.positions.get(("__key__",) + key) or doc.where(key) if at_key else doc.where(key)
    return Problem(doc.path, line, col, None, message)


MAX_JSON_DEPTH = 100


def decode_json_argument(flag: str, text: str) -> Any:
    """A JSON command-line value (such as `--trigger`); UsageError when it is not JSON or nests too deeply."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: not valid JSON ({exc})") from None
    except RecursionError:
        value = None
        depth = MAX_JSON_DEPTH + 1
    else:
        depth = _json_depth(value)
    if depth > MAX_JSON_DEPTH:
        raise UsageError(f"{flag}: JSON nested more than {MAX_JSON_DEPTH} levels deep (expected a shallower document)")
    return value


def _json_depth(value: Any) -> int:
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def _coerce(name: str, text: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    for k in kinds:
        try:
            if k in ("integer", "number") and not text.strip().isascii():
                continue
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
                try:
                    value = decode_json_argument(f"--param {name}", text)
                except UsageError:
                    continue
                if not isinstance(value, list if k == "array" else dict):
                    continue
                return value
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
    expected = f"expected one of: {', '.join(sorted(declared)) or 'none declared'}"
    problems = [_file_problem(file_values, (k,), f"unknown param '{k}' of runbook {runbook.name} ({expected})", True)
                for k in file_values if k not in declared]
    problems += [Problem("--param", None, None, None, f"unknown param '{k}' of runbook {runbook.name} ({expected})")
                 for k in cli_values if k not in declared]
    if problems:
        raise InvalidRunbook(problems)
    values = {**runbook.param_defaults(), **file_values}
    for name, text in cli_values.items():
        values[name] = _coerce(name, text, declared[name])
    supplied = bool(file_values or cli_values)
    missing = [n for n, s in declared.items() if n not in values and not (isinstance(s, dict) and "default" in s)]
    if missing:
        raise InvalidRunbook([_declaration_problem(runbook, m, f"missing required param '{m}' (expected --param {m}=VALUE "
                                                               f"or a value in --params-file)") for m in missing])
    if supplied:
        _check_types(runbook, values, file_values, cli_values)
    return values


def _declaration_problem(runbook: Runbook, name: str, message: str) -> Problem:
    """A problem located where the runbook declares param `name`."""
    try:
        doc = load_file(runbook.path)
    except InvalidRunbook:
        return Problem(str(runbook.path), None, None, None, message)
    return doc.problem(("params", name), message)


def _check_types(runbook: Runbook, values: dict[str, Any], file_values: dict[str, Any],
                 cli_values: dict[str, str]) -> None:
    schema = {"type": "object", "properties": runbook.params}
    if proves_valid(json.dumps(schema, sort_keys=True, default=repr), lambda: schema, values):
        return
    from jsonschema import Draft202012Validator

    problems = []
    for error in Draft202012Validator(schema).iter_errors(values):
        path = tuple(error.absolute_path)
        name = str(path[0]) if path else "?"
        message = f"param '{'/'.join(map(str, path)) or '?'}': {_short(error.message)}"
        if name in cli_values:
            problems.append(Problem("--param", None, None, None, message))
        elif name not in file_values:
            problems.append(_declaration_problem(runbook, name, message))
        else:
            problems.append(_file_problem(file_values, path, message))
    if problems:
        raise InvalidRunbook(problems)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
