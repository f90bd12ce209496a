"""`notify` action: tell humans (console, a JSON-lines file, a webhook)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import Plan, StepContext
from transports.http import URL, fetch, safe_url
from transports.util import effective_timeout, utc_iso

CHANNELS = ["console", "jsonl", "webhook"]


def _channels(params: Mapping[str, Any]) -> list[str]:
    return list(params.get("channels") or [params.get("channel", "console")])


class Notify:
    """Deliver a message on every channel; fails (with per-channel status) if any delivery failed."""

    name: ClassVar[str] = "notify"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["message"],
        "properties": {
            "message": {"type": "string", "description": "The text to deliver."},
            "channel": {"enum": CHANNELS, "description": "One channel. Default console."},
            "channels": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"enum": CHANNELS},
                "description": "Several channels (instead of `channel`).",
            },
            "severity": {"enum": ["info", "warning", "critical"], "description": "Default info."},
            "path": {"type": "string", "description": "JSON-lines file for the jsonl channel."},
            "url": {
                **URL,
                "description": "Webhook URL; receives a JSON POST {text, run_id, step, token, severity}.",
            },
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "description": "Webhook timeout, seconds. Default 10.",
            },
        },
        "not": {"required": ["channel", "channels"]},
    }

    def _check(self, params: Mapping[str, Any]) -> list[str]:
        channels = _channels(params)
        if "jsonl" in channels and "path" not in params:
            raise PluginError("notify: channel jsonl needs `path`")
        if "webhook" in channels and "url" not in params:
            raise PluginError("notify: channel webhook needs `url`")
        return channels

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: channels {name: {ok, error?, ...}}, ok (all delivered)."""
        severity = params.get("severity", "info")
        message = params["message"]
        record = {
            "ts": utc_iso(time.time()),
            "run_id": ctx.run_id,
            "step": ctx.step_id,
            "token": ctx.idempotency_token,
            "severity": severity,
        }
        status: dict[str, dict[str, Any]] = {}
        for channel in self._check(params):
            try:
                if channel == "console":
                    print(
                        f"[{severity.upper()}] {ctx.run_id} {ctx.step_id}: {message}",
                        file=sys.stderr,
                        flush=True,
                    )
                    status[channel] = {"ok": True}
                elif channel == "jsonl":
                    path = ctx.resolve(params["path"])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    line = json.dumps({**record, "message": message}, ensure_ascii=False) + "\n"
                    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    try:
                        os.write(fd, line.encode())
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                    status[channel] = {"ok": True, "path": str(path)}
                else:
                    payload = {
                        "text": message,
                        "run_id": ctx.run_id,
                        "step": ctx.step_id,
                        "token": ctx.idempotency_token,
                        "severity": severity,
                    }
                    response = fetch(
                        "POST",
                        params["url"],
                        headers={"Content-Type": "application/json"},
                        body=json.dumps(payload).encode(),
                        timeout=effective_timeout(params, ctx, 10.0),
                        follow_redirects=False,
                        expect_json=False,
                    )
                    status[channel] = {
                        "ok": 200 <= response["status"] < 300,
                        "status": response["status"],
                    }
                    if not status[channel]["ok"]:
                        status[channel]["error"] = f"HTTP {response['status']}"
            except (PluginError, OSError) as e:
                status[channel] = {"ok": False, "error": str(e)}
        result = {"channels": status, "ok": all(s["ok"] for s in status.values())}
        failed = [f"{c}: {s['error']}" for c, s in status.items() if not s["ok"]]
        if failed:
            raise PluginError(f"notify failed on {'; '.join(failed)}", result=result)
        return result

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The channels, their targets and the message."""
        channels = _channels(params)
        details: dict[str, Any] = {
            "channels": channels,
            "message": params["message"],
            "severity": params.get("severity", "info"),
        }
        if "jsonl" in channels:
            details["path"] = str(ctx.resolve(params.get("path", "")))
        if "webhook" in channels:
            details["url"] = safe_url(params.get("url", ""))
        return Plan(
            summary=f"notify {','.join(channels)}: {params['message'][:100]}", details=details
        )

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Without webhook: whether the jsonl file holds a record with this step's token; else None."""
        channels = _channels(params)
        if "webhook" in channels or "jsonl" not in channels or "path" not in params:
            return None
        try:
            with open(ctx.resolve(params["path"]), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    try:
                        if json.loads(line).get("token") == ctx.idempotency_token:
                            return True
                    except (ValueError, AttributeError):
                        continue
        except FileNotFoundError:
            return False
        return False
