"""Sealing a bundle: reports, manifest, attestation and the run ledger, in that order, in one place.

Everything written here is derived from the event log, so `evidence verify`
can recompute it and notice any edit, key or no key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine.config import Config
from engine.errors import StateCorrupt
from engine.evidence import (
    EVENTS,
    MANIFEST,
    REPORT,
    REPORT_HTML,
    attestation_predicate,
    bundle_files,
    manifest_fields,
    scan_chain,
    write_manifest,
)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def seal_bundle(config: Config, directory: Path, last_hash: str, seq: int) -> dict[str, Any]:
    """Write report.md, report.html, manifest.json and (with `signing.key`) attestation.dsse.json for the
    closed event log in `directory`, then append the manifest's sha256 to the run ledger. Returns the manifest."""
    from engine import attestation, ledger
    from engine.keys import key_id, load_private
    from engine.report import render_html, render_markdown

    chain = scan_chain(directory / EVENTS)
    if chain.last_hash != last_hash or chain.count != seq:
        raise StateCorrupt(f"{directory / EVENTS}: ends at seq {chain.count}, but the run wrote up to seq {seq}")
    key = load_private(config.signing_key) if config.signing_key else None
    signer = key_id(key.public_key()) if key is not None else None
    fields = manifest_fields(chain)
    _write(directory / REPORT, render_markdown(directory, fields, chain.events, signer))
    _write(directory / REPORT_HTML, render_html(directory, fields, chain.events, signer))
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
