"""Seed 003 (monthly momentum rebalance) runbooks against the simulated core, through the real CLI.

Each scenario injects the matching fault (or none), runs the runbook live and as a dry-run
with profiles/rebalance-sim.yaml, and checks the outcome and exit code, the core's state
afterwards, that the evidence bundle verifies, and that a dry-run leaves core/ byte-identical.
"""

from __future__ import annotations

import json
from typing import Any

from tests.runbooks import scenario

MONTH = ("--param", "month=2026-01")


def run(sim: Any, name: str, *args: str, dry: bool = False) -> tuple[int, dict[str, Any]]:
    """`runbook run NAME` with the rebalance sim profile, no prompts, JSON output."""
    return scenario.run(sim, "rebalance", name, *args, dry=dry)


def dry_run_untouched(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    """Dry-run NAME; assert core/ is byte-identical afterwards and the bundle verifies."""
    return scenario.dry_run_untouched(sim, "rebalance", name, *args)


approve_and_resume = scenario.approve_and_resume
verified = scenario.verified
status = scenario.status


def alerts(sim: Any) -> list[dict[str, Any]]:
    path = sim.root / "core/logs/rebalance_alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- pre-rebalance-checks ----------------------------------------------------------------------


def test_pre_rebalance_checks_go_on_a_healthy_core(sim):
    code, doc = dry_run_untouched(sim, "pre-rebalance-checks")
    assert code == 0, doc["message"]
    code, doc = run(sim, "pre-rebalance-checks")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "GO:" in doc["message"] and "recorded only" in doc["message"]
    baseline = doc["steps"]["config_hash"]["result"]["config_hash"]
    assert verified(sim, doc)
    # The validated baseline pins the config: same hash = go, a changed config = no-go.
    code, doc = run(sim, "pre-rebalance-checks", "--param", f"baseline_config_hash={baseline}",
                    "--param", "skip_clock_check=true")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert doc["steps"]["clock_sync"]["status"] == "skipped"
    cfg = sim.root / "core/config/settings.yaml"
    cfg.write_text(cfg.read_text().replace("max_drawdown_pct: 5.0", "max_drawdown_pct: 9.0"))
    code, doc = run(sim, "pre-rebalance-checks", "--param", f"baseline_config_hash={baseline}")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["config_hash"]["status"] == "failed" and "differs from the validated" in doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_LIVE"  # read-only
    assert verified(sim, doc)


def test_pre_rebalance_checks_no_go_on_stale_data_and_broker_down(sim):
    sim.simcore("inject", "stale_data")
    code, doc = dry_run_untouched(sim, "pre-rebalance-checks")
    assert code == 10
    code, doc = run(sim, "pre-rebalance-checks")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "DEGRADED_DATA" in doc["message"] and "feed_stalled=True" in doc["message"]
    assert verified(sim, doc)
    sim.simcore("inject", "clear")
    sim.simcore("inject", "broker_down")
    code, doc = run(sim, "pre-rebalance-checks", "--param", "max_data_lag_ms=86400000")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "BROKER_DOWN" in doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_LIVE"
    assert verified(sim, doc)


def test_pre_rebalance_checks_no_go_when_the_clock_is_off(sim):
    code, doc = run(sim, "pre-rebalance-checks", "--param",
                    'clock_cmd=["python3", "-c", "import time; print(int(time.time()*1000) + 60000)"]')
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert doc["steps"]["clock_sync"]["status"] == "failed" and "clock not in sync" in doc["message"]


# -- post-open-reconciliation ------------------------------------------------------------------


def test_post_open_reconciliation_clean(sim):
    dry_run_untouched(sim, "post-open-reconciliation")
    code, doc = run(sim, "post-open-reconciliation")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_LIVE"
    assert alerts(sim) == []
    assert verified(sim, doc)


def test_post_open_reconciliation_mismatch_enters_safe_mode_and_notifies(sim):
    sim.simcore("inject", "reconcile_drift")
    code, doc = dry_run_untouched(sim, "post-open-reconciliation")
    assert code == 10 and doc["steps"]["safe_mode"]["status"] == "planned"
    assert status(sim)["safety_mode"] == "ARMED_LIVE" and alerts(sim) == []
    code, doc = run(sim, "post-open-reconciliation")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "RECONCILE_MISMATCH")
    assert "BTCUSDT" in st["safety_reason_message"]
    sent = alerts(sim)
    assert len(sent) == 1 and sent[0]["severity"] == "critical" and "RECONCILE_MISMATCH" in sent[0]["message"]
    assert verified(sim, doc)
    # Already in SAFE MODE: not transitioned again, still notified.
    code, doc = run(sim, "post-open-reconciliation")
    assert code == 10 and "safe_mode" not in doc["steps"]
    assert len(alerts(sim)) == 2 and status(sim)["safety_reason_code"] == "RECONCILE_MISMATCH"


