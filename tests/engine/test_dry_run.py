"""Dry-run (SPEC 4): checks run for real, actions are planned, approvals would ask, bundle marked dry-run."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import Workspace

PLAN = """
runbook: plan
title: Dry-run planning
version: 1
steps:
  - id: probe
    check: shell
    with: {argv: [sh, -c, "echo probed >> probes.log; echo fine"]}
    expect: "'fine' in result.stdout"
  - id: gate
    approve: {prompt: "Rewrite target for {{ run.operator }}?", approvers: [alice]}
  - id: rewrite
    action: file.write
    with: {path: target.txt, content: "new\\n"}
    rollback: restore
  - id: create
    action: file.write
    with: {path: fresh.txt, content: "hello\\n"}
    rollback: remove_fresh
  - id: command
    action: shell
    with: {argv: [sh, -c, "touch ran-for-real"]}
  - id: verify
    check: noop
    on_fail: rejected
  - id: done
    end: SUCCESS
  - id: rejected
    end: BUSINESS_REJECT
  - id: restore
    action: file.write
    with: {path: target.txt, content: "old\\n"}
  - id: remove_fresh
    action: file.remove
    with: {path: fresh.txt}
"""


def dry_run(ws: Workspace, *args: str, code: int) -> dict[str, Any]:
    """`runbook run plan --dry-run ARGS --output json` with the expected exit code."""
    ws.runbook("plan", PLAN)
    (ws.root / "target.txt").write_text("old\n")
    result = ws.cli("run", "plan", "--dry-run", "--output", "json", *args)
    assert result.code == code, result.text
    doc: dict[str, Any] = json.loads(result.out)
    return doc


def events(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    """The records of a run's event log."""
    return [json.loads(line) for line in (ws.root / "evidence" / run_id / "events.jsonl").read_text().splitlines()]


def test_checks_run_for_real_and_actions_are_planned_not_run(ws: Workspace) -> None:
    """The check ran (its side file exists); no action touched anything; each action has a plan."""
    doc = dry_run(ws, code=0)
    assert doc["mode"] == "dry-run" and doc["outcome"] == "SUCCESS"
    assert (ws.root / "probes.log").read_text() == "probed\n"
    assert doc["steps"]["probe"]["status"] == "ok"
    assert (ws.root / "target.txt").read_text() == "old\n"
    assert not (ws.root / "fresh.txt").exists()
    assert not (ws.root / "ran-for-real").exists()
    for step in ("rewrite", "create", "command"):
        assert doc["steps"][step]["status"] == "planned"


def test_the_plan_shows_the_file_and_its_diff(ws: Workspace) -> None:
    """file.write plans name the file and show a unified diff; shell plans show the argv."""
    doc = dry_run(ws, code=0)
    rewrite = doc["steps"]["rewrite"]["result"]["plan"]
    assert rewrite["path"].endswith("target.txt") and rewrite["exists"] is True
    assert "-old\n+new\n" in rewrite["diff"]
    assert rewrite["summary"].startswith("rewrite ")
    create = doc["steps"]["create"]["result"]["plan"]
    assert create["summary"].startswith("create ") and "+hello\n" in create["diff"]
    command = doc["steps"]["command"]["result"]["plan"]
    assert command["argv"] == ["sh", "-c", "touch ran-for-real"]


def test_the_plan_is_in_the_report(ws: Workspace) -> None:
    """report.md says what each action would do."""
    doc = dry_run(ws, code=0)
    report = (ws.root / "evidence" / doc["run_id"] / "report.md").read_text()
    assert "would: rewrite" in report and "would: create" in report


def test_approvals_are_recorded_as_would_ask(ws: Workspace) -> None:
    """A dry-run never pauses: the approval is recorded as "would ask" with its prompt and approvers."""
    doc = dry_run(ws, code=0)
    assert doc["steps"]["gate"]["status"] == "planned"
    [approval] = [e for e in events(ws, doc["run_id"]) if e["type"] == "approval"]
    assert approval["data"]["decision"] == "would ask"
    assert approval["data"]["prompt"] == "Rewrite target for tester?"
    assert approval["data"]["approvers"] == ["alice"]


def test_assume_fail_takes_the_failure_route(ws: Workspace) -> None:
    """`--assume verify=fail`: the step is treated as failed and its on_fail route is taken."""
    doc = dry_run(ws, "--assume", "verify=fail", code=10)
    assert doc["outcome"] == "BUSINESS_REJECT"
    assert doc["steps"]["verify"]["status"] == "failed"
    assert "done" not in doc["steps"]


def test_assume_fail_of_an_unhandled_action_plans_the_rollbacks(ws: Workspace) -> None:
    """An assumed failure with no on_fail: rollbacks of planned actions are planned, newest first."""
    doc = dry_run(ws, "--assume", "command=fail", code=50)
    assert doc["outcome"] == "INTERNAL_ERROR"
    rollbacks = [e["step"] for e in events(ws, doc["run_id"]) if e["type"] == "rollback"]
    assert rollbacks == ["remove_fresh", "restore"]
    assert (ws.root / "target.txt").read_text() == "old\n"
    planned = [e for e in events(ws, doc["run_id"]) if e["type"] == "step_finished" and e["data"].get("rollback")]
    assert {e["data"]["status"] for e in planned} == {"planned"}


def test_assume_ok_passes_a_check_that_would_fail(ws: Workspace) -> None:
    """`--assume STEP=ok` on a failing check: it counts as ok and is not run."""
    ws.runbook("strict", textwrap.dedent("""
        runbook: strict
        title: Strict
        version: 1
        steps:
          - id: gate
            check: shell
            with: {argv: [sh, -c, "touch gate-ran; exit 1"]}
    """))
    result = ws.cli("run", "strict", "--dry-run", "--assume", "gate=ok")
    assert result.code == 0, result.text
    assert not (ws.root / "gate-ran").exists()


def test_the_bundle_is_marked_dry_run_and_verifies(ws: Workspace) -> None:
    """manifest.json says `mode: dry-run`; the bundle verifies; the run is listed as dry-run."""
    doc = dry_run(ws, code=0)
    bundle = ws.root / "evidence" / doc["run_id"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["mode"] == "dry-run"
    assert manifest["outcome"] == "SUCCESS"
    started = events(ws, doc["run_id"])[0]
    assert started["type"] == "run_started" and started["data"]["mode"] == "dry-run"
    assert ws.cli("evidence", "verify", str(bundle)).code == 0
    runs = json.loads(ws.cli("runs", "--output", "json").out)
    assert [r["mode"] for r in runs] == ["dry-run"]
