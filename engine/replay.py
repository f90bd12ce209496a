"""Rebuild a run's state from its event log (the write-ahead log): the basis of resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.model import Runbook


@dataclass
class Replayed:
    """Where a run stands according to its records."""

    started: dict[str, Any] = field(default_factory=dict)
    position: str | None = None
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollback_stack: list[str] = field(default_factory=list)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    halted: bool = False
    in_flight: dict[str, Any] | None = None
    items_done: dict[str, list[Any]] = field(default_factory=dict)
    unhandled: dict[str, Any] | None = None
    finished: dict[str, Any] | None = None


def replay(events: list[dict[str, Any]], runbook: Runbook) -> Replayed:
    """Fold the records of one run into a Replayed state."""
    state = Replayed()
    for event in events:
        kind, step, data = event["type"], event.get("step") or "", event.get("data") or {}
        if kind == "run_started":
            state.started = data
            state.position = runbook.steps[0].id if runbook.steps else None
        elif kind == "step_started":
            state.in_flight = {"step": step, **data}
        elif kind == "step_finished":
            _finished(state, step, data)
        elif kind == "rollback" and state.rollback_stack and state.rollback_stack[-1] == step:
            state.rollback_stack.pop()
        elif kind == "approval" and data.get("decision") in ("approved", "denied"):
            state.approvals[step] = data
        elif kind == "kill_switch":
            state.halted = True
        elif kind == "run_finished":
            state.finished = data
    return state


def _finished(state: Replayed, step: str, data: dict[str, Any]) -> None:
    if not data.get("final"):
        if data.get("item") is not None and not data.get("retrying"):
            state.items_done.setdefault(step, []).append(data.get("result"))
        state.in_flight = None
        return
    state.in_flight = None
    state.items_done.pop(step, None)
    state.steps[step] = {k: data.get(k) for k in ("status", "ok", "result", "attempts", "duration_s", "error")}
    if data.get("rollback"):
        return
    if data.get("rollback_push"):
        state.rollback_stack.append(data["rollback_push"])
    if data.get("unhandled"):
        state.unhandled = {"outcome": data["unhandled"], "step": step, "error": data.get("error")}
    if data.get("outcome"):
        state.unhandled = {"outcome": data["outcome"], "step": step, "error": None, "end": True}
    state.position = data.get("next")
