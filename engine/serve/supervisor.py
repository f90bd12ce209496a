"""Runs of serve are child processes of the normal CLI: `run --run-id` to start, `resume` to continue.

A crashing runbook cannot take the server down, and serve is one more actor on the run lifecycle of
SPEC 4.1. Each child holds an flock on `<state_dir>/serve/drivers/RUN_ID.lock` (inherited from serve,
kept for its whole life) so that a restarted serve can tell whether a run it was driving still has a
live process: it starts again only what never got a run record, and resumes what was interrupted.
Children get SIGTERM when serve dies (PR_SET_PDEATHSIG) or stops, and pause as `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import RunbookError
from engine.model import EXIT_CODES
from engine.runs import RunRecord, RunStore, UnknownRun, atomic_write_json, process_alive
from engine.serve.inbox import Inbox, Row
from engine.serve.metrics import Metrics

MAX_ATTEMPTS = 5
_OUTCOME_BY_CODE = {code: outcome.value for outcome, code in EXIT_CODES.items()}


def _child_setup(parent: int) -> None:  # pragma: no cover - runs in the forked child
    """In the child before exec: get SIGTERM when serve dies (Linux), and not outlive a parent already gone."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(75)


class Supervisor:
    """Starts admitted events as runs, resumes interrupted ones, and records how each ended."""

    def __init__(self, config: Config, inbox: Inbox, metrics: Metrics, max_concurrent: int) -> None:
        self.config = config
        self.inbox = inbox
        self.metrics = metrics
        self.max_concurrent = max_concurrent
        self.store = RunStore(config.state_dir)
        self.root = config.state_dir / "serve"
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.orphans: set[str] = set()
        self.wake = asyncio.Event()
        self.stopping = False
        self._reapers: set[asyncio.Task[None]] = set()
        self._last_refresh = 0.0
        self.started_at: dict[str, float] = {}

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Recover what a previous serve left, then start and watch runs until stopped."""
        self.recover()
        while not self.stopping:
            self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.25)
            self.wake.clear()

    def tick(self) -> None:
        """One pass: orphans whose process ended, waiting runs that ended elsewhere, new starts."""
        for run_id in sorted(self.orphans):
            if self._lock_free(run_id):
                self.orphans.discard(run_id)
                row = self.inbox.by_run(run_id)
                if row is not None:
                    self._ended(row, None)
        now = time.monotonic()
        if now - self._last_refresh > 2.0:
            self._last_refresh = now
            self.refresh_waiting()
        if self.stopping:
            return
        free = self.max_concurrent - len(self.procs) - len(self.orphans)
        for row, kind in self.inbox.claim(free):
            self._spawn(row, kind)

    def recover(self) -> None:
        """Events a previous serve was driving: still driven by a live process (watched), or decided now."""
        for row in self.inbox.in_state("running"):
            if self._lock_free(row.run_id):
                self._ended(row, None)
            else:
                self.orphans.add(row.run_id)

    async def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop: SIGTERM every child (each pauses as interrupted, resumable) and wait for them."""
        self.stopping = True
        self.wake.set()
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if self._reapers:
            await asyncio.wait(list(self._reapers), timeout=timeout)

    # -- children ------------------------------------------------------------------

    def _lock_path(self, run_id: str) -> Path:
        return self.root / "drivers" / f"{run_id}.lock"

    def _lock_free(self, run_id: str) -> bool:
        path = self._lock_path(run_id)
        if not path.exists():
            return True
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)
        return True

    def command(self, row: Row, kind: str) -> list[str]:
        """The CLI command line that starts or resumes this event's run."""
        base = [sys.executable, "-m", "engine.cli"]
        if self.config.source is not None:
            base += ["--config", str(self.config.source)]
        operator = f"serve:{row.identity}"
        if kind == "resume":
            return [*base, "resume", row.run_id, "--no-input", "--operator", operator]
        params_file = self.root / "params" / f"{row.run_id}.json"
        atomic_write_json(params_file, row.params)
        cmd = [*base, "run", row.runbook, "--no-input", "--operator", operator, "--run-id", row.run_id,
               "--trigger", json.dumps(row.trigger, default=str, separators=(",", ":")),
               "--params-file", str(params_file)]
        return [*cmd, "--dry-run"] if row.mode == "dry-run" else cmd

    def _spawn(self, row: Row, kind: str) -> None:
        lock = self._lock_path(row.run_id)
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.orphans.add(row.run_id)
            return
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        task = asyncio.get_running_loop().create_task(self._start(row, kind, fd, logs / f"{row.run_id}.log"))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _start(self, row: Row, kind: str, fd: int, log_path: Path) -> None:
        parent = os.getpid()
        try:
            with log_path.open("ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    *self.command(row, kind), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=(fd,), start_new_session=True, preexec_fn=lambda: _child_setup(parent))
        except OSError as exc:
            os.close(fd)
            self.inbox.set_state(row.run_id, "pending" if row.attempts < MAX_ATTEMPTS else "done",
                                 outcome=None if row.attempts < MAX_ATTEMPTS else "INTERNAL_ERROR",
                                 note=f"could not start the run process: {exc}")
            return
        os.close(fd)
        self.procs[row.run_id] = proc
        self.started_at.setdefault(row.run_id, time.monotonic())
        self.metrics.running.set(len(self.procs))
        code = await proc.wait()
        del self.procs[row.run_id]
        self.metrics.running.set(len(self.procs))
        self._ended(row, code)
        self.wake.set()

    # -- how a process ended -----------------------------------------------------------

    def _record(self, run_id: str) -> RunRecord | None:
        try:
            return self.store.load(run_id)
        except (UnknownRun, RunbookError):
            return None

    def _ended(self, row: Row, code: int | None) -> None:
        """Decide what an event's run needs now that no process of serve drives it (code None: unknown)."""
        record = self._record(row.run_id)
        retry_ok = row.attempts < MAX_ATTEMPTS
        if record is None:
            if code is None or code < 0 or self.stopping:
                self.inbox.set_state(row.run_id, "pending" if retry_ok else "done",
                                     outcome=None if retry_ok else "INTERNAL_ERROR",
                                     note="the run process ended before the run started")
            else:
                self.inbox.set_state(row.run_id, "done", outcome=_OUTCOME_BY_CODE.get(code, "INTERNAL_ERROR"),
                                     note=f"`runbook run` exited {code} before the run started (see serve/logs)")
                self.metrics.runs.labels(row.runbook, _OUTCOME_BY_CODE.get(code, "INTERNAL_ERROR")).inc()
            return
        if record.status == "finished":
            self._done(row, record)
        elif record.status == "paused":
            waiting = (record.waiting_for or {}).get("type")
            if waiting == "interrupted" and retry_ok:
                self.inbox.set_state(row.run_id, "resume", note="interrupted; serve resumes it")
            else:
                self.inbox.set_state(row.run_id, "waiting", note=f"paused: {waiting}")
        elif record.host == os.uname().nodename and not process_alive(record.pid) and retry_ok:
            self.inbox.set_state(row.run_id, "resume", note="its process died; serve resumes it")
        else:
            self.inbox.set_state(row.run_id, "waiting", note=f"driven by pid {record.pid} on {record.host}")

    def _done(self, row: Row, record: RunRecord) -> None:
        outcome = record.outcome or "INTERNAL_ERROR"
        self.inbox.set_state(row.run_id, "done", outcome=outcome)
        self.metrics.runs.labels(record.runbook, outcome).inc()
        duration = _seconds_between(record.started_at, record.ended_at)
        if duration is not None:
            self.metrics.run_duration.labels(record.runbook).observe(duration)
        for step, seconds in _step_durations(Path(record.evidence_dir)):
            self.metrics.step_duration.labels(record.runbook, step).observe(seconds)

    def refresh_waiting(self) -> None:
        """Waiting runs that ended (or were resumed) by someone else: recorded as done."""
        for row in self.inbox.in_state("waiting"):
            record = self._record(row.run_id)
            if record is not None and record.status == "finished":
                self._done(row, record)

    def resume_after_approval(self, run_id: str) -> bool:
        """After an approval through the API: resume the run if serve drives it and it waits; True if queued."""
        row = self.inbox.by_run(run_id)
        if row is None or row.state != "waiting":
            return False
        self.inbox.set_state(run_id, "resume", note="approved through the API; serve resumes it")
        self.wake.set()
        return True


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (datetime.fromisoformat(end.replace("Z", "+00:00"))
                - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return None


def _step_durations(directory: Path) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    path = directory / "events.jsonl"
    if not path.exists():
        return out
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                event: dict[str, Any] = json.loads(line)
            except ValueError:
                continue
            data = event.get("data") or {}
            if event.get("type") == "step_finished" and data.get("final") and isinstance(data.get("duration_s"), (int, float)):
                out.append((str(event.get("step")), float(data["duration_s"])))
    return out
