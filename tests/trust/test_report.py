"""SPEC 8 reports: report.html with every bundle, self-contained, the summary first; report.md the same facts."""

from __future__ import annotations

import html.parser
import json
import textwrap
from pathlib import Path

import pytest

from tests.trust.helpers import cli, run

GATED = """
runbook: gated
title: Gated change
version: 1
params:
  note: {type: string, default: short}
steps:
  - id: ok_to_write
    approve: {prompt: "write out.txt with {{ params.note | truncate(20) }}?"}
  - id: write
    action: file.write
    with: {path: out.txt, content: "approved\\nline two\\n"}
    rollback: undo
  - id: confirm
    check: shell
    with: {argv: [sh, -c, "grep -q approved out.txt && exit {{ 1 if params.note == 'fail' else 0 }}"]}
  - id: done
    end: SUCCESS
  - id: undo
    action: file.remove
    with: {path: out.txt}
"""


_BLOCKS = {"p", "div", "dt", "dd", "li", "ul", "tr", "td", "th", "h1", "h2", "br", "pre", "table", "details",
           "summary", "style", "title"}


class _Page(html.parser.HTMLParser):
    """Text and the tags that would fetch something."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.fetching: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "link", "img", "iframe") or any(k in ("src", "href") for k, _ in attrs):
            self.fetching.append(tag)
        if tag in _BLOCKS:
            self.text.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCKS:
            self.text.append(" ")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page(path: Path) -> tuple[str, list[str]]:
    """The visible text of an HTML file (whitespace collapsed) and its fetching tags."""
    parser = _Page()
    parser.feed(path.read_text())
    return " ".join("".join(parser.text).split()), parser.fetching


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A workspace with the `gated` runbook."""
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "gated.yaml").write_text(textwrap.dedent(GATED).lstrip())
    return tmp_path


def test_report_html_summary_first_with_approvals_and_changes(root: Path) -> None:
    """Outcome, what changed, approvals (who, what they were shown, when) and verification come before the
    timeline; nothing is fetched from elsewhere; `evidence report --format html` prints the same page."""
    long_note = "n" * 300
    bundle = run(root, "gated", "--param", f"note={long_note}", code=12)
    cli(root, "approve", bundle.name, "ok_to_write", "--by", "alice", "--note", "diff checked", check=0)
    cli(root, "resume", bundle.name, check=0)
    text, fetching = page(bundle / "report.html")
    assert fetching == []
    summary = text.partition("Timeline")[0]
    assert "Outcome SUCCESS (exit 0)" in summary
    assert "What changed write" in summary
    approval = [e for e in map(json.loads, (bundle / "events.jsonl").read_text().splitlines()) if e["type"] == "approval"][0]
    assert f"approved by alice at {approval['ts']} via cli, step ok_to_write; shown: “write out.txt with" in summary
    assert "note: diff checked" in summary
    assert "hash-chained records" in summary and "not signed" in summary
    assert long_note in text  # params in full, not truncated
    markdown = (bundle / "report.md").read_text()
    assert markdown.index("## Summary") < markdown.index("## Timeline")
    assert "approved by alice" in markdown and "**What changed:** `write`" in markdown
    target = root / "copy.html"
    cli(root, "evidence", "report", bundle.name, "--format", "html", "-o", str(target), check=0)
    assert target.read_text() == (bundle / "report.html").read_text()


def test_report_labels_rollbacks_and_failures(root: Path) -> None:
    """A failed check after an action: the rollback is in the summary and its timeline rows are labelled."""
    bundle = run(root, "gated", "--param", "note=fail", code=12)
    cli(root, "approve", bundle.name, "ok_to_write", "--by", "alice", check=0)
    cli(root, "resume", bundle.name, check=10)
    text, _ = page(bundle / "report.html")
    summary = text.partition("Timeline")[0]
    assert "Outcome BUSINESS_REJECT (exit 10)" in summary and "Why step 'confirm' failed" in summary
    assert "Rolled back undo ok" in summary
    assert "step_finished (rollback) undo" in text
    assert "## Rollbacks" in (bundle / "report.md").read_text()


def test_report_renders_the_diff_a_dry_run_planned(root: Path) -> None:
    """A dry-run of file.write over an existing file: the unified diff is shown, lines marked added/removed."""
    (root / "out.txt").write_text("old content\n")
    bundle = run(root, "gated", "--dry-run", code=10)  # the check reads the real, unchanged out.txt
    page_html = (bundle / "report.html").read_text()
    assert '<h2 id="diffs">Diffs</h2>' in page_html
    assert '<span class="del">-old content</span>' in page_html and '<span class="add">+approved</span>' in page_html
    text, _ = page(bundle / "report.html")
    assert "dry-run: nothing was changed" in text and "Planned, not done" in text
    assert "```diff" in (bundle / "report.md").read_text()


def test_report_of_a_signed_bundle_names_the_signer(root: Path) -> None:
    """With `signing:` the verification line names the key id and how to check it."""
    cli(root, "keys", "generate", "signer", "--dir", "keys", check=0)
    (root / "runbook.yaml").write_text("signing: {key: keys/signer.key}\n")
    bundle = run(root, "gated", "--dry-run", code=10)  # the check reads the real, unchanged out.txt
    kid = json.loads((bundle / "attestation.dsse.json").read_text())["signatures"][0]["keyid"]
    text, _ = page(bundle / "report.html")
    assert f"signed: Ed25519 key id {kid}" in text.partition("Timeline")[0]
    assert f"runbook evidence verify {bundle.name} --key SIGNER.pub" in text


def test_postmortem_fills_seed_004s_template(root: Path) -> None:
    """Incident Details, Timeline, Analysis, Actions, Lessons Learned: facts filled, analysis left for people."""
    bundle = run(root, "gated", "--param", "note=fail", code=12)
    cli(root, "approve", bundle.name, "ok_to_write", "--by", "alice", check=0)
    cli(root, "resume", bundle.name, check=10)
    done = cli(root, "evidence", "postmortem", bundle.name, check=0)
    text = done.stdout
    headings = ["### Incident Details", "### Timeline", "### Analysis", "### Actions", "### Lessons Learned"]
    assert [text.index(h) for h in headings] == sorted(text.index(h) for h in headings)
    for field in ("| Date/Time |", "| Duration |", "| Severity |", "| Impact |", "| Root Cause |"):
        assert field in text
    assert "Response began: runbook gated started by tester" in text
    assert "Approval `ok_to_write` approved by alice" in text
    assert "Step `confirm` failed" in text and "Rollback `undo`: ok" in text
    assert "Run ended BUSINESS_REJECT (exit 10)" in text
    assert "| Action | Owner | Deadline | Status |" in text and "| write: " in text
    assert "**Why did it happen?**\n\n_(to be written)_" in text
    out = root / "pm.md"
    cli(root, "evidence", "postmortem", bundle.name, "-o", str(out), check=0)
    assert out.read_text() == text.rstrip("\n") + "\n" or out.read_text() + "\n" == text
    manifest = bundle / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"operator": "tester"', '"operator": "mallory"'))
    assert "manifest.json: operator" in cli(root, "evidence", "postmortem", bundle.name, check=30).stderr
