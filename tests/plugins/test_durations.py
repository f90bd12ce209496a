"""One duration grammar: runbook fields and plugin params accept the same strings, days included."""

from __future__ import annotations

import pytest

from engine.durations import parse_duration
from tests.conftest import Workspace
from transports.util import seconds


@pytest.mark.parametrize(("text", "expected"), [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0),
                                                ("2d", 172800.0)])
def test_engine_and_plugins_read_durations_alike(text: str, expected: float) -> None:
    assert parse_duration(text) == seconds(text) == expected


@pytest.mark.parametrize("text", ["5", "5 minutes", "１０s", "2w", "-1s", ".5s", "1e3s"])
def test_bad_durations_are_refused_alike(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
    with pytest.raises(ValueError):
        seconds(text)


def test_days_in_lock_ttl_timeout_and_max_age(ws: Workspace) -> None:
    ws.write("fresh.txt", "x")
    ws.runbook("days", """
        runbook: days
        title: Days everywhere
        version: 1
        description: t
        source: tests
        lock: {name: days, ttl: 2d, wait: 0s}
        steps:
          - id: fresh
            check: file.age
            with: {path: fresh.txt, max_age: 2d}
            timeout: 1d
            expect: result.max_age_s == 172800
          - id: done
            end: SUCCESS
        """)
    assert ws.cli("validate", "days").code == 0
    result = ws.cli("run", "days")
    assert result.code == 0, result.text


def test_fullwidth_digits_are_not_a_duration(ws: Workspace) -> None:
    ws.runbook("wide", """
        runbook: wide
        title: Fullwidth
        version: 1
        description: t
        source: tests
        steps:
          - id: one
            check: noop
            timeout: "１０s"
          - id: done
            end: SUCCESS
        """)
    result = ws.cli("validate", "wide")
    assert result.code == 20 and "bad duration" in result.err, result.text
