"""File checks: `file.exists`, `file.age`, `file.json`, `jsonl.tail`."""

from __future__ import annotations

import json
import os
import stat
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import StepContext
from transports.util import DURATION, read_text, seconds, utc_iso

PATH = {
    "type": "string",
    "minLength": 1,
    "description": "File path, relative to the run's workdir.",
}


def _stat(path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise PluginError(f"file not found: {path}") from None
    except OSError as e:
        raise PluginError(f"cannot stat {path}: {e.strerror}") from None


class FileExists:
    """Whether a path exists; `ok` = exists (or = absent with `should_exist: false`)."""

    name: ClassVar[str] = "file.exists"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": PATH,
            "should_exist": {
                "type": "boolean",
                "description": "Expect the path to exist. Default true.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: path, exists, is_file, is_dir, size, mtime (epoch s), ok."""
        path = ctx.resolve(params["path"])
        try:
            st: os.stat_result | None = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            st = None
        except OSError as e:
            raise PluginError(f"cannot stat {path}: {e.strerror}") from None
        exists = st is not None
        return {
            "path": str(path),
            "exists": exists,
            "is_file": bool(st and stat.S_ISREG(st.st_mode)),
            "is_dir": bool(st and stat.S_ISDIR(st.st_mode)),
            "size": st.st_size if st else None,
            "mtime": st.st_mtime if st else None,
            "ok": exists == params.get("should_exist", True),
        }


class FileAge:
    """Seconds since a file was last modified; `ok` = age <= max_age when given."""

    name: ClassVar[str] = "file.age"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": PATH,
            "max_age": {
                **DURATION,
                "description": "Oldest acceptable age (seconds or 5m, 1h ...).",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: path, age_s, mtime_utc, max_age_s, ok. A missing file is a PluginError."""
        path = ctx.resolve(params["path"])
        st = _stat(path)
        age = round(time.time() - st.st_mtime, 3)
        max_age = seconds(params.get("max_age"))
        return {
            "path": str(path),
            "age_s": age,
            "mtime_utc": utc_iso(st.st_mtime),
            "max_age_s": max_age,
            "ok": max_age is None or age <= max_age,
        }


class FileJson:
    """A JSON file's content as `data`; invalid JSON fails naming line and column."""

    name: ClassVar[str] = "file.json"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {"path": PATH},
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: path, data."""
        path = ctx.resolve(params["path"])
        text = read_text(path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PluginError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        return {"path": str(path), "data": data}


def _field(record: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(record, dict) or part not in record:
            return _MISSING
        record = record[part]
    return record


_MISSING = object()


class JsonlTail:
    """The last `n` records of a JSON-lines file that match `where` (filter first, then tail)."""

    name: ClassVar[str] = "jsonl.tail"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": PATH,
            "n": {
                "type": "integer",
                "minimum": 1,
                "description": "How many records to keep. Default 50.",
            },
            "where": {
                "type": "object",
                "description": "field -> value equality filter ('a.b' reaches nested fields), "
                "applied to every record before the last n are taken.",
            },
        },
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: path, records, count, matched (all matching records), bad_lines."""
        path = ctx.resolve(params["path"])
        where = params.get("where", {})
        tail: deque[Any] = deque(maxlen=params.get("n", 50))
        bad = matched = 0
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        bad += 1
                        continue
                    if all(_field(record, k) == v for k, v in where.items()):
                        matched += 1
                        tail.append(record)
        except FileNotFoundError:
            raise PluginError(f"file not found: {path}") from None
        except OSError as e:
            raise PluginError(f"cannot read {path}: {e.strerror}") from None
        records = list(tail)
        return {
            "path": str(path),
            "records": records,
            "count": len(records),
            "matched": matched,
            "bad_lines": bad,
        }
