"""Runs of serve are child processes of the normal CLI: `run --run-id` to start, `resume` to continue.

A crashing runbook cannot take the server down, and serve is one more actor on the run lifecycle of
SPEC 4.1. A run process is a warm worker (engine.serve.worker: the engine already imported) that
receives its `runbook` command line on stdin. Each worker holds an flock on
`<state_dir>/serve/drivers/WORKER.lock` (inherited from serve, kept for its whole life), and the
inbox records which worker an event was given to *before* it is given: a restarted serve can tell
whether a run it was driving still has a live process, starts again only what never got a run
record, and resumes what was interrupted. Workers get SIGTERM when serve dies (PR_SET_PDEATHSIG)
or stops, and pause as `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import RunbookError
from engine.runs import RunRecord, RunStore, atomic_write_json, process_alive
from engine.serve.inbox import Inbox, Row
from engine.serve.metrics import Metrics
from engine.vocabulary import EXIT_CODES, Mode, RunStatus

MAX_ATTEMPTS = 5
log = logging.getLogger("runbook.serve")
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


@dataclass
class _Worker:
    """A warm run process and the name of the lock file it holds."""

    proc: asyncio.subprocess.Process
    driver: str
    log: Path


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
        self.orphans: dict[str, str] = {}  # run id -> driver lock of a process serve does not own
        self._spare: _Worker | None = None
        self._approved: set[str] = set()  # approved through the API while its process was still pausing
        self._refilling: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.stopping = False
        self._reapers: set[asyncio.Task[None]] = set()
        self._last_refresh = 0.0

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
        for run_id, driver in sorted(self.orphans.items()):
            if self._lock_free(driver):
                del self.orphans[run_id]
                row = self.inbox.by_run(run_id)
                if row is not None:
                    self._ended(row, None)
        now = time.monotonic()
        if now - self._last_refresh > 2.0:
            self._last_refresh = now
            self.refresh_waiting()
        if self.stopping:
            return
        self._refill()
        free = self.max_concurrent - len(self.procs) - len(self.orphans) - len(self._reapers_starting)
        for row, kind in self.inbox.claim(free):
            self._spawn(row, kind)

    def recover(self) -> None:
        """Events a previous serve was driving: still driven by a live process (watched), or decided now."""
        for row in self.inbox.in_state("running"):
            if row.driver is None or self._lock_free(row.driver):
                self._ended(row, None)
            else:
                self.orphans[row.run_id] = row.driver

    async def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop: SIGTERM every child (each pauses as interrupted, resumable) and wait for them."""
        self.stopping = True
        self.wake.set()
        if self._refilling is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._refilling
        spare, self._spare = self._spare, None
        if spare is not None:
            _close_stdin(spare.proc)
            with contextlib.suppress(ProcessLookupError):
                spare.proc.send_signal(signal.SIGTERM)
            await spare.proc.wait()
            self._forget(spare.driver)
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        if self._reapers:
            await asyncio.wait(list(self._reapers), timeout=timeout)

    # -- children ------------------------------------------------------------------

    def _lock_path(self, driver: str) -> Path:
        return self.root / "drivers" / f"{driver}.lock"

    def _lock_free(self, driver: str) -> bool:
        path = self._lock_path(driver)
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

    def _forget(self, driver: str) -> None:
        with contextlib.suppress(OSError):
            self._lock_path(driver).unlink()

    def argv(self, row: Row, kind: str) -> list[str]:
        """The `runbook` arguments that start or resume this event's run."""
        base = ["--config", str(self.config.source)] if self.config.source is not None else []
        operator = f"serve:{row.identity}"
        if kind == "resume":
            return [*base, "resume", row.run_id, "--no-input", "--operator", operator]
        params_file = self.root / "params" / f"{row.run_id}.json"
        atomic_write_json(params_file, row.params)
        cmd = [*base, "run", row.runbook, "--no-input", "--operator", operator, "--run-id", row.run_id,
               "--trigger", json.dumps(row.trigger, default=str, separators=(",", ":")),
               "--params-file", str(params_file)]
        return [*cmd, "--dry-run"] if row.mode == Mode.DRY_RUN else cmd

    def command(self, row: Row, kind: str) -> list[str]:
        """The equivalent command line of this event's run process."""
        return [sys.executable, "-m", "engine.cli", *self.argv(row, kind)]

    async def _new_worker(self) -> _Worker:
        driver = f"worker-{os.getpid()}-{secrets.token_hex(6)}"
        lock = self._lock_path(driver)
        lock.parent.mkdir(parents=True, exist_ok=True)
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        parent = os.getpid()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            log_path = logs / f"{driver}.log"
            with log_path.open("ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "engine.serve.worker", stdin=asyncio.subprocess.PIPE, stdout=log,
                    stderr=log, pass_fds=(fd,), start_new_session=True, preexec_fn=lambda: _child_setup(parent))
        finally:
            os.close(fd)
        return _Worker(proc, driver, log_path)

    def _refill(self) -> None:
        """Keep one warm worker waiting for the next run."""
        if self.stopping or self._refilling is not None:
            return
        if self._spare is not None and self._spare.proc.returncode is None:
            return
        if self._spare is not None:
            self._forget(self._spare.driver)
            self._spare = None

        async def refill() -> None:
            try:
                self._spare = await self._new_worker()
            except OSError:
                self._spare = None
            finally:
                self._refilling = None

        self._refilling = asyncio.get_running_loop().create_task(refill())

    @property
    def _reapers_starting(self) -> list[str]:
        return [t.get_name() for t in self._reapers if t.get_name() not in self.procs]

    def _spawn(self, row: Row, kind: str) -> None:
        task = asyncio.get_running_loop().create_task(self._start(row, kind), name=row.run_id)
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _start(self, row: Row, kind: str) -> None:
        worker, self._spare = self._spare, None
        if worker is None or worker.proc.returncode is not None:
            if worker is not None:
                self._forget(worker.driver)
            try:
                worker = await self._new_worker()
            except OSError as exc:
                self.inbox.set_state(row.run_id, "pending" if row.attempts < MAX_ATTEMPTS else "done",
                                     outcome=None if row.attempts < MAX_ATTEMPTS else "INTERNAL_ERROR",
                                     note=f"could not start the run process: {exc}")
                return
        if self.stopping:  # stopped while the worker started: give it nothing, the event stays to start
            _close_stdin(worker.proc)
            await worker.proc.wait()
            self._forget(worker.driver)
            self.inbox.set_state(row.run_id, "pending" if kind == "start" else "resume", note="serve stopped first")
            return
        self._refill()
        self.inbox.set_driver(row.run_id, worker.driver)
        log.info("%s %s (%s, rule %s)", "starting" if kind == "start" else "resuming", row.run_id, row.runbook,
                 row.rule)
        proc = worker.proc
        self.procs[row.run_id] = proc
        self.metrics.running.set(len(self.procs))
        with contextlib.suppress(OSError):
            worker.log.rename(worker.log.with_name(f"{row.run_id}.log"))
        code: int | None
        try:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(self.argv(row, kind)) + "\n").encode())
            await proc.stdin.drain()
            proc.stdin.close()
            code = await proc.wait()
        except (BrokenPipeError, ConnectionResetError):
            await proc.wait()
            code = None
        del self.procs[row.run_id]
        self.metrics.running.set(len(self.procs))
        self._ended(row, code)
        self._forget(worker.driver)
        self.wake.set()

    # -- how a process ended -----------------------------------------------------------

    def _record(self, run_id: str) -> RunRecord | None:
        try:
            return self.store.load(run_id)
        except RunbookError:
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
        if record.status == RunStatus.FINISHED:
            self._done(row, record)
        elif record.status == RunStatus.PAUSED:
            waiting = (record.waiting_for or {}).get("type")
            if waiting == "interrupted" and retry_ok:
                self.inbox.set_state(row.run_id, "resume", note="interrupted; serve resumes it")
            elif waiting == "approval" and (row.run_id in self._approved or _decided_since_pause(record)):
                self._approved.discard(row.run_id)
                self.inbox.set_state(row.run_id, "resume", note="approval given; serve resumes it")
            else:
                self.inbox.set_state(row.run_id, "waiting", note=f"paused: {waiting}")
        elif record.host == os.uname().nodename and not process_alive(record.pid) and retry_ok:
            self.inbox.set_state(row.run_id, "resume", note="its process died; serve resumes it")
        else:
            self.inbox.set_state(row.run_id, "waiting", note=f"driven by pid {record.pid} on {record.host}")

    def _done(self, row: Row, record: RunRecord) -> None:
        outcome = record.outcome or "INTERNAL_ERROR"
        log.info("run %s (%s, rule %s) ended %s", row.run_id, record.runbook, row.rule, outcome)
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
            if record is not None and record.status == RunStatus.FINISHED:
                self._done(row, record)
            elif record is not None and record.status == RunStatus.PAUSED and _decided_since_pause(record):
                self.inbox.set_state(row.run_id, "resume", note="approval given; serve resumes it")
                self.wake.set()

    def resume_after_approval(self, run_id: str) -> bool:
        """After an approval through the API: resume the run if serve drives it and it waits; True if queued."""
        row = self.inbox.by_run(run_id)
        if row is not None and row.state == "running":
            self._approved.add(run_id)  # still pausing: _ended resumes it
            return True
        if row is None or row.state != "waiting":
            return False
        self.inbox.set_state(run_id, "resume", note="approved through the API; serve resumes it")
        self.wake.set()
        return True


def _decided_since_pause(record: RunRecord) -> bool:
    """True when the run waits for an approval that has been given (or denied) since it paused."""
    waiting = record.waiting_for or {}
    if waiting.get("type") != "approval":
        return False
    path = Path(record.evidence_dir) / "events.jsonl"
    decided = False
    try:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if event.get("type") == "run_paused":
                    decided = False
                elif event.get("type") == "approval" and event.get("step") == waiting.get("step"):
                    decided = True
    except OSError:
        return False
    return decided


def _close_stdin(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError, RuntimeError):
            proc.stdin.close()


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
