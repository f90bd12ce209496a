"""Order execution: intents, submission to the simulated exchange, fills, sync and retry budget.

An order is an intent row plus a result row in core.db; the exchange (world.db) answers
FILLED / OPEN / REJECTED, or raises BrokerUnavailable and the order stays UNKNOWN until a
sync finds it. Every mutating function runs inside the caller's `Core.session()`.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

from . import db, safety
from .broker import World
from .errors import BadRequest, BrokerUnavailable, Refused
from .reconcile import local_positions

if TYPE_CHECKING:
    from .core import Core


def sign(x: float) -> int:
    """-1, 0 or 1: the sign of x."""
    return (x > 0) - (x < 0)


def order_record(c: sqlite3.Connection, client_order_id: str) -> dict[str, Any] | None:
    """The local order (intent joined with its result) by client order id, or None."""
    row = c.execute(
        "SELECT i.client_order_id, i.symbol, i.side, i.qty, i.notional, i.order_type, "
        "i.limit_price, i.reduce_only, i.source, i.created_ms, r.status, r.exchange_order_id, "
        "r.filled_qty, r.avg_price, r.error_code, r.error_message, r.attempts, r.updated_ms "
        "FROM order_intents i JOIN order_results r USING (client_order_id) "
        "WHERE i.client_order_id=?", (client_order_id,)).fetchone()
    if row is None:
        return None
    d = dict(row)
    d["reduce_only"] = bool(d["reduce_only"])
    return d


def open_orders(core: Core) -> list[dict[str, Any]]:
    """Local orders not yet terminal (PENDING, NEW, OPEN, UNKNOWN), oldest first."""
    with core.session(write=False) as (_w, c):
        ids = [r[0] for r in c.execute(
            f"SELECT client_order_id FROM order_results WHERE status IN {db.OPEN_STATUSES} ORDER BY id")]
        return [o for o in (order_record(c, i) for i in ids) if o]


def find_order(core: Core, client_order_id: str) -> dict[str, Any]:
    """Local record and exchange view of one order (verify after an in-doubt submit)."""
    with core.session(write=False) as (w, c):
        local = order_record(c, client_order_id)
        out: dict[str, Any] = {"client_order_id": client_order_id, "local": local}
        try:
            w.require_up()
            out["broker"] = w.query(client_order_id)
            out["broker_reachable"] = True
        except BrokerUnavailable as exc:
            out["broker"] = None
            out["broker_reachable"] = False
            out["broker_error"] = exc.error_code
        out["found"] = local is not None or out["broker"] is not None
        return out


def cancel_all_orders(core: Core, client_token: str | None = None, actor: str = "operator") -> dict[str, Any]:
    """Cancel every open order at the exchange and locally; idempotent on client_token."""
    with core.session() as (w, c):
        if client_token:
            row = c.execute("SELECT details FROM audit_log WHERE category='orders' AND "
                            "action='cancel_all' AND reason_code=?", (client_token,)).fetchone()
            if row:
                return {**json.loads(row["details"]), "replayed": True}
        return cancel_all(w, c, actor, client_token)


def cancel_all(w: World, c: sqlite3.Connection, actor: str, token: str | None) -> dict[str, Any]:
    """Cancel at the exchange (raises BrokerUnavailable), then locally; audited under token."""
    with db.tx(w.conn):
        ids = w.cancel_all()  # raises BrokerUnavailable
    now = w.now_ms
    with db.tx(c):
        local = [r[0] for r in c.execute(
            "SELECT client_order_id FROM order_results WHERE status IN ('PENDING','NEW','OPEN')")]
        for cid in set(local) | set(ids):
            c.execute("UPDATE order_results SET status='CANCELED', updated_ms=? WHERE "
                      "client_order_id=? AND status NOT IN ('FILLED','REJECTED')", (now, cid))
        result = {"cancelled": len(set(local) | set(ids)), "client_order_ids": sorted(set(local) | set(ids))}
        db.audit(c, now, "orders", "cancel_all", actor, reason_code=token, details=result)
    return {**result, "replayed": False}


def reduce_only_order(core: Core, symbol: str, side: str, notional: float | None = None,
                      client_order_id: str = "", qty: float | None = None,
                      risk_off: bool = False, actor: str = "operator") -> dict[str, Any]:
    """Market reduce-only order, idempotent on client_order_id.

    Returns the order (status FILLED with exchange_order_id, or UNKNOWN with error_code
    TIMEOUT/RATE_LIMITED under faults, or REJECTED). Raises Refused when it would increase
    or flip the position, or while HALT / kill switch unless risk_off.
    """
    if side not in ("buy", "sell"):
        raise BadRequest(f"side must be buy or sell, got {side!r}")
    if not client_order_id:
        raise BadRequest("client_order_id is required")
    if (notional is None) == (qty is None) or (notional or qty or 0) <= 0:
        raise BadRequest("give exactly one positive notional or qty")
    with core.session() as (w, c):
        existing = order_record(c, client_order_id)
        if existing is not None:
            if existing["status"] == "UNKNOWN":
                sync_order(core, w, c, existing, resubmit=True)
                existing = order_record(c, client_order_id) or existing
            return {**existing, "idempotent_replay": True}
        st = db.get_state(c)
        if symbol not in w.get("prices"):
            raise BadRequest(f"unknown symbol {symbol!r}")
        if not risk_off and st.get("safety_mode") == "HALT":
            raise Refused("safety_mode is HALT: no orders (pass risk_off for a risk-off order)")
        if not risk_off and core.lay.kill_switch.exists():
            raise Refused("kill switch engaged: no orders (pass risk_off for a risk-off order)")
        price = w.price(symbol)
        q = round(qty if qty is not None else (notional or 0) / price, 8)
        pos = local_positions(c).get(symbol, 0.0)
        signed = q if side == "buy" else -q
        if pos == 0 or sign(pos) == sign(signed):
            raise Refused(f"reduce-only {side} {q} {symbol} would increase the position ({pos})")
        if abs(signed) > abs(pos) + 1e-12:
            raise Refused(f"reduce-only {side} {q} {symbol} exceeds the position {pos} (would flip)")
        min_notional = float(core.setting("execution", "min_notional"))
        if q * price < min_notional:
            raise Refused(f"notional {q * price:.2f} below min_notional {min_notional}")
        return {**submit_intent(core, w, c, client_order_id, symbol, side, q, "market", None, True,
                                "operator", actor, notional), "idempotent_replay": False}


def submit_order(core: Core, symbol: str, side: str, qty: float, client_order_id: str,
                 ref_price: float | None = None, actor: str = "operator") -> dict[str, Any]:
    """Market order (not reduce-only), idempotent on client_order_id: a known id returns that order
    with idempotent_replay. A symbol the broker has not quoted yet is listed at `ref_price`.
    Raises Refused while HALT or the kill switch is engaged."""
    if side not in ("buy", "sell"):
        raise BadRequest(f"side must be buy or sell, got {side!r}")
    if not client_order_id or qty <= 0:
        raise BadRequest("client_order_id and a positive qty are required")
    with core.session() as (w, c):
        existing = order_record(c, client_order_id)
        if existing is not None:
            return {**existing, "idempotent_replay": True}
        if db.get_state(c).get("safety_mode") == "HALT":
            raise Refused("safety_mode is HALT: no orders")
        if core.lay.kill_switch.exists():
            raise Refused("kill switch engaged: no orders")
        prices = w.get("prices")
        if symbol not in prices:
            if not ref_price or ref_price <= 0:
                raise BadRequest(f"unknown symbol {symbol!r} and no reference price")
            with db.tx(w.conn):
                w.set("prices", {**prices, symbol: float(ref_price)})
        return {**submit_intent(core, w, c, client_order_id, symbol, side, float(qty), "market", None, False,
                              "rebalance", actor, None), "idempotent_replay": False}


def submit_intent(core: Core, w: World, c: sqlite3.Connection, cid: str, symbol: str, side: str, qty: float,
                  order_type: str, limit: float | None, reduce_only: bool, source: str, actor: str,
                  notional: float | None) -> dict[str, Any]:
    """Record an order intent, send it to the exchange and apply the answer (UNKNOWN when unreachable)."""
    now = w.now_ms
    with db.tx(c):
        c.execute("INSERT INTO order_intents(client_order_id, symbol, side, qty, notional, "
                  "order_type, limit_price, reduce_only, source, created_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (cid, symbol, side, qty, notional, order_type, limit, int(reduce_only), source, now))
        c.execute("INSERT INTO order_results(client_order_id, status, updated_ms) VALUES (?,?,?)",
                  (cid, "PENDING", now))
        db.audit(c, now, "execution", "submit", actor, None, "PENDING",
                 details={"client_order_id": cid, "symbol": symbol, "side": side, "qty": qty,
                          "order_type": order_type, "reduce_only": reduce_only})
    ttl = int(core.setting("execution", "order_ttl_bars")) * int(core.setting("ingest", "bar_interval_ms"))
    try:
        with db.tx(w.conn):
            remote = w.submit(cid, symbol, side, qty, order_type, limit, reduce_only, ttl,
                              float(core.setting("execution", "max_slippage_bps")))
    except BrokerUnavailable as exc:
        with db.tx(c):
            c.execute("UPDATE order_results SET status='UNKNOWN', error_code=?, error_message=?, "
                      "attempts=1, first_attempt_ms=?, updated_ms=? WHERE client_order_id=?",
                      (exc.error_code, str(exc), now, now, cid))
            db.audit(c, now, "execution", "submit_failed", actor, "PENDING", "UNKNOWN",
                     exc.error_code, str(exc), {"client_order_id": cid})
        return order_record(c, cid) or {}
    apply_remote(c, cid, "PENDING", remote, now, actor)
    return order_record(c, cid) or {}


def apply_remote(c: sqlite3.Connection, cid: str, local_status: str,
                  remote: dict[str, Any], now: int, actor: str) -> None:
    status = remote["status"]
    with db.tx(c):
        err = "REDUCE_ONLY_REJECTED" if status == "REJECTED" else None
        c.execute("UPDATE order_results SET status=?, exchange_order_id=?, filled_qty=?, avg_price=?, "
                  "error_code=COALESCE(?, CASE WHEN ?='FILLED' THEN NULL ELSE error_code END), "
                  "updated_ms=? WHERE client_order_id=?",
                  (status, remote["exchange_order_id"], remote["filled_qty"], remote["avg_price"],
                   err, status, now, cid))
        if status != local_status:
            db.audit(c, now, "execution", "status", actor, local_status, status, err,
                     details={"client_order_id": cid, "exchange_order_id": remote["exchange_order_id"]})
        if status == "FILLED" and local_status != "FILLED":
            signed = remote["filled_qty"] * (1 if remote["side"] == "buy" else -1)
            row = c.execute("SELECT qty FROM positions WHERE symbol=?", (remote["symbol"],)).fetchone()
            q = round((row["qty"] if row else 0.0) + signed, 10)
            c.execute("INSERT INTO positions(symbol, qty, avg_price, updated_ms) VALUES (?,?,?,?) "
                      "ON CONFLICT(symbol) DO UPDATE SET qty=excluded.qty, "
                      "avg_price=excluded.avg_price, updated_ms=excluded.updated_ms",
                      (remote["symbol"], q, remote["avg_price"], now))


def sync_order(core: Core, w: World, c: sqlite3.Connection, order: dict[str, Any], resubmit: bool = False) -> bool:
    """Bring one open order up to date from the exchange; False when the query failed."""
    cid, now = order["client_order_id"], w.now_ms
    try:
        w.require_up()
        remote = w.query(cid)
        if remote is None and resubmit:
            ttl = int(core.setting("execution", "order_ttl_bars")) * int(core.setting("ingest", "bar_interval_ms"))
            with db.tx(w.conn):
                remote = w.submit(cid, order["symbol"], order["side"], order["qty"], order["order_type"],
                                  order["limit_price"], order["reduce_only"], ttl,
                                  float(core.setting("execution", "max_slippage_bps")))
    except BrokerUnavailable as exc:
        if order["status"] == "UNKNOWN":
            with db.tx(c):
                c.execute("UPDATE order_results SET attempts=attempts+1, error_code=?, error_message=?, "
                          "first_attempt_ms=COALESCE(first_attempt_ms, ?), updated_ms=? "
                          "WHERE client_order_id=?", (exc.error_code, str(exc), now, now, cid))
                db.audit(c, now, "execution", "retry", "simcore", "UNKNOWN", "UNKNOWN",
                         exc.error_code, str(exc), {"client_order_id": cid})
        return False
    if remote is None:
        with db.tx(c):
            c.execute("UPDATE order_results SET status='EXPIRED', error_code='NOT_FOUND_ON_EXCHANGE', "
                      "updated_ms=? WHERE client_order_id=?", (now, cid))
            db.audit(c, now, "execution", "status", "simcore", order["status"], "EXPIRED",
                     "NOT_FOUND_ON_EXCHANGE", None, {"client_order_id": cid})
    else:
        apply_remote(c, cid, order["status"], remote, now, "simcore")
    return True


def sync_open_orders(core: Core, w: World, c: sqlite3.Connection) -> None:
    """Sync every open order, oldest first, then enforce the retry budget."""
    ids = [r[0] for r in c.execute(
        f"SELECT client_order_id FROM order_results WHERE status IN {db.OPEN_STATUSES} ORDER BY id")]
    for cid in ids:
        order = order_record(c, cid)
        if order:
            sync_order(core, w, c, order)
    enforce_retry_budget(core, w, c)


def enforce_retry_budget(core: Core, w: World, c: sqlite3.Connection) -> dict[str, Any] | None:
    """UNKNOWN orders past the retry budget: mark them and escalate per retry_budget_mode."""
    max_attempts = int(core.setting("execution", "retry_budget_max_attempts"))
    window_ms = int(core.setting("execution", "retry_budget_window_sec")) * 1000
    now = w.now_ms
    rows = c.execute("SELECT client_order_id, attempts, first_attempt_ms FROM order_results "
                     "WHERE status='UNKNOWN' AND attempts>=?", (max_attempts,)).fetchall()
    over = [r["client_order_id"] for r in rows if now - (r["first_attempt_ms"] or now) <= window_ms]
    if not rows:
        return None
    with db.tx(c):
        for r in rows:
            c.execute("UPDATE order_results SET error_message='RETRY_BUDGET_EXCEEDED: ' || attempts || "
                      "' attempts' WHERE client_order_id=? AND error_message NOT LIKE 'RETRY_BUDGET%'",
                      (r["client_order_id"],))
        mode = str(core.setting("execution", "retry_budget_mode"))
        return safety.escalate(c, now, mode, "EXECUTION_RETRY_BUDGET_EXCEEDED",
                               f"{len(rows)} UNKNOWN order(s) exhausted {max_attempts} attempts "
                               f"({len(over)} within {window_ms // 1000}s): {', '.join(r['client_order_id'] for r in rows)}",
                               override_same=True)
