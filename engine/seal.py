"""Sealing a bundle: reports, manifest, attestation and the run ledger, in that order, in one place.

The manifest's run fields are derived from the event log, and the reports'
sha256 (and the signer's key id) go into a last `bundle_sealed` record of the
chain, so `evidence verify` notices any edit, key or no key.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from engine import attestation, ledger
from engine.config import Config
from engine.errors import StateCorrupt
from engine.evidence import (
    EVENTS,
    MANIFEST,
    REPORT,
    REPORT_HTML,
    SEALED,
    SEALING_TEMPS,
    EventLog,
    attestation_predicate,
    bundle_files,
    manifest_fields,
    scan_chain,
    sealing_temp,
    write_manifest,
)
from engine.keys import key_id, load_private
from engine.redact import Redactor
from engine.report import Account, render_reports
from engine.secrets import engine_key


def _write(path: Path, text: str) -> str:
    data = text.encode("utf-8")
    tmp = sealing_temp(path)
    tmp.write_bytes(data)
    tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


_warned: list[str] = []


def _warn_legacy_key(config: Config) -> None:
    """Say once per process that a set RUNBOOK_SIGNING_KEY no longer signs anything (never its value)."""
    if not _warned and engine_key(config.signing_key_env):
        _warned.append(config.signing_key_env)
        print(f"runbook: {config.signing_key_env} is set, but HMAC signing is retired and this bundle is not "
              "signed; sign with Ed25519: `runbook keys generate NAME` and `signing: {key: NAME.key}` in runbook.yaml",
              file=sys.stderr)


def seal_bundle(config: Config, directory: Path, last_hash: str, seq: int) -> dict[str, Any]:
    """Write report.md and report.html for the closed event log in `directory`, record their sha256 (and the
    signer) in a final `bundle_sealed` event, write manifest.json and, with `signing.key`, attestation.dsse.json,
    then append the manifest's sha256 to the run ledger. Returns the manifest (its last_event_hash is the seal's)."""
    for name in SEALING_TEMPS:  # left by a sealing process killed before its rename (e.g. approve's re-seal)
        (directory / name).unlink(missing_ok=True)
    built = Account()
    chain = scan_chain(directory / EVENTS, keep=False, each=built.add)
    if chain.last_hash != last_hash or chain.count != seq:
        raise StateCorrupt(f"{directory / EVENTS}: ends at seq {chain.count}, but the run wrote up to seq {seq}")
    key = load_private(config.signing_key) if config.signing_key else None
    if key is None:
        _warn_legacy_key(config)
    signer = key_id(key.public_key()) if key is not None else None
    fields = manifest_fields(chain)
    markdown, page = render_reports(fields, built, signer)
    del built
    reports = {REPORT: _write(directory / REPORT, markdown), REPORT_HTML: _write(directory / REPORT_HTML, page)}
    log = EventLog(directory, Redactor())
    try:
        sealed = log.record(SEALED, None, {"reports": reports, "signer": signer})
    finally:
        log.close()
    chain.last_hash, chain.count, chain.last = sealed["hash"], chain.count + 1, sealed
    stale = directory / attestation.ATTESTATION
    if stale.exists():
        stale.unlink()
    manifest = write_manifest(directory, chain)
    if key is not None:
        files = {**bundle_files(directory), MANIFEST: hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()}
        attestation.write(directory, files, attestation_predicate(manifest), key)
    ledger.append(directory.parent, str(manifest["run_id"]),
                  hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest())
    return manifest
