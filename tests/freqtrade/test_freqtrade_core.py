"""The `core.*` plugins drive a real freqtrade (dry-run, offline) through its REST API.

Each test starts its own bot (tests/freqtrade/conftest.py) and drives it through the real
`runbook` CLI, as an operator would: runbook.yaml says `core: {adapter: freqtrade, ...}` and
the credentials come from the environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, SimWorkspace, Workspace
from tests.freqtrade.conftest import Bot

ENV_NAMES = {"username_env": "FT_API_USER", "password_env": "FT_API_PASS"}


def configure(ws: Workspace, bot: Bot, extra: str = "") -> dict[str, str]:
    """runbook.yaml pointing the core.* plugins at the bot; returns the environment with its credentials."""
    ws.write("runbook.yaml", f"""
        runbook_paths: [{REPO / 'runbooks'}, runbooks]
        core: {{adapter: freqtrade, url: '{bot.url}', username_env: FT_API_USER, password_env: FT_API_PASS}}
        kill_switch: KILL_SWITCH
        {extra}
        """)
    return {"FT_API_USER": bot.username, "FT_API_PASS": bot.password}


def open_trade(bot: Bot, pair: str = "BTC/USDT", **extra: object) -> dict[str, object]:
    """A trade entered through freqtrade's own API (the position the runbooks then manage)."""
    trade = bot.api("POST", "/forceenter", {"pair": pair, **extra})
    assert "trade_id" in trade, trade
    return dict(trade)


def no_secret_anywhere(ws: Workspace, bot: Bot, *outputs: str) -> None:
    """The API password is in no file the engine wrote and in nothing it printed."""
    for text in outputs:
        assert bot.password not in text
    for folder in ("evidence", ".runbook"):
        for path in (ws.root / folder).rglob("*"):
            if path.is_file():
                assert bot.password.encode() not in path.read_bytes(), path


STEPS = """
runbook: {name}
title: t
version: 1
description: t
source: tests
steps:
{steps}
  - id: done
    end: SUCCESS
"""


def runbook(ws: Workspace, name: str, steps: str) -> None:
    ws.runbook(name, STEPS.format(name=name, steps=steps))


def test_safety_modes_map_to_stop_pause_start(ws: Workspace, freqtrade_bot: Bot) -> None:
    env = configure(ws, freqtrade_bot)
    runbook(ws, "modes", """
  - id: before
    check: core.state
    with: {allowed_modes: [ARMED_LIVE]}
  - id: halt
    action: core.set_safety_mode
    with: {mode: HALT, reason_code: OPS_TEST, reason_message: stop for a test}
  - id: halted
    check: core.state
    expect: result.safety_mode == 'HALT' and result.freqtrade_state == 'stopped' and result.safety_reason_code == 'OPS_TEST'
  - id: direct_live
    action: core.set_safety_mode
    with: {mode: ARMED_LIVE, reason_code: TOO_FAST}
    on_fail: safe
  - id: safe
    action: core.set_safety_mode
    with: {mode: ARMED_SAFE, reason_code: RESUME_SAFE}
  - id: paused
    check: core.state
    with: {allowed_modes: [ARMED_SAFE]}
""")
    runbook(ws, "halt-only", """
  - id: halt
    action: core.set_safety_mode
    with: {mode: HALT, reason_code: OPS_TEST}
""")
    dry = ws.cli("run", "halt-only", "--dry-run", "--output", "json", env=env)
    assert dry.code == 0, dry.text
    assert freqtrade_bot.state() == "running", "a dry-run changes nothing"
    plan = json.loads(dry.out)["steps"]["halt"]["result"]["plan"]
    assert plan["core_request"]["request"] == "POST /api/v1/stop", "the plan names the request"
    live = ws.cli("run", "modes", env=env)
    assert live.code == 0, live.text
    assert "HALT -> ARMED_LIVE is not allowed directly" in live.text
    assert freqtrade_bot.state() == "paused"
    no_secret_anywhere(ws, freqtrade_bot, live.out, live.err, dry.out, dry.err)


