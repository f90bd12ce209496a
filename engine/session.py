"""Starting runs, and what every run does whatever drives it: hold, drive, end, seal.

A run's life: become its driver (engine.driver), claim its idempotency key,
open its evidence bundle, take its lock, run the interpreter, then record the
end, release the lock, settle the key and seal the bundle (report +
manifest). Resume, approvals and cancel live in their own modules and use the
public methods here.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from engine import __version__, driver, idempotency, locks, records, secrets, signals
from engine.approvals import ApprovalBox, Policy
from engine.builder import build_runbook
from engine.cache import read_cached, write_cached
from engine.config import Config
from engine.errors import InvalidRunbook, LockNotAcquired, UnknownRun
from engine.evidence import EventLog, utc_now
from engine.expressions import configure_limits
from engine.interpreter import Finish, Interpreter, Pause, Reporter, Services
from engine.library import Library
from engine.loader import load_text, read_bytes
from engine.model import Runbook, Step
from engine.params import resolve_params
from engine.plugins import Registry, load_registry, plugin_signature
from engine.redact import Redactor
from engine.runs import RunRecord, RunStore, hostname, new_run_id
from engine.seal import seal_bundle
from engine.validate import check
from engine.vocabulary import Mode, Outcome, RunStatus

VALIDATION_RULES = 2  # bump when validation gets stricter: files proven valid before are checked again
                     # (an edit of the validating modules in a checkout does the same, _validator_signature)


_VALIDATOR_MODULES = ("validate", "schema", "fastcheck", "loader", "builder", "model", "routing", "expressions",
                      "sandbox", "durations", "library")


def _validator_signature() -> str:
    """Changes whenever the code that validates does (an edited checkout, not only a new version)."""
    here = Path(__file__).resolve().parent
    stamps = []
    for module in _VALIDATOR_MODULES:
        try:
            stat = (here / f"{module}.py").stat()
            stamps.append(f"{module}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            stamps.append(f"{module}:?")
    return ",".join(stamps)


def _call_targets(data: Any) -> list[str]:
    """The runbook names the `call` steps of a loaded file name."""
    steps = data.get("steps") if isinstance(data, dict) else None
    return [str(step["call"]) for step in steps or () if isinstance(step, dict) and isinstance(step.get("call"), str)]


@dataclass
class RunOptions:
    """How a run is executed (from the command line)."""

    mode: str = Mode.LIVE  # a Mode; plain text when it comes from a run record
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
    mode: str = Mode.LIVE  # a Mode; plain text when it comes from a run record
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
class Holding:
    """What a run holds while a process drives it, given back however the run stops."""

    driver: driver.Driver | None = None
    lock: Any = None
    claim: Any = None
    interpreter: Interpreter | None = None

    def record(self, log: EventLog, type_: str, step: str | None, data: dict[str, Any]) -> None:
        """Write a record, applied to the run state when an interpreter drives the run."""
        if self.interpreter is not None:
            self.interpreter.emit(type_, step, data)
        else:
            log.record(type_, step, data)


class RunReporter(Reporter, Protocol):
    """The interpreter's reporter, also told how each run ended."""

    def run_finished(self, result: RunResult) -> None:
        """A run finished or paused."""


