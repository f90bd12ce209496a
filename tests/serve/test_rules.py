"""Rules, the scheduler's missed-run policy, and the library's triggers file (in-process, no server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from engine.serve.inbox import Inbox
from engine.serve.intake import Intake
from engine.serve.rules import Calendar, Matcher, Rule, ServeSettings
from engine.serve.scheduler import tick
from tests.conftest import REPO, Workspace


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _intake(tmp_path: Path, rules: list[Rule]) -> tuple[Inbox, Intake]:
    inbox = Inbox(tmp_path / "inbox.sqlite")
    return inbox, Intake(ServeSettings(rules=tuple(rules)), inbox, lambda: False)


def test_missed_times_skip_or_run_once_and_each_time_fires_once(tmp_path: Path) -> None:
    skip = Rule(name="skip", runbook="hello", source="schedule", cron="0 8 * * *", missed="skip")
    once = Rule(name="once", runbook="hello", source="schedule", cron="0 8 * * *", missed="run-once")
    inbox, intake = _intake(tmp_path, [skip, once])
    assert tick([skip, once], inbox, intake, now=_epoch("2026-11-02T09:00:00")) == []  # armed
    # serve was down for three days: three 08:00 were missed
    decisions = tick([skip, once], inbox, intake, now=_epoch("2026-11-05T12:00:00"))
    assert [(d["rule"], d["decision"], d.get("missed")) for d in decisions] == [("once", "started", 3)]
    assert "skipped" in inbox.schedule_log("skip")[-1]["what"]
    # on time: one run each, and the same time twice (a restart) is a duplicate, never a second run
    on_time = _epoch("2026-11-06T08:00:00.5")
    assert [d["decision"] for d in tick([skip, once], inbox, intake, now=on_time)] == ["started", "started"]
    assert tick([skip, once], inbox, intake, now=on_time + 1) == []
    assert intake.schedule(skip, "2026-11-06T08:00:00Z")["decision"] == "duplicate"
    triggers = [row.trigger for row in inbox.rows()]
    assert {"schedule": "skip", "at": "2026-11-06T08:00:00Z"} in triggers


def test_matchers_equality_regex_and_groups() -> None:
    import re

    rule = Rule(name="r", runbook="x", source="alertmanager",
                matchers=(Matcher("alertname", "A"), Matcher("severity", "~crit.*", re.compile("crit.*"))),
                group_by=("alertname",))
    assert rule.matches({"alertname": "A", "severity": "critical"})
    assert not rule.matches({"alertname": "A", "severity": "warning"})
    assert not rule.matches({"alertname": "A", "severity": "xcritical"})  # full match
    assert not rule.matches({"alertname": "A"})
    assert rule.group_key({"alertname": "A", "venue": "X"}) == rule.group_key({"alertname": "A", "venue": "Y"})


def test_library_triggers_file_is_valid_and_maps_the_seed_alerts(ws: Workspace) -> None:
    ws.write("runbook.yaml", f"runbook_paths: [{REPO / 'runbooks'}]\ntriggers: {REPO / 'triggers' / 'library.yaml'}\n")
    checked = ws.cli("triggers", "check")
    assert checked.code == 0, checked.text
    body = {"version": "4", "alerts": [
        {"status": "firing", "labels": {"alertname": name}, "fingerprint": name} for name in
        ("HourlyLossExceeded", "DailyLossExceeded", "RealisedSlippageCritical", "Unrelated")]}
    ws.write("event.json", json.dumps(body))
    results = json.loads(ws.cli("triggers", "test", "event.json").out)["results"]
    fired = {r["alert"]: [f["runbook"] for f in r["fires"]] for r in results}
    assert fired == {"HourlyLossExceeded": ["loss-limit-breach"], "DailyLossExceeded": ["loss-limit-breach"],
                     "RealisedSlippageCritical": ["slippage-spike"], "Unrelated": []}
    listed = json.loads(ws.cli("triggers", "list", "--output", "json").out)
    assert {r["runbook"] for r in listed} >= {"morning-checklist", "daily-start-check", "weekly-maintenance",
                                              "pre-rebalance-checks"}


def test_trading_calendar_gates_schedules(tmp_path: Path) -> None:
    """XNYS, November 2026: the 26th is Thanksgiving, the 27th an early close, the 30th the last session."""
    last = Rule(name="last", runbook="hello", source="schedule", cron="0 8 * * *", timezone="America/New_York",
                calendar=Calendar("XNYS", "last-session-of-month", "skip"))
    daily = Rule(name="daily", runbook="hello", source="schedule", cron="0 8 * * *", timezone="America/New_York",
                 calendar=Calendar("XNYS", "session", "skip"))
    inbox, intake = _intake(tmp_path, [last, daily])
    fired: dict[str, list[str]] = {"last": [], "daily": []}
    tick([last, daily], inbox, intake, now=_epoch("2026-11-25T12:00:00"))  # armed (13:00 UTC = 08:00 New York)
    for day in ("2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28", "2026-11-30"):
        for decision in tick([last, daily], inbox, intake, now=_epoch(f"{day}T13:00:05")):
            fired[decision["rule"]].append(day)
    assert fired == {"last": ["2026-11-30"], "daily": ["2026-11-25", "2026-11-30"]}
    reasons = [entry["what"] for entry in inbox.schedule_log("daily")]
    assert any("early close" in r for r in reasons) and any("not an XNYS session" in r for r in reasons)
