"""Seed 000's tools: prod_smoke_test, meta_schedule (one governance cycle with the exit-code
taxonomy) and meta_rollback. Each returns (exit code, output lines)."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

from . import ledger, market
from .core import Core
from .fsutil import iso_utc, wall_ms
from .settings import config_hash

SUCCESS, BUSINESS_REJECT, BUSINESS_SKIP = 0, 10, 11
DATA_INVALID, STATE_CORRUPT, LOCK_TIMEOUT, INTERNAL_ERROR, ANOMALY_HALT = 20, 30, 40, 50, 60
RC_NAMES = {0: "SUCCESS", 10: "BUSINESS_REJECT", 11: "BUSINESS_SKIP", 20: "DATA_INVALID",
            30: "STATE_CORRUPT", 40: "LOCK_TIMEOUT", 50: "INTERNAL_ERROR", 60: "ANOMALY_HALT"}
Out = tuple[int, list[str]]


def _csv_path(core: Core, csv: str) -> Path:
    p = Path(csv)
    if p.is_absolute() or p.exists():
        return p
    return core.root / p


def check_data(core: Core, csv: str) -> tuple[str, str] | None:
    """First data problem of the CSV as (code, detail): data_invalid, data_gap, stale_data."""
    try:
        bars = market.read_csv(_csv_path(core, csv))
    except market.DataInvalid as exc:
        return ("data_invalid", str(exc))
    with core.session(write=False) as (w, _c):
        now = w.now_ms
    problems = market.quality(bars, now, int(core.setting("ingest", "bar_interval_ms")),
                              int(core.setting("data", "check_window_bars")),
                              int(core.setting("data", "max_staleness_sec")) * 1000)
    return problems[0] if problems else None


def check_anomaly(core: Core, csv: str) -> list[str]:
    """Guardrail findings: meta-state parameters out of bounds, extreme bar returns."""
    found = ledger.anomalies(ledger.current_state(core.lay))
    try:
        ret = market.max_abs_return_pct(market.read_csv(_csv_path(core, csv)), 60)
    except market.DataInvalid:
        ret = 0.0
    limit = float(core.setting("data", "anomaly_return_pct"))
    if ret > limit:
        found.append(f"bar return {ret:.2f}% > {limit}%")
    return found


def prod_smoke_test(core: Core, csv: str) -> Out:
    """STATUS=PASS (0) or STATUS=FAIL reason=... (1); logs a module=prod_smoke_test record."""
    reason, detail = "", ""
    problem = check_data(core, csv)
    if problem:
        reason, detail = problem
    elif probs := ledger.verify(core.lay):
        reason, detail = "state_corrupt", probs[0]
    elif found := check_anomaly(core, csv):
        reason, detail = "anomaly", found[0]
    status = "FAIL" if reason else "PASS"
    ledger.log_event(core.lay, "prod_smoke_test", "summary", status=status, reason=reason or None,
                     detail=detail or None, csv=csv)
    if reason:
        return 1, [f"STATUS=FAIL reason={reason}", f"detail={detail}"]
    return 0, ["STATUS=PASS"]


def meta_schedule(core: Core, csv: str, strict: bool = False, on_lock_held: str = "fail",
                  force_lock_break: bool = False, lock_ttl_sec: int = 3600,
                  reason: str = "scheduled", cmd: str = "simcore meta-schedule") -> Out:
    """One scheduled governance cycle under the meta-cycle lock; seed 000's exit codes."""
    lay = core.lay
    run_id = f"{wall_ms()}-{os.getpid()}"

    def stage(name: str, rc: int, **fields: Any) -> None:
        ledger.log_event(lay, "meta_cycle", "stage_end", run_id=run_id, stage=name, rc=rc, **fields)

    with ledger.lock_guard(lay):
        held = ledger.read_lock(lay)
        st = ledger.lock_status(held, lock_ttl_sec)
        if st["held"]:
            if st["stale"] and force_lock_break:
                ledger.log_event(lay, "meta_cycle", "lock_break", run_id=run_id, previous=held,
                                 owner_alive=st["owner_alive"], age_sec=st["age_sec"], ttl_sec=lock_ttl_sec)
            else:
                rc = BUSINESS_SKIP if on_lock_held == "retryable" else LOCK_TIMEOUT
                stage("lock", rc, lock=held, owner_alive=st["owner_alive"], stale=st["stale"])
                return _finish(core, run_id, rc, rc, [f"lock held by pid={held.get('pid') if held else None} "
                                                      f"owner_alive={int(st['owner_alive'])} stale={int(st['stale'])}"])
        mine = ledger.lock_payload(reason, cmd)
        ledger.write_lock(lay, mine)
    stage("lock", SUCCESS, pid=mine["pid"])
    try:
        rc, notes = _cycle(core, csv, run_id, stage)
    except Exception as exc:  # anything unexpected is INTERNAL_ERROR, never a traceback
        rc, notes = INTERNAL_ERROR, [f"internal error: {exc!r}"]
        ledger.log_event(lay, "meta_cycle", "exception", run_id=run_id, error=repr(exc),
                         traceback=traceback.format_exc())
    finally:
        with ledger.lock_guard(lay):
            cur = ledger.read_lock(lay)
            if cur and cur.get("pid") == mine["pid"] and cur.get("start_ts_utc") == mine["start_ts_utc"]:
                ledger.write_lock(lay, {**mine, "active": 0, "released_ts_utc": iso_utc(wall_ms())})
    effective = SUCCESS if rc == BUSINESS_REJECT and not strict else rc
    return _finish(core, run_id, rc, effective, notes)


