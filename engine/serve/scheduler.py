"""Cron schedules: each due time of a schedule rule becomes one event, deduped on (rule, time).

A time missed while serve was down is handled by the rule's `missed` policy: `skip` records it and
starts nothing; `run-once` starts one run for the latest missed time. Both are recorded in the inbox.
A rule with a `calendar` fires only on the exchange's sessions (or its last session of the month,
optionally not on an early close); a gated time is recorded with the reason and starts nothing.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from engine.serve.inbox import Inbox
from engine.serve.intake import Intake
from engine.serve.rules import Rule

GRACE_S = 60.0  # a due time younger than this is on time; older ones were missed
MAX_CATCH_UP = 10_000


def due_times(rule: Rule, after: float, now: float) -> list[float]:
    """Cron times of `rule` strictly after `after` and not after `now` (epoch seconds)."""
    from croniter import croniter

    assert rule.cron is not None
    zone = ZoneInfo(rule.timezone)
    it = croniter(rule.cron, datetime.fromtimestamp(after, zone))
    out: list[float] = []
    while len(out) < MAX_CATCH_UP:
        nxt = float(it.get_next(float))
        if nxt > now:
            break
        out.append(nxt)
    return out


def next_time(rule: Rule, after: float) -> float:
    """The first cron time of `rule` after `after` (epoch seconds)."""
    from croniter import croniter

    assert rule.cron is not None
    return float(croniter(rule.cron, datetime.fromtimestamp(after, ZoneInfo(rule.timezone))).get_next(float))


def iso(at: float) -> str:
    """An epoch time as UTC RFC 3339."""
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _gate(rule: Rule, at: float) -> str | None:
    """Why the calendar keeps this cron time from firing, or None when it may fire."""
    if rule.calendar is None:
        return None
    day = datetime.fromtimestamp(at, ZoneInfo(rule.timezone)).date()
    allowed, why = rule.calendar.allows(day)
    return None if allowed else why


def tick(rules: list[Rule], inbox: Inbox, intake: Intake, now: float | None = None) -> list[dict[str, Any]]:
    """Handle every due time of every schedule rule; the decisions taken."""
    now = time.time() if now is None else now
    decisions: list[dict[str, Any]] = []
    for rule in rules:
        last = inbox.last_fire(rule.name)
        if last is None:
            inbox.set_last_fire(rule.name, now, "armed")
            continue
        due = due_times(rule, last, now)
        if not due:
            continue
        current = [t for t in due if now - t <= GRACE_S]
        missed = [t for t in due if now - t > GRACE_S]
        if missed:
            if rule.missed == "run-once" and not current and (why := _gate(rule, missed[-1])) is not None:
                inbox.set_last_fire(rule.name, missed[-1], f"missed {len(missed)}; not run: {why}")
            elif rule.missed == "run-once" and not current:
                answer = intake.schedule(rule, iso(missed[-1]))
                answer["missed"] = len(missed)
                decisions.append(answer)
                inbox.set_last_fire(rule.name, missed[-1], f"missed {len(missed)}; ran once: {answer['decision']}")
            else:
                inbox.set_last_fire(rule.name, missed[-1], f"missed {len(missed)}; skipped")
        for at in current:
            why = _gate(rule, at)
            if why is not None:
                inbox.set_last_fire(rule.name, at, f"calendar: {why}")
                continue
            answer = intake.schedule(rule, iso(at))
            decisions.append(answer)
            inbox.set_last_fire(rule.name, at, answer["decision"])
    return decisions
