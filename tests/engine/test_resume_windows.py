"""Resume after a crash in the narrow windows around the end of a run (state built on disk)."""

from __future__ import annotations

import json

from tests.conftest import Workspace
from tests.durability.helpers import kill_pidfile

ENDS_HALTED = """
runbook: ends-halted
title: Ends halted
version: 1
description: an action with a rollback, then an explicit end
source: tests
steps:
  - id: write
    action: file.write
    with: {path: made.txt, content: "made"}
    rollback: undo
  - id: stop
    end: ANOMALY_HALT
    message: halted on purpose
  - id: undo
    action: file.remove
    with: {path: made.txt}
"""


def test_crash_after_an_end_step_resumes_to_that_outcome_without_rollbacks(ws: Workspace) -> None:
    ws.runbook("ends-halted", ENDS_HALTED)
    assert ws.cli("run", "ends-halted").code == 60
    run_id = json.loads(ws.cli("runs", "--output", "json").out)[0]["run_id"]
    bundle = ws.root / "evidence" / run_id
    lines = (bundle / "events.jsonl").read_text().splitlines(keepends=True)
    end = max(i for i, line in enumerate(lines) if json.loads(line)["type"] == "step_finished")
    (bundle / "events.jsonl").write_text("".join(lines[: end + 1]))
    (bundle / "manifest.json").unlink()
    record_path = ws.root / ".runbook" / "runs" / f"{run_id}.json"
    record = json.loads(record_path.read_text())
    record.update(status="running", pid=999_999, outcome=None, exit_code=None,
                  last_event_hash=json.loads(lines[end])["hash"])
    record_path.write_text(json.dumps(record))

    resumed = ws.cli("resume", run_id)
    assert resumed.code == 60, resumed.text
    assert (ws.root / "made.txt").exists(), "an explicit end must not run the rollbacks"
    assert ws.cli("evidence", "verify", run_id).code == 0


ROLLS_BACK = """
runbook: rolls-back
title: Rolls back
version: 1
description: an action, a failing check, and a rollback that the test kills mid-way
source: tests
steps:
  - id: write
    action: file.write
    with: {path: made.txt, content: "made"}
    rollback: undo
  - id: gate
    check: shell
    with: {argv: ["false"]}
  - id: undo
    action: shell
    with:
      argv: [sh, -c, "if [ -e armed ]; then rm armed; echo $$ > child.pid; exec sleep 30; fi; echo undone >> undo.log"]
"""


def test_a_rollback_killed_mid_way_is_in_doubt_and_rerun_on_request(ws: Workspace) -> None:
    import time

    ws.runbook("rolls-back", ROLLS_BACK)
    (ws.root / "armed").touch()
    proc = ws.popen("run", "rolls-back")
    pid_file = ws.root / "child.pid"
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=10)
    kill_pidfile(pid_file)  # and wait until it is gone: while it lives it holds the run
    run_id = json.loads(ws.cli("runs", "--output", "json").out)[0]["run_id"]

    paused = ws.cli("resume", run_id)
    assert paused.code == 12 and "rollback step 'undo' is in doubt" in paused.err, paused.text
    finished = ws.cli("resume", run_id, "--in-doubt", "rerun")
    assert finished.code == 10, finished.text
    assert (ws.root / "undo.log").read_text() == "undone\n"
    assert ws.cli("evidence", "verify", run_id).code == 0
