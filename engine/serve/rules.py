"""Trigger rules and serve settings from `runbook.yaml`: parsed, validated with located errors, matched.

A rule maps an event (an Alertmanager alert, a generic JSON event, or a cron tick) to one runbook,
with params rendered from the event in the sandbox and the guards that keep a storm from becoming
forty runs (group_by, cooldown, max_runs, breaker, kill switch).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.durations import parse_duration
from engine.errors import ExpressionError, InvalidRunbook, Problem
from engine.expressions import references, render, template_expressions
from engine.loader import Document, load_file
from engine.vocabulary import Mode

_KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_TOKEN_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_IDENTITY = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_LISTEN = re.compile(r"^(?P<host>[^:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")

RULE_KEYS = ("name", "on", "schedule", "runbook", "params", "group_by", "cooldown", "max_runs", "breaker",
             "mode", "safe_in_halt", "allow", "description")
SERVE_KEYS = ("tokens", "max_concurrent_runs", "listen")
SCHEDULE_KEYS = ("cron", "timezone", "missed", "calendar")
CALENDAR_KEYS = ("exchange", "day", "early_close")
DEFAULT_LISTEN = "127.0.0.1:8787"


@dataclass(frozen=True)
class Matcher:
    """One label matcher: equality, or a full-match regex when the configured value starts with `~`."""

    label: str
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, labels: dict[str, Any]) -> bool:
        """True when the alert's label satisfies this matcher (a missing label matches only "")."""
        actual = str(labels.get(self.label, ""))
        if self.regex is not None:
            return self.regex.fullmatch(actual) is not None
        return actual == self.value


@dataclass(frozen=True)
class Calendar:
    """Trading-calendar gating of a schedule (exchange-calendars, offline): which cron days may fire."""

    exchange: str  # e.g. XNYS
    day: str = "session"  # session | last-session-of-month
    early_close: str = "run"  # run | skip

    def allows(self, day: Any) -> tuple[bool, str]:
        """(may fire, why) for a calendar date (datetime.date)."""
        import warnings

        import exchange_calendars
        import pandas

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._allows(exchange_calendars.get_calendar(self.exchange), pandas.Timestamp(day), day)

    def _allows(self, calendar: Any, stamp: Any, day: Any) -> tuple[bool, str]:
        import pandas

        if not calendar.is_session(stamp):
            return False, f"{day} is not an {self.exchange} session"
        if self.day == "last-session-of-month":
            month_end = (stamp + pandas.offsets.MonthEnd(0)).normalize()
            last = calendar.sessions_in_range(stamp, month_end)[-1]
            if last != stamp:
                return False, f"{day} is not the last {self.exchange} session of the month ({last.date()} is)"
        if self.early_close == "skip" and stamp in calendar.early_closes:
            return False, f"{day} is an early close of {self.exchange}"
        return True, f"{day} is a {self.exchange} session"


