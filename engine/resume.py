"""Resume: become the run's driver, fold its event log into a state, and continue from there."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

from engine import approvals, driver, idempotency, in_doubt, secrets
from engine.approvals import ApprovalBox, check_counted
from engine.errors import InvalidRunbook, Problem, StateCorrupt
from engine.evidence import GENESIS, EventLog, canonical, read_events, utc_now, verify_bundle
from engine.interpreter import Finish
from engine.loader import load_file
from engine.model import Runbook
from engine.redact import Redactor
from engine.runs import RunRecord
from engine.session import (
    Holding,
    ResumeBlocked,
    RunOptions,
    RunResult,
    Workspace,
    command_name,
    default_operator,
)
from engine.state import RunState
from engine.vocabulary import Mode, Outcome, RunStatus


def resume(ws: Workspace, run_id: str, options: RunOptions, secret_params: dict[str, Any] | None = None) -> RunResult:
    """Continue a paused or interrupted run at its first unfinished step; RunDriven (exit 40) while it is driven."""
    ws.store.load(run_id)
    holding = Holding(driver=driver.take(ws.config.state_dir, run_id, command_name()))
    assert holding.driver is not None
    try:
        return _resume_driven(ws, ws.store.load(run_id), options, holding, secret_params or {})
    finally:
        holding.driver.release()


def trusted_events(record: RunRecord, box: ApprovalBox) -> list[dict[str, Any]]:
    """The run's event log: an intact chain that ends where the state directory says the run was sealed.

    The only records allowed after the sealed end are approvals that `runbook approve` took into the log and
    was stopped before it finished re-sealing (each backed by its stored decision), and that seal's record.
    """
    directory = Path(record.evidence_dir)
    events_path = directory / "events.jsonl"
    if not events_path.exists():
        raise StateCorrupt(f"{events_path}: the run's event log is missing")
    events = read_events(events_path)
    check_chain(events, events_path)
    if not events or events[0]["type"] != "run_started":
        raise StateCorrupt(f"{events_path}: run {record.run_id} never recorded its start, so nothing of it ran; "
                           "start a new run")
    sealed = record.status != RunStatus.RUNNING
    unsealed_tail = False
    if record.last_event_hash:
        at = next((n for n, e in enumerate(events) if e["hash"] == record.last_event_hash), None)
        if at is None:
            raise StateCorrupt(f"{events_path}: does not contain the last record hash the state directory holds "
                               "for this run")
        tail = events[at + 1:]
        if sealed and tail:
            if not all(e["type"] == "bundle_sealed" or (e["type"] in ("approval", "approval_refused")
                                                        and box.find(str(e["data"].get("id") or "")))
                       for e in tail):
                raise StateCorrupt(f"{events_path}:{tail[0]['seq']}: records were added after the run was sealed "
                                   "(its last record hash in the state directory differs)")
            unsealed_tail = True
    if (directory / "manifest.json").exists() and sealed and not unsealed_tail:
        verify_bundle(directory)
    return events


def check_chain(events: list[dict[str, Any]], path: Path) -> None:
    """StateCorrupt naming the first record whose hash, `prev` or `seq` is wrong."""
    prev = GENESIS
    for number, event in enumerate(events, start=1):
        body = {k: v for k, v in event.items() if k != "hash"}
        if (event.get("prev") != prev or event.get("seq") != number
                or hashlib.sha256(canonical(body).encode("utf-8")).hexdigest() != event.get("hash")):
            raise StateCorrupt(f"{path}:{number}: record {number} is not the one that was written (hash chain broken)")
        prev = event["hash"]


def load_state(ws: Workspace, record: RunRecord) -> tuple[list[dict[str, Any]], Runbook | None, RunState]:
    """The run's records, its runbook (None when the file is gone) and the state they fold to."""
    box = ws.approval_box(record.run_id)
    events = trusted_events(record, box)
    runbook_path = Path(record.runbook_path)
    runbook = ws.load(str(runbook_path)) if runbook_path.exists() else None
    first = runbook.steps[0].id if runbook and runbook.steps else None
    state = RunState.fold(events, first)
    check_counted(events, box, Redactor().data)
    return events, runbook, state


def restore_params(runbook: Runbook, state: RunState, record: RunRecord, given: dict[str, Any]) -> dict[str, Any]:
    """The run's params; secret values, never stored, come from `given` (exit 20 naming any missing)."""
    params = dict(state.started.get("params") or record.params)
    missing = []
    for name in secrets.secret_param_names(runbook):
        if name in given:
            params[name] = given[name]
        elif name in (state.started.get("secret_defaults") or []):
            params[name] = runbook.param_defaults()[name]
        elif params.get(name) not in (None, ""):
            missing.append(name)
    if missing:
        raise InvalidRunbook([Problem(record.runbook_path, None, None, None,
            f"param '{name}' is secret and was not stored; give its value again with --param on "
            f"`runbook resume {record.run_id}`") for name in missing])
    return params


