"""One driver per run: an OS lock per run id, held for as long as a process drives the run.

The lock is `flock` on `<state_dir>/drivers/<run_id>.lock`. Its descriptor is
inherited by the processes a step starts, so a step's process group that
outlives a killed engine still holds the run: nothing resumes or cancels it
while that step may still be acting. The file's content names the driver.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import RunbookError
from engine.runs import process_alive, read_json_object
from engine.vocabulary import Outcome


class RunDriven(RunbookError):
    """Another process drives this run (exit 40)."""

    outcome = Outcome.LOCK_TIMEOUT


@dataclass
class Driver:
    """This process drives the run until `release`."""

    path: Path
    fd: int

    def release(self) -> None:
        """Give the run up (also for every process that inherited the lock). Idempotent."""
        if self.fd < 0:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)
            self.fd = -1


def lock_path(state_dir: Path, run_id: str) -> Path:
    """Where the driver lock of a run lives."""
    return state_dir / "drivers" / f"{run_id}.lock"


def take(state_dir: Path, run_id: str, command: str) -> Driver:
    """Become the run's driver, or raise RunDriven naming the driver that holds it."""
    path = lock_path(state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDriven(held_message(run_id, _current_holder(path))) from None
    payload = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(), "command": command,
               "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(payload).encode("utf-8"), 0)
    os.set_inheritable(fd, True)
    return Driver(path, fd)


def _current_holder(path: Path) -> dict[str, Any]:
    """The holder's payload; a driver that has just taken the lock writes it a moment later, so read again briefly."""
    import time

    holder = read_holder(path)
    for _ in range(40):
        pid = holder.get("pid")
        if isinstance(pid, int) and process_alive(pid):
            break
        time.sleep(0.025)
        holder = read_holder(path)
    return holder


def read_holder(path: Path) -> dict[str, Any]:
    """Who last took the lock (best effort)."""
    return read_json_object(path) or {}


def held_message(run_id: str, holder: dict[str, Any]) -> str:
    """Why the run cannot be driven now, naming its driver."""
    pid, host = holder.get("pid"), holder.get("host")
    who = f"pid {pid} on {host}" if pid else "another process"
    if pid and host == socket.gethostname() and not process_alive(int(pid)):
        return (f"run {run_id} is still held: its driver ({who}, `runbook {holder.get('command')}`) is gone but a "
                f"process one of its steps started is still running and may still be acting; wait for it to end "
                f"(`fuser {lock_path_hint(run_id)}` lists it) and try again")
    return (f"run {run_id} is driven by {who} (`runbook {holder.get('command', '?')}` since "
            f"{holder.get('since', '?')}); try again when it has stopped")


def lock_path_hint(run_id: str) -> str:
    """The lock file relative to the state directory, for messages."""
    return f"<state_dir>/drivers/{run_id}.lock"
