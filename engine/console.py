"""What the operator sees: progress lines, prompts in operator mode and for approvals.

`PlainConsole` needs nothing beyond the standard library (automated runs,
pipes, `NO_COLOR`); `RichConsole` is used on a terminal and shows the running
steps live (elapsed time; for waits the polls, last observed value and
deadline); `QuietConsole` for `--output json`.

Everything printed goes through `engine.redact.mask`.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from engine.evidence import iter_events, read_events
from engine.prompt import ask_line
from engine.redact import mask
from engine.vocabulary import Mode, StepStatus

_SYMBOL = {StepStatus.OK: "ok", StepStatus.FAILED: "FAIL", StepStatus.SKIPPED: "skip", StepStatus.PLANNED: "plan"}
_CHOICES = {"r": "run", "s": "skip", "a": "abort", "d": "details"}
PREVIEW_LINES = 40  # rendered params and diffs longer than this are cut in the preview (`details` shows all)


@dataclass
class Running:
    """A step the console was told started and not yet finished."""

    step: Any
    started: float = field(default_factory=time.monotonic)
    polls: int = 0
    observed: dict[str, Any] = field(default_factory=dict)
    deadline_at: float | None = None  # time.monotonic() of a wait's deadline
    printed_at: float = 0.0  # the last plain poll line

    def line(self, now: float) -> str:
        """One line: the step, its elapsed time, and for a wait its polls, last observed value and deadline."""
        step = self.step
        text = f"{step.id} ({step.kind}){' ' + step.title if getattr(step, 'title', None) else ''} {now - self.started:.0f}s"
        if self.polls:
            text += f" | poll {self.polls}, observed {_observed(self.observed)}"
        if self.deadline_at is not None:
            left = max(0.0, self.deadline_at - now)
            at = datetime.now(UTC) + timedelta(seconds=left)
            text += f" | deadline {at:%H:%M:%S} UTC ({left:.0f}s left)"
        return text


def _observed(values: dict[str, Any]) -> str:
    if not values:
        return "-"
    text = ", ".join(f"{k}={json.dumps(v, default=str, ensure_ascii=False)}" for k, v in values.items())
    return text if len(text) <= 160 else text[:157] + "..."


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str, ensure_ascii=False, sort_keys=True)


def _plans(result: Any) -> list[dict[str, Any]]:
    """The plans in a planned result (one per item for a for_each step)."""
    items = result if isinstance(result, list) else [result]
    return [item["plan"] for item in items if isinstance(item, dict) and isinstance(item.get("plan"), dict)]


class _Recap:
    """ok / changed / planned / skipped / failed, counted one record at a time."""

    def __init__(self) -> None:
        self.counts = {"ok": 0, "changed": 0, "planned": 0, "skipped": 0, "failed": 0}
        self.mutates: dict[str, bool] = {}

    def add(self, event: dict[str, Any]) -> None:
        """Count one record of the log (records come in log order)."""
        data = event.get("data") or {}
        if event["type"] == "step_started":
            self.mutates[event["step"]] = bool(data.get("mutates"))
            return
        if event["type"] != "step_finished" or not data.get("final", True) or "outcome" in data:
            return  # an item or retry, or an end step
        status = data.get("status")
        if status == StepStatus.OK and self.mutates.get(event["step"]) and _changed(data.get("result")):
            self.counts["changed"] += 1
        elif status in self.counts:
            self.counts[str(status)] += 1


def recap(evidence_dir: Path) -> dict[str, int]:
    """ok / changed / planned / skipped / failed: the final verdict of every step of a run, from its event log."""
    counted = _Recap()
    for event in iter_events(evidence_dir / "events.jsonl"):
        counted.add(event)
    return counted.counts


def run_story(evidence_dir: Path) -> dict[str, Any]:
    """What a run's event log says beyond its outcome: the recap, the changes made, the rollbacks run, the open step.

    One pass over the log, one record held at a time."""
    counted = _Recap()
    changed: list[str] = []
    undone: dict[str, str] = {}  # rollback step -> the step whose change it undoes
    rollbacks: list[tuple[str, str, str | None]] = []  # (rollback step, status, error)
    started: dict[str, str] = {}  # step -> kind, for the steps started and not finished
    mutates: set[str] = set()
    for event in iter_events(evidence_dir / "events.jsonl"):
        counted.add(event)
        data = event.get("data") or {}
        step = event.get("step")
        if event["type"] == "step_started" and step:
            started[step] = str(data.get("kind") or "")
            if data.get("mutates"):
                mutates.add(step)
        elif event["type"] == "step_finished" and step and data.get("final", True):
            started.pop(step, None)
            if data.get("rollback"):
                rollbacks.append((step, str(data.get("status")), data.get("error")))
            elif data.get("status") == StepStatus.OK and data.get("rollback_push"):
                undone[str(data["rollback_push"])] = step
            if data.get("status") == StepStatus.OK and not data.get("rollback") and step in mutates \
                    and _changed(data.get("result")) and step not in changed:
                changed.append(step)
    return {"recap": counted.counts, "changed": changed, "undone": undone, "rollbacks": rollbacks,
            "open": list(started.items())}


_WHY = {
    "BUSINESS_REJECT": "a gate said no (a failed check or decide, a denied approval): an answer, not an error",
    "BUSINESS_SKIP": "nothing was done now: the lock is held (on_held: skip) or the idempotency key is taken",
    "INTERNAL_ERROR": "a step failed and nothing handled it (no on_fail); the engine itself did not crash",
    "ANOMALY_HALT": "the kill switch is engaged, or the runbook ended in ANOMALY_HALT: no further action runs",
    "STATE_CORRUPT": "the run's state or evidence failed its integrity check",
    "LOCK_TIMEOUT": "the runbook's lock was not acquired in time (another run holds it)",
}


def explain(result: Any, story: dict[str, Any] | None) -> list[str]:
    """Lines in words: why the run ended so, which rollbacks ran and how they ended, the state left behind."""
    lines = []
    outcome = result.outcome.value
    if outcome in _WHY:
        lines.append(f"why: {_WHY[outcome]}")
    if story is None:
        return lines
    if story["rollbacks"]:
        told = []
        for step, status, error in story["rollbacks"]:
            of = story["undone"].get(step)
            told.append(f"{step}{f' (undoes {of})' if of else ''} {_SYMBOL.get(status, status)}"
                        + (f": {error}" if error and status == StepStatus.FAILED else ""))
        lines.append("rollbacks: " + "; ".join(told))
        failed = [step for step, status, _ in story["rollbacks"] if status != StepStatus.OK]
        if failed:
            lines.append(f"state: rollback {', '.join(failed)} failed: the system may be partly changed; check it by hand")
        else:
            lines.append("state: every rollback ran ok; the changes they undo are reverted")
    elif outcome not in ("SUCCESS", "PAUSED") and result.mode == Mode.LIVE:
        kept = [step for step in story["changed"]]
        if kept:
            lines.append(f"state: no rollback ran; the changes of {', '.join(kept)} stay in place")
    return lines


def _child_waiting(bundle: Path) -> dict[str, Any]:
    """What a paused sub-runbook waits for, from its own event log ({} when unknown)."""
    try:
        paused = [e for e in read_events(bundle / "events.jsonl") if e["type"] == "run_paused"]
    except (OSError, ValueError):
        return {}
    waiting = (paused[-1].get("data") or {}).get("waiting_for") if paused else None
    return waiting if isinstance(waiting, dict) else {}


def next_commands(result: Any, story: dict[str, Any] | None) -> list[str]:
    """The commands to consider next: for a paused run exactly what continues it."""
    run_id, outcome = result.run_id, result.outcome.value
    waiting = result.waiting_for or {}
    kind = waiting.get("type")
    if outcome == "PAUSED":
        out = []
        if kind == "approval":
            out.append(f"runbook approve {run_id} {waiting.get('step')} --by NAME [--deny]   (then: runbook resume {run_id})")
        elif kind == "in_doubt":
            out.append(f"runbook resume {run_id} --in-doubt rerun|skip|fail")
        elif kind == "call":
            child = waiting.get("child_run_id")
            inner = _child_waiting(Path(result.evidence_dir).parent / str(child))
            if inner.get("type") == "approval":
                out.append(f"runbook approve {child} {inner.get('step')} --by NAME [--deny]   "
                           f"(the sub-runbook's approval; then: runbook resume {run_id})")
            else:
                out.append(f"runbook status {child}   (the paused sub-runbook; then: runbook resume {run_id})")
        else:
            open_approvals = [step for step, step_kind in (story or {}).get("open", []) if step_kind == "approve"]
            if open_approvals:  # stopped before the approval was asked: resume asks it again
                out.append(f"runbook resume {run_id}   (asks for the approval of {open_approvals[-1]} again; "
                           f"with --no-input it pauses for runbook approve)")
            else:
                out.append(f"runbook resume {run_id}")
        out.append(f"runbook status {run_id}   |   end it: runbook cancel {run_id} --by NAME --reason TEXT")
        return out
    if outcome == "SUCCESS":
        return []
    if outcome == "STATE_CORRUPT":
        return [f"runbook evidence verify {run_id}"]
    if outcome in ("BUSINESS_SKIP", "LOCK_TIMEOUT"):
        return [f"runbook runs --runbook {result.runbook}   (the run holding the lock or key); try again later"]
    return [f"runbook evidence report {run_id}   |   runbook status {run_id}",
            f"after fixing the cause: runbook run {result.runbook} --dry-run, then run it again"]


def _changed(result: Any) -> bool:
    """An action counts as changed unless it says it changed nothing (`changed: false`)."""
    items = result if isinstance(result, list) else [result]
    return any(not (isinstance(item, dict) and item.get("changed") is False) for item in items)


class PlainConsole:
    """One line per event on stderr: logs and pipes stay clean."""

    poll_every_s = 10.0  # at most one poll line per wait in this interval (the first poll always shows)

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.depth = 0
        self.running: list[Running] = []
        self.calls: list[str] = []  # the call steps running: their sub-runbooks are indented
        self.said: set[str] = set()  # long error messages already printed

    def _line(self, text: str, style: str | None = None) -> None:
        print("  " * self.depth + mask(text), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A note for the operator."""
        self._line(text)

    # -- progress ------------------------------------------------------------------

    def step_started(self, step: Any, rollback: bool = False) -> None:
        """A step begins; a call's sub-runbook is shown indented under it."""
        self.running.append(Running(step))
        if rollback:
            self._line(f"-> rollback {step.id}")
        else:
            self._started(step)
        if getattr(step, "kind", None) == "call":
            self.calls.append(step.id)
            self.depth += 1

    def _close_call(self, step_id: str | None = None) -> None:
        """The call step (the newest one, or `step_id`) ended: back to its parent's indentation."""
        if self.calls and (step_id is None or self.calls[-1] == step_id):
            self.calls.pop()
            self.depth = max(0, self.depth - 1)

    def _once(self, text: str) -> str:
        """`text` without the long error messages already printed (a child's failure is told once)."""
        for said in sorted(self.said, key=len, reverse=True):
            if said in text:
                text = text.replace(f": {said}", " (the [FAIL] line above says why)").replace(said, "(above)")
        return text

    def _remember(self, error: str | None) -> None:
        if error and len(error) >= 40:
            self.said.add(error)

    def _started(self, step: Any) -> None:
        title = f" {step.title}" if getattr(step, "title", None) else ""
        self._line(f"[ run] {step.id} ({step.kind}){title}")

    def wait_polled(self, step: Any, polls: int, observed: dict[str, Any], deadline_s: float) -> None:
        """A wait step polled: how many polls so far, what its condition read, seconds to its deadline."""
        entry = self._entry(step)
        now = time.monotonic()
        entry.polls, entry.observed, entry.deadline_at = polls, dict(observed), now + deadline_s
        self._polled(entry, now)

    def _polled(self, entry: Running, now: float) -> None:
        if entry.printed_at and now - entry.printed_at < self.poll_every_s:
            return
        entry.printed_at = now
        self._line(f"[wait] {entry.line(now)}")

    def _entry(self, step: Any) -> Running:
        for entry in reversed(self.running):
            if entry.step.id == step.id:
                return entry
        entry = Running(step)
        self.running.append(entry)
        return entry

    def step_finished(self, step: Any, result: Any) -> None:
        """A step ended; show its verdict, and for a planned action its plan's diff."""
        for n in range(len(self.running) - 1, -1, -1):
            if self.running[n].step.id == step.id:
                del self.running[n]
                break
        if getattr(step, "kind", None) == "call":
            self._close_call(step.id)
        detail = f": {self._once(result.error)}" if result.error else ""
        if result.status == StepStatus.FAILED and getattr(step, "kind", None) == "wait" and isinstance(result.result, dict) \
                and "polls" in result.result:
            detail = f": timed out{detail}"
        self._remember(result.error)
        plans = _plans(result.result) if result.status == StepStatus.PLANNED else []
        if len(plans) == 1:
            detail = f": would {plans[0].get('summary')}"
        elif plans:
            detail = f": would {'; '.join(str(p.get('summary')) for p in plans)}"
        self._line(f"[{_SYMBOL.get(result.status, result.status):>4}] {step.id} ({step.kind}) {result.duration_s:.3f}s{detail}")
        for plan in plans:
            self._diff(plan.get("diff"))

    def _diff(self, diff: Any, limit: int | None = None) -> None:
        """A unified diff, indented under its step (like `ansible-playbook --check --diff`)."""
        if not isinstance(diff, str) or not diff.strip():
            return
        lines = diff.rstrip("\n").splitlines()
        shown = lines if limit is None else lines[:limit]
        for line in shown:
            style = None
            if line.startswith(("+++", "---")):
                style = "bold"
            elif line.startswith("+"):
                style = "green"
            elif line.startswith("-"):
                style = "red"
            elif line.startswith("@@"):
                style = "cyan"
            self._line(f"      {line}", style)
        if len(shown) < len(lines):
            self._line(f"      ... {len(lines) - len(shown)} more lines (`details` shows all)")

    def run_finished(self, result: Any) -> None:
        """The run ended (or paused): its outcome, what happened in words, a recap, where its evidence is, what to type next.

        A sub-runbook's run (inside a call step) gets one line: its parent's call step tells the rest once.
        """
        waiting = result.waiting_for or {}
        if waiting.get("type") == "call":
            self._close_call(waiting.get("step"))
        self.running.clear()
        head = f"{result.runbook}: {result.outcome.value} (exit {result.exit_code}) run {result.run_id}"
        if self.calls:
            self._line(f"{head}; evidence: {result.evidence_dir}")
            if result.outcome.value == "PAUSED" and result.message:
                self._line(f"  {self._once(result.message)}")
            if result.outcome.value != "SUCCESS":  # only a failure's words are worth not repeating
                self._remember(result.message)
            return
        self._line(head)
        try:
            story = run_story(Path(result.evidence_dir))
        except (OSError, ValueError):
            story = None
        if result.message:
            self._line(f"  {self._once(result.message)}")
        for line in explain(result, story):
            self._line(f"  {line}")
        if story is None:
            self._line("  recap: not available")
        else:
            self._line("  recap: " + "  ".join(f"{name}={count}" for name, count in story["recap"].items()))
        self._line(f"  evidence: {result.evidence_dir}")
        for line in next_commands(result, story):
            self._line(f"  next: {line}")

    # -- operator mode ---------------------------------------------------------------

    def show_preview(self, step: Any, preview: dict[str, Any]) -> None:
        """What operator mode shows before a step: title, position, rendered params, and an action's plan with its diff."""
        position = preview.get("position")
        head = f"{position}: " if position else "next: "
        title = f" - {step.title}" if step.title else ""
        self._line(f"{head}{step.id} ({step.kind}{' ' + preview['plugin'] if preview.get('plugin') else ''}){title}")
        if "with" in preview:
            rendered = preview["with"]
            lines = (_json(rendered) if not isinstance(rendered, str) else rendered).splitlines()
            self._line("  with: " + (lines[0] if lines else ""))
            for line in lines[1:PREVIEW_LINES]:
                self._line(f"        {line}")
            if len(lines) > PREVIEW_LINES:
                self._line(f"        ... {len(lines) - PREVIEW_LINES} more lines (`details` shows all)")
        plan = preview.get("plan")
        if isinstance(plan, dict):
            self._line(f"  plan: would {plan.get('summary')}")
            self._diff(plan.get("diff"), PREVIEW_LINES)
        elif plan:
            self._line(f"  plan: {plan}")

    def ask_step(self, step: Any, preview: dict[str, Any]) -> str:
        """Operator mode: run, skip, abort or details. No default: an empty answer asks again, never runs."""
        self.show_preview(step, preview)
        while True:
            try:
                answer = ask_line("run / skip / abort / details? [r/s/a/d] ").strip().lower()[:1]
            except EOFError:
                return "abort"
            choice = _CHOICES.get(answer)
            if choice == "details":
                self._line(_json(preview))
            elif choice:
                return choice
            else:
                self._line("answer r (run), s (skip), a (abort) or d (details); there is no default")

    def ask_approval(self, step: Any, prompt: str, operator: str, refusal: Any) -> dict[str, Any]:
        """Prompt for an approval: who approves (checked at once), then approve, deny or pause.

        The safe answer is the default: an empty answer pauses the run for `runbook approve`.
        """
        self._line(f"APPROVAL {step.id}: {prompt}")
        if step.approvers:
            self._line(f"  approvers: {', '.join(step.approvers)}")
        if step.four_eyes:
            self._line(f"  four-eyes: someone other than {operator} must approve")
        by = operator
        if step.approvers or step.four_eyes:
            by = ask_line("approver name: ").strip()
        refused = refusal(by)
        if refused:
            return {"by": by, "refused": refused}
        while True:
            answer = ask_line("approve / deny / pause? [a/d/P] ").strip().lower()[:1]
            choice = {"a": "approved", "y": "approved", "d": "denied", "n": "denied", "p": "pause", "": "pause"}.get(answer)
            if choice:
                break
        if choice == "pause":
            return {"by": by, "decision": "pause"}
        note = ask_line("note (optional): ").strip() or None
        return {"decision": choice, "by": by, "note": note}


