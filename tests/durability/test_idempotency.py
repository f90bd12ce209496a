"""Idempotency keys (SPEC 4 Idempotency): a key that ended SUCCESS is not run again unless --force."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from .helpers import (
    effect_lines,
    events,
    finish,
    kill_pidfile,
    latest_run_id,
    of_type,
    only_run_id,
    run_records,
    wait_for,
)

if TYPE_CHECKING:
    from tests.conftest import Workspace

ECHO = "echo \"$RUNBOOK_IDEMPOTENCY_TOKEN\" >> effects.txt"


def keyed(ws: Workspace, command: str = ECHO, gate: bool = False) -> None:
    gate_step = "  - id: gate\n    approve: {prompt: 'go?'}\n" if gate else ""
    (ws.root / "runbooks" / "keyed.yaml").write_text(
        "runbook: keyed\ntitle: Keyed\nversion: 1\n"
        "params:\n  month: {type: string, default: '2026-11'}\n"
        "idempotency_key: \"rebalance-{{ params.month }}\"\n"
        "steps:\n" + gate_step +
        f"  - id: write\n    action: shell\n    with: {{argv: [sh, -c, '{command}']}}\n", encoding="utf-8")


def test_key_that_ended_success_exits_11_at_once_unless_force(ws: Workspace) -> None:
    keyed(ws)
    first = ws.cli("run", "keyed", "--no-input")
    assert first.code == 0, first.text
    first_id = only_run_id(ws)

    again = ws.cli("run", "keyed", "--no-input")
    assert again.code == 11, again.text
    assert "rebalance-2026-11" in again.text and "--force" in again.text
    assert len(effect_lines(ws)) == 1  # nothing executed
    skipped_id = latest_run_id(ws)
    evs = events(ws, skipped_id)
    assert of_type(evs, "step_started") == []
    record = of_type(evs, "idempotency")[-1]["data"]
    assert record["key"] == "rebalance-2026-11" and record["previous"]["run_id"] == first_id
    assert record["forced"] is False
    assert ws.cli("evidence", "verify", skipped_id).code == 0

    forced = ws.cli("run", "keyed", "--no-input", "--force")
    assert forced.code == 0, forced.text
    forced_id = latest_run_id(ws)
    assert [line.split(":")[0] for line in effect_lines(ws)] == [first_id, forced_id]
    record = of_type(events(ws, forced_id), "idempotency")[-1]["data"]
    assert record["forced"] is True and record["previous"]["outcome"] == "SUCCESS"
    assert ws.cli("evidence", "verify", forced_id).code == 0

    other = ws.cli("run", "keyed", "--no-input", "--param", "month=2026-12")
    assert other.code == 0, other.text  # another key is another unit of work
    assert len(effect_lines(ws)) == 3


def test_key_of_a_failed_run_does_not_block_a_new_run(ws: Workspace) -> None:
    keyed(ws, command=f"if [ -e fail ]; then exit 3; fi; {ECHO}")
    (ws.root / "fail").touch()
    assert ws.cli("run", "keyed", "--no-input").code == 50
    (ws.root / "fail").unlink()
    assert ws.cli("run", "keyed", "--no-input").code == 0
    assert len(effect_lines(ws)) == 1
    assert ws.cli("run", "keyed", "--no-input").code == 11


@pytest.mark.parametrize("round_", range(3))
def test_two_runs_with_the_same_key_at_the_same_moment_exactly_one_executes(ws: Workspace, round_: int) -> None:
    keyed(ws, command=f"{ECHO}; sleep 0.5")
    pair = [ws.popen("run", "keyed", "--no-input", "--param", f"month=m{round_}") for _ in range(2)]
    outcomes = sorted(finish(proc) for proc in pair)
    codes = [code for code, _ in outcomes]
    keys = [p.read_text() for p in (ws.root / ".runbook" / "idempotency").glob("*.json")]
    assert codes == [0, 11], (outcomes, keys, run_records(ws))
    assert len(effect_lines(ws)) == 1
    assert sorted(r["exit_code"] for r in run_records(ws)) == [0, 11]


@pytest.mark.parametrize("interruption", ["approval", "kill"])
def test_key_of_a_run_resumed_to_success_blocks_a_new_run(ws: Workspace, interruption: str) -> None:
    if interruption == "approval":
        keyed(ws, gate=True)
        assert ws.cli("run", "keyed", "--no-input").code == 12
        run_id = only_run_id(ws)
        assert ws.cli("approve", run_id, "gate", "--by", "alice").code == 0
        assert ws.cli("resume", run_id, "--no-input").code == 0
    else:
        keyed(ws, command=f"if [ -e armed ]; then rm armed; echo $$ > child.pid; exec sleep 30; fi; {ECHO}")
        (ws.root / "armed").touch()
        proc = ws.popen("run", "keyed", "--no-input")
        wait_for(lambda: (ws.root / "child.pid").exists() and (ws.root / "child.pid").read_text().strip())
        proc.kill()
        proc.wait(timeout=10)
        kill_pidfile(ws.root / "child.pid")
        run_id = only_run_id(ws)
        assert ws.cli("resume", run_id, "--no-input", "--in-doubt", "rerun").code == 0
    assert len(effect_lines(ws)) == 1
    again = ws.cli("run", "keyed", "--no-input")
    assert len(effect_lines(ws)) == 1, "the key already ended SUCCESS, yet the work ran again"
    assert again.code == 11, again.text
