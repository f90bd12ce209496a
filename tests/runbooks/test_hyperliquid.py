"""Seed 002 (Hyperliquid copy-trader) runbooks against the simulated core, through the real CLI.

Each scenario injects the matching fault (or none), runs the runbook live and as a dry-run
with profiles/hyperliquid-sim.yaml, and checks the outcome and exit code, the core's state
afterwards, that the evidence bundle verifies, and that a dry-run leaves core/ byte-identical.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runbooks import scenario

SIMCORE = str(Path(sys.executable).with_name("simcore"))
ENV = {"BINANCE_API_KEY": "dummy-key", "BINANCE_API_SECRET": "dummy-secret", "HYPERLIQUID_TARGET_WALLET": "0xdummy"}


# -- helpers ---------------------------------------------------------------------------------


def run(sim: Any, name: str, *args: str, dry: bool = False, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """`runbook run NAME` with the hyperliquid sim profile, no prompts, JSON output."""
    return scenario.run(sim, "hyperliquid", name, *args, dry=dry, env=ENV if env is None else env)


def approve_and_resume(sim: Any, doc: dict[str, Any], step: str, by: str = "alice",
                       deny: bool = False) -> tuple[int, dict[str, Any]]:
    """The run is paused at `step`: approve (or deny) it as `by`, then resume."""
    return scenario.approve_and_resume(sim, doc, step, by, deny, env=ENV)


def dry_run_untouched(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Dry-run NAME; assert core/ is byte-identical afterwards and the bundle verifies."""
    return scenario.dry_run_untouched(sim, "hyperliquid", name, *args, env=ENV)


verified = scenario.verified
status = scenario.status


def query(sim: Any, sql: str, *params: Any, db: str = "core/state/core.db") -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{sim.root / db}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def audit_count(sim: Any) -> int:
    return query(sim, "select count(*) from audit_log")[0][0]


steps_status = scenario.steps_status


# -- the library -------------------------------------------------------------------------------



# -- startup-preflight -------------------------------------------------------------------------


def test_startup_preflight_passes_on_a_healthy_core(sim):
    code, doc = dry_run_untouched(sim, "startup-preflight")
    assert code == 0, doc["message"]
    code, doc = run(sim, "startup-preflight")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "config_hash=" in doc["message"] and "schema_version 3" in doc["message"]
    assert verified(sim, doc)
    bundle = (Path(doc["evidence_dir"]) / "events.jsonl").read_text()
    assert "dummy-key" not in bundle and "dummy-secret" not in bundle  # env values never recorded


def test_startup_preflight_rejects_missing_env_and_schema_mismatch(sim):
    code, doc = run(sim, "startup-preflight", env={"BINANCE_API_KEY": "k"})
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["env_vars"]["status"] == "failed"
    sim.simcore("inject", "schema_mismatch")
    code, doc = run(sim, "startup-preflight")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["preflight"]["status"] == "failed"
    assert "SCHEMA_VERSION_MISMATCH" in doc["steps"]["preflight"]["result"]["stdout"]
    assert verified(sim, doc)


# -- post-start-checks -------------------------------------------------------------------------


def test_post_start_checks_ok_then_halt(sim):
    dry_run_untouched(sim, "post-start-checks")
    code, doc = run(sim, "post-start-checks")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "safety_mode=ARMED_LIVE" in doc["message"] and "last_processed_event_key=" in doc["message"]
    sim.simcore("inject", "backfill_window_exceeded")
    code, doc = run(sim, "post-start-checks")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT")
    assert "BACKFILL_WINDOW_EXCEEDED" in doc["message"] and "entered-halt" in doc["message"]
    assert verified(sim, doc)


# -- ops-validation-bundle ---------------------------------------------------------------------


def test_ops_validation_bundle_writes_the_evidence_file(sim):
    out = sim.root / "docs/ops_validation_run.txt"
    code, _ = dry_run_untouched(sim, "ops-validation-bundle")
    assert code == 0 and not out.exists()
    code, doc = run(sim, "ops-validation-bundle")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    text = out.read_text()
    assert "preflight_ok" in text and "poststart_ok" in text and "result=ok" in text
    assert verified(sim, doc)


def test_ops_validation_bundle_rejects_a_halted_core(sim):
    sim.simcore("inject", "backfill_window_exceeded")
    code, doc = run(sim, "ops-validation-bundle")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "do not continue to live validation" in doc["message"]
    assert "result=failed" in (sim.root / "docs/ops_validation_run.txt").read_text()


# -- go-no-go ----------------------------------------------------------------------------------


