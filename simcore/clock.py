"""The simulation clock: one tick advances time a bar and runs the core's cycle.

A tick moves the market (world.db prices, a new XAUUSD bar in the live CSV unless the feed is
stalled), checks schema and kill switch, ingests bars up to the cursor, matches and syncs
orders, runs the seed 000 strategy, marks equity, reconciles, appends the metrics line and lets
the monitors of simcore.worlds observe.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from . import db, ledger, market, orders, reconcile, risk, safety
from .broker import World
from .errors import BrokerUnavailable
from .fsutil import append_line, canonical_json, int_or_none, iso_utc
from .reconcile import local_positions
from .settings import DEFAULT_SETTINGS

if TYPE_CHECKING:
    from .core import Core


def set_cursor(c: sqlite3.Connection, ts_ms: int, now_ms: int) -> None:
    """Record the last processed bar (last_processed_timestamp_ms / _event_key) in system_state."""
    db.set_state(c, "last_processed_timestamp_ms", ts_ms, now_ms)
    db.set_state(c, "last_processed_event_key", f"XAUUSD:M1:{ts_ms}", now_ms)


def now_stale(bars: list[market.Bar], now_ms: int, max_age_ms: int) -> bool:
    """True when the newest bar is older than max_age_ms at now_ms."""
    return not bars or now_ms - int(bars[-1]["ts_ms"]) > max_age_ms


def tick(core: Core, n: int = 1) -> dict[str, Any]:
    """Advance simulated time n bars: market, ingest, orders, strategy, equity, risk, reconcile."""
    events: list[str] = []
    with core.session() as (w, c):
        for _ in range(max(0, n)):
            tick_once(core, w, c, events)
        st = db.get_state(c)
        return {"ticks": n, "sim_now_ms": w.now_ms, "sim_now_utc": iso_utc(w.now_ms),
                "safety_mode": st.get("safety_mode"), "safety_reason_code": st.get("safety_reason_code"),
                "events": events}


def tick_once(core: Core, w: World, c: sqlite3.Connection, events: list[str]) -> None:
    """One bar of the cycle inside an open session; appends what happened to events."""
    interval = int(core.setting("ingest", "bar_interval_ms"))
    with db.tx(w.conn):
        step, now = int(w.get("step")) + 1, w.now_ms + interval
        w.set("step", step)
        w.set("now_ms", now)
        prices = w.get("prices")
        prices["BTCUSDT"] = market.walk_price(w.seed, "BTCUSDT", step, prices["BTCUSDT"])
        bar = None
        if not w.get("feed_stalled"):
            bar = market.make_bar(w.seed, now, float(prices["XAUUSD"]))
            prices["XAUUSD"] = float(bar["close"])
            market.append_bar(core.lay.csv, bar)
        w.set("prices", prices)
    st = db.get_state(c)
    if st.get("schema_version") != str(db.SCHEMA_VERSION):
        with db.tx(c):
            if safety.escalate(c, now, "HALT", "SCHEMA_VERSION_MISMATCH",
                               f"schema_version={st.get('schema_version')} expected {db.SCHEMA_VERSION}"):
                events.append("HALT SCHEMA_VERSION_MISMATCH")
    if core.lay.kill_switch.exists() and (
        db.get_state(c).get("safety_mode") != "HALT"
        or c.execute("SELECT 1 FROM order_results WHERE status IN ('PENDING','NEW','OPEN')").fetchone()
    ):
        risk.engage_kill_switch(core, w, c, "KILL_SWITCH file present", "simcore", "KILL_SWITCH_ENGAGED")
        events.append("HALT KILL_SWITCH_ENGAGED")
    bars = ingest(core, w, c, now, events)
    broker_ok = True
    try:
        w.require_up()
    except BrokerUnavailable as exc:
        broker_ok = False
        if exc.error_code == "TIMEOUT":
            with db.tx(c):
                if safety.escalate(c, now, "ARMED_SAFE", "BROKER_DOWN", str(exc)):
                    events.append("ARMED_SAFE BROKER_DOWN")
    if broker_ok and bar is not None:
        with db.tx(w.conn):
            w.match(bar, float(core.setting("execution", "max_slippage_bps")))
    orders.sync_open_orders(core, w, c)
    if broker_ok and bars:
        strategy(core, w, c, bars, step)
    risk.mark_equity(core, w, c, now, events)
    drift: list[dict[str, Any]] | None = None
    if broker_ok:
        r = reconcile.run(core, w, c, False, "simcore", record=False)
        drift = list(r["drift"]) + [{"symbol": m, "missing": True} for m in r["missing_symbols"]]
        with db.tx(w.conn):  # how long positions have stayed unreconciled (seed 003 §5 automatic kill switch)
            w.set("unreconciled_since_ms", (w.get("unreconciled_since_ms") or now) if drift else None)
        if r["transition"]:
            events.append(f"{r['transition']['safety_mode']} {r['transition']['reason_code']}")
    metrics_line(core, now, w, c)
    observe_cycle(core, w, c, drift, events)


def observe_cycle(core: Core, w: World, c: sqlite3.Connection, drift: list[dict[str, Any]] | None,
                  events: list[str]) -> None:
    """The seed 001/003 monitors around the core observe one cycle (simcore.worlds)."""
    from . import worlds

    st = db.get_state(c)
    events.extend(worlds.observe(core.root, w.now_ms, {
        "safety_mode": st.get("safety_mode"), "safety_reason_code": st.get("safety_reason_code"),
        "feed_stalled": bool(w.get("feed_stalled")), "kill_switch": risk.kill_switch_state(core)}, drift))


def observe(core: Core) -> list[str]:
    """One monitor cycle without advancing time (after a fault or a heal)."""
    events: list[str] = []
    with core.session() as (w, c):
        drift = None
        try:
            w.require_up()
            broker, local = w.positions(), local_positions(c)
            tol = float(core.setting("reconcile", "tolerance_qty"))
            drift = [{"symbol": sym, "local": local.get(sym, 0.0), "broker": broker.get(sym)}
                     for sym in sorted(set(local) | set(broker))
                     if abs((broker.get(sym) or 0.0) - local.get(sym, 0.0)) > tol]
        except BrokerUnavailable:
            pass
        observe_cycle(core, w, c, drift, events)
    return events


def ingest(core: Core, w: World, c: sqlite3.Connection, now: int, events: list[str]) -> list[market.Bar]:
    """Advance the cursor over new bars (or skip or HALT on a gap past the backfill window); the bars."""
    st = db.get_state(c)
    cursor = int_or_none(st.get("last_processed_timestamp_ms")) or 0
    window = int(core.settings.get("backfill_window_ms", DEFAULT_SETTINGS["backfill_window_ms"]))
    try:
        bars = market.read_csv(core.lay.csv)
    except market.DataInvalid as exc:
        with db.tx(c):
            safety.escalate(c, now, "ARMED_SAFE", "DATA_INVALID", str(exc))
        return []
    if now - cursor > window:
        if core.setting("ingest", "maintenance_skip_gap"):
            with db.tx(c):
                set_cursor(c, int(bars[-1]["ts_ms"]), now)
                db.set_state(c, "maintenance_skip_applied_ms", now, now)
                mode, code = st.get("safety_mode"), st.get("safety_reason_code")
                if mode != "HALT" or code == "BACKFILL_WINDOW_EXCEEDED":
                    safety.transition(c, now, "ARMED_SAFE", "MAINTENANCE_SKIP_APPLIED",
                                      f"gap {now - cursor}ms > backfill_window_ms {window}; cursor set to now",
                                      "simcore", action="maintenance_skip")
            events.append("MAINTENANCE_SKIP_APPLIED")
            return bars
        with db.tx(c):
            if safety.escalate(c, now, "HALT", "BACKFILL_WINDOW_EXCEEDED",
                               f"cursor lag {now - cursor}ms > backfill_window_ms {window}"):
                events.append("HALT BACKFILL_WINDOW_EXCEEDED")
        return bars
    if st.get("safety_mode") == "HALT":
        return bars  # ingest paused while halted
    new = [b for b in bars if cursor < int(b["ts_ms"]) <= now]
    with db.tx(c):
        for b in new:
            c.execute("INSERT OR IGNORE INTO processed_txs VALUES (?,?,?,?)",
                      (f"XAUUSD:M1:{b['ts_ms']}", b["ts_ms"], "bar", now))
        if new:
            set_cursor(c, int(new[-1]["ts_ms"]), now)
        max_stale = int(core.setting("data", "max_staleness_sec")) * 1000
        if now - int(bars[-1]["ts_ms"]) > max_stale:
            if safety.escalate(c, now, "ARMED_SAFE", "DATA_STALE",
                               f"last bar {iso_utc(int(bars[-1]['ts_ms']))} older than {max_stale // 1000}s"):
                events.append("ARMED_SAFE DATA_STALE")
    return bars


def strategy(core: Core, w: World, c: sqlite3.Connection, bars: list[market.Bar], step: int) -> None:
    """Seed 000's momentum strategy: while ARMED_LIVE, one limit order toward its XAUUSD target."""
    st = db.get_state(c)
    if st.get("safety_mode") != "ARMED_LIVE" or core.lay.kill_switch.exists():
        return
    if c.execute("SELECT 1 FROM order_results r JOIN order_intents i USING (client_order_id) "
                 f"WHERE i.source='strategy' AND r.status IN {db.OPEN_STATUSES}").fetchone():
        return
    try:
        params = ledger.current_state(core.lay)["strategy"]
        lookback, mult = int(params["lookback"]), float(params["exposure_multiplier"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    if len(bars) <= lookback or now_stale(bars, w.now_ms, 2 * int(core.setting("ingest", "bar_interval_ms"))):
        return
    close = float(bars[-1]["close"])
    target = orders.sign(close - float(bars[-1 - lookback]["close"])) * round(mult, 3)
    if abs(target) * close > float(core.setting("risk", "max_position_notional")):
        return
    diff = round(target - local_positions(c).get("XAUUSD", 0.0), 6)
    if abs(diff) < 1e-9:
        return
    side = "buy" if diff > 0 else "sell"
    limit = round(close * (1 - 0.0002 if side == "buy" else 1 + 0.0002), 3)
    orders.submit_intent(core, w, c, f"strat-{step:06d}", "XAUUSD", side, abs(diff), "limit", limit, False,
                 "strategy", "simcore", round(abs(diff) * close, 2))


def metrics_line(core: Core, now: int, w: World | None = None, c: sqlite3.Connection | None = None) -> None:
    """Append one JSON line (mode, cursor, equity, open orders, kill switch) to logs/metrics.log."""
    if w is None or c is None:
        with core.session(write=False) as (w2, c2):
            return metrics_line(core, now, w2, c2)
    st = db.get_state(c)
    eq = c.execute("SELECT equity, drawdown FROM equity_curve ORDER BY ts_ms DESC LIMIT 1").fetchone()
    open_n = c.execute(f"SELECT count(*) FROM order_results WHERE status IN {db.OPEN_STATUSES}").fetchone()[0]
    rec = {"ts_ms": now, "ts_utc": iso_utc(now), "safety_mode": st.get("safety_mode"),
           "last_processed_timestamp_ms": int_or_none(st.get("last_processed_timestamp_ms")),
           "equity": eq["equity"] if eq else None, "drawdown": eq["drawdown"] if eq else None,
           "open_orders": open_n, "kill_switch": int(core.lay.kill_switch.exists())}
    append_line(core.lay.metrics_log, canonical_json(rec))
    return None
