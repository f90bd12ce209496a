"""Run records under the state directory: one JSON file per run, written atomically."""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import StateCorrupt, UnknownRun
from engine.vocabulary import RunStatus


def hostname() -> str:
    """This machine's name (the kernel's node name, as socket.gethostname gives it)."""
    return os.uname().nodename


@dataclass
class RunRecord:
    """What `runbook runs` / `status` / `resume` know about a run without reading its evidence."""

    run_id: str
    runbook: str
    runbook_path: str
    runbook_sha256: str
    mode: str
    operator: str
    params: dict[str, Any]
    evidence_dir: str
    started_at: str
    status: str = RunStatus.RUNNING  # a RunStatus (never INTERRUPTED); plain text when read back
    outcome: str | None = None
    exit_code: int | None = None
    ended_at: str | None = None
    waiting_for: dict[str, Any] | None = None
    idempotency_key: str | None = None
    idempotency_key_sha256: str | None = None
    trigger: Any = None
    parent_run_id: str | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=hostname)
    assume: dict[str, str] = field(default_factory=dict)
    last_event_hash: str | None = None
    runbook_version: int | None = None


RUN_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[a-z0-9][a-z0-9-]{0,127}-[0-9a-f]{6}")


def new_run_id(runbook: str) -> str:
    """A sortable, unique run id: UTC time, runbook name, random suffix."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{runbook}-{secrets.token_hex(3)}"


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a temp file, fsync, rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from a small state file, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RunStore:
    """Run records in `<state_dir>/runs/<run_id>.json`."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "runs"

    def path(self, run_id: str) -> Path:
        """Where a run's record lives; UnknownRun (exit 2) for anything that is not a run id."""
        if not RUN_ID.fullmatch(run_id):
            raise UnknownRun(run_id, well_formed=False)
        return self.root / f"{run_id}.json"

    def save(self, record: RunRecord) -> None:
        """Write a run record atomically."""
        atomic_write_json(self.path(record.run_id), asdict(record))

    def load(self, run_id: str) -> RunRecord:
        """A run record; UnknownRun (exit 2) if there is no such run."""
        path = self.path(run_id)
        if not path.exists():
            raise UnknownRun(run_id, well_formed=True)
        try:
            return RunRecord(**json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as exc:
            raise StateCorrupt(f"{path}: run record is unreadable ({exc})") from None

    def all(self) -> list[RunRecord]:
        """Every run record, oldest first."""
        if not self.root.exists():
            return []
        out = []
        for path in sorted(self.root.glob("*.json")):
            try:
                out.append(RunRecord(**json.loads(path.read_text(encoding="utf-8"))))
            except (ValueError, TypeError):
                continue
        return out


def process_alive(pid: int) -> bool:
    """True when a process with that pid runs on this host (EPERM counts as alive, a zombie as dead)."""
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


def effective_status(record: RunRecord) -> str:
    """`running`, `paused`, `finished`, or `interrupted` (running but its process is gone)."""
    if record.status == RunStatus.RUNNING and record.host == hostname() and not process_alive(record.pid):
        return RunStatus.INTERRUPTED
    return record.status
