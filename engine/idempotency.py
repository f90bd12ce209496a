"""Idempotency keys: a key that already ended SUCCESS (or is running now) is not run again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import InvalidRunbook, Problem
from engine.model import Runbook
from engine.runs import atomic_write_json, process_alive


@dataclass
class Claim:
    """The outcome of claiming a key for a run."""

    key: str
    path: Path
    run_id: str
    skip: bool
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


def render_key(runbook: Runbook, params: dict[str, Any], run: dict[str, Any], env: dict[str, str], trigger: Any) -> str:
    """The runbook's idempotency key rendered for this run."""
    from engine.expressions import ExpressionError, render

    try:
        return str(render(runbook.idempotency_key, {"params": params, "run": run, "env": env, "trigger": trigger}))
    except ExpressionError as exc:
        raise InvalidRunbook([Problem(str(runbook.path), None, None, None, f"idempotency_key: {exc}")]) from None


def _guard(state_dir: Path) -> Any:
    from filelock import FileLock

    folder = state_dir / "idempotency"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".guard"))


def _path(state_dir: Path, key: str) -> Path:
    return state_dir / "idempotency" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def claim(state_dir: Path, key: str, run_id: str, force: bool, live: bool = True) -> Claim:
    """Claim `key` for `run_id` unless a run with it succeeded or is running (then skip), or `force`."""
    path = _path(state_dir, key)
    with _guard(state_dir):
        previous = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        blocking = previous is not None and (
            previous.get("outcome") == "SUCCESS"
            or (previous.get("outcome") in (None, "RUNNING") and process_alive(int(previous.get("pid") or 0)))
        )
        evidence = {"previous": previous, "forced": bool(force and blocking)}
        if blocking and not force and previous is not None:
            what = "already ended SUCCESS" if previous.get("outcome") == "SUCCESS" else "is running now"
            return Claim(key, path, run_id, True, f"idempotency key '{key}' {what} in run {previous.get('run_id')}; "
                         "use --force to run again", evidence)
        if live:
            import os

            atomic_write_json(path, {"key": key, "run_id": run_id, "outcome": "RUNNING", "pid": os.getpid()})
        return Claim(key, path, run_id, False, "", evidence)


def reclaim(state_dir: Path, key: str, run_id: str) -> Claim:
    """The claim a resumed run holds on its own key (marked running again by this process)."""
    import os

    path = _path(state_dir, key)
    with _guard(state_dir):
        atomic_write_json(path, {"key": key, "run_id": run_id, "outcome": "RUNNING", "pid": os.getpid()})
    return Claim(key, path, run_id, False)


def settle(state_dir: Path, claim_: Claim, outcome: str) -> None:
    """Record how the claiming run ended."""
    if not claim_.path.exists():
        return
    with _guard(state_dir):
        current = json.loads(claim_.path.read_text(encoding="utf-8"))
        if current.get("run_id") == claim_.run_id:
            atomic_write_json(claim_.path, {**current, "outcome": outcome})
