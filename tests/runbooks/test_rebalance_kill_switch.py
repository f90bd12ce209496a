"""Seed 003 §5 kill switch on the simulated core: the automatic policy (max drawdown,
positions unreconciled beyond the policy's time threshold) and the manual trigger."""

from __future__ import annotations

import json
from typing import Any

from tests.runbooks import scenario

SYSTEM = "rebalance"


def run(sim: Any, *args: str) -> tuple[int, dict[str, Any]]:
    return scenario.run(sim, SYSTEM, "rebalance-kill-switch", *args)


def alerts(sim: Any) -> list[dict[str, Any]]:
    path = sim.root / "core/logs/rebalance_alerts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_unreconciled_beyond_the_threshold_engages_the_kill_switch(sim):
    code, doc = run(sim)
    assert (code, doc["outcome"]) == (0, "SUCCESS") and "positions reconciled" in doc["message"]
    sim.simcore("inject", "reconcile_drift")
    sim.simcore("tick", "--n", "10")
    since = scenario.status(sim)["unreconciled_since_ms"]
    assert since is not None
    code, doc = run(sim)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]  # 10 min < the policy's 30 min
    assert not scenario.status(sim)["kill_switch"]["engaged"]
    sim.simcore("tick", "--n", "21")
    scenario.dry_run_untouched(sim, SYSTEM, "rebalance-kill-switch")
    code, doc = run(sim)
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    st = scenario.status(sim)
    assert st["kill_switch"]["engaged"] and st["safety_mode"] == "HALT" and st["open_orders"] == 0
    assert "unreconciled for 30.0 min >= 30 min" in st["kill_switch"]["payload"]["reason"]
    assert (sim.root / "core/KILL_SWITCH").exists()
    assert alerts(sim)[-1]["severity"] == "critical" and "KILL SWITCH" in alerts(sim)[-1]["message"]
    assert scenario.verified(sim, doc)
    refused = sim.simcore("reduce-only-order", "--symbol", "BTCUSDT", "--side", "sell", "--qty", "0.01",
                          "--client-order-id", "after-kill")
    assert refused.code != 0 and "order_refused" in refused.text  # new order submission prevented


def test_healed_drift_resets_the_clock(sim):
    sim.simcore("inject", "reconcile_drift")
    sim.simcore("tick", "--n", "20")
    sim.simcore("heal", "reconcile_drift")
    sim.simcore("tick")
    assert scenario.status(sim)["unreconciled_since_ms"] is None
    sim.simcore("inject", "reconcile_drift")
    sim.simcore("tick", "--n", "20")
    code, doc = run(sim)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]  # 20 min since the new drift, not 41
    assert not scenario.status(sim)["kill_switch"]["engaged"]


def test_manual_kill_switch_cancels_and_halts(sim):
    scenario.dry_run_untouched(sim, SYSTEM, "rebalance-kill-switch", "--param", "trigger=manual")
    code, doc = run(sim, "--param", "trigger=manual", "--param", "reason=suspicious fills")
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    st = scenario.status(sim)
    assert st["kill_switch"]["engaged"] and st["safety_mode"] == "HALT"
    assert "suspicious fills" in st["kill_switch"]["payload"]["reason"]
    assert scenario.verified(sim, doc)
