"""The Core facade: every operation the runbooks (CLI, HTTP, `sim` adapter) perform.

State lives only on disk under the core root: core.db (seed 002 schema), world.db (the
simulated clock, market and exchange), seed 000's files and the KILL_SWITCH file. Every
mutating call holds the core's file lock and writes in BEGIN IMMEDIATE transactions.

The work is done by modules, one concern each, that `Core`'s methods delegate to:
`genesis` (a new core directory), `orders` (order execution and sync), `reconcile`
(positions and reconciliation), `risk` (safety-mode requests, kill switch, equity and loss
limits), `clock` (the simulated tick and the monitors' cycle), `rollback` (meta-state rollback
to a ledger snapshot) and `faults` (inject and heal).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import clock, db, genesis, ledger, orders, reconcile, risk, rollback
from .broker import World
from .errors import NotInitialized
from .fsutil import file_lock, int_or_none, iso_utc
from .genesis import DEFAULT_START_MS as DEFAULT_START_MS
from .paths import Layout
from .settings import DEFAULT_SETTINGS, load_settings


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
        core = cls(genesis.create(root, seed, start_ms))
        clock.metrics_line(core, start_ms)
        from .tools_ops import daily_report

        daily_report(core, None, send=False)  # seed 004's report, auto-generated for the day
        return core

    @staticmethod
    def set_cursor(conn: sqlite3.Connection, ts_ms: int, now_ms: int) -> None:
        """Record the last processed bar (last_processed_timestamp_ms / _event_key) in system_state."""
        clock.set_cursor(conn, ts_ms, now_ms)

    @contextmanager
    def session(self, write: bool = True) -> Iterator[tuple[World, sqlite3.Connection]]:
        """(world, core.db) connections; write=True also holds the core's file lock."""
        lock = file_lock(str(self.lay.core_lock), timeout=60) if write else None
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
                "last_processed_timestamp_ms": int_or_none(st.get("last_processed_timestamp_ms")),
                "last_processed_event_key": st.get("last_processed_event_key"),
                "maintenance_skip_applied_ms": int_or_none(st.get("maintenance_skip_applied_ms")),
                "sim_now_ms": now,
                "sim_now_utc": iso_utc(now),
                "tick": w.get("step"),
                "kill_switch": self.kill_switch_state(),
                "broker_up": bool(w.get("broker_up")),
                "rate_limited": bool(w.get("rate_limited")),
                "feed_stalled": bool(w.get("feed_stalled")),
                "open_orders": open_n,
                "positions": reconcile.positions_view(w, c),
                "equity": eq["equity"] if eq else None,
                "peak_equity": eq["peak"] if eq else None,
                "drawdown": eq["drawdown"] if eq else None,
                "audit_log_count": count,
                "lock": ledger.read_lock(self.lay),
                "faults": sorted(w.get("faults", {})),
                "unreconciled_since_ms": w.get("unreconciled_since_ms"),
            }
        return out

    def positions(self) -> dict[str, Any]:
        """{"local": {symbol: qty}, "broker": {symbol: qty} | None, ["broker_error": code]}."""
        return reconcile.positions(self)

    def order_record(self, c: sqlite3.Connection, client_order_id: str) -> dict[str, Any] | None:
        """The local order (intent joined with its result) by client order id, or None."""
        return orders.order_record(c, client_order_id)

    def open_orders(self) -> list[dict[str, Any]]:
        """Local orders not yet terminal (PENDING, NEW, OPEN, UNKNOWN), oldest first."""
        return orders.open_orders(self)

    def find_order(self, client_order_id: str) -> dict[str, Any]:
        """Local record and exchange view of one order (verify after an in-doubt submit)."""
        return orders.find_order(self, client_order_id)

    def kill_switch_state(self) -> dict[str, Any]:
        """{"engaged": bool, "payload": {...} | None} from the KILL_SWITCH file."""
        return risk.kill_switch_state(self)

    # ------------------------------------------------------------------ operator actions

    def set_safety_mode(self, mode: str, reason_code: str, reason_message: str,
                        actor: str = "operator", allow_non_halt: bool = False) -> dict[str, Any]:
        """Operator transition with reason (audited); raises Refused on illegal transitions."""
        return risk.set_safety_mode(self, mode, reason_code, reason_message, actor, allow_non_halt)

    def cancel_all_orders(self, client_token: str | None = None, actor: str = "operator") -> dict[str, Any]:
        """Cancel every open order at the exchange and locally; idempotent on client_token."""
        return orders.cancel_all_orders(self, client_token, actor)

    def reduce_only_order(self, symbol: str, side: str, notional: float | None = None,
                          client_order_id: str = "", qty: float | None = None,
                          risk_off: bool = False, actor: str = "operator") -> dict[str, Any]:
        """Market reduce-only order, idempotent on client_order_id (see `orders.reduce_only_order`)."""
        return orders.reduce_only_order(self, symbol, side, notional, client_order_id, qty, risk_off, actor)

    def submit_order(self, symbol: str, side: str, qty: float, client_order_id: str,
                     ref_price: float | None = None, actor: str = "operator") -> dict[str, Any]:
        """Market order (not reduce-only), idempotent on client_order_id (see `orders.submit_order`)."""
        return orders.submit_order(self, symbol, side, qty, client_order_id, ref_price, actor)

    def submit_intent(self, w: World, c: sqlite3.Connection, cid: str, symbol: str, side: str, qty: float,
                      order_type: str, limit: float | None, reduce_only: bool, source: str, actor: str,
                      notional: float | None) -> dict[str, Any]:
        """Record an order intent, send it to the exchange and apply the answer (UNKNOWN when unreachable)."""
        return orders.submit_intent(self, w, c, cid, symbol, side, qty, order_type, limit, reduce_only,
                                    source, actor, notional)

    def sync_order(self, w: World, c: sqlite3.Connection, order: dict[str, Any], resubmit: bool = False) -> bool:
        """Bring one open order up to date from the exchange; False when the query failed."""
        return orders.sync_order(self, w, c, order, resubmit)

    def enforce_retry_budget(self, w: World, c: sqlite3.Connection) -> dict[str, Any] | None:
        """UNKNOWN orders past the retry budget: mark them and escalate per retry_budget_mode."""
        return orders.enforce_retry_budget(self, w, c)

    def reconcile(self, adopt: bool = False, actor: str = "operator") -> dict[str, Any]:
        """Compare local and broker positions; critical drift -> HALT RECONCILE_CRITICAL (audited).

        adopt=True first makes the local positions equal to the broker snapshot (audited).
        Returns {"ok", "drift": [{symbol, local, broker, diff, pct}], "missing_symbols",
        "critical", "transition"} or {"ok": False, "error": code} when the broker is down.
        """
        return reconcile.reconcile(self, adopt, actor)

    def kill_switch(self, engage: bool, reason: str, actor: str = "operator") -> dict[str, Any]:
        """Engage (write KILL_SWITCH, cancel pending orders, HALT) or release (remove the file).

        Releasing does not leave HALT: the operator resets safety afterwards.
        """
        return risk.kill_switch(self, engage, reason, actor)

    # ------------------------------------------------------------------ simulated time

    def tick(self, n: int = 1) -> dict[str, Any]:
        """Advance simulated time n bars: market, ingest, orders, strategy, equity, risk, reconcile."""
        return clock.tick(self, n)

    def observe(self) -> list[str]:
        """One monitor cycle without advancing time (after a fault or a heal)."""
        return clock.observe(self)

    def mark_equity(self, w: World, c: sqlite3.Connection, now: int, events: list[str]) -> None:
        """Append the equity point; a daily loss or drawdown breach engages the kill switch."""
        risk.mark_equity(self, w, c, now, events)

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
        return rollback.rollback(self, steps, to_hash, dry_run, strict, reason, actor)


def utc_stamp(ms: int) -> str:
    """YYYYMMDD-HHMM for backup file names."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%d-%H%M")
