"""From a webhook body to decisions: match rules, render params, let the inbox's guards decide.

Nothing here starts a process: an admitted event is a durable row in the inbox, and the
supervisor starts its run. Every decision is answered (SPEC 7) and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ExpressionError
from engine.runs import new_run_id
from engine.serve.inbox import Candidate, Inbox
from engine.serve.rules import Rule, ServeSettings, render_params


class IntakeError(Exception):
    """The request cannot be taken; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GroupCommit:
    """Admits candidates from concurrent requests in one transaction per turn of the event loop.

    Each request still gets its 202 only after its own decision is committed (fsynced); under load
    many requests share one fsync instead of queueing behind one fsync each.
    """

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self._queue: list[tuple[list[tuple[Candidate, bool]], asyncio.Future[list[tuple[str, str | None]]]]] = []
        self._wake = asyncio.Event()

    async def admit(self, batch: list[tuple[Candidate, bool]]) -> list[tuple[str, str | None]]:
        """Decisions for a request's candidates, once committed."""
        future: asyncio.Future[list[tuple[str, str | None]]] = asyncio.get_running_loop().create_future()
        self._queue.append((batch, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        """Commit what is queued, turn after turn, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # requests already parsed in this turn join the batch
            queued, self._queue = self._queue, []
            if not queued:
                continue
            flat = [item for batch, _ in queued for item in batch]
            try:
                results = self.inbox.admit_many(flat)
            except Exception as exc:  # noqa: BLE001 - every waiting request answers 500, none is lost silently
                for _, future in queued:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for batch, future in queued:
                if not future.done():
                    future.set_result(results[start:start + len(batch)])
                start += len(batch)


@dataclass
class Intake:
    """Decides on events for one server: its rules, its inbox, how it sees the kill switch."""

    settings: ServeSettings
    inbox: Inbox
    kill_switch_engaged: Callable[[], bool]
    count: Callable[[str, str], None] = lambda rule, decision: None
    group: GroupCommit | None = field(default=None)

    async def _admit_all(self, items: list[Any]) -> list[dict[str, Any]]:
        """Answers in order: ready answers as they are, candidates admitted together (one commit)."""
        batch = [(item[0], item[1]) for item in items if isinstance(item, tuple)]
        results = await self.group.admit(batch) if self.group is not None else self.inbox.admit_many(batch)
        answers, position = [], 0
        for item in items:
            if isinstance(item, tuple):
                candidate = item[0]
                decision, run_id = results[position]
                position += 1
                answers.append(self._answer(candidate.rule.name, candidate.fingerprint, decision, run_id))
            else:
                answers.append(item)
        return answers

    async def alertmanager(self, payload: Any, identity: str) -> list[dict[str, Any]]:
        """Decisions for an Alertmanager webhook (version 4): one per alert and matching rule."""
        alerts = _alerts(payload)
        rules = [r for r in self.settings.rules if r.source == "alertmanager"]
        matched = [(alert, [r for r in rules if r.matches(alert["labels"])]) for alert in alerts]
        refused = sorted({r.name for _, found in matched for r in found if not r.allows(identity)})
        if refused:
            raise IntakeError(403, f"identity '{identity}' may not fire rule(s) {', '.join(refused)}")
        items: list[Any] = []
        halted = self.kill_switch_engaged()
        for alert, found in matched:
            fingerprint = _fingerprint(alert)
            if not found:
                items.append(self._answer("", fingerprint, "no_rule", None))
                continue
            for rule in found:
                items.append(self._alert(rule, alert, fingerprint, payload, identity, halted))
        return await self._admit_all(items)

    def _alert(self, rule: Rule, alert: dict[str, Any], fingerprint: str, payload: Any, identity: str,
               halted: bool) -> Any:
        starts_at = str(alert.get("startsAt") or "")
        if alert.get("status") == "resolved":
            dropped = self.inbox.drop_pending(rule.name, fingerprint, starts_at or None)
            return self._answer(rule.name, fingerprint, "resolved", dropped[0] if dropped else None)
        return self._candidate(rule, alert, payload, identity, halted, fingerprint=fingerprint, starts_at=starts_at,
                               dedupe_key=f"alertmanager|{rule.name}|{fingerprint}|{starts_at}",
                               group_key=rule.group_key(alert["labels"]), trigger=alert, source="alertmanager")

    async def generic(self, rule_name: str, payload: Any, identity: str, idempotency_key: str | None) -> list[dict[str, Any]]:
        """The decision for a generic JSON event posted to one rule."""
        rule = self.settings.rule(rule_name)
        if rule is None or rule.source != "generic":
            raise IntakeError(404, f"no generic rule '{rule_name}' (a rule with `on: {{generic: {{}}}}`)")
        if not rule.allows(identity):
            raise IntakeError(403, f"identity '{identity}' may not fire rule {rule.name}")
        if not isinstance(payload, dict):
            raise IntakeError(400, "expected a JSON object as the event")
        dedupe = f"generic|{rule.name}|{idempotency_key}" if idempotency_key else None
        return await self._admit_all([self._candidate(
            rule, payload, payload, identity, self.kill_switch_engaged(), fingerprint=None, starts_at=None,
            dedupe_key=dedupe, group_key=rule.group_key(payload), trigger=payload, source="generic")])

    def schedule(self, rule: Rule, at_iso: str) -> dict[str, Any]:
        """The decision for one cron time of a schedule rule (deduped on the rule and that time)."""
        trigger = {"schedule": rule.name, "at": at_iso}
        item = self._candidate(rule, None, trigger, "schedule", self.kill_switch_engaged(), fingerprint=None,
                               starts_at=at_iso, dedupe_key=f"schedule|{rule.name}|{at_iso}", group_key="{}",
                               trigger=trigger, source="schedule")
        if not isinstance(item, tuple):
            return dict(item)
        decision, run_id = self.inbox.admit(item[0], item[1])
        return self._answer(rule.name, None, decision, run_id)

    def _candidate(self, rule: Rule, alert: Any, event: Any, identity: str, halted: bool, *,
                   fingerprint: str | None, starts_at: str | None, dedupe_key: str | None, group_key: str,
                   trigger: Any, source: str) -> tuple[Candidate, bool] | dict[str, Any]:
        """(candidate, kill switch engaged) to admit, or the answer when its params do not render."""
        try:
            params = render_params(rule, alert, event)
        except ExpressionError as exc:
            answer = self._answer(rule.name, fingerprint, "invalid", None)
            answer["error"] = f"params of trigger '{rule.name}': {exc}"
            return answer
        candidate = Candidate(rule=rule, source=source, dedupe_key=dedupe_key, fingerprint=fingerprint,
                              starts_at=starts_at, group_key=group_key, identity=identity, params=params,
                              trigger=trigger, run_id=new_run_id(rule.runbook))
        return candidate, halted

    def _answer(self, rule: str, fingerprint: str | None, decision: str, run_id: str | None) -> dict[str, Any]:
        self.count(rule or "", decision)
        return {"rule": rule or None, "alert": fingerprint, "decision": decision, "run_id": run_id}


def _alerts(payload: Any) -> list[dict[str, Any]]:
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise IntakeError(400, "expected an Alertmanager webhook body (version 4) with an `alerts` list")
    if str(payload.get("version", "4")) != "4":
        raise IntakeError(400, f"unsupported Alertmanager webhook version {payload.get('version')!r} (expected 4)")
    out = []
    for n, alert in enumerate(payload["alerts"]):
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise IntakeError(400, f"alerts[{n}]: expected an object with `labels`")
        if alert.get("status") not in ("firing", "resolved"):
            raise IntakeError(400, f"alerts[{n}].status: expected firing or resolved, got {alert.get('status')!r}")
        out.append(alert)
    return out


def _fingerprint(alert: dict[str, Any]) -> str:
    given = alert.get("fingerprint")
    if isinstance(given, str) and given:
        return given
    canonical = json.dumps(alert["labels"], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
