"""The state machine: one loop that dispatches to one function per step kind.

Every step goes through `_execute`, which writes `step_started` before the
step acts and a final `step_finished` after it. The interpreter never changes
its bookkeeping directly: it writes a record and applies that record to its
`RunState` (`_emit`), so resume, which folds the same records, agrees with it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from engine import records, signals
from engine.approvals import ApprovalBox, plans_sha256
from engine.durations import parse_duration
from engine.errors import ExpressionError, PluginError
from engine.evidence import EventLog, canonical
from engine.expressions import evaluate, is_template, read_values, render
from engine.model import (
    ActionStep,
    ApproveStep,
    CallStep,
    CheckStep,
    DecideStep,
    EndStep,
    Runbook,
    Step,
    WaitStep,
)
from engine.plugins import Action, Plan, Plugin, Registry, StepContext
from engine.routing import following
from engine.runs import new_run_id
from engine.state import PlannedResult, RunState
from engine.validate import result_readers
from engine.vocabulary import Mode, Outcome, StepStatus

MAX_ARTIFACT_CHARS = 10_000_000
FAILURE_DEFAULTS = {"check": Outcome.BUSINESS_REJECT, "decide": Outcome.BUSINESS_REJECT, "approve": Outcome.BUSINESS_REJECT}


class Pause(Exception):
    """The run stops here and can be resumed (approval, in-doubt step, interruption)."""

    def __init__(self, reason: str, waiting_for: dict[str, Any]) -> None:
        super().__init__(reason)
        self.waiting_for = waiting_for


class Finish(Exception):
    """The run ends now with this outcome."""

    def __init__(self, outcome: Outcome, message: str = "", step: str | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message
        self.step = step


@dataclass
class StepResult:
    """What one step did: its verdict, result, and where control goes next."""

    status: StepStatus
    result: Any = None
    error: str | None = None
    attempts: int = 0
    duration_s: float = 0.0
    goto: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Planned and skipped steps do not fail routing."""
        return self.status in (StepStatus.OK, StepStatus.PLANNED)

    def view(self) -> dict[str, Any]:
        """`steps.ID` as templates see it."""
        return {"status": self.status, "ok": self.ok, "result": self.result,
                "attempts": self.attempts, "duration_s": round(self.duration_s, 6), "error": self.error}


class Reporter(Protocol):
    """What the interpreter shows the operator and asks them (engine.console implements it)."""

    def message(self, text: str) -> None:
        """A note for the operator."""

    def step_started(self, step: Step, rollback: bool = False) -> None:
        """A step (or a rollback step) begins."""

    def step_finished(self, step: Step, result: StepResult) -> None:
        """A step ended with `result`."""

    def wait_polled(self, step: Step, polls: int, observed: dict[str, Any], deadline_s: float) -> None:
        """A wait step polled its check `polls` times; `observed` are the values its `until` read."""

    def ask_step(self, step: Step, preview: dict[str, Any]) -> str:
        """Operator mode: run, skip, abort (or details) for the step about to run."""

    def ask_approval(self, step: Step, prompt: str, operator: str,
                     refusal: Callable[[str], str | None]) -> dict[str, Any]:
        """The terminal's answer to an approval step; `refusal(by)` says why `by` may not approve."""


@dataclass
class Services:
    """What the interpreter needs from outside: plugins, prompts, kill switch, sub-runbooks."""

    registry: Registry
    reporter: Reporter
    kill_switch: Path
    settings: Mapping[str, Any]
    call_runbook: Callable[[CallStep, dict[str, Any], str], tuple[Outcome, str, str]]  # -> (outcome, run id, message)
    resume_child: Callable[[str], tuple[Outcome, str, str] | None]  # None: the child never saved its record
    approvals: ApprovalBox  # where decisions given at the terminal are stored, under the approvals policy
    before_mutation: Callable[[Step], None]  # raises Finish when the run may no longer act


