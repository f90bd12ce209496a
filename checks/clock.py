"""`time.offset` check: local clock against an HTTP Date header, a JSON field or a command."""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import StepContext
from transports.http import URL, fetch
from transports.process import hidden_env, run_command
from transports.util import effective_timeout


def to_epoch_ms(value: Any) -> float:
    """Epoch milliseconds from epoch ms, epoch seconds (values below 1e11) or an ISO 8601 string."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise PluginError(f"not a timestamp: {text[:80]!r}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp() * 1000
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PluginError(f"not a timestamp: {value!r}")
    return float(value) * (1000 if value < 1e11 else 1)


def _field(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            raise PluginError(f"field {dotted!r} not in the JSON response")
        data = data[part]
    return data


class TimeOffset:
    """Remote clock minus local clock (ms), corrected by half the round trip; `ok` = within max."""

    name: ClassVar[str] = "time.offset"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "url": {
                **URL,
                "description": "Read the HTTP Date header of a HEAD request (1 s resolution).",
            },
            "json_url": {
                **URL,
                "description": "GET this URL and read `json_field` (epoch ms/s or ISO).",
            },
            "json_field": {"type": "string", "description": "Dotted field, e.g. serverTime."},
            "argv": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "string"},
                "description": "A command printing epoch ms/s or an ISO timestamp.",
            },
            "max_offset_ms": {"type": "number", "minimum": 0, "description": "Default 1000."},
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Seconds. Default 5.",
            },
        },
        "oneOf": [
            {"required": ["url"]},
            {"required": ["json_url", "json_field"]},
            {"required": ["argv"]},
        ],
        "if": {"required": ["json_field"]},  # draft-7 keywords: a compiled check proves valid steps
        "then": {"required": ["json_url"]},
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: source, local_ms, remote_ms, offset_ms, rtt_ms, resolution_ms, max_offset_ms, ok."""
        timeout = effective_timeout(params, ctx, 5.0)
        resolution = 1.0
        t0 = time.time()
        if "url" in params:
            source = params["url"]
            response = fetch("HEAD", source, timeout=timeout, expect_json=False)
            t1 = time.time()
            date = response["headers"].get("date")
            if not date:
                raise PluginError(f"HEAD {source}: no Date header", result=response)
            try:
                # Date is truncated to the second: the true time is in [Date, Date + 1 s).
                remote = parsedate_to_datetime(date).timestamp() * 1000 + 500
            except (TypeError, ValueError):
                raise PluginError(f"HEAD {source}: bad Date header {date!r}") from None
            resolution = 1000.0
        elif "argv" in params:
            source = " ".join(params["argv"])
            out = run_command(params["argv"], timeout=timeout, unset=hidden_env(ctx))
            t1 = time.time()
            if out["exit_code"] != 0:
                raise PluginError(f"{params['argv'][0]} exited {out['exit_code']}", result=out)
            remote = to_epoch_ms(out["stdout"])
        else:
            source = params["json_url"]
            response = fetch("GET", source, timeout=timeout, expect_json=True)
            t1 = time.time()
            remote = to_epoch_ms(_field(response["json"], params["json_field"]))
        local = (t0 + t1) / 2 * 1000
        offset = remote - local
        max_offset = params.get("max_offset_ms", 1000)
        return {
            "source": source,
            "local_ms": round(local),
            "remote_ms": round(remote),
            "offset_ms": round(offset, 1),
            "rtt_ms": round((t1 - t0) * 1000, 3),
            "resolution_ms": resolution,
            "max_offset_ms": max_offset,
            "ok": abs(offset) <= max_offset,
        }
