"""Many actors, one run (SPEC 4.1, issue 8 items 1-5, 8 and 12): races and crashes through the real CLI.

Every test drives `runbook` as real subprocesses. Steps that must stay in flight while another actor
acts block on a FIFO (`read x < gate.fifo`) that the test holds open read-write: a step's open never
blocks, and each line the test writes releases exactly one waiting `read` (a line written before the
step reads is kept for it). Each mutating step appends its idempotency token (`RUN_ID:STEP:ATTEMPT`)
to effects.txt first, so the test waits for that line (an event, not a delay) and counts executions.
The races are repeated ROUNDS times each; a round's seeded jitter spreads the interleavings. A sequence
the FIFO makes deterministic (nothing races in it) runs once per variant of its flags: repeating it would
replay the same interleaving.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .helpers import alive, effect_lines, events, finish, of_type, run_record, run_records, wait_for

if TYPE_CHECKING:
    from tests.conftest import Workspace

ROUNDS = int(os.environ.get("MANY_ACTORS_ROUNDS", "50"))  # each race is repeated this often
HOST = socket.gethostname()
MARK = 'echo "$RUNBOOK_IDEMPOTENCY_TOKEN" >> effects.txt'
# The step writes its pid (its own session: pgid == pid), marks its execution, then blocks until released.
BLOCK = f'echo $$ >> pids.txt; {MARK}; read x < gate.fifo'
UNDO = 'echo "$RUNBOOK_IDEMPOTENCY_TOKEN" >> undo.txt'


def shell(step_id: str, script: str, *, rollback: str | None = None, verify: bool = False) -> str:
    """One `shell` action step (YAML, two-space list indent)."""
    text = f"  - id: {step_id}\n    action: shell\n    with:\n      argv: [sh, -c, '{script}']\n"
    if verify:
        text += f"      verify_argv: [grep, -qxF, '{{{{ run.id }}}}:{step_id}:1', effects.txt]\n"
    if rollback:
        text += f"    rollback: {rollback}\n"
    return text


GATE = "  - id: gate\n    approve: {prompt: 'go?'}\n"
KEY = "params:\n  month: {type: string, default: '2026-11'}\nidempotency_key: \"key-{{ params.month }}\"\n"
ROLLBACKS = "  - id: done\n    end: SUCCESS\n" + shell("undo", UNDO)


def runbook(ws: Workspace, name: str, steps: str, head: str = "") -> None:
    ws.runbook(name, f"runbook: {name}\ntitle: {name}\nversion: 1\n{head}steps:\n{steps}")


def executions(ws: Workspace, name: str = "effects.txt") -> Counter[str]:
    """How many times each step ran (from the tokens appended to effects.txt)."""
    return Counter(line.split(":")[1] for line in effect_lines(ws, name))


def tokens(ws: Workspace, name: str = "effects.txt") -> list[tuple[str, str]]:
    """(run id, step) of every execution, in order."""
    return [(line.split(":")[0], line.split(":")[1]) for line in effect_lines(ws, name)]


def verified(ws: Workspace, run_id: str) -> None:
    res = ws.cli("evidence", "verify", run_id)
    assert res.code == 0, res.text


def names_driver(text: str, pid: int) -> bool:
    """An exit-40 message names the driving process (pid and host)."""
    return f"pid {pid}" in text and HOST in text


class Actors:
    """The workspace, the FIFO steps block on, and every process the test started (killed at teardown)."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.fifo = ws.root / "gate.fifo"
        os.mkfifo(self.fifo)
        self.fd = os.open(self.fifo, os.O_RDWR)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *args: str) -> subprocess.Popen[str]:
        proc = self.ws.popen(*args)
        self.procs.append(proc)
        return proc

    def release(self, n: int = 1) -> None:
        """Let `n` blocked (or the next `n` blocking) steps go on."""
        os.write(self.fd, b"go\n" * n)

    def step_pids(self) -> list[int]:
        path = self.ws.root / "pids.txt"
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def kill_steps(self) -> None:
        """SIGKILL the process group of every blocking step still running and wait until each is gone."""
        ours = [pid for pid in self.step_pids() if self.is_step(pid)]
        for pid in ours:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for pid in ours:
            wait_for(lambda pid=pid: not alive(pid), what=f"step process {pid} to end")

    def is_step(self, pid: int) -> bool:
        """A live blocking step of this test (a pid that ended may have been reused by another process)."""
        try:
            return alive(pid) and self.fifo.name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def wait_marked(self, step: str, count: int = 1) -> None:
        wait_for(lambda: executions(self.ws)[step] >= count, what=f"step {step} to run")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        self.kill_steps()
        os.close(self.fd)


