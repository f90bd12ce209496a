"""A crash around a reduce-only order: on resume the order is verified by its client order id, never sent twice."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SimWorkspace

CRASHING_PLUGIN = '''
"""Test plugin: a reduce-only order whose process dies (SIGKILL) before or after it reaches the core, once."""
import os
import signal
from pathlib import Path

from actions.core import ReduceOnlyOrder


class CrashingOrder(ReduceOnlyOrder):
    name = "test.crashing_order"

    def run(self, params, ctx):
        marker = Path(ctx.workdir) / "crashed"
        if marker.exists():
            return super().run(params, ctx)
        marker.write_text("once")
        if os.environ.get("CRASH_WHEN") == "after":
            super().run(params, ctx)
        os.kill(os.getpid(), signal.SIGKILL)
'''

RUNBOOK = """
runbook: crash-order
title: Reduce-only order that crashes once
version: 1
description: the process dies around the order; resume must not duplicate it
source: tests
steps:
  - id: order
    action: test.crashing_order
    with: {symbol: BTCUSDT, side: sell, notional: 20}
  - id: done
    end: SUCCESS
"""


@pytest.mark.parametrize(("when", "verified"), [("before", False), ("after", True)])
def test_in_doubt_order_is_verified_not_duplicated(sim: SimWorkspace, when: str, verified: bool) -> None:
    sim.write("plugins/crashing.py", CRASHING_PLUGIN)
    sim.write("runbook.yaml", (sim.root / "runbook.yaml").read_text() + "plugin_paths: [plugins]\n")
    sim.runbook("crash-order", RUNBOOK)
    crashed = sim.cli("run", "crash-order", env={"CRASH_WHEN": when})
    assert crashed.code == -9, crashed.text
    run_id = json.loads(sim.cli("runs", "--output", "json").out)[-1]["run_id"]
    assert json.loads(sim.cli("status", run_id, "--output", "json").out)["status"] == "interrupted"

    resumed = sim.cli("resume", run_id)
    assert resumed.code == 0, resumed.text
    events = [json.loads(line) for line in (sim.root / "evidence" / run_id / "events.jsonl").read_text().splitlines()]
    doubt = [e["data"] for e in events if e["type"] == "in_doubt"]
    assert doubt and doubt[0]["verify"] is verified
    assert doubt[0]["choice"] == ("done" if verified else "rerun")
    orders = json.loads(sim.simcore("status", "--json").out)
    assert orders["positions"]["local"]["BTCUSDT"] == pytest.approx(0.05 - 20 / 96958.268, rel=1e-3)
    assert sim.cli("evidence", "verify", run_id).code == 0
