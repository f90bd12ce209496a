"""Run locks (seed 000's semantics): a real OS lock plus a human-readable payload file.

The OS lock (filelock) guarantees that two processes racing cannot both win.
The payload `{active, pid, host, start_ts_utc, reason, cmd, run_id}` tells
operators who holds it; a payload left `active` by an owner that is gone is a
stale lock, broken only on request (`--force-lock-break --reason`).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import LockNotAcquired
from engine.model import LockSpec
from engine.redact import mask
from engine.runs import atomic_write_json, process_alive, read_json_object
from engine.vocabulary import Outcome

POLL_S = 0.05


@dataclass
class HeldLock:
    """A lock this process holds; `release` marks it inactive and drops the OS lock."""

    path: Path
    os_lock: Any
    payload: dict[str, Any]
    broken: dict[str, Any] | None = None

    def release(self) -> None:
        """Mark the payload inactive (written atomically) and release the OS lock. Idempotent."""
        if self.os_lock is None:
            return
        atomic_write_json(self.path, {**self.payload, "active": 0, "end_ts_utc": _now_iso()})
        self.os_lock.release()
        self.os_lock = None


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age_s(payload: dict[str, Any]) -> float | None:
    try:
        started = datetime.strptime(str(payload.get("start_ts_utc")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return (datetime.now(UTC) - started).total_seconds()


def read_payload(path: Path) -> dict[str, Any] | None:
    """The lock payload, or None when there is no (readable) lock file."""
    return read_json_object(path)


def assess(payload: dict[str, Any] | None, ttl_s: float) -> str:
    """`free`, `held` (owner alive or unknown) or `stale` (owner dead here, or another host's lock past ttl)."""
    if not payload or not int(payload.get("active") or 0):
        return "free"
    same_host = payload.get("host") == socket.gethostname()
    pid = payload.get("pid")
    if same_host and isinstance(pid, int):
        return "held" if process_alive(pid) else "stale"
    age = _age_s(payload)
    return "stale" if age is not None and age > ttl_s else "held"


def acquire(lock_dir: Path, spec: LockSpec, run_id: str, reason: str | None,
            force_break: bool, resuming: bool = False, command: str = "run") -> HeldLock:
    """Take the lock or raise LockNotAcquired; waits up to `spec.wait_s` while it is held.

    A resumed run may take over a stale lock that its own earlier process left behind.
    """
    from filelock import FileLock, Timeout

    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{spec.name}.lock"
    os_lock = FileLock(str(path) + ".flock")
    deadline = time.monotonic() + spec.wait_s
    held = Outcome.BUSINESS_SKIP if spec.on_held == "skip" else Outcome.LOCK_TIMEOUT
    while True:
        try:
            os_lock.acquire(timeout=0)
        except Timeout:
            payload = read_payload(path)
            if time.monotonic() >= deadline:
                raise LockNotAcquired(_held_message(spec, payload), held, payload) from None
            time.sleep(POLL_S)
            continue
        payload = read_payload(path)
        state = assess(payload, spec.ttl_s)
        if state == "held":
            os_lock.release()
            if time.monotonic() >= deadline:
                raise LockNotAcquired(_held_message(spec, payload), held, payload)
            time.sleep(POLL_S)
            continue
        broken = None
        if state == "stale":
            assert payload is not None
            if resuming and payload.get("run_id") == run_id:
                broken = {"previous": payload, "reason": "resumed run takes over the lock its crashed process left"}
            elif not force_break or not reason:
                os_lock.release()
                raise LockNotAcquired(
                    f"lock '{spec.name}' is stale (owner pid {payload.get('pid')} on {payload.get('host')} "
                    f"since {payload.get('start_ts_utc')} is gone); break it with --force-lock-break --reason TEXT",
                    Outcome.LOCK_TIMEOUT, payload)
            else:
                broken = {"previous": payload, "reason": reason}
        mine = {
            "active": 1,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "start_ts_utc": _now_iso(),
            "reason": mask(reason) if reason else "runbook run",
            "cmd": f"runbook {command} (run {run_id})",
            "run_id": run_id,
        }
        atomic_write_json(path, mine)
        return HeldLock(path=path, os_lock=os_lock, payload=mine, broken=broken)


def _held_message(spec: LockSpec, payload: dict[str, Any] | None) -> str:
    owner = f" by pid {payload.get('pid')} on {payload.get('host')} (run {payload.get('run_id')}) since {payload.get('start_ts_utc')}" if payload else ""
    return f"lock '{spec.name}' is held{owner}; waited {spec.wait_s:g}s"
