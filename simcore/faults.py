"""Fault injection: each fault changes the world the way the real failure would, so the
runbooks observe it through the ordinary signals (exit codes, safety mode, files)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import db, ledger, market, safety, worlds
from .errors import BadRequest
from .fsutil import (
    atomic_write_json,
    atomic_write_text,
    canonical_json,
    iso_utc,
    pid_alive,
    read_json,
    wall_ms,
)

if TYPE_CHECKING:
    from .core import Core

Result = dict[str, Any]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid if not pid_alive(proc.pid) else 2**22 - 1


def _spawn_sleeper(seconds: int = 1800) -> int:
    """A detached `sleep` re-parented to init (no zombie in the caller); returns its pid."""
    out = subprocess.run(
        ["sh", "-c", f"nohup sleep {seconds} >/dev/null 2>&1 </dev/null & echo $!"],
        capture_output=True, text=True, check=True, start_new_session=True,
    )
    return int(out.stdout.strip())


def _remember(core: Core, name: str, undo: dict[str, Any]) -> None:
    with core.session() as (w, _c), db.tx(w.conn):
        faults = w.get("faults", {})
        faults[name] = undo
        w.set("faults", faults)


def _forget(core: Core, name: str) -> dict[str, Any] | None:
    with core.session() as (w, _c), db.tx(w.conn):
        faults = w.get("faults", {})
        undo: dict[str, Any] | None = faults.pop(name, None)
        w.set("faults", faults)
        return undo


def stale_lock(core: Core) -> Result:
    payload = ledger.lock_payload("scheduled", "simcore meta-schedule --run_once 1",
                                  pid=_dead_pid(), start_ms=wall_ms() - 2 * 86_400_000)
    ledger.write_lock(core.lay, payload)
    _remember(core, "stale_lock", {})
    return {"lock": payload}


def live_lock(core: Core) -> Result:
    pid = _spawn_sleeper()
    payload = ledger.lock_payload("scheduled", "simcore meta-schedule --run_once 1", pid=pid)
    ledger.write_lock(core.lay, payload)
    _remember(core, "live_lock", {"pid": pid})
    return {"lock": payload, "owner_alive": pid_alive(pid)}


def _heal_lock(core: Core, undo: dict[str, Any]) -> Result:
    pid = undo.get("pid")
    if pid and pid_alive(pid):
        os.kill(pid, signal.SIGTERM)
    core.lay.lock_file.unlink(missing_ok=True)
    return {"lock_removed": True, "killed_pid": pid}


def anomaly(core: Core) -> Result:
    state = ledger.current_state(core.lay)
    state["strategy"] = {**state.get("strategy", {}), "exposure_multiplier": 25.0}
    state["cycle"] = int(state.get("cycle", 0)) + 1
    with core.session(write=False) as (w, _c):
        entry = ledger.append_snapshot(core.lay, state, w.now_ms, op="cycle", note="anomalous update")
    _remember(core, "anomaly", {"sha256": entry["sha256"]})
    return {"ledger_head": entry["sha256"], "anomalies": ledger.anomalies(state)}


def _heal_anomaly(core: Core, undo: dict[str, Any]) -> Result:
    return core.rollback(steps=1, dry_run=False, strict=True, reason="heal anomaly", actor="simcore")


def state_corrupt(core: Core) -> Result:
    state = ledger.current_state(core.lay)
    state["cycle"] = -1
    state["corrupted_by"] = "simcore inject state_corrupt"
    atomic_write_json(core.lay.current_state, state)
    _remember(core, "state_corrupt", {})
    return {"problems": ledger.verify(core.lay)}


def _heal_state(core: Core, undo: dict[str, Any]) -> Result:
    head = ledger.read_ledger(core.lay)[-1]
    atomic_write_json(core.lay.current_state, head["state"])
    return {"restored": head["sha256"]}


def data_gap(core: Core) -> Result:
    bars = market.read_csv(core.lay.csv)
    removed = bars[-30:-20]
    kept = bars[:-30] + bars[-20:]
    market.write_csv(core.lay.csv, kept)
    _remember(core, "data_gap", {"removed": len(removed)})
    return {"removed_bars": len(removed), "from_ts_ms": removed[0]["ts_ms"], "to_ts_ms": removed[-1]["ts_ms"]}


def _heal_gap(core: Core, undo: dict[str, Any]) -> Result:
    interval = int(core.setting("ingest", "bar_interval_ms"))
    bars = market.read_csv(core.lay.csv)
    filled = market.fill_gaps(bars, interval)
    market.write_csv(core.lay.csv, filled)
    return {"filled_bars": len(filled) - len(bars)}


def daily_bars_corrupt(core: Core) -> Result:
    from . import datafeed

    path = datafeed.daily_dir(core.root) / "BTCUSDT.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    original = lines[-5]
    day, o, h, _low, c = original.split(",")
    lines[-5] = ",".join([day, o, h, str(round(max(float(o), float(c)) * 1.05, 2)), c])  # low above the body
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _remember(core, "daily_bars_corrupt", {"line": original, "index": len(lines) - 5})
    return {"symbol": "BTCUSDT", "date": day, "corrupted": "low above open/close"}


def _heal_daily(core: Core, undo: dict[str, Any]) -> Result:
    from . import datafeed

    path = datafeed.daily_dir(core.root) / "BTCUSDT.csv"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[int(undo["index"])] = str(undo["line"])
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"restored": str(undo["line"]).split(",")[0]}


def stale_data(core: Core) -> Result:
    with core.session() as (w, _c), db.tx(w.conn):
        w.set("feed_stalled", True)
        w.set("now_ms", w.now_ms + 30 * 60_000)
        now = w.now_ms
    _remember(core, "stale_data", {})
    return {"feed_stalled": True, "sim_now_ms": now}


def _heal_stale(core: Core, undo: dict[str, Any]) -> Result:
    interval = int(core.setting("ingest", "bar_interval_ms"))
    with core.session() as (w, _c), db.tx(w.conn):
        w.set("feed_stalled", False)
        bars = market.read_csv(core.lay.csv)
        prices = w.get("prices")
        ts, close, added = int(bars[-1]["ts_ms"]) + interval, float(bars[-1]["close"]), 0
        while ts <= w.now_ms:
            bar = market.make_bar(w.seed, ts, close)
            market.append_bar(core.lay.csv, bar)
            close, ts, added = float(bar["close"]), ts + interval, added + 1
        prices["XAUUSD"] = close
        w.set("prices", prices)
    return {"backfilled_bars": added}


def reconcile_drift(core: Core) -> Result:
    with core.session() as (w, _c), db.tx(w.conn):
        before = w.positions()
        sym = "BTCUSDT"
        w.set_position(sym, round(before.get(sym, 0.0) * 1.5 + 0.01, 8), None)
        after = w.positions()
    _remember(core, "reconcile_drift", {"symbol": sym, "qty": before.get(sym, 0.0)})
    return {"broker_before": before, "broker_after": after}


def _heal_drift(core: Core, undo: dict[str, Any]) -> Result:
    with core.session() as (w, _c), db.tx(w.conn):
        w.set_position(undo["symbol"], undo["qty"], None)
        return {"broker": w.positions()}


def _flag(name: str, key: str, value: bool) -> Callable[[Core], Result]:
    def inject(core: Core) -> Result:
        with core.session() as (w, _c), db.tx(w.conn):
            w.set(key, value)
        _remember(core, name, {key: not value})
        return {key: value}

    return inject


def _unflag(key: str, value: bool) -> Callable[[Core, dict[str, Any]], Result]:
    def heal(core: Core, undo: dict[str, Any]) -> Result:
        with core.session() as (w, _c), db.tx(w.conn):
            w.set(key, value)
        return {key: value}

    return heal


def schema_mismatch(core: Core) -> Result:
    with core.session() as (w, c), db.tx(c):
        db.set_state(c, "schema_version", 2, w.now_ms)
    _remember(core, "schema_mismatch", {})
    return {"schema_version": 2}


def _heal_schema(core: Core, undo: dict[str, Any]) -> Result:
    with core.session() as (w, c), db.tx(c):
        db.set_state(c, "schema_version", db.SCHEMA_VERSION, w.now_ms)
    return {"schema_version": db.SCHEMA_VERSION}


def retry_budget(core: Core) -> Result:
    """Rate-limit the exchange, submit a probe order (UNKNOWN) and retry it to exhaustion."""
    _flag("retry_budget", "rate_limited", True)(core)
    max_attempts = int(core.setting("execution", "retry_budget_max_attempts"))
    with core.session() as (w, c):
        cid = f"probe-{w.get('step')}-{w.get('order_seq', 0)}"
        core.submit_intent(w, c, cid, "XAUUSD", "buy", 0.01, "market", None, False, "strategy", "simcore", None)
        order = core.order_record(c, cid) or {}
        for _ in range(max_attempts):
            core.sync_order(w, c, order)
            order = core.order_record(c, cid) or order
        trans = core.enforce_retry_budget(w, c)
        st = db.get_state(c)
    return {"order": order, "transition": trans, "safety_mode": st.get("safety_mode"),
            "safety_reason_code": st.get("safety_reason_code")}


def backfill_window_exceeded(core: Core) -> Result:
    window = int(core.settings.get("backfill_window_ms", 3_600_000))
    with core.session() as (w, c), db.tx(c):
        cursor = w.now_ms - 2 * window
        core.set_cursor(c, cursor, w.now_ms)
        safety.escalate(c, w.now_ms, "HALT", "BACKFILL_WINDOW_EXCEEDED",
                        f"cursor lag {2 * window}ms > backfill_window_ms {window}")
    _remember(core, "backfill_window_exceeded", {})
    return {"last_processed_timestamp_ms": cursor, "safety_mode": "HALT"}


def loss_breach(core: Core) -> Result:
    """An adverse move takes equity below the daily loss limit; the risk check engages the kill switch."""
    pct = float(core.setting("risk", "max_daily_loss_pct")) + 1.0
    with core.session() as (w, c):
        with db.tx(w.conn):
            loss = round(w.equity() * pct / 100, 2)
            w.set("cash", float(w.get("cash")) - loss)
        events: list[str] = []
        core.mark_equity(w, c, w.now_ms, events)
    _remember(core, "loss_breach", {})
    return {"loss": loss, "events": events, "kill_switch": core.kill_switch_state()}


# ------------------------------------------------------------------ seed 003 / 004 worlds


def _rebal(core: Core) -> Any:
    return core.root / worlds.REBAL


def _missed(post_open: bool) -> Callable[[Core], Result]:
    """The month's rebalance job did not complete by its deadline after the close."""

    def inject(core: Core) -> Result:
        with core.session(write=False) as (w, _c):
            now = w.now_ms
        month = iso_utc(now)[:7]
        close_ms = now - (20 if post_open else 2) * 3_600_000
        job = {"status": "not_completed", "close_ms": close_ms, "close_utc": iso_utc(close_ms),
               "deadline_ms": close_ms + 3_600_000, "deadline_utc": iso_utc(close_ms + 3_600_000),
               "next_open_ms": now + (-3_600_000 if post_open else 14 * 3_600_000),
               "next_open_utc": iso_utc(now + (-3_600_000 if post_open else 14 * 3_600_000)),
               "close_day": worlds.prior_close_day(now)}
        path = _rebal(core) / "jobs.json"
        jobs = read_json(path)
        jobs["jobs"][month] = job
        jobs["due_month"] = month
        atomic_write_json(path, jobs)
        _remember(core, "rebalance_missed_post_open" if post_open else "rebalance_missed", {"month": month})
        return {"month": month, "job": job}

    return inject


