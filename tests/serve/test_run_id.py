"""`runbook run --run-id`: how serve names the run it starts (the id is checked, never reused)."""

from __future__ import annotations

import json

from tests.conftest import Workspace
from tests.serve.conftest import RUNBOOKS


def test_run_id_is_used_checked_and_never_reused(ws: Workspace) -> None:
    ws.runbook("hello", RUNBOOKS["hello"])
    run_id = "20261202T010203Z-hello-a1b2c3"
    first = ws.cli("run", "hello", "--no-input", "--run-id", run_id, "--output", "json")
    assert first.code == 0, first.text
    assert json.loads(first.out)["run_id"] == run_id
    again = ws.cli("run", "hello", "--no-input", "--run-id", run_id)
    assert again.code == 2 and "already exists" in again.err
    for bad in ("../../etc/passwd", "20261202T010203Z-hello-XYZ", "x"):
        refused = ws.cli("run", "hello", "--run-id", bad)
        assert refused.code == 2, (bad, refused.text)
    assert len(ws.evidence_dirs()) == 1
