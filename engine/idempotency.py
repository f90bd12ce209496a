"""Idempotency keys, held from claim until the run ends.

A key file `<state_dir>/idempotency/<sha256 of key>.json` names the run that
holds the key. While that run is unfinished (running, paused or interrupted)
no other run may take the key, `--force` or not; once it ended SUCCESS, a new
run with the key exits 11 unless `--force`. The key's text is stored redacted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ExpressionError, InvalidRunbook, Problem, UnknownRun
from engine.expressions import render
from engine.model import Runbook
from engine.runs import (
    RunStore,
    atomic_write_json,
    effective_status,
    process_alive,
    read_json_object,
)
from engine.vocabulary import Outcome, RunStatus

HELD = "HELD"


@dataclass
class Claim:
    """The outcome of claiming a key for a run."""

    path: Path
    run_id: str
    skip: bool
    message: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


def render_key(runbook: Runbook, params: dict[str, Any], run: dict[str, Any], env: dict[str, str], trigger: Any) -> str:
    """The runbook's idempotency key rendered for this run."""
    try:
        return str(render(runbook.idempotency_key, {"params": params, "run": run, "env": env, "trigger": trigger}))
    except ExpressionError as exc:
        raise InvalidRunbook([Problem(str(runbook.path), None, None, None, f"idempotency_key: {exc}")]) from None


def key_sha256(key: str) -> str:
    """The name a key is stored under."""
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()


def _guard(state_dir: Path) -> Any:
    from filelock import FileLock

    folder = state_dir / "idempotency"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".guard"))


def _path(state_dir: Path, digest: str) -> Path:
    return state_dir / "idempotency" / f"{digest}.json"


def _holder_state(store: RunStore, previous: dict[str, Any]) -> str:
    """`success`, `unfinished` (running, paused or interrupted; named) or `free` for the run a key file names."""
    if previous.get("outcome") == "SUCCESS":
        return "success"
    if previous.get("outcome") not in (None, HELD, "RUNNING", "PAUSED"):
        return "free"
    try:
        record = store.load(str(previous.get("run_id")))
    except UnknownRun:
        return "unfinished" if process_alive(int(previous.get("pid") or 0)) else "free"
    if record.status == RunStatus.FINISHED:
        return "success" if record.outcome == Outcome.SUCCESS else "free"
    return "unfinished"


def _describe(store: RunStore, run_id: str) -> str:
    try:
        return effective_status(store.load(run_id))
    except UnknownRun:
        return RunStatus.RUNNING


def claim(state_dir: Path, store: RunStore, key: str, run_id: str, force: bool, live: bool = True,
          redact: Callable[[str], str] = str) -> Claim:
    """Claim `key` for `run_id`, or a Claim with skip set (exit 11) naming the run that holds it or succeeded."""
    path = _path(state_dir, key_sha256(key))
    shown = redact(key)
    with _guard(state_dir):
        previous = read_json_object(path)
        holder = _holder_state(store, previous) if previous and previous.get("run_id") != run_id else "free"
        evidence = {"previous": previous, "forced": bool(force and holder == "success")}
        if holder == "unfinished" and previous is not None:
            other = str(previous.get("run_id"))
            return Claim(path, run_id, True, f"idempotency key '{shown}' is held by run {other} "
                         f"({_describe(store, other)}); it is released when that run ends (`runbook cancel {other}` "
                         "ends it)", evidence)
        if holder == "success" and not force and previous is not None:
            return Claim(path, run_id, True, f"idempotency key '{shown}' already ended SUCCESS in run "
                         f"{previous.get('run_id')}; use --force to run again", evidence)
        if live:
            atomic_write_json(path, {"key": shown, "run_id": run_id, "outcome": HELD, "pid": os.getpid()})
        return Claim(path, run_id, False, "", evidence)


def reclaim(state_dir: Path, store: RunStore, key: str, run_id: str, redact: Callable[[str], str] = str) -> Claim:
    """The claim a resumed run holds on its key; skip when another run took it meanwhile and holds or succeeded."""
    return claim(state_dir, store, key, run_id, force=False, live=True, redact=redact)


def held_by(state_dir: Path, run_id: str, digest: str | None) -> Claim | None:
    """The claim `run_id` holds on the key stored under `digest`, if it holds it."""
    if not digest:
        return None
    path = _path(state_dir, digest)
    current = read_json_object(path)
    if current is None or current.get("run_id") != run_id:
        return None
    return Claim(path, run_id, False)


def holder(claim_: Claim) -> str | None:
    """The run the key file names now."""
    current = read_json_object(claim_.path)
    return str(current.get("run_id")) if current else None


def settle(state_dir: Path, claim_: Claim, outcome: str) -> None:
    """Record how the claiming run ended (the key is then free, or marks a SUCCESS)."""
    if not claim_.path.exists():
        return
    with _guard(state_dir):
        current = read_json_object(claim_.path)
        if current is not None and current.get("run_id") == claim_.run_id:
            atomic_write_json(claim_.path, {**current, "outcome": outcome})
