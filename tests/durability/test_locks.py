"""Run locks (SPEC 4 Locks): mutual exclusion, stale locks, waiting, and release however a run ends."""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest

from .helpers import (
    alive,
    effect_lines,
    events,
    finish,
    kill_pidfile,
    latest_run_id,
    lock_payload,
    of_type,
    only_run_id,
    run_records,
    status_json,
    wait_for,
)

if TYPE_CHECKING:
    from tests.conftest import Workspace

ECHO = "echo \"$RUNBOOK_IDEMPOTENCY_TOKEN\" >> effects.txt"


def locked_runbook(ws: Workspace, name: str, command: str, lock: str) -> None:
    """One mutating shell step under `lock:`."""
    ws.runbook(name, f"""
        runbook: {name}
        title: Locked {name}
        version: 1
        lock: {lock}
        steps:
          - id: work
            action: shell
            with: {{argv: [sh, -c, '{command}']}}
        """)


def lock_events(ws: Workspace, run_id: str) -> list[dict]:
    return [e["data"] for e in of_type(events(ws, run_id), "lock")]


# -- mutual exclusion ---------------------------------------------------------------------


def test_two_processes_racing_100_times_are_never_both_inside(ws: Workspace) -> None:
    locked_runbook(ws, "race", "echo enter $$ >> shared.txt; sleep 0.12; echo exit $$ >> shared.txt",
                   "{name: race, wait: 0s}")
    # Two racers, each starting 50 runs back to back: at any moment two processes want the lock.
    def racer(_: int) -> list[int]:
        out = []
        for _run in range(50):
            result = ws.cli("run", "race", "--no-input")
            assert result.code in (0, 40), result.text  # the loser exits LOCK_TIMEOUT, nothing else
            out.append(result.code)
        return out

    with ThreadPoolExecutor(max_workers=2) as pool:
        codes = [code for chunk in pool.map(racer, range(2)) for code in chunk]
    assert len(codes) == 100
    lines = (ws.root / "shared.txt").read_text().splitlines()
    inside = None
    for number, line in enumerate(lines, start=1):
        word, pid = line.split()
        if word == "enter":
            assert inside is None, f"line {number}: {pid} entered while {inside} was inside"
            inside = pid
        else:
            assert inside == pid, f"line {number}: {pid} exited but {inside} was inside"
            inside = None
    assert inside is None
    assert len(lines) == 2 * codes.count(0)  # every winner went in and out once; no loser ran
    assert codes.count(40) >= 10, codes  # the two really raced (most rounds have a loser)
    assert lock_payload(ws, "race")["active"] == 0
    losers = [r for r in run_records(ws) if r["exit_code"] == 40]
    assert len(losers) == codes.count(40)
    assert all(r["outcome"] == "LOCK_TIMEOUT" for r in losers)


# -- stale locks ------------------------------------------------------------------------------