def _heal_missed(core: Core, undo: dict[str, Any]) -> Result:
    path = _rebal(core) / "jobs.json"
    jobs = read_json(path)
    jobs["jobs"].pop(undo.get("month"), None)
    jobs.pop("due_month", None)
    atomic_write_json(path, jobs)
    return {"removed": undo.get("month")}


def provider_corrupt(core: Core) -> Result:
    """The primary provider's latest bars are missing for one symbol and jump for another;
    the working bars were loaded from it. The secondary provider is intact."""
    r = _rebal(core)
    rows = worlds.read_bars(r / "providers" / "primary" / "daily_bars.csv")
    last = rows[-1]["date"]
    bad = [x for x in rows if not (x["date"] == last and x["symbol"] == "EEM")]
    for x in bad:
        if x["date"] == last and x["symbol"] == "SPY":
            x["close"] = round(x["close"] * 1.42, 2)
    text = worlds.bars_csv(bad)
    # The provider republishes without updating its manifest (checksum mismatch).
    atomic_write_text(r / "providers" / "primary" / "daily_bars.csv", text)
    atomic_write_text(r / "data" / "daily_bars.csv", text)
    _remember(core, "provider_corrupt", {})
    return {"provider": "primary", "missing": [f"EEM {last}"], "jump": [f"SPY {last} +42%"]}