def test_positions_reconcile_and_the_reduce_only_order_with_verify(ws: Workspace, freqtrade_bot: Bot) -> None:
    env = configure(ws, freqtrade_bot)
    trade = open_trade(freqtrade_bot)
    held = float(trade["amount"])  # type: ignore[arg-type]
    runbook(ws, "reduce", """
  - id: positions
    check: core.positions
    expect: result.local.BTCUSDT > 0 and result.broker.BTCUSDT == result.local.BTCUSDT
  - id: reconcile
    check: core.reconcile
  - id: order
    action: core.reduce_only_order
    with: {symbol: BTCUSDT, side: sell, notional: 20, client_order_id: rb-test-reduce-1}
  - id: seen
    check: core.find_order
    with: {client_order_id: rb-test-reduce-1}
    expect: result.found and result.broker.side == 'sell'
""")
    result = ws.cli("run", "reduce", "--output", "json", env=env)
    assert result.code == 0, result.text
    steps = json.loads(result.out)["steps"]
    order = steps["order"]["result"]
    assert order["status"] == "FILLED" and order["exchange_order_id"] and order["trade_id"] == trade["trade_id"]
    assert order["filled_qty"] == pytest.approx(20 / 50000, rel=0.05)
    after = freqtrade_bot.api("GET", "/status")[0]
    assert float(after["amount"]) == pytest.approx(held - float(order["filled_qty"]), rel=1e-6)
    assert after["exit_reason"] == "force_exit"
    # the same client order id again: recognised in the trade list, not sent twice
    runbook(ws, "reduce-again", """
  - id: order
    action: core.reduce_only_order
    with: {symbol: BTCUSDT, side: sell, notional: 20, client_order_id: rb-test-reduce-1}
""")
    again = ws.cli("run", "reduce-again", "--output", "json", env=env)
    assert again.code == 0, again.text
    replay = json.loads(again.out)["steps"]["order"]["result"]
    assert replay["idempotent_replay"] is True and replay["exchange_order_id"] == order["exchange_order_id"]
    assert float(freqtrade_bot.api("GET", "/status")[0]["amount"]) == pytest.approx(float(after["amount"]))
    no_secret_anywhere(ws, freqtrade_bot, result.out, result.err, again.out)


def test_in_doubt_reduce_only_order_is_verified_through_the_trade_list(ws: Workspace, freqtrade_bot: Bot) -> None:
    """A crash right after the exit order reached freqtrade: resume verifies it and does not send it again."""
    env = configure(ws, freqtrade_bot, "plugin_paths: [plugins]")
    open_trade(freqtrade_bot)
    ws.write("plugins/crashing.py", '''
        import os
        import signal
        from pathlib import Path

        from actions.core import ReduceOnlyOrder


        class CrashingOrder(ReduceOnlyOrder):
            name = "test.crashing_order"

            def run(self, params, ctx):
                marker = Path(ctx.workdir) / "crashed"
                if marker.exists():
                    return super().run(params, ctx)
                marker.write_text("once")
                super().run(params, ctx)
                os.kill(os.getpid(), signal.SIGKILL)
        ''')
    runbook(ws, "crash", """
  - id: order
    action: test.crashing_order
    with: {symbol: BTCUSDT, side: sell, qty: 0.0005}
""")
    crashed = ws.cli("run", "crash", env=env)
    assert crashed.code == -9, crashed.text
    exits = [o for o in freqtrade_bot.api("GET", "/status")[0]["orders"] if o["ft_order_side"] == "sell"]
    assert len(exits) == 1
    run_id = next(iter(ws.evidence_dirs())).name
    resumed = ws.cli("resume", run_id, env=env)
    assert resumed.code == 0, resumed.text
    exits = [o for o in freqtrade_bot.api("GET", "/status")[0]["orders"] if o["ft_order_side"] == "sell"]
    assert len(exits) == 1, "verified through the trade list, not sent twice"


def test_cancel_all_orders_and_what_freqtrade_cannot_do(ws: Workspace, freqtrade_bot: Bot) -> None:
    env = configure(ws, freqtrade_bot)
    open_trade(freqtrade_bot)
    open_trade(freqtrade_bot, "ETH/USDT", ordertype="limit", price=2500)  # rests: below the market
    assert any(t["has_open_orders"] for t in freqtrade_bot.api("GET", "/status"))
    runbook(ws, "cancel", """
  - id: cancel
    action: core.cancel_all_orders
  - id: none_open
    check: core.state
    expect: result.open_orders == 0
  - id: halt
    action: core.set_safety_mode
    with: {mode: HALT, reason_code: OPS_TEST}
  - id: reduce_while_stopped
    action: core.reduce_only_order
    with: {symbol: BTCUSDT, side: sell, notional: 20}
    on_fail: refused
  - id: not_here
    end: BUSINESS_REJECT
  - id: refused
    check: noop
""")
    dry = ws.cli("run", "cancel", "--dry-run", "--output", "json", env=env)
    assert dry.code == 10, dry.text  # none_open fails in a dry-run: nothing was cancelled
    result = ws.cli("run", "cancel", "--output", "json", env=env)
    assert result.code == 0, result.text
    steps = json.loads(result.out)["steps"]
    assert steps["cancel"]["result"]["cancelled"] == 1
    assert "freqtrade refuses force-exits (reduce-only orders) while stopped (HALT)" in steps["reduce_while_stopped"]["error"]
    assert not any(t["has_open_orders"] for t in freqtrade_bot.api("GET", "/status"))


def test_wrong_credentials_fail_clearly_and_name_no_secret(ws: Workspace, freqtrade_bot: Bot) -> None:
    env = configure(ws, freqtrade_bot)
    runbook(ws, "state", """
  - id: state
    check: core.state
""")
    wrong = ws.cli("run", "state", env={**env, "FT_API_PASS": "not-the-password"})
    assert wrong.code == 10 and "refused the credentials (HTTP 401)" in wrong.text, wrong.text
    missing = ws.cli("run", "state", env={"FT_API_USER": freqtrade_bot.username})
    assert missing.code == 10 and "FT_API_PASS (core.password_env) is not set" in missing.text, missing.text
    assert "not-the-password" not in wrong.text