class Interpreter:
    """Runs one runbook from a position, recording everything in its event log."""

    def __init__(self, runbook: Runbook, log: EventLog, services: Services, *, run: dict[str, Any],
                 params: dict[str, Any], env: dict[str, str], trigger: Any, interactive: bool,
                 step_mode: bool, assume: dict[str, str], workdir: Any, secrets: tuple[str, ...]) -> None:
        self.rb = runbook
        self.log = log
        self.svc = services
        self.run = run
        self.params = params
        self.env = env
        self.trigger = trigger
        self.interactive = interactive
        self.step_mode = step_mode
        self.assume = assume
        self.workdir = workdir
        self.secrets = secrets
        self.dry = run["mode"] == Mode.DRY_RUN

        self.state = RunState(position=runbook.steps[0].id if runbook.steps else None, kept=result_readers(runbook))

    # -- scope ---------------------------------------------------------------

    def scope(self, **extra: Any) -> dict[str, Any]:
        """Names templates and expressions can read (SPEC 2.2)."""
        return {"params": self.params, "env": self.env, "run": self.run, "steps": self.state.steps,
                "trigger": self.trigger, **extra}

    def restore(self, state: RunState) -> None:
        """Continue from the state a folded event log reached (results released from now on as in a live run)."""
        state.kept = self.state.kept
        self.state = state

    def emit(self, type_: str, step: str | None, data: dict[str, Any], *, sync: bool = True) -> dict[str, Any]:
        """Write one record and apply it to the run state: the only way the state changes."""
        return self.state.apply(self.log.record(type_, step, data, sync=sync))

    def context(self, step: Step, attempt: int, item_index: int | None = None) -> StepContext:
        """What a plugin is told about the invocation it runs."""
        return StepContext(run_id=self.run["id"], step_id=step.id, attempt=attempt, mode=self.run["mode"],
                           workdir=self.workdir, timeout_s=step.timeout_s, item_index=item_index,
                           settings=self.svc.settings, secrets=self.secrets)

    def plugin_for(self, step: CheckStep | ActionStep | WaitStep) -> Plugin:
        """The plugin a check, action or wait step runs."""
        if isinstance(step, ActionStep):
            return self.svc.registry.get("action", step.plugin)
        return self.svc.registry.get("check", step.plugin)

    # -- the loop --------------------------------------------------------------

    def run_from(self, position: str | None) -> tuple[Outcome, str]:
        """Execute from `position` until an end; Pause propagates to the caller."""
        try:
            while position is not None:
                signals.check()
                step = self.rb.step(position)
                if isinstance(step, EndStep) and step.when is not None and not self._holds(step.when):
                    position = self.route(step, StepResult(StepStatus.SKIPPED, extra={"when": step.when}))
                    continue
                if isinstance(step, EndStep):
                    self._record_end(step)
                    message = self._message(step)
                    raise Finish(step.outcome, message, step.id)
                position = self._execute(step)
            raise Finish(Outcome.SUCCESS, "")
        except Finish as done:
            outcome = done.outcome
            still_engaged = self.state.halted and os.path.exists(self.svc.kill_switch)
            if still_engaged and outcome in (Outcome.SUCCESS, Outcome.BUSINESS_REJECT, Outcome.BUSINESS_SKIP):
                return Outcome.ANOMALY_HALT, f"kill switch engaged ({self.svc.kill_switch}); {done.message}".rstrip("; ")
            return outcome, done.message

    def _holds(self, expr: str) -> bool:
        try:
            return bool(evaluate(expr, self.scope()))
        except ExpressionError:
            return True

    def _record_end(self, step: EndStep) -> None:
        self.emit("step_started", step.id, records.step_started("end"), sync=False)
        self.emit("step_finished", step.id, records.step_finished(StepStatus.OK, ok=True, outcome=step.outcome.value),
                  sync=False)

    def _message(self, step: Step) -> str:
        if not step.message:
            return ""
        try:
            return str(render(step.message, self.scope()))
        except ExpressionError as exc:
            return f"(message could not be rendered: {exc})"

    def _execute(self, step: Step) -> str | None:
        """Run one step through the common path and return the id of the next step."""
        reporter = self.svc.reporter
        if step.when is not None:
            try:
                go = bool(evaluate(step.when, self.scope()))
            except ExpressionError as exc:
                return self.route(step, StepResult(StepStatus.FAILED, error=f"when: {exc}"))
            if not go:
                return self.route(step, StepResult(StepStatus.SKIPPED, extra={"when": step.when}))
        if self.step_mode and self.interactive and not isinstance(step, ApproveStep):
            with signals.interruptible():
                choice = reporter.ask_step(step, self._preview(step))
            self.emit("operator_choice", step.id, {"choice": choice})
            if choice == "skip":
                return self.route(step, StepResult(StepStatus.SKIPPED, extra={"operator": "skip"}))
            if choice == "abort":
                self.run_rollbacks()
                raise Finish(Outcome.BUSINESS_REJECT, f"aborted by the operator at step '{step.id}'", step.id)
        try:
            step = self._concrete(step)
        except ExpressionError as exc:
            return self.route(step, StepResult(StepStatus.FAILED, error=str(exc)))
        reporter.step_started(step)
        if step.id in self.assume and self.dry:
            assumed = self.assume[step.id]
            self.emit("step_started", step.id, records.step_started(step.kind, assumed=assumed), sync=False)
            result = StepResult(StepStatus.PLANNED if assumed == "ok" else StepStatus.FAILED, result={"assumed": assumed},
                                error=None if assumed == "ok" else "assumed to fail (--assume)")
        else:
            handler = {
                "check": self._plugin_step, "action": self._plugin_step, "decide": self._decide,
                "approve": self._approve, "wait": self._wait, "call": self._call,
            }[step.kind]
            result = handler(step)
        reporter.step_finished(step, result)
        return self.route(step, result)

    def _concrete(self, step: Step) -> Step:
        """The step with its templated durations rendered (ExpressionError if one is not a duration)."""
        if not step.durations:
            return step

        values: dict[str, Any] = {}
        for name, template in step.durations:
            rendered = render(template, self.scope())
            try:
                values[name] = float(rendered) if isinstance(rendered, (int, float)) else parse_duration(str(rendered))
            except ValueError as exc:
                raise ExpressionError(f"{name.removesuffix('_s').replace('wait_', 'wait.')}: {exc}",
                                      expression=str(template), step=step.id) from None
        return replace(step, **values)

    def route(self, step: Step, result: StepResult) -> str | None:
        """Record how a step ended and return the step that comes next (Finish on an unhandled failure)."""
        def finished(next_step: str | None, **fields: Any) -> None:
            self.emit("step_finished", step.id, records.step_finished(
                result.status, ok=result.ok, result=result.result, error=result.error, attempts=result.attempts,
                duration_s=result.duration_s, next_step=next_step, **result.extra, **fields),
                sync=self._durable(step))

        if result.status == StepStatus.SKIPPED:
            self.emit("step_started", step.id, records.step_started(step.kind, skipped=True), sync=False)
        if result.ok or result.status == StepStatus.SKIPPED:
            nxt = result.goto or following(self.rb, step)
            if result.ok and step.rollback and self._mutating(step):
                finished(nxt, rollback_push=step.rollback)
            else:
                finished(nxt)
            return nxt
        if step.on_fail:
            finished(step.on_fail)
            return step.on_fail
        outcome = (Outcome(step.fail) if step.fail else None) or self.rb.default_fail or \
            FAILURE_DEFAULTS.get(step.kind, Outcome.INTERNAL_ERROR)
        finished(None, unhandled=outcome.value)
        self.run_rollbacks()
        raise Finish(outcome, f"step '{step.id}' failed: {result.error or 'failed'}", step.id)

    def _durable(self, step: Step) -> bool:
        """Whether a step's end must be on disk before the run goes on (group commit).

        A read-only step's records ride with the next synced record: lost in a power cut, the step
        just runs again on resume. A mutating step, an approval or a sub-runbook is synced at once.
        """
        return self._mutating(step) or isinstance(step, (ApproveStep, CallStep))

    def _mutating(self, step: Step) -> bool:
        return isinstance(step, ActionStep) or (isinstance(step, CheckStep) and step.mutates)

    # -- rollbacks ---------------------------------------------------------------

    def run_rollbacks(self) -> None:
        """Run the rollback steps of completed actions, newest first; failures are recorded, not routed."""
        while self.state.rollback_stack:
            target = self.state.rollback_stack[-1]
            step = self.rb.step(target)
            self.emit("rollback", target, {"remaining": self.state.rollback_stack[:-1]})
            self.svc.reporter.step_started(step, rollback=True)
            result = self._rollback_step(step)
            self.emit("step_finished", step.id, records.step_finished(
                result.status, ok=result.ok, result=result.result, error=result.error, attempts=result.attempts,
                duration_s=result.duration_s, rollback=True))
            self.svc.reporter.step_finished(step, result)

    def _rollback_step(self, step: Step) -> StepResult:
        if not isinstance(step, (CheckStep, ActionStep)):
            return StepResult(StepStatus.FAILED, error=f"rollback target '{step.id}' is a {step.kind} step (expected check or action)")
        try:
            return self._plugin_step(self._concrete(step))
        except ExpressionError as exc:
            return StepResult(StepStatus.FAILED, error=str(exc))

    # -- check / action ------------------------------------------------------------

    def _plugin_step(self, step: Step) -> StepResult:
        assert isinstance(step, (CheckStep, ActionStep))
        plugin = self.plugin_for(step)
        if step.for_each is None:
            return self._attempts(step, plugin, None, None)
        started = time.perf_counter()
        try:
            items = evaluate(step.for_each, self.scope())
        except ExpressionError as exc:
            return StepResult(StepStatus.FAILED, error=f"for_each: {exc}")
        if not isinstance(items, (list, tuple)):
            return StepResult(StepStatus.FAILED, error=f"for_each: expected a list, got {type(items).__name__}")
        results: list[Any] = list(self.state.items_done.get(step.id, []))
        status = StepStatus.OK
        error = None
        attempts = 0
        for index in range(len(results), len(items)):
            one = self._attempts(step, plugin, items[index], index)
            attempts += one.attempts
            self.emit("step_finished", step.id, records.step_finished(
                one.status, ok=one.ok, result=one.result, error=one.error, attempts=one.attempts,
                duration_s=one.duration_s, final=False, item=index), sync=self._durable(step))
            results.append(one.result)
            if not one.ok:
                status, error = StepStatus.FAILED, f"item {index}: {one.error}"
                break
            if one.status == StepStatus.PLANNED:
                status = StepStatus.PLANNED
        return StepResult(status, result=results, error=error, attempts=attempts,
                          duration_s=time.perf_counter() - started, extra={"items": len(items)})

    def _attempts(self, step: CheckStep | ActionStep, plugin: Any, item: Any, index: int | None) -> StepResult:
        total = max(1, step.retry.attempts)
        started = time.perf_counter()
        result = StepResult(StepStatus.FAILED)
        for attempt in range(1, total + 1):
            result = self._invoke(step, plugin, item, index, attempt)
            result.attempts = attempt
            if result.ok or attempt == total:
                break
            self.emit("step_finished", step.id, records.step_finished(
                StepStatus.FAILED, ok=False, result=result.result, error=result.error, attempts=attempt,
                duration_s=result.duration_s, final=False, attempt=attempt, item=index, retrying=True),
                sync=self._durable(step))
            with signals.interruptible():
                time.sleep(step.retry.delay_before(attempt + 1))
        result.duration_s = time.perf_counter() - started
        return result

    def _invoke(self, step: CheckStep | ActionStep, plugin: Any, item: Any, index: int | None, attempt: int,
                *, verify_only: bool = False) -> StepResult:
        mutating = self._mutating(step)
        extra = {"item": item} if step.for_each is not None else {}
        scope = self.scope(**extra)
        try:
            params = render(step.with_ or {}, scope)
            _check_rendered(plugin, step.with_ or {}, params)
        except ExpressionError as exc:
            return StepResult(StepStatus.FAILED, error=f"with: {exc}")
        ctx = self.context(step, attempt, index)
        if mutating:
            self._kill_switch_gate(step)
        if mutating and self.dry:
            return self._plan(step, plugin, params, ctx, attempt, index)
        if mutating and isinstance(step, ActionStep) and step.id in self.state.bound:
            refused = self._check_bound(step, params, index)
            if refused is not None:
                return refused
        if mutating:
            self.svc.before_mutation(step)
        started: dict[str, Any] = {"kind": step.kind, "plugin": step.plugin, "attempt": attempt, "item": index,
                                   "mutates": mutating}
        if mutating:
            started.update(token=ctx.idempotency_token, params=params)
        self.emit("step_started", step.id, records.step_started(**started), sync=mutating)
        begin = time.perf_counter()
        try:
            with signals.interruptible():
                output = dict(plugin.run(params, ctx) or {})
        except PluginError as exc:
            partial = exc.result or {}
            self._keep_artifacts(step, partial)
            return StepResult(StepStatus.FAILED, result=partial or None, error=str(exc), duration_s=time.perf_counter() - begin)
        except Exception as exc:  # noqa: BLE001 - a plugin bug fails its step, never the engine
            return StepResult(StepStatus.FAILED, error=f"plugin '{step.plugin}' crashed: {type(exc).__name__}: {exc}",
                              duration_s=time.perf_counter() - begin)
        elapsed = time.perf_counter() - begin
        self._keep_artifacts(step, output)
        return self._judge(step, output, elapsed, extra)

    def _judge(self, step: Step, output: dict[str, Any], elapsed: float, extra: dict[str, Any]) -> StepResult:
        if step.expect is None:
            ok = bool(output.get("ok", True))
            return StepResult(StepStatus.OK if ok else StepStatus.FAILED, result=output, duration_s=elapsed,
                              error=None if ok else "the plugin reported ok = false")
        scope = self.scope(result=output, **extra)
        try:
            passed = bool(evaluate(step.expect, scope))
        except ExpressionError as exc:
            return StepResult(StepStatus.FAILED, result=output, error=f"expect: {exc}", duration_s=elapsed)
        if passed:
            return StepResult(StepStatus.OK, result=output, duration_s=elapsed)
        observed = read_values(step.expect, scope)
        return StepResult(StepStatus.FAILED, result=output, duration_s=elapsed,
                          error=f"expect `{step.expect}` was false (observed {_short(observed)})",
                          extra={"observed": observed})

    def _plan(self, step: Step, plugin: Any, params: dict[str, Any], ctx: StepContext, attempt: int,
              index: int | None) -> StepResult:
        self.emit("step_started", step.id, records.step_started(
            step.kind, plugin=getattr(step, "plugin", None), attempt=attempt, item=index, mutates=True, planned=True),
            sync=False)
        try:
            plan = plugin.plan(params, ctx) if isinstance(plugin, Action) else Plan(f"run {step.kind} {getattr(step, 'plugin', '')}", {"params": params})
        except PluginError as exc:
            plan = Plan(f"run {getattr(step, 'plugin', step.kind)} (plan incomplete: {exc})",
                        {"params": params, "plan_error": str(exc)})
        except Exception as exc:  # noqa: BLE001
            return StepResult(StepStatus.FAILED, error=f"plugin '{getattr(step, 'plugin', '')}' crashed while planning: {type(exc).__name__}: {exc}")
        return StepResult(StepStatus.PLANNED, result=PlannedResult(step.id, {"planned": True, "plan": {"summary": plan.summary, **dict(plan.details)}}))

    def _keep_artifacts(self, step: Step, output: Mapping[str, Any]) -> None:
        for name in ("stdout", "stderr"):
            value = output.get(name)
            if isinstance(value, str) and value:
                self.log.artifact(step.id, f"{name}.txt", value[:MAX_ARTIFACT_CHARS])
        for key in step.evidence:
            if key in output:
                value = output[key]
                if isinstance(value, str):
                    self.log.artifact(step.id, f"{key}.txt", value[:MAX_ARTIFACT_CHARS])
                else:
                    clean = self.log.redactor.data(value)
                    self.log.artifact(step.id, f"{key}.json", json.dumps(clean, indent=2, default=str, sort_keys=True))

    def _kill_switch_gate(self, step: Step) -> None:
        path = self.svc.kill_switch
        if not os.path.exists(path):
            return
        try:
            content = path.read_text(encoding="utf-8", errors="replace")[:10000]
        except OSError:
            content = ""
        if not self.state.halted:
            self.emit("kill_switch", step.id, {"path": str(path), "content": content, "safe_in_halt": step.safe_in_halt})
        if not step.safe_in_halt:
            self.emit("step_finished", step.id, records.step_finished(
                StepStatus.FAILED, ok=False, error="kill switch engaged", unhandled=Outcome.ANOMALY_HALT.value))
            raise Finish(Outcome.ANOMALY_HALT, f"kill switch engaged ({path}): step '{step.id}' not run", step.id)

    # -- decide -------------------------------------------------------------------

    def _decide(self, step: Step) -> StepResult:
        assert isinstance(step, DecideStep)
        self.emit("step_started", step.id, records.step_started("decide"), sync=False)
        scope = self.scope()
        evaluated: list[dict[str, Any]] = []
        for branch in step.branches:
            if branch.condition is None:
                self.emit("decision", step.id, {"branches": evaluated, "taken": "else", "goto": branch.goto}, sync=False)
                return StepResult(StepStatus.OK, result={"branch": "else", "goto": branch.goto}, goto=branch.goto)
            try:
                value = bool(evaluate(branch.condition, scope))
            except ExpressionError as exc:
                evaluated.append({"if": branch.condition, "error": str(exc)})
                self.emit("decision", step.id, {"branches": evaluated, "taken": None}, sync=False)
                return StepResult(StepStatus.FAILED, error=f"decide: {exc}")
            evaluated.append({"if": branch.condition, "value": value, "read": read_values(branch.condition, scope)})
            if value:
                self.emit("decision", step.id, {"branches": evaluated, "taken": branch.condition,
                                                      "goto": branch.goto}, sync=False)
                return StepResult(StepStatus.OK, result={"branch": branch.condition, "goto": branch.goto}, goto=branch.goto)
        self.emit("decision", step.id, {"branches": evaluated, "taken": None}, sync=False)
        return StepResult(StepStatus.FAILED, error="no decide branch was true and there is no else")

    # -- approve -------------------------------------------------------------------

    def _approve(self, step: Step) -> StepResult:
        assert isinstance(step, ApproveStep)
        try:
            prompt = str(render(step.prompt, self.scope()))
        except ExpressionError as exc:
            return StepResult(StepStatus.FAILED, error=f"prompt: {exc}")
        request: dict[str, Any] = {"prompt": prompt, "approvers": list(step.approvers), "four_eyes": step.four_eyes}
        self.emit("step_started", step.id, records.step_started("approve", **request), sync=False)
        bound: dict[str, Any] = {}
        if step.binds:
            plans = self._bound_plans(step)
            bound = {"plans": plans, "plan_sha256": plans_sha256(plans)}
        if self.dry:
            self.emit("approval", step.id, {"decision": "would ask", **request, **bound})
            return StepResult(StepStatus.PLANNED, result={"would_ask": prompt, **bound})
        decision = self.state.approvals.get(step.id)
        if decision is None and self.interactive:
            decision = self._ask_approval(step, prompt, bound)
        if decision is None:
            self.emit("approval_requested", step.id, {**request, **bound})
            raise Pause(f"waiting for approval of step '{step.id}'",
                        {"type": "approval", "step": step.id, **request, **bound})
        result = {"decision": decision["decision"], "by": decision["by"], "note": decision.get("note")}
        if decision.get("plan_sha256"):
            result["plan_sha256"] = decision["plan_sha256"]
        if decision["decision"] == "approved":
            return StepResult(StepStatus.OK, result=result)
        return StepResult(StepStatus.FAILED, result=result, error=f"denied by {decision['by']}")

    def _ask_approval(self, step: ApproveStep, prompt: str, bound: dict[str, Any]) -> dict[str, Any] | None:
        """The answer given at the terminal, recorded; None when the run is to pause (refused, paused, input closed)."""
        operator = self.run["operator"]
        if self.svc.approvals.policy.require_signature:
            self.svc.reporter.message(
                f"approvals must be signed (approvals.require_signature): not asked at the terminal; the run pauses "
                f"for `runbook approve {self.run['id']} {step.id} --by NAME --key PRIVATE_KEY`")
            return None
        shown = prompt + "".join(f"\n  plan of {target}: {_plan_line(plan)}"
                                 for target, plan in (bound.get("plans") or {}).items())
        try:
            with signals.interruptible():
                answer = self.svc.reporter.ask_approval(step, shown, operator,
                                                        lambda by: approval_refusal(step, by, operator))
        except EOFError:
            return None
        if answer.get("refused"):
            self.emit("approval_refused", step.id, records.approval_refused(answer["by"], answer["refused"],
                                                                             via="terminal"))
            self.svc.reporter.message(f"approval refused: {answer['refused']}; the run pauses for "
                                      f"`runbook approve {self.run['id']} {step.id} --by NAME`")
            return None
        if answer.get("decision") not in ("approved", "denied"):
            return None
        approval_id = self.svc.approvals.give(step.id, answer["decision"], answer["by"], answer.get("note"),
                                              "terminal", **bound)
        recorded: dict[str, Any] = self.emit("approval", step.id, records.approval(
            answer["decision"], answer["by"], note=answer.get("note"), via="terminal", approval_id=approval_id,
            **bound))["data"]
        return recorded

    def _bound_plans(self, step: ApproveStep) -> dict[str, Any]:
        """The plan of each action an approval binds, as a dry-run would make it now (redacted, JSON-plain)."""
        plans: dict[str, Any] = {}
        for target in step.binds:
            action = self.rb.step(target)
            assert isinstance(action, ActionStep)
            if action.for_each is None:
                plans[target] = self._plan_now(action, None, None)
                continue
            try:
                items = evaluate(action.for_each, self.scope())
            except ExpressionError as exc:
                plans[target] = {"error": f"for_each: {exc}"}
                continue
            plans[target] = [self._plan_now(action, item, n) for n, item in enumerate(items)] \
                if isinstance(items, (list, tuple)) else {"error": "for_each: not a list"}
        plain: dict[str, Any] = self._plain(plans)
        return plain

    def _plan_now(self, step: ActionStep, item: Any, index: int | None, params: Any = None) -> Any:
        """One bound action's plan in the current scope (an error text when it cannot be made)."""
        plugin = self.plugin_for(step)
        if params is None:
            try:
                params = render(step.with_ or {}, self.scope(**({"item": item} if step.for_each is not None else {})))
            except ExpressionError as exc:
                return {"error": f"with: {exc}"}
        try:
            plan = plugin.plan(params, self.context(step, 1, index)) if isinstance(plugin, Action) else \
                Plan(f"run {step.kind} {step.plugin}", {"params": params})
        except PluginError as exc:
            return {"error": f"no plan: {exc}"}
        except Exception as exc:  # noqa: BLE001 - a plugin bug in plan() fails the comparison, not the engine
            return {"error": f"plugin '{step.plugin}' crashed while planning: {type(exc).__name__}: {exc}"}
        return {"summary": plan.summary, **dict(plan.details)}

    def _plain(self, value: Any) -> Any:
        return json.loads(canonical(self.log.redactor.data(value)))

    def _check_bound(self, step: ActionStep, params: Any, index: int | None) -> StepResult | None:
        """Pause (for a new approval) when a bound action's plan differs from the approved one."""
        bound = self.state.bound[step.id]
        approved = bound.get("plan")
        if step.for_each is not None and isinstance(approved, list):
            approved = approved[index] if index is not None and index < len(approved) else None
        now = self._plain(self._plan_now(step, None, index, params))
        if plans_sha256(now) == plans_sha256(approved):
            if bound.get("decision") == "denied":
                return StepResult(StepStatus.FAILED, error=f"the plan of step '{step.id}' was denied by {bound.get('by')}")
            return None
        binding = self.rb.step(bound["approval"])
        assert isinstance(binding, ApproveStep)
        import difflib

        diff = list(difflib.unified_diff(json.dumps(approved, indent=2, sort_keys=True).splitlines(),
                                         json.dumps(now, indent=2, sort_keys=True).splitlines(),
                                         fromfile=f"approved plan of {step.id}", tofile=f"plan of {step.id} now",
                                         lineterm=""))
        changed = {"step": step.id, "approved_sha256": plans_sha256(approved), "now_sha256": plans_sha256(now),
                   "approved": _plan_line(approved), "now": _plan_line(now), "diff": diff[:400]}
        plans = self._bound_plans(binding)
        request = {"prompt": f"the plan of step '{step.id}' changed since it was approved at step '{binding.id}' "
                             f"by {bound.get('by')}: approve the new plan?",
                   "approvers": list(binding.approvers), "four_eyes": binding.four_eyes,
                   "plans": plans, "plan_sha256": plans_sha256(plans), "rebind": True, "changed": changed}
        self.emit("approval_requested", binding.id, request)
        raise Pause(f"the plan of step '{step.id}' changed since it was approved; waiting for a new approval of "
                    f"step '{binding.id}'", {"type": "approval", "step": binding.id, **request})

    # -- wait ----------------------------------------------------------------------

    def _wait(self, step: Step) -> StepResult:
        assert isinstance(step, WaitStep)
        plugin = self.plugin_for(step)
        self.emit("step_started", step.id, records.step_started(
            "wait", plugin=step.plugin, until=step.until, timeout_s=step.wait_timeout_s), sync=False)
        begin = time.perf_counter()
        deadline = time.monotonic() + step.wait_timeout_s
        polls = 0
        output: dict[str, Any] = {}
        while True:
            polls += 1
            try:
                params = render(step.plugin_with or {}, self.scope())
                ctx = self.context(step, polls)
                output = dict(plugin.run(params, ctx) or {})
                satisfied = bool(evaluate(step.until, self.scope(result=output)))
            except (PluginError, ExpressionError) as exc:
                output, satisfied = {"error": str(exc)}, False
            self.svc.reporter.wait_polled(step, polls, read_values(step.until, self.scope(result=output)), deadline - time.monotonic())
            if satisfied:
                self._keep_artifacts(step, output)
                return StepResult(StepStatus.OK, result={**output, "polls": polls}, duration_s=time.perf_counter() - begin)
            if self.dry:
                return StepResult(StepStatus.PLANNED, result={**output, "polls": polls,
                                  "would_wait_s": step.wait_timeout_s}, duration_s=time.perf_counter() - begin)
            if time.monotonic() + step.every_s > deadline:
                self._keep_artifacts(step, output)
                return StepResult(StepStatus.FAILED, result={**output, "polls": polls}, duration_s=time.perf_counter() - begin,
                                  error=f"`{step.until}` still false after {polls} polls ({step.wait_timeout_s:g}s timeout)")
            with signals.interruptible():
                time.sleep(step.every_s)

    # -- call ----------------------------------------------------------------------

    def _call(self, step: Step) -> StepResult:
        assert isinstance(step, CallStep)
        flight = self.state.in_flight or {}
        child_run_id = flight.get("child_run_id") if flight.get("step") == step.id else None
        try:
            params = render(step.with_ or {}, self.scope())
        except ExpressionError as exc:
            return StepResult(StepStatus.FAILED, error=f"with: {exc}")
        begin = time.perf_counter()
        resumed = self.svc.resume_child(child_run_id) if child_run_id else None
        if resumed is not None:
            outcome, run_id, message = resumed
        else:
            if child_run_id is None:
                child_run_id = new_run_id(step.runbook)
                self.emit("step_started", step.id, records.step_started(
                    "call", runbook=step.runbook, params=params, child_run_id=child_run_id))
            outcome, run_id, message = self.svc.call_runbook(step, params, child_run_id)
        result = {"run_id": run_id, "outcome": outcome.value, "exit_code": outcome.exit_code, "message": message}
        if outcome is Outcome.PAUSED:
            raise Pause(f"sub-runbook '{step.runbook}' is paused", {"type": "call", "step": step.id, "child_run_id": run_id})
        status = StepStatus.OK if outcome is Outcome.SUCCESS else StepStatus.FAILED
        return StepResult(status, result=result, duration_s=time.perf_counter() - begin,
                          error=None if status == StepStatus.OK else f"sub-runbook {step.runbook} ended {outcome.value}: {message}")

    # -- operator mode -----------------------------------------------------------------

    def _preview(self, step: Step) -> dict[str, Any]:
        ids = [s.id for s in self.rb.steps]
        preview: dict[str, Any] = {"id": step.id, "kind": step.kind, "title": step.title,
                                   "position": f"step {ids.index(step.id) + 1} of {len(ids)}"}
        if isinstance(step, (CheckStep, ActionStep)):
            preview["plugin"] = step.plugin
            try:
                preview["with"] = render(step.with_ or {}, self.scope())
            except ExpressionError as exc:
                preview["with"] = f"(cannot render: {exc})"
        if isinstance(step, ActionStep) and isinstance(preview["with"], dict):
            plugin = self.plugin_for(step)
            try:
                plan = plugin.plan(preview["with"], self.context(step, 1)) if isinstance(plugin, Action) else None
                preview["plan"] = {"summary": plan.summary, **dict(plan.details)} if plan else None
            except PluginError as exc:
                preview["plan"] = f"(no plan: {exc})"
            except Exception as exc:  # noqa: BLE001 - a plugin bug in plan() must not end the run at a prompt
                preview["plan"] = f"(plugin '{step.plugin}' crashed while planning: {type(exc).__name__}: {exc})"
        return preview


