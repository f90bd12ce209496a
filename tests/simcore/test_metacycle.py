"""Seed 000's tools through the real CLI: smoke test, meta-schedule exit codes, locks, rollback."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from simcore.fsutil import parse_iso_utc, pid_alive

from .conftest import CSV, run

SCHEDULE = ["meta-schedule", "--csv", CSV, "--run_once", "1", "--strict", "0"]


def tree_hash(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def log_records(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "logs/meta_cycle.jsonl").read_text().splitlines()]


def lock(root: Path) -> dict:
    return json.loads((root / "data/meta_states/.locks/meta_cycle.lock").read_text())


def test_smoke_passes_and_logs(core_dir: Path) -> None:
    res = run(core_dir, "prod-smoke-test", "--csv", CSV)
    assert (res.returncode, res.stdout.strip()) == (0, "STATUS=PASS")
    assert log_records(core_dir)[-1]["module"] == "prod_smoke_test"


def test_schedule_success_takes_lock_logs_stages_and_appends_ledger(core_dir: Path) -> None:
    res = run(core_dir, *SCHEDULE)
    assert res.returncode == 0, res.stdout + res.stderr
    payload = lock(core_dir)
    assert set(payload) >= {"active", "pid", "host", "start_ts_utc", "reason", "cmd"}
    assert payload["active"] == 0
    stages = [r for r in log_records(core_dir) if r["event"] == "stage_end"]
    assert [s["stage"] for s in stages] == ["lock", "data", "state", "anomaly", "safety", "cycle", "ledger"]
    assert all(s["rc"] == 0 for s in stages)
    entries = [json.loads(x) for x in (core_dir / "data/meta_states/ledger.jsonl").read_text().splitlines()]
    assert len(entries) == 2
    assert set(entries[-1]) >= {"ts", "sha256", "prev", "state"}
    assert entries[-1]["prev"] == entries[0]["sha256"]


def test_stale_lock_held_until_forced_break(core_dir: Path) -> None:
    run(core_dir, "inject", "stale_lock")
    payload = lock(core_dir)
    assert payload["active"] == 1 and not pid_alive(payload["pid"])
    assert payload["start_ts_utc"] < "2100"
    assert run(core_dir, *SCHEDULE).returncode == 40
    assert run(core_dir, *SCHEDULE, "--on_lock_held", "retryable").returncode == 11
    res = run(core_dir, *SCHEDULE, "--on_lock_held", "retryable", "--force_lock_break", "1",
              "--lock_ttl_sec", "1800", "--reason", "lock_recovery")
    assert res.returncode == 0, res.stdout
    breaks = [r for r in log_records(core_dir) if r["event"] == "lock_break"]
    assert breaks and breaks[0]["previous"]["pid"] == payload["pid"]
    assert lock(core_dir)["reason"] == "lock_recovery"


def test_live_lock_is_never_broken(core_dir: Path) -> None:
    run(core_dir, "inject", "live_lock")
    pid = lock(core_dir)["pid"]
    try:
        assert pid_alive(pid)
        assert run(core_dir, *SCHEDULE, "--force_lock_break", "1").returncode == 40
        assert run(core_dir, *SCHEDULE, "--on_lock_held", "retryable").returncode == 11
    finally:
        run(core_dir, "heal", "live_lock")
    assert not pid_alive(pid)
    assert run(core_dir, *SCHEDULE).returncode == 0


def test_lock_older_than_ttl_is_stale_by_the_explicit_wall_clock(core_dir: Path) -> None:
    run(core_dir, "inject", "live_lock")
    try:
        start_ms = parse_iso_utc(lock(core_dir)["start_ts_utc"])
        soon = {"SIMCORE_WALL_MS": str(start_ms + 60_000)}
        later = {"SIMCORE_WALL_MS": str(start_ms + 7_200_000)}
        args = [*SCHEDULE, "--force_lock_break", "1", "--lock_ttl_sec", "1800"]
        assert run(core_dir, *args, env=soon).returncode == 40
        assert run(core_dir, *args, env=later).returncode == 0
    finally:
        run(core_dir, "heal", "live_lock")


def test_anomaly_exit_60_incident_then_rollback(core_dir: Path) -> None:
    assert run(core_dir, *SCHEDULE).returncode == 0
    run(core_dir, "inject", "anomaly")
    res = run(core_dir, *SCHEDULE)
    assert res.returncode == 60, res.stdout
    incidents = list((core_dir / "data/reports/incidents").glob("*.json"))
    assert len(incidents) == 1
    assert "exposure_multiplier" in json.loads(incidents[0].read_text())["anomalies"][0]
    smoke = run(core_dir, "prod-smoke-test", "--csv", CSV)
    assert smoke.returncode == 1 and smoke.stdout.startswith("STATUS=FAIL reason=anomaly")

    before = tree_hash(core_dir / "data") + tree_hash(core_dir / "state")
    dry = run(core_dir, "meta-rollback", "--steps", "1", "--reason", "anomaly", "--dry_run", "1", "--strict", "1")
    assert dry.returncode == 0 and "changed=0" in dry.stdout
    assert tree_hash(core_dir / "data") + tree_hash(core_dir / "state") == before

    live = run(core_dir, "meta-rollback", "--steps", "1", "--reason", "anomaly", "--dry_run", "0", "--strict", "1")
    assert live.returncode == 0 and "rollback_applied" in live.stdout
    assert run(core_dir, "prod-smoke-test", "--csv", CSV).stdout.strip() == "STATUS=PASS"
    last = json.loads((core_dir / "data/meta_states/ledger.jsonl").read_text().splitlines()[-1])
    assert last["op"] == "rollback" and last["reason"] == "anomaly"
    assert run(core_dir, *SCHEDULE).returncode == 0


def test_state_corrupt_exit_30_and_strict_rollback(core_dir: Path) -> None:
    assert run(core_dir, *SCHEDULE).returncode == 0
    head = json.loads((core_dir / "data/meta_states/ledger.jsonl").read_text().splitlines()[-1])["sha256"]
    run(core_dir, "inject", "state_corrupt")
    smoke = run(core_dir, "prod-smoke-test", "--csv", CSV)
    assert smoke.returncode == 1 and "reason=state_corrupt" in smoke.stdout
    assert run(core_dir, *SCHEDULE).returncode == 30
    args = ["--reason", "state_corrupt_recovery", "--dry_run", "1", "--strict", "1"]
    assert run(core_dir, "meta-rollback", "--steps", "9", *args).returncode == 30
    assert run(core_dir, "meta-rollback", "--to_hash", "ab" * 32, *args).returncode == 30
    res = run(core_dir, "meta-rollback", "--to_hash", head, "--reason", "manual_rollback",
              "--dry_run", "0", "--strict", "1")
    assert res.returncode == 0 and f"to_hash={head}" in res.stdout
    assert run(core_dir, "prod-smoke-test", "--csv", CSV).stdout.strip() == "STATUS=PASS"


def test_rollback_steps_do_not_bounce(core_dir: Path) -> None:
    for _ in range(3):
        assert run(core_dir, *SCHEDULE).returncode == 0
    hashes = [json.loads(x)["sha256"] for x in
              (core_dir / "data/meta_states/ledger.jsonl").read_text().splitlines()]
    for want in (hashes[2], hashes[1]):
        res = run(core_dir, "meta-rollback", "--steps", "1", "--reason", "r", "--dry_run", "0", "--strict", "1")
        assert f"to_hash={want}" in res.stdout


@pytest.mark.parametrize("fault,reason", [("data_gap", "data_gap"), ("stale_data", "stale_data")])
def test_bad_data_is_exit_20(core_dir: Path, fault: str, reason: str) -> None:
    run(core_dir, "inject", fault)
    smoke = run(core_dir, "prod-smoke-test", "--csv", CSV)
    assert smoke.returncode == 1 and f"reason={reason}" in smoke.stdout
    assert run(core_dir, *SCHEDULE).returncode == 20
    run(core_dir, "heal", fault)
    assert run(core_dir, "prod-smoke-test", "--csv", CSV).returncode == 0


def test_missing_csv_is_exit_20(core_dir: Path) -> None:
    assert run(core_dir, "meta-schedule", "--csv", "nope.csv", "--run_once", "1", "--strict", "0").returncode == 20


def test_halt_is_business_reject_normalized_unless_strict(core_dir: Path) -> None:
    run(core_dir, "kill-switch", "engage", "--reason", "drill")
    res = run(core_dir, *SCHEDULE)
    assert res.returncode == 0 and "raw_rc=10" in res.stdout
    assert run(core_dir, "meta-schedule", "--csv", CSV, "--run_once", "1", "--strict", "1").returncode == 10
