"""The JSON Schema of runbook files (also printed by `runbook schema` for editors)."""

from __future__ import annotations

from typing import Any

from engine.durations import DURATION_EXAMPLES, DURATION_PATTERN
from engine.vocabulary import END_OUTCOMES

DURATION = {"type": "string", "pattern": DURATION_PATTERN, "description": DURATION_EXAMPLES}
DURATION_OR_TEMPLATE = {"type": "string", "pattern": rf"^({DURATION_PATTERN[1:-1]}|.*\{{\{{.*\}}\}}.*)$",
                        "description": f"{DURATION_EXAMPLES}, or a template giving one (e.g. \"{{{{ params.timeout }}}}\")"}
STEP_ID = {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$", "description": "snake_case step id"}
OUTCOME = {"enum": list(END_OUTCOMES)}
EXPRESSION = {"type": ["string", "boolean"], "description": "a bare Jinja2 expression (no braces)"}
KIND_KEYS = ("check", "action", "decide", "approve", "wait", "call", "end")

STEP_FIELDS: dict[str, Any] = {
    "id": STEP_ID,
    "title": {"type": "string"},
    "when": EXPRESSION,
    "with": {"description": "plugin params or call params; templated"},
    "expect": EXPRESSION,
    "on_fail": STEP_ID,
    "goto": STEP_ID,
    "timeout": DURATION_OR_TEMPLATE,
    "retry": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "attempts": {"type": "integer", "minimum": 1, "maximum": 100},
            "delay": DURATION,
            "backoff": {"type": "number", "minimum": 1},
        },
    },
    "rollback": STEP_ID,
    "for_each": {"type": "string", "description": "expression giving a list; each item bound as `item`"},
    "fail": OUTCOME,
    "evidence": {"type": "array", "items": {"type": "string"}},
    "mutates": {"type": "boolean"},
    "safe_in_halt": {"type": "boolean", "description": "may run while the kill switch is engaged (risk-off)"},
    "message": {"type": "string"},
    "check": {"type": "string", "description": "read-only plugin name"},
    "action": {"type": "string", "description": "mutating plugin name"},
    "decide": {
        "type": "array",
        "minItems": 1,
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["if", "goto"],
                    "additionalProperties": False,
                    "properties": {"if": EXPRESSION, "goto": STEP_ID},
                },
                {
                    "type": "object",
                    "required": ["else"],
                    "additionalProperties": False,
                    "properties": {"else": STEP_ID},
                },
            ]
        },
    },
    "approve": {
        "type": "object",
        "required": ["prompt"],
        "additionalProperties": False,
        "properties": {
            "prompt": {"type": "string"},
            "approvers": {"type": "array", "items": {"type": "string"}},
            "four_eyes": {"type": "boolean"},
            "binds": {"type": "array", "items": {"type": "string"}},
        },
    },
    "wait": {
        "type": "object",
        "required": ["check", "until"],
        "additionalProperties": False,
        "properties": {
            "check": {"type": "string"},
            "with": {"type": "object"},
            "until": EXPRESSION,
            "every": DURATION_OR_TEMPLATE,
            "timeout": DURATION_OR_TEMPLATE,
        },
    },
    "call": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*$"},
    "end": OUTCOME,
}

RUNBOOK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://runbook-engine.dev/schema/runbook.json",
    "title": "runbook-engine runbook file",
    "type": "object",
    "required": ["runbook", "title", "version", "steps"],
    "additionalProperties": False,
    "properties": {
        "runbook": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9-]*$", "description": "kebab-case name"},
        "title": {"type": "string", "minLength": 1},
        "version": {"type": "integer", "minimum": 1},
        "description": {"type": "string"},
        "source": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "params": {
            "type": "object",
            "description": "JSON Schema `properties` of the run params",
            "additionalProperties": {"type": "object"},
        },
        "env": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
        "lock": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+$"},
                "ttl": DURATION,
                "wait": DURATION,
                "on_held": {"enum": ["fail", "skip"]},
            },
        },
        "idempotency_key": {"type": "string"},
        "default_fail": OUTCOME,
        "steps": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id"],
                "additionalProperties": False,
                "properties": STEP_FIELDS,
            },
        },
    },
}


TEMPLATE = {"type": "string", "pattern": r"\{\{[\s\S]*\}\}", "description": "a template giving the value"}


def runbook_schema(registry: Any = None) -> dict[str, Any]:
    """The published JSON Schema of runbook files; with a plugin registry, the editor's schema (`runbook schema`).

    For editors (yaml-language-server and the like) it also knows: the plugin names of `check:`, `action:`
    and `wait.check` (completion), each plugin's `with:` schema (an if/then per plugin; a templated value
    is accepted wherever a value is), and that a step has exactly one kind (oneOf).
    """
    if registry is None:
        return RUNBOOK_SCHEMA
    import copy

    schema = copy.deepcopy(RUNBOOK_SCHEMA)
    step = schema["properties"]["steps"]["items"]
    fields = step["properties"]
    checks, actions = registry.names("check"), registry.names("action")
    with_of: dict[tuple[str, str], Any] = {}
    for kind, names in (("check", checks), ("action", actions)):
        for name in names:
            try:
                plugin = registry.get(kind, name)
            except Exception:  # noqa: BLE001 - a plugin that does not load: its name only (validate says why)
                continue
            params = getattr(plugin, "params_schema", None)
            if isinstance(params, dict):
                with_of[(kind, name)] = templated(copy.deepcopy(params))
    if checks:
        fields["check"] = {**fields["check"], "enum": checks}
        fields["wait"]["properties"]["check"] = {**fields["wait"]["properties"]["check"], "enum": checks}
    if actions:
        fields["action"] = {**fields["action"], "enum": actions}
    step["oneOf"] = [{"required": [kind], "title": f"a {kind} step"} for kind in KIND_KEYS]
    step["allOf"] = [
        {"if": {"required": [kind], "properties": {kind: {"const": name}}},
         "then": {"properties": {"with": params}}}
        for (kind, name), params in sorted(with_of.items())
    ]
    fields["wait"]["allOf"] = [
        {"if": {"required": ["check"], "properties": {"check": {"const": name}}},
         "then": {"properties": {"with": params}}}
        for (kind, name), params in sorted(with_of.items()) if kind == "check"
    ]
    return schema


def templated(schema: Any) -> Any:
    """(In place) a plugin's params schema where every property value may also be a template (`"{{ params.x }}"`)."""
    if not isinstance(schema, dict):
        return schema
    for key in ("properties", "patternProperties"):
        if isinstance(schema.get(key), dict):
            schema[key] = {name: {"anyOf": [templated(sub), TEMPLATE]} for name, sub in schema[key].items()}
    if isinstance(schema.get("items"), dict):
        schema["items"] = {"anyOf": [templated(schema["items"]), TEMPLATE]}
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = {"anyOf": [templated(schema["additionalProperties"]), TEMPLATE]}
    return schema
