"""Per-rule guards through a real server: cooldown, max_runs, breaker (+ triggers reset), kill switch, dry-run."""

from __future__ import annotations

import json

from tests.serve.conftest import Project, alert, wait_for


def test_cooldown_is_per_group_and_rate_is_per_rule(project: Project) -> None:
    project.configure("""
        - name: cool
          on: {alertmanager: {alertname: OrderGatewayDown}}
          runbook: hello
          group_by: [venue]
          cooldown: 1h
          max_runs: {count: 2, per: 1h}
        """)
    project.start()
    first = project.fire(alert("a1", venue="XNAS"))[0]
    assert first["decision"] == "started"
    assert project.fire(alert("a2", venue="XNAS"))[0]["decision"] == "cooldown"
    assert project.fire(alert("a3", venue="XNYS"))[0]["decision"] == "started"
    assert project.fire(alert("a4", venue="ARCX"))[0]["decision"] == "rate_limited"
    assert project.metric("runbook_alerts_total", rule="cool", decision="cooldown") == 1
    assert project.metric("runbook_alerts_total", rule="cool", decision="rate_limited") == 1
    listed = json.loads(project.cli("triggers", "list", "--output", "json").out)
    assert listed[0]["name"] == "cool" and listed[0]["cooldown_remaining_s"] > 3000


def test_breaker_opens_after_failures_and_reset_is_recorded(project: Project) -> None:
    project.configure("""
        - name: flaky
          on: {alertmanager: {alertname: Flaky}}
          runbook: failing
          breaker: {failures: 2, within: 1h}
        """)
    project.start()
    for fingerprint in ("f1", "f2"):
        [decision] = project.fire(alert(fingerprint, alertname="Flaky"))
        assert decision["decision"] == "started"
        assert project.wait_finished(decision["run_id"])["outcome"] == "BUSINESS_REJECT"
    wait_for(lambda: project.metric("runbook_breaker_open", rule="flaky") == 1, 30, "the breaker gauge")
    assert project.fire(alert("f3", alertname="Flaky"))[0]["decision"] == "breaker_open"
    assert "breaker open" in project.cli("triggers", "list").out
    reset = project.cli("triggers", "reset", "flaky", "--by", "alice", "--reason", "fixed the gateway config")
    assert reset.code == 0, reset.text
    assert "closed by alice" in reset.out
    [again] = project.fire(alert("f3", alertname="Flaky"))
    assert again["decision"] == "started"
    listed = json.loads(project.cli("triggers", "list", "--output", "json").out)
    assert listed[0]["resets"][0]["by"] == "alice" and listed[0]["resets"][0]["reason"] == "fixed the gateway config"
    assert project.cli("triggers", "reset", "nope", "--by", "a", "--reason", "b").code == 2


def test_kill_switch_lets_only_safe_in_halt_rules_fire_and_dry_run_mode(project: Project) -> None:
    project.configure("""
        - name: restart
          on: {alertmanager: {alertname: OrderGatewayDown}}
          runbook: hello
        - name: risk-off
          on: {alertmanager: {alertname: OrderGatewayDown}}
          runbook: hello
          safe_in_halt: true
          mode: dry-run
        """)
    project.start()
    (project.root / "KILL_SWITCH").touch()
    decisions = {d["rule"]: d for d in project.fire(alert("k1"))}
    assert decisions["restart"]["decision"] == "kill_switch" and decisions["restart"]["run_id"] is None
    assert decisions["risk-off"]["decision"] == "started"
    record = project.wait_finished(decisions["risk-off"]["run_id"])
    assert record["mode"] == "dry-run"
    (project.root / "KILL_SWITCH").unlink()
    assert {d["rule"]: d["decision"] for d in project.fire(alert("k2"))} == {"restart": "started",
                                                                               "risk-off": "started"}
