"""One error family; every error that reaches the operator carries its location."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    """Base of every error the CLI turns into a message and an exit code."""

    exit_code = 50


class UsageError(RunbookError):
    """The command line itself is wrong."""

    exit_code = 2


class InvalidRunbook(RunbookError):
    """A runbook, its params or a plugin's params are invalid; nothing was executed."""

    exit_code = 20

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class StateCorrupt(RunbookError):
    """Run state or evidence failed its integrity check."""

    exit_code = 30


class PluginError(Exception):
    """Raised by a plugin to fail its step with a clear message (never a traceback).

    `result` carries what was observed before the failure (for example the
    partial stdout of a command that timed out); it is kept as evidence.
    """

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result
