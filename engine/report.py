"""report.md and report.html: the human-readable account of a bundle, built from its event log alone.

Both are pure functions of the event log, the chain-derived manifest fields and
the signer's key id, so `evidence verify` re-renders them and notices an edit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.evidence import EVENTS, read_events

_MARK = {"ok": "ok", "failed": "FAILED", "skipped": "skipped", "planned": "planned"}
_HIDDEN = ("stdout", "stderr")


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)


def _value(value: Any, limit: int = 160) -> str:
    text = _json(value).replace("\n", " ").replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(result: Any) -> Any:
    return {k: v for k, v in result.items() if k not in _HIDDEN} if isinstance(result, dict) else result


def _facts(result: Any, limit: int = 300) -> str:
    """A result as `key=value` pairs (stdout and stderr left to the artifacts), for one summary line."""
    if not isinstance(result, dict):
        return _value(result, limit)
    return _value(", ".join(f"{k}={_json(v)}" for k, v in sorted(result.items()) if k not in _HIDDEN), limit)


def account(fields: dict[str, Any], events: list[dict[str, Any]], signer: str | None) -> dict[str, Any]:
    """What a reader needs, in reading order: the summary facts, then every detail (one model, two renderings)."""
    kinds = {e["step"]: (e["data"] or {}).get("kind") for e in events if e["type"] == "step_started"}
    finals = [e for e in events if e["type"] == "step_finished" and e["data"].get("final")]
    finished = next((e for e in reversed(events) if e["type"] == "run_finished"), None)
    failed = [{"step": e["step"], "error": e["data"].get("error") or "failed", "ts": e["ts"]}
              for e in finals if e["data"].get("status") == "failed" and not e["data"].get("rollback")]
    ended_at = next((e["step"] for e in reversed(finals) if e["data"].get("outcome")), None)
    changed, diffs, rollbacks, checks = [], [], [], []
    for event in finals:
        data, step = event["data"], event["step"]
        result = data.get("result") if isinstance(data.get("result"), dict) else {}
        plan = result.get("plan") if isinstance(result.get("plan"), dict) else None
        diff = (plan or {}).get("diff") or result.get("diff")
        if isinstance(diff, str) and diff:
            diffs.append({"step": step, "path": (plan or result).get("path"), "diff": diff})
        if data.get("rollback"):
            rollbacks.append({"step": step, "status": data.get("status"), "error": data.get("error"), "ts": event["ts"],
                              "what": _value(plan["summary"]) if plan else _facts(result)})
        elif kinds.get(step) == "action" or data.get("mutates"):
            what = plan["summary"] if plan else (data.get("error") or _facts(result))
            changed.append({"step": step, "status": data.get("status"), "what": what, "ts": event["ts"]})
        elif kinds.get(step) in ("check", "wait"):
            checks.append({"step": step, "status": data.get("status"), "error": data.get("error"),
                           "observed": _value(_shown(data.get("result")), 400)})
    approvals: list[dict[str, Any]] = []
    for event in events:
        if event["type"] not in ("approval_requested", "approval", "approval_refused"):
            continue
        data = event["data"] or {}
        approvals.append({"ts": event["ts"], "type": event["type"], "step": event["step"],
                          "by": data.get("by"), "decision": data.get("decision"), "note": data.get("note"),
                          "via": data.get("via"), "reason": data.get("reason"),
                          "prompt": data.get("prompt") or _prompt_of(events, event["step"], event["seq"]),
                          "approvers": data.get("approvers")})
    decisions = [{"step": e["step"], "taken": e["data"].get("taken"), "goto": e["data"].get("goto"),
                  "branches": [{"if": b.get("if"), "value": b.get("value", b.get("error")), "read": _value(b.get("read", {}), 400)}
                               for b in e["data"].get("branches", [])]}
                 for e in events if e["type"] == "decision"]
    skipped = [{"step": e["step"], "why": _value({k: v for k, v in (e["data"].get("result") or {}).items()}
                                                 if isinstance(e["data"].get("result"), dict) else "")}
               for e in finals if e["data"].get("status") == "skipped"]
    artifacts = [e["data"] for e in events if e["type"] == "artifact"]
    timeline = [{"seq": e["seq"], "ts": e["ts"], "type": e["type"], "step": e.get("step") or "", "detail": _detail(e),
                 "rollback": bool((e.get("data") or {}).get("rollback")) or e["type"] == "rollback"} for e in events]
    outcome = fields.get("outcome")
    if finished is not None:
        why = (finished["data"] or {}).get("message") or (f"reached end step '{ended_at}'" if ended_at else "")
    elif fields.get("status") == "paused":
        paused = next((e for e in reversed(events) if e["type"] == "run_paused"), None)
        why = (paused["data"] or {}).get("reason", "") if paused else ""
    else:
        why = "the run has not finished (interrupted); `runbook resume` continues it"
    failed = [f for f in failed if str(f["error"]) not in why]
    return {
        "fields": fields, "outcome": outcome, "why": why, "failed": failed, "ended_at_step": ended_at,
        "changed": changed, "rollbacks": rollbacks, "approvals": approvals, "checks": checks, "decisions": decisions,
        "diffs": diffs, "skipped": skipped, "artifacts": artifacts, "timeline": timeline,
        "records": len(events), "last_hash": events[-1]["hash"] if events else "", "signer": signer,
        "params": json.dumps(fields.get("params"), indent=2, sort_keys=True, ensure_ascii=False, default=str),
        "trigger": json.dumps(fields.get("trigger"), indent=2, sort_keys=True, ensure_ascii=False, default=str)
        if fields.get("trigger") is not None else None,
        "dry_run": fields.get("mode") == "dry-run",
    }


def _prompt_of(events: list[dict[str, Any]], step: str | None, before: int) -> str | None:
    """The prompt an approver of `step` was shown (the latest request or step start before `before`)."""
    for event in reversed(events):
        if event["seq"] < before and event["step"] == step and event["type"] in ("approval_requested", "step_started"):
            prompt = (event["data"] or {}).get("prompt")
            if prompt:
                return str(prompt)
    return None


def _verification_line(model: dict[str, Any]) -> str:
    signer = model["signer"]
    signed = (f"signed: Ed25519 key id {signer} (attestation.dsse.json); check with "
              "`runbook evidence verify RUN_ID --key SIGNER.pub`") if signer else "not signed (no `signing:` key configured)"
    return (f"{model['records']} hash-chained records up to hash {model['last_hash']}, pinned with this report's "
            f"sha256 by the bundle_sealed record that follows; {signed}")


def render_markdown(directory: Path, fields: dict[str, Any], events: list[dict[str, Any]] | None = None,
                    signer: str | None = None) -> str:
    """The Markdown report of the bundle in `directory` (for tickets; same content as report.html)."""
    return _markdown(account(fields, events if events is not None else read_events(directory / EVENTS), signer))


def render_reports(fields: dict[str, Any], events: list[dict[str, Any]], signer: str | None) -> tuple[str, str]:
    """report.md and report.html of the same events, the model built once."""
    model = account(fields, events, signer)
    return _markdown(model), _html(model)


def _markdown(model: dict[str, Any]) -> str:
    fields = model["fields"]
    run_id = fields.get("run_id")
    lines = [f"# Run {run_id}: {fields.get('runbook')}", "", "## Summary", "",
             f"- **Outcome:** {model['outcome']} (exit {fields.get('exit_code')}), {fields.get('mode')} run by "
             f"{fields.get('operator')} on {fields.get('host')}",
             f"- **Why:** {_value(model['why'], 500) or '-'}"]
    for failure in model["failed"]:
        lines.append(f"- **Failed:** step `{failure['step']}`: {_value(failure['error'], 300)}")
    done = [c for c in model["changed"] if c["status"] == "ok"]
    lines.append(f"- **What changed:** {_steps(done) or 'nothing'}")
    planned = [c for c in model["changed"] if c["status"] == "planned"]
    if planned:
        lines.append(f"- **Planned (dry-run, not done):** {_steps(planned)}")
    rolled = "; ".join(f"`{r['step']}` {r['status']}" for r in model["rollbacks"])
    lines.append(f"- **Rolled back:** {rolled or 'nothing'}")
    given = [a for a in model["approvals"] if a["type"] != "approval_requested"]
    lines.append(f"- **Approvals:** {'; '.join(_approval_text(a) for a in given) or 'none'}")
    lines.append(f"- **Verification:** {_verification_line(model)}")
    lines += ["", "| | |", "|---|---|"]
    for key in ("outcome", "exit_code", "status", "mode", "operator", "host", "started_at", "ended_at",
                "runbook_path", "runbook_version", "runbook_sha256", "engine_version", "parent_run_id"):
        lines.append(f"| {key} | {_value(fields.get(key))} |")
    lines.append(f"| params | {_value(fields.get('params'), 2000)} |")
    if fields.get("trigger") is not None:
        lines.append(f"| trigger | {_value(fields.get('trigger'), 2000)} |")
    lines += ["", "## Timeline", "", "| seq | time (UTC) | event | step | detail |", "|---|---|---|---|---|"]
    for row in model["timeline"]:
        label = f"{row['type']} (rollback)" if row["rollback"] and row["type"] != "rollback" else row["type"]
        lines.append(f"| {row['seq']} | {row['ts']} | {label} | {row['step']} | {row['detail']} |")
    if model["checks"]:
        lines += ["", "## Checks and what they observed", "", "| step | status | observed |", "|---|---|---|"]
        for check in model["checks"]:
            note = f"{check['error']}; " if check["error"] else ""
            lines.append(f"| {check['step']} | {_MARK.get(str(check['status']), check['status'])} | {_value(note + check['observed'], 400)} |")
    if model["changed"]:
        lines += ["", "## Actions", "", "| step | status | what was done or planned |", "|---|---|---|"]
        for change in model["changed"]:
            lines.append(f"| {change['step']} | {_MARK.get(str(change['status']), change['status'])} | {_value(change['what'], 300)} |")
    if model["rollbacks"]:
        lines += ["", "## Rollbacks", "", "| step | status | what |", "|---|---|---|"]
        for rollback in model["rollbacks"]:
            lines.append(f"| {rollback['step']} | {_MARK.get(str(rollback['status']), rollback['status'])} | {_value(rollback['error'] or rollback['what'], 300)} |")
    if model["decisions"]:
        lines += ["", "## Decisions", ""]
        for decision in model["decisions"]:
            lines.append(f"- **{decision['step']}** took `{decision['taken']}` -> `{decision['goto']}`")
            for branch in decision["branches"]:
                lines.append(f"  - `{branch['if']}` = {branch['value']}; read {branch['read']}")
    if model["diffs"]:
        lines += ["", "## Diffs", ""]
        for diff in model["diffs"]:
            lines += [f"`{diff['step']}` {diff['path'] or ''}", "", "```diff", diff["diff"].rstrip("\n"), "```", ""]
    if model["approvals"]:
        lines += ["", "## Approvals", ""]
        for approval in model["approvals"]:
            lines.append(f"- {approval['ts']} {approval['type']} **{approval['step']}**: {_approval_text(approval)}")
    if model["skipped"]:
        lines += ["", "## Skipped steps", ""]
        lines += [f"- **{s['step']}** {s['why']}" for s in model["skipped"]]
    if model["artifacts"]:
        lines += ["", "## Artifacts", "", "| file | sha256 | bytes |", "|---|---|---|"]
        for data in model["artifacts"]:
            lines.append(f"| {data.get('path')} | `{data.get('sha256')}` | {data.get('bytes')} |")
    lines += ["", "## How to verify", "", _verification_line(model) + ".",
              "`manifest.json` holds every file's sha256; every field of it is checked against the event log.",
              "On any machine with the engine installed, from the directory that holds the bundle:", "",
              f"    runbook evidence verify {run_id}{' --key SIGNER.pub' if model['signer'] else ''}", "",
              "Without the engine: `python verify_bundle.py BUNDLE_DIR [SIGNER.pub]` (docs/verify_bundle.py, "
              "needs only the `cryptography` package).", ""]
    return "\n".join(lines)


def _steps(changes: list[dict[str, Any]]) -> str:
    return "; ".join(f"`{c['step']}` {_value(c['what'], 200)}" for c in changes)


def _approval_text(approval: dict[str, Any]) -> str:
    if approval["type"] == "approval_requested":
        who = f" (approvers: {', '.join(approval['approvers'])})" if approval.get("approvers") else ""
        return f"asked: {_value(approval['prompt'] or '', 300)}{who}"
    if approval["type"] == "approval_refused":
        return f"refused {approval['by']}: {_value(approval['reason'] or '', 200)}"
    note = f", note: {_value(approval['note'], 200)}" if approval.get("note") else ""
    via = f" via {approval['via']}" if approval.get("via") else ""
    shown = f", shown: {_value(approval['prompt'], 200)}" if approval.get("prompt") else ""
    return f"{approval['decision']} by {approval['by'] or '-'} at {approval['ts']}{via} (step {approval['step']}{shown}{note})"


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


def render_html(directory: Path, fields: dict[str, Any], events: list[dict[str, Any]] | None = None,
                signer: str | None = None) -> str:
    """report.html: a self-contained page (inline CSS, no scripts, no external assets) with the summary first."""
    return _html(account(fields, events if events is not None else read_events(directory / EVENTS), signer))


def _template_cache() -> Any:
    """Jinja's bytecode cache for report.html.j2, beside the engine's bytecode or in the user's cache
    directory (the first writable): the template is compiled once per installation, not once per seal."""
    import os

    from jinja2 import FileSystemBytecodeCache

    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "runbook-engine"
    for place in (Path(__file__).resolve().parent / "__pycache__", home):
        try:
            place.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(place, os.W_OK):
            return FileSystemBytecodeCache(str(place), "jinja2-%s.cache")
    return None


def _html(model: dict[str, Any]) -> str:
    from html import escape

    from jinja2 import Environment, FileSystemLoader
    from markupsafe import Markup

    env = Environment(loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
                      autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                      bytecode_cache=_template_cache())
    rows = []
    for row in model["timeline"]:
        label = f"{row['type']} (rollback)" if row["rollback"] and row["type"] != "rollback" else row["type"]
        opening = '<tr class="rollback">' if row["rollback"] else "<tr>"
        rows.append(f"{opening}<td>{row['seq']}</td>"
                    f"<td class=\"mono\">{escape(str(row['ts']))}</td><td>{escape(label)}</td>"
                    f"<td>{escape(str(row['step']))}</td><td>{escape(row['detail'])}</td></tr>\n")
    return env.get_template("report.html.j2").render(m=model, f=model["fields"], mark=_MARK,
                                                      verification=_verification_line(model),
                                                      approval_text=_approval_text, timeline=Markup("".join(rows)))


def bundle_report(directory: Path, fmt: str = "md") -> str:
    """The report of a bundle as `evidence report` prints it: the same page the seal wrote."""
    from engine.attestation import signer_of
    from engine.evidence import SEALED, manifest_fields, scan_chain

    chain = scan_chain(directory / EVENTS)
    render = render_html if fmt == "html" else render_markdown
    events = chain.events[:-1] if chain.events and chain.events[-1]["type"] == SEALED else chain.events
    return render(directory, manifest_fields(chain), events, signer_of(directory))
