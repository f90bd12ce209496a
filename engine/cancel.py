"""`runbook cancel`: an operator ends a paused or interrupted run and frees what it holds."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from engine import driver, idempotency, in_doubt, locks, records, secrets
from engine.errors import UsageError
from engine.evidence import EventLog
from engine.interpreter import Finish
from engine.redact import Redactor
from engine.resume import load_state
from engine.session import Holding, ResumeBlocked, RunOptions, RunResult, Workspace, command_name
from engine.vocabulary import Mode, Outcome, RunStatus


def cancel(ws: Workspace, run_id: str, by: str, reason: str, rollback: bool = True) -> RunResult:
    """End a paused or interrupted run: rollbacks (unless not wanted), lock and key released, outcome BUSINESS_REJECT.

    A finished run is a usage error (exit 2); a run that is driven right now exits 40.
    """
    if ws.store.load(run_id).status == RunStatus.FINISHED:
        raise UsageError(f"run {run_id} already finished {ws.store.load(run_id).outcome}; there is nothing to cancel")
    holding = Holding(driver=driver.take(ws.config.state_dir, run_id, command_name()))
    assert holding.driver is not None
    try:
        return _cancel_driven(ws, run_id, by, reason, rollback, holding)
    finally:
        holding.driver.release()


def _cancel_driven(ws: Workspace, run_id: str, by: str, reason: str, rollback: bool, holding: Holding) -> RunResult:
    record = ws.store.load(run_id)
    if record.status == RunStatus.FINISHED:
        raise UsageError(f"run {run_id} already finished {record.outcome}; there is nothing to cancel")
    events, runbook, state = load_state(ws, record)
    if state.rollback_stack and rollback and runbook is None:
        raise UsageError(f"run {run_id}: its runbook file {record.runbook_path} is gone, so its rollbacks cannot run; "
                         "cancel with --no-rollback to end it without them")
    params = dict(state.started.get("params") or record.params)
    env = {name: os.environ.get(name, "") for name in (runbook.env if runbook else ())}
    trigger = state.started.get("trigger")
    known = secrets.declared(runbook, params, env, trigger) if runbook else ()
    log = EventLog(Path(record.evidence_dir), Redactor(known))
    flight = state.in_flight if in_doubt.needs_resolving(state.in_flight) else None
    state.apply(log.record("cancelled", None, records.cancelled(by, reason, rollback=rollback,
                                                                in_doubt_step=flight["step"] if flight else None)))
    record.status, record.pid, record.host = RunStatus.RUNNING, os.getpid(), socket.gethostname()
    ws.store.save(record)
    if runbook is not None and runbook.lock and record.mode == Mode.LIVE:
        payload = locks.read_payload(ws.config.state_dir / "locks" / f"{runbook.lock.name}.lock")
        if payload and payload.get("run_id") == run_id and int(payload.get("active") or 0):
            options = RunOptions(mode=record.mode, operator=by, reason=f"cancel: {reason}")
            try:
                holding.lock = ws.take_lock(runbook, run_id, options, log, resuming=True)
            except ResumeBlocked:
                holding.lock = None
    if record.idempotency_key_sha256 and record.mode == Mode.LIVE:
        holding.claim = idempotency.held_by(ws.config.state_dir, run_id, record.idempotency_key_sha256)
    message = f"cancelled by {by}: {reason}"
    if flight:
        message += f" (step '{flight['step']}' was in doubt and is not rolled back)"

    def body() -> tuple[Outcome, str]:
        if rollback and runbook is not None and state.rollback_stack:
            run = dict(state.started.get("run") or {"id": run_id, "mode": record.mode, "runbook": record.runbook,
                                                    "started_at": record.started_at, "operator": record.operator})
            options = RunOptions(mode=record.mode, operator=run.get("operator", record.operator))
            interp = ws.interpreter(runbook, log, run, params, env, trigger, options, known, holding)
            interp.restore(state)
            interp.run_rollbacks()
        raise Finish(Outcome.BUSINESS_REJECT, message)

    return ws.drive(record, log, holding, body)
