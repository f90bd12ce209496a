"""core.db: the seed-002 SQLite state (schema v3), transactions and the audit log."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3

DDL = """
CREATE TABLE IF NOT EXISTS system_state (
    key TEXT PRIMARY KEY,
    value TEXT,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ms INTEGER NOT NULL,
    category TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    from_value TEXT,
    to_value TEXT,
    reason_code TEXT,
    reason_message TEXT,
    details TEXT
);
CREATE TABLE IF NOT EXISTS order_intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL UNIQUE,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    qty REAL NOT NULL,
    notional REAL,
    order_type TEXT NOT NULL,
    limit_price REAL,
    reduce_only INTEGER NOT NULL,
    source TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS order_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    client_order_id TEXT NOT NULL UNIQUE REFERENCES order_intents(client_order_id),
    status TEXT NOT NULL,
    exchange_order_id TEXT,
    filled_qty REAL NOT NULL DEFAULT 0,
    avg_price REAL,
    error_code TEXT,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_ms INTEGER,
    contract_version INTEGER NOT NULL DEFAULT 1,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed_txs (
    event_key TEXT PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    processed_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    symbol TEXT PRIMARY KEY,
    qty REAL NOT NULL,
    avg_price REAL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS equity_curve (
    ts_ms INTEGER PRIMARY KEY,
    equity REAL NOT NULL,
    peak REAL NOT NULL,
    drawdown REAL NOT NULL
);
"""

OPEN_STATUSES = ("PENDING", "NEW", "OPEN", "UNKNOWN")


def connect(path: Path) -> sqlite3.Connection:
    """Open a connection in autocommit mode (transactions are explicit, see tx())."""
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


@contextmanager
def tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time across processes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def create_schema(conn: sqlite3.Connection, now_ms: int, mode: str, code: str, message: str) -> None:
    """Create the v3 tables and the initial system_state rows."""
    conn.executescript(DDL)
    with tx(conn):
        for key, value in {
            "schema_version": str(SCHEMA_VERSION),
            "safety_mode": mode,
            "safety_reason_code": code,
            "safety_reason_message": message,
            "safety_changed_ms": str(now_ms),
        }.items():
            set_state(conn, key, value, now_ms)
        audit(conn, now_ms, "safety", "init", "simcore", None, mode, code, message)


def get_state(conn: sqlite3.Connection) -> dict[str, str]:
    """All system_state rows as a dict."""
    return {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM system_state")}


def set_state(conn: sqlite3.Connection, key: str, value: Any, now_ms: int) -> None:
    """Upsert one system_state key (value stored as text)."""
    conn.execute(
        "INSERT INTO system_state(key, value, updated_ms) VALUES (?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value=excluded.value, updated_ms=excluded.updated_ms",
        (key, None if value is None else str(value), now_ms),
    )


def audit(
    conn: sqlite3.Connection,
    ts_ms: int,
    category: str,
    action: str,
    actor: str,
    from_value: str | None = None,
    to_value: str | None = None,
    reason_code: str | None = None,
    reason_message: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """Append one audit_log row; returns its id."""
    cur = conn.execute(
        "INSERT INTO audit_log(ts_ms, category, action, actor, from_value, to_value, "
        "reason_code, reason_message, details) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            ts_ms,
            category,
            action,
            actor,
            from_value,
            to_value,
            reason_code,
            reason_message,
            None if details is None else json.dumps(details, sort_keys=True),
        ),
    )
    return int(cur.lastrowid or 0)


def content_hash(path: Path) -> str:
    """sha256 of the SQL dump of a database: equal content gives equal hash."""
    conn = sqlite3.connect(str(path))
    try:
        h = hashlib.sha256()
        for line in conn.iterdump():
            h.update(line.encode("utf-8") + b"\n")
        return h.hexdigest()
    finally:
        conn.close()
