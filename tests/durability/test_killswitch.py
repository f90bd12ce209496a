"""Kill switch (SPEC 4 Kill switch): once the file exists, no further non-safe action runs; ANOMALY_HALT."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .helpers import events, finish, of_type, only_run_id, run_record, wait_for

if TYPE_CHECKING:
    from tests.conftest import Workspace


def marks(ws: Workspace) -> list[str]:
    path = ws.root / "marks.txt"
    return path.read_text().split() if path.exists() else []


def halt_runbook(ws: Workspace, first: str) -> None:
    ws.runbook("halt", f"""
        runbook: halt
        title: Halt
        version: 1
        steps:
          - id: first
        {first}
          - id: look
            check: shell
            with: {{argv: [sh, -c, "echo look >> marks.txt"]}}
          - id: risk_off
            action: shell
            safe_in_halt: true
            with: {{argv: [sh, -c, "echo risk_off >> marks.txt"]}}
          - id: trade
            action: shell
            with: {{argv: [sh, -c, "echo trade >> marks.txt"]}}
          - id: after
            action: shell
            with: {{argv: [sh, -c, "echo after >> marks.txt"]}}
        """)


def assert_halted_before_trade(ws: Workspace, run_id: str, code: int, text: str) -> None:
    assert code == 60, text
    assert "trade" not in marks(ws) and "after" not in marks(ws)
    assert "risk_off" in marks(ws)  # safe_in_halt actions still run (risk-off)
    evs = events(ws, run_id)
    assert len(of_type(evs, "kill_switch")) == 1
    assert of_type(evs, "step_started", "trade") == []
    trade = [e["data"] for e in of_type(evs, "step_finished", "trade")]
    assert trade and trade[-1]["status"] == "failed" and "kill switch" in trade[-1]["error"]
    assert run_record(ws, run_id)["outcome"] == "ANOMALY_HALT"
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_kill_switch_created_mid_run_by_someone_else(ws: Workspace) -> None:
    halt_runbook(ws, """    action: shell
            with: {argv: [sh, -c, "echo first >> marks.txt; while [ ! -e KILL_SWITCH ]; do sleep 0.01; done"]}""")
    proc = ws.popen("run", "halt", "--no-input")
    wait_for(lambda: "first" in marks(ws), what="the first step")
    (ws.root / "KILL_SWITCH").write_text("halt: desk lead, runaway fills\n")
    code, text = finish(proc)
    run_id = only_run_id(ws)
    assert marks(ws)[:2] == ["first", "look"]
    assert_halted_before_trade(ws, run_id, code, text)
    content = of_type(events(ws, run_id), "kill_switch")[0]["data"]["content"]
    assert "runaway fills" in content


def test_kill_switch_engaged_by_a_step_of_the_run(ws: Workspace) -> None:
    halt_runbook(ws, """    action: killswitch.engage
            with: {reason: "reconcile mismatch"}""")
    result = ws.cli("run", "halt", "--no-input")
    assert (ws.root / "KILL_SWITCH").exists()
    assert_halted_before_trade(ws, only_run_id(ws), result.code, result.text)


def test_kill_switch_engaged_while_paused_stops_the_resumed_run(ws: Workspace) -> None:
    halt_runbook(ws, """    approve: {prompt: "go?"}""")
    assert ws.cli("run", "halt", "--no-input").code == 12
    run_id = only_run_id(ws)
    assert ws.cli("approve", run_id, "first", "--by", "alice").code == 0
    (ws.root / "KILL_SWITCH").write_text("halt\n")
    resumed = ws.cli("resume", run_id, "--no-input")
    assert_halted_before_trade(ws, run_id, resumed.code, resumed.text)
