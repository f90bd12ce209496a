"""One error family: every error carries the outcome it ends a command with; exit codes follow from it."""

from __future__ import annotations

import pytest

from engine.errors import (
    ApprovalRefused,
    ExpressionError,
    InvalidRunbook,
    LockNotAcquired,
    RunbookError,
    StateCorrupt,
    UnknownRun,
    UsageError,
)
from engine.expressions import evaluate, render
from engine.vocabulary import EXIT_CODES, Outcome


@pytest.mark.parametrize(("error", "outcome", "code"), [
    (RunbookError("bug"), Outcome.INTERNAL_ERROR, 50),
    (UsageError("bad flag"), None, 2),
    (UnknownRun("nope", well_formed=False), None, 2),
    (ApprovalRefused("not yours"), None, 2),
    (InvalidRunbook([]), Outcome.DATA_INVALID, 20),
    (StateCorrupt("edited"), Outcome.STATE_CORRUPT, 30),
    (LockNotAcquired("held", Outcome.LOCK_TIMEOUT, None), Outcome.LOCK_TIMEOUT, 40),
    (LockNotAcquired("held", Outcome.BUSINESS_SKIP, {"pid": 1}), Outcome.BUSINESS_SKIP, 11),
])
def test_exit_code_follows_from_the_outcome(error: RunbookError, outcome: Outcome | None, code: int) -> None:
    assert error.outcome is outcome
    assert error.exit_code == code
    assert outcome is None or EXIT_CODES[outcome] == code


def test_unknown_run_quotes_what_is_not_a_run_id() -> None:
    assert "no run '../etc'" in str(UnknownRun("../etc", well_formed=False))
    assert "no run 20260101T000000Z-a-abcdef " in str(UnknownRun("20260101T000000Z-a-abcdef", well_formed=True))


@pytest.mark.parametrize(("call", "source"), [
    (lambda: evaluate("missing.name > 1", {}), "missing.name > 1"),
    (lambda: evaluate("1 +", {}), "1 +"),
    (lambda: render("x {{ missing }}", {}), "x {{ missing }}"),
])
def test_expression_error_carries_its_source(call: object, source: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        call()  # type: ignore[operator]
    assert caught.value.expression == source
    assert caught.value.at("check_x").step == "check_x"
    assert caught.value.at("other").step == "check_x"
