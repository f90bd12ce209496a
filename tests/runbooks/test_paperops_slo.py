"""Seed 001 SLO evaluation (with SLO_PAGING_* webhook paging) and promotion readiness on the
simulated core's paper session (core/results/runs/r1, written by simcore and appended to by
its monitors on every tick and fault)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.runbooks import scenario

SYSTEM = "paperops"
RUN_DIR = "core/results/runs/r1"
verified = scenario.verified


def run(sim: Any, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    return scenario.run(sim, SYSTEM, name, *args, env=env)


@pytest.fixture
def pager() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook that records every page it receives."""
    pages: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            pages.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/page", pages
    server.shutdown()
    server.server_close()


def paging(url: str) -> dict[str, str]:
    return {"SLO_PAGING_WEBHOOK_URL": url}


ON = ("--param", "slo_paging_enabled=true")


def test_slo_evaluation_met_on_a_healthy_session(sim, pager):
    url, pages = pager
    code, doc = scenario.dry_run_untouched(sim, SYSTEM, "slo-evaluation", *ON, env=paging(url))
    assert code == 0
    code, doc = run(sim, "slo-evaluation", *ON, env=paging(url))
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "paper_reconciliation_pass_rate=1.0" in doc["message"] and pages == []
    assert verified(sim, doc)
    assert url not in (sim.root / "evidence" / doc["run_id"] / "events.jsonl").read_text()  # env values are secrets


def test_slo_breaches_from_reconciliation_drift_are_paged(sim, pager):
    url, pages = pager
    sim.simcore("inject", "reconcile_drift")
    sim.simcore("tick", "--n", "2")  # the session's monitors: 3 mismatch runs, SLO breach, incident opened
    code, doc = scenario.dry_run_untouched(sim, SYSTEM, "slo-evaluation", *ON, env=paging(url))
    assert code == 10 and doc["steps"]["page"]["status"] == "planned" and pages == []
    code, doc = run(sim, "slo-evaluation", *ON, env=paging(url))
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    msg = doc["message"]
    assert "(paged)" in msg and "CRITICAL order_reconciliation_consecutive_mismatch_runs=3" in msg
    assert "WARNING paper_reconciliation_pass_rate=0.4" in msg
    assert len(pages) == 1 and pages[0]["severity"] == "critical"
    assert "order_reconciliation_consecutive_mismatch_runs" in pages[0]["breaches"]
    # Paging disabled: the same breaches, nobody paged.
    code, doc = run(sim, "slo-evaluation", env=paging(url))
    assert code == 10 and "(paged)" not in doc["message"] and len(pages) == 1
    assert verified(sim, doc)


def test_ack_sla_breached_by_a_late_or_missing_ack(sim, pager):
    url, pages = pager
    sim.simcore("inject", "stale_data")  # the quality monitor opens a critical incident
    events = [json.loads(x) for x in (sim.root / RUN_DIR / "incident_events.jsonl").read_text().splitlines()]
    incident = [e for e in events if e["event_type"] == "incident_open"][-1]
    sim.simcore("heal", "stale_data")
    sim.simcore("tick", "--n", "20")  # 20 minutes later, still not acknowledged
    code, doc = run(sim, "slo-evaluation", *ON, "--param", "slo_paging_min_severity=warning", env=paging(url))
    assert code == 10
    assert f"critical_incident_ack_sla={incident['incident_id']} unacknowledged for 20.0 min" in doc["message"]
    assert pages and pages[-1]["severity"] == "critical"
    # Acknowledged now (too late): still a breach of the SLA, reported as such.
    res = sim.simcore("incident-ack", "--run-id", "r1", "--incident-id", incident["incident_id"], "--ack-by", "bob")
    assert res.code == 0, res.text
    code, doc = run(sim, "slo-evaluation")
    assert f"{incident['incident_id']} acked after 20.0 min" in doc["message"]


def test_promotion_readiness(sim):
    code, doc = scenario.dry_run_untouched(sim, SYSTEM, "promotion-readiness", "--param", "experiment=exp-42")
    assert code == 0
    code, doc = run(sim, "promotion-readiness", "--param", "experiment=exp-42")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    archive = sim.root / "results/promotion/promotion-exp-42-r1.zip"
    assert archive.exists() and doc["steps"]["attach"]["result"]["files"] == 5
    assert verified(sim, doc)
    # A drifting session fails the strict gate; nothing new is attached.
    archive.unlink()
    sim.simcore("inject", "reconcile_drift")
    code, doc = run(sim, "promotion-readiness", "--param", "experiment=exp-42")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "strict gate FAIL: reconciliation_pass_rate" in doc["message"]
    assert not archive.exists()


def test_the_readme_example_on_a_fresh_core(sim):
    """README, seed 001: drift -> triage -> heal + one tick -> recovery waits for a second person -> ARMED_LIVE."""
    sim.simcore("inject", "reconcile_drift")
    code, doc = run(sim, "incident-triage")
    assert code == 0 and "class=reconciliation" in doc["message"]
    sim.simcore("heal", "reconcile_drift")
    sim.simcore("tick")
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=reconciliation")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_resume"
    code, doc = scenario.approve_and_resume(sim, doc, "approve_resume")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert scenario.status(sim)["safety_mode"] == "ARMED_LIVE"
