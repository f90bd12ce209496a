"""One error family; every error that reaches the operator carries its location."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.vocabulary import Outcome, exit_code_of


@dataclass(frozen=True)
class Problem:
    """One located problem in a runbook, params or config file."""

    path: str
    line: int | None
    col: int | None
    step: str | None
    message: str

    def __str__(self) -> str:
        where = self.path
        if self.line is not None:
            where += f":{self.line}:{self.col or 1}"
        step = f" step '{self.step}':" if self.step else ""
        return f"{where}:{step} {self.message}"


class RunbookError(Exception):
    """Base of every error the CLI turns into a message and an exit code.

    An error carries the outcome it ends a command with; its exit code is that outcome's
    (`outcome = None` is a command-line usage error, exit 2).
    """

    outcome: Outcome | None = Outcome.INTERNAL_ERROR

    @property
    def exit_code(self) -> int:
        """The process exit code (SPEC 3)."""
        return exit_code_of(self.outcome)


class UsageError(RunbookError):
    """The command line itself is wrong."""

    outcome = None


class UnknownRun(UsageError):
    """No run with that id in the state directory (exit 2); an id that is not a run id is shown quoted, cut short."""

    def __init__(self, run_id: str, *, well_formed: bool) -> None:
        shown = run_id if well_formed else repr(run_id[:80])
        super().__init__(f"no run {shown} in the state directory (`runbook runs` lists them)")


class ApprovalRefused(UsageError):
    """`runbook approve` by someone who may not approve, or of a step not waiting (exit 2; recorded when refused)."""


class InvalidRunbook(RunbookError):
    """A runbook, its params or a plugin's params are invalid; nothing was executed."""

    outcome = Outcome.DATA_INVALID

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StateCorrupt(RunbookError):
    """Run state or evidence failed its integrity check."""

    outcome = Outcome.STATE_CORRUPT


class LockNotAcquired(RunbookError):
    """The runbook's lock is held (LOCK_TIMEOUT, or BUSINESS_SKIP with on_held: skip) or stale without
    `--force-lock-break`; `payload` is the holder's lock payload."""

    outcome: Outcome

    def __init__(self, message: str, outcome: Outcome, payload: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.payload = payload


class PluginError(Exception):
    """Raised by a plugin to fail its step with a clear message (never a traceback).

    `result` carries what was observed before the failure (for example the
    partial stdout of a command that timed out); it is kept as evidence.
    """

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result


class ExpressionError(Exception):
    """An expression or template could not be evaluated; the message says why and shows the source.

    `expression` is the source text that failed (when known) and `step` the id of the step it
    belongs to, set by `at` where the step is known. The step stays out of `str()`: every
    message that carries one is already located by its step (evidence records, problems).
    """

    def __init__(self, message: str, *, expression: str | None = None, step: str | None = None) -> None:
        super().__init__(message)
        self.expression = expression
        self.step = step

    def at(self, step: str) -> ExpressionError:
        """This error, located at `step` (kept when already located)."""
        if self.step is None:
            self.step = step
        return self
