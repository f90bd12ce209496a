"""Config checks: `config.validate` (JSON Schema, every error) and `config.hash` (canonical sha256)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import InvalidRunbook, PluginError
from engine.plugins import StepContext, load_yaml
from transports.util import read_text


def load_config(path: Path) -> Any:
    """Parse a JSON (.json) or YAML file (YAML 1.2 meaning, duplicate keys rejected);
    PluginError with path:line:col when ill-formed."""
    text = read_text(path)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise PluginError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    try:
        return load_yaml(text, str(path))
    except InvalidRunbook as e:
        raise PluginError("; ".join(str(p) for p in e.problems)) from None


def json_path(parts: Any) -> str:
    """A location like `$.limits.max_lot` or `$.symbols[2]` ('$' is the document root)."""
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


PATH_PARAM = {
    "type": "string",
    "minLength": 1,
    "description": "YAML or JSON file (by extension .json).",
}


class ConfigValidate:
    """Validate a YAML/JSON config against a JSON Schema; lists every error, `ok` = valid."""

    name: ClassVar[str] = "config.validate"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["config", "schema"],
        "properties": {
            "config": PATH_PARAM,
            "schema": {
                **PATH_PARAM,
                "description": "JSON Schema file (JSON or YAML); draft from $schema, default 2020-12.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: config, schema, valid, errors [{path, message, validator}], ok."""
        import jsonschema

        config_path, schema_path = ctx.resolve(params["config"]), ctx.resolve(params["schema"])
        schema = load_config(schema_path)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise PluginError(
                f"{schema_path}: invalid JSON Schema at {json_path(e.absolute_path)}: {e.message}"
            ) from None
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        found = sorted(
            validator.iter_errors(load_config(config_path)),
            key=lambda e: [str(p) for p in e.absolute_path],
        )
        errors = [
            {
                "path": json_path(e.absolute_path),
                "message": e.message,
                "validator": str(e.validator),
            }
            for e in found
        ]
        return {
            "config": str(config_path),
            "schema": str(schema_path),
            "valid": not errors,
            "errors": errors,
            "ok": not errors,
        }


def canonical_hash(data: Any) -> str:
    """sha256 of the canonical JSON form: sorted keys, no spaces, UTF-8, non-ASCII kept."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ConfigHash:
    """sha256 of a config's canonical form: equal for equivalent YAML and JSON, whatever the layout."""

    name: ClassVar[str] = "config.hash"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["config"],
        "properties": {"config": PATH_PARAM},
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: path, config_hash, algorithm ("sha256")."""
        path = ctx.resolve(params["config"])
        try:
            digest = canonical_hash(load_config(path))
        except (TypeError, ValueError) as e:
            raise PluginError(f"{path}: cannot be put in canonical JSON form: {e}") from None
        return {"path": str(path), "config_hash": digest, "algorithm": "sha256"}
