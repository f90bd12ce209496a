"""The seed tools of systems 001, 003 and 004 over the simulated core's worlds (simcore.worlds).

Each returns (exit_code, lines) like metacycle / copytrader_ops: JSON on stdout, the seed's exit
semantics (0 ok / pass, 1 a finding or failure, 2 bad arguments).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from . import worlds
from .core import Core
from .errors import BadRequest, Refused
from .fsutil import atomic_write_json, atomic_write_text, canonical_json, iso_utc, read_json
from .settings import config_hash

Out = tuple[int, list[str]]
DAY = worlds.DAY
STAGES = ("shadow", "canary_1", "canary_2", "production")


def _out(code: int, obj: Any, *summary: str) -> Out:
    """One JSON document on stdout (parse_json-friendly); the summary lines (STATUS=...) go in `summary`."""
    if summary and isinstance(obj, dict):
        obj = {**obj, "summary": " ".join(summary)}
    return code, [json.dumps(obj, indent=2, sort_keys=True)]


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _now(core: Core) -> int:
    with core.session(write=False) as (w, _c):
        return int(w.now_ms)


# ------------------------------------------------------------------ 001: promotion gate


def promotion_gate(core: Core, run_id: str, experiment: str, strict: bool) -> Out:
    """Strict promotion gate over a paper session: SLOs and paper KPIs from its artifacts."""
    s = core.root / "results" / "runs" / run_id
    if not s.is_dir():
        return _out(2, {"error": f"no session {s}"})
    orders = [r for r in _jsonl(s / "order_reconciliation_events.jsonl") if r.get("event_type") == "order_reconciliation"]
    ops = [r for r in _jsonl(s / "ops_slo_events.jsonl") if r.get("event_type") == "ops_cycle"]
    incidents = _jsonl(s / "incident_events.jsonl")
    opened = {r["incident_id"] for r in incidents if r.get("event_type") == "incident_open"}
    acked = {r["incident_id"] for r in incidents if r.get("event_type") == "incident_ack"}
    dq = read_json(s / "data_quality_latest.json")
    pass_rate = sum(1 for r in orders if r.get("status") == "ok") / len(orders) if orders else 0.0
    err_rate = sum(int(r.get("errors", 0)) for r in ops) / len(ops) if ops else 1.0
    criteria: dict[str, dict[str, Any]] = {
        "reconciliation_pass_rate": {"value": round(pass_rate, 6), "min": 0.995, "ok": pass_rate >= 0.995},
        "operational_error_rate": {"value": round(err_rate, 6), "max": 0.02, "ok": err_rate <= 0.02},
        "consecutive_mismatch_runs": {"value": orders[-1].get("consecutive_mismatch_runs", 0) if orders else None,
                                      "max_exclusive": 3,
                                      "ok": bool(orders) and orders[-1].get("consecutive_mismatch_runs", 0) < 3},
        "data_quality_errors": {"value": dq.get("errors"), "ok": dq.get("errors") == 0},
        "data_stale_warnings": {"value": dq.get("stale_warnings"), "ok": dq.get("stale_warnings") == 0},
        "open_incidents": {"value": sorted(opened - acked), "ok": not (opened - acked)},
        "cycles": {"value": len(orders), "min": 2, "ok": len(orders) >= 2},
    }
    failed = [k for k, v in criteria.items() if not v["ok"]]
    passed = not failed if strict else all(criteria[k]["ok"] for k in ("reconciliation_pass_rate",
                                                                        "operational_error_rate"))
    report = {"experiment": experiment, "run_id": run_id, "strict": strict, "criteria": criteria,
              "failed": failed, "status": "PASS" if passed else "FAIL"}
    return _out(0 if passed else 1, report, f"PROMOTION_GATE={'PASS' if passed else 'FAIL'}")


def incident_ack(core: Core, run_id: str, incident_id: str, ack_by: str, notes: str) -> Out:
    """scripts/incident_ack.py: append an incident_ack event (core clock) for an open incident."""
    path = core.root / "results" / "runs" / run_id / "incident_events.jsonl"
    events = _jsonl(path)
    if not any(e.get("event_type") == "incident_open" and e.get("incident_id") == incident_id for e in events):
        return _out(1, {"error": f"no incident_open {incident_id} in {path}"})
    now = _now(core)
    rec = {"ts": iso_utc(now), "ts_ms": now, "event_type": "incident_ack", "incident_id": incident_id,
           "ack_by": ack_by, "notes": notes}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(canonical_json(rec) + "\n")
    return _out(0, rec, f"incident_ack run_id={run_id} incident_id={incident_id} ack_by={ack_by}")


def broker_restart(core: Core, run_id: str) -> Out:
    """Restart the broker session of a paper session: a new gateway session (API and websocket
    reconnected) and one reconciliation cycle rerun; exit 1 while the broker is unreachable."""
    path = core.root / "results" / "runs" / run_id / "gateway_stats.json"
    status = core.status()
    if not status["broker_up"]:
        return _out(1, {"restarted": False, "error": "broker unreachable: API/websocket connect failed"})
    now = _now(core)
    stats = read_json(path) if path.exists() else {}
    stats.update({"session_id": f"gw-{now // 60_000}-r", "session_restarted_ms": now, "api_ok": True,
                  "websocket_connected": True})
    atomic_write_json(path, stats)
    events = core.observe()  # the reconciliation loop runs once on the new session
    return _out(0, {"restarted": True, "session_id": stats["session_id"], "reconciliation_rerun": True,
                    "events": events}, "BROKER_SESSION=RESTARTED")


DRILL_TRIGGERS = {
    # seed 002 "Failure Triggers and Expected Signals": how each one is caused on a disposable core
    "SCHEMA_VERSION_MISMATCH": ("schema_mismatch", 1),
    "EXECUTION_RETRY_BUDGET_EXCEEDED": ("retry_budget", 0),
    "RECONCILE_CRITICAL": ("reconcile_drift", 1),
    "BACKFILL_WINDOW_EXCEEDED": ("backfill_window_exceeded", 1),
}


def failure_drill(trigger: str, directory: Path, seed: int = 7) -> Out:
    """Cause one seed 002 failure trigger on a fresh disposable core under `directory` and
    report the safety signal it produced (the live core is never touched)."""
    if trigger not in DRILL_TRIGGERS:
        return _out(2, {"error": f"unknown trigger {trigger!r}; known: {', '.join(DRILL_TRIGGERS)}"})
    fault, ticks = DRILL_TRIGGERS[trigger]
    root = directory / trigger.lower()
    core = Core.init(root, seed=seed)
    core.inject(fault)
    if ticks:
        core.tick(ticks)
    st = core.status()
    out = {"trigger": trigger, "core": str(root), "caused_by": fault, "ticks": ticks,
           "safety_mode": st["safety_mode"], "safety_reason_code": st["safety_reason_code"],
           "safety_reason_message": st["safety_reason_message"]}
    return _out(0, out)


# ------------------------------------------------------------------ 003: the rebalance system


def _rb(core: Core) -> Path:
    return core.root / worlds.REBAL


def data_qa(core: Core, source: str) -> Out:
    """Data QA suite: every symbol through the prior close, no missing day, no jump beyond the
    policy, checksum matching the provider's manifest (provenance for the working copy)."""
    r = _rb(core)
    path = r / "data" / "daily_bars.csv" if source == "data" else r / "providers" / source / "daily_bars.csv"
    manifest = (r / "data" / "provenance.json") if source == "data" else (r / "providers" / source / "manifest.json")
    if not path.exists():
        return _out(2, {"error": f"no bars at {path}"})
    rows = worlds.read_bars(path)
    policy = read_json(r / "policy.json")
    cal = read_json(r / "calendar.json")
    through = worlds.prior_close_day(_now(core))
    days = [d for d in cal["trading_days"] if d <= through]
    findings: list[str] = []
    by: dict[str, dict[str, float]] = {}
    for x in rows:
        by.setdefault(x["symbol"], {})[x["date"]] = x["close"]
    for sym in worlds.STRATEGY["universe"]:
        series = by.get(sym, {})
        missing = [d for d in days[-30:] if d not in series]
        if missing:
            findings.append(f"{sym}: missing bars {', '.join(missing)}")
        prev = None
        for d in days[-30:]:
            if d in series:
                if prev and abs(series[d] / prev - 1) * 100 > float(policy["max_daily_jump_pct"]):
                    findings.append(f"{sym}: suspicious jump {d} {round((series[d] / prev - 1) * 100, 2)}%")
                prev = series[d]
    want = read_json(manifest).get("sha256") if manifest.exists() else None
    got = worlds.sha256_file(path)
    if want != got:
        findings.append(f"checksum mismatch: manifest {str(want)[:12]} != file {got[:12]}")
    report = {"source": source, "path": str(path), "through": through, "symbols": worlds.STRATEGY["universe"],
              "checked_days": len(days[-30:]), "findings": findings, "ok": not findings}
    return _out(0 if not findings else 1, report, f"DATA_QA={'PASS' if not findings else 'FAIL'}")


