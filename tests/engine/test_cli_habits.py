"""What the operator reads and types (issue 13, items 4-9): next commands, failure wording, nested
sub-runbooks, everyday CLI habits, the editor schema and the reference docs."""

from __future__ import annotations

import json
import re
import signal
import time

from tests.conftest import Workspace
from tests.engine.test_operator_mode import STEPS, drive

CHILD = """
runbook: child
title: Child
version: 1
params:
  t: {type: string, default: 300ms}
steps:
  - id: a1
    action: file.write
    with: {path: a1.txt, content: hi}
    rollback: undo_a1
  - id: flag
    wait:
      check: file.exists
      with: {path: flag}
      until: result.exists
      every: 50ms
      timeout: "{{ params.t }}"
  - id: done
    end: SUCCESS
  - id: undo_a1
    action: file.write
    with: {path: a1.txt, content: undone}
"""

PARENT = """
runbook: parent
title: Parent
version: 1
steps:
  - id: sub
    call: child
  - id: after
    check: noop
"""

GATED = """
runbook: gated
title: Gated
version: 1
steps:
  - id: gate
    approve: {prompt: "Go?"}
  - id: trade
    action: file.write
    with: {path: traded.txt, content: x}
"""


def run_id_of(text: str) -> str:
    found = re.search(r"run (\d{8}T\d{6}Z-[a-z0-9-]+-[0-9a-f]{6})", text)
    assert found, text
    return found.group(1)


# -- 6: paused results name the next command ------------------------------------------


def test_paused_run_names_the_commands_that_continue_it(ws: Workspace) -> None:
    ws.runbook("gated", GATED)
    result = ws.cli("run", "gated", "--no-input")
    assert result.code == 12, result.text
    run_id = run_id_of(result.err)
    assert f"next: runbook approve {run_id} gate --by NAME" in result.err
    assert f"runbook resume {run_id}" in result.err
    assert f"runbook cancel {run_id} --by NAME --reason TEXT" in result.err
    assert "\x1b[" not in result.err  # not a terminal: no escape codes


def test_ctrl_d_at_an_approval_prints_approve_and_resume(ws: Workspace) -> None:
    ws.runbook("guided", STEPS)
    code, screen = drive(ws, ["run", "guided"], [("approve / deny / pause?", "\x04")])
    assert code == 12, screen
    run_id = run_id_of(screen)
    assert f"runbook approve {run_id} gate --by NAME" in screen
    assert f"runbook resume {run_id}" in screen


def test_an_interrupted_run_names_resume(ws: Workspace) -> None:
    """SIGTERM (or Ctrl-C) while a step runs: the run pauses and says how to continue it."""
    ws.runbook("child", CHILD)
    proc = ws.popen("run", "child", "--no-input", "--param", "t=30s")
    try:
        deadline = time.monotonic() + 15
        while not any('"step":"flag"' in p.read_text() for p in (ws.root / "evidence").glob("*/events.jsonl")):
            assert time.monotonic() < deadline and proc.poll() is None, "the wait step never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 12, err
    run_id = run_id_of(err)
    assert f"next: runbook resume {run_id}" in err
    status = ws.cli("status", run_id)
    assert "interrupted by SIGTERM" in status.out and "{" not in status.out, status.out


# -- 4: failure wording ------------------------------------------------------------------


def test_a_failed_wait_says_what_why_which_rollbacks_and_what_next(ws: Workspace) -> None:
    ws.runbook("child", CHILD)
    result = ws.cli("run", "child", "--no-input")
    assert result.code == 50, result.text  # the SPEC's outcome and exit code stay
    err = result.err
    assert "INTERNAL_ERROR (exit 50)" in err
    assert "internal error (a bug)" not in err.lower()
    assert "timed out" in err and "still false after" in err and "polls" in err
    assert "rollbacks: undo_a1 (undoes a1) ok" in err
    assert "state: every rollback ran ok" in err
    run_id = run_id_of(err)
    assert f"next: runbook evidence report {run_id}" in err
    assert err.count("still false after") == 1, err


def test_a_failed_rollback_says_the_system_may_be_partly_changed(ws: Workspace) -> None:
    ws.runbook("child", CHILD.replace("with: {path: a1.txt, content: undone}",
                                      "with: {path: a1.txt/nope, content: undone}"))
    result = ws.cli("run", "child", "--no-input")
    assert result.code == 50, result.text
    assert "rollbacks: undo_a1 (undoes a1) FAIL" in result.err
    assert "state: rollback undo_a1 failed: the system may be partly changed" in result.err


# -- 5: sub-runbooks nested ---------------------------------------------------------------


def test_a_sub_runbook_is_indented_under_its_call_and_its_failure_told_once(ws: Workspace) -> None:
    ws.runbook("child", CHILD)
    ws.runbook("parent", PARENT)
    result = ws.cli("run", "parent", "--no-input")
    assert result.code == 50, result.text
    lines = result.err.splitlines()
    assert "[ run] sub (call)" in lines
    assert "  [ run] a1 (action)" in lines
    assert any(line.startswith("  [FAIL] flag (wait)") for line in lines)
    assert any(line.startswith("  child: INTERNAL_ERROR (exit 50) run ") for line in lines)
    assert any(line.startswith("[FAIL] sub (call)") for line in lines)
    assert any(line.startswith("parent: INTERNAL_ERROR (exit 50) run ") for line in lines)
    assert result.err.count("still false after") == 1, result.err
    assert result.err.count("recap:") == 1  # only the parent's full summary


def test_json_output_is_unchanged_by_the_wording(ws: Workspace) -> None:
    ws.runbook("child", CHILD)
    ws.runbook("parent", PARENT)
    result = ws.cli("run", "parent", "--no-input", "--output", "json")
    assert result.code == 50
    doc = json.loads(result.out)
    assert doc["outcome"] == "INTERNAL_ERROR" and "still false after" in doc["message"]
    assert result.err == ""
