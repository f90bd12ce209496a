"""Meta-state rollback: restore seed 000's current state to an earlier ledger snapshot (audited)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import db, ledger
from .errors import BadRequest
from .fsutil import sha256_json

if TYPE_CHECKING:
    from .core import Core


def rollback(core: Core, steps: int | None = None, to_hash: str | None = None, dry_run: bool = True,
             strict: bool = True, reason: str = "", actor: str = "operator") -> dict[str, Any]:
    """Restore the meta state to an earlier ledger snapshot (by steps back or sha256).

    Dry run changes nothing. Raises LookupError when strict and the target is unknown
    (non-strict clamps steps to the oldest snapshot).
    """
    if (steps is None) == (to_hash is None):
        raise BadRequest("give exactly one of steps or to_hash")
    entries = ledger.read_ledger(core.lay)
    try:
        target, idx = ledger.rollback_target(core.lay, steps, to_hash)
    except LookupError:
        if strict or to_hash is not None or not entries:
            raise
        target, idx = entries[0], 0
    try:
        from_hash = sha256_json(ledger.current_state(core.lay))
    except (OSError, ValueError):
        from_hash = None
    plan = {"dry_run": dry_run, "from_hash": from_hash, "head_hash": entries[-1]["sha256"],
            "to_hash": target["sha256"], "target_index": idx, "target_ts": target.get("ts"),
            "entries": len(entries), "restore": str(core.lay.current_state), "state": target["state"],
            "reason": reason}
    if dry_run:
        return {**plan, "applied": False}
    with core.session() as (w, c):
        entry = ledger.append_snapshot(core.lay, target["state"], w.now_ms, op="rollback",
                                       reason=reason, from_hash=from_hash, restored_index=idx)
        with db.tx(c):
            db.audit(c, w.now_ms, "meta", "rollback", actor, from_hash, target["sha256"],
                     "META_ROLLBACK", reason, {"target_index": idx})
    return {**plan, "applied": True, "ledger_sha256": entry["sha256"]}
