"""Secrets stay secret (SPEC 4.2): canaries planted in every kind of secret are found nowhere the engine writes or prints."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.conftest import Result, Workspace

ENV_CANARY = "envCanary7Q2x9"
SECRET_PARAM = "paramCanary4Lm2"
CRED_PARAM = "credCanary8Vt3"
TRIGGER_CANARY = "trigCanary5Hk1"
SIGNING_CANARY = "signCanary2Zp6"
CANARIES = [ENV_CANARY, SECRET_PARAM, CRED_PARAM, TRIGGER_CANARY, SIGNING_CANARY]

LEAKY = """
runbook: leaky
title: Leaky steps
version: 1
description: every step tries to leak a secret
source: tests
env: [SVC_TOKEN]
params:
  passphrase: {type: string, secret: true}
  api_key: {type: string}
  mode: {type: string, default: plain}
idempotency_key: "leaky-{{ env.SVC_TOKEN }}-{{ params.api_key }}"
steps:
  - id: echo_all
    action: shell
    with:
      argv: [sh, -c, 'echo "$0 $1 $2 $3"; echo "$0 $1 $2 $3" >&2; env', "{{ env.SVC_TOKEN }}",
             "{{ params.passphrase }}", "{{ params.api_key }}", "{{ trigger.labels.auth_token }}"]
  - id: observed
    check: shell
    with: {argv: [echo, "{{ params.passphrase }}-{{ params.api_key }}"]}
    expect: "'nothing' in result.stdout"
    on_fail: fetch
  - id: fetch
    check: http.get
    with: {url: "http://127.0.0.1:9/x?token={{ env.SVC_TOKEN }}&key={{ params.api_key }}", timeout: 1}
    on_fail: gate
  - id: gate
    approve: {prompt: "Go on with {{ params.passphrase }}?"}
  - id: done
    end: BUSINESS_REJECT
    message: "ended with {{ env.SVC_TOKEN }} {{ params.passphrase }} {{ params.api_key }}"
"""


def _encodings(canary: str) -> list[str]:
    raw = canary.encode()
    return [canary, base64.b64encode(raw).decode().rstrip("="), raw.hex(), raw.hex().upper()]


def _leaks(text: str, where: str) -> list[str]:
    return [f"{where}: {form}" for canary in CANARIES for form in _encodings(canary) if form in text]


def _scan_tree(root: Path, skip: set[Path]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and path not in skip and ".venv" not in path.parts:
            found += _leaks(path.read_bytes().decode("utf-8", errors="replace"), str(path.relative_to(root)))
    return found


def test_canaries_in_every_kind_of_secret_leak_nowhere(ws: Workspace) -> None:
    ws.runbook("leaky", LEAKY)
    keys = ws.cli("keys", "generate", "evidence-key", "--dir", "keys")
    assert keys.code == 0, keys.text
    ws.write("runbook.yaml", "signing: {key: keys/evidence-key.key}\n")
    env = {"SVC_TOKEN": ENV_CANARY, "RUNBOOK_SIGNING_KEY": SIGNING_CANARY}
    trigger = json.dumps({"labels": {"auth_token": TRIGGER_CANARY, "alertname": "Leak"}})
    params = ["--param", f"passphrase={SECRET_PARAM}", "--param", f"api_key={CRED_PARAM}"]
    printed: list[Result] = []
    printed.append(ws.cli("run", "leaky", *params, "--dry-run", "--trigger", trigger, env=env))
    assert printed[-1].code == 10, printed[-1].text
    live = ws.cli("run", "leaky", *params, "--no-input", "--trigger", trigger, "--output", "json", env=env)
    printed.append(live)
    assert live.code == 12, live.text
    run_id = json.loads(live.out)["run_id"]
    printed.append(ws.cli("status", run_id, env=env))
    printed.append(ws.cli("approve", run_id, "gate", "--by", "bob", "--note", "fine", env=env))
    printed.append(ws.cli("resume", run_id, "--no-input", env=env))
    assert printed[-1].code == 20 and "passphrase" in printed[-1].text  # a secret is never stored: asked again
    printed.append(ws.cli("resume", run_id, "--no-input", *params, env=env))
    assert printed[-1].code == 10, printed[-1].text
    second = ws.cli("run", "leaky", *params, "--no-input", "--trigger", trigger, env=env)
    printed.append(second)
    printed.append(ws.cli("runs", "--output", "json", env=env))
    printed.append(ws.cli("evidence", "show", run_id, env=env))
    printed.append(ws.cli("evidence", "report", run_id, env=env))
    printed.append(ws.cli("evidence", "verify", run_id, "--key", "keys/evidence-key.pub", env=env))
    assert printed[-1].code == 0, printed[-1].text
    stdout = (ws.root / "evidence" / run_id / "artifacts")
    assert any("***" in p.read_text() for p in stdout.iterdir())  # the steps did print them; the engine masked them
    leaks = [leak for n, r in enumerate(printed) for leak in _leaks(r.out + r.err, f"output {n}")]
    leaks += _scan_tree(ws.root, skip={ws.root / "keys" / "evidence-key.key"})
    assert leaks == []


def test_the_engines_own_key_never_reaches_a_step(ws: Workspace) -> None:
    ws.runbook("envdump", """
        runbook: envdump
        title: Env dump
        version: 1
        description: prints the environment it gets
        source: tests
        steps:
          - id: dump
            check: shell
            with: {argv: [sh, -c, 'env > env.txt']}
        """)
    result = ws.cli("run", "envdump", env={"RUNBOOK_SIGNING_KEY": SIGNING_CANARY})
    assert result.code == 0, result.text
    dumped = (ws.root / "env.txt").read_text()
    assert "RUNBOOK_SIGNING_KEY" not in dumped and SIGNING_CANARY not in dumped


def test_a_secret_param_is_masked_in_the_run_record_lock_and_key_files(ws: Workspace) -> None:
    ws.runbook("locked", """
        runbook: locked
        title: Locked
        version: 1
        description: holds a lock and a key built from a secret
        source: tests
        params:
          token: {type: string, secret: true}
        lock: {name: desk, ttl: 5m}
        idempotency_key: "k-{{ params.token }}"
        steps:
          - id: gate
            approve: {prompt: "ok?"}
        """)
    result = ws.cli("run", "locked", "--param", f"token={SECRET_PARAM}", "--reason", f"because {SECRET_PARAM}",
                    "--no-input")
    assert result.code == 12, result.text
    assert _scan_tree(ws.root, skip=set()) == []
    assert _leaks(result.text, "output") == []
