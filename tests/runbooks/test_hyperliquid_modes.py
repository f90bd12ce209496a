"""Seed 002 Mode-Specific Validation on the simulated core: in dry-run and backfill-only mode
post-start-checks watches the service; the cursor must advance (backfill-only) and no order may
reach the exchange. The service's activity (a tick, an order) happens while the run waits."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tests.runbooks import scenario

ENV = {"BINANCE_API_KEY": "dummy-key", "BINANCE_API_SECRET": "dummy-secret", "HYPERLIQUID_TARGET_WALLET": "0xdummy"}


def start(sim: Any, mode: str, *args: str) -> subprocess.Popen[str]:
    return sim.popen("run", "post-start-checks", "--params-file", sim.profile("hyperliquid"), "--no-input",
                     "--output", "json", "--param", f"target_mode={mode}", *args, env=ENV)


def at_step(sim: Any, step: str, deadline_s: float = 60) -> None:
    """Poll the runs' event logs (deadline) until `step` is in progress in one of them."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        for bundle in sim.evidence_dirs():
            events = bundle / "events.jsonl"
            kinds = [e.get("type") for e in map(json.loads, events.read_text().splitlines())
                     if e.get("step") == step] if events.exists() else []
            if kinds and kinds[-1] == "step_started":
                return
        time.sleep(0.05)
    raise AssertionError(f"the run never reached {step}")