def test_go_no_go_goes_after_the_review(sim):
    code, doc = dry_run_untouched(sim, "go-no-go")
    assert code == 0 and doc["steps"]["review"]["status"] == "planned"
    code, doc = run(sim, "go-no-go")
    assert code == 12 and doc["waiting_for"]["step"] == "review"
    code, doc = approve_and_resume(sim, doc, "review")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert doc["message"].startswith("GO for live")
    assert verified(sim, doc)


def test_go_no_go_denied_review_is_no_go(sim):
    code, doc = run(sim, "go-no-go")
    code, doc = approve_and_resume(sim, doc, "review", deny=True)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "not reviewed" in doc["message"]


@pytest.mark.parametrize("fault, says", [
    ("schema_mismatch", "rebuild the DB before live use"),
    ("retry_budget", "rollback trigger active"),
])
def test_go_no_go_is_no_go_on_old_schema_or_a_rollback_trigger(sim, fault, says):
    sim.simcore("inject", fault)
    code, _ = dry_run_untouched(sim, "go-no-go")
    assert code == 10
    code, doc = run(sim, "go-no-go")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["message"].startswith("NO-GO") and says in doc["message"], doc["message"]
    assert verified(sim, doc)


# -- reduce-only-minimal-validation (both adapters) ---------------------------------------------


