"""The durable inbox of `runbook serve`: every accepted event, its run and what became of it.

SQLite in WAL mode with `synchronous=FULL`: a commit is on disk (fsynced) when `admit` returns, so an
event answered `started` survives a kill -9 of serve. Every guard decision is taken inside one
`BEGIN IMMEDIATE` transaction, so two deliveries of one alert can never both be admitted.

Event states: pending (accepted, no process yet) -> running (a child process drives it) ->
waiting (paused: approval or in doubt) | resume (to be resumed) | done; or dropped (resolved
before it started).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.serve.rules import Rule

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    source TEXT NOT NULL,
    dedupe_key TEXT UNIQUE,
    fingerprint TEXT,
    starts_at TEXT,
    group_key TEXT NOT NULL,
    accepted_at REAL NOT NULL,
    run_id TEXT NOT NULL UNIQUE,
    runbook TEXT NOT NULL,
    mode TEXT NOT NULL,
    identity TEXT NOT NULL,
    params TEXT NOT NULL,
    trigger TEXT NOT NULL,
    state TEXT NOT NULL,
    outcome TEXT,
    ended_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    note TEXT,
    driver TEXT
);
CREATE INDEX IF NOT EXISTS events_state ON events(state);
CREATE INDEX IF NOT EXISTS events_rule ON events(rule, accepted_at);
CREATE TABLE IF NOT EXISTS breaker_resets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    by TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_state (
    rule TEXT PRIMARY KEY,
    last_fire REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    at REAL NOT NULL,
    what TEXT NOT NULL,
    recorded_at REAL NOT NULL
);
"""

ACTIVE = ("pending", "running", "waiting", "resume")


@dataclass(frozen=True)
class Candidate:
    """An event a rule matched, before the guards decide."""

    rule: Rule
    source: str
    dedupe_key: str | None
    fingerprint: str | None
    starts_at: str | None
    group_key: str
    identity: str
    params: dict[str, Any]
    trigger: Any
    run_id: str


@dataclass(frozen=True)
class Row:
    """One recorded event and its run."""

    id: int
    rule: str
    run_id: str
    runbook: str
    mode: str
    identity: str
    params: dict[str, Any]
    trigger: Any
    state: str
    outcome: str | None
    attempts: int
    accepted_at: float
    fingerprint: str | None
    driver: str | None = None


def inbox_path(state_dir: Path) -> Path:
    """Where serve's inbox lives under the state directory."""
    return state_dir / "serve" / "inbox.sqlite"


