"""The run state as a value: it changes only by applying a record of the event log.

The interpreter writes a record and applies that same record (`RunState.apply`);
resume folds `apply` over the log it reads back (`RunState.fold`). One
transition function, two callers, so a live run and a resumed one agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.vocabulary import StepStatus

STEP_VIEW_KEYS = ("status", "ok", "result", "attempts", "duration_s", "error")
RELEASED = "<released: no template of this runbook reads it; the result is in events.jsonl>"


class PlannedResult(dict):  # type: ignore[type-arg]
    """The result of a planned (not run) action: keys it does not have read as a placeholder.

    A dry-run cannot know what an action would return; later templates that use
    it render `<not known in dry-run: steps.ID.result.KEY>` instead of failing.
    """

    def __init__(self, step_id: str, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.step_id = step_id

    def __missing__(self, key: str) -> str:
        return f"<not known in dry-run: steps.{self.step_id}.result.{key}>"


@dataclass
class RunState:
    """Where a run stands according to its records."""

    position: str | None = None
    started: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollback_stack: list[str] = field(default_factory=list)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    approval_ids: list[str] = field(default_factory=list)
    # Plan-bound approvals: bound action id -> {approval, decision, by, plan, plan_sha256} of its latest decision.
    bound: dict[str, dict[str, Any]] = field(default_factory=dict)
    halted: bool = False
    in_flight: dict[str, Any] | None = None
    items_done: dict[str, list[Any]] = field(default_factory=dict)
    unhandled: dict[str, Any] | None = None
    finished: dict[str, Any] | None = None
    cancelled: dict[str, Any] | None = None
    # The steps whose result later templates can read (engine.validate.result_readers); None: all.
    # The result of any other step is in the event log once its record is written, and the state
    # keeps only a short stub for it, so memory does not grow with the results of a long run.
    kept: frozenset[str] | None = None

    @classmethod
    def fold(cls, events: Iterable[dict[str, Any]], start: str | None, kept: frozenset[str] | None = None) -> RunState:
        """The state a run reached: `apply` over its records, from its first step."""
        state = cls(position=start, kept=kept)
        for event in events:
            state.apply(event)
        return state

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """Take one record of the event log into the state; returns the record."""
        kind, step, data = record["type"], record.get("step") or "", record.get("data") or {}
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, step, data)
        return record

    def step_view(self, step: str) -> dict[str, Any] | None:
        """`steps.ID` as templates see it, or None when the step has not finished."""
        return self.steps.get(step)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (for comparing a live state with a folded one)."""
        return {"position": self.position, "steps": {k: dict(v) for k, v in self.steps.items()},
                "rollback_stack": list(self.rollback_stack), "approvals": dict(self.approvals),
                "approval_ids": list(self.approval_ids), "bound": {k: dict(v) for k, v in self.bound.items()},
                "halted": self.halted, "in_flight": self.in_flight,
                "items_done": {k: list(v) for k, v in self.items_done.items()}, "unhandled": self.unhandled,
                "finished": self.finished, "cancelled": self.cancelled}


def _run_started(state: RunState, step: str, data: dict[str, Any]) -> None:
    state.started = data


def _step_started(state: RunState, step: str, data: dict[str, Any]) -> None:
    state.in_flight = None if data.get("skipped") else {"step": step, **data}


def _step_finished(state: RunState, step: str, data: dict[str, Any]) -> None:
    state.in_flight = None
    if not data.get("final"):
        if data.get("item") is not None and not data.get("retrying"):
            state.items_done.setdefault(step, []).append(data.get("result"))
        return
    state.items_done.pop(step, None)
    view = {k: data.get(k) for k in STEP_VIEW_KEYS}
    if state.kept is not None and step not in state.kept and view["result"] is not None:
        view["result"] = RELEASED
    elif view["status"] == StepStatus.PLANNED and isinstance(view["result"], dict):
        view["result"] = PlannedResult(step, view["result"])
    state.steps[step] = view
    if data.get("rollback"):
        return
    state.approvals.pop(step, None)
    if data.get("rollback_push"):
        state.rollback_stack.append(data["rollback_push"])
    if data.get("unhandled"):
        state.unhandled = {"outcome": data["unhandled"], "step": step, "error": data.get("error")}
    if data.get("outcome"):
        state.unhandled = {"outcome": data["outcome"], "step": step, "error": None, "end": True}
    state.position = data.get("next")


def _rollback(state: RunState, step: str, data: dict[str, Any]) -> None:
    if state.rollback_stack and state.rollback_stack[-1] == step:
        state.rollback_stack.pop()


def _approval(state: RunState, step: str, data: dict[str, Any]) -> None:
    if data.get("id"):
        state.approval_ids.append(data["id"])
    if data.get("decision") not in ("approved", "denied"):
        return
    if not data.get("rebind"):  # a new approval of a changed plan is not a decision of the approve step itself
        state.approvals[step] = data
    for target, plan in (data.get("plans") or {}).items():
        state.bound[target] = {"approval": step, "decision": data["decision"], "by": data.get("by"), "plan": plan,
                               "plan_sha256": data.get("plan_sha256")}


def _approval_refused(state: RunState, step: str, data: dict[str, Any]) -> None:
    if data.get("id"):
        state.approval_ids.append(data["id"])


def _kill_switch(state: RunState, step: str, data: dict[str, Any]) -> None:
    state.halted = True


def _in_doubt(state: RunState, step: str, data: dict[str, Any]) -> None:
    if data.get("rollback") and data.get("choice") == "rerun":
        state.rollback_stack.append(step)


def _cancelled(state: RunState, step: str, data: dict[str, Any]) -> None:
    state.cancelled = data


def _run_finished(state: RunState, step: str, data: dict[str, Any]) -> None:
    state.finished = data


_HANDLERS = {
    "run_started": _run_started, "step_started": _step_started, "step_finished": _step_finished,
    "rollback": _rollback, "approval": _approval, "approval_refused": _approval_refused,
    "kill_switch": _kill_switch, "in_doubt": _in_doubt, "cancelled": _cancelled, "run_finished": _run_finished,
}
