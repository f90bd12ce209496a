"""The routing rules of SPEC 2.3 in one place: where control can go after each step.

Validation (reachability, ends, cycles), `runbook graph` and the interpreter all read
them here, so the graph that is checked and drawn is the one that runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engine.model import DecideStep, EndStep, Runbook, Step

END = "__end__"  # past the last step: the run ends SUCCESS


class Route(StrEnum):
    """Why control goes from one step to another."""

    NEXT = "next"  # the step after it in the file (an ok or skipped step without goto, a skipped end)
    GOTO = "goto"  # its `goto:`
    BRANCH = "branch"  # a branch of a decide step
    ON_FAIL = "on_fail"  # it failed and names where to go
    ROLLBACK = "rollback"  # not a route: the compensation an action registers, run alone at an unhandled failure


@dataclass(frozen=True)
class Edge:
    """One edge of the step graph; `label` is a branch's condition (or `else`)."""

    source: str
    target: str
    route: Route
    label: str = ""


def following(runbook: Runbook, step: Step) -> str | None:
    """Where an ok or skipped step goes when no branch chose: its `goto`, else the next step, else None (the end)."""
    return step.goto or runbook.next_of(step)


def step_edges(runbook: Runbook, step: Step) -> list[Edge]:
    """The edges leaving `step`: its ok or skipped route, its `on_fail`, its rollback."""
    out: list[Edge] = []
    if isinstance(step, DecideStep):
        out += [Edge(step.id, b.goto, Route.BRANCH, b.condition or "else") for b in step.branches]
    if not isinstance(step, (DecideStep, EndStep)) or step.when:
        out.append(Edge(step.id, following(runbook, step) or END, Route.GOTO if step.goto else Route.NEXT))
    if step.on_fail:
        out.append(Edge(step.id, step.on_fail, Route.ON_FAIL))
    if step.rollback:
        out.append(Edge(step.id, step.rollback, Route.ROLLBACK))
    return out


def edges(runbook: Runbook) -> list[Edge]:
    """Every edge of the runbook's step graph, step by step in file order."""
    return [edge for step in runbook.steps for edge in step_edges(runbook, step)]


def successors(runbook: Runbook, step: Step) -> list[str]:
    """Where control can go after `step` (END past the last step); rollback targets are not routes."""
    return [e.target for e in step_edges(runbook, step) if e.route is not Route.ROLLBACK]
