"""Alertmanager and generic intake through a real server: auth, limits, matching, params, dedupe, resolve."""

from __future__ import annotations

import json

import httpx

from tests.serve.conftest import SAMPLES, Project, alert, wait_for, webhook

RULES = """
- name: gateway
  on: {alertmanager: {alertname: OrderGatewayDown, severity: "~crit.*"}}
  runbook: hello
  params: {reason: "{{ alert.annotations.summary }} at {{ alert.labels.venue }}"}
- name: private
  on: {alertmanager: {alertname: PrivateAlert}}
  runbook: hello
  allow: [ops]
- name: hook
  on: {generic: {}}
  runbook: hello
  params: {reason: "{{ event.what }}"}
"""


def test_auth_body_limit_and_health(project: Project) -> None:
    project.configure(RULES)
    project.start()
    body = webhook(alert("a1"))
    assert project.post("/hooks/alertmanager", body, identity=None).status_code == 401
    wrong = httpx.post(f"{project.base}/hooks/alertmanager", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert project.post("/hooks/alertmanager", webhook(alert("p1", alertname="PrivateAlert"))).status_code == 403
    assert project.get("/runs", identity=None).status_code == 401
    big = {"pad": "x" * (1024 * 1024 + 1)}
    assert project.post("/hooks/generic/hook", big).status_code == 413
    assert project.post("/hooks/alertmanager", "not an object").status_code == 400
    assert project.post("/hooks/generic/no-such-rule", {}).status_code == 404
    assert httpx.get(f"{project.base}/healthz").status_code == 200
    metrics = httpx.get(f"{project.base}/metrics").text
    for name in ("runbook_runs_total", "runbook_run_duration_seconds", "runbook_alerts_total",
                 "runbook_approvals_waiting", "runbook_breaker_open"):
        assert f"# TYPE {name}" in metrics
    assert project.records() == {}  # nothing refused started anything
    stored = project.read("runbook.yaml")
    assert "am-token" not in stored


def test_sample_fires_one_run_with_rendered_params_and_trigger(project: Project) -> None:
    project.configure(RULES)
    project.start()
    sample = json.loads((SAMPLES / "alertmanager-webhook-sample.json").read_text())
    first = project.post("/hooks/alertmanager", sample)
    assert first.status_code == 202
    [decision] = first.json()["decisions"]
    assert decision["rule"] == "gateway" and decision["alert"] == "89ff2723ad7bfdbd"
    assert decision["decision"] == "started"
    run_id = decision["run_id"]
    again = project.post("/hooks/alertmanager", sample).json()["decisions"]
    assert again == [{**decision, "decision": "duplicate"}]
    record = project.wait_finished(run_id)
    assert record["outcome"] == "SUCCESS"
    assert record["operator"] == "serve:alertmanager"
    assert record["params"] == {"reason": "Order gateway heartbeat missing for 30s at XNAS"}
    assert record["trigger"]["fingerprint"] == "89ff2723ad7bfdbd"
    manifest = json.loads((project.root / "evidence" / run_id / "manifest.json").read_text())
    assert manifest["trigger"]["labels"]["alertname"] == "OrderGatewayDown"
    assert list(project.records()) == [run_id]
    assert wait_for(lambda: project.metric("runbook_runs_total", runbook="hello", outcome="SUCCESS") == 1)
    assert project.metric("runbook_alerts_total", rule="gateway", decision="duplicate") == 1
    detail = project.get(f"/runs/{run_id}").json()
    assert detail["run_id"] == run_id and detail["status"] == "finished"
    assert detail["events"][0]["type"] == "run_started" and detail["serve"]["rule"] == "gateway"
    assert project.get("/runs/..%2F..%2Fetc").status_code == 404
    assert project.verify_cli(run_id) == 0


def test_research_sequence_one_run_per_alert_and_no_rule(project: Project) -> None:
    """Group update and partial resolve, as Alertmanager 0.25 sent them: two alerts, two runs."""
    project.configure(RULES)
    project.start()
    sequence = json.loads((SAMPLES / "alertmanager-webhook-sequence.json").read_text())["deliveries"]
    answers = [project.post("/hooks/alertmanager", d["body"]).json()["decisions"] for d in sequence]
    assert [d["decision"] for d in answers[0]] == ["started"]
    assert [d["decision"] for d in answers[1]] == ["duplicate", "started"]
    assert [d["decision"] for d in answers[2]] == ["resolved", "duplicate"]
    started = {d["run_id"] for a in answers for d in a if d["decision"] == "started"}
    for run_id in started:
        project.wait_finished(run_id)
    assert set(project.records()) == started
    other = project.fire(alert("zz", alertname="SomethingElse"))
    assert other == [{"rule": None, "alert": "zz", "decision": "no_rule", "run_id": None}]
    warning = project.fire(alert("w1", severity="warning"))
    assert warning[0]["decision"] == "no_rule"


def test_label_with_shell_metacharacters_is_only_a_param(project: Project) -> None:
    project.configure(RULES)
    project.start()
    evil = '$(touch pwned); `touch pwned2`; echo "x" > pwned3 | rm -rf .'
    [decision] = project.fire(alert("evil", venue=evil))
    record = project.wait_finished(decision["run_id"])
    assert record["outcome"] == "SUCCESS"
    assert record["params"]["reason"].endswith(f"at {evil}")
    stdout = (project.root / "evidence" / decision["run_id"] / "artifacts").glob("*say-stdout*")
    assert any(evil in p.read_text() for p in stdout)
    assert not any((project.root / name).exists() for name in ("pwned", "pwned2", "pwned3"))


def test_generic_hook_with_idempotency_key(project: Project) -> None:
    project.configure(RULES)
    project.start()
    first = project.post("/hooks/generic/hook", {"what": "disk full"}, **{"Idempotency-Key": "evt-1"}).json()
    [decision] = first["decisions"]
    assert decision["rule"] == "hook" and decision["alert"] is None and decision["decision"] == "started"
    again = project.post("/hooks/generic/hook", {"what": "disk full"}, **{"Idempotency-Key": "evt-1"}).json()
    assert again["decisions"][0]["decision"] == "duplicate"
    record = project.wait_finished(decision["run_id"])
    assert record["params"] == {"reason": "disk full"} and record["trigger"] == {"what": "disk full"}


def test_resolved_drops_a_run_not_yet_started(project: Project) -> None:
    project.configure("""
        - name: hold
          on: {alertmanager: {alertname: Hold}}
          runbook: blocker
        - name: gateway
          on: {alertmanager: {alertname: OrderGatewayDown}}
          runbook: hello
        """, max_concurrent_runs=1)
    project.start()
    [held] = project.fire(alert("h1", alertname="Hold"))
    wait_for(lambda: held["run_id"] in project.records(), 60, "the blocker to start")
    [queued] = project.fire(alert("q1"))
    assert queued["decision"] == "started"
    [resolved] = project.fire(alert("q1", status="resolved"))
    assert resolved == {"rule": "gateway", "alert": "q1", "decision": "resolved", "run_id": queued["run_id"]}
    (project.root / "release").touch()
    project.wait_finished(held["run_id"])
    [after] = project.fire(alert("q2"))
    project.wait_finished(after["run_id"])
    assert queued["run_id"] not in project.records()
