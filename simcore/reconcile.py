"""Positions and reconciliation: local (core.db) against broker (world.db) positions.

Drift beyond `reconcile.tolerance_qty` escalates to ARMED_SAFE RECONCILE_DRIFT; drift at or
above `critical_drift_pct`, or a local position the broker does not know, to HALT
RECONCILE_CRITICAL.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from . import db, safety
from .broker import World
from .errors import BrokerUnavailable
from .fsutil import canonical_json

if TYPE_CHECKING:
    from .core import Core


def local_positions(c: sqlite3.Connection) -> dict[str, float]:
    """{symbol: qty} from core.db's positions table."""
    return {r["symbol"]: r["qty"] for r in c.execute("SELECT symbol, qty FROM positions ORDER BY symbol")}


def positions_view(w: World, c: sqlite3.Connection) -> dict[str, Any]:
    """{"local": {symbol: qty}, "broker": {symbol: qty} | None, ["broker_error": code]}."""
    out: dict[str, Any] = {"local": local_positions(c)}
    try:
        w.require_up()
        out["broker"] = w.positions()
    except BrokerUnavailable as exc:
        out["broker"] = None
        out["broker_error"] = exc.error_code
    return out


def positions(core: Core) -> dict[str, Any]:
    """Local and broker positions, read without the core lock."""
    with core.session(write=False) as (w, c):
        return positions_view(w, c)


def reconcile(core: Core, adopt: bool = False, actor: str = "operator") -> dict[str, Any]:
    """Operator reconcile under the core lock, always audited (see `run`)."""
    with core.session() as (w, c):
        return run(core, w, c, adopt, actor, record=True)


def run(core: Core, w: World, c: sqlite3.Connection, adopt: bool, actor: str, record: bool) -> dict[str, Any]:
    """Compare positions, escalate on drift, audit when record; adopt first copies the broker's."""
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
    local = local_positions(c)
    if adopt:
        with db.tx(c):
            c.execute("DELETE FROM positions")
            for sym, q in broker.items():
                c.execute("INSERT INTO positions VALUES (?,?,?,?)", (sym, q, None, now))
            db.audit(c, now, "reconcile", "adopt_broker", actor, canonical_json(local),
                     canonical_json(broker), "RECONCILE_ADOPT", "local positions set from broker")
        local = dict(broker)
    tol = float(core.setting("reconcile", "tolerance_qty"))
    crit = float(core.setting("reconcile", "critical_drift_pct"))
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