def _cycle(core: Core, csv: str, run_id: str, stage: Any) -> tuple[int, list[str]]:
    problem = check_data(core, csv)
    if problem:
        stage("data", DATA_INVALID, reason=problem[0], detail=problem[1])
        return DATA_INVALID, [f"data invalid: {problem[0]} {problem[1]}"]
    stage("data", SUCCESS)
    problems = ledger.verify(core.lay)
    if problems:
        stage("state", STATE_CORRUPT, problems=problems)
        return STATE_CORRUPT, [f"state corrupt: {problems[0]}"]
    stage("state", SUCCESS)
    found = check_anomaly(core, csv)
    if found:
        with core.session(write=False) as (w, _c):
            now = w.now_ms
        path = ledger.write_incident(core.lay, now, "ANOMALY_HALT", {
            "run_id": run_id, "anomalies": found, "ledger_head": ledger.read_ledger(core.lay)[-1]["sha256"],
            "csv": csv, "action": "stop the scheduler; smoke test; rollback if still failing"})
        stage("anomaly", ANOMALY_HALT, anomalies=found, incident=str(path))
        return ANOMALY_HALT, [f"anomaly: {found[0]}", f"incident={path}"]
    stage("anomaly", SUCCESS)
    status = core.status()
    if status["safety_mode"] == "HALT" or status["kill_switch"]["engaged"]:
        why = "kill switch engaged" if status["kill_switch"]["engaged"] else f"HALT {status['safety_reason_code']}"
        stage("safety", BUSINESS_REJECT, reason=why)
        return BUSINESS_REJECT, [f"cycle rejected: {why}"]
    stage("safety", SUCCESS)
    tick = core.tick(1)
    stage("cycle", SUCCESS, sim_now_ms=tick["sim_now_ms"], safety_mode=tick["safety_mode"], events=tick["events"])
    prev = ledger.current_state(core.lay)
    status = core.status()
    state = {**prev, "cycle": int(prev.get("cycle", 0)) + 1, "sim_ts_ms": status["sim_now_ms"],
             "last_bar_ts_ms": status["last_processed_timestamp_ms"], "equity": status["equity"],
             "safety_mode": status["safety_mode"], "config_hash": config_hash(core.settings)}
    entry = ledger.append_snapshot(core.lay, state, status["sim_now_ms"], op="cycle", run_id=run_id)
    stage("ledger", SUCCESS, sha256=entry["sha256"])
    return SUCCESS, [f"cycle={state['cycle']}", f"sha256={entry['sha256']}"]


def _finish(core: Core, run_id: str, rc: int, effective: int, notes: list[str]) -> Out:
    ledger.log_event(core.lay, "meta_schedule", "run_end", run_id=run_id, rc=effective, raw_rc=rc,
                     rc_name=RC_NAMES[rc])
    return effective, [f"rc={effective} status={RC_NAMES[effective]} raw_rc={rc}", *notes]


def meta_rollback(core: Core, steps: int | None, to_hash: str | None, reason: str,
                  dry_run: bool, strict: bool) -> Out:
    """Restore the meta state by steps or sha256; dry run prints the plan and changes nothing."""
    try:
        res = core.rollback(steps=steps, to_hash=to_hash, dry_run=dry_run, strict=strict, reason=reason)
    except LookupError as exc:
        rc = STATE_CORRUPT if strict else BUSINESS_REJECT
        ledger.log_event(core.lay, "meta_rollback", "rejected", rc=rc, error=str(exc), dry_run=dry_run)
        return rc, [f"rollback_failed reason={exc}", f"rc={rc} status={RC_NAMES[rc]}"]
    lines = [
        f"rollback_{'plan' if dry_run else 'applied'} dry_run={int(dry_run)} strict={int(strict)}",
        f"from_hash={res['from_hash']}",
        f"head_hash={res['head_hash']}",
        f"to_hash={res['to_hash']}",
        f"target_index={res['target_index']} target_ts={res['target_ts']}",
        f"{'would_restore' if dry_run else 'restored'}={res['restore']}",
    ]
    if dry_run:
        lines.append("changed=0")
    ledger.log_event(core.lay, "meta_rollback", "dry_run" if dry_run else "applied", reason=reason,
                     from_hash=res["from_hash"], to_hash=res["to_hash"], steps=steps)
    return SUCCESS, lines
