"""Signed approvals (SPEC 8): `approvals: {require_signature, keys}` and `runbook approve --key`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from tests.durability.helpers import effect_lines, events, of_type, only_run_id, status_json

if TYPE_CHECKING:
    from tests.conftest import Workspace

ECHO = "echo \"$RUNBOOK_IDEMPOTENCY_TOKEN\" >> effects.txt"


def signed(ws: Workspace) -> str:
    """A workspace whose approvals must be signed by alice or bob; a run paused at its gate."""
    for name in ("alice", "bob", "mallory"):
        made = ws.cli("keys", "generate", name, "--dir", "keys")
        assert made.code == 0, made.text
    ws.write("runbook.yaml", """
        approvals:
          require_signature: true
          keys: {alice: keys/alice.pub, bob: keys/bob.pub}
        """)
    ws.runbook("gated", f"""
        runbook: gated
        title: Gated
        version: 1
        steps:
          - id: gate
            approve: {{prompt: 'Flatten?', approvers: [alice, bob]}}
          - id: write
            action: shell
            with: {{argv: [sh, -c, '{ECHO}']}}
        """)
    started = ws.cli("run", "gated", "--no-input")
    assert started.code == 12, started.text
    return only_run_id(ws)


def stored(ws: Workspace, run_id: str) -> list[Path]:
    return sorted((ws.root / ".runbook" / "approvals" / run_id).glob("*.json"))


def test_signed_approval_counts_and_is_recorded(ws: Workspace) -> None:
    run_id = signed(ws)
    given = ws.cli("approve", run_id, "gate", "--by", "alice", "--key", "keys/alice.key", "--note", "ok")
    assert given.code == 0, given.text
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 0, done.text
    assert len(effect_lines(ws)) == 1
    record = of_type(events(ws, run_id), "approval", "gate")[-1]["data"]
    assert record["decision"] == "approved" and record["by"] == "alice"
    assert record["signature"] and len(record["key_id"]) == 64
    entry = json.loads(stored(ws, run_id)[0].read_text())
    assert entry["signature"] == record["signature"] and entry["key_id"] == record["key_id"]
    assert ws.cli("evidence", "verify", run_id).code == 0
    assert "alice.key" not in "".join(p.read_text() for p in stored(ws, run_id))


def test_unsigned_approval_is_refused_and_recorded(ws: Workspace) -> None:
    run_id = signed(ws)
    unsigned = ws.cli("approve", run_id, "gate", "--by", "alice")
    assert unsigned.code == 2, unsigned.text
    assert "signed" in unsigned.err and "--key" in unsigned.err
    refused = of_type(events(ws, run_id), "approval_refused", "gate")
    assert refused and refused[-1]["data"]["by"] == "alice" and "signed" in refused[-1]["data"]["reason"]
    assert json.loads(stored(ws, run_id)[0].read_text())["refused"]
    still = ws.cli("resume", run_id, "--no-input")
    assert still.code == 12, still.text
    assert effect_lines(ws) == []
    # a signed approval afterwards counts
    assert ws.cli("approve", run_id, "gate", "--by", "bob", "--key", "keys/bob.key").code == 0
    assert ws.cli("resume", run_id, "--no-input").code == 0
    assert len(effect_lines(ws)) == 1


def test_wrong_key_is_refused(ws: Workspace) -> None:
    run_id = signed(ws)
    for key in ("keys/mallory.key", "keys/bob.key"):
        wrong = ws.cli("approve", run_id, "gate", "--by", "alice", "--key", key)
        assert wrong.code == 2, wrong.text
        assert "does not verify" in wrong.err
    refused = of_type(events(ws, run_id), "approval_refused", "gate")
    assert len(refused) == 2
    assert ws.cli("resume", run_id, "--no-input").code == 12
    assert effect_lines(ws) == []
    assert status_json(ws, run_id)["status"] == "paused"


def test_approver_without_a_configured_key_is_refused(ws: Workspace) -> None:
    run_id = signed(ws)
    ws.write("runbook.yaml", """
        approvals:
          require_signature: true
          keys: {alice: keys/alice.pub}
        """)
    refused = ws.cli("approve", run_id, "gate", "--by", "bob", "--key", "keys/bob.key")
    assert refused.code == 2, refused.text
    assert "no public key" in refused.err


def test_edited_stored_approval_stops_resume(ws: Workspace) -> None:
    run_id = signed(ws)
    assert ws.cli("approve", run_id, "gate", "--by", "alice", "--key", "keys/alice.key", "--deny").code == 0
    path = stored(ws, run_id)[0]
    entry = json.loads(path.read_text())
    entry["decision"] = "approved"
    path.write_text(json.dumps(entry))
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 30, resumed.text
    assert effect_lines(ws) == []


def test_forged_pending_approval_stops_resume(ws: Workspace) -> None:
    run_id = signed(ws)
    assert ws.cli("approve", run_id, "gate", "--by", "alice", "--key", "keys/alice.key", "--deny").code == 0
    entry = json.loads(stored(ws, run_id)[0].read_text())
    # a second decision written into the box by hand, reusing alice's signature of her denial
    # (another id: the last hex digit changed, never to itself, or the forgery would replace the recorded one)
    forged = {**entry, "id": entry["id"][:-1] + ("e" if entry["id"].endswith("f") else "f"), "decision": "approved"}
    (stored(ws, run_id)[0].parent / f"{forged['id']}.json").write_text(json.dumps(forged))
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 30, resumed.text
    assert "does not verify" in resumed.err
    assert effect_lines(ws) == []


def test_terminal_approval_is_refused_when_signatures_are_required(ws: Workspace) -> None:
    from tests.engine.test_operator_mode import drive

    run_id = signed(ws)
    code, screen = drive(ws, ["resume", run_id], [("approver name", "alice"), ("approve / deny / pause?", "a")])
    assert code == 12, screen
    assert "must be signed" in screen and "--key" in screen
    assert of_type(events(ws, run_id), "approval", "gate") == []
    assert effect_lines(ws) == []


def test_config_names_a_bad_key(ws: Workspace) -> None:
    ws.write("keys/alice.pub", "not a key\n")
    ws.write("runbook.yaml", """
        approvals:
          require_signature: true
          keys: {alice: keys/alice.pub}
        """)
    bad = ws.cli("list")
    assert bad.code == 20, bad.text
    assert "runbook.yaml:3" in bad.err and "approvals.keys.alice" in bad.err


def test_an_unsigned_approval_through_the_workspace_api_is_refused(ws: Workspace) -> None:
    """What serve calls for POST /runs/RUN_ID/approve: no signature, so refused (serve answers 403)."""
    import pytest

    from engine.config import load_config
    from engine.console import QuietConsole
    from engine.errors import ApprovalRefused
    from engine.session import Workspace as Engine

    run_id = signed(ws)
    engine = Engine(load_config(cwd=ws.root), QuietConsole())
    with pytest.raises(ApprovalRefused, match="^approval refused: approvals must be signed"):
        engine.approve(run_id, "gate", "alice", None, False, via="serve")
    refused = of_type(events(ws, run_id), "approval_refused", "gate")[-1]["data"]
    assert refused["via"] == "serve" and refused["by"] == "alice"
