"""`noop`: does nothing and passes; for measuring the engine and for placeholder gates."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from engine.plugins import StepContext


class Noop:
    """Returns its `value` param (default null) as `result.value`."""

    name: ClassVar[str] = "noop"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"value": {"description": "echoed back as result.value"}},
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Echo `value`."""
        return {"value": params.get("value"), "ok": True}
