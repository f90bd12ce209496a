"""Step kinds and common step fields (SPEC 2.1, 2.3, 3), each through `runbook run` in a workspace."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.conftest import Workspace

HEADER = "runbook: {name}\ntitle: Test {name}\nversion: 1\n"


def runbook(ws: Workspace, name: str, body: str) -> None:
    """Write runbooks/NAME.yaml with the usual header and BODY (dedented)."""
    import textwrap

    ws.runbook(name, HEADER.format(name=name) + textwrap.dedent(body).lstrip("\n"))


def run(ws: Workspace, *args: str, code: int | None = None) -> dict[str, Any]:
    """`runbook run ARGS --no-input --output json`: the JSON document (exit code under "exit")."""
    result = ws.cli("run", *args, "--no-input", "--output", "json")
    assert "Traceback" not in result.text
    doc = json.loads(result.out)
    doc["exit"] = result.code
    if code is not None:
        assert result.code == code, result.text
    return doc


def events(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    """Every record of a run's events.jsonl."""
    path = ws.root / "evidence" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def shell(script: str) -> str:
    """A `with:` mapping running `sh -c SCRIPT` (flow style, JSON-quoted)."""
    return "{argv: [sh, -c, " + json.dumps(script) + "]}"


# -- check, action, expect, when --------------------------------------------------


def test_expect_true_passes_and_result_is_readable_later(ws: Workspace) -> None:
    """A check whose `expect` holds is ok; later steps read `steps.ID.result`."""
    runbook(ws, "ok", f"""
        steps:
          - id: look
            check: shell
            with: {shell("echo READY")}
            expect: "'READY' in result.stdout and result.exit_code == 0"
          - id: write
            action: file.write
            with: {{path: seen.txt, content: "{{{{ steps.look.result.stdout | trim }}}}"}}
    """)
    doc = run(ws, "ok", code=0)
    assert doc["outcome"] == "SUCCESS"
    assert doc["steps"]["look"]["status"] == "ok"
    assert (ws.root / "seen.txt").read_text() == "READY"


def test_expect_false_fails_the_check_with_observed_values(ws: Workspace) -> None:
    """`expect` false: the check fails; the error shows the expression and what it read."""
    runbook(ws, "no", """
        steps:
          - id: look
            check: noop
            with: {value: 3}
            expect: result.value > 5
    """)
    doc = run(ws, "no", code=10)
    step = doc["steps"]["look"]
    assert step["status"] == "failed"
    assert "expect `result.value > 5` was false" in step["error"]
    assert "result.value=3" in step["error"]


def test_when_false_skips_the_step(ws: Workspace) -> None:
    """`when` false: status skipped, nothing run, routing continues."""
    runbook(ws, "skip", """
        params:
          go: {type: boolean, default: false}
        steps:
          - id: maybe
            when: params.go
            action: file.write
            with: {path: maybe.txt, content: x}
          - id: after
            check: noop
            with: {value: "{{ steps.maybe.status }}"}
    """)
    doc = run(ws, "skip", code=0)
    assert doc["steps"]["maybe"]["status"] == "skipped"
    assert doc["steps"]["after"]["result"]["value"] == "skipped"
    assert not (ws.root / "maybe.txt").exists()
    doc = run(ws, "skip", "--param", "go=true", code=0)
    assert doc["steps"]["after"]["result"]["value"] == "ok"
    assert (ws.root / "maybe.txt").exists()


# -- routing (SPEC 2.3) ----------------------------------------------------------


@pytest.mark.parametrize(("kind", "code", "outcome"), [
    ("check: shell", 10, "BUSINESS_REJECT"),
    ("action: shell", 50, "INTERNAL_ERROR"),
])
def test_unhandled_failure_defaults(ws: Workspace, kind: str, code: int, outcome: str) -> None:
    """No on_fail, fail or default_fail: a failed check ends BUSINESS_REJECT, a failed action INTERNAL_ERROR."""
    runbook(ws, "dflt", f"""
        steps:
          - id: broken
            {kind}
            with: {shell("exit 3")}
          - id: never
            action: file.write
            with: {{path: never.txt, content: x}}
    """)
    doc = run(ws, "dflt", code=code)
    assert doc["outcome"] == outcome
    assert "step 'broken' failed" in doc["message"]
    assert not (ws.root / "never.txt").exists()


