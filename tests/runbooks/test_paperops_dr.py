"""Seed 001 weekly DR drill on the simulated core: a real trading process (`simcore trader`)
is stopped and restarted through the CLI; RTO and RPO are measured and recorded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.runbooks import scenario

SYSTEM = "paperops"


@pytest.fixture
def trading(sim: Any) -> Iterator[Any]:
    """The workspace with its trading process running; the process is stopped afterwards."""
    started = sim.simcore("trader", "start", "--interval", "0.2", "--checkpoint-every", "5")
    assert started.code == 0, started.text
    deadline = time.monotonic() + 120  # a bound on the event, not a timing claim: a loaded machine cycles slowly
    while trader(sim).get("persisted_seq") is None:  # the drills compare against a saved state: wait for the first
        assert time.monotonic() < deadline, "the trader never saved its runtime state"
        time.sleep(0.05)
    try:
        yield sim
    finally:
        sim.simcore("trader", "stop")


def trader(sim: Any) -> dict[str, Any]:
    res = sim.simcore("trader", "status")
    assert res.code == 0, res.text
    return dict(json.loads(res.out))


def drill(sim: Any, *args: str) -> tuple[int, dict[str, Any]]:
    code, doc = scenario.run(sim, SYSTEM, "dr-drill", *args)
    assert code == 12 and doc["waiting_for"]["step"] == "approve_drill", doc
    return scenario.approve_and_resume(sim, doc, "approve_drill")


def test_dr_drill_stops_and_restarts_the_process_and_records_rto_and_rpo(trading):
    sim = trading
    pid_before = trader(sim)["pid"]
    code, doc = drill(sim)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    after = trader(sim)
    assert after["running"] and after["pid"] != pid_before  # a new process
    stop = doc["steps"]["stop"]["result"]["json"]
    assert stop["graceful"] and stop["rpo_ms"] == 0  # a graceful stop persists the runtime state
    assert after["restored_seq"] == stop["persisted_seq"] >= 1
    record = json.loads((sim.root / f"results/dr_drills/{doc['run_id']}.json").read_text())
    assert record["detection_time"] <= record["restart_complete_time"] <= record["first_clean_reconciliation_time"]
    assert 0 <= record["rto_measured_s"] <= 900 and record["rpo_measured_ms"] == 0
    assert record["process_pid_before"] == pid_before and record["process_pid_after"] == after["pid"]
    assert json.loads((sim.root / "results/chaos_drill_latest.json").read_text())["status"] == "pass"
    assert scenario.verified(sim, doc)


def test_dr_drill_rpo_missed_when_the_process_is_killed(trading):
    """A stop that loses runtime state (SIGKILL, no final checkpoint) misses an RPO of 0 s."""
    sim = trading
    kill = json.dumps(["simcore", "--root", "core", "trader", "stop", "--kill"])
    code, doc = drill(sim, "--param", f"trader_stop_cmd={kill}", "--param", "rpo_s=0")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "missed the RPO" in doc["message"]
    rpo = doc["steps"]["stop"]["result"]["json"]["rpo_ms"]
    assert rpo > 0
    record = json.loads((sim.root / f"results/dr_drills/{doc['run_id']}.json").read_text())
    assert record["rpo_measured_ms"] == rpo
    assert trader(sim)["running"]  # restarted all the same
    assert scenario.verified(sim, doc)


def test_dr_drill_missing_the_rto(trading):
    code, doc = drill(trading, "--param", "rto_s=0")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "missed the RTO" in doc["message"]
    assert scenario.verified(trading, doc)


def test_dr_drill_needs_a_running_process(sim):
    before = sim.state_hash()
    code, doc = drill(sim)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "not running" in doc["message"]
    assert sim.state_hash() == before


def test_dr_drill_dry_run_leaves_the_process_and_core_alone(sim):
    started = sim.simcore("trader", "start", "--interval", "3600")  # one cycle, then idle: core/ is quiet
    assert started.code == 0, started.text
    try:
        pid = trader(sim)["pid"]
        code, doc = scenario.dry_run_untouched(sim, SYSTEM, "dr-drill")
        assert code == 0 and doc["steps"]["stop"]["status"] == "planned", doc["message"]
        assert trader(sim)["pid"] == pid and trader(sim)["running"]
    finally:
        sim.simcore("trader", "stop")


def test_dr_drill_not_approved_changes_nothing(sim):
    before = sim.state_hash()
    code, doc = scenario.run(sim, SYSTEM, "dr-drill")
    code, doc = scenario.approve_and_resume(sim, doc, "approve_drill", deny=True)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert sim.state_hash() == before