def _heal_provider(core: Core, undo: dict[str, Any]) -> Result:
    r = _rebal(core)
    src = r / "providers" / "secondary" / "daily_bars.csv"
    for dest in (r / "providers" / "primary" / "daily_bars.csv", r / "data" / "daily_bars.csv"):
        atomic_write_text(dest, src.read_text())
    return {"restored_from": "secondary"}


def scheduler_stalled(core: Core) -> Result:
    r = _rebal(core)
    (r / "scheduler_stopped").write_text("stopped\n")
    hb = read_json(r / "heartbeat.json")
    hb["ts_ms"] -= 2 * 3_600_000
    hb["ts"] = iso_utc(hb["ts_ms"])
    atomic_write_json(r / "heartbeat.json", hb)
    _remember(core, "scheduler_stalled", {})
    return {"heartbeat": hb}


def _heal_scheduler(core: Core, undo: dict[str, Any]) -> Result:
    r = _rebal(core)
    (r / "scheduler_stopped").unlink(missing_ok=True)
    with core.session(write=False) as (w, _c):
        now = w.now_ms
    hb = {"job": "rebalance-scheduler", "ts": iso_utc(now), "ts_ms": now}
    atomic_write_json(r / "heartbeat.json", hb)
    return {"heartbeat": hb}