def _resume_driven(ws: Workspace, record: RunRecord, options: RunOptions, holding: Holding,
                   secret_params: dict[str, Any]) -> RunResult:
    run_id = record.run_id
    directory = Path(record.evidence_dir)
    events, runbook, state = load_state(ws, record)
    if state.finished:
        return _already_finished(ws, record, state)
    current = load_file(Path(record.runbook_path)) if runbook is not None else None
    if runbook is None or current is None:
        raise InvalidRunbook([Problem(record.runbook_path, None, None, None, "the runbook file of this run is gone")])
    changed = current.sha256 != record.runbook_sha256
    if changed and not options.accept_changed:
        raise InvalidRunbook([Problem(record.runbook_path, None, None, None,
            f"runbook changed since run {run_id} started (sha256 {record.runbook_sha256[:12]} -> "
            f"{current.sha256[:12]}); resume with --accept-changed to continue under the new file")])
    started = state.started
    params = restore_params(runbook, state, record, secret_params)
    env = {name: os.environ.get(name, "") for name in runbook.env}
    trigger = started.get("trigger")
    known = secrets.declared(runbook, params, env, trigger)
    log = EventLog(directory, Redactor(known))
    run = dict(started.get("run") or {"id": run_id, "mode": record.mode, "runbook": record.runbook,
                                      "started_at": record.started_at, "operator": record.operator})
    previous_status, previous_waiting = record.status, record.waiting_for
    record.status, record.pid, record.host = RunStatus.RUNNING, os.getpid(), socket.gethostname()
    record.waiting_for = None
    ws.store.save(record)
    by = options.operator or default_operator()
    log.record("run_resumed", None, {"by": by, "pid": os.getpid(), "accept_changed": changed,
                                     "new_sha256": current.sha256 if changed else None,
                                     "in_doubt_option": options.in_doubt})
    resumed = RunOptions(mode=record.mode, operator=run.get("operator", record.operator),
                         interactive=options.interactive, step_mode=options.step_mode,
                         assume=dict(record.assume or {}), force=options.force,
                         force_lock_break=options.force_lock_break, reason=options.reason,
                         in_doubt=options.in_doubt)
    interp = ws.interpreter(runbook, log, run, params, env, trigger, resumed, known, holding)
    interp.restore(state)
    box = ws.approval_box(run_id)
    for entry in approvals.pending(box, state.approval_ids):
        kind, data = approvals.record_of(entry)
        interp.emit(kind, entry["step"], data)
    if runbook.lock:
        try:
            holding.lock = ws.take_lock(runbook, run_id, resumed, log, resuming=True)
        except ResumeBlocked as blocked:
            record.status, record.waiting_for = previous_status, previous_waiting
            ws.seal(record, log)
            result = RunResult(run_id, record.runbook, blocked.outcome,
                               f"{blocked}; the run is unchanged and can be resumed later", directory, record.mode,
                               previous_waiting)
            ws.reporter.run_finished(result)
            return result
    if record.idempotency_key and record.mode == Mode.LIVE:
        key = idempotency.render_key(runbook, params, run, env, trigger)
        holding.claim = idempotency.reclaim(ws.config.state_dir, ws.store, key, run_id, redact=log.redactor.text)

    def body() -> tuple[Outcome, str]:
        if holding.claim is not None and holding.claim.skip:
            raise Finish(Outcome.BUSINESS_SKIP, holding.claim.message)
        if state.unhandled and state.unhandled.get("end"):
            raise Finish(Outcome(state.unhandled["outcome"]), f"ended at step '{state.unhandled['step']}'")
        if state.unhandled:
            in_doubt.rollback_in_doubt(interp, runbook, state, options.in_doubt, by)
            interp.run_rollbacks()
            raise Finish(Outcome(state.unhandled["outcome"]),
                         f"step '{state.unhandled['step']}' failed: {state.unhandled.get('error')}")
        return interp.run_from(in_doubt.position_after(interp, runbook, state, options.in_doubt, by))

    return ws.drive(record, log, holding, body)


def _already_finished(ws: Workspace, record: RunRecord, state: RunState) -> RunResult:
    assert state.finished is not None
    outcome = Outcome(state.finished["outcome"])
    directory = Path(record.evidence_dir)
    if record.status != RunStatus.FINISHED:
        record.status, record.outcome, record.exit_code = RunStatus.FINISHED, outcome.value, outcome.exit_code
        record.ended_at, record.waiting_for = record.ended_at or utc_now(), None
        ws.seal(record, EventLog(directory, Redactor()))
        ws.reporter.message(f"run {record.run_id} had finished {outcome.value} before its process ended; bundle sealed")
    ws.reporter.message(f"run {record.run_id} already finished {outcome.value}; nothing to do")
    return RunResult(record.run_id, record.runbook, outcome, state.finished.get("message", ""), directory, record.mode)
