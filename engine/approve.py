"""`runbook approve`: store a decision for a run's approval step, and record it if no process drives the run.

It never executes a step: the run's driver (or the next `resume`) acts on the decision
(docs/lifecycle.md, Approvals).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine import driver
from engine.approvals import (
    ApprovalBox,
    approval_refusal,
    pending,
    record_of,
    sign,
    signature_problem,
)
from engine.errors import ApprovalRefused, StateCorrupt
from engine.evidence import EventLog
from engine.model import ApproveStep
from engine.redact import Redactor
from engine.resume import load_state, trusted_events
from engine.runs import RunRecord
from engine.session import Workspace, command_name
from engine.vocabulary import RunStatus


def approve(ws: Workspace, run_id: str, step_id: str, by: str, note: str | None, deny: bool,
            via: str = "cli", key: Path | None = None) -> dict[str, Any]:
    """Give a decision for a run's approval step: stored for the run's driver, never acted on here.

    `key` (a private key file) signs the decision. Refusals (not an approver, four-eyes, unsigned or
    wrongly signed when signatures are required) are stored too, so the run's evidence shows them.
    """
    box = ws.approval_box(run_id)
    record, events = _record_and_events(ws, run_id, box)
    if record.status == RunStatus.FINISHED:
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
    in_log = [str((e.get("data") or {}).get("id")) for e in events if e["type"] in ("approval", "approval_refused")]
    waiting = [e for e in pending(box, in_log) if e["step"] == step_id and not e.get("refused")]
    earlier = logged + waiting
    if earlier:
        data = earlier[-1]
        raise ApprovalRefused(f"step '{step_id}' of run {run_id} was already {data.get('decision')} by {data.get('by')}; "
                              f"continue with: runbook resume {run_id}")
    asked = next(e for e in events if e["type"] == "approval_requested" and e["seq"] == requested)["data"]
    plan_sha256, plans, rebind = asked.get("plan_sha256"), asked.get("plans"), bool(asked.get("rebind"))
    decision = "denied" if deny else "approved"
    signature = signer = None
    if key is not None:
        signature, signer = sign(key, run_id, step_id, decision, note, plan_sha256)
    refusal = approval_refusal(step, by, record.operator)
    policy = box.policy
    if refusal is None and policy.require_signature:
        refusal = signature_problem(policy, run_id, {"step": step_id, "decision": decision, "by": by, "note": note,
                                                     "plan_sha256": plan_sha256, "signature": signature,
                                                     "key_id": signer})
    approval_id = box.give(step_id, decision, by, note, via, refused=refusal, signature=signature, key_id=signer,
                           plan_sha256=plan_sha256, plans=plans, rebind=rebind)
    _take_into_log(ws, run_id, box)
    if refusal:
        raise ApprovalRefused(f"approval refused: {refusal}")
    return {"decision": decision, "by": by, "note": note, "via": via, "id": approval_id,
            "plan_sha256": plan_sha256, "key_id": signer}


def _record_and_events(ws: Workspace, run_id: str, box: ApprovalBox) -> tuple[RunRecord, list[dict[str, Any]]]:
    """The run record and its trusted log, read again when a driver changed the run between the two reads."""
    for _ in range(20):
        record = ws.store.load(run_id)
        try:
            return record, trusted_events(record, box)
        except StateCorrupt:
            now = ws.store.load(run_id)
            if (now.status, now.last_event_hash) == (record.status, record.last_event_hash):
                raise
    return record, trusted_events(record, box)


def _take_into_log(ws: Workspace, run_id: str, box: ApprovalBox) -> None:
    """Record stored decisions in the evidence now when no process drives the run (else its driver will)."""
    try:
        held = driver.take(ws.config.state_dir, run_id, command_name())
    except driver.RunDriven:
        return
    try:
        record = ws.store.load(run_id)
        if record.status != RunStatus.PAUSED:
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
