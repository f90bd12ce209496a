"""A mutating step that started but never recorded its end: verified, rerun on request, or the run pauses.

One resolver for steps and rollback steps: ask the plugin's `verify`; if it
cannot tell, take the operator's `--in-doubt` choice; without one, pause.
"""

from __future__ import annotations

from typing import Any

from engine import records
from engine.errors import ExpressionError
from engine.expressions import evaluate, render
from engine.interpreter import Interpreter, Pause, StepResult
from engine.model import ActionStep, CheckStep, Runbook
from engine.state import RunState
from engine.vocabulary import StepStatus

CHOICES = ["rerun", "skip", "fail"]


def resolve(interp: Interpreter, runbook: Runbook, flight: dict[str, Any], in_doubt: str | None, by: str,
            *, rollback: bool = False) -> tuple[str, bool | None]:
    """The choice for an in-doubt step (`done`, `rerun`, `skip` or `fail`), recorded; Pause when there is none."""
    step = runbook.step(flight["step"])
    assert isinstance(step, (ActionStep, CheckStep))
    answer = verify(interp, step, flight)
    choice = {True: "done", False: "rerun"}.get(answer) if answer is not None else in_doubt
    interp.emit("in_doubt", step.id, records.in_doubt(attempt=flight.get("attempt"), item=flight.get("item"),
                                                      token=flight.get("token"), verify=answer, choice=choice,
                                                      by=by, rollback=rollback))
    if choice is None:
        what = "rollback step" if rollback else "step"
        raise Pause(f"{what} '{step.id}' is in doubt: it started but never recorded its end, and its plugin cannot "
                    "tell whether it took effect; resume with --in-doubt rerun|skip|fail",
                    {"type": "in_doubt", "step": step.id, "token": flight.get("token"), "rollback": rollback,
                     "choices": CHOICES})
    return choice, answer


def verify(interp: Interpreter, step: ActionStep | CheckStep, flight: dict[str, Any]) -> bool | None:
    """Did the in-doubt invocation take effect? None when the plugin cannot tell."""
    plugin = interp.plugin_for(step)
    check = getattr(plugin, "verify", None)  # a check run as `mutates: true` may verify too, without being an Action
    if check is None:
        return None
    items = None
    try:
        if step.for_each is not None:
            items = evaluate(step.for_each, interp.scope())
        extra = {"item": items[flight["item"]]} if items is not None and flight.get("item") is not None else {}
        params = render(step.with_ or {}, interp.scope(**extra))
    except (ExpressionError, IndexError, TypeError):
        return None
    try:
        answer: bool | None = check(params, interp.context(step, flight.get("attempt") or 1, flight.get("item")))
        return answer
    except Exception:  # noqa: BLE001 - a verify that crashes cannot tell
        return None


def needs_resolving(flight: dict[str, Any] | None) -> bool:
    """True for a mutating, not planned, step in flight."""
    return flight is not None and bool(flight.get("mutates")) and not flight.get("planned")


def rollback_in_doubt(interp: Interpreter, runbook: Runbook, state: RunState, in_doubt: str | None, by: str) -> None:
    """A rollback step interrupted mid-way goes back on the stack when it is to run again."""
    if needs_resolving(state.in_flight):
        assert state.in_flight is not None
        resolve(interp, runbook, state.in_flight, in_doubt, by, rollback=True)


def position_after(interp: Interpreter, runbook: Runbook, state: RunState, in_doubt: str | None,
                   by: str) -> str | None:
    """Where a resumed run continues: its position, or the in-flight step resolved."""
    flight = state.in_flight
    if flight is None:
        return state.position
    step = runbook.step(flight["step"])
    if flight.get("kind") == "call" and flight.get("child_run_id"):
        return step.id
    if not needs_resolving(flight):
        return step.id
    choice, answer = resolve(interp, runbook, flight, in_doubt, by)
    if choice == "rerun":
        return step.id
    status = {"done": StepStatus.OK, "skip": StepStatus.SKIPPED, "fail": StepStatus.FAILED}[choice]
    outcome = StepResult(status, result={"in_doubt": choice, "verified": answer},
                         error="in doubt; the operator chose fail" if choice == "fail" else None,
                         attempts=flight.get("attempt") or 1)
    if flight.get("item") is not None:
        interp.emit("step_finished", step.id, records.step_finished(
            status, ok=status == StepStatus.OK, result=outcome.result, attempts=outcome.attempts, final=False,
            item=flight["item"]))
        return step.id
    return interp.route(step, outcome)
