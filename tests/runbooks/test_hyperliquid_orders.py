"""Seed 002 Incident Response 4) Repeated Order Failures on the simulated core: the exchange
rate-limits, an order goes UNKNOWN and is retried to exhaustion (fault `retry_budget`)."""

from __future__ import annotations

from typing import Any

from tests.runbooks import scenario

SYSTEM = "hyperliquid"
ENV = {"BINANCE_API_KEY": "dummy-key", "BINANCE_API_SECRET": "dummy-secret", "HYPERLIQUID_TARGET_WALLET": "0xdummy"}


def run(sim: Any, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    return scenario.run(sim, SYSTEM, "repeated-order-failures", *args, env=ENV if env is None else env)


def test_no_failures(sim):
    code, doc = scenario.dry_run_untouched(sim, SYSTEM, "repeated-order-failures", env=ENV)
    assert code == 0
    code, doc = run(sim)
    assert (code, doc["outcome"]) == (0, "SUCCESS") and "0 order(s) with an error_code" in doc["message"]
    assert scenario.verified(sim, doc)


def test_rate_limit_outage_disables_trading(sim):
    sim.simcore("inject", "retry_budget")
    # The core already demoted itself (retry budget); an operator put it back live too early.
    res = sim.simcore("reset-safety", "--config", "core/config/settings.yaml", "--schema", "core/config/schema.json",
                      "--mode", "ARMED_LIVE", "--reason-code", "OPERATOR_RESUME", "--reason-message", "resume",
                      "--allow-non-halt")
    assert res.code == 0, res.text
    code, doc = scenario.dry_run_untouched(sim, SYSTEM, "repeated-order-failures", env=ENV)
    assert code == 10 and doc["steps"]["disable_trading"]["status"] == "planned"
    code, doc = run(sim)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    msg = doc["message"]
    assert "class rate_limit" in msg and "RATE_LIMITED x1" in msg and "trading disabled (ARMED_SAFE)" in msg
    assert doc["steps"]["failures"]["result"]["rows"][0]["error_message"] == "RETRY_BUDGET_EXCEEDED: 4 attempts"
    st = scenario.status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "REPEATED_ORDER_FAILURES")
    assert scenario.verified(sim, doc)
    # Keys missing as well: reported, trading stays disabled.
    code, doc = run(sim, env={})
    assert code == 10 and "keys MISSING BINANCE_API_KEY,BINANCE_API_SECRET" in doc["message"]
    assert "class keys_or_permissions" in doc["message"]


def test_go_no_go_disables_trading_when_a_rollback_trigger_fires(sim):
    sim.simcore("inject", "retry_budget")
    res = sim.simcore("reset-safety", "--config", "core/config/settings.yaml", "--schema", "core/config/schema.json",
                      "--mode", "ARMED_LIVE", "--reason-code", "OPERATOR_RESUME", "--reason-message", "resume",
                      "--allow-non-halt")
    assert res.code == 0, res.text
    code, doc = scenario.dry_run_untouched(sim, SYSTEM, "go-no-go", env=ENV)
    assert code == 10 and doc["steps"]["no_go_trigger"]["status"] == "planned"
    code, doc = scenario.run(sim, SYSTEM, "go-no-go", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "trading disabled (ARMED_SAFE)" in doc["message"]
    st = scenario.status(sim)
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "ROLLBACK_TRIGGER")
    assert scenario.verified(sim, doc)


def test_failure_trigger_drill_on_disposable_cores(sim):
    before = sim.state_hash()
    code, doc = scenario.dry_run_untouched(sim, SYSTEM, "failure-trigger-drill", env=ENV)
    assert code == 0 and not (sim.root / "drills").exists()
    code, doc = scenario.run(sim, SYSTEM, "failure-trigger-drill", env=ENV)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "RECONCILE_CRITICAL -> HALT" in doc["message"] and "EXECUTION_RETRY_BUDGET_EXCEEDED -> ARMED_SAFE" in doc["message"]
    assert sim.state_hash() == before  # the live core is never touched
    assert len(list((sim.root / "drills/failure_triggers").glob("*/*/state/core.db"))) == 4
    assert scenario.verified(sim, doc)
    # A trigger that does not produce its expected signal is reported.
    triggers = '[{"name": "EXECUTION_RETRY_BUDGET_EXCEEDED", "modes": ["HALT"]}]'
    code, doc = scenario.run(sim, SYSTEM, "failure-trigger-drill", "--param", f"triggers={triggers}", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT")
    assert "EXECUTION_RETRY_BUDGET_EXCEEDED: got ARMED_SAFE" in doc["message"]
