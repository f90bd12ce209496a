"""Kill -9 and SIGTERM of serve: no accepted event lost, none starts two runs, driven runs resumed."""

from __future__ import annotations

import signal
import threading
from collections import Counter
from typing import Any

import httpx

from tests.serve.conftest import Project, alert, wait_for, webhook

RULES = """
- name: hold
  on: {alertmanager: {alertname: Hold}}
  runbook: blocker
- name: gateway
  on: {alertmanager: {alertname: OrderGatewayDown}}
  runbook: hello
"""


def _in_step(project: Project, run_id: str, step: str) -> bool:
    try:
        return any(e["type"] == "step_started" and e["step"] == step for e in project.events(run_id))
    except (OSError, ValueError):
        return False


def _paused_interrupted(project: Project, run_id: str) -> bool:
    record = project.records().get(run_id) or {}
    return record.get("status") == "paused" and (record.get("waiting_for") or {}).get("type") == "interrupted"


def test_kill_9_between_accepting_and_starting_and_while_driving(project: Project) -> None:
    project.configure(RULES, max_concurrent_runs=1)
    project.start()
    [held] = project.fire(alert("hold-1", alertname="Hold"))
    wait_for(lambda: _in_step(project, held["run_id"], "hold"), 60, "the blocker to be in its step")
    queued = [project.fire(alert(f"g{n}"))[0] for n in range(4)]
    assert all(d["decision"] == "started" for d in queued)
    assert all(d["run_id"] not in project.records() for d in queued)  # accepted, not started: the slot is taken

    project.stop(signal.SIGKILL)
    wait_for(lambda: _paused_interrupted(project, held["run_id"]), 60, "the orphaned run to pause as interrupted")

    project.start()
    again = [project.fire(alert("hold-1", alertname="Hold"))[0]] + [project.fire(alert(f"g{n}"))[0] for n in range(4)]
    assert [d["decision"] for d in again] == ["duplicate"] * 5
    assert [d["run_id"] for d in again] == [held["run_id"]] + [d["run_id"] for d in queued]
    (project.root / "release").touch()
    expected = {held["run_id"], *(d["run_id"] for d in queued)}
    for run_id in expected:
        assert project.wait_finished(run_id)["outcome"] == "SUCCESS"
    assert set(project.records()) == expected
    for run_id in expected:
        assert sum(e["type"] == "run_started" for e in project.events(run_id)) == 1
    assert any(e["type"] == "run_resumed" for e in project.events(held["run_id"]))
    assert project.verify_cli(held["run_id"]) == 0


def test_sigterm_leaves_the_driven_run_resumable_and_restart_resumes_it(project: Project) -> None:
    project.configure(RULES)
    project.start()
    [held] = project.fire(alert("hold-2", alertname="Hold"))
    wait_for(lambda: _in_step(project, held["run_id"], "hold"), 60, "the blocker to be in its step")
    assert project.stop(signal.SIGTERM) == 0
    assert _paused_interrupted(project, held["run_id"])
    assert project.cli("status", held["run_id"]).code == 0
    (project.root / "release").touch()
    project.start()
    record = project.wait_finished(held["run_id"])
    assert record["outcome"] == "SUCCESS"
    assert any(e["type"] == "run_resumed" for e in project.events(held["run_id"]))


def test_kill_9_under_a_stream_of_deliveries_loses_nothing_and_starts_nothing_twice(project: Project) -> None:
    project.configure(RULES, max_concurrent_runs=3)
    project.start()
    fingerprints = [f"s{n:02d}" for n in range(16)]
    answered: list[dict[str, Any]] = []
    stop = threading.Event()

    def deliver() -> None:
        with httpx.Client(timeout=10) as client:
            for fingerprint in fingerprints:
                for _ in range(2):  # every alert twice, as Alertmanager's retries do
                    if stop.is_set():
                        return
                    try:
                        response = client.post(f"{project.base}/hooks/alertmanager", json=webhook(alert(fingerprint)),
                                               headers={"Authorization": "Bearer am-token-0123456789"})
                    except httpx.HTTPError:
                        return
                    if response.status_code == 202:
                        answered.extend(response.json()["decisions"])

    sender = threading.Thread(target=deliver)
    sender.start()
    wait_for(lambda: len(answered) >= 8 or not sender.is_alive(), 60, "some deliveries to be answered")
    project.stop(signal.SIGKILL)
    stop.set()
    sender.join(60)
    accepted_before = {d["alert"]: d["run_id"] for d in answered if d["decision"] == "started"}
    assert accepted_before

    project.start()
    after = [project.fire(alert(fingerprint))[0] for fingerprint in fingerprints]
    for decision in after:
        if decision["alert"] in accepted_before:
            assert decision == {**decision, "decision": "duplicate", "run_id": accepted_before[decision["alert"]]}
    run_ids = {d["run_id"] for d in after}
    assert len(run_ids) == len(fingerprints)
    for run_id in run_ids:
        assert project.wait_finished(run_id)["outcome"] == "SUCCESS"
    per_alert = Counter(r["trigger"]["fingerprint"] for r in project.records().values())
    assert per_alert == Counter({fingerprint: 1 for fingerprint in fingerprints})
    assert set(project.records()) == run_ids


def test_one_serve_per_state_directory(project: Project) -> None:
    project.configure(RULES)
    project.start()
    second = project.cli("serve", "--listen", f"127.0.0.1:{project.port + 1 if project.port < 65535 else 1024}")
    assert second.code == 40, second.text
    assert "another runbook serve" in second.err
