"""The file worlds of seeds 001, 003 and 004 around the core: written at `simcore init`,
evolved by `tick` and by faults, read by the runbooks through their ordinary signals.

- 001: the paper session's artifacts under results/runs/r1/ (reconciliation, data-quality,
  ops/SLO and incident events, gateway stats) and the paper KPIs.
- 003: rebalance/ (trading calendar, strategy version and validated baseline, scheduler
  heartbeat and jobs, primary/secondary daily-bar providers, the working bars with their
  provenance, decision records, execution plans, the rebalance ledger, stored snapshots,
  policy).
- 004: models/ (registry, active, last known good), logs/trading_alerts.jsonl, reports/daily/,
  ops/ (canary state, model metrics, drift report, retrain candidate).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from . import datafeed
from .fsutil import (
    append_line,
    atomic_write_json,
    atomic_write_text,
    canonical_json,
    iso_utc,
    read_json,
)
from .market import rng_for

SESSION = Path("results/runs/r1")
REBAL = Path("rebalance")
UNIVERSE: dict[str, float] = {"SPY": 470.0, "EFA": 78.0, "EEM": 41.0, "IEF": 95.0}
HOLIDAYS_2025_2026 = {
    "2025-01-01", "2025-01-09", "2025-01-20", "2025-02-17", "2025-04-18", "2025-05-26", "2025-06-19",
    "2025-07-04", "2025-09-01", "2025-11-27", "2025-12-25",
    "2026-01-01", "2026-01-19", "2026-02-16", "2026-04-03", "2026-05-25", "2026-06-19", "2026-07-03",
    "2026-09-07", "2026-11-26", "2026-12-25",
}
EARLY_CLOSES: dict[str, str] = {"2025-07-03": "13:00", "2025-11-28": "13:00", "2025-12-24": "13:00",
                "2026-11-27": "13:00", "2026-12-24": "13:00"}
STRATEGY: dict[str, Any] = {"strategy_version": "xsmom-2.1.0", "code_commit": "3f9c2e1d8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d",
            "universe": sorted(UNIVERSE), "lookback_days": 252, "convention": "close_to_open"}
POLICY: dict[str, Any] = {"catch_up_post_open": False, "decision_deadline_min_after_close": 60,
          "broker_retry": {"attempts": 3, "delay_s": 1}, "halt_window_min": 30,
          "unreconciled_max_min": 30, "slippage_band_bps": 10.0, "spread_band_bps": 5.0,
          "max_daily_jump_pct": 15.0,
          # §4.2 D "risk-off per policy at next safe window": flatten at the next regular session open
          "risk_off": {"action": "flatten", "window": "next_session_open", "reduce_only": True}}
MODELS: dict[str, dict[str, Any]] = {
    "v2.3.0": {"precision": 0.58, "signed_off_by": "risk:carol", "registered_at": "2025-10-02T09:00:00Z"},
    "v2.3.1": {"precision": 0.60, "signed_off_by": "risk:carol", "registered_at": "2025-11-14T09:00:00Z"},
    "v2.4.0": {"precision": 0.61, "signed_off_by": "risk:dave", "registered_at": "2026-01-05T09:00:00Z"},
}
DAY = 86_400_000


def _jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(canonical_json(r) + "\n" for r in records)


def _event(now: int, kind: str, **fields: Any) -> dict[str, Any]:
    return {"ts": iso_utc(now), "ts_ms": now, "event_type": kind, **fields}


# ------------------------------------------------------------------ calendar and daily bars


def trading_days(first: date, last: date) -> list[str]:
    """Weekdays from first to last (inclusive) that are not exchange holidays."""
    out, d = [], first
    while d <= last:
        s = d.isoformat()
        if d.weekday() < 5 and s not in HOLIDAYS_2025_2026:
            out.append(s)
        d += timedelta(days=1)
    return out


def calendar(now_ms: int) -> dict[str, Any]:
    """The exchange calendar of 2025-2026: trading days, early closes, last trading day per month."""
    days = trading_days(date(2025, 1, 1), date(2026, 12, 31))
    last: dict[str, str] = {}
    for d in days:
        last[d[:7]] = d
    return {"exchange": "NYSE", "timezone": "America/New_York", "regular_open": "09:30", "regular_close": "16:00",
            "trading_days": days, "early_closes": EARLY_CLOSES, "last_trading_day": last,
            "holidays": sorted(HOLIDAYS_2025_2026)}


def prior_close_day(now_ms: int) -> str:
    """The last trading day strictly before the simulated day."""
    today = datetime.fromtimestamp(now_ms / 1000, tz=UTC).date()
    return trading_days(date(2025, 1, 1), today - timedelta(days=1))[-1]


def daily_bars(seed: int, through: str) -> list[dict[str, Any]]:
    """Deterministic daily closes of the universe for every trading day through `through`."""
    rows: list[dict[str, Any]] = []
    prices = dict(UNIVERSE)
    drift = {"SPY": 0.0006, "EFA": 0.0002, "EEM": -0.0001, "IEF": 0.0001}
    for d in trading_days(date(2025, 1, 2), date.fromisoformat(through)):
        for sym in sorted(UNIVERSE):
            r = rng_for(seed, "daily", sym, d)
            prices[sym] = round(prices[sym] * (1 + drift[sym] + r.gauss(0, 0.009)), 2)
            rows.append({"date": d, "symbol": sym, "close": prices[sym]})
    return rows


def bars_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["date", "symbol", "close"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def read_bars(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [{"date": r["date"], "symbol": r["symbol"], "close": float(r["close"])} for r in csv.DictReader(fh)]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_provider(root: Path, name: str, rows: list[dict[str, Any]], now_ms: int) -> None:
    """A provider's daily bars and the manifest (sha256, through date) it publishes with them."""
    d = root / REBAL / "providers" / name
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "daily_bars.csv", bars_csv(rows))
    atomic_write_json(d / "manifest.json", {"provider": name, "sha256": sha256_file(d / "daily_bars.csv"),
                                            "through": rows[-1]["date"], "published_ms": now_ms})


