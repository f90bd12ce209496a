"""report.md: the human-readable account of a bundle, built from its event log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.evidence import EVENTS, REPORT, read_events

_MARK = {"ok": "ok", "failed": "FAILED", "skipped": "skipped", "planned": "planned"}


def _value(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False) if not isinstance(value, str) else value
    text = text.replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_markdown(directory: Path, fields: dict[str, Any]) -> str:
    """The Markdown report of the bundle in `directory`."""
    events = read_events(directory / EVENTS)
    lines = [
        f"# Run {fields.get('run_id')}: {fields.get('runbook')}",
        "",
        "| | |",
        "|---|---|",
    ]
    for key in ("outcome", "exit_code", "status", "mode", "operator", "host", "started_at", "ended_at",
                "runbook_path", "runbook_version", "runbook_sha256", "engine_version", "parent_run_id"):
        lines.append(f"| {key} | {_value(fields.get(key))} |")
    lines.append(f"| params | {_value(fields.get('params'))} |")
    if fields.get("trigger"):
        lines.append(f"| trigger | {_value(fields.get('trigger'))} |")
    lines += ["", "## Timeline", "", "| seq | time (UTC) | event | step | detail |", "|---|---|---|---|---|"]
    for event in events:
        lines.append(f"| {event['seq']} | {event['ts']} | {event['type']} | {event.get('step') or ''} | {_detail(event)} |")
    kinds = {e["step"]: e["data"].get("kind") for e in events if e["type"] == "step_started"}
    observed = [e for e in events if e["type"] == "step_finished" and e["data"].get("final")
                and kinds.get(e["step"]) in ("check", "wait")]
    if observed:
        lines += ["", "## Checks and what they observed", "", "| step | status | observed |", "|---|---|---|"]
        for event in observed:
            data = event["data"]
            result = data.get("result")
            shown = {k: v for k, v in result.items() if k not in ("stdout", "stderr")} if isinstance(result, dict) else result
            note = f"{data.get('error')}; " if data.get("error") else ""
            lines.append(f"| {event['step']} | {_MARK.get(str(data.get('status')), data.get('status'))} | {_value(note + _value(shown, 400), 400)} |")
    actions = [e for e in events if e["type"] == "step_finished" and e["data"].get("final") and kinds.get(e["step"]) == "action"]
    if actions:
        lines += ["", "## Actions", "", "| step | status | what was done or planned |", "|---|---|---|"]
        for event in actions:
            data = event["data"]
            result = data.get("result") if isinstance(data.get("result"), dict) else {}
            what = (result.get("plan") or {}).get("summary") if result.get("planned") else _value(
                {k: v for k, v in result.items() if k not in ("stdout", "stderr")}, 300)
            lines.append(f"| {event['step']} | {_MARK.get(str(data.get('status')), data.get('status'))} | {_value(what or data.get('error') or '', 300)} |")
    decisions = [e for e in events if e["type"] == "decision"]
    if decisions:
        lines += ["", "## Decisions", ""]
        for event in decisions:
            data = event["data"]
            lines.append(f"- **{event['step']}** took `{data.get('taken')}` -> `{data.get('goto')}`")
            for branch in data.get("branches", []):
                lines.append(f"  - `{branch.get('if')}` = {branch.get('value', branch.get('error'))}; read {_value(branch.get('read', {}))}")
    approvals = [e for e in events if e["type"] in ("approval_requested", "approval", "approval_refused")]
    if approvals:
        lines += ["", "## Approvals", ""]
        for event in approvals:
            lines.append(f"- {event['ts']} {event['type']} **{event['step']}**: {_value(event['data'])}")
    artifacts = [e for e in events if e["type"] == "artifact"]
    if artifacts:
        lines += ["", "## Artifacts", "", "| file | sha256 | bytes |", "|---|---|---|"]
        for event in artifacts:
            data = event["data"]
            lines.append(f"| {data['path']} | `{data['sha256']}` | {data['bytes']} |")
    last = events[-1]["hash"] if events else ""
    lines += ["", "## How to verify", "",
              f"The event log has {len(events)} hash-chained records; the last hash is `{last}`.",
              "Every file's sha256 is in `manifest.json`. Check the whole bundle with:", "",
              f"    runbook evidence verify {directory}", ""]
    return "\n".join(lines)


def _detail(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    kind = event["type"]
    if kind == "step_finished":
        status = _MARK.get(str(data.get("status")), str(data.get("status")))
        extra = f" - {data['error']}" if data.get("error") else ""
        plan = (data.get("result") or {}).get("plan") if isinstance(data.get("result"), dict) else None
        if plan:
            extra += f" - would: {plan.get('summary')}"
        return _value(f"{status}{extra}")
    if kind == "step_started":
        return _value({k: v for k, v in data.items() if k in ("kind", "plugin", "attempt", "item", "token") and v is not None})
    if kind == "run_finished":
        return _value(f"{data.get('outcome')} (exit {data.get('exit_code')}) {data.get('message') or ''}")
    return _value(data)


def write_report(directory: Path, fields: dict[str, Any]) -> Path:
    """Write report.md into the bundle."""
    path = directory / REPORT
    path.write_text(render_markdown(directory, fields), encoding="utf-8")
    return path


def render_html(directory: Path, fields: dict[str, Any]) -> str:
    """The report as a standalone HTML page (Markdown shown preformatted, escaped)."""
    import html

    body = html.escape(render_markdown(directory, fields))
    title = html.escape(f"Run {fields.get('run_id')}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body><pre>{body}</pre></body></html>\n"