class ResumeBlocked(Exception):
    """A resume could not start (lock held); the run stays as it was."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def default_operator() -> str:
    """The operator name when `--operator` is not given."""
    try:
        return os.environ.get("RUNBOOK_OPERATOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def command_name() -> str:
    """The `runbook` subcommand this process runs (for driver and lock payloads; never its arguments)."""
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    return args[0] if args else "(in-process)"


class Workspace:
    """One configuration: its library, plugins, run store, and the runs it starts."""

    def __init__(self, config: Config, reporter: RunReporter) -> None:
        self.config = config
        self.reporter = reporter
        self.library = Library(config.runbook_paths)
        self.store = RunStore(config.state_dir)
        self._registry: Registry | None = None
        secrets.take_engine_keys(config)

        configure_limits(config.templates_timeout_s, config.templates_max_bytes)

    @property
    def registry(self) -> Registry:
        """Plugins from entry points and `plugin_paths`."""
        if self._registry is None:
            self._registry = load_registry(list(self.config.plugin_paths))
        return self._registry

    # -- loading ---------------------------------------------------------------

    def approval_box(self, run_id: str) -> ApprovalBox:
        """Where a run's approval decisions are stored, checked against this configuration's `approvals:`."""
        return ApprovalBox.of(self.config.state_dir, run_id, Policy.of(self.config))

    def load(self, name_or_path: str) -> Runbook:
        """A validated runbook; validation is skipped when this exact file was proven valid before, with the
        same callees, plugins and engine (the proof is kept in the engine's cache, shared by state directories)."""
        path = self.library.find(name_or_path)
        raw = read_bytes(path)
        try:
            plain = load_text(raw, str(path), positions=False)
        except InvalidRunbook:  # reported with its line and column by the full load below
            plain = None
        proof = self._proof_name(raw, plain.data if plain else None)
        if plain is not None and isinstance(plain.data, dict) and read_cached(proof) is not None:
            return build_runbook(plain.data, str(path), plain.sha256)
        plain = None  # not kept alive beside the located tree validation builds
        runbook = check(load_text(raw, str(path)), self.registry, self.library)
        write_cached(proof, b"")
        return runbook

    def _proof_name(self, raw: bytes, data: Any) -> str:
        """The name of the marker that proves this file valid: what validation read besides the file (the
        plugins, their code, and every runbook it calls, transitively) is part of the name."""
        plugins = ",".join(self.registry.names("check") + ["|"] + self.registry.names("action"))
        parts = [__version__, str(VALIDATION_RULES), _validator_signature(), hashlib.sha256(raw).hexdigest(), plugins,
                 plugin_signature(list(self.config.plugin_paths)), *self._callee_digests(data)]
        text = "\n".join(parts)
        return f"valid-{hashlib.sha256(text.encode()).hexdigest()[:40]}"

    def _callee_digests(self, data: Any) -> list[str]:
        """`name=sha256` of every runbook `data` calls, directly or through its callees ("missing" if not found)."""
        seen: dict[str, str] = {}
        todo = _call_targets(data)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            try:
                path = self.library.find(name)
                raw = read_bytes(path)
                seen[name] = hashlib.sha256(raw).hexdigest()
                if b"call" in raw:  # a file without the word calls nothing: no need to parse it
                    todo.extend(_call_targets(load_text(raw, str(path), positions=False).data))
            except (InvalidRunbook, OSError):
                seen.setdefault(name, "missing")
        return [f"{name}={digest}" for name, digest in sorted(seen.items())]

    # -- start -------------------------------------------------------------------

    def start(self, runbook: Runbook, params: dict[str, Any], options: RunOptions, *, trigger: Any = None,
              run_id: str | None = None, parent_run_id: str | None = None) -> RunResult:
        """Execute a runbook from its first step."""
        run_id = run_id or new_run_id(runbook.name)
        operator = options.operator or default_operator()
        env = {name: os.environ.get(name, "") for name in runbook.env}
        known = secrets.declared(runbook, params, env, trigger)
        redactor = Redactor(known)
        run = {"id": run_id, "mode": options.mode, "runbook": runbook.name, "started_at": utc_now(), "operator": operator}
        key = idempotency.render_key(runbook, params, run, env, trigger) if runbook.idempotency_key else None
        holding = Holding(driver=driver.take(self.config.state_dir, run_id, command_name()))
        try:
            return self._start_driven(runbook, params, options, trigger, parent_run_id, run, env, known, redactor,
                                      key, holding)
        finally:
            assert holding.driver is not None
            holding.driver.release()

    def _start_driven(self, runbook: Runbook, params: dict[str, Any], options: RunOptions, trigger: Any,
                      parent_run_id: str | None, run: dict[str, Any], env: dict[str, str], known: tuple[str, ...],
                      redactor: Redactor, key: str | None, holding: Holding) -> RunResult:
        run_id, operator = run["id"], run["operator"]
        evidence_dir = self.config.evidence_dir / run_id
        log = EventLog(evidence_dir, redactor)
        record = RunRecord(run_id=run_id, runbook=runbook.name, runbook_path=str(runbook.path),
                           runbook_sha256=runbook.sha256, runbook_version=runbook.version, mode=options.mode,
                           operator=operator,
                           params=redactor.data(params), evidence_dir=str(evidence_dir), started_at=run["started_at"],
                           trigger=redactor.data(trigger), parent_run_id=parent_run_id, assume=options.assume)
        if key is not None:
            record.idempotency_key, record.idempotency_key_sha256 = redactor.text(key), idempotency.key_sha256(key)
        self.store.save(record)
        log.record("run_started", None, {
            "runbook": runbook.name, "version": runbook.version, "path": str(runbook.path), "sha256": runbook.sha256,
            "params": params, "mode": options.mode, "operator": operator, "trigger": trigger,
            "host": hostname(), "pid": os.getpid(), "engine_version": __version__,
            "parent_run_id": parent_run_id, "assume": options.assume, "run": run,
            "secret_defaults": secrets.secret_defaults(runbook, params),
        })
        interp = self.interpreter(runbook, log, run, params, env, trigger, options, known, holding)

        def body() -> tuple[Outcome, str]:
            if key is not None:
                holding.claim = idempotency.claim(self.config.state_dir, self.store, key, run_id, options.force,
                                                  live=options.mode == Mode.LIVE, redact=redactor.text)
                log.record("idempotency", None, {"key": redactor.text(key), **holding.claim.evidence})
                if holding.claim.skip:
                    raise Finish(Outcome.BUSINESS_SKIP, holding.claim.message)
            if runbook.lock:
                holding.lock = self.take_lock(runbook, run_id, options, log)
            return interp.run_from(runbook.steps[0].id)

        return self.drive(record, log, holding, body)

    def drive(self, record: RunRecord, log: EventLog, holding: Holding, body: Callable[[], tuple[Outcome, str]]) -> RunResult:
        """Run `body` and end the run however it ends: finished, paused or interrupted; always sealed."""
        try:
            try:
                outcome, message = body()
                return self.finish(record, log, outcome, message, holding)
            except Finish as done:
                return self.finish(record, log, done.outcome, done.message, holding)
            except Pause as pause:
                return self.pause(record, log, pause, holding)
            except signals.Interrupted as stop:
                interrupted = Pause(str(stop), {"type": "interrupted", "signal": stop.signame})
                return self.pause(record, log, interrupted, holding)
            finally:
                log.close()
        finally:
            if holding.driver is not None:
                holding.driver.release()

    def interpreter(self, runbook: Runbook, log: EventLog, run: dict[str, Any], params: dict[str, Any],
                    env: dict[str, str], trigger: Any, options: RunOptions, secrets: tuple[str, ...],
                    holding: Holding) -> Interpreter:
        """The interpreter of one run, wired to this workspace's plugins, approvals and sub-runbooks."""
        def before_mutation(step: Step) -> None:
            claim = holding.claim
            if claim is not None and not claim.skip and run["mode"] == Mode.LIVE:
                holder = idempotency.holder(claim)
                if holder != run["id"]:
                    raise Finish(Outcome.BUSINESS_SKIP, f"idempotency key is now held by run {holder}; step "
                                 f"'{step.id}' not run", step.id)

        services = Services(registry=self.registry, reporter=self.reporter, kill_switch=self.config.kill_switch,
                            settings={"core": self.config.core, "state_dir": str(self.config.state_dir),
                                      "kill_switch": str(self.config.kill_switch)},
                            call_runbook=lambda step, p, child: self._call(step, p, child, run, options),
                            resume_child=lambda child: self._resume_child(child, options),
                            approvals=self.approval_box(run["id"]), before_mutation=before_mutation)
        holding.interpreter = Interpreter(runbook, log, services, run=run, params=params, env=env, trigger=trigger,
                                          interactive=options.interactive, step_mode=options.step_mode,
                                          assume=options.assume, workdir=Path.cwd(), secrets=secrets)
        return holding.interpreter

    def _resume_child(self, child_run_id: str, options: RunOptions) -> tuple[Outcome, str, str] | None:
        """Continue a sub-runbook run; None when it never got as far as saving its record (start it)."""
        try:
            result = self.resume(child_run_id, RunOptions(operator=options.operator, interactive=options.interactive,
                                                          step_mode=options.step_mode, in_doubt=options.in_doubt))
        except UnknownRun:
            return None
        return result.outcome, result.run_id, result.message

    def take_lock(self, runbook: Runbook, run_id: str, options: RunOptions, log: EventLog,
                  resuming: bool = False) -> Any:
        """The runbook's `lock:` for this run (None in dry-run); Finish (or ResumeBlocked) when not acquired."""
        assert runbook.lock is not None
        lock_dir = self.config.state_dir / "locks"
        if options.mode == Mode.DRY_RUN:
            payload = locks.read_payload(lock_dir / f"{runbook.lock.name}.lock")
            state = locks.assess(payload, runbook.lock.ttl_s)
            log.record("lock", None, {"name": runbook.lock.name, "action": "would acquire", "state": state, "holder": payload})
            return None
        try:
            held = locks.acquire(lock_dir, runbook.lock, run_id, options.reason, options.force_lock_break, resuming,
                                 command=command_name())
        except LockNotAcquired as exc:
            log.record("lock", None, {"name": runbook.lock.name, "action": "not acquired", "reason": str(exc),
                                      "holder": exc.payload, "force_lock_break": options.force_lock_break})
            if resuming:
                raise ResumeBlocked(exc.outcome, str(exc)) from None
            raise Finish(exc.outcome, str(exc)) from None
        if held.broken:
            log.record("lock", None, {"name": runbook.lock.name, "action": "broke stale lock", **held.broken})
        log.record("lock", None, {"name": runbook.lock.name, "action": "acquired", "payload": held.payload})
        return held

    def _call(self, step: Any, params: dict[str, Any], child_run_id: str, run: dict[str, Any],
              options: RunOptions) -> tuple[Outcome, str, str]:
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

    def finish(self, record: RunRecord, log: EventLog, outcome: Outcome, message: str, holding: Holding) -> RunResult:
        """The run ended: release its lock and key, record the end, seal the bundle."""
        message = log.redactor.text(message)
        if holding.lock is not None:
            holding.lock.release()
            log.record("lock", None, {"name": holding.lock.path.stem, "action": "released"})
        if holding.claim is not None and not holding.claim.skip:
            idempotency.settle(self.config.state_dir, holding.claim, outcome.value)
        holding.record(log, "run_finished", None, records.run_finished(outcome.value, outcome.exit_code, message))
        record.status, record.outcome, record.exit_code = RunStatus.FINISHED, outcome.value, outcome.exit_code
        record.ended_at, record.waiting_for = utc_now(), None
        self._seal(record, log)
        result = RunResult(record.run_id, record.runbook, outcome, message, Path(record.evidence_dir), record.mode)
        self.reporter.run_finished(result)
        return result

    def pause(self, record: RunRecord, log: EventLog, pause: Pause, holding: Holding) -> RunResult:
        """The run stops but goes on later: its lock is released, its idempotency key stays held."""
        if holding.lock is not None:
            holding.lock.release()
            log.record("lock", None, {"name": holding.lock.path.stem, "action": "released (paused)"})
        reason = log.redactor.text(str(pause))
        log.record("run_paused", pause.waiting_for.get("step"), {"reason": reason, "waiting_for": pause.waiting_for})
        record.status, record.outcome, record.exit_code = RunStatus.PAUSED, Outcome.PAUSED.value, Outcome.PAUSED.exit_code
        record.waiting_for = log.redactor.data(pause.waiting_for)
        self._seal(record, log)
        result = RunResult(record.run_id, record.runbook, Outcome.PAUSED, reason, Path(record.evidence_dir),
                           record.mode, record.waiting_for)
        self.reporter.run_finished(result)
        return result

    def seal(self, record: RunRecord, log: EventLog) -> None:
        """Write the report and manifest of a bundle and the run record that points at its last event."""
        self._seal(record, log)

    def _seal(self, record: RunRecord, log: EventLog) -> None:
        log.close()
        manifest = seal_bundle(self.config, Path(record.evidence_dir), log.prev, log.seq)
        record.last_event_hash = manifest["last_event_hash"]
        self.store.save(record)

    # -- the other actors ----------------------------------------------------------

    def resume(self, run_id: str, options: RunOptions) -> RunResult:
        """Continue a paused or interrupted run at its first unfinished step (engine.resume)."""
        from engine.resume import resume

        return resume(self, run_id, options)

    def approve(self, run_id: str, step_id: str, by: str, note: str | None, deny: bool,
                via: str = "cli") -> dict[str, Any]:
        """Give an approval or denial for a run's approval step (engine.approvals)."""
        from engine.approve import approve

        return approve(self, run_id, step_id, by, note, deny, via)

    def cancel(self, run_id: str, by: str, reason: str, rollback: bool = True) -> RunResult:
        """End a paused or interrupted run (engine.cancel)."""
        from engine.cancel import cancel

        return cancel(self, run_id, by, reason, rollback)