# -- the seed runbooks against freqtrade ----------------------------------------------------

MLPROD_PARAMS = """
replay_cmd: [sh, -c, "echo freqtrade keeps its trades in its own database; no replay suite here", replay_suite]
kill_switch_file: KILL_SWITCH
position_override: config/position_override.json
incident_log: logs/incidents.jsonl
check_monitoring: false
"""


def test_seed_004_loss_limit_breach_on_freqtrade(ws: Workspace, freqtrade_bot: Bot) -> None:
    env = configure(ws, freqtrade_bot)
    ws.write("mlprod-freqtrade.yaml", MLPROD_PARAMS)
    open_trade(freqtrade_bot)
    open_trade(freqtrade_bot, "ETH/USDT", ordertype="limit", price=2500)
    paused = ws.cli("run", "loss-limit-breach", "--params-file", "mlprod-freqtrade.yaml", "--no-input", env=env)
    assert paused.code == 12, paused.text
    assert freqtrade_bot.state() == "stopped", "kill switch engaged: freqtrade stopped"
    assert (ws.root / "KILL_SWITCH").exists()
    assert not any(t["has_open_orders"] for t in freqtrade_bot.api("GET", "/status")), "open orders cancelled"
    run_id = next(iter(ws.evidence_dirs())).name
    assert ws.cli("approve", run_id, "approve_release", "--by", "alice", "--note", "root cause fixed").code == 0
    resumed = ws.cli("resume", run_id, env=env)
    assert resumed.code == 0, resumed.text
    assert freqtrade_bot.state() == "paused", "resumed in ARMED_SAFE: exits only"
    assert not (ws.root / "KILL_SWITCH").exists()
    assert json.loads((ws.root / "config/position_override.json").read_text())["position_size_fraction"] == 0.1
    assert ws.cli("evidence", "verify", run_id).code == 0
    no_secret_anywhere(ws, freqtrade_bot, paused.text, resumed.text)


def test_seed_004_slippage_spike_on_freqtrade(ws: Workspace, freqtrade_bot: Bot) -> None:
    env = configure(ws, freqtrade_bot)
    ws.write("mlprod-freqtrade.yaml", MLPROD_PARAMS)
    result = ws.cli("run", "slippage-spike", "--params-file", "mlprod-freqtrade.yaml", env=env)
    assert result.code == 0, result.text
    assert json.loads((ws.root / "config/position_override.json").read_text()) == {"max_position_pct": 0.005}
    assert freqtrade_bot.state() == "running"


@pytest.fixture
def hl(tmp_path: Path) -> SimWorkspace:
    """The Hyperliquid seed's tools and database from the simulated core; the orders go to freqtrade."""
    return SimWorkspace(tmp_path)


def test_seed_002_reduce_only_validation_on_freqtrade(hl: SimWorkspace, freqtrade_bot: Bot) -> None:
    env = {**configure(hl, freqtrade_bot).copy(), "BINANCE_API_KEY": "x", "BINANCE_API_SECRET": "x",
           "HYPERLIQUID_TARGET_WALLET": "x"}
    hl.write("runbook.yaml", (hl.root / "runbook.yaml").read_text().replace("kill_switch: KILL_SWITCH",
                                                                          "kill_switch: core/KILL_SWITCH"))
    trade = open_trade(freqtrade_bot)
    profile = hl.profile("hyperliquid")
    dry = hl.cli("run", "reduce-only-minimal-validation", "--params-file", profile, "--dry-run", "--output", "json",
                 env=env)
    assert dry.code == 0, dry.text
    plan = json.loads(dry.out)["steps"]["order"]["result"]["plan"]
    assert plan["core_request"]["request"] == "POST /api/v1/forceexit"
    assert plan["core_request"]["body"]["tradeid"] == trade["trade_id"]
    live = hl.cli("run", "reduce-only-minimal-validation", "--params-file", profile, "--no-input", env=env)
    assert live.code == 12, live.text
    run_id = [d.name for d in hl.evidence_dirs() if "reduce-only" in d.name][-1]
    assert hl.cli("approve", run_id, "approve_order", "--by", "alice").code == 0
    resumed = hl.cli("resume", run_id, "--output", "json", env=env)
    steps = json.loads(resumed.out)["steps"]
    assert steps["order"]["result"]["status"] == "FILLED"
    assert float(freqtrade_bot.api("GET", "/status")[0]["amount"]) < float(trade["amount"])  # type: ignore[arg-type]
    # The seed's evidence step reads the Hyperliquid bot's own order_results table, which knows
    # nothing of a freqtrade order: the validation fails and its rollback readiness stops freqtrade.
    assert resumed.code == 60, resumed.text
    assert steps["disable_trading"]["status"] == "ok" and freqtrade_bot.state() == "stopped"
    no_secret_anywhere(hl, freqtrade_bot, dry.out, live.text, resumed.text)
