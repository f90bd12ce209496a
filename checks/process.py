"""`process.alive` check: is a pid (given, or read from a pidfile) a live process."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from engine.errors import PluginError
from engine.plugins import StepContext, process_alive


def read_pidfile(path: Path) -> int | None:
    """The pid in a pidfile: a number, or a JSON object with `pid` (a lock payload). None if absent."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PluginError(f"cannot read pidfile {path}: {e.strerror}") from None
    try:
        value = json.loads(text) if text.startswith("{") else int(text.split()[0])
        pid = value["pid"] if isinstance(value, dict) else value
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
            return pid
    except (ValueError, IndexError, KeyError):
        pass
    raise PluginError(f"pidfile {path} does not hold a pid: {text[:80]!r}")


class ProcessAlive:
    """Whether a process is alive; `ok` = alive (or = dead with `should_be_alive: false`)."""

    name: ClassVar[str] = "process.alive"
    mutates: ClassVar[bool] = False
    params_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "pid": {
                "type": "integer",
                "minimum": 1,
                "maximum": 2**31 - 1,
                "description": "Process id.",
            },
            "pidfile": {
                "type": "string",
                "description": "File holding the pid (plain number or JSON with `pid`). "
                "A missing pidfile means not alive.",
            },
            "should_be_alive": {"type": "boolean", "description": "Expect it alive. Default true."},
        },
        "oneOf": [{"required": ["pid"]}, {"required": ["pidfile"]}],
    }

    def run(self, params: Mapping[str, Any], ctx: StepContext) -> dict[str, Any]:
        """Result: pid (None if the pidfile is missing), alive, pidfile_exists (with pidfile), ok."""
        result: dict[str, Any] = {}
        if "pidfile" in params:
            path = ctx.resolve(params["pidfile"])
            pid = read_pidfile(path)
            result.update(pidfile=str(path), pidfile_exists=pid is not None)
        else:
            pid = params["pid"]
        alive = pid is not None and process_alive(pid)
        result.update(pid=pid, alive=alive, ok=alive == params.get("should_be_alive", True))
        return result
