"""Seed 004 (ML-driven production trading) runbooks against the simulated core, through the real CLI.

Each scenario injects the matching fault (or none), runs the runbook live and as a dry-run
with profiles/mlprod-sim.yaml, and checks the outcome and exit code, the core's state
afterwards, that the evidence bundle verifies, and that a dry-run leaves core/ byte-identical.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.runbooks import scenario

REPO = Path(__file__).resolve().parents[2]
OVERRIDE = "core/config/position_override.json"
ALERTS = "core/logs/trading_alerts.jsonl"
INCIDENTS = "core/logs/incidents.jsonl"


def run(sim: Any, name: str, *args: str, dry: bool = False) -> tuple[int, dict[str, Any]]:
    return scenario.run(sim, "mlprod", name, *args, dry=dry)


def dry_run_untouched(sim: Any, name: str, *args: str) -> tuple[int, dict[str, Any]]:
    return scenario.dry_run_untouched(sim, "mlprod", name, *args)


approve_and_resume = scenario.approve_and_resume
verified = scenario.verified
status = scenario.status


steps_status = scenario.steps_status


def incidents(sim: Any) -> list[dict[str, Any]]:
    path = sim.root / INCIDENTS
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_alerts(sim: Any, *alerts: dict[str, str]) -> None:
    sim.write(ALERTS, "".join(json.dumps(a) + "\n" for a in alerts))


# -- the library -------------------------------------------------------------------------------


# -- loss-limit-breach -------------------------------------------------------------------------


def test_loss_limit_breach_auto_triggered_resolves_only_after_four_eyes(sim):
    sim.simcore("inject", "loss_breach")
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"], st["kill_switch"]["engaged"]) == (
        "HALT", "LOSS_LIMIT_BREACH", True)
    code, doc = dry_run_untouched(sim, "loss-limit-breach")
    # the dry-run plans the release, so the switch is still engaged when it reaches `resume`
    assert code == 60 and doc["steps"]["release"]["status"] == "planned"
    code, doc = run(sim, "loss-limit-breach")
    assert code == 12 and doc["waiting_for"]["step"] == "approve_release"
    steps = steps_status(doc)
    assert steps["kill_switch_active"] == "ok" and "engage" not in steps  # auto-activated
    assert steps["cancel_orders"] == "ok" and steps["findings"] == "ok"
    notes = incidents(sim)
    assert [n["step"] for n in notes] == ["acknowledge", "findings"]
    assert "LOSS_LIMIT_BREACH" in notes[1]["message"] and "auto-activated" in notes[1]["message"]
    assert status(sim)["kill_switch"]["engaged"] and not (sim.root / OVERRIDE).exists()
    refused = sim.cli("approve", doc["run_id"], "approve_release", "--by", "tester")  # four eyes
    assert refused.code != 0
    code, doc = approve_and_resume(sim, doc, "approve_release")
    # The run met the engaged kill switch and released it itself (after four eyes): SUCCESS.
    assert (doc["outcome"], code) == ("SUCCESS", 0), doc
    assert doc["steps"]["resolved"]["status"] == "ok" and "loss limit breach resolved" in doc["message"]
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "LOSS_LIMIT_RESOLVED")
    assert not st["kill_switch"]["engaged"] and not (sim.root / "core/KILL_SWITCH").exists()
    assert json.loads((sim.root / OVERRIDE).read_text())["position_size_fraction"] == 0.1
    assert verified(sim, doc)


def test_loss_limit_breach_engages_the_switch_when_not_auto_activated_and_denial_keeps_it(sim):
    assert not status(sim)["kill_switch"]["engaged"]
    code, doc = dry_run_untouched(sim, "loss-limit-breach")
    assert doc["steps"]["engage"]["status"] == "planned"
    code, doc = run(sim, "loss-limit-breach")
    assert code == 12 and doc["steps"]["kill_switch_active"]["status"] == "failed"
    assert doc["steps"]["engage"]["status"] == "ok"
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("HALT", "KILL_SWITCH_ENGAGED")
    assert st["kill_switch"]["payload"]["reason"] == "Loss limit breach"
    code, doc = approve_and_resume(sim, doc, "approve_release", deny=True)
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT") and "release not approved" in doc["message"]
    st = status(sim)
    assert st["safety_mode"] == "HALT" and st["kill_switch"]["engaged"]
    assert not (sim.root / OVERRIDE).exists()
    assert verified(sim, doc)


# -- morning-checklist -------------------------------------------------------------------------


class _Monitoring(BaseHTTPRequestHandler):
    """Prometheus /-/healthy and Grafana /api/health; `grafana_status` decides Grafana's answer."""

    grafana_status = 200

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        if self.path == "/-/healthy":
            code, body, ctype = 200, b"Prometheus Server is Healthy.\n", "text/plain"
        elif self.path == "/api/health":
            code, ctype = self.grafana_status, "application/json"
            body = json.dumps({"database": "ok" if code == 200 else "failing", "version": "10.4.0"}).encode()
        else:
            code, body, ctype = 404, b"not found\n", "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def monitoring() -> Iterator[tuple[str, type[_Monitoring]]]:
    """Prometheus and Grafana health endpoints on one local port (bound before the first request)."""
    handler = type("Monitoring", (_Monitoring,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def monitoring_params(url: str) -> tuple[str, ...]:
    return ("--param", "check_monitoring=true", "--param", f"prometheus_health_url={url}/-/healthy",
            "--param", f"grafana_health_url={url}/api/health")


def test_morning_checklist_all_clear_with_monitoring(sim, monitoring):
    url, _ = monitoring
    write_alerts(sim, {"alertname": "HourlyPnLWarning", "severity": "warning"})
    code, doc = dry_run_untouched(sim, "morning-checklist", *monitoring_params(url))
    assert code == 0
    code, doc = run(sim, "morning-checklist", *monitoring_params(url))
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert steps_status(doc)["prometheus"] == "ok" and steps_status(doc)["grafana"] == "ok"
    assert "ARMED_LIVE" in doc["message"] and "monitoring healthy" in doc["message"]
    assert verified(sim, doc)


def test_morning_checklist_lists_every_finding(sim, monitoring):
    url, handler = monitoring
    handler.grafana_status = 503
    write_alerts(sim, {"alertname": "HourlyLossExceeded", "severity": "critical"},
                 {"alertname": "FillRateLow", "severity": "warning"})
    sim.simcore("inject", "loss_breach")
    before = sim.state_hash()
    code, doc = run(sim, "morning-checklist", *monitoring_params(url))
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    msg = doc["message"]
    assert "HALT LOSS_LIMIT_BREACH" in msg and "kill switch ENGAGED" in msg and "loss-limit-breach" in msg
    assert "Grafana unhealthy (503)" in msg and "Prometheus" not in msg
    assert "1 critical alert(s): HourlyLossExceeded" in msg
    assert sim.state_hash() == before  # a checklist changes nothing
    assert verified(sim, doc)


def test_morning_checklist_without_monitoring_or_alert_log(sim):
    code, doc = run(sim, "morning-checklist")  # profile: check_monitoring false; a fresh core is healthy
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "monitoring not checked" in doc["message"] and "daily report 2026-01-22" in doc["message"]
    assert "safety_mode: ARMED_LIVE" in doc["steps"]["daily_report"]["result"]["stdout"]
    (sim.root / ALERTS).unlink()
    (sim.root / "core/reports/daily/daily_report_2026-01-22.md").unlink()
    code, doc = run(sim, "morning-checklist")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert steps_status(doc)["prometheus"] == "skipped" and "alert log unreadable" in doc["message"]
    assert "daily report missing" in doc["message"]


# -- slippage-spike ----------------------------------------------------------------------------


def test_slippage_spike_reduces_sizes_and_notifies(sim):
    code, doc = dry_run_untouched(sim, "slippage-spike")
    assert code == 0 and doc["steps"]["reduce_sizes"]["status"] == "planned"
    code, doc = run(sim, "slippage-spike")
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert json.loads((sim.root / OVERRIDE).read_text()) == {"max_position_pct": 0.005}
    notes = incidents(sim)
    assert len(notes) == 1 and notes[0]["severity"] == "critical" and "Almgren-Chriss" in notes[0]["message"]
    assert status(sim)["safety_mode"] == "ARMED_LIVE"
    assert verified(sim, doc)


def test_slippage_spike_exchange_down_keeps_the_reduced_sizes(sim):
    sim.simcore("inject", "broker_down")
    code, doc = run(sim, "slippage-spike")
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "exchange is unreachable" in doc["message"]
    assert json.loads((sim.root / OVERRIDE).read_text()) == {"max_position_pct": 0.005}
    assert "UNREACHABLE" in incidents(sim)[0]["message"]
    assert verified(sim, doc)


def test_slippage_spike_rolls_the_override_back_when_a_later_step_fails(sim):
    previous = '{"max_position_pct": 0.02}'
    sim.write(OVERRIDE, previous)
    # the notification cannot be written (its directory is a file): unhandled failure -> rollback
    bad = ("--param", "incident_log=core/config/settings.yaml/incidents.jsonl")
    code, doc = run(sim, "slippage-spike", *bad)
    assert (code, doc["outcome"]) == (50, "INTERNAL_ERROR")
    assert doc["steps"]["reduce_sizes"]["status"] == "ok" and doc["steps"]["restore_override"]["status"] == "ok"
    assert (sim.root / OVERRIDE).read_text() == previous
    (sim.root / OVERRIDE).unlink()
    code, doc = run(sim, "slippage-spike", *bad)
    assert code == 50 and not (sim.root / OVERRIDE).exists()  # there was none: removed again
    assert verified(sim, doc)


def test_slippage_spike_under_kill_switch_still_cuts_sizes(sim):
    sim.simcore("inject", "loss_breach")
    code, doc = run(sim, "slippage-spike")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT")
    assert json.loads((sim.root / OVERRIDE).read_text()) == {"max_position_pct": 0.005}
    assert status(sim)["kill_switch"]["engaged"]


# -- emergency-rollback ------------------------------------------------------------------------


def models(sim: Any) -> None:
    sim.write("core/models/last_good_model.json", '{"version": "v2.3.1", "sha256": "9f2c"}')
    sim.write("core/models/active/model_info.json", '{"version": "v2.4.0", "sha256": "77ab"}')


def test_emergency_rollback_stops_trading_and_restores_the_last_good_model(sim):
    models(sim)
    code, doc = dry_run_untouched(sim, "emergency-rollback")
    assert code == 60 and doc["steps"]["restore_model"]["status"] == "planned"
    code, doc = run(sim, "emergency-rollback", "--param", "reason=Manual: drift on v2.4.0")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    assert "v2.4.0 -> v2.3.1" in doc["message"]
    st = status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("HALT", "KILL_SWITCH_ENGAGED")
    assert st["kill_switch"]["payload"]["reason"] == "Manual: drift on v2.4.0"
    assert json.loads((sim.root / "core/models/active/model_info.json").read_text())["version"] == "v2.3.1"
    assert json.loads((sim.root / "core/config/online_learning_freeze.json").read_text()) == {"accept_threshold": 0.99}
    assert json.loads((sim.root / OVERRIDE).read_text())["position_size_fraction"] == 0.1
    assert "ROLLBACK" in incidents(sim)[0]["message"]
    assert verified(sim, doc)


def test_emergency_rollback_without_a_last_good_model_still_stops_trading(sim):
    (sim.root / "core/models/last_good_model.json").unlink()
    active = (sim.root / "core/models/active/model_info.json").read_bytes()
    code, doc = run(sim, "emergency-rollback")
    # Not DATA_INVALID ("nothing was executed"): trading was stopped, the model was not rolled back.
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT") and "NOT rolled back" in doc["message"]
    st = status(sim)
    assert st["safety_mode"] == "HALT" and st["kill_switch"]["engaged"]
    assert (sim.root / "core/models/active/model_info.json").read_bytes() == active
    assert verified(sim, doc)


def test_emergency_rollback_to_a_target_version(sim):
    code, doc = run(sim, "emergency-rollback", "--param", "target_version=v2.3.0",
                    "--param", "reason=Manual rollback to v2.3.0")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    assert "v2.4.0 -> v2.3.0" in doc["message"]
    assert json.loads((sim.root / "core/models/active/model_info.json").read_text())["version"] == "v2.3.0"
    code, doc = run(sim, "emergency-rollback", "--param", "target_version=v9.9.9")
    assert code == 60 and "registry record for v9.9.9" in doc["message"]
