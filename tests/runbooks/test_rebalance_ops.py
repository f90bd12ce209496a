"""Seed 003 cadence and state playbooks (§2 SAFE_MODE / HALT, §4.2 A, §6) on the simulated core.

The core's rebalance world (simcore.worlds: calendar, strategy and baseline, scheduler
heartbeat and jobs, providers, decision records, plans, ledger, snapshots) is driven by
faults; each scenario checks the outcome, the core after, the evidence and that a dry-run
leaves core/ byte-identical.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

from tests.conftest import SIMCORE
from tests.runbooks import scenario

SYSTEM = "rebalance"
status = scenario.status
verified = scenario.verified


def run(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    return scenario.run(sim, SYSTEM, name, *args)


def dry(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    return scenario.dry_run_untouched(sim, SYSTEM, name, *args)


def alerts(sim: Any) -> list[dict[str, Any]]:
    path = sim.root / "core/logs/rebalance_alerts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def mode(sim: Any) -> tuple[str, str]:
    st = status(sim)
    return st["safety_mode"], st["safety_reason_code"]


# -- §6 daily ----------------------------------------------------------------------------------


def test_daily_checks_healthy_then_each_finding(sim):
    code, doc = dry(sim, "rebalance-daily-checks")
    assert code == 0, doc["message"]
    code, doc = run(sim, "rebalance-daily-checks")
    assert (code, doc["outcome"]) == (0, "SUCCESS") and "bars through" in doc["message"]
    assert verified(sim, doc) and alerts(sim) == []
    for fault in ("provider_corrupt", "broker_down", "scheduler_stalled"):
        sim.simcore("inject", fault)
    code, doc = run(sim, "rebalance-daily-checks")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    msg = doc["message"]
    assert "DEGRADED_DATA" in msg and "EEM: missing bars" in msg
    assert "BROKER_DOWN" in msg and "scheduler heartbeat stale" in msg
    assert len(alerts(sim)) == 1 and "BROKER_DOWN" in alerts(sim)[0]["message"]
    assert mode(sim)[0] == "ARMED_LIVE"  # read-only apart from the alert
    assert verified(sim, doc)


# -- §6 weekly ---------------------------------------------------------------------------------


def test_weekly_maintenance_backs_up_and_audits(sim):
    dry(sim, "rebalance-weekly-maintenance", "--param", "dependency_scan=false")
    assert not list((sim.root / "core/backups").glob("rebalance_weekly_*.zip"))
    code, doc = run(sim, "rebalance-weekly-maintenance", "--param", "dependency_scan_cmd=[\"true\"]")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    backups = list((sim.root / "core/backups").glob("rebalance_weekly_*.zip"))
    assert len(backups) == 1 and doc["steps"]["backup"]["result"]["files"] >= 8
    assert doc["steps"]["dependency_scan"]["status"] == "ok"
    assert verified(sim, doc)
    sim.simcore("inject", "reconcile_drift")
    code, doc = run(sim, "rebalance-weekly-maintenance", "--param", "dependency_scan_cmd=[\"false\"]")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "positions drift" in doc["message"] and "dependency scan" in doc["message"]
    assert len(list((sim.root / "core/backups").glob("rebalance_weekly_*.zip"))) == 2  # backup still taken
    assert alerts(sim)[-1]["severity"] == "warning"


# -- §6 monthly --------------------------------------------------------------------------------


def test_monthly_review_replay_and_slippage_bands(sim):
    code, doc = dry(sim, "rebalance-monthly-review")
    assert code == 0, doc["message"]
    code, doc = run(sim, "rebalance-monthly-review")
    assert (code, doc["outcome"]) == (0, "SUCCESS") and "replay matches" in doc["message"]
    assert "2025-12" in doc["message"]
    sim.simcore("inject", "slippage_out_of_band")
    code, doc = run(sim, "rebalance-monthly-review")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "slippage 30.99 bps (band 10.0)" in doc["message"] and "spread 9.5" in doc["message"]
    # A decision record that the stored snapshot does not reproduce.
    dec = sim.root / "core/rebalance/decisions/2025-12.json"
    rec = json.loads(dec.read_text())
    rec["selected"] = "EEM"
    dec.write_text(json.dumps(rec))
    code, doc = run(sim, "rebalance-monthly-review", "--param", "month=2025-12")
    assert code == 10 and "replay MISMATCH" in doc["message"]
    assert verified(sim, doc)


# -- §6 quarterly DR drill ---------------------------------------------------------------------


def test_dr_drill_restores_runs_paper_and_verifies(sim):
    dry(sim, "rebalance-dr-drill")
    assert not (sim.root / "dr_drills").exists()
    before = (sim.root / "core/rebalance/ledger.jsonl").read_bytes()
    code, doc = run(sim, "rebalance-dr-drill")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "idempotent" in doc["message"]
    assert json.loads(doc["steps"]["paper_decide"]["result"]["stdout"])["created"] is False
    assert (sim.root / "core/rebalance/ledger.jsonl").read_bytes() == before  # live system only read
    restored = list((sim.root / "dr_drills").glob("restore-*/core/rebalance/ledger.jsonl"))
    assert len(restored) == 1 and restored[0].read_bytes() == before
    assert verified(sim, doc)


def test_dr_drill_fails_when_the_restored_ledger_does_not_reconcile(sim):
    path = sim.root / "core/rebalance/ledger.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["type"] != "fill"))
    code, doc = run(sim, "rebalance-dr-drill")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "no fill" in doc["message"]


# -- §2 SAFE_MODE exit -------------------------------------------------------------------------


def test_leave_safe_mode_needs_integrity_and_an_approval_token(sim):
    code, doc = run(sim, "leave-safe-mode")
    assert (code, doc["outcome"]) == (11, "BUSINESS_SKIP")  # ARMED_LIVE: nothing to exit
    sim.simcore("inject", "reconcile_drift")
    assert run(sim, "post-open-reconciliation")[0] == 10  # SAFE MODE, RECONCILE_MISMATCH
    assert mode(sim) == ("ARMED_SAFE", "RECONCILE_MISMATCH")
    dry(sim, "leave-safe-mode")
    code, doc = run(sim, "leave-safe-mode")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "reconcile" in doc["message"]
    assert mode(sim)[0] == "ARMED_SAFE"
    sim.simcore("heal", "reconcile_drift")
    code, doc = run(sim, "leave-safe-mode")
    assert (code, doc["outcome"]) == (12, "PAUSED") and doc["waiting_for"]["step"] == "approval_token"
    refused = sim.cli("approve", doc["run_id"], "approval_token", "--by", "tester")
    assert refused.code != 0  # four-eyes: not the operator who started the run
    code, doc = scenario.approve_and_resume(sim, doc, "approval_token")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert mode(sim) == ("ARMED_LIVE", "SAFE_MODE_EXIT")
    assert verified(sim, doc)


def test_leave_safe_mode_refuses_a_config_off_baseline(sim):
    sim.simcore("inject", "broker_down")
    sim.simcore("tick")
    assert mode(sim)[0] == "ARMED_SAFE"
    sim.simcore("heal", "broker_down")
    cfg = sim.root / "core/config/settings.yaml"
    cfg.write_text(cfg.read_text().replace("max_drawdown_pct: 5.0", "max_drawdown_pct: 9.0"))
    code, doc = run(sim, "leave-safe-mode")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "config_hash" in doc["message"]


# -- §2 HALT review, §4.2 D post-mortem --------------------------------------------------------

POSTMORTEM = """\
### Incident Details