def test_on_fail_routes_to_its_target(ws: Workspace) -> None:
    """A failed step with on_fail goes there; the run can still succeed."""
    runbook(ws, "onfail", f"""
        steps:
          - id: broken
            check: shell
            with: {shell("exit 1")}
            on_fail: recover
          - id: skipped_over
            action: file.write
            with: {{path: wrong.txt, content: x}}
          - id: done
            end: SUCCESS
          - id: recover
            action: file.write
            with: {{path: recovered.txt, content: x}}
            goto: done
    """)
    doc = run(ws, "onfail", code=0)
    assert doc["steps"]["broken"]["status"] == "failed"
    assert (ws.root / "recovered.txt").exists()
    assert not (ws.root / "wrong.txt").exists()


def test_goto_jumps_over_steps(ws: Workspace) -> None:
    """`goto` names the next step explicitly."""
    runbook(ws, "jump", """
        steps:
          - id: start
            check: noop
            goto: last
            on_fail: middle
          - id: middle
            action: file.write
            with: {path: middle.txt, content: x}
          - id: last
            check: noop
    """)
    doc = run(ws, "jump", code=0)
    assert "middle" not in doc["steps"]
    assert not (ws.root / "middle.txt").exists()


def test_step_fail_outcome_wins_over_default_fail(ws: Workspace) -> None:
    """`fail: OUTCOME` on the step beats the runbook's default_fail."""
    runbook(ws, "failout", f"""
        default_fail: BUSINESS_SKIP
        steps:
          - id: broken
            check: shell
            with: {shell("exit 1")}
            fail: ANOMALY_HALT
    """)
    assert run(ws, "failout", code=60)["outcome"] == "ANOMALY_HALT"


def test_default_fail_applies_to_unhandled_failures(ws: Workspace) -> None:
    """`default_fail` is the outcome of a failure with no on_fail and no fail."""
    runbook(ws, "dfail", f"""
        default_fail: ANOMALY_HALT
        steps:
          - id: broken
            action: shell
            with: {shell("exit 1")}
    """)
    assert run(ws, "dfail", code=60)["outcome"] == "ANOMALY_HALT"


def test_falling_off_the_last_step_is_success(ws: Workspace) -> None:
    """No end step: the run ends SUCCESS after the last step."""
    runbook(ws, "fall", "steps:\n  - id: only\n    check: noop\n")
    assert run(ws, "fall", code=0)["outcome"] == "SUCCESS"


def test_end_with_a_message_template(ws: Workspace) -> None:
    """`end: OUTCOME` stops the run with that outcome and its rendered message."""
    runbook(ws, "ending", """
        steps:
          - id: look
            check: noop
            with: {value: 42}
          - id: stop
            end: ANOMALY_HALT
            message: "halted: value was {{ steps.look.result.value }}"
    """)
    doc = run(ws, "ending", code=60)
    assert doc["message"] == "halted: value was 42"


# -- timeout and retry -----------------------------------------------------------


def test_timeout_fails_a_slow_step_quickly(ws: Workspace) -> None:
    """`timeout: 500ms` on a 10-minute command: the step fails (the CLI's own timeout would end the test first)."""
    runbook(ws, "slow", """
        steps:
          - id: nap
            check: shell
            with: {argv: [sleep, "600"]}
            timeout: 500ms
    """)
    doc = run(ws, "slow", code=10)
    assert "timed out" in doc["steps"]["nap"]["error"]


COUNTER = 'n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo try $n; [ "$n" -ge 3 ]'


