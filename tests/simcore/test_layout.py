"""`simcore init`: layout, schema v3, valid settings, and determinism given the seed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from simcore.core import Core
from simcore.db import content_hash

from .conftest import CFG, run


def test_init_creates_the_seed_layout(tmp_path: Path) -> None:
    res = run(tmp_path, "init", "core", "--seed", "7")
    assert res.returncode == 0, res.stderr
    root = tmp_path / "core"
    for rel in ("config/settings.yaml", "config/schema.json", "state/core.db",
                "data/live/XAUUSD_M1_live.csv", "data/meta_states/ledger.jsonl",
                "logs/meta_cycle.jsonl", "logs/metrics.log"):
        assert (root / rel).is_file(), rel
    for rel in ("data/reports/incidents", "backups"):
        assert (root / rel).is_dir(), rel
    assert not (root / "KILL_SWITCH").exists()
    assert not (root / "data/meta_states/.locks/meta_cycle.lock").exists()
    conn = sqlite3.connect(root / "state/core.db")
    assert conn.execute("select value from system_state where key='schema_version'").fetchone() == ("3",)
    tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"system_state", "audit_log", "order_intents", "order_results", "processed_txs",
            "positions"} <= tables
    assert conn.execute("select count(*) from audit_log").fetchone()[0] == 1
    settings = (root / "config/settings.yaml").read_text()
    for key in ("maintenance_skip_gap", "retry_budget_max_attempts", "retry_budget_window_sec",
                "retry_budget_mode", "filters_enabled", "db_path", "backfill_window_ms", "max_daily_loss_pct"):
        assert key in settings
    res = run(root, "validate-config", *CFG)
    assert (res.returncode, res.stdout) == (0, "")


def test_init_refuses_an_existing_core(core_dir: Path) -> None:
    res = run(core_dir.parent, "init", "core")
    assert res.returncode == 1 and "already initialized" in res.stderr


def _fingerprint(root: Path) -> tuple[str, str, str]:
    core = Core(root)
    return (content_hash(core.db_path), content_hash(core.lay.world_db), core.lay.csv.read_text())


def test_same_seed_same_state_after_ticks(tmp_path: Path) -> None:
    prints = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        core = Core.init(tmp_path / name, seed=seed)
        core.tick(40)
        prints.append(_fingerprint(tmp_path / name))
    assert prints[0] == prints[1]
    assert prints[0][0] != prints[2][0] and prints[0][2] != prints[2][2]


def test_cli_db_hash_and_status(core_dir: Path) -> None:
    run(core_dir, "tick", "--n", "3")
    res = run(core_dir, "db-hash")
    assert res.returncode == 0 and res.stdout.startswith("core_db=")
    res = run(core_dir, "status")
    assert "safety_mode=ARMED_LIVE" in res.stdout
    assert "sim_now_utc=2026-01-22T00:03:00Z" in res.stdout


def test_root_option_anywhere_and_env(core_dir: Path, tmp_path: Path) -> None:
    assert "safety_mode=ARMED_LIVE" in run(tmp_path, "status", "--root", str(core_dir)).stdout
    assert "safety_mode=ARMED_LIVE" in run(tmp_path, "--root", str(core_dir), "status").stdout
    res = run(tmp_path, "status", env={"SIMCORE_ROOT": str(core_dir)})
    assert res.returncode == 0 and "schema_version=3" in res.stdout
    res = run(tmp_path, "status")
    assert res.returncode == 1 and "not a simcore directory" in res.stderr


def test_missing_db_is_a_clear_error(core_dir: Path) -> None:
    (core_dir / "state/core.db").unlink()
    res = run(core_dir, "tick")
    assert res.returncode == 1 and "rebuild-db" in res.stderr
