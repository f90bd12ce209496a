"""Atomic file writes, canonical JSON hashing, JSONL appends and the two clocks."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from filelock import FileLock


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form every sha256 in simcore is taken of."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_json(obj: Any) -> str:
    """sha256 hex digest of the canonical JSON of obj."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to path so readers see the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write obj as indented JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync (callers hold the file's lock when it is shared)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line.rstrip("\n") + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_json(path: Path) -> Any:
    """Parse a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def wall_ms() -> int:
    """Wall-clock now in ms; SIMCORE_WALL_MS overrides it (tests, drills)."""
    forced = os.environ.get("SIMCORE_WALL_MS")
    return int(forced) if forced else int(time.time() * 1000)


def iso_utc(ms: int) -> str:
    """ISO-8601 UTC with a Z suffix, second precision."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(text: str) -> int:
    """Inverse of iso_utc (accepts any ISO-8601 form with an offset or Z)."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def int_or_none(v: str | None) -> int | None:
    """int(v), or None when v is None or not an integer."""
    try:
        return None if v is None else int(v)
    except ValueError:
        return None


def file_lock(path: str, timeout: float) -> FileLock:
    """An OS file lock (filelock), imported on first use: it costs a read-only command ~30 ms of imports."""
    from filelock import FileLock

    return FileLock(path, timeout=timeout)