# -- incident-immediate-actions ----------------------------------------------------------------


def test_incident_reconciliation_persists_halt_after_approval(sim):
    sim.simcore("inject", "reconcile_drift")
    dry_run_untouched(sim, "incident-immediate-actions")
    code, doc = run(sim, "incident-immediate-actions")
    assert (code, doc["outcome"]) == (12, "PAUSED"), doc.get("message")
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "INCIDENT_SAFE_MODE")
    assert doc["steps"]["snap_config"]["result"]["config_hash"]
    assert doc["steps"]["snap_positions"]["result"]["broker"]["BTCUSDT"] != 0.05
    code, doc = approve_and_resume(sim, doc, "approve_halt")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("HALT", "RECONCILE_UNRESOLVED")
    assert any("HALT RECONCILE_UNRESOLVED" in a["message"] for a in alerts(sim))
    assert verified(sim, doc)


def test_incident_stale_data_halt_denied_stays_safe(sim):
    sim.simcore("inject", "stale_data")
    code, doc = run(sim, "incident-immediate-actions")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_halt"
    code, doc = approve_and_resume(sim, doc, "approve_halt", deny=True)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_SAFE"
    assert verified(sim, doc)


def test_incident_loss_breach_halts_immediately(sim):
    sim.simcore("inject", "loss_breach")
    dry_run_untouched(sim, "incident-immediate-actions")
    code, doc = run(sim, "incident-immediate-actions")
    # HALT at once; the risk-off flatten waits for a second person (test_rebalance_ops.py)
    assert (code, doc["outcome"]) == (12, "PAUSED"), doc.get("message")
    assert doc["waiting_for"]["step"] == "approve_flatten"
    assert status(sim)["safety_mode"] == "HALT"
    assert doc["steps"]["safe_mode"]["status"] == "skipped"  # already HALT: never downgraded
    assert verified(sim, doc)


def test_incident_broker_down_safe_mode_and_alert(sim):
    sim.simcore("inject", "broker_down")
    code, doc = run(sim, "incident-immediate-actions")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "Broker/API" in doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_SAFE"
    assert any("BROKER_DOWN" in a["message"] for a in alerts(sim))
    assert verified(sim, doc)


def test_incident_on_a_healthy_core_enters_safe_mode_only(sim):
    dry_run_untouched(sim, "incident-immediate-actions", "--param", "incident=scheduler")
    code, doc = run(sim, "incident-immediate-actions", "--param", "incident=scheduler")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "incident class scheduler" in doc["message"]
    assert status(sim)["safety_mode"] == "ARMED_SAFE"
    assert verified(sim, doc)


# -- monthly-rebalance-guard -------------------------------------------------------------------


def ledger(sim: Any) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (sim.root / "core/rebalance/ledger.jsonl").read_text().splitlines()]


