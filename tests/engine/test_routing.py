"""One set of routing rules (SPEC 2.3) serves validation, `runbook graph` and the interpreter."""

from __future__ import annotations

from engine import catalog
from engine.builder import build_runbook
from engine.loader import load_text
from engine.plugins import load_registry
from engine.routing import END, Edge, Route, edges, following
from engine.validate import validate_document

STEPS = [
    {"id": "probe", "check": "shell", "with": {"argv": ["true"]}, "on_fail": "stop"},
    {"id": "route", "decide": [{"if": "steps.probe.ok", "goto": "act"}, {"else": "stop"}]},
    {"id": "act", "action": "shell", "with": {"argv": ["true"]}, "rollback": "undo", "goto": "maybe"},
    {"id": "maybe", "when": "params.x", "end": "BUSINESS_SKIP"},
    {"id": "last", "check": "shell", "with": {"argv": ["true"]}},
    {"id": "stop", "end": "BUSINESS_REJECT"},
    {"id": "undo", "action": "shell", "with": {"argv": ["true"]}},
]


def test_edges_of_every_route() -> None:
    runbook = build_runbook({"runbook": "r", "title": "r", "version": 1, "steps": STEPS}, "r.yaml", "0" * 64)
    assert edges(runbook) == [
        Edge("probe", "route", Route.NEXT), Edge("probe", "stop", Route.ON_FAIL),
        Edge("route", "act", Route.BRANCH, "steps.probe.ok"), Edge("route", "stop", Route.BRANCH, "else"),
        Edge("act", "maybe", Route.GOTO), Edge("act", "undo", Route.ROLLBACK),
        Edge("maybe", "last", Route.NEXT),
        Edge("last", "stop", Route.NEXT),
        Edge("undo", END, Route.NEXT),
    ]
    assert following(runbook, runbook.step("undo")) is None
    assert {"from": "act", "to": "undo", "label": "rollback"} in catalog.graph_document(runbook)["edges"]


def test_a_skipped_decide_falls_through_as_the_interpreter_does() -> None:
    """A decide step with `when` that is false goes to the next step: that step is reachable."""
    doc = load_text("""
runbook: r
title: r
version: 1
steps:
  - id: route
    when: "false"
    decide:
      - if: "true"
        goto: done
  - id: after
    end: BUSINESS_REJECT
  - id: done
    end: SUCCESS
""", "r.yaml")
    runbook, problems = validate_document(doc, load_registry())
    assert problems == []
    assert runbook is not None
    assert Edge("route", "after", Route.NEXT) in edges(runbook)
