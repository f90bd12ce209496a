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
