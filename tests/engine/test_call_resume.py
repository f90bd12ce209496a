"""Resuming a parent whose sub-runbook paused, finished, or never got to start."""

from __future__ import annotations

import json
import shutil

from tests.conftest import Workspace

CHILD = """
runbook: child
title: Child
version: 1
description: asks for an approval, then writes a file
source: tests
steps:
  - id: gate
    approve: {prompt: "go?"}
  - id: write
    action: file.write
    with: {path: child.txt, content: "done"}
"""

PARENT = """
runbook: parent
title: Parent
version: 1
description: calls the child
source: tests
steps:
  - id: sub
    call: child
  - id: after
    action: file.write
    with: {path: parent.txt, content: "{{ steps.sub.result.outcome }}"}
"""


def paused_parent(ws: Workspace) -> tuple[str, str]:
    ws.runbook("child", CHILD)
    ws.runbook("parent", PARENT)
    assert ws.cli("run", "parent", "--no-input").code == 12
    runs = {r["runbook"]: r for r in json.loads(ws.cli("runs", "--output", "json").out)}
    assert runs["parent"]["waiting_for"]["type"] == "call"
    return runs["parent"]["run_id"], runs["child"]["run_id"]


def test_parent_resumes_after_the_childs_approval(ws: Workspace) -> None:
    parent, child = paused_parent(ws)
    assert ws.cli("approve", child, "gate", "--by", "alice").code == 0
    resumed = ws.cli("resume", parent)
    assert resumed.code == 0, resumed.text
    assert (ws.root / "child.txt").read_text() == "done"
    assert (ws.root / "parent.txt").read_text() == "SUCCESS"
    for run_id in (parent, child):
        assert ws.cli("evidence", "verify", run_id).code == 0


def test_a_child_that_never_started_is_started_with_its_recorded_id(ws: Workspace) -> None:
    parent, child = paused_parent(ws)
    (ws.root / ".runbook" / "runs" / f"{child}.json").unlink()
    shutil.rmtree(ws.root / "evidence" / child)
    again = ws.cli("resume", parent, "--no-input")
    assert again.code == 12, again.text
    assert (ws.root / ".runbook" / "runs" / f"{child}.json").exists()
    assert ws.cli("approve", child, "gate", "--by", "alice").code == 0
    assert ws.cli("resume", parent).code == 0
    assert (ws.root / "parent.txt").read_text() == "SUCCESS"
