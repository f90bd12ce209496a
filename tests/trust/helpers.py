"""Shared by the trust tests: a signed workspace, a forger's manifest rewrite, the CLI in-process."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

RUNBOOK = str(Path(sys.executable).with_name("runbook"))
REPO = Path(__file__).resolve().parents[2]

AUDITED = """
runbook: audited
title: Audited
version: 1
params:
  level: {type: integer, default: 3}
steps:
  - id: look
    check: shell
    with: {argv: [sh, -c, "echo level {{ params.level }}; echo warn >&2"]}
  - id: route
    decide:
      - if: params.level > 5
        goto: high
      - if: params.level > 2 and steps.look.ok
        goto: write
      - else: high
  - id: write
    action: file.write
    with: {path: out.txt, content: "level {{ params.level }}\\n"}
  - id: done
    end: SUCCESS
  - id: high
    end: BUSINESS_REJECT
"""


def env() -> dict[str, str]:
    """The environment the CLI runs with in these tests."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_")}
    clean["RUNBOOK_OPERATOR"] = "tester"
    clean["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}"
    return clean


def cli(root: Path, *args: str, check: int | None = None) -> subprocess.CompletedProcess[str]:
    """`runbook ARGS...` in `root`; asserts the exit code when `check` is given."""
    done = subprocess.run([RUNBOOK, *args], cwd=root, capture_output=True, text=True, env=env(), timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    if check is not None:
        assert done.returncode == check, done.stdout + done.stderr
    return done


def signed_workspace(root: Path, runbook: str = AUDITED, name: str = "audited") -> Path:
    """A workspace with `runbooks/NAME.yaml`, an Ed25519 key pair in keys/ and `signing:` configured."""
    (root / "runbooks").mkdir(parents=True, exist_ok=True)
    (root / "runbooks" / f"{name}.yaml").write_text(textwrap.dedent(runbook).lstrip())
    cli(root, "keys", "generate", "signer", "--dir", "keys", check=0)
    (root / "runbook.yaml").write_text("signing: {key: keys/signer.key}\n")
    return root


def run(root: Path, name: str = "audited", *args: str, code: int = 0) -> Path:
    """Run a runbook; its bundle."""
    done = cli(root, "run", name, "--no-input", "--output", "json", *args, check=code)
    return Path(json.loads(done.stdout)["evidence_dir"])


def refresh_manifest(bundle: Path) -> None:
    """What a forger without the key does after an edit: recompute every file's sha256 in manifest.json."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in sorted(bundle.rglob("*"))
                         if p.is_file() and p.name not in ("manifest.json", "attestation.dsse.json")}
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def edit_manifest(bundle: Path, drop: tuple[str, ...] = (), **fields: object) -> None:
    """Change (or `drop`) manifest fields, written in the engine's own layout so only the content differs."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest.update(fields)
    for name in drop:
        manifest.pop(name)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def rehash_line(bundle: Path, index: int, change: dict[str, object]) -> None:
    """Edit record `index` of events.jsonl and recompute its own hash, as a forger would."""
    path = bundle / "events.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    record = json.loads(lines[index])
    record.pop("hash")
    record["data"].update(change)
    body = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(body.encode()).hexdigest()
    lines[index] = body[:-1] + f',"hash":"{digest}"}}\n'
    path.write_text("".join(lines))


def reseal(bundle: Path, key: Path | None = None, run_finished: dict[str, object] | None = None) -> None:
    """The strongest forger: cut the seal record (and with `run_finished`, the run's end, rewritten), then seal
    again with the engine's own code, unsigned or signed by `key`."""
    from engine.config import load_config
    from engine.evidence import EVENTS, EventLog, scan_chain
    from engine.redact import Redactor
    from engine.seal import seal_bundle

    path = bundle / EVENTS
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: -2 if run_finished else -1]))
    if run_finished:
        log = EventLog(bundle, Redactor())
        log.record("run_finished", None, run_finished)
        log.close()
    (bundle / "attestation.dsse.json").unlink(missing_ok=True)
    if key is not None:
        (bundle.parent / "runbook.yaml").write_text(f"signing: {{key: {key}}}\n")
    chain = scan_chain(path)
    seal_bundle(load_config(cwd=bundle.parent), bundle, chain.last_hash, chain.count)
