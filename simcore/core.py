"""The Core facade: every operation the runbooks (CLI, HTTP, `sim` adapter) perform.

State lives only on disk under the core root: core.db (seed 002 schema), world.db (the
simulated clock, market and exchange), seed 000's files and the KILL_SWITCH file. Every
mutating call holds the core's file lock and writes in BEGIN IMMEDIATE transactions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from . import db, ledger, market, safety
from .broker import World
from .errors import BadRequest, BrokerUnavailable, NotInitialized, Refused
from .fsutil import (
    append_line,
    atomic_write_json,
    canonical_json,
    iso_utc,
    read_json,
    sha256_json,
    wall_ms,
)
from .paths import Layout
from .settings import DEFAULT_SETTINGS, SCHEMA, config_hash, dump_yaml, load_settings

DEFAULT_START_MS = 1_769_040_000_000  # 2026-01-22T00:00:00Z
START_CASH = 100_000.0
SEED_POSITIONS = {"BTCUSDT": (0.05, 97_000.0), "XAUUSD": (0.0, None)}
TERMINAL = ("FILLED", "CANCELED", "EXPIRED", "REJECTED")


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


class Core:
    """One simulated trading core rooted at a directory created by `Core.init`."""

    def __init__(self, root: Path | str, settings_path: Path | None = None) -> None:
        self.root = Path(root).resolve()
        self.lay = Layout(self.root)
        if not self.lay.world_db.exists():
            raise NotInitialized(f"{self.root} is not a simcore directory (run: simcore init DIR)")
        self.settings_path = settings_path or self.lay.settings
        self.settings: dict[str, Any] = load_settings(self.settings_path)
        self.db_path = self.lay.db_path(self.settings)

    # ------------------------------------------------------------------ setup

    @classmethod
    def init(cls, root: Path | str, seed: int = 7, start_ms: int = DEFAULT_START_MS) -> Core:
        """Create a fresh core directory (layout, settings, schema v3 DB, bars, genesis ledger)."""
        lay = Layout(Path(root).resolve())
        if lay.world_db.exists():
            raise Refused(f"{lay.root} is already initialized")
        for d in (lay.config_dir, lay.state_dir, lay.csv.parent, lay.lock_file.parent,
                  lay.incidents, lay.meta_log.parent, lay.backups):
            d.mkdir(parents=True, exist_ok=True)
        settings = DEFAULT_SETTINGS
        lay.settings.write_text("# simcore settings (validated by config/schema.json)\n"
                                + dump_yaml(settings), encoding="utf-8")
        atomic_write_json(lay.schema, SCHEMA)
        interval = int(settings["ingest"]["bar_interval_ms"])
        bars: list[market.Bar] = []
        prev = market.START_PRICES["XAUUSD"]
        n = int(settings["data"]["check_window_bars"])
        for i in range(n):
            bar = market.make_bar(seed, start_ms - (n - 1 - i) * interval, prev)
            bars.append(bar)
            prev = float(bar["close"])
        market.write_csv(lay.csv, bars)
        prices = {"XAUUSD": prev, "BTCUSDT": market.START_PRICES["BTCUSDT"]}
        cash = START_CASH - sum(q * (p or 0) for q, p in SEED_POSITIONS.values())
        world = World(lay.world_db)
        world.create({
            "seed": seed, "now_ms": start_ms, "step": 0, "cash": cash, "prices": prices,
            "broker_up": True, "rate_limited": False, "feed_stalled": False, "faults": {},
            "order_seq": 0,
            "exchange_time_offset_ms": market.rng_for(seed, "offset").randint(-250, 250),
        })
        with db.tx(world.conn):
            for sym, (q, p) in SEED_POSITIONS.items():
                world.set_position(sym, q, p)
        world.close()
        conn = db.connect(lay.db_path(settings))
        mode = settings["safety"]["startup_mode"]
        db.create_schema(conn, start_ms, mode, "STARTUP", "initialized by simcore init")
        with db.tx(conn):
            for sym, (q, p) in SEED_POSITIONS.items():
                conn.execute("INSERT INTO positions VALUES (?,?,?,?)", (sym, q, p, start_ms))
            for b in bars:
                conn.execute("INSERT INTO processed_txs VALUES (?,?,?,?)",
                             (f"XAUUSD:M1:{b['ts_ms']}", b["ts_ms"], "bar", start_ms))
            cls.set_cursor(conn, int(bars[-1]["ts_ms"]), start_ms)
            conn.execute("INSERT INTO equity_curve VALUES (?,?,?,?)",
                         (start_ms, START_CASH, START_CASH, 0.0))
        conn.close()
        ledger.append_snapshot(lay, {
            "cycle": 0, "strategy": {"lookback": 5, "exposure_multiplier": 1.0},
            "sim_ts_ms": start_ms, "last_bar_ts_ms": bars[-1]["ts_ms"], "equity": START_CASH,
            "safety_mode": mode, "config_hash": config_hash(settings),
        }, start_ms, op="genesis")
        ledger.log_event(lay, "simcore", "init", seed=seed, sim_ts_ms=start_ms)
        from . import worlds

        worlds.init(lay.root, seed, start_ms, config_hash(settings))
        core = cls(lay.root)
        core._metrics_line(start_ms)
        from .tools_ops import daily_report

        daily_report(core, None, send=False)  # seed 004's report, auto-generated for the day
        return core

    @staticmethod
    def set_cursor(conn: sqlite3.Connection, ts_ms: int, now_ms: int) -> None:
        """Record the last processed bar (last_processed_timestamp_ms / _event_key) in system_state."""
        db.set_state(conn, "last_processed_timestamp_ms", ts_ms, now_ms)
        db.set_state(conn, "last_processed_event_key", f"XAUUSD:M1:{ts_ms}", now_ms)

    @contextmanager
    def session(self, write: bool = True) -> Iterator[tuple[World, sqlite3.Connection]]:
        """(world, core.db) connections; write=True also holds the core's file lock."""
        lock = FileLock(str(self.lay.core_lock), timeout=60) if write else None
        if lock:
            lock.acquire()
        world = World(self.lay.world_db)
        if not self.db_path.exists():
            world.close()
            if lock:
                lock.release()
            raise NotInitialized(f"core db missing: {self.db_path} (run: simcore rebuild-db)")
        conn = db.connect(self.db_path)
        try:
            yield world, conn
        finally:
            conn.close()
            world.close()
            if lock:
                lock.release()

    def setting(self, section: str, key: str) -> Any:
        """One settings value (settings.yaml, else its default)."""
        return self.settings.get(section, {}).get(key, DEFAULT_SETTINGS[section][key])

    # ------------------------------------------------------------------ reads

    def status(self) -> dict[str, Any]:
        """Safety, cursor, kill switch, broker, orders, positions, equity, lock and faults."""
        with self.session(write=False) as (w, c):
            st = db.get_state(c)
            eq = c.execute("SELECT * FROM equity_curve ORDER BY ts_ms DESC LIMIT 1").fetchone()
            count = c.execute("SELECT count(*) FROM audit_log").fetchone()[0]
            open_n = c.execute(
                f"SELECT count(*) FROM order_results WHERE status IN {db.OPEN_STATUSES}"
            ).fetchone()[0]
            now = w.now_ms
            out = {
                "safety_mode": st.get("safety_mode"),
                "safety_reason_code": st.get("safety_reason_code"),
                "safety_reason_message": st.get("safety_reason_message"),
                "schema_version": st.get("schema_version"),
                "last_processed_timestamp_ms": _int(st.get("last_processed_timestamp_ms")),
                "last_processed_event_key": st.get("last_processed_event_key"),
                "maintenance_skip_applied_ms": _int(st.get("maintenance_skip_applied_ms")),
                "sim_now_ms": now,
                "sim_now_utc": iso_utc(now),
                "tick": w.get("step"),
                "kill_switch": self.kill_switch_state(),
                "broker_up": bool(w.get("broker_up")),
                "rate_limited": bool(w.get("rate_limited")),
                "feed_stalled": bool(w.get("feed_stalled")),
                "open_orders": open_n,
                "positions": self._positions(w, c),
                "equity": eq["equity"] if eq else None,
                "peak_equity": eq["peak"] if eq else None,
                "drawdown": eq["drawdown"] if eq else None,
                "audit_log_count": count,
                "lock": ledger.read_lock(self.lay),
                "faults": sorted(w.get("faults", {})),
                "unreconciled_since_ms": w.get("unreconciled_since_ms"),
            }
        return out

    def _local_positions(self, c: sqlite3.Connection) -> dict[str, float]:
        return {r["symbol"]: r["qty"] for r in c.execute("SELECT symbol, qty FROM positions ORDER BY symbol")}

    def _positions(self, w: World, c: sqlite3.Connection) -> dict[str, Any]:
        out: dict[str, Any] = {"local": self._local_positions(c)}
        try:
            w.require_up()
            out["broker"] = w.positions()
        except BrokerUnavailable as exc:
            out["broker"] = None
            out["broker_error"] = exc.error_code
        return out

    def positions(self) -> dict[str, Any]:
        """{"local": {symbol: qty}, "broker": {symbol: qty} | None, ["broker_error": code]}."""
        with self.session(write=False) as (w, c):
            return self._positions(w, c)

    def order_record(self, c: sqlite3.Connection, client_order_id: str) -> dict[str, Any] | None:
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

    def open_orders(self) -> list[dict[str, Any]]:
        """Local orders not yet terminal (PENDING, NEW, OPEN, UNKNOWN), oldest first."""
        with self.session(write=False) as (_w, c):
            ids = [r[0] for r in c.execute(
                f"SELECT client_order_id FROM order_results WHERE status IN {db.OPEN_STATUSES} ORDER BY id")]
            return [o for o in (self.order_record(c, i) for i in ids) if o]

    def find_order(self, client_order_id: str) -> dict[str, Any]:
        """Local record and exchange view of one order (verify after an in-doubt submit)."""
        with self.session(write=False) as (w, c):
            local = self.order_record(c, client_order_id)
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

    def kill_switch_state(self) -> dict[str, Any]:
        """{"engaged": bool, "payload": {...} | None} from the KILL_SWITCH file."""
        if not self.lay.kill_switch.exists():
            return {"engaged": False, "payload": None}
        try:
            payload = read_json(self.lay.kill_switch)
        except (OSError, ValueError):
            payload = {"reason": "KILL_SWITCH file present (not JSON)"}
        return {"engaged": True, "payload": payload}

    # ------------------------------------------------------------------ operator actions

    def set_safety_mode(self, mode: str, reason_code: str, reason_message: str,
                        actor: str = "operator", allow_non_halt: bool = False) -> dict[str, Any]:
        """Operator transition with reason (audited); raises Refused on illegal transitions."""
        with self.session() as (w, c):
            st = db.get_state(c)
            safety.check_request(
                st.get("safety_mode", "HALT"), mode, reason_code, allow_non_halt,
                self.lay.kill_switch.exists(), st.get("schema_version") == str(db.SCHEMA_VERSION))
            with db.tx(c):
                return safety.transition(c, w.now_ms, mode, reason_code, reason_message, actor,
                                         details={"allow_non_halt": allow_non_halt})

    def cancel_all_orders(self, client_token: str | None = None, actor: str = "operator") -> dict[str, Any]:
        """Cancel every open order at the exchange and locally; idempotent on client_token."""
        with self.session() as (w, c):
            if client_token:
                row = c.execute("SELECT details FROM audit_log WHERE category='orders' AND "
                                "action='cancel_all' AND reason_code=?", (client_token,)).fetchone()
                if row:
                    return {**json.loads(row["details"]), "replayed": True}
            return self._cancel_all(w, c, actor, client_token)

    def _cancel_all(self, w: World, c: sqlite3.Connection, actor: str, token: str | None) -> dict[str, Any]:
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

    def reduce_only_order(self, symbol: str, side: str, notional: float | None = None,
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
        with self.session() as (w, c):
            existing = self.order_record(c, client_order_id)
            if existing is not None:
                if existing["status"] == "UNKNOWN":
                    self.sync_order(w, c, existing, resubmit=True)
                    existing = self.order_record(c, client_order_id) or existing
                return {**existing, "idempotent_replay": True}
            st = db.get_state(c)
            if symbol not in w.get("prices"):
                raise BadRequest(f"unknown symbol {symbol!r}")
            if not risk_off and st.get("safety_mode") == "HALT":
                raise Refused("safety_mode is HALT: no orders (pass risk_off for a risk-off order)")
            if not risk_off and self.lay.kill_switch.exists():
                raise Refused("kill switch engaged: no orders (pass risk_off for a risk-off order)")
            price = w.price(symbol)
            q = round(qty if qty is not None else (notional or 0) / price, 8)
            pos = self._local_positions(c).get(symbol, 0.0)
            signed = q if side == "buy" else -q
            if pos == 0 or _sign(pos) == _sign(signed):
                raise Refused(f"reduce-only {side} {q} {symbol} would increase the position ({pos})")
            if abs(signed) > abs(pos) + 1e-12:
                raise Refused(f"reduce-only {side} {q} {symbol} exceeds the position {pos} (would flip)")
            min_notional = float(self.setting("execution", "min_notional"))
            if q * price < min_notional:
                raise Refused(f"notional {q * price:.2f} below min_notional {min_notional}")
            return {**self.submit_intent(w, c, client_order_id, symbol, side, q, "market", None, True,
                                   "operator", actor, notional), "idempotent_replay": False}

    def submit_order(self, symbol: str, side: str, qty: float, client_order_id: str,
                     ref_price: float | None = None, actor: str = "operator") -> dict[str, Any]:
        """Market order (not reduce-only), idempotent on client_order_id: a known id returns that order
        with idempotent_replay. A symbol the broker has not quoted yet is listed at `ref_price`.
        Raises Refused while HALT or the kill switch is engaged."""
        if side not in ("buy", "sell"):
            raise BadRequest(f"side must be buy or sell, got {side!r}")
        if not client_order_id or qty <= 0:
            raise BadRequest("client_order_id and a positive qty are required")
        with self.session() as (w, c):
            existing = self.order_record(c, client_order_id)
            if existing is not None:
                return {**existing, "idempotent_replay": True}
            if db.get_state(c).get("safety_mode") == "HALT":
                raise Refused("safety_mode is HALT: no orders")
            if self.lay.kill_switch.exists():
                raise Refused("kill switch engaged: no orders")
            prices = w.get("prices")
            if symbol not in prices:
                if not ref_price or ref_price <= 0:
                    raise BadRequest(f"unknown symbol {symbol!r} and no reference price")
                with db.tx(w.conn):
                    w.set("prices", {**prices, symbol: float(ref_price)})
            return {**self.submit_intent(w, c, client_order_id, symbol, side, float(qty), "market", None, False,
                                   "rebalance", actor, None), "idempotent_replay": False}

    def submit_intent(self, w: World, c: sqlite3.Connection, cid: str, symbol: str, side: str, qty: float,
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
        ttl = int(self.setting("execution", "order_ttl_bars")) * int(self.setting("ingest", "bar_interval_ms"))
        try:
            with db.tx(w.conn):
                remote = w.submit(cid, symbol, side, qty, order_type, limit, reduce_only, ttl,
                                  float(self.setting("execution", "max_slippage_bps")))
        except BrokerUnavailable as exc:
            with db.tx(c):
                c.execute("UPDATE order_results SET status='UNKNOWN', error_code=?, error_message=?, "
                          "attempts=1, first_attempt_ms=?, updated_ms=? WHERE client_order_id=?",
                          (exc.error_code, str(exc), now, now, cid))
                db.audit(c, now, "execution", "submit_failed", actor, "PENDING", "UNKNOWN",
                         exc.error_code, str(exc), {"client_order_id": cid})
            return self.order_record(c, cid) or {}
        self._apply_remote(c, cid, "PENDING", remote, now, actor)
        return self.order_record(c, cid) or {}

    def _apply_remote(self, c: sqlite3.Connection, cid: str, local_status: str,
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

    def sync_order(self, w: World, c: sqlite3.Connection, order: dict[str, Any], resubmit: bool = False) -> bool:
        """Bring one open order up to date from the exchange; False when the query failed."""
        cid, now = order["client_order_id"], w.now_ms
        try:
            w.require_up()
            remote = w.query(cid)
            if remote is None and resubmit:
                ttl = int(self.setting("execution", "order_ttl_bars")) * int(self.setting("ingest", "bar_interval_ms"))
                with db.tx(w.conn):
                    remote = w.submit(cid, order["symbol"], order["side"], order["qty"], order["order_type"],
                                      order["limit_price"], order["reduce_only"], ttl,
                                      float(self.setting("execution", "max_slippage_bps")))
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
            self._apply_remote(c, cid, order["status"], remote, now, "simcore")
        return True

    def _sync_orders(self, w: World, c: sqlite3.Connection) -> None:
        ids = [r[0] for r in c.execute(
            f"SELECT client_order_id FROM order_results WHERE status IN {db.OPEN_STATUSES} ORDER BY id")]
        for cid in ids:
            order = self.order_record(c, cid)
            if order:
                self.sync_order(w, c, order)
        self.enforce_retry_budget(w, c)

    def enforce_retry_budget(self, w: World, c: sqlite3.Connection) -> dict[str, Any] | None:
        """UNKNOWN orders past the retry budget: mark them and escalate per retry_budget_mode."""
        max_attempts = int(self.setting("execution", "retry_budget_max_attempts"))
        window_ms = int(self.setting("execution", "retry_budget_window_sec")) * 1000
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
            mode = str(self.setting("execution", "retry_budget_mode"))
            return safety.escalate(c, now, mode, "EXECUTION_RETRY_BUDGET_EXCEEDED",
                                   f"{len(rows)} UNKNOWN order(s) exhausted {max_attempts} attempts "
                                   f"({len(over)} within {window_ms // 1000}s): {', '.join(r['client_order_id'] for r in rows)}",
                                   override_same=True)

    def reconcile(self, adopt: bool = False, actor: str = "operator") -> dict[str, Any]:
        """Compare local and broker positions; critical drift -> HALT RECONCILE_CRITICAL (audited).

        adopt=True first makes the local positions equal to the broker snapshot (audited).
        Returns {"ok", "drift": [{symbol, local, broker, diff, pct}], "missing_symbols",
        "critical", "transition"} or {"ok": False, "error": code} when the broker is down.
        """
        with self.session() as (w, c):
            return self._reconcile(w, c, adopt, actor, record=True)

    def _reconcile(self, w: World, c: sqlite3.Connection, adopt: bool, actor: str, record: bool) -> dict[str, Any]:
        now = w.now_ms
        try:
            w.require_up()
        except BrokerUnavailable as exc:
            if record:
                with db.tx(c):
                    db.audit(c, now, "reconcile", "reconcile", actor, reason_code=exc.error_code,
                             reason_message=str(exc))
            return {"ok": False, "error": exc.error_code, "message": str(exc), "drift": [],
                    "missing_symbols": [], "critical": False, "transition": None}
        broker = w.positions()
        local = self._local_positions(c)
        if adopt:
            with db.tx(c):
                c.execute("DELETE FROM positions")
                for sym, q in broker.items():
                    c.execute("INSERT INTO positions VALUES (?,?,?,?)", (sym, q, None, now))
                db.audit(c, now, "reconcile", "adopt_broker", actor, canonical_json(local),
                         canonical_json(broker), "RECONCILE_ADOPT", "local positions set from broker")
            local = dict(broker)
        tol = float(self.setting("reconcile", "tolerance_qty"))
        crit = float(self.setting("reconcile", "critical_drift_pct"))
        drift: list[dict[str, Any]] = []
        missing: list[str] = []
        for sym in sorted(set(local) | set(broker)):
            lq, bq = local.get(sym, 0.0), broker.get(sym)
            if bq is None and abs(lq) > tol:
                missing.append(sym)
            diff = round((bq or 0.0) - lq, 10)
            if abs(diff) > tol:
                pct = abs(diff) / max(abs(lq), abs(bq or 0.0)) * 100
                drift.append({"symbol": sym, "local": lq, "broker": bq, "diff": diff, "pct": round(pct, 4)})
        critical = bool(missing) or any(d["pct"] >= crit for d in drift)
        with db.tx(c):
            if critical:
                msg = f"drift={canonical_json(drift)} missing={missing}"
                trans = safety.escalate(c, now, "HALT", "RECONCILE_CRITICAL", msg)
            elif drift:
                trans = safety.escalate(c, now, "ARMED_SAFE", "RECONCILE_DRIFT", canonical_json(drift))
            else:
                trans = None
            if record:
                db.audit(c, now, "reconcile", "reconcile", actor,
                         reason_code="RECONCILE_CRITICAL" if critical else ("RECONCILE_DRIFT" if drift else "OK"),
                         details={"drift": drift, "missing_symbols": missing})
        return {"ok": not drift and not missing, "drift": drift, "missing_symbols": missing,
                "critical": critical, "transition": trans}

    def kill_switch(self, engage: bool, reason: str, actor: str = "operator") -> dict[str, Any]:
        """Engage (write KILL_SWITCH, cancel pending orders, HALT) or release (remove the file).

        Releasing does not leave HALT: the operator resets safety afterwards.
        """
        with self.session() as (w, c):
            if engage:
                return self._engage(w, c, reason, actor, "KILL_SWITCH_ENGAGED")
            was = self.lay.kill_switch.exists()
            if was:
                self.lay.kill_switch.unlink()
            with db.tx(c):
                db.audit(c, w.now_ms, "kill_switch", "release", actor, "engaged" if was else "released",
                         "released", "KILL_SWITCH_RELEASED", reason)
            st = db.get_state(c)
            return {"engaged": False, "was_engaged": was, "safety_mode": st.get("safety_mode"),
                    "safety_reason_code": st.get("safety_reason_code")}

    def _engage(self, w: World, c: sqlite3.Connection, reason: str, actor: str, code: str) -> dict[str, Any]:
        now = w.now_ms
        already = self.lay.kill_switch.exists()
        payload = self.kill_switch_state()["payload"] if already else {
            "engaged": True, "reason": reason, "actor": actor, "ts_utc": iso_utc(wall_ms()),
            "sim_ts_ms": now}
        if not already:
            atomic_write_json(self.lay.kill_switch, payload)
        try:
            cancel = self._cancel_all(w, c, actor, None)
        except BrokerUnavailable as exc:
            cancel = {"cancelled": 0, "error": exc.error_code}
        with db.tx(c):
            db.audit(c, now, "kill_switch", "engage", actor, None, "engaged", code, reason,
                     {"already_engaged": already, "cancel": cancel})
            st = db.get_state(c)
            if st.get("safety_mode") != "HALT":
                safety.transition(c, now, "HALT", code, reason, actor, action="kill_switch")
        return {"engaged": True, "already_engaged": already, "payload": payload,
                "cancelled": cancel.get("cancelled", 0), "cancel_error": cancel.get("error"),
                "safety_mode": "HALT"}

    # ------------------------------------------------------------------ simulated time

    def tick(self, n: int = 1) -> dict[str, Any]:
        """Advance simulated time n bars: market, ingest, orders, strategy, equity, risk, reconcile."""
        events: list[str] = []
        with self.session() as (w, c):
            for _ in range(max(0, n)):
                self._tick_once(w, c, events)
            st = db.get_state(c)
            return {"ticks": n, "sim_now_ms": w.now_ms, "sim_now_utc": iso_utc(w.now_ms),
                    "safety_mode": st.get("safety_mode"), "safety_reason_code": st.get("safety_reason_code"),
                    "events": events}

    def _tick_once(self, w: World, c: sqlite3.Connection, events: list[str]) -> None:
        interval = int(self.setting("ingest", "bar_interval_ms"))
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
                market.append_bar(self.lay.csv, bar)
            w.set("prices", prices)
        st = db.get_state(c)
        if st.get("schema_version") != str(db.SCHEMA_VERSION):
            with db.tx(c):
                if safety.escalate(c, now, "HALT", "SCHEMA_VERSION_MISMATCH",
                                   f"schema_version={st.get('schema_version')} expected {db.SCHEMA_VERSION}"):
                    events.append("HALT SCHEMA_VERSION_MISMATCH")
        if self.lay.kill_switch.exists() and (
            db.get_state(c).get("safety_mode") != "HALT"
            or c.execute("SELECT 1 FROM order_results WHERE status IN ('PENDING','NEW','OPEN')").fetchone()
        ):
            self._engage(w, c, "KILL_SWITCH file present", "simcore", "KILL_SWITCH_ENGAGED")
            events.append("HALT KILL_SWITCH_ENGAGED")
        bars = self._ingest(w, c, now, events)
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
                w.match(bar, float(self.setting("execution", "max_slippage_bps")))
        self._sync_orders(w, c)
        if broker_ok and bars:
            self._strategy(w, c, bars, step)
        self.mark_equity(w, c, now, events)
        drift: list[dict[str, Any]] | None = None
        if broker_ok:
            r = self._reconcile(w, c, False, "simcore", record=False)
            drift = list(r["drift"]) + [{"symbol": m, "missing": True} for m in r["missing_symbols"]]
            with db.tx(w.conn):  # how long positions have stayed unreconciled (seed 003 §5 automatic kill switch)
                w.set("unreconciled_since_ms", (w.get("unreconciled_since_ms") or now) if drift else None)
            if r["transition"]:
                events.append(f"{r['transition']['safety_mode']} {r['transition']['reason_code']}")
        self._metrics_line(now, w, c)
        self._observe(w, c, drift, events)

    def _observe(self, w: World, c: sqlite3.Connection, drift: list[dict[str, Any]] | None,
                 events: list[str]) -> None:
        """The seed 001/003 monitors around the core observe one cycle (simcore.worlds)."""
        from . import worlds

        st = db.get_state(c)
        events.extend(worlds.observe(self.root, w.now_ms, {
            "safety_mode": st.get("safety_mode"), "safety_reason_code": st.get("safety_reason_code"),
            "feed_stalled": bool(w.get("feed_stalled")), "kill_switch": self.kill_switch_state()}, drift))

    def observe(self) -> list[str]:
        """One monitor cycle without advancing time (after a fault or a heal)."""
        events: list[str] = []
        with self.session() as (w, c):
            drift = None
            try:
                w.require_up()
                broker, local = w.positions(), self._local_positions(c)
                tol = float(self.setting("reconcile", "tolerance_qty"))
                drift = [{"symbol": sym, "local": local.get(sym, 0.0), "broker": broker.get(sym)}
                         for sym in sorted(set(local) | set(broker))
                         if abs((broker.get(sym) or 0.0) - local.get(sym, 0.0)) > tol]
            except BrokerUnavailable:
                pass
            self._observe(w, c, drift, events)
        return events

    def _ingest(self, w: World, c: sqlite3.Connection, now: int, events: list[str]) -> list[market.Bar]:
        st = db.get_state(c)
        cursor = _int(st.get("last_processed_timestamp_ms")) or 0
        window = int(self.settings.get("backfill_window_ms", DEFAULT_SETTINGS["backfill_window_ms"]))
        try:
            bars = market.read_csv(self.lay.csv)
        except market.DataInvalid as exc:
            with db.tx(c):
                safety.escalate(c, now, "ARMED_SAFE", "DATA_INVALID", str(exc))
            return []
        if now - cursor > window:
            if self.setting("ingest", "maintenance_skip_gap"):
                with db.tx(c):
                    self.set_cursor(c, int(bars[-1]["ts_ms"]), now)
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
                self.set_cursor(c, int(new[-1]["ts_ms"]), now)
            max_stale = int(self.setting("data", "max_staleness_sec")) * 1000
            if now - int(bars[-1]["ts_ms"]) > max_stale:
                if safety.escalate(c, now, "ARMED_SAFE", "DATA_STALE",
                                   f"last bar {iso_utc(int(bars[-1]['ts_ms']))} older than {max_stale // 1000}s"):
                    events.append("ARMED_SAFE DATA_STALE")
        return bars

    def _strategy(self, w: World, c: sqlite3.Connection, bars: list[market.Bar], step: int) -> None:
        st = db.get_state(c)
        if st.get("safety_mode") != "ARMED_LIVE" or self.lay.kill_switch.exists():
            return
        if c.execute("SELECT 1 FROM order_results r JOIN order_intents i USING (client_order_id) "
                     f"WHERE i.source='strategy' AND r.status IN {db.OPEN_STATUSES}").fetchone():
            return
        try:
            params = ledger.current_state(self.lay)["strategy"]
            lookback, mult = int(params["lookback"]), float(params["exposure_multiplier"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        if len(bars) <= lookback or now_stale(bars, w.now_ms, 2 * int(self.setting("ingest", "bar_interval_ms"))):
            return
        close = float(bars[-1]["close"])
        target = _sign(close - float(bars[-1 - lookback]["close"])) * round(mult, 3)
        if abs(target) * close > float(self.setting("risk", "max_position_notional")):
            return
        diff = round(target - self._local_positions(c).get("XAUUSD", 0.0), 6)
        if abs(diff) < 1e-9:
            return
        side = "buy" if diff > 0 else "sell"
        limit = round(close * (1 - 0.0002 if side == "buy" else 1 + 0.0002), 3)
        self.submit_intent(w, c, f"strat-{step:06d}", "XAUUSD", side, abs(diff), "limit", limit, False,
                     "strategy", "simcore", round(abs(diff) * close, 2))

    def mark_equity(self, w: World, c: sqlite3.Connection, now: int, events: list[str]) -> None:
        """Append the equity point; a daily loss or drawdown breach engages the kill switch."""
        equity = w.equity()
        row = c.execute("SELECT peak FROM equity_curve ORDER BY ts_ms DESC LIMIT 1").fetchone()
        peak = max(equity, row["peak"] if row else equity)
        dd = round((peak - equity) / peak, 6) if peak else 0.0
        day0 = now - now % 86_400_000
        first = c.execute("SELECT equity FROM equity_curve WHERE ts_ms>=? ORDER BY ts_ms LIMIT 1",
                          (day0,)).fetchone()
        with db.tx(c):
            c.execute("INSERT OR REPLACE INTO equity_curve VALUES (?,?,?,?)", (now, equity, peak, dd))
        start = first["equity"] if first else equity
        loss_pct = (start - equity) / start * 100 if start else 0.0
        breach = []
        if loss_pct >= float(self.setting("risk", "max_daily_loss_pct")):
            breach.append(f"daily_loss_pct={loss_pct:.2f} >= {self.setting('risk', 'max_daily_loss_pct')}")
        if dd * 100 >= float(self.setting("risk", "max_drawdown_pct")):
            breach.append(f"drawdown_pct={dd * 100:.2f} >= {self.setting('risk', 'max_drawdown_pct')}")
        if breach and (not self.lay.kill_switch.exists() or db.get_state(c).get("safety_mode") != "HALT"):
            self._engage(w, c, "LOSS_LIMIT_BREACH: " + "; ".join(breach), "simcore:risk", "LOSS_LIMIT_BREACH")
            events.append("HALT LOSS_LIMIT_BREACH")

    def _metrics_line(self, now: int, w: World | None = None, c: sqlite3.Connection | None = None) -> None:
        if w is None or c is None:
            with self.session(write=False) as (w2, c2):
                return self._metrics_line(now, w2, c2)
        st = db.get_state(c)
        eq = c.execute("SELECT equity, drawdown FROM equity_curve ORDER BY ts_ms DESC LIMIT 1").fetchone()
        open_n = c.execute(f"SELECT count(*) FROM order_results WHERE status IN {db.OPEN_STATUSES}").fetchone()[0]
        rec = {"ts_ms": now, "ts_utc": iso_utc(now), "safety_mode": st.get("safety_mode"),
               "last_processed_timestamp_ms": _int(st.get("last_processed_timestamp_ms")),
               "equity": eq["equity"] if eq else None, "drawdown": eq["drawdown"] if eq else None,
               "open_orders": open_n, "kill_switch": int(self.lay.kill_switch.exists())}
        append_line(self.lay.metrics_log, canonical_json(rec))
        return None

    # ------------------------------------------------------------------ faults and rollback

    def inject(self, fault: str) -> dict[str, Any]:
        """Inject a named fault (see simcore.faults.FAULTS); returns what was changed."""
        from . import faults

        return faults.inject(self, fault)

    def heal(self, fault: str) -> dict[str, Any]:
        """Undo a fault where meaningful ("clear" heals every active one)."""
        from . import faults

        return faults.heal(self, fault)

    def rollback(self, steps: int | None = None, to_hash: str | None = None, dry_run: bool = True,
                 strict: bool = True, reason: str = "", actor: str = "operator") -> dict[str, Any]:
        """Restore the meta state to an earlier ledger snapshot (by steps back or sha256).

        Dry run changes nothing. Raises LookupError when strict and the target is unknown
        (non-strict clamps steps to the oldest snapshot).
        """
        if (steps is None) == (to_hash is None):
            raise BadRequest("give exactly one of steps or to_hash")
        entries = ledger.read_ledger(self.lay)
        try:
            target, idx = ledger.rollback_target(self.lay, steps, to_hash)
        except LookupError:
            if strict or to_hash is not None or not entries:
                raise
            target, idx = entries[0], 0
        try:
            from_hash = sha256_json(ledger.current_state(self.lay))
        except (OSError, ValueError):
            from_hash = None
        plan = {"dry_run": dry_run, "from_hash": from_hash, "head_hash": entries[-1]["sha256"],
                "to_hash": target["sha256"], "target_index": idx, "target_ts": target.get("ts"),
                "entries": len(entries), "restore": str(self.lay.current_state), "state": target["state"],
                "reason": reason}
        if dry_run:
            return {**plan, "applied": False}
        with self.session() as (w, c):
            entry = ledger.append_snapshot(self.lay, target["state"], w.now_ms, op="rollback",
                                           reason=reason, from_hash=from_hash, restored_index=idx)
            with db.tx(c):
                db.audit(c, w.now_ms, "meta", "rollback", actor, from_hash, target["sha256"],
                         "META_ROLLBACK", reason, {"target_index": idx})
        return {**plan, "applied": True, "ledger_sha256": entry["sha256"]}


def now_stale(bars: list[market.Bar], now_ms: int, max_age_ms: int) -> bool:
    """True when the newest bar is older than max_age_ms at now_ms."""
    return not bars or now_ms - int(bars[-1]["ts_ms"]) > max_age_ms


def _int(v: str | None) -> int | None:
    try:
        return None if v is None else int(v)
    except ValueError:
        return None


def utc_stamp(ms: int) -> str:
    """YYYYMMDD-HHMM for backup file names."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d-%H%M")

