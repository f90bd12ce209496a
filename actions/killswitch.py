"""`killswitch.engage` / `killswitch.release`: the configured kill-switch file (SPEC 4, Kill switch).

Engaging writes a JSON payload (reason, actor, run, time) atomically; releasing
removes the file. Validation requires an approve step before every release.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from engine.plugins import Plan, StepContext
from transports.util import atomic_write_text


def _kill_switch_path(params: Mapping[str, Any], ctx: StepContext) -> Path:
    configured = params.get("path") or ctx.settings.get("kill_switch") or "KILL_SWITCH"
    return ctx.resolve(configured)


_SCHEMA: Mapping[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "reason": {"type": "string", "description": "why (written into the kill-switch file)"},
        "path": {"type": "string", "description": "kill-switch file (default: the configured one)"},
    },
}


class Engage:
    """Create the kill-switch file: from now on only `safe_in_halt` actions run."""

    name: ClassVar[str] = "killswitch.engage"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = {**_SCHEMA, "required": ["reason"]}

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Write the payload atomically (temp file, fsync, rename)."""
        path = _kill_switch_path(params, ctx)
        payload = {"engaged": True, "reason": params["reason"], "run_id": ctx.run_id, "step": ctx.step_id,
                   "host": socket.gethostname(), "ts_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        atomic_write_text(path, json.dumps(payload, indent=2))
        return {"path": str(path), "engaged": True, "payload": payload}

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """Name the file that would be created."""
        path = _kill_switch_path(params, ctx)
        return Plan(f"engage the kill switch: create {path}", {"path": str(path), "reason": params.get("reason"),
                                                              "already_engaged": path.exists()})

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Engaged means the file exists."""
        return _kill_switch_path(params, ctx).exists()


class Release:
    """Remove the kill-switch file (the runbook must have approved this first)."""

    name: ClassVar[str] = "killswitch.release"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[Mapping[str, Any]] = _SCHEMA

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Remove the file; report what it said."""
        path = _kill_switch_path(params, ctx)
        previous = path.read_text(encoding="utf-8", errors="replace") if path.exists() else None
        if previous is not None:
            path.unlink()
        return {"path": str(path), "released": previous is not None, "previous": previous}

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """Name the file that would be removed."""
        path = _kill_switch_path(params, ctx)
        return Plan(f"release the kill switch: remove {path}", {"path": str(path), "engaged": path.exists()})

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Released means the file is gone."""
        return not _kill_switch_path(params, ctx).exists()
