"""Resume (SPEC 4 Durability): finished runs, changed runbooks, steps in doubt, torn and unsealed logs."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING

import pytest

from .helpers import (
    effect_lines,
    events,
    finish,
    kill_pidfile,
    of_type,
    only_run_id,
    run_record,
    runs_json,
    status_json,
    wait_for,
)

if TYPE_CHECKING:
    from tests.conftest import Workspace

ECHO = "echo \"$RUNBOOK_IDEMPOTENCY_TOKEN\" >> effects.txt"
# With `armed` present the step hangs (after or before its effect); without it, it just writes.
HANG_AFTER_EFFECT = f"if [ -e armed ]; then rm armed; {ECHO}; echo $$ > child.pid; exec sleep 30; fi; {ECHO}"
HANG_BEFORE_EFFECT = f"if [ -e armed ]; then rm armed; echo $$ > child.pid; exec sleep 30; fi; {ECHO}"


def write_doubt_runbook(ws: Workspace, command: str, verify: list[str] | None = None) -> None:
    """before -> write (the step that gets killed) -> after, all mutating."""
    lines = [
        "runbook: doubt", "title: Doubt", "version: 1", "steps:",
        "  - id: before", "    action: shell", f"    with: {{argv: [sh, -c, '{ECHO}']}}",
        "  - id: write", "    action: shell", "    with:", f"      argv: [sh, -c, '{command}']",
    ]
    if verify:
        lines.append(f"      verify_argv: {json.dumps(verify)}")
    lines += ["  - id: after", "    action: shell", f"    with: {{argv: [sh, -c, '{ECHO}']}}"]
    (ws.root / "runbooks" / "doubt.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def crash_in_write(ws: Workspace) -> str:
    """Run `doubt` with `write` armed to hang, kill -9 the engine (and the orphaned step child) there."""
    (ws.root / "armed").touch()
    (ws.root / "effects.txt").write_text("", encoding="utf-8")
    proc = ws.popen("run", "doubt", "--no-input")
    wait_for(lambda: (ws.root / "child.pid").exists() and (ws.root / "child.pid").read_text().strip(),
             what="the write step to start")
    proc.kill()
    proc.wait(timeout=10)
    kill_pidfile(ws.root / "child.pid")
    run_id = only_run_id(ws)
    evs = events(ws, run_id)
    assert evs[-1]["type"] == "step_started" and evs[-1]["step"] == "write", evs[-1]
    return run_id


def steps_of(ws: Workspace) -> list[str]:
    return [line.split(":")[1] for line in effect_lines(ws)]


# -- finished runs and changed runbooks ---------------------------------------------


def test_resume_of_a_finished_run_says_so_and_changes_nothing(ws: Workspace) -> None:
    write_doubt_runbook(ws, ECHO)
    assert ws.cli("run", "doubt", "--no-input").code == 0
    run_id = only_run_id(ws)
    bundle = ws.root / "evidence" / run_id
    before = {p.relative_to(ws.root): p.read_bytes() for p in [*bundle.rglob("*"), ws.root / "effects.txt",
              ws.root / ".runbook" / "runs" / f"{run_id}.json"] if p.is_file()}
    again = ws.cli("resume", run_id, "--no-input")
    assert again.code == 0, again.text
    assert "already finished" in again.text and "SUCCESS" in again.text
    after = {p.relative_to(ws.root): p.read_bytes() for p in [*bundle.rglob("*"), ws.root / "effects.txt",
             ws.root / ".runbook" / "runs" / f"{run_id}.json"] if p.is_file()}
    assert after == before
    assert steps_of(ws) == ["before", "write", "after"]
    # also with an in-doubt option: still nothing to do
    assert ws.cli("resume", run_id, "--in-doubt", "rerun").code == 0
    assert steps_of(ws) == ["before", "write", "after"]


def approval_runbook(ws: Workspace, title: str = "Gated") -> None:
    ws.runbook("gated", f"""
        runbook: gated
        title: {title}
        version: 1
        steps:
          - id: gate
            approve: {{prompt: "go?"}}
          - id: write
            action: shell
            with: {{argv: [sh, -c, '{ECHO}']}}
        """)


def test_changed_runbook_makes_resume_refuse_unless_accept_changed(ws: Workspace) -> None:
    approval_runbook(ws)
    assert ws.cli("run", "gated", "--no-input").code == 12
    run_id = only_run_id(ws)
    assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
    approval_runbook(ws, title="Gated, edited after the run started")
    new_sha = hashlib.sha256((ws.root / "runbooks" / "gated.yaml").read_bytes()).hexdigest()
    log = ws.root / "evidence" / run_id / "events.jsonl"
    frozen = log.read_bytes()

    refused = ws.cli("resume", run_id, "--no-input")
    assert refused.code == 20, refused.text
    assert "changed" in refused.text and "--accept-changed" in refused.text
    assert log.read_bytes() == frozen and effect_lines(ws) == []
    assert ws.cli("evidence", "verify", run_id).code == 0
    assert status_json(ws, run_id)["status"] == "paused"

    accepted = ws.cli("resume", run_id, "--no-input", "--accept-changed")
    assert accepted.code == 0, accepted.text
    assert steps_of(ws) == ["write"]
    resumed = of_type(events(ws, run_id), "run_resumed")[-1]["data"]
    assert resumed["accept_changed"] is True and resumed["new_sha256"] == new_sha
    assert ws.cli("evidence", "verify", run_id).code == 0


# -- steps in doubt -----------------------------------------------------------------------


def test_in_doubt_default_pauses_naming_the_step(ws: Workspace) -> None:
    write_doubt_runbook(ws, HANG_AFTER_EFFECT)
    run_id = crash_in_write(ws)
    assert status_json(ws, run_id)["status"] == "interrupted"
    paused = ws.cli("resume", run_id, "--no-input")
    assert paused.code == 12, paused.text
    assert "write" in paused.text and "in doubt" in paused.text
    status = status_json(ws, run_id)
    assert status["status"] == "paused"
    assert status["waiting_for"]["type"] == "in_doubt" and status["waiting_for"]["step"] == "write"
    assert status["waiting_for"]["token"] == f"{run_id}:write:1"
    text = ws.cli("status", run_id)
    assert "in doubt" in text.out and "write" in text.out
    assert steps_of(ws) == ["before", "write"]  # neither rerun nor continued
    # resuming again without a choice pauses again, still running nothing
    assert ws.cli("resume", run_id, "--no-input").code == 12
    assert steps_of(ws) == ["before", "write"]
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_in_doubt_rerun_runs_the_step_again(ws: Workspace) -> None:
    write_doubt_runbook(ws, HANG_AFTER_EFFECT)
    run_id = crash_in_write(ws)
    assert ws.cli("resume", run_id, "--no-input").code == 12
    done = ws.cli("resume", run_id, "--no-input", "--in-doubt", "rerun")
    assert done.code == 0, done.text
    assert steps_of(ws) == ["before", "write", "write", "after"]  # the operator knowingly reran it
    choice = of_type(events(ws, run_id), "in_doubt")[-1]["data"]
    assert choice["choice"] == "rerun" and choice["by"] == "tester"
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_in_doubt_skip_records_skipped_and_continues(ws: Workspace) -> None:
    write_doubt_runbook(ws, HANG_AFTER_EFFECT)
    run_id = crash_in_write(ws)
    done = ws.cli("resume", run_id, "--no-input", "--in-doubt", "skip")
    assert done.code == 0, done.text
    assert steps_of(ws) == ["before", "write", "after"]
    evs = events(ws, run_id)
    assert of_type(evs, "in_doubt")[-1]["data"]["choice"] == "skip"
    finals = [e["data"] for e in of_type(evs, "step_finished", "write") if e["data"].get("final")]
    assert [f["status"] for f in finals] == ["skipped"]
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_in_doubt_fail_fails_the_step_unhandled(ws: Workspace) -> None:
    write_doubt_runbook(ws, HANG_AFTER_EFFECT)
    run_id = crash_in_write(ws)
    done = ws.cli("resume", run_id, "--no-input", "--in-doubt", "fail")
    assert done.code == 50, done.text  # a failed action, unhandled: INTERNAL_ERROR
    assert steps_of(ws) == ["before", "write"]
    evs = events(ws, run_id)
    assert of_type(evs, "in_doubt")[-1]["data"]["choice"] == "fail"
    finals = [e["data"] for e in of_type(evs, "step_finished", "write") if e["data"].get("final")]
    assert [f["status"] for f in finals] == ["failed"]
    assert run_record(ws, run_id)["outcome"] == "INTERNAL_ERROR"
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_in_doubt_verify_present_is_recorded_done_not_rerun(ws: Workspace) -> None:
    write_doubt_runbook(ws, HANG_AFTER_EFFECT, verify=["grep", "-qxF", "{{ run.id }}:write:1", "effects.txt"])
    run_id = crash_in_write(ws)
    assert steps_of(ws) == ["before", "write"]
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 0, done.text
    assert steps_of(ws) == ["before", "write", "after"]  # write's effect exactly once
    evs = events(ws, run_id)
    doubt = of_type(evs, "in_doubt")[-1]["data"]
    assert doubt["verify"] is True and doubt["choice"] == "done" and doubt["token"] == f"{run_id}:write:1"
    assert len(of_type(evs, "step_started", "write")) == 1  # not started again
    finals = [e["data"] for e in of_type(evs, "step_finished", "write") if e["data"].get("final")]
    assert [f["status"] for f in finals] == ["ok"]
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_in_doubt_verify_absent_reruns(ws: Workspace) -> None:
    write_doubt_runbook(ws, HANG_BEFORE_EFFECT, verify=["grep", "-qxF", "{{ run.id }}:write:1", "effects.txt"])
    run_id = crash_in_write(ws)
    assert steps_of(ws) == ["before"]
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 0, done.text
    assert steps_of(ws) == ["before", "write", "after"]
    evs = events(ws, run_id)
    doubt = of_type(evs, "in_doubt")[-1]["data"]
    assert doubt["verify"] is False and doubt["choice"] == "rerun"
    assert len(of_type(evs, "step_started", "write")) == 2
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_in_doubt_verify_cannot_tell_pauses(ws: Workspace) -> None:
    # grep exits 2 on a missing file: "cannot tell", so the operator must choose
    write_doubt_runbook(ws, HANG_AFTER_EFFECT, verify=["grep", "-qxF", "{{ run.id }}:write:1", "no-such-file"])
    run_id = crash_in_write(ws)
    paused = ws.cli("resume", run_id, "--no-input")
    assert paused.code == 12, paused.text
    assert status_json(ws, run_id)["waiting_for"]["step"] == "write"
    assert of_type(events(ws, run_id), "in_doubt")[-1]["data"]["verify"] is None
    assert steps_of(ws) == ["before", "write"]


# -- logs a crash leaves behind --------------------------------------------------------------


def test_torn_last_record_does_not_make_the_run_unrecoverable(ws: Workspace) -> None:
    write_doubt_runbook(ws, HANG_AFTER_EFFECT)
    run_id = crash_in_write(ws)
    log = ws.root / "evidence" / run_id / "events.jsonl"
    with log.open("ab") as handle:  # what a power cut during a record write leaves: a line with no end
        handle.write(b'{"data":{"kind":"action"},"prev":"')
    first = ws.cli("resume", run_id, "--no-input")
    assert first.code in (12, 30), first.text  # pause on the doubt, or refuse as corrupt; never a crash
    for number, line in enumerate(log.read_bytes().splitlines(keepends=True), start=1):
        if line.endswith(b"\n"):
            json.loads(line), f"line {number} is not a record"
    second = ws.cli("resume", run_id, "--no-input", "--in-doubt", "skip")
    assert second.code in (0, 30), second.text


def test_killed_before_run_started_record_does_not_resume_to_success_without_running(ws: Workspace) -> None:
    write_doubt_runbook(ws, ECHO)
    assert ws.cli("run", "doubt", "--no-input").code == 0
    run_id = only_run_id(ws)
    # Recreate, byte for byte, what kill -9 between `store.save(record)` and the first `log.record`
    # leaves: the run record as saved at start (status running, dead pid) and the empty events.jsonl
    # that EventLog() created; no manifest, no report, no effects.
    bundle = ws.root / "evidence" / run_id
    for path in sorted(bundle.rglob("*"), reverse=True):
        if path.is_file():
            path.unlink()
        elif path.is_dir():
            path.rmdir()
    (bundle / "events.jsonl").write_bytes(b"")
    record_path = ws.root / ".runbook" / "runs" / f"{run_id}.json"
    record = json.loads(record_path.read_text())
    record.update(status="running", outcome=None, exit_code=None, ended_at=None, waiting_for=None,
                  last_event_hash=None, pid=_dead_pid())
    record_path.write_text(json.dumps(record))
    (ws.root / "effects.txt").write_text("")
    assert status_json(ws, run_id)["status"] == "interrupted"

    resumed = ws.cli("resume", run_id, "--no-input")
    # Either continue at the first unfinished step (all three steps run) or refuse as corrupt state.
    if resumed.code == 0:
        assert steps_of(ws) == ["before", "write", "after"], resumed.text
    else:
        assert resumed.code == 30, resumed.text


def _dead_pid() -> int:
    from .helpers import dead_pid

    return dead_pid()


def test_killed_after_run_finished_before_seal_resume_seals_the_bundle(ws: Workspace) -> None:
    """Regression: found by the crash test at 93e4cbe (resume said 'already finished' and never sealed), fixed in c8447fa."""
    # A large stdout artifact makes sealing (report + sha256 of every file) take long enough that
    # SIGKILL lands between the run_finished record and manifest.json.
    ws.runbook("big", """
        runbook: big
        title: Big
        version: 1
        steps:
          - id: one
            action: shell
            with: {argv: [sh, -c, "echo \\"$RUNBOOK_IDEMPOTENCY_TOKEN\\" >> effects.txt; head -c 8000000 /dev/zero | tr '\\\\0' x"]}
        """)
    for _attempt in range(5):
        proc = ws.popen("run", "big", "--no-input")
        run_id = wait_for(lambda: _latest(ws), what="the run record")
        log = ws.root / "evidence" / run_id / "events.jsonl"
        while proc.poll() is None and b'"run_finished"' not in (log.read_bytes() if log.exists() else b""):
            time.sleep(0.0005)
        proc.kill()
        finish(proc)
        if not (ws.root / "evidence" / run_id / "manifest.json").exists() and of_type(events(ws, run_id), "run_finished"):
            break
    else:
        pytest.skip("could not land SIGKILL between run_finished and the manifest")
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 0, resumed.text
    assert [line.split(":")[1] for line in effect_lines(ws)].count("one") == 1
    verified = ws.cli("evidence", "verify", run_id)
    assert verified.code == 0, verified.text
    listed = {r["run_id"]: r for r in runs_json(ws)}
    assert listed[run_id]["status"] == "finished" and listed[run_id]["outcome"] == "SUCCESS"


def _latest(ws: Workspace) -> str | None:
    from .helpers import latest_run_id

    return latest_run_id(ws)
