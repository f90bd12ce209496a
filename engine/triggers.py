"""`runbook triggers list | check | test | reset`: the rules of serve, seen and handled from the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.console import make_console
from engine.errors import ExpressionError, InvalidRunbook, Problem, UsageError
from engine.library import Library
from engine.serve.inbox import Inbox, inbox_path
from engine.serve.rules import Rule, ServeSettings, load_settings, render_params
from engine.session import Workspace


def _settings(config: Config) -> ServeSettings:
    return load_settings(config, Library(config.runbook_paths).names())


def _inbox(config: Config) -> Any:
    path = inbox_path(config.state_dir)
    return Inbox(path) if path.exists() else None


def _describe(rule: Rule) -> str:
    if rule.source == "schedule":
        gate = ""
        if rule.calendar is not None:
            gate = f", {rule.calendar.exchange} {rule.calendar.day}" + (
                ", not on early closes" if rule.calendar.early_close == "skip" else "")
        return f"schedule {rule.cron} ({rule.timezone}, missed: {rule.missed}{gate})"
    if rule.source == "generic":
        return "generic: POST /hooks/generic/" + rule.name
    return "alertmanager " + ", ".join(f"{m.label}={m.value}" for m in rule.matchers)


def rule_states(config: Config) -> list[dict[str, Any]]:
    """Every rule with its state: last start, cooldown remaining (for its most recent group), breaker."""
    settings = _settings(config)
    inbox = _inbox(config)
    now = time.time()
    out = []
    try:
        for rule in settings.rules:
            last = inbox.last_start(rule.name) if inbox else None
            cooling = max(0.0, rule.cooldown_s - (now - last)) if last is not None and rule.cooldown_s else 0.0
            out.append({
                "name": rule.name, "runbook": rule.runbook, "on": _describe(rule), "mode": rule.mode,
                "safe_in_halt": rule.safe_in_halt, "last_start": last, "cooldown_remaining_s": round(cooling, 1),
                "breaker": ("open" if inbox and inbox.breaker_open(rule) else "closed") if rule.breaker else None,
                "resets": inbox.resets(rule.name) if inbox else [],
            })
    finally:
        if inbox:
            inbox.close()
    return out


def list_rules(config: Config, output: str) -> int:
    """Print the rules and their state; exit 0."""
    rows = rule_states(config)
    if output == "json":
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no trigger rules (add `triggers:` to runbook.yaml)")
    for row in rows:
        state = []
        if row["cooldown_remaining_s"]:
            state.append(f"cooldown {row['cooldown_remaining_s']}s")
        if row["breaker"]:
            state.append(f"breaker {row['breaker']}")
        print(f"{row['name']:<28} -> {row['runbook']:<28} {row['mode']:<8} {row['on']}"
              f"{'  [' + ', '.join(state) + ']' if state else ''}")
    return 0


def check(config: Config) -> int:
    """Validate the serve settings and rules (runbooks exist, params known); exit 0 or raise InvalidRunbook."""
    settings = _settings(config)
    problems = _param_problems(config, settings)
    if problems:
        raise InvalidRunbook(problems)
    print(f"{len(settings.rules)} trigger rule{'s' if len(settings.rules) != 1 else ''} valid, "
          f"{len(settings.tokens)} token{'s' if len(settings.tokens) != 1 else ''}")
    return 0


def _param_problems(config: Config, settings: ServeSettings) -> list[Problem]:
    ws = Workspace(config, make_console("json", False))
    problems: list[Problem] = []
    for rule in settings.rules:
        path, line, col = settings.where.get(rule.name, (str(config.source or "runbook.yaml"), None, None))
        try:
            runbook = ws.load(rule.runbook)
        except InvalidRunbook as exc:
            problems.extend(exc.problems)
            continue
        for name in rule.params:
            if name not in runbook.params:
                problems.append(Problem(path, line, col, None, f"trigger '{rule.name}': param '{name}' is not a "
                                        f"param of {rule.runbook} (expected one of: "
                                        f"{', '.join(sorted(runbook.params)) or 'none declared'})"))
    return problems


def test(config: Config, event_path: str, rule_name: str | None) -> int:
    """Print which rules would fire for an event file and with which params; start nothing. Exit 0."""
    settings = _settings(config)
    try:
        event = json.loads(Path(event_path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{event_path}: cannot read a JSON event ({exc})") from None
    inbox = _inbox(config)
    halted = config.kill_switch.exists()
    results: list[dict[str, Any]] = []

    def would(rule: Rule, alert: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"rule": rule.name, "runbook": rule.runbook, "mode": rule.mode}
        try:
            row["params"] = render_params(rule, alert, event)
        except ExpressionError as exc:
            row["error"] = str(exc)
        if inbox and rule.breaker and inbox.breaker_open(rule):
            row["now"] = "breaker_open"
        elif halted and not rule.safe_in_halt:
            row["now"] = "kill_switch"
        return row

    try:
        if rule_name:
            rule = settings.rule(rule_name)
            if rule is None or rule.source != "generic":
                raise UsageError(f"--rule {rule_name}: no generic rule of that name")
            results.append({"alert": None, "fires": [would(rule, event)]})
        elif isinstance(event, dict) and isinstance(event.get("alerts"), list):
            for alert in event["alerts"]:
                labels = alert.get("labels") if isinstance(alert, dict) else None
                if not isinstance(labels, dict):
                    continue
                matched = [r for r in settings.rules if r.source == "alertmanager" and r.matches(labels)]
                status = alert.get("status")
                results.append({"alert": alert.get("fingerprint"), "status": status,
                                "fires": [would(r, alert) for r in matched] if status != "resolved" else [],
                                "resolves": [r.name for r in matched] if status == "resolved" else [],
                                "decision": None if matched else "no_rule"})
        else:  # a generic event: each generic rule it could be posted to (POST /hooks/generic/RULE)
            generic = [r for r in settings.rules if r.source == "generic"]
            if not generic:
                raise UsageError(f"{event_path}: not an Alertmanager webhook body, and no rule has `on: {{generic: {{}}}}`")
            results.append({"alert": None, "fires": [would(r, event) for r in generic]})
    finally:
        if inbox:
            inbox.close()
    print(json.dumps({"results": results}, indent=2, default=str))
    return 0


def reset(config: Config, rule_name: str, by: str, reason: str) -> int:
    """Close a rule's breaker; the reset (who, why, when) is recorded in serve's inbox. Exit 0."""
    settings = _settings(config)
    rule = settings.rule(rule_name)
    if rule is None:
        raise UsageError(f"no trigger rule '{rule_name}' (`runbook triggers list` shows them)")
    if not reason.strip() or not by.strip():
        raise UsageError("--by and --reason must not be empty (they are recorded)")
    inbox = Inbox(inbox_path(config.state_dir))
    try:
        was_open = inbox.breaker_open(rule)
        inbox.reset_breaker(rule.name, by, reason)
    finally:
        inbox.close()
    print(f"breaker of {rule.name} {'closed' if was_open else 'was not open; reset recorded'} by {by}: {reason}")
    return 0