@pytest.fixture(params=["sim", "http"])
def adapter(request, sim):
    """The workspace wired to the sim adapter, or to `simcore serve` over HTTP."""
    if request.param == "sim":
        yield sim
        return
    port_file = sim.root / "port"
    proc = subprocess.Popen([SIMCORE, "--root", str(sim.root / "core"), "serve", "--port", "0",
                             "--port-file", str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not (port_file.exists() and port_file.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None, "simcore serve did not start"
            time.sleep(0.05)
        sim.configure(core_url=f"http://127.0.0.1:{port_file.read_text().strip()}")
        yield sim
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reduce_only_minimal_validation_fills_after_four_eyes(adapter):
    sim = adapter
    before_audit = audit_count(sim)
    code, doc = dry_run_untouched(sim, "reduce-only-minimal-validation")
    assert code == 0 and doc["steps"]["order"]["status"] == "planned"
    code, doc = run(sim, "reduce-only-minimal-validation")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_order"
    refused = sim.cli("approve", doc["run_id"], "approve_order", "--by", "tester")  # four eyes
    assert refused.code != 0
    code, doc = approve_and_resume(sim, doc, "approve_order")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    order = doc["steps"]["order"]["result"]
    assert order["status"] == "FILLED" and order["exchange_order_id"] and order["side"] == "sell"
    rows = query(sim, "select status, exchange_order_id from order_results where client_order_id=?",
                 order["client_order_id"])
    assert rows == [("FILLED", order["exchange_order_id"])]
    st = status(sim)
    assert st["safety_mode"] == "ARMED_LIVE" and st["positions"]["local"]["BTCUSDT"] < 0.05
    assert audit_count(sim) > before_audit
    closeout = (sim.root / "docs/ops_validation_run.txt").read_text()
    assert f"=== reduce_only_minimal_validation {doc['run_id']}" in closeout and order["exchange_order_id"] in closeout
    assert "Epic 3 acceptance" in (sim.root / "docs/ROADMAP.md").read_text()
    assert verified(sim, doc)


def test_reduce_only_minimal_validation_without_position_sends_nothing(sim):
    code, doc = run(sim, "reduce-only-minimal-validation", "--param", "symbol=XAUUSD")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "no position in XAUUSD" in doc["message"]
    assert query(sim, "select count(*) from order_results")[0][0] == 0


# -- entered-armed-safe ------------------------------------------------------------------------


def test_entered_armed_safe_gap_related_reads_cursor_lag(sim):
    sim.simcore("inject", "stale_data")
    sim.simcore("tick")
    assert status(sim)["safety_reason_code"] == "DATA_STALE"
    dry_run_untouched(sim, "entered-armed-safe")
    code, doc = run(sim, "entered-armed-safe")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert steps_status(doc)["cursor_lag"] == "ok" and "cursor lag" in doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_SAFE"  # triage changes nothing
    assert verified(sim, doc)


def test_entered_armed_safe_drift_related_inspects_reconciliation(sim):
    res = sim.simcore("reset-safety", "--config", "core/config/settings.yaml", "--schema", "core/config/schema.json",
                      "--mode", "ARMED_SAFE", "--reason-code", "RECONCILE_DRIFT", "--reason-message", "drift",
                      "--allow-non-halt")
    assert res.code == 0, res.text
    sim.simcore("inject", "reconcile_drift")
    code, doc = run(sim, "entered-armed-safe")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "BTCUSDT" in doc["message"]
    assert doc["steps"]["reconcile"]["result"]["drift"]
    code, doc = run(sim, "entered-armed-safe", dry=True)
    assert code == 10


def test_entered_armed_safe_skips_when_live(sim):
    code, doc = run(sim, "entered-armed-safe")
    assert (code, doc["outcome"]) == (11, "BUSINESS_SKIP")


# -- entered-halt (both adapters) --------------------------------------------------------------


def test_entered_halt_recovers_and_promotes_only_with_approvals(adapter):
    sim = adapter
    sim.simcore("inject", "reconcile_drift")
    sim.simcore("tick")
    assert (status(sim)["safety_mode"], status(sim)["safety_reason_code"]) == ("HALT", "RECONCILE_CRITICAL")
    code, doc = run(sim, "entered-halt")  # drift still there: stays HALT
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT") and "root cause not fixed" in doc["message"]
    assert doc["steps"]["stop_trading"]["status"] == "ok"
    sim.simcore("heal", "reconcile_drift")
    code, doc = dry_run_untouched(sim, "entered-halt")
    assert code == 0 and doc["steps"]["promote"]["status"] == "planned"
    code, doc = run(sim, "entered-halt")
    code, doc = approve_and_resume(sim, doc, "approve_recovery")
    assert code == 12 and status(sim)["safety_mode"] == "ARMED_SAFE"
    code, doc = approve_and_resume(sim, doc, "approve_promotion")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_LIVE", "MANUAL_PROMOTE")
    assert query(sim, "select to_value, reason_code from audit_log where category='safety' order by id desc limit 2") == [
        ("ARMED_LIVE", "MANUAL_PROMOTE"), ("ARMED_SAFE", "HALT_RECOVERED")]
    assert verified(sim, doc)


def test_entered_halt_backfill_goes_the_maintenance_skip_path(sim):
    sim.simcore("inject", "backfill_window_exceeded")
    code, doc = run(sim, "entered-halt")
    code, doc = approve_and_resume(sim, doc, "approve_maintenance_skip")
    assert doc["steps"]["maintenance_skip"]["result"]["outcome"] == "SUCCESS", doc
    assert status(sim)["safety_reason_code"] == "MAINTENANCE_SKIP_APPLIED"
    code, doc = approve_and_resume(sim, doc, "approve_promotion", deny=True)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert status(sim)["safety_mode"] == "ARMED_SAFE"  # no promotion without approval


def test_entered_halt_schema_mismatch_needs_a_rebuild(sim):
    sim.simcore("inject", "schema_mismatch")
    sim.simcore("tick")
    code, doc = run(sim, "entered-halt")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT") and "schema-rebuild" in doc["message"]


# -- retry-budget-exceeded / order-state-recovery ------------------------------------------------


def test_retry_budget_exceeded_waits_for_the_exchange_then_promotes(sim):
    sim.simcore("inject", "retry_budget")
    assert status(sim)["safety_reason_code"] == "EXECUTION_RETRY_BUDGET_EXCEEDED"
    code, doc = run(sim, "retry-budget-exceeded")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "RATE_LIMITED" in doc["message"]
    sim.simcore("heal", "retry_budget")
    code, _ = dry_run_untouched(sim, "retry-budget-exceeded")
    assert code == 0
    code, doc = run(sim, "retry-budget-exceeded")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_promotion"
    assert query(sim, "select status, error_code from order_results") == [("EXPIRED", "NOT_FOUND_ON_EXCHANGE")]
    code, doc = approve_and_resume(sim, doc, "approve_promotion")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_LIVE", "MANUAL_PROMOTE")
    assert verified(sim, doc)


def test_order_state_recovery_escalates_when_the_exchange_cannot_answer(sim):
    code, doc = run(sim, "order-state-recovery")
    assert (code, doc["message"]) == (0, "no UNKNOWN orders")
    sim.simcore("inject", "retry_budget")
    dry_run_untouched(sim, "order-state-recovery")
    code, doc = run(sim, "order-state-recovery")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert query(sim, "select status from order_results") == [("UNKNOWN",)]
    sim.simcore("heal", "retry_budget")
    before = audit_count(sim)
    code, doc = run(sim, "order-state-recovery")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert query(sim, "select status from order_results") == [("EXPIRED",)]
    assert audit_count(sim) == before + 1
    assert verified(sim, doc)


# -- long-downtime-recovery --------------------------------------------------------------------


def test_long_downtime_recovery_applies_and_reverts_the_maintenance_skip(sim):
    sim.simcore("inject", "backfill_window_exceeded")
    settings = (sim.root / "core/config/settings.yaml").read_bytes()
    cursor = status(sim)["last_processed_timestamp_ms"]
    code, _ = dry_run_untouched(sim, "long-downtime-recovery")
    assert code == 0
    code, doc = run(sim, "long-downtime-recovery")
    assert code == 12 and doc["waiting_for"]["step"] == "operator_present"
    code, doc = approve_and_resume(sim, doc, "operator_present")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "MAINTENANCE_SKIP_APPLIED")
    assert st["last_processed_timestamp_ms"] > cursor and st["maintenance_skip_applied_ms"]
    assert query(sim, "select count(*) from audit_log where reason_code='MAINTENANCE_SKIP'")[0][0] == 1
    assert (sim.root / "core/config/settings.yaml").read_bytes() == settings  # toggle reverted
    assert "MAINTENANCE_SKIP" in (sim.root / "docs/ops_validation_run.txt").read_text()
    assert verified(sim, doc)


def test_long_downtime_recovery_restores_the_config_when_verification_fails(sim):
    # HALT for the gap, but the "restart" does nothing: the cursor never moves -> verify fails.
    sim.simcore("inject", "backfill_window_exceeded")
    settings = (sim.root / "core/config/settings.yaml").read_bytes()
    code, doc = run(sim, "long-downtime-recovery", "--param", 'restart_dry_run_cmd=["true"]')
    code, doc = approve_and_resume(sim, doc, "operator_present")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["verify_state"]["status"] == "failed"
    assert (sim.root / "core/config/settings.yaml").read_bytes() == settings  # rollback restored it


def test_long_downtime_recovery_refuses_other_halts(sim):
    sim.simcore("inject", "reconcile_drift")
    sim.simcore("tick")
    code, doc = run(sim, "long-downtime-recovery")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "gap-related" in doc["message"]


# -- cursor-recovery ---------------------------------------------------------------------------


def test_cursor_recovery_consistent_then_missing_row(sim):
    dry_run_untouched(sim, "cursor-recovery")
    code, doc = run(sim, "cursor-recovery")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    key = status(sim)["last_processed_event_key"]
    assert doc["steps"]["expected_cursor"]["result"]["scalar"] == status(sim)["last_processed_event_key"]
    code, doc = run(sim, "cursor-recovery", "--param", "expected_event_key=XAUUSD:M1:0")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    conn = sqlite3.connect(sim.root / "core/state/core.db")
    with conn:
        conn.execute("delete from processed_txs where event_key=?", (key,))
    conn.close()
    code, doc = run(sim, "cursor-recovery")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "backfill-only" in doc["message"]
    assert verified(sim, doc)


# -- backups -----------------------------------------------------------------------------------


def test_backups_writes_a_readable_copy_once_a_day(sim):
    code, _ = dry_run_untouched(sim, "backups")
    assert code == 0 and not list((sim.root / "core/backups").glob("backup-*.db"))
    code, doc = run(sim, "backups")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    copies = list((sim.root / "core/backups").glob("backup-*.db"))
    assert len(copies) == 1 and len(copies[0].name) == len("backup-20260122-2330.db")
    assert query(sim, "select value from system_state where key='schema_version'",
                 db=str(copies[0].relative_to(sim.root))) == [("3",)]
    assert verified(sim, doc)
    code, doc = run(sim, "backups")
    assert (code, doc["outcome"]) == (11, "BUSINESS_SKIP")


# -- schema-rebuild ----------------------------------------------------------------------------


def test_schema_rebuild_after_mismatch(sim):
    sim.simcore("inject", "schema_mismatch")
    code, _ = dry_run_untouched(sim, "schema-rebuild")
    assert code == 0
    code, doc = run(sim, "schema-rebuild")
    assert code == 12 and doc["waiting_for"]["step"] == "authorize"
    code, doc = approve_and_resume(sim, doc, "authorize")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert query(sim, "select value from system_state where key='schema_version'") == [("3",)]
    assert query(sim, "select count(*) from order_results")[0][0] == 0
    backups = list((sim.root / "core/state").glob("core.db.bak-*"))
    assert len(backups) == 1
    old = query(sim, "select key, value from system_state where key in ('schema_version','safety_mode') order by key",
                db=str(backups[0].relative_to(sim.root)))
    assert old == [("safety_mode", "HALT"), ("schema_version", "2")]  # stopped, then backed up
    assert verified(sim, doc)


def test_schema_rebuild_denied_changes_nothing(sim):
    before = sim.state_hash()
    code, doc = run(sim, "schema-rebuild")
    code, doc = approve_and_resume(sim, doc, "authorize", deny=True)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert sim.state_hash() == before


def test_go_no_go_needs_the_strategy_version_and_passing_integration_tests(sim):
    plan = sim.root / "core/docs/TEST_PLAN.md"
    plan.write_text(plan.read_text() + "| 2026-01-21 | integration: execution adapter | FAIL |\n")
    code, doc = run(sim, "go-no-go")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "integration tests" in doc["message"]
    (sim.root / "core/docs/modules/DECISION.md").write_text("# Decision module\n")
    code, doc = run(sim, "go-no-go")
    assert code == 10 and "decision strategy version" in doc["message"]
