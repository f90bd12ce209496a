"""SQLite for the plugins: connections (read-only or read-write), located SQL errors, JSON values."""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

from engine.errors import PluginError

DB = {
    "type": "string",
    "minLength": 1,
    "description": "SQLite database file, relative to the workdir.",
}
SQL_PARAMS = {
    "type": ["array", "object"],
    "description": "Bound parameters: a list for `?`, a mapping for `:name`.",
}
BUSY_TIMEOUT_S = 5.0


def connect(
    path: Path, *, readonly: bool, create: bool = False, timeout: float | None = None
) -> sqlite3.Connection:
    """Open `path`; read-only uses mode=ro. A missing file is a PluginError unless `create`."""
    if not create and not path.exists():
        raise PluginError(f"database not found: {path}")
    mode = "ro" if readonly else ("rwc" if create else "rw")
    uri = f"file:{urllib.parse.quote(str(path), safe='/')}?mode={mode}"
    try:
        conn = sqlite3.connect(
            uri, uri=True, timeout=timeout or BUSY_TIMEOUT_S, isolation_level=None
        )
    except sqlite3.Error as e:
        raise PluginError(f"cannot open database {path}: {e}") from None
    return conn


def sql_error(path: Path, sql: str, error: Exception) -> PluginError:
    """A one-line PluginError naming the database, the error and the SQL."""
    one_line = " ".join(sql.split())
    return PluginError(f"sqlite error in {path}: {error}; SQL: {one_line[:300]}")


def jsonable(value: Any) -> Any:
    """SQLite values as JSON: blobs become hex strings."""
    return value.hex() if isinstance(value, bytes | bytearray | memoryview) else value

