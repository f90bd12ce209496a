"""What the operator sees: progress lines, prompts in operator mode and for approvals.

`PlainConsole` needs nothing beyond the standard library (automated runs,
pipes); `RichConsole` is used on a terminal; `QuietConsole` for `--output json`.
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from engine.redact import mask

_SYMBOL = {"ok": "ok", "failed": "FAIL", "skipped": "skip", "planned": "plan"}


class PlainConsole:
    """One line per step on stderr."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.depth = 0

    def _line(self, text: str) -> None:
        print("  " * self.depth + mask(text), file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A note for the operator."""
        self._line(text)

    def step_started(self, step: Any, rollback: bool = False) -> None:
        """A step begins."""
        if rollback:
            self._line(f"-> rollback {step.id}")

    def step_finished(self, step: Any, result: Any) -> None:
        """A step ended; show its verdict."""
        detail = f": {result.error}" if result.error else ""
        if result.status == "planned" and isinstance(result.result, dict) and "plan" in result.result:
            detail = f": would {result.result['plan'].get('summary')}"
        self._line(f"[{_SYMBOL.get(result.status, result.status):>4}] {step.id} ({step.kind}) {result.duration_s:.3f}s{detail}")

    def run_finished(self, result: Any) -> None:
        """The run ended (or paused)."""
        self._line(f"{result.runbook}: {result.outcome.value} (exit {result.exit_code}) run {result.run_id}")
        if result.message:
            self._line(f"  {result.message}")
        self._line(f"  evidence: {result.evidence_dir}")

    def ask_step(self, step: Any, preview: dict[str, Any]) -> str:
        """Operator mode: run, skip, abort or details."""
        while True:
            self._line(f"next: {step.id} ({step.kind}) {step.title or ''}")
            try:
                answer = input("run / skip / abort / details? [r/s/a/d] ").strip().lower()[:1]
            except EOFError:
                return "abort"
            if answer == "d":
                self._line(json.dumps(preview, indent=2, default=str))
                continue
            choice = {"r": "run", "s": "skip", "a": "abort", "": "run"}.get(answer)
            if choice:
                return choice

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
            by = input("approver name: ").strip()
        refused = refusal(by)
        if refused:
            return {"by": by, "refused": refused}
        while True:
            answer = input("approve / deny / pause? [a/d/P] ").strip().lower()[:1]
            choice = {"a": "approved", "y": "approved", "d": "denied", "n": "denied", "p": "pause", "": "pause"}.get(answer)
            if choice:
                break
        if choice == "pause":
            return {"by": by, "decision": "pause"}
        note = input("note (optional): ").strip() or None
        return {"decision": choice, "by": by, "note": note}


class RichConsole(PlainConsole):
    """Coloured progress and prompts with rich."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False)

    def _line(self, text: str) -> None:
        from rich.markup import escape

        style = ""
        if text.lstrip().startswith("[FAIL]"):
            style = "bold red"
        elif text.lstrip().startswith("[  ok]"):
            style = "green"
        elif text.lstrip().startswith("[plan]"):
            style = "cyan"
        self.console.print("  " * self.depth + escape(mask(text)), style=style or None)

    def ask_step(self, step: Any, preview: dict[str, Any]) -> str:
        """Operator mode with a rich prompt."""
        from rich.pretty import Pretty
        from rich.prompt import Prompt

        while True:
            self.console.rule(f"{step.id} ({step.kind})")
            try:
                choice = Prompt.ask("run / skip / abort / details", choices=["run", "skip", "abort", "details"],
                                    default="run", console=self.console)
            except EOFError:
                return "abort"
            if choice != "details":
                return choice
            self.console.print(Pretty(preview))


class QuietConsole(PlainConsole):
    """`--output json`: progress suppressed, one JSON document printed by the CLI."""

    def _line(self, text: str) -> None:
        return None


def make_console(output: str, interactive: bool) -> PlainConsole:
    """The console for an output format and terminal."""
    if output == "json":
        return QuietConsole()
    if interactive and sys.stderr.isatty():
        return RichConsole()
    return PlainConsole()
