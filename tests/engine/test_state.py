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

from engine.state import RELEASED, PlannedResult, RunState


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
    from engine.validate import result_readers

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
    folded = RunState.fold(read_events(result.evidence_dir / "events.jsonl"), runbook.steps[0].id,
                           kept=result_readers(runbook))

    def plain(state: RunState) -> Any:
        return json.loads(json.dumps(state.snapshot(), default=str, sort_keys=True))

    assert plain(folded) == plain(live[0].state)


# -- flat memory: only results a template can read stay in the state ---------------------------------------------

READERS = [
    ("no template reads a step", ["steps: []"], frozenset()),
    ("ok, status and error do not reach the result", ["expect: steps.a.ok and steps.b.status == 'ok'",
                                                       "message: '{{ steps.c.error }}'"], frozenset()),
    ("result and the whole view keep the result", ["expect: steps.a.result.n > 1", "message: '{{ steps.b | tojson }}'",
                                                   "message: \"{{ steps['c'].result }}\""], frozenset({"a", "b", "c"})),
    ("a chain broken by parentheses keeps the result", ["expect: (steps.a).ok"], frozenset({"a"})),
    ("text outside a template is not a reference", ["message: 'all steps passed {{ steps.a.ok }}'"], frozenset()),
    ("steps by a computed name keeps every result", ["message: '{{ steps[params.which].result }}'"], None),
    ("a loop over steps keeps every result", ["message: '{% for s in steps %}{{ s }}{% endfor %}'"], None),
]


def _reader_runbook(fields: list[str]) -> str:
    lines = ["runbook: readers", "title: Readers", "version: 1", "description: d", "source: tests",
             "params: {which: {type: string, default: a}}", "steps:"]
    for n, sid in enumerate(("a", "b", "c")):
        lines += [f"  - id: {sid}", "    check: noop", f"    with: {{value: {n}}}"]
    for n, field in enumerate(fields):
        if field.startswith("expect:"):
            lines += [f"  - id: r{n}", "    check: noop", f"    {field}"]
        elif field.startswith("message:"):
            lines += [f"  - id: r{n}", "    check: noop", f"    {field}"]
    lines += ["  - id: done", "    end: SUCCESS"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("fields", "expected"), [(f, e) for _, f, e in READERS], ids=[n for n, _, _ in READERS])
def test_result_readers_follow_the_references_of_templates(tmp_path: Path, fields: list[str],
                                                           expected: frozenset[str] | None) -> None:
    from engine.loader import load_file
    from engine.plugins import load_registry
    from engine.validate import result_readers, validate_document

    path = tmp_path / "readers.yaml"
    path.write_text(_reader_runbook([f for f in fields if f != "steps: []"]), encoding="utf-8")
    runbook, problems = validate_document(load_file(path), load_registry())
    assert runbook is not None, problems
    assert result_readers(runbook) == expected


def test_a_result_no_template_reads_is_released_and_one_read_is_kept() -> None:
    record = finished("a", next="b") | {"data": {"status": "ok", "ok": True, "result": {"value": "x" * 4096},
                                                 "final": True, "next": "b"}}
    released = RunState.fold([record], "a", kept=frozenset())
    kept = RunState.fold([record], "a", kept=frozenset({"a"}))
    assert released.steps["a"]["ok"] is True and released.steps["a"]["result"] == RELEASED
    assert kept.steps["a"]["result"] == {"value": "x" * 4096}
    assert RunState.fold([record], "a").steps["a"]["result"] == {"value": "x" * 4096}


def _run_in_process(root: Path, name: str) -> Any:
    from engine.config import load_config
    from engine.console import QuietConsole
    from engine.session import RunOptions, Workspace

    cwd = os.getcwd()
    os.chdir(root)
    try:
        ws = Workspace(load_config(cwd=root), QuietConsole())
        runbook = ws.load(name)
        return ws.start(runbook, {}, RunOptions(mode="live", operator="mem"))
    finally:
        os.chdir(cwd)


def test_memory_stays_flat_over_10000_steps_returning_4kb_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 call steps of a 1000-step runbook (the most a runbook holds) whose steps each return 4 KB (40 MB of
    results): the Python memory a run holds when its last step has finished stays flat, as only the one
    result a template reads is kept. Measured with tracemalloc when each interpreter's loop returns, before
    sealing (sealing reads the whole log today: engine/seal.py, evidence.py, report.py)."""
    import gc
    import tracemalloc

    from engine.interpreter import Interpreter

    root = tmp_path / "mem"
    (root / "runbooks").mkdir(parents=True)
    blob = "x" * 4096
    child = ["runbook: child", "title: Child", "version: 1", "description: d", "source: tests",
             f"params: {{blob: {{type: string, default: {blob}}}}}", "steps:"]
    for i in range(999):
        child += [f"  - id: s{i}", "    check: noop", "    with: {value: '{{ params.blob }}'}"]
    child += ["  - id: done", "    end: SUCCESS", "    message: '{{ steps.s998.result.value | length }}'"]
    (root / "runbooks" / "child.yaml").write_text("\n".join(child) + "\n", encoding="utf-8")
    parent = ["runbook: parent", "title: Parent", "version: 1", "description: d", "source: tests", "steps:"]
    parent += [line for i in range(10) for line in (f"  - id: c{i}", "    call: child")]
    parent += ["  - id: done", "    end: SUCCESS"]
    (root / "runbooks" / "parent.yaml").write_text("\n".join(parent) + "\n", encoding="utf-8")
    _run_in_process(root, "child")  # validation proofs (networkx for call cycles) and imports outside the measurement
    _run_in_process(root, "parent")

    held: list[int] = []
    kept: list[int] = []
    run_from = Interpreter.run_from

    def measured(self: Interpreter, position: str | None) -> Any:
        out = run_from(self, position)
        gc.collect()  # what the run holds, not garbage a collection would free
        held.append(tracemalloc.get_traced_memory()[0])
        kept.append(sum(1 for view in self.state.steps.values() if view["result"] not in (RELEASED, None)))
        return out

    monkeypatch.setattr(Interpreter, "run_from", measured)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = _run_in_process(root, "parent")
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0
    assert len(held) == 11  # ten children and the parent
    assert kept[:10] == [1] * 10  # s998, read by the end step's message
    print(f"held at most {(max(held) - base) / 1024 / 1024:.2f} MiB at the end of a run")
    assert max(held) - base < 4 * 1024 * 1024, f"held {(max(held) - base) / 1024 / 1024:.1f} MiB at the end of a run"
