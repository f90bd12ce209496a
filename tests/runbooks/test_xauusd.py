"""Seed 000 (XAUUSD meta-cycle) runbooks against the simulated core, through the real CLI.

Each scenario injects the matching fault (or none), runs the runbook live and as a dry-run
with profiles/xauusd-sim.yaml, and checks the outcome, the core's state afterwards, the
evidence bundle, and that a dry-run leaves core/ byte-identical.
"""

from __future__ import annotations

import json
import zipfile
from typing import Any

import pytest

from tests.runbooks import scenario

CSV = "core/data/live/XAUUSD_M1_live.csv"


# -- helpers ---------------------------------------------------------------------------------


def run(sim: Any, name: str, *args: str, dry: bool = False) -> tuple[int, dict[str, Any]]:
    """`runbook run NAME` with the xauusd sim profile, no prompts, JSON output."""
    return scenario.run(sim, "xauusd", name, *args, dry=dry)


def dry_run_untouched(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Dry-run NAME; assert core/ is byte-identical afterwards and the bundle verifies."""
    return scenario.dry_run_untouched(sim, "xauusd", name, *args)


approve_and_resume = scenario.approve_and_resume
verified = scenario.verified
status = scenario.status


def ledger(sim: Any) -> list[dict[str, Any]]:
    text = (sim.root / "core/data/meta_states/ledger.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def lock(sim: Any) -> dict[str, Any] | None:
    path = sim.root / "core/data/meta_states/.locks/meta_cycle.lock"
    return json.loads(path.read_text()) if path.exists() else None


def cycle(sim: Any) -> int:
    """One scheduled cycle by hand (builds ledger history)."""
    return sim.simcore("meta-schedule", "--csv", CSV, "--run_once", "1", "--strict", "0").code


def smoke_passes(sim: Any) -> bool:
    res = sim.simcore("prod-smoke-test", "--csv", CSV)
    return res.code == 0 and "STATUS=PASS" in res.out


@pytest.fixture
def xau(sim: Any) -> Any:
    """The sim workspace; a live_lock fault's sleeper process is always cleaned up."""
    yield sim
    sim.simcore("heal", "live_lock")


# -- the library -------------------------------------------------------------------------------


# -- prod-smoke-test (§1 step 1) -----------------------------------------------------------------


@pytest.mark.parametrize("fault, outcome, code", [
    (None, "SUCCESS", 0),
    ("anomaly", "ANOMALY_HALT", 60),
    ("state_corrupt", "STATE_CORRUPT", 30),
    ("data_gap", "DATA_INVALID", 20),
])
def test_prod_smoke_test_classifies_the_failure(xau, fault, outcome, code):
    if fault:
        xau.simcore("inject", fault)
    if fault is None:
        dcode, _ = dry_run_untouched(xau, "prod-smoke-test")
        assert dcode == 0  # the smoke test is only planned in a dry-run
    got, doc = run(xau, "prod-smoke-test")
    assert (got, doc["outcome"]) == (code, outcome), doc["message"]
    if fault:
        assert f"reason={fault}" in doc["message"]
    else:
        assert verified(xau, doc)


# -- daily-start-check (§1) ----------------------------------------------------------------------


def test_daily_start_check_go_on_a_healthy_core(xau):
    dcode, _ = dry_run_untouched(xau, "daily-start-check")
    assert dcode == 0
    code, doc = run(xau, "daily-start-check")
    assert code == 0 and doc["outcome"] == "SUCCESS", doc["message"]
    assert "GO" in doc["message"] and "lock idle" in doc["message"]
    assert doc["steps"]["smoke_log"]["result"]["records"][-1]["status"] == "PASS"
    assert verified(xau, doc)


def test_daily_start_check_active_lock_needs_a_human(xau):
    xau.simcore("inject", "live_lock")
    code, doc = run(xau, "daily-start-check")
    assert code == 12 and doc["waiting_for"]["step"] == "confirm_lock_owner"
    assert str(lock(xau)["pid"]) in doc["waiting_for"]["prompt"]
    code, doc = approve_and_resume(xau, doc, "confirm_lock_owner")
    assert code == 0 and "owner confirmed" in doc["message"]
    assert lock(xau)["active"] == 1  # only confirmed, never touched
    assert verified(xau, doc)


def test_daily_start_check_stale_lock_is_no_go(xau):
    xau.simcore("inject", "stale_lock")
    code, doc = run(xau, "daily-start-check")
    assert code == 10 and "lock-stuck" in doc["message"]
    assert lock(xau)["active"] == 1


def test_daily_start_check_unclean_last_cycle_needs_confirmation(xau):
    xau.simcore("inject", "anomaly")
    assert cycle(xau) == 60  # logs stage_end rc=60
    xau.simcore("heal", "anomaly")  # the state is fine again, the log still shows rc=60
    code, doc = run(xau, "daily-start-check")
    assert code == 12 and doc["waiting_for"]["step"] == "confirm_last_cycle"
    assert "rc=60" in doc["waiting_for"]["prompt"]
    code, doc = approve_and_resume(xau, doc, "confirm_last_cycle", deny=True)
    assert code == 10 and doc["outcome"] == "BUSINESS_REJECT"
    assert verified(xau, doc)


def test_daily_start_check_passes_the_smoke_incident_on(xau):
    xau.simcore("inject", "state_corrupt")
    code, doc = run(xau, "daily-start-check")
    assert code == 30 and doc["outcome"] == "STATE_CORRUPT" and "state-corrupt" in doc["message"]


# -- daily-live-run (§2) -------------------------------------------------------------------------


@pytest.mark.parametrize("fault, args, outcome, code", [
    (None, (), "SUCCESS", 0),
    ("live_lock", ("--param", 'extra_args=["--on_lock_held", "retryable"]'), "BUSINESS_SKIP", 11),
    ("data_gap", (), "DATA_INVALID", 20),
    ("state_corrupt", (), "STATE_CORRUPT", 30),
    ("live_lock", (), "LOCK_TIMEOUT", 40),
    ("anomaly", (), "ANOMALY_HALT", 60),
])
def test_daily_live_run_routes_the_exit_code_taxonomy(xau, fault, args, outcome, code):
    if fault:
        xau.simcore("inject", fault)
    args = ("--param", "preflight=false", *args)
    if fault in (None, "anomaly"):
        dcode, _ = dry_run_untouched(xau, "daily-live-run", *args)
        assert dcode == 0  # the cycle is only planned
    head = ledger(xau)[-1]["sha256"]
    got, doc = run(xau, "daily-live-run", *args)
    assert (got, doc["outcome"]) == (code, outcome), doc["message"]
    assert doc["message"].startswith(f"exit {code} {outcome}")
    assert doc["steps"]["cycle"]["result"]["exit_code"] == code
    if fault in (None, "anomaly"):
        assert verified(xau, doc)
    if code == 0:
        assert ledger(xau)[-1]["sha256"] != head and ledger(xau)[-1]["op"] == "cycle"
        assert lock(xau)["active"] == 0
    else:
        assert ledger(xau)[-1]["sha256"] == head
    if fault == "anomaly":
        assert list((xau.root / "core/data/reports/incidents").glob("*_ANOMALY_HALT.json"))


def test_daily_live_run_preflight_stops_before_the_cycle(xau):
    xau.simcore("inject", "anomaly")
    head = ledger(xau)[-1]["sha256"]
    code, doc = run(xau, "daily-live-run")
    assert code == 60 and "NO-GO" in doc["message"]
    assert doc["steps"]["preflight"]["status"] == "failed" and "cycle" not in doc["steps"]
    assert ledger(xau)[-1]["sha256"] == head
    assert not list((xau.root / "core/data/reports/incidents").glob("*.json"))


# -- weekly-maintenance (§3) ---------------------------------------------------------------------


def test_weekly_maintenance_backs_up_meta_states(xau):
    assert cycle(xau) == 0
    dcode, _ = dry_run_untouched(xau, "weekly-maintenance")
    assert dcode == 0 and not list((xau.root / "core/backups").glob("*.zip"))
    code, doc = run(xau, "weekly-maintenance")
    assert code == 0, doc["message"]
    zips = list((xau.root / "core/backups").glob("meta_states_*_*.zip"))
    assert len(zips) == 1 and str(zips[0]) == doc["steps"]["backup"]["result"]["archive"]
    names = zipfile.ZipFile(zips[0]).namelist()
    assert "core/data/meta_states/ledger.jsonl" in names and "core/data/meta_states/current.json" in names
    assert not any(".locks" in n for n in names)
    assert doc["steps"]["ledger_tail"]["result"]["count"] == 2
    assert verified(xau, doc)


def test_weekly_maintenance_stale_ledger_is_a_finding_after_the_backup(xau):
    code, doc = run(xau, "weekly-maintenance", "--param", "ledger_max_age=0s")
    assert code == 10 and "ledger needs attention" in doc["message"]
    assert list((xau.root / "core/backups").glob("meta_states_*.zip"))


# -- lock-stuck (§4B) ----------------------------------------------------------------------------


def test_lock_stuck_free_lock_needs_nothing(xau):
    code, doc = run(xau, "lock-stuck")
    assert code == 0 and "free" in doc["message"]


def test_lock_stuck_stale_lock_broken_only_after_approval(xau):
    xau.simcore("inject", "stale_lock")
    stale = lock(xau)
    dcode, _ = dry_run_untouched(xau, "lock-stuck")
    assert dcode == 0
    head = ledger(xau)[-1]["sha256"]
    code, doc = run(xau, "lock-stuck")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_break"
    assert lock(xau) == stale  # not broken without approval
    refused = xau.cli("approve", doc["run_id"], "approve_break", "--by", "tester")  # four eyes
    assert refused.code != 0 and lock(xau) == stale
    code, doc = approve_and_resume(xau, doc, "approve_break")
    assert code == 0 and doc["outcome"] == "SUCCESS", doc["message"]
    now = lock(xau)
    assert now["active"] == 0 and now["reason"] == "lock_recovery" and "--force_lock_break 1" in now["cmd"]
    assert ledger(xau)[-1]["prev"] == head and ledger(xau)[-1]["op"] == "cycle"  # exactly one cycle
    assert verified(xau, doc)


def test_lock_stuck_denied_break_leaves_the_lock(xau):
    xau.simcore("inject", "stale_lock")
    stale = lock(xau)
    _, doc = run(xau, "lock-stuck")
    code, doc = approve_and_resume(xau, doc, "approve_break", deny=True)
    assert code == 10 and lock(xau) == stale


def test_lock_stuck_live_owner_escalates_without_touching_state(xau):
    xau.simcore("inject", "live_lock")
    held = lock(xau)
    before = xau.state_hash()
    code, doc = run(xau, "lock-stuck")
    assert code == 60 and doc["outcome"] == "ANOMALY_HALT"
    assert "avoid manual state edits until ownership is clear" in doc["message"]
    assert lock(xau) == held and xau.state_hash() == before
    assert verified(xau, doc)


# -- anomaly-halt (§4A) --------------------------------------------------------------------------


def _anomaly_incident(xau: Any, times: int = 1) -> None:
    assert cycle(xau) == 0
    for _ in range(times):
        xau.simcore("inject", "anomaly")
    assert cycle(xau) == 60  # writes the incident report


def test_anomaly_halt_rolls_back_and_passes(xau):
    _anomaly_incident(xau)
    dcode, _ = dry_run_untouched(xau, "anomaly-halt")
    assert dcode == 0
    code, doc = run(xau, "anomaly-halt")
    assert code == 12 and doc["waiting_for"]["step"] == "stop_scheduler"
    code, doc = approve_and_resume(xau, doc, "stop_scheduler")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_rollback"
    assert "exposure_multiplier=25.0" in doc["waiting_for"]["prompt"]  # the incident's anomaly, reviewed
    assert doc["steps"]["smoke"]["result"]["outcome"] == "ANOMALY_HALT"
    code, doc = approve_and_resume(xau, doc, "approve_rollback")
    assert code == 0 and doc["outcome"] == "SUCCESS", doc["message"]
    assert ledger(xau)[-1]["op"] == "rollback" and ledger(xau)[-1]["reason"] == "anomaly_halt_recovery"
    assert smoke_passes(xau)
    assert verified(xau, doc)


def test_anomaly_halt_still_failing_after_rollback_escalates(xau):
    _anomaly_incident(xau, times=2)  # one step back is still anomalous
    _, doc = run(xau, "anomaly-halt")
    _, doc = approve_and_resume(xau, doc, "stop_scheduler")
    code, doc = approve_and_resume(xau, doc, "approve_rollback")
    assert code == 60 and doc["outcome"] == "ANOMALY_HALT" and "still failing" in doc["message"]
    assert ledger(xau)[-1]["op"] == "rollback" and not smoke_passes(xau)
    assert verified(xau, doc)


def test_anomaly_halt_baseline_passing_needs_no_rollback(xau):
    _anomaly_incident(xau)
    xau.simcore("heal", "anomaly")
    entries = len(ledger(xau))
    _, doc = run(xau, "anomaly-halt")
    code, doc = approve_and_resume(xau, doc, "stop_scheduler")
    assert code == 0 and "without a rollback" in doc["message"]
    assert len(ledger(xau)) == entries and "rollback_plan" not in doc["steps"]


# -- state-corrupt (§4C) -------------------------------------------------------------------------


def test_state_corrupt_freezes_rolls_back_and_rearms(xau):
    assert cycle(xau) == 0 and cycle(xau) == 0
    xau.simcore("inject", "state_corrupt")
    dcode, _ = dry_run_untouched(xau, "state-corrupt")
    assert dcode == 0 and status(xau)["safety_mode"] == "ARMED_LIVE"
    code, doc = run(xau, "state-corrupt")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_rollback"
    st = status(xau)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("HALT", "STATE_CORRUPT")  # writes frozen
    archive = doc["steps"]["keep_artifacts"]["result"]["archive"]
    assert "core/data/meta_states/current.json" in zipfile.ZipFile(archive).namelist()
    assert "rollback_plan dry_run=1 strict=1" in doc["waiting_for"]["prompt"]
    target = ledger(xau)[-2]["sha256"]
    code, doc = approve_and_resume(xau, doc, "approve_rollback")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_resume"
    assert ledger(xau)[-1]["op"] == "rollback" and ledger(xau)[-1]["sha256"] == target
    assert smoke_passes(xau) and status(xau)["safety_mode"] == "HALT"
    code, doc = approve_and_resume(xau, doc, "approve_resume")
    assert code == 0 and doc["outcome"] == "SUCCESS", doc["message"]
    assert status(xau)["safety_mode"] == "ARMED_SAFE"
    assert verified(xau, doc)


def test_state_corrupt_without_history_stays_frozen(xau):
    xau.simcore("inject", "state_corrupt")  # only the genesis snapshot: nothing to roll back to
    code, doc = run(xau, "state-corrupt")
    assert code == 30 and doc["outcome"] == "STATE_CORRUPT" and "not recovered" in doc["message"]
    assert status(xau)["safety_mode"] == "HALT" and len(ledger(xau)) == 1
    assert verified(xau, doc)


# -- rollback (§4D) ------------------------------------------------------------------------------


def test_rollback_by_steps(xau):
    assert cycle(xau) == 0 and cycle(xau) == 0
    target = ledger(xau)[-2]["sha256"]
    dcode, _ = dry_run_untouched(xau, "rollback")
    assert dcode == 0
    code, doc = run(xau, "rollback")
    assert code == 12 and f"to_hash={target}" in doc["waiting_for"]["prompt"]
    assert len(ledger(xau)) == 3  # the dry-run changed nothing
    code, doc = approve_and_resume(xau, doc, "approve_live")
    assert code == 0 and doc["outcome"] == "SUCCESS", doc["message"]
    assert ledger(xau)[-1]["sha256"] == target and ledger(xau)[-1]["reason"] == "manual_rollback"
    assert smoke_passes(xau)
    assert verified(xau, doc)


def test_rollback_to_hash(xau):
    assert cycle(xau) == 0 and cycle(xau) == 0
    genesis = ledger(xau)[0]["sha256"]
    code, doc = run(xau, "rollback", "--param", f"to_hash={genesis[:12]}")
    assert code == 12 and "--to_hash" in " ".join(doc["steps"]["dry_run"]["result"]["argv"])
    code, doc = approve_and_resume(xau, doc, "approve_live")
    assert code == 0 and ledger(xau)[-1]["sha256"] == genesis


def test_rollback_unknown_hash_is_a_strict_failure(xau):
    assert cycle(xau) == 0
    entries = ledger(xau)
    code, doc = run(xau, "rollback", "--param", "to_hash=deadbeefdeadbeef")
    assert code == 30 and doc["outcome"] == "STATE_CORRUPT" and "unknown hash" in doc["message"]
    assert "approve_live" not in doc["steps"] and ledger(xau) == entries
    assert verified(xau, doc)


def test_rollback_smoke_still_failing_after_rollback(xau):
    assert cycle(xau) == 0
    xau.simcore("inject", "data_gap")  # a rollback of the meta state cannot fix the market data
    _, doc = run(xau, "rollback")
    code, doc = approve_and_resume(xau, doc, "approve_live")
    assert code == 60 and "still fails" in doc["message"] and "DATA_INVALID" in doc["message"]
    assert ledger(xau)[-1]["op"] == "rollback"


# -- engine limitation that shaped anomaly-halt / state-corrupt -----------------------------------


def test_call_rollback_resumes_after_the_child_approval(xau):
    assert cycle(xau) == 0 and cycle(xau) == 0
    profile = (xau.root / "p.yaml")
    profile.write_text(open(xau.profile("xauusd")).read())
    xau.runbook("call-rollback", """
        runbook: call-rollback
        title: calls rollback
        version: 1
        source: tests
        params:
          rollback_cmd: {type: array, default: [simcore, --root, core, meta-rollback]}
          smoke_cmd: {type: array, default: [simcore, --root, core, prod-smoke-test]}
          csv: {type: string, default: core/data/live/XAUUSD_M1_live.csv}
        steps:
          - id: rb
            call: rollback
            with: {rollback_cmd: "{{ params.rollback_cmd }}", smoke_cmd: "{{ params.smoke_cmd }}", csv: "{{ params.csv }}"}
          - id: done
            end: SUCCESS
        """)
    res = xau.cli("run", "call-rollback", "--no-input", "--output", "json")
    doc = json.loads(res.out)
    assert res.code == 12 and doc["waiting_for"]["type"] == "call"
    child = doc["waiting_for"]["child_run_id"]
    assert xau.cli("approve", child, "approve_live", "--by", "alice").code == 0
    resumed = xau.cli("resume", doc["run_id"], "--no-input")
    assert resumed.code == 0, resumed.text