def test_retry_with_backoff_until_success(ws: Workspace) -> None:
    """A command that succeeds on the 3rd try: ok after 3 attempts, waits 100 ms then 300 ms."""
    runbook(ws, "again", f"""
        steps:
          - id: flaky
            action: shell
            with: {shell(COUNTER)}
            retry: {{attempts: 5, delay: 100ms, backoff: 3.0}}
    """)
    doc = run(ws, "again", code=0)
    step = doc["steps"]["flaky"]
    assert step["status"] == "ok"
    assert step["attempts"] == 3
    assert step["duration_s"] >= 0.4
    assert (ws.root / "count").read_text().strip() == "3"
    retried = [e for e in events(ws, doc["run_id"]) if e["type"] == "step_finished" and e["data"].get("retrying")]
    assert [e["data"]["attempt"] for e in retried] == [1, 2]


def test_retry_gives_up_after_the_last_attempt(ws: Workspace) -> None:
    """Every attempt fails: the step fails with attempts = retry.attempts."""
    runbook(ws, "never", f"""
        steps:
          - id: flaky
            check: shell
            with: {shell("echo no; exit 1")}
            retry: {{attempts: 2, delay: 10ms}}
    """)
    doc = run(ws, "never", code=10)
    assert doc["steps"]["flaky"]["attempts"] == 2


# -- for_each --------------------------------------------------------------------


def test_for_each_runs_once_per_item_and_result_is_a_list(ws: Workspace) -> None:
    """`for_each`: `item` is bound per run; `result` is the list of per-item results."""
    runbook(ws, "loop", """
        params:
          names: {type: array, default: [a, b, c]}
        steps:
          - id: each
            action: file.write
            for_each: params.names
            with: {path: "out/{{ item }}.txt", content: "{{ item | upper }}"}
          - id: count
            check: noop
            with: {value: "{{ steps.each.result | length }}"}
            expect: result.value == 3
    """)
    doc = run(ws, "loop", code=0)
    result = doc["steps"]["each"]["result"]
    assert isinstance(result, list) and len(result) == 3
    assert [Path(r["path"]).name for r in result] == ["a.txt", "b.txt", "c.txt"]
    assert (ws.root / "out" / "b.txt").read_text() == "B"


def test_for_each_stops_at_the_first_failing_item(ws: Workspace) -> None:
    """A failing item fails the step; later items are not run."""
    runbook(ws, "loopfail", f"""
        steps:
          - id: each
            check: shell
            for_each: "[1, 2, 3]"
            with: {shell("echo {{ item }} >> seen; [ {{ item }} -ne 2 ]")}
    """)
    doc = run(ws, "loopfail", code=10)
    assert doc["steps"]["each"]["error"].startswith("item 1:")
    assert (ws.root / "seen").read_text().split() == ["1", "2"]


# -- rollback --------------------------------------------------------------------


def rollback_runbook(ws: Workspace, undo_a2: str = "echo undo_a2 >> log") -> None:
    """Two actions with rollbacks, then a failing check."""
    runbook(ws, "undo", f"""
        steps:
          - id: a1
            action: shell
            with: {shell("echo a1 >> log")}
            rollback: undo_a1
          - id: a2
            action: shell
            with: {shell("echo a2 >> log")}
            rollback: undo_a2
          - id: boom
            check: shell
            with: {shell("exit 1")}
          - id: done
            end: SUCCESS
          - id: undo_a1
            action: shell
            with: {shell("echo undo_a1 >> log")}
          - id: undo_a2
            action: shell
            with: {shell(undo_a2)}
    """)


def test_rollbacks_run_in_reverse_order_on_unhandled_failure(ws: Workspace) -> None:
    """Unhandled failure: the rollbacks of completed actions run newest first, then the run ends."""
    rollback_runbook(ws)
    doc = run(ws, "undo", code=10)
    assert (ws.root / "log").read_text().split() == ["a1", "a2", "undo_a2", "undo_a1"]
    rollbacks = [e["step"] for e in events(ws, doc["run_id"]) if e["type"] == "rollback"]
    assert rollbacks == ["undo_a2", "undo_a1"]


