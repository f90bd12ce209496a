"""The worlds around the core (seeds 001, 002, 003, 004): written at init, evolved by tick and faults."""

from __future__ import annotations

import json
from pathlib import Path

from simcore import tools_ops
from simcore.core import Core

SESSION = "results/runs/r1"


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_init_writes_every_world(core_dir: Path) -> None:
    for rel in (f"{SESSION}/gateway_stats.json", f"{SESSION}/incident_events.jsonl", "docs/TEST_PLAN.md",
                "docs/modules/DECISION.md", "rebalance/calendar.json", "rebalance/providers/secondary/daily_bars.csv",
                "rebalance/decisions/2025-12.json", "rebalance/ledger.jsonl", "models/last_good_model.json",
                "models/registry/v2.4.0.json", "ops/canary_state.json", "logs/trading_alerts.jsonl",
                "reports/daily/daily_report_2026-01-22.md"):
        assert (core_dir / rel).is_file(), rel


def test_session_monitors_open_an_incident_after_three_mismatch_runs(core_dir: Path) -> None:
    core = Core(core_dir)
    core.inject("reconcile_drift")  # observed once
    core.tick(2)
    recon = lines(core_dir / SESSION / "order_reconciliation_events.jsonl")
    assert [r["consecutive_mismatch_runs"] for r in recon[-3:]] == [1, 2, 3]
    opened = [e for e in lines(core_dir / SESSION / "incident_events.jsonl") if e["event_type"] == "incident_open"]
    assert len(opened) == 1 and opened[0]["category"] == "reconciliation"
    assert json.loads((core_dir / SESSION / "gateway_stats.json").read_text())["halt_reason"] == "RECONCILE_CRITICAL"


def test_rebalance_tools_are_idempotent_and_detect_corruption(core_dir: Path) -> None:
    core = Core(core_dir)
    first = json.loads(tools_ops.decide(core, "2026-01")[1][0])
    again = json.loads(tools_ops.decide(core, "2026-01")[1][0])
    assert first["created"] and not again["created"] and first["decision"] == again["decision"]
    assert tools_ops.replay(core, "2026-01")[0] == 0
    core.inject("provider_corrupt")
    code, out = tools_ops.data_qa(core, "data")
    assert code == 1 and any("checksum mismatch" in f for f in json.loads(out[0])["findings"])
    assert tools_ops.refetch(core, "primary")[0] == 1 and tools_ops.refetch(core, "secondary")[0] == 0
    assert tools_ops.data_qa(core, "data")[0] == 0


def test_failure_drill_never_touches_the_live_core(core_dir: Path, tmp_path: Path) -> None:
    before = (core_dir / "state/core.db").read_bytes()
    code, out = tools_ops.failure_drill("BACKFILL_WINDOW_EXCEEDED", tmp_path / "drill")
    report = json.loads(out[0])
    assert code == 0 and (report["safety_mode"], report["safety_reason_code"]) == ("HALT", "BACKFILL_WINDOW_EXCEEDED")
    assert (core_dir / "state/core.db").read_bytes() == before


def test_canary_stages_and_heal_of_ml_faults(core_dir: Path) -> None:
    core = Core(core_dir)
    assert json.loads(tools_ops.canary(core, "report", None)[1][0])["stage"] == "canary_1"
    assert tools_ops.canary(core, "start", "canary_2")[0] == 0
    core.inject("slippage_spike")
    assert json.loads(tools_ops.canary(core, "report", None)[1][0])["critical_alerts"] == 1
    core.heal("slippage_spike")
    assert json.loads((core_dir / "ops/model_metrics.json").read_text())["slippage_ratio"] == 1.1