| Field | Value |
|-------|-------|
| Date/Time | 2026-01-22 00:00 (UTC) |
| Duration | 40 min |
| Severity | SEV-1 |
| Impact | 3% equity |
| Root Cause | {root} |

### Timeline

| Time (UTC) | Event |
|------------|-------|
| 00:00 | Alert triggered |

### Analysis

**What happened?**

An adverse move.

**Why did it happen?**

Sizing.

**Why wasn't it caught earlier?**

No intraday limit.

### Actions
"""


def test_halt_review_after_a_drawdown_needs_the_post_mortem(sim):
    code, doc = run(sim, "halt-review")
    assert (code, doc["outcome"]) == (11, "BUSINESS_SKIP")
    sim.simcore("inject", "loss_breach")
    assert mode(sim) == ("HALT", "LOSS_LIMIT_BREACH")
    dry(sim, "halt-review", "--param", "postmortem=pm.md")
    code, doc = run(sim, "halt-review", "--param", "postmortem=pm.md")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "postmortem" in doc["message"]
    sim.write("pm.md", POSTMORTEM.format(root="_(to be written)_"))
    code, doc = run(sim, "halt-review", "--param", "postmortem=pm.md")
    assert code == 10 and "Root Cause empty" in json.dumps(doc["steps"]["postmortem"]["result"])
    sim.write("pm.md", POSTMORTEM.format(root="position sizing ignored volatility"))
    code, doc = run(sim, "halt-review", "--param", "postmortem=pm.md")
    assert (code, doc["outcome"]) == (12, "PAUSED"), doc.get("message")
    code, doc = scenario.approve_child_and_resume(sim, doc, "sign_off")  # post-mortem-gate's sign-off
    assert code == 12, doc.get("message")
    code, doc = scenario.approve_and_resume(sim, doc, "approve_review", by="carol")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc.get("message")
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "HALT_REVIEW_COMPLETED")
    assert not st["kill_switch"]["engaged"]
    assert verified(sim, doc)


# -- §4.2 A rebalance job missed ---------------------------------------------------------------


def test_job_missed_before_the_open_recomputes_in_safe_mode(sim):
    code, doc = run(sim, "rebalance-job-missed")
    assert (code, doc["outcome"]) == (0, "SUCCESS") and "no rebalance job missed" in doc["message"]
    sim.simcore("inject", "rebalance_missed")
    code, doc = dry(sim, "rebalance-job-missed")
    assert code == 0 and doc["steps"]["recompute"]["status"] == "planned"
    code, doc = run(sim, "rebalance-job-missed")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert mode(sim) == ("ARMED_SAFE", "REBALANCE_JOB_MISSED")
    month = doc["steps"]["jobs"]["result"]["data"]["due_month"]
    decision = json.loads((sim.root / f"core/rebalance/decisions/{month}.json").read_text())
    assert decision["config_hash"] and decision["code_commit"] and decision["prices"]["SPY"]["provider"] == "primary"
    assert (sim.root / f"core/rebalance/plans/{month}.json").exists()
    assert verified(sim, doc)


def test_job_missed_post_open_halts_without_policy(sim):
    sim.simcore("inject", "rebalance_missed_post_open")
    dry(sim, "rebalance-job-missed")
    code, doc = run(sim, "rebalance-job-missed")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    assert mode(sim) == ("HALT", "REBALANCE_MISSED_POST_OPEN")
    assert "no catch-up policy" in doc["message"]
    assert not list((sim.root / "core/rebalance/decisions").glob("2026-01.json"))


def test_job_missed_with_bad_data_halts_when_unsure(sim):
    sim.simcore("inject", "rebalance_missed")
    sim.simcore("inject", "provider_corrupt")
    code, doc = run(sim, "rebalance-job-missed")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT")
    assert mode(sim) == ("HALT", "REBALANCE_MISSED_UNSURE") and "data QA failed" in doc["message"]


# -- deepened: §3.1 calendar and strategy version, §4.2 C re-fetch, §4.2 D risk-off --------------


def test_pre_rebalance_checks_read_the_calendar_and_strategy_version(sim):
    code, doc = run(sim, "pre-rebalance-checks")
    assert code == 0, doc["message"]
    assert "last trading day of 2026-01 2026-01-30 (full session)" in doc["message"]
    assert "strategy xsmom-2.1.0" in doc["message"]
    strategy = sim.root / "core/rebalance/strategy.json"
    strategy.write_text(json.dumps({**json.loads(strategy.read_text()), "strategy_version": "xsmom-2.2.0-dev"}))
    code, doc = run(sim, "pre-rebalance-checks")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "strategy_version xsmom-2.2.0-dev is not the validated baseline xsmom-2.1.0" in doc["message"]


def test_data_integrity_failure_refetches_from_the_secondary_provider(sim):
    sim.simcore("inject", "provider_corrupt")
    code, doc = dry(sim, "incident-immediate-actions")
    assert code == 0 and doc["steps"]["refetch_primary"]["status"] == "planned"
    code, doc = run(sim, "incident-immediate-actions")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "re-fetched from the secondary provider" in doc["message"]
    assert doc["steps"]["refetch_primary"]["status"] == "failed"
    assert mode(sim) == ("ARMED_SAFE", "INCIDENT_SAFE_MODE")
    prov = json.loads((sim.root / "core/rebalance/data/provenance.json").read_text())
    assert prov["provider"] == "secondary"
    assert verified(sim, doc)


def _core_at(sim: Any, start_ms: int) -> None:
    """Re-create the workspace's core with its clock at start_ms (same seed)."""
    shutil.rmtree(sim.root / "core")
    subprocess.run([SIMCORE, "init", str(sim.root / "core"), "--seed", "7", "--start-ms", str(start_ms)],
                   check=True, capture_output=True, text=True)