def test_a_failed_rollback_is_recorded_and_the_rest_still_run(ws: Workspace) -> None:
    """A rollback that fails is recorded as failed; the remaining rollbacks still run."""
    rollback_runbook(ws, undo_a2="echo undo_a2 >> log; exit 7")
    doc = run(ws, "undo", code=10)
    assert (ws.root / "log").read_text().split() == ["a1", "a2", "undo_a2", "undo_a1"]
    finished = {e["step"]: e["data"] for e in events(ws, doc["run_id"])
                if e["type"] == "step_finished" and e["data"].get("rollback")}
    assert finished["undo_a2"]["status"] == "failed"
    assert finished["undo_a1"]["status"] == "ok"


def test_no_rollback_when_the_failure_is_handled(ws: Workspace) -> None:
    """A failure routed by on_fail is handled: no rollback runs."""
    runbook(ws, "handled", f"""
        steps:
          - id: a1
            action: shell
            with: {shell("echo a1 >> log")}
            rollback: undo_a1
          - id: boom
            check: shell
            with: {shell("exit 1")}
            on_fail: done
          - id: done
            end: BUSINESS_REJECT
          - id: undo_a1
            action: shell
            with: {shell("echo undo_a1 >> log")}
    """)
    run(ws, "handled", code=10)
    assert (ws.root / "log").read_text().split() == ["a1"]


# -- decide ----------------------------------------------------------------------


DECIDE = """
    params:
      level: {{type: integer, default: 1}}
    steps:
      - id: route
        decide:
          - if: params.level > 5
            goto: high
          - if: params.level > 2
            goto: mid
          {else_branch}
      - id: high
        end: ANOMALY_HALT
      - id: mid
        end: BUSINESS_SKIP
      {low}
"""


@pytest.mark.parametrize(("level", "code"), [("9", 60), ("3", 11), ("1", 0)])
def test_decide_takes_the_first_true_branch_or_else(ws: Workspace, level: str, code: int) -> None:
    """First true `if` wins; otherwise `else`."""
    runbook(ws, "choose", DECIDE.format(else_branch="- else: low", low="- {id: low, end: SUCCESS}"))
    run(ws, "choose", "--param", f"level={level}", code=code)


def test_decide_with_no_true_branch_and_no_else_fails(ws: Workspace) -> None:
    """No branch true and no else: the decide step fails (BUSINESS_REJECT)."""
    runbook(ws, "choose", DECIDE.format(else_branch="", low=""))
    doc = run(ws, "choose", code=10)
    assert doc["steps"]["route"]["status"] == "failed"
    assert "no decide branch was true" in doc["steps"]["route"]["error"]


# -- wait ------------------------------------------------------------------------


WAIT = """
    steps:
      - id: flag
        wait:
          check: file.exists
          with: {{path: flag}}
          until: result.exists
          every: 50ms
          timeout: {timeout}
"""


def test_wait_polls_until_the_condition_holds(ws: Workspace) -> None:
    """The file appears while the run is already waiting (after its first poll found nothing): the wait ends
    ok after several polls. A poll that found no file leaves a line in polls.txt: the test waits for one."""
    runbook(ws, "waiter", """
        steps:
          - id: flag
            wait:
              check: shell
              with: {argv: [sh, -c, "if test -e flag; then exit 0; fi; echo miss >> polls.txt; exit 1"], ok_exit_codes: [0, 1]}
              until: result.exit_code == 0
              every: 50ms
              timeout: 20s
        """)
    proc = ws.popen("run", "waiter", "--no-input", "--output", "json")
    try:
        deadline = time.monotonic() + 15
        while not (ws.root / "polls.txt").exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the wait never polled"
            time.sleep(0.02)
        (ws.root / "flag").touch()
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    step = json.loads(out)["steps"]["flag"]
    assert step["status"] == "ok"
    assert step["result"]["polls"] > 1


def test_wait_timeout_is_a_failure(ws: Workspace) -> None:
    """The condition never holds: the wait fails after its timeout (INTERNAL_ERROR)."""
    runbook(ws, "waiter", WAIT.format(timeout="300ms"))
    doc = run(ws, "waiter", code=50)
    assert "still false" in doc["steps"]["flag"]["error"]


# -- call ------------------------------------------------------------------------


