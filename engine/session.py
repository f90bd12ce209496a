"""Starting, resuming and approving runs: the glue between the interpreter and what lives on disk.

A run's life: claim its idempotency key, open its evidence bundle, take its
lock, run the interpreter, then record the end, release the lock and seal the
bundle (report + manifest). Resume replays the event log and continues.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import __version__, signals
from engine.config import Config
from engine.errors import InvalidRunbook, Problem, RunbookError, StateCorrupt
from engine.evidence import EventLog, read_events, utc_now, verify_bundle
from engine.interpreter import Finish, Interpreter, Pause, Services, StepResult, approval_refusal
from engine.library import Library
from engine.loader import load_file
from engine.model import ActionStep, ApproveStep, CheckStep, Outcome, Runbook
from engine.plugins import Registry, StepContext, load_registry
from engine.redact import Redactor
from engine.replay import Replayed, replay
from engine.runs import RunRecord, RunStore, new_run_id


@dataclass
class RunOptions:
    """How a run is executed (from the command line)."""

    mode: str = "live"
    operator: str = ""
    interactive: bool = False
    step_mode: bool = False
    assume: dict[str, str] = field(default_factory=dict)
    force: bool = False
    force_lock_break: bool = False
    reason: str | None = None
    in_doubt: str | None = None
    accept_changed: bool = False


@dataclass
class RunResult:
    """How a run ended, where its evidence is."""

    run_id: str
    runbook: str
    outcome: Outcome
    message: str
    evidence_dir: Path
    mode: str = "live"
    waiting_for: dict[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        """The process exit code (SPEC 3)."""
        return self.outcome.exit_code

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"run_id": self.run_id, "runbook": self.runbook, "mode": self.mode, "outcome": self.outcome.value,
                "exit_code": self.exit_code, "message": self.message, "evidence_dir": str(self.evidence_dir),
                "waiting_for": self.waiting_for}


@dataclass
class _Holding:
    """What a run holds while it executes and must give back however it ends."""

    lock: Any = None
    claim: Any = None


class _ResumeBlocked(Exception):
    """A resume could not start (lock held); the run stays as it was."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


class ApprovalRefused(RunbookError):
    """`runbook approve` by someone who may not approve (recorded as evidence)."""

    exit_code = 2


