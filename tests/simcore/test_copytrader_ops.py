"""Seed 002's ops tools through the real CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from .conftest import CFG, run


def audit_rows(root: Path) -> list[tuple]:
    conn = sqlite3.connect(root / "state/core.db")
    return conn.execute("select category, action, actor, from_value, to_value, reason_code, "
                        "reason_message from audit_log order by id").fetchall()


def test_hash_config_is_sha256_of_canonical_settings(core_dir: Path) -> None:
    a = run(core_dir, "hash-config", "--config", "config/settings.yaml")
    assert a.returncode == 0 and a.stdout.startswith("config_hash=") and len(a.stdout.strip()) == 12 + 64
    cfg = core_dir / "config/settings.yaml"
    cfg.write_text("# a comment changes nothing\n" + cfg.read_text())
    assert run(core_dir, "hash-config", "--config", "config/settings.yaml").stdout == a.stdout
    cfg.write_text(cfg.read_text().replace("max_drawdown_pct: 5.0", "max_drawdown_pct: 6.0"))
    assert run(core_dir, "hash-config", "--config", "config/settings.yaml").stdout != a.stdout


@pytest.mark.parametrize("old,new,message", [
    ("retry_budget_mode: ARMED_SAFE", "retry_budget_mode: SOMETIMES", "is not one of"),
    ("filters_enabled: true", "filters_enabled: 3", "is not of type 'boolean'"),
    ("backfill_window_ms: 3600000\n", "", "'backfill_window_ms' is a required property"),
    ("mode: live", "mode: live\nsurprise: 1", "additional property 'surprise'"),
    ("  maintenance_skip_gap: false", "maintenance_skip_gap false", "expected 'key: value'"),
])
def test_validate_config_lists_errors(core_dir: Path, old: str, new: str, message: str) -> None:
    cfg = core_dir / "config/settings.yaml"
    text = cfg.read_text()
    assert old in text
    cfg.write_text(text.replace(old, new, 1))
    res = run(core_dir, "validate-config", *CFG)
    assert res.returncode == 1 and message in res.stdout


def test_preflight_ok_and_schema_mismatch(core_dir: Path) -> None:
    res = run(core_dir, "preflight", *CFG, "--exchange-time")
    assert res.returncode == 0, res.stdout
    out = res.stdout.splitlines()
    assert out[-1] == "preflight_ok"
    keys = [line.split("=")[0] for line in out[:-1]]
    assert {"local_time_ms", "exchange_time_ms", "time_offset_ms", "schema_version"} <= set(keys)
    run(core_dir, "inject", "schema_mismatch")
    res = run(core_dir, "preflight", *CFG)
    assert res.returncode == 1 and "preflight_failed reason=SCHEMA_VERSION_MISMATCH" in res.stdout
    run(core_dir, "inject", "broker_down")
    assert "EXCHANGE_UNREACHABLE" in run(core_dir, "preflight", *CFG, "--exchange-time").stdout


def test_post_start_and_validation_bundle(core_dir: Path, tmp_path: Path) -> None:
    run(core_dir, "tick", "--n", "3")
    res = run(core_dir, "post-start", *CFG, "--metrics-tail", "2")
    assert res.returncode == 0, res.stdout
    for needle in ("safety_mode=ARMED_LIVE", "safety_reason_code=STARTUP", "last_processed_timestamp_ms=",
                   "last_processed_event_key=XAUUSD:M1:", "audit_log_count=", "poststart_ok"):
        assert needle in res.stdout
    assert res.stdout.count('"ts_utc"') == 2
    out = tmp_path / "evidence/ops_validation_run.txt"
    for _ in range(2):
        res = run(core_dir, "ops-validate-run", *CFG, "--exchange-time", "--metrics-tail", "5",
                  "--output", str(out))
        assert res.returncode == 0
    assert out.read_text().count("=== ops_validate_run") == 2
    run(core_dir, "kill-switch", "engage", "--reason", "x")
    res = run(core_dir, "post-start", *CFG)
    assert res.returncode == 1 and "poststart_failed reason=HALT:KILL_SWITCH_ENGAGED" in res.stdout


def test_reset_safety_rules_and_audit(core_dir: Path) -> None:
    args = ["reset-safety", *CFG, "--reason-code", "MANUAL_PROMOTE", "--reason-message", "ok"]
    res = run(core_dir, *args, "--mode", "ARMED_SAFE")
    assert res.returncode == 1 and "not HALT" in res.stdout
    res = run(core_dir, *args, "--mode", "ARMED_SAFE", "--allow-non-halt")
    assert res.returncode == 0 and "reset_ok" in res.stdout
    assert audit_rows(core_dir)[-1] == ("safety", "set_mode", "ops_reset_safety", "ARMED_LIVE",
                                        "ARMED_SAFE", "MANUAL_PROMOTE", "ok")
    run(core_dir, "inject", "backfill_window_exceeded")
    assert run(core_dir, *args, "--mode", "ARMED_LIVE").returncode == 1
    res = run(core_dir, "reset-safety", *CFG, "--mode", "ARMED_SAFE", "--reason-code", "MAINTENANCE_SKIP",
              "--reason-message", "Maintenance skip reset")
    assert res.returncode == 0 and "previous_mode=HALT" in res.stdout
    assert audit_rows(core_dir)[-1][4:6] == ("ARMED_SAFE", "MAINTENANCE_SKIP")


def test_rebuild_db_backs_up_and_recreates_v3(core_dir: Path) -> None:
    run(core_dir, "tick", "--n", "5")
    assert run(core_dir, "rebuild-db", *CFG, "--backup").returncode == 1
    res = run(core_dir, "rebuild-db", *CFG, "--backup", "--force")
    assert res.returncode == 0 and res.stdout.strip().endswith("db_rebuilt")
    backups = list((core_dir / "state").glob("core.db.bak-*"))
    assert len(backups) == 1 and len(backups[0].name) == len("core.db.bak-YYYYMMDD-HHMM")
    conn = sqlite3.connect(core_dir / "state/core.db")
    assert conn.execute("select value from system_state where key='schema_version'").fetchone() == ("3",)
    assert conn.execute("select count(*) from order_results").fetchone() == (0,)
    old = sqlite3.connect(backups[0])
    assert old.execute("select count(*) from processed_txs").fetchone()[0] > 240


def test_reduce_only_order_cli(core_dir: Path) -> None:
    args = ["reduce-only-order", "--symbol", "BTCUSDT", "--side", "sell", "--notional", "20",
            "--client-order-id", "rv-1"]
    first = run(core_dir, *args)
    assert first.returncode == 0 and "status=FILLED" in first.stdout and "exchange_order_id=SIM-" in first.stdout
    again = run(core_dir, *args)
    assert again.returncode == 0 and "idempotent_replay=True" in again.stdout
    assert first.stdout.split("idempotent_replay")[0] == again.stdout.split("idempotent_replay")[0]
    up = run(core_dir, "reduce-only-order", "--symbol", "BTCUSDT", "--side", "buy", "--notional", "20",
             "--client-order-id", "rv-2")
    assert up.returncode == 1 and "would increase" in up.stdout
