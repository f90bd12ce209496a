"""Operator safety controls and risk limits: safety-mode requests, the kill switch, equity marks.

The KILL_SWITCH file under the core root is the switch; engaging it cancels open orders and
moves to HALT. Each tick marks equity, and a daily loss or drawdown breach engages it.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from . import db, orders, safety
from .broker import World
from .errors import BrokerUnavailable
from .fsutil import atomic_write_json, iso_utc, read_json, wall_ms

if TYPE_CHECKING:
    from .core import Core


def set_safety_mode(core: Core, mode: str, reason_code: str, reason_message: str,
                    actor: str = "operator", allow_non_halt: bool = False) -> dict[str, Any]:
    """Operator transition with reason (audited); raises Refused on illegal transitions."""
    with core.session() as (w, c):
        st = db.get_state(c)
        safety.check_request(
            st.get("safety_mode", "HALT"), mode, reason_code, allow_non_halt,
            core.lay.kill_switch.exists(), st.get("schema_version") == str(db.SCHEMA_VERSION))
        with db.tx(c):
            return safety.transition(c, w.now_ms, mode, reason_code, reason_message, actor,
                                     details={"allow_non_halt": allow_non_halt})


def kill_switch_state(core: Core) -> dict[str, Any]:
    """{"engaged": bool, "payload": {...} | None} from the KILL_SWITCH file."""
    if not core.lay.kill_switch.exists():
        return {"engaged": False, "payload": None}
    try:
        payload = read_json(core.lay.kill_switch)
    except (OSError, ValueError):
        payload = {"reason": "KILL_SWITCH file present (not JSON)"}
    return {"engaged": True, "payload": payload}


def kill_switch(core: Core, engage: bool, reason: str, actor: str = "operator") -> dict[str, Any]:
    """Engage (write KILL_SWITCH, cancel pending orders, HALT) or release (remove the file).

    Releasing does not leave HALT: the operator resets safety afterwards.
    """
    with core.session() as (w, c):
        if engage:
            return engage_kill_switch(core, w, c, reason, actor, "KILL_SWITCH_ENGAGED")
        was = core.lay.kill_switch.exists()
        if was:
            core.lay.kill_switch.unlink()
        with db.tx(c):
            db.audit(c, w.now_ms, "kill_switch", "release", actor, "engaged" if was else "released",
                     "released", "KILL_SWITCH_RELEASED", reason)
        st = db.get_state(c)
        return {"engaged": False, "was_engaged": was, "safety_mode": st.get("safety_mode"),
                "safety_reason_code": st.get("safety_reason_code")}


def engage_kill_switch(core: Core, w: World, c: sqlite3.Connection, reason: str, actor: str, code: str) -> dict[str, Any]:
    """Write KILL_SWITCH (kept if present), cancel open orders, audit, and HALT with code."""
    now = w.now_ms
    already = core.lay.kill_switch.exists()
    payload = kill_switch_state(core)["payload"] if already else {
        "engaged": True, "reason": reason, "actor": actor, "ts_utc": iso_utc(wall_ms()),
        "sim_ts_ms": now}
    if not already:
        atomic_write_json(core.lay.kill_switch, payload)
    try:
        cancel = orders.cancel_all(w, c, actor, None)
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


def mark_equity(core: Core, w: World, c: sqlite3.Connection, now: int, events: list[str]) -> None:
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
    if loss_pct >= float(core.setting("risk", "max_daily_loss_pct")):
        breach.append(f"daily_loss_pct={loss_pct:.2f} >= {core.setting('risk', 'max_daily_loss_pct')}")
    if dd * 100 >= float(core.setting("risk", "max_drawdown_pct")):
        breach.append(f"drawdown_pct={dd * 100:.2f} >= {core.setting('risk', 'max_drawdown_pct')}")
    if breach and (not core.lay.kill_switch.exists() or db.get_state(c).get("safety_mode") != "HALT"):
        engage_kill_switch(core, w, c, "LOSS_LIMIT_BREACH: " + "; ".join(breach), "simcore:risk", "LOSS_LIMIT_BREACH")
        events.append("HALT LOSS_LIMIT_BREACH")
