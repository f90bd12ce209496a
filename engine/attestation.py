"""attestation.dsse.json: a DSSE envelope (Ed25519) over an in-toto Statement v1 naming every bundle file.

Standard formats so a third party checks a bundle with their own tools:
DSSE (https://github.com/secure-systems-lab/dsse, protocol v1) and the in-toto
Statement v1 (https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md).
`docs/verify_bundle.py` checks one with `cryptography` and the standard library only.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import StateCorrupt
from engine.evidence import check_same_files, sealing_temp
from engine.keys import key_id

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

ATTESTATION = "attestation.dsse.json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://runbook-engine.dev/evidence-bundle/v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: the bytes that are signed."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def statement(files: Mapping[str, str], predicate: Mapping[str, Any]) -> dict[str, Any]:
    """The in-toto Statement: one subject per file (name, sha256), the run summary as predicate."""
    return {"_type": STATEMENT_TYPE,
            "subject": [{"name": name, "digest": {"sha256": files[name]}} for name in sorted(files)],
            "predicateType": PREDICATE_TYPE, "predicate": dict(predicate)}


def write(directory: Path, files: Mapping[str, str], predicate: Mapping[str, Any], key: Ed25519PrivateKey) -> str:
    """Sign the statement over `files` and write the envelope atomically; the signer's key id."""
    payload = json.dumps(statement(files, predicate), sort_keys=True, separators=(",", ":"),
                         ensure_ascii=False).encode("utf-8")
    signer = key_id(key.public_key())
    envelope = {"payload": base64.b64encode(payload).decode("ascii"), "payloadType": PAYLOAD_TYPE,
                "signatures": [{"keyid": signer,
                                "sig": base64.b64encode(key.sign(pae(PAYLOAD_TYPE, payload))).decode("ascii")}]}
    tmp = sealing_temp(directory / ATTESTATION)
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(envelope, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, directory / ATTESTATION)
    return signer


def signer_of(directory: Path) -> str | None:
    """The key id the envelope claims to be signed by (unchecked); None when the bundle has no attestation."""
    path = directory / ATTESTATION
    if not path.exists():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["signatures"][0]["keyid"])
    except (ValueError, KeyError, IndexError, TypeError):
        return "(unreadable)"


def check(directory: Path, files: Mapping[str, str], predicate: Mapping[str, Any],
          keys: Sequence[tuple[str, Ed25519PublicKey]]) -> dict[str, Any]:
    """The envelope must name exactly `files` and `predicate`; with `keys` ((label, key) pairs) its signature
    must verify by one of them. Returns {signed, checked, keyid, key}; StateCorrupt naming what is wrong."""
    path = directory / ATTESTATION
    if not path.exists():
        if keys:
            raise StateCorrupt(f"{path}: missing: the bundle is not signed, but --key asks for a signature")
        return {"signed": False, "checked": False, "keyid": None, "key": None}
    try:
        text = path.read_bytes().decode("utf-8")  # as written: read_text would turn \r into \n
        envelope = json.loads(text)
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = [(str(s["keyid"]), base64.b64decode(s["sig"], validate=True)) for s in envelope["signatures"]]
        body = json.loads(payload)
        exact = (text == json.dumps(envelope, indent=2) + "\n"
                 and base64.b64encode(payload).decode("ascii") == envelope["payload"]
                 and [base64.b64encode(sig).decode("ascii") for _, sig in signatures]
                 == [s["sig"] for s in envelope["signatures"]])
    except (ValueError, KeyError, TypeError):
        raise StateCorrupt(f"{path}: not a DSSE envelope") from None
    if not exact:
        raise StateCorrupt(f"{path}: not byte for byte the envelope the engine wrote (edited)")
    if envelope.get("payloadType") != PAYLOAD_TYPE or not signatures:
        raise StateCorrupt(f"{path}: payloadType must be {PAYLOAD_TYPE} with at least one signature")
    if not isinstance(body, dict) or body.get("_type") != STATEMENT_TYPE or body.get("predicateType") != PREDICATE_TYPE:
        raise StateCorrupt(f"{path}: payload is not an in-toto Statement v1 about an evidence bundle")
    named = {str(s.get("name")): (s.get("digest") or {}).get("sha256")
             for s in body.get("subject") or [] if isinstance(s, dict)}
    check_same_files(directory, named, files, {
        "missing": "signed in the attestation but missing from the bundle",
        "added": "in the bundle but not in the signed attestation (added after sealing)",
        "modified": "sha256 differs from the signed attestation (modified after sealing)"})
    if body.get("predicate") != dict(predicate):
        raise StateCorrupt(f"{path}: the signed run summary does not match the event log and manifest")
    claimed = signatures[0][0]
    if not keys:
        return {"signed": True, "checked": False, "keyid": claimed, "key": None}
    from cryptography.exceptions import InvalidSignature


    signed = pae(PAYLOAD_TYPE, payload)
    for label, public in keys:
        kid = key_id(public)
        for keyid, sig in signatures:
            if keyid != kid:
                continue
            try:
                public.verify(sig, signed)
            except InvalidSignature:
                raise StateCorrupt(f"{path}: signature by key id {kid} ({label}) does not verify: the envelope "
                                   "was changed or forged") from None
            return {"signed": True, "checked": True, "keyid": kid, "key": label}
    given = ", ".join(f"{label} ({key_id(public)[:16]})" for label, public in keys)
    raise StateCorrupt(f"{path}: signed by key id {claimed}, not by any key given ({given})")