def momentum(rows: list[dict[str, Any]], through: str, lookback: int) -> dict[str, Any]:
    """12-month momentum scores through `through`; the top symbol gets 100% if its score is positive."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["date"] <= through:
            by.setdefault(r["symbol"], []).append(r)
    scores, prices = {}, {}
    for sym, series in sorted(by.items()):
        ref = series[max(0, len(series) - 1 - lookback)]
        scores[sym] = round(series[-1]["close"] / ref["close"] - 1, 6)
        prices[sym] = {"close": series[-1]["close"], "date": series[-1]["date"]}
    best = max(scores, key=lambda s: scores[s])
    targets = {s: (1.0 if s == best and scores[s] > 0 else 0.0) for s in scores}
    if all(v == 0.0 for v in targets.values()):
        targets["IEF"] = 1.0
    return {"scores": scores, "selected": max(targets, key=lambda s: targets[s]), "targets": targets,
            "prices": prices}


# ------------------------------------------------------------------ init


def init(root: Path, seed: int, now_ms: int, config_hash: str) -> None:
    """Write the 001, 002 (docs), 003 and 004 worlds of a fresh core."""
    _init_001(root, now_ms)
    datafeed.write_history(root, seed, now_ms)
    _init_002(root, now_ms)
    _init_003(root, seed, now_ms, config_hash)
    _init_004(root, now_ms)


def _init_001(root: Path, now: int) -> None:
    s = root / SESSION
    s.mkdir(parents=True, exist_ok=True)
    t0, t1 = now - 120_000, now - 60_000
    files = {
        "order_reconciliation_events.jsonl": [
            _event(t, "order_reconciliation", status="ok", consecutive_mismatch_runs=0, mismatched_order_ids=[],
                   broker_status="up") for t in (t0, t1)],
        "position_reconciliation_events.jsonl": [
            _event(t, "position_reconciliation", status="ok", drift=[]) for t in (t0, t1)],
        "data_quality_events.jsonl": [
            _event(t1, "data_quality_cycle", errors=0, stale_warnings=0, critical_breaches=0)],
        "ops_slo_events.jsonl": [
            _event(t0, "ops_cycle", errors=0), _event(t1, "ops_cycle", errors=0),
            _event(t1, "slo_evaluation", status="ok")],
        "incident_events.jsonl": [],
    }
    for name, records in files.items():
        atomic_write_text(s / name, _jsonl(records))
    atomic_write_json(s / "data_quality_latest.json", {
        "ts": iso_utc(t1), "ts_ms": t1, "symbols": ["XAUUSD", "BTCUSDT"], "errors": 0, "stale_warnings": 0,
        "critical_breaches": 0, "bars_validated": {"XAUUSD": 30, "BTCUSDT": 30}})
    atomic_write_json(s / "gateway_stats.json", _gateway(now, None, None, True))
    (root / "audit_logs").mkdir(exist_ok=True)
    atomic_write_text(root / "audit_logs" / "risk_events.jsonl", "")


def _init_002(root: Path, now: int) -> None:
    """The copy-trader's docs that its Go/No-Go cites: the decision strategy version and the test plan record."""
    d = root / "docs" / "modules"
    d.mkdir(parents=True, exist_ok=True)
    day = iso_utc(now - 2 * DAY)[:10]
    atomic_write_text(d / "DECISION.md", "# Decision module\n\nstrategy_version: copy-v1.3.0\n\n"
                      f"## Acceptance\n\nAccepted {day} by risk (copy sizing, reduce-only exits).\n")
    atomic_write_text(root / "docs" / "TEST_PLAN.md", "# Test plan\n\n| date | suite | result |\n|---|---|---|\n"
                      f"| {day} | integration: execution adapter | PASS |\n"
                      f"| {day} | integration: reconciliation | PASS |\n"
                      f"| {day} | integration: backfill and cursor | PASS |\n")


