"""Approvals that count: given through `runbook approve`, the terminal prompt or the serve API.

Every decision is first written, atomically, as one file under
`<state_dir>/approvals/<run_id>/`. `approve` writes only that file: it never
touches the event log or executes a step, so a crash at any point leaves the
run resumable. The run's driver takes pending decisions into the event log
(`ingest`) and, on resume, every `approval` record of the log must match a
file of that folder (`check_counted`): a record written any other way is a
forgery, and resume stops (exit 30).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import RunbookError, StateCorrupt
from engine.model import ApproveStep
from engine.runs import atomic_write_json

COUNTED_FIELDS = ("decision", "by", "note", "via")


class ApprovalRefused(RunbookError):
    """`runbook approve` by someone who may not approve, or of a step not waiting (exit 2; recorded when refused)."""

    exit_code = 2


def approval_refusal(step: ApproveStep, by: str, operator: str) -> str | None:
    """Why `by` may not approve this step, or None when they may."""
    if not by.strip():
        return "an approver must give their name"
    if step.approvers and by not in step.approvers:
        return f"'{by}' is not an approver of step '{step.id}' (expected one of: {', '.join(step.approvers)})"
    if step.four_eyes and _person(by) == _person(operator):
        return f"four-eyes: '{by}' started this run and cannot approve it"
    return None


def _person(name: str) -> str:
    """Who acts: `serve:alice` (a run serve started for token identity alice) is alice."""
    return name.removeprefix("serve:").strip()


@dataclass(frozen=True)
class ApprovalBox:
    """The decisions given for one run, one file each."""

    folder: Path

    @classmethod
    def of(cls, state_dir: Path, run_id: str) -> ApprovalBox:
        """The box of a run."""
        return cls(state_dir / "approvals" / run_id)

    def give(self, step: str, decision: str, by: str, note: str | None, via: str,
             refused: str | None = None) -> str:
        """Store one decision durably and return its id."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        approval_id = f"{stamp}-{secrets.token_hex(4)}"
        entry = {"id": approval_id, "step": step, "decision": decision, "by": by, "note": note, "via": via,
                 "refused": refused, "at": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
        atomic_write_json(self.folder / f"{approval_id}.json", entry)
        return approval_id

    def entries(self) -> list[dict[str, Any]]:
        """Every decision, oldest first."""
        if not self.folder.is_dir():
            return []
        out = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                entry = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(entry, dict) and entry.get("id") == path.stem:
                out.append(entry)
        return out

    def find(self, approval_id: str) -> dict[str, Any] | None:
        """One decision by id."""
        if not approval_id or "/" in approval_id or approval_id.startswith("."):
            return None
        path = self.folder / f"{approval_id}.json"
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return entry if isinstance(entry, dict) else None


def pending(box: ApprovalBox, known_ids: list[str]) -> list[dict[str, Any]]:
    """Decisions given but not yet in the event log."""
    known = set(known_ids)
    return [e for e in box.entries() if e["id"] not in known]


def record_of(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The event-log record (type, data) for a stored decision."""
    from engine import records

    if entry.get("refused"):
        return "approval_refused", records.approval_refused(entry["by"], entry["refused"], via=entry["via"],
                                                            approval_id=entry["id"], note=entry.get("note"))
    return "approval", records.approval(entry["decision"], entry["by"], note=entry.get("note"), via=entry["via"],
                                        approval_id=entry["id"])


def check_counted(events: list[dict[str, Any]], box: ApprovalBox, redact: Any) -> None:
    """StateCorrupt unless every approval in the log was given through a way that counts."""
    for event in events:
        if event["type"] != "approval":
            continue
        data = event.get("data") or {}
        if data.get("decision") == "would ask":
            continue
        entry = box.find(str(data.get("id") or ""))
        if entry is None or entry.get("step") != event.get("step") or entry.get("refused") or any(
                redact(entry.get(k)) != data.get(k) for k in COUNTED_FIELDS):
            raise StateCorrupt(f"events.jsonl record {event['seq']}: approval of step '{event.get('step')}' by "
                               f"{data.get('by')!r} was not given through `runbook approve`, the terminal prompt or "
                               "the serve API; refusing to continue")


def approve(ws: Any, run_id: str, step_id: str, by: str, note: str | None, deny: bool,
            via: str = "cli") -> dict[str, Any]:
    """Give a decision for a run's approval step: stored for the run's driver, never acted on here.

    Refusals (not an approver, four-eyes) are stored too, so the run's evidence shows them.
    """
    box = ApprovalBox.of(ws.config.state_dir, run_id)
    record, events = _record_and_events(ws, run_id, box)
    if record.status == "finished":
        raise ApprovalRefused(f"run {run_id} already finished {record.outcome}; there is nothing to approve")
    runbook = ws.load(record.runbook_path)
    try:
        step = runbook.step(step_id)
    except KeyError:
        raise ApprovalRefused(f"run {run_id} has no step '{step_id}'") from None
    if not isinstance(step, ApproveStep):
        raise ApprovalRefused(f"step '{step_id}' is a {step.kind} step, not an approval")
    requested = max((e["seq"] for e in events if e["type"] == "approval_requested" and e["step"] == step_id), default=0)
    if not requested:
        raise ApprovalRefused(f"run {run_id} has not asked for an approval of step '{step_id}' "
                              f"(status {record.status}, waiting for {record.waiting_for or 'nothing'})")
    logged = [e["data"] for e in events if e["type"] == "approval" and e["step"] == step_id and e["seq"] > requested]
    waiting = [e for e in pending(box, [str(d.get("id")) for d in logged])
               if e["step"] == step_id and not e.get("refused")]
    earlier = logged + waiting
    if earlier:
        data = earlier[-1]
        raise ApprovalRefused(f"step '{step_id}' of run {run_id} was already {data.get('decision')} by {data.get('by')}; "
                              f"continue with: runbook resume {run_id}")
    refusal = approval_refusal(step, by, record.operator)
    decision = "denied" if deny else "approved"
    approval_id = box.give(step_id, decision, by, note, via, refused=refusal)
    _take_into_log(ws, run_id, box)
    if refusal:
        raise ApprovalRefused(f"approval refused: {refusal}")
    return {"decision": decision, "by": by, "note": note, "via": via, "id": approval_id}


def _record_and_events(ws: Any, run_id: str, box: ApprovalBox) -> tuple[Any, list[dict[str, Any]]]:
    """The run record and its trusted log, read again when a driver changed the run between the two reads."""
    from engine.resume import trusted_events

    for _ in range(20):
        record = ws.store.load(run_id)
        try:
            return record, trusted_events(record, box)
        except StateCorrupt:
            now = ws.store.load(run_id)
            if (now.status, now.last_event_hash) == (record.status, record.last_event_hash):
                raise
    return record, trusted_events(record, box)


def _take_into_log(ws: Any, run_id: str, box: ApprovalBox) -> None:
    """Record stored decisions in the evidence now when no process drives the run (else its driver will)."""
    from engine import driver
    from engine.evidence import EventLog
    from engine.redact import Redactor
    from engine.resume import load_state
    from engine.session import command_name

    try:
        held = driver.take(ws.config.state_dir, run_id, command_name())
    except driver.RunDriven:
        return
    try:
        record = ws.store.load(run_id)
        if record.status != "paused":
            return
        _events, _runbook, state = load_state(ws, record)
        entries = pending(box, state.approval_ids)
        if not entries:
            return
        log = EventLog(Path(record.evidence_dir), Redactor())
        for entry in entries:
            kind, data = record_of(entry)
            log.record(kind, entry["step"], data)
        ws.seal(record, log)
    finally:
        held.release()
