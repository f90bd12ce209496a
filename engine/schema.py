"""The JSON Schema of runbook files (also printed by `runbook schema` for editors)."""

from __future__ import annotations

from typing import Any

from engine.model import DURATION_EXAMPLES, DURATION_PATTERN, END_OUTCOMES

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


def runbook_schema() -> dict[str, Any]:
    """The published JSON Schema of runbook files."""
    return RUNBOOK_SCHEMA
