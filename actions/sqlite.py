"""SQLite actions: `sqlite.exec` (one transaction) and `sqlite.backup` (online backup API, checked)."""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import Plan, StepContext, sha256_file
from transports.sqlite import DB, SQL_PARAMS, connect, jsonable, sql_error
from transports.util import fsync_dir


class SqliteExec:
    """Execute one statement (or a script with `script: true`) in a single transaction."""

    name: ClassVar[str] = "sqlite.exec"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["db", "sql"],
        "properties": {
            "db": DB,
            "sql": {
                "type": "string",
                "minLength": 1,
                "description": "One statement, or a script with `script: true`.",
            },
            "params": SQL_PARAMS,
            "script": {
                "type": "boolean",
                "description": "Run several ;-separated statements (no params). Default false.",
            },
            "create": {
                "type": "boolean",
                "description": "Create the database if missing. Default false.",
            },
            "verify_sql": {
                "type": "string",
                "description": "After a crash: a read-only query whose first value is truthy if the effect is present.",
            },
        },
        "if": {"required": ["script"], "properties": {"script": {"const": True}}},
        "then": {"not": {"required": ["params"]}},
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: db, rowcount, changes (total rows changed), lastrowid (+ rows for RETURNING)."""
        path = ctx.resolve(params["db"])
        sql = params["sql"]
        conn = connect(
            path, readonly=False, create=params.get("create", False), timeout=ctx.timeout_s
        )
        result: dict[str, Any] = {"db": str(path)}
        try:
            conn.execute("BEGIN IMMEDIATE")
            if params.get("script"):
                for statement in _statements(sql):
                    conn.execute(statement)
                cur = None
            else:
                cur = conn.execute(sql, params.get("params", ()))
                if cur.description:
                    result["rows"] = [[jsonable(v) for v in row] for row in cur.fetchall()]
            conn.execute("COMMIT")
        except (sqlite3.Error, sqlite3.Warning, ValueError) as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise sql_error(path, sql, e) from None
        finally:
            changes = conn.total_changes
            conn.close()
        result.update(
            rowcount=cur.rowcount if cur else -1,
            changes=changes,
            lastrowid=cur.lastrowid if cur else None,
        )
        return result

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """The database, the SQL and its parameters."""
        path = ctx.resolve(params["db"])
        first = " ".join(params["sql"].split())[:120]
        return Plan(
            summary=f"execute on {path}: {first}",
            details={
                "db": str(path),
                "exists": path.exists(),
                "sql": params["sql"],
                "params": params.get("params"),
                "script": params.get("script", False),
            },
        )

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """The truthiness of `verify_sql`'s first value (False if the db is missing); else None."""
        if "verify_sql" not in params:
            return None
        path = ctx.resolve(params["db"])
        if not path.exists():
            return False
        try:
            conn = connect(path, readonly=True)
            try:
                row = conn.execute(params["verify_sql"]).fetchone()
            finally:
                conn.close()
        except (PluginError, sqlite3.Error, sqlite3.Warning):
            return None
        return bool(row and row[0])


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (sqlite3.complete_statement), so it runs in our transaction."""
    out: list[str] = []
    current = ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \t\r\n;"):
                out.append(current)
            current = ""
    if current.rstrip(";").strip():
        out.append(current.rstrip(";"))
    return out


class SqliteBackup:
    """Copy a live database with SQLite's online backup API; the copy must pass integrity_check."""

    name: ClassVar[str] = "sqlite.backup"
    mutates: ClassVar[bool] = True
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["db", "dest"],
        "properties": {
            "db": DB,
            "dest": {
                "type": "string",
                "minLength": 1,
                "description": "Backup file; strftime placeholders are rendered in UTC (backup-%Y%m%d-%H%M.db).",
            },
            "overwrite": {
                "type": "boolean",
                "description": "Replace an existing dest. Default false.",
            },
        },
    }

    def _dest(self, params: Mapping[str, Any], ctx: StepContext) -> Path:
        return ctx.resolve(time.strftime(params["dest"], time.gmtime()))

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: source, dest, bytes, sha256, integrity ("ok")."""
        source, dest = ctx.resolve(params["db"]), self._dest(params, ctx)
        if dest.exists() and not params.get("overwrite", False):
            raise PluginError(f"backup destination already exists: {dest}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.tmp")
        src = connect(source, readonly=True, timeout=ctx.timeout_s)
        try:
            copy = sqlite3.connect(tmp)
            try:
                src.backup(copy)
                integrity = "; ".join(str(r[0]) for r in copy.execute("PRAGMA integrity_check"))
            finally:
                copy.close()
            if integrity != "ok":
                raise PluginError(f"backup of {source} failed integrity_check: {integrity[:300]}")
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except sqlite3.Error as e:
            raise PluginError(f"backup of {source} to {dest} failed: {e}") from None
        except OSError as e:
            raise PluginError(f"backup of {source} to {dest} failed: {e.strerror or e}") from None
        finally:
            src.close()
            tmp.unlink(missing_ok=True)
        fsync_dir(dest.parent)
        return {
            "source": str(source),
            "dest": str(dest),
            "bytes": dest.stat().st_size,
            "sha256": sha256_file(dest),
            "integrity": integrity,
        }

    def plan(self, params: Mapping[str, Any], ctx: StepContext) -> Plan:
        """Source and destination (timestamp placeholders rendered as of planning)."""
        source, dest = ctx.resolve(params["db"]), self._dest(params, ctx)
        size = source.stat().st_size if source.exists() else None
        return Plan(
            summary=f"back up {source} to {dest}",
            details={
                "source": str(source),
                "source_exists": size is not None,
                "source_bytes": size,
                "dest": str(dest),
                "dest_exists": dest.exists(),
            },
        )

    def verify(self, params: Mapping[str, Any], ctx: StepContext) -> bool | None:
        """Cannot tell (the destination name depends on the time): None."""
        return None
