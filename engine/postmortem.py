"""`runbook evidence postmortem`: seed 004's post-mortem template (§6) filled from a verified bundle.

Facts come from the event log (times, timeline, actions, approvals); the
analysis and the lessons are left for people to write.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from engine.evidence import EVENTS, manifest_fields, scan_chain, verify_bundle
from engine.report import account
from engine.vocabulary import StepStatus

TO_WRITE = "_(to be written)_"


def _time(ts: str | None) -> str:
    return ts[11:19] if ts and len(ts) >= 19 else "-"


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return "not ended"
    try:
        seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                   - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _cell(text: Any) -> str:
    return str(text).replace("\n", " ").replace("|", "\\|")


def _timeline(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The events a post-mortem reader needs, in order: start, failures, actions, approvals, rollbacks, end."""
    kinds = {e["step"]: (e["data"] or {}).get("kind") for e in events if e["type"] == "step_started"}
    rows: list[tuple[str, str]] = []
    for event in events:
        data, step, kind = event.get("data") or {}, event.get("step"), event["type"]
        if kind == "run_started":
            trigger = f"; trigger {data.get('trigger')}" if data.get("trigger") else ""
            rows.append((event["ts"], f"Response began: runbook {data.get('runbook')} started by {data.get('operator')} "
                                      f"({data.get('mode')}){trigger}"))
        elif kind == "kill_switch":
            rows.append((event["ts"], f"Kill switch engaged ({data.get('path')}); step {step} held"))
        elif kind == "step_finished" and data.get("final"):
            status = data.get("status")
            if data.get("rollback"):
                rows.append((event["ts"], f"Rollback `{step}`: {status}"))
            elif status == StepStatus.FAILED:
                rows.append((event["ts"], f"Step `{step}` failed: {data.get('error')}"))
            elif kinds.get(step) == "action" and status in (StepStatus.OK, StepStatus.PLANNED):
                rows.append((event["ts"], f"Action `{step}` {'done' if status == 'ok' else 'planned (dry-run)'}"))
        elif kind == "approval_requested":
            rows.append((event["ts"], f"Approval requested at `{step}`: {data.get('prompt')}"))
        elif kind == "approval":
            rows.append((event["ts"], f"Approval `{step}` {data.get('decision')} by {data.get('by')}"))
        elif kind == "approval_refused":
            rows.append((event["ts"], f"Approval `{step}` refused for {data.get('by')}: {data.get('reason')}"))
        elif kind in ("run_paused", "run_resumed", "cancelled"):
            detail = data.get("reason") or data.get("by") or ""
            rows.append((event["ts"], f"Run {kind.removeprefix('run_')}{': ' + str(detail) if detail else ''}"))
        elif kind == "run_finished":
            rows.append((event["ts"], f"Run ended {data.get('outcome')} (exit {data.get('exit_code')})"
                                      f"{': ' + str(data.get('message')) if data.get('message') else ''}"))
    return rows


def render(directory: Path) -> str:
    """The filled post-mortem (Markdown) of the bundle in `directory`; StateCorrupt if the bundle is not intact."""
    summary = verify_bundle(directory)
    chain = scan_chain(directory / EVENTS)
    fields = manifest_fields(chain)
    model = account(fields, chain.events, summary["signature"]["keyid"])
    done = [c for c in model["changed"] if c["status"] == StepStatus.OK]
    impact = "; ".join(f"{c['step']}: {c['what']}" for c in done) or "no change made by the runbook"
    lines = [f"# Post-Mortem: {fields['runbook']} (run {fields['run_id']})", "",
             f"Filled from the evidence bundle `{directory.name}` (verified intact: {summary['events']} records, "
             f"last hash `{summary['last_event_hash']}`). Facts come from the event log; sections marked "
             f"{TO_WRITE} are for the people who handled the incident.", "",
             "### Incident Details", "", "| Field | Value |", "|-------|-------|",
             f"| Date/Time | {fields.get('started_at')} (UTC) |",
             f"| Duration | {_duration(fields.get('started_at'), fields.get('ended_at'))} |",
             f"| Severity | {TO_WRITE} (run outcome: {fields.get('outcome')}, exit {fields.get('exit_code')}) |",
             f"| Impact | {_cell(impact)} |",
             f"| Root Cause | {TO_WRITE} |", "",
             "### Timeline", "", "| Time (UTC) | Event |", "|------------|-------|"]
    lines += [f"| {_time(ts)} | {_cell(text)} |" for ts, text in _timeline(chain.events)]
    lines += ["", "### Analysis", "", "**What happened?**", "",
              f"The runbook `{fields['runbook']}` ended {fields.get('outcome')}: {_cell(model['why'] or '-')}.", ""]
    lines += [f"- step `{f['step']}` failed: {_cell(f['error'])}" for f in model["failed"]]
    lines += [f"- rolled back `{r['step']}`: {r['status']}" for r in model["rollbacks"]]
    lines += ["", TO_WRITE, "", "**Why did it happen?**", "", TO_WRITE, "",
              "**Why wasn't it caught earlier?**", "", TO_WRITE, "",
              "### Actions", "", "| Action | Owner | Deadline | Status |", "|--------|-------|----------|--------|"]
    for change in model["changed"]:
        lines.append(f"| {_cell(change['step'])}: {_cell(change['what'])} | {fields.get('operator')} | "
                     f"{_time(change['ts'])} | {change['status']} |")
    for approval in model["approvals"]:
        if approval["type"] == "approval":
            lines.append(f"| approval `{approval['step']}`: {_cell(approval['prompt'] or '')} | {approval['by']} | "
                         f"{_time(approval['ts'])} | {approval['decision']} |")
    lines += ["| | | | |", "", "### Lessons Learned", "", "1. ", "2. ", "3. ", ""]
    return "\n".join(lines)