def _ledger(sim: Any, kind: str) -> list[dict[str, Any]]:
    lines = (sim.root / "core/rebalance/ledger.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


OPEN_0930_ET = 1_769_092_200_000  # 2026-01-22T14:30:00Z, a Thursday: the next session open


def test_drawdown_halt_cancels_then_flattens_at_the_next_session_open(sim):
    _core_at(sim, OPEN_0930_ET - 20 * 60_000)  # 14:10Z, before the open
    sim.simcore("tick", "--n", "1")  # the strategy places an order
    sim.simcore("inject", "loss_breach")
    held = status(sim)["positions"]["broker"]
    assert held["BTCUSDT"] == 0.05
    code, doc = dry(sim, "incident-immediate-actions")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT") and doc["steps"]["flatten"]["status"] == "planned"
    orders = doc["steps"]["flatten_preview"]["result"]["json"]["plan"]["orders"]
    assert [(o["side"], o["qty"], o["symbol"]) for o in orders] == [("sell", 0.05, "BTCUSDT")]

    code, doc = run(sim, "incident-immediate-actions")
    assert (code, doc["outcome"]) == (12, "PAUSED") and doc["waiting_for"]["step"] == "approve_flatten"
    assert doc["steps"]["risk_off"]["status"] == "ok" and status(sim)["open_orders"] == 0
    plan = doc["steps"]["flatten_plan"]["result"]["json"]["plan"]
    assert (plan["window_utc"], plan["window"]) == ("2026-01-22T14:30:00Z", "next_session_open")
    assert status(sim)["positions"]["broker"]["BTCUSDT"] == 0.05  # nothing sold before the window
    assert len(_ledger(sim, "riskoff_plan")) == 1

    sim.simcore("tick", "--n", "20")  # the session opens
    code, doc = scenario.approve_and_resume(sim, doc, "approve_flatten")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc.get("message")
    assert "positions flat" in doc["message"] and "post-mortem" in doc["message"]
    st = status(sim)
    assert st["safety_mode"] == "HALT" and all(q == 0 for q in st["positions"]["broker"].values())
    cid = f"ro-{doc['run_id']}-1"
    (order,) = _ledger(sim, "riskoff_order")
    (fill,) = _ledger(sim, "riskoff_fill")
    assert order["client_order_id"] == fill["client_order_id"] == cid
    assert order["broker_order_id"] and fill["qty"] == 0.05 and order["side"] == "sell"
    assert verified(sim, doc)

    # never sold twice: placing the same plan again replays the recorded order
    again = sim.simcore("rebalance", "risk-off-execute", "--client-token", doc["run_id"])
    assert again.code == 0 and json.loads(again.out)["orders"][0]["replay"] is True
    assert len(_ledger(sim, "riskoff_order")) == 1 and len(_ledger(sim, "riskoff_fill")) == 1
    assert all(q == 0 for q in status(sim)["positions"]["broker"].values())


def test_drawdown_flatten_denied_holds_positions_in_halt(sim):
    sim.simcore("inject", "loss_breach")
    code, doc = run(sim, "incident-immediate-actions")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_flatten"
    code, doc = scenario.approve_and_resume(sim, doc, "approve_flatten", deny=True)
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT") and "not approved" in doc["message"]
    st = status(sim)
    assert st["safety_mode"] == "HALT" and st["positions"]["broker"]["BTCUSDT"] == 0.05
    assert _ledger(sim, "riskoff_order") == []
    assert verified(sim, doc)


def test_broker_down_on_the_rebalance_day_halts_after_the_retry_policy(sim):
    cal = sim.root / "core/rebalance/calendar.json"
    data = json.loads(cal.read_text())
    data["last_trading_day"]["2026-01"] = "2026-01-22"  # today is the rebalance close
    cal.write_text(json.dumps(data))
    sim.simcore("inject", "broker_down")
    code, doc = run(sim, "incident-immediate-actions")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    assert doc["steps"]["broker_retry"]["status"] == "failed"
    assert mode(sim) == ("HALT", "BROKER_DOWN_WINDOW")
    assert "HALT BROKER_DOWN_WINDOW" in alerts(sim)[-1]["message"]
