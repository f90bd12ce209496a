"""Plan-bound approvals (SPEC 8): `approve: {binds: [STEP]}` shows and records the plans it approves;
a bound step whose plan changed since does not run: the run pauses for a new approval."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from .helpers import events, of_type, only_run_id, status_json

if TYPE_CHECKING:
    from tests.conftest import Workspace

BOUND = """
    runbook: bound
    title: Bound
    version: 1
    params:
      level: {type: string, default: "7"}
    steps:
      - id: gate
        approve: {prompt: 'Set the level?', binds: [write]}
      - id: write
        action: file.write
        with: {path: level.txt, content: "level={{ params.level }}\\n"}
    """


def paused(ws: Workspace) -> str:
    ws.write("level.txt", "level=1\n")
    ws.runbook("bound", BOUND)
    started = ws.cli("run", "bound", "--no-input")
    assert started.code == 12, started.text
    return only_run_id(ws)


def test_approval_shows_and_records_the_bound_plan_and_an_unchanged_plan_runs(ws: Workspace) -> None:
    run_id = paused(ws)
    waiting = status_json(ws, run_id)["waiting_for"]
    plan = waiting["plans"]["write"]
    assert "level.txt" in plan["summary"] and "+level=7" in plan["diff"]
    requested = of_type(events(ws, run_id), "approval_requested", "gate")[-1]["data"]
    assert requested["plans"] == waiting["plans"]
    canonical = json.dumps(requested["plans"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert requested["plan_sha256"] == hashlib.sha256(canonical.encode()).hexdigest()
    shown = ws.cli("status", run_id).out
    assert "plan of write" in shown and "+level=7" in shown
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
    approval = of_type(events(ws, run_id), "approval", "gate")[-1]["data"]
    assert approval["plan_sha256"] == requested["plan_sha256"]
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 0, done.text
    assert (ws.root / "level.txt").read_text() == "level=7\n"
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_a_changed_plan_pauses_for_a_new_approval(ws: Workspace) -> None:
    run_id = paused(ws)
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
    (ws.root / "level.txt").write_text("level=3\n")  # someone changed the file the plan diffs against
    again = ws.cli("resume", run_id, "--no-input")
    assert again.code == 12, again.text
    assert (ws.root / "level.txt").read_text() == "level=3\n"
    waiting = status_json(ws, run_id)["waiting_for"]
    assert waiting["step"] == "gate" and waiting["changed"]["step"] == "write"
    assert any(line.startswith("-") and "level=1" in line for line in waiting["changed"]["diff"])
    assert any(line.startswith("+") and "level=3" in line for line in waiting["changed"]["diff"])
    shown = ws.cli("status", run_id).out
    assert "changed" in shown and "level=3" in shown
    assert not of_type(events(ws, run_id), "step_started", "write")
    # still not approved: resuming pauses again, nothing written
    assert ws.cli("resume", run_id, "--no-input").code == 12
    assert ws.cli("approve", run_id, "gate", "--by", "bob", "--note", "seen the new diff").code == 0
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 0, done.text
    assert (ws.root / "level.txt").read_text() == "level=7\n"
    approvals = of_type(events(ws, run_id), "approval", "gate")
    assert [a["data"]["by"] for a in approvals] == ["alice", "bob"]
    assert approvals[-1]["data"]["rebind"] is True
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_a_denied_new_plan_fails_the_bound_step(ws: Workspace) -> None:
    run_id = paused(ws)
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
    (ws.root / "level.txt").write_text("level=3\n")
    assert ws.cli("resume", run_id, "--no-input").code == 12
    assert ws.cli("approve", run_id, "gate", "--by", "bob", "--deny").code == 0
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 50, done.text
    assert (ws.root / "level.txt").read_text() == "level=3\n"


def test_signed_approval_covers_the_plan_hash(ws: Workspace) -> None:
    assert ws.cli("keys", "generate", "alice", "--dir", "keys").code == 0
    ws.write("runbook.yaml", """
        approvals:
          require_signature: true
          keys: {alice: keys/alice.pub}
        """)
    run_id = paused(ws)
    assert ws.cli("approve", run_id, "gate", "--by", "alice", "--key", "keys/alice.key").code == 0
    (ws.root / "level.txt").write_text("level=3\n")
    assert ws.cli("resume", run_id, "--no-input").code == 12
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 2
    assert ws.cli("approve", run_id, "gate", "--by", "alice", "--key", "keys/alice.key").code == 0
    assert ws.cli("resume", run_id, "--no-input").code == 0
    signed = of_type(events(ws, run_id), "approval", "gate")
    assert len({a["data"]["plan_sha256"] for a in signed}) == 2 and all(a["data"]["signature"] for a in signed)
    # the reports say who signed and which plan each approval saw
    bundle = ws.root / "evidence" / run_id
    key = signed[-1]["data"]["key_id"]
    for report in ("report.md", "report.html"):
        text = (bundle / report).read_text(encoding="utf-8")
        for approval in signed:
            assert f"signed with key {key}, bound to plan sha256 {approval['data']['plan_sha256']}" in text, report


def test_binds_must_name_actions(ws: Workspace) -> None:
    ws.runbook("bad", """
        runbook: bad
        title: Bad
        version: 1
        steps:
          - id: gate
            approve: {prompt: 'go?', binds: [look, nowhere]}
          - id: look
            check: noop
        """)
    result = ws.cli("validate", "bad")
    assert result.code == 20, result.text
    assert "'look' is a check step, not an action" in result.text
    assert "'nowhere' is not a step id" in result.text
    assert "bad.yaml:6" in result.text


def test_terminal_approval_shows_the_plan_and_a_resume_accepts_it(ws: Workspace) -> None:
    from tests.engine.test_operator_mode import drive

    ws.write("level.txt", "level=1\n")
    ws.runbook("bound", BOUND.replace("approve: {prompt: 'Set the level?', binds: [write]}",
                                      "approve: {prompt: 'Set the level?', binds: [write]}\n      - id: hold\n"
                                      "        approve: {prompt: 'Hold on?'}"))
    code, screen = drive(ws, ["run", "bound"], [("approve / deny / pause?", "a"), ("note", "ok"),
                                                ("approve / deny / pause?", "p")])
    assert code == 12, screen
    assert "plan of write" in screen and "level.txt" in screen
    run_id = only_run_id(ws)
    approval = of_type(events(ws, run_id), "approval", "gate")[-1]["data"]
    assert approval["via"] == "terminal" and approval["plans"]["write"]["summary"].startswith("rewrite")
    assert ws.cli("approve", run_id, "hold", "--by", "bob").code == 0
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 0, done.text
    assert (ws.root / "level.txt").read_text() == "level=7\n"