@dataclass(frozen=True)
class Rule:
    """One validated trigger rule."""

    name: str
    runbook: str
    source: str  # alertmanager | generic | schedule
    matchers: tuple[Matcher, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    group_by: tuple[str, ...] | None = None
    cooldown_s: float = 0.0
    max_runs: tuple[int, float] | None = None
    breaker: tuple[int, float] | None = None
    mode: str = Mode.LIVE
    safe_in_halt: bool = False
    allow: tuple[str, ...] | None = None
    cron: str | None = None
    timezone: str = "UTC"
    missed: str = "skip"
    calendar: Calendar | None = None

    def matches(self, labels: dict[str, Any]) -> bool:
        """True when every matcher holds for these labels."""
        return all(m.matches(labels) for m in self.matchers)

    def allows(self, identity: str) -> bool:
        """True when this identity may fire the rule."""
        return self.allow is None or identity in self.allow

    def group_key(self, labels: dict[str, Any]) -> str:
        """The scope of cooldown: the group_by labels' values (all labels by default), as canonical JSON."""
        keys = sorted(labels) if self.group_by is None else list(self.group_by)
        picked = {k: labels.get(k) for k in keys}
        return json.dumps(picked, sort_keys=True, default=str, separators=(",", ":"))


@dataclass(frozen=True)
class ServeSettings:
    """The `serve:` block and the rules of `triggers:`."""

    tokens: dict[str, str] = field(default_factory=dict)  # identity -> sha256 hex
    max_concurrent_runs: int = 4
    listen: str = DEFAULT_LISTEN
    rules: tuple[Rule, ...] = ()
    where: dict[str, tuple[str, int | None, int | None]] = field(default_factory=dict)  # rule -> its params' place

    def rule(self, name: str) -> Rule | None:
        """The rule with that name, or None."""
        return next((r for r in self.rules if r.name == name), None)

    def identify(self, token: str) -> str | None:
        """The identity whose stored hash matches this bearer token, or None."""
        digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
        found = None
        for identity, stored in self.tokens.items():
            if hmac.compare_digest(digest, stored):
                found = identity
        return found


def token_hash(token: str) -> str:
    """The `sha256:HEX` form of a token, as `serve.tokens` stores it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


class _Located:
    """Collects problems located in the document a key path came from."""

    def __init__(self, doc: Document | None, path: str) -> None:
        self.doc = doc
        self.path = path
        self.problems: list[Problem] = []

    def where(self, key: tuple[Any, ...]) -> tuple[str, int | None, int | None]:
        line, col = self.doc.where(key) if self.doc is not None else (None, None)
        return self.path, line, col

    def add(self, key: tuple[Any, ...], message: str, rule: str | None = None) -> None:
        _, line, col = self.where(key)
        prefix = f"trigger '{rule}': " if rule else ""
        self.problems.append(Problem(self.path, line, col, None, prefix + message))


def load_settings(config: Config, library_names: set[str] | None = None) -> ServeSettings:
    """The serve settings and trigger rules; InvalidRunbook (exit 20) listing every located problem."""
    doc = load_file(config.source) if config.source is not None else None
    path = str(config.source) if config.source else "runbook.yaml"
    located = _Located(doc, path)
    serve_raw: Any = config.serve
    settings = _serve_block(serve_raw, located)
    triggers_raw: Any = config.triggers
    rules_key: tuple[Any, ...] = ("triggers",)
    rules_raw = triggers_raw
    located_rules = located
    if isinstance(triggers_raw, str):
        file = Path(triggers_raw)
        file = file if file.is_absolute() else config.base / file
        rules_doc = load_file(file)
        rules_raw = rules_doc.data
        rules_key = ()
        located_rules = _Located(rules_doc, str(file))
        if isinstance(rules_raw, dict) and "triggers" in rules_raw:
            rules_raw, rules_key = rules_raw["triggers"], ("triggers",)
    where: dict[str, tuple[str, int | None, int | None]] = {}
    rules = _rules(rules_raw, rules_key, located_rules, library_names, where)
    problems = located.problems + (located_rules.problems if located_rules is not located else [])
    if problems:
        raise InvalidRunbook(problems)
    return ServeSettings(tokens=settings["tokens"], max_concurrent_runs=settings["max_concurrent_runs"],
                         listen=settings["listen"], rules=tuple(rules), where=where)


def _serve_block(raw: Any, located: _Located) -> dict[str, Any]:
    out: dict[str, Any] = {"tokens": {}, "max_concurrent_runs": 4, "listen": DEFAULT_LISTEN}
    if raw is None:
        return out
    if not isinstance(raw, dict):
        located.add(("serve",), f"serve: expected a mapping with {', '.join(SERVE_KEYS)}, got {raw!r}")
        return out
    for key in sorted(set(raw) - set(SERVE_KEYS)):
        located.add(("serve", key), f"serve: unknown key '{key}' (expected one of: {', '.join(SERVE_KEYS)})")
    tokens = raw.get("tokens", {})
    if not isinstance(tokens, dict):
        located.add(("serve", "tokens"), "serve.tokens: expected a mapping IDENTITY: \"sha256:HEX\"")
    else:
        for identity, stored in tokens.items():
            if not _IDENTITY.match(str(identity)):
                located.add(("serve", "tokens", identity), f"serve.tokens: identity {identity!r} is not a plain name "
                            "(letters, digits, _ . @ -)")
            elif not isinstance(stored, str) or not _TOKEN_HASH.match(stored):
                located.add(("serve", "tokens", identity), f"serve.tokens.{identity}: expected \"sha256:\" and 64 "
                            "lowercase hex digits (the sha256 of the token, never the token itself)")
            else:
                out["tokens"][str(identity)] = stored.split(":", 1)[1]
    limit = raw.get("max_concurrent_runs", 4)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        located.add(("serve", "max_concurrent_runs"), f"serve.max_concurrent_runs: expected an integer >= 1, got {limit!r}")
    else:
        out["max_concurrent_runs"] = limit
    listen = raw.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen, str) or not _LISTEN.match(listen):
        located.add(("serve", "listen"), f"serve.listen: expected HOST:PORT, got {listen!r}")
    else:
        out["listen"] = listen
    return out


def _rules(raw: Any, base: tuple[Any, ...], located: _Located, library_names: set[str] | None,
           where: dict[str, tuple[str, int | None, int | None]]) -> list[Rule]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        located.add(base, "triggers: expected a list of rules (or the path of a YAML file holding one)")
        return []
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        key = base + (index,)
        rule = _rule(item, key, located, library_names)
        if rule is None:
            continue
        if rule.name in seen:
            located.add(key + ("name",), f"duplicate trigger name '{rule.name}'", None)
            continue
        seen.add(rule.name)
        rules.append(rule)
        where[rule.name] = located.where(key + ("params",))
    return rules


def _duration(value: Any, key: tuple[Any, ...], what: str, located: _Located, name: str) -> float | None:
    try:
        return parse_duration(value) if isinstance(value, str) else _bad_duration(value)
    except ValueError as exc:
        located.add(key, f"{what}: {exc}", name)
        return None


def _bad_duration(value: Any) -> float:
    raise ValueError(f"bad duration {value!r} (expected a number and a unit: 500ms, 30s, 5m, 1h)")


def _rule(item: Any, key: tuple[Any, ...], located: _Located, library_names: set[str] | None) -> Rule | None:
    if not isinstance(item, dict):
        located.add(key, f"expected a rule mapping with name, on|schedule, runbook; got {item!r}")
        return None
    name = item.get("name")
    label = name if isinstance(name, str) else f"#{key[-1]}"
    before = len(located.problems)
    if not isinstance(name, str) or not _KEBAB.match(name):
        located.add(key + ("name",), f"name: expected a kebab-case name, got {name!r}", None)
    for extra in sorted(set(item) - set(RULE_KEYS)):
        located.add(key + (extra,), f"unknown key '{extra}' (expected one of: {', '.join(RULE_KEYS)})", label)
    runbook = item.get("runbook")
    if not isinstance(runbook, str) or not runbook:
        located.add(key + ("runbook",), "runbook: expected the name of a runbook of the library", label)
    elif library_names is not None and runbook not in library_names:
        located.add(key + ("runbook",), f"runbook: no runbook named '{runbook}' in the library "
                    "(`runbook list` shows it)", label)
    fields: dict[str, Any] = {}
    has_on, has_schedule = "on" in item, "schedule" in item
    if has_on == has_schedule:
        located.add(key, "expected exactly one of `on:` (alertmanager or generic) and `schedule:`", label)
    elif has_on:
        fields.update(_on(item["on"], key + ("on",), located, label))
    else:
        fields.update(_schedule(item["schedule"], key + ("schedule",), located, label))
    params = item.get("params", {})
    if not isinstance(params, dict):
        located.add(key + ("params",), "params: expected a mapping NAME: VALUE-or-template", label)
    else:
        fields["params"] = params
        _check_templates(params, key + ("params",), located, label)
    group_by = item.get("group_by")
    if group_by is not None:
        if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
            located.add(key + ("group_by",), "group_by: expected a list of label names", label)
        else:
            fields["group_by"] = tuple(group_by)
    if "cooldown" in item:
        fields["cooldown_s"] = _duration(item["cooldown"], key + ("cooldown",), "cooldown", located, label) or 0.0
    for what in ("max_runs", "breaker"):
        if what in item:
            fields[what] = _pair(item[what], key + (what,), what, located, label)
    mode = item.get("mode", Mode.LIVE)
    if mode not in tuple(Mode):
        located.add(key + ("mode",), f"mode: expected live or dry-run, got {mode!r}", label)
    fields["mode"] = mode
    safe = item.get("safe_in_halt", False)
    if not isinstance(safe, bool):
        located.add(key + ("safe_in_halt",), f"safe_in_halt: expected true or false, got {safe!r}", label)
    fields["safe_in_halt"] = safe is True
    allow = item.get("allow")
    if allow is not None:
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            located.add(key + ("allow",), "allow: expected a list of token identities", label)
        else:
            fields["allow"] = tuple(allow)
    if len(located.problems) != before:
        return None
    return Rule(name=str(name), runbook=str(runbook), **fields)


def _pair(raw: Any, key: tuple[Any, ...], what: str, located: _Located, label: str) -> tuple[int, float] | None:
    first, second = ("count", "per") if what == "max_runs" else ("failures", "within")
    if not isinstance(raw, dict) or set(raw) != {first, second}:
        located.add(key, f"{what}: expected {{{first}: N, {second}: DURATION}}, got {raw!r}", label)
        return None
    count = raw[first]
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        located.add(key + (first,), f"{what}.{first}: expected an integer >= 1, got {count!r}", label)
        return None
    seconds = _duration(raw[second], key + (second,), f"{what}.{second}", located, label)
    return None if seconds is None else (count, seconds)


def _on(raw: Any, key: tuple[Any, ...], located: _Located, label: str) -> dict[str, Any]:
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("alertmanager", "generic"):
        located.add(key, "on: expected {alertmanager: {LABEL: VALUE, ...}} or {generic: {}}", label)
        return {}
    source, labels = next(iter(raw.items()))
    labels = labels or {}
    if not isinstance(labels, dict):
        located.add(key + (source,), f"on.{source}: expected a mapping of LABEL: VALUE", label)
        return {}
    if source == "generic" and labels:
        located.add(key + (source,), "on.generic: expected {} (a generic event is routed by the rule in its URL)", label)
        return {}
    matchers = []
    for name, value in labels.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            located.add(key + (source, name), f"on.alertmanager.{name}: expected a string (\"~REGEX\" for a regex)", label)
            continue
        text = str(value)
        if text.startswith("~"):
            try:
                matchers.append(Matcher(str(name), text, re.compile(text[1:])))
            except re.error as exc:
                located.add(key + (source, name), f"on.alertmanager.{name}: bad regex {text[1:]!r} ({exc})", label)
        else:
            matchers.append(Matcher(str(name), text))
    return {"source": source, "matchers": tuple(matchers)}


def _schedule(raw: Any, key: tuple[Any, ...], located: _Located, label: str) -> dict[str, Any]:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from croniter import croniter

    if not isinstance(raw, dict) or "cron" not in raw:
        located.add(key, "schedule: expected {cron: \"M H DOM MON DOW\", timezone: TZ, missed: skip|run-once}", label)
        return {}
    for extra in sorted(set(raw) - set(SCHEDULE_KEYS)):
        located.add(key + (extra,), f"schedule: unknown key '{extra}' (expected one of: {', '.join(SCHEDULE_KEYS)})", label)
    cron = raw["cron"]
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        located.add(key + ("cron",), f"schedule.cron: {cron!r} is not a valid cron expression "
                    "(5 fields, or 6 with seconds last)", label)
    zone = raw.get("timezone", "UTC")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        located.add(key + ("timezone",), f"schedule.timezone: unknown time zone {zone!r} (e.g. UTC, Europe/London)", label)
    missed = raw.get("missed", "skip")
    if missed not in ("skip", "run-once"):
        located.add(key + ("missed",), f"schedule.missed: expected skip or run-once, got {missed!r}", label)
    out: dict[str, Any] = {"source": "schedule", "cron": cron, "timezone": str(zone), "missed": missed}
    if "calendar" in raw:
        out["calendar"] = _calendar(raw["calendar"], key + ("calendar",), located, label)
    return out


def _calendar(raw: Any, key: tuple[Any, ...], located: _Located, label: str) -> Calendar | None:
    expected = "{exchange: XNYS, day: session|last-session-of-month, early_close: run|skip}"
    if isinstance(raw, str):
        raw = {"exchange": raw}
    if not isinstance(raw, dict) or "exchange" not in raw or set(raw) - set(CALENDAR_KEYS):
        located.add(key, f"schedule.calendar: expected {expected}, got {raw!r}", label)
        return None
    try:
        import exchange_calendars
    except ImportError:  # pragma: no cover - a declared dependency
        located.add(key, "schedule.calendar: the exchange-calendars package is not installed", label)
        return None
    exchange = raw["exchange"]
    if exchange not in exchange_calendars.get_calendar_names():
        located.add(key + ("exchange",), f"schedule.calendar.exchange: unknown exchange {exchange!r} "
                    "(an exchange-calendars code such as XNYS, XLON, XETR)", label)
        return None
    day = raw.get("day", "session")
    early = raw.get("early_close", "run")
    if day not in ("session", "last-session-of-month"):
        located.add(key + ("day",), f"schedule.calendar.day: expected session or last-session-of-month, got {day!r}", label)
        return None
    if early not in ("run", "skip"):
        located.add(key + ("early_close",), f"schedule.calendar.early_close: expected run or skip, got {early!r}", label)
        return None
    return Calendar(str(exchange), day, early)


def _check_templates(params: dict[str, Any], key: tuple[Any, ...], located: _Located, label: str) -> None:
    for name, value in params.items():
        for source in template_expressions(value):
            try:
                names, _ = references(source, is_expression=False)
            except ExpressionError as exc:
                located.add(key + (name,), f"params.{name}: {exc}", label)
                continue
            unknown = sorted(set(names) - {"alert", "event", "now", "rule"})
            if unknown:
                located.add(key + (name,), f"params.{name}: unknown name '{unknown[0]}' in a trigger template "
                            "(expected alert, event, rule or now())", label)


def render_params(rule: Rule, alert: Any, event: Any) -> dict[str, Any]:
    """The rule's params rendered in the sandbox with `alert`, `event` and `rule`; ExpressionError on failure."""
    scope = {"alert": alert, "event": event, "rule": {"name": rule.name, "runbook": rule.runbook}}
    rendered = render(rule.params, scope)
    assert isinstance(rendered, dict)
    return rendered