class Inbox:
    """The SQLite inbox; one connection, used from one thread at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- guards ------------------------------------------------------------------

    def admit(self, cand: Candidate, kill_switch_engaged: bool, now: float | None = None) -> tuple[str, str | None]:
        """Decide on a candidate and, when it is `started`, record it durably before returning.

        Returns (decision, run_id): duplicate (with the first delivery's run id), breaker_open,
        kill_switch, cooldown, rate_limited, or started (with the new run's id).
        """
        return self.admit_many([(cand, kill_switch_engaged)], now)[0]

    def admit_many(self, batch: list[tuple[Candidate, bool]], now: float | None = None) -> list[tuple[str, str | None]]:
        """`admit` for several candidates in one transaction (one fsync: group commit), in order."""
        now = time.time() if now is None else now
        with self._tx() as db:
            return [self._decide(db, cand, halted, now) for cand, halted in batch]

    def _decide(self, db: sqlite3.Connection, cand: Candidate, kill_switch_engaged: bool,
                now: float) -> tuple[str, str | None]:
        rule = cand.rule
        if cand.dedupe_key is not None:
            row = db.execute("SELECT run_id FROM events WHERE dedupe_key = ?", (cand.dedupe_key,)).fetchone()
            if row is not None:
                return "duplicate", str(row["run_id"])
        if rule.breaker is not None and self._breaker_open(db, rule, now):
            return "breaker_open", None
        if kill_switch_engaged and not rule.safe_in_halt:
            return "kill_switch", None
        if rule.cooldown_s > 0:
            last = db.execute("SELECT MAX(accepted_at) FROM events WHERE rule = ? AND group_key = ? "
                              "AND state != 'dropped'", (rule.name, cand.group_key)).fetchone()[0]
            if last is not None and now - float(last) < rule.cooldown_s:
                return "cooldown", None
        if rule.max_runs is not None:
            count, per = rule.max_runs
            used = db.execute("SELECT COUNT(*) FROM events WHERE rule = ? AND accepted_at > ? "
                              "AND state != 'dropped'", (rule.name, now - per)).fetchone()[0]
            if used >= count:
                return "rate_limited", None
        db.execute(
            "INSERT INTO events (rule, source, dedupe_key, fingerprint, starts_at, group_key, accepted_at, run_id, "
            "runbook, mode, identity, params, trigger, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?, 'pending')",
            (rule.name, cand.source, cand.dedupe_key, cand.fingerprint, cand.starts_at, cand.group_key, now,
             cand.run_id, rule.runbook, rule.mode, cand.identity, json.dumps(cand.params, default=str),
             json.dumps(cand.trigger, default=str)))
        return "started", cand.run_id

    def _breaker_open(self, db: sqlite3.Connection, rule: Rule, now: float) -> bool:
        assert rule.breaker is not None
        failures, within = rule.breaker
        reset = db.execute("SELECT MAX(at) FROM breaker_resets WHERE rule = ?", (rule.name,)).fetchone()[0]
        since = max(now - within, float(reset) if reset is not None else 0.0)
        failed = db.execute("SELECT COUNT(*) FROM events WHERE rule = ? AND state = 'done' AND outcome != 'SUCCESS' "
                            "AND ended_at > ?", (rule.name, since)).fetchone()[0]
        return bool(failed >= failures)

    def breaker_open(self, rule: Rule, now: float | None = None) -> bool:
        """True while the rule's breaker is open (no breaker: never)."""
        if rule.breaker is None:
            return False
        return self._breaker_open(self.db, rule, time.time() if now is None else now)

    def reset_breaker(self, rule: str, by: str, reason: str) -> None:
        """Close a rule's breaker: failures before now no longer count (recorded with who and why)."""
        with self._tx() as db:
            db.execute("INSERT INTO breaker_resets (rule, by, reason, at) VALUES (?,?,?,?)",
                       (rule, by, reason, time.time()))

    def resets(self, rule: str) -> list[dict[str, Any]]:
        """Every recorded breaker reset of a rule, oldest first."""
        rows = self.db.execute("SELECT rule, by, reason, at FROM breaker_resets WHERE rule = ? ORDER BY id", (rule,))
        return [dict(r) for r in rows]

    def last_start(self, rule: str) -> float | None:
        """When the rule last admitted an event."""
        value = self.db.execute("SELECT MAX(accepted_at) FROM events WHERE rule = ? AND state != 'dropped'",
                                (rule,)).fetchone()[0]
        return None if value is None else float(value)

    def drop_pending(self, rule: str, fingerprint: str, starts_at: str | None) -> list[str]:
        """Drop the not-yet-started runs of a resolved alert; their run ids."""
        with self._tx() as db:
            rows = db.execute("SELECT run_id FROM events WHERE rule = ? AND fingerprint = ? AND state = 'pending' "
                              "AND (? IS NULL OR starts_at = ?)", (rule, fingerprint, starts_at, starts_at)).fetchall()
            ids = [str(r["run_id"]) for r in rows]
            for run_id in ids:
                db.execute("UPDATE events SET state = 'dropped', note = 'resolved before it started', ended_at = ? "
                           "WHERE run_id = ?", (time.time(), run_id))
        return ids

    # -- the supervisor's side -------------------------------------------------------

    def claim(self, limit: int) -> list[tuple[Row, str]]:
        """Up to `limit` events to act on, each marked running in the same transaction: (row, start|resume)."""
        if limit <= 0:
            return []
        with self._tx() as db:
            rows = db.execute("SELECT * FROM events WHERE state IN ('pending', 'resume') ORDER BY id LIMIT ?",
                              (limit,)).fetchall()
            out = []
            for r in rows:
                db.execute("UPDATE events SET state = 'running', attempts = attempts + 1, driver = NULL WHERE id = ?",
                           (r["id"],))
                out.append((_row(r), "start" if r["state"] == "pending" else "resume"))
        return out

    def set_state(self, run_id: str, state: str, outcome: str | None = None, note: str | None = None) -> None:
        """Move an event's run to a new state (done records its outcome and end time)."""
        ended = time.time() if state == "done" else None
        with self._tx() as db:
            db.execute("UPDATE events SET state = ?, outcome = COALESCE(?, outcome), ended_at = COALESCE(?, ended_at), "
                       "note = COALESCE(?, note) WHERE run_id = ?", (state, outcome, ended, note, run_id))

    def set_driver(self, run_id: str, driver: str) -> None:
        """Record which worker process (by its lock file) is given this event's run, before it is given."""
        with self._tx() as db:
            db.execute("UPDATE events SET driver = ? WHERE run_id = ?", (driver, run_id))

    def in_state(self, *states: str) -> list[Row]:
        """Every event in one of these states, oldest first."""
        marks = ",".join("?" for _ in states)
        rows = self.db.execute(f"SELECT * FROM events WHERE state IN ({marks}) ORDER BY id", states).fetchall()
        return [_row(r) for r in rows]

    def by_run(self, run_id: str) -> Row | None:
        """The event that started this run, or None when serve did not start it."""
        r = self.db.execute("SELECT * FROM events WHERE run_id = ?", (run_id,)).fetchone()
        return None if r is None else _row(r)

    def rows(self) -> list[Row]:
        """Every recorded event, oldest first."""
        return [_row(r) for r in self.db.execute("SELECT * FROM events ORDER BY id").fetchall()]

    # -- schedules ---------------------------------------------------------------------

    def last_fire(self, rule: str) -> float | None:
        """The last cron time a schedule rule was handled at (fired, skipped or guarded)."""
        value = self.db.execute("SELECT last_fire FROM schedule_state WHERE rule = ?", (rule,)).fetchone()
        return None if value is None else float(value[0])

    def set_last_fire(self, rule: str, at: float, what: str) -> None:
        """Record that a schedule rule was handled at cron time `at` (`what`: fired, missed-skip, ...)."""
        with self._tx() as db:
            db.execute("INSERT INTO schedule_state (rule, last_fire) VALUES (?, ?) "
                       "ON CONFLICT(rule) DO UPDATE SET last_fire = excluded.last_fire", (rule, at))
            db.execute("INSERT INTO schedule_log (rule, at, what, recorded_at) VALUES (?,?,?,?)",
                       (rule, at, what, time.time()))

    def schedule_log(self, rule: str) -> list[dict[str, Any]]:
        """What happened at each handled cron time of a rule."""
        rows = self.db.execute("SELECT rule, at, what, recorded_at FROM schedule_log WHERE rule = ? ORDER BY id", (rule,))
        return [dict(r) for r in rows]


def _row(r: sqlite3.Row) -> Row:
    return Row(id=int(r["id"]), rule=str(r["rule"]), run_id=str(r["run_id"]), runbook=str(r["runbook"]),
               mode=str(r["mode"]), identity=str(r["identity"]), params=json.loads(r["params"]),
               trigger=json.loads(r["trigger"]), state=str(r["state"]), outcome=r["outcome"],
               attempts=int(r["attempts"]), accepted_at=float(r["accepted_at"]), fingerprint=r["fingerprint"],
               driver=r["driver"])