def child_runbook(ws: Workspace) -> None:
    """A child runbook that writes a file named by its param, or rejects."""
    runbook(ws, "child", """
        params:
          who: {type: string}
          reject: {type: boolean, default: false}
        steps:
          - id: gate
            decide:
              - if: params.reject
                goto: no
              - else: write
          - id: write
            action: file.write
            with: {path: "child-{{ params.who }}.txt", content: hi}
          - id: done
            end: SUCCESS
          - id: no
            end: BUSINESS_REJECT
            message: rejected for {{ params.who }}
    """)


def test_call_runs_another_runbook_with_its_own_evidence(ws: Workspace) -> None:
    """`call`: the child runs with `with:` as params; its outcome is the step's result; own bundle."""
    child_runbook(ws)
    runbook(ws, "parent", """
        steps:
          - id: sub
            call: child
            with: {who: bob}
          - id: check_child
            check: noop
            expect: steps.sub.result.outcome == 'SUCCESS'
    """)
    doc = run(ws, "parent", code=0)
    result = doc["steps"]["sub"]["result"]
    assert result["outcome"] == "SUCCESS" and result["run_id"] != doc["run_id"]
    assert (ws.root / "child-bob.txt").read_text() == "hi"
    bundles = {p.name for p in ws.evidence_dirs()}
    assert bundles == {doc["run_id"], result["run_id"]}
    assert ws.cli("evidence", "verify", result["run_id"]).code == 0


def test_a_failed_call_fails_the_step(ws: Workspace) -> None:
    """A child that ends BUSINESS_REJECT fails the call step (unhandled call failure: INTERNAL_ERROR)."""
    child_runbook(ws)
    runbook(ws, "parent", """
        steps:
          - id: sub
            call: child
            with: {who: eve, reject: true}
    """)
    doc = run(ws, "parent", code=50)
    step = doc["steps"]["sub"]
    assert step["status"] == "failed"
    assert step["result"]["outcome"] == "BUSINESS_REJECT"
    assert "rejected for eve" in step["error"]


# -- approve ---------------------------------------------------------------------


def approval_runbook(ws: Workspace, extra: str = "") -> None:
    """An approval gate before a file write."""
    runbook(ws, "gated", f"""
        params:
          size: {{type: integer, default: 5}}
        steps:
          - id: gate
            approve:
              prompt: "Trade {{{{ params.size }}}} lots?"
              {extra}
          - id: trade
            action: file.write
            with: {{path: traded.txt, content: x}}
    """)


def paused_run(ws: Workspace) -> str:
    """Start `gated` with --no-input; it pauses (exit 12) and the run id is returned."""
    doc = run(ws, "gated", code=12)
    assert doc["outcome"] == "PAUSED"
    assert doc["waiting_for"]["type"] == "approval" and doc["waiting_for"]["step"] == "gate"
    assert not (ws.root / "traded.txt").exists()
    return str(doc["run_id"])


def test_approval_pauses_then_approve_and_resume_continue(ws: Workspace) -> None:
    """--no-input: exit 12, status says what it waits for; approve + resume finish the run."""
    approval_runbook(ws)
    run_id = paused_run(ws)
    status = ws.cli("status", run_id)
    assert status.code == 0
    assert "paused" in status.out
    assert "approval of step 'gate': Trade 5 lots?" in status.out
    approved = ws.cli("approve", run_id, "gate", "--by", "alice", "--note", "checked")
    assert approved.code == 0, approved.text
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 0, resumed.text
    assert (ws.root / "traded.txt").exists()
    approval = [e for e in events(ws, run_id) if e["type"] == "approval"]
    assert approval[0]["data"]["by"] == "alice" and approval[0]["data"]["decision"] == "approved"
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_a_denied_approval_fails_the_step(ws: Workspace) -> None:
    """`approve --deny` then resume: the approval step fails (BUSINESS_REJECT), the action never runs."""
    approval_runbook(ws)
    run_id = paused_run(ws)
    assert ws.cli("approve", run_id, "gate", "--by", "alice", "--deny").code == 0
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 10, resumed.text
    assert not (ws.root / "traded.txt").exists()


