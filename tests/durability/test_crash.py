"""kill -9 at seeded random points, then resume until done (SPEC 4 Durability, SPEC 5).

A runbook of 20 mutating steps, each appending its idempotency token
(`RUN_ID:STEP_ID:ATTEMPT`) to effects.txt, is started with `runbook run` and
SIGKILLed after a seeded random delay; then `runbook resume` is run (and
killed again) until the run ends. Ten seeds x five kills = 50 kill points for
the in-doubt-by-default variant; the verify variant adds more.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .helpers import effect_lines, events, of_type, run_records, runs_json, write_step_lines

if TYPE_CHECKING:
    from tests.conftest import Workspace

STEPS = [f"s{n:02d}" for n in range(1, 21)]
SLEEPS = [0.01 * (1 + n % 4) for n in range(20)]  # 10..40 ms: kills land inside steps and between them
KILLS_PER_SEED = 5


def crash_runbook(ws: Workspace, verify: bool, mixed: bool = False) -> None:
    steps = write_step_lines(STEPS, verify=verify, sleeps=SLEEPS)
    if mixed:  # a read-only check after every action: its records are not synced on their own (group commit)
        blocks = steps.split("  - id: ")[1:]
        steps = "".join(f"  - id: {block}  - id: c{n:02d}\n    check: noop\n    with: {{value: {n}}}\n"
                        f"    expect: result.value == {n}\n" for n, block in enumerate(blocks))
    ws.runbook("crash", "runbook: crash\ntitle: Crash\nversion: 1\nsteps:\n" + steps)
    (ws.root / "effects.txt").write_text("", encoding="utf-8")  # grep (verify) exits 2 on a missing file


def last_started_step(evs: list[dict[str, Any]]) -> str | None:
    started = [e for e in evs if e["type"] == "step_started"]
    return started[-1]["step"] if started else None


def kill_at(ws: Workspace, proc: subprocess.Popen[str], more_lines: int, offset_s: float) -> bool:
    """SIGKILL `proc` `offset_s` after effects.txt has grown by `more_lines` lines (a seeded kill point).

    Kill points are defined by progress, not wall time, so they spread over the 20 steps (inside a
    step after its echo, between steps, inside the next step before its echo, during start-up)
    however loaded the machine is. False when the process ended first.
    """
    target = len(effect_lines(ws)) + more_lines
    deadline = time.monotonic() + 30
    while proc.poll() is None and len(effect_lines(ws)) < target and time.monotonic() < deadline:
        time.sleep(0.002)
    try:
        proc.wait(timeout=offset_s)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        return True


def drive(ws: Workspace, seed: int, *, verify: bool) -> dict[str, Any]:
    """Start the run, SIGKILL it (and its resumes) KILLS_PER_SEED times, resume until exit 0."""
    rng = random.Random(seed)
    budget = KILLS_PER_SEED
    landed = 0
    paused: list[str] = []  # steps a default-policy resume paused on (in doubt)
    proc = ws.popen("run", "crash", "--no-input")
    run_id: str | None = None
    for _ in range(60):
        if budget:
            done = len(set(line.split(":")[1] for line in effect_lines(ws)))
            if kill_at(ws, proc, rng.randint(0, min(6, max(0, len(STEPS) - 1 - done))), rng.uniform(0.0, 0.045)):
                landed += 1
                budget -= 1
        out, err = proc.communicate(timeout=60)
        code = proc.returncode
        if run_id is None:
            records = run_records(ws)
            assert len(records) <= 1, records
            if not records:  # killed before the run record existed: nothing ran, start again
                assert code == -9, out + err
                assert effect_lines(ws) == []
                proc = ws.popen("run", "crash", "--no-input")
                continue
            run_id = records[0]["run_id"]
        if code == 0:
            print(f"seed {seed}: {landed} kills landed, paused on {paused}")
            return {"run_id": run_id, "landed": landed, "paused": paused}
        if code == 12:
            status = ws.cli("status", run_id, "--output", "json")
            waiting = json.loads(status.out)["waiting_for"]
            assert waiting and waiting["type"] == "in_doubt", waiting
            # the pause names the step that started and never recorded its end
            evs = events(ws, run_id)
            doubted = of_type(evs, "in_doubt")[-1]
            assert waiting["step"] == doubted["step"] == last_started_step(
                [e for e in evs if e["seq"] < doubted["seq"]]), (waiting, doubted)
            assert doubted["data"]["choice"] is None
            assert waiting["token"] == f"{run_id}:{waiting['step']}:1"
            assert not verify, f"verify_argv should have resolved the doubt: {waiting}"
            paused.append(waiting["step"])
            proc = ws.popen("resume", run_id, "--no-input", "--in-doubt", "rerun")
            continue
        if code == 40:  # killed while a step's own process still ran: it holds the run until it ends
            assert "still running" in out + err, out + err
            wait_driver_free(ws, run_id)
        else:
            assert code == -9, f"unexpected exit {code}: {out}{err}"
        proc = ws.popen("resume", run_id, "--no-input")
    raise AssertionError("the run did not finish after 60 invocations")


def wait_driver_free(ws: Workspace, run_id: str) -> None:
    """Until no process (a step's child that outlived a killed engine) holds the run's driver lock."""
    import fcntl
    import os

    path = ws.root / ".runbook" / "drivers" / f"{run_id}.lock"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
        finally:
            os.close(fd)
    raise AssertionError(f"run {run_id} stayed held for 30 s")


def check_common(ws: Workspace, run_id: str) -> None:
    """Evidence verifies and `runbook runs` lists the run as finished SUCCESS (none lost)."""
    verified = ws.cli("evidence", "verify", run_id)
    assert verified.code == 0, verified.text
    listed = {r["run_id"]: r for r in runs_json(ws)}
    assert set(listed) == {run_id}
    assert listed[run_id]["status"] == "finished" and listed[run_id]["outcome"] == "SUCCESS"
    lines = effect_lines(ws)
    assert all(line.startswith(run_id + ":") for line in lines), lines


def default_policy_case(ws: Workspace, seed: int) -> None:
    """One seed: kills, default resume, `--in-doubt rerun` on a pause; every effect accounted for."""
    crash_runbook(ws, verify=False)
    outcome = drive(ws, seed, verify=False)
    run_id = outcome["run_id"]
    evs = events(ws, run_id)
    counts = Counter(line.split(":")[1] for line in effect_lines(ws))
    choices = of_type(evs, "in_doubt")
    reruns = Counter(e["step"] for e in choices if e["data"]["choice"] == "rerun")
    # every in-doubt step was first paused on (a pausing resume may itself have been killed after
    # recording its in_doubt record), and only then rerun by the operator's choice
    undecided = Counter(e["step"] for e in choices if e["data"]["choice"] is None)
    assert Counter(outcome["paused"]) <= undecided, (outcome["paused"], undecided)
    assert set(reruns) <= set(outcome["paused"])
    assert {e["data"]["choice"] for e in choices} <= {None, "rerun"}
    for sid in STEPS:
        if reruns[sid] == 0:
            assert counts[sid] == 1, (sid, counts, outcome)  # never in doubt: exactly once
        else:
            # rerun knowingly: the killed invocation may or may not have echoed
            assert 1 <= counts[sid] <= 1 + reruns[sid], (sid, counts, reruns)
    assert set(counts) == set(STEPS)
    # each step has exactly one final step_finished record
    finals = Counter(e["step"] for e in of_type(evs, "step_finished") if e["data"].get("final"))
    assert all(finals[sid] == 1 for sid in STEPS), finals
    assert outcome["landed"] == KILLS_PER_SEED, outcome
    check_common(ws, run_id)


def verify_case(ws: Workspace, seed: int, mixed: bool = False) -> None:
    """One seed: kills, default resume only; verify_argv resolves every doubt; effects exactly once."""
    crash_runbook(ws, verify=True, mixed=mixed)
    outcome = drive(ws, seed, verify=True)
    run_id = outcome["run_id"]
    counts = Counter(line.split(":")[1] for line in effect_lines(ws))
    assert counts == Counter({sid: 1 for sid in STEPS}), counts
    for doubt in of_type(events(ws, run_id), "in_doubt"):
        # verify decided: present -> recorded done (not rerun), absent -> rerun
        assert doubt["data"]["verify"] in (True, False), doubt
        assert doubt["data"]["choice"] == ("done" if doubt["data"]["verify"] else "rerun"), doubt
    assert outcome["landed"] == KILLS_PER_SEED, outcome
    check_common(ws, run_id)


def run_seeds(tmp_path: Path, seeds: list[int], case: Callable[[Workspace, int], None]) -> None:
    """Drive several seeds at once (each in its own workspace): the test mostly waits on kill delays."""
    from tests.conftest import Workspace as _Workspace

    def one(seed: int) -> None:
        try:
            case(_Workspace(tmp_path / f"seed{seed}"), seed)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}: {exc}") from exc

    with ThreadPoolExecutor(max_workers=len(seeds)) as pool:
        list(pool.map(one, seeds))


def test_sigkill_then_resume_default_policy_then_rerun(tmp_path: Path) -> None:
    """10 seeds x 5 kills = 50 kill points: never-in-doubt steps once, rerun steps once or twice."""
    run_seeds(tmp_path, list(range(10)), default_policy_case)


def test_sigkill_then_resume_with_verify_every_effect_exactly_once(tmp_path: Path) -> None:
    """4 more seeds x 5 kills with verify_argv: every doubt resolved by verify, every effect exactly once."""
    run_seeds(tmp_path, [100, 101, 102, 103], verify_case)


def test_sigkill_over_checks_and_actions_group_commit_loses_no_mutating_record(tmp_path: Path) -> None:
    """4 seeds x 5 kills over actions with unsynced checks between them: every effect exactly once, bundles verify."""
    run_seeds(tmp_path, [200, 201, 202, 203], lambda ws, seed: verify_case(ws, seed, mixed=True))
