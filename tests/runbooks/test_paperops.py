"""Seed 001 (paper/live trading operations) runbooks against the simulated core, through the real CLI.

The seed's alert sources are JSONL artifacts under results/runs/<run_id>/; the simulated core
writes a healthy session at core/results/runs/r1/ and its monitors append to it, and each
scenario here overwrites them with the records it needs (run id r1, as in profiles/paperops-sim.yaml),
injects the matching fault (or none), runs the runbook live and as a dry-run, and checks the
outcome and exit code, the core's state afterwards, that the evidence bundle verifies, and
that a dry-run leaves core/ byte-identical.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.runbooks import scenario

RUN_DIR = "core/results/runs/r1"


# -- helpers ---------------------------------------------------------------------------------


def run(sim: Any, name: str, *args: str, dry: bool = False) -> tuple[int, dict[str, Any]]:
    """`runbook run NAME` with the paperops sim profile, no prompts, JSON output."""
    return scenario.run(sim, "paperops", name, *args, dry=dry)


def dry_run_untouched(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Dry-run NAME; core/ byte-identical afterwards and the bundle verifies."""
    return scenario.dry_run_untouched(sim, "paperops", name, *args)


approve_and_resume = scenario.approve_and_resume
verified = scenario.verified
status = scenario.status


def jsonl(*records: dict[str, Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def order_cycle(ts: str, status: str = "ok", runs: int = 0, ids: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"ts": ts, "event_type": "order_reconciliation", "status": status,
            "consecutive_mismatch_runs": runs, "mismatched_order_ids": list(ids)}


def position_cycle(ts: str, status: str = "ok") -> dict[str, Any]:
    return {"ts": ts, "event_type": "position_reconciliation", "status": status,
            "drift": [] if status == "ok" else [{"symbol": "BTCUSDT", "local": 0.05, "broker": 0.085}]}


def artifacts(sim: Any, *, slo: list[dict[str, Any]] | None = None, incidents: list[dict[str, Any]] | None = None,
              order: list[dict[str, Any]] | None = None, position: list[dict[str, Any]] | None = None,
              quality: dict[str, Any] | None = None, quality_events: list[dict[str, Any]] | None = None) -> None:
    """The session's alert sources; defaults = a healthy session with two clean cycles."""
    clean = {"errors": 0, "stale_warnings": 0, "critical_breaches": 0}
    sim.write(f"{RUN_DIR}/ops_slo_events.jsonl", jsonl(*(slo if slo is not None else [
        {"ts": "2026-01-22T00:00:00Z", "event_type": "slo_evaluation", "status": "ok"}])))
    sim.write(f"{RUN_DIR}/incident_events.jsonl", jsonl(*(incidents or [])))
    sim.write(f"{RUN_DIR}/order_reconciliation_events.jsonl", jsonl(*(order if order is not None else [
        order_cycle("2026-01-22T00:00:00Z"), order_cycle("2026-01-22T00:01:00Z")])))
    sim.write(f"{RUN_DIR}/position_reconciliation_events.jsonl", jsonl(*(position if position is not None else [
        position_cycle("2026-01-22T00:00:00Z"), position_cycle("2026-01-22T00:01:00Z")])))
    sim.write(f"{RUN_DIR}/data_quality_latest.json",
              json.dumps({"ts": "2026-01-22T00:01:00Z", "symbols": ["XAUUSD", "BTCUSDT"],
                          "bars_validated": {"XAUUSD": 30, "BTCUSDT": 30}, **(quality or clean)}))
    sim.write(f"{RUN_DIR}/data_quality_events.jsonl", jsonl(*(quality_events if quality_events is not None else [
        {"ts": "2026-01-22T00:01:00Z", "event_type": "data_quality_cycle", **clean}])))


def slo_breach(slo: str, category: str) -> dict[str, Any]:
    return {"ts": "2026-01-22T00:02:00Z", "event_type": "slo_breach", "slo": slo, "category": category,
            "severity": "critical", "value": 3, "threshold": 0}


def incident_open(incident_id: str, category: str) -> dict[str, Any]:
    return {"ts": "2026-01-22T00:02:05Z", "event_type": "incident_open", "incident_id": incident_id,
            "severity": "critical", "category": category}


def incident_lines(sim: Any) -> list[dict[str, Any]]:
    text = (sim.root / RUN_DIR / "incident_events.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# -- the library -------------------------------------------------------------------------------


# -- incident-triage ---------------------------------------------------------------------------


def test_triage_of_a_healthy_session_finds_nothing_and_leaves_entries_alone(sim):
    artifacts(sim)
    code, _ = dry_run_untouched(sim, "incident-triage")
    assert code == 10
    code, doc = run(sim, "incident-triage")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert doc["message"].startswith("no incident found")
    assert status(sim)["safety_mode"] == "ARMED_LIVE"
    assert verified(sim, doc)


@pytest.mark.parametrize("fault, cls, overrides", [
    ("stale_data", "data_quality", {"quality": {"errors": 0, "stale_warnings": 2, "critical_breaches": 1}}),
    ("reconcile_drift", "reconciliation", {"order": [order_cycle("2026-01-22T00:01:00Z", "mismatch", 3, ("o-17",))],
                                           "position": [position_cycle("2026-01-22T00:01:00Z", "drift")]}),
    ("broker_down", "broker_connectivity", {}),
])
def test_triage_classifies_and_halts_entries(sim, fault, cls, overrides):
    sim.simcore("inject", fault)  # the core's monitors append to the session; the records below replace them
    artifacts(sim, slo=[slo_breach("order_reconciliation_mismatch_runs", cls)],
              incidents=[incident_open("INC-7", cls)], **overrides)
    before = status(sim)
    code, doc = dry_run_untouched(sim, "incident-triage")
    assert code == 0 and doc["steps"]["classify"]["result"]["value"] == cls
    code, doc = run(sim, "incident-triage")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert f"class={cls}" in doc["message"]
    assert "unacknowledged incidents: INC-7" in doc["message"]
    assert "order_reconciliation_mismatch_runs" in doc["message"]
    after = status(sim)
    if before["safety_mode"] == "ARMED_LIVE":
        assert (after["safety_mode"], after["safety_reason_code"]) == ("ARMED_SAFE", "TRIAGE_IN_PROGRESS")
    else:  # a HALT is never loosened by triage
        assert after["safety_mode"] == before["safety_mode"]
    assert verified(sim, doc)


# -- recovery-decision-tree --------------------------------------------------------------------


def halted_by_triage(sim: Any, fault: str) -> None:
    """Triage ran on `fault`: entries are halted (ARMED_SAFE, TRIAGE_IN_PROGRESS)."""
    sim.simcore("inject", fault)
    code, doc = run(sim, "incident-triage")
    assert code == 0, doc["message"]


def test_recovery_from_reconciliation_needs_two_clean_cycles_then_approval(sim):
    artifacts(sim, order=[order_cycle("2026-01-22T00:01:00Z", "mismatch", 3, ("o-17",))])
    halted_by_triage(sim, "reconcile_drift")
    # Drift still there: not ready.
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=reconciliation")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["recon_first"]["status"] == "failed"
    # Drift healed but only one clean session cycle since the mismatch: still not ready.
    sim.simcore("heal", "reconcile_drift")
    artifacts(sim, order=[order_cycle("2026-01-22T00:01:00Z", "mismatch", 3, ("o-17",)),
                          order_cycle("2026-01-22T00:02:00Z")])
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=reconciliation")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["order_cycles"]["status"] == "failed"
    assert status(sim)["safety_mode"] == "ARMED_SAFE"
    # Two consecutive clean cycles: the resume waits for a second person.
    artifacts(sim)
    dry_run_untouched(sim, "recovery-decision-tree", "--param", "incident_class=reconciliation")
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=reconciliation")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_resume"
    assert doc["steps"]["recon_first"]["status"] == doc["steps"]["recon_second"]["status"] == "ok"
    refused = sim.cli("approve", doc["run_id"], "approve_resume", "--by", "tester")
    assert refused.code != 0  # four eyes: not the operator who started the run
    code, doc = approve_and_resume(sim, doc, "approve_resume")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    after = status(sim)
    assert (after["safety_mode"], after["safety_reason_code"]) == ("ARMED_LIVE", "RECOVERED_RECONCILIATION")
    assert verified(sim, doc)


def test_recovery_from_data_quality_needs_a_clean_cycle(sim):
    artifacts(sim, quality={"errors": 0, "stale_warnings": 2, "critical_breaches": 1})
    halted_by_triage(sim, "stale_data")
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=data_quality")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["data_feed"]["status"] == "failed"
    sim.simcore("heal", "stale_data")  # the feed is back: the session's next quality cycle is clean
    data = json.loads((sim.root / RUN_DIR / "data_quality_latest.json").read_text())
    assert (data["stale_warnings"], data["critical_breaches"]) == (0, 0)
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=data_quality")
    code, doc = approve_and_resume(sim, doc, "approve_resume", deny=True)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "not approved" in doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_SAFE"
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=data_quality")
    code, doc = approve_and_resume(sim, doc, "approve_resume")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert status(sim)["safety_reason_code"] == "RECOVERED_DATA_QUALITY"
    assert verified(sim, doc)


def test_recovery_from_data_quality_refreshes_the_source_and_validates_30_daily_bars(sim):
    artifacts(sim)
    halted_by_triage(sim, "daily_bars_corrupt")
    code, doc = dry_run_untouched(sim, "recovery-decision-tree", "--param", "incident_class=data_quality")
    assert code == 10 and doc["steps"]["data_refresh"]["status"] == "planned"
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=data_quality")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert doc["steps"]["data_refresh"]["status"] == "ok"
    bars = doc["steps"]["bars_validated"]["result"]["json"]["symbols"]
    assert bars["XAUUSD"]["validated"] == 30 and bars["BTCUSDT"]["validated"] == 29
    assert "BTCUSDT" in doc["message"] and "inconsistent OHLC" in doc["message"]
    stats = json.loads((sim.root / RUN_DIR / "gateway_stats.json").read_text())
    assert stats["data_session_id"].endswith("-r")  # the connection was refreshed
    assert status(sim)["safety_mode"] == "ARMED_SAFE"
    assert verified(sim, doc)
    sim.simcore("heal", "daily_bars_corrupt")  # the provider republished the bar
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=data_quality")
    assert doc["waiting_for"]["step"] == "approve_resume", doc.get("message")
    assert doc["steps"]["bars_validated"]["result"]["json"]["ok"] is True


def test_recovery_from_broker_failure_needs_the_broker_back(sim):
    artifacts(sim)
    halted_by_triage(sim, "broker_down")
    before = status(sim)
    code, doc = dry_run_untouched(sim, "recovery-decision-tree", "--param", "incident_class=broker_connectivity")
    assert code == 10
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=broker_connectivity")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["broker_health"]["status"] == "failed"
    assert status(sim)["safety_mode"] == before["safety_mode"]
    sim.simcore("heal", "broker_down")
    code, doc = run(sim, "recovery-decision-tree", "--param", "incident_class=broker_connectivity")
    assert doc["steps"]["restart_session"]["status"] == doc["steps"]["broker_recon"]["status"] == "ok"
    gateway = json.loads((sim.root / RUN_DIR / "gateway_stats.json").read_text())
    assert gateway["session_id"].endswith("-r") and gateway["websocket_connected"]  # a new broker session
    code, doc = approve_and_resume(sim, doc, "approve_resume")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_LIVE"
    assert verified(sim, doc)


def test_recovery_rejects_an_unknown_class(sim):
    artifacts(sim)
    res = sim.cli("run", "recovery-decision-tree", "--params-file", sim.profile("paperops"), "--no-input",
                  "--param", "incident_class=cosmic_rays")
    assert res.code == 20 and "incident_class" in res.text, res.text
    assert status(sim)["safety_mode"] == "ARMED_LIVE"


# -- incident-acknowledgement ------------------------------------------------------------------


def test_acknowledge_the_active_incident(sim):
    artifacts(sim, incidents=[incident_open("INC-6", "data_quality"),
                              {"ts": "2026-01-22T00:01:00Z", "event_type": "incident_ack", "incident_id": "INC-6",
                               "ack_by": "bob", "notes": "feed restarted"},
                              incident_open("INC-7", "reconciliation")])
    ledger = (sim.root / RUN_DIR / "incident_events.jsonl").read_bytes()
    code, doc = dry_run_untouched(sim, "incident-acknowledgement")
    assert code == 0 and doc["steps"]["ack"]["status"] == "planned"
    assert (sim.root / RUN_DIR / "incident_events.jsonl").read_bytes() == ledger
    notes = 'drift on BTCUSDT "o-17"; entries halted, reconciling'
    code, doc = run(sim, "incident-acknowledgement", "--param", "ack_by=alice", "--param", f"notes={notes}")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "INC-7" in doc["message"] and "alice" in doc["message"]
    last = incident_lines(sim)[-1]
    assert (last["event_type"], last["incident_id"], last["ack_by"], last["notes"]) == ("incident_ack", "INC-7", "alice", notes)
    assert verified(sim, doc)
    # Acknowledged once: a second run does nothing.
    code, doc = run(sim, "incident-acknowledgement")
    assert (code, doc["outcome"]) == (11, "BUSINESS_SKIP") and "already acknowledged by alice" in doc["message"]
    assert len(incident_lines(sim)) == 4


def test_acknowledge_without_an_open_incident_skips(sim):
    artifacts(sim)
    code, doc = run(sim, "incident-acknowledgement")
    assert (code, doc["outcome"]) == (11, "BUSINESS_SKIP") and "no incident_open" in doc["message"]
    assert incident_lines(sim) == []


# -- dr-drill ----------------------------------------------------------------------------------