def finish(proc: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.strip(), err
    return proc.returncode, json.loads(out)


def safe(sim: Any) -> None:
    """The service restarted in ARMED_SAFE (the strategy places nothing)."""
    res = sim.simcore("reset-safety", "--config", "core/config/settings.yaml", "--schema", "core/config/schema.json",
                      "--mode", "ARMED_SAFE", "--reason-code", "MAINTENANCE_RESTART", "--reason-message", "restart",
                      "--allow-non-halt")
    assert res.code == 0, res.text


def service_mode(sim: Any, mode: str, adapter_enabled: bool = True) -> None:
    """The service (re)started in `mode` (settings.yaml mode; the adapter runs only in live) with
    execution.adapter_enabled as given."""
    cfg = sim.root / "core/config/settings.yaml"
    text = cfg.read_text().replace("\nmode: live\n", f"\nmode: {mode}\n")
    text = text.replace("adapter_enabled: true", f"adapter_enabled: {str(adapter_enabled).lower()}")
    cfg.write_text(text)
    assert f"\nmode: {mode}\n" in cfg.read_text()


def test_backfill_only_needs_the_cursor_to_advance(sim):
    safe(sim)
    service_mode(sim, "backfill-only")
    proc = start(sim, "backfill-only")
    at_step(sim, "cursor_advanced")
    assert sim.simcore("tick").code == 0  # ingest processes the next bar
    code, doc = finish(proc)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "backfill-only: cursor advanced, no external order placed" in doc["message"]
    assert scenario.verified(sim, doc)


def test_backfill_only_cursor_stuck_is_rejected(sim):
    safe(sim)
    service_mode(sim, "backfill-only")
    code, doc = scenario.run(sim, "hyperliquid", "post-start-checks", "--param", "target_mode=backfill-only",
                             "--param", "cursor_advance_timeout=2s", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT") and "did not advance" in doc["message"]
    assert scenario.verified(sim, doc)


def test_dry_run_mode_with_an_external_order_halts(sim):
    safe(sim)
    service_mode(sim, "dry-run")
    proc = start(sim, "dry-run")
    at_step(sim, "cursor_advanced")
    placed = sim.simcore("reduce-only-order", "--symbol", "BTCUSDT", "--side", "sell", "--qty", "0.01",
                         "--client-order-id", "leak-1")
    assert placed.code == 0, placed.text
    assert sim.simcore("tick").code == 0
    code, doc = finish(proc)
    assert (code, doc["outcome"]) == (60, "ANOMALY_HALT"), doc["message"]
    assert "placed 1 external order" in doc["message"]
    assert scenario.verified(sim, doc)


def test_dry_run_mode_cursor_need_not_advance(sim):
    service_mode(sim, "dry-run")
    scenario.dry_run_untouched(sim, "hyperliquid", "post-start-checks", "--param", "target_mode=dry-run",
                               "--param", "cursor_advance_timeout=1s", env=ENV)
    code, doc = scenario.run(sim, "hyperliquid", "post-start-checks", "--param", "target_mode=dry-run",
                             "--param", "cursor_advance_timeout=1s", env=ENV)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "cursor did not advance (not required in dry-run)" in doc["message"]


# -- the execution adapter: enabled in live, disabled in dry-run and backfill-only --------------


def test_live_needs_the_execution_adapter_enabled(sim):
    code, doc = scenario.run(sim, "hyperliquid", "post-start-checks", env=ENV)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "execution adapter enabled" in doc["message"]
    assert "execution_adapter=enabled" in doc["steps"]["execution_adapter"]["result"]["stdout"]
    service_mode(sim, "live", adapter_enabled=False)  # the fault: the adapter switched off in the config
    scenario.dry_run_untouched(sim, "hyperliquid", "post-start-checks", env=ENV)
    before = scenario.status(sim)
    code, doc = scenario.run(sim, "hyperliquid", "post-start-checks", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "live: the execution adapter is not enabled (mode=live, execution_adapter=disabled)" in doc["message"]
    after = scenario.status(sim)
    assert (after["safety_mode"], after["audit_log_count"]) == (before["safety_mode"], before["audit_log_count"])
    assert scenario.verified(sim, doc)
    code, doc = scenario.run(sim, "hyperliquid", "go-no-go", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "did not validate end-to-end in live mode" in doc["message"]
    assert "execution adapter is not enabled" in doc["message"]
    assert scenario.verified(sim, doc)


def test_dry_run_needs_the_execution_adapter_disabled(sim):
    # the service still runs in live mode (adapter enabled) while dry-run is being validated
    code, doc = scenario.run(sim, "hyperliquid", "post-start-checks", "--param", "target_mode=dry-run",
                             "--param", "cursor_advance_timeout=1s", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "dry-run: the execution adapter is not disabled (mode=live, execution_adapter=enabled)" in doc["message"]
    assert scenario.verified(sim, doc)
    service_mode(sim, "dry-run")
    code, doc = scenario.run(sim, "hyperliquid", "post-start-checks", "--param", "target_mode=dry-run",
                             "--param", "cursor_advance_timeout=1s", env=ENV)
    assert (code, doc["outcome"]) == (0, "SUCCESS"), doc["message"]
    assert "execution adapter disabled" in doc["message"]


# -- go-no-go: end-to-end flow in the target mode, dated integration test records ---------------


def test_go_no_go_is_no_go_when_the_flow_fails_in_the_target_mode(sim):
    safe(sim)
    service_mode(sim, "backfill-only")
    code, doc = scenario.run(sim, "hyperliquid", "go-no-go", "--param", "target_mode=backfill-only",
                             "--param", "flow_timeout=1s", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "did not validate end-to-end in backfill-only mode" in doc["message"]
    assert "cursor did not advance" in doc["message"]
    assert scenario.verified(sim, doc)


def test_go_no_go_goes_in_backfill_only_when_the_cursor_advances(sim):
    safe(sim)
    service_mode(sim, "backfill-only")
    proc = sim.popen("run", "go-no-go", "--params-file", sim.profile("hyperliquid"), "--no-input", "--output",
                     "json", "--param", "target_mode=backfill-only", env=ENV)
    at_step(sim, "cursor_advanced")
    assert sim.simcore("tick").code == 0
    code, doc = finish(proc)
    assert (code, doc["outcome"]) == (12, "PAUSED") and doc["waiting_for"]["step"] == "review", doc
    assert doc["steps"]["flow_e2e"]["status"] == "ok"


def test_go_no_go_needs_a_date_on_every_integration_test_record(sim):
    plan = sim.root / "core/docs/TEST_PLAN.md"
    plan.write_text(plan.read_text() + "| | integration: kill switch | PASS |\n")
    code, doc = scenario.run(sim, "hyperliquid", "go-no-go", env=ENV)
    assert (code, doc["outcome"]) == (10, "BUSINESS_REJECT"), doc["message"]
    assert "integration tests" in doc["message"] and doc["steps"]["integration_tests_dated"]["status"] == "failed"
