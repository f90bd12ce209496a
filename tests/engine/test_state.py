"""The run state changes only by applying records: table tests of `apply`, and a property test that the fold
of a run's event log equals the state the live interpreter ended with."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.state import PlannedResult, RunState


def rec(type_: str, step: str | None = None, **data: Any) -> dict[str, Any]:
    return {"type": type_, "step": step, "data": data}


def finished(step: str, status: str = "ok", **data: Any) -> dict[str, Any]:
    return rec("step_finished", step, status=status, ok=status in ("ok", "planned"), result=None, error=None,
               attempts=1, duration_s=0.0, final=True, **data)


APPLY_TABLE = [
    ("a final step_finished moves the position and records the view",
     [finished("a", next="b")], {"position": "b", "steps": ["a"]}),
    ("a completed action with a rollback pushes it",
     [finished("a", next="b", rollback_push="undo_a")], {"rollback_stack": ["undo_a"]}),
    ("a rollback record pops the top of the stack",
     [finished("a", next="b", rollback_push="undo_a"), rec("rollback", "undo_a")], {"rollback_stack": []}),
    ("a rollback record for another step pops nothing",
     [finished("a", next="b", rollback_push="undo_a"), rec("rollback", "other")], {"rollback_stack": ["undo_a"]}),
    ("an item of a for_each is remembered until the step's final record",
     [rec("step_finished", "each", status="ok", result=1, final=False, item=0)], {"items_done": {"each": [1]}}),
    ("a retry of an item is not an item done",
     [rec("step_finished", "each", status="failed", final=False, item=0, retrying=True)], {"items_done": {}}),
    ("a mutating step started and not finished is in flight",
     [rec("step_started", "act", kind="action", mutates=True, token="t")], {"in_flight": "act"}),
    ("an approval counts until its step finishes",
     [rec("approval", "gate", decision="approved", by="bob", id="x")], {"approvals": ["gate"], "approval_ids": ["x"]}),
    ("the approve step's end consumes its approval",
     [rec("approval", "gate", decision="approved", by="bob", id="x"), finished("gate", next="c")], {"approvals": []}),
    ("a refused approval is known but grants nothing",
     [rec("approval_refused", "gate", by="eve", id="y")], {"approvals": [], "approval_ids": ["y"]}),
    ("an unhandled failure is remembered for resume",
     [finished("a", "failed", next=None, unhandled="INTERNAL_ERROR")], {"unhandled": "INTERNAL_ERROR"}),
    ("an in-doubt rollback chosen to rerun goes back on the stack",
     [rec("in_doubt", "undo", rollback=True, choice="rerun")], {"rollback_stack": ["undo"]}),
    ("the kill switch halts", [rec("kill_switch", "a")], {"halted": True}),
    ("cancel and finish are recorded", [rec("cancelled", None, by="op"), rec("run_finished", None, outcome="SUCCESS")],
     {"cancelled": True, "finished": True}),
]


@pytest.mark.parametrize(("records", "expected"), [(r, e) for _, r, e in APPLY_TABLE],
                         ids=[name for name, _, _ in APPLY_TABLE])
def test_apply(records: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    state = RunState.fold(records, "a")
    for key, value in expected.items():
        actual = getattr(state, key)
        if key == "steps":
            assert sorted(actual) == value
        elif key == "approvals":
            assert sorted(actual) == value
        elif key == "in_flight":
            assert actual is not None and actual["step"] == value
        elif key == "unhandled":
            assert actual is not None and actual["outcome"] == value
        elif key in ("cancelled", "finished"):
            assert (actual is not None) is value
        else:
            assert actual == value


def test_a_planned_result_keeps_its_placeholders_after_a_fold() -> None:
    state = RunState.fold([finished("act", "planned", next=None) | {"data": {
        "status": "planned", "ok": True, "result": {"planned": True}, "final": True, "next": None}}], "act")
    result = state.steps["act"]["result"]
    assert isinstance(result, PlannedResult) and "not known in dry-run" in result["order_id"]


# -- property: the fold of the log equals the live state ------------------------------------------------------

STEP_KINDS = st.sampled_from(["check_ok", "check_fail", "action", "action_fails", "each", "decide"])


def _runbook(kinds: list[str]) -> str:
    lines = ["runbook: generated", "title: Generated", "version: 1", "description: generated", "source: tests",
             "default_fail: BUSINESS_REJECT", "steps:"]
    undo_needed = False
    for n, kind in enumerate(kinds):
        sid = f"s{n}"
        if kind == "check_ok":
            lines += [f"  - id: {sid}", "    check: noop", f"    with: {{value: {n}}}", f"    expect: result.value == {n}"]
        elif kind == "check_fail":
            lines += [f"  - id: {sid}", "    check: noop", f"    with: {{value: {n}}}", "    expect: result.value < 0",
                      f"    on_fail: s{n + 1}"]
        elif kind == "action":
            lines += [f"  - id: {sid}", "    action: file.write", f"    with: {{path: out{n}.txt, content: '{n}'}}",
                      "    rollback: undo"]
            undo_needed = True
        elif kind == "action_fails":
            lines += [f"  - id: {sid}", "    action: shell", "    with: {argv: [sh, -c, 'exit 3']}",
                      "    expect: result.exit_code == 0"]
        elif kind == "each":
            lines += [f"  - id: {sid}", "    check: noop", "    for_each: '[1, 2, 3]'", "    with: {value: '{{ item }}'}"]
        else:
            lines += [f"  - id: {sid}", "    decide:", f"      - if: steps.s{n - 1}.ok" if n else "      - if: true",
                      f"        goto: s{n + 1}", f"      - else: s{n + 1}"]
    lines += [f"  - id: s{len(kinds)}", "    end: SUCCESS"]
    if undo_needed:
        lines += ["  - id: undo", "    action: file.remove", "    with: {path: out0.txt, missing_ok: true}"]
    return "\n".join(lines) + "\n"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(STEP_KINDS, min_size=1, max_size=7), dry=st.booleans())
def test_the_fold_of_the_events_equals_the_live_state(tmp_path: Path, kinds: list[str], dry: bool) -> None:
    from engine.config import load_config
    from engine.console import QuietConsole
    from engine.evidence import read_events
    from engine.session import RunOptions, Workspace

    root = tmp_path / f"case-{len(list(tmp_path.iterdir()))}"
    (root / "runbooks").mkdir(parents=True)
    (root / "runbooks" / "generated.yaml").write_text(_runbook(kinds), encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        ws = Workspace(load_config(cwd=root), QuietConsole())
        live: list[Any] = []
        build = ws.interpreter

        def capture(*args: Any, **kwargs: Any) -> Any:
            interp = build(*args, **kwargs)
            live.append(interp)
            return interp

        ws.interpreter = capture  # type: ignore[method-assign]
        runbook = ws.load("generated")
        result = ws.start(runbook, {}, RunOptions(mode="dry-run" if dry else "live", operator="prop"))
    finally:
        os.chdir(cwd)
    folded = RunState.fold(read_events(result.evidence_dir / "events.jsonl"), runbook.steps[0].id)

    def plain(state: RunState) -> Any:
        return json.loads(json.dumps(state.snapshot(), default=str, sort_keys=True))

    assert plain(folded) == plain(live[0].state)
