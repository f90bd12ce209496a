"""Small helpers shared by the built-in plugins (not part of the plugin contract)."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.plugins import StepContext

DURATION = {
    "type": ["number", "string"],
    "pattern": r"^\d+(\.\d+)?(ms|s|m|h|d)$",
    "description": "Seconds as a number, or a duration string: 500ms, 30s, 5m, 1h, 2d.",
}
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: float | int | str | None) -> float | None:
    """A number of seconds, or a duration string like '5m', as float seconds (None stays None)."""
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", value.strip())
    if not match:
        raise ValueError(f"not a duration: {value!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def effective_timeout(
    params: Mapping[str, Any], ctx: StepContext, default: float | None
) -> float | None:
    """The smaller of the `timeout` param (or `default`) and the step's timeout; None = unbounded."""
    own = seconds(params.get("timeout", default))
    limits = [t for t in (own, ctx.timeout_s) if t is not None]
    return min(limits) if limits else None


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
