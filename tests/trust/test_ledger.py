"""SPEC 8 run ledger: every seal appends to `<evidence_dir>/ledger.jsonl`; `evidence audit` checks it all."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.trust.helpers import AUDITED, cli, run

GATED = """
runbook: gated
title: Gated change
version: 1
steps:
  - id: ok_to_write
    approve: {prompt: "write out.txt?"}
  - id: write
    action: file.write
    with: {path: out.txt, content: "approved\\n"}
  - id: done
    end: SUCCESS
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A workspace with `audited` and `gated` (unsigned)."""
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "audited.yaml").write_text(textwrap.dedent(AUDITED).lstrip())
    (tmp_path / "runbooks" / "gated.yaml").write_text(textwrap.dedent(GATED).lstrip())
    return tmp_path


def ledger(root: Path) -> list[dict[str, object]]:
    """The ledger's entries."""
    return [json.loads(line) for line in (root / "evidence" / "ledger.jsonl").read_text().splitlines()]


def test_every_seal_appends_a_chained_entry(root: Path) -> None:
    """A paused run sealed, approved (sealed), resumed (sealed): three entries, the last naming its manifest."""
    import hashlib

    bundle = run(root, "gated", code=12)
    run_id = bundle.name
    cli(root, "approve", run_id, "ok_to_write", "--by", "alice", check=0)
    cli(root, "resume", run_id, check=0)
    other = run(root)
    entries = ledger(root)
    assert [e["run_id"] for e in entries] == [run_id] * 3 + [other.name]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    prev = "0" * 64
    for entry in entries:
        assert set(entry) == {"seq", "run_id", "manifest_sha256", "prev", "hash"}
        assert entry["prev"] == prev
        prev = str(entry["hash"])
    assert entries[2]["manifest_sha256"] == hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    audit = cli(root, "evidence", "audit", check=0)
    assert f"ok   {run_id}: SUCCESS" in audit.stdout and "0 problems" in audit.stdout


def test_audit_names_a_deleted_bundle(root: Path) -> None:
    """A bundle removed from the evidence directory: exit 30, 'missing'."""
    first, second = run(root), run(root)
    shutil.rmtree(first)
    done = cli(root, "evidence", "audit", check=30)
    assert f"{first}: bundle listed in the ledger is missing" in done.stdout
    assert f"ok   {second.name}" in done.stdout


def test_audit_names_a_replaced_bundle(root: Path) -> None:
    """A bundle replaced by an older, self-consistent version of itself (a paused seal): 'replaced'."""
    bundle = run(root, "gated", code=12)
    paused = root / "paused-copy"
    shutil.copytree(bundle, paused)
    cli(root, "approve", bundle.name, "ok_to_write", "--by", "alice", check=0)
    cli(root, "resume", bundle.name, check=0)
    shutil.rmtree(bundle)
    shutil.copytree(paused, bundle)
    from engine.evidence import verify_bundle

    verify_bundle(paused)  # the old bundle on its own is intact; only the ledger and state directory know better
    done = cli(root, "evidence", "audit", check=30)
    assert f"{bundle / 'manifest.json'}: not the manifest the ledger recorded" in done.stdout
    (root / ".runbook" / "runs" / f"{bundle.name}.json").unlink()  # even without the state directory's record
    replaced = cli(root, "evidence", "verify", bundle.name, check=30)
    assert "not the manifest" in replaced.stderr and "recorded last" in replaced.stderr


def test_audit_names_a_bundle_not_in_the_ledger(root: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """An intact bundle from elsewhere dropped into the evidence directory: 'not in the ledger'."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "runbooks").mkdir()
    (elsewhere / "runbooks" / "audited.yaml").write_text(textwrap.dedent(AUDITED).lstrip())
    foreign = run(elsewhere)
    run(root)
    shutil.copytree(foreign, root / "evidence" / foreign.name)
    done = cli(root, "evidence", "audit", check=30)
    assert f"{root / 'evidence' / foreign.name}: bundle is not in the ledger" in done.stdout


def test_audit_names_an_edited_ledger_and_a_broken_bundle(root: Path) -> None:
    """A removed ledger line breaks the chain; a tampered bundle fails as verify would."""
    first, second = run(root), run(root)
    path = root / "evidence" / "ledger.jsonl"
    original = path.read_text()
    path.write_text(original.splitlines(keepends=True)[1])
    assert "ledger.jsonl:1: ledger entry seq 2 does not follow" in cli(root, "evidence", "audit", check=30).stdout
    path.write_text(original)
    manifest = json.loads((second / "manifest.json").read_text())
    manifest["operator"] = "mallory"
    (second / "manifest.json").write_text(json.dumps(manifest))
    done = cli(root, "evidence", "audit", check=30)
    assert "not the manifest the ledger recorded" in done.stdout and f"ok   {first.name}" in done.stdout


def test_audit_since_and_keys(root: Path) -> None:
    """--since skips older runs; --key requires every audited bundle to be signed by that key."""
    run(root)
    assert "1 bundles verified" in cli(root, "evidence", "audit", "--since", "2000-01-01", check=0).stdout
    assert "0 bundles verified" in cli(root, "evidence", "audit", "--since", "2999-01-01", check=0).stdout
    assert cli(root, "evidence", "audit", "--since", "yesterday", check=2)
    cli(root, "keys", "generate", "signer", "--dir", "keys", check=0)
    unsigned = cli(root, "evidence", "audit", "--key", "keys/signer.pub", check=30)
    assert "not signed, but --key asks for a signature" in unsigned.stdout
    (root / "runbook.yaml").write_text("signing: {key: keys/signer.key}\n")
    signed = run(root)
    since = json.loads((signed / "manifest.json").read_text())["started_at"]
    done = cli(root, "evidence", "audit", "--key", "keys/signer.pub", "--since", since, check=0)
    assert "1 signatures checked" in done.stdout


def test_concurrent_seals_never_fork_the_ledger(root: Path) -> None:
    """Six runs sealing at once: six entries, one unbroken chain, every bundle audited."""
    import subprocess

    from tests.trust.helpers import RUNBOOK, env

    procs = [subprocess.Popen([RUNBOOK, "run", "audited", "--no-input"], cwd=root, env=env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(6)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    entries = ledger(root)
    assert [e["seq"] for e in entries] == [1, 2, 3, 4, 5, 6]
    assert len({e["run_id"] for e in entries}) == 6
    assert "6 bundles verified" in cli(root, "evidence", "audit", check=0).stdout
