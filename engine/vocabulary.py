"""The engine's closed vocabularies: outcomes and their exit codes, step and run statuses, run modes.

Each is a `StrEnum`, so a member is the very string it stands for: JSON, evidence and
run records read and write the same bytes as plain strings. This module imports
nothing from the engine, so the error family and `runbook --help` can use it cheaply.
"""

from __future__ import annotations

from enum import StrEnum

USAGE_EXIT = 2  # a command-line usage error: not an outcome of any run


class Outcome(StrEnum):
    """How a run ended; the value is also the process exit code's name (SPEC 3)."""

    SUCCESS = "SUCCESS"
    BUSINESS_REJECT = "BUSINESS_REJECT"
    BUSINESS_SKIP = "BUSINESS_SKIP"
    PAUSED = "PAUSED"
    DATA_INVALID = "DATA_INVALID"
    STATE_CORRUPT = "STATE_CORRUPT"
    LOCK_TIMEOUT = "LOCK_TIMEOUT"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    ANOMALY_HALT = "ANOMALY_HALT"

    @property
    def exit_code(self) -> int:
        """The process exit code of SPEC 3."""
        return EXIT_CODES[self]


EXIT_CODES: dict[Outcome, int] = {
    Outcome.SUCCESS: 0,
    Outcome.BUSINESS_REJECT: 10,
    Outcome.BUSINESS_SKIP: 11,
    Outcome.PAUSED: 12,
    Outcome.DATA_INVALID: 20,
    Outcome.STATE_CORRUPT: 30,
    Outcome.LOCK_TIMEOUT: 40,
    Outcome.INTERNAL_ERROR: 50,
    Outcome.ANOMALY_HALT: 60,
}

# Outcomes a runbook may name in `end:`, `fail:` and `default_fail:`.
END_OUTCOMES = tuple(o.value for o in Outcome if o is not Outcome.PAUSED)


def exit_code_of(outcome: Outcome | None) -> int:
    """The exit code of an outcome; None stands for a command-line usage error (exit 2)."""
    return USAGE_EXIT if outcome is None else outcome.exit_code


class StepStatus(StrEnum):
    """`steps.ID.status` (SPEC 2.2)."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"
    PLANNED = "planned"


class RunStatus(StrEnum):
    """Where a run stands (docs/lifecycle.md); INTERRUPTED is never stored, it is read off a dead driver."""

    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class Mode(StrEnum):
    """`run.mode`: actions run, or are only planned."""

    LIVE = "live"
    DRY_RUN = "dry-run"