def slippage_out_of_band(core: Core) -> Result:
    """The last rebalance's fill executed far from the expected price."""
    path = _rebal(core) / "ledger.jsonl"
    lines = path.read_text().splitlines()
    out = []
    for ln in lines:
        rec = json.loads(ln)
        if rec.get("type") == "fill":
            rec["fill_price"] = round(rec["expected_price"] * 1.0031, 2)
            rec["slippage_bps"] = round((rec["fill_price"] / rec["expected_price"] - 1) * 10_000, 2)
            rec["spread_bps"] = 9.5
        out.append(canonical_json(rec))
    atomic_write_text(path, "\n".join(out) + "\n")
    _remember(core, "slippage_out_of_band", {"lines": lines})
    return {"ledger": str(path)}


def _heal_slippage(core: Core, undo: dict[str, Any]) -> Result:
    atomic_write_text(_rebal(core) / "ledger.jsonl", "\n".join(undo["lines"]) + "\n")
    return {"restored": True}


def _ops_patch(name: str, file: str, patch: dict[str, Any], alert: tuple[str, str] | None) -> Callable[[Core], Result]:
    def inject(core: Core) -> Result:
        path = core.root / "ops" / file
        before = read_json(path)
        atomic_write_json(path, {**before, **patch})
        if alert:
            with core.session(write=False) as (w, _c):
                worlds.alert(core.root, w.now_ms, alert[0], alert[1], source="simcore", value=patch)
        _remember(core, name, {"file": file, "before": before})
        return {file: patch, "alert": alert[0] if alert else None}

    return inject


def _heal_ops(core: Core, undo: dict[str, Any]) -> Result:
    atomic_write_json(core.root / "ops" / undo["file"], undo["before"])
    return {"restored": undo["file"]}


