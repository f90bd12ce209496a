"""Operator mode (`--step`) and terminal approvals, driven through a real pseudo-terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import RUNBOOK, Workspace

STEPS = """
runbook: guided
title: Guided run
version: 1
description: three writes, one approval
source: tests
steps:
  - id: first
    action: file.write
    with: {path: first.txt, content: "1"}
  - id: second
    action: file.write
    with: {path: second.txt, content: "2"}
  - id: gate
    approve: {prompt: "Write the third file?"}
  - id: third
    action: file.write
    with: {path: third.txt, content: "3"}
"""


Answer = str | Callable[[], str | None]


def drive(ws: Workspace, args: list[str], answers: list[tuple[str, Answer]], timeout: float = 30,
          env: dict[str, str] | None = None, started: Callable[[subprocess.Popen[bytes]], None] | None = None,
          ) -> tuple[int, str]:
    """Run the CLI on a pty; whenever `prompt` text appears, type `answer`. Returns (exit code, screen).

    An answer may be a function: it is called when its text appears (to act on the world), and what it
    returns, if anything, is typed. `started` is given the process as soon as it runs.
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen([RUNBOOK, *args], cwd=ws.root, stdin=slave, stdout=slave, stderr=slave,
                            env={**ws.env(), "TERM": "dumb", "COLUMNS": "120", **(env or {})}, close_fds=True)
    if started:
        started(proc)
    os.close(slave)
    screen, pending, answered_upto = "", list(answers), 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 4096).decode(errors="replace")
            except OSError:
                break
            screen += chunk
            while pending and pending[0][0] in screen[answered_upto:]:
                answered_upto = screen.index(pending[0][0], answered_upto) + len(pending[0][0])
                answer = pending.pop(0)[1]
                typed = answer() if callable(answer) else answer
                if typed is not None:
                    os.write(master, (typed + "\n").encode())
        if proc.poll() is not None and not ready:
            break
    try:
        code = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:  # still waiting for something that never came: show the screen
        proc.kill()
        code = proc.wait()
    os.close(master)
    return code, screen


def test_step_mode_run_skip_and_terminal_approval(ws: Workspace) -> None:
    ws.runbook("guided", STEPS)
    code, screen = drive(ws, ["run", "guided", "--step"], [
        ("run / skip / abort / details", "details"),
        ("run / skip / abort / details", "run"),
        ("run / skip / abort / details", "skip"),
        ("approve / deny / pause?", "a"),
        ("note", "looks fine"),
        ("run / skip / abort / details", "run"),
    ])
    assert code == 0, screen
    assert (ws.root / "first.txt").exists() and not (ws.root / "second.txt").exists()
    assert (ws.root / "third.txt").read_text() == "3"
    assert "first.txt" in screen  # details showed the rendered params
    bundle = ws.evidence_dirs()[-1]
    events = [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]
    choices = [(e["step"], e["data"]["choice"]) for e in events if e["type"] == "operator_choice"]
    assert choices == [("first", "run"), ("second", "skip"), ("third", "run")]  # an approval is never a step choice
    approval = next(e["data"] for e in events if e["type"] == "approval")
    assert approval["decision"] == "approved" and approval["via"] == "terminal" and approval["note"] == "looks fine"


def test_abort_ends_the_run_and_runs_rollbacks(ws: Workspace) -> None:
    ws.runbook("guided", STEPS)
    code, screen = drive(ws, ["run", "guided", "--step"], [
        ("run / skip / abort / details", "run"),
        ("run / skip / abort / details", "abort"),
    ])
    assert code == 10, screen
    assert "aborted by the operator" in screen
    assert not (ws.root / "second.txt").exists()


def test_closing_the_terminal_at_an_approval_pauses_the_run(ws: Workspace) -> None:
    """End of input (Ctrl-D) at the approval prompt approves nothing: the run pauses, resumable."""
    ws.runbook("guided", STEPS)
    code, screen = drive(ws, ["run", "guided"], [("approve / deny / pause?", "\x04")])
    assert code == 12, screen
    assert "Traceback" not in screen and not (ws.root / "third.txt").exists()
    bundle = ws.evidence_dirs()[-1]
    events = [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["type"] == "approval"]
    assert [e["step"] for e in events if e["type"] == "approval_requested"] == ["gate"]


