"""SQLite check and actions against a real database file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from actions.sqlite import SqliteBackup, SqliteExec
from checks.sqlite import SqliteQuery
from engine.errors import PluginError
from engine.plugins import StepContext


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """trades.db with three orders."""
    path = tmp_path / "trades.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, sym TEXT, qty REAL, raw BLOB)")
        conn.executemany(
            "INSERT INTO orders (sym, qty, raw) VALUES (?, ?, ?)",
            [("XAUUSD", 1.5, b"\x01"), ("XAUUSD", 2.0, None), ("EURUSD", 3.0, None)],
        )
    conn.close()
    return path


def _rows(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT * FROM orders ORDER BY id").fetchall()
    finally:
        conn.close()


def test_query_rows_scalar_and_params(ctx: StepContext, db: Path) -> None:
    result = SqliteQuery().run(
        {
            "db": "trades.db",
            "sql": "SELECT sym, qty, raw FROM orders WHERE sym = ?",
            "params": ["XAUUSD"],
        },
        ctx,
    )
    assert result["columns"] == ["sym", "qty", "raw"]
    assert result["rows"] == [
        {"sym": "XAUUSD", "qty": 1.5, "raw": "01"},
        {"sym": "XAUUSD", "qty": 2.0, "raw": None},
    ]
    assert (result["row_count"], result["scalar"], result["truncated"]) == (2, "XAUUSD", False)
    json.dumps(result)
    named = SqliteQuery().run(
        {
            "db": "trades.db",
            "sql": "SELECT count(*) FROM orders WHERE qty > :q",
            "params": {"q": 1.6},
        },
        ctx,
    )
    assert named["scalar"] == 2
    empty = SqliteQuery().run({"db": "trades.db", "sql": "SELECT id FROM orders WHERE 0"}, ctx)
    assert (empty["rows"], empty["scalar"]) == ([], None)
    capped = SqliteQuery().run(
        {"db": "trades.db", "sql": "SELECT id FROM orders", "max_rows": 2}, ctx
    )
    assert capped["row_count"] == 2 and capped["truncated"] is True


def test_query_is_read_only(ctx: StepContext, db: Path) -> None:
    before = _rows(db)
    with pytest.raises(PluginError, match="readonly database; SQL: DELETE FROM orders"):
        SqliteQuery().run({"db": "trades.db", "sql": "DELETE FROM orders"}, ctx)
    assert _rows(db) == before


def test_query_never_creates_a_database(ctx: StepContext, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="database not found: .*ghost.db"):
        SqliteQuery().run({"db": "ghost.db", "sql": "SELECT 1"}, ctx)
    assert not (tmp_path / "ghost.db").exists()


def test_query_sql_error_is_one_line(ctx: StepContext, db: Path) -> None:
    with pytest.raises(PluginError, match="no such table: nope") as info:
        SqliteQuery().run({"db": "trades.db", "sql": "SELECT *\n  FROM nope"}, ctx)
    assert "\n" not in str(info.value)
    with pytest.raises(PluginError, match="one statement"):
        SqliteQuery().run({"db": "trades.db", "sql": "SELECT 1; SELECT 2"}, ctx)


def test_exec_statement(ctx: StepContext, db: Path) -> None:
    result = SqliteExec().run(
        {
            "db": "trades.db",
            "sql": "UPDATE orders SET qty = qty * 2 WHERE sym = ?",
            "params": ["XAUUSD"],
        },
        ctx,
    )
    assert (result["rowcount"], result["changes"]) == (2, 2)
    assert [r[2] for r in _rows(db)] == [3.0, 4.0, 3.0]
    inserted = SqliteExec().run(
        {"db": "trades.db", "sql": "INSERT INTO orders (sym, qty) VALUES ('GBPUSD', 1)"}, ctx
    )
    assert inserted["lastrowid"] == 4


def test_exec_script_is_one_transaction(ctx: StepContext, db: Path) -> None:
    before = _rows(db)
    script = "DELETE FROM orders WHERE sym = 'EURUSD';\nINSERT INTO nope VALUES (1);"
    with pytest.raises(PluginError, match="no such table: nope"):
        SqliteExec().run({"db": "trades.db", "sql": script, "script": True}, ctx)
    assert _rows(db) == before  # the DELETE was rolled back
    ok = SqliteExec().run(
        {
            "db": "trades.db",
            "sql": "DELETE FROM orders WHERE sym = 'EURUSD'; INSERT INTO orders (sym) VALUES ('a;b');",
            "script": True,
        },
        ctx,
    )
    assert ok["changes"] == 2
    assert [r[1] for r in _rows(db)] == ["XAUUSD", "XAUUSD", "a;b"]


def test_exec_missing_db_unless_create(ctx: StepContext, tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="database not found"):
        SqliteExec().run({"db": "new.db", "sql": "CREATE TABLE t (a)"}, ctx)
    assert not (tmp_path / "new.db").exists()
    SqliteExec().run({"db": "new.db", "sql": "CREATE TABLE t (a)", "create": True}, ctx)
    assert (tmp_path / "new.db").exists()


def test_exec_plan_and_verify(ctx: StepContext, db: Path, valid: Callable) -> None:
    params = {
        "db": "trades.db",
        "sql": "DELETE FROM orders WHERE sym = ?",
        "params": ["EURUSD"],
        "verify_sql": "SELECT count(*) = 0 FROM orders WHERE sym = 'EURUSD'",
    }
    plan = SqliteExec().plan(params, ctx)
    assert plan.details["sql"] == params["sql"] and plan.details["params"] == ["EURUSD"]
    assert plan.details["db"] == str(db)
    assert len(_rows(db)) == 3
    assert SqliteExec().verify(params, ctx) is False
    SqliteExec().run(params, ctx)
    assert SqliteExec().verify(params, ctx) is True
    assert SqliteExec().verify({"db": "trades.db", "sql": "x"}, ctx) is None
    assert valid(SqliteExec(), params)
    assert not valid(SqliteExec(), {"db": "d", "sql": "x", "script": True, "params": [1]})


def test_backup_copies_rows_and_checks_integrity(
    ctx: StepContext, db: Path, tmp_path: Path
) -> None:
    live = sqlite3.connect(db)  # an open connection elsewhere does not block the online backup
    try:
        params = {"db": "trades.db", "dest": "backups/trades-%Y%m%d.db"}
        plan = SqliteBackup().plan(params, ctx)
        assert plan.details["source"] == str(db) and "%" not in plan.details["dest"]
        result = SqliteBackup().run(params, ctx)
    finally:
        live.close()
    dest = Path(result["dest"])
    assert dest.parent == tmp_path / "backups" and dest.name.startswith("trades-20")
    assert result["integrity"] == "ok"
    assert _rows(dest) == _rows(db)
    assert result["bytes"] == dest.stat().st_size
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name]
    with pytest.raises(PluginError, match="already exists"):
        SqliteBackup().run(params, ctx)
    assert SqliteBackup().run({**params, "overwrite": True}, ctx)["integrity"] == "ok"
    assert SqliteBackup().verify(params, ctx) is None


def test_backup_of_missing_db(ctx: StepContext) -> None:
    with pytest.raises(PluginError, match="database not found"):
        SqliteBackup().run({"db": "none.db", "dest": "b.db"}, ctx)
