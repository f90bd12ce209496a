"""The shapes of the records that change a run's state (see engine.state).

Each function returns the `data` of one record type; the interpreter, resume,
approvals and cancel all build their records here, so a field has one name.
"""

from __future__ import annotations

from typing import Any


def step_started(kind: str, **fields: Any) -> dict[str, Any]:
    """A step begins (for a mutating step: before it acts, with its token and params)."""
    return {"kind": kind, **fields}


def step_finished(status: str, *, ok: bool, result: Any = None, error: str | None = None, attempts: int = 0,
                  duration_s: float = 0.0, final: bool = True, next_step: str | None = None,
                  **fields: Any) -> dict[str, Any]:
    """A step (or one item or attempt of it, when not `final`) ended with this verdict."""
    data: dict[str, Any] = {"status": status, "ok": ok, "result": result, "error": error, "attempts": attempts,
                            "duration_s": round(duration_s, 6), "final": final, **fields}
    if final:
        data["next"] = next_step
    return data


def approval(decision: str, by: str, *, note: str | None, via: str, approval_id: str, **fields: Any) -> dict[str, Any]:
    """An approval decision that counts: given through `approve`, the terminal or the serve API."""
    return {"decision": decision, "by": by, "note": note, "via": via, "id": approval_id, **fields}


def approval_refused(by: str, reason: str, *, via: str, approval_id: str | None = None,
                     note: str | None = None) -> dict[str, Any]:
    """Someone who may not approve tried to."""
    return {"by": by, "reason": reason, "via": via, "id": approval_id, "note": note}


def in_doubt(*, attempt: Any, item: Any, token: Any, verify: bool | None, choice: str | None, by: str,
             rollback: bool = False) -> dict[str, Any]:
    """How a step that started but never recorded its end was resolved."""
    data = {"attempt": attempt, "item": item, "token": token, "verify": verify, "choice": choice, "by": by}
    if rollback:
        data["rollback"] = True
    return data


def cancelled(by: str, reason: str, *, rollback: bool, in_doubt_step: str | None) -> dict[str, Any]:
    """An operator ended a paused or interrupted run."""
    return {"by": by, "reason": reason, "rollback": rollback, "in_doubt_step": in_doubt_step}


def run_finished(outcome: str, exit_code: int, message: str) -> dict[str, Any]:
    """The run ended."""
    return {"outcome": outcome, "exit_code": exit_code, "message": message}
