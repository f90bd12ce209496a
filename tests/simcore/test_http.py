"""The HTTP API of `simcore serve`, on loopback, against the real server process."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import http, run

METRIC_LINE = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)+\})? -?[0-9.e+-]+$')


def test_read_endpoints(server: str) -> None:
    code, ctype, body = http("GET", f"{server}/health")
    assert (code, body) == (200, {"ok": True, "safety_mode": "ARMED_LIVE"})
    assert ctype.startswith("application/json")
    code, _, state = http("GET", f"{server}/state")
    assert code == 200 and state["schema_version"] == "3" and state["kill_switch"]["engaged"] is False
    code, _, pos = http("GET", f"{server}/positions")
    assert code == 200 and pos["local"]["BTCUSDT"] == 0.05 and pos["broker"]["BTCUSDT"] == 0.05
    code, _, orders = http("GET", f"{server}/orders")
    assert (code, orders) == (200, {"orders": []})


def test_errors_are_json(server: str) -> None:
    assert http("GET", f"{server}/nope")[0] == 404
    code, _, body = http("GET", f"{server}/orders/by-client-id/a%2Fb%20c")
    assert code == 404 and "'a/b c'" in body["error"]
    code, _, body = http("GET", f"{server}/orders/by-client-id/missing")
    assert code == 404 and "missing" in body["error"]
    code, _, body = http("POST", f"{server}/safety-mode", {"mode": "ARMED_SAFE"})
    assert code == 400 and "reason_code" in body["error"]
    code, _, body = http("POST", f"{server}/safety-mode", {"mode": "ARMED_SAFE", "reason_code": "X"})
    assert code == 409 and body["type"] == "Refused"
    assert http("DELETE", f"{server}/state")[:2] == (405, "application/json")
    code, _, body = http("POST", f"{server}/reconcile", None)
    assert code == 200
    assert http("GET", f"{server}/safety-mode")[0] == 405


def test_safety_mode_is_audited(server: str, core_dir: Path) -> None:
    code, _, body = http("POST", f"{server}/safety-mode",
                         {"mode": "HALT", "reason_code": "MANUAL_HALT", "reason_message": "drill", "actor": "carol"})
    assert code == 200 and body["previous_mode"] == "ARMED_LIVE" and body["audit_id"] > 1
    assert http("GET", f"{server}/state")[2]["safety_reason_code"] == "MANUAL_HALT"
    code, _, body = http("POST", f"{server}/safety-mode",
                         {"mode": "ARMED_LIVE", "reason_code": "RESUME", "actor": "carol"})
    assert code == 409 and "ARMED_SAFE first" in body["error"]


def test_orders_reduce_only_cancel_reconcile(server: str, core_dir: Path) -> None:
    req = {"symbol": "BTCUSDT", "side": "sell", "notional": 25, "client_order_id": "h-1"}
    code, _, order = http("POST", f"{server}/orders/reduce-only", req)
    assert code == 200 and order["status"] == "FILLED" and order["idempotent_replay"] is False
    code, _, again = http("POST", f"{server}/orders/reduce-only", req)
    assert again["exchange_order_id"] == order["exchange_order_id"] and again["idempotent_replay"]
    code, _, found = http("GET", f"{server}/orders/by-client-id/h-1")
    assert code == 200 and found["broker"]["status"] == "FILLED"
    code, _, body = http("POST", f"{server}/orders/reduce-only", {**req, "side": "buy", "client_order_id": "h-2"})
    assert code == 409 and "increase" in body["error"]
    run(core_dir, "tick", "--n", "30")
    code, _, res = http("POST", f"{server}/orders/cancel-all", {"client_token": "t-1"})
    assert code == 200 and res["replayed"] is False
    assert http("GET", f"{server}/orders")[2] == {"orders": []}
    code, _, rec = http("POST", f"{server}/reconcile", {})
    assert code == 200 and rec["ok"] is True and rec["drift"] == []
    run(core_dir, "inject", "reconcile_drift")
    code, _, rec = http("POST", f"{server}/reconcile", {})
    assert rec["critical"] and rec["transition"]["reason_code"] == "RECONCILE_CRITICAL"


def test_kill_switch_and_metrics(server: str, core_dir: Path) -> None:
    code, ctype, text = http("GET", f"{server}/metrics")
    assert code == 200 and ctype.startswith("text/plain; version=0.0.4")
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples and all(METRIC_LINE.match(line) for line in samples), samples
    assert 'simcore_safety_mode{mode="ARMED_LIVE"} 1' in text
    assert 'simcore_safety_mode{mode="HALT"} 0' in text
    assert 'simcore_safety_reason_info{mode="ARMED_LIVE",reason_code="STARTUP"} 1' in text
    assert "simcore_kill_switch_engaged 0" in text
    assert 'simcore_position_qty{symbol="BTCUSDT",source="broker"} 0.05' in text
    assert re.search(r"^simcore_equity 100000.0$", text, re.M)
    assert "simcore_sim_now_ms 1769040000000\n" in text
    assert "# TYPE simcore_drawdown_ratio gauge" in text and "simcore_open_orders 0" in text

    code, _, res = http("POST", f"{server}/kill-switch", {"engage": True, "reason": "drill", "actor": "dave"})
    assert code == 200 and res["engaged"] and res["safety_mode"] == "HALT"
    assert (core_dir / "KILL_SWITCH").exists()
    text = http("GET", f"{server}/metrics")[2]
    assert "simcore_kill_switch_engaged 1" in text
    assert 'simcore_safety_mode{mode="HALT"} 1' in text
    assert 'simcore_safety_reason_info{mode="HALT",reason_code="KILL_SWITCH_ENGAGED"} 1' in text
    code, _, res = http("POST", f"{server}/kill-switch", {"engage": False, "reason": "reviewed"})
    assert code == 200 and res["engaged"] is False and not (core_dir / "KILL_SWITCH").exists()
    assert http("POST", f"{server}/kill-switch", {"reason": "x"})[0] == 400
