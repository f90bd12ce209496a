"""Safety modes ARMED_LIVE / ARMED_SAFE / HALT: operator transitions (seed 002's
ops_reset_safety rules) and automatic escalations; every change is audited."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from . import db
from .errors import BadRequest, Refused

MODES = ("ARMED_LIVE", "ARMED_SAFE", "HALT")
SEVERITY = {"ARMED_LIVE": 0, "ARMED_SAFE": 1, "HALT": 2}
_CODE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def check_request(
    current: str,
    target: str,
    reason_code: str,
    allow_non_halt: bool,
    kill_switch: bool,
    schema_ok: bool,
) -> None:
    """Raise BadRequest/Refused unless an operator may move from current to target.

    Entering HALT is always allowed. Leaving HALT goes to ARMED_SAFE; HALT -> ARMED_LIVE
    and any change between non-HALT modes need allow_non_halt. Nothing but HALT while the
    kill switch is engaged or the schema version is wrong.
    """
    if target not in MODES:
        raise BadRequest(f"unknown mode {target!r}; expected one of {', '.join(MODES)}")
    if not reason_code or not _CODE.match(reason_code):
        raise BadRequest(f"reason_code must be UPPER_SNAKE_CASE, got {reason_code!r}")
    if target == "HALT":
        return
    if kill_switch:
        raise Refused(f"kill switch engaged: release it before leaving HALT (requested {target})")
    if not schema_ok:
        raise Refused(f"schema_version != {db.SCHEMA_VERSION}: rebuild the DB before leaving HALT")
    if current == "HALT" and target == "ARMED_LIVE" and not allow_non_halt:
        raise Refused("HALT -> ARMED_LIVE is not allowed directly: reset to ARMED_SAFE first "
                      "(or pass allow_non_halt / --allow-non-halt)")
    if current != "HALT" and not allow_non_halt:
        raise Refused(f"current mode is {current} (not HALT): pass allow_non_halt / "
                      "--allow-non-halt to change it")


def transition(
    conn: sqlite3.Connection,
    now_ms: int,
    target: str,
    reason_code: str,
    reason_message: str,
    actor: str,
    action: str = "set_mode",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Record the new mode and reason in system_state and audit_log (caller holds a tx)."""
    st = db.get_state(conn)
    prev = st.get("safety_mode")
    for key, value in (
        ("safety_mode", target),
        ("safety_reason_code", reason_code),
        ("safety_reason_message", reason_message),
        ("safety_changed_ms", now_ms),
    ):
        db.set_state(conn, key, value, now_ms)
    audit_id = db.audit(
        conn, now_ms, "safety", action, actor, prev, target, reason_code, reason_message, details
    )
    return {
        "previous_mode": prev,
        "safety_mode": target,
        "reason_code": reason_code,
        "reason_message": reason_message,
        "audit_id": audit_id,
    }


def escalate(
    conn: sqlite3.Connection,
    now_ms: int,
    target: str,
    reason_code: str,
    message: str,
    override_same: bool = False,
) -> dict[str, Any] | None:
    """Automatic transition to a stricter mode; no-op when already at least as strict
    (override_same: also replace the reason of an equally strict mode)."""
    st = db.get_state(conn)
    current = st.get("safety_mode", "HALT")
    sev, want = SEVERITY.get(current, 2), SEVERITY[target]
    if sev > want or (sev == want and not (override_same and st.get("safety_reason_code") != reason_code)):
        return None
    return transition(conn, now_ms, target, reason_code, message, "simcore", action="auto")
