"""The happy path through the CLI: validate, dry-run, live run, verify."""

from __future__ import annotations

import json

HELLO = """
runbook: hello
title: Hello
version: 1
description: greets and writes a file
source: tests
params:
  name: {type: string, default: world}
steps:
  - id: greet
    check: shell
    with: {argv: [echo, "hello {{ params.name }}"]}
    expect: "'hello' in result.stdout"
  - id: route
    decide:
      - if: steps.greet.ok
        goto: write
      - else: bad
  - id: write
    action: file.write
    with: {path: out.txt, content: "greeted {{ params.name }}\\n"}
  - id: done
    end: SUCCESS
  - id: bad
    end: BUSINESS_REJECT
"""


def test_validate_dry_run_live_and_verify(ws):
    ws.runbook("hello", HELLO)
    assert ws.cli("validate").code == 0
    dry = ws.cli("run", "hello", "--dry-run", "--output", "json")
    assert dry.code == 0, dry.text
    doc = json.loads(dry.out)
    assert doc["mode"] == "dry-run"
    assert doc["steps"]["write"]["status"] == "planned"
    assert not (ws.root / "out.txt").exists()
    live = ws.cli("run", "hello", "--param", "name=bob", "--output", "json")
    assert live.code == 0, live.text
    assert (ws.root / "out.txt").read_text() == "greeted bob\n"
    run_id = json.loads(live.out)["run_id"]
    verified = ws.cli("evidence", "verify", run_id)
    assert verified.code == 0, verified.text
