"""Evidence bundles (SPEC 5): layout, hash chain, tamper detection (exit 30), redaction, show/report."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import StateCorrupt
from engine.evidence import verify_bundle
from tests.trust.helpers import AUDITED

if TYPE_CHECKING:
    from tests.conftest import Workspace

RUNBOOK = str(Path(sys.executable).with_name("runbook"))




def canonical(record: dict[str, Any]) -> str:
    """SPEC 5's canonical JSON: sorted keys, no spaces, UTF-8 as is."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def audited_bundle(ws: Workspace) -> Path:
    """Run `audited` live; its bundle."""
    ws.runbook("audited", AUDITED)
    result = ws.cli("run", "audited", "--no-input", "--output", "json")
    assert result.code == 0, result.text
    return Path(json.loads(result.out)["evidence_dir"])


def records(bundle: Path) -> list[dict[str, Any]]:
    """The records of events.jsonl."""
    return [json.loads(line) for line in (bundle / "events.jsonl").read_text().splitlines()]


# -- layout and chain --------------------------------------------------------------


def test_bundle_layout(ws: Workspace) -> None:
    """events.jsonl, artifacts/ (stdout, stderr), manifest.json with every file's sha256, report.md and .html."""
    bundle = audited_bundle(ws)
    assert bundle.parent == ws.root / "evidence"
    assert {p.name for p in bundle.iterdir()} == {"events.jsonl", "artifacts", "manifest.json", "report.md",
                                                  "report.html"}
    artifacts = sorted(p.name for p in (bundle / "artifacts").iterdir())
    assert any(n.endswith("look-stdout.txt") for n in artifacts)
    assert any(n.endswith("look-stderr.txt") for n in artifacts)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for key in ("run_id", "runbook", "runbook_sha256", "engine_version", "params", "mode", "operator", "host",
                "started_at", "ended_at", "outcome", "exit_code", "last_event_hash"):
        assert key in manifest, key
    assert manifest["runbook"] == "audited" and manifest["outcome"] == "SUCCESS" and manifest["exit_code"] == 0
    assert manifest["operator"] == "tester" and manifest["mode"] == "live"
    runbook_bytes = (ws.root / "runbooks" / "audited.yaml").read_bytes()
    assert manifest["runbook_sha256"] == hashlib.sha256(runbook_bytes).hexdigest()
    on_disk = {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in bundle.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert manifest["files"] == on_disk
    assert manifest["last_event_hash"] == records(bundle)[-1]["hash"]


def test_every_record_is_hash_chained(ws: Workspace) -> None:
    """`hash` = sha256 of the record's canonical JSON without `hash`; `prev` = the previous hash."""
    bundle = audited_bundle(ws)
    prev = "0" * 64
    for seq, record in enumerate(records(bundle), start=1):
        assert record["seq"] == seq
        assert record["ts"].endswith("Z") and "T" in record["ts"]
        assert record["prev"] == prev
        claimed = record.pop("hash")
        assert hashlib.sha256(canonical(record).encode()).hexdigest() == claimed
        prev = claimed
    kinds = [r["type"] for r in records(bundle)]
    assert kinds[0] == "run_started" and kinds[-2:] == ["run_finished", "bundle_sealed"]
    assert {"step_started", "step_finished", "decision", "artifact"} <= set(kinds)


def test_artifact_events_record_each_file_hash(ws: Workspace) -> None:
    """Each artifact event names its file and that file's sha256."""
    bundle = audited_bundle(ws)
    artifacts = [r["data"] for r in records(bundle) if r["type"] == "artifact"]
    assert artifacts
    for data in artifacts:
        assert hashlib.sha256((bundle / data["path"]).read_bytes()).hexdigest() == data["sha256"]


def test_decisions_record_expression_values_and_branch(ws: Workspace) -> None:
    """A decision records each expression evaluated, the values it read and the branch taken."""
    bundle = audited_bundle(ws)
    [decision] = [r for r in records(bundle) if r["type"] == "decision"]
    data = decision["data"]
    assert decision["step"] == "route"
    assert data["taken"] == "params.level > 2 and steps.look.ok" and data["goto"] == "write"
    first, second = data["branches"]
    assert first == {"if": "params.level > 5", "value": False, "read": {"params.level": 3}}
    assert second["value"] is True
    assert second["read"] == {"params.level": 3, "steps.look.ok": True}
    report = (bundle / "report.md").read_text()
    assert "## Decisions" in report and "params.level > 2 and steps.look.ok" in report


# -- verify and tampering ----------------------------------------------------------


def verify(ws: Workspace, bundle: Path) -> tuple[int, str]:
    """`runbook evidence verify BUNDLE`: exit code and all output."""
    result = ws.cli("evidence", "verify", str(bundle))
    assert "Traceback" not in result.text
    return result.code, result.text


def flip(path: Path, offset: int = 10) -> None:
    """Change one byte of a file."""
    data = bytearray(path.read_bytes())
    data[offset] = ord("#") if data[offset] != ord("#") else ord("%")
    path.write_bytes(bytes(data))


def first_artifact(bundle: Path) -> Path:
    """Some artifact file of the bundle."""
    return sorted((bundle / "artifacts").iterdir())[0]


TAMPERING = {
    "a byte of events.jsonl": (lambda b: flip(b / "events.jsonl", 40), "events.jsonl:1"),
    "a byte of an artifact": (lambda b: flip(first_artifact(b), 0), "artifacts/"),
    "a byte of report.md": (lambda b: flip(b / "report.md", 5), "report.md"),
    "a deleted artifact": (lambda b: first_artifact(b).unlink(), "artifacts/"),
    "a deleted report.md": (lambda b: (b / "report.md").unlink(), "report.md"),
    "an added file": (lambda b: (b / "artifacts" / "extra.txt").write_text("x"), "extra.txt"),
    "the last event line deleted": (lambda b: (b / "events.jsonl").write_text(
        "".join((b / "events.jsonl").read_text().splitlines(keepends=True)[:-1])), "records added or removed"),
    "an event line appended": (lambda b: (b / "events.jsonl").write_text(
        (b / "events.jsonl").read_text() + (b / "events.jsonl").read_text().splitlines(keepends=True)[-1]),
        "events.jsonl:"),
}


def test_an_intact_bundle_verifies(ws: Workspace) -> None:
    """Untouched: exit 0, OK with the event and file counts."""
    bundle = audited_bundle(ws)
    code, text = verify(ws, bundle)
    assert code == 0, text
    assert text.startswith("OK ") and "chain intact" in text and "outcome SUCCESS" in text


@pytest.mark.parametrize("name", list(TAMPERING))
def test_any_change_is_detected_naming_the_file(ws: Workspace, pristine: Path, name: str) -> None:
    """Changed, added or removed content: exit 30 naming what broke."""
    bundle = ws.root / "copy" / pristine.name
    shutil.copytree(pristine, bundle)
    tamper, named = TAMPERING[name]
    tamper(bundle)
    code, text = verify(ws, bundle)
    assert code == 30, text
    assert named in text, text


def test_a_rewritten_outcome_in_the_manifest_is_detected(ws: Workspace) -> None:
    """manifest.json claiming another outcome than the event log: exit 30 naming manifest.json."""
    bundle = audited_bundle(ws)
    manifest = bundle / "manifest.json"
    original = manifest.read_text()
    assert '"outcome": "SUCCESS"' in original
    manifest.write_text(original.replace('"outcome": "SUCCESS"', '"outcome": "BUSINESS_SKIP"'))
    code, text = verify(ws, bundle)
    assert code == 30, text
    assert "manifest.json" in text


def test_verify_by_run_id(ws: Workspace) -> None:
    """`evidence verify RUN_ID` finds the bundle of a run."""
    bundle = audited_bundle(ws)
    assert ws.cli("evidence", "verify", bundle.name).code == 0


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One intact bundle, made once for the property test."""
    root = tmp_path_factory.mktemp("pristine")
    (root / "runbooks").mkdir()
    (root / "runbooks" / "audited.yaml").write_text(textwrap.dedent(AUDITED).lstrip())
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    done = subprocess.run([RUNBOOK, "run", "audited", "--no-input", "--output", "json"], cwd=root,
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return Path(json.loads(done.stdout)["evidence_dir"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.floats(min_value=0, max_value=1, exclude_max=True), mask=st.integers(min_value=1, max_value=255))
def test_flipping_any_byte_of_the_event_log_is_detected(pristine: Path, tmp_path: Path, position: float,
                                                        mask: int) -> None:
    """XOR any single byte of events.jsonl with any non-zero mask: verify raises StateCorrupt."""
    copy = tmp_path / "bundle"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(pristine, copy)
    log = copy / "events.jsonl"
    data = bytearray(log.read_bytes())
    index = int(position * len(data))
    data[index] ^= mask
    log.write_bytes(bytes(data))
    with pytest.raises(StateCorrupt):
        verify_bundle(copy)


# -- redaction ---------------------------------------------------------------------

SECRET = "sk-planted-9f8e7d6c5b4a"
PASSWORD = "hunter2hunter2"

LEAKY = """
runbook: leaky
title: Leaky
version: 1
env: [API_TOKEN_X]
steps:
  - id: echo
    check: shell
    with: {{argv: [sh, -c, "echo token=$API_TOKEN_X; echo password={password}; echo {{{{ env.API_TOKEN_X }}}} >&2"]}}
    {evidence}
  - id: write
    action: file.write
    with: {{path: out.txt, content: "key {{{{ env.API_TOKEN_X }}}}\\n"}}
  - id: route
    decide:
      - if: env.API_TOKEN_X == '{secret}'
        goto: stop
      - else: stop
  - id: stop
    end: SUCCESS
    message: "done with {{{{ env.API_TOKEN_X }}}} after {{{{ steps.echo.result.stdout }}}}"
"""


def all_bytes(*roots: Path) -> bytes:
    """Every byte of every file under the given directories."""
    return b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


def leaky_run(ws: Workspace, evidence: str = "") -> Path:
    """Run `leaky` with the planted secret in API_TOKEN_X; its bundle."""
    ws.runbook("leaky", LEAKY.format(password=PASSWORD, secret=SECRET, evidence=evidence))
    result = ws.cli("run", "leaky", "--no-input", "--output", "json", env={"API_TOKEN_X": SECRET})
    assert result.code == 0, result.text
    assert (ws.root / "out.txt").read_text() == f"key {SECRET}\n"  # the action itself got the real value
    return Path(json.loads(result.out)["evidence_dir"])


def test_secrets_never_appear_in_the_bundle_or_the_state_dir(ws: Workspace) -> None:
    """An env: value (in stdout, stderr, a file.write, a decision and a message) and a password: masked everywhere."""
    bundle = leaky_run(ws)
    everything = all_bytes(bundle, ws.root / ".runbook")
    assert SECRET.encode() not in everything
    assert PASSWORD.encode() not in everything
    assert b"***" in (bundle / "events.jsonl").read_bytes()
    assert ws.cli("evidence", "verify", str(bundle)).code == 0
    for command in (("evidence", "show", str(bundle)), ("evidence", "report", str(bundle)), ("runs",)):
        shown = ws.cli(*command)
        assert SECRET not in shown.text and PASSWORD not in shown.text, command


def test_declared_evidence_artifacts_are_redacted_too(ws: Workspace) -> None:
    """`evidence: [stdout]` keeps stdout as a JSON artifact: no secret or credential in it either."""
    bundle = leaky_run(ws, evidence="evidence: [stdout]")
    everything = all_bytes(bundle, ws.root / ".runbook")
    assert SECRET.encode() not in everything
    assert PASSWORD.encode() not in everything


# -- show and report -----------------------------------------------------------------


def test_evidence_show_lists_the_events(ws: Workspace) -> None:
    """`evidence show` prints one line per event; `--output json` the manifest and events."""
    bundle = audited_bundle(ws)
    shown = ws.cli("evidence", "show", bundle.name)
    assert shown.code == 0, shown.text
    lines = shown.out.splitlines()
    assert len(lines) == len(records(bundle))
    assert "run_started" in lines[0] and "run_finished" in lines[-2] and "bundle_sealed" in lines[-1]
    doc = json.loads(ws.cli("evidence", "show", str(bundle), "--output", "json").out)
    assert doc["manifest"]["run_id"] == bundle.name
    assert [e["seq"] for e in doc["events"]] == list(range(1, len(lines) + 1))


def test_evidence_report_markdown_and_html(ws: Workspace) -> None:
    """`evidence report` prints the Markdown report; `--format html -o F` writes an HTML page."""
    bundle = audited_bundle(ws)
    markdown = ws.cli("evidence", "report", bundle.name)
    assert markdown.code == 0
    assert markdown.out.startswith(f"# Run {bundle.name}: audited")
    for section in ("## Timeline", "## Decisions", "## Artifacts", "## How to verify"):
        assert section in markdown.out
    target = ws.root / "report.html"
    html = ws.cli("evidence", "report", bundle.name, "--format", "html", "-o", str(target))
    assert html.code == 0, html.text
    page = target.read_text()
    assert page.startswith("<!doctype html>") and "</html>" in page
    assert "<h2 id=\"timeline\">Timeline</h2>" in page and "audited" in page
    assert page == (bundle / "report.html").read_text()  # the same page the seal wrote
    assert ws.cli("evidence", "verify", str(bundle)).code == 0  # writing a report elsewhere changes nothing
