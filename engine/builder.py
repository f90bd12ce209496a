"""Raw runbook mapping (already schema-checked) -> frozen Runbook."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.durations import parse_duration
from engine.expressions import is_template
from engine.model import (
    ActionStep,
    ApproveStep,
    Branch,
    CallStep,
    CheckStep,
    DecideStep,
    EndStep,
    LockSpec,
    Retry,
    Runbook,
    Step,
    WaitStep,
)
from engine.schema import KIND_KEYS
from engine.vocabulary import Outcome


def _expr(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _duration(value: Any) -> float | None:
    return parse_duration(value) if value is not None and not is_template(value) else None


def _templated(pairs: list[tuple[str, Any]]) -> tuple[tuple[str, str], ...]:
    return tuple((field, str(value)) for field, value in pairs if is_template(value))


def step_kind(raw: dict[str, Any]) -> list[str]:
    """The kind keys present in a raw step."""
    return [k for k in KIND_KEYS if k in raw]


def build_step(raw: dict[str, Any], line: int = 0, col: int = 0) -> Step:
    """One frozen Step from a raw mapping with exactly one kind key."""
    kind = step_kind(raw)[0]
    retry_raw = raw.get("retry") or {}
    common: dict[str, Any] = {
        "id": raw["id"],
        "line": line,
        "col": col,
        "title": raw.get("title"),
        "when": _expr(raw.get("when")),
        "expect": _expr(raw.get("expect")),
        "on_fail": raw.get("on_fail"),
        "goto": raw.get("goto"),
        "timeout_s": _duration(raw.get("timeout")),
        "retry": Retry(
            attempts=int(retry_raw.get("attempts", 1)),
            delay_s=_duration(retry_raw.get("delay")) or 0.0,
            backoff=float(retry_raw.get("backoff", 1.0)),
        ),
        "rollback": raw.get("rollback"),
        "for_each": _expr(raw.get("for_each")),
        "fail": raw.get("fail"),
        "evidence": tuple(raw.get("evidence") or ()),
        "safe_in_halt": bool(raw.get("safe_in_halt", False)),
        "message": raw.get("message"),
        "durations": _templated([("timeout_s", raw.get("timeout"))]),
    }
    if kind == "check":
        return CheckStep(plugin=raw["check"], with_=raw.get("with") or {}, mutates=bool(raw.get("mutates", False)), **common)
    if kind == "action":
        return ActionStep(plugin=raw["action"], with_=raw.get("with") or {}, **common)
    if kind == "decide":
        branches = tuple(
            Branch(condition=_expr(b["if"]), goto=b["goto"]) if "if" in b else Branch(condition=None, goto=b["else"])
            for b in raw["decide"]
        )
        return DecideStep(branches=branches, **common)
    if kind == "approve":
        spec = raw["approve"]
        return ApproveStep(
            prompt=spec["prompt"],
            approvers=tuple(spec.get("approvers") or ()),
            four_eyes=bool(spec.get("four_eyes", False)),
            binds=tuple(spec.get("binds") or ()),
            **common,
        )
    if kind == "wait":
        spec = raw["wait"]
        common["durations"] += _templated([("every_s", spec.get("every")), ("wait_timeout_s", spec.get("timeout"))])
        return WaitStep(
            plugin=spec["check"],
            plugin_with=spec.get("with") or {},
            until=_expr(spec["until"]) or "true",
            every_s=_duration(spec.get("every")) or 5.0,
            wait_timeout_s=_duration(spec.get("timeout")) or 300.0,
            **common,
        )
    if kind == "call":
        return CallStep(runbook=raw["call"], with_=raw.get("with") or {}, **common)
    return EndStep(outcome=Outcome(raw["end"]), **common)


def build_runbook(data: dict[str, Any], path: str, sha256: str,
                  positions: dict[tuple[str | int, ...], tuple[int, int]] | None = None) -> Runbook:
    """The frozen Runbook of a schema-valid raw mapping."""
    positions = positions or {}
    steps = tuple(
        build_step(raw, *positions.get(("steps", i), (0, 0))) for i, raw in enumerate(data["steps"])
    )
    lock_raw = data.get("lock")
    lock = None
    if lock_raw:
        lock = LockSpec(
            name=lock_raw["name"],
            ttl_s=_duration(lock_raw.get("ttl")) or 1800.0,
            wait_s=_duration(lock_raw.get("wait")) or 0.0,
            on_held=lock_raw.get("on_held", "fail"),
        )
    return Runbook(
        name=data["runbook"],
        title=data["title"],
        version=data["version"],
        path=Path(path),
        sha256=sha256,
        steps=steps,
        description=data.get("description") or "",
        source=data.get("source") or "",
        tags=tuple(data.get("tags") or ()),
        params=dict(data.get("params") or {}),
        env=tuple(data.get("env") or ()),
        lock=lock,
        idempotency_key=data.get("idempotency_key"),
        default_fail=Outcome(data["default_fail"]) if data.get("default_fail") else None,
    )
