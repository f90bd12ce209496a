"""`env.present` check: which environment variables are set, never their values."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

from engine.plugins import StepContext


class EnvPresent:
    """Whether each named variable is set and non-empty; reports presence and length only."""

    name: ClassVar[str] = "env.present"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["names"],
        "properties": {
            "names": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                "description": "Environment variable names to look for.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: vars {NAME: {present, length}}, missing (absent or empty), ok."""
        found = {n: os.environ.get(n) for n in params["names"]}
        report = {n: {"present": v is not None, "length": len(v or "")} for n, v in found.items()}
        missing = [n for n, v in found.items() if not v]
        return {"vars": report, "missing": missing, "ok": not missing}