FAULTS: dict[str, Callable[[Core], Result]] = {
    "rebalance_missed": _missed(False),
    "rebalance_missed_post_open": _missed(True),
    "provider_corrupt": provider_corrupt,
    "scheduler_stalled": scheduler_stalled,
    "slippage_out_of_band": slippage_out_of_band,
    "model_drift": _ops_patch("model_drift", "drift_report.json",
                              {"psi": 0.31, "ks": 0.16, "consecutive_days_drifting": 3,
                               "features": {"ret_5m": {"psi": 0.42, "ks": 0.19}, "spread": {"psi": 0.08, "ks": 0.04}}},
                              ("ModelDriftDetected_PSI", "warning")),
    "slippage_spike": _ops_patch("slippage_spike", "model_metrics.json", {"slippage_ratio": 3.4},
                                 ("RealisedSlippageCritical", "critical")),
    "canary_breach": _ops_patch("canary_breach", "model_metrics.json",
                                {"realised_pnl": 820.0, "slippage_ratio": 1.7, "precision": 0.52}, None),
    "stale_lock": stale_lock,
    "live_lock": live_lock,
    "anomaly": anomaly,
    "state_corrupt": state_corrupt,
    "data_gap": data_gap,
    "stale_data": stale_data,
    "daily_bars_corrupt": daily_bars_corrupt,
    "reconcile_drift": reconcile_drift,
    "broker_down": _flag("broker_down", "broker_up", False),
    "schema_mismatch": schema_mismatch,
    "retry_budget": retry_budget,
    "backfill_window_exceeded": backfill_window_exceeded,
    "loss_breach": loss_breach,
}

HEALS: dict[str, Callable[[Core, dict[str, Any]], Result]] = {
    "rebalance_missed": _heal_missed,
    "rebalance_missed_post_open": _heal_missed,
    "provider_corrupt": _heal_provider,
    "scheduler_stalled": _heal_scheduler,
    "slippage_out_of_band": _heal_slippage,
    "model_drift": _heal_ops,
    "slippage_spike": _heal_ops,
    "canary_breach": _heal_ops,
    "stale_lock": _heal_lock,
    "live_lock": _heal_lock,
    "anomaly": _heal_anomaly,
    "state_corrupt": _heal_state,
    "data_gap": _heal_gap,
    "stale_data": _heal_stale,
    "daily_bars_corrupt": _heal_daily,
    "reconcile_drift": _heal_drift,
    "broker_down": _unflag("broker_up", True),
    "schema_mismatch": _heal_schema,
    "retry_budget": _unflag("rate_limited", False),
}
NOT_UNDOABLE = {
    "backfill_window_exceeded": "operator procedure: reset-safety to ARMED_SAFE, set "
                                "ingest.maintenance_skip_gap=true, tick",
    "loss_breach": "money lost: kill-switch release + reset-safety after review",
}


def inject(core: Core, fault: str) -> Result:
    """Apply one fault by name."""
    if fault not in FAULTS:
        raise BadRequest(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    out = {"fault": fault, "injected": True, **FAULTS[fault](core)}
    session = core.observe()  # the session monitors (seed 001) see the new world once
    return {**out, "session_events": session} if session else out


def heal(core: Core, fault: str) -> Result:
    """Undo one fault (or every active one for "clear")."""
    if fault == "clear":
        with core.session(write=False) as (w, _c):
            active = sorted(w.get("faults", {}))
        return {"fault": "clear", "healed": [heal(core, f) for f in active]}
    if fault not in FAULTS:
        raise BadRequest(f"unknown fault {fault!r}; known: clear, {', '.join(FAULTS)}")
    undo = _forget(core, fault)
    if fault in NOT_UNDOABLE:
        return {"fault": fault, "healed": False, "note": NOT_UNDOABLE[fault]}
    if undo is None and fault not in ("data_gap", "stale_lock", "live_lock"):
        return {"fault": fault, "healed": False, "note": "not active"}
    out = {"fault": fault, "healed": True, **HEALS[fault](core, undo or {})}
    core.observe()
    return out
