"""Seed 004 monitoring, model and canary procedures (§1.2, §1.3, §2.3, §3.3, §4, §5.2, §5.3, §6)
on the simulated core's ML world (simcore.worlds: model registry, canary state, model metrics,
drift report, retrain candidate, alert feed, daily reports)."""

from __future__ import annotations

import json
from typing import Any

from tests.runbooks import scenario

SYSTEM = "mlprod"
ALERTS = "core/logs/trading_alerts.jsonl"
status = scenario.status
verified = scenario.verified
HOUR = 3_600_000


def run(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    return scenario.run(sim, SYSTEM, name, *args)


def dry(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    return scenario.dry_run_untouched(sim, SYSTEM, name, *args)


def jsonl(sim: Any, rel: str) -> list[dict[str, Any]]:
    path = sim.root / rel
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def edit_json(sim: Any, rel: str, **changes: Any) -> None:
    path = sim.root / rel
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def canary_state(sim: Any) -> dict[str, Any]:
    return dict(json.loads((sim.root / "core/ops/canary_state.json").read_text()))


# -- §1.2 key metrics --------------------------------------------------------------------------


def test_key_metrics_within_then_warning_and_critical(sim):
    code, doc = dry(sim, "key-metrics")
    assert code == 0
    code, doc = run(sim, "key-metrics")
    assert (code, doc["outcome"]) == (0, "SUCCESS") and "fill_rate=0.97" in doc["message"]
    edit_json(sim, "core/ops/model_metrics.json", fill_rate=0.93, precision=0.49)
    code, doc = run(sim, "key-metrics")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "WARNING FillRateLow fill_rate=0.93" in doc["message"]
    assert "CRITICAL ModelPrecisionLow model_precision=0.49 (threshold 0.5, runbook model-drift)" in doc["message"]
    posted = jsonl(sim, ALERTS)
    assert [a["severity"] for a in posted] == ["warning", "critical"]
    assert verified(sim, doc)


def test_key_metrics_loss_breach_is_critical_under_the_kill_switch(sim):
    sim.simcore("inject", "loss_breach")
    code, doc = run(sim, "key-metrics")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT")  # the kill switch is engaged
    assert "CRITICAL HourlyLossExceeded hourly_pnl_pct_aum=-3.0" in doc["message"]
    assert "CRITICAL DailyLossExceeded" in doc["message"]
    assert any("HourlyLossExceeded" in a["message"] for a in jsonl(sim, ALERTS))  # the alert is risk-off


# -- §1.3 evening checklist --------------------------------------------------------------------


def test_evening_checklist(sim):
    dry(sim, "evening-checklist")
    report = sim.root / "core/reports/daily/daily_report_2026-01-22.md"
    report.unlink()
    code, doc = run(sim, "evening-checklist")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert report.exists() and "canary stage canary_1" in doc["message"]
    assert "SENT=yes" in doc["steps"]["summary"]["result"]["stdout"]
    assert verified(sim, doc)
    # The strategy trades (one fill); with a threshold above its P&L the fill is flagged for review.
    sim.simcore("tick", "--n", "8")
    code, doc = run(sim, "evening-checklist", "--param", "flag_threshold=1000")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "1 flagged trade(s) to review: strat-000001" in doc["message"]


# -- §2.3 model drift --------------------------------------------------------------------------


def test_model_drift_freezes_reviews_and_schedules_a_retrain(sim):
    sim.simcore("inject", "model_drift")
    assert jsonl(sim, ALERTS)[-1]["alertname"] == "ModelDriftDetected_PSI"
    dry(sim, "model-drift")
    code, doc = run(sim, "model-drift")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert json.loads((sim.root / "core/config/online_learning_freeze.json").read_text()) == {"accept_threshold": 0.99}
    assert "ret_5m (psi 0.42" in doc["message"] and "batch retrain scheduled" in doc["message"]
    request = json.loads((sim.root / "core/ops/retrain/retrain_request.json").read_text())
    assert "3 days" in request["reason"]
    assert "MODEL DRIFT" in jsonl(sim, "core/logs/incidents.jsonl")[-1]["message"]
    assert verified(sim, doc)
    # Already frozen, drift not persistent: freeze not rewritten, no retrain.
    (sim.root / "core/ops/retrain/retrain_request.json").unlink()
    edit_json(sim, "core/ops/drift_report.json", consecutive_days_drifting=1)
    code, doc = run(sim, "model-drift")
    assert code == 0 and "keep monitoring" in doc["message"] and "freeze" not in doc["steps"]
    assert not (sim.root / "core/ops/retrain/retrain_request.json").exists()


# -- §3.3 recovery after rollback --------------------------------------------------------------


def test_recovery_after_rollback_shadow_then_authorized_release(sim):
    code, doc = run(sim, "recovery-after-rollback")
    assert (code, doc["outcome"]) == (11, "BUSINESS_SKIP")
    code, doc = run(sim, "emergency-rollback", "--param", "reason=canary drift")
    assert code == 60
    dry(sim, "recovery-after-rollback")
    code, doc = run(sim, "recovery-after-rollback")
    # An action ran (safe_in_halt) while the kill switch is engaged: the engine ends the run ANOMALY_HALT.
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT") and "shadow mode started" in doc["message"]
    assert canary_state(sim)["stage"] == "shadow" and status(sim)["kill_switch"]["engaged"]
    assert doc["steps"]["root_cause"]["status"] == "ok"
    code, doc = run(sim, "recovery-after-rollback")
    assert code == 10 and "< 24 h" in doc["message"]
    # 25 hours of shadow testing.
    state = canary_state(sim)
    edit_json(sim, "core/ops/canary_state.json", stage_started_ms=state["stage_started_ms"] - 25 * HOUR)
    code, doc = run(sim, "recovery-after-rollback")
    assert (code, doc["outcome"]) == (12, "PAUSED") and doc["waiting_for"]["step"] == "authorize"
    code, doc = scenario.approve_and_resume(sim, doc, "authorize")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    st = status(sim)
    assert not st["kill_switch"]["engaged"] and st["safety_mode"] == "ARMED_LIVE"
    assert canary_state(sim)["stage"] == "canary_1"
    assert verified(sim, doc)


def test_recovery_after_rollback_refuses_unhealthy_metrics(sim):
    run(sim, "emergency-rollback")
    sim.simcore("canary", "--start", "shadow")
    state = canary_state(sim)
    edit_json(sim, "core/ops/canary_state.json", stage_started_ms=state["stage_started_ms"] - 25 * HOUR)
    sim.simcore("inject", "slippage_spike")
    code, doc = run(sim, "recovery-after-rollback")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "slippage 3.4x > 1.5x" in doc["message"] and "new alert" in doc["message"]
    assert status(sim)["kill_switch"]["engaged"]


# -- §4 canary progression ---------------------------------------------------------------------


def test_canary_progression_approved(sim):
    dry(sim, "canary-progression")
    code, doc = run(sim, "canary-progression")
    assert (code, doc["outcome"]) == (12, "PAUSED") and doc["waiting_for"]["step"] == "approve_next"
    code, doc = scenario.approve_and_resume(sim, doc, "approve_next")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert canary_state(sim)["stage"] == "canary_2"
    code, doc = run(sim, "canary-progression")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "0.0 of 14 days" in doc["message"]
    assert verified(sim, doc)


def test_canary_acceptance_failure_rolls_back(sim):
    sim.simcore("inject", "canary_breach")
    code, doc = dry(sim, "canary-progression")
    assert code == 60 and doc["steps"]["canary_rollback"]["status"] == "planned"
    code, doc = run(sim, "canary-progression")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    assert "P&L -18.0% off simulated" in doc["message"] and "slippage 1.7x" in doc["message"]
    assert "precision 0.52" in doc["message"]
    assert canary_state(sim)["stage"] == "rolled_back"
    st = status(sim)
    assert st["kill_switch"]["engaged"] and st["safety_mode"] == "HALT"
    active = json.loads((sim.root / "core/models/active/model_info.json").read_text())
    assert active["version"] == "v2.3.1"
    assert verified(sim, doc)


# -- §5.2 batch retrain, §5.3 registry ---------------------------------------------------------


def test_batch_retrain_gates_register_after_sign_off(sim):
    dry(sim, "batch-retrain-gates")
    code, doc = run(sim, "batch-retrain-gates")
    assert (code, doc["outcome"]) == (12, "PAUSED") and doc["waiting_for"]["step"] == "sign_off"
    assert not (sim.root / "core/models/registry/v2.5.0.json").exists()
    code, doc = scenario.approve_and_resume(sim, doc, "sign_off")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    record = json.loads((sim.root / "core/models/registry/v2.5.0.json").read_text())
    assert record["signed_off_by"] == "alice" and record["validation"]["pbo"] == 0.17
    assert verified(sim, doc)


def test_batch_retrain_gates_reject_a_bad_candidate(sim):
    cand = "core/ops/retrain/candidate.json"
    data = json.loads((sim.root / cand).read_text())
    edit_json(sim, cand, validation={**data["validation"], "walk_forward_sharpe": 0.8, "pbo": 0.41})
    code, doc = run(sim, "batch-retrain-gates")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "walk-forward Sharpe 0.8 <= 1.0" in doc["message"] and "PBO 0.41 >= 0.3" in doc["message"]
    edit_json(sim, cand, validation=data["validation"], shadow_started_ms=data["shadow_started_ms"] + 10 * HOUR)
    code, doc = run(sim, "batch-retrain-gates")
    assert code == 10 and "40.0 h in shadow < 48" in doc["message"]


def test_model_registry_check(sim):
    code, doc = dry(sim, "model-registry-check")
    assert code == 0
    code, doc = run(sim, "model-registry-check")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "3 model(s); active v2.4.0" in doc["message"]
    (sim.root / "core/models/registry/v2.3.1.json").unlink()
    code, doc = run(sim, "model-registry-check")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "last known good v2.3.1 not registered" in doc["message"]


# -- §6 post-mortem ----------------------------------------------------------------------------


def test_post_mortem_gate(sim):
    code, doc = run(sim, "post-mortem-gate", "--param", "postmortem=pm.md")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "no post-mortem" in doc["message"]
    from tests.runbooks.test_rebalance_ops import POSTMORTEM

    sim.write("pm.md", POSTMORTEM.format(root="model v2.4.0 overfit").replace("Sizing.", "_(to be written)_"))
    code, doc = run(sim, "post-mortem-gate", "--param", "postmortem=pm.md")
    assert code == 10 and '"Why did it happen?" unanswered' in doc["message"]
    sim.write("pm.md", POSTMORTEM.format(root="model v2.4.0 overfit"))
    dry(sim, "post-mortem-gate", "--param", "postmortem=pm.md")
    code, doc = run(sim, "post-mortem-gate", "--param", "postmortem=pm.md")
    assert code == 12
    code, doc = scenario.approve_and_resume(sim, doc, "sign_off")
    assert (code, doc["outcome"]) == (0, "SUCCESS")
    assert verified(sim, doc)


def test_emergency_rollback_creates_the_ticket_and_pages(sim):
    pages: list[bytes] = []
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            pages.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/pager"
        code, doc = run(sim, "emergency-rollback", "--param", f"pager_url={url}", "--param", "reason=AUTO_KILL_SWITCH")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 60, doc["message"]
    assert len(pages) == 1 and b"ROLLBACK (AUTO_KILL_SWITCH)" in pages[0]
    ticket = json.loads((sim.root / "tickets" / f"ROLLBACK-{doc['run_id']}.json").read_text())
    assert (ticket["status"], ticket["model_from"], ticket["model_to"]) == ("open", "v2.4.0", "v2.3.1")
    assert verified(sim, doc)