@pytest.mark.parametrize("prompt", ["approver name: ", "approve / deny / pause?", "note (optional): "])
def test_ctrl_c_at_an_approval_prompt_pauses_the_run(ws: Workspace, prompt: str) -> None:
    """Ctrl-C (SIGINT, as the terminal sends it) at any of the approval's prompts stops the run at once, even
    when it lands as the prompt appears (engine/prompt.py): nothing approved, exit 12, and the next step
    shown (resume, which asks again) leads to completion."""
    ws.runbook("guided", STEPS.replace('approve: {prompt: "Write the third file?"}',
                                       'approve: {prompt: "Write the third file?", approvers: [alice]}'))
    procs: list[subprocess.Popen[bytes]] = []

    def interrupt() -> None:
        procs[0].send_signal(signal.SIGINT)

    answers: list[tuple[str, Answer]] = {
        "approver name: ": [("approver name: ", interrupt)],
        "approve / deny / pause?": [("approver name: ", "alice"), ("approve / deny / pause?", interrupt)],
        "note (optional): ": [("approver name: ", "alice"), ("approve / deny / pause?", "a"),
                              ("note (optional): ", interrupt)],
    }[prompt]
    code, screen = drive(ws, ["run", "guided"], answers, started=procs.append)
    assert code == 12, screen
    assert "Traceback" not in screen and not (ws.root / "third.txt").exists()
    bundle = ws.evidence_dirs()[-1]
    events = [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]
    assert not [e for e in events if e["type"] == "approval"], screen
    run_id = bundle.name
    assert f"runbook resume {run_id}   (asks for the approval of gate again" in screen, screen
    asked = ws.cli("resume", run_id, "--no-input")  # stopped before it was asked: now it is, and pauses
    assert asked.code == 12, asked.text
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 0, resumed.text
    assert (ws.root / "third.txt").read_text() == "3"


FOUR_EYES = STEPS.replace('approve: {prompt: "Write the third file?"}',
                          'approve: {prompt: "Write the third file?", four_eyes: true}')


def test_step_mode_offers_no_way_past_a_four_eyes_gate(ws: Workspace) -> None:
    """At an approval step, operator mode asks approve / deny / pause, never run / skip: the gate cannot be skipped."""
    ws.runbook("guided", FOUR_EYES)
    code, screen = drive(ws, ["run", "guided", "--step"], [
        ("run / skip / abort / details", "run"),
        ("run / skip / abort / details", "run"),
        ("approver name", "tester"),
    ])
    assert code == 12, screen
    assert not (ws.root / "third.txt").exists()
    assert "four-eyes" in screen and "cannot approve" in screen
    events = [json.loads(line) for line in (ws.evidence_dirs()[-1] / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "operator_choice"] == ["first", "second"]
    assert [e["data"]["by"] for e in events if e["type"] == "approval_refused"] == ["tester"]
    assert not [e for e in events if e["type"] == "approval"]


def test_a_refused_approver_at_the_terminal_pauses_for_runbook_approve(ws: Workspace) -> None:
    """The operator's own name is not offered; a refusal comes at once and pauses (12) instead of ending the run."""
    ws.runbook("guided", FOUR_EYES)
    code, screen = drive(ws, ["run", "guided"], [("approver name", "tester")])
    assert code == 12, screen
    assert "[tester]" not in screen and "approve / deny / pause" not in screen
    run_id = ws.evidence_dirs()[-1].name
    approved = ws.cli("approve", run_id, "gate", "--by", "bob")
    assert approved.code == 0, approved.text
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 0, resumed.text
    assert (ws.root / "third.txt").read_text() == "3"


def test_pause_is_the_default_answer_at_an_approval(ws: Workspace) -> None:
    ws.runbook("guided", STEPS)
    code, screen = drive(ws, ["run", "guided"], [("approve / deny / pause?", "")])
    assert code == 12, screen
    assert not (ws.root / "third.txt").exists()