@pytest.fixture
def actors(ws: Workspace) -> Iterator[Actors]:
    team = Actors(ws)
    try:
        yield team
    finally:
        team.close()


def started_run_id(ws: Workspace, runbook_name: str | None = None) -> str:
    """The id of the newest run (waits until its record exists)."""
    records = wait_for(lambda: [r for r in run_records(ws) if runbook_name in (None, r["runbook"])],
                       what="a run record")
    return str(records[-1]["run_id"])


def paused_at_gate(ws: Workspace, name: str) -> str:
    res = ws.cli("run", name, "--no-input")
    assert res.code == 12, res.text
    run_id = started_run_id(ws, name)
    assert run_record(ws, run_id)["waiting_for"]["step"] == "gate"
    return run_id


def python(ws: Workspace, code: str, *args: str) -> None:
    """Run engine code in a separate process (as a crashed `runbook approve` would have left things)."""
    subprocess.run([sys.executable, "-c", code, *args], cwd=ws.root, check=True, timeout=60,
                   capture_output=True, text=True)


# -- 1. resume of a live run ---------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(6))  # every (round % 2, round % 3) once
def test_resume_of_a_live_run_exits_40_and_nothing_runs_twice(actors: Actors, round_: int) -> None:
    ws = actors.ws
    # the blocking step is first on even rounds (resume lands in the first step), second on odd ones
    steps = shell("block", BLOCK) + shell("last", MARK)
    if round_ % 2:
        steps = shell("first", MARK) + steps
    runbook(ws, "live", steps)
    proc = actors.start("run", "live", "--no-input")
    actors.wait_marked("block")
    run_id = started_run_id(ws)

    flags = ("--in-doubt", "rerun") if round_ % 3 else ()
    resumed = ws.cli("resume", run_id, *flags, "--no-input")
    assert resumed.code == 40, resumed.text
    assert names_driver(resumed.text, proc.pid), resumed.text

    actors.release()
    code, text = finish(proc)
    assert code == 0, text
    assert executions(ws) == Counter({"block": 1, "last": 1, **({"first": 1} if round_ % 2 else {})})
    assert {rid for rid, _ in tokens(ws)} == {run_id}
    evs = events(ws, run_id)
    assert of_type(evs, "run_resumed") == []  # the refused resume wrote nothing into the log
    assert run_record(ws, run_id)["outcome"] == "SUCCESS"
    verified(ws, run_id)


# -- 2. two resumes at once ----------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_resumes_of_an_approved_run_exactly_one_drives(actors: Actors, round_: int) -> None:
    ws = actors.ws
    runbook(ws, "gated", GATE + shell("act", BLOCK) + shell("after", MARK))
    run_id = paused_at_gate(ws, "gated")
    approved = ws.cli("approve", run_id, "gate", "--by", "alice")
    assert approved.code == 0, approved.text

    first = actors.start("resume", run_id, "--no-input")
    second = actors.start("resume", run_id, "--no-input")
    # `act` blocks until one of the two has exited: the one that drives cannot end before that
    loser = wait_for(lambda: next((p for p in (first, second) if p.poll() is not None), None), timeout=30,
                     what="one of the two resumes to exit")
    winner = second if loser is first else first
    actors.release()
    lose_code, lose_text = finish(loser)
    win_code, win_text = finish(winner)
    assert lose_code == 40, lose_text
    assert names_driver(lose_text, winner.pid), lose_text
    assert win_code == 0, win_text
    assert executions(ws) == Counter({"act": 1, "after": 1})
    evs = events(ws, run_id)
    assert len(of_type(evs, "run_resumed")) == 1
    assert [e["data"]["by"] for e in of_type(evs, "approval", "gate")] == ["alice"]
    verified(ws, run_id)


# -- 3. approve racing resume --------------------------------------------------------------------


