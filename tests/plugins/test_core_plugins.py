"""The trading-core plugins through the real CLI, against both adapters: `sim` and `http`."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SIMCORE, SimWorkspace

ORDERS = """
runbook: core-orders
title: Core plugin round trip
version: 1
description: state, reconcile, demote to safe, reduce-only order twice, cancel all
source: tests
steps:
  - id: state
    check: core.state
    with: {allowed_modes: [ARMED_LIVE]}
  - id: recon
    check: core.reconcile
  - id: positions
    check: core.positions
    expect: result.broker.BTCUSDT > 0
  - id: safe
    action: core.set_safety_mode
    with: {mode: ARMED_SAFE, reason_code: MANUAL_DEMOTE, reason_message: test, allow_non_halt: true}
  - id: order
    action: core.reduce_only_order
    with: {symbol: BTCUSDT, side: sell, notional: 20}
  - id: order_again
    action: core.reduce_only_order
    with: {symbol: BTCUSDT, side: sell, notional: 20, client_order_id: "{{ steps.order.result.client_order_id }}"}
    expect: result.idempotent_replay and result.exchange_order_id == steps.order.result.exchange_order_id
  - id: cancel
    action: core.cancel_all_orders
  - id: after
    check: core.state
    expect: result.safety_mode == 'ARMED_SAFE' and result.safety_reason_code == 'MANUAL_DEMOTE'
"""

KILL = """
runbook: core-kill
title: Kill switch through the core
version: 1
description: engage, then a non-safe action must not run
source: tests
steps:
  - id: engage
    action: core.kill_switch
    with: {engage: true, reason: loss limit breached}
  - id: cancel
    action: core.cancel_all_orders
    safe_in_halt: true
  - id: order
    action: core.reduce_only_order
    with: {symbol: BTCUSDT, side: sell, notional: 20}
"""


@pytest.fixture(params=["sim", "http"])
def core_ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SimWorkspace]:
    """A sim workspace whose core plugins use the given adapter (http: a real server on loopback)."""
    ws = SimWorkspace(tmp_path)
    server = None
    if request.param == "http":
        port_file = tmp_path / "port"
        server = subprocess.Popen([SIMCORE, "--root", str(tmp_path / "core"), "serve", "--port", "0",
                                   "--port-file", str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not (port_file.exists() and port_file.read_text().strip()) and time.monotonic() < deadline:
            time.sleep(0.02)
        ws.configure(core_url=f"http://127.0.0.1:{port_file.read_text().strip()}")
    yield ws
    if server is not None:
        server.terminate()
        server.wait(timeout=10)


def _status(ws: SimWorkspace) -> dict:
    return json.loads(ws.simcore("status", "--json").out)


def test_round_trip_changes_the_core_once(core_ws: SimWorkspace) -> None:
    core_ws.runbook("core-orders", ORDERS)
    before = core_ws.state_hash()
    dry = core_ws.cli("run", "core-orders", "--dry-run", "--assume", "after=ok")
    assert dry.code == 0, dry.text
    assert core_ws.state_hash() == before
    live = core_ws.cli("run", "core-orders", "--output", "json")
    assert live.code == 0, live.text
    steps = json.loads(live.out)["steps"]
    assert steps["order"]["result"]["status"] == "FILLED"
    assert steps["order"]["result"]["client_order_id"].startswith("rb-")
    status = _status(core_ws)
    assert status["safety_mode"] == "ARMED_SAFE"
    assert status["positions"]["local"]["BTCUSDT"] < 0.05


def test_kill_switch_stops_the_next_unsafe_order(core_ws: SimWorkspace) -> None:
    core_ws.runbook("core-kill", KILL)
    result = core_ws.cli("run", "core-kill", "--output", "json")
    assert result.code == 60, result.text
    steps = json.loads(result.out)["steps"]
    assert steps["cancel"]["status"] == "ok"
    assert "order" not in steps or steps["order"]["status"] == "failed"
    status = _status(core_ws)
    assert status["kill_switch"]["engaged"] and status["safety_mode"] == "HALT"
    assert status["positions"]["local"]["BTCUSDT"] == pytest.approx(0.05)


def test_unreachable_core_fails_the_step_clearly(sim: SimWorkspace) -> None:
    sim.configure(core_url="http://127.0.0.1:9")
    sim.runbook("core-orders", ORDERS)
    result = sim.cli("run", "core-orders")
    assert result.code == 10
    assert "unreachable" in result.err and "Traceback" not in result.text
