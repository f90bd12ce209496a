"""What the operator sees (issue 13, items 1-3): the running step live, step-mode previews, diffs and the recap.

Terminal screens go through a real pseudo-terminal (`drive`); logs and pipes through the CLI without one.
Tests wait on output, never on time.
"""

from __future__ import annotations

import json
import re

from tests.conftest import Workspace
from tests.engine.test_operator_mode import drive

RICH = {"TERM": "xterm-256color", "NO_COLOR": ""}
PLAIN = {"TERM": "xterm-256color", "NO_COLOR": "1"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

SLOW = """
runbook: slowly
title: Slow steps
version: 1
description: an action that runs until the test says go, then a wait for a flag
source: tests
steps:
  - id: slow
    title: Wait for go
    action: shell
    with: {argv: [sh, -c, 'while [ ! -f go ]; do sleep 0.05; done']}
  - id: flag
    title: Wait for the flag
    wait: {check: file.exists, with: {path: flag}, until: result.exists, every: 100ms, timeout: 60s}
"""

CHANGE = """
runbook: change
title: Change a setting
version: 1
description: a check, a rewrite, a write that changes nothing, a skipped step, a handled failure
source: tests
params:
  token: {type: string, secret: true, default: "s3cr3t-t0ken-value"}
steps:
  - id: look
    check: file.exists
    with: {path: settings.yaml}
  - id: swap_in
    title: Swap in the new settings
    action: file.write
    with: {path: settings.yaml, content: "mode: new\\ntoken: {{ params.token }}\\n"}
  - id: same
    action: file.write
    with: {path: same.txt, content: "same\\n"}
  - id: never
    when: "false"
    action: file.write
    with: {path: never.txt, content: "no"}
  - id: broken
    check: file.exists
    with: {path: missing.txt}
    expect: result.exists
    on_fail: last
  - id: last
    action: file.write
    with: {path: last.txt, content: "last"}
"""


def _touch(ws: Workspace, name: str) -> None:
    (ws.root / name).write_text("x")


def test_the_running_step_shows_live_with_elapsed_time_polls_and_deadline(ws: Workspace) -> None:
    ws.runbook("slowly", SLOW)
    code, screen = drive(ws, ["run", "slowly"], [
        ("slow (action) Wait for go 1s", lambda: _touch(ws, "go")),
        ("observed result.exists=false", lambda: _touch(ws, "flag")),
    ], env=RICH)
    assert code == 0, screen
    text = ANSI.sub("", screen)
    assert re.search(r"flag \(wait\) Wait for the flag \d+s \| poll \d+, observed result\.exists=false "
                     r"\| deadline \d\d:\d\d:\d\d UTC \(\d+s left\)", text), text
    assert "[  ok] slow (action)" in text and "[  ok] flag (wait)" in text
    assert "recap: ok=1  changed=1  planned=0  skipped=0  failed=0" in text


def test_no_color_on_a_terminal_is_plain_lines(ws: Workspace) -> None:
    ws.runbook("slowly", SLOW)
    code, screen = drive(ws, ["run", "slowly"], [
        ("[ run] slow (action) Wait for go", lambda: _touch(ws, "go")),
        ("observed result.exists=false", lambda: _touch(ws, "flag")),
    ], env=PLAIN)
    assert code == 0, screen
    assert "\x1b" not in screen
    assert re.search(r"\[wait\] flag \(wait\) Wait for the flag \d+s \| poll 1, observed result\.exists=false "
                     r"\| deadline \d\d:\d\d:\d\d UTC \(\d+s left\)", screen), screen


def test_without_a_terminal_waits_are_logged_as_lines(ws: Workspace) -> None:
    ws.runbook("slowly", SLOW.replace("timeout: 60s", "timeout: 300ms"))
    _touch(ws, "go")
    result = ws.cli("run", "slowly")
    assert result.code == 50, result.text
    assert "\x1b" not in result.err
    lines = result.err.splitlines()
    assert "[ run] flag (wait) Wait for the flag" in lines
    polls = [line for line in lines if line.startswith("[wait] flag")]
    assert len(polls) == 1 and "poll 1, observed result.exists=false" in polls[0]  # throttled: one line per 10 s
    assert "recap: ok=0  changed=1  planned=0  skipped=0  failed=1" in result.err


def _step_mode_screen(ws: Workspace, env: dict[str, str]) -> tuple[int, str]:
    ws.write("settings.yaml", "mode: old\n")
    ws.runbook("change", CHANGE)
    return drive(ws, ["run", "change", "--step"], [
        ("run / skip / abort / details", "r"),
        ("run / skip / abort / details", ""),  # empty: asked again, nothing runs
        ("run / skip / abort / details", "details"),
        ("run / skip / abort / details", "abort"),
    ], env=env)


def test_step_mode_shows_position_title_rendered_params_and_the_plan_diff(ws: Workspace) -> None:
    for env in (RICH, PLAIN):
        code, screen = _step_mode_screen(ws, env)
        assert code == 10, screen
        text = ANSI.sub("", screen)
        assert "step 1 of 6" in text and "step 2 of 6" in text
        assert "swap_in (action file.write) - Swap in the new settings" in text
        assert '"path": "settings.yaml"' in text  # rendered params, as JSON
        assert "plan: would rewrite" in text
        assert "-mode: old" in text and "+mode: new" in text  # the plan's diff, before the step runs
        assert (ws.root / "settings.yaml").read_text() == "mode: old\n"  # the empty answer ran nothing
        assert text.count("step 2 of 6") == 2 and text.count("run / skip / abort / details") >= 4
        details = text[text.rindex('"id": "swap_in"') - 200:]
        assert '"kind": "action"' in details and "'kind'" not in text  # details is JSON, not a Python repr
        assert "s3cr3t-t0ken-value" not in screen
        events = [json.loads(line) for line in (ws.evidence_dirs()[-1] / "events.jsonl").read_text().splitlines()]
        assert [e["data"]["choice"] for e in events if e["type"] == "operator_choice"] == ["run", "abort"]


def test_dry_run_shows_diffs_and_every_run_ends_with_a_recap(ws: Workspace) -> None:
    ws.write("settings.yaml", "mode: old\n")
    ws.write("same.txt", "same\n")
    ws.runbook("change", CHANGE)
    dry = ws.cli("run", "change", "--dry-run")
    assert dry.code == 0, dry.text
    assert "\x1b" not in dry.err
    assert "[plan] swap_in (action)" in dry.err
    assert "      --- a/settings.yaml" in dry.err and "      -mode: old" in dry.err and "      +mode: new" in dry.err
    assert "s3cr3t-t0ken-value" not in dry.err and "+token: ***" in dry.err
    assert "recap: ok=1  changed=0  planned=3  skipped=1  failed=1" in dry.err

    live = ws.cli("run", "change")
    assert live.code == 0, live.text
    assert "      -mode: old" not in live.err  # a live run changed it: no plan, no diff
    assert "recap: ok=2  changed=2  planned=0  skipped=1  failed=1" in live.err  # `same` changed nothing: ok
    assert "s3cr3t-t0ken-value" not in live.err