# ENGINE BUG (found by test_approve_racing_resume_...): engine/approvals.py approve() loads the run record
# (`ws.store.load`, line 133: paused, last_event_hash H), then reads the log (`trusted_events`, line 144), holding
# nothing. A resume that starts in between saves the record as running and appends `run_resumed` after H;
# approve then sees a "sealed" run with a non-approval record after H and exits 30 ("records were added
# after the run was sealed") instead of storing the decision (SPEC 4.1: approve may be given while a run is
# driven or not). Re-reading the record when the check fails (or reading the log before the record) fixes it.
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_approve_racing_resume_never_executes_twice(actors: Actors, round_: int) -> None:
    ws = actors.ws
    rng = random.Random(round_)
    runbook(ws, "gated", GATE + shell("act", MARK) + shell("after", MARK))
    run_id = paused_at_gate(ws, "gated")

    order = ["approve", "resume"] if round_ % 2 else ["resume", "approve"]
    procs: dict[str, subprocess.Popen[str]] = {}
    for n, who in enumerate(order):
        if n:
            time.sleep(rng.uniform(0.0, 0.08))  # seeded jitter between the two starts (not a wait)
        procs[who] = actors.start(*(("approve", run_id, "gate", "--by", "alice") if who == "approve"
                                    else ("resume", run_id, "--no-input")))
    approve_code, approve_text = finish(procs["approve"])
    resume_code, resume_text = finish(procs["resume"])
    assert resume_code in (0, 12, 40), resume_text
    assert approve_code == 0, approve_text  # approve may be given while the run is driven or not
    if resume_code != 0:
        extra = ws.cli("resume", run_id, "--no-input")
        assert extra.code == 0, f"{resume_code}: {resume_text}\n-- extra resume:\n{extra.text}"
    assert executions(ws) == Counter({"act": 1, "after": 1})
    evs = events(ws, run_id)
    assert [e["data"]["by"] for e in of_type(evs, "approval", "gate")] == ["alice"]
    assert run_record(ws, run_id)["outcome"] == "SUCCESS"
    verified(ws, run_id)


# -- 4. an idempotency key is held while its run is paused or interrupted ---------------------------


@pytest.mark.parametrize("round_", range(4))  # with and without --force, with and without rollbacks
def test_key_is_held_while_paused_and_while_interrupted_until_cancel(actors: Actors, round_: int) -> None:
    ws = actors.ws
    runbook(ws, "keyed", shell("prep", MARK, rollback="undo") + GATE + shell("act", BLOCK) + ROLLBACKS, KEY)
    holder = paused_at_gate(ws, "keyed")
    force = ("--force",) if round_ % 2 else ()

    # paused: another run with the key (also --force) exits 11 naming the holder, and runs nothing
    other = ws.cli("run", "keyed", "--no-input", *force)
    assert other.code == 11, other.text
    assert holder in other.text, other.text
    assert tokens(ws) == [(holder, "prep")]

    # interrupted: approve, resume, kill -9 the resume (and its step) while `act` blocks
    assert ws.cli("approve", holder, "gate", "--by", "alice").code == 0
    resumed = actors.start("resume", holder, "--no-input")
    actors.wait_marked("act")
    resumed.kill()
    resumed.wait()
    actors.kill_steps()
    other = ws.cli("run", "keyed", "--no-input", *(() if force else ("--force",)))
    assert other.code == 11, other.text
    assert holder in other.text, other.text
    assert tokens(ws) == [(holder, "prep"), (holder, "act")]

    # cancel ends the holder: its completed action's rollback runs (unless --no-rollback), the key is free
    rollback = round_ % 4 != 3
    cancelled = ws.cli("cancel", holder, "--by", "bob", "--reason", "abandoned",
                       *(() if rollback else ("--no-rollback",)))
    assert cancelled.code == 10, cancelled.text
    assert tokens(ws, "undo.txt") == ([(holder, "undo")] if rollback else [])
    record = of_type(events(ws, holder), "cancelled")[-1]["data"]
    assert record["by"] == "bob" and record["reason"] == "abandoned" and record["rollback"] is rollback
    assert run_record(ws, holder)["outcome"] == "BUSINESS_REJECT"
    verified(ws, holder)

    fresh = ws.cli("run", "keyed", "--no-input")
    assert fresh.code == 12, fresh.text  # it proceeds (to its own approval)
    newest = started_run_id(ws)
    assert newest != holder and tokens(ws)[-1] == (newest, "prep")


