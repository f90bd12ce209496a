"""report.md and report.html: the human-readable account of a bundle, built from its event log alone.

Both are pure functions of the event log, the chain-derived manifest fields and
the signer's key id, so `evidence verify` re-renders them and notices an edit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.attestation import signer_of
from engine.cache import writable_place
from engine.evidence import EVENTS, SEALED, iter_events, manifest_fields, scan_chain
from engine.vocabulary import Mode, RunStatus

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


class Account:
    """The report's model built one record at a time, so a seal never holds the whole log: feed every record
    in order to `add`, then `model` (the fields of the manifest are known only once the log is read)."""

    def __init__(self) -> None:
        self.kinds: dict[str | None, Any] = {}
        self.prompts: dict[str | None, str] = {}
        self.failed: list[dict[str, Any]] = []
        self.changed: list[dict[str, Any]] = []
        self.diffs: list[dict[str, Any]] = []
        self.rollbacks: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []
        self.approvals: list[dict[str, Any]] = []
        self.decisions: list[dict[str, Any]] = []
        self.artifacts: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.ended_at: str | None = None
        self.finished: dict[str, Any] | None = None
        self.paused: dict[str, Any] | None = None
        self.records = 0
        self.last_hash = ""

    def add(self, event: dict[str, Any]) -> None:
        """Take one record of the log (records come in log order)."""
        kind, step = event["type"], event["step"]
        data = event["data"] or {}
        self.records += 1
        self.last_hash = event["hash"]
        self.timeline.append({"seq": event["seq"], "ts": event["ts"], "type": kind, "step": event.get("step") or "",
                              "detail": _detail(event), "rollback": bool(data.get("rollback")) or kind == "rollback"})
        if kind == "step_finished" and data.get("final"):
            self._final(event, data)
        elif kind == "step_started":
            self.kinds[step] = data.get("kind")
        elif kind == "run_finished":
            self.finished = event
        elif kind == "run_paused":
            self.paused = event
        elif kind == "decision":
            self.decisions.append({"step": step, "taken": data.get("taken"), "goto": data.get("goto"),
                                   "branches": [{"if": b.get("if"), "value": b.get("value", b.get("error")),
                                                 "read": _value(b.get("read", {}), 400)}
                                                for b in data.get("branches", [])]})
        elif kind == "artifact":
            self.artifacts.append(event["data"])
        elif kind in ("approval", "approval_refused", "approval_requested"):
            self.approvals.append({"ts": event["ts"], "type": kind, "step": step, "by": data.get("by"),
                                   "decision": data.get("decision"), "note": data.get("note"), "via": data.get("via"),
                                   "reason": data.get("reason"), "prompt": data.get("prompt") or self.prompts.get(step),
                                   "approvers": data.get("approvers"), "key_id": data.get("key_id"),
                                   "plan_sha256": data.get("plan_sha256")})
        if kind in ("approval_requested", "step_started") and data.get("prompt"):
            self.prompts[step] = str(data["prompt"])

    def _final(self, event: dict[str, Any], data: dict[str, Any]) -> None:
        step = event["step"]
        status = data.get("status")
        if status == "failed" and not data.get("rollback"):
            self.failed.append({"step": step, "error": data.get("error") or "failed", "ts": event["ts"]})
        if data.get("outcome"):
            self.ended_at = step
        result: dict[str, Any] = data["result"] if isinstance(data.get("result"), dict) else {}
        plan = result.get("plan") if isinstance(result.get("plan"), dict) else None
        diff = (plan or {}).get("diff") or result.get("diff")
        if isinstance(diff, str) and diff:
            self.diffs.append({"step": step, "path": (plan or result).get("path"), "diff": diff})
        if data.get("rollback"):
            self.rollbacks.append({"step": step, "status": status, "error": data.get("error"), "ts": event["ts"],
                                   "what": _value(plan["summary"]) if plan else _facts(result)})
        elif self.kinds.get(step) == "action" or data.get("mutates"):
            what = plan["summary"] if plan else (data.get("error") or _facts(result))
            self.changed.append({"step": step, "status": status, "what": what, "ts": event["ts"]})
        elif self.kinds.get(step) in ("check", "wait"):
            self.checks.append({"step": step, "status": status, "error": data.get("error"),
                                "observed": _value(_shown(data.get("result")), 400)})
        if status == "skipped":
            self.skipped.append({"step": step, "why": _value(dict(data["result"].items())
                                                             if isinstance(data.get("result"), dict) else "")})

    def model(self, fields: dict[str, Any], signer: str | None) -> dict[str, Any]:
        """What a reader needs, in reading order: the summary facts, then every detail (one model, two renderings)."""
        if self.finished is not None:
            why = ((self.finished["data"] or {}).get("message")
                   or (f"reached end step '{self.ended_at}'" if self.ended_at else ""))
        elif fields.get("status") == RunStatus.PAUSED:
            why = (self.paused["data"] or {}).get("reason", "") if self.paused else ""
        else:
            why = "the run has not finished (interrupted); `runbook resume` continues it"
        return {
            "fields": fields, "outcome": fields.get("outcome"), "why": why,
            "failed": [f for f in self.failed if str(f["error"]) not in why], "ended_at_step": self.ended_at,
            "changed": self.changed, "rollbacks": self.rollbacks, "approvals": self.approvals, "checks": self.checks,
            "decisions": self.decisions, "diffs": self.diffs, "skipped": self.skipped, "artifacts": self.artifacts,
            "timeline": self.timeline, "records": self.records, "last_hash": self.last_hash, "signer": signer,
            "params": json.dumps(fields.get("params"), indent=2, sort_keys=True, ensure_ascii=False, default=str),
            "trigger": json.dumps(fields.get("trigger"), indent=2, sort_keys=True, ensure_ascii=False, default=str)
            if fields.get("trigger") is not None else None,
            "dry_run": fields.get("mode") == Mode.DRY_RUN,
        }


def account(fields: dict[str, Any], events: Iterable[dict[str, Any]], signer: str | None) -> dict[str, Any]:
    """The report's model of `events` (see Account)."""
    built = Account()
    for event in events:
        built.add(event)
    return built.model(fields, signer)


