"""The Python API (the `sim` adapter's view): safety rules, orders, reconcile, kill switch, faults."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from simcore.core import Core
from simcore.errors import BadRequest, Refused

from .conftest import SIMCORE


def audit(core: Core, category: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(core.db_path)
    conn.row_factory = sqlite3.Row
    return conn.execute("select * from audit_log where category=? order by id", (category,)).fetchall()


def broker_orders(core: Core, cid: str) -> int:
    conn = sqlite3.connect(core.lay.world_db)
    return conn.execute("select count(*) from broker_orders where client_order_id=?", (cid,)).fetchone()[0]


def test_status_shape(core: Core) -> None:
    st = core.status()
    assert st["safety_mode"] == "ARMED_LIVE" and st["schema_version"] == "3"
    assert st["kill_switch"] == {"engaged": False, "payload": None}
    assert st["positions"]["local"] == st["positions"]["broker"] == {"BTCUSDT": 0.05, "XAUUSD": 0.0}
    assert st["equity"] == 100000.0 and st["drawdown"] == 0.0 and st["broker_up"] is True
    for key in ("safety_reason_code", "safety_reason_message", "last_processed_timestamp_ms",
                "last_processed_event_key", "open_orders", "lock", "sim_now_ms"):
        assert key in st


@pytest.mark.parametrize("start,target,allow,ok", [
    ("ARMED_LIVE", "HALT", False, True),
    ("ARMED_LIVE", "ARMED_SAFE", False, False),
    ("ARMED_LIVE", "ARMED_SAFE", True, True),
    ("HALT", "ARMED_SAFE", False, True),
    ("HALT", "ARMED_LIVE", False, False),
    ("HALT", "ARMED_LIVE", True, True),
])
def test_safety_transitions(core: Core, start: str, target: str, allow: bool, ok: bool) -> None:
    if start == "HALT":
        core.set_safety_mode("HALT", "MANUAL_HALT", "drill")
    if ok:
        res = core.set_safety_mode(target, "MANUAL", "why", actor="alice", allow_non_halt=allow)
        assert res["safety_mode"] == target and core.status()["safety_reason_code"] == "MANUAL"
        row = audit(core, "safety")[-1]
        assert (row["actor"], row["to_value"], row["reason_message"]) == ("alice", target, "why")
    else:
        with pytest.raises(Refused):
            core.set_safety_mode(target, "MANUAL", "why", allow_non_halt=allow)


def test_safety_rejects_bad_input(core: Core) -> None:
    with pytest.raises(BadRequest):
        core.set_safety_mode("PANIC", "X", "")
    with pytest.raises(BadRequest):
        core.set_safety_mode("HALT", "lower case", "")


def test_reduce_only_idempotent_and_never_increases(core: Core) -> None:
    first = core.reduce_only_order("BTCUSDT", "sell", notional=20, client_order_id="cid-1")
    assert first["status"] == "FILLED" and first["exchange_order_id"].startswith("SIM-")
    assert 97000 * (1 - 5e-4) <= first["avg_price"] <= 97000  # sell fills with adverse slippage
    second = core.reduce_only_order("BTCUSDT", "sell", notional=20, client_order_id="cid-1")
    assert second["idempotent_replay"] is True
    assert second["exchange_order_id"] == first["exchange_order_id"]
    assert broker_orders(core, "cid-1") == 1
    pos = core.positions()
    assert pos["local"]["BTCUSDT"] == pos["broker"]["BTCUSDT"] == pytest.approx(0.05 - first["qty"])
    with pytest.raises(Refused, match="increase"):
        core.reduce_only_order("BTCUSDT", "buy", notional=20, client_order_id="cid-2")
    with pytest.raises(Refused, match="flip"):
        core.reduce_only_order("BTCUSDT", "sell", qty=1.0, client_order_id="cid-3")
    with pytest.raises(Refused, match="increase"):
        core.reduce_only_order("XAUUSD", "sell", notional=20, client_order_id="cid-4")
    assert core.find_order("cid-2")["found"] is False
    found = core.find_order("cid-1")
    assert found["local"]["status"] == found["broker"]["status"] == "FILLED"


def test_reduce_only_refused_while_halt_unless_risk_off(core: Core) -> None:
    core.set_safety_mode("HALT", "MANUAL_HALT", "drill")
    with pytest.raises(Refused, match="HALT"):
        core.reduce_only_order("BTCUSDT", "sell", notional=20, client_order_id="h-1")
    assert core.reduce_only_order("BTCUSDT", "sell", notional=20, client_order_id="h-1",
                                  risk_off=True)["status"] == "FILLED"


def test_concurrent_same_client_order_id_creates_one_order(core_dir: Path) -> None:
    cmd = [SIMCORE, "--root", str(core_dir), "reduce-only-order", "--symbol", "BTCUSDT", "--side",
           "sell", "--notional", "20", "--client-order-id", "race-1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert all("status=FILLED" in o for o in outs)
    assert sum("idempotent_replay=False" in o for o in outs) == 1
    assert broker_orders(Core(core_dir), "race-1") == 1


def test_broker_down_unknown_then_verify_and_resubmit(core: Core) -> None:
    core.inject("broker_down")
    order = core.reduce_only_order("BTCUSDT", "sell", notional=20, client_order_id="bd-1")
    assert (order["status"], order["error_code"]) == ("UNKNOWN", "TIMEOUT")
    rec = core.reconcile()
    assert rec["ok"] is False and rec["error"] == "TIMEOUT"
    assert core.positions()["broker"] is None
    assert core.tick(1)["safety_reason_code"] == "BROKER_DOWN"
    core.heal("broker_down")
    found = core.find_order("bd-1")
    assert found["broker_reachable"] and found["broker"] is None  # never reached the exchange
    again = core.reduce_only_order("BTCUSDT", "sell", notional=20, client_order_id="bd-1")
    assert again["status"] == "FILLED" and again["idempotent_replay"] is True
    assert broker_orders(core, "bd-1") == 1


def test_retry_budget_fault(core: Core) -> None:
    res = core.inject("retry_budget")
    st = core.status()
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "EXECUTION_RETRY_BUDGET_EXCEEDED")
    unknown = [o for o in core.open_orders() if o["status"] == "UNKNOWN"]
    assert unknown and all(o["error_code"] == "RATE_LIMITED" for o in unknown)
    assert "RETRY_BUDGET_EXCEEDED" in unknown[0]["error_message"]
    assert res["order"]["attempts"] >= 3
    assert len([r for r in audit(core, "execution") if r["action"] == "retry"]) >= 3


def test_reconcile_drift_critical_halts(core: Core) -> None:
    core.inject("reconcile_drift")
    res = core.reconcile()
    assert res["ok"] is False and res["critical"] is True
    (d,) = res["drift"]
    assert d["symbol"] == "BTCUSDT" and d["local"] == 0.05 and d["diff"] == pytest.approx(0.035)
    st = core.status()
    assert (st["safety_mode"], st["safety_reason_code"]) == ("HALT", "RECONCILE_CRITICAL")
    assert audit(core, "safety")[-1]["to_value"] == "HALT"
    assert audit(core, "reconcile")[-1]["reason_code"] == "RECONCILE_CRITICAL"
    core.heal("reconcile_drift")
    assert core.reconcile()["ok"] is True


def test_reconcile_missing_symbol_and_adopt(core: Core) -> None:
    with sqlite3.connect(core.lay.world_db) as conn:
        conn.execute("delete from broker_positions where symbol='BTCUSDT'")
    res = core.reconcile()
    assert res["missing_symbols"] == ["BTCUSDT"] and res["critical"]
    assert core.reconcile(adopt=True)["ok"] is True
    assert "BTCUSDT" not in core.positions()["local"]


def test_schema_mismatch_halts_on_next_tick(core: Core) -> None:
    core.inject("schema_mismatch")
    res = core.tick(1)
    assert (res["safety_mode"], res["safety_reason_code"]) == ("HALT", "SCHEMA_VERSION_MISMATCH")
    with pytest.raises(Refused, match="schema_version"):
        core.set_safety_mode("ARMED_SAFE", "FIXED", "")
    core.heal("schema_mismatch")
    assert core.set_safety_mode("ARMED_SAFE", "FIXED", "")["safety_mode"] == "ARMED_SAFE"


def test_backfill_window_and_maintenance_skip(core: Core) -> None:
    res = core.inject("backfill_window_exceeded")
    assert core.status()["safety_reason_code"] == "BACKFILL_WINDOW_EXCEEDED"
    assert core.tick(1)["safety_mode"] == "HALT"
    core.set_safety_mode("ARMED_SAFE", "MAINTENANCE_SKIP", "Maintenance skip reset")
    assert core.tick(1)["safety_reason_code"] == "BACKFILL_WINDOW_EXCEEDED"
    core.set_safety_mode("ARMED_SAFE", "MAINTENANCE_SKIP", "Maintenance skip reset")
    cfg = core.lay.settings
    cfg.write_text(cfg.read_text().replace("maintenance_skip_gap: false", "maintenance_skip_gap: true"))
    core = Core(core.root)
    out = core.tick(1)
    st = core.status()
    assert (st["safety_mode"], st["safety_reason_code"]) == ("ARMED_SAFE", "MAINTENANCE_SKIP_APPLIED")
    assert st["maintenance_skip_applied_ms"] == st["sim_now_ms"]
    assert st["last_processed_timestamp_ms"] > res["last_processed_timestamp_ms"]
    assert "MAINTENANCE_SKIP_APPLIED" in out["events"]


def _tick_until_open_order(core: Core) -> None:
    for _ in range(40):
        core.tick(1)
        if core.status()["open_orders"]:
            return
    raise AssertionError("strategy never left an open order")


def test_kill_switch_engage_cancels_and_halts(core: Core) -> None:
    _tick_until_open_order(core)
    res = core.kill_switch(True, "manual drill", actor="bob")
    assert res["cancelled"] >= 1 and res["safety_mode"] == "HALT"
    payload = json.loads(core.lay.kill_switch.read_text())
    assert payload["reason"] == "manual drill" and payload["actor"] == "bob" and "ts_utc" in payload
    assert core.open_orders() == []
    st = core.status()
    assert (st["safety_mode"], st["safety_reason_code"]) == ("HALT", "KILL_SWITCH_ENGAGED")
    n = len(audit(core, "execution"))
    core.tick(5)
    assert len(audit(core, "execution")) == n  # HALT: no new orders
    with pytest.raises(Refused, match="kill switch"):
        core.set_safety_mode("ARMED_SAFE", "RESUME", "")
    released = core.kill_switch(False, "reviewed")
    assert released["engaged"] is False and released["safety_mode"] == "HALT"
    assert not core.lay.kill_switch.exists()
    assert core.set_safety_mode("ARMED_SAFE", "RESUME", "")["safety_mode"] == "ARMED_SAFE"


def test_kill_switch_file_created_by_hand_halts_next_tick(core: Core) -> None:
    core.lay.kill_switch.write_text("stop\n")
    res = core.tick(1)
    assert (res["safety_mode"], res["safety_reason_code"]) == ("HALT", "KILL_SWITCH_ENGAGED")


def test_loss_breach_engages_kill_switch(core: Core) -> None:
    res = core.inject("loss_breach")
    assert res["kill_switch"]["engaged"] is True
    assert res["kill_switch"]["payload"]["reason"].startswith("LOSS_LIMIT_BREACH")
    st = core.status()
    assert (st["safety_mode"], st["safety_reason_code"]) == ("HALT", "LOSS_LIMIT_BREACH")
    assert core.heal("loss_breach")["healed"] is False


def test_cancel_all_idempotent_on_token(core: Core) -> None:
    _tick_until_open_order(core)
    first = core.cancel_all_orders(client_token="tok-1")
    assert first["cancelled"] >= 1 and first["replayed"] is False
    again = core.cancel_all_orders(client_token="tok-1")
    assert again["replayed"] is True and again["cancelled"] == first["cancelled"]
    assert core.open_orders() == []


def test_tick_advances_cursor_and_equity(core: Core) -> None:
    before = core.status()
    core.tick(10)
    after = core.status()
    assert after["last_processed_timestamp_ms"] == before["last_processed_timestamp_ms"] + 600_000
    assert after["last_processed_event_key"] == f"XAUUSD:M1:{after['last_processed_timestamp_ms']}"
    conn = sqlite3.connect(core.db_path)
    assert conn.execute("select count(*) from equity_curve").fetchone()[0] == 11
    assert conn.execute("select count(*) from processed_txs").fetchone()[0] == 250
    assert len(core.lay.metrics_log.read_text().splitlines()) == 11


def test_inject_clear_heals_active_faults(core: Core) -> None:
    core.inject("broker_down")
    core.inject("stale_data")
    out = core.heal("clear")
    assert {h["fault"] for h in out["healed"]} == {"broker_down", "stale_data"}
    assert core.status()["broker_up"] and core.status()["faults"] == []