def _gateway(now: int, halt_reason: str | None, until: int | None, up: bool) -> dict[str, Any]:
    return {"ts": iso_utc(now), "ts_ms": now, "halt_reason": halt_reason,
            "trading_halted_until": iso_utc(until) if until else None,
            "api_ok": up, "websocket_connected": up, "session_id": f"gw-{now // 60_000}"}


def _init_003(root: Path, seed: int, now: int, config_hash: str) -> None:
    r = root / REBAL
    for d in ("decisions", "plans", "snapshots", "data"):
        (r / d).mkdir(parents=True, exist_ok=True)
    atomic_write_json(r / "calendar.json", calendar(now))
    atomic_write_json(r / "strategy.json", STRATEGY)
    atomic_write_json(r / "baseline.json", {"strategy_version": STRATEGY["strategy_version"],
                                            "config_hash": config_hash, "validated_at": iso_utc(now - 10 * DAY)})
    atomic_write_json(r / "policy.json", POLICY)
    atomic_write_json(r / "heartbeat.json", {"job": "rebalance-scheduler", "ts": iso_utc(now), "ts_ms": now})
    rows = daily_bars(seed, prior_close_day(now))
    write_provider(root, "primary", rows, now)
    write_provider(root, "secondary", rows, now)
    atomic_write_text(r / "data" / "daily_bars.csv", bars_csv(rows))
    atomic_write_json(r / "data" / "provenance.json", {"provider": "primary", "through": rows[-1]["date"],
                                                       "sha256": sha256_file(r / "data" / "daily_bars.csv")})
    # The last completed rebalance (2025-12): snapshot, decision, plan, orders, fills.
    month, close_day, open_day = "2025-12", "2025-12-31", "2026-01-02"
    snap = [x for x in rows if x["date"] <= close_day]
    atomic_write_text(r / "snapshots" / f"{month}.csv", bars_csv(snap))
    dec = momentum(snap, close_day, int(STRATEGY["lookback_days"]))
    close_ms = int(datetime.fromisoformat(close_day + "T21:00:00+00:00").timestamp() * 1000)
    decision = {"month": month, "decision_ts": iso_utc(close_ms + 600_000), "close_day": close_day,
                "prices": {s: {**p, "provider": "primary"} for s, p in dec["prices"].items()},
                "scores": dec["scores"], "selected": dec["selected"], "targets": dec["targets"],
                "config_hash": config_hash, "code_commit": STRATEGY["code_commit"],
                "strategy_version": STRATEGY["strategy_version"], "snapshot": f"snapshots/{month}.csv"}
    atomic_write_json(r / "decisions" / f"{month}.json", decision)
    px = dec["prices"][dec["selected"]]["close"]
    qty = int(100_000 // px)
    plan = {"month": month, "session_open": open_day, "order_type": "MOO",
            "orders": [{"symbol": dec["selected"], "side": "buy", "qty": qty, "client_order_id": f"rb-{month}-1"}]}
    atomic_write_json(r / "plans" / f"{month}.json", plan)
    open_ms = int(datetime.fromisoformat(open_day + "T14:30:00+00:00").timestamp() * 1000)
    fill_px = round(px * 1.0003, 2)
    ledger = [
        {"ts_ms": close_ms + 600_000, "type": "decision", "month": month, "selected": dec["selected"]},
        {"ts_ms": close_ms + 900_000, "type": "plan", "month": month, "orders": 1},
        {"ts_ms": close_ms + 960_000, "type": "order", "month": month, "client_order_id": f"rb-{month}-1",
         "broker_order_id": "BRK-20251231-0001", "symbol": dec["selected"], "side": "buy", "qty": qty},
        {"ts_ms": open_ms, "type": "fill", "month": month, "client_order_id": f"rb-{month}-1",
         "broker_order_id": "BRK-20251231-0001", "symbol": dec["selected"], "qty": qty,
         "expected_price": px, "fill_price": fill_px, "slippage_bps": round((fill_px / px - 1) * 10_000, 2),
         "spread_bps": 1.8},
    ]
    atomic_write_text(r / "ledger.jsonl", _jsonl(ledger))
    atomic_write_json(r / "jobs.json", {"last_completed_month": month, "jobs": {
        month: {"status": "completed", "completed_ms": open_ms + 1_800_000}}})


def _init_004(root: Path, now: int) -> None:
    m = root / "models"
    (m / "registry").mkdir(parents=True, exist_ok=True)
    (m / "active").mkdir(parents=True, exist_ok=True)
    for version, meta in MODELS.items():
        rec = {"version": version, "sha256": hashlib.sha256(version.encode()).hexdigest(), **meta}
        atomic_write_json(m / "registry" / f"{version}.json", rec)
    atomic_write_json(m / "active" / "model_info.json", read_json(m / "registry" / "v2.4.0.json"))
    atomic_write_json(m / "last_good_model.json", read_json(m / "registry" / "v2.3.1.json"))
    (root / "logs").mkdir(exist_ok=True)
    alerts = root / "logs" / "trading_alerts.jsonl"
    if not alerts.exists():
        atomic_write_text(alerts, "")
    (root / "reports" / "daily").mkdir(parents=True, exist_ok=True)
    ops = root / "ops"
    (ops / "retrain").mkdir(parents=True, exist_ok=True)
    atomic_write_json(ops / "canary_state.json", {
        "stage": "canary_1", "stage_started_ms": now - 8 * DAY, "model_version": "v2.4.0",
        "history": [{"stage": "shadow", "started_ms": now - 40 * DAY, "ended_ms": now - 8 * DAY}]})
    atomic_write_json(ops / "model_metrics.json", {
        "ts_ms": now, "realised_pnl": 1_040.0, "simulated_pnl": 1_000.0, "slippage_ratio": 1.1,
        "fill_rate": 0.97, "precision": 0.60, "baseline_precision": 0.61, "hourly_pnl_pct_aum": 0.05,
        "daily_pnl_pct_aum": 0.2, "max_drawdown_pct": 1.2})
    atomic_write_json(ops / "drift_report.json", {
        "ts_ms": now, "psi": 0.04, "ks": 0.03, "psi_threshold": 0.2, "ks_threshold": 0.1,
        "consecutive_days_drifting": 0,
        "features": {"ret_5m": {"psi": 0.03, "ks": 0.02}, "spread": {"psi": 0.05, "ks": 0.03}}})
    atomic_write_json(ops / "retrain" / "candidate.json", {
        "version": "v2.5.0", "trained_ms": now - 3 * DAY, "validation": {
            "walk_forward_sharpe": 1.34, "deflated_sharpe": 0.41, "pbo": 0.17,
            "purged": True, "embargo_days": 5},
        "shadow_started_ms": now - 50 * 3_600_000, "registered": False})


# ------------------------------------------------------------------ evolution (tick, faults)


def _append(root: Path, rel: str, rec: dict[str, Any]) -> None:
    path = root / SESSION / rel
    if path.parent.exists():
        append_line(path, canonical_json(rec))


def _tail(path: Path) -> dict[str, Any] | None:
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def observe(root: Path, now: int, status: dict[str, Any], drift: list[dict[str, Any]] | None) -> list[str]:
    """One cycle of the paper session's monitors (001) and the scheduler heartbeat (003).

    status: the core's status; drift: reconciliation drift, None when the broker is unreachable.
    Appends reconciliation, data-quality and ops events, updates the gateway stats and the
    data-quality snapshot, and opens an incident (with its SLO breach) when a monitor trips.
    """
    events: list[str] = []
    s = root / SESSION
    if (root / REBAL / "heartbeat.json").exists() and not (root / REBAL / "scheduler_stopped").exists():
        atomic_write_json(root / REBAL / "heartbeat.json", {"job": "rebalance-scheduler", "ts": iso_utc(now),
                                                          "ts_ms": now})
    if not s.exists():
        return events
    up = drift is not None
    last = _tail(s / "order_reconciliation_events.jsonl") or {}
    bad = bool(drift) or not up
    runs = int(last.get("consecutive_mismatch_runs", 0)) + 1 if bad else 0
    ids = [f"strat-{d['symbol']}" for d in (drift or [])]
    _append(root, "order_reconciliation_events.jsonl", _event(
        now, "order_reconciliation", status="mismatch" if bad else "ok", consecutive_mismatch_runs=runs,
        mismatched_order_ids=ids, broker_status="up" if up else "down"))
    _append(root, "position_reconciliation_events.jsonl", _event(
        now, "position_reconciliation", status="mismatch" if bad else "ok", drift=drift or []))
    stale = 1 if status.get("feed_stalled") else 0
    symbols = ["XAUUSD", "BTCUSDT"]
    bars = datafeed.check_symbols(root, symbols, now, 30)
    errors = sum(len(v["findings"]) for v in bars.values())
    dq = {"errors": errors, "stale_warnings": stale, "critical_breaches": stale + (1 if errors else 0)}
    _append(root, "data_quality_events.jsonl", _event(now, "data_quality_cycle", **dq))
    atomic_write_json(s / "data_quality_latest.json", {"ts": iso_utc(now), "ts_ms": now, "symbols": symbols, **dq,
                                                       "bars_validated": {k: v["validated"] for k, v in bars.items()}})
    _append(root, "ops_slo_events.jsonl", _event(now, "ops_cycle", errors=0 if up else 1))
    halted = status.get("safety_mode") == "HALT" or status.get("kill_switch", {}).get("engaged")
    try:
        previous = read_json(s / "gateway_stats.json")
    except (OSError, ValueError):
        previous = {}
    stats = _gateway(now, (status.get("safety_reason_code") or "KILL_SWITCH") if halted else None,
                     now + 3_600_000 if halted else None, up)
    if up and previous.get("session_id"):  # the broker session survives while connected
        stats = {**previous, **stats, "session_id": previous["session_id"]}
    atomic_write_json(s / "gateway_stats.json", stats)
    trips = []
    if runs == 3:
        trips.append(("reconciliation", "order_reconciliation_consecutive_mismatch_runs", runs, 3))
    if stale or errors:
        prev = [json.loads(x) for x in (s / "data_quality_events.jsonl").read_text().splitlines()[-2:-1]]
        if not prev or not (prev[0].get("stale_warnings") or prev[0].get("errors")):
            slo = "data_stale_warnings_per_cycle" if stale else "data_quality_errors_per_cycle"
            trips.append(("data_quality", slo, stale or errors, 0))
    if not up:
        prev_ops = [json.loads(x) for x in (s / "ops_slo_events.jsonl").read_text().splitlines()
                    if '"ops_cycle"' in x][-2:-1]
        if not prev_ops or not prev_ops[0].get("errors"):
            trips.append(("broker_connectivity", "broker_api_errors", 1, 0))
    for category, slo, value, threshold in trips:
        n = sum(1 for ln in (s / "incident_events.jsonl").read_text().splitlines() if '"incident_open"' in ln)
        iid = f"INC-{now // 60_000}-{n + 1}"
        _append(root, "ops_slo_events.jsonl", _event(now, "slo_breach", slo=slo, category=category,
                                                     severity="critical", value=value, threshold=threshold))
        _append(root, "incident_events.jsonl", _event(now, "incident_open", incident_id=iid, severity="critical",
                                                      category=category))
        events.append(f"INCIDENT {iid} {category}")
    return events


def alert(root: Path, now: int, alertname: str, severity: str, **fields: Any) -> None:
    """Append one alert to the 004 #trading-alerts feed."""
    append_line(root / "logs" / "trading_alerts.jsonl",
                canonical_json({"ts": iso_utc(now), "ts_ms": now, "alertname": alertname, "severity": severity,
                                **fields}))