def default_operator() -> str:
    """The operator name when `--operator` is not given."""
    try:
        return os.environ.get("RUNBOOK_OPERATOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Workspace:
    """One configuration: its library, plugins, run store, and the runs it starts."""

    def __init__(self, config: Config, reporter: Any) -> None:
        self.config = config
        self.reporter = reporter
        self.library = Library(config.runbook_paths)
        self.store = RunStore(config.state_dir)
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """Plugins from entry points and `plugin_paths`."""
        if self._registry is None:
            self._registry = load_registry(list(self.config.plugin_paths), self.config.state_dir / "cache")
        return self._registry

    # -- loading ---------------------------------------------------------------

    def load(self, name_or_path: str) -> Runbook:
        """A validated runbook; validation is skipped when this exact file was proven valid before."""
        path = self.library.find(name_or_path)
        doc = load_file(path)
        marker = self._cache_marker(doc.sha256)
        if marker.exists() and isinstance(doc.data, dict):
            from engine.builder import build_runbook

            return build_runbook(doc.data, str(path), doc.sha256, doc.positions)
        from engine.validate import check

        runbook = check(doc, self.registry, self.library)
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:
            pass
        return runbook

    def _cache_marker(self, sha: str) -> Path:
        plugins = ",".join(self.registry.names("check") + ["|"] + self.registry.names("action"))
        key = hashlib.sha256(f"{__version__}\n{sha}\n{plugins}".encode()).hexdigest()
        return self.config.state_dir / "cache" / "valid" / key

    # -- start -------------------------------------------------------------------

    def start(self, runbook: Runbook, params: dict[str, Any], options: RunOptions, *, trigger: Any = None,
              run_id: str | None = None, parent_run_id: str | None = None) -> RunResult:
        """Execute a runbook from its first step."""
        from engine import idempotency

        run_id = run_id or new_run_id(runbook.name)
        operator = options.operator or default_operator()
        env = {name: os.environ.get(name, "") for name in runbook.env}
        secrets = tuple(v for v in env.values() if v)
        redactor = Redactor(secrets)
        evidence_dir = self.config.evidence_dir / run_id
        log = EventLog(evidence_dir, redactor)
        run = {"id": run_id, "mode": options.mode, "runbook": runbook.name, "started_at": utc_now(), "operator": operator}
        record = RunRecord(run_id=run_id, runbook=runbook.name, runbook_path=str(runbook.path),
                           runbook_sha256=runbook.sha256, runbook_version=runbook.version, mode=options.mode,
                           operator=operator,
                           params=redactor.data(params), evidence_dir=str(evidence_dir), started_at=run["started_at"],
                           trigger=redactor.data(trigger), parent_run_id=parent_run_id, assume=options.assume)
        if runbook.idempotency_key:
            record.idempotency_key = idempotency.render_key(runbook, params, run, env, trigger)
        self.store.save(record)
        log.record("run_started", None, {
            "runbook": runbook.name, "version": runbook.version, "path": str(runbook.path), "sha256": runbook.sha256,
            "params": params, "mode": options.mode, "operator": operator, "trigger": trigger,
            "host": socket.gethostname(), "pid": os.getpid(), "engine_version": __version__,
            "parent_run_id": parent_run_id, "assume": options.assume, "run": run,
        })
        interp = self._interpreter(runbook, log, run, params, env, trigger, options, secrets)
        holding = _Holding()

        def body() -> tuple[Outcome, str]:
            if record.idempotency_key:
                key = record.idempotency_key
                holding.claim = idempotency.claim(self.config.state_dir, key, run_id, options.force,
                                                  live=options.mode == "live")
                log.record("idempotency", None, {"key": key, **holding.claim.evidence})
                if holding.claim.skip:
                    raise Finish(Outcome.BUSINESS_SKIP, holding.claim.message)
            if runbook.lock:
                holding.lock = self._take_lock(runbook, run_id, options, log)
            return interp.run_from(runbook.steps[0].id)

        return self._drive(record, log, holding, body)

    def _drive(self, record: RunRecord, log: EventLog, holding: _Holding, body: Any) -> RunResult:
        """Run `body` and end the run however it ends: finished, paused or interrupted; always sealed."""
        try:
            outcome, message = body()
            return self._finish(record, log, outcome, message, holding.lock, holding.claim)
        except Finish as done:
            return self._finish(record, log, done.outcome, done.message, holding.lock, holding.claim)
        except Pause as pause:
            return self._pause(record, log, pause, holding.lock, holding.claim)
        except signals.Interrupted as stop:
            interrupted = Pause(str(stop), {"type": "interrupted", "signal": stop.signame})
            return self._pause(record, log, interrupted, holding.lock, holding.claim)
        finally:
            log.close()

    def _interpreter(self, runbook: Runbook, log: EventLog, run: dict[str, Any], params: dict[str, Any],
                     env: dict[str, str], trigger: Any, options: RunOptions, secrets: tuple[str, ...]) -> Interpreter:
        services = Services(registry=self.registry, reporter=self.reporter, kill_switch=self.config.kill_switch,
                            settings={"core": self.config.core, "state_dir": str(self.config.state_dir),
                                      "kill_switch": str(self.config.kill_switch)},
                            call_runbook=lambda step, p, child: self._call(step, p, child, run, options),
                            resume_child=lambda child: self._resume_child(child, options))
        return Interpreter(runbook, log, services, run=run, params=params, env=env, trigger=trigger,
                           interactive=options.interactive, step_mode=options.step_mode, assume=options.assume,
                           workdir=Path.cwd(), secrets=secrets)

    def _resume_child(self, child_run_id: str, options: RunOptions) -> tuple[Outcome, str, str] | None:
        """Continue a sub-runbook run; None when it never got as far as saving its record (start it)."""
        from engine.runs import UnknownRun

        try:
            result = self.resume(child_run_id, RunOptions(operator=options.operator, interactive=options.interactive,
                                                          step_mode=options.step_mode, in_doubt=options.in_doubt))
        except UnknownRun:
            return None
        return result.outcome, result.run_id, result.message

    def _take_lock(self, runbook: Runbook, run_id: str, options: RunOptions, log: EventLog,
                   resuming: bool = False) -> Any:
        from engine import locks

        assert runbook.lock is not None
        lock_dir = self.config.state_dir / "locks"
        if options.mode == "dry-run":
            payload = locks.read_payload(lock_dir / f"{runbook.lock.name}.lock")
            state = locks.assess(payload, runbook.lock.ttl_s)
            log.record("lock", None, {"name": runbook.lock.name, "action": "would acquire", "state": state, "holder": payload})
            return None
        try:
            held = locks.acquire(lock_dir, runbook.lock, run_id, options.reason, options.force_lock_break, resuming)
        except locks.LockNotAcquired as exc:
            log.record("lock", None, {"name": runbook.lock.name, "action": "not acquired", "reason": str(exc),
                                      "holder": exc.payload, "force_lock_break": options.force_lock_break})
            if resuming:
                raise _ResumeBlocked(Outcome.BUSINESS_SKIP if exc.exit_code == 11 else Outcome.LOCK_TIMEOUT, str(exc)) from None
            raise Finish(Outcome.BUSINESS_SKIP if exc.exit_code == 11 else Outcome.LOCK_TIMEOUT, str(exc)) from None
        if held.broken:
            log.record("lock", None, {"name": runbook.lock.name, "action": "broke stale lock", **held.broken})
        log.record("lock", None, {"name": runbook.lock.name, "action": "acquired", "payload": held.payload})
        return held

    def _call(self, step: Any, params: dict[str, Any], child_run_id: str, run: dict[str, Any],
              options: RunOptions) -> tuple[Outcome, str, str]:
        from engine.params import resolve_params

        try:
            child = self.load(step.runbook)
            values = resolve_params(child, params, {})
        except InvalidRunbook as exc:
            return Outcome.DATA_INVALID, child_run_id, str(exc)
        result = self.start(child, values, RunOptions(mode=options.mode, operator=run["operator"],
                            interactive=options.interactive, step_mode=options.step_mode, assume={},
                            force=options.force, reason=options.reason),
                            trigger={"parent_run_id": run["id"], "step": step.id}, run_id=child_run_id,
                            parent_run_id=run["id"])
        return result.outcome, result.run_id, result.message

    # -- ending ------------------------------------------------------------------

    def _finish(self, record: RunRecord, log: EventLog, outcome: Outcome, message: str, held: Any, claim: Any) -> RunResult:
        from engine import idempotency

        message = log.redactor.text(message)
        if held is not None:
            held.release()
            log.record("lock", None, {"name": held.path.stem, "action": "released"})
        if claim is not None and not claim.skip:
            idempotency.settle(self.config.state_dir, claim, outcome.value)
        log.record("run_finished", None, {"outcome": outcome.value, "exit_code": outcome.exit_code, "message": message})
        record.status, record.outcome, record.exit_code = "finished", outcome.value, outcome.exit_code
        record.ended_at, record.waiting_for = utc_now(), None
        self._seal(record, log)
        result = RunResult(record.run_id, record.runbook, outcome, message, Path(record.evidence_dir), record.mode)
        self.reporter.run_finished(result)
        return result

    def _pause(self, record: RunRecord, log: EventLog, pause: Pause, held: Any, claim: Any) -> RunResult:
        if held is not None:
            held.release()
            log.record("lock", None, {"name": held.path.stem, "action": "released (paused)"})
        if claim is not None and not claim.skip:
            from engine import idempotency

            idempotency.settle(self.config.state_dir, claim, Outcome.PAUSED.value)
        log.record("run_paused", pause.waiting_for.get("step"), {"reason": str(pause), "waiting_for": pause.waiting_for})
        record.status, record.outcome, record.exit_code = "paused", Outcome.PAUSED.value, Outcome.PAUSED.exit_code
        record.waiting_for = pause.waiting_for
        self._seal(record, log)
        result = RunResult(record.run_id, record.runbook, Outcome.PAUSED, str(pause), Path(record.evidence_dir),
                           record.mode, pause.waiting_for)
        self.reporter.run_finished(result)
        return result

    def _seal(self, record: RunRecord, log: EventLog) -> None:
        from engine.seal import seal_bundle

        log.close()
        manifest = seal_bundle(self.config, Path(record.evidence_dir), log.prev, log.seq)
        record.last_event_hash = manifest["last_event_hash"]
        self.store.save(record)

    # -- resume ------------------------------------------------------------------

    def resume(self, run_id: str, options: RunOptions) -> RunResult:
        """Continue a paused or interrupted run at its first unfinished step."""
        record = self.store.load(run_id)
        directory = Path(record.evidence_dir)
        events = self._trusted_events(record)
        runbook_path = Path(record.runbook_path)
        current = load_file(runbook_path) if runbook_path.exists() else None
        runbook = self.load(str(runbook_path)) if current else None
        state = replay(events, runbook) if runbook else Replayed()
        if state.finished:
            outcome = Outcome(state.finished["outcome"])
            if record.status != "finished":
                record.status, record.outcome, record.exit_code = "finished", outcome.value, outcome.exit_code
                record.ended_at, record.waiting_for = record.ended_at or utc_now(), None
                self._seal(record, EventLog(directory, Redactor()))
                self.reporter.message(f"run {run_id} had finished {outcome.value} before its process ended; bundle sealed")
            self.reporter.message(f"run {run_id} already finished {outcome.value}; nothing to do")
            return RunResult(run_id, record.runbook, outcome, state.finished.get("message", ""), directory, record.mode)
        if runbook is None or current is None:
            raise InvalidRunbook([Problem(record.runbook_path, None, None, None, "the runbook file of this run is gone")])
        changed = current.sha256 != record.runbook_sha256
        if changed and not options.accept_changed:
            raise InvalidRunbook([Problem(record.runbook_path, None, None, None,
                f"runbook changed since run {run_id} started (sha256 {record.runbook_sha256[:12]} -> "
                f"{current.sha256[:12]}); resume with --accept-changed to continue under the new file")])
        started = state.started
        params = started.get("params") or record.params
        env = {name: os.environ.get(name, "") for name in runbook.env}
        secrets = tuple(v for v in env.values() if v)
        log = EventLog(directory, Redactor(secrets))
        run = dict(started.get("run") or {"id": run_id, "mode": record.mode, "runbook": record.runbook,
                                          "started_at": record.started_at, "operator": record.operator})
        previous_status, previous_waiting = record.status, record.waiting_for
        record.status, record.pid, record.host = "running", os.getpid(), socket.gethostname()
        record.waiting_for = None
        self.store.save(record)
        log.record("run_resumed", None, {"by": options.operator or default_operator(), "pid": os.getpid(),
                                         "accept_changed": changed, "new_sha256": current.sha256 if changed else None,
                                         "in_doubt_option": options.in_doubt})
        resumed = RunOptions(mode=record.mode, operator=run.get("operator", record.operator),
                             interactive=options.interactive, step_mode=options.step_mode,
                             assume=dict(record.assume or {}), force=options.force,
                             force_lock_break=options.force_lock_break, reason=options.reason,
                             in_doubt=options.in_doubt)
        interp = self._interpreter(runbook, log, run, params, env, started.get("trigger"), resumed, secrets)
        interp.restore(state)
        if runbook.lock:
            try:
                lock = self._take_lock(runbook, run_id, resumed, log, resuming=True)
            except _ResumeBlocked as blocked:
                record.status, record.waiting_for = previous_status, previous_waiting
                self._seal(record, log)
                result = RunResult(run_id, record.runbook, blocked.outcome,
                                   f"{blocked}; the run is unchanged and can be resumed later", directory, record.mode,
                                   previous_waiting)
                self.reporter.run_finished(result)
                return result
        else:
            lock = None
        holding = _Holding(lock=lock)
        if record.idempotency_key and record.mode == "live":
            from engine import idempotency

            holding.claim = idempotency.reclaim(self.config.state_dir, record.idempotency_key, run_id)

        def body() -> tuple[Outcome, str]:
            if state.unhandled and state.unhandled.get("end"):
                raise Finish(Outcome(state.unhandled["outcome"]), f"ended at step '{state.unhandled['step']}'")
            if state.unhandled:
                self._rollback_in_doubt(interp, runbook, state, resumed, log)
                interp._run_rollbacks()
                raise Finish(Outcome(state.unhandled["outcome"]),
                             f"step '{state.unhandled['step']}' failed: {state.unhandled.get('error')}")
            return interp.run_from(self._position_after_doubt(interp, runbook, state, resumed, log))

        return self._drive(record, log, holding, body)

    def _trusted_events(self, record: RunRecord) -> list[dict[str, Any]]:
        directory = Path(record.evidence_dir)
        events_path = directory / "events.jsonl"
        if not events_path.exists():
            raise StateCorrupt(f"{events_path}: the run's event log is missing")
        if (directory / "manifest.json").exists() and record.status != "running":
            verify_bundle(directory)
        events = read_events(events_path)
        if not events or events[0]["type"] != "run_started":
            raise StateCorrupt(f"{events_path}: run {record.run_id} never recorded its start, so nothing of it ran; "
                               "start a new run")
        if record.last_event_hash:
            sealed = record.status != "running"
            if sealed and events[-1]["hash"] != record.last_event_hash:
                raise StateCorrupt(f"{events_path}: records were added after the run was sealed (its last record hash "
                                   "in the state directory differs)")
            if not any(e["hash"] == record.last_event_hash for e in events):
                raise StateCorrupt(f"{events_path}: does not contain the last record hash the state directory holds "
                                   "for this run")
        return events

    def _rollback_in_doubt(self, interp: Interpreter, runbook: Runbook, state: Replayed, options: RunOptions,
                           log: EventLog) -> None:
        """A rollback step interrupted mid-way: verified, rerun on request, or the run pauses."""
        flight = state.in_flight
        if flight is None or not flight.get("mutates") or flight.get("planned"):
            return
        step = runbook.step(flight["step"])
        assert isinstance(step, (ActionStep, CheckStep))
        plugin = interp.svc.registry.get("action" if isinstance(step, ActionStep) else "check", step.plugin)
        answer = self._verify(interp, step, plugin, flight)
        choice = {True: "done", False: "rerun"}.get(answer) if answer is not None else options.in_doubt
        log.record("in_doubt", step.id, {"rollback": True, "attempt": flight.get("attempt"), "token": flight.get("token"),
                                         "verify": answer, "choice": choice,
                                         "by": options.operator or default_operator()})
        if choice is None:
            raise Pause(f"rollback step '{step.id}' is in doubt: it started but never recorded its end; resume with "
                        "--in-doubt rerun|skip|fail", {"type": "in_doubt", "step": step.id, "rollback": True,
                                                       "choices": ["rerun", "skip", "fail"]})
        if choice == "rerun":
            interp.rollback_stack.append(step.id)

    def _position_after_doubt(self, interp: Interpreter, runbook: Runbook, state: Replayed, options: RunOptions,
                              log: EventLog) -> str | None:
        flight = state.in_flight
        if flight is None:
            return state.position
        step = runbook.step(flight["step"])
        if flight.get("kind") == "call" and flight.get("child_run_id"):
            interp.children[step.id] = flight["child_run_id"]
            return step.id
        if not flight.get("mutates") or flight.get("planned"):
            return step.id
        assert isinstance(step, (ActionStep, CheckStep))
        kind = "action" if isinstance(step, ActionStep) else "check"
        plugin = interp.svc.registry.get(kind, step.plugin)
        answer = self._verify(interp, step, plugin, flight)
        choice = {True: "done", False: "rerun"}.get(answer) if answer is not None else options.in_doubt
        log.record("in_doubt", step.id, {"attempt": flight.get("attempt"), "item": flight.get("item"),
                                         "token": flight.get("token"), "verify": answer, "choice": choice,
                                         "by": options.operator or default_operator()})
        if choice is None:
            raise Pause(f"step '{step.id}' is in doubt: it started but never recorded its end, and its plugin cannot "
                        f"tell whether it took effect; resume with --in-doubt rerun|skip|fail",
                        {"type": "in_doubt", "step": step.id, "token": flight.get("token"),
                         "choices": ["rerun", "skip", "fail"]})
        if choice == "rerun":
            return step.id
        status = {"done": "ok", "skip": "skipped", "fail": "failed"}[choice]
        outcome = StepResult(status, result={"in_doubt": choice, "verified": answer},
                             error="in doubt; the operator chose fail" if choice == "fail" else None,
                             attempts=flight.get("attempt") or 1)
        if flight.get("item") is not None:
            log.record("step_finished", step.id, {"status": status, "ok": status == "ok", "item": flight["item"],
                                                  "result": outcome.result, "final": False})
            interp.items_done.setdefault(step.id, []).append(outcome.result)
            return step.id
        return interp._route(step, outcome)

    def _verify(self, interp: Interpreter, step: ActionStep | CheckStep, plugin: Any, flight: dict[str, Any]) -> bool | None:
        verify = getattr(plugin, "verify", None)
        if verify is None:
            return None
        from engine.expressions import ExpressionError, render

        items = None
        try:
            if step.for_each is not None:
                from engine.expressions import evaluate

                items = evaluate(step.for_each, interp.scope())
            extra = {"item": items[flight["item"]]} if items is not None and flight.get("item") is not None else {}
            params = render(step.with_ or {}, interp.scope(**extra))
        except (ExpressionError, IndexError, TypeError):
            return None
        ctx = StepContext(run_id=interp.run["id"], step_id=step.id, attempt=flight.get("attempt") or 1,
                          mode=interp.run["mode"], workdir=interp.workdir, item_index=flight.get("item"),
                          settings=interp.svc.settings, secrets=interp.secrets)
        try:
            answer: bool | None = verify(params, ctx)
            return answer
        except Exception:  # noqa: BLE001 - a verify that crashes cannot tell
            return None

    # -- approvals ---------------------------------------------------------------

    def approve(self, run_id: str, step_id: str, by: str, note: str | None, deny: bool) -> dict[str, Any]:
        """Record an approval or denial for a paused run's approval step."""
        record = self.store.load(run_id)
        waiting = record.waiting_for or {}
        directory = Path(record.evidence_dir)
        runbook = self.load(record.runbook_path)
        try:
            step = runbook.step(step_id)
        except KeyError:
            raise ApprovalRefused(f"run {run_id} has no step '{step_id}'") from None
        if not isinstance(step, ApproveStep):
            raise ApprovalRefused(f"step '{step_id}' is a {step.kind} step, not an approval")
        if record.status != "paused" or waiting.get("type") != "approval" or waiting.get("step") != step_id:
            raise ApprovalRefused(f"run {run_id} is not waiting for an approval of step '{step_id}' "
                                  f"(status {record.status}, waiting for {waiting or 'nothing'})")
        events = self._trusted_events(record)
        requested = max((e["seq"] for e in events if e["type"] == "approval_requested" and e["step"] == step_id), default=0)
        earlier = [e for e in events if e["type"] == "approval" and e["step"] == step_id and e["seq"] > requested]
        if earlier:
            data = earlier[-1]["data"]
            raise ApprovalRefused(f"step '{step_id}' of run {run_id} was already {data.get('decision')} by {data.get('by')}; "
                                  f"continue with: runbook resume {run_id}")
        log = EventLog(directory, Redactor())
        try:
            refusal = approval_refusal(step, by, record.operator)
            if refusal:
                log.record("approval_refused", step_id, {"by": by, "reason": refusal, "note": note})
                self._seal(record, log)
                raise ApprovalRefused(f"approval refused: {refusal}")
            decision = {"decision": "denied" if deny else "approved", "by": by, "note": note, "via": "cli"}
            log.record("approval", step_id, decision)
            self._seal(record, log)
        finally:
            log.close()
        return decision
