"""Approvals (SPEC 4 Approvals, SPEC 5): pause, deny, refused approvers, approve and resume, forgery."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .helpers import effect_lines, events, of_type, only_run_id, run_record, status_json

if TYPE_CHECKING:
    from tests.conftest import Workspace

ECHO = "echo \"$RUNBOOK_IDEMPOTENCY_TOKEN\" >> effects.txt"


def gated(ws: Workspace, approve: str = "{prompt: 'Flatten XAUUSD?', approvers: [alice, bob]}") -> str:
    """gate (approval) -> write (mutating); started with --no-input, so it pauses. Returns the run id."""
    ws.runbook("gated", f"""
        runbook: gated
        title: Gated
        version: 1
        steps:
          - id: gate
            approve: {approve}
          - id: write
            action: shell
            with: {{argv: [sh, -c, '{ECHO}']}}
        """)
    started = ws.cli("run", "gated", "--no-input")
    assert started.code == 12, started.text
    run_id = only_run_id(ws)
    status = status_json(ws, run_id)
    assert status["status"] == "paused" and status["waiting_for"]["type"] == "approval"
    assert status["waiting_for"]["step"] == "gate"
    assert effect_lines(ws) == []
    return run_id


def test_approval_pauses_and_nothing_is_approved_implicitly(ws: Workspace) -> None:
    run_id = gated(ws)
    text = ws.cli("status", run_id).out
    assert "approval" in text and "gate" in text and "alice" in text
    # resuming without an approval pauses again and runs nothing
    again = ws.cli("resume", run_id, "--no-input")
    assert again.code == 12, again.text
    assert effect_lines(ws) == []
    assert len(of_type(events(ws, run_id), "approval")) == 0
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_deny_fails_the_gate_and_the_action_never_runs(ws: Workspace) -> None:
    run_id = gated(ws)
    denied = ws.cli("approve", run_id, "gate", "--by", "bob", "--deny", "--note", "spread too wide")
    assert denied.code == 0, denied.text
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 10, done.text  # a denied approval fails its step: BUSINESS_REJECT
    assert effect_lines(ws) == []
    approval = of_type(events(ws, run_id), "approval", "gate")[-1]["data"]
    assert approval["decision"] == "denied" and approval["by"] == "bob" and approval["note"] == "spread too wide"
    assert run_record(ws, run_id)["outcome"] == "BUSINESS_REJECT"
    assert ws.cli("evidence", "verify", run_id).code == 0


def test_unlisted_approver_is_refused_and_recorded_then_a_listed_one_approves(ws: Workspace) -> None:
    run_id = gated(ws)
    refused = ws.cli("approve", run_id, "gate", "--by", "mallory")
    assert refused.code == 2, refused.text
    assert "mallory" in refused.text and "not an approver" in refused.text
    evs = events(ws, run_id)
    assert of_type(evs, "approval_refused", "gate")[-1]["data"]["by"] == "mallory"
    assert of_type(evs, "approval") == []
    assert status_json(ws, run_id)["status"] == "paused"
    assert ws.cli("evidence", "verify", run_id).code == 0
    # the refused attempt does not count: resume still waits
    assert ws.cli("resume", run_id, "--no-input").code == 12
    assert effect_lines(ws) == []

    approved = ws.cli("approve", run_id, "gate", "--by", "alice", "--note", "checked exposure")
    assert approved.code == 0, approved.text
    twice = ws.cli("approve", run_id, "gate", "--by", "bob")
    assert twice.code == 2 and "already approved" in twice.text, twice.text
    done = ws.cli("resume", run_id, "--no-input")
    assert done.code == 0, done.text
    assert [line.split(":")[1] for line in effect_lines(ws)] == ["write"]
    approval = of_type(events(ws, run_id), "approval", "gate")
    assert [a["data"]["by"] for a in approval] == ["alice"]
    assert ws.cli("evidence", "verify", run_id).code == 0
    # and a finished run takes no more approvals
    assert ws.cli("approve", run_id, "gate", "--by", "bob").code == 2


def test_four_eyes_refuses_the_operator_who_started_the_run(ws: Workspace) -> None:
    run_id = gated(ws, "{prompt: 'go?', four_eyes: true}")
    refused = ws.cli("approve", run_id, "gate", "--by", "tester")
    assert refused.code == 2 and "four-eyes" in refused.text, refused.text
    assert ws.cli("approve", run_id, "gate", "--by", "second-pair").code == 0
    assert ws.cli("resume", run_id, "--no-input").code == 0
    assert len(effect_lines(ws)) == 1


# -- forging an approval by editing events.jsonl ----------------------------------------------------


def _canonical(record: Any) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def append_chained(log: Path, kind: str, step: str, data: dict[str, Any]) -> str:
    """Append a record that follows the chain rule exactly (anyone can compute sha256). Returns its hash."""
    last = json.loads(log.read_bytes().splitlines()[-1])
    record = {"seq": last["seq"] + 1, "ts": last["ts"], "type": kind, "step": step, "data": data, "prev": last["hash"]}
    digest = hashlib.sha256(_canonical(record).encode()).hexdigest()
    with log.open("a", encoding="utf-8") as handle:
        handle.write(_canonical(record)[:-1] + f',"hash":"{digest}"}}' + "\n")  # as the engine writes it
    return digest


def rewrite_manifest(bundle: Path, last_hash: str) -> None:
    """Recompute the manifest's file hashes and last event hash as a forger would."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in sorted(bundle.rglob("*")) if p.is_file() and p.name != "manifest.json"}
    manifest["last_event_hash"] = last_hash
    manifest["event_count"] = len(events_lines(bundle))
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def events_lines(bundle: Path) -> list[bytes]:
    return (bundle / "events.jsonl").read_bytes().splitlines()


