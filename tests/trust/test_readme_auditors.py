"""The README's "Evidence for auditors" commands, run as a reader would (in the tour's sim workspace)."""

from __future__ import annotations

import json

from tests.conftest import SimWorkspace


def test_evidence_for_auditors(sim: SimWorkspace) -> None:
    """keys generate, signing in runbook.yaml, run, verify --key, audit --key, postmortem."""
    assert sim.cli("keys", "generate", "evidence", "--dir", "keys").code == 0
    with (sim.root / "runbook.yaml").open("a") as handle:
        handle.write("signing: {key: keys/evidence.key}\n")
    assert sim.cli("run", "db-health").code == 0
    run_id = json.loads(sim.cli("runs", "--runbook", "db-health", "--output", "json").out)[-1]["run_id"]
    assert (sim.root / "evidence" / run_id / "attestation.dsse.json").exists()
    verified = sim.cli("evidence", "verify", run_id, "--key", "keys/evidence.pub")
    assert verified.code == 0 and "signature valid: Ed25519 key id" in verified.out, verified.text
    audited = sim.cli("evidence", "audit", "--key", "keys/evidence.pub")
    assert audited.code == 0 and "1 signatures checked" in audited.out, audited.text
    assert sim.cli("evidence", "postmortem", run_id, "-o", "postmortem.md").code == 0
    assert "### Incident Details" in (sim.root / "postmortem.md").read_text()