def approval_refusal(step: ApproveStep, by: str, operator: str) -> str | None:
    """Why `by` may not approve this step, or None when they may."""
    if step.approvers and by not in step.approvers:
        return f"'{by}' is not an approver of step '{step.id}' (expected one of: {', '.join(step.approvers)})"
    if step.four_eyes and by == operator:
        return f"four-eyes: '{by}' started this run and cannot approve it"
    return None


def _plan_line(plan: Any) -> str:
    """One line for a plan: its summary (each item's for a for_each action), or its error."""
    if isinstance(plan, list):
        return "; ".join(_plan_line(p) for p in plan) or "(no items)"
    if isinstance(plan, dict):
        return str(plan.get("summary") or plan.get("error") or plan)
    return str(plan)


def _short(values: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in values.items())
    return text if len(text) <= 300 else text[:297] + "..."


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                       "boolean": (bool,), "array": (list,), "object": (dict,), "null": (type(None),)}


def _type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    declared = schema.get("type")
    if declared is None:
        return True
    names = declared if isinstance(declared, list) else [declared]
    for name in names:
        if isinstance(value, _TYPES.get(name, (object,))) and not (name in ("integer", "number") and isinstance(value, bool)):
            return True
    return False


def _check_rendered(plugin: Any, raw: Mapping[str, Any], rendered: Mapping[str, Any]) -> None:
    """Type-check the values that templates produced (static values were validated before the run)."""
    properties = plugin.params_schema.get("properties", {})
    for key, value in rendered.items():
        source = raw.get(key)
        schema = properties.get(key)
        if schema is None or not isinstance(schema, Mapping):
            continue
        if is_template(source) and not _type_ok(value, schema):
            raise ExpressionError(f"'{key}' rendered to {value!r}, expected {schema.get('type')}")
        if isinstance(source, list) and isinstance(value, list) and isinstance(schema.get("items"), Mapping):
            for n, (src, val) in enumerate(zip(source, value, strict=False)):
                if is_template(src) and not _type_ok(val, schema["items"]):
                    raise ExpressionError(f"'{key}[{n}]' rendered to {val!r}, expected {schema['items'].get('type')}")
