"""Resume after a crash in the narrow windows around the end of a run (state built on disk)."""

from __future__ import annotations

import json

from tests.conftest import Workspace

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