def test_stale_lock_of_a_dead_pid_is_broken_only_with_the_flag_and_both_are_recorded(ws: Workspace) -> None:
    hang = f"if [ -e armed ]; then rm armed; echo $$ > child.pid; exec sleep 30; fi; {ECHO}"
    locked_runbook(ws, "stale", hang, "{name: meta, ttl: 1s, wait: 0s}")
    (ws.root / "armed").touch()
    proc = ws.popen("run", "stale", "--no-input")
    wait_for(lambda: (ws.root / "child.pid").exists() and (ws.root / "child.pid").read_text().strip())
    dead = proc.pid
    proc.kill()
    proc.wait(timeout=10)
    kill_pidfile(ws.root / "child.pid")
    crashed = only_run_id(ws)
    payload = lock_payload(ws, "meta")
    assert payload["active"] == 1 and payload["pid"] == dead and payload["run_id"] == crashed
    assert payload["host"] == socket.gethostname()
    assert set(payload) >= {"active", "pid", "host", "start_ts_utc", "reason", "cmd", "run_id"}
    time.sleep(2.1)  # older than ttl (1s; start_ts_utc has whole seconds)

    refused = ws.cli("run", "stale", "--no-input")
    assert refused.code == 40, refused.text
    assert "stale" in refused.text and "--force-lock-break" in refused.text
    refused_id = latest_run_id(ws)
    assert refused_id != crashed
    record = lock_events(ws, refused_id)
    assert record[-1]["action"] == "not acquired" and record[-1]["holder"]["pid"] == dead
    assert record[-1]["force_lock_break"] is False
    assert lock_payload(ws, "meta") == payload  # untouched
    assert effect_lines(ws) == []
    assert ws.cli("evidence", "verify", refused_id).code == 0

    no_reason = ws.cli("run", "stale", "--no-input", "--force-lock-break")
    assert no_reason.code == 2, no_reason.text
    assert lock_payload(ws, "meta") == payload

    broken = ws.cli("run", "stale", "--no-input", "--force-lock-break", "--reason", "owner pid gone after crash")
    assert broken.code == 0, broken.text
    broke_id = latest_run_id(ws)
    record = lock_events(ws, broke_id)
    breaks = [r for r in record if r["action"] == "broke stale lock"]
    assert len(breaks) == 1
    assert breaks[0]["previous"]["pid"] == dead and breaks[0]["previous"]["run_id"] == crashed
    assert breaks[0]["reason"] == "owner pid gone after crash"
    assert [r["action"] for r in record][-2:] == ["acquired", "released"]
    assert [line.split(":")[0] for line in effect_lines(ws)] == [broke_id]
    assert lock_payload(ws, "meta")["active"] == 0
    assert ws.cli("evidence", "verify", broke_id).code == 0


def test_resumed_run_takes_over_the_lock_its_killed_process_left(ws: Workspace) -> None:
    hang = f"if [ -e armed ]; then rm armed; echo $$ > child.pid; exec sleep 30; fi; {ECHO}"
    locked_runbook(ws, "own", hang, "{name: own, wait: 0s}")
    (ws.root / "armed").touch()
    proc = ws.popen("run", "own", "--no-input")
    wait_for(lambda: (ws.root / "child.pid").exists() and (ws.root / "child.pid").read_text().strip())
    proc.kill()
    proc.wait(timeout=10)
    kill_pidfile(ws.root / "child.pid")
    run_id = only_run_id(ws)
    assert lock_payload(ws, "own")["active"] == 1
    assert ws.cli("resume", run_id, "--no-input").code == 12  # in doubt, lock released again
    assert lock_payload(ws, "own")["active"] == 0
    done = ws.cli("resume", run_id, "--no-input", "--in-doubt", "rerun")
    assert done.code == 0, done.text
    assert lock_payload(ws, "own")["active"] == 0
    assert ws.cli("evidence", "verify", run_id).code == 0


# -- waiting -----------------------------------------------------------------------------------


def hold(ws: Workspace, name: str) -> Any:
    """Start a run of `holder` that holds lock `name` from when it is inside until the test calls `release`."""
    locked_runbook(ws, "holder", "touch inside; while [ ! -e release ]; do sleep 0.01; done",
                   f"{{name: {name}, wait: 0s}}")
    proc = ws.popen("run", "holder", "--no-input")
    wait_for(lambda: (ws.root / "inside").exists(), what="the holder to be inside")
    return proc


def release(ws: Workspace, holder: Any) -> tuple[int, str]:
    """Let the holder finish; its exit code and output."""
    (ws.root / "release").touch()
    return finish(holder)


