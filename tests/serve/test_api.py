"""Runs and approvals through the API, schedules, and the `triggers` commands."""

from __future__ import annotations

import json

from tests.serve.conftest import SAMPLES, Project, alert, wait_for

RULES = """
- name: gate
  on: {alertmanager: {alertname: NeedsApproval}}
  runbook: gated
- name: gate4
  on: {generic: {}}
  runbook: gated4
"""


def _paused(project: Project, run_id: str) -> bool:
    record = project.records().get(run_id) or {}
    return record.get("status") == "paused" and (record.get("waiting_for") or {}).get("type") == "approval"


def test_approval_over_the_api_is_the_token_identity_and_serve_resumes_the_run(project: Project) -> None:
    project.configure(RULES)
    project.start()
    [first] = project.fire(alert("ap1", alertname="NeedsApproval"))
    [second] = project.fire(alert("ap2", alertname="NeedsApproval"))
    for decision in (first, second):
        wait_for(lambda d=decision: _paused(project, d["run_id"]), 60, "the run to pause for approval")
    paused = {r["run_id"] for r in project.get("/runs?status=paused").json()}
    assert {first["run_id"], second["run_id"]} <= paused
    assert project.metric("runbook_approvals_waiting") == 2

    path = f"/runs/{first['run_id']}/approve"
    refused = project.post(path, {"step": "gate", "decision": "approve", "note": "lgtm"}, identity="bob")
    assert refused.status_code == 403, refused.text
    assert project.post(path, {"step": "nope", "decision": "approve"}, identity="alice").status_code in (403, 409)
    assert project.post(path, {"step": "gate", "decision": "maybe"}, identity="alice").status_code == 400
    assert project.post("/runs/20260101T000000Z-gated-abcdef/approve", {"step": "gate", "decision": "approve"},
                        identity="alice").status_code == 404
    ok = project.post(path, {"step": "gate", "decision": "approve", "note": "lgtm"}, identity="alice")
    assert ok.status_code == 200, ok.text
    assert ok.json()["by"] == "alice"
    record = project.wait_finished(first["run_id"])
    assert record["outcome"] == "SUCCESS"
    approvals = [e for e in project.events(first["run_id"]) if e["type"] == "approval"]
    assert approvals and approvals[-1]["data"]["by"] == "alice"

    denied = project.post(f"/runs/{second['run_id']}/approve", {"step": "gate", "decision": "deny"}, identity="alice")
    assert denied.status_code == 200
    assert project.wait_finished(second["run_id"])["outcome"] != "SUCCESS"
    wait_for(lambda: project.metric("runbook_approvals_waiting") == 0, 30, "no approval waiting")


def test_four_eyes_refuses_the_identity_that_fired_the_run(project: Project) -> None:
    project.configure(RULES)
    project.start()
    [decision] = project.post("/hooks/generic/gate4", {"why": "test"}, identity="alice").json()["decisions"]
    wait_for(lambda: _paused(project, decision["run_id"]), 60, "the run to pause for approval")
    assert project.records()[decision["run_id"]]["operator"] == "serve:alice"
    path = f"/runs/{decision['run_id']}/approve"
    assert project.post(path, {"step": "gate", "decision": "approve"}, identity="alice").status_code == 403
    assert project.post(path, {"step": "gate", "decision": "approve"}, identity="bob").status_code == 200
    assert project.wait_finished(decision["run_id"])["outcome"] == "SUCCESS"


def test_cron_schedule_fires_with_a_schedule_trigger(project: Project) -> None:
    project.configure("""
        - name: every-second
          schedule: {cron: "* * * * * *", timezone: Europe/London}
          runbook: hello
          max_runs: {count: 1, per: 1h}
        """)
    project.start()
    run_id = wait_for(lambda: next(iter(project.records()), None), 60, "the scheduled run")
    record = project.wait_finished(run_id)
    assert record["trigger"]["schedule"] == "every-second" and record["trigger"]["at"].endswith("Z")
    assert record["operator"] == "serve:schedule"
    wait_for(lambda: project.metric("runbook_alerts_total", rule="every-second", decision="rate_limited") >= 1,
             30, "the next tick to be rate limited")
    assert list(project.records()) == [run_id]


def test_triggers_check_test_and_located_errors(project: Project) -> None:
    project.configure("""
        - name: gateway
          on: {alertmanager: {alertname: OrderGatewayDown, severity: "~crit.*"}}
          runbook: hello
          params: {reason: "{{ alert.annotations.summary }}"}
        """)
    ok = project.cli("triggers", "check")
    assert ok.code == 0 and "1 trigger rule valid" in ok.out
    tested = project.cli("triggers", "test", str(SAMPLES / "alertmanager-webhook-sample.json"))
    assert tested.code == 0, tested.text
    [result] = json.loads(tested.out)["results"]
    assert result["fires"] == [{"rule": "gateway", "runbook": "hello", "mode": "live",
                                "params": {"reason": "Order gateway heartbeat missing for 30s"}}]
    assert project.records() == {}
    project.write("event.json", '{"what": "disk full"}')
    assert project.cli("triggers", "test", "event.json").code == 2  # no generic rule to post it to

    project.configure("""
        - name: Bad_Name
          on: {alertmanager: {alertname: "~(unclosed"}}
          runbook: no-such-runbook
          cooldown: 10 minutes
          params: {reason: "{{ secrets.x }}"}
        - name: sched
          schedule: {cron: "61 * * * *", timezone: Mars/Olympus}
          runbook: hello
        """)
    bad = project.cli("triggers", "check")
    assert bad.code == 20
    for expected in ("name: expected a kebab-case name", "bad regex", "no runbook named 'no-such-runbook'",
                     "cooldown: bad duration", "unknown name 'secrets'", "not a valid cron expression",
                     "unknown time zone"):
        assert expected in bad.err, (expected, bad.err)
    assert "runbook.yaml:" in bad.err and bad.err.count("runbook.yaml:") >= 7
    unknown_param = project.cli("triggers", "list")
    assert unknown_param.code == 20
    project.configure("""
        - name: gateway
          on: {alertmanager: {alertname: X}}
          runbook: hello
          params: {not_a_param: 1}
        """)
    located = project.cli("triggers", "check").err
    assert "runbook.yaml:" in located and "param 'not_a_param' is not a param of hello" in located
