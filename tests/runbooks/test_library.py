"""The seed runbook library as a whole: every procedure exists, cites its seed, and takes its sim profile."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

SYSTEMS = {
    "xauusd": ("000_4df904df83ca9d17.txt", {
        "prod-smoke-test", "daily-start-check", "daily-live-run", "weekly-maintenance", "anomaly-halt",
        "lock-stuck", "state-corrupt", "rollback"}),
    "paperops": ("001_99ecd7e604842506.txt", {
        "incident-triage", "recovery-decision-tree", "incident-acknowledgement", "dr-drill", "slo-evaluation",
        "promotion-readiness"}),
    "hyperliquid": ("002_1e246f0e2afbabb8.txt", {
        "startup-preflight", "post-start-checks", "ops-validation-bundle", "go-no-go",
        "reduce-only-minimal-validation", "entered-armed-safe", "entered-halt", "retry-budget-exceeded",
        "long-downtime-recovery", "cursor-recovery", "order-state-recovery", "backups", "schema-rebuild",
        "repeated-order-failures", "failure-trigger-drill"}),
    "rebalance": ("003_ee69a34aef19eb75.txt", {
        "pre-rebalance-checks", "post-open-reconciliation", "incident-immediate-actions", "monthly-rebalance-guard",
        "leave-safe-mode", "halt-review", "rebalance-job-missed", "rebalance-daily-checks", "rebalance-weekly-maintenance",
        "rebalance-monthly-review", "rebalance-dr-drill", "rebalance-kill-switch"}),
    "mlprod": ("004_f22c873665eea905.txt", {
        "loss-limit-breach", "morning-checklist", "slippage-spike", "emergency-rollback", "key-metrics",
        "evening-checklist", "model-drift", "recovery-after-rollback", "canary-progression", "batch-retrain-gates",
        "model-registry-check", "post-mortem-gate"}),
}


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_every_procedure_is_a_runbook_that_cites_its_seed_and_takes_the_profile(system: str) -> None:
    seed, expected = SYSTEMS[system]
    docs = {path.stem: yaml.safe_load(path.read_text()) for path in (REPO / "runbooks" / system).glob("*.yaml")}
    assert expected <= {doc["runbook"] for doc in docs.values()}
    profile = yaml.safe_load(Path(REPO / "profiles" / f"{system}-sim.yaml").read_text())
    for name, doc in docs.items():
        assert doc["source"].startswith(seed), name
        assert system in doc.get("tags", []), name
        assert doc.get("title") and doc.get("description"), name
        assert set(profile) <= set(doc.get("params", {})), f"{name} does not declare every key of the profile"


CADENCE = {  # procedure -> (runbook, how the seed says it runs): every one has a rule in triggers/library.yaml
    "000 §1 daily start": "daily-start-check", "000 §3 weekly": "weekly-maintenance",
    "001 SLOs": "slo-evaluation", "003 §3.1 pre-rebalance": "pre-rebalance-checks",
    "003 §5 automatic kill switch": "rebalance-kill-switch", "003 §6 daily": "rebalance-daily-checks",
    "003 §6 weekly": "rebalance-weekly-maintenance", "003 §6 monthly": "rebalance-monthly-review",
    "003 §6 quarterly": "rebalance-dr-drill", "004 §1.1 morning": "morning-checklist",
    "004 §1.2 key metrics": "key-metrics", "004 §1.3 evening": "evening-checklist",
}
ALERTS = {"HourlyLossExceeded": "loss-limit-breach", "DailyLossExceeded": "loss-limit-breach",
          "RealisedSlippageCritical": "slippage-spike", "ModelDriftDetected_PSI": "model-drift",
          "ModelDriftDetected_KS": "model-drift"}


def test_triggers_library_schedules_every_cadence_procedure_and_maps_every_alert(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    (tmp_path / "runbook.yaml").write_text(
        f"runbook_paths: [{REPO / 'runbooks'}]\ntriggers: {REPO / 'triggers' / 'library.yaml'}\n")
    runbook = str(Path(sys.executable).with_name("runbook"))
    checked = subprocess.run([runbook, "triggers", "check"], cwd=tmp_path, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    listed = subprocess.run([runbook, "triggers", "list", "--output", "json"], cwd=tmp_path, capture_output=True,
                            text=True)
    scheduled = {r["runbook"] for r in json.loads(listed.stdout)}
    assert set(CADENCE.values()) <= scheduled, set(CADENCE.values()) - scheduled
    rules = yaml.safe_load((REPO / "triggers" / "library.yaml").read_text())["triggers"]
    by_name = {r["runbook"]: r for r in rules if "schedule" in r}
    assert by_name["evening-checklist"]["schedule"]["cron"] == "0 20 * * *"
    assert by_name["evening-checklist"]["schedule"]["timezone"] == "UTC"
    assert by_name["rebalance-daily-checks"]["description"].startswith("seed 003 §6 Daily")
    body = {"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": a}, "fingerprint": a}
                                       for a in ALERTS]}
    (tmp_path / "event.json").write_text(json.dumps(body))
    tested = subprocess.run([runbook, "triggers", "test", "event.json"], cwd=tmp_path, capture_output=True, text=True)
    fired = {r["alert"]: [f["runbook"] for f in r["fires"]] for r in json.loads(tested.stdout)["results"]}
    assert fired == {a: [rb] for a, rb in ALERTS.items()}
