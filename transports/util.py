"""Small helpers of the built-in plugins: durations, timeouts, file hashes, durable renames, text files.

Durations use the engine's one grammar (`engine.plugins.parse_duration`); plugin params also
accept a plain number of seconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import PluginError
from engine.plugins import (
    DURATION_EXAMPLES,
    DURATION_PATTERN,
    StepContext,
    parse_duration,
    sha256_file,
)

__all__ = ["DURATION", "effective_timeout", "fsync_dir", "read_text", "seconds", "sha256_file", "utc_iso"]

DURATION = {
    "type": ["number", "string"],
    "pattern": DURATION_PATTERN,
    "description": f"Seconds as a number, or a duration string: {DURATION_EXAMPLES}.",
}


def seconds(value: float | int | str | None) -> float | None:
    """A number of seconds, or a duration string like '5m', as float seconds (None stays None)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"not a duration: {value!r}") from None


def effective_timeout(
    params: Mapping[str, Any], ctx: StepContext, default: float | None
) -> float | None:
    """The smaller of the `timeout` param (or `default`) and the step's timeout; None = unbounded."""
    own = seconds(params.get("timeout", default))
    limits = [t for t in (own, ctx.timeout_s) if t is not None]
    return min(limits) if limits else None


def utc_iso(epoch_s: float) -> str:
    """An epoch timestamp as RFC 3339 UTC with a trailing Z."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat().replace("+00:00", "Z")


def fsync_dir(directory: Path) -> None:
    """Make a rename or create inside `directory` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_text(path: Path) -> str:
    """A UTF-8 text file's content; PluginError naming the path if missing or unreadable."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PluginError(f"file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise PluginError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise PluginError(f"cannot read {path}: {e.strerror}") from None
