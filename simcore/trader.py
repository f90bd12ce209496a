"""The trading process of the simulated core: a real OS process that seed 001's DR drill stops
and restarts (`simcore trader start | stop | status | run`).

Each cycle the process runs the core's monitors once (reconciliation and SLO events in the
paper session, simcore.worlds) and advances its in-memory runtime state; it persists that
state to `run/runtime_state.json` every `checkpoint_every` cycles and on a graceful stop
(SIGTERM). A restart restores the persisted state. The RPO of a stop is the time between the
last persisted state and the stop: runtime state changed in that window is lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .fsutil import atomic_write_json, pid_alive, read_json, wall_ms

Out = tuple[int, list[str]]


def _files(root: Path) -> dict[str, Path]:
    d = root / "run"
    return {"dir": d, "pid": d / "trader.pid", "status": d / "trader.json",
            "state": d / "runtime_state.json", "log": d / "trader.log"}


def _pid(root: Path) -> int | None:
    path = _files(root)["pid"]
    try:
        pid = int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _emit(code: int, obj: dict[str, Any]) -> Out:
    return code, [json.dumps(obj, indent=2, sort_keys=True)]


def _last_reconciliation(root: Path) -> dict[str, Any] | None:
    from .worlds import SESSION

    path = root / SESSION / "order_reconciliation_events.jsonl"
    if not path.exists():
        return None
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    return dict(json.loads(lines[-1])) if lines else None


def run_loop(root: Path, interval_s: float, checkpoint_every: int) -> int:
    """The process body: restore, then cycle until SIGTERM; flush the runtime state on the way out."""
    from .core import Core

    f = _files(root)
    core = Core(root)
    restored = read_json(f["state"]) if f["state"].exists() else {}
    head: dict[str, Any] = {"seq": int(restored.get("seq", 0)), "cycle_ms": restored.get("cycle_ms")}
    persisted = dict(restored)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    status: dict[str, Any] = {"pid": os.getpid(), "started_ms": wall_ms(), "restored_seq": persisted.get("seq"),
                              "restored_persisted_ms": persisted.get("persisted_ms"), "cycles": 0,
                              "state": "running"}

    def persist() -> None:
        persisted.update(head, persisted_ms=wall_ms())
        atomic_write_json(f["state"], persisted)

    while not stop.is_set():
        events = core.observe()
        head = {"seq": head["seq"] + 1, "cycle_ms": wall_ms()}
        status["cycles"] += 1
        if status["cycles"] % max(1, checkpoint_every) == 0:
            persist()
        recon = _last_reconciliation(root) or {}
        status.update(last_cycle_ms=head["cycle_ms"], last_reconcile_ok=recon.get("status") == "ok",
                      persisted_seq=persisted.get("seq"), persisted_ms=persisted.get("persisted_ms"),
                      events=events)
        atomic_write_json(f["status"], status)
        stop.wait(interval_s)
    persist()
    status.update(state="stopped", stopped_ms=wall_ms(), head_seq=head["seq"], persisted_seq=persisted["seq"],
                  persisted_ms=persisted["persisted_ms"])
    atomic_write_json(f["status"], status)
    return 0


def start(root: Path, interval_s: float, checkpoint_every: int, ready_timeout_s: float = 30.0) -> Out:
    """Start the process (detached) and return once it has restored its state and run one cycle."""
    f = _files(root)
    if (pid := _pid(root)) is not None:
        return _emit(1, {"error": f"trader already running (pid {pid})", "pid": pid})
    f["dir"].mkdir(parents=True, exist_ok=True)
    t0 = wall_ms()
    with f["log"].open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "simcore.cli", "--root", str(root), "trader", "run",
             "--interval", str(interval_s), "--checkpoint-every", str(checkpoint_every)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    f["pid"].write_text(f"{proc.pid}\n", encoding="ascii")
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        st = read_json(f["status"]) if f["status"].exists() else {}
        if st.get("pid") == proc.pid and st.get("cycles", 0) >= 1:
            return _emit(0, {"pid": proc.pid, "restored_seq": st.get("restored_seq"),
                             "restored_persisted_ms": st.get("restored_persisted_ms"),
                             "start_requested_ms": t0, "restart_complete_ms": wall_ms(),
                             "last_reconcile_ok": st.get("last_reconcile_ok")})
        if proc.poll() is not None:
            return _emit(1, {"error": f"trader exited with {proc.returncode} during startup; see {f['log']}"})
        time.sleep(0.05)
    return _emit(1, {"error": f"trader not ready within {ready_timeout_s}s", "pid": proc.pid})


def stop(root: Path, graceful: bool = True, timeout_s: float = 30.0) -> Out:
    """Stop the process (SIGTERM, or SIGKILL when not graceful), wait for its exit, and report
    the RPO: the time between the last persisted runtime state and the stop."""
    f = _files(root)
    pid = _pid(root)
    if pid is None:
        return _emit(1, {"error": "trader not running"})
    t0 = wall_ms()
    os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return _emit(1, {"error": f"trader pid {pid} did not exit within {timeout_s}s", "pid": pid})
        time.sleep(0.05)
    stopped = wall_ms()
    state = read_json(f["state"]) if f["state"].exists() else {}
    st = read_json(f["status"]) if f["status"].exists() else {}
    persisted_ms = state.get("persisted_ms")
    lost = st.get("head_seq", st.get("cycles")) if persisted_ms is None else None
    return _emit(0, {"pid": pid, "graceful": graceful, "stop_requested_ms": t0, "stopped_ms": stopped,
                     "persisted_seq": state.get("seq"), "persisted_ms": persisted_ms,
                     "head_seq": st.get("head_seq") if graceful else None,
                     "rpo_ms": None if persisted_ms is None else max(0, t0 - int(persisted_ms)),
                     "unpersisted_cycles": lost})


def status(root: Path) -> Out:
    """Whether the process runs, and its last cycle, reconciliation and persisted state."""
    f = _files(root)
    st = read_json(f["status"]) if f["status"].exists() else {}
    pid = _pid(root)
    return _emit(0, {**st, "running": pid is not None, "pid": pid})