def _verification_line(model: dict[str, Any]) -> str:
    signer = model["signer"]
    signed = (f"signed: Ed25519 key id {signer} (attestation.dsse.json); check with "
              "`runbook evidence verify RUN_ID --key SIGNER.pub`") if signer else "not signed (no `signing:` key configured)"
    return (f"{model['records']} hash-chained records up to hash {model['last_hash']}, pinned with this report's "
            f"sha256 by the bundle_sealed record that follows; {signed}")


def render_markdown(directory: Path, fields: dict[str, Any], events: Iterable[dict[str, Any]] | None = None,
                    signer: str | None = None) -> str:
    """The Markdown report of the bundle in `directory` (for tickets; same content as report.html)."""
    return _markdown(account(fields, events if events is not None else iter_events(directory / EVENTS), signer))


def render_reports(fields: dict[str, Any], events: Iterable[dict[str, Any]] | Account,
                   signer: str | None) -> tuple[str, str]:
    """report.md and report.html of the same events (or of an Account already fed them), the model built once."""
    model = events.model(fields, signer) if isinstance(events, Account) else account(fields, events, signer)
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
    return (f"{approval['decision']} by {approval['by'] or '-'} at {approval['ts']}{via} "
            f"(step {approval['step']}{shown}{note}{_binding_text(approval)})")


def _binding_text(approval: dict[str, Any]) -> str:
    """What an approval is bound to: the key that signed it, the plan it saw (empty for plain approvals)."""
    signed = f", signed with key {approval['key_id']}" if approval.get("key_id") else ""
    plan = f", bound to plan sha256 {approval['plan_sha256']}" if approval.get("plan_sha256") else ""
    return signed + plan


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


def render_html(directory: Path, fields: dict[str, Any], events: Iterable[dict[str, Any]] | None = None,
                signer: str | None = None) -> str:
    """report.html: a self-contained page (inline CSS, no scripts, no external assets) with the summary first."""
    return _html(account(fields, events if events is not None else iter_events(directory / EVENTS), signer))


def _template_cache() -> Any:
    """Jinja's bytecode cache for report.html.j2 in the engine's cache (engine/cache.py): the template is
    compiled once per installation, not once per seal."""
    from jinja2 import FileSystemBytecodeCache

    place = writable_place()
    return FileSystemBytecodeCache(str(place), "jinja2-%s.cache") if place is not None else None


def _html(model: dict[str, Any]) -> str:
    from html import escape

    from jinja2 import Environment, FileSystemLoader
    from markupsafe import Markup
    from markupsafe import escape as markup

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
    checks = [f'<tr><td>{markup(c["step"])}</td><td class="{markup(c["status"])}">'
              f'{markup(_MARK.get(c["status"], c["status"]))}</td><td class="mono">'
              f'{markup(c["error"]) + "; " if c["error"] else ""}{markup(c["observed"])}</td></tr>\n'
              for c in model["checks"]]
    return env.get_template("report.html.j2").render(m=model, f=model["fields"], mark=_MARK,
                                                      verification=_verification_line(model),
                                                      approval_text=_approval_text, binding_text=_binding_text, timeline=Markup("".join(rows)),
                                                      checks=Markup("".join(checks)))


def bundle_report(directory: Path, fmt: str = "md") -> str:
    """The report of a bundle as `evidence report` prints it: the same page the seal wrote."""
    built, held = Account(), list[dict[str, Any]]()

    def feed(record: dict[str, Any]) -> None:
        if held:
            built.add(held.pop())
        held.append(record)

    chain = scan_chain(directory / EVENTS, keep=False, each=feed)
    if held and held[0]["type"] != SEALED:
        built.add(held[0])
    model = built.model(manifest_fields(chain), signer_of(directory))
    return _html(model) if fmt == "html" else _markdown(model)