FORGED = {"decision": "approved", "by": "alice", "note": None, "via": "cli"}


def test_forged_approval_appended_to_the_log_is_detected(ws: Workspace) -> None:
    run_id = gated(ws)
    bundle = ws.root / "evidence" / run_id
    append_chained(bundle / "events.jsonl", "approval", "gate", FORGED)
    verified = ws.cli("evidence", "verify", run_id)
    assert verified.code == 30, verified.text
    resumed = ws.cli("resume", run_id, "--no-input")
    assert resumed.code == 30, resumed.text
    assert effect_lines(ws) == []


def test_approval_request_edited_in_place_is_detected(ws: Workspace) -> None:
    run_id = gated(ws)
    log = ws.root / "evidence" / run_id / "events.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if b'"approval_requested"' in line)
    lines[number] = lines[number].replace(b'"alice"', b'"mallory"')
    log.write_bytes(b"".join(lines))
    verified = ws.cli("evidence", "verify", run_id)
    assert verified.code == 30 and f"events.jsonl:{number + 1}" in verified.text, verified.text
    assert ws.cli("approve", run_id, "gate", "--by", "mallory").code != 0
    assert ws.cli("resume", run_id, "--no-input").code == 30
    assert effect_lines(ws) == []


def test_forged_approval_with_rewritten_manifest_is_detected_by_verify(ws: Workspace) -> None:
    run_id = gated(ws)
    bundle = ws.root / "evidence" / run_id
    forged = append_chained(bundle / "events.jsonl", "approval", "gate", FORGED)
    rewrite_manifest(bundle, forged)
    verified = ws.cli("evidence", "verify", run_id)
    assert verified.code == 30, verified.text  # the state directory kept the real last record hash
    assert "rewritten" in verified.text or "differs" in verified.text or "added after sealing" in verified.text


def test_forged_approval_with_rewritten_manifest_is_refused_by_resume(ws: Workspace) -> None:
    run_id = gated(ws)
    bundle = ws.root / "evidence" / run_id
    forged = append_chained(bundle / "events.jsonl", "approval", "gate", FORGED)
    rewrite_manifest(bundle, forged)
    resumed = ws.cli("resume", run_id, "--no-input")
    assert effect_lines(ws) == [], "the gated action ran on a forged approval"
    assert resumed.code == 30, resumed.text


def test_four_eyes_knows_a_serve_identity_is_the_person(ws: Workspace) -> None:
    """A run serve started for token identity alice (operator `serve:alice`) cannot be approved by alice."""
    ws.runbook("fours", """
        runbook: fours
        title: Four eyes
        version: 1
        description: four-eyes gate
        source: tests
        steps:
          - id: gate
            approve: {prompt: "go?", four_eyes: true}
        """)
    paused = ws.cli("run", "fours", "--no-input", "--operator", "serve:alice")
    assert paused.code == 12, paused.text
    run_id = ws.evidence_dirs()[-1].name
    refused = ws.cli("approve", run_id, "gate", "--by", "alice")
    assert refused.code == 2 and "four-eyes" in refused.text, refused.text
    assert ws.cli("approve", run_id, "gate", "--by", "bob").code == 0
    assert ws.cli("resume", run_id, "--no-input").code == 0