def test_an_unlisted_approver_is_refused_and_recorded(ws: Workspace) -> None:
    """`approvers:` lists who may approve: anyone else is refused (non-zero) and that is evidence."""
    approval_runbook(ws, "approvers: [bob]")
    run_id = paused_run(ws)
    refused = ws.cli("approve", run_id, "gate", "--by", "alice")
    assert refused.code != 0
    assert "not an approver" in refused.err and "Traceback" not in refused.text
    assert [e["data"]["by"] for e in events(ws, run_id) if e["type"] == "approval_refused"] == ["alice"]
    assert ws.cli("evidence", "verify", run_id).code == 0
    assert ws.cli("approve", run_id, "gate", "--by", "bob").code == 0
    assert ws.cli("resume", run_id, "--no-input").code == 0


def test_four_eyes_refuses_the_operator(ws: Workspace) -> None:
    """`four_eyes: true`: the operator who started the run (RUNBOOK_OPERATOR=tester) may not approve."""
    approval_runbook(ws, "four_eyes: true")
    run_id = paused_run(ws)
    refused = ws.cli("approve", run_id, "gate", "--by", "tester")
    assert refused.code != 0
    assert "four-eyes" in refused.err
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
    assert ws.cli("resume", run_id, "--no-input").code == 0


# -- fields the schema accepts on every step kind ----------------------------------


def test_when_false_on_an_end_step_does_not_end_the_run(ws: Workspace) -> None:
    """An end step whose `when` is false is skipped (or the file is refused); it never ends the run."""
    runbook(ws, "endwhen", """
        steps:
          - id: look
            check: noop
            on_fail: last
          - id: stop_early
            when: "false"
            end: ANOMALY_HALT
          - id: last
            check: noop
    """)
    result = ws.cli("run", "endwhen", "--no-input")
    assert result.code in (0, 20), result.text


def test_for_each_on_a_call_step(ws: Workspace) -> None:
    """`for_each` is a common field: a call step runs its child once per item (or the file is refused)."""
    child_runbook(ws)
    runbook(ws, "parent", """
        steps:
          - id: many
            call: child
            for_each: "['a', 'b']"
            with: {who: "{{ item }}"}
    """)
    result = ws.cli("run", "parent", "--no-input")
    assert result.code in (0, 20), result.text
    if result.code == 0:
        assert (ws.root / "child-a.txt").exists() and (ws.root / "child-b.txt").exists()


DURATIONS = """
runbook: durations
title: Durations from params
version: 1
description: timeout and wait durations taken from params
source: tests
params:
  limit: {type: string, default: 300ms}
  every: {type: string, default: 50ms}
steps:
  - id: slow
    check: shell
    with: {argv: [sleep, "600"]}
    timeout: "{{ params.limit }}"
    on_fail: poll
  - id: poll
    wait:
      check: file.exists
      with: {path: never.txt}
      until: result.exists
      every: "{{ params.every }}"
      timeout: "{{ params.limit }}"
"""


def test_durations_can_come_from_params(ws: Workspace) -> None:
    """`timeout`, `wait.every` and `wait.timeout` may be templates; a bad value fails the step clearly."""
    ws.runbook("durations", DURATIONS)
    result = ws.cli("run", "durations", "--output", "json")  # the CLI timeout (60 s) fails the test if it did not apply
    assert result.code == 50, result.text
    steps = json.loads(result.out)["steps"]
    assert "timed out" in steps["slow"]["error"]
    assert steps["poll"]["result"]["polls"] >= 2
    bad = ws.cli("run", "durations", "--param", "limit=soon", "--output", "json")
    assert bad.code == 50 and "bad duration 'soon'" in json.loads(bad.out)["steps"]["slow"]["error"]
    typo = ws.runbook("typo", DURATIONS.replace("runbook: durations", "runbook: typo").replace("params.limit }}\"\n    on_fail", "params.limt }}\"\n    on_fail"))
    assert typo.exists()
    invalid = ws.cli("validate", "typo")
    assert invalid.code == 20 and "unknown param 'limt'" in invalid.err
