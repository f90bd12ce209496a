"""The README's commands, run as a reader would run them (in a sim workspace like the tour's)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import REPO, SimWorkspace

XAU = str(REPO / "profiles" / "xauusd-sim.yaml")
HL = str(REPO / "profiles" / "hyperliquid-sim.yaml")


def last_run(sim: SimWorkspace, runbook: str) -> str:
    runs = json.loads(sim.cli("runs", "--runbook", runbook, "--output", "json").out)
    return str(runs[-1]["run_id"])


def test_tour(sim: SimWorkspace) -> None:
    for args in (["list"], ["show", "db-health"], ["validate"], ["graph", "db-health", "--format", "mermaid"]):
        result = sim.cli(*args)
        assert result.code == 0, (args, result.text)
    before = sim.state_hash()
    assert sim.cli("run", "db-health", "--dry-run").code == 0
    assert sim.state_hash() == before
    assert sim.cli("run", "db-health").code == 0
    assert list((sim.root / "core" / "backups").glob("backup-*.db"))
    run_id = last_run(sim, "db-health")
    assert sim.cli("evidence", "verify", run_id).code == 0
    assert "## Timeline" in sim.cli("evidence", "report", run_id).out
    assumed = sim.cli("run", "db-health", "--dry-run", "--assume", "unknown_orders=fail")
    assert assumed.code == 10, assumed.text


def test_approvals(sim: SimWorkspace) -> None:
    config = sim.root / "core" / "config"
    proposed = (config / "settings.yaml").read_text().replace("filters_enabled: true", "filters_enabled: false")
    (config / "settings.proposed.yaml").write_text(proposed)
    assert sim.cli("run", "config-change", "--no-input").code == 12
    run_id = last_run(sim, "config-change")
    assert "second_pair_of_eyes" in sim.cli("status", run_id).out
    assert sim.cli("approve", run_id, "second_pair_of_eyes", "--by", "alice", "--note", "checked the diff").code == 0
    assert sim.cli("resume", run_id).code == 0
    assert (config / "settings.yaml").read_text() == proposed


def test_kill_switch(sim: SimWorkspace) -> None:
    (sim.root / "core" / "KILL_SWITCH").write_text('{"reason": "loss limit"}')
    result = sim.cli("run", "db-health", "--output", "json")
    assert result.code == 60, result.text
    assert not list((sim.root / "core" / "backups").glob("backup-*.db"))


def test_locks(sim: SimWorkspace) -> None:
    locks = sim.root / ".runbook" / "locks"
    locks.mkdir(parents=True)
    dead = {"active": 1, "pid": 999999, "host": __import__("socket").gethostname(),
            "start_ts_utc": "2026-01-01T00:00:00Z", "reason": "x", "cmd": "x", "run_id": "gone"}
    (locks / "xauusd-meta-cycle.lock").write_text(json.dumps(dead))
    assert sim.cli("run", "daily-live-run", "--params-file", XAU).code == 40
    broken = sim.cli("run", "daily-live-run", "--params-file", XAU, "--force-lock-break", "--reason",
                     "owner pid 999999 died")
    assert broken.code == 0, broken.text
    assert json.loads((locks / "xauusd-meta-cycle.lock").read_text())["active"] == 0


def test_idempotency(sim: SimWorkspace) -> None:
    assert sim.cli("run", "backups", "--params-file", HL).code == 0
    assert sim.cli("run", "backups", "--params-file", HL).code == 11
    forced = sim.cli("run", "backups", "--params-file", HL, "--force", "--output", "json")
    assert forced.code != 11, forced.text
    events = (Path(json.loads(forced.out)["evidence_dir"]) / "events.jsonl").read_text().splitlines()
    assert any(json.loads(e)["type"] == "idempotency" and json.loads(e)["data"]["forced"] for e in events)


def test_readme_opens_with_the_two_commands() -> None:
    head = Path(REPO / "README.md").read_text().splitlines()[:6]
    assert any(line.startswith("make demo") for line in head) and any(line.startswith("make test") for line in head)


def test_examples_call_wait_and_trigger(sim: SimWorkspace) -> None:
    """nightly calls db-health under a lock; config-change waits for a reload marker; a trigger is kept."""
    trigger = '{"alert": "NightlyMaintenance", "source": "cron"}'
    nightly = sim.cli("run", "nightly", "--trigger", trigger, "--output", "json")
    assert nightly.code == 0, nightly.text
    doc = json.loads(nightly.out)
    assert doc["steps"]["health"]["result"]["outcome"] == "SUCCESS"
    manifest = json.loads((Path(doc["evidence_dir"]) / "manifest.json").read_text())
    assert manifest["trigger"] == {"alert": "NightlyMaintenance", "source": "cron"}

    config = sim.root / "core" / "config"
    proposed = (config / "settings.yaml").read_text().replace("filters_enabled: true", "filters_enabled: false")
    (config / "settings.proposed.yaml").write_text(proposed)
    (config / ".reloaded").write_text("reloaded")
    assert sim.cli("run", "config-change", "--no-input", "--param", "wait_for_reload=true").code == 12
    run_id = last_run(sim, "config-change")
    assert sim.cli("approve", run_id, "second_pair_of_eyes", "--by", "alice").code == 0
    resumed = sim.cli("resume", run_id, "--output", "json")
    assert resumed.code == 0, resumed.text
    assert json.loads(resumed.out)["steps"]["await_reload"]["status"] == "ok"
