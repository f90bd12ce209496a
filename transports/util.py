"""Small helpers of the built-in plugins: durations, timeouts, file hashes, durable renames, text files.

Durations use the engine's one grammar (`engine.plugins.parse_duration`); plugin params also
accept a plain number of seconds.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from engine.errors import PluginError
from engine.plugins import (
    DURATION_EXAMPLES,
    DURATION_PATTERN,
    StepContext,
    parse_duration,
    sha256_file,
)

__all__ = ["DURATION", "atomic_write", "atomic_write_text", "effective_timeout", "fsync_dir", "read_text", "seconds", "sha256_file", "utc_iso"]

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


def atomic_write(path: Path, fill: Callable[[IO[bytes]], object], mode: int | None = None) -> None:
    """Write via a temp file in the same directory, fsync, rename over `path`, fsync the directory.

    New files get 0o666 minus the umask unless `mode`; an existing file keeps its mode.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    if mode is None and path.exists():
        mode = path.stat().st_mode & 0o7777
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PluginError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of UTF-8 text (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