def test_monthly_rebalance_key_held_while_paused_one_order_per_month(sim: Any) -> None:
    library = Path(__file__).resolve().parents[2] / "runbooks"
    if not list(library.glob("*/monthly-rebalance-guard.yaml")):
        pytest.skip("no monthly-rebalance-guard runbook in this library")
    month = ("--params-file", sim.profile("rebalance"), "--no-input", "--output", "json", "--param", "month=2026-02")
    first = sim.cli("run", "monthly-rebalance-guard", *month)
    assert first.code == 12, first.text
    holder = json.loads(first.out)["run_id"]
    second = sim.cli("run", "monthly-rebalance-guard", *month)
    assert second.code == 11, second.text
    second_id = json.loads(second.out)["run_id"]
    assert holder in second.text, second.text
    # both waiting runs would be approved and resumed by a second person: only the holder trades
    assert sim.cli("approve", holder, "approve_order", "--by", "alice").code == 0
    again = sim.cli("approve", second_id, "approve_order", "--by", "alice")
    assert again.code != 0, again.text  # the skipped run never asked for an approval
    resumed = sim.cli("resume", holder, "--no-input", "--output", "json")
    assert resumed.code == 0, resumed.text
    assert sim.cli("resume", second_id, "--no-input").code == 11  # finished BUSINESS_SKIP: nothing to do
    third = sim.cli("run", "monthly-rebalance-guard", *month)
    assert third.code == 11, third.text  # the month succeeded
    orders = filled_orders(sim)
    assert len(orders) == 1, orders
    assert holder in orders[0]["client_order_id"]
    verified(sim, holder)


def filled_orders(sim: Any) -> list[dict[str, Any]]:
    """Every FILLED order at the simulated broker."""
    import sqlite3

    conn = sqlite3.connect(f"file:{sim.root / 'core' / 'state' / 'world.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM broker_orders WHERE status='FILLED'")]
    finally:
        conn.close()


# -- 5. kill -9 of `runbook approve` at every point ----------------------------------------------

GIVE = """
import sys
from pathlib import Path
from engine.approvals import ApprovalBox, record_of
from engine.evidence import EventLog
from engine.redact import Redactor

state_dir, run_id, evidence_dir, point = sys.argv[1:]
box = ApprovalBox.of(Path(state_dir), run_id)
if point == "tmp-only":  # killed inside the atomic write: only the temp file exists
    box.folder.mkdir(parents=True, exist_ok=True)
    (box.folder / ".20261202T000000000000Z-0000.json.1.tmp").write_text('{"id": "partial')
    raise SystemExit(0)
entry = box.find(box.give("gate", "approved", "alice", None, "cli"))
if point == "file":
    raise SystemExit(0)
log = EventLog(Path(evidence_dir), Redactor())  # exactly as approve takes it into the log
kind, data = record_of(entry)
log.record(kind, entry["step"], data)
log.close()
"""

CRASH_POINTS = ["tmp-only", "file", "file+record",
                "sealed-bundle-old-record",
                "full"]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_approve_killed_at_each_point_leaves_the_run_resumable(actors: Actors, point: str) -> None:
    ws = actors.ws
    runbook(ws, "gated", GATE + shell("act", MARK) + shell("after", MARK))
    run_id = paused_at_gate(ws, "gated")
    record_path = ws.root / ".runbook" / "runs" / f"{run_id}.json"
    if point in ("sealed-bundle-old-record", "full"):
        before = record_path.read_bytes()
        assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
        if point == "sealed-bundle-old-record":  # killed after re-sealing the bundle, before saving the record
            record_path.write_bytes(before)
    else:
        python(ws, GIVE, str(ws.root / ".runbook"), run_id, str(ws.root / "evidence" / run_id), point)

    if point != "tmp-only":
        again = ws.cli("approve", run_id, "gate", "--by", "bob")
        assert again.code == 2 and "already approved" in again.text, again.text
    resumed = ws.cli("resume", run_id, "--no-input")
    if point == "tmp-only":  # nothing was approved: the run still waits, and can be approved now
        assert resumed.code == 12, resumed.text
        assert executions(ws) == Counter()
        assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
        resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 0, resumed.text
    assert executions(ws) == Counter({"act": 1, "after": 1})
    assert [e["data"]["by"] for e in of_type(events(ws, run_id), "approval", "gate")] == ["alice"]
    verified(ws, run_id)


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_approve_killed_at_a_random_moment_then_resume_succeeds(actors: Actors, round_: int) -> None:
    ws = actors.ws
    rng = random.Random(1000 + round_)
    runbook(ws, "gated", GATE + shell("act", MARK) + shell("after", MARK))
    run_id = paused_at_gate(ws, "gated")
    box = ws.root / ".runbook" / "approvals" / run_id
    log = ws.root / "evidence" / run_id / "events.jsonl"
    size = log.stat().st_size
    proc = actors.start("approve", run_id, "gate", "--by", "alice")
    if round_ % 5:
        # most rounds: kill a few ms (seeded) after approve starts to write (its decision file or the log)
        wait_for(lambda: proc.poll() is not None or any(box.glob("*.json")) or log.stat().st_size != size,
                 what="approve to write")
        offset = rng.uniform(0.0, 0.03)
    else:
        offset = rng.uniform(0.0, 0.5)  # anywhere, start-up included
    try:
        proc.wait(timeout=offset)
    except subprocess.TimeoutExpired:
        proc.kill()
    proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), proc.returncode

    resumed = ws.cli("resume", run_id, "--no-input")
    if resumed.code == 12:  # killed before it stored the decision: nothing approved, nothing lost
        stored = any(box.glob("*.json")) or of_type(events(ws, run_id), "approval", "gate")
        assert not stored, resumed.text
        assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
        resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 0, resumed.text
    assert executions(ws) == Counter({"act": 1, "after": 1})
    assert [e["data"]["by"] for e in of_type(events(ws, run_id), "approval", "gate")] == ["alice"]
    verified(ws, run_id)


