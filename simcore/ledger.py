"""Seed 000's governance files: meta state + sha256 ledger, the meta-cycle lock,
incident reports and the structured log logs/meta_cycle.jsonl."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fsutil import (
    append_line,
    atomic_write_json,
    canonical_json,
    file_lock,
    iso_utc,
    parse_iso_utc,
    pid_alive,
    read_json,
    sha256_json,
    wall_ms,
)
from .paths import Layout

if TYPE_CHECKING:
    from filelock import FileLock

GENESIS_PREV = "0" * 64
STRATEGY_BOUNDS = {"exposure_multiplier": (0.0, 3.0), "lookback": (2, 60)}


class LedgerCorrupt(ValueError):
    """The ledger chain or the current state does not match its recorded sha256."""


def _flock(path: Path) -> FileLock:
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(str(path) + ".flock", timeout=30)


# ------------------------------------------------------------------ ledger


def read_ledger(lay: Layout) -> list[dict[str, Any]]:
    """All ledger entries (raises LedgerCorrupt on an unparseable line)."""
    if not lay.ledger.exists():
        return []
    out = []
    for n, line in enumerate(lay.ledger.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise LedgerCorrupt(f"ledger line {n} is not JSON: {exc}") from exc
    return out


def append_snapshot(lay: Layout, state: dict[str, Any], ts_ms: int, **extra: Any) -> dict[str, Any]:
    """Write state as the current meta state and append `{ts, sha256, prev, state}` to the ledger."""
    with _flock(lay.ledger):
        entries = read_ledger(lay)
        entry = {
            "ts": iso_utc(ts_ms),
            "ts_ms": ts_ms,
            "sha256": sha256_json(state),
            "prev": entries[-1]["sha256"] if entries else GENESIS_PREV,
            "state": state,
            **extra,
        }
        atomic_write_json(lay.current_state, state)
        append_line(lay.ledger, canonical_json(entry))
        return entry


def current_state(lay: Layout) -> dict[str, Any]:
    """The current meta state (current.json)."""
    return dict(read_json(lay.current_state))


def verify(lay: Layout) -> list[str]:
    """Integrity problems: chain links, per-entry sha256, and current.json vs the ledger head."""
    try:
        entries = read_ledger(lay)
    except LedgerCorrupt as exc:
        return [str(exc)]
    if not entries:
        return ["ledger is empty"]
    problems = []
    prev = GENESIS_PREV
    for i, e in enumerate(entries):
        if e.get("prev") != prev:
            problems.append(f"ledger entry {i}: prev {e.get('prev')} != {prev}")
        if sha256_json(e.get("state")) != e.get("sha256"):
            problems.append(f"ledger entry {i}: sha256 does not match its state")
        prev = str(e.get("sha256"))
    try:
        cur = sha256_json(current_state(lay))
    except (OSError, ValueError) as exc:
        return [*problems, f"current state unreadable: {exc}"]
    if cur != entries[-1]["sha256"]:
        problems.append(f"head sha mismatch: current.json {cur} != ledger head {entries[-1]['sha256']}")
    return problems


def anomalies(state: dict[str, Any]) -> list[str]:
    """Guardrail: strategy parameters outside their sane bounds."""
    found = []
    for key, (lo, hi) in STRATEGY_BOUNDS.items():
        v = state.get("strategy", {}).get(key)
        if not isinstance(v, int | float) or not lo <= v <= hi:
            found.append(f"strategy.{key}={v} outside [{lo}, {hi}]")
    return found


def rollback_target(
    lay: Layout, steps: int | None, to_hash: str | None
) -> tuple[dict[str, Any], int]:
    """The entry a rollback restores (steps back in the effective history, or by sha256).

    Raises LookupError when the hash is unknown or there are not that many entries.
    """
    entries = read_ledger(lay)
    if to_hash is not None:
        for i in range(len(entries) - 1, -1, -1):
            if entries[i]["sha256"].startswith(to_hash.lower()) and len(to_hash) >= 8:
                return entries[i], i
        raise LookupError(f"unknown hash {to_hash}")
    n = int(steps or 0)
    history = effective_history(entries)
    if n < 1 or n > len(history) - 1:
        raise LookupError(f"cannot roll back {n} step(s): history has {len(history)} snapshots")
    return entries[history[-1 - n]], history[-1 - n]


def effective_history(entries: list[dict[str, Any]]) -> list[int]:
    """Ledger indices of the snapshots still in effect: a rollback record cuts the history
    back to the entry it restored, so `--steps 1` twice goes back two snapshots, not back
    and forth."""
    stack: list[int] = []
    for i, e in enumerate(entries):
        ri = e.get("restored_index")
        if e.get("op") == "rollback" and isinstance(ri, int) and ri in stack:
            stack = stack[: stack.index(ri) + 1]
        else:
            stack.append(i)
    return stack


# ------------------------------------------------------------------ lock


def read_lock(lay: Layout) -> dict[str, Any] | None:
    """The lock payload, or None when there is no lock file."""
    try:
        return dict(read_json(lay.lock_file))
    except FileNotFoundError:
        return None
    except ValueError:
        return {"active": 1, "pid": -1, "host": "?", "start_ts_utc": iso_utc(0), "corrupt": True}


def lock_status(payload: dict[str, Any] | None, ttl_sec: int, now_ms: int | None = None) -> dict[str, Any]:
    """Whether the lock is held, the owner alive, and the lock stale (dead owner or past ttl)."""
    if not payload or not int(payload.get("active", 0)):
        return {"held": False, "owner_alive": False, "stale": False, "age_sec": None}
    now = wall_ms() if now_ms is None else now_ms
    try:
        age = (now - parse_iso_utc(str(payload.get("start_ts_utc")))) // 1000
    except ValueError:
        age = 10**9
    same_host = payload.get("host") == socket.gethostname()
    alive = pid_alive(int(payload.get("pid", -1))) if same_host else True
    return {"held": True, "owner_alive": alive, "stale": (not alive) or age > ttl_sec, "age_sec": age}


def write_lock(lay: Layout, payload: dict[str, Any]) -> None:
    """Atomically write a lock payload."""
    atomic_write_json(lay.lock_file, payload)


def lock_guard(lay: Layout) -> FileLock:
    """The OS lock that makes check-and-take of the meta-cycle lock atomic."""
    return _flock(lay.lock_file)


def lock_payload(reason: str, cmd: str, pid: int | None = None, start_ms: int | None = None) -> dict[str, Any]:
    """The seed-000 lock payload {active, pid, host, start_ts_utc, reason, cmd}."""
    return {
        "active": 1,
        "pid": os.getpid() if pid is None else pid,
        "host": socket.gethostname(),
        "start_ts_utc": iso_utc(wall_ms() if start_ms is None else start_ms),
        "reason": reason,
        "cmd": cmd,
    }


# ------------------------------------------------------------------ logs and incidents


def log_event(lay: Layout, module: str, event: str, **fields: Any) -> None:
    """Append one structured record to logs/meta_cycle.jsonl."""
    rec = {"ts_utc": iso_utc(wall_ms()), "module": module, "event": event, **fields}
    with _flock(lay.meta_log):
        append_line(lay.meta_log, json.dumps(rec, sort_keys=True))


def write_incident(lay: Layout, sim_ms: int, kind: str, details: dict[str, Any]) -> Path:
    """Write reports/incidents/<ts>.json and return its path."""
    name = iso_utc(sim_ms).replace(":", "").replace("-", "")
    path = lay.incidents / f"{name}_{kind}.json"
    n = 1
    while path.exists():
        n += 1
        path = lay.incidents / f"{name}_{kind}_{n}.json"
    atomic_write_json(path, {"ts": iso_utc(sim_ms), "kind": kind, **details})
    return path