class _LiveView:
    """The running steps, rendered afresh at every refresh of rich's live display."""

    def __init__(self, console: RichConsole) -> None:
        self.owner = console

    def __rich__(self) -> Any:
        from rich.text import Text

        now = time.monotonic()
        lines = [f"{'  ' * n}... {entry.line(now)}" for n, entry in enumerate(list(self.owner.running))]
        return Text(mask("\n".join(lines)), style="yellow")


class RichConsole(PlainConsole):
    """Coloured progress and prompts with rich; on a (non-dumb) terminal, the running steps live."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)
        self.live: Any = None
        self.animate = self.console.is_terminal and not self.console.is_dumb_terminal
        atexit.register(self._hide_live)  # an engine crash must not leave the cursor hidden

    def _line(self, text: str, style: str | None = None) -> None:
        from rich.markup import escape

        if style is None:
            head = text.lstrip()
            style = ("bold red" if head.startswith("[FAIL]") else "green" if head.startswith("[  ok]")
                     else "cyan" if head.startswith("[plan]") else None)
        self.console.print("  " * self.depth + escape(mask(text)), style=style, soft_wrap=True)

    def _show_live(self) -> None:
        from rich.live import Live

        if not self.animate:
            return
        if not self.running:
            self._hide_live()
        elif self.live is None:
            self.live = Live(_LiveView(self), console=self.console, refresh_per_second=4, transient=True,
                             redirect_stdout=False, redirect_stderr=False)
            self.live.start(refresh=True)

    def _hide_live(self) -> None:
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()

    def _started(self, step: Any) -> None:
        if self.animate:
            self._show_live()
        else:
            super()._started(step)

    def _polled(self, entry: Running, now: float) -> None:
        if not self.animate:
            super()._polled(entry, now)

    def step_finished(self, step: Any, result: Any) -> None:
        """The verdict line; the live display goes on for the steps still running (a call's parent)."""
        self._hide_live()
        super().step_finished(step, result)
        self._show_live()

    def run_finished(self, result: Any) -> None:
        """The run ended: the live display stops before the outcome lines."""
        self._hide_live()
        super().run_finished(result)
        if self.calls:  # a sub-runbook ended: its parent's call step is still running
            self._show_live()
        else:  # the run stopped (ended or paused): nothing may keep the display alive after it
            self.running.clear()

    def ask_step(self, step: Any, preview: dict[str, Any]) -> str:
        """Operator mode: the same preview and answers as plain lines, under a rule, the live display stopped."""
        self._hide_live()
        self.console.rule()
        return super().ask_step(step, preview)

    def ask_approval(self, step: Any, prompt: str, operator: str, refusal: Any) -> dict[str, Any]:
        """The approval prompt, with the live display stopped while the operator types."""
        self._hide_live()
        try:
            return super().ask_approval(step, prompt, operator, refusal)
        finally:
            self._show_live()


class QuietConsole(PlainConsole):
    """`--output json`: progress suppressed, one JSON document printed by the CLI."""

    def _line(self, text: str, style: str | None = None) -> None:
        return None

    def run_finished(self, result: Any) -> None:
        """Nothing to print: the CLI prints the result document."""
        self.running.clear()


def make_console(output: str, interactive: bool) -> PlainConsole:
    """The console for an output format and terminal; `NO_COLOR` (any value) means plain lines."""
    if output == "json":
        return QuietConsole()
    if interactive and sys.stderr.isatty() and not os.environ.get("NO_COLOR"):
        return RichConsole()
    return PlainConsole()