@pytest.mark.parametrize("left", [".report.md.tmp", ".report.html.tmp", ".manifest.json.tmp", "manifest.json.tmp",
                                  ".attestation.dsse.json.tmp"])
def test_a_seal_killed_before_its_rename_leaves_no_file_in_the_bundle(actors: Actors, left: str) -> None:
    """A sealing process (here `approve`'s re-seal) killed between writing a file and renaming it leaves its
    temporary file; the next seal removes it instead of listing it in the manifest (found by the random-kill
    test above, round 44: the bundle then failed to verify)."""
    ws = actors.ws
    runbook(ws, "gated", GATE + shell("act", MARK) + shell("after", MARK))
    run_id = paused_at_gate(ws, "gated")
    bundle = ws.root / "evidence" / run_id
    (bundle / left).write_text("half-written\n")
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 0, resumed.text
    assert not (bundle / left).exists()
    verified(ws, run_id)


# -- 6. kill -9 of the engine while a step's process (own session) still runs -----------------------


@pytest.mark.parametrize("round_", range(6))
def test_resume_waits_for_a_killed_runs_step_process(actors: Actors, round_: int) -> None:
    ws = actors.ws
    verify = bool(round_ % 2)
    runbook(ws, "slow", shell("first", MARK) + shell("block", BLOCK, verify=verify) + shell("last", MARK))
    (ws.root / "effects.txt").write_text("")
    proc = actors.start("run", "slow", "--no-input")
    actors.wait_marked("block")
    run_id = started_run_id(ws)
    proc.kill()
    proc.wait()
    [child] = actors.step_pids()
    assert alive(child)

    for args in ((), ("--in-doubt", "rerun"), ("--in-doubt", "skip")):
        refused = ws.cli("resume", run_id, *args, "--no-input")
        assert refused.code == 40, refused.text
        assert "still running" in refused.text, refused.text
    refused = ws.cli("cancel", run_id, "--by", "bob", "--reason", "r")
    assert refused.code == 40, refused.text
    assert executions(ws) == Counter({"first": 1, "block": 1})  # never rerun while the first one lives

    actors.release()
    wait_for(lambda: not alive(child), what="the step process to end")
    resumed = ws.cli("resume", run_id, "--no-input")
    if verify:  # the plugin can tell the effect is present: not run again
        assert resumed.code == 0, resumed.text
    else:  # in doubt: pause until the operator decides
        assert resumed.code == 12, resumed.text
        resumed = ws.cli("resume", run_id, "--in-doubt", "skip", "--no-input")
        assert resumed.code == 0, resumed.text
    assert executions(ws) == Counter({"first": 1, "block": 1, "last": 1})
    verified(ws, run_id)


# -- 7. a forged approval record ------------------------------------------------------------------

FORGE = """
import sys
from pathlib import Path
from engine import records
from engine.evidence import EventLog
from engine.redact import Redactor

log = EventLog(Path(sys.argv[1]), Redactor())
log.record("approval", "gate", records.approval("approved", "alice", note=None, via="cli",
                                                approval_id="20261202T000000000000Z-0badf00d"))
log.close()
"""