def test_monthly_rebalance_guard_runs_once_per_month(sim):
    dry_run_untouched(sim, "monthly-rebalance-guard", *MONTH)
    code, doc = run(sim, "monthly-rebalance-guard", *MONTH)
    assert (code, doc["outcome"]) == (12, "PAUSED")
    assert status(sim)["positions"]["broker"] == {"BTCUSDT": 0.05, "XAUUSD": 0.0}  # nothing sent before the approval
    # The decision record was computed from the bars and persisted with its provenance.
    record = json.loads((sim.root / "core/rebalance/decisions/2026-01.json").read_text())
    provenance = json.loads((sim.root / "core/rebalance/data/provenance.json").read_text())
    assert record["selected"] == "SPY" and record["targets"]["SPY"] == 1.0
    assert all(p["provider"] == "primary" and p["sha256"] == provenance["sha256"] for p in record["prices"].values())
    assert record["config_hash"] and record["code_commit"] and record["decision_ts"]
    plan = json.loads((sim.root / "core/rebalance/plans/2026-01.json").read_text())
    want = int(100_000 // record["prices"]["SPY"]["close"])
    assert plan["orders"] == [{"symbol": "SPY", "side": "buy", "qty": want, "target_qty": want, "held_qty": 0,
                               "ref_price": record["prices"]["SPY"]["close"]}]
    refused = sim.cli("approve", doc["run_id"], "approve_order", "--by", "tester")
    assert refused.code != 0 and "four-eyes" in refused.text
    code, doc = approve_and_resume(sim, doc, "approve_order")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    placed = doc["steps"]["execute"]["result"]["json"]["orders"]
    assert [(o["symbol"], o["side"], o["qty"], o["status"]) for o in placed] == [("SPY", "buy", want, "FILLED")]
    assert placed[0]["client_order_id"] == f"rb-{doc['run_id']}-1"
    positions = status(sim)["positions"]
    assert positions["broker"]["SPY"] == positions["local"]["SPY"] == want
    rows = [x for x in ledger(sim) if x.get("month") == "2026-01"]
    assert [x["type"] for x in rows] == ["decision", "plan", "order", "fill"]
    assert rows[2]["broker_order_id"] == placed[0]["broker_order_id"] and rows[2]["broker_order_id"].startswith("SIM-")
    assert verified(sim, doc)
    # Scheduled again for the same month: skipped, nothing traded twice.
    code, again = run(sim, "monthly-rebalance-guard", *MONTH)
    assert (code, again["outcome"]) == (11, "BUSINESS_SKIP")
    # Forced: the engine lets it run, the rebalance tool refuses a month the ledger already traded.
    code, forced = run(sim, "monthly-rebalance-guard", *MONTH, "--force")
    code, forced = approve_and_resume(sim, forced, "approve_order")
    assert (code, forced["outcome"]) == (50, "INTERNAL_ERROR") and "already executed" in forced["message"]
    assert status(sim)["positions"]["broker"]["SPY"] == want
    assert len([x for x in ledger(sim) if x.get("type") == "order" and x["month"] == "2026-01"]) == 1


def test_monthly_rebalance_next_month_sells_the_old_selection(sim):
    """A month whose selection changed: the plan sells the held asset first, then buys the new one."""
    code, doc = run(sim, "monthly-rebalance-guard", *MONTH)
    code, doc = approve_and_resume(sim, doc, "approve_order")
    assert code == 0, doc["message"]
    held = status(sim)["positions"]["broker"]["SPY"]
    # the next month's bars favour EFA: rewrite the working copy (and its provenance) as a provider would
    bars = sim.root / "core/rebalance/data/daily_bars.csv"
    lines = bars.read_text().splitlines()
    last = lines[-1].split(",")[0]
    out = [lines[0]] + [(f"{d},{s},{float(c) * 3:.2f}" if (d == last and s == "EFA") else f"{d},{s},{c}")
                        for d, s, c in (x.split(",") for x in lines[1:])]
    bars.write_text("\n".join(out) + "\n")
    import hashlib
    prov = sim.root / "core/rebalance/data/provenance.json"
    meta = json.loads(prov.read_text())
    meta["sha256"] = hashlib.sha256(bars.read_bytes()).hexdigest()
    prov.write_text(json.dumps(meta))
    code, doc = run(sim, "monthly-rebalance-guard", "--param", "month=2026-02")
    plan = json.loads((sim.root / "core/rebalance/plans/2026-02.json").read_text())
    assert [(o["side"], o["symbol"]) for o in plan["orders"]] == [("sell", "SPY"), ("buy", "EFA")]
    assert plan["orders"][0]["qty"] == held
    code, doc = approve_and_resume(sim, doc, "approve_order")
    assert code == 0, doc["message"]
    positions = status(sim)["positions"]
    assert positions["broker"]["SPY"] == 0 and positions["broker"]["EFA"] == plan["orders"][1]["qty"]
    assert verified(sim, doc)


def test_monthly_rebalance_guard_no_go_does_not_trade(sim):
    sim.simcore("inject", "broker_down")
    code, doc = run(sim, "monthly-rebalance-guard", *MONTH)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "BROKER_DOWN" in doc["message"]
    assert "order" not in doc["steps"] or doc["steps"]["order"]["status"] != "ok"
    sim.simcore("inject", "clear")
    # A rejected month is not "done": the next run may proceed (to the approval).
    code, doc = run(sim, "monthly-rebalance-guard", *MONTH)
    assert code == 12 and doc["waiting_for"]["step"] == "approve_order"


def test_monthly_rebalance_guard_rejects_a_bad_month(sim):
    res = sim.cli("run", "monthly-rebalance-guard", "--params-file", sim.profile("rebalance"), "--no-input",
                  "--param", "month=2026-13")
    assert res.code == 20 and "month" in res.text
    assert status(sim)["positions"]["broker"]["BTCUSDT"] == 0.05
