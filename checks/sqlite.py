"""`sqlite.query` check: one query on a read-only connection (never creates the database)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any, ClassVar

from engine.plugins import StepContext
from transports.sqlite import DB, SQL_PARAMS, connect, jsonable, sql_error


class SqliteQuery:
    """Run one SQL query read-only; rows come back as dicts by column name."""

    name: ClassVar[str] = "sqlite.query"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["db", "sql"],
        "properties": {
            "db": DB,
            "sql": {
                "type": "string",
                "minLength": 1,
                "description": "One SQL statement (read-only).",
            },
            "params": SQL_PARAMS,
            "max_rows": {
                "type": "integer",
                "minimum": 1,
                "description": "Keep at most this many rows (then `truncated`). Default 1000.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: db, columns, rows, row_count, scalar (first column of first row), truncated."""
        path = ctx.resolve(params["db"])
        sql = params["sql"]
        max_rows = params.get("max_rows", 1000)
        conn = connect(path, readonly=True, timeout=ctx.timeout_s)
        try:
            cur = conn.execute(sql, params.get("params", ()))
            columns = [d[0] for d in cur.description or ()]
            raw = cur.fetchmany(max_rows + 1)
        except (sqlite3.Error, sqlite3.Warning, ValueError) as e:
            raise sql_error(path, sql, e) from None
        finally:
            conn.close()
        rows = [
            {c: jsonable(v) for c, v in zip(columns, row, strict=True)} for row in raw[:max_rows]
        ]
        return {
            "db": str(path),
            "columns": columns,
            "rows": rows,
            "row_count": len(rows),
            "scalar": jsonable(raw[0][0]) if raw and columns else None,
            "truncated": len(raw) > max_rows,
        }