@pytest.mark.parametrize("when", ["paused", "killed-before-gate"])
def test_forged_approval_record_makes_resume_exit_30(actors: Actors, when: str) -> None:
    ws = actors.ws
    runbook(ws, "gated", shell("first", BLOCK) + GATE + shell("act", MARK))
    if when == "paused":
        actors.release()
        run_id = paused_at_gate(ws, "gated")
    else:
        proc = actors.start("run", "gated", "--no-input")
        actors.wait_marked("first")
        run_id = started_run_id(ws)
        proc.kill()
        proc.wait()
        actors.kill_steps()
    python(ws, FORGE, str(ws.root / "evidence" / run_id))
    for args in ((), ("--in-doubt", "skip")):
        resumed = ws.cli("resume", run_id, *args, "--no-input")
        assert resumed.code == 30, resumed.text
    assert "act" not in executions(ws)


# -- 8. run ids are never paths -------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, Any]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if not p.is_fifo()}


def test_run_ids_that_are_paths_exit_2_and_touch_nothing(tmp_path: Path) -> None:
    from tests.conftest import Workspace as CliWorkspace

    ws = CliWorkspace(tmp_path / "a" / "b" / "ws")
    runbook(ws, "gated", GATE + shell("act", MARK))
    assert ws.cli("run", "gated", "--no-input").code == 12
    real = run_records(ws)[0]
    evil = dict(real, run_id="x", runbook="EVIL-CANARY", status="paused",
                evidence_dir=str(tmp_path / "a" / "evil"), runbook_path=str(ws.root / "runbooks" / "gated.yaml"))
    # where ../x and ../../../x lead from <state_dir>/runs (and from <state_dir>/approvals, drivers)
    for place in (ws.root / ".runbook" / "x.json", tmp_path / "a" / "b" / "x.json", ws.root / "x.json"):
        place.write_text(json.dumps(evil))
    before = snapshot(tmp_path)
    commands = [
        ("status", "../../../x"), ("status", "../x"), ("status", "../../x"),
        ("status", "../../../x", "--output", "json"),
        ("resume", "../x"), ("resume", "../../../x", "--in-doubt", "rerun"),
        ("approve", "../x", "gate", "--by", "a"), ("approve", "../../../x", "gate", "--by", "a"),
        ("cancel", "../x", "--by", "a", "--reason", "r"), ("cancel", "../../../x", "--by", "a", "--reason", "r"),
        ("status", "/etc/passwd"), ("resume", str(tmp_path / "a" / "b" / "x")),
    ]
    for args in commands:
        res = ws.cli(*args)
        assert res.code == 2, (args, res.text)
        assert "EVIL-CANARY" not in res.text and "root:" not in res.text, (args, res.text)
    assert snapshot(tmp_path) == before


# -- 9. cancel --------------------------------------------------------------------------------------


def test_cancel_driven_finished_and_no_rollback(actors: Actors) -> None:
    ws = actors.ws
    runbook(ws, "live", shell("block", BLOCK) + shell("last", MARK))
    proc = actors.start("run", "live", "--no-input")
    actors.wait_marked("block")
    live_id = started_run_id(ws)
    driven = ws.cli("cancel", live_id, "--by", "bob", "--reason", "r")
    assert driven.code == 40, driven.text
    assert names_driver(driven.text, proc.pid), driven.text
    actors.release()
    code, text = finish(proc)
    assert code == 0, text
    assert of_type(events(ws, live_id), "cancelled") == []
    finished = ws.cli("cancel", live_id, "--by", "bob", "--reason", "r")
    assert finished.code == 2, finished.text
    assert run_record(ws, live_id)["outcome"] == "SUCCESS"
    verified(ws, live_id)

    runbook(ws, "keyed", shell("prep", MARK, rollback="undo") + GATE + shell("act", MARK) + ROLLBACKS, KEY)
    for rollback in (False, True):
        run_id = paused_at_gate(ws, "keyed")
        res = ws.cli("cancel", run_id, "--by", "bob", "--reason", "not this month",
                     *(() if rollback else ("--no-rollback",)))
        assert res.code == 10, res.text
        [record] = of_type(events(ws, run_id), "cancelled")
        assert record["data"]["rollback"] is rollback and record["data"]["by"] == "bob"
        assert record["data"]["reason"] == "not this month"
        assert ((run_id, "undo") in tokens(ws, "undo.txt")) is rollback
        assert "act" not in [step for rid, step in tokens(ws) if rid == run_id]
        assert ws.cli("cancel", run_id, "--by", "bob", "--reason", "again").code == 2
        assert ws.cli("resume", run_id, "--no-input").code == 10  # already finished: nothing runs
        verified(ws, run_id)