def refetch(core: Core, provider: str) -> Out:
    """Re-fetch from a provider into the working copy, only if that provider's data passes QA."""
    code, lines = data_qa(core, provider)
    qa = json.loads(lines[0])
    qa.pop("summary", None)
    if code != 0:
        return _out(1, {"provider": provider, "refetched": False, "qa": qa}, "REFETCH=FAIL")
    r = _rb(core)
    src = r / "providers" / provider / "daily_bars.csv"
    atomic_write_text(r / "data" / "daily_bars.csv", src.read_text(encoding="utf-8"))
    prov = {"provider": provider, "through": qa["through"], "sha256": worlds.sha256_file(src)}
    atomic_write_json(r / "data" / "provenance.json", prov)
    return _out(0, {"provider": provider, "refetched": True, "provenance": prov}, "REFETCH=OK")


def decide(core: Core, month: str) -> Out:
    """Compute and persist the month's decision record (idempotent: an existing record is kept)."""
    r = _rb(core)
    path = r / "decisions" / f"{month}.json"
    if path.exists():
        return _out(0, {"decision": read_json(path), "created": False, "path": str(path)})
    prov = read_json(r / "data" / "provenance.json")
    rows = worlds.read_bars(r / "data" / "daily_bars.csv")
    through = max(x["date"] for x in rows)
    dec = worlds.momentum(rows, through, int(worlds.STRATEGY["lookback_days"]))
    strategy = read_json(r / "strategy.json")
    now = _now(core)
    snap = r / "snapshots" / f"{month}.csv"
    atomic_write_text(snap, worlds.bars_csv([x for x in rows if x["date"] <= through]))
    record = {"month": month, "decision_ts": iso_utc(now), "close_day": through,
              "prices": {s: {**p, "provider": prov["provider"], "sha256": prov["sha256"]}
                         for s, p in dec["prices"].items()},
              "scores": dec["scores"], "selected": dec["selected"], "targets": dec["targets"],
              "config_hash": config_hash(core.settings), "code_commit": strategy["code_commit"],
              "strategy_version": strategy["strategy_version"], "snapshot": f"snapshots/{month}.csv"}
    atomic_write_json(path, record)
    with (r / "ledger.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(canonical_json({"ts_ms": now, "type": "decision", "month": month, "selected": dec["selected"]}) + "\n")
    return _out(0, {"decision": record, "created": True, "path": str(path)})


def plan(core: Core, month: str) -> Out:
    """The execution plan (MOO order set for the next open) from the month's decision record:
    for each universe symbol, target quantity (capital x target weight / decision price) minus
    the position held at the broker; sells first. Idempotent: an existing plan is kept."""
    r = _rb(core)
    dpath, ppath = r / "decisions" / f"{month}.json", r / "plans" / f"{month}.json"
    if not dpath.exists():
        return _out(1, {"error": f"no decision record for {month}"})
    if ppath.exists():
        return _out(0, {"plan": read_json(ppath), "created": False})
    held = core.positions().get("broker")
    if held is None:
        return _out(1, {"error": "broker unreachable: current positions unknown, no plan"})
    dec = read_json(dpath)
    capital = float(read_json(r / "policy.json").get("capital", 100_000))
    orders = []
    for sym in sorted(dec["targets"]):
        want = int(capital * float(dec["targets"][sym]) // float(dec["prices"][sym]["close"]))
        diff = want - int(held.get(sym, 0))
        if diff:
            orders.append({"symbol": sym, "side": "buy" if diff > 0 else "sell", "qty": abs(diff),
                           "target_qty": want, "held_qty": int(held.get(sym, 0)),
                           "ref_price": dec["prices"][sym]["close"]})
    orders.sort(key=lambda o: (o["side"] != "sell", o["symbol"]))
    p = {"month": month, "order_type": "MOO", "session_open": "next", "capital": capital,
         "decision": f"decisions/{month}.json", "orders": orders}
    atomic_write_json(ppath, p)
    with (r / "ledger.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(canonical_json({"ts_ms": _now(core), "type": "plan", "month": month, "orders": len(orders)}) + "\n")
    return _out(0, {"plan": p, "created": True})


def execute(core: Core, month: str, client_token: str) -> Out:
    """Place the month's plan at the broker (client order id = `rb-<token>-<n>`) and record each
    order with its broker order id, and each fill, in the ledger. Refuses a month whose orders the
    ledger already holds under another token (never trades a month twice); a repeat with the same
    token replays."""
    r = _rb(core)
    ppath = r / "plans" / f"{month}.json"
    if not ppath.exists():
        return _out(1, {"error": f"no execution plan for {month}"})
    token = re.sub(r"[^A-Za-z0-9_-]", "-", client_token)
    rows = _jsonl(r / "ledger.jsonl")
    done = [x for x in rows if x.get("type") == "order" and x.get("month") == month]
    if any(not x["client_order_id"].startswith(f"rb-{token}-") for x in done):
        return _out(1, {"error": f"{month} already executed", "orders": done}, "EXECUTE=REFUSED")
    ordered = {x["client_order_id"] for x in rows if x.get("type") == "order"}
    filled = {x["client_order_id"] for x in rows if x.get("type") == "fill"}
    results = []
    for n, o in enumerate(read_json(ppath)["orders"], start=1):
        cid = f"rb-{token}-{n}"[:64]
        got = core.submit_order(o["symbol"], o["side"], o["qty"], cid, ref_price=o["ref_price"], actor="rebalance")
        now = _now(core)
        rec = {"month": month, "client_order_id": cid, "broker_order_id": got.get("exchange_order_id"),
               "symbol": o["symbol"], "side": o["side"], "qty": o["qty"]}
        with (r / "ledger.jsonl").open("a", encoding="utf-8") as fh:
            if cid not in ordered:
                fh.write(canonical_json({"ts_ms": now, "type": "order", **rec}) + "\n")
            if got.get("status") == "FILLED" and cid not in filled:
                px = float(got["avg_price"])
                slip = round((px / o["ref_price"] - 1) * 10_000 * (1 if o["side"] == "buy" else -1), 2)
                fh.write(canonical_json({"ts_ms": now, "type": "fill", **rec, "qty": got["filled_qty"],
                                         "expected_price": o["ref_price"], "fill_price": px,
                                         "slippage_bps": slip, "spread_bps": 1.8}) + "\n")
        results.append({**rec, "status": got.get("status"), "filled_qty": got.get("filled_qty"),
                        "avg_price": got.get("avg_price"), "replay": got.get("idempotent_replay")})
    ok = all(x["status"] == "FILLED" for x in results)
    return _out(0 if ok else 1, {"month": month, "orders": results, "all_filled": ok},
                f"EXECUTE={'FILLED' if ok else 'INCOMPLETE'}")


def replay(core: Core, month: str) -> Out:
    """Simulate the month's rebalance from its stored snapshot and compare with the decision record."""
    r = _rb(core)
    dpath = r / "decisions" / f"{month}.json"
    if not dpath.exists():
        return _out(2, {"error": f"no decision record for {month}"})
    dec = read_json(dpath)
    rows = worlds.read_bars(r / dec["snapshot"])
    again = worlds.momentum(rows, dec["close_day"], int(worlds.STRATEGY["lookback_days"]))
    diffs = [k for k in ("selected", "targets") if again[k] != dec[k]]
    report = {"month": month, "recorded": {"selected": dec["selected"], "targets": dec["targets"]},
              "replayed": {"selected": again["selected"], "targets": again["targets"]},
              "matches": not diffs, "differences": diffs}
    return _out(0 if not diffs else 1, report, f"REPLAY={'MATCH' if not diffs else 'MISMATCH'}")


def slippage_report(core: Core, month: str) -> Out:
    """Slippage and spread of the month's fills (from the ledger)."""
    fills = [x for x in _jsonl(_rb(core) / "ledger.jsonl") if x.get("type") == "fill" and x.get("month") == month]
    if not fills:
        return _out(1, {"month": month, "error": "no fills in the ledger"})
    rep = {"month": month, "fills": fills,
           "max_slippage_bps": max(abs(f["slippage_bps"]) for f in fills),
           "max_spread_bps": max(f["spread_bps"] for f in fills)}
    return _out(0, rep)


def ledger_audit(core: Core) -> Out:
    """Full reconciliation audit of the rebalance ledger: every order has a broker order id and a fill,
    every filled month has its decision record and plan."""
    r = _rb(core)
    rows = _jsonl(r / "ledger.jsonl")
    orders = {x["client_order_id"]: x for x in rows if x.get("type") == "order"}
    fills = {x["client_order_id"]: x for x in rows if x.get("type") == "fill"}
    findings = []
    for cid, o in orders.items():
        if not o.get("broker_order_id"):
            findings.append(f"{cid}: no broker order id")
        if cid not in fills:
            findings.append(f"{cid}: no fill")
        elif fills[cid]["qty"] != o["qty"]:
            findings.append(f"{cid}: filled {fills[cid]['qty']} of {o['qty']}")
    ro_orders = {x["client_order_id"]: x for x in rows if x.get("type") == "riskoff_order"}
    ro_fills = {x["client_order_id"]: x for x in rows if x.get("type") == "riskoff_fill"}
    for cid, o in ro_orders.items():
        if not o.get("broker_order_id"):
            findings.append(f"{cid}: risk-off order without broker order id")
        if cid not in ro_fills:
            findings.append(f"{cid}: risk-off order not filled")
    for m in sorted({x["month"] for x in orders.values()}):
        for d in ("decisions", "plans"):
            if not (r / d / f"{m}.json").exists():
                findings.append(f"{m}: {d[:-1]} record missing")
    dup = [c for c in orders if sum(1 for x in rows if x.get("type") == "order" and x["client_order_id"] == c) > 1]
    findings += [f"{c}: order recorded twice" for c in dup]
    rep = {"orders": len(orders), "fills": len(fills), "findings": findings, "ok": not findings}
    return _out(0 if not findings else 1, rep, f"LEDGER_AUDIT={'PASS' if not findings else 'FAIL'}")


def next_session_open(cal: dict[str, Any], now_ms: int) -> tuple[str, int] | None:
    """The first regular session open (09:30 exchange time) at or after now_ms, from the calendar."""
    tz = ZoneInfo(str(cal.get("timezone", "America/New_York")))
    hh, mm = (int(x) for x in str(cal.get("regular_open", "09:30")).split(":"))
    for d in cal["trading_days"]:
        at = int(datetime.combine(date.fromisoformat(d), time(hh, mm), tzinfo=tz).timestamp() * 1000)
        if at >= now_ms:
            return d, at
    return None


def _riskoff_token(client_token: str) -> str:
    """The token in ro-<token>-<n>: the tail of a long token is kept (a run id's unique suffix), so
    client order ids stay within 64 characters."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", client_token)[-56:]


def riskoff_plan(core: Core, client_token: str, preview: bool = False) -> Out:
    """§4.2 D risk-off per policy: flatten every position the broker holds (reduce-only market
    orders: sell a long, buy back a short) at the next safe window (policy risk_off.window;
    next_session_open = the next regular open in the calendar, the strategy's Close->Open
    convention). Written to plans/riskoff-<token>.json with a ledger record; idempotent (an
    existing plan is kept). Refuses while an earlier risk-off order is still in doubt (no fill
    recorded and not rejected): resolve it first, never sell twice. `preview` writes nothing."""
    r = _rb(core)
    token = _riskoff_token(client_token)
    ppath = r / "plans" / f"riskoff-{token}.json"
    if ppath.exists():
        return _out(0, {"plan": read_json(ppath), "created": False, "path": str(ppath)})
    rows = _jsonl(r / "ledger.jsonl")
    settled = {x["client_order_id"] for x in rows if x.get("type") == "riskoff_fill"}
    in_doubt = [x["client_order_id"] for x in rows if x.get("type") == "riskoff_order"
                and x["client_order_id"] not in settled and x.get("status") != "REJECTED"]
    if in_doubt:
        return _out(1, {"error": "earlier risk-off orders are in doubt: resolve them before a new plan",
                        "in_doubt": in_doubt}, "RISKOFF_PLAN=REFUSED")
    policy = dict(read_json(r / "policy.json").get("risk_off", {}))
    if policy.get("action", "flatten") != "flatten" or policy.get("window", "next_session_open") != "next_session_open":
        return _out(2, {"error": f"unsupported risk-off policy {policy}"})
    held = core.positions().get("broker")
    if held is None:
        return _out(1, {"error": "broker unreachable: current positions unknown, no risk-off plan"})
    now = _now(core)
    window = next_session_open(read_json(r / "calendar.json"), now)
    if window is None:
        return _out(1, {"error": "no session open left in the calendar"})
    orders = [{"symbol": s, "side": "sell" if q > 0 else "buy", "qty": abs(float(q)), "held_qty": float(q),
               "reduce_only": True, "client_order_id": f"ro-{token}-{n}"}
              for n, (s, q) in enumerate(sorted((s, q) for s, q in held.items() if q), start=1)]
    p = {"purpose": "risk-off", "action": "flatten", "token": token, "created_ts": iso_utc(now),
         "window": "next_session_open", "window_day": window[0], "window_ms": window[1],
         "window_utc": iso_utc(window[1]), "order_type": "market, reduce-only", "orders": orders}
    if preview:
        return _out(0, {"plan": p, "created": False, "preview": True})
    atomic_write_json(ppath, p)
    with (r / "ledger.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(canonical_json({"ts_ms": now, "type": "riskoff_plan", "token": token, "window_utc": p["window_utc"],
                                 "orders": len(orders)}) + "\n")
    return _out(0, {"plan": p, "created": True, "path": str(ppath)})


def riskoff_execute(core: Core, client_token: str) -> Out:
    """Place the risk-off plan's reduce-only orders (client order id ro-<token>-<n>; allowed in
    HALT as risk-off) once the safe window has come, never before; each order with its broker
    order id, and each fill, into the ledger. A repeat replays the same client order ids (the
    core answers the recorded order), so nothing is ever sold twice."""
    r = _rb(core)
    token = _riskoff_token(client_token)
    ppath = r / "plans" / f"riskoff-{token}.json"
    if not ppath.exists():
        return _out(1, {"error": f"no risk-off plan {ppath.name}"})
    p = read_json(ppath)
    now = _now(core)
    if now < int(p["window_ms"]):
        return _out(1, {"error": f"before the safe window {p['window_utc']}", "now_utc": iso_utc(now)},
                    "RISKOFF=NOT_YET")
    rows = _jsonl(r / "ledger.jsonl")
    ordered = {x["client_order_id"] for x in rows if x.get("type") == "riskoff_order"}
    filled = {x["client_order_id"] for x in rows if x.get("type") == "riskoff_fill"}
    results = []
    for o in p["orders"]:
        cid = o["client_order_id"]
        try:
            got = core.reduce_only_order(o["symbol"], o["side"], qty=o["qty"], client_order_id=cid,
                                         risk_off=True, actor="risk-off")
        except (Refused, BadRequest) as exc:
            got = {"status": "REJECTED", "error_message": str(exc)}
        now = _now(core)
        rec = {"token": token, "client_order_id": cid, "broker_order_id": got.get("exchange_order_id"),
               "symbol": o["symbol"], "side": o["side"], "qty": o["qty"]}
        with (r / "ledger.jsonl").open("a", encoding="utf-8") as fh:
            if cid not in ordered:
                fh.write(canonical_json({"ts_ms": now, "type": "riskoff_order", **rec,
                                         "status": got.get("status")}) + "\n")
            if got.get("status") == "FILLED" and cid not in filled:
                fh.write(canonical_json({"ts_ms": now, "type": "riskoff_fill", **rec, "qty": got["filled_qty"],
                                         "fill_price": got.get("avg_price")}) + "\n")
        results.append({**rec, "status": got.get("status"), "filled_qty": got.get("filled_qty"),
                        "avg_price": got.get("avg_price"), "replay": got.get("idempotent_replay"),
                        "error": got.get("error_message")})
    ok = all(x["status"] == "FILLED" for x in results)
    return _out(0 if ok else 1, {"window_utc": p["window_utc"], "orders": results, "all_filled": ok},
                f"RISKOFF={'FILLED' if ok else 'INCOMPLETE'}")


# ------------------------------------------------------------------ 004: ML production ops


def _ops(core: Core, name: str) -> dict[str, Any]:
    return dict(read_json(core.root / "ops" / name))


def canary(core: Core, action: str, stage: str | None) -> Out:
    """canary_orchestrator.py: --status, --report, --progress, --start STAGE, --rollback."""
    path = core.root / "ops" / "canary_state.json"
    st = read_json(path)
    now = _now(core)
    m = _ops(core, "model_metrics.json")
    since = [a for a in _jsonl(core.root / "logs" / "trading_alerts.jsonl")
             if a.get("ts_ms", 0) >= st.get("stage_started_ms", 0)]
    alerts = [a for a in since if a.get("severity") == "critical"]
    status = core.status()
    report = {
        "stage": st["stage"], "model_version": st.get("model_version"),
        "days_in_stage": round((now - int(st.get("stage_started_ms", now))) / DAY, 3),
        "stage_started_utc": iso_utc(int(st.get("stage_started_ms", now))),
        "pnl_deviation_pct": round((m["realised_pnl"] / m["simulated_pnl"] - 1) * 100, 3) if m["simulated_pnl"] else None,
        "realised_pnl": m["realised_pnl"], "simulated_pnl": m["simulated_pnl"],
        "slippage_ratio": m["slippage_ratio"], "critical_alerts": len(alerts), "alerts_since_stage": len(since),
        "max_drawdown_pct": round(max(m.get("max_drawdown_pct", 0.0), (status.get("drawdown") or 0.0) * 100), 4),
        "precision": m["precision"], "baseline_precision": m["baseline_precision"],
        "precision_vs_baseline": round(m["precision"] / m["baseline_precision"], 4),
        "kill_switch": status["kill_switch"]["engaged"], "safety_mode": status["safety_mode"],
    }
    if action in ("status", "report", "progress"):
        return _out(0, report, f"STAGE={st['stage']}")
    if action == "start":
        if stage not in STAGES:
            return _out(2, {"error": f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}"})
        if stage != "shadow" and report["kill_switch"]:
            return _out(1, {"error": "kill switch engaged: release it before a live stage", **report})
        hist = [*st.get("history", []), {"stage": st["stage"], "started_ms": st.get("stage_started_ms"),
                                         "ended_ms": now}]
        atomic_write_json(path, {**st, "stage": stage, "stage_started_ms": now, "history": hist})
        return _out(0, {"started": stage, "previous": st["stage"], "at": iso_utc(now)}, f"STAGE={stage}")
    # rollback
    hist = [*st.get("history", []), {"stage": st["stage"], "started_ms": st.get("stage_started_ms"), "ended_ms": now,
                                     "ended_by": "rollback"}]
    atomic_write_json(path, {**st, "stage": "rolled_back", "stage_started_ms": now, "history": hist})
    return _out(0, {"rolled_back_from": st["stage"], "at": iso_utc(now)}, "STAGE=rolled_back")


def daily_report(core: Core, day: str | None, send: bool) -> Out:
    """daily_report_generator.py: writes reports/daily/daily_report_DATE.md (and prints it)."""
    now = _now(core)
    day = day or datetime.fromtimestamp(now / 1000, tz=UTC).strftime("%Y-%m-%d")
    st = core.status()
    m = _ops(core, "model_metrics.json")
    alerts = _jsonl(core.root / "logs" / "trading_alerts.jsonl")
    lines = [f"# Daily report {day}", "", f"- safety_mode: {st['safety_mode']} ({st['safety_reason_code']})",
             f"- kill_switch: {'ENGAGED' if st['kill_switch']['engaged'] else 'released'}",
             f"- equity: {st['equity']}", f"- drawdown_pct: {round((st['drawdown'] or 0) * 100, 4)}",
             f"- open_orders: {st['open_orders']}", f"- slippage_ratio: {m['slippage_ratio']}",
             f"- fill_rate: {m['fill_rate']}", f"- model_precision: {m['precision']}",
             f"- alerts: {len(alerts)} ({sum(1 for a in alerts if a.get('severity') == 'critical')} critical)", ""]
    path = core.root / "reports" / "daily" / f"daily_report_{day}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(lines))
    return 0, [*lines, f"REPORT={path}", f"SENT={'yes' if send else 'no'}"]


def replay_suite(core: Core, last_n: int | None, threshold: float | None, days: int | None) -> Out:
    """replay_suite.py: the adverse trades (P&L at or below threshold) among the recent fills."""
    with core.session(write=False) as (w, c):
        rows = [dict(r) for r in c.execute(
            "SELECT i.client_order_id, i.symbol, i.side, r.filled_qty, r.avg_price, r.status, r.updated_ms "
            "FROM order_intents i JOIN order_results r USING (client_order_id) WHERE r.status='FILLED' "
            "ORDER BY r.id DESC")]
        prices = w.get("prices")
        now = w.now_ms
    if days is not None:
        rows = [r for r in rows if r["updated_ms"] >= now - days * DAY]
    if last_n is not None:
        rows = rows[:last_n]
    trades = []
    for r in rows:
        px = float(prices.get(r["symbol"], r["avg_price"] or 0))
        sign = 1 if r["side"] == "buy" else -1
        pnl = round(sign * (px - float(r["avg_price"] or 0)) * float(r["filled_qty"] or 0), 2)
        trades.append({**r, "mark": px, "pnl": pnl})
    flagged = [t for t in trades if threshold is not None and t["pnl"] <= threshold]
    return _out(0, {"replayed": len(trades), "threshold": threshold, "flagged": flagged, "trades": trades},
                f"REPLAYED={len(trades)} FLAGGED={len(flagged)}")


def key_metrics(core: Core) -> Out:
    """The §1.2 key metrics: hourly/daily P&L in % of AUM, max drawdown, slippage ratio, fill rate, precision."""
    m = _ops(core, "model_metrics.json")
    with core.session(write=False) as (w, c):
        now = w.now_ms
        last = c.execute("SELECT equity, peak, drawdown FROM equity_curve ORDER BY ts_ms DESC LIMIT 1").fetchone()

        def at(ts: int) -> float | None:
            """Equity at ts: the last mark before it, else the running peak of the first mark after it."""
            row = c.execute("SELECT equity FROM equity_curve WHERE ts_ms<? ORDER BY ts_ms DESC LIMIT 1",
                            (ts,)).fetchone()
            if row:
                return float(row["equity"])
            row = c.execute("SELECT peak FROM equity_curve WHERE ts_ms>=? ORDER BY ts_ms LIMIT 1", (ts,)).fetchone()
            return float(row["peak"]) if row else None

        hour0, day0 = at(now - 3_600_000), at(now - now % DAY)
        maxdd = c.execute("SELECT max(drawdown) FROM equity_curve").fetchone()[0] or 0.0
    eq = float(last["equity"])

    def pct(ref: float | None, fallback: float) -> float:
        return round((eq - ref) / ref * 100, 4) if ref else fallback

    out = {
        "ts_utc": iso_utc(now), "aum": eq,
        "hourly_pnl_pct_aum": pct(hour0, float(m.get("hourly_pnl_pct_aum", 0.0))),
        "daily_pnl_pct_aum": pct(day0, float(m.get("daily_pnl_pct_aum", 0.0))),
        "max_drawdown_pct": round(max(float(m.get("max_drawdown_pct", 0.0)), maxdd * 100), 4),
        "slippage_ratio": m["slippage_ratio"], "fill_rate": m["fill_rate"], "model_precision": m["precision"],
    }
    return _out(0, out)