def test_lock_wait_polls_then_exits_40(ws: Workspace) -> None:
    holder = hold(ws, "shared")
    locked_runbook(ws, "waiter", ECHO, "{name: shared, wait: 1s}")
    begin = time.monotonic()
    waited = ws.cli("run", "waiter", "--no-input")
    elapsed = time.monotonic() - begin
    assert waited.code == 40, waited.text
    assert elapsed >= 1.0, elapsed  # polled for the whole `wait` before giving up
    assert "held" in waited.text
    assert effect_lines(ws) == []
    waiter_id = [r["run_id"] for r in run_records(ws) if r["runbook"] == "waiter"][0]
    assert lock_events(ws, waiter_id)[-1]["action"] == "not acquired"
    assert release(ws, holder)[0] == 0


def test_lock_wait_acquires_when_the_holder_finishes_in_time(ws: Workspace) -> None:
    holder = hold(ws, "shared")
    locked_runbook(ws, "waiter", ECHO, "{name: shared, wait: 60s}")
    waiter = ws.popen("run", "waiter", "--no-input")
    wait_for(lambda: any(r["runbook"] == "waiter" for r in run_records(ws)), what="the waiter to start waiting")
    assert release(ws, holder)[0] == 0
    code, text = finish(waiter)
    assert code == 0, text
    assert len(effect_lines(ws)) == 1
    assert lock_payload(ws, "shared")["active"] == 0


def test_on_held_skip_exits_11(ws: Workspace) -> None:
    holder = hold(ws, "shared")
    locked_runbook(ws, "skipper", ECHO, "{name: shared, wait: 0s, on_held: skip}")
    skipped = ws.cli("run", "skipper", "--no-input")
    assert skipped.code == 11, skipped.text
    assert effect_lines(ws) == []
    assert release(ws, holder)[0] == 0


# -- release however the run ends ------------------------------------------------------------------


def test_lock_inactive_after_success_and_failure(ws: Workspace) -> None:
    locked_runbook(ws, "ok", ECHO, "{name: L, wait: 0s}")
    assert ws.cli("run", "ok", "--no-input").code == 0
    assert lock_payload(ws, "L")["active"] == 0
    locked_runbook(ws, "bad", "exit 3", "{name: L, wait: 0s}")
    failed = ws.cli("run", "bad", "--no-input")
    assert failed.code == 50, failed.text
    assert lock_payload(ws, "L")["active"] == 0
    assert ws.cli("run", "ok", "--no-input").code == 0  # and it can be taken again


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_step_releases_the_lock_and_the_run_is_resumable(ws: Workspace, signum: int) -> None:
    steps = f"if [ -e armed ]; then rm armed; echo $$ > child.pid; exec sleep 30; fi; {ECHO}"
    locked_runbook(ws, "sig", steps, "{name: L, wait: 0s}")
    (ws.root / "armed").touch()
    proc = ws.popen("run", "sig", "--no-input")
    wait_for(lambda: (ws.root / "child.pid").exists() and (ws.root / "child.pid").read_text().strip())
    assert lock_payload(ws, "L")["active"] == 1
    child = int((ws.root / "child.pid").read_text())
    os.kill(proc.pid, signum)
    code, text = finish(proc, timeout=20)
    assert code == 12, text  # PAUSED: interrupted, resumable
    assert lock_payload(ws, "L")["active"] == 0
    run_id = only_run_id(ws)
    status = status_json(ws, run_id)
    assert status["status"] == "paused" and status["waiting_for"]["type"] == "interrupted"
    assert lock_events(ws, run_id)[-1]["action"].startswith("released")
    wait_for(lambda: not alive(child), what="the step child to be gone")  # its process group was stopped too
    assert ws.cli("evidence", "verify", run_id).code == 0
    # the interrupted step never recorded its end: it is in doubt
    paused = ws.cli("resume", run_id, "--no-input")
    assert paused.code == 12 and status_json(ws, run_id)["waiting_for"]["step"] == "work", paused.text
    done = ws.cli("resume", run_id, "--no-input", "--in-doubt", "rerun")
    assert done.code == 0, done.text
    assert len(effect_lines(ws)) == 1
    assert lock_payload(ws, "L")["active"] == 0
    assert ws.cli("evidence", "verify", run_id).code == 0


