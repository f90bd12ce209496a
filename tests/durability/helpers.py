"""Shared helpers for the durability suite: run ids, event logs, lock payloads, polling, killing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import Workspace


def write_step_lines(step_ids: list[str], *, verify: bool = False, sleeps: list[float] | None = None) -> str:
    """YAML for shell actions that each append their idempotency token to effects.txt (then sleep)."""
    out = []
    for n, sid in enumerate(step_ids):
        sleep = (sleeps or [0.0] * len(step_ids))[n]
        tail = f"; sleep {sleep:g}" if sleep else ""
        out.append(f"  - id: {sid}\n"
                   f"    action: shell\n"
                   f"    with:\n"
                   f"      argv: [sh, -c, 'echo \"$RUNBOOK_IDEMPOTENCY_TOKEN\" >> effects.txt{tail}']\n")
        if verify:
            out.append(f"      verify_argv: [grep, -qxF, '{{{{ run.id }}}}:{sid}:1', effects.txt]\n")
    return "".join(out)


def run_records(ws: Workspace) -> list[dict[str, Any]]:
    """Every run record in the state directory, oldest first (by start time)."""
    root = ws.root / ".runbook" / "runs"
    if not root.exists():
        return []
    records = []
    for path in root.glob("*.json"):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    return sorted(records, key=lambda r: (r.get("started_at") or "", r["run_id"]))


def run_record(ws: Workspace, run_id: str) -> dict[str, Any]:
    """One run record."""
    return json.loads((ws.root / ".runbook" / "runs" / f"{run_id}.json").read_text(encoding="utf-8"))


def latest_run_id(ws: Workspace) -> str | None:
    """The newest run's id, or None."""
    records = run_records(ws)
    return records[-1]["run_id"] if records else None


def only_run_id(ws: Workspace) -> str:
    """The id of the one run in the state directory."""
    records = run_records(ws)
    assert len(records) == 1, [r["run_id"] for r in records]
    return records[0]["run_id"]


def events(ws: Workspace, run_id: str) -> list[dict[str, Any]]:
    """The complete records of a run's events.jsonl."""
    path = ws.root / "evidence" / run_id / "events.jsonl"
    out = []
    with path.open("rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                out.append(json.loads(line))
    return out


def of_type(evs: list[dict[str, Any]], kind: str, step: str | None = None) -> list[dict[str, Any]]:
    """Events of one type (and step)."""
    return [e for e in evs if e["type"] == kind and (step is None or e.get("step") == step)]


def status_json(ws: Workspace, run_id: str) -> dict[str, Any]:
    """`runbook status RUN_ID --output json`."""
    result = ws.cli("status", run_id, "--output", "json")
    assert result.code == 0, result.text
    return json.loads(result.out)


def runs_json(ws: Workspace) -> list[dict[str, Any]]:
    """`runbook runs --output json`."""
    result = ws.cli("runs", "--output", "json")
    assert result.code == 0, result.text
    return json.loads(result.out)


def lock_payload(ws: Workspace, name: str) -> dict[str, Any]:
    """The payload of a lock file under the state directory."""
    return json.loads((ws.root / ".runbook" / "locks" / f"{name}.lock").read_text(encoding="utf-8"))


def effect_lines(ws: Workspace, name: str = "effects.txt") -> list[str]:
    """Non-empty lines of an effects file (missing file = no lines)."""
    path = ws.root / name
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line] if path.exists() else []


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until `predicate()` is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie waits for init, which may be slow to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_pidfile(path: Path) -> None:
    """SIGKILL the process whose pid a step wrote to `path` (an orphaned step child), if any."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    from engine.runs import process_alive

    wait_for(lambda: not process_alive(pid), what=f"killed step child {pid} to be gone (it holds the run's lock)")


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """Wait for a started CLI process; its exit code and stdout+stderr."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
