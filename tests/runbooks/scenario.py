"""Helpers shared by the seed scenario tests: run a library runbook with a system's sim profile."""

from __future__ import annotations

import json
from typing import Any

from engine.config import load_config
from engine.ledger import verify_in_place
from simcore.core import Core


def run(sim: Any, system: str, name: str, *args: str, dry: bool = False,
        env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """`runbook run NAME` with `profiles/<system>-sim.yaml`, no prompts, JSON output."""
    extra = ("--dry-run",) if dry else ()
    res = sim.cli("run", name, "--params-file", sim.profile(system), "--no-input", "--output", "json",
                  *extra, *args, env=env)
    assert res.out.strip(), res.text
    return res.code, json.loads(res.out)


def approve_and_resume(sim: Any, doc: dict[str, Any], step: str, by: str = "alice", deny: bool = False,
                       env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The run is paused at `step`: approve (or deny) it as `by`, then resume."""
    assert doc["outcome"] == "PAUSED" and doc["waiting_for"]["step"] == step, doc
    verdict = sim.cli("approve", doc["run_id"], step, "--by", by, *(["--deny"] if deny else []))
    assert verdict.code == 0, verdict.text
    res = sim.cli("resume", doc["run_id"], "--no-input", "--output", "json", env=env)
    return res.code, json.loads(res.out)


def verified(sim: Any, doc: dict[str, Any]) -> bool:
    """The run's evidence bundle verifies (asserts it): what `runbook evidence verify RUN_ID` does, in-process
    (the command itself is tested in tests/engine/test_evidence.py and tests/trust/)."""
    config = load_config(cwd=sim.root)
    verify_in_place(config, config.evidence_dir / doc["run_id"], ())
    return True


def dry_run_untouched(sim: Any, system: str, name: str, *args: str,
                      env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """Dry-run NAME; assert core/ is byte-identical afterwards and the bundle verifies."""
    before = sim.state_hash()
    code, doc = run(sim, system, name, *args, dry=True, env=env)
    assert sim.state_hash() == before, f"dry-run of {name} changed the core"
    assert doc["mode"] == "dry-run"
    assert verified(sim, doc)
    return code, doc


def status(sim: Any) -> dict[str, Any]:
    """What `simcore status --json` prints, read in-process."""
    return dict(json.loads(json.dumps(Core(sim.root / "core").status(), sort_keys=True)))


def steps_status(doc: dict[str, Any]) -> dict[str, str]:
    """Each step's final status in a `--output json` document."""
    return {k: v["status"] for k, v in doc["steps"].items()}


def approve_child_and_resume(sim: Any, doc: dict[str, Any], child_step: str, by: str = "alice",
                             env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The run is paused in a `call` step whose sub-runbook waits at `child_step`: approve it there, resume the parent."""
    waiting = doc["waiting_for"]
    assert doc["outcome"] == "PAUSED" and waiting.get("type") == "call", doc
    verdict = sim.cli("approve", waiting["child_run_id"], child_step, "--by", by)
    assert verdict.code == 0, verdict.text
    res = sim.cli("resume", doc["run_id"], "--no-input", "--output", "json", env=env)
    return res.code, json.loads(res.out)
